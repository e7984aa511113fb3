r"""Quadratics with a prescribed spectrum: :math:`L(\theta) = \tfrac12 (\theta-c)^\top H (\theta-c)`,
:math:`H = Q\,\mathrm{diag}(\lambda)\,Q^\top`."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .base import Problem

__all__ = ["quadratic", "random_rotation"]


def random_rotation(dim: int, *, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """A Haar-random orthogonal matrix (QR of a Gaussian matrix with the sign fix)."""
    gen = torch.Generator().manual_seed(seed)
    a = torch.randn(dim, dim, generator=gen, dtype=dtype)
    q, r = torch.linalg.qr(a)
    return q * torch.sign(torch.diagonal(r)).unsqueeze(0)


def quadratic(
    eigenvalues: Sequence[float] | Tensor,
    *,
    rotation: Tensor | None = None,
    seed: int | None = 0,
    center: Tensor | None = None,
    theta0: Tensor | None = None,
    dtype: torch.dtype = torch.float64,
) -> Problem:
    """The quadratic with Hessian ``H = Q diag(eigenvalues) Qᵀ`` and minimiser ``center`` (default 0).

    ``rotation`` gives Q; otherwise Q is Haar-random from ``seed`` (``seed=None``: Q = I).
    ``theta0`` defaults to a standard normal draw from ``seed`` (ones if ``seed`` is None).
    ``info`` holds ``hessian``, ``eigenvalues``, ``rotation`` and ``center``.
    """
    lam = torch.as_tensor(eigenvalues, dtype=dtype).reshape(-1)
    if lam.numel() == 0 or not bool(torch.isfinite(lam).all()):
        raise ValueError("eigenvalues must be a non-empty finite sequence")
    d = lam.numel()
    if rotation is None:
        q = torch.eye(d, dtype=dtype) if seed is None else random_rotation(d, seed=seed, dtype=dtype)
    else:
        q = torch.as_tensor(rotation, dtype=dtype)
        if q.shape != (d, d):
            raise ValueError(f"rotation must be {d}x{d}, got {tuple(q.shape)}")
        if not torch.allclose(q @ q.T, torch.eye(d, dtype=dtype), atol=1e-8):
            raise ValueError("rotation must be orthogonal")
    h = (q * lam) @ q.T
    h = 0.5 * (h + h.T)
    c = torch.zeros(d, dtype=dtype) if center is None else torch.as_tensor(center, dtype=dtype)
    if theta0 is None:
        if seed is None:
            theta0 = torch.ones(d, dtype=dtype)
        else:
            theta0 = torch.randn(d, generator=torch.Generator().manual_seed(seed + 1), dtype=dtype)

    def loss_fn(theta: Tensor) -> Tensor:
        x = theta - c.to(theta)
        return 0.5 * x @ (h.to(theta) @ x)

    return Problem(loss_fn=loss_fn, theta0=theta0.to(dtype),
                   info={"hessian": h, "eigenvalues": lam, "rotation": q, "center": c, "seed": seed})
