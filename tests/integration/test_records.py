"""Reading back through the component, in the real runtime: point reads and
paged, parameterized queries against the local Cosmos server, interoperating
with the official Python SDK in both directions."""

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from harness.stack import read_profile
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import post

READ_KEY = read_profile()["SPIN_VARIABLE_READ_KEYS"]


def get(app, path, key=READ_KEY):
    headers = {"x-cmk-read-key": key} if key else {}
    req = urllib.request.Request(f"{app.url}{path}", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")


def enc(s):
    return urllib.parse.quote(s, safe="")


def test_component_reads_what_it_wrote(app, stack):
    topic = f"/topics/read-{uuid.uuid4()}"
    event = custom_event(topic, patient="p-17", note="ü ✓")
    assert post(f"{app.url}/events", [event])[0] == 200
    doc_id = document_id(topic, event["id"])
    status, headers, body = get(app, f"/records/{enc(topic)}/{doc_id}")
    assert status == 200, body
    sdk = stack.container_client().read_item(doc_id, partition_key=topic)
    assert headers["ETag"] == sdk["_etag"]
    assert body["event"] == sdk["event"]
    assert body["event"]["data"] == {"patient": "p-17", "note": "ü ✓"}
    assert not {"_rid", "_self", "_attachments"} & set(body)


def test_component_reads_what_the_sdk_wrote(app, stack):
    pk = f"sdk-{uuid.uuid4()}"
    item = {"id": "5d" * 32, "pk": pk, "v": 1, "event": {"type": "Sdk.Wrote", "data": {"x": [1, 2]}}}
    stack.container_client().upsert_item(item)
    status, _, body = get(app, f"/records/{enc(pk)}/{enc(item['id'])}")
    assert status == 200, body
    assert {k: body[k] for k in item} == item


@pytest.mark.parametrize("path", [
    "/records/p/written-by-someone-else",  # not a document id
    f"/records/p/{'A' * 64}",  # ids are lowercase
    f"/records/p%0Aforged/{'0' * 64}",  # a control character in the partition key
    "/records/p%1B%5B31m",
])
def test_reads_refuse_ids_the_component_never_writes(app, path):
    got, _, body = get(app, path)
    assert (got, body["error"]["code"]) == (400, "InvalidRequest"), body


def test_missing_record_is_404(app):
    status, _, body = get(app, f"/records/nope/{'0' * 64}")
    assert status == 404 and body["error"]["code"] == "RecordNotFound"


def test_pages_with_continuation_and_type_filter(app, stack):
    topic = f"/topics/page-{uuid.uuid4()}"
    events = [custom_event(topic, n=i) for i in range(23)]
    for e in events[::3]:
        e["eventType"] = "Contoso.Records.Deleted"
    assert post(f"{app.url}/events", events)[0] == 200
    seen, continuation, pages = [], None, 0
    while True:
        q = "?limit=10" + (f"&continuation={enc(continuation)}" if continuation else "")
        status, _, body = get(app, f"/records/{enc(topic)}{q}")
        assert status == 200, body
        assert len(body["records"]) <= 10
        seen += [r["id"] for r in body["records"]]
        pages += 1
        continuation = body["continuation"]
        if not continuation:
            break
        assert pages < 10
    assert pages == 3
    assert sorted(seen) == sorted(document_id(topic, e["id"]) for e in events)
    status, _, body = get(app, f"/records/{enc(topic)}?type=Contoso.Records.Deleted&limit=100")
    assert status == 200
    assert {r["event"]["type"] for r in body["records"]} == {"Contoso.Records.Deleted"}
    assert len(body["records"]) == 8


@pytest.mark.parametrize("key, status, code", [
    (None, 401, "Unauthenticated"),
    ("not-the-read-key-0123", 403, "Forbidden"),
])
def test_readers_need_the_read_key(app, key, status, code):
    got, _, body = get(app, "/records/p/x", key=key)
    assert (got, body["error"]["code"]) == (status, code)


def test_reading_is_off_without_read_keys(stack):
    app = stack.serve_app(name="app-no-read", overrides={"SPIN_VARIABLE_READ_KEYS": ""})
    got, _, body = get(app, "/records/p/x")
    assert (got, body["error"]["code"]) == (403, "ReadDisabled")


def test_the_read_key_is_never_logged(app):
    assert READ_KEY not in app.logs()
