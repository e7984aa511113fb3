"""Shared helpers of the runtime optimizers' tests: a tiny seeded net, its data and a closure."""

from __future__ import annotations

import torch


def tiny_net(inputs: int, hidden: int, outputs: int, dtype: torch.dtype = torch.float64, seed: int = 0):
    """A tanh MLP ``inputs → hidden → outputs`` with seeded weights."""
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.Tanh(),
                               torch.nn.Linear(hidden, outputs)).to(dtype)


def closure_for(net, opt, x, y):
    """A closure for ``opt.step``: zero the gradients, the mean squared error of ``net`` on (x, y), backward."""
    def closure():
        opt.zero_grad()
        loss = (net(x) - y).square().mean()
        loss.backward()
        return loss

    return closure


def tiny_data(inputs: int, outputs: int, n: int, dtype: torch.dtype = torch.float64):
    """``n`` seeded Gaussian regression pairs ``(x, y)``."""
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, inputs, generator=g, dtype=dtype), torch.randn(n, outputs, generator=g, dtype=dtype)
