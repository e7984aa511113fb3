"""Flow.solve and the flows' options: bad input gets a clear error naming the argument."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import rodflow
from rodflow.flows.base import TransientWarning


@pytest.fixture(scope="module")
def runs():
    prob = rodflow.problems.quadratic([2.0, 0.5, 0.1], seed=0, center=torch.tensor([1.0, 1.0, -1.0],
                                                                                   dtype=torch.float64))
    gd = rodflow.optimizer("gd", lr=0.3)
    adam = rodflow.optimizer("adam", lr=1e-2)
    return prob, gd, adam, {
        "gd": rodflow.iterate(gd, prob.loss_fn, prob.theta0, steps=20),
        "heavy_ball": rodflow.iterate(rodflow.optimizer("heavy_ball", lr=0.1), prob.loss_fn, prob.theta0, steps=20),
        "adam": rodflow.iterate(adam, prob.loss_fn, prob.theta0, steps=30),
    }


@pytest.mark.parametrize("make", [rodflow.stable_flow, rodflow.rod_flow])
def test_bad_solve_arguments_name_the_argument(runs, make):
    prob, gd, _, traj = runs
    flow = make(gd, prob.loss_fn)
    table = [
        ({"trajectory": None}, TypeError, "trajectory"),
        ({"start": True}, TypeError, "start"),
        ({"start": 2.0}, TypeError, "start"),
        ({"steps": True}, TypeError, "steps"),
        ({"steps": 0}, ValueError, "steps"),
        ({"start": 50}, ValueError, "start"),
        ({"start": -1}, ValueError, "start"),
    ]
    for kwargs, exc, word in table:
        t = kwargs.pop("trajectory", traj["gd"])
        with pytest.raises(exc, match=word):
            flow.solve(t, **kwargs)


@pytest.mark.parametrize("index", [np.int64(3), torch.tensor(3), np.int32(3)])
def test_start_and_steps_take_integral_types(runs, index):
    prob, gd, _, traj = runs
    flow = rodflow.stable_flow(gd, prob.loss_fn)
    ref = flow.solve(traj["gd"], start=3, steps=3)
    sol = flow.solve(traj["gd"], start=index, steps=index)
    assert sol.t.tolist() == [3, 4, 5, 6] and torch.equal(sol.theta, ref.theta)


def test_config_of_the_trajectory_is_checked(runs):
    prob, _, _, traj = runs
    with pytest.raises(ValueError, match="trajectory: recorded by 'gd'"):
        rodflow.rod_flow(rodflow.optimizer("heavy_ball", lr=0.3), prob.loss_fn).solve(traj["gd"], start=5)
    with pytest.raises(ValueError, match=r"lr: recorded 0\.3, flow 0\.2"):
        rodflow.stable_flow(rodflow.optimizer("gd", lr=0.2), prob.loss_fn).solve(traj["gd"], start=5)
    with pytest.raises(ValueError, match="scalar_adam"):
        rodflow.stable_flow(rodflow.optimizer("scalar_adam", lr=1e-2), prob.loss_fn).solve(traj["adam"], start=12)
    # the override solves it anyway
    sol = rodflow.stable_flow(rodflow.optimizer("gd", lr=0.2), prob.loss_fn).solve(traj["gd"], start=5,
                                                                                   check_config=False)
    assert len(sol) == 16


@pytest.mark.parametrize("recorded", ["gd", "heavy_ball"])
def test_an_adam_flow_on_a_run_without_its_moments_is_a_value_error(runs, recorded):
    prob, _, adam, traj = runs
    for make in (rodflow.stable_flow, rodflow.rod_flow):
        with pytest.raises(ValueError, match="trajectory: a adam flow needs the recorded moment"):
            make(adam, prob.loss_fn).solve(traj[recorded], start=12, check_config=False)


def test_adaptive_flows_warn_inside_the_first_step_transient(runs):
    prob, _, adam, traj = runs
    with pytest.warns(TransientWarning, match="start"):
        rodflow.stable_flow(adam, prob.loss_fn).solve(traj["adam"], start=3, steps=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error", TransientWarning)
        rodflow.stable_flow(adam, prob.loss_fn).solve(traj["adam"], start=10, steps=2)


def test_flow_options_are_validated(runs):
    prob, gd, _, _ = runs
    for make in (rodflow.stable_flow, rodflow.rod_flow):
        for bad in (4, 0, True, "2"):
            with pytest.raises(ValueError, match="order"):
                make(gd, prob.loss_fn, order=bad)
        with pytest.raises(ValueError, match="init"):
            make(gd, prob.loss_fn, init="5pt")
        with pytest.raises(ValueError, match="order=2"):
            make(gd, prob.loss_fn, order=2, rate="central")
        with pytest.raises(ValueError, match="order=3"):
            make(gd, prob.loss_fn, order=3, rate="central", form="delay")
    with pytest.raises(ValueError, match="order=3 exists in the delay form only"):
        rodflow.stable_flow(gd, prob.loss_fn, order=3)  # the stable flow's default form is the look-behind
    for bad in ("rounding", 0.0, 1.5, True):
        with pytest.raises(ValueError, match="floor"):
            rodflow.rod_flow(gd, prob.loss_fn, floor=bad)


def test_roundoff_floor_follows_the_dtype(runs):
    prob, gd, _, _ = runs
    flow = rodflow.rod_flow(gd, prob.loss_fn)
    assert flow.rho(torch.float64) == pytest.approx(0.1 * 2.0**-52)
    assert flow.rho(torch.float32) == pytest.approx(0.1 * 2.0**-23)
    assert rodflow.rod_flow(gd, prob.loss_fn, floor=1e-9).rho(torch.float32) == 1e-9
    assert rodflow.rod_flow(gd, prob.loss_fn, floor=None).rho(torch.float64) is None


def test_linear_response_matches_the_rod_ends_where_both_are_accurate(small_mlp):
    """Below eps^(1/3)‖W‖ the roundoff rod evaluates g̃ = ∇²L(W)Δ (one HVP); at a width where the
    finite difference is still accurate (1e-7 relative) both agree to O(‖Δ‖²)."""
    spec = rodflow.optimizer("gd", lr=0.1)
    w = small_mlp.theta0
    gen = torch.Generator().manual_seed(3)
    delta = torch.randn(w.shape, generator=gen, dtype=torch.float64)
    delta = 1e-7 * torch.linalg.vector_norm(w) * delta / torch.linalg.vector_norm(delta)
    lin = rodflow.rod_flow(spec, small_mlp.loss_fn, order=1).increment(0.0, (w, delta))
    exact = rodflow.rod_flow(spec, small_mlp.loss_fn, order=1, floor=None).increment(0.0, (w, delta))
    torch.testing.assert_close(lin[0], exact[0], rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(lin[1], exact[1], rtol=1e-6, atol=1e-6 * float(delta.abs().max()))
