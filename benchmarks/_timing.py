"""Shared timing helpers for the benchmarks: two parameter layouts, median step times in interleaved rounds."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch


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


def small_params(n_tensors: int = 500, size: int = 1000, seed: int = 0) -> list[torch.nn.Parameter]:
    """``n_tensors`` vectors of ``size`` elements (many small tensors: per-tensor overheads dominate)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n_tensors):
        p = torch.nn.Parameter(torch.randn(size, generator=g) * 0.02)
        p.grad = torch.randn(size, generator=g) * 1e-3
        out.append(p)
    return out


#: the benchmarks' parameter layouts by name
LAYOUTS: dict[str, Callable[..., list[torch.nn.Parameter]]] = {"3M in 20 tensors": big_params,
                                                                "500 tensors of 1k": small_params}


def fresh_grads(params: list[torch.nn.Parameter]) -> Callable[[], None]:
    """A setup step that gives every parameter a new gradient tensor (of the same values), alternating
    between two copies, as ``zero_grad()`` (set to None) and backward do: nothing is timed."""
    banks = [[p.grad.clone() for p in params], [p.grad.clone() for p in params]]
    turn = [0]

    def swap() -> None:
        turn[0] ^= 1
        for p, g in zip(params, banks[turn[0]]):
            p.grad = g

    return swap


def plus_read_passes(step: Callable[[], object], a: list[torch.Tensor], b: list[torch.Tensor]) -> Callable[[], object]:
    """``step()`` followed by one plain read of every tensor in ``a`` and in ``b`` (``torch.dot`` of
    each with itself, the fastest full read torch offers on the CPU): what a statistics pass over
    two operands costs at the least when it runs beside the optimizer's kernel instead of inside it."""

    def run() -> object:
        out = step()
        for t in (*a, *b):
            flat = t.view(-1)
            torch.dot(flat, flat)
        return out

    return run


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


def interleaved_medians(steps: Mapping[str, Callable[[], object]], rounds: int, warmup: int = 5,
                        setup: Mapping[str, Callable[[], object]] | None = None) -> dict[str, float]:
    """Median seconds per call of each function, called once each per round (``setup[name]``, if
    given, runs untimed before each call)."""
    setup = setup or {}
    times: dict[str, list[float]] = {name: [] for name in steps}
    for r in range(warmup + rounds):
        for name, fn in steps.items():
            if name in setup:
                setup[name]()
            t0 = time.perf_counter()
            fn()
            if r >= warmup:
                times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(ts) for name, ts in times.items()}


def table(rows: list[tuple[str, ...]], head: tuple[str, ...]) -> str:
    width = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(head, width)), "-+-".join("-" * w for w in width)]
    lines += [" | ".join(c.ljust(w) for c, w in zip(r, width)) for r in rows]
    return "\n".join(lines)
