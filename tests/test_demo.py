"""`make demo` (``python -m rodflow.demo``): tiny settings in the default suite, the full run marked slow."""

from __future__ import annotations

import pytest
import torch

from rodflow import demo


def _run(tmp_path, capsys, argv):
    threads = torch.get_num_threads()
    assert demo.main([*argv, "--out", str(tmp_path)]) == 0
    assert torch.get_num_threads() == threads  # --threads is restored after the run
    for name in ("demo_losses.png", "demo_sharpness.png", "demo_tracking.png"):
        assert (tmp_path / name).stat().st_size > 1000
    return capsys.readouterr().out


def test_demo_tiny(tmp_path, capsys):
    out = _run(tmp_path, capsys, ["--steps", "5", "--eos-steps", "40"])
    assert "adam" in out and "config:" in out


@pytest.mark.slow
def test_demo_full_run_shows_the_rod_closer_at_the_edge(tmp_path, capsys):
    """The default demo: Adam at lr 1e-2 reaches its edge; the rod's EoS mean distance is the smaller."""
    out = _run(tmp_path, capsys, [])
    rows = {line.split("|")[0].strip(): [c.strip() for c in line.split("|")] for line in out.splitlines()
            if line.startswith(("stable ", "rod "))}
    header = next(line for line in out.splitlines() if line.startswith("flow "))
    col = [c.strip() for c in header.split("|")].index("EoS mean")
    assert float(rows["rod"][col]) < float(rows["stable"][col]), out
