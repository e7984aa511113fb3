"""The VRAdam spec: its pieces, its limits (Adam at β3 = 0 and at the cap), P, the threshold, validation."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import rodflow
from rodflow.optimizers.vradam import VRAdamSpec

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


def _run(spec, problem, steps):
    return rodflow.iterate(spec, problem.loss_fn, problem.theta0, steps)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


def test_registered_final_and_frozen():
    spec = rodflow.optimizer("vradam")
    assert "vradam" in rodflow.OPTIMIZERS
    assert type(spec) is VRAdamSpec and spec.name == "vradam"
    assert spec.hyperparameters() == {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "beta3": 1.0, "alpha1": 10.0,
                                      "power": 2.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.beta3 = 2.0  # type: ignore[misc]
    assert (spec.beta, spec.moment_coef, spec.beta2, spec.has_momentum, spec.scalar) == (0.9, 1 - 0.9, 0.999, True, False)


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_effective_lr_formula_and_cap(power):
    spec = rodflow.optimizer("vradam", lr=0.2, beta3=0.5, alpha1=4.0, power=power)
    m = torch.tensor([0.3, -0.4, 0.0], dtype=F64)  # ‖m‖ = 0.5
    assert float(spec.effective_lr(m)) == pytest.approx(0.2 / (1 + 0.5 * 0.5**power), rel=1e-15)
    assert float(spec.effective_lr(100 * m)) == pytest.approx(0.2 / 5.0, rel=1e-15)  # capped at lr/(1 + α1)
    assert float(spec.effective_lr(torch.zeros(3, dtype=F64))) == 0.2


def test_one_step_by_hand():
    spec = rodflow.optimizer("vradam", lr=0.1, betas=(0.8, 0.9), eps=1e-3, beta3=2.0, alpha1=10.0)
    theta, g = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([0.5, 1.0], dtype=F64)
    new = spec.step(spec.init(theta), lambda th: g)
    m, v = 0.2 * g, 0.1 * g * g
    eta = 0.1 / (1 + 2.0 * float(m.square().sum()))
    expected = theta - eta / ((v / 0.1).sqrt() + 1e-3) * m / 0.2
    torch.testing.assert_close(new.theta, expected, rtol=1e-15, atol=0)
    torch.testing.assert_close(new.m, m)
    torch.testing.assert_close(new.v, v)


def test_beta3_zero_is_the_adam_spec(small_mlp):
    hp = {"lr": 3e-3, "betas": (0.85, 0.99), "eps": 1e-6}
    ours = _run(rodflow.optimizer("vradam", beta3=0.0, **hp), small_mlp, 150)
    adam = _run(rodflow.optimizer("adam", **hp), small_mlp, 150)
    assert _rel(ours.theta, adam.theta) < 1e-13


def test_saturated_cap_is_the_adam_spec_at_lr_over_one_plus_alpha1(small_mlp):
    ours = _run(rodflow.optimizer("vradam", lr=3e-2, beta3=1e12, alpha1=9.0), small_mlp, 150)
    adam = _run(rodflow.optimizer("adam", lr=3e-3), small_mlp, 150)
    assert _rel(ours.theta, adam.theta) < 1e-12


def test_step_is_minus_p_inverse_times_m(small_mlp):
    """P = (1 − β1ᵗ)(√v̂ + ε)/η(m_t) is the preconditioner that the step applies: θ_t − θ_{t−1} = −P⁻¹ m_t."""
    spec = rodflow.optimizer("vradam", lr=1e-2, betas=(0.9, 0.95), beta3=50.0, alpha1=5.0)
    traj = _run(spec, small_mlp, 30)
    factors = []
    for k in (1, 2, 7, 30):
        s = traj.state(k)
        P = spec.preconditioner(s)
        torch.testing.assert_close(traj.theta[k] - traj.theta[k - 1], -s.m / P, rtol=1e-12, atol=1e-15)
        adam_p = rodflow.optimizer("adam", lr=spec.lr, betas=spec.betas).preconditioner(s)
        factors.append(float(spec.lr / spec.effective_lr(s.m)))
        torch.testing.assert_close(P, adam_p * factors[-1], rtol=1e-13, atol=0)
    assert max(factors) > 1.5  # the velocity factor was active
    with pytest.raises(ValueError, match="t ≥ 1"):
        spec.preconditioner(spec.init(small_mlp.theta0))


def test_threshold_is_adams():
    for b in (0.0, 0.5, 0.9, 0.99):
        spec = rodflow.optimizer("vradam", betas=(b, 0.999))
        assert spec.threshold == pytest.approx((2 + 2 * b) / (1 - b))
        assert spec.threshold == rodflow.optimizer("adam", betas=(b, 0.999)).threshold


def test_linearization_at_a_minimum_is_adams():
    """At m = 0 the factor is 1 with zero derivative (p = 2): the one-step Jacobian equals Adam's."""
    H = torch.diag(torch.tensor([30.0, 2.0], dtype=F64))
    hp = {"lr": 0.5, "betas": (0.9, 0.99), "eps": 1.0}

    def jac(spec):
        base = spec.init(torch.zeros(2, dtype=F64))
        base = dataclasses.replace(base, v=torch.full((2,), 0.3, dtype=F64), t=10**6)

        def f(z):
            s = dataclasses.replace(base, theta=z[:2], m=z[2:])
            new = spec.update(s, H @ s.theta)
            return torch.cat([new.theta, new.m])

        return torch.autograd.functional.jacobian(f, torch.zeros(4, dtype=F64))

    torch.testing.assert_close(jac(rodflow.optimizer("vradam", beta3=5.0, **hp)), jac(rodflow.optimizer("adam", **hp)))


def test_velocity_brake_bounds_an_oscillation_that_adam_amplifies():
    """A quadratic above Adam's threshold (ε dominant, so P ≈ ε/lr): Adam's oscillation grows until
    √v̂ catches up with ε; VRAdam's is stopped early by ‖m‖, far below that amplitude."""
    h, lr, eps = 1.0, 6000.0, 100.0  # h·lr/ε = 60 > 38, and < 38·(1 + α1)
    peaks = {}
    for name, extra in (("adam", {}), ("vradam", {"beta3": 1.0, "alpha1": 10.0})):
        spec = rodflow.optimizer(name, lr=lr, eps=eps, **extra)
        s = spec.init(torch.tensor([1e-3], dtype=F64))
        peak = 0.0
        for _ in range(400):
            s = spec.step(s, lambda th: h * th)
            peak = max(peak, float(s.theta.abs().max()))
        peaks[name] = peak
    assert peaks["adam"] > 1000.0
    assert peaks["vradam"] < 0.1 * peaks["adam"]


@pytest.mark.parametrize(("kw", "name"), [({"lr": 0.0}, "lr"), ({"beta3": -1.0}, "beta3"), ({"alpha1": -1.0}, "alpha1"),
                                          ({"power": 0.0}, "power"), ({"eps": 0.0}, "eps"),
                                          ({"betas": (0.9, 1.0)}, r"betas\[1\]"), ({"beta3": math.nan}, "beta3"),
                                          ({"alpha1": math.inf}, "alpha1")])
def test_invalid_hyperparameters_name_the_argument(kw, name):
    with pytest.raises(ValueError, match=name):
        rodflow.optimizer("vradam", **kw)
    with pytest.raises(TypeError, match="weight_decay"):
        rodflow.optimizer("vradam", weight_decay=0.1)


def test_the_spec_and_the_torch_optimizer_have_distinct_names():
    import rodflow.optimizers.vradam as module

    assert rodflow.VRAdam is not VRAdamSpec and issubclass(rodflow.VRAdam, torch.optim.Optimizer)
    with pytest.warns(DeprecationWarning, match="VRAdamSpec"):
        assert module.VRAdam is VRAdamSpec
