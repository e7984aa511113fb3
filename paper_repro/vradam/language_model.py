"""AdamW vs VRAdam on a character-level Transformer language model (Jane Austen; CPU scale).

The six Jane Austen novels (Debian's ``r-cran-janeaustenr``, see :func:`rodflow.problems.jane_austen`)
stand in for WikiText-2, which is not available offline; with ``--text pydoc`` the Python
documentation topics (stdlib ``pydoc_data``) stand in instead. The last 10 % of the text is held out;
validation perplexity per character is reported, for each optimizer at each learning rate of a
small sweep. Warmup + cosine schedule, weight decay 1e-5, 3 seeds. Writes
``paper_repro/vradam/results/language_model.md`` and ``figures/vradam_language_model.png``
(validation perplexity against the learning rate, mean ± std over seeds). Usage::

    python paper_repro/vradam/language_model.py --austen-root DIR/usr/lib/R/site-library/janeaustenr/data
    python paper_repro/vradam/language_model.py --text pydoc --steps 100
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

import torch
from matplotlib.figure import Figure
from torch import nn

import rodflow
from rodflow.progress import progress_bar

ROOT = Path(__file__).resolve().parents[2]


class CharTransformer(nn.Module):
    def __init__(self, vocab: int, d: int = 64, heads: int = 4, layers: int = 2, context: int = 64):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.zeros(context, d))
        layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.body = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d, vocab)
        self.mask: torch.Tensor
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(context), persistent=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        h = self.embed(idx) + self.pos[:t]
        return self.head(self.body(h, mask=self.mask[:t, :t], is_causal=True))


def batches(data: torch.Tensor, n: int, context: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    start = torch.randint(0, data.numel() - context - 1, (n,), generator=g)
    x = torch.stack([data[s: s + context] for s in start.tolist()])
    y = torch.stack([data[s + 1: s + context + 1] for s in start.tolist()])
    return x, y


def run(name: str, lr: float, seed: int, train: torch.Tensor, val: torch.Tensor, vocab: int, args: argparse.Namespace
        ) -> float:
    torch.manual_seed(seed)
    model = CharTransformer(vocab, context=args.context)
    opt = (rodflow.VRAdam(model.parameters(), lr=lr, weight_decay=args.weight_decay) if name == "vradam"
           else torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=args.weight_decay))
    warm = max(1, args.steps // 10)
    sched = torch.optim.lr_scheduler.SequentialLR(
        opt, [torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.1, total_iters=warm),
              torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=args.steps - warm)], milestones=[warm])
    g = torch.Generator().manual_seed(seed)
    loss_fn = nn.CrossEntropyLoss()
    for _ in range(args.steps):
        x, y = batches(train, args.batch, args.context, g)
        opt.zero_grad()
        loss_fn(model(x).reshape(-1, vocab), y.reshape(-1)).backward()
        opt.step()
        sched.step()
    gv = torch.Generator().manual_seed(10_000)
    with torch.no_grad():
        losses = []
        for _ in range(args.eval_batches):
            x, y = batches(val, args.batch, args.context, gv)
            losses.append(float(loss_fn(model(x).reshape(-1, vocab), y.reshape(-1))))
    return math.exp(statistics.mean(losses))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--text", choices=("austen", "pydoc"), default="austen")
    ap.add_argument("--austen-root", default=None, help="janeaustenr's data directory")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--context", type=int, default=64)
    ap.add_argument("--eval-batches", type=int, default=20)
    ap.add_argument("--lrs", type=float, nargs="*", default=[3e-3, 1e-2, 3e-2])
    ap.add_argument("--weight-decay", type=float, default=1e-5)
    ap.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=ROOT / "paper_repro" / "vradam" / "results" / "language_model.md")
    ap.add_argument("--figure", type=Path, default=ROOT / "figures" / "vradam_language_model.png")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.text == "austen":
        text, label = rodflow.problems.jane_austen(args.austen_root), "Jane Austen (stand-in for WikiText-2)"
    else:
        from pydoc_data.topics import topics

        text, label = "\n".join(topics.values()), "Python pydoc topics (stand-in for WikiText-2)"
    chars = sorted(set(text))
    lookup = {c: k for k, c in enumerate(chars)}
    data = torch.tensor([lookup[c] for c in text], dtype=torch.int64)
    cut = int(0.9 * data.numel())
    lines = ["| optimizer | lr | validation perplexity (mean ± std) | seeds |", "|---|---|---|---|"]
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    with progress_bar(2 * len(args.lrs) * len(args.seeds), "language model sweep", unit="run") as bar:
        for i, name in enumerate(("adamw", "vradam")):
            means, stds = [], []
            for lr in args.lrs:
                ppl: list[float] = []
                for s in args.seeds:
                    ppl.append(run(name, lr, s, data[:cut], data[cut:], len(chars), args))
                    bar.update(1)
                std = statistics.stdev(ppl) if len(ppl) > 1 else 0.0
                means.append(statistics.mean(ppl))
                stds.append(std)
                spread = f" ± {std:.3f}" if len(ppl) > 1 else ""
                lines.append(f"| {name} | {lr:g} | {statistics.mean(ppl):.3f}{spread} | {len(ppl)} |")
                print(lines[-1], flush=True)
            ax.errorbar(args.lrs, means, yerr=stds, marker="o", capsize=3, color=f"C{i}", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("peak learning rate")
    ax.set_ylabel("validation perplexity per character")
    ax.set_title(f"char Transformer, {label.split(' (')[0]}, {args.steps} steps")
    ax.grid(alpha=0.3)
    ax.legend()
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.figure, dpi=110)
    config = {k: str(v.relative_to(ROOT)) if isinstance(v, Path) and v.is_relative_to(ROOT) else
              (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    config.update(characters=int(data.numel()), vocabulary=len(chars))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(f"# Character-level Transformer on {label}\n\n" + "\n".join(lines)
                        + f"\n\nConfig: `{json.dumps(config)}`\n\nCommand: "
                          f"`python paper_repro/vradam/language_model.py {' '.join(argv or sys.argv[1:])}`\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
