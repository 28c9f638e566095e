"""Where the guest's own instructions go in a delivery, by kind of work:
the delivery bench (benches/delivery.rs, the core's whole path of a
stage-two delivery without I/O) run inside Wasmtime under callgrind, each
compiled function's own instructions named from Wasmtime's perf map and
put in a group (AES, GHASH, JSON parsing, JSON writing, maps, heap, …).

    . scripts/bootstrap
    "$CMK_PYTHON" tests/bench/guest_profile.py [--events 100] [--deliveries 10] [--functions 20]

It builds the delivery bench for wasm32-wasip2 with its symbols kept (a
target directory of its own, so the release build keeps its stripped
form), runs it twice, with N deliveries and with none, and prints per
event, from the difference (what the deliveries cost, not the bench's
set-up), each group's instructions and share, then the largest
functions. Exact counts (callgrind counts every instruction), so two
builds compare without the machine's noise.

What it counts and what it does not:
- a function's own instructions, not those of what it calls; code the
  compiler inlined counts as its caller's (the sealing code holds the
  inlined AES; the bench's `main` holds the core code inlined into it);
- the guest's compiled code only: the host's work is left out, the
  memmove behind Wasm's `memory.copy` too (Wasmtime's builtin that
  calls it is counted, the copying is not);
- groups are by name, first match wins (GROUPS); an own-cost profile
  does not know callers, so a shared helper (the heap, `memcmp`) is not
  split between the groups whose work it serves.
docs/benchmarks.md has a run.
"""

from __future__ import annotations

import argparse
import collections
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))
import phases  # noqa: E402
from bench import build_description  # noqa: E402

# First match wins; a function is named by its mangled Rust path
# (legacy `_ZN…` or v0 `_R…` mangling). A needle is a text the name holds,
# or a tuple of texts it holds all of.
GROUPS = [
    ("GHASH (POLYVAL, software)", ("polyval", "universal_hash", "ghash")),
    ("AES-CTR and the sealing code it is inlined in", ("seal_groups", "vector_aes", "3aes", "aes..")),
    ("the bench's `main` (its own work and core code inlined into it)", ("delivery_bench",)),
    ("JSON Pointers", ("pointer", "sealed_pointers")),
    # Building, reading, copying, comparing and dropping trees of `Value`
    # (and the containers that hold them), before the writing and parsing
    # groups, whose needles would also match them.
    ("JSON trees: maps, values and their drops (BTreeMap, Value)",
     ("btree", "BTreeMap", "serde_json3map", "serde_json..map", "5value5Value", "value..Value$u20$as",
      "5value3ser10Serializer", "value..ser..Serializer", ("drop_in_place", "serde_json"))),
    ("JSON writing (the documents, canonical values, the answers)",
     ("compact_json", "serde_json3ser", "serde_core3ser", "..ser..", "5value3ser", "Serializer", "Serialize")),
    ("JSON parsing (serde_json, the event decoders)", ("serde_json", "serde_core", "event_grid", "cloudevents")),
    ("heap and copies", ("cmk_heap", "memory_copy", "memory_fill", "raw_vec", "RawVec", "memcpy", "memset", "dlmalloc", "dlfree")),
    ("byte comparisons (memcmp)", ("memcmp",)),
    ("SHA-256 and HMAC (document ids, request signatures)", ("sha2", "hmac")),
    ("base64url", ("base64",)),
    ("UTF-8 checks", ("from_utf8",)),
]


def deliveries_only(with_deliveries: collections.Counter, without: collections.Counter) -> collections.Counter:
    """Each function's instructions in a run with deliveries less those in
    the same bench run without any: what the deliveries took, the set-up
    (the bench's bodies, the configuration, the batch answer) left out. A
    function that ran only in set-up comes out at zero or near it."""
    out = collections.Counter(with_deliveries)
    out.subtract(without)
    return out


def group_of(name: str) -> str:
    for group, needles in GROUPS:
        for n in needles:
            if all(part in name for part in ((n,) if isinstance(n, str) else n)):
                return group
    return "other"


def own_costs(dump: Path, syms: phases.Symbols) -> collections.Counter:
    """Each guest function's own instructions in a callgrind dump written
    with --dump-instr=yes --compress-pos=no: the cost lines at its
    addresses, less the calls it makes (a `calls=` line's next line is the
    call's inclusive cost, not the caller's own)."""
    cost: collections.Counter = collections.Counter()
    after_call = False
    with open(dump, errors="replace") as f:
        for line in f:
            if line.startswith("calls="):
                after_call = True
            elif line[:2] == "0x":
                if after_call:
                    after_call = False
                    continue
                parts = line.split()
                name = syms.name(int(parts[0], 16))
                if name is not None and name.startswith(("wasm[", "wasmtime_builtin")):
                    cost[name] += int(parts[-1]) if len(parts) > 1 else 0
    return cost


def _idents(text: str, i: int) -> list[str]:
    """The length-prefixed identifiers of a mangled name from `i` on, as
    long as they run one after another."""
    parts = []
    while i < len(text) and text[i].isdigit():
        j = i
        while j < len(text) and text[j].isdigit():
            j += 1
        n = int(text[i:j])
        parts.append(text[j : j + n])
        i = j + n
    return parts


def short(name: str) -> str:
    """A guest function's readable path, its last three parts:
    `wasm[0]::function[140]::_ZN8cmk_core6ingest4seal11seal_groups17h…E`
    becomes `ingest::seal::seal_groups`. Legacy mangling (`_ZN`): each part
    its length, then its text, the trailing hash dropped; v0 (`_R`): the
    identifiers after the crate's disambiguator (`Cs…_`) as far as they run
    one after another (a plain path reads whole; a generic one, in part)."""
    tail = name.split("::", 2)[-1]
    if tail.startswith("_ZN"):
        parts = _idents(tail, 3)
    elif tail.startswith("_R") and (m := re.search(r"Cs[0-9A-Za-z]*_", tail)):
        parts = _idents(tail, m.end())
    else:
        return tail[:80]
    # The hash, whole or cut short where the perf map cut the name.
    parts = [p for p in parts if p and not re.fullmatch(r"h[0-9a-f]{1,16}", p)]
    if not parts:
        return tail[:80]
    readable = []
    for p in parts:
        for code, text in (("$LT$", "<"), ("$GT$", ">"), ("$u20$", " "), ("$C$", ","), ("$RF$", "&"), ("..", "::")):
            p = p.replace(code, text)
        readable.append(p)
    return "::".join(readable[-3:])[:100]


def profile(wasmtime: str, wasm: Path, events: int, deliveries: int) -> collections.Counter:
    """Each guest function's own instructions in one run of the delivery
    bench under callgrind."""
    with tempfile.TemporaryDirectory(prefix="cmk-guest-profile-") as tmp:
        dump = Path(tmp) / "callgrind.out"
        # Wasmtime writes /tmp/perf-<pid>.map for --profile=perfmap; the pid is
        # valgrind's own (it runs the program in its process).
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--dump-instr=yes", "--compress-pos=no", "--compress-strings=no",
             f"--callgrind-out-file={dump}", wasmtime, "run", "-C", "cache=n", "-C", "parallel-compilation=n",
             # Compiled as Spin compiles it (epoch interruption), as scripts/bench-envelope does.
             "-W", "timeout=86400s", "--profile=perfmap", str(wasm),
             "--events", str(events), "--deliveries", str(deliveries)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if proc.wait() != 0:
            sys.exit(f"the delivery bench failed under callgrind (exit {proc.returncode})")
        pmap = Path(f"/tmp/perf-{proc.pid}.map")
        try:
            return own_costs(dump, phases.Symbols(pmap))
        finally:
            pmap.unlink(missing_ok=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100, help="events per delivery")
    ap.add_argument("--deliveries", type=int, default=10)
    ap.add_argument("--functions", type=int, default=20, help="largest functions to list")
    args = ap.parse_args()
    wasmtime = os.environ.get("CMK_WASMTIME")
    if not wasmtime:
        sys.exit("run after `. scripts/bootstrap` (CMK_WASMTIME)")
    target = Path(os.environ.get("CMK_PROFILE_TARGET_DIR", Path(tempfile.gettempdir()) / "cmk-guest-profile-target"))
    env = dict(os.environ, CARGO_PROFILE_RELEASE_STRIP="none", CARGO_TARGET_DIR=str(target))
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "cmk-core", "--target", "wasm32-wasip2",
                    "--example", "delivery-bench"], cwd=ROOT, env=env, check=True)
    wasm = target / "wasm32-wasip2" / "release" / "examples" / "delivery-bench.wasm"
    # Per function, the run with the deliveries less the run without: the
    # instructions the deliveries took, the set-up left out.
    cost = deliveries_only(profile(wasmtime, wasm, args.events, args.deliveries),
                           profile(wasmtime, wasm, args.events, 0))
    events = args.events * args.deliveries
    total = sum(cost.values())
    by_group: collections.Counter = collections.Counter()
    for name, c in cost.items():
        by_group[group_of(name)] += c
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, build {build_description()}, "
          f"{os.cpu_count()} cores ({cpu}); --events {args.events} --deliveries {args.deliveries}")
    print(f"guest instructions per event: {total / events:,.0f} "
          f"({args.deliveries} deliveries of {args.events} events less none, epochs on)")
    print("group,instructions_per_event,share")
    for group, c in by_group.most_common():
        print(f"\"{group}\",{c / events:.0f},{100 * c / total:.1f}%")
    print()
    print("function,instructions_per_event,group")
    for name, c in cost.most_common(args.functions):
        print(f"\"{short(name)}\",{c / events:.0f},\"{group_of(name)}\"")
    return 0


if __name__ == "__main__":
    sys.exit(main())
