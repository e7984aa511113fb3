"""The rod's variants against references: the exact one-step multiplier's logarithm, the HVP form of
the modified equation, exact period-two sequences, and the iterates' own onset from rounding noise."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.linalg
import scipy.optimize
import torch

import rodflow
from rodflow.flows.base import DELAY3
from rodflow.flows.parts import RodState, pack
from rodflow.sharpness import hvp

HP = {
    "gd": {"lr": 0.1},
    "heavy_ball": {"lr": 0.1, "momentum": 0.9},
    "nesterov": {"lr": 0.1, "momentum": 0.9},
    "scalar_rmsprop": {"lr": 0.01, "alpha": 1 - 1e-12},
    "rmsprop": {"lr": 0.01, "alpha": 1 - 1e-12},
    "scalar_adam": {"lr": 0.01, "betas": (0.9, 1 - 1e-12)},
    "adam": {"lr": 0.01, "betas": (0.9, 1 - 1e-12)},
    "scalar_nadam": {"lr": 0.01, "betas": (0.9, 1 - 1e-12), "momentum_decay": None},
    "nadam": {"lr": 0.01, "betas": (0.9, 1 - 1e-12), "momentum_decay": None},
    "vradam": {"lr": 0.01, "betas": (0.9, 1 - 1e-12), "beta3": 3.0},
}
D = 3
T = 1e13  # bias corrections at 1 (β₁ᵗ = 0, β₂ᵗ = e⁻¹⁰)


def _setup(name: str, factor: float):
    """A quadratic whose preconditioned top eigenvalue is ``factor × threshold`` at its minimum 0.

    β₂ = 1 − 10⁻¹² freezes N, so that the base state (W = 0, M = 0, N) is stationary and the
    one-step multiplier of (Δ, μ) is a constant matrix.
    """
    spec = rodflow.optimizer(name, **HP[name])
    eig = torch.tensor([1.0, 0.3, 0.1], dtype=torch.float64)
    target = factor * spec.threshold
    if spec.beta2 is None:
        lam, n = eig * target / spec.lr, None
    else:
        p = 2.0 / spec.lr  # P = (√N⁺ + ε)/η at bias corrections 1 (N⁺ = N with β₂ → 1)
        lam = eig * target * p
        n = torch.tensor((p * spec.lr - spec.eps) ** 2, dtype=torch.float64)  # type: ignore[attr-defined]
        if not spec.scalar:
            n = n.expand(D).clone()
    return spec, torch.diag(lam), n


def _discrete_multiplier(spec, h, n) -> np.ndarray:
    """``A = −∂(w', m')/∂(w, m)`` of the exact optimizer map at the minimum: the alternating part's multiplier."""
    has_m = spec.has_momentum

    def step(x):
        w = x[:D]
        m = x[D:] if has_m else None
        s = spec.update(rodflow.PhaseState(theta=w, m=m, v=n, t=int(T)), h @ w)
        return torch.cat([s.theta, s.m]) if has_m else s.theta

    x0 = torch.zeros(2 * D if has_m else D, dtype=torch.float64)
    return -torch.autograd.functional.jacobian(step, x0).numpy()


def _rod_alternating_field(spec, h, n, order: int, limiter: str | None = None):
    """``x ↦`` the (Δ, μ) part of the rod field at W = M = 0, (Δ, μ) = x."""
    prob_loss = lambda th: 0.5 * th @ h @ th  # noqa: E731
    flow = rodflow.rod_flow(spec, prob_loss, order=order, floor=None, limiter=limiter, form="look_behind")
    has_m = spec.has_momentum
    zero = torch.zeros(D, dtype=torch.float64)

    def alt(x):
        z = RodState(W=zero, Delta=x[:D], M=zero if has_m else None, mu=x[D:] if has_m else None, N=n)
        out = flow.state(flow.field(torch.tensor(T, dtype=torch.float64), pack(z)))
        return torch.cat([out.Delta, out.mu]) if has_m else out.Delta

    return alt


def _rod_jacobian(spec, h, n, order: int) -> np.ndarray:
    """Jacobian of the (Δ, μ) part of the rod field at Δ = μ = 0, by central differences (exact for a field
    that is linear up to even terms)."""
    alt = _rod_alternating_field(spec, h, n, order)
    size = 2 * D if spec.has_momentum else D
    eps = 1e-7
    eye = torch.eye(size, dtype=torch.float64)
    return torch.stack([(alt(eps * e) - alt(-eps * e)) / (2 * eps) for e in eye], dim=1).numpy()


def _log_series(a: np.ndarray, order: int) -> np.ndarray:
    """``Σ_{j ≤ order} (−1)^{j+1} (A − I)^j / j``, the series of log A."""
    e = a - np.eye(len(a))
    out, power = np.zeros_like(a), np.eye(len(a))
    for j in range(1, order + 1):
        power = power @ e
        out = out + (-1) ** (j + 1) * power / j
    return out


@pytest.mark.parametrize("order", [1, 2])
@pytest.mark.parametrize("name", rodflow.OPTIMIZERS)
def test_linearised_rate_is_the_series_of_the_log_of_the_one_step_multiplier(name, order):
    spec, h, n = _setup(name, 1.05)
    a = _discrete_multiplier(spec, h, n)
    jac = _rod_jacobian(spec, h, n, order)
    np.testing.assert_allclose(jac, _log_series(a, order), rtol=0, atol=1e-7 * np.abs(a).max())
    # the top (unstable) mode: rate_p = log series of its eigenvalue z to order p, within the
    # series' remainder of log z (numpy's eigenvalues of the discrete map's Jacobian)
    z = np.linalg.eigvals(a)
    top = z[np.argmax(z.real)]
    assert abs(top.imag) < 1e-9 and top.real > 1  # it crosses the threshold through +1
    rates = np.linalg.eigvals(jac)
    rate = rates.real.max()
    e = top.real - 1
    series = sum((-1) ** (j + 1) * e**j / j for j in range(1, order + 1))
    assert rate == pytest.approx(series, rel=1e-4)  # eigenvalues of a non-normal matrix amplify the 1e-7
    assert abs(rate - math.log(top.real)) <= 1.01 * e ** (order + 1) / (order + 1)


def _delay_root(e: float) -> float:
    """The real root ``s`` of ``s = ε·exp(−s/2)`` (scipy's brentq): the growth rate of ``ż = ε z(t − ½)``."""
    return scipy.optimize.brentq(lambda s: s - e * math.exp(-s / 2), 0.0, e)


def _delay_form_top_mode(name: str, order: int, alternating_order: int | None = None) -> tuple[float, float, float]:
    """``(ε, measured rate, ln z)`` of the linearised delay-form rod of ``order`` along the top eigenvector of
    the exact one-step map (multiplier z = 1 + ε), by solving the rod itself from a small Δ."""
    spec, h, n = _setup(name, 1.05)
    a = _discrete_multiplier(spec, h, n)
    z, vecs = np.linalg.eig(a)
    i = int(np.argmax(z.real))
    v = torch.tensor(vecs[:, i].real, dtype=torch.float64)
    x = 1e-6 * v / torch.linalg.vector_norm(v)
    flow = rodflow.rod_flow(spec, lambda th: 0.5 * th @ h @ th, floor=None, order=order,
                            alternating_order=alternating_order)
    has_m = spec.has_momentum
    zero = torch.zeros(D, dtype=torch.float64)
    y0 = pack(RodState(W=zero, Delta=x[:D], M=zero if has_m else None, mu=x[D:] if has_m else None, N=n))
    times = torch.tensor([T, T + 6.0, T + 12.0], dtype=torch.float64)
    delay = flow.kernel()
    method = "trapezoid" if delay == 0.5 else "adams4"
    res = rodflow.integrate(flow.delayed, y0, times, delay=delay, method=method, options={"step_size": 1 / 32})
    size = [float(torch.linalg.vector_norm(torch.cat([res.ys[1][j], res.ys[3][j]]) if has_m else res.ys[1][j]))
            for j in (1, 2)]
    return z[i].real - 1, math.log(size[1] / size[0]) / 6.0, math.log(z[i].real)


@pytest.mark.parametrize("name", rodflow.OPTIMIZERS)
def test_delay_form_grows_the_top_mode_at_the_log_of_its_multiplier_to_second_order(name):
    """``form="delay"``: along the top eigenvector (multiplier z = 1 + ε of the exact one-step map) the
    linearised rod is ``ż = ε z(t − ½)``, which grows at the root of ``s = ε e^{−s/2}``,
    ``ε − ε²/2 + 3ε³/8 + …``; ``ln z = ε − ε²/2 + ε³/3 − …``. Measured by integrating the rod itself."""
    e, rate, exact = _delay_form_top_mode(name, 2)
    assert rate == pytest.approx(_delay_root(e), rel=1e-3)
    assert abs(rate - exact) <= 0.1 * e**3  # 3/8 − 1/3 = 1/24 of ε³, plus the solver's error
    assert abs(e - e**2 / 2 - exact) > 2 * abs(rate - exact)  # closer than the look-behind


def _three_lag_root(e: float) -> float:
    """The real root ``s`` of ``s = ε(−⅙ + ⁴⁄₃e^{−s/2} − ⅙e^{−s})`` (scipy's brentq)."""
    return scipy.optimize.brentq(lambda s: s - e * sum(c * math.exp(-s * lag) for lag, c in DELAY3.items()),
                                 0.0, 2 * e)


@pytest.mark.parametrize("name", rodflow.OPTIMIZERS)
def test_three_lag_form_grows_the_top_mode_at_the_log_of_its_multiplier_to_third_order(name):
    """``order=3``: along the top eigenvector (multiplier z = 1 + ε of the exact one-step map) the
    linearised rod is ``ż = ε(−⅙z(t) + ⁴⁄₃z(t − ½) − ⅙z(t − 1))``, which grows at the root of its
    characteristic equation, ``ln z + O(ε⁴)`` (the kernel equals ``s/(eˢ − 1)`` through s³), where the
    one-lag delay form is off by ε³/24. Measured by solving the rod itself."""
    e, rate, exact = _delay_form_top_mode(name, 3)
    assert rate == pytest.approx(_three_lag_root(e), rel=1e-6)
    assert abs(rate - exact) <= 2e-3 * e**4  # measured: (1.6–3.4)e-4 · ε⁴ at ε = 0.1–0.48
    assert abs(rate - exact) < 0.02 * abs(_delay_root(e) - exact)  # 100× closer than the one-lag delay form


@pytest.mark.parametrize("name", rodflow.OPTIMIZERS)
def test_alternating_order_3_grows_the_top_mode_at_the_three_lag_rate(name):
    """``order=2, alternating_order=3``: the alternating part (Δ, μ), where the top mode lives, takes the
    three-lag kernel (its rate ``ln z + O(ε⁴)``), whatever the centre's kernel."""
    e, rate, exact = _delay_form_top_mode(name, 2, alternating_order=3)
    assert rate == pytest.approx(_three_lag_root(e), rel=1e-6)
    assert abs(rate - exact) < 0.02 * abs(_delay_root(e) - exact)


@pytest.mark.parametrize(("order", "alternating"), [(2, 3), (3, 2)])
def test_each_part_of_the_rod_decays_at_its_own_kernel_rate(order, alternating):
    """GD on a quadratic, W along an eigenvector with multiplier z = 1 − ηλ = 0.9 and Δ along one with
    multiplier −(1 − ηλ) = −0.8 of the rod map: ‖W‖ decays at the root of ``s = (z − 1)K(s)`` of the
    centre's kernel and ‖Δ‖ at that of the alternating part's (scipy's brentq on each characteristic
    equation); the two kernels' roots differ by ≈ 1.5e-5 and 1e-4, far above the solver's error."""
    spec = rodflow.optimizer("gd", lr=0.1)
    h = torch.diag(torch.tensor([1.0, 18.0], dtype=torch.float64))  # ηλ = 0.1 and 1.8
    flow = rodflow.rod_flow(spec, lambda th: 0.5 * th @ h @ th, floor=None, order=order, alternating_order=alternating)
    y0 = (torch.tensor([1e-3, 0.0], dtype=torch.float64), torch.tensor([0.0, 1e-3], dtype=torch.float64))
    times = torch.tensor([0.0, 6.0, 12.0], dtype=torch.float64)
    res = rodflow.integrate(flow.delayed, y0, times, delay=flow.kernel(), method="adams4",
                            options={"step_size": 1 / 32})
    kernels = {2: {0.5: 1.0}, 3: DELAY3}

    def root(eps: float, order: int) -> float:
        return scipy.optimize.brentq(
            lambda s: s - eps * sum(c * math.exp(-s * lag) for lag, c in kernels[order].items()), 3 * eps, 0.0)

    for j, (eps, kernel_order) in enumerate(((-0.1, order), (-0.2, alternating))):
        size = [float(torch.linalg.vector_norm(res.ys[j][i])) for i in (1, 2)]
        rate = math.log(size[1] / size[0]) / 6.0
        assert rate == pytest.approx(root(eps, kernel_order), rel=1e-6)
        assert abs(rate - root(eps, 5 - kernel_order)) > 10 * abs(rate - root(eps, kernel_order))


def test_alternating_order_is_checked():
    spec = rodflow.optimizer("gd", lr=0.1)
    loss = lambda th: 0.5 * th @ th  # noqa: E731
    for bad in (1, 4, True, "3"):
        with pytest.raises(ValueError, match="alternating_order"):
            rodflow.rod_flow(spec, loss, alternating_order=bad)
    with pytest.raises(ValueError, match=r"alternating_order.*delay form"):
        rodflow.rod_flow(spec, loss, form="look_behind", alternating_order=3)
    assert rodflow.rod_flow(spec, loss, form="look_behind", alternating_order=2).alternating_order == 2
    assert rodflow.rod_flow(spec, loss).kernel() == 0.5  # the default: one kernel for the whole state
    mixed = rodflow.rod_flow(spec, loss, alternating_order=3).kernel()
    assert mixed == {0.0: (0.0, DELAY3[0.0]), 0.5: (1.0, DELAY3[0.5]), 1.0: (0.0, DELAY3[1.0])}


@pytest.mark.parametrize("limiter", ["truncate", "truncate_relative"])
@pytest.mark.parametrize("name", rodflow.OPTIMIZERS)
def test_truncated_look_behind_keeps_the_top_mode_rate(name, limiter):
    """Along the top (unstable) eigenvector of the one-step multiplier, the look-behind correction is
    −ε²/2 of the mode, smaller than its first-order rate ε: the truncated field is the look-behind's."""
    spec, h, n = _setup(name, 1.05)
    a = _discrete_multiplier(spec, h, n)
    z, vecs = np.linalg.eig(a)
    i = int(np.argmax(z.real))
    v = torch.tensor(vecs[:, i].real, dtype=torch.float64)
    x = 1e-7 * v / torch.linalg.vector_norm(v)
    e = z[i].real - 1
    out = _rod_alternating_field(spec, h, n, 2, limiter)(x)
    torch.testing.assert_close(out, (e - e**2 / 2) * x, rtol=1e-4, atol=1e-6 * float(x.abs().max()) * abs(e))


def test_look_behind_rate_at_gd_eta_lambda_2_2():
    """The numbers of the derivation: ηλ = 2.2 multiplies the top mode by 1.2 per step; the first-order
    rod grows at 0.2, the look-behind rod at 0.2 − 0.02 = 0.18, the map at ln 1.2 = 0.1823."""
    spec = rodflow.optimizer("gd", lr=1.0)
    h = torch.diag(torch.tensor([2.2, 0.5, 0.1], dtype=torch.float64))
    rates = [np.linalg.eigvals(_rod_jacobian(spec, h, None, p)).real.max() for p in (1, 2)]
    assert rates == pytest.approx([0.2, 0.18], abs=1e-9)
    assert abs(rates[1] - math.log(1.2)) < 0.2 * abs(rates[0] - math.log(1.2))  # ε³/3 against ε²/2
    a = _discrete_multiplier(spec, h, None)
    np.testing.assert_allclose(np.sort(np.linalg.eigvals(scipy.linalg.logm(a)).real)[-1], math.log(1.2), rtol=1e-12)


@pytest.mark.parametrize("eps", [-2.0, -1.0, -0.3, 0.2, 1.0, 2.0, 2.5, 3.0, 6.0, 20.0])
def test_truncated_look_behind_rate_of_a_scalar_mode(eps):
    """A mode the map multiplies by 1 + ε: the look-behind rate is ε − ε²/2 (negative past ε = 2: a growing
    mode would decay); truncated, the correction −ε²/2 is kept while |ε| ≤ 2 and shrunk to ε²/(ε²/2) = 2
    beyond, so the rate is ε − 2 (≥ 0, growing with ε, within ln(1 + ε) − 2 … ε of the exact ln(1 + ε))."""
    spec = rodflow.optimizer("gd", lr=1.0)
    lam = -eps  # GD on λx²/2 at lr 1: x ↦ (1 − λ)x = (1 + ε)x
    plain = rodflow.stable_flow(spec, lambda th: 0.5 * lam * th @ th, order=2)
    x = torch.tensor([0.7, -1.3], dtype=torch.float64)
    rate_plain = float(plain.field(0.0, (x,))[0][0] / x[0])
    assert rate_plain == pytest.approx(eps - eps**2 / 2, rel=1e-13, abs=1e-14)
    expected = eps - eps**2 / 2 if abs(eps) <= 2 else eps - 2
    for limiter in ("truncate", "truncate_relative"):  # one entry: the two limiters agree
        trunc = rodflow.stable_flow(spec, lambda th: 0.5 * lam * th @ th, order=2, limiter=limiter)
        rate_trunc = float(trunc.field(0.0, (x,))[0][0] / x[0])
        assert rate_trunc == pytest.approx(expected, rel=1e-13, abs=1e-14)
        if eps > 2:
            assert 0 < rate_trunc < eps and rate_plain < 0


def test_truncate_is_per_entry_and_continuous():
    from rodflow.flows.parts import truncate, truncate_relative

    f = torch.tensor([3.0, 4.0], dtype=torch.float64)  # ‖F‖ = 5
    for scale in (0.5, 1.0, 1.0 + 1e-9, 2.0, 10.0):
        c = scale * torch.tensor([0.0, -5.0], dtype=torch.float64)  # ‖C‖ = 5·scale
        out = truncate(f, f + c)
        phi = min(1.0, 1.0 / scale**2)
        torch.testing.assert_close(out, f + phi * c, rtol=1e-14, atol=0)
    torch.testing.assert_close(truncate(torch.zeros(2), torch.ones(2)), torch.zeros(2))  # F = 0: no correction
    # one ratio for the state, entries relative to their own size: y = (W, Δ) with ‖W‖ = 10, ‖Δ‖ = 0.01
    y = (torch.tensor([6.0, 8.0]), torch.tensor([0.0, 0.01]))
    first = (torch.tensor([0.1, 0.0]), torch.tensor([0.0, 0.01]))  # relative rates 0.01 and 1
    corr = (torch.tensor([0.0, 0.0]), torch.tensor([0.03, 0.0]))  # relative 3: φ = (0.01² + 1)/9
    out = truncate_relative(y, first, tuple(a + c for a, c in zip(first, corr)))
    phi = (0.01**2 + 1.0) / 9.0
    for o, a, c in zip(out, first, corr):
        torch.testing.assert_close(o, a + phi * c)
    with pytest.raises(ValueError, match="limiter"):
        rodflow.rod_flow(rodflow.optimizer("gd", lr=0.1), lambda th: th @ th, limiter="clip")


def _quadratic(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(4, 4, generator=gen, dtype=torch.float64))
    h = q @ torch.diag(torch.tensor([3.0, 1.0, 0.5, 0.2], dtype=torch.float64)) @ q.T
    c = torch.randn(4, generator=gen, dtype=torch.float64)
    return (lambda th: 0.5 * (th - c) @ h @ (th - c)), h, c, gen


def test_look_behind_agrees_with_the_hvp_form_for_gd():
    """GD's stable flow at order 2 is −η∇L(W + ½η∇L(W)); its HVP form −ηg − ½η²Hg, with H g from
    rodflow.sharpness.hvp (on a quadratic the two agree exactly)."""
    loss, _h, _c, gen = _quadratic()
    w = torch.randn(4, generator=gen, dtype=torch.float64)
    lr = 0.3
    flow = rodflow.stable_flow(rodflow.optimizer("gd", lr=lr), loss, order=2)
    g = rodflow.gradient(loss)(w)
    expected = -lr * g - 0.5 * lr**2 * hvp(loss, w, g)
    torch.testing.assert_close(flow.field(0.0, (w,))[0], expected, rtol=1e-13, atol=1e-14)


def _hvp_form(flow, t: float, y):
    """``F − ½(∂_tF + F′F)`` by central differences of the increment F (a reference independent of the
    look-behind code)."""
    f = flow.increment(t, y)
    h = 1e-4
    dt = [(a - b) / (2 * h) for a, b in zip(flow.increment(t + h, y), flow.increment(t - h, y))]
    up = flow.increment(t, tuple(a + h * b for a, b in zip(y, f)))
    down = flow.increment(t, tuple(a - h * b for a, b in zip(y, f)))
    jf = [(a - b) / (2 * h) for a, b in zip(up, down)]
    return tuple(a - 0.5 * (b + c) for a, b, c in zip(f, dt, jf))


def test_look_behind_rod_is_the_hvp_form_for_gd_on_a_quadratic():
    """GD's rod increment on a quadratic is linear, F = (−ηH(W − c), −2Δ + ηHΔ), so the look-behind field
    equals F − ½F′F exactly, with F′F = (−ηH F_W, −2F_Δ + ηH F_Δ) from rodflow.sharpness.hvp."""
    loss, _h, _c, gen = _quadratic(2)
    lr = 0.6
    w, delta = torch.randn(4, generator=gen, dtype=torch.float64), 0.1 * torch.randn(4, generator=gen,
                                                                                    dtype=torch.float64)
    flow = rodflow.rod_flow(rodflow.optimizer("gd", lr=lr), loss, order=2, floor=None, form="look_behind")
    fw, fd = flow.increment(0.0, (w, delta))
    jfw = -lr * hvp(loss, w, fw)
    jfd = -2 * fd + lr * hvp(loss, w, fd)
    lw, ld = flow.field(0.0, (w, delta))
    torch.testing.assert_close(lw, fw - 0.5 * jfw, rtol=1e-12, atol=1e-13)
    torch.testing.assert_close(ld, fd - 0.5 * jfd, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", ["adam", "nadam", "rmsprop", "scalar_adam"])
def test_look_behind_and_hvp_forms_agree_to_second_order(name):
    """On a quadratic, with lr, 1 − β₁ and 1 − β₂ all ∝ h so that F = O(h), at t = 3/h (the bias
    corrections β^t ≈ e^{−3} vary, at a rate O(h)): look-behind − HVP form = O(h³), look-behind − F = O(h²).
    The HVP form's F′F and ∂_tF come from central differences of the increment."""
    loss, _h, c, gen = _quadratic(1)
    w = c + 0.3 * torch.randn(4, generator=gen, dtype=torch.float64)
    m = 0.2 * torch.randn(4, generator=gen, dtype=torch.float64)
    n = 0.5 + torch.rand(4, generator=gen, dtype=torch.float64)
    gaps, firsts = [], []
    scales = [0.04, 0.02, 0.01]
    for s in scales:
        if name == "rmsprop":
            spec = rodflow.optimizer(name, lr=0.5 * s, alpha=1 - 0.5 * s, bias_correction=True)
        else:
            extra = {"momentum_decay": None} if "nadam" in name else {}
            spec = rodflow.optimizer(name, lr=0.5 * s, betas=(1 - s, 1 - 0.5 * s), **extra)
        flow = rodflow.stable_flow(spec, loss, order=2)
        nn = n.sum() if spec.scalar else n
        y = (w, m, nn) if spec.has_momentum else (w, nn)
        t = 3.0 / s
        lb = flow.field(t, y)
        ref = _hvp_form(flow, t, y)
        f = flow.increment(t, y)
        gaps.append(float(torch.linalg.vector_norm(torch.cat([(a - b).reshape(-1) for a, b in zip(lb, ref)]))))
        firsts.append(float(torch.linalg.vector_norm(torch.cat([(a - b).reshape(-1) for a, b in zip(lb, f)]))))
    slope = np.polyfit(np.log(scales), np.log(gaps), 1)[0]
    slope_f = np.polyfit(np.log(scales), np.log(firsts), 1)[0]
    assert slope > 2.7, (slope, gaps)
    assert 1.8 < slope_f < 2.2, (slope_f, firsts)


def test_seven_point_initial_state_is_exact_for_period_two_plus_quadratic():
    k = torch.arange(12, dtype=torch.float64)
    centre = torch.stack([1.0 + 0.1 * k - 0.02 * k**2, -0.5 * k + 0.01 * k**2], dim=1)
    delta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    steps = torch.arange(20, 32)
    sign = ((-1.0) ** steps).unsqueeze(1).double()
    theta = centre + sign * delta  # w_k = C_k + (−1)^k Δ
    m = 2 * centre - sign * delta
    traj = rodflow.Trajectory(theta=theta, m=m, v=None, t=steps, loss=k.clone())
    loss = lambda th: (th**2).sum()  # noqa: E731
    spec = rodflow.optimizer("heavy_ball", lr=0.1)
    for step in (25, 26, 20, 31):  # interior (both parities) and both ends (shifted windows)
        i = step - 20
        y = rodflow.rod_flow(spec, loss, init="7pt").initial(traj, step=step)
        torch.testing.assert_close(y[0], centre[i], rtol=0, atol=1e-14)
        torch.testing.assert_close(y[1], delta, rtol=0, atol=1e-14)
        torch.testing.assert_close(y[2], 2 * centre[i], rtol=0, atol=1e-14)
        torch.testing.assert_close(y[3], -delta, rtol=0, atol=1e-14)
        s = rodflow.stable_flow(spec, loss, init="7pt").initial(traj, step=step)
        torch.testing.assert_close(s[0], centre[i], rtol=0, atol=1e-14)
    # the three-point fit counts the drift's second difference as oscillation: off by c''/4
    y3 = rodflow.rod_flow(spec, loss, init="3pt").initial(traj, step=25)
    torch.testing.assert_close(y3[1] - delta, -torch.tensor([-0.04, 0.02], dtype=torch.float64) / 4 * (-1.0) ** 25,
                               rtol=0, atol=1e-14)
    # an amplitude that varies linearly is exact too at the centre of the window
    theta2 = centre + sign * (delta + 0.01 * k.unsqueeze(1))
    traj2 = rodflow.Trajectory(theta=theta2, m=None, v=None, t=steps, loss=k.clone())
    y = rodflow.rod_flow(rodflow.optimizer("gd", lr=0.1), loss, init="7pt").initial(traj2, step=26)
    torch.testing.assert_close(y[1], delta + 0.06, rtol=0, atol=1e-14)
    short = rodflow.Trajectory(theta=theta[:5], m=None, v=None, t=steps[:5], loss=k[:5].clone())
    with pytest.raises(ValueError, match="seven-point"):
        rodflow.rod_flow(rodflow.optimizer("gd", lr=0.1), loss, init="7pt").initial(short, step=22)


def _sharpening_toy(dtype: torch.dtype, seed: int, d: int = 6):
    """A quadratic-plus-quartic loss in rotated coordinates ``z = Qw``: the curvature along x grows as y
    relaxes to 1, ``L = 0.01(y − 1)² + ½(1 + 1.5y²)x² − x⁴/8 + ½Σ cᵢ(rᵢ − oᵢ)²``. GD at lr 1 crosses
    its threshold 2 at y² = 2/3 (step ≈ 85); the rotation lets every step's rounding feed the x mode,
    whose oscillation then grows from that noise to a saturated period-two orbit."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    c = torch.linspace(0.2, 0.5, d - 2, dtype=torch.float64).to(dtype)
    o = torch.randn(d - 2, generator=gen, dtype=torch.float64).to(dtype)
    q = q.to(dtype)

    def loss(w):
        z = q @ w
        x, y, r = z[0], z[1], z[2:]
        return 0.01 * (y - 1) ** 2 + 0.5 * (1.0 + 1.5 * y**2) * x**2 - 0.125 * x**4 + 0.5 * (c * (r - o) ** 2).sum()

    z0 = torch.cat([torch.tensor([0.1, 0.0], dtype=dtype), o + 0.3])
    return loss, q.T @ z0


@pytest.mark.parametrize(("dtype", "steps", "start", "tol"), [
    (torch.float64, 215, 80, {"rtol": 1e-5, "atol": 1e-8}),
    (torch.float32, 160, 40, {"rtol": 1e-4, "atol": 1e-6}),
])
def test_roundoff_floor_reproduces_the_onset_from_rounding_noise(dtype, steps, start, tol):
    """The iterates' oscillation grows from their own rounding noise (so its onset depends on the dtype:
    ~203 in float64, ~131 in float32); the rod with the roundoff floor, started long before, gets the
    onset within a few steps in both. (ρ was chosen on this toy's seed 1; this is seed 0.)"""
    loss, w0 = _sharpening_toy(dtype, seed=0)
    spec = rodflow.optimizer("gd", lr=1.0)
    traj = rodflow.iterate(spec, loss, w0, steps=steps)
    assert traj.theta.dtype == dtype
    sol = rodflow.rod_flow(spec, loss).solve(traj, start=start, **tol)
    assert sol.theta.dtype == dtype
    on = rodflow.compare(traj, sol, window=(start + 30, steps + 1)).onsets()
    assert on["iterates"] is not None and on["flow"] is not None, on
    assert abs(on["flow"] - on["iterates"]) <= 6, on

