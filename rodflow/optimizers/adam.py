r"""Adam and NAdam, per-coordinate (``torch.optim.Adam`` / ``torch.optim.NAdam``) and scalar.

Adam (Kingma & Ba, arXiv 1412.6980), in torch's conventions:

.. math::

    m' = \beta_1 m + (1-\beta_1) g,\quad v' = \beta_2 v + (1-\beta_2)\,\mathrm{sq}(g),\quad
    \theta' = \theta - \frac{\eta}{\sqrt{v'/(1-\beta_2^{t+1})} + \epsilon}\cdot\frac{m'}{1-\beta_1^{t+1}}.

NAdam (Dozat 2016) in ``torch.optim.NAdam``'s form, with μ_t = β₁(1 − ½·0.96^{tψ}) (ψ =
``momentum_decay``) and Π_t = μ_1⋯μ_t:

.. math::

    \theta' = \theta - \frac{\eta}{\sqrt{\hat v'} + \epsilon}
    \Big(\frac{\mu_{s+1}}{1-\Pi_{s+1}}\, m' + \frac{1-\mu_s}{1-\Pi_s}\, g\Big)

where s = t + 1 is the number of the step being taken (torch's ``step``). ``momentum_decay=None`` is the constant-β₁ form of the
flow papers, μ ≡ β₁, i.e. torch's NAdam in the limit ψ → ∞ (note ψ = 0 gives μ ≡ β₁/2):
the direction is ``β₁ m'/(1 − β₁^{s+1}) + (1 − β₁) g/(1 − β₁^s)``.

The scalar variants replace ``g ⊙ g`` by ``‖g‖²`` (one step size for all coordinates).

Preconditioner (Cohen et al. 2022, arXiv 2207.14484): P = (1 − β₁ᵗ)(√v̂ + ε)/η.

Thresholds on λ_max(P⁻¹H), from a period-two ansatz with P frozen and bias corrections at 1
(x = P⁻¹λ, β = β₁):

* Adam: ``m' = -m`` gives ``m' = (1-β)g/(1+β)``; ``θ' - θ = -x m'/λ·λ = -2θ`` gives
  **x = (2 + 2β)/(1 − β)** (38 at β = 0.9).
* NAdam (constant β₁): the direction is ``βm' + (1-β)g = (1-β)g(1+2β)/(1+β)``, so
  **x = (2 + 2β)/((1 − β)(1 + 2β))** (≈ 13.571 at β = 0.9). With the μ-schedule this is the
  asymptotic value (μ_t → β₁).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

from torch import Tensor

from ..phase import PhaseState
from .rmsprop import adaptive_denominator
from .spec import OptimizerSpec, check_betas, check_real

__all__ = ["Adam", "AdamMoments", "nadam_mu", "nadam_mu_product"]


#: ``torch.optim.NAdam``'s default ψ.
_DEFAULT_MOMENTUM_DECAY = 4e-3


def nadam_mu(beta1: float, momentum_decay: float | None, t: float) -> float:
    """Dozat's μ_t = β₁(1 − ½·0.96^{tψ}); ``momentum_decay=None`` gives μ_t ≡ β₁."""
    if momentum_decay is None:
        return beta1
    return beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))


@lru_cache(maxsize=64)
def _log_mu_cumsum(beta1: float, momentum_decay: float, n: int) -> tuple[float, ...]:
    out = [0.0]
    acc = 0.0
    for i in range(1, n + 1):
        acc += math.log(nadam_mu(beta1, momentum_decay, i))
        out.append(acc)
    return tuple(out)


def nadam_mu_product(beta1: float, momentum_decay: float | None, t: float) -> float:
    """Π_t = μ_1⋯μ_t, log-linearly interpolated between integers (the flows use real t)."""
    if momentum_decay is None:
        return beta1**t
    if beta1 == 0.0:
        return 0.0 if t >= 1 else 1.0
    n = max(math.floor(t), 0)
    size = 1 << max(n + 1, 1024).bit_length()  # cache in powers of two
    table = _log_mu_cumsum(beta1, momentum_decay, size)
    frac = t - n
    log_p = table[n] + frac * math.log(nadam_mu(beta1, momentum_decay, n + 1))
    return math.exp(log_p)


@dataclass(frozen=True, kw_only=True)
class AdamMoments(OptimizerSpec):
    """Abstract: the moments of the Adam family, ``m' = β1 m + (1 − β1) g``, ``v' = β2 v + (1 − β2) sq(g)``."""

    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8

    def __post_init__(self) -> None:
        super().__post_init__()
        object.__setattr__(self, "betas", check_betas(self.betas))
        object.__setattr__(self, "eps", check_real("eps", self.eps, lo=0.0, lo_open=True))

    @property
    def beta(self) -> float:
        return self.betas[0]

    @property
    def moment_coef(self) -> float:
        return 1.0 - self.betas[0]

    @property
    def beta2(self) -> float:
        return self.betas[1]

    @property
    def has_momentum(self) -> bool:
        return True


@dataclass(frozen=True, kw_only=True)
class Adam(AdamMoments):
    """Adam (``nesterov=False``) or NAdam (``nesterov=True``); ``scalar=True`` for the scalar variants.

    >>> import torch, rodflow
    >>> spec = rodflow.optimizer("adam", lr=0.1)
    >>> s = spec.step(spec.init(torch.tensor([1.0, -2.0])), lambda th: th)
    >>> s.theta  # the first Adam step moves each coordinate by ≈ lr
    tensor([ 0.9000, -1.9000])
    >>> round(spec.threshold, 6)
    38.0
    """

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    momentum_decay: float | None = _DEFAULT_MOMENTUM_DECAY
    nesterov: bool = False
    scalar: bool = False  # type: ignore[assignment]

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.momentum_decay is not None:
            object.__setattr__(self, "momentum_decay",
                               check_real("momentum_decay", self.momentum_decay, lo=0.0))
        if not self.nesterov and self.momentum_decay != _DEFAULT_MOMENTUM_DECAY:
            raise ValueError(f"momentum_decay applies to NAdam only (got {self.momentum_decay!r} for Adam); "
                             "use 'nadam' or 'scalar_nadam'")
        for flag in ("nesterov", "scalar"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {type(getattr(self, flag)).__name__}")

    def hyperparameters(self) -> dict[str, object]:
        hp = super().hyperparameters()
        if not self.nesterov:
            hp.pop("momentum_decay")
        return hp

    def step_size(self, m: Tensor | None, v: Tensor | None, t: float) -> Tensor:
        assert v is not None
        return self.lr / adaptive_denominator(v, t, self.betas[1], self.eps, True)

    def direction(self, m: Tensor | None, g: Tensor, t: float) -> Tensor:
        assert m is not None
        b1 = self.betas[0]
        if not self.nesterov:
            return m / (1.0 - b1**t)
        psi = self.momentum_decay
        mu_t, mu_next = nadam_mu(b1, psi, t), nadam_mu(b1, psi, t + 1)
        prod_t = nadam_mu_product(b1, psi, t)
        prod_next = prod_t * mu_next if psi is not None else b1 ** (t + 1)
        return (mu_next / (1.0 - prod_next)) * m + ((1.0 - mu_t) / (1.0 - prod_t)) * g

    def preconditioner(self, state: PhaseState) -> Tensor:
        self._require_started(state)
        assert state.v is not None
        b1, b2 = self.betas
        d = (1.0 - b1**state.t) * adaptive_denominator(state.v, state.t, b2, self.eps, True) / self.lr
        return d.expand_as(state.theta).clone()

    @property
    def threshold(self) -> float:
        b = self.betas[0]
        if self.nesterov:
            return (2.0 + 2.0 * b) / ((1.0 - b) * (1.0 + 2.0 * b))
        return (2.0 + 2.0 * b) / (1.0 - b)

    @property
    def threshold_formula(self) -> str:
        return "(2 + 2β₁)/((1 − β₁)(1 + 2β₁))" if self.nesterov else "(2 + 2β₁)/(1 − β₁)"
