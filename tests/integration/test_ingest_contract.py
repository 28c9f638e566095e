"""The ingest contract on the real runtime: CloudEvents 1.0 in structured,
batch and binary mode, the webhook abuse-protection handshake, and sender
authentication, each checked against what lands in the Cosmos server."""

import json
import urllib.error
import urllib.request
import uuid

import pytest

from integration.eventgrid import document_id
from integration.test_foundation import INGEST_KEY, count, post


def cloud_event(source, **extra):
    # Shaped after the CloudEvents 1.0 specification's JSON example.
    return {"specversion": "1.0", "type": "com.example.someevent", "source": source, "id": str(uuid.uuid4()),
            "time": "2018-04-05T17:31:00Z", "comexampleextension1": "value", "comexampleothervalue": 5,
            "datacontenttype": "application/json", "data": {"appinfoA": "abc", "appinfoB": 123}, **extra}


def test_cloudevents_structured_mode(app, stack):
    e = cloud_event(f"/ce/{uuid.uuid4()}")
    minimal = stack.sigcheck_stats()["minimal"]
    status, _, body = post(f"{app.url}/events", e, content_type="application/cloudevents+json; charset=utf-8")
    assert status == 200, body
    # The write asked for an answer without the document, and got one.
    assert stack.sigcheck_stats()["minimal"] == minimal + 1
    assert body["documents"][0]["status"] == 201
    doc = stack.container_client().read_item(document_id(e["source"], e["id"]), partition_key=e["source"])
    assert doc["encoding"] == "cloudevents"
    assert doc["event"]["comexampleothervalue"] == 5 and doc["event"]["data"] == e["data"]


def test_cloudevents_batch_mode_lands_once(app, stack):
    source = f"/ce/{uuid.uuid4()}"
    events = [cloud_event(source) for _ in range(12)]
    for _ in range(2):
        minimal = stack.sigcheck_stats()["minimal"]
        status, _, body = post(f"{app.url}/events", events, content_type="application/cloudevents-batch+json")
        assert status == 200, body
        assert body["requests"] == 1
        # One transactional batch, its results without the documents.
        assert stack.sigcheck_stats()["minimal"] == minimal + 1
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": source}]) == 12


def test_cloudevents_binary_mode_is_the_same_document(app, stack):
    e = cloud_event(f"/ce/{uuid.uuid4()}")
    headers = {f"ce-{k}": str(v) for k, v in e.items() if k not in ("data", "datacontenttype")}
    status, _, body = post(f"{app.url}/events", json.dumps(e["data"]).encode(), headers=headers)
    assert status == 200, body
    doc_id = document_id(e["source"], e["id"])
    assert body["documents"][0]["id"] == doc_id
    # The same event again in structured mode replaces, never duplicates.
    status, _, body = post(f"{app.url}/events", e, content_type="application/cloudevents+json")
    assert status == 200 and body["documents"][0]["status"] == 200
    assert count(stack, "c.id = @id", [{"name": "@id", "value": doc_id}]) == 1


@pytest.mark.parametrize("mutate, field", [
    (lambda e: e.pop("source"), "source"),
    (lambda e: e.update(specversion="0.3"), "specversion"),
    (lambda e: e.update(time="yesterday"), "time"),
    (lambda e: e.update({"Bad_Ext": 1}), "Bad_Ext"),
])
def test_invalid_cloudevents_are_400_with_the_field(app, stack, mutate, field):
    e = cloud_event(f"/ce/{uuid.uuid4()}")
    mutate(e)
    status, _, body = post(f"{app.url}/events", e, content_type="application/cloudevents+json")
    assert status == 400 and body["error"]["code"] == "InvalidEvent"
    assert field in body["error"]["message"]


def options(app, origin="eventgrid.azure.net", query="", key=INGEST_KEY):
    headers = {"WebHook-Request-Origin": origin} if origin else {}
    if key:
        headers["x-cmk-ingest-key"] = key
    req = urllib.request.Request(f"{app.url}/events{query}", method="OPTIONS", headers=headers)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def test_webhook_abuse_protection_handshake(app):
    status, headers = options(app)
    assert status == 200
    assert headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert headers["WebHook-Allowed-Rate"] == "*"
    assert options(app, key=None)[0] == 401
    assert options(app, origin=None)[0] == 400


def test_senders_must_authenticate(app, stack):
    e = cloud_event(f"/ce/{uuid.uuid4()}")
    ct = "application/cloudevents+json"
    status, _, body = post(f"{app.url}/events", e, content_type=ct, key=None)
    assert (status, body["error"]["code"]) == (401, "Unauthenticated")
    status, _, body = post(f"{app.url}/events", e, content_type=ct, key="not-the-ingest-key-42")
    assert (status, body["error"]["code"]) == (403, "Forbidden")
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": e["source"]}]) == 0


def test_an_ingest_key_in_the_url_is_refused_by_default(app, stack):
    # URLs land in the runtime's and proxies' request logs and in Terraform
    # state: the key belongs in x-cmk-ingest-key.
    e = cloud_event(f"/ce/{uuid.uuid4()}")
    ct = "application/cloudevents+json"
    status, _, body = post(f"{app.url}/events?code={INGEST_KEY}", e, content_type=ct, key=None)
    assert (status, body["error"]["code"]) == (401, "KeyInQueryRefused")
    assert options(app, query=f"?code={INGEST_KEY}", key=None)[0] == 401
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": e["source"]}]) == 0


def test_an_ingest_key_in_the_url_is_taken_and_logged_as_deprecated_when_allowed(stack):
    app = stack.serve_app(name="app-key-in-query", overrides={"SPIN_VARIABLE_INGEST_KEY_IN_QUERY": "allow"})
    e = cloud_event(f"/ce/{uuid.uuid4()}")
    ct = "application/cloudevents+json"
    status, _, body = post(f"{app.url}/events?code={INGEST_KEY}", e, content_type=ct, key=None)
    assert status == 200, body
    assert options(app, query=f"?code={INGEST_KEY}", key=None)[0] == 200
    status, _, body = post(f"{app.url}/events?code=not-the-ingest-key-42", e, content_type=ct, key=None)
    assert (status, body["error"]["code"]) == (403, "Forbidden")
    assert "ingest_key_in_query_deprecated" in app.logs()


def test_without_ingest_keys_deliveries_wait(stack):
    app = stack.serve_app(name="app-no-ingest-key", overrides={"SPIN_VARIABLE_INGEST_KEYS": ""})
    status, headers, body = post(f"{app.url}/events", cloud_event("/ce/x"), content_type="application/cloudevents+json")
    assert (status, body["error"]["code"]) == (503, "ConfigurationError")
    assert int(headers["Retry-After"]) > 0
