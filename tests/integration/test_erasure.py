"""Erasure through the component, in the real runtime: `DELETE
/records/{partitionKey}/{id}` with the admin key removes the record from the
local Cosmos server (the official SDK no longer finds it), answers 404 when
repeated, and passes `If-Match` through, so a stale etag gets 412 and
deletes nothing."""

import json
import urllib.error
import urllib.request
import uuid

from azure.cosmos.exceptions import CosmosResourceNotFoundError
import pytest

from harness.stack import read_profile
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import post
from integration.test_records import READ_KEY, enc, get

ADMIN_KEY = read_profile()["SPIN_VARIABLE_ADMIN_KEYS"]


def delete(app, path, key=ADMIN_KEY, if_match=None):
    headers = {"x-cmk-admin-key": key} if key else {}
    if if_match:
        headers["If-Match"] = if_match
    req = urllib.request.Request(f"{app.url}{path}", method="DELETE", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def stored(stack, doc_id, pk):
    return stack.container_client().read_item(doc_id, partition_key=pk)


def test_erasure_removes_the_record_and_is_not_repeated(app, stack):
    topic = f"/topics/erase-{uuid.uuid4()}"
    keep, gone = custom_event(topic, patient="keep"), custom_event(topic, patient="erase me")
    assert post(f"{app.url}/events", [keep, gone])[0] == 200
    path = f"/records/{enc(topic)}/{document_id(topic, gone['id'])}"
    # Only the admin key erases.
    assert delete(app, path, key=None)[0] == 401
    assert delete(app, path, key=READ_KEY)[0] == 403
    status, body = delete(app, path)
    assert (status, body) == (204, b"")
    with pytest.raises(CosmosResourceNotFoundError):
        stored(stack, document_id(topic, gone["id"]), topic)
    assert stored(stack, document_id(topic, keep["id"]), topic)["event"]["data"]["patient"] == "keep"
    status, body = delete(app, path)
    assert status == 404 and body["error"]["code"] == "RecordNotFound", body
    assert get(app, path)[0] == 404


def test_a_stale_etag_deletes_nothing(app, stack):
    topic = f"/topics/erase-etag-{uuid.uuid4()}"
    event = custom_event(topic, patient="versioned")
    assert post(f"{app.url}/events", [event])[0] == 200
    path = f"/records/{enc(topic)}/{document_id(topic, event['id'])}"
    status, headers, _ = get(app, path)
    assert status == 200
    stale = headers["etag"]
    assert post(f"{app.url}/events", [event])[0] == 200  # redelivered: rewritten, new etag
    current = get(app, path)[1]["etag"]
    assert current != stale
    status, body = delete(app, path, if_match=stale)
    assert status == 412 and body["error"]["code"] == "RecordChanged", body
    assert stored(stack, document_id(topic, event["id"]), topic)["_etag"] == current
    assert delete(app, path, if_match=current)[0] == 204
    with pytest.raises(CosmosResourceNotFoundError):
        stored(stack, document_id(topic, event["id"]), topic)
