"""The unmodified app.wasm on the test host (tests/host), which runs it the
way Spin does: Spin's variables and key-value imports implemented natively,
`allowed_outbound_hosts` enforced, outbound HTTPS through a pooled client
that trusts the session's CA. Every stand-in the app reaches is HTTPS here,
as the services are in production; the allowed list holds only those HTTPS
origins (the plain listeners are not in it), so a success proves TLS."""

import json
import os
import sqlite3
import subprocess
import tomllib
import uuid
from pathlib import Path

import pytest

from harness.stack import ROOT, env
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import post
from integration.test_records import enc, get


@pytest.fixture(scope="module")
def first_stage(stack):
    return stack.serve_app(name="host-first-stage", runtime="host")


@pytest.fixture(scope="module")
def second_stage(stack):
    return stack.serve_app(name="host-second-stage", runtime="host",
                           overrides=stack.stage_two("client-secret", hsm_key_check_secs="0"))


def test_first_stage_writes_and_reads_over_https(first_stage, stack):
    assert first_stage.variables["SPIN_VARIABLE_COSMOS_ENDPOINT"] == stack.sigcheck_tls_url
    topic = f"/topics/host-{uuid.uuid4()}"
    event = custom_event(topic, patient="p-1", note="ü ✓")
    status, _, body = post(f"{first_stage.url}/events", [event])
    assert status == 200, (body, first_stage.logs())
    doc_id = document_id(topic, event["id"])
    assert stack.container_client().read_item(doc_id, partition_key=topic)["event"]["data"]["patient"] == "p-1"
    status, _, body = get(first_stage, f"/records/{enc(topic)}/{doc_id}")
    assert status == 200 and body["event"]["data"] == {"patient": "p-1", "note": "ü ✓"}, body


def test_second_stage_seals_through_hsm_and_entra_over_https(second_stage, stack):
    v = second_stage.variables
    assert v["SPIN_VARIABLE_HSM_ENDPOINT"] == stack.hsm_tls_url
    assert v["SPIN_VARIABLE_AZURE_AUTHORITY_HOST"] == stack.entra_tls_url
    topic = f"/topics/host-sealed-{uuid.uuid4()}"
    event = custom_event(topic, patient="Grace Hopper")
    status, _, body = post(f"{second_stage.url}/events", [event])
    assert status == 200, (body, second_stage.logs())
    doc = stack.container_client().read_item(document_id(topic, event["id"]), partition_key=topic)
    stored = json.dumps(doc)
    assert "Grace Hopper" not in stored
    # The key id the HSM answered with names the origin it was reached on.
    assert stack.hsm_tls_url in stored, stored
    status, _, body = get(second_stage, f"/records/{enc(topic)}/{doc['id']}")
    assert status == 200 and body["event"]["data"] == {"patient": "Grace Hopper"}, body


def test_key_value_lands_in_spins_sqlite_store(second_stage):
    # The token cache and key state live in the `default` store: Spin's
    # table layout, in the file the host was given.
    db = Path(second_stage.process.log).parent / "host-second-stage-host-state" / "sqlite_key_value.db"
    with sqlite3.connect(db) as conn:
        stores = {row[0] for row in conn.execute("SELECT DISTINCT store FROM spin_key_value")}
        count = conn.execute("SELECT COUNT(*) FROM spin_key_value WHERE store = 'default'").fetchone()[0]
    assert stores == {"default"} and count > 0


def narrowed_manifest(tmp: Path, drop: str) -> Path:
    """spin.toml with one entry left out of allowed_outbound_hosts, and
    everything else (including any entry added later) kept."""
    text = (ROOT / "spin.toml").read_text()
    manifest = tomllib.loads(text)
    (component,) = manifest["component"].values()
    hosts = component["allowed_outbound_hosts"]
    assert drop in hosts
    start = text.index("allowed_outbound_hosts")
    end = text.index("]", start) + 1
    kept = ", ".join(json.dumps(h) for h in hosts if h != drop)
    text = text[:start] + f"allowed_outbound_hosts = [{kept}]" + text[end:]
    text = text.replace(f'source = "{component["source"]}"', f'source = "{ROOT / component["source"]}"')
    out = tmp / "spin.toml"
    out.write_text(text)
    return out


def test_a_host_outside_allowed_outbound_hosts_is_refused(stack, tmp_path):
    """The HSM is left out of the list: the app's key request never leaves
    the host (the guest gets HttpRequestDenied), so the delivery is refused
    and the HSM sees nothing from this app. Widening spin.toml's list (e.g.
    `*://*:*`) or a host that stops enforcing it makes this fail."""
    manifest = narrowed_manifest(tmp_path, "{{ hsm_endpoint }}")
    overrides = stack.stage_two("client-secret", hsm_key_check_secs="0")
    before = stack.hsm_admin("GET", "stats")
    app = stack.serve_app(name="host-denied", runtime="host", overrides=overrides, manifest=manifest)
    topic = f"/topics/host-denied-{uuid.uuid4()}"
    status, headers, body = post(f"{app.url}/events", [custom_event(topic, patient="x")])
    assert status == 503, (status, body)
    after = stack.hsm_admin("GET", "stats")
    assert json.dumps(after.get("by_key", {}).get("app-kek")) == json.dumps(before.get("by_key", {}).get("app-kek"))
    assert "denied: not in allowed_outbound_hosts" in app.logs()


def test_the_host_refuses_to_start_without_a_required_variable(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SPIN_VARIABLE_")}
    r = subprocess.run([env("CMK_TEST_HOST"), "--manifest", str(ROOT / "spin.toml"), "--listen", "127.0.0.1:0",
                        "--kv-db", str(tmp_path / "kv.db")], env=clean, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "no provider resolved required variable(s)" in r.stderr and "cosmos_endpoint" in r.stderr, r.stderr


def test_outbound_connections_are_pooled_across_requests_and_instances(first_stage, stack):
    """Spin (>= 3.4) keeps outbound connections alive and shares them across
    instances: sequential deliveries, each in a fresh instance, reuse one
    TLS connection to the Cosmos DB endpoint instead of opening one each."""
    before = stack.sigcheck_stats()
    for _ in range(10):
        topic = f"/topics/host-pool-{uuid.uuid4()}"
        assert post(f"{first_stage.url}/events", [custom_event(topic)])[0] == 200
    after = stack.sigcheck_stats()
    requests = after["tls_requests"] - before["tls_requests"]
    connections = after["tls_connections"] - before["tls_connections"]
    assert requests >= 10
    assert connections <= 2, (connections, requests)
