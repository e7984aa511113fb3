"""The rod flow: its threshold for every optimizer, the floor, and tracking through EoS."""

from __future__ import annotations

import pytest
import torch

import rodflow

CASES = {
    "gd": {"lr": 0.1},
    "heavy_ball": {"lr": 0.1, "momentum": 0.9},
    "nesterov": {"lr": 0.1, "momentum": 0.9},
    "scalar_rmsprop": {"lr": 0.01, "alpha": 0.99},
    "rmsprop": {"lr": 0.01, "alpha": 0.99},
    "scalar_adam": {"lr": 0.01},
    "adam": {"lr": 0.01},
    "scalar_nadam": {"lr": 0.01, "momentum_decay": None},
    "nadam": {"lr": 0.01, "momentum_decay": None},
    "vradam": {"lr": 0.01, "beta3": 3.0},
}


def _rod_jacobian_max_real(name: str, factor: float) -> float:
    """Largest real part of the (Δ, μ) block of the rod field, linearised at a minimum.

    The quadratic's preconditioned top eigenvalue is ``factor × threshold``. At the minimum g = 0,
    so N enters only at second order; t is large, so bias corrections are 1.
    """
    spec = rodflow.optimizer(name, **CASES[name])
    d = 3
    eig = torch.tensor([1.0, 0.3, 0.1], dtype=torch.float64)
    target = factor * spec.threshold
    if spec.beta2 is None:
        lam = eig * target / spec.lr
        n = None
    else:
        # choose the post-update preconditioner P = (√N⁺ + ε)/η (bias corrections = 1) so that
        # λ_max(P⁻¹H) = target with H = diag(lam)
        p = 2.0 / spec.lr
        lam = eig * target * p
        n_plus = (p * spec.lr - spec.eps) ** 2
        n = torch.tensor(n_plus / spec.beta2, dtype=torch.float64)
        if not spec.scalar:
            n = n.expand(d).clone()
    prob = rodflow.problems.quadratic(lam, seed=4)
    # the limiter's φ depends on the direction of (Δ, μ) (it is not linear at 0): the linearisation
    # is the look-behind's, which it equals along each eigenvector with |ε| ≤ 2 (test_rod_variants)
    flow = rodflow.rod_flow(spec, prob.loss_fn, floor=None, limiter=None, form="look_behind")
    w = torch.zeros(d, dtype=torch.float64)
    t = torch.tensor(1e6, dtype=torch.float64)
    has_m = "M" in flow.names

    def alt(x):
        delta = x[:d]
        mu = x[d:] if has_m else None
        y = [w, delta]
        if has_m:
            y += [torch.zeros(d, dtype=torch.float64), mu]
        if n is not None:
            y.append(n)
        out = dict(zip(flow.names, flow.field(t, tuple(y))))
        return torch.cat([out["Delta"], out["mu"]]) if has_m else out["Delta"]

    # the field is linear in (Δ, μ) up to O(‖Δ‖²) terms through N⁺; the gradients inside it are
    # detached, so differentiate by central differences
    size = 2 * d if has_m else d
    h = 1e-6
    eye = torch.eye(size, dtype=torch.float64)
    jac = torch.stack([(alt(h * e) - alt(-h * e)) / (2 * h) for e in eye], dim=1)
    return float(torch.linalg.eigvals(jac).real.max())


@pytest.mark.parametrize("name", list(CASES))
def test_rod_destabilises_exactly_at_the_threshold(name):
    assert _rod_jacobian_max_real(name, 0.99) < 0
    assert _rod_jacobian_max_real(name, 1.01) > 0


@pytest.fixture(scope="module")
def gd_eos():
    """GD on digits past its edge of stability, with both flows solved from step 0."""
    prob = rodflow.problems.digits_mlp((16,), n=128, seed=0)
    spec = rodflow.optimizer("gd", lr=1.2)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps=120)
    rod = rodflow.rod_flow(spec, prob.loss_fn).solve(traj, rtol=1e-5, atol=1e-8)
    stable = rodflow.stable_flow(spec, prob.loss_fn).solve(traj, rtol=1e-5, atol=1e-8)
    return traj, rod, stable


def test_floor_holds_the_rod_width_where_it_would_collapse():
    # GD far below its threshold (ηλ_max = 0.5): the rod decays like exp(−1.5 t) without the floor
    prob = rodflow.problems.quadratic([1.0, 0.5, 0.2], seed=1, center=torch.tensor([1.0, 2.0, -1.0],
                                                                                  dtype=torch.float64))
    spec = rodflow.optimizer("gd", lr=0.5)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps=200)
    rho = 1e-8
    held = rodflow.rod_flow(spec, prob.loss_fn, init="3pt", floor=rho).solve(traj)
    free = rodflow.rod_flow(spec, prob.loss_fn, init="3pt", floor=None).solve(traj)
    rel = torch.linalg.vector_norm(held.delta, dim=1) / torch.linalg.vector_norm(held.centre, dim=1)
    assert float(rel[20:].min()) > rho / 3 * 0.99
    assert float(rel.max()) < rho * 1.01
    free_w = torch.linalg.vector_norm(free.delta, dim=1)
    assert float(free_w[-1]) < 1e-6 * float(free_w[0])  # collapses (to the solver tolerance)


def test_rod_inflates_to_the_iterates_oscillation_at_eos(gd_eos):
    traj, sol, _ = gd_eos
    width = torch.linalg.vector_norm(sol.delta, dim=1)
    osc = 0.25 * torch.linalg.vector_norm(traj.theta[2:] - 2 * traj.theta[1:-1] + traj.theta[:-2], dim=1)
    late = slice(-30, -1)
    ratio = width[1:-1][late].mean() / osc[late].mean()
    assert 0.5 < float(ratio) < 2.0, float(ratio)


def test_rod_tracks_gd_through_eos_better_than_the_stable_flow(gd_eos):
    traj, rod, stable = gd_eos
    window = (60, 121)
    r = rodflow.compare(traj, rod, window=window).summary()
    s = rodflow.compare(traj, stable, window=window).summary()
    assert r["eos_mean_distance"] < 0.7 * s["eos_mean_distance"], (r, s)


def test_rod_initial_state_fits_a_period_two_sequence():
    spec = rodflow.optimizer("heavy_ball", lr=0.1)
    prob = rodflow.problems.quadratic([1.0, 2.0], seed=0)
    k = torch.arange(7, dtype=torch.float64)
    centre = torch.stack([1.0 + 0.1 * k, -0.5 * k], dim=1)
    delta = torch.tensor([0.3, -0.2], dtype=torch.float64)
    steps = torch.arange(1, 8)
    theta = centre + ((-1.0) ** steps).unsqueeze(1).double() * delta  # w_k = C_k + (−1)^k Δ
    traj = rodflow.Trajectory(theta=theta, m=theta.clone(), v=None, t=steps, loss=k.clone())
    y = rodflow.rod_flow(spec, prob.loss_fn).initial(traj, step=4)
    torch.testing.assert_close(y[0], centre[3])
    torch.testing.assert_close(y[1], delta)  # step 4 is even: w_4 = W + Δ
    y = rodflow.rod_flow(spec, prob.loss_fn).initial(traj, step=5)
    torch.testing.assert_close(y[1], delta)  # the sign convention holds at odd steps too
    y = rodflow.rod_flow(spec, prob.loss_fn).initial(traj, step=1)  # one-sided at the first row
    torch.testing.assert_close(y[0], centre[0])
    torch.testing.assert_close(y[1], delta)


@pytest.mark.parametrize("name", ["gd", "heavy_ball", "nesterov"])
def test_euler_step_of_the_rod_is_the_average_of_an_even_and_an_odd_step(name, small_mlp):
    """The rod map is exact for period two: one Euler step of size 1 averages and differences the
    optimizer's steps from W + Δ and W − Δ (exact for methods whose step size has no ν)."""
    spec = rodflow.optimizer(name, **CASES[name])
    flow = rodflow.rod_flow(spec, small_mlp.loss_fn, order=1, floor=None)
    gen = torch.Generator().manual_seed(0)
    d = small_mlp.dim
    w = small_mlp.theta0
    delta = 1e-2 * torch.randn(d, generator=gen, dtype=torch.float64)
    y = [w, delta]
    if "M" in flow.names:
        m, mu = torch.randn(d, generator=gen, dtype=torch.float64), torch.randn(d, generator=gen, dtype=torch.float64)
        y += [m, mu]
    t = 7
    dy = flow.field(torch.tensor(float(t), dtype=torch.float64), tuple(y))
    after = [a + b for a, b in zip(y, dy)]
    grad = rodflow.gradient(small_mlp.loss_fn)
    even = spec.step(rodflow.PhaseState(theta=w + delta, m=None if len(y) == 2 else m + mu, t=t), grad)
    odd = spec.step(rodflow.PhaseState(theta=w - delta, m=None if len(y) == 2 else m - mu, t=t), grad)
    # from an even iterate the next one is odd: w_e' = W' − Δ', w_o' = W' + Δ'
    torch.testing.assert_close(after[0], (even.theta + odd.theta) / 2, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(after[1], (odd.theta - even.theta) / 2, rtol=1e-12, atol=1e-14)
    if len(y) > 2:
        torch.testing.assert_close(after[2], (even.m + odd.m) / 2, rtol=1e-12, atol=1e-14)
        torch.testing.assert_close(after[3], (odd.m - even.m) / 2, rtol=1e-12, atol=1e-14)


def test_compare_measures_k_star_when_the_run_has_no_sharpness(gd_eos):
    traj, rod, _ = gd_eos
    cmp = rodflow.compare(traj, rod, sharpness_every=10)
    assert cmp.k_star is not None and 0 <= cmp.k_star <= 120
    assert cmp.window == (cmp.k_star, 121)
    ref = rodflow.sharpness(rod.flow.loss_fn, traj.theta[cmp.k_star]).top * 1.2
    assert ref >= 2.0  # at k* the iterates' ηλ_max has reached GD's threshold 2
    s = cmp.summary()
    assert {"mean_distance", "max_distance", "pre_eos_mean_distance", "eos_mean_distance"} <= set(s)
