"""The stage switch loses nothing, in the real runtime: a container populated
in the first stage (thousands of records over several partition keys,
written through the component) is copied into a container of another
database by `scripts/migrate-records`, killed mid-copy and resumed; records
the source receives after the copy finished are carried by the final
`--restart` run (a finished checkpoint alone does nothing); then the
component is started in the second stage on the copy, where the records
cannot be read until `POST /admin/seal` has sealed them; the pass runs in
pages, is interrupted by killing the runtime mid-page and resumed from the
last continuation. Afterwards every record is stored sealed, reads back
through the component equal to what was sent, nothing is duplicated, the
answers' counts add up, and a second pass seals nothing. Once the target
holds sealed records the copy refuses to run (it would re-create records
erased after the switch) and writes nothing."""

import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pytest
from azure.cosmos import PartitionKey

from harness.stack import KEK_NAME, ROOT, read_profile
from integration.decrypt_record import decrypt
from integration.test_foundation import post
from integration.test_records import enc, get

ADMIN_KEY = read_profile()["SPIN_VARIABLE_ADMIN_KEYS"]
RECORDS = 2000
LATE = 40  # written to the source after the first copy finished
TOTAL = RECORDS + LATE
PARTITIONS = 7
PROTECTED = '{"Contoso.Visit": ["/data/patient", "/subject"], "*": ["/data"]}'
SYSTEM = ("_rid", "_self", "_etag", "_attachments", "_ts")


def seal(app, query="", key=ADMIN_KEY, timeout=120):
    headers = {"x-cmk-admin-key": key} if key else {}
    req = urllib.request.Request(f"{app.url}/admin/seal{query}", data=b"", method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


def event(n: int) -> dict:
    visit = n % 3 != 0
    return {
        "id": str(uuid.uuid4()),
        "topic": f"/topics/switch-{n % PARTITIONS}",
        "subject": f"ward {n} of a patient",
        "eventType": "Contoso.Visit" if visit else "Contoso.Note",
        "eventTime": "2026-12-01T10:00:00.000Z",
        "data": {"patient": f"Patient {uuid.uuid4()}", "bed": n} if visit else {"note": f"note {uuid.uuid4()}"},
        "dataVersion": "1.0",
        "metadataVersion": "1",
    }


def sigcheck(stack, path: str, body=None) -> None:
    """Controls the signature check in front of the store (faults, reset)."""
    req = urllib.request.Request(f"{stack.sigcheck_url}/_sigcheck/{path}", method="POST",
                                 data=json.dumps(body).encode() if body is not None else b"")
    urllib.request.urlopen(req).close()


def content(doc: dict) -> dict:
    return {k: v for k, v in doc.items() if k not in SYSTEM}


def all_docs(container) -> list[dict]:
    return list(container.query_items("SELECT * FROM c", enable_cross_partition_query=True))


def sealed_count(container) -> int:
    return len(list(container.query_items("SELECT VALUE c.id FROM c WHERE IS_DEFINED(c.cmk)",
                                          enable_cross_partition_query=True)))


def is_sealed(v) -> bool:
    return isinstance(v, dict) and set(v) == {"cmk", "iv", "ct"}


@pytest.fixture(scope="module")
def switch(stack):
    tag = uuid.uuid4().hex[:8]
    client = stack.cosmos_client()
    source = client.get_database_client(stack.database).create_container(f"switch-{tag}", PartitionKey("/pk"))
    target_db = client.create_database(f"switched-{tag}")
    target = target_db.create_container("events", PartitionKey("/pk"))
    return {"tag": tag, "source": source, "target": target, "target_db": target_db.id}


def migrate(stack, sw, checkpoint: Path, *extra: str) -> subprocess.Popen:
    argv = [os.environ["CMK_PYTHON"], str(ROOT / "scripts/migrate-records"),
            "--source-endpoint", stack.cosmos_url, "--source-database", stack.database,
            "--source-container", sw["source"].id,
            "--target-endpoint", stack.cosmos_url, "--target-database", sw["target_db"],
            "--target-container", "events", "--checkpoint", str(checkpoint), "--page-size", "50", *extra]
    keys = {"MIGRATE_SOURCE_KEY": stack.cosmos_key, "MIGRATE_TARGET_KEY": stack.cosmos_key}
    return subprocess.Popen(argv, env={**os.environ, **keys}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def test_stage_one_records_are_copied_and_sealed_without_loss(stack, switch):
    started = time.monotonic()

    def phase(name):
        print(f"{name}: {time.monotonic() - started:.1f}s", flush=True)
    # -- stage one: the component writes plaintext records --------------------
    stage_one = stack.serve_app(name="app-switch-one", overrides={
        "SPIN_VARIABLE_COSMOS_CONTAINER": switch["source"].id})
    sent = {}
    events = [event(n) for n in range(RECORDS)]
    for i in range(0, RECORDS, 100):
        status, _, body = post(f"{stage_one.url}/events", events[i:i + 100])
        assert status == 200, body
    for e in events:
        sent[e["id"]] = e
    stage_one.process.stop()
    phase("written")
    source_docs = {d["id"]: d for d in all_docs(switch["source"])}
    assert len(source_docs) == RECORDS
    assert len({d["pk"] for d in source_docs.values()}) == PARTITIONS
    assert all("cmk" not in d for d in source_docs.values())

    # -- the copy, killed mid-run and resumed --------------------------------
    checkpoint = stack.workdir / f"migrate-{switch['tag']}.json"
    run = migrate(stack, switch, checkpoint)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and run.poll() is None:
        if checkpoint.exists() and json.loads(checkpoint.read_text())["counts"]["pages"] >= 8:
            break
        time.sleep(0.02)
    assert run.poll() is None, f"the copy finished before it could be interrupted: {run.communicate()}"
    os.killpg(run.pid, signal.SIGKILL)
    run.wait()
    interrupted = json.loads(checkpoint.read_text())
    assert not interrupted["done"] and interrupted["continuation"]
    in_target = len(all_docs(switch["target"]))
    assert interrupted["counts"]["copied"] <= in_target < RECORDS, "the copy was cut short"
    out, err = migrate(stack, switch, checkpoint).communicate(timeout=120)
    final = json.loads(out.strip().splitlines()[-1])
    assert final["done"], (out, err)
    # Documents written after the last checkpoint are met again and found equal.
    assert final["read"] == RECORDS and final["copied"] + final["existing"] == RECORDS, final
    assert final["conflicts"] == final["failed"] == 0
    assert final["existing"] == in_target - interrupted["counts"]["copied"]
    copied = all_docs(switch["target"])
    assert len(copied) == len({d["id"] for d in copied}) == RECORDS, "nothing lost, nothing duplicated"
    assert {d["id"]: content(d) for d in copied} == {i: content(d) for i, d in source_docs.items()}

    # -- records that land in the source after the copy finished -------------
    stage_one = stack.serve_app(name="app-switch-one-late", overrides={
        "SPIN_VARIABLE_COSMOS_CONTAINER": switch["source"].id})
    late = [event(RECORDS + n) for n in range(LATE)]
    status, _, body = post(f"{stage_one.url}/events", late)
    assert status == 200, body
    stage_one.process.stop()
    for e in late:
        sent[e["id"]] = e
    source_docs = {d["id"]: d for d in all_docs(switch["source"])}
    assert len(source_docs) == TOTAL
    # The finished checkpoint alone does nothing: the late records stay behind.
    proc = migrate(stack, switch, checkpoint)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (out, err)
    assert json.loads(out.strip().splitlines()[-1]) == {**final, "done": True}
    assert len(all_docs(switch["target"])) == RECORDS
    # The final run, with --restart, carries them and finds the rest in place.
    proc = migrate(stack, switch, checkpoint, "--restart")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    last = json.loads(out.strip().splitlines()[-1])
    assert last["done"] and last["read"] == TOTAL, last
    assert (last["copied"], last["existing"], last["conflicts"], last["failed"]) == (LATE, RECORDS, 0, 0), last
    copied = all_docs(switch["target"])
    assert len(copied) == len({d["id"] for d in copied}) == TOTAL, "nothing lost, nothing duplicated"
    assert {d["id"]: content(d) for d in copied} == {i: content(d) for i, d in source_docs.items()}
    phase("copied")

    # -- stage two on the copy ------------------------------------------------
    overrides = stack.stage_two("client-secret", cosmos_database=switch["target_db"], cosmos_container="events",
                                protected_fields=PROTECTED)
    app = stack.serve_app(name="app-switch-two", overrides=overrides)
    some = next(iter(source_docs.values()))
    status, _, body = get(app, f"/records/{enc(some['pk'])}/{some['id']}")
    assert status == 422 and body["error"]["code"] == "RecordUnsealed", body

    # The pass in pages; the runtime is killed in the middle of a page.
    totals = {"scanned": 0, "sealed": 0, "resealed": 0, "alreadySealed": 0, "conflicts": 0, "failed": 0}
    continuation, calls, interrupted_once = None, 0, False
    while True:
        query = "?limit=100" + (f"&continuation={enc(continuation)}" if continuation else "")
        if calls == 5 and not interrupted_once:
            interrupted_once = True
            # Counted on the server itself, around the signature check, so
            # that the counting neither waits behind the page nor slows it.
            from azure.cosmos import CosmosClient
            raw = CosmosClient(stack.cosmos_raw_url, credential=stack.cosmos_key, enable_endpoint_discovery=False) \
                .get_database_client(switch["target_db"]).get_container_client("events")
            before = sealed_count(raw)
            # Each of the page's requests is held 100 ms, so that the page is
            # seen part-written, not only before or after.
            sigcheck(stack, "faults", [{"delay_ms": 100, "count": 300}])
            answer = {}
            t = threading.Thread(target=lambda: answer.update(r=_try(seal, app, query)))
            t.start()
            # Once the page is partly written, hold the rest (the store
            # throttles the next requests) and kill the runtime.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                if sealed_count(raw) >= before + 5:
                    break
                time.sleep(0.05)
            sigcheck(stack, "reset")  # the delays go, the throttling comes
            sigcheck(stack, "faults", [{"status": 429, "retry_after_ms": 200, "count": 40}])
            time.sleep(0.3)
            os.killpg(app.process.proc.pid, signal.SIGKILL)
            app.process.proc.wait()
            t.join()
            sigcheck(stack, "reset")  # drops the faults left over
            partly = sealed_count(raw)
            assert before < partly < before + 100, "the page was cut short"
            assert "r" not in answer or not isinstance(answer["r"], tuple), "the killed call gave no answer"
            app = stack.serve_app(name="app-switch-two-again", overrides=overrides)
            continue  # resume from the last continuation received
        status, body = seal(app, query)
        assert status == 200, body
        assert body["scanned"] <= 100
        assert body["scanned"] == body["sealed"] + body["alreadySealed"] + body["conflicts"] + body["failed"], body
        for k in totals:
            totals[k] += body[k]
        calls += 1
        continuation = body["continuation"]
        if continuation is None:
            break
        assert calls < 40
    assert interrupted_once and calls >= TOTAL // 100
    # Every record was scanned once in the answered calls; those the killed
    # call had sealed come back as already sealed.
    assert totals["scanned"] == TOTAL
    assert totals["conflicts"] == totals["failed"] == totals["resealed"] == 0
    assert totals["sealed"] + totals["alreadySealed"] == TOTAL
    assert totals["alreadySealed"] == partly - before

    phase("sealed")
    # Idempotent: a second pass seals nothing and asks the HSM for no key.
    wraps = stack.hsm_admin("GET", "stats")["by_key"][KEK_NAME]["wrapkey"]
    status, body = seal(app, "?limit=100")
    assert status == 200 and body["sealed"] == 0 and body["alreadySealed"] == 100 and body["kid"] is None, body
    assert stack.hsm_admin("GET", "stats")["by_key"][KEK_NAME]["wrapkey"] == wraps

    # -- every record sealed, nothing lost or duplicated ---------------------
    stored = all_docs(switch["target"])
    assert len(stored) == len({d["id"] for d in stored}) == TOTAL
    text = json.dumps(stored)
    for e in sent.values():
        secret = e["data"].get("patient") or e["data"]["note"]
        assert secret not in text
    kid = None
    for d in stored:
        h = d["cmk"]
        kid = h["kid"]
        if d["event"]["type"] == "Contoso.Visit":
            assert h["fields"] == ["/event/data/patient", "/event/subject"], h
            assert is_sealed(d["event"]["data"]["patient"]) and is_sealed(d["event"]["subject"])
            assert isinstance(d["event"]["data"]["bed"], int), "unprotected fields stay readable"
        else:
            assert h["fields"] == ["/event/data"] and is_sealed(d["event"]["data"]), h
            assert d["event"]["subject"].startswith("ward ")
    # The independent decryptor opens a sample with the key's private part.
    pem = stack.hsm_admin("GET", f"keys/{KEK_NAME}/{kid.rsplit('/', 1)[1]}/private-pem")["pem"]
    for d in stored[::97]:
        clear = decrypt(d, pem)
        assert clear["event"]["data"] == sent[clear["event"]["id"]]["data"]

    phase("checked stored form")
    # Every record reads back through the component, equal to what was sent.
    seen = set()
    for p in range(PARTITIONS):
        continuation = None
        while True:
            q = "?limit=100" + (f"&continuation={enc(continuation)}" if continuation else "")
            status, _, body = get(app, f"/records/{enc(f'/topics/switch-{p}')}{q}")
            assert status == 200, body
            for r in body["records"]:
                e = sent[r["event"]["id"]]
                assert r["event"]["data"] == e["data"] and r["event"]["subject"] == e["subject"]
                assert r["event"]["type"] == e["eventType"] and r["event"]["source"] == e["topic"]
                assert r["id"] not in seen
                seen.add(r["id"])
            continuation = body["continuation"]
            if not continuation:
                break
    assert len(seen) == TOTAL
    logs = app.logs()
    assert not any(e["data"].get("patient", e["data"].get("note")) in logs for e in sent.values())
    phase("read back")

    # -- after the switch the copy refuses to run -----------------------------
    # An erasure in the new account, then a copy: it would bring the erased
    # record back from the source. It is refused and writes nothing.
    erased = stored[0]
    switch["target"].delete_item(erased["id"], partition_key=erased["pk"])
    proc = migrate(stack, switch, stack.workdir / f"migrate-{switch['tag']}-again.json", "--restart")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and "switch has happened" in err, (out, err)
    assert len(all_docs(switch["target"])) == TOTAL - 1


def test_overwrite_never_puts_plaintext_over_a_sealed_record(stack, switch):
    """`--overwrite` upserts, but a target record with an envelope header is
    not replaced by a source record without one (counted as a conflict,
    exit 1). The source here holds a sealed record too, so the copy is not
    refused as a whole."""
    tag = uuid.uuid4().hex[:8]
    client = stack.cosmos_client()
    source = client.get_database_client(stack.database).create_container(f"ow-{tag}", PartitionKey("/pk"))
    target_db = client.create_database(f"ow-target-{tag}")
    target = target_db.create_container("events", PartitionKey("/pk"))
    sealed_header = {"kid": "k", "fields": ["/event/data"]}
    plain = [{"id": f"p{n}", "pk": "a", "event": {"data": {"v": n}}} for n in range(3)]
    already = {"id": "s0", "pk": "a", "cmk": sealed_header, "event": {"data": {"cmk": "x", "iv": "y", "ct": "z"}}}
    for d in [*plain, already]:
        source.upsert_item(d)
    # The target's copy of p0 was sealed there; p1 is an older plaintext copy.
    target.upsert_item({**plain[0], "cmk": sealed_header, "event": {"data": {"cmk": "x", "iv": "y", "ct": "z"}}})
    target.upsert_item({**plain[1], "event": {"data": {"v": "old"}}})
    sw = {"source": source, "target_db": target_db.id}
    proc = migrate(stack, sw, stack.workdir / f"migrate-ow-{tag}.json", "--overwrite")
    out, err = proc.communicate(timeout=60)
    last = json.loads(out.strip().splitlines()[-1])
    assert proc.returncode == 1, (out, err)
    assert (last["read"], last["copied"], last["conflicts"]) == (4, 3, 1), last
    kept = target.read_item("p0", partition_key="a")
    assert "cmk" in kept and kept["event"]["data"]["ct"] == "z", "the sealed record is kept"
    assert content(target.read_item("p1", partition_key="a")) == plain[1], "plaintext over plaintext is overwritten"


def _try(fn, *args):
    try:
        return fn(*args, timeout=30)
    except Exception as e:  # the runtime was killed under the call
        return e


def test_seal_refuses_without_the_second_stage_or_the_admin_key(stack, switch):
    app = stack.serve_app(name="app-switch-stage-one", overrides={
        "SPIN_VARIABLE_COSMOS_CONTAINER": switch["source"].id})
    status, body = seal(app)
    assert status == 409 and body["error"]["code"] == "KeyNotConfigured", body
    status, body = seal(app, key=None)
    assert status == 401, body
    status, body = seal(app, "?limit=0")
    assert status == 409, "the stage is checked before the parameters"


def test_changed_records_are_conflicts_and_narrower_headers_are_sealed_again(stack, switch):
    """A record changed between the pass's read and its replace is counted
    as a conflict and keeps the change (If-Match); the next pass seals it.
    A record sealed while fewer fields were configured is opened and sealed
    again with the new ones, and still reads back as sent."""
    client = stack.cosmos_client().get_database_client(stack.database)
    container = client.create_container(f"race-{switch['tag']}", PartitionKey("/pk"))
    one = stack.serve_app(name="app-race-one", overrides={"SPIN_VARIABLE_COSMOS_CONTAINER": container.id})
    plain = [event(n) for n in (1, 2, 4)]
    assert post(f"{one.url}/events", plain)[0] == 200
    one.process.stop()
    narrow = stack.serve_app(name="app-race-narrow", overrides=stack.stage_two(
        "client-secret", cosmos_container=container.id, protected_fields='{"*": ["/data/patient"]}'))
    early = event(5)
    assert post(f"{narrow.url}/events", [early])[0] == 200
    narrow.process.stop()
    app = stack.serve_app(name="app-race-two", overrides=stack.stage_two(
        "client-secret", cosmos_container=container.id, protected_fields=PROTECTED))
    victim = next(d for d in all_docs(container) if d["event"]["id"] == plain[0]["id"])

    # Hold the pass between its read and its replaces: the HSM throttles the
    # wrap once, for two seconds, while another writer changes one record.
    # The wrap comes after the page is read, so once the fault is taken the
    # pass has read and waits.
    stack.hsm_admin("POST", "faults", [{"status": 429, "retry_after": 2, "op": "wrapkey"}])
    answer = {}
    t = threading.Thread(target=lambda: answer.update(r=seal(app, "?limit=100")))
    t.start()
    stack.wait_for_hsm_faults_taken()
    changed = {**content(victim), "note": "edited by another writer"}
    container.upsert_item(changed)
    t.join(timeout=60)
    status, body = answer["r"]
    assert status == 200, body
    assert (body["scanned"], body["sealed"], body["resealed"], body["conflicts"], body["failed"]) == (4, 3, 1, 1, 0), body
    stored = container.read_item(victim["id"], partition_key=victim["pk"])
    assert stored["note"] == "edited by another writer" and "cmk" not in stored, "not overwritten"
    status, body = seal(app, "?limit=100")
    assert status == 200 and (body["sealed"], body["alreadySealed"]) == (1, 3), body
    stored = container.read_item(victim["id"], partition_key=victim["pk"])
    assert stored["note"] == "edited by another writer" and is_sealed(stored["event"]["subject"])

    resealed = next(d for d in all_docs(container) if d["event"]["id"] == early["id"])
    assert resealed["cmk"]["fields"] == ["/event/data/patient", "/event/subject"]
    for e in [*plain, early]:
        doc = next(d for d in all_docs(container) if d["event"]["id"] == e["id"])
        status, _, body = get(app, f"/records/{enc(doc['pk'])}/{doc['id']}")
        assert status == 200, body
        assert body["event"]["data"] == e["data"] and body["event"]["subject"] == e["subject"]
