"""How far the iterates themselves are predictable: the map restarted from a perturbed state.

A flow starts from the iterates' state at step ``start`` with some small error and is then compared
with the iterates over the EoS window. Where the iterates amplify small errors enormously (a
chaotic stretch, or a catapult whose timing hangs on rounding) no deterministic model can stay
close, however exact. This script measures that floor for the cases of a fidelity sweep: it
re-runs the *discrete map itself* from ``θ_start + δ‖θ_start‖ξ`` (ξ a random unit vector; m, v, t
unchanged) and reports, for each δ, the EoS-window mean of

* ``‖θ'_k − θ_k‖`` (what a flow's parity distance is compared with), and
* ``‖c'_k − c_k‖`` with ``c_k = (θ_{k−1} + 2θ_k + θ_{k+1})/4`` (phase-free: the centres),

beside the flows' EoS distances from the sweep's results, and the amplification ``A`` = EoS mean
distance ÷ initial perturbation at the δ nearest 1e-12 (the linear regime). A rod whose EoS
distance is near the perturbed map's at δ ≈ its own start-up error is at the floor: a better flow
cannot be closer in that window. The smallest δ, 1e-15, is a few units of float64 rounding: where
the iterates' oscillation grows from rounding noise, a larger δ seeds it earlier than the iterates'
own (the rod's roundoff floor seeds it at the rounding level), so there the perturbed map can be
farther from the iterates than a flow; δ = 1e-15 is the floor's reading. Usage::

    python paper_repro/rodflow/sensitivity.py results/fidelity_mnist5k_seed0.jsonl [more.jsonl ...]
        [--deltas 1e-15,1e-12,1e-9,1e-6] [--tag mnist5k_seed0]

Writes ``results/sensitivity_<tag>.md`` (and ``.jsonl``, one line per case as it finishes).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import rodflow  # noqa: E402
from rodflow.optimizers import OptimizerSpec  # noqa: E402
from rodflow.phase import PhaseState  # noqa: E402

DELTAS = (1e-15, 1e-12, 1e-9, 1e-6)


def _centres(theta: torch.Tensor) -> torch.Tensor:
    """Three-point centres ``(θ_{k−1} + 2θ_k + θ_{k+1})/4`` of rows 1 … n−2."""
    return (theta[:-2] + 2 * theta[1:-1] + theta[2:]) / 4


def perturbed_run(spec: OptimizerSpec, grad_fn: Any, state: PhaseState, steps: int, delta: float,
                  seed: int = 1) -> torch.Tensor:
    """θ of ``steps`` map steps from ``state`` with θ moved by ``delta·‖θ‖`` along a random unit vector
    (``[steps + 1, d]``; row 0 is the perturbed start)."""
    if not delta >= 0:
        raise ValueError(f"delta must be non-negative, got {delta!r}")
    xi = torch.randn(state.theta.shape, generator=torch.Generator().manual_seed(seed), dtype=state.theta.dtype)
    s = dataclasses.replace(state, theta=state.theta + delta * state.theta.norm() * xi / xi.norm())
    rows = [s.theta]
    for _ in range(steps):
        s = spec.step(s, grad_fn)
        rows.append(s.theta)
    return torch.stack(rows)


def sensitivity(theta: torch.Tensor, perturbed: torch.Tensor, window_start: int) -> dict[str, float]:
    """EoS-window (rows ≥ ``window_start``) means of ``‖θ' − θ‖`` and of the centres' distance, and the
    initial perturbation ``‖θ'_0 − θ_0‖`` (``theta`` and ``perturbed`` share their rows)."""
    if theta.shape != perturbed.shape:
        raise ValueError(f"perturbed must have the shape of theta {tuple(theta.shape)}, got {tuple(perturbed.shape)}")
    d = (perturbed - theta).norm(dim=1)
    c = (_centres(perturbed) - _centres(theta)).norm(dim=1)
    w = slice(max(window_start, 0), None)
    cw = slice(max(window_start - 1, 0), None)  # centre row j is step j + 1
    return {"initial": float(d[0]), "eos_mean": float(d[w].mean()), "eos_centre_mean": float(c[cw].mean())}


def run_case(row: dict[str, Any], deltas: tuple[float, ...]) -> dict[str, Any]:
    """One case of a fidelity results file: its iterates again, then the perturbed restarts."""
    from paper_repro.rodflow.tracking import make_problem

    torch.set_num_threads(1)
    prob = make_problem(row["data"], row["n"], row["width"], row["seed"])
    spec = rodflow.optimizer(row["optimizer"], **row["hyperparameters"])
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, row["steps"], progress=False)
    start, k_star = row["start"], row["k_star"]
    window = (k_star if k_star is not None else row["steps"] // 2) - start
    grad_fn = rodflow.gradient(prob.loss_fn)
    theta = traj.theta[start:]
    out = {k: row[k] for k in ("data", "seed", "optimizer", "hyperparameters", "k_star", "start", "steps")}
    out["deltas"] = {}
    for delta in deltas:
        pert = perturbed_run(spec, grad_fn, traj.state(start), row["steps"] - start, delta)
        out["deltas"][f"{delta:g}"] = sensitivity(theta, pert, window)
    v = row["variants"]
    out["flows"] = {tag: {"eos_pf": v[tag].get("eos_window_phase_free_distance"),
                          "eos": v[tag].get("eos_mean_distance")}
                    for tag in v if "failed" not in v[tag]}
    out["rod2_pre"] = v.get("rod2", {}).get("pre_eos_mean_phase_free_distance")
    return out


def _f(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.3g}"


def report(rows: list[dict[str, Any]], deltas: tuple[float, ...], command: str) -> str:
    ds = [f"{d:g}" for d in deltas]
    # the amplification in the linear regime: δ well above rounding (which blurs the smallest) and small
    lin = ds[min(range(len(deltas)), key=lambda i: abs(math.log10(deltas[i]) + 12))]
    head = ["case", "k*", "start", *[f"map δ={d} EoS (centres)" for d in ds], f"A (δ={lin})",
            "best stable2 EoS pf", "rod2 EoS pf", "rod2 pre-EoS"]
    lines = ["# Sensitivity of the iterates: the map restarted from a perturbed start", "",
             "EoS-window mean distance between the iterates and the same map restarted at the flows' start from "
             "θ + δ‖θ‖ξ (in brackets: between their three-point centres, the phase-free reading), beside the "
             "flows' EoS-window phase-free distances from the sweep. A: amplification, EoS mean ÷ initial "
             "perturbation at the δ nearest 1e-12. See `paper_repro/rodflow/sensitivity.py`.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        fl = r["flows"]
        stable = [fl[t]["eos_pf"] for t in ("stable2", "stable2d") if t in fl and fl[t]["eos_pf"] is not None]
        first = r["deltas"][lin]
        cells = [f"{r['data']}/{r['seed']}/{r['optimizer']}", str(r["k_star"]), str(r["start"]),
                 *[f"{_f(r['deltas'][d]['eos_mean'])} ({_f(r['deltas'][d]['eos_centre_mean'])})" for d in ds],
                 _f(first["eos_mean"] / first["initial"]) if first["initial"] > 0 else "–",
                 _f(min(stable)) if stable else "–", _f(fl.get("rod2", {}).get("eos_pf")),
                 _f(r.get("rod2_pre"))]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path, help="fidelity_*.jsonl files (their cases are re-run)")
    p.add_argument("--deltas", default=",".join(f"{d:g}" for d in DELTAS))
    p.add_argument("--optimizers", default=None, help="comma-separated subset (default: every case)")
    p.add_argument("--tag", default="cases")
    p.add_argument("--out", type=Path, default=ROOT / "paper_repro" / "rodflow" / "results")
    args = p.parse_args(argv)
    deltas = tuple(float(d) for d in args.deltas.split(",") if d)
    keep = None if args.optimizers is None else set(args.optimizers.split(","))
    rows = []
    for path in args.results:
        if not path.exists():
            raise SystemExit(f"results: no such file {path}")
        for line in path.read_text().splitlines():
            r = json.loads(line)
            if keep is None or r["optimizer"] in keep:
                rows.append(r)
    args.out.mkdir(parents=True, exist_ok=True)
    jsonl = args.out / f"sensitivity_{args.tag}.jsonl"
    jsonl.unlink(missing_ok=True)
    done = []
    command = "python paper_repro/rodflow/sensitivity.py " + " ".join(sys.argv[1:] if argv is None else argv)
    for r in rows:
        out = run_case(r, deltas)
        done.append(out)
        with jsonl.open("a") as fh:
            fh.write(json.dumps(out) + "\n")
        print(f"{out['data']}/{out['seed']}/{out['optimizer']}: "
              + ", ".join(f"δ={d}: {v['eos_mean']:.3g}" for d, v in out["deltas"].items()), flush=True)
        (args.out / f"sensitivity_{args.tag}.md").write_text(report(done, deltas, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
