"""Sealed records end to end, in the real runtime, for what the first
envelope tests left out: binary payloads, opening only requested fields,
every stored byte scanned for plaintext, each refusal class of
docs/record-format.md on records edited in the store, and the independent
decryptor unwrapping through the HSM stand-in with the official Key Vault
SDK."""

import base64
import json
import urllib.parse
import urllib.request
import uuid

import pytest
from azure.core.credentials import AccessToken
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from harness.stack import TENANT
from integration.decrypt_record import decrypt
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import post
from integration.test_records import enc, get

SECRETS = ["Grace Hopper", "A12-77-0001", "penicillin allergy"]


@pytest.fixture(scope="module")
def app(stack):
    return stack.serve_app(name="app-envelope-reads", overrides=stack.stage_two(
        "client-secret", hsm_key_check_secs="0",
        protected_fields='{"Contoso.Records.Updated": ["/data/patient", "/data/mrn", "/data/notes"], "*": ["/data"]}'))


class StandInToken:
    """An azure-core credential that takes client-credentials tokens from
    the Entra stand-in's plain-HTTP endpoint."""

    def get_token(self, *scopes, **kwargs):
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": "app-secret-client",
                                       "client_secret": "local-client-secret-0123", "scope": scopes[0]}).encode()
        with urllib.request.urlopen(f"{self.entra}/{TENANT}/oauth2/v2.0/token", data=form) as r:
            t = json.load(r)
        return AccessToken(t["access_token"], int(t["expires_in"]) + 1_700_000_000)

    def __init__(self, entra):
        self.entra = entra


def all_stored_bytes(stack) -> str:
    """Every document of every container, straight from the Cosmos server."""
    db = stack.cosmos_client().get_database_client(stack.database)
    out = []
    for c in db.list_containers():
        out += db.get_container_client(c["id"]).query_items("SELECT * FROM c", enable_cross_partition_query=True)
    return json.dumps(out, ensure_ascii=False)


def sealed_event(topic):
    return custom_event(topic, patient=SECRETS[0], mrn=SECRETS[1], notes={"text": SECRETS[2]}, ward="7B")


def test_binary_payloads_are_sealed_whole_and_open_for_readers(app, stack):
    source = f"/ce/binary-{uuid.uuid4()}"
    payload = b"\x00\x01 scanned consent form of " + SECRETS[0].encode()
    headers = {"ce-specversion": "1.0", "ce-id": str(uuid.uuid4()), "ce-source": source, "ce-type": "Contoso.Scan"}
    status, _, body = post(f"{app.url}/events", payload, content_type="application/octet-stream", headers=headers)
    assert status == 200, body
    doc = stack.container_client().read_item(document_id(source, headers["ce-id"]), partition_key=source)
    assert doc["cmk"]["fields"] == ["/event/data_base64"]
    assert set(doc["event"]["data_base64"]) == {"cmk", "iv", "ct"}
    assert base64.b64encode(payload).decode() not in json.dumps(doc)
    status, _, body = get(app, f"/records/{enc(source)}/{doc['id']}")
    assert status == 200 and base64.b64decode(body["event"]["data_base64"]) == payload, body


def test_fields_opens_only_what_is_asked_and_nothing_needs_no_key(app, stack):
    topic = f"/topics/fields-{uuid.uuid4()}"
    e = sealed_event(topic)
    assert post(f"{app.url}/events", [e])[0] == 200
    doc_id = document_id(topic, e["id"])
    before = stack.hsm_admin("GET", "stats")["unwrapkey"]
    status, _, body = get(app, f"/records/{enc(topic)}/{doc_id}?fields=/event/data/patient")
    assert status == 200, body
    assert body["event"]["data"]["patient"] == SECRETS[0]
    assert set(body["event"]["data"]["mrn"]) == {"cmk", "iv", "ct"}  # still sealed
    assert SECRETS[1] not in json.dumps(body) and SECRETS[2] not in json.dumps(body)
    assert stack.hsm_admin("GET", "stats")["unwrapkey"] - before == 1
    status, _, body = get(app, f"/records/{enc(topic)}/{doc_id}?fields=")
    assert status == 200 and body["event"]["data"]["ward"] == "7B"
    assert not any(s in json.dumps(body) for s in SECRETS)
    assert stack.hsm_admin("GET", "stats")["unwrapkey"] - before == 1, "an empty list calls no key"


def test_no_protected_value_is_anywhere_in_the_store_or_the_logs(app, stack):
    topic = f"/topics/scan-{uuid.uuid4()}"
    assert post(f"{app.url}/events", [sealed_event(topic) for _ in range(5)])[0] == 200
    stored = all_stored_bytes(stack)
    for s in SECRETS:
        assert s not in stored, f"{s!r} is stored in plaintext"
        assert s not in app.logs()


def test_every_sealed_value_has_a_nonce_of_its_own(app, stack):
    """A delivery's nonces are drawn from the host's random source in one
    call and handed out in order: no two sealed values share one, within a
    delivery or across deliveries, and every record still opens."""
    topic = f"/topics/nonces-{uuid.uuid4()}"
    for _ in range(2):
        assert post(f"{app.url}/events", [sealed_event(topic) for _ in range(20)])[0] == 200
    docs = list(stack.container_client().query_items(
        "SELECT * FROM c WHERE c.pk = @pk", parameters=[{"name": "@pk", "value": topic}],
        enable_cross_partition_query=True))
    assert len(docs) == 40
    ivs = [base64.urlsafe_b64decode(doc["event"]["data"][f]["iv"] + "==") for doc in docs
           for f in ("patient", "mrn", "notes")]
    assert len(ivs) == 120 and all(len(iv) == 12 for iv in ivs)
    assert len(set(ivs)) == 120, "a nonce used twice"
    status, _, body = get(app, f"/records/{enc(topic)}/{docs[0]['id']}")
    assert status == 200 and body["event"]["data"]["patient"] == SECRETS[0], body


def test_the_decryptor_unwraps_through_the_hsm_with_the_official_sdk(app, stack):
    topic = f"/topics/sdk-unwrap-{uuid.uuid4()}"
    e = sealed_event(topic)
    assert post(f"{app.url}/events", [e])[0] == 200
    doc = stack.container_client().read_item(document_id(topic, e["id"]), partition_key=topic)
    before = stack.hsm_admin("GET", "stats")["unwrapkey"]

    def unwrap(kid, wrapped):
        tls_kid = kid.replace(stack.hsm_url, stack.hsm_tls_url)
        client = CryptographyClient(tls_kid, credential=StandInToken(stack.entra_url),
                                    verify_challenge_resource=False, connection_verify=stack.hsm_cert)
        return client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key

    clear = decrypt(doc, unwrap=unwrap)
    assert clear["event"]["data"]["patient"] == SECRETS[0]
    assert clear["event"]["data"]["notes"] == {"text": SECRETS[2]}
    assert stack.hsm_admin("GET", "stats")["unwrapkey"] - before == 1


def edited(doc, how):
    d = json.loads(json.dumps(doc))
    how(d)
    return d


@pytest.mark.parametrize("name, how, code", [
    ("header unlists a sealed field", lambda d: d["cmk"].update(fields=["/event/data/patient"]), "RecordTampered"),
    ("header removed", lambda d: d.pop("cmk"), "RecordTampered"),
    ("ciphertext truncated", lambda d: d["event"]["data"]["mrn"].update(ct="AAAA"), "RecordMalformed"),
    ("another format version", lambda d: d["cmk"].update(v=2), "RecordUnsupported"),
    ("sealed field replaced by plaintext", lambda d: d["event"]["data"].update(patient="forged"), "RecordMalformed"),
    ("kid of another HSM", lambda d: d["cmk"].update(kid="https://evil.example/keys/k/v1"), None),
])
def test_records_edited_in_the_store_are_refused_with_the_documented_error(app, stack, name, how, code):
    topic = f"/topics/edited-{uuid.uuid4()}"
    e = sealed_event(topic)
    assert post(f"{app.url}/events", [e])[0] == 200
    doc = stack.container_client().read_item(document_id(topic, e["id"]), partition_key=topic)
    stack.container_client().upsert_item(edited(doc, how))
    status, _, body = get(app, f"/records/{enc(topic)}/{doc['id']}")
    assert 400 <= status < 600 and status != 404, (name, status, body)
    if code:
        assert (status, body["error"]["code"]) == (422, code), (name, body)
    assert not any(s in json.dumps(body) for s in SECRETS), name
    assert "forged" not in json.dumps(body)


def test_a_planted_sealed_value_is_named_by_its_event_member_only(app, stack):
    """A sealed value the header does not list is refused; the answer and the
    log name only the event member it is under, never the member names
    inside it, which may be the protected data itself."""
    topic = f"/topics/planted-{uuid.uuid4()}"
    e = sealed_event(topic)
    assert post(f"{app.url}/events", [e])[0] == 200
    doc = stack.container_client().read_item(document_id(topic, e["id"]), partition_key=topic)
    planted = edited(doc, lambda d: d["event"]["data"].update({"Jane Roe 078-05-1120": d["event"]["data"]["mrn"]}))
    stack.container_client().upsert_item(planted)
    status, _, body = get(app, f"/records/{enc(topic)}/{doc['id']}")
    assert (status, body["error"]["code"]) == (422, "RecordTampered"), body
    assert "under /event/data " in body["error"]["message"], body
    assert "Jane Roe" not in json.dumps(body) and "Jane Roe" not in app.logs()


def test_headerless_records_are_refused_in_the_second_stage_unless_allowed(app, stack):
    pk = f"plain-{uuid.uuid4()}"
    first_stage = "f" * 64  # a document id, as the component writes them
    stack.container_client().upsert_item({"id": first_stage, "pk": pk, "event": {"data": {"x": 1}}})
    status, _, body = get(app, f"/records/{enc(pk)}/{first_stage}")
    assert (status, body["error"]["code"]) == (422, "RecordUnsealed"), body
    allowing = stack.serve_app(name="app-accept-unsealed", overrides=stack.stage_two(
        "client-secret", read_accept_unsealed="true"))
    status, _, body = get(allowing, f"/records/{enc(pk)}/{first_stage}")
    assert status == 200 and body["event"]["data"] == {"x": 1}, body
