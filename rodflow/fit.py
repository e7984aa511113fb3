r"""Fitting a flow to a recorded run: :func:`fit_flow` estimates the hyperparameters that explain it.

**Discrepancy.** The window ``a … b`` of recorded steps is cut into segments of ``K`` steps
(multiple shooting): segment ``j`` starts at ``s_j = a + jK`` from the *recorded* state there and
the flow is integrated for ``min(K, b − s_j)`` steps. With ``θ̂_k`` the flow's iterate at step
``k`` (for the rod ``W + (−1)^kΔ``) and ``s(k)`` the start of the segment that predicts ``k``
(the largest ``s_j < k``),

.. math::

    D(\phi) = \frac{\sum_{k} \lVert \hat\theta_k(\phi) - \theta_k \rVert^2}
                   {\sum_{k} \lVert \theta_k - \theta_{s(k)} \rVert^2},
    \qquad k \in \{a + 1, \dots, b\},

scale-free: 0 for a flow through every recorded iterate, 1 for a flow that stands still at each
segment's start. Restarting from the record every K steps keeps each segment short, so an error in
the hyperparameters cannot compound over a long (or chaotic) window into a landscape full of local
minima, as a single shot would.

**Gradient noise.** ``fit=("lr", "noise")`` also fits the flows' gradient-noise variance σ² (the
second moment of a noisy run tracks ``(∇L)² + σ²``; without it an lr-only fit of an adaptive method
is biased low), started from the moment estimate :func:`noise_estimate` of the record's ``v``.

**Parametrisation.** The fit runs over ``u = log x`` for positive parameters (``lr``, ``eps``, ``noise``)
and ``u = logit x`` for decays in (0, 1) (``beta1``/``momentum``, ``beta2``/``alpha``); the
minimiser sees an unconstrained, well-scaled problem and every trial spec is a valid one.

**Gradients.** Central finite differences of the residual vector in ``u``,
``J_j = (r(u + h e_j) − r(u − h e_j))/2h`` with ``h = 10⁻⁴`` (2p sweeps per Jacobian), through a
fixed-step solver (``rk4``, step ½ by default) so that ``D`` is a smooth function of ``u``.
Measured against backpropagation through :func:`rodflow.integrate` (a spec copy holding a 0-d
tensor ``lr``, loss gradients with ``create_graph``) on a 610-parameter digits MLP, 14 segments of
10 steps, order-2 stable flow, ``dD/d log lr``: heavy ball 4.672192590 (h = 10⁻⁴) against
4.672192498 (backprop), 2·10⁻⁸ apart, at ≈ 6 s for the two solves against 4.3 s forward +
backward; for Adam and RMSProp backprop returns NaN (``√v`` has an infinite derivative where a
gradient coordinate is exactly zero, 0·∞ in the backward pass). Gauss–Newton needs the residual
Jacobian, which reverse mode does not give in one pass, and L-BFGS on the gradient alone took
1.8× the sweeps. For the few parameters fitted the differences are as accurate, comparable in
cost and valid for every optimizer without touching the specs' float hyperparameters (details in
``docs/fitting.md``).

**Minimiser.** ``method="least_squares"`` (default): :func:`scipy.optimize.least_squares`
(trust-region reflective, Gauss–Newton steps on the residuals ``r = (θ̂ − θ)/√S``); or any
gradient method of :func:`scipy.optimize.minimize` (``"L-BFGS-B"``, ``"trust-constr"``, ...) on
``D = ‖r‖²`` with the gradient ``2Jᵀr``.

**Standard errors.** At the optimum, with ``B = (JᵀJ)⁻¹`` (Gauss–Newton): the reported
``stderr`` is the segment-clustered sandwich ``Cov(u) = B (Σ_j s_j s_jᵀ) B · S/(S − p)`` with the
score ``s_j = J_jᵀ r_j`` of segment ``j`` of ``S`` (residuals along a segment are correlated;
segments restart from the record and are close to independent); ``stderr_iid`` is
``σ²B``, ``σ² = ‖r‖²/(n − p)``, which undercovers on noisy runs. Both are mapped to the original
parameters by the delta method, ``se(x) = |dx/du|·se(u)`` (``dx/du = x`` for log, ``x(1 − x)``
for logit). They do not cover the flow's model bias (see ``docs/fitting.md``).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .derivatives import LossFn
from .flows.base import TRANSIENT_STEPS, Flow, FlowSolution, TransientWarning
from .flows.rod import RodFlow
from .flows.stable import StableFlow
from .integrate import IntegrationError
from .optimizers import optimizer as make_optimizer
from .optimizers.adam import AdamMoments
from .optimizers.momentum import Momentum
from .optimizers.rmsprop import RMSProp
from .optimizers.spec import NonFiniteError, OptimizerSpec
from .trajectory import Trajectory

__all__ = ["FAMILIES", "METHODS", "PARAMETERS", "FitResult", "FitStats", "fit_flow", "noise_estimate"]

#: Flow families that :func:`fit_flow` fits (``"auto"``: both, keeping the better).
FAMILIES = ("stable", "rod", "auto")
#: Minimisers: scipy's least squares, or gradient methods of :func:`scipy.optimize.minimize`.
METHODS = ("least_squares", "L-BFGS-B", "BFGS", "CG", "trust-constr", "SLSQP", "TNC")
#: User-facing parameter names (each mapped onto the spec's own fields, see :func:`parameters_of`;
#: ``"noise"`` is the flows' gradient-noise variance σ², a nuisance parameter).
PARAMETERS = ("lr", "eps", "beta1", "beta2", "momentum", "alpha", "noise")

#: Central-difference step in the log/logit parametrisation.
FD_STEP = 1e-4
#: Discrepancy charged for a trial whose flow fails (diverges or leaves the solver's range).
_FAILED = 1e6
#: Relative Jacobian-column norm below which a fitted parameter counts as not identified (stderr ``inf``):
#: far above the central differences' roundoff (≈ 10⁻¹² of the residuals' scale at h = 10⁻⁴).
UNIDENTIFIED = 1e-8
#: |logit| cap: decays stay strictly inside (0, 1) in float64.
_LOGIT_CAP = 30.0


# ---------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class _Param:
    """One fitted parameter: its user name, the spec field (or flow argument) it sets, and its transform."""

    name: str
    field: str  # "lr", "eps", "momentum", "alpha", "betas[0]", "betas[1]"; "noise" (a flow argument)
    transform: str  # "log" or "logit"
    flow: bool = False  # an argument of the flow (the gradient-noise variance), not a spec field

    def get(self, spec: OptimizerSpec) -> float:
        if self.field.startswith("betas["):
            return float(spec.betas[int(self.field[6])])  # type: ignore[attr-defined]
        return float(getattr(spec, self.field))

    def to_u(self, x: float) -> float:
        if self.transform == "log":
            if not x > 0:
                raise ValueError(f"fit: {self.name} must be positive to be fitted in log space, got {x!r}")
            return math.log(x)
        if not 0 < x < 1:
            raise ValueError(f"fit: {self.name} must lie in (0, 1) to be fitted in logit space, got {x!r}")
        return math.log(x / (1.0 - x))

    def from_u(self, u: float) -> float:
        if self.transform == "log":
            return math.exp(u)
        u = min(max(u, -_LOGIT_CAP), _LOGIT_CAP)
        return 1.0 / (1.0 + math.exp(-u))

    def jacobian(self, x: float) -> float:
        """``dx/du`` at ``x``."""
        return x if self.transform == "log" else x * (1.0 - x)


def parameters_of(spec: OptimizerSpec) -> dict[str, _Param]:
    """The fittable parameters of ``spec`` by user name: ``lr`` always; ``eps``, ``beta1``/``beta2``
    (Adam's ``betas``), ``beta1``/``momentum`` (heavy ball, Nesterov), ``beta2``/``alpha`` (RMSProp);
    ``noise`` (the flows' gradient-noise variance σ², see :func:`~rodflow.flows.parts.next_n`) for
    every optimizer with a second moment."""
    out = {"lr": _Param("lr", "lr", "log")}
    if spec.beta2 is not None:
        out["noise"] = _Param("noise", "noise", "log", flow=True)
    if isinstance(spec, AdamMoments):
        out["beta1"] = _Param("beta1", "betas[0]", "logit")
        out["beta2"] = _Param("beta2", "betas[1]", "logit")
        out["eps"] = _Param("eps", "eps", "log")
    elif isinstance(spec, Momentum):
        out["beta1"] = out["momentum"] = _Param("momentum", "momentum", "logit")
    elif isinstance(spec, RMSProp):
        out["beta2"] = out["alpha"] = _Param("alpha", "alpha", "logit")
        out["eps"] = _Param("eps", "eps", "log")
    return out


def _resolve(spec: OptimizerSpec, fit: Any) -> list[_Param]:
    if isinstance(fit, str):
        fit = (fit,)
    if not isinstance(fit, Sequence) or not fit:
        raise ValueError(f"fit must be a non-empty sequence of parameter names, got {fit!r}")
    table = parameters_of(spec)
    out: list[_Param] = []
    for name in fit:
        if name == "noise" and spec.beta2 is None:
            raise ValueError(f"fit: 'noise' is the gradient-noise variance in a second moment, which {spec.name} "
                             "lacks (its flow's expected step does not depend on the noise)")
        if not isinstance(name, str) or name not in table:
            raise ValueError(f"fit: unknown parameter {name!r} for {spec.name}; choose from {', '.join(table)}")
        p = table[name]
        if any(q.field == p.field for q in out):
            raise ValueError(f"fit: {name!r} names the same hyperparameter ({p.field}) as another entry")
        out.append(p)
    return out


def _with(spec: OptimizerSpec, params: Sequence[_Param], values: Sequence[float]) -> OptimizerSpec:
    """A copy of ``spec`` with the parameters set to ``values`` (validated by the spec)."""
    kwargs: dict[str, Any] = {}
    betas = list(getattr(spec, "betas", ()))
    for p, x in zip(params, values):
        if p.flow:
            continue
        if p.field.startswith("betas["):
            betas[int(p.field[6])] = x
            kwargs["betas"] = tuple(betas)
        else:
            kwargs[p.field] = x
    return dataclasses.replace(spec, **kwargs)


def _flow_args(params: Sequence[_Param], values: Sequence[float]) -> dict[str, float]:
    """The fitted flow arguments (``noise``) among ``params``, by name."""
    return {p.field: x for p, x in zip(params, values) if p.flow}


def noise_estimate(trajectory: Trajectory, loss_fn: LossFn, spec: OptimizerSpec, window: tuple[int, int]) -> float:
    r"""A moment estimate of the gradient-noise variance σ² from the record's second moments.

    The recorded ``v`` inverts the spec's update for the statistic of the gradient actually used,
    ``q_k = (v_{k+1} − β₂v_k)/(1 − β₂) = sq(∇L(θ_k) + z_k)``; with ``r_k = q_k − sq(∇L(θ_k))``
    (one loss gradient per step), ``E r = cσ²`` and ``Var r = 4 sq(∇L)σ² + 2cσ⁴`` for Gaussian ``z``
    (``c = E[sq(z)]/σ²``: 1 per coordinate, ``d`` for ``‖g‖²``). The estimate is the weighted least
    squares ``σ² = Σ w c r / Σ w c²`` with ``w = 1/Var r``, iterated from the unweighted mean, so that
    coordinates whose gradient dwarfs the noise (cross term ``2∇L·z``) do not drown those where it
    does not. It is the start of a fit of ``noise``; a run without noise gives a value near roundoff,
    floored at ``10⁻¹²`` of the mean ``sq(∇L)/c``.
    """
    from .derivatives import gradient

    b2 = spec.beta2
    if b2 is None or trajectory.v is None:
        raise ValueError(f"fit: 'noise' needs the recorded second moment v of an adaptive method ({spec.name})")
    a, b = window
    i, j = trajectory.index_of(a), trajectory.index_of(b)
    grad = gradient(loss_fn)
    v = trajectory.v[i: j + 1].detach().to(torch.float64)
    q = (v[1:] - b2 * v[:-1]) / (1.0 - b2)
    s = torch.stack([spec.second_moment(grad(trajectory.theta[k]).detach()) for k in range(i, j)]).to(torch.float64)
    c = float(spec.noise_moment(1.0, trajectory.theta[i]))  # type: ignore[arg-type]
    r = (q - s).reshape(-1)
    s = s.reshape(-1)
    floor = max(1e-12 * float(s.mean()) / c, torch.finfo(torch.float64).tiny)
    var = max(float(r.mean()) / c, floor)
    for _ in range(50):
        w = 1.0 / (4.0 * s * var + 2.0 * c * var * var)
        new = max(float((w * r).sum()) / (c * float(w.sum())), floor)
        done = abs(new - var) <= 1e-6 * var
        var = new
        if done:
            break
    return var


def _guess(trajectory: Trajectory, optimizer: Any) -> OptimizerSpec:
    if isinstance(optimizer, OptimizerSpec):
        return optimizer
    cfg = trajectory.config or {}
    name = cfg.get("optimizer") if optimizer is None else optimizer
    if not isinstance(name, str):
        raise ValueError("optimizer: give the spec to start from (rodflow.optimizer(...)) or its name; the "
                         "trajectory's config does not say which optimizer recorded it")
    hp = cfg.get("hyperparameters") if cfg.get("optimizer") == name else None
    try:
        return make_optimizer(name, **(hp if isinstance(hp, dict) else {}))
    except TypeError as err:
        raise ValueError(f"optimizer: the recorded hyperparameters do not make a {name!r} spec ({err}); pass "
                         "optimizer=rodflow.optimizer(...)") from None


# ---------------------------------------------------------------------------- results
@dataclass
class FitStats:
    """Work done by a fit."""

    iterations: int = 0  #: minimiser iterations
    function_evals: int = 0  #: discrepancy evaluations (one solve of every segment each)
    jacobian_evals: int = 0  #: Jacobians / gradients (2p discrepancy evaluations each)
    grad_evals: int = 0  #: gradient evaluations of the loss over all solves
    ode_nfe: int = 0  #: vector-field evaluations over all solves
    failed_evals: int = 0  #: trials whose flow failed (charged a large discrepancy)
    success: bool = False
    message: str = ""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class FitResult:
    """A flow fitted to a recorded run (see :func:`fit_flow`).

    Attributes:
        values: fitted hyperparameters, user name → value (``noise``: the flow's gradient-noise variance).
        stderr: their standard errors, name → value: the Gauss–Newton curvature with the scores
            clustered by segment (a sandwich, robust to residuals correlated along a segment),
            delta method to the original parametrisation; ``inf`` for a parameter not identified
            (its effect on the iterates lost in roundoff, :data:`UNIDENTIFIED`).
        discrepancy: the final relative discrepancy ``D`` (see :mod:`rodflow.fit`).
        curve: ``[n]`` per-step contributions to ``D`` (``curve.sum() == discrepancy``), at :attr:`steps`.
        steps: ``[n]`` the steps of :attr:`curve` (int64).
        family: ``"stable"`` or ``"rod"``.
        spec: the optimizer spec at the fitted values.
        initial: the starting values, name → value.
        stats: the minimiser's statistics.
        candidates: family → final discrepancy of each family fitted (both with ``family="auto"``).
        stderr_iid: the same from ``σ²(JᵀJ)⁻¹``, residuals taken as independent (smaller; see
            ``docs/fitting.md`` for how much it undercovers).
        covariance: ``[p, p]`` the clustered covariance of the fitted values (original parametrisation).
        segments: the fitted flow's solution on each segment.
        trajectory: the record that was fitted (for :meth:`plot`).
        config: what was fitted, for the record.
    """

    values: dict[str, float]
    stderr: dict[str, float]
    discrepancy: float
    curve: Tensor
    steps: Tensor
    family: str
    spec: OptimizerSpec
    initial: dict[str, float]
    stats: FitStats
    candidates: dict[str, float] = field(default_factory=dict)
    stderr_iid: dict[str, float] = field(default_factory=dict)
    covariance: np.ndarray | None = None
    segments: list[FlowSolution] = field(default_factory=list, repr=False)
    trajectory: Trajectory | None = field(default=None, repr=False, compare=False)
    config: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> str:
        """A short text table: parameters with their standard errors and start, the discrepancy, the work."""
        cfg = self.config
        lines = [f"{self.family} flow (order {cfg.get('order')}) fitted to {self.spec.name}, steps "
                 f"{cfg.get('window', ('?', '?'))[0]}..{cfg.get('window', ('?', '?'))[1]} in segments of "
                 f"{cfg.get('segment')}",
                 f"{'parameter':<10} {'value':>12} {'stderr':>10} {'start':>12}"]
        for name, x in self.values.items():
            lines.append(f"{name:<10} {x:>12.6g} {self.stderr[name]:>10.3g} {self.initial[name]:>12.6g}")
        lines.append(f"discrepancy {self.discrepancy:.4g}" + (
            "  (" + ", ".join(f"{k} {v:.4g}" for k, v in self.candidates.items()) + ")"
            if len(self.candidates) > 1 else ""))
        s = self.stats
        lines.append(f"{cfg.get('method')}: {s.iterations} iterations, {s.function_evals} evaluations, "
                     f"{s.jacobian_evals} Jacobians, {s.grad_evals} loss gradients"
                     + ("" if s.success else f" (not converged: {s.message})"))
        return "\n".join(lines)

    def plot(self, *, title: str | None = None) -> Any:
        """Discrepancy over steps, and the fitted flow's loss on each segment against the record's.

        Returns a :class:`matplotlib.figure.Figure` built without pyplot (see :mod:`rodflow.plot`).
        """
        from matplotlib.figure import Figure

        from .style import FAMILY_COLOURS, LABELS, style_axes

        fig = Figure(figsize=(7.0, 5.5), layout="constrained")
        ax_d, ax_l = fig.subplots(2, 1, sharex=True)
        for ax in (ax_d, ax_l):
            style_axes(ax)
        c = FAMILY_COLOURS.get(self.family, "C0")
        curve = self.curve.detach().cpu().numpy()
        t = self.steps.cpu().numpy()
        ax_d.plot(t, np.where(curve > 0, curve, np.nan), color=c, lw=1.2, label=f"{self.family}: D = "
                  f"{self.discrepancy:.3g}")
        ax_d.set_yscale("log")
        ax_d.set_ylabel("per-step discrepancy ‖θ̂ₖ − θₖ‖²/S")
        if self.trajectory is not None:
            lo, hi = self.config["window"]
            i, j = self.trajectory.index_of(lo), self.trajectory.index_of(hi)
            ax_l.plot(self.trajectory.t[i:j + 1].numpy(), self.trajectory.loss[i:j + 1].detach().numpy(),
                      color=FAMILY_COLOURS["iterates"], lw=1.0, label="iterates")
        for n, sol in enumerate(self.segments):
            ax_l.plot(sol.t.numpy(), sol.loss.detach().numpy(), color=c, lw=1.0, ls="--",
                      label=f"{self.family} flow, per segment" if n == 0 else None)
        for ax in (ax_d, ax_l):
            for sol in self.segments[1:]:
                ax.axvline(int(sol.t[0]), color="0.8", lw=0.5)
            ax.legend(fontsize=8)
        ax_l.set_yscale("log")
        ax_l.set_ylabel(LABELS["loss"])
        ax_l.set_xlabel(LABELS["step"])
        vals = ", ".join(f"{k} = {v:.4g} ± {self.stderr[k]:.2g}" for k, v in self.values.items())
        ax_d.set_title(title or f"{self.family} flow fitted to {self.spec.name}: {vals}", fontsize=9)
        return fig


# ---------------------------------------------------------------------------- the objective
class _Objective:
    """Residuals ``r(u) = (θ̂ − θ)/√S`` of the multiple-shooting fit, with a cache and work counters."""

    def __init__(self, trajectory: Trajectory, make_flow: Callable[[OptimizerSpec, dict[str, float]], Flow],
                 spec: OptimizerSpec,
                 params: list[_Param], window: tuple[int, int], segment: int, solve_kwargs: dict[str, Any]):
        self.trajectory = trajectory
        self.make_flow = make_flow
        self.spec = spec
        self.params = params
        self.solve_kwargs = solve_kwargs
        a, b = window
        self.starts = list(range(a, b, segment))
        self.lengths = [min(segment, b - s) for s in self.starts]
        row = trajectory.index_of(a)
        theta = trajectory.theta
        targets, scale = [], 0.0
        for s, n in zip(self.starts, self.lengths):
            i = row + (s - a)
            seg = theta[i + 1: i + n + 1]
            targets.append(seg)
            scale += float(((seg - theta[i]) ** 2).sum())
        if not scale > 0:
            raise ValueError("trajectory: the iterates do not move over the window; there is nothing to fit")
        self.targets = targets
        self.scale = scale
        self.steps = torch.cat([torch.arange(s + 1, s + n + 1) for s, n in zip(self.starts, self.lengths)])
        self.n = int(sum(t.numel() for t in targets))
        self.cache: dict[bytes, tuple[np.ndarray, list[FlowSolution]] | None] = {}
        self.stats = FitStats()

    def values(self, u: np.ndarray) -> list[float]:
        return [p.from_u(float(x)) for p, x in zip(self.params, u)]

    def solve(self, u: np.ndarray) -> tuple[np.ndarray, list[FlowSolution]] | None:
        """Residual vector and segment solutions at ``u`` (``None`` if the trial's flow fails)."""
        key = np.asarray(u, dtype=np.float64).tobytes()
        if key in self.cache:
            return self.cache[key]
        self.stats.function_evals += 1
        vals = self.values(u)
        flow = self.make_flow(_with(self.spec, self.params, vals), _flow_args(self.params, vals))
        sols, res = [], []
        try:
            for s, n, target in zip(self.starts, self.lengths, self.targets):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", TransientWarning)
                    sol = flow.solve(self.trajectory, start=s, steps=n, check_config=False, **self.solve_kwargs)
                self.stats.grad_evals += flow.nfe_grad
                self.stats.ode_nfe += sol.stats.nfe
                sols.append(sol)
                res.append((sol.theta[1:] - target).reshape(-1))
            r = (torch.cat(res) / math.sqrt(self.scale)).detach().cpu().numpy().astype(np.float64)
            out: tuple[np.ndarray, list[FlowSolution]] | None = (r, sols)
            if not np.isfinite(r).all():
                out = None
        except (IntegrationError, NonFiniteError):
            out = None
        if out is None:
            self.stats.failed_evals += 1
        self.cache[key] = out
        return out

    def residuals(self, u: np.ndarray) -> np.ndarray:
        hit = self.solve(u)
        if hit is None:
            return np.full(self.n, math.sqrt(_FAILED / self.n))
        return hit[0]

    def jacobian(self, u: np.ndarray, h: float = FD_STEP) -> np.ndarray:
        """Central differences ``(r(u + h e_j) − r(u − h e_j))/2h``."""
        self.stats.jacobian_evals += 1
        u = np.asarray(u, dtype=np.float64)
        cols = []
        for j in range(u.size):
            e = np.zeros_like(u)
            e[j] = h
            cols.append((self.residuals(u + e) - self.residuals(u - e)) / (2 * h))
        return np.stack(cols, axis=1)

    def value(self, u: np.ndarray) -> float:
        r = self.residuals(u)
        return float(r @ r)

    def gradient(self, u: np.ndarray) -> np.ndarray:
        return 2.0 * self.jacobian(u).T @ self.residuals(u)

    def per_step(self, r: np.ndarray) -> Tensor:
        """Per-step contributions to ``D`` from the residual vector ``r``."""
        d = self.targets[0].shape[1]
        return torch.from_numpy((r.reshape(-1, d) ** 2).sum(axis=1))


# ---------------------------------------------------------------------------- the fit
def _window(trajectory: Trajectory, window: Any, spec: OptimizerSpec, need: int) -> tuple[int, int]:
    first, last = int(trajectory.t[0]), int(trajectory.t[-1])
    if window is None:
        a = max(first, TRANSIENT_STEPS) if spec.beta2 is not None else first
        a = a if a < last else first
        b = last
    else:
        if not isinstance(window, Sequence) or isinstance(window, str) or len(window) != 2:
            raise ValueError(f"window must be a pair (first step, last step), got {window!r}")
        a, b = (int(x) for x in window)
        if a < first or b > last:
            raise ValueError(f"window: steps {a}..{b} lie outside the record ({first}..{last})")
        if b <= a:
            raise ValueError(f"window: the last step must come after the first, got ({a}, {b})")
    try:
        i, j = trajectory.index_of(a), trajectory.index_of(b)
    except ValueError:
        raise ValueError(f"window: steps {a} and {b} must both be recorded") from None
    if not bool((trajectory.t[i: j + 1].diff() == 1).all()):
        raise ValueError(f"trajectory: the window {a}..{b} has gaps; a fit needs every step recorded "
                         "(record with record_every=1)")
    if b - a + 1 < need:
        raise ValueError(f"window: {b - a + 1} steps are too few, the flow's initial state needs {need}")
    if spec.beta2 is not None and a < TRANSIENT_STEPS:
        warnings.warn(f"window: starts at step {a}, inside the {spec.name} start-up transient that no flow follows; "
                      f"start it at step ≥ {TRANSIENT_STEPS}", TransientWarning, stacklevel=3)
    return a, b


def _covariances(obj: _Objective, params: list[_Param], values: list[float], u: np.ndarray,
                 r: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Covariances of the fitted values: segment-clustered sandwich and i.i.d. Gauss–Newton.

    With the residual Jacobian ``J`` (central differences) and ``B = (JᵀJ)⁻¹`` (the Gauss–Newton
    inverse curvature of ``D/2``): i.i.d. ``Cov(u) = σ²B`` with ``σ² = ‖r‖²/(n − p)``; clustered
    ``Cov(u) = B (Σ_j s_j s_jᵀ) B · S/(S − p)`` with the score ``s_j = J_jᵀ r_j`` of segment ``j``
    of ``S``. Both are mapped to the original parameters by the delta method, ``diag(dx/du)``.
    A parameter whose Jacobian column is below :data:`UNIDENTIFIED` of the largest (its effect on
    the iterates lost in roundoff, e.g. a noise variance driven to 0) is not identified at the fit:
    its variance is ``inf`` and the others' are those with it held fixed.
    """
    full = obj.jacobian(u)
    norms = np.linalg.norm(full, axis=0)
    keep = norms > UNIDENTIFIED * norms.max()
    if not keep.any():
        nothing = np.full((len(params), len(params)), np.inf)
        return nothing, nothing.copy()
    jac = full[:, keep]
    p = int(keep.sum())
    bread = np.linalg.pinv(jac.T @ jac)
    cov_iid = float(r @ r) / max(r.size - p, 1) * bread
    d = obj.targets[0].shape[1]
    scores, i = [], 0
    for n in obj.lengths:
        rows = slice(i, i + n * d)
        scores.append(jac[rows].T @ r[rows])
        i += n * d
    sc = np.stack(scores)
    n_seg = len(scores)
    meat = sc.T @ sc * (n_seg / max(n_seg - p, 1))
    cov = bread @ meat @ bread
    dx = np.array([q.jacobian(x) for q, x in zip(params, values)])[keep]
    scale = np.outer(dx, dx)
    out = []
    for c in (cov * scale, cov_iid * scale):
        m = np.zeros((len(params), len(params)))
        m[np.ix_(keep, keep)] = c
        m[~keep, :] = m[:, ~keep] = np.nan
        m[~keep, ~keep] = np.inf
        out.append(m)
    return out[0], out[1]


def _se(names: list[str], cov: np.ndarray) -> dict[str, float]:
    return {n: math.inf if cov[i, i] == math.inf else float(math.sqrt(max(cov[i, i], 0.0)))
            for i, n in enumerate(names)}


#: The coarse scan of lr before the local fit: the start times 2^j for these j.
PRESEARCH = (-4, -3, -2, -1, 1, 2)


def _presearch(obj: _Objective, params: list[_Param], u0: np.ndarray) -> np.ndarray:
    """The best of the start and the start's lr times 2^j (:data:`PRESEARCH`), the others held.

    A rate far above the truth can put the flow outside the map's stable range, where the
    discrepancy has local minima (measured: RMSProp from 10× the rate stopped at D = 13); a coarse
    scan in log lr, six more evaluations, starts the local fit in the right basin.
    """
    i = next((k for k, p in enumerate(params) if p.name == "lr"), None)
    if i is None:
        return u0
    best_u, best_v = u0, obj.value(u0)
    for j in PRESEARCH:
        u = np.array(u0, dtype=np.float64)
        u[i] += j * math.log(2.0)
        v = obj.value(u)
        if v < best_v:
            best_u, best_v = u, v
    return best_u


def _fit_one(trajectory: Trajectory, loss_fn: LossFn, family: str, spec: OptimizerSpec, params: list[_Param],
             u0: np.ndarray, window: tuple[int, int], segment: int, method: str, order: int | None,
             solve_kwargs: dict[str, Any], flow_kwargs: dict[str, Any], max_iter: int, tol: float,
             presearch: bool = True) -> FitResult:
    from scipy.optimize import least_squares, minimize

    cls: type[Flow] = StableFlow if family == "stable" else RodFlow
    kw: dict[str, Any] = dict(flow_kwargs)
    kw["order"] = 2 if order is None else order
    if kw["order"] == 2:
        kw.setdefault("form", "look_behind")  # segments of K steps by rk4 (``form="delay"``: ode_method="trapezoid")

    def make_flow(s: OptimizerSpec, extra: dict[str, float]) -> Flow:
        return cls(s, loss_fn, **{**kw, **extra})

    obj = _Objective(trajectory, make_flow, spec, params, window, segment, solve_kwargs)
    start = u0
    if presearch:
        u0 = _presearch(obj, params, u0)
    if obj.solve(u0) is None:
        raise ValueError(f"optimizer: the {family} flow fails at the starting values "
                         f"{dict(zip([p.name for p in params], obj.values(u0)))}; start closer")
    if method == "least_squares":
        res = least_squares(obj.residuals, u0, jac=obj.jacobian, method="trf", xtol=tol, ftol=tol, gtol=tol,
                            max_nfev=max_iter, x_scale=1.0)
        nit = int(res.nfev)
    else:
        res = minimize(obj.value, u0, jac=obj.gradient, method=method, options={"maxiter": max_iter},
                       tol=tol)
        nit = int(getattr(res, "nit", 0))
    u = np.asarray(res.x, dtype=np.float64)
    hit = obj.solve(u)
    if hit is None:
        raise ValueError(f"fit: the {family} flow fails at the minimiser's final values; start closer or shorten "
                         "segment")
    r, sols = hit
    values = obj.values(u)
    cov, cov_iid = _covariances(obj, params, values, u, r)
    stats = obj.stats
    stats.iterations = nit
    stats.success = bool(res.success)
    stats.message = str(res.message)
    names = [q.name for q in params]
    final = _with(spec, params, values)
    disc = float(r @ r)
    return FitResult(values=dict(zip(names, values)),
                     stderr=_se(names, cov), stderr_iid=_se(names, cov_iid),
                     discrepancy=disc, curve=obj.per_step(r), steps=obj.steps, family=family, spec=final,
                     initial=dict(zip(names, obj.values(start))), stats=stats, candidates={family: disc},
                     covariance=cov, segments=sols, trajectory=trajectory,
                     config={"family": family, "optimizer": spec.name, "fit": names, "window": window,
                             "segment": segment, "method": method, "order": kw["order"],
                             "flow_kwargs": dict(flow_kwargs), "solve": dict(solve_kwargs), "tol": tol,
                             "max_iter": max_iter, "fixed": final.hyperparameters(),
                             "flow_args": _flow_args(params, values)})


def fit_flow(
    trajectory: Trajectory,
    loss_fn: LossFn,
    *,
    family: str = "stable",
    optimizer: OptimizerSpec | str | None = None,
    fit: Sequence[str] | str = ("lr",),
    window: tuple[int, int] | None = None,
    start: Mapping[str, float] | None = None,
    segment: int = 10,
    method: str = "least_squares",
    order: int | None = None,
    ode_method: str = "rk4",
    ode_options: dict[str, Any] | None = None,
    flow_kwargs: dict[str, Any] | None = None,
    max_iter: int = 50,
    tol: float = 1e-10,
    presearch: bool = True,
) -> FitResult:
    """Fit the hyperparameters ``fit`` of a flow to the recorded iterates of ``trajectory``.

    Minimises the multiple-shooting discrepancy ``D = Σ‖θ̂_k − θ_k‖² / Σ‖θ_k − θ_{s(k)}‖²`` (see
    :mod:`rodflow.fit`) over ``log`` of positive and ``logit`` of (0, 1) parameters, with central
    finite-difference Jacobians.

    Args:
        trajectory: the record (every step of the window recorded: ``record_every=1``).
        loss_fn: the loss the run minimised, ``θ ↦ L(θ)``.
        family: ``"stable"``, ``"rod"`` or ``"auto"`` (fit both, return the one with the smaller
            discrepancy; :attr:`FitResult.candidates` has both).
        optimizer: the spec to start from (its other hyperparameters stay fixed), or its name;
            default: the optimizer and hyperparameters in ``trajectory.config``.
        fit: the parameters to fit, among :data:`PARAMETERS` that the spec has (``"beta1"`` is Adam's
            β₁ or heavy ball's momentum, ``"beta2"`` Adam's β₂ or RMSProp's α). ``"noise"`` is the
            flow's gradient-noise variance σ² (``N⁺ = β₂N + (1 − β₂)(sq(g) + E[sq(z)])``, see
            :func:`~rodflow.flows.parts.next_n`), a nuisance parameter for optimizers with a second
            moment, started from :func:`noise_estimate` unless ``start`` gives it: on a mini-batch
            or noisy run the recorded ``v`` tracks ``(∇L)² + σ²``, and an lr-only fit of Adam or
            RMSProp comes out low by more than its standard error; fit ``("lr", "noise")`` there
            (``docs/fitting.md``). A parameter whose effect is lost in roundoff gets ``stderr = inf``.
        window: ``(first, last)`` recorded steps (default: the whole record, after the
            :data:`~rodflow.flows.base.TRANSIENT_STEPS` start-up transient of an adaptive method).
        start: starting values by name (default: the spec's).
        segment: K, the steps per shooting segment.
        method: the minimiser (:data:`METHODS`).
        order: the flow's order (default 2: the look-behind field, which reproduces the map to
            second order; the first-order flow's best lr is biased by O(lr·λ), about 1 % on the
            tests' Adam run). Both families are fitted in the look-behind form (the rod's default
            form is the delay equation: ``flow_kwargs={"form": "delay"}`` with
            ``ode_method="trapezoid"`` fits that instead).
        ode_method, ode_options: the fixed-step solver of each segment (default ``rk4``, step ½).
        flow_kwargs: more arguments of the flow's constructor (``init``, ``floor``, ``rate``, a fixed
            ``noise``).
        max_iter: cap on the minimiser's evaluations (least squares) or iterations.
        presearch: scan lr at the start × 2^j (:data:`PRESEARCH`) and start the local fit from the best
            (``False``: from ``start`` itself).
        tol: the minimiser's tolerances.
    """
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable as loss_fn(theta)")
    if family not in FAMILIES:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if isinstance(segment, bool) or not isinstance(segment, int) or segment < 1:
        raise ValueError(f"segment must be a positive int, got {segment!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int, got {max_iter!r}")
    spec = _guess(trajectory, optimizer)
    params = _resolve(spec, fit)
    flow_kwargs = dict(flow_kwargs or {})
    clash = sorted(p.field for p in params if p.flow and p.field in flow_kwargs)
    if clash:
        raise ValueError(f"flow_kwargs: {', '.join(map(repr, clash))} is fitted; give its starting value in start=")
    need = 7 if family != "stable" else 2
    win = _window(trajectory, window, spec, need)
    init = {p.name: p.get(spec) for p in params if not p.flow}
    if start is not None:
        if not isinstance(start, Mapping):
            raise TypeError(f"start must be a mapping name → value, got {type(start).__name__}")
        names = tuple(p.name for p in params)
        unknown = set(start) - set(names)
        if unknown:
            raise ValueError(f"start: {', '.join(sorted(map(repr, unknown)))} not among the fitted parameters "
                             f"{names}")
        init.update({k: float(v) for k, v in start.items()})
    if "noise" in [p.name for p in params] and "noise" not in init:
        init["noise"] = noise_estimate(trajectory, loss_fn, _with(spec, params, [init.get(p.name, 0.0) for p in params]),
                                       win)
    u0 = np.array([p.to_u(init[p.name]) for p in params], dtype=np.float64)
    solve_kwargs = {"method": ode_method, "options": {"step_size": 0.5} if ode_options is None else dict(ode_options)}
    families = ("stable", "rod") if family == "auto" else (family,)
    results = [_fit_one(trajectory, loss_fn, fam, spec, params, u0, win, segment, method, order, solve_kwargs,
                        flow_kwargs, max_iter, tol, presearch) for fam in families]
    best = min(results, key=lambda r: r.discrepancy)
    best.candidates = {r.family: r.discrepancy for r in results}
    return best
