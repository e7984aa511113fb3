r"""The parts that the flows' vector fields are assembled from: pure functions over typed states.

A flow's state is a :class:`typing.NamedTuple` (``StableState``, ``RodState``) whose entries are
``None`` where the optimizer lacks them; the solver sees the tuple of the present entries
(:func:`pack` / :func:`unpack`). The rod field is built in four parts, each reused by every
variant (first order, look-behind, roundoff floor):

1. :func:`rod_gradients` — ``g± = ∇L(W ± Δ)``, ``ḡ = (g₊ + g₋)/2``, ``g̃ = (g₊ − g₋)/2`` and
   ``sq̄ = ½[sq(g₊) + sq(g₋)]``; for a rod narrower than the rounding of ``W`` the linear response
   ``ḡ = ∇L(W)``, ``g̃ = ∇²L(W)Δ`` (one Hessian-vector product), ``sq̄ = sq(ḡ) + sq(g̃)``;
2. :func:`rod_moments` — ``M⁺ = βM + aḡ``, ``μ⁺ = −βμ − a g̃``, ``N⁺ = β₂N + (1 − β₂)sq̄``
   (with gradient noise of variance σ², ``sq̄ + E[sq(z)]``: see :func:`next_n`);
3. :func:`rod_step_sizes` — ``D̄, D̃ = ½[D(M⁺ − μ⁺, N⁺) ± D(M⁺ + μ⁺, N⁺)]`` (D̃ = 0 unless the step
   size depends on the moment);
4. :func:`rod_increment` — the one-step increment ``F = Z' − Z`` of the rod map:
   ``W' − W = −(D̄Ū + D̃Ũ)``, ``Δ' − Δ = −2Δ + D̄Ũ + D̃Ū``, ``M⁺ − M``, ``μ⁺ − μ``, ``N⁺ − N`` with
   ``Ū = u(M⁺, ḡ)``, ``Ũ = u(−μ⁺, g̃)``.

The stable flow uses :func:`stable_moments` and :func:`stable_increment` (the rod's parts at
Δ = μ = 0). Both build ``N⁺`` with :func:`next_n`, the one place where a gradient-noise variance
enters. :func:`look_behind` turns any one-step increment ``F`` into the second-order field
``F(t − ½, Z − ½F(t, Z))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple, TypeVar

import torch
from torch import Tensor

from ..optimizers.spec import OptimizerSpec

__all__ = ["Moments", "RodGradients", "RodState", "StableState", "StepSizes", "look_behind", "next_n", "pack",
           "rod_gradients", "rod_increment", "rod_moments", "rod_step_sizes", "stable_increment", "stable_moments",
           "truncate", "truncate_relative",
           "unpack"]

Y = tuple[Tensor, ...]


class StableState(NamedTuple):
    """State of the stable flow: centre ``W``, first moment ``M``, second moment ``N``."""

    W: Tensor
    M: Tensor | None = None
    N: Tensor | None = None


class RodState(NamedTuple):
    """State of the rod flow: ``w_k = W + (−1)^k Δ``, ``m_k = M + (−1)^k μ``, ``v_k = N``."""

    W: Tensor
    Delta: Tensor
    M: Tensor | None = None
    mu: Tensor | None = None
    N: Tensor | None = None


S = TypeVar("S", StableState, RodState)


def pack(state: StableState | RodState) -> Y:
    """The solver's tuple: the entries of ``state`` that are present, in order."""
    return tuple(x for x in state if x is not None)


def unpack(cls: type[S], names: Sequence[str], y: Sequence[Tensor]) -> S:
    """The typed state of solver tuple ``y`` whose entries are named ``names``."""
    if len(y) != len(names):
        raise ValueError(f"y: expected a tuple of {len(names)} tensors {tuple(names)}, got {len(y)}")
    return cls(**dict(zip(names, y)))


class RodGradients(NamedTuple):
    """``ḡ``, ``g̃`` and ``sq̄`` (``None`` without a second moment)."""

    gbar: Tensor
    gtil: Tensor
    sq: Tensor | None


class Moments(NamedTuple):
    """Post-update moments ``M⁺``, ``μ⁺``, ``N⁺`` (``None`` where the optimizer lacks them)."""

    M: Tensor | None
    mu: Tensor | None
    N: Tensor | None


class StepSizes(NamedTuple):
    """``D̄`` and ``D̃``: the mean and half-difference of the even and odd steps' step sizes."""

    bar: Tensor | float
    til: Tensor | float


def rod_gradients(spec: OptimizerSpec, grad: Callable[[Tensor], Tensor], w: Tensor, delta: Tensor,
                  linear: Callable[[Tensor, Tensor], tuple[Tensor, Tensor]] | None = None) -> RodGradients:
    """Part 1: the gradients at the rod's ends, ``g± = ∇L(W ± Δ)``.

    With ``linear`` (a function ``(W, Δ) ↦ (∇L(W), ∇²L(W)Δ)``) the linear response is used instead:
    ``ḡ = ∇L(W)``, ``g̃ = ∇²L(W)Δ``, exact to O(‖Δ‖²) and free of the cancellation in
    ``g(W + Δ) − g(W − Δ)`` when ``W ± Δ`` rounds to ``W``.
    """
    if linear is not None:
        gbar, gtil = linear(w, delta)
        sq = None if spec.beta2 is None else spec.second_moment(gbar) + spec.second_moment(gtil)
        return RodGradients(gbar, gtil, sq)
    gp, gm = grad(w + delta), grad(w - delta)
    sq = None if spec.beta2 is None else 0.5 * (spec.second_moment(gp) + spec.second_moment(gm))
    return RodGradients(0.5 * (gp + gm), 0.5 * (gp - gm), sq)


def _n(n: Tensor | None) -> Tensor | None:
    # a solver stage may overshoot N below 0 in the first steps of an adaptive run; N ≥ 0 is
    # the model's domain (√N), and clamping is the identity on it
    return None if n is None else n.clamp_min(0.0)


def next_n(spec: OptimizerSpec, n: Tensor, sq: Tensor, like: Tensor, noise: float | Tensor | None = None) -> Tensor:
    r"""``N⁺ = β₂N + (1 − β₂)(sq + E[sq(z)])``: the second moment's update, in expectation over gradient noise.

    A run whose gradients are ``∇L + z``, ``z ~ N(0, σ²I)`` fresh each step, has ``E[sq(∇L + z)] =
    sq(∇L) + E[sq(z)]`` (:meth:`~rodflow.optimizers.spec.OptimizerSpec.noise_moment`: σ² per
    coordinate, ``d·σ²`` for ``‖g‖²``); the flow, driven by the noiseless ∇L, tracks that mean with
    ``noise = σ²`` (``None``: no noise term). ``like`` is a gradient, for the shape.
    """
    if noise is not None:
        sq = sq + spec.noise_moment(noise, like)
    return spec.next_v(n, sq)


def rod_moments(spec: OptimizerSpec, z: RodState, grads: RodGradients, noise: float | Tensor | None = None
                ) -> Moments:
    """Part 2: ``M⁺ = βM + aḡ``, ``μ⁺ = −βμ − a g̃``, ``N⁺ = β₂N + (1 − β₂)(sq̄ + E[sq(z)])`` (:func:`next_n`)."""
    mp = mup = None
    if z.M is not None:
        assert z.mu is not None
        mp = spec.next_m(z.M, grads.gbar)
        mup = -spec.beta * z.mu - spec.moment_coef * grads.gtil
    n = _n(z.N)
    np_ = None if n is None else next_n(spec, n, grads.sq, grads.gbar, noise)  # type: ignore[arg-type]
    return Moments(mp, mup, np_)


def rod_step_sizes(spec: OptimizerSpec, mom: Moments, tn: float) -> StepSizes:
    """Part 3: ``D̄, D̃`` at step ``tn`` (the number of the step being taken)."""
    if mom.M is None:
        return StepSizes(spec.step_size(None, mom.N, tn), 0.0)
    assert mom.mu is not None
    # the step size may depend on the moment (VRAdam): even and odd steps differ
    d_even, d_odd = spec.step_size(mom.M - mom.mu, mom.N, tn), spec.step_size(mom.M + mom.mu, mom.N, tn)
    return StepSizes(0.5 * (d_even + d_odd), 0.5 * (d_even - d_odd))


def rod_increment(spec: OptimizerSpec, z: RodState, grads: RodGradients, mom: Moments, d: StepSizes,
                  tn: float) -> RodState:
    """Part 4: the one-step increment ``Z' − Z`` of the rod map (see the module docstring)."""
    u_bar = spec.direction(mom.M, grads.gbar, tn)
    u_til = spec.direction(None if mom.mu is None else -mom.mu, grads.gtil, tn)
    dw = -(d.bar * u_bar + d.til * u_til)
    ddelta = -2.0 * z.Delta + d.bar * u_til + d.til * u_bar
    dm = dmu = dn = None
    if mom.M is not None:
        assert z.M is not None and z.mu is not None and mom.mu is not None
        dm, dmu = mom.M - z.M, mom.mu - z.mu
    if mom.N is not None:
        assert z.N is not None
        dn = mom.N - z.N
    return RodState(dw, ddelta, dm, dmu, dn)


def stable_moments(spec: OptimizerSpec, z: StableState, g: Tensor, noise: float | Tensor | None = None) -> Moments:
    """``M⁺ = βM + a g``, ``N⁺ = β₂N + (1 − β₂)(sq(g) + E[sq(z)])`` (:func:`next_n`; μ⁺ is absent)."""
    mp = spec.next_m(z.M, g) if z.M is not None else None
    n = _n(z.N)
    np_ = next_n(spec, n, spec.second_moment(g), g, noise) if n is not None else None
    return Moments(mp, None, np_)


def stable_increment(spec: OptimizerSpec, z: StableState, g: Tensor, mom: Moments, tn: float) -> StableState:
    """The one-step increment of the discrete map: ``−D(M⁺, N⁺)u(M⁺, g)``, ``M⁺ − M``, ``N⁺ − N``."""
    dw = -spec.step_size(mom.M, mom.N, tn) * spec.direction(mom.M, g, tn)
    dm = None if mom.M is None or z.M is None else mom.M - z.M
    dn = None if mom.N is None or z.N is None else mom.N - z.N
    return StableState(dw, dm, dn)


def look_behind(f: Callable[[float, Y], Y], t: float, y: Y, *, limiter: str | None = None) -> Y:
    r"""The second-order field ``F(t − ½, Z − ½F(t, Z))`` of the map ``Z ↦ Z + F(t, Z)``.

    Its Taylor expansion is ``F − ½(∂_tF + F′F) + O(F³)``, the map's second-order modified
    equation: the time-one flow of ``dZ/dt = F − ½(∂_tF + F′F)`` is ``Z + F + O(F³)``. It needs no
    Hessian-vector product, only a second evaluation of ``F``. ``limiter="truncate"`` limits the
    correction of each state entry with :func:`truncate`; ``"truncate_relative"`` with one ratio for
    the state (:func:`truncate_relative`).
    """
    first = f(t, y)
    second = f(t - 0.5, tuple(a - 0.5 * b for a, b in zip(y, first)))
    if limiter is None:
        return second
    if limiter == "truncate_relative":
        return truncate_relative(y, first, second)
    return tuple(truncate(a, b) for a, b in zip(first, second))


def _phi(cn: Tensor, fn: Tensor) -> Tensor:
    """``min(1, fn/cn)`` for squared norms, as a tensor (no host synchronisation)."""
    return torch.where(cn > fn, fn / cn.clamp_min(torch.finfo(cn.dtype).tiny), torch.ones_like(cn))


def truncate_relative(y: Y, first: Y, second: Y) -> Y:
    r""":func:`truncate` with one ratio for the whole state, each entry measured relative to itself.

    ``φ = min(1, Σ_e ‖F_e‖²/‖y_e‖² / Σ_e ‖C_e‖²/‖y_e‖²)`` over the entries e (W, Δ, M, μ, N):
    relative rates, so that no entry's units dominate and the fastest-changing entries (Δ and μ at
    a catapult) decide, and a mode that rotates between two entries (momentum's ringing in
    (Δ, μ)) is not truncated each time one entry's field passes through zero.
    """
    tiny = torch.finfo(first[0].dtype).tiny
    fn = cn = torch.zeros((), dtype=first[0].dtype, device=first[0].device)
    for z, a, b in zip(y, first, second):
        scale = z.square().sum().clamp_min(tiny)
        fn = fn + a.square().sum() / scale
        cn = cn + (b - a).square().sum() / scale
    phi = _phi(cn, fn)
    return tuple(a + phi * (b - a) for a, b in zip(first, second))


def truncate(first: Tensor, second: Tensor) -> Tensor:
    r"""``F + φ·C`` with the correction ``C = F₂ − F`` and ``φ = min(1, ‖F‖²/‖C‖²)``.

    The modified equation is an asymptotic series in the step: its correction is kept while it is
    smaller than the leading term and shrunk to ``‖F‖²/‖C‖`` beyond (optimal truncation, made
    continuous). A mode the map multiplies by ``1 + ε`` grows at ``ε − ε²/2`` under the look-behind,
    which turns negative for ``ε > 2`` (a catapult would reverse); where ``|ε| ≤ 2`` nothing changes.
    No host synchronisation: φ is a tensor.
    """
    c = second - first
    return first + _phi(c.square().sum(), first.square().sum()) * c


def as_float(t: Tensor | float) -> float:
    """Flow time as a Python float."""
    return float(t.item()) if isinstance(t, Tensor) else float(t)
