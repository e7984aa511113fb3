r"""Fit a flow to a recorded run: which hyperparameters make the stable (or rod) flow explain the iterates?

:func:`fit_flow` minimises the multiple-shooting discrepancy over the window ``[a, b]``:
the flow is restarted from the record every ``segment`` = K steps, at ``s = a, a + K, …``, and

.. math::

    D(\phi) = \frac{\sum_s \sum_{j=1}^{K} \|\hat\theta_{s+j}(\phi) - \theta_{s+j}\|^2}
                   {\sum_s \sum_{j=1}^{K} \|\theta_{s+j} - \theta_s\|^2}

where θ̂_{s+j}(φ) is the flow's prediction j steps after its start at the recorded state s
(:meth:`rodflow.flows.base.Flow.solve`, through :func:`rodflow.integrate`): the squared error of
the predicted motion relative to the motion itself. Restarting every K steps (as SciML's
multiple shooting does) keeps a long or chaotic window from trapping the fit in a local minimum:
each segment's error is local, so the objective stays close to quadratic in φ.

Parametrisation: positive hyperparameters (``lr``, ``eps``) are fitted as φ = log x, those in
(0, 1) (``beta1``, ``beta2``, ``momentum``, ``alpha``) as φ = logit x. The optimiser is
``scipy.optimize.minimize`` (``L-BFGS-B`` by default) on ``D(φ)/D(φ₀)``.

Gradients: central finite differences on φ, ``∂D/∂φᵢ ≈ (D(φ + heᵢ) − D(φ − heᵢ))/2h``, h = 10⁻⁵.
A differentiable path through :func:`rodflow.integrate` would need tensor hyperparameters in the
specs (they validate and store floats) and flows whose fields keep the graph (they use detached
gradients); the fixed-step default solver (``rk4``, half a step) makes D a smooth function of φ,
so the finite differences are accurate: on GD's stable flow on a quadratic, where D has a closed
form (matrix exponentials) that autograd differentiates, the finite-difference gradient agrees to
~10⁻⁸ relative (``tests/test_fit.py``), and it costs 2 solves per fitted parameter against ~3
solves' worth for a backward pass, so for the 1–3 parameters fitted here it is as accurate and no
dearer.

Standard errors: the errors within a segment are correlated (they accumulate along it), but
segments restart from the record, so their shares D_s of D depend on disjoint stretches of the
run. Treating the segments as independent clusters gives the sandwich estimate
``cov(φ) = H⁻¹ (Σ_s ∇D_s ∇D_sᵀ) H⁻¹`` with H the Hessian of D at the optimum (central second
differences) and ∇D_s each segment's gradient there (central differences); it is mapped to the
original parametrisation by the delta method (``x·se(φ)`` for log, ``x(1 − x)·se(φ)`` for logit).
It covers noise and the flow's own misfit as far as they vary between segments; a bias common to
all segments (the flow's first-order error) is not in it. ``discrepancy`` and the per-step
``curve`` show how well the flow fits at all.

Limits: the stable flow cannot oscillate, so at the edge of stability it fits the iterates' mean
motion only, and its fitted learning rate absorbs the oscillation (``family="auto"`` then picks the
rod flow); the flows are first-order models of the map, so below the edge the fitted lr differs
from the true one by the flow's own error (small when λ_max(P⁻¹H) is far below the threshold);
every objective evaluation integrates the whole window, so cost grows with window × dimension.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .adapters import spec_from_config
from .derivatives import LossFn
from .flows import rod_flow, stable_flow
from .integrate import IntegrationError
from .optimizers import OptimizerSpec
from .trajectory import PhaseSeries, Trajectory

__all__ = ["FAMILIES", "PARAMETRISATION", "FitResult", "fit_flow"]

FAMILIES = ("stable", "rod", "auto")
#: How each fittable hyperparameter is parametrised.
PARAMETRISATION = {"lr": "log", "eps": "log", "beta1": "logit", "beta2": "logit", "momentum": "logit",
                   "alpha": "logit"}
_FD_STEP = 1e-5
_HESSIAN_STEP = 1e-3


def _get(spec: OptimizerSpec, name: str) -> float:
    if name in ("beta1", "beta2"):
        return float(spec.betas[0 if name == "beta1" else 1])  # type: ignore[attr-defined]
    return float(getattr(spec, name))


def _has(spec: OptimizerSpec, name: str) -> bool:
    names = {f.name for f in dataclasses.fields(spec)}
    if name in ("beta1", "beta2"):
        return "betas" in names
    return name in names and name in PARAMETRISATION


def _with(spec: OptimizerSpec, values: dict[str, float]) -> OptimizerSpec:
    kw: dict[str, Any] = {k: x for k, x in values.items() if k not in ("beta1", "beta2")}
    if "beta1" in values or "beta2" in values:
        b1, b2 = spec.betas  # type: ignore[attr-defined]
        kw["betas"] = (values.get("beta1", b1), values.get("beta2", b2))
    return dataclasses.replace(spec, **kw)


def _to_phi(name: str, x: float) -> float:
    return math.log(x) if PARAMETRISATION[name] == "log" else math.log(x / (1.0 - x))


def _from_phi(name: str, phi: float) -> float:
    return math.exp(phi) if PARAMETRISATION[name] == "log" else 1.0 / (1.0 + math.exp(-phi))


def _dx_dphi(name: str, x: float) -> float:
    return x if PARAMETRISATION[name] == "log" else x * (1.0 - x)


@dataclass
class FitResult:
    """What :func:`fit_flow` found.

    Attributes:
        values: fitted hyperparameters, name → value (original parametrisation).
        stderr: their standard errors from the curvature of D at the optimum (see the module doc).
        discrepancy: D at the optimum (relative squared error of the predicted motion).
        steps: ``[n]`` the steps of the window after each segment's start.
        curve: ``[n]`` per step, ``‖θ̂ − θ‖²/‖θ − θ_s‖²`` (its segment's start s).
        family: the flow family of the result (``"stable"`` or ``"rod"``).
        discrepancies: D at the optimum of each family fitted (both with ``family="auto"``).
        spec: the optimizer spec with the fitted values.
        start: the starting values.
        stats: solver statistics (scipy's iterations, evaluations, message; ODE field evaluations; seconds).
        prediction: ``[n, d]`` the fitted flow's θ̂ at ``steps``; ``record``: the recorded θ there.
    """

    values: dict[str, float]
    stderr: dict[str, float]
    discrepancy: float
    steps: Tensor
    curve: Tensor
    family: str
    discrepancies: dict[str, float]
    spec: OptimizerSpec
    start: dict[str, float]
    stats: dict[str, Any]
    prediction: Tensor = field(repr=False)
    record: Tensor = field(repr=False)

    def summary(self) -> str:
        """A short table of the fit."""
        lines = [f"fit_flow: {self.family} flow of {self.spec.name}, steps {int(self.steps[0]) - 1}..{int(self.steps[-1])}"]
        for k, x in self.values.items():
            lines.append(f"  {k:9s} = {x:.6g} ± {self.stderr[k]:.2g}   (start {self.start[k]:.6g})")
        lines.append("  discrepancy " + ", ".join(f"{f}: {d:.3e}" for f, d in self.discrepancies.items()))
        st = self.stats
        lines.append(f"  {st['iterations']} iterations, {st['evaluations']} objective evaluations, "
                     f"{st['seconds']:.1f} s; {st['message']}")
        return "\n".join(lines)

    def plot(self, ax: Any = None) -> Any:
        """Two panels: the per-step discrepancy, and the fitted flow against the record (θ projected
        on the window's overall direction of motion). Returns the figure."""
        import matplotlib.pyplot as plt

        if ax is None:
            fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        else:
            fig = ax[0].figure
        steps = self.steps.numpy()
        ax[0].semilogy(steps, np.maximum(self.curve.numpy(), 1e-300), lw=1)
        ax[0].set(xlabel="step", ylabel="relative squared error", title=f"{self.family} flow: discrepancy")
        d = self.record[-1] - self.record[0]
        d = d / torch.linalg.vector_norm(d).clamp_min(1e-300)
        ax[1].plot(steps, ((self.record - self.record[0]) @ d).numpy(), ".", ms=3, label="record")
        ax[1].plot(steps, ((self.prediction - self.record[0]) @ d).numpy(), lw=1, label=f"{self.family} flow")
        ax[1].set(xlabel="step", ylabel="θ along the motion", title="fitted flow against the record")
        ax[1].legend()
        fig.tight_layout()
        return fig


class _Objective:
    """D(φ) of the module docstring for one flow family, with finite-difference derivatives."""

    def __init__(self, trajectory: Trajectory, loss_fn: LossFn, spec: OptimizerSpec, names: Sequence[str],
                 family: str, segment: int, solver: str, solver_options: dict[str, Any] | None,
                 rtol: float, atol: float, flow_kwargs: dict[str, Any]):
        self.traj, self.loss_fn, self.spec, self.names = trajectory, loss_fn, spec, list(names)
        self.family, self.segment, self.flow_kwargs = family, segment, flow_kwargs
        self.solve_kwargs = {"method": solver, "rtol": rtol, "atol": atol, "options": solver_options}
        t = trajectory.t
        self.first, self.last = int(t[0]), int(t[-1])
        self.starts = list(range(self.first, self.last, segment))
        theta = trajectory.theta
        self.norm = sum(float(((theta[i + 1: i + 1 + self._len(s)] - theta[i]) ** 2).sum())
                        for i, s in ((s - self.first, s) for s in self.starts))
        if not self.norm > 0:
            raise ValueError("trajectory: the iterates do not move in the window; nothing to fit")
        self.evaluations = 0
        self.nfe = 0

    def _len(self, s: int) -> int:
        return min(self.segment, self.last - s)

    def predict(self, phi: Sequence[float] | np.ndarray) -> tuple[Tensor, Tensor]:
        """θ̂ at every step after a segment start, and the per-step relative squared errors."""
        values = {k: _from_phi(k, float(p)) for k, p in zip(self.names, phi)}
        spec = _with(self.spec, values)
        make: Callable[..., Any] = stable_flow if self.family == "stable" else rod_flow
        flow = make(spec, self.loss_fn, **self.flow_kwargs)
        preds, errs = [], []
        theta = self.traj.theta
        for s in self.starts:
            n = self._len(s)
            i = s - self.first
            sol = flow.solve(self.traj, start=s, steps=n, **self.solve_kwargs)
            self.nfe += sol.stats.nfe
            pred = sol.theta[1:]
            rec = theta[i + 1: i + 1 + n]
            preds.append(pred)
            errs.append(((pred - rec) ** 2).sum(1) / ((rec - theta[i]) ** 2).sum(1).clamp_min(1e-300))
        return torch.cat(preds), torch.cat(errs)

    def segments(self, phi: Sequence[float] | np.ndarray) -> np.ndarray:
        """Each segment's share of D(φ) (inf where the flow cannot be solved)."""
        self.evaluations += 1
        out = np.full(len(self.starts), math.inf)
        values = {k: _from_phi(k, float(p)) for k, p in zip(self.names, phi)}
        try:
            spec = _with(self.spec, values)
        except ValueError:
            return out  # e.g. a β rounded to 1
        make: Callable[..., Any] = stable_flow if self.family == "stable" else rod_flow
        flow = make(spec, self.loss_fn, **self.flow_kwargs)
        theta = self.traj.theta
        try:
            for j, s in enumerate(self.starts):
                n = self._len(s)
                i = s - self.first
                sol = flow.solve(self.traj, start=s, steps=n, **self.solve_kwargs)
                self.nfe += sol.stats.nfe
                out[j] = float(((sol.theta[1:] - theta[i + 1: i + 1 + n]) ** 2).sum()) / self.norm
        except IntegrationError:
            out[:] = math.inf
        out[~np.isfinite(out)] = math.inf
        return out

    def __call__(self, phi: Sequence[float] | np.ndarray) -> float:
        return float(self.segments(phi).sum())

    def segment_gradients(self, phi: np.ndarray, h: float = _FD_STEP) -> np.ndarray:
        """``[segments, p]``: central differences of each segment's share of D."""
        out = np.zeros((len(self.starts), len(phi)))
        for i in range(len(phi)):
            e = np.zeros_like(phi)
            e[i] = h
            out[:, i] = (self.segments(phi + e) - self.segments(phi - e)) / (2 * h)
        return out

    def gradient(self, phi: np.ndarray, h: float = _FD_STEP) -> np.ndarray:
        """Central differences on φ."""
        g = np.zeros_like(phi)
        for i in range(len(phi)):
            e = np.zeros_like(phi)
            e[i] = h
            g[i] = (self(phi + e) - self(phi - e)) / (2 * h)
        return g

    def hessian(self, phi: np.ndarray, f0: float, h: float = _HESSIAN_STEP) -> np.ndarray:
        """Central second differences on φ."""
        p = len(phi)
        hess = np.zeros((p, p))
        for i in range(p):
            e = np.zeros(p)
            e[i] = h
            hess[i, i] = (self(phi + e) - 2 * f0 + self(phi - e)) / h**2
            for j in range(i):
                u = np.zeros(p)
                u[j] = h
                hess[i, j] = hess[j, i] = (self(phi + e + u) - self(phi + e - u) - self(phi - e + u)
                                           + self(phi - e - u)) / (4 * h**2)
        return hess


def _window(trajectory: PhaseSeries, window: tuple[int, int] | None) -> Trajectory:
    """The recorded rows of ``window`` as an in-memory trajectory, checked to be consecutive steps."""
    t = trajectory.t
    if len(trajectory) < 3:
        raise ValueError(f"trajectory: needs at least 3 recorded steps, has {len(trajectory)}")
    first, last = int(t[0]), int(t[-1])
    if window is None:
        window = (first, last)
    if not isinstance(window, tuple | list) or len(window) != 2:
        raise ValueError(f"window must be a pair (first_step, last_step), got {window!r}")
    a, b = (int(w) for w in window)
    if not first <= a < b <= last:
        raise ValueError(f"window: ({a}, {b}) is outside the record (steps {first}..{last}) or empty")
    if b - a < 2:
        raise ValueError(f"window: ({a}, {b}) needs at least 3 steps")
    inside = ((t >= a) & (t <= b)).nonzero().flatten()
    steps = t[inside]
    if steps.numel() != b - a + 1 or not bool((steps.diff() == 1).all()):
        raise ValueError(f"trajectory: the window ({a}, {b}) must be recorded at consecutive steps (record_every=1)")
    i, j = int(inside[0]), int(inside[-1])

    def rows(x: Any) -> Tensor | None:
        return None if x is None else x[i: j + 1]

    return Trajectory(theta=rows(trajectory.theta), m=rows(trajectory.m), v=rows(trajectory.v),  # type: ignore[arg-type]
                      t=steps.clone(), loss=rows(trajectory.loss), config=dict(trajectory.config))  # type: ignore[arg-type]


def fit_flow(
    trajectory: PhaseSeries,
    loss_fn: LossFn,
    *,
    family: str = "stable",
    optimizer: OptimizerSpec | None = None,
    fit: Sequence[str] = ("lr",),
    window: tuple[int, int] | None = None,
    start: dict[str, float] | None = None,
    method: str = "L-BFGS-B",
    segment: int = 10,
    solver: str = "rk4",
    solver_options: dict[str, Any] | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    maxiter: int = 100,
    flow_kwargs: dict[str, Any] | None = None,
) -> FitResult:
    """Fit the hyperparameters ``fit`` of the ``family`` flow to ``trajectory`` over ``window`` (see the module doc).

    Args:
        trajectory: the record (a :class:`Trajectory`, e.g. ``Trajectory.load`` of a Recorder file);
            the window must be recorded at consecutive steps.
        loss_fn: the full-batch loss of flat θ the run minimised.
        family: ``"stable"``, ``"rod"`` or ``"auto"`` (both; the smaller discrepancy wins).
        optimizer: the spec whose other hyperparameters are held fixed (default: the one recorded in
            ``trajectory.config``).
        fit: names among ``lr``, ``eps``, ``beta1``, ``beta2`` (``betas`` = both), ``momentum``, ``alpha``.
        window: ``(first_step, last_step)``, default the whole record (from step 1 for methods with a
            second moment: v = 0 at step 0, where a Runge–Kutta stage can make N negative).
        start: starting values by name (default: the values in ``optimizer``).
        method: a ``scipy.optimize.minimize`` method that uses gradients (``L-BFGS-B``, ``BFGS``, ...).
        segment: K, the multiple-shooting segment length in steps.
        solver, solver_options, rtol, atol: the ODE solver (:func:`rodflow.integrate`); the default
            fixed-step ``rk4`` with ``step_size`` 1 keeps D smooth in the parameters.
        maxiter: iteration cap of the optimiser.
        flow_kwargs: passed to :func:`rodflow.stable_flow` / :func:`rodflow.rod_flow`.
    """
    import scipy.optimize

    if not isinstance(trajectory, PhaseSeries):
        raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(theta)")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if isinstance(segment, bool) or not isinstance(segment, int) or segment < 1:
        raise ValueError(f"segment must be a positive int, got {segment!r}")
    spec = spec_from_config(trajectory.config) if optimizer is None else optimizer
    if not isinstance(spec, OptimizerSpec):
        raise TypeError(f"optimizer must be an OptimizerSpec (see rodflow.optimizer), got {type(spec).__name__}")
    if isinstance(fit, str):
        fit = (fit,)
    names: list[str] = []
    for name in fit:
        for n in (("beta1", "beta2") if name == "betas" else (name,)):
            if not isinstance(n, str) or not _has(spec, n):
                known = [k for k in PARAMETRISATION if _has(spec, k)]
                raise ValueError(f"fit: {n!r} is not a hyperparameter of {spec.name} that can be fitted; "
                                 f"choose among {known}")
            if n not in names:
                names.append(n)
    if not names:
        raise ValueError("fit: give at least one hyperparameter name")
    start = dict(start or {})
    unknown = set(start) - set(names)
    if unknown:
        raise ValueError(f"start: {sorted(unknown)} are not among the fitted names {names}")
    start_values = {k: float(start.get(k, _get(spec, k))) for k in names}
    _with(spec, start_values)  # validates the starting values (ValueError naming them)
    if window is None and spec.beta2 is not None and len(trajectory) and int(trajectory.t[0]) == 0:
        window = (1, int(trajectory.t[-1]))
    sub = _window(trajectory, window)
    if len(sub) - 1 < 2:
        raise ValueError("window: needs at least 2 steps")
    if solver_options is None and solver in ("euler", "midpoint", "rk4", "heun3"):
        solver_options = {"step_size": 1.0}
    families = ("stable", "rod") if family == "auto" else (family,)
    results = {}
    for fam in families:
        t0 = time.perf_counter()
        obj = _Objective(sub, loss_fn, spec, names, fam, segment, solver, solver_options, rtol, atol,
                         dict(flow_kwargs or {}))
        phi0 = np.array([_to_phi(k, start_values[k]) for k in names])
        f0 = obj(phi0)
        if not math.isfinite(f0) or f0 <= 0:
            raise ValueError(f"start: the {fam} flow cannot be solved at the starting values {start_values}")

        def scaled(phi: np.ndarray, obj: _Objective = obj, f0: float = f0) -> tuple[float, np.ndarray]:
            return obj(phi) / f0, obj.gradient(phi) / f0

        res = scipy.optimize.minimize(scaled, phi0, jac=True, method=method,
                                      options={"maxiter": maxiter, **({"ftol": 1e-15, "gtol": 1e-10}
                                                                      if method == "L-BFGS-B" else {})})
        phi = np.asarray(res.x, dtype=float)
        d = obj(phi)
        hess = obj.hessian(phi, d)
        scores = obj.segment_gradients(phi)
        try:
            h_inv = np.linalg.inv(hess)
            cov = h_inv @ (scores.T @ scores) @ h_inv  # segments as independent clusters (sandwich)
            se_phi = np.sqrt(np.clip(np.diag(cov), 0, None))
            if not np.all(np.isfinite(se_phi)) or np.any(np.diag(hess) <= 0):
                se_phi = np.full(len(names), np.inf)
        except np.linalg.LinAlgError:
            se_phi = np.full(len(names), np.inf)
        values = {k: _from_phi(k, float(p)) for k, p in zip(names, phi)}
        stderr = {k: _dx_dphi(k, values[k]) * float(s) for k, s in zip(names, se_phi)}
        pred, curve = obj.predict(phi)
        steps = torch.cat([torch.arange(s + 1, s + 1 + obj._len(s)) for s in obj.starts])
        rows = steps - obj.first
        stats = {"iterations": int(getattr(res, "nit", 0)), "evaluations": obj.evaluations,
                 "message": str(res.message), "success": bool(res.success), "ode_nfe": obj.nfe,
                 "seconds": time.perf_counter() - t0, "method": method, "solver": solver, "segment": segment}
        results[fam] = FitResult(values=values, stderr=stderr, discrepancy=d, steps=steps, curve=curve, family=fam,
                                 discrepancies={}, spec=_with(spec, values), start=start_values, stats=stats,
                                 prediction=pred, record=sub.theta[rows])
    best = min(results.values(), key=lambda r: r.discrepancy)
    best.discrepancies = {f: r.discrepancy for f, r in results.items()}
    return best
