"""The fidelity report's verdicts: a rod below the stable flow by more than its own discretisation error is
worse; by less, a tie."""

from __future__ import annotations

import json
from pathlib import Path

from paper_repro.rodflow import fidelity


def _row(optimizer: str, stable: float, rod: float, rod_fine: float) -> dict:
    pf = "eos_window_phase_free_distance"
    return {"data": "toy", "seed": 0, "optimizer": optimizer, "hyperparameters": {"lr": 0.1}, "k_star": 10,
            "start": 1, "steps": 100,
            "variants": {"stable2d": {pf: stable, "eos_mean_distance": stable},
                         "rod2": {pf: rod, "eos_mean_distance": rod},
                         "rod2_fine": {pf: rod_fine, "eos_mean_distance": rod_fine}}}


def test_report_separates_losses_from_ties_within_the_discretisation_error(tmp_path: Path) -> None:
    rows = [_row("gd", 1.0, 0.1, 0.1),  # 10x: a win
            _row("heavy_ball", 1.0, 1.0 + 1e-9, 1.0 + 1e-9 + 1e-4),  # 1 - 1e-9, the solve resolves 1e-4: a tie
            _row("nesterov", 1.0, 1.2, 1.2 + 1e-4)]  # 0.83: a loss
    text = fidelity.report(rows, tmp_path / "r.md", None, "cmd")
    verdict = next(line for line in text.splitlines() if line.startswith("Median"))
    assert "Rod worse than the stable flow (order 2, pf): toy/0/nesterov (0.83) (ties" in verdict
    assert "ties within the rod's discretisation error: toy/0/heavy_ball" in verdict
    assert "gd" not in verdict.split("Below 5×:")[1].split(".")[0]
    assert fidelity.tie_tolerance(float("nan")) == 1e-3


def test_summary_marks_wins_losses_ties_and_cases_without_an_edge(tmp_path: Path) -> None:
    from paper_repro.rodflow import fidelity_summary

    rows = [_row("gd", 1.0, 0.1, 0.1), _row("heavy_ball", 1.0, 1.0 + 1e-9, 1.0 + 1e-9 + 1e-4),
            _row("nesterov", 1.0, 0.5, 0.5), {**_row("adam", 1.0, 0.5, 0.5), "k_star": None}]
    for r in rows:
        r["data"] = "digits"
    f = tmp_path / "fidelity_x.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = fidelity_summary.summary(fidelity_summary.load([f]))
    assert "| gd | 10 |" in text and "| heavy_ball | tie |" in text and "| nesterov | **2** |" in text
    assert "| adam | no edge |" in text
    assert "3 cases; median 2×" in text and "below 5× (1): digits/0/nesterov (2.00)" in text
