"""Bad input is refused with an error that names what is wrong (property-tested with hypothesis)."""

from __future__ import annotations

import dataclasses
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


# (name, keyword arguments putting β in one slot, the argument an error must name)
BETA_SLOTS = [("heavy_ball", lambda b: {"momentum": b}, "momentum"),
              ("nesterov", lambda b: {"momentum": b}, "momentum"),
              ("rmsprop", lambda b: {"alpha": b}, "alpha"),
              ("scalar_rmsprop", lambda b: {"alpha": b}, "alpha"),
              ("adam", lambda b: {"betas": (b, 0.999)}, r"betas\[0\]"),
              ("nadam", lambda b: {"betas": (0.9, b)}, r"betas\[1\]"),
              ("scalar_adam", lambda b: {"betas": (b, 0.9)}, r"betas\[0\]"),
              ("scalar_nadam", lambda b: {"betas": (0.5, b)}, r"betas\[1\]"),
              ("vradam", lambda b: {"betas": (b, 0.9)}, r"betas\[0\]")]


@settings(max_examples=60, deadline=None)
@given(beta=st.one_of(finite, st.sampled_from([0.0, 1.0, -0.0, 1.0 - 2**-53, math.inf, -math.inf, math.nan])))
def test_betas_must_lie_in_unit_interval(beta):
    for name, kw, arg in BETA_SLOTS:
        if 0.0 <= beta < 1.0:
            spec = rodflow.optimizer(name, **kw(beta))
            assert beta in (spec.beta, spec.beta2)
        else:
            with pytest.raises(ValueError, match=arg):
                rodflow.optimizer(name, **kw(beta))


@settings(max_examples=40, deadline=None)
@given(psi=st.one_of(finite, st.just(math.inf), st.just(math.nan)))
def test_momentum_decay_must_be_non_negative_and_finite(psi):
    for name in ("nadam", "scalar_nadam"):
        if 0.0 <= psi < math.inf:
            assert rodflow.optimizer(name, momentum_decay=psi).momentum_decay == psi
        else:
            with pytest.raises(ValueError, match="momentum_decay"):
                rodflow.optimizer(name, momentum_decay=psi)


@settings(max_examples=40, deadline=None)
@given(eps=finite)
def test_eps_must_be_positive(eps):
    for name in ("rmsprop", "adam", "scalar_nadam"):
        if eps > 0:
            rodflow.optimizer(name, eps=eps)
        else:
            with pytest.raises(ValueError, match="eps"):
                rodflow.optimizer(name, eps=eps)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "0.1", None, True, torch.tensor(0.1), 1j])
def test_non_numbers_are_refused(bad):
    with pytest.raises((TypeError, ValueError), match="lr"):
        rodflow.optimizer("gd", lr=bad)


@pytest.mark.parametrize(("name", "kw", "arg"), [
    ("adam", {"eps": "1e-8"}, "eps"),
    ("adam", {"betas": (0.9, "0.999")}, r"betas\[1\]"),
    ("heavy_ball", {"momentum": None}, "momentum"),
    ("rmsprop", {"bias_correction": 1}, "bias_correction"),
    ("scalar_rmsprop", {"alpha": [0.9]}, "alpha"),
    ("nadam", {"momentum_decay": "4e-3"}, "momentum_decay"),
])
def test_wrong_types_name_the_argument(name, kw, arg):
    with pytest.raises(TypeError, match=arg):
        rodflow.optimizer(name, **kw)


def test_specs_are_frozen_and_store_floats():
    spec = rodflow.optimizer("adam", lr=1, betas=[0, 0.5])
    assert spec.lr == 1.0 and isinstance(spec.lr, float) and spec.betas == (0.0, 0.5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.lr = 0.1  # type: ignore[misc]


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
    with pytest.raises(ValueError, match="shape"):
        spec.step(state, lambda th: torch.ones(3, 1, dtype=torch.float64))


@pytest.mark.parametrize("name", ["gd", "heavy_ball", "nesterov"])
def test_a_step_that_overflows_theta_raises(name):
    """A finite gradient times a huge step size overflows θ: an error, not a silent −inf run."""
    spec = rodflow.optimizer(name, lr=1e10)
    with pytest.raises(rodflow.NonFiniteError, match="theta"):
        spec.step(spec.init(torch.ones(2, dtype=torch.float64)), lambda th: torch.full_like(th, 1e300))


def test_init_checks_theta():
    spec = rodflow.optimizer("adam")
    with pytest.raises(ValueError, match="flat"):
        spec.init(torch.ones(2, 2))
    with pytest.raises(TypeError, match="floating"):
        spec.init(torch.ones(3, dtype=torch.int64))
    with pytest.raises(TypeError, match="tensor"):
        spec.init([1.0, 2.0])  # type: ignore[arg-type]
