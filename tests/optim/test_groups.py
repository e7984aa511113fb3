"""Per-group hyperparameters, frozen groups, sparse gradients and Adam checkpoints in FlowAdam and VRAdam."""

from __future__ import annotations

import copy

import pytest
import torch

import rodflow
from tests.optim.conftest import closure_for, tiny_data, tiny_net

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIMIZERS = {"FlowAdam": lambda ps, **kw: rodflow.FlowAdam(ps, **kw, mode="B"), "VRAdam": lambda ps, **kw: rodflow.VRAdam(ps, **kw)}


@pytest.mark.parametrize("name", list(OPTIMIZERS))
@pytest.mark.parametrize(("key", "value", "shown"), [("lr", -5.0, "lr"), ("betas", (2.0, 0.5), r"betas'\]\[0\]"),
                                                     ("eps", -1.0, "eps"), ("weight_decay", -0.1, "weight_decay")])
def test_bad_group_values_are_refused_naming_the_group_and_key(name, key, value, shown):
    net = tiny_net(4, 6, 2)
    w, b = list(net[0].parameters()), list(net[2].parameters())
    with pytest.raises(ValueError, match=rf"param_groups\[1\]\['{shown}"):
        OPTIMIZERS[name]([{"params": w}, {"params": b, key: value}], lr=1e-3)
    opt = OPTIMIZERS[name]([{"params": w}], lr=1e-3)
    with pytest.raises(ValueError, match=rf"param_groups\[1\]\['{shown}"):
        opt.add_param_group({"params": b, key: value})


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_flowadam_group_at_lr_zero_is_bitwise_frozen_when_the_ode_runs(dtype):
    net = tiny_net(4, 6, 2, dtype)
    x, y = tiny_data(4, 2, 32, dtype)
    frozen = list(net[2].parameters())
    before = [p.detach().clone() for p in frozen]
    opt = rodflow.FlowAdam([{"params": net[0].parameters()}, {"params": frozen, "lr": 0.0}], lr=1e-2, warmup=1,
                           switch_sensitivity=10.0, mode="B")  # the plateau test always fires: every step after warmup is ODE
    for _ in range(6):
        opt.step(closure_for(net, opt, x, y))
    assert opt.ode_triggers >= 4
    assert all(torch.equal(a, b) for a, b in zip(before, frozen))
    torch.optim.lr_scheduler.LambdaLR(opt, lambda k: 0.0)  # sets every group's rate to 0
    now = [p.detach().clone() for p in net.parameters()]
    for _ in range(3):
        opt.step(closure_for(net, opt, x, y))
    assert all(torch.equal(a, b) for a, b in zip(now, net.parameters()))


def test_flowadam_loads_a_torch_adam_checkpoint():
    net = tiny_net(4, 6, 2)
    x, y = tiny_data(4, 2, 32)
    adam = torch.optim.Adam(net.parameters(), lr=1e-2)
    for _ in range(5):
        adam.zero_grad()
        (net(x) - y).square().mean().backward()
        adam.step()
    opt = rodflow.FlowAdam(net.parameters(), lr=1e-2, warmup=10**6, mode="B")  # Adam mode: continues torch's run
    opt.load_state_dict(copy.deepcopy(adam.state_dict()))  # load_state_dict may alias the tensors
    twin = tiny_net(4, 6, 2)
    twin.load_state_dict(net.state_dict())
    ref = torch.optim.Adam(twin.parameters(), lr=1e-2)
    ref.load_state_dict(copy.deepcopy(adam.state_dict()))
    for _ in range(3):
        opt.step(closure_for(net, opt, x, y))
        ref.zero_grad()
        (twin(x) - y).square().mean().backward()
        ref.step()
    for a, b in zip(net.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-13, atol=0)


@pytest.mark.parametrize("name", list(OPTIMIZERS))
def test_sparse_gradients_are_refused(name):
    emb = torch.nn.Embedding(10, 3, sparse=True).double()
    opt = OPTIMIZERS[name](emb.parameters(), lr=1e-2)

    def closure():
        opt.zero_grad()
        loss = emb(torch.tensor([1, 2])).sum()
        loss.backward()
        return loss

    with pytest.raises(RuntimeError, match="sparse"):
        opt.step(closure)


def test_vradam_one_nan_gradient_element_poisons_only_itself_as_adamw():
    net = tiny_net(4, 6, 2)
    opt = rodflow.VRAdam(net.parameters(), lr=1e-2, beta3=5.0)
    x, y = tiny_data(4, 2, 32)
    for _ in range(3):
        opt.zero_grad()
        (net(x) - y).square().mean().backward()
        opt.step()
    opt.zero_grad()
    (net(x) - y).square().mean().backward()
    net[0].weight.grad[0, 0] = float("nan")
    opt.step()
    weight = net[0].weight.detach()
    assert bool(torch.isnan(weight[0, 0])) and int(torch.isnan(weight).sum()) == 1
    assert all(bool(torch.isfinite(p).all()) for p in list(net.parameters())[1:])
    with pytest.raises(ValueError, match="complex"):
        rodflow.VRAdam([torch.nn.Parameter(torch.ones(2, dtype=torch.complex64))])


def test_flowadam_keeps_triggering_after_a_nan_closure():
    net = tiny_net(4, 6, 2)
    x, y = tiny_data(4, 2, 32)
    opt = rodflow.FlowAdam(net.parameters(), lr=1e-2, warmup=1, switch_sensitivity=10.0, mode="B")
    bad = {"now": False}

    def closure():
        opt.zero_grad()
        loss = (net(x) - y).square().mean()
        loss.backward()
        if bad["now"]:
            for p in net.parameters():
                p.grad.fill_(float("nan"))
        return loss

    for _ in range(3):
        opt.step(closure)
    with torch.no_grad():
        saved = [p.clone() for p in net.parameters()]
    bad["now"] = True
    opt.step(closure)
    assert bool(torch.isfinite(opt.grad_norm_ema)) and bool(torch.isfinite(opt.change_ema))
    bad["now"] = False
    with torch.no_grad():
        for p, s in zip(net.parameters(), saved):
            p.copy_(s)
    for st in opt.state.values():  # the NaN step poisoned the moments (as in Adam); start them again
        for key in ("exp_avg", "exp_avg_sq", "prev_grad"):  # (prev_grad may be a gradient held by reference)
            st[key] = torch.zeros_like(st[key])
    before = opt.ode_triggers
    for _ in range(3):
        opt.step(closure)
    assert opt.ode_triggers > before
