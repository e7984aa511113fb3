"""Shared fixtures of the reproduction tests: a Fashion-MNIST stand-in, so no test needs the Debian package."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest

import rodflow


def write_idx(path, arr: np.ndarray) -> None:
    """``arr`` (uint8) as a gzipped IDX file: magic 0x0008 + ndim, big-endian dims, the bytes."""
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(head + arr.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion(tmp_path, monkeypatch):
    """40 training and 20 test images in Fashion-MNIST's IDX layout, where the loader looks first."""
    rng = np.random.default_rng(0)
    folder = tmp_path / "fashion"
    folder.mkdir()
    for prefix, n in (("train", 40), ("t10k", 20)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, size=(n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, size=(n,)))
    monkeypatch.setattr(rodflow.problems.data, "FASHION_MNIST_DIRS", (str(folder),))
    return folder
