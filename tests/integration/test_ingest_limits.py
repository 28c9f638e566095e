"""The ingest contract's remaining classes, in the real runtime: Microsoft's
documented custom-topic and CloudEvents samples, limits checked on the raw
body before parsing, refusals that must never reach the store, two ingest
keys active at once, and decoding before the store's credential is needed."""

import copy
import json
import uuid

import pytest

from integration.eventgrid import VALIDATION, custom_event, document_id
from integration.test_foundation import count, post

# Shaped after the custom-topic sample in Microsoft's "Azure Event Grid event
# schema" page (eventTime in +00:00 form, dataVersion/metadataVersion).
RECORD_INSERTED = {
    "id": "1807",
    "eventType": "recordInserted",
    "subject": "myapp/vehicles/motorcycles",
    "eventTime": "2017-08-10T21:03:07+00:00",
    "data": {"make": "Ducati", "model": "Monster"},
    "dataVersion": "1.0",
    "metadataVersion": "1",
    "topic": "/subscriptions/{subscription-id}/resourceGroups/{resource-group}/providers/Microsoft.EventGrid/topics/{topic}",
}

# Shaped after Microsoft's Blob Storage BlobCreated sample in the CloudEvents
# schema (7-digit fractional seconds, dataschema "#").
BLOB_CREATED_CE = {
    "source": "/subscriptions/{subscription-id}/resourceGroups/{resource-group}/providers/Microsoft.Storage/storageAccounts/{storage-account}",
    "subject": "/blobServices/default/containers/{container}/blobs/{new-file}",
    "type": "Microsoft.Storage.BlobCreated",
    "time": "2022-11-07T18:41:40.9367386Z",
    "id": "b0e88df8-701e-0080-0236-f3a2f4067cdb",
    "data": {
        "api": "PutBlob", "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
        "requestId": "831e1650-001e-001b-66ab-eeb76e000000", "eTag": "0x8D4BCC2E4835CD0",
        "contentType": "image/jpeg", "contentLength": 105891, "blobType": "BlockBlob",
        "url": "https://{storage-account}.blob.core.windows.net/{container}/{new-file}",
        "sequencer": "00000000000004420000000000028963",
        "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"},
    },
    "specversion": "1.0",
    "dataschema": "#",
}


def unique(event, field):
    e = copy.deepcopy(event)
    e[field] = f"{e[field]}-{uuid.uuid4()}"
    return e


def test_microsofts_custom_topic_sample_lands_once(app, stack):
    e = unique(RECORD_INSERTED, "topic")
    for _ in range(2):
        status, _, body = post(f"{app.url}/events", [e])
        assert status == 200, body
    doc = stack.container_client().read_item(document_id(e["topic"], e["id"]), partition_key=e["topic"])
    assert doc["event"]["type"] == "recordInserted" and doc["event"]["time"] == "2017-08-10T21:03:07+00:00"
    assert doc["event"]["data"] == {"make": "Ducati", "model": "Monster"}


def test_microsofts_cloudevents_blob_sample_as_a_batch(app, stack):
    a, b = unique(BLOB_CREATED_CE, "source"), None
    b = copy.deepcopy(a)
    b["id"] = str(uuid.uuid4())
    status, _, body = post(f"{app.url}/events", [a, b], content_type="application/cloudevents-batch+json")
    assert status == 200, body
    doc = stack.container_client().read_item(document_id(a["source"], a["id"]), partition_key=a["source"])
    assert doc["event"]["time"] == "2022-11-07T18:41:40.9367386Z" and doc["event"]["dataschema"] == "#"
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": a["source"]}]) == 2


def refused(app, stack, body, status, code, content_type="application/json", **kw):
    before = stack.sigcheck_stats()["forwarded"]
    got, _, answer = post(f"{app.url}/events", body, content_type=content_type, **kw)
    assert (got, answer["error"]["code"]) == (status, code), answer
    assert stack.sigcheck_stats()["forwarded"] == before, "nothing may reach the store"
    return answer


def test_limits_and_bad_input_classes_are_refused_before_the_store(stack):
    app = stack.serve_app(name="app-limits", overrides={
        "SPIN_VARIABLE_MAX_EVENTS_PER_REQUEST": "5", "SPIN_VARIABLE_MAX_NESTING_DEPTH": "8"})
    topic = f"/topics/limits-{uuid.uuid4()}"
    # Too many events: counted on the raw body (the sixth is not even parsed).
    raw = ("[" + ",".join(json.dumps(custom_event(topic)) for _ in range(5)) + ", {\"broken\": ").encode()
    refused(app, stack, raw, 413, "TooManyEvents")
    # Nesting deeper than allowed, in the body and inside one event's data.
    refused(app, stack, b"[" * 50 + b"]" * 50, 400, "NestingTooDeep")
    deep = custom_event(topic)
    deep["data"] = {"a": {"b": {"c": {"d": {"e": {"f": {"g": {"h": {"i": 1}}}}}}}}}
    refused(app, stack, [deep], 400, "NestingTooDeep")
    # Two events with one source and id; a validation event among others.
    e = custom_event(topic)
    assert "share source and id" in refused(app, stack, [e, e], 400, "InvalidEvent")["error"]["message"]
    refused(app, stack, VALIDATION + [custom_event(topic)], 400, "InvalidEvent",
            headers={"aeg-event-type": "SubscriptionValidation"})
    # A CloudEvent with both data and data_base64.
    ce = {"specversion": "1.0", "id": "1", "source": topic, "type": "T", "data": {}, "data_base64": "AA=="}
    refused(app, stack, ce, 400, "InvalidEvent", content_type="application/cloudevents+json")
    # An Event Grid event carrying a CloudEvents attribute name.
    clash = custom_event(topic)
    clash["source"] = "/elsewhere"
    assert "`source`" in refused(app, stack, [clash], 400, "InvalidEvent")["error"]["message"]
    # Nor in another case, nor the stored form's names for dataVersion and
    # metadataVersion: "Data" would sit beside data, outside the protected
    # fields' pointers.
    for member in ("Data", "dataversion"):
        clash = custom_event(topic)
        clash[member] = {"ssn": "078-05-1120"}
        answer = refused(app, stack, [clash], 400, "InvalidEvent")
        assert f"`{member}`" in answer["error"]["message"] and "078-05" not in json.dumps(answer)
    # Without topic, the namespace of its id (Event Grid always sets it).
    untopical = custom_event(topic)
    del untopical["topic"]
    assert "`topic`" in refused(app, stack, [untopical], 400, "InvalidEvent")["error"]["message"]
    # A partition key longer than the store accepts, or one the read and
    # erase routes could not name (control characters).
    long = custom_event("/" + "t" * 3000)
    refused(app, stack, [long], 400, "InvalidEvent")
    controlled = custom_event(topic + "\n")
    assert "control characters" in refused(app, stack, [controlled], 400, "InvalidEvent")["error"]["message"]
    # A binary-mode attribute whose value is not UTF-8 is refused, not dropped.
    answer = refused(app, stack, b"{}", 400, "InvalidEvent", headers={
        "ce-specversion": "1.0", "ce-id": "1", "ce-source": topic, "ce-type": "T", "ce-subject": b"caf\xe9"})
    assert "`subject`" in answer["error"]["message"], answer
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 0


def test_two_ingest_keys_are_active_while_rotating(stack):
    app = stack.serve_app(name="app-two-keys", overrides={
        "SPIN_VARIABLE_INGEST_KEYS": "old-ingest-key-0123456789,new-ingest-key-0123456789"})
    topic = f"/topics/rotate-keys-{uuid.uuid4()}"
    for key in ("old-ingest-key-0123456789", "new-ingest-key-0123456789"):
        assert post(f"{app.url}/events", [custom_event(topic)], key=key)[0] == 200
    assert post(f"{app.url}/events", [custom_event(topic)], key="retired-key-0123456789")[0] == 403
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 2


def test_bad_bodies_get_400_even_while_the_stores_token_endpoint_is_down(stack):
    # Entra auth for Cosmos DB, with token requests failing: a malformed body
    # must still be refused as permanent (400), and the handshake answered,
    # not turned into a retryable 503.
    app = stack.serve_app(name="app-entra-store-down", overrides={
        "SPIN_VARIABLE_COSMOS_AUTH": "entra", "SPIN_VARIABLE_COSMOS_KEY": "",
        "SPIN_VARIABLE_COSMOS_TOKEN_SCOPE": "https://cosmos.azure.com/.default",
        "SPIN_VARIABLE_IDENTITY": "client-secret", "SPIN_VARIABLE_AZURE_TENANT_ID": "cmk-tenant",
        "SPIN_VARIABLE_AZURE_CLIENT_ID": "app-secret-client",
        "SPIN_VARIABLE_AZURE_CLIENT_SECRET": "not-the-right-secret-0000",
        "SPIN_VARIABLE_AZURE_AUTHORITY_HOST": stack.entra_url})
    got, _, body = post(f"{app.url}/events", b"[{not json", content_type="application/json")
    assert (got, body["error"]["code"]) == (400, "InvalidEvent"), body
    got, _, body = post(f"{app.url}/events", VALIDATION, headers={"aeg-event-type": "SubscriptionValidation"})
    assert got == 200 and "validationResponse" in body, body
    got, _, body = post(f"{app.url}/events", [custom_event(f"/topics/{uuid.uuid4()}")])
    assert got == 503 and body["error"]["code"] == "IdentityFailed", body


def test_queue_metadata_is_not_judged_before_the_sender_is_known(app):
    import urllib.error
    import urllib.request
    req = urllib.request.Request(f"{app.url}/queue", data=b"{}", method="POST",
                                 headers={"x-cmk-queue-dequeue-count": "not-a-number", "content-type": "text/plain"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req, timeout=30)
    assert e.value.code == 401
