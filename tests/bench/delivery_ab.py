"""Runtime CPU per batch-1 delivery for several builds of the component,
side by side on the test host: one host per `.wasm`, all serving at once
against the same peers, rounds interleaved (the builds' order rotating),
each round N sequential deliveries over one keep-alive connection, CPU
from `/proc` (utime + stime of the host process). One request at a time
keeps the peers' and the load generator's work out of the host's way, so
the figure moves less between rounds than the bench's (eight in flight).

    . scripts/bootstrap
    SPIN_WASMTIME_POOLING=1 "$CMK_PYTHON" tests/bench/delivery_ab.py A.wasm B.wasm [--rounds 9] [--deliveries 1500] [--local-wrap] [--sender entra]

`--sender entra`: Entra-protected delivery, one token for every delivery of
a round, checked in full before the round's measured deliveries (so these
measure a token already kept).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from bench import EVENT_TYPE, PROTECTED, make_events  # noqa: E402
from harness.stack import Stack, read_profile  # noqa: E402
from healthz_ab import cpu_times  # noqa: E402
from host_instructions import WARM, deliveries, entra_sender  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wasm", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--deliveries", type=int, default=1500)
    ap.add_argument("--local-wrap", action="store_true")
    ap.add_argument("--sender", choices=["key", "entra"], default="key",
                    help="the sender's credential: the ingest key, or an Entra ID bearer token")
    args = ap.parse_args()
    # The hosts run in the run's folder: paths from here must not be relative.
    args.wasm = [w.resolve() for w in args.wasm]
    credential = {"x-cmk-ingest-key": read_profile()["SPIN_VARIABLE_INGEST_KEYS"].split(",")[0]}
    extra = {"hsm_local_wrap": "true"} if args.local_wrap else {}
    stack = Stack(Path(tempfile.mkdtemp(prefix="cmk-delivery-ab-")))
    names = [w.name for w in args.wasm]
    print("round," + ",".join(names))
    per = {n: [] for n in names}
    user = {n: [] for n in names}
    system = {n: [] for n in names}
    try:
        stack.start_peers()
        if args.sender == "entra":
            variables, credential = entra_sender(stack)
            extra.update(variables)
        apps = []
        for i, wasm in enumerate(args.wasm):
            os.environ["CMK_APP_WASM"] = str(wasm)
            apps.append(stack.serve_app(name=f"app-ab-{i}", runtime="host", overrides=stack.stage_two(
                "client-secret", protected_fields=json.dumps({EVENT_TYPE: PROTECTED}), hsm_key_check_secs="3600",
                **extra)))
        for i, app in enumerate(apps):
            deliveries(app.url, make_events(WARM, seed=1), credential, f"/topics/ab-warm-{i}")
        for r in range(args.rounds):
            if args.sender == "entra" and r:
                # A token of its own for each round (one lives an hour), the
                # same for every build of the round, its first (full) check
                # made outside the measured deliveries, as in the warm-up.
                credential = entra_sender(stack)[1]
                for i, app in enumerate(apps):
                    deliveries(app.url, make_events(1, seed=200 + r), credential, f"/topics/ab-token-{r}-{i}")
            events = make_events(args.deliveries, seed=100 + r)
            k = r % len(apps)
            row = {}
            for i in list(range(k, len(apps))) + list(range(k)):
                pid = apps[i].process.proc.pid
                before = cpu_times(pid)
                deliveries(apps[i].url, events, credential, f"/topics/ab-{r}-{i}")
                after = cpu_times(pid)
                row[names[i]] = (sum(after) - sum(before)) / args.deliveries * 1e6
                user[names[i]].append((after[0] - before[0]) / args.deliveries * 1e6)
                system[names[i]].append((after[1] - before[1]) / args.deliveries * 1e6)
            for n in names:
                per[n].append(row[n])
            print(f"{r}," + ",".join(f"{row[n]:.1f}" for n in names), flush=True)
    finally:
        stack.stop()
    for n in names:
        print(f"# {n}: median {statistics.median(per[n]):.1f} us, best {min(per[n]):.1f} us "
              f"(medians: user {statistics.median(user[n]):.1f} us, system {statistics.median(system[n]):.1f} us)")
    if len(names) > 1:
        for n in names[1:]:
            ratios = [b / a for a, b in zip(per[names[0]], per[n])]
            # Compared as printed: the CPU times come in clock ticks, and
            # the float arithmetic that spreads them per delivery can make
            # two equal counts differ in the last bit.
            pairs = [(round(a, 1), round(b, 1)) for a, b in zip(per[names[0]], per[n])]
            lower = sum(b < a for a, b in pairs)
            equal = sum(b == a for a, b in pairs)
            print(f"# {n} / {names[0]}: median ratio {statistics.median(ratios):.3f}, "
                  f"lower in {lower}" + (f", equal in {equal}" if equal else "") + f" of {len(ratios)} rounds")
    return 0


if __name__ == "__main__":
    sys.exit(main())
