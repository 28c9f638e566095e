"""What a delivery's JSON trees cost inside Wasmtime, against the least a
path without them must do: instructions per event of each mode of
benches/json_bound.rs (parse the 100-event delivery body into a tree;
the same and write it out; a syntax check that builds nothing; the
product's nesting scan; one copy of the bytes).

    . scripts/bootstrap
    "$CMK_PYTHON" tests/bench/json_bound.py [--iterations 100]

Each mode runs under callgrind twice, with N iterations and with none, in
a build that allocates from the component's heap and is compiled as Spin
compiles it (epoch interruption); the difference over N × 100 events is
the mode's instructions per event (callgrind counts every instruction,
the host's memmove behind `memory.copy` included; Wasmtime's compilation,
in both runs, differs by some hundred thousand instructions from run to
run, a few per event at the default N).
docs/benchmarks.md has a run.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench import build_description  # noqa: E402
MODES = ["tree", "tree-write", "scan", "shape", "copy"]
EVENTS = 100


def instructions(wasmtime: str, wasm: Path, mode: str, n: int) -> int:
    with tempfile.TemporaryDirectory(prefix="cmk-json-bound-") as tmp:
        proc = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={Path(tmp) / 'out'}", wasmtime, "run",
             "-C", "cache=n", "-C", "parallel-compilation=n", "-W", "timeout=86400s", str(wasm), mode, str(n)],
            capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"json-bound {mode} {n} failed under callgrind:\n{proc.stderr[-2000:]}")
    return collected(proc.stderr)


def collected(stderr: str) -> int:
    """The run's total from callgrind's closing lines (`==PID== Collected : N`)."""
    found = re.findall(r"^==\d+== Collected : (\d+)$", stderr, re.MULTILINE)
    if len(found) != 1:
        sys.exit(f"callgrind printed {len(found)} totals, not one")
    return int(found[0])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=100)
    args = ap.parse_args()
    wasmtime = os.environ.get("CMK_WASMTIME")
    if not wasmtime:
        sys.exit("run after `. scripts/bootstrap` (CMK_WASMTIME)")
    target = Path(os.environ.get("CMK_PROFILE_TARGET_DIR", Path(tempfile.gettempdir()) / "cmk-guest-profile-target"))
    env = dict(os.environ, CARGO_TARGET_DIR=str(target))
    subprocess.run(["cargo", "build", "--quiet", "--release", "-p", "cmk-core", "--target", "wasm32-wasip2",
                    "--example", "json-bound"], cwd=ROOT, env=env, check=True)
    wasm = target / "wasm32-wasip2" / "release" / "examples" / "json-bound.wasm"
    print(f"# {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, build {build_description()}, "
          f"{os.cpu_count()} cores; {args.iterations} iterations of the {EVENTS}-event body less none")
    print("mode,instructions_per_event")
    for mode in MODES:
        diff = instructions(wasmtime, wasm, mode, args.iterations) - instructions(wasmtime, wasm, mode, 0)
        print(f"{mode},{diff // (args.iterations * EVENTS)}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
