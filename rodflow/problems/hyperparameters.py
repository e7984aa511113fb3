"""The per-task hyperparameter tables, in one place: the demo, the reproductions and the tests read them.

``HYPERPARAMETERS[task][regime][optimizer]`` is a dict of keyword arguments for
:func:`rodflow.optimizer`. Regimes:

* ``"train"``: full-batch rates at which every optimizer trains without diverging (the demo's zoo).
* ``"eos"``: rates that enter the edge of stability within a 400-step run, found by a scan of the
  late-window preconditioned sharpness ÷ threshold (digits: 256 examples; MNIST-5k: 1,000
  examples; width 32; fashion: the small CNN on 128 examples). The NAdams use the constant-β₁ form
  of the flow papers.
* ``"unit"``: the small quadratic problems of the threshold and linearisation tests (large t, bias
  corrections at 1; ε = 1e-3 so that the preconditioner stays bounded at a minimum).

>>> hyperparameters("digits", "eos")["adam"]
{'lr': 0.01}
"""

from __future__ import annotations

import copy
from typing import Any

__all__ = ["HYPERPARAMETERS", "hyperparameters"]

_DIGITS_EOS: dict[str, dict[str, Any]] = {
    "gd": {"lr": 1.0},
    "heavy_ball": {"lr": 0.7, "momentum": 0.9},
    "nesterov": {"lr": 0.25, "momentum": 0.9},
    "scalar_rmsprop": {"lr": 0.05},
    "rmsprop": {"lr": 3e-3},
    "scalar_adam": {"lr": 0.3},
    "adam": {"lr": 1e-2},
    "scalar_nadam": {"lr": 0.2, "momentum_decay": None},
    "nadam": {"lr": 1e-2, "momentum_decay": None},
}

#: The CNN on Fashion-MNIST (128 examples, MSE on one-hot targets; ``paper_repro/rodflow/tracking.py``),
#: scanned on seed 3 (the sweep reports seeds 0–2) over 400 steps, sharpness every 10 steps: onset k* of
#: sustained EoS (rodflow.compare.eos_onset) and the mean preconditioned sharpness ÷ threshold over steps
#: 300–400. gd 0.05: k* 140, 1.02 (0.1 and 0.2 start at the edge: the initial sharpness is ≈ 20);
#: nesterov 0.0325: k* 40, 1.02 (0.03: k* 50 but 0.84 late; 0.035: k* 30; 0.05 diverges at step 162);
#: scalar_rmsprop 0.05: k* 90, 1.07; rmsprop 3e-3: k* 40, 1.05 (1e-2: k* 40, 1.08, but the loss grows
#: 0.50 → 4.8); adam 0.06: k* 240, 0.96 (0.01: never, 0.66; 0.03: never, 0.84); scalar_nadam 0.2: k* 60,
#: 1.04; nadam 0.04: k* 110, 1.02, the loss bounded but above its start after the onset (0.06: k* 120,
#: 1.09, the loss 41 by step 400).
#: heavy_ball has no sustained edge short of divergence: 0.1 stays below it (0.72 late, the loss → 3e-4),
#: 0.11, 0.125, 0.135, 0.15 diverge at steps 150–175. scalar_adam has none within the run either: 0.1, 0.2, 0.3,
#: 0.5, 1.0 never reach it (0.54, 0.72, 0.81, 0.81, 0.39 late), 2.0 only at k* 390 of 400 (0.94 late).
#: MSE rather than cross-entropy: with cross-entropy GD's sharpness leaves the edge as the 128 examples
#: are fitted (0.2: k* 20, 0.67 late; 0.1: k* 130, 0.92 late).
_FASHION_EOS: dict[str, dict[str, Any]] = {
    "gd": {"lr": 0.05},
    "nesterov": {"lr": 0.0325, "momentum": 0.9},
    "scalar_rmsprop": {"lr": 0.05},
    "rmsprop": {"lr": 3e-3},
    "adam": {"lr": 0.06},
    "scalar_nadam": {"lr": 0.2, "momentum_decay": None},
    "nadam": {"lr": 0.04, "momentum_decay": None},
}

HYPERPARAMETERS: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
    "digits": {
        "train": {
            "gd": {"lr": 0.5},
            "heavy_ball": {"lr": 0.05, "momentum": 0.9},
            "nesterov": {"lr": 0.05, "momentum": 0.9},
            "scalar_rmsprop": {"lr": 0.01},
            "rmsprop": {"lr": 1e-3},
            "scalar_adam": {"lr": 0.01},
            "adam": {"lr": 1e-3},
            "scalar_nadam": {"lr": 0.01},
            "nadam": {"lr": 1e-3},
            "vradam": {"lr": 1e-3},
        },
        "eos": _DIGITS_EOS,
    },
    "mnist5k": {"eos": _DIGITS_EOS},
    "fashion": {"eos": _FASHION_EOS},
    "quadratic": {
        "unit": {
            "gd": {"lr": 0.1},
            "heavy_ball": {"lr": 0.1, "momentum": 0.9},
            "nesterov": {"lr": 0.1, "momentum": 0.9},
            "scalar_rmsprop": {"lr": 0.01, "alpha": 0.9, "eps": 1e-3},
            "rmsprop": {"lr": 0.01, "alpha": 0.9, "eps": 1e-3},
            "scalar_adam": {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-3},
            "adam": {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-3},
            "scalar_nadam": {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-3, "momentum_decay": None},
            "nadam": {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-3},  # μ-schedule: μ_t → β1 at large t
            "vradam": {"lr": 0.01, "betas": (0.9, 0.99), "eps": 1e-3, "beta3": 3.0},
        },
    },
}


def hyperparameters(task: str, regime: str) -> dict[str, dict[str, Any]]:
    """A copy of the table ``HYPERPARAMETERS[task][regime]`` (optimizer name → keyword arguments)."""
    if task not in HYPERPARAMETERS:
        raise ValueError(f"task: unknown {task!r}; choose one of {', '.join(HYPERPARAMETERS)}")
    if regime not in HYPERPARAMETERS[task]:
        raise ValueError(f"regime: {task!r} has no {regime!r} table; choose one of {', '.join(HYPERPARAMETERS[task])}")
    return copy.deepcopy(HYPERPARAMETERS[task][regime])
