"""Progress bars: drawn on a terminal or when asked, silent in logs, never on stdout."""

from __future__ import annotations

import io

import pytest

from rodflow import progress


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bar_only_on_a_terminal_or_when_asked(monkeypatch):
    monkeypatch.delenv("RODFLOW_PROGRESS", raising=False)
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress.enabled() and progress.enabled(True)
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    assert progress.enabled() and not progress.enabled(False)
    with progress.progress_bar(10, "work") as bar:
        bar.update(4)
        bar.set_postfix(h=0.5)
    assert "work" in tty.getvalue()
    with progress.quiet():
        assert not progress.enabled()
    assert progress.enabled()
    monkeypatch.setenv("RODFLOW_PROGRESS", "0")
    assert not progress.enabled()


def test_silent_bar_counts_and_track_yields_everything(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    with progress.progress_bar(3, "x") as bar:
        bar.update(2)
        assert bar.n == 2
    assert list(progress.track(range(4), "sweep")) == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="progress"):
        progress.enabled(1)  # type: ignore[arg-type]


def _recorded_run(path, progress=None, total=None, sharpness_every=None, steps=4):
    import torch

    import rodflow

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 1).to(torch.float64)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 3, dtype=torch.float64), torch.randn(16, 1, dtype=torch.float64)
    prob = rodflow.problems.module_problem(model, x, y, loss="mse")
    with rodflow.Recorder(path, model, opt, sharpness_every=sharpness_every, loss_fn=prob.loss_fn,
                          progress=progress, total=total) as rec:
        for _ in range(steps):
            opt.zero_grad()
            loss = torch.nn.functional.mse_loss(model(x), y)
            loss.backward()
            opt.step()
            rec.step(loss)
    return rodflow.Trajectory.load(path)


def test_recorder_bar_counts_steps_and_shows_the_last_sharpness(monkeypatch, tmp_path):
    monkeypatch.delenv("RODFLOW_PROGRESS", raising=False)
    monkeypatch.setattr(progress, "MININTERVAL", 0.0)  # draw every update, however fast the run
    tty = _Tty()
    monkeypatch.setattr("sys.stderr", tty)
    traj = _recorded_run(tmp_path / "a.h5", total=4, sharpness_every=2)
    text = tty.getvalue()
    assert "record" in text and "4/4" in text
    last = float(traj.sharpness["sharpness"][-1])
    assert f"sharpness={last:.4g}" in text and "P⁻¹H=" in text
    quiet = _Tty()
    monkeypatch.setattr("sys.stderr", quiet)
    _recorded_run(tmp_path / "b.h5", progress=False)
    with progress.quiet():
        _recorded_run(tmp_path / "c.h5")
    assert quiet.getvalue() == ""
    log = io.StringIO()  # not a terminal: no bar by default
    monkeypatch.setattr("sys.stderr", log)
    _recorded_run(tmp_path / "d.h5")
    assert log.getvalue() == ""
    with pytest.raises(ValueError, match="total"):
        _recorded_run(tmp_path / "e.h5", total=0)
