"""The runtime optimizers' reductions run in C on the CPU, or in torch ops where the C loop is off."""

from __future__ import annotations

import pytest
import torch

from rodflow.optim import native


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


@pytest.fixture(params=["native", "torch"])
def reduction_path(request):
    """Run the test once with the C reductions and once with torch's (as without a C compiler)."""
    if request.param == "native":
        if native.library() is None:
            pytest.fail(f"the C reductions are unavailable: {native.status()}")
        yield request.param
    else:
        with native.disabled():
            assert native.library() is None
            yield request.param
