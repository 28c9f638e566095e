"""Entra ID tokens through the component, in the real runtime: refreshed
ahead of expiry when they are short-lived (no request fails, and a counter
on the stand-in shows one token call per refresh, not one per request), and
token-endpoint refusals surfaced with Entra's error, description and
correlation id, never with the secret or assertion."""

import re
import time
import uuid

import pytest

from harness.stack import KEK_NAME
from integration.eventgrid import custom_event
from integration.test_foundation import count, post
from integration.test_keys import assert_no_credentials_in, call

REFRESH_CLIENT, REFRESH_OID, REFRESH_SECRET = "app-refresh-client", "oid-app-refresh", "refresh-client-secret-0123"
LIFETIME, SKEW = 10, 6


@pytest.fixture
def short_lived_tokens(stack):
    stack.entra_admin("POST", "config", {"lifetime": LIFETIME})
    yield
    stack.entra_admin("POST", "config", {"lifetime": 3600})


def test_short_lived_tokens_are_refreshed_ahead_of_expiry(stack, short_lived_tokens):
    stack.hsm_admin("POST", "grants", {"key": KEK_NAME, "object_id": REFRESH_OID, "ops": ["get", "wrapKey", "unwrapKey"]})
    app = stack.serve_app(name="app-token-refresh", overrides=stack.stage_two(
        "client-secret", azure_client_id=REFRESH_CLIENT, azure_client_secret=REFRESH_SECRET,
        token_refresh_skew_secs=str(SKEW), hsm_key_check_secs="0"))
    requests, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 13:
        status, _, body = call(app, "POST", "/readyz/roundtrip")  # get + wrap + unwrap: three bearer calls
        assert status == 200, body  # no request fails across refreshes
        requests += 1
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    calls = stack.entra_admin("GET", "stats")["by_client"].get(REFRESH_CLIENT, 0)
    # A token is used for LIFETIME - SKEW = 4 s (3 to 5 with whole-second
    # clocks), so about one call per 4 s: not one per request, and more
    # than a cache that ignored the skew would make (one per 10 s).
    assert requests >= 20
    assert 1 + elapsed // 5 <= calls <= 2 + elapsed / 3, (calls, requests, elapsed)
    # Every token reached the HSM at least SKEW seconds before it expired
    # (less one for whole-second clocks).
    remaining = stack.hsm_admin("GET", "stats")["token_remaining_min_by_oid"][REFRESH_OID]
    assert remaining >= SKEW - 1.5, remaining
    assert_no_credentials_in(app.logs(), stack, REFRESH_SECRET)


def refused(stack, name, variables):
    """A delivery and /readyz through an app whose token request Entra
    refuses: (delivery body, readyz body, app)."""
    app = stack.serve_app(name=name, overrides=variables)
    topic = f"/topics/identity-{uuid.uuid4()}"
    status, headers, delivery = post(f"{app.url}/events", [custom_event(topic, patient="never written")])
    assert (status, delivery["error"]["code"]) == (503, "IdentityFailed"), delivery
    assert int(headers["Retry-After"]) > 0
    # Anonymous probes see the code only (Entra's text can name the app's
    # ids and tenant); the admin key sees the reason.
    status, _, anonymous = call(app, "GET", "/readyz", key=None)
    assert (status, anonymous) == (503, {"status": "not-ready", "error": {"code": "IdentityFailed"}}), anonymous
    # The failure is remembered briefly: more anonymous probes make no token
    # request.
    stats = stack.entra_admin("GET", "stats")
    for _ in range(3):
        assert call(app, "GET", "/readyz", key=None)[0] == 503
    assert stack.entra_admin("GET", "stats") == stats
    # The admin key gets a fresh answer, with the reason.
    status, _, ready = call(app, "GET", "/readyz", key=None, admin=True)
    assert (status, ready["error"]["code"]) == (503, "IdentityFailed"), ready
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 0
    return delivery, ready, app


def assert_entra_reason(message, error, aadsts):
    """Entra's error, its AADSTS description and its correlation id are all
    in the message. The description is cut at 400 characters, which may cut
    the id it names at its end; what it shows must agree with the id."""
    assert f"401 {error}" in message and f"AADSTS{aadsts}:" in message, message
    surfaced = re.search(r"\(correlation ([0-9a-f-]{36})\)$", message)
    assert surfaced, message
    named = re.search(r"Correlation ID: ([0-9a-f-]*)", message)
    assert named is None or surfaced.group(1).startswith(named.group(1)), message


def test_a_wrong_client_secret_answers_identity_failed_with_entras_reason(stack):
    wrong = f"wrong-secret-{uuid.uuid4()}"
    delivery, ready, app = refused(stack, "app-wrong-secret", stack.stage_two(
        "client-secret", azure_client_secret=wrong))
    for message in (delivery["error"]["message"], ready["error"]["message"]):
        assert_entra_reason(message, "invalid_client", 7000215)
        assert wrong not in message
    assert_no_credentials_in(app.logs(), stack, wrong, "local-client-secret-0123")


@pytest.mark.parametrize("assertion, aadsts", [
    ("tampered", 700027),   # signature does not verify
    ("other-subject", 700213),  # a service account the app does not trust
])
def test_a_bad_federated_assertion_answers_identity_failed_with_entras_reason(stack, assertion, aadsts):
    if assertion == "tampered":
        good = stack.entra_admin("POST", "federated-token", {"client_id": "app-workload-client"})["token"]
        head, body, sig = good.split(".")
        token = f"{head}.{body}.{sig[:-6]}AAAAAA"
    else:
        token = stack.entra_admin("POST", "federated-token", {"subject": "system:serviceaccount:other:intruder"})["token"]
    variables = stack.stage_two("workload-identity", azure_federated_token=token)
    delivery, ready, app = refused(stack, f"app-bad-assertion-{assertion}", variables)
    for message in (delivery["error"]["message"], ready["error"]["message"]):
        assert_entra_reason(message, "invalid_client", aadsts)
        assert token not in message and token.split(".")[2] not in message
    assert token not in app.logs()
    assert_no_credentials_in(app.logs(), stack)
