"""`tests/bench/guest_profile.py` sums each guest function's own
instructions from a callgrind dump and puts them in groups: checked on a
small dump whose every figure is known (the format of
`--dump-instr=yes --compress-pos=no`: an address, a line number and a
cost a line; after a `calls=` line, the call's inclusive cost)."""

import sys

import pytest

from harness.stack import ROOT

sys.path.insert(0, str(ROOT / "tests/bench"))
import guest_profile  # noqa: E402
import phases  # noqa: E402

PERF_MAP = """\
1000 100 wasm[0]::function[1]::_ZN8cmk_core6ingest4seal11seal_groups17h68a810d04327456cE
2000 100 wasm[0]::function[2]::_ZN7polyval7backend4soft5State10proc_block17h5902719257098a00E
3000 100 wasm[0]::function[3]::memcmp
4000 100 wasmtime_builtin_memory_copy
5000 100 host_function_named_in_the_map
"""

# seal_groups: own 50 + 7, and a call into POLYVAL (inclusive 300) that is
# not its own; POLYVAL 200 own; memcmp 10 (twice); the builtin 5; a host
# function in the map and an address outside it are not the guest's.
DUMP = """\
positions: instr line
events: Ir
summary: 1000
fn=(1) a
0x1000 0 50
calls=3 0x2000 0
0x1010 0 300
0x1020 0 7
fn=(2) b
0x2000 0 200
fn=(3) c
0x3000 0 4
0x3004 0 6
0x4000 0 5
0x5000 0 90
0x9000 0 333
"""


def test_own_instructions_leave_out_calls_and_the_host(tmp_path):
    (tmp_path / "map").write_text(PERF_MAP)
    (tmp_path / "dump").write_text(DUMP)
    cost = guest_profile.own_costs(tmp_path / "dump", phases.Symbols(tmp_path / "map"))
    by_short = {guest_profile.short(n): c for n, c in cost.items()}
    assert by_short == {
        "ingest::seal::seal_groups": 57,
        "soft::State::proc_block": 200,
        "memcmp": 10,
        "wasmtime_builtin_memory_copy": 5,
    }
    groups = {guest_profile.group_of(n) for n in cost}
    assert groups == {
        "AES-CTR and the sealing code it is inlined in",
        "GHASH (POLYVAL, software)",
        "byte comparisons (memcmp)",
        "heap and copies",
    }


def test_a_name_matching_no_group_is_other():
    assert guest_profile.group_of("wasm[0]::function[9]::_ZN4core3fmt5write17h0000000000000000E") == "other"


WRITING = "JSON writing (the documents, canonical values, the answers)"
TREES = "JSON trees: maps, values and their drops (BTreeMap, Value)"
PARSING = "JSON parsing (serde_json, the event decoders)"


@pytest.mark.parametrize("name,group", [
    ("_ZN10serde_json3ser18format_escaped_str17h1e3e471298f1ded9E", WRITING),
    ("_ZN10serde_core3ser10Serializer11collect_seq17he468805d711386d9E", WRITING),
    ("_ZN10serde_json5value3ser81_$LT$impl$u20$serde_core..ser..Serialize$u20$for$u20$serde_json..value..Value$GT$9serialize17h0E", WRITING),
    ("_ZN4core3ptr45drop_in_place$LT$serde_json..value..Value$GT$17h1d78d6e3f2ebfa2bE", TREES),
    ("_ZN10serde_json3map3Map6insert17h0000000000000000E", TREES),
    ("_ZN5alloc11collections5btree3map25BTreeMap$LT$K$C$V$C$A$GT$6insert17h6a53d82313e266bcE", TREES),
    ("_ZN80_$LT$serde_json..de..MapAccess$LT$R$GT$$u20$as$u20$serde_core..de..MapAccess$GT$13next_key_seed17h0E", PARSING),
    ("_ZN10serde_json5value2de82_$LT$impl$u20$serde_core..de..Deserialize$u20$for$u20$serde_json..value..Value$GT$11deserialize17h0E", PARSING),
    ("_ZN3aes4soft7fixslice17h0000000000000000E", "AES-CTR and the sealing code it is inlined in"),
    ("_ZN4sha26sha25611compress25617h178df6556b8a2dbdE", "SHA-256 and HMAC (document ids, request signatures)"),
    ("_ZN4hmac5optim6update17h0000000000000000E", "SHA-256 and HMAC (document ids, request signatures)"),
    # Drops of trees, legacy and v0; a drop of anything else is not JSON's.
    ("_RINvNtCs0_4core3ptr13drop_in_placeNtNtCs1_10serde_json5value5ValueEB4_", TREES),
    ("_ZN4core3ptr45drop_in_place$LT$alloc..vec..Vec$LT$u8$GT$$GT$17h0000000000000000E", "other"),
    ("_ZN66_$LT$serde_json..value..Value$u20$as$u20$core..clone..Clone$GT$5clone17h0E", TREES),
    # `to_value` builds a tree; `Value::pointer` walks one.
    ("_ZN93_$LT$serde_json..value..ser..Serializer$u20$as$u20$serde_core..ser..Serializer$GT$13serialize_map17h0E", TREES),
    ("_ZN10serde_json5value5Value7pointer17h0000000000000000E", "JSON Pointers"),
])
def test_each_name_lands_in_its_group(name, group):
    assert guest_profile.group_of("wasm[0]::function[1]::" + name) == group


def test_v0_names_are_read_as_paths():
    assert guest_profile.short("wasm[0]::function[41]::_RNvNtNtCs9pv848UzQwQ_4core3str8converts9from_utf8") \
        == "str::converts::from_utf8"


def test_the_deliveries_are_the_run_with_them_less_the_run_without():
    import collections
    with_ = collections.Counter({"setup": 500, "seal": 1200, "parse": 900})
    without = collections.Counter({"setup": 500, "parse": 100})
    assert guest_profile.deliveries_only(with_, without) == collections.Counter({"seal": 1200, "parse": 800, "setup": 0})
    assert with_ == collections.Counter({"setup": 500, "seal": 1200, "parse": 900}), "the inputs are left as they were"
