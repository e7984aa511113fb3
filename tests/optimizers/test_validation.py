"""Bad input is refused with an error that names what is wrong (property-tested with hypothesis)."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rodflow

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


def test_unknown_name():
    with pytest.raises(ValueError, match="unknown optimizer 'adamw'"):
        rodflow.optimizer("adamw")
    with pytest.raises(TypeError, match="name"):
        rodflow.optimizer(3)  # type: ignore[arg-type]


def test_unknown_or_fixed_hyperparameter():
    with pytest.raises(TypeError, match="momentum"):
        rodflow.optimizer("adam", momentum=0.9)
    with pytest.raises(TypeError, match="nesterov"):
        rodflow.optimizer("heavy_ball", nesterov=True)


@settings(max_examples=60, deadline=None)
@given(lr=finite)
def test_lr_must_be_positive(lr):
    for name in rodflow.OPTIMIZERS:
        if lr > 0:
            assert rodflow.optimizer(name, lr=lr).lr == lr
        else:
            with pytest.raises(ValueError, match="lr"):
                rodflow.optimizer(name, lr=lr)


@settings(max_examples=60, deadline=None)
@given(beta=finite)
def test_betas_must_lie_in_unit_interval(beta):
    ok = 0.0 <= beta < 1.0
    for name, kw in (("heavy_ball", {"momentum": beta}), ("nesterov", {"momentum": beta}),
                     ("rmsprop", {"alpha": beta}), ("scalar_rmsprop", {"alpha": beta}),
                     ("adam", {"betas": (beta, 0.999)}), ("nadam", {"betas": (0.9, beta)}),
                     ("scalar_adam", {"betas": (beta, 0.9)})):
        if ok:
            rodflow.optimizer(name, **kw)
        else:
            with pytest.raises(ValueError, match=r"momentum|alpha|betas\[[01]\]"):
                rodflow.optimizer(name, **kw)


@settings(max_examples=40, deadline=None)
@given(eps=finite)
def test_eps_must_be_positive(eps):
    for name in ("rmsprop", "adam", "scalar_nadam"):
        if eps > 0:
            rodflow.optimizer(name, eps=eps)
        else:
            with pytest.raises(ValueError, match="eps"):
                rodflow.optimizer(name, eps=eps)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.1", None, True])
def test_non_numbers_are_refused(bad):
    with pytest.raises((TypeError, ValueError), match="lr"):
        rodflow.optimizer("gd", lr=bad)


def test_betas_shape_and_momentum_decay():
    with pytest.raises(ValueError, match="betas"):
        rodflow.optimizer("adam", betas=(0.9,))
    with pytest.raises(ValueError, match="momentum_decay"):
        rodflow.optimizer("nadam", momentum_decay=-1.0)


@pytest.mark.parametrize("name", rodflow.OPTIMIZERS)
def test_grad_fn_errors(name):
    spec = rodflow.optimizer(name, lr=0.1)
    state = spec.init(torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="shape"):
        spec.step(state, lambda th: torch.ones(4, dtype=torch.float64))
    with pytest.raises(rodflow.NonFiniteError, match="non-finite"):
        spec.step(state, lambda th: torch.tensor([1.0, math.nan, 0.0], dtype=torch.float64))
    with pytest.raises(rodflow.NonFiniteError):
        spec.step(state, lambda th: torch.tensor([1.0, math.inf, 0.0], dtype=torch.float64))
    with pytest.raises(TypeError, match="tensor"):
        spec.step(state, lambda th: [1.0, 2.0, 3.0])


def test_init_checks_theta():
    spec = rodflow.optimizer("adam")
    with pytest.raises(ValueError, match="flat"):
        spec.init(torch.ones(2, 2))
    with pytest.raises(TypeError, match="floating"):
        spec.init(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="tensor"):
        spec.init([1.0, 2.0])  # type: ignore[arg-type]
