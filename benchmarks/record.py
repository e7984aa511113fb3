"""Recorder cost: a recorded training step ÷ the same step unrecorded, flush cost, resident memory.

Single-threaded torch, a ≈1M-parameter float32 MLP (512 → 1024 → 448 → 10, batch 512, Adam).
Part 1: median step times in interleaved rounds, unrecorded, recorded at ``every=1`` (θ, m, v, loss
and gradient norm per step, ≈12 MB a row; the Recorder's worker thread writes while the next
forward/backward runs) and disabled (``Recorder(None, ...)``, whose ratio is the noise floor);
target ≤ 1.05×.
Part 2: the cost of one commit of 10 rows (SWMR's two flushes) against closing and reopening the
file per commit, with the writer's chunking. Part 3: resident memory after ``--rss-steps`` recorded steps minus before.
One run, printed tables::

    python benchmarks/record.py [--rounds 60] [--batch 512] [--rss-steps 300] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).parent))
from _timing import table

import rodflow
from rodflow.trajectory import _chunks


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _setup(batch: int, seed: int = 0):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(512, 1024), nn.ReLU(), nn.Linear(1024, 448), nn.ReLU(), nn.Linear(448, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x, y = torch.randn(batch, 512), torch.randint(0, 10, (batch,))
    return model, opt, x, y


def _step(model, opt, x, y):
    opt.zero_grad(set_to_none=False)
    loss = nn.functional.cross_entropy(model(x), y)
    loss.backward()
    opt.step()
    return loss


def step_ratio(rounds: int, batch: int, directory: str) -> None:
    runs = {name: _setup(batch) for name in ("unrecorded", "recorded every=1", "disabled")}
    path = os.path.join(directory, "bench_record.h5")
    recs = {"recorded every=1": rodflow.Recorder(path, runs["recorded every=1"][0], runs["recorded every=1"][1]),
            "disabled": rodflow.Recorder(None, runs["disabled"][0], runs["disabled"][1])}
    times: dict[str, list[float]] = {name: [] for name in runs}
    warmup = 5
    try:
        for r in range(warmup + rounds):
            for name, (model, opt, x, y) in runs.items():
                t0 = time.perf_counter()
                loss = _step(model, opt, x, y)
                if name in recs:
                    recs[name].step(loss)
                if r >= warmup:
                    times[name].append(time.perf_counter() - t0)
    finally:
        for rec in recs.values():
            rec.close()
        size = os.path.getsize(path) / 2**20
        os.unlink(path)
    base = statistics.median(times["unrecorded"])
    d = sum(p.numel() for p in runs["unrecorded"][0].parameters())
    rows = [(name, f"{statistics.median(ts) * 1e3:.2f}", f"{statistics.median(ts) / base:.3f}")
            for name, ts in times.items()]
    print(f"\nPart 1: training step, {d:,} parameters, batch {batch}, {rounds} rounds, file {size:.0f} MiB")
    print(table(rows, ("step", "median ms", "÷ unrecorded")))


def flush_cost(directory: str, d: int = 1_000_000, rows: int = 10, commits: int = 10) -> None:
    data = np.random.default_rng(0).standard_normal((rows, d)).astype(np.float32)
    path = os.path.join(directory, "bench_flush.h5")
    out = []
    for mode in ("swmr", "reopen"):
        with h5py.File(path, "w", libver="latest") as f:
            for name in ("theta", "m", "v"):
                f.create_dataset(name, shape=(0, d), maxshape=(None, d), dtype="f4", chunks=_chunks((d,), 4))
            f.create_dataset("_counts", data=np.zeros(3, dtype=np.int64))
        write, commit = [], []
        f = h5py.File(path, "r+", libver="latest")
        if mode == "swmr":
            f.swmr_mode = True
        n = 0
        for _ in range(commits):
            t0 = time.perf_counter()
            for name in ("theta", "m", "v"):
                ds = f[name]
                ds.resize(n + rows, axis=0)
                ds[n: n + rows] = data
            t1 = time.perf_counter()
            n += rows
            if mode == "swmr":
                f.flush()
                f["_counts"][:] = n
                f.flush()
            else:
                f["_counts"][:] = n
                f.close()
                f = h5py.File(path, "r+", libver="latest")
            t2 = time.perf_counter()
            write.append(t1 - t0)
            commit.append(t2 - t1)
        f.close()
        os.unlink(path)
        out.append((mode, f"{statistics.median(write) * 1e3:.1f}", f"{statistics.median(commit) * 1e3:.2f}"))
    print(f"\nPart 2: one commit of {rows} rows of θ, m, v (d = {d:,} float32)")
    print(table(out, ("design", "write ms", "commit ms")))


def resident_memory(steps: int, batch: int, directory: str) -> None:
    model, opt, x, y = _setup(batch)
    path = os.path.join(directory, "bench_rss.h5")
    for _ in range(3):
        _step(model, opt, x, y)
    before = _rss_mb()
    with rodflow.Recorder(path, model, opt) as rec:
        for _ in range(steps):
            rec.step(_step(model, opt, x, y))
    after = _rss_mb()
    size = os.path.getsize(path) / 2**20
    os.unlink(path)
    print(f"\nPart 3: {steps} recorded steps ({size:.0f} MiB written): resident memory {before:.0f} → {after:.0f} MiB "
          f"(+{after - before:.1f} MiB)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=60)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--rss-steps", type=int, default=300)
    ap.add_argument("--dir", default=tempfile.gettempdir())
    args = ap.parse_args()
    torch.set_num_threads(1)
    step_ratio(args.rounds, args.batch, args.dir)
    flush_cost(args.dir)
    resident_memory(args.rss_steps, args.batch, args.dir)


if __name__ == "__main__":
    main()
