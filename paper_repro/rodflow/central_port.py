"""rodflow's central flow beside the published JAX port (alex-damian/central_flows_jax) on one digits GD run.

The same problem on both sides: the tanh MLP 64-32-10 of ``tracking.make_problem("digits", n, 32, seed)``
(MSE ½‖f(x) − onehot(y)‖² averaged over examples, float64). The torch side exports the data, the flat
parameter layout and the flow's start θ to an ``.npz``; the port side (this file with ``--port-side``,
run by a separate Python that has jax, cvxpy and cvxopt, never a dependency of rodflow) rebuilds the
identical loss in ``jax.numpy``, checks it against the exported loss and gradient at the start, and runs
the port's ``Flow.central`` (Euler substeps ``1/substeps``, one call = one optimizer step, i.e. time in
steps as in rodflow; its preconditioner for GD is ``P = 1/η``, its threshold 2 on ``P⁻¹H``).

Reported: ``max_t ‖θ_ours(t) − θ_port(t)‖`` (and relative to ‖θ‖), each flow's distance to the GD
iterates (``rodflow.compare``: before and during EoS), and the derivatives per modelled step (HVPs and
third derivatives). The port's HVP count is its own counter ``counts["d2L"]`` = ``k(4·iters + 1) + 1``
per LOBPCG solve, which is what ``jax.experimental.sparse.linalg.lobpcg_standard`` evaluates (one
probe, ``A(X)`` once, then ``A([X, P, R])`` and ``A(X)`` per iteration); its third derivatives are
``k(k + 1)/2`` per substep (every pair of tracked vectors, active or not).

Usage (the port's source extracted from its git mirror into ``--port-src``)::

    python -m venv .jaxenv && .jaxenv/bin/pip install "jax[cpu]" cvxpy cvxopt jaxtyping
    OMP_NUM_THREADS=1 PYTHONPATH=. python paper_repro/rodflow/central_port.py --steps 200 \\
        --jax-python .jaxenv/bin/python --port-src central_flows_jax/src

``--sdcp-check`` records the complementarity problems ours solves and solves them with the port's
``solve_sdcp`` as well (X difference, KKT residuals of both). ``--report`` writes the markdown from the
JSON files. ``--weighting port`` runs ours with the port's off-diagonal weighting (every ``T_{i≠j}`` divided by √2,
see ``rodflow/flows/central.py``) as a diagnostic, by wrapping :func:`rodflow.flows.central.third_derivatives`
inside this script only.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------------------------------------- port side
def port_side(inp: Path, out: Path, port_src: Path) -> None:
    """Run the port's central flow from the exported start; write its trajectory and counts."""
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false")
    import jax  # type: ignore[import-not-found]

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp  # type: ignore[import-not-found]

    sys.path.insert(0, str(port_src))
    import central_flows_jax.flows as port_flows  # type: ignore[import-not-found]
    from central_flows_jax import Flow, GradientDescent  # type: ignore[import-not-found]

    d = np.load(inp)
    if float(d["port_eig_tol"]) > 0:  # diagnostic: the port's LOBPCG at another tolerance than its 1e-5
        compute_eigs = port_flows.compute_eigs
        tol = float(d["port_eig_tol"])

        def eigs_at_tol(*a: Any, **kw: Any) -> Any:
            return compute_eigs(*a, **{**kw, "tol": tol})

        port_flows.compute_eigs = eigs_at_tol
    x, y = jnp.asarray(d["x"]), jnp.asarray(d["y"])
    names = [str(s) for s in d["names"]]
    shapes = [tuple(int(v) for v in s if v > 0) for s in d["shapes"]]
    sizes = [math.prod(s) for s in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)])
    params = dict(zip(names, range(len(names))))
    layers = sorted({n.split(".")[0] for n in names}, key=int)

    def loss_fn(w: Any) -> Any:
        def p(name: str) -> Any:
            i = params[name]
            return w[offsets[i]:offsets[i + 1]].reshape(shapes[i])

        h = x
        for li, layer in enumerate(layers):
            h = h @ p(f"{layer}.weight").T + p(f"{layer}.bias")
            if li < len(layers) - 1:
                h = jnp.tanh(h)
        return 0.5 * jnp.mean(jnp.sum((h - y) ** 2, axis=-1))

    w = jnp.asarray(d["w0"])
    l0, g0 = jax.value_and_grad(loss_fn)(w)
    check = {"loss_rel_err": float(abs(l0 - d["loss0"]) / abs(d["loss0"])),
             "grad_rel_err": float(jnp.linalg.norm(g0 - d["grad0"]) / jnp.linalg.norm(d["grad0"]))}
    if check["loss_rel_err"] > 1e-12 or check["grad_rel_err"] > 1e-10:
        raise SystemExit(f"the JAX loss is not torch's: {check}")
    opt = GradientDescent(lr=float(d["lr"]))
    state = opt.init(w)
    flow = Flow(loss_fn, opt)
    k, steps, substeps = int(d["k"]), int(d["steps"]), int(d["substeps"])
    u = jax.random.normal(jax.random.PRNGKey(int(d["seed"])), (w.size, k), dtype=w.dtype)
    thetas, losses, preds, eigs, d2l, d3l, xs = [np.asarray(w)], [], [], [], [], [], []
    t0 = time.perf_counter()
    for step in range(steps):
        w_now = w
        (w, state, u), aux = flow.central(w, state, u, substeps=substeps)
        # the predicted loss at the step's start (its first substep's X) is the port's L + ½⟨H, X⟩ there
        lam = np.asarray(aux["eigs"])
        xm = np.asarray(aux["X"])
        losses.append(float(aux["L"]))
        preds.append(float(aux["L"]) + 0.5 * float(np.sum(lam * np.diag(xm))))
        eigs.append(lam)
        xs.append(xm)
        d2l.append(int(aux["counts"]["d2L"]))
        d3l.append(int(aux["counts"]["d3L"]))
        thetas.append(np.asarray(w))
        if not np.isfinite(thetas[-1]).all():
            raise SystemExit(f"the port's flow is not finite at step {step + 1}")
        if step % 10 == 0:
            print(f"port step {step}: λ_max = {lam.max():.5f}, ‖Δw‖ = {float(jnp.linalg.norm(w - w_now)):.4g}, "
                  f"d2L = {d2l[-1]}, {time.perf_counter() - t0:.1f} s", flush=True)
    np.savez(out, theta=np.stack(thetas), loss=np.array(losses), predicted_loss=np.array(preds),
             eigs=np.stack(eigs), X=np.stack(xs), d2L=np.array(d2l), d3L=np.array(d3l),
             seconds=time.perf_counter() - t0, check=json.dumps(check), jax_version=jax.__version__)


# --------------------------------------------------------------------------------------------- torch side
def port_weighting() -> None:
    """Diagnostic: make ours use the port's off-diagonal weight (T_{i≠j} / √2, i.e. √2 where the paper has 2)."""
    import rodflow.flows.central as central

    orig = central.third_derivatives

    def scaled(loss_fn: Any, theta: Any, vecs: Any, pairs: list[tuple[int, int]]) -> Any:
        loss, g, third = orig(loss_fn, theta, vecs, pairs)
        for r, (i, j) in enumerate(pairs):
            if i != j:
                third[r] = third[r] / math.sqrt(2.0)
        return loss, g, third

    central.third_derivatives = scaled  # type: ignore[assignment]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port-side", nargs=2, type=Path, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--port-src", type=Path, default=Path(os.environ.get("CENTRAL_FLOWS_JAX_SRC", "central_flows_jax/src")),
                   help="folder holding the port's package central_flows_jax (default: $CENTRAL_FLOWS_JAX_SRC)")
    p.add_argument("--jax-python", default=os.environ.get("JAX_PYTHON", ".jaxenv/bin/python"),
                   help="a Python with jax, cvxpy, cvxopt (default: $JAX_PYTHON)")
    p.add_argument("--n", type=int, default=256)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=0.4)
    p.add_argument("--start", type=int, default=40)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--substeps", type=int, default=4)
    p.add_argument("--k", type=int, default=3, help="eigenvectors ours tracks (at most)")
    p.add_argument("--port-k", type=int, default=5, help="eigenvectors the port tracks (its example's 5)")
    p.add_argument("--port-eig-tol", type=float, default=None,
                   help="diagnostic: the port's LOBPCG tolerance (its default: 1e-5)")
    p.add_argument("--eig-method", default="auto", help="ours: rodflow.sharpness method")
    p.add_argument("--eig-tol", type=float, default=None, help="ours: eigensolver tolerance (default: rodflow's)")
    p.add_argument("--weighting", choices=("paper", "port"), default="paper",
                   help="ours with the paper's off-diagonal weight 2 or (diagnostic) the port's √2")
    p.add_argument("--port-npz", type=Path, default=None, help="reuse a port run instead of running it")
    p.add_argument("--name", default="digits")
    p.add_argument("--sdcp-side", nargs=2, type=Path, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    p.add_argument("--sdcp-check", action="store_true",
                   help="only compare the two complementarity solvers on the problems ours meets from --start")
    p.add_argument("--report", action="store_true",
                   help="only write results/central_port_<name>.md from central_port_<name>[_*].json")
    p.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()),
                   help="scratch folder for the exchange files and the cached iterates")
    p.add_argument("--results", type=Path, default=ROOT / "paper_repro" / "rodflow" / "results")
    args = p.parse_args()
    if args.port_side is not None:
        port_side(args.port_side[0], args.port_side[1], args.port_src)
        return
    if args.report:
        report(args.results, args.name)
        return
    if args.sdcp_side is not None:
        sdcp_side(args.sdcp_side[0], args.sdcp_side[1], args.port_src)
        return

    import torch

    import rodflow

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from tracking import make_problem  # the sibling script's problem

    torch.set_num_threads(1)
    if args.weighting == "port":
        port_weighting()
    prob = make_problem("digits", args.n, args.width, args.seed)
    spec = rodflow.optimizer("gd", lr=args.lr)
    tmp = args.work / f"central_port_{args.name}"
    tmp.mkdir(parents=True, exist_ok=True)
    cache = tmp / f"iterates_n{args.n}_w{args.width}_s{args.seed}_lr{args.lr:g}_{args.start + args.steps}.h5"
    t0 = time.perf_counter()
    if cache.exists():
        traj = rodflow.Trajectory.load(cache)
    else:
        traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, args.start + args.steps, sharpness_every=5)
        traj.save(cache)
    t_iter = time.perf_counter() - t0

    flow = rodflow.central_flow(spec, prob.loss_fn, k=args.k, substeps=args.substeps,
                                eig_method=args.eig_method, eig_tol=args.eig_tol)
    if args.sdcp_check:
        sdcp_check(args, flow, traj)
        return
    (w0,) = flow.initial(traj, args.start)
    inp = tmp / "in.npz"
    module = prob.info["module"]
    names = [n for n, _ in module.named_parameters()]
    shapes = np.zeros((len(names), 4), dtype=np.int64)
    for i, n in enumerate(names):
        s = prob.info["shapes"][n]
        shapes[i, :len(s)] = s
    flat = torch.cat([q.detach().reshape(-1) for q in module.parameters()])
    if not torch.equal(flat, prob.theta0):
        raise SystemExit("the flat layout is not named_parameters order")
    loss0, grad0 = rodflow.derivatives.value_and_grad(prob.loss_fn)(w0)
    # make_problem's data (the port side checks its loss and gradient against torch's at w0)
    inputs, labels = rodflow.problems.digits(n=args.n, seed=args.seed)
    targets = rodflow.problems.one_hot(labels, 10)
    np.savez(inp, x=inputs.numpy(), y=targets.numpy(), names=np.array(names), shapes=shapes,
             w0=w0.numpy(), loss0=float(loss0), grad0=grad0.numpy(), lr=args.lr, k=args.port_k,
             steps=args.steps, substeps=args.substeps, seed=args.seed, port_eig_tol=args.port_eig_tol or 0.0)

    port_npz = args.port_npz
    t_port = float("nan")
    if port_npz is None:
        port_npz = tmp / "port.npz"
        cmd = [args.jax_python, str(Path(__file__).resolve()), "--port-side", str(inp), str(port_npz),
               "--port-src", str(args.port_src)]
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
        t_port = time.perf_counter() - t0
    port = np.load(port_npz)

    # per-evaluation HVP counts (instrumentation of this script: the flow keeps only the total)
    hvp_after: list[int] = []
    eigen = flow._eigen

    def counted(w: Any, pp: Any) -> Any:
        res = eigen(w, pp)
        hvp_after.append(flow.n_hvp)
        return res

    flow._eigen = counted  # type: ignore[method-assign]
    t0 = time.perf_counter()
    ours = flow.solve(traj, start=args.start, steps=args.steps)
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    stable = rodflow.stable_flow(spec, prob.loss_fn, order=2).solve(traj, start=args.start, steps=args.steps,
                                                                     rtol=1e-5, atol=1e-8)
    t_stable = time.perf_counter() - t0

    theta_port = torch.as_tensor(port["theta"], dtype=ours.theta.dtype)
    if theta_port.shape != ours.theta.shape:
        raise SystemExit(f"port trajectory {tuple(theta_port.shape)} vs ours {tuple(ours.theta.shape)}")
    loss_port = torch.stack([prob.loss_fn(th) for th in theta_port]).detach()
    port_sol = replace(ours, theta=theta_port, centre=theta_port, loss=loss_port, config={**ours.config, "flow": "port"})
    diff = torch.linalg.vector_norm(ours.theta - theta_port, dim=1)
    rel = diff / torch.linalg.vector_norm(theta_port, dim=1)
    thr = spec.threshold
    cmp = {name: rodflow.compare(traj, sol, threshold=thr).summary()
           for name, sol in (("stable", stable), ("ours", ours), ("port", port_sol))}
    lam_port = port["eigs"]  # [steps, k] eigenvalues of ηH at each step's start
    active_port = (lam_port >= 0.9 * 2.0).sum(1)
    active_ours = np.array(ours.config["active"])
    n = args.steps
    # where the √2 weighting could matter: eigenvalues at the edge and the rank of X
    edge_port = (lam_port >= 2.0 - 1e-3).sum(1)

    def rank(xm: np.ndarray) -> int:
        ev = np.linalg.eigvalsh(0.5 * (xm + xm.T)) if xm.size else np.zeros(0)
        return int((ev > 1e-6 * max(1e-300, float(np.abs(ev).max(initial=0.0)))).sum()) if ev.size else 0

    rank_port = np.array([rank(xm) for xm in port["X"]])
    log = flow._log
    rank_ours = np.array([rank(aux["X"].numpy()) for _, aux in log])
    offdiag_ours = max((float(np.abs(aux["X"].numpy() - np.diag(np.diag(aux["X"].numpy()))).max(initial=0.0))
                        / max(1e-300, float(np.abs(aux["X"].numpy()).max(initial=0.0))) for _, aux in log), default=0.0)
    def max_corr(xm: np.ndarray) -> float:
        """``max_{i<j} |X_ij| / √(X_ii X_jj)`` over the entries with ``X_ii, X_jj ≥ 1e-3·max X_ii``: near 0
        when X is (close to) diagonal in the eigenbasis, 1 where it is rank-deficient off its diagonal faces."""
        keep = np.flatnonzero(np.diag(xm) >= 1e-3 * float(np.diag(xm).max()))
        if len(keep) < 2:
            return 0.0
        sub = xm[np.ix_(keep, keep)]
        dg = np.sqrt(np.diag(sub))
        return float(np.max((np.abs(sub) / np.outer(dg, dg))[np.triu_indices(len(keep), 1)]))

    big = [aux for _, aux in log if aux["X"].numel() and float(aux["X"].abs().max()) > 1e-12]
    corr_ours = max((max_corr(aux["X"].numpy()) for aux in big if len(aux["X"]) > 1), default=0.0)
    edge_ours = np.array([int((aux["eigenvalues"] >= 2.0 - 1e-3).sum()) for _, aux in log])
    first_two = next((int(tt) for (tt, _), e in zip(log, edge_ours) if e >= 2), None)
    k_star = cmp["ours"]["k_star"]
    t_log = np.array([tt for tt, _ in log])
    cum = np.array(hvp_after, dtype=float)
    per_eval = np.diff(np.concatenate([[0.0], cum]))

    def ours_hvps(a: float, b: float) -> float:
        sel = (t_log >= a) & (t_log < b)
        return float(per_eval[sel].sum() / max(1.0, b - a))

    steps_t = np.arange(args.start, args.start + n)
    eos_sel = steps_t >= (k_star if k_star is not None else np.inf)
    phases = {"pre_eos": (args.start, k_star if k_star is not None else args.start + n),
              "eos": (k_star if k_star is not None else args.start + n, args.start + n)}
    res: dict[str, Any] = {
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "port_side"},
        "max_dtheta": float(diff.max()), "argmax_step": int(ours.t[int(diff.argmax())]),
        "max_rel_dtheta": float(rel.max()), "final_dtheta": float(diff[-1]),
        "dtheta_every10": {int(ours.t[i]): float(diff[i]) for i in range(0, len(diff), 10)},
        "theta_norm": float(torch.linalg.vector_norm(theta_port[-1])),
        "compare": cmp,
        "ours_hvps_per_step": ours.config["hvps_per_step"], "ours_thirds_per_step": ours.config["thirds_per_step"],
        "ours_grads_per_step": ours.config["grads_per_step"],
        "port_hvps_per_step": float(port["d2L"].sum() / n), "port_thirds_per_step": float(port["d3L"].sum() / n),
        "port_grads_per_step": float(args.substeps),
        "hvps_per_step_by_phase": {
            ph: {"ours": ours_hvps(a, b) if b > a else float("nan"),
                 "port": float(port["d2L"][(steps_t >= a) & (steps_t < b)].mean()) if b > a else float("nan")}
            for ph, (a, b) in phases.items()},
        "thirds_per_step_eos": {
            "ours": float(np.mean([len(aux["X"]) * (len(aux["X"]) + 1) / 2 for tt, aux in log if tt >= phases["eos"][0]]
                                  or [float("nan")]) * args.substeps),
            "port": float(port["d3L"][eos_sel].mean()) if eos_sel.any() else float("nan")},
        "edge_eigs_max_port": int(edge_port.max()), "x_rank_max_port": int(rank_port.max()),
        "x_rank_max_ours": int(rank_ours.max()), "x_corr_max_ours": corr_ours,
        "ours_evals_edge_ge2": int((edge_ours >= 2).sum()), "ours_evals": len(log), "first_step_two_at_edge": first_two,
        "port_steps_edge_ge2": int((edge_port >= 2).sum()), "x_offdiag_rel_max_ours": offdiag_ours,
        "ours_active_max": int(active_ours.max()), "ours_active_steps_ge2": int((active_ours >= 2).sum()),
        "port_active_max": int(active_port.max()), "port_active_steps_ge2": int((active_port >= 2).sum()),
        "port_top_eig_mean": float(lam_port.max(1)[1:].mean()),
        "ours_top_eig_mean": float(np.mean(ours.config["preconditioned_sharpness"][1:])),
        "port_eigs_last": [float(v) for v in np.sort(lam_port[-1])[::-1]],
        # the port's X is averaged over a step's substeps, ours is the step start's: compare where X settled
        "pred_loss_max_rel_diff_settled": float(np.max(
            (np.abs(ours.predicted_loss[:-1].numpy() - port["predicted_loss"]) / np.abs(port["predicted_loss"]))
            [steps_t >= (k_star if k_star is not None else args.start) + 5], initial=0.0)),
        "port_check": json.loads(str(port["check"])), "jax_version": str(port["jax_version"]),
        "seconds": {"iterates": t_iter, "ours": t_ours, "stable": t_stable, "port": t_port,
                    "port_flow_only": float(port["seconds"])},
        "k_star": k_star,
    }
    out = args.results / f"central_port_{args.name}.json"
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def sdcp_side(inp: Path, out: Path, port_src: Path) -> None:
    """Solve the recorded complementarity problems with the port's ``solve_sdcp`` (cvxpy + CVXOPT)."""
    sys.path.insert(0, str(port_src))
    from central_flows_jax.sdcp import solve_sdcp as port_solve  # type: ignore[import-not-found]

    d = np.load(inp, allow_pickle=True)
    xs = [np.asarray(port_solve(m0, b)) for m0, b in zip(d["m0"], d["b"])]
    np.savez(out, X=np.array(xs, dtype=object))


def sdcp_check(args: argparse.Namespace, flow: Any, traj: Any) -> None:
    """Record the SDCPs ours solves from ``--start`` for ``--steps`` steps, solve them with the port's solver too."""
    import rodflow.flows.central as central

    rec: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    orig = central.solve_sdcp

    def recording(m0: np.ndarray, b: np.ndarray, **kw: Any) -> np.ndarray:
        x = orig(m0, b, **kw)
        if m0.shape[0] >= 1 and np.linalg.eigvalsh(0.5 * (m0 + m0.T)).min() < 0:
            rec.append((m0.copy(), b.copy(), x.copy()))
        return x

    central.solve_sdcp = recording  # type: ignore[assignment]
    flow.solve(traj, start=args.start, steps=args.steps)
    tmp = args.work / f"central_port_{args.name}"
    tmp.mkdir(parents=True, exist_ok=True)
    m0s = np.empty(len(rec), dtype=object)
    bs = np.empty(len(rec), dtype=object)
    for i, (m0, b, _) in enumerate(rec):
        m0s[i], bs[i] = m0, b
    np.savez(tmp / "sdcp_in.npz", m0=m0s, b=bs)
    subprocess.run([args.jax_python, str(Path(__file__).resolve()), "--sdcp-side", str(tmp / "sdcp_in.npz"),
                    str(tmp / "sdcp_out.npz"), "--port-src", str(args.port_src)], check=True)
    xp = np.load(tmp / "sdcp_out.npz", allow_pickle=True)["X"]
    rel, gap_ours, gap_port, sizes = [], [], [], []
    for (m0, b, xo), xq in zip(rec, xp):
        xq = np.asarray(xq, dtype=np.float64)
        rel.append(float(np.linalg.norm(xo - xq) / max(1e-300, float(np.linalg.norm(xq)))))
        sizes.append(m0.shape[0])
        for x, gaps in ((xo, gap_ours), (xq, gap_port)):
            r = central.sdcp_residuals(m0, b, x)
            scale = float(np.abs(m0).max()) * max(1e-300, float(np.abs(x).max()))
            gaps.append(max(-r["min_eig_x"] / max(1e-300, float(np.abs(x).max())), abs(r["complementarity"]) / scale,
                            -r["min_eig_y"] / float(np.abs(m0).max())))
    res = {"config": {"start": args.start, "steps": args.steps, "k": args.k, "eig_tol": args.eig_tol},
           "problems": len(rec), "sizes": {str(a): sizes.count(a) for a in sorted(set(sizes))},
           "max_rel_x_diff": max(rel, default=float("nan")), "median_rel_x_diff": float(np.median(rel)) if rel else float("nan"),
           "max_rel_x_diff_by_size": {str(a): max(r for r, z in zip(rel, sizes) if z == a) for a in sorted(set(sizes))},
           "max_kkt_ours": max(gap_ours, default=float("nan")), "max_kkt_port": max(gap_port, default=float("nan"))}
    out = args.results / f"central_port_{args.name}.json"
    out.write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


def _e(x: float | None) -> str:
    return "–" if x is None or x != x else f"{x:.2e}"


def _f(x: float | None, nd: int = 4) -> str:
    return "–" if x is None or x != x else f"{x:.{nd}f}"


def report(results: Path, name: str) -> None:
    """``central_port_<name>.md``: the main run's table and one row per variant (``central_port_<name>_<tag>.json``)."""
    main_res = json.loads((results / f"central_port_{name}.json").read_text())
    variants = {q.stem.removeprefix(f"central_port_{name}_"): json.loads(q.read_text())
                for q in sorted(results.glob(f"central_port_{name}_*.json"))}
    c = main_res["config"]
    cmp = main_res["compare"]
    ph = main_res["hvps_per_step_by_phase"]
    steps = c["steps"]
    lines = [
        f"# rodflow's central flow beside the JAX port (alex-damian/central_flows_jax), {name}",
        "",
        f"GD lr {c['lr']} on the tanh MLP 64-{c['width']}-10 of `tracking.make_problem(\"digits\", {c['n']}, "
        f"{c['width']}, {c['seed']})` (2410 parameters, MSE on one-hot, float64); both flows from the same "
        f"θ (rodflow's start: the three-point centre of the iterates at step {c['start']}) for {steps} steps "
        f"(to step {c['start'] + steps}); the iterates reach λ_max(ηH) = 2 at k* = {main_res['k_star']}. "
        f"Euler, {c['substeps']} substeps per step on both sides (time in optimizer steps on both). "
        f"rodflow: `central_flow(optimizer(\"gd\", lr={c['lr']}), loss, k={c['k']}, substeps={c['substeps']})`, "
        f"defaults otherwise (eigensolver {c['eig_method']}, tolerance {c['eig_tol'] or 'default'}, margin 0.1, "
        f"adaptive k); port: `Flow(loss, GradientDescent(lr={c['lr']})).central(w, state, U, substeps={c['substeps']})` "
        f"with {c['port_k']} tracked vectors (its example's; random normal start, seed {c['seed']}), jax "
        f"{main_res['jax_version']} on CPU, float64. The JAX loss equals torch's at the start to "
        f"{main_res['port_check']['loss_rel_err']:.0e} (loss) / {main_res['port_check']['grad_rel_err']:.0e} (gradient, relative).",
        "",
        "Command (from the repository root; the port's source extracted from its git mirror):",
        "",
        "```",
        f"OMP_NUM_THREADS=1 PYTHONPATH=. python paper_repro/rodflow/central_port.py --start {c['start']} "
        f"--steps {steps} --name {name} --jax-python .jaxenv/bin/python --port-src central_flows_jax/src",
        f"python paper_repro/rodflow/central_port.py --name {name} --report",
        "```",
        "",
        "## Agreement and cost",
        "",
        "| | ours | port |",
        "|---|---|---|",
        f"| max_t ‖θ_ours − θ_port‖ (relative to ‖θ‖) | {_e(main_res['max_dtheta'])} at step {main_res['argmax_step']} "
        f"({_e(main_res['max_rel_dtheta'])}) | |",
        f"| ‖θ‖ at the end | {_f(main_res['theta_norm'], 3)} | |",
        f"| distance to the iterates before EoS, mean | {_f(cmp['ours']['pre_eos_mean_distance'], 6)} | "
        f"{_f(cmp['port']['pre_eos_mean_distance'], 6)} |",
        f"| during EoS, mean (max) | {_f(cmp['ours']['eos_mean_distance'])} ({_f(cmp['ours']['eos_max_distance'])}) | "
        f"{_f(cmp['port']['eos_mean_distance'])} ({_f(cmp['port']['eos_max_distance'])}) |",
        f"| stable flow (dopri5) during EoS, mean (max) | {_f(cmp['stable']['eos_mean_distance'])} "
        f"({_f(cmp['stable']['eos_max_distance'])}) | |",
        f"| HVPs per step, whole run | {main_res['ours_hvps_per_step']:.1f} | {main_res['port_hvps_per_step']:.1f} |",
        f"| HVPs per step before k* / during EoS | {ph['pre_eos']['ours']:.1f} / {ph['eos']['ours']:.1f} | "
        f"{ph['pre_eos']['port']:.1f} / {ph['eos']['port']:.1f} |",
        f"| third derivatives per step, whole run / during EoS | {main_res['ours_thirds_per_step']:.1f} / "
        f"{main_res['thirds_per_step_eos']['ours']:.1f} | {main_res['port_thirds_per_step']:.1f} / "
        f"{main_res['thirds_per_step_eos']['port']:.1f} |",
        f"| gradients per step | {main_res['ours_grads_per_step']:.2f} | {main_res['port_grads_per_step']:.2f} |",
        f"| eigenvalues at the edge (λ ≥ 2 − 1e-3), most at once | – | {main_res['edge_eigs_max_port']} "
        f"({main_res['port_steps_edge_ge2']} steps with ≥ 2) |",
        f"| rank of X, most | {main_res['x_rank_max_ours']} | {main_res['x_rank_max_port']} |",
        f"| max_(i<j) X_ij/√(X_ii X_jj) | {_f(main_res['x_corr_max_ours'], 3)} | |",
        f"| wall time of the flow (one thread) | {main_res['seconds']['ours']:.0f} s | "
        f"{main_res['seconds']['port_flow_only']:.0f} s |",
        "",
        f"Predicted loss L(W) + ½⟨H, Σ⟩ five or more steps after k*: within "
        f"{100 * main_res['pred_loss_max_rel_diff_settled']:.2f} % of the port's (the port's X is the mean over a "
        "step's substeps, ours the step start's).",
        "",
    ]
    if variants:
        lines += ["## Variants", "",
                  "| variant | max ‖Δθ‖ | relative | ours HVPs per step (EoS) | port HVPs per step (EoS) | "
                  "ours ∇³ per step | ours EoS mean distance |",
                  "|---|---|---|---|---|---|---|"]
        for tag, r in [("default", main_res), *variants.items()]:
            pp = r["hvps_per_step_by_phase"]
            lines.append(f"| {tag} | {_e(r['max_dtheta'])} | {_e(r['max_rel_dtheta'])} | {r['ours_hvps_per_step']:.1f} "
                         f"({pp['eos']['ours']:.1f}) | {r['port_hvps_per_step']:.1f} ({pp['eos']['port']:.1f}) | "
                         f"{r['ours_thirds_per_step']:.1f} | {_f(r['compare']['ours']['eos_mean_distance'])} |")
        lines += ["", "Each variant is the main command with (the port run reused with `--port-npz` where the port's "
                  "settings are unchanged):", ""]
        for tag, r in variants.items():
            flags = [f"--{k.replace('_', '-')} {v}" for k, v in r["config"].items()
                     if k not in ("name", "port_npz", "results", "work", "report") and v != c.get(k)]
            lines.append(f"* {tag}: `{' '.join(flags) or '(none)'}`")
        lines.append("")
    notes = results / f"central_port_{name}.notes.md"
    if notes.exists():
        lines += [notes.read_text().rstrip(), ""]
    (results / f"central_port_{name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
