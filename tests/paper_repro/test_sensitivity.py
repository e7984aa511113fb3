"""paper_repro/rodflow/sensitivity.py: the perturbed map against its closed form on a quadratic."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import torch

import rodflow

ROOT = Path(__file__).resolve().parents[2]


def _module():
    path = ROOT / "paper_repro" / "rodflow" / "sensitivity.py"
    spec = importlib.util.spec_from_file_location("sensitivity", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_perturbed_gd_on_a_quadratic_follows_the_linear_map():
    """GD on ½θᵀHθ is linear: the perturbation after k steps is exactly (I − ηH)^k δ₀."""
    sens = _module()
    h = torch.diag(torch.tensor([3.0, 1.0, 0.5], dtype=torch.float64))
    spec = rodflow.optimizer("gd", lr=0.7)  # ηλ_max = 2.1: the top mode grows
    grad_fn = lambda w: h @ w  # noqa: E731
    state = spec.init(torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64))
    steps = 30
    base = sens.perturbed_run(spec, grad_fn, state, steps, 0.0)
    pert = sens.perturbed_run(spec, grad_fn, state, steps, 1e-6, seed=3)
    a = torch.eye(3, dtype=torch.float64) - 0.7 * h
    d0 = pert[0] - base[0]
    assert float(d0.norm()) == pytest.approx(1e-6 * float(state.theta.norm()), rel=1e-12)
    exact = torch.stack([torch.linalg.matrix_power(a, k) @ d0 for k in range(steps + 1)])
    torch.testing.assert_close(pert - base, exact, rtol=1e-7, atol=1e-18)
    got = sens.sensitivity(base, pert, 10)
    assert got["eos_mean"] == pytest.approx(float(exact[10:].norm(dim=1).mean()), rel=1e-7)
    centres = (exact[:-2] + 2 * exact[1:-1] + exact[2:]) / 4
    assert got["eos_centre_mean"] == pytest.approx(float(centres[9:].norm(dim=1).mean()), rel=1e-7)
    with pytest.raises(ValueError, match="perturbed"):
        sens.sensitivity(base, pert[:-1], 10)
    with pytest.raises(ValueError, match="delta"):
        sens.perturbed_run(spec, grad_fn, state, steps, -1.0)


def test_main_reads_a_fidelity_results_file(tmp_path):
    sens = _module()
    row = {"data": "digits", "seed": 0, "optimizer": "gd", "hyperparameters": {"lr": 1.0}, "n": 32, "width": 4,
           "steps": 12, "k_star": 6, "start": 2,
           "variants": {"rod2": {"eos_window_phase_free_distance": 0.1, "pre_eos_mean_phase_free_distance": 0.01},
                        "stable2d": {"eos_window_phase_free_distance": 0.5}}}
    src = tmp_path / "fidelity_x.jsonl"
    src.write_text(json.dumps(row) + "\n")
    sys.path.insert(0, str(ROOT))
    assert sens.main([str(src), "--deltas", "1e-9", "--tag", "t", "--out", str(tmp_path)]) == 0
    text = (tmp_path / "sensitivity_t.md").read_text()
    assert "| digits/0/gd | 6 | 2 |" in text and "| 0.5 | 0.1 | 0.01 |" in text
    line = json.loads((tmp_path / "sensitivity_t.jsonl").read_text())
    assert line["deltas"]["1e-09"]["initial"] > 0
