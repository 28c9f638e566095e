"""The key service misbehaving, seen through the component in the real
runtime: Managed HSM throttling (429 with Retry-After) and outages (5xx) are
retried inside the time budget and then answered with 503 + Retry-After,
writing nothing; a key outside its validity window (exp / nbf) stops writes
and reads with its own reason and recovers when the window is fixed. Runs on
a key of its own, so the shared key's state is never touched."""

import time
import uuid

import pytest

from harness.stack import APP_PRINCIPALS
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import count, post
from integration.test_keys import call
from integration.test_records import enc, get

BUDGET_MS = 4000


@pytest.fixture(scope="module")
def faults(stack):
    key = f"faults-kek-{uuid.uuid4().hex[:8]}"
    stack.hsm_admin("POST", "keys", {"name": key, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    app = stack.serve_app(name="app-key-faults", overrides=stack.stage_two(
        "client-secret", hsm_key_name=key, hsm_key_check_secs="0", cosmos_retry_budget_ms=str(BUDGET_MS)))
    yield app, key
    stack.hsm_admin("POST", "reset")  # drops any fault a failed test left pending


def key_stats(stack, key):
    return {k: v for k, v in stack.hsm_admin("GET", "stats")["by_key"].get(key, {}).items()}


def delta(after, before, what):
    return after.get(what, 0) - before.get(what, 0)


def in_topic(stack, topic):
    return count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}])


@pytest.mark.parametrize("op", ["get", "wrapkey"])
def test_a_throttled_write_succeeds_after_the_pause_the_hsm_asked_for(faults, stack, op):
    app, key = faults
    topic = f"/topics/throttled-{uuid.uuid4()}"
    before = key_stats(stack, key)
    stack.hsm_admin("POST", "faults", {"status": 429, "retry_after": 1, "op": op})
    t0 = time.monotonic()
    status, _, body = post(f"{app.url}/events", [custom_event(topic, patient="throttled once")])
    elapsed = time.monotonic() - t0
    assert status == 200, body
    assert 1.0 <= elapsed < BUDGET_MS / 1000, f"waited {elapsed:.2f}s: the Retry-After, inside the budget"
    after = key_stats(stack, key)
    assert delta(after, before, "429") == 1 and delta(after, before, op) == 1, (before, after)
    assert stack.hsm_admin("GET", "stats")["pending_faults"] == 0
    assert in_topic(stack, topic) == 1


def test_a_throttled_read_succeeds_after_the_pause(faults, stack):
    app, key = faults
    topic = f"/topics/throttled-read-{uuid.uuid4()}"
    e = custom_event(topic, patient="read after a pause")
    assert post(f"{app.url}/events", [e])[0] == 200
    stack.hsm_admin("POST", "faults", {"status": 429, "retry_after": 1, "op": "unwrapkey"})
    t0 = time.monotonic()
    status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, e['id'])}")
    elapsed = time.monotonic() - t0
    assert status == 200 and body["event"]["data"]["patient"] == "read after a pause", body
    assert 1.0 <= elapsed < BUDGET_MS / 1000


@pytest.mark.parametrize("fault", [
    {"status": 503, "count": 100, "op": "wrapkey"},
    {"status": 500, "count": 100, "op": "get"},
])
def test_a_persistent_outage_answers_503_inside_the_budget_and_writes_nothing(faults, stack, fault):
    app, key = faults
    topic = f"/topics/outage-{uuid.uuid4()}"
    before = key_stats(stack, key)
    stack.hsm_admin("POST", "faults", fault)
    try:
        t0 = time.monotonic()
        status, headers, body = post(f"{app.url}/events", [custom_event(topic, patient="never written")])
        elapsed = time.monotonic() - t0
        assert (status, body["error"]["code"]) == (503, "KeyServiceUnavailable"), body
        assert int(headers["Retry-After"]) > 0
        assert elapsed < BUDGET_MS / 1000 + 1.5, f"answered after {elapsed:.2f}s"
        after = key_stats(stack, key)
        assert delta(after, before, str(fault["status"])) >= 2, "retried before giving up"
        assert in_topic(stack, topic) == 0
    finally:
        stack.hsm_admin("POST", "reset")
    assert post(f"{app.url}/events", [custom_event(topic, patient="after the outage")])[0] == 200


def test_a_pause_longer_than_the_budget_is_passed_to_the_sender(faults, stack):
    app, key = faults
    topic = f"/topics/long-pause-{uuid.uuid4()}"
    stack.hsm_admin("POST", "faults", {"status": 429, "retry_after": 30, "op": "wrapkey"})
    try:
        t0 = time.monotonic()
        status, headers, body = post(f"{app.url}/events", [custom_event(topic, patient="later")])
        assert (status, body["error"]["code"]) == (503, "KeyServiceUnavailable"), body
        assert time.monotonic() - t0 < 2, "no point waiting longer than the budget"
        assert headers["Retry-After"] == "30"
        assert in_topic(stack, topic) == 0
    finally:
        stack.hsm_admin("POST", "reset")


@pytest.mark.parametrize("window, code", [
    (lambda now: {"exp": now - 60}, "KeyExpired"),
    (lambda now: {"nbf": now + 3600}, "KeyNotYetValid"),
])
def test_a_key_outside_its_validity_window_stops_writes_and_reads(faults, stack, window, code):
    app, key = faults
    topic = f"/topics/window-{uuid.uuid4()}"
    first = custom_event(topic, patient="sealed while valid")
    assert post(f"{app.url}/events", [first])[0] == 200
    first_id = document_id(topic, first["id"])
    stack.hsm_admin("POST", f"keys/{key}/state", window(int(time.time())))
    try:
        status, headers, body = post(f"{app.url}/events", [custom_event(topic, patient="refused")])
        assert (status, body["error"]["code"]) == (503, code), body
        assert int(headers["Retry-After"]) > 0
        # Reads: the HSM would still unwrap outside the window (Key Vault
        # allows it for recovery); the component checks the record's key
        # version itself and refuses.
        before = stack.hsm_admin("GET", "stats")["unwrapkey"]
        status, _, body = get(app, f"/records/{enc(topic)}/{first_id}")
        assert (status, body["error"]["code"]) == (503, code), body
        assert stack.hsm_admin("GET", "stats")["unwrapkey"] == before, "no unwrap was attempted"
        # (With the admin key: an anonymous probe could get the other
        # case's answer from the brief not-ready cache.)
        status, _, body = call(app, "GET", "/readyz", key=None, admin=True)
        assert (status, body["status"], body["error"]["code"]) == (503, "not-ready", code), body
        assert in_topic(stack, topic) == 1
    finally:
        stack.hsm_admin("POST", f"keys/{key}/state", {"exp": None, "nbf": None})
    assert post(f"{app.url}/events", [custom_event(topic, patient="after")])[0] == 200
    status, _, body = get(app, f"/records/{enc(topic)}/{first_id}")
    assert status == 200 and body["event"]["data"]["patient"] == "sealed while valid", body
    assert in_topic(stack, topic) == 2
