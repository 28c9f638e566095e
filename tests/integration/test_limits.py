"""Cosmos DB's 2 MB document limit, checked by the component before anything
is sent: with the body limit raised above 2 MB, an event whose document
would exceed 2 MB is refused with 413 `DocumentTooLarge`; the signature
check in front of the Cosmos server sees no request and nothing is
written, not even the delivery's other, small events."""

import json
import re
import uuid

from integration.eventgrid import custom_event
from integration.test_foundation import count, post

MAX_DOCUMENT_BYTES = 2 * 1024 * 1024


def test_a_document_over_2_mb_is_refused_before_sending(stack):
    app = stack.serve_app(name="app-big-bodies", overrides={"SPIN_VARIABLE_MAX_BODY_BYTES": str(6 * 1024 * 1024)})
    topic = f"/topics/too-large-{uuid.uuid4()}"
    big = custom_event(topic, blob="x" * (MAX_DOCUMENT_BYTES + 1024))
    for delivery in ([big], [custom_event(topic), big, custom_event(f"{topic}-other")]):
        before = stack.sigcheck_stats()
        status, _, body = post(f"{app.url}/events", delivery)
        assert status == 413, body
        assert body["error"]["code"] in ("DocumentTooLarge", "BatchTooLarge")
        assert "2097152" in body["error"]["message"] or "2 MB" in body["error"]["message"]
        assert stack.sigcheck_stats()["total"] == before["total"], "nothing may reach Cosmos DB"
    assert count(stack, "c.pk = @pk OR c.pk = @o",
                 [{"name": "@pk", "value": topic}, {"name": "@o", "value": f"{topic}-other"}]) == 0
    # Just under the limit is written.
    ok = custom_event(topic, blob="x" * (MAX_DOCUMENT_BYTES - 4096))
    status, _, body = post(f"{app.url}/events", [ok])
    assert status == 200, body


def hsm_calls(stack) -> int:
    """Every call the HSM stand-in has seen: answered (get, wrapkey,
    unwrapkey), refused by status, or faulted."""
    stats = stack.hsm_admin("GET", "stats")
    return sum(v for k, v in stats.items() if isinstance(v, int) and k != "pending_faults")


def test_stage_two_refuses_an_oversized_document_before_any_key_is_asked_for(stack):
    """Sealing only makes a document larger: one already over 2 MB unsealed
    is refused (413, the same answer as after sealing) before the key check
    and the wrap, so it is not answered 503 and retried while the HSM is
    down. So is one that only the sealing pushes over the limit, its sealed
    size computed before the wrap (see test_sealed_size_is_known_before_the_wrap).
    One over the limit only with the actual key id and wrapped key (the
    band between) is refused after the wrap, with nothing written."""
    app = stack.serve_app(name="app-big-sealed", overrides=stack.stage_two(
        "client-secret", hsm_key_check_secs="0", max_body_bytes=str(4 * 1024 * 1024),
        protected_fields='{"*": ["/data/secret"]}'))
    topic = f"/topics/too-large-sealed-{uuid.uuid4()}"
    pk = [{"name": "@pk", "value": topic}]

    # Proof that the counter sees this app's calls: a small delivery wraps.
    before = hsm_calls(stack)
    status, _, body = post(f"{app.url}/events", [custom_event(topic, secret="s", n=1)])
    assert status == 200, body
    assert hsm_calls(stack) > before
    assert count(stack, "c.pk = @pk", pk) == 1

    for events in ([custom_event(topic, blob="x" * (2_100_000))],
                   [custom_event(topic, secret="s"), custom_event(topic, blob="x" * 2_100_000, secret="s")]):
        before = stack.hsm_admin("GET", "stats")
        calls, sent = hsm_calls(stack), stack.sigcheck_stats()["total"]
        status, headers, body = post(f"{app.url}/events", events)
        assert status == 413, body
        assert body["error"]["code"] == "DocumentTooLarge"
        assert "2097152" in body["error"]["message"]
        assert headers.get("retry-after") is None
        after = stack.hsm_admin("GET", "stats")
        assert hsm_calls(stack) == calls, f"no key may be asked for: {before} -> {after}"
        assert stack.sigcheck_stats()["total"] == sent, "nothing may reach Cosmos DB"
    assert count(stack, "c.pk = @pk", pk) == 1

    # The band between the two checks. The early answer's figure is the
    # document's sealed size with the shortest key texts; a blob that much
    # shorter puts it exactly on the limit: it passes the early check, is
    # over once the actual key id (a 32-character version) and wrapped key
    # are known, and is refused after the wrap, nothing sent or written.
    secret = "y" * 10_000
    blob = MAX_DOCUMENT_BYTES - len(json.dumps(custom_event(topic, blob="", secret=secret))) - 2_000
    status, _, body = post(f"{app.url}/events", [custom_event(topic, blob="x" * blob, secret=secret)])
    assert (status, body["error"]["code"]) == (413, "DocumentTooLarge"), body
    least = int(re.search(r"at least (\d+) bytes once its protected fields are sealed",
                          body["error"]["message"]).group(1))
    assert least > MAX_DOCUMENT_BYTES
    at_limit = blob - (least - MAX_DOCUMENT_BYTES)

    def send(blob_len: int):
        before, sent = stack.hsm_admin("GET", "stats"), stack.sigcheck_stats()["total"]
        status, headers, body = post(f"{app.url}/events", [custom_event(topic, blob="x" * blob_len, secret=secret)])
        wraps = stack.hsm_admin("GET", "stats").get("wrapkey", 0) - before.get("wrapkey", 0)
        return status, headers, body, wraps, stack.sigcheck_stats()["total"] - sent

    # One byte more than the limit with the shortest texts: refused early.
    status, headers, body, wraps, sent = send(at_limit + 1)
    assert (status, body["error"]["code"]) == (413, "DocumentTooLarge"), body
    assert f"at least {MAX_DOCUMENT_BYTES + 1} bytes" in body["error"]["message"], body
    assert (wraps, sent) == (0, 0)
    # On the limit: wrapped, then refused, its actual size in the answer.
    status, headers, body, wraps, sent = send(at_limit)
    assert (status, body["error"]["code"]) == (413, "DocumentTooLarge"), body
    assert headers.get("retry-after") is None
    assert "once its protected fields are sealed" not in body["error"]["message"], body
    assert (wraps, sent) == (1, 0), "one wrap, no request to Cosmos DB"
    assert count(stack, "c.pk = @pk", pk) == 1
    actual = int(re.search(r"document is (\d+) bytes", body["error"]["message"]).group(1))
    # The band is at least the key id's version less its one character
    # assumed early: 31 with the stand-in's 32-character versions.
    assert actual - MAX_DOCUMENT_BYTES >= 31, body
    # Shorter by what the actual texts add: exactly the limit once sealed,
    # written.
    status, _, body, wraps, sent = send(at_limit - (actual - MAX_DOCUMENT_BYTES))
    assert status == 200, body
    assert wraps == 1 and sent >= 1
    assert count(stack, "c.pk = @pk", pk) == 2


def test_sealed_size_is_known_before_the_wrap(stack):
    """A document under 2 MB unsealed but over it once sealed (each
    protected value becomes base64 of its ciphertext, a third longer, in an
    envelope; the header adds the key id and the wrapped key) is refused
    with 413 before any key is asked for: the HSM stand-in sees no call,
    Cosmos DB no request. Two shapes: one large protected value in a
    document just under the limit, and many tiny ones (`1` grows to 64
    bytes and its pointer is listed in the header) in a body small enough
    that its unsealed size is not even measured. The control just under
    the limit once sealed is written."""
    app = stack.serve_app(name="app-sealed-size", overrides=stack.stage_two(
        "client-secret", hsm_key_check_secs="0", max_body_bytes=str(4 * 1024 * 1024),
        protected_fields='{"*": ["/data/secret", "/data/items/*"]}'))
    topic = f"/topics/sealed-size-{uuid.uuid4()}"
    pk = [{"name": "@pk", "value": topic}]
    written = count(stack, "c.pk = @pk", pk)
    # The event without its blob: what the document adds (id, pk, the
    # envelope of the event) is about 300 bytes more, sealing a 10,000-byte
    # secret about 3,900 (3,400 for its base64, about 500 for the header).
    secret = "y" * 10_000
    event_len = len(json.dumps(custom_event(topic, blob="", secret=secret)))
    blob = MAX_DOCUMENT_BYTES - 2_000 - event_len - 300
    items = [1] * 25_000
    assert len(json.dumps([custom_event(topic, items=items)])) < 100_000
    for event in (custom_event(topic, blob="x" * blob, secret=secret), custom_event(topic, items=items)):
        before = stack.hsm_admin("GET", "stats")
        calls, sent = hsm_calls(stack), stack.sigcheck_stats()["total"]
        status, headers, body = post(f"{app.url}/events", [event])
        assert status == 413, body
        assert body["error"]["code"] == "DocumentTooLarge"
        # The sealed size's answer, not the unsealed one's: under the limit
        # unsealed.
        assert "once its protected fields are sealed" in body["error"]["message"], body
        assert "2097152" in body["error"]["message"]
        assert "yyy" not in body["error"]["message"]
        assert headers.get("retry-after") is None
        after = stack.hsm_admin("GET", "stats")
        assert hsm_calls(stack) == calls, f"no key may be asked for, no wrap: {before} -> {after}"
        assert after.get("wrapkey", 0) == before.get("wrapkey", 0)
        assert stack.sigcheck_stats()["total"] == sent, "nothing may reach Cosmos DB"
    assert count(stack, "c.pk = @pk", pk) == written
    # The control: 4,000 bytes less is under the limit once sealed, wrapped
    # and written.
    calls = hsm_calls(stack)
    status, _, body = post(f"{app.url}/events", [custom_event(topic, blob="x" * (blob - 4_000), secret=secret)])
    assert status == 200, body
    assert hsm_calls(stack) > calls
    assert count(stack, "c.pk = @pk", pk) == written + 1


def test_event_checks_answer_while_the_token_endpoint_is_down(stack):
    """The checks of the events themselves need no credential: with Entra ID
    failing every token request, a delivery with a sealed-shaped value, an
    oversized document (unsealed, or only once sealed) or a protected field
    that cannot be resolved still gets its 4xx (not a 503 that Event Grid or
    the queue bridge would retry for a day), while a valid one gets 503."""
    app = stack.serve_app(name=f"app-tokenless-{uuid.uuid4().hex[:8]}", overrides={
        **stack.stage_two("client-secret", max_body_bytes=str(4 * 1024 * 1024),
                          protected_fields='{"*": ["/data/secret", "/data/items/*"]}'),
        **stack.entra_cosmos("client-secret")})
    topic = f"/topics/tokenless-{uuid.uuid4()}"
    shaped = {"cmk": 1, "iv": "AQEBAQEBAQEBAQEB", "ct": "VYKBVEjJBxCxOAZ7fUU8GbL8v12UrKpcN7Uu3eiS"}
    stack.entra_admin("POST", "faults", [{"status": 500, "count": 200}])
    try:
        status, _, body = post(f"{app.url}/events", [custom_event(topic, note=shaped)])
        assert (status, body["error"]["code"]) == (400, "SealedShapeInEvent"), body
        status, _, body = post(f"{app.url}/events", [custom_event(topic, blob="x" * 2_100_000)])
        assert (status, body["error"]["code"]) == (413, "DocumentTooLarge"), body
        # Over the limit only once sealed (each `1` grows to 64 bytes), on
        # both routes.
        tiny = [custom_event(topic, items=[1] * 25_000)]
        for route in ("events", "queue"):
            status, _, body = post(f"{app.url}/{route}", json.dumps(tiny).encode())
            assert (status, body["error"]["code"]) == (413, "DocumentTooLarge"), (route, body)
            assert "once its protected fields are sealed" in body["error"]["message"], body
        # A wildcard over an object: the field cannot be resolved.
        status, _, body = post(f"{app.url}/events", [custom_event(topic, items={"a": "b"})])
        assert (status, body["error"]["code"]) == (400, "ProtectedFieldUnresolvable"), body
        # The control: this app really has no token.
        status, headers, body = post(f"{app.url}/events", [custom_event(topic)])
        assert status == 503 and headers.get("retry-after"), body
        # Its document seals nothing, but is not written: not logged as such.
        assert '"nothing_sealed"' not in app.logs()
    finally:
        stack.entra_admin("POST", "reset")
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 0
