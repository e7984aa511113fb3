"""The delay-kernel analysis against closed forms: Lambert W for one lag, Hayes' stability bound."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import lambertw

from paper_repro.rodflow import kernels
from rodflow.flows.base import DELAY3


def test_three_lag_weights_are_the_package_kernel() -> None:
    np.testing.assert_allclose(kernels.kernel_weights([0.0, 0.5, 1.0]), [DELAY3[t] for t in (0.0, 0.5, 1.0)],
                               rtol=0, atol=1e-14)


@pytest.mark.parametrize("z", [1.2, 3.0, 0.5, 0.95j, 0.949 * np.exp(2.5j)])
def test_one_lag_rate_is_the_lambert_w_root(z: complex) -> None:
    """s = ε e^{−s/2} ⇔ (s/2) e^{s/2} = ε/2: s = 2 W₀(ε/2)."""
    rate = kernels.principal_rate(z, [0.5], [1.0])
    assert abs(rate - 2 * complex(lambertw((z - 1) / 2, 0))) < 1e-12


def test_one_lag_real_stability_bound_is_hayes() -> None:
    """ẋ = a x(t − ½) is stable exactly for −π < a < 0."""
    assert kernels.real_stability_bound([0.5], [1.0]) == pytest.approx(-math.pi, abs=1e-6)


def test_three_lag_bound_is_where_a_root_crosses() -> None:
    bound = kernels.real_stability_bound([0.0, 0.5, 1.0], kernels.kernel_weights([0.0, 0.5, 1.0]))
    assert -2.5 < bound < -2.2  # z ≈ −1.36, far short of the one lag's −2.14
    lags, w = [0.0, 0.5, 1.0], kernels.kernel_weights([0.0, 0.5, 1.0])

    def root(eps: float) -> complex:  # Newton from the crossing's neighbourhood (Im s ≈ 3)
        s = kernels.newton_root(eps, 3j, lags, w, iterations=200)
        assert s is not None and abs(s - eps * kernels.kernel(s, lags, w)) < 1e-10
        return s

    assert root(bound + 0.05).real < 0 < root(bound - 0.05).real


def test_weights_validate_order_and_freedom() -> None:
    with pytest.raises(ValueError, match="order"):
        kernels.kernel_weights([0.5], order=2)
    with pytest.raises(ValueError, match="free"):
        kernels.kernel_weights([0.25, 0.5, 0.75, 1.0], order=3)
    w = kernels.kernel_weights([0.25, 0.5, 0.75, 1.0], order=3, free=[0.7])
    tau = np.array([0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose([w.sum(), w @ tau, w @ tau ** 2], [1.0, 0.5, 1 / 6], atol=1e-13)


def test_best_second_order_kernel_keeps_its_bound_and_beats_the_one_lag_kernel() -> None:
    """The one-lag kernel is feasible for any bound above 1 − π (weights 0, 1, 0, 0 on lags ¼ … 1), so
    the optimum is no worse than it, and it respects the bound."""
    lags = [0.25, 0.5, 0.75, 1.0]
    w = kernels.best_second_order(-2.0, lags)
    np.testing.assert_allclose([w.sum(), w @ np.array(lags)], [1.0, 0.5], atol=1e-12)
    assert 1 + kernels.real_stability_bound(lags, w) <= -2.0 + 2e-3
    assert kernels.ringing_error(lags, w) <= kernels.ringing_error([0.5], [1.0]) + 1e-9


@pytest.mark.parametrize(("method", "threshold"), [("heavy_ball", 3.8), ("nesterov", 3.8 / 2.8)])
def test_momentum_multipliers_reach_minus_one_at_the_optimizers_threshold(method: str, threshold: float) -> None:
    """The thresholds 2(1 + β) and (2 + 2β)/(1 + 2β) at β = 0.9, the package's own spec."""
    import rodflow

    spec = rodflow.optimizer(method, lr=1.0, momentum=0.9)
    assert spec.threshold == pytest.approx(threshold, rel=1e-12)
    z = kernels.momentum_multipliers(method, threshold)
    assert np.min(np.abs(z + 1)) < 1e-7
    assert np.all(np.abs(kernels.momentum_multipliers(method, 0.99 * threshold)) < 1)
    errs = kernels.alternating_rate_errors(method, n=12)
    assert all(e3 < e1 for _, e1, e3 in errs)
