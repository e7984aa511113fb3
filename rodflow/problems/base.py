"""The :class:`Problem` container shared by every problem constructor."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

__all__ = ["Problem"]


@dataclass(frozen=True)
class Problem:
    """A flat loss and where to start it.

    Attributes:
        loss_fn: ``θ ↦ L(θ)``, a scalar tensor, differentiable in θ (shape ``[dim]``).
        theta0: the initial point.
        info: problem-specific extras (the Hessian of a quadratic, the module and its
            parameter layout, the data, the seed, ...).
    """

    loss_fn: Callable[[Tensor], Tensor]
    theta0: Tensor
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.theta0.numel())

    def __call__(self, theta: Tensor) -> Tensor:
        return self.loss_fn(theta)
