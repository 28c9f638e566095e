"""Local wrapping (`hsm_local_wrap = true`), in the real runtime: the data
key is wrapped in the component with the checked key version's public part,
so a delivery makes no `wrapkey` call; records name the exact key version,
unwrap through the HSM (read back through the component) and with the
independent decryptor; and a disabled key stops writes within
`hsm_key_check_secs` (not at once: that is the trade-off). On a key of its
own."""

import base64
import json
import time
import uuid

import pytest

from harness.stack import APP_PRINCIPALS
from integration.decrypt_record import decrypt
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import post
from integration.test_keys import call
from integration.test_records import enc, get

CHECK_SECS = 4


@pytest.fixture(scope="module")
def local(stack):
    key = f"local-wrap-{uuid.uuid4().hex[:8]}"
    stack.hsm_admin("POST", "keys", {"name": key, "size": 3072, "ops": ["wrapKey", "unwrapKey"]})
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    app = stack.serve_app(name="app-local-wrap", overrides=stack.stage_two(
        "client-secret", hsm_key_name=key, hsm_key_check_secs=str(CHECK_SECS), hsm_local_wrap="true"))
    return app, key


def key_stats(stack, key):
    return stack.hsm_admin("GET", "stats")["by_key"].get(key, {})


def stored(stack, topic, event):
    return stack.container_client().read_item(document_id(topic, event["id"]), partition_key=topic)


def private_pem(stack, key, kid):
    return stack.hsm_admin("GET", f"keys/{key}/{kid.rsplit('/', 1)[1]}/private-pem")["pem"]


def test_deliveries_wrap_locally_and_unwrap_through_the_hsm(local, stack):
    app, key = local
    status, _, body = call(app, "GET", "/readyz", key=None, admin=True)
    assert status == 200 and body["kek"]["wrap"] == "local", body
    (latest,) = stack.hsm_admin("GET", "keys")[key]
    topic = f"/topics/local-{uuid.uuid4()}"
    events = [custom_event(topic, patient=f"Patient {uuid.uuid4()}") for _ in range(3)]
    before = key_stats(stack, key)
    for e in events:
        status, _, body = post(f"{app.url}/events", [e])
        assert status == 200, body
    after = key_stats(stack, key)
    assert after.get("wrapkey", 0) - before.get("wrapkey", 0) == 0, "no wrapkey call on the HSM"
    assert after.get("get", 0) - before.get("get", 0) <= 1, "the key state is read once per interval"
    for e in events:
        doc = stored(stack, topic, e)
        assert doc["cmk"]["kid"] == stack.app_kid(app, f"{stack.hsm_url}/keys/{key}/{latest['version']}"), \
            "the exact version"
        assert len(doc["cmk"]["dek"]) == 512, "one RSA-3072 block, base64url"
        assert decrypt(doc, private_pem(stack, key, doc["cmk"]["kid"]))["event"]["data"] == e["data"]
        status, _, body = get(app, f"/records/{enc(topic)}/{doc['id']}")
        assert status == 200 and body["event"]["data"] == e["data"], body
    assert key_stats(stack, key)["unwrapkey"] - after.get("unwrapkey", 0) == len(events), \
        "unwrapping always goes to the HSM"
    # The round-trip probe wraps locally too, and the HSM unwraps it.
    before = key_stats(stack, key)
    status, _, body = call(app, "POST", "/readyz/roundtrip")
    assert status == 200 and body["roundtrip"]["ok"] is True, body
    assert key_stats(stack, key).get("wrapkey", 0) == before.get("wrapkey", 0)


def test_a_disabled_key_stops_local_wraps_within_the_check_interval(local, stack):
    app, key = local
    topic = f"/topics/local-disable-{uuid.uuid4()}"
    assert call(app, "POST", "/readyz/roundtrip")[0] == 200  # reads the key state afresh
    checked = time.monotonic()
    stack.hsm_admin("POST", f"keys/{key}/state", {"enabled": False})
    try:
        # Inside the interval the cached state still says enabled, and the
        # HSM is not asked: this write goes through (the documented trade-off).
        inside = custom_event(topic, patient="wrapped inside the interval")
        status, _, body = post(f"{app.url}/events", [inside])
        assert status == 200 and time.monotonic() - checked < CHECK_SECS, body
        # Then writes stop once the state is read again.
        while True:
            status, headers, body = post(f"{app.url}/events", [custom_event(topic, patient="refused")])
            if status != 200:
                break
            assert time.monotonic() - checked < CHECK_SECS + 1.5, "still writing after the interval"
            time.sleep(0.25)
        assert (status, body["error"]["code"]) == (503, "KeyDisabled"), body
        assert int(headers["Retry-After"]) > 0
        assert time.monotonic() - checked < CHECK_SECS + 1.5
        # Its record cannot be read while the key is disabled (the HSM refuses unwrap).
        status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, inside['id'])}")
        assert (status, body["error"]["code"]) == (503, "KeyDisabled"), body
    finally:
        stack.hsm_admin("POST", f"keys/{key}/state", {"enabled": True})
    deadline = time.monotonic() + CHECK_SECS + 1.5
    while post(f"{app.url}/events", [custom_event(topic, patient="after")])[0] != 200:
        assert time.monotonic() < deadline, "writes did not recover within the interval"
        time.sleep(0.25)
    status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, inside['id'])}")
    assert status == 200 and body["event"]["data"]["patient"] == "wrapped inside the interval", body


def r_squared(n: int) -> int:
    """R^2 mod n for the component's Montgomery form: R = 2^(27 limbs),
    limbs enough for 8k + 1 bits, rounded up to a multiple of four
    (core/src/hsm/oaep.rs)."""
    k = (n.bit_length() + 7) // 8
    limbs = -(-(8 * k + 1) // 27)
    limbs += -limbs % 4
    return pow(2, 2 * 27 * limbs, n)


def test_the_kept_constant_is_the_modulus_own_and_a_damaged_one_is_set_aside(local, stack):
    from integration.test_kv_store import STATE_PREFIX, StoreEntry

    app, key = local
    if app.runtime != "host":
        pytest.skip("the store is read here on the test host")
    topic = f"/topics/local-constant-{uuid.uuid4()}"
    assert call(app, "POST", "/readyz/roundtrip")[0] == 200  # the state checked afresh
    entry = StoreEntry(stack, app, "app-local-wrap", STATE_PREFIX + key.encode())
    state = json.loads(entry.read_bytes())
    n = int.from_bytes(base64.urlsafe_b64decode(state["key"]["n"] + "=="), "big")
    kept = base64.urlsafe_b64decode(state["modulus_constant"] + "==")
    assert n.bit_length() == 3072 and int.from_bytes(kept, "big") == r_squared(n), "R^2 mod n, kept"
    # Damaged in the store: the wrap makes its own, says so, and its record opens.
    state["modulus_constant"] = base64.urlsafe_b64encode((r_squared(n) ^ 1).to_bytes(384, "big")).decode().rstrip("=")
    entry.write_bytes(json.dumps(state).encode())
    event = custom_event(topic, patient="wrapped with a damaged constant in the store")
    status, _, body = post(f"{app.url}/events", [event])
    assert status == 200, body
    assert "kept_constant_refused" in app.logs()
    doc = stored(stack, topic, event)
    assert decrypt(doc, private_pem(stack, key, doc["cmk"]["kid"]))["event"]["data"] == event["data"]
    # Not a constant at all: the state is still read, and the wrap still right.
    assert call(app, "POST", "/readyz/roundtrip")[0] == 200  # a fresh interval
    state = json.loads(entry.read_bytes())
    state["modulus_constant"] = "not base64url!"
    entry.write_bytes(json.dumps(state).encode())
    gets = key_stats(stack, key).get("get", 0)
    event = custom_event(topic, patient="wrapped with no readable constant")
    assert post(f"{app.url}/events", [event])[0] == 200
    assert key_stats(stack, key).get("get", 0) == gets, "the cached state was used, not fetched again"
    doc = stored(stack, topic, event)
    assert decrypt(doc, private_pem(stack, key, doc["cmk"]["kid"]))["event"]["data"] == event["data"]
