"""VRAdam against torch.optim.AdamW, its own spec, schedulers, storage and distributed training."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.multiprocessing as mp

import rodflow
from rodflow import VRAdam
from tests.optim.conftest import tiny_data, tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")


def _net(dtype=torch.float64, seed=0):
    return tiny_net(8, 16, 3, dtype, seed)


def _data(dtype=torch.float64, n=64):
    return tiny_data(8, 3, n, dtype)


def _train(net, opt, steps, sched=None, dtype=torch.float64):
    x, y = _data(dtype)
    for _ in range(steps):
        opt.zero_grad()
        (net(x) - y).square().mean().backward()
        opt.step()
        if sched is not None:
            sched.step()
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("fused", [True, False])
def test_beta3_zero_is_adamw(fused):
    a, b = _net(), _net()
    ours = _train(a, VRAdam(a.parameters(), lr=1e-2, betas=(0.8, 0.99), beta3=0.0, weight_decay=0.05, fused=fused),
                  200)
    ref = _train(b, torch.optim.AdamW(b.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=0.05), 200)
    assert _rel(ours, ref) < 1e-12


@pytest.mark.parametrize("norm_on", ["velocity", "grad"])
def test_saturated_cap_is_adamw_at_lr_over_one_plus_alpha1(norm_on):
    a, b = _net(), _net()
    ours = _train(a, VRAdam(a.parameters(), lr=1e-2, beta3=1e12, alpha1=4.0, weight_decay=0.05, norm_on=norm_on), 200)
    ref = _train(b, torch.optim.AdamW(b.parameters(), lr=1e-2 / 5.0, weight_decay=0.05), 200)
    assert _rel(ours, ref) < 1e-12


def test_class_equals_the_spec_iterates(small_mlp):
    spec = rodflow.optimizer("vradam", lr=3e-3, beta3=200.0, alpha1=5.0)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, 100)
    p = torch.nn.Parameter(small_mlp.theta0.clone())
    opt = VRAdam([p], lr=3e-3, beta3=200.0, alpha1=5.0)
    for k in range(100):
        opt.zero_grad()
        small_mlp.loss_fn(p).backward()
        opt.step()
        assert _rel(p.detach(), traj.theta[k + 1]) < 1e-12
    # the velocity factor was active (not AdamW)
    assert min(float(spec.effective_lr(m)) for m in traj.m) < 0.5 * spec.lr


def test_norm_on_grad_uses_the_gradient_norm():
    w = torch.nn.Parameter(torch.zeros(4, dtype=torch.float64))
    opt = VRAdam([w], lr=0.1, beta3=0.5, alpha1=100.0, norm_on="grad")
    w.grad = torch.tensor([3.0, 4.0, 0.0, 0.0], dtype=torch.float64)  # ‖g‖² = 25
    opt.step()
    eta = 0.1 / (1 + 0.5 * 25.0)
    # first AdamW step moves each coordinate with a non-zero gradient by η·sign(g) (up to ε)
    torch.testing.assert_close(w.detach()[:2], torch.full((2,), -eta, dtype=torch.float64), rtol=1e-7, atol=0)


def test_state_dict_round_trip_through_a_file(tmp_path):
    a = _net()
    opt = VRAdam(a.parameters(), lr=1e-2, weight_decay=0.01)
    _train(a, opt, 10)
    torch.save({"model": a.state_dict(), "opt": opt.state_dict()}, tmp_path / "ckpt.pt")
    uninterrupted = _train(a, opt, 10)
    b = _net(seed=5)
    opt_b = VRAdam(b.parameters(), lr=1.0)
    ckpt = torch.load(tmp_path / "ckpt.pt")
    b.load_state_dict(ckpt["model"])
    opt_b.load_state_dict(ckpt["opt"])
    resumed = _train(b, opt_b, 10)
    assert torch.equal(resumed, uninterrupted)
    c = copy.deepcopy(opt)
    assert c.state_dict()["param_groups"][0]["lr"] == 1e-2


SCHEDULERS = {
    "step": lambda o: torch.optim.lr_scheduler.StepLR(o, step_size=5, gamma=0.5),
    "cosine": lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=20),
    "onecycle": lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.02, total_steps=20),
    "lambda": lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda k: 1 / (1 + k)),
    "warmup_cosine": lambda o: torch.optim.lr_scheduler.SequentialLR(
        o, [torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, total_iters=5),
            torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=15)], milestones=[5]),
    "exponential": lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.9),
    "multistep": lambda o: torch.optim.lr_scheduler.MultiStepLR(o, milestones=[3, 11], gamma=0.3),
    "polynomial": lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=15, power=2.0),
    "warm_restarts": lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=6),
    # CyclicLR and OneCycleLR also cycle β1 through the group's "betas"
    "cyclic": lambda o: torch.optim.lr_scheduler.CyclicLR(o, base_lr=1e-3, max_lr=2e-2, step_size_up=4),
    "chained": lambda o: torch.optim.lr_scheduler.ChainedScheduler(
        [torch.optim.lr_scheduler.ExponentialLR(o, gamma=0.95), torch.optim.lr_scheduler.StepLR(o, 7, 0.5)]),
}


@pytest.mark.parametrize("name", list(SCHEDULERS))
def test_every_scheduler_drives_lr(name):
    a, b = _net(), _net()
    oa = VRAdam(a.parameters(), lr=1e-2, beta3=0.0)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.0)
    ours = _train(a, oa, 20, SCHEDULERS[name](oa))
    ref = _train(b, ob, 20, SCHEDULERS[name](ob))
    assert _rel(ours, ref) < 1e-12
    assert oa.param_groups[0]["lr"] == ob.param_groups[0]["lr"]


def test_reduce_lr_on_plateau():
    x, y = _data()
    out = []
    for make in (lambda ps: VRAdam(ps, lr=5e-2, beta3=0.0), lambda ps: torch.optim.AdamW(ps, lr=5e-2, weight_decay=0.0)):
        net = _net()
        opt = make(net.parameters())
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(opt, factor=0.5, patience=1, threshold=0.5)
        for _ in range(20):
            opt.zero_grad()
            loss = (net(x) - y).square().mean()
            loss.backward()
            opt.step()
            sched.step(float(loss.detach()))
        out.append((torch.cat([p.detach().reshape(-1) for p in net.parameters()]), opt.param_groups[0]["lr"]))
    assert out[0][1] == out[1][1] < 5e-2
    assert _rel(out[0][0], out[1][0]) < 1e-12


@pytest.mark.parametrize("fused", [True, False])
def test_float32_beta3_zero_is_adamw(fused):
    a, b = _net(torch.float32), _net(torch.float32)
    ours = _train(a, VRAdam(a.parameters(), lr=1e-2, beta3=0.0, weight_decay=0.05, fused=fused), 100,
                  dtype=torch.float32)
    ref = _train(b, torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.05, fused=fused), 100,
                 dtype=torch.float32)
    assert ours.dtype == torch.float32 and _rel(ours, ref) < 1e-6


def test_float32_and_finite():
    a = _net(torch.float32)
    out = _train(a, VRAdam(a.parameters(), lr=1e-2), 50, dtype=torch.float32)
    assert out.dtype == torch.float32 and bool(torch.isfinite(out).all())


@pytest.mark.parametrize(("kw", "name"), [({"lr": -1.0}, "lr"), ({"betas": (1.0, 0.9)}, r"betas\[0\]"),
                                          ({"betas": (0.9, -0.1)}, r"betas\[1\]"), ({"beta3": -1.0}, "beta3"),
                                          ({"alpha1": -2.0}, "alpha1"), ({"eps": 0.0}, "eps"),
                                          ({"weight_decay": -0.1}, "weight_decay"), ({"power": 0.0}, "power"),
                                          ({"norm_on": "weights"}, "norm_on")])
def test_invalid_hyperparameters(kw, name):
    with pytest.raises(ValueError, match=name):
        VRAdam(_net().parameters(), **kw)


def _ddp_phase(rank, world, out_dir):
    """DDP: each rank sees half of the batch; gradients are averaged, so no process group is needed."""
    x, y = _data()
    net = _net()
    model = torch.nn.parallel.DistributedDataParallel(net)
    opt = VRAdam(model.parameters(), lr=1e-2, beta3=5.0, alpha1=10.0)
    xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
    for _ in range(20):
        opt.zero_grad()
        (model(xs) - ys).square().mean().backward()
        opt.step()
    torch.save(torch.cat([p.detach().reshape(-1) for p in net.parameters()]), os.path.join(out_dir, f"ddp{rank}.pt"))


def _sharded_phase(rank, world, out_dir):
    """Sharded: each rank owns half of the tensors (full-batch gradients); the norm needs the all-reduce."""
    import torch.distributed as dist

    x, y = _data()
    net = _net()
    params = list(net.parameters())
    mine = params[rank::world]
    opt = VRAdam(mine, lr=1e-2, beta3=5.0, alpha1=10.0, process_group=dist.group.WORLD)
    for _ in range(20):
        opt.zero_grad()
        (net(x) - y).square().mean().backward()
        for p in params:
            if all(p is not q for q in mine):
                p.grad = None
        opt.step()
        for i, p in enumerate(params):  # share the updated shards
            dist.broadcast(p.data, src=i % world)
    torch.save(torch.cat([p.detach().reshape(-1) for p in params]), os.path.join(out_dir, f"sharded{rank}.pt"))


def _worker(rank, world, init_file, out_dir):
    """Each phase runs in its own frame, so the DDP wrapper and the optimizers are gone (and their
    communication hooks with them) before the process group is destroyed; destroying it under a live
    DDP wrapper aborts the child at exit."""
    import gc

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _ddp_phase(rank, world, out_dir)
        _sharded_phase(rank, world, out_dir)
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_and_sharded_training_match_a_single_process(tmp_path):
    """Two CPU processes on gloo: DDP without a process group, sharded tensors with one."""
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    net = _net()
    single = _train(net, VRAdam(net.parameters(), lr=1e-2, beta3=5.0, alpha1=10.0), 20)
    for mode in ("ddp", "sharded"):
        for rank in (0, 1):
            assert _rel(torch.load(tmp_path / f"{mode}{rank}.pt"), single) < 1e-10, (mode, rank)
    # control: the same shards each with its own norm (no all-reduce) train differently
    net = _net()
    params = list(net.parameters())
    shards = [VRAdam(params[r::2], lr=1e-2, beta3=5.0, alpha1=10.0) for r in (0, 1)]
    alone = _train(net, _Both(shards), 20)
    assert _rel(alone, single) > 1e-6


class _Both:
    """Step several optimizers as one (each over its own shard)."""

    def __init__(self, opts):
        self.opts = opts

    def zero_grad(self):
        for o in self.opts:
            o.zero_grad()

    def step(self):
        for o in self.opts:
            o.step()


# ---------------------------------------------------------------- against a plain transcription of the update
def _reference_run(tensors, loss_fn, masks, groups):
    """The update of issue 7 written out per group, in float64: ‖m_t‖ over the group's tensors with a gradient."""
    thetas = [t.clone() for t in tensors]
    m = [torch.zeros_like(t) for t in thetas]
    s = [torch.zeros_like(t) for t in thetas]
    k = [0] * len(thetas)
    for mask in masks:
        th = [t.clone().requires_grad_(True) for t in thetas]
        grads = torch.autograd.grad(loss_fn(th), th)
        for idx, hp in groups:
            live = [i for i in idx if mask[i]]
            b1, b2 = hp["betas"]
            for i in live:
                m[i] = b1 * m[i] + (1 - b1) * grads[i]
                s[i] = b2 * s[i] + (1 - b2) * grads[i] ** 2
                k[i] += 1
            src = m if hp["norm_on"] == "velocity" else grads
            norm = torch.sqrt(sum((src[i] ** 2).sum() for i in live))
            eta = hp["lr"] / (1 + min(hp["beta3"] * float(norm) ** hp["power"], hp["alpha1"]))
            for i in live:
                mh, sh = m[i] / (1 - b1 ** k[i]), s[i] / (1 - b2 ** k[i])
                thetas[i] = thetas[i] * (1 - eta * hp["weight_decay"]) - eta * mh / (sh.sqrt() + hp["eps"])
    return thetas


def _quartic_loss(ts):
    a, b, c = ts
    return ((a @ b - 1.0) ** 2).sum() + 0.3 * (c**4).sum() + (a.sum() * c.sum()) ** 2


@pytest.mark.parametrize("fused", [True, False])
def test_groups_power_norm_on_and_missing_gradients_match_the_written_update(fused):
    g = torch.Generator().manual_seed(3)
    tensors = [torch.randn(4, 3, generator=g, dtype=torch.float64), torch.randn(3, 2, generator=g, dtype=torch.float64),
               torch.randn(5, generator=g, dtype=torch.float64)]
    hp0 = {"lr": 0.02, "betas": (0.8, 0.95), "beta3": 2.0, "alpha1": 3.0, "eps": 1e-6, "weight_decay": 0.1,
           "power": 1.5, "norm_on": "velocity"}
    hp1 = {"lr": 0.05, "betas": (0.9, 0.99), "beta3": 0.7, "alpha1": 10.0, "eps": 1e-8, "weight_decay": 0.0,
           "power": 2.0, "norm_on": "grad"}
    groups = [([0, 1], hp0), ([2], hp1)]
    # tensor 1 has no gradient on every third step; its moments and stored norm must wait
    masks = [(True, k % 3 != 1, True) for k in range(60)]
    ref = _reference_run(tensors, _quartic_loss, masks, groups)
    ps = [torch.nn.Parameter(t.clone()) for t in tensors]
    opt = VRAdam([{"params": [ps[i] for i in idx], **hp} for idx, hp in groups], fused=fused)
    for mask in masks:
        opt.zero_grad()
        _quartic_loss(ps).backward()
        for p, keep in zip(ps, mask):
            if not keep:
                p.grad = None
        opt.step()
    for p, r in zip(ps, ref):
        assert _rel(p.detach(), r) < 1e-12


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-12), (torch.float32, 1e-5)])
def test_stored_velocity_norm_tracks_the_first_moment(dtype, tol):
    a = _net(dtype)
    opt = VRAdam(a.parameters(), lr=1e-2, beta3=3.0)
    _train(a, opt, 150, dtype=dtype)
    for p in a.parameters():
        st = opt.state[p]
        assert st["exp_avg_norm_sq"].dtype == torch.float64
        exact = float(st["exp_avg"].double().square().sum())
        assert abs(float(st["exp_avg_norm_sq"]) - exact) <= tol * exact


def test_float32_resume_is_bitwise_and_keeps_the_norm_in_float64():
    a = _net(torch.float32)
    opt = VRAdam(a.parameters(), lr=1e-2, beta3=3.0, weight_decay=0.01)
    _train(a, opt, 15, dtype=torch.float32)
    saved_model, saved_opt = copy.deepcopy(a.state_dict()), copy.deepcopy(opt.state_dict())
    uninterrupted = _train(a, opt, 15, dtype=torch.float32)
    b = _net(torch.float32, seed=9)
    b.load_state_dict(saved_model)
    opt_b = VRAdam(b.parameters())
    opt_b.load_state_dict(saved_opt)
    assert all(opt_b.state[p]["exp_avg_norm_sq"].dtype == torch.float64 for p in b.parameters())
    assert torch.equal(_train(b, opt_b, 15, dtype=torch.float32), uninterrupted)


def test_resume_from_an_adamw_checkpoint():
    """AdamW's state has no stored norm: it is recomputed from exp_avg, and β3 = 0 continues AdamW exactly."""
    a, b = _net(), _net()
    oa = torch.optim.AdamW(a.parameters(), lr=1e-2, weight_decay=0.02)
    ob = torch.optim.AdamW(b.parameters(), lr=1e-2, weight_decay=0.02)
    _train(a, oa, 10)
    _train(b, ob, 10)
    vr = VRAdam(b.parameters(), lr=1e-2, weight_decay=0.02, beta3=0.0)
    vr.load_state_dict(ob.state_dict())
    assert _rel(_train(b, vr, 30), _train(a, oa, 30)) < 1e-12
    for p in b.parameters():
        exact = float(vr.state[p]["exp_avg"].square().sum())
        assert abs(float(vr.state[p]["exp_avg_norm_sq"]) - exact) <= 1e-12 * exact


def test_tensor_lr_and_closure():
    a, b = _net(), _net()
    x, y = _data()
    oa = VRAdam(a.parameters(), lr=torch.tensor(1e-2, dtype=torch.float64), beta3=2.0)
    ob = VRAdam(b.parameters(), lr=1e-2, beta3=2.0)
    for _ in range(10):
        def closure():
            oa.zero_grad()
            loss = (a(x) - y).square().mean()
            loss.backward()
            return loss
        loss = oa.step(closure)
        assert loss is not None and loss.requires_grad
    assert _rel(torch.cat([p.detach().reshape(-1) for p in a.parameters()]), _train(b, ob, 10)) < 1e-12
    with pytest.raises(ValueError, match="lr"):
        VRAdam(_net().parameters(), lr=torch.tensor([1e-3, 1e-3]))


def test_deepcopy_and_pickle_drop_the_process_group():
    import pickle

    a = _net()
    opt = VRAdam(a.parameters(), lr=1e-2)
    _train(a, opt, 3)
    opt.process_group = object()  # stands for a torch.distributed group, which cannot be copied
    for clone in (copy.deepcopy(opt), pickle.loads(pickle.dumps(opt))):
        assert clone.process_group is None
        assert clone.param_groups[0]["lr"] == 1e-2
        p0, c0 = next(iter(opt.state.values())), next(iter(clone.state.values()))
        assert torch.equal(p0["exp_avg_norm_sq"], c0["exp_avg_norm_sq"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("fused", [True, False])
def test_cuda_matches_cpu(fused):
    a, b = _net(torch.float32), _net(torch.float32).cuda()
    x, y = _data(torch.float32)
    oa = VRAdam(a.parameters(), lr=1e-2, beta3=3.0, weight_decay=0.01)
    ob = VRAdam(b.parameters(), lr=1e-2, beta3=3.0, weight_decay=0.01, fused=fused)
    for _ in range(20):
        for net, opt, xx, yy in ((a, oa, x, y), (b, ob, x.cuda(), y.cuda())):
            opt.zero_grad()
            (net(xx) - yy).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(q.detach().cpu(), p.detach(), rtol=1e-4, atol=1e-6)
