"""Sharpness against references: eigvalsh of the full Hessian from torch.func.hessian, known spectra."""

from __future__ import annotations

import importlib
import warnings

import pytest
import torch

import rodflow
from rodflow.sharpness import DENSE_MAX_DIM, HessianOperator, SharpnessTracker, solve

METHODS = ["dense", "krylov", "lanczos", "lobpcg"]
ALL_METHODS = [*METHODS, "power"]
# each solver's own tolerance for a 1e-6 relative eigenvalue: lobpcg's bounds residuals (eigenvalue
# error ~ tol² / gap), power's the change of the Rayleigh quotient per product
TOL = {"dense": 1e-12, "krylov": 1e-8, "lanczos": 1e-12, "lobpcg": 1e-8, "power": 1e-12}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def mlp_hessian(small_mlp):
    theta = small_mlp.theta0 + 0.05 * torch.randn(small_mlp.dim, generator=torch.Generator().manual_seed(1),
                                                  dtype=torch.float64)
    h = torch.func.hessian(small_mlp.loss_fn)(theta)
    return theta, 0.5 * (h + h.T)


def test_the_reference_mlp_has_about_a_thousand_parameters(small_mlp):
    assert small_mlp.dim == 1210


def test_hvp_is_the_hessian_times_the_vector(small_mlp, mlp_hessian):
    theta, h = mlp_hessian
    v = torch.randn(3, small_mlp.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(rodflow.hvp(small_mlp.loss_fn, theta, v[0]), h @ v[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rodflow.hvp(small_mlp.loss_fn, theta, v), v @ h, rtol=1e-10, atol=1e-12)
    # one graph, many products: the vectorised block equals one backward per row
    op, loop = HessianOperator(small_mlp.loss_fn, theta), HessianOperator(small_mlp.loss_fn, theta, batched=False)
    torch.testing.assert_close(op(v), loop(v), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(op(v[1]), h @ v[1], rtol=1e-10, atol=1e-12)


def test_hvp_of_a_loss_without_curvature_is_zero():
    theta = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    out = rodflow.hvp(lambda th: (2.0 * th).sum(), theta, torch.ones(2, 3, dtype=torch.float64))
    assert torch.equal(out, torch.zeros(2, 3, dtype=torch.float64))
    for method in ALL_METHODS:
        res = rodflow.sharpness(lambda th: th.sum(), torch.ones(400, dtype=torch.float64), method=method)
        assert res.top == 0.0 and res.n_hvp == 0 and res.eigenvectors.shape == (1, 400)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_top_eigenvalues_of_an_mlp(small_mlp, mlp_hessian, method):
    theta, h = mlp_hessian
    k = 1 if method == "power" else 2
    ref = torch.linalg.eigvalsh(h).flip(0)[:k]
    res = rodflow.sharpness(small_mlp.loss_fn, theta, k=k, method=method, tol=TOL[method], max_iter=5000)
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-6, atol=0)
    assert res.method == method
    assert res.eigenvectors.shape == (k, small_mlp.dim)
    for lam, vec in zip(res.eigenvalues, res.eigenvectors):  # H v = λ v
        torch.testing.assert_close(h @ vec, lam * vec, rtol=0, atol=1e-3 * float(lam))


SPECTRA = {
    "spread": [10.0, 3.0, 1.0, 0.5] + [0.1] * 60,
    "near_degenerate_top": [5.0, 5.0 - 1e-4, 2.0] + [0.3] * 60,
    "negative_dominant": [-50.0, 4.0, 3.0, -20.0] + [0.05] * 60,
}


@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("method", ALL_METHODS)
def test_known_spectra(spectrum, method):
    eigs = torch.tensor(SPECTRA[spectrum], dtype=torch.float64)
    prob = rodflow.problems.quadratic(eigs, seed=5)
    k = 1 if method == "power" else 2
    res = rodflow.sharpness(prob.loss_fn, prob.theta0, k=k, method=method, tol=TOL[method], max_iter=5000)
    ref = eigs.sort(descending=True).values[:k]  # largest algebraic, not magnitude
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-6, atol=0)


def test_auto_is_dense_for_small_problems_and_lanczos_above():
    small = rodflow.problems.quadratic([3.0, -7.0, 1.0], seed=0)
    assert rodflow.sharpness(small.loss_fn, small.theta0).method == "dense"
    big = rodflow.problems.quadratic(torch.linspace(-2.0, 1.0, DENSE_MAX_DIM + 1), seed=0)
    res = rodflow.sharpness(big.loss_fn, big.theta0)
    assert res.method == "lanczos" and res.top == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_preconditioned_sharpness_matches_eigvalsh(small_mlp, mlp_hessian, method):
    theta, h = mlp_hessian
    p = 0.5 + torch.rand(small_mlp.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = p.rsqrt()
    ref = torch.linalg.eigvalsh(s[:, None] * h * s[None, :]).max()
    res = rodflow.sharpness(small_mlp.loss_fn, theta, preconditioner=p, method=method, tol=TOL[method],
                            max_iter=5000)
    assert res.top == pytest.approx(float(ref), rel=1e-6)
    # also the top eigenvalue of the non-symmetric P⁻¹H
    assert res.top == pytest.approx(float(torch.linalg.eigvals(h / p[:, None]).real.max()), rel=1e-6)


def test_preconditioned_sharpness_uses_the_spec(small_mlp):
    spec = rodflow.optimizer("adam", lr=0.01)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, steps=5)
    state = traj.state(5)
    p = spec.preconditioner(state)
    assert not bool((p == p[0]).all())  # Adam's P is not uniform
    a = rodflow.preconditioned_sharpness(spec, state, small_mlp.loss_fn, tol=1e-10)
    b = rodflow.sharpness(small_mlp.loss_fn, state.theta, preconditioner=p, tol=1e-10)
    assert a.top == pytest.approx(b.top, rel=1e-9)
    with pytest.raises(ValueError, match="t ≥ 1"):
        rodflow.preconditioned_sharpness(spec, traj.state(0), small_mlp.loss_fn)


@pytest.mark.parametrize("method", ALL_METHODS)
def test_n_hvp_is_counted(small_mlp, method, monkeypatch):
    """Every vector that goes through the gradient's graph is one HVP; the gradient itself is not."""
    seen = {"vectors": 0, "gradients": 0}
    original = torch.autograd.grad

    def counting_grad(outputs, inputs, grad_outputs=None, **kwargs):
        if grad_outputs is None:
            seen["gradients"] += 1
        else:
            seen["vectors"] += grad_outputs.shape[0] if kwargs.get("is_grads_batched") else 1
        return original(outputs, inputs, grad_outputs, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", counting_grad)
    prob = rodflow.problems.digits_mlp((4,), n=64, seed=0)  # 310 parameters
    res = rodflow.sharpness(prob.loss_fn, prob.theta0, method=method, tol=1e-6, max_iter=200)
    assert seen == {"vectors": res.n_hvp, "gradients": 1}
    assert res.n_hvp == prob.dim if method == "dense" else 0 < res.n_hvp < prob.dim
    op = HessianOperator(prob.loss_fn, prob.theta0)
    op(torch.ones(3, prob.dim, dtype=torch.float64))
    op(torch.ones(prob.dim, dtype=torch.float64))
    assert op.n_hvp == 4


@pytest.mark.parametrize("method", ["lanczos", "lobpcg"])
def test_warm_start_saves_hvps_along_a_trajectory(small_mlp, method):
    spec = rodflow.optimizer("gd", lr=0.5)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, steps=20)
    tol = {"lanczos": 1e-4, "lobpcg": 1e-3}[method]  # lobpcg's bounds the residual, so its error is ~tol²
    ref = rodflow.sharpness(small_mlp.loss_fn, traj.theta[20], method="dense").top
    cold = rodflow.sharpness(small_mlp.loss_fn, traj.theta[20], method=method, tol=tol)
    prev = rodflow.sharpness(small_mlp.loss_fn, traj.theta[19], method=method, tol=tol)
    warm = rodflow.sharpness(small_mlp.loss_fn, traj.theta[20], method=method, tol=tol, warm_start=prev.eigenvectors)
    assert warm.top == pytest.approx(ref, rel=1e-5)
    assert cold.top == pytest.approx(ref, rel=1e-5)
    assert warm.n_hvp <= 10 < cold.n_hvp


def test_lobpcg_says_when_it_stops_short():
    prob = rodflow.problems.quadratic(torch.linspace(0.0, 1.0, 200), seed=0)
    with pytest.warns(RuntimeWarning, match="max_iter"):
        rodflow.sharpness(prob.loss_fn, prob.theta0, method="lobpcg", tol=1e-12, max_iter=2)


def test_tracker_and_iterate_record_both_series(small_mlp):
    spec = rodflow.optimizer("adam", lr=0.01)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, steps=6, sharpness_every=3,
                           sharpness_kwargs={"tol": 1e-10})
    s = traj.sharpness
    assert s["step"].tolist() == [0, 3, 6]
    assert s["preconditioned_step"].tolist() == [3, 6]  # no preconditioner at t = 0, and no placeholder
    assert not bool(torch.isnan(s["preconditioned_sharpness"]).any())
    for i, k in enumerate([0, 3, 6]):
        ref = torch.linalg.eigvalsh(torch.func.hessian(small_mlp.loss_fn)(traj.theta[k])).max()
        assert float(s["sharpness"][i]) == pytest.approx(float(ref), rel=1e-6)
    ref = rodflow.preconditioned_sharpness(spec, traj.state(6), small_mlp.loss_fn, tol=1e-10).top
    assert float(s["preconditioned_sharpness"][1]) == pytest.approx(ref, rel=1e-6)
    assert s["n_hvp"].shape == (3,) and bool((s["n_hvp"] > 0).all())
    with pytest.raises(ValueError, match="warm_start"):
        SharpnessTracker(spec, small_mlp.loss_fn, warm_start=None)
    with pytest.raises(TypeError, match="spec"):
        SharpnessTracker("adam", small_mlp.loss_fn)  # type: ignore[arg-type]


def test_tracker_scales_instead_of_solving_again_for_a_uniform_preconditioner(small_mlp):
    """GD and heavy ball: P = 1/η·1, so λ_max(P⁻¹H) = η·λ_max(H) from the one eigensolve."""
    spec = rodflow.optimizer("heavy_ball", lr=0.3, momentum=0.5)
    tracker = SharpnessTracker(spec, small_mlp.loss_fn, method="lanczos", tol=1e-8)
    state = spec.init(small_mlp.theta0)
    tracker.record(state)
    alone = rodflow.sharpness(small_mlp.loss_fn, state.theta, method="lanczos", tol=1e-8)
    s = tracker.series()
    assert s["preconditioned_step"].tolist() == [0]  # defined at t = 0 for non-adaptive methods
    torch.testing.assert_close(s["preconditioned_sharpness"], 0.3 * s["sharpness"], rtol=1e-14, atol=0)
    assert float(s["sharpness"][0]) == pytest.approx(alone.top, rel=1e-8)
    assert s["n_hvp"].tolist() == [alone.n_hvp]


def test_tracker_warm_starts_from_the_last_eigenvectors(small_mlp):
    spec = rodflow.optimizer("gd", lr=0.5)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, steps=20)
    tracker = SharpnessTracker(spec, small_mlp.loss_fn, method="lobpcg", tol=1e-3)
    for k in range(10, 21):
        tracker.record(traj.state(k))
    n = tracker.series()["n_hvp"]
    assert int(n[0]) > 20 and int(n[1:].max()) <= 10, n.tolist()


def test_float32_theta():
    prob = rodflow.problems.quadratic([4.0, 1.0, -9.0] + [0.5] * 400, seed=0, dtype=torch.float32)
    res = rodflow.sharpness(prob.loss_fn, prob.theta0, method="lanczos", tol=1e-5)
    assert res.eigenvalues.dtype == torch.float32 and res.eigenvectors.dtype == torch.float32
    assert res.top == pytest.approx(4.0, rel=1e-4)


def test_bad_arguments(small_mlp):
    f, th = small_mlp.loss_fn, small_mlp.theta0
    with pytest.raises(ValueError, match="method"):
        rodflow.sharpness(f, th, method="arnoldi")
    with pytest.raises(ValueError, match="k must"):
        rodflow.sharpness(f, th, k=0)
    with pytest.raises(ValueError, match="tol"):
        rodflow.sharpness(f, th, tol=0.0)
    with pytest.raises(ValueError, match="preconditioner"):
        rodflow.sharpness(f, th, preconditioner=-torch.ones(small_mlp.dim))
    with pytest.raises(ValueError, match="preconditioner"):
        rodflow.sharpness(f, th, preconditioner=torch.ones(3))
    with pytest.raises(ValueError, match="warm_start"):
        rodflow.sharpness(f, th, warm_start=torch.ones(3))
    with pytest.raises(TypeError, match="warm_start"):
        rodflow.sharpness(f, th, warm_start=[1.0])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="theta"):
        rodflow.sharpness(f, th.tolist())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="theta"):
        rodflow.sharpness(f, th.reshape(2, -1))
    with pytest.raises(ValueError, match="k"):
        rodflow.sharpness(f, th, k=2, method="power")
    with pytest.raises(ValueError, match="vec"):
        rodflow.hvp(f, th, torch.ones(5))


def test_gd_reaches_the_edge_of_stability_on_digits():
    """Progressive sharpening then EoS: GD's sharpness rises to 2/η and hovers there (±10 %)."""
    prob = rodflow.problems.digits_mlp((16,), n=128, seed=0)
    lr = 0.8
    traj = rodflow.iterate(rodflow.optimizer("gd", lr=lr), prob.loss_fn, prob.theta0, steps=300,
                           sharpness_every=20, sharpness_kwargs={"method": "lanczos", "tol": 1e-6})
    s = traj.sharpness["sharpness"] * lr / 2
    assert float(s[0]) < 0.85  # it starts well below the edge
    assert float(s.max()) > 1.0  # and reaches it
    late = float(s[-5:].mean())
    assert abs(late - 1) < 0.10, late
    # the loss still goes down overall, non-monotonically (the EoS signature)
    loss = traj.loss
    assert float(loss[-1]) < float(loss[0])
    assert bool((loss[1:] > loss[:-1]).any())


def test_warm_lanczos_survives_a_stalling_small_space():
    """A warm start orthogonal to a near-degenerate top pair stalls the small Krylov space; the
    fallback to ARPACK's default size still finds the top eigenvalue."""
    eigs = torch.tensor([5.0, 5.0 - 1e-9, 4.9] + [1.0] * 500, dtype=torch.float64)
    prob = rodflow.problems.quadratic(eigs, seed=None)
    warm = torch.zeros(503, dtype=torch.float64)
    warm[2] = 1.0  # the third eigenvector, exactly
    res = rodflow.sharpness(prob.loss_fn, prob.theta0, method="lanczos", tol=1e-10, warm_start=warm)
    assert res.top == pytest.approx(5.0, rel=1e-8)


def test_warm_lobpcg_falls_back_to_guard_vectors_when_the_warm_block_stalls():
    eigs = torch.tensor([5.0, 5.0 - 1e-6, 4.9] + [1.0] * 300, dtype=torch.float64)
    prob = rodflow.problems.quadratic(eigs, seed=None)
    warm = torch.zeros(303, dtype=torch.float64)
    warm[2] = 1.0  # an exact eigenvector, not the top one: the lone warm block cannot leave it
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = rodflow.sharpness(prob.loss_fn, prob.theta0, method="lobpcg", tol=1e-8, warm_start=warm)
    assert res.top == pytest.approx(5.0, rel=1e-6)


@pytest.mark.parametrize("tol", [1e-8, 1e-2])
def test_krylov_from_warm_starts_against_the_full_hessian(small_mlp, mlp_hessian, tol):
    """The monitor's solver along a GD run, each solve warm-started from the previous one, against
    eigvalsh of the full Hessian (float64): θ ≤ λ (Rayleigh–Ritz), the residual below tol·θ, and
    the eigenvalue within tol (measured far closer: the error is near residual² / gap)."""
    traj = rodflow.iterate(rodflow.optimizer("gd", lr=0.5), small_mlp.loss_fn, small_mlp.theta0, steps=30)
    warm, spent = None, []
    for t in (10, 20, 30):
        theta = traj.theta[t]
        h = torch.func.hessian(small_mlp.loss_fn)(theta)
        ref = torch.linalg.eigvalsh(0.5 * (h + h.T)).flip(0)[:2]
        res = rodflow.sharpness(small_mlp.loss_fn, theta, k=2, method="krylov", tol=tol, warm_start=warm)
        assert bool((res.eigenvalues <= ref * (1 + 1e-12)).all())
        torch.testing.assert_close(res.eigenvalues, ref, rtol=tol, atol=0)
        for lam, vec in zip(res.eigenvalues, res.eigenvectors):
            assert float(torch.linalg.vector_norm(h @ vec - lam * vec)) <= tol * float(ref[0]) * (1 + 1e-9)
        warm = res.eigenvectors
        spent.append(res.n_hvp)
    if tol == 1e-8:
        torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-12, atol=0)
    assert spent[-1] < spent[0], spent  # the warm starts pay


def test_krylov_stopping_after_its_first_product():
    """A warm start at the top eigenvector and a loose tolerance: the residual test passes after the
    first product, with a one-vector basis (its Ritz vector used to come back with a negative stride)."""
    eigs = torch.linspace(5.0, 1.0, 50, dtype=torch.float64)
    prob = rodflow.problems.quadratic(eigs, seed=None)
    warm = torch.zeros(50, dtype=torch.float64)
    warm[0] = 1.0
    res = rodflow.sharpness(prob.loss_fn, prob.theta0, method="krylov", tol=0.1, warm_start=warm)
    assert res.n_hvp == 1
    assert abs(res.top - 5.0) <= 0.1 * 5.0
    assert abs(float(res.eigenvectors[0, 0])) > 0.99


def test_krylov_leaves_an_exact_eigenvector_that_is_not_the_top_one():
    """A warm start equal to the third eigenvector (as after the top ones overtake it): the jitter
    and the residual expansion reach the top pair (5 and 5 − 1e-6) at a tight tolerance."""
    eigs = torch.tensor([5.0, 5.0 - 1e-6, 4.9] + [1.0] * 300, dtype=torch.float64)
    prob = rodflow.problems.quadratic(eigs, seed=None)
    warm = torch.zeros(303, dtype=torch.float64)
    warm[2] = 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = rodflow.sharpness(prob.loss_fn, prob.theta0, k=2, method="krylov", tol=1e-10, warm_start=warm)
    torch.testing.assert_close(res.eigenvalues, eigs[:2], rtol=1e-10, atol=0)
    with pytest.warns(RuntimeWarning, match="max_iter"):
        rodflow.sharpness(prob.loss_fn, prob.theta0, method="krylov", tol=1e-14, max_iter=3)


@pytest.mark.parametrize(("k", "basis"), [(1, 3), (3, 4)])
def test_krylov_through_thick_restarts_against_the_full_hessian(small_mlp, mlp_hessian, monkeypatch, k, basis):
    """A basis of a few vectors forces restarts (the top Ritz vectors and the next block, no images
    kept): the eigenvalues still match eigvalsh of the full Hessian and the true residuals, formed
    here with the full Hessian, are below tol·θ — the solver reads them off the Lanczos relation."""
    monkeypatch.setattr(importlib.import_module("rodflow.sharpness"), "KRYLOV_BASIS", basis)
    theta, h = mlp_hessian
    ref = torch.linalg.eigvalsh(h).flip(0)[:k]
    tol = 1e-9
    res = rodflow.sharpness(small_mlp.loss_fn, theta, k=k, method="krylov", tol=tol, max_iter=5000)
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-8, atol=0)
    assert res.n_hvp > basis + 2 * k  # it did restart
    for lam, vec in zip(res.eigenvalues, res.eigenvectors):
        assert float(torch.linalg.vector_norm(vec)) == pytest.approx(1.0, abs=1e-12)
        assert float(torch.linalg.vector_norm(h @ vec - lam * vec)) <= tol * float(ref[0]) * (1 + 1e-6)


def test_krylov_of_the_scaled_operator_and_repeated_solves(small_mlp, mlp_hessian):
    """λ_max(P^{-1/2} H P^{-1/2}) from the scaled operator against eigvalsh of the scaled full Hessian;
    a solve leaves the shared random start untouched: the same call twice gives the same bits."""
    theta, h = mlp_hessian
    p = 0.5 + torch.rand(small_mlp.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = p.rsqrt()
    ref = torch.linalg.eigvalsh(s[:, None] * h * s[None, :]).flip(0)[:2]
    op = HessianOperator(small_mlp.loss_fn, theta)
    runs = [solve(op.scaled(p), k=2, method="krylov", tol=1e-10) for _ in range(2)]
    torch.testing.assert_close(runs[0].eigenvalues, ref, rtol=1e-9, atol=0)
    assert torch.equal(runs[0].eigenvalues, runs[1].eigenvalues)
    assert torch.equal(runs[0].eigenvectors, runs[1].eigenvectors)
    # one product at a time equals the block, and both equal S H S v from the full Hessian
    v = torch.randn(3, small_mlp.dim, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    scaled = op.scaled(p)
    block = scaled(v)
    torch.testing.assert_close(torch.stack([scaled(row) for row in v]), block, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(block, v @ (s[:, None] * h * s[None, :]), rtol=1e-10, atol=1e-12)


def test_krylov_never_reports_a_residual_it_dropped():
    """A near-degenerate top pair (5 and 5 − gap) makes the single-vector Krylov sequence numerically
    dependent, so Gram–Schmidt drops a row that still carries part of the residual. At tol 1e-12
    the solver must account for it: it either returns an eigenpair whose true residual (against
    the known diagonal Hessian) is below tol·θ, or warns that max_iter ran out."""
    for gap in (1e-7, 1e-9):
        eigs = torch.tensor([5.0, 5.0 - gap, 4.9, 4.0] + [1.0] * 300, dtype=torch.float64)
        prob = rodflow.problems.quadratic(eigs, seed=None)
        returned = 0
        for max_iter in (3, 5, 40):
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                res = rodflow.sharpness(prob.loss_fn, prob.theta0, method="krylov", tol=1e-12, max_iter=max_iter)
            if any("max_iter" in str(w.message) for w in caught):
                continue
            returned += 1
            vec, lam = res.eigenvectors[0], res.eigenvalues[0]
            assert float(torch.linalg.vector_norm(eigs * vec - lam * vec)) <= 1e-12 * 5.0 * (1 + 1e-6)
            assert float(lam) == pytest.approx(5.0, rel=1e-12)
        assert returned >= 1
