r"""Gradient descent, heavy ball and Nesterov momentum, in the conventions of ``torch.optim.SGD``.

* GD: :math:`\theta' = \theta - \eta g`.
* Heavy ball (``SGD(momentum=β)``): :math:`m' = \beta m + g,\ \theta' = \theta - \eta m'`.
* Nesterov (``SGD(momentum=β, nesterov=True)``): :math:`m' = \beta m + g,\ \theta' = \theta - \eta(\beta m' + g)`.

The preconditioner is P = 1/η. Edge-of-stability thresholds on ηλ (a period-two ansatz
``θ_k ∝ (-1)^k`` on a quadratic with curvature λ, x = ηλ):

* GD: ``1 - x = -1`` gives **x = 2** (Cohen et al. 2021, arXiv 2103.00065).
* Heavy ball: the characteristic polynomial ``z² - (1 + β - x) z + β`` has the root ``z = -1``
  when **x = 2 + 2β**.
* Nesterov: ``m' = -m`` forces ``m' = g/(1+β)``, so ``θ' - θ = -η g (1+2β)/(1+β) = -2θ`` gives
  **x = (2 + 2β)/(1 + 2β)**.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..phase import PhaseState
from .spec import GradientDescentThreshold, OptimizerSpec, check_real

__all__ = ["GD", "Momentum"]


@dataclass(frozen=True, kw_only=True)
class GD(GradientDescentThreshold, OptimizerSpec):
    """Plain gradient descent, ``torch.optim.SGD(lr)``; threshold ηλ = 2.

    >>> import torch, rodflow
    >>> spec = rodflow.optimizer("gd", lr=0.1)
    >>> spec.step(spec.init(torch.tensor([1.0])), lambda th: 2 * th).theta
    tensor([0.8000])
    """

    lr: float = 1e-3

    def step_size(self, m: Tensor | None, v: Tensor | None, t: float) -> float:
        return self.lr

    def direction(self, m: Tensor | None, g: Tensor, t: float) -> Tensor:
        return g

    def preconditioner(self, state: PhaseState) -> Tensor:
        return torch.full_like(state.theta, 1.0 / self.lr)


@dataclass(frozen=True, kw_only=True)
class Momentum(OptimizerSpec):
    """Heavy ball (``nesterov=False``) or Nesterov momentum, as ``torch.optim.SGD(momentum=β)``."""

    lr: float = 1e-3
    momentum: float = 0.9
    nesterov: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "momentum", check_real("momentum", self.momentum, lo=0.0, hi=1.0))
        if not isinstance(self.nesterov, bool):
            raise TypeError(f"nesterov must be a bool, got {type(self.nesterov).__name__}")

    @property
    def beta(self) -> float:
        return self.momentum

    @property
    def has_momentum(self) -> bool:
        return True

    def step_size(self, m: Tensor | None, v: Tensor | None, t: float) -> float:
        return self.lr

    def direction(self, m: Tensor | None, g: Tensor, t: float) -> Tensor:
        assert m is not None
        return self.momentum * m + g if self.nesterov else m

    def preconditioner(self, state: PhaseState) -> Tensor:
        return torch.full_like(state.theta, 1.0 / self.lr)

    @property
    def threshold(self) -> float:
        b = self.momentum
        return (2.0 + 2.0 * b) / (1.0 + 2.0 * b) if self.nesterov else 2.0 + 2.0 * b

    @property
    def threshold_formula(self) -> str:
        return "(2 + 2β)/(1 + 2β)" if self.nesterov else "2 + 2β"
