"""The one integrator against scipy: solve_ivp and expm; statistics; failures."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.integrate
import scipy.linalg
import torch

import rodflow
from rodflow.integrate import IntegrationError


def _van_der_pol(t, y, mu=2.0):
    return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])


def test_nonlinear_field_agrees_with_solve_ivp():
    t = torch.linspace(0, 5, 11, dtype=torch.float64)
    y0 = torch.tensor([2.0, 0.0], dtype=torch.float64)
    res = rodflow.integrate(_van_der_pol, y0, t, rtol=1e-10, atol=1e-12)
    ref = scipy.integrate.solve_ivp(lambda s, y: _van_der_pol(s, torch.as_tensor(y)).numpy(), (0, 5), y0.numpy(),
                                    t_eval=t.numpy(), method="DOP853", rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(res.ys.numpy(), ref.y.T, rtol=1e-7, atol=1e-8)
    assert res.stats.nfe > 0 and res.stats.n_steps > 0


def test_linear_system_is_the_matrix_exponential():
    a = torch.tensor([[-0.5, 2.0, 0.0], [-2.0, -0.5, 0.1], [0.0, 0.3, -1.0]], dtype=torch.float64)
    y0 = torch.tensor([1.0, 0.0, -1.0], dtype=torch.float64)
    t = torch.tensor([0.0, 0.7, 3.0], dtype=torch.float64)
    res = rodflow.integrate(lambda s, y: a @ y, y0, t, rtol=1e-12, atol=1e-14)
    for i, ti in enumerate(t.tolist()):
        np.testing.assert_allclose(res.ys[i].numpy(), scipy.linalg.expm(a.numpy() * ti) @ y0.numpy(), atol=1e-10)


def test_tuple_states_and_fixed_step_counts():
    def field(t, y):
        x, v = y
        return v, -x

    y0 = (torch.tensor([1.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64))
    t = torch.linspace(0, 1, 11, dtype=torch.float64)
    res = rodflow.integrate(field, y0, t, method="euler")
    assert res.stats.n_steps == 10 and res.stats.nfe == 10
    res = rodflow.integrate(field, y0, t, method="rk4", options={"step_size": 0.05})
    assert res.stats.n_steps == 20 and res.stats.nfe == 80
    np.testing.assert_allclose(res.ys[0][-1].item(), np.cos(1.0), atol=1e-7)
    res = rodflow.integrate(field, y0, t, rtol=(1e-10, 1e-10), atol=(1e-12, 1e-12))
    np.testing.assert_allclose(res.ys[1][-1].item(), -np.sin(1.0), atol=1e-9)


def test_blow_up_raises_with_statistics():
    with pytest.raises(IntegrationError) as info:
        rodflow.integrate(lambda t, y: y**2, torch.tensor([1.0], dtype=torch.float64),
                          torch.tensor([0.0, 2.0], dtype=torch.float64))
    assert info.value.stats.nfe > 0


def test_clip_clamps_the_field():
    res = rodflow.integrate(lambda t, y: torch.full_like(y, 5.0), torch.zeros(2, dtype=torch.float64),
                            torch.tensor([0.0, 2.0], dtype=torch.float64), clip=1.0)
    torch.testing.assert_close(res.ys[-1], torch.full((2,), 2.0, dtype=torch.float64))


def test_bad_arguments():
    y0 = torch.zeros(2, dtype=torch.float64)
    t = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="method"):
        rodflow.integrate(lambda t, y: y, y0, t, method="rk45")
    with pytest.raises(ValueError, match="clip"):
        rodflow.integrate(lambda t, y: y, y0, t, clip=-1.0)
    with pytest.raises(ValueError, match="atol"):
        rodflow.integrate(lambda t, y: y, y0, t, atol=0.0)
    with pytest.raises(ValueError, match="t must"):
        rodflow.integrate(lambda t, y: y, y0, torch.tensor([0.0]))
    with pytest.raises(IntegrationError, match="y0"):
        rodflow.integrate(lambda t, y: y, torch.tensor([float("nan")]), t)
