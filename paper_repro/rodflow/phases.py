r"""N-phase flows: does resolving period-four ringing close the momentum methods' gap?

The rod splits the iterates into a smooth part and a period-two part, ``w_k = W(k) + (−1)^kΔ(k)``. A
momentum method's map has complex multipliers ``z = √β e^{iφ}`` at every angle φ; the rod's delay kernel
reads each as a rate relative to the nearer carrier (1 or −1), ``s ≈ ln(z/c)``, with an error that grows
with ``|z/c − 1|``: heavy ball at β = 0.9 is worst at φ = π/2 (ηλ = 1.9: rate error 0.13 per step with one
lag, ``python paper_repro/rodflow/phases.py --rates``). The N-phase flow carries ``N`` copies of the
optimizer's state, ``x_k = Y_{k mod N}(k)``; one step of the map sends copy ``j − 1`` at time t to copy
``j`` at t + 1, so

.. math::

    \dot Y_j(t) = F_j\big(t - \tfrac12,\, Y(t - \tfrac12)\big),\qquad
    F_j(t, Y) = \Phi_t(Y_{j-1}) - Y_j

(the delay form of ``rodflow.flows``, solved by the same integrator). For N = 2 in the basis
``W = (Y_0 + Y_1)/2``, ``Δ = (Y_0 − Y_1)/2`` this is the rod map (heavy ball: exactly the rod flow; with a
second moment it also lets v alternate), and with N = 4 a mode is read against the nearest of 1, i, −1, −i,
so no residual rotation exceeds π/4 per step (rate error ≤ 0.01 per step for heavy ball). Cost: N gradients
per evaluation of F (16 per step at the default h = ¼ for N = 4).

The copies start from a least-squares fit of ``x_r ≈ Σ_c e^{2πicr/N} P_c(r − k)`` over rows ``k − h … k + h``
(polynomial degrees per carrier: :data:`DEGREES`), so ``Y_j(k) = Σ_c e^{2πicj/N} P_c(0)``; with N = 2, h = 3
and degrees (4, 1) it is the interpolant of a degree-4 drift plus a linearly varying alternation on seven
points (the rod's seven-point fit is exact for the same family and one more drift degree).
There is no roundoff floor: copies that agree to rounding are re-seeded by the rounding of their own
gradients, as the iterates are.

Usage (results in ``results/phases_<tag>.md``)::

    python paper_repro/rodflow/phases.py --data mnist5k --seeds 3 --optimizers heavy_ball,adam,nesterov
    python paper_repro/rodflow/phases.py --rates      # the linearised rate errors of N = 1, 2, 4
    python paper_repro/rodflow/phases.py --tiny       # seconds
"""

from __future__ import annotations

import argparse
import cmath
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
from torch import Tensor  # noqa: E402

from paper_repro.rodflow.fidelity import command_line  # noqa: E402
from rodflow.derivatives import LossFn  # noqa: E402
from rodflow.flows.base import Flow, Y  # noqa: E402
from rodflow.flows.parts import StableState, pack, stable_increment, stable_moments  # noqa: E402
from rodflow.optimizers.spec import OptimizerSpec  # noqa: E402
from rodflow.trajectory import Trajectory  # noqa: E402

#: Initial fit per number of phases: half-width h of the window and the polynomial degree of each
#: carrier's amplitude (``"0"`` the drift, ``"pi"`` the alternation, ``"c"`` each pair of other carriers);
#: both are interpolants (unknowns = 2h + 1 rows).
HALF = {1: 3, 2: 3, 4: 4}
DEGREES = {1: {"0": 6, "pi": 0, "c": 0}, 2: {"0": 4, "pi": 1, "c": 0}, 4: {"0": 4, "pi": 1, "c": 0}}
#: The variants of the sweep: the package's flows and the N-phase flows.
VARIANTS = ("stable2d", "stable3", "rod2", "rod3", "phase2", "phase4", "phase4o3")


def _carriers(n_phase: int) -> list[tuple[str, float]]:
    """Real basis of the carriers e^{2πicr/N}: ("0", 0), ("pi", π) for even N, ("cos c"/"sin c", 2πc/N)."""
    out = [("0", 0.0)]
    if n_phase % 2 == 0:
        out.append(("pi", math.pi))
    for c in range(1, (n_phase + 1) // 2):
        out += [(f"cos{c}", 2 * math.pi * c / n_phase), (f"sin{c}", 2 * math.pi * c / n_phase)]
    return out


def _basis(name: str, angle: float, r: Tensor) -> Tensor:
    return torch.sin(angle * r) if name.startswith("sin") else torch.cos(angle * r)


def fit_copies(x: Tensor, k: int, step: int, n_phase: int, half: int, degrees: dict[str, int]) -> list[Tensor]:
    """``Y_j(step)``, j = 0 … N − 1, from rows ``k − half … k + half`` of ``x`` (consecutive steps, row k = step)."""
    if k - half < 0 or k + half >= len(x):
        raise ValueError(f"step: the {n_phase}-phase fit needs rows {k - half}…{k + half}, the record has 0…{len(x) - 1}")
    r = torch.arange(step - half, step + half + 1, dtype=torch.float64)
    cols, keys = [], []
    for name, angle in _carriers(n_phase):
        deg = degrees["0" if name == "0" else "pi" if name == "pi" else "c"]
        for p in range(deg + 1):
            cols.append(_basis(name, angle, r) * ((r - step) / half) ** p)  # scaled: a well-conditioned system
            keys.append((name, p))
    design = torch.stack(cols, 1)
    if design.shape[1] > design.shape[0]:
        raise ValueError(f"degrees: {design.shape[1]} unknowns on {design.shape[0]} rows")
    data = x[k - half: k + half + 1].to(torch.float64).reshape(2 * half + 1, -1)
    coef = torch.linalg.lstsq(design, data).solution
    amp = {name: coef[i] for i, (name, p) in enumerate(keys) if p == 0}
    copies = []
    for j in range(n_phase):
        y = sum(_basis(name, angle, torch.tensor(float(j), dtype=torch.float64)) * amp[name]
                for name, angle in _carriers(n_phase))
        copies.append(torch.as_tensor(y).reshape(x.shape[1:]).to(x.dtype))
    return copies


class PhaseFlow(Flow):
    """The N-phase flow of ``spec`` on ``loss_fn`` (module docstring); state: the copies' (W, M, N) in turn."""

    kind = "rod"

    def __init__(self, spec: OptimizerSpec, loss_fn: LossFn, *, n_phase: int = 4, order: int = 2):
        if isinstance(n_phase, bool) or n_phase not in HALF:
            raise ValueError(f"n_phase must be one of {tuple(HALF)}, got {n_phase!r}")
        super().__init__(spec, loss_fn, order=order, form="delay")
        self.n_phase = n_phase
        self.parts = ["W"] + (["M"] if spec.has_momentum else []) + (["N"] if spec.beta2 is not None else [])

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(f"{p}{j}" for j in range(self.n_phase) for p in self.parts)

    def copies(self, y: Y) -> list[StableState]:
        n = len(self.parts)
        return [StableState(**dict(zip(self.parts, y[j * n:(j + 1) * n]))) for j in range(self.n_phase)]

    def increment(self, t: float, y: Y) -> Y:
        """``F_j = Φ_t(Y_{j−1}) − Y_j`` for every copy j (one gradient each)."""
        s, cs, out = self.spec, self.copies(y), []
        for j in range(self.n_phase):
            prev = cs[j - 1]
            g = self._g(prev.W)
            step = pack(stable_increment(s, prev, g, stable_moments(s, prev, g, self.noise), t + 1.0))
            out += [f + a - b for f, a, b in zip(step, pack(prev), pack(cs[j]))]
        return tuple(out)

    def initial(self, trajectory: Trajectory, step: int = 0) -> Y:
        k = trajectory.index_of(step)
        half, deg = HALF[self.n_phase], DEGREES[self.n_phase]
        fits = {p: fit_copies(getattr(trajectory, a), k, step, self.n_phase, half, deg)
                for p, a in (("W", "theta"), ("M", "m"), ("N", "v")) if p in self.parts}
        if "N" in fits:
            fits["N"] = [v.clamp_min(0) for v in fits["N"]]
        return tuple(fits[p][j].clone() for j in range(self.n_phase) for p in self.parts)

    def predict(self, step: Tensor, ys: Y) -> dict[str, Tensor | None]:
        """θ̂_k = Y_{k mod N}(k); ``delta`` the period-two part ``Σ_j (−1)^j Y_j / N`` (signed as the rod's Δ) and
        ``centre`` = θ̂ − (−1)^kΔ, so that ``rodflow.compare``'s anti-phase prediction flips the period-two part only."""
        n = len(self.parts)
        rows, idx = torch.arange(len(step)), (step % self.n_phase).long()

        def stack(p: str) -> Tensor:
            return torch.stack([ys[j * n + self.parts.index(p)] for j in range(self.n_phase)], 0)

        w = stack("W")
        theta = w[idx, rows]
        if self.n_phase % 2:
            delta = torch.zeros_like(theta)
        else:
            alt = torch.tensor([(-1.0) ** j for j in range(self.n_phase)], dtype=w.dtype).view(-1, 1, 1)
            delta = (alt * w).mean(0)
        sign = (1.0 - 2.0 * (step % 2)).to(w).unsqueeze(1)
        pick = {p: stack(p)[idx, rows] for p in ("M", "N") if p in self.parts}
        return {"theta": theta, "centre": theta - sign * delta, "delta": delta, "m": pick.get("M"),
                "v": pick.get("N")}

    def _extra_config(self) -> dict[str, Any]:
        return {"n_phase": self.n_phase, "half": HALF[self.n_phase], "degrees": DEGREES[self.n_phase]}


def rate_errors(beta: float = 0.9, xs: tuple[float, ...] = (0.2, 0.5, 1.0, 1.5, 1.9, 2.5, 3.0, 3.5, 3.79)
                ) -> list[dict[str, float]]:
    """Heavy ball's ringing multiplier at each ηλ = x and the one-lag rate error ``|s − ln(z/c)|`` of N = 1, 2, 4 phases
    (c the nearest N-th root of unity; s the root of ``s = (z/c − 1)e^{−s/2}`` from :mod:`kernels`)."""
    from paper_repro.rodflow.kernels import momentum_multipliers, principal_rate

    rows = []
    for x in xs:
        z = complex(max(momentum_multipliers("heavy_ball", x, beta), key=lambda q: q.imag))
        row = {"x": x, "phi": cmath.phase(z)}
        for n in (1, 2, 4):
            c = min((cmath.exp(2j * math.pi * j / n) for j in range(n)), key=lambda c: abs(z / c - 1))
            row[f"N{n}"] = abs(principal_rate(z / c, [0.5], [1.0]) - cmath.log(z / c))
        rows.append(row)
    return rows


def make_flow(tag: str, spec: OptimizerSpec, loss_fn: LossFn) -> Flow:
    """``phaseN`` / ``phaseNo3`` (N phases, the three-lag kernel): a :class:`PhaseFlow`; otherwise the package's
    flow of ``fidelity.py``'s variant ``tag``."""
    from paper_repro.rodflow.fidelity import make_variant

    if tag.startswith("phase"):
        n, _, order = tag[5:].partition("o")
        return PhaseFlow(spec, loss_fn, n_phase=int(n), order=int(order or 2))
    return make_variant(tag, spec, loss_fn)  # type: ignore[no-any-return]


def run_case(data: str, seed: int, name: str, variants: list[str], n: int | None = None, width: int = 32,
             steps: int = 400, lead: int = 50) -> dict[str, Any]:
    """Iterates, the onset k* of sustained EoS, and each variant from ``max(k* − lead, first)`` (as ``fidelity.py``)."""
    import rodflow
    from paper_repro.rodflow.fidelity import setup_case
    from paper_repro.rodflow.tracking import DEFAULT_N, EOS_LRS

    prob, spec, traj, k_star, start, _ = setup_case(data, seed, name, dict(EOS_LRS[data][name]), n or DEFAULT_N[data],
                                                    width, steps, 10, lead, first=max(HALF.values()))
    row: dict[str, Any] = {"data": data, "seed": seed, "optimizer": name, "k_star": k_star, "start": start,
                           "steps": steps, "variants": {}}
    for tag in variants:
        flow = make_flow(tag, spec, prob.loss_fn)
        t0 = time.perf_counter()
        sol = flow.solve(traj, start=start)
        s = rodflow.compare(traj, sol, threshold=spec.threshold).summary()
        row["variants"][tag] = {"eos_pf": s.get("eos_window_phase_free_distance"), "eos_parity": s.get("eos_mean_distance"),
                                "pre": s.get("pre_eos_mean_distance"),
                                "grads_per_step": sol.config["grad_evals"] / (len(sol) - 1),
                                "seconds": time.perf_counter() - t0}
    return row


def _f(x: Any) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.4g}"


def report(rows: list[dict[str, Any]], command: str) -> str:
    tags = [t for t in VARIANTS if any(t in r["variants"] for r in rows)]
    head = "| case | k* | start | " + " | ".join(f"{t} EoS pf (pre)" for t in tags) + " |"
    lines = [head, "|" + "---|" * (3 + len(tags))]
    for r in rows:
        v = r["variants"]
        lines.append(f"| {r['data']}/{r['seed']}/{r['optimizer']} | {r['k_star']} | {r['start']} | " + " | ".join(
            f"{_f(v[t]['eos_pf'])} ({_f(v[t]['pre'])})" if t in v else "–" for t in tags) + " |")
    cost = ", ".join(f"{t} {_f(sum(r['variants'][t]['grads_per_step'] for r in rows if t in r['variants']) / max(1, sum(t in r['variants'] for r in rows)))}"
                     for t in tags)
    return ("# N-phase flows against the rod and the stable flows\n\n"
            "EoS-window phase-free distance to the iterates (in brackets the pre-EoS mean distance); flows from 50 steps "
            "before the onset of sustained EoS, as in `fidelity.py`. `phaseN`: the N-phase flow of `phases.py` (delay "
            "form, h = ¼, no floor); `stable2d`, `stable3`, `rod2`, `rod3`: the package's delay forms of order 2 and 3.\n\n"
            + "\n".join(lines) + f"\n\nGradient evaluations per step: {cost}.\n\nCommand: `{command}`\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="mnist5k")
    p.add_argument("--seeds", default="3", help="comma-separated (MNIST-5k seeds 0–2 and digits 0–2 are the reported "
                   "fidelity cases, digits 1 the tuning seed)")
    p.add_argument("--optimizers", default="heavy_ball,adam,nesterov")
    p.add_argument("--variants", default=",".join(VARIANTS))
    p.add_argument("--rates", action="store_true", help="print the linearised rate errors and exit")
    p.add_argument("--tiny", action="store_true", help="seconds: a tiny net, heavy ball, phase2 and phase4")
    p.add_argument("--tag", default=None)
    p.add_argument("--results", type=Path, default=ROOT / "paper_repro" / "rodflow" / "results")
    args = p.parse_args(argv)
    if args.rates:
        print("| ηλ | φ | N = 1 | N = 2 | N = 4 |\n|---|---|---|---|---|")
        for r in rate_errors():
            print(f"| {r['x']} | {r['phi']:.3f} | {r['N1']:.3g} | {r['N2']:.3g} | {r['N4']:.3g} |")
        return 0
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            raise SystemExit(f"--variants: unknown variant {v!r}; choose from {', '.join(VARIANTS)}")
    cases = [(d, int(s), o) for d in args.data.split(",") for s in args.seeds.split(",") for o in args.optimizers.split(",")]
    kw: dict[str, Any] = {}
    if args.tiny:
        cases, variants, kw = [("digits", 0, "heavy_ball")], ["rod2", "phase2", "phase4"], {"n": 64, "width": 8,
                                                                                          "steps": 40, "lead": 10}
    tag = args.tag or ("tiny" if args.tiny else f"{args.data}_seed{args.seeds.replace(',', '')}")
    args.results.mkdir(parents=True, exist_ok=True)
    jsonl, md = args.results / f"phases_{tag}.jsonl", args.results / f"phases_{tag}.md"
    jsonl.unlink(missing_ok=True)
    command = command_line("paper_repro/rodflow/phases.py", argv)
    rows = []
    for d, s, o in cases:
        rows.append(run_case(d, s, o, variants, **kw))
        with jsonl.open("a") as fh:
            fh.write(json.dumps(rows[-1]) + "\n")
        md.write_text(report(rows, command))
        print(f"{d}/{s}/{o}: " + ", ".join(f"{t} {_f(v['eos_pf'])}" for t, v in rows[-1]["variants"].items()), flush=True)
    print(f"wrote {md}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
