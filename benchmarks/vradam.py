"""VRAdam step time ÷ torch's AdamW on the same parameters (≈3M in 20 tensors), single-threaded.

Targets: VRAdam ≤ 1.0× AdamW(foreach=True) and ≤ 1.5× AdamW(fused=True). One run:
the optimizers take their steps in interleaved rounds (one step each per round, so that a slow
stretch of a shared machine hits all of them alike) and the table shows per-step medians::

    python benchmarks/vradam.py [--rounds 100]

Each optimizer works on its own ≈12 MB tensors, so every step streams from memory. The fused
AdamW kernel moves p, g, m, v in and p, m, v out (7 passes); VRAdam reads m and g once more
before it (⟨m, g⟩ and ‖g‖² per tensor, one C loop: 2 read passes, 9/7 ≈ 1.29× at the kernel's
bandwidth), then runs the kernel on the last-reduced tensors first, while some of them are
still in cache.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import big_params, interleaved_medians, table, without_c

import rodflow
from rodflow.optim import native

FOREACH, FUSED = "AdamW(foreach=True)", "AdamW(fused=True)"
TORCH_OPS = "VRAdam, reductions in torch ops (no C)"


def makers() -> dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]]:
    return {
        FOREACH: lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-5, foreach=True),
        FUSED: lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-5, fused=True),
        "VRAdam (default: fused, velocity norm)": lambda ps: rodflow.VRAdam(ps, lr=1e-3, weight_decay=1e-5),
        "VRAdam(norm_on='grad')": lambda ps: rodflow.VRAdam(ps, lr=1e-3, weight_decay=1e-5, norm_on="grad"),
        "VRAdam(fused=False)": lambda ps: rodflow.VRAdam(ps, lr=1e-3, weight_decay=1e-5, fused=False),
        TORCH_OPS: lambda ps: rodflow.VRAdam(ps, lr=1e-3, weight_decay=1e-5),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # one parameter set per optimizer (same values), so that no optimizer reads another's state
    sets = {name: big_params(seed=args.seed) for name in makers()}
    steps = {name: make(sets[name]).step for name, make in makers().items()}
    steps[TORCH_OPS] = without_c(steps[TORCH_OPS])
    times = interleaved_medians(steps, args.rounds)
    ps = sets[FOREACH]
    base_f, base_x = times[FOREACH], times[FUSED]
    rows: list[tuple[str, ...]] = [(name, f"{t * 1e3:.2f}", f"{t / base_f:.2f}", f"{t / base_x:.2f}") for name, t in times.items()]
    print(f"{sum(p.numel() for p in ps):,} parameters in {len(ps)} tensors, torch {torch.__version__}, "
          f"1 thread, median of {args.rounds} interleaved rounds; reductions: {native.status()}")
    print(table(rows, ("optimizer", "ms/step", "÷ AdamW foreach", "÷ AdamW fused")))
    print("targets: VRAdam ≤ 1.0× AdamW(foreach) and ≤ 1.5× AdamW(fused)")


if __name__ == "__main__":
    main()
