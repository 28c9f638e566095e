"""The key-value store is not trusted beyond the deployment: with
kv_store_key set, every entry is bound to its name by the secret, and an
entry written by someone without it (here: a key state pinned as enabled
while the key is disabled) is ignored; cached access tokens, and the key
states that keep the HSM token, are encrypted, so a reader of the store
does not learn them. The test reads and edits the store
behind the app's back, as a reader or writer of a shared store would: the
test host's SQLite file (Spin's table) or the test stub's files under
`wasmtime serve`."""

import json
import sqlite3
import time
import uuid

import pytest

from harness.stack import APP_PRINCIPALS
from integration.test_keys import JWT, call

STATE_PREFIX = b"kek-state/v3/"
TOKEN_PREFIX = b"entra-token/v2/"
KV_STORE_KEY = "kv-store-key-0123456789abcdef01234567"


class StoreEntry:
    """One entry of the app's `default` store, read and written directly."""

    def __init__(self, stack, app, name: str, key: bytes):
        self.runtime, self.key = app.runtime, key
        if app.runtime == "host":
            self.path = stack.workdir / f"{name}-host-state" / "sqlite_key_value.db"
        elif app.runtime == "wasmtime":
            self.path = stack.workdir / f"{name}-kv" / "default" / key.hex()
        else:
            pytest.skip(f"the store of {app.runtime} is not edited here")

    def read_bytes(self) -> bytes:
        if self.runtime == "wasmtime":
            return self.path.read_bytes()
        with sqlite3.connect(self.path) as conn:
            (value,) = conn.execute("SELECT value FROM spin_key_value WHERE store = 'default' AND key = ?",
                                    (self.key.decode(),)).fetchone()
        return value

    def write_bytes(self, value: bytes) -> None:
        if self.runtime == "wasmtime":
            self.path.write_bytes(value)
            return
        with sqlite3.connect(self.path) as conn:
            n = conn.execute("UPDATE spin_key_value SET value = ? WHERE store = 'default' AND key = ?",
                             (value, self.key.decode())).rowcount
        assert n == 1


def store_entries(stack, app, name: str, prefix: bytes) -> dict[bytes, StoreEntry]:
    """The entries of the app's `default` store whose names start with
    `prefix`, by name."""
    if app.runtime == "host":
        path = stack.workdir / f"{name}-host-state" / "sqlite_key_value.db"
        with sqlite3.connect(path) as conn:
            names = [k.encode() for (k,) in conn.execute(
                "SELECT key FROM spin_key_value WHERE store = 'default'")]
    elif app.runtime == "wasmtime":
        names = [bytes.fromhex(f.name) for f in (stack.workdir / f"{name}-kv" / "default").iterdir()]
    else:
        pytest.skip(f"the store of {app.runtime} is not read here")
    return {k: StoreEntry(stack, app, name, k) for k in names if k.startswith(prefix)}

def open_split(name: bytes, stored: bytes) -> dict:
    """The secret part of a `cmk-kv3:` entry under `name`, opened with
    KV_STORE_KEY: AES-256-GCM under HMAC-SHA256(secret,
    "cmk-ingest/kv-store/secret/v1"), the associated data "cmk-kv3:" ‖ u64
    name length ‖ name ‖ the public part."""
    import hashlib
    import hmac
    import struct
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    key = hmac.new(KV_STORE_KEY.encode(), b"cmk-ingest/kv-store/secret/v1", hashlib.sha256).digest()
    nonce, (public_len,) = stored[8:20], struct.unpack(">I", stored[20:24])
    public, sealed = stored[24:24 + public_len], stored[24 + public_len:]
    aad = b"cmk-kv3:" + struct.pack(">Q", len(name)) + name + public
    return json.loads(AESGCM(key).decrypt(nonce, sealed, aad))


def own_key(stack):
    """A new key of its own, granted to the apps: its name and bundle."""
    key = f"kv-bound-{uuid.uuid4().hex[:8]}"
    bundle = stack.hsm_admin("POST", "keys", {"name": key, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    return key, bundle


def forged_state(stack, app, bundle: dict) -> bytes:
    """A key-state entry as the component writes one without kv_store_key,
    made from the key's public bundle alone (what any reader of the key
    has; its id as the app reaches the HSM): the key enabled, checked just
    now."""
    jwk = bundle["key"]
    kid = stack.app_kid(app, jwk["kid"])
    return json.dumps({"checked_at": int(time.time()), "key": {
        "kid": kid, "kty": jwk["kty"], "key_ops": jwk["key_ops"], "n": jwk["n"], "e": jwk["e"],
        "enabled": True, "not_before": None, "expires": None,
        "recovery_level": bundle["attributes"].get("recoveryLevel")}}).encode()


@pytest.mark.parametrize("bound", [True, False], ids=["kv_store_key", "unbound"])
def test_a_forged_key_state_is_ignored_when_entries_are_bound(stack, bound):
    key, bundle = own_key(stack)
    extra = {"kv_store_key": KV_STORE_KEY} if bound else {}
    name = f"app-kv-{'bound' if bound else 'unbound'}"
    app = stack.serve_app(name=name, overrides=stack.stage_two(
        "client-secret", hsm_key_name=key, hsm_key_check_secs="3600", **extra))
    assert call(app, "GET", "/readyz", key=None)[0] == 200
    state = StoreEntry(stack, app, name, STATE_PREFIX + key.encode())
    stored = state.read_bytes()
    forged = forged_state(stack, app, bundle)
    if bound:
        # The state readable and authenticated, the HSM token it keeps
        # encrypted.
        assert stored.startswith(b"cmk-kv3:"), stored[:16]
        assert b'"enabled":true' in stored and not JWT.search(stored.decode("latin-1"))
    else:
        public, secret = stored.split(b"\n", 1)
        genuine = json.loads(public)
        # The forger's state is the component's own but for the time; the
        # entry also keeps the HSM token, in the clear without the key.
        assert json.loads(forged)["key"] == genuine["key"], genuine["key"]
        assert JWT.search(json.loads(secret)["token"]["token"]), secret[:40]
    # The key is disabled; a writer of the store pins it as enabled and
    # freshly checked, without the secret.
    stack.hsm_admin("POST", f"keys/{key}/state", {"enabled": False})
    try:
        state.write_bytes(forged)
        status, _, body = call(app, "GET", "/readyz", key=None)
        if bound:
            assert (status, body) == (503, {"status": "not-ready", "error": {"code": "KeyDisabled"}}), body
            assert "kv_entry_refused" in app.logs()
        else:
            # What the binding prevents: the forged state is believed.
            assert status == 200, body
            assert "kv_store_unbound" in app.logs()
    finally:
        stack.hsm_admin("POST", f"keys/{key}/state", {"enabled": True})


@pytest.mark.parametrize("bound", [True, False], ids=["kv_store_key", "unbound"])
def test_cached_tokens_are_encrypted_when_entries_are_bound(stack, bound):
    extra = {"kv_store_key": KV_STORE_KEY} if bound else {}
    name = f"app-kv-token-{'bound' if bound else 'unbound'}"
    app = stack.serve_app(name=name, overrides=stack.stage_two(
        "client-secret", hsm_key_check_secs="3600", **extra))

    def roundtrips(n):
        before = stack.entra_admin("GET", "stats")["client_secret"]
        for _ in range(n):
            status, _, body = call(app, "POST", "/readyz/roundtrip")
            assert status == 200 and body["roundtrip"]["ok"] is True, body
        return stack.entra_admin("GET", "stats")["client_secret"] - before

    # One token for three requests: the cached entry is read back (decrypted).
    assert roundtrips(3) == 1
    entries = store_entries(stack, app, name, TOKEN_PREFIX)
    assert len(entries) == 1, list(entries)
    [(entry, token_entry)] = entries.items()
    stored = token_entry.read_bytes()
    issued = [t["token"] for t in stack.entra_admin("GET", "issued-tokens")["tokens"]]
    if not bound:
        # What the encryption prevents: the token lies in the store as it is.
        assert json.loads(stored)["token"] in issued
        return
    assert stored.startswith(b"cmk-kv2:"), stored[:16]
    assert not any(t.encode() in stored for t in issued)
    assert not JWT.search(stored.decode("latin-1")), "a JWT is stored in the clear"
    # An edited entry reads as absent: a new token is fetched and stored
    # encrypted again. (The key states keep copies of the token: edited
    # too, so the token entry is what the check reads.)
    def edited(entry):
        value = entry.read_bytes()
        entry.write_bytes(value[:-1] + bytes([value[-1] ^ 1]))
    edited(token_entry)
    for state in store_entries(stack, app, name, STATE_PREFIX).values():
        edited(state)
    assert roundtrips(1) == 1
    assert "kv_entry_refused" in app.logs()
    renewed = store_entries(stack, app, name, TOKEN_PREFIX)[entry].read_bytes()
    assert renewed.startswith(b"cmk-kv2:") and renewed != stored
    # A genuine entry moved under another name (here: the token entry copied
    # over the key-state entries) does not open there either; the token entry
    # still opens under its own.
    assert call(app, "GET", "/readyz", key=None)[0] == 200
    states = list(store_entries(stack, app, name, STATE_PREFIX).values())
    assert states
    # The key-state entries keep the HSM token, encrypted as well: opened
    # here from docs/keys-and-identity.md's description, it is an issued one.
    issued = [t["token"] for t in stack.entra_admin("GET", "issued-tokens")["tokens"]]
    for state in states:
        kept = state.read_bytes()
        assert kept.startswith(b"cmk-kv3:") and not JWT.search(kept.decode("latin-1"))
        assert open_split(state.key, kept)["token"]["token"] in issued
    for state in states:  # the latest version's and each version's
        state.write_bytes(renewed)
    refused = app.logs().count("kv_entry_refused")
    before = stack.entra_admin("GET", "stats")["client_secret"]
    assert call(app, "GET", "/readyz", key=None)[0] == 200
    assert app.logs().count("kv_entry_refused") > refused
    assert stack.entra_admin("GET", "stats")["client_secret"] == before


def test_the_hsm_token_is_kept_with_the_key_state_for_its_identity_only(stack):
    """A delivery reads one entry for the key's state and the HSM token
    (the token entry only when the state entry keeps none for this
    identity). A token kept there for another identity is never sent; one
    the HSM refuses removes the entry, so the next delivery checks the
    key's state and keeps a good token, and the refused one is not sent
    again."""
    from integration.eventgrid import custom_event
    from integration.test_foundation import post

    key, _ = own_key(stack)
    name = "app-kv-kept-token"
    app = stack.serve_app(name=name, overrides=stack.stage_two(
        "client-secret", hsm_key_name=key, hsm_key_check_secs="3600"))
    topic = f"/topics/kept-token-{uuid.uuid4()}"

    def deliver():
        status, _, body = post(f"{app.url}/events", [custom_event(topic, patient="Kept Token")])
        assert status == 200, body

    def refused():
        return stack.hsm_admin("GET", "stats")["by_key"].get(key, {}).get("401", 0)

    state = StoreEntry(stack, app, name, STATE_PREFIX + key.encode())
    far = int(time.time()) + 7200

    def read():
        """The entry's state and the token it keeps (without kv_store_key:
        the state's JSON, a newline, the token's)."""
        public, secret = state.read_bytes().split(b"\n", 1)
        return public, json.loads(secret)

    def write(public, identity, token):
        state.write_bytes(public + b"\n" + json.dumps(
            {"identity": identity, "token": {"token": token, "expires_on": far}}).encode())

    deliver()
    public, held = read()
    [token_entry] = store_entries(stack, app, name, TOKEN_PREFIX)
    assert held["identity"].encode() == token_entry, held["identity"]
    own = held["token"]["token"]
    bogus = "eyJhbGciOiJSUzI1NiJ9.eyJraWQiOiJub25lIn0.bm90LWEtc2lnbmF0dXJl"

    # Another identity's token, fresh, in the entry: not sent (no 401); the
    # token cache's is (the entry is left as it is: a state entry is written
    # only after a check of the key).
    before = refused()
    write(public, "entra-token/v2/another-identity", bogus)
    deliver()
    deliver()
    assert refused() == before

    # This identity's entry with a token the HSM refuses: sent once (401),
    # the entry removed; the next delivery checks the state and keeps a good
    # token in it, and the refused one is not sent again.
    write(public, token_entry.decode(), bogus)
    checks = stack.hsm_admin("GET", "stats")["by_key"][key]["get"]
    deliver()
    assert refused() == before + 1
    deliver()
    deliver()
    assert refused() == before + 1
    assert stack.hsm_admin("GET", "stats")["by_key"][key]["get"] == checks + 1
    kept_now = read()[1]
    assert kept_now["identity"].encode() == token_entry and kept_now["token"]["token"] == own
