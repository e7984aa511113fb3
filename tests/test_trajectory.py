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
