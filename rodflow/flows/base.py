"""What every flow shares: the :class:`Flow` interface, initial conditions, solving and the solution.

Time is measured in optimizer steps everywhere: flow time ``t = k`` corresponds to iterate ``k``.
A flow's state is a tuple of tensors (torchdiffeq's convention) whose layout is given by
:attr:`Flow.names`: the stable flow uses ``(W, M, N)`` and the rod flow ``(W, Δ, M, μ, N)``, each
without the entries the optimizer lacks (no ``M``/``μ`` without momentum, no ``N`` without a
second moment).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..derivatives import LossFn, gradient
from ..integrate import SolverStats, integrate
from ..optimizers.spec import OptimizerSpec
from ..trajectory import PhaseSeries, Trajectory

__all__ = ["RATES", "Flow", "FlowSolution"]

#: Relaxation rates of the moments' centres: ``"step"`` (κ = 1 − β: the flow's Euler step of
#: size 1 is the discrete EMA) or ``"central"`` (κ = (1 − β)/β, as in the central-flows code).
RATES = ("step", "central")

Y = tuple[Tensor, ...]


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


class Flow(ABC):
    """A flow of an optimizer: a vector field over a tuple state, built from the optimizer's spec.

    The field reads everything from ``spec`` (its β, a, β₂, sq, D and u), so each optimizer's
    mathematics lives only in its spec.
    """

    kind: str

    def __init__(self, spec: OptimizerSpec, loss_fn: LossFn, *, rate: str = "step"):
        if not isinstance(spec, OptimizerSpec):
            raise TypeError(f"spec must be an OptimizerSpec (see rodflow.optimizer), got {type(spec).__name__}")
        if not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(theta)")
        if rate not in RATES:
            raise ValueError(f"rate must be one of {RATES}, got {rate!r}")
        self.spec = spec
        self.loss_fn = loss_fn
        self.rate = rate
        self.grad = gradient(loss_fn)
        self.nfe_grad = 0

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

    def _g(self, theta: Tensor) -> Tensor:
        self.nfe_grad += 1
        return self.grad(theta)

    # ------------------------------------------------------------------ the field
    @abstractmethod
    def field(self, t: Tensor | float, y: Y) -> Y:
        """``dy/dt`` in torchdiffeq's convention."""

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

    def _with_v(self, trajectory: Trajectory, k: int, out: list[Tensor]) -> Y:
        """``out`` plus ``N = v_k`` where the flow carries v, as a tuple of copies."""
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
        method: str = "dopri5",
        rtol: float = 1e-6,
        atol: float = 1e-9,
        options: dict[str, Any] | None = None,
        sharpness_every: int | None = None,
        sharpness_kwargs: dict[str, Any] | None = None,
        initial_kwargs: dict[str, Any] | None = None,
    ) -> FlowSolution:
        """Solve the flow from the iterates around ``start`` for ``steps`` steps (default: to the end).

        Fixed-step methods default to a step of one optimizer step (``options={"step_size": h}``
        changes it). The solution is sampled at every integer step. With ``sharpness_every=N``
        the sharpness at the predicted iterates is recorded every N steps.
        """
        first = int(trajectory.t[0])
        last = int(trajectory.t[-1])
        if steps is None:
            steps = last - start
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        if start < first:
            raise ValueError(f"start: step {start} is before the trajectory's first step {first}")
        y0 = self.initial(trajectory, step=start, **(initial_kwargs or {}))
        dtype = y0[0].dtype
        t = torch.arange(start, start + steps + 1, dtype=dtype, device=y0[0].device)
        self.nfe_grad = 0
        res = integrate(self.field, y0, t, method=method, rtol=rtol, atol=self._atol(atol), options=options)
        ys = tuple(res.ys)
        steps_t = torch.arange(start, start + steps + 1, dtype=torch.int64)
        pred = self.predict(steps_t, ys)
        theta = pred["theta"]
        assert theta is not None
        loss = torch.stack([self.loss_fn(th).detach() for th in theta])
        config = {"flow": self.kind, "optimizer": self.spec.name, "hyperparameters": self.spec.hyperparameters(),
                  "rate": self.rate, "start": start, "steps": steps, "method": method, "rtol": rtol,
                  "atol": atol, "options": dict(options or {}), "grad_evals": self.nfe_grad}
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

    def _atol(self, atol: float) -> float | tuple[float, ...]:
        """Absolute tolerance per state entry (entries at a small scale get a smaller one)."""
        return atol
