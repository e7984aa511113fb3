"""FlowAdam cost: Adam-mode step time ÷ torch's Adam, and gradient evaluations of the ODE mode.

Part 1 (single-threaded, ≈3M parameters in 20 tensors, gradients preset, a no-op closure): step
time with the triggers' statistics computed but the ODE off, ÷ Adam(foreach=True) and
÷ Adam(fused=True). Targets: ≤ 1.0× foreach and ≤ 2.0× fused.
Part 2: closure calls per trigger and per 1000 steps on 200×300 rank-10 matrix completion
(density 0.3, noise 0.1, lr 0.01, mode B) for dopri5, rk4 and euler. One run, printed tables::

    python benchmarks/flowadam.py [--steps 1000]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import big_params, median_time, table

import rodflow

OFF = {"switch_sensitivity": 0.0, "curvature_sensitivity": math.inf}


def step_times() -> None:
    params = big_params()
    n = sum(p.numel() for p in params)
    makers = {
        "Adam(foreach=True)": lambda: torch.optim.Adam(params, lr=1e-3, foreach=True),
        "Adam(fused=True)": lambda: torch.optim.Adam(params, lr=1e-3, fused=True),
        "FlowAdam Adam mode (fused)": lambda: rodflow.FlowAdam(params, lr=1e-3, **OFF),
        "FlowAdam Adam mode (foreach)": lambda: rodflow.FlowAdam(params, lr=1e-3, fused=False, **OFF),
    }
    times = {}
    for name, make in makers.items():
        opt = make()
        if isinstance(opt, rodflow.FlowAdam):
            times[name] = median_time(lambda opt=opt: opt.step(lambda: None))
        else:
            times[name] = median_time(opt.step)
    f, x = times["Adam(foreach=True)"], times["Adam(fused=True)"]
    print(f"{n:,} parameters in {len(params)} tensors, torch {torch.__version__}, 1 thread")
    print(table([(k, f"{t * 1e3:.2f}", f"{t / f:.2f}", f"{t / x:.2f}") for k, t in times.items()],
                ("optimizer", "ms/step", "÷ Adam foreach", "÷ Adam fused")))
    print("targets: FlowAdam (Adam mode) ≤ 1.0× Adam(foreach) and ≤ 2.0× Adam(fused)\n")


def grad_evals(steps: int) -> None:
    prob = rodflow.problems.matrix_factorization(200, 300, rank=15, true_rank=10, observed=0.3, noise=0.1, seed=42,
                                                 dtype=torch.float32)
    rows = []
    for method in ("dopri5", "rk4", "euler"):
        theta = torch.nn.Parameter(prob.theta0.clone())
        opt = rodflow.FlowAdam([theta], lr=0.01, weight_decay=1e-5, ode_method=method)

        def closure(theta=theta, opt=opt):
            opt.zero_grad()
            loss = prob.loss_fn(theta)
            loss.backward()
            return loss

        t0 = time.perf_counter()
        for _ in range(steps):
            loss = opt.step(closure)
        dt = time.perf_counter() - t0
        per = (opt.grad_evals - steps) / max(opt.ode_triggers, 1)
        rows.append((method, str(opt.ode_triggers), f"{per:.1f}", f"{opt.grad_evals * 1000 / steps:.0f}",
                     f"{dt:.1f}", f"{float(loss.detach()):.4g}"))
    print(f"matrix completion 200×300, rank 10 (model rank 15), density 0.3, {steps} steps, mode B")
    print(table(rows, ("ode_method", "triggers", "grad evals / trigger", "grad evals / 1000 steps", "seconds",
                       "final loss")))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    torch.set_num_threads(1)
    step_times()
    grad_evals(args.steps)


if __name__ == "__main__":
    main()
