r"""The rod flow: a flow of the centre *and* the period-two half-difference of the iterates.

At the edge of stability the iterates oscillate across the sharpest direction. The rod flow
(Regis & Chewi, arXiv 2602.01480 for GD, arXiv 2605.06821 for Adam and seven other methods)
follows the ansatz

.. math::

    w_k = W(k) + (-1)^k \Delta(k),\qquad m_k = M(k) + (-1)^k \mu(k),\qquad v_k = N(k)

with W, Δ, M, μ, N slowly varying. Write ``g± = ∇L(W ± Δ)``, ``ḡ = (g₊ + g₋)/2``,
``g̃ = (g₊ − g₋)/2``. One step of the optimizer from an even and from an odd iterate, averaged
and differenced (u is linear in (m, g); N is smooth), gives the *rod map*

.. math::

    M^+ = \beta M + a\bar g,\quad \mu^+ = -\beta\mu - a\tilde g,\quad
    N^+ = \beta_2 N + (1-\beta_2)\tfrac12[\mathrm{sq}(g_+) + \mathrm{sq}(g_-)],

    W' = W - D\,u(M^+, \bar g),\qquad \Delta' = -\Delta + D\,u(-\mu^+, \tilde g),
    \qquad D = D(M^+, N^+, t+1),

(when the step size depends on the moment, as VRAdam's does, the even and odd steps use
``D_e = D(M⁺ − μ⁺)`` and ``D_o = D(M⁺ + μ⁺)``; with ``D̄, D̃ = (D_e ± D_o)/2`` the map becomes
``W' = W − D̄Ū − D̃Ũ``, ``Δ' = −Δ + D̄Ũ + D̃Ū``, and D̃ = 0 recovers the above),
and the rod flow is this map read as an Euler step of size 1 (the "post-update" form):

.. math::

    \dot W = -D\,\bar U,\quad \dot\Delta = -2\Delta + D\,\tilde U,\quad
    \dot M = \kappa_1(M^+ - M),\quad \dot\mu = \mu^+ - \mu,\quad \dot N = \kappa_2(N^+ - N)

with ``Ū = u(M⁺, ḡ)``, ``Ũ = u(−μ⁺, g̃)``. Linearised at a minimum, the ``(Δ, μ)`` block is
``A − I`` where ``A`` is the one-step map of the alternating part (the negated Jacobian of the
optimizer), so the rod starts to grow exactly when ``A`` has the eigenvalue 1, i.e. when the
optimizer's Jacobian has the eigenvalue −1: at each optimizer's own threshold. (Evaluating the
field at the pre-update moments instead gives the right threshold but a wrong growth rate.)
With Δ = μ = 0 the rod flow is the stable flow.

**Floor.** Before the edge of stability Δ decays like ``exp(−(2 − S)t)`` and can underflow to
exactly 0, after which the rod is the stable flow forever. The floor adds
``λ_f · max(0, 1 − ‖Δ‖/(ρ‖W‖))² · (Δ, μ)`` to ``(Δ̇, μ̇)`` (squared so that the field stays
continuously differentiable, which adaptive solvers need): it only acts while ‖Δ‖ < ρ‖W‖, keeps
the direction of (Δ, μ) (which the linear dynamics align with the least stable mode), and is
off once the rod has inflated. ``ρ`` (``floor``, default 10⁻¹⁰, far below any oscillation that
matters and far above float64 underflow) sets the smallest relative rod width; ``λ_f``
(``floor_rate``, default 4.5) how strongly it is held. The linearised rod decays at a rate κ of
at most 2 for any stable optimizer (the eigenvalues of ``A`` have real part ≥ −1); the width
settles where ``λ_f(1 − r)² = κ``, so with λ_f = 4.5 at no less than ρ(1 − √(2/4.5)) = ρ/3.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..derivatives import LossFn
from ..optimizers.spec import OptimizerSpec
from ..trajectory import Trajectory
from .base import Flow, Y, _three_point

__all__ = ["RodFlow", "rod_flow"]


class RodFlow(Flow):
    """The rod flow of ``spec`` on ``loss_fn``; state ``(W, Δ[, M, μ][, N])``."""

    kind = "rod"

    def __init__(self, spec: OptimizerSpec, loss_fn: LossFn, *, rate: str = "step", floor: float | None = 1e-10,
                 floor_rate: float = 4.5):
        super().__init__(spec, loss_fn, rate=rate)
        if floor is not None and not (isinstance(floor, int | float) and 0 < floor < 1):
            raise ValueError(f"floor must be None or a relative width in (0, 1), got {floor!r}")
        if not (isinstance(floor_rate, int | float) and floor_rate >= 0):
            raise ValueError(f"floor_rate must be a non-negative number, got {floor_rate!r}")
        self.floor = floor
        self.floor_rate = float(floor_rate)

    @property
    def names(self) -> tuple[str, ...]:
        out = ["W", "Delta"]
        if self.spec.has_momentum:
            out += ["M", "mu"]
        if self.spec.beta2 is not None:
            out.append("N")
        return tuple(out)

    def _floor_gain(self, w: Tensor, delta: Tensor) -> Tensor | float:
        if self.floor is None or self.floor_rate == 0:
            return 0.0
        ratio = torch.linalg.vector_norm(delta) / (self.floor * torch.linalg.vector_norm(w)).clamp_min(1e-300)
        return self.floor_rate * (1.0 - ratio).clamp_min(0.0).square()

    def field(self, t: Tensor | float, y: Y) -> Y:
        s = self.spec
        x = self.unpack(y)
        tn = float(t) + 1.0
        w, delta = x["W"], x["Delta"]
        gp, gm = self._g(w + delta), self._g(w - delta)
        gbar, gtil = 0.5 * (gp + gm), 0.5 * (gp - gm)
        mp = mup = None
        if "M" in x:
            mp = s.next_m(x["M"], gbar)
            mup = -s.beta * x["mu"] - s.moment_coef * gtil
        np_ = None
        if "N" in x:
            np_ = s.next_v(x["N"], 0.5 * (s.second_moment(gp) + s.second_moment(gm)))
        d_bar: Tensor | float
        d_til: Tensor | float
        u_bar = s.direction(mp, gbar, tn)
        u_til = s.direction(None if mup is None else -mup, gtil, tn)
        if mp is None:
            d_bar, d_til = s.step_size(mp, np_, tn), 0.0
        else:
            assert mup is not None
            # the step size may depend on the moment (VRAdam): even and odd steps differ
            d_even, d_odd = s.step_size(mp - mup, np_, tn), s.step_size(mp + mup, np_, tn)
            d_bar, d_til = 0.5 * (d_even + d_odd), 0.5 * (d_even - d_odd)
        gain = self._floor_gain(w, delta)
        out = [-(d_bar * u_bar + d_til * u_til), -2.0 * delta + d_bar * u_til + d_til * u_bar + gain * delta]
        if mp is not None:
            assert mup is not None
            out += [self._relax(s.beta) * (mp - x["M"]), mup - x["mu"] + gain * x["mu"]]
        if np_ is not None:
            assert s.beta2 is not None
            out.append(self._relax(s.beta2) * (np_ - x["N"]))
        return tuple(out)

    def initial(self, trajectory: Trajectory, step: int = 0, *, seed: int = 0) -> Y:
        """Three-point fit of the rod to the iterates around ``step`` (one-sided at the first row).

        ``W = (w₋ + 2w₀ + w₊)/4``, ``Δ = (−1)^k (2w₀ − w₋ − w₊)/4``, likewise ``M, μ``; ``N = v_k``.
        A run that starts from rest (``t = 0``: zero moments) has no oscillation yet, and Δ = μ = 0
        would be a fixed point of the field; the rod then starts at ``W = w₀`` with a seeded random
        Δ of relative size ρ = ``floor`` (10⁻¹⁰ without a floor), which stands in for the rounding
        noise from which the iterates' own oscillation grows.
        """
        k, _ = self._rows(trajectory, step, span=2)
        has_m = "M" in self.names
        if int(trajectory.t[k]) == 0:
            w = trajectory.theta[k]
            gen = torch.Generator().manual_seed(seed)
            xi = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
            rho = self.floor if self.floor is not None else 1e-10
            delta = rho * torch.linalg.vector_norm(w) * xi / torch.linalg.vector_norm(xi)
            out = [w, delta]
            if has_m:
                assert trajectory.m is not None
                out += [trajectory.m[k], torch.zeros_like(w)]
        else:
            sign = -1.0 if step % 2 else 1.0
            w, dw = _three_point(trajectory.theta, k, 0)
            out = [w, sign * dw]
            if has_m:
                assert trajectory.m is not None
                m, dm = _three_point(trajectory.m, k, 0)
                out += [m, sign * dm]
        return self._with_v(trajectory, k, out)

    def predict(self, step: Tensor, ys: Y) -> dict[str, Tensor | None]:
        x = dict(zip(self.names, ys))
        sign = (1.0 - 2.0 * (step % 2)).to(x["W"]).unsqueeze(1)  # [n, 1]
        m = None
        if "M" in x:
            m = x["M"] + sign * x["mu"]
        return {"theta": x["W"] + sign * x["Delta"], "centre": x["W"], "delta": x["Delta"], "m": m,
                "v": x.get("N")}

    def _atol(self, atol: float) -> tuple[float, ...]:
        # before EoS the rod lives at the relative width ρ: resolve it, not just the centre
        rho = self.floor if self.floor is not None else 1e-10
        small = ("Delta", "mu")
        return tuple(atol * rho if name in small else atol for name in self.names)

    def _extra_config(self) -> dict[str, Any]:
        return {"floor": self.floor, "floor_rate": self.floor_rate}


def rod_flow(spec: OptimizerSpec, loss_fn: LossFn, *, floor: float | None = 1e-10, floor_rate: float = 4.5,
             rate: str = "step") -> RodFlow:
    """The rod flow of optimizer ``spec`` on ``loss_fn`` (see :class:`RodFlow`)."""
    return RodFlow(spec, loss_fn, rate=rate, floor=floor, floor_rate=floor_rate)
