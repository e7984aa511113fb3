"""A compiled Adam update beside torch's fused kernel: how close a ``torch.compile`` path can come to the
FlowAdam (≤ 1.5×) and VRAdam (≤ 1.4×) targets on 3M parameters, in one run, at 1 and at 2 threads.

Not the optimizers' code: a measurement of the kernels such a path would run. Rows, each on its
own tensors (3,030,500 parameters in 20 tensors), interleaved rounds, medians:

* ``Adam(fused=True)`` / ``AdamW(fused=True)``: torch's fused CPU kernels (the baselines);
* ``torch.compile(AdamW.step)``: torch's own capturable foreach AdamW, compiled;
* ``compiled Adam update``: m ← lerp(m, g, 1 − β1), v ← β2 v + (1 − β2) g²,
  θ ← θ − (lr / b1) m / (√v / b2 + ε), with the bias corrections b1 = 1 − β1^t, b2 = √(1 − β2^t)
  formed *outside* the compiled function and passed in as tensors (inside, the compiler evaluates
  the powers once per element);
* ``+ compiled trigger statistics``: FlowAdam's own ``statistics="compile"`` sums ‖g‖², ‖g − g_{t−1}‖²
  (:func:`rodflow.optim.reductions.change_sq_sums`) first, then the update: what a compiled FlowAdam
  Adam-mode step would cost;
* ``compiled VRAdam step``: VRAdam's per-tensor ‖lerp(m, g, 1 − β1)‖²
  (:func:`~rodflow.optim.reductions.velocity_sq_norms`, traced into the caller's graph) summed, η from
  :meth:`rodflow.VRAdam.effective_lr`, then the decoupled-decay update at rate η: one compiled
  function, two passes::

    python benchmarks/compiled_update.py [--threads 1 2] [--rounds 60]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).parent))
from _timing import big_params, interleaved_medians, table

import rodflow
from rodflow.optim.reductions import change_sq_sums, velocity_sq_norms

B1, B2, EPS, WD = 0.9, 0.999, 1e-8, 1e-5
VRADAM = {"lr": 1e-3, "beta3": 1.0, "alpha1": 10.0, "power": 2.0}  # VRAdam's defaults (lr as in the rows)


def adam_update(ps: list[Tensor], gs: list[Tensor], ms: list[Tensor], vs: list[Tensor], lr: Tensor,
                bc: Tensor, decay: Tensor | float = 0.0) -> None:
    """m ← lerp(m, g, 1 − β1), v ← β2 v + (1 − β2) g², then θ ← θ(1 − lr λ) − (lr / b1) m / (√v / b2 + ε);
    ``bc = [b1, b2]``."""
    for p, g, m, v in zip(ps, gs, ms, vs):
        m.lerp_(g, 1 - B1)
        v.mul_(B2).addcmul_(g, g, value=1 - B2)
        p.copy_(p * (1 - lr * decay) - (lr / bc[0]) * m / (v.sqrt() / bc[1] + EPS))


def vradam_step(ps: list[Tensor], gs: list[Tensor], ms: list[Tensor], vs: list[Tensor], lr: Tensor,
                bc: Tensor) -> Tensor:
    """η from the next moment's squared norm, then AdamW's update at rate η; returns η."""
    eta = rodflow.VRAdam.effective_lr({**VRADAM, "lr": lr}, velocity_sq_norms(ms, gs, 1 - B1).sum())
    adam_update(ps, gs, ms, vs, eta.to(ps[0].dtype), bc, WD)
    return eta


def _state(seed: int) -> tuple[list[Tensor], list[Tensor], list[Tensor], list[Tensor], list[Tensor]]:
    params = big_params(seed=seed)
    ps = [p.detach() for p in params]
    gs = [p.grad for p in params if p.grad is not None]
    return ps, gs, [g.clone() for g in gs], [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps]


def step_times(rounds: int, threads: int, seed: int) -> None:
    torch.set_num_threads(threads)
    steps: dict[str, Callable[[], object]] = {}
    for name, cls in (("Adam(fused=True)", torch.optim.Adam), ("AdamW(fused=True)", torch.optim.AdamW)):
        steps[name] = cls(big_params(seed=seed), lr=1e-3, weight_decay=WD if cls is torch.optim.AdamW else 0.0,
                          fused=True).step
    steps["torch.compile(AdamW.step)"] = torch.compile(torch.optim.AdamW(big_params(seed=seed), lr=1e-3,
                                                                         weight_decay=WD).step)
    lr = torch.tensor(1e-3)
    t = 10
    bc = torch.tensor([1 - B1 ** t, (1 - B2 ** t) ** 0.5])
    update, vr = (torch.compile(f, dynamic=False) for f in (adam_update, vradam_step))
    a = _state(seed)
    steps["compiled Adam update"] = lambda: update(a[0], a[1], a[3], a[4], lr, bc)
    b = _state(seed)
    steps["compiled trigger statistics + compiled Adam update"] = lambda: (change_sq_sums(b[1], b[2], "compile"),
                                                                          update(b[0], b[1], b[3], b[4], lr, bc))
    c = _state(seed)
    steps["compiled VRAdam step"] = lambda: vr(c[0], c[1], c[3], c[4], lr, bc)
    times = interleaved_medians(steps, rounds)
    adam, adamw = times["Adam(fused=True)"], times["AdamW(fused=True)"]
    rows = [(name, f"{s * 1e3:.2f}", f"{s / adam:.2f}", f"{s / adamw:.2f}") for name, s in times.items()]
    n = sum(p.numel() for p in a[0])
    print(f"3M in 20 tensors: {n:,} parameters, torch {torch.__version__}, {threads} thread(s), "
          f"median of {rounds} interleaved rounds")
    print(table(rows, ("step", "ms/step", "÷ Adam fused", "÷ AdamW fused")))
    print("targets: FlowAdam (Adam mode) ≤ 1.5× Adam(fused); VRAdam ≤ 1.4× AdamW(fused)\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args(argv)
    for threads in args.threads:
        step_times(args.rounds, threads, args.seed)


if __name__ == "__main__":
    main()
