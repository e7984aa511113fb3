"""Shared fixtures: float64 problems small enough for exact references."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def small_mlp():
    """A ~1k-parameter tanh MLP on 128 digits, MSE on one-hot targets, float64."""
    import rodflow

    return rodflow.problems.digits_mlp((16,), n=128, seed=0)
