"""The torch.optim ↔ phase-space adapter on live optimizers: replaying the mapped spec's exact step from a state read off a
live optimizer reproduces the optimizer's next state (float64, one group), for every mapped class."""

from __future__ import annotations

import pytest
import torch

import rodflow
from rodflow import adapters

F64 = torch.float64

CASES = [
    ("gd", lambda p: torch.optim.SGD(p, lr=0.3)),
    ("heavy_ball", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.85)),
    ("nesterov", lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.85, nesterov=True)),
    ("adam", lambda p: torch.optim.Adam(p, lr=3e-3, betas=(0.8, 0.99), eps=1e-7)),
    ("adam", lambda p: torch.optim.AdamW(p, lr=3e-3, betas=(0.8, 0.99), weight_decay=0.0)),
    ("nadam", lambda p: torch.optim.NAdam(p, lr=3e-3, betas=(0.8, 0.99), momentum_decay=0.02)),
    ("rmsprop", lambda p: torch.optim.RMSprop(p, lr=3e-3, alpha=0.95, eps=1e-6)),
    ("adam", lambda p: rodflow.FlowAdam(p, lr=3e-3, betas=(0.8, 0.99), warmup=10**6, mode="B")),
    ("vradam", lambda p: rodflow.VRAdam(p, lr=3e-3, betas=(0.8, 0.99), beta3=2.0, alpha1=5.0)),
]


def _net_and_loss():
    x, y = rodflow.problems.digits(n=48, seed=0)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(64, 6), torch.nn.Tanh(), torch.nn.Linear(6, 10)).to(F64)
    prob = rodflow.problems.module_problem(net, x, rodflow.problems.one_hot(y, 10))
    return net, prob


def _step(net, opt, prob):
    def closure():
        opt.zero_grad()
        loss = prob.loss_fn(torch.cat([p.reshape(-1) for p in net.parameters()]))
        loss.backward()
        return loss

    opt.step(closure)


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(("name", "make"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_replaying_the_spec_reproduces_the_next_recorded_state(name, make):
    net, prob = _net_and_loss()
    opt = make(list(net.parameters()))
    spec = adapters.spec_of(opt)
    assert spec.name == name
    grad = rodflow.gradient(prob.loss_fn)
    for t in range(12):
        before = adapters.phase_state(opt, t=t)
        _step(net, opt, prob)
        after = adapters.phase_state(opt, t=t + 1)
        replay = spec.step(before, grad)
        update = torch.linalg.vector_norm(after.theta - before.theta)
        assert float(torch.linalg.vector_norm(replay.theta - after.theta) / update) < 1e-11, t
        for x, y in ((replay.m, after.m), (replay.v, after.v)):
            if x is not None:
                torch.testing.assert_close(x, y, rtol=1e-12, atol=1e-300)
        assert replay.t == after.t


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(("name", "make"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_load_state_is_the_inverse_of_state_of(name, make):
    net, prob = _net_and_loss()
    opt = make(list(net.parameters()))
    for _ in range(3):
        _step(net, opt, prob)
    state = adapters.phase_state(opt, t=3)
    net2, _ = _net_and_loss()
    opt2 = make(list(net2.parameters()))
    adapters.load_phase_state(opt2, state)
    back = adapters.phase_state(opt2, t=3)
    for a, b in zip(state.tensors().values(), back.tensors().values()):
        assert torch.equal(a, b)
    _step(net, opt, prob), _step(net2, opt2, prob)
    torch.testing.assert_close(adapters.phase_state(opt2, t=4).theta, adapters.phase_state(opt, t=4).theta, rtol=1e-13,
                               atol=0)
