"""Each spec's edge-of-stability threshold against the Jacobian of its exact step.

Linearise one ``step`` over (θ, m) at the minimiser of a quadratic with m = 0: there g = 0, so the
second-moment update does not depend on θ to first order (dv'/dθ = 2(1 − β2)·g·H = 0) and the
preconditioner is held fixed. The test reads the post-step preconditioner P from
``spec.preconditioner`` (non-uniform for the per-coordinate methods) and builds
H = P^{1/2} Q Λ Qᵀ P^{1/2}, so that λ_max(P⁻¹H) = λ_max(P^{-1/2} H P^{-1/2}) = c·threshold. The
spectral radius of the Jacobian must be < 1 for c = 0.99 and > 1 for c = 1.01. This checks at once
the closed form of the threshold and that the reported P is the one the step really applies.

With t large every bias correction is 1 and NAdam's μ-schedule has reached β1. For the methods
whose one-step map is preconditioned heavy ball at any t (GD, momentum, RMSProp, Adam, VRAdam),
the test also runs at t = 3, where the bias corrections are far from 1: this checks the
(1 − β1ᵗ) and (1 − β2ᵗ) factors of P. (NAdam's direction mixes m' and g with t-dependent weights,
so its threshold is only the large-t value.)
"""

from __future__ import annotations

import pytest
import torch

import rodflow

HP = rodflow.problems.hyperparameters("quadratic", "unit")
LARGE_T = 10**6
D = 3
EIG = torch.tensor([1.0, 0.4, 0.1], dtype=torch.float64)  # spectrum of P⁻¹H, scaled by c·threshold


def _spectral_radius(spec, factor: float, t: int) -> float:
    theta0 = torch.zeros(D, dtype=torch.float64)
    m0 = torch.zeros(D, dtype=torch.float64) if spec.has_momentum else None
    v = None
    if spec.beta2 is not None:  # √v' of 1e-2, 3e-3, 1e-3: a spread of P, and ε = 1e-3 is not negligible
        v = torch.tensor([1e-4, 1e-5, 1e-6], dtype=torch.float64) / spec.beta2
        v = v.sum() if spec.scalar else v
    state = rodflow.PhaseState(theta=theta0, m=m0, v=v, t=t)
    p = spec.preconditioner(spec.step(state, torch.zeros_like))  # [D], the post-step P
    q = rodflow.problems.random_rotation(D, seed=7)
    s = p.sqrt()
    h = s[:, None] * ((q * (EIG * factor * spec.threshold)) @ q.T) * s[None, :]
    top = torch.linalg.eigvals(torch.linalg.solve(torch.diag(p), h)).real.max()
    assert float(top) == pytest.approx(factor * spec.threshold, rel=1e-10)

    def step(x: torch.Tensor) -> torch.Tensor:
        m = x[D:] if spec.has_momentum else None
        new = spec.step(rodflow.PhaseState(theta=x[:D], m=m, v=v, t=t), lambda th: h @ th)
        return torch.cat([new.theta, new.m]) if spec.has_momentum else new.theta

    x0 = torch.zeros(2 * D if spec.has_momentum else D, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(step, x0)
    return float(torch.linalg.eigvals(jac).abs().max())


def _check(spec, t):
    assert _spectral_radius(spec, 0.99, t) < 1.0
    assert _spectral_radius(spec, 1.01, t) > 1.0


@pytest.mark.parametrize("name", list(HP))
def test_threshold_is_where_the_linearised_step_loses_stability(name):
    _check(rodflow.optimizer(name, **HP[name]), LARGE_T)


@pytest.mark.parametrize(("name", "extra"), [("gd", {}), ("heavy_ball", {}), ("nesterov", {}),
                                             ("rmsprop", {}), ("rmsprop", {"bias_correction": True}),
                                             ("scalar_rmsprop", {"bias_correction": True}),
                                             ("adam", {}), ("scalar_adam", {}), ("vradam", {})])
def test_threshold_holds_at_small_t_with_the_bias_corrected_preconditioner(name, extra):
    _check(rodflow.optimizer(name, **HP[name], **extra), 3)


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.99])
@pytest.mark.parametrize("name", ["heavy_ball", "nesterov", "adam", "scalar_nadam", "nadam"])
def test_threshold_across_beta(name, beta):
    if name in ("heavy_ball", "nesterov"):
        hp = {**HP[name], "momentum": beta}
    else:
        hp = {**HP[name], "betas": (beta, 0.99)}
        if name != "adam":
            hp["momentum_decay"] = None  # the closed form is the constant-β1 one
    _check(rodflow.optimizer(name, **hp), LARGE_T)


def test_closed_form_values():
    b = {"momentum": 0.9}
    assert rodflow.optimizer("gd").threshold == 2.0
    assert rodflow.optimizer("heavy_ball", **b).threshold == pytest.approx(3.8, rel=1e-14)
    assert rodflow.optimizer("nesterov", **b).threshold == pytest.approx(1.3571428571428572, rel=1e-14)
    for name in ("rmsprop", "scalar_rmsprop"):
        assert rodflow.optimizer(name).threshold == 2.0
        assert rodflow.optimizer(name, bias_correction=True).threshold == 2.0
    for name in ("adam", "scalar_adam"):
        assert rodflow.optimizer(name, betas=(0.9, 0.999)).threshold == pytest.approx(38.0, rel=1e-14)
    for name in ("nadam", "scalar_nadam"):
        for psi in (4e-3, None):
            spec = rodflow.optimizer(name, betas=(0.9, 0.999), momentum_decay=psi)
            assert spec.threshold == pytest.approx(13.571428571428571, rel=1e-14)  # 3.8 / (0.1 · 2.8)


def test_preconditioner_formulas():
    """P = 1/η; (√v̂ + ε)/η; (1 − β1ᵗ)(√v̂ + ε)/η, written out for one state at t = 2."""
    theta = torch.zeros(2, dtype=torch.float64)
    v = torch.tensor([4e-4, 9e-6], dtype=torch.float64)
    m = torch.zeros(2, dtype=torch.float64)
    state = rodflow.PhaseState(theta=theta, m=m, v=v, t=2)
    torch.testing.assert_close(rodflow.optimizer("heavy_ball", lr=0.2).preconditioner(state),
                               torch.full((2,), 5.0, dtype=torch.float64), rtol=1e-15, atol=0)
    rms = rodflow.optimizer("rmsprop", lr=0.01, alpha=0.9, eps=1e-3)
    torch.testing.assert_close(rms.preconditioner(state), (v.sqrt() + 1e-3) / 0.01, rtol=1e-14, atol=0)
    rms_bc = rodflow.optimizer("rmsprop", lr=0.01, alpha=0.9, eps=1e-3, bias_correction=True)
    torch.testing.assert_close(rms_bc.preconditioner(state), ((v / 0.19).sqrt() + 1e-3) / 0.01, rtol=1e-14, atol=0)
    adam = rodflow.optimizer("adam", lr=0.01, betas=(0.8, 0.9), eps=1e-3)
    torch.testing.assert_close(adam.preconditioner(state), 0.36 * ((v / 0.19).sqrt() + 1e-3) / 0.01,
                               rtol=1e-14, atol=0)
    sc = rodflow.optimizer("scalar_adam", lr=0.01, betas=(0.8, 0.9), eps=1e-3)
    sstate = rodflow.PhaseState(theta=theta, m=m, v=v.sum(), t=2)
    torch.testing.assert_close(sc.preconditioner(sstate), 0.36 * ((v.sum() / 0.19).sqrt() + 1e-3).expand(2) / 0.01,
                               rtol=1e-14, atol=0)
    with pytest.raises(ValueError, match="t"):
        adam.preconditioner(rodflow.PhaseState(theta=theta, m=m, v=v, t=0))
