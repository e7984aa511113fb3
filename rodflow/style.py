"""The one plot style of rodflow's figures: a colour-blind-safe palette, axis labels with units,
thresholds labelled with their formula.

The palette is Okabe & Ito's (2008), distinguishable under the common colour-vision deficiencies;
each flow family keeps one colour in every figure (iterates black, stable blue, rod vermillion,
central bluish green).
"""

from __future__ import annotations

from typing import Any

__all__ = ["FAMILY_COLOURS", "LABELS", "PALETTE", "colour", "style_axes", "threshold_label"]

#: Okabe–Ito: blue, vermillion, bluish green, reddish purple, orange, sky blue, yellow, black.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")

FAMILY_COLOURS = {"iterates": "#000000", "stable": PALETTE[0], "rod": PALETTE[1], "central": PALETTE[2]}

#: Axis labels (time is measured in optimizer steps everywhere).
LABELS = {
    "step": "step k (optimizer steps)",
    "loss": "training loss L(θₖ)",
    "sharpness": "λ_max(H)",
    "preconditioned_sharpness": "λ_max(P⁻¹H) (dimensionless)",
    "distance": "‖θₖ − θ̂ₖ‖ (parameter space)",
    "oscillation": "half-difference ‖Δₖ‖",
}


def threshold_label(threshold: Any, *, preconditioned: bool = True) -> str:
    """``"threshold (2 + 2β₁)/(1 − β₁) = 38"`` for a spec; ``"threshold 38"`` for a number.

    For a spec and the raw sharpness (``preconditioned=False``) the line is at threshold/η only when
    P = 1/η (GD and the momentum methods): ``"2/η = 4"``.
    """
    formula = getattr(threshold, "threshold_formula", None)
    if formula is None:
        return f"threshold {float(threshold):.4g}"
    value = float(threshold.threshold)
    if preconditioned:
        return f"threshold {formula} = {value:.4g}"
    lr = float(threshold.lr)
    over = formula if formula.replace(".", "").isdigit() else f"({formula})"
    return f"threshold {over}/η = {value / lr:.4g}"


def colour(label: str, index: int) -> str:
    """The family's colour when ``label`` names a family, else the palette's ``index``-th."""
    for family, c in FAMILY_COLOURS.items():
        if label.split()[0].split(":")[0] == family:
            return c
    return PALETTE[index % len(PALETTE)]


def style_axes(ax: Any) -> None:
    """Grid, palette cycle and small legend font on one axes."""
    from cycler import cycler

    ax.set_prop_cycle(cycler(color=PALETTE))
    ax.grid(alpha=0.3)
