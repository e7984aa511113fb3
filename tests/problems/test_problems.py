"""Problems carry what they claim: Hessians, module losses, data files."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import rodflow
from rodflow.problems.data import read_idx


def test_quadratic_hessian_and_minimiser():
    c = torch.tensor([1.0, -1.0, 2.0], dtype=torch.float64)
    prob = rodflow.problems.quadratic([5.0, 2.0, -1.0], seed=3, center=c)
    h = torch.func.hessian(prob.loss_fn)(prob.theta0)
    torch.testing.assert_close(h, prob.info["hessian"])
    torch.testing.assert_close(torch.linalg.eigvalsh(h), torch.tensor([-1.0, 2.0, 5.0], dtype=torch.float64))
    assert float(prob.loss_fn(c)) == 0.0
    with pytest.raises(ValueError, match="rotation"):
        rodflow.problems.quadratic([1.0, 2.0], rotation=torch.ones(2, 2))


def test_random_rotation_is_orthogonal():
    q = rodflow.problems.random_rotation(6, seed=1)
    torch.testing.assert_close(q @ q.T, torch.eye(6, dtype=torch.float64))


def test_module_problem_equals_the_modules_own_loss():
    x, y = rodflow.problems.digits(n=32, seed=0)
    net = rodflow.problems.mlp([64, 8, 10], seed=0)
    for loss in ("mse", "cross_entropy"):
        targets = rodflow.problems.one_hot(y, 10) if loss == "mse" else y
        prob = rodflow.problems.module_problem(net, x, targets, loss=loss)
        out = net(x)
        ref = 0.5 * (out - targets).square().sum(1).mean() if loss == "mse" else F.cross_entropy(out, y)
        torch.testing.assert_close(prob.loss_fn(prob.theta0), ref)
    with pytest.raises(ValueError, match="loss"):
        rodflow.problems.module_problem(net, x, y, loss="hinge")


def test_matrix_factorization_is_zero_at_the_truth():
    prob = rodflow.problems.matrix_factorization(7, 5, rank=2, seed=0)
    clean = prob.info["clean"]
    u, s, vh = torch.linalg.svd(clean)
    a = u[:, :2] * s[:2].sqrt()
    b = vh[:2].T * s[:2].sqrt()
    assert float(prob.loss_fn(torch.cat([a.reshape(-1), b.reshape(-1)]))) < 1e-25
    assert float(prob.loss_fn(prob.theta0)) > 0.1


def test_digits_shapes():
    x, y = rodflow.problems.digits(n=100, seed=1)
    assert x.shape == (100, 64) and y.shape == (100,)
    assert set(y.tolist()) <= set(range(10))
    torch.testing.assert_close(x.mean(0), torch.zeros(64, dtype=torch.float64), atol=1e-12, rtol=0)


def _write_idx(path, arr):
    head = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(head + arr.astype(np.uint8).tobytes())


def test_read_idx_and_fashion_mnist_loader(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 28, 28))
    labels = rng.integers(0, 10, size=(5,))
    _write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    _write_idx(tmp_path / "train-labels-idx1-ubyte.gz", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte.gz"), images)
    x, y = rodflow.problems.fashion_mnist(root=str(tmp_path))
    assert x.shape == (5, 1, 28, 28) and float(x.max()) <= 1.0
    np.testing.assert_array_equal(y.numpy(), labels)
    (tmp_path / "bad.gz").write_bytes(gzip.compress(b"\x01\x02\x03\x04"))
    with pytest.raises(ValueError, match="IDX"):
        read_idx(tmp_path / "bad.gz")


def test_mnist5k_reads_the_csv_layout(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 256, size=(20, 784)), rng.integers(0, 10, size=(20, 1))], axis=1)
    path = tmp_path / "mnist_5k.csv.gz"
    with gzip.open(path, "wt") as fh:
        np.savetxt(fh, rows, delimiter=",", fmt="%d")
    x, y = rodflow.problems.mnist5k(path=path, center=False)
    np.testing.assert_allclose(x.numpy(), rows[:, :-1] / 255.0)
    np.testing.assert_array_equal(y.numpy(), rows[:, -1])


def test_movielens_reader_on_a_generated_inter_file(tmp_path):
    path = tmp_path / "ml.inter"
    path.write_text("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
                    "196\t242\t3\t881250949\n186\t302\t3\t891717742\n196\t377\t1\t878887116\n")
    u, i, r = rodflow.problems.movielens100k(path)
    assert u.tolist() == [0, 1, 0] and i.tolist() == [0, 1, 2] and r.tolist() == [3.0, 3.0, 1.0]
    bad = tmp_path / "bad.inter"
    bad.write_text("a\tb\n1\t2\n")
    with pytest.raises(ValueError, match="recbole"):
        rodflow.problems.movielens100k(bad)


def test_jester_reader_and_generator(tmp_path):
    rows = np.full((2, 101), 99.0)
    rows[:, 0] = [2, 1]
    rows[0, 1], rows[0, 5], rows[1, 100] = 7.5, -3.25, 0.0
    np.savetxt(tmp_path / "jester.csv", rows, delimiter=",")
    r = rodflow.problems.read_jester(tmp_path / "jester.csv")
    assert r.shape == (2, 100)
    assert r[0, 0] == 7.5 and r[0, 4] == -3.25 and r[1, 99] == 0.0
    assert int((~r.isnan()).sum()) == 3
    m = rodflow.problems.jester_like(n_users=200, n_items=50, seed=1)
    seen = m[~m.isnan()]
    assert float(seen.abs().max()) <= 10.0 and 0.5 < (~m.isnan()).float().mean() < 0.62


def test_module_problem_gradient_is_the_modules_backward_in_flatten_order():
    prob = rodflow.problems.digits_mlp((8,), n=40, seed=2)
    net = prob.info["module"]
    x, y = rodflow.problems.digits(n=40, seed=2)
    net.zero_grad()
    (0.5 * (net(x) - rodflow.problems.one_hot(y, 10)).square().sum(1).mean()).backward()
    ref = rodflow.flatten([p.grad for p in net.parameters()])
    torch.testing.assert_close(rodflow.gradient(prob.loss_fn)(prob.theta0), ref, rtol=1e-12, atol=1e-15)
    assert prob.dim == 64 * 8 + 8 + 8 * 10 + 10 and prob.theta0.dtype == torch.float64


def test_read_idx_plain_file_and_malformed_headers(tmp_path):
    arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    head = bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2, 3, 4)
    (tmp_path / "a.idx").write_bytes(head + arr.tobytes())
    np.testing.assert_array_equal(read_idx(tmp_path / "a.idx"), arr)
    (tmp_path / "short.idx").write_bytes(head + arr.tobytes()[:-1])
    with pytest.raises(ValueError, match="header says"):
        read_idx(tmp_path / "short.idx")
    (tmp_path / "f32.idx").write_bytes(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 1) + b"\0\0\0\0")
    with pytest.raises(ValueError, match="uint8"):
        read_idx(tmp_path / "f32.idx")
