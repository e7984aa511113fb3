"""Running an optimizer's exact discrete map: :func:`iterate`."""

from __future__ import annotations

import warnings
from typing import Any

import torch
from torch import Tensor

from .derivatives import LossFn, value_and_grad
from .optimizers.spec import NonFiniteError, OptimizerSpec, check_gradient
from .phase import PhaseState
from .trajectory import Trajectory

__all__ = ["iterate"]


class _Recorder:
    """Collects states; builds a :class:`Trajectory` from whatever was recorded so far."""

    def __init__(self, config: dict[str, Any]):
        self.rows: dict[str, list[Tensor]] = {"theta": [], "m": [], "v": [], "loss": []}
        self.t: list[int] = []
        self.config = config

    def add(self, state: PhaseState, loss: Tensor) -> None:
        self.rows["theta"].append(state.theta)
        self.rows["loss"].append(loss)
        if state.m is not None:
            self.rows["m"].append(state.m)
        if state.v is not None:
            self.rows["v"].append(state.v)
        self.t.append(state.t)

    def build(self, sharpness: dict[str, Tensor], complete: bool) -> Trajectory:
        def stack(name: str) -> Tensor | None:
            rows = self.rows[name]
            return torch.stack(rows) if rows else None

        theta = stack("theta")
        if theta is None:
            raise RuntimeError("iterate: nothing was recorded")
        loss = stack("loss")
        assert loss is not None
        return Trajectory(theta=theta, m=stack("m"), v=stack("v"), t=torch.tensor(self.t, dtype=torch.int64),
                          loss=loss, sharpness=sharpness, config=self.config, complete=complete)


def iterate(
    spec: OptimizerSpec,
    loss_fn: LossFn,
    theta0: Tensor,
    steps: int,
    *,
    record_every: int = 1,
    sharpness_every: int | None = None,
    sharpness_kwargs: dict[str, Any] | None = None,
    config: dict[str, Any] | None = None,
) -> Trajectory:
    """Run ``steps`` steps of ``spec`` from ``theta0`` on ``loss_fn`` and record the states.

    The states θ_k, m_k, v_k and the loss L(θ_k) are recorded at every ``record_every``-th step and
    at the last step. With ``sharpness_every=N`` the top Hessian eigenvalue (raw and
    preconditioned by ``spec.preconditioner``) is recorded every N steps, each estimate
    warm-started from the previous one (``sharpness_kwargs`` go to :func:`rodflow.sharpness`).

    If the run is interrupted (``KeyboardInterrupt``) the states recorded so far are returned with
    ``complete=False``. If the gradient becomes non-finite (or a step overflows θ), :class:`NonFiniteError` is raised and
    carries the partial trajectory as ``err.trajectory``.

    >>> import torch, rodflow
    >>> traj = rodflow.iterate(rodflow.optimizer("gd", lr=0.5), lambda th: (th ** 2).sum(),
    ...                        torch.tensor([1.0]), steps=3)
    >>> traj.theta.squeeze(1)
    tensor([1., 0., 0., 0.])
    """
    if not isinstance(spec, OptimizerSpec):
        raise TypeError(f"spec must be an OptimizerSpec (see rodflow.optimizer), got {type(spec).__name__}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if isinstance(record_every, bool) or not isinstance(record_every, int) or record_every < 1:
        raise ValueError(f"record_every must be a positive int, got {record_every!r}")
    if sharpness_every is not None and (not isinstance(sharpness_every, int) or sharpness_every < 1):
        raise ValueError(f"sharpness_every must be a positive int or None, got {sharpness_every!r}")
    cfg: dict[str, Any] = {"optimizer": spec.name, "hyperparameters": spec.hyperparameters(), "steps": steps,
                           "record_every": record_every, "dtype": str(theta0.dtype), "dim": int(theta0.numel())}
    if sharpness_every is not None:
        cfg["sharpness_every"] = sharpness_every
        cfg["sharpness_kwargs"] = dict(sharpness_kwargs or {})
    cfg.update(config or {})

    vg = value_and_grad(loss_fn)
    state = spec.init(theta0)
    recorder = _Recorder(cfg)
    tracker = None
    if sharpness_every is not None:
        from .sharpness import SharpnessTracker

        tracker = SharpnessTracker(spec, loss_fn, **(sharpness_kwargs or {}))
    complete = True
    try:
        for k in range(steps + 1):
            loss, g = vg(state.theta)
            if k % record_every == 0 or k == steps:
                recorder.add(state, loss)
            if tracker is not None and k % sharpness_every == 0:  # type: ignore[operator]
                tracker.record(state)
            if k == steps:
                break
            g = check_gradient(g, state.theta, state.t)
            here = state.theta

            def grad_fn(theta: Tensor, here: Tensor = here, g: Tensor = g) -> Tensor:
                return g if theta is here else vg(theta)[1]

            state = spec.step(state, grad_fn)
    except KeyboardInterrupt:
        warnings.warn(f"iterate interrupted at step {state.t}; returning the {len(recorder.t)} recorded states",
                      stacklevel=2)
        complete = False
    except NonFiniteError as err:
        if recorder.t:
            err.trajectory = recorder.build(tracker.series() if tracker else {}, complete=False)  # type: ignore[attr-defined]
        raise
    return recorder.build(tracker.series() if tracker else {}, complete=complete)
