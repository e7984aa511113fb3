r"""The central flow: the time-averaged trajectory of GD, scalar RMSProp and RMSProp at the edge of stability.

Cohen, Damian, Talwalkar, Kolter & Lee, "Understanding Optimization in Deep Learning with Central
Flows", ICLR 2025 (arXiv 2410.24206). Write the optimizer as preconditioned GD,
``w' = w − P⁻¹∇L(w)`` (GD: ``P = 1/η``; RMSProp: ``P = (√ν + ε)/η`` with ``ν`` the step's own
second moment). At the edge of stability the iterates oscillate, ``w = w̄ + δ``, along the top
eigenvectors of ``P⁻¹H``; the central flow models the time average ``w̄`` with the oscillation's
covariance ``Σ = E[δδᵀ]`` as an unknown. To second order in δ (time in steps):

.. math::

    \dot w = -P^{-1}\Big[\nabla L(w) + \tfrac12 \nabla_w\langle \Sigma, \nabla^2 L(w)\rangle\Big],\qquad
    \dot\nu = \kappa(1-\beta_2)\Big[\mathrm{sq}(\nabla L) + \mathrm{sq}_\Sigma(H\delta) - \nu\Big]

with ``E[sq(g)] = ∇L⊙² + diag(HΣH)`` (per coordinate) or ``‖∇L‖² + tr(HΣH)`` (scalar), κ = 1/β₂
(``rate="central"``, the paper's continuous-time EMA: ``ν_t − ν_{t−1} = (1−β₂)/β₂ (g_t² − ν_t)``)
or 1 (``rate="step"``). Σ lives on the critical subspace ``U`` (``HU = τPU``, ``UᵀPU = I``,
τ = 2): ``Σ = U X Uᵀ`` with ``X ⪰ 0``. With ``T_ij = ∇³L[u_i, u_j] = ∇(u_iᵀHu_j)``,

.. math::

    \tfrac12\nabla\langle\Sigma, H\rangle = \tfrac12\sum_{i,j} X_{ij} T_{ij}
    = \tfrac12\Big[\sum_i X_{ii} T_{ii} + 2\sum_{i<j} X_{ij} T_{ij}\Big].

**Weights 2 vs √2.** The paper's sum runs over all ordered pairs, so an off-diagonal pair counts
twice: the weight is 2. A √2 is right only inside an *isometric* vectorisation
``svec(X) = (X_ii, √2 X_ij)`` when it is applied to *both* factors of every inner product; the
JAX port (``mat_to_upper``/``upper_to_mat``) applies √2 to X against unscaled ``T_ij`` in ``ẇ`` and
1/√2 to the rows of ``dA/dt``, which is the paper's flow with every ``T_{i≠j}`` divided by √2. Only
runs with two or more eigenvalues at the edge see the difference. This module uses the paper's 2
(``tests/flows/test_central.py`` checks it on two degenerate critical directions, where only the
weight 2 stops both and makes Σ independent of the eigenbasis). The port's ν̇ also takes the
second derivative of the EMA along ``u_i, u_j`` rather than along the gradient oscillation
``Hu_i, Hu_j`` that the time average of ``g⊙g`` needs; this module uses ``Hu = τPu``.

**The complementarity problem.** Σ must keep the preconditioned sharpness at τ: with
``A = Uᵀ(τP − H)U = diag(τ − λ)`` (``A ⪰ 0`` is ``λ_max(P⁻¹H) ≤ τ`` on U),
``Ȧ_ij = τ u_iᵀṖu_j − T_ij·ẇ`` is affine in X. As in the paper's discretisation, the condition is
imposed on ``A`` one horizon ``h`` ahead (``h`` = the Euler substep ``1/substeps``; an eigenvalue
that overshot τ is pulled back within ``h``):

.. math::

    X \succeq 0,\qquad Y = M_0 + \mathcal B(X) \succeq 0,\qquad \langle X, Y\rangle = 0,
    \qquad M_0 = A + h\dot A(0),\ \ \mathcal B(X) = h[\dot A(X) - \dot A(0)].

``𝓑(X)_ij = h Σ_kl B_ijkl X_kl`` with ``B_ijkl = ½ T_ij·P⁻¹T_kl + τ u_iᵀ(∂P/∂ν · ν̇_kl)u_j`` and
``ν̇_kl = κ(1−β₂) τ² sq(Pu_k, Pu_l)`` (the gradient oscillation is ``Hδ = τPδ`` on U). Both parts
are Gram operators, so 𝓑 is symmetric positive semidefinite and the SDCP is the KKT system of the
convex program ``min_{X ⪰ 0} ⟨M₀, X⟩ + ½⟨X, 𝓑X⟩`` (:func:`solve_sdcp`). One active eigenvalue
gives the closed form ``X = max(0, −M₀/𝓑)``; for GD at ``λ = τ`` and ``h → 0``,
``X = 2 max(0, −⟨T, P⁻¹∇L⟩)/⟨T, P⁻¹T⟩``, i.e. ``ẇ = −P⁻¹ Π^⊥_{∇S} ∇L``: gradient flow projected
orthogonally (in P⁻¹) to the sharpness gradient, the paper's single-eigenvalue central flow.

**Predicted loss.** ``E[L(w̄ + δ)] ≈ L(w̄) + ½⟨H, Σ⟩ = L(w̄) + ½ Σ_i λ_i X_ii``
(:attr:`FlowSolution.predicted_loss`).

**Conventions.** The state is ``(W[, V])`` with ``V`` the step's own second moment (the paper's
``ν_t``, the trajectory's ``v_{t+1}``); :attr:`FlowSolution.v` reports the trajectory's ``v_t`` (V
one step earlier). Below the threshold (X = 0) the flow is gradient flow for GD, identical to
:func:`rodflow.stable_flow`; for RMSProp it is the paper's stable flow ``ẇ = −P(ν)⁻¹∇L``, which
differs from rodflow's stable flow (``D`` at ``N⁺``, state ``N = v_t``) by O(ν̇), a first-order
difference of the two continuous-time readings of the same map. No central flow is defined for
momentum methods (the paper's derivation needs ``w' = w − P⁻¹∇L`` with P smooth).

Eigenvectors come from :func:`rodflow.sharpness` on ``P^{-1/2}HP^{-1/2}``, warm-started from the
previous evaluation; only the ``k`` tracked eigenvalues with ``λ ≥ (1 − margin)τ`` enter the SDCP
and need third derivatives. Every gradient, HVP and third-derivative evaluation is counted in
``solution.config`` (``grad_evals``, ``hvp_evals``, ``third_evals``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from scipy.optimize import minimize
from torch import Tensor

from ..derivatives import LossFn, value_and_grad
from ..integrate import IntegrationError, SolverStats
from ..optimizers.spec import OptimizerSpec
from ..sharpness import DENSE_MAX_DIM, sharpness
from ..trajectory import Trajectory
from .base import Flow, FlowSolution, Y, _three_point
from .parts import next_n

__all__ = ["CENTRAL_OPTIMIZERS", "CentralFlow", "central_flow", "solve_sdcp", "third_derivatives"]

#: Default eigensolver tolerances (see :class:`CentralFlow`).
EIG_TOL = {"krylov": 1e-5, "lanczos": 1e-10, "lobpcg": 1e-6}
#: Optimizers with a central flow (preconditioned GD with a smooth preconditioner).
CENTRAL_OPTIMIZERS = ("gd", "scalar_rmsprop", "rmsprop")


def third_derivatives(loss_fn: LossFn, theta: Tensor, vecs: Tensor, pairs: list[tuple[int, int]]
                      ) -> tuple[Tensor, Tensor, Tensor]:
    """``L(θ)``, ``∇L(θ)`` and ``∇³L(θ)[u_i, u_j] = ∇_θ(u_iᵀ ∇²L(θ) u_j)`` for each pair, by autograd.

    ``vecs`` is ``[k, d]`` (rows u_i, held fixed); the result's third entry is ``[len(pairs), d]``.
    One forward pass and one gradient graph serve all pairs: per distinct ``j`` one backward of
    ``u_jᵀ∇L`` with a graph (giving ``Hu_j`` as a function of θ), per pair one backward of
    ``u_iᵀ(Hu_j)``. Measured on the digits MLP (``benchmarks/flows_central.py``): 6.0 ms per pair,
    against 4.7–6.8 ms for a central finite difference of two HVPs, whose relative error is 5e-11
    at best (ε = 1e-4) — no cheaper and not exact.
    """
    th = theta.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = loss_fn(th)
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError("loss_fn must return a scalar tensor")
        (g,) = torch.autograd.grad(loss.reshape(()), th, create_graph=bool(pairs))
        out = []
        hu: dict[int, Tensor] = {}
        for i, j in pairs:
            if j not in hu:
                (hu[j],) = torch.autograd.grad(g @ vecs[j], th, create_graph=True)
            if not hu[j].requires_grad:  # the Hessian does not depend on θ
                out.append(torch.zeros_like(th))
                continue
            (t_ij,) = torch.autograd.grad(hu[j] @ vecs[i], th, retain_graph=True, allow_unused=True)
            out.append(torch.zeros_like(th) if t_ij is None else t_ij)
    third = torch.stack(out).detach() if out else theta.new_zeros((0, theta.numel()))
    return loss.detach().reshape(()), g.detach(), third


def _sym4(b: np.ndarray) -> np.ndarray:
    """Symmetrise ``B_ijkl`` within each pair and between the pairs."""
    b = 0.5 * (b + b.transpose(1, 0, 2, 3))
    b = 0.5 * (b + b.transpose(0, 1, 3, 2))
    return 0.5 * (b + b.transpose(2, 3, 0, 1))


def solve_sdcp(m0: np.ndarray, b: np.ndarray, *, tol: float = 1e-12) -> np.ndarray:
    r"""Solve ``X ⪰ 0, Y = M₀ + 𝓑(X) ⪰ 0, ⟨X, Y⟩ = 0`` with ``𝓑(X)_ij = Σ_kl B_ijkl X_kl``.

    For a symmetric positive semidefinite ``B`` this is the KKT system of the convex program
    ``min_{X ⪰ 0} f(X) = ⟨M₀, X⟩ + ½⟨X, 𝓑X⟩`` (∇f = Y). ``M₀ ⪰ 0`` gives ``X = 0``; one
    dimension the closed form ``X = max(0, −M₀/B)``; otherwise ``X = RRᵀ`` with a square R
    (Burer–Monteiro: every local minimum of the factored problem is global for a convex objective
    at full rank) minimised by ``scipy.optimize.minimize`` (L-BFGS-B, gradient ``2YR``) from the
    diagonal closed forms, then refined on its face (a least-squares solve for X = QZQᵀ with Q
    spanning the range found). ``B`` is normalised to unit scale first. Where 𝓑 cannot hold an
    eigenvalue (B ≈ 0 along it while ``M₀ < 0``) no solution exists: X = 0 along it is returned.

    >>> import numpy as np
    >>> solve_sdcp(np.array([[-1.0]]), np.array([[[[4.0]]]]))
    array([[0.25]])
    """
    m0 = np.asarray(m0, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    a = m0.shape[0]
    if m0.shape != (a, a) or b.shape != (a, a, a, a):
        raise ValueError(f"m0 must be [a, a] and b [a, a, a, a], got {m0.shape} and {b.shape}")
    if not (np.isfinite(m0).all() and np.isfinite(b).all()):
        raise ValueError("m0 and b must be finite")
    if a == 0:
        return np.zeros((0, 0))
    m0 = 0.5 * (m0 + m0.T)
    if np.linalg.eigvalsh(m0).min() >= 0:
        return np.zeros((a, a))
    b = _sym4(b)
    scale = float(np.abs(b).max())
    if not scale > 0:
        return np.zeros((a, a))
    bs = b / scale  # solve with 𝓑/s, then X = X_s / s
    diag = np.array([bs[i, i, i, i] for i in range(a)])
    if a == 1:
        return np.array([[max(0.0, -m0[0, 0] / bs[0, 0, 0, 0]) / scale if bs[0, 0, 0, 0] > 1e-14 else 0.0]])
    bmat = bs.reshape(a * a, a * a)

    def fun(r_flat: np.ndarray) -> tuple[float, np.ndarray]:
        r = r_flat.reshape(a, a)
        x = r @ r.T
        y = m0 + (bmat @ x.reshape(-1)).reshape(a, a)
        f = float(np.sum(m0 * x) + 0.5 * np.sum(x * (y - m0)))
        return f, (2.0 * y @ r).reshape(-1)

    x0 = np.diag(np.where(diag > 1e-14, np.maximum(0.0, -np.diag(m0)) / np.maximum(diag, 1e-14), 0.0))
    r0 = np.linalg.cholesky(x0 + 1e-6 * (1.0 + np.trace(x0)) * np.eye(a))
    res = minimize(fun, r0.reshape(-1), jac=True, method="L-BFGS-B",
                   options={"maxiter": 2000, "gtol": tol, "ftol": tol * 1e-3})
    r = res.x.reshape(a, a)
    return _polish(m0, bmat, r @ r.T) / scale


def _polish(m0: np.ndarray, bmat: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Refine ``x`` on its face: with Q spanning range(x), solve ``Qᵀ(M₀ + 𝓑(QZQᵀ))Q = 0`` for Z
    by least squares and keep ``QZQᵀ`` if it is feasible and closer to complementarity."""
    a = m0.shape[0]
    vals, vecs = np.linalg.eigh(0.5 * (x + x.T))
    q = vecs[:, vals > 1e-9 * max(1.0, vals.max())]
    r = q.shape[1]
    if r == 0:
        return x
    # the linear map Z ↦ Qᵀ𝓑(QZQᵀ)Q on r×r matrices, as an [r², r²] matrix
    basis = np.eye(r * r).reshape(r * r, r, r)
    cols = [(q.T @ (bmat @ (q @ e @ q.T).reshape(-1)).reshape(a, a) @ q).reshape(-1) for e in basis]
    z = np.linalg.lstsq(np.stack(cols, axis=1), -(q.T @ m0 @ q).reshape(-1), rcond=None)[0].reshape(r, r)
    new = q @ (0.5 * (z + z.T)) @ q.T

    def gap(xx: np.ndarray) -> float:
        y = m0 + (bmat @ xx.reshape(-1)).reshape(a, a)
        return abs(float(np.sum(xx * y))) + max(0.0, -float(np.linalg.eigvalsh(0.5 * (y + y.T)).min()))

    if np.linalg.eigvalsh(0.5 * (z + z.T)).min() >= -1e-12 and gap(new) < gap(x):
        return new
    return x


def sdcp_residuals(m0: np.ndarray, b: np.ndarray, x: np.ndarray) -> dict[str, float]:
    """How far ``x`` is from solving :func:`solve_sdcp`'s problem: ``min eig X``, ``min eig Y``, ``⟨X, Y⟩``."""
    a = m0.shape[0]
    if a == 0:
        return {"min_eig_x": 0.0, "min_eig_y": 0.0, "complementarity": 0.0}
    y = m0 + (b.reshape(a * a, a * a) @ x.reshape(-1)).reshape(a, a)
    return {"min_eig_x": float(np.linalg.eigvalsh(0.5 * (x + x.T)).min()),
            "min_eig_y": float(np.linalg.eigvalsh(0.5 * (y + y.T)).min()),
            "complementarity": float(np.sum(x * y))}


class CentralFlow(Flow):
    """The central flow of ``spec`` (gd, scalar_rmsprop, rmsprop) on ``loss_fn``; state ``(W[, V])``.

    Args:
        k: eigenvectors of ``P^{-1/2}HP^{-1/2}`` tracked (warm-started from one evaluation to the next).
        substeps: Euler substeps per optimizer step (the default solver); also sets the SDCP's
            look-ahead horizon ``h = 1/substeps`` unless ``horizon`` is given.
        horizon: the look-ahead ``h`` of the complementarity condition (see the module docstring).
        margin: eigenvalues below ``(1 − margin)·τ`` are left out of the SDCP (X = 0 there).
        adaptive_k: track only one eigenvector beyond those within the margin (at most ``k``), so
            that a wide spectral gap below the edge costs fewer HVPs.
        eig_method, eig_tol: the eigensolver of :func:`rodflow.sharpness` and its tolerance
            (``"auto"``: dense up to ``DENSE_MAX_DIM`` parameters, the warm-started block Krylov
            solver above). ``eig_tol=None`` picks 1e-5 for Krylov (residual ≤ 1e-5·θ), 1e-10 for
            Lanczos (ARPACK's relative accuracy) and 1e-6 for the residuals of LOBPCG. On a
            30-step EoS run of a 610-parameter digits MLP, Lanczos at 1e-10 stayed within 2e-8 of
            the dense solve (at 1e-7: 4e-3, the flow amplifies eigenvector errors), LOBPCG at 1e-6
            within 6e-5. On 100 steps of GD at lr 1 on the 2410-parameter digits MLP (seed 1, from
            step 20, k = 3, all three at the edge), Krylov at 1e-5 stayed within 9e-7 of Lanczos at
            1e-10 with 108 HVPs per step against 287 (1e-4: 5e-5 at 68; 1e-6: 2e-8 at 127).
        rate: ``"central"`` (κ = 1/β₂, the paper's) or ``"step"`` (κ = 1) for ν.
        noise: gradient-noise variance σ² of the run (RMSProp only): ``ν̇`` gets ``+ κ(1 − β₂)E[sq(z)]``
            (:func:`~rodflow.flows.parts.next_n`).
    """

    kind = "central"

    def __init__(self, spec: OptimizerSpec, loss_fn: LossFn, *, k: int = 3, substeps: int = 4,
                 horizon: float | None = None, margin: float = 0.1, eig_method: str = "auto",
                 eig_tol: float | None = None, adaptive_k: bool = True, rate: str = "central",
                 noise: float | Tensor | None = None):
        super().__init__(spec, loss_fn, rate=rate, noise=noise)
        if spec.name not in CENTRAL_OPTIMIZERS:
            raise ValueError(f"spec: no central flow is defined for {spec.name!r}; central flows exist for "
                             f"{', '.join(CENTRAL_OPTIMIZERS)} (preconditioned GD) and none for momentum methods: "
                             "use rodflow.rod_flow or rodflow.stable_flow")
        for name, value in (("k", k), ("substeps", substeps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if horizon is not None and not (isinstance(horizon, int | float) and math.isfinite(horizon) and horizon > 0):
            raise ValueError(f"horizon must be a positive number or None, got {horizon!r}")
        if not (isinstance(margin, int | float) and 0 <= margin < 1):
            raise ValueError(f"margin must lie in [0, 1), got {margin!r}")
        if eig_tol is not None and not (isinstance(eig_tol, int | float) and eig_tol > 0):
            raise ValueError(f"eig_tol must be positive or None, got {eig_tol!r}")
        self.k = k
        self.adaptive_k = bool(adaptive_k)
        self.substeps = substeps
        self.horizon = float(horizon) if horizon is not None else 1.0 / substeps
        self.margin = float(margin)
        self.eig_method = eig_method
        self.eig_tol = None if eig_tol is None else float(eig_tol)
        self.vg = value_and_grad(loss_fn)
        self._reset()

    def _reset(self) -> None:
        self._warm: Tensor | None = None
        self._k_now = self.k
        self.nfe_grad = 0
        self.n_hvp = 0
        self.n_third = 0
        self.n_field = 0
        self._log: list[tuple[float, dict[str, Any]]] = []

    # ------------------------------------------------------------------ layout
    @property
    def names(self) -> tuple[str, ...]:
        return ("W", "V") if self.spec.beta2 is not None else ("W",)

    def _p(self, v: Tensor | None, s: float | Tensor, like: Tensor) -> Tensor:
        """``P = 1/D(ν, s)`` as a ``[d]`` vector (s: the number of the step being taken)."""
        d = self.spec.step_size(None, v, s)  # type: ignore[arg-type]
        if not isinstance(d, Tensor):
            return torch.full_like(like, 1.0 / d)
        return (1.0 / d).expand_as(like)

    def _cross(self, a: Tensor, b: Tensor) -> Tensor:
        """The bilinear form of ``sq``: ``a ⊙ b`` (per coordinate) or ``a·b`` (scalar)."""
        return (a * b).sum() if self.spec.scalar else a * b

    def _eigen(self, w: Tensor, p: Tensor) -> tuple[Tensor, Tensor]:
        """Top-k eigenvalues of ``P⁻¹H`` and their ``[k, d]`` θ-space vectors u (``uᵀPu = 1``)."""
        d = w.numel()
        k = min(self._k_now, d)
        method = self.eig_method
        if method == "auto":
            method = "dense" if d <= DENSE_MAX_DIM or 2 * k + 2 >= d else "krylov"
        tol = self.eig_tol if self.eig_tol is not None else EIG_TOL.get(method, 1e-6)
        res = sharpness(self.loss_fn, w, k=k, preconditioner=p, method=method, tol=tol,
                        warm_start=None if method == "dense" else self._warm)
        self._warm = res.eigenvectors
        self.n_hvp += res.n_hvp
        return res.eigenvalues, res.eigenvectors * p.rsqrt()

    def increment(self, t: float, y: Y) -> Y:
        """The central flow is an ODE of its own (no map behind it, order 1 only): its field."""
        return self._evaluate(t, y)[0]

    def _evaluate(self, t: Tensor | float, y: Y) -> tuple[Y, dict[str, Any]]:
        """The field and what it solved on the way (X, eigenvalues, the predicted loss)."""
        s = self.spec
        x = self.unpack(y)
        w, v = x["W"], x.get("V")
        tn = float(t) + 1.0
        tau = s.threshold
        p = self._p(v, tn, w)  # [d]
        lam, u = self._eigen(w, p)
        act = [i for i in range(lam.numel()) if float(lam[i]) >= (1.0 - self.margin) * tau]
        # track one eigenvector beyond the active ones (at most k): the next one to reach the edge
        # is the largest below it, and a smaller block costs fewer HVPs
        self._k_now = min(self.k, len(act) + 1) if self.adaptive_k else self.k
        a = len(act)
        ua = u[act]  # [a, d]
        pairs = [(i, j) for j in range(a) for i in range(j + 1)]
        loss, g, third = third_derivatives(self.loss_fn, w, ua, pairs)
        self.nfe_grad += 1
        self.n_third += len(pairs)
        self.n_field += 1
        tf = w.new_zeros((a, a, w.numel()))  # [a, a, d], T_ij symmetric
        for r, (i, j) in enumerate(pairs):
            tf[i, j] = third[r]
            tf[j, i] = third[r]
        dw0 = -g / p
        dw_x = -0.5 * tf / p  # [a, a, d]: ∂ẇ/∂X_ij (full sum over i, j)
        adot0 = -torch.einsum("ijd,d->ij", tf, dw0)
        bten = -torch.einsum("ijd,kld->ijkl", tf, dw_x)
        dv0 = dv_x = None
        if v is not None:
            b2 = s.beta2
            assert b2 is not None
            kappa = self._relax(b2) * (1.0 - b2)
            # κ(1 − β₂)(sq(g) + E[sq(z)] − ν): the EMA's increment N⁺ − N, noise term included
            dv0 = self._relax(b2) * (next_n(s, v, s.second_moment(g), g, self.noise) - v)
            pu = tau * p * ua  # [a, d]: Hu on the critical subspace
            dv_x = torch.stack([torch.stack([kappa * self._cross(pu[i], pu[j]) for j in range(a)])
                                for i in range(a)]) if a else None
            if a:
                assert dv_x is not None

                def pfun(vv: Tensor, ss: Tensor) -> Tensor:
                    return self._p(vv, ss, w)

                ts = torch.tensor(tn, dtype=w.dtype)
                # ∂P/∂ν: [d] (diagonal; for a scalar ν the expanded derivative of the one P). It is
                # infinite where ν = 0, i.e. where the gradient has always been 0 (inputs that are 0
                # on every example): ν̇ = 0 there, so those coordinates' P does not move.
                dp = torch.func.jvp(lambda vv: pfun(vv, ts), (v,), (torch.ones_like(v),))[1]
                dp = torch.where(torch.isfinite(dp), dp, torch.zeros_like(dp))
                pdot_t = torch.func.jvp(lambda tt: pfun(v, tt), (ts,), (torch.ones_like(ts),))[1]  # bias correction
                pdot0 = dv0 * dp + pdot_t
                adot0 = adot0 + tau * torch.einsum("id,d,jd->ij", ua, pdot0, ua)
                pdot_x = dv_x.unsqueeze(-1) * dp if s.scalar else dv_x * dp  # [a, a, d]
                bten = bten + tau * torch.einsum("id,kld,jd->ijkl", ua, pdot_x, ua)
        lam_a = lam[act]
        m0 = torch.diag(tau - lam_a) + self.horizon * adot0
        if not (bool(torch.isfinite(m0).all()) and bool(torch.isfinite(bten).all())):
            raise IntegrationError(f"central flow: the complementarity problem at t={float(t):g} is not finite "
                                   "(third derivatives or the preconditioner overflowed)", SolverStats())
        X = torch.as_tensor(solve_sdcp(m0.cpu().numpy(), (self.horizon * bten).cpu().numpy()),
                            dtype=w.dtype, device=w.device)
        dw = dw0 + torch.einsum("ij,ijd->d", X, dw_x)
        out: list[Tensor] = [dw]
        if v is not None:
            assert dv0 is not None
            dv = dv0 + (torch.einsum("ij,ij...->...", X, dv_x) if dv_x is not None else 0.0)
            out.append(dv)
        osc = torch.einsum("ij,id,jd->", X, ua, ua) if a else w.new_zeros(())
        aux = {"loss": float(loss), "predicted_loss": float(loss + 0.5 * (lam_a * torch.diagonal(X)).sum()),
               "eigenvalues": lam.detach().cpu(), "active": a, "X": X.detach().cpu(),
               "oscillation": float(osc.clamp_min(0).sqrt())}
        self._log.append((float(t), aux))
        return tuple(out), aux

    # ------------------------------------------------------------------ states
    def initial(self, trajectory: Trajectory, step: int = 0, *, centred: bool | None = None) -> Y:
        """``W``: the three-point centre of θ around ``step`` (the iterate itself at the first
        recorded row, or with ``centred=False``); ``V = v_{step+1}``, the second moment that the
        step from ``step`` uses."""
        k, _ = self._rows(trajectory, step, span=2)
        first = k == 0 or int(trajectory.t[k]) == 0
        use_centre = (not first) if centred is None else centred
        w = _three_point(trajectory.theta, k, 0)[0] if use_centre else trajectory.theta[k]
        out = [w.clone()]
        if "V" in self.names:
            if trajectory.v is None:
                raise ValueError("trajectory: the central flow of an adaptive method needs the recorded v")
            self._v_start = trajectory.v[k].clone()
            out.append(trajectory.v[k + 1].clone())
        return tuple(out)

    def predict(self, step: Tensor, ys: Y) -> dict[str, Tensor | None]:
        self._ys = ys
        x = dict(zip(self.names, ys))
        v = None
        if "V" in x:
            vv = x["V"]
            v = torch.cat([self._v_start.unsqueeze(0).to(vv), vv[:-1]])  # the trajectory's v_t = V(t − 1)
        return {"theta": x["W"], "centre": x["W"], "delta": None, "m": None, "v": v}

    # ------------------------------------------------------------------ solving
    def solve(self, trajectory: Trajectory, *, start: int = 0, steps: int | None = None,  # type: ignore[override]
              method: str = "euler", options: dict[str, Any] | None = None, **kwargs: Any) -> FlowSolution:
        """Solve from the iterates around ``start`` (see :meth:`Flow.solve`); Euler substeps of
        ``1/substeps`` by default. Fills ``predicted_loss`` and counts every derivative in
        ``config`` (``grad_evals``, ``hvp_evals``, ``third_evals``, and per modelled step)."""
        self._reset()
        if method == "euler" and options is None:
            options = {"step_size": 1.0 / self.substeps}
        sol = super().solve(trajectory, start=start, steps=steps, method=method, options=options, **kwargs)
        log = self._log
        ys = self._ys
        pred, osc, top, active = [], [], [], []
        for i, step in enumerate(sol.t.tolist()):
            hit = [aux for (tt, aux) in log if abs(tt - step) < 1e-9] if method == "euler" else []
            if hit:
                aux = hit[-1]
            else:  # no evaluation at this step (the last one, or an adaptive solver): evaluate here
                aux = self._evaluate(float(step), tuple(y[i] for y in ys))[1]
            pred.append(aux["predicted_loss"])
            osc.append(aux["oscillation"])
            top.append(float(aux["eigenvalues"][0]))
            active.append(aux["active"])
        sol.predicted_loss = torch.tensor(pred, dtype=sol.loss.dtype)
        n = len(sol) - 1
        sol.config.update({"grad_evals": self.nfe_grad, "hvp_evals": self.n_hvp, "third_evals": self.n_third,
                           "field_evals": self.n_field, "grads_per_step": self.nfe_grad / n,
                           "hvps_per_step": self.n_hvp / n, "thirds_per_step": self.n_third / n,
                           "oscillation": osc, "preconditioned_sharpness": top, "active": active})
        return sol

    def _extra_config(self) -> dict[str, Any]:
        return {"k": self.k, "adaptive_k": self.adaptive_k, "substeps": self.substeps, "horizon": self.horizon, "margin": self.margin,
                "eig_method": self.eig_method, "eig_tol": self.eig_tol}


def central_flow(spec: OptimizerSpec, loss_fn: LossFn, *, k: int = 3, substeps: int = 4, **kwargs: Any
                 ) -> CentralFlow:
    """The central flow of optimizer ``spec`` on ``loss_fn`` (see :class:`CentralFlow`).

    >>> import torch, rodflow
    >>> prob = rodflow.problems.quadratic([1.0, 0.5], seed=0)
    >>> spec = rodflow.optimizer("gd", lr=0.5)
    >>> traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps=8)
    >>> sol = rodflow.central_flow(spec, prob.loss_fn).solve(traj)
    >>> sol.kind, sol.theta.shape, sol.predicted_loss.shape
    ('central', torch.Size([9, 2]), torch.Size([9]))
    >>> rodflow.central_flow(rodflow.optimizer("adam"), prob.loss_fn)
    Traceback (most recent call last):
        ...
    ValueError: spec: no central flow is defined for 'adam'; ...
    """
    return CentralFlow(spec, loss_fn, k=k, substeps=substeps, **kwargs)
