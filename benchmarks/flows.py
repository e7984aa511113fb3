"""Cost of the flows: gradient evaluations per modelled step and wall time ÷ the discrete run.

One run, single-threaded, printed table. Problem: digits MLP 64-32-10 (2410 parameters), 300
steps of Adam (lr 1e-2, into the edge of stability) and GD (lr 1.0). Usage::

    python benchmarks/flows.py [--steps 300] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch

import rodflow

SOLVERS = [("dopri5", {"rtol": 1e-4, "atol": 1e-7}, None),
           ("dopri5", {"rtol": 1e-6, "atol": 1e-9}, None),
           ("rk4", {}, {"step_size": 0.5})]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    prob = rodflow.problems.digits_mlp((32,), n=256, seed=args.seed)
    rows = []
    for name, hp in (("gd", {"lr": 1.0}), ("adam", {"lr": 1e-2})):
        spec = rodflow.optimizer(name, **hp)
        t0 = time.perf_counter()
        traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, args.steps)
        t_disc = time.perf_counter() - t0
        for kind, make in (("stable", rodflow.stable_flow), ("rod", rodflow.rod_flow)):
            for method, tol, options in SOLVERS:
                flow = make(spec, prob.loss_fn)
                t0 = time.perf_counter()
                try:
                    sol = flow.solve(traj, method=method, options=options, **tol)
                except rodflow.IntegrationError as err:
                    rows.append((name, kind, method, str(tol or options), "failed", "-", "-", str(err)[:40]))
                    continue
                dt = time.perf_counter() - t0
                dist = rodflow.compare(traj, sol, window=(0, args.steps + 1)).summary()["mean_distance"]
                rows.append((name, kind, method, str(tol or options), f"{sol.config['grad_evals'] / args.steps:.1f}",
                             f"{dt / t_disc:.1f}", f"{sol.stats.nfe}", f"{dist:.4f}"))
    head = ("optimizer", "flow", "method", "settings", "grads/step", "time ÷ discrete", "nfe", "mean dist")
    width = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, width)))
    print("-+-".join("-" * w for w in width))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, width)))


if __name__ == "__main__":
    main()
