"""The operator's queries (infra/monitoring/queries/*.kql) against log lines
the component and the queue bridge really write.

A delivery of every kind the alerts watch is made on the local stack (the
built component in the Wasm runtime, the bridge binary, the HSM, Entra ID and
Cosmos DB stand-ins): accepted, refused (400), unauthenticated (401), a key
disabled and enabled again (503 KeyDisabled, key state changes), HSM and
Cosmos DB throttling (429), a token endpoint failing (503 IdentityUnavailable),
queue messages forwarded, left for retry and poisoned. The lines they wrote
become ContainerLogV2 rows, as Container Insights stores them (a JSON line
is a dynamic LogMessage), and then:

- every field a query reads exists in every logged line of the events it
  filters on, with the type its conversion expects (a field that is not
  logged, or logged with another type, fails; see the negative copies);
- every query, run by a small KQL evaluator (harness/kql.py), returns what
  the scenario produced.
"""

import json
import re
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from harness import kql
from harness.stack import APP_PRINCIPALS, PRINCIPALS
from integration.eventgrid import custom_event
from integration.test_foundation import INGEST_KEY, post
from integration.test_queue_bridge import log_lines, new_queue, wait_for

QUERIES = Path(__file__).resolve().parents[2] / "infra" / "monitoring" / "queries"
NAMESPACE, APP, BRIDGE = "cmk-ingest", "cmk-ingest", "bridge"
VALUES = {"namespace": NAMESPACE, "app_container": APP, "bridge_container": BRIDGE,
          "cosmos_account_id": "/subscriptions/0/resourceGroups/rg/providers/Microsoft.DocumentDB/databaseAccounts/a"}
# Queries that read no container log (Azure Resource Graph).
NOT_LOGS = {"alert-cosmos-cmk-status"}
PYTYPES = {"toint": (int,), "tolong": (int,), "todouble": (int, float), "tobool": (bool,), "tostring": (str,)}


def sigcheck(stack, path, body=None):
    req = urllib.request.Request(f"{stack.sigcheck_url}/_sigcheck/{path}", method="POST",
                                 data=json.dumps(body).encode() if body is not None else b"")
    with urllib.request.urlopen(req) as r:
        return json.load(r)


def json_lines(text: str) -> list[str]:
    """The runtime's output as lines; Spin writes a component's stderr as it
    is, Wasmtime may put a prefix before it, which is cut here."""
    out = []
    for ln in text.splitlines():
        if "{" in ln and not ln.startswith("{"):
            ln = ln[ln.index("{"):]
        out.append(ln)
    return out


@pytest.fixture(scope="module")
def scenario(stack):
    key = f"mon-kek-{uuid.uuid4().hex[:8]}"
    stack.hsm_admin("POST", "keys", {"name": key, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    # An expiry, so the key state the component logs has one.
    stack.hsm_admin("POST", f"keys/{key}/state", {"exp": int(time.time()) + 365 * 86400})
    settings = dict(hsm_key_name=key, hsm_key_check_secs="0", cosmos_retry_budget_ms="3000")
    app = stack.serve_app(name="app-monitoring", overrides=stack.stage_two("client-secret", **settings))
    topic = f"/topics/monitoring-{uuid.uuid4()}"
    answers = {}
    try:
        answers["accepted"] = post(f"{app.url}/events", [custom_event(topic, patient="a"), custom_event(topic)])[0]
        answers["refused"] = post(f"{app.url}/events", [{"id": "no-topic"}])[0]
        answers["unauthenticated"] = post(f"{app.url}/events", [custom_event(topic)], key="not-an-ingest-key")[0]
        # Managed HSM throttles once; the delivery still lands.
        stack.hsm_admin("POST", "faults", {"status": 429, "retry_after": 1, "op": "wrapkey"})
        answers["hsm_throttled"] = post(f"{app.url}/events", [custom_event(topic)])[0]
        # Cosmos DB throttles once (retried), then for longer than the budget.
        sigcheck(stack, "faults", [{"status": 429, "retry_after_ms": 100}])
        answers["cosmos_throttled_once"] = post(f"{app.url}/events", [custom_event(topic)])[0]
        sigcheck(stack, "faults", [{"status": 429, "retry_after_ms": 500, "count": 100}])
        answers["cosmos_throttled"] = post(f"{app.url}/events", [custom_event(topic)])[0]
        sigcheck(stack, "reset")

        # The key disabled: deliveries answer 503 KeyDisabled, pushed or queued.
        stack.hsm_admin("POST", f"keys/{key}/state", {"enabled": False})
        answers["key_disabled"] = post(f"{app.url}/events", [custom_event(topic)])[0]
        name, queue = new_queue(stack)
        queue.send_message(json.dumps(custom_event(topic)))
        bridge_runs = [stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name))]
        # Enabled again: deliveries land; a message no one can read is poisoned.
        stack.hsm_admin("POST", f"keys/{key}/state", {"enabled": True})
        answers["key_enabled"] = post(f"{app.url}/events", [custom_event(topic)])[0]
        queue.send_message(json.dumps(custom_event(topic)))
        queue.send_message("this is not an event")
        bridge_runs.append(stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name)))

        # The token endpoint fails: an app with an empty token cache answers
        # 503 IdentityUnavailable.
        stack.entra_admin("POST", "faults", [{"status": 500, "count": 200}])
        tokenless = stack.serve_app(name="app-monitoring-tokens", overrides=stack.stage_two("client-secret", **settings))
        answers["token_failed"] = post(f"{tokenless.url}/events", [custom_event(topic)])[0]
    finally:
        stack.entra_admin("POST", "reset")
        stack.hsm_admin("POST", "reset")
        sigcheck(stack, "reset")

    def app_lines():
        return [l for l in log_lines(app.logs()) if l.get("event") == "request"]
    # The runtime writes a log a moment after answering.
    wait_for(lambda: len(app_lines()) >= 9, timeout=15, what="the component's request lines")
    wait_for(lambda: any(l.get("event") == "request" for l in log_lines(tokenless.logs())), timeout=15,
             what="the second app's request line")
    rows = (kql.container_log_rows(json_lines(app.logs()), NAMESPACE, APP, "cmk-ingest-0")
            + kql.container_log_rows(json_lines(tokenless.logs()), NAMESPACE, APP, "cmk-ingest-1")
            + [r for run in bridge_runs
               for r in kql.container_log_rows(json_lines(run.stderr), NAMESPACE, BRIDGE, "cmk-ingest-bridge-0")])
    return {"answers": answers, "rows": rows, "bridge_runs": bridge_runs, "logs": app.logs() + tokenless.logs()}


def query_files():
    return sorted(p.stem for p in QUERIES.glob("*.kql"))


def load(name: str) -> str:
    return kql.render((QUERIES / f"{name}.kql").read_text(), VALUES)


def lookup(msg, path):
    for i, k in enumerate(path):
        if not isinstance(msg, dict) or k not in msg:
            return False, None
        msg = msg[k]
    return True, msg


def field_errors(query: kql.Query, container: str, rows: list[dict]) -> list[str]:
    """What the query reads that the logged lines of its events do not hold
    (absent, or of another type than its conversion expects)."""
    errors = []
    events = query.events()
    if not events:
        return ["the query filters on no `event`"]
    lines = [r["LogMessage"] for r in rows
             if r["ContainerName"] == container and isinstance(r["LogMessage"], dict)
             and r["LogMessage"].get("event") in events]
    for ev in events:
        if not any(l["event"] == ev for l in lines):
            errors.append(f"no `{ev}` line was logged")
    for read in query.reads:
        if read.column != "LogMessage" or read.path == ("event",):
            if read.column != "LogMessage":
                errors.append(f"reads column {read.column}.{'.'.join(read.path)}")
            continue
        dotted = ".".join(read.path)
        values = []
        for l in lines:
            found, v = lookup(l, read.path)
            if not found:
                errors.append(f"`{dotted}` is not in a logged `{l['event']}` line")
                break
            values.append(v)
        present = [v for v in values if v is not None]
        if lines and not present:
            errors.append(f"`{dotted}` is never set in the logged lines")
        want = PYTYPES.get(read.conversion)
        if want is None:
            errors.append(f"`{dotted}` is read without a conversion")
            continue
        for v in present:
            if not isinstance(v, want) or (bool not in want and isinstance(v, bool)):
                errors.append(f"`{dotted}` is logged as {type(v).__name__}, read with {read.conversion}")
                break
    return sorted(set(errors))


def container_of(name: str) -> str:
    return BRIDGE if "${bridge_container}" in (QUERIES / f"{name}.kql").read_text() else APP


def test_the_scenario_answered_as_expected(scenario):
    a = scenario["answers"]
    assert a == {"accepted": 200, "refused": 400, "unauthenticated": 403, "hsm_throttled": 200,
                 "cosmos_throttled_once": 200, "cosmos_throttled": 503, "key_disabled": 503,
                 "key_enabled": 200, "token_failed": 503}, a
    for run in scenario["bridge_runs"]:
        assert run.returncode == 0, run.stderr


@pytest.mark.parametrize("name", [q for q in query_files() if q not in NOT_LOGS])
def test_every_field_a_query_reads_is_logged(scenario, name):
    query = kql.parse(load(name))
    assert field_errors(query, container_of(name), scenario["rows"]) == []


def run(scenario, name):
    return kql.parse(load(name)).run(scenario["rows"])


def one(rows):
    assert len(rows) == 1, rows
    return rows[0]


# What each query returns on the scenario's lines.
EXPECT = {
    "events-accepted": lambda r: (
        {(x["route"], x["status"], x["code"]) for x in r}
        >= {("push", 200, ""), ("push", 400, "InvalidEvent"), ("push", 403, "Forbidden"),
            ("push", 503, "KeyDisabled"), ("push", 503, "StoreUnavailable"), ("queue", 200, ""),
            ("queue", 503, "KeyDisabled"), ("queue", 400, "InvalidMessage"),
            ("push", 503, "IdentityUnavailable")}
        and sum(x["events"] for x in r if x["status"] == 200) >= 6),
    "delivery-latency": lambda r: {x["route"] for x in r} == {"push", "queue"}
        and all(isinstance(x["p95"], int) and x["p95"] >= x["p50"] >= 0 for x in r),
    "cosmos-charge": lambda r: sum(x["calls"] for x in r) >= 6 and sum(x["throttled"] for x in r) >= 2
        and all(isinstance(x["charge"], float) for x in r),
    "dependency-calls": lambda r: sum(x["hsm_calls"] for x in r) >= 6 and sum(x["hsm_throttled"] for x in r) >= 1
        and sum(x["entra_calls"] for x in r) >= 1 and sum(x["entra_failed"] for x in r) >= 1,
    "key-state": lambda r: any(x["enabled"] is False and x["previous_enabled"] is True for x in r)
        and any(x["enabled"] is True and x["previous_enabled"] is False for x in r)
        and all(x["version"] for x in r),
    # Left for retry: `left` (transient trouble) or `requeued` (a key-state
    # refusal, put back without spending a try).
    "bridge-actions": lambda r: {"deleted", "poisoned"} <= {x["action"] for x in r}
        and bool({"left", "requeued"} & {x["action"] for x in r}),
    "queue-depth": lambda r: any(x["poison"] is True and x["messages"] >= 1 for x in r)
        and any(x["poison"] is False for x in r),
    "unavailable-by-reason": lambda r: {"KeyDisabled", "StoreUnavailable", "IdentityUnavailable"}
        <= {x["code"] for x in r},
    "alert-key-not-usable": lambda r: {x["code"] for x in r} == {"KeyDisabled"} and sum(x["answers"] for x in r) >= 2,
    "alert-poison-queue": lambda r: one(r)["messages"] >= 1,
    "alert-bridge-silent": lambda r: one(r)["depth_lines"] >= 2,
    "alert-queue-age": lambda r: isinstance(one(r)["oldest_secs"], int) and 0 <= one(r)["oldest_secs"] < 3600,
    "alert-server-errors": lambda r: 0 < one(r)["error_percent"] < 100,
    "alert-cosmos-throttled": lambda r: one(r)["throttled"] >= 2,
    "alert-hsm-throttled": lambda r: one(r)["throttled"] >= 1,
    "alert-token-failures": lambda r: one(r)["requests"] >= 1,
}


def test_every_log_query_has_an_expectation():
    assert set(EXPECT) == set(query_files()) - NOT_LOGS


@pytest.mark.parametrize("name", sorted(EXPECT))
def test_every_query_returns_what_the_scenario_produced(scenario, name):
    rows = run(scenario, name)
    assert rows and EXPECT[name](rows), rows


def test_the_bridge_silent_alert_fires_without_depth_lines(scenario):
    """The same lines without the bridge's (it is down): one row, 0 lines,
    which the rule's LessThan 1 fires on; with them it does not."""
    app_only = [r for r in scenario["rows"] if r["ContainerName"] != BRIDGE]
    assert app_only and len(app_only) < len(scenario["rows"])
    assert run({"rows": app_only}, "alert-bridge-silent") == [{"depth_lines": 0}]
    assert one(run(scenario, "alert-bridge-silent"))["depth_lines"] >= 1


def test_a_query_reading_an_unlogged_field_fails(scenario):
    """Negative copies: a field that is not logged, and a field read with the
    wrong conversion, are both caught."""
    text = load("events-accepted")
    renamed = kql.parse(text.replace("LogMessage.route", "LogMessage.path_kind"))
    assert "`path_kind` is not in a logged `request` line" in field_errors(renamed, APP, scenario["rows"])
    assert renamed.run(scenario["rows"]) == []
    mistyped = kql.parse(text.replace("toint(LogMessage.status)", "toint(LogMessage.code)"))
    assert any("`code` is logged as str, read with toint" in e for e in field_errors(mistyped, APP, scenario["rows"]))
    nested = kql.parse(load("alert-hsm-throttled").replace("LogMessage.hsm.throttled", "LogMessage.hsm.retried"))
    assert "`hsm.retried` is not in a logged `request` line" in field_errors(nested, APP, scenario["rows"])
    wrong_event = kql.parse(load("alert-poison-queue").replace('"queue_depth"', '"queue_size"'))
    assert "no `queue_size` line was logged" in field_errors(wrong_event, BRIDGE, scenario["rows"])


def test_the_logs_hold_no_secret(scenario):
    text = scenario["logs"] + "".join(r.stderr for r in scenario["bridge_runs"])
    assert INGEST_KEY not in text
    assert not re.search(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ", text), "a token reached the log"
    for app in PRINCIPALS["apps"]:
        if "secret" in app:
            assert app["secret"] not in text
