"""The benchmarks' floor component (tests/bench/floor): the least I/O of a
delivery, measured beside the component to say what the runtime spends
whatever the component computes (docs/benchmarks.md). A floor that
quietly skipped an exchange or a document would make that figure a
fiction, so this checks each against the stand-ins: one `wrapkey` per
delivery (none with local wrap, where the floor wraps with the
component's RSA code; either way the HSM unwraps what was stored), one
request per delivery to Cosmos DB behind the signature check with a
document per event (a transactional batch for several, as the component
writes them), one token for all of them, and `delivery_ab.py` runs the
floor and the component side by side. The floor's `bound` build (the
floor plus the product's unavoidable work, without JSON trees) must seal
as the record format says: the independent decryptor opens its records
(which are not the product's documents: the event as it came, its
protected values sealed from their raw text)."""

import base64
import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm

from harness.stack import KEK_NAME, ROOT, read_profile
from integration.decrypt_record import decrypt
from integration.test_envelope_reads import StandInToken
from integration.test_stack_depth import main_layout

pytestmark = pytest.mark.skipif(not os.environ.get("CMK_TEST_HOST"), reason="the floor is measured on the test host")


def floor_wasm():
    """Builds the floor (seconds once the component is built: same crates)."""
    subprocess.run(["cargo", "build", "--quiet", "--release", "--target", "wasm32-wasip2", "-p", "cmk-bench-floor"],
                   cwd=ROOT, check=True, timeout=900)
    return ROOT / "target/wasm32-wasip2/release/cmk_bench_floor.wasm"


def test_the_floor_lays_out_its_memory_as_the_component_does():
    """The same 128 KiB of stack below the data (tests/bench/floor/build.rs):
    a pooled slot is reset as far as memory reached, so a floor with Rust's
    default megabyte of stack would charge the runtime for memory the
    component does not touch."""
    floor, component = main_layout(floor_wasm()), main_layout(Path(os.environ["CMK_APP_WASM"]))
    assert floor["stack_pointer"] == component["stack_pointer"] == 128 * 1024 == floor["data_start"], (floor, component)
    assert floor["min_pages"] <= component["min_pages"], (floor, component)


def post(url, body):
    req = urllib.request.Request(f"{url}/events", data=body, method="POST",
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return r.status, r.read()


@pytest.mark.parametrize("local_wrap", [False, True], ids=["remote-wrap", "local-wrap"])
def test_the_floor_does_a_deliverys_exchanges_and_nothing_is_skipped(stack, monkeypatch, local_wrap):
    monkeypatch.setenv("CMK_APP_WASM", str(floor_wasm()))
    container = f"floor-{uuid.uuid4().hex[:8]}"
    db = stack.cosmos_client().get_database_client(stack.database)
    db.create_container(container, PartitionKey("/pk"))
    app = stack.serve_app(name=f"app-floor-{local_wrap}", runtime="host", overrides=stack.stage_two(
        "client-secret", cosmos_container=container, hsm_local_wrap=str(local_wrap).lower()))
    before = (stack.hsm_admin("GET", "stats"), stack.entra_admin("GET", "stats"), stack.sigcheck_stats())
    events = [[{"id": f"e{i}", "eventType": "Bench.Floor", "data": {"n": i, "text": "x" * 900}}] for i in range(3)]
    # A batch whose strings hold what its scan must step over: an escaped
    # quote then what would end the event and start another, and a last
    # character that is an escaped backslash.
    events.append([{"id": f"e{i}", "eventType": "Bench.Floor", "data": {"n": i, "text": 'q"}}, {"x": [' + f"{i}\\"}}
                   for i in range(3, 8)])
    for e in events:
        status, answer = post(app.url, json.dumps(e).encode())
        assert (status, answer) == (200, f'{{"accepted":{len(e)}}}'.encode())
    hsm, entra, sig = stack.hsm_admin("GET", "stats"), stack.entra_admin("GET", "stats"), stack.sigcheck_stats()
    assert hsm["wrapkey"] - before[0]["wrapkey"] == (0 if local_wrap else 4)
    assert entra["issued"] - before[1]["issued"] == 1, "one token, then the key-value entry"
    assert sig["forwarded"] - before[2]["forwarded"] == 4 and sig["rejected"] == before[2]["rejected"]
    docs = list(db.get_container_client(container).query_items("SELECT * FROM c", enable_cross_partition_query=True))
    assert sorted(d["event"]["data"]["n"] for d in docs) == list(range(8))
    assert all(d["event"] == e for d in docs for e in events[-1] if d["event"]["id"] == e["id"])
    assert len({d["wrapped"] for d in docs if d["event"]["data"]["n"] >= 3}) == 1, "one key for a delivery"
    # A GET (the bench's /healthz when it serves the floor) makes no exchange.
    exchanges = lambda: (stack.hsm_admin("GET", "stats")["wrapkey"], stack.sigcheck_stats()["forwarded"])  # noqa: E731
    before_get = exchanges()
    with urllib.request.urlopen(f"{app.url}/healthz", timeout=30) as r:
        assert r.status == 200
    assert exchanges() == before_get
    # Each delivery's key is a real RSA-OAEP-256 wrap under the key version
    # it names, made by the HSM or, with local wrap, by the component's own
    # code: the HSM unwraps it to 32 bytes.
    unwrapped = set()
    for kid, value in {(d["kid"], d["wrapped"]) for d in docs}:
        assert kid.split("/keys/")[1].startswith(f"{KEK_NAME}/")
        wrapped = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
        client = CryptographyClient(kid.replace(stack.hsm_url, stack.hsm_tls_url),
                                    credential=StandInToken(stack.entra_url),
                                    verify_challenge_resource=False, connection_verify=stack.hsm_cert)
        unwrapped.add(client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key)
    assert len(unwrapped) == len(events) and all(len(k) == 32 for k in unwrapped)


def test_delivery_ab_runs_the_component_beside_the_floor():
    # /proc counts CPU in 10 ms ticks, charged where the timer finds the
    # process: 20 deliveries (about 20 ms) could read as no tick at all.
    # 150 take well over ten ticks a round.
    r = subprocess.run([sys.executable, str(ROOT / "tests/bench/delivery_ab.py"), os.environ["CMK_APP_WASM"],
                        str(floor_wasm()), "--rounds", "2", "--deliveries", "150"],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    lines = r.stdout.splitlines()
    assert lines[0] == "round,cmk_ingest.wasm,cmk_bench_floor.wasm"
    assert [line.split(",")[0] for line in lines[1:3]] == ["0", "1"]
    assert all(float(x) > 0 for line in lines[1:3] for x in line.split(",")[1:])
    assert "# cmk_bench_floor.wasm / cmk_ingest.wasm: median ratio" in r.stdout


def bound_wasm():
    sys.path.insert(0, str(ROOT / "tests/bench"))
    import bench

    return bench.bound_wasm()


@pytest.mark.parametrize("local_wrap", [False, True], ids=["remote-wrap", "local-wrap"])
def test_the_bounds_records_open_with_the_independent_decryptor(stack, monkeypatch, local_wrap):
    sys.path.insert(0, str(ROOT / "tests/bench"))
    from bench import EVENT_TYPE, PROTECTED, make_events

    monkeypatch.setenv("CMK_APP_WASM", str(bound_wasm()))
    container = f"bound-{uuid.uuid4().hex[:8]}"
    db = stack.cosmos_client().get_database_client(stack.database)
    db.create_container(container, PartitionKey("/pk"))
    app = stack.serve_app(name=f"app-bound-{local_wrap}", runtime="host", overrides=stack.stage_two(
        "client-secret", cosmos_container=container, hsm_local_wrap=str(local_wrap).lower(),
        protected_fields=json.dumps({EVENT_TYPE: PROTECTED})))
    key = read_profile()["SPIN_VARIABLE_INGEST_KEYS"].split(",")[0]
    topic = f"/topics/bound-{uuid.uuid4().hex[:8]}"
    events = [{**e, "topic": topic} for e in make_events(12, seed=5)]

    def deliver(batch, ingest_key):
        req = urllib.request.Request(f"{app.url}/events", data=json.dumps(batch).encode(), method="POST",
                                     headers={"content-type": "application/json", "x-cmk-ingest-key": ingest_key})
        try:
            with urllib.request.urlopen(req, timeout=60) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    # The sender check is made: a wrong key writes nothing.
    status, answer = deliver(events[:2], "not-" + key)
    assert status == 502 and b"ingest key refused" in answer, (status, answer)
    for batch in (events[:1], events[1:]):
        assert deliver(batch, key) == (200, f'{{"accepted":{len(batch)}}}'.encode())
    docs = list(db.get_container_client(container).query_items("SELECT * FROM c", enable_cross_partition_query=True))
    assert len(docs) == len(events)

    def unwrap(kid, wrapped):
        client = CryptographyClient(kid.replace(stack.hsm_url, stack.hsm_tls_url),
                                    credential=StandInToken(stack.entra_url),
                                    verify_challenge_resource=False, connection_verify=stack.hsm_cert)
        return client.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key

    sent = {e["id"]: e for e in events}
    for doc in docs:
        event = sent[doc["event"]["id"]]
        for p in PROTECTED:
            plain = event["data"][p.rsplit("/", 1)[1]]
            assert json.dumps(plain) not in json.dumps(doc), f"{p} stored in plaintext"
        assert doc["cmk"]["fields"] == [f"/event{p}" for p in PROTECTED]
        clear = decrypt(doc, unwrap=unwrap, hsm=app.variables["SPIN_VARIABLE_HSM_ENDPOINT"], key_name=KEK_NAME,
                        protected=[f"/event{p}" for p in PROTECTED])
        assert clear["event"] == event
    # One data key per delivery.
    assert len({d["cmk"]["dek"] for d in docs}) == 2
