"""The stable flow against references: matrix exponentials, the discrete maps, scipy's solve_ivp."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

import rodflow

ALL = rodflow.OPTIMIZERS
HP = {
    "gd": {"lr": 0.05},
    "heavy_ball": {"lr": 0.02, "momentum": 0.8},
    "nesterov": {"lr": 0.02, "momentum": 0.7},
    "scalar_rmsprop": {"lr": 0.01, "alpha": 0.95},
    "rmsprop": {"lr": 0.01, "alpha": 0.9, "bias_correction": True},
    "scalar_adam": {"lr": 0.01, "betas": (0.8, 0.95)},
    "adam": {"lr": 0.01, "betas": (0.85, 0.99)},
    "scalar_nadam": {"lr": 0.01, "betas": (0.8, 0.95), "momentum_decay": None},
    "nadam": {"lr": 0.01, "betas": (0.85, 0.99)},
    "vradam": {"lr": 0.01, "betas": (0.85, 0.99)},
}


def _hp(name):
    return HP.get(name, {"lr": 0.01})


def test_gd_stable_flow_is_the_matrix_exponential():
    prob = rodflow.problems.quadratic([4.0, 1.0, 0.25, 0.01], seed=3, center=torch.tensor([1.0, -2.0, 0.5, 3.0],
                                                                                             dtype=torch.float64))
    lr = 0.1
    spec = rodflow.optimizer("gd", lr=lr)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps=30)
    sol = rodflow.stable_flow(spec, prob.loss_fn).solve(traj, rtol=1e-12, atol=1e-14)
    h = prob.info["hessian"].numpy()
    c = prob.info["center"].numpy()
    x0 = prob.theta0.numpy() - c
    expected = np.stack([c + scipy.linalg.expm(-lr * k * h) @ x0 for k in range(31)])
    np.testing.assert_allclose(sol.theta.numpy(), expected, rtol=0, atol=1e-10)


@pytest.mark.parametrize("name", ALL)
def test_euler_with_step_one_reproduces_the_iterates(name, small_mlp):
    spec = rodflow.optimizer(name, **_hp(name))
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, steps=25)
    sol = rodflow.stable_flow(spec, small_mlp.loss_fn).solve(traj, method="euler")
    torch.testing.assert_close(sol.theta, traj.theta, rtol=1e-11, atol=1e-13)
    if traj.m is not None:
        torch.testing.assert_close(sol.m, traj.m, rtol=1e-11, atol=1e-13)
    if traj.v is not None:
        torch.testing.assert_close(sol.v, traj.v, rtol=1e-11, atol=1e-15)
    assert sol.stats.n_steps == 25 and sol.stats.nfe == 25


def _solve_ivp_flat(flow, y0, t_end):
    shapes = [y.shape for y in y0]
    sizes = [y.numel() for y in y0]

    def f(t, x):
        parts = torch.split(torch.as_tensor(x, dtype=torch.float64), sizes)
        ys = tuple(p.reshape(s) for p, s in zip(parts, shapes))
        return torch.cat([d.reshape(-1) for d in flow.field(torch.tensor(t), ys)]).numpy()

    x0 = torch.cat([y.reshape(-1) for y in y0]).numpy()
    res = scipy.integrate.solve_ivp(f, (0.0, t_end), x0, method="DOP853", rtol=1e-11, atol=1e-13,
                                    t_eval=np.arange(t_end + 1.0))
    assert res.success
    return res.y.T


@pytest.mark.parametrize("kind", ["stable", "rod"])
@pytest.mark.parametrize("name", ALL)
def test_integrate_agrees_with_solve_ivp(name, kind):
    prob = rodflow.problems.matrix_factorization(4, 3, rank=2, seed=1)
    spec = rodflow.optimizer(name, **_hp(name))
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps=12)
    flow = (rodflow.stable_flow(spec, prob.loss_fn) if kind == "stable"
            else rodflow.rod_flow(spec, prob.loss_fn, order=1, floor=None))
    y0 = flow.initial(traj, step=0)
    res = rodflow.integrate(flow.field, y0, torch.arange(13.0, dtype=torch.float64), rtol=1e-11, atol=1e-13)
    ours = torch.cat([y.reshape(13, -1) for y in res.ys], dim=1).numpy()
    ref = _solve_ivp_flat(flow, y0, 12)
    np.testing.assert_allclose(ours, ref, rtol=1e-7, atol=1e-9)


def _order_gap(name, lr, horizon):
    """Gap between the iterates and the stable flow at physical time lr·t = horizon."""
    prob = rodflow.problems.matrix_factorization(5, 4, rank=2, seed=2, init_scale=0.5)
    spec = rodflow.optimizer(name, **{**_hp(name), "lr": lr})
    steps = round(horizon / lr)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps=steps, record_every=steps)
    # the flow starts from the same state as the iterates (recorded only at the ends)
    flow = rodflow.stable_flow(spec, prob.loss_fn)
    y0 = flow.initial(traj, step=0)
    res = rodflow.integrate(flow.field, y0, torch.tensor([0.0, float(steps)], dtype=torch.float64),
                            rtol=1e-10, atol=1e-12)
    return float(torch.linalg.vector_norm(res.ys[0][-1] - traj.theta[-1]))


@pytest.mark.parametrize("name", ["gd", "heavy_ball", "nesterov", "rmsprop", "adam", "nadam"])
def test_stable_flow_is_first_order_in_the_learning_rate(name):
    """At fixed physical time ηt, the iterates-to-flow gap shrinks like O(η): fitted slope ≈ 1."""
    lrs = np.array([0.02, 0.01, 0.005, 0.0025]) * (10 if name in ("gd", "heavy_ball", "nesterov") else 1)
    horizon = 2.0 if name in ("gd", "heavy_ball", "nesterov") else 0.2
    gaps = np.array([_order_gap(name, lr, horizon) for lr in lrs])
    slope = np.polyfit(np.log(lrs), np.log(gaps), 1)[0]
    assert 0.85 < slope < 1.2, (slope, gaps)


def test_flow_arguments_are_validated(small_mlp):
    spec = rodflow.optimizer("adam")
    with pytest.raises(TypeError, match="spec"):
        rodflow.stable_flow("adam", small_mlp.loss_fn)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="rate"):
        rodflow.stable_flow(spec, small_mlp.loss_fn, rate="fast")
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, steps=6, record_every=3)
    with pytest.raises(ValueError, match="steps"):
        rodflow.stable_flow(spec, small_mlp.loss_fn).solve(traj, steps=0)
    with pytest.raises(ValueError, match="consecutive"):
        rodflow.rod_flow(spec, small_mlp.loss_fn).solve(traj, start=3)
