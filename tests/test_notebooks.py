"""Every notebook runs top to bottom (its code cells in order, in one namespace) on short settings."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path, tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.setenv("RODFLOW_NOTEBOOK_STEPS", "20")
    monkeypatch.setenv("RODFLOW_FIGURES", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    cells = json.loads(path.read_text())["cells"]
    namespace: dict[str, object] = {"__name__": "__main__"}
    for i, cell in enumerate(c for c in cells if c["cell_type"] == "code"):
        source = "".join(cell["source"])
        exec(compile(source, f"{path.name}[cell {i}]", "exec"), namespace)
    written = list(tmp_path.glob("*.png"))
    assert written and all(p.stat().st_size > 1000 for p in written)
