r"""The stable flow: the optimizer's map read as the Euler step of an ODE over (W, M, N).

With ``M⁺ = βM + a g``, ``N⁺ = β₂N + (1 − β₂) sq(g)``, ``g = ∇L(W)`` (time in steps):

.. math::

    \dot W = -D(M^+, N^+, t+1)\odot u(M^+, g, t+1),\qquad
    \dot M = \kappa_1 (M^+ - M),\qquad \dot N = \kappa_2 (N^+ - N)

where κ = 1 (``rate="step"``: ``Ṁ = a g − (1 − β)M``) or 1/β (``rate="central"``). E.g. heavy
ball ``Ẇ = −η(βM + g)``, Adam ``Ẇ = −η(βM + (1 − β)g)/((√N̂⁺ + ε)(1 − β₁^{t+1}))``, RMSProp
``Ẇ = −η g/(√N̂⁺ + ε)``. With ``rate="step"`` one Euler step of size 1 *is* the discrete map,
so the flow is the discrete map's first-order continuous-time model; it cannot oscillate and
so misses the edge of stability (the rod flow captures it).
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..derivatives import LossFn
from ..optimizers.spec import OptimizerSpec
from ..trajectory import Trajectory
from .base import Flow, Y, _three_point

__all__ = ["StableFlow", "stable_flow"]


class StableFlow(Flow):
    """The stable flow of ``spec`` on ``loss_fn``; state ``(W[, M][, N])``."""

    kind = "stable"

    @property
    def names(self) -> tuple[str, ...]:
        out = ["W"]
        if self.spec.has_momentum:
            out.append("M")
        if self.spec.beta2 is not None:
            out.append("N")
        return tuple(out)

    def field(self, t: Tensor | float, y: Y) -> Y:
        s = self.spec
        x = self.unpack(y)
        tn = float(t) + 1.0
        g = self._g(x["W"])
        mp = s.next_m(x["M"], g) if "M" in x else None
        np_ = s.next_v(x["N"], s.second_moment(g)) if "N" in x else None
        out = [-s.step_size(mp, np_, tn) * s.direction(mp, g, tn)]
        if mp is not None:
            out.append(self._relax(s.beta) * (mp - x["M"]))
        if np_ is not None:
            assert s.beta2 is not None
            out.append(self._relax(s.beta2) * (np_ - x["N"]))
        return tuple(out)

    def initial(self, trajectory: Trajectory, step: int = 0, *, centred: bool = False) -> Y:
        """The recorded state at ``step``; with ``centred=True``, the three-point centres of θ and m
        around ``step`` (for a start inside an oscillation). ``N = v_step``."""
        k, _ = self._rows(trajectory, step, span=2 if centred else 0)

        def pick(x: Tensor) -> Tensor:
            return _three_point(x, k, 0)[0] if centred else x[k]

        out = [pick(trajectory.theta)]
        if "M" in self.names:
            assert trajectory.m is not None
            out.append(pick(trajectory.m))
        return self._with_v(trajectory, k, out)

    def predict(self, step: Tensor, ys: Y) -> dict[str, Tensor | None]:
        x = dict(zip(self.names, ys))
        return {"theta": x["W"], "centre": x["W"], "delta": None, "m": x.get("M"), "v": x.get("N")}


def stable_flow(spec: OptimizerSpec, loss_fn: LossFn, *, rate: str = "step", **kwargs: Any) -> StableFlow:
    """The stable flow of optimizer ``spec`` on ``loss_fn`` (see :class:`StableFlow`)."""
    return StableFlow(spec, loss_fn, rate=rate, **kwargs)
