r"""FlowAdam: Adam that switches to a clipped gradient-flow ODE on plateaus and stiff stretches.

Singh & Sheel, *FlowAdam*, arXiv 2604.06652 (IJCNN 2026). Each ``step(closure)``:

1. One closure call gives g (all parameters of all groups), ``n_t = ‖g‖`` and
   ``c_t = ‖g − g_{t−1}‖`` (``g_0 = 0``).
2. EMAs with β_stat = 0.9, initialised to the first values and updated *before* the test:
   ``N_t = β N_{t−1} + (1 − β) n_t``, ``C_t = β C_{t−1} + (1 − β) c_t``.
3. ``plateau = n_t < s·N_t``, ``stiff = c_t > κ·C_t``; the ODE runs when ``(plateau or stiff)`` and
   more than ``warmup`` steps precede this one (the reference's ``step_count > 10``). This test is
   the one host synchronisation of the step.
4. Adam mode: exactly ``torch.optim.Adam`` (torch's own functional kernel, fused where possible).
5. ODE mode: with time rescaled to ``s ∈ [0, ode_t_scale]``, every group moves at its own rate,

   .. math:: \frac{d\theta_g}{ds} = -\mathrm{lr}_g\,\mathrm{clip}(\nabla_g L(\theta), -1, 1),

   solved by :func:`rodflow.integrate` (the toolkit's one integrator; dopri5, rtol = atol =
   ``ode_tol``), each field evaluation one closure call. For a single group this is the
   reference's ``dθ/dt = −clip(∇L)`` on ``t ∈ [0, lr·ode_t_scale]``. Weight decay enters as in
   Adam mode: L2 adds ``λθ`` to the gradient before the clip; decoupled decay adds
   ``−lr_g λ θ`` to the field. θ is set to the end point, then *Soft Momentum Injection*, per
   tensor:

   .. math:: u = -\Delta\theta / \mathrm{lr}_g,\quad
             u \leftarrow u \min(1, 5\|m\| / \|u\|),\quad m \leftarrow (1 - \gamma) m + \gamma u;

   v and the Adam step count are untouched. ``injection="hard"`` sets ``m ← u`` (no cap, the
   paper's ablation baseline); ``injection="none"`` leaves m alone.
6. If the solve fails (non-finite state, step-size underflow), θ is restored, the gradient is
   recomputed at θ and the Adam step is taken instead (counted in ``ode_failures``).

Presets: ``mode="A"`` (the default; stochastic: switch 0.40, curvature 3.0, ode_t_scale 2.0) and
``mode="B"`` (full batch: 0.90, 0.1, 0.5); explicit arguments override the preset. Which to use,
measured (``paper_repro/flowadam/results/``; read ``ode_triggers`` and ``ode_nfe / grad_evals`` on
your own task):

* mode A is a drop-in for ``torch.optim.Adam``: on a Fashion-MNIST CNN (mini-batches of 128, the
  paper's CIFAR-10 protocol at CPU scale) and a digits MLP (mini-batch and full batch) it triggers
  on almost no step (< 1 % of the steps, ≤ 3 % of the gradient evaluations) and ends where Adam
  does, at Adam's cost.
* mode B is the paper's setting for full-batch, coupled, ill-conditioned problems (matrix and
  tensor completion, where it fires on about half the steps and lowers the test error by 0.3–7 %
  at ~5× Adam's gradient evaluations). On an ordinary classifier it fires on 67–100 % of the steps,
  spends ~90 % of the gradient evaluations in the ODE and ends far behind Adam (test accuracy
  0.38 against 0.73 on the CNN, 0.74 against 0.91 on the digits MLP with mini-batches): don't use
  it there. A run whose ODE fires on most steps warns once (see ``FlowAdam.step``).

Cost of the statistics: ``‖g‖²`` and ``‖g − g_{t−1}‖²`` (the difference formed elementwise) are
read-only reductions over all parameters (:func:`rodflow.optim.reductions.change_sq_sums`: torch's
foreach ops grouped by device and dtype, float64 across pieces; ``statistics="compile"`` runs them
through ``torch.compile``), with no host sync. (The cheaper-looking
``‖g‖² − 2⟨g, g_{t−1}⟩ + ‖g_{t−1}‖²`` cancels catastrophically in float32: right after an ODE step
``c_t`` is ~1e-6·``n_t``, far below its ~3e-4·``n_t`` resolution.)

The previous gradient is kept *by reference* where that is safe: with ``zero_grad()`` (set to
None) every backward allocates a fresh gradient, so holding last step's tensor costs no copy. A
parameter's first step copies g and holds g as well; if at the next step the gradient is the same
tensor or shares its storage (``zero_grad(set_to_none=False)``, gradients accumulated in place, DDP
bucket views), FlowAdam keeps its own copy of that parameter's gradient from then on (one copy per
step), else it holds the reference. ``FlowAdam.zero_grad(set_to_none=False)`` copies a held
reference before zeroing it; a held gradient that turns up again as the new gradient by another
route (``model.zero_grad(set_to_none=False)`` mid-run) is detected: ``c_t`` then omits that
parameter once, with a :class:`FlowAdamWarning`, and the copy starts. (A held tensor that is
written in place after it stopped being ``p.grad`` is not detected.)

``torch.compile``: a compiled ``step`` keeps torch's Adam kernels in its graph (the foreach form,
capturable, as the compiler wants it; torch marks its functional Adam with
``_disable_dynamo_if_unsupported`` for the cases it cannot trace). The first closure call, the
statistics, the decision (the host read), the counters and the ODE branch (solver and closure
calls) run eagerly by design: ``_decide`` and ``_ode_step`` are wrapped in ``torch._dynamo.disable``.
A compiled step agrees with the eager one to the float32 rounding of the capturable kernel's bias
corrections (it forms 1 − β^k from the float32 step tensors).

Trigger rate: after ``warmup``, once :data:`WARN_AFTER` eligible steps have been taken, a run
where the ODE fired on more than :data:`WARN_RATE` of them warns once (:class:`FlowAdamWarning`): the
preset likely does not suit the task (``mode="A"`` is the stochastic preset; the counters
``ode_triggers`` and ``ode_nfe`` say how often and how much the ODE ran). The check compares two
Python counters: no host sync.

Distributed data parallelism: gradients are all-reduced inside ``backward``, so n_t, c_t, the
decision and every ODE evaluation are identical on every rank, and each rank makes the same number
of closure calls. Sharded parameters (FSDP) hold only a shard of g on each rank: the two partial
sums ``‖g‖²`` and ``‖g − g_{t−1}‖²`` would have to be all-reduced (summed) over the
shard group before the test, the injection norms ``‖m‖``, ``‖u‖`` likewise per tensor, and the
adaptive solver's error norm would have to be global (an all-reduce inside each step's error
estimate) so that every rank accepts and rejects the same steps.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim import Optimizer
from torch.optim.adam import adam as functional_adam

from ..integrate import METHODS, IntegrationError, integrate
from ..optimizers.spec import check_betas, check_real
from .groups import check_group
from .reductions import change_sq_sums, check_statistics, fusable

__all__ = ["INJECTIONS", "PRESETS", "WARN_AFTER", "WARN_RATE", "FlowAdam", "FlowAdamWarning"]

#: (switch_sensitivity, curvature_sensitivity, ode_t_scale) by mode.
PRESETS = {"A": (0.40, 3.0, 2.0), "B": (0.90, 0.1, 0.5)}
INJECTIONS = ("soft", "hard", "none")
#: Eligible steps (after ``warmup``) before the trigger rate is checked, and the rate that warns.
WARN_AFTER, WARN_RATE = 50, 0.5


class FlowAdamWarning(UserWarning):
    """A FlowAdam run that likely does not behave as intended (the ODE fires on most steps, or a
    stored previous gradient was overwritten in place)."""


class FlowAdam(Optimizer):
    """Adam with clipped gradient-flow integration and Soft Momentum Injection (see the module doc).

    Args:
        params: parameters or parameter groups (each group's lr, betas, eps, weight_decay count).
        lr, betas, eps, weight_decay: as ``torch.optim.Adam`` (``weight_decay`` is L2 unless
            ``decoupled_weight_decay=True``, then AdamW's decoupled decay).
        mode: ``"A"`` (default: stochastic, a drop-in for Adam) or ``"B"`` (full batch, coupled problems)
            preset; see the module doc for which to use.
        switch_sensitivity, curvature_sensitivity, ode_t_scale: override the preset.
        warmup: the ODE may run once more than ``warmup`` steps have been taken.
        ode_method, ode_tol: the integrator's method and tolerance (rtol = atol).
        momentum_blend_gamma: γ of the injection; momentum_cap: the ``‖u‖ ≤ cap·‖m‖`` factor.
        injection: ``"soft"``, ``"hard"`` or ``"none"``.
        beta_stat: decay of the trigger statistics' EMAs.
        fused: use torch's fused Adam kernel in Adam mode (default: where the parameters allow).
        statistics: ``"foreach"`` (default: torch's eager foreach ops) or ``"compile"``
            (``torch.compile`` of the trigger statistics).

    Counters: ``ode_triggers`` (ODE steps attempted), ``ode_failures`` (solves that fell back to
    Adam), ``grad_evals`` (closure calls, all of them), ``ode_nfe`` (closure calls made by the
    integrator). They survive ``state_dict()``/``load_state_dict()``.

    >>> import torch
    >>> w = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    >>> opt = FlowAdam([w], lr=0.1, warmup=2)
    >>> def closure():
    ...     opt.zero_grad()
    ...     loss = (w ** 2).sum()
    ...     loss.backward()
    ...     return loss
    >>> for _ in range(20):
    ...     _ = opt.step(closure)
    >>> opt.grad_evals == 20 + opt.ode_nfe and float((w.detach() ** 2).sum()) < 13.0
    True
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        decoupled_weight_decay: bool = False,
        mode: str = "A",
        switch_sensitivity: float | None = None,
        curvature_sensitivity: float | None = None,
        ode_t_scale: float | None = None,
        warmup: int = 10,
        ode_method: str = "dopri5",
        ode_tol: float = 1e-4,
        momentum_blend_gamma: float = 0.5,
        momentum_cap: float = 5.0,
        injection: str = "soft",
        beta_stat: float = 0.9,
        fused: bool | None = None,
        statistics: str = "foreach",
    ):
        check_real("lr", lr, lo=0.0)
        betas = check_betas(betas)
        check_real("eps", eps, lo=0.0, lo_open=True)
        check_real("weight_decay", weight_decay, lo=0.0)
        if mode not in PRESETS:
            raise ValueError(f"mode must be 'A' or 'B', got {mode!r}")
        s, k, ts = PRESETS[mode]
        self.switch_sensitivity = check_real(
            "switch_sensitivity", s if switch_sensitivity is None else switch_sensitivity, lo=0.0)
        self.curvature_sensitivity = check_real(
            "curvature_sensitivity", k if curvature_sensitivity is None else curvature_sensitivity, lo=0.0,
            hi=math.inf, hi_open=False)
        self.ode_t_scale = check_real("ode_t_scale", ts if ode_t_scale is None else ode_t_scale, lo=0.0,
                                      lo_open=True)
        if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
            raise ValueError(f"warmup must be a non-negative int, got {warmup!r}")
        if ode_method not in METHODS:
            raise ValueError(f"ode_method: unknown {ode_method!r}; choose one of {', '.join(METHODS)}")
        self.ode_tol = check_real("ode_tol", ode_tol, lo=0.0, lo_open=True)
        self.gamma = check_real("momentum_blend_gamma", momentum_blend_gamma, lo=0.0, hi=1.0, hi_open=False)
        self.momentum_cap = check_real("momentum_cap", momentum_cap, lo=0.0)
        if injection not in INJECTIONS:
            raise ValueError(f"injection must be one of {INJECTIONS}, got {injection!r}")
        self.beta_stat = check_real("beta_stat", beta_stat, lo=0.0, hi=1.0)
        if fused is not None and not isinstance(fused, bool):
            raise ValueError(f"fused must be True, False or None, got {fused!r}")
        self.statistics = check_statistics(statistics)
        self.mode, self.warmup, self.ode_method, self.injection = mode, warmup, ode_method, injection
        defaults = {"lr": lr, "betas": tuple(betas), "eps": eps, "weight_decay": weight_decay,
                    "decoupled_weight_decay": bool(decoupled_weight_decay), "fused": fused}
        super().__init__(params, defaults)
        for group in self.param_groups:
            for p in group["params"]:
                if p.is_complex():
                    raise ValueError("params: FlowAdam's clipped flow needs real parameters, got a complex one")
        self._reset_globals()
        self._prev_meta: dict[Tensor, tuple[Any, ...]] = {}
        self._warned_rate = False

    # ------------------------------------------------------------------ global statistics
    #: Settings kept by ``copy.deepcopy`` and pickling (``state_dict`` holds the statistics only).
    _CONFIG = ("switch_sensitivity", "curvature_sensitivity", "ode_t_scale", "ode_tol", "gamma", "momentum_cap",
               "beta_stat", "mode", "warmup", "ode_method", "injection", "statistics")
    #: One value per optimizer (not per parameter): they go into ``state_dict()["flowadam"]``.
    _GLOBALS = ("global_step", "grad_norm_ema", "change_ema", "ode_triggers", "ode_failures", "grad_evals",
                "ode_nfe")

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        """``torch.optim.Optimizer.add_param_group``, with the group's lr, betas, eps and weight_decay checked."""
        super().add_param_group(param_group)
        check_group(self.param_groups[-1], len(self.param_groups) - 1)

    def _reset_globals(self) -> None:
        self.global_step = 0  # steps taken
        self.grad_norm_ema: Tensor | None = None  # N_t (float64, 0-d)
        self.change_ema: Tensor | None = None  # C_t
        self.ode_triggers = 0
        self.ode_failures = 0
        self.grad_evals = 0
        self.ode_nfe = 0

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.update({name: getattr(self, name) for name in self._CONFIG + self._GLOBALS})
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self.__dict__.setdefault("statistics", "foreach")
        self.__dict__.setdefault("_warned_rate", False)
        self._prev_meta = {}  # a copy holds no gradient references of its own: its first step copies

    def zero_grad(self, set_to_none: bool = True) -> None:
        """``torch.optim.Optimizer.zero_grad``; with ``set_to_none=False`` a gradient held as g_{t−1}
        by reference is copied first (it is about to be overwritten), and copied every step after."""
        if not set_to_none:
            for p, meta in list(self._prev_meta.items()):
                held = meta[1]
                if meta[0] == "ref" and p.grad is held and self.state[p].get("prev_grad") is held:
                    buf = torch.clone(self.state[p]["prev_grad"])
                    self.state[p]["prev_grad"] = buf
                    self._prev_meta[p] = ("own", buf)
        super().zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        sd = super().state_dict()
        sd["flowadam"] = {name: getattr(self, name) for name in self._GLOBALS}
        return sd

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        glob = state_dict.pop("flowadam", None)
        super().load_state_dict(state_dict)
        # a torch.optim.Adam state (switching a run to FlowAdam) has no g_{t−1}: start from g_0 = 0
        for st in self.state.values():
            if "exp_avg" in st and "prev_grad" not in st:
                st["prev_grad"] = st["exp_avg"].new_zeros(st["exp_avg"].shape)
        self._reset_globals()
        self._prev_meta = {}
        if glob is not None:
            for name in self._GLOBALS:
                value = glob[name]
                setattr(self, name, value.detach().clone() if isinstance(value, Tensor) else value)

    # ------------------------------------------------------------------ helpers
    def _evaluate(self, closure: Callable[[], Any]) -> Any:
        with torch.enable_grad():
            loss = closure()
        self.grad_evals += 1
        return loss

    def _prepare(self) -> tuple[list[dict[str, Any]], list[Tensor], list[Tensor], list[Tensor], list[str]]:
        """Every trainable parameter with its group, its gradient (zeros if None), the ``g_{t−1}`` to
        compare it with, and how to keep g afterwards (``"ref"``, ``"own"`` or ``"probe"``, see
        :meth:`_keep`); creates the state of new parameters."""
        groups, params, grads, prev, after = [], [], [], [], []
        meta_of = self._prev_meta
        overwritten = 0
        for group in self.param_groups:
            fused = group["fused"]
            for p in group["params"]:
                if not p.requires_grad:
                    continue
                if p.grad is not None and p.grad.is_sparse:
                    raise RuntimeError("FlowAdam does not support sparse gradients (as torch.optim.Adam; "
                                       "torch.optim.SparseAdam handles them)")
                st = self.state[p]
                if not st:
                    on_device = fusable([p]) if fused is None else fused
                    st["step"] = torch.zeros((), dtype=torch.float32, device=p.device if on_device else "cpu")
                    st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    st["prev_grad"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    meta_of[p] = ("new", st["prev_grad"])
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                old = st["prev_grad"]
                meta = meta_of.get(p, ("none", None))
                kind = meta[0] if old is meta[-1] else None
                if kind == "ref":  # old is last step's gradient: overwritten if the gradient is that tensor again
                    if old is g:
                        overwritten += 1
                        old, kind = g, "own"
                elif kind == "probe":  # old is our copy; is the gradient's storage reused?
                    held = meta[1]
                    reused = held is g or held.untyped_storage().data_ptr() == g.untyped_storage().data_ptr()
                    kind = "own" if reused else "ref"
                elif kind != "own":  # new state, or state loaded/copied: copy this step, then decide
                    kind = "probe"
                groups.append(group)
                params.append(p)
                grads.append(g)
                prev.append(old)
                after.append(kind)
        if overwritten:
            warnings.warn(f"FlowAdam: the previous gradient of {overwritten} parameter(s) was overwritten in place "
                          "(zero_grad(set_to_none=False) outside FlowAdam.zero_grad, or gradients written into "
                          "their old storage); c_t omits them this step and their gradients are copied from now on",
                          FlowAdamWarning, stacklevel=7)
        return groups, params, grads, prev, after

    @torch._dynamo.disable
    def _keep(self, params: list[Tensor], grads: list[Tensor], after: list[str]) -> None:
        """Store g as the next step's g_{t−1}: by reference (``"ref"``), or copied into a buffer of our
        own (``"own"``; ``"probe"`` also holds g to see at the next step whether its storage is reused).
        Runs before the ODE (whose closure calls may overwrite gradients in place)."""
        meta_of = self._prev_meta
        bufs, srcs = [], []
        for p, g, kind in zip(params, grads, after):
            st = self.state[p]
            if kind == "ref":
                st["prev_grad"] = g
                meta_of[p] = ("ref", g)
                continue
            meta = meta_of.get(p)
            buf = meta[-1] if meta is not None and meta[0] in ("new", "probe", "own") else None
            if buf is None or buf is g or buf.shape != g.shape or buf.dtype != g.dtype or buf.device != g.device:
                buf = torch.empty_like(g)
            bufs.append(buf)
            srcs.append(g)
            st["prev_grad"] = buf
            meta_of[p] = ("probe", g, buf) if kind == "probe" else ("own", buf)
        if bufs:
            torch._foreach_copy_(bufs, srcs)

    def _adam(self, group: dict[str, Any]) -> None:
        """torch's functional Adam on the group's parameters that have a gradient."""
        # last parameter first: the statistics read the gradients in order, so the last ones may still be in cache
        params = [p for p in group["params"] if p.requires_grad and p.grad is not None][::-1]
        if not params:
            return
        compiling = torch.compiler.is_compiling()
        fused = group["fused"]
        if fused is None:  # under torch.compile the foreach form, which the compiler fuses itself
            fused = fusable(params) and not compiling
        # compiled, torch's foreach Adam needs its capturable form (step counts as tensors in the graph)
        capturable = compiling and not fused
        states = [self.state[p] for p in params]
        if fused or capturable:
            for st, p in zip(states, params):
                if st["step"].device != p.device:  # a state loaded onto another device
                    st["step"] = st["step"].to(p.device)
        beta1, beta2 = group["betas"]
        functional_adam(params, [p.grad for p in params], [st["exp_avg"] for st in states],
                        [st["exp_avg_sq"] for st in states], [], [st["step"] for st in states],
                        foreach=not fused, fused=fused, capturable=capturable,
                        decoupled_weight_decay=group["decoupled_weight_decay"],
                        amsgrad=False, beta1=beta1, beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"],
                        eps=group["eps"], maximize=False)

    def _statistics(self, grads: list[Tensor], prev: list[Tensor]) -> tuple[Tensor, Tensor]:
        """``n_t = ‖g‖`` and ``c_t = ‖g − g_{t−1}‖`` (float64, 0-d, on the first parameter's device);
        reads only (see :func:`rodflow.optim.reductions.change_sq_sums`)."""
        n_sq, c_sq = change_sq_sums(grads, prev, self.statistics).unbind()
        return n_sq.sqrt(), c_sq.sqrt()

    # ------------------------------------------------------------------ the step
    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """One FlowAdam step. ``closure`` is required: it zeroes the gradients, computes the loss,
        calls ``backward()`` and returns the loss; the ODE mode calls it once per field evaluation.
        Returns the loss of the first closure call (at the step's starting point)."""
        if closure is None:
            raise ValueError("closure: FlowAdam.step needs a closure that zeroes grads, computes the loss, "
                             "calls backward() and returns the loss")
        loss, use_ode, groups, params = self._decide(closure)
        if not params:
            return loss
        if use_ode:
            use_ode = self._ode_step(closure, groups, params)
        if not use_ode:  # Adam mode (or a failed solve): the part a compiled step keeps in its graph
            for group in self.param_groups:
                self._adam(group)
        return loss

    @torch._dynamo.disable
    def _decide(self, closure: Callable[[], Any]) -> tuple[Any, bool, list[dict[str, Any]], list[Tensor]]:
        """The step's first closure call, the trigger statistics, their EMAs and the decision (with its
        host synchronisation) and the counters: the loss, whether to run the ODE, the groups and
        parameters. Runs eagerly under ``torch.compile`` (so the counters are plain Python)."""
        loss = self._evaluate(closure)
        groups, params, grads, prev, after = self._prepare()
        if not params:
            return loss, False, groups, params
        n_t, c_t = self._statistics(grads, prev)
        del prev
        self._keep(params, grads, after)
        if self.grad_norm_ema is None or self.change_ema is None:
            self.grad_norm_ema, self.change_ema = n_t.clone(), c_t.clone()
        else:
            # a non-finite gradient leaves the EMAs at their last finite values (no host synchronisation):
            # one NaN closure must not switch the ODE off for the rest of the run
            b = self.beta_stat
            self.grad_norm_ema = torch.where(torch.isfinite(n_t), b * self.grad_norm_ema + (1.0 - b) * n_t,
                                             self.grad_norm_ema)
            self.change_ema = torch.where(torch.isfinite(c_t), b * self.change_ema + (1.0 - b) * c_t, self.change_ema)
        use_ode = False
        if self.global_step > self.warmup:
            plateau = n_t < self.switch_sensitivity * self.grad_norm_ema
            stiff = c_t > self.curvature_sensitivity * self.change_ema
            use_ode = bool(plateau | stiff)  # the one host synchronisation of the step
        self.global_step += 1
        if use_ode:
            self.ode_triggers += 1
        self._check_trigger_rate()
        return loss, use_ode, groups, params

    def _check_trigger_rate(self) -> None:
        """Warn once when the ODE fired on more than ``WARN_RATE`` of the eligible steps (at least
        ``WARN_AFTER`` of them); two Python counters, no host sync."""
        eligible = self.global_step - self.warmup - 1
        if (eligible >= WARN_AFTER and self.ode_triggers > WARN_RATE * eligible
                and not self._warned_rate):
            self._warned_rate = True
            warnings.warn(f"FlowAdam: the ODE ran on {self.ode_triggers} of the {eligible} steps after warmup "
                          f"(mode={self.mode!r}); each ODE step costs several closure calls (ode_nfe="
                          f"{self.ode_nfe}). mode='A' is the stochastic preset; see FlowAdam's guidance on "
                          "when to use which mode", FlowAdamWarning, stacklevel=7)

    @torch._dynamo.disable
    def _ode_step(self, closure: Callable[[], Any], groups: list[dict[str, Any]], params: list[Tensor]) -> bool:
        """Integrate the clipped, per-group-rate gradient flow and inject momentum; on failure restore
        θ, recompute the gradient there (for the Adam step the caller then takes) and return False.
        Runs eagerly under ``torch.compile``, by design."""
        if self._solve(closure, groups, params):
            return True
        self.ode_failures += 1
        self._evaluate(closure)  # the gradient at the restored θ
        return False

    def _solve(self, closure: Callable[[], Any], groups: list[dict[str, Any]], params: list[Tensor]) -> bool:
        """The ODE solve and the momentum injection; False on failure (θ restored)."""
        start = tuple(p.detach().clone() for p in params)
        rates = [float(g["lr"]) for g in groups]
        decays = [(float(g["weight_decay"]), bool(g["decoupled_weight_decay"])) for g in groups]

        def field(s: Tensor, y: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
            for p, yi in zip(params, y):
                p.copy_(yi)
            self._evaluate(closure)
            out = []
            for r, (wd, decoupled), p, yi in zip(rates, decays, params, y):
                g = p.grad if p.grad is not None else torch.zeros_like(p)
                if wd and not decoupled:
                    g = g + wd * yi  # L2 enters the gradient, as in Adam mode
                d = g.clamp(-1.0, 1.0).mul_(-r)
                if wd and decoupled:
                    d = d.sub_(yi, alpha=r * wd)  # decoupled decay acts on θ directly, as in AdamW
                out.append(d)
            return tuple(out)

        t = torch.tensor([0.0, self.ode_t_scale], dtype=torch.float64)
        try:
            res = integrate(field, start, t, method=self.ode_method, rtol=self.ode_tol, atol=self.ode_tol,
                            progress=False)
        except IntegrationError as err:
            self.ode_nfe += err.stats.nfe
            for p, s0 in zip(params, start):
                p.copy_(s0)
            return False
        self.ode_nfe += res.stats.nfe
        for p, s0, y, r in zip(params, start, res.ys, rates):
            if r == 0.0:  # a group at lr 0 is frozen, bitwise: θ and m stay (as torch.optim.Adam)
                p.copy_(s0)
                continue
            end = y[-1]
            p.copy_(end)
            if self.injection == "none":
                continue
            m = self.state[p]["exp_avg"]
            u = (s0 - end).div_(r)  # −Δθ / lr
            if self.injection == "hard":
                m.copy_(u)
                continue
            cap = self.momentum_cap * torch.linalg.vector_norm(m)
            norm_u = torch.linalg.vector_norm(u)
            scale = torch.where(norm_u > cap, cap / norm_u.clamp_min(torch.finfo(u.dtype).tiny), 1.0)
            m.mul_(1.0 - self.gamma).add_(u.mul_(scale), alpha=self.gamma)
        return True
