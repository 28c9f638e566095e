"""Where the test host's CPU goes: turns sampled profiles of the host
process (`perf record -e cpu-clock --call-graph dwarf`) into one table, a
column per profile, a row per part of a request's path (docs/bench/
runtime-profile-2026-12-06.md has a run and how to read it).

Recording (the bench starts the host itself; a wrapper puts perf in front
of it, so the bench's own CPU figures are not valid in that run):

    . scripts/bootstrap
    cat > /tmp/perfwrap.sh <<EOF
    #!/bin/bash
    exec perf record -q -e cpu-clock -F 1500 --call-graph dwarf,16384 -o /tmp/host-\$TAG.data -- $CMK_TEST_HOST "\$@"
    EOF
    chmod +x /tmp/perfwrap.sh
    TAG=pooled SPIN_WASMTIME_POOLING=1 CMK_TEST_HOST=/tmp/perfwrap.sh "$CMK_PYTHON" tests/bench/bench.py \\
        --modes component --batches 1 --events 1000 --runtimes host --out /tmp/bench-profiled
    perf script --no-inline -i /tmp/host-pooled.data -F comm,tid,ip,sym,dso > /tmp/host-pooled.txt
    "$CMK_PYTHON" tests/bench/host_profile.py pooled=/tmp/host-pooled.txt [other=/tmp/...]
    "$CMK_PYTHON" tests/bench/host_profile.py --imports /tmp/host-pooled.txt

(`--no-inline` matters: with inline resolution perf script takes many
minutes.) To name the guest's own functions, set `CMK_TEST_HOST_PERFMAP=1`
for the host (Wasmtime then writes `/tmp/perf-<pid>.map`) and pass a
`.wasm` built with `CARGO_PROFILE_RELEASE_STRIP=false` as `CMK_APP_WASM`;
docs/bench/runtime-profile-2026-12-06.md, "Later run", has the commands. Unwinding stops where Wasmtime enters compiled Wasm, so a host
call made by the guest shows as a stack whose outermost frame is a
`component-trampolines[...]` symbol of the `.cwasm` file: those are sorted
by the host code under them (SQLite, wasi:http, the component ABI).
"""

from __future__ import annotations

import collections
import re
import sys

PARTS = [
    "guest code (Cranelift-compiled)",
    "guest libcalls (memory.copy/fill)",
    "host calls: component ABI (lift/lower, resources, trampolines)",
    "host calls: wasi:http (fields, bodies, streams)",
    "host calls: wasi (io, clocks, random)",
    "host calls: variables",
    "host calls: key-value (SQLite)",
    "outbound HTTPS (hyper client, rustls, ring)",
    "inbound HTTP (hyper server)",
    "instance creation (store, instantiate)",
    "instance teardown (store drop, slot reset)",
    "tokio scheduling (wake, park, epoll)",
    "host log lines",
    "other (start-up, epoch ticker, unattributed)",
]
GUEST, LIBCALLS, ABI, WASI_HTTP, WASI, VARIABLES, KV, OUTBOUND, INBOUND, CREATE, TEARDOWN, TOKIO, LOG, OTHER = PARTS
FRAME = re.compile(r"\s*[0-9a-f]+ (.*) \((.*)\)$")


def samples(path: str):
    """Each sample's stack, innermost first, as (symbol, object) pairs."""
    stack: list[tuple[str, str]] = []
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if stack:
                    yield stack
                stack = []
            elif line.startswith("\t") and (m := FRAME.match(line.rstrip())):
                stack.append((m.group(1), m.group(2)))
            elif not line.startswith("\t"):
                stack = []
    if stack:
        yield stack


def host_call(j: str) -> str | None:
    if "rusqlite" in j or "sqlite3" in j or "key_value::HostStore" in j:
        return KV
    if "send_request" in j or "hyper_util::client" in j or "hyper_rustls" in j or "rustls" in j or "ring_core" in j:
        return OUTBOUND
    return None


def part(stack: list[tuple[str, str]]) -> str:
    j = " | ".join(s for s, _ in stack)
    leaf, obj = stack[0]
    root, root_obj = stack[-1]
    if "_dl_" in j or "load_component" in j or "deserialize" in j or "Engine::new" in j:
        return OTHER
    if "eprint" in j:
        return LOG
    if obj.endswith(".cwasm") or root_obj.endswith(".cwasm"):
        if leaf.startswith("wasm[") and not root.startswith("component-trampolines"):
            return GUEST
        if root.startswith("wasmtime_builtin") or leaf.startswith("wasmtime_builtin"):
            return LIBCALLS
        if found := host_call(j):
            return found
        if "spin::variables::Host" in j:
            return VARIABLES
        if "wasmtime_wasi_http" in j:
            return WASI_HTTP
        if "wasmtime_wasi::" in j or "wasmtime_wasi_io" in j:
            return WASI
        return GUEST if leaf.startswith("wasm[") else ABI
    if found := host_call(j):
        return found
    if "instantiate" in j.lower():
        return CREATE
    if "drop_in_place<wasmtime::runtime::store" in j or "StoreOpaque as core::ops::drop::Drop" in j \
            or "deallocate" in j.lower():
        return TEARDOWN
    if "call_handle" in j or "fiber" in j.lower():
        if "wasmtime_wasi_http" in j:
            return WASI_HTTP
        if "wasmtime_wasi::" in j or "wasmtime_wasi_io" in j:
            return WASI
        return ABI
    if "hyper::" in j or "new_incoming_request" in j:
        return INBOUND
    if "Server::handle" in j:
        return CREATE
    if "tokio::" in j:
        return TOKIO
    return OTHER


IMPORT = re.compile(r"component-trampolines\[\d+\]-wasm-call-component-lower-import\[(\d+)\]")
HOST_FN = re.compile(r"(\w+::Host\w*)(?: for [^>]*)?>::(\w+)|(Host[A-Z]\w*)::(\w+)")


def imports(path: str, top: int = 10) -> None:
    """The guest's costliest imports: samples under each lowered import's
    trampoline (host function, lifting and lowering, kernel), named by the
    host function found most often under it."""
    per: collections.Counter = collections.Counter()
    names: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    n = 0
    for stack in samples(path):
        n += 1
        if not (m := IMPORT.match(stack[-1][0])):
            continue
        per[m.group(1)] += 1
        for sym, _ in stack:
            if "HostFn" in sym or "HostResourceTables" in sym:
                continue
            if f := HOST_FN.search(sym):
                trait, fn = (f.group(1), f.group(2)) if f.group(1) else (f.group(3), f.group(4))
                names[m.group(1)][f"{trait}::{fn}"] += 1
                break
    print(f"\n{path}: samples under each import's trampoline (of {n})\n")
    print("| import | host function seen under it | share |")
    print("|---|---|---:|")
    for imp, count in per.most_common(top):
        name = names[imp].most_common(1)[0][0] if names[imp] else "(not resolved)"
        print(f"| {imp} | `{name}` | {100 * count / n:.1f} % |")


def main(argv: list[str]) -> None:
    columns = []
    for arg in argv:
        name, _, path = arg.rpartition("=")
        counts: collections.Counter = collections.Counter()
        kernel: collections.Counter = collections.Counter()
        n = 0
        for stack in samples(path):
            n += 1
            p = part(stack)
            counts[p] += 1
            kernel[p] += "[kernel" in stack[0][1]
        columns.append((name or path, n, counts, kernel))
    print("| part | " + " | ".join(c[0] for c in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for p in PARTS:
        cells = [f"{100 * c[p] / n:.1f} % (kernel {100 * k[p] / c[p]:.0f} %)" if c[p] else "0"
                 for _, n, c, k in columns]
        print(f"| {p} | " + " | ".join(cells) + " |")
    print("| samples | " + " | ".join(str(n) for _, n, _, _ in columns) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    if sys.argv[1] == "--imports":
        imports(sys.argv[2])
    else:
        main(sys.argv[1:])
