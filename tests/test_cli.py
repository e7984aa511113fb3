"""The ``rodflow`` command: its import path stays free of torch; subcommands and their errors."""

from __future__ import annotations

import subprocess
import sys


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_importing_the_cli_and_the_package_does_not_import_torch():
    assert _python("import sys, rodflow, rodflow.cli; print('torch' in sys.modules)") == "False"


def test_help_does_not_import_torch():
    code = ("import sys, contextlib, io\nfrom rodflow.cli import main\nbuf = io.StringIO()\n"
            "with contextlib.redirect_stdout(buf), contextlib.suppress(SystemExit):\n    main(['--help'])\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stderr


def test_public_functions_are_not_shadowed_by_their_submodules():
    """``rodflow.integrate``/``compare``/``sharpness`` stay the functions after their modules load."""
    out = _python("import rodflow, rodflow.flows, rodflow.compare, rodflow.sharpness\n"
                  "print(all(callable(f) and not isinstance(f, type(rodflow)) for f in "
                  "(rodflow.integrate, rodflow.compare, rodflow.sharpness)))")
    assert out == "True"


def _cli(*argv: str) -> subprocess.CompletedProcess:
    """``rodflow ARGV`` in this process (a subprocess per call would import torch each time)."""
    import contextlib
    import io

    from rodflow.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as done:
            code = done.code if isinstance(done.code, int) else 1
        except Exception:  # --debug re-raises: as the command line would show it
            import traceback

            traceback.print_exc(file=err)
            code = 1
    return subprocess.CompletedProcess(argv, code, out.getvalue(), err.getvalue())


def test_train_flow_sharpness_plot_on_a_tiny_run(tmp_path):
    run = tmp_path / "run.h5"
    out = _cli("train", "--steps", "12", "--lr", "0.01", "--sharpness-every", "4", "--out", str(run))
    assert out.returncode == 0, out.stderr
    assert "wrote" in out.stdout and run.exists()
    out = _cli("flow", str(run), "--family", "stable", "--start", "2", "--out", str(tmp_path / "sol.h5"))
    assert out.returncode == 0, out.stderr
    assert "pre-EoS mean" in out.stdout and "grad evals/step" in out.stdout
    out = _cli("plot", str(run), str(tmp_path / "sol.h5"), "--kind", "tracking")
    assert out.returncode == 0 and (tmp_path / "run.tracking.png").exists(), out.stderr
    out = _cli("sharpness", str(run), "--out", str(tmp_path / "s.png"))
    assert out.returncode == 0 and (tmp_path / "s.png").stat().st_size > 1000, out.stderr
    out = _cli("plot", str(run), "--kind", "loss", "--pdf")
    assert out.returncode == 0 and (tmp_path / "run.loss.pdf").exists(), out.stderr


def test_bad_input_is_one_line_and_a_nonzero_exit(tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"not a trajectory")
    for argv, needle in [(["train", "--optimizer", "adamw", "--steps", "2", "--out", str(tmp_path / "r.pt")], "adamw"),
                         (["train", "--lr", "-1"], "--lr"),
                         (["train", "--lr", "0"], "--lr"),
                         (["flow", str(tmp_path / "missing.h5")], "no such file"),
                         (["flow", str(tmp_path / "junk.pt")], "error"),
                         (["repro", "nope"], "invalid choice")]:
        out = _cli(*argv)
        assert out.returncode != 0, argv
        lines = out.stderr.strip().splitlines()
        assert len(lines) == 1 and needle in lines[0] and "Traceback" not in out.stderr, (argv, out.stderr)
    out = _cli("--debug", "flow", str(tmp_path / "junk.pt"))
    assert out.returncode != 0 and "Traceback" in out.stderr


def test_repro_list_names_each_script_with_its_time():
    from rodflow.cli import REPRO, ROOT

    out = _cli("repro", "--list")
    assert out.returncode == 0
    for name, (script, _) in REPRO.items():
        assert name in out.stdout and (ROOT / script).exists(), script


def test_every_subcommand_has_help():
    for sub in ("train", "flow", "sharpness", "fit", "plot", "repro"):
        out = _cli(sub, "--help")
        assert out.returncode == 0 and "usage: rodflow " + sub in out.stdout, sub


def test_ctrl_c_keeps_the_record_and_exits_130(tmp_path, monkeypatch):
    """An interrupt during `rodflow train` (raised by iterate after it flushed) exits 130 naming the file."""
    import rodflow

    real = rodflow.iterate

    def interrupted(*args, **kwargs):
        kwargs["steps"] = args[3] if len(args) > 3 else kwargs["steps"]
        real(*args[:3], 3, **{k: v for k, v in kwargs.items() if k != "steps"})  # what was recorded is on disk
        raise KeyboardInterrupt

    monkeypatch.setattr(rodflow, "iterate", interrupted)
    out = _cli("train", "--steps", "50", "--out", str(tmp_path / "run.h5"))
    assert out.returncode == 130 and "interrupted" in out.stderr and "run.h5" in out.stderr
    assert len(rodflow.Trajectory.load(tmp_path / "run.h5")) == 4
