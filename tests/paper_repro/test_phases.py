"""The N-phase flows of ``paper_repro/rodflow/phases.py`` against closed forms and the package's rod."""

from __future__ import annotations

import math

import pytest
import torch

import rodflow
from paper_repro.rodflow import phases


@pytest.mark.parametrize("n_phase", [2, 4])
def test_fit_recovers_each_copy_of_a_sequence_in_its_family(n_phase: int) -> None:
    """x_r = drift (degree 4) + (−1)^r (a + b r) [+ cos(πr/2) c + sin(πr/2) s]: Y_j(k) in closed form."""
    gen = torch.Generator().manual_seed(0)
    coef = torch.randn(9, 3, generator=gen, dtype=torch.float64)
    k, half = 20, phases.HALF[n_phase]
    r = torch.arange(0, 41, dtype=torch.float64)

    def seq(r: torch.Tensor, j: torch.Tensor | None = None) -> torch.Tensor:
        ph = r if j is None else j  # the carriers' phase: r for the iterates, j for copy j
        drift = sum(coef[p] * ((r - k) / 10).unsqueeze(-1) ** p for p in range(5))
        out = drift + torch.cos(math.pi * ph).unsqueeze(-1) * (coef[5] + coef[6] * (r - k).unsqueeze(-1) / 10)
        if n_phase == 4:
            out = out + torch.cos(math.pi * ph / 2).unsqueeze(-1) * coef[7] + torch.sin(math.pi * ph / 2).unsqueeze(-1) * coef[8]
        return out

    x = seq(r)
    got = phases.fit_copies(x, k, k, n_phase, half, phases.DEGREES[n_phase])
    for j in range(n_phase):
        want = seq(torch.tensor([float(k)], dtype=torch.float64), torch.tensor([float(j)], dtype=torch.float64))[0]
        torch.testing.assert_close(got[j], want, rtol=0, atol=1e-10)
    # and the iterate itself: x_k = Y_{k mod N}(k)
    torch.testing.assert_close(got[k % n_phase], x[k], rtol=0, atol=1e-10)


@pytest.mark.parametrize("name,hp", [("gd", {"lr": 0.3}), ("heavy_ball", {"lr": 0.1, "momentum": 0.9}),
                                     ("nesterov", {"lr": 0.1, "momentum": 0.9})])
def test_two_phases_are_the_rod_map(name: str, hp: dict[str, float]) -> None:
    """For a map whose update is linear in (m, g), Y₀ = W + Δ, Y₁ = W − Δ turns the two-phase increment into the rod's."""
    prob = rodflow.problems.quadratic([3.0, 1.0, 0.2], seed=1)
    loss = lambda th: prob.loss_fn(th) + 0.1 * (th ** 4).sum()  # noqa: E731 (nonlinear gradient)
    spec = rodflow.optimizer(name, **hp)
    gen = torch.Generator().manual_seed(2)
    w, d, m, mu = (torch.randn(3, generator=gen, dtype=torch.float64) * s for s in (1.0, 0.1, 0.5, 0.05))
    rod = rodflow.rod_flow(spec, loss, order=1, floor=None)
    flow = phases.PhaseFlow(spec, loss, n_phase=2)
    t = 7.0
    if spec.has_momentum:
        fr = rod.increment(t, (w, d, m, mu))
        f0w, f0m, f1w, f1m = flow.increment(t, (w + d, m + mu, w - d, m - mu))
        got = ((f0w + f1w) / 2, (f0w - f1w) / 2, (f0m + f1m) / 2, (f0m - f1m) / 2)
    else:
        fr = rod.increment(t, (w, d))
        f0w, f1w = flow.increment(t, (w + d, w - d))
        got = ((f0w + f1w) / 2, (f0w - f1w) / 2)
    for a, b in zip(got, fr):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_four_phases_track_heavy_balls_quarter_turn_ringing() -> None:
    """Heavy ball at ηλ = 1.9 rings at φ ≈ π/2 (|z| = √β): against the map's exact iterates on a quadratic, the
    four-phase flow stays within 16 % over 40 steps, the two-phase (rod) and one-phase (stable) flows do not."""
    prob = rodflow.problems.quadratic([1.9, 1.0, 3.0], seed=0)
    spec = rodflow.optimizer("heavy_ball", lr=1.0, momentum=0.9)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, 80)
    ref = traj.theta[20:61]
    err = {}
    for n in (1, 2, 4):
        sol = phases.PhaseFlow(spec, prob.loss_fn, n_phase=n).solve(traj, start=20, steps=40)
        err[n] = float(((sol.theta - ref).norm(dim=1) / ref.norm(dim=1)).max())
    assert err[4] < 0.16 and err[2] > 1.0 and err[1] > 1.0


def test_one_phase_is_the_stable_delay_flow() -> None:
    prob = rodflow.problems.quadratic([3.0, 1.0], seed=0)
    spec = rodflow.optimizer("heavy_ball", lr=0.2, momentum=0.9)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, 40)
    a = phases.PhaseFlow(spec, prob.loss_fn, n_phase=1).solve(traj, start=10, steps=20)
    b = rodflow.stable_flow(spec, prob.loss_fn, order=2, form="delay").solve(traj, start=10, steps=20)
    torch.testing.assert_close(a.theta, b.theta, rtol=1e-12, atol=1e-12)


def test_linearised_rate_errors_shrink_with_the_phases() -> None:
    rows = {r["x"]: r for r in phases.rate_errors()}
    assert rows[1.9]["N2"] > 0.1 > 0.01 > rows[1.9]["N4"]
    assert all(r["N4"] <= r["N2"] + 1e-12 <= r["N1"] + 2e-12 for r in rows.values())


def test_bad_phase_count_is_refused() -> None:
    spec = rodflow.optimizer("gd", lr=0.1)
    with pytest.raises(ValueError, match="n_phase"):
        phases.PhaseFlow(spec, lambda th: th.square().sum(), n_phase=3)


def test_tiny_run_writes_its_table(tmp_path) -> None:
    assert phases.main(["--tiny", "--results", str(tmp_path)]) == 0
    text = (tmp_path / "phases_tiny.md").read_text()
    assert "phase4" in text and "Command: `python paper_repro/rodflow/phases.py --tiny`" in text
