"""Reductions over parameter lists against float64 sums of the same elementwise quantities."""

from __future__ import annotations

import pytest
import torch

from rodflow.optim import reductions
from rodflow.optim.reductions import CHUNK

#: large (sliced, with a partial last slice), bucketed small tensors of one and of several sizes,
#: one of exactly CHUNK // 4 + 1 elements (sliced), an empty one
SHAPES = [(3, CHUNK + 1000), (7,), (3, 4, 5), (7,), (CHUNK // 4 + 1,), (0,), (60, 70)]


def _lists(dtype=torch.float32, seed=0, shapes=SHAPES):
    g = torch.Generator().manual_seed(seed)
    a = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]
    b = [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in shapes]
    return a, b


def _sq(x):
    return float(x.double().square().sum())


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_change_sq_sums_are_exact_for_a_tiny_change(dtype):
    """c ≪ n: the expanded ‖g‖² − 2⟨g, p⟩ + ‖p‖² would cancel to noise in float32; the elementwise
    difference (formed in the tensors' dtype, as the reference does) keeps c to rounding."""
    g, _ = _lists(dtype)
    p = [x * (1 + 1e-5) for x in g]
    want = (sum(_sq(x) for x in g), sum(_sq(x - q) for x, q in zip(g, p)))
    before = [q.clone() for q in g + p]
    # float32: the sums' own rounding (CPU dot product, CPU vector_norm ≈ 2e-5 here); the expanded form
    # would be off by ~100 %
    rel = 1e-12 if dtype == torch.float64 else 5e-5
    for out in (reductions.change_sq_sums(g, p), reductions._change_foreach(g, p)):
        assert out.dtype == torch.float64 and out.shape == (2,)
        assert float(out[0]) == pytest.approx(want[0], rel=rel)
        assert float(out[1]) == pytest.approx(want[1], rel=rel)
    assert all(torch.equal(q, b) for q, b in zip(g + p, before))  # read-only


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_velocity_and_grad_norms_per_tensor(dtype):
    m, g = _lists(dtype)
    w = 0.1
    want = torch.tensor([_sq(torch.lerp(a, b, w)) for a, b in zip(m, g)], dtype=torch.float64)
    rel = 1e-12 if dtype == torch.float64 else 5e-5
    before = [q.clone() for q in m + g]
    for out in (reductions.velocity_sq_norms(m, g, w), reductions._velocity_foreach(m, g, w)):
        assert out.dtype == torch.float64 and out.shape == (len(m),)
        torch.testing.assert_close(out, want, rtol=rel, atol=0)
    assert all(torch.equal(q, b) for q, b in zip(m + g, before))  # read-only
    torch.testing.assert_close(reductions.sq_norms(g), torch.tensor([_sq(b) for b in g], dtype=torch.float64),
                               rtol=rel, atol=0)


def test_mixed_dtypes_non_contiguous_and_half_precision():
    """Groups by dtype keep their order; channels_last, transposed and bfloat16 tensors are reduced too."""
    m, g = _lists(shapes=[(8, 16, 3, 3), (300, 500), (40,)])
    m[0], g[0] = m[0].to(memory_format=torch.channels_last), g[0].to(memory_format=torch.channels_last)
    m[1], g[1] = m[1].t(), g[1].t()
    m[2], g[2] = m[2].bfloat16(), g[2].bfloat16()
    want = torch.tensor([_sq(torch.lerp(a.float(), b.float(), 0.2)) for a, b in zip(m, g)], dtype=torch.float64)
    out = reductions.velocity_sq_norms(m, g, 0.2)
    torch.testing.assert_close(out[:2], want[:2], rtol=2e-5, atol=0)
    torch.testing.assert_close(out[2:], want[2:], rtol=2e-2, atol=0)  # the lerp itself rounds to bfloat16
    sums = reductions.change_sq_sums(g, m)
    assert float(sums[1]) == pytest.approx(sum(_sq(a.double() - b.double()) for a, b in zip(g, m)), rel=1e-2)


def test_statistics_argument_is_checked():
    assert reductions.check_statistics("compile") == "compile"
    with pytest.raises(ValueError, match="statistics"):
        reductions.check_statistics("native")


@pytest.mark.slow
def test_compiled_statistics_match_the_eager_ones():
    """torch.compile of the same sums (float64 accumulation in one fused loop) agrees to rounding (three
    inductor compilations: ≈35 s on one CPU core)."""
    m, g = _lists(shapes=[(50, 70), (7,), (300,)])
    torch.testing.assert_close(reductions.change_sq_sums(g, m, "compile"), reductions.change_sq_sums(g, m),
                               rtol=2e-5, atol=0)
    torch.testing.assert_close(reductions.velocity_sq_norms(m, g, 0.1, "compile"),
                               reductions.velocity_sq_norms(m, g, 0.1), rtol=2e-5, atol=0)
    torch.testing.assert_close(reductions.sq_norms(g, "compile"), reductions.sq_norms(g), rtol=2e-5, atol=0)
