"""FlowAdam cost: Adam-mode step time ÷ torch's Adam, and gradient evaluations of the ODE mode.

Part 1 (single-threaded, ≈3M parameters in 20 tensors, gradients preset, a no-op closure): step
time with the triggers' statistics computed but the ODE off, ÷ Adam(foreach=True) and
÷ Adam(fused=True). Targets: ≤ 1.0× foreach and ≤ 2.0× fused.
Part 2: closure calls per trigger and per 1000 steps, and wall time against Adam's, on the
reproduction's 200×300 rank-10 matrix completion (density 0.3, noise 0.1, lr 0.01, mode B) for
dopri5, rk4 and euler. One run, printed tables::

    python benchmarks/flowadam.py [--steps 1000] [--rounds 100]
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import big_params, interleaved_medians, table, without_c

import rodflow
from rodflow.optim import native

OFF: dict[str, Any] = {"switch_sensitivity": 0.0, "curvature_sensitivity": math.inf}
TORCH_OPS = "FlowAdam Adam mode, statistics in torch ops (no C)"


def _no_closure() -> None:
    """The gradients are preset: the closure has nothing to compute."""


def step_times(rounds: int) -> None:
    """Step times in interleaved rounds (one step of each optimizer per round), each optimizer on its
    own copy of the parameters, so that a slow stretch of a shared machine hits all alike."""
    makers: dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]] = {
        "Adam(foreach=True)": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
        "Adam(fused=True)": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
        "FlowAdam Adam mode (fused)": lambda ps: rodflow.FlowAdam(ps, lr=1e-3, **OFF),
        "FlowAdam Adam mode (foreach)": lambda ps: rodflow.FlowAdam(ps, lr=1e-3, fused=False, **OFF),
        TORCH_OPS: lambda ps: rodflow.FlowAdam(ps, lr=1e-3, **OFF),
    }
    steps: dict[str, Callable[[], object]] = {}
    for name, make in makers.items():
        opt = make(big_params())
        steps[name] = partial(opt.step, _no_closure) if isinstance(opt, rodflow.FlowAdam) else opt.step
    steps[TORCH_OPS] = without_c(steps[TORCH_OPS])
    flow = rodflow.FlowAdam(big_params(), lr=1e-3, **OFF)
    _, params, grads, prev = flow._prepare()
    steps["trigger statistics alone"] = partial(flow._statistics, grads, prev)
    times = interleaved_medians(steps, rounds)
    n = sum(p.numel() for p in params)
    f, x = times["Adam(foreach=True)"], times["Adam(fused=True)"]
    print(f"{n:,} parameters in {len(params)} tensors, torch {torch.__version__}, 1 thread, "
          f"median of {rounds} interleaved rounds; statistics: {native.status()}")
    print(table([(k, f"{t * 1e3:.2f}", f"{t / f:.2f}", f"{t / x:.2f}") for k, t in times.items()],
                ("optimizer", "ms/step", "÷ Adam foreach", "÷ Adam fused")))
    print("targets: FlowAdam (Adam mode) ≤ 1.0× Adam(foreach) and ≤ 2.0× Adam(fused)\n")


def grad_evals(steps: int) -> None:
    """Closure calls of FlowAdam (mode B) on the reproduction's 200×300 matrix completion (seed 42)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "paper_repro" / "flowadam"))
    from protocol import completion_loss, init_factors, low_rank_data, train

    data = low_rank_data((200, 300), 10, 0.3, 0.1, seed=42)
    rows: list[tuple[str, ...]] = []
    adam_seconds = None
    for method in ("adam", "dopri5", "rk4", "euler"):
        factors = init_factors((200, 300), 15, seed=42)
        if method == "adam":
            opt: torch.optim.Optimizer = torch.optim.Adam(factors, lr=0.01, weight_decay=1e-5)
        else:
            opt = rodflow.FlowAdam(factors, lr=0.01, weight_decay=1e-5, ode_method=method, mode="B")
        out = train(factors, lambda factors=factors: completion_loss(factors, data), opt, steps)
        if method == "adam":
            adam_seconds = out["seconds"]
        per = (out["grad_evals"] - steps) / out["triggers"] if out["triggers"] else 0.0
        rows.append((method if method == "adam" else f"FlowAdam {method}", str(out["triggers"]), f"{per:.1f}",
                     f"{out['grad_evals'] * 1000 / steps:.0f}", f"{out['seconds']:.1f}",
                     f"{out['seconds'] / adam_seconds:.1f}" if adam_seconds else "–"))
    print(f"matrix completion 200×300, rank 10 (model rank 15, U and V), density 0.3, noise 0.1, seed 42, "
          f"{steps} steps, lr 0.01, mode B")
    print(table(rows, ("optimizer", "ODE triggers", "grad evals / trigger", "grad evals / 1000 steps", "seconds",
                       "÷ Adam time")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=100)
    args = parser.parse_args()
    torch.set_num_threads(1)
    step_times(args.rounds)
    grad_evals(args.steps)


if __name__ == "__main__":
    main()
