"""The torch.optim ↔ OptimizerSpec/PhaseState map: which configurations map, why the others do not, round trips."""

from __future__ import annotations

import pytest
import torch

import rodflow
from rodflow.adapters import NotMapped, load_phase_state, phase_state, spec_from_config, spec_of


def _p(n=4):
    return torch.nn.Parameter(torch.linspace(-1, 1, n, dtype=torch.float64))


MAPS = [
    (torch.optim.SGD, {"lr": 0.3}, rodflow.optimizer("gd", lr=0.3)),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.85}, rodflow.optimizer("heavy_ball", lr=0.1, momentum=0.85)),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.85, "nesterov": True},
     rodflow.optimizer("nesterov", lr=0.1, momentum=0.85)),
    (torch.optim.Adam, {"lr": 3e-3, "betas": (0.8, 0.99), "eps": 1e-7},
     rodflow.optimizer("adam", lr=3e-3, betas=(0.8, 0.99), eps=1e-7)),
    (torch.optim.AdamW, {"lr": 3e-3, "weight_decay": 0}, rodflow.optimizer("adam", lr=3e-3)),
    (torch.optim.NAdam, {"lr": 1e-3, "momentum_decay": 0.02}, rodflow.optimizer("nadam", lr=1e-3, momentum_decay=0.02)),
    (torch.optim.RMSprop, {"lr": 3e-3, "alpha": 0.95}, rodflow.optimizer("rmsprop", lr=3e-3, alpha=0.95)),
    (rodflow.FlowAdam, {"lr": 3e-3}, rodflow.optimizer("adam", lr=3e-3)),
    (rodflow.VRAdam, {"lr": 3e-3, "beta3": 2.0, "alpha1": 4.0, "power": 3.0},
     rodflow.optimizer("vradam", lr=3e-3, beta3=2.0, alpha1=4.0, power=3.0)),
]


@pytest.mark.parametrize(("cls", "kwargs", "spec"), MAPS, ids=[f"{c.__name__}-{s.name}" for c, _, s in MAPS])
def test_each_mapped_optimizer_gives_its_spec(cls, kwargs, spec):
    assert spec_of(cls([_p()], **kwargs)) == spec
    assert spec_from_config({"optimizer": spec.name, "hyperparameters": spec.hyperparameters()}) == spec


NOT_MAPPED = [
    (torch.optim.AdamW, {"lr": 1e-3}, "decoupled decay"),
    (torch.optim.Adam, {"lr": 1e-3, "weight_decay": 0.1}, "weight_decay"),
    (torch.optim.Adam, {"lr": 1e-3, "amsgrad": True}, "amsgrad"),
    (torch.optim.Adam, {"lr": 1e-3, "maximize": True}, "maximize"),
    (torch.optim.SGD, {"lr": 0.1, "momentum": 0.9, "dampening": 0.5}, "dampening"),
    (torch.optim.RMSprop, {"lr": 0.1, "centered": True}, "centered"),
    (torch.optim.RMSprop, {"lr": 0.1, "momentum": 0.5}, "momentum"),
    (rodflow.VRAdam, {"lr": 0.1, "norm_on": "grad"}, "norm_on"),
    (torch.optim.Adagrad, {"lr": 0.1}, "torch.optim.adagrad.Adagrad is not mapped"),
]


@pytest.mark.parametrize(("cls", "kwargs", "why"), NOT_MAPPED, ids=[f"{c.__name__}-{w}" for c, _, w in NOT_MAPPED])
def test_unmapped_configurations_say_why(cls, kwargs, why):
    with pytest.raises(NotMapped, match=why):
        spec_of(cls([_p()], **kwargs))


def test_groups_with_different_hyperparameters_are_not_mapped():
    opt = torch.optim.Adam([{"params": [_p()], "lr": 1e-3}, {"params": [_p()], "lr": 1e-2}])
    with pytest.raises(NotMapped, match="groups"):
        spec_of(opt)
    with pytest.raises(TypeError, match="optimizer"):
        spec_of("adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no optimizer spec"):
        spec_from_config({"optimizer": None})


@pytest.mark.parametrize("name", ["gd", "heavy_ball", "nesterov", "adam", "nadam", "rmsprop"])
def test_phase_state_round_trip_through_a_live_optimizer(name):
    """Our state → torch's state → our state is exact, and torch's step from it is the spec's step."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        cls, kwargs, spec = next((c, k, s) for c, k, s in MAPS if s.name == name)
        a, b = _p(3), _p(2)
        opt = cls([a, b], **kwargs)
        loss_fn = lambda th: (th**4).sum() + th[0] * th[3]  # noqa: E731
        state = rodflow.iterate(spec, loss_fn, torch.tensor([0.3, -0.7, 1.1, 0.4, -0.2]), 6).state(6)
        load_phase_state(opt, state)
        back = phase_state(opt)
        assert back.t == (6 if name not in ("gd", "heavy_ball", "nesterov") else 0)  # SGD keeps no step count
        for k in ("theta", "m", "v"):
            x, y = getattr(state, k), getattr(back, k)
            assert (x is None) == (y is None) and (x is None or torch.equal(x, y)), k
        opt.zero_grad()
        loss_fn(torch.cat([a.reshape(-1), b.reshape(-1)])).backward()
        opt.step()
        ours = spec.step(state, rodflow.gradient(loss_fn))
        torch.testing.assert_close(phase_state(opt).theta, ours.theta, rtol=1e-14, atol=1e-15)
    finally:
        torch.set_default_dtype(old)


def test_a_state_of_the_wrong_size_is_refused():
    opt = torch.optim.SGD([_p()], lr=0.1)
    with pytest.raises(ValueError, match="theta has 3 entries"):
        load_phase_state(opt, rodflow.PhaseState(theta=torch.zeros(3, dtype=torch.float64)))
