"""The one map between a live ``torch.optim`` optimizer and the simulator: :class:`OptimizerSpec` and :class:`PhaseState`.

=====================================  ==============  ====================================================
optimizer (conditions)                 spec            state (``optimizer.state[p]`` keys → phase space)
=====================================  ==============  ====================================================
``SGD`` (momentum 0)                   ``gd``          ``step``: counted by the caller
``SGD(momentum=β, nesterov=...)``      ``heavy_ball``  ``momentum_buffer`` → m
  (dampening 0)                        / ``nesterov``
``Adam``, ``AdamW`` (weight_decay 0)   ``adam``        ``exp_avg`` → m, ``exp_avg_sq`` → v, ``step`` → t
``NAdam``                              ``nadam``       as Adam (``mu_product`` is recomputed from t)
``RMSprop`` (momentum 0, uncentred)    ``rmsprop``     ``square_avg`` → v, ``step`` → t
``rodflow.FlowAdam``                   ``adam``        as Adam (its ODE steps are not Adam steps)
``rodflow.VRAdam`` (norm on velocity)  ``vradam``      as Adam (``exp_avg_norm_sq`` is recomputed)
=====================================  ==============  ====================================================

Every mapped optimizer also needs ``maximize=False``, no ``amsgrad``, ``weight_decay=0`` and
equal hyperparameters in all parameter groups. AdamW's decoupled decay θ ← θ(1 − ηλ) (and L2
decay, which is a different loss) is not part of the specs, so ``AdamW(weight_decay>0)`` is *not
mapped* (:class:`NotMapped` says why); record its θ and loss only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer

from .optimizers import OptimizerSpec
from .optimizers import optimizer as make_spec
from .optimizers.adam import nadam_mu_product
from .phase import PhaseState

__all__ = ["NotMapped", "load_phase_state", "phase_state", "spec_from_config", "spec_of"]

_MOMENT_KEYS = {"m": ("exp_avg", "momentum_buffer"), "v": ("exp_avg_sq", "square_avg")}


class NotMapped(ValueError):
    """The optimizer (or its configuration) has no :class:`OptimizerSpec`; the message says why."""


def _rodflow_optims() -> tuple[type, type]:
    from .optim import FlowAdam, VRAdam

    return FlowAdam, VRAdam


def _group_hyperparameters(opt: Optimizer) -> dict[str, Any]:
    """The hyperparameters shared by every group (``NotMapped`` if groups differ)."""
    def plain(group: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, x in group.items():
            if k == "params":
                continue
            out[k] = float(x) if isinstance(x, Tensor) and x.numel() == 1 else x
        return out

    groups = [plain(g) for g in opt.param_groups]
    if any(g != groups[0] for g in groups[1:]):
        raise NotMapped(f"{type(opt).__name__}: the parameter groups have different hyperparameters; one spec "
                        "describes one group")
    return groups[0]


def _require(opt: Optimizer, hp: dict[str, Any], **expected: Any) -> None:
    for key, want in expected.items():
        got = hp.get(key, want)
        if got != want and not (isinstance(want, bool) and bool(got) == want):
            raise NotMapped(f"{type(opt).__name__}({key}={got!r}) is not mapped: the spec assumes {key}={want!r}")


def spec_of(opt: Optimizer) -> OptimizerSpec:
    """The :class:`OptimizerSpec` whose step is ``opt``'s step (``NotMapped`` if there is none)."""
    if not isinstance(opt, Optimizer):
        raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(opt).__name__}")
    hp = _group_hyperparameters(opt)
    cls = type(opt)
    flow_adam, vr_adam = _rodflow_optims()
    if hp.get("maximize"):
        raise NotMapped(f"{cls.__name__}(maximize=True) is not mapped")
    if cls is torch.optim.SGD:
        _require(opt, hp, dampening=0, weight_decay=0)
        if not hp["momentum"]:
            return make_spec("gd", lr=hp["lr"])
        return make_spec("nesterov" if hp["nesterov"] else "heavy_ball", lr=hp["lr"], momentum=hp["momentum"])
    if cls in (torch.optim.Adam, torch.optim.AdamW, flow_adam):
        if cls is torch.optim.AdamW and hp["weight_decay"]:
            raise NotMapped(f"AdamW(weight_decay={hp['weight_decay']}) is not mapped: its decoupled decay "
                            "θ ← θ(1 − lr·λ) is not part of the adam spec (weight_decay=0 maps to adam)")
        _require(opt, hp, weight_decay=0, amsgrad=False)
        return make_spec("adam", lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"])
    if cls is torch.optim.NAdam:
        _require(opt, hp, weight_decay=0)
        return make_spec("nadam", lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"],
                         momentum_decay=hp["momentum_decay"])
    if cls is torch.optim.RMSprop:
        _require(opt, hp, momentum=0, centered=False, weight_decay=0)
        return make_spec("rmsprop", lr=hp["lr"], alpha=hp["alpha"], eps=hp["eps"], bias_correction=False)
    if cls is vr_adam:
        _require(opt, hp, weight_decay=0)
        if hp.get("norm_on", "velocity") != "velocity":
            raise NotMapped("VRAdam(norm_on='grad') is not mapped: the vradam spec takes the velocity norm")
        return make_spec("vradam", lr=hp["lr"], betas=tuple(hp["betas"]), eps=hp["eps"], beta3=hp["beta3"],
                         alpha1=hp["alpha1"], power=hp["power"])
    raise NotMapped(f"{cls.__module__}.{cls.__name__} is not mapped to a rodflow spec")


def spec_from_config(config: dict[str, Any]) -> OptimizerSpec:
    """The spec recorded in a trajectory's ``config`` (``"optimizer"`` and ``"hyperparameters"``)."""
    name, hp = config.get("optimizer"), config.get("hyperparameters")
    if not isinstance(name, str) or not isinstance(hp, dict):
        raise ValueError("config: no optimizer spec recorded (an unmapped optimizer?); pass the spec explicitly")
    return dataclasses.replace(make_spec(name), **hp)  # the name's fixed flags are among hp, with equal values


def _params(opt: Optimizer, params: Iterable[Tensor] | None) -> list[Tensor]:
    if params is None:
        return [p for g in opt.param_groups for p in g["params"]]
    return list(params)


def _flat(parts: Sequence[Tensor]) -> Tensor:
    return torch.cat([x.detach().reshape(-1) for x in parts])


def phase_state(opt: Optimizer, params: Iterable[Tensor] | None = None, *, t: int | None = None) -> PhaseState:
    """``opt``'s state as a :class:`PhaseState` over ``params`` (default: the optimizer's, in group order).

    θ is the flat parameter vector (:func:`rodflow.flatten`'s order), m and v the moments in the
    same order (zeros for a parameter without state yet, ``None`` when the optimizer keeps
    none), t the step count (``state["step"]``, or ``t`` for optimizers that keep none).
    """
    ps = _params(opt, params)
    theta = _flat(ps)
    try:
        spec: OptimizerSpec | None = spec_of(opt)
    except NotMapped:
        spec = None
    out: dict[str, Tensor | None] = {}
    for name, keys in _MOMENT_KEYS.items():
        parts, found = [], False
        for p in ps:
            st = opt.state.get(p, {})
            x = next((st[k] for k in keys if k in st and isinstance(st[k], Tensor)), None)
            found |= x is not None
            parts.append(torch.zeros_like(p) if x is None else x)
        if spec is not None:  # the spec says which moments exist (torch creates them lazily)
            found = spec.has_momentum if name == "m" else spec.beta2 is not None
        out[name] = _flat(parts) if found else None
    steps = [opt.state.get(p, {}).get("step") for p in ps]
    known = [int(s) for s in steps if s is not None]
    step = max(known) if known else (t if t is not None else 0)
    return PhaseState(theta=theta, m=out["m"], v=out["v"], t=int(step))


def load_phase_state(opt: Optimizer, state: PhaseState, params: Iterable[Tensor] | None = None) -> None:
    """Write ``state`` into ``opt`` (parameters and ``optimizer.state``): the inverse of :func:`phase_state`.

    ``spec_of(opt)`` must exist. A state at t = 0 clears the optimizer's state (torch initializes
    its moments lazily at zero).
    """
    spec = spec_of(opt)
    ps = _params(opt, params)
    sizes = [p.numel() for p in ps]
    if state.theta.numel() != sum(sizes):
        raise ValueError(f"state: theta has {state.theta.numel()} entries, the parameters {sum(sizes)}")

    def split(x: Tensor) -> list[Tensor]:
        return [c.view_as(p).to(p.dtype).clone() for c, p in zip(torch.split(x, sizes), ps)]

    with torch.no_grad():
        for p, th in zip(ps, split(state.theta)):
            p.copy_(th)
    for p in ps:
        opt.state.pop(p, None)
    if state.t == 0:
        return
    step_dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
    step = torch.tensor(float(state.t), dtype=step_dtype)
    ms = split(state.m) if state.m is not None else [None] * len(ps)
    vs = split(state.v) if state.v is not None else [None] * len(ps)
    name = spec.name
    for p, m, v in zip(ps, ms, vs):
        st: dict[str, Any] = {}
        if name in ("heavy_ball", "nesterov"):
            st["momentum_buffer"] = m
        elif name == "rmsprop":
            st.update(step=step.clone(), square_avg=v)
        elif name != "gd":
            st.update(step=step.clone(), exp_avg=m, exp_avg_sq=v)
            if name == "nadam":
                b1 = spec.betas[0]  # type: ignore[attr-defined]
                st["mu_product"] = torch.tensor(nadam_mu_product(b1, spec.momentum_decay, state.t),  # type: ignore[attr-defined]
                                                dtype=step_dtype)
            if isinstance(opt, _rodflow_optims()[0]):  # FlowAdam's g_{t−1}: unknown here, start from 0
                st["prev_grad"] = torch.zeros_like(p)
        opt.state[p] = st
