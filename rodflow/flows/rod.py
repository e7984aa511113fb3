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
    N^+ = \beta_2 N + (1-\beta_2)\big(\tfrac12[\mathrm{sq}(g_+) + \mathrm{sq}(g_-)] + \sigma^2\big),

    W' = W - D\,u(M^+, \bar g),\qquad \Delta' = -\Delta + D\,u(-\mu^+, \tilde g),
    \qquad D = D(M^+, N^+, t+1),

(σ² = 0 unless ``noise = σ²`` models gradient noise in the run; the scalar variants add
``d·σ²``) (when the step size depends on the moment, as VRAdam's does, the even and odd steps use
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

**Order and form.** ``order=1`` integrates the increment ``F`` of the rod map (above). ``order=3`` is the
three-lag delay form ``−⅙F(Z(t)) + ⁴⁄₃F(Z(t − ½)) − ⅙F(Z(t − 1))`` (rate ``ln(1 + ε) + O(ε⁴)``; same cost
as order 2). ``order=2``
(the default) reads the map to second order, by default as the delay equation
``dZ/dt = F(t − ½, Z(t − ½))`` (``form="delay"``: the map's increment is the flow's velocity at the
step's midpoint), whose linearised top-mode rate is the root of ``s = ε e^{−s/2}``,
``ε − ε²/2 + 3ε³/8 − …``, where the map multiplies by ``1 + ε`` (exact: ``ln(1 + ε)``; first
order: ``ε``); it is solved by the integrator's fourth-order Adams rule at a step of ¼ (8 gradients per
step). ``form="look_behind"`` is the ODE ``F(t − ½, Z − ½F(t, Z))``, the modified equation
``F − ½(∂_tF + F′F)`` (rate ``ε − ε²/2``, negative past ε = 2), with ``limiter="truncate"`` (its
default; ``None`` switches it off), which keeps the correction ``C = F₂ − F`` of each state entry
while ``‖C‖ ≤ ‖F‖`` and scales it by ``‖F‖²/‖C‖²`` beyond (see ``docs/flows.md`` §6, §6b).
``alternating_order=3`` (delay form) gives the alternating part (Δ, μ) the three-lag kernel and
leaves the centre (W, M, N) at ``order``'s: one F per step still, each entry weighted by its own
kernel (``docs/flows.md`` §6d).

**Initial state.** ``init="7pt"`` fits W, Δ (and M, μ) with the seven-point binomial filter,
which cancels the drift up to degree 5 (``init="3pt"``, the three-point fit, counts the drift's
second difference as oscillation; see ``docs/flows.md``).

**Floor.** Before the edge of stability Δ decays like ``exp(−σt)`` (σ ≤ 2 the decay rate of the
least stable alternating mode) and can underflow to exactly 0, after which the rod is the stable
flow forever. The floor adds ``λ_f · max(0, 1 − ‖Δ‖/(ρ‖W‖))² · (Δ, μ)`` to ``(Δ̇, μ̇)``, outside
the look-behind (squared so that the field stays continuously differentiable, which adaptive
solvers need): it only acts while ‖Δ‖ < ρ‖W‖, keeps the direction of (Δ, μ) (which the linear
dynamics align with the least stable mode), and is off once the rod has inflated. ``ρ`` sets the
smallest relative rod width: ``floor="roundoff"`` is the iterates' own rounding level
(:data:`ROUNDOFF` × the machine epsilon of their dtype), the noise from which their oscillation
grows; a number sets ρ itself; ``None`` switches the floor off. ``λ_f`` (``floor_rate``) sets how
strongly it is held: the width settles where ``λ_f(1 − r)² = σ``. The decay rate σ of a stable
alternating mode is at most 2 at first order (the eigenvalues of ``A`` have real part ≥ −1) and
at most 4 under the look-behind (``σ = 2 + ½·2²``) and at most 2 in the delay form (its rate is
``2W₀(ε/2)``, Lambert's W, whose real part is ≥ −2 on the unit disk of multipliers), so the
default λ_f = 4.5 × order holds the width at no less than ρ(1 − √(2/4.5)) = ρ/3. The three-lag form of
``order=3`` damps a stable mode at most at 2.2 (the dominant root of its rule at h = ¼ over the unit disk),
and keeps λ_f = 9 (the width ≥ ρ/2). With ``floor="roundoff"`` a rod narrower than
eps^(1/3)‖W‖ (where ``W ± Δ`` loses Δ to rounding) is evaluated as a linear response,
``ḡ = ∇L(W)``, ``g̃ = ∇²L(W)Δ`` (one Hessian-vector product), and Δ, μ get an absolute tolerance
10⁻¹⁰ times the others'.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..derivatives import LossFn
from ..optimizers.spec import OptimizerSpec
from ..sharpness import HessianOperator
from ..trajectory import Trajectory
from .base import KERNELS, Flow, Y, _seven_point, _three_point
from .parts import RodGradients, RodState, pack, rod_gradients, rod_increment, rod_moments, rod_step_sizes, unpack

__all__ = ["INITS", "ROUNDOFF", "RodFlow", "rod_flow"]

#: Initial fits of the rod to the iterates.
INITS = ("3pt", "7pt")
#: ``floor="roundoff"``: ρ = ROUNDOFF × the machine epsilon of the iterates' dtype. Chosen on the
#: quadratic-plus-quartic toy of ``tests/flows/test_rod_variants.py`` with seed 1 (the test uses
#: seed 0): the rod's onset against the iterates' was +3 / −4 steps (float64 / float32) at 0.1,
#: −2 / −10 at 0.5 and −6 / −17 at 2.
ROUNDOFF = 0.1
#: Relative rod width below which ``floor="roundoff"`` evaluates the rod as a linear response:
#: eps^(1/3) of the dtype (6e-6 in float64, 5e-3 in float32) balances the linear response's
#: O(r²) error against the O(eps/r) cancellation in g(W + Δ) − g(W − Δ).
LINEAR_EXPONENT = 1.0 / 3.0
#: Absolute tolerance of Δ, μ relative to the others' with ``floor="roundoff"``.
ROUNDOFF_ATOL = 1e-10


def _roundoff(dtype: torch.dtype) -> float:
    return ROUNDOFF * torch.finfo(dtype).eps


def _linear_below(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps ** LINEAR_EXPONENT)


class RodFlow(Flow):
    """The rod flow of ``spec`` on ``loss_fn``; state :class:`~rodflow.flows.parts.RodState` ``(W, Δ[, M, μ][, N])``."""

    kind = "rod"

    def __init__(self, spec: OptimizerSpec, loss_fn: LossFn, *, rate: str = "step", order: int = 2,
                 init: str = "7pt", floor: float | str | None = "roundoff", floor_rate: float | None = None,
                 limiter: str | None = "truncate", noise: float | Tensor | None = None, form: str = "delay",
                 alternating_order: int | None = None):
        super().__init__(spec, loss_fn, rate=rate, order=order, limiter=limiter, noise=noise, form=form)
        if alternating_order is not None and (isinstance(alternating_order, bool) or alternating_order not in (2, 3)):
            raise ValueError(f"alternating_order must be None, 2 or 3, got {alternating_order!r}")
        if alternating_order is not None and alternating_order != self.order and self.form != "delay":
            raise ValueError("alternating_order: a kernel of its own for (Δ, μ) exists in the delay form only "
                             "(form='delay', order 2 or 3)")
        self.alternating_order = self.order if alternating_order is None else int(alternating_order)
        if floor_rate is None:
            floor_rate = 4.5 * min(self.order, 2)
        if floor != "roundoff" and floor is not None and not (
                isinstance(floor, int | float) and not isinstance(floor, bool) and 0 < floor < 1):
            raise ValueError(f"floor must be None, 'roundoff' or a relative width in (0, 1), got {floor!r}")
        if isinstance(floor_rate, bool) or not (isinstance(floor_rate, int | float) and floor_rate >= 0):
            raise ValueError(f"floor_rate must be a non-negative number, got {floor_rate!r}")
        if init not in INITS:
            raise ValueError(f"init must be one of {INITS}, got {init!r}")
        self.floor = floor
        self.floor_rate = float(floor_rate)
        self.init = init

    @property
    def names(self) -> tuple[str, ...]:
        out = ["W", "Delta"]
        if self.spec.has_momentum:
            out += ["M", "mu"]
        if self.spec.beta2 is not None:
            out.append("N")
        return tuple(out)

    def kernel(self) -> float | dict[float, Any]:
        """The delay kernel; with ``alternating_order`` ≠ ``order`` one weight per state entry: the centre
        (W, M, N) by ``order``'s kernel, the alternating part (Δ, μ) by ``alternating_order``'s."""
        if self.alternating_order == self.order:
            return super().kernel()
        centre, alternating = KERNELS[self.order], KERNELS[self.alternating_order]
        return {lag: tuple((alternating if name in ("Delta", "mu") else centre).get(lag, 0.0) for name in self.names)
                for lag in sorted({*centre, *alternating})}

    def state(self, y: Y) -> RodState:
        """The typed state of solver tuple ``y``."""
        return unpack(RodState, self.names, y)

    def rho(self, dtype: torch.dtype) -> float | None:
        """The floor's relative width ρ for iterates of ``dtype`` (``None`` without a floor)."""
        if self.floor == "roundoff":
            return _roundoff(dtype)
        return None if self.floor is None else float(self.floor)

    # ------------------------------------------------------------------ the field, in parts
    def _linear(self, w: Tensor, delta: Tensor) -> tuple[Tensor, Tensor]:
        """``(∇L(W), ∇²L(W)Δ)``: one gradient with its graph and one Hessian-vector product."""
        self.nfe_grad += 2
        op = HessianOperator(self.loss_fn, w)
        return op.grad.detach(), op(delta).detach()

    def gradients(self, w: Tensor, delta: Tensor) -> RodGradients:
        """Part 1 (see :func:`~rodflow.flows.parts.rod_gradients`), linearised for a rod below the rounding of W."""
        linear = None
        if self.floor == "roundoff":
            wn = torch.linalg.vector_norm(w)
            if bool(torch.linalg.vector_norm(delta) < _linear_below(w.dtype) * wn):
                linear = self._linear
        return rod_gradients(self.spec, self._g, w, delta, linear)

    def increment(self, t: float, y: Y) -> Y:
        """The rod map's one-step increment: gradients → moments → step sizes → assembly."""
        s = self.spec
        z = self.state(y)
        tn = t + 1.0
        grads = self.gradients(z.W, z.Delta)
        mom = rod_moments(s, z, grads, self.noise)
        f = rod_increment(s, z, grads, mom, rod_step_sizes(s, mom, tn), tn)
        return pack(self._relaxed(f))

    def _floor_gain(self, w: Tensor, delta: Tensor) -> Tensor | float:
        rho = self.rho(w.dtype)
        if rho is None or self.floor_rate == 0:
            return 0.0
        ratio = torch.linalg.vector_norm(delta) / (rho * torch.linalg.vector_norm(w)).clamp_min(1e-300)
        return self.floor_rate * (1.0 - ratio).clamp_min(0.0).square()

    def instant(self, t: Tensor | float, y: Y) -> Y | None:
        """The floor's term ``λ_f·max(0, 1 − ‖Δ‖/(ρ‖W‖))²·(Δ, μ)`` at the current state (``None`` without a floor)."""
        if self.rho(y[0].dtype) is None or self.floor_rate == 0:
            return None
        z = self.state(y)
        gain = self._floor_gain(z.W, z.Delta)
        zero = torch.zeros_like
        return pack(RodState(zero(z.W), gain * z.Delta, None if z.M is None else zero(z.M),
                             None if z.mu is None else gain * z.mu, None if z.N is None else zero(z.N)))

    # ------------------------------------------------------------------ states
    def initial(self, trajectory: Trajectory, step: int = 0, *, seed: int = 0) -> Y:
        """The rod fitted to the iterates around ``step``: ``W, Δ`` (and ``M, μ``) from ``init``, ``N = v_k``.

        ``init="7pt"``: the seven-point binomial filter (rows ``k − 3 … k + 3``, or the nearest
        seven consecutive rows near the ends of the record). ``init="3pt"``: ``W = (w₋ + 2w₀ + w₊)/4``,
        ``Δ = (−1)^k (2w₀ − w₋ − w₊)/4`` (one-sided at the first row). With ``init="3pt"`` a run that
        starts from rest (``t = 0``: zero moments) is taken to have no oscillation yet, and since
        Δ = μ = 0 would be a fixed point of the field the rod starts at ``W = w₀`` with a seeded random
        Δ of relative size ρ (the floor's; 10⁻¹⁰ without a floor), standing in for the rounding noise
        from which the iterates' own oscillation grows. ``init="7pt"`` fits step 0 like any other
        (one-sided, from steps 0…6): a start above the threshold oscillates from the first step, with
        the initial point's own component along the unstable mode.
        """
        self._check_layout(trajectory)
        if self.init == "3pt":
            k, _ = self._rows(trajectory, step, span=2)
            lo = hi = -1
        else:
            k, lo, hi = self._window(trajectory, step, half=3)
        has_m = "M" in self.names
        if int(trajectory.t[k]) == 0 and self.init == "3pt":
            w = trajectory.theta[k]
            gen = torch.Generator().manual_seed(seed)
            xi = torch.randn(w.shape, generator=gen, dtype=w.dtype).to(w.device)
            rho = self.rho(w.dtype)
            rho = 1e-10 if rho is None else rho
            delta = rho * torch.linalg.vector_norm(w) * xi / torch.linalg.vector_norm(xi)
            out = [w, delta]
            if has_m:
                assert trajectory.m is not None
                out += [trajectory.m[k], torch.zeros_like(w)]
        else:
            sign = -1.0 if step % 2 else 1.0

            def fit(x: Tensor) -> tuple[Tensor, Tensor]:
                return _three_point(x, k, 0) if self.init == "3pt" else _seven_point(x, k, lo, hi)

            w, dw = fit(trajectory.theta)
            out = [w, sign * dw]
            if has_m:
                assert trajectory.m is not None
                m, dm = fit(trajectory.m)
                out += [m, sign * dm]
        return self._with_v(trajectory, k, out)

    def predict(self, step: Tensor, ys: Y) -> dict[str, Tensor | None]:
        z = self.state(ys)
        sign = (1.0 - 2.0 * (step % 2)).to(z.W).unsqueeze(1)  # [n, 1]
        m = None
        if z.M is not None:
            assert z.mu is not None
            m = z.M + sign * z.mu
        return {"theta": z.W + sign * z.Delta, "centre": z.W, "delta": z.Delta, "m": m, "v": z.N}

    def _atol(self, atol: float, y0: Y) -> tuple[float, ...]:
        # before EoS the rod lives at the relative width ρ: resolve it, not just the centre
        rho = self.rho(y0[0].dtype)
        scale = ROUNDOFF_ATOL if self.floor == "roundoff" else (1e-10 if rho is None else rho)
        small = ("Delta", "mu")
        return tuple(atol * scale if name in small else atol for name in self.names)

    def _extra_config(self) -> dict[str, Any]:
        return {"init": self.init, "floor": self.floor, "floor_rate": self.floor_rate,
                "alternating_order": self.alternating_order}


def rod_flow(spec: OptimizerSpec, loss_fn: LossFn, *, order: int = 2, init: str = "7pt",
             floor: float | str | None = "roundoff", floor_rate: float | None = None, rate: str = "step",
             limiter: str | None = "truncate", noise: float | Tensor | None = None, form: str = "delay",
             alternating_order: int | None = None) -> RodFlow:
    """The rod flow of optimizer ``spec`` on ``loss_fn`` (see :class:`RodFlow`).

    Defaults: second order in the delay form (``form="delay"``, solved by the fourth-order Adams rule;
    ``form="look_behind"`` is the ODE, with its correction truncated where it outgrows the
    first-order field, ``limiter="truncate"``), the seven-point initial fit and the roundoff floor.
    ``order=1, init="3pt", floor=1e-10`` is the first-order rod of the first release.
    ``alternating_order`` (delay form; default ``order``): the kernel of the alternating part (Δ, μ), 2 (one
    lag) or 3 (three lags), the centre keeping ``order``'s (``docs/flows.md`` §6d).
    ``noise``: the gradient-noise variance σ² (see :func:`~rodflow.flows.stable.stable_flow`);
    ``N⁺ = β₂N + (1 − β₂)(½[sq(g₊) + sq(g₋)] + E[sq(z)])``.
    """
    return RodFlow(spec, loss_fn, rate=rate, order=order, init=init, floor=floor, floor_rate=floor_rate,
                   limiter=limiter, noise=noise, form=form, alternating_order=alternating_order)
