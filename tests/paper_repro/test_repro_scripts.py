"""The reproduction scripts run end to end on tiny settings (digits, few steps) and write their outputs."""

from __future__ import annotations

import importlib.util
import io
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(rel: str):
    # as ``python paper_repro/x/y.py`` does: the script's folder comes first on sys.path (sibling modules)
    folder = str((ROOT / rel).parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(rel.replace("/", "_").removesuffix(".py"), ROOT / rel)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def test_tracking_on_digits(tmp_path):
    tracking = _load("paper_repro/rodflow/tracking.py")
    assert tracking.main(["--data", "digits", "--n", "64", "--width", "8", "--steps", "30", "--optimizers",
                          "gd,adam", "--lr", "gd=1.0", "--lr", "adam=0.01", "--lead", "10",
                          "--results", str(tmp_path), "--figures", str(tmp_path)]) == 0
    text = (tmp_path / "tracking_digits.md").read_text()
    assert "| gd |" in text and "| adam |" in text and "Config:" in text
    assert (tmp_path / "tracking_digits_adam.png").stat().st_size > 1000


def test_eos_script_on_digits(tmp_path):
    eos = _load("paper_repro/eos/sharpness.py")
    eos.RUNS = [("gd", {"lr": 1.0}), ("adam", {"lr": 0.01})]
    assert eos.main(["--data", "digits", "--n", "64", "--width", "8", "--steps", "30", "--every", "10",
                     "--results", str(tmp_path / "r.md"), "--figures", str(tmp_path)]) == 0
    assert "late mean ÷ threshold" in (tmp_path / "r.md").read_text()
    assert (tmp_path / "eos_gd.png").exists() and (tmp_path / "eos_adam.png").exists()


@pytest.mark.parametrize("script", ["paper_repro/flowadam/matrix_completion.py", "paper_repro/vradam/eos.py",
                                    "paper_repro/flowadam/other_tasks.py", "paper_repro/flowadam/recommenders.py",
                                    "paper_repro/flowadam/well_conditioned.py"])
def test_other_scripts_tiny(tmp_path, script, fake_fashion):
    mod = _load(script)
    if script.endswith("matrix_completion.py"):
        args = ["--configs", "0", "--seeds", "42", "--steps", "20", "--variants", "adam", "flowadam",
                "adam_matched", "--out", str(tmp_path / "mc.md"), "--figure", ""]
        out = tmp_path / "mc.md"
    elif script.endswith("recommenders.py"):  # the generated Jester stand-in needs no data package
        args = ["--datasets", "jester_like", "--seeds", "42", "--epochs", "15", "--patience", "5", "--out", str(tmp_path / "rec.md")]
        out = tmp_path / "rec.md"
    elif script.endswith("well_conditioned.py"):
        args = ["--seeds", "0", "--epochs", "1", "--train", "256", "--out", str(tmp_path / "wc.md")]
        out = tmp_path / "wc.md"
    elif script.endswith("other_tasks.py"):
        args = ["--seeds", "42", "--steps", "15", "--out", str(tmp_path / "ot.md"), "--no-figures"]
        out = tmp_path / "ot.md"
    else:
        args = ["--data", "digits", "--n", "64", "--steps", "20", "--every", "10", "--lrs", "0.01",
                "--out", str(tmp_path / "v.md"), "--figure", str(tmp_path / "v.png")]
        out = tmp_path / "v.md"
    assert mod.main(args) == 0
    assert "Config:" in out.read_text()


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_sweep_shows_one_bar_on_a_terminal_and_none_in_a_log(tmp_path, monkeypatch):
    from rodflow import progress

    eos = _load("paper_repro/eos/sharpness.py")
    eos.RUNS = [("gd", {"lr": 1.0}), ("adam", {"lr": 0.01})]
    args = ["--data", "digits", "--n", "32", "--width", "4", "--steps", "6", "--every", "3",
            "--results", str(tmp_path / "r.md"), "--figures", str(tmp_path)]
    monkeypatch.delenv("RODFLOW_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "MININTERVAL", 0.0)
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    assert eos.main(args) == 0
    text = tty.getvalue()
    assert "eos sharpness sweep" in text and "2/2" in text
    assert "iterate gd" in text  # each run's own bar, under the sweep's
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    assert eos.main(args) == 0
    assert log.getvalue() == ""
