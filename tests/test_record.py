"""Recorder: a plain torch loop recorded to a file; replaying each spec from a recorded state gives the next one."""

from __future__ import annotations

import textwrap
import warnings

import pytest
import torch
from torch import nn

import rodflow
from rodflow.adapters import spec_from_config, spec_of
from tests.conftest import sigkill_after_rows

# (torch.optim class or rodflow optimizer, keyword arguments, registry name the record must carry)
MAPPED = [
    (torch.optim.SGD, {"lr": 0.2}, "gd"),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.8}, "heavy_ball"),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.8, "nesterov": True}, "nesterov"),
    (torch.optim.Adam, {"lr": 1e-2, "betas": (0.8, 0.99), "eps": 1e-7}, "adam"),
    (torch.optim.AdamW, {"lr": 1e-2, "betas": (0.8, 0.99), "weight_decay": 0.0}, "adam"),
    (torch.optim.NAdam, {"lr": 1e-2, "betas": (0.8, 0.99), "momentum_decay": 4e-3}, "nadam"),
    (torch.optim.RMSprop, {"lr": 3e-3, "alpha": 0.95, "eps": 1e-6}, "rmsprop"),
    (rodflow.FlowAdam, {"lr": 1e-2, "betas": (0.8, 0.99), "warmup": 10**6}, "adam"),
    (rodflow.VRAdam, {"lr": 1e-2, "betas": (0.8, 0.99), "beta3": 5.0, "alpha1": 3.0}, "vradam"),
]


def _setup(seed=0, dropout=0.0):
    torch.manual_seed(seed)
    x = torch.randn(64, 5, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    layers = [nn.Linear(5, 12), nn.Tanh()] + ([nn.Dropout(dropout)] if dropout else []) + [nn.Linear(12, 1)]
    model = nn.Sequential(*layers).double()
    shapes = dict(model.named_parameters())

    def loss_fn(theta):
        params = rodflow.unflatten(theta, shapes)
        return ((torch.func.functional_call(model, params, (x,)) - y) ** 2).mean()

    return model, x, y, loss_fn


def _train(model, opt, x, y, steps, rec):
    for _ in range(steps):
        def closure():
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            return loss

        loss = opt.step(closure) if isinstance(opt, rodflow.FlowAdam) else (closure(), opt.step())[0]
        rec.step(loss)


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(("cls", "kwargs", "name"), MAPPED, ids=[f"{c.__name__}-{n}-{i}" for i, (c, _, n) in
                                                                 enumerate(MAPPED)])
def test_replaying_the_spec_from_a_recorded_state_gives_the_next_state(tmp_path, cls, kwargs, name):
    model, x, y, loss_fn = _setup()
    opt = cls(model.parameters(), **kwargs)
    with rodflow.Recorder(tmp_path / "run.h5", model, opt, flush_every=7, loss_fn=loss_fn, seed=0) as rec:
        _train(model, opt, x, y, 25, rec)
    traj = rodflow.Trajectory.load(tmp_path / "run.h5")
    assert traj.t.tolist() == list(range(26)) and traj.complete
    cfg = traj.config
    assert cfg["optimizer"] == name and cfg["seed"] == 0 and cfg["torch_optimizer"]["class"].endswith(cls.__name__)
    assert [p["shape"] for p in cfg["parameters"]] == [[12, 5], [12], [1, 12], [1]]
    spec = spec_from_config(cfg)  # the file alone gives the spec
    assert spec == spec_of(opt)
    torch.testing.assert_close(traj.theta[-1], rodflow.flatten(model.parameters()), rtol=0, atol=0)
    grad = rodflow.gradient(loss_fn)
    for k in range(25):
        state, nxt = traj.state(k), traj.state(k + 1)
        ours = spec.step(state, grad)
        assert _rel(ours.theta - state.theta, nxt.theta - state.theta) <= 1e-10, k
        if ours.m is not None:
            assert _rel(ours.m, nxt.m) <= 1e-12
        if ours.v is not None:
            assert _rel(ours.v, nxt.v) <= 1e-12
        assert (ours.m is None) == (traj.m is None) and (ours.v is None) == (traj.v is None)
        assert float(traj.loss[k]) == pytest.approx(float(loss_fn(state.theta)), rel=1e-13)
        assert float(traj.grad_norm[k]) == pytest.approx(float(torch.linalg.vector_norm(grad(state.theta))),
                                                         rel=1e-12)


def test_a_wrong_spec_would_not_replay(tmp_path, float64_default):
    """Sanity of the tolerance: NAdam's record is not replayed by Adam's spec."""
    model, x, y, loss_fn = _setup()
    opt = torch.optim.NAdam(model.parameters(), lr=1e-2, betas=(0.8, 0.99))
    with rodflow.Recorder(tmp_path / "run.h5", model, opt) as rec:
        _train(model, opt, x, y, 5, rec)
    traj = rodflow.Trajectory.load(tmp_path / "run.h5")
    wrong = rodflow.optimizer("adam", lr=1e-2, betas=(0.8, 0.99))
    s = traj.state(3)
    assert _rel(wrong.step(s, rodflow.gradient(loss_fn)).theta - s.theta, traj.theta[4] - s.theta) > 1e-3


def test_an_unmapped_optimizer_is_recorded_without_moments_and_named(tmp_path):
    model, x, y, _ = _setup()
    for opt, why in ((torch.optim.Adagrad(model.parameters(), lr=0.1), "Adagrad is not mapped"),
                     (torch.optim.AdamW(model.parameters(), lr=1e-2), "decoupled decay")):
        with pytest.warns(UserWarning, match=why):
            rec = rodflow.Recorder(tmp_path / "run.h5", model, opt)
        with rec:
            _train(model, opt, x, y, 4, rec)
        traj = rodflow.Trajectory.load(tmp_path / "run.h5")
        assert traj.m is None and traj.v is None and traj.config["optimizer"] is None
        assert traj.t.tolist() == [0, 1, 2, 3]  # the last state has no loss without loss_fn
        assert traj.config["torch_optimizer"]["param_groups"][0]["lr"] == opt.param_groups[0]["lr"]


def test_the_model_stays_in_training_mode(tmp_path):
    model, x, y, loss_fn = _setup(dropout=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with rodflow.Recorder(tmp_path / "run.h5", model, opt, sharpness_every=2, loss_fn=loss_fn,
                          sharpness_kwargs={"tol": 1e-3}) as rec:
        _train(model, opt, x, y, 3, rec)
        assert all(m.training for m in model.modules())
    assert all(m.training for m in model.modules())


def test_every_sharpness_and_metadata(tmp_path):
    model, x, y, loss_fn = _setup()
    model.add_module("drop", nn.Dropout(0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with rodflow.Recorder(tmp_path / "run.h5", model, opt, every=3, sharpness_every=6, loss_fn=loss_fn,
                          metadata={"task": "toy", "batch": 64}) as rec:
        _train(model, opt, x, y, 13, rec)
    traj = rodflow.Trajectory.load(tmp_path / "run.h5")
    assert traj.t.tolist() == [0, 3, 6, 9, 12]
    assert traj.sharpness["step"].tolist() == [0, 6, 12] and traj.sharpness["preconditioned_step"].tolist() == [6, 12]
    lam = rodflow.sharpness(loss_fn, traj.theta[2]).eigenvalues[0]
    assert float(traj.sharpness["sharpness"][1]) == pytest.approx(float(lam), rel=1e-6)
    assert traj.config["metadata"] == {"task": "toy", "batch": 64} and traj.config["record_every"] == 3
    assert "Dropout" in traj.config["model"] and traj.config["versions"]["torch"] == torch.__version__


def test_a_running_recording_can_be_read_and_an_exception_marks_it_incomplete(tmp_path):
    model, x, y, _ = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with pytest.raises(RuntimeError, match="stop"), rodflow.Recorder(tmp_path / "r.h5", model, opt, flush_every=4,
                                                                        background=False) as rec:
        _train(model, opt, x, y, 9, rec)
        live = rodflow.Trajectory.load(tmp_path / "r.h5")
        assert live.t.tolist() == list(range(8)) and not live.complete  # 9 rows finished, 8 committed
        raise RuntimeError("stop")
    done = rodflow.Trajectory.load(tmp_path / "r.h5")
    assert done.t.tolist() == list(range(9)) and not done.complete


def test_the_background_writer_writes_what_the_foreground_writes(tmp_path):
    trajs = []
    for background in (True, False):
        model, x, y, loss_fn = _setup()
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        with rodflow.Recorder(tmp_path / f"{background}.h5", model, opt, flush_every=3, background=background,
                              loss_fn=loss_fn) as rec:
            _train(model, opt, x, y, 12, rec)
        trajs.append(rodflow.Trajectory.load(tmp_path / f"{background}.h5"))
    a, b = trajs
    for name in ("theta", "m", "v", "t", "loss", "grad_norm"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert len(a) == 13


_KILLED_LOOP = textwrap.dedent("""
    import sys, torch, rodflow
    torch.set_num_threads(1)
    torch.manual_seed(0)  # as _setup() below
    x = torch.randn(64, 5, dtype=torch.float64)
    y = torch.sin(x.sum(1, keepdim=True))
    model = torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.Tanh(), torch.nn.Linear(12, 1)).double()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with rodflow.Recorder(sys.argv[1], model, opt, flush_every=5) as rec:
        while True:
            opt.zero_grad()
            loss = ((model(x) - y) ** 2).mean()
            loss.backward()
            opt.step()
            rec.step(loss)
""")


def test_a_recording_killed_with_sigkill_keeps_its_committed_rows(tmp_path):
    path = tmp_path / "killed.h5"
    seen, _ = sigkill_after_rows(_KILLED_LOOP, path, 30)
    back = rodflow.Trajectory.load(path)
    assert len(back) >= seen and len(back) % 5 == 0 and not back.complete
    assert back.t.tolist() == list(range(len(back)))
    spec = rodflow.optimizer("adam", lr=1e-2)
    *_, loss_fn = _setup()  # the same seed and data as the killed loop: replay its rows
    for k in range(len(back) - 1):
        s = back.state(k)
        nxt = spec.step(s, rodflow.gradient(loss_fn))
        assert _rel(nxt.theta - s.theta, back.theta[k + 1] - s.theta) <= 1e-8


def test_disabled_costs_nothing():
    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"touched {name}")

    for rec in (rodflow.Recorder(None, Untouchable(), Untouchable()),  # type: ignore[arg-type]
                rodflow.Recorder("never.h5", Untouchable(), Untouchable(), enabled=False)):  # type: ignore[arg-type]
        with rec:
            for _ in range(3):
                rec.step(1.0)
        assert not rec.enabled


def test_bad_arguments(tmp_path):
    model, *_ = _setup()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(TypeError, match="model"):
        rodflow.Recorder(tmp_path / "a.h5", "net", opt)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="optimizer"):
        rodflow.Recorder(tmp_path / "a.h5", model, "sgd")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="every"):
        rodflow.Recorder(tmp_path / "a.h5", model, opt, every=0)
    with pytest.raises(TypeError, match="sharpness_every"):
        rodflow.Recorder(tmp_path / "a.h5", model, opt, sharpness_every=True)
    with pytest.raises(ValueError, match="loss_fn"):
        rodflow.Recorder(tmp_path / "a.h5", model, opt, sharpness_every=5)
    with pytest.raises(TypeError, match="metadata"):
        rodflow.Recorder(tmp_path / "a.h5", model, opt, metadata={"w": torch.ones(2)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        rodflow.Recorder(tmp_path / "a.h5", model, opt).close()
