"""Property tests of the eigensolvers against LAPACK (numpy/scipy), over random symmetric problems."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rodflow

pytestmark = pytest.mark.usefixtures("one_thread")


def _problem(seed: int, d: int, spread: float):
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((d, d)))
    eig = rng.uniform(-spread, spread, size=d)
    eig[0] = spread * 1.5  # a clear top eigenvalue (the gap lets every method converge)
    h = (q * eig) @ q.T
    ht = torch.as_tensor(h)
    return h, (lambda th: 0.5 * th @ ht @ th), torch.as_tensor(rng.standard_normal(d))


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(12, 40), spread=st.floats(0.1, 100.0),
       method=st.sampled_from(["dense", "krylov", "lanczos", "lobpcg"]))
def test_top_eigenvalue_is_lapacks(seed, d, spread, method):
    h, loss, theta = _problem(seed, d, spread)
    top = rodflow.sharpness(loss, theta, method=method, tol=1e-10).top
    assert top == pytest.approx(np.linalg.eigvalsh(h)[-1], rel=1e-6)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), d=st.integers(12, 30), log_p=st.floats(-3.0, 3.0))
def test_preconditioned_top_is_the_generalised_eigenvalue(seed, d, log_p):
    """λ_max(P⁻¹H) from the scaled operator equals LAPACK's generalised eigenvalue of (H, diag P)."""
    h, loss, theta = _problem(seed, d, 1.0)
    p = np.exp(np.random.default_rng(seed + 1).uniform(log_p - 1.0, log_p + 1.0, size=d))
    ref = scipy.linalg.eigh(h, np.diag(p), eigvals_only=True)[-1]
    res = rodflow.sharpness(loss, theta, preconditioner=torch.as_tensor(p), method="dense")
    assert res.top == pytest.approx(ref, rel=1e-9, abs=1e-12)
