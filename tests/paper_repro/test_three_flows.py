"""paper_repro/rodflow/three_flows.py runs end to end on tiny settings and writes its table and figure."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_three_flows_on_digits(tmp_path):
    path = ROOT / "paper_repro" / "rodflow" / "three_flows.py"
    sys.path.insert(0, str(path.parent))
    spec = importlib.util.spec_from_file_location("three_flows", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    assert module.main(["--n", "32", "--width", "4", "--steps", "12", "--min-start", "2", "--quick", "--optimizers", "gd",
                        "--results", str(tmp_path), "--figures", str(tmp_path)]) == 0
    text = (tmp_path / "three_flows_digits.md").read_text()
    for kind in ("iterates", "stable", "rod", "central"):
        assert f"| {kind} |" in text
    assert "Config:" in text and "HVPs/step" in text
    assert (tmp_path / "three_flows_digits_gd.png").stat().st_size > 1000
    assert (tmp_path / "three_flows_digits_gd_tracking.png").stat().st_size > 1000
