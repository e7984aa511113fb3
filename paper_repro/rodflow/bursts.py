"""Where a flow loses the iterates at the edge: the oscillation's bursts and the distance, step by step.

At the edge of stability the momentum methods' oscillation comes in bursts (catapults): it grows by 30× or
more in ten steps, the sharpness falls below the threshold, the oscillation decays and the next burst follows
when the sharpness has climbed back. This script runs one case of ``fidelity.py`` (same problem, rate and
start) and writes, every ``--every`` steps, the iterates' seven-point alternating amplitude, the rod's ‖Δ‖,
the distance of the default rod and of the stable delay flow to the iterates and the rod's centre distance;
below it, each series' bursts (local maxima above a quarter of the series' largest value) side by side::

    python paper_repro/rodflow/bursts.py --data mnist5k --seed 3 --optimizer heavy_ball
    python paper_repro/rodflow/bursts.py --tiny
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from paper_repro.rodflow.fidelity import command_line  # noqa: E402

#: A burst: a local maximum of an amplitude series above this fraction of the series' largest value.
BURST = 0.25


def bursts(t: Tensor, amp: Tensor, fraction: float = BURST) -> list[int]:
    """Steps ``t[i]`` where ``amp`` has a local maximum (over i ± 5) above ``fraction`` × its largest value (NaNs
    ignored)."""
    ok = ~torch.isnan(amp)
    if not bool(ok.any()):
        return []
    level = fraction * float(amp[ok].max())
    out = []
    for i in range(len(amp)):
        a = float(amp[i])
        if not math.isfinite(a) or a <= level:
            continue
        near = amp[max(0, i - 5): i + 6]
        if a >= float(near[~torch.isnan(near)].max()):
            out.append(int(t[i]))
    return out


def centre_sharpness(spec: Any, loss_fn: Any, states: list[Any]) -> list[float]:
    """The top eigenvalue of P⁻¹H (P the optimizer's preconditioner; for GD and the momentum methods the
    step-scaled H, whose threshold is the spec's) at each :class:`rodflow.PhaseState`, warm-started along the list."""
    from rodflow.sharpness import SharpnessTracker

    tracker = SharpnessTracker(spec, loss_fn)
    for state in states:
        tracker.record(state)
    return [float(x) for x in tracker.series()["preconditioned_sharpness"]]


def run(data: str, seed: int, name: str, *, n: int | None = None, width: int = 32, steps: int = 400,
        lead: int = 50, every: int = 10, sharpness: bool = False) -> dict[str, Any]:
    """The case's series (``sharpness``: also P⁻¹H's top eigenvalue every ``every`` steps at the iterates'
    three-point centre, at the rod's centre W and at the stable flow)."""
    import rodflow
    from paper_repro.rodflow.fidelity import make_variant, setup_case
    from paper_repro.rodflow.tracking import DEFAULT_N, EOS_LRS
    from rodflow.flows.base import _three_point

    prob, spec, traj, k_star, start, _ = setup_case(data, seed, name, dict(EOS_LRS[data][name]), n or DEFAULT_N[data],
                                                    width, steps, 10, lead)
    sol = make_variant("rod2", spec, prob.loss_fn).solve(traj, start=start)
    rod = rodflow.compare(traj, sol, threshold=spec.threshold)
    stable_sol = make_variant("stable2d", spec, prob.loss_fn).solve(traj, start=start)
    stable = rodflow.compare(traj, stable_sol, threshold=spec.threshold)
    rows = list(range(0, len(rod.t), every))
    sharp: dict[str, list[float]] = {}
    if sharpness:
        inside = [i for i in rows if 0 < int(rod.t[i]) < int(traj.t[-1])]
        it = [traj.state(int(rod.t[i])) for i in inside]
        sharp["iterates"] = centre_sharpness(spec, prob.loss_fn, [
            dataclasses.replace(s, theta=_three_point(traj.theta, traj.index_of(s.t), 0)[0]) for s in it])
        for key, flow_sol in (("rod", sol), ("stable", stable_sol)):
            states = [dataclasses.replace(flow_sol.state(int(rod.t[i])), theta=flow_sol.centre[i]) for i in inside]
            sharp[key] = centre_sharpness(spec, prob.loss_fn, states)
        sharp["steps"] = [int(rod.t[i]) for i in inside]
    return {"case": f"{data}/{seed}/{name}", "k_star": k_star, "start": start, "t": rod.t, "rows": rows,
            "sharpness": sharp, "threshold": float(spec.threshold),
            "iterates": rod.alternating_amplitude7, "rod_delta": rod.flow_amplitude, "rod": rod.distance,
            "centre": rod.centre_distance, "stable": stable.distance,
            "bursts_iterates": bursts(rod.t, rod.alternating_amplitude7), "bursts_rod": bursts(rod.t, rod.flow_amplitude)}


def markdown(res: dict[str, Any], command: str) -> str:
    cols = ("iterates", "rod_delta", "rod", "centre", "stable")
    sharp = res["sharpness"]
    extra = " iterates' centre P⁻¹H | rod centre P⁻¹H | stable P⁻¹H |" if sharp else ""
    head = ("| step | iterates' alternating amplitude | rod ‖Δ‖ | rod distance | rod centre distance | "
            "stable distance |" + extra + "\n|---|---|---|---|---|---|" + ("---|---|---|" if sharp else ""))

    where = {step: j for j, step in enumerate(sharp.get("steps", []))}  # step -> index of its sharpness

    def row(i: int) -> str:
        cells = [f"{float(res[c][i]):.3g}" for c in cols]
        if sharp:
            at = where.get(int(res["t"][i]))
            cells += ["–"] * 3 if at is None else [f"{sharp[k][at]:.4g}" for k in ("iterates", "rod", "stable")]
        return f"| {int(res['t'][i])} | " + " | ".join(cells) + " |"

    rows = [row(i) for i in res["rows"]]
    note = (f" P⁻¹H: the top eigenvalue of the preconditioned Hessian at the iterates' three-point centre, at the "
            f"rod's centre W and at the stable flow (threshold {res['threshold']:.4g}).") if sharp else ""
    return (f"# Bursts and distances: {res['case']}\n\nOnset of sustained EoS k* = {res['k_star']}, flows from step "
            f"{res['start']} (the default rod and the stable delay flow, as in `fidelity.py`). Distances to the iterates "
            "(parity); amplitudes: the iterates' seven-point alternating amplitude and the rod's ‖Δ‖." + note + "\n\n" + head + "\n"
            + "\n".join(rows) + f"\n\nBursts (local maxima above {BURST:g} × the series' largest value): iterates "
            f"{res['bursts_iterates']}, rod {res['bursts_rod']}.\n\nCommand: `{command}`\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--seed", type=int, default=3)
    p.add_argument("--optimizer", default="heavy_ball")
    p.add_argument("--every", type=int, default=10, help="rows of the table: every this many steps")
    p.add_argument("--sharpness", action="store_true", help="add P⁻¹H's top eigenvalue at both centres (minutes)")
    p.add_argument("--tiny", action="store_true", help="seconds: a tiny digits net, heavy ball, 40 steps")
    p.add_argument("--results", type=Path, default=ROOT / "paper_repro" / "rodflow" / "results")
    args = p.parse_args(argv)
    kw: dict[str, Any] = {"n": 64, "width": 8, "steps": 40, "lead": 10, "every": 1} if args.tiny else {"every": args.every}
    data, seed, name = ("digits", 0, "heavy_ball") if args.tiny else (args.data, args.seed, args.optimizer)
    res = run(data, seed, name, sharpness=args.sharpness, **kw)
    text = markdown(res, command_line("paper_repro/rodflow/bursts.py", argv))
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / ("bursts_tiny.md" if args.tiny else f"bursts_{data}_seed{seed}_{name}.md")
    out.write_text(text)
    print(f"iterates' bursts {res['bursts_iterates']}, rod's {res['bursts_rod']}; wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
