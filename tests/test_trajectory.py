"""Trajectory storage: lossless HDF5, lazy rows, concurrent readers, crash safety, clear errors on bad files."""

from __future__ import annotations

import json
import pathlib
import re
import signal
import textwrap
import threading

import h5py
import numpy as np
import pytest
import torch

import rodflow
from rodflow import trajectory as store
from tests.conftest import sigkill_after_rows


def _assert_same(a, b):
    for name in ("theta", "m", "v", "t", "loss", "grad_norm"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert torch.equal(x, y) and x.dtype == y.dtype, name  # torch.equal ignores dtype
    assert a.sharpness.keys() == b.sharpness.keys()
    for k in a.sharpness:
        assert torch.equal(a.sharpness[k], b.sharpness[k]) and a.sharpness[k].dtype == b.sharpness[k].dtype
    assert a.config == b.config and a.complete == b.complete


@pytest.fixture(scope="module")
def adam_run(small_mlp):
    return rodflow.iterate(rodflow.optimizer("adam", lr=1e-2), small_mlp.loss_fn, small_mlp.theta0, 6,
                           sharpness_every=3, config={"seed": 3, "note": "x"})


@pytest.mark.parametrize("compression", [None, "gzip", "lzf"])
def test_save_load_is_bitwise(tmp_path, adam_run, compression):
    traj = adam_run
    path = tmp_path / "run.h5"
    traj.save(path, compression=compression)
    with h5py.File(path, "r") as f:  # readable with h5py alone, laid out as documented
        assert f.attrs["format"] == "rodflow.trajectory" and f.attrs["version"] == 1
        assert f["theta"].shape == (7, 1210) and f["theta"].maxshape == (None, 1210)
        assert f["theta"].chunks is not None and f["theta"].compression == compression
        assert json.loads(f.attrs["config"])["seed"] == 3
        assert f["sharpness/sharpness"].shape == (3,)
    back = rodflow.Trajectory.load(path)
    _assert_same(back, traj)
    assert back.config["hyperparameters"]["betas"] == (0.9, 0.999)  # tuples stay tuples
    assert back.state(3).t == 3 and torch.equal(back.state(3).theta, traj.theta[3])
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]  # no temporary left


@pytest.mark.parametrize(("name", "dtype"), [("gd", torch.float32), ("scalar_nadam", torch.float64),
                                              ("adam", torch.bfloat16)])
def test_round_trip_without_moments_with_a_scalar_v_and_in_bfloat16(tmp_path, name, dtype):
    prob = rodflow.problems.quadratic([2.0, 1.0, 0.5], seed=0, dtype=torch.float32 if dtype == torch.bfloat16
                                      else dtype)
    traj = rodflow.iterate(rodflow.optimizer(name, lr=0.1), prob.loss_fn, prob.theta0, 5)
    if dtype == torch.bfloat16:
        traj = rodflow.Trajectory(theta=traj.theta.to(dtype), m=traj.m.to(dtype), v=traj.v.to(dtype), t=traj.t,
                                  loss=traj.loss.to(dtype))
    traj.save(tmp_path / "r.h5")
    back = rodflow.Trajectory.load(tmp_path / "r.h5")
    _assert_same(back, traj)
    assert (back.m is None) == (name == "gd") and (back.v is None or back.v.shape[0] == 6)


def test_save_load_resume_equals_an_uninterrupted_run(tmp_path, small_mlp):
    spec = rodflow.optimizer("nadam", lr=1e-2, betas=(0.8, 0.95))
    full = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, 12)
    rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, 7).save(tmp_path / "first.h5")
    state = rodflow.Trajectory.load(tmp_path / "first.h5").state(7)
    grad = rodflow.gradient(small_mlp.loss_fn)
    for _ in range(5):
        state = spec.step(state, grad)
    assert state.t == 12
    assert torch.equal(state.theta, full.theta[-1]) and torch.equal(state.m, full.m[-1])
    assert torch.equal(state.v, full.v[-1])


def test_flow_solution_saves_and_loads_in_the_same_format(tmp_path):
    prob = rodflow.problems.quadratic([3.0, 1.0, 0.2], seed=0)
    spec = rodflow.optimizer("adam", lr=0.1)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, 12)
    sol = rodflow.rod_flow(spec, prob.loss_fn).solve(traj, start=4, steps=6)
    assert isinstance(sol, store.PhaseSeries) and isinstance(traj, store.PhaseSeries)
    sol.save(tmp_path / "sol.h5")
    back = rodflow.FlowSolution.load(tmp_path / "sol.h5")
    for name in ("t", "theta", "centre", "delta", "m", "v", "loss"):
        assert torch.equal(getattr(back, name), getattr(sol, name)), name
    assert back.stats == sol.stats and back.kind == "rod" and back.config == sol.config
    assert torch.equal(back.state(7).theta, sol.state(7).theta)
    with pytest.raises(ValueError, match="holds a FlowSolution, not a Trajectory"):
        rodflow.Trajectory.load(tmp_path / "sol.h5")


def test_legacy_torch_files_still_load(tmp_path, small_mlp):
    """The torch.save payload that rodflow 0.1 wrote, including a numpy int and a path in config."""
    traj = rodflow.iterate(rodflow.optimizer("adam", lr=1e-2), small_mlp.loss_fn, small_mlp.theta0, 4)
    payload = {"format": "rodflow.trajectory/1", "theta": traj.theta, "m": traj.m, "v": traj.v, "t": traj.t,
               "loss": traj.loss, "sharpness": {}, "config": dict(traj.config), "complete": True}
    torch.save(payload, tmp_path / "old.pt")
    _assert_same(rodflow.Trajectory.load(tmp_path / "old.pt"), traj)
    payload["config"] = {**traj.config, "seed": np.int64(7), "out": pathlib.Path("/tmp/x")}
    torch.save(payload, tmp_path / "old_np.pt")
    back = rodflow.Trajectory.load(tmp_path / "old_np.pt")
    assert back.config["seed"] == 7 and type(back.config["seed"]) is int and back.config["out"] == "/tmp/x"


def test_config_traps_are_converted_or_refused_at_save_time(tmp_path, small_mlp):
    traj = rodflow.iterate(rodflow.optimizer("gd", lr=1e-2), small_mlp.loss_fn, small_mlp.theta0, 2,
                           config={"seed": np.int64(3), "out": pathlib.Path("runs/a"), "lr": np.float32(0.5),
                                   "flag": np.bool_(True), "dtype": torch.float32})
    traj.save(tmp_path / "a.h5")
    cfg = rodflow.Trajectory.load(tmp_path / "a.h5").config
    assert (cfg["seed"], cfg["out"], cfg["lr"], cfg["flag"], cfg["dtype"]) == (3, "runs/a", 0.5, True, "torch.float32")
    assert type(cfg["seed"]) is int
    for bad, where in ((torch.ones(2), "config['w']"), (np.ones(2), "config['w']"), (object(), "config['w']")):
        traj.config = {"w": bad}
        with pytest.raises(TypeError, match=re.escape(where) + ".*cannot be stored"):
            traj.save(tmp_path / "b.h5")
    traj.config = {1: "x"}
    with pytest.raises(TypeError, match="keys must be strings"):
        traj.save(tmp_path / "b.h5")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5"]


def test_concurrent_saves_to_one_path_each_leave_a_complete_file(tmp_path, small_mlp):
    runs = [rodflow.iterate(rodflow.optimizer("adam", lr=lr), small_mlp.loss_fn, small_mlp.theta0, 30)
            for lr in (1e-2, 2e-2)]
    path = tmp_path / "run.h5"
    errors: list[BaseException] = []

    def save(traj):
        try:
            traj.save(path)
        except BaseException as err:
            errors.append(err)

    for _ in range(3):

        threads = [threading.Thread(target=save, args=(r,)) for r in runs]
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        assert not errors
        back = rodflow.Trajectory.load(path)
        assert any(torch.equal(back.theta, r.theta) and back.config == r.config for r in runs)
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]


def test_a_failed_save_removes_its_temporary_and_keeps_the_old_file(tmp_path, small_mlp, monkeypatch):
    traj = rodflow.iterate(rodflow.optimizer("gd", lr=1e-2), small_mlp.loss_fn, small_mlp.theta0, 3)
    traj.save(tmp_path / "run.h5")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(store.os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        rodflow.iterate(rodflow.optimizer("gd", lr=1e-1), small_mlp.loss_fn, small_mlp.theta0, 3).save(
            tmp_path / "run.h5")
    monkeypatch.undo()
    assert [p.name for p in tmp_path.iterdir()] == ["run.h5"]
    _assert_same(rodflow.Trajectory.load(tmp_path / "run.h5"), traj)


def test_lazy_load_reads_only_the_rows_asked_for(tmp_path, small_mlp, monkeypatch):
    traj = rodflow.iterate(rodflow.optimizer("adam", lr=1e-2), small_mlp.loss_fn, small_mlp.theta0, 40)
    traj.save(tmp_path / "r.h5")
    shapes = []
    real = store._as_tensor
    monkeypatch.setattr(store, "_as_tensor", lambda a, d: (shapes.append(a.shape), real(a, d))[1])
    lazy = rodflow.Trajectory.load(tmp_path / "r.h5", lazy=True)
    assert isinstance(lazy.theta, store.LazyRows) and lazy.theta.shape == traj.theta.shape
    assert all(s[0] <= 41 and len(s) == 1 for s in shapes)  # only the 1-d columns (t, loss) were read
    shapes.clear()
    assert torch.equal(lazy.theta[7], traj.theta[7]) and torch.equal(lazy.m[3:9], traj.m[3:9])
    assert torch.equal(lazy.v[-1], traj.v[-1]) and torch.equal(lazy.theta[2, 5:9], traj.theta[2, 5:9])
    assert torch.equal(lazy.state(20).m, traj.m[20])
    assert shapes == [(1210,), (6, 1210), (1210,), (1210,), (1210,), (1210,), (1210,)]  # state(20): θ, m, v
    _assert_same(lazy.read(), traj)
    with pytest.raises(IndexError):
        lazy.theta[41]


def test_reading_while_a_writer_appends(tmp_path):
    """A reader sees the committed rows of a file that is still being written (SWMR)."""
    path = tmp_path / "live.h5"
    rows = {"theta": ((3,), torch.float64), "loss": ((), torch.float64), "t": ((), torch.int64)}
    with store.TrajectoryWriter(path, rows=rows, none=("m", "v")) as w:
        for k in range(25):
            w.append("theta", torch.full((3,), float(k), dtype=torch.float64))
            w.append("loss", torch.tensor(float(k), dtype=torch.float64))
            w.append("t", torch.tensor(k))
            if k == 9:
                w.commit()
                live = rodflow.Trajectory.load(path)
                assert live.t.tolist() == list(range(10)) and not live.complete
                assert torch.equal(live.theta[:, 0], torch.arange(10, dtype=torch.float64))
        w.commit()
        assert len(rodflow.Trajectory.load(path, lazy=True)) == 25
    done = rodflow.Trajectory.load(path)
    assert len(done) == 25 and done.complete and done.m is None


_KILLED_WRITER = textwrap.dedent("""
    import sys, torch, rodflow
    torch.set_num_threads(1)
    prob = rodflow.problems.digits_mlp((16,), n=128, seed=0)
    rodflow.iterate(rodflow.optimizer("adam", lr=1e-2), prob.loss_fn, prob.theta0, 10**6,
                    path=sys.argv[1], flush_every=5)
""")


def test_a_run_killed_with_sigkill_keeps_its_committed_rows(tmp_path, small_mlp):
    path = tmp_path / "killed.h5"
    seen, returncode = sigkill_after_rows(_KILLED_WRITER, path, 40)
    assert returncode == -signal.SIGKILL
    back = rodflow.Trajectory.load(path)
    assert len(back) >= seen and len(back) % 5 == 0 and not back.complete
    ref = rodflow.iterate(rodflow.optimizer("adam", lr=1e-2), small_mlp.loss_fn, small_mlp.theta0, len(back) - 1)
    for name in ("theta", "m", "v", "t", "loss"):
        assert torch.equal(getattr(back, name), getattr(ref, name)), name


def _h5(path, mutate):
    traj = rodflow.Trajectory(theta=torch.zeros(3, 2), m=None, v=None, t=torch.arange(3), loss=torch.zeros(3))
    traj.save(path)
    with h5py.File(path, "r+") as f:
        mutate(f)


def _bad_files(tmp_path):
    good = rodflow.Trajectory(theta=torch.randn(50, 400), m=None, v=None, t=torch.arange(50), loss=torch.zeros(50))
    good.save(tmp_path / "good.h5")
    torch.save({"format": "rodflow.trajectory/1", "theta": torch.zeros(2, 1)}, tmp_path / "good.pt")
    data = (tmp_path / "good.h5").read_bytes()
    pt = (tmp_path / "good.pt").read_bytes()
    cases = {
        "empty": (b"", "is empty"),
        "text": (b"step,loss\n0,1.0\n", "neither HDF5 nor a torch.save file"),
        "truncated_h5": (data[: len(data) // 3], "not a readable HDF5 file"),
        "truncated_pt": (pt[: len(pt) // 2], "damaged torch.save file"),
        "corrupted_pt": (pt[:60] + bytes(200) + pt[260:], "damaged torch.save file.*weights_only=True only"),
        "missing_field_pt": (pt, "missing the field 'm'"),
        "other_pt": (None, "not a rodflow trajectory"),
        "other_h5": (None, "not a rodflow trajectory"),
        "newer_version": (None, "format version 2, newer than"),
        "missing_dataset": (None, "damaged or truncated"),
        "missing_attribute": (None, "damaged metadata"),
    }
    out = {}
    for name, (content, message) in cases.items():
        path = tmp_path / f"{name}.bin"
        if content is not None:
            path.write_bytes(content)
        out[name] = (path, message)
    torch.save({"a": 1}, out["other_pt"][0])
    with h5py.File(out["other_h5"][0], "w") as f:
        f["x"] = np.zeros(3)
    _h5(out["newer_version"][0], lambda f: f.attrs.__setitem__("version", 2))
    _h5(out["missing_dataset"][0], lambda f: f.__delitem__("loss"))
    _h5(out["missing_attribute"][0], lambda f: f.attrs.__delitem__("rows"))
    return out


def test_bad_files_raise_one_clear_value_error(tmp_path):
    for name, (path, message) in _bad_files(tmp_path).items():
        with pytest.raises(ValueError, match=message) as info:
            rodflow.Trajectory.load(path)
        assert str(path) in str(info.value), name
    with pytest.raises(FileNotFoundError, match="does not exist"):
        rodflow.Trajectory.load(tmp_path / "nope.h5")


def test_shapes_are_checked():
    with pytest.raises(ValueError, match="loss"):
        rodflow.Trajectory(theta=torch.zeros(3, 2), m=None, v=None, t=torch.arange(3), loss=torch.zeros(2))
    traj = rodflow.Trajectory(theta=torch.zeros(3, 2), m=None, v=None, t=torch.arange(3), loss=torch.zeros(3))
    with pytest.raises(ValueError, match="not recorded"):
        traj.index_of(7)
