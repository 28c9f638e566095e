"""Bounded work per request, in the real runtime: a delivery's writes to the
store are sent with a bounded number in flight, and a body that stalls or
breaks off mid-upload ends in a retryable 503 instead of holding the
instance or poisoning a good message."""

import http.client
import json
import socket
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from integration.eventgrid import custom_event
from integration.test_foundation import INGEST_KEY, count, post


@pytest.fixture(scope="module")
def bounded(stack):
    return stack.serve_app(name="app-bounded", overrides={
        "SPIN_VARIABLE_COSMOS_MAX_CONCURRENCY": "2",
        "SPIN_VARIABLE_BODY_READ_TIMEOUT_SECS": "2",
    })


def sigcheck(stack, path, body=None):
    req = urllib.request.Request(f"{stack.sigcheck_url}/_sigcheck/{path}", method="POST",
                                 data=json.dumps(body).encode() if body is not None else None)
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def test_writes_of_one_delivery_are_sent_a_few_at_a_time(bounded, stack):
    # Twelve partitions: twelve write units, each held 300 ms by the store.
    events = [custom_event(f"/topics/bounded-{uuid.uuid4()}") for _ in range(12)]
    sigcheck(stack, "reset")
    try:
        sigcheck(stack, "faults", [{"delay_ms": 300, "count": 12}])
        status, _, body = post(f"{bounded.url}/events", events)
        stats = stack.sigcheck_stats()
    finally:
        sigcheck(stack, "reset")
    assert status == 200 and body["accepted"] == 12, body
    assert 1 <= stats["max_in_flight"] <= 2, stats
    for e in events:
        assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": e["topic"]}]) == 1


def raw_post(app, head_body: bytes, length: int, then):
    """POST /events declaring `length` bytes, sending `head_body`, then
    `then(sock)`; returns (status, json body)."""
    u = urllib.parse.urlsplit(app.url)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    try:
        s.sendall((f"POST /events HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
                   f"x-cmk-ingest-key: {INGEST_KEY}\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n")
                  .encode() + head_body)
        then(s)
        r = http.client.HTTPResponse(s, method="POST")
        r.begin()
        return r.status, json.loads(r.read() or b"null")
    finally:
        s.close()


def test_a_body_that_stalls_gets_a_retryable_503_in_time(bounded):
    start = time.monotonic()
    status, body = raw_post(bounded, b'[{"id":', 1000, lambda s: None)
    took = time.monotonic() - start
    assert (status, body["error"]["code"]) == (503, "BodyTimeout"), body
    assert took < 10, took


def test_a_body_that_breaks_off_mid_upload_is_retryable(bounded):
    status, body = raw_post(bounded, b'[{"id":', 1000, lambda s: s.shutdown(socket.SHUT_WR))
    assert status == 503 and body["error"]["code"] in ("BodyUnreadable", "BodyTimeout"), body
