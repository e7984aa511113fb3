"""Cost of the flows: gradient evaluations per modelled step at an accuracy, for each solver setting.

One run, single-threaded, printed table. Problem: digits MLP 64-32-10 (2410 parameters), GD
(lr 1.0) and Adam (lr 1e-2), each run into the edge of stability; the flows start 50 steps before
the onset of sustained EoS k*. For each flow (stable and rod, first and second order) and solver
setting: gradient evaluations per modelled step (a Hessian-vector product of the rod's linear
response counts as one), wall time ÷ the discrete run, and the EoS-window phase-free distance to
the iterates, with its deviation from the tight-tolerance solve of the same flow (dopri5 at
1e-8/1e-11; for the delay forms the fourth-order Adams rule at h = 1/64) — a cheap setting counts only
when it stays within 10 % of that. Flows: ``rod2`` (the default rod: the delay form),
``rod2lb`` (the look-behind ODE), ``stable2`` (look-behind), ``stable2d`` (delay), ``rod1``,
``stable1``, and ``central`` (GD and the RMSProps only: Euler substeps, its eigensolver's
Hessian-vector products and third derivatives ∇³L[u_i, u_j] counted beside the gradients; tight:
8 substeps with Lanczos at 1e-10). Usage::

    python benchmarks/flows.py [--steps 300] [--seed 0] [--optimizers gd,adam] [--flows rod2,rod2lb,stable2]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

import rodflow
from rodflow.compare import eos_onset

TIGHT = ("dopri5", {"rtol": 1e-8, "atol": 1e-11}, None)
SOLVERS = [("dopri5", {"rtol": 1e-5, "atol": 1e-8}, None),
           ("bosh3", {"rtol": 1e-4, "atol": 1e-7}, None),
           ("bosh3", {"rtol": 1e-3, "atol": 1e-6}, None),
           ("rk4", {}, {"step_size": 0.5}),
           ("rk4", {}, {"step_size": 1.0}),
           ("midpoint", {}, {"step_size": 1.0}),
           ("midpoint", {}, {"step_size": 0.5})]
#: The delay forms: the fourth-order Adams rule at h = 1/64 (the tight solve), then both rules at coarser steps.
DELAY_TIGHT = ("adams4", {}, {"step_size": 1 / 64})
DELAY_SOLVERS = [(m, {}, {"step_size": h}) for m in ("adams4", "trapezoid") for h in (1 / 2, 1 / 4, 1 / 8)]
FLOWS = {"stable1": ("stable", {"order": 1}), "stable2": ("stable", {"order": 2}),
         "stable2d": ("stable", {"order": 2, "form": "delay"}),
         "rod1": ("rod", {"order": 1}), "rod2": ("rod", {}), "rod2lb": ("rod", {"form": "look_behind"})}
#: The central flow: (substeps, eigensolver settings); the first is the tight solve, the second the default.
CENTRAL_TIGHT = (8, {"eig_method": "lanczos", "eig_tol": 1e-10})
CENTRAL_SOLVERS = [(4, {}), (4, {"eig_method": "lanczos", "eig_tol": 1e-10}), (2, {})]
HP = {"gd": {"lr": 1.0}, "adam": {"lr": 1e-2}, "nesterov": {"lr": 0.25, "momentum": 0.9},
      "scalar_rmsprop": {"lr": 0.05}, "rmsprop": {"lr": 3e-3}}


def _per_step(sol: rodflow.FlowSolution) -> tuple[str, str, str]:
    """Gradients, HVPs and third derivatives per modelled step."""
    n = len(sol) - 1
    return tuple(f"{sol.config.get(key, 0) / n:.1f}" for key in ("grad_evals", "hvp_evals", "third_evals"))  # type: ignore[return-value]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimizers", default="gd,adam")
    parser.add_argument("--flows", default="rod2,rod2lb,stable2,stable2d")
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore", rodflow.flows.base.TransientWarning)
    prob = rodflow.problems.digits_mlp((32,), n=256, seed=args.seed)
    rows = []
    for name in args.optimizers.split(","):
        spec = rodflow.optimizer(name, **HP[name])
        t0 = time.perf_counter()
        traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, args.steps, sharpness_every=10)
        t_disc = time.perf_counter() - t0
        k_star = eos_onset(traj.sharpness, spec.threshold)
        start = max(10 if spec.beta2 is not None else 1, (k_star if k_star is not None else args.steps // 2) - 50)
        window = (k_star if k_star is not None else start, args.steps + 1)
        for tag in args.flows.split(","):
            if tag == "central":
                if name not in rodflow.flows.central.CENTRAL_OPTIMIZERS:
                    continue
                dists: list[float] = []
                for substeps, eig in [CENTRAL_TIGHT, *CENTRAL_SOLVERS]:
                    cflow = rodflow.central_flow(spec, prob.loss_fn, k=3, substeps=substeps, **eig)
                    t0 = time.perf_counter()
                    csol = cflow.solve(traj, start=start)
                    dt = time.perf_counter() - t0
                    cdist = float(rodflow.compare(traj, csol, window=window).summary()["eos_mean_distance"])
                    dists.append(cdist)
                    rows.append((name, tag, f"euler/{substeps}", str(eig or "krylov 1e-5 (default)"), *_per_step(csol),
                                 f"{dt / t_disc:.1f}", f"{cdist:.4g}", f"{100 * abs(cdist - dists[0]) / dists[0]:.1f}%",
                                 f"k*={k_star} start={start}"))
                continue
            kind, kw = FLOWS[tag]
            make = rodflow.stable_flow if kind == "stable" else rodflow.rod_flow
            ref = None
            delay = make(spec, prob.loss_fn, **kw).form == "delay"
            for method, tol, options in [DELAY_TIGHT, *DELAY_SOLVERS] if delay else [TIGHT, *SOLVERS]:
                flow = make(spec, prob.loss_fn, **kw)
                t0 = time.perf_counter()
                try:
                    sol = flow.solve(traj, start=start, method=method, options=options, **tol)
                except rodflow.IntegrationError as err:
                    rows.append((name, tag, method, str(tol or options), "failed", "-", "-", "-", "-", "-",
                                 str(err)[:40]))
                    continue
                dt = time.perf_counter() - t0
                dist = rodflow.compare(traj, sol, window=window).summary()["eos_window_phase_free_distance"]
                if ref is None:
                    ref = dist
                dev = abs(dist - ref) / ref if ref else float("nan")
                rows.append((name, tag, method, str(tol or options), *_per_step(sol), f"{dt / t_disc:.1f}",
                             f"{dist:.4g}", f"{100 * dev:.1f}%", f"k*={k_star} start={start}"))
    head = ("optimizer", "flow", "method", "settings", "grads/step", "HVPs/step", "∇³/step", "time ÷ discrete",
            "EoS pf dist", "vs tight", "note")
    width = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, width)))
    print("-+-".join("-" * w for w in width))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, width)))


if __name__ == "__main__":
    main()
