r"""VRAdam, velocity-regularized Adam (Vaidhyanathan, Schorling, Ares & Osborne, arXiv 2505.13196).

Adam whose global learning rate shrinks when the velocity (the first moment) is large:

.. math::

    \eta(m) = \frac{\eta}{1 + \min(\beta_3 \|m\|^p, \alpha_1)},\qquad
    \theta' = \theta - \frac{\eta(m')}{\sqrt{v'/(1-\beta_2^{s})} + \epsilon}\cdot\frac{m'}{1-\beta_1^{s}}

with ‖·‖ the Euclidean norm over all parameters, the raw (not bias-corrected) m', and s = t + 1
the number of the step being taken. It comes from the Lagrangian L = ½v² + (β₃/4)v⁴ − V(x),
whose equation of motion is, in its isotropic form, v̇ = −∇V/(1 + 3β₃‖v‖²): motion is braked
when it is fast (see :mod:`rodflow.optim.vradam` for the derivation).

The zoo's pieces (``m' = β₁m + (1 − β₁)g``, ``v' = β₂v + (1 − β₂)g⊙g``, ``θ' = θ − D(m', v', s)·u(m', g, s)``):

* step size ``D(m, v, t) = η(m)/(√v̂ + ε)`` with ``v̂ = v/(1 − β₂ᵗ)``; unlike the other optimizers of
  the zoo it depends on the moment, so the stable and rod flows (written over these pieces)
  see η vary along the trajectory, and the two interleaved halves of a rod see different ‖m‖;
* direction ``u(m, g, t) = m/(1 − β₁ᵗ)``;
* preconditioner ``P = (1 − β₁ᵗ)(√v̂ + ε)/η(m_t)``, so that a step is ``θ_t − θ_{t−1} = −P⁻¹ m_t``:
  Adam's preconditioner at the current effective learning rate;
* no weight decay (the ``torch.optim`` class adds AdamW's decoupled decay).

Threshold. Freeze P, put the bias corrections at 1 and follow one eigenvector of P⁻¹H with
eigenvalue x (β = β₁). The map is ``m' = βm + (1 − β)λθ``, ``θ' = θ − P⁻¹m'``. A period-two
orbit has ``m' = −m``, so ``m' = (1 − β)λθ/(1 + β)``, and ``θ' = −θ``, so ``P⁻¹m' = 2θ``: together
**x = (2 + 2β)/(1 − β)** (38 at β = 0.9), Adam's value. The velocity factor leaves it unchanged:
along a period-two orbit ‖m‖ is the same at both steps, so η(m) and P are constant on it; and at
a minimum (m = 0) the factor is 1 with zero derivative for p > 1, so the linearization there is
Adam's at the base rate. What it changes is P itself: an oscillation raises ‖m‖, which lowers
η(m) by up to a factor 1 + α₁ and so raises P. An orbit that pushes λ_max(P⁻¹H) above the
threshold brakes itself, and VRAdam can train where λ_max(H) exceeds Adam's threshold at the base
rate, (2 + 2β₁)/((1 − β₁)·lr)·(√v̂ + ε), by up to the factor 1 + α₁.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..phase import PhaseState
from .adam import AdamMoments
from .rmsprop import adaptive_denominator
from .spec import check_real

__all__ = ["VRAdamSpec"]


@dataclass(frozen=True, kw_only=True)
class VRAdamSpec(AdamMoments):
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

    @property
    def threshold_formula(self) -> str:
        return "(2 + 2β₁)/(1 − β₁)"


def __getattr__(name: str) -> type:
    # ``VRAdam`` was this class's name; it is now ``VRAdamSpec`` so that it cannot be mistaken for
    # the torch optimizer :class:`rodflow.VRAdam` (rodflow/optim/vradam.py)
    if name == "VRAdam":
        import warnings

        warnings.warn("rodflow.optimizers.vradam.VRAdam is deprecated: it is the spec VRAdamSpec; the torch "
                      "optimizer is rodflow.VRAdam", DeprecationWarning, stacklevel=2)
        return VRAdamSpec
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
