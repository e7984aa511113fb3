"""One-pass CPU reductions in C (``_native.c``), compiled on first use and called through ctypes.

FlowAdam's trigger statistics and VRAdam's velocity norm read every gradient before torch's fused
Adam kernel runs, so on one CPU thread they cost about as much as the kernel itself when done
with torch's ops (each op is one more pass over memory, and the BLAS dot product streams at about
half the kernel's rate). The two loops here read each array once, accumulate in float64 and, for
FlowAdam, copy g over g_{t−1} in the same pass.

The library is built once per process by the C compiler (``$CC``, else Python's, else ``cc``) with
``-O3 -march=native`` into a private temporary folder. Where no compiler works, or with
``RODFLOW_NATIVE=0`` in the environment, :func:`library` returns ``None`` and the callers use
torch's ops instead (same values up to rounding, slower); :func:`status` says which and why.
"""

from __future__ import annotations

import array
import ctypes
import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["change", "disabled", "dot2", "eligible", "library", "status"]

_SOURCE = Path(__file__).with_name("_native.c")
_SUFFIX = {torch.float32: "f32", torch.float64: "f64"}
_lock = threading.Lock()
_state: dict[str, object] = {}
_off = [False]


def _compiler() -> list[str] | None:
    for cand in (os.environ.get("CC"), sysconfig.get_config_var("CC"), "cc"):
        if cand:
            cmd = shlex.split(str(cand))
            if cmd and shutil.which(cmd[0]):
                return cmd
    return None


def _build() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get("RODFLOW_NATIVE", "1") == "0":
        return None, "disabled by RODFLOW_NATIVE=0"
    cc = _compiler()
    if cc is None:
        return None, "no C compiler found"
    folder = tempfile.mkdtemp(prefix="rodflow-native-")
    out = os.path.join(folder, "librodflow_native.so")
    errors = []
    for arch in (["-march=native"], []):
        cmd = [*cc, "-O3", *arch, "-std=c99", "-shared", "-fPIC", str(_SOURCE), "-o", out]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            shutil.rmtree(folder, ignore_errors=True)
            return None, f"compilation failed: {exc}"
        if proc.returncode == 0:
            try:
                lib = ctypes.CDLL(out)
            except OSError as exc:  # e.g. a temporary folder mounted noexec
                shutil.rmtree(folder, ignore_errors=True)
                return None, f"loading failed: {exc}"
            shutil.rmtree(folder, ignore_errors=True)  # the loaded library stays mapped
            for name in ("rf_dot2_f32", "rf_dot2_f64", "rf_change_f32", "rf_change_f64"):
                fn = getattr(lib, name + "_many")
                fn.restype = None
                fn.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_void_p]
            return lib, "compiled with " + " ".join(cmd[: len(cc) + 1 + len(arch)])
        errors.append(proc.stderr.strip().splitlines()[-1:] or [f"exit {proc.returncode}"])
    shutil.rmtree(folder, ignore_errors=True)
    return None, f"compilation failed: {errors[-1][0]}"


def library() -> ctypes.CDLL | None:
    """The loaded library, built on the first call of the process; ``None`` where unavailable
    (or inside :func:`disabled`)."""
    if _off[0]:
        return None
    if "lib" not in _state:
        with _lock:
            if "lib" not in _state:
                _state["lib"], _state["why"] = _build()
    lib = _state["lib"]
    return lib if isinstance(lib, ctypes.CDLL) else None


@contextmanager
def disabled() -> Iterator[None]:
    """Within the block the reductions use torch's ops, as without a C compiler (for comparisons)."""
    before = _off[0]
    _off[0] = True
    try:
        yield
    finally:
        _off[0] = before


def status() -> str:
    """How the reductions run: the compile command, or why torch's ops are used instead."""
    library()
    return str(_state["why"])


def eligible(tensors: list[Tensor]) -> bool:
    """Whether the C loops can read (and write) these tensors in place: contiguous CPU tensors of
    one dtype, float32 or float64, and the library built."""
    return bool(tensors) and all(_fits(t, tensors[0].dtype) for t in tensors) and library() is not None


def _fits(t: Tensor, dtype: torch.dtype) -> bool:
    """A contiguous CPU tensor of ``dtype``, float32 or float64 (real dtypes: no conj/neg views)."""
    return t.is_cpu and t.dtype == dtype and dtype in _SUFFIX and t.is_contiguous()


def _run(name: str, firsts: list[Tensor], seconds: list[Tensor]) -> Tensor | None:
    """The C loop ``name`` over the pairs, or ``None`` where any pair is not :func:`eligible` (checked
    in the same pass that gathers the addresses, before anything is written)."""
    lib = library()
    if lib is None or not firsts:
        return None
    dtype = firsts[0].dtype
    args = array.array("q")
    for a, b in zip(firsts, seconds):
        if not (_fits(a, dtype) and _fits(b, dtype)):
            return None
        args.extend((a.data_ptr(), b.data_ptr(), a.numel()))
    out = torch.empty(len(firsts), 2, dtype=torch.float64)
    getattr(lib, name + _SUFFIX[dtype] + "_many")(args.buffer_info()[0], len(firsts), out.data_ptr())
    return out


def dot2(a: list[Tensor], b: list[Tensor]) -> Tensor | None:
    """``[⟨a_i, b_i⟩, ‖b_i‖²]`` per pair, shape ``[n, 2]``, float64 on the CPU (one pass over a_i, b_i);
    ``None`` unless :func:`eligible` ``(a + b)``. Pairs have equal sizes."""
    return _run("rf_dot2_", a, b)


def change(g: list[Tensor], p: list[Tensor]) -> Tensor | None:
    """``[‖g_i‖², ‖p_i − g_i‖²]`` per pair, shape ``[n, 2]``, float64 on the CPU, then ``p_i ← g_i``
    (one pass); ``None`` (and nothing written) unless :func:`eligible` ``(g + p)``. Pairs have equal sizes."""
    return _run("rf_change_", g, p)
