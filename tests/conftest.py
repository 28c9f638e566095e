"""Shared fixtures: one local stack per test session, one served app."""

import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from harness.stack import Stack  # noqa: E402


@pytest.fixture(scope="session")
def stack():
    workdir = Path(tempfile.mkdtemp(prefix="cmk-ingest-stack-"))
    s = Stack(workdir)
    try:
        s.start_peers()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def app(stack):
    return stack.serve_app()
