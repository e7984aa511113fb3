"""Progress bars for long work (tqdm, on stderr), quiet where nobody is watching.

A bar is shown when ``progress`` is ``True``, or when it is ``None`` (the default of every long-running
call: :func:`rodflow.iterate`, ``Flow.solve``, sharpness tracking, the Recorder's sharpness, the
reproduction sweeps) and stderr is a terminal and ``RODFLOW_PROGRESS`` is not ``0``. The command
line's ``--quiet`` sets ``RODFLOW_PROGRESS=0``. Test logs (stderr captured, not a TTY) get no bar.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

__all__ = ["enabled", "progress_bar", "quiet", "track"]

T = TypeVar("T")

#: Seconds between redraws of a bar (tqdm's ``mininterval``; a test sets 0 to see every update).
MININTERVAL = 0.1


def enabled(progress: bool | None = None) -> bool:
    """Whether to draw a bar: ``progress`` if given, else stderr is a TTY and ``RODFLOW_PROGRESS`` ≠ 0."""
    if progress is not None:
        if not isinstance(progress, bool):
            raise TypeError(f"progress must be True, False or None, got {type(progress).__name__}")
        return progress
    if os.environ.get("RODFLOW_PROGRESS", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


class _Silent:
    """The bar's interface, doing nothing (no tqdm import on the quiet path)."""

    n: float = 0

    def update(self, n: float = 1) -> None:
        self.n += n

    def set_postfix(self, *args: Any, **kwargs: Any) -> None:
        pass

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def progress_bar(total: float | None, desc: str, *, progress: bool | None = None, unit: str = "step"
                 ) -> Iterator[Any]:
    """A tqdm bar (or a silent stand-in) closed on exit: ``bar.update(n)``, ``bar.set_postfix(...)``."""
    if not enabled(progress):
        yield _Silent()
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=False,
               mininterval=MININTERVAL)
    try:
        yield bar
    finally:
        bar.close()


def track(items: Iterable[T], desc: str, *, total: int | None = None, progress: bool | None = None) -> Iterator[T]:
    """``items`` with a bar over them (for sweeps)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with progress_bar(total, desc, progress=progress, unit="run") as bar:
        for item in items:
            yield item
            bar.update(1)


@contextmanager
def quiet() -> Iterator[None]:
    """No bars inside the block (sets ``RODFLOW_PROGRESS=0``, restored after)."""
    old = os.environ.get("RODFLOW_PROGRESS")
    os.environ["RODFLOW_PROGRESS"] = "0"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("RODFLOW_PROGRESS", None)
        else:
            os.environ["RODFLOW_PROGRESS"] = old
