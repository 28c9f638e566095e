"""The key-value store is not trusted beyond the deployment: with
kv_store_key set, every entry carries an HMAC, and an entry written by
someone without the secret (here: a key state pinned as enabled while the
key is disabled) is ignored. The test edits the store behind the app's back,
as a writer of a shared store would: the test host's SQLite file (Spin's
table) or the test stub's files under `wasmtime serve`."""

import json
import sqlite3
import time
import uuid

import pytest

from harness.stack import APP_PRINCIPALS
from integration.test_keys import call

STATE_PREFIX = b"kek-state/v1/"


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


def own_key(stack):
    key = f"kv-bound-{uuid.uuid4().hex[:8]}"
    stack.hsm_admin("POST", "keys", {"name": key, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
    for oid in APP_PRINCIPALS:
        stack.hsm_admin("POST", "grants", {"key": key, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})
    return key


@pytest.mark.parametrize("bound", [True, False], ids=["kv_store_key", "unbound"])
def test_a_forged_key_state_is_ignored_when_entries_are_bound(stack, bound):
    key = own_key(stack)
    extra = {"kv_store_key": "kv-store-key-0123456789abcdef01234567"} if bound else {}
    name = f"app-kv-{'bound' if bound else 'unbound'}"
    app = stack.serve_app(name=name, overrides=stack.stage_two(
        "client-secret", hsm_key_name=key, hsm_key_check_secs="3600", **extra))
    assert call(app, "GET", "/readyz", key=None)[0] == 200
    state = StoreEntry(stack, app, name, STATE_PREFIX + key.encode())
    stored = state.read_bytes()
    if bound:
        assert stored.startswith(b"cmk-kv1:"), stored[:16]
        genuine = json.loads(stored[8 + 32:])
    else:
        genuine = json.loads(stored)
    # The key is disabled; a writer of the store pins the old, enabled state
    # as freshly checked, without the MAC.
    stack.hsm_admin("POST", f"keys/{key}/state", {"enabled": False})
    try:
        genuine["checked_at"] = int(time.time())
        state.write_bytes(json.dumps(genuine).encode())
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
