"""Delay kernels of the flows on one mode: how fast each grows the map's modes, and where it turns unstable.

A flow ``dZ/dt = Σ_j c_j F(Z(t − τ_j))`` on a mode of the map with multiplier ``z = 1 + ε``
(``F(Z) = εZ``) grows like ``e^{st}`` at the roots of

.. math::

    s = \\varepsilon K(s),\\qquad K(s) = \\sum_j c_j e^{-s\\tau_j},

where the map itself grows at ``ln z`` (the root of ``s = ε · s/(e^s − 1)``). Two properties of a
kernel matter for the rod (docs/flows.md §6b–§6c):

* its rate on momentum's ringing modes, ``z = √β e^{iφ}`` (heavy ball's spectrum lies on that circle
  for every ηλ between (1 − √β)² and (1 + √β)²), against ``ln z``: the principal root, by Newton from
  ``ln z``;
* the most negative real ε down to which it keeps every root in Re s < 0. Past an optimizer's
  threshold a direction of the rod's centre has ``z < −1``; the map grows there (period two), but the
  centre is meant to stay smooth (the rod's Δ carries the oscillation), so a kernel that follows the
  map's growth there makes the centre oscillate. By D-subdivision a root crosses the imaginary axis at
  ``s = iω`` exactly when ``ε(ω) = iω / K(iω)`` is real; the bound is the negative real crossing
  nearest 0 (for one lag at ½ it is ``−π``, Hayes' theorem: ``ẋ = a x(t − τ)`` is stable for
  ``−π/2 < aτ < 0``).

Kernels: the one-lag form (order 2), the three-lag form (order 3), the third-order kernels on lags
¼, ½, ¾, 1 (a one-parameter family), the fifth-order kernel on lags 0, ¼, ½, ¾, 1, and the
second-order kernels on lags ¼ … 1 most accurate on ringing modes among those stable above a given z
(:func:`best_second_order`). Writes
``results/kernels.md``::

    python paper_repro/rodflow/kernels.py
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]

#: Taylor coefficients of s/(e^s − 1) (Bernoulli numbers over factorials): 1, −1/2, 1/12, 0, −1/720
_BERNOULLI = (1.0, -0.5, 1 / 12, 0.0, -1 / 720)


def kernel_weights(lags: Sequence[float], order: int | None = None, free: Sequence[float] = ()) -> np.ndarray:
    """Weights c_j on ``lags`` with ``K(s) = s/(e^s − 1) + O(s^order)`` (``order`` defaults to the
    number of lags, the unique kernel); with fewer conditions than lags the remaining freedom is
    ``free`` along the null space of the conditions (orthonormal basis from the SVD)."""
    tau = np.asarray(lags, dtype=float)
    order = len(tau) if order is None else order
    if not 1 <= order <= min(len(tau), len(_BERNOULLI)):
        raise ValueError(f"order must lie in [1, {min(len(tau), len(_BERNOULLI))}], got {order}")
    # Σ_j c_j (−s τ_j)^p / p! = b_p s^p  ⇔  Σ_j c_j τ_j^p = (−1)^p p! b_p
    a = np.array([tau ** p for p in range(order)])
    b = np.array([(-1) ** p * math.factorial(p) * _BERNOULLI[p] for p in range(order)])
    w = np.linalg.lstsq(a, b, rcond=None)[0]
    null = np.linalg.svd(a)[2][order:].T
    if len(free) != null.shape[1]:
        raise ValueError(f"free: {null.shape[1]} free parameter(s) for {len(tau)} lags at order {order}, "
                         f"got {len(free)}")
    return w + null @ np.asarray(free, dtype=float) if len(free) else w


def kernel(s: complex, lags: Sequence[float], weights: Sequence[float]) -> complex:
    """``K(s) = Σ_j c_j e^{−s τ_j}``."""
    return complex(sum(c * np.exp(-s * t) for c, t in zip(weights, lags)))


def newton_root(eps: complex, start: complex, lags: Sequence[float], weights: Sequence[float],
                iterations: int = 100) -> complex | None:
    """A root of ``s = ε K(s)`` by Newton's method from ``start`` (``None`` if the step has not fallen
    below 1e-14 within ``iterations``)."""
    s = complex(start)
    for _ in range(iterations):
        k = kernel(s, lags, weights)
        dk = complex(sum(-t * c * np.exp(-s * t) for c, t in zip(weights, lags)))
        step = (s - eps * k) / (1 - eps * dk)
        s -= step
        if abs(step) < 1e-14:
            return s
    return None


def principal_rate(z: complex, lags: Sequence[float], weights: Sequence[float]) -> complex:
    """The root of ``s = (z − 1) K(s)`` that Newton reaches from ``ln z`` (from ``ln z + 0.5i`` where the
    kernel has no real root near a real ``ln z``, e.g. one lag at small positive z)."""
    log = complex(np.log(complex(z)))
    for start in (log, log + 0.5j):
        if (s := newton_root(z - 1, start, lags, weights)) is not None:
            return s
    raise RuntimeError(f"no convergence from ln z for z = {z}")


def real_stability_bound(lags: Sequence[float], weights: Sequence[float], omega_max: float = 4 * math.pi,
                         n: int = 200_001) -> float:
    """The negative real ε nearest 0 at which a root of ``s = ε K(s)`` reaches the imaginary axis
    (D-subdivision: ``ε(ω) = iω/K(iω)`` real); ``-inf`` if none for ω ≤ ``omega_max``."""
    omega = np.linspace(1e-9, omega_max, n)
    k = sum(c * np.exp(-1j * omega * t) for c, t in zip(weights, lags))
    eps = 1j * omega / k
    im = eps.imag
    crossings = np.nonzero(np.sign(im[:-1]) * np.sign(im[1:]) < 0)[0]
    found = []
    for i in crossings:  # linear interpolation of Re ε at the sign change of Im ε
        f = im[i] / (im[i] - im[i + 1])
        value = eps.real[i] + f * (eps.real[i + 1] - eps.real[i])
        if value < 0:
            found.append(value)
    return max(found) if found else -math.inf


def ringing_error(lags: Sequence[float], weights: Sequence[float], beta: float = 0.9,
                  phis: Sequence[float] = tuple(np.linspace(0.3, 2.5, 12))) -> float:
    """The largest ``|s − ln z|`` over ringing modes ``z = √β e^{iφ}``."""
    zs = [math.sqrt(beta) * complex(math.cos(p), math.sin(p)) for p in phis]
    return max(abs(principal_rate(z, lags, weights) - complex(np.log(z))) for z in zs)


def best_second_order(z_bound: float, lags: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
                      beta: float = 0.9) -> np.ndarray:
    """The second-order kernel on ``lags`` with the smallest :func:`ringing_error` among those stable
    for every real multiplier above ``z_bound`` (Nelder–Mead on the free weights from five starts,
    the bound as a penalty)."""
    from scipy.optimize import minimize

    free = len(lags) - 2

    def objective(x: np.ndarray) -> float:
        w = kernel_weights(lags, order=2, free=x)
        excess = max(0.0, 1 + real_stability_bound(lags, w, n=20_001) - z_bound)
        try:
            return ringing_error(lags, w, beta) + 10 * excess
        except RuntimeError:
            return 10.0

    starts = [np.zeros(free)] + [sign * np.eye(free)[i] for i in range(free) for sign in (1, -1)]
    best = min((minimize(objective, x0, method="Nelder-Mead", options={"maxiter": 300, "xatol": 1e-4,
                                                                       "fatol": 1e-6}) for x0 in starts),
               key=lambda r: r.fun)
    return kernel_weights(lags, order=2, free=best.x)


def momentum_multipliers(method: str, x: float, beta: float = 0.9) -> np.ndarray:
    """The two multipliers z of heavy ball (``z² − (1 + β − x)z + β``) or Nesterov
    (``z² − (1 + β)(1 − x)z + β(1 − x)``) on a mode with ``x = ηλ``."""
    if method == "heavy_ball":
        return np.roots([1.0, -(1 + beta - x), beta])
    if method == "nesterov":
        return np.roots([1.0, -(1 + beta) * (1 - x), beta * (1 - x)])
    raise ValueError(f"method must be 'heavy_ball' or 'nesterov', got {method!r}")


def alternating_rate_errors(method: str, beta: float = 0.9, n: int = 60) -> list[tuple[float, float, float]]:
    """On a grid of ηλ below the threshold: ``(ηλ, one-lag error, three-lag error)``, the largest
    ``|s − ln(−z)|`` over the mode's two multipliers as the rod's alternating part (Δ, μ) sees them (−z)."""
    threshold = 2 * (1 + beta) if method == "heavy_ball" else (2 + 2 * beta) / (1 + 2 * beta)
    three = kernel_weights([0.0, 0.5, 1.0])
    out = []
    for x in np.linspace(1e-3, 0.995, n) * threshold:
        errs = [0.0, 0.0]
        for z in momentum_multipliers(method, float(x), beta):
            zd = complex(-z)
            exact = complex(np.log(zd))
            for j, (lags, w) in enumerate((([0.5], [1.0]), ([0.0, 0.5, 1.0], three))):
                errs[j] = max(errs[j], abs(principal_rate(zd, lags, w) - exact))
        out.append((float(x), errs[0], errs[1]))
    return out


def rows(beta: float = 0.9, phis: Sequence[float] = (1.0, 1.5, 2.0, 2.5, 3.0)) -> list[dict[str, object]]:
    """One row per kernel: weights, the real stability bound (as ε and as z), and the ringing rates."""
    cases: list[tuple[str, list[float], np.ndarray]] = [
        ("one lag (order 2, the default)", [0.5], np.array([1.0])),
        ("three lags (order 3, `order=3`)", [0.0, 0.5, 1.0], kernel_weights([0.0, 0.5, 1.0])),
    ]
    for a in (-1.5, 0.0, 1.5):
        cases.append((f"lags ¼–1, order 3, free {a:+.1f}", [0.25, 0.5, 0.75, 1.0],
                      kernel_weights([0.25, 0.5, 0.75, 1.0], order=3, free=[a])))
    cases.append(("lags 0–1 by ¼ (order 5)", [0.0, 0.25, 0.5, 0.75, 1.0], kernel_weights([0.0, 0.25, 0.5, 0.75, 1.0])))
    for z_bound in (-2.0, -1.6):
        cases.append((f"lags ¼–1, order 2, best on ringing stable above z = {z_bound}", [0.25, 0.5, 0.75, 1.0],
                      best_second_order(z_bound, beta=beta)))
    out = []
    for name, lags, w in cases:
        bound = real_stability_bound(lags, w)
        rates = {f"{phi:g}": principal_rate(math.sqrt(beta) * complex(math.cos(phi), math.sin(phi)), lags, w)
                 for phi in phis}
        out.append({"kernel": name, "lags": lags, "weights": [round(float(c), 4) for c in w],
                    "bound_eps": bound, "bound_z": 1 + bound, "ringing": rates,
                    "ringing_error": ringing_error(lags, w, beta)})
    return out


def markdown(table: list[dict[str, object]], beta: float) -> str:
    phis = list(table[0]["ringing"])  # type: ignore[arg-type]
    exact = math.log(math.sqrt(beta))
    head = ["kernel", "weights", "unstable from z ="] + [f"rate at φ = {p}" for p in phis] + [
        "max error, φ = 0.3 … 2.5"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in table:
        rates = r["ringing"]  # type: ignore[assignment]
        cells = [str(r["kernel"]), ", ".join(f"{c:g}" for c in r["weights"]), f"{r['bound_z']:.3f}"]  # type: ignore[attr-defined]
        cells += [f"{rates[p].real:+.3f}{rates[p].imag:+.3f}i" for p in phis]  # type: ignore[index]
        cells.append(f"{r['ringing_error']:.3f}")
        lines.append("| " + " | ".join(cells) + " |")
    note = (f"Ringing modes z = √β·e^(iφ), β = {beta}: the map's rate is ln z = {exact:+.3f} + iφ. "
            "\"Unstable from z\": the real multiplier below which a root has Re s > 0 (the map itself grows "
            "for every z < −1).")
    return "\n".join(lines) + "\n\n" + note + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--beta", type=float, default=0.9)
    p.add_argument("--results", type=Path, default=ROOT / "paper_repro" / "rodflow" / "results")
    args = p.parse_args(argv)
    table = rows(args.beta)
    alt = []
    for method in ("heavy_ball", "nesterov"):
        errs = alternating_rate_errors(method, args.beta)
        alt.append(f"| {method} | {max(e1 for _, e1, _ in errs):.3f} | {max(e3 for _, _, e3 in errs):.3f} | "
                   f"{sum(e3 < e1 for _, e1, e3 in errs)} of {len(errs)} |")
    alt_text = ("## The alternating part's modes of the momentum methods\n\nOn each mode below the threshold "
                "(60 values of ηλ) the rod's (Δ, μ) sees the map's multipliers as −z; the largest rate error "
                "|s − ln(−z)| of each kernel over the grid, and on how many modes the three-lag kernel is the "
                "closer one:\n\n| method | one lag | three lags | three lags closer |\n|---|---|---|---|\n"
                + "\n".join(alt) + "\n")
    text = (f"# Delay kernels on one mode\n\n{markdown(table, args.beta)}\n{alt_text}\n"
            f"Config: `{json.dumps({'beta': args.beta})}`\n\nCommand: `python {' '.join(sys.argv)}`\n")
    args.results.mkdir(parents=True, exist_ok=True)
    out = args.results / "kernels.md"
    out.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
