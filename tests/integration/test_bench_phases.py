"""`tests/bench/phases.py` attributes a callgrind dump's instructions to the
component's steps by the guest's function names: checked on a small dump
whose every figure is known, in the format callgrind writes with
`--dump-instr=yes --compress-pos=no` (an address, a line number and a cost
a line; a call's target an address and a line number)."""

import sys

from harness.stack import ROOT

sys.path.insert(0, str(ROOT / "tests/bench"))
import phases  # noqa: E402

# Five guest functions, at known addresses.
PERF_MAP = """\
1000 100 wasm[0]::function[1]::_ZN10cmk_ingest3app6answer28_$u7b$$u7b$closure$u7d$$u7d$17h0E
2000 100 wasm[0]::function[2]::_ZN10cmk_ingest4host7request19load_config_quietly17h1E
3000 100 wasm[0]::function[3]::_ZN10cmk_ingest4host3log4emit17h2E
4000 100 wasm[0]::function[4]::_ZN10cmk_ingest4host3kek3Kek4wrap28_$u7b$$u7b$closure$u7d$$u7d$17h3E
5000 100 wasm[0]::function[5]::_ZN10cmk_ingest4host8outbound13send_retrying28_$u7b$$u7b$closure$u7d$$u7d$17h4E
"""

# answer (own 50) calls load_config twice (inclusive 300 and 200), emit
# once (40), the wrap once (100) and `send_retrying` once itself (70: a
# Cosmos DB send, not the wrapkey exchange); emit calls itself (30 of its
# 40: not counted twice); load_config calls into the host (not a guest
# function: its cost is in load_config's inclusive figure, not in the
# guest's own); the wrap calls `send_retrying` (60: the wrapkey exchange).
# Guest's own: 50 + 40 + 20 + 40 + 130 = 280; with the host's 1000 and
# 20 more outside any function, 1,300 in all.
DUMP = """\
version: 1
creator: callgrind-3.19.0
positions: instr line
events: Ir
summary: 2600

ob=(1) /cmk-test-host
fn=(1) wasm-answer
0x1000 0 50
calls=2 0x2000 0
0x1010 0 300
calls=1 0x2000 0
0x1020 0 200
calls=1 0x3000 0
0x1030 0 40
calls=1 0x4000 0
0x1040 0 100
calls=1 0x5000 0
0x1050 0 70

fn=(2) wasm-load
0x2000 0 40
calls=5 0x9000 0
0x2010 0 460

fn=(3) wasm-emit
0x3000 0 10
calls=1 0x3000 0
0x3010 0 30
0x3020 0 10

fn=(4) wasm-wrap
calls=1 0x5000 0
0x4010 0 60
0x4000 0 40

fn=(5) wasm-send
0x5000 0 130

fn=(6) host-get
0x9000 0 1000
0x9100 0 20
"""


def test_steps_are_inclusive_and_counted_once(tmp_path):
    (tmp_path / "map").write_text(PERF_MAP)
    (tmp_path / "dump").write_text(DUMP)
    rows = dict((label.strip(), n) for label, n in phases.table(tmp_path / "dump", tmp_path / "map", 2))
    assert rows["whole process"] == 1300
    # The host's instructions are not the guest's own.
    assert rows["guest code (compiled Wasm), its own instructions"] == 140
    assert rows["configuration: every setting read and checked"] == 250
    # The recursive call is inside the step already.
    assert rows["log lines, all of them (also inside the steps above)"] == 20
    # The wrap, and of it only the exchange it makes: the other caller's
    # call into the same function is not the wrapkey exchange.
    assert rows["the data key wrapped (HSM token, key state, exchange)"] == 50
    assert rows["the wrapkey exchange"] == 30
    # No call into `answer` is in the dump: no row, rather than a zero.
    assert "the component's request (`app::answer`)" not in rows


def test_a_build_without_the_steps_gets_the_exact_figures_only(tmp_path):
    (tmp_path / "map").write_text("1000 100 wasm[0]::function[1]::_ZN15cmk_bench_floor7deliver17h0E\n")
    (tmp_path / "dump").write_text("positions: instr line\nevents: Ir\nsummary: 300\nfn=(1) f\n0x1000 0 100\n0x8000 0 200\n")
    assert phases.table(tmp_path / "dump", tmp_path / "map", 1) == [
        ("whole process", 300), ("guest code (compiled Wasm), its own instructions", 100)]
