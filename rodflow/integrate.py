r"""The one integrator: every ODE in rodflow (flows, fits, FlowAdam's runtime solve) goes through here.

:func:`integrate` wraps :func:`torchdiffeq.odeint` with three additions: optional elementwise
clipping of the vector field, solver statistics (field evaluations, accepted and rejected steps),
and failure handling that raises :class:`IntegrationError` (non-finite state, step-size
underflow, too many steps) instead of an ``AssertionError`` deep inside the solver.

With ``delay=τ`` it solves the delay equation

.. math::

    \dot y(t) = f\big(t - τ, y(t - τ)\big) + g\big(t, y(t)\big)

(``f`` the field, ``g`` the optional ``instant`` part) on a grid of step ``h = τ/k`` by the
Adams–Moulton weights applied to the delayed values, ``y_{n+1} = y_n + h Σ_j b_j f_{n+1−j−k} + h g_n``
with ``f_i = f(t_i, y_i)``: ``"trapezoid"`` (b = ½, ½; second order), ``"adams3"``
(5/12, 8/12, −1/12; third) and ``"adams4"`` (9/24, 19/24, −5/24, 1/24; fourth order). Every
delayed value is already known (``k ≥ 1``), so the rules are explicit and a step costs one
evaluation of ``f`` whatever the order; ``g`` is taken at ``y_n`` (first order). The past
``y(t₀ − s)`` is the tangent ``y₀ − s f(t₀, y₀)`` (``history="tangent"``), ``y₀``
(``"constant"``) or a function of t. torchdiffeq has no delay solver; these rules are the
integrator's own (see ``docs/flows.md`` §6b for why the rod flows use them).

``delay`` may also be a mapping ``{τ_j: c_j}`` of lags to weights, for

.. math::

    \dot y(t) = \sum_j c_j\, f\big(t - τ_j, y(t - τ_j)\big) + g\big(t, y(t)\big),

each lag a whole number ``k_j ≥ 0`` of steps: a lag ``k_j ≥ 1`` enters through the Adams–Moulton
weights on its delayed values as above, a lag 0 (the undelayed value, not yet known) through the
Adams–Bashforth weights of the same order on ``f_n, f_{n−1}, …`` (``"trapezoid"``: 3/2, −1/2;
``"adams3"``: 23/12, −16/12, 5/12; ``"adams4"``: 55/24, −59/24, 37/24, −9/24), so the rule stays
explicit at one evaluation of ``f`` per step. A weight may also be a sequence of weights, one per
entry of a tuple state (``c_j`` then acts entry by entry: a different kernel for each part of the
state, e.g. the rod's centre and its alternating part), at the same cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torchdiffeq import odeint
from torchdiffeq._impl.odeint import SOLVERS as _TORCHDIFFEQ_SOLVERS
from torchdiffeq._impl.solvers import AdaptiveStepsizeODESolver

from .progress import enabled, progress_bar

__all__ = ["DELAY_METHODS", "FIXED_STEP_METHODS", "HISTORIES", "METHODS", "IntegrationError", "IntegrationResult", "SolverStats",
           "integrate"]

State = Tensor | tuple[Tensor, ...]
#: A delay weight: one number, or one per entry of a tuple state.
Weight = float | tuple[float, ...]
Field = Callable[[Tensor, Any], Any]

# torchdiffeq's own solver table; "scipy_solver" is left out (it leaves torch, so no tuple states
# and no step callbacks).
_SOLVERS = {name: cls for name, cls in _TORCHDIFFEQ_SOLVERS.items() if name != "scipy_solver"}
ADAPTIVE_METHODS = tuple(n for n, c in _SOLVERS.items() if issubclass(c, AdaptiveStepsizeODESolver))
FIXED_STEP_METHODS = tuple(n for n in _SOLVERS if n not in ADAPTIVE_METHODS)
#: Methods accepted by :func:`integrate`: torchdiffeq's solver table, by its names.
METHODS = ADAPTIVE_METHODS + FIXED_STEP_METHODS

#: Methods for a delay equation (``integrate(..., delay=τ)``): explicit Adams rules of order 2, 3, 4.
DELAY_METHODS = ("trapezoid", "adams3", "adams4")
_DELAY_WEIGHTS = {"trapezoid": (1 / 2, 1 / 2), "adams3": (5 / 12, 8 / 12, -1 / 12),
                  "adams4": (9 / 24, 19 / 24, -5 / 24, 1 / 24)}
#: The explicit (Adams–Bashforth) weights of the same orders, for a lag of 0.
_UNDELAYED_WEIGHTS = {"trapezoid": (3 / 2, -1 / 2), "adams3": (23 / 12, -16 / 12, 5 / 12),
                      "adams4": (55 / 24, -59 / 24, 37 / 24, -9 / 24)}
#: The past of a delay equation before ``t₀``: the tangent ``y₀ + (t − t₀)f(t₀, y₀)`` or ``y₀``
#: (or a callable ``t ↦ y(t)``).
HISTORIES = ("tangent", "constant")

#: Step attempts allowed by default (``options={"max_num_steps": n}`` changes it).
MAX_NUM_STEPS = 1_000_000


class IntegrationError(RuntimeError):
    """The solve failed: non-finite state or field, step-size underflow, or too many steps.

    ``stats`` holds the solver statistics up to the failure.
    """

    def __init__(self, message: str, stats: SolverStats):
        super().__init__(message)
        self.stats = stats


@dataclass
class SolverStats:
    """Work done by one solve."""

    nfe: int = 0  #: vector-field evaluations
    n_steps: int = 0  #: steps taken (accepted steps for adaptive methods)
    n_rejected: int = 0  #: rejected step attempts (adaptive methods)

    def as_dict(self) -> dict[str, int]:
        return {"nfe": self.nfe, "n_steps": self.n_steps, "n_rejected": self.n_rejected}


@dataclass
class IntegrationResult:
    """States at the requested times (leading time axis, like ``odeint``) and solver statistics."""

    ys: State
    t: Tensor
    stats: SolverStats


def _all_finite(y: State) -> bool:
    if isinstance(y, Tensor):
        return bool(torch.isfinite(y).all())
    return all(bool(torch.isfinite(part).all()) for part in y)


class _Abort(Exception):
    """Raised from a step callback to stop the solver; :func:`integrate` turns it into IntegrationError."""


class _CountedField(nn.Module):
    """Counts evaluations and steps through torchdiffeq's callback protocol, enforces the step cap and
    the smallest step there (our own checks: torchdiffeq's asserts vanish under ``python -O``), and
    clips the field."""

    def __init__(self, field: Field, clip: float | None, stats: SolverStats, adaptive: bool, max_steps: int,
                 bar: Any = None, t0: float = 0.0):
        super().__init__()
        self.bar = bar
        self._shown = t0
        self.field = field
        self.clip = clip
        self.stats = stats
        self.max_steps = max_steps
        self.adaptive = adaptive
        if adaptive:
            self.callback_accept_step = self._accept
            self.callback_reject_step = self._reject

    def _check_cap(self) -> None:
        if self.stats.n_steps + self.stats.n_rejected >= self.max_steps:
            raise _Abort(f"max_num_steps exceeded ({self.max_steps} step attempts); the field is too stiff for "
                         "this method and tolerance, or raise options['max_num_steps']")

    def callback_step(self, t0: Tensor, y0: State, dt: Tensor) -> None:
        """Before each step (attempt): the cap; for adaptive methods, the step must still move t
        (else it has underflowed); fixed-step methods count their steps here."""
        self._check_cap()
        if not self.adaptive:
            self.stats.n_steps += 1
            self._progress(t0, dt)
        elif bool(t0 + dt == t0) or not bool(torch.isfinite(dt)):
            raise _Abort(f"step size underflow (dt = {float(dt):.3g} at t = {float(t0):.6g}); the field is too "
                         "stiff or blows up")

    def _accept(self, t0: Tensor, y0: State, dt: Tensor) -> None:
        self.stats.n_steps += 1
        self._progress(t0, dt)

    def _progress(self, t0: Tensor, dt: Tensor) -> None:
        if self.bar is None:
            return
        now = float(t0 + dt)
        self.bar.update(abs(now - self._shown))
        self._shown = now
        self.bar.set_postfix(h=f"{float(dt):.3g}", nfe=self.stats.nfe, refresh=False)

    def _reject(self, t0: Tensor, y0: State, dt: Tensor) -> None:
        self.stats.n_rejected += 1

    def forward(self, t: Tensor, y: State) -> State:
        self.stats.nfe += 1
        return _clipped(self.field(t, y), self.clip)


def integrate(
    field: Field,
    y0: State,
    t: Tensor | Any,
    *,
    method: str = "dopri5",
    rtol: float | tuple[float, ...] = 1e-7,
    atol: float | tuple[float, ...] = 1e-9,
    options: dict[str, Any] | None = None,
    clip: float | None = None,
    check_finite: bool = True,
    progress: bool | None = None,
    delay: float | Mapping[float, float | tuple[float, ...]] | None = None,
    instant: Field | None = None,
    history: str | Callable[[float], Any] = "tangent",
) -> IntegrationResult:
    """Solve ``dy/dt = field(t, y)`` from ``y(t[0]) = y0`` and return ``y`` at every time in ``t``.

    Args:
        field: the vector field, torchdiffeq's convention ``field(t, y)``; ``y`` is a tensor or a
            tuple of tensors and the field returns the same structure.
        y0: the initial state.
        t: increasing (or decreasing) 1-d times; the output has a leading axis of ``len(t)``.
        method: a torchdiffeq method (:data:`METHODS`); fixed-step methods take
            ``options={"step_size": h}`` (default: the spacing of ``t``).
        rtol, atol: tolerances of the adaptive methods; for a tuple state, a tuple gives one
            tolerance per entry (e.g. a small ``atol`` for an entry that lives at a small scale).
        options: passed to torchdiffeq (e.g. ``step_size``); ``max_num_steps`` (default
            :data:`MAX_NUM_STEPS`) caps the step attempts, enforced by rodflow's own step callbacks
            together with the step-size underflow check (so both hold under ``python -O`` too).
        clip: if given, each component of the field is clamped to ``[-clip, clip]``.
        check_finite: raise :class:`IntegrationError` if a returned state is not finite.
        progress: a bar on stderr in flow time, with the current step size and field evaluations
            (``None``: only when stderr is a terminal; see :mod:`rodflow.progress`).
        delay: solve the delay equation ``dy/dt = field(t − τ, y(t − τ)) + instant(t, y(t))`` with
            ``τ = delay`` instead (methods :data:`DELAY_METHODS`, default ``"trapezoid"``;
            ``options={"step_size": h}`` with ``τ/h`` a whole number, default ``h = τ``; every time
            in ``t`` must lie on the grid of ``h``). A mapping ``{τ_j: c_j}`` solves
            ``dy/dt = Σ_j c_j field(t − τ_j, y(t − τ_j)) + instant(t, y(t))`` (lags ≥ 0, at least one
            positive; default ``h`` the smallest positive lag; see the module docstring); a weight may be a
            tuple of weights, one per entry of a tuple state.
        instant: the delay equation's undelayed part (``None``: none; it may return ``None`` where it
            vanishes); only with ``delay``.
        history: the delay equation's past before ``t[0]`` (:data:`HISTORIES`, or a callable
            ``t ↦ y(t)`` for ``t < t[0]``).

    Raises:
        IntegrationError: non-finite state, step-size underflow or ``max_num_steps`` exceeded.

    >>> import torch
    >>> res = integrate(lambda t, y: -y, torch.tensor([1.0], dtype=torch.float64),
    ...                 torch.tensor([0.0, 1.0], dtype=torch.float64))
    >>> abs(res.ys[-1].item() - 0.36787944117) < 1e-7
    True
    """
    if clip is not None and not clip > 0:
        raise ValueError(f"clip must be positive, got {clip!r}")
    if not callable(field):
        raise TypeError("field must be callable as field(t, y)")
    ref = y0 if isinstance(y0, Tensor) else y0[0]
    t = torch.as_tensor(t, dtype=ref.dtype if ref.is_floating_point() else None, device=ref.device)
    if t.ndim != 1 or t.numel() < 2:
        raise ValueError(f"t must be a 1-d tensor of at least two times, got shape {tuple(t.shape)}")
    opts = dict(options or {})
    max_steps = opts.pop("max_num_steps", MAX_NUM_STEPS)
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"options['max_num_steps'] must be a positive int, got {max_steps!r}")
    stats = SolverStats()
    if not _all_finite(y0):
        raise IntegrationError("integrate: y0 is not finite", stats)
    if delay is not None:
        return _integrate_delay(field, y0, t, delay=delay, method="trapezoid" if method == "dopri5" else method,
                                opts=opts, max_steps=max_steps, clip=clip, check_finite=check_finite,
                                progress=progress, instant=instant, history=history, stats=stats)
    if instant is not None:
        raise ValueError("instant: only a delay equation (delay=τ) has an undelayed part")
    if method not in METHODS:
        raise ValueError(f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    for tol_name, tol in (("rtol", rtol), ("atol", atol)):
        values = tol if isinstance(tol, tuple) else (tol,)
        if isinstance(tol, tuple) and (isinstance(y0, Tensor) or len(tol) != len(y0)):
            raise ValueError(f"{tol_name}: a tuple of tolerances needs a tuple state of the same length")
        if not all(isinstance(x, int | float) and x > 0 for x in values):
            raise ValueError(f"{tol_name} must be positive, got {tol!r}")
    adaptive = method in ADAPTIVE_METHODS
    if adaptive:
        opts["max_num_steps"] = max_steps + 1  # ours fires first; torchdiffeq's assert is the backstop
    span = float(abs(t[-1] - t[0]))
    with progress_bar(span, f"integrate ({method})", progress=progress, unit="t") as bar:
        func = _CountedField(field, clip, stats, adaptive=adaptive, max_steps=max_steps,
                             bar=bar if enabled(progress) else None, t0=float(t[0]))
        try:
            ys = odeint(func, y0, t, method=method, rtol=rtol, atol=atol, options=opts)
        except _Abort as err:
            raise IntegrationError(f"integrate: {err}", stats) from None
        except AssertionError as err:  # fallback: torchdiffeq's own asserts (absent under python -O)
            _raise_from_assert(err, stats)
    if check_finite and not _all_finite(ys):
        raise IntegrationError("integrate: the solution is not finite", stats)
    return IntegrationResult(ys=ys, t=t, stats=stats)


def _add(y: State, *terms: tuple[Weight, State]) -> State:
    """``y + Σ c·d`` over ``(c, d)`` in ``terms``, for a tensor or a tuple state; a tuple ``c`` weighs a
    tuple state entry by entry."""
    if isinstance(y, Tensor):
        out = y
        for c, d in terms:
            out = out + c * d  # type: ignore[operator]
        return out
    parts = list(y)
    for c, d in terms:
        if isinstance(c, tuple):
            parts = [a + ci * b for a, ci, b in zip(parts, c, d)]
        else:
            parts = [a + c * b for a, b in zip(parts, d)]
    return tuple(parts)


def _clipped(dy: State, clip: float | None) -> State:
    if clip is None:
        return dy
    return dy.clamp(-clip, clip) if isinstance(dy, Tensor) else tuple(d.clamp(-clip, clip) for d in dy)


def _lags(delay: Any) -> list[tuple[float, Weight]]:
    """``delay`` (a positive number, or a mapping of lags ≥ 0 to weights: numbers, or sequences of numbers
    of one common length, one per state entry) as ``[(τ_j, c_j)]``, checked."""
    def number(x: Any) -> bool:
        return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)

    def weight(c: Any) -> bool:
        return number(c) or (isinstance(c, tuple | list) and len(c) > 0 and all(number(x) for x in c))

    if isinstance(delay, Mapping):
        items = sorted(delay.items())
        if not items or not all(number(lag) and lag >= 0 and weight(c) for lag, c in items):
            raise ValueError(f"delay: a mapping of lags ≥ 0 to finite weights was expected, got {delay!r}")
        if items[-1][0] <= 0:
            raise ValueError(f"delay: at least one lag must be positive, got {delay!r}")
        sizes = {len(c) for _, c in items if not number(c)}
        if len(sizes) > 1 or (sizes and any(number(c) for _, c in items)):
            raise ValueError(f"delay: per-entry weights must all have one length, got {delay!r}")
        return [(float(lag), float(c) if number(c) else tuple(float(x) for x in c)) for lag, c in items]
    if not number(delay) or not delay > 0:
        raise ValueError(f"delay must be a positive number or a mapping of lags to weights, got {delay!r}")
    return [(float(delay), 1.0)]


def _integrate_delay(field: Field, y0: State, t: Tensor, *, delay: float | Mapping[float, Weight], method: str,
                     opts: dict[str, Any], max_steps: int, clip: float | None, check_finite: bool,
                     progress: bool | None, instant: Field | None, history: str | Callable[[float], Any],
                     stats: SolverStats) -> IntegrationResult:
    """The explicit Adams rules for ``dy/dt = Σ_j c_j field(t − τ_j, y(t − τ_j)) + instant(t, y)`` (module
    docstring); ``field``, ``y0``, ``t``, ``clip`` and ``max_steps`` are checked by :func:`integrate`."""
    if method not in DELAY_METHODS:
        raise ValueError(f"method: a delay equation is solved by {', '.join(DELAY_METHODS)}, got {method!r}")
    lags = _lags(delay)
    if not callable(history) and history not in HISTORIES:
        raise ValueError(f"history must be one of {HISTORIES} or a callable t ↦ y(t), got {history!r}")
    if instant is not None and not callable(instant):
        raise TypeError("instant must be callable as instant(t, y)")
    h = opts.pop("step_size", min(lag for lag, _ in lags if lag > 0))
    if opts:
        raise ValueError(f"options: the delay rules take step_size and max_num_steps, got {sorted(opts)}")
    if isinstance(h, bool) or not isinstance(h, int | float) or not h > 0:
        raise ValueError(f"options['step_size'] must be a positive number, got {h!r}")
    sizes = {len(c) for _, c in lags if isinstance(c, tuple)}
    if sizes and (isinstance(y0, Tensor) or sizes != {len(y0)}):
        raise ValueError(f"delay: per-entry weights need a tuple state of {sizes.pop()} entries, got "
                         f"{'a tensor' if isinstance(y0, Tensor) else f'{len(y0)} entries'}")
    kernel: list[tuple[int, Weight]] = []  # (k_j, c_j): the lags in steps
    for lag, c in lags:
        k = round(lag / h)
        if abs(k * h - lag) > 1e-9 * max(lag, h) or (lag > 0 and k < 1):
            raise ValueError(f"options['step_size']: every delay must be a whole number of steps, got {lag} "
                             f"with h = {h}")
        kernel.append((k, c))
    t0 = float(t[0])
    grid = (t - t0) / h
    nodes = grid.round()
    if bool((nodes.diff() <= 0).any()) or bool(((grid - nodes).abs() > 1e-6).any()):
        raise ValueError(f"t: the times must increase and lie on the grid t[0] + n·h (h = {h})")
    wanted = {int(n) for n in nodes.tolist()}
    n_last = int(nodes[-1])
    if n_last > max_steps:
        raise IntegrationError(f"integrate: max_num_steps exceeded ({n_last} steps of h = {h} wanted, "
                               f"{max_steps} allowed)", stats)

    def f(tt: float, y: State) -> State:
        stats.nfe += 1
        return _clipped(field(torch.tensor(tt, dtype=t.dtype), y), clip)

    b, b0 = _DELAY_WEIGHTS[method], _UNDELAYED_WEIGHTS[method]
    # the weights on f_{n−d} (past[−1 − d]) of one step: lag k ≥ 1 reads f_{n+1−k−i}, lag 0 reads f_{n−i}
    def scaled(c: Weight, bi: float) -> Weight:  # h·c·b_i, entry by entry for per-entry weights
        return tuple(h * ci * bi for ci in c) if isinstance(c, tuple) else h * c * bi

    weights: list[tuple[int, Weight]] = []
    for k, c in kernel:
        weights += [(k - 1 + i, scaled(c, bi)) for i, bi in enumerate(b)] if k else [
            (i, scaled(c, bi)) for i, bi in enumerate(b0)]
    depth = max(d for d, _ in weights) + 1  # f at the nodes n + 1 − depth … n
    f0 = f(t0, y0)

    def before(j: int) -> State:
        """y at the node −j of the past."""
        if callable(history):
            return history(t0 - j * h)  # type: ignore[no-any-return]
        return y0 if history == "constant" else _add(y0, (-j * h, f0))

    past = [f(t0 - j * h, before(j)) for j in range(depth - 1, 0, -1)]
    past.append(f0)
    out: list[State] = [y0]
    y = y0
    label = ", ".join(f"{lag:g}" for lag, _ in lags)
    with progress_bar(float(t[-1]) - t0, f"integrate ({method}, delay {label})", progress=progress,
                      unit="t") as bar:
        for n in range(n_last):
            tn = t0 + n * h
            terms = [(w, past[-1 - d]) for d, w in weights]
            g = None if instant is None else instant(torch.tensor(tn, dtype=t.dtype), y)
            if g is not None:  # an instant part may be absent at times (``None``)
                terms.append((h, _clipped(g, clip)))
            y = _add(y, *terms)
            stats.n_steps += 1
            if n + 1 in wanted:
                out.append(y)
            if n + 1 < n_last:
                past = [*past[1:], f(tn + h, y)]
            bar.update(h)
            bar.set_postfix(h=f"{h:.3g}", nfe=stats.nfe, refresh=False)
            if check_finite and not _all_finite(y):
                raise IntegrationError(f"integrate: the solution is not finite at t = {tn + h:.6g}", stats)
    ys: State = torch.stack(out) if isinstance(y0, Tensor) else tuple(  # type: ignore[arg-type]
        torch.stack([o[i] for o in out]) for i in range(len(y0)))
    return IntegrationResult(ys=ys, t=t, stats=stats)


def _raise_from_assert(err: AssertionError, stats: SolverStats) -> None:
    """Map torchdiffeq's assert texts to :class:`IntegrationError` (a fallback: our own step
    callbacks catch the step cap and step-size underflow first); re-raise anything else."""
    msg = str(err)
    if "underflow" in msg:
        raise IntegrationError(f"integrate: step size underflow ({msg}); the field is too stiff "
                               "or blows up", stats) from err
    if "non-finite" in msg:
        raise IntegrationError("integrate: the state became non-finite", stats) from err
    if "max_num_steps" in msg:
        raise IntegrationError(f"integrate: {msg}", stats) from err
    raise err
