"""VRAdam vs Adam at the edge of stability (full batch, MLP, MSE on the MNIST 5k subset).

For each learning rate, Adam and VRAdam (β3 = 1, α1 = 10, the paper's defaults) train from the
same start; the preconditioned sharpness λ_max(P⁻¹H) is recorded every few steps. Adam's P is
(1 − β1ᵗ)(√v̂ + ε)/lr; VRAdam's own P uses its effective rate η(m) = lr/(1 + min(β3‖m‖², α1)),
and ``Adam-P`` below rescales it to Adam's P at the base lr (multiply by lr/η(m)), so both are read
against Adam's threshold (2 + 2β1)/(1 − β1) = 38. Writes ``figures/vradam_eos.png`` and
``paper_repro/vradam/results/eos.md``. Usage::

    python paper_repro/vradam/eos.py [--data mnist5k|digits] [--n 500] [--steps 400] [--lrs 0.01 0.03 0.1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure

import rodflow

ROOT = Path(__file__).resolve().parents[2]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("mnist5k", "digits"), default="mnist5k")
    p.add_argument("--n", type=int, default=500)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=20)
    p.add_argument("--lrs", type=float, nargs="*", default=[0.01, 0.03, 0.1])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=ROOT / "paper_repro" / "vradam" / "results" / "eos.md")
    p.add_argument("--figure", type=Path, default=ROOT / "figures" / "vradam_eos.png")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    load = rodflow.problems.mnist5k if args.data == "mnist5k" else rodflow.problems.digits
    x, y = load(n=args.n, seed=args.seed)
    net = rodflow.problems.mlp([x.shape[1], args.width, 10], seed=args.seed)
    prob = rodflow.problems.module_problem(net, x, rodflow.problems.one_hot(y, 10))
    fig = Figure(figsize=(10, 3.2 * len(args.lrs)), layout="constrained")
    axes = fig.subplots(len(args.lrs), 2, squeeze=False)
    rows = []
    for i, lr in enumerate(args.lrs):
        for name in ("adam", "vradam"):
            spec = rodflow.optimizer(name, lr=lr)
            try:
                traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, args.steps, sharpness_every=args.every,
                                       config={"seed": args.seed})
                diverged = False
            except rodflow.NonFiniteError as err:
                traj, diverged = err.trajectory, True  # type: ignore[attr-defined]
            s = traj.sharpness
            steps, own = s.get("preconditioned_step"), s.get("preconditioned_sharpness")
            if name == "vradam" and own is not None and own.numel():
                scale = torch.stack([spec.lr / spec.effective_lr(traj.state(int(k)).m) for k in steps])
                adam_p = own * scale.to(own)
            else:
                adam_p = own
            late = steps >= args.steps * 2 / 3 if steps is not None else None
            late_val = float(adam_p[late].mean()) / spec.threshold if late is not None and bool(late.any()) else None
            rows.append({"lr": lr, "optimizer": name, "diverged": diverged, "final loss": float(traj.loss[-1]),
                         "late λ(Adam-P⁻¹H) ÷ 38": None if late_val is None else round(late_val, 3),
                         "late λ(own P⁻¹H) ÷ 38": None if late is None or not bool(late.any())
                         else round(float(own[late].mean()) / spec.threshold, 3)})
            print(json.dumps(rows[-1]), flush=True)
            ax_s, ax_l = axes[i]
            if adam_p is not None and adam_p.numel():
                ax_s.plot(steps.numpy(), adam_p.numpy(), marker=".", label=f"{name}")
            ax_l.plot(traj.t.numpy(), traj.loss.numpy(), label=name + (" (diverged)" if diverged else ""))
        ax_s.axhline(38.0, color="k", ls="--", lw=1, label="Adam threshold 38")
        ax_s.set_ylabel("λ_max(P_Adam⁻¹ H)")
        ax_s.set_yscale("log")
        ax_s.set_title(f"lr {lr:g}")
        ax_l.set_yscale("log")
        ax_l.set_ylabel("training loss")
        for ax in (ax_s, ax_l):
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    cols = list(rows[0])
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
                      + ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])
    config = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# VRAdam vs Adam at the edge of stability ({args.data}, {args.n} examples, "
                        f"MLP {prob.dim} parameters)\n\nLate window: last third of the run.\n\n{table}\n\n"
                        f"Config: `{json.dumps(config)}`\n\nCommand: `python {' '.join(sys.argv)}`\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
