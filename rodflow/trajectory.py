"""Recorded optimizer runs: the :class:`Trajectory` container and its lossless storage."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields
from typing import Any

import torch
from torch import Tensor

from .phase import PhaseState

__all__ = ["Trajectory"]

_FORMAT = "rodflow.trajectory/1"


@dataclass
class Trajectory:
    """States of a run at the recorded steps (each tensor has a leading step axis).

    Attributes:
        theta: ``[n, d]`` parameters.
        m: ``[n, d]`` first moments, or ``None``.
        v: ``[n, d]`` (or ``[n]`` for scalar methods) second moments, or ``None``.
        t: ``[n]`` step numbers (int64).
        loss: ``[n]`` loss at θ.
        sharpness: optional series by name (``"step"``, ``"sharpness"``,
            ``"preconditioned_sharpness"``), recorded every few steps.
        config: what produced the run (optimizer name and hyperparameters, seed, ...).
        complete: ``False`` if the run was interrupted (what was recorded is kept).
    """

    theta: Tensor
    m: Tensor | None
    v: Tensor | None
    t: Tensor
    loss: Tensor
    sharpness: dict[str, Tensor] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    complete: bool = True

    def __post_init__(self) -> None:
        n = self.t.shape[0]
        for name in ("theta", "m", "v", "loss"):
            x = getattr(self, name)
            if x is not None and x.shape[0] != n:
                raise ValueError(f"{name}: expected {n} recorded steps, got {x.shape[0]}")

    def __len__(self) -> int:
        return int(self.t.shape[0])

    @property
    def steps(self) -> Tensor:
        """Alias of :attr:`t`."""
        return self.t

    def index_of(self, step: int) -> int:
        """Row of the recorded step ``step`` (``ValueError`` if it was not recorded)."""
        hits = (self.t == step).nonzero()
        if hits.numel() == 0:
            raise ValueError(f"step: {step} was not recorded (recorded {int(self.t[0])}..{int(self.t[-1])})")
        return int(hits[0, 0])

    def state(self, step: int) -> PhaseState:
        """The :class:`PhaseState` recorded at step ``step``."""
        i = self.index_of(step)
        return PhaseState(theta=self.theta[i], m=None if self.m is None else self.m[i],
                          v=None if self.v is None else self.v[i], t=int(self.t[i]))

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the trajectory to ``path`` (a ``torch.save`` file; :meth:`load` reads it back exactly).

        The file is written to a temporary name and moved into place, so an interrupted save
        never leaves a truncated file behind.
        """
        payload = {"format": _FORMAT}
        payload.update({f.name: getattr(self, f.name) for f in fields(self)})
        tmp = f"{os.fspath(path)}.tmp"
        torch.save(payload, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, map_location: Any = None) -> Trajectory:
        """Read a trajectory written by :meth:`save`."""
        payload = torch.load(path, map_location=map_location, weights_only=True)
        if not isinstance(payload, dict) or payload.get("format") != _FORMAT:
            raise ValueError(f"path: {os.fspath(path)!r} is not a rodflow trajectory file")
        return cls(**{f.name: payload[f.name] for f in fields(cls)})
