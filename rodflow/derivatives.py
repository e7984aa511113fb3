"""Gradients of a flat loss ``loss_fn(θ) -> scalar`` by reverse-mode autodiff."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["LossFn", "gradient", "value_and_grad"]

LossFn = Callable[[Tensor], Tensor]


def value_and_grad(loss_fn: LossFn) -> Callable[[Tensor], tuple[Tensor, Tensor]]:
    """``θ ↦ (L(θ), ∇L(θ))``, both detached; works under ``torch.no_grad`` too.

    >>> import torch
    >>> vg = value_and_grad(lambda th: (th ** 2).sum())
    >>> vg(torch.tensor([1.0, 2.0]))
    (tensor(5.), tensor([2., 4.]))
    """

    def vg(theta: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            th = theta.detach().requires_grad_(True)
            loss = loss_fn(th)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError("loss_fn must return a scalar tensor")
            (g,) = torch.autograd.grad(loss, th)
        return loss.detach().reshape(()), g

    return vg


def gradient(loss_fn: LossFn) -> Callable[[Tensor], Tensor]:
    """``θ ↦ ∇L(θ)`` (detached)."""
    vg = value_and_grad(loss_fn)
    return lambda theta: vg(theta)[1]
