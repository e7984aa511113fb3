"""One table of every reported fidelity case: stable ÷ rod (order 2, phase-free, EoS window) per optimizer
and data set × seed, read from the sweep's results files (``fidelity.py`` writes them).

Reported cases are the seeds no constant was chosen on: digits seeds 0 and 2 and MNIST-5k seeds 0–2 (digits seed 1
chose the delay rule, its step and ρ), the Fashion CNN seeds 0–2 (its rates were scanned on seed 3).
A case appears where its file holds it; a later file in :data:`REPORTED` replaces an earlier one's
case. Usage::

    python paper_repro/rodflow/fidelity_summary.py          # writes results/fidelity_summary.md
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from paper_repro.rodflow.fidelity import OPTIMIZERS, case_metrics, is_tie  # noqa: E402
from rodflow.problems.hyperparameters import hyperparameters  # noqa: E402

RESULTS = ROOT / "paper_repro" / "rodflow" / "results"
#: The results files of the reported cases, in the order they are read.
REPORTED = ("fidelity_digits_seed0", "fidelity_digits_seed2", "fidelity_mnist5k_seed0",
            "fidelity_mnist5k_adaptive_seed0", "fidelity_mnist5k_seed1", "fidelity_mnist5k_seed2", "fidelity_fashion_seed0_merged",
            "fidelity_fashion_seed0_adaptive", "fidelity_fashion_seed1", "fidelity_fashion_seed2")


def load(files: list[Path]) -> dict[tuple[str, int, str], dict[str, Any]]:
    """Rows by ``(data, seed, optimizer)``; a later file replaces an earlier one's row."""
    rows: dict[tuple[str, int, str], dict[str, Any]] = {}
    for f in files:
        for line in f.read_text().splitlines():
            r = json.loads(line)
            rows[(r["data"], r["seed"], r["optimizer"])] = r
    return rows


def cell(r: dict[str, Any] | None, has_rate: bool = True) -> tuple[str, float]:
    """The table's text for a case and its ratio (nan where there is none)."""
    if r is None:
        return ("" if has_rate else "none"), math.nan
    if r["k_star"] is None:
        return "no edge", math.nan
    m = case_metrics(r)
    x = m["ratio_pf2"]
    if not math.isfinite(x):
        return "failed", math.nan
    if is_tie(x, m["dev"]):
        return "tie", x
    text = f"{x:.0f}" if x >= 10 else f"{x:.2g}"
    return (f"**{text}**" if x < 5 else text), x


def summary(rows: dict[tuple[str, int, str], dict[str, Any]]) -> str:
    cols = sorted({(d, s) for d, s, _ in rows}, key=lambda c: (["digits", "mnist5k", "fashion"].index(c[0])
                                                              if c[0] in ("digits", "mnist5k", "fashion") else 9, c[1]))
    lines = ["| optimizer | " + " | ".join(f"{d} s{s}" for d, s in cols) + " |",
             "|---|" + "---|" * len(cols)]
    ratios, below, worse, ties = [], [], [], []
    for name in OPTIMIZERS:
        cells = []
        for d, s in cols:
            text, x = cell(rows.get((d, s, name)), name in hyperparameters(d, "eos"))
            cells.append(text)
            if math.isfinite(x):
                ratios.append(x)
                case = f"{d}/{s}/{name} ({x:.2f})"
                if text == "tie":
                    ties.append(case)
                elif x < 1:
                    worse.append(case)
                elif x < 5:
                    below.append(case)
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    med = statistics.median(ratios) if ratios else math.nan
    return ("# Fidelity: every reported case\n\n"
            "Stable ÷ rod flow, EoS-window mean distance to the iterates, phase-free (`rodflow.compare`), the "
            "default rod (order 2, delay form) against the closer second-order stable flow; flows from 50 steps "
            "before the onset of sustained EoS (adaptive methods never before step 10). **Bold**: below 5×. "
            "tie: the two flows agree to within the rod's discretisation error (an edge that starts too late "
            "for Δ to grow). no edge: the iterates reach no sustained edge at the task's rate on that seed. "
            "none: the task has no rate with a sustained edge short of divergence (`rodflow.problems.hyperparameters`). "
            "Blank: not run.\n\n" + "\n".join(lines) + "\n\n"
            f"{len(ratios)} cases; median {med:.3g}×; rod worse than the stable flow: {', '.join(worse) or 'none'}; "
            f"ties: {', '.join(ties) or 'none'}; below 5× ({len(below)}): {', '.join(below) or 'none'}.\n\n"
            "Per-case tables, diagnoses: the `fidelity_*.md` files here and `docs/flows.md` §7.\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--out", type=Path, default=None, help="default: RESULTS/fidelity_summary.md")
    args = p.parse_args(argv)
    files = [args.results / f"{f}.jsonl" for f in REPORTED if (args.results / f"{f}.jsonl").exists()]
    text = summary(load(files))
    (args.out or args.results / "fidelity_summary.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
