"""Each spec's iterates equal its torch.optim twin's, float64, 200 steps, ≤ 1e-8 relative.

One table of configurations drives the test (non-default hyperparameters, so that a swapped
convention would show). The torch side optimizes one flat ``nn.Parameter`` with the same loss.
"""

from __future__ import annotations

import pytest
import torch

import rodflow

# (rodflow name, rodflow hyperparameters, torch class, torch keyword arguments)
TWINS = [
    ("gd", {"lr": 0.3}, torch.optim.SGD, {"lr": 0.3}),
    ("heavy_ball", {"lr": 0.1, "momentum": 0.85}, torch.optim.SGD, {"lr": 0.1, "momentum": 0.85}),
    ("nesterov", {"lr": 0.1, "momentum": 0.85}, torch.optim.SGD, {"lr": 0.1, "momentum": 0.85, "nesterov": True}),
    ("rmsprop", {"lr": 3e-3, "alpha": 0.95, "eps": 1e-6}, torch.optim.RMSprop,
     {"lr": 3e-3, "alpha": 0.95, "eps": 1e-6}),
    ("adam", {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-7}, torch.optim.Adam,
     {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-7}),
    # (NAdam at lr 3e-3 reaches its edge of stability here after ~140 steps, where rounding
    # differences grow ×10 every few steps: compare below it)
    ("nadam", {"lr": 1e-3, "betas": (0.8, 0.99), "eps": 1e-7, "momentum_decay": 4e-3}, torch.optim.NAdam,
     {"lr": 1e-3, "betas": (0.8, 0.99), "eps": 1e-7, "momentum_decay": 4e-3}),
    ("nadam", {"lr": 1e-3, "betas": (0.8, 0.99), "momentum_decay": 0.02}, torch.optim.NAdam,
     {"lr": 1e-3, "betas": (0.8, 0.99), "momentum_decay": 0.02}),
    # the constant-β1 form is torch's NAdam in the limit momentum_decay → ∞
    ("nadam", {"lr": 3e-3, "betas": (0.8, 0.99), "momentum_decay": None}, torch.optim.NAdam,
     {"lr": 3e-3, "betas": (0.8, 0.99), "momentum_decay": 1e9}),
]


def _torch_iterates(cls, kwargs, loss_fn, theta0, steps):
    p = torch.nn.Parameter(theta0.clone())
    opt = cls([p], **kwargs)
    out = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
        out.append(p.detach().clone())
    return torch.stack(out)


@pytest.mark.parametrize(("name", "hp", "cls", "kwargs"), TWINS,
                         ids=[f"{t[0]}-{t[2].__name__}-{i}" for i, t in enumerate(TWINS)])
def test_iterates_equal_torch(name, hp, cls, kwargs, small_mlp):
    # torch's NAdam keeps its μ-product in the default scalar dtype: float64 here, else the
    # comparison would measure float32 rounding of the bias correction
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ref = _torch_iterates(cls, kwargs, small_mlp.loss_fn, small_mlp.theta0, 200)
        ours = rodflow.iterate(rodflow.optimizer(name, **hp), small_mlp.loss_fn, small_mlp.theta0, 200).theta
    finally:
        torch.set_default_dtype(old)
    rel = torch.linalg.vector_norm(ours - ref, dim=1) / torch.linalg.vector_norm(ref, dim=1)
    assert float(rel.max()) <= 1e-8, float(rel.max())
    moved = torch.linalg.vector_norm(ref[-1] - ref[0]) / torch.linalg.vector_norm(ref[0])
    assert float(moved) > 1e-3  # the run really went somewhere


def test_a_wrong_convention_would_show(small_mlp):
    """Sanity of the tolerance: RMSProp with bias correction is *not* torch's RMSprop."""
    ref = _torch_iterates(torch.optim.RMSprop, {"lr": 3e-3, "alpha": 0.95}, small_mlp.loss_fn, small_mlp.theta0, 20)
    ours = rodflow.iterate(rodflow.optimizer("rmsprop", lr=3e-3, alpha=0.95, bias_correction=True),
                           small_mlp.loss_fn, small_mlp.theta0, 20).theta
    rel = torch.linalg.vector_norm(ours - ref, dim=1) / torch.linalg.vector_norm(ref, dim=1)
    assert float(rel.max()) > 1e-4
