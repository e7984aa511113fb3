"""Runtime optimizers: ``torch.optim.Optimizer`` classes built on rodflow's mathematics."""

from .flowadam import FlowAdam
from .vradam import VRAdam

__all__ = ["FlowAdam", "VRAdam"]
