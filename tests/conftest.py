"""Shared pytest configuration: trio mode is on (pyproject), warnings are errors."""

import gc
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _collect_garbage_after_each_test() -> Iterator[None]:
    """Leaked sockets surface as ResourceWarnings at GC time: collect now, so that the test that
    leaked is the one that fails, not whichever test runs when the collector happens to run."""
    yield
    gc.collect()
