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

OFF = {"switch_sensitivity": 0.0, "curvature_sensitivity": math.inf}


def _net(dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 12), torch.nn.Tanh(), torch.nn.Linear(12, 2)).to(dtype)


def _data(dtype=torch.float64, n=48):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 6, generator=g, dtype=dtype), torch.randn(n, 2, generator=g, dtype=dtype)


def _closure(net, opt, x, y):
    def closure():
        opt.zero_grad()
        loss = (net(x) - y).square().mean()
        loss.backward()
        return loss

    return closure


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
                  fused=fused, **OFF)
    cls = torch.optim.AdamW if decoupled else torch.optim.Adam
    ob = cls(b.parameters(), lr=1e-2, betas=(0.8, 0.99), weight_decay=wd)
    for _ in range(200):
        oa.step(_closure(a, oa, x, y))
        ob.step(_closure(b, ob, x, y))
    assert _rel(_flat(a), _flat(b)) <= 1e-12
    assert oa.ode_triggers == 0 and oa.grad_evals == 200


def test_ode_step_is_the_clipped_gradient_flow():
    """Step 1 with warmup 0 and an always-true plateau test: one ODE solve, compared with solve_ivp."""
    x, y = _data()
    net = _net()
    theta0 = _flat(net)
    lr, scale = 0.05, 0.5
    opt = FlowAdam(net.parameters(), lr=lr, warmup=0, switch_sensitivity=10.0, ode_t_scale=scale, ode_tol=1e-10)
    opt.step(_closure(net, opt, x, y))
    assert opt.ode_triggers == 1 and opt.ode_nfe > 0 and opt.grad_evals == 1 + opt.ode_nfe

    ref_net = _net()
    params = list(ref_net.parameters())
    sizes = [p.numel() for p in params]

    def rhs(t, th):
        with torch.no_grad():
            for p, chunk in zip(params, torch.split(torch.as_tensor(th), sizes)):
                p.copy_(chunk.view_as(p))
        for p in params:
            p.grad = None
        (ref_net(x) - y).square().mean().backward()
        return (-lr * torch.cat([p.grad.reshape(-1) for p in params]).clamp(-1, 1)).numpy()

    sol = scipy.integrate.solve_ivp(rhs, (0.0, scale), theta0.numpy(), method="DOP853", rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(_flat(net).numpy(), sol.y[:, -1], rtol=1e-7, atol=1e-9)


@pytest.mark.parametrize("injection", ["soft", "hard", "none"])
def test_momentum_injection_formula(injection):
    x, y = _data()
    net = _net()
    opt = FlowAdam(net.parameters(), lr=0.05, warmup=3, switch_sensitivity=10.0, injection=injection,
                   momentum_blend_gamma=0.3, momentum_cap=0.5)
    for _ in range(3):  # Adam steps (warmup)
        opt.step(_closure(net, opt, x, y))
    params = list(net.parameters())
    before = [p.detach().clone() for p in params]
    m_before = [opt.state[p]["exp_avg"].clone() for p in params]
    v_before = [opt.state[p]["exp_avg_sq"].clone() for p in params]
    opt.step(_closure(net, opt, x, y))
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
    oa = FlowAdam(a.parameters(), lr=1e-2, warmup=2)
    for _ in range(15):
        oa.step(_closure(a, oa, x, y))
    assert oa.ode_triggers > 0
    torch.save({"model": a.state_dict(), "opt": oa.state_dict()}, tmp_path / "ckpt.pt")
    for _ in range(15):
        oa.step(_closure(a, oa, x, y))
    b = _net(seed=3)
    ob = FlowAdam(b.parameters(), lr=1e-2, warmup=2)
    ckpt = torch.load(tmp_path / "ckpt.pt")
    b.load_state_dict(ckpt["model"])
    ob.load_state_dict(ckpt["opt"])
    for _ in range(15):
        ob.step(_closure(b, ob, x, y))
    assert torch.equal(_flat(a), _flat(b))
    assert (oa.ode_triggers, oa.grad_evals, oa.ode_nfe) == (ob.ode_triggers, ob.grad_evals, ob.ode_nfe)


def test_no_graph_in_the_state_and_deepcopy():
    x, y = _data()
    net = _net()
    opt = FlowAdam(net.parameters(), lr=1e-2, warmup=1, switch_sensitivity=10.0)
    for _ in range(5):
        opt.step(_closure(net, opt, x, y))
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
    opt = FlowAdam([{"params": frozen, "lr": 0.0}, {"params": free}], lr=1e-2, warmup=2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=5, gamma=0.5)
    start = [p.detach().clone() for p in frozen]
    free0 = [p.detach().clone() for p in free]
    for _ in range(12):
        opt.step(_closure(net, opt, x, y))
        sched.step()
    assert opt.ode_triggers > 0
    assert all(torch.equal(p.detach(), s) for p, s in zip(frozen, start))
    assert any(not torch.equal(p.detach(), s) for p, s in zip(free, free0))
    assert opt.param_groups[1]["lr"] == pytest.approx(1e-2 * 0.25)


def test_failed_solve_falls_back_to_adam():
    x, y = _data()
    net = _net()
    opt = FlowAdam(net.parameters(), lr=1e-2, warmup=0, switch_sensitivity=10.0)
    calls = {"n": 0}

    def closure():
        calls["n"] += 1
        opt.zero_grad()
        loss = (net(x) - y).square().mean()
        loss.backward()
        if calls["n"] == 2:  # the first field evaluation of the ODE sees a broken gradient
            for p in net.parameters():
                p.grad.fill_(float("nan"))
        return loss

    before = _flat(net)
    opt.step(closure)
    assert opt.ode_failures == 1
    after = _flat(net)
    assert bool(torch.isfinite(after).all()) and not torch.equal(after, before)
    # the step taken is torch Adam's first step from θ0 with the recomputed gradient
    ref = _net()
    ref_opt = torch.optim.Adam(ref.parameters(), lr=1e-2)
    ref_opt.step(_closure(ref, ref_opt, x, y))
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
    a = FlowAdam(net.parameters(), mode="A")
    assert (a.switch_sensitivity, a.curvature_sensitivity, a.ode_t_scale) == (0.40, 3.0, 2.0)
    b = FlowAdam(net.parameters(), mode="B", ode_t_scale=1.0)
    assert (b.switch_sensitivity, b.curvature_sensitivity, b.ode_t_scale) == (0.90, 0.1, 1.0)


def _worker(rank, world, init_file, out_dir):
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        x, y = _data()
        model = torch.nn.parallel.DistributedDataParallel(_net())
        opt = FlowAdam(model.parameters(), lr=1e-2, warmup=2)
        xs, ys = x.chunk(world)[rank], y.chunk(world)[rank]
        for _ in range(12):
            opt.step(_closure(model, opt, xs, ys))
        torch.save({"theta": _flat(model), "evals": opt.grad_evals, "triggers": opt.ode_triggers},
                   os.path.join(out_dir, f"{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_agree_with_a_single_process(tmp_path):
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = torch.load(tmp_path / "0.pt"), torch.load(tmp_path / "1.pt")
    assert r0["evals"] == r1["evals"] and r0["triggers"] == r1["triggers"] > 0
    x, y = _data()
    net = _net()
    opt = FlowAdam(net.parameters(), lr=1e-2, warmup=2)
    for _ in range(12):
        opt.step(_closure(net, opt, x, y))
    assert opt.grad_evals == r0["evals"]
    assert _rel(r0["theta"], _flat(net)) < 1e-9 and torch.equal(r0["theta"], r1["theta"])
