"""The one map between a live ``torch.optim`` optimizer and rodflow's phase space, both ways.

``spec_of(optimizer)`` gives the :class:`~rodflow.OptimizerSpec` whose exact step is the optimizer's
step (names and conventions from ``torch/optim/*.py``); ``state_of(optimizer, params)`` reads
θ, m, v and t from ``optimizer.state`` as a :class:`~rodflow.PhaseState` (flattened in the order of
``params``, as :func:`rodflow.flatten` does); ``load_state(optimizer, params, state)`` writes a
phase-space state back into the parameters and the optimizer's state. The Recorder, the EoS monitor
and the parity tests all go through here.

=====================================  ===============  ===============================================
torch optimizer                        spec             state: m, v, t
=====================================  ===============  ===============================================
``SGD(momentum=0)``                    ``gd``           —, —, counted by the caller
``SGD(momentum=β)`` / ``nesterov``     ``heavy_ball`` / ``momentum_buffer``, —, counted by the caller
                                       ``nesterov``
``Adam``, ``AdamW(weight_decay=0)``    ``adam``         ``exp_avg``, ``exp_avg_sq``, ``step``
``NAdam``                              ``nadam``        ``exp_avg``, ``exp_avg_sq``, ``step``
``RMSprop``                            ``rmsprop``      —, ``square_avg``, ``step``
``rodflow.FlowAdam`` (Adam mode)       ``adam``         ``exp_avg``, ``exp_avg_sq``, ``step``
``rodflow.VRAdam``                     ``vradam``       ``exp_avg``, ``exp_avg_sq``, ``step``
=====================================  ===============  ===============================================

Not mapped (:class:`NotMapped`, a ``ValueError`` that says why): weight decay (L2 or decoupled:
the specs have none), SGD dampening, AMSGrad, ``maximize``, centred or momentum RMSprop, VRAdam's
``norm_on="grad"``, parameter groups with different hyperparameters, and any other optimizer
class. Their states can still be read where the moments exist.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from .optimizers import OptimizerSpec
from .optimizers import optimizer as make_spec
from .phase import PhaseState

__all__ = ["MAPPED", "NotMapped", "load_state", "spec_and_state", "spec_of", "state_of"]


class NotMapped(ValueError):
    """The live optimizer (or this configuration of it) has no matching spec."""


def _mapped() -> dict[type, str]:
    from .optim import FlowAdam, VRAdam

    return {torch.optim.SGD: "sgd", torch.optim.Adam: "adam", torch.optim.AdamW: "adamw",
            torch.optim.NAdam: "nadam", torch.optim.RMSprop: "rmsprop", FlowAdam: "flowadam", VRAdam: "vradam"}


#: Names of the optimizer classes that map to a spec (see the module docstring).
MAPPED = ("SGD", "Adam", "AdamW", "NAdam", "RMSprop", "FlowAdam", "VRAdam")

# hyperparameters of each group that must all agree for one spec to describe the optimizer
_IGNORED = {"params", "foreach", "fused", "capturable", "differentiable", "initial_lr", "name"}


def _group(opt: torch.optim.Optimizer) -> dict[str, Any]:
    groups = opt.param_groups
    first = {k: v for k, v in groups[0].items() if k not in _IGNORED}
    for i, g in enumerate(groups[1:], 1):
        other = {k: v for k, v in g.items() if k not in _IGNORED}
        if other != first:
            diff = sorted(k for k in set(first) | set(other) if first.get(k) != other.get(k))
            raise NotMapped(f"optimizer: parameter group {i} differs from group 0 in {', '.join(diff)}; one spec "
                            "describes one set of hyperparameters")
    return first


def _scalar(x: Any) -> float:
    return float(x.item()) if isinstance(x, Tensor) else float(x)


def _refuse(kind: str, g: dict[str, Any], **checks: Any) -> None:
    for key, ok in checks.items():
        if key in g and g[key] != ok and not (ok == 0 and _scalar(g[key]) == 0.0):
            raise NotMapped(f"optimizer: {kind} with {key}={g[key]!r} is not mapped (the spec has no {key})")


def spec_of(opt: torch.optim.Optimizer) -> OptimizerSpec:
    """The spec whose exact step is ``opt``'s step (``NotMapped`` where there is none)."""
    if not isinstance(opt, torch.optim.Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(opt).__name__}")
    kind = _mapped().get(type(opt))
    if kind is None:
        raise NotMapped(f"optimizer: {type(opt).__name__} has no matching spec; mapped: {', '.join(MAPPED)}")
    g = _group(opt)
    lr = _scalar(g["lr"])
    if kind == "sgd":
        _refuse("SGD", g, weight_decay=0, dampening=0, maximize=False)
        mom = _scalar(g["momentum"])
        if mom == 0:
            return make_spec("gd", lr=lr)
        return make_spec("nesterov" if g["nesterov"] else "heavy_ball", lr=lr, momentum=mom)
    if kind in ("adam", "adamw", "flowadam"):
        _refuse(type(opt).__name__, g, weight_decay=0, amsgrad=False, maximize=False)
        return make_spec("adam", lr=lr, betas=tuple(g["betas"]), eps=g["eps"])
    if kind == "nadam":
        _refuse("NAdam", g, weight_decay=0, maximize=False)
        return make_spec("nadam", lr=lr, betas=tuple(g["betas"]), eps=g["eps"], momentum_decay=g["momentum_decay"])
    if kind == "rmsprop":
        _refuse("RMSprop", g, weight_decay=0, momentum=0, centered=False, maximize=False)
        return make_spec("rmsprop", lr=lr, alpha=g["alpha"], eps=g["eps"], bias_correction=False)
    _refuse("VRAdam", g, weight_decay=0, norm_on="velocity")
    return make_spec("vradam", lr=lr, betas=tuple(g["betas"]), eps=g["eps"], beta3=g["beta3"], alpha1=g["alpha1"],
                     power=g["power"])


# optimizer.state keys of the first and second moments, by class name (torch/optim/*.py, rodflow/optim/*.py)
_M_KEYS = ("exp_avg", "momentum_buffer")
_V_KEYS = ("exp_avg_sq", "square_avg")


def _params(opt: torch.optim.Optimizer, params: Iterable[Tensor] | None) -> list[Tensor]:
    if params is None:
        return [p for g in opt.param_groups for p in g["params"]]
    out = list(params)
    if not out:
        raise ValueError("params: no parameters given")
    return out


def state_of(opt: torch.optim.Optimizer, params: Iterable[Tensor] | None = None, *, t: int | None = None
             ) -> PhaseState:
    """θ, m, v, t of ``opt`` over ``params`` (default: its groups' parameters in order), flattened.

    Moments absent from ``optimizer.state`` (before the first step, or a method without them) are
    zeros where the optimizer has such a moment, ``None`` otherwise. t is the state's ``step``; an
    optimizer that keeps no count (torch's SGD) takes ``t``, the number of steps the caller counted.
    """
    ps = _params(opt, params)
    theta = torch.cat([p.detach().reshape(-1) for p in ps])
    states = [opt.state.get(p, {}) for p in ps]
    has = {key for st in states for key in st}
    kind = _mapped().get(type(opt))
    try:
        spec = spec_of(opt)
    except NotMapped:
        spec = None

    def gather(keys: Sequence[str], wanted: bool) -> Tensor | None:
        key = next((k for k in keys if k in has), None)
        if key is None:
            return torch.zeros_like(theta) if wanted else None
        return torch.cat([st[key].detach().reshape(-1) if key in st else torch.zeros(p.numel(), dtype=theta.dtype,
                                                                                      device=theta.device)
                          for st, p in zip(states, ps)])

    m = gather(_M_KEYS, spec is not None and spec.has_momentum)
    v = gather(_V_KEYS, spec is not None and spec.beta2 is not None)
    steps = [int(_scalar(st["step"])) for st in states if "step" in st]
    if steps and len(set(steps)) > 1:
        raise ValueError(f"optimizer: its parameters have taken different numbers of steps ({sorted(set(steps))})")
    if steps:
        t = steps[0]
    elif t is None:
        if kind == "sgd" and any(states):
            raise ValueError("t: torch's SGD does not count its steps; pass t (the number of steps taken)")
        t = 0
    if isinstance(t, bool) or not isinstance(t, int) or t < 0:
        raise ValueError(f"t must be a non-negative int, got {t!r}")
    return PhaseState(theta=theta, m=m, v=v, t=t)


def spec_and_state(opt: torch.optim.Optimizer, params: Iterable[Tensor] | None = None, *, t: int | None = None
                   ) -> tuple[OptimizerSpec, PhaseState]:
    """:func:`spec_of` and :func:`state_of` together."""
    return spec_of(opt), state_of(opt, params, t=t)


def load_state(opt: torch.optim.Optimizer, state: PhaseState, params: Iterable[Tensor] | None = None) -> None:
    """Write ``state`` into ``params`` (θ) and ``opt.state`` (m, v, t): the inverse of :func:`state_of`."""
    ps = _params(opt, params)
    spec = spec_of(opt)
    sizes = [p.numel() for p in ps]
    if state.theta.numel() != sum(sizes):
        raise ValueError(f"state: θ has {state.theta.numel()} entries, the parameters {sum(sizes)}")
    kind = _mapped()[type(opt)]
    chunks = {name: torch.split(x, sizes) for name, x in state.tensors().items() if x.ndim == 1}
    with torch.no_grad():
        for i, p in enumerate(ps):
            p.copy_(chunks["theta"][i].view_as(p))
            st = opt.state[p]
            if state.t == 0:
                st.clear()  # torch initialises lazily: zero moments
                continue
            if kind == "sgd":
                if spec.has_momentum and "m" in chunks:
                    st["momentum_buffer"] = chunks["m"][i].view_as(p).clone()
                continue
            step = torch.tensor(float(state.t), dtype=torch.float32)
            st["step"] = step
            if kind == "rmsprop":
                st["square_avg"] = chunks["v"][i].view_as(p).clone()
                continue
            st["exp_avg"] = chunks["m"][i].view_as(p).clone()
            st["exp_avg_sq"] = chunks["v"][i].view_as(p).clone()
            if kind == "nadam":
                from .optimizers.adam import nadam_mu_product

                g = opt.param_groups[0]
                st["mu_product"] = torch.tensor(nadam_mu_product(g["betas"][0], g["momentum_decay"], state.t))
            if kind == "flowadam":
                st.setdefault("prev_grad", torch.zeros_like(p))
            if kind == "vradam":
                st.pop("exp_avg_norm_sq", None)  # recomputed from exp_avg at the next step
