"""compare(): distances, amplitudes, the EoS onset and the summary."""

from __future__ import annotations

import pytest
import torch

import rodflow
from rodflow.compare import alternating_amplitude7, eos_onset


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


@pytest.mark.parametrize("window", [(20, 5), (5, 5), (100, 200), (-50, -10)])
def test_a_window_that_is_empty_or_outside_the_run_is_refused(run, window):
    prob, spec, traj = run
    sol = rodflow.stable_flow(spec, prob.loss_fn).solve(traj)
    with pytest.raises(ValueError, match="window"):
        rodflow.compare(traj, sol, window=window)
    with pytest.raises(TypeError, match="window"):
        rodflow.compare(traj, sol, window=(1.5, 4))  # type: ignore[arg-type]


def test_a_start_up_catapult_is_not_the_onset_of_sustained_eos():
    steps = torch.arange(0, 200, 10)
    values = torch.full((20,), 1.0, dtype=torch.float64)
    values[0] = 5.0  # start-up: far above the threshold 2, then far below
    values[12:] = torch.tensor([2.1, 1.9, 2.05, 1.95, 2.0, 2.2, 1.85, 2.0], dtype=torch.float64)  # hovering
    series = {"step": steps, "preconditioned_step": steps, "preconditioned_sharpness": values}
    assert eos_onset(series, 2.0) == 120
    # the first crossing alone would say 0; a dip below hold × threshold inside the span restarts it
    values[13] = 1.5
    assert eos_onset(series, 2.0) == 140
    assert eos_onset(series, 2.0, hold=0.7) == 120


def _bisect_count(series_fn, first, last):
    from rodflow.compare import HOLD, SUSTAIN, _bisect_onset

    return _bisect_onset(series_fn, first, last, 2.0, HOLD, SUSTAIN)


def test_bisection_finds_the_sustained_onset_with_log_n_estimates():
    def s(k):  # catapult at 0..4, below until 613, then EoS hovering in [1.9, 2.2]
        if k < 5:
            return 9.0
        if k < 613:
            return 1.0 + k / 1000
        return 2.0 + 0.1 * ((-1) ** k) + (0.05 if k % 7 else 0.0)

    k_star, n = _bisect_count(s, 0, 1000)
    dense = eos_onset({"preconditioned_step": torch.arange(0, 1001),
                       "preconditioned_sharpness": torch.tensor([s(k) for k in range(1001)], dtype=torch.float64)},
                      2.0)
    assert dense == 614 and k_star == 614  # s(613) = 1.95
    assert n <= 2 * 10 + 6  # ~2 log₂ 1000 plus the checks
    assert _bisect_count(lambda k: 1.0, 0, 1000)[0] is None


def test_compare_without_recorded_sharpness_warns_and_bisects(run):
    prob, spec, traj = run  # GD at ηλ_max = 0.6: never at the edge
    sol = rodflow.stable_flow(spec, prob.loss_fn).solve(traj)
    with pytest.warns(UserWarning, match="sharpness_every"):
        cmp = rodflow.compare(traj, sol)
    assert cmp.k_star is None and cmp.window is None
    prob2 = rodflow.problems.quadratic([8.0, 0.5], seed=0, center=torch.tensor([1.0, 1.0], dtype=torch.float64))
    traj2 = rodflow.iterate(spec, prob2.loss_fn, prob2.theta0, steps=20)  # ηλ = 2.4 from the start
    sol2 = rodflow.stable_flow(spec, prob2.loss_fn).solve(traj2, check_config=False)
    with pytest.warns(UserWarning, match="window"):
        assert rodflow.compare(traj2, sol2).k_star == 0


def test_phase_free_distance_is_the_nearer_end_of_the_rod(run):
    prob, spec, traj = run
    sol = rodflow.rod_flow(spec, prob.loss_fn, init="3pt").solve(traj, start=2, steps=10)
    # flip the rod's phase: parity distance changes, the phase-free one does not
    flipped = rodflow.flows.FlowSolution(t=sol.t, theta=sol.centre - (sol.theta - sol.centre), centre=sol.centre,
                                         delta=-sol.delta, m=None, v=None, loss=sol.loss, stats=sol.stats,
                                         kind="rod", config=sol.config, flow=sol.flow)
    a = rodflow.compare(traj, sol, window=(6, 13))
    b = rodflow.compare(traj, flipped, window=(6, 13))
    torch.testing.assert_close(a.phase_free_distance, b.phase_free_distance)
    torch.testing.assert_close(a.distance, b.antiphase_distance)
    sign = (1 - 2 * (a.t % 2)).double().unsqueeze(1)
    expected = torch.minimum(torch.linalg.vector_norm(traj.theta[2:13] - sol.centre - sign * sol.delta, dim=1),
                             torch.linalg.vector_norm(traj.theta[2:13] - sol.centre + sign * sol.delta, dim=1))
    torch.testing.assert_close(a.phase_free_distance, expected)
    s = a.summary()
    assert s["eos_window_phase_free_distance"] == pytest.approx(min(float(a.distance[4:].mean()),
                                                                    float(a.antiphase_distance[4:].mean())))
    assert s["eos_mean_phase_free_distance"] <= s["eos_window_phase_free_distance"] + 1e-15


def test_seven_point_amplitude_and_onsets():
    k = torch.arange(60, dtype=torch.float64)
    amp = torch.where(k < 30, torch.tensor(1e-6, dtype=torch.float64), 1e-6 * 2.0 ** (k - 29)).clamp_max(1e-3)
    theta = torch.stack([0.1 * k + 0.01 * k**2, -k], dim=1) + ((-1.0) ** k * amp).unsqueeze(1) * torch.tensor(
        [1.0, 0.0], dtype=torch.float64)
    t = torch.arange(60)
    a7 = alternating_amplitude7(theta, t)
    assert torch.isnan(a7[:3]).all() and torch.isnan(a7[-3:]).all()
    torch.testing.assert_close(a7[3:25], amp[3:25], rtol=1e-6, atol=0)  # the drift (degree 2) cancels
    traj = rodflow.Trajectory(theta=theta, m=None, v=None, t=t, loss=k.clone())
    spec = rodflow.optimizer("gd", lr=0.1)
    prob = rodflow.problems.quadratic([1.0, 1.0], seed=0)
    sol = rodflow.stable_flow(spec, prob.loss_fn).solve(traj, start=5, steps=50, check_config=False)
    on = rodflow.compare(traj, sol, window=(30, 56)).onsets()
    assert on["plateau"] == pytest.approx(1e-3, rel=1e-6)
    assert on["iterates"] == 38  # 1e-6·2^(k−29) ≥ 5e-4 first at k = 38
    assert on["flow"] is None  # the stable flow never oscillates
