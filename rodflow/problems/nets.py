"""Any ``torch.nn.Module`` + data + loss as a flat loss, via :func:`torch.func.functional_call`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from ..phase import flatten, unflatten
from .base import Problem
from .data import digits, one_hot

__all__ = ["cnn", "digits_mlp", "mlp", "module_problem"]

_ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "elu": nn.ELU, "softplus": nn.Softplus}


def mlp(sizes: Sequence[int], *, activation: str = "tanh", bias: bool = True, seed: int = 0,
        dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """A fully connected network with layer widths ``sizes`` (input first), PyTorch's default init."""
    if len(sizes) < 2 or any(not isinstance(s, int) or s < 1 for s in sizes):
        raise ValueError(f"sizes must be at least two positive ints, got {list(sizes)!r}")
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation: unknown {activation!r}; choose one of {', '.join(_ACTIVATIONS)}")
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(sizes)):
            layers.append(nn.Linear(a, b, bias=bias))
            if i < len(sizes) - 2:
                layers.append(_ACTIVATIONS[activation]())
        net = nn.Sequential(*layers).to(dtype)
    finally:
        torch.random.set_rng_state(gen_state)
    return net


def cnn(*, seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """A small tanh CNN for ``[n, 1, 28, 28]`` images, 10 logits (PyTorch's default init, seeded).

    conv 5×5 stride 2 (1→8 channels, 28→12) · tanh · conv 5×5 stride 2 (8→16, 12→4) · tanh · linear 256→10;
    5,994 parameters. The global random state is left as it was.
    """
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        net = nn.Sequential(nn.Conv2d(1, 8, 5, stride=2), nn.Tanh(), nn.Conv2d(8, 16, 5, stride=2), nn.Tanh(),
                            nn.Flatten(), nn.Linear(16 * 4 * 4, 10)).to(dtype)
    finally:
        torch.random.set_rng_state(gen_state)
    return net


def module_problem(module: nn.Module, inputs: Tensor, targets: Tensor, *, loss: str = "mse") -> Problem:
    """Full-batch loss of ``module`` on ``(inputs, targets)`` as a function of its flat parameters.

    ``loss="mse"`` is ``½·mean over examples of ‖f(x) − y‖²`` (targets of the output's shape, e.g.
    one-hot; the edge-of-stability convention of Cohen et al. 2021); ``loss="cross_entropy"``
    takes integer class targets. The module is used in whatever mode it is in (its buffers are
    held fixed); ``info`` holds ``module``, ``shapes`` and ``unflatten``.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
    if loss not in ("mse", "cross_entropy"):
        raise ValueError(f"loss must be 'mse' or 'cross_entropy', got {loss!r}")
    if inputs.shape[0] != targets.shape[0]:
        raise ValueError(f"inputs and targets disagree on the number of examples: "
                         f"{inputs.shape[0]} vs {targets.shape[0]}")
    params = {k: p.detach() for k, p in module.named_parameters()}
    buffers = {k: b.detach() for k, b in module.named_buffers()}

    def loss_fn(theta: Tensor) -> Tensor:
        out = functional_call(module, ({**unflatten(theta, params), **buffers},), (inputs.to(theta.dtype),))
        if loss == "mse":
            return 0.5 * (out - targets.to(out)).square().sum(dim=-1).mean()
        return F.cross_entropy(out, targets)

    return Problem(loss_fn=loss_fn, theta0=flatten(params).clone(),
                   info={"module": module, "shapes": {k: tuple(p.shape) for k, p in params.items()},
                         "unflatten": lambda th: unflatten(th, params), "loss": loss})


def digits_mlp(hidden: Sequence[int] = (32,), *, n: int | None = 512, activation: str = "tanh", seed: int = 0,
               loss: str = "mse", dtype: torch.dtype = torch.float64) -> Problem:
    """The embedded default: an MLP on scikit-learn's digits, full batch (MSE on one-hot targets)."""
    x, y = digits(n=n, seed=seed, dtype=dtype)
    net = mlp([x.shape[1], *hidden, 10], activation=activation, seed=seed, dtype=dtype)
    targets = one_hot(y, 10, dtype=dtype) if loss == "mse" else y
    prob = module_problem(net, x, targets, loss=loss)
    prob.info.update({"data": "sklearn digits", "n": x.shape[0], "hidden": tuple(hidden), "seed": seed})
    return prob
