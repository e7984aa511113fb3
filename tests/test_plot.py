"""Figures: what they draw, and that they refuse runs without the data they need."""

from __future__ import annotations

import pytest
import torch
from matplotlib.figure import Figure

import rodflow
from rodflow import plot
from rodflow.style import LABELS


@pytest.fixture(scope="module")
def runs():
    prob = rodflow.problems.quadratic([3.0, 1.0], seed=0, center=torch.tensor([1.0, 1.0], dtype=torch.float64))
    spec = rodflow.optimizer("heavy_ball", lr=0.3, momentum=0.5)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps=12, sharpness_every=4)
    sol = rodflow.rod_flow(spec, prob.loss_fn).solve(traj, sharpness_every=4)
    return spec, traj, sol


def test_sharpness_curve_draws_each_run_and_the_threshold(runs, tmp_path):
    spec, traj, sol = runs
    fig = plot.sharpness_curve(traj, sol, threshold=spec.threshold, preconditioned=True, labels=["iterates", "rod"])
    assert isinstance(fig, Figure)
    ax, ax_loss = fig.axes
    lines = ax.get_lines()
    assert [ln.get_label() for ln in lines][:2] == ["iterates", "rod"]
    torch.testing.assert_close(torch.as_tensor(lines[0].get_ydata()), traj.sharpness["preconditioned_sharpness"])
    assert lines[2].get_ydata()[0] == pytest.approx(spec.threshold)
    assert ax.get_ylabel() == LABELS["preconditioned_sharpness"] and ax_loss.get_xlabel() == LABELS["step"]
    fig.savefig(tmp_path / "s.png")
    assert (tmp_path / "s.png").stat().st_size > 1000


def test_sharpness_curve_into_given_axes_and_errors(runs):
    spec, traj, _ = runs
    fig = Figure()
    ax = fig.add_subplot()
    assert plot.sharpness_curve(traj, ax=ax, logy=True) is fig
    assert ax.get_yscale() == "log"
    bare = rodflow.iterate(spec, lambda th: (th**2).sum(), torch.ones(2, dtype=torch.float64), steps=3)
    with pytest.raises(ValueError, match="sharpness_every"):
        plot.sharpness_curve(bare)
    with pytest.raises(ValueError, match="labels"):
        plot.sharpness_curve(traj, labels=["a", "b"])
    with pytest.raises(ValueError, match="runs"):
        plot.sharpness_curve()


def test_loss_curves_and_tracking(runs, tmp_path):
    _spec, traj, sol = runs
    fig = plot.loss_curves({"iterates": traj, "rod": sol})
    assert [ln.get_label() for ln in fig.axes[0].get_lines()] == ["iterates", "rod"]
    cmp = rodflow.compare(traj, sol, window=(6, 13))
    fig = plot.tracking(traj, {"rod": cmp})
    assert len(fig.axes) == 3
    torch.testing.assert_close(torch.as_tensor(fig.axes[0].get_lines()[0].get_ydata()), cmp.distance)
    fig.savefig(tmp_path / "t.png")
    with pytest.raises(ValueError):
        plot.loss_curves({})


def test_sharpness_curve_with_one_threshold_per_run(runs):
    """GD's raw sharpness at several learning rates: each run against its own 2/η, in its colour."""
    _spec, traj, _ = runs
    prob = rodflow.problems.quadratic([3.0, 1.0], seed=0, center=torch.tensor([1.0, 1.0], dtype=torch.float64))
    gds = [rodflow.iterate(rodflow.optimizer("gd", lr=lr), prob.loss_fn, prob.theta0, 8, sharpness_every=4)
           for lr in (0.2, 0.4)]
    fig = plot.sharpness_curve(*gds, threshold=[2 / 0.2, 2 / 0.4], labels=["lr 0.2", "lr 0.4"])
    ax, ax_loss = fig.axes
    run0, line0, run1, line1 = ax.get_lines()
    assert [line0.get_ydata()[0], line1.get_ydata()[0]] == pytest.approx([10.0, 5.0])
    assert line0.get_color() == run0.get_color() and line1.get_color() == run1.get_color()
    assert ax.get_ylabel() == LABELS["sharpness"]
    torch.testing.assert_close(torch.as_tensor(run0.get_ydata()), gds[0].sharpness["sharpness"])
    assert [ln.get_color() for ln in ax_loss.get_lines()] == [run0.get_color(), run1.get_color()]
    assert ax_loss.get_yscale() == "log"
    with pytest.raises(ValueError, match="threshold"):
        plot.sharpness_curve(*gds, threshold=[1.0, 2.0, 3.0])
    with pytest.raises(TypeError, match="threshold"):
        plot.sharpness_curve(traj, threshold="2")


def test_sharpness_curve_keeps_a_linear_loss_axis_for_non_positive_losses():
    prob = rodflow.problems.quadratic([2.0, 1.0], seed=0)
    shifted = lambda th: prob.loss_fn(th) - 1.0  # noqa: E731 - losses below zero
    traj = rodflow.iterate(rodflow.optimizer("gd", lr=0.1), shifted, prob.theta0, 6, sharpness_every=3)
    fig = plot.sharpness_curve(traj, loss=True, figsize=(4.0, 3.0))
    assert fig.axes[1].get_yscale() == "linear"
    assert tuple(fig.get_size_inches()) == pytest.approx((4.0, 3.0))
    assert len(plot.sharpness_curve(traj, loss=False).axes) == 1


def test_threshold_of_a_spec_is_labelled_with_its_formula(runs):
    traj, spec = runs[1], rodflow.optimizer("adam", lr=1e-2)
    fig = rodflow.plot.sharpness_curve(traj, threshold=spec, preconditioned=True)
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "threshold (2 + 2β₁)/(1 − β₁) = 38" in labels
    gd = rodflow.optimizer("gd", lr=0.5)
    fig = rodflow.plot.sharpness_curve(traj, threshold=gd, preconditioned=False)
    line = next(ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("threshold"))
    assert line.get_ydata()[0] == pytest.approx(4.0) and line.get_label() == "threshold 2/η = 4"
