"""Bad input across the public API: each row is (call, exception type, the argument its message names).

One table, in the style of torch.optim's and pytorch_optimizer's config tests: a user who passes
something wrong gets a ``TypeError``/``ValueError`` that names what to fix, never a silent NaN or
an error from deep inside another library.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rodflow

F64 = torch.float64


def _quad(th):
    return 0.5 * (th**2).sum()


def _theta(d=3):
    return torch.ones(d, dtype=F64)


def _gd_traj(steps=6):
    return rodflow.iterate(rodflow.optimizer("gd", lr=0.1), _quad, _theta(), steps)


def _solve(name="gd", traj=None, **kw):
    hp = {"lr": 0.1} if name == "gd" else {"lr": 0.01}
    return rodflow.stable_flow(rodflow.optimizer(name, **hp), _quad).solve(_gd_traj(20) if traj is None else traj,
                                                                           **kw)


def _compare(window):
    traj = _gd_traj(20)
    return rodflow.compare(traj, _solve(traj=traj, start=2), window=window)


def _nan_after(k):
    """A loss that returns NaN (with a finite gradient) once θ has moved below 0.5: NaN detached."""
    def loss(th):
        bad = torch.where(th[0] < 0.5, torch.tensor(float("nan"), dtype=F64), torch.tensor(0.0, dtype=F64))
        return _quad(th) + bad.detach()

    return loss


_GD = rodflow.optimizer("gd", lr=0.1)

CASES = [
    # iterate
    ("theta0 a list", lambda: rodflow.iterate(_GD, _quad, [1.0, 2.0], 3), TypeError, "theta0"),
    ("theta0 a numpy array", lambda: rodflow.iterate(_GD, _quad, np.ones(3), 3), TypeError, "theta0"),
    ("theta0 of the wrong length", lambda: rodflow.iterate(_GD, lambda th: th[4] + _quad(th), _theta(), 3),
     ValueError, "theta0"),
    ("steps a bool", lambda: rodflow.iterate(_GD, _quad, _theta(), True), TypeError, "steps"),
    ("sharpness_every a bool", lambda: rodflow.iterate(_GD, _quad, _theta(), 3, sharpness_every=True), TypeError,
     "sharpness_every"),
    ("a loss without theta", lambda: rodflow.iterate(_GD, lambda th: torch.tensor(1.0, dtype=F64), _theta(), 3),
     ValueError, "loss_fn"),
    ("a NaN loss with a finite gradient", lambda: rodflow.iterate(_GD, _nan_after(0), _theta(), 30),
     rodflow.NonFiniteError, "non-finite loss"),
    # optimizers
    ("adam momentum_decay", lambda: rodflow.optimizer("adam", momentum_decay=5.0), ValueError, "momentum_decay"),
    ("betas of length 3", lambda: rodflow.optimizer("adam", betas=np.array([0.9, 0.99, 0.5])), ValueError, "betas"),
    ("beta out of range", lambda: rodflow.optimizer("adam", betas=np.array([1.5, 0.99])), ValueError, r"betas\[0\]"),
    ("unknown optimizer", lambda: rodflow.optimizer("adamw"), ValueError, "name"),
    ("lr ≤ 0", lambda: rodflow.optimizer("gd", lr=0.0), ValueError, "lr"),
    ("int64 gradient", lambda: rodflow.optimizer("gd", lr=0.1).step(rodflow.optimizer("gd", lr=0.1).init(_theta()),
                                                                    lambda th: torch.ones(3, dtype=torch.int64)),
     TypeError, "grad_fn"),
    # sharpness
    ("power max_iter < 0", lambda: rodflow.sharpness(_quad, _theta(), method="power", max_iter=-1), ValueError,
     "max_iter"),
    ("max_iter = 0", lambda: rodflow.sharpness(_quad, _theta(), max_iter=0), ValueError, "max_iter"),
    ("NaN theta", lambda: rodflow.sharpness(_quad, torch.full((3,), float("nan"), dtype=F64)), ValueError, "theta"),
    ("k = 0", lambda: rodflow.sharpness(_quad, _theta(), k=0), ValueError, "k"),
    ("unknown method", lambda: rodflow.sharpness(_quad, _theta(), method="arnoldi"), ValueError, "method"),
    # integrate
    ("unknown ode method", lambda: rodflow.integrate(lambda t, y: -y, _theta(), torch.tensor([0.0, 1.0], dtype=F64),
                                                     method="rk45"), ValueError, "method"),
    ("max_num_steps = 0", lambda: rodflow.integrate(lambda t, y: -y, _theta(), torch.tensor([0.0, 1.0], dtype=F64),
                                                    options={"max_num_steps": 0}), ValueError, "max_num_steps"),
    # flows and compare
    ("solve(start=True)", lambda: _solve(start=True), TypeError, "start"),
    ("solve(None)", lambda: rodflow.stable_flow(rodflow.optimizer("gd", lr=0.1), _quad).solve(None), TypeError,
     "trajectory"),
    ("start after the run", lambda: _solve(start=50), ValueError, "start"),
    ("steps = 0", lambda: _solve(start=2, steps=0), ValueError, "steps"),
    ("a flow of another optimizer", lambda: _solve("adam", start=2), ValueError, "trajectory"),
    ("a flow of another rate", lambda: rodflow.stable_flow(rodflow.optimizer("gd", lr=0.2), _quad).solve(
        _gd_traj(20), start=2), ValueError, "lr"),
    ("adam flow without recorded m", lambda: rodflow.rod_flow(rodflow.optimizer("adam", lr=0.01), _quad).solve(
        _gd_traj(20), start=12, check_config=False), ValueError, "m"),
    ("window reversed", lambda: _compare((20, 5)), ValueError, "window"),
    ("window outside the run", lambda: _compare((100, 200)), ValueError, "window"),
    # plotting
    ("loss_curves of a string", lambda: rodflow.plot.loss_curves("run"), TypeError, "runs"),
    ("loss_curves of nothing", lambda: rodflow.plot.loss_curves([]), ValueError, "runs"),
]


@pytest.mark.parametrize(("call", "exc", "names"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_gets_a_named_error(call, exc, names):
    with pytest.raises(exc, match=names):
        call()


def test_good_input_of_other_types_is_accepted():
    """What an error must not refuse: numpy betas, numpy scalars and integers, lists of runs."""
    sol = _solve(start=np.int64(2), steps=torch.tensor(5))
    assert sol.t.tolist() == [2, 3, 4, 5, 6, 7]
    a = rodflow.optimizer("adam", betas=np.array([0.9, 0.99]), lr=np.float64(0.01))
    assert a.betas == (0.9, 0.99) and a.lr == 0.01
    nadam = rodflow.optimizer("nadam", momentum_decay=5.0)
    assert nadam.momentum_decay == 5.0
    fig = rodflow.plot.loss_curves([_gd_traj()])
    assert fig.axes[0].get_legend_handles_labels()[1] == ["gd 0"]
