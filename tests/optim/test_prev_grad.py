"""FlowAdam's g_{t−1}: held by reference for fresh gradients, copied where the gradient's storage is
reused; the trigger statistics are the same either way, against float64 sums of recorded gradients."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from rodflow import FlowAdam
from rodflow.optim.flowadam import WARN_AFTER, FlowAdamWarning
from tests.optim.conftest import tiny_data, tiny_net

STEPS = 12


def _run(zero, steps=STEPS, seed=0):
    """FlowAdam (mode B, warmup 2: the ODE fires on some steps) with the given way of zeroing; returns
    the parameters, the optimizer and the gradients of each step's first closure call (cloned)."""
    x, y = tiny_data(6, 2, 48)
    net = tiny_net(6, 12, 2, seed=seed)
    opt = FlowAdam(net.parameters(), lr=1e-2, warmup=2, mode="B")
    seen: list[list[torch.Tensor]] = []
    first = {"now": False}

    def closure():
        zero(net, opt)
        loss = (net(x) - y).square().mean()
        loss.backward()
        if first["now"]:
            seen.append([p.grad.detach().clone() for p in net.parameters()])
            first["now"] = False
        return loss

    emas = []
    for _ in range(steps):
        first["now"] = True
        opt.step(closure)
        emas.append((float(opt.grad_norm_ema), float(opt.change_ema)))
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]), opt, seen, emas


def _reference_emas(seen, beta=0.9):
    """N_t, C_t from the recorded gradients: n_t = ‖g_t‖, c_t = ‖g_t − g_{t−1}‖ (g_0 = 0) in float64."""
    out, prev, n_ema, c_ema = [], None, None, None
    for gs in seen:
        n = math.sqrt(sum(float(g.square().sum()) for g in gs))
        c = math.sqrt(sum(float((g - (q if prev else 0.0)).square().sum()) for g, q in zip(gs, prev or gs)))
        n_ema = n if n_ema is None else beta * n_ema + (1 - beta) * n
        c_ema = c if c_ema is None else beta * c_ema + (1 - beta) * c
        out.append((n_ema, c_ema))
        prev = gs
    return out


ZEROS = {
    "opt.zero_grad() (set to None)": lambda net, opt: opt.zero_grad(),
    "opt.zero_grad(set_to_none=False)": lambda net, opt: opt.zero_grad(set_to_none=False),
    "net.zero_grad(set_to_none=False)": lambda net, opt: net.zero_grad(set_to_none=False),
}


def test_every_way_of_zeroing_gives_the_reference_statistics_and_one_trajectory():
    runs = {name: _run(zero) for name, zero in ZEROS.items()}
    thetas = [r[0] for r in runs.values()]
    for name, (_, opt, seen, emas) in runs.items():
        assert opt.ode_triggers > 0, name
        ref = _reference_emas(seen)
        for (n, c), (rn, rc) in zip(emas, ref):
            assert n == pytest.approx(rn, rel=1e-12, abs=0) and c == pytest.approx(rc, rel=1e-12, abs=0), name
    assert all(torch.equal(t, thetas[0]) for t in thetas[1:])
    assert len({r[1].ode_triggers for r in runs.values()}) == 1


def test_fresh_gradients_are_held_by_reference_and_reused_storage_is_copied():
    x, y = tiny_data(6, 2, 48)
    for set_to_none in (True, False):
        net = tiny_net(6, 12, 2)
        opt = FlowAdam(net.parameters(), lr=1e-2, switch_sensitivity=0.0, curvature_sensitivity=math.inf)
        for _ in range(3):
            opt.zero_grad(set_to_none=set_to_none)
            (net(x) - y).square().mean().backward()
            opt.step(lambda: None)
        for p in net.parameters():
            held = opt.state[p]["prev_grad"]
            assert torch.equal(held, p.grad)
            assert (held is p.grad) == set_to_none  # a reference, or a copy of its own


def test_switching_to_in_place_zeroing_mid_run_stays_exact():
    """Three steps with fresh gradients (held by reference), then opt.zero_grad(set_to_none=False):
    the held gradient is copied before it is zeroed, so c_t stays exact."""
    calls = {"n": 0}

    def zero(net, opt):
        calls["n"] += 1
        opt.zero_grad(set_to_none=calls["n"] > 6)

    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowAdamWarning)
        _, _, seen, emas = _run(zero)
    for (n, c), (rn, rc) in zip(emas, _reference_emas(seen)):
        assert n == pytest.approx(rn, rel=1e-12) and c == pytest.approx(rc, rel=1e-12)


def test_a_held_gradient_overwritten_elsewhere_is_detected():
    x, y = tiny_data(6, 2, 48)
    net = tiny_net(6, 12, 2)
    opt = FlowAdam(net.parameters(), lr=1e-2, switch_sensitivity=0.0, curvature_sensitivity=math.inf)
    for k in range(5):
        if k < 3:
            opt.zero_grad()
        else:
            net.zero_grad(set_to_none=False)  # zeroes the held tensors behind FlowAdam's back
        (net(x) - y).square().mean().backward()
        if k == 3:
            with pytest.warns(FlowAdamWarning, match="overwritten in place"):
                opt.step(lambda: None)
        else:
            opt.step(lambda: None)
    assert all(opt.state[p]["prev_grad"] is not p.grad for p in net.parameters())  # copied from then on


def test_warns_once_when_the_ode_fires_on_most_steps():
    x, y = tiny_data(6, 2, 48)
    net = tiny_net(6, 12, 2)
    opt = FlowAdam(net.parameters(), lr=1e-3, warmup=0, switch_sensitivity=10.0, ode_method="euler")

    def closure():
        opt.zero_grad()
        loss = (net(x) - y).square().mean()
        loss.backward()
        return loss

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(WARN_AFTER):
            opt.step(closure)
        assert not [w for w in caught if issubclass(w.category, FlowAdamWarning)]  # WARN_AFTER - 1 eligible
        for _ in range(20):
            opt.step(closure)
    rate = [w for w in caught if issubclass(w.category, FlowAdamWarning)]
    assert len(rate) == 1 and "ODE ran on" in str(rate[0].message)
    assert opt.ode_triggers == WARN_AFTER + 19  # every step after the first


def test_no_warning_when_the_ode_fires_rarely():
    x, y = tiny_data(6, 2, 48)
    net = tiny_net(6, 12, 2)
    opt = FlowAdam(net.parameters(), lr=1e-3, warmup=0, switch_sensitivity=0.0, curvature_sensitivity=math.inf)

    def closure():
        opt.zero_grad()
        loss = (net(x) - y).square().mean()
        loss.backward()
        return loss

    with warnings.catch_warnings():
        warnings.simplefilter("error", FlowAdamWarning)
        for _ in range(WARN_AFTER + 10):
            opt.step(closure)
    assert opt.ode_triggers == 0
