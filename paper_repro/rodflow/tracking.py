"""Rod flow vs stable flow tracking the iterates of eight optimizers through the edge of stability.

For each optimizer: full-batch training of a tanh MLP with MSE on one-hot targets (MNIST 5k
subset by default, scikit-learn's digits with ``--data digits``; the small CNN of the ``cnn-fashion``
task on Fashion-MNIST with ``--data fashion``) at a learning rate that enters
the edge of stability; the stable and the rod flow — both with the defaults of
:func:`rodflow.rod_flow` and the stable flow of the same (second) order — are solved from the
same start; their distances to the iterates (parity and phase-free, :mod:`rodflow.compare`)
before and during EoS (from k*, the onset of sustained EoS) are tabulated. Adaptive methods start
no earlier than step 10 (their first-step transient; ``rodflow.flows.base.TRANSIENT_STEPS``).

Writes ``paper_repro/rodflow/results/tracking_<data>.md`` (table + config) and
``figures/tracking_<data>_<optimizer>.png``. Usage::

    python paper_repro/rodflow/tracking.py                 # MNIST-5k subset, CPU scale
    python paper_repro/rodflow/tracking.py --data digits --steps 300
    python paper_repro/rodflow/tracking.py --lr adam=0.005 --optimizers adam,gd
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import torch

import rodflow
from rodflow import plot
from rodflow.compare import eos_onset
from rodflow.progress import track

ROOT = Path(__file__).resolve().parents[2]

#: Learning rates that enter EoS within the run: the package's table (rodflow.problems.hyperparameters)
EOS_LRS: dict[str, dict[str, dict[str, Any]]] = {data: rodflow.problems.hyperparameters(data, "eos")
                                                 for data in ("digits", "mnist5k", "fashion")}
#: Full-batch size per data set when not given (fashion: the CNN costs ~12 ms per gradient at 128 examples
#: on one thread, so that one case of the fidelity sweep stays within minutes)
DEFAULT_N = {"digits": 256, "mnist5k": 1000, "fashion": 128}

DEFAULT_OPTIMIZERS = ("heavy_ball", "nesterov", "scalar_rmsprop", "rmsprop", "scalar_adam", "adam", "scalar_nadam",
                      "nadam")


def make_problem(data: str, n: int, width: int, seed: int, depth: int = 1, loss: str | None = None) -> rodflow.problems.Problem:
    """Full-batch problem on ``n`` examples: for ``digits``/``mnist5k`` a tanh MLP with ``depth`` hidden layers of
    ``width`` units, for ``fashion`` the small tanh CNN of the ``cnn-fashion`` task (``width``, ``depth`` unused).

    ``loss`` (default ``"mse"``: ½‖f(x) − onehot(y)‖² averaged over examples) or ``"cross_entropy"``.
    """
    loss = "mse" if loss is None else loss
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    if data == "fashion":
        x, y = rodflow.problems.fashion_mnist(n=n, seed=seed, dtype=torch.float64)
        net = rodflow.problems.cnn(seed=seed)
    elif data in ("digits", "mnist5k"):
        x, y = (rodflow.problems.digits if data == "digits" else rodflow.problems.mnist5k)(n=n, seed=seed)
        net = rodflow.problems.mlp([x.shape[1], *([width] * depth), 10], activation="tanh", seed=seed)
    else:
        raise ValueError(f"data must be 'digits', 'mnist5k' or 'fashion', got {data!r}")
    targets = rodflow.problems.one_hot(y, 10) if loss == "mse" else y
    return rodflow.problems.module_problem(net, x, targets, loss=loss)


def run_one(name: str, hp: dict[str, Any], prob: Any, steps: int, sharpness_every: int, rtol: float,
            atol: float, onset: float = 1.0, lead: int = 50, from_zero: bool = True) -> dict[str, Any]:
    """Iterates, then each flow from step 0 and from ``lead`` steps before the EoS onset k*."""
    spec = rodflow.optimizer(name, **hp)
    t0 = time.perf_counter()
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps, sharpness_every=sharpness_every)
    out: dict[str, Any] = {"name": name, "spec": spec, "traj": traj, "seconds_discrete": time.perf_counter() - t0}
    k_star = eos_onset(traj.sharpness, onset * spec.threshold)
    out["k_star"] = k_star
    first = rodflow.flows.base.TRANSIENT_STEPS if spec.beta2 is not None else 0
    starts = {"0": first} if from_zero or k_star is None or k_star - lead <= first else {}
    if k_star is not None and k_star - lead > first:
        starts["k*-lead"] = k_star - lead
    flows = {"stable": lambda: rodflow.stable_flow(spec, prob.loss_fn, order=2),
             "rod": lambda: rodflow.rod_flow(spec, prob.loss_fn)}
    for tag, start in starts.items():
        for kind, make in flows.items():
            t0 = time.perf_counter()
            flow = make()
            # an ODE solve is capped at 40 steps per modelled step (a stable flow that sharpens without bound,
            # e.g. RMSProp's, would otherwise shrink its steps for hours); the delay rules take fixed steps
            how = {} if flow.form == "delay" else {"rtol": rtol, "atol": atol,
                                                   "options": {"max_num_steps": 40 * (steps - start)}}
            try:
                sol = flow.solve(traj, start=start, **how)
            except rodflow.IntegrationError as err:  # e.g. a stable flow too stiff beyond its edge
                out[f"failed_{kind}_{tag}"] = f"{err} after {err.stats.nfe} field evaluations"
                if kind != "stable":
                    continue
                # the second-order stable flow in its delay form (fixed steps, never too stiff; docs/flows.md §6b)
                sol = rodflow.stable_flow(spec, prob.loss_fn, order=2, form="delay").solve(traj, start=start)
                out[f"fallback_{kind}_{tag}"] = "delay form"
            out[f"seconds_{kind}_{tag}"] = time.perf_counter() - t0
            out[f"{kind}_{tag}"] = sol
            out[f"cmp_{kind}_{tag}"] = rodflow.compare(traj, sol, threshold=onset * spec.threshold)
    out["starts"] = starts
    return out


def rows_of(res: dict[str, Any]) -> list[dict[str, str]]:
    def f(x: Any) -> str:
        return "–" if x is None or x != x else f"{x:.4f}"

    def ratio(a: Any, b: Any) -> str:
        return "–" if a is None or b is None or a != a or b != b or b == 0 else f"{a / b:.2f}"

    rows = []
    nan = float("nan")
    failed = {"pre_eos_mean_distance": nan, "eos_mean_distance": nan, "eos_max_distance": nan,
              "eos_window_phase_free_distance": nan}
    for tag, start in res["starts"].items():
        s = res[f"cmp_stable_{tag}"].summary() if f"cmp_stable_{tag}" in res else failed
        r = res[f"cmp_rod_{tag}"].summary() if f"cmp_rod_{tag}" in res else failed
        rod = res.get(f"rod_{tag}")
        note = "; ".join(f"{kind} flow failed" + (f" (its {res[f'fallback_{kind}_{tag}']} instead)"
                                                   if f"fallback_{kind}_{tag}" in res else "")
                         for kind in ("stable", "rod") if f"failed_{kind}_{tag}" in res)
        rows.append({"optimizer": res["name"], "lr": f"{res['spec'].lr:g}", "k*": str(res["k_star"]),
                     "start": str(start),
                     "stable pre": f(s["pre_eos_mean_distance"]), "rod pre": f(r["pre_eos_mean_distance"]),
                     "stable EoS mean": f(s["eos_mean_distance"]), "rod EoS mean": f(r["eos_mean_distance"]),
                     "stable EoS max": f(s["eos_max_distance"]), "rod EoS max": f(r["eos_max_distance"]),
                     "EoS mean ratio stable/rod": ratio(s["eos_mean_distance"], r["eos_mean_distance"]),
                     "EoS phase-free ratio": ratio(s["eos_window_phase_free_distance"],
                                                   r["eos_window_phase_free_distance"]),
                     "grads/step rod": "–" if rod is None else f"{rod.config['grad_evals'] / (len(rod) - 1):.1f}",
                     "note": note or "–"})
    return rows


def markdown(rows: list[dict[str, str]]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    lines += ["| " + " | ".join(r[c] for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=tuple(DEFAULT_N), default="mnist5k")
    p.add_argument("--n", type=int, default=None, help=f"examples (default: {DEFAULT_N})")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizers", default=",".join(DEFAULT_OPTIMIZERS))
    p.add_argument("--lr", action="append", default=[], help="override, e.g. --lr adam=0.005")
    p.add_argument("--sharpness-every", type=int, default=10)
    p.add_argument("--onset", type=float, default=1.0,
                   help="k* = onset of sustained EoS at onset × threshold (rodflow.compare.eos_onset)")
    p.add_argument("--lead", type=int, default=50, help="second start: this many steps before k*")
    p.add_argument("--skip-zero-start", action="store_true",
                   help="only start the flows lead steps before k* (when the iterates reach it)")
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-8)
    p.add_argument("--results", type=Path, default=ROOT / "paper_repro" / "rodflow" / "results")
    p.add_argument("--figures", type=Path, default=ROOT / "figures")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    n = args.n or DEFAULT_N[args.data]
    prob = make_problem(args.data, n, args.width, args.seed)
    lrs = {k: dict(v) for k, v in EOS_LRS[args.data].items()}
    for item in args.lr:
        name, _, value = item.partition("=")
        lrs.setdefault(name, {})["lr"] = float(value)
    names = [s for s in args.optimizers.split(",") if s]
    if missing := [s for s in names if s not in lrs]:
        print(f"{args.data}: no edge-of-stability rate for {', '.join(missing)} (give one with --lr); skipped",
              flush=True)
        names = [s for s in names if s in lrs]
    config = {"data": args.data, "n": n, "width": args.width, "steps": args.steps, "seed": args.seed,
              "sharpness_every": args.sharpness_every, "onset": args.onset, "lead": args.lead, "skip_zero_start": args.skip_zero_start, "rtol": args.rtol, "atol": args.atol,
              "hyperparameters": {k: lrs[k] for k in names}, "dim": prob.dim, "torch": torch.__version__}
    print(f"{args.data}: {n} examples, {prob.dim} parameters, {args.steps} steps", flush=True)
    rows = []
    args.figures.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    for name in track(names, f"tracking sweep ({args.data})"):
        res = run_one(name, lrs[name], prob, args.steps, args.sharpness_every, args.rtol, args.atol, args.onset,
                      args.lead, not args.skip_zero_start)
        for r in rows_of(res):
            rows.append(r)
            print(json.dumps(r), flush=True)
        for key, msg in res.items():
            if key.startswith("failed_"):
                print(f"{name}: {key[7:]}: {msg}", flush=True)
        tag = "k*-lead" if "k*-lead" in res["starts"] else "0"
        comps = {kind: res[f"cmp_{kind}_{tag}"] for kind in ("stable", "rod") if f"cmp_{kind}_{tag}" in res}
        if not comps:
            continue
        fig = plot.tracking(res["traj"], comps,
                            title=f"{name} (lr {res['spec'].lr:g}) on {args.data}, flows from step {res['starts'][tag]}")
        fig.savefig(args.figures / f"tracking_{args.data}_{name}.png", dpi=110)
    text = (f"# Rod flow vs stable flow on {args.data}\n\n"
            "Mean/max distance ‖θ_k − θ̂_k‖ between the iterates and each flow's prediction (the default rod flow "
            "and the second-order stable flow), before the edge of stability (steps < k*) and during it (steps ≥ k*); "
            "k* is the onset of sustained EoS at `onset` × the optimizer's threshold (– : never reached, the whole "
            "run counts as pre-EoS). Each optimizer has two rows: both flows started from step 0 (step 10 for the "
            "adaptive methods), and both started `lead` steps before k* (which isolates the edge of stability from the "
            "pre-EoS drift). Ratio > 1: the rod flow tracks better; the phase-free ratio does not charge the sign of an "
            "oscillation grown from rounding noise (`rodflow.compare`).\n\n"
            f"{markdown(rows)}\n\nConfig: `{json.dumps(config)}`\n\nCommand: `python {' '.join(sys.argv)}`\n")
    out = args.results / f"tracking_{args.data}.md"
    out.write_text(text)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
