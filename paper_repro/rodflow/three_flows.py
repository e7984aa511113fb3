"""Stable, rod and central flows side by side: GD, scalar RMSProp and RMSProp at the edge of stability.

For each optimizer: full-batch training of a tanh MLP with MSE on one-hot targets at a learning
rate that enters the edge of stability; the three flows are solved from the same start, ``lead``
steps before k* (the first step at which the iterates' preconditioned sharpness reaches the
threshold 2). Tabulated per flow: mean/max distance to the iterates before and during EoS, to the
iterates' three-point midpoints (the time average the central flow models), the loss each flow
predicts for the time-averaged loss (stable: L(W); rod: the mean of L(W ± Δ); central:
L(W) + ½⟨H, Σ⟩) against the iterates' loss averaged over the EoS window, the preconditioned
sharpness each flow carries, and the cost per modelled step (gradients, HVPs, third derivatives).

Writes ``paper_repro/rodflow/results/three_flows_<data>.md``, ``figures/three_flows_<data>_<optimizer>.png``
(distance to the midpoints, oscillation sizes, predicted time-averaged losses) and
``figures/three_flows_<data>_<optimizer>_tracking.png`` (:func:`rodflow.plot.tracking`). Usage::

    python paper_repro/rodflow/three_flows.py --quick                 # digits, short runs (minutes)
    python paper_repro/rodflow/three_flows.py --data digits --steps 200
    python paper_repro/rodflow/three_flows.py --data mnist5k --n 1000 --steps 200
    python paper_repro/rodflow/three_flows.py --data digits --depth 2  # a second architecture
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.figure import Figure

import rodflow
from rodflow import plot
from rodflow.compare import eos_onset
from rodflow.progress import track

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tracking import make_problem, markdown  # the sibling script's problem and table writer

ROOT = Path(__file__).resolve().parents[2]

#: Learning rates that enter EoS within the run (the package's table; the optimizers with a central flow).
EOS_LRS: dict[str, dict[str, Any]] = {k: v for k, v in rodflow.problems.hyperparameters("digits", "eos").items()
                                      if k in ("gd", "scalar_rmsprop", "rmsprop")}
KINDS = ("stable", "rod", "central")


def solve_flows(spec: rodflow.OptimizerSpec, prob: Any, traj: rodflow.Trajectory, start: int,
                args: argparse.Namespace) -> dict[str, Any]:
    """The three flows from ``start``; a flow that fails to integrate is recorded as such."""
    out: dict[str, Any] = {}
    for kind in KINDS:
        t0 = time.perf_counter()
        try:
            if kind == "central":
                flow = rodflow.central_flow(spec, prob.loss_fn, k=args.k, substeps=args.substeps)
                sol = flow.solve(traj, start=start)
            else:
                make = rodflow.stable_flow if kind == "stable" else rodflow.rod_flow
                sol = make(spec, prob.loss_fn).solve(traj, start=start, rtol=args.rtol, atol=args.atol,
                                                     sharpness_every=args.sharpness_every)
        except rodflow.IntegrationError as err:  # e.g. RMSProp's stable flow, too stiff beyond its edge
            out[kind] = f"failed: {str(err)[:80]} after {err.stats.nfe} field evaluations"
            continue
        out[kind] = sol
        out[f"seconds_{kind}"] = time.perf_counter() - t0
    return out


def averaged_loss(kind: str, sol: rodflow.FlowSolution) -> np.ndarray:
    """Each flow's prediction of the time-averaged loss, per step."""
    if kind == "central":
        assert sol.predicted_loss is not None
        return sol.predicted_loss.numpy()
    loss = sol.loss.numpy()
    if kind == "rod":  # consecutive steps sit at W + Δ and W − Δ
        return np.concatenate([0.5 * (loss[:-1] + loss[1:]), loss[-1:]])
    return loss


def carried_sharpness(kind: str, sol: rodflow.FlowSolution, window: tuple[int, int]) -> float:
    """Mean preconditioned sharpness λ_max(P⁻¹H) along the flow inside ``window``."""
    if kind == "central":
        steps = sol.t.numpy()
        values = np.asarray(sol.config["preconditioned_sharpness"])
    else:
        steps = sol.sharpness["preconditioned_step"].numpy()
        values = sol.sharpness["preconditioned_sharpness"].numpy()  # rod: at W + (−1)^k Δ
    mask = (steps >= window[0]) & (steps < window[1])
    return float(values[mask].mean()) if mask.any() else float("nan")


def figure(traj: rodflow.Trajectory, sols: dict[str, rodflow.FlowSolution], comps: dict[str, Any],
           k_star: int | None, title: str) -> Figure:
    """Distance to the midpoints, oscillation size, and the time-averaged loss, per flow."""
    fig = Figure(figsize=(7.5, 8.0), layout="constrained")
    ax_d, ax_a, ax_l = fig.subplots(3, 1, sharex=True)
    first = next(iter(comps.values()))
    for kind, comp in comps.items():
        ax_d.plot(comp.t.numpy(), comp.centre_distance.numpy(), lw=1.3, label=kind)
    ax_a.plot(first.t.numpy(), first.alternating_amplitude.numpy(), color="k", lw=0.9,
              label="iterates: ‖2θₖ − θₖ₋₁ − θₖ₊₁‖/4")
    if "rod" in sols:
        ax_a.plot(comps["rod"].t.numpy(), comps["rod"].flow_amplitude.numpy(), lw=1.3, label="rod: ‖Δ‖", color="C1")
    if "central" in sols:
        ax_a.plot(sols["central"].t.numpy(), sols["central"].config["oscillation"], lw=1.3, color="C2",
                  label="central: √tr Σ")
    steps = traj.t.numpy()
    loss = traj.loss.numpy()
    ax_l.plot(steps, loss, color="0.6", lw=0.8, label="iterates")
    w = 10
    if len(loss) > w:
        ax_l.plot(steps[w - 1:], np.convolve(loss, np.ones(w) / w, mode="valid"), color="k", lw=1.2,
                  label=f"iterates, {w}-step mean")
    for i, kind in enumerate(KINDS):
        if kind in sols:
            ax_l.plot(sols[kind].t.numpy(), averaged_loss(kind, sols[kind]), lw=1.2, color=f"C{i}",
                      label=f"{kind}: predicted time-averaged loss")
    ax_d.set_ylabel("‖W − midpoint‖")
    ax_a.set_ylabel("oscillation")
    ax_l.set_ylabel("loss")
    ax_l.set_xlabel("step")
    for ax in (ax_d, ax_a, ax_l):
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if k_star is not None:
            ax.axvline(k_star, color="tab:red", ls=":", lw=1.0)
        ax.legend(fontsize=7)
    ax_d.set_title(title)
    return fig


def rows_of(name: str, spec: rodflow.OptimizerSpec, traj: rodflow.Trajectory, k_star: int | None, start: int,
            flows: dict[str, Any]) -> list[dict[str, str]]:
    def f(x: float) -> str:
        return "–" if x != x else f"{x:.4f}"

    last = int(traj.t[-1])
    window = (k_star if k_star is not None else last + 1, last + 1)
    steps = traj.t.numpy()
    eos = (steps >= window[0]) & (steps >= start)
    gd_avg = float(traj.loss.numpy()[eos].mean()) if eos.any() else float("nan")
    iter_sharp = traj.sharpness["preconditioned_sharpness"].numpy()
    iter_steps = traj.sharpness["preconditioned_step"].numpy()
    in_win = iter_steps >= window[0]
    rows = [{"optimizer": name, "lr": f"{spec.lr:g}", "k*": str(k_star), "start": str(start), "flow": "iterates",
             "pre mean": "–", "pre max": "–", "EoS mean": "–", "EoS max": "–", "EoS midpoint mean": "–",
             "EoS loss ÷ iterates' mean − 1": "0", "λ(P⁻¹H) in EoS": f(float(iter_sharp[in_win].mean()))
             if in_win.any() else "–", "grads/step": "1", "HVPs/step": "0", "∇³/step": "0", "seconds": "–"}]
    for kind in KINDS:
        sol = flows.get(kind)
        if not isinstance(sol, rodflow.FlowSolution):
            rows.append({**{c: "–" for c in rows[0]}, "optimizer": name, "lr": f"{spec.lr:g}", "k*": str(k_star),
                         "start": str(start), "flow": f"{kind} ({sol})"})
            continue
        comp = rodflow.compare(traj, sol, window=window)
        s = comp.summary()
        t = comp.t.numpy()
        pre = t < window[0]
        pre_max = float(comp.distance[torch.from_numpy(pre)].max()) if pre.any() else float("nan")
        pred = averaged_loss(kind, sol)
        pmask = sol.t.numpy() >= window[0]
        loss_err = float(pred[pmask].mean() / gd_avg - 1) if pmask.any() else float("nan")
        n = len(sol) - 1
        cfg = sol.config
        rows.append({"optimizer": name, "lr": f"{spec.lr:g}", "k*": str(k_star), "start": str(start), "flow": kind,
                     "pre mean": f(s["pre_eos_mean_distance"]), "pre max": f(pre_max),
                     "EoS mean": f(s["eos_mean_distance"]), "EoS max": f(s["eos_max_distance"]),
                     "EoS midpoint mean": f(s.get("eos_mean_centre_distance", float("nan"))),
                     "EoS loss ÷ iterates' mean − 1": f"{loss_err:+.3f}" if loss_err == loss_err else "–",
                     "λ(P⁻¹H) in EoS": f(carried_sharpness(kind, sol, window)),
                     "grads/step": f"{cfg['grad_evals'] / n:.1f}", "HVPs/step": f"{cfg.get('hvp_evals', 0) / n:.1f}",
                     "∇³/step": f"{cfg.get('third_evals', 0) / n:.1f}", "seconds": f"{flows[f'seconds_{kind}']:.1f}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", choices=("digits", "mnist5k"), default="digits")
    p.add_argument("--n", type=int, default=None, help="examples (default: 256 digits, 1000 MNIST)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=1, help="hidden layers (2: the second architecture)")
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--optimizers", default=",".join(EOS_LRS))
    p.add_argument("--lr", action="append", default=[], help="override, e.g. --lr gd=0.5")
    p.add_argument("--lead", type=int, default=20, help="the flows start this many steps before k*")
    p.add_argument("--min-start", type=int, default=10,
                   help="the earliest start: RMSProp's first steps (λ_max(P⁻¹H) ≈ 200 at step 1) are a transient "
                        "that no first-order flow models")
    p.add_argument("--k", type=int, default=3, help="eigenvectors the central flow tracks")
    p.add_argument("--substeps", type=int, default=4, help="the central flow's Euler substeps per step")
    p.add_argument("--sharpness-every", type=int, default=5)
    p.add_argument("--rtol", type=float, default=1e-5)
    p.add_argument("--atol", type=float, default=1e-8)
    p.add_argument("--quick", action="store_true", help="60 steps, k = 2, two substeps")
    p.add_argument("--results", type=Path, default=ROOT / "paper_repro" / "rodflow" / "results")
    p.add_argument("--figures", type=Path, default=ROOT / "figures")
    p.add_argument("--name", default=None, help="file tag (default: the data, with _depthN for depth ≠ 1)")
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.k, args.substeps = min(args.steps, 60), 2, 2
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    n = args.n or (1000 if args.data == "mnist5k" else 256)
    prob = make_problem(args.data, n, args.width, args.seed, depth=args.depth)
    lrs = {k: dict(v) for k, v in EOS_LRS.items()}
    for item in args.lr:
        name, _, value = item.partition("=")
        lrs.setdefault(name, {})["lr"] = float(value)
    names = [s for s in args.optimizers.split(",") if s]
    tag = args.name or f"{args.data}" + (f"_depth{args.depth}" if args.depth != 1 else "")
    config = {"data": args.data, "n": n, "width": args.width, "depth": args.depth, "steps": args.steps,
              "seed": args.seed, "lead": args.lead, "min_start": args.min_start, "k": args.k, "substeps": args.substeps,
              "sharpness_every": args.sharpness_every, "rtol": args.rtol, "atol": args.atol,
              "hyperparameters": {k: lrs[k] for k in names}, "dim": prob.dim, "torch": torch.__version__}
    print(f"{tag}: {n} examples, MLP {prob.dim} parameters, {args.steps} steps", flush=True)
    args.figures.mkdir(parents=True, exist_ok=True)
    args.results.mkdir(parents=True, exist_ok=True)
    def write() -> Path:
        text = (f"# Stable, rod and central flows on {tag}\n\n"
                "All three flows start from the same state, `lead` steps before k* (the first recorded step with "
                "λ_max(P⁻¹H) ≥ 2 at the iterates). Distances ‖θ_k − θ̂_k‖ to the iterates before (pre) and during "
                "(EoS) the edge; *midpoint*: distance of the flow's centre W to the iterates' three-point midpoints "
                "(θ_{k−1} + 2θ_k + θ_{k+1})/4, the time average that the central flow models. *EoS loss*: the flow's "
                "prediction of the time-averaged loss (stable: L(W); rod: mean of L(W ± Δ); central: L(W) + ½⟨H, Σ⟩), "
                "averaged over the EoS window, relative to the iterates' mean loss there. λ(P⁻¹H): mean preconditioned "
                "sharpness along each flow (central: at W, from its own eigensolves). Cost per modelled step: "
                "gradients, Hessian-vector products (the central flow's eigensolver) and third derivatives "
                "∇³L[u_i, u_j].\n\n"
                f"{markdown(rows)}\n\nConfig: `{json.dumps(config)}`\n\n"
                f"Command: `python paper_repro/rodflow/three_flows.py {' '.join(argv if argv is not None else sys.argv[1:])}`\n")
        out = args.results / f"three_flows_{tag}.md"
        out.write_text(text)
        return out

    rows: list[dict[str, str]] = []
    for name in track(names, "three flows sweep"):
        spec = rodflow.optimizer(name, **lrs[name])
        traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, args.steps, sharpness_every=args.sharpness_every)
        k_star = eos_onset(traj.sharpness, spec.threshold)
        start = max(args.min_start, (k_star if k_star is not None else 0) - args.lead)
        flows = solve_flows(spec, prob, traj, start, args)
        for r in rows_of(name, spec, traj, k_star, start, flows):
            rows.append(r)
            print(json.dumps(r, ensure_ascii=False), flush=True)
        sols = {k: v for k, v in flows.items() if isinstance(v, rodflow.FlowSolution)}
        window = (k_star, int(traj.t[-1]) + 1) if k_star is not None else None
        comps = {k: rodflow.compare(traj, v, window=window) for k, v in sols.items()}
        if comps:
            title = f"{name} (lr {spec.lr:g}) on {tag}, flows from step {start}"
            figure(traj, sols, comps, k_star, title).savefig(args.figures / f"three_flows_{tag}_{name}.png", dpi=110)
            fig = plot.tracking(traj, comps, solutions={k: v for k, v in sols.items() if k == "central"}, title=title)
            fig.savefig(args.figures / f"three_flows_{tag}_{name}_tracking.png", dpi=110)
        write()  # the table so far: a long run keeps what it finished
    print(f"wrote {write()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
