"""FlowAdam's default preset is a drop-in for torch.optim.Adam on an ordinary classifier (the full-batch
preset, mode B, is not: it fires on most steps and ends behind Adam)."""

from __future__ import annotations

import torch
from torch import nn

import rodflow


def _train(make, steps: int = 60) -> tuple[torch.Tensor, torch.optim.Optimizer]:
    x, y = rodflow.problems.digits(n=256, seed=0, dtype=torch.float32)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    opt = make(net.parameters())

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        return loss

    for _ in range(steps):
        opt.step(closure)
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()]), opt


def test_default_flowadam_follows_adam_on_a_classifier():
    ref, _ = _train(lambda p: torch.optim.Adam(p, lr=1e-2, fused=True))
    got, opt = _train(lambda p: rodflow.FlowAdam(p, lr=1e-2))
    assert opt.ode_triggers == 0 and opt.grad_evals == 60
    torch.testing.assert_close(got, ref, rtol=0, atol=0)  # Adam mode runs torch's fused Adam kernel


def test_full_batch_preset_fires_on_most_steps_of_a_classifier():
    _, opt = _train(lambda p: rodflow.FlowAdam(p, lr=1e-2, mode="B"))
    assert opt.ode_triggers > 25  # of the 49 steps after the warm-up: why it is not the default
