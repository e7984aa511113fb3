"""compare(): distances, amplitudes, the EoS onset and the summary."""

from __future__ import annotations

import pytest
import torch

import rodflow
from rodflow.compare import eos_onset


@pytest.fixture(scope="module")
def run():
    prob = rodflow.problems.quadratic([2.0, 0.5], seed=0, center=torch.tensor([1.0, 1.0], dtype=torch.float64))
    spec = rodflow.optimizer("gd", lr=0.3)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps=20)
    return prob, spec, traj


def test_distances_match_a_direct_computation(run):
    prob, spec, traj = run
    sol = rodflow.stable_flow(spec, prob.loss_fn).solve(traj, start=2, steps=10)
    cmp = rodflow.compare(traj, sol, window=(6, 13))
    assert cmp.t.tolist() == list(range(2, 13))
    expected = torch.linalg.vector_norm(traj.theta[2:13] - sol.theta, dim=1)
    torch.testing.assert_close(cmp.distance, expected)
    torch.testing.assert_close(cmp.relative_distance, expected / torch.linalg.vector_norm(traj.theta[2:13], dim=1))
    amp = 0.5 * torch.linalg.vector_norm(traj.theta[3:14] - traj.theta[2:13], dim=1)
    torch.testing.assert_close(cmp.amplitude, amp)
    centre = (traj.theta[1:12] + 2 * traj.theta[2:13] + traj.theta[3:14]) / 4
    torch.testing.assert_close(cmp.centre_distance, torch.linalg.vector_norm(centre - sol.centre, dim=1))
    torch.testing.assert_close(cmp.alternating_amplitude,
                               torch.linalg.vector_norm(2 * traj.theta[2:13] - traj.theta[1:12] - traj.theta[3:14],
                                                        dim=1) / 4)
    assert torch.equal(cmp.flow_amplitude, torch.zeros(11, dtype=torch.float64))
    loss_gap = (sol.loss - traj.loss[2:13]).abs()
    torch.testing.assert_close(cmp.loss_gap, loss_gap)
    s = cmp.summary()
    assert s["pre_eos_mean_distance"] == pytest.approx(float(expected[:4].mean()))
    assert s["eos_mean_distance"] == pytest.approx(float(expected[4:].mean()))
    assert s["max_distance"] == pytest.approx(float(expected.max()))
    assert s["mean_distance"] == pytest.approx(float(expected.mean()))


def test_k_star_is_read_from_the_recorded_sharpness(run):
    prob, spec, traj = run
    traj = rodflow.Trajectory(theta=traj.theta, m=None, v=None, t=traj.t, loss=traj.loss,
                              sharpness={"step": torch.tensor([0, 5, 10, 15]),
                                         "sharpness": torch.tensor([1.0, 5.0, 7.0, 8.0], dtype=torch.float64),
                                         "preconditioned_sharpness": torch.tensor([0.3, 1.5, 2.1, 2.4],
                                                                                  dtype=torch.float64)})
    sol = rodflow.stable_flow(spec, prob.loss_fn).solve(traj)
    cmp = rodflow.compare(traj, sol)
    assert cmp.k_star == 10 and cmp.window == (10, 21)
    assert rodflow.compare(traj, sol, threshold=1.4).k_star == 5
    assert rodflow.compare(traj, sol, window=(3, 8)).window == (3, 8)
    assert eos_onset(traj.sharpness, 3.0) is None


def test_compare_rejects_bad_input(run):
    prob, spec, traj = run
    sol = rodflow.stable_flow(spec, prob.loss_fn).solve(traj, steps=5)
    with pytest.raises(TypeError, match="trajectory"):
        rodflow.compare(sol, sol)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="solution"):
        rodflow.compare(traj, traj)  # type: ignore[arg-type]
