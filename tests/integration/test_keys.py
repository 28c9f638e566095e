"""The component with a customer-managed key, in the real runtime: Entra ID
tokens by every grant type (cached: one token call for many requests),
sealing on write through the Managed HSM stand-in (one wrap per delivery),
opening on read, an independent decryptor, and failing closed when the key
is disabled, access is revoked or the key version is deleted."""

import json
import re
import urllib.error
import urllib.request
import uuid

import pytest

from harness.stack import APP_PRINCIPALS, KEK_NAME, read_profile
from integration.decrypt_record import decrypt
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import count, post
from integration.test_records import READ_KEY, enc, get

ADMIN_KEY = read_profile()["SPIN_VARIABLE_ADMIN_KEYS"]

def call(app, method, path, key=READ_KEY, admin=False):
    headers = {"x-cmk-read-key": key} if key else {}
    if admin:
        headers["x-cmk-admin-key"] = ADMIN_KEY
    req = urllib.request.Request(f"{app.url}{path}", method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.headers, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, e.headers, json.loads(e.read() or b"null")


JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]+")


def assert_no_credentials_in(text, stack, *secrets):
    """Neither a secret nor any access token the Entra stand-in ever issued
    (nor anything JWT-shaped, such as a federated assertion) is in `text`."""
    issued = [t["token"] for t in stack.entra_admin("GET", "issued-tokens")["tokens"]]
    assert issued, "the stand-in issued tokens"
    for value in (*secrets, *issued):
        assert value not in text
    assert not JWT.search(text), "a JWT reached the log"


@pytest.mark.parametrize("identity, grant", [
    ("client-secret", "client_secret"),
    ("workload-identity", "workload_identity"),
    ("imds", "imds"),
    ("app-service", "app_service"),
])
def test_every_token_source_reaches_the_key_and_tokens_are_cached(stack, identity, grant):
    variables = stack.stage_two(identity)
    app = stack.serve_app(name=f"app-{identity}", overrides=variables)
    before = stack.entra_admin("GET", "stats")[grant]
    # Anonymous probes learn the status only; the details need the admin key.
    status, _, body = call(app, "GET", "/readyz", key=None)
    assert (status, body) == (200, {"status": "ready"})
    status, _, body = call(app, "GET", "/readyz", key=None, admin=True)
    assert status == 200, body
    # The origin the app was given (HTTPS on the test host).
    assert body["kek"]["kid"].startswith(f"{app.variables['SPIN_VARIABLE_HSM_ENDPOINT']}/keys/{KEK_NAME}/")
    assert body["kek"]["enabled"] is True and body["kek"]["keySizeBits"] == 2048
    assert body["kek"]["wrap"] == "hsm", "local wrapping is off by default"
    assert not {"n", "e", "d", "key", "value"} & set(body["kek"])  # no key material
    for _ in range(5):
        status, _, body = call(app, "POST", "/readyz/roundtrip")
        assert status == 200 and body["roundtrip"]["ok"] is True, body
    # One token for all of it: the cache in the key-value store holds it.
    assert stack.entra_admin("GET", "stats")[grant] - before == 1
    secrets = [variables[k] for k in ("SPIN_VARIABLE_AZURE_CLIENT_SECRET", "SPIN_VARIABLE_AZURE_FEDERATED_TOKEN",
                                      "SPIN_VARIABLE_IDENTITY_HEADER") if variables.get(k)]
    assert_no_credentials_in(app.logs(), stack, "local-client-secret-0123", *secrets)


@pytest.fixture(scope="module")
def sealed_app(stack):
    return stack.serve_app(name="app-sealed", overrides=stack.stage_two(
        "client-secret", hsm_key_check_secs="0",
        protected_fields='{"Contoso.Records.Updated": ["/data/patient", "/data/diagnosis", "/subject"], "*": ["/data"]}'))


def stored(stack, doc_id, pk):
    return stack.container_client().read_item(doc_id, partition_key=pk)


def private_pem(stack, kid):
    version = kid.rsplit("/", 1)[1]
    return stack.hsm_admin("GET", f"keys/{KEK_NAME}/{version}/private-pem")["pem"]


def test_protected_fields_are_sealed_at_rest_and_open_for_readers(sealed_app, stack):
    topic = f"/topics/sealed-{uuid.uuid4()}"
    secrets = [f"Patient {uuid.uuid4()}" for _ in range(6)]
    # Each value looked for holds a character outside base64url's alphabet,
    # so random ciphertext cannot contain it by chance (a three-letter code
    # appeared inside one ciphertext in about one run in a hundred).
    events = [custom_event(topic, patient=s, diagnosis={"code": "J45.909", "note": f"note {s}"}, ward=i)
              for i, s in enumerate(secrets)]
    before = stack.hsm_admin("GET", "stats")
    status, _, body = post(f"{sealed_app.url}/events", events)
    assert status == 200, body
    assert stack.hsm_admin("GET", "stats")["wrapkey"] - before["wrapkey"] == 1  # one data key per delivery
    # Every stored byte, read straight from the Cosmos server: no plaintext.
    raw = json.dumps(list(stack.container_client().query_items(
        "SELECT * FROM c WHERE c.pk = @pk", parameters=[{"name": "@pk", "value": topic}], enable_cross_partition_query=True)))
    for s in secrets + ["patients/records", "J45.909"]:
        assert s not in raw, f"{s!r} stored in plaintext"
    doc_id = document_id(topic, events[2]["id"])
    doc = stored(stack, doc_id, topic)
    assert doc["event"]["data"]["ward"] == 2  # unprotected fields stay queryable
    assert doc["cmk"]["fields"] == ["/event/data/patient", "/event/data/diagnosis", "/event/subject"]
    # The independent decryptor reads it with the KEK's private key.
    clear = decrypt(doc, private_pem(stack, doc["cmk"]["kid"]))
    assert clear["event"]["data"]["patient"] == secrets[2] and clear["event"]["subject"] == "patients/records"
    # A reader through the component gets the same, with one unwrap per answer.
    before = stack.hsm_admin("GET", "stats")
    status, _, body = get(sealed_app, f"/records/{enc(topic)}?limit=100")
    assert status == 200, body
    assert sorted(r["event"]["data"]["patient"] for r in body["records"]) == sorted(secrets)
    assert stack.hsm_admin("GET", "stats")["unwrapkey"] - before["unwrapkey"] == 1
    assert not any(s in sealed_app.logs() for s in secrets)


def test_tampered_records_are_refused(sealed_app, stack):
    topic = f"/topics/tamper-{uuid.uuid4()}"
    events = [custom_event(topic, patient="A"), custom_event(topic, patient="B")]
    assert post(f"{sealed_app.url}/events", events)[0] == 200
    a, b = (stored(stack, document_id(topic, e["id"]), topic) for e in events)
    a["event"]["data"]["patient"] = b["event"]["data"]["patient"]  # move ciphertext between records
    stack.container_client().upsert_item(a)
    status, _, body = get(sealed_app, f"/records/{enc(topic)}/{a['id']}")
    assert status == 422 and body["error"]["code"] == "RecordTampered"
    assert "B" not in json.dumps(body)


def test_the_key_failing_closed_and_recovering(sealed_app, stack):
    topic = f"/topics/drill-{uuid.uuid4()}"
    first = custom_event(topic, patient="before the drill")
    assert post(f"{sealed_app.url}/events", [first])[0] == 200
    first_id = document_id(topic, first["id"])

    def attempt(code):
        e = custom_event(topic, patient="during the drill")
        status, headers, body = post(f"{sealed_app.url}/events", [e])
        assert (status, body["error"]["code"]) == (503, code), body
        assert int(headers["Retry-After"]) > 0
        # Reads fail for the same reason: the HSM refuses unwrapKey on a
        # disabled key (innererror KeyDisabled) and for a caller without the
        # grant (AccessDenied).
        status, _, body = get(sealed_app, f"/records/{enc(topic)}/{first_id}")
        assert (status, body["error"]["code"]) == (503, code), body
        # (With the admin key: anonymous probes would get the previous
        # step's answer from the brief not-ready cache.)
        status, _, body = call(sealed_app, "GET", "/readyz", key=None, admin=True)
        assert (status, body["status"], body["error"]["code"]) == (503, "not-ready", code), body

    # Disabled: the service would still wrap; the component refuses to write.
    stack.hsm_admin("POST", f"keys/{KEK_NAME}/state", {"enabled": False})
    try:
        attempt("KeyDisabled")
    finally:
        stack.hsm_admin("POST", f"keys/{KEK_NAME}/state", {"enabled": True})
    # Access revoked for the app.
    stack.hsm_admin("POST", "grants", {"key": KEK_NAME, "object_id": "oid-app-secret", "ops": []})
    try:
        attempt("KeyAccessDenied")
    finally:
        stack.hsm_admin("POST", "grants", {"key": KEK_NAME, "object_id": "oid-app-secret", "ops": ["get", "wrapKey", "unwrapKey"]})
    # Nothing of the failed deliveries was written; everything works again.
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 1
    assert post(f"{sealed_app.url}/events", [custom_event(topic, patient="after")])[0] == 200
    status, _, body = get(sealed_app, f"/records/{enc(topic)}/{first_id}")
    assert status == 200 and body["event"]["data"]["patient"] == "before the drill"


def app_with_own_key(stack, name: str, check_secs: str):
    """A key of the test's own, granted to the app's principals, and an app
    in stage two sealing under it: deleting or rotating the shared key would
    break every later test that reads its records."""
    key = f"{name}-{uuid.uuid4().hex[:8]}"
    stack.hsm_admin("POST", "keys", {"name": key, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    return key, stack.serve_app(name=f"app-{name}", overrides=stack.stage_two(
        "client-secret", hsm_key_name=key, hsm_key_check_secs=check_secs))


def test_a_missing_key_version_makes_its_records_unreadable_not_the_page(stack):
    key, app = app_with_own_key(stack, "deleted-version", check_secs="0")
    topic = f"/topics/rotate-{uuid.uuid4()}"
    e = custom_event(topic, patient="old version")
    assert post(f"{app.url}/events", [e])[0] == 200
    # Two more under the same version, delivered apart (a data key each).
    for _ in range(2):
        assert post(f"{app.url}/events", [custom_event(topic, patient="old version too")])[0] == 200
    doc = stored(stack, document_id(topic, e["id"]), topic)
    assert doc["cmk"]["kid"].startswith(f"{app.variables['SPIN_VARIABLE_HSM_ENDPOINT']}/keys/{key}/")
    old_version = doc["cmk"]["kid"].rsplit("/", 1)[1]
    new = stack.hsm_admin("POST", f"keys/{key}/rotate")
    e2 = custom_event(topic, patient="new version")
    assert post(f"{app.url}/events", [e2])[0] == 200
    # Same key version; the origin in a kid is the one each client used.
    new_kid = stored(stack, document_id(topic, e2["id"]), topic)["cmk"]["kid"]
    assert new_kid.rsplit("/keys/", 1)[1] == new["key"]["kid"].rsplit("/keys/", 1)[1]
    stack.hsm_admin("DELETE", f"keys/{key}/{old_version}")
    # The key answers and is usable, its version does not: Managed HSM
    # deletes whole keys, never single versions ("the delete key operation
    # cannot be used to remove individual versions of a key"), so such a
    # version is gone for good (a key purged and recreated under its name)
    # or never existed. That record's fault: 422, and a page degrades.
    status, _, body = get(app, f"/records/{enc(topic)}/{doc['id']}")
    assert status == 422 and body["error"]["code"] == "RecordTampered", body
    assert "no version" in body["error"]["message"], body
    status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, e2['id'])}")
    assert status == 200 and body["event"]["data"]["patient"] == "new version"
    before = stack.hsm_admin("GET", "stats")["by_key"].get(key, {}).get("get", 0)
    status, _, body = get(app, f"/records/{enc(topic)}?limit=10")
    assert status == 200 and [r["id"] for r in body["records"]] == [document_id(topic, e2["id"])], body
    assert doc["id"] in [u["id"] for u in body["unreadable"]] and len(body["unreadable"]) == 3, body
    # The key is asked afresh once for the missing version, not once per
    # record naming it (the key's own state read for the page aside).
    gets = stack.hsm_admin("GET", "stats")["by_key"].get(key, {}).get("get", 0) - before
    assert gets <= 2, f"{gets} key reads for a page of three records naming one missing version"
    # The shared key was not touched.
    assert not any(v["deleted"] for v in stack.hsm_admin("GET", "keys")[KEK_NAME])


def test_a_key_deleted_while_its_state_is_cached_reads_as_gone_not_as_tampering(stack):
    """The key's usable state is cached for hsm_key_check_secs; deleted
    meanwhile, the HSM answers 404 for the record's version. That must read
    as the key being gone (503 KeyNotFound, nothing opened), not as a record
    naming a version that never existed (422 RecordTampered): the component
    asks for the key afresh before it blames the record."""
    key, app = app_with_own_key(stack, "deleted-key", check_secs="300")
    topic = f"/topics/deleted-key-{uuid.uuid4()}"
    e = custom_event(topic, patient="under a key about to go")
    assert post(f"{app.url}/events", [e])[0] == 200
    doc_id = document_id(topic, e["id"])
    stack.hsm_admin("DELETE", f"keys/{key}")
    try:
        status, headers, body = get(app, f"/records/{enc(topic)}/{doc_id}")
        assert (status, body["error"]["code"]) == (503, "KeyNotFound"), body
        assert "under a key about to go" not in json.dumps(body)
        status, _, body = get(app, f"/records/{enc(topic)}?limit=10")
        assert (status, body["error"]["code"]) == (503, "KeyNotFound"), body
    finally:
        stack.hsm_admin("POST", f"keys/{key}/recover", {})
    status, _, body = get(app, f"/records/{enc(topic)}/{doc_id}")
    assert status == 200 and body["event"]["data"]["patient"] == "under a key about to go", body


def test_the_round_trip_shows_the_read_key_its_outcome_and_the_admin_key_the_details(sealed_app):
    """POST /readyz/roundtrip needs the read key, which gets the status, the
    codes and the round trip's outcome; the key's details are for the admin
    key, as on GET /readyz."""
    status, _, body = call(sealed_app, "POST", "/readyz/roundtrip")
    assert status == 200 and set(body) == {"status", "roundtrip"}, body
    assert body["roundtrip"]["ok"] is True and f"/keys/{KEK_NAME}/" in body["roundtrip"]["kid"]
    status, _, body = call(sealed_app, "POST", "/readyz/roundtrip", admin=True)
    assert status == 200 and body["roundtrip"]["ok"] is True, body
    assert body["kek"]["configured"] is True and "kid" in body["kek"], body
    assert call(sealed_app, "POST", "/readyz/roundtrip", key=None)[0] == 403
