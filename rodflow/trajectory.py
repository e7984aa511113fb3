r"""Recorded runs: :class:`PhaseSeries` (shared by :class:`Trajectory` and ``FlowSolution``) and its HDF5 store.

File layout (HDF5 through h5py, readable with h5py alone; see ``docs/trajectories.md``)::

    /                 attrs: format = "rodflow.trajectory", version = 1, class = "Trajectory" | "FlowSolution",
                             config (JSON), fields (JSON: the non-tensor fields, e.g. complete),
                             none (JSON: the fields that are None), rows (JSON: the row datasets),
                             series (JSON: the sharpness series), rodflow_version
    /theta            [n, d]   chunked, resizable along the first axis (attr dtype: the torch dtype)
    /m, /v            [n, d]   (v: [n] for scalar methods); absent when None
    /t                [n]      int64 step numbers
    /loss, /grad_norm [n]
    /sharpness/<name> [k]      each series with its own length
    /_counts          [r + s]  int64: committed length of each row dataset, then of each series

Crash safety. A streaming writer (:class:`TrajectoryWriter`, used by :class:`rodflow.Recorder` and
``iterate(path=...)``) creates every dataset first, then switches the file to SWMR mode
(single-writer/multiple-reader; creating a dataset after that is not allowed). Rows are written
as they come; every ``flush_every`` rows it commits in two flushes: the data, then ``/_counts``.
A reader trusts ``/_counts`` only, so a process killed at any instant (SIGKILL included) leaves a
file that opens (SWMR read, which HDF5 allows on a file still marked open by a dead writer) and
holds every row committed before the kill, never a half-written one. The committed lengths live
in a dataset rather than in an attribute because attributes cannot change under SWMR.
Measured flush cost (``benchmarks/record.py``, d = 10⁶ float32, 10 rows per flush, local disk):
SWMR's two flushes take ~1 ms beyond writing the data; closing and reopening the file per flush
(the alternative, which also leaves a window where a kill corrupts the file) takes ~3 ms.

:meth:`PhaseSeries.save` writes the whole series to a unique temporary in the target's directory,
fsyncs it and moves it into place with ``os.replace`` (the temporary is removed on failure), so
concurrent saves to one path each leave a complete file and a killed save leaves none.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
import pickle
import tempfile
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, cast

import numpy as np
import torch
from torch import Tensor

from .phase import PhaseState

__all__ = ["FORMAT", "VERSION", "LazyRows", "PhaseSeries", "Trajectory", "TrajectoryWriter", "to_json"]

FORMAT = "rodflow.trajectory"
VERSION = 1
_LEGACY_FORMAT = "rodflow.trajectory/1"  # torch.save files of rodflow 0.1
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_ZIP_SIGNATURE = b"PK\x03\x04"
_NUMPY_OF = {torch.float16: np.float16, torch.float32: np.float32, torch.float64: np.float64,
             torch.int64: np.int64, torch.int32: np.int32, torch.bool: np.bool_, torch.bfloat16: np.int16}
_TORCH_OF = {str(k): k for k in _NUMPY_OF}

S = TypeVar("S", bound="PhaseSeries")


# ---------------------------------------------------------------------------------------- metadata
def to_json(value: Any, where: str = "config") -> Any:
    """``value`` as JSON-able data, converting numpy scalars, paths and dtypes; refusing the rest.

    Tuples are kept as ``{"__tuple__": [...]}`` (so ``betas=(0.9, 0.999)`` loads as a tuple),
    ``numpy`` integers/floats/bools become Python ones, ``os.PathLike`` becomes its ``str`` and a
    ``torch.dtype`` its name. Tensors, arrays and other objects raise ``TypeError`` naming ``where``.
    """
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, torch.dtype):
        return str(value)
    if isinstance(value, tuple):
        return {"__tuple__": [to_json(x, f"{where}[{i}]") for i, x in enumerate(value)]}
    if isinstance(value, list):
        return [to_json(x, f"{where}[{i}]") for i, x in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, x in value.items():
            if not isinstance(k, str) or k == "__tuple__":
                raise TypeError(f"{where}: keys must be strings (and not '__tuple__'), got {k!r}")
            out[k] = to_json(x, f"{where}[{k!r}]")
        return out
    hint = " (store it as a float or a list)" if isinstance(value, Tensor | np.ndarray) else ""
    raise TypeError(f"{where}: a {type(value).__name__} cannot be stored as metadata{hint}; use None, bool, "
                    "int, float, str, a path, or lists, tuples and dicts of these")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(x) for x in value]
    if isinstance(value, dict):
        if set(value) == {"__tuple__"}:
            return tuple(_from_json(x) for x in value["__tuple__"])
        return {k: _from_json(x) for k, x in value.items()}
    return value


def _dumps(value: Any, where: str) -> str:
    return json.dumps(to_json(value, where))


# ---------------------------------------------------------------------------------------- tensors <-> HDF5
def _as_numpy(x: Tensor) -> np.ndarray:
    x = x.detach().to("cpu").contiguous()
    if x.dtype not in _NUMPY_OF:
        raise TypeError(f"cannot store a tensor of dtype {x.dtype}")
    if x.dtype == torch.bfloat16:
        x = x.view(torch.int16)
    return x.numpy()


def _as_tensor(a: np.ndarray, dtype_name: str) -> Tensor:
    dtype = _TORCH_OF[dtype_name]
    x = torch.from_numpy(np.ascontiguousarray(a))
    return x.view(torch.bfloat16) if dtype == torch.bfloat16 else x


def _chunks(tail: tuple[int, ...], itemsize: int) -> tuple[int, ...]:
    """Chunks of whole rows up to ~1 MiB; a longer flat row is split into 512 KiB pieces.

    Pieces that fit HDF5's default 1 MiB chunk cache keep a row's write to one pass: with one
    4 MB chunk per row (d = 10⁶ float32) a write took ~4× longer (measured, ``benchmarks/record.py``).
    """
    row = max(1, int(np.prod(tail, dtype=np.int64)) * itemsize)
    if row > (1 << 20) and len(tail) == 1:
        return (1, max(1, (1 << 19) // itemsize))
    return (max(1, min(4096, (1 << 20) // row)), *tail)


def _bad(path: str, what: str) -> ValueError:
    return ValueError(f"path: {path!r} {what}")


def _h5py() -> Any:
    import h5py

    return h5py


# ---------------------------------------------------------------------------------------- streaming writer
class TrajectoryWriter:
    """Append rows to a trajectory file as a run goes; crash-safe (see the module docstring).

    ``rows`` maps each row dataset to ``(shape of one row, torch dtype)``; ``series`` maps each
    sharpness series to its dtype. :meth:`append` writes one row of one dataset, :meth:`commit`
    makes everything written so far durable against a kill, :meth:`close` commits, trims and
    marks the file ``complete``.
    """

    def __init__(self, path: str | os.PathLike[str], *, rows: Mapping[str, tuple[tuple[int, ...], torch.dtype]],
                 series: Mapping[str, torch.dtype] | None = None, config: Mapping[str, Any] | None = None,
                 fields: Mapping[str, Any] | None = None, none: tuple[str, ...] = (), cls_name: str = "Trajectory",
                 compression: str | None = None, compression_opts: Any = None, swmr: bool = True):
        h5py = _h5py()
        self.path = os.fspath(path)
        config_json = _dumps(dict(config or {}), "config")
        self._fields = dict(fields or {})
        self._fields.setdefault("complete", False)
        fields_json = _dumps(self._fields, "fields")
        if compression not in (None, "gzip", "lzf"):
            raise ValueError(f"compression must be None, 'gzip' or 'lzf', got {compression!r}")
        self.rows = dict(rows)
        self.series = dict(series or {})
        self._order = [*self.rows, *(f"sharpness/{k}" for k in self.series)]
        self.counts = dict.fromkeys(self._order, 0)
        self._swmr = swmr
        self.file = h5py.File(self.path, "w", libver="latest")
        try:
            f = self.file
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["class"] = cls_name
            f.attrs["config"] = config_json
            f.attrs["fields"] = fields_json
            f.attrs["none"] = json.dumps(list(none))
            f.attrs["rows"] = json.dumps(list(self.rows))
            f.attrs["series"] = json.dumps(list(self.series))
            from . import __version__

            f.attrs["rodflow_version"] = __version__
            comp = {"compression": compression, "compression_opts": compression_opts} if compression else {}
            self._ds: dict[str, Any] = {}
            for name, (tail, dtype) in self.rows.items():
                np_dtype = np.dtype(_NUMPY_OF[dtype])
                ds = f.create_dataset(name, shape=(0, *tail), maxshape=(None, *tail), dtype=np_dtype,
                                      chunks=_chunks(tuple(tail), np_dtype.itemsize), **comp)
                ds.attrs["dtype"] = str(dtype)
                self._ds[name] = ds
            grp = f.create_group("sharpness")
            for name, dtype in self.series.items():
                ds = grp.create_dataset(name, shape=(0,), maxshape=(None,), dtype=np.dtype(_NUMPY_OF[dtype]),
                                        chunks=(1024,))
                ds.attrs["dtype"] = str(dtype)
                self._ds[f"sharpness/{name}"] = ds
            self._counts = f.create_dataset("_counts", data=np.zeros(len(self._order), dtype=np.int64))
            if swmr:
                f.swmr_mode = True
        except BaseException:
            self.file.close()
            raise

    def append(self, name: str, value: Tensor) -> None:
        """Write ``value`` as the next row of dataset ``name`` (a row dataset or ``sharpness/<series>``)."""
        ds = self._ds[name]
        i = self.counts[name]
        if i >= ds.shape[0]:
            ds.resize(i + ds.chunks[0], axis=0)
        ds[i] = _as_numpy(value)
        self.counts[name] = i + 1

    def extend_series(self, series: Mapping[str, Tensor]) -> None:
        """Append the entries of each sharpness series beyond those already written."""
        for name, values in series.items():
            key = f"sharpness/{name}"
            for x in values[self.counts[key]:]:
                self.append(key, x)

    def commit(self) -> None:
        """Make every row appended so far durable against a kill of this process (two flushes)."""
        for name, ds in self._ds.items():
            if ds.shape[0] != self.counts[name]:
                ds.resize(self.counts[name], axis=0)
        self.file.flush()
        self._counts[:] = np.array([self.counts[k] for k in self._order], dtype=np.int64)
        self.file.flush()

    def close(self, *, complete: bool = True, fields: Mapping[str, Any] | None = None) -> None:
        """Commit, close, and record ``complete`` (and other non-tensor fields) in the file."""
        if not self.file.id.valid:
            return
        try:
            self.commit()
        finally:
            self.file.close()
        self._fields.update(fields or {})
        self._fields["complete"] = bool(complete)
        with _h5py().File(self.path, "r+") as f:  # attributes cannot change under SWMR: reopen once
            f.attrs["fields"] = _dumps(self._fields, "fields")

    def __enter__(self) -> TrajectoryWriter:
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self.close(complete=exc_type is None)


# ---------------------------------------------------------------------------------------- lazy rows
class LazyRows:
    """Rows of one dataset of a trajectory file, read on indexing (``x[i]``, ``x[a:b]``).

    Stands in for a tensor in a trajectory loaded with ``lazy=True``: it has ``shape``,
    ``dtype`` and ``len``; :meth:`read` returns the whole tensor. Each indexing opens the file
    (SWMR read), so it also works while a writer appends (it sees the rows committed at load).
    """

    def __init__(self, path: str, name: str, n: int, tail: tuple[int, ...], dtype: torch.dtype):
        self.path, self.name, self.n, self.tail, self.dtype = path, name, n, tail, dtype

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self.n, *self.tail))

    @property
    def ndim(self) -> int:
        return 1 + len(self.tail)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: Any) -> Tensor:
        first, rest = (index[0], index[1:]) if isinstance(index, tuple) else (index, ())
        if isinstance(first, slice):
            rows: Any = slice(*first.indices(self.n))
        else:
            i = int(first)
            if not -self.n <= i < self.n:
                raise IndexError(f"row {i} is out of range for {self.n} rows")
            rows = i % self.n
        with _open_h5(self.path) as f:
            out = _as_tensor(f[self.name][rows], str(self.dtype))
        return out[(slice(None), *rest)] if rest and isinstance(rows, slice) else out[rest] if rest else out

    def read(self) -> Tensor:
        """All rows as one tensor."""
        return self[:]

    def __repr__(self) -> str:
        return f"LazyRows({self.path!r}, {self.name!r}, shape={tuple(self.shape)}, dtype={self.dtype})"


def _open_h5(path: str) -> Any:
    """Open for reading; a file still marked open by its writer (running, or killed) opens as an SWMR reader.

    A plain open comes first: an SWMR reader retries failed metadata reads, which on a
    truncated file takes minutes instead of failing at once.
    """
    h5py = _h5py()
    try:
        return h5py.File(path, "r")
    except OSError as err:
        if "already open" not in str(err):
            raise
    return h5py.File(path, "r", swmr=True)


# ---------------------------------------------------------------------------------------- the base
class PhaseSeries:
    """States (θ, m, v, t) and the loss at a series of steps: the base of :class:`Trajectory` and
    :class:`rodflow.FlowSolution`, with their common storage (:meth:`save`, :meth:`load`).

    Subclasses are dataclasses; every tensor field has a leading step axis, ``sharpness`` holds
    series by name and ``config`` what produced the series.
    """

    theta: Tensor
    m: Tensor | None
    v: Tensor | None
    t: Tensor
    loss: Tensor
    sharpness: dict[str, Tensor]
    config: dict[str, Any]

    #: Dict fields stored as JSON (the others are groups of tensors).
    _json_dicts: ClassVar[tuple[str, ...]] = ("config",)

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
            span = f"{int(self.t[0])}..{int(self.t[-1])}" if len(self) else "none"
            raise ValueError(f"step: {step} was not recorded (recorded {span})")
        return int(hits[0, 0])

    def state(self, step: int) -> PhaseState:
        """The :class:`PhaseState` at step ``step``."""
        i = self.index_of(step)
        return PhaseState(theta=self.theta[i], m=None if self.m is None else self.m[i],
                          v=None if self.v is None else self.v[i], t=int(self.t[i]))

    # ------------------------------------------------------------------ storage
    def _stored_fields(self) -> list[dataclasses.Field[Any]]:
        return [f for f in dataclasses.fields(cast(Any, self)) if f.compare]

    def save(self, path: str | os.PathLike[str], *, compression: str | None = None,
             compression_opts: Any = None) -> None:
        """Write to ``path`` in the HDF5 format of the module docstring (:meth:`load` reads it back bitwise).

        Metadata is converted at save time (see :func:`to_json`; what cannot be stored raises
        ``TypeError`` here, never at load). The file is written to a unique temporary in the same
        directory, fsynced, and moved into place with ``os.replace``; the temporary is removed if
        anything fails. ``compression``: ``None``, ``"gzip"`` (``compression_opts`` 0–9) or ``"lzf"``.
        """
        path = os.fspath(path)
        rows: dict[str, tuple[tuple[int, ...], torch.dtype]] = {}
        data: dict[str, Tensor] = {}
        none: list[str] = []
        scalars: dict[str, Any] = {}
        groups: dict[str, dict[str, Tensor]] = {}
        for f in self._stored_fields():
            value = getattr(self, f.name)
            if isinstance(value, LazyRows):
                value = value.read()
            if value is None:
                none.append(f.name)
            elif isinstance(value, Tensor):
                rows[f.name] = (tuple(value.shape[1:]), value.dtype)
                data[f.name] = value
            elif isinstance(value, dict) and f.name not in self._json_dicts:
                groups[f.name] = value
            elif f.name == "config":
                pass
            elif dataclasses.is_dataclass(value) and not isinstance(value, type):
                scalars[f.name] = dataclasses.asdict(value)
            else:
                scalars[f.name] = value
        if set(groups) - {"sharpness"}:
            raise TypeError(f"cannot store the dict fields {sorted(set(groups) - {'sharpness'})}")
        series = groups.get("sharpness", {})
        for k, s in series.items():
            if not isinstance(s, Tensor) or s.ndim != 1:
                raise TypeError(f"sharpness[{k!r}] must be a 1-d tensor, got {type(s).__name__}")
        config = getattr(self, "config", {})
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.close(fd)
        try:
            writer = TrajectoryWriter(tmp, rows=rows, series={k: s.dtype for k, s in series.items()}, config=config,
                                      fields=scalars, none=tuple(none), cls_name=type(self).__name__,
                                      compression=compression, compression_opts=compression_opts, swmr=False)
            try:
                for name, x in data.items():
                    ds = writer._ds[name]
                    ds.resize(x.shape[0], axis=0)
                    if x.shape[0]:
                        ds[:] = _as_numpy(x)
                    writer.counts[name] = x.shape[0]
                for k, s in series.items():
                    ds = writer._ds[f"sharpness/{k}"]
                    ds.resize(s.shape[0], axis=0)
                    if s.shape[0]:
                        ds[:] = _as_numpy(s)
                    writer.counts[f"sharpness/{k}"] = s.shape[0]
                writer.commit()
                writer.file.attrs["fields"] = _dumps(scalars, "fields")
            finally:
                writer.file.close()
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise

    @classmethod
    def load(cls: type[S], path: str | os.PathLike[str], *, lazy: bool = False, map_location: Any = None) -> S:
        """Read a file written by :meth:`save`, a :class:`rodflow.Recorder` or ``iterate(path=...)``.

        Also reads a file that a writer is still appending to (the rows committed so far) or that
        a killed writer left, and the ``torch.save`` files of rodflow 0.1. With ``lazy=True`` the
        row datasets other than ``t`` are :class:`LazyRows` (rows read on indexing). Anything
        that is not such a file raises one ``ValueError`` naming the path and what is wrong.
        """
        p = os.fspath(path)
        if not os.path.exists(p):
            raise FileNotFoundError(f"path: {p!r} does not exist")
        if os.path.getsize(p) == 0:
            raise _bad(p, "is empty (not a rodflow trajectory file)")
        with open(p, "rb") as fh:
            head = fh.read(8)
        if head == _HDF5_SIGNATURE:
            return cls._load_h5(p, lazy=lazy, map_location=map_location)
        if head.startswith(_ZIP_SIGNATURE) or head[:1] == b"\x80":
            if lazy:
                raise ValueError(f"lazy: {p!r} is a torch.save file of rodflow 0.1, which loads whole only")
            return cls._load_legacy(p, map_location)
        raise _bad(p, "is not a rodflow trajectory file (neither HDF5 nor a torch.save file)")

    @classmethod
    def _load_h5(cls: type[S], p: str, *, lazy: bool, map_location: Any) -> S:
        try:
            f = _open_h5(p)
        except OSError as err:
            raise _bad(p, f"is not a readable HDF5 file (truncated or corrupted?): {err}") from None
        try:
            with f:
                attrs = f.attrs
                if attrs.get("format") != FORMAT:
                    raise _bad(p, "is an HDF5 file but not a rodflow trajectory (no format attribute "
                                  f"{FORMAT!r})")
                version = int(attrs.get("version", -1))
                if version > VERSION:
                    raise _bad(p, f"has format version {version}, newer than this rodflow reads ({VERSION}); "
                                  "upgrade rodflow")
                if attrs.get("class") != cls.__name__:
                    raise _bad(p, f"holds a {attrs.get('class')}, not a {cls.__name__}")
                try:
                    config = _from_json(json.loads(attrs["config"]))
                    scalars = _from_json(json.loads(attrs["fields"]))
                    none = set(json.loads(attrs["none"]))
                    row_names = json.loads(attrs["rows"])
                    series_names = json.loads(attrs["series"])
                    order = [*row_names, *(f"sharpness/{k}" for k in series_names)]
                    counts = dict(zip(order, (int(c) for c in f["_counts"][:])))
                except (KeyError, ValueError, TypeError) as err:
                    raise _bad(p, f"has damaged metadata ({type(err).__name__}: {err})") from None
                n = min((counts[k] for k in row_names), default=0)
                kwargs: dict[str, Any] = {"config": config}
                hints = _hints(cls)
                for name, value in scalars.items():
                    kind = hints.get(name)
                    if isinstance(kind, type) and dataclasses.is_dataclass(kind) and isinstance(value, dict):
                        value = cast(Any, kind)(**value)
                    kwargs[name] = value
                kwargs.update(dict.fromkeys(none))
                for name in row_names:
                    ds = f[name]
                    dtype_name = ds.attrs["dtype"]
                    if lazy and name != "t":
                        kwargs[name] = LazyRows(p, name, n, tuple(ds.shape[1:]), _TORCH_OF[dtype_name])
                    else:
                        kwargs[name] = _as_tensor(ds[:n], dtype_name)
                if any(k.startswith("sharpness/") for k in order) or "sharpness" in {
                        x.name for x in dataclasses.fields(cast(Any, cls))}:
                    kwargs["sharpness"] = {k: _as_tensor(f["sharpness"][k][: counts[f"sharpness/{k}"]],
                                                         f["sharpness"][k].attrs["dtype"]) for k in series_names}
        except ValueError:
            raise
        except (OSError, KeyError, RuntimeError, TypeError) as err:
            raise _bad(p, f"is damaged or truncated ({type(err).__name__}: {err})") from None
        return cls._build(p, kwargs, map_location)

    @classmethod
    def _build(cls: type[S], p: str, kwargs: dict[str, Any], map_location: Any) -> S:
        names = {f.name: f for f in dataclasses.fields(cast(Any, cls)) if f.init}
        missing = [k for k, f in names.items() if k not in kwargs and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        if missing:
            raise _bad(p, f"is missing the field {missing[0]!r}")
        if map_location is not None:
            kwargs = {k: x.to(map_location) if isinstance(x, Tensor) else x for k, x in kwargs.items()}
        try:
            return cls(**{k: x for k, x in kwargs.items() if k in names})
        except (TypeError, ValueError) as err:
            raise _bad(p, f"holds inconsistent fields: {err}") from None

    @classmethod
    def _load_legacy(cls: type[S], p: str, map_location: Any) -> S:
        try:
            payload = torch.load(p, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError:
            payload = _load_legacy_with_metadata_types(p, map_location)
        except Exception as err:  # torch raises RuntimeError, EOFError, zip errors for damaged files
            first = str(err).splitlines()[0][:200] if str(err) else ""
            raise _bad(p, f"is a damaged torch.save file ({type(err).__name__}: {first})") from None
        if not isinstance(payload, dict) or payload.get("format") != _LEGACY_FORMAT:
            raise _bad(p, "is not a rodflow trajectory file")
        try:
            payload["config"] = _from_json(to_json(payload.get("config", {})))
        except TypeError as err:
            raise _bad(p, f"has metadata that cannot be read: {err}") from None
        payload.pop("format")
        return cls._build(p, payload, None)


def _load_legacy_with_metadata_types(p: str, map_location: Any) -> Any:
    """Old files whose config held numpy scalars or paths: allow exactly those types, nothing else."""
    import pathlib

    core = getattr(np, "_core", None) or np.core
    allowed: list[Any] = [np.dtype, pathlib.PosixPath, pathlib.PurePosixPath, pathlib.WindowsPath,
                          pathlib.PureWindowsPath, core.multiarray.scalar]
    allowed += [type(np.dtype(t)) for t in ("int64", "int32", "float64", "float32", "bool")]
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(p, map_location=map_location, weights_only=True)
    except Exception:  # weights_only refuses anything else; its message suggests the unsafe weights_only=False
        raise _bad(p, "is a damaged torch.save file, or holds objects other than tensors and plain metadata "
                      "(it is read with weights_only=True only)") from None


def _hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable annotations: no dataclass reconstruction
        return {}


# ---------------------------------------------------------------------------------------- Trajectory
@dataclass
class Trajectory(PhaseSeries):
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
        grad_norm: ``[n]`` ‖∇L(θ)‖ where recorded (:class:`rodflow.Recorder`), else ``None``.
    """

    theta: Tensor
    m: Tensor | None
    v: Tensor | None
    t: Tensor
    loss: Tensor
    sharpness: dict[str, Tensor] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    complete: bool = True
    grad_norm: Tensor | None = None

    def __post_init__(self) -> None:
        n = self.t.shape[0]
        for name in ("theta", "m", "v", "loss", "grad_norm"):
            x = getattr(self, name)
            if x is not None and x.shape[0] != n:
                raise ValueError(f"{name}: expected {n} recorded steps, got {x.shape[0]}")

    def read(self) -> Trajectory:
        """A copy with every :class:`LazyRows` read into a tensor (itself when nothing is lazy)."""
        lazy = {f.name: getattr(self, f.name).read() for f in dataclasses.fields(self)
                if isinstance(getattr(self, f.name), LazyRows)}
        return dataclasses.replace(self, **lazy) if lazy else self
