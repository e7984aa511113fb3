"""Sharpness against references: eigvalsh of the full Hessian from torch.func.hessian, known spectra."""

from __future__ import annotations

import pytest
import torch

import rodflow
from rodflow.sharpness import HessianOperator, SharpnessTracker

METHODS = ["dense", "lanczos", "lobpcg"]


@pytest.fixture(scope="module")
def mlp_hessian(small_mlp):
    theta = small_mlp.theta0 + 0.05 * torch.randn(small_mlp.dim, generator=torch.Generator().manual_seed(1),
                                                  dtype=torch.float64)
    h = torch.func.hessian(small_mlp.loss_fn)(theta)
    return theta, 0.5 * (h + h.T)


def test_hvp_is_the_hessian_times_the_vector(small_mlp, mlp_hessian):
    theta, h = mlp_hessian
    v = torch.randn(3, small_mlp.dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    torch.testing.assert_close(rodflow.hvp(small_mlp.loss_fn, theta, v[0]), h @ v[0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(rodflow.hvp(small_mlp.loss_fn, theta, v), v @ h, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_top_eigenvalues_of_an_mlp(small_mlp, mlp_hessian, method):
    theta, h = mlp_hessian
    ref = torch.linalg.eigvalsh(h).flip(0)[:2]
    res = rodflow.sharpness(small_mlp.loss_fn, theta, k=2, method=method, tol=1e-10, max_iter=5000)
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-6, atol=0)
    assert res.method == method
    # eigenvectors: H v = λ v
    for lam, vec in zip(res.eigenvalues, res.eigenvectors):
        torch.testing.assert_close(h @ vec, lam * vec, rtol=0, atol=1e-5 * float(lam))


SPECTRA = {
    "spread": [10.0, 3.0, 1.0, 0.5] + [0.1] * 60,
    "near_degenerate_top": [5.0, 5.0 - 1e-4, 2.0] + [0.3] * 60,
    "negative_dominant": [-50.0, 4.0, 3.0, -20.0] + [0.05] * 60,
}


@pytest.mark.parametrize("spectrum", list(SPECTRA))
@pytest.mark.parametrize("method", METHODS)
def test_known_spectra(spectrum, method):
    eigs = torch.tensor(SPECTRA[spectrum], dtype=torch.float64)
    prob = rodflow.problems.quadratic(eigs, seed=5)
    tol = 1e-8 if method == "lobpcg" else 1e-12  # lobpcg's tol bounds residuals: eigenvalue error ~ tol²
    res = rodflow.sharpness(prob.loss_fn, prob.theta0, k=2, method=method, tol=tol, max_iter=5000)
    ref = eigs.sort(descending=True).values[:2]  # largest algebraic, not magnitude
    torch.testing.assert_close(res.eigenvalues, ref, rtol=1e-6, atol=0)


@pytest.mark.parametrize("method", METHODS)
def test_preconditioned_sharpness_matches_eigvalsh(small_mlp, mlp_hessian, method):
    theta, h = mlp_hessian
    p = 0.5 + torch.rand(small_mlp.dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = p.rsqrt()
    ref = torch.linalg.eigvalsh(s[:, None] * h * s[None, :]).max()
    res = rodflow.sharpness(small_mlp.loss_fn, theta, preconditioner=p, method=method, tol=1e-10, max_iter=5000)
    assert res.top == pytest.approx(float(ref), rel=1e-6)


def test_preconditioned_sharpness_uses_the_spec(small_mlp):
    spec = rodflow.optimizer("adam", lr=0.01)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, steps=5)
    state = traj.state(5)
    p = spec.preconditioner(state)
    a = rodflow.preconditioned_sharpness(spec, state, small_mlp.loss_fn)
    b = rodflow.sharpness(small_mlp.loss_fn, state.theta, preconditioner=p)
    assert a.top == pytest.approx(b.top, rel=1e-12)
    with pytest.raises(ValueError, match="t ≥ 1"):
        rodflow.preconditioned_sharpness(spec, traj.state(0), small_mlp.loss_fn)


def test_n_hvp_is_counted(small_mlp):
    calls = {"n": 0}
    op = HessianOperator(small_mlp.loss_fn, small_mlp.theta0)
    original = torch.autograd.grad

    def counting_grad(*args, **kwargs):
        calls["n"] += 1
        return original(*args, **kwargs)

    torch.autograd.grad = counting_grad
    try:
        op(torch.ones(3, small_mlp.dim, dtype=torch.float64))
        res = rodflow.sharpness(small_mlp.loss_fn, small_mlp.theta0, method="lanczos", tol=1e-8)
    finally:
        torch.autograd.grad = original
    assert op.n_hvp == 3
    # every HVP is one backward; plus one gradient per sharpness call
    assert calls["n"] == 3 + res.n_hvp + 1


def test_warm_start_saves_hvps_along_a_trajectory(small_mlp):
    spec = rodflow.optimizer("gd", lr=0.5)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, steps=20)
    cold = rodflow.sharpness(small_mlp.loss_fn, traj.theta[20], method="lobpcg", tol=1e-4)
    prev = rodflow.sharpness(small_mlp.loss_fn, traj.theta[19], method="lobpcg", tol=1e-4)
    warm = rodflow.sharpness(small_mlp.loss_fn, traj.theta[20], method="lobpcg", tol=1e-4,
                             warm_start=prev.eigenvectors)
    assert warm.top == pytest.approx(cold.top, rel=1e-5)
    assert warm.n_hvp < cold.n_hvp


def test_tracker_and_iterate_record_both_series(small_mlp):
    spec = rodflow.optimizer("adam", lr=0.01)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, steps=6, sharpness_every=3)
    s = traj.sharpness
    assert s["step"].tolist() == [0, 3, 6]
    assert s["preconditioned_step"].tolist() == [3, 6]  # no preconditioner at t = 0
    for i, k in enumerate([0, 3, 6]):
        ref = rodflow.sharpness(small_mlp.loss_fn, traj.theta[k]).top
        assert float(s["sharpness"][i]) == pytest.approx(ref, rel=1e-8)
    ref = rodflow.preconditioned_sharpness(spec, traj.state(6), small_mlp.loss_fn).top
    assert float(s["preconditioned_sharpness"][1]) == pytest.approx(ref, rel=1e-8)
    with pytest.raises(ValueError, match="warm_start"):
        SharpnessTracker(spec, small_mlp.loss_fn, warm_start=None)


def test_bad_arguments(small_mlp):
    with pytest.raises(ValueError, match="method"):
        rodflow.sharpness(small_mlp.loss_fn, small_mlp.theta0, method="arnoldi")
    with pytest.raises(ValueError, match="k must"):
        rodflow.sharpness(small_mlp.loss_fn, small_mlp.theta0, k=0)
    with pytest.raises(ValueError, match="preconditioner"):
        rodflow.sharpness(small_mlp.loss_fn, small_mlp.theta0, preconditioner=-torch.ones(small_mlp.dim))
    with pytest.raises(ValueError, match="preconditioner"):
        rodflow.sharpness(small_mlp.loss_fn, small_mlp.theta0, preconditioner=torch.ones(3))


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


def test_warm_lanczos_survives_a_stalling_small_space():
    """A warm start orthogonal to a near-degenerate top pair stalls the small Krylov space; the
    fallback to ARPACK's default size still finds the top eigenvalue."""
    eigs = torch.tensor([5.0, 5.0 - 1e-9, 4.9] + [1.0] * 500, dtype=torch.float64)
    prob = rodflow.problems.quadratic(eigs, seed=None)
    warm = torch.zeros(503, dtype=torch.float64)
    warm[2] = 1.0  # the third eigenvector, exactly
    res = rodflow.sharpness(prob.loss_fn, prob.theta0, method="lanczos", tol=1e-10, warm_start=warm)
    assert res.top == pytest.approx(5.0, rel=1e-8)
