"""EoSMonitor overhead: training time with the monitor ÷ without it, in one run, single-threaded.

Target: ≤ 1.10 at ``every=50`` on the MNIST-5k MLP task (784-32-10 tanh MLP, full batch of 1,000
examples, Adam at lr 1e-2; the probe is a fixed batch of ``--probe`` training examples, 256 by
default). A probe measures two top eigenvalues (raw and preconditioned) with the monitor's
warm-started Krylov solver (``method="krylov"``, residual ≤ 1e-2·θ): ≈ 13 Hessian-vector products
per probe, each ≈ 0.4 training steps here, so the overhead is ≈ 13 × 0.4 / every plus the solver's
bookkeeping. Two identical models train side by side, one step each per round (so a slow stretch
of a shared machine hits both alike); the monitor's cost is spread over its interval::

    python benchmarks/monitor.py [--n 1000] [--steps 300] [--every 50] [--data mnist5k|digits]
                                 [--method krylov|lanczos|...] [--tol 1e-2] [--breakdown]

``--breakdown`` also times the monitor's parts inside the run (the products, the eigensolves around
them, the gradient graph, P), each as a share of the plain model's training time; the timers add a
little to the monitored side.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import table

import rodflow
from rodflow.monitor import EoSMonitor


def _mse(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return 0.5 * (out - target).square().sum(dim=1).mean()


def _timed(owner: Any, name: str, seconds: dict[str, float], key: str) -> None:
    """Replace ``owner.name`` by a wrapper adding its wall time to ``seconds[key]``."""
    inner: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds[key] += time.perf_counter() - t0

    setattr(owner, name, wrapper)


def _breakdown() -> dict[str, float]:
    """Timers on the monitor's parts (see the module docstring)."""
    parts: dict[str, float] = defaultdict(float)
    sharpness_module = importlib.import_module("rodflow.sharpness")
    monitor_module = importlib.import_module("rodflow.monitor")
    _timed(sharpness_module.HessianOperator, "__call__", parts, "products")
    _timed(sharpness_module.HessianOperator, "__init__", parts, "gradient graph")
    _timed(monitor_module, "solve", parts, "eigensolves (products included)")
    _timed(EoSMonitor, "_preconditioner", parts, "P and the threshold")
    _timed(EoSMonitor, "measure", parts, "probes in all")
    return parts


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--every", type=int, default=50)
    p.add_argument("--data", choices=("mnist5k", "digits"), default="mnist5k")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--probe", type=int, default=256, help="examples in the probe batch")
    p.add_argument("--tol", type=float, default=None, help="the eigensolves' tolerance (default: the monitor's)")
    p.add_argument("--method", default=None, help="eigensolver (default: the monitor's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--breakdown", action="store_true", help="time the monitor's parts inside the run")
    args = p.parse_args(argv)
    parts = _breakdown() if args.breakdown else None
    torch.set_num_threads(1)
    x, y = (rodflow.problems.mnist5k if args.data == "mnist5k" else rodflow.problems.digits)(
        n=args.n, seed=args.seed, dtype=torch.float32)
    y = rodflow.problems.one_hot(y, 10, dtype=torch.float32)

    def make() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
        torch.manual_seed(args.seed)
        net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 32), torch.nn.Tanh(), torch.nn.Linear(32, 10))
        return net, torch.optim.Adam(net.parameters(), lr=1e-2)

    plain, watched = make(), make()
    kw = {k: v for k, v in (("tol", args.tol), ("method", args.method)) if v is not None}
    monitor = EoSMonitor(*watched, probe=(x[: args.probe], y[: args.probe]), criterion=_mse, every=args.every,
                         sharpness_kwargs=kw)
    seconds = {"plain": 0.0, "monitored": 0.0}
    for _ in range(args.steps):
        for name, (net, opt) in (("plain", plain), ("monitored", watched)):
            t0 = time.perf_counter()
            opt.zero_grad()
            _mse(net(x), y).backward()
            opt.step()
            if name == "monitored":
                monitor.step()
            seconds[name] += time.perf_counter() - t0
    n_par = sum(q.numel() for q in plain[0].parameters())
    print(f"{args.data} MLP ({n_par:,} parameters, {len(x)} examples, full batch), Adam, {args.steps} steps, "
          f"monitor every {args.every} steps ({len(monitor.history['step'])} probes of {args.probe} examples, "
          f"{int(sum(monitor.history['n_hvp']))} HVPs), 1 thread, torch {torch.__version__}")
    rows = [(k, f"{1e3 * v / args.steps:.3f}", f"{v / seconds['plain']:.3f}") for k, v in seconds.items()]
    print(table(rows, ("training", "ms/step", "÷ plain")))
    print(f"target: monitored ÷ plain ≤ 1.10 at every=50; events: {monitor.events}")
    if parts is not None:
        print(table([(k, f"{1e3 * v:.1f}", f"{100 * v / seconds['plain']:.2f}") for k, v in parts.items()],
                    ("monitor part", "ms", "% of plain training")))


if __name__ == "__main__":
    main()
