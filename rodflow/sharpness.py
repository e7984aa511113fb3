r"""Sharpness: Hessian-vector products and the top eigenvalues of the (preconditioned) Hessian.

The *sharpness* is the largest **algebraic** eigenvalue λ_max(H) of the training-loss Hessian —
not the largest in magnitude: the edge of stability concerns the most positive curvature, and a
spectrum dominated by a large negative eigenvalue still has a small sharpness. With a
preconditioner P (a positive vector, e.g. ``spec.preconditioner(state)``) the *preconditioned
sharpness* is λ_max(P^{-1/2} H P^{-1/2}) = λ_max(P⁻¹H), the quantity whose threshold each
optimizer spec gives (Cohen et al. 2022, arXiv 2207.14484).

HVPs use double backward: one backward pass with ``create_graph=True``, then one more backward
per vector through that graph (:class:`HessianOperator` reuses it for every product).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.sparse.linalg import ArpackNoConvergence, LinearOperator, eigsh, lobpcg
from torch import Tensor

from .derivatives import LossFn
from .optimizers.spec import OptimizerSpec
from .phase import PhaseState

__all__ = ["METHODS", "HessianOperator", "SharpnessResult", "SharpnessTracker", "hvp", "preconditioned_sharpness",
           "sharpness"]

#: Eigensolvers accepted by :func:`sharpness`.
METHODS = ("auto", "dense", "lanczos", "lobpcg", "power")
#: Largest dimension for which ``method="auto"`` builds the full Hessian. Measured here on a
#: 1210-parameter MLP: the full Hessian from 1210 HVPs took 0.9 s (``torch.func.hessian``: 3.5 s),
#: Lanczos to 1e-10 took 56 HVPs and 0.03 s.
DENSE_MAX_DIM = 300


class HessianOperator:
    """``v ↦ S H S v`` at a fixed θ, with ``S = P^{-1/2}`` (or the identity), counting products.

    The gradient graph is built once; every product is one more backward pass through it.
    """

    def __init__(self, loss_fn: LossFn, theta: Tensor, preconditioner: Tensor | None = None):
        if not isinstance(theta, Tensor) or theta.ndim != 1:
            raise ValueError("theta must be a flat tensor")
        self.theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(self.theta)
            (self.grad,) = torch.autograd.grad(loss, self.theta, create_graph=True)
        self.scale: Tensor | None = None
        if preconditioner is not None:
            p = torch.as_tensor(preconditioner, dtype=theta.dtype, device=theta.device)
            if p.shape != theta.shape:
                raise ValueError(f"preconditioner must have the shape of theta {tuple(theta.shape)}, "
                                 f"got {tuple(p.shape)}")
            if not bool((p > 0).all()) or not bool(torch.isfinite(p).all()):
                raise ValueError("preconditioner must be positive and finite")
            self.scale = p.rsqrt()
        self.dim = theta.numel()
        self.n_hvp = 0

    def __call__(self, vecs: Tensor) -> Tensor:
        """Products for ``vecs`` of shape ``[d]`` or ``[k, d]`` (the result has the same shape)."""
        single = vecs.ndim == 1
        v = vecs.unsqueeze(0) if single else vecs
        if v.shape[-1] != self.dim:
            raise ValueError(f"vec must have {self.dim} entries in its last axis, got shape {tuple(vecs.shape)}")
        v = v.to(self.theta)
        if self.scale is not None:
            v = v * self.scale
        rows = []
        for row in v:
            (hv,) = torch.autograd.grad(self.grad, self.theta, row, retain_graph=True)
            rows.append(hv)
        self.n_hvp += v.shape[0]
        out = torch.stack(rows)
        if self.scale is not None:
            out = out * self.scale
        return out[0] if single else out

    def dense(self, chunk: int = 256) -> Tensor:
        """The full (scaled) Hessian ``[d, d]``, built from ``d`` products."""
        eye = torch.eye(self.dim, dtype=self.theta.dtype, device=self.theta.device)
        h = torch.cat([self(eye[i: i + chunk]) for i in range(0, self.dim, chunk)])
        return 0.5 * (h + h.T)

    def scipy(self) -> LinearOperator:
        """The operator as a float64 :class:`scipy.sparse.linalg.LinearOperator` (for eigsh/lobpcg)."""

        def matmat(x: np.ndarray) -> np.ndarray:
            xt = torch.as_tensor(np.ascontiguousarray(x.T), device=self.theta.device)
            return self(xt).detach().cpu().double().numpy().T

        return LinearOperator((self.dim, self.dim), matvec=lambda x: matmat(x.reshape(-1, 1)).reshape(-1),
                              matmat=matmat, dtype=np.float64)


def hvp(loss_fn: LossFn, theta: Tensor, vec: Tensor) -> Tensor:
    """Hessian-vector product ``∇²L(θ) v`` by double backward; ``vec`` may be ``[k, d]`` (batched).

    >>> import torch
    >>> hvp(lambda th: (th ** 3).sum(), torch.tensor([1.0, 2.0]), torch.tensor([1.0, 1.0]))
    tensor([ 6., 12.])
    """
    return HessianOperator(loss_fn, theta)(vec).detach()


@dataclass
class SharpnessResult:
    """Top eigenpairs of the (preconditioned) Hessian.

    Attributes:
        eigenvalues: ``[k]`` in descending order (largest algebraic first).
        eigenvectors: ``[k, d]`` unit rows (in the preconditioned coordinates when a
            preconditioner was given).
        n_hvp: Hessian-vector products spent (counted).
        method: the eigensolver used.
    """

    eigenvalues: Tensor
    eigenvectors: Tensor
    n_hvp: int
    method: str

    @property
    def top(self) -> float:
        """λ_max as a Python float."""
        return float(self.eigenvalues[0])


def _orthonormal_start(warm: Tensor | None, k: int, d: int, dtype: torch.dtype, seed: int) -> np.ndarray:
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((d, k))
    if warm is not None:
        w = warm.detach().cpu().double().numpy().reshape(-1, d).T
        x[:, : min(k, w.shape[1])] = w[:, :k]
    q, _ = np.linalg.qr(x)
    return q


def _power(op: HessianOperator, k: int, tol: float, max_iter: int, warm: Tensor | None, seed: int) -> tuple[
        np.ndarray, np.ndarray]:
    if k != 1:
        raise ValueError("k: power iteration gives the top eigenvalue only (k=1)")
    v = torch.as_tensor(_orthonormal_start(warm, 1, op.dim, op.theta.dtype, seed)[:, 0]).to(op.theta)
    lam = torch.zeros((), dtype=op.theta.dtype)
    for _ in range(max_iter):
        hv = op(v)
        new = v @ hv
        v = hv / torch.linalg.vector_norm(hv)
        done = (new - lam).abs() <= tol * new.abs()
        lam = new
        if bool(done):
            break
    return np.array([float(lam)]), v.detach().cpu().double().numpy().reshape(-1, 1)


def sharpness(
    loss_fn: LossFn,
    theta: Tensor,
    *,
    k: int = 1,
    preconditioner: Tensor | None = None,
    method: str = "auto",
    tol: float = 1e-6,
    warm_start: Tensor | None = None,
    max_iter: int = 1000,
    seed: int = 0,
) -> SharpnessResult:
    """The top-``k`` (largest algebraic) eigenvalues of ∇²L(θ), or of P^{-1/2}∇²L(θ)P^{-1/2}.

    Methods: ``"dense"`` (the full Hessian from d HVPs and ``torch.linalg.eigvalsh``: exact),
    ``"lanczos"`` (``scipy.sparse.linalg.eigsh``, ``which="LA"``, as Cohen et al.'s EoS code),
    ``"lobpcg"`` (``scipy.sparse.linalg.lobpcg`` on HVP blocks, warm-started from
    ``warm_start``: along a trajectory the Hessian changes slowly), ``"power"`` (power
    iteration; it finds the largest *magnitude* — use it only where that is the top one), and
    ``"auto"`` (dense up to :data:`DENSE_MAX_DIM` parameters, else lanczos; warm-started Lanczos
    uses a small Krylov space, which measured cheaper than warm LOBPCG in ``benchmarks/sharpness.py``). ``tol`` is the solver's relative tolerance; ``warm_start`` is a ``[k, d]`` (or
    ``[d]``) guess of the eigenvectors, e.g. the previous result's.

    >>> import torch
    >>> h = torch.diag(torch.tensor([3.0, -5.0, 1.0], dtype=torch.float64))
    >>> res = sharpness(lambda th: 0.5 * th @ h @ th, torch.zeros(3, dtype=torch.float64))
    >>> res.top, res.method   # the largest algebraic eigenvalue, not -5
    (3.0, 'dense')
    """
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    op = HessianOperator(loss_fn, theta, preconditioner)
    d = op.dim
    if k > d:
        raise ValueError(f"k={k} exceeds the dimension {d}")
    if method == "auto":
        method = "dense" if d <= DENSE_MAX_DIM else "lanczos"
    if method == "dense":
        vals, vecs = torch.linalg.eigh(op.dense())
        order = torch.argsort(vals, descending=True)[:k]
        return SharpnessResult(eigenvalues=vals[order].detach(), eigenvectors=vecs[:, order].T.detach(),
                               n_hvp=op.n_hvp, method="dense")
    if method == "lanczos":
        if k >= d - 1:
            raise ValueError(f"k: lanczos needs k < d - 1 (d={d}); use method='dense'")
        v0, ncv = None, None
        if warm_start is not None:
            # from a good start a small Krylov space suffices (7 HVPs for 1e-7 at 1e5 parameters,
            # see benchmarks/sharpness.py); ARPACK's default would build ≥ 20 vectors regardless
            v0 = warm_start.detach().cpu().double().numpy().reshape(-1, d)[0]
            ncv = min(d - 1, 2 * k + 2)
        try:
            w, v = eigsh(op.scipy(), k=k, which="LA", tol=tol, v0=v0, ncv=ncv,
                         maxiter=max_iter if ncv is None else min(max_iter, 20))
        except ArpackNoConvergence:
            if ncv is None:
                raise
            # a small space can stall (e.g. a near-degenerate top pair): ARPACK's default size
            w, v = eigsh(op.scipy(), k=k, which="LA", tol=tol, v0=v0, maxiter=max_iter)
    elif method == "lobpcg":
        if 5 * k >= d:
            raise ValueError(f"k: lobpcg needs 5k < d (d={d}); use method='dense'")
        # a few extra block vectors make clusters at the top converge (results keep the top k)
        block = k + max(0, min(k + 2, (d - 1) // 5 - k))
        x0 = _orthonormal_start(warm_start, block, d, op.theta.dtype, seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not reaching the requested tolerance.*")
            w, v = lobpcg(op.scipy(), x0, largest=True, tol=tol, maxiter=max_iter)
    else:
        w, v = _power(op, k, tol, max_iter, warm_start, seed)
    idx = np.argsort(w)[::-1][:k]
    vals = torch.as_tensor(np.ascontiguousarray(w[idx]), dtype=theta.dtype, device=theta.device)
    vecs = torch.as_tensor(np.ascontiguousarray(v[:, idx].T), dtype=theta.dtype, device=theta.device)
    return SharpnessResult(eigenvalues=vals, eigenvectors=vecs, n_hvp=op.n_hvp, method=method)


def preconditioned_sharpness(spec: OptimizerSpec, state: PhaseState, loss_fn: LossFn, **kwargs: Any
                             ) -> SharpnessResult:
    """λ_max(P⁻¹H) at ``state`` with the spec's own preconditioner (compare with ``spec.threshold``)."""
    return sharpness(loss_fn, state.theta, preconditioner=spec.preconditioner(state), **kwargs)


class SharpnessTracker:
    """Sharpness along a run: raw and preconditioned λ_max, each warm-started from the last estimate.

    ``record(state)`` measures at one state; ``series()`` returns ``{"step", "sharpness",
    "preconditioned_step", "preconditioned_sharpness", "n_hvp"}``. The preconditioned series has
    its own steps: adaptive methods have no preconditioner before their first step (t = 0), so
    it starts at t ≥ 1 there instead of holding a placeholder value. Keyword arguments go to
    :func:`sharpness` (e.g. ``method``, ``tol``).
    """

    def __init__(self, spec: OptimizerSpec, loss_fn: LossFn, *, preconditioned: bool = True, **kwargs: Any):
        if "warm_start" in kwargs or "preconditioner" in kwargs:
            raise ValueError("SharpnessTracker sets warm_start and preconditioner itself")
        self.spec = spec
        self.loss_fn = loss_fn
        self.preconditioned = preconditioned
        self.kwargs = kwargs
        self._last: dict[str, Tensor | None] = {"raw": None, "pre": None}
        self._rows: dict[str, list[Any]] = {"step": [], "sharpness": [], "preconditioned_step": [],
                                            "preconditioned_sharpness": [], "n_hvp": []}

    def _measure(self, key: str, theta: Tensor, p: Tensor | None) -> SharpnessResult:
        res = sharpness(self.loss_fn, theta, preconditioner=p, warm_start=self._last[key], **self.kwargs)
        self._last[key] = res.eigenvectors
        return res

    def record(self, state: PhaseState) -> None:
        raw = self._measure("raw", state.theta, None)
        self._rows["step"].append(state.t)
        self._rows["sharpness"].append(raw.eigenvalues[0])
        n = raw.n_hvp
        if self.preconditioned:
            try:
                p = self.spec.preconditioner(state)
            except ValueError:
                p = None  # no preconditioner yet (adaptive methods at t = 0)
            if p is not None:
                pre = self._measure("pre", state.theta, p)
                self._rows["preconditioned_step"].append(state.t)
                self._rows["preconditioned_sharpness"].append(pre.eigenvalues[0])
                n += pre.n_hvp
        self._rows["n_hvp"].append(n)

    def series(self) -> dict[str, Tensor]:
        def vals(name: str) -> Tensor:
            rows = self._rows[name]
            return torch.stack(rows).detach().cpu() if rows else torch.zeros(0, dtype=torch.float64)

        return {"step": torch.tensor(self._rows["step"], dtype=torch.int64),
                "sharpness": vals("sharpness"),
                "preconditioned_step": torch.tensor(self._rows["preconditioned_step"], dtype=torch.int64),
                "preconditioned_sharpness": vals("preconditioned_sharpness"),
                "n_hvp": torch.tensor(self._rows["n_hvp"], dtype=torch.int64)}

