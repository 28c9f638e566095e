"""Instructions the test host's process executes per batch-1 delivery, for
several builds of the component: the whole process (the host's HTTP, TLS,
Wasmtime, the key-value store and the guest's compiled code) under
Valgrind's callgrind, one build after the other against the same peers.

Time on this machine moves by 20 % and more between runs of a few seconds
(docs/benchmarks.md); an instruction count does not, so a change of a few
per cent shows here when a CPU A/B cannot see it. Instructions are not time
(a cache miss, a page fault or a system call's kernel side is not in them),
so a claim of speed still comes from `bench.py`; this answers "does the
runtime process do less work per delivery with B than with A".

Per build: serve it (stage two, client-secret identity, remote wrap unless
`--local-wrap`, the bench's three protected fields, the key state checked
once an hour), warm up with a few
deliveries (token, key state, connections), zero the counters, send N
sequential deliveries of one ~1 KB event (`--batch N`: N events, under
one partition key) over one keep-alive connection, dump, and divide.
`--kv-store-key`: the builds run with `kv_store_key` set, as production
deployments do (infra/deploy/app), so each delivery also authenticates
its key-value entry (the key's state) and decrypts the HSM token it
keeps; without it,
as the other benches run, every request logs `kv_store_unbound` instead.
`--sender entra`: the sender presents an Entra ID bearer token from the
Entra stand-in instead of the ingest key, one for all the deliveries of a
build's run (its full check in the warm-up), so the count holds the check
of a token already kept.

    . scripts/bootstrap
    "$CMK_PYTHON" tests/bench/host_instructions.py A.wasm B.wasm [--deliveries 200] [--rounds 2] [--local-wrap] [--batch 10] [--sender entra] [--kv-store-key]

Valgrind cannot reserve the address space of Wasmtime's pooling
allocator, so under it the host runs (as its probe decides) with the
on-demand allocator; the counts are of that allocator's work.

`--rounds` serves the builds in turn that many times (the same events for
every build of a round); the callgrind dumps stay in the run's folder,
named on stderr, for `callgrind_annotate`.

`--phases OUT.csv` also writes where each build's instructions went: for
every build the whole process and the guest's own instructions, and for
the component its steps (`phases.py`: the configuration, the sender
check, the wrap, the sealing, each exchange, the log lines); the host
names the guest's functions (`CMK_TEST_HOST_PERFMAP`), so pass builds
that keep their symbols:

    CARGO_PROFILE_RELEASE_STRIP=none CARGO_TARGET_DIR=target/named \
        cargo build --release --target wasm32-wasip2 -p cmk-ingest -p cmk-bench-floor
"""

from __future__ import annotations

import argparse
import csv
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import phases  # noqa: E402
from bench import EVENT_TYPE, PROTECTED, make_events  # noqa: E402
from harness.stack import PRINCIPALS, TENANT, Stack, env, read_profile  # noqa: E402

WARM = 20
# The audience an Entra-protected delivery's token is for.
AUDIENCE = "api://cmk-ingest"
# The stand-in's app that holds Event Grid's app role.
SENDER_APP = "eventgrid-sender"


def entra_sender(stack: Stack) -> tuple[dict[str, str], dict[str, str]]:
    """The app's variables for Entra-protected delivery (no ingest key), and
    the headers of a delivery with a token minted by the Entra stand-in
    (which lives the stand-in's default hour: a run mints one per build's
    run)."""
    secret = next(a["secret"] for a in PRINCIPALS["apps"] if a["client_id"] == SENDER_APP)
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": SENDER_APP,
                                   "client_secret": secret, "scope": f"{AUDIENCE}/.default"}).encode()
    with urllib.request.urlopen(f"{stack.entra_url}/{TENANT}/oauth2/v2.0/token", data=form) as r:
        token = json.load(r)["access_token"]
    variables = {"ingest_keys": "", "ingest_entra_audiences": AUDIENCE, "ingest_entra_tenant_id": TENANT}
    return variables, {"authorization": f"Bearer {token}"}


def wrapper(workdir: Path, tag: str, named: bool = False) -> Path:
    """The test host under callgrind: `exec`, so the app's pid is Valgrind's.
    `named`: costs by instruction address, and the host's perf map of the
    guest's functions, for `phases.py`."""
    out = workdir / f"callgrind-{tag}.out"
    script = workdir / f"host-{tag}.sh"
    dump = "--dump-instr=yes --compress-pos=no" if named else "--dump-instr=no"
    perfmap = "CMK_TEST_HOST_PERFMAP=1 " if named else ""
    script.write_text("#!/bin/sh\n"
                      f"{perfmap}exec valgrind --tool=callgrind --callgrind-out-file={out} {dump} "
                      f"--compress-strings=no {env('CMK_TEST_HOST')} \"$@\"\n")
    script.chmod(0o755)
    return script


def measured(workdir: Path, tag: str) -> Path:
    """The dump `callgrind_control --dump=measured` wrote (Valgrind numbers
    each dump after the first, and writes another when the host exits)."""
    for p in sorted(workdir.glob(f"callgrind-{tag}.out*")):
        if "desc: Trigger: dump measured" in p.read_text(errors="replace")[:4000]:
            return p
    raise SystemExit(f"no measured dump for {tag} in {workdir}")


def total(path: Path) -> int:
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("summary:"):
            return int(line.split()[1])
    raise SystemExit(f"no summary in {path}")


def deliveries(url: str, events: list[dict], credential: dict[str, str], topic: str, batch: int = 1) -> None:
    u = url.split("//", 1)[1]
    host, port = u.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=300)
    for i in range(0, len(events), batch):
        body = json.dumps([{**e, "topic": topic} for e in events[i:i + batch]]).encode()
        conn.request("POST", "/events", body, {"content-type": "application/json", **credential})
        r = conn.getresponse()
        answer = r.read()
        if r.status != 200:
            raise SystemExit(f"delivery answered {r.status}: {answer[:300]!r}")
    conn.close()


def measure(stack: Stack, wasm: Path, tag: str, n: int, extra: dict[str, str], credential: dict[str, str],
            seed: int, batch: int, named: bool = False) -> tuple[int, list[tuple[str, int]]]:
    """Instructions per delivery, and with `named` the rows of `phases.py`."""
    os.environ["CMK_APP_WASM"] = str(wasm)
    os.environ["CMK_TEST_HOST"] = str(wrapper(stack.workdir, tag, named))
    started = time.time()
    # The key state checked once, in the warm-up: a recheck would add an
    # HSM request and a key-value write to some runs and not to others.
    app = stack.serve_app(name=f"app-{tag}", runtime="host", overrides=stack.stage_two(
        "client-secret", protected_fields=json.dumps({EVENT_TYPE: PROTECTED}), hsm_key_check_secs="3600",
        **extra))
    # The same events for every build of a round.
    events = make_events((WARM + n) * batch, seed=seed)
    topic = f"/topics/icount-{tag}"
    deliveries(app.url, events[:WARM * batch], credential, topic, batch)
    pid = str(app.process.proc.pid)
    subprocess.run(["callgrind_control", "--zero", pid], check=True, capture_output=True)
    deliveries(app.url, events[WARM * batch:], credential, topic, batch)
    subprocess.run(["callgrind_control", "--dump=measured", pid], check=True, capture_output=True)
    time.sleep(1)
    app.process.stop()
    stack.processes.remove(app.process)
    dump = measured(stack.workdir, tag)
    rows = []
    if named:
        # A map left by an earlier process with the same pid, if this host
        # wrote none, would name the wrong code.
        perfmap = Path(f"/tmp/perf-{pid}.map")
        if not perfmap.exists() or perfmap.stat().st_mtime < started - 1:
            raise SystemExit(f"no fresh perf map {perfmap}: the host did not write one (remove a stale one)")
        rows = phases.table(dump, perfmap, n)
        if len(rows) == len(phases.EXACT_ROWS):
            print(f"{wasm.name}: no step of phases.py found (only the component has steps; "
                  "a stripped build names none: see --help)", file=sys.stderr)
    return total(dump), rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wasm", nargs="+", type=Path)
    ap.add_argument("--deliveries", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=1, help="builds interleaved, this many times each")
    ap.add_argument("--local-wrap", action="store_true")
    ap.add_argument("--batch", type=int, default=1, help="events per delivery")
    ap.add_argument("--kv-store-key", action="store_true",
                    help="set kv_store_key, as production deployments do: the key-value store's entries are "
                         "bound by a MAC and the cached tokens encrypted, and each delivery checks and opens them")
    ap.add_argument("--phases", type=Path, help="write each build's steps (phases.py) to this CSV")
    ap.add_argument("--sender", choices=["key", "entra"], default="key",
                    help="the sender's credential: the ingest key, or an Entra ID bearer token")
    args = ap.parse_args()
    # The host runs in the run's folder: paths from here must not be relative.
    args.wasm = [w.resolve() for w in args.wasm]
    host = os.environ.get("CMK_TEST_HOST")
    if not host:
        raise SystemExit("CMK_TEST_HOST is not set: `. scripts/bootstrap` first")
    if not shutil.which("valgrind") or not shutil.which("callgrind_control"):
        raise SystemExit("needs Valgrind (Debian: apt-get install valgrind)")
    credential = {"x-cmk-ingest-key": read_profile()["SPIN_VARIABLE_INGEST_KEYS"].split(",")[0]}
    extra = {"hsm_local_wrap": "true"} if args.local_wrap else {}
    if args.kv_store_key:
        extra["kv_store_key"] = "bench-kv-store-key-0123456789abcdef"
    stack = Stack(Path(tempfile.mkdtemp(prefix="cmk-icount-")))
    print(f"callgrind dumps: {stack.workdir}/callgrind-*.out (callgrind_annotate)", file=sys.stderr)
    print("round,build,instructions_per_delivery")
    steps = []
    try:
        stack.start_peers()
        if args.sender == "entra":
            variables, credential = entra_sender(stack)
            extra.update(variables)
        for r in range(args.rounds):
            for i, wasm in enumerate(args.wasm):
                if args.sender == "entra" and (r or i):
                    # A token of its own for each build's run, so a long run
                    # does not outlive it (its first, full check falls in
                    # the warm-up).
                    credential = entra_sender(stack)[1]
                n, rows = measure(stack, wasm, f"r{r}b{i}", args.deliveries, extra, credential, seed=9 + r,
                                  batch=args.batch, named=args.phases is not None)
                print(f"{r + 1},{wasm},{n // args.deliveries}", flush=True)
                steps += [(r + 1, wasm.name, label.strip(), (len(label) - len(label.lstrip())) // 2, v)
                          for label, v in rows]
                os.environ["CMK_TEST_HOST"] = host
        if args.phases:
            with open(args.phases, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["round", "build", "step", "depth", "instructions_per_delivery"])
                w.writerows(steps)
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
