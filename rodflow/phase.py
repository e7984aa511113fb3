"""Phase space of an optimizer: the state (θ, m, v, t) and flat parameter vectors.

The simulator works on flat parameter vectors θ ∈ ℝ^d. :func:`flatten` and
:func:`unflatten` move between a module's parameters and such a vector.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

__all__ = ["PhaseState", "flatten", "unflatten"]


@dataclass(frozen=True, slots=True)
class PhaseState:
    """The state of one optimizer after ``t`` steps.

    Attributes:
        theta: flat parameter vector, shape ``[d]``.
        m: first moment (momentum buffer), shape ``[d]``, or ``None`` for methods without one.
        v: second moment: shape ``[d]`` for per-coordinate methods, a 0-d tensor for the
            scalar variants (which track the squared gradient norm), or ``None``.
        t: number of steps taken so far (``0`` for the initial state).
    """

    theta: Tensor
    m: Tensor | None = None
    v: Tensor | None = None
    t: int = 0

    def to(self, *args: Any, **kwargs: Any) -> PhaseState:
        """Move every tensor, like :meth:`torch.Tensor.to` (dtype and/or device)."""

        def move(x: Tensor | None) -> Tensor | None:
            return None if x is None else x.to(*args, **kwargs)

        theta = self.theta.to(*args, **kwargs)
        return replace(self, theta=theta, m=move(self.m), v=move(self.v))

    @property
    def dtype(self) -> torch.dtype:
        return self.theta.dtype

    @property
    def device(self) -> torch.device:
        return self.theta.device

    def tensors(self) -> dict[str, Tensor]:
        """The non-``None`` tensors of the state, by name."""
        out = {"theta": self.theta}
        if self.m is not None:
            out["m"] = self.m
        if self.v is not None:
            out["v"] = self.v
        return out


def flatten(tensors: Iterable[Tensor] | Mapping[str, Tensor]) -> Tensor:
    """Concatenate tensors (or a module's ``named_parameters`` dict) into one flat vector."""
    if isinstance(tensors, Mapping):
        tensors = tensors.values()
    parts = [t.detach().reshape(-1) for t in tensors]
    if not parts:
        raise ValueError("flatten: no tensors given")
    return torch.cat(parts)


def unflatten(theta: Tensor, like: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Split a flat vector into tensors shaped like the values of ``like`` (views, keep autograd).

    ``unflatten(flatten(p), p)`` returns tensors equal to ``p``.
    """
    sizes = [t.numel() for t in like.values()]
    total = sum(sizes)
    if theta.ndim != 1 or theta.numel() != total:
        raise ValueError(f"theta: expected a flat vector of {total} entries, got shape {tuple(theta.shape)}")
    chunks = torch.split(theta, sizes)
    return {name: c.view_as(t) for (name, t), c in zip(like.items(), chunks)}
