"""What every flow shares: the :class:`Flow` interface, initial conditions, solving and the solution.

Time is measured in optimizer steps everywhere: flow time ``t = k`` corresponds to iterate ``k``.
A flow's state is a typed :class:`typing.NamedTuple` (:class:`~rodflow.flows.parts.StableState`
``(W, M, N)``, :class:`~rodflow.flows.parts.RodState` ``(W, Δ, M, μ, N)``); the solver sees the
tuple of its present entries (torchdiffeq's convention), named by :attr:`Flow.names` (no
``M``/``μ`` without momentum, no ``N`` without a second moment).

Every flow is built from its one-step increment ``F(t, Z)`` (the map ``Z ↦ Z + F``): ``order=1``
integrates ``dZ/dt = F(t, Z)``; ``order=2`` reads the map to second order in one of two forms:
``form="look_behind"``, the ODE ``dZ/dt = F(t − ½, Z − ½F(t, Z))``, the second-order modified
equation ``F − ½(∂_tF + F′F)`` without Hessian-vector products, or ``form="delay"``, the delay
equation ``dZ/dt = F(t − ½, Z(t − ½))``: the map's increment over ``[k, k + 1]`` is its value at
the midpoint (see ``docs/flows.md``). ``order=3`` is the delay form with three lags,
``dZ/dt = −⅙F(t, Z(t)) + ⁴⁄₃F(t − ½, Z(t − ½)) − ⅙F(t − 1, Z(t − 1))``: the third-order modified
equation ``F − ½F′F + ⅓F′F′F + (1/12)F″(F, F)`` without derivatives of F (§6c).
"""

from __future__ import annotations

import math
import operator
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import torch
from torch import Tensor

from ..derivatives import LossFn, gradient
from ..integrate import DELAY_METHODS, SolverStats, integrate
from ..optimizers.spec import OptimizerSpec
from ..trajectory import PhaseSeries, Trajectory
from .parts import as_float, look_behind

__all__ = ["DELAY3", "FORMS", "KERNELS", "LIMITERS", "ORDERS", "RATES", "TRANSIENT_STEPS", "Flow", "FlowSolution", "TransientWarning",
           "check_noise"]

#: Relaxation rates of the moments' centres: ``Ṁ = κ(M⁺ − M)`` with κ = 1 (``"step"``: the flow's
#: Euler step of size 1 is the discrete EMA, ``Ṁ = a g − (1 − β)M``) or κ = 1/β (``"central"``,
#: the continuous-time EMA of the central-flows code, ``Ṁ = (a g − (1 − β)M)/β``).
RATES = ("step", "central")
#: Orders of the flow: 1 (``dZ/dt = F``), 2 (see :data:`FORMS`) or 3 (the delay form only: :data:`DELAY3`).
ORDERS = (1, 2, 3)
#: Forms of the second-order flow: ``"look_behind"`` (the ODE ``dZ/dt = F(t − ½, Z − ½F(t, Z))``)
#: or ``"delay"`` (the delay equation ``dZ/dt = F(t − ½, Z(t − ½))``, solved by the integrator's Adams
#: rule of :func:`~rodflow.integrate.integrate`).
FORMS = ("look_behind", "delay")
#: The delay of ``form="delay"``: half a step.
DELAY = 0.5
#: The lags and weights of ``order=3`` (``form="delay"``): ``Σ_j c_j e^{−sτ_j}`` equals the map's
#: ``s/(e^s − 1) = 1 − s/2 + s²/12 + 0·s³ + …`` through s³, so a mode the map multiplies by z grows
#: at ``ln z + O(ε⁴)`` and the nonlinear modified equation holds to third order (``docs/flows.md`` §6c).
DELAY3 = {0.0: -1 / 6, 0.5: 4 / 3, 1.0: -1 / 6}
#: The delay form's kernel of each order as a mapping of lags to weights (order 2: :data:`DELAY` alone).
KERNELS: dict[int, dict[float, float]] = {2: {DELAY: 1.0}, 3: DELAY3}
#: The default rule and step of ``form="delay"``: the fourth-order Adams rule at a quarter step,
#: four evaluations of F per step (8 gradients per step for the rod). Chosen on digits seed 1
#: (``results/fidelity_adams_digits_seed1.md``): its EoS-window distance to the iterates was within
#: 3.2 % of the h = 1/16 solve for all eight optimizers (at h = ½ up to 67 %, NAdam); the
#: trapezoidal rule at h = ¼ was up to 12.8 % off (``results/fidelity_steps_digits_seed1.md``).
DELAY_METHOD = "adams4"
DELAY_STEP = 0.25
#: Limiters of the look-behind correction (order 2): ``None``, ``"truncate"`` (a ratio per state
#: entry, :func:`~rodflow.flows.parts.truncate`) or ``"truncate_relative"`` (one ratio for the
#: state, :func:`~rodflow.flows.parts.truncate_relative`).
LIMITERS = (None, "truncate", "truncate_relative")
#: Steps of an adaptive optimizer's start-up transient: with ``v ≈ (1 − β₂)g²`` the first steps
#: are ≈ lr·sign(g) and the iterates' preconditioned sharpness is far above its threshold (measured
#: on an MNIST-5k MLP with Adam: 9,540 at step 1, 19 at step 3, 8.5 at step 10, threshold 38), a
#: jump that no flow can follow. A flow of an adaptive method started before this step warns.
TRANSIENT_STEPS = 10


class TransientWarning(UserWarning):
    """A flow of an adaptive optimizer starts inside the first-step transient (see :data:`TRANSIENT_STEPS`)."""


def _index(name: str, value: Any) -> int:
    """``operator.index(value)`` (ints, numpy and 0-d integer tensors), refusing bools, naming ``name``."""
    if isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer, not a bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}") from None


def _same(a: Any, b: Any) -> bool:
    """Equality of recorded hyperparameters (floats to 1e-12 relative, sequences elementwise)."""
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return bool(a == b)

Y = tuple[Tensor, ...]


def check_noise(noise: Any, spec: OptimizerSpec) -> float | Tensor | None:
    """Validate a gradient-noise variance σ² (a number, or a 0-d or ``[d]`` tensor per coordinate).

    ``None`` is no noise term. It must be finite and non-negative, and only optimizers with a
    second moment have a place for it (:func:`~rodflow.flows.parts.next_n`); otherwise ``ValueError``
    naming ``noise``.
    """
    if noise is None:
        return None
    if isinstance(noise, bool) or not isinstance(noise, Real | Tensor):
        raise TypeError(f"noise must be a number or a tensor of per-coordinate variances, got {type(noise).__name__}")
    if isinstance(noise, Tensor):
        if noise.ndim > 1 or not noise.is_floating_point():
            raise ValueError(f"noise: a tensor of variances must be a 0-d or flat floating-point tensor, got "
                             f"shape {tuple(noise.shape)} and dtype {noise.dtype}")
        if not bool(torch.isfinite(noise).all()) or bool((noise < 0).any()):
            raise ValueError("noise: the gradient-noise variances must be finite and non-negative")
        noise = noise.detach()
    else:
        noise = float(noise)
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise: the gradient-noise variance must be finite and non-negative, got {noise!r}")
    if spec.beta2 is None:
        raise ValueError(f"noise: {spec.name} has no second moment, so a gradient-noise variance has no place in its "
                         "flow (its expected step is the noiseless one); leave noise=None")
    return noise


def _noise_config(noise: float | Tensor | None) -> float | list[float] | None:
    if isinstance(noise, Tensor):
        return noise.item() if noise.ndim == 0 else noise.tolist()
    return noise


@dataclass
class FlowSolution(PhaseSeries):
    """A flow solved from a recorded state, sampled at every integer step.

    Attributes:
        t: ``[n]`` steps (int64), ``t[0]`` the start.
        theta: ``[n, d]`` the predicted iterates (for the rod: ``W + (−1)^k Δ``).
        centre: ``[n, d]`` the centre ``W`` (equal to ``theta`` for the stable flow).
        delta: ``[n, d]`` the rod's half-difference ``Δ`` (``None`` for the stable flow).
        m: ``[n, d]`` predicted first moments, or ``None``.
        v: ``[n, d]`` (or ``[n]``) second moments ``N``, or ``None``.
        loss: ``[n]`` the loss at the predicted iterates.
        stats: solver statistics of the solve.
        kind: ``"stable"`` or ``"rod"``.
        sharpness: optional series like :attr:`Trajectory.sharpness`.
        config: what produced the solution.
        flow: the :class:`Flow` that produced it (gives its optimizer spec and loss).
        predicted_loss: ``[n]`` the flow's prediction of the time-averaged loss, or ``None``
            (the central flow: ``L(W) + ½⟨H, Σ⟩``).
    """

    t: Tensor
    theta: Tensor
    centre: Tensor
    delta: Tensor | None
    m: Tensor | None
    v: Tensor | None
    loss: Tensor
    stats: SolverStats
    kind: str
    sharpness: dict[str, Tensor] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    flow: Flow | None = field(default=None, repr=False, compare=False)
    predicted_loss: Tensor | None = None


def _three_point(x: Tensor, k: int, first: int) -> tuple[Tensor, Tensor]:
    """Centre and signed half-difference of a period-two sequence around row ``k`` of ``x``.

    Interior: ``C = (x₋ + 2x₀ + x₊)/4``, ``Δ = (2x₀ − x₋ − x₊)/4`` (exact when the centre is
    linear and Δ constant over the three points; the two-point mean lags half a step).
    At the first row: ``Δ = (x₀ − 2x₁ + x₂)/4``, ``C = x₀ − Δ``. ``Δ`` is returned with the sign
    of iterate ``k``, i.e. ``x_k = C + Δ``.
    """
    if k > first:
        a, b, c = x[k - 1], x[k], x[k + 1]
        return (a + 2 * b + c) / 4, (2 * b - a - c) / 4
    a, b, c = x[k], x[k + 1], x[k + 2]
    d = (a - 2 * b + c) / 4
    return a - d, d


_BINOMIAL_6 = (1.0, -6.0, 15.0, -20.0, 15.0, -6.0, 1.0)  # (−1)^j C(6, j)


def _seven_point(x: Tensor, k: int, lo: int, hi: int) -> tuple[Tensor, Tensor]:
    """Centre and signed deviation of a period-two sequence at row ``k`` from seven rows of ``x``.

    With rows ``c − 3 … c + 3`` (``c = k`` when rows ``lo … hi`` allow it, else the nearest
    window inside them), ``d_c = −Σ_j (−1)^j C(6, j) x_{c−3+j} / 64``: the sixth difference
    cancels a centre polynomial of degree ≤ 5 and returns the alternating part exactly (also when
    its amplitude varies linearly). Off-centre, ``d_k = (−1)^{k−c} d_c``. Returns ``(x_k − d_k, d_k)``,
    i.e. ``x_k = C + d``.
    """
    if hi - lo < 6:
        raise ValueError(f"step: the seven-point initial state needs 7 consecutive recorded steps around row {k}, "
                         f"only {hi - lo + 1} are available (use init='3pt')")
    c = min(max(k, lo + 3), hi - 3)
    acc = x[c - 3] * _BINOMIAL_6[0]
    for j in range(1, 7):
        acc = acc + _BINOMIAL_6[j] * x[c - 3 + j]
    d = -acc / 64.0
    if (k - c) % 2:
        d = -d
    return x[k] - d, d


class Flow(ABC):
    """A flow of an optimizer: a vector field over a tuple state, built from the optimizer's spec.

    The field reads everything from ``spec`` (its β, a, β₂, sq, D and u), so each optimizer's
    mathematics lives only in its spec.
    """

    kind: str

    def __init__(self, spec: OptimizerSpec, loss_fn: LossFn, *, rate: str = "step", order: int = 1,
                 limiter: str | None = None, noise: float | Tensor | None = None, form: str = "look_behind"):
        if not isinstance(spec, OptimizerSpec):
            raise TypeError(f"spec must be an OptimizerSpec (see rodflow.optimizer), got {type(spec).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(theta)")
        if rate not in RATES:
            raise ValueError(f"rate must be one of {RATES}, got {rate!r}")
        if isinstance(order, bool) or order not in ORDERS:
            raise ValueError(f"order must be one of {ORDERS}, got {order!r}")
        if order >= 2 and rate != "step":
            raise ValueError(f"order={order} is the modified equation of the discrete map and needs rate='step'")
        if limiter not in LIMITERS:
            raise ValueError(f"limiter must be one of {LIMITERS}, got {limiter!r}")
        if form not in FORMS:
            raise ValueError(f"form must be one of {FORMS}, got {form!r}")
        if order == 3 and form != "delay":
            raise ValueError("order=3 exists in the delay form only: pass form='delay'")
        self.form: str | None = form if order >= 2 else None
        # the limiter acts on the look-behind only
        self.limiter = limiter if self.form == "look_behind" else None
        self.spec = spec
        self.noise = check_noise(noise, spec)
        self.loss_fn = loss_fn
        self.rate = rate
        self.order = int(order)
        self.grad = gradient(loss_fn)
        self.nfe_grad = 0

    def kernel(self) -> float | dict[float, Any]:
        """The delay form's lags and weights (``integrate``'s ``delay``): :data:`DELAY` at order 2,
        :data:`DELAY3` at order 3."""
        return DELAY if self.order == 2 else DELAY3

    # ------------------------------------------------------------------ layout
    @property
    @abstractmethod
    def names(self) -> tuple[str, ...]:
        """Names of the state's entries, in order."""

    def unpack(self, y: Y) -> dict[str, Tensor]:
        if len(y) != len(self.names):
            raise ValueError(f"y: expected a tuple of {len(self.names)} tensors {self.names}, got {len(y)}")
        return dict(zip(self.names, y))

    def _relax(self, beta: float) -> float:
        """Multiplier of ``(X⁺ − X)`` in the moments' centre equations (see :data:`RATES`)."""
        if self.rate == "central" and beta > 0:
            return 1.0 / beta
        return 1.0

    def _relaxed(self, f: Any) -> Any:
        """The increment ``f`` (a flow's typed state) with its moment centres' entries scaled by κ."""
        s = self.spec
        if getattr(f, "M", None) is not None:
            f = f._replace(M=self._relax(s.beta) * f.M)
        if getattr(f, "N", None) is not None:
            assert s.beta2 is not None
            f = f._replace(N=self._relax(s.beta2) * f.N)
        return f

    def _g(self, theta: Tensor) -> Tensor:
        self.nfe_grad += 1
        return self.grad(theta)

    # ------------------------------------------------------------------ the field
    @abstractmethod
    def increment(self, t: float, y: Y) -> Y:
        """The one-step increment ``F(t, Z)`` of the flow's map (moment entries scaled by κ)."""

    def instant(self, t: Tensor | float, y: Y) -> Y | None:
        """Terms added at the current state, outside the look-behind or the delay (the rod's floor); none by default."""
        return None

    def delayed(self, t: Tensor | float, y: Y) -> Y:
        """``F(t, Z)``: the delay equation's delayed part (``form="delay"``)."""
        return self.increment(as_float(t), y)

    def field(self, t: Tensor | float, y: Y) -> Y:
        """``dy/dt`` in torchdiffeq's convention: ``F(t, Z)`` (order 1) or ``F(t − ½, Z − ½F(t, Z))``.

        ``form="delay"`` has no such field: it is a delay equation, whose parts are
        :meth:`delayed` and :meth:`instant` (:meth:`solve` integrates them).
        """
        if self.form == "delay":
            raise ValueError("field: a form='delay' flow is a delay equation, not an ODE; its parts are delayed() "
                             "and instant() (pass form='look_behind' for the second-order ODE)")
        tf = as_float(t)
        f = self.increment(tf, y) if self.order == 1 else look_behind(self.increment, tf, y, limiter=self.limiter)
        extra = self.instant(tf, y)
        return f if extra is None else tuple(a + b for a, b in zip(f, extra))

    def __call__(self, t: Tensor | float, y: Y) -> Y:
        return self.field(t, y)

    # ------------------------------------------------------------------ states
    @abstractmethod
    def initial(self, trajectory: Trajectory, step: int = 0) -> Y:
        """The flow's state fitted to the iterates around ``step``."""

    @abstractmethod
    def predict(self, step: Tensor, ys: Y) -> dict[str, Tensor | None]:
        """Predicted iterate quantities from states ``ys`` (leading axis over ``step``)."""

    def _rows(self, trajectory: Trajectory, step: int, span: int) -> tuple[int, int]:
        """Row of ``step`` and the first usable row; check consecutive steps are recorded."""
        if not isinstance(trajectory, Trajectory):
            raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
        k = trajectory.index_of(step)
        if span == 0:
            return k, k
        lo, hi = (k - 1, k + 1) if k > 0 else (k, k + span)
        if hi >= len(trajectory):
            raise ValueError(f"step: the flow's initial state at {step} needs the iterates up to step "
                             f"{int(trajectory.t[k]) + hi - k}, which were not recorded")
        steps = trajectory.t[lo: hi + 1]
        if not bool((steps.diff() == 1).all()):
            raise ValueError("trajectory: flows start from consecutive recorded steps; record with record_every=1 "
                             f"around step {step}")
        return k, 0 if k == 0 else k - 1

    def _window(self, trajectory: Trajectory, step: int, half: int) -> tuple[int, int, int]:
        """Row ``k`` of ``step`` and the rows ``lo ≤ k ≤ hi`` of consecutive recorded steps within ``half`` of it."""
        if not isinstance(trajectory, Trajectory):
            raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
        k = trajectory.index_of(step)
        t = trajectory.t
        lo = hi = k
        while lo > 0 and k - lo < 2 * half and int(t[lo - 1]) == int(t[lo]) - 1:
            lo -= 1
        while hi < len(trajectory) - 1 and hi - k < 2 * half and int(t[hi + 1]) == int(t[hi]) + 1:
            hi += 1
        return k, lo, hi

    def _check_layout(self, trajectory: Trajectory) -> None:
        """The trajectory records the moments that the flow's state needs."""
        for name, attr in (("M", "m"), ("N", "v")):
            if name in self.names and getattr(trajectory, attr) is None:
                raise ValueError(f"trajectory: a {self.spec.name} flow needs the recorded moment {attr}, which this "
                                 f"trajectory (optimizer {trajectory.config.get('optimizer', 'unknown')!r}) lacks")

    def _check_config(self, trajectory: Trajectory) -> None:
        """The trajectory was recorded by this flow's optimizer with its hyperparameters."""
        cfg = trajectory.config or {}
        name = cfg.get("optimizer")
        if name is not None and name != self.spec.name:
            raise ValueError(f"trajectory: recorded by {name!r}, but the flow is of {self.spec.name!r} "
                             "(pass check_config=False to solve it anyway)")
        hp = cfg.get("hyperparameters")
        if isinstance(hp, dict):
            ours = self.spec.hyperparameters()
            diff = sorted(k for k in set(hp) | set(ours) if not _same(hp.get(k), ours.get(k)))
            if diff:
                shown = ", ".join(f"{k}: recorded {hp.get(k)!r}, flow {ours.get(k)!r}" for k in diff)
                raise ValueError(f"trajectory: its hyperparameters differ from the flow's ({shown}); "
                                 "pass check_config=False to solve it anyway")

    def _with_v(self, trajectory: Trajectory, k: int, out: list[Tensor]) -> Y:
        """``out`` plus ``N = v_k`` where the flow carries v, as a tuple of copies."""
        self._check_layout(trajectory)
        if "N" in self.names:
            assert trajectory.v is not None
            out.append(trajectory.v[k])
        return tuple(x.clone() for x in out)

    # ------------------------------------------------------------------ solving
    def solve(
        self,
        trajectory: Trajectory,
        *,
        start: int = 0,
        steps: int | None = None,
        method: str | None = None,
        rtol: float = 1e-6,
        atol: float = 1e-9,
        options: dict[str, Any] | None = None,
        sharpness_every: int | None = None,
        sharpness_kwargs: dict[str, Any] | None = None,
        initial_kwargs: dict[str, Any] | None = None,
        check_config: bool = True,
        progress: bool | None = None,
    ) -> FlowSolution:
        """Solve the flow from the iterates around ``start`` for ``steps`` steps (default: to the end).

        ``method``: a torchdiffeq method (default ``"dopri5"``); fixed-step methods default to a step
        of one optimizer step (``options={"step_size": h}`` changes it). ``form="delay"`` is solved
        by the integrator's explicit Adams rules for delay equations (default :data:`DELAY_METHOD`,
        fourth order, at a quarter of an optimizer step, :data:`DELAY_STEP`;
        ``options={"step_size": ½/j}`` sets it, and ``rtol``, ``atol`` play no part). The solution is sampled at every integer step. With ``sharpness_every=N``
        the sharpness at the predicted iterates is recorded every N steps. ``start`` and ``steps``
        take anything :func:`operator.index` takes (not bools). The trajectory's recorded optimizer
        and hyperparameters must be the flow's (``check_config=False`` skips the check). A flow of
        an adaptive optimizer started before :data:`TRANSIENT_STEPS` warns (:class:`TransientWarning`).
        ``progress``: a bar in flow time (``None``: only on a terminal; :mod:`rodflow.progress`).
        """
        if not isinstance(trajectory, Trajectory):
            raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
        start = _index("start", start)
        first = int(trajectory.t[0])
        last = int(trajectory.t[-1])
        if start < first:
            raise ValueError(f"start: step {start} is before the trajectory's first step {first}")
        if start >= last:
            raise ValueError(f"start: step {start} is not before the trajectory's last step {last}")
        if steps is None:
            steps = last - start
        steps = _index("steps", steps)
        if steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if check_config:
            self._check_config(trajectory)
        self._check_layout(trajectory)
        if self.spec.beta2 is not None and start < TRANSIENT_STEPS:
            warnings.warn(f"start: a {self.spec.name} flow from step {start} starts inside the optimizer's first-step "
                          f"transient (v ≈ (1 − β₂)g², preconditioned sharpness far above its threshold), which no flow "
                          f"follows; start at step ≥ {TRANSIENT_STEPS}", TransientWarning, stacklevel=2)
        y0 = self.initial(trajectory, step=start, **(initial_kwargs or {}))
        if isinstance(self.noise, Tensor) and self.noise.ndim == 1 and self.noise.shape != y0[0].shape:
            raise ValueError(f"noise: {self.noise.numel()} per-coordinate variances for {y0[0].numel()} parameters")
        dtype = y0[0].dtype
        t = torch.arange(start, start + steps + 1, dtype=dtype, device=y0[0].device)
        self.nfe_grad = 0
        if self.form == "delay":
            method = method or DELAY_METHOD
            if method not in DELAY_METHODS:
                raise ValueError(f"method: form='delay' is a delay equation, solved by {', '.join(DELAY_METHODS)}; "
                                 f"got {method!r} (form='look_behind' is the second-order ODE)")
            options = {"step_size": DELAY_STEP, **(options or {})}
            res = integrate(self.delayed, y0, t, method=method, options=options, delay=self.kernel(),
                            instant=self.instant, history="tangent", progress=progress)
        else:
            method = method or "dopri5"
            res = integrate(self.field, y0, t, method=method, rtol=rtol, atol=self._atol(atol, y0), options=options,
                            progress=progress)
        ys = tuple(res.ys)
        steps_t = torch.arange(start, start + steps + 1, dtype=torch.int64)
        pred = self.predict(steps_t, ys)
        theta = pred["theta"]
        assert theta is not None
        loss = torch.stack([self.loss_fn(th).detach() for th in theta])
        config = {"flow": self.kind, "optimizer": self.spec.name, "hyperparameters": self.spec.hyperparameters(),
                  "rate": self.rate, "order": self.order, "form": self.form,
                  "limiter": self.limiter, "start": start, "steps": steps, "method": method, "rtol": rtol,
                  "atol": atol, "options": dict(options or {}), "grad_evals": self.nfe_grad,
                  "noise": _noise_config(self.noise)}
        config.update(self._extra_config())
        sol = FlowSolution(t=steps_t, theta=theta, centre=pred["centre"], delta=pred["delta"],  # type: ignore[arg-type]
                           m=pred["m"], v=pred["v"], loss=loss, stats=res.stats, kind=self.kind, config=config, flow=self)
        if sharpness_every is not None:
            from ..sharpness import SharpnessTracker

            tracker = SharpnessTracker(self.spec, self.loss_fn, **(sharpness_kwargs or {}))
            for j in range(0, len(sol), sharpness_every):
                tracker.record(sol.state(int(sol.t[j])))
            sol.sharpness = tracker.series()
        return sol

    def _extra_config(self) -> dict[str, Any]:
        return {}

    def _atol(self, atol: float, y0: Y) -> float | tuple[float, ...]:
        """Absolute tolerance per state entry (entries at a small scale get a smaller one)."""
        return atol
