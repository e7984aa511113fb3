"""Trajectory storage is lossless."""

from __future__ import annotations

import pytest
import torch

import rodflow


def test_save_load_is_bitwise(tmp_path, small_mlp):
    spec = rodflow.optimizer("adam", lr=1e-2)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, 6, sharpness_every=3,
                           config={"seed": 3, "note": "x"})
    path = tmp_path / "run.pt"
    traj.save(path)
    back = rodflow.Trajectory.load(path)
    for name in ("theta", "m", "v", "t", "loss"):
        assert torch.equal(getattr(back, name), getattr(traj, name))
        assert getattr(back, name).dtype == getattr(traj, name).dtype  # torch.equal ignores dtype
    assert back.sharpness.keys() == traj.sharpness.keys()
    for k in traj.sharpness:
        assert torch.equal(back.sharpness[k], traj.sharpness[k])
    assert back.config == traj.config and back.complete
    assert back.state(3).t == 3 and torch.equal(back.state(3).theta, traj.theta[3])
    assert not list(tmp_path.glob("*.tmp"))


def test_load_rejects_other_files(tmp_path):
    torch.save({"a": 1}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="not a rodflow trajectory"):
        rodflow.Trajectory.load(tmp_path / "x.pt")


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="loss"):
        rodflow.Trajectory(theta=torch.zeros(3, 2), m=None, v=None, t=torch.arange(3), loss=torch.zeros(2))
    traj = rodflow.Trajectory(theta=torch.zeros(3, 2), m=None, v=None, t=torch.arange(3), loss=torch.zeros(3))
    with pytest.raises(ValueError, match="not recorded"):
        traj.index_of(7)


@pytest.mark.parametrize(("name", "dtype"), [("gd", torch.float32), ("scalar_nadam", torch.float64)])
def test_round_trip_without_moments_and_with_a_scalar_v(tmp_path, name, dtype):
    prob = rodflow.problems.quadratic([2.0, 1.0, 0.5], seed=0, dtype=dtype)
    traj = rodflow.iterate(rodflow.optimizer(name, lr=0.1), prob.loss_fn, prob.theta0, 5)
    traj.save(tmp_path / "r.pt")
    back = rodflow.Trajectory.load(tmp_path / "r.pt")
    for field in ("theta", "m", "v", "loss"):
        a, b = getattr(traj, field), getattr(back, field)
        assert (a is None and b is None) or (torch.equal(a, b) and a.dtype == b.dtype == dtype)
    assert (back.m is None) == (name == "gd") and (back.v is None or back.v.shape == (6,))


def test_save_load_resume_equals_an_uninterrupted_run(tmp_path, small_mlp):
    spec = rodflow.optimizer("nadam", lr=1e-2, betas=(0.8, 0.95))
    full = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, 12)
    rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, 7).save(tmp_path / "first.pt")
    state = rodflow.Trajectory.load(tmp_path / "first.pt").state(7)
    grad = rodflow.gradient(small_mlp.loss_fn)
    for _ in range(5):
        state = spec.step(state, grad)
    assert state.t == 12
    assert torch.equal(state.theta, full.theta[-1]) and torch.equal(state.m, full.m[-1])
    assert torch.equal(state.v, full.v[-1])
