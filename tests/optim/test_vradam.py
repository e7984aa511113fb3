"""VRAdam against torch.optim.AdamW, its own spec, schedulers, storage and distributed training."""

from __future__ import annotations

import copy
import os

import pytest
import torch
import torch.multiprocessing as mp

import rodflow
from rodflow import VRAdam


def _net(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).to(dtype)


def _data(dtype=torch.float64, n=64):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 8, generator=g, dtype=dtype), torch.randn(n, 3, generator=g, dtype=dtype)


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


def _worker(rank, world, init_file, mode, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, y = _data()
        net = _net()
        if mode == "ddp":
            model = torch.nn.parallel.DistributedDataParallel(net)
            opt = VRAdam(model.parameters(), lr=1e-2, beta3=5.0, alpha1=10.0)
            xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
            for _ in range(20):
                opt.zero_grad()
                (model(xs) - ys).square().mean().backward()
                opt.step()
        else:  # sharded: each rank owns half of the parameters, gradients from the full batch
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
        torch.save(torch.cat([p.detach().reshape(-1) for p in net.parameters()]), os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("mode", ["ddp", "sharded"])
def test_distributed_matches_a_single_process(tmp_path, mode):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), mode, str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    net = _net()
    single = _train(net, VRAdam(net.parameters(), lr=1e-2, beta3=5.0, alpha1=10.0), 20)
    assert _rel(r0, single) < 1e-10 and _rel(r1, single) < 1e-10
