"""The burst detector of ``paper_repro/rodflow/bursts.py`` on series whose bursts are known, and its tiny run."""

from __future__ import annotations

import math

import torch

from paper_repro.rodflow import bursts


def test_bursts_are_the_local_maxima_above_the_level() -> None:
    t = torch.arange(100, 200)
    amp = torch.full((100,), 1e-3, dtype=torch.float64)
    for step, height in ((120, 0.5), (150, 0.2), (180, 0.1)):  # 0.1 is below a quarter of the largest: no burst
        i = step - 100
        amp[i - 3: i + 4] = height * torch.exp(-torch.arange(-3, 4, dtype=torch.float64).abs())
    amp[[0, 99]] = math.nan
    assert bursts.bursts(t, amp) == [120, 150]
    assert bursts.bursts(t, amp, fraction=0.1) == [120, 150, 180]
    assert bursts.bursts(t, torch.full((5,), math.nan)) == []


def test_tiny_run_writes_its_table(tmp_path) -> None:
    assert bursts.main(["--tiny", "--sharpness", "--results", str(tmp_path)]) == 0
    text = (tmp_path / "bursts_tiny.md").read_text()
    assert "| 40 |" in text and "rod centre P⁻¹H" in text
    assert "Command: `python paper_repro/rodflow/bursts.py --tiny --sharpness`" in text
