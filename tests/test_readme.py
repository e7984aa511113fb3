"""The README's Python example runs as written and shows what it claims: at the edge of stability the
rod flow is closer to the iterates than the stable flow."""

from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _first_python_block() -> str:
    text = README.read_text()
    match = re.search(r"```python\n(.*?)```", text, re.S)
    assert match, "README.md has no python block"
    return match.group(1)


def test_readme_example_runs_and_the_rod_is_closer_at_the_edge():
    import torch

    threads = torch.get_num_threads()
    out = io.StringIO()
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(_first_python_block(), "README.md", "exec"), {"__name__": "__main__"})
    finally:
        torch.set_num_threads(threads)
    eos = dict(re.findall(r"(stable|rod) flow: .* ([0-9.]+) at it", out.getvalue()))
    assert set(eos) == {"stable", "rod"}, out.getvalue()
    assert float(eos["rod"]) < float(eos["stable"]), out.getvalue()
