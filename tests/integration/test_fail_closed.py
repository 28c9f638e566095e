"""Field protection that never fails open, in the real runtime against the
local stack: a configured protected field that cannot be resolved because a
value on its way has another shape refuses the event (nothing stored, the
log names the event and the pointer, never the value); array wildcards seal
every element; a delivery with nothing to seal makes no wrap and says so;
sealed-shaped input is refused in both stages; a forged header (no fields
listed over plaintext, or a key id of another HSM or key) is refused on
read, and a page degrades per record; a deployment with protected fields
and no key name refuses to run unless the first stage is chosen. Records
are read back through the component and through the independent decryptor
(tests/integration/decrypt_record.py)."""

import base64
import copy
import json
import uuid

import pytest
from cryptography.exceptions import InvalidTag

from harness.stack import KEK_NAME
from integration.decrypt_record import decrypt
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import count, post
from integration.test_records import enc, get

PROTECTED = {"*": ["/data/ssn", "/data/card/number", "/data/items/*/ssn"]}


@pytest.fixture(scope="module")
def strict_app(stack):
    return stack.serve_app(name="app-fail-closed", overrides=stack.stage_two(
        "client-secret", hsm_key_check_secs="0", protected_fields=json.dumps(PROTECTED)))


def stored(stack, topic, event):
    return stack.container_client().read_item(document_id(topic, event["id"]), partition_key=topic)


def in_topic(stack, topic):
    return count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}])


def private_pem(stack, kid):
    version = kid.rsplit("/", 1)[1]
    return stack.hsm_admin("GET", f"keys/{KEK_NAME}/{version}/private-pem")["pem"]


def reader(app):
    """The reader's key check: key ids on the HSM origin the app was given
    (HTTPS on the test host)."""
    return {"hsm": hsm_origin(app), "key_name": KEK_NAME}


def hsm_origin(app) -> str:
    return app.variables["SPIN_VARIABLE_HSM_ENDPOINT"]


SECRET = "078-05-1120"


@pytest.mark.parametrize("name, data", [
    ("data as JSON in a string", json.dumps({"ssn": SECRET})),
    ("data as plain text", f"ssn={SECRET}"),
    ("data as an array of objects", [{"ssn": SECRET}]),
    ("parent of a field not an object", {"card": f"number {SECRET}"}),
    ("wildcard over an object", {"items": {"ssn": SECRET}}),
    ("wildcard element a string", {"items": [{"ssn": "x"}, f"ssn={SECRET}"]}),
])
def test_an_unresolvable_protected_field_refuses_the_event(strict_app, stack, name, data):
    topic = f"/topics/shape-{uuid.uuid4()}"
    event = custom_event(topic)
    event["data"] = data
    status, headers, body = post(f"{strict_app.url}/events", [custom_event(topic, n=1), event])
    assert (status, body["error"]["code"]) == (400, "ProtectedFieldUnresolvable"), body
    assert event["id"] in body["error"]["message"] and SECRET not in json.dumps(body)
    assert in_topic(stack, topic) == 0, "nothing of the delivery is written"
    logs = strict_app.logs()
    line = next(json.loads(l[l.index("{"):]) for l in logs.splitlines()
                if "protected_field_unresolvable" in l and event["id"] in l)
    assert line["pointer"].startswith("/event/data/") and line["id"] == document_id(topic, event["id"])
    assert SECRET not in logs


def test_each_unresolvable_event_of_a_delivery_is_logged(strict_app, stack):
    topic = f"/topics/shape-many-{uuid.uuid4()}"
    bad = [custom_event(topic), custom_event(topic)]
    bad[0]["data"] = f"ssn={SECRET}"
    bad[1]["data"] = {"card": f"number {SECRET}"}
    status, _, body = post(f"{strict_app.url}/events", [bad[0], custom_event(topic, n=1), bad[1]])
    assert (status, body["error"]["code"]) == (400, "ProtectedFieldUnresolvable"), body
    assert in_topic(stack, topic) == 0
    logs = strict_app.logs()
    lines = [json.loads(l[l.index("{"):]) for l in logs.splitlines() if "protected_field_unresolvable" in l]
    logged = {(l["id"], l["pointer"]) for l in lines}
    assert (document_id(topic, bad[0]["id"]), "/event/data/ssn") in logged, lines
    assert (document_id(topic, bad[1]["id"]), "/event/data/card/number") in logged, lines
    assert SECRET not in logs


def test_a_text_cloudevent_cannot_carry_a_protected_field_in_plaintext(strict_app, stack):
    topic = f"/topics/shape-ce-{uuid.uuid4()}"
    ce = {"specversion": "1.0", "id": str(uuid.uuid4()), "source": topic, "type": "T",
          "datacontenttype": "text/plain", "data": f"ssn={SECRET}"}
    status, _, body = post(f"{strict_app.url}/events", ce, content_type="application/cloudevents+json")
    assert (status, body["error"]["code"]) == (400, "ProtectedFieldUnresolvable"), body
    assert in_topic(stack, topic) == 0


def test_wildcards_seal_each_element_and_absent_fields_stay_optional(strict_app, stack):
    topic = f"/topics/wildcard-{uuid.uuid4()}"
    items = [{"ssn": f"{SECRET}-{i}", "name": f"n{i}"} for i in range(3)] + [{"name": "no ssn"}]
    event = custom_event(topic, items=items, card={"kind": "visa"}, public="ok")
    status, _, body = post(f"{strict_app.url}/events", [event])
    assert status == 200, body
    assert body["documents"][0]["sealedFields"] == 3
    doc = stored(stack, topic, event)
    assert doc["cmk"]["fields"] == [f"/event/data/items/{i}/ssn" for i in range(3)]
    assert SECRET not in json.dumps(doc)
    assert doc["event"]["data"]["items"][0]["name"] == "n0"
    clear = decrypt(doc, private_pem(stack, doc["cmk"]["kid"]), protected=[f"/event{p}" for p in PROTECTED["*"]],
                    **reader(strict_app))
    assert clear["event"]["data"] == event["data"]
    status, _, got = get(strict_app, f"/records/{enc(topic)}/{doc['id']}")
    assert status == 200 and got["event"]["data"] == event["data"], got


def test_nothing_to_seal_makes_no_wrap_and_is_visible(strict_app, stack):
    topic = f"/topics/nothing-{uuid.uuid4()}"
    events = [custom_event(topic, public=i) for i in range(2)]
    before = stack.hsm_admin("GET", "stats")["wrapkey"]
    status, _, body = post(f"{strict_app.url}/events", events)
    assert status == 200, body
    assert stack.hsm_admin("GET", "stats")["wrapkey"] == before, "no data key wrapped"
    assert [d["sealedFields"] for d in body["documents"]] == [0, 0]
    assert sum('"nothing_sealed"' in l and d["id"] in l for l in strict_app.logs().splitlines()
               for d in body["documents"]) == 2
    doc = stored(stack, topic, events[0])
    assert doc["cmk"]["fields"] == [] and "dek" not in doc["cmk"]
    assert doc["cmk"]["kid"].startswith(f"{hsm_origin(strict_app)}/keys/{KEK_NAME}/")
    assert decrypt(doc, None, **reader(strict_app))["event"]["data"] == {"public": 0}
    status, _, got = get(strict_app, f"/records/{enc(topic)}/{doc['id']}")
    assert status == 200 and got["event"]["data"] == {"public": 0}, got


@pytest.mark.parametrize("stage", ["one", "two"])
def test_sealed_shaped_input_is_refused(app, strict_app, stack, stage):
    target = app if stage == "one" else strict_app
    topic = f"/topics/shaped-{stage}-{uuid.uuid4()}"
    valid_looking = {"cmk": 1, "iv": "AQEBAQEBAQEBAQEB", "ct": "VYKBVEjJBxCxOAZ7fUU8GbL8v12UrKpcN7Uu3eiS"}
    for shaped in (valid_looking, {"cmk": "junk", "iv": None, "ct": 3}):
        event = custom_event(topic, note=shaped)
        status, _, body = post(f"{target.url}/events", [custom_event(topic, n=1), event])
        assert (status, body["error"]["code"]) == (400, "SealedShapeInEvent"), body
        assert "protected" not in body["error"]["message"], body
        assert event["id"] in body["error"]["message"]
    assert in_topic(stack, topic) == 0


def test_forged_headers_are_refused_and_a_page_degrades_per_record(strict_app, stack):
    topic = f"/topics/forged-{uuid.uuid4()}"
    events = [custom_event(topic, ssn=f"{SECRET}-{i}", public=i) for i in range(6)]
    # Separate deliveries: each record has its own wrapped data key.
    for e in events:
        assert post(f"{strict_app.url}/events", [e])[0] == 200
    good, plain, foreign, corrupt, no_version, text = (stored(stack, topic, e) for e in events)
    # A wrapped data key the HSM refuses (400 BadParameter): this record's
    # fault, 422, not a key failure of the whole page.
    raw = bytearray(base64.urlsafe_b64decode(corrupt["cmk"]["dek"] + "=" * (-len(corrupt["cmk"]["dek"]) % 4)))
    raw[0] ^= 1
    corrupt["cmk"]["dek"] = base64.urlsafe_b64encode(bytes(raw)).decode().rstrip("=")
    stack.container_client().upsert_item(corrupt)
    # A version of the configured key that does not exist (the key does).
    no_version["cmk"]["kid"] = no_version["cmk"]["kid"].rsplit("/", 1)[0] + "/0000000000000000000000000000dead"
    stack.container_client().upsert_item(no_version)
    # Data of another shape than the configured pointer needs (the writer
    # refuses such an event), under a header listing no field.
    text["event"]["data"] = "ssn=plaintext passed off as sealed"
    text["cmk"] = {k: v for k, v in text["cmk"].items() if k != "dek"} | {"fields": []}
    stack.container_client().upsert_item(text)
    # A header listing no field, over plaintext where the configuration
    # protects a field.
    plain["event"]["data"]["ssn"] = "plaintext passed off as sealed"
    plain["cmk"] = {k: v for k, v in plain["cmk"].items() if k not in ("dek",)} | {"fields": []}
    stack.container_client().upsert_item(plain)
    # A key id of another HSM (its kid is bound into the fields too, but the
    # reader refuses before it sends anything to that host).
    assert foreign["cmk"]["kid"].startswith(hsm_origin(strict_app) + "/")
    foreign["cmk"]["kid"] = foreign["cmk"]["kid"].replace(hsm_origin(strict_app), "https://evil.managedhsm.azure.net")
    stack.container_client().upsert_item(foreign)
    for doc in (plain, foreign, corrupt, no_version, text):
        status, _, body = get(strict_app, f"/records/{enc(topic)}/{doc['id']}")
        assert (status, body["error"]["code"]) == (422, "RecordTampered"), body
        assert "plaintext passed off" not in json.dumps(body)
        if doc is no_version:
            continue  # the private key of a version that does not exist
        with pytest.raises(InvalidTag):
            decrypt(doc, private_pem(stack, good["cmk"]["kid"]), protected=["/event/data/ssn"], **reader(strict_app))
    # The page: the readable record returned, each unreadable one reported.
    status, _, body = get(strict_app, f"/records/{enc(topic)}?limit=10")
    assert status == 200, body
    assert [r["id"] for r in body["records"]] == [good["id"]]
    assert body["records"][0]["event"]["data"]["ssn"] == f"{SECRET}-0"
    assert sorted((u["id"], u["error"]["code"]) for u in body["unreadable"]) == sorted(
        (d["id"], "RecordTampered") for d in (plain, foreign, corrupt, no_version, text))
    assert "plaintext passed off" not in json.dumps(body)


def test_protected_fields_without_a_key_name_refuse_to_run(stack):
    app = stack.serve_app(name="app-no-stage", overrides={
        "SPIN_VARIABLE_CMK_STAGE": "", "SPIN_VARIABLE_PROTECTED_FIELDS": json.dumps(PROTECTED)})
    topic = f"/topics/no-stage-{uuid.uuid4()}"
    status, _, body = post(f"{app.url}/events", [custom_event(topic, ssn=SECRET)])
    assert (status, body["error"]["code"]) == (503, "ConfigurationError"), body
    assert "cmk_stage" in body["error"]["message"]
    assert in_topic(stack, topic) == 0
    # /readyz answers it in its one 503 shape, as an anonymous probe sees it
    # (the admin key cannot be checked without a configuration).
    status, headers, ready = get(app, "/readyz", key=None)
    assert status == 503 and headers["Retry-After"], ready
    assert ready == {"status": "not-ready", "error": {"code": "ConfigurationError"}}, ready
    # The first stage chosen explicitly runs (and seals nothing).
    app1 = stack.serve_app(name="app-stage-one", overrides={
        "SPIN_VARIABLE_CMK_STAGE": "1", "SPIN_VARIABLE_PROTECTED_FIELDS": json.dumps(PROTECTED)})
    status, _, body = post(f"{app1.url}/events", [custom_event(topic, n=1)])
    assert status == 200 and "sealedFields" not in body["documents"][0], body
