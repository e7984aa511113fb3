"""Shared fixtures: float64 problems small enough for exact references."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture
def float64_default():
    """float64 as torch's default dtype: torch keeps step counts and NAdam's μ-product in it, so a
    comparison with torch.optim in float64 would otherwise measure float32 rounding of the bias
    corrections."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


@pytest.fixture
def one_thread():
    """Tiny tensors and many small products: a second thread only adds contention on a shared
    machine (measured 10× slower on a busy 2-core machine); the caller's setting is restored."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def small_mlp():
    """A ~1k-parameter tanh MLP on 128 digits, MSE on one-hot targets, float64."""
    import rodflow

    return rodflow.problems.digits_mlp((16,), n=128, seed=0)
