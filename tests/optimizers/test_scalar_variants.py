"""Scalar variants: one second moment v tracking the squared gradient norm ‖g‖².

Convention checked here, written independently of the package:
    v' = β2 v + (1 − β2)‖g‖²,  D = η / (√(v'/(1 − β2^s)) + ε)   (RMSProp: no bias correction by default)
and the rest as the per-coordinate twin.
"""

from __future__ import annotations

import math

import pytest
import torch

import rodflow

PAIRS = [("scalar_rmsprop", "rmsprop", {"lr": 0.05, "alpha": 0.9}),
         ("scalar_adam", "adam", {"lr": 0.05, "betas": (0.8, 0.95)}),
         ("scalar_nadam", "nadam", {"lr": 0.05, "betas": (0.8, 0.95)}),
         ("scalar_nadam", "nadam", {"lr": 0.05, "betas": (0.8, 0.95), "momentum_decay": None})]


def _loss(th):
    return (th**4).sum() / 4 + 0.5 * (th**2).sum()


@pytest.mark.parametrize(("scalar", "twin", "hp"), PAIRS)
def test_one_parameter_equals_the_per_coordinate_twin(scalar, twin, hp):
    theta0 = torch.tensor([1.3], dtype=torch.float64)
    a = rodflow.iterate(rodflow.optimizer(scalar, **hp), _loss, theta0, 60)
    b = rodflow.iterate(rodflow.optimizer(twin, **hp), _loss, theta0, 60)
    torch.testing.assert_close(a.theta, b.theta, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(a.v, b.v.squeeze(1), rtol=1e-13, atol=1e-15)


def _reference(name, hp, theta, steps):
    """The scalar variants' equations, written out with Python floats."""
    lr = hp["lr"]
    b1, b2 = hp.get("betas", (0.0, hp.get("alpha")))
    eps = 1e-8
    th = [float(x) for x in theta]
    m = [0.0] * len(th)
    v = 0.0
    prod = 1.0
    for s in range(1, steps + 1):
        g = [x**3 + x for x in th]
        v = b2 * v + (1 - b2) * sum(x * x for x in g)
        if name == "scalar_rmsprop":
            d = lr / (math.sqrt(v) + eps)
            th = [x - d * gi for x, gi in zip(th, g)]
            continue
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        d = lr / (math.sqrt(v / (1 - b2**s)) + eps)
        if name == "scalar_adam":
            th = [x - d * mi / (1 - b1**s) for x, mi in zip(th, m)]
        else:  # NAdam with Dozat's schedule, ψ = 4e-3
            mu = b1 * (1 - 0.5 * 0.96 ** (s * 4e-3))
            mu_next = b1 * (1 - 0.5 * 0.96 ** ((s + 1) * 4e-3))
            prod *= mu
            th = [x - d * (mu_next / (1 - prod * mu_next) * mi + (1 - mu) / (1 - prod) * gi)
                  for x, mi, gi in zip(th, m, g)]
    return th, v


@pytest.mark.parametrize("name", ["scalar_rmsprop", "scalar_adam", "scalar_nadam"])
def test_scalar_variants_follow_their_equations(name):
    hp = {"lr": 0.03, "alpha": 0.9} if name == "scalar_rmsprop" else {"lr": 0.03, "betas": (0.8, 0.95)}
    theta0 = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    traj = rodflow.iterate(rodflow.optimizer(name, **hp), _loss, theta0, 40)
    th, v = _reference(name, hp, theta0, 40)
    torch.testing.assert_close(traj.theta[-1], torch.tensor(th, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert float(traj.v[-1]) == pytest.approx(v, rel=1e-12)
    assert traj.v.shape == (41,)  # one number per step
