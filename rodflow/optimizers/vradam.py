r"""VRAdam, velocity-regularized Adam (Vaidhyanathan, Schorling, Ares & Osborne, arXiv 2505.13196).

Adam whose global learning rate shrinks when the velocity (the first moment) is large:

.. math::

    \eta(m) = \frac{\eta}{1 + \min(\beta_3 \|m\|^p, \alpha_1)},\qquad
    \theta' = \theta - \frac{\eta(m')}{\sqrt{v'/(1-\beta_2^{s})} + \epsilon}\cdot\frac{m'}{1-\beta_1^{s}}

with ‖·‖ over all parameters and the raw (not bias-corrected) m'. In the zoo's form the step size
``D(m, v, t) = η(m)/(√v̂ + ε)`` depends on the moment, which the rod flow accounts for (even and
odd steps of the rod see different ‖m‖). Preconditioner P = (1 − β₁ᵗ)(√v̂ + ε)/η(m_t), i.e.
Adam's with the current effective learning rate, so the threshold on λ_max(P⁻¹H) is Adam's,
(2 + 2β₁)/(1 − β₁): with the velocity factor frozen the map is Adam at learning rate η(m). What
the factor changes is that an oscillation raises ‖m‖ and so lowers η(m), i.e. raises P: VRAdam's
preconditioned sharpness is pushed back below the threshold by the oscillation itself.

Continuous time: the Lagrangian L = ½v² + (β₃/4)v⁴ − V(x) gives the Euler–Lagrange equation
(1 + 3β₃‖v‖²) v̇ = −∇V(x): heavy motion slows down when it is fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..phase import PhaseState
from .adam import AdamMoments
from .rmsprop import adaptive_denominator
from .spec import check_real

__all__ = ["VRAdam"]


@dataclass(frozen=True, kw_only=True)
class VRAdam(AdamMoments):
    """VRAdam as a discrete map (velocity norm, no weight decay); ``torch.optim`` form in :class:`rodflow.VRAdam`.

    >>> import rodflow
    >>> spec = rodflow.optimizer("vradam", lr=0.1, beta3=1.0, alpha1=10.0)
    >>> round(spec.threshold, 6)
    38.0
    """

    lr: float = 1e-3
    beta3: float = 1.0
    alpha1: float = 10.0
    power: float = 2.0

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "beta3", check_real("beta3", self.beta3, lo=0.0))
        object.__setattr__(self, "alpha1", check_real("alpha1", self.alpha1, lo=0.0))
        object.__setattr__(self, "power", check_real("power", self.power, lo=0.0, lo_open=True))

    @property
    def name(self) -> str:
        return "vradam"

    def effective_lr(self, m: Tensor) -> Tensor:
        """``η(m) = lr / (1 + min(β₃‖m‖^p, α₁))``."""
        norm = torch.linalg.vector_norm(m)
        return self.lr / (1.0 + torch.clamp(self.beta3 * norm**self.power, max=self.alpha1))

    def step_size(self, m: Tensor | None, v: Tensor | None, t: float) -> Tensor:
        assert m is not None and v is not None
        return self.effective_lr(m) / adaptive_denominator(v, t, self.betas[1], self.eps, True)

    def direction(self, m: Tensor | None, g: Tensor, t: float) -> Tensor:
        assert m is not None
        return m / (1.0 - self.betas[0] ** t)

    def preconditioner(self, state: PhaseState) -> Tensor:
        self._require_started(state)
        assert state.v is not None and state.m is not None
        b1, b2 = self.betas
        den = adaptive_denominator(state.v, state.t, b2, self.eps, True)
        return ((1.0 - b1**state.t) * den / self.effective_lr(state.m)).expand_as(state.theta).clone()

    @property
    def threshold(self) -> float:
        b = self.betas[0]
        return (2.0 + 2.0 * b) / (1.0 - b)
