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
