"""Cost of the three flow families per modelled step: gradients, HVPs, third derivatives, wall time.

One run, single-threaded, printed tables. Problem: digits MLP 64-32-10 (256 examples, 2410
parameters). For GD (lr 1.0), scalar RMSProp (lr 0.05) and RMSProp (lr 3e-3) the stable and rod
flows (dopri5, rtol 1e-5) and the central flow (Euler, 4 substeps, 3 tracked eigenvectors) are
solved from the same step at the edge of stability. A second table measures the third
derivative ∇³L[u, v] by autograd (the gradient of uᵀHv, as the central flow does) against central
finite differences of HVPs, ``(H(θ + εv) − H(θ − εv))u / 2ε``: time per pair and relative error
against the autograd value.

Measured here (20 steps, one thread on a shared CPU): stable 5.8–8.8 gradients per step, rod
24.8–39.8, central 4 gradients + 214 (scalar RMSProp) / 249 (GD) / 1652 (RMSProp, whose edge holds
more eigenvalues than the three tracked) HVPs + 9–24 third derivatives per step, 300–1350× the
time of a discrete step against 8–17× (stable) and 38–50× (rod). Third derivatives: autograd
6.0 ms per pair, finite differences of HVPs 4.7–6.8 ms with relative errors 5e-11 (ε = 1e-4) to
5e-9 (ε = 1e-3): no cheaper, and inexact, so the central flow uses autograd (which also shares
each Hu_j among the pairs). Usage::

    python benchmarks/flows_central.py [--steps 40] [--seed 0]
"""

from __future__ import annotations

import argparse
import time

import torch

import rodflow
from rodflow.flows.central import third_derivatives

CASES = (("gd", {"lr": 1.0}, 30), ("scalar_rmsprop", {"lr": 0.05}, 100), ("rmsprop", {"lr": 3e-3}, 10))


def table(head: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    width = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, width)))
    print("-+-".join("-" * w for w in width))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, width)))


def flow_costs(prob: rodflow.problems.Problem, steps: int) -> None:
    rows = []
    for name, hp, start in CASES:
        spec = rodflow.optimizer(name, **hp)
        t0 = time.perf_counter()
        traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, start + steps)
        t_step = (time.perf_counter() - t0) / (start + steps)
        for kind in ("stable", "rod", "central"):
            t0 = time.perf_counter()
            try:
                if kind == "central":
                    sol = rodflow.central_flow(spec, prob.loss_fn, k=3, substeps=4).solve(traj, start=start)
                else:
                    make = rodflow.stable_flow if kind == "stable" else rodflow.rod_flow
                    sol = make(spec, prob.loss_fn).solve(traj, start=start, rtol=1e-5, atol=1e-8)
            except rodflow.IntegrationError as err:
                rows.append((name, kind, "failed", "-", "-", "-", str(err)[:40]))
                continue
            dt = (time.perf_counter() - t0) / steps
            cfg = sol.config
            rows.append((name, kind, f"{cfg['grad_evals'] / steps:.1f}", f"{cfg.get('hvp_evals', 0) / steps:.1f}",
                         f"{cfg.get('third_evals', 0) / steps:.1f}", f"{dt:.3f}", f"{dt / t_step:.0f}"))
    table(("optimizer", "flow", "grads/step", "HVPs/step", "∇³/step", "s/step", "÷ discrete step"), rows)


def third_derivative_costs(prob: rodflow.problems.Problem, repeats: int = 5) -> None:
    gen = torch.Generator().manual_seed(0)
    theta = prob.theta0 + 0.05 * torch.randn(prob.theta0.shape, generator=gen, dtype=prob.theta0.dtype)
    u = torch.randn(2, theta.numel(), generator=gen, dtype=theta.dtype)
    u = u / u.norm(dim=1, keepdim=True)
    t0 = time.perf_counter()
    for _ in range(repeats):
        _, _, third = third_derivatives(prob.loss_fn, theta, u, [(0, 1)])
    t_auto = (time.perf_counter() - t0) / repeats
    rows = [("autograd (∇ of uᵀHv)", f"{t_auto * 1e3:.1f}", "0 (reference)")]
    for eps in (1e-3, 1e-4, 1e-5, 1e-6):
        t0 = time.perf_counter()
        for _ in range(repeats):
            fd = (rodflow.hvp(prob.loss_fn, theta + eps * u[1], u[0])
                  - rodflow.hvp(prob.loss_fn, theta - eps * u[1], u[0])) / (2 * eps)
        t_fd = (time.perf_counter() - t0) / repeats
        err = float((fd - third[0]).norm() / third[0].norm())
        rows.append((f"finite difference of HVPs, ε = {eps:g}", f"{t_fd * 1e3:.1f}", f"{err:.1e}"))
    table(("third derivative ∇³L[u, v]", "ms per pair", "relative error"), rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    prob = rodflow.problems.digits_mlp((32,), n=256, seed=args.seed)
    flow_costs(prob, args.steps)
    print()
    third_derivative_costs(prob)


if __name__ == "__main__":
    main()
