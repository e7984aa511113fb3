"""Shared timing helpers for the benchmarks: one model, median step times, single-threaded."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch

from rodflow.optim import native


def big_params(n_tensors: int = 20, width: int = 550, seed: int = 0) -> list[torch.nn.Parameter]:
    """About 3 million parameters in ``n_tensors`` tensors (weights and biases of square layers)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n_tensors):
        shape = (width, width) if i % 2 == 0 else (width,)
        p = torch.nn.Parameter(torch.randn(*shape, generator=g) * 0.02)
        p.grad = torch.randn(*shape, generator=g) * 1e-3
        out.append(p)
    return out


def median_time(fn: Callable[[], object], repeats: int = 30, warmup: int = 5) -> float:
    """Median wall time of ``fn()`` in seconds."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def interleaved_medians(steps: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 5) -> dict[str, float]:
    """Median seconds per call of each function, called once each per round."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(warmup + rounds):
        for name, fn in steps.items():
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def without_c(step: Callable[[], object]) -> Callable[[], object]:
    """``step`` with the statistics and norms in torch's ops, as on a machine without a C compiler."""
    def run() -> object:
        with native.disabled():
            return step()

    return run


def table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> str:
    width = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, width)), "-+-".join("-" * w for w in width)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, width)) for r in rows]
    return "\n".join(lines)
