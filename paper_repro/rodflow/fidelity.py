"""Fidelity sweep: stable and rod flows of the first and second order against the iterates.

For each case (data set × seed × optimizer): full-batch training of a tanh MLP with MSE on one-hot
targets at a learning rate that enters the edge of stability (the table of
``paper_repro/rodflow/tracking.py``), the iterates' sharpness every ``--sharpness-every`` steps,
the onset k* of *sustained* EoS (:func:`rodflow.compare.eos_onset`), and each flow variant solved
from ``--lead`` steps before k* (never before step 10 for the adaptive methods, whose first steps
no flow follows). Per variant: pre-EoS and EoS mean/max distance, parity and phase-free
(:mod:`rodflow.compare`), centre-to-midpoint distance, amplitude error, onset of the oscillation
against the iterates', gradient evaluations per modelled step.

Variants: ``stable1``/``stable2``/``stable2d`` (the stable flow: order 1, the look-behind ODE of
order 2, the delay form of order 2), ``rod1`` (first-order rod with the seven-point fit and the
roundoff floor), ``rod2`` (the default rod: the delay form, seven-point fit, roundoff floor, the
fourth-order Adams rule at h = ¼), ``rod2_fine`` (the same at h = 1/16: how far the default step
is from a converged solve; ``rod2_a4_h2`` at h = ½; ``rod2_trap_*``: the trapezoidal rule), ``rod2_lookbehind`` (the look-behind ODE with its truncation limiter, the
previous default) and ``rod1_legacy`` (first order, three-point fit, floor 10⁻¹⁰: the first
release's rod), ``rod3``/``stable3`` (order 3: the three-lag delay form; ``rod3_fine`` at h = 1/16). The second-order ratios divide the *closer* of the two second-order stable flows
by the rod. ``--method/--rtol/--atol`` apply to the ODE variants; the delay forms use the
default rule and step of ``rodflow.flows.base`` or those in :data:`DELAY_RULES` and :data:`STEPS`.

Each finished case is appended to ``results/fidelity_<tag>.jsonl`` at once (an interrupted sweep
keeps what it computed and ``--resume`` skips it); the markdown table and figure are rebuilt from
that file. Usage::

    python paper_repro/rodflow/fidelity.py --data digits --seeds 0        # one data set, one seed
    python paper_repro/rodflow/fidelity.py --data digits,mnist5k --seeds 0,1,2 --jobs 2
    python paper_repro/rodflow/fidelity.py --tiny                          # seconds: a smoke run

Parallelism is joblib's (``--backend loky`` by default, one process per case). To run the sweep
on a cluster use joblib's own backends, nothing else changes: Dask —
``pip install dask distributed``, start a scheduler and workers, then
``--backend dask --scheduler tcp://HOST:8786`` (the script creates ``dask.distributed.Client``);
Ray — ``pip install ray``, ``ray start --head`` (and workers), then ``--backend ray``
(the script calls ``ray.util.joblib.register_ray()``). Every worker needs rodflow importable.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "stable1": ("stable", {"order": 1}),
    "stable2": ("stable", {"order": 2}),
    "rod1": ("rod", {"order": 1, "init": "7pt", "floor": "roundoff"}),
    "rod2": ("rod", {}),  # the defaults (the delay form)
    "rod2_fine": ("rod", {}),  # the defaults at a step of 1/16 (STEPS)
    "rod2_trap_h2": ("rod", {}),  # the trapezoidal rule at a step of 1/2 (STEPS, DELAY_RULES)
    "rod2_trap_h4": ("rod", {}),  # the trapezoidal rule at a step of 1/4
    "rod2_trap_fine": ("rod", {}),  # the trapezoidal rule at a step of 1/16
    "rod2_a4_h2": ("rod", {}),  # the fourth-order Adams rule (the default) at a step of 1/2
    "stable2d": ("stable", {"order": 2, "form": "delay"}),
    "rod3": ("rod", {"order": 3}),  # the three-lag delay form (third-order modified equation)
    "rod2a3": ("rod", {"alternating_order": 3}),  # the centre at order 2, (Δ, μ) by the three-lag kernel
    "rod3a2": ("rod", {"order": 3, "alternating_order": 2}),  # the centre at order 3, (Δ, μ) by one lag
    "stable3": ("stable", {"order": 3, "form": "delay"}),
    "rod3_fine": ("rod", {"order": 3}),  # the same at a step of 1/16 (STEPS)
    "rod2_lookbehind": ("rod", {"form": "look_behind"}),  # the previous default (limiter "truncate")
    "rod1_legacy": ("rod", {"order": 1, "init": "3pt", "floor": 1e-10}),
    # ablations of the default (for choosing it; not in the default list)
    "rod2_3pt": ("rod", {"init": "3pt"}),
    "rod2_floor1e-10": ("rod", {"floor": 1e-10}),
    # the look-behind with its correction truncated where it outgrows the first-order field
    "stable2t": ("stable", {"order": 2, "limiter": "truncate"}),
    "rod2t": ("rod", {"limiter": "truncate"}),
    "rod2r": ("rod", {"limiter": "truncate_relative"}),
    "rod2_nolimiter": ("rod", {"limiter": None}),
}
DEFAULT_VARIANTS = ("stable1", "stable2", "stable2d", "rod1", "rod2", "rod2_fine", "rod2_lookbehind")
#: Steps of the delay forms, where not the default (``rodflow.flows.base.DELAY_STEP``).
STEPS = {"rod2_fine": 1 / 16, "rod3_fine": 1 / 16, "rod2_trap_h2": 1 / 2, "rod2_trap_h4": 1 / 4, "rod2_trap_fine": 1 / 16,
         "rod2_a4_h2": 1 / 2}
#: Rules of the delay forms, where not the default (``rodflow.flows.base.DELAY_METHOD``).
DELAY_RULES = {"rod2_trap_h2": "trapezoid", "rod2_trap_h4": "trapezoid", "rod2_trap_fine": "trapezoid"}
OPTIMIZERS = ("gd", "heavy_ball", "nesterov", "scalar_rmsprop", "rmsprop", "scalar_adam", "adam", "scalar_nadam",
              "nadam")
#: Steps of the adaptive methods' start-up transient that no flow starts in.
FIRST_START = 10


def _one_thread() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def command_line(script: str, argv: list[str] | None) -> str:
    """``python SCRIPT ARGS`` for a results file: the arguments (``sys.argv[1:]`` by default) without ``--results``
    and its value, which name this machine's output folder."""
    given = list(argv if argv is not None else sys.argv[1:])
    kept = [a for i, a in enumerate(given) if not a.startswith("--results") and (i == 0 or given[i - 1] != "--results")]
    return " ".join(["python", script, *kept])


def make_variant(tag: str, spec: Any, loss_fn: Any) -> Any:
    """The flow of variant ``tag`` (:data:`VARIANTS`) for ``spec`` on ``loss_fn``."""
    import rodflow

    kind, kw = VARIANTS[tag]
    return (rodflow.stable_flow if kind == "stable" else rodflow.rod_flow)(spec, loss_fn, **kw)


def setup_case(data: str, seed: int, name: str, hp: dict[str, Any], n: int, width: int, steps: int,
               sharpness_every: int, lead: int, start: int | None = None, first: int = 1) -> tuple[Any, ...]:
    """The problem, spec and iterates of one case, the onset k* of sustained EoS and the flows' start:
    ``max(k* − lead, first)`` (adaptive methods never before :data:`FIRST_START`), or ``start`` checked.
    Returns ``(problem, spec, trajectory, k_star, start, seconds of the iterates)``."""
    _one_thread()
    import rodflow
    from paper_repro.rodflow.tracking import make_problem
    from rodflow.compare import eos_onset

    warnings.simplefilter("ignore", rodflow.flows.base.TransientWarning)
    prob = make_problem(data, n, width, seed)
    spec = rodflow.optimizer(name, **hp)
    t0 = time.perf_counter()
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps, sharpness_every=sharpness_every)
    t_disc = time.perf_counter() - t0
    k_star = eos_onset(traj.sharpness, spec.threshold)
    first = max(first, FIRST_START) if spec.beta2 is not None else first
    if start is None:
        start = max(first, (k_star if k_star is not None else steps // 2) - lead)
    elif not first <= start < steps:
        raise ValueError(f"start must lie in [{first}, {steps}) for {name}, got {start}")
    return prob, spec, traj, k_star, start, t_disc


def run_case(data: str, seed: int, name: str, hp: dict[str, Any], n: int, width: int, steps: int,
             sharpness_every: int, lead: int, method: str, rtol: float, atol: float,
             variants: list[str], start: int | None = None) -> dict[str, Any]:
    """One case: iterates, k*, then every variant from ``max(k* − lead, first)`` (or from ``start``);
    a JSON-able row."""
    import torch

    import rodflow

    prob, spec, traj, k_star, start, t_disc = setup_case(data, seed, name, hp, n, width, steps, sharpness_every,
                                                         lead, start)
    row: dict[str, Any] = {"data": data, "seed": seed, "optimizer": name, "hyperparameters": hp, "n": n,
                           "width": width, "steps": steps, "dim": prob.dim, "k_star": k_star, "start": start,
                           "seconds_discrete": t_disc, "method": method, "rtol": rtol, "atol": atol, "variants": {}}
    for tag in variants:
        flow = make_variant(tag, spec, prob.loss_fn)
        t0 = time.perf_counter()
        if flow.form == "delay":
            how: dict[str, Any] = {"options": {"step_size": STEPS[tag]} if tag in STEPS else None,
                                   "method": DELAY_RULES.get(tag)}
        else:
            how = {"method": method, "rtol": rtol, "atol": atol, "options": {"max_num_steps": 40 * (steps - start)}}
        try:
            sol = flow.solve(traj, start=start, **how)
        except rodflow.IntegrationError as err:
            row["variants"][tag] = {"failed": str(err)[:200], "grad_evals": flow.nfe_grad}
            continue
        cmp = rodflow.compare(traj, sol, threshold=spec.threshold)
        s = cmp.summary()
        on = cmp.onsets()
        eos = (cmp.t >= cmp.window[0]) if cmp.window is not None else torch.zeros_like(cmp.t, dtype=torch.bool)
        amp_err = (cmp.flow_amplitude - cmp.alternating_amplitude7).abs()
        ok = eos & ~torch.isnan(amp_err)
        row["variants"][tag] = {
            **{k: v for k, v in s.items() if isinstance(v, int | float) or v is None},
            "eos_mean_amplitude_error": float(amp_err[ok].mean()) if bool(ok.any()) else math.nan,
            "onset_iterates": on["iterates"], "onset_flow": on["flow"], "plateau": on["plateau"],
            "grad_evals_per_step": sol.config["grad_evals"] / (len(sol) - 1), "nfe": sol.stats.nfe,
            "seconds": time.perf_counter() - t0, "config": {k: v for k, v in sol.config.items() if k != "options"}}
    return row


# ---------------------------------------------------------------------- report
def _f(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def _ratio(a: Any, b: Any) -> float:
    if a is None or b is None or not (math.isfinite(a) and math.isfinite(b)) or b == 0:
        return math.nan
    return a / b


def _step(tag: str | None) -> str:
    """The delay step of a variant (``None``: the package default) as a fraction, e.g. ``1/4``."""
    from fractions import Fraction

    from rodflow.flows.base import DELAY_STEP

    return str(Fraction(STEPS.get(tag, DELAY_STEP) if tag else DELAY_STEP).limit_denominator(64))


def tie_tolerance(dev: float) -> float:
    """How far below 1 a stable ÷ rod ratio may fall and still count as a tie: the rod's relative change
    from h = ¼ to h = 1/16 (``dev``), or 1e-3 where that was not measured."""
    return dev if math.isfinite(dev) else 1e-3


def is_tie(ratio: float, dev: float) -> bool:
    """Whether a stable ÷ rod ratio below 1 is a tie, not a loss: within the rod's own discretisation
    error of 1 (the two flows coincide, e.g. an edge too short for Δ to grow)."""
    return 0 < 1 - ratio <= tie_tolerance(dev)


def _closer_stable(r: dict[str, Any], order: int, key: str) -> Any:
    """``key`` of the closer stable flow of this order in the row (order 2: the look-behind or the delay form)."""
    got = [x for t in ((f"stable{order}", "stable2d") if order == 2 else (f"stable{order}",))
           if isinstance(x := r["variants"].get(t, {}).get(key), float) and math.isfinite(x)]
    return min(got) if got else None


def case_metrics(r: dict[str, Any]) -> dict[str, Any]:
    """One row's verdicts: stable ÷ rod of each order (phase-free ``ratio_pf{1,2,3}``, parity
    ``ratio_par{1,2}``), the rod's deviation from h = 1/16 (``dev``), rod3 ÷ rod2 and the onsets."""
    v = r["variants"]

    def get(tag: str, key: str) -> Any:
        return v.get(tag, {}).get(key)

    pf, par = "eos_window_phase_free_distance", "eos_mean_distance"
    fine, coarse = get("rod2_fine", pf), get("rod2", pf)
    return {"case": f"{r['data']}/{r['seed']}/{r['optimizer']}",
            **{f"ratio_pf{o}": _ratio(_closer_stable(r, o, pf), get(f"rod{o}", pf)) for o in (1, 2, 3)},
            **{f"ratio_par{o}": _ratio(_closer_stable(r, o, par), get(f"rod{o}", par)) for o in (1, 2)},
            "dev": _ratio(abs(coarse - fine), fine) if isinstance(fine, float) and isinstance(coarse, float)
            else math.nan,
            "rod3_vs_rod2": _ratio(get("rod3", pf), get("rod2", pf)),
            "onset": (get("rod2", "onset_flow"), get("rod2", "onset_iterates"), r["steps"])}


def report(rows: list[dict[str, Any]], out_md: Path, out_png: Path | None, command: str) -> str:
    """Markdown tables (and a figure) from the finished cases."""
    head = ["data", "seed", "optimizer", "lr", "k*", "start"]
    lines = []
    metric_rows = []
    for r in sorted(rows, key=lambda r: (r["data"], r["seed"], OPTIMIZERS.index(r["optimizer"])
                                         if r["optimizer"] in OPTIMIZERS else 99)):
        v = r["variants"]

        def get(tag: str, key: str, v: dict[str, Any] = v) -> Any:
            return v.get(tag, {}).get(key)

        cells = [r["data"], str(r["seed"]), r["optimizer"], _f(r["hyperparameters"].get("lr")), _f(r["k_star"]),
                 str(r["start"])]
        m = case_metrics(r)
        metric_rows.append(m)
        cells += [_f(_closer_stable(r, 2, "eos_window_phase_free_distance")),
                  _f(get("rod2", "eos_window_phase_free_distance")), _f(m["ratio_pf2"], 3), _f(m["ratio_par2"], 3),
                  _f(get("stable1", "eos_window_phase_free_distance")), _f(get("rod1", "eos_window_phase_free_distance")),
                  _f(m["ratio_pf1"], 3), _f(m["ratio_par1"], 3),
                  _f(get("stable3", "eos_window_phase_free_distance")), _f(get("rod3", "eos_window_phase_free_distance")),
                  _f(m["ratio_pf3"], 3),
                  _f(get("rod2_lookbehind", "eos_window_phase_free_distance")),
                  _f(get("stable2", "pre_eos_mean_distance")), _f(get("rod2", "pre_eos_mean_distance")),
                  f"{_f(get('rod2', 'onset_flow'))} / {_f(get('rod2', 'onset_iterates'))}",
                  _f(get("rod2", "eos_mean_amplitude_error")), _f(get("rod2", "eos_mean_centre_distance")),
                  _f(get("stable2", "grad_evals_per_step"), 3), _f(get("rod2", "grad_evals_per_step"), 3),
                  _f(100 * m["dev"], 2) + "%" if math.isfinite(m["dev"]) else "–",
                  "; ".join(f"{t}: {v[t]['failed'][:60]}" for t in v if "failed" in v[t]) or "–"]
        lines.append("| " + " | ".join(cells) + " |")
    cols = [*head, "best stable2 EoS pf", "rod2 EoS pf", "ratio pf (2)", "ratio parity (2)", "stable1 EoS pf",
                   "rod1 EoS pf", "ratio pf (1)", "ratio parity (1)", "stable3 EoS pf", "rod3 EoS pf", "ratio pf (3)",
                   "look-behind rod2 EoS pf", "stable2 pre",
                   "rod2 pre", "onset rod2 / iterates", "rod2 amp err", "rod2 centre dist", "grads/step stable2",
                   "grads/step rod2", f"rod2 vs h={_step('rod2_fine')}", "failures"]
    table = "\n".join(["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|", *lines])
    finite = sorted(x["ratio_pf2"] for x in metric_rows if math.isfinite(x["ratio_pf2"]))
    median = finite[len(finite) // 2] if finite else math.nan
    below = [f"{x['case']} ({x['ratio_pf2']:.2f})" for x in metric_rows
             if math.isfinite(x["ratio_pf2"]) and x["ratio_pf2"] < 5]
    # a ratio below 1 by less than the rod's own discretisation error (h = ¼ against h = 1/16; 1e-3 where not
    # measured) is a tie: the two flows coincide (e.g. an edge too short for Δ to grow), not a loss
    worse = [f"{x['case']} ({x['ratio_pf2']:.2f})" for x in metric_rows
             if math.isfinite(x["ratio_pf2"]) and x["ratio_pf2"] < 1 and not is_tie(x["ratio_pf2"], x["dev"])]
    ties = [f"{x['case']} (1 − {1 - x['ratio_pf2']:.1e})" for x in metric_rows
            if math.isfinite(x["ratio_pf2"]) and is_tie(x["ratio_pf2"], x["dev"])]
    late = [f"{x['case']} ({x['onset'][0]} vs {x['onset'][1]})" for x in metric_rows
            if None not in x["onset"][:2] and abs(x["onset"][0] - x["onset"][1]) > 0.05 * x["onset"][2]]
    devs = [x["dev"] for x in metric_rows if math.isfinite(x["dev"])]
    third = sorted(x["ratio_pf3"] for x in metric_rows if math.isfinite(x["ratio_pf3"]))
    order3 = "" if not third else (
        f"Order 3 (`rod3` against `stable3`, pf): median {_f(third[len(third) // 2], 3)} over {len(third)} cases; "
        "rod3 ÷ rod2 distance: " + ", ".join(f"{x['case']} {x['rod3_vs_rod2']:.2f}" for x in metric_rows
                                             if math.isfinite(x["rod3_vs_rod2"])) + ".\n\n")
    tags = [t for t in VARIANTS if any(t in r["variants"] for r in rows)]
    every = ["| case | " + " | ".join(tags) + " |", "|" + "|".join("---" for _ in range(len(tags) + 1)) + "|"]
    for r in rows:
        v = r["variants"]
        every.append(f"| {r['data']}/{r['seed']}/{r['optimizer']} | " + " | ".join(
            "failed" if "failed" in v.get(t, {}) else
            f"{_f(v.get(t, {}).get('eos_window_phase_free_distance'))} ({_f(v.get(t, {}).get('grad_evals_per_step'), 3)})"
            for t in tags) + " |")
    text = ("# Fidelity of the stable and rod flows\n\n"
            "Distances ‖θ_k − θ̂_k‖ to the iterates. **pf** = phase-free, per window (the smaller of the parity and the "
            "anti-phase EoS-window means, one sign for the whole window; `rodflow.compare`); parity = the flow must also "
            "know the sign of the oscillation. EoS window: from the onset k* of sustained EoS to the end. Ratios are "
            "stable ÷ rod of the same order (> 1: the rod is closer; order 2: the closer of the look-behind and "
            "the delay stable flow). Onset: first step at which ‖Δ‖ (rod) or the "
            "iterates' seven-point alternating amplitude reaches half the iterates' late plateau. Flows start `lead` "
            "steps before k* (adaptive methods never before step 10).\n\n"
            f"{table}\n\n"
            f"Median ratio pf (order 2): {_f(median, 3)} over {len(finite)} cases. Below 5×: {', '.join(below) or 'none'}. "
            f"Rod worse than the stable flow (order 2, pf): {', '.join(worse) or 'none'}"
            + (f" (ties within the rod's discretisation error: {', '.join(ties)})" if ties else "") + ". "
            f"Onset more than 5% of the run from the iterates': {', '.join(late) or 'none'}. "
            f"Default step (h = {_step(None)}) against h = {_step('rod2_fine')}, EoS pf distance: largest deviation "
            f"{_f(100 * max(devs), 2) + '%' if devs else '–'} over {len(devs)} cases.\n\n" + order3 +
            "Every variant: EoS-window phase-free distance (gradient evaluations per step). "
            f"Variants: {', '.join(f'`{t}` {VARIANTS[t]}' for t in tags)}.\n\n" + "\n".join(every) + "\n\n"
            f"Command: `{command}`\n")
    out_md.write_text(text)
    if out_png is not None and metric_rows:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(max(6, 0.5 * len(metric_rows)), 4))
        xs = range(len(metric_rows))
        for off, key, label in ((-0.2, "ratio_pf1", "order 1 (pf)"), (0.2, "ratio_pf2", "order 2 (pf)")):
            ax.bar([x + off for x in xs], [m[key] if math.isfinite(m[key]) else 0 for m in metric_rows], 0.4,
                   label=label)
        ax.axhline(1, color="k", lw=0.8)
        ax.axhline(5, color="r", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(list(xs))
        ax.set_xticklabels([m["case"] for m in metric_rows], rotation=70, fontsize=7)
        ax.set_ylabel("EoS distance: stable ÷ rod")
        ax.legend()
        fig.tight_layout()
        fig.savefig(out_png, dpi=110)
        plt.close(fig)
    return text


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits", help="comma-separated: digits, mnist5k, fashion (the CNN)")
    p.add_argument("--seeds", default="0")
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS))
    p.add_argument("--n", type=int, default=None, help="examples (default: 1000 for mnist5k, 256 for digits, "
                   "128 for fashion; tracking.DEFAULT_N)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--sharpness-every", type=int, default=10)
    p.add_argument("--lead", type=int, default=50)
    p.add_argument("--start", type=int, default=None, help="start every flow at this step instead of --lead "
                   "steps before k* (the EoS window still starts at k*)")
    p.add_argument("--method", default="bosh3")
    p.add_argument("--rtol", type=float, default=1e-4)
    p.add_argument("--atol", type=float, default=1e-7)
    p.add_argument("--jobs", type=int, default=1, help="joblib workers (one case each)")
    p.add_argument("--backend", default="loky", help="joblib backend: loky, dask, ray")
    p.add_argument("--scheduler", default=None, help="Dask scheduler address (with --backend dask)")
    p.add_argument("--tag", default=None, help="results file name tag (default: the data sets)")
    p.add_argument("--resume", action="store_true", help="skip cases already in the results file")
    p.add_argument("--tiny", action="store_true", help="a smoke run in seconds (tiny net, few steps, gd and adam)")
    p.add_argument("--results", type=Path, default=ROOT / "paper_repro" / "rodflow" / "results")
    p.add_argument("--figures", type=Path, default=ROOT / "figures")
    args = p.parse_args(argv)
    from paper_repro.rodflow.tracking import DEFAULT_N, EOS_LRS

    datas = [d for d in args.data.split(",") if d]
    seeds = [int(s) for s in args.seeds.split(",") if s]
    names = [s for s in args.optimizers.split(",") if s]
    variants = [s for s in args.variants.split(",") if s]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    if args.tiny:
        datas, seeds, names = ["digits"], seeds[:1], ["gd", "adam"]
        args.n, args.width, args.steps, args.sharpness_every, args.lead = 64, 8, 40, 5, 10
    tag = args.tag or ("tiny" if args.tiny else "_".join(datas))
    args.results.mkdir(parents=True, exist_ok=True)
    jsonl = args.results / f"fidelity_{tag}.jsonl"
    done = set()
    if args.resume and jsonl.exists():
        for line in jsonl.read_text().splitlines():
            r = json.loads(line)
            done.add((r["data"], r["seed"], r["optimizer"]))
    elif jsonl.exists():
        jsonl.unlink()
    for d in datas:
        if missing := [o for o in names if o not in EOS_LRS[d]]:
            print(f"{d}: no edge-of-stability rate for {', '.join(missing)} (rodflow.problems.hyperparameters); "
                  "skipped", flush=True)
    cases = [(d, s, o) for d in datas for s in seeds for o in names if o in EOS_LRS[d] and (d, s, o) not in done]
    command = "python " + " ".join([str(Path(sys.argv[0]).relative_to(ROOT)) if Path(sys.argv[0]).is_absolute()
                                    and ROOT in Path(sys.argv[0]).parents else sys.argv[0], *sys.argv[1:]])
    print(f"{len(cases)} cases -> {jsonl}", flush=True)

    from joblib import Parallel, delayed, parallel_config

    client = None
    if args.backend == "dask":
        from dask.distributed import Client  # type: ignore[import-not-found]

        client = Client(args.scheduler)
    elif args.backend == "ray":
        from ray.util.joblib import register_ray  # type: ignore[import-not-found]

        register_ray()
    jobs = (delayed(run_case)(d, s, o, dict(EOS_LRS[d][o]), args.n or DEFAULT_N[d], args.width,
                              args.steps, args.sharpness_every, args.lead, args.method, args.rtol, args.atol, variants,
                              args.start)
            for d, s, o in cases)
    with parallel_config(backend=args.backend, n_jobs=args.jobs):
        for row in Parallel(return_as="generator_unordered")(jobs):
            with jsonl.open("a") as fh:
                fh.write(json.dumps(row) + "\n")
            pf = {t: v.get("eos_window_phase_free_distance", v.get("failed")) for t, v in row["variants"].items()}
            print(f"{row['data']}/{row['seed']}/{row['optimizer']}: k*={row['k_star']} start={row['start']} {pf}",
                  flush=True)
            rows = [json.loads(line) for line in jsonl.read_text().splitlines()]
            args.figures.mkdir(parents=True, exist_ok=True)
            report(rows, args.results / f"fidelity_{tag}.md",
                   None if args.tiny else args.figures / f"fidelity_{tag}.png", command)
    if client is not None:
        client.close()
    if not (args.results / f"fidelity_{tag}.md").exists() and jsonl.exists():
        report([json.loads(line) for line in jsonl.read_text().splitlines()], args.results / f"fidelity_{tag}.md",
               None, command)
    print(f"wrote {args.results / f'fidelity_{tag}.md'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
