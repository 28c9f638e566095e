"""`tests/bench/phases.py` attributes a callgrind dump's instructions to the
component's steps by the guest's function names: checked on a small dump
whose every figure is known, in callgrind's own format."""

import sys

from harness.stack import ROOT

sys.path.insert(0, str(ROOT / "tests/bench"))
import phases  # noqa: E402

# Three guest functions and a host function, at known addresses.
PERF_MAP = """\
1000 100 wasm[0]::function[1]::_ZN10cmk_ingest3app6answer28_$u7b$$u7b$closure$u7d$$u7d$17h0E
2000 100 wasm[0]::function[2]::_ZN10cmk_ingest4host7request19load_config_quietly17h1E
3000 100 wasm[0]::function[3]::_ZN10cmk_ingest4host3log4emit17h2E
"""

# answer (own 50) calls load_config twice (inclusive 300 and 200) and
# emit once (40); emit calls itself (30 of its 40: not counted twice);
# load_config calls into the host (not a guest function: its cost is in
# load_config's inclusive figure, not in the guest's own). The host's own
# 1000 make the total 1,110 with the guest's 110.
DUMP = """\
version: 1
creator: callgrind
events: Ir
summary: 1110

fn=wasm-answer
0x1000 50
calls=2 0x2000
0x1010 300
calls=1 0x2000
0x1020 200
calls=1 0x3000
0x1030 40

fn=wasm-load
0x2000 40
calls=5 0x9000
0x2010 460

fn=wasm-emit
0x3000 10
calls=1 0x3000
0x3010 30
0x3020 10

fn=host-get
0x9000 1000
"""


def test_steps_are_inclusive_and_counted_once(tmp_path):
    (tmp_path / "map").write_text(PERF_MAP)
    (tmp_path / "dump").write_text(DUMP)
    rows = dict((label.strip(), n) for label, n in phases.table(tmp_path / "dump", tmp_path / "map", 2))
    assert rows["whole process"] == 555
    # The guest's own: 50 + 40 + 10 + 10 (the host's 1000 are not).
    assert rows["guest code (compiled Wasm), its own instructions"] == 55
    assert rows["configuration: every setting read and checked"] == 250
    # The recursive call is inside the step already.
    assert rows["log lines"] == 20
    # No call into `answer` is in the dump: no row, rather than a zero.
    assert "the component's request (`app::answer`)" not in rows
