"""Microsoft Entra protected delivery, in the real runtime: Event Grid
presents an Entra ID bearer token instead of a key. The component checks its
RS256 signature against the tenant's signing keys (fetched from the Entra
stand-in once and cached in the key-value store), its audience, issuer,
tenant, validity window and app role, and refuses anything else with the
documented status before reading the body."""

import base64
import hashlib
import hmac
import json
import time
import urllib.parse
import urllib.request
import uuid

import pytest

from harness.stack import PRINCIPALS, TENANT, default_runtime
from integration.eventgrid import VALIDATION, custom_event, document_id
from integration.test_foundation import count, post
from integration.test_kv_store import KV_STORE_KEY, store_entries

AUDIENCE = "api://cmk-ingest"


def token(stack, client_id, secret, scope=f"{AUDIENCE}/.default"):
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": client_id,
                                   "client_secret": secret, "scope": scope}).encode()
    with urllib.request.urlopen(f"{stack.entra_url}/{TENANT}/oauth2/v2.0/token", data=form) as r:
        return json.load(r)["access_token"]


def secret_of(client_id):
    return next(a["secret"] for a in PRINCIPALS["apps"] if a["client_id"] == client_id)


@pytest.fixture(scope="module")
def entra_app(stack):
    return stack.serve_app(name="app-entra-delivery", overrides={
        "SPIN_VARIABLE_INGEST_KEYS": "",
        "SPIN_VARIABLE_INGEST_ENTRA_AUDIENCES": f"{AUDIENCE},00000000-0000-0000-0000-00000000c0de",
        "SPIN_VARIABLE_INGEST_ENTRA_TENANT_ID": TENANT,
        "SPIN_VARIABLE_AZURE_AUTHORITY_HOST": stack.entra_url,
    })


def deliver(app, events, bearer, **headers):
    return post(f"{app.url}/events", events, key=None,
                headers={**({"authorization": f"Bearer {bearer}"} if bearer else {}), **headers})


def test_event_grid_tokens_are_accepted_and_the_signing_keys_fetched_once(entra_app, stack):
    t = token(stack, "eventgrid-sender", secret_of("eventgrid-sender"))
    before = stack.entra_admin("GET", "stats")["jwks"]
    status, _, body = deliver(entra_app, VALIDATION, t, **{"aeg-event-type": "SubscriptionValidation"})
    assert status == 200 and body == {"validationResponse": VALIDATION[0]["data"]["validationCode"]}
    topic = f"/topics/entra-{uuid.uuid4()}"
    events = [custom_event(topic, n=i) for i in range(3)]
    for _ in range(4):
        status, _, body = deliver(entra_app, events, t)
        assert status == 200, body
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 3
    assert stack.container_client().read_item(document_id(topic, events[0]["id"]), partition_key=topic)
    # Five deliveries, one fetch of the tenant's signing keys (then cached).
    assert stack.entra_admin("GET", "stats")["jwks"] - before == 1
    # The request lines count that fetch as `jwks`, apart from the token
    # endpoint (`entra`), whose failures the token alert watches.
    requests = [json.loads(ln[ln.index("{"):]) for ln in entra_app.logs().splitlines() if '"event":"request"' in ln
                or '"event": "request"' in ln]
    assert requests and all("jwks" in r and "entra" in r for r in requests)
    assert sum(r["jwks"]["calls"] for r in requests) == 1
    assert t not in entra_app.logs()
    assert "oid-eventgrid" in entra_app.logs()  # who sent it is logged


def tampered(t):
    h, c, s = t.split(".")
    claims = json.loads(base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)))
    claims["roles"] = ["AzureEventGridSecureWebhookSubscriber", "Admin"]
    c2 = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    return f"{h}.{c2}.{s}"


def test_tokens_that_fail_a_check_are_refused_and_write_nothing(entra_app, stack):
    topic = f"/topics/entra-refused-{uuid.uuid4()}"
    events = [custom_event(topic)]
    good = token(stack, "eventgrid-sender", secret_of("eventgrid-sender"))
    no_role = token(stack, "other-client", secret_of("other-client"))
    wrong_audience = token(stack, "eventgrid-sender", secret_of("eventgrid-sender"),
                           scope="https://managedhsm.azure.net/.default")
    stack.entra_admin("POST", "config", {"lifetime": -1000})
    try:
        expired = token(stack, "eventgrid-sender", secret_of("eventgrid-sender"))
    finally:
        stack.entra_admin("POST", "config", {"lifetime": 3600})
    cases = [
        (no_role, 403, "Forbidden", "roles"),
        (wrong_audience, 401, "InvalidToken", "aud"),
        (expired, 401, "InvalidToken", "exp"),
        (tampered(good), 401, "InvalidToken", "signature"),
        ("not.a.token", 401, "InvalidToken", "malformed"),
        (None, 401, "Unauthenticated", "bearer token"),
    ]
    for bearer, status, code, reason in cases:
        got, _, body = deliver(entra_app, events, bearer)
        assert (got, body["error"]["code"]) == (status, code), (reason, body)
        assert reason in body["error"]["message"], (reason, body)
    # With no ingest keys configured, a key is not a way in.
    got, _, body = post(f"{entra_app.url}/events", events)
    assert got == 401, body
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 0
    for t in (good, no_role, expired):
        assert t not in entra_app.logs()


def test_keys_and_tokens_can_both_be_accepted_while_moving_to_entra(stack):
    app = stack.serve_app(name="app-entra-and-keys", overrides={
        "SPIN_VARIABLE_INGEST_ENTRA_AUDIENCES": AUDIENCE,
        "SPIN_VARIABLE_INGEST_ENTRA_TENANT_ID": TENANT,
        "SPIN_VARIABLE_AZURE_AUTHORITY_HOST": stack.entra_url,
    })
    topic = f"/topics/entra-both-{uuid.uuid4()}"
    assert post(f"{app.url}/events", [custom_event(topic)])[0] == 200  # the profile's ingest key
    t = token(stack, "eventgrid-sender", secret_of("eventgrid-sender"))
    assert deliver(app, [custom_event(topic)], t)[0] == 200
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 2


def test_a_failing_authority_is_asked_at_most_once_per_interval(stack):
    # A tenant the authority does not know: every signing-key fetch fails.
    app = stack.serve_app(name="app-entra-failing-keys", overrides={
        "SPIN_VARIABLE_INGEST_KEYS": "",
        "SPIN_VARIABLE_INGEST_ENTRA_AUDIENCES": AUDIENCE,
        "SPIN_VARIABLE_INGEST_ENTRA_TENANT_ID": "tenant-the-authority-does-not-know",
        "SPIN_VARIABLE_AZURE_AUTHORITY_HOST": stack.entra_url,
    })
    t = token(stack, "eventgrid-sender", secret_of("eventgrid-sender"))
    before = stack.entra_admin("GET", "stats")["requests"]
    for _ in range(5):
        status, headers, body = deliver(app, [custom_event("/topics/x")], t)
        assert (status, body["error"]["code"]) == (503, "SigningKeysUnavailable"), body
        assert int(headers["Retry-After"]) > 0
    # Failed attempts count towards the interval: one fetch, not five.
    assert stack.entra_admin("GET", "stats")["requests"] - before == 1


def test_an_allow_list_of_caller_apps_refuses_other_apps_of_the_tenant(stack):
    app = stack.serve_app(name="app-entra-allow-list", overrides={
        "SPIN_VARIABLE_INGEST_KEYS": "",
        "SPIN_VARIABLE_INGEST_ENTRA_AUDIENCES": AUDIENCE,
        "SPIN_VARIABLE_INGEST_ENTRA_TENANT_ID": TENANT,
        "SPIN_VARIABLE_INGEST_ENTRA_ROLES": "-",
        "SPIN_VARIABLE_INGEST_ENTRA_APP_IDS": "eventgrid-sender",
        "SPIN_VARIABLE_AZURE_AUTHORITY_HOST": stack.entra_url,
    })
    topic = f"/topics/entra-allow-{uuid.uuid4()}"
    listed = token(stack, "eventgrid-sender", secret_of("eventgrid-sender"))
    assert deliver(app, [custom_event(topic)], listed)[0] == 200
    other = token(stack, "other-client", secret_of("other-client"))
    status, _, body = deliver(app, [custom_event(topic)], other)
    assert (status, body["error"]["code"]) == (403, "Forbidden"), body
    assert "appid" in body["error"]["message"]
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 1
    # Roles switched off is allowed, and said in the log.
    assert "ingest_entra_roles is `-`" in app.logs()


def test_a_key_rotated_in_within_the_refetch_interval_is_answered_as_transient(entra_app, stack):
    """A token signed by a key the cached set lacks, while the set may not be
    fetched again yet (a key the tenant just rotated in): 503 with
    Retry-After, which Event Grid retries, not 401, which it does not; and
    no fetch at the authority."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from harness.entra import jwt_sign

    good = token(stack, "eventgrid-sender", secret_of("eventgrid-sender"))
    topic = f"/topics/entra-rotated-{uuid.uuid4()}"
    assert deliver(entra_app, [custom_event(topic, n=0)], good)[0] == 200  # the set is cached
    claims = json.loads(base64.urlsafe_b64decode(good.split(".")[1] + "=="))
    rotated = jwt_sign(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                       f"rotated-{uuid.uuid4().hex[:8]}")
    before = stack.entra_admin("GET", "stats")["jwks"]
    status, headers, body = deliver(entra_app, [custom_event(topic, n=1)], rotated)
    assert (status, body["error"]["code"]) == (503, "SigningKeysUnavailable"), body
    assert 0 < int(headers["Retry-After"]) <= 300, headers["Retry-After"]
    assert "signing key" in body["error"]["message"], body
    assert stack.entra_admin("GET", "stats")["jwks"] == before
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 1


def sender_lines(app):
    return [json.loads(ln[ln.index("{"):]) for ln in app.logs().splitlines() if "sender_authenticated" in ln]


def seal(name: str, value: bytes) -> bytes:
    """An entry of the store as the component seals it (`kvseal`, documented
    in docs/keys-and-identity.md), under the test's kv_store_key."""
    mac_key = hmac.new(KV_STORE_KEY.encode(), b"cmk-ingest/kv-store/v1", hashlib.sha256).digest()
    tag = hmac.new(mac_key, len(name).to_bytes(8, "big") + name.encode() + value, hashlib.sha256).digest()
    return b"cmk-kv1:" + tag + value


def the_entry(stack, app, name: str, prefix: str):
    """The one entry of the app's store whose name starts with `prefix`
    (the signing keys' URL follows it), and its name."""
    (key, entry), = store_entries(stack, app, name, prefix.encode()).items()
    return key.decode(), entry


def signature_digest(t: str) -> bytes:
    """The documented digest of a token's signed bytes and signature."""
    signed, sig = t.rsplit(".", 1)
    raw_sig = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    return hashlib.sha256(b"cmk-ingest/token-signature/v1\0" + len(signed).to_bytes(8, "big")
                          + signed.encode() + raw_sig).digest()


def kept_token_app(stack, name: str, deliveries: int):
    """An app for Entra-protected delivery with its store entries bound by
    kv_store_key, after `deliveries` deliveries with one token: the first
    checks the token's signature, the others find it kept. The app, the
    deliveries' topic and the token."""
    app = stack.serve_app(name=name, overrides={
        "SPIN_VARIABLE_INGEST_KEYS": "",
        "SPIN_VARIABLE_INGEST_ENTRA_AUDIENCES": AUDIENCE,
        "SPIN_VARIABLE_INGEST_ENTRA_TENANT_ID": TENANT,
        "SPIN_VARIABLE_AZURE_AUTHORITY_HOST": stack.entra_url,
        "SPIN_VARIABLE_KV_STORE_KEY": KV_STORE_KEY,
    })
    topic = f"/topics/{name}-{uuid.uuid4()}"
    t = token(stack, "eventgrid-sender", secret_of("eventgrid-sender"))
    for n in range(deliveries):
        status, _, body = deliver(app, [custom_event(topic, n=n)], t)
        assert status == 200, body
    assert [ln["signature"] for ln in sender_lines(app)] == ["checked"] + ["kept"] * (deliveries - 1)
    return app, topic, t


def test_a_checked_signature_is_kept_and_the_claims_checked_on_every_delivery(stack):
    """Event Grid presents one token until it renews it: after the first
    delivery the component keeps a digest of the token's signature, and the
    next deliveries have only their claims checked. What is kept names the
    documented digest, never the token; an entry that does not verify is
    ignored; a token with the kept signature on other claims is refused."""
    name = "app-entra-kept"
    app, topic, t = kept_token_app(stack, name, deliveries=3)
    assert all(ln["object_id"] == "oid-eventgrid" for ln in sender_lines(app))
    entry_name, entry = the_entry(stack, app, name, "jwt-checked/v1/")
    assert entry_name.endswith(f"/{TENANT}/discovery/v2.0/keys"), entry_name
    stored = entry.read_bytes()
    assert stored == seal(entry_name, stored[8 + 32:]), "sealed under kv_store_key"
    head, line = stored[8 + 32:].decode().split("\n")
    digest, set_at, expires = line.split(" ")
    assert head == "cmk-checked-signatures/v1"
    assert base64.urlsafe_b64decode(digest + "=") == signature_digest(t)
    claims = json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "=="))
    assert int(expires) == claims["exp"] and abs(int(set_at) - time.time()) < 120
    assert t.encode() not in stored and t.split(".")[2].encode() not in stored

    # The kept signature on other claims (more roles): refused, nothing written.
    status, _, body = deliver(app, [custom_event(topic, n=9)], tampered(t))
    assert (status, body["error"]["code"]) == (401, "InvalidToken") and "signature" in body["error"]["message"]
    assert entry.read_bytes() == stored

    # An entry that does not verify (written without the secret) is ignored:
    # the signature is checked again and kept anew.
    refused = app.logs().count("kv_entry_refused")
    entry.write_bytes(stored[:8] + bytes(32) + stored[8 + 32:])
    assert deliver(app, [custom_event(topic, n=3)], t)[0] == 200
    assert sender_lines(app)[-1]["signature"] == "checked"
    assert app.logs().count("kv_entry_refused") == refused + 1
    assert entry.read_bytes() == stored  # the same signature, the same set
    assert deliver(app, [custom_event(topic, n=4)], t)[0] == 200
    assert sender_lines(app)[-1]["signature"] == "kept"

    # A fetch-attempt entry that does not verify: no set is known to be the
    # last fetched, so nothing kept stands, and nothing is kept until the
    # next fetch (the set in the store still serves the full check).
    _, attempt = the_entry(stack, app, name, "jwks-attempt/v1/")
    attempt.write_bytes(b"cmk-kv1:" + bytes(32) + b"1")
    for n in (5, 6):
        assert deliver(app, [custom_event(topic, n=n)], t)[0] == 200
        assert sender_lines(app)[-1]["signature"] == "checked"
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 7


def test_a_key_gone_from_a_newer_set_is_refused_though_its_signature_was_kept(stack):
    """A refresh that brings a set without the token's key (the tenant
    removed it) sets the kept signatures aside: the token is refused as
    without them. The newer set is written into the store here, sealed as
    the component seals it, with its fetch attempt, as a refresh writes
    them."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from harness.entra import jwk_of
    name = "app-entra-kept-rotated"
    app, topic, t = kept_token_app(stack, name, deliveries=2)
    jwks_name, jwks = the_entry(stack, app, name, "jwks/v1/")
    attempt_name, attempt = the_entry(stack, app, name, "jwks-attempt/v1/")
    now = int(time.time()) + 1
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    newer = json.dumps({"keys": [jwk_of(other, "the-tenants-next-key")]}).encode()
    jwks.write_bytes(seal(jwks_name, f"{now}\n".encode() + newer))
    attempt.write_bytes(seal(attempt_name, str(now).encode()))
    time.sleep(1.1)
    status, headers, body = deliver(app, [custom_event(topic, n=2)], t)
    assert status != 200, "a token whose key is gone was accepted"
    # The set was fetched moments ago, so the authority is not asked again
    # yet: a key the set lacks is answered as transient.
    assert (status, body["error"]["code"]) == (503, "SigningKeysUnavailable"), body
    assert "signing key" in body["error"]["message"]
    assert "kv_entry_refused" not in app.logs()  # the test's entries were read
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 2


def test_a_key_the_tenant_withdraws_is_refused_after_the_components_own_refresh(stack):
    """The tenant withdraws the key a sender's kept token is signed with.
    Nothing changes until the component fetches the signing keys again:
    here a token naming a key the cached set lacks makes it refresh (the
    set, its fetch attempt and the kept signature are made ten minutes old
    in the store, consistently, so a refresh is allowed and the signature
    still stands). The refreshed set lacks the withdrawn key: the fetch
    attempt set every kept signature aside, and the sender's token is no
    longer accepted."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    from harness.entra import jwt_sign
    name = "app-entra-kept-withdrawn"
    app, topic, t = kept_token_app(stack, name, deliveries=2)
    set_back(stack, app, name, 600)
    assert deliver(app, [custom_event(topic, n=2)], t)[0] == 200
    assert sender_lines(app)[-1]["signature"] == "kept"
    fetches = stack.entra_admin("GET", "stats")["jwks"]
    stack.entra_admin("POST", "withdraw-key", {})
    try:
        claims = json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "=="))
        unknown = jwt_sign(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                           f"unknown-{uuid.uuid4().hex[:8]}")
        status, _, body = deliver(app, [custom_event(topic, n=3)], unknown)
        assert (status, body["error"]["code"]) == (401, "InvalidToken"), body
        assert stack.entra_admin("GET", "stats")["jwks"] == fetches + 1, "the component refreshed"
        assert not store_entries(stack, app, name, b"jwt-checked/v1/")
        status, _, body = deliver(app, [custom_event(topic, n=4)], t)
        # Not accepted. The set was fetched moments ago, so a key it lacks
        # is answered as not there yet (503), as for any key it lacks.
        assert (status, body["error"]["code"]) == (503, "SigningKeysUnavailable"), body
        assert stack.entra_admin("GET", "stats")["jwks"] == fetches + 1
    finally:
        stack.entra_admin("POST", "reset")
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 3


def set_fetched(stack, app, name: str, then: int):
    """Makes the app's cached signing-key set read as fetched at `then`,
    with its fetch attempt then, sealed as the component seals them. The
    set's entry and its new stored bytes."""
    jwks_name, jwks = the_entry(stack, app, name, "jwks/v1/")
    attempt_name, attempt = the_entry(stack, app, name, "jwks-attempt/v1/")
    body = jwks.read_bytes()[8 + 32:].split(b"\n", 1)[1]
    stored = seal(jwks_name, f"{then}\n".encode() + body)
    jwks.write_bytes(stored)
    attempt.write_bytes(seal(attempt_name, str(then).encode()))
    return jwks, stored


def age_the_set(stack, app, name: str, hours: int = 24):
    """The set and its fetch attempt `hours` old (24: due for refresh; 25:
    past the hour a set that cannot be refreshed still serves)."""
    return set_fetched(stack, app, name, int(time.time()) - hours * 3600)


def set_back(stack, app, name: str, secs: int):
    """Moves the app's cached signing-key set, its fetch attempt and its one
    kept signature `secs` into the past, consistently, so the signature
    still stands and (from 300 s) a token naming a key the set lacks may
    make the component fetch again. The kept list's entry and its bytes."""
    then = int(time.time()) - secs
    set_fetched(stack, app, name, then)
    checked_name, checked = the_entry(stack, app, name, "jwt-checked/v1/")
    head, line = checked.read_bytes()[8 + 32:].decode().split("\n")
    digest, _, expires = line.split(" ")
    kept = seal(checked_name, f"{head}\n{digest} {then} {expires}".encode())
    checked.write_bytes(kept)
    return checked, kept


def test_a_signature_checked_against_a_held_set_is_not_kept(stack):
    """The set is due for refresh and the authority fails: the cached set
    still serves (the token is accepted), but the kept signatures are set
    aside and none is kept against the held set, so every delivery is
    checked in full until a fetch succeeds; an hour past its day the held
    set serves no more, and tokens get 503 until a fetch succeeds."""
    name = "app-entra-kept-held"
    app, topic, t = kept_token_app(stack, name, deliveries=2)
    age_the_set(stack, app, name)
    stack.entra_admin("POST", "faults", [{"status": 500, "route": "jwks", "count": 20}])
    try:
        for n in (2, 3):
            status, _, body = deliver(app, [custom_event(topic, n=n)], t)
            assert status == 200, body
            assert sender_lines(app)[-1]["signature"] == "checked"
        age_the_set(stack, app, name, hours=25)
        status, _, body = deliver(app, [custom_event(topic, n=9)], t)
        assert (status, body["error"]["code"]) == (503, "SigningKeysUnavailable"), body
    finally:
        stack.entra_admin("POST", "reset")
    assert "signing_keys_refresh_failed" in app.logs()
    # The list was cleared when the refresh was tried, and nothing was kept.
    assert not store_entries(stack, app, name, b"jwt-checked/v1/")
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 4


def test_no_fetch_is_made_while_its_attempt_cannot_be_recorded(stack):
    """The store refuses to record the fetch attempt (here: a trigger in
    the store's SQLite file makes those writes fail). The record is what
    spaces fetches out, so no fetch is made without it, and the authority
    is not asked however many deliveries come:
    - a token naming a key the cached set lacks gets 503 with Retry-After,
      and the kept signatures stay (no set replaced them);
    - a set due for refresh keeps serving (each token checked in full,
      nothing kept) for an hour past its 24, then tokens get 503;
    - with no set cached, every token gets 503.
    Each refused write is logged with its entry."""
    import sqlite3

    from cryptography.hazmat.primitives.asymmetric import rsa

    from harness.entra import jwt_sign
    if default_runtime() != "host":
        pytest.skip("the store that refuses writes is made in the test host's SQLite file")
    name = "app-entra-kept-unrecorded"
    app, topic, t = kept_token_app(stack, name, deliveries=2)
    checked, kept = set_back(stack, app, name, 600)
    db = stack.workdir / f"{name}-host-state" / "sqlite_key_value.db"

    def refuse_attempts(on: bool):
        with sqlite3.connect(db) as conn:
            for when in ("insert", "update"):
                if on:
                    conn.execute(f"CREATE TRIGGER refuse_attempts_{when} BEFORE {when.upper()} ON spin_key_value "
                                 "WHEN NEW.key LIKE 'jwks-attempt/%' BEGIN SELECT RAISE(ABORT, 'refused'); END")
                else:
                    conn.execute(f"DROP TRIGGER IF EXISTS refuse_attempts_{when}")

    def age_the_set_meanwhile(hours: int):
        refuse_attempts(False)
        aged = age_the_set(stack, app, name, hours=hours)
        refuse_attempts(True)
        return aged

    refuse_attempts(True)
    fetches = stack.entra_admin("GET", "stats")["jwks"]
    claims = json.loads(base64.urlsafe_b64decode(t.split(".")[1] + "=="))
    unknown_key = jwt_sign(claims, rsa.generate_private_key(public_exponent=65537, key_size=2048),
                           f"unknown-{uuid.uuid4().hex[:8]}")

    def refused_as_transient(status, headers, body):
        assert (status, body["error"]["code"]) == (503, "SigningKeysUnavailable"), body
        assert int(headers["Retry-After"]) > 0 and "did not take the record" in body["error"]["message"]

    try:
        for forged in range(3):
            refused_as_transient(*deliver(app, [custom_event(topic, n=10 + forged)], unknown_key))
        assert checked.read_bytes() == kept, "no set was replaced: the kept signatures stay"
        assert deliver(app, [custom_event(topic, n=2)], t)[0] == 200
        assert sender_lines(app)[-1]["signature"] == "kept"
        jwks, old_set = age_the_set_meanwhile(24)
        for n in (3, 4):
            status, _, body = deliver(app, [custom_event(topic, n=n)], t)
            assert status == 200, body
            assert sender_lines(app)[-1]["signature"] == "checked"
        assert jwks.read_bytes() == old_set and checked.read_bytes() == kept
        age_the_set_meanwhile(25)
        refused_as_transient(*deliver(app, [custom_event(topic, n=5)], t))
        # No set cached at all: nothing to serve.
        with sqlite3.connect(db) as conn:
            conn.execute("DELETE FROM spin_key_value WHERE key LIKE 'jwks/v1/%'")
        refused_as_transient(*deliver(app, [custom_event(topic, n=6)], t))
        assert stack.entra_admin("GET", "stats")["jwks"] == fetches, "fetched without a record"
        refused = [json.loads(ln[ln.index("{"):]) for ln in app.logs().splitlines()
                   if "kv_store_write_failed" in ln]
        assert len(refused) >= 7 and all(r["entry"].startswith("jwks-attempt/v1/") for r in refused), refused
    finally:
        refuse_attempts(False)
    # With the store writable again, the next delivery fetches, caches
    # and keeps as usual.
    assert deliver(app, [custom_event(topic, n=21)], t)[0] == 200
    assert sender_lines(app)[-1]["signature"] == "checked"
    assert stack.entra_admin("GET", "stats")["jwks"] == fetches + 1
    assert deliver(app, [custom_event(topic, n=22)], t)[0] == 200
    assert sender_lines(app)[-1]["signature"] == "kept"
    assert jwks.read_bytes() != old_set
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 7
