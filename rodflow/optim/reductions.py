"""Global reductions over a list of parameter-shaped tensors, without copies or host syncs.

The runtime optimizers need norms and inner products over *all* parameters (FlowAdam's trigger
statistics, VRAdam's velocity norm). These read the tensors once (foreach norms, per-tensor dots)
and return a float64 0-d tensor on the first tensor's device.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["fusable", "total_dot", "total_sq_norm"]


def _sum(parts: list[Tensor]) -> Tensor:
    dev = parts[0].device
    return torch.stack([x.to(dev, torch.float64) for x in parts]).sum()


def total_sq_norm(tensors: list[Tensor]) -> Tensor:
    """``Σ_i ‖x_i‖²``."""
    return _sum([n.to(torch.float64).square() for n in torch._foreach_norm(tensors)])


def total_dot(a: list[Tensor], b: list[Tensor]) -> Tensor:
    """``Σ_i ⟨a_i, b_i⟩``."""
    return _sum([torch.dot(x.reshape(-1), y.reshape(-1)) for x, y in zip(a, b)])


def fusable(params: list[Tensor]) -> bool:
    """Whether torch's fused Adam kernels accept these parameters."""
    return all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
