"""The ``rodflow`` command. Parsing imports nothing heavy; each subcommand imports torch when it runs.

    rodflow train --task mlp-digits --optimizer adam --lr 0.01 --steps 400 --out run.h5
    rodflow flow RUN --family rod [--start a --steps n --method adams4] [--out sol.h5]
    rodflow sharpness RUN [--every K] [--out fig.png]
    rodflow fit RUN --family auto --fit lr,beta1
    rodflow plot RUN [SOL ...] --kind sharpness|tracking|loss [--pdf]
    rodflow repro NAME | --list
    rodflow demo [...]                the demo (same as ``make demo``)
    rodflow optimizers                the registered optimizer names

Errors are one line on stderr and exit status 2 (``--debug`` shows the traceback); Ctrl-C keeps what
was recorded, says where it is, and exits with status 130.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["main"]

ROOT = Path(__file__).resolve().parents[1]

#: ``rodflow repro NAME``: script, expected CPU time at its default settings (one thread, measured here)
REPRO: dict[str, tuple[str, str]] = {
    "eos": ("paper_repro/eos/sharpness.py", "≈ 10 min"),
    "tracking": ("paper_repro/rodflow/tracking.py", "hours (≈ 3 h with --data digits: the look-behind stable flows)"),
    "fidelity": ("paper_repro/rodflow/fidelity.py", "≈ 25 min"),
    "three-flows": ("paper_repro/rodflow/three_flows.py", "≈ 10 min"),
    "delay-kernels": ("paper_repro/rodflow/kernels.py", "≈ 15 s"),
    "bursts": ("paper_repro/rodflow/bursts.py", "≈ 1 min (MNIST-5k seed 3, heavy ball)"),
    "phases": ("paper_repro/rodflow/phases.py", "≈ 10 min (MNIST-5k seed 3; --data digits --seeds 1: ≈ 1 min)"),
    "flowadam-matrix-completion": ("paper_repro/flowadam/matrix_completion.py", "≈ 15 min"),
    "flowadam-other-tasks": ("paper_repro/flowadam/other_tasks.py", "≈ 10 min"),
    "flowadam-recommenders": ("paper_repro/flowadam/recommenders.py", "≈ 20 min"),
    "flowadam-well-conditioned": ("paper_repro/flowadam/well_conditioned.py", "≈ 5 min"),
    "vradam-eos": ("paper_repro/vradam/eos.py", "≈ 10 min"),
    "vradam-image-classification": ("paper_repro/vradam/image_classification.py", "≈ 30 min"),
    "vradam-language-model": ("paper_repro/vradam/language_model.py", "≈ 40 min"),
}


class CommandError(Exception):
    """A user error the command reports in one line."""


def _positive_float(text: str) -> float:
    try:
        x = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return x


def _positive_int(text: str) -> int:
    try:
        x = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if x < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return x


def _existing(text: str) -> Path:
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error reported in one line (``rodflow SUB --help`` has the usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message}\n")


def _parser() -> argparse.ArgumentParser:
    from .tasks import TASKS

    p = _Parser(prog="rodflow", description="Continuous-time dynamics of Adam-family optimizers.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    p.add_argument("--debug", action="store_true", help="show the traceback of an error")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--threads", type=_positive_int, default=1, help="torch threads (default 1: small problems)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    t = sub.add_parser("train", help="run an optimizer on a task and record its trajectory")
    t.add_argument("--task", choices=list(TASKS), default="mlp-digits")
    t.add_argument("--n", type=_positive_int, default=None, help="examples (default: the task's)")
    t.add_argument("--optimizer", default="adam", help="a registered name (`rodflow optimizers` lists them)")
    t.add_argument("--lr", type=_positive_float, default=None, help="learning rate (default: the spec's)")
    t.add_argument("--betas", type=float, nargs=2, default=None, metavar=("BETA1", "BETA2"))
    t.add_argument("--momentum", type=float, default=None)
    t.add_argument("--steps", type=_positive_int, default=400)
    t.add_argument("--sharpness-every", type=_positive_int, default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", type=Path, default=Path("run.h5"))

    f = sub.add_parser("flow", help="integrate a flow from a recorded run and compare it with the iterates")
    f.add_argument("run", type=_existing)
    f.add_argument("--family", choices=("stable", "rod"), default="rod")
    f.add_argument("--start", type=int, default=None, help="first step (default: the run's first)")
    f.add_argument("--steps", type=_positive_int, default=None)
    f.add_argument("--method", default=None,
                   help="solver (default: adams4 for the rod's delay form, dopri5 for the stable flow)")
    f.add_argument("--rtol", type=_positive_float, default=1e-6)
    f.add_argument("--atol", type=_positive_float, default=1e-9)
    f.add_argument("--out", type=Path, default=None, help="where to save the solution")

    s = sub.add_parser("sharpness", help="sharpness along a recorded run (and its figure)")
    s.add_argument("run", type=_existing)
    s.add_argument("--every", type=_positive_int, default=10)
    s.add_argument("--out", type=Path, default=None, help="the figure (default: next to the run)")

    ft = sub.add_parser("fit", help="fit a flow's hyperparameters to a recorded run")
    ft.add_argument("run", type=_existing)
    ft.add_argument("--family", choices=("stable", "rod", "auto"), default="auto")
    ft.add_argument("--fit", default="lr", help="comma-separated names, e.g. lr,beta1")

    pl = sub.add_parser("plot", help="figures of a run and flow solutions")
    pl.add_argument("run", type=_existing)
    pl.add_argument("solutions", nargs="*", type=_existing)
    pl.add_argument("--kind", choices=("sharpness", "tracking", "loss"), default="loss")
    pl.add_argument("--pdf", action="store_true")
    pl.add_argument("--out", type=Path, default=None)

    r = sub.add_parser("repro", help="run a paper_repro experiment by name")
    r.add_argument("name", nargs="?", choices=list(REPRO))
    r.add_argument("--list", action="store_true", help="the experiments and their expected CPU time")

    sub.add_parser("demo", help="run the demo (options: rodflow demo --help)", add_help=False)
    sub.add_parser("optimizers", help="list the registered optimizers")
    return p


# ---------------------------------------------------------------------- helpers
def _problem_of(traj: Any) -> Any:
    from .tasks import task

    cfg = traj.config
    if "task" not in cfg:
        raise CommandError("the run does not name its task (record it with `rodflow train`)")
    return task(cfg["task"], n=cfg.get("n"), seed=int(cfg.get("seed", 0)))


def _spec_of(traj: Any) -> Any:
    import rodflow

    cfg = traj.config
    if "optimizer" not in cfg:
        raise CommandError("the run does not record its optimizer")
    return rodflow.optimizer(cfg["optimizer"], **cfg.get("hyperparameters", {}))


def _load(path: Path) -> Any:
    from .trajectory import Trajectory

    return Trajectory.load(path)


def _load_solution(path: Path) -> Any:
    from .flows import FlowSolution

    return FlowSolution.load(path)


def _table(rows: list[dict[str, Any]]) -> str:
    cols = list(rows[0])
    width = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    head = "  ".join(c.ljust(width[c]) for c in cols)
    return "\n".join([head, *("  ".join(str(r[c]).ljust(width[c]) for c in cols) for r in rows)])


def _fmt(x: Any) -> str:
    return "—" if x is None else (f"{x:.4g}" if isinstance(x, float) else str(x))


# ---------------------------------------------------------------------- subcommands
def _train(args: argparse.Namespace) -> int:
    import torch

    import rodflow
    from rodflow.tasks import task

    hp: dict[str, Any] = {}
    if args.lr is not None:
        hp["lr"] = args.lr
    if args.betas is not None:
        hp["betas"] = tuple(args.betas)
    if args.momentum is not None:
        hp["momentum"] = args.momentum
    spec = rodflow.optimizer(args.optimizer, **hp)
    torch.manual_seed(args.seed)
    prob = task(args.task, n=args.n, seed=args.seed)
    config = {"task": args.task, "n": prob.info["n"], "seed": args.seed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    # streamed to the file as it runs: Ctrl-C or a kill keeps every flushed record
    traj = rodflow.iterate(spec, prob.loss_fn, prob.theta0, args.steps, sharpness_every=args.sharpness_every,
                           config=config, path=args.out)
    print(f"{args.optimizer} on {args.task} ({prob.dim} parameters): {len(traj)} steps, final loss "
          f"{float(traj.loss[-1]):.4g}; wrote {args.out}")
    return 0


def _flow(args: argparse.Namespace) -> int:
    import rodflow

    traj = _load(args.run)
    prob, spec = _problem_of(traj), _spec_of(traj)
    make = rodflow.rod_flow if args.family == "rod" else rodflow.stable_flow
    start = int(traj.t[0]) if args.start is None else args.start
    sol = make(spec, prob.loss_fn).solve(traj, start=start, steps=args.steps, method=args.method, rtol=args.rtol,
                                         atol=args.atol)
    s = rodflow.compare(traj, sol).summary()
    rows = [{"flow": args.family, "start": start, "pre-EoS mean": _fmt(s["pre_eos_mean_distance"]),
             "EoS mean": _fmt(s["eos_mean_distance"]), "EoS max": _fmt(s["eos_max_distance"]),
             "onset k*": _fmt(s["k_star"]), "grad evals/step": f"{sol.config['grad_evals'] / (len(sol) - 1):.1f}"}]
    print(_table(rows))
    if args.out is not None:
        sol.save(args.out)
        print(f"wrote {args.out}")
    return 0


def _sharpness(args: argparse.Namespace) -> int:
    from . import plot
    from .sharpness import SharpnessTracker

    traj = _load(args.run)
    prob, spec = _problem_of(traj), _spec_of(traj)
    series = traj.sharpness
    if not series:
        tracker = SharpnessTracker(spec, prob.loss_fn)
        for step in traj.t[:: args.every].tolist():
            tracker.record(traj.state(int(step)))
        series = tracker.series()
        traj.sharpness = series
    rows = [{"step": int(k), "λ_max(H)": f"{float(v):.4g}"} for k, v in zip(series["step"], series["sharpness"])]
    print(_table(rows[:: max(1, len(rows) // 10)]))
    fig = plot.sharpness_curve(traj, threshold=spec.threshold, preconditioned="preconditioned_sharpness" in series)
    out = args.out or args.run.with_suffix(".sharpness.png")
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    import rodflow

    if not hasattr(rodflow, "fit_flow") and "fit_flow" not in getattr(rodflow, "__all__", ()):
        raise CommandError("fit: this version of rodflow has no fit_flow")
    traj = _load(args.run)
    prob, spec = _problem_of(traj), _spec_of(traj)
    names = tuple(x.strip() for x in args.fit.split(",") if x.strip())
    res = rodflow.fit_flow(traj, prob.loss_fn, family=args.family, optimizer=spec, fit=names)
    print(res.summary())
    return 0


def _plot(args: argparse.Namespace) -> int:
    from . import plot

    traj = _load(args.run)
    suffix = ".pdf" if args.pdf else ".png"
    out = args.out or args.run.with_suffix(f".{args.kind}{suffix}")
    if args.kind == "loss":
        runs = {"iterates": traj, **{p.stem: _load_solution(p) for p in args.solutions}}
        fig = plot.loss_curves(runs)
    elif args.kind == "sharpness":
        if not traj.sharpness:
            raise CommandError("the run has no sharpness series: record with --sharpness-every or run "
                               "`rodflow sharpness RUN`")
        fig = plot.sharpness_curve(traj, threshold=_spec_of(traj).threshold)
    else:
        import rodflow

        if not args.solutions:
            raise CommandError("tracking: give one or more flow solutions (from `rodflow flow RUN --out SOL`)")
        thr = _spec_of(traj).threshold
        comps = {p.stem: rodflow.compare(traj, _load_solution(p), threshold=thr) for p in args.solutions}
        fig = plot.tracking(traj, comps)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


def _repro(args: argparse.Namespace, rest: list[str]) -> int:
    if args.list or args.name is None:
        print(_table([{"name": k, "script": v[0], "expected CPU time": v[1]} for k, v in REPRO.items()]))
        return 0
    import runpy

    script = ROOT / REPRO[args.name][0]
    if not script.exists():
        raise CommandError(f"repro: {script} not found (run from a checkout of the repository)")
    sys.argv = [str(script), *rest]
    sys.path.insert(0, str(script.parent))
    try:
        runpy.run_path(str(script), run_name="__main__")
    except SystemExit as done:
        return int(done.code or 0)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, rest = parser.parse_known_args(argv)
    if args.version:
        from importlib.metadata import version

        print(version("rodflow"))
        return 0
    if args.command == "demo":
        from .demo import main as demo_main

        return demo_main(rest)
    if rest and args.command != "repro":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "optimizers":
        from .optimizers import OPTIMIZERS

        print("\n".join(OPTIMIZERS))
        return 0
    if args.command == "repro":
        return _repro(args, rest)
    if args.quiet:
        import os

        os.environ["RODFLOW_PROGRESS"] = "0"
    run = {"train": _train, "flow": _flow, "sharpness": _sharpness, "fit": _fit, "plot": _plot}[args.command]
    from .threads import num_threads

    try:
        with num_threads(args.threads):
            return run(args)
    except KeyboardInterrupt:
        out = getattr(args, "out", None)
        where = f"; what was recorded is in {out}" if out is not None and Path(out).exists() else ""
        print(f"rodflow {args.command}: interrupted{where}", file=sys.stderr)
        return 130
    except Exception as err:  # one line for the user; --debug for the traceback
        if args.debug:
            raise
        kind = "" if isinstance(err, CommandError | ValueError | TypeError | OSError) else f"{type(err).__name__}: "
        print(f"rodflow {args.command}: error: {kind}{err}".splitlines()[0], file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
