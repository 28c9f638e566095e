"""The deepest inputs the component accepts, in the shipped `.wasm`: its
shadow stack is 128 KiB (build.rs), not Rust's default 1 MiB, so every
recursive step over input (parsing into `serde_json::Value`, the canonical
form of a sealed value, writing documents and answers, dropping them) must
fit in it at the greatest depth any route lets through. An overflow traps
the instance (the runtime's bare 500): each case here must get the
product's own answer instead, and the accepted ones their whole content.

The depths: a delivery or a queue message (as JSON, or once decoded from
base64) is refused past `max_nesting_depth` (at most 100) before it is
parsed; a stored document, a page of them, a peer's answer and a sender's
token claims are parsed by `serde_json`, which refuses more than 127
levels (its recursion limit, 128, counts the level that fails). A build
with 40 KiB of stack fails five of the depth cases, one with 48 KiB passes
them all (`CMK_STACK_SIZE`, build.rs)."""

import base64
import json
import os
import uuid
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey

from harness.stack import TENANT
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import post
from integration.test_peer_bodies import RawPeer
from integration.test_records import enc, get
from integration.test_stage_switch import seal

SERDE_JSON_LEVELS = 127


def nested(levels: int, leaf="bottom"):
    """`levels` objects, one inside the other, around `leaf`."""
    v = leaf
    for _ in range(levels):
        v = {"a": v}
    return v


def depth(v) -> int:
    """Nesting levels of objects and arrays in `v`."""
    if isinstance(v, dict):
        return 1 + max((depth(x) for x in v.values()), default=0)
    if isinstance(v, list):
        return 1 + max((depth(x) for x in v), default=0)
    return 0


def leb128(b: bytes, i: int, signed=False) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = b[i]
        i += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            if signed and byte & 0x40:
                result -= 1 << shift
            return result, i


def memory_layout(core: bytes) -> dict:
    """The first memory's minimum pages, the first global's `i32.const`
    (wasm-ld's `__stack_pointer`) and the lowest active data offset of a
    core module (the Wasm binary format, sections 5, 6 and 11)."""
    out, i = {}, 8
    while i < len(core):
        section, (size, i) = core[i], leb128(core, i + 1)
        body, i = core[i:i + size], i + size
        if section == 5:
            _, j = leb128(body, 0)
            out["min_pages"], _ = leb128(body, j + 1)
        elif section == 6 and "stack_pointer" not in out:
            _, j = leb128(body, 0)
            assert body[j:j + 3] == b"\x7f\x01\x41", "a mutable i32 global set by i32.const"
            out["stack_pointer"], _ = leb128(body, j + 3, signed=True)
        elif section == 11:
            count, j = leb128(body, 0)
            offsets = []
            for _ in range(count):
                flags, j = leb128(body, j)
                assert flags == 0, "active segments of memory 0"
                assert body[j] == 0x41
                offset, j = leb128(body, j + 1, signed=True)
                length, j = leb128(body, j + 1)
                offsets.append(offset)
                j += length
            out["data_start"] = min(offsets)
    return out


def test_the_shipped_build_has_128_kib_of_stack_below_its_data():
    """The layout the rest of this file relies on, read from the `.wasm`
    itself: the stack pointer starts at 128 KiB (build.rs), the data lies
    above it (`--stack-first`: an overflow traps rather than overwrites),
    and the memory starts at no more than 4 pages."""
    main = main_layout(Path(os.environ["CMK_APP_WASM"]))
    assert main["stack_pointer"] == 128 * 1024 == main["data_start"], main
    assert main["min_pages"] <= 4, main


def main_layout(wasm: Path) -> dict:
    """[`memory_layout`] of a component's one core module with data."""
    component = wasm.read_bytes()
    layouts, i = [], 8
    while i < len(component):
        section, (size, i) = component[i], leb128(component, i + 1)
        if section == 1:  # a core module inside the component
            layouts.append(memory_layout(component[i:i + size]))
        i += size
    main = [l for l in layouts if "data_start" in l]
    assert len(main) == 1, layouts
    return main[0]


def product_answer(status, body):
    """The product's JSON error or success, not a trapped instance's page."""
    assert isinstance(body, dict) and (status < 400 or body.get("error", {}).get("code")), (status, body)


@pytest.fixture(scope="module")
def app(stack):
    return stack.serve_app(name="app-stack-depth", overrides=stack.stage_two(
        "client-secret", max_nesting_depth="100", read_accept_unsealed="true",
        protected_fields='{"*": ["/data/deep", "/data/path"]}'))


def test_a_delivery_at_the_greatest_nesting_is_sealed_and_read_back_whole(app, stack):
    topic = f"/topics/deep-{uuid.uuid4()}"
    event = custom_event(topic)
    # The body is [event], so the data's members start at level 3: the
    # sealed subtree reaches level 100, the limit's greatest value.
    event["data"] = {"deep": nested(97), "path": nested(40, "x" * 50), "plain": nested(90)}
    assert depth([event]) == 100
    status, _, body = post(f"{app.url}/events", [event])
    assert status == 200, body
    doc_id = document_id(topic, event["id"])
    stored = stack.container_client().read_item(doc_id, partition_key=topic)
    assert stored["cmk"]["fields"] == ["/event/data/deep", "/event/data/path"]
    assert "bottom" not in json.dumps(stored["event"]["data"]["deep"])
    status, _, body = get(app, f"/records/{enc(topic)}/{doc_id}")
    assert status == 200, body
    assert body["event"]["data"] == event["data"]
    # One level more is refused before parsing.
    event["data"]["deep"] = nested(98)
    status, _, body = post(f"{app.url}/events", [event])
    assert (status, body["error"]["code"]) == (400, "NestingTooDeep"), body


def test_a_stored_document_at_the_parsers_limit_is_returned_whole(app, stack):
    pk = f"deep-doc-{uuid.uuid4()}"
    # The document's own object and `event`: two levels.
    fits = {"id": "d" * 64, "pk": pk, "event": {"data": nested(SERDE_JSON_LEVELS - 2)}}
    assert depth(fits) == SERDE_JSON_LEVELS
    stack.container_client().upsert_item(fits)
    status, _, body = get(app, f"/records/{enc(pk)}/{fits['id']}")
    assert status == 200, body
    assert body["event"] == fits["event"]
    beyond = {"id": "e" * 64, "pk": pk, "event": {"data": nested(SERDE_JSON_LEVELS + 500)}}
    stack.container_client().upsert_item(beyond)
    status, _, body = get(app, f"/records/{enc(pk)}/{beyond['id']}")
    product_answer(status, body)
    assert status >= 400


def test_a_first_stage_document_at_the_parsers_limit_is_sealed_whole(stack):
    """`POST /admin/seal` parses the page, seals the deep field's canonical
    form and writes the record back: the deepest work on stored input. A
    document deeper than the parser takes (written by something else) is
    reported as failed, and the pass goes on past it."""
    db = stack.cosmos_client().get_database_client(stack.database)
    container = db.create_container(f"deep-seal-{uuid.uuid4().hex[:8]}", PartitionKey("/pk"))
    app = stack.serve_app(name="app-stack-depth-seal", overrides=stack.stage_two(
        "client-secret", cosmos_container=container.id, protected_fields='{"*": ["/data/deep"]}'))
    pk = f"deep-seal-{uuid.uuid4()}"
    # The document, `event` and `data`: three levels. Each document of a
    # page is parsed on its own, so the page's object and array do not count.
    doc = {"id": "a" * 64, "pk": pk, "event": {"type": "T", "data": {"deep": nested(SERDE_JSON_LEVELS - 3)}}}
    assert depth(doc) == SERDE_JSON_LEVELS
    container.upsert_item(doc)
    foreign = {"id": "b" * 64, "pk": pk, "event": {"type": "T", "data": {"deep": nested(SERDE_JSON_LEVELS)}}}
    container.upsert_item(foreign)
    status, body = seal(app)
    assert status == 200 and body["sealed"] == 1 and body["continuation"] is None, body
    assert body["failed"] == 1 and body["failedDocuments"][0]["id"] == foreign["id"], body
    assert "recursion limit" in body["failedDocuments"][0]["reason"], body
    stored = container.read_item(doc["id"], partition_key=pk)
    assert stored["cmk"]["fields"] == ["/event/data/deep"] and "bottom" not in json.dumps(stored)
    status, _, body = get(app, f"/records/{enc(pk)}/{doc['id']}")
    assert status == 200 and body["event"] == doc["event"], body
    assert container.read_item(foreign["id"], partition_key=pk)["event"] == foreign["event"], "left as it is"
    # A page of the partition lists it as unreadable, the rest as records.
    status, _, body = get(app, f"/records/{enc(pk)}")
    assert status == 200 and [r["id"] for r in body["records"]] == [doc["id"]], body
    assert [(u["id"], u["error"]["code"]) for u in body["unreadable"]] == [(foreign["id"], "StoreRejected")], body
    assert any(l.get("event") == "record_unreadable" and l.get("id") == foreign["id"]
               for l in map(json.loads, (x for x in app.logs().splitlines() if x.startswith("{")))), app.logs()


def deep_member_event(topic, levels):
    """An Event Grid event whose unknown member `x` nests `levels` deep (its
    `data` stays shallow), as the text of a one-event array."""
    e = custom_event(topic)
    e["x"] = "DEEP"
    return json.dumps([e]).replace('"DEEP"', '{"a":' * levels + "1" + "}" * levels)


@pytest.mark.parametrize("encoding", ["json", "base64"])
def test_a_queue_message_is_held_to_the_nesting_limit_in_either_encoding(app, stack, encoding):
    """A base64 message is decoded before its depth is known: it is held to
    `max_nesting_depth` before it is parsed, as a message sent as JSON."""
    topic = f"/topics/deep-queue-{uuid.uuid4()}"

    def send(text):
        body = base64.b64encode(text.encode()) if encoding == "base64" else text.encode()
        return post(f"{app.url}/queue", body)
    # The array and the event are two of the 100 levels.
    fits = deep_member_event(topic, 98)
    status, _, body = send(fits)
    assert status == 200, body
    event = json.loads(fits)[0]
    status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, event['id'])}")
    assert status == 200 and body["event"]["x"] == event["x"], body
    for levels in (99, SERDE_JSON_LEVELS, 100_000):
        status, _, body = send(deep_member_event(topic, levels))
        assert (status, body["error"]["code"]) == (400, "NestingTooDeep"), (levels, body)


def test_a_sender_token_with_deep_claims_is_refused_not_a_trap(stack):
    """A bearer token's claims are parsed before its signature is checked:
    at serde_json's 127 levels and past them, the sender gets 401."""
    app = stack.serve_app(name="app-stack-depth-tokens", overrides={
        "SPIN_VARIABLE_INGEST_KEYS": "", "SPIN_VARIABLE_INGEST_ENTRA_AUDIENCES": "api://cmk-ingest",
        "SPIN_VARIABLE_INGEST_ENTRA_TENANT_ID": TENANT, "SPIN_VARIABLE_AZURE_AUTHORITY_HOST": stack.entra_url})

    def b64url(text):
        return base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    for levels in (SERDE_JSON_LEVELS - 1, SERDE_JSON_LEVELS + 1):
        claims = '{"aud":"api://cmk-ingest","x":' + '{"a":' * levels + "1" + "}" * levels + "}"
        bearer = ".".join([b64url('{"alg":"RS256","kid":"k"}'), b64url(claims), b64url("signature")])
        status, _, body = post(f"{app.url}/events", [custom_event(f"/topics/deep-token-{uuid.uuid4()}")],
                               key=None, headers={"authorization": f"Bearer {bearer}"})
        product_answer(status, body)
        assert status == 401, (levels, body)


@pytest.mark.parametrize("levels", [SERDE_JSON_LEVELS, 100_000])
def test_a_deep_document_from_the_store_is_read_whole_or_refused(stack, levels):
    """A point read's answer is parsed whole: a Cosmos DB answering with a
    document of serde_json's 127 levels has it returned whole; deeper, the
    reader gets the product's 502."""
    pk, doc_id = "deep-answer", "d" * 64
    inner = levels - 2  # the document and `event` are two of the levels
    answer = ('{"id":"%s","pk":"%s","event":{"data":' % (doc_id, pk) + '{"a":' * inner + "1"
              + "}" * inner + "}}").encode()
    peer = RawPeer(200, len(answer), answer)
    try:
        app = stack.serve_app(name=f"app-deep-peer-{uuid.uuid4().hex[:8]}", tls=False, overrides={
            "SPIN_VARIABLE_COSMOS_ENDPOINT": peer.url, "SPIN_VARIABLE_COSMOS_RETRY_BUDGET_MS": "2000"})
        status, _, body = get(app, f"/records/{pk}/{doc_id}")
        product_answer(status, body)
        assert peer.requests >= 1
        if levels <= SERDE_JSON_LEVELS:
            assert status == 200 and depth(body) == levels, body
        else:
            assert status == 502, body
    finally:
        peer.close()
