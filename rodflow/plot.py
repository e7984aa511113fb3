"""Figures: sharpness curves, loss curves, and how flows track the iterates.

Every function returns a :class:`matplotlib.figure.Figure` built without pyplot, so nothing
here changes the backend or opens a window; in a notebook the figure displays itself, elsewhere
call ``fig.savefig(path)``. Runs are any objects with ``.t`` and ``.loss`` and, for sharpness,
a ``.sharpness`` dict like :attr:`rodflow.Trajectory.sharpness` (trajectories and flow solutions).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from numbers import Real
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .style import LABELS, colour, style_axes, threshold_label

__all__ = ["loss_curves", "sharpness_curve", "tracking"]


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, dtype=float)


def _thresholds(threshold: Any, n: int, preconditioned: bool) -> list[tuple[float, str]] | None:
    """(value, label) of each threshold line: a number, an optimizer spec, or one of either per run."""
    if threshold is None:
        return None

    def one(x: Any) -> tuple[float, str]:
        if hasattr(x, "threshold_formula"):
            value = float(x.threshold) if preconditioned else float(x.threshold) / float(x.lr)
            return value, threshold_label(x, preconditioned=preconditioned)
        if isinstance(x, bool) or not isinstance(x, Real | int | float):
            raise TypeError(f"threshold must be a number, an optimizer spec or a sequence of them, got "
                            f"{type(x).__name__}")
        return float(x), threshold_label(x)

    if isinstance(threshold, str) or not isinstance(threshold, Sequence):
        return [one(threshold)]
    values = [one(x) for x in threshold]
    if len(values) != n:
        raise ValueError(f"threshold: expected one number or one per run ({n}), got {len(values)}")
    return values


def sharpness_curve(
    *runs: Any,
    threshold: Any = None,
    preconditioned: bool = False,
    labels: Sequence[str] | None = None,
    loss: bool = True,
    logy: bool = False,
    ax: Axes | None = None,
    title: str | None = None,
    figsize: tuple[float, float] | None = None,
) -> Figure:
    """Sharpness against step for each run, with the stability threshold as a horizontal line.

    Draws λ_max(H) (or λ_max(P⁻¹H) with ``preconditioned=True``) from each run's ``.sharpness``
    series and, underneath, the training loss ``.loss`` against ``.t``.

    Args:
        runs: trajectories or flow solutions whose ``.sharpness`` was recorded
            (``iterate(..., sharpness_every=N)``, ``solve(..., sharpness_every=N)``).
        threshold: the line to draw: an optimizer spec (its threshold, labelled with its formula:
            ``spec.threshold`` for the preconditioned sharpness, ``spec.threshold/η`` for the raw
            sharpness of GD and the momentum methods), a number, or one of either per run (e.g.
            ``2/η`` for GD's raw sharpness at several learning rates, each in its run's colour).
        preconditioned: plot λ_max(P⁻¹H) instead of λ_max(H).
        labels: one legend label per run (default ``"run i"``).
        loss: add a loss panel underneath (ignored when ``ax`` is given); log scale when the
            losses are positive.
        logy: logarithmic sharpness axis.
        ax: draw the sharpness into this axes instead of a new figure.
        title: the sharpness panel's title.
        figsize: size of a new figure in inches.

    >>> import torch, rodflow
    >>> prob = rodflow.problems.quadratic([3.0, 1.0], seed=0)
    >>> spec = rodflow.optimizer("gd", lr=0.5)
    >>> traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, 10, sharpness_every=5)
    >>> fig = sharpness_curve(traj, threshold=2 / spec.lr, labels=["gd"])
    >>> [a.get_ylabel() for a in fig.axes]
    ['λ_max(H)', 'training loss L(θₖ)']
    """
    if not runs:
        raise ValueError("runs: give at least one trajectory or flow solution")
    if labels is not None and len(labels) != len(runs):
        raise ValueError(f"labels: expected {len(runs)} labels, got {len(labels)}")
    lines = _thresholds(threshold, len(runs), preconditioned)
    key, step_key = (("preconditioned_sharpness", "preconditioned_step") if preconditioned
                     else ("sharpness", "step"))
    if ax is None:
        fig = Figure(figsize=figsize or (7.0, 6.0 if loss else 4.0), layout="constrained")
        if loss:
            ax, ax_loss = fig.subplots(2, 1, sharex=True, height_ratios=(2, 1))
        else:
            ax, ax_loss = fig.add_subplot(), None
    else:
        fig, ax_loss = ax.figure, None  # type: ignore[assignment]
    style_axes(ax)
    if ax_loss is not None:
        style_axes(ax_loss)
    positive = True
    for i, run in enumerate(runs):
        series = getattr(run, "sharpness", None) or {}
        if key not in series or series[key].numel() == 0:
            raise ValueError(f"runs[{i}] has no recorded {key.replace('_', ' ')}: record it with sharpness_every=N")
        steps = series.get(step_key, series.get("step"))
        label = labels[i] if labels is not None else f"run {i}"
        (line,) = ax.plot(_np(steps), _np(series[key]), marker=".", ms=3, lw=1.3, label=label, color=colour(label, i))
        if lines is not None and len(lines) > 1:
            ax.axhline(lines[i][0], color=line.get_color(), ls="--", lw=1.0, label=lines[i][1])
        if ax_loss is not None:
            values = _np(run.loss)
            positive = positive and bool((values > 0).all())
            ax_loss.plot(_np(run.t), values, lw=1.2, color=line.get_color(), label=label)
    if lines is not None and len(lines) == 1:
        ax.axhline(lines[0][0], color="k", ls="--", lw=1.0, label=lines[0][1])
    ax.set_ylabel(LABELS["preconditioned_sharpness"] if preconditioned else LABELS["sharpness"])
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title)
    if logy:
        ax.set_yscale("log")
    if ax_loss is not None:
        ax_loss.set_ylabel(LABELS["loss"])
        ax_loss.set_xlabel(LABELS["step"])
        if positive:
            ax_loss.set_yscale("log")
    else:
        ax.set_xlabel(LABELS["step"])
    return fig


def loss_curves(runs: Mapping[str, Any] | Sequence[Any], *, logy: bool = True, title: str | None = None) -> Figure:
    """Loss against step for several runs: a mapping label → Trajectory or FlowSolution, or a sequence
    of them (labelled by their optimizer)."""
    if isinstance(runs, Sequence) and not isinstance(runs, str):
        runs = {f"{getattr(r, 'config', {}).get('optimizer', 'run')} {i}": r for i, r in enumerate(runs)}
    if not isinstance(runs, Mapping):
        raise TypeError(f"runs must be a mapping label → trajectory or a list of trajectories, got {type(runs).__name__}")
    if not runs:
        raise ValueError("runs: nothing to plot")
    fig = Figure(figsize=(7.0, 4.2), layout="constrained")
    ax = fig.add_subplot()
    style_axes(ax)
    for i, (label, run) in enumerate(runs.items()):
        ax.plot(_np(run.t), _np(run.loss), label=label, lw=1.4, color=colour(label, i), ls="-" if i < 8 else "--")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(LABELS["step"])
    ax.set_ylabel(LABELS["loss"])
    ax.legend(fontsize=8, ncols=2)
    if title:
        ax.set_title(title)
    return fig


def tracking(trajectory: Any, comparisons: Mapping[str, Any], *, title: str | None = None,
             solutions: Mapping[str, Any] | None = None) -> Figure:
    """How well flows track the iterates: distance, oscillation amplitude and loss over steps.

    ``comparisons`` maps a label (``"stable"``, ``"rod"``) to a :class:`rodflow.Comparison`;
    the EoS onset ``k*`` is marked when known. ``solutions`` (label → :class:`rodflow.FlowSolution`)
    adds each solution's ``predicted_loss`` (the central flow's ``L + ½⟨H, Σ⟩``) to the loss panel.
    """
    if not comparisons:
        raise ValueError("comparisons: nothing to plot")
    fig = Figure(figsize=(7.0, 7.5), layout="constrained")
    ax_d, ax_a, ax_l = fig.subplots(3, 1, sharex=True)
    for ax in (ax_d, ax_a, ax_l):
        style_axes(ax)
    k_star = None
    floor = np.inf
    for i, (label, comp) in enumerate(comparisons.items()):
        t = _np(comp.t)
        dist = _np(comp.distance)
        ax_d.plot(t, dist, label=label, lw=1.3, color=colour(label, i))
        # the flow starts *at* the iterates (distance ~1e-16): start the axis where the comparison
        # means something, at the smallest distance after the first few steps
        later = dist[3:][dist[3:] > 0]
        if later.size:
            floor = min(floor, float(later.min()))
        if label != "stable":
            ax_a.plot(t, _np(comp.flow_amplitude), label=f"{label}: ‖Δ‖", lw=1.3, color=colour(label, i))
        k_star = comp.k_star if comp.k_star is not None else k_star
    first = next(iter(comparisons.values()))
    ax_a.plot(_np(first.t), _np(first.alternating_amplitude), color="k", lw=0.8, alpha=0.7,
              label="iterates: ‖2θₖ − θₖ₋₁ − θₖ₊₁‖/4")
    ax_l.plot(_np(trajectory.t), _np(trajectory.loss), color="k", lw=1.0, label="iterates")
    for label, comp in comparisons.items():
        sol_loss = comp.loss_gap  # plotted as the gap: the flows' own losses sit on top of the iterates'
        ax_l.plot(_np(comp.t), _np(sol_loss), lw=1.0, ls="--", label=f"|loss gap| {label}")
    for label, sol in (solutions or {}).items():
        if getattr(sol, "predicted_loss", None) is not None:
            ax_l.plot(_np(sol.t), _np(sol.predicted_loss), lw=1.2, label=f"predicted loss {label}")
    ax_d.set_ylabel(LABELS["distance"])
    ax_a.set_ylabel(LABELS["oscillation"])
    ax_l.set_ylabel(LABELS["loss"])
    ax_l.set_xlabel(LABELS["step"])
    for ax in (ax_d, ax_a, ax_l):
        ax.set_yscale("log")
        if k_star is not None:
            ax.axvline(k_star, color="tab:red", ls=":", lw=1.0)
        ax.legend(fontsize=8)
    if np.isfinite(floor):
        ax_d.set_ylim(bottom=0.5 * floor)
    if k_star is not None:
        ax_d.annotate("k*", (k_star, 1), xycoords=("data", "axes fraction"), color="tab:red",
                      xytext=(3, -12), textcoords="offset points")
    if title:
        ax_d.set_title(title)
    return fig
