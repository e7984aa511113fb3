"""Flows of the optimizers: the stable, rod and central flows, each built from an optimizer's spec.

>>> import torch, rodflow
>>> prob = rodflow.problems.quadratic([1.0, 0.5], seed=0)
>>> spec = rodflow.optimizer("heavy_ball", lr=0.1, momentum=0.5)
>>> traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps=20)
>>> sol = rodflow.rod_flow(spec, prob.loss_fn).solve(traj)
>>> sol.theta.shape, sol.kind
(torch.Size([21, 2]), 'rod')
"""

from .base import RATES, Flow, FlowSolution
from .central import CentralFlow, central_flow
from .rod import RodFlow, rod_flow
from .stable import StableFlow, stable_flow

__all__ = ["RATES", "CentralFlow", "Flow", "FlowSolution", "RodFlow", "StableFlow", "central_flow", "rod_flow",
           "stable_flow"]
