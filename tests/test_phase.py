"""PhaseState and flat parameter vectors."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import rodflow


def test_flatten_unflatten_round_trip():
    net = rodflow.problems.mlp([5, 4, 3], seed=0)
    params = dict(net.named_parameters())
    theta = rodflow.flatten(params)
    assert theta.numel() == sum(p.numel() for p in params.values())
    back = rodflow.unflatten(theta, params)
    for name, p in params.items():
        assert torch.equal(back[name], p.detach())
    with pytest.raises(ValueError, match="theta"):
        rodflow.unflatten(theta[:-1], params)


def test_phase_state_is_frozen_and_moves():
    s = rodflow.PhaseState(theta=torch.ones(3), m=torch.zeros(3), v=torch.tensor(2.0), t=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.t = 5  # type: ignore[misc]
    d = s.to(torch.float64)
    assert d.theta.dtype == d.m.dtype == d.v.dtype == torch.float64 and d.t == 4
    assert set(s.tensors()) == {"theta", "m", "v"}
    assert rodflow.PhaseState(theta=torch.ones(2)).to(torch.float16).m is None


def test_unflatten_gives_views_that_carry_gradients():
    like = {"w": torch.zeros(2, 3), "b": torch.zeros(3)}
    theta = torch.arange(9.0, requires_grad=True)
    parts = rodflow.unflatten(theta, like)
    assert parts["w"].shape == (2, 3) and parts["b"].tolist() == [6.0, 7.0, 8.0]
    (parts["w"].sum() * 2 + parts["b"].sum()).backward()
    assert theta.grad.tolist() == [2.0] * 6 + [1.0] * 3
    assert torch.equal(rodflow.flatten([like["w"], torch.ones(3)]), torch.tensor([0.0] * 6 + [1.0] * 3))
    with pytest.raises(ValueError, match="no tensors"):
        rodflow.flatten([])
    with pytest.raises(ValueError, match="theta"):
        rodflow.unflatten(theta.detach().reshape(3, 3), like)
