"""The FlowAdam paper's experimental protocol, shared by the reproduction scripts.

Singh & Sheel, arXiv 2604.06652: full batch, seeds 42/123/456/789/999, lr 0.01, 1000 steps, L2
weight decay 1e-5, init N(0, 0.1²), model rank = true rank + 5, test RMSE on the unobserved
noise-free entries. The data follow the authors' generator (idevender/flowadam): factors drawn by
``numpy.random`` seeded with the seed, scaled by 1/√rank (unit-variance entries), the observation
mask and noise by ``torch`` seeded with the seed, the model's factors by ``torch`` seeded with
seed + 1000; so the matrices, masks and initial factors are the authors' own.

One difference on purpose: every optimizer gets the *same* L2 through its ``weight_decay``
(coupled: ``g ← g + λθ``); the authors' scripts gave FlowAdam ``λ‖θ‖²`` in the loss (gradient
``2λθ``) and Adam ``weight_decay=λ``.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import rodflow

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "paper_repro" / "flowadam" / "results"
FIGURES = ROOT / "figures"
SEEDS = (42, 123, 456, 789, 999)

#: FlowAdam settings by variant name (every one at the full-batch preset, mode B, as in the paper).
FLOWADAM_VARIANTS: dict[str, dict[str, Any]] = {
    "flowadam": {},
    "flowadam_rk4": {"ode_method": "rk4"},
    "flowadam_euler": {"ode_method": "euler"},
    "clip_step": {"ode_method": "euler", "injection": "none"},
    "flowadam_hard": {"injection": "hard"},
}


def low_rank_data(dims: Sequence[int], rank: int, density: float, noise: float, seed: int) -> dict[str, torch.Tensor]:
    """A rank-``rank`` CP target (a matrix for two dims), a random observation mask and noisy
    observations; float32, the authors' generator and seeding."""
    torch.manual_seed(seed)
    if len(dims) == 2:
        rs = np.random.RandomState(seed)  # the legacy stream of np.random.seed(seed), as the authors drew it
        factors = [rs.randn(d, rank) / np.sqrt(rank) for d in dims]
        clean = torch.tensor(factors[0] @ factors[1].T, dtype=torch.float32)
    else:
        tf = [torch.randn(d, rank) / np.sqrt(rank) for d in dims]
        clean = torch.einsum("ir,jr,kr->ijk", *tf)
    mask = torch.rand(*dims) < density
    target = torch.zeros_like(clean)
    target[mask] = clean[mask] + noise * torch.randn(int(mask.sum()))
    return {"clean": clean, "mask": mask, "target": target}


def init_factors(dims: Sequence[int], rank: int, seed: int, scale: float = 0.1) -> list[torch.nn.Parameter]:
    """The model's factors, N(0, scale²), drawn after ``torch.manual_seed(seed + 1000)``."""
    torch.manual_seed(seed + 1000)
    return [torch.nn.Parameter(torch.randn(d, rank) * scale) for d in dims]


def reconstruct(factors: Sequence[torch.Tensor]) -> torch.Tensor:
    if len(factors) == 2:
        return factors[0] @ factors[1].T
    return torch.einsum("ir,jr,kr->ijk", *factors)


def completion_loss(factors: Sequence[torch.Tensor], data: dict[str, torch.Tensor],
                    mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over the observed entries (or over ``mask``)."""
    m = data["mask"] if mask is None else mask
    return (reconstruct(factors) - data["target"])[m].square().mean()


def test_rmse(factors: Sequence[torch.Tensor], data: dict[str, torch.Tensor]) -> float:
    """RMSE against the noise-free target on the unobserved entries."""
    with torch.no_grad():
        err = (reconstruct(factors) - data["clean"])[~data["mask"]]
    return float(err.square().mean().sqrt())


def make_optimizer(variant: str, params: list[torch.nn.Parameter], lr: float, wd: float,
                   **flow_kw: Any) -> torch.optim.Optimizer:
    """``adam``/``adam_matched``/``adam_fewer`` (torch Adam), ``lion``, ``adabelief`` (pytorch_optimizer) or a
    FlowAdam variant of :data:`FLOWADAM_VARIANTS`; every one with coupled L2 ``wd``."""
    if variant in ("adam", "adam_matched", "adam_fewer"):
        return torch.optim.Adam(params, lr=lr, weight_decay=wd)
    if variant in ("lion", "adabelief"):
        try:
            import pytorch_optimizer
        except ImportError as err:
            raise SystemExit("the lion/adabelief baselines need pytorch_optimizer: pip install -e '.[repro]'") from err
        cls = pytorch_optimizer.Lion if variant == "lion" else pytorch_optimizer.AdaBelief
        return cls(params, lr=lr, weight_decay=wd, weight_decouple=False)
    if variant not in FLOWADAM_VARIANTS:
        raise ValueError(f"variant: unknown {variant!r}")
    return rodflow.FlowAdam(params, lr=lr, weight_decay=wd, **{"mode": "B", **FLOWADAM_VARIANTS[variant], **flow_kw})


def train(params: list[torch.nn.Parameter], loss_fn: Callable[[], torch.Tensor], opt: torch.optim.Optimizer,
          steps: int, record: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Full-batch training; returns the final loss, gradient evaluations, ODE triggers and seconds."""

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        return loss

    t0 = time.perf_counter()
    loss: Any = torch.zeros(())
    for k in range(steps):
        loss = opt.step(closure)  # type: ignore[arg-type]  # torch's stub wants a float-valued closure
        if record is not None:
            record(k)
    seconds = time.perf_counter() - t0
    out = {"final_loss": float(loss.detach() if isinstance(loss, torch.Tensor) else loss), "grad_evals": steps, "triggers": 0, "failures": 0, "seconds": seconds}
    if isinstance(opt, rodflow.FlowAdam):
        out.update(grad_evals=opt.grad_evals, triggers=opt.ode_triggers, failures=opt.ode_failures)
    return out


def mean_std(values: Sequence[float], digits: int = 4) -> str:
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _script() -> str:
    path = Path(sys.argv[0]).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def write_results(path: Path, title: str, intro: str, table: list[str], config: dict[str, Any],
                  notes: str = "") -> str:
    """A results markdown: title, intro, table, notes, the recorded config and the command."""
    cfg = {k: (str(v.resolve().relative_to(ROOT)) if isinstance(v, Path) and v.resolve().is_relative_to(ROOT)
               else str(v) if isinstance(v, Path) else v) for k, v in config.items()}
    text = (f"# {title}\n\n{intro}\n\n" + "\n".join(table) + "\n\n" + (notes + "\n\n" if notes else "")
            + f"Config: `{json.dumps(cfg)}`\n\nCommand: `python {' '.join([_script(), *sys.argv[1:]])}` "
            f"(torch {torch.__version__}, 1 thread)\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text
