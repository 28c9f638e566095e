"""Latency per Cosmos DB operation through the component, on the local
stack (the built .wasm in Wasmtime, the signature check, the local Cosmos
server): each operation timed as a caller sees it, N times, after a
warm-up. Prints a Markdown table for docs/cosmos.md.

    . scripts/bootstrap && cd tests && "$CMK_PYTHON" tools/latency.py [N]

The local server charges 1 request unit per request whatever it does, so
request charges here say nothing about Azure's; they are not reported.
"""

import json
import statistics
import sys
import tempfile
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.stack import KEK_NAME, Stack, read_profile  # noqa: E402
from integration.eventgrid import custom_event, document_id  # noqa: E402

PROFILE = read_profile()
INGEST, READ, ADMIN = (PROFILE[f"SPIN_VARIABLE_{k}_KEYS"] for k in ("INGEST", "READ", "ADMIN"))


def call(method, url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json", **(headers or {})})
    start = time.perf_counter()
    with urllib.request.urlopen(req, timeout=60) as r:
        r.read()
        status = r.status
    took = (time.perf_counter() - start) * 1000
    assert status in (200, 204), status
    return took


def enc(s):
    return urllib.parse.quote(s, safe="")


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 50
    stack = Stack(Path(tempfile.mkdtemp(prefix="cmk-latency-")))
    try:
        stack.start_peers()
        app = stack.serve_app(name="app-latency")
        sealed = stack.serve_app(name="app-latency-sealed", overrides=stack.stage_two("client-secret"))
        ingest = {"x-cmk-ingest-key": INGEST}
        rows = {}

        def measure(name, fn, count=n):
            fn(-1)  # warm-up (token, key state, connections)
            rows[name] = [fn(i) for i in range(count)]

        topic = f"/topics/latency-{uuid.uuid4()}"
        written = []

        def upsert(i):
            e = custom_event(f"{topic}-{i}")
            written.append(e)
            return call("POST", f"{app.url}/events", [e], ingest)

        measure("upsert (1 event)", upsert)
        measure("transactional batch, 10 events",
                lambda i: call("POST", f"{app.url}/events", [custom_event(f"{topic}-b10-{i}") for _ in range(10)], ingest))
        measure("transactional batch, 100 events",
                lambda i: call("POST", f"{app.url}/events", [custom_event(f"{topic}-b100-{i}") for _ in range(100)],
                               ingest), max(5, n // 5))
        read = {"x-cmk-read-key": READ}

        def point_read(i):
            e = written[i % len(written)]
            return call("GET", f"{app.url}/records/{enc(e['topic'])}/{document_id(e['topic'], e['id'])}",
                        headers=read)

        measure("point read", point_read)
        measure("query page (20 of 100 in a partition)",
                lambda i: call("GET", f"{app.url}/records/{enc(f'{topic}-b100-0')}?limit=20", headers=read))
        # Replace: the component replaces (If-Match) only when rewrapping; one
        # call on one record = query + HSM unwrap + wrap + conditional replace.
        stale = f"/topics/latency-rewrap-{uuid.uuid4()}"
        for i in range(n + 1):
            call("POST", f"{sealed.url}/events", [custom_event(stale, n=i)], ingest)
        stack.hsm_admin("POST", f"keys/{KEK_NAME}/rotate")
        measure("rewrap of one record (query, unwrap, wrap, replace with If-Match)",
                lambda i: call("POST", f"{sealed.url}/admin/rewrap?limit=1", {}, {"x-cmk-admin-key": ADMIN}))
        admin = {"x-cmk-admin-key": ADMIN}
        doomed = [e for e in written[: n + 1]]
        measure("delete", lambda i: call(
            "DELETE", f"{app.url}/records/{enc(doomed[i + 1]['topic'])}/"
                      f"{document_id(doomed[i + 1]['topic'], doomed[i + 1]['id'])}", headers=admin))
        print(f"| operation | n | p50 ms | p95 ms | mean ms |")
        print("|---|---|---|---|---|")
        for name, xs in rows.items():
            xs = sorted(xs)
            p95 = xs[min(len(xs) - 1, round(0.95 * (len(xs) - 1)))]
            print(f"| {name} | {len(xs)} | {statistics.median(xs):.1f} | {p95:.1f} | {statistics.fmean(xs):.1f} |")
    finally:
        stack.stop()


if __name__ == "__main__":
    main()
