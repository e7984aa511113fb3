"""fit_flow: recovering the hyperparameters of recorded runs, the discrepancy, errors and bad input.

The default tests use a 21-parameter tanh MLP written out here (cheap gradients); the
``slow`` ones repeat each claim on a digits MLP for a 150-step run.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

import rodflow
from rodflow.fit import FitResult, fit_flow, parameters_of
from rodflow.flows import rod_flow, stable_flow

FAST = {"window": (10, 50), "ode_options": {"step_size": 1.0}, "tol": 1e-8}


def tiny_mlp(seed: int = 0, n: int = 24, d_in: int = 4, hidden: int = 3, d_out: int = 2):
    """``θ ↦ mean‖tanh(xW₁ + b₁)W₂ − y‖²`` on random data with a tanh teacher (21 parameters)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(d_in, d_out, generator=g, dtype=torch.float64))
    a, b = d_in * hidden, d_in * hidden + hidden

    def loss(th: torch.Tensor) -> torch.Tensor:
        h = torch.tanh(x @ th[:a].view(d_in, hidden) + th[a:b])
        return ((h @ th[b:].view(hidden, d_out) - y) ** 2).mean()

    return loss, 0.5 * torch.randn(b + hidden * d_out, generator=g, dtype=torch.float64)


def noisy(loss_fn, scale: float, seed: int):
    """``loss_fn`` plus ``z·θ`` with a fresh ``z ~ N(0, scale²I)`` at every call: gradient noise
    (``rodflow.iterate`` evaluates the loss once per step)."""
    g = torch.Generator().manual_seed(seed)

    def f(th: torch.Tensor) -> torch.Tensor:
        return loss_fn(th) + (scale * torch.randn(th.shape, generator=g, dtype=th.dtype) * th).sum()

    return f


@pytest.fixture(scope="module")
def tiny():
    return tiny_mlp()


def record(name: str, loss_fn, theta0, steps: int, **hp):
    return rodflow.iterate(rodflow.optimizer(name, **hp), loss_fn, theta0, steps)


@pytest.fixture(scope="module")
def adam_tiny(tiny):
    loss, th0 = tiny
    return record("adam", loss, th0, 50, lr=1e-2)


@pytest.fixture(scope="module")
def adam_fit(tiny, adam_tiny):
    return fit_flow(adam_tiny, tiny[0], start={"lr": 2e-2}, **FAST)


@pytest.fixture(scope="module")
def adam_joint(tiny, adam_tiny):
    return fit_flow(adam_tiny, tiny[0], fit=("lr", "beta1"), start={"lr": 2e-2, "beta1": 0.8}, **FAST)


def rel(result: FitResult, name: str, truth: float) -> float:
    return abs(result.values[name] / truth - 1.0)


# ---------------------------------------------------------------------------- recovery
def test_adam_lr_recovered_from_twice_the_truth(adam_fit):
    res = adam_fit
    assert res.stats.success, res.summary()
    assert rel(res, "lr", 1e-2) < 0.01, res.summary()
    assert res.family == "stable" and res.discrepancy < 1e-4


def test_order_two_removes_the_first_order_flows_bias(tiny, adam_tiny, adam_fit):
    # the first-order flow is the map's Euler model: its best lr is off by O(lr·λ)
    one = fit_flow(adam_tiny, tiny[0], order=1, **FAST)
    two = adam_fit
    assert rel(two, "lr", 1e-2) < 0.25 * rel(one, "lr", 1e-2), (one.values, two.values)
    assert two.discrepancy < 0.1 * one.discrepancy


def test_adam_lr_and_beta1_jointly(adam_joint):
    res = adam_joint
    assert rel(res, "lr", 1e-2) < 0.01 and rel(res, "beta1", 0.9) < 0.01, res.summary()
    assert res.spec.betas == (res.values["beta1"], 0.999)


def test_a_start_ten_times_off_converges(tiny, adam_tiny):
    res = fit_flow(adam_tiny, tiny[0], start={"lr": 1e-1}, **FAST)
    assert rel(res, "lr", 1e-2) < 0.01, res.summary()


@pytest.mark.parametrize(("name", "hp", "fit"), [("rmsprop", {"lr": 3e-3}, ("lr",)),
                                                 ("heavy_ball", {"lr": 0.03, "momentum": 0.9}, ("lr",))])
def test_rmsprop_and_heavy_ball(tiny, name, hp, fit):
    loss, th0 = tiny
    tr = record(name, loss, th0, 50, **hp)
    start = {k: (2 * hp[k] if k == "lr" else 0.8) for k in fit}
    res = fit_flow(tr, loss, fit=fit, start=start, **FAST)
    for k in fit:
        assert rel(res, k, hp[k]) < 0.01, res.summary()


#: The map-exact variant: the first-order flow's Euler step of size 1 is the optimizer's step, so the
#: fit has no model bias (the order-2 flow's −0.1 % on Adam exceeds a small noise's standard error).
EXACT = {"order": 1, "ode_method": "euler", "ode_options": {"step_size": 1.0}, "tol": 1e-8}


def test_the_map_exact_variant_recovers_lr_to_roundoff(tiny, adam_tiny):
    res = fit_flow(adam_tiny, tiny[0], start={"lr": 2e-2}, window=(10, 50), **EXACT)
    assert rel(res, "lr", 1e-2) < 1e-7 and res.discrepancy < 1e-14, res.summary()


@pytest.mark.parametrize(("name", "hp"), [("adam", {"lr": 1e-2}), ("rmsprop", {"lr": 3e-3}),
                                          ("heavy_ball", {"lr": 0.03, "momentum": 0.9})])
def test_noisy_runs_recover_lr_within_two_stderr(tiny, name, hp):
    # gradient noise of 10⁻³ of the initial gradient norm, four seeds; with four segments the clustered
    # standard error has three degrees of freedom (t₃: 2σ covers 86 %), so three of four must be covered
    loss, th0 = tiny
    g0 = float(torch.linalg.vector_norm(rodflow.gradient(loss)(th0)))
    covered = []
    for seed in range(4):
        tr = record(name, noisy(loss, 1e-3 * g0 / math.sqrt(th0.numel()), seed=seed), th0, 50, **hp)
        res = fit_flow(tr, loss, start={"lr": 2 * hp["lr"]}, window=(10, 50), **EXACT)
        se = res.stderr["lr"]
        assert 0 < se < 0.01 * hp["lr"], res.summary()  # informative
        covered.append(abs(res.values["lr"] - hp["lr"]) < 2 * se)
    assert sum(covered) >= 3, covered


@pytest.mark.parametrize(("name", "hp"), [("adam", {"lr": 1e-2}), ("rmsprop", {"lr": 3e-3})])
def test_noisy_runs_with_the_default_flow_and_the_noise_fitted(tiny, name, hp):
    # gradient noise of 10⁻² of the initial gradient norm, the default order-2 flow, the noise variance
    # fitted with lr: the second moment of the run tracks E[g²] = (∇L)² + σ², so a flow without the
    # noise term takes larger preconditioned steps and an lr-only fit comes out low (measured on these
    # seeds: Adam −0.18 … −0.41 %, RMSProp −0.57 … −2.4 %, 2 of 4 covered each); the level was chosen on
    # seeds 4–7 (at 10⁻³ the flow's own model bias, −0.11 % / −0.19 % on a noiseless run, is as large
    # as the noise's standard error)
    loss, th0 = tiny
    g0 = float(torch.linalg.vector_norm(rodflow.gradient(loss)(th0)))
    scale = 1e-2 * g0 / math.sqrt(th0.numel())
    covered = []
    for seed in range(4):
        tr = record(name, noisy(loss, scale, seed=seed), th0, 50, **hp)
        res = fit_flow(tr, loss, fit=("lr", "noise"), start={"lr": 2 * hp["lr"]}, **FAST)
        assert res.config["order"] == 2 and set(res.values) == {"lr", "noise"}
        se = res.stderr["lr"]
        assert 0 < se < 0.02 * hp["lr"], res.summary()  # informative
        assert 0.05 < res.values["noise"] / scale**2 < 20, res.summary()  # the right order
        covered.append(abs(res.values["lr"] - hp["lr"]) < 2 * se)
    assert sum(covered) >= 3, covered


def quadratic_half_dead(d: int = 40):
    """``½ Σ_i λ_i θ_i²`` over the first half of the coordinates; the second half is dead (∇ = 0)."""
    lam = torch.linspace(0.5, 2.0, d // 2, dtype=torch.float64)

    def loss(th: torch.Tensor) -> torch.Tensor:
        return 0.5 * (lam * th[: d // 2] ** 2).sum()

    return loss, torch.linspace(-1.0, 1.0, d, dtype=torch.float64)


@pytest.mark.parametrize("name", ["adam", "rmsprop", "scalar_rmsprop"])
def test_noise_estimate_recovers_the_variance(name):
    # σ̂² from the record's v against sq(∇L(θ_k)): within four of its standard errors of the truth. Per
    # coordinate the dead half gives Σ z² over 20 × 50 cells (relative error √(2/1000) = 4.5 %); the
    # scalar variant has one cell per step, r = 2∇L·z + ‖z‖² (50 cells, Var r = 4‖∇L‖²σ² + 2dσ⁴)
    from rodflow.fit import noise_estimate

    loss, th0 = quadratic_half_dead()
    sigma2 = 0.01
    spec = rodflow.optimizer(name, lr=1e-2)
    tr = rodflow.iterate(spec, noisy(loss, math.sqrt(sigma2), seed=1), th0, 60)
    est = noise_estimate(tr, loss, spec, (10, 60))
    rel_se = math.sqrt(2 / 1000) if name != "scalar_rmsprop" else 0.13  # scalar: 12.7 % measured on seeds 1–20
    assert abs(est / sigma2 - 1) < 4 * rel_se, est
    clean = rodflow.iterate(spec, loss, th0, 60)
    assert noise_estimate(clean, loss, spec, (10, 60)) < 1e-9 * sigma2


def test_noise_fit_bad_input(tiny, adam_tiny):
    loss, th0 = tiny
    hb = record("heavy_ball", loss, th0, 20, lr=0.03, momentum=0.9)
    with pytest.raises(ValueError, match=r"fit: 'noise'.*second moment"):
        fit_flow(hb, loss, fit=("lr", "noise"))
    with pytest.raises(ValueError, match="noise must be positive"):
        fit_flow(adam_tiny, loss, fit=("lr", "noise"), start={"noise": -1.0})
    with pytest.raises(ValueError, match="flow_kwargs: 'noise' is fitted"):
        fit_flow(adam_tiny, loss, fit=("lr", "noise"), flow_kwargs={"noise": 1e-6})
    with pytest.raises(ValueError, match="noise"):
        fit_flow(adam_tiny, loss, flow_kwargs={"noise": -1e-6}, max_iter=1, **FAST)
    res = fit_flow(adam_tiny, loss, fit=("lr", "noise"), start={"lr": 1e-2, "noise": 1e-30}, max_iter=2, **FAST)
    # a noise variance whose effect on the iterates is below roundoff is not identified
    assert res.stderr["noise"] == math.inf and math.isfinite(res.stderr["lr"]) and res.stderr["lr"] > 0
    assert res.config["flow_args"] == {"noise": res.values["noise"]}
    assert res.segments[0].config["noise"] == res.values["noise"]


def test_auto_picks_the_rod_flow_at_the_edge_of_stability():
    # GD past 2/η on L = a·log cosh(x) + b y²/2 (quadratic minus quartic at x = 0): ηa = 2.5 > 2, the
    # iterates settle on the period-two orbit ±x* (2x* = ηa·tanh x*) while y drifts
    a, b, lr = 2.5, 0.5, 1.0

    def loss(th: torch.Tensor) -> torch.Tensor:
        return a * torch.log(torch.cosh(th[0])) + 0.5 * b * th[1] ** 2

    tr = record("gd", loss, torch.tensor([0.3, 2.0], dtype=torch.float64), 40, lr=lr)
    assert float((tr.theta[-1, 0] + tr.theta[-2, 0]).abs()) < 1e-3 < float(tr.theta[-1, 0].abs())
    res = fit_flow(tr, loss, family="auto", start={"lr": 0.9}, window=(20, 40), ode_options={"step_size": 1.0},
                   tol=1e-8)
    assert res.family == "rod"
    ref = rod_flow(res.spec, loss)  # the rod flow with its defaults: order 2, seven-point start
    flow = res.segments[0].flow
    assert isinstance(flow, type(ref)) and flow.order == ref.order == 2 and flow.init == ref.init
    assert set(res.candidates) == {"stable", "rod"}
    assert res.candidates["rod"] < 1e-3 * res.candidates["stable"], res.candidates
    assert rel(res, "lr", lr) < 0.01, res.summary()


# ---------------------------------------------------------------------------- the discrepancy
def test_discrepancy_is_the_documented_sum_over_segments(tiny, adam_tiny):
    loss = tiny[0]
    res = fit_flow(adam_tiny, loss, segment=15, max_iter=2, **FAST)
    # reference: solve each segment with the flow itself and sum
    spec = dataclasses.replace(adam_tiny_spec := rodflow.optimizer("adam", lr=1e-2), lr=res.values["lr"])
    assert adam_tiny_spec.lr == 1e-2
    flow = stable_flow(spec, loss, order=2)
    num = den = 0.0
    for s in (10, 25, 40):
        n = min(15, 50 - s)
        sol = flow.solve(adam_tiny, start=s, steps=n, method="rk4", options={"step_size": 1.0}, check_config=False)
        rec = adam_tiny.theta[s: s + n + 1]
        num += float(((sol.theta[1:] - rec[1:]) ** 2).sum())
        den += float(((rec[1:] - rec[0]) ** 2).sum())
    assert res.discrepancy == pytest.approx(num / den, rel=1e-9)
    assert float(res.curve.sum()) == pytest.approx(res.discrepancy, rel=1e-12)
    assert res.steps.tolist() == list(range(11, 51))
    assert [int(s.t[0]) for s in res.segments] == [10, 25, 40]


def test_stderr_is_the_delta_method_of_the_curvature(adam_joint):
    res = adam_joint
    cov = res.covariance
    assert cov is not None and cov.shape == (2, 2)
    assert np.allclose(cov, cov.T)
    for i, k in enumerate(("lr", "beta1")):
        assert res.stderr[k] == pytest.approx(math.sqrt(cov[i, i]))
        assert res.stderr_iid[k] > 0
    assert res.stats.jacobian_evals >= 2 and res.stats.grad_evals > 0


def test_plot_and_summary(adam_fit):
    res = adam_fit
    fig = res.plot()
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    text = res.summary()
    assert "lr" in text and "discrepancy" in text and "stable" in text


def test_exported_lazily():
    assert rodflow.fit_flow is fit_flow and rodflow.FitResult is FitResult


def test_parameter_names_map_onto_each_spec():
    hb = parameters_of(rodflow.optimizer("heavy_ball", lr=0.1, momentum=0.5))
    assert hb["beta1"].get(rodflow.optimizer("heavy_ball", lr=0.1, momentum=0.5)) == 0.5
    assert set(parameters_of(rodflow.optimizer("adam"))) == {"lr", "beta1", "beta2", "eps", "noise"}
    assert set(parameters_of(rodflow.optimizer("rmsprop"))) == {"lr", "beta2", "alpha", "eps", "noise"}
    assert set(parameters_of(rodflow.optimizer("gd"))) == {"lr"}
    assert set(parameters_of(rodflow.optimizer("heavy_ball", lr=0.1))) == {"lr", "beta1", "momentum"}


# ---------------------------------------------------------------------------- bad input
def test_bad_input(tiny, adam_tiny):
    loss, th0 = tiny
    with pytest.raises(TypeError, match="trajectory"):
        fit_flow(adam_tiny.theta, loss)
    with pytest.raises(ValueError, match="fit: unknown parameter 'momentum'"):
        fit_flow(adam_tiny, loss, fit=("lr", "momentum"))
    with pytest.raises(ValueError, match="fit"):
        fit_flow(adam_tiny, loss, fit=("beta1", "beta1"))
    with pytest.raises(ValueError, match="window"):
        fit_flow(adam_tiny, loss, window=(10, 500))
    with pytest.raises(ValueError, match="window"):
        fit_flow(adam_tiny, loss, window=(30, 20))
    with pytest.raises(ValueError, match="family"):
        fit_flow(adam_tiny, loss, family="central")
    with pytest.raises(ValueError, match="segment"):
        fit_flow(adam_tiny, loss, segment=0)
    with pytest.raises(ValueError, match="start"):
        fit_flow(adam_tiny, loss, start={"beta1": 0.5})
    sparse = rodflow.iterate(rodflow.optimizer("adam", lr=1e-2), loss, th0, 40, record_every=2)
    with pytest.raises(ValueError, match=r"consecutive|gaps"):
        fit_flow(sparse, loss, window=(10, 40))
    bare = dataclasses.replace(adam_tiny, config={})
    with pytest.raises(ValueError, match="optimizer"):
        fit_flow(bare, loss)
    assert fit_flow(bare, loss, optimizer="adam", start={"lr": 1e-2}, max_iter=1, **FAST).spec.name == "adam"


# ---------------------------------------------------------------------------- slow: the 150-step digits runs
@pytest.fixture(scope="module")
def digits():
    return rodflow.problems.digits_mlp((8,), n=64)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "hp"), [
    ("adam", {"lr": 3e-3}),
    ("rmsprop", {"lr": 1e-3}),  # from 10x the local fit alone stopped at lr 5.9e-3, D = 13 (see PRESEARCH)
    ("heavy_ball", {"lr": 0.05, "momentum": 0.9})])
def test_digits_150_steps_lr_from_twice_and_ten_times_off(digits, name, hp):
    tr = record(name, digits.loss_fn, digits.theta0, 150, **hp)
    for factor in (2.0, 10.0):
        res = fit_flow(tr, digits.loss_fn, start={"lr": factor * hp["lr"]})
        assert rel(res, "lr", hp["lr"]) < 0.01, res.summary()


@pytest.mark.slow
def test_digits_150_steps_adam_lr_and_beta1(digits):
    tr = record("adam", digits.loss_fn, digits.theta0, 150, lr=3e-3)
    res = fit_flow(tr, digits.loss_fn, fit=("lr", "beta1"), start={"lr": 6e-3, "beta1": 0.8})
    assert rel(res, "lr", 3e-3) < 0.01 and rel(res, "beta1", 0.9) < 0.01, res.summary()


@pytest.mark.slow
@pytest.mark.parametrize(("name", "hp", "fit"), [("adam", {"lr": 3e-3}, ("lr", "noise")),
                                                 ("rmsprop", {"lr": 1e-3}, ("lr", "noise")),
                                                 ("heavy_ball", {"lr": 0.05, "momentum": 0.9}, ("lr",))])
def test_digits_150_steps_noisy_within_two_stderr(digits, name, hp, fit):
    # dead input pixels: there v is the noise's own variance, and an lr-only fit of Adam / RMSProp came out
    # 0.10–0.15 % low (covered 0/4 and 2/4 seeds); with the noise variance fitted too (heavy ball has no
    # second moment: lr alone) see docs/fitting.md for the numbers
    g0 = float(torch.linalg.vector_norm(rodflow.gradient(digits.loss_fn)(digits.theta0)))
    scale = 1e-3 * g0 / math.sqrt(digits.dim)
    covered = []
    for seed in range(4):
        tr = record(name, noisy(digits.loss_fn, scale, seed=seed), digits.theta0, 150, **hp)
        res = fit_flow(tr, digits.loss_fn, fit=fit, start={"lr": 2 * hp["lr"]}, **EXACT)
        assert 0 < res.stderr["lr"] < 0.01 * hp["lr"], res.summary()
        covered.append(abs(res.values["lr"] - hp["lr"]) < 2 * res.stderr["lr"])
    assert sum(covered) >= 3, covered


@pytest.mark.slow
def test_digits_gd_at_eos_auto_picks_rod():
    prob = rodflow.problems.digits_mlp((16,), n=128, seed=0)
    tr = record("gd", prob.loss_fn, prob.theta0, 100, lr=1.2)
    res = fit_flow(tr, prob.loss_fn, family="auto", window=(60, 100))
    assert res.family == "rod", res.candidates
    assert res.candidates["rod"] < 0.5 * res.candidates["stable"]

