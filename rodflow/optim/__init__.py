"""Runtime optimizers: ``torch.optim.Optimizer`` classes built on rodflow's mathematics."""

__all__: list[str] = []
