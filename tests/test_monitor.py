"""EoSMonitor against references: rodflow.sharpness on the flattened problem, P from torch's own state,
and the recorded crossing of a full-batch GD run."""

from __future__ import annotations

import csv
import math

import pytest
import torch
import torch.nn.functional as F

import rodflow
from rodflow.monitor import EoSMonitor

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64


def _setup(seed=0, n=96):
    x, y = rodflow.problems.digits(n=n, seed=seed)
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(64, 16), torch.nn.Tanh(), torch.nn.Linear(16, 10)).to(F64)
    return net, x, rodflow.problems.one_hot(y, 10)


def _mse(out, target):
    return 0.5 * (out - target).square().sum(dim=1).mean()


def _train(net, opt, x, y, steps, monitor=None):
    for _ in range(steps):
        opt.zero_grad()
        _mse(net(x), y).backward()
        opt.step()
        if monitor is not None:
            monitor.step()


def test_sharpness_equals_rodflow_sharpness_on_the_flat_problem_and_nothing_is_touched():
    net, x, y = _setup()
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    _train(net, opt, x, y, 3)
    before = [p.detach().clone() for p in net.parameters()]
    mon = EoSMonitor(net, opt, probe=(x, y), criterion=_mse, every=1, sharpness_kwargs={"method": "dense"})
    row = mon.measure()
    prob = rodflow.problems.module_problem(net, x, y)
    ref = rodflow.sharpness(prob.loss_fn, prob.theta0, method="dense").top
    assert row["sharpness"] == pytest.approx(ref, rel=1e-10)
    assert row["preconditioned_sharpness"] == pytest.approx(0.1 * ref, rel=1e-10)  # P = 1/η for SGD
    assert net.training and all(torch.equal(a, b) for a, b in zip(before, net.parameters()))


def _torch_adam_p(opt, params):
    """P = (1 − β1ᵗ)(√(v/(1 − β2ᵗ)) + ε)/η, read from torch's own Adam state."""
    g = opt.param_groups[0]
    b1, b2 = g["betas"]
    out = []
    for p in params:
        st = opt.state[p]
        t = float(st["step"])
        out.append(((1 - b1**t) * ((st["exp_avg_sq"] / (1 - b2**t)).sqrt() + g["eps"]) / g["lr"]).reshape(-1))
    return torch.cat(out)


def _torch_rmsprop_p(opt, params):
    g = opt.param_groups[0]
    return torch.cat([((opt.state[p]["square_avg"]).sqrt() + g["eps"]).reshape(-1) / g["lr"] for p in params])


@pytest.mark.parametrize(("make", "reference", "threshold"), [
    (lambda p: torch.optim.Adam(p, lr=1e-2, betas=(0.9, 0.99)), _torch_adam_p, 38.0),
    (lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=0.0), _torch_adam_p, 38.0),
    (lambda p: torch.optim.RMSprop(p, lr=1e-3, alpha=0.9), _torch_rmsprop_p, 2.0),
    (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9), lambda opt, ps: torch.full((sum(q.numel() for q in ps),),
                                                                                      1 / 0.05, dtype=F64), 3.8),
    (lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True),
     lambda opt, ps: torch.full((sum(q.numel() for q in ps),), 1 / 0.05, dtype=F64), 3.8 / 2.8),
])
def test_preconditioner_and_threshold_come_from_the_live_optimizer(make, reference, threshold):
    net, x, y = _setup()
    params = list(net.parameters())
    opt = make(params)
    _train(net, opt, x, y, 5)
    mon = EoSMonitor(net, opt, probe=(x, y), criterion=_mse, sharpness_kwargs={"method": "dense"})
    p, thr = mon._preconditioner()
    assert thr == pytest.approx(threshold, rel=1e-12)
    torch.testing.assert_close(p, reference(opt, params), rtol=1e-12, atol=0)
    row = mon.measure()
    prob = rodflow.problems.module_problem(net, x, y)
    ref = rodflow.sharpness(prob.loss_fn, prob.theta0, preconditioner=reference(opt, params), method="dense").top
    assert row["preconditioned_sharpness"] == pytest.approx(ref, rel=1e-9)


def test_gd_entering_is_reported_within_one_probe_interval_of_the_crossing(tmp_path):
    """Full-batch GD at a rate that reaches 2/η: the recorded crossing (sharpness at every step, by
    rodflow.iterate on the same problem) against the monitor's first "entering" event."""
    net, x, y = _setup(n=128)
    lr, steps, every = 1.0, 150, 5
    prob = rodflow.problems.module_problem(net, x, y)
    spec = rodflow.optimizer("gd", lr=lr)
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, steps, sharpness_every=1)
    ratio = traj.sharpness["sharpness"] * lr / 2.0
    crossing = int(traj.sharpness["step"][int((ratio >= 0.95).nonzero()[0, 0])])
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    mon = EoSMonitor(net, opt, probe=(x, y), criterion=_mse, every=every, csv=tmp_path / "eos.csv",
                     hysteresis=0.05)
    _train(net, opt, x, y, steps, monitor=mon)
    entering = [s for s, kind, _ in mon.events if kind == "entering"]
    assert entering, mon.history
    assert crossing <= entering[0] < crossing + every + 1
    rows = list(csv.DictReader(open(tmp_path / "eos.csv")))
    assert len(rows) == steps // every and math.isclose(float(rows[-1]["threshold"]), 2.0)
    fig = rodflow.plot.sharpness_curve(mon, threshold=2.0, preconditioned=True)
    assert fig.axes


def test_tensorboard_style_writer_and_bad_arguments():
    class Writer:
        def __init__(self):
            self.tags = []

        def add_scalar(self, tag, value, step):
            self.tags.append(tag)

    net, x, y = _setup()
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    w = Writer()
    mon = EoSMonitor(net, opt, probe=(x, y), criterion=_mse, every=2, writer=w)
    _train(net, opt, x, y, 4, monitor=mon)
    assert set(w.tags) == {"eos/sharpness", "eos/preconditioned_sharpness", "eos/threshold"}
    for kw, name in [({"every": 0}, "every"), ({"k": True}, "k"), ({"hysteresis": 0.7}, "hysteresis"),
                     ({"writer": object()}, "writer"), ({"probe": x}, "probe")]:
        args = {"probe": (x, y), "criterion": F.mse_loss, **kw}
        with pytest.raises((TypeError, ValueError), match=name):
            EoSMonitor(net, opt, **args)
