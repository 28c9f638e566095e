"""The first slice end to end: the built component, served by a real Wasm
runtime, writes Event Grid deliveries into a real local Cosmos REST server
through a signature check that recomputes every master-key signature with the
official Python SDK. Documents are read back with that SDK."""

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from harness.stack import ROOT, env, read_profile
from integration.eventgrid import STORAGE_EVENT, VALIDATION, custom_event, document_id


INGEST_KEY = read_profile()["SPIN_VARIABLE_INGEST_KEYS"]


def post(url, body, content_type="application/json", headers=None, key=INGEST_KEY):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    auth = {"x-cmk-ingest-key": key} if key else {}
    req = urllib.request.Request(url, data=data, method="POST",
                                 headers={"content-type": content_type, **auth, **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")
    except urllib.error.URLError as e:
        if not isinstance(e.reason, (BrokenPipeError, ConnectionResetError)):
            raise
        # The component answered (413) before the whole body was sent and
        # closed the connection: send again, keep reading past the broken
        # send, and read the answer it wrote.
        return post_tolerating_early_answer(url, data, req.headers)


def post_tolerating_early_answer(url, data, headers):
    import http.client
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    try:
        conn.putrequest("POST", u.path + (f"?{u.query}" if u.query else ""))
        for k, v in headers.items():
            conn.putheader(k, v)
        conn.putheader("Content-Length", str(len(data)))
        conn.endheaders()
        try:
            for i in range(0, len(data), 65536):
                conn.send(data[i:i + 65536])
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = conn.getresponse()
        return r.status, r.headers, json.loads(r.read() or b"null")
    finally:
        conn.close()


def count(stack, where: str, params: list) -> int:
    items = stack.container_client().query_items(
        f"SELECT VALUE COUNT(1) FROM c WHERE {where}", parameters=params, enable_cross_partition_query=True)
    return list(items)[0]


def count_ids(stack, ids) -> int:
    return sum(count(stack, "c.id = @id", [{"name": "@id", "value": i}]) for i in ids)


def test_liveness(app):
    with urllib.request.urlopen(f"{app.url}/healthz") as r:
        assert r.status == 200
        assert json.load(r) == {"status": "ok"}


def test_subscription_validation_handshake(app, stack):
    before = stack.sigcheck_stats()["forwarded"]
    status, _, body = post(f"{app.url}/events", VALIDATION, headers={"aeg-event-type": "SubscriptionValidation"})
    assert status == 200
    assert body == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert stack.sigcheck_stats()["forwarded"] == before, "the handshake must not write"


def test_one_event_lands_exactly_once(app, stack):
    event = dict(STORAGE_EVENT, id=str(uuid.uuid4()))
    want_id = document_id(event["topic"], event["id"])
    status, _, body = post(f"{app.url}/events", [event], headers={"aeg-event-type": "Notification"})
    assert status == 200, body
    assert body["accepted"] == 1
    assert body["documents"][0]["id"] == want_id
    assert body["documents"][0]["status"] == 201

    doc = stack.container_client().read_item(want_id, partition_key=event["topic"])
    assert doc["pk"] == event["topic"]
    assert doc["v"] == 1 and doc["encoding"] == "eventgrid"
    ce = doc["event"]
    assert (ce["specversion"], ce["id"], ce["source"], ce["type"]) == (
        "1.0", event["id"], event["topic"], "Microsoft.Storage.BlobCreated")
    assert ce["subject"] == event["subject"] and ce["time"] == event["eventTime"]
    assert ce["data"] == event["data"]
    assert ce["dataversion"] == "" and ce["metadataversion"] == "1"

    # Event Grid redelivers: still one document, unchanged content.
    status, _, body = post(f"{app.url}/events", [event])
    assert status == 200 and body["documents"][0]["status"] == 200
    assert count_ids(stack, [want_id]) == 1
    again = stack.container_client().read_item(want_id, partition_key=event["topic"])
    assert again["event"] == ce


def test_batch_lands_exactly_once_across_replays(app, stack):
    topic = f"/subscriptions/s/resourceGroups/rg/providers/Microsoft.EventGrid/topics/batch-{uuid.uuid4()}"
    events = [custom_event(topic, n=i, note="ünïcode ✓") for i in range(40)]
    for attempt in range(3):
        before = stack.sigcheck_stats()["forwarded"]
        status, _, body = post(f"{app.url}/events", events)
        assert status == 200, body
        assert body["accepted"] == 40
        # One partition key: one transactional batch, one Cosmos request.
        assert body["requests"] == 1
        assert stack.sigcheck_stats()["forwarded"] == before + 1
        assert {d["status"] for d in body["documents"]} == ({201} if attempt == 0 else {200})
    ids = {document_id(topic, e["id"]) for e in events}
    assert {d["id"] for d in body["documents"]} == ids
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 40
    assert count_ids(stack, ids) == 40
    doc = stack.container_client().read_item(document_id(topic, events[7]["id"]), partition_key=topic)
    assert doc["event"]["data"] == {"n": 7, "note": "ünïcode ✓"}


def test_mixed_partitions_batch_per_group(app, stack):
    topics = [f"/topics/mixed-{uuid.uuid4()}" for _ in range(3)]
    events = [custom_event(topics[i % 3], n=i) for i in range(30)] + [custom_event(f"/topics/solo-{uuid.uuid4()}")]
    before = stack.sigcheck_stats()["forwarded"]
    status, _, body = post(f"{app.url}/events", events)
    assert status == 200, body
    assert body["requests"] == 4
    assert stack.sigcheck_stats()["forwarded"] == before + 4
    for t in topics:
        assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": t}]) == 10


def test_wrong_master_key_gets_the_documented_error_and_writes_nothing(stack):
    wrong = stack.serve_app(
        name="app-wrong-key",
        overrides={"SPIN_VARIABLE_COSMOS_KEY": "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXk="},
    )
    topic = f"/topics/wrong-key-{uuid.uuid4()}"
    before = stack.sigcheck_stats()
    status, headers, body = post(f"{wrong.url}/events", [custom_event(topic)])
    assert status == 502, body
    assert body["error"]["code"] == "StoreAuthFailed"
    assert "Unauthorized" in body["error"]["message"]
    assert "retry-after" not in {k.lower() for k in headers}
    after = stack.sigcheck_stats()
    assert after["rejected"] == before["rejected"] + 1
    assert after["forwarded"] == before["forwarded"]
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 0
    logs = wrong.logs()
    assert "documents_write_failed" in logs
    assert wrong.variables["SPIN_VARIABLE_COSMOS_KEY"] not in logs


@pytest.mark.parametrize("name, body, content_type, status, code", [
    ("not json", b"{nope", "application/json", 400, "InvalidEvent"),
    ("not an array", b'{"id":"1"}', "application/json", 400, "InvalidEvent"),
    ("empty batch", b"[]", "application/json", 400, "InvalidEvent"),
    ("missing eventType", None, "application/json", 400, "InvalidEvent"),
    ("wrong media type", None, "text/plain", 415, "UnsupportedMediaType"),
    ("over 1 MB", None, "application/json", 413, "BodyTooLarge"),
])
def test_bad_input_is_refused_with_a_reason_and_writes_nothing(app, stack, name, body, content_type, status, code):
    topic = f"/topics/bad-{uuid.uuid4()}"
    good = custom_event(topic)
    if body is None:
        if name == "missing eventType":
            bad = custom_event(topic)
            del bad["eventType"]
            body = json.dumps([good, bad]).encode()
        elif name == "over 1 MB":
            body = json.dumps([custom_event(topic, blob="x" * (1024 * 1024))]).encode()
        else:
            body = json.dumps([good]).encode()
    before = stack.sigcheck_stats()["forwarded"]
    got, _, resp = post(f"{app.url}/events", body, content_type=content_type)
    assert got == status, resp
    assert resp["error"]["code"] == code and resp["error"]["message"]
    if name == "missing eventType":
        assert "event 1" in resp["error"]["message"] and "eventType" in resp["error"]["message"]
    assert stack.sigcheck_stats()["forwarded"] == before
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 0


def test_unknown_routes_and_methods(app):
    for method, path, status in [("GET", "/nope", 404), ("GET", "/events", 405), ("DELETE", "/healthz", 405)]:
        req = urllib.request.Request(f"{app.url}{path}", method=method)
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(req)
        assert e.value.code == status
        assert json.loads(e.value.read())["error"]["code"]


def test_logs_hold_no_secret(app, stack):
    post(f"{app.url}/events", [custom_event("/topics/log-scan")])
    logs = app.logs()
    assert stack.cosmos_key not in logs
    assert INGEST_KEY not in logs
    # Logs are JSON lines with event names and request metrics.
    lines = [json.loads(l[l.index("{"):]) for l in logs.splitlines() if "{" in l]
    written = [l for l in lines if l.get("event") == "documents_written"]
    assert written and all({"request_charge", "attempts", "duration_ms", "documents"} <= set(l) for l in written)


def test_reads_log_their_request_charge(app, stack):
    from integration.test_records import enc, get

    topic = f"/topics/log-read-{uuid.uuid4()}"
    event = custom_event(topic)
    assert post(f"{app.url}/events", [event])[0] == 200
    assert get(app, f"/records/{enc(topic)}/{document_id(topic, event['id'])}")[0] == 200
    assert get(app, f"/records/{enc(topic)}?limit=5")[0] == 200
    lines = [json.loads(l[l.index("{"):]) for l in app.logs().splitlines() if "{" in l]
    reads = [l for l in lines if l.get("event") == "records_read"][-2:]
    assert [r["kind"] for r in reads] == ["one", "page"]
    for r in reads:
        assert {"request_charge", "attempts", "duration_ms", "activity_id", "status"} <= set(r), r
        assert r["request_charge"] > 0 and r["attempts"] == 1  # the local server charges 1 per request


def wit_interfaces(wasm: Path) -> tuple[set[str], set[str]]:
    """Imports and exports of a component, as `package/interface@major.minor`
    (WASI 0.2.x patch releases are compatible)."""
    text = subprocess.run([env("CMK_WASM_TOOLS"), "component", "wit", str(wasm)],
                          check=True, capture_output=True, text=True).stdout
    imports, exports = set(), set()
    for line in text.splitlines():
        parts = line.strip().rstrip(";").split()
        if len(parts) == 2 and parts[0] in ("import", "export") and ":" in parts[1]:
            name, _, version = parts[1].partition("@")
            major_minor = ".".join(version.split(".")[:2])
            (imports if parts[0] == "import" else exports).add(f"{name}@{major_minor}")
    return imports, exports


def test_component_imports_stay_inside_the_declared_world(tmp_path):
    tools = env("CMK_WASM_TOOLS")
    core = tmp_path / "world-core.wasm"
    world = tmp_path / "world.wasm"
    subprocess.run([tools, "component", "embed", "--dummy", str(ROOT / "wit"), "--world", "app", "-o", str(core)], check=True)
    subprocess.run([tools, "component", "new", str(core), "-o", str(world)], check=True)
    allowed_imports, allowed_exports = wit_interfaces(world)
    imports, exports = wit_interfaces(Path(env("CMK_APP_WASM")))
    assert imports <= allowed_imports, f"imports outside wit/world.wit: {sorted(imports - allowed_imports)}"
    assert exports == allowed_exports == {"wasi:http/incoming-handler@0.2"}
    # The shipped artifact is the unplugged app: it imports Spin's variables
    # itself, and nothing from the filesystem or sockets.
    assert "fermyon:spin/variables@2.0" in imports
    assert not any(i.startswith(("wasi:filesystem", "wasi:sockets")) for i in imports)
    # The check can fail: the test-only copy with the Spin stub plugged in
    # imports the filesystem (the stub's key-value files), outside the world.
    plugged, _ = wit_interfaces(Path(env("CMK_TEST_WASM")))
    assert "wasi:filesystem/types@0.2" in plugged - allowed_imports
