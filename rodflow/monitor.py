r"""Watch the edge of stability of any training loop: :class:`EoSMonitor`.

Every ``every`` steps the monitor measures, on a fixed probe batch ``(X, y)``,

.. math::

    \lambda_{\max}(H),\qquad \lambda_{\max}(P^{-1}H),\qquad
    H = \nabla^2_\theta\, \mathrm{criterion}(f_\theta(X), y),

with P the live optimizer's preconditioner (read from ``optimizer.state`` through
:mod:`rodflow.adapters`, bias corrections as in :mod:`rodflow.optimizers`), and compares
λ_max(P⁻¹H) with that optimizer's threshold (2 for SGD, 2 + 2β with momentum, 38 for Adam at
β₁ = 0.9, ...). The HVPs go through the live module with :func:`torch.func.functional_call`: the
parameters are not touched, the module is not switched to eval mode, and buffers (batch-norm
statistics) are handed over as copies so a probe never updates them. Each estimate is warm-started
from the previous one's eigenvectors (:func:`rodflow.sharpness`).

Events, with hysteresis ``h`` on the ratio r = λ_max(P⁻¹H) / threshold:

* ``"entering"``: r reaches 1 − h (from below);
* ``"at"``: r reaches 1 (once per episode);
* ``"leaving"``: r falls below 1 − 2h after entering.

Each event goes to ``monitor.events`` as ``(step, kind, value)`` (value: λ_max(P⁻¹H)), to a Python
logger, and every measurement to a CSV file (one flushed row per probe, so a killed run keeps its
rows) and to TensorBoard (``writer.add_scalar`` of both sharpness values and the threshold).
"""

from __future__ import annotations

import csv as _csv
import logging
import os
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from .phase import flatten, unflatten
from .sharpness import HessianOperator, solve

__all__ = ["EVENTS", "MONITOR_METHOD", "MONITOR_TOL", "EoSMonitor"]

#: The monitor's eigensolver and its tolerance (``sharpness_kwargs={"method": ..., "tol": ...}`` changes
#: them): ``"krylov"`` stops once the residual ‖Hu − θu‖ ≤ tol·θ, which bounds the relative error of
#: θ by tol (5× below the default hysteresis) and makes it near tol²·θ/gap in practice (≤ 1.1e-3
#: measured along an Adam run on MNIST, ≈ 6 products per warm solve where ARPACK at 1e-4 took ≈ 22).
MONITOR_METHOD = "krylov"
MONITOR_TOL = 1e-2

#: The kinds of event, in the order an episode produces them.
EVENTS = ("entering", "at", "leaving")

_COLUMNS = ("step", "loss", "sharpness", "preconditioned_sharpness", "threshold", "n_hvp")


class EoSMonitor:
    """Sharpness and preconditioned sharpness of a live model every ``every`` steps, with events.

    Args:
        model: the ``nn.Module`` being trained.
        optimizer: its ``torch.optim`` optimizer (SGD with or without momentum/Nesterov, Adam,
            AdamW, NAdam, RMSprop, or rodflow's FlowAdam/VRAdam); P and the threshold come from it.
        probe: a fixed batch ``(X, y)``; ``criterion(model(X), y)`` is the loss whose Hessian is measured.
        criterion: e.g. ``torch.nn.functional.cross_entropy``.
        every: measure after optimizer steps every, 2·every, ... (counted by :meth:`step`;
            :meth:`measure` measures now, e.g. before training).
        k: eigenvectors kept for the warm start (λ_max is recorded).
        logger: a ``logging.Logger`` for the events (default ``logging.getLogger("rodflow.monitor")``).
        writer: a TensorBoard ``SummaryWriter`` (anything with ``add_scalar(tag, value, step)``).
        csv: a path: one row per measurement, flushed as it is written.
        hysteresis: h of the events (see the module docstring).
        sharpness_kwargs: passed to :func:`rodflow.sharpness` (``method`` and ``tol``, default
            :data:`MONITOR_METHOD` and :data:`MONITOR_TOL`; ``max_iter``, ``seed``).

    ``monitor.history`` holds the series (``{"step": [...], "sharpness": [...], ...}``, the layout of
    :attr:`rodflow.Trajectory.sharpness` via :meth:`series`); ``rodflow.plot.sharpness_curve(monitor)``
    draws it.
    """

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, *, probe: tuple[Tensor, Tensor],
                 criterion: Callable[[Tensor, Tensor], Tensor], every: int = 50, k: int = 1,
                 logger: logging.Logger | None = None, writer: Any = None, csv: str | os.PathLike[str] | None = None,
                 hysteresis: float = 0.05, sharpness_kwargs: dict[str, Any] | None = None):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if not (isinstance(probe, tuple | list) and len(probe) == 2 and all(isinstance(p, Tensor) for p in probe)):
            raise TypeError("probe must be a pair of tensors (X, y)")
        if not callable(criterion):
            raise TypeError("criterion must be callable as criterion(model(X), y)")
        for name, value in (("every", every), ("k", k)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not (isinstance(hysteresis, int | float) and 0 <= hysteresis < 0.5):
            raise ValueError(f"hysteresis must lie in [0, 0.5), got {hysteresis!r}")
        if writer is not None and not callable(getattr(writer, "add_scalar", None)):
            raise TypeError("writer must have add_scalar(tag, value, step) (a TensorBoard SummaryWriter)")
        self.model, self.optimizer = model, optimizer
        self.probe = (probe[0], probe[1])
        self.criterion = criterion
        self.every, self.k, self.hysteresis = every, k, float(hysteresis)
        self.logger = logger or logging.getLogger("rodflow.monitor")
        self.writer = writer
        self.csv = None if csv is None else os.fspath(csv)
        self.sharpness_kwargs = dict(sharpness_kwargs or {})
        self.history: dict[str, list[float]] = {c: [] for c in _COLUMNS}
        self.events: list[tuple[int, str, float]] = []
        self.steps = 0
        self._names = [n for n, p in model.named_parameters() if p.requires_grad]
        if not self._names:
            raise ValueError("model: no parameter requires a gradient")
        from .adapters import spec_of

        spec_of(optimizer)  # an optimizer without a preconditioner map fails here, not at the first probe
        self._warm: dict[str, Tensor | None] = {"raw": None, "pre": None}
        self._inside = False
        self._reached = False
        if self.csv is not None and not os.path.exists(self.csv):
            with open(self.csv, "w", newline="") as fh:
                _csv.writer(fh).writerow(_COLUMNS)

    # ------------------------------------------------------------------ the probe's loss
    def loss_fn(self) -> tuple[Callable[[Tensor], Tensor], Tensor]:
        """The probe loss as a function of the flat parameters, and the current flat parameters."""
        params = dict(self.model.named_parameters())
        like = {n: params[n] for n in self._names}
        frozen = {n: p.detach() for n, p in params.items() if n not in like}
        buffers = {n: b.detach().clone() for n, b in self.model.named_buffers()}
        x, y = self.probe

        def loss(theta: Tensor) -> Tensor:
            tensors = {**frozen, **buffers, **unflatten(theta, like)}
            return self.criterion(functional_call(self.model, tensors, (x,)), y)

        return loss, flatten(like.values()).detach().clone()

    def _preconditioner(self) -> tuple[Tensor | None, float]:
        """P (``None`` before the optimizer's first step) and the threshold, from the live optimizer."""
        from .adapters import phase_state, spec_of

        params = [p for n, p in self.model.named_parameters() if n in self._names]
        spec, state = spec_of(self.optimizer), phase_state(self.optimizer, params, t=self.steps)
        threshold = float(spec.threshold)
        if state.t < 1 and (spec.beta2 is not None):
            return None, threshold
        return spec.preconditioner(state).to(state.theta), threshold

    # ------------------------------------------------------------------ the callback
    def step(self) -> dict[str, float] | None:
        """Call after each ``optimizer.step()``: counts optimizer steps (t, as in
        :class:`rodflow.PhaseState`) and measures after steps every, 2·every, …, returning that row."""
        self.steps += 1
        if self.steps % self.every:
            return None
        return self.measure(self.steps)

    def measure(self, step: int | None = None) -> dict[str, float]:
        """Measure now (``step`` defaults to the number of :meth:`step` calls so far)."""
        step = self.steps if step is None else step
        loss_fn, theta = self.loss_fn()
        kw = {"k": self.k, "method": MONITOR_METHOD, "tol": MONITOR_TOL, **self.sharpness_kwargs}
        op = HessianOperator(loss_fn, theta)  # one gradient graph for both operators
        raw = solve(op, warm_start=self._warm["raw"], **kw)
        self._warm["raw"] = raw.eigenvectors
        p, threshold = self._preconditioner()
        n_hvp = raw.n_hvp
        pre_top = float("nan")
        if p is not None and bool((p == p[0]).all()):  # P = c·1 (SGD): the same eigenproblem scaled by 1/c
            pre_top = raw.top / float(p[0])
        elif p is not None:
            pre = solve(op.scaled(p), warm_start=self._warm["pre"], **kw)
            self._warm["pre"] = pre.eigenvectors
            pre_top, n_hvp = pre.top, n_hvp + pre.n_hvp
        loss = float(op.loss)
        row = {"step": float(step), "loss": loss, "sharpness": raw.top, "preconditioned_sharpness": pre_top,
               "threshold": threshold, "n_hvp": float(n_hvp)}
        for c in _COLUMNS:
            self.history[c].append(row[c])
        self._events(step, pre_top, threshold)
        self._sink(step, row)
        return row

    def _events(self, step: int, value: float, threshold: float) -> None:
        if value != value:  # NaN: no preconditioner yet
            return
        r = value / threshold
        h = self.hysteresis
        kinds = []
        if not self._inside and r >= 1 - h:
            self._inside, self._reached = True, False
            kinds.append("entering")
        if self._inside and not self._reached and r >= 1:
            self._reached = True
            kinds.append("at")
        if self._inside and r < 1 - 2 * h:
            self._inside = False
            kinds.append("leaving")
        for kind in kinds:
            self.events.append((step, kind, value))
            self.logger.info("step %d: %s the edge of stability (λ_max(P⁻¹H) = %.4g, threshold %.4g)", step,
                             kind, value, threshold)

    def _sink(self, step: int, row: dict[str, float]) -> None:
        if self.csv is not None:
            with open(self.csv, "a", newline="") as fh:
                _csv.writer(fh).writerow([row[c] for c in _COLUMNS])
                fh.flush()
                os.fsync(fh.fileno())
        if self.writer is not None:
            self.writer.add_scalar("eos/sharpness", row["sharpness"], step)
            if row["preconditioned_sharpness"] == row["preconditioned_sharpness"]:
                self.writer.add_scalar("eos/preconditioned_sharpness", row["preconditioned_sharpness"], step)
            self.writer.add_scalar("eos/threshold", row["threshold"], step)

    # ------------------------------------------------------------------ for plotting
    @property
    def sharpness(self) -> dict[str, Tensor]:
        """The history as a :attr:`rodflow.Trajectory.sharpness`-like dict (what ``plot.sharpness_curve`` reads)."""
        steps = torch.tensor(self.history["step"], dtype=torch.int64)
        pre = torch.tensor(self.history["preconditioned_sharpness"], dtype=torch.float64)
        ok = ~torch.isnan(pre)
        return {"step": steps, "sharpness": torch.tensor(self.history["sharpness"], dtype=torch.float64),
                "preconditioned_step": steps[ok], "preconditioned_sharpness": pre[ok]}

    @property
    def t(self) -> Tensor:
        return torch.tensor(self.history["step"], dtype=torch.int64)

    @property
    def loss(self) -> Tensor:
        return torch.tensor(self.history["loss"], dtype=torch.float64)
