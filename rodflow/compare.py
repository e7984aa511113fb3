r"""Distances between recorded iterates and a flow's prediction: :func:`compare`.

Two distances per step, both reported:

* **parity** ``‖θ_k − θ̂_k‖`` with ``θ̂_k = W_k + (−1)^k Δ_k``: the flow must also know the sign of
  the oscillation;
* **phase-free** ``min(‖θ_k − W_k − (−1)^kΔ_k‖, ‖θ_k − W_k + (−1)^kΔ_k‖)``: the distance to the
  nearer end of the rod ``W ± Δ``. An oscillation grown from rounding noise has a sign that a
  deterministic flow cannot know (a coin flip); the phase-free distance does not charge it. For
  the stable flow (Δ = 0) both are the same. :meth:`Comparison.summary` gives it per step
  (``*_phase_free_distance``) and per window (``*_window_phase_free_distance``: one sign for the
  whole window, the smaller of the parity and the anti-phase window means; stricter).

**EoS window.** ``k*`` is the onset of *sustained* EoS (:func:`eos_onset`): the first recorded step
at which the iterates' preconditioned sharpness reaches the threshold and from which it stays
above ``hold`` × threshold (default 0.9) for ``sustain`` (default 10 %) of the recorded steps. A
start-up catapult (sharpness above the threshold for a few steps, then far below) does not count.

**Onset of the oscillation.** :func:`oscillation_onset`: the first step at which an alternating
amplitude reaches ``fraction`` (½) of the iterates' plateau (the median of their seven-point
alternating amplitude over the last quarter of the EoS window); the same level is used for the
iterates and for the rod's ‖Δ‖, so their onsets are comparable.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .flows.base import FlowSolution
from .trajectory import Trajectory

__all__ = ["HOLD", "SUSTAIN", "Comparison", "alternating_amplitude7", "compare", "eos_onset", "oscillation_onset"]

#: Sustained EoS: the sharpness stays above HOLD × threshold ...
HOLD = 0.9
#: ... for this fraction of the recorded steps after the crossing.
SUSTAIN = 0.1


def _sustained(steps: list[int], values: list[float], threshold: float, hold: float, span: int) -> int | None:
    for i, (s, v) in enumerate(zip(steps, values)):
        if v >= threshold and all(w >= hold * threshold for t, w in zip(steps[i:], values[i:]) if t < s + span):
            return s
    return None


def eos_onset(series: dict[str, Tensor], threshold: float, *, hold: float = HOLD,
              sustain: float = SUSTAIN) -> int | None:
    """Onset of sustained EoS: the first recorded step with preconditioned sharpness ≥ ``threshold``
    that stays ≥ ``hold·threshold`` over the next ``sustain`` × (recorded span) steps (``None`` if never)."""
    steps = series.get("preconditioned_step", series.get("step"))
    values = series.get("preconditioned_sharpness")
    if steps is None or values is None or values.numel() == 0:
        return None
    st = [int(x) for x in steps]
    span = max(1, math.ceil(sustain * (st[-1] - st[0])))
    return _sustained(st, [float(v) for v in values], threshold, hold, span)


def _bisect_onset(estimate: Callable[[int], float], first: int, last: int, threshold: float, hold: float,
                  sustain: float) -> tuple[int | None, int]:
    """Sustained onset from ~2 log₂ n sharpness estimates; returns ``(k*, number of estimates)``.

    Bisection on ``P(k) = max(S(k), S(k + 1)) ≥ threshold`` (two consecutive steps, so that an
    oscillation of the sharpness around the threshold at the edge does not look like a new
    crossing), keeping ``P(lo)`` false and ``P(hi)`` true; a crossing found is checked at two points
    of the next ``sustain`` span, and a failed check restarts the bisection above it.
    """
    cache: dict[int, float] = {}

    def s(k: int) -> float:
        if k not in cache:
            cache[k] = estimate(k)
        return cache[k]

    def p(k: int) -> bool:
        return s(k) >= threshold or (k < last and s(k + 1) >= threshold)

    span = max(1, math.ceil(sustain * (last - first)))
    ends = [k for k in (last, last - span // 2, last - span) if k >= first]
    lo = first - 1  # a virtual point below the threshold
    while True:
        hi = next((k for k in ends if k > lo and p(k)), None)
        if hi is None:
            return None, len(cache)
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if p(mid):
                hi = mid
            else:
                lo = mid
        if s(hi) < threshold:
            hi += 1
        bad = next((q for q in (hi + span // 2, hi + span) if q <= last and s(q) < hold * threshold), None)
        if bad is None:
            return hi, len(cache)
        lo = bad


def alternating_amplitude7(theta: Tensor, t: Tensor) -> Tensor:
    """``[n]`` the seven-point period-two amplitude ``‖Σ_j (−1)^j C(6, j) θ_{k−3+j}‖/64`` (NaN within 3 steps
    of a gap or an end): unlike the three-point one it does not count the drift (polynomials of degree ≤ 5)."""
    n = theta.shape[0]
    out = torch.full((n,), float("nan"), dtype=theta.dtype)
    if n < 7:
        return out
    w = torch.tensor([1.0, -6.0, 15.0, -20.0, 15.0, -6.0, 1.0], dtype=theta.dtype)
    windows = theta.unfold(0, 7, 1)  # [n − 6, d, 7]
    amp = torch.linalg.vector_norm(windows @ w, dim=1) / 64
    ok = (t.unfold(0, 7, 1).diff(dim=1) == 1).all(dim=1)
    out[3: n - 3] = torch.where(ok, amp, torch.full_like(amp, float("nan")))
    return out


def oscillation_onset(t: Tensor, amplitude: Tensor, level: float) -> int | None:
    """First step at which ``amplitude`` reaches ``level`` (``None`` if never)."""
    hit = (amplitude >= level).nonzero()
    return None if hit.numel() == 0 else int(t[int(hit[0, 0])])


@dataclass
class Comparison:
    """Per-step comparison of iterates and a flow over their common steps.

    Attributes:
        t: ``[n]`` the common steps.
        distance: ``[n]`` ``‖θ_k − θ̂_k‖`` between iterate and predicted iterate.
        relative_distance: ``[n]`` ``distance / ‖θ_k‖``.
        centre_distance: ``[n]`` ``‖c_k − W_k‖``, ``c_k = (θ_{k−1} + 2θ_k + θ_{k+1})/4`` the
            iterates' three-point centre (NaN where a neighbour is missing: first and last step).
        amplitude: ``[n]`` ``½‖θ_{k+1} − θ_k‖`` (NaN at the last step): the oscillation amplitude
            when the iterates oscillate, but it also counts the drift.
        alternating_amplitude: ``[n]`` ``‖2θ_k − θ_{k−1} − θ_{k+1}‖/4``, the three-point estimate of the
            iterates' period-two half-difference (the drift cancels; NaN at the ends). Compare it with
            ``flow_amplitude``.
        flow_amplitude: ``[n]`` the rod's ``‖Δ_k‖`` (zeros for the stable flow).
        loss_gap: ``[n]`` ``|L(θ̂_k) − L(θ_k)|``.
        k_star: onset of sustained EoS of the iterates (see the module docstring), or ``None``.
        window: the EoS window ``(a, b)`` (steps ``a ≤ k < b``) used by :meth:`summary`.
        antiphase_distance: ``[n]`` ``‖θ_k − W_k + (−1)^kΔ_k‖``, the distance to the other end of the rod.
        phase_free_distance: ``[n]`` ``min(distance, antiphase_distance)``.
        alternating_amplitude7: ``[n]`` the iterates' seven-point alternating amplitude
            (:func:`alternating_amplitude7`; NaN near the ends).
    """

    t: Tensor
    distance: Tensor
    relative_distance: Tensor
    centre_distance: Tensor
    amplitude: Tensor
    alternating_amplitude: Tensor
    flow_amplitude: Tensor
    loss_gap: Tensor
    k_star: int | None
    window: tuple[int, int] | None
    info: dict[str, Any] = field(default_factory=dict)
    antiphase_distance: Tensor | None = None
    phase_free_distance: Tensor | None = None
    alternating_amplitude7: Tensor | None = None

    def onsets(self, fraction: float = 0.5) -> dict[str, int | float | None]:
        """Onset of the oscillation of the iterates and of the flow (see the module docstring).

        ``level = fraction × plateau``, the plateau the median seven-point amplitude of the iterates
        over the last quarter of the EoS window (the whole run without one).
        """
        amp = self.alternating_amplitude7 if self.alternating_amplitude7 is not None else self.alternating_amplitude
        a, b = self.window if self.window is not None else (int(self.t[0]), int(self.t[-1]) + 1)
        late = (self.t >= b - max(1, (b - a) // 4)) & (self.t < b) & ~torch.isnan(amp)
        if not bool(late.any()):
            return {"plateau": float("nan"), "iterates": None, "flow": None}
        plateau = float(amp[late].median())
        level = fraction * plateau
        ok = ~torch.isnan(amp)
        return {"plateau": plateau, "iterates": oscillation_onset(self.t[ok], amp[ok], level),
                "flow": oscillation_onset(self.t, self.flow_amplitude, level)}

    def summary(self) -> dict[str, float | int | None]:
        """Mean and max distances overall, before the EoS window and inside it."""

        def mean(x: Tensor, mask: Tensor | None = None) -> float:
            x = x if mask is None else x[mask]
            x = x[~torch.isnan(x)]
            return float(x.mean()) if x.numel() else float("nan")

        out: dict[str, float | int | None] = {
            "mean_distance": mean(self.distance),
            "max_distance": float(self.distance.max()),
            "mean_relative_distance": mean(self.relative_distance),
            "mean_centre_distance": mean(self.centre_distance),
            "mean_loss_gap": mean(self.loss_gap),
            "k_star": self.k_star,
        }
        pf = self.phase_free_distance if self.phase_free_distance is not None else self.distance
        anti = self.antiphase_distance if self.antiphase_distance is not None else self.distance
        out["mean_phase_free_distance"] = mean(pf)
        if self.window is None:
            out.update(pre_eos_mean_distance=out["mean_distance"], eos_mean_distance=float("nan"),
                       eos_max_distance=float("nan"), pre_eos_mean_phase_free_distance=out["mean_phase_free_distance"],
                       eos_mean_phase_free_distance=float("nan"), eos_max_phase_free_distance=float("nan"),
                       eos_window_phase_free_distance=float("nan"))
        else:
            a, b = self.window
            pre = self.t < a
            eos = (self.t >= a) & (self.t < b)
            has = bool(eos.any())
            out.update(pre_eos_mean_distance=mean(self.distance, pre), eos_mean_distance=mean(self.distance, eos),
                       eos_max_distance=float(self.distance[eos].max()) if has else float("nan"),
                       eos_mean_centre_distance=mean(self.centre_distance, eos),
                       pre_eos_mean_phase_free_distance=mean(pf, pre), eos_mean_phase_free_distance=mean(pf, eos),
                       eos_max_phase_free_distance=float(pf[eos].max()) if has else float("nan"),
                       eos_window_phase_free_distance=min(mean(self.distance, eos), mean(anti, eos)))
        return out


def _check_window(window: Any, first: int, last: int) -> tuple[int, int] | None:
    if window is None:
        return None
    if (not isinstance(window, tuple | list) or len(window) != 2
            or any(isinstance(x, bool) or not isinstance(x, int) for x in window)):
        raise TypeError(f"window must be a pair of ints (a, b), got {window!r}")
    a, b = int(window[0]), int(window[1])
    if not a < b:
        raise ValueError(f"window: (a, b) needs a < b, got {window!r}")
    if b <= first or a > last:
        raise ValueError(f"window: {window!r} lies outside the compared steps {first}..{last}")
    return a, b


def compare(trajectory: Trajectory, solution: FlowSolution, *, window: tuple[int, int] | None = None,
            sharpness_every: int | None = None, threshold: float | None = None) -> Comparison:
    """Compare the recorded iterates with a flow's prediction at every step they share.

    The EoS window defaults to ``(k*, last step + 1)`` with ``k*`` the onset of sustained EoS
    (:func:`eos_onset`), read from ``trajectory.sharpness`` (record it with
    ``iterate(..., sharpness_every=N)``) or, when absent, estimated here with the flow's optimizer
    and loss: every ``sharpness_every`` steps if given, else by bisection on the onset
    (~log₂ n eigensolves). Either way a warning says so. ``window=(a, b)`` overrides it.
    """
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
    if not isinstance(solution, FlowSolution):
        raise TypeError(f"solution must be a FlowSolution, got {type(solution).__name__}")
    if sharpness_every is not None and (isinstance(sharpness_every, bool) or not isinstance(sharpness_every, int)
                                        or sharpness_every < 1):
        raise ValueError(f"sharpness_every must be a positive int or None, got {sharpness_every!r}")
    common = [int(s) for s in solution.t if bool((trajectory.t == s).any())]
    if not common:
        raise ValueError("trajectory and solution share no step")
    window = _check_window(window, common[0], common[-1])
    rows = torch.tensor([trajectory.index_of(s) for s in common])
    cols = torch.tensor([s - int(solution.t[0]) for s in common])
    theta = trajectory.theta[rows]
    pred = solution.theta[cols]
    dist = torch.linalg.vector_norm(theta - pred, dim=1)
    rel = dist / torch.linalg.vector_norm(theta, dim=1).clamp_min(torch.finfo(theta.dtype).tiny)
    nan = torch.full_like(dist, float("nan"))
    centre_dist, amp, alt = nan.clone(), nan.clone(), nan.clone()
    t_all = trajectory.t
    for i, (r, s) in enumerate(zip(rows.tolist(), common)):
        if 0 < r < len(trajectory) - 1 and int(t_all[r - 1]) == s - 1 and int(t_all[r + 1]) == s + 1:
            c = (trajectory.theta[r - 1] + 2 * trajectory.theta[r] + trajectory.theta[r + 1]) / 4
            centre_dist[i] = torch.linalg.vector_norm(c - solution.centre[cols[i]])
            alt[i] = torch.linalg.vector_norm(trajectory.theta[r] - c)
        if r < len(trajectory) - 1 and int(t_all[r + 1]) == s + 1:
            amp[i] = 0.5 * torch.linalg.vector_norm(trajectory.theta[r + 1] - trajectory.theta[r])
    flow_amp = (torch.zeros_like(dist) if solution.delta is None
                else torch.linalg.vector_norm(solution.delta[cols], dim=1))
    if solution.delta is None:
        anti = dist
    else:
        sign = (1.0 - 2.0 * (torch.tensor(common) % 2)).to(theta).unsqueeze(1)  # [n, 1]
        anti = torch.linalg.vector_norm(theta - (solution.centre[cols] - sign * solution.delta[cols]), dim=1)
    alt7_all = alternating_amplitude7(trajectory.theta, trajectory.t)
    alt7 = alt7_all[rows]
    loss_gap = (solution.loss[cols] - trajectory.loss[rows]).abs()

    spec_name = solution.config.get("optimizer")
    k_star = None
    flow = solution.flow
    thr = threshold
    if trajectory.sharpness and thr is not None:
        k_star = eos_onset(trajectory.sharpness, thr)
    elif trajectory.sharpness and flow is not None:
        k_star = eos_onset(trajectory.sharpness, flow.spec.threshold)
    elif window is None and flow is not None:
        from .sharpness import SharpnessTracker, preconditioned_sharpness

        thr = flow.spec.threshold if thr is None else thr
        # adaptive methods have no preconditioner before their first step
        steps = [s for s in common if s >= 1] if flow.spec.beta2 is not None else common
        if sharpness_every is not None:
            n_est = len(steps[::sharpness_every])
        else:
            n_est = 2 * max(1, math.ceil(math.log2(max(2, len(steps))))) + 5
        warnings.warn(f"compare: the trajectory has no recorded sharpness; estimating the EoS onset here with ~{n_est} "
                      "eigensolves (record it with iterate(..., sharpness_every=N), or pass window=(a, b))",
                      UserWarning, stacklevel=2)
        if not steps:
            k_star = None
        elif sharpness_every is not None:
            tracker = SharpnessTracker(flow.spec, flow.loss_fn)
            for s in steps[::sharpness_every]:
                tracker.record(trajectory.state(s))
            k_star = eos_onset(tracker.series(), thr)
        else:
            spec, loss_fn = flow.spec, flow.loss_fn

            def estimate(k: int) -> float:
                return preconditioned_sharpness(spec, trajectory.state(k), loss_fn).top

            k_star, _ = _bisect_onset(estimate, steps[0], steps[-1], thr, HOLD, SUSTAIN)
    if window is None and k_star is not None:
        window = (k_star, common[-1] + 1)
    return Comparison(t=torch.tensor(common), distance=dist, relative_distance=rel, centre_distance=centre_dist,
                      amplitude=amp, alternating_amplitude=alt, flow_amplitude=flow_amp, loss_gap=loss_gap,
                      k_star=k_star, window=window, info={"optimizer": spec_name, "flow": solution.kind},
                      antiphase_distance=anti, phase_free_distance=torch.minimum(dist, anti),
                      alternating_amplitude7=alt7)
