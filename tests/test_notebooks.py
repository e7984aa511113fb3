"""Every notebook runs top to bottom through a real Jupyter kernel (nbclient + ipykernel), on short settings.

The notebooks read ``RODFLOW_NOTEBOOK_QUICK=1`` (tiny settings), ``RODFLOW_FIGURES`` (where figures go)
and ``RODFLOW_THREADS``; the kernel inherits this process's environment and runs in a temporary
directory, so nothing is written into the repository.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
    assert NOTEBOOKS


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom_in_a_kernel(path, tmp_path, monkeypatch):
    monkeypatch.setenv("RODFLOW_NOTEBOOK_QUICK", "1")
    monkeypatch.setenv("RODFLOW_NOTEBOOK_STEPS", "20")
    monkeypatch.setenv("RODFLOW_FIGURES", str(tmp_path))
    monkeypatch.setenv("RODFLOW_THREADS", "1")
    monkeypatch.setenv("RODFLOW_PROGRESS", "0")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, kernel_name="python3", timeout=600, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on any error
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    written = list(tmp_path.glob("*.png"))
    assert written and all(p.stat().st_size > 1000 for p in written)
