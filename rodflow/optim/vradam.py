r"""VRAdam as a ``torch.optim.Optimizer`` (Vaidhyanathan, Schorling, Ares & Osborne, arXiv 2505.13196).

Per step, for each parameter group (‖·‖ the Euclidean norm over all of the group's parameters
that have a gradient)::

    m_t = β1 m + (1 − β1) g                      # velocity
    s_t = β2 s + (1 − β2) g²
    η_t = lr / (1 + min(β3 ‖m_t‖^p, α1))         # raw m_t (norm_on="velocity") or g (norm_on="grad")
    θ  ← θ (1 − η_t λ) − η_t m̂_t / (√ŝ_t + ε)    # bias-corrected, AdamW's ε convention

Continuous time. For a particle at x with velocity v = ẋ in a potential V, the Lagrangian

.. math::

    \mathcal L(x, v) = \tfrac12\|v\|^2 + \tfrac{\beta_3}{4}\|v\|^4 - V(x)

has the Euler–Lagrange equation ``(1 + β3‖v‖²) v̇ + 2β3⟨v, v̇⟩ v = −∇V(x)``: the mass is
``1 + 3β3‖v‖²`` along v (``1 + β3‖v‖²`` across it). In one dimension, and in the isotropic form
the paper discretizes,

.. math::

    \dot x = v,\qquad \dot v = -\frac{\nabla V(x)}{1 + 3\beta_3\|v\|^2},

so fast motion is braked. VRAdam keeps Adam's damping and preconditioning and puts this
velocity factor on the learning rate, with the constant 3 absorbed into β3 and the slow-down
capped at ``1 + α1``. The discrete map and its flows live in
:class:`rodflow.optimizers.vradam.VRAdamSpec` (registry name ``"vradam"``).

Implementation. ``‖m_t‖²`` is formed *before* the update from the next first moment itself,
``m_t = m + (1 − β1)(g − m)`` (``torch.lerp``, elementwise, as torch's kernels form it), squared and
summed per tensor without touching m (:func:`rodflow.optim.reductions.velocity_sq_norms`: torch's
foreach ops grouped by device and dtype; on the CPU in cache-sized pieces, so a step reads g and m
once more on top of AdamW; ``statistics="compile"`` runs it through ``torch.compile``). Each
tensor's last finite ``‖m_t‖²`` is kept under ``"exp_avg_norm_sq"`` (float64): a tensor whose m_t
holds a NaN contributes that value instead, so one bad element poisons only itself (as in AdamW),
not the group's rate. η_t stays a 0-d tensor on the device and is handed as a tensor learning
rate to torch's functional AdamW: the fused kernel (``fused=True``, the default where available) or, with
``fused=False``, the foreach kernel (on CUDA in its capturable form, which takes a tensor rate; on
CPU as a Python float, one device read). With the fused kernel no step reads a value back to the
host, and the step compiles with ``torch.compile(fullgraph=True)``.

Global statistic. Under DDP the gradients are averaged before ``step``, so m_t, ‖m_t‖ and η_t
are identical on every rank. With sharded parameters (FSDP, ZeRO) a rank holds a slice of every
tensor (or a subset of the tensors): pass ``process_group`` and the local squared norm is
all-reduced (summed) over it before η_t is formed; the power ``p`` is applied afterwards.

Differences from the authors' code (pranavjv/vradam): the learning rate is stored under ``lr``
(theirs under ``eta``, which breaks every ``torch.optim.lr_scheduler``), the default weight decay
is 0 as documented (theirs is 1e-5 against a docstring of 0), ``lr_cutoff`` is called ``alpha1``,
and for ``power ≠ 2`` the penalty is ``β3‖m‖₂^p`` as written in the paper, where theirs sums
``|m_i|^p`` (the two agree at the default ``p = 2``).
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
from .groups import check_group
from .reductions import check_statistics, fusable, sq_norms, velocity_sq_norms

__all__ = ["VRAdam"]

_NORM_KEY = "exp_avg_norm_sq"


class VRAdam(Optimizer):
    """Velocity-regularized Adam with AdamW's decoupled weight decay.

    Args:
        params: parameters or parameter groups.
        lr: base (largest) learning rate, stored under ``lr`` so every ``torch.optim.lr_scheduler``
            drives it; a float or a one-element tensor.
        betas: (β1, β2) as in Adam, each in [0, 1).
        beta3: strength β3 ≥ 0 of the velocity penalty (0 gives AdamW).
        alpha1: cap α1 ≥ 0 of ``β3‖m‖^p``: the rate never drops below ``lr/(1 + α1)``.
        eps: ε > 0 added to √ŝ (AdamW's convention).
        weight_decay: decoupled weight decay λ ≥ 0, applied as ``θ(1 − η_t λ)`` (default 0).
        power: the exponent p > 0 of the norm (default 2).
        norm_on: ``"velocity"`` (‖m_t‖, default) or ``"grad"`` (‖g_t‖).
        fused: use torch's fused AdamW kernel; ``None`` (default) uses it where the parameters allow.
        statistics: ``"foreach"`` (default: torch's eager foreach ops) or ``"compile"``
            (``torch.compile`` of the velocity norm); a group key like the others.
        process_group: all-reduce the squared norm over this group (sharded parameters only; not
            needed under DDP). It is not part of ``state_dict`` and a copy of the optimizer has none.

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
        statistics: str = "foreach",
        process_group: Any = None,
    ):
        if isinstance(lr, Tensor):
            if lr.numel() != 1:
                raise ValueError(f"lr: a tensor learning rate must have one element, got shape {tuple(lr.shape)}")
            if not bool(lr >= 0):
                raise ValueError(f"lr must be non-negative, got {float(lr)}")
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
        if fused is not None and not isinstance(fused, bool):
            raise ValueError(f"fused must be True, False or None, got {fused!r}")
        check_statistics(statistics)
        defaults = {"lr": lr, "betas": betas, "beta3": beta3, "alpha1": alpha1, "eps": eps,
                    "weight_decay": weight_decay, "power": power, "norm_on": norm_on, "fused": fused,
                    "statistics": statistics}
        super().__init__(params, defaults)
        if any(p.is_complex() for g in self.param_groups for p in g["params"]):
            raise ValueError("params: VRAdam's velocity norm is defined for real parameters; got a complex one "
                             "(view it as real with torch.view_as_real)")
        self.process_group = process_group

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """``torch.optim.Optimizer.add_param_group``, with the group's hyperparameters checked."""
        super().add_param_group(param_group)
        check_group(self.param_groups[-1], len(self.param_groups) - 1,
                    {"beta3": (0.0, False), "alpha1": (0.0, False), "power": (0.0, True)})
        statistics = self.param_groups[-1].get("statistics", "foreach")
        if statistics not in ("foreach", "compile"):
            raise ValueError(f"param_groups[{len(self.param_groups) - 1}]['statistics'] must be 'foreach' or "
                             f"'compile', got {statistics!r}")

    def __setstate__(self, state: dict[str, Any]) -> None:
        # Optimizer.__getstate__ keeps defaults, state and param_groups; a process group cannot
        # be copied or pickled, so a copy (or an unpickled optimizer) has none
        super().__setstate__(state)
        self.process_group = state.get("process_group")
        # groups saved by an older version, or by torch.optim.AdamW, lack some of VRAdam's keys
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load as ``torch.optim.Optimizer`` does, keeping the stored ‖m‖² in float64.

        (The base class casts every floating state tensor to its parameter's dtype; the norm
        would lose precision for float32 parameters and a resumed run would drift from an
        uninterrupted one.)
        """
        super().load_state_dict(state_dict)
        saved = state_dict["state"]
        for group, saved_group in zip(self.param_groups, state_dict["param_groups"]):
            for p, key in zip(group["params"], saved_group["params"]):
                value = saved.get(key, {}).get(_NORM_KEY)
                if value is not None:
                    self.state[p][_NORM_KEY] = value.to(device=p.device, dtype=torch.float64, copy=True)

    @staticmethod
    def effective_lr(group: dict[str, Any], sq_norm: Tensor) -> Tensor:
        """``η = lr / (1 + min(β3 · (‖·‖²)^{p/2}, α1))`` as a 0-d tensor, from the squared norm."""
        power = group["power"]
        norm_p = sq_norm if power == 2.0 else sq_norm ** (power / 2.0)
        penalty = torch.clamp(group["beta3"] * norm_p, max=group["alpha1"])
        return group["lr"] / (1.0 + penalty)

    @staticmethod
    def _velocity_sq_norms(beta1: float, exp_avgs: list[Tensor], grads: list[Tensor], prev: list[Tensor],
                           statistics: str) -> Tensor:
        """Per-tensor ``‖β1 m + (1 − β1) g‖²`` [n_tensors] (float64), without writing m; a non-finite
        value is replaced by the tensor's last finite one in ``prev`` (no host synchronisation)."""
        out = velocity_sq_norms(exp_avgs, grads, 1.0 - beta1, statistics)
        mm = torch.stack([q.to(out.device) for q in prev])
        return torch.where(torch.isfinite(out), out, mm)

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
            dev = params[0].device
            compiling = torch.compiler.is_compiling()
            fused = group["fused"]
            if fused is None:  # under torch.compile the foreach form, which the compiler fuses (as for torch's Adam)
                fused = fusable(params) and not compiling
            capturable = not fused and (dev.type == "cuda" or compiling)
            steps_on_device = fused or capturable
            velocity = group["norm_on"] == "velocity"
            grads, exp_avgs, exp_avg_sqs, steps, prev = [], [], [], [], []
            one_device = True
            for p in params:
                if p.grad.is_sparse:
                    raise RuntimeError("VRAdam does not support sparse gradients")
                one_device = one_device and p.device == dev
                state = self.state[p]
                if not state:
                    state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if steps_on_device else "cpu")
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state[_NORM_KEY] = torch.zeros((), dtype=torch.float64, device=p.device)
                elif steps_on_device and state["step"].device != p.device:
                    state["step"] = state["step"].to(p.device)
                if velocity:
                    if _NORM_KEY not in state:  # e.g. state loaded from a torch.optim.AdamW checkpoint
                        state[_NORM_KEY] = torch.linalg.vector_norm(state["exp_avg"]).to(torch.float64).square()
                    prev.append(state[_NORM_KEY])
                grads.append(p.grad)
                exp_avgs.append(state["exp_avg"])
                exp_avg_sqs.append(state["exp_avg_sq"])
                steps.append(state["step"])
            beta1, beta2 = group["betas"]
            if velocity:
                per_tensor = self._velocity_sq_norms(beta1, exp_avgs, grads, prev, group["statistics"])
                if one_device:
                    torch._foreach_copy_(prev, list(per_tensor.unbind()))
                else:
                    for x, y in zip(prev, per_tensor.unbind()):
                        x.copy_(y)
                sq = per_tensor.sum()
            else:  # a non-finite gradient tensor adds nothing to the penalty (its own update is AdamW's)
                sq = torch.nan_to_num(sq_norms(grads, group["statistics"]), nan=0.0, posinf=0.0).sum()
            if self.process_group is not None:
                dist.all_reduce(sq, op=dist.ReduceOp.SUM, group=self.process_group)
            eta = self.effective_lr(group, sq)
            # CUDA kernels read a tensor rate as float32; the CPU kernel reads it as a double
            lr: float | Tensor = (eta.to(dev, torch.float64 if dev.type == "cpu" else torch.float32)
                                  if steps_on_device else float(eta))
            # the kernel takes the tensors last-reduced first, while their m and g may still be in cache
            functional_adam(params[::-1], grads[::-1], exp_avgs[::-1], exp_avg_sqs[::-1], [], steps[::-1],
                            foreach=not fused, fused=fused,
                            capturable=capturable, decoupled_weight_decay=True, amsgrad=False, beta1=beta1,
                            beta2=beta2, lr=lr, weight_decay=group["weight_decay"], eps=group["eps"],
                            maximize=False)
        return loss
