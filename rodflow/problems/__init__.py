"""Problems: tasks turned into a flat loss ``loss_fn(θ)`` with an initial point.

>>> import torch, rodflow
>>> prob = rodflow.problems.quadratic([3.0, 1.0], seed=0)
>>> float(prob.loss_fn(torch.zeros(2, dtype=torch.float64)))
0.0
"""

from .base import Problem
from .data import digits, fashion_mnist, jane_austen, jester_like, mnist5k, movielens100k, one_hot, read_jester
from .factorization import matrix_factorization
from .hyperparameters import HYPERPARAMETERS, hyperparameters
from .nets import cnn, digits_mlp, mlp, module_problem
from .quadratic import quadratic, random_rotation

__all__ = [
           "HYPERPARAMETERS",
           "Problem",
           "cnn",
           "digits",
           "digits_mlp",
           "fashion_mnist",
           "hyperparameters",
           "jane_austen",
           "jester_like",
           "matrix_factorization",
           "mlp",
           "mnist5k",
           "module_problem",
           "movielens100k",
           "one_hot",
           "quadratic",
           "random_rotation",
           "read_jester",
]
