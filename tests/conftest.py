"""Shared fixtures: float64 problems small enough for exact references."""

from __future__ import annotations

import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch

ROOT = pathlib.Path(__file__).resolve().parents[1]


def sigkill_after_rows(script: str, path: pathlib.Path, rows: int, timeout: float = 60.0) -> tuple[int, int]:
    """Run ``python -c script path`` (single-threaded, rodflow importable), and kill it with SIGKILL as soon
    as the trajectory it writes at ``path`` reads back with at least ``rows`` rows (``timeout`` seconds at
    most). Returns the rows seen before the kill and the child's return code."""
    import rodflow

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, str(path)], env=env, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    try:
        seen, deadline = 0, time.monotonic() + timeout
        while seen < rows and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
            try:
                seen = len(rodflow.Trajectory.load(path, lazy=True)) if path.exists() else 0
            except ValueError:
                seen = 0  # the file is created but its datasets are not yet there
        assert seen >= rows, proc.stderr.read().decode() if proc.poll() is not None else "no rows in time"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stderr.close()
    return seen, proc.returncode


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
