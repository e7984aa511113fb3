"""Running an optimizer's exact discrete map: :func:`iterate`."""

from __future__ import annotations

import operator
import os
import warnings
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor

from .derivatives import LossFn, value_and_grad
from .optimizers.spec import NonFiniteError, OptimizerSpec, check_gradient
from .phase import PhaseState
from .progress import progress_bar
from .trajectory import Trajectory, TrajectoryWriter

__all__ = ["ON_INTERRUPT", "check_count", "iterate"]

#: What :func:`iterate` does on ``KeyboardInterrupt`` (after keeping what was recorded).
ON_INTERRUPT = ("raise", "return")


def check_count(name: str, value: Any, *, lo: int) -> int:
    """``value`` as an int ≥ ``lo`` (anything ``operator.index`` accepts: int, numpy int, 0-d int tensor; no bools)."""
    if isinstance(value, bool) or (isinstance(value, Tensor) and value.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer, got a bool ({value!r})")
    try:
        n = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} ({value!r})") from None
    if n < lo:
        raise ValueError(f"{name} must be an integer ≥ {lo}, got {n}")
    return n


class _Memory:
    """Collects states in memory; builds a :class:`Trajectory` from whatever was recorded so far."""

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

    def __len__(self) -> int:
        return len(self.t)

    def add_series(self, series: dict[str, Tensor]) -> None:
        pass  # kept by the tracker until build

    def discard(self) -> None:
        return None

    def build(self, sharpness: dict[str, Tensor], complete: bool) -> Trajectory:
        def stack(name: str) -> Tensor | None:
            rows = self.rows[name]
            return torch.stack(rows) if rows else None

        theta, loss = stack("theta"), stack("loss")
        assert theta is not None and loss is not None
        return Trajectory(theta=theta, m=stack("m"), v=stack("v"), t=torch.tensor(self.t, dtype=torch.int64),
                          loss=loss, sharpness=sharpness, config=self.config, complete=complete)


class _File:
    """Streams states to a trajectory file (:class:`rodflow.trajectory.TrajectoryWriter`)."""

    def __init__(self, path: str | os.PathLike[str], config: dict[str, Any], state: PhaseState,
                 series: dict[str, torch.dtype], flush_every: int, compression: str | None):
        rows: dict[str, tuple[tuple[int, ...], torch.dtype]] = {"theta": (tuple(state.theta.shape), state.dtype)}
        none = []
        for name in ("m", "v"):
            x = getattr(state, name)
            if x is None:
                none.append(name)
            else:
                rows[name] = (tuple(x.shape), x.dtype)
        rows["loss"] = ((), state.dtype)
        rows["t"] = ((), torch.int64)  # last: a row counts once its step number is written
        self.writer = TrajectoryWriter(path, rows=rows, series=series, config=config, none=(*none, "grad_norm"),
                                       compression=compression)
        self.path = self.writer.path
        self.flush_every = flush_every
        self.n = 0

    def add(self, state: PhaseState, loss: Tensor) -> None:
        w = self.writer
        for name, x in state.tensors().items():
            w.append(name, x)
        w.append("loss", loss)
        w.append("t", torch.tensor(state.t, dtype=torch.int64))
        self.n += 1
        if self.n % self.flush_every == 0:
            w.commit()

    def __len__(self) -> int:
        return self.n

    def add_series(self, series: dict[str, Tensor]) -> None:
        self.writer.extend_series(series)

    def discard(self) -> None:
        self.writer.close(complete=False)

    def build(self, sharpness: dict[str, Tensor], complete: bool) -> Trajectory:
        self.writer.extend_series(sharpness)
        self.writer.close(complete=complete)
        return Trajectory.load(self.path, lazy=True)


def _probe(loss_fn: LossFn, theta0: Tensor) -> None:
    """Evaluate ``loss_fn`` once at θ₀ so that a wrong θ₀ or a loss that ignores θ gets a clear error."""
    with torch.enable_grad():
        th = theta0.detach().requires_grad_(True)
        try:
            loss = loss_fn(th)
        except (RuntimeError, ValueError, IndexError, TypeError) as err:
            raise ValueError(f"theta0: loss_fn failed on theta0 of shape {tuple(theta0.shape)} (wrong length for "
                             f"this loss?): {type(err).__name__}: {err}") from err
        if not isinstance(loss, Tensor) or loss.numel() != 1:
            raise ValueError(f"loss_fn must return a scalar tensor, got {type(loss).__name__}"
                             + (f" of shape {tuple(loss.shape)}" if isinstance(loss, Tensor) else ""))
        if not loss.requires_grad:
            raise ValueError("loss_fn: the loss does not depend on theta (its result carries no gradient); "
                             "compute it from the theta passed in")
        (g,) = torch.autograd.grad(loss.reshape(()), th, allow_unused=True)
        if g is None:
            raise ValueError("loss_fn: the loss does not depend on theta (it differentiates with respect to other "
                             "tensors only)")


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
    path: str | os.PathLike[str] | None = None,
    flush_every: int = 10,
    compression: str | None = None,
    on_interrupt: str = "raise",
    progress: bool | None = None,
) -> Trajectory:
    """Run ``steps`` steps of ``spec`` from ``theta0`` on ``loss_fn`` and record the states.

    The states θ_k, m_k, v_k and the loss L(θ_k) are recorded at every ``record_every``-th step and
    at the last step. With ``sharpness_every=N`` the top Hessian eigenvalue (raw and
    preconditioned by ``spec.preconditioner``) is recorded every N steps, each estimate
    warm-started from the previous one (``sharpness_kwargs`` go to :func:`rodflow.sharpness`).
    ``steps``, ``record_every`` and ``sharpness_every`` take anything ``operator.index`` takes.

    With ``path`` the states are streamed to that file (the format of :meth:`Trajectory.save`,
    committed every ``flush_every`` recorded states, crash-safe) instead of kept in memory, and the
    trajectory returned is the file loaded with ``lazy=True``. A killed run keeps its committed
    states in the file.

    On ``KeyboardInterrupt`` the states recorded so far are kept (in the file, and as
    ``err.trajectory`` with ``complete=False``) and the interrupt is re-raised;
    ``on_interrupt="return"`` returns that partial trajectory instead (with a warning). A
    non-finite loss or gradient, or a step that overflows θ, raises :class:`NonFiniteError`
    whose ``trajectory`` holds the states recorded before it.

    ``progress``: a bar on stderr (``None``: only when stderr is a terminal; :mod:`rodflow.progress`).

    >>> import torch, rodflow
    >>> traj = rodflow.iterate(rodflow.optimizer("gd", lr=0.5), lambda th: (th ** 2).sum(),
    ...                        torch.tensor([1.0]), steps=3)
    >>> traj.theta.squeeze(1)
    tensor([1., 0., 0., 0.])
    """
    if not isinstance(spec, OptimizerSpec):
        raise TypeError(f"spec must be an OptimizerSpec (see rodflow.optimizer), got {type(spec).__name__}")
    if not callable(loss_fn):
        raise TypeError(f"loss_fn must be callable as loss_fn(theta), got {type(loss_fn).__name__}")
    if not isinstance(theta0, Tensor):
        raise TypeError(f"theta0 must be a torch.Tensor (a flat parameter vector; see rodflow.flatten), got "
                        f"{type(theta0).__name__}")
    if theta0.ndim != 1 or not theta0.is_floating_point():
        raise ValueError(f"theta0 must be a flat floating-point vector, got shape {tuple(theta0.shape)} and "
                         f"dtype {theta0.dtype}")
    steps = check_count("steps", steps, lo=0)
    record_every = check_count("record_every", record_every, lo=1)
    if sharpness_every is not None:
        sharpness_every = check_count("sharpness_every", sharpness_every, lo=1)
    flush_every = check_count("flush_every", flush_every, lo=1)
    if on_interrupt not in ON_INTERRUPT:
        raise ValueError(f"on_interrupt must be one of {ON_INTERRUPT}, got {on_interrupt!r}")
    cfg: dict[str, Any] = {"optimizer": spec.name, "hyperparameters": spec.hyperparameters(), "steps": steps,
                           "record_every": record_every, "dtype": str(theta0.dtype), "dim": int(theta0.numel())}
    if sharpness_every is not None:
        cfg["sharpness_every"] = sharpness_every
        cfg["sharpness_kwargs"] = dict(sharpness_kwargs or {})
    cfg.update(config or {})
    _probe(loss_fn, theta0)

    vg = value_and_grad(loss_fn)
    state = spec.init(theta0)
    tracker = None
    if sharpness_every is not None:
        from .sharpness import SharpnessTracker

        tracker = SharpnessTracker(spec, loss_fn, **(sharpness_kwargs or {}))
    recorder: _Memory | _File
    if path is None:
        recorder = _Memory(cfg)
    else:
        kinds = {k: (torch.int64 if "step" in k or k == "n_hvp" else theta0.dtype)
                 for k in ("step", "sharpness", "preconditioned_step", "preconditioned_sharpness", "n_hvp")}
        recorder = _File(path, cfg, state, kinds if tracker is not None else {}, flush_every, compression)

    def series() -> dict[str, Tensor]:
        return tracker.series() if tracker is not None else {}

    bars = ExitStack()
    bar = bars.enter_context(progress_bar(steps, f"iterate {spec.name}", progress=progress))
    try:
        for k in range(steps + 1):
            loss, g = vg(state.theta)
            if not bool(torch.isfinite(loss)):
                raise NonFiniteError(f"loss_fn returned a non-finite loss ({float(loss)}) at step {state.t} (with a "
                                     f"{'finite' if bool(torch.isfinite(g).all()) else 'non-finite'} gradient); "
                                     "the run diverged or the loss is undefined there")
            if k % record_every == 0 or k == steps:
                recorder.add(state, loss)
            if tracker is not None and k % sharpness_every == 0:  # type: ignore[operator]
                tracker.record(state)
                recorder.add_series(tracker.series())
            if k == steps:
                break
            g = check_gradient(g, state.theta, state.t)
            here = state.theta

            def grad_fn(theta: Tensor, here: Tensor = here, g: Tensor = g) -> Tensor:
                return g if theta is here else vg(theta)[1]

            state = spec.step(state, grad_fn)
            bar.update(1)
    except KeyboardInterrupt as err:
        partial = recorder.build(series(), complete=False) if len(recorder) else recorder.discard()
        if on_interrupt == "raise":
            err.trajectory = partial  # type: ignore[attr-defined]
            raise
        warnings.warn(f"iterate interrupted at step {state.t}; returning the {len(recorder)} recorded states",
                      stacklevel=2)
        if partial is None:
            raise
        return partial
    except NonFiniteError as err:
        err.trajectory = recorder.build(series(), complete=False) if len(recorder) else recorder.discard()
        raise
    except BaseException:
        recorder.discard()
        raise
    finally:
        bars.close()
    return recorder.build(series(), complete=True)
