"""The C reductions against float64 sums taken by torch, and how the library is built."""

from __future__ import annotations

import pytest
import torch

from rodflow.optim import native

SIZES = [0, 1, 7, 31, 32, 33, 1000, 300_001]  # around the C loop's 4 segments × 8 lanes, and long tails


def _pairs(dtype, sizes=SIZES, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = [torch.randn(n, generator=g, dtype=dtype) for n in sizes]
    b = [torch.randn(n, generator=g, dtype=dtype) * 1e-3 for n in sizes]
    return a, b


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dot2_is_the_float64_sum(dtype):
    a, b = _pairs(dtype)
    assert native.eligible(a + b)
    out = native.dot2(a, b)
    assert out is not None and out.shape == (len(a), 2) and out.dtype == torch.float64
    for (ab, bb), x, y in zip(out.tolist(), a, b):
        x, y = x.double(), y.double()  # products of float32 values are exact in float64
        assert ab == pytest.approx(float(x @ y), rel=1e-12, abs=1e-300)
        assert bb == pytest.approx(float(y @ y), rel=1e-12, abs=1e-300)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_change_sums_and_copies(dtype):
    g, p = _pairs(dtype, seed=1)
    p = [q * 1e3 for q in p]
    diff = [(q - x).double() for q, x in zip(p, g)]  # the difference rounded to dtype, as the loop forms it
    out = native.change(g, p)
    assert out is not None
    for (gg, dd), x, d in zip(out.tolist(), g, diff):
        assert gg == pytest.approx(float(x.double() @ x.double()), rel=1e-12, abs=1e-300)
        assert dd == pytest.approx(float(d @ d), rel=1e-12, abs=1e-300)
    assert all(torch.equal(q, x) for q, x in zip(p, g))


def test_eligible_only_for_contiguous_cpu_float_tensors_of_one_dtype():
    x = torch.zeros(4, 3)
    assert native.eligible([x, torch.ones(5)])
    assert not native.eligible([])
    assert not native.eligible([x.t()])  # not contiguous
    assert not native.eligible([x, x.double()])  # mixed dtypes
    assert not native.eligible([x.half()])
    assert not native.eligible([torch.zeros(3, dtype=torch.int64)])


def test_ineligible_pairs_give_none_and_write_nothing():
    g = [torch.ones(8), torch.ones(3, 4)]
    p = [torch.zeros(8), torch.zeros(4, 3).t()]  # the second is not contiguous
    assert native.change(g, p) is None
    assert all(float(q.abs().sum()) == 0.0 for q in p)
    assert native.dot2(g, [x.double() for x in g]) is None
    assert native.dot2([], []) is None
    with native.disabled():
        assert native.dot2(g, g) is None
    assert native.dot2(g, g) is not None


def test_status_and_the_ways_a_build_is_declined(monkeypatch):
    assert native.status().startswith("compiled with ")
    monkeypatch.setenv("RODFLOW_NATIVE", "0")
    assert native._build() == (None, "disabled by RODFLOW_NATIVE=0")
    monkeypatch.delenv("RODFLOW_NATIVE")
    monkeypatch.setenv("CC", "false")  # a "compiler" that always fails
    lib, why = native._build()
    assert lib is None and why.startswith("compilation failed")
