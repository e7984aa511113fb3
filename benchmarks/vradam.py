"""VRAdam step time ÷ torch's AdamW on the same parameters, at 1 and at 2 threads.

Two layouts: ≈3M parameters in 20 tensors, and 500 tensors of 1k elements. Targets: VRAdam
≤ 1.4× AdamW(fused=True) on 3M parameters and ≤ 2× on 500×1k. One run: the optimizers take their
steps in interleaved rounds (one step each per round, so that a slow stretch of a shared machine
hits all of them alike) and the tables show per-step medians::

    OMP_NUM_THREADS=2 python benchmarks/vradam.py [--threads 1 2] [--rounds 100]

Each optimizer works on its own tensors. The fused AdamW kernel moves p, g, m, v in and p, m, v out
(7 passes); VRAdam reads m and g once more before it (the next moment m + (1 − β1)(g − m) per
cache-sized piece, squared and summed: 2 read passes, 9/7 ≈ 1.29× at the kernel's bandwidth).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import LAYOUTS, interleaved_medians, plus_read_passes, table

import rodflow

FOREACH, FUSED = "AdamW(foreach=True)", "AdamW(fused=True)"
FLOOR = "AdamW(fused) + a plain read of m and g (floor of a separate pass)"
TARGETS = {"3M in 20 tensors": 1.4, "500 tensors of 1k": 2.0}


def makers() -> dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]]:
    return {
        FOREACH: lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-5, foreach=True),
        FUSED: lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-5, fused=True),
        "VRAdam (default: fused, velocity norm)": lambda ps: rodflow.VRAdam(ps, lr=1e-3, weight_decay=1e-5),
        "VRAdam(statistics='compile')": lambda ps: rodflow.VRAdam(ps, lr=1e-3, weight_decay=1e-5,
                                                                 statistics="compile"),
        "VRAdam(norm_on='grad')": lambda ps: rodflow.VRAdam(ps, lr=1e-3, weight_decay=1e-5, norm_on="grad"),
        "VRAdam(fused=False)": lambda ps: rodflow.VRAdam(ps, lr=1e-3, weight_decay=1e-5, fused=False),
    }


def step_times(rounds: int, threads: int, layout: str, seed: int) -> None:
    torch.set_num_threads(threads)
    # one parameter set per optimizer (same values), so that no optimizer reads another's state
    sets = {name: LAYOUTS[layout](seed=seed) for name in makers()}
    steps = {name: make(sets[name]).step for name, make in makers().items()}
    floor_set = LAYOUTS[layout](seed=seed)
    floor = torch.optim.AdamW(floor_set, lr=1e-3, weight_decay=1e-5, fused=True)
    floor.step()  # creates m
    steps[FLOOR] = plus_read_passes(floor.step, [floor.state[p]["exp_avg"] for p in floor_set],
                                    [p.grad for p in floor_set])
    times = interleaved_medians(steps, rounds)
    ps = sets[FOREACH]
    base_f, base_x = times[FOREACH], times[FUSED]
    rows = [(name, f"{t * 1e3:.2f}", f"{t / base_f:.2f}", f"{t / base_x:.2f}") for name, t in times.items()]
    print(f"{layout}: {sum(p.numel() for p in ps):,} parameters in {len(ps)} tensors, torch {torch.__version__}, "
          f"{threads} thread(s), median of {rounds} interleaved rounds")
    print(table(rows, ("optimizer", "ms/step", "÷ AdamW foreach", "÷ AdamW fused")))
    print(f"target: VRAdam ≤ {TARGETS[layout]}× AdamW(fused)\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    for threads in args.threads:
        for layout in LAYOUTS:
            step_times(args.rounds, threads, layout, args.seed)


if __name__ == "__main__":
    main()
