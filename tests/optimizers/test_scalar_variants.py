"""Scalar variants: one second moment v, a single number, tracking the squared gradient norm ‖g‖².

Convention checked here, written out independently of the package (s = t + 1 is the number of
the step being taken, ε outside the square root as in torch):

    v' = β2·v + (1 − β2)·‖g‖²            (the *sum* of squares, not the mean)
    D  = η / (√(v'/c2) + ε)               c2 = 1 − β2^s, or c2 = 1 for RMSProp without bias correction
    scalar_rmsprop:  θ' = θ − D·g
    scalar_adam:     m' = β1·m + (1 − β1)·g,  θ' = θ − D·m'/(1 − β1^s)
    scalar_nadam:    m' as Adam,  θ' = θ − D·(μ_{s+1}/(1 − Π_{s+1})·m' + (1 − μ_s)/(1 − Π_s)·g)
                     with μ_i = β1(1 − ½·0.96^{iψ}) and Π_s = μ_1⋯μ_s (μ ≡ β1 when ψ is None)

so every coordinate gets the same step size. With one parameter ‖g‖² = g², hence each scalar
variant coincides with its per-coordinate twin.
"""

from __future__ import annotations

import math

import pytest
import torch

import rodflow

PAIRS = [("scalar_rmsprop", "rmsprop", {"lr": 0.05, "alpha": 0.9, "eps": 1e-3}),
         ("scalar_rmsprop", "rmsprop", {"lr": 0.05, "alpha": 0.9, "bias_correction": True}),
         ("scalar_adam", "adam", {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-3}),
         ("scalar_nadam", "nadam", {"lr": 0.05, "betas": (0.8, 0.95), "eps": 1e-3}),
         ("scalar_nadam", "nadam", {"lr": 0.05, "betas": (0.8, 0.95), "momentum_decay": 0.1}),
         ("scalar_nadam", "nadam", {"lr": 0.05, "betas": (0.8, 0.95), "momentum_decay": None})]


def _loss(th):
    return (th**4).sum() / 4 + 0.5 * (th**2).sum()


def _grad(th):
    return [x**3 + x for x in th]


@pytest.mark.parametrize(("scalar", "twin", "hp"), PAIRS)
def test_one_parameter_equals_the_per_coordinate_twin(scalar, twin, hp):
    theta0 = torch.tensor([1.3], dtype=torch.float64)
    a = rodflow.iterate(rodflow.optimizer(scalar, **hp), _loss, theta0, 60)
    b = rodflow.iterate(rodflow.optimizer(twin, **hp), _loss, theta0, 60)
    assert a.v.shape == (61,) and b.v.shape == (61, 1)
    torch.testing.assert_close(a.theta, b.theta, rtol=1e-13, atol=1e-15)
    torch.testing.assert_close(a.v, b.v.squeeze(1), rtol=1e-13, atol=1e-15)
    if a.m is not None:
        torch.testing.assert_close(a.m, b.m, rtol=1e-13, atol=1e-15)


def _reference(name, hp, theta, steps):
    """The scalar variants' equations (module docstring), with Python floats."""
    lr, eps = hp["lr"], hp.get("eps", 1e-8)
    b1, b2 = hp.get("betas", (0.0, hp.get("alpha")))
    psi = hp.get("momentum_decay", 4e-3)
    bias_correction = hp.get("bias_correction", name != "scalar_rmsprop")

    def mu(i):
        return b1 if psi is None else b1 * (1 - 0.5 * 0.96 ** (i * psi))

    th = [float(x) for x in theta]
    m = [0.0] * len(th)
    v = 0.0
    prod = 1.0
    for s in range(1, steps + 1):
        g = _grad(th)
        v = b2 * v + (1 - b2) * sum(x * x for x in g)
        d = lr / (math.sqrt(v / (1 - b2**s) if bias_correction else v) + eps)
        if name == "scalar_rmsprop":
            th = [x - d * gi for x, gi in zip(th, g)]
            continue
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        if name == "scalar_adam":
            th = [x - d * mi / (1 - b1**s) for x, mi in zip(th, m)]
        else:
            prod *= mu(s)
            c_m = mu(s + 1) / (1 - prod * mu(s + 1))
            c_g = (1 - mu(s)) / (1 - prod)
            th = [x - d * (c_m * mi + c_g * gi) for x, mi, gi in zip(th, m, g)]
    return th, m, v


REFERENCE_CASES = [("scalar_rmsprop", {"lr": 0.03, "alpha": 0.9, "eps": 1e-2}),
                   ("scalar_rmsprop", {"lr": 0.03, "alpha": 0.9, "bias_correction": True}),
                   ("scalar_adam", {"lr": 0.03, "betas": (0.8, 0.95), "eps": 1e-2}),
                   ("scalar_nadam", {"lr": 0.03, "betas": (0.8, 0.95), "eps": 1e-2}),
                   ("scalar_nadam", {"lr": 0.03, "betas": (0.8, 0.95), "momentum_decay": None})]


@pytest.mark.parametrize(("name", "hp"), REFERENCE_CASES)
def test_scalar_variants_follow_their_equations(name, hp):
    theta0 = torch.tensor([1.0, -0.5, 0.25, 2.0], dtype=torch.float64)
    traj = rodflow.iterate(rodflow.optimizer(name, **hp), _loss, theta0, 40)
    th, m, v = _reference(name, hp, theta0, 40)
    torch.testing.assert_close(traj.theta[-1], torch.tensor(th, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    if traj.m is not None:
        torch.testing.assert_close(traj.m[-1], torch.tensor(m, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert traj.v.shape == (41,)  # one number per step
    assert float(traj.v[-1]) == pytest.approx(v, rel=1e-12)


def test_the_norm_not_the_mean_sets_the_step():
    """One step from m = v = 0: v' = (1 − β2)‖g‖², and Adam's first step is η·g/(‖g‖ + ε)."""
    g = torch.tensor([3.0, 4.0, 0.0, 12.0], dtype=torch.float64)  # ‖g‖ = 13
    spec = rodflow.optimizer("scalar_adam", lr=0.1, betas=(0.9, 0.99), eps=1e-3)
    new = spec.step(spec.init(torch.zeros(4, dtype=torch.float64)), lambda th: g)
    assert new.v.ndim == 0
    assert float(new.v) == pytest.approx(0.01 * 169.0, rel=1e-14)
    torch.testing.assert_close(new.theta, -0.1 * g / (13.0 + 1e-3), rtol=1e-14, atol=0)
