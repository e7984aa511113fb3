"""rodflow: continuous-time dynamics of Adam-family optimizers.

Discrete maps (:func:`optimizer`, :func:`iterate`), their stable and rod flows, edge-of-stability
measurements, recorded trajectories, and runtime flow optimizers, on one integrator.

The public names are loaded on first use (a module ``__getattr__``, PEP 562), so ``import rodflow``
and the ``rodflow`` command stay free of torch until something that needs it is touched.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name → the submodule that defines it
_EXPORTS: dict[str, str] = {
    "OPTIMIZERS": "optimizers",
    "NonFiniteError": "optimizers",
    "OptimizerSpec": "optimizers",
    "optimizer": "optimizers",
    "Comparison": "compare",
    "compare": "compare",
    "gradient": "derivatives",
    "value_and_grad": "derivatives",
    "iterate": "discrete",
    "FitResult": "fit",
    "fit_flow": "fit",
    "Flow": "flows",
    "FlowSolution": "flows",
    "central_flow": "flows",
    "rod_flow": "flows",
    "stable_flow": "flows",
    "IntegrationError": "integrate",
    "IntegrationResult": "integrate",
    "integrate": "integrate",
    "FlowAdam": "optim",
    "VRAdam": "optim",
    "PhaseState": "phase",
    "flatten": "phase",
    "unflatten": "phase",
    "SharpnessResult": "sharpness",
    "hvp": "sharpness",
    "preconditioned_sharpness": "sharpness",
    "sharpness": "sharpness",
    "Trajectory": "trajectory",
    "EoSMonitor": "monitor",
    "Recorder": "record",
}
_SUBMODULES = ("adapters", "plot", "problems")

__all__ = sorted([*_EXPORTS, *_SUBMODULES])


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])


class _Package(types.ModuleType):
    """The package module. Three public functions share their submodule's name (``integrate``,
    ``compare``, ``sharpness``); importing such a submodule binds it on the package, and this keeps
    the function there instead (the submodule stays in ``sys.modules`` for ``from rodflow.x import``)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if isinstance(value, types.ModuleType) and _EXPORTS.get(name) == name:
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    # ruff: noqa: F401
    from . import adapters, plot, problems
    from .compare import Comparison, compare
    from .derivatives import gradient, value_and_grad
    from .discrete import iterate
    from .fit import FitResult, fit_flow
    from .flows import Flow, FlowSolution, central_flow, rod_flow, stable_flow
    from .integrate import IntegrationError, IntegrationResult, integrate
    from .monitor import EoSMonitor
    from .optim import FlowAdam, VRAdam
    from .optimizers import OPTIMIZERS, NonFiniteError, OptimizerSpec, optimizer
    from .phase import PhaseState, flatten, unflatten
    from .record import Recorder
    from .sharpness import SharpnessResult, hvp, preconditioned_sharpness, sharpness
    from .trajectory import Trajectory
