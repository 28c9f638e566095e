"""The deepest inputs the component accepts, in the shipped `.wasm`: its
shadow stack is 128 KiB (build.rs), not Rust's default 1 MiB, so every
recursive step over input (parsing into `serde_json::Value`, the canonical
form of a sealed value, writing documents and answers, dropping them) must
fit in it at the greatest depth any route lets through. An overflow traps
the instance (the runtime's bare 500): each case here must get the
product's own answer instead, and the accepted ones their whole content.

The depths: a delivery is refused past `max_nesting_depth` (at most 100)
before it is parsed; a queue message, a stored document and a peer's answer
are parsed by `serde_json`, which refuses more than 127 levels (its
recursion limit, 128, counts the level that fails)."""

import json
import uuid

import pytest
from azure.cosmos import PartitionKey

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
    form and writes the record back: the deepest work on stored input."""
    db = stack.cosmos_client().get_database_client(stack.database)
    container = db.create_container(f"deep-seal-{uuid.uuid4().hex[:8]}", PartitionKey("/pk"))
    app = stack.serve_app(name="app-stack-depth-seal", overrides=stack.stage_two(
        "client-secret", cosmos_container=container.id, protected_fields='{"*": ["/data/deep"]}'))
    pk = f"deep-seal-{uuid.uuid4()}"
    # The page's object and its `Documents` array, the document, `event`
    # and `data`: five levels.
    doc = {"id": "a" * 64, "pk": pk, "event": {"type": "T", "data": {"deep": nested(SERDE_JSON_LEVELS - 5)}}}
    assert depth({"Documents": [doc]}) == SERDE_JSON_LEVELS
    container.upsert_item(doc)
    status, body = seal(app)
    assert status == 200 and body["sealed"] == 1 and body["failed"] == 0, body
    stored = container.read_item(doc["id"], partition_key=pk)
    assert stored["cmk"]["fields"] == ["/event/data/deep"] and "bottom" not in json.dumps(stored)
    status, _, body = get(app, f"/records/{enc(pk)}/{doc['id']}")
    assert status == 200 and body["event"] == doc["event"], body


@pytest.mark.parametrize("levels", [SERDE_JSON_LEVELS, SERDE_JSON_LEVELS + 1, 100_000])
def test_a_deep_queue_message_gets_a_clear_refusal(app, levels):
    message = "[" * levels + "]" * levels
    status, _, body = post(f"{app.url}/queue", message.encode())
    product_answer(status, body)
    assert 400 <= status < 500, body


@pytest.mark.parametrize("levels", [SERDE_JSON_LEVELS - 2, 100_000])
def test_a_deep_answer_from_the_store_is_not_a_trap(stack, levels):
    """A Cosmos DB batch answer whose operation result nests that deep (with
    the array and the result's own object: 127 levels, the most parsed)."""
    inner = "{\"a\":" * levels + "1" + "}" * levels
    answer = f'[{{"statusCode":201,"requestCharge":1.0,"resourceBody":{inner}}}]'.encode()
    peer = RawPeer(200, len(answer), answer)
    try:
        app = stack.serve_app(name=f"app-deep-peer-{uuid.uuid4().hex[:8]}", tls=False, overrides={
            "SPIN_VARIABLE_COSMOS_ENDPOINT": peer.url, "SPIN_VARIABLE_COSMOS_RETRY_BUDGET_MS": "2000"})
        status, _, body = post(f"{app.url}/events", [custom_event(f"/topics/deep-peer-{uuid.uuid4()}")])
        product_answer(status, body)
        assert peer.requests >= 1
    finally:
        peer.close()
