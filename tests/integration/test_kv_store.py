"""The key-value store is not trusted beyond the deployment: with
kv_store_key set, every entry carries an HMAC, and an entry written by
someone without the secret (here: a key state pinned as enabled while the
key is disabled) is ignored. Runs on the test stub's file-backed store, whose
files can be edited like a writer of a shared store would."""

import json
import time
import uuid

import pytest

from harness.stack import APP_PRINCIPALS
from integration.test_keys import call

STATE_PREFIX = b"kek-state/v1/"


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
    if app.runtime != "wasmtime":
        pytest.skip("edits the test stub's file-backed store")
    assert call(app, "GET", "/readyz", key=None)[0] == 200
    state = stack.workdir / f"{name}-kv" / "default" / (STATE_PREFIX + key.encode()).hex()
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
