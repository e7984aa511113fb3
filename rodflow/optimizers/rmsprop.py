r"""RMSProp, per-coordinate (``torch.optim.RMSprop``) and scalar.

.. math::

    v' = \alpha v + (1-\alpha)\,\mathrm{sq}(g),\qquad
    \theta' = \theta - \frac{\eta}{\sqrt{\hat v'} + \epsilon}\, g,\qquad
    \hat v' = v' / (1 - \alpha^{t+1})\ \text{if bias\_correction else } v'

with ``sq(g) = g ⊙ g`` (``rmsprop``, ε outside the square root as in torch) or ``sq(g) = ‖g‖²``
(``scalar_rmsprop``: one step size for every coordinate, set by the squared gradient *norm*, not
its mean). Preconditioner P = (√v̂ + ε)/η; threshold λ_max(P⁻¹H) = 2, as for GD: with P held
fixed the map is preconditioned GD.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from ..phase import PhaseState
from .spec import GradientDescentThreshold, OptimizerSpec, check_real

__all__ = ["RMSProp", "adaptive_denominator"]


def adaptive_denominator(v: Tensor, t: float, beta2: float, eps: float, bias_correction: bool) -> Tensor:
    """``√v̂ + ε`` with ``v̂ = v / (1 - β₂ᵗ)`` when ``bias_correction`` (torch's ε convention)."""
    if bias_correction:
        return (v / (1.0 - beta2**t)).sqrt() + eps
    return v.sqrt() + eps


@dataclass(frozen=True, kw_only=True)
class RMSProp(GradientDescentThreshold, OptimizerSpec):
    """RMSProp; ``scalar=True`` gives the scalar variant. Hyperparameters as ``torch.optim.RMSprop``."""

    lr: float = 1e-2
    alpha: float = 0.99
    eps: float = 1e-8
    bias_correction: bool = False
    scalar: bool = False  # type: ignore[assignment]

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "alpha", check_real("alpha", self.alpha, lo=0.0, hi=1.0))
        object.__setattr__(self, "eps", check_real("eps", self.eps, lo=0.0, lo_open=True))
        for flag in ("bias_correction", "scalar"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {type(getattr(self, flag)).__name__}")

    @property
    def beta2(self) -> float:
        return self.alpha

    def step_size(self, m: Tensor | None, v: Tensor | None, t: float) -> Tensor:
        assert v is not None
        return self.lr / adaptive_denominator(v, t, self.alpha, self.eps, self.bias_correction)

    def direction(self, m: Tensor | None, g: Tensor, t: float) -> Tensor:
        return g

    def preconditioner(self, state: PhaseState) -> Tensor:
        self._require_started(state)
        assert state.v is not None
        d = adaptive_denominator(state.v, state.t, self.alpha, self.eps, self.bias_correction) / self.lr
        return d.expand_as(state.theta).clone()
