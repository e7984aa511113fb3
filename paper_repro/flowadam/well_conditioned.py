"""FlowAdam against Adam on ordinary classifiers: the paper's "matches Adam on well-conditioned
workloads (CIFAR-10)" claim, on offline stand-ins.

The paper's CIFAR-10 experiment (the authors' ``experiments/cifar10.py``): ResNet-18, mini-batches
of 128, lr 1e-3 constant, 200 epochs, FlowAdam with the stochastic preset (mode A), Adam at torch's
defaults; the script itself expects no ODE trigger. CIFAR-10 is not available offline; the
stand-ins are

* ``cnn-fashion``: the small CNN of ``paper_repro/vradam/image_classification.py`` on 5,000
  Fashion-MNIST images, mini-batches of 128, lr 1e-3 constant, cross-entropy (the paper's
  protocol at CPU scale);
* ``mlp-digits``: a 64-32-10 tanh MLP on 1,000 of scikit-learn's digits, cross-entropy, lr 1e-2,
  mini-batches of 64 and full batch.

Optimizers: ``torch.optim.Adam`` and FlowAdam at each preset (``mode="A"``, ``mode="B"``), same
lr, betas, eps. Per run: final training loss (full training set), train and test accuracy, ODE
triggers per step after the warm-up, the ODE's share of gradient evaluations, wall time ÷ Adam's
(same seed, same thread). Writes ``results/well_conditioned.md`` (and ``.jsonl``, one line per
finished run). Usage::

    python paper_repro/flowadam/well_conditioned.py [--seeds 0 1 2] [--epochs 3] [--tasks ...]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import nn  # noqa: E402

import rodflow  # noqa: E402
from paper_repro.flowadam.protocol import RESULTS, mean_std, write_results  # noqa: E402
from paper_repro.vradam.image_classification import accuracy, cnn  # noqa: E402

OPTIMIZERS = {"adam": None, "flowadam_A": "A", "flowadam_B": "B"}
#: task → (learning rate, batch size or None for full batch)
TASKS: dict[str, tuple[float, int | None]] = {"cnn-fashion": (1e-3, 128), "mlp-digits": (1e-2, 64),
                                              "mlp-digits-full": (1e-2, None)}


def data_and_model(task: str, seed: int, n_train: int) -> tuple[dict[str, torch.Tensor], nn.Module]:
    torch.manual_seed(seed)
    if task == "cnn-fashion":
        x, y = rodflow.problems.fashion_mnist(split="train", n=n_train, seed=0)
        xt, yt = rodflow.problems.fashion_mnist(split="test", n=2000, seed=0)
        return {"x": x, "y": y, "xt": xt, "yt": yt}, cnn()
    x, y = rodflow.problems.digits(n=None, seed=0, dtype=torch.float32)
    net = nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10))
    return {"x": x[:1000], "y": y[:1000], "xt": x[1000:], "yt": y[1000:]}, net


def run(task: str, name: str, seed: int, epochs: int, n_train: int) -> dict[str, Any]:
    lr, batch = TASKS[task]
    data, net = data_and_model(task, seed, n_train)
    mode = OPTIMIZERS[name]
    opt: torch.optim.Optimizer = (torch.optim.Adam(net.parameters(), lr=lr) if mode is None
                                  else rodflow.FlowAdam(net.parameters(), lr=lr, mode=mode))
    loss_fn = nn.CrossEntropyLoss()
    n = data["x"].shape[0]
    steps_per_epoch = 1 if batch is None else (n + batch - 1) // batch
    # the full-batch task runs as many steps as the mini-batch one over the same epochs
    total = epochs * (steps_per_epoch if batch is not None else (n + 63) // 64)
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    t0 = time.perf_counter()
    for k in range(total):
        if batch is None:
            xb, yb = data["x"], data["y"]
        else:
            j = k % steps_per_epoch
            if j == 0 and k > 0:
                perm = torch.randperm(n, generator=g)
            idx = perm[j * batch:(j + 1) * batch]
            xb, yb = data["x"][idx], data["y"][idx]

        def closure(xb: torch.Tensor = xb, yb: torch.Tensor = yb) -> torch.Tensor:
            opt.zero_grad()
            loss = loss_fn(net(xb), yb)
            loss.backward()
            return loss

        opt.step(closure)  # type: ignore[arg-type]
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        train_loss = float(loss_fn(net(data["x"]), data["y"]))
    row: dict[str, Any] = {"task": task, "optimizer": name, "seed": seed, "lr": lr, "batch": batch, "steps": total,
                           "train_loss": train_loss, "train_acc": accuracy(net, data["x"], data["y"]),
                           "test_acc": accuracy(net, data["xt"], data["yt"]), "seconds": seconds,
                           "triggers": 0, "grad_evals": total, "ode_nfe": 0}
    if isinstance(opt, rodflow.FlowAdam):
        row.update(triggers=opt.ode_triggers, grad_evals=opt.grad_evals, ode_nfe=opt.ode_nfe,
                   trigger_rate=opt.ode_triggers / max(1, total - opt.warmup - 1))
    return row


def table(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["| task | optimizer | train loss | train acc | test acc | ODE steps ÷ steps after warm-up | "
             "ODE share of gradient evaluations | time ÷ Adam |", "|---|---|---|---|---|---|---|---|"]
    for task in TASKS:
        adam_s = {r["seed"]: r["seconds"] for r in rows if r["task"] == task and r["optimizer"] == "adam"}
        for name in OPTIMIZERS:
            rs = [r for r in rows if r["task"] == task and r["optimizer"] == name]
            if not rs:
                continue
            ratio = [r["seconds"] / adam_s[r["seed"]] for r in rs if r["seed"] in adam_s]
            cost = f"{statistics.mean(ratio):.1f}" if ratio else "–"
            lines.append(
                f"| {task} | {name} | {mean_std([r['train_loss'] for r in rs])} | "
                f"{mean_std([r['train_acc'] for r in rs], 3)} | {mean_std([r['test_acc'] for r in rs], 3)} | "
                f"{statistics.mean(r.get('trigger_rate', 0.0) for r in rs):.2f} | "
                f"{statistics.mean(r['ode_nfe'] / r['grad_evals'] for r in rs):.2f} | "
                f"{cost} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train", type=int, default=5000, help="Fashion-MNIST training images")
    ap.add_argument("--tasks", nargs="*", default=list(TASKS), choices=list(TASKS))
    ap.add_argument("--optimizers", nargs="*", default=list(OPTIMIZERS), choices=list(OPTIMIZERS))
    ap.add_argument("--out", type=Path, default=RESULTS / "well_conditioned.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    jsonl = args.out.with_suffix(".jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    jsonl.write_text("")
    rows = []
    for task in args.tasks:
        for seed in args.seeds:
            for name in args.optimizers:
                row = run(task, name, seed, args.epochs, args.train)
                rows.append(row)
                with jsonl.open("a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    intro = ("FlowAdam at its two presets against torch.optim.Adam at the same lr, betas and eps; mean ± std over "
             f"seeds {args.seeds}. The paper's CIFAR-10 protocol (ResNet-18, batch 128, lr 1e-3, mode A) at CPU "
             "scale on offline stand-ins; see the module docstring of `well_conditioned.py`.")
    write_results(args.out, "FlowAdam on well-conditioned classifiers", intro, table(rows),
                  {"seeds": args.seeds, "epochs": args.epochs, "train": args.train, "tasks": args.tasks,
                   "optimizers": args.optimizers, "lrs_batches": {t: TASKS[t] for t in args.tasks}})
    print("\n".join(table(rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
