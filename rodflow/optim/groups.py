"""Validation of a parameter group's hyperparameters, shared by FlowAdam and VRAdam.

``torch.optim.Adam`` accepts a group with ``lr=-5`` or ``betas=(2, 0.5)`` added later and diverges;
rodflow's optimizers check every group, at construction and in ``add_param_group``, and name the
group and the key in the error.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from ..optimizers.spec import check_betas, check_real

__all__ = ["check_group"]

#: key → (lower bound, open at the bound) for the real-valued keys that both optimizers share
_REAL = {"lr": (0.0, False), "eps": (0.0, True), "weight_decay": (0.0, False)}


def check_group(group: dict[str, Any], index: int, extra: dict[str, tuple[float, bool]] | None = None) -> None:
    """Raise ``ValueError``/``TypeError`` naming ``param_groups[index][key]`` for a bad value."""
    for key, (lo, lo_open) in {**_REAL, **(extra or {})}.items():
        if key not in group:
            continue
        value = group[key]
        name = f"param_groups[{index}]['{key}']"
        if key == "lr" and isinstance(value, Tensor):
            if value.numel() != 1 or not bool(value >= 0):
                raise ValueError(f"{name} must be a non-negative number or one-element tensor, got {value!r}")
            continue
        check_real(name, value, lo=lo, lo_open=lo_open)
    if "betas" in group:
        check_betas(group["betas"], name=f"param_groups[{index}]['betas']")
