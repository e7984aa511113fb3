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
