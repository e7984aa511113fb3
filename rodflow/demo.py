"""`make demo`: the zoo on an embedded problem, Adam at the edge of stability, and its flows.

Runs with no download and no flags (scikit-learn's digits, a tanh MLP, full batch, MSE on one-hot
targets), prints tables and writes ``figures/demo_losses.png``, ``figures/demo_sharpness.png``
and ``figures/demo_tracking.png``. ``python -m rodflow.demo --help`` lists the options.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from .threads import add_threads_argument, num_threads


def _table(rows: list[dict[str, Any]], cols: list[str]) -> str:
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = " | ".join(c.ljust(width[c]) for c in cols)
    sep = "-+-".join("-" * width[c] for c in cols)
    body = "\n".join(" | ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows)
    return f"{line}\n{sep}\n{body}"


def run_zoo(prob: Any, steps: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every registered optimizer from the same start; returns the table rows and trajectories."""
    import rodflow

    rows, trajs = [], {}
    table = rodflow.problems.hyperparameters("digits", "train")
    for name in rodflow.OPTIMIZERS:
        spec = rodflow.optimizer(name, **table[name])
        t0 = time.perf_counter()
        traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps)
        dt = time.perf_counter() - t0
        trajs[f"{name} (lr {spec.lr:g})"] = traj
        print(f"  {name:15s} {steps} steps in {dt:5.1f} s, final loss {float(traj.loss[-1]):.4g}", flush=True)
        rows.append({"optimizer": name, "lr": spec.lr, "final loss": f"{float(traj.loss[-1]):.4g}",
                     "steps/s": f"{steps / dt:.0f}"})
    return rows, trajs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="steps for the zoo run")
    parser.add_argument("--eos-steps", type=int, default=400, help="steps for Adam at the edge of stability")
    parser.add_argument("--eos-lr", type=float, default=1e-2, help="Adam's learning rate for the EoS run")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("figures"))
    add_threads_argument(parser)
    args = parser.parse_args(argv)
    with num_threads(args.threads):
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    import torch

    import rodflow
    from rodflow import plot

    torch.manual_seed(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    prob = rodflow.problems.digits_mlp((32,), n=256, seed=args.seed)
    config = {"problem": "digits MLP 64-32-10, tanh, MSE on one-hot, 256 examples, float64",
              "seed": args.seed, "steps": args.steps, "eos_steps": args.eos_steps, "eos_lr": args.eos_lr,
              "threads": args.threads}
    print(f"rodflow demo: {config['problem']} ({prob.dim} parameters), seed {args.seed}\n")

    print(f"[1/3] the zoo: {len(rodflow.OPTIMIZERS)} optimizers × {args.steps} full-batch steps", flush=True)
    rows, trajs = run_zoo(prob, args.steps)
    print(_table(rows, ["optimizer", "lr", "final loss", "steps/s"]))
    fig = plot.loss_curves(trajs, title=f"The zoo on digits: {prob.dim} parameters, full batch, seed {args.seed}")
    fig.savefig(args.out / "demo_losses.png", dpi=120)
    print(f"\nwrote {args.out / 'demo_losses.png'}")

    # Adam into the edge of stability, its preconditioned sharpness, and its two flows
    spec = rodflow.optimizer("adam", lr=args.eos_lr)
    print(f"\n[2/3] Adam (lr {args.eos_lr:g}) for {args.eos_steps} steps, sharpness every 10 steps", flush=True)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, args.eos_steps, sharpness_every=10,
                           config={"seed": args.seed})
    fig = plot.sharpness_curve(traj, threshold=spec, preconditioned=True, labels=[f"adam, lr {args.eos_lr:g}"],
                               title="Adam's preconditioned sharpness rises to its threshold and hovers there")
    fig.savefig(args.out / "demo_sharpness.png", dpi=120)
    from rodflow.compare import eos_onset

    k_star = eos_onset(traj.sharpness, spec.threshold)
    from rodflow.flows.base import TRANSIENT_STEPS

    start = max(TRANSIENT_STEPS, (k_star if k_star is not None else args.eos_steps // 2) - 60)
    print(f"[3/3] stable and rod flows (both second order) from step {start} (dopri5)", flush=True)
    sols = {}
    # both second order (the look-behind field), so the comparison is of the same order
    for name, flow in (("stable", rodflow.stable_flow(spec, prob.loss_fn, order=2)),
                       ("rod", rodflow.rod_flow(spec, prob.loss_fn))):
        t0 = time.perf_counter()
        sols[name] = flow.solve(traj, start=start, rtol=1e-5, atol=1e-8)
        sols[name].config["seconds"] = time.perf_counter() - t0
        print(f"  {name:6s} flow: {sols[name].config['seconds']:5.1f} s, {sols[name].config['grad_evals']} gradient "
              "evaluations", flush=True)
    comps = {name: rodflow.compare(traj, sol) for name, sol in sols.items()}
    print(f"\nAdam (lr={args.eos_lr}) reaches its threshold λ_max(P⁻¹H) = {spec.threshold:.1f} at step {k_star}; "
          f"both flows start from the iterates at step {start}")
    trow = []
    for name, comp in comps.items():
        s = comp.summary()
        trow.append({"flow": name, "mean dist": f"{s['mean_distance']:.4f}",
                     "pre-EoS mean": f"{s['pre_eos_mean_distance']:.4f}", "EoS mean": f"{s['eos_mean_distance']:.4f}",
                     "grad evals/step": f"{sols[name].config['grad_evals'] / (len(sols[name]) - 1):.1f}",
                     "seconds": f"{sols[name].config['seconds']:.1f}"})
    print(_table(trow, list(trow[0])))
    fig = plot.tracking(traj, comps, title=f"Adam lr={args.eos_lr}: flows from step {start} vs iterates")
    fig.savefig(args.out / "demo_tracking.png", dpi=120)
    print(f"wrote {args.out / 'demo_sharpness.png'}, {args.out / 'demo_tracking.png'}")
    print("config: " + json.dumps(config))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
