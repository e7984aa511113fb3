r"""Low-rank matrix factorization: :math:`L(U, V) = \frac{1}{2|\Omega|}\sum_{(i,j)\in\Omega}((UV^\top)_{ij} - Y_{ij})^2`."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Problem

__all__ = ["matrix_factorization"]


def matrix_factorization(
    n_rows: int = 20,
    n_cols: int = 15,
    *,
    rank: int = 3,
    true_rank: int | None = None,
    observed: float = 1.0,
    noise: float = 0.0,
    init_scale: float = 0.1,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> Problem:
    """Fit a rank-``rank`` factorization ``U Vᵀ`` to a rank-``true_rank`` target (default ``rank``).

    A fraction ``observed`` of the entries is observed (the mask is in ``info["mask"]``); ``noise``
    is the standard deviation of Gaussian noise added to the observed entries. θ = [vec(U), vec(V)].
    """
    for name, val in (("n_rows", n_rows), ("n_cols", n_cols), ("rank", rank)):
        if not isinstance(val, int) or val < 1:
            raise ValueError(f"{name} must be a positive int, got {val!r}")
    if not 0.0 < observed <= 1.0:
        raise ValueError(f"observed must lie in (0, 1], got {observed!r}")
    r_true = rank if true_rank is None else true_rank
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(n_rows, r_true, generator=gen, dtype=dtype)
    b = torch.randn(n_cols, r_true, generator=gen, dtype=dtype)
    clean = a @ b.T / r_true**0.5
    mask = torch.rand(n_rows, n_cols, generator=gen, dtype=dtype) < observed
    target = clean + noise * torch.randn(n_rows, n_cols, generator=gen, dtype=dtype)
    n_obs = int(mask.sum())
    theta0 = init_scale * torch.randn((n_rows + n_cols) * rank, generator=gen, dtype=dtype)
    maskf = mask.to(dtype)

    def loss_fn(theta: Tensor) -> Tensor:
        u = theta[: n_rows * rank].reshape(n_rows, rank)
        v = theta[n_rows * rank:].reshape(n_cols, rank)
        resid = (u @ v.T - target.to(theta)) * maskf.to(theta)
        return 0.5 * resid.square().sum() / n_obs

    return Problem(loss_fn=loss_fn, theta0=theta0,
                   info={"target": target, "clean": clean, "mask": mask, "rank": rank, "seed": seed})
