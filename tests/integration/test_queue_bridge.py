"""The storage-queue path end to end: messages put by the official Python SDK
(`azure-storage-queue`) into azurite, polled by the built bridge
(`cmk-ingest-bridge`), forwarded to the built component on the real runtime,
landing in the local Cosmos server. Each test uses its own queue; the bridge
creates the poison queue when it first needs it."""

import base64
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.stack import AZURITE_KEY, TENANT
from integration.eventgrid import STORAGE_EVENT, custom_event, document_id
from integration.test_foundation import INGEST_KEY, count, count_ids, post


def new_queue(stack, base64_policy=False):
    name = f"q-{uuid.uuid4().hex[:12]}"
    return name, stack.queue_client(name, base64_policy=base64_policy, create=True)


def poison_texts(stack, name):
    """Texts in `<name>-poison`, as stored (no decoding); [] if it does not exist."""
    from azure.core.exceptions import ResourceNotFoundError

    try:
        return [m.content for m in stack.queue_client(f"{name}-poison").peek_messages(max_messages=32)]
    except ResourceNotFoundError:
        return []


def depth(client):
    return client.get_queue_properties().approximate_message_count


def log_lines(text):
    out = []
    for line in text.splitlines():
        if "{" in line:
            try:
                out.append(json.loads(line[line.index("{"):]))
            except ValueError:
                pass
    return out


def messages_logged(text):
    return [l for l in log_lines(text) if l.get("event") == "message"]


def wait_for(condition, timeout=60.0, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def cloud_event(source, **extra):
    return {"specversion": "1.0", "type": "com.example.someevent", "source": source, "id": str(uuid.uuid4()),
            "time": "2018-04-05T17:31:00Z", "datacontenttype": "application/json",
            "data": {"appinfoA": "abc", "appinfoB": 123}, **extra}


def eventgrid_event(topic):
    # One event as Event Grid's Storage-queue handler writes it: the object itself.
    return dict(STORAGE_EVENT, id=str(uuid.uuid4()), topic=topic)


def test_sdk_messages_flow_through_the_bridge_into_cosmos_exactly_once(app, stack):
    name, raw = new_queue(stack)
    based = stack.queue_client(name, base64_policy=True)
    topic = f"/topics/queue-{uuid.uuid4()}"
    eg_raw, eg_b64 = eventgrid_event(topic), eventgrid_event(topic)
    ce_raw = cloud_event(f"/ce/queue-{uuid.uuid4()}")
    batch_source = f"/ce/queue-batch-{uuid.uuid4()}"
    ce_batch = [cloud_event(batch_source) for _ in range(3)]
    eg_array = [eventgrid_event(topic) for _ in range(2)]
    sent = [raw.send_message(json.dumps(eg_raw)), based.send_message(json.dumps(eg_b64)),
            raw.send_message(json.dumps(ce_raw)), based.send_message(json.dumps(ce_batch)),
            raw.send_message(json.dumps(eg_array))]
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name))
    assert result.returncode == 0, result.stderr

    container = stack.container_client()
    for e in [eg_raw, eg_b64] + eg_array:
        doc = container.read_item(document_id(topic, e["id"]), partition_key=topic)
        assert doc["encoding"] == "eventgrid" and doc["event"]["data"] == e["data"]
    doc = container.read_item(document_id(ce_raw["source"], ce_raw["id"]), partition_key=ce_raw["source"])
    assert doc["encoding"] == "cloudevents" and doc["event"]["data"] == ce_raw["data"]
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": batch_source}]) == 3
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 4

    assert depth(raw) == 0, "every message is deleted once durable"
    assert poison_texts(stack, name) == []
    logged = messages_logged(result.stderr)
    assert sorted(l["message_id"] for l in logged) == sorted(m.id for m in sent)
    assert {l["action"] for l in logged} == {"deleted"} and {l["status"] for l in logged} == {200}
    # The component logged each message with its id and dequeue count (the
    # runtime writes its log a moment after answering: wait for the lines).
    def component_lines():
        return [l for l in log_lines(app.logs()) if l.get("event") == "queue_message"]
    wait_for(lambda: {m.id for m in sent} <= {l["message_id"] for l in component_lines()}, timeout=15,
             what="the component's log line for every message")
    component = component_lines()
    by_id = {l["message_id"]: l for l in component}
    assert {m.id for m in sent} <= set(by_id)
    assert by_id[sent[1].id]["text_encoding"] == "base64" and by_id[sent[0].id]["text_encoding"] == "raw"
    assert all(by_id[m.id]["dequeue_count"] == 1 and by_id[m.id]["forwarder"] == "bridge" for m in sent)
    # Neither log holds a payload, a key or the account key.
    for text in (result.stderr, app.logs()):
        assert "appinfoA" not in text and "PutBlockList" not in text
        assert INGEST_KEY not in text and AZURITE_KEY not in text


def test_redelivered_events_never_duplicate(app, stack):
    name, client = new_queue(stack, base64_policy=True)
    topic = f"/topics/redelivery-{uuid.uuid4()}"
    event = eventgrid_event(topic)
    # The same event enqueued twice (a publisher retry), and a batch holding it.
    client.send_message(json.dumps(event))
    client.send_message(json.dumps(event))
    client.send_message(json.dumps([event, eventgrid_event(topic)]))
    # A message forwarded before but not deleted (a bridge stopped between the
    # two) comes back: here, forward it by hand first, as the bridge would.
    again = client.send_message(json.dumps(event))
    text = base64.b64encode(json.dumps(event).encode()).decode()
    status, _, body = post(f"{app.url}/queue", text.encode(), content_type="text/plain",
                           headers={"x-cmk-queue-message-id": again.id, "x-cmk-queue-dequeue-count": "1"})
    assert status == 200, body
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name))
    assert result.returncode == 0, result.stderr
    assert count_ids(stack, [document_id(topic, event["id"])]) == 1
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 2
    assert depth(client) == 0

    # A message made visible again after a receive that never deleted it.
    client.send_message(json.dumps(event))
    held = next(iter(stack.queue_client(name).receive_messages(visibility_timeout=1)))
    time.sleep(1.5)
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name))
    assert result.returncode == 0, result.stderr
    logged = messages_logged(result.stderr)
    assert [(l["message_id"], l["dequeue_count"], l["action"]) for l in logged] == [(held.id, 2, "deleted")]
    assert count_ids(stack, [document_id(topic, event["id"])]) == 1


@pytest.mark.parametrize("text", [
    "this is not an event",
    json.dumps({"hello": "world"}),
    base64.b64encode(b'{"specversion": "1.0", "id": "x"}').decode(),
    json.dumps([]),
])
def test_malformed_message_goes_to_poison_at_once_and_writes_nothing(app, stack, text):
    name, client = new_queue(stack)
    client.send_message(text)
    before = stack.sigcheck_stats()["forwarded"]
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name, MAX_DEQUEUE_COUNT="5"))
    assert result.returncode == 0, result.stderr
    assert poison_texts(stack, name) == [text], "moved with its text exactly as stored"
    assert depth(client) == 0
    assert stack.sigcheck_stats()["forwarded"] == before, "nothing written"
    (line,) = messages_logged(result.stderr)
    assert (line["action"], line["reason"], line["status"], line["dequeue_count"]) == ("poisoned", "refused", 400, 1)
    assert line["code"] in ("InvalidMessage", "InvalidEvent")
    assert "poison_queue_created" in result.stderr


@pytest.fixture(scope="module")
def unavailable_app(stack):
    """An app whose Cosmos DB is unreachable: every delivery gets 503 +
    Retry-After (StoreUnavailable) after a short retry budget."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    return stack.serve_app(name="app-store-down", overrides={
        "SPIN_VARIABLE_COSMOS_ENDPOINT": f"http://127.0.0.1:{dead}",
        "SPIN_VARIABLE_COSMOS_RETRY_BUDGET_MS": "200",
    })


def test_transient_answers_leave_the_message_then_poison_after_max_tries(unavailable_app, stack):
    status, headers, body = post(f"{unavailable_app.url}/queue", json.dumps(cloud_event("/ce/x")).encode())
    assert (status, body["error"]["code"]) == (503, "StoreUnavailable") and int(headers["Retry-After"]) > 0

    name, client = new_queue(stack)
    text = json.dumps(cloud_event(f"/ce/transient-{uuid.uuid4()}"))
    client.send_message(text)
    bridge = stack.start_bridge(f"bridge-{name}", stack.bridge_env(
        f"{unavailable_app.url}/queue", name, MAX_DEQUEUE_COUNT="3", VISIBILITY_TIMEOUT_SECS="2",
        REQUEST_TIMEOUT_SECS="1"))
    try:
        wait_for(lambda: len(messages_logged(bridge.log.read_text())) >= 1, what="the first try")
        # Left for redelivery: still in the queue, not in poison.
        assert depth(client) == 1 and poison_texts(stack, name) == []
        wait_for(lambda: poison_texts(stack, name), timeout=90, what="the poison queue")
    finally:
        bridge.stop()
    assert poison_texts(stack, name) == [text]
    assert depth(client) == 0
    logged = [(l["dequeue_count"], l["action"], l.get("status")) for l in messages_logged(bridge.log.read_text())]
    assert logged == [(1, "left", 503), (2, "left", 503), (3, "poisoned", 503)], logged
    assert bridge.proc.returncode == 0


def test_an_unreachable_component_loses_nothing(stack):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    name, client = new_queue(stack)
    for i in range(3):
        client.send_message(json.dumps(cloud_event(f"/ce/unreachable-{i}")))
    bridge = stack.start_bridge(f"bridge-{name}", stack.bridge_env(
        f"http://127.0.0.1:{closed}/queue", name, VISIBILITY_TIMEOUT_SECS="2", REQUEST_TIMEOUT_SECS="1"))
    try:
        wait_for(lambda: len(messages_logged(bridge.log.read_text())) >= 6, what="two rounds of tries")
    finally:
        bridge.stop()
    assert bridge.proc.returncode == 0
    logged = messages_logged(bridge.log.read_text())
    assert {l["action"] for l in logged} == {"left"}
    assert all("check BRIDGE_TARGET_URL" in l["hint"] for l in logged)
    wait_for(lambda: depth(client) == 3, what="all three back in the queue")
    assert poison_texts(stack, name) == []


class SlowQueueTarget(BaseHTTPRequestHandler):
    """Answers POST /queue after a pause, so a forward is in flight when the
    bridge is told to stop."""
    delay = 2.0
    seen: list = []

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        SlowQueueTarget.seen.append(self.headers.get("x-cmk-queue-message-id"))
        time.sleep(self.delay)
        self.send_response(200)
        self.send_header("content-type", "application/json")
        # The confirmation the bridge needs to delete a one-event message.
        body = b'{"accepted": 1}'
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_graceful_shutdown_finishes_in_flight_forwards(stack):
    server = ThreadingHTTPServer(("127.0.0.1", 0), SlowQueueTarget)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        name, client = new_queue(stack)
        for i in range(6):
            client.send_message(json.dumps(cloud_event(f"/ce/shutdown-{i}")))
        bridge = stack.start_bridge(f"bridge-{name}", stack.bridge_env(
            f"http://127.0.0.1:{server.server_port}/queue", name, CONCURRENCY="2", BATCH_SIZE="6"))
        wait_for(lambda: len(SlowQueueTarget.seen) >= 2, what="two forwards in flight")
        bridge.proc.send_signal(signal.SIGTERM)
        assert bridge.proc.wait(timeout=30) == 0
        log = bridge.log.read_text()
        lines = log_lines(log)
        stopped = [l for l in lines if l.get("event") == "bridge_stopped"]
        assert stopped and stopped[0]["reason"] == "signal"
        done = [l for l in messages_logged(log) if l["action"] == "deleted"]
        assert len(done) == 2, "the two in-flight forwards finished and were deleted"
        released = [l for l in lines if l.get("event") == "messages_released"]
        assert released and released[0]["count"] == 4
        assert client.get_queue_properties().approximate_message_count == 4, "the rest stay in the queue"
    finally:
        server.shutdown()


def test_wrong_account_key_gets_azurite_403_and_a_clear_error(app, stack):
    name, client = new_queue(stack)
    client.send_message(json.dumps(cloud_event("/ce/wrong-key")))
    wrong = base64.b64encode(b"not-the-account-key-not-the-key!").decode()
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name, ACCOUNT_KEY=wrong))
    assert result.returncode == 1
    (failed,) = [l for l in log_lines(result.stderr) if l.get("event") == "poll_failed"]
    assert "403" in failed["error"] and "AuthenticationFailed" in failed["error"]
    assert "BRIDGE_ACCOUNT_KEY" in failed["hint"]
    assert wrong not in result.stderr and AZURITE_KEY not in result.stderr and INGEST_KEY not in result.stderr
    assert depth(client) == 1


def test_a_refused_ingest_key_leaves_the_message(app, stack):
    name, client = new_queue(stack)
    client.send_message(json.dumps(cloud_event("/ce/wrong-ingest-key")))
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name, INGEST_KEY="not-the-ingest-key-at-all"))
    assert result.returncode == 0, result.stderr
    (line,) = messages_logged(result.stderr)
    assert (line["action"], line["status"], line["code"]) == ("left", 403, "Forbidden")
    assert "BRIDGE_INGEST_KEY" in line["hint"] and "not-the-ingest-key-at-all" not in result.stderr
    assert poison_texts(stack, name) == []


def test_dapr_binding_delivery_shape(app, stack):
    """What a Dapr sidecar's bindings.azure.storagequeues input binding sends
    (route from the component's `route` metadata, the message text as
    application/json, metadata as headers, its app token as dapr-api-token)."""
    e = cloud_event(f"/ce/dapr-{uuid.uuid4()}")
    headers = {"Messageid": str(uuid.uuid4()), "Dequeuecount": "2", "Insertiontime": "2026-11-25T10:00:00Z",
               "Popreceipt": "AgAAAAMAAAAAAAAA", "dapr-api-token": INGEST_KEY}
    status, _, body = post(f"{app.url}/queue", base64.b64encode(json.dumps(e).encode()), key=None, headers=headers)
    assert status == 200, body
    assert body["documents"][0]["id"] == document_id(e["source"], e["id"])
    wait_for(lambda: any(l.get("message_id") == headers["Messageid"] for l in log_lines(app.logs())), timeout=15,
             what="the component's log line")
    line = [l for l in log_lines(app.logs()) if l.get("message_id") == headers["Messageid"]][0]
    assert (line["forwarder"], line["dequeue_count"], line["status"]) == ("dapr", 2, 200)
    # Dapr checks that the app handles the route with OPTIONS: 405 counts as yes.
    req = urllib.request.Request(f"{app.url}/queue", method="OPTIONS")
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(req)
    assert err.value.code == 405


def post_refused_early(app, body):
    """POSTs a body the component refuses from its Content-Length alone: it
    may answer and close before the body is sent, so read the answer even
    when sending breaks off."""
    import http.client

    conn = http.client.HTTPConnection(app.url.removeprefix("http://"), timeout=60)
    try:
        try:
            conn.request("POST", "/queue", body=body,
                         headers={"content-type": "text/plain", "x-cmk-ingest-key": INGEST_KEY})
        except (BrokenPipeError, ConnectionResetError):
            pass
        r = conn.getresponse()
        return r.status, json.loads(r.read())
    finally:
        conn.close()


@pytest.mark.parametrize("body, content_type, headers, key, status, code", [
    (b"{nope", "text/plain", {}, INGEST_KEY, 400, "InvalidMessage"),
    (b"", "text/plain", {}, INGEST_KEY, 400, "InvalidMessage"),
    (b'{"id": "1"}', "text/plain", {}, INGEST_KEY, 400, "InvalidMessage"),
    (b"x", "text/plain", {"x-cmk-queue-dequeue-count": "zero"}, INGEST_KEY, 400, "InvalidMessage"),
    (None, "application/xml", {}, INGEST_KEY, 415, "UnsupportedMediaType"),
    # A type that is not UTF-8 is none of the accepted ones, not "no type".
    (None, b"text/plain; charset=\xff", {}, INGEST_KEY, 415, "UnsupportedMediaType"),
    (None, "text/plain", {}, None, 401, "Unauthenticated"),
    (None, "text/plain", {}, "not-the-ingest-key-123", 403, "Forbidden"),
    ("big", "text/plain", {}, INGEST_KEY, 413, "BodyTooLarge"),
])
def test_queue_route_answers(app, stack, body, content_type, headers, key, status, code):
    source = f"/ce/route-{uuid.uuid4()}"
    if body is None:
        body = json.dumps(cloud_event(source)).encode()
    elif body == "big":
        body = json.dumps(cloud_event(source, data={"blob": "x" * (1024 * 1024)})).encode()
    before = stack.sigcheck_stats()["forwarded"]
    if status == 413:
        got, resp = post_refused_early(app, body)
    else:
        got, _, resp = post(f"{app.url}/queue", body, content_type=content_type, headers=headers, key=key)
    assert (got, resp["error"]["code"]) == (status, code), resp
    assert stack.sigcheck_stats()["forwarded"] == before


class StorageStandIn(BaseHTTPRequestHandler):
    """Records what the bridge sends a queue service; answers an empty queue."""
    requests: list = []

    def do_GET(self):
        StorageStandIn.requests.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
        body = b'<?xml version="1.0" encoding="utf-8"?><QueueMessagesList />'
        self.send_response(200)
        self.send_header("content-type", "application/xml")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.mark.parametrize("identity", ["client-secret", "workload-identity", "managed-identity"])
def test_entra_token_auth_against_the_stand_ins(stack, identity, tmp_path):
    """Entra ID auth, as far as it can be checked locally: the bridge gets a
    Storage token from the Entra stand-in and sends it as a bearer token to a
    recording queue stand-in (azurite accepts bearer tokens only over HTTPS
    with --oauth basic, so it is not used here)."""
    import jwt

    server = ThreadingHTTPServer(("127.0.0.1", 0), StorageStandIn)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    StorageStandIn.requests = []
    try:
        settings = {"AUTH": identity, "AZURE_TENANT_ID": TENANT, "AZURE_AUTHORITY_HOST": stack.entra_url}
        if identity == "client-secret":
            settings.update(AZURE_CLIENT_ID="app-secret-client", AZURE_CLIENT_SECRET="local-client-secret-0123")
        elif identity == "workload-identity":
            token = stack.entra_admin("POST", "federated-token", {"client_id": "app-workload-client"})["token"]
            (tmp_path / "token").write_text(token)
            settings.update(AZURE_CLIENT_ID="app-workload-client", AZURE_FEDERATED_TOKEN_FILE=str(tmp_path / "token"))
        else:
            settings.update(AZURE_POD_IDENTITY_AUTHORITY_HOST=stack.entra_url)
        env_vars = stack.bridge_env("http://127.0.0.1:9/queue", "events", **settings)
        env_vars.pop("BRIDGE_ACCOUNT_KEY")
        env_vars["BRIDGE_QUEUE_URL"] = f"http://127.0.0.1:{server.server_port}/devstoreaccount1/events"
        result = stack.run_bridge_once(env_vars)
        assert result.returncode == 0, result.stderr
        # One poll; the other requests read the queue depths (comp=metadata).
        ((path, headers),) = [r for r in StorageStandIn.requests if "comp=metadata" not in r[0]]
        assert all(h["authorization"] == headers["authorization"] for _, h in StorageStandIn.requests)
        assert path.startswith("/devstoreaccount1/events/messages?numofmessages=16&visibilitytimeout=30")
        assert headers["x-ms-version"] >= "2019-12-12"
        scheme, _, token = headers["authorization"].partition(" ")
        assert scheme == "Bearer"
        claims = jwt.decode(token, options={"verify_signature": False})
        assert claims["aud"] == "https://storage.azure.com"
        assert token not in result.stderr
        assert any(l.get("event") == "token_acquired" for l in log_lines(result.stderr))
    finally:
        server.shutdown()


def test_a_success_without_the_expected_count_does_not_delete(stack):
    # Something that answers 200 but is not the component (a proxy, a wrong
    # target URL): the message must stay.
    server = ThreadingHTTPServer(("127.0.0.1", 0), answering(200, b'{"ok": true}'))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        name, client = new_queue(stack)
        client.send_message(json.dumps(cloud_event("/ce/unconfirmed")))
        result = stack.run_bridge_once(stack.bridge_env(
            f"http://127.0.0.1:{server.server_address[1]}/queue", name, VISIBILITY_TIMEOUT_SECS="30"))
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    (line,) = messages_logged(result.stderr)
    assert (line["action"], line["status"]) == ("left", 200), line
    assert depth(client) == 1 and poison_texts(stack, name) == []


def test_a_disabled_key_requeues_the_message_without_spending_its_tries(stack):
    from harness.stack import APP_PRINCIPALS
    key = f"bridge-key-state-{uuid.uuid4().hex[:8]}"
    stack.hsm_admin("POST", "keys", {"name": key, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    app = stack.serve_app(name="app-bridge-key-state", overrides=stack.stage_two(
        "client-secret", hsm_key_name=key, hsm_key_check_secs="0"))
    stack.hsm_admin("POST", f"keys/{key}/state", {"enabled": False})
    name, client = new_queue(stack)
    source = f"/ce/key-state-{uuid.uuid4()}"
    client.send_message(json.dumps(cloud_event(source)))
    # At the last allowed try: a message merely left would now be poisoned.
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name, MAX_DEQUEUE_COUNT="1"))
    assert result.returncode == 0, result.stderr
    (line,) = messages_logged(result.stderr)
    assert (line["action"], line["status"], line["code"]) == ("requeued", 503, "KeyDisabled"), line
    assert line["new_message_id"] and line["new_message_id"] != line["message_id"]
    # Still queued (hidden for the pause), not poisoned, nothing written.
    assert depth(client) == 1 and poison_texts(stack, name) == []
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": source}]) == 0


@pytest.mark.parametrize("ttl", [-1, 40], ids=["never-expires", "about-to-expire"])
def test_a_key_refused_message_keeps_its_lifetime_or_is_poisoned_before_it_expires(stack, ttl):
    """Re-queued, a message that never expires stays so (messagettl=-1, not
    a large number); one with less than two visibility timeouts left goes
    to the poison queue rather than expiring unseen."""
    from harness.stack import APP_PRINCIPALS
    key = f"bridge-ttl-{uuid.uuid4().hex[:8]}"
    stack.hsm_admin("POST", "keys", {"name": key, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    app = stack.serve_app(name=f"app-bridge-ttl-{'never' if ttl < 0 else 'short'}", overrides=stack.stage_two(
        "client-secret", hsm_key_name=key, hsm_key_check_secs="0"))
    stack.hsm_admin("POST", f"keys/{key}/state", {"enabled": False})
    name, client = new_queue(stack)
    text = json.dumps(cloud_event(f"/ce/ttl-{uuid.uuid4()}"))
    client.send_message(text, time_to_live=ttl)
    # The copy is hidden for the visibility timeout: a short one lets the
    # test read it back; with 30 s, a copy needs 60 s of life left.
    visibility = {"VISIBILITY_TIMEOUT_SECS": "5", "REQUEST_TIMEOUT_SECS": "4"} if ttl < 0 else {
        "VISIBILITY_TIMEOUT_SECS": "30"}
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name, **visibility))
    assert result.returncode == 0, result.stderr
    (line,) = messages_logged(result.stderr)
    if ttl < 0:
        assert (line["action"], line["code"]) == ("requeued", "KeyDisabled"), line
        assert poison_texts(stack, name) == []
        wait_for(lambda: client.peek_messages(max_messages=1), timeout=30, what="the copy visible again")
        (copy_,) = client.peek_messages(max_messages=1)
        assert copy_.content == text and copy_.expires_on.year == 9999, copy_.expires_on
    else:
        assert (line["action"], line["reason"]) == ("poisoned", "expiring"), line
        assert poison_texts(stack, name) == [text]
        assert depth(client) == 0


def test_create_mode_conflicts_go_to_the_poison_queue_with_their_content(stack):
    """Create mode: a message whose events are stored except one whose
    document id holds another event is answered 200 with accepted +
    conflicts = its events. No retry changes a conflict, and deleting the
    message would leave the refused event's content nowhere: the bridge
    moves it to the poison queue at once (the stored events are stored
    again, identically, if it is replayed). A message whose every event
    conflicts (409 DocumentConflict) goes the same way, on its first try."""
    app = stack.serve_app(name="app-bridge-create", overrides={"SPIN_VARIABLE_COSMOS_WRITE_MODE": "create"})
    name, client = new_queue(stack)
    topic = f"/topics/bridge-create-{uuid.uuid4()}"
    original = eventgrid_event(topic)
    client.send_message(json.dumps(original))
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name))
    assert [l["action"] for l in messages_logged(result.stderr)] == ["deleted"], result.stderr
    impostor = dict(original, data={"api": "someone else"})
    fresh = eventgrid_event(topic)
    mixed = json.dumps([impostor, fresh])
    client.send_message(mixed)
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name, MAX_DEQUEUE_COUNT="5"))
    assert result.returncode == 0, result.stderr
    (line,) = messages_logged(result.stderr)
    assert (line["action"], line["reason"], line["status"], line["conflicts"], line["level"]) == \
        ("poisoned", "conflict", 200, 1, "warn"), line
    assert depth(client) == 0 and poison_texts(stack, name) == [mixed]
    assert count_ids(stack, [document_id(topic, fresh["id"])]) == 1
    kept = stack.container_client().read_item(document_id(topic, original["id"]), partition_key=topic)
    assert kept["event"]["data"] == original["data"]
    # Every event conflicting: 409, poisoned on the first of five tries.
    alone = json.dumps(impostor)
    client.send_message(alone)
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name, MAX_DEQUEUE_COUNT="5"))
    (line,) = messages_logged(result.stderr)
    assert (line["action"], line["reason"], line["status"]) == ("poisoned", "conflict", 409), line
    assert depth(client) == 0 and poison_texts(stack, name) == [mixed, alone]


class RefusingPutQueue(BaseHTTPRequestHandler):
    """A queue service that hands out one message, refuses to take one
    (403, as for an identity without Message Sender on the queue) and
    records every request."""
    text = ""
    requests: list = []

    def _answer(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        RefusingPutQueue.requests.append(("GET", self.path))
        if "comp=metadata" in self.path:
            return self._answer(200, headers=[("x-ms-approximate-messages-count", "1")])
        if [m for m, p in RefusingPutQueue.requests if m == "GET" and "comp=metadata" not in p][1:]:
            # Handed out once: then the queue reads as empty (the message
            # is invisible for its visibility timeout), and --once ends.
            return self._answer(200, b'<?xml version="1.0" encoding="utf-8"?><QueueMessagesList />',
                                [("content-type", "application/xml")])
        from xml.sax.saxutils import escape
        body = ('<?xml version="1.0" encoding="utf-8"?><QueueMessagesList><QueueMessage>'
                "<MessageId>msg-1</MessageId><InsertionTime>Mon, 07 Dec 2026 19:00:00 GMT</InsertionTime>"
                "<ExpirationTime>Fri, 31 Dec 9999 23:59:59 GMT</ExpirationTime><PopReceipt>AgAAAAMAAAA</PopReceipt>"
                "<TimeNextVisible>Mon, 07 Dec 2026 19:10:00 GMT</TimeNextVisible><DequeueCount>1</DequeueCount>"
                f"<MessageText>{escape(RefusingPutQueue.text)}</MessageText></QueueMessage></QueueMessagesList>")
        self._answer(200, body.encode(), [("content-type", "application/xml")])

    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        RefusingPutQueue.requests.append(("POST", self.path))
        self._answer(403, b'<?xml version="1.0" encoding="utf-8"?><Error><Code>AuthorizationPermissionMismatch'
                          b'</Code><Message>This request is not authorized to perform this operation using '
                          b'this permission.</Message></Error>',
                     [("content-type", "application/xml"), ("x-ms-error-code", "AuthorizationPermissionMismatch")])

    def do_DELETE(self):
        RefusingPutQueue.requests.append(("DELETE", self.path))
        self._answer(204)

    def log_message(self, *args):
        pass


def answering(status: int, body: bytes, headers: tuple = ()) -> type:
    """A target that answers every POST with `status`, a JSON `body` and
    `headers`."""
    class Target(BaseHTTPRequestHandler):
        def do_POST(self):
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(status)
            self.send_header("content-type", "application/json")
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass
    return Target


# As the component answers POST /queue while its key is disabled.
KeyDisabledTarget = answering(
    503, b'{"error": {"code": "KeyDisabled", "message": "the key-encryption key is disabled"}}', (("retry-after", "2"),))


def test_a_requeue_the_queue_refuses_leaves_the_message_and_pauses(stack):
    """A key-state refusal re-queues the message; when the queue service
    refuses the put (an identity without Message Sender on the queue), the
    original is not deleted, and polling pauses for the component's
    Retry-After, so the queue's other messages do not spend their tries at
    full speed while the key is unusable."""
    queue = ThreadingHTTPServer(("127.0.0.1", 0), RefusingPutQueue)
    target = ThreadingHTTPServer(("127.0.0.1", 0), KeyDisabledTarget)
    for server in (queue, target):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    RefusingPutQueue.text = json.dumps(cloud_event(f"/ce/requeue-refused-{uuid.uuid4()}"))
    RefusingPutQueue.requests = []
    try:
        env_vars = stack.bridge_env(f"http://127.0.0.1:{target.server_port}/queue", "events")
        env_vars["BRIDGE_QUEUE_URL"] = f"http://127.0.0.1:{queue.server_port}/devstoreaccount1/events"
        result = stack.run_bridge_once(env_vars)
        assert result.returncode == 0, result.stderr
        (line,) = messages_logged(result.stderr)
        assert (line["action"], line["code"], line["pause_secs"]) == ("requeue-failed", "KeyDisabled", 2), line
        assert "AuthorizationPermissionMismatch" in line["error"], line
        methods = [m for m, _ in RefusingPutQueue.requests]
        assert "POST" in methods and "DELETE" not in methods, RefusingPutQueue.requests
    finally:
        queue.shutdown()
        target.shutdown()
