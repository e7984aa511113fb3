"""The runtime optimizers' reductions run in C on the CPU, or in torch ops where the C loop is off."""

from __future__ import annotations

import pytest

from rodflow.optim import native


@pytest.fixture(params=["native", "torch"])
def reduction_path(request):
    """Run the test once with the C reductions and once with torch's (as without a C compiler)."""
    if request.param == "native":
        if native.library() is None:
            pytest.fail(f"the C reductions are unavailable: {native.status()}")
        yield request.param
    else:
        with native.disabled():
            assert native.library() is None
            yield request.param
