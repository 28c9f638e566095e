"""`tests/bench/json_bound.py` takes each run's total from callgrind's
closing lines: checked on the lines callgrind prints, and refused when
there is not exactly one."""

import sys

import pytest

from harness.stack import ROOT

sys.path.insert(0, str(ROOT / "tests/bench"))
import json_bound  # noqa: E402

STDERR = """\
==4242== Callgrind, a call-graph generating cache profiler
==4242== Command: wasmtime run json-bound.wasm tree 100
==4242==
==4242== Events    : Ir
==4242== Collected : 1234567890
==4242==
==4242== I   refs:      1,234,567,890
"""


def test_the_total_is_the_collected_line():
    assert json_bound.collected(STDERR) == 1234567890


@pytest.mark.parametrize("stderr", ["", STDERR + "==4243== Collected : 5\n", "Collected : 12\n"])
def test_no_total_or_two_are_refused(stderr):
    with pytest.raises(SystemExit):
        json_bound.collected(stderr)
