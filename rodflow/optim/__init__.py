"""Runtime optimizers: ``torch.optim.Optimizer`` classes built on rodflow's mathematics."""

from .vradam import VRAdam

__all__ = ["VRAdam"]
