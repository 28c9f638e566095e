"""The unmodified app.wasm on the test host (tests/host), which runs it the
way Spin does: Spin's variables and key-value imports implemented natively,
`allowed_outbound_hosts` enforced, outbound HTTPS through a pooled client
that trusts the session's CA. Every stand-in the app reaches is HTTPS here,
as the services are in production; the allowed list holds only those HTTPS
origins (the plain listeners are not in it), so a success proves TLS."""

import http.client
import json
import os
import re
import socket
import sqlite3
import subprocess
import time
import tomllib
import urllib.error
import urllib.parse
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from harness.stack import ROOT, env
from harness.tls import LocalCA
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import INGEST_KEY, post
from integration.test_records import enc, get
from reliability.drive import start_proxy


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
    # table layout, in the file the host was given. A delivery of its own
    # fills them, so the test stands alone.
    topic = f"/topics/host-store-{uuid.uuid4()}"
    status, _, body = post(f"{second_stage.url}/events", [custom_event(topic, patient="Ada")])
    assert status == 200, (body, second_stage.logs())
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
    logs = app.logs()
    # The guest saw Spin's error for a refused destination...
    assert "ErrorCode::HttpRequestDenied" in logs, logs
    # ...and the host refused exactly the HSM's origin.
    hsm = urllib.parse.urlsplit(stack.hsm_tls_url)
    assert f"outbound request to {hsm.scheme}://{hsm.netloc} denied: not in allowed_outbound_hosts" in logs, logs


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


def test_each_request_gets_a_fresh_instance(stack):
    """Spin instantiates the component anew for every request: the host
    logs each instantiation with its request's number, and four requests
    (three /healthz and a delivery, over one keep-alive connection and
    over new ones) are served by four instances, one each. A host that
    reused an instance for a second request would log fewer."""
    app = stack.serve_app(name="host-fresh", runtime="host")
    conn = http.client.HTTPConnection("127.0.0.1", urllib.parse.urlsplit(app.url).port, timeout=30)
    try:
        for _ in range(2):  # one connection, kept alive
            conn.request("GET", "/healthz")
            r = conn.getresponse()
            r.read()
            assert r.status == 200
    finally:
        conn.close()
    assert healthz_within(app, 10) == 200
    assert post(f"{app.url}/events", [custom_event(f"/topics/host-fresh-{uuid.uuid4()}")])[0] == 200
    logs = app.logs()
    served = re.findall(r"request (\d+): slot taken \([^)]*\), instance (\d+) instantiated", logs)
    assert sorted(int(r) for r, _ in served) == [1, 2, 3, 4], logs
    assert len({k for _, k in served}) == 4, served



def test_a_small_request_keeps_the_instance_memory_small(stack, monkeypatch):
    """A pooled slot is zeroed when its instance ends, as far as the
    instance's linear memory reached (up to Spin's 2 MiB kept resident):
    every byte of it costs CPU on every request. With
    `CMK_TEST_HOST_MEMSTATS=1` the host logs that size per request. A
    `/healthz` request and a sealed one-event delivery stay within 512 KiB
    (262,144 and 327,680 bytes with the 128 KiB stack of build.rs and the
    small-allocation region of heap/src/lib.rs; 1,179,648 with Rust's default
    1 MiB), while a delivery near the body limit grows the memory past
    1 MiB, so the figure is measured, not fixed."""
    monkeypatch.setenv("CMK_TEST_HOST_MEMSTATS", "1")
    app = stack.serve_app(name="host-memstats", runtime="host", overrides=stack.stage_two(
        "client-secret", protected_fields='{"*": ["/data/patient"]}'))
    topic = f"/topics/host-memstats-{uuid.uuid4()}"
    assert healthz_within(app, 10) == 200
    assert post(f"{app.url}/events", [custom_event(topic, patient="Ada")])[0] == 200
    big = [custom_event(topic, patient="Ada", notes="n" * 9000) for _ in range(100)]
    status, _, body = post(f"{app.url}/events", big)
    assert status == 200, body
    # The host logs the size when the instance ends, after the answer has
    # gone out: wait for the third line.
    def reached():
        found = re.findall(r"request (\d+): linear memory reached (\d+) bytes", app.logs())
        return {int(r): int(b) for r, b in found}
    deadline = time.monotonic() + 10
    while len(reached()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    by_request = reached()
    assert len(by_request) >= 3, app.logs()
    *small, large = [by_request[r] for r in sorted(by_request)]
    assert all(b <= 512 * 1024 for b in small), by_request
    assert large > 1024 * 1024, by_request


@pytest.mark.parametrize("setting,allocator", [(None, "pooling"), ("1", "pooling"), ("0", "on-demand")],
                         ids=["probe", "pooling-on", "pooling-off"])
def test_instances_come_from_the_allocator_spin_chooses(stack, monkeypatch, setting, allocator):
    """Spin runs on Wasmtime's pooling allocator when the machine can
    reserve 42 bits of address space (this one can), and
    SPIN_WASMTIME_POOLING=1/0 overrides the probe: the host's start line
    names the allocator it uses, and the app is served either way, a fresh
    instance per request (a pooled slot is reset between them)."""
    if setting is None:
        monkeypatch.delenv("SPIN_WASMTIME_POOLING", raising=False)
    else:
        monkeypatch.setenv("SPIN_WASMTIME_POOLING", setting)
    app = stack.serve_app(name=f"host-alloc-{setting or 'probe'}", runtime="host")
    start_line = next(line for line in app.logs().splitlines() if "cmk-test-host: serving" in line)
    assert f"({allocator} instance allocator," in start_line, start_line
    for _ in range(2):
        assert healthz_within(app, 10) == 200
        assert post(f"{app.url}/events", [custom_event(f"/topics/host-alloc-{uuid.uuid4()}")])[0] == 200
    served = re.findall(r"request (\d+): slot taken \([^)]*\), instance (\d+) instantiated", app.logs())
    assert len(served) == 4 and len({k for _, k in served}) == 4, served


def test_an_unknown_pooling_setting_stops_the_start(tmp_path):
    """Spin accepts only 1 or 0 in SPIN_WASMTIME_POOLING (it panics
    otherwise); the host refuses to start with Spin's message."""
    r = subprocess.run([env("CMK_TEST_HOST"), "--manifest", str(ROOT / "spin.toml"), "--listen", "127.0.0.1:0",
                        "--kv-db", str(tmp_path / "kv.db")],
                       env={**os.environ, "SPIN_WASMTIME_POOLING": "yes"},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "SPIN_WASMTIME_POOLING=yes not supported, only 1/0 supported" in r.stderr, r.stderr


# -- the host's own limits: concurrency cap, request timeout -----------------

def held_delivery(app, topic: str) -> tuple[socket.socket, bytes]:
    """A delivery whose body is only half sent: the app's instance is
    running (it waits for the rest of the body) until the caller sends the
    remainder. Returns the socket and that remainder."""
    body = json.dumps([custom_event(topic, patient="held")]).encode()
    half = len(body) // 2
    s = socket.create_connection(("127.0.0.1", urllib.parse.urlsplit(app.url).port), timeout=30)
    s.sendall(b"POST /events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
              + f"x-cmk-ingest-key: {INGEST_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body[:half])
    return s, body[half:]


def status_of(s: socket.socket) -> int:
    line = s.makefile("rb").readline()
    assert line.startswith(b"HTTP/1.1 "), line
    return int(line.split()[1])


def healthz_within(app, seconds: float) -> int | None:
    """/healthz's status if it answers within `seconds`, else None."""
    try:
        with urllib.request.urlopen(f"{app.url}/healthz", timeout=seconds) as r:
            return r.status
    except (TimeoutError, socket.timeout):
        return None
    except urllib.error.URLError as e:
        if isinstance(e.reason, (TimeoutError, socket.timeout)):
            return None
        raise


def wait_for_log(app, text: str, timeout: float = 20.0) -> str:
    """The app's log once it contains `text` (polled), else a failure."""
    deadline = time.monotonic() + timeout
    while True:
        logs = app.logs()
        if text in logs:
            return logs
        assert time.monotonic() < deadline, f"no {text!r} in the log within {timeout}s:\n{logs}"
        time.sleep(0.05)


@pytest.mark.parametrize("cap", [1, 2], ids=["cap-1-waits", "cap-2-answers"])
def test_requests_past_the_concurrency_cap_wait_for_a_slot(stack, cap):
    """With `--max-concurrency 1`, a delivery whose body is still arriving
    holds the only slot: /healthz waits (the host says so) until it is done,
    then both answer 200. With a cap of 2 (the control) /healthz answers at
    once, so the held delivery is really in flight. A host that stops
    capping fails the first case; one that stops holding the slot for the
    request's whole life too. The host numbers requests in its log: 1 is
    the first /healthz, 2 the held delivery, 3 the second /healthz."""
    app = stack.serve_app(name=f"host-cap-{cap}", runtime="host", host_args=["--max-concurrency", str(cap)])
    assert healthz_within(app, 10) == 200  # compiled and serving
    held, rest = held_delivery(app, f"/topics/host-cap-{uuid.uuid4()}")
    try:
        # The held request has taken its slot (headers in, body awaited).
        wait_for_log(app, f"request 2: slot taken (1 of {cap} in use)")
        with ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(healthz_within, app, 20)
            if cap == 1:
                logs = wait_for_log(app, "request 3: waiting for a slot (1 of 1 in use)")
                assert "request 3: slot taken" not in logs
                assert not waiting.done(), "answered past the cap"
                held.sendall(rest)
                assert status_of(held) == 200
                assert waiting.result() == 200
            else:
                assert waiting.result() == 200
                held.sendall(rest)
                assert status_of(held) == 200
    finally:
        held.close()
    logs = app.logs()
    assert "at most %d requests at once" % cap in logs
    assert f"request 3: slot taken ({1 if cap == 1 else 2} of {cap} in use)" in logs, logs
    assert ("request 3: waiting for a slot" in logs) == (cap == 1), logs


def test_the_request_timeout_ends_a_request_and_answers_500(stack):
    """`--request-timeout-secs 1`: a delivery whose body never completes
    (the app itself would wait 30 s for it) is ended by the host after about
    a second with 500, and the host says why. Without the flag the host, as
    Spin for a WASI 0.2 app, sets no timeout (docs/runtime.md)."""
    app = stack.serve_app(name="host-timeout", runtime="host", overrides={"SPIN_VARIABLE_BODY_READ_TIMEOUT_SECS": "30"},
                          host_args=["--request-timeout-secs", "1"])
    assert healthz_within(app, 10) == 200
    held, _ = held_delivery(app, f"/topics/host-timeout-{uuid.uuid4()}")
    try:
        started = time.monotonic()
        held.settimeout(15)
        assert status_of(held) == 500
        assert time.monotonic() - started < 10
    finally:
        held.close()
    assert "request timed out after 1s" in app.logs()
    # The next request gets a fresh instance and is answered.
    assert healthz_within(app, 10) == 200


def test_a_store_label_the_component_does_not_list_is_refused(stack, tmp_path):
    """With `key_value_stores = []` the app's open of `default` is refused
    (Spin's `access-denied`): it says so, works without its cache, and
    nothing reaches the store. A manifest naming a store other than
    `default` does not start (Spin needs runtime config for it)."""
    text = (ROOT / "spin.toml").read_text()
    assert 'key_value_stores = ["default"]' in text
    manifest = tmp_path / "spin.toml"
    source = tomllib.loads(text)["component"]["cmk-ingest"]["source"]
    manifest.write_text(text.replace('key_value_stores = ["default"]', "key_value_stores = []")
                        .replace(f'source = "{source}"', f'source = "{ROOT / source}"'))
    app = stack.serve_app(name="host-no-kv", runtime="host", manifest=manifest,
                          overrides=stack.stage_two("client-secret", hsm_key_check_secs="0"))
    topic = f"/topics/host-no-kv-{uuid.uuid4()}"
    status, _, body = post(f"{app.url}/events", [custom_event(topic, patient="x")])
    assert status == 200, (body, app.logs())
    assert "kv_store_unavailable" in app.logs()
    db = stack.workdir / "host-no-kv-host-state" / "sqlite_key_value.db"
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT COUNT(*) FROM spin_key_value").fetchone()[0] == 0

    other = tmp_path / "other.toml"
    other.write_text(manifest.read_text().replace("key_value_stores = []", 'key_value_stores = ["default", "cache"]'))
    r = subprocess.run([env("CMK_TEST_HOST"), "--manifest", str(other), "--listen", "127.0.0.1:0",
                        "--kv-db", str(tmp_path / "kv.db")], env={**os.environ, **app.variables},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and '"cache"' in r.stderr and "not defined" in r.stderr, r.stderr


@pytest.mark.parametrize("trusted", [True, False], ids=["session-ca", "unknown-ca"])
def test_outbound_tls_needs_a_trusted_ca(stack, tmp_path, trusted):
    """Cosmos DB reached through an HTTPS proxy whose certificate comes from
    the session's CA (written) or from a CA the host was not given (the
    handshake is refused: the guest sees an error, answers 503, and nothing
    is forwarded or written)."""
    ca = None if trusted else LocalCA(tmp_path / "unknown-ca")
    proxy = start_proxy(stack, f"tls-{'trusted' if trusted else 'unknown'}", stack.cosmos_url, "cosmos", tls=True,
                        ca=ca)
    app = stack.serve_app(name=f"host-tls-{'trusted' if trusted else 'unknown'}", runtime="host",
                          overrides={"SPIN_VARIABLE_COSMOS_ENDPOINT": proxy.app_url,
                                     "SPIN_VARIABLE_COSMOS_RETRY_BUDGET_MS": "2000"})
    topic = f"/topics/host-tls-{uuid.uuid4()}"
    event = custom_event(topic, patient="p")
    status, _, body = post(f"{app.url}/events", [event])
    stats = proxy.control("stats")
    doc_id = document_id(topic, event["id"])
    written = list(stack.container_client().query_items(
        "SELECT c.id FROM c WHERE c.id = @id", parameters=[{"name": "@id", "value": doc_id}],
        enable_cross_partition_query=True))
    if trusted:
        assert status == 200, (body, app.logs())
        assert stats["forwarded"] > 0 and stats["tls_connections"] > 0, stats
        assert len(written) == 1
    else:
        assert status == 503, (status, body, app.logs())
        assert stats["tls_failures"] > 0 and stats["forwarded"] == 0 and stats["requests"] == 0, stats
        assert written == []
