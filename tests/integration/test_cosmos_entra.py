"""Cosmos DB with Entra ID tokens instead of the account key
(`cosmos_auth = entra`), in the real runtime: the component asks the Entra
stand-in for a token for the account's audience, caches it in the key-value
store like the Managed HSM token, and signs every request with
`type=aad&ver=1.0&sig=<token>`. The signature check in front of the Cosmos
server verifies each token for real (RS256 against the stand-in's JWKS,
audience, issuer, expiry), so a wrong token fails here, not only in Azure."""

import json
import uuid

import pytest

from harness.stack import COSMOS_AUDIENCE
from integration.eventgrid import custom_event, document_id
from integration.test_foundation import count, post
from integration.test_records import enc, get

# The client id each token source is counted under by the Entra stand-in.
CLIENT = {"client-secret": "app-secret-client", "imds": "system"}


def token_calls(stack, client, audience=COSMOS_AUDIENCE):
    return stack.entra_admin("GET", "stats")["by_client_resource"].get(client, {}).get(audience, 0)


@pytest.mark.parametrize("identity", ["client-secret", "imds"], ids=["client-secret", "managed-identity"])
def test_writes_and_reads_with_entra_tokens_one_token_for_many_requests(stack, identity):
    app = stack.serve_app(name=f"app-entra-{identity}", overrides=stack.entra_cosmos(identity))
    tokens_before = token_calls(stack, CLIENT[identity])
    sig_before = stack.sigcheck_stats()
    topic = f"/topics/entra-{uuid.uuid4()}"
    deliveries = [[custom_event(topic, n=i, k=j) for j in range(3)] for i in range(3)]
    deliveries.append([custom_event(f"{topic}-lone")])
    for events in deliveries:
        status, _, body = post(f"{app.url}/events", events)
        assert status == 200, body
    # Read back through the component: point reads and a page.
    first = deliveries[0][0]
    status, _, body = get(app, f"/records/{enc(topic)}/{document_id(topic, first['id'])}")
    assert status == 200 and body["event"]["data"] == first["data"], body
    status, _, body = get(app, f"/records/{enc(topic)}?limit=100")
    assert status == 200 and len(body["records"]) == 9, body
    sig_after = stack.sigcheck_stats()
    requests = len(deliveries) + 2
    assert sig_after["accepted_by_type"]["aad"] - sig_before["accepted_by_type"]["aad"] == requests
    assert sig_after["rejected"] == sig_before["rejected"]
    # One token for all of them, for the account's audience.
    assert token_calls(stack, CLIENT[identity]) - tokens_before == 1
    # The official SDK (with the account key) reads exactly what was written.
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 9
    doc = stack.container_client().read_item(document_id(topic, first["id"]), partition_key=topic)
    assert doc["event"]["data"] == first["data"]
    logs = app.logs()
    assert "eyJ" not in logs and "local-client-secret-0123" not in logs  # no token or secret in the log


def token_refusals(app) -> list[dict]:
    """The app's `cosmos_token_refused` log lines, in order."""
    return [json.loads(ln[ln.index("{"):]) for ln in app.logs().splitlines() if "cosmos_token_refused" in ln]


def refused_delivery(stack, name, other, events, **settings):
    """Delivers `events` from an app whose tokens are for another account,
    so the signature check refuses every one: the app, the answer, and the
    signature check's and the Entra stand-in's counts before it."""
    app = stack.serve_app(name=name, overrides=stack.entra_cosmos(
        "client-secret", cosmos_token_scope=f"{other}/.default", **settings))
    tokens_before = token_calls(stack, "app-secret-client", other)
    before = stack.sigcheck_stats()
    status, _, body = post(f"{app.url}/events", events)
    assert status == 502 and body["error"]["code"] == "StoreAuthFailed", body
    return app, body, before, tokens_before


def test_a_token_for_another_audience_is_refused_and_nothing_is_written(stack):
    other = "https://other-account.documents.azure.com"
    topic = f"/topics/entra-wrong-{uuid.uuid4()}"
    _, body, before, tokens_before = refused_delivery(stack, "app-entra-wrong-audience", other,
                                                      [custom_event(topic), custom_event(topic)])
    assert f"intended for [{other}]" in body["error"]["message"]
    after = stack.sigcheck_stats()
    # Refused, then refused again with a renewed token; nothing reached the server.
    assert after["rejected"] - before["rejected"] == 2
    assert after["forwarded"] == before["forwarded"]
    assert token_calls(stack, "app-secret-client", other) - tokens_before == 2
    assert count(stack, "c.pk = @pk", [{"name": "@pk", "value": topic}]) == 0


def test_a_refused_delivery_renews_its_token_once_not_once_per_request(stack):
    # Five partitions, five requests side by side, each refused: they were
    # signed with one token and share one renewal, so the stand-in is asked
    # for two tokens in all (the first and the renewed), not one more per
    # request, however the requests interleave.
    other = "https://another-refusing-account.documents.azure.com"
    topic = f"/topics/entra-renew-{uuid.uuid4()}"
    app, _, before, tokens_before = refused_delivery(stack, "app-entra-one-renewal", other,
                                                     [custom_event(f"{topic}-{i}") for i in range(5)])
    after = stack.sigcheck_stats()
    assert after["rejected"] - before["rejected"] == 10
    assert after["forwarded"] == before["forwarded"]
    assert token_calls(stack, "app-secret-client", other) - tokens_before == 2
    assert app.logs().count('"cosmos_token_refused"') == 5


def test_a_renewed_token_refused_too_is_not_tried_by_the_later_requests(stack):
    # One request at a time: the first is refused, renews and is refused
    # again; the four after it, signed with the first token, are refused
    # once each and not sent again with the renewed one.
    other = "https://a-third-refusing-account.documents.azure.com"
    topic = f"/topics/entra-renew-serial-{uuid.uuid4()}"
    app, _, before, tokens_before = refused_delivery(stack, "app-entra-serial-renewal", other,
                                                     [custom_event(f"{topic}-{i}") for i in range(5)],
                                                     cosmos_max_concurrency="1")
    assert stack.sigcheck_stats()["rejected"] - before["rejected"] == 6
    assert token_calls(stack, "app-secret-client", other) - tokens_before == 2
    refused = token_refusals(app)
    assert [r["renewed"] for r in refused] == [True, False, False, False, False], refused
    assert all("refused too" in r["error"] for r in refused[1:]), refused
