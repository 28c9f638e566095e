"""Retries against injected faults: the signature check in front of the Cosmos
server answers 429 with x-ms-retry-after-ms, 503, resets the connection or
never answers, for the next requests; the component, in the real runtime,
must retry within its time budget, end with the right status, and never
write a document twice."""

import json
import time
import urllib.request
import uuid

import pytest

from integration.eventgrid import custom_event, document_id
from integration.test_foundation import count, post

BUDGET_MS = 3000


@pytest.fixture(scope="module")
def quick_app(stack):
    """An instance with a short retry budget (attempt timeout: half of it)."""
    return stack.serve_app(name="app-retry", overrides={"SPIN_VARIABLE_COSMOS_RETRY_BUDGET_MS": str(BUDGET_MS)})


@pytest.fixture
def faults(stack):
    def inject(*specs):
        req = urllib.request.Request(f"{stack.sigcheck_url}/_sigcheck/faults", data=json.dumps(list(specs)).encode(),
                                     method="POST")
        with urllib.request.urlopen(req) as r:
            return json.load(r)
    yield inject
    clear_faults(stack)


def clear_faults(stack):
    urllib.request.urlopen(urllib.request.Request(f"{stack.sigcheck_url}/_sigcheck/reset", method="POST")).close()


def deliver(app, stack, n=3):
    topic = f"/topics/retry-{uuid.uuid4()}"
    events = [custom_event(topic, n=i) for i in range(n)]
    before = stack.sigcheck_stats()
    start = time.monotonic()
    status, headers, body = post(f"{app.url}/events", events)
    return topic, events, status, headers, body, time.monotonic() - start, before, stack.sigcheck_stats()


@pytest.mark.parametrize("fault", [
    {"status": 429, "retry_after_ms": 150, "count": 2},
    {"status": 503, "count": 2},
    {"status": 449, "count": 1},
    {"status": 408, "count": 1},
    {"reset": True, "count": 1},
], ids=["429-retry-after", "503", "449", "408", "connection-reset"])
def test_transient_failures_are_retried_to_success(quick_app, stack, faults, fault):
    faults(fault)
    topic, events, status, _, body, took, before, after = deliver(quick_app, stack)
    assert status == 200, body
    assert after["faulted"] - before["faulted"] == fault["count"]
    assert after["forwarded"] - before["forwarded"] == 1  # one batch, applied once
    assert after["pending_faults"] == 0
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == len(events)
    if "retry_after_ms" in fault:
        assert took >= fault["retry_after_ms"] * fault["count"] / 1000
    assert took < BUDGET_MS / 1000 + 1


@pytest.mark.parametrize("op_status", [429, 449])
def test_a_batch_with_a_throttled_operation_is_retried_to_success(quick_app, stack, faults, op_status):
    """The service answers 207 when one operation of a batch fails; a
    throttled one (429, 449) means nothing was applied and the batch may be
    sent again, after the operation's pause."""
    faults({"batch_status": op_status, "retry_after_ms": 250, "count": 2})
    topic, events, status, _, body, took, before, after = deliver(quick_app, stack)
    assert status == 200, body
    assert after["faulted"] - before["faulted"] == 2
    assert after["forwarded"] - before["forwarded"] == 1
    assert took >= 0.5  # both pauses honoured
    assert took < BUDGET_MS / 1000 + 1
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == len(events)


def test_a_batch_throttled_past_the_budget_ends_in_503(quick_app, stack, faults):
    faults({"batch_status": 429, "retry_after_ms": 400, "count": 100})
    topic, _, status, headers, body, took, before, after = deliver(quick_app, stack)
    assert status == 503 and body["error"]["code"] == "StoreUnavailable", body
    assert after["faulted"] - before["faulted"] >= 3
    assert took < BUDGET_MS / 1000 + 1
    clear_faults(stack)
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 0


def test_a_hung_connection_times_out_and_is_retried(quick_app, stack, faults):
    faults({"hang_ms": BUDGET_MS, "count": 1})
    topic, events, status, _, body, took, before, after = deliver(quick_app, stack)
    assert status == 200, body
    assert BUDGET_MS / 2000 <= took < BUDGET_MS / 1000 + 1
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == len(events)


def test_persistent_unavailability_ends_in_503_with_retry_after_inside_the_budget(quick_app, stack, faults):
    faults({"status": 503, "count": 100})
    topic, _, status, headers, body, took, before, after = deliver(quick_app, stack)
    assert status == 503
    assert body["error"]["code"] == "StoreUnavailable"
    assert int(headers["Retry-After"]) >= 1
    assert took < BUDGET_MS / 1000 + 1
    assert after["faulted"] - before["faulted"] >= 3  # it did retry
    assert after["forwarded"] == before["forwarded"]
    clear_faults(stack)
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 0


def test_a_pause_longer_than_the_budget_is_passed_on_to_the_sender(quick_app, stack, faults):
    faults({"status": 429, "retry_after_ms": 7000, "count": 1})
    topic, _, status, headers, body, took, before, after = deliver(quick_app, stack)
    assert status == 503
    assert headers["Retry-After"] == "7"
    assert took < 1.5  # no pointless wait
    assert after["faulted"] - before["faulted"] == 1
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 0


def test_redelivery_after_a_failure_writes_each_document_once(quick_app, stack, faults):
    """The sender retries a delivery that got 503: exactly one document per event."""
    topic = f"/topics/redeliver-{uuid.uuid4()}"
    events = [custom_event(topic, n=i) for i in range(5)] + [custom_event(f"/topics/other-{uuid.uuid4()}")]
    faults({"status": 503, "count": 100})
    status, _, _ = post(f"{quick_app.url}/events", events)
    assert status == 503
    clear_faults(stack)
    for _ in range(2):
        status, _, body = post(f"{quick_app.url}/events", events)
        assert status == 200, body
    ids = [document_id(e["topic"], e["id"]) for e in events]
    assert sum(count(stack, "c.id = @id", [{"name": "@id", "value": i}]) for i in ids) == len(events)


@pytest.mark.parametrize("mode", ["upsert", "create"])
def test_a_write_applied_but_unanswered_is_retried_without_a_second_document(stack, faults, mode):
    """The store applied the write and the answer was lost (the connection
    reset after forwarding): the component retries, and the retry finds the
    write already there. Upsert replaces it; create mode gets 409, reads the
    stored document back and, as it holds the same event, answers 200."""
    app = stack.serve_app(name=f"app-lost-answer-{mode}", overrides={
        "SPIN_VARIABLE_COSMOS_WRITE_MODE": mode, "SPIN_VARIABLE_COSMOS_RETRY_BUDGET_MS": "5000"})
    topic = f"/topics/lost-answer-{mode}-{uuid.uuid4()}"
    events = [custom_event(topic, n=i) for i in range(3)]
    before = stack.sigcheck_stats()
    faults({"lose_answer": True})
    status, _, body = post(f"{app.url}/events", events)
    assert status == 200, body
    after = stack.sigcheck_stats()
    assert after["faulted"] - before["faulted"] == 1, "the answer of the first write was lost"
    assert after["forwarded"] - before["forwarded"] >= 2, "the write went through, then was sent again"
    ids = [document_id(topic, e["id"]) for e in events]
    assert sum(count(stack, "c.id = @id", [{"name": "@id", "value": i}]) for i in ids) == len(events)
    stored = stack.container_client().read_item(ids[0], partition_key=topic)
    assert stored["event"]["data"] == {"n": 0}
