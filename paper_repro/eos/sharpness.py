"""The edge of stability, reproduced: sharpness rises to the optimizer's threshold and hovers there.

Full-batch training of a tanh MLP with MSE on one-hot targets (MNIST 5k subset; scikit-learn's
digits with ``--data digits``): GD at several learning rates (λ_max(H) → 2/η, Cohen et al. 2021,
arXiv 2103.00065), Adam (λ_max(P⁻¹H) → (2 + 2β₁)/(1 − β₁) = 38, Cohen et al. 2022, arXiv
2207.14484) and heavy ball (λ_max(P⁻¹H) = η·λ_max → 2 + 2β). Writes ``figures/eos_gd.png``,
``figures/eos_adam.png``, ``figures/eos_heavy_ball.png`` and ``paper_repro/eos/results.md``
(late-window mean of the (preconditioned) sharpness ÷ threshold per run). Usage::

    python paper_repro/eos/sharpness.py [--data mnist5k|digits] [--n 1000] [--width 32] [--steps 800] [--every 20] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

import rodflow
from rodflow import plot
from rodflow.progress import track

ROOT = Path(__file__).resolve().parents[2]
RUNS = [("gd", {"lr": 0.35}), ("gd", {"lr": 0.5}), ("gd", {"lr": 0.7}),
        ("adam", {"lr": 5e-3}), ("adam", {"lr": 1e-2}),
        ("heavy_ball", {"lr": 0.35, "momentum": 0.9}), ("heavy_ball", {"lr": 0.7, "momentum": 0.9})]


def _shown(path: Path) -> str:
    """A path as recorded in the results: relative to the repository when inside it."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("mnist5k", "digits"), default="mnist5k")
    p.add_argument("--n", type=int, default=1000, help="training examples (full batch)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--every", type=int, default=20, help="sharpness every N steps")
    p.add_argument("--late", type=float, default=1 / 3, help="late window: this last fraction of the run")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizers", nargs="+", choices=sorted({name for name, _ in RUNS}), default=None,
                   help="run only these optimizers' rows (default: all)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1: the measured configuration)")
    p.add_argument("--results", type=Path, default=ROOT / "paper_repro" / "eos" / "results.md")
    p.add_argument("--figures", type=Path, default=ROOT / "figures")
    args = p.parse_args(argv)
    previous = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(previous)


def run(args: argparse.Namespace) -> int:
    """All runs of ``RUNS`` (or of ``--optimizers``): results table, figures, config."""
    torch.manual_seed(args.seed)
    runs = [(name, hp) for name, hp in RUNS if args.optimizers is None or name in args.optimizers]
    load = rodflow.problems.mnist5k if args.data == "mnist5k" else rodflow.problems.digits
    x, y = load(n=args.n, seed=args.seed)
    net = rodflow.problems.mlp([x.shape[1], args.width, 10], activation="tanh", seed=args.seed)
    prob = rodflow.problems.module_problem(net, x, rodflow.problems.one_hot(y, 10))
    sharpness_kwargs = {"method": "lanczos", "tol": 1e-5}
    config = {**vars(args), "results": _shown(args.results), "figures": _shown(args.figures), "dim": prob.dim,
              "runs": runs, "sharpness": sharpness_kwargs, "torch": torch.__version__}
    rows: list[dict[str, Any]] = []
    by_name: dict[str, list[tuple[rodflow.OptimizerSpec, rodflow.Trajectory]]] = {}
    for name, hp in track(runs, "eos sharpness sweep"):
        spec = rodflow.optimizer(name, **hp)
        t0 = time.perf_counter()
        traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, args.steps, sharpness_every=args.every,
                               sharpness_kwargs=sharpness_kwargs, config={"seed": args.seed})
        s = traj.sharpness
        # GD and heavy ball: P = 1/η, so the preconditioned sharpness is η·λ_max(H)
        steps, values = s["preconditioned_step"], s["preconditioned_sharpness"]
        late = steps >= args.steps * (1 - args.late)
        ratio = float(values[late].mean()) / spec.threshold
        peak = float(values.max()) / spec.threshold
        rows.append({"optimizer": name, "lr": spec.lr, "threshold": round(spec.threshold, 4),
                     "late mean ÷ threshold": round(ratio, 3), "peak ÷ threshold": round(peak, 3),
                     "within ±10%": "yes" if abs(ratio - 1) <= 0.10 else "no",
                     "final loss": f"{float(traj.loss[-1]):.4g}", "HVPs": int(s["n_hvp"].sum()),
                     "seconds": round(time.perf_counter() - t0, 1)})
        print(json.dumps(rows[-1]), flush=True)
        by_name.setdefault(name, []).append((spec, traj))
    args.figures.mkdir(parents=True, exist_ok=True)
    for name, group in by_name.items():
        labels = [f"lr {s.lr:g}" for s, _ in group]
        if name == "gd":  # the classic picture: λ_max(H) against each run's own 2/η
            fig = plot.sharpness_curve(*[t for _, t in group], labels=labels,
                                       threshold=[s.threshold / s.lr for s, _ in group],
                                       title=f"GD on {args.data}: λ_max(H) settles at 2/η")
        else:
            what = {"adam": "P = (1 − β₁ᵗ)(√v̂ + ε)/η",
                    "heavy_ball": "P = 1/η"}.get(name, "P = the spec's preconditioner")
            fig = plot.sharpness_curve(*[t for _, t in group], preconditioned=True, labels=labels,
                                       threshold=group[0][0].threshold,
                                       title=f"{name} on {args.data}: λ_max(P⁻¹H) ({what})")
        fig.savefig(args.figures / f"eos_{name}.png", dpi=120)
    cols = list(rows[0])
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
                      + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])
    args.results.write_text(
        f"# Edge of stability on {args.data} ({args.n} examples, MLP {prob.dim} parameters, {args.steps} steps)\n\n"
        "Late window: the last third of the run. The preconditioned sharpness is λ_max(P⁻¹H) with each "
        "optimizer's own P (P = 1/η for GD and heavy ball, so it is η·λ_max(H)); Lanczos (eigsh) on HVPs.\n\n"
        f"{table}\n\nConfig: `{json.dumps(config)}`\n\nCommand: `python {' '.join(sys.argv)}`\n")
    print(f"wrote {args.results}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
