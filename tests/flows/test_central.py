"""The central flow against closed forms, the stable flow, its complementarity conditions and GD's time average."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.optimize
import torch

import rodflow
from rodflow.flows.central import CentralFlow, sdcp_residuals, solve_sdcp, third_derivatives

F64 = torch.float64

# ---------------------------------------------------------------------------------------------
# A quadratic-plus-quartic toy with a closed-form central flow.
#
#   L(x, y, z) = ½(y + z)x² + ¼q x⁴ − c y + ½μ y² + ½ν (z − z₀)²,   GD with step η.
#
# On x = 0 the sharpness is S = y + z, its gradient ∇S = (0, 1, 1), and the quartic enters only at
# x ≠ 0. Before the edge, gradient flow: y = c/μ + (y₀ − c/μ)e^{−ημt}, z = z₀ (start at z₀). Once
# S = 2/η at t*, the central flow is gradient flow projected orthogonally to ∇S:
# ẏ = −(η/2)[(μ + ν)y − c − ν(2/η − z₀)], z = 2/η − y, so y relaxes exponentially to
# y∞ = (c + ν(2/η − z₀))/(μ + ν) at the rate η(μ + ν)/2; the oscillation's variance along x is
# Σ_xx = c − μy − ν(z − z₀) and the predicted loss L(0, y, z) + ½ S Σ_xx.
ETA, C, MU, NU, Z0, Q = 0.1, 4.0, 0.2, 0.5, 5.0, 0.05


def _toy_loss(th):
    x, y, z = th[0], th[1], th[2]
    return 0.5 * (y + z) * x**2 + 0.25 * Q * x**4 - C * y + 0.5 * MU * y**2 + 0.5 * NU * (z - Z0) ** 2


def _toy_closed_form(steps, y0=5.0):
    pre = lambda t: C / MU + (y0 - C / MU) * math.exp(-ETA * MU * t)  # noqa: E731
    t_star = scipy.optimize.brentq(lambda t: pre(t) + Z0 - 2 / ETA, 0.0, 1e4)
    y_inf = (C + NU * (2 / ETA - Z0)) / (MU + NU)
    theta, pred, var = [], [], []
    for t in range(steps + 1):
        if t <= t_star:
            y, z, s2 = pre(t), Z0, 0.0
        else:
            y = y_inf + (pre(t_star) - y_inf) * math.exp(-ETA * (MU + NU) * (t - t_star) / 2)
            z = 2 / ETA - y
            s2 = C - MU * y - NU * (z - Z0)
        theta.append((0.0, y, z))
        pred.append(float(_toy_loss(torch.tensor([0.0, y, z], dtype=F64))) + 0.5 * (y + z) * s2)
        var.append(s2)
    return torch.tensor(theta, dtype=F64), torch.tensor(pred, dtype=F64), np.array(var), t_star


def _toy_solution(substeps, steps=90):
    spec = rodflow.optimizer("gd", lr=ETA)
    traj = rodflow.iterate(spec, _toy_loss, torch.tensor([0.0, 5.0, Z0], dtype=F64), 3)
    return rodflow.central_flow(spec, _toy_loss, k=2, substeps=substeps).solve(traj, steps=steps)


def test_toy_central_flow_matches_its_closed_form_at_first_order():
    steps = 90
    ref, pred, var, t_star = _toy_closed_form(steps)
    assert 50 < t_star < 60  # the edge is reached inside the run, with 30 steps at EoS after it
    errs = {}
    for n in (4, 8):
        sol = _toy_solution(n, steps)
        errs[n] = float((sol.theta - ref).abs().max())
        if n == 8:
            assert float((sol.theta[:, 0]).abs().max()) == 0.0
            late = slice(int(t_star) + 3, None)
            # the flow holds the sharpness at 2/η, and the oscillation's size and the predicted loss
            np.testing.assert_allclose(np.array(sol.config["preconditioned_sharpness"])[late], 2.0, atol=1e-9)
            np.testing.assert_allclose(np.array(sol.config["oscillation"])[late] ** 2, var[late], rtol=2e-3)
            np.testing.assert_allclose(sol.predicted_loss[late].numpy(), pred[late].numpy(), rtol=0, atol=0.02)
            assert sol.config["active"][0] == 0 and sol.config["active"][-1] == 1
    # Euler substeps of 1/n: the error is first order in 1/n
    assert errs[8] < 8e-3
    assert 1.6 < errs[4] / errs[8] < 2.4, errs


def _degenerate_problem():
    """Two oscillating directions at the same curvature 2/η: ``H_xx = (2/η + y)I + z σ_x``."""
    a = 2 / ETA

    def loss(th):
        x1, x2, y, z = th[0], th[1], th[2], th[3]
        return (0.5 * (a + y) * (x1**2 + x2**2) + z * x1 * x2 - 1.5 * y - 0.7 * z + 0.5 * 0.3 * y**2
                + 0.5 * 0.4 * z**2)

    return loss, torch.zeros(4, dtype=F64)


@pytest.mark.parametrize("angle", [0.0, 0.3, 1.1])
def test_two_critical_directions_hold_both_and_do_not_depend_on_the_basis(angle):
    """Both eigenvalues sit at 2/η: X must stop y and z (the top eigenvalue is 2/η + y + |z|).

    With ``T_11 = T_22 = e_y`` and ``T_12 = e_z`` in the basis (e₁, e₂), holding both needs
    ``Σ_11 + Σ_22 = 2·1.5`` and ``Σ_12 = 0.7`` *with the weight 2 on X_12* (√2 would leave ż ≠ 0),
    and Σ = UXUᵀ, hence the field, is the same in any rotated basis of the eigenspace.
    """
    loss, w = _degenerate_problem()
    spec = rodflow.optimizer("gd", lr=ETA)
    flow = CentralFlow(spec, loss, k=2, margin=0.05)
    eigen = flow._eigen
    c, s = math.cos(angle), math.sin(angle)
    rot = torch.tensor([[c, -s], [s, c]], dtype=F64)

    def rotated(w_, p_):
        lam, u = eigen(w_, p_)
        return lam, rot @ u

    flow._eigen = rotated  # type: ignore[method-assign]
    (dw,) = flow.field(0.0, (w,))
    torch.testing.assert_close(dw, torch.zeros(4, dtype=F64), rtol=0, atol=1e-9)
    aux = flow._log[-1][1]
    x = aux["X"]
    u = rot @ eigen(w, torch.full_like(w, 1 / ETA))[1]
    sigma = u.T @ x @ u  # [4, 4]
    # Σ on (x₁, x₂): ẏ = −η(−1.5 + ½(Σ₁₁ + Σ₂₂)) = 0 and ż = −η(−0.7 + Σ₁₂) = 0
    assert float(sigma[0, 0] + sigma[1, 1]) == pytest.approx(3.0, rel=1e-8)
    assert float(sigma[0, 1]) == pytest.approx(0.7, rel=1e-8)
    assert float(sigma[2:].abs().max()) == 0.0


def test_below_the_threshold_the_central_flow_is_the_stable_flow():
    prob = rodflow.problems.digits_mlp((8,), n=64, seed=0)
    spec = rodflow.optimizer("gd", lr=0.2)  # λ_max(ηH) ≈ 0.45 over the run
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, 12)
    sol = rodflow.central_flow(spec, prob.loss_fn, substeps=4).solve(traj)
    ref = rodflow.stable_flow(spec, prob.loss_fn).solve(traj, method="euler", options={"step_size": 0.25})
    torch.testing.assert_close(sol.theta, ref.theta, rtol=0, atol=1e-13)
    assert sol.predicted_loss is not None
    torch.testing.assert_close(sol.predicted_loss, sol.loss, rtol=1e-14, atol=0)
    assert max(sol.config["preconditioned_sharpness"]) < 1.0
    assert sol.config["third_evals"] == 0 and sol.config["hvp_evals"] > 0
    assert sol.config["grad_evals"] == 4 * 12 + 1  # four substeps per step, one more for the last loss


def test_iterative_eigensolves_are_warm_started_and_agree_with_the_dense_ones(monkeypatch):
    """Above DENSE_MAX_DIM the default is the block Krylov solver, warm-started from the previous
    evaluation (it once got no warm start): after the first solve every call gets the last vectors,
    and the eigenvalues are the dense solve's (the products saved are measured in
    ``benchmarks/flows.py``: on this 610-parameter net at lr 2 they are few)."""
    import rodflow.flows.central as central

    prob = rodflow.problems.digits_mlp((8,), n=64, seed=0)  # 610 parameters > DENSE_MAX_DIM
    spec = rodflow.optimizer("gd", lr=2.0)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, 6)
    inner = central.sharpness

    def run(cold: bool) -> list[tuple]:
        calls = []

        def spy(*args, **kwargs):
            if cold:
                kwargs["warm_start"] = None
            res = inner(*args, **kwargs)
            calls.append((kwargs["method"], kwargs["warm_start"] is not None, res.eigenvalues, args[1]))
            return res

        monkeypatch.setattr(central, "sharpness", spy)
        rodflow.central_flow(spec, prob.loss_fn, k=2, substeps=2).solve(traj, steps=4)
        return calls

    warm, cold = run(False), run(True)
    torch.testing.assert_close(warm[-1][3], cold[-1][3], rtol=0, atol=1e-4)  # the same flow, to the solver tolerance
    assert len(warm) >= 8 and all(method == "krylov" for method, *_ in warm)
    assert not warm[0][1] and all(w for _, w, *_ in warm[1:])
    assert not any(w for _, w, *_ in cold)
    lam, theta = warm[-1][2], warm[-1][3]
    dense = rodflow.sharpness(prob.loss_fn, theta, k=lam.numel(), method="dense").eigenvalues
    torch.testing.assert_close(lam, spec.lr * dense, rtol=1e-8, atol=0)  # λ(P⁻¹H) with P = 1/η


@pytest.mark.parametrize("name", ["rmsprop", "scalar_rmsprop"])
def test_rmsprop_below_the_threshold_is_the_papers_stable_flow(name):
    """X = 0: ẇ = −η∇L/(√ν + ε), ν̇ = (1 − β₂)/β₂ (sq(∇L) − ν), against scipy's solve_ivp."""
    prob = rodflow.problems.quadratic([1.0, 0.4, 0.1], seed=2)
    spec = rodflow.optimizer(name, lr=0.01, alpha=0.9)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, 20)
    sol = rodflow.central_flow(spec, prob.loss_fn).solve(traj, method="dopri5", rtol=1e-10, atol=1e-12)
    grad = rodflow.gradient(prob.loss_fn)
    d = prob.theta0.numel()
    v1 = traj.v[1].reshape(-1).numpy()

    def rhs(t, y):
        w = torch.tensor(y[:d], dtype=F64)
        v = y[d:]
        g = grad(w).numpy()
        sq = g * g if name == "rmsprop" else np.array([g @ g])
        return np.concatenate([-0.01 * g / (np.sqrt(v) + 1e-8), (1 - 0.9) / 0.9 * (sq - v)])

    ref = scipy.integrate.solve_ivp(rhs, (0, 20), np.concatenate([prob.theta0.numpy(), v1]),
                                    t_eval=np.arange(21.0), rtol=1e-11, atol=1e-13)
    np.testing.assert_allclose(sol.theta.numpy(), ref.y[:d].T, rtol=0, atol=1e-9)
    # v is reported in the trajectory's convention: v_t = ν(t − 1), starting from the recorded v_0
    v_ref = ref.y[d:].T.reshape(21, *traj.v.shape[1:])
    np.testing.assert_allclose(sol.v[1:].numpy(), v_ref[:-1], rtol=1e-8)
    torch.testing.assert_close(sol.v[0], traj.v[0])


def _random_sdcp(a, seed):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((a * (a + 1) // 2 + 1, a, a))
    g = g + g.transpose(0, 2, 1)  # symmetric "T_ij" coefficient matrices
    b = np.einsum("rij,rkl->ijkl", g, g)  # a Gram operator: symmetric PSD
    m = rng.standard_normal((a, a))
    m0 = m @ m.T / a - 1.0 * np.eye(a) + 0.3 * (m + m.T)
    return m0, b


@pytest.mark.parametrize("a", [1, 2, 3, 4])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sdcp_solution_satisfies_its_kkt_conditions(a, seed):
    m0, b = _random_sdcp(a, seed)
    x = solve_sdcp(m0, b)
    res = sdcp_residuals(m0, b, x)
    scale = 1.0 + np.abs(m0).max()
    assert res["min_eig_x"] >= -1e-9 * scale
    assert res["min_eig_y"] >= -1e-7 * scale
    assert abs(res["complementarity"]) <= 1e-7 * scale


def test_sdcp_matches_a_brute_force_solve_in_two_dimensions():
    """The 2×2 program solved by SLSQP over (x₁₁, x₁₂, x₂₂) with x₁₁, x₂₂ ≥ 0, det ≥ 0."""
    for seed in range(4):
        m0, b = _random_sdcp(2, seed)
        bm = b.reshape(4, 4)

        def f(p, m0=m0, bm=bm):
            x = np.array([[p[0], p[1]], [p[1], p[2]]])
            return float(np.sum(m0 * x) + 0.5 * x.reshape(-1) @ bm @ x.reshape(-1))

        cons = [{"type": "ineq", "fun": lambda p: p[0]}, {"type": "ineq", "fun": lambda p: p[2]},
                {"type": "ineq", "fun": lambda p: p[0] * p[2] - p[1] ** 2}]
        best = min((scipy.optimize.minimize(f, start, constraints=cons, method="SLSQP",
                                            options={"ftol": 1e-14, "maxiter": 500})
                    for start in ([1.0, 0.0, 1.0], [0.1, 0.05, 2.0], [3.0, -1.0, 0.5])), key=lambda r: r.fun)
        x = solve_sdcp(m0, b)
        assert f([x[0, 0], x[0, 1], x[1, 1]]) <= best.fun + 1e-9 * (1 + abs(best.fun))
        np.testing.assert_allclose(x, [[best.x[0], best.x[1]], [best.x[1], best.x[2]]], atol=2e-4)


def test_sdcp_closed_forms():
    assert solve_sdcp(np.array([[-2.0]]), np.array([[[[8.0]]]]))[0, 0] == pytest.approx(0.25)
    assert solve_sdcp(np.array([[0.5]]), np.array([[[[8.0]]]]))[0, 0] == 0.0
    m0 = np.diag([1.0, 2.0])
    assert not solve_sdcp(m0, _random_sdcp(2, 0)[1]).any()  # M₀ ⪰ 0: nothing to hold


def test_third_derivatives_match_a_finite_difference_of_hvps(small_mlp):
    theta = small_mlp.theta0 + 0.05 * torch.randn_like(small_mlp.theta0)
    vecs = torch.randn(2, theta.numel(), dtype=F64)
    vecs = vecs / vecs.norm(dim=1, keepdim=True)
    pairs = [(0, 0), (0, 1), (1, 1)]
    loss, g, third = third_derivatives(small_mlp.loss_fn, theta, vecs, pairs)
    torch.testing.assert_close(loss, small_mlp.loss_fn(theta))
    torch.testing.assert_close(g, rodflow.gradient(small_mlp.loss_fn)(theta))
    eps = 1e-4
    for r, (i, j) in enumerate(pairs):
        fd = (rodflow.hvp(small_mlp.loss_fn, theta + eps * vecs[j], vecs[i])
              - rodflow.hvp(small_mlp.loss_fn, theta - eps * vecs[j], vecs[i])) / (2 * eps)
        assert float((fd - third[r]).norm() / third[r].norm()) < 1e-6


@pytest.mark.parametrize("name", ["heavy_ball", "nesterov", "adam", "scalar_adam", "nadam", "vradam"])
def test_no_central_flow_for_momentum_methods(name):
    prob = rodflow.problems.quadratic([1.0, 0.5], seed=0)
    with pytest.raises(ValueError, match="momentum"):
        rodflow.central_flow(rodflow.optimizer(name), prob.loss_fn)


@pytest.mark.parametrize("kwargs, match", [({"k": 0}, "k must"), ({"substeps": 1.5}, "substeps"),
                                           ({"margin": 1.0}, "margin"), ({"horizon": -1.0}, "horizon"),
                                           ({"eig_tol": 0.0}, "eig_tol"), ({"rate": "x"}, "rate")])
def test_bad_options_are_named(kwargs, match):
    prob = rodflow.problems.quadratic([1.0, 0.5], seed=0)
    with pytest.raises(ValueError, match=match):
        rodflow.central_flow(rodflow.optimizer("gd", lr=0.1), prob.loss_fn, **kwargs)


def _eos_run(steps):
    prob = rodflow.problems.digits_mlp((8,), n=64, seed=0)
    # λ_max(ηH) starts above 2: a first catapult by step 20, EoS from step ≈ 35, its first spike ≈ 65
    spec = rodflow.optimizer("gd", lr=1.0)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps)
    return prob, spec, traj


def _loss_ratios(traj, sol, start):
    gd = traj.loss[start: start + len(sol)].mean()
    assert sol.predicted_loss is not None
    return float(sol.predicted_loss.mean() / gd - 1), float(sol.loss.mean() / gd - 1)


def test_predicted_loss_is_the_time_averaged_gd_loss_at_eos():
    """After the first EoS spike, ``L(W) + ½⟨H, Σ⟩`` against GD's loss averaged over 40 steps
    (measured: +1.1 %; the loss at the centre alone is 21 % below)."""
    start, steps = 80, 40
    prob, spec, traj = _eos_run(start + steps + 1)
    sol = rodflow.central_flow(spec, prob.loss_fn, k=1, substeps=2).solve(traj, start=start, steps=steps)
    assert min(sol.config["active"]) == 1  # at the edge all along
    predicted, centre = _loss_ratios(traj, sol, start)
    assert abs(predicted) < 0.04
    assert centre < -0.1  # the oscillation's share ½⟨H, Σ⟩ is what closes the gap


@pytest.mark.slow
def test_predicted_loss_sharpness_and_distances_over_a_longer_eos_run():
    """120 steps, two tracked eigenvalues (measured: +1.8 % predicted loss; centre distance 0.13
    against the stable flow's 0.44)."""
    start, steps = 80, 120
    prob, spec, traj = _eos_run(start + steps + 1)
    sol = rodflow.central_flow(spec, prob.loss_fn, k=2, substeps=2).solve(traj, start=start, steps=steps)
    np.testing.assert_array_less(np.array(sol.config["preconditioned_sharpness"][2:]), 2.0 + 1e-2)  # measured ≤ 2.006
    predicted, _ = _loss_ratios(traj, sol, start)
    assert abs(predicted) < 0.04
    window = (start, start + steps + 1)
    central = rodflow.compare(traj, sol, window=window).summary()
    stable = rodflow.compare(traj, rodflow.stable_flow(spec, prob.loss_fn).solve(traj, start=start, steps=steps),
                             window=window).summary()
    assert central["eos_mean_centre_distance"] < 0.5 * stable["eos_mean_centre_distance"]


def test_tracking_plot_draws_the_predicted_loss():
    sol = _toy_solution(2, steps=10)
    spec = rodflow.optimizer("gd", lr=ETA)
    traj = rodflow.iterate(spec, _toy_loss, torch.tensor([0.0, 5.0, Z0], dtype=F64), 10)
    traj.loss = traj.loss + 200.0  # the toy's loss is negative: shift both for the log axis
    sol.loss = sol.loss + 200.0
    sol.predicted_loss = sol.predicted_loss + 200.0
    fig = rodflow.plot.tracking(traj, {"central": rodflow.compare(traj, sol, window=(0, 11))},
                                solutions={"central": sol})
    labels = [line.get_label() for line in fig.axes[2].get_lines()]
    assert "predicted loss central" in labels
    line = fig.axes[2].get_lines()[labels.index("predicted loss central")]
    np.testing.assert_allclose(line.get_ydata(), sol.predicted_loss.numpy())


def test_scalar_rmsprop_central_flow_holds_its_preconditioned_sharpness_at_two():
    """On the toy, scalar RMSProp starts at λ_max(P⁻¹H) = η S/√ν ≈ 5.3 > 2 (ν = v₁ = 0.9): the flow pulls
    it back within one substep and holds it at 2 while ν and S move; λ is measured here from the full
    Hessian at the solution's (W, ν), independently of the flow's own eigensolves."""
    spec = rodflow.optimizer("scalar_rmsprop", lr=0.5, alpha=0.9)
    traj = rodflow.iterate(spec, _toy_loss, torch.tensor([0.0, 5.0, Z0], dtype=F64), 3)
    sol = rodflow.central_flow(spec, _toy_loss, k=2, substeps=8).solve(traj, steps=40)
    lam = []
    for t in range(40):
        p = (sol.v[t + 1].sqrt() + spec.eps) / spec.lr  # sol.v[t + 1] = ν(t), the step's own second moment
        h = torch.autograd.functional.hessian(_toy_loss, sol.theta[t])
        lam.append(float(torch.linalg.eigvalsh(h / p).max()))
    assert lam[0] > 5
    np.testing.assert_allclose(lam[1:], 2.0, atol=1e-4)  # measured: 6.5e-5 right after the pull-back, then less
    assert float(sol.theta[-1, 1] - sol.theta[1, 1]) > 1.0  # the centre keeps moving along the edge
    assert min(sol.config["oscillation"][1:]) > 0.1
