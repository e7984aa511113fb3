"""The one integrator against scipy: solve_ivp and expm; statistics; failures."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

import rodflow
from rodflow.integrate import _DELAY_WEIGHTS, IntegrationError, integrate


def _van_der_pol(t, y, mu=2.0):
    return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def test_nonlinear_field_agrees_with_solve_ivp():
    t = torch.linspace(0, 5, 11, dtype=torch.float64)
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    res = rodflow.integrate(_van_der_pol, y0, t, rtol=1e-10, atol=1e-12)
    ref = scipy.integrate.solve_ivp(lambda s, y: _van_der_pol(s, torch.as_tensor(y)).numpy(), (0, 5), y0.numpy(),
                                    t_eval=t.numpy(), method="DOP853", rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.ys.numpy(), ref.y.T, rtol=1e-7, atol=1e-8)
    assert res.stats.nfe > 0 and res.stats.n_steps > 0


def test_linear_system_is_the_matrix_exponential():
    a = torch.tensor([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.1], [0.0, 0.3, -1.0]], dtype=torch.float64)
    y0 = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.7, 3.0], dtype=torch.float64)
    res = rodflow.integrate(lambda s, y: a @ y, y0, t, rtol=1e-12, atol=1e-14)
    for i, ti in enumerate(t.tolist()):
        np.testing.assert_allclose(res.ys[i].numpy(), scipy.linalg.expm(a.numpy() * ti) @ y0.numpy(), atol=1e-10)


def test_tuple_states_and_fixed_step_counts():
    def field(t, y):
        x, v = y
        return v, -x

    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    res = rodflow.integrate(field, y0, t, method="euler")
    assert res.stats.n_steps == 10 and res.stats.nfe == 10
    x, v = 1.0, 0.0
    for _ in range(10):  # Euler by hand, h = 0.1
        x, v = x + 0.1 * v, v - 0.1 * x
    assert res.ys[0][-1].item() == pytest.approx(x, rel=1e-14) and res.ys[1][-1].item() == pytest.approx(v, rel=1e-14)
    res = rodflow.integrate(field, y0, t, method="rk4", options={"step_size": 0.05})
    assert res.stats.n_steps == 20 and res.stats.nfe == 80
    np.testing.assert_allclose(res.ys[0][-1].item(), np.cos(1.0), atol=1e-7)
    res = rodflow.integrate(field, y0, t, rtol=(1e-10, 1e-10), atol=(1e-12, 1e-12))
    np.testing.assert_allclose(res.ys[1][-1].item(), -np.sin(1.0), atol=1e-9)


def test_statistics_count_every_field_evaluation():
    calls = {"n": 0}

    def field(t, y):
        calls["n"] += 1
        return _van_der_pol(t, y)

    res = rodflow.integrate(field, torch.tensor([2.0, 0.0], dtype=torch.float64),
                            torch.linspace(0, 5, 6, dtype=torch.float64), rtol=1e-8, atol=1e-10)
    s = res.stats
    assert s.nfe == calls["n"]
    assert s.n_rejected > 0  # van der Pol at this tolerance rejects some steps
    # dopri5: two evaluations to pick the first step, then six per attempt (seven stages, FSAL)
    assert s.nfe == 2 + 6 * (s.n_steps + s.n_rejected)


def test_blow_up_raises_with_statistics():
    """dy/dt = y², y(0) = 1 has y = 1/(1 − t): no solution past t = 1."""
    y0, t = torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0, 0.9, 1.5], dtype=torch.float64)
    with pytest.raises(IntegrationError, match=r"underflow|non-finite|max_num_steps") as info:
        rodflow.integrate(lambda t, y: y**2, y0, t)
    assert info.value.stats.nfe > 0
    ok = rodflow.integrate(lambda t, y: y**2, y0, t[:2], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ok.ys[-1], torch.tensor([10.0], dtype=torch.float64), rtol=1e-7, atol=0)


def test_clip_clamps_the_field():
    res = rodflow.integrate(lambda t, y: torch.tensor([5.0, -5.0, 0.5], dtype=torch.float64),
                            torch.zeros(3, dtype=torch.float64), torch.tensor([0.0, 2.0], dtype=torch.float64), clip=1.0)
    torch.testing.assert_close(res.ys[-1], torch.tensor([2.0, -2.0, 1.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    res = rodflow.integrate(lambda t, y: (torch.full_like(y[0], -3.0), torch.full_like(y[1], 0.25)),
                            (torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)),
                            torch.tensor([0.0, 1.0], dtype=torch.float64), clip=0.5, method="euler")
    assert res.ys[0][-1].item() == pytest.approx(-0.5, abs=1e-14)
    assert res.ys[1][-1].item() == pytest.approx(0.25, abs=1e-14)


def test_bad_arguments():
    y0 = torch.zeros(2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="method"):
        rodflow.integrate(lambda t, y: y, y0, t, method="rk45")
    with pytest.raises(ValueError, match="clip"):
        rodflow.integrate(lambda t, y: y, y0, t, clip=-1.0)
    with pytest.raises(ValueError, match="atol"):
        rodflow.integrate(lambda t, y: y, y0, t, atol=0.0)
    with pytest.raises(ValueError, match="t must"):
        rodflow.integrate(lambda t, y: y, y0, torch.tensor([0.0]))
    with pytest.raises(IntegrationError, match="y0"):
        rodflow.integrate(lambda t, y: y, torch.tensor([float("nan")]), t)


_STIFF_SCRIPT = """
import torch
from rodflow.integrate import _DELAY_WEIGHTS, IntegrationError, integrate
assert not __debug__  # python -O: torchdiffeq's own asserts are gone
f64 = torch.float64
for field, t1, options, expected in [
        (lambda t, y: y * y, 2.0, None, "underflow"),
        (lambda t, y: -1e9 * (y - torch.cos(t)), 1.0, {"max_num_steps": 500}, "max_num_steps"),
        (lambda t, y: -1e9 * (y - torch.cos(t)), 1.0, {"max_num_steps": 50, "step_size": 1e-3}, "max_num_steps")]:
    method = "euler" if options and "step_size" in options else "dopri5"
    try:
        integrate(field, torch.ones(1, dtype=f64), torch.tensor([0.0, t1], dtype=f64), method=method,
                  options=options)
    except IntegrationError as err:
        assert expected in str(err), err
        print("ok", expected)
    else:
        raise SystemExit("no IntegrationError")
"""


def test_failures_are_detected_by_our_checks_under_python_O():
    """Under ``python -O`` torchdiffeq's asserts vanish; the step cap and the underflow check are ours."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-O", "-c", _STIFF_SCRIPT], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["ok underflow", "ok max_num_steps", "ok max_num_steps"]


def test_methods_are_torchdiffeqs_table():
    from torchdiffeq._impl.odeint import SOLVERS

    from rodflow.integrate import FIXED_STEP_METHODS, METHODS

    assert set(METHODS) == set(SOLVERS) - {"scipy_solver"}
    y0 = torch.ones(1, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    for method in ("heun2", "fixed_adams"):  # refused by a hand-copied list
        res = rodflow.integrate(lambda t, y: -y, y0, t, method=method, options={"step_size": 0.01}
                                if method in FIXED_STEP_METHODS else None)
        assert abs(res.ys[-1].item() - np.exp(-1.0)) < 1e-3
    with pytest.raises(ValueError, match="max_num_steps"):
        rodflow.integrate(lambda t, y: -y, y0, t, options={"max_num_steps": 0})


def test_progress_bar_in_flow_time(monkeypatch):
    import io

    class Tty(io.StringIO):
        def isatty(self):
            return True

    err = Tty()
    monkeypatch.setattr("sys.stderr", err)
    monkeypatch.delenv("RODFLOW_PROGRESS", raising=False)
    t = torch.tensor([0.0, 3.0], dtype=torch.float64)
    rodflow.integrate(lambda t, y: -y, torch.ones(1, dtype=torch.float64), t)
    assert "integrate (dopri5)" in err.getvalue()  # the bar (its postfix: step size and evaluations)
    quiet = Tty()
    monkeypatch.setattr("sys.stderr", quiet)
    rodflow.integrate(lambda t, y: -y, torch.ones(1, dtype=torch.float64), t, progress=False)
    assert quiet.getvalue() == ""


# ---------------------------------------------------------------------- delay equations
def _delayed_exponential(t: float, a: float, tau: float) -> float:
    """``y' = a·y(t − τ)`` with ``y = 1`` on ``[−τ, 0]``: ``Σ_j aʲ(t − (j − 1)τ)ʲ/j!`` over ``(j − 1)τ ≤ t``
    (the method of steps in closed form)."""
    return sum(a**j * (t - (j - 1) * tau) ** j / math.factorial(j) for j in range(int(t // tau) + 2))


@pytest.mark.parametrize("a", [-1.7, 0.8])
def test_delay_equation_against_its_closed_form_at_second_order(a):
    tau = 0.5
    t = torch.linspace(0.0, 3.0, 7, dtype=torch.float64)
    exact = torch.tensor([_delayed_exponential(float(s), a, tau) for s in t], dtype=torch.float64)
    errors = []
    for h in (tau / 4, tau / 8, tau / 16):
        res = integrate(lambda s, y: a * y, torch.ones(1, dtype=torch.float64), t, delay=tau, history="constant",
                        options={"step_size": h})
        errors.append(float((res.ys[:, 0] - exact).abs().max()))
        assert res.stats.n_steps == round(3.0 / h)
        assert res.stats.nfe == round(3.0 / h) + round(tau / h)  # one per step, k for the past, none after the end
    assert errors[-1] < 5e-4
    for coarse, fine in itertools.pairwise(errors):
        assert 3.6 < coarse / fine < 4.4  # second order


@pytest.mark.parametrize(("method", "order"), [("trapezoid", 2), ("adams3", 3), ("adams4", 4)])
@pytest.mark.parametrize("a", [-0.6, 0.8])
def test_delay_rules_converge_at_their_order_on_an_exponential_solution(method, order, a):
    """``y' = a·y(t − τ)`` with the past ``e^{st}``, s the real root of ``s = a e^{−sτ}`` (scipy's brentq):
    the solution is ``e^{st}`` for all t (smooth, so every rule shows its order)."""
    from scipy.optimize import brentq

    tau = 0.5
    s = brentq(lambda x: x - a * math.exp(-x * tau), -1.9, 2.0)
    _converges_on_exponential(a, s, tau, tau, method, order)


def _converges_on_exponential(a: float, s: float, delay, longest: float, method: str, order: int) -> None:
    """``y' = a·Σ c_j y(t − τ_j)`` from the past ``e^{st}`` at h = 1/8, 1/16, 1/32: the error against
    ``e^{st}`` falls by ``2^order`` per halving, at one field evaluation per step."""
    t = torch.linspace(0.0, 4.0, 9, dtype=torch.float64)
    errors = []
    for h in (1 / 8, 1 / 16, 1 / 32):
        res = integrate(lambda _, y: a * y, torch.ones(1, dtype=torch.float64), t, delay=delay, method=method,
                        history=lambda x: torch.tensor([math.exp(s * x)], dtype=torch.float64),
                        options={"step_size": h})
        errors.append(float((res.ys[:, 0] - torch.exp(s * t)).abs().max()))
        assert res.stats.nfe == round(4.0 / h) + round(longest / h) + len(_DELAY_WEIGHTS[method]) - 2
    for coarse, fine in itertools.pairwise(errors):
        assert 0.8 * 2**order < coarse / fine < 1.25 * 2**order


@pytest.mark.parametrize(("method", "order"), [("trapezoid", 2), ("adams3", 3), ("adams4", 4)])
@pytest.mark.parametrize("a", [-0.6, 0.8])
def test_several_lags_with_an_undelayed_one_converge_at_the_rules_order(method, order, a):
    """``y' = a(−⅙y(t) + ⁴⁄₃y(t − ½) − ⅙y(t − 1))`` with the past ``e^{st}``, s the real root of
    ``s = a(−⅙ + ⁴⁄₃e^{−s/2} − ⅙e^{−s})`` (scipy's brentq): the lag-0 term through Adams–Bashforth,
    the others through Adams–Moulton on delayed values, each rule at its order, one evaluation per step."""
    from scipy.optimize import brentq

    kernel = {0.0: -1 / 6, 0.5: 4 / 3, 1.0: -1 / 6}
    s = brentq(lambda x: x - a * sum(c * math.exp(-x * lag) for lag, c in kernel.items()), -1.9, 2.0)
    _converges_on_exponential(a, s, kernel, 1.0, method, order)
    t = torch.linspace(0.0, 4.0, 9, dtype=torch.float64)
    # a one-lag mapping is the plain delay, to the last bit
    one = integrate(lambda _, y: a * y, torch.ones(1, dtype=torch.float64), t, delay={0.5: 1.0}, method=method)
    plain = integrate(lambda _, y: a * y, torch.ones(1, dtype=torch.float64), t, delay=0.5, method=method)
    torch.testing.assert_close(one.ys, plain.ys, rtol=0, atol=0)


def test_delay_equation_tuple_state_instant_part_and_tangent_history():
    """``x' = −y(t − τ)``, ``y' = x(t − τ) + c·y(t)``: each entry of a tuple state is stepped, the instant
    part is added at the current state (explicit Euler: first order), and with τ → its refinement the
    solution converges to scipy's solve_ivp of the same system with a small delay."""
    from scipy.integrate import solve_ivp

    c = -0.3
    field = lambda s, y: (-y[1], y[0])  # noqa: E731
    instant = lambda s, y: (torch.zeros_like(y[0]), c * y[1])  # noqa: E731
    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    t = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    tau = 1e-3
    res = integrate(field, y0, t, delay=tau, instant=instant, options={"step_size": tau})
    ref = solve_ivp(lambda s, z: [-z[1], z[0] + c * z[1]], (0.0, 2.0), [1.0, 0.0], t_eval=[1.0, 2.0],
                    rtol=1e-12, atol=1e-12)
    for i in (0, 1):
        np.testing.assert_allclose(res.ys[i][1:, 0].numpy(), ref.y[i], atol=3e-3)
    # the tangent history: y(−s) = y₀ − s·f(t₀, y₀) makes a linear solution exact
    lin = integrate(lambda s, y: torch.ones_like(y), torch.zeros(2, dtype=torch.float64), t, delay=0.5)
    torch.testing.assert_close(lin.ys[:, 0], t, rtol=0, atol=1e-15)


@pytest.mark.parametrize("method", ["trapezoid", "adams4"])
def test_per_entry_weights_solve_each_entry_with_its_own_kernel(method):
    """A tuple state with per-entry weights: entry 0 by the one-lag kernel, entry 1 by the three-lag one,
    each equal to its own solve with the scalar kernel (same lags and step; a weight 0 adds exactly 0), and
    each converging to its characteristic root (scipy's brentq)."""
    from scipy.optimize import brentq

    three = {0.0: -1 / 6, 0.5: 4 / 3, 1.0: -1 / 6}
    one = {0.0: 0.0, 0.5: 1.0, 1.0: 0.0}
    a = (-0.6, 0.8)
    field = lambda s, y: (a[0] * y[0], a[1] * y[1])  # noqa: E731
    y0 = (torch.ones(1, dtype=torch.float64), torch.ones(1, dtype=torch.float64))
    t = torch.linspace(0.0, 4.0, 9, dtype=torch.float64)
    opts = {"step_size": 1 / 16}
    mixed = integrate(field, y0, t, delay={lag: (one[lag], three[lag]) for lag in three}, method=method, options=opts)
    for i, kernel in enumerate((one, three)):
        alone = integrate(lambda s, y, i=i: a[i] * y, y0[i], t, delay=kernel, method=method, options=opts)
        torch.testing.assert_close(mixed.ys[i], alone.ys, rtol=1e-15, atol=0)
        root = brentq(lambda x, i=i, kernel=kernel: x - a[i] * sum(c * math.exp(-x * lag) for lag, c in kernel.items()),
                      -1.9, 2.0)
        tail = mixed.ys[i][-4:, 0]
        rates = torch.log(tail[1:] / tail[:-1]) / 0.5
        np.testing.assert_allclose(rates.numpy(), root, rtol=2e-3)  # the tangent past leaves a small transient
    with pytest.raises(ValueError, match="per-entry weights need a tuple state of 2"):
        integrate(lambda s, y: -y, torch.ones(1, dtype=torch.float64), t, delay={0.5: (1.0, 1.0)})
    with pytest.raises(ValueError, match="per-entry weights need a tuple state of 3"):
        integrate(field, y0, t, delay={0.5: (1.0, 1.0, 1.0)})
    for bad in ({0.5: (1.0, 1.0), 1.0: (1.0,)}, {0.5: (1.0, 1.0), 1.0: 0.0}, {0.5: ()}, {0.5: (1.0, float("inf"))}):
        with pytest.raises(ValueError, match="delay"):
            integrate(field, y0, t, delay=bad)


def test_delay_equation_bad_arguments():
    f = lambda s, y: -y  # noqa: E731
    y0 = torch.ones(2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="step_size"):
        integrate(f, y0, t, delay=0.5, options={"step_size": 0.3})
    with pytest.raises(ValueError, match="grid"):
        integrate(f, y0, torch.tensor([0.0, 0.7], dtype=torch.float64), delay=0.5)
    with pytest.raises(ValueError, match="method"):
        integrate(f, y0, t, delay=0.5, method="rk4")
    with pytest.raises(ValueError, match="delay"):
        integrate(f, y0, t, delay=-1.0)
    for bad in ({}, {0.0: 1.0}, {-0.5: 1.0}, {0.5: float("nan")}, {0.5: "1"}):
        with pytest.raises(ValueError, match="delay"):
            integrate(f, y0, t, delay=bad)
    with pytest.raises(ValueError, match="whole number of steps"):
        integrate(f, y0, t, delay={0.0: 0.5, 0.5: 0.25, 0.75: 0.25})
    with pytest.raises(ValueError, match="history"):
        integrate(f, y0, t, delay=0.5, history="zero")
    with pytest.raises(ValueError, match="instant"):
        integrate(f, y0, t, instant=f)
    with pytest.raises(ValueError, match="options"):
        integrate(f, y0, t, delay=0.5, options={"rtol": 1e-3})
    with pytest.raises(IntegrationError, match="not finite"):
        integrate(lambda s, y: y * 1e300, y0, torch.tensor([0.0, 10.0], dtype=torch.float64), delay=0.5)
