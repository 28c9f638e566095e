"""Calls into the runtime host per delivery, in the real runtime: each
request's summary line counts its Spin variable reads and key-value store
operations (`host`), and a warm stage-two delivery (token and key state
cached) makes the few it needs: every variable read at most once, one store
opened, one entry read (the key's checked state, which keeps the HSM
token), none written. Each variable read is a call across the component boundary on every
request (each request runs in a fresh instance)."""

import collections
import re
import time
import uuid

import pytest

from integration.eventgrid import custom_event
from integration.test_foundation import post
from integration.test_queue_bridge import log_lines, wait_for

# A `wasi:*` call as `wasmtime serve` traces it (WASMTIME_LOG, below).
WASI_CALL = re.compile(r'import\{module="([^"]+)" function="([^"]+)"\}: \S+: call\b')

# What one warm delivery reads with the variables below (stage two, master
# key, ingest keys, a client secret named by `identity`): 8 Cosmos DB, 8
# ingest, 3 read and maintenance, 6 key, 6 identity settings, the
# key-value entry key and the 4 key-scope settings (key_scope_pointer,
# _keys, _key_rule, _unknown: all read, so that one set without the
# pointer is refused, not ignored). A new setting read on deliveries raises
# it, on purpose: each is a host call per request.
VARIABLES_PER_DELIVERY = 36


@pytest.fixture(scope="module")
def sealing(stack):
    return stack.serve_app(name="app-host-calls", overrides=stack.stage_two("client-secret"))


def summaries(app):
    return [l for l in log_lines(app.logs()) if l.get("event") == "request" and l.get("route") == "push"]


def test_a_warm_delivery_makes_few_host_calls(sealing):
    topic = f"/topics/host-calls-{uuid.uuid4()}"
    for i in range(2):
        status, _, body = post(f"{sealing.url}/events", [custom_event(topic, patient=f"Patient {i}")])
        assert status == 200, body
    # The runtime writes a log a moment after answering.
    wait_for(lambda: len(summaries(sealing)) >= 2, timeout=15, what="two delivery summaries")
    first, warm = summaries(sealing)[-2:]
    for line in (first, warm):
        assert line["host"]["variables"] == VARIABLES_PER_DELIVERY, line
        assert line["host"]["kv_open"] == 1, line
    # The second finds the token and the key state cached by the first (or
    # an earlier request of this app).
    assert warm["hsm"]["calls"] == 1 and warm["entra"]["calls"] == 0, warm
    # One entry: the key's state, which keeps the HSM token with it.
    assert warm["host"]["kv_get"] == 1 and warm["host"]["kv_write"] == 0, warm
    assert first["host"]["kv_get"] >= 2, first


def wasi_calls(text):
    """`wasi:*` calls by "module function" in a stretch of the runtime's trace."""
    return collections.Counter(" ".join(m.groups()) for m in map(WASI_CALL.search, text.splitlines()) if m)


def settled(app):
    """The runtime's log once it has stopped growing: a request's answer is
    written (and traced) after its summary line."""
    previous = None
    while (text := app.logs()) != previous:
        previous = text
        time.sleep(0.5)
    return text


def test_a_warm_delivery_makes_few_wasi_calls(stack, monkeypatch):
    """The `wasi:*` calls of one warm batch-1 delivery, as Wasmtime traces
    them (the Spin imports are the stub's there, not counted here): each
    log line and each body under 4 KiB in one write; the request's headers
    fetched from the host once, for every lookup and the route's `ce-*`
    attributes alike; each body read up to its declared length
    with no further read for its end; the clock read only where a deadline
    or a duration needs it; two draws of random bytes, the data key and
    every nonce of the delivery (three protected fields; before, a draw per
    nonce: four). Before: 141 calls in all, 11 `check-write`, 6
    `write`, 3 `blocking-flush`, 5 `headers`, 4 `fields.get`, 7 reads, 17
    clock reads."""
    monkeypatch.setenv("WASMTIME_LOG", "wasmtime_wasi=trace,wasmtime_wasi_http=trace")
    app = stack.serve_app(name="app-wasi-calls", overrides=stack.stage_two(
        "client-secret", protected_fields='{"*": ["/data/patient", "/data/mrn", "/data/notes"]}'),
        runtime="wasmtime")
    monkeypatch.delenv("WASMTIME_LOG")
    topic = f"/topics/wasi-calls-{uuid.uuid4()}"
    for i in range(2):
        status, _, body = post(f"{app.url}/events", [custom_event(topic, patient=f"Patient {i}")])
        assert status == 200, body
    wait_for(lambda: len(summaries(app)) >= 2, timeout=15, what="two delivery summaries")
    mark = len(settled(app))
    status, _, body = post(f"{app.url}/events", [custom_event(topic, patient="Patient 2", mrn="A2", notes="t")])
    assert status == 200, body
    wait_for(lambda: len(summaries(app)) >= 3, timeout=15, what="the third delivery's summary")
    text = settled(app)[mark:]
    calls = wasi_calls(text)
    lines = [l for l in log_lines(text) if "event" in l]
    assert calls["outgoing-handler handle"] == 2, calls  # the HSM wrap, the Cosmos DB write
    # Log lines and the three bodies written (two requests, the answer).
    assert calls["streams [method]output-stream.blocking-write-and-flush"] == len(lines) + 3, (calls, lines)
    for slow in ("check-write", "write", "flush", "blocking-flush"):
        assert calls[f"streams [method]output-stream.{slow}"] == 0, calls
    assert calls["types [method]incoming-request.headers"] == 1, calls
    assert calls["types [method]fields.get"] == 0, calls
    # The request body and the two answers: one read each when it has
    # arrived whole, a second when an answer comes in two pieces (before:
    # 7, a read past the end of each and a wait for it).
    assert calls["streams [method]input-stream.read"] <= 4, calls
    assert calls["monotonic-clock now"] <= 10, calls
    assert calls["random get-random-bytes"] == 2, calls
