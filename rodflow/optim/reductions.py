"""Reductions over lists of parameter-shaped tensors for the runtime optimizers, without host syncs.

FlowAdam's trigger statistics and VRAdam's velocity norm are sums over *all* parameters. They are
formed from per-tensor BLAS dot products (on one CPU thread about twice as fast as
``torch._foreach_norm``) and added up in float64 on the device, so no step reads a value back.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["dot", "fusable", "stack64"]


def dot(a: Tensor, b: Tensor) -> Tensor:
    """``⟨a, b⟩`` over all elements (a 0-d tensor); half-precision inputs are reduced in float32."""
    a, b = a.reshape(-1), b.reshape(-1)
    if a.dtype not in (torch.float32, torch.float64):
        a, b = a.float(), b.float()
    return torch.dot(a, b)


def stack64(parts: list[Tensor], device: torch.device) -> Tensor:
    """0-d tensors stacked into a float64 vector on ``device`` (moved first where they are elsewhere)."""
    if all(q.dtype == parts[0].dtype and q.device == device for q in parts):
        return torch.stack(parts).to(torch.float64)
    return torch.stack([q.to(device, torch.float64) for q in parts])


def fusable(params: list[Tensor]) -> bool:
    """Whether torch's fused Adam kernels accept these parameters."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
