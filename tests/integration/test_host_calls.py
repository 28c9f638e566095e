"""Calls into the runtime host per delivery, in the real runtime: each
request's summary line counts its Spin variable reads and key-value store
operations (`host`), and a warm stage-two delivery (token and key state
cached) makes the few it needs: every variable read at most once, one store
opened, two entries read (the HSM token, the key's checked state), none
written. Each variable read is a call across the component boundary on every
request (each request runs in a fresh instance)."""

import uuid

import pytest

from integration.eventgrid import custom_event
from integration.test_foundation import post
from integration.test_queue_bridge import log_lines, wait_for

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
    assert warm["host"]["kv_get"] == 2 and warm["host"]["kv_write"] == 0, warm
    assert first["host"]["kv_get"] >= 2, first
