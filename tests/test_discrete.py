"""iterate(): the recorded run equals stepping by hand; dtypes; divergence; interruption."""

from __future__ import annotations

import pytest
import torch

import rodflow


@pytest.mark.parametrize("name", rodflow.OPTIMIZERS)
def test_iterate_equals_stepping_by_hand(name, small_mlp):
    spec = rodflow.optimizer(name, lr=1e-3)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, 7, record_every=3)
    assert traj.t.tolist() == [0, 3, 6, 7]
    state = spec.init(small_mlp.theta0)
    grad = rodflow.gradient(small_mlp.loss_fn)
    for k in range(8):
        if k in (0, 3, 6, 7):
            i = traj.index_of(k)
            assert torch.equal(traj.theta[i], state.theta)
            if state.m is not None:
                assert torch.equal(traj.m[i], state.m)
            if state.v is not None:
                assert torch.equal(traj.v[i], state.v)
            assert float(traj.loss[i]) == float(small_mlp.loss_fn(state.theta))
        state = spec.step(state, grad)
    assert traj.config["optimizer"] == name and traj.config["steps"] == 7
    assert traj.config["hyperparameters"]["lr"] == 1e-3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("name", rodflow.OPTIMIZERS)
def test_dtypes_and_finite_states(name, dtype):
    problems = [rodflow.problems.quadratic([2.0, 1.0, 0.1], seed=0, dtype=dtype),
                rodflow.problems.matrix_factorization(6, 5, rank=2, observed=0.7, noise=0.1, seed=0, dtype=dtype),
                rodflow.problems.digits_mlp((8,), n=64, dtype=dtype)]
    for prob in problems:
        traj = rodflow.iterate(rodflow.optimizer(name, lr=1e-2), prob.loss_fn, prob.theta0, 50)
        assert traj.theta.dtype == dtype
        for x in (traj.theta, traj.m, traj.v, traj.loss):
            if x is not None:
                assert bool(torch.isfinite(x).all())
        assert float(traj.loss[-1]) < float(traj.loss[0])


def test_divergence_raises_and_keeps_what_was_recorded():
    prob = rodflow.problems.quadratic([10.0, 1.0], seed=0)
    spec = rodflow.optimizer("gd", lr=100.0)  # |1 − ηλ| = 999 per step
    with pytest.raises(rodflow.NonFiniteError, match="non-finite") as info:
        rodflow.iterate(spec, prob.loss_fn, prob.theta0, 500)
    partial = info.value.trajectory  # type: ignore[attr-defined]
    assert not partial.complete
    assert 50 < len(partial) < 500
    assert bool(torch.isfinite(partial.theta).all())


def test_interruption_returns_the_recorded_states():
    prob = rodflow.problems.quadratic([1.0, 0.5], seed=0)
    calls = {"n": 0}

    def loss_fn(th):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return prob.loss_fn(th)

    with pytest.warns(UserWarning, match="interrupted"):
        traj = rodflow.iterate(rodflow.optimizer("gd", lr=0.1), loss_fn, prob.theta0, 100)
    assert not traj.complete
    assert traj.t.tolist() == [0, 1, 2, 3, 4]


def test_bad_arguments():
    prob = rodflow.problems.quadratic([1.0], seed=0)
    spec = rodflow.optimizer("gd")
    with pytest.raises(TypeError, match="spec"):
        rodflow.iterate("gd", prob.loss_fn, prob.theta0, 3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        rodflow.iterate(spec, prob.loss_fn, prob.theta0, -1)
    with pytest.raises(ValueError, match="record_every"):
        rodflow.iterate(spec, prob.loss_fn, prob.theta0, 3, record_every=0)
    with pytest.raises(ValueError, match="sharpness_every"):
        rodflow.iterate(spec, prob.loss_fn, prob.theta0, 3, sharpness_every=0)


def test_recording_grid_and_config():
    prob = rodflow.problems.quadratic([1.0, 0.5], seed=0)
    spec = rodflow.optimizer("heavy_ball", lr=0.1, momentum=0.5)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, 6, record_every=3, config={"seed": 11})
    assert traj.t.tolist() == [0, 3, 6]  # the last step is not recorded twice
    assert traj.theta.shape == traj.m.shape == (3, 2) and traj.v is None and traj.complete
    assert traj.config == {"optimizer": "heavy_ball", "hyperparameters": spec.hyperparameters(), "steps": 6,
                           "record_every": 3, "dtype": "torch.float64", "dim": 2, "seed": 11}
    assert traj.config["hyperparameters"] == {"lr": 0.1, "momentum": 0.5, "nesterov": False}
    empty = rodflow.iterate(spec, prob.loss_fn, prob.theta0, 0)
    assert empty.t.tolist() == [0] and torch.equal(empty.theta[0], prob.theta0)


def test_iterate_does_not_touch_theta0():
    prob = rodflow.problems.quadratic([1.0, 0.5], seed=0)
    theta0 = prob.theta0.clone()
    rodflow.iterate(rodflow.optimizer("adam", lr=0.1), prob.loss_fn, prob.theta0, 5)
    assert torch.equal(prob.theta0, theta0)


def test_gd_and_heavy_ball_on_a_quadratic_match_the_closed_form():
    """θ_k = (I − ηH)^k θ_0 for GD; heavy ball's 2×2 recursion per eigen-direction, written out."""
    lam = torch.tensor([2.0, 0.5], dtype=torch.float64)
    prob = rodflow.problems.quadratic(lam.tolist(), seed=0)
    h = prob.info["hessian"]
    steps, lr, b = 30, 0.3, 0.7
    gd = rodflow.iterate(rodflow.optimizer("gd", lr=lr), prob.loss_fn, prob.theta0, steps).theta[-1]
    ref = torch.linalg.matrix_power(torch.eye(2, dtype=torch.float64) - lr * h, steps) @ prob.theta0
    torch.testing.assert_close(gd, ref, rtol=1e-12, atol=1e-15)
    hb = rodflow.iterate(rodflow.optimizer("heavy_ball", lr=lr, momentum=b), prob.loss_fn, prob.theta0, steps).theta[-1]
    eye = torch.eye(2, dtype=torch.float64)
    # (θ, m) ↦ (θ − η(βm + Hθ), βm + Hθ)
    a = torch.cat([torch.cat([eye - lr * h, -lr * b * eye], 1), torch.cat([h, b * eye], 1)], 0)
    x = torch.linalg.matrix_power(a, steps) @ torch.cat([prob.theta0, torch.zeros(2, dtype=torch.float64)])
    torch.testing.assert_close(hb, x[:2], rtol=1e-12, atol=1e-15)


def test_overflow_of_theta_raises_with_the_partial_trajectory():
    """A linear loss keeps a finite gradient at θ = −inf: the overflow must still stop the run."""
    with pytest.raises(rodflow.NonFiniteError, match="theta") as info:
        rodflow.iterate(rodflow.optimizer("gd", lr=1e10), lambda th: 1e300 * th.sum(),
                        torch.ones(2, dtype=torch.float64), 10)
    partial = info.value.trajectory  # type: ignore[attr-defined]
    assert partial.t.tolist() == [0] and not partial.complete
