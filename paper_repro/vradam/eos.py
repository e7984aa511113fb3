"""VRAdam vs Adam at the edge of stability (full batch, MLP, MSE on the MNIST 5k subset).

For each learning rate, Adam and VRAdam (α1 = 10, β3 = 1 as in the paper and a stronger β3 = 100)
train from the same start with the whole training set as the batch. Every few steps the top
eigenvalue of P⁻¹H is recorded (:func:`rodflow.iterate` with ``sharpness_every``, LOBPCG on
P^{-1/2} H P^{-1/2}). Adam's P is (1 − β1ᵗ)(√v̂ + ε)/lr. VRAdam's own P uses its effective rate
η(m) = lr/(1 + min(β3‖m‖², α1)); multiplying its λ by lr/η(m) gives λ_max against *Adam's* P at
the base rate, which is what the velocity brake lets exceed Adam's threshold
(2 + 2β1)/(1 − β1) = 38 (equivalently, λ_max(H)/(√v̂ + ε) against (2 + 2β1)/((1 − β1)·lr)).

The table reports the loss (final, largest rise above the starting loss, number of steps where
the loss jumps by more than 50%), the late-window means of both preconditioned sharpnesses
divided by 38, and the smallest η(m)/lr seen. Writes ``figures/vradam_eos.png`` and
``paper_repro/vradam/results/eos.md``. Usage::

    python paper_repro/vradam/eos.py [--data mnist5k|digits] [--n 500] [--steps 400] [--every 20]
        [--lrs 0.01 0.1 0.3 1.0] [--beta3s 1 100] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

import rodflow
from rodflow.progress import progress_bar

ROOT = Path(__file__).resolve().parents[2]


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return f"{x:.4g}"
    return "—" if x is None else str(x)


def run(spec: rodflow.OptimizerSpec, prob: Any, steps: int, every: int, seed: int) -> dict[str, Any]:
    """Train with ``spec``; return the trajectory's loss, both sharpness series and summary numbers."""
    t0 = time.perf_counter()
    try:
        traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps, sharpness_every=every, config={"seed": seed})
        diverged = False
    except rodflow.NonFiniteError as err:
        traj, diverged = err.trajectory, True  # type: ignore[attr-defined]
    s = traj.sharpness
    k, own = s["preconditioned_step"], s["preconditioned_sharpness"]  # [n_estimates]
    lr = spec.lr
    if isinstance(spec, rodflow.optimizers.vradam.VRAdam) and traj.m is not None:
        ratio = torch.stack([lr / spec.effective_lr(m) for m in traj.m]).to(own)  # lr/η(m_t), [n_recorded]
        at = {int(t): i for i, t in enumerate(traj.t.tolist())}
        adam_p = own * ratio[[at[int(j)] for j in k]]
        min_eta = float(1.0 / ratio.max())
    else:
        adam_p, min_eta = own, 1.0
    loss = traj.loss
    late = k >= steps * 2 / 3
    late_mean = (lambda x: float(x[late].mean()) / spec.threshold) if bool(late.any()) and not diverged else None
    return {
        "steps": k, "own": own, "adam_p": adam_p, "t": traj.t, "loss": loss, "diverged": diverged,
        "final loss": float(loss[-1]), "max loss ÷ initial": float(loss.max() / loss[0]),
        "loss jumps > 50%": int((loss[1:] > 1.5 * loss[:-1]).sum()),
        "late λ(own P⁻¹H) ÷ 38": None if late_mean is None else late_mean(own),
        "late λ(Adam P⁻¹H) ÷ 38": None if late_mean is None else late_mean(adam_p),
        "min η/lr": min_eta, "seconds": time.perf_counter() - t0,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("mnist5k", "digits"), default="mnist5k")
    p.add_argument("--n", type=int, default=500, help="training examples (the full batch)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=20, help="steps between sharpness estimates")
    p.add_argument("--lrs", type=float, nargs="*", default=[0.01, 0.1, 0.3, 1.0])
    p.add_argument("--beta3s", type=float, nargs="*", default=[1.0, 100.0])
    p.add_argument("--alpha1", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "paper_repro" / "vradam" / "results" / "eos.md")
    p.add_argument("--figure", type=Path, default=ROOT / "figures" / "vradam_eos.png")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    load = rodflow.problems.mnist5k if args.data == "mnist5k" else rodflow.problems.digits
    x, y = load(n=args.n, seed=args.seed)
    net = rodflow.problems.mlp([x.shape[1], args.width, 10], seed=args.seed)
    prob = rodflow.problems.module_problem(net, x, rodflow.problems.one_hot(y, 10))
    variants: list[tuple[str, dict[str, float]]] = [("adam", {})]
    variants += [("vradam", {"beta3": b, "alpha1": args.alpha1}) for b in args.beta3s]
    fig = Figure(figsize=(11, 3.0 * len(args.lrs)), layout="constrained")
    axes = fig.subplots(len(args.lrs), 2, squeeze=False)
    rows = []
    with progress_bar(len(args.lrs) * len(variants), "vradam eos sweep", unit="run") as bar:
        for i, lr in enumerate(args.lrs):
            ax_s, ax_l = axes[i]
            for j, (name, kw) in enumerate(variants):
                spec = rodflow.optimizer(name, lr=lr, **kw)
                label = name if not kw else f"vradam β3={kw['beta3']:g}"
                r = run(spec, prob, args.steps, args.every, args.seed)
                bar.update(1)
                row = {"lr": lr, "optimizer": label, "diverged": r["diverged"]}
                row.update({key: r[key] for key in ("final loss", "max loss ÷ initial", "loss jumps > 50%",
                                                    "late λ(Adam P⁻¹H) ÷ 38", "late λ(own P⁻¹H) ÷ 38", "min η/lr")})
                rows.append(row)
                print(json.dumps({**row, "seconds": round(r["seconds"], 1)}), flush=True)
                color = f"C{j}"
                ax_s.plot(r["steps"].numpy(), r["adam_p"].numpy(), ".-", color=color, label=f"{label}: Adam's P")
                if kw:
                    ax_s.plot(r["steps"].numpy(), r["own"].numpy(), ":", color=color, label=f"{label}: own P")
                ax_l.plot(r["t"].numpy(), r["loss"].numpy(), color=color, lw=1,
                          label=label + (" (diverged)" if r["diverged"] else ""))
            ax_s.axhline(38.0, color="k", ls="--", lw=1, label="Adam threshold 38")
            ax_s.set_ylabel("λ_max(P⁻¹H)")
            ax_s.set_yscale("log")
            ax_s.set_title(f"lr {lr:g}: preconditioned sharpness")
            ax_l.set_yscale("log")
            ax_l.set_ylabel("training loss (MSE)")
            ax_l.set_title(f"lr {lr:g}: loss")
            for ax in (ax_s, ax_l):
                ax.set_xlabel("step")
                ax.grid(alpha=0.3)
            ax_s.legend(fontsize=7)
            ax_l.legend(fontsize=7)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    cols = list(rows[0])
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
                      + ["| " + " | ".join(_fmt(r[c]) for c in cols) + " |" for r in rows])
    config = {k: str(v.relative_to(ROOT)) if isinstance(v, Path) and v.is_relative_to(ROOT) else
              (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update({"dim": prob.dim, "sharpness": "rodflow.iterate(sharpness_every=every), default tracker"})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        f"# VRAdam vs Adam at the edge of stability ({args.data}, {args.n} examples full batch, MLP "
        f"{x.shape[1]}-{args.width}-10 with {prob.dim} parameters, MSE)\n\n"
        f"Late window: last third of the run. `Adam P` is (1 − β1ᵗ)(√v̂ + ε)/lr at the base rate; `own P` "
        f"uses VRAdam's η(m). Threshold (2 + 2β1)/(1 − β1) = 38.\n\n{table}\n\n"
        f"Config: `{json.dumps(config)}`\n\nCommand: `python paper_repro/vradam/eos.py {' '.join(argv or sys.argv[1:])}`\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
