"""Workload identity on SpinKube through the token proxy (token-proxy/),
in the real runtime: the helper reads the projected federated token file,
exchanges it with the Entra stand-in, and serves the App Service shape; the
component, configured as managed identity against it, gets tokens for the
app's workload identity and reaches the key. Callers without the identity
header are refused, the file is read afresh at each exchange (the kubelet
rotates it), and Entra's refusals reach the caller."""

import json
import urllib.error
import urllib.parse
import urllib.request
import uuid

import pytest

from harness.stack import TENANT, env, free_port, start, wait_for_port
from integration.test_keys import assert_no_credentials_in, call

HEADER = f"proxy-identity-header-{uuid.uuid4()}"
CLIENT = "app-workload-client"
HSM = "https://managedhsm.azure.net"
OTHER = "https://other.example"


def proxy_get(url, resource=HSM, header=HEADER):
    req = urllib.request.Request(f"{url}/msi/token?api-version=2019-08-01&resource={urllib.parse.quote(resource, safe='')}",
                                 headers={"X-IDENTITY-HEADER": header} if header else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


@pytest.fixture(scope="module")
def proxy(stack):
    token_file = stack.workdir / "azure-identity-token"

    def project(**claims):
        """What the kubelet does: (re)write the projected service-account token."""
        minted = stack.entra_admin("POST", "federated-token", {"client_id": CLIENT, **claims})["token"]
        token_file.write_text(minted)
        return minted

    first = project()
    port = free_port()
    p = start("token-proxy", [env("CMK_TOKEN_PROXY")], stack.workdir, {
        "TOKEN_PROXY_LISTEN": f"127.0.0.1:{port}", "IDENTITY_HEADER": HEADER,
        "AZURE_AUTHORITY_HOST": stack.entra_url, "AZURE_TENANT_ID": TENANT, "AZURE_CLIENT_ID": CLIENT,
        "AZURE_FEDERATED_TOKEN_FILE": str(token_file), "TOKEN_PROXY_RESOURCES": f"{HSM},{OTHER}",
        "TOKEN_PROXY_REFRESH_SKEW_SECS": "300"})
    stack.processes.append(p)
    wait_for_port(port, p.proc, "token-proxy")
    return f"http://127.0.0.1:{port}", p, project, [first]


def test_the_component_gets_its_workload_identity_tokens_through_the_proxy(proxy, stack):
    url, process, _, assertions = proxy
    stats = stack.entra_admin("GET", "stats")
    app = stack.serve_app(name="app-token-proxy", overrides=stack.stage_two(
        "app-service", azure_client_id=CLIENT, managed_identity_origin=url, identity_header=HEADER))
    status, _, body = call(app, "GET", "/readyz", key=None, admin=True)
    assert status == 200 and body["kek"]["enabled"] is True, body
    for _ in range(3):
        status, _, body = call(app, "POST", "/readyz/roundtrip")
        assert status == 200 and body["roundtrip"]["ok"] is True, body
    after = stack.entra_admin("GET", "stats")
    # The proxy made one workload-identity exchange for the app's identity;
    # the component cached what it got (and the proxy would have too).
    assert after["workload_identity"] - stats["workload_identity"] == 1
    assert after["by_client_resource"][CLIENT][HSM] - stats["by_client_resource"].get(CLIENT, {}).get(HSM, 0) == 1
    assert after["app_service"] == stats["app_service"], "the stand-in's own App Service endpoint was not used"
    # The HSM saw the workload identity's principal.
    assert "oid-app-workload" in stack.hsm_admin("GET", "stats")["token_remaining_min_by_oid"]
    for log in (app.logs(), process.log.read_text()):
        assert_no_credentials_in(log, stack, HEADER, *assertions)


def test_the_proxy_refuses_callers_without_the_identity_header(proxy, stack):
    url, process, _, _ = proxy
    issued = stack.entra_admin("GET", "stats")["issued"]
    for header in (None, "wrong-header-value-0123", HEADER[:-1]):
        status, body = proxy_get(url, header=header)
        assert status == 401 and body["error"] == "unauthorized_client", body
        assert "access_token" not in body
    status, body = proxy_get(url, resource="https://vault.azure.net")
    assert status == 403, body
    assert stack.entra_admin("GET", "stats")["issued"] == issued, "no exchange for a refused caller"


def test_the_projected_token_is_read_afresh_and_entras_refusal_passed_on(proxy, stack):
    url, process, project, assertions = proxy
    assertions.append(project(lifetime=-3600))  # the kubelet stopped refreshing: an expired assertion
    status, body = proxy_get(url, resource=OTHER)  # not cached yet: a fresh exchange
    assert status == 401 and body["error"] == "invalid_client", body
    assert body["error_description"].startswith("AADSTS700024") and body["correlation_id"], body
    assertions.append(project())  # rotated
    status, body = proxy_get(url, resource=OTHER)
    assert status == 200 and body["token_type"] == "Bearer" and int(body["expires_on"]) > 0, body
    assert body["client_id"] == CLIENT and body["resource"] == OTHER
    assert_no_credentials_in(process.log.read_text(), stack, HEADER, *assertions)


def test_a_refused_token_the_source_gives_back_is_not_sent_again(proxy, stack):
    """Cosmos DB refuses the token (here: one for another resource), and the
    renewal gets the same token back, as a source with its own cache (the
    proxy, IMDS) serves it: the request is not sent again with it, and the
    delivery's requests share that outcome instead of each renewing."""
    from integration.eventgrid import custom_event
    from integration.test_cosmos_entra import token_refusals
    from integration.test_foundation import post

    url, process, _, _ = proxy

    def proxy_requests():
        return process.log.read_text().count('"event":"request"')

    app = stack.serve_app(name="app-token-proxy-cosmos", overrides=stack.entra_cosmos(
        "app-service", azure_client_id=CLIENT, managed_identity_origin=url, identity_header=HEADER,
        cosmos_token_scope=f"{OTHER}/.default"))
    before, asked = stack.sigcheck_stats(), proxy_requests()
    topic = f"/topics/proxy-refused-{uuid.uuid4()}"
    status, _, body = post(f"{app.url}/events", [custom_event(f"{topic}-{i}") for i in range(3)])
    assert (status, body["error"]["code"]) == (502, "StoreAuthFailed"), body
    after = stack.sigcheck_stats()
    # Each of the three requests was refused once, and not sent again; the
    # proxy was asked for the token and once more for its renewal, whose
    # failure the three shared.
    assert after["rejected"] - before["rejected"] == 3
    assert proxy_requests() - asked == 2
    refused = token_refusals(app)
    assert len(refused) == 3 and all(not r["renewed"] and "gave back the refused token" in r["error"]
                                     for r in refused), refused
