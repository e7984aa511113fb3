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

import copy
import functools
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
           "sharpness", "solve"]

#: Eigensolvers accepted by :func:`sharpness`.
METHODS = ("auto", "dense", "krylov", "lanczos", "lobpcg", "power")
#: Largest dimension for which ``method="auto"`` builds the full Hessian. Measured here (one
#: thread, batched HVPs) on digits MLPs: at d = 310 the full Hessian took 0.34 s against 0.02 s
#: (21 HVPs) for Lanczos to the same digits; at d = 1210, 0.46 s against 0.02 s; at d = 2410,
#: 4.5 s against 0.03 s. Exactness is worth that only where the matrix is tiny.
DENSE_MAX_DIM = 300


class HessianOperator:
    """``v ↦ S H S v`` at a fixed θ, with ``S = P^{-1/2}`` (or the identity), counting products.

    The gradient graph is built once (``create_graph=True``); every product is one more backward
    pass through it. A block ``[k, d]`` of vectors goes through one vectorised backward
    (``is_grads_batched``; measured 7× faster than k backward passes for the full Hessian of a
    1210-parameter MLP); ``batched=False`` loops over the rows instead, for losses whose
    backward cannot be vectorised. ``n_hvp`` counts vectors, not backward calls; ``finite`` says
    whether θ is finite (:func:`solve` refuses an operator at a non-finite θ).
    """

    def __init__(self, loss_fn: LossFn, theta: Tensor, preconditioner: Tensor | None = None, *,
                 batched: bool = True):
        if not isinstance(theta, Tensor):
            raise TypeError(f"theta must be a tensor, got {type(theta).__name__}")
        if theta.ndim != 1 or not theta.is_floating_point():
            raise ValueError(f"theta must be a flat floating-point tensor, got shape {tuple(theta.shape)} "
                             f"and dtype {theta.dtype}")
        self.theta = theta.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(self.theta)
            if not isinstance(loss, Tensor) or loss.numel() != 1:
                raise ValueError("loss_fn must return a scalar tensor")
            (self.grad,) = torch.autograd.grad(loss.reshape(()), self.theta, create_graph=True)
        self.loss = loss.detach().reshape(())
        self.finite = bool(torch.isfinite(self.theta).all())  # checked by solve, once per graph
        self.scale = None if preconditioner is None else self._scale_of(preconditioner)
        self.dim = theta.numel()
        self.batched = batched
        self.n_hvp = 0

    def _scale_of(self, preconditioner: Tensor) -> Tensor:
        """S = P^{-1/2}, after checking P."""
        p = torch.as_tensor(preconditioner, dtype=self.theta.dtype, device=self.theta.device)
        if p.shape != self.theta.shape:
            raise ValueError(f"preconditioner must have the shape of theta {tuple(self.theta.shape)}, "
                             f"got {tuple(p.shape)}")
        lo, hi = torch.aminmax(p)  # NaN propagates into both
        if not (float(lo) > 0 and float(hi) < float("inf")):
            raise ValueError("preconditioner must be positive and finite")
        return p.rsqrt()

    def scaled(self, preconditioner: Tensor) -> HessianOperator:
        """``v ↦ P^{-1/2} H P^{-1/2} v`` through this operator's gradient graph (no second forward and
        backward pass); ``n_hvp`` is counted separately."""
        op = copy.copy(self)
        op.scale, op.n_hvp = self._scale_of(preconditioner), 0
        return op

    def __call__(self, vecs: Tensor) -> Tensor:
        """Products for ``vecs`` of shape ``[d]`` or ``[k, d]`` (the result has the same shape)."""
        single = vecs.ndim == 1
        v = vecs.unsqueeze(0) if single else vecs
        if v.ndim != 2 or v.shape[-1] != self.dim:
            raise ValueError(f"vec must have shape [{self.dim}] or [k, {self.dim}], got {tuple(vecs.shape)}")
        if v.dtype != self.theta.dtype or v.device != self.theta.device:
            v = v.to(self.theta)
        if self.scale is not None:
            v = v * self.scale
        if not self.grad.requires_grad:  # the gradient does not depend on θ: H = 0
            out = torch.zeros_like(v)
        elif v.shape[0] == 1:  # the common case, with as few operations as possible
            out = torch.autograd.grad(self.grad, self.theta, v.view(self.dim), retain_graph=True)[0].view(1, -1)
        elif self.batched:
            (out,) = torch.autograd.grad(self.grad, self.theta, v, retain_graph=True, is_grads_batched=True)
        else:
            out = torch.stack([torch.autograd.grad(self.grad, self.theta, row, retain_graph=True)[0] for row in v])
        self.n_hvp += v.shape[0]
        out = out.detach()
        if self.scale is not None:
            out = out.mul_(self.scale)  # out is a new tensor (or the scaled copy of the input)
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


@dataclass(frozen=True)
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


#: Size of the random perturbation added to warm-start vectors (relative to their norm). An exact
#: eigenvector is a fixed point of LOBPCG and power iteration, so a warm start equal to the
#: second eigenvector (as after the top two cross) would be returned unchanged; this much noise
#: escapes it and measured no extra HVPs along a trajectory.
WARM_JITTER = 1e-2


def _orthonormal_start(warm: Tensor | None, k: int, d: int, dtype: torch.dtype, seed: int) -> np.ndarray:
    """``[d, k]`` orthonormal start vectors: the warm rows (jittered) first, random ones after."""
    gen = np.random.default_rng(seed)
    x = gen.standard_normal((d, k))
    if warm is not None:
        w = warm.detach().cpu().double().numpy().reshape(-1, d).T[:, :k]
        w = w / np.maximum(np.linalg.norm(w, axis=0), np.finfo(np.float64).tiny)
        j = w.shape[1]
        x[:, :j] = w + WARM_JITTER * x[:, :j] / np.sqrt(d)
    q, _ = np.linalg.qr(x)
    return q


def _power_run(op: HessianOperator, v: Tensor, shift: float, tol: float, max_iter: int) -> tuple[Tensor, Tensor]:
    """Power iteration on ``H − shift·I`` until the Rayleigh quotient changes by ≤ tol relative."""
    lam = op.theta.new_zeros(())
    for _ in range(max_iter):
        hv = op(v) - shift * v
        new = v @ hv
        v = hv / torch.linalg.vector_norm(hv).clamp_min(torch.finfo(hv.dtype).tiny)  # H = 0 gives λ = 0
        done = (new - lam).abs() <= tol * new.abs()
        lam = new
        if bool(done):  # one host sync per product: the stopping test needs it
            break
    return lam, v


def _power(op: HessianOperator, k: int, tol: float, max_iter: int, warm: Tensor | None, seed: int) -> tuple[
        np.ndarray, np.ndarray]:
    """Power iteration for λ_max: on H, and again on H − μI when H's dominant eigenvalue μ is negative.

    The second run's dominant eigenvalue is λ_max − μ ≥ 0, so the result is the largest
    *algebraic* eigenvalue either way; the two runs share ``max_iter`` products.
    """
    if k != 1:
        raise ValueError("k: power iteration gives the top eigenvalue only (k=1)")
    start = torch.as_tensor(_orthonormal_start(warm, 1, op.dim, op.theta.dtype, seed)[:, 0]).to(op.theta)
    lam, v = _power_run(op, start, 0.0, tol, max_iter)
    mu = float(lam)
    if mu < 0 and op.n_hvp < max_iter:
        lam, v = _power_run(op, start, mu, tol, max_iter - op.n_hvp)
        lam = lam + mu
    return np.array([float(lam)]), v.detach().cpu().double().numpy().reshape(-1, 1)


def _lobpcg(op: HessianOperator, k: int, tol: float, max_iter: int, warm: Tensor | None, seed: int) -> tuple[
        np.ndarray, np.ndarray]:
    """scipy's LOBPCG, first on the warm-start block alone, then with guard vectors if that stalls.

    A warm block of k vectors converges in a few products (8 HVPs for 1e-7 at 1e5 parameters, see
    ``benchmarks/sharpness.py``); random guard vectors would need many iterations of their own
    before scipy's all-vectors stopping test passes. Cold starts, and warm ones that stall
    (e.g. on a near-degenerate top pair), use ``k + min(k + 2, …)`` vectors, which make clusters
    at the top converge. Convergence: every kept residual ``‖Hv − λv‖ ≤ tol``.
    """
    warm_rows = 0 if warm is None else warm.reshape(-1, op.dim).shape[0]
    guarded = k + max(0, min(k + 2, (op.dim - 1) // 5 - k))
    attempts = ([(k, min(max_iter, 20))] if warm_rows >= k else []) + [(guarded, max_iter)]
    for block, iters in attempts:
        x0 = _orthonormal_start(warm, block, op.dim, op.theta.dtype, seed)
        with warnings.catch_warnings():  # convergence is checked below, on the kept vectors only
            warnings.filterwarnings("ignore", message="Exited",
                                    category=UserWarning)
            w, v, history = lobpcg(op.scipy(), x0, largest=True, tol=tol, maxiter=iters,
                                   retResidualNormsHistory=True)
        residuals = np.atleast_1d(history[-1])[np.argsort(w)[::-1][:k]]
        if bool((residuals <= tol).all()):
            break
    else:
        warnings.warn(f"lobpcg: residuals {residuals.max():.2e} above tol={tol:g} after max_iter={max_iter} "
                      "iterations; raise max_iter or use method='lanczos'", RuntimeWarning, stacklevel=3)
    return w, v


#: Largest basis of :func:`_krylov` before a thick restart (plus k; the top k + 2 Ritz vectors are kept).
KRYLOV_BASIS = 24


def _krylov(op: HessianOperator, k: int, tol: float, max_iter: int, warm: Tensor | None, seed: int) -> tuple[
        Tensor, Tensor]:
    r"""Block Lanczos–Rayleigh–Ritz from the warm block, stopped as soon as every kept residual is small:

    .. math::

        V^\top H V\, y_i = \theta_i y_i,\quad u_i = V y_i,\qquad
        \lVert H u_i - \theta_i u_i\rVert \le \mathrm{tol}\cdot\max_j |\theta_j|.

    V grows by F = (I − VVᵀ) H V_last, the last block's images made orthogonal to V with full
    reorthogonalisation: a first Gram–Schmidt pass against the last two blocks, where the
    three-term recurrence puts the images, then one against all of V ("twice is enough"); the two
    passes' coefficients are the new rows of T = VᵀHV. For such a basis HV = VT + F E_lastᵀ (to
    rounding), and with F = C Q (Q the next block) each residual is Q Cᵀ y_i[last], of norm
    ‖Cᵀ y_i[last]‖: known on the host, no image is kept. Rows of F left under 1e-6 of their norm
    by Gram–Schmidt are dropped (numerically dependent); what they leave out of the relation is
    bounded by the triangle inequality, and where only that bound stands above the tolerance the
    residuals are formed with k more products. A thick restart (basis above
    :data:`KRYLOV_BASIS` + k) keeps the top k + 2 Ritz vectors U and the next block Q, for which
    HU = UΘ + Q (C Y_last)ᵀ: the relation, hence the residuals, survive it without products.
    θ_i ≤ λ_i (Cauchy interlacing), and some eigenvalue lies within the residual of each θ_i.

    Between two products the loop runs few operations (two ``[b, m] × [m, d]`` products over all of
    V, two over the last blocks, a norm, an m × m ``eigh`` on the host): each starts with the caches
    the product has just evicted, so it costs several times its isolated time.
    """
    d = op.dim
    dtype, device = op.theta.dtype, op.theta.device
    x = _random_rows(seed, k, d, dtype, device)  # shared: read, never written
    if warm is not None:
        w = warm.detach().reshape(-1, d)[:k].to(device=device, dtype=dtype)
        w = w / torch.linalg.vector_norm(w, dim=1, keepdim=True).clamp_min(torch.finfo(dtype).tiny)
        j = w.shape[0]
        x = torch.cat([torch.add(w, x[:j], alpha=WARM_JITTER / d ** 0.5), x[j:]])
    cap = min(d, KRYLOV_BASIS + 2 * k)
    basis = x.new_empty(cap + k, d)  # V, block by block, with room for the next block
    t = np.zeros((cap, cap))  # VᵀHV, float64 on the host
    lost = np.zeros(cap)  # per column j: the norm of H v_j's part that T and F miss (dropped rows)
    m, _, _ = _orthonormal_rows(x, basis, 0, k, passes=0)

    def ritz(y: np.ndarray) -> Tensor:
        return torch.from_numpy(y.T.copy()).to(device=device, dtype=dtype) @ basis[:m]

    expansions, lo, near = 0, 0, 0  # the last block is basis[lo:m]; the first pass reaches back to near
    while True:
        h = op(basis[lo:m])
        local = h @ basis[near:m].T
        f = torch.addmm(h, local, basis[near:m], alpha=-1)
        full = f @ basis[:m].T
        f = torch.addmm(f, full, basis[:m], alpha=-1)
        full[:, near:] += local
        rows = full.numpy(force=True)  # [b, m]: the new rows of T
        if m - lo == 1 and m < d:  # one vector: Gram–Schmidt is done, normalise
            norm = float(torch.linalg.vector_norm(f))
            kept = norm * norm > 1e-12 * (float(np.dot(rows[0], rows[0])) + norm * norm)
            if kept:
                torch.div(f, norm, out=basis[m: m + 1])
            nxt, c = m + kept, np.full((1, int(kept)), norm)
            lost[lo] = 0.0 if kept else norm
        else:
            nxt, c, lost[lo:m] = _orthonormal_rows(f, basis, m, min(k, d - m),
                                                   removed=np.square(rows).sum(axis=1), passes=0)
        t[lo:m, :m] = rows
        t[:m, lo:m] = rows.T
        vals, vecs = np.linalg.eigh(t[:m, :m])  # (LAPACK reads one triangle)
        top, y = vals[::-1][:k].copy(), vecs[:, ::-1]
        bound = tol * max(vals[-1], -vals[0])
        base = np.linalg.norm(c.T @ y[lo:m, :k], axis=0)  # ‖F y_i[last]‖
        est = base + lost[:m] @ np.abs(y[:, :k])  # ‖(HV − VT) y_i‖, bounded
        if m >= d or bool((est <= bound).all()):
            return torch.from_numpy(top), ritz(y[:, :k])
        if bool((base <= bound).all()):  # only dropped rows stand in the way: form the residuals
            u = ritz(y[:, :k])
            r = torch.addcmul(op(u), torch.from_numpy(top[:, None]).to(u), u, value=-1)
            if bool((torch.linalg.vector_norm(r, dim=1) <= bound).all()):
                return torch.from_numpy(top), u
        if expansions >= max_iter:
            warnings.warn(f"krylov: residuals {float(est.max()):.2e} above tol·max|θ| = {bound:.2e} after "
                          f"max_iter={max_iter} expansions; raise max_iter or tol", RuntimeWarning, stacklevel=3)
            return torch.from_numpy(top), ritz(y[:, :k])
        if nxt > cap or nxt == m == cap:  # thick restart: U (the top Ritz vectors), the next block Q, no products
            n, b = min(k + 2, m), nxt - m
            q = basis[m:nxt].clone()
            basis[:n] = ritz(y[:, :n])
            basis[n: n + b] = q
            lost[:n], lost[n:] = lost[:m] @ np.abs(y[:, :n]), 0.0
            t[:] = 0.0
            t[:n, :n] = np.diag(vals[::-1][:n])  # T[Q, U] = (C Y_last)ᵀ comes back with Q's products
            lo, m, near = n, n + b, 0
        else:
            lo, m, near = m, nxt, lo
        if m == lo:  # an invariant subspace: continue from a random direction
            r = torch.randn(1, d, generator=torch.Generator().manual_seed(seed + expansions + 1), dtype=dtype)
            m, _, _ = _orthonormal_rows(r.to(device), basis, m, 1)
            near = 0
        expansions += 1


@functools.lru_cache(maxsize=2)
def _random_rows(seed: int, k: int, d: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """``[k, d]`` standard normal rows from ``seed``, drawn once for repeated solves (e.g. one per
    probe of a monitor: 25k normals cost more than a few products' bookkeeping). Callers must not
    write to the result."""
    return torch.randn(k, d, generator=torch.Generator().manual_seed(seed), dtype=dtype).to(device)


def _orthonormal_rows(x: Tensor, basis: Tensor, m: int, m_max: int, *, removed: np.ndarray | None = None,
                      passes: int = 2) -> tuple[int, np.ndarray, np.ndarray]:
    """Write into ``basis[m:]`` at most ``m_max`` orthonormal rows Q spanning ``x`` minus its projection on
    ``basis[:m]`` (orthonormal rows): ``passes`` block Gram–Schmidt passes against ``basis[:m]``
    (the caller may have made them, removing squared norms ``removed`` from the rows), then
    Gram–Schmidt within the block, twice per row. A row left with under 1e-6 of its norm is
    numerically dependent: it is dropped. Returns the new row count, C with ``x ≈ C Q + D``
    (``[rows, new]``) and the norms of D's rows (what the dropped rows left)."""
    q = basis[:m]
    for _ in range(passes if m else 0):
        x = torch.addmm(x, x @ q.T, q, alpha=-1)
    b = x.shape[0]
    c, lost = np.zeros((b, min(b, m_max))), np.zeros(b)
    gone = np.zeros(b) if removed is None else removed
    start = m
    for i in range(b):
        row = x[i: i + 1]
        left = float(torch.linalg.vector_norm(row)) ** 2 if m > start else 0.0
        for _ in range(2 if m > start else 0):
            new = basis[start:m]
            coefs = row @ new.T
            c[i, : m - start] += coefs.numpy(force=True)[0]
            row = torch.addmm(row, coefs, new, alpha=-1)
        norm = float(torch.linalg.vector_norm(row))
        if m - start < m_max and norm ** 2 > 1e-12 * (gone[i] + max(left, norm ** 2)):
            torch.div(row, norm, out=basis[m: m + 1])
            c[i, m - start] = norm
            m += 1
        else:
            lost[i] = norm
    return m, c[:, : m - start], lost


def _check(k: int, method: str, tol: float, max_iter: int) -> None:
    if method not in METHODS:
        raise ValueError(f"method: unknown {method!r}; choose one of {', '.join(METHODS)}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive int, got {k!r}")
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol!r}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int | np.integer) or max_iter < 1:
        raise ValueError(f"max_iter must be a positive int (the solver's iteration cap), got {max_iter!r}")


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

    The sharpness of the edge of stability is the largest *algebraic* eigenvalue: every method
    returns the top-``k`` eigenvalues in descending algebraic order (a large negative eigenvalue
    is not the sharpness).

    Methods:

    * ``"dense"``: the full Hessian from d (batched) HVPs and ``torch.linalg.eigh``; exact, for
      small d.
    * ``"lanczos"``: ``scipy.sparse.linalg.eigsh(which="LA")`` on a ``LinearOperator`` of HVPs, as
      Cohen et al.'s edge-of-stability code. ``tol`` is ARPACK's relative eigenvalue accuracy.
      With ``warm_start`` it starts from the first warm vector in a small Krylov space (2k + 2
      vectors) and falls back to ARPACK's default space if that stalls.
    * ``"lobpcg"``: ``scipy.sparse.linalg.lobpcg`` on HVP blocks, started from ``warm_start``:
      along a trajectory the Hessian changes slowly. ``tol`` bounds each residual
      ‖Hv − λv‖ of the unit eigenvectors (the eigenvalue error is at most that, and near its
      square over the spectral gap); a ``RuntimeWarning`` says when it is not reached.
    * ``"krylov"``: block Krylov–Rayleigh–Ritz in torch (:func:`_krylov`), started from
      ``warm_start`` and stopped as soon as every kept residual ‖Hu − θu‖ ≤ tol·max|θ|, checked
      after every block of products (a warm start that is still nearly right costs 1–3). Each θ
      is ≤ the true eigenvalue of its rank and has an eigenvalue within its residual; the error is
      near residual² / gap (the monitor's tol = 1e-2 measured ≤ 1.1e-3 relative on an MNIST MLP).
    * ``"power"``: power iteration (k = 1), shifted when the dominant eigenvalue is negative;
      for the benchmark. ``tol`` bounds the relative change of the Rayleigh quotient.
    * ``"auto"``: dense up to :data:`DENSE_MAX_DIM` parameters, else lanczos.

    With ``preconditioner=P`` (a positive ``[d]`` vector) the operator is P^{-1/2} H P^{-1/2},
    whose eigenvalues are those of P⁻¹H; eigenvectors are then in the scaled coordinates.
    ``warm_start`` is a ``[k, d]`` (or ``[d]``) guess of the eigenvectors, e.g. the previous
    result's ``eigenvectors``. ``max_iter`` caps the solver's iterations (power: products);
    ``seed`` fixes the random start vectors.

    >>> import torch
    >>> h = torch.diag(torch.tensor([3.0, -5.0, 1.0], dtype=torch.float64))
    >>> res = sharpness(lambda th: 0.5 * th @ h @ th, torch.zeros(3, dtype=torch.float64))
    >>> res.top, res.method   # the largest algebraic eigenvalue, not -5
    (3.0, 'dense')
    """
    _check(k, method, tol, max_iter)
    op = HessianOperator(loss_fn, theta, preconditioner)
    return solve(op, k=k, method=method, tol=tol, warm_start=warm_start, max_iter=max_iter, seed=seed)


def solve(op: HessianOperator, *, k: int = 1, method: str = "auto", tol: float = 1e-6,
          warm_start: Tensor | None = None, max_iter: int = 1000, seed: int = 0) -> SharpnessResult:
    """The top-``k`` eigenpairs of an operator already built (:func:`sharpness`'s arguments and methods):
    one gradient graph serves several solves, e.g. ``op`` and ``op.scaled(P)``."""
    _check(k, method, tol, max_iter)
    max_iter = int(max_iter)
    theta = op.theta.detach()
    if not op.finite:
        raise ValueError("theta is not finite (NaN or inf entries): the Hessian is undefined there")
    d = op.dim
    if k > d:
        raise ValueError(f"k={k} exceeds the dimension {d}")
    if warm_start is not None:
        if not isinstance(warm_start, Tensor):
            raise TypeError(f"warm_start must be a tensor, got {type(warm_start).__name__}")
        if warm_start.ndim not in (1, 2) or warm_start.shape[-1] != d or warm_start.numel() == 0:
            raise ValueError(f"warm_start must have shape [{d}] or [k, {d}], got {tuple(warm_start.shape)}")
    if method == "auto":
        method = "dense" if d <= DENSE_MAX_DIM else "lanczos"
    if not op.grad.requires_grad:  # ∇L does not depend on θ: H = 0, nothing to solve
        vecs = torch.eye(k, d, dtype=theta.dtype, device=theta.device)
        return SharpnessResult(eigenvalues=theta.new_zeros(k), eigenvectors=vecs, n_hvp=0, method=method)
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
        w, v = _lobpcg(op, k, tol, max_iter, warm_start, seed)
    elif method == "krylov":
        vals, vecs = _krylov(op, k, tol, max_iter, warm_start, seed)
        return SharpnessResult(eigenvalues=vals.to(theta), eigenvectors=vecs.detach(), n_hvp=op.n_hvp,
                               method="krylov")
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
    """Sharpness along a run: raw λ_max(H) and preconditioned λ_max(P⁻¹H), each warm-started.

    ``record(state)`` measures at one state (any :class:`~rodflow.PhaseState`: an iterate, or a
    point of a flow solution); ``series()`` returns::

        {"step": [n] int64, "sharpness": [n],
         "preconditioned_step": [m] int64, "preconditioned_sharpness": [m], "n_hvp": [n] int64}

    Each estimate starts from the previous one's eigenvectors (``warm_start``). Step 0: adaptive
    methods have no preconditioner before their first step (``spec.preconditioner`` raises
    ``ValueError`` at t = 0), so the preconditioned series keeps its own steps and starts at the
    first state with t ≥ 1, rather than holding a placeholder value. A uniform P = c·1 (GD, heavy
    ball, Nesterov: c = 1/η) needs no second eigensolve: λ_max(P⁻¹H) = λ_max(H)/c. ``n_hvp``
    counts the products spent at each recorded state. Keyword arguments go to
    :func:`sharpness` (e.g. ``method``, ``tol``); ``k`` > 1 keeps k eigenvectors for the warm
    start but records λ_max only.

    >>> import torch, rodflow
    >>> prob = rodflow.problems.quadratic([4.0, 1.0], seed=None)
    >>> spec = rodflow.optimizer("adam", lr=0.1)
    >>> tracker = SharpnessTracker(spec, prob.loss_fn)
    >>> state = spec.init(prob.theta0)
    >>> for _ in range(3):
    ...     tracker.record(state)
    ...     state = spec.step(state, rodflow.gradient(prob.loss_fn))
    >>> s = tracker.series()
    >>> s["step"].tolist(), s["preconditioned_step"].tolist(), s["sharpness"].tolist()
    ([0, 1, 2], [1, 2], [4.0, 4.0, 4.0])
    """

    def __init__(self, spec: OptimizerSpec, loss_fn: LossFn, *, preconditioned: bool = True, **kwargs: Any):
        if not isinstance(spec, OptimizerSpec):
            raise TypeError(f"spec must be an OptimizerSpec (see rodflow.optimizer), got {type(spec).__name__}")
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

    def _preconditioner(self, state: PhaseState) -> Tensor | None:
        if not self.preconditioned:
            return None
        try:
            return self.spec.preconditioner(state)
        except ValueError:
            if state.t >= 1:
                raise
            return None  # no preconditioner before the first step (adaptive methods at t = 0)

    def record(self, state: PhaseState) -> None:
        """Measure λ_max(H) (and λ_max(P⁻¹H) where P exists) at ``state``."""
        if not isinstance(state, PhaseState):
            raise TypeError(f"state must be a PhaseState, got {type(state).__name__}")
        raw = self._measure("raw", state.theta, None)
        self._rows["step"].append(int(state.t))
        self._rows["sharpness"].append(raw.eigenvalues[0])
        n = raw.n_hvp
        p = self._preconditioner(state)
        if p is not None:
            flat = p.reshape(-1)
            if bool((flat == flat[0]).all()):  # P = c·1: the same eigenproblem scaled by 1/c
                if not bool(flat[0] > 0) or not bool(torch.isfinite(flat[0])):
                    raise ValueError("preconditioner must be positive and finite")
                top = raw.eigenvalues[0] / flat[0]
            else:
                pre = self._measure("pre", state.theta, p)
                top = pre.eigenvalues[0]
                n += pre.n_hvp
            self._rows["preconditioned_step"].append(int(state.t))
            self._rows["preconditioned_sharpness"].append(top)
        self._rows["n_hvp"].append(n)

    def series(self) -> dict[str, Tensor]:
        """The recorded series as CPU tensors (see the class docstring for the keys)."""

        def vals(name: str) -> Tensor:
            rows = self._rows[name]
            return torch.stack(rows).detach().cpu() if rows else torch.zeros(0, dtype=torch.float64)

        return {"step": torch.tensor(self._rows["step"], dtype=torch.int64),
                "sharpness": vals("sharpness"),
                "preconditioned_step": torch.tensor(self._rows["preconditioned_step"], dtype=torch.int64),
                "preconditioned_sharpness": vals("preconditioned_sharpness"),
                "n_hvp": torch.tensor(self._rows["n_hvp"], dtype=torch.int64)}
