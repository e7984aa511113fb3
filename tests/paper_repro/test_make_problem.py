"""tracking.make_problem builds the fidelity sweep's problems; the CNN one is the ``cnn-fashion`` task's network."""

from __future__ import annotations

import pytest
import torch

import rodflow
from paper_repro.rodflow import fidelity
from paper_repro.rodflow.tracking import DEFAULT_N, EOS_LRS, make_problem
from rodflow.tasks import task


def test_fashion_problem_is_the_cnn_task_with_finite_loss_and_gradient(fake_fashion):
    prob = make_problem("fashion", 16, 32, 1)
    assert prob.dim == 5994 and prob.theta0.dtype == torch.float64 and prob.info["loss"] == "mse"
    theta = prob.theta0.clone().requires_grad_(True)
    loss = prob.loss_fn(theta)
    (grad,) = torch.autograd.grad(loss, theta)
    assert torch.isfinite(loss) and bool(torch.isfinite(grad).all()) and float(grad.norm()) > 0
    # the directional derivative against a central difference (float64)
    d = torch.randn(prob.dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h = 1e-5
    fd = (prob.loss_fn(prob.theta0 + h * d) - prob.loss_fn(prob.theta0 - h * d)) / (2 * h)
    assert float(grad @ d) == pytest.approx(float(fd), rel=1e-6)
    # same network, data and start as the task; cross-entropy on the same logits is the task's loss
    ref = task("cnn-fashion", n=16, seed=1)
    torch.testing.assert_close(prob.theta0, ref.theta0, rtol=0, atol=0)
    ce = make_problem("fashion", 16, 32, 1, loss="cross_entropy")
    torch.testing.assert_close(ce.loss_fn(prob.theta0), ref.loss_fn(prob.theta0), rtol=1e-14, atol=0)


def test_make_problem_rejects_unknown_data_and_loss():
    with pytest.raises(ValueError, match="data"):
        make_problem("cifar", 16, 8, 0)
    with pytest.raises(ValueError, match="loss"):
        make_problem("digits", 16, 8, 0, loss="hinge")


def test_fashion_eos_table_names_only_sweep_optimizers():
    table = rodflow.problems.hyperparameters("fashion", "eos")
    assert table and set(table) <= set(fidelity.OPTIMIZERS)
    assert EOS_LRS["fashion"] == table and DEFAULT_N["fashion"] <= 512
    for name, hp in table.items():
        assert rodflow.optimizer(name, **hp).lr == hp["lr"]
