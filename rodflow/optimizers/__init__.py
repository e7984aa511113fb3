"""The discrete zoo: one :class:`OptimizerSpec` per optimizer, chosen by name.

>>> import rodflow
>>> rodflow.optimizer("nesterov", lr=0.1, momentum=0.9).threshold  # doctest: +ELLIPSIS
1.357...
"""

from __future__ import annotations

from typing import Any

from .adam import Adam
from .momentum import GD, Momentum
from .rmsprop import RMSProp
from .spec import GradFn, NonFiniteError, OptimizerSpec
from .vradam import VRAdamSpec

__all__ = ["OPTIMIZERS", "GradFn", "NonFiniteError", "OptimizerSpec", "optimizer", "registry_name"]

_REGISTRY: dict[str, tuple[type[OptimizerSpec], dict[str, Any]]] = {
    "gd": (GD, {}),
    "heavy_ball": (Momentum, {"nesterov": False}),
    "nesterov": (Momentum, {"nesterov": True}),
    "scalar_rmsprop": (RMSProp, {"scalar": True}),
    "rmsprop": (RMSProp, {"scalar": False}),
    "scalar_adam": (Adam, {"scalar": True, "nesterov": False}),
    "adam": (Adam, {"scalar": False, "nesterov": False}),
    "scalar_nadam": (Adam, {"scalar": True, "nesterov": True}),
    "nadam": (Adam, {"scalar": False, "nesterov": True}),
    "vradam": (VRAdamSpec, {}),
}

#: Registered optimizer names, in the order of the zoo.
OPTIMIZERS: tuple[str, ...] = tuple(_REGISTRY)



def registry_name(spec: OptimizerSpec) -> str:
    """The registered name of ``spec``: the entry whose class and fixed flags it has."""
    for name, (cls, fixed) in _REGISTRY.items():
        if type(spec) is cls and all(getattr(spec, k) == v for k, v in fixed.items()):
            return name
    raise LookupError(f"{type(spec).__name__} with these flags is not a registered optimizer")


def optimizer(name: str, **hyperparameters: Any) -> OptimizerSpec:
    """The spec of optimizer ``name`` with the given hyperparameters (named as in ``torch.optim``)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {type(name).__name__}")
    if name not in _REGISTRY:
        raise ValueError(f"name: unknown optimizer {name!r}; choose one of {', '.join(_REGISTRY)}")
    cls, fixed = _REGISTRY[name]
    clash = {k for k in set(fixed) & set(hyperparameters) if hyperparameters[k] != fixed[k]}
    if clash:
        raise TypeError(f"{name}: {', '.join(sorted(clash))} is fixed by the name; it can only be passed with the value the name gives it")
    return cls(**{**hyperparameters, **fixed})
