"""torch's intra-op thread count, set for a block and restored after it.

The problems of the demo, the notebooks and the reproductions are small (10³–10⁵ parameters): on a
shared CPU a second thread mostly adds contention (measured here: a busy neighbour process slowed
sharpness estimates 40–80× at torch's default thread count), so they run on one thread unless
asked (``--threads N``). Library calls never change the caller's setting.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["add_threads_argument", "num_threads"]

#: Threads used by the demo, the notebooks and the reproduction scripts unless told otherwise.
DEFAULT_THREADS = 1


@contextmanager
def num_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``torch.set_num_threads(n)`` (``None``: leave it), restoring the old value.

    >>> import torch
    >>> before = torch.get_num_threads()
    >>> with num_threads(1):
    ...     torch.get_num_threads()
    1
    >>> torch.get_num_threads() == before
    True
    """
    import torch

    if n is None:
        yield
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be a positive int, got {n!r}")
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def add_threads_argument(parser: argparse.ArgumentParser) -> None:
    """``--threads N`` (default :data:`DEFAULT_THREADS`) for a script's parser."""
    parser.add_argument("--threads", type=int, default=DEFAULT_THREADS,
                        help=f"torch threads (default {DEFAULT_THREADS}: small problems run fastest on one thread "
                             "on a shared CPU)")
