"""Property tests of the flows and of compare, over random quadratics (references: scipy's expm, numpy norms)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rodflow

pytestmark = pytest.mark.usefixtures("one_thread")


def _quadratic(seed: int, d: int):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    h = (q * rng.uniform(0.1, 2.0, size=d)) @ q.T
    c = rng.standard_normal(d)
    ht, ct = torch.as_tensor(h), torch.as_tensor(c)
    return h, c, (lambda th: 0.5 * (th - ct) @ ht @ (th - ct)), torch.as_tensor(c + rng.standard_normal(d))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(2, 6), x=st.floats(0.05, 0.9))
def test_gd_stable_flow_is_the_matrix_exponential(seed, d, x):
    """Ẇ = −ηH(W − c): W(t) = c + exp(−ηHt)(W₀ − c), for any quadratic and rate below the edge."""
    h, c, loss, theta0 = _quadratic(seed, d)
    lr = x * 2.0 / np.linalg.eigvalsh(h)[-1]
    spec = rodflow.optimizer("gd", lr=float(lr))
    traj = rodflow.iterate(spec, loss, theta0, 12)
    sol = rodflow.stable_flow(spec, loss).solve(traj, rtol=1e-11, atol=1e-13)
    ref = np.stack([c + scipy.linalg.expm(-lr * h * k) @ (theta0.numpy() - c) for k in range(13)])
    np.testing.assert_allclose(sol.theta.numpy(), ref, rtol=1e-8, atol=1e-10)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(2, 5), x=st.floats(0.3, 0.95), start=st.integers(1, 5))
def test_compare_distances_are_the_row_norms_and_phase_free_is_never_larger(seed, d, x, start):
    h, _, loss, theta0 = _quadratic(seed, d)
    spec = rodflow.optimizer("gd", lr=float(x * 2.0 / np.linalg.eigvalsh(h)[-1]))
    traj = rodflow.iterate(spec, loss, theta0, 16)
    sol = rodflow.rod_flow(spec, loss).solve(traj, start=start)
    cmp = rodflow.compare(traj, sol, window=(start + 4, 17))
    rows = cmp.t.numpy()
    ref = np.linalg.norm(traj.theta.numpy()[rows] - sol.theta.numpy()[rows - start], axis=1)
    np.testing.assert_allclose(cmp.distance.numpy(), ref, rtol=1e-12, atol=1e-15)
    s = cmp.summary()
    assert s["eos_mean_phase_free_distance"] <= s["eos_mean_distance"] * (1 + 1e-12)
    assert bool((cmp.phase_free_distance <= cmp.distance).all())
