"""The fidelity sweep runs end to end at its tiny setting and writes its results as it goes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_fidelity_tiny_run_writes_jsonl_and_markdown(tmp_path):
    cmd = [sys.executable, str(ROOT / "paper_repro" / "rodflow" / "fidelity.py"), "--tiny", "--results",
           str(tmp_path), "--variants", "stable2,rod2"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})
    assert res.returncode == 0, res.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "fidelity_tiny.jsonl").read_text().splitlines()]
    assert {r["optimizer"] for r in rows} == {"gd", "adam"}
    for r in rows:
        assert set(r["variants"]) == {"stable2", "rod2"}
        assert r["start"] >= (10 if r["optimizer"] == "adam" else 1)
        for v in r["variants"].values():
            assert "failed" in v or v["grad_evals_per_step"] > 0
    text = (tmp_path / "fidelity_tiny.md").read_text()
    assert "| digits | 0 | gd |" in text and "phase-free" in text
