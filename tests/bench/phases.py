"""Where a delivery's instructions go, by the component's own steps: reads a
callgrind dump of the test host (`--dump-instr=yes --compress-pos=no`) and
the perf map Wasmtime wrote for it (`CMK_TEST_HOST_PERFMAP=1`, which names
the guest's compiled functions when the `.wasm` keeps its symbols) and
gives, per step of the request's path, the instructions spent in it and in
everything it called: its own compiled code, the host calls it made (the
component ABI, the host's side of `wasi:http`, the variables, the key-value
store) and the guest code those called back.

`tests/bench/host_instructions.py --phases` runs it on each build it
measures; docs/benchmarks.md ("Run of 2026-12-07 (morning): where a delivery's
instructions go") has a run.

A step's figure is the sum over the calls into its function from outside
it, as callgrind records each call's inclusive cost; only direct
recursion is told apart (a step that re-enters itself through another
function would count twice), and the steps may overlap (the log lines).
Addresses are taken as callgrind prints them, which for Wasmtime's
compiled code (mapped apart from the host's objects) are the perf map's.
A step that waits on the host (an outbound exchange) runs on Wasmtime's
fiber, and callgrind's view of calls across a fiber switch is
approximate: check
a run's steps against the whole (the component's request against the sum
of its steps), and a step that matters against an A/B of the whole
process (a build that does the step twice; docs/benchmarks.md has one
for the configuration, which agreed within 3 %). The floor's own steps
(`tests/bench/floor`, whose waits are blocking host calls) came out
inconsistent that way (a caller smaller than its callee), so the list
below has none: for the floor, as for any build without the component's
steps, only the exact figures come out, the whole process and the
guest's own instructions, both counted by address. A
figure per delivery is the dump's total divided by the deliveries
measured.

    python3 tests/bench/phases.py DUMP PERFMAP DELIVERIES
"""

from __future__ import annotations

import bisect
import collections
import re
import sys
from pathlib import Path

# (label, pattern of the function's name in the perf map[, pattern its
# caller's name must match]). A row's figure is inclusive; indented rows are
# parts of the row above them.
STEPS: list[tuple[str, ...]] = [
    # The component (src/app.rs, src/routes/delivery.rs).
    ("the component's request (`app::answer`)", r"cmk_ingest3app6answer28"),
    ("  configuration: every setting read and checked", r"request19load_config_quietly17h"),
    ("    of it, the variable reads (host calls)", r"request19load_config_quietly28"),
    ("  the sender check", r"delivery16authorize_sender"),
    ("  reading the body", r"request9read_body"),
    ("  decoding, the shape check, the documents",
     r"ingest4plan6decode17|ingest4plan11check_shape|ingest4plan12documents_of"),
    ("  the sealing plan (key scopes, sizes)", r"delivery12plan_sealing"),
    ("  the write: wrap, seal, send (`write_delivery`)", r"delivery14write_delivery28"),
    ("    the data key wrapped (HSM token, key state, exchange)", r"kek3Kek4wrap28"),
    # The token's lookup called for the wrap (by `Kek::token`, or by the
    # wrap itself where the compiler inlined that).
    ("      the HSM token from the key-value store", r"token6Tokens3get28", r"kek3Kek4wrap28|kek3Kek5token28"),
    ("      the key's checked state from the key-value store", r"kek3Kek3key28"),
    ("      the wrapkey exchange", r"outbound13send_retrying28", r"kek3Kek4wrap28"),
    ("    sealing, serializing and signing the write", r"ingest4seal11seal_groups"),
    ("      sealing the protected fields", r"envelope6Sealer4seal17"),
    ("      serializing and signing the write", r"ingest4plan11plan_writes"),
    ("    the Cosmos DB exchange", r"account7Account4send28"),
    # Every log line, wherever written: also counted in the steps above
    # that write them (`documents_written` in the write, a key-value
    # warning where the store is opened).
    ("log lines, all of them (also inside the steps above)", r"cmk_ingest4host3log4emit"),
]


# The rows every build gets, exact (counted by address), before any step.
EXACT_ROWS = ("whole process", "guest code (compiled Wasm), its own instructions")


class Symbols:
    """The perf map's functions, found by address."""

    def __init__(self, path: Path):
        rows = []
        for line in path.read_text(errors="replace").splitlines():
            addr, size, name = line.split(" ", 2)
            rows.append((int(addr, 16), int(size, 16), name))
        rows.sort()
        self.rows = rows
        self.starts = [r[0] for r in rows]

    def name(self, addr: int) -> str | None:
        i = bisect.bisect_right(self.starts, addr) - 1
        if i >= 0 and addr < self.rows[i][0] + self.rows[i][1]:
            return self.rows[i][2]
        return None


def read_dump(dump: Path, syms: Symbols):
    """Self cost of compiled guest code, the whole dump's total, and each
    call edge (caller, callee, inclusive cost) between named functions."""
    guest_self = 0
    total = 0
    edges: collections.Counter[tuple[str | None, str]] = collections.Counter()
    pending: int | None = None
    with open(dump, errors="replace") as f:
        for line in f:
            if line.startswith("summary:"):
                total = int(line.split()[1])
            elif line.startswith("calls="):
                pending = int(line.split()[1], 16)
            elif line[:2] == "0x":
                parts = line.split()
                cost = int(parts[-1]) if len(parts) > 1 else 0
                if pending is not None:
                    callee = syms.name(pending)
                    if callee is not None:
                        edges[(syms.name(int(parts[0], 16)), callee)] += cost
                    pending = None
                elif syms.name(int(parts[0], 16)) is not None:
                    guest_self += cost
    return guest_self, total, edges


def steps(edges, patterns=STEPS) -> list[tuple[str, int]]:
    """Each step's inclusive instructions: calls into a matching function
    from one that does not match the same pattern (a step's recursion and
    an async step's own polls are not counted twice) and, where the step
    names one, does match its caller's pattern."""
    out = []
    for label, pattern, *within in patterns:
        rx = re.compile(pattern)
        by = re.compile(within[0]) if within else None
        n = sum(c for (caller, callee), c in edges.items()
                if rx.search(callee) and not (caller and rx.search(caller))
                and (by is None or (caller is not None and by.search(caller))))
        out.append((label, n))
    return out


def table(dump: Path, perfmap: Path, deliveries: int) -> list[tuple[str, int]]:
    """Rows of (label, instructions per delivery), steps that ran only."""
    syms = Symbols(perfmap)
    guest_self, total, edges = read_dump(dump, syms)
    rows = list(zip(EXACT_ROWS, (total // deliveries, guest_self // deliveries)))
    rows += [(label, n // deliveries) for label, n in steps(edges) if n]
    return rows


def main(argv: list[str]) -> int:
    if len(argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    for label, n in table(Path(argv[1]), Path(argv[2]), int(argv[3])):
        print(f"{n:>12,}  {label}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
