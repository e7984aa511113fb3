r"""Global statistics of the runtime optimizers over parameter lists, in torch's ops, without host syncs.

FlowAdam's trigger statistics and VRAdam's velocity norm are sums over *all* parameters. Tensors
are grouped by (device, dtype), as ``torch.nn.utils.clip_grad_norm_`` does, and each group is
reduced with a fixed number of operations per piece of memory, never one Python round trip per
element block of a large tensor:

* CUDA (and other accelerators): the whole group in ``torch._foreach_*`` ops (``_foreach_sub`` or
  ``_foreach_lerp``, then ``_foreach_norm``): a few multi-tensor kernels per group, none per tensor.
* CPU: large tensors in slices of :data:`CHUNK` elements (the difference written into one scratch
  buffer that stays in cache, so a temporary never makes a pass through memory) and small ones
  concatenated into buckets of up to :data:`CHUNK` elements (one C++ call per bucket), each piece
  summed by a dot product.

Squares are summed in the tensors' precision within a piece (a BLAS dot product: a float32 sum of
squares over ≤ 2¹⁷ elements is within ~1e-5 relative, and sums of squares do not cancel) and in
float64 across pieces and tensors.
Every difference is formed elementwise: ``‖g − p‖²`` is never ``‖g‖² − 2⟨g, p⟩ + ‖p‖²``, which in
float32 is noise when the change is small.

``statistics="compile"`` instead runs the same sums through ``torch.compile`` (one fused loop per
tensor that reads each array once and accumulates in float64; CPU and CUDA, compiled on first use
per list layout). Inside a step that is itself being compiled the plain sums are traced into the
caller's graph, whatever ``statistics`` says.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.utils._foreach_utils import _group_tensors_by_device_and_dtype

__all__ = ["CHUNK", "STATISTICS", "change_sq_sums", "check_statistics", "fusable", "sq_norms",
           "velocity_sq_norms"]

#: How the statistics run: torch's eager foreach ops (default) or ``torch.compile``.
STATISTICS = ("foreach", "compile")
#: Elements per CPU piece (512 KiB of float32): a piece and its temporary stay in cache.
CHUNK = 1 << 17
_F64 = torch.float64
_DOT_DTYPES = (torch.float32, torch.float64)


def check_statistics(statistics: Any) -> str:
    """``statistics`` if it is one of :data:`STATISTICS`, else a ``ValueError`` naming it."""
    if statistics not in STATISTICS:
        raise ValueError(f"statistics must be one of {STATISTICS}, got {statistics!r}")
    return str(statistics)


def fusable(params: list[Tensor]) -> bool:
    """Whether torch's fused Adam kernels accept these parameters."""
    return all(p.is_floating_point() and (p.is_cpu or p.is_cuda) for p in params)


def _grouped(lists: list[list[Tensor]]) -> list[tuple[torch.device, torch.dtype, list[list[Tensor]], list[int]]]:
    groups = _group_tensors_by_device_and_dtype(lists, with_indices=True)  # type: ignore[arg-type]
    return [(dev, dt, tensors, idx) for (dev, dt), (tensors, idx) in groups.items()]  # type: ignore[misc]


def _flat(t: Tensor) -> Tensor:
    return t.view(-1) if t.is_contiguous() else t.reshape(-1)


def _cat(tensors: list[Tensor]) -> Tensor:
    """The tensors flattened and concatenated (one C++ call: no Python step per tensor). A single
    contiguous tensor comes back as a view of itself: never write into the result."""
    return torch._C._nn.flatten_dense_tensors(tensors)


def _norms_sq(tensors: list[Tensor]) -> Tensor:
    """``‖t_i‖²`` as a float64 vector; half precision is reduced in float32."""
    if not tensors:
        return torch.zeros(0, dtype=_F64)
    dtype = None if tensors[0].dtype in _DOT_DTYPES else torch.float32
    return torch.stack(torch._foreach_norm(tensors, 2, dtype=dtype)).to(_F64).square()


# ---------------------------------------------------------------------------- FlowAdam: ‖g‖², ‖g − p‖²
def _change_cpu(gs: list[Tensor], ps: list[Tensor]) -> Tensor:
    sb = torch.empty(CHUNK, dtype=gs[0].dtype)  # the difference of a slice
    sq_g: list[Tensor] = []
    sq_d: list[Tensor] = []
    bucket_g: list[Tensor] = []
    bucket_p: list[Tensor] = []
    filled = 0

    def flush() -> None:
        a = _cat(bucket_g)
        b = torch.sub(a, _cat(bucket_p))
        sq_g.append(torch.dot(a, a))
        sq_d.append(torch.dot(b, b))

    for g, p in zip(gs, ps):
        n = g.numel()
        if n > CHUNK // 4 and g.is_contiguous() and p.is_contiguous():
            gf, pf = g.view(-1), p.view(-1)
            for s in range(0, n, CHUNK):
                gc = gf[s:s + CHUNK]
                d = torch.sub(gc, pf[s:s + CHUNK], out=sb[:gc.numel()])
                sq_g.append(torch.dot(gc, gc))
                sq_d.append(torch.dot(d, d))
        elif n > CHUNK:  # large and not contiguous (e.g. channels_last): one piece, temporaries allowed
            d = _flat(g - p)
            gf = _flat(g)
            sq_g.append(torch.dot(gf, gf))
            sq_d.append(torch.dot(d, d))
        elif n:
            if filled + n > CHUNK:
                flush()
                bucket_g, bucket_p, filled = [], [], 0
            bucket_g.append(g)
            bucket_p.append(p)
            filled += n
    if bucket_g:
        flush()
    if not sq_g:
        return torch.zeros(2, dtype=_F64)
    return torch.stack([torch.stack(sq_g).to(_F64).sum(), torch.stack(sq_d).to(_F64).sum()])


def _change_foreach(gs: list[Tensor], ps: list[Tensor]) -> Tensor:
    diffs = list(torch._foreach_sub(gs, ps))
    both = _norms_sq(list(gs) + diffs)
    return torch.stack([both[: len(gs)].sum(), both[len(gs):].sum()])


def _change_compiled_body(gs: list[Tensor], ps: list[Tensor]) -> Tensor:
    rows = [torch.stack([g.square().sum(dtype=_F64), (g - p).square().sum(dtype=_F64)]) for g, p in zip(gs, ps)]
    return torch.stack(rows).sum(dim=0)


# ---------------------------------------------------------------------------- VRAdam: ‖lerp(m, g, w)‖² per tensor
def _velocity_cpu(ms: list[Tensor], gs: list[Tensor], weight: float) -> Tensor:
    sa = torch.empty(CHUNK, dtype=ms[0].dtype)  # the next moment of a slice
    values: list[Tensor] = []  # float32/64 sums of squares, 0-d (a slice) or 1-d (a bucket's rows)
    owners: list[int] = []  # the tensor each value belongs to
    by_size: dict[int, list[int]] = {}
    for i, (m, g) in enumerate(zip(ms, gs)):
        n = m.numel()
        if n > CHUNK // 4 and m.is_contiguous() and g.is_contiguous():
            mf, gf = m.view(-1), g.view(-1)
            for s in range(0, n, CHUNK):
                mc = mf[s:s + CHUNK]
                v = torch.lerp(mc, gf[s:s + CHUNK], weight, out=sa[:mc.numel()])
                values.append(torch.dot(v, v).reshape(1))
                owners.append(i)
        elif n > CHUNK:
            v = _flat(torch.lerp(m, g, weight))
            values.append(torch.dot(v, v).reshape(1))
            owners.append(i)
        elif n:  # small: concatenated with tensors of the same size, one row each
            by_size.setdefault(n, []).append(i)
    for n, idx in by_size.items():
        per = max(1, CHUNK // n)
        for s in range(0, len(idx), per):
            part = idx[s:s + per]
            v = torch.lerp(_cat([ms[i] for i in part]), _cat([gs[i] for i in part]), weight)
            values.append(torch.mul(v, v, out=v).view(len(part), n).sum(dim=1))
            owners.extend(part)
    out = torch.zeros(len(ms), dtype=_F64)
    if values:
        out.index_add_(0, torch.tensor(owners), torch.cat(values).to(_F64))
    return out


def _velocity_foreach(ms: list[Tensor], gs: list[Tensor], weight: float) -> Tensor:
    return _norms_sq(list(torch._foreach_lerp(ms, gs, weight)))


def _velocity_compiled_body(ms: list[Tensor], gs: list[Tensor], weight: float) -> Tensor:
    return torch.stack([torch.lerp(m, g, weight).square().sum(dtype=_F64) for m, g in zip(ms, gs)])


def _sq_norms_compiled_body(gs: list[Tensor]) -> Tensor:
    return torch.stack([g.square().sum(dtype=_F64) for g in gs])


_COMPILED: dict[str, Callable[..., Tensor]] = {}


def _compiled(name: str, body: Callable[..., Tensor]) -> Callable[..., Tensor]:
    """``torch.compile(body)``, built once per process (its graphs are cached per list layout)."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(body, dynamic=False)
    return _COMPILED[name]


# ---------------------------------------------------------------------------- public entry points
def change_sq_sums(gs: list[Tensor], ps: list[Tensor], statistics: str = "foreach") -> Tensor:
    """``[Σ_i ‖g_i‖², Σ_i ‖g_i − p_i‖²]`` (float64, shape ``[2]``, on ``gs[0]``'s device); reads only."""
    device = gs[0].device
    total = torch.zeros(2, dtype=_F64, device=device)
    for dev, dt, (g, p), _ in _grouped([gs, ps]):
        if torch.compiler.is_compiling():  # inside a compiled step: the plain sums, for the outer graph
            part = _change_compiled_body(g, p)
        elif statistics == "compile":
            part = _compiled("change", _change_compiled_body)(g, p)
        elif dev.type == "cpu" and dt in _DOT_DTYPES:
            part = _change_cpu(g, p)
        else:
            part = _change_foreach(g, p)
        total = total + part.to(device, non_blocking=True)
    return total


def velocity_sq_norms(ms: list[Tensor], gs: list[Tensor], weight: float, statistics: str = "foreach") -> Tensor:
    """``‖m_i + w (g_i − m_i)‖²`` per tensor (the next first moment, formed elementwise as
    ``torch.lerp``), float64, shape ``[n]``, on ``ms[0]``'s device; reads only."""
    device = ms[0].device
    out = torch.zeros(len(ms), dtype=_F64, device=device)
    for dev, dt, (m, g), idx in _grouped([ms, gs]):
        if torch.compiler.is_compiling():
            part = _velocity_compiled_body(m, g, weight)
        elif statistics == "compile":
            part = _compiled("velocity", _velocity_compiled_body)(m, g, weight)
        elif dev.type == "cpu" and dt in _DOT_DTYPES:
            part = _velocity_cpu(m, g, weight)
        else:
            part = _velocity_foreach(m, g, weight)
        out[idx] = part.to(device, non_blocking=True)
    return out


def sq_norms(gs: list[Tensor], statistics: str = "foreach") -> Tensor:
    """``‖g_i‖²`` per tensor, float64, shape ``[n]``, on ``gs[0]``'s device."""
    device = gs[0].device
    out = torch.zeros(len(gs), dtype=_F64, device=device)
    for _, _, (g,), idx in _grouped([gs]):
        if torch.compiler.is_compiling():
            part = _sq_norms_compiled_body(g)
        elif statistics == "compile":
            part = _compiled("sq_norms", _sq_norms_compiled_body)(g)
        else:
            part = _norms_sq(g)
        out[idx] = part.to(device, non_blocking=True)
    return out
