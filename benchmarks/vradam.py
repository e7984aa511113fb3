"""VRAdam step time ÷ torch's AdamW on the same parameters (≈3M in 20 tensors), single-threaded.

Targets: ≤ 1.0× AdamW(foreach=True) and ≤ 1.5× AdamW(fused=True). One run, printed table::

    python benchmarks/vradam.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import big_params, median_time, table

import rodflow


def main() -> None:
    torch.set_num_threads(1)
    params = big_params()
    n = sum(p.numel() for p in params)
    makers = {
        "AdamW(foreach=True)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-5, foreach=True),
        "AdamW(fused=True)": lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=1e-5, fused=True),
        "VRAdam (fused, default)": lambda ps: rodflow.VRAdam(ps, lr=1e-3, weight_decay=1e-5),
        "VRAdam(fused=False)": lambda ps: rodflow.VRAdam(ps, lr=1e-3, weight_decay=1e-5, fused=False),
    }
    times = {}
    for name, make in makers.items():
        opt = make(params)
        times[name] = median_time(opt.step)
    base_f, base_x = times["AdamW(foreach=True)"], times["AdamW(fused=True)"]
    rows = [(name, f"{t * 1e3:.2f}", f"{t / base_f:.2f}", f"{t / base_x:.2f}") for name, t in times.items()]
    print(f"{n:,} parameters in {len(params)} tensors, torch {torch.__version__}, 1 thread")
    print(table(rows, ("optimizer", "ms/step", "÷ AdamW foreach", "÷ AdamW fused")))
    print("targets: VRAdam ≤ 1.0× AdamW(foreach) and ≤ 1.5× AdamW(fused)")


if __name__ == "__main__":
    main()
