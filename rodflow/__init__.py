"""rodflow: continuous-time dynamics of Adam-family optimizers.

Discrete maps (:func:`optimizer`, :func:`iterate`), their stable and rod flows, edge-of-stability
measurements, recorded trajectories, and runtime flow optimizers, on one integrator.
"""

from . import plot, problems
from .compare import Comparison, compare
from .derivatives import gradient, value_and_grad
from .discrete import iterate
from .fit import FitResult, fit_flow
from .flows import Flow, FlowSolution, rod_flow, stable_flow
from .integrate import IntegrationError, IntegrationResult, integrate
from .optim import FlowAdam, VRAdam
from .optimizers import OPTIMIZERS, NonFiniteError, OptimizerSpec, optimizer
from .phase import PhaseState, flatten, unflatten
from .record import Recorder
from .sharpness import SharpnessResult, hvp, preconditioned_sharpness, sharpness
from .trajectory import Trajectory

__all__ = [
    "OPTIMIZERS",
    "Comparison",
    "FitResult",
    "Flow",
    "FlowAdam",
    "FlowSolution",
    "IntegrationError",
    "IntegrationResult",
    "NonFiniteError",
    "OptimizerSpec",
    "PhaseState",
    "Recorder",
    "SharpnessResult",
    "Trajectory",
    "VRAdam",
    "compare",
    "fit_flow",
    "flatten",
    "gradient",
    "hvp",
    "integrate",
    "iterate",
    "optimizer",
    "plot",
    "preconditioned_sharpness",
    "problems",
    "rod_flow",
    "sharpness",
    "stable_flow",
    "unflatten",
    "value_and_grad",
]

__version__ = "0.1.0"
