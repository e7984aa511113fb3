"""Each spec's edge-of-stability threshold against the Jacobian of its exact step.

Linearise one ``step`` over (θ, m) at the minimiser of a quadratic with m = 0: there g = 0, so the
second-moment update does not depend on θ to first order and the preconditioner is held fixed.
With t large the bias corrections are 1. Then λ_max(P⁻¹H) = c·threshold gives a spectral radius
< 1 for c = 0.99 and > 1 for c = 1.01.
"""

from __future__ import annotations

import pytest
import torch

import rodflow

HP = {
    "gd": {"lr": 0.1},
    "heavy_ball": {"lr": 0.1, "momentum": 0.9},
    "nesterov": {"lr": 0.1, "momentum": 0.9},
    "scalar_rmsprop": {"lr": 0.01, "alpha": 0.9},
    "rmsprop": {"lr": 0.01, "alpha": 0.9},
    "scalar_adam": {"lr": 0.01, "betas": (0.9, 0.99)},
    "adam": {"lr": 0.01, "betas": (0.9, 0.99)},
    "scalar_nadam": {"lr": 0.01, "betas": (0.9, 0.99), "momentum_decay": None},
    "nadam": {"lr": 0.01, "betas": (0.9, 0.99)},  # μ-schedule: μ_t → β1 at large t
    "vradam": {"lr": 0.01, "betas": (0.9, 0.99), "beta3": 3.0},  # at m = 0 the velocity factor is 1
}
T = 10**6
D = 3


def _spectral_radius(name: str, factor: float) -> float:
    spec = rodflow.optimizer(name, **HP[name])
    target = factor * spec.threshold
    eig = torch.tensor([1.0, 0.4, 0.1], dtype=torch.float64)
    q = rodflow.problems.random_rotation(D, seed=7)
    if spec.beta2 is None:
        v = None
        lam = eig * target / spec.lr
    else:
        p = 3.0  # the post-update preconditioner, uniform: P = (√v' + ε)/η with v' = β2·v
        v_post = (p * spec.lr - spec.eps) ** 2
        v = torch.tensor(v_post / spec.beta2, dtype=torch.float64)
        if not spec.scalar:
            v = v.expand(D).clone()
        lam = eig * target * p
    h = (q * lam) @ q.T

    def step(x: torch.Tensor) -> torch.Tensor:
        theta = x[:D]
        m = x[D:] if spec.has_momentum else None
        new = spec.step(rodflow.PhaseState(theta=theta, m=m, v=v, t=T), lambda th: h @ th)
        if spec.has_momentum:
            return torch.cat([new.theta, new.m])
        return new.theta

    x0 = torch.zeros(2 * D if spec.has_momentum else D, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(step, x0)
    if spec.beta2 is not None:  # the preconditioner really is the one we set
        state = spec.step(rodflow.PhaseState(theta=x0[:D], m=x0[D:] if spec.has_momentum else None, v=v, t=T),
                          lambda th: h @ th)
        torch.testing.assert_close(spec.preconditioner(state), torch.full((D,), 3.0, dtype=torch.float64))
    return float(torch.linalg.eigvals(jac).abs().max())


@pytest.mark.parametrize("name", list(HP))
def test_threshold_is_where_the_linearised_step_loses_stability(name):
    assert _spectral_radius(name, 0.99) < 1.0
    assert _spectral_radius(name, 1.01) > 1.0


def test_closed_form_values():
    b = {"momentum": 0.9}
    assert rodflow.optimizer("gd").threshold == 2.0
    assert rodflow.optimizer("heavy_ball", **b).threshold == pytest.approx(3.8)
    assert rodflow.optimizer("nesterov", **b).threshold == pytest.approx(3.8 / 2.8)
    for name in ("rmsprop", "scalar_rmsprop"):
        assert rodflow.optimizer(name).threshold == 2.0
    for name in ("adam", "scalar_adam"):
        assert rodflow.optimizer(name).threshold == pytest.approx(38.0)
    for name in ("nadam", "scalar_nadam"):
        assert rodflow.optimizer(name).threshold == pytest.approx(3.8 / (0.1 * 2.8))  # 13.571...
