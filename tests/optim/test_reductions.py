"""Reductions over parameter lists: both paths (C loop and torch ops) give the float64 sums."""

from __future__ import annotations

import pytest
import torch

from rodflow.optim import reductions


def _lists(dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    shapes = [(300, 500), (7,), (3, 4, 5)]
    a = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    b = [torch.randn(s, generator=g, dtype=dtype) for s in shapes]
    return a, b


def _d(x, y):
    return float(x.double().reshape(-1) @ y.double().reshape(-1))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_velocity_terms_and_sq_norms(reduction_path, dtype):
    m, g = _lists(dtype)
    rel = 1e-12 if reduction_path == "native" or dtype == torch.float64 else 1e-5
    out = reductions.velocity_terms(m, g, torch.device("cpu"))
    assert out.shape == (3, 2) and out.dtype == torch.float64
    for (mg, gg), a, b in zip(out.tolist(), m, g):
        assert mg == pytest.approx(_d(a, b), rel=rel)
        assert gg == pytest.approx(_d(b, b), rel=rel)
    sq = reductions.sq_norms(g, torch.device("cpu"))
    torch.testing.assert_close(sq, out[:, 1], rtol=rel, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_change_terms_is_exact_for_a_tiny_change(reduction_path, dtype):
    g, _ = _lists(dtype)
    p = [x * (1 + 1e-5) for x in g]  # c ≪ n: the expanded form would cancel to noise in float32
    want = [(_d(x, x), _d((q - x), (q - x))) for x, q in zip(g, p)]
    out = reductions.change_terms(g, p, torch.device("cpu"))
    for (gg, cc), (wg, wc) in zip(out.tolist(), want):
        assert gg == pytest.approx(wg, rel=1e-6)
        assert cc == pytest.approx(wc, rel=1e-5)
    assert all(torch.equal(q, x) for q, x in zip(p, g))


def test_non_contiguous_and_half_precision_use_torch_ops():
    m, g = _lists()
    mt, gt = [x.t() if x.dim() == 2 else x for x in m], [x.t() if x.dim() == 2 else x for x in g]
    out = reductions.velocity_terms(mt, gt, torch.device("cpu"))
    torch.testing.assert_close(out, reductions.velocity_terms(m, g, torch.device("cpu")), rtol=1e-5, atol=0)
    half = reductions.sq_norms([x.bfloat16() for x in g], torch.device("cpu"))
    torch.testing.assert_close(half, torch.tensor([_d(x, x) for x in g], dtype=torch.float64), rtol=1e-2, atol=0)

