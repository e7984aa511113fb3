"""Each spec's iterates equal its torch.optim twin's, float64, 200 steps, ≤ 1e-8 relative.

One table of configurations drives the tests (non-default hyperparameters, so that a swapped
convention would show). The torch side optimizes one flat ``nn.Parameter`` with the same loss.
Two checks per row: the whole 200-step run against torch's run, and, step by step, torch's
one step from each of our states against our step (this one does not depend on how much the run
amplifies rounding, so it can be held to ~1e-12 of the update).
"""

from __future__ import annotations

import pytest
import torch

import rodflow
from rodflow.adapters import load_phase_state, phase_state

# (rodflow name, rodflow hyperparameters, torch class, torch keyword arguments)
TWINS = [
    ("gd", {"lr": 0.3}, torch.optim.SGD, {"lr": 0.3}),
    ("heavy_ball", {"lr": 0.1, "momentum": 0.85}, torch.optim.SGD, {"lr": 0.1, "momentum": 0.85}),
    ("nesterov", {"lr": 0.1, "momentum": 0.85}, torch.optim.SGD, {"lr": 0.1, "momentum": 0.85, "nesterov": True}),
    ("rmsprop", {"lr": 3e-3, "alpha": 0.95, "eps": 1e-6, "bias_correction": False}, torch.optim.RMSprop,
     {"lr": 3e-3, "alpha": 0.95, "eps": 1e-6}),
    ("adam", {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-7}, torch.optim.Adam,
     {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-7}),
    # NAdam with the μ-schedule at lr 3e-3 becomes sensitive after ~140 steps on this problem: our
    # own run started from θ0·(1 + 1e-15) drifts to 1e-4 relative by step 200 (measured), so no two
    # implementations can agree to 1e-8 there. The whole run is compared at lr 1e-3; the step-by-step
    # test below covers lr 3e-3 (the last row of STEPWISE).
    ("nadam", {"lr": 1e-3, "betas": (0.8, 0.99), "eps": 1e-7, "momentum_decay": 4e-3}, torch.optim.NAdam,
     {"lr": 1e-3, "betas": (0.8, 0.99), "eps": 1e-7, "momentum_decay": 4e-3}),
    ("nadam", {"lr": 1e-3, "betas": (0.8, 0.99), "momentum_decay": 0.02}, torch.optim.NAdam,
     {"lr": 1e-3, "betas": (0.8, 0.99), "momentum_decay": 0.02}),
    # the constant-β1 form is torch's NAdam in the limit momentum_decay → ∞
    ("nadam", {"lr": 3e-3, "betas": (0.8, 0.99), "momentum_decay": None}, torch.optim.NAdam,
     {"lr": 3e-3, "betas": (0.8, 0.99), "momentum_decay": 1e9}),
]
STEPWISE = [*TWINS, ("nadam", {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-7, "momentum_decay": 4e-3},
                     torch.optim.NAdam, {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-7, "momentum_decay": 4e-3})]


def _ids(table):
    return [f"{t[0]}-{t[2].__name__}-{i}" for i, t in enumerate(table)]


def _torch_iterates(cls, kwargs, loss_fn, theta0, steps):
    p = torch.nn.Parameter(theta0.clone())
    opt = cls([p], **kwargs)
    out = [p.detach().clone()]
    for _ in range(steps):
        opt.zero_grad()
        loss_fn(p).backward()
        opt.step()
        out.append(p.detach().clone())
    return torch.stack(out)


def _rel(a, b):
    return float(torch.linalg.vector_norm(a - b) / torch.linalg.vector_norm(b))


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(("name", "hp", "cls", "kwargs"), TWINS, ids=_ids(TWINS))
def test_iterates_equal_torch(name, hp, cls, kwargs, small_mlp):
    ref = _torch_iterates(cls, kwargs, small_mlp.loss_fn, small_mlp.theta0, 200)
    ours = rodflow.iterate(rodflow.optimizer(name, **hp), small_mlp.loss_fn, small_mlp.theta0, 200).theta
    assert ours.dtype == torch.float64
    rel = torch.linalg.vector_norm(ours - ref, dim=1) / torch.linalg.vector_norm(ref, dim=1)
    assert float(rel.max()) <= 1e-8, float(rel.max())
    moved = torch.linalg.vector_norm(ref[-1] - ref[0]) / torch.linalg.vector_norm(ref[0])
    assert float(moved) > 1e-3  # the run really went somewhere


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize(("name", "hp", "cls", "kwargs"), STEPWISE, ids=_ids(STEPWISE))
def test_each_step_equals_torch_from_the_same_state(name, hp, cls, kwargs, small_mlp):
    spec = rodflow.optimizer(name, **hp)
    traj = rodflow.iterate(spec, small_mlp.loss_fn, small_mlp.theta0, 200)
    grad = rodflow.gradient(small_mlp.loss_fn)
    p = torch.nn.Parameter(small_mlp.theta0.clone())
    opt = cls([p], **kwargs)
    worst = 0.0
    for k in range(0, 200, 5):
        state = traj.state(k)
        load_phase_state(opt, state)  # θ into p, the moments into torch's state (rodflow.adapters)
        p.grad = grad(state.theta)
        opt.step()
        ours = spec.step(state, grad)
        assert ours.t == k + 1
        update = torch.linalg.vector_norm(ours.theta - state.theta)
        worst = max(worst, float(torch.linalg.vector_norm(ours.theta - p.detach()) / update))
        after = phase_state(opt)
        if ours.m is not None:
            assert _rel(ours.m, after.m) <= 1e-14
        if ours.v is not None:
            assert _rel(ours.v, after.v) <= 1e-14
    assert worst <= 1e-12, worst


def test_a_wrong_convention_would_show(small_mlp):
    """Sanity of the tolerance: RMSProp with bias correction is *not* torch's RMSprop."""
    ref = _torch_iterates(torch.optim.RMSprop, {"lr": 3e-3, "alpha": 0.95}, small_mlp.loss_fn, small_mlp.theta0, 20)
    ours = rodflow.iterate(rodflow.optimizer("rmsprop", lr=3e-3, alpha=0.95, bias_correction=True),
                           small_mlp.loss_fn, small_mlp.theta0, 20).theta
    rel = torch.linalg.vector_norm(ours - ref, dim=1) / torch.linalg.vector_norm(ref, dim=1)
    assert float(rel.max()) > 1e-4


def test_nadam_momentum_decay_zero_is_not_the_constant_beta1_form(small_mlp):
    """ψ = 0 gives μ ≡ β1/2 (torch's formula), which is not the μ ≡ β1 form of ``momentum_decay=None``."""
    kw = {"lr": 3e-3, "betas": (0.8, 0.99)}
    zero = rodflow.iterate(rodflow.optimizer("nadam", momentum_decay=0.0, **kw), small_mlp.loss_fn,
                           small_mlp.theta0, 20).theta
    const = rodflow.iterate(rodflow.optimizer("nadam", momentum_decay=None, **kw), small_mlp.loss_fn,
                            small_mlp.theta0, 20).theta
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)  # see float64_default
    try:
        ref = _torch_iterates(torch.optim.NAdam, {**kw, "momentum_decay": 0.0}, small_mlp.loss_fn, small_mlp.theta0, 20)
    finally:
        torch.set_default_dtype(old)
    assert _rel(zero[-1], ref[-1]) <= 1e-12
    assert float(torch.linalg.vector_norm(zero[-1] - const[-1])) > 1e-4
