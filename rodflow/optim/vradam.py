r"""VRAdam as a ``torch.optim.Optimizer`` (Vaidhyanathan, Schorling, Ares & Osborne, arXiv 2505.13196).

Per step, for each parameter group (‖·‖ over all of the group's parameters)::

    m_t = β1 m + (1 − β1) g                      # velocity
    s_t = β2 s + (1 − β2) g²
    η_t = lr / (1 + min(β3 ‖m_t‖^p, α1))         # raw m_t (norm_on="velocity") or g (norm_on="grad")
    θ  ← θ (1 − η_t λ) − η_t m̂_t / (√ŝ_t + ε)    # bias-corrected, AdamW's ε convention

Continuous time: the Lagrangian L = ½v² + (β3/4)v⁴ − V(x) gives (1 + 3β3‖v‖²) v̇ = −∇V(x), a
kinetic energy that grows quartically and so brakes fast motion; η_t is its discrete, capped form.
The discrete map and its flows live in :class:`rodflow.optimizers.vradam.VRAdam` (``"vradam"``).

Implementation: ‖m_t‖² comes from read-only reductions before the update,
β1²‖m‖² + 2β1(1 − β1)⟨m, g⟩ + (1 − β1)²‖g‖² (foreach norms and per-tensor dots, no copy of m_t); η_t
stays a 0-d tensor on the device and is handed as a tensor learning rate to torch's fused AdamW
kernel (``fused=True``, the default where available), so the update is one fused pass and
there is no host synchronisation. With ``fused=False`` torch's foreach AdamW runs with η_t as
a Python float (one scalar read per group per step).

Global statistic: under DDP the gradients (hence m_t) are identical on every rank and so is
η_t. With sharded parameters (FSDP, ZeRO) each rank holds a slice: pass ``process_group`` and
the squared norm is all-reduced (summed) over it before η_t is formed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.adam import adam as functional_adam

from ..optimizers.spec import check_betas, check_real
from .reductions import fusable, total_dot, total_sq_norm

__all__ = ["VRAdam"]


class VRAdam(Optimizer):
    """Velocity-regularized Adam (AdamW-style decoupled weight decay).

    Args:
        params: parameters or parameter groups.
        lr: base learning rate (stored under ``lr``, so every ``torch.optim.lr_scheduler`` works).
        betas: (β1, β2) as in Adam.
        beta3: strength of the velocity penalty.
        alpha1: cap of ``β3‖m‖^p`` (the rate never drops below ``lr/(1 + α1)``).
        eps: added to √ŝ (AdamW's convention).
        weight_decay: decoupled weight decay λ (default 0).
        power: the exponent p of the norm (default 2).
        norm_on: ``"velocity"`` (‖m_t‖, default) or ``"grad"`` (‖g_t‖).
        fused: use torch's fused AdamW kernel (default: where the parameters allow it).
        process_group: all-reduce the squared norm over this group (sharded parameters).

    >>> import torch
    >>> w = torch.nn.Parameter(torch.ones(3))
    >>> opt = VRAdam([w], lr=0.1, beta3=0.0)
    >>> w.grad = torch.ones(3); opt.step()
    >>> w.detach()   # β3 = 0 is AdamW: the first step moves each coordinate by lr
    tensor([0.9000, 0.9000, 0.9000])
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | Tensor = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float = 1.0,
        alpha1: float = 10.0,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        power: float = 2.0,
        norm_on: str = "velocity",
        fused: bool | None = None,
        process_group: Any = None,
    ):
        if isinstance(lr, Tensor):
            if lr.numel() != 1:
                raise ValueError("lr: a tensor learning rate must have one element")
        else:
            check_real("lr", lr, lo=0.0)
        betas = check_betas(betas)
        check_real("beta3", beta3, lo=0.0)
        check_real("alpha1", alpha1, lo=0.0)
        check_real("eps", eps, lo=0.0, lo_open=True)
        check_real("weight_decay", weight_decay, lo=0.0)
        check_real("power", power, lo=0.0, lo_open=True)
        if norm_on not in ("velocity", "grad"):
            raise ValueError(f"norm_on must be 'velocity' or 'grad', got {norm_on!r}")
        defaults = {"lr": lr, "betas": tuple(betas), "beta3": beta3, "alpha1": alpha1, "eps": eps,
                    "weight_decay": weight_decay, "power": power, "norm_on": norm_on, "fused": fused}
        super().__init__(params, defaults)
        self.process_group = process_group

    def __getstate__(self) -> dict[str, Any]:
        # a process group cannot be copied or pickled: a copy gets none (set it again if needed)
        return super().__getstate__()

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.process_group = state.get("process_group")
        for group in self.param_groups:
            group.setdefault("fused", None)
            group.setdefault("norm_on", "velocity")
            group.setdefault("power", 2.0)

    def effective_lr(self, group: dict[str, Any], sq_norm: Tensor) -> Tensor:
        """``η = lr / (1 + min(β3 · (‖·‖²)^{p/2}, α1))`` as a 0-d tensor."""
        penalty = torch.clamp(group["beta3"] * sq_norm ** (group["power"] / 2), max=group["alpha1"])
        return group["lr"] / (1.0 + penalty)

    @staticmethod
    def _squared_norm(norm_on: str, beta1: float, exp_avgs: list[Tensor], grads: list[Tensor]) -> Tensor:
        """‖m_t‖² (or ‖g‖²) before the update, from read-only reductions (float64, on the device).

        ``‖β1 m + (1 − β1) g‖² = β1²‖m‖² + 2β1(1 − β1)⟨m, g⟩ + (1 − β1)²‖g‖²``: no copy of m_t is made.
        """
        gg = total_sq_norm(grads)
        if norm_on == "grad":
            return gg
        mm, mg = total_sq_norm(exp_avgs), total_dot(exp_avgs, grads)
        return (beta1 * beta1 * mm + 2.0 * beta1 * (1.0 - beta1) * mg + (1.0 - beta1) ** 2 * gg).clamp_min(0.0)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One VRAdam step; ``closure`` (optional) re-evaluates the loss with gradients enabled."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            fused = group["fused"]
            if fused is None:
                fused = fusable(params)
            grads, exp_avgs, exp_avg_sqs, steps = [], [], [], []
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("VRAdam does not support sparse gradients")
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if fused else "cpu")
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                elif fused and state["step"].device != p.device:
                    state["step"] = state["step"].to(p.device)
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            beta1, beta2 = group["betas"]
            sq = self._squared_norm(group["norm_on"], beta1, exp_avgs, grads)
            if self.process_group is not None:
                dist.all_reduce(sq, op=dist.ReduceOp.SUM, group=self.process_group)
            eta = self.effective_lr(group, sq)
            functional_adam(params, grads, exp_avgs, exp_avg_sqs, [], steps, foreach=not fused, fused=fused,
                            decoupled_weight_decay=True, amsgrad=False, beta1=beta1, beta2=beta2,
                            lr=eta.to(params[0].dtype) if fused else float(eta),
                            weight_decay=group["weight_decay"], eps=group["eps"], maximize=False)
        return loss
