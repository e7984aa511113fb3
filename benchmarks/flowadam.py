"""FlowAdam cost: Adam-mode step time ÷ torch's Adam, and gradient evaluations of the ODE mode.

Part 1 (at 1 and at 2 threads; ≈3M parameters in 20 tensors and 500 tensors of 1k elements;
gradients preset, a no-op closure): step time with the triggers' statistics computed but the ODE
off, ÷ Adam(foreach=True) and ÷ Adam(fused=True). Each optimizer gets a fresh gradient tensor
before every step (untimed), as ``zero_grad()`` and backward give it, so g_{t−1} is held by
reference; "reused gradient" keeps the same gradient tensor (as ``zero_grad(set_to_none=False)``),
which costs one copy per step. Targets: ≤ 1.5× Adam(fused) on 3M parameters, ≤ 2× on 500×1k.
Part 2: closure calls per trigger and per 1000 steps, and wall time against Adam's, on the
reproduction's 200×300 rank-10 matrix completion (density 0.3, noise 0.1, lr 0.01, mode B) for
dopri5, rk4 and euler. One run, printed tables::

    OMP_NUM_THREADS=2 python benchmarks/flowadam.py [--threads 1 2] [--steps 1000] [--rounds 100] [--no-evals]
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
from _timing import LAYOUTS, fresh_grads, interleaved_medians, plus_read_passes, table

import rodflow

OFF: dict[str, Any] = {"switch_sensitivity": 0.0, "curvature_sensitivity": math.inf}
REUSED = "FlowAdam Adam mode, reused gradient (copied)"
STATS = "trigger statistics alone"
FLOOR = "Adam(fused) + a plain read of g and g_prev (floor of a separate pass)"
TARGETS = {"3M in 20 tensors": 1.5, "500 tensors of 1k": 2.0}


def _no_closure() -> None:
    """The gradients are preset: the closure has nothing to compute."""


def step_times(rounds: int, threads: int, layout: str) -> None:
    """Step times in interleaved rounds (one step of each optimizer per round), each optimizer on its
    own copy of the parameters, so that a slow stretch of a shared machine hits all alike."""
    torch.set_num_threads(threads)
    makers: dict[str, Callable[[list[torch.nn.Parameter]], torch.optim.Optimizer]] = {
        "Adam(foreach=True)": lambda ps: torch.optim.Adam(ps, lr=1e-3, foreach=True),
        "Adam(fused=True)": lambda ps: torch.optim.Adam(ps, lr=1e-3, fused=True),
        "FlowAdam Adam mode (default: fused, foreach statistics)": lambda ps: rodflow.FlowAdam(ps, lr=1e-3, **OFF),
        "FlowAdam Adam mode, statistics='compile'": lambda ps: rodflow.FlowAdam(ps, lr=1e-3, statistics="compile",
                                                                                **OFF),
        REUSED: lambda ps: rodflow.FlowAdam(ps, lr=1e-3, **OFF),
    }
    steps: dict[str, Callable[[], object]] = {}
    setup: dict[str, Callable[[], object]] = {}
    n = n_tensors = 0
    for name, make in makers.items():
        params = LAYOUTS[layout]()
        n, n_tensors = sum(p.numel() for p in params), len(params)
        opt = make(params)
        steps[name] = partial(opt.step, _no_closure) if isinstance(opt, rodflow.FlowAdam) else opt.step
        if name != REUSED:
            setup[name] = fresh_grads(params)
    params = LAYOUTS[layout]()
    floor = torch.optim.Adam(params, lr=1e-3, fused=True)
    steps[FLOOR] = plus_read_passes(floor.step, [p.grad for p in params], [p.grad.clone() for p in params])
    setup[FLOOR] = fresh_grads(params)
    flow = rodflow.FlowAdam(LAYOUTS[layout](), lr=1e-3, **OFF)
    _, _, grads, prev, _ = flow._prepare()
    steps[STATS] = partial(flow._statistics, grads, [p.clone() for p in prev])
    times = interleaved_medians(steps, rounds, setup=setup)
    f, x = times["Adam(foreach=True)"], times["Adam(fused=True)"]
    print(f"{layout}: {n:,} parameters in {n_tensors} tensors, torch {torch.__version__}, {threads} thread(s), "
          f"median of {rounds} interleaved rounds")
    print(table([(k, f"{t * 1e3:.2f}", f"{t / f:.2f}", f"{t / x:.2f}") for k, t in times.items()],
                ("optimizer", "ms/step", "÷ Adam foreach", "÷ Adam fused")))
    print(f"target: FlowAdam (Adam mode) ≤ {TARGETS[layout]}× Adam(fused)\n")


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
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--no-evals", action="store_true", help="skip part 2 (the ODE's gradient evaluations)")
    args = parser.parse_args()
    for threads in args.threads:
        for layout in LAYOUTS:
            step_times(args.rounds, threads, layout)
    if not args.no_evals:
        torch.set_num_threads(1)
        grad_evals(args.steps)


if __name__ == "__main__":
    main()
