"""Distances between recorded iterates and a flow's prediction: :func:`compare`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .flows.base import FlowSolution
from .trajectory import Trajectory

__all__ = ["Comparison", "compare", "eos_onset"]


def eos_onset(series: dict[str, Tensor], threshold: float) -> int | None:
    """First recorded step at which the preconditioned sharpness reaches ``threshold`` (``None`` if never)."""
    steps = series.get("preconditioned_step", series.get("step"))
    values = series.get("preconditioned_sharpness")
    if steps is None or values is None or values.numel() == 0:
        return None
    hit = (values >= threshold).nonzero()
    return None if hit.numel() == 0 else int(steps[int(hit[0, 0])])


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
        k_star: first step at which the iterates reach their threshold, or ``None``.
        window: the EoS window ``(a, b)`` (steps ``a ≤ k < b``) used by :meth:`summary`.
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
        if self.window is None:
            out.update(pre_eos_mean_distance=out["mean_distance"], eos_mean_distance=float("nan"),
                       eos_max_distance=float("nan"))
        else:
            a, b = self.window
            pre = self.t < a
            eos = (self.t >= a) & (self.t < b)
            out.update(pre_eos_mean_distance=mean(self.distance, pre), eos_mean_distance=mean(self.distance, eos),
                       eos_max_distance=float(self.distance[eos].max()) if bool(eos.any()) else float("nan"),
                       eos_mean_centre_distance=mean(self.centre_distance, eos))
        return out


def compare(trajectory: Trajectory, solution: FlowSolution, *, window: tuple[int, int] | None = None,
            sharpness_every: int | None = None, threshold: float | None = None) -> Comparison:
    """Compare the recorded iterates with a flow's prediction at every step they share.

    The EoS window defaults to ``(k*, last step + 1)`` with ``k*`` the first step at which the
    iterates' preconditioned sharpness reaches the optimizer's threshold, read from
    ``trajectory.sharpness`` (record it with ``iterate(..., sharpness_every=N)``) or, when absent,
    measured here every ``sharpness_every`` steps (default: about 50 points) with the flow's
    optimizer and loss. ``window=(a, b)`` overrides it.
    """
    if not isinstance(trajectory, Trajectory):
        raise TypeError(f"trajectory must be a Trajectory, got {type(trajectory).__name__}")
    if not isinstance(solution, FlowSolution):
        raise TypeError(f"solution must be a FlowSolution, got {type(solution).__name__}")
    common = [int(s) for s in solution.t if bool((trajectory.t == s).any())]
    if not common:
        raise ValueError("trajectory and solution share no step")
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
        from .sharpness import SharpnessTracker

        every = sharpness_every or max(1, len(common) // 50)
        tracker = SharpnessTracker(flow.spec, flow.loss_fn)
        for s in common[::every]:
            tracker.record(trajectory.state(s))
        k_star = eos_onset(tracker.series(), flow.spec.threshold if thr is None else thr)
    if window is None and k_star is not None:
        window = (k_star, common[-1] + 1)
    return Comparison(t=torch.tensor(common), distance=dist, relative_distance=rel, centre_distance=centre_dist,
                      amplitude=amp, alternating_amplitude=alt, flow_amplitude=flow_amp, loss_gap=loss_gap, k_star=k_star, window=window,
                      info={"optimizer": spec_name, "flow": solution.kind})
