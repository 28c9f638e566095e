"""Key rotation and rewrap, in the real runtime: after the key-encryption
key gets a new version, new deliveries use it, and `POST /admin/rewrap`
moves every stored data key onto it in bounded, resumable, idempotent steps
without changing a single field ciphertext; afterwards the old version can be
disabled and every record still opens (through the component and the
independent decryptor). Runs on a container and a key of its own so other
tests' records are not touched."""

import json
import urllib.error
import urllib.request
import uuid

import pytest
from azure.cosmos import PartitionKey

from harness.stack import APP_PRINCIPALS, read_profile
from integration.decrypt_record import decrypt
from integration.eventgrid import custom_event
from integration.test_foundation import post
from integration.test_records import enc, get

ADMIN_KEY = read_profile()["SPIN_VARIABLE_ADMIN_KEYS"]
KEY = "rotation-kek"


def rewrap(app, query="", key=ADMIN_KEY):
    headers = {"x-cmk-admin-key": key} if key else {}
    req = urllib.request.Request(f"{app.url}/admin/rewrap{query}", data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.headers, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def rotation(stack):
    container = f"rotation-{uuid.uuid4().hex[:8]}"
    stack.cosmos_client().get_database_client(stack.database).create_container(container, PartitionKey("/pk"))
    stack.hsm_admin("POST", "keys", {"name": KEY, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "grants", {"key": KEY, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    app = stack.serve_app(name="app-rotation", overrides=stack.stage_two(
        "client-secret", hsm_key_name=KEY, hsm_key_check_secs="0", cosmos_container=container,
        protected_fields='{"*": ["/data/patient", "/subject"]}'))
    client = stack.cosmos_client().get_database_client(stack.database).get_container_client(container)
    return app, client


def all_docs(client):
    return list(client.query_items("SELECT * FROM c", enable_cross_partition_query=True))


def private_pem(stack, kid):
    return stack.hsm_admin("GET", f"keys/{KEY}/{kid.rsplit('/', 1)[1]}/private-pem")["pem"]


def test_rotation_then_rewrap_leaves_every_record_readable_and_old_version_free(rotation, stack):
    app, client = rotation
    patients = {}
    # Two deliveries under the first version (two data keys), over two partitions.
    for n in range(2):
        events = []
        for i in range(4):
            topic = f"/topics/rot-{i % 2}"
            e = custom_event(topic, patient=f"Patient {uuid.uuid4()}", bed=i)
            patients[e["id"]] = e["data"]["patient"]
            events.append(e)
        assert post(f"{app.url}/events", events)[0] == 200
    v1 = {d["cmk"]["kid"] for d in all_docs(client)}
    assert len(v1) == 1
    (v1,) = v1
    v2 = stack.app_kid(app, stack.hsm_admin("POST", f"keys/{KEY}/rotate")["key"]["kid"])
    assert v2 != v1
    # New deliveries use the new version at once (hsm_key_check_secs = 0).
    later = custom_event("/topics/rot-0", patient="sealed under v2")
    patients[later["id"]] = "sealed under v2"
    assert post(f"{app.url}/events", [later])[0] == 200
    before = {d["id"]: d for d in all_docs(client)}
    assert sum(d["cmk"]["kid"] == v2 for d in before.values()) == 1

    # Bounded steps: at most `limit` documents a call, resumed by continuation.
    stats0 = stack.hsm_admin("GET", "stats")["by_key"][KEY]
    totals = {"scanned": 0, "rewrapped": 0, "dataKeys": 0, "conflicts": 0, "refused": 0}
    continuation, calls = None, 0
    while True:
        query = "?limit=3" + (f"&continuation={enc(continuation)}" if continuation else "")
        status, _, body = rewrap(app, query)
        assert status == 200, body
        assert body["kid"] == v2 and body["scanned"] <= 3
        for k in totals:
            totals[k] += body[k]
        calls += 1
        continuation = body["continuation"]
        if continuation is None:
            break
        assert calls < 10
    assert calls >= 3
    assert totals["scanned"] == totals["rewrapped"] == 8
    assert totals["conflicts"] == totals["refused"] == 0
    stats1 = stack.hsm_admin("GET", "stats")["by_key"][KEY]
    # One unwrap and one wrap per distinct data key per call, not per document.
    assert 2 <= stats1["unwrapkey"] - stats0["unwrapkey"] == totals["dataKeys"] <= calls + 1
    assert stats1["wrapkey"] - stats0["wrapkey"] == totals["dataKeys"]

    after = {d["id"]: d for d in all_docs(client)}
    assert set(after) == set(before)
    for doc_id, doc in after.items():
        old = before[doc_id]
        assert doc["cmk"]["kid"] == v2, "no record is left on the old version"
        # Only the header changed; every ciphertext is byte for byte the same.
        assert doc["event"] == old["event"]
        assert doc["cmk"]["fields"] == old["cmk"]["fields"]
        if old["cmk"]["kid"] == v1:
            assert doc["cmk"]["sealedKid"] == v1 and doc["cmk"]["dek"] != old["cmk"]["dek"]
        else:
            assert "sealedKid" not in doc["cmk"] and doc["cmk"]["dek"] == old["cmk"]["dek"]
        # The independent decryptor opens it with the new version's private key.
        clear = decrypt(doc, private_pem(stack, v2))
        assert clear["event"]["data"]["patient"] == patients[clear["event"]["id"]]

    # Idempotent: nothing is left to do.
    status, _, body = rewrap(app)
    assert status == 200 and body["scanned"] == 0 and body["continuation"] is None, body

    # The old version can go: disable it, and every record still opens.
    stack.hsm_admin("POST", f"keys/{KEY}/state", {"version": v1.rsplit("/", 1)[1], "enabled": False})
    for doc in after.values():
        status, _, body = get(app, f"/records/{enc(doc['pk'])}/{doc['id']}")
        assert status == 200, body
        assert body["event"]["data"]["patient"] == patients[body["event"]["id"]]
        assert "cmk" not in body


def test_rewrap_fails_closed_when_the_key_is_disabled(rotation, stack):
    app, client = rotation
    e = custom_event("/topics/rot-closed", patient="must stay sealed")
    assert post(f"{app.url}/events", [e])[0] == 200
    stack.hsm_admin("POST", f"keys/{KEY}/rotate")
    before = all_docs(client)
    stack.hsm_admin("POST", f"keys/{KEY}/state", {"enabled": False})
    try:
        status, headers, body = rewrap(app)
        assert status == 503 and body["error"]["code"] == "KeyDisabled", body
        assert int(headers["Retry-After"]) > 0
        assert all_docs(client) == before, "nothing is changed while the key is disabled"
    finally:
        stack.hsm_admin("POST", f"keys/{KEY}/state", {"enabled": True})
    status, _, body = rewrap(app, "?limit=100")
    assert status == 200 and body["rewrapped"] >= 1, body
    assert "must stay sealed" not in json.dumps(all_docs(client))
    assert "must stay sealed" not in app.logs()


@pytest.mark.parametrize("key, status, code", [
    (None, 401, "Unauthenticated"),
    ("not-the-admin-key-0000", 403, "Forbidden"),
    (read_profile()["SPIN_VARIABLE_READ_KEYS"], 403, "Forbidden"),
])
def test_rewrap_needs_the_admin_key(rotation, key, status, code):
    app, _ = rotation
    got, _, body = rewrap(app, key=key)
    assert (got, body["error"]["code"]) == (status, code), body


def test_rewrap_is_off_without_admin_keys_and_refuses_bad_parameters(stack, rotation):
    app, _ = rotation
    for q in ["?limit=0", "?limit=101", "?other=1"]:
        status, _, body = rewrap(app, q)
        assert status == 400, (q, body)
    plain = stack.serve_app(name="app-no-admin", overrides={"SPIN_VARIABLE_ADMIN_KEYS": ""})
    status, _, body = rewrap(plain)
    assert status == 403 and body["error"]["code"] == "AdminDisabled", body
    assert ADMIN_KEY not in app.logs()


def test_one_unreadable_record_is_reported_and_does_not_hold_up_the_rest(rotation, stack):
    app, client = rotation
    events = [custom_event("/topics/rot-mixed", patient=f"P{i}") for i in range(3)]
    assert post(f"{app.url}/events", events)[0] == 200
    docs = [d for d in all_docs(client) if d["pk"] == "/topics/rot-mixed"]
    bad = dict(docs[0])
    bad["cmk"] = {**bad["cmk"], "kid": bad["cmk"]["kid"].rsplit("/", 1)[0] + "/0000000000000000000000000000dead"}
    client.upsert_item(bad)
    latest = stack.app_kid(app, stack.hsm_admin("POST", f"keys/{KEY}/rotate")["key"]["kid"])
    status, _, body = rewrap(app, "?limit=100")
    assert status == 200, body
    assert body["refused"] == 1 and body["refusedDocuments"][0]["id"] == bad["id"], body
    # A version the key does not have, while the key itself answers: the record's fault.
    assert "has no version named by" in body["refusedDocuments"][0]["reason"], body
    after = {d["id"]: d for d in all_docs(client) if d["pk"] == "/topics/rot-mixed"}
    assert all(after[d["id"]]["cmk"]["kid"] == latest for d in docs[1:])
    assert after[bad["id"]]["cmk"]["kid"] == bad["cmk"]["kid"], "the refused record is left as it was"


def test_a_forged_header_is_refused_not_moved_onto_the_latest_version(rotation, stack):
    """A rewrap makes the checks of a read first: a key-less header over
    plaintext, or one naming a key of another HSM, is reported and left as
    it was, never given the latest version's kid."""
    app, client = rotation
    events = [custom_event("/topics/rot-forged", patient=f"P{i}") for i in range(2)]
    assert post(f"{app.url}/events", events)[0] == 200
    plain, foreign = [d for d in all_docs(client) if d["pk"] == "/topics/rot-forged"]
    plain["event"]["data"]["patient"] = "plaintext passed off as sealed"
    plain["cmk"] = {k: v for k, v in plain["cmk"].items() if k != "dek"} | {"fields": []}
    client.upsert_item(plain)
    hsm = app.variables["SPIN_VARIABLE_HSM_ENDPOINT"]  # the origin the app names in key ids
    assert foreign["cmk"]["kid"].startswith(hsm + "/")
    foreign["cmk"]["kid"] = foreign["cmk"]["kid"].replace(hsm, "https://evil.managedhsm.azure.net")
    client.upsert_item(foreign)
    stack.hsm_admin("POST", f"keys/{KEY}/rotate")
    status, _, body = rewrap(app, "?limit=100")
    assert status == 200, body
    refused = {d["id"]: d["reason"] for d in body["refusedDocuments"]}
    assert plain["id"] in refused and foreign["id"] in refused, body
    assert "plaintext passed off" not in json.dumps(body)
    after = {d["id"]: d for d in all_docs(client) if d["pk"] == "/topics/rot-forged"}
    assert after[plain["id"]]["cmk"]["kid"] == plain["cmk"]["kid"]
    assert after[foreign["id"]]["cmk"]["kid"] == foreign["cmk"]["kid"]


def test_a_record_changed_during_rewrap_is_a_conflict_left_for_the_next_call(rotation, stack):
    """The replace is conditional on the etag the rewrap read: a record
    changed in between gets 412 from the store, is counted as a conflict and
    left untouched, and the next call moves it."""
    import threading

    app, client = rotation
    e = custom_event("/topics/rot-race", patient="changed meanwhile")
    assert post(f"{app.url}/events", [e])[0] == 200
    doc = next(d for d in all_docs(client) if d["pk"] == "/topics/rot-race")
    latest = stack.app_kid(app, stack.hsm_admin("POST", f"keys/{KEY}/rotate")["key"]["kid"])
    # Hold the rewrap between its read and its replace: the HSM throttles
    # the wrap once, for two seconds, while the record is changed in the
    # store (the wrap follows the read, so once the fault is taken the
    # rewrap has read and waits).
    stack.hsm_admin("POST", "faults", [{"status": 429, "retry_after": 2, "op": "wrapkey"}])
    answer = {}
    t = threading.Thread(target=lambda: answer.update(r=rewrap(app, "?limit=100")))
    t.start()
    stack.wait_for_hsm_faults_taken()
    changed = dict(doc)
    changed["note"] = "edited by another writer"
    changed = {k: v for k, v in changed.items() if not k.startswith("_")}
    client.upsert_item(changed)
    t.join(timeout=60)
    status, _, body = answer["r"]
    assert status == 200, body
    assert body["conflicts"] >= 1, body
    stored = client.read_item(doc["id"], partition_key=doc["pk"])
    assert stored["note"] == "edited by another writer" and stored["cmk"]["kid"] != latest
    status, _, body = rewrap(app, "?limit=100")
    assert status == 200 and body["rewrapped"] >= 1, body
    stored = client.read_item(doc["id"], partition_key=doc["pk"])
    assert stored["cmk"]["kid"] == latest and stored["note"] == "edited by another writer"
