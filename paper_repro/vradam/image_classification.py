"""AdamW vs VRAdam vs SGD-Nesterov vs RMSprop on Fashion-MNIST with a small CNN (CPU scale).

Fashion-MNIST (Debian's ``dataset-fashion-mnist``) stands in for the paper's CIFAR-10, which is not
available offline. Protocol after the authors': a small learning-rate sweep per optimizer, linear
warmup (10 % of the steps) then cosine decay, weight decay 1e-5, 3 seeds; the learning rate is
chosen on a validation split held out of the training subset, and the test accuracy at that rate is
reported. Writes ``paper_repro/vradam/results/image_classification.md`` and
``figures/vradam_image_classification.png`` (validation accuracy against learning rate, mean ± std
over seeds, and the test accuracy at the chosen rate). Usage::

    python paper_repro/vradam/image_classification.py [--train 5000] [--epochs 3] [--seeds 0 1 2] [--threads 1]
        [--sweep adamw=1e-3,3e-3,1e-2 vradam=3e-3,1e-2,3e-2]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure
from torch import nn

import rodflow
from rodflow.progress import progress_bar

ROOT = Path(__file__).resolve().parents[2]
SWEEP: dict[str, tuple[float, ...]] = {"adamw": (1e-3, 3e-3, 1e-2, 3e-2, 0.1), "vradam": (1e-3, 3e-3, 1e-2, 3e-2, 0.1),
                                       "sgd_nesterov": (0.03, 0.1, 0.3), "rmsprop": (3e-4, 1e-3, 3e-3, 1e-2)}


def cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(1, 16, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(16, 32, 3), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 5 * 5, 64), nn.ReLU(), nn.Linear(64, 10))


def make_optimizer(name: str, params: Any, lr: float, wd: float) -> torch.optim.Optimizer:
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd)
    if name == "vradam":
        return rodflow.VRAdam(params, lr=lr, weight_decay=wd)
    if name == "sgd_nesterov":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=wd)
    return torch.optim.RMSprop(params, lr=lr, weight_decay=wd)


def accuracy(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((net(x).argmax(1) == y).float().mean())


def run(name: str, lr: float, seed: int, data: dict[str, torch.Tensor], epochs: int, batch: int, wd: float
        ) -> dict[str, float]:
    torch.manual_seed(seed)
    net = cnn()
    opt = make_optimizer(name, net.parameters(), lr, wd)
    n = data["x_train"].shape[0]
    total = epochs * ((n + batch - 1) // batch)
    warm = max(1, total // 10)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt, [torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warm),
              torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total - warm)], milestones=[warm])
    g = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for k in range(0, n, batch):
            idx = perm[k: k + batch]
            opt.zero_grad()
            loss_fn(net(data["x_train"][idx]), data["y_train"][idx]).backward()
            opt.step()
            sched.step()
    return {"val": accuracy(net, data["x_val"], data["y_val"]), "test": accuracy(net, data["x_test"], data["y_test"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--train", type=int, default=5000, help="training subset (a further 1000 for validation)")
    ap.add_argument("--test", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--weight-decay", type=float, default=1e-5)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--optimizers", nargs="*", default=list(SWEEP), choices=list(SWEEP))
    ap.add_argument("--sweep", nargs="*", default=[], metavar="NAME=LR,LR",
                    help="replace an optimizer's learning-rate sweep")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "paper_repro" / "vradam" / "results" / "image_classification.md")
    ap.add_argument("--figure", type=Path, default=ROOT / "figures" / "vradam_image_classification.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    sweeps = dict(SWEEP)
    for item in args.sweep:
        name, _, lrs = item.partition("=")
        if name not in SWEEP or not lrs:
            raise ValueError(f"--sweep: expected NAME=LR,LR with NAME in {', '.join(SWEEP)}, got {item!r}")
        sweeps[name] = tuple(float(v) for v in lrs.split(","))
    x, y = rodflow.problems.fashion_mnist(split="train", n=args.train + 1000, seed=0)
    xt, yt = rodflow.problems.fashion_mnist(split="test", n=args.test, seed=0)
    data = {"x_train": x[:args.train], "y_train": y[:args.train], "x_val": x[args.train:], "y_val": y[args.train:],
            "x_test": xt, "y_test": yt}
    lines = ["| optimizer | lr (chosen on validation) | test accuracy (mean ± std) | validation | sweep (val mean per lr) |",
             "|---|---|---|---|---|"]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    total = sum(len(sweeps[n]) for n in args.optimizers) * len(args.seeds)
    with progress_bar(total, "image classification sweep", unit="run") as bar:
        for i, name in enumerate(args.optimizers):
            results: dict[float, list[dict[str, Any]]] = {}
            for lr in sweeps[name]:
                for s in args.seeds:
                    out = run(name, lr, s, data, args.epochs, args.batch, args.weight_decay)
                    results.setdefault(lr, []).append(out)
                    bar.update(1)
            lrs = list(results)
            vals = [[r["val"] for r in results[lr]] for lr in lrs]
            ax.errorbar(lrs, [statistics.mean(v) for v in vals],
                        yerr=[statistics.stdev(v) if len(v) > 1 else 0.0 for v in vals], marker="o", capsize=3,
                        color=f"C{i}", label=f"{name} (validation)")
            best = max(results, key=lambda lr: statistics.mean(r["val"] for r in results[lr]))
            tests = [r["test"] for r in results[best]]
            spread = f" ± {statistics.stdev(tests):.4f}" if len(tests) > 1 else ""
            sweep = ", ".join(f"{lr:g}: {statistics.mean(r['val'] for r in rs):.4f}" for lr, rs in results.items())
            lines.append(f"| {name} | {best:g} | {statistics.mean(tests):.4f}{spread} | "
                         f"{statistics.mean(r['val'] for r in results[best]):.4f} | {sweep} |")
            ax.plot([best], [statistics.mean(tests)], marker="*", ms=12, color=f"C{i}", ls="none",
                    label=f"{name} test at chosen lr")
            print(lines[-1], flush=True)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Fashion-MNIST CNN, {args.train} images, {args.epochs} epochs, {len(args.seeds)} seeds")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    config = {k: str(v.relative_to(ROOT)) if isinstance(v, Path) and v.is_relative_to(ROOT) else
              (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config["sweep"] = {k: list(v) for k, v in sweeps.items() if k in args.optimizers}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("# Image classification: Fashion-MNIST (stand-in for CIFAR-10), small CNN\n\n"
                        + "\n".join(lines) + f"\n\nConfig: `{json.dumps(config)}`\n\nCommand: "
                        f"`python paper_repro/vradam/image_classification.py {' '.join(argv or sys.argv[1:])}`\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
