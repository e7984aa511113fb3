"""iterate(): the recorded run equals stepping by hand; dtypes; divergence; interruption."""

from __future__ import annotations

import numpy as np
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


def _interrupting(prob, at):
    calls = {"n": 0}

    def loss_fn(th):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt
        return prob.loss_fn(th)

    return loss_fn


def test_interruption_keeps_the_recorded_states_and_reraises():
    prob = rodflow.problems.quadratic([1.0, 0.5], seed=0)
    with pytest.raises(KeyboardInterrupt) as info:
        rodflow.iterate(rodflow.optimizer("gd", lr=0.1), _interrupting(prob, 7), prob.theta0, 100)
    partial = info.value.trajectory  # type: ignore[attr-defined]
    assert not partial.complete and partial.t.tolist() == [0, 1, 2, 3, 4]  # call 1 is the argument check


def test_interruption_returns_the_recorded_states_on_request(tmp_path):
    prob = rodflow.problems.quadratic([1.0, 0.5], seed=0)
    with pytest.warns(UserWarning, match="interrupted"):
        traj = rodflow.iterate(rodflow.optimizer("gd", lr=0.1), _interrupting(prob, 7), prob.theta0, 100,
                               on_interrupt="return")
    assert not traj.complete
    assert traj.t.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(KeyboardInterrupt):
        rodflow.iterate(rodflow.optimizer("gd", lr=0.1), _interrupting(prob, 7), prob.theta0, 100,
                        path=tmp_path / "run.h5", flush_every=100)
    kept = rodflow.Trajectory.load(tmp_path / "run.h5")
    assert kept.t.tolist() == [0, 1, 2, 3, 4] and not kept.complete
    assert torch.equal(kept.theta, traj.theta)
    with pytest.raises(ValueError, match="on_interrupt"):
        rodflow.iterate(rodflow.optimizer("gd", lr=0.1), prob.loss_fn, prob.theta0, 3, on_interrupt="ignore")


def test_a_nan_loss_with_a_finite_gradient_raises():
    """L = θ² + log(θ₀ − 1.5) is NaN once θ₀ < 1.5 while autograd's gradient stays finite."""
    def loss_fn(th):
        return (th**2).sum() + torch.log((th[0] - 1.5).detach())

    theta0 = torch.tensor([2.0, 1.0], dtype=torch.float64)
    with pytest.raises(rodflow.NonFiniteError, match=r"non-finite loss.*finite gradient") as info:
        rodflow.iterate(rodflow.optimizer("gd", lr=0.1), loss_fn, theta0, 50)
    err = info.value
    assert isinstance(err.trajectory, rodflow.Trajectory) and not err.trajectory.complete
    assert bool(torch.isfinite(err.trajectory.loss).all()) and err.trajectory.t.tolist() == [0, 1]  # θ₀: 2, 1.6, 1.28
    assert rodflow.NonFiniteError("x").trajectory is None  # a typed attribute, present on every instance


def test_streaming_to_a_file_equals_the_run_in_memory(tmp_path, small_mlp):
    spec = rodflow.optimizer("adam", lr=1e-2)
    mem = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, 23, record_every=2, sharpness_every=10)
    disk = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, 23, record_every=2, sharpness_every=10,
                           path=tmp_path / "run.h5", flush_every=3)
    assert disk.complete and len(disk) == len(mem) == 13
    back = disk.read()
    for name in ("theta", "m", "v", "t", "loss"):
        assert torch.equal(getattr(back, name), getattr(mem, name)), name
    assert back.sharpness.keys() == mem.sharpness.keys()
    for k in mem.sharpness:  # the eigensolver's random start differs between the two runs
        torch.testing.assert_close(back.sharpness[k], mem.sharpness[k], rtol=1e-6, atol=0)
    assert back.sharpness["step"].tolist() == [0, 10, 20] and back.config == mem.config


def test_divergence_while_streaming_keeps_the_file(tmp_path):
    prob = rodflow.problems.quadratic([10.0, 1.0], seed=0)
    with pytest.raises(rodflow.NonFiniteError) as info:
        rodflow.iterate(rodflow.optimizer("gd", lr=100.0), prob.loss_fn, prob.theta0, 500, path=tmp_path / "d.h5")
    kept = rodflow.Trajectory.load(tmp_path / "d.h5")
    assert not kept.complete and len(kept) == len(info.value.trajectory) > 50


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


def _quad(th):
    return (th**2).sum()


THETA = torch.tensor([1.0, -2.0], dtype=torch.float64)
# (keyword arguments of iterate, exception type, the argument the message names)
BAD_INPUTS = [
    ({"theta0": [1.0, -2.0]}, TypeError, "theta0"),
    ({"theta0": np.array([1.0, -2.0])}, TypeError, "theta0"),
    ({"theta0": torch.ones(2, 2, dtype=torch.float64)}, ValueError, "theta0"),
    ({"theta0": torch.tensor([1, 2])}, ValueError, "theta0"),
    ({"loss_fn": lambda th: (th * torch.ones(5, dtype=torch.float64)).sum()}, ValueError, "theta0"),
    ({"loss_fn": lambda th: torch.tensor(3.0, dtype=torch.float64)}, ValueError, "does not depend on theta"),
    ({"loss_fn": lambda th: (torch.ones(2, requires_grad=True) ** 2).sum()}, ValueError, "does not depend on theta"),
    ({"loss_fn": lambda th: th**2}, ValueError, "scalar"),
    ({"loss_fn": 3.0}, TypeError, "loss_fn"),
    ({"steps": True}, TypeError, "steps"),
    ({"steps": 2.0}, TypeError, "steps"),
    ({"steps": "3"}, TypeError, "steps"),
    ({"record_every": True}, TypeError, "record_every"),
    ({"sharpness_every": True}, TypeError, "sharpness_every"),
    ({"sharpness_every": torch.tensor(True)}, TypeError, "sharpness_every"),
    ({"sharpness_every": 1.5}, TypeError, "sharpness_every"),
    ({"flush_every": 0}, ValueError, "flush_every"),
]


@pytest.mark.parametrize(("kwargs", "exc", "named"), BAD_INPUTS, ids=[f"{next(iter(k))}-{i}" for i, (k, _, _) in
                                                                       enumerate(BAD_INPUTS)])
def test_bad_input_table(kwargs, exc, named):
    args = {"spec": rodflow.optimizer("gd", lr=0.1), "loss_fn": _quad, "theta0": THETA, "steps": 3, **kwargs}
    with pytest.raises(exc, match=named):
        rodflow.iterate(**args)


@pytest.mark.parametrize("count", [np.int64(4), torch.tensor(4), np.int32(4)])
def test_integral_counts_are_accepted(count):
    spec = rodflow.optimizer("gd", lr=0.1)
    traj = rodflow.iterate(spec, _quad, THETA, count, record_every=count // 2 if isinstance(count, np.integer)
                           else torch.tensor(2), sharpness_every=count)
    assert traj.t.tolist() == [0, 2, 4] and traj.config["steps"] == 4 and type(traj.config["steps"]) is int
    assert traj.sharpness["step"].tolist() == [0, 4]


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
