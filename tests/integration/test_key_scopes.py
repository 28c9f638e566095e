"""Key scopes in the real runtime against the local stack: three tenants,
each with its own RSA-HSM key in the Managed HSM stand-in, deliveries that
interleave them through both ingest paths (`POST /events`, and Storage queue
messages forwarded by the built queue bridge to `POST /queue`).

Proves, on one container and keys of their own: every record opens only
with its own tenant's key (the independent decryptor given one tenant's
private key opens exactly that tenant's records); wraps per delivery follow
the tenants in it, not its events; disabling one tenant's key, or revoking the
app's access to it, stops exactly that tenant's writes and reads while the
others keep 200; rotation and
rewrap of one key leave the others' records untouched; deleting one key
makes exactly that tenant's records unreadable with `KeyNotFound` naming the
tenant, and `POST /admin/erase` counts and then removes exactly them. A
second app names keys by a rule, wraps locally and puts unknown tenants
under its default key."""

import json
import urllib.error
import urllib.request
import uuid

import pytest
from azure.cosmos import PartitionKey
from cryptography.exceptions import InvalidTag

from harness.stack import APP_PRINCIPALS, read_profile
from integration.decrypt_record import decrypt
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import post
from integration.test_queue_bridge import new_queue
from integration.test_records import enc, get

ADMIN_KEY = read_profile()["SPIN_VARIABLE_ADMIN_KEYS"]
RUN = uuid.uuid4().hex[:6]
TENANTS = {t: f"scope-{t}-{RUN}" for t in ("contoso", "fabrikam", "tailspin")}


def admin(app, method, path, key=ADMIN_KEY):
    headers = {"x-cmk-admin-key": key} if key else {}
    req = urllib.request.Request(f"{app.url}{path}", data=b"" if method == "POST" else None, method=method,
                                 headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def scoped(stack):
    container = f"scopes-{uuid.uuid4().hex[:8]}"
    stack.cosmos_client().get_database_client(stack.database).create_container(container, PartitionKey("/pk"))
    for key in TENANTS.values():
        stack.hsm_admin("POST", "keys", {"name": key, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
        for oid in APP_PRINCIPALS:
            stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    app = stack.serve_app(name="app-scopes", overrides=stack.stage_two(
        "client-secret", hsm_key_check_secs="0", cosmos_container=container,
        protected_fields='{"*": ["/data/patient"]}',
        key_scope_pointer="/data/tenantId", key_scope_keys=json.dumps(TENANTS)))
    client = stack.cosmos_client().get_database_client(stack.database).get_container_client(container)
    return app, client


def event(topic, tenant, **extra):
    e = custom_event(topic, tenantId=tenant, patient=f"Patient of {tenant} {uuid.uuid4().hex[:8]}", **extra)
    if tenant is None:
        del e["data"]["tenantId"]
    return e


def all_docs(client):
    return list(client.query_items("SELECT * FROM c", enable_cross_partition_query=True))


def key_of(doc):
    return doc["cmk"]["kid"].split("/keys/", 1)[1].split("/", 1)[0]


def tenant_of(doc):
    return next(t for t, k in TENANTS.items() if k == key_of(doc))


def wraps(stack):
    by_key = stack.hsm_admin("GET", "stats")["by_key"]
    return {t: by_key.get(k, {}).get("wrapkey", 0) for t, k in TENANTS.items()}


def pem(stack, doc):
    kid = doc["cmk"]["kid"]
    return stack.hsm_admin("GET", f"keys/{key_of(doc)}/{kid.rsplit('/', 1)[1]}/private-pem")["pem"]


def deliver_mixed(app, stack, topics, rounds):
    """Interleaved deliveries through both paths; returns the events by
    tenant and the wraps each delivery cost."""
    sent = {t: [] for t in TENANTS}
    costs = []
    tenants = list(TENANTS)
    for r in range(rounds):
        # POST /events: every tenant, several events each, two partitions.
        events = [event(topics[i % 2], tenants[(i + r) % 3]) for i in range(9)]
        before = wraps(stack)
        status, _, body = post(f"{app.url}/events", events)
        assert status == 200, body
        after = wraps(stack)
        costs.append((len({e["data"]["tenantId"] for e in events}), sum(after.values()) - sum(before.values())))
        assert all(after[t] - before[t] == 1 for t in TENANTS), (before, after)
        for e in events:
            sent[e["data"]["tenantId"]].append(e)
    # The queue bridge: one message per delivery, mixing two tenants each.
    name, queue = new_queue(stack)
    for r in range(rounds):
        batch = [event(topics[i % 2], tenants[(i + r) % 2 + (r % 2)]) for i in range(4)]
        queue.send_message(json.dumps(batch))
        for e in batch:
            sent[e["data"]["tenantId"]].append(e)
    before = wraps(stack)
    result = stack.run_bridge_once(stack.bridge_env(f"{app.url}/queue", name))
    assert result.returncode == 0, result.stderr
    after = wraps(stack)
    # Two tenants per message: two wraps per message, whatever the events.
    assert sum(after.values()) - sum(before.values()) == 2 * rounds
    assert queue.get_queue_properties().approximate_message_count == 0
    return sent, costs


def test_each_tenant_opens_only_with_its_own_key(scoped, stack):
    app, client = scoped
    topics = [f"/topics/scopes-{uuid.uuid4().hex[:6]}-{i}" for i in range(2)]
    sent, costs = deliver_mixed(app, stack, topics, rounds=3)
    # HSM calls follow the tenants in a delivery, not its events.
    assert costs == [(3, 3)] * 3
    docs = {d["id"]: d for d in all_docs(client) if d["pk"] in topics}
    assert len(docs) == sum(len(v) for v in sent.values())
    for tenant, events in sent.items():
        for e in events:
            d = docs[document_id(e["topic"], e["id"])]
            assert key_of(d) == TENANTS[tenant]
            assert e["data"]["patient"] not in json.dumps(d)
            # The tenant value stays where the event had it; not in id or pk.
            assert tenant not in d["id"] and tenant not in d["pk"]
    # The independent decryptor, given one tenant's private key, opens
    # exactly that tenant's records and no other tenant's.
    for tenant in TENANTS:
        own = next(d for d in docs.values() if tenant_of(d) == tenant)
        key_pem = pem(stack, own)
        opened = set()
        for d in docs.values():
            try:
                plain = decrypt(d, key_pem)
            except InvalidTag:
                continue
            assert plain["event"]["data"]["tenantId"] == tenant
            opened.add(d["id"])
        assert opened == {i for i, d in docs.items() if tenant_of(d) == tenant}
    # And through the component, every record reads back in plaintext.
    for tenant, events in sent.items():
        e = events[0]
        status, _, body = get(app, f"/records/{enc(e['topic'])}/{document_id(e['topic'], e['id'])}")
        assert status == 200, body
        assert body["event"]["data"]["patient"] == e["data"]["patient"]
    # Unknown, missing and non-string tenants are refused (not retried) and
    # write nothing.
    for bad, code in [("northwind", "KeyScopeUnknown"), (None, "KeyScopeMissing"), (7, "KeyScopeNotString")]:
        ok, refused = event(topics[0], "contoso"), event(topics[0], bad)
        status, _, body = post(f"{app.url}/events", [ok, refused])
        assert status == 400 and body["error"]["code"] == code, body
        assert "northwind" not in json.dumps(body)
        ids = {document_id(topics[0], x["id"]) for x in (ok, refused)}
        assert not ids & {d["id"] for d in all_docs(client)}


def test_a_disabled_or_revoked_tenant_key_stops_exactly_that_tenant(scoped, stack):
    app, client = scoped
    topic = f"/topics/scopes-off-{uuid.uuid4().hex[:6]}"
    before = {t: event(topic, t) for t in TENANTS}
    assert post(f"{app.url}/events", list(before.values()))[0] == 200
    stack.hsm_admin("POST", f"keys/{TENANTS['fabrikam']}/state", {"enabled": False})
    try:
        for tenant in TENANTS:
            status, _, body = post(f"{app.url}/events", [event(topic, tenant)])
            if tenant == "fabrikam":
                err = body["error"]
                assert status == 503 and err["code"] == "KeyDisabled", body
                assert TENANTS["fabrikam"] in err["message"]
            else:
                assert status == 200, body
        # A delivery mixing a refused tenant is refused whole: nothing partial.
        mixed = [event(topic, "contoso"), event(topic, "fabrikam")]
        assert post(f"{app.url}/events", mixed)[0] == 503
        assert not {document_id(topic, e["id"]) for e in mixed} & {d["id"] for d in all_docs(client)}
        # Reads: that tenant's record refused, the others' open.
        for tenant, e in before.items():
            status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, e['id'])}")
            if tenant == "fabrikam":
                assert status == 503 and body["error"]["code"] == "KeyDisabled", body
            else:
                assert status == 200 and body["event"]["data"]["patient"] == e["data"]["patient"]
        # A page mixing tenants: the others' records, that one's reported.
        status, _, body = get(app, f"/records/{enc(topic)}?limit=100")
        assert status == 200, body
        assert {r["event"]["data"]["tenantId"] for r in body["records"]} == {"contoso", "tailspin"}
        assert {u["error"]["code"] for u in body["unreadable"]} == {"KeyDisabled"}
        assert document_id(topic, before["fabrikam"]["id"]) in {u["id"] for u in body["unreadable"]}
        # The admin readiness detail lists each key's state; the component
        # stays ready for the other tenants.
        status, ready = admin(app, "GET", "/readyz")
        assert status == 200 and ready["status"] == "ready", ready
        states = {k["name"]: k["status"] for k in ready["keys"]}
        assert states == {TENANTS["contoso"]: "usable", TENANTS["fabrikam"]: "KeyDisabled",
                          TENANTS["tailspin"]: "usable"}
        # Anonymous probes learn nothing of the keys.
        with urllib.request.urlopen(f"{app.url}/readyz", timeout=30) as r:
            assert "keys" not in json.load(r)
    finally:
        stack.hsm_admin("POST", f"keys/{TENANTS['fabrikam']}/state", {"enabled": True})
    assert post(f"{app.url}/events", [event(topic, "fabrikam")])[0] == 200
    # Access revoked at one key's scope: that tenant only, until granted again.
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "revoke", {"key": TENANTS["tailspin"], "object_id": oid})
    try:
        for tenant in TENANTS:
            status, _, body = post(f"{app.url}/events", [event(topic, tenant)])
            if tenant == "tailspin":
                assert status == 503 and body["error"]["code"] == "KeyAccessDenied", body
            else:
                assert status == 200, body
        e = before["tailspin"]
        status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, e['id'])}")
        assert status == 503 and body["error"]["code"] == "KeyAccessDenied", body
    finally:
        for oid in APP_PRINCIPALS:
            stack.hsm_admin("POST", "grants", {"key": TENANTS["tailspin"], "object_id": oid,
                                               "ops": ["get", "wrapKey", "unwrapKey"]})
    assert post(f"{app.url}/events", [event(topic, "tailspin")])[0] == 200


def test_rotation_and_rewrap_of_one_key_leave_the_others_untouched(scoped, stack):
    app, client = scoped
    topic = f"/topics/scopes-rot-{uuid.uuid4().hex[:6]}"
    events = [event(topic, t) for t in TENANTS for _ in range(3)]
    assert post(f"{app.url}/events", events)[0] == 200
    before = {d["id"]: d for d in all_docs(client)}
    new_kid = stack.app_kid(app, stack.hsm_admin("POST", f"keys/{TENANTS['contoso']}/rotate")["key"]["kid"])
    assert admin(app, "POST", "/admin/rewrap?key=not-configured")[0] == 400
    moved, continuation, calls = 0, None, 0
    while True:
        q = f"/admin/rewrap?key={TENANTS['contoso']}&limit=4" + (f"&continuation={enc(continuation)}" if continuation else "")
        status, body = admin(app, "POST", q)
        assert status == 200, body
        assert body["refused"] == 0, body
        moved += body["rewrapped"]
        continuation, calls = body["continuation"], calls + 1
        if not continuation:
            break
        assert calls < 50
    after = {d["id"]: d for d in all_docs(client)}
    contoso = {i for i, d in before.items() if tenant_of(d) == "contoso"}
    assert moved == len(contoso) > 0
    for i, d in after.items():
        if i in contoso:
            assert d["cmk"]["kid"] == new_kid
            assert d["cmk"]["sealedKid"] == before[i]["cmk"]["kid"]
        else:
            assert d == before[i], "another tenant's record changed"
    # A second pass finds nothing left of that key.
    status, body = admin(app, "POST", f"/admin/rewrap?key={TENANTS['contoso']}")
    assert (status, body["scanned"]) == (200, 0), body
    for e in events:
        status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, e['id'])}")
        assert status == 200 and body["event"]["data"]["patient"] == e["data"]["patient"]


def test_deleting_a_tenant_key_erases_exactly_that_tenant(scoped, stack):
    app, client = scoped
    topic = f"/topics/scopes-del-{uuid.uuid4().hex[:6]}"
    events = [event(topic, t) for t in TENANTS for _ in range(2)]
    assert post(f"{app.url}/events", events)[0] == 200
    gone_key = TENANTS["tailspin"]
    tailspin = {d["id"] for d in all_docs(client) if key_of(d) == gone_key}
    others = {d["id"] for d in all_docs(client) if key_of(d) != gone_key}
    assert tailspin and others
    # While the key exists its records are counted, never removed.
    status, body = admin(app, "POST", f"/admin/erase?key={gone_key}")
    assert status == 200 and (body["matched"], body["keyState"]) == (len(tailspin), "usable"), body
    status, body = admin(app, "POST", f"/admin/erase?key={gone_key}&mode=delete")
    assert status == 409 and body["error"]["code"] == "KeyStillExists", body
    assert admin(app, "POST", f"/admin/erase?key={gone_key}&mode=delete", key=None)[0] == 401

    backup = next(d for d in all_docs(client) if key_of(d) == gone_key)  # a copy kept elsewhere
    stack.hsm_admin("DELETE", f"keys/{gone_key}")
    # Deleted then purged: nothing in the HSM can bring the key back.
    assert stack.hsm_admin("POST", f"keys/{gone_key}/purge", {})["purged"]
    with pytest.raises(urllib.error.HTTPError) as no_recover:
        stack.hsm_admin("POST", f"keys/{gone_key}/recover", {})
    assert no_recover.value.code == 404
    # Reads: that tenant's records refused with the documented reason,
    # naming the tenant; the others read.
    for e in events:
        status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, e['id'])}")
        if e["data"]["tenantId"] == "tailspin":
            assert status == 503 and body["error"]["code"] == "KeyNotFound", body
            assert "`tailspin`" in body["error"]["message"] and gone_key in body["error"]["message"]
        else:
            assert status == 200 and body["event"]["data"]["patient"] == e["data"]["patient"]
    status, _, body = get(app, f"/records/{enc(topic)}?limit=100")
    assert status == 200 and {u["error"]["code"] for u in body["unreadable"]} == {"KeyNotFound"}, body
    assert len(body["records"]) == 4
    # Writes: that tenant refused, the others written.
    for tenant in TENANTS:
        status, _, body = post(f"{app.url}/events", [event(topic, tenant)])
        assert status == (503 if tenant == "tailspin" else 200), body
    others = {d["id"] for d in all_docs(client) if key_of(d) != gone_key}

    # Erase: counted in pages, then removed in bounded calls until done.
    counted, continuation = 0, None
    while True:
        q = f"/admin/erase?key={gone_key}&limit=2" + (f"&continuation={enc(continuation)}" if continuation else "")
        status, body = admin(app, "POST", q)
        assert status == 200 and body["keyState"] == "KeyNotFound", body
        counted += body["matched"]
        continuation = body["continuation"]
        if not continuation:
            break
    assert counted == len(tailspin)
    deleted, calls = 0, 0
    while True:
        status, body = admin(app, "POST", f"/admin/erase?key={gone_key}&mode=delete&limit=2")
        assert status == 200, body
        deleted += body["deleted"]
        calls += 1
        if not body["more"]:
            break
        assert calls < 50
    assert deleted == len(tailspin)
    remaining = all_docs(client)
    assert not {d["id"] for d in remaining} & tailspin
    assert {d["id"] for d in remaining} == others
    status, body = admin(app, "POST", f"/admin/erase?key={gone_key}")
    assert (status, body["matched"]) == (200, 0), body
    # A copy taken before (a backup, a change-feed consumer's copy) restored
    # into the container is just as unreadable, and erased the same way.
    client.upsert_item({k: v for k, v in backup.items() if not k.startswith("_")})
    status, _, body = get(app, f"/records/{enc(backup['pk'])}/{backup['id']}")
    assert status == 503 and body["error"]["code"] == "KeyNotFound", body
    status, body = admin(app, "POST", f"/admin/erase?key={gone_key}&mode=delete")
    assert (status, body["deleted"], body["more"]) == (200, 1, False), body


def test_a_naming_rule_with_local_wrap_and_a_default_key(stack):
    """Keys named by `key_scope_key_rule`, wrapped locally (no wrap calls),
    unknown values under `hsm_key_name` (`key_scope_unknown = default`); a
    value the rule allows but whose key was never created (nor granted)
    refuses the whole delivery with the HSM's reason."""
    container = f"scopes-rule-{uuid.uuid4().hex[:8]}"
    stack.cosmos_client().get_database_client(stack.database).create_container(container, PartitionKey("/pk"))
    rule = f"rule-{RUN}-{{value}}"
    for value in ("alpha", "beta"):
        key = rule.replace("{value}", value)
        stack.hsm_admin("POST", "keys", {"name": key, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
        for oid in APP_PRINCIPALS:
            stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    app = stack.serve_app(name="app-scopes-rule", overrides=stack.stage_two(
        "client-secret", hsm_key_check_secs="0", cosmos_container=container, hsm_local_wrap="true",
        protected_fields='{"*": ["/data/patient"]}', key_scope_pointer="/data/tenantId",
        key_scope_key_rule=rule, key_scope_unknown="default"))
    client = stack.cosmos_client().get_database_client(stack.database).get_container_client(container)
    topic = f"/topics/scopes-rule-{uuid.uuid4().hex[:6]}"
    events = [event(topic, "alpha"), event(topic, "beta"), event(topic, "Gamma"), event(topic, None)]
    before = stack.hsm_admin("GET", "stats")["wrapkey"]
    status, _, body = post(f"{app.url}/events", events)
    assert status == 200, body
    assert stack.hsm_admin("GET", "stats")["wrapkey"] == before, "local wrap makes no wrap call"
    kek_name = app.variables["SPIN_VARIABLE_HSM_KEY_NAME"]
    keys = {d["event"]["id"]: key_of(d) for d in all_docs(client)}
    assert [keys[e["id"]] for e in events] == [f"rule-{RUN}-alpha", f"rule-{RUN}-beta", kek_name, kek_name]
    for e in events:
        status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, e['id'])}")
        assert status == 200 and body["event"]["data"]["patient"] == e["data"]["patient"], body
    # Allowed by the rule, but no such key in the HSM (and so no role
    # assignment at its scope: the HSM checks access before it looks the
    # key up): nothing of the delivery is written.
    refused = [event(topic, "alpha"), event(topic, "delta")]
    status, _, body = post(f"{app.url}/events", refused)
    assert status == 503 and body["error"]["code"] == "KeyAccessDenied", body
    assert f"rule-{RUN}-delta" in body["error"]["message"]
    assert not {document_id(topic, e["id"]) for e in refused} & {d["id"] for d in all_docs(client)}


def test_the_documented_erasure_procedure_gives_the_documented_answers(stack):
    """docs/keys-and-identity.md, "Erasing a scope", step by step: the
    tenant leaves `key_scope_keys` first (a restart with the new mapping),
    its records then answer 503 `KeyNotConfigured` naming the key (pages
    list them as unreadable) and its events are refused; the erase route
    still counts the key's records by name; the key is deleted and purged
    with the app's role kept; the records are removed; a final count finds
    none; the role goes last (removed earlier, the HSM answers 403 and the
    route removes nothing)."""
    container = f"scopes-erase-{uuid.uuid4().hex[:8]}"
    stack.cosmos_client().get_database_client(stack.database).create_container(container, PartitionKey("/pk"))
    keys = {t: f"erase-{t}-{RUN}" for t in ("northwind", "wingtip")}
    for key in keys.values():
        stack.hsm_admin("POST", "keys", {"name": key, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
        for oid in APP_PRINCIPALS:
            stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})

    def serve(name, mapping):
        return stack.serve_app(name=name, overrides=stack.stage_two(
            "client-secret", hsm_key_check_secs="0", cosmos_container=container,
            protected_fields='{"*": ["/data/patient"]}', key_scope_pointer="/data/tenantId",
            key_scope_keys=json.dumps(mapping)))

    before = serve("app-erase-before", keys)
    client = stack.cosmos_client().get_database_client(stack.database).get_container_client(container)
    topic = f"/topics/scopes-erase-{uuid.uuid4().hex[:6]}"
    events = [event(topic, t) for t in keys for _ in range(3)]
    assert post(f"{before.url}/events", events)[0] == 200
    gone = keys["northwind"]
    erased = {d["id"] for d in all_docs(client) if key_of(d) == gone}
    kept = {d["id"] for d in all_docs(client) if key_of(d) != gone}
    assert len(erased) == 3 and len(kept) == 3

    # 1. Stop new writes: the tenant leaves key_scope_keys (a restart).
    app = serve("app-erase-after", {"wingtip": keys["wingtip"]})
    status, _, body = post(f"{app.url}/events", [event(topic, "northwind")])
    assert status == 400 and body["error"]["code"] == "KeyScopeUnknown", body
    for e in events:
        status, headers, body = get(app, f"/records/{enc(topic)}/{document_id(topic, e['id'])}")
        if e["data"]["tenantId"] == "northwind":
            assert status == 503 and body["error"]["code"] == "KeyNotConfigured", body
            assert f"`{gone}`" in body["error"]["message"]
        else:
            assert status == 200 and body["event"]["data"]["patient"] == e["data"]["patient"], body
    status, _, body = get(app, f"/records/{enc(topic)}?limit=100")
    assert status == 200, body
    assert {u["id"] for u in body["unreadable"]} == erased, body
    assert {u["error"]["code"] for u in body["unreadable"]} == {"KeyNotConfigured"}, body
    assert {r["id"] for r in body["records"]} == kept

    # 2. Count, by the key's name although no scope maps it any more.
    status, body = admin(app, "POST", f"/admin/erase?key={gone}")
    assert status == 200 and (body["matched"], body["keyState"], body["more"]) == (3, "usable", False), body
    status, body = admin(app, "POST", f"/admin/erase?key={gone}&mode=delete")
    assert status == 409 and body["error"]["code"] == "KeyStillExists", body

    # 3. Delete the key, keeping the app's role; 4. purge it.
    stack.hsm_admin("DELETE", f"keys/{gone}")
    assert stack.hsm_admin("POST", f"keys/{gone}/purge", {})["purged"]
    status, _, body = get(app, f"/records/{enc(topic)}?limit=100")
    assert status == 200 and {u["id"] for u in body["unreadable"]} == erased, body

    # Out of order: without the app's role the HSM answers 403, not 404, and
    # the route removes nothing.
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "revoke", {"key": gone, "object_id": oid})
    status, body = admin(app, "POST", f"/admin/erase?key={gone}&mode=delete")
    assert status == 503 and body["error"]["code"] == "KeyAccessDenied", body
    assert {d["id"] for d in all_docs(client)} == erased | kept
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "grants", {"key": gone, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})

    # 5. Remove the records, then a final count pass.
    deleted, calls = 0, 0
    while True:
        status, body = admin(app, "POST", f"/admin/erase?key={gone}&mode=delete&limit=2")
        assert status == 200 and body["keyState"] == "KeyNotFound", body
        deleted += body["deleted"]
        calls += 1
        if not body["more"]:
            break
        assert calls < 20
    assert deleted == 3
    status, body = admin(app, "POST", f"/admin/erase?key={gone}")
    assert (status, body["matched"], body["more"]) == (200, 0, False), body
    assert {d["id"] for d in all_docs(client)} == kept

    # 6. The role goes last; the other tenant reads and writes as before.
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "revoke", {"key": gone, "object_id": oid})
    status, _, body = get(app, f"/records/{enc(topic)}?limit=100")
    assert status == 200 and not body["unreadable"] and {r["id"] for r in body["records"]} == kept, body
    assert post(f"{app.url}/events", [event(topic, "wingtip")])[0] == 200
