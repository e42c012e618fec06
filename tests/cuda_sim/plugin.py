"""pytest plugin (tests/conftest.py): registers the `cuda-sim` backend before collection, so
that `checks.backend_params` lists it, and builds its library for the tests that run it."""

import pytest

from cuda_sim import library

library.register()


@pytest.fixture(autouse=True)
def _cuda_sim_library(request):
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None and callspec.params.get("backend") == library.NAME:
        library.load()
