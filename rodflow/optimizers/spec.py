r"""The optimizer spec: one object per optimizer that gives its discrete map and its flows' pieces.

Every optimizer in the zoo is a map on the phase-space state (θ, m, v, t) of the form

.. math::

    g = \nabla L(\theta_t),\quad
    m_{t+1} = \beta m_t + a\,g,\quad
    v_{t+1} = \beta_2 v_t + (1-\beta_2)\,\mathrm{sq}(g),\quad
    \theta_{t+1} = \theta_t - D(m_{t+1}, v_{t+1}, t+1)\odot u(m_{t+1}, g, t+1)

with ``sq(g) = g ⊙ g`` (per-coordinate methods) or ``‖g‖²`` (scalar methods), a step size ``D``
and an update direction ``u`` that is *linear* in ``(m, g)``. A subclass states ``β``, ``a``,
``β₂``, ``sq``, ``D`` and ``u``; :meth:`OptimizerSpec.step` and the flows in :mod:`rodflow.flows`
are written once over these pieces, so the mathematics of each optimizer lives in one place.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields
from numbers import Real
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..phase import PhaseState

if TYPE_CHECKING:
    from ..trajectory import Trajectory

__all__ = ["GradFn", "GradientDescentThreshold", "NonFiniteError", "OptimizerSpec", "check_gradient"]

GradFn = Callable[[Tensor], Tensor]


class NonFiniteError(FloatingPointError, ValueError):
    """A gradient or state became non-finite (the run diverged, or the loss returned NaN).

    ``trajectory`` holds the states recorded before the failure (set by :func:`rodflow.iterate`), or ``None``.
    """

    trajectory: Trajectory | None

    def __init__(self, *args: object, trajectory: Trajectory | None = None):
        super().__init__(*args)
        self.trajectory = trajectory


def check_real(name: str, value: Any, *, lo: float, hi: float = math.inf, lo_open: bool = False,
               hi_open: bool = True) -> float:
    """Validate a real hyperparameter and return it as a float, naming ``name`` in any error."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    x = float(value)
    if math.isnan(x):
        raise ValueError(f"{name} must not be NaN")
    below = x <= lo if lo_open else x < lo
    above = x >= hi if hi_open else x > hi
    if below or above:
        lb = "(" if lo_open else "["
        rb = ")" if hi_open else "]"
        raise ValueError(f"{name} must lie in {lb}{lo}, {hi}{rb}, got {value!r}")
    return x


def check_betas(betas: Any, name: str = "betas") -> tuple[float, float]:
    """Validate a pair (β1, β2), each in [0, 1)."""
    if isinstance(betas, Tensor | np.ndarray):
        if betas.shape != (2,):
            raise ValueError(f"{name} must be a pair (beta1, beta2), got shape {tuple(betas.shape)}")
        betas = tuple(b.item() for b in betas)
    if not isinstance(betas, tuple | list) or len(betas) != 2:
        raise ValueError(f"{name} must be a pair (beta1, beta2), got {betas!r}")
    return (check_real(f"{name}[0]", betas[0], lo=0.0, hi=1.0), check_real(f"{name}[1]", betas[1], lo=0.0, hi=1.0))


def check_gradient(g: Any, theta: Tensor, t: int) -> Tensor:
    """Check that ``grad_fn`` returned a finite flat tensor shaped like θ."""
    if not isinstance(g, Tensor):
        raise TypeError(f"grad_fn must return a tensor, got {type(g).__name__}")
    if g.shape != theta.shape:
        raise ValueError(
            f"grad_fn returned shape {tuple(g.shape)}, expected {tuple(theta.shape)} (the shape of theta)")
    if g.dtype != theta.dtype:
        raise TypeError(f"grad_fn returned dtype {g.dtype}, expected {theta.dtype} (the dtype of theta)")
    if not bool(torch.isfinite(g).all()):
        raise NonFiniteError(
            f"grad_fn returned a non-finite gradient at step {t}: the run diverged or the loss is NaN; "
            "lower lr or check loss_fn")
    return g


class GradientDescentThreshold:
    """Threshold λ_max(P⁻¹H) = 2 of the methods that are (preconditioned) gradient descent with P held
    fixed (GD, RMSProp): the period-two mode of θ' = θ − P⁻¹Hθ appears at P⁻¹λ = 2."""

    @property
    def threshold(self) -> float:
        return 2.0

    @property
    def threshold_formula(self) -> str:
        return "2"


@dataclass(frozen=True, kw_only=True)
class OptimizerSpec(ABC):
    """Abstract optimizer spec: frozen hyperparameters, the exact discrete map and its flow pieces.

    Subclasses are final frozen dataclasses; hyperparameters are keyword-only and named as in the
    matching ``torch.optim`` class. Construction validates every value (``ValueError`` naming it).
    """

    lr: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", check_real("lr", self.lr, lo=0.0, lo_open=True))

    # ------------------------------------------------------------------ identity
    @property
    def name(self) -> str:
        """The registry name (``"adam"``, ``"scalar_rmsprop"``, ...), read from the registry in
        :mod:`rodflow.optimizers` (the one place the names live)."""
        from . import registry_name

        return registry_name(self)

    def hyperparameters(self) -> dict[str, Any]:
        """The constructor's arguments, for recording an experiment's configuration."""
        return {f.name: getattr(self, f.name) for f in fields(self)}

    # ------------------------------------------------------------------ the pieces
    @property
    def beta(self) -> float:
        """Decay β of the first moment (0 without one)."""
        return 0.0

    @property
    def moment_coef(self) -> float:
        """Coefficient ``a`` of the gradient in ``m' = βm + a g``."""
        return 1.0

    @property
    def beta2(self) -> float | None:
        """Decay β₂ of the second moment, or ``None`` without one."""
        return None

    @property
    def has_momentum(self) -> bool:
        return False

    @property
    def scalar(self) -> bool:
        """True when ``v`` is one number tracking the squared gradient norm."""
        return False

    def second_moment(self, g: Tensor) -> Tensor:
        """``sq(g)``: ``g ⊙ g``, or ``‖g‖²`` (a 0-d tensor) for the scalar variants."""
        return g.square().sum() if self.scalar else g * g

    def noise_moment(self, noise: float | Tensor, g: Tensor) -> Tensor | float:
        """``E[sq(z)]`` for gradient noise ``z ~ N(0, diag(σ²))`` shaped like ``g``, ``noise = σ²``.

        ``sq`` is quadratic and ``E z = 0``, so ``E[sq(g + z)] = sq(g) + E[sq(z)]``: ``σ²`` per
        coordinate, ``Σ_i σ_i²`` (``d·σ²`` for a number) for the scalar variants' ``‖g‖²``.
        """
        if not self.scalar:
            return noise
        if isinstance(noise, Tensor) and noise.ndim > 0:
            return noise.sum()
        return noise * g.numel()

    @abstractmethod
    def step_size(self, m: Tensor | None, v: Tensor | None, t: float) -> Tensor | float:
        """``D(m, v, t)``: the per-coordinate (or scalar) step size applied to the direction."""

    @abstractmethod
    def direction(self, m: Tensor | None, g: Tensor, t: float) -> Tensor:
        """``u(m, g, t)``, linear in ``(m, g)``: the vector that the step size multiplies."""

    @abstractmethod
    def preconditioner(self, state: PhaseState) -> Tensor:
        """The vector P such that P⁻¹ is the per-coordinate step size on the update direction."""

    @property
    @abstractmethod
    def threshold(self) -> float:
        """The edge-of-stability value of λ_max(P⁻¹H) for this optimizer."""

    @property
    @abstractmethod
    def threshold_formula(self) -> str:
        """:attr:`threshold` as a formula in the hyperparameters (``"(2 + 2β₁)/(1 − β₁)"``), for labels."""

    # ------------------------------------------------------------------ the map
    def init(self, theta: Tensor) -> PhaseState:
        """The initial state at ``theta`` (zero moments, ``t = 0``)."""
        if not isinstance(theta, Tensor):
            raise TypeError(f"theta must be a tensor, got {type(theta).__name__}")
        if theta.ndim != 1:
            raise ValueError(f"theta must be a flat vector, got shape {tuple(theta.shape)}")
        if not theta.is_floating_point():
            raise TypeError(f"theta must be floating point, got {theta.dtype}")
        theta = theta.detach().clone()
        m = torch.zeros_like(theta) if self.has_momentum else None
        v: Tensor | None = None
        if self.beta2 is not None:
            v = theta.new_zeros(()) if self.scalar else torch.zeros_like(theta)
        return PhaseState(theta=theta, m=m, v=v, t=0)

    def next_m(self, m: Tensor, g: Tensor) -> Tensor:
        """``m' = βm + a g``."""
        return self.beta * m + self.moment_coef * g

    def next_v(self, v: Tensor, sq: Tensor) -> Tensor:
        """``v' = β₂v + (1 − β₂) sq`` where ``sq`` is :meth:`second_moment` of a gradient."""
        b2 = self.beta2
        assert b2 is not None
        return b2 * v + (1.0 - b2) * sq

    def update(self, state: PhaseState, g: Tensor) -> PhaseState:
        """The discrete map given the gradient ``g = ∇L(θ_t)`` (see the module docstring)."""
        t = state.t + 1
        m = None if state.m is None else self.next_m(state.m, g)
        v = None if state.v is None else self.next_v(state.v, self.second_moment(g))
        theta = state.theta - self.step_size(m, v, t) * self.direction(m, g, t)
        return PhaseState(theta=theta, m=m, v=v, t=t)

    def step(self, state: PhaseState, grad_fn: GradFn) -> PhaseState:
        """One exact step of the optimizer: ``update(state, grad_fn(state.theta))``.

        ``grad_fn`` must return a finite tensor shaped like θ; anything else raises, and so does a
        step that overflows θ (a finite gradient times a huge step size).
        """
        g = check_gradient(grad_fn(state.theta), state.theta, state.t)
        new = self.update(state, g)
        if not bool(torch.isfinite(new.theta).all()):
            raise NonFiniteError(f"{self.name}: step {new.t} made theta non-finite (overflow of a finite gradient "
                                 "times the step size); lower lr")
        return new

    def _require_started(self, state: PhaseState) -> None:
        if state.t < 1:
            raise ValueError(f"{self.name}: the preconditioner is defined from the first step on (t ≥ 1), "
                             f"got t={state.t}")
