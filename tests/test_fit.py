"""fit_flow: recovering the hyperparameters that produced a run, its gradients, its choice of family, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import rodflow
from rodflow.fit import _Objective, _window


def _mlp():
    """A 41-parameter tanh MLP on 32 points (float64): cheap enough for many flow solves."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(32, 3, generator=g, dtype=torch.float64)
    y = torch.sin(x @ torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))

    def loss_fn(th):
        w1, b1, w2, b2 = th[:24].view(8, 3), th[24:32], th[32:40], th[40]
        return ((torch.tanh(x @ w1.T + b1) @ w2 + b2 - y) ** 2).mean()

    return loss_fn, 0.5 * torch.randn(41, generator=g, dtype=torch.float64)


@pytest.fixture(scope="module")
def adam_run():
    loss_fn, theta0 = _mlp()
    spec = rodflow.optimizer("adam", lr=5e-3, betas=(0.9, 0.999))
    return loss_fn, spec, rodflow.iterate(spec, loss_fn, theta0, 150)


def test_adam_lr_from_twice_the_value(adam_run):
    loss_fn, _, traj = adam_run
    res = rodflow.fit_flow(traj, loss_fn, start={"lr": 1e-2})
    assert res.family == "stable" and res.stats["success"]
    assert abs(res.values["lr"] / 5e-3 - 1) < 0.01, res.summary()
    assert 0 < res.stderr["lr"] < 1e-3 and res.discrepancy < 1e-2
    assert res.steps.tolist() == list(range(2, 151)) and res.curve.shape == (149,)
    assert res.spec == rodflow.optimizer("adam", lr=res.values["lr"])
    assert "lr" in res.summary() and res.discrepancies == {"stable": res.discrepancy}


@pytest.mark.slow
def test_adam_lr_and_beta1_jointly(adam_run):
    loss_fn, _, traj = adam_run
    res = rodflow.fit_flow(traj, loss_fn, fit=("lr", "beta1"), start={"lr": 1e-2, "beta1": 0.8})
    assert abs(res.values["lr"] / 5e-3 - 1) < 0.01 and abs(res.values["beta1"] / 0.9 - 1) < 0.01, res.summary()


@pytest.mark.slow
def test_adam_start_ten_times_off(adam_run):
    loss_fn, _, traj = adam_run
    res = rodflow.fit_flow(traj, loss_fn, start={"lr": 5e-2})
    assert abs(res.values["lr"] / 5e-3 - 1) < 0.01, res.summary()


@pytest.mark.slow
def test_a_noisy_run_is_recovered_within_its_standard_error():
    loss_fn, theta0 = _mlp()
    gen = torch.Generator().manual_seed(1)

    def noisy(th):  # the gradient gets N(0, 0.003²) noise on every coordinate at every step
        return loss_fn(th) + (th * 3e-3 * torch.randn(th.shape, generator=gen, dtype=th.dtype)).sum()

    traj = rodflow.iterate(rodflow.optimizer("adam", lr=5e-3), noisy, theta0, 150)
    res = rodflow.fit_flow(traj, loss_fn, start={"lr": 1e-2})
    assert abs(res.values["lr"] - 5e-3) <= 2 * res.stderr["lr"], res.summary()
    assert res.stderr["lr"] < 2.5e-4  # and it is informative: within 5% of lr


@pytest.mark.slow
# RMSProp without bias correction: v warms up over ~1/(1 − α) = 100 steps, during which the step size
# changes fast; fitted over steps 1..150 its lr came out 3% high, over 60..150 within 0.2%
@pytest.mark.parametrize(("name", "hp", "window"), [("rmsprop", {"lr": 5e-4, "alpha": 0.99}, (60, 150)),
                                                    ("heavy_ball", {"lr": 5e-3, "momentum": 0.8}, None)])
def test_rmsprop_and_heavy_ball(name, hp, window):
    loss_fn, theta0 = _mlp()
    spec = rodflow.optimizer(name, **hp)
    traj = rodflow.iterate(spec, loss_fn, theta0, 150)
    res = rodflow.fit_flow(traj, loss_fn, start={"lr": 2 * hp["lr"]}, window=window)
    assert abs(res.values["lr"] / hp["lr"] - 1) < 0.01, res.summary()


def test_at_the_edge_of_stability_auto_picks_the_rod_flow():
    """GD with ηλ(0) = 2.5 on L = log cosh(x) + y²/20 settles on a period-two orbit x ≈ ±0.89."""
    def loss_fn(th):
        return torch.log(torch.cosh(th[0])) + 0.05 * th[1] ** 2

    traj = rodflow.iterate(rodflow.optimizer("gd", lr=2.5), loss_fn, torch.tensor([0.5, 1.0], dtype=torch.float64),
                           40)
    assert float(traj.theta[-1, 0] * traj.theta[-2, 0]) < -0.5  # it oscillates
    res = rodflow.fit_flow(traj, loss_fn, family="auto", window=(4, 40), start={"lr": 2.0})
    assert res.family == "rod" and set(res.discrepancies) == {"stable", "rod"}
    assert res.discrepancies["rod"] < 1e-3 * res.discrepancies["stable"]
    assert abs(res.values["lr"] / 2.5 - 1) < 0.01


def test_finite_differences_match_autograd_of_the_closed_form():
    """GD's stable flow on a quadratic is W(s + j) = exp(−ηHj) θ_s: D(log η) in closed form, differentiated
    by autograd, against fit_flow's central differences through rodflow.integrate."""
    lam = torch.tensor([3.0, 1.0, 0.3], dtype=torch.float64)
    prob = rodflow.problems.quadratic(lam.tolist(), seed=None)
    h, lr, k = prob.info["hessian"], 0.05, 6
    traj = rodflow.iterate(rodflow.optimizer("gd", lr=lr), prob.loss_fn, prob.theta0, 24)
    sub = _window(traj, None)
    obj = _Objective(sub, prob.loss_fn, rodflow.optimizer("gd", lr=lr), ["lr"], "stable", k, "rk4",
                     {"step_size": 0.125}, 1e-8, 1e-10, {})
    phi = math.log(0.07)  # away from the optimum, where the gradient is not small
    fd = obj.gradient(np.array([phi]))[0]

    evals, vecs = torch.linalg.eigh(h)
    p = torch.tensor(phi, dtype=torch.float64, requires_grad=True)
    num, den = 0.0, 0.0
    for s in range(0, 24, k):
        for j in range(1, k + 1):
            pred = vecs @ (torch.exp(-torch.exp(p) * evals * j) * (vecs.T @ traj.theta[s]))
            num = num + ((pred - traj.theta[s + j]) ** 2).sum()
            den += float(((traj.theta[s + j] - traj.theta[s]) ** 2).sum())
    d = num / den
    (exact,) = torch.autograd.grad(d, p)
    assert obj(np.array([phi])) == pytest.approx(float(d.detach()), rel=1e-7)
    assert fd == pytest.approx(float(exact), rel=1e-6)


def test_bad_input(adam_run):
    loss_fn, spec, traj = adam_run
    with pytest.raises(ValueError, match="fit: 'momentum' is not a hyperparameter of adam"):
        rodflow.fit_flow(traj, loss_fn, fit=("momentum",))
    with pytest.raises(ValueError, match="fit: 'learning_rate'"):
        rodflow.fit_flow(traj, loss_fn, fit=("learning_rate",))
    with pytest.raises(ValueError, match=r"window.*outside the record"):
        rodflow.fit_flow(traj, loss_fn, window=(100, 200))
    with pytest.raises(ValueError, match=r"window.*outside the record"):
        rodflow.fit_flow(traj, loss_fn, window=(20, 5))
    with pytest.raises(ValueError, match="family"):
        rodflow.fit_flow(traj, loss_fn, family="central")
    with pytest.raises(ValueError, match="start"):
        rodflow.fit_flow(traj, loss_fn, start={"beta1": 0.5})
    with pytest.raises(ValueError, match="segment"):
        rodflow.fit_flow(traj, loss_fn, segment=0)
    with pytest.raises(TypeError, match="trajectory"):
        rodflow.fit_flow(traj.theta, loss_fn)  # type: ignore[arg-type]
    sparse = rodflow.iterate(spec, loss_fn, traj.theta[0], 30, record_every=3)
    with pytest.raises(ValueError, match="consecutive steps"):
        rodflow.fit_flow(sparse, loss_fn)
    unmapped = rodflow.Trajectory(theta=traj.theta, m=None, v=None, t=traj.t, loss=traj.loss, config={})
    with pytest.raises(ValueError, match="no optimizer spec"):
        rodflow.fit_flow(unmapped, loss_fn)
