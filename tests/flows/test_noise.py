"""The flows' gradient-noise variance: ``N⁺ = β₂N + (1 − β₂)(sq(g) + E[sq(z)])``.

References: a Monte-Carlo average of ``torch.optim.Adam`` / ``torch.optim.RMSprop`` over many noise
draws (the optimizer's own second moment under ``g + z``), and the closed-form relaxation of ``N``
in a coordinate the loss does not depend on.
"""

from __future__ import annotations

import math

import pytest
import torch

import rodflow
from rodflow.adapters import load_phase_state
from rodflow.flows import central_flow, rod_flow, stable_flow
from rodflow.flows.parts import next_n
from rodflow.phase import PhaseState

SIGMA2 = 0.3**2
DRAWS = 40_000


def quad_plus_dead(d: int = 5):
    """``½ Σ_i λ_i θ_i² + Σ_i θ_i⁴/4`` over the first ``d − 1`` coordinates; θ_{d−1} is dead (∇ = 0)."""
    lam = torch.linspace(0.5, 2.0, d - 1, dtype=torch.float64)

    def loss(th: torch.Tensor) -> torch.Tensor:
        x = th[:-1]
        return 0.5 * (lam * x * x).sum() + 0.25 * (x**4).sum()

    theta0 = torch.linspace(-1.0, 1.2, d, dtype=torch.float64)
    return loss, theta0


def torch_mean_v(opt_cls, hp: dict, state: PhaseState, g: torch.Tensor, sigma2: float, seed: int = 0):
    """Mean and standard error over ``DRAWS`` noise draws of the torch optimizer's second moment after
    one step with gradient ``g + z``, ``z ~ N(0, σ²I)``: one parameter holding every draw (the
    optimizer acts per coordinate)."""
    d = g.numel()
    p = torch.zeros(DRAWS * d, dtype=torch.float64, requires_grad=True)
    opt = opt_cls([p], **hp)
    tiled = PhaseState(theta=state.theta.repeat(DRAWS), m=None if state.m is None else state.m.repeat(DRAWS),
                       v=state.v.repeat(DRAWS), t=state.t)
    load_phase_state(opt, tiled)
    gen = torch.Generator().manual_seed(seed)
    z = math.sqrt(sigma2) * torch.randn(DRAWS, d, generator=gen, dtype=torch.float64)
    p.grad = (g.unsqueeze(0) + z).reshape(-1)
    opt.step()
    v = opt.state[p]["exp_avg_sq" if "exp_avg_sq" in opt.state[p] else "square_avg"].detach().view(DRAWS, d)
    return v.mean(0), v.std(0) / math.sqrt(DRAWS)


@pytest.mark.parametrize(("name", "opt_cls", "hp"), [
    ("adam", torch.optim.Adam, {"lr": 1e-2, "betas": (0.9, 0.95)}),
    ("rmsprop", torch.optim.RMSprop, {"lr": 1e-2, "alpha": 0.9})])
def test_stable_flow_euler_step_is_the_torch_map_averaged_over_noise(name, opt_cls, hp):
    # order 1, rate "step": N + F_N = β₂N + (1 − β₂)(g² + σ²) = E_z[v'] of the optimizer fed g + z
    loss, th0 = quad_plus_dead()
    spec = rodflow.optimizer(name, **hp)
    tr = rodflow.iterate(spec, loss, th0, 12)
    k = 11
    state = tr.state(k)
    flow = stable_flow(spec, loss, order=1, noise=SIGMA2)
    y = flow.initial(tr, step=k)
    n_next = y[-1] + flow.field(float(k), y)[-1]
    g = rodflow.gradient(loss)(state.theta)
    mean, se = torch_mean_v(opt_cls, hp, state, g, SIGMA2)
    assert bool(((n_next - mean).abs() < 4 * se).all()), ((n_next - mean) / se).tolist()
    # the noiseless flow misses it by (1 − β₂)σ², far outside the Monte-Carlo error
    clean = stable_flow(spec, loss, order=1)
    n_clean = y[-1] + clean.field(float(k), y)[-1]
    assert bool(((n_clean - mean).abs() > 20 * se).all())
    assert torch.allclose(n_next - n_clean, torch.full_like(n_next, (1 - spec.beta2) * SIGMA2), rtol=1e-12, atol=0)


def test_rod_flow_averages_both_ends_and_adds_the_noise():
    # the rod's N⁺: each end's step gets its own fresh noise, E = β₂N + (1 − β₂)(½[g₊² + g₋²] + σ²)
    loss, th0 = quad_plus_dead()
    hp = {"lr": 1e-2, "betas": (0.9, 0.95)}
    spec = rodflow.optimizer("adam", **hp)
    tr = rodflow.iterate(spec, loss, th0, 20)
    k = 12
    flow = rod_flow(spec, loss, order=1, floor=None, noise=SIGMA2)
    y = flow.initial(tr, step=k)
    z = flow.state(y)
    delta = z.Delta + 0.05  # a rod wide enough that g₊ and g₋ differ
    y = tuple(delta if name == "Delta" else x for name, x in zip(flow.names, y))
    n_next = z.N + flow.increment(float(k), y)[-1]
    means, ses = [], []
    for sign, seed in ((1.0, 1), (-1.0, 2)):
        w = z.W + sign * delta
        st = PhaseState(theta=w, m=z.M + sign * z.mu, v=z.N, t=k)
        mean, se = torch_mean_v(torch.optim.Adam, hp, st, rodflow.gradient(loss)(w), SIGMA2, seed=seed)
        means.append(mean)
        ses.append(se)
    ref = 0.5 * (means[0] + means[1])
    se = 0.5 * torch.sqrt(ses[0] ** 2 + ses[1] ** 2)
    assert bool(((n_next - ref).abs() < 4 * se).all()), ((n_next - ref) / se).tolist()
    n_clean = z.N + rod_flow(spec, loss, order=1, floor=None).increment(float(k), y)[-1]
    assert bool(((n_clean - ref).abs() > 20 * se).all())


@pytest.mark.parametrize("order", [1, 2])
def test_a_dead_coordinates_n_relaxes_to_the_noise_variance_in_closed_form(order):
    # ∂L/∂θ_dead = 0: order 1 solves Ṅ = (1 − β₂)(σ² − N), the look-behind field F(Z − ½F) has the rate
    # c = (1 − β₂)(1 + (1 − β₂)/2); both: N(t) = σ² + (N₀ − σ²)e^{−c(t − t₀)}
    loss, th0 = quad_plus_dead()
    spec = rodflow.optimizer("adam", lr=1e-2, betas=(0.9, 0.9))
    tr = rodflow.iterate(spec, loss, th0, 12)
    n0 = 0.01
    tr.v[10, -1] = n0  # a recorded start off the noise level
    sol = stable_flow(spec, loss, order=order, noise=SIGMA2).solve(tr, start=10, steps=30, rtol=1e-10, atol=1e-12,
                                                                    check_config=False)
    b = 1.0 - spec.beta2
    c = b if order == 1 else b * (1 + b / 2)
    t = (sol.t - 10).to(torch.float64)
    ref = SIGMA2 + (n0 - SIGMA2) * torch.exp(-c * t)
    assert sol.v is not None
    assert torch.allclose(sol.v[:, -1], ref, rtol=1e-7, atol=0)
    assert torch.equal(sol.theta[:, -1], torch.full_like(t, float(th0[-1])))  # the dead coordinate stands still
    assert sol.config["noise"] == SIGMA2


def test_scalar_variants_add_d_sigma2():
    # sq(g) = ‖g‖²: E‖g + z‖² = ‖g‖² + dσ² (a number, or the sum of per-coordinate variances)
    spec = rodflow.optimizer("scalar_rmsprop", lr=1e-2, alpha=0.9)
    g = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64)
    n = torch.tensor(0.5, dtype=torch.float64)
    var = torch.tensor([0.1, 0.2, 0.4], dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    z = torch.randn(DRAWS, 3, generator=gen, dtype=torch.float64) * var.sqrt()
    mc = (0.9 * n + 0.1 * ((g + z) ** 2).sum(1))
    for noise, total in ((SIGMA2, 3 * SIGMA2), (var, float(var.sum()))):
        got = next_n(spec, n, spec.second_moment(g), g, noise)
        assert float(got) == pytest.approx(0.9 * 0.5 + 0.1 * (float((g * g).sum()) + total), rel=1e-14)
    got = float(next_n(spec, n, spec.second_moment(g), g, var))
    assert abs(got - float(mc.mean())) < 4 * float(mc.std()) / math.sqrt(DRAWS)


def test_central_flow_nu_gets_the_noise_term():
    # below the edge (X = 0): ν̇ = κ(1 − β₂)(sq(∇L) + σ² − ν), κ = 1/β₂ (rate "central")
    loss, th0 = quad_plus_dead()
    spec = rodflow.optimizer("rmsprop", lr=1e-3, alpha=0.9)
    tr = rodflow.iterate(spec, loss, th0, 12)
    clean, noisy = central_flow(spec, loss), central_flow(spec, loss, noise=SIGMA2)
    y = clean.initial(tr, step=10)
    diff = noisy.field(10.0, y)[1] - clean.field(10.0, y)[1]
    assert torch.allclose(diff, torch.full_like(diff, 0.1 / 0.9 * SIGMA2), rtol=1e-12, atol=0)


def test_per_coordinate_noise_and_the_config():
    loss, th0 = quad_plus_dead()
    spec = rodflow.optimizer("adam", lr=1e-2)
    tr = rodflow.iterate(spec, loss, th0, 14)
    var = torch.linspace(0.0, 0.1, th0.numel(), dtype=torch.float64)
    flow = stable_flow(spec, loss, order=1, noise=var)
    y = flow.initial(tr, step=11)
    dn = flow.field(11.0, y)[-1] - stable_flow(spec, loss, order=1).field(11.0, y)[-1]
    assert torch.allclose(dn, (1 - 0.999) * var, rtol=1e-12, atol=1e-20)
    sol = flow.solve(tr, start=11, steps=2)
    assert sol.config["noise"] == pytest.approx(var.tolist())
    assert stable_flow(spec, loss).solve(tr, start=11, steps=1).config["noise"] is None
    with pytest.raises(ValueError, match="noise: 3 per-coordinate variances"):
        stable_flow(spec, loss, noise=torch.ones(3, dtype=torch.float64)).solve(tr, start=11, steps=1)


@pytest.mark.parametrize("bad", [-1e-3, math.nan, math.inf, torch.tensor([0.1, -0.1]), torch.ones(2, 2),
                                 torch.tensor([1.0, math.inf])])
def test_bad_noise_is_refused_naming_it(bad):
    loss, _ = quad_plus_dead()
    for make in (stable_flow, rod_flow):
        with pytest.raises(ValueError, match="noise"):
            make(rodflow.optimizer("adam"), loss, noise=bad)


def test_noise_needs_a_second_moment():
    loss, _ = quad_plus_dead()
    for name in ("heavy_ball", "gd", "nesterov"):
        for make in (stable_flow, rod_flow):
            with pytest.raises(ValueError, match=r"noise: .* no second moment"):
                make(rodflow.optimizer(name, lr=0.1), loss, noise=0.1)
    with pytest.raises(TypeError, match="noise"):
        stable_flow(rodflow.optimizer("adam"), loss, noise="0.1")
    with pytest.raises(TypeError, match="noise"):
        stable_flow(rodflow.optimizer("adam"), loss, noise=True)
    assert stable_flow(rodflow.optimizer("heavy_ball", lr=0.1), loss, noise=None).noise is None
