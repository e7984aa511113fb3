r"""The stable flow: the optimizer's map read as the Euler step of an ODE over (W, M, N).

With ``M⁺ = βM + a g``, ``N⁺ = β₂N + (1 − β₂) sq(g)``, ``g = ∇L(W)`` (time in steps):

.. math::

    \dot W = -D(M^+, N^+, t+1)\odot u(M^+, g, t+1),\qquad
    \dot M = \kappa_1 (M^+ - M),\qquad \dot N = \kappa_2 (N^+ - N)

where κ = 1 (``rate="step"``: ``Ṁ = a g − (1 − β)M``) or κ = 1/β (``rate="central"``; see
:data:`~rodflow.flows.base.RATES`). E.g. heavy
ball ``Ẇ = −η(βM + g)``, Adam ``Ẇ = −η(βM + (1 − β)g)/((√N̂⁺ + ε)(1 − β₁^{t+1}))``, RMSProp
``Ẇ = −η g/(√N̂⁺ + ε)``. With ``noise = σ²`` (gradient noise ``z ~ N(0, σ²I)`` in the run)
``sq(g)`` becomes its expectation ``E[sq(g + z)] = sq(g) + E[sq(z)]`` (σ² per coordinate). With ``rate="step"`` one Euler step of size 1 *is* the discrete map,
so the flow is the discrete map's first-order continuous-time model; it cannot oscillate and
so misses the edge of stability (the rod flow captures it). ``order=2`` integrates the
look-behind field ``F(t − ½, Z − ½F(t, Z))`` of the map's increment ``F`` (for GD:
``Ẇ = −η∇L(W + ½η∇L(W))``, the implicit-gradient-regularisation flow to second order), the
baseline against which the second-order rod is measured.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..derivatives import LossFn
from ..optimizers.spec import OptimizerSpec
from ..trajectory import Trajectory
from .base import Flow, Y, _seven_point, _three_point
from .parts import StableState, pack, stable_increment, stable_moments, unpack

__all__ = ["INITS", "StableFlow", "stable_flow"]

#: Initial states of the stable flow: the recorded state, or the three- or seven-point centre.
INITS = ("state", "3pt", "7pt")


class StableFlow(Flow):
    """The stable flow of ``spec`` on ``loss_fn``; state :class:`~rodflow.flows.parts.StableState` ``(W[, M][, N])``."""

    kind = "stable"

    def __init__(self, spec: OptimizerSpec, loss_fn: LossFn, *, rate: str = "step", order: int = 1,
                 init: str = "state", limiter: str | None = None, noise: float | Tensor | None = None,
                 form: str = "look_behind"):
        super().__init__(spec, loss_fn, rate=rate, order=order, limiter=limiter, noise=noise, form=form)
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.init = init

    @property
    def names(self) -> tuple[str, ...]:
        out = ["W"]
        if self.spec.has_momentum:
            out.append("M")
        if self.spec.beta2 is not None:
            out.append("N")
        return tuple(out)

    def state(self, y: Y) -> StableState:
        """The typed state of solver tuple ``y``."""
        return unpack(StableState, self.names, y)

    def increment(self, t: float, y: Y) -> Y:
        """The discrete map's one-step increment (moment entries scaled by κ)."""
        s = self.spec
        z = self.state(y)
        tn = t + 1.0
        g = self._g(z.W)
        f = stable_increment(s, z, g, stable_moments(s, z, g, self.noise), tn)
        return pack(self._relaxed(f))

    def initial(self, trajectory: Trajectory, step: int = 0, *, centred: bool = False) -> Y:
        """The recorded state at ``step`` (``init="state"``), or the centres of θ and m around it:
        three-point with ``init="3pt"`` (or ``centred=True``), seven-point with ``init="7pt"``
        (for a start inside an oscillation). ``N = v_step``."""
        init = "3pt" if centred and self.init == "state" else self.init
        self._check_layout(trajectory)
        if init == "7pt":
            k, lo, hi = self._window(trajectory, step, half=3)
        else:
            k, _ = self._rows(trajectory, step, span=2 if init == "3pt" else 0)

        def pick(x: Tensor) -> Tensor:
            if init == "3pt":
                return _three_point(x, k, 0)[0]
            if init == "7pt":
                return _seven_point(x, k, lo, hi)[0]
            return x[k]

        out = [pick(trajectory.theta)]
        if "M" in self.names:
            assert trajectory.m is not None
            out.append(pick(trajectory.m))
        return self._with_v(trajectory, k, out)

    def predict(self, step: Tensor, ys: Y) -> dict[str, Tensor | None]:
        z = self.state(ys)
        return {"theta": z.W, "centre": z.W, "delta": None, "m": z.M, "v": z.N}

    def _extra_config(self) -> dict[str, Any]:
        return {"init": self.init}


def stable_flow(spec: OptimizerSpec, loss_fn: LossFn, *, rate: str = "step", order: int = 1, init: str = "state",
                noise: float | Tensor | None = None, **kwargs: Any) -> StableFlow:
    """The stable flow of optimizer ``spec`` on ``loss_fn`` (see :class:`StableFlow`).

    ``noise``: the variance σ² of isotropic gradient noise in the run the flow models (mini-batch
    or injected), or per-coordinate variances; the second moment then tracks its expectation,
    ``N⁺ = β₂N + (1 − β₂)(sq(g) + E[sq(z)])`` (:func:`~rodflow.flows.parts.next_n`). Only for
    optimizers with a second moment.
    """
    return StableFlow(spec, loss_fn, rate=rate, order=order, init=init, noise=noise, **kwargs)
