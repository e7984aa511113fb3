r"""Record any torch training loop to a trajectory file as it runs: :class:`Recorder`.

Row k of the file is the phase-space state after k optimizer steps, as :func:`rodflow.iterate`
records it: θ_k (the flat parameters, :func:`rodflow.flatten`'s order of ``model.parameters()``),
m_k, v_k (read from ``optimizer.state`` through :mod:`rodflow.adapters`), t = k, the loss
L(θ_k) and the gradient norm ‖∇L(θ_k)‖. ``rec.step(loss)`` is called after ``optimizer.step()``,
when ``loss`` and the ``.grad`` fields still belong to the iterate the step started from, so
each row's loss and gradient norm are written one call after its state; the last state gets its
loss only with ``loss_fn`` (otherwise it is dropped at close).

Nothing accumulates in memory: each state goes straight to the file's chunked datasets
(:class:`rodflow.trajectory.TrajectoryWriter`, crash-safe commits every ``flush_every`` rows).
By default a worker thread does the copying and writing while the next forward and backward pass
run (torch and h5py release the GIL); a step pre-hook on the optimizer makes its next ``step()``
wait until the state has been read, so the parameters and moments are never read mid-update.
(Changing the parameters in place outside ``optimizer.step()`` before that would race with the
worker: use ``background=False`` then.)
The model is never switched to eval mode; with ``Recorder(None, ...)`` or ``enabled=False``
:meth:`Recorder.step` returns at once.
"""

from __future__ import annotations

import os
import platform
import queue
import threading
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from .adapters import NotMapped, spec_of
from .derivatives import LossFn, value_and_grad
from .discrete import check_count
from .optimizers import OptimizerSpec
from .optimizers import optimizer as make_spec
from .phase import PhaseState
from .progress import progress_bar
from .trajectory import TrajectoryWriter, to_json

__all__ = ["Recorder"]

_M_KEYS = ("exp_avg", "momentum_buffer")
_V_KEYS = ("exp_avg_sq", "square_avg")


def _plain(x: Any) -> Any:
    """A hyperparameter as metadata: one-element tensors as floats, anything unusual as its repr."""
    if isinstance(x, Tensor) and x.numel() == 1:
        return float(x)
    try:
        to_json(x)
    except TypeError:
        return repr(x)
    return x


class Recorder:
    """Record a training run: ``with Recorder(path, model, optimizer) as rec: ... rec.step(loss)``.

    Args:
        path: the HDF5 file to write (``None``: disabled).
        model: the ``nn.Module`` whose ``parameters()`` make θ.
        optimizer: its ``torch.optim`` optimizer. Mapped ones (see :mod:`rodflow.adapters`) also
            give m, v and the spec in ``config``; any other is recorded as (θ, loss) with a warning.
        every: record every ``every``-th step.
        flush_every: commit to the file every ``flush_every`` recorded rows.
        sharpness_every: record λ_max(H) (and λ_max(P⁻¹H) for a mapped optimizer) every N steps,
            warm-started as :func:`rodflow.iterate` does; needs ``loss_fn``.
        loss_fn: the full-batch loss as a function of flat θ (for sharpness and the last row's loss).
        metadata: user metadata stored in ``config["metadata"]`` (converted by :func:`rodflow.trajectory.to_json`).
        enabled: ``False`` makes every call a no-op.
        seed: stored in ``config["seed"]``.
        compression: ``None``, ``"gzip"`` or ``"lzf"``.
        sharpness_kwargs: passed to :func:`rodflow.sharpness`.
        background: write from a worker thread (see the module docstring); ``False`` writes in ``step``.
        progress: a bar on stderr over the recorded optimizer steps, with the last sharpness in its
            postfix when sharpness is recorded (``None``: only when stderr is a terminal; see
            :mod:`rodflow.progress`).
        total: the number of steps the bar expects (``None``: a counter without a total).

    >>> import torch, rodflow, tempfile, os
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = torch.optim.Adam(model.parameters(), lr=0.1)
    >>> x, y = torch.randn(16, 3), torch.randn(16, 1)
    >>> path = os.path.join(tempfile.mkdtemp(), "run.h5")
    >>> with rodflow.Recorder(path, model, opt) as rec:
    ...     for _ in range(5):
    ...         opt.zero_grad()
    ...         loss = ((model(x) - y) ** 2).mean()
    ...         loss.backward()
    ...         opt.step()
    ...         rec.step(loss)
    >>> traj = rodflow.Trajectory.load(path)
    >>> traj.t.tolist(), traj.theta.shape, traj.config["optimizer"]
    ([0, 1, 2, 3, 4], torch.Size([5, 4]), 'adam')
    """

    def __init__(self, path: str | os.PathLike[str] | None, model: nn.Module, optimizer: Optimizer, *,
                 every: int = 1, flush_every: int = 10, sharpness_every: int | None = None,
                 loss_fn: LossFn | None = None, metadata: dict[str, Any] | None = None, enabled: bool = True,
                 seed: int | None = None, compression: str | None = None,
                 sharpness_kwargs: dict[str, Any] | None = None, background: bool = True,
                 progress: bool | None = None, total: int | None = None):
        self.enabled = bool(enabled) and path is not None
        self.path = None if path is None else os.fspath(path)
        if not self.enabled:
            return
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        self.every = check_count("every", every, lo=1)
        if total is not None:
            total = check_count("total", total, lo=1)
        self.flush_every = check_count("flush_every", flush_every, lo=1)
        self.sharpness_every = None if sharpness_every is None else check_count("sharpness_every", sharpness_every,
                                                                                lo=1)
        if loss_fn is not None and not callable(loss_fn):
            raise TypeError("loss_fn must be callable as loss_fn(theta)")
        if self.sharpness_every is not None and loss_fn is None:
            raise ValueError("sharpness_every needs loss_fn (the full-batch loss as a function of flat theta)")
        self.model, self.optimizer, self.loss_fn = model, optimizer, loss_fn
        named = list(model.named_parameters())
        if not named:
            raise ValueError("model: it has no parameters")
        self.params = [p for _, p in named]
        self.spec: OptimizerSpec | None
        try:
            self.spec = spec_of(optimizer)
        except NotMapped as err:
            self.spec = None
            warnings.warn(f"Recorder: {err}; recording theta and the loss only (no moments)", stacklevel=2)
        dtype = self.params[0].dtype
        d = sum(p.numel() for p in self.params)
        self._m = self.spec is not None and self.spec.has_momentum
        self._v = self.spec is not None and self.spec.beta2 is not None
        rows: dict[str, tuple[tuple[int, ...], torch.dtype]] = {"theta": ((d,), dtype)}
        if self._m:
            rows["m"] = ((d,), dtype)
        if self._v:
            rows["v"] = ((d,), dtype)
        rows.update(loss=((), torch.float64), grad_norm=((), torch.float64), t=((), torch.int64))
        series: dict[str, torch.dtype] = {}
        self._tracker = None
        if self.sharpness_every is not None:
            from .sharpness import SharpnessTracker

            spec = self.spec or make_spec("gd", lr=1.0)
            assert loss_fn is not None
            self._tracker = SharpnessTracker(spec, loss_fn, preconditioned=self.spec is not None,
                                             **(sharpness_kwargs or {}))
            series = {k: (torch.int64 if "step" in k or k == "n_hvp" else dtype)
                      for k in ("step", "sharpness", "preconditioned_step", "preconditioned_sharpness", "n_hvp")}
        from . import __version__

        cls = type(optimizer)
        config = {
            "source": "rodflow.Recorder",
            "optimizer": None if self.spec is None else self.spec.name,
            "hyperparameters": None if self.spec is None else self.spec.hyperparameters(),
            "torch_optimizer": {"class": f"{cls.__module__}.{cls.__qualname__}",
                                "param_groups": [{k: _plain(x) for k, x in g.items() if k != "params"}
                                                 for g in optimizer.param_groups]},
            "model": repr(model),
            "parameters": [{"name": n, "shape": list(p.shape)} for n, p in named],
            "dtype": str(dtype), "dim": d, "record_every": self.every, "flush_every": self.flush_every,
            "sharpness_every": self.sharpness_every, "sharpness_kwargs": dict(sharpness_kwargs or {}), "seed": seed,
            "versions": {"torch": torch.__version__, "rodflow": __version__, "python": platform.python_version()},
            "metadata": dict(metadata or {}),
        }
        to_json(config["metadata"], "metadata")  # refuse what cannot be stored now, not at the end
        none = tuple(k for k, on in (("m", self._m), ("v", self._v)) if not on)
        assert path is not None
        self._writer = TrajectoryWriter(path, rows=rows, series=series, config=config, none=none,
                                        compression=compression)
        steps = [optimizer.state.get(p, {}).get("step") for p in self.params]
        self.t = max((int(s) for s in steps if s is not None), default=0)
        self._pending = False
        self._rows = 0
        self._closed = False
        self.background = bool(background)
        self._error: BaseException | None = None
        self._bars = ExitStack()
        self._bar = self._bars.enter_context(progress_bar(total, "record", progress=progress))
        if self.background:
            self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
            self._thread = threading.Thread(target=self._work, name="rodflow-recorder", daemon=True)
            self._thread.start()
            # the worker reads the live parameters and moments: the next step must wait for it
            self._hook = optimizer.register_step_pre_hook(lambda *args: self._drain())
        self._write_state()

    # ------------------------------------------------------------------ the worker
    def _work(self) -> None:
        while True:
            job = self._jobs.get()
            try:
                if job is None:
                    return
                if self._error is None:
                    job()
            except BaseException as err:
                self._error = err
            finally:
                self._jobs.task_done()

    def _submit(self, job: Callable[[], None]) -> None:
        if self.background:
            self._jobs.put(job)
        else:
            job()

    def _drain(self) -> None:
        """Wait until everything submitted is written; re-raise a failure of the worker."""
        if self.background:
            self._jobs.join()
        if self._error is not None:
            err, self._error = self._error, None
            raise RuntimeError(f"Recorder: writing {self.path!r} failed") from err

    # ------------------------------------------------------------------ reading the live run
    def _flat(self, keys: tuple[str, ...] | None) -> Tensor:
        parts = []
        for p in self.params:
            if keys is None:
                parts.append(p.detach().reshape(-1))
                continue
            st = self.optimizer.state.get(p, {})
            x = next((st[k] for k in keys if k in st), None)
            parts.append(torch.zeros(p.numel(), dtype=p.dtype, device=p.device) if x is None
                         else x.detach().reshape(-1))
        return torch.cat(parts)

    def _write_state(self) -> None:
        w = self._writer
        parts = [("theta", None)] + [(n, k) for n, k, on in (("m", _M_KEYS, self._m), ("v", _V_KEYS, self._v)) if on]

        def job() -> None:  # one flat array at a time: a row of one dataset is the only copy alive
            for name, keys in parts:
                w.append(name, self._flat(keys))

        self._submit(job)
        self._pending, self._pending_t = True, self.t
        if self._tracker is not None and self.t % self.sharpness_every == 0:  # type: ignore[operator]
            theta = self._flat(None).clone()
            m = self._flat(_M_KEYS).clone() if self._m else None
            v = self._flat(_V_KEYS).clone() if self._v else None
            self._tracker.record(PhaseState(theta=theta, m=m, v=v, t=self.t))
            series = self._tracker.series()
            shown = {"sharpness": f"{float(series['sharpness'][-1]):.4g}"}
            if len(series["preconditioned_step"]) and int(series["preconditioned_step"][-1]) == self.t:
                shown["P⁻¹H"] = f"{float(series['preconditioned_sharpness'][-1]):.4g}"
            self._bar.set_postfix(shown, refresh=False)
            self._submit(lambda: w.extend_series(series))

    def _finish_row(self, loss: float, grad_norm: float) -> None:
        w = self._writer
        t = self._pending_t
        self._pending = False
        self._rows += 1
        commit = self._rows % self.flush_every == 0

        def job() -> None:
            w.append("loss", torch.tensor(loss, dtype=torch.float64))
            w.append("grad_norm", torch.tensor(grad_norm, dtype=torch.float64))
            w.append("t", torch.tensor(t, dtype=torch.int64))
            if commit:
                w.commit()

        self._submit(job)

    # ------------------------------------------------------------------ the public calls
    def step(self, loss: Tensor | float) -> None:
        """Call after ``optimizer.step()`` with the loss of that step (the loss at the iterate it started from)."""
        if not self.enabled:
            return
        if self._closed:
            raise RuntimeError("Recorder: step() after close()")
        if self._error is not None:
            self._drain()
        if self._pending:
            grads = [p.grad for p in self.params if p.grad is not None]
            gnorm = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])
                                                   )) if grads else float("nan")
            self._finish_row(float(loss.detach() if isinstance(loss, Tensor) else loss), gnorm)
        self.t += 1
        self._bar.update(1)
        if self.t % self.every == 0:
            self._write_state()

    def close(self, complete: bool = True) -> None:
        """Write the last state's loss (with ``loss_fn``), commit and close the file."""
        if not self.enabled or self._closed:
            return
        self._closed = True
        w = self._writer
        try:
            if self.background:
                self._hook.remove()
                self._jobs.put(None)
                self._thread.join()
                self.background = False
            self._drain()
            if self._pending and self.loss_fn is not None:
                loss, g = value_and_grad(self.loss_fn)(self._flat(None).clone())
                self._finish_row(float(loss), float(torch.linalg.vector_norm(g)))
            elif self._pending:  # its loss is not known: drop the state
                for name in ("theta", "m", "v"):
                    if name in w.counts:
                        w.counts[name] = w.counts["t"]
        finally:
            self._bars.close()
            w.close(complete=complete)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(complete=exc_type is None)
