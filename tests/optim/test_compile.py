"""torch.compile: compiled FlowAdam and VRAdam steps against their eager steps, and the compiled
statistics (``statistics="compile"``) against the eager foreach ones."""

from __future__ import annotations

import pytest
import torch

from rodflow import FlowAdam, VRAdam
from tests.optim.conftest import closure_for, tiny_data, tiny_net


def _flat(net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def _flowadam_run(steps=4, compile_kw=None, **kw):
    """FlowAdam with warmup 0 and an always-true plateau test: every step after the first is an ODE step."""
    torch._dynamo.reset()
    x, y = tiny_data(6, 2, 48)
    net = tiny_net(6, 12, 2)
    opt = FlowAdam(net.parameters(), lr=1e-2, warmup=0, switch_sensitivity=10.0, **kw)
    step = torch.compile(opt.step, **compile_kw) if compile_kw is not None else opt.step
    closure = closure_for(net, opt, x, y)
    for _ in range(steps):
        step(closure)
    return _flat(net), opt


def _vradam_run(steps=5, compile_kw=None, dtype=torch.float64, **kw):
    torch._dynamo.reset()
    x, y = tiny_data(6, 2, 48, dtype)
    net = tiny_net(6, 12, 2, dtype)
    opt = VRAdam(net.parameters(), **{"lr": 1e-2, "beta3": 3.0, "weight_decay": 0.01, **kw})
    step = torch.compile(opt.step, **compile_kw) if compile_kw is not None else opt.step
    for _ in range(steps):
        opt.zero_grad()
        (net(x) - y).square().mean().backward()
        step()
    return _flat(net), opt


#: Compiled, torch's Adam kernels take their capturable form, whose bias corrections 1 − β^k are
#: formed from the float32 step tensors: 1 − 0.999^k is then off by ~1e-5 relative at small k.
#: With lr = 1e-2 that moves a parameter by < 1e-6 in a few steps (a step itself moves it by ~1e-2).
CAPTURABLE_ATOL = 1e-6


def test_compiled_flowadam_step_runs_the_ode_eagerly_and_matches():
    """The ODE branch stays out of the graph (``torch._dynamo.disable``, a graph break at the trigger
    test): the compiled step triggers as often and lands where the eager one does."""
    eager, oe = _flowadam_run()
    compiled, oc = _flowadam_run(compile_kw={"backend": "aot_eager"})
    assert oe.ode_triggers == oc.ode_triggers == 3 and oe.grad_evals == oc.grad_evals
    torch.testing.assert_close(compiled, eager, rtol=0, atol=CAPTURABLE_ATOL)
    torch.testing.assert_close(oc.change_ema, oe.change_ema, rtol=1e-6, atol=0)


def test_vradam_step_compiles_as_one_graph():
    """fullgraph=True: no graph break. The compiled step takes torch's capturable foreach AdamW (the
    fused kernel is opaque to the compiler; see CAPTURABLE_ATOL). β3 matters at this scale: AdamW
    (β3 = 0) ends ≫ CAPTURABLE_ATOL away."""
    eager, _ = _vradam_run()
    compiled, oc = _vradam_run(compile_kw={"backend": "aot_eager", "fullgraph": True})
    torch.testing.assert_close(compiled, eager, rtol=0, atol=CAPTURABLE_ATOL)
    assert float((_vradam_run(beta3=0.0)[0] - eager).abs().max()) > 100 * CAPTURABLE_ATOL
    assert all(float(st["step"]) == 5 for st in oc.state.values())


def test_flowadam_compiled_statistics_match_the_foreach_ones():
    eager, oe = _flowadam_run(steps=3)
    compiled, oc = _flowadam_run(steps=3, statistics="compile")
    assert oe.ode_triggers == oc.ode_triggers == 2
    torch.testing.assert_close(oc.grad_norm_ema, oe.grad_norm_ema, rtol=1e-12, atol=0)
    torch.testing.assert_close(oc.change_ema, oe.change_ema, rtol=1e-12, atol=0)
    torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=0)


@pytest.mark.parametrize("cls", [FlowAdam, VRAdam])
def test_statistics_argument_is_checked(cls):
    net = tiny_net(2, 3, 1)
    with pytest.raises(ValueError, match="statistics"):
        cls(net.parameters(), statistics="native")
    opt = cls(net[0].parameters(), statistics="compile")
    if cls is VRAdam:
        with pytest.raises(ValueError, match=r"param_groups\[1\]\['statistics'\]"):
            opt.add_param_group({"params": net[2].parameters(), "statistics": "C"})


@pytest.mark.slow
def test_vradam_compiled_statistics_and_an_inductor_step_match_eager():
    eager, _ = _vradam_run(dtype=torch.float32)
    stats, _ = _vradam_run(dtype=torch.float32, statistics="compile")
    torch.testing.assert_close(stats, eager, rtol=1e-6, atol=1e-7)
    inductor, _ = _vradam_run(compile_kw={"fullgraph": True})
    torch.testing.assert_close(inductor, _vradam_run()[0], rtol=0, atol=CAPTURABLE_ATOL)
    flow_eager, oe = _flowadam_run()
    flow_inductor, oi = _flowadam_run(compile_kw={})
    assert oe.ode_triggers == oi.ode_triggers
    torch.testing.assert_close(flow_inductor, flow_eager, rtol=0, atol=CAPTURABLE_ATOL)
