"""FlowAdam against torch.optim.Adam, scipy's solve_ivp, its own formulas, storage and DDP."""

from __future__ import annotations

import copy
import math
import os

import numpy as np
import pytest
import scipy.integrate
import torch
import torch.multiprocessing as mp

from rodflow import FlowAdam
from tests.optim.conftest import closure_for, tiny_data, tiny_net

OFF = {"switch_sensitivity": 0.0, "curvature_sensitivity": math.inf}


def _net(dtype=torch.float64, seed=0):
    return tiny_net(6, 12, 2, dtype, seed)


def _data(dtype=torch.float64, n=48):
    return tiny_data(6, 2, n, dtype)


def _flat(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def _rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize(("fused", "wd", "decoupled"), [(True, 0.0, False), (False, 0.0, False),
                                                        (None, 0.01, False), (None, 0.01, True)])
def test_triggers_off_is_torch_adam(fused, wd, decoupled):
    x, y = _data()
    a, b = _net(), _net()
    oa = FlowAdam(a.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=wd, decoupled_weight_decay=decoupled,
                  fused=fused, **OFF, mode="B")
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ob = cls(b.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=wd)
    for _ in range(200):
        oa.step(closure_for(a, oa, x, y))
        ob.step(closure_for(b, ob, x, y))
    assert _rel(_flat(a), _flat(b)) <= 1e-12
    assert oa.ode_triggers == 0 and oa.grad_evals == 200


@pytest.mark.parametrize(("wd", "decoupled"), [(0.0, False), (0.3, False), (0.3, True)])
def test_ode_step_is_the_clipped_gradient_flow(wd, decoupled):
    """Step 2 (warmup 0, an always-true plateau test) is one ODE solve; two groups at their own rates,
    compared with scipy's solve_ivp of dθ_g/ds = −lr_g·clip(∇_g L + λθ_g) (L2) or
    −lr_g·(clip(∇_g L) + λθ_g) (decoupled) on s ∈ [0, ode_t_scale]."""
    x, y = _data()
    net = _net()
    lrs, scale = (0.05, 0.2), 0.5
    opt = FlowAdam([{"params": net[0].parameters(), "lr": lrs[0]}, {"params": net[2].parameters(), "lr": lrs[1]}],
                   warmup=0, switch_sensitivity=10.0, ode_t_scale=scale, ode_tol=1e-10, weight_decay=wd,
                   decoupled_weight_decay=decoupled, mode="B")
    opt.step(closure_for(net, opt, x, y))  # the first step is always Adam's
    assert opt.ode_triggers == 0
    theta1 = _flat(net)
    opt.step(closure_for(net, opt, x, y))
    assert opt.ode_triggers == 1 and opt.ode_nfe > 0 and opt.grad_evals == 2 + opt.ode_nfe

    ref_net = _net()
    params = list(ref_net.parameters())
    sizes = [p.numel() for p in params]
    rates = torch.cat([torch.full((p.numel(),), lrs[i // 2], dtype=torch.float64) for i, p in enumerate(params)])

    def rhs(t, th):
        th = torch.as_tensor(th)
        with torch.no_grad():
            for p, chunk in zip(params, torch.split(th, sizes)):
                p.copy_(chunk.view_as(p))
        for p in params:
            p.grad = None
        (ref_net(x) - y).square().mean().backward()
        g = torch.cat([p.grad.reshape(-1) for p in params])
        if decoupled:
            d = -rates * (g.clamp(-1, 1) + wd * th)
        else:
            d = -rates * (g + wd * th).clamp(-1, 1)
        return d.numpy()

    sol = scipy.integrate.solve_ivp(rhs, (0.0, scale), theta1.numpy(), method="DOP853", rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_flat(net).numpy(), sol.y[:, -1], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("shapes", [[(10_000,), (300,)],  # whole tensors
                                    [(3, 100_000), (7,)],  # one tensor over several cache slices (torch ops)
                                    [(8, 16, 3, 3), (64,)]],  # channels_last: not sliceable
                         ids=["small", "sliced", "channels_last"])
def test_trigger_statistics_are_the_exact_norms_in_float32(shapes):
    """n_t = ‖g‖ and c_t = ‖g − g_{t−1}‖ to float32 rounding even when c_t ≪ n_t (no cancellation)."""
    g = torch.Generator().manual_seed(0)
    params = [torch.nn.Parameter(torch.zeros(s)) for s in shapes]
    if len(shapes[0]) == 4:
        params[0] = torch.nn.Parameter(torch.zeros(shapes[0]).to(memory_format=torch.channels_last))
    opt = FlowAdam(params, **OFF, mode="B")
    base = [torch.randn(s, generator=g) for s in shapes]
    seen = []
    orig = opt._statistics

    def spy(grads, prev):
        exact_c = math.sqrt(sum(float((a.double() - p.double()).square().sum()) for a, p in zip(grads, prev)))
        exact_n = math.sqrt(sum(float(a.double().square().sum()) for a in grads))
        n_t, c_t = orig(grads, prev)
        seen.append((float(n_t), float(c_t), exact_n, exact_c))
        return n_t, c_t

    opt._statistics = spy
    for k in range(4):
        def closure(k=k):
            for i, (p, b0) in enumerate(zip(params, base)):
                p.grad = b0 * (1 + (-1) ** i * 1e-5 * k)
            return torch.zeros(())
        opt.step(closure)
        assert all(torch.equal(opt.state[p]["prev_grad"], p.grad) for p in params)  # g_{t−1} ← g afterwards
    for n_t, c_t, exact_n, exact_c in seen:
        assert n_t == pytest.approx(exact_n, rel=1e-6)
        assert c_t == pytest.approx(exact_c, rel=2e-5)  # float32 sums of squares; the expanded form: ~100 %
    assert seen[2][3] / seen[2][2] < 1e-4  # the regime where ‖g‖² − 2⟨g, g'⟩ + ‖g'‖² would be noise


def test_group_hyperparameters_match_torch_adam_groups():
    x, y = _data()
    a, b = _net(), _net()

    def groups(net):
        return [{"params": net[0].parameters(), "lr": 3e-3, "betas": (0.5, 0.9), "eps": 1e-3},
                {"params": net[2].parameters(), "weight_decay": 0.1}]

    oa = FlowAdam(groups(a), lr=1e-2, **OFF, mode="B")
    ob = torch.optim.Adam(groups(b), lr=1e-2)
    for _ in range(50):
        oa.step(closure_for(a, oa, x, y))
        ob.step(closure_for(b, ob, x, y))
    assert _rel(_flat(a), _flat(b)) <= 1e-12


def test_float32_and_lr_scheduler_match_torch_adam():
    x, y = _data(torch.float32)
    a, b = _net(torch.float32), _net(torch.float32)
    oa, ob = FlowAdam(a.parameters(), lr=1e-2, **OFF, mode="B"), torch.optim.Adam(b.parameters(), lr=1e-2, fused=True)
    sa = torch.optim.lr_scheduler.CosineAnnealingLR(oa, T_max=30)
    sb = torch.optim.lr_scheduler.CosineAnnealingLR(ob, T_max=30)
    for _ in range(30):
        oa.step(closure_for(a, oa, x, y))
        ob.step(closure_for(b, ob, x, y))
        sa.step()
        sb.step()
    assert torch.equal(_flat(a), _flat(b))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_float32_matches_cpu_decisions():
    x, y = _data(torch.float32)
    out = {}
    for dev in ("cpu", "cuda"):
        net = _net(torch.float32).to(dev)
        opt = FlowAdam(net.parameters(), lr=1e-2, warmup=2, mode="B")
        for _ in range(20):
            opt.step(closure_for(net, opt, x.to(dev), y.to(dev)))
        out[dev] = (_flat(net).cpu(), opt.ode_triggers, opt.grad_evals)
    assert out["cpu"][1:] == out["cuda"][1:] and out["cpu"][1] > 0
    torch.testing.assert_close(out["cpu"][0], out["cuda"][0], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("injection", ["soft", "hard", "none"])
def test_momentum_injection_formula(injection):
    x, y = _data()
    net = _net()
    opt = FlowAdam(net.parameters(), lr=0.05, warmup=2, switch_sensitivity=10.0, injection=injection,
                   momentum_blend_gamma=0.3, momentum_cap=0.5, mode="B")
    for _ in range(3):  # Adam steps: the ODE may run once more than `warmup` steps have been taken
        opt.step(closure_for(net, opt, x, y))
    params = list(net.parameters())
    before = [p.detach().clone() for p in params]
    m_before = [opt.state[p]["exp_avg"].clone() for p in params]
    v_before = [opt.state[p]["exp_avg_sq"].clone() for p in params]
    opt.step(closure_for(net, opt, x, y))
    assert opt.ode_triggers == 1
    for p, th0, m0, v0 in zip(params, before, m_before, v_before):
        u = -(p.detach() - th0) / 0.05
        if injection == "soft":
            cap = 0.5 * m0.norm()
            u_capped = u * min(1.0, float(cap / u.norm()))
            expected = 0.7 * m0 + 0.3 * u_capped
        elif injection == "hard":
            expected = u
        else:
            expected = m0
        torch.testing.assert_close(opt.state[p]["exp_avg"], expected, rtol=1e-12, atol=1e-15)
        assert torch.equal(opt.state[p]["exp_avg_sq"], v0)  # v untouched
        assert float(opt.state[p]["step"]) == 3.0  # the Adam step count too


def test_save_load_resume_through_a_file_is_bitwise(tmp_path):
    x, y = _data()
    a = _net()
    oa = FlowAdam(a.parameters(), lr=1e-2, warmup=2, mode="B")
    for _ in range(15):
        oa.step(closure_for(a, oa, x, y))
    assert oa.ode_triggers > 0
    torch.save({"model": a.state_dict(), "opt": oa.state_dict()}, tmp_path / "ckpt.pt")
    for _ in range(15):
        oa.step(closure_for(a, oa, x, y))
    b = _net(seed=3)
    ob = FlowAdam(b.parameters(), lr=1e-2, warmup=2, mode="B")
    ckpt = torch.load(tmp_path / "ckpt.pt")
    b.load_state_dict(ckpt["model"])
    ob.load_state_dict(ckpt["opt"])
    for _ in range(15):
        ob.step(closure_for(b, ob, x, y))
    assert torch.equal(_flat(a), _flat(b))
    assert (oa.ode_triggers, oa.grad_evals, oa.ode_nfe) == (ob.ode_triggers, ob.grad_evals, ob.ode_nfe)


def test_no_graph_in_the_state_and_deepcopy():
    x, y = _data()
    net = _net()
    opt = FlowAdam(net.parameters(), lr=1e-2, warmup=0, switch_sensitivity=10.0, mode="B")
    for _ in range(5):
        opt.step(closure_for(net, opt, x, y))
    assert opt.ode_triggers == 4
    for st in opt.state.values():
        for value in st.values():
            assert value.grad_fn is None and not value.requires_grad
    assert opt.grad_norm_ema.grad_fn is None
    clone = copy.deepcopy(opt)
    assert clone.ode_triggers == 4


def test_group_with_zero_lr_never_moves_and_schedulers_work():
    x, y = _data()
    net = _net()
    frozen, free = list(net[0].parameters()), list(net[2].parameters())
    opt = FlowAdam([{"params": frozen, "lr": 0.0}, {"params": free}], lr=1e-2, warmup=2, mode="B")
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    start = [p.detach().clone() for p in frozen]
    free0 = [p.detach().clone() for p in free]
    for _ in range(12):
        opt.step(closure_for(net, opt, x, y))
        sched.step()
    assert opt.ode_triggers > 0
    assert all(torch.equal(p.detach(), s) for p, s in zip(frozen, start))
    assert any(not torch.equal(p.detach(), s) for p, s in zip(free, free0))
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-2 * 0.25)


@pytest.mark.parametrize("bad_call", [3, 6])
def test_failed_solve_falls_back_to_adam(bad_call):
    """A NaN gradient at the ODE's first (call 3) or a later (call 6) field evaluation. (An infinite
    gradient is no failure: the clip bounds the field.)"""
    x, y = _data()
    net = _net()
    opt = FlowAdam(net.parameters(), lr=1e-2, warmup=0, switch_sensitivity=10.0, mode="B")
    calls = {"n": 0}

    def closure():
        calls["n"] += 1
        opt.zero_grad()
        loss = (net(x) - y).square().mean()
        loss.backward()
        if calls["n"] == bad_call:
            for p in net.parameters():
                p.grad.fill_(float("nan"))
        return loss

    opt.step(closure)  # Adam
    before = _flat(net)
    opt.step(closure)  # ODE, fails, falls back
    assert (opt.ode_triggers, opt.ode_failures) == (1, 1)
    assert opt.ode_nfe >= 1 and opt.grad_evals == 3 + opt.ode_nfe  # the recomputed gradient is counted
    after = _flat(net)
    assert bool(torch.isfinite(after).all()) and not torch.equal(after, before)
    assert all(bool(torch.isfinite(v).all()) for st in opt.state.values() for v in st.values())
    # the steps taken are torch Adam's, the second with the gradient recomputed at the restored θ
    ref = _net()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    for _ in range(2):
        ref_opt.step(closure_for(ref, ref_opt, x, y))
    torch.testing.assert_close(after, _flat(ref), rtol=1e-13, atol=1e-15)


def test_closure_is_required_and_arguments_are_checked():
    net = _net()
    opt = FlowAdam(net.parameters())
    with pytest.raises(ValueError, match="closure"):
        opt.step()
    for kw, name in [({"lr": -1.0}, "lr"), ({"betas": (1.2, 0.9)}, r"betas\[0\]"), ({"eps": 0.0}, "eps"),
                     ({"mode": "C"}, "mode"), ({"injection": "medium"}, "injection"), ({"ode_tol": 0.0}, "ode_tol"),
                     ({"momentum_blend_gamma": 1.5}, "momentum_blend_gamma"), ({"warmup": -1}, "warmup"),
                     ({"ode_method": "rk45"}, "ode_method"), ({"switch_sensitivity": -0.1}, "switch_sensitivity"),
                     ({"ode_t_scale": 0.0}, "ode_t_scale")]:
        with pytest.raises(ValueError, match=name):
            FlowAdam(net.parameters(), **kw)


def test_presets_and_overrides():
    net = _net()
    assert FlowAdam(net.parameters()).mode == "A"  # the default: a drop-in for Adam (see the module doc)
    a = FlowAdam(net.parameters(), mode="A")
    assert (a.switch_sensitivity, a.curvature_sensitivity, a.ode_t_scale) == (0.40, 3.0, 2.0)
    b = FlowAdam(net.parameters(), mode="B", ode_t_scale=1.0)
    assert (b.switch_sensitivity, b.curvature_sensitivity, b.ode_t_scale) == (0.90, 0.1, 1.0)


def _ddp_phase(rank, world, out_dir):
    x, y = _data()
    model = torch.nn.parallel.DistributedDataParallel(_net())
    opt = FlowAdam(model.parameters(), lr=1e-2, warmup=2, mode="B")
    xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
    for _ in range(12):
        opt.step(closure_for(model, opt, xs, ys))
    torch.save({"theta": _flat(model), "evals": opt.grad_evals, "triggers": opt.ode_triggers},
               os.path.join(out_dir, f"{rank}.pt"))


def _worker(rank, world, init_file, out_dir):
    """The DDP wrapper lives only in ``_ddp_phase``'s frame: it is released before the process group
    is destroyed (destroying the group under a live wrapper aborts the child at exit)."""
    import gc

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        _ddp_phase(rank, world, out_dir)
        gc.collect()
        dist.barrier()
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_with_a_single_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    assert r0["evals"] == r1["evals"] and r0["triggers"] == r1["triggers"] > 0
    x, y = _data()
    net = _net()
    opt = FlowAdam(net.parameters(), lr=1e-2, warmup=2, mode="B")
    for _ in range(12):
        opt.step(closure_for(net, opt, x, y))
    assert opt.grad_evals == r0["evals"]
    assert _rel(r0["theta"], _flat(net)) < 1e-9 and torch.equal(r0["theta"], r1["theta"])
