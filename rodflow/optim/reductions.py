"""Reductions over lists of parameter-shaped tensors for the runtime optimizers, without host syncs.

FlowAdam's trigger statistics and VRAdam's velocity norm are sums over *all* parameters. On the
CPU they run in the one-pass C loops of :mod:`rodflow.optim.native` (each array read once,
float64 sums); elsewhere (CUDA, half precision, non-contiguous tensors, or no C compiler) from
per-tensor dot products added up in float64 on the device. Either way no step reads a value back.
"""

from __future__ import annotations

import torch
from torch import Tensor

from . import native

__all__ = ["change_terms", "dot", "fusable", "sq_norms", "stack64", "velocity_terms"]

#: Elements per slice of the torch fallback of :func:`change_terms` on the CPU (512 KiB of float32):
#: a slice of g and of p stays in cache across the four operations on it.
_CHUNK = 1 << 17


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


def velocity_terms(ms: list[Tensor], gs: list[Tensor], device: torch.device) -> Tensor:
    """``[⟨m_i, g_i⟩, ‖g_i‖²]`` per tensor, shape ``[n, 2]``, float64 on ``device``."""
    out = native.dot2(ms, gs)
    if out is not None:
        return out
    mg = stack64([dot(m, g) for m, g in zip(ms, gs)], device)
    gg = stack64([dot(g, g) for g in gs], device)
    return torch.stack([mg, gg], dim=1)


def sq_norms(gs: list[Tensor], device: torch.device) -> Tensor:
    """``‖g_i‖²`` per tensor, shape ``[n]``, float64 on ``device``."""
    out = native.dot2(gs, gs)
    if out is not None:
        return out[:, 1]
    return stack64([dot(g, g) for g in gs], device)


def change_terms(gs: list[Tensor], ps: list[Tensor], device: torch.device) -> Tensor:
    """``[‖g_i‖², ‖g_i − p_i‖²]`` per tensor, shape ``[n, 2]``, float64 on ``device``; then ``p_i ← g_i``.

    The difference is formed elementwise (no cancellation, unlike ``‖g‖² − 2⟨g, p⟩ + ‖p‖²`` in
    float32). Without the C loop, a CPU tensor is taken in slices of ``_CHUNK`` elements, each
    subtracted, reduced twice and overwritten while it is in cache.
    """
    out = native.change(gs, ps)
    if out is not None:
        return out
    rows = []
    for g, p in zip(gs, ps):
        if p.is_contiguous() and g.device.type == "cpu" and g.numel() > _CHUNK:
            pieces = zip(g.reshape(-1).split(_CHUNK), p.view(-1).split(_CHUNK))
        else:  # one piece: off the CPU, a small tensor, or no flat view of p (e.g. channels_last)
            pieces = zip((g,), (p,))
        parts_n, parts_c = [], []
        for gc, pc in pieces:
            pc.sub_(gc)  # p ← p − g, the negated change
            parts_c.append(dot(pc, pc))
            parts_n.append(dot(gc, gc))
            pc.copy_(gc)
        rows.append(torch.stack([stack64(parts_n, device).sum(), stack64(parts_c, device).sum()]))
    return torch.stack(rows)


def fusable(params: list[Tensor]) -> bool:
    """Whether torch's fused Adam kernels accept these parameters."""
    return all(p.is_floating_point() and (p.is_cpu or p.is_cuda) for p in params)
