"""The Entra ID (`entra.py`) and Managed HSM (`hsm.py`) stand-ins are faithful
where the component relies on them: the official SDKs — `azure-identity`
1.27.0 credentials and `azure-keyvault-keys` 4.11.3 clients — get tokens,
read keys, wrap and unwrap through them and see the errors they see from the
services; values wrapped by the stand-in unwrap with plain RSA-OAEP math and
vice versa; tokens verify with an independent JWT library (PyJWT, which MSAL
depends on).

Self-contained: starts both stand-ins as subprocesses of this interpreter on
free loopback ports and stops them at the end of the module.

SDK options the stand-ins need (no code change in the SDKs):
- azure-identity over MSAL (`ClientSecretCredential`): an https `authority`
  (`https://127.0.0.1:Q`), `disable_instance_discovery=True` (MSAL would
  otherwise ask login.microsoftonline.com to validate the authority) and
  `connection_verify=<entra-cert.pem>`. MSAL then reads
  `{authority}/{tenant}/v2.0/.well-known/openid-configuration`.
- `WorkloadIdentityCredential`: the same `authority` and `connection_verify`
  and a token file minted by `POST /_entra/federated-token`.
- `ManagedIdentityCredential`: IMDS via `AZURE_POD_IDENTITY_AUTHORITY_HOST=
  http://127.0.0.1:P`; App Service via `IDENTITY_ENDPOINT=http://127.0.0.1:P/msi/token`
  and `IDENTITY_HEADER` (both plain HTTP, as on Azure).
- `KeyClient` / `CryptographyClient`: `vault_url="https://127.0.0.1:Q"`,
  `verify_challenge_resource=False` (the host is not *.managedhsm.azure.net)
  and `connection_verify=<hsm-cert.pem>`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import select
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import jwt  # PyJWT, installed with msal: an oracle independent of the stand-ins' JWT code
import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.identity import ClientSecretCredential, ManagedIdentityCredential, WorkloadIdentityCredential
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

HERE = Path(__file__).resolve().parent
TENANT = "standin-tenant"
HSM_SCOPE = "https://managedhsm.azure.net/.default"
HSM_RESOURCE = "https://managedhsm.azure.net"
ISSUER = f"https://login.microsoftonline.com/{TENANT}/v2.0"
# Principals known to the Entra stand-in; none of these are real secrets.
SECRET_CLIENT, SECRET_OID, SECRET = "app-secret-client", "oid-app-secret", "local-secret-value-0123"
OTHER_CLIENT, OTHER_OID, OTHER_SECRET = "other-client", "oid-other", "other-secret-value-0123"
WORKLOAD_CLIENT, WORKLOAD_OID = "app-workload-client", "oid-app-workload"
WORKLOAD_SUBJECT = "system:serviceaccount:cmk:cmk-ingest"
SYSTEM_MI_CLIENT, SYSTEM_MI_OID = "system-mi-client", "oid-system-mi"
USER_MI_CLIENT, USER_MI_OID = "user-mi-client", "oid-user-mi"
IDENTITY_HEADER = "local-identity-header-0123"
PRINCIPALS = {
    "tenant": TENANT,
    "apps": [{"client_id": SECRET_CLIENT, "object_id": SECRET_OID, "secret": SECRET},
             {"client_id": OTHER_CLIENT, "object_id": OTHER_OID, "secret": OTHER_SECRET}],
    "workload": [{"client_id": WORKLOAD_CLIENT, "object_id": WORKLOAD_OID, "subject": WORKLOAD_SUBJECT}],
    "managed": [{"client_id": SYSTEM_MI_CLIENT, "object_id": SYSTEM_MI_OID, "system_assigned": True},
                {"client_id": USER_MI_CLIENT, "object_id": USER_MI_OID}],
    "identity_header": IDENTITY_HEADER,
}
OAEP256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
OAEP1 = padding.OAEP(mgf=padding.MGF1(hashes.SHA1()), algorithm=hashes.SHA1(), label=None)
ISSUED_TOKENS: list[str] = []  # every token seen, to check that none reached a log


# -- processes ---------------------------------------------------------------------


@dataclass
class StandIn:
    proc: subprocess.Popen
    http: str
    https: str
    cert: str
    log: Path

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start(name: str, args: list[str], state_dir: Path, timeout: float = 20.0) -> StandIn:
    log = state_dir / f"{name}.log"
    proc = subprocess.Popen([sys.executable, str(HERE / f"{name}.py"), "--state-dir", str(state_dir), *args],
                            stdout=subprocess.PIPE, stderr=log.open("wb"), text=True)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 0.2)
        if ready:
            line = proc.stdout.readline()
            if line.startswith(f"{name} listening on "):
                http, https = line.split()[-2:]
                return StandIn(proc, http, https, str(state_dir / f"{name}-cert.pem"), log)
        if proc.poll() is not None:
            break
    proc.kill()
    raise RuntimeError(f"{name}.py did not start: {log.read_text()[-2000:]}")


def call(method: str, url: str, body=None, headers: dict | None = None, form: dict | None = None):
    """(status, headers, parsed JSON or raw text)."""
    data = None
    h = dict(headers or {})
    if form is not None:
        data = urllib.parse.urlencode(form).encode()
        h.setdefault("Content-Type", "application/x-www-form-urlencoded")
    elif body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(url, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            status, hdrs, raw = r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        status, hdrs, raw = e.code, e.headers, e.read()
    try:
        return status, hdrs, json.loads(raw)
    except ValueError:
        return status, hdrs, raw.decode(errors="replace")


@dataclass
class Env:
    entra: StandIn
    hsm: StandIn
    keys: dict = field(default_factory=dict)

    def entra_admin(self, method: str, path: str, body=None) -> dict:
        status, _, out = call(method, f"{self.entra.http}/_entra/{path}", body if body is not None else
                              ({} if method == "POST" else None))
        assert status == 200, out
        return out

    def hsm_admin(self, method: str, path: str, body=None) -> dict:
        status, _, out = call(method, f"{self.hsm.http}/_admin/{path}", body)
        assert status == 200, out
        return out

    def token(self, client_id=SECRET_CLIENT, secret=SECRET, scope=HSM_SCOPE) -> str:
        status, _, out = call("POST", f"{self.entra.http}/{TENANT}/oauth2/v2.0/token",
                              form={"grant_type": "client_credentials", "client_id": client_id,
                                    "client_secret": secret, "scope": scope})
        assert status == 200, out
        ISSUED_TOKENS.append(out["access_token"])
        return out["access_token"]

    def hsm_call(self, method: str, path: str, body=None, token: str | None = None, api_version="2025-07-01",
                 base: str | None = None):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        query = f"?api-version={api_version}" if api_version is not None else ""
        return call(method, f"{base or self.hsm.http}{path}{query}", body, headers)

    def secret_credential(self, client_id=SECRET_CLIENT, secret=SECRET) -> ClientSecretCredential:
        return ClientSecretCredential(TENANT, client_id, secret, authority=self.entra.https,
                                      disable_instance_discovery=True, connection_verify=self.entra.cert)

    def key_client(self, credential, vault_url: str | None = None, **kwargs) -> KeyClient:
        return KeyClient(vault_url=vault_url or self.hsm.https, credential=credential,
                         verify_challenge_resource=False, connection_verify=self.hsm.cert, **kwargs)

    def crypto_client(self, key, credential) -> CryptographyClient:
        return CryptographyClient(key, credential=credential, verify_challenge_resource=False,
                                  connection_verify=self.hsm.cert)

    def new_key(self, size=2048, ops=("wrapKey", "unwrapKey")) -> tuple[str, str]:
        """A fresh key (name, version): the secret app may get/wrap/unwrap it,
        the other app may only wrap/unwrap (so its SDK client wraps remotely)."""
        name = f"kek-{uuid.uuid4().hex[:8]}"
        out = self.hsm_admin("POST", "keys", {"name": name, "size": size, "ops": list(ops)})
        self.hsm_admin("POST", "grants", {"key": name, "object_id": SECRET_OID, "ops": ["get", "wrapKey", "unwrapKey"]})
        self.hsm_admin("POST", "grants", {"key": name, "object_id": OTHER_OID, "ops": ["wrapKey", "unwrapKey"]})
        return name, out["version"]

    def tls_kid(self, name: str, version: str) -> str:
        return f"{self.hsm.https}/keys/{name}/{version}"

    def private_key(self, name: str, version: str) -> rsa.RSAPrivateKey:
        pem = self.hsm_admin("GET", f"keys/{name}/{version}/private-pem")["pem"]
        return serialization.load_pem_private_key(pem.encode(), password=None)

    def stats(self, name: str) -> dict:
        by_key = self.hsm_admin("GET", "stats")["by_key"].get(name, {})
        return {k: by_key.get(k, 0) for k in ("get", "wrapkey", "unwrapkey", "401", "403", "404", "429")}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    state = tmp_path_factory.mktemp("standins")
    (state / "principals.json").write_text(json.dumps(PRINCIPALS))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NO_PROXY", "127.0.0.1,localhost")
        entra = start("entra", ["--principals", str(state / "principals.json")], state)
        try:
            hsm = start("hsm", ["--tenant", TENANT, "--jwks", f"{entra.http}/{TENANT}/discovery/v2.0/keys",
                                "--issuer", ISSUER], state)
        except Exception:
            entra.stop()
            raise
        try:
            yield Env(entra, hsm)
        finally:
            hsm.stop()
            entra.stop()


@pytest.fixture
def clean_identity_env(monkeypatch):
    for name in ("AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_CLIENT_SECRET", "AZURE_FEDERATED_TOKEN_FILE",
                 "AZURE_AUTHORITY_HOST", "IDENTITY_ENDPOINT", "IDENTITY_HEADER", "IDENTITY_SERVER_THUMBPRINT",
                 "IMDS_ENDPOINT", "MSI_ENDPOINT", "MSI_SECRET", "AZURE_POD_IDENTITY_AUTHORITY_HOST",
                 "AZURE_REGIONAL_AUTHORITY_NAME"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def b64u(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64u(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def verified_claims(env: Env, token: str, audience=HSM_RESOURCE) -> dict:
    """Claims after PyJWT checked signature, aud, iss, exp, nbf, iat."""
    ISSUED_TOKENS.append(token)
    status, _, jwks = call("GET", f"{env.entra.http}/{TENANT}/discovery/v2.0/keys")
    assert status == 200
    kid = jwt.get_unverified_header(token)["kid"]
    jwk = next(k for k in jwks["keys"] if k["kid"] == kid)
    return jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["RS256"], audience=audience, issuer=ISSUER,
                      options={"require": ["exp", "nbf", "iat", "aud", "iss", "sub"]})


def assert_app_token(claims: dict, client_id: str, object_id: str, lifetime: int = 3600):
    now = time.time()
    assert claims["tid"] == TENANT
    assert claims["oid"] == claims["sub"] == object_id
    assert claims["appid"] == claims["azp"] == client_id
    assert abs(claims["exp"] - (now + lifetime)) < 30
    assert claims["nbf"] <= now and claims["iat"] <= now
    assert len(claims["jti"]) >= 16


class FixedCredential:
    """A TokenCredential that always returns one given token (valid for an
    hour as far as the SDK knows): lets a test present a bad token."""

    def __init__(self, token: str):
        self.token, self.calls = token, 0

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        self.calls += 1
        return AccessToken(self.token, int(time.time()) + 3600)


# -- Entra ID ------------------------------------------------------------------------


def test_client_secret_credential_gets_a_verifiable_token(env):
    token = env.secret_credential().get_token(HSM_SCOPE)
    assert abs(token.expires_on - (time.time() + 3600)) < 30
    claims = verified_claims(env, token.token)
    assert_app_token(claims, SECRET_CLIENT, SECRET_OID)
    header = jwt.get_unverified_header(token.token)
    assert header["alg"] == "RS256" and header["typ"] == "JWT"


def test_client_secret_credential_sees_entra_refusals(env):
    with pytest.raises(ClientAuthenticationError) as e:
        env.secret_credential(secret="wrong-secret").get_token(HSM_SCOPE)
    assert "AADSTS7000215" in str(e.value) and "wrong-secret" not in str(e.value)
    with pytest.raises(ClientAuthenticationError) as e:
        env.secret_credential(client_id="no-such-client").get_token(HSM_SCOPE)
    assert "AADSTS700016" in str(e.value)


def test_token_endpoint_refusals_are_shaped_like_entra(env):
    url = f"{env.entra.http}/{TENANT}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": SECRET_CLIENT, "client_secret": "wrong",
            "scope": HSM_SCOPE}
    status, headers, body = call("POST", url, form=form, headers={"client-request-id": "req-1234"})
    assert status == 401 and headers["client-request-id"] == "req-1234"
    assert set(body) == {"error", "error_description", "error_codes", "timestamp", "trace_id", "correlation_id"}
    assert body["error"] == "invalid_client" and body["error_codes"] == [7000215]
    assert body["correlation_id"] == "req-1234"
    d = body["error_description"]
    assert d.startswith("AADSTS7000215: Invalid client secret provided.")
    assert f"Trace ID: {body['trace_id']} Correlation ID: req-1234 Timestamp: {body['timestamp']}" in d
    _, headers, _ = call("POST", url, form=form, headers={"x-client-request-id": "req-5678"})
    assert headers["client-request-id"] == "req-5678"

    cases = [
        ({**form, "client_secret": SECRET, "scope": f"{HSM_RESOURCE}/keys.read"}, 400, "invalid_scope", 1002012),
        ({**form, "client_secret": SECRET, "scope": "not a scope/.default"}, 400, "invalid_scope", 70011),
        ({**form, "client_id": "no-such-client"}, 400, "unauthorized_client", 700016),
        ({k: v for k, v in form.items() if k != "grant_type"}, 400, "invalid_request", 900144),
        ({**form, "grant_type": "password"}, 400, "unsupported_grant_type", 70003),
        ({k: v for k, v in form.items() if k != "client_secret"}, 401, "invalid_client", 7000218),
    ]
    for f, want_status, error, code in cases:
        status, _, body = call("POST", url, form=f)
        assert (status, body["error"], body["error_codes"]) == (want_status, error, [code]), f
        assert body["error_description"].startswith(f"AADSTS{code}: ")
    status, _, body = call("POST", f"{env.entra.http}/other-tenant/oauth2/v2.0/token", form=form)
    assert status == 400 and body["error_codes"] == [90002]


def test_discovery_documents(env):
    status, _, config = call("GET", f"{env.entra.http}/{TENANT}/v2.0/.well-known/openid-configuration")
    assert status == 200 and config["issuer"] == ISSUER
    assert config["token_endpoint"] == f"{env.entra.http}/{TENANT}/oauth2/v2.0/token"
    assert config["jwks_uri"] == f"{env.entra.http}/{TENANT}/discovery/v2.0/keys"
    status, _, jwks = call("GET", config["jwks_uri"])
    # Several keys, as Entra publishes, each with its certificate; the key
    # tokens are signed with is one of them.
    assert len(jwks["keys"]) == 4 and len({k["kid"] for k in jwks["keys"]}) == 4
    for key in jwks["keys"]:
        assert {"kty", "use", "kid", "x5t", "n", "e", "x5c", "issuer"} <= set(key) and "alg" not in key
        assert (key["kty"], key["use"], key["issuer"]) == ("RSA", "sig", ISSUER)
        assert int.from_bytes(unb64u(key["n"]), "big").bit_length() == 2048
        der = base64.b64decode(key["x5c"][0])
        thumbprint = base64.urlsafe_b64encode(hashlib.sha1(der).digest()).rstrip(b"=").decode()
        assert key["kid"] == key["x5t"] == thumbprint
        cert = x509.load_der_x509_certificate(der)
        assert cert.public_key().public_numbers() == rsa.RSAPublicNumbers(
            int.from_bytes(unb64u(key["e"]), "big"), int.from_bytes(unb64u(key["n"]), "big"))
    status, _, body = call("GET", f"{env.entra.http}/other-tenant/v2.0/.well-known/openid-configuration")
    assert status == 400 and body["error_codes"] == [90002]


def test_token_endpoint_faults(env):
    url = f"{env.entra.http}/{TENANT}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": SECRET_CLIENT, "client_secret": SECRET,
            "scope": HSM_SCOPE}
    env.entra_admin("POST", "faults", [{"status": 503, "retry_after": 2}])
    status, headers, body = call("POST", url, form=form)
    assert status == 503 and headers["Retry-After"] == "2" and body["error"] == "temporarily_unavailable"
    status, _, body = call("POST", url, form=form)
    assert status == 200, "one fault, one refusal"
    ISSUED_TOKENS.append(body["access_token"])


def test_a_withdrawn_signing_key_leaves_the_published_set_until_reset(env):
    keys = f"{env.entra.http}/{TENANT}/discovery/v2.0/keys"
    token = call("POST", f"{env.entra.http}/{TENANT}/oauth2/v2.0/token", form={
        "grant_type": "client_credentials", "client_id": SECRET_CLIENT, "client_secret": SECRET,
        "scope": HSM_SCOPE})[2]["access_token"]
    ISSUED_TOKENS.append(token)
    kid = jwt.get_unverified_header(token)["kid"]
    before = [k["kid"] for k in call("GET", keys)[2]["keys"]]
    assert kid in before and len(before) == 4
    try:
        assert env.entra_admin("POST", "withdraw-key", {}) == {"withdrawn": [kid]}
        after = [k["kid"] for k in call("GET", keys)[2]["keys"]]
        assert after == [k for k in before if k != kid]
        assert call("POST", f"{env.entra.http}/_entra/withdraw-key", {"kid": "nope"})[0] == 400
        assert call("POST", f"{env.entra.http}/_entra/withdraw-key", ["not", "an", "object"])[0] == 400
    finally:
        env.entra_admin("POST", "reset")
    assert [k["kid"] for k in call("GET", keys)[2]["keys"]] == before


def test_signing_key_faults_are_apart_from_token_faults(env):
    keys = f"{env.entra.http}/{TENANT}/discovery/v2.0/keys"
    url = f"{env.entra.http}/{TENANT}/oauth2/v2.0/token"
    form = {"grant_type": "client_credentials", "client_id": SECRET_CLIENT, "client_secret": SECRET,
            "scope": HSM_SCOPE}
    env.entra_admin("POST", "faults", [{"status": 500, "route": "jwks"}])
    status, _, body = call("POST", url, form=form)
    assert status == 200, "a signing-key fault is not the token endpoint's"
    ISSUED_TOKENS.append(body["access_token"])
    status, _, body = call("GET", keys)
    assert status == 500 and body["error"] == "temporarily_unavailable"
    status, _, body = call("GET", keys)
    assert status == 200 and body["keys"], "one fault, one refusal"


def test_workload_identity_credential(env, tmp_path, clean_identity_env):
    minted = env.entra_admin("POST", "federated-token", {"client_id": WORKLOAD_CLIENT})
    assert minted["subject"] == WORKLOAD_SUBJECT
    token_file = tmp_path / "sa-token"
    token_file.write_text(minted["token"])
    cred = WorkloadIdentityCredential(tenant_id=TENANT, client_id=WORKLOAD_CLIENT, token_file_path=str(token_file),
                                      authority=env.entra.https, connection_verify=env.entra.cert)
    before = env.entra_admin("GET", "stats")["workload_identity"]
    claims = verified_claims(env, cred.get_token(HSM_SCOPE).token)
    assert_app_token(claims, WORKLOAD_CLIENT, WORKLOAD_OID)
    assert env.entra_admin("GET", "stats")["workload_identity"] == before + 1


def test_federated_assertions_are_checked(env):
    url = f"{env.entra.http}/{TENANT}/oauth2/v2.0/token"

    def exchange(assertion: str):
        status, _, body = call("POST", url, form={
            "grant_type": "client_credentials", "client_id": WORKLOAD_CLIENT, "scope": HSM_SCOPE,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion})
        return status, body.get("error_codes", [None])[0], body

    good = env.entra_admin("POST", "federated-token", {"client_id": WORKLOAD_CLIENT})["token"]
    status, _, body = exchange(good)
    assert status == 200 and verified_claims(env, body["access_token"])["oid"] == WORKLOAD_OID

    def mint(**kw) -> str:
        return env.entra_admin("POST", "federated-token", {"subject": WORKLOAD_SUBJECT, **kw})["token"]

    assert exchange(mint(subject="system:serviceaccount:other:intruder"))[:2] == (401, 700213)
    assert exchange(mint(audience="api://SomethingElse"))[:2] == (401, 700212)
    assert exchange(mint(issuer="https://issuer.example/"))[:2] == (401, 700211)
    assert exchange(mint(lifetime=-900))[:2] == (401, 700024)
    h, p, s = good.split(".")
    forged = f"{h}.{p}.{b64u(bytes(len(unb64u(s))))}"
    assert exchange(forged)[:2] == (401, 700027)
    assert exchange("not-a-jwt")[:2] == (401, 50027)


def test_managed_identity_credential_via_imds(env, clean_identity_env):
    clean_identity_env.setenv("AZURE_POD_IDENTITY_AUTHORITY_HOST", env.entra.http)
    claims = verified_claims(env, ManagedIdentityCredential().get_token(HSM_SCOPE).token)
    assert_app_token(claims, SYSTEM_MI_CLIENT, SYSTEM_MI_OID)
    claims = verified_claims(env, ManagedIdentityCredential(client_id=USER_MI_CLIENT).get_token(HSM_SCOPE).token)
    assert_app_token(claims, USER_MI_CLIENT, USER_MI_OID)

    url = f"{env.entra.http}/metadata/identity/oauth2/token?api-version=2018-02-01&resource={HSM_RESOURCE}"
    status, _, body = call("GET", url)
    assert (status, body) == (400, {"error": "invalid_request",
                                    "error_description": "Required metadata header not specified"})
    status, _, body = call("GET", url + f"&client_id={USER_MI_CLIENT}", headers={"Metadata": "true"})
    assert status == 200
    assert set(body) == {"access_token", "client_id", "expires_in", "expires_on", "ext_expires_in", "not_before",
                         "resource", "token_type"}
    assert all(isinstance(v, str) for v in body.values())
    assert body["expires_in"] == "3600" and abs(int(body["expires_on"]) - time.time() - 3600) < 30
    assert (body["resource"], body["token_type"], body["client_id"]) == (HSM_RESOURCE, "Bearer", USER_MI_CLIENT)
    ISSUED_TOKENS.append(body["access_token"])
    status, _, body = call("GET", url + "&client_id=unknown-mi", headers={"Metadata": "true"})
    assert (status, body["error_description"]) == (400, "Identity not found")


def test_managed_identity_credential_via_app_service(env, clean_identity_env):
    clean_identity_env.setenv("IDENTITY_ENDPOINT", f"{env.entra.http}/msi/token")
    clean_identity_env.setenv("IDENTITY_HEADER", IDENTITY_HEADER)
    claims = verified_claims(env, ManagedIdentityCredential(client_id=USER_MI_CLIENT).get_token(HSM_SCOPE).token)
    assert_app_token(claims, USER_MI_CLIENT, USER_MI_OID)
    claims = verified_claims(env, ManagedIdentityCredential().get_token(HSM_SCOPE).token)
    assert claims["oid"] == SYSTEM_MI_OID

    url = f"{env.entra.http}/msi/token?api-version=2019-08-01&resource={HSM_RESOURCE}"
    assert call("GET", url)[0] == 401
    assert call("GET", url, headers={"X-IDENTITY-HEADER": "wrong"})[0] == 401
    status, _, body = call("GET", url, headers={"X-IDENTITY-HEADER": IDENTITY_HEADER})
    assert status == 200 and set(body) == {"access_token", "expires_on", "resource", "token_type", "client_id"}
    assert isinstance(body["expires_on"], str) and abs(int(body["expires_on"]) - time.time() - 3600) < 30
    ISSUED_TOKENS.append(body["access_token"])


# -- Managed HSM ---------------------------------------------------------------------


def test_sdk_challenge_flow_and_key_bundles(env):
    name, v1 = env.new_key()
    v2 = env.hsm_admin("POST", f"keys/{name}/rotate")["version"]
    cred = env.secret_credential()
    # A host no other test uses, so the SDK's process-wide challenge cache is cold.
    vault = env.hsm.https.replace("127.0.0.1", "localhost")
    before = env.stats(name)
    client = env.key_client(cred, vault_url=vault)
    latest = client.get_key(name)
    after = env.stats(name)
    assert after["401"] == before["401"] + 1, "the SDK's first request is unauthenticated"
    assert after["get"] == before["get"] + 1
    assert latest.id == f"{vault}/keys/{name}/{v2}" and latest.properties.version == v2
    assert latest.key_type == "RSA-HSM" and sorted(latest.key_operations) == ["unwrapKey", "wrapKey"]
    p = latest.properties
    assert p.enabled is True and p.recovery_level == "Recoverable+Purgeable" and p.exportable is False
    assert p.not_before is None and p.expires_on is None and p.created_on is not None
    older = client.get_key(name, v1)
    assert older.properties.version == v1 and older.key.n != latest.key.n
    assert int.from_bytes(older.key.n, "big") == env.private_key(name, v1).public_key().public_numbers().n
    assert env.stats(name)["401"] == after["401"], "no second challenge for a cached one"


def test_sdk_accepts_every_listed_api_version(env):
    name, _ = env.new_key()
    token = env.token()
    for version in ("7.4", "7.5", "7.6", "2025-06-01", "2025-07-01"):
        status, _, body = env.hsm_call("GET", f"/keys/{name}/", token=token, api_version=version)
        assert status == 200 and body["key"]["kty"] == "RSA-HSM", version
    assert env.key_client(env.secret_credential(), api_version="7.4").get_key(name).name == name
    for version, fragment in (("1999-01-01", "The specified version (1999-01-01) is not recognized"),
                              (None, "api-version")):
        status, _, body = env.hsm_call("GET", f"/keys/{name}/", token=token, api_version=version)
        assert status == 400 and body["error"]["code"] == "BadParameter" and fragment in body["error"]["message"]


@pytest.mark.parametrize("algorithm", [KeyWrapAlgorithm.rsa_oaep_256, KeyWrapAlgorithm.rsa_oaep])
def test_sdk_wraps_remotely_and_unwraps(env, algorithm):
    name, version = env.new_key()
    crypto = env.crypto_client(env.tls_kid(name, version), env.secret_credential(OTHER_CLIENT, OTHER_SECRET))
    before = env.stats(name)
    wrapped = crypto.wrap_key(algorithm, b"k" * 32)
    after = env.stats(name)
    assert after["wrapkey"] == before["wrapkey"] + 1, "the SDK could not read the key, so it wrapped remotely"
    assert after["403"] == before["403"] + 1, "its attempt to read the key was refused"
    assert wrapped.key_id == env.tls_kid(name, version)
    assert crypto.unwrap_key(algorithm, wrapped.encrypted_key).key == b"k" * 32
    assert env.stats(name)["unwrapkey"] == after["unwrapkey"] + 1
    pad = OAEP256 if algorithm == KeyWrapAlgorithm.rsa_oaep_256 else OAEP1
    assert env.private_key(name, version).decrypt(wrapped.encrypted_key, pad) == b"k" * 32


def test_sdk_wraps_locally_when_it_can_read_the_key(env):
    name, _ = env.new_key()
    key = env.key_client(env.secret_credential()).get_key(name)
    crypto = env.crypto_client(key, env.secret_credential())
    before = env.stats(name)
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"l" * 32)
    assert env.stats(name)["wrapkey"] == before["wrapkey"], "wrapped locally with the public key"
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == b"l" * 32
    assert env.stats(name)["unwrapkey"] == before["unwrapkey"] + 1


def test_values_interoperate_with_plain_rsa_oaep_256(env):
    name, version = env.new_key()
    token = env.token()
    # Wrapped by the stand-in (input in padded standard base64url), unwrapped with plain RSA math.
    padded = base64.urlsafe_b64encode(b"d" * 32).decode()
    assert padded.endswith("=")
    status, _, out = env.hsm_call("POST", f"/keys/{name}/{version}/wrapkey", {"alg": "RSA-OAEP-256", "value": padded},
                                  token=token)
    assert status == 200 and "=" not in out["value"] and out["kid"] == f"{env.hsm.http}/keys/{name}/{version}"
    assert env.private_key(name, version).decrypt(unb64u(out["value"]), OAEP256) == b"d" * 32
    # Wrapped with plain RSA math from the public key the SDK read, unwrapped through the SDK and the stand-in.
    jwk = env.key_client(env.secret_credential()).get_key(name, version).key
    public = rsa.RSAPublicNumbers(int.from_bytes(jwk.e, "big"), int.from_bytes(jwk.n, "big")).public_key()
    local = public.encrypt(b"e" * 32, OAEP256)
    crypto = env.crypto_client(env.tls_kid(name, version), env.secret_credential(OTHER_CLIENT, OTHER_SECRET))
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, local).key == b"e" * 32
    # SHA-1 OAEP is not SHA-256 OAEP: the stand-in's unwrap fails as the service's does.
    status, _, out = env.hsm_call("POST", f"/keys/{name}/{version}/unwrapkey",
                                  {"alg": "RSA-OAEP-256", "value": b64u(public.encrypt(b"f" * 32, OAEP1))},
                                  token=token)
    assert status == 400 and out["error"] == {"code": "BadParameter",
                                              "message": "Error occurred while decoding OAEP padding."}


def test_malformed_key_operations_are_bad_parameters(env):
    name, version = env.new_key()
    token = env.token()
    for body in ({"alg": "RSA-OAEP-256", "value": "not base64!"}, {"alg": "RSA1_5", "value": b64u(b"x" * 32)},
                 {"value": b64u(b"x" * 32)}, {"alg": "RSA-OAEP-256"}, b"{not json"):
        status, _, out = env.hsm_call("POST", f"/keys/{name}/{version}/wrapkey", body, token=token)
        assert status == 400 and out["error"]["code"] == "BadParameter", body


def test_3072_bit_keys(env):
    name, version = env.new_key(size=3072)
    key = env.key_client(env.secret_credential()).get_key(name)
    assert int.from_bytes(key.key.n, "big").bit_length() == 3072
    crypto = env.crypto_client(key.id, env.secret_credential(OTHER_CLIENT, OTHER_SECRET))
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"t" * 32)
    assert len(wrapped.encrypted_key) == 384
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == b"t" * 32


def test_disabled_key_refuses_unwrap_but_still_wraps(env):
    name, version = env.new_key()
    crypto = env.crypto_client(env.tls_kid(name, version), env.secret_credential(OTHER_CLIENT, OTHER_SECRET))
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"x" * 32).encrypted_key
    env.hsm_admin("POST", f"keys/{name}/state", {"enabled": False})
    with pytest.raises(HttpResponseError) as e:
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert e.value.status_code == 403 and e.value.error.code == "Forbidden"
    assert e.value.error.innererror == {"code": "KeyDisabled"}
    assert e.value.error.message == "Operation unwrapKey is not allowed on a disabled key."
    before = env.stats(name)["wrapkey"]
    again = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"y" * 32)
    assert env.stats(name)["wrapkey"] == before + 1, "a disabled key still wraps, remotely"
    assert env.private_key(name, version).decrypt(again.encrypted_key, OAEP256) == b"y" * 32
    assert env.key_client(env.secret_credential()).get_key(name).properties.enabled is False
    env.hsm_admin("POST", f"keys/{name}/state", {"enabled": True})
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"x" * 32


@pytest.mark.parametrize("state,inner", [({"exp": -60}, "KeyExpired"), ({"nbf": 3600}, "KeyNotYetValid")])
def test_key_outside_its_validity_refuses_wrap_but_still_unwraps(env, state, inner):
    # As Key Vault documents: outside nbf/exp a key still decrypts and
    # unwraps (recovery of old data) but must not wrap new keys. The
    # component refuses both itself (fail closed).
    name, version = env.new_key()
    crypto = env.crypto_client(env.tls_kid(name, version), env.secret_credential(OTHER_CLIENT, OTHER_SECRET))
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"v" * 32).encrypted_key
    field_, offset = next(iter(state.items()))
    env.hsm_admin("POST", f"keys/{name}/state", {field_: int(time.time()) + offset})
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"v" * 32
    props = env.key_client(env.secret_credential()).get_key(name).properties
    assert (props.expires_on if field_ == "exp" else props.not_before) is not None
    status, _, body = env.hsm_call("POST", f"/keys/{name}/{version}/wrapkey",
                                   {"alg": "RSA-OAEP-256", "value": b64u(b"w" * 32)}, token=env.token())
    assert status == 403 and body["error"]["innererror"] == {"code": inner}, body
    env.hsm_admin("POST", f"keys/{name}/state", {field_: None})
    status, _, _ = env.hsm_call("POST", f"/keys/{name}/{version}/wrapkey",
                                {"alg": "RSA-OAEP-256", "value": b64u(b"w" * 32)}, token=env.token())
    assert status == 200


def test_operation_outside_key_ops_is_forbidden(env):
    name, version = env.new_key(ops=("wrapKey",))
    crypto = env.crypto_client(env.tls_kid(name, version), env.secret_credential(OTHER_CLIENT, OTHER_SECRET))
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"o" * 32).encrypted_key
    with pytest.raises(HttpResponseError) as e:
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert e.value.status_code == 403 and e.value.error.innererror == {"code": "KeyOperationForbidden"}


def test_revoked_grant_is_forbidden(env):
    name, version = env.new_key()
    crypto = env.crypto_client(env.tls_kid(name, version), env.secret_credential(OTHER_CLIENT, OTHER_SECRET))
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"g" * 32).encrypted_key
    env.hsm_admin("POST", "revoke", {"key": name, "object_id": OTHER_OID, "ops": ["unwrapKey"]})
    with pytest.raises(HttpResponseError) as e:
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    assert e.value.status_code == 403 and e.value.error.code == "Forbidden"
    assert e.value.error.innererror == {"code": "AccessDenied"}
    assert e.value.error.message.startswith("Caller is not authorized to perform action on resource.")
    assert "Microsoft.KeyVault/managedHsm/keys/unwrap/action" in e.value.error.message
    assert f"oid={OTHER_OID}" in e.value.error.message
    env.hsm_admin("POST", "grants", {"key": name, "object_id": OTHER_OID, "ops": ["wrapKey", "unwrapKey"]})
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"g" * 32
    # A grant at scope "/" covers every key.
    env.hsm_admin("POST", "revoke", {"key": name, "object_id": OTHER_OID})
    env.hsm_admin("POST", "grants", {"key": "/", "object_id": OTHER_OID, "ops": ["unwrapKey"]})
    try:
        assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped).key == b"g" * 32
    finally:
        env.hsm_admin("POST", "revoke", {"key": "/", "object_id": OTHER_OID})


def test_deleted_version_is_not_found(env):
    name, old = env.new_key()
    new = env.hsm_admin("POST", f"keys/{name}/rotate")["version"]
    crypto_old = env.crypto_client(env.tls_kid(name, old), env.secret_credential(OTHER_CLIENT, OTHER_SECRET))
    wrapped = crypto_old.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"z" * 32).encrypted_key
    env.hsm_admin("DELETE", f"keys/{name}/{old}")
    client = env.key_client(env.secret_credential())
    with pytest.raises(ResourceNotFoundError) as e:
        client.get_key(name, old)
    assert e.value.error.code == "KeyNotFound" and f"{name}/{old}" in e.value.error.message
    assert client.get_key(name).properties.version == new
    with pytest.raises(ResourceNotFoundError):
        crypto_old.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
    env.hsm_admin("DELETE", f"keys/{name}")
    with pytest.raises(ResourceNotFoundError):
        client.get_key(name)


def test_bad_tokens_are_refused(env):
    name, _ = env.new_key()
    # No token at all: the challenge the SDK relies on.
    status, headers, body = env.hsm_call("GET", f"/keys/{name}/")
    assert status == 401 and body["error"]["code"] == "Unauthorized"
    assert headers["WWW-Authenticate"] == (f'Bearer authorization="https://login.microsoftonline.com/{TENANT}", '
                                           'resource="https://managedhsm.azure.net"')
    # Through the SDK: a token for another audience, an expired token.
    wrong_audience = env.token(scope="https://vault.azure.net/.default")
    with pytest.raises(ClientAuthenticationError) as e:
        env.key_client(FixedCredential(wrong_audience)).get_key(name)
    assert e.value.status_code == 401 and "AKV10022: Invalid audience" in e.value.error.message
    env.entra_admin("POST", "config", {"lifetime": -600})
    try:
        expired = env.token()
    finally:
        env.entra_admin("POST", "config", {"lifetime": 3600})
    with pytest.raises(ClientAuthenticationError) as e:
        env.key_client(FixedCredential(expired)).get_key(name)
    assert e.value.status_code == 401 and "TokenExpired" in e.value.error.message
    # Forged: the right claims signed by a key the Entra stand-in never had, under its kid or another.
    good = env.token()
    header, claims = jwt.get_unverified_header(good), jwt.decode(good, options={"verify_signature": False})
    foreign = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    for kid, message in ((header["kid"], "InvalidSignature"), ("someone-elses-key", "AKV10046")):
        forged = jwt.encode(claims, foreign, algorithm="RS256", headers={"kid": kid})
        with pytest.raises(ClientAuthenticationError) as e:
            env.key_client(FixedCredential(forged)).get_key(name)
        assert e.value.status_code == 401 and message in e.value.error.message
    # The same claims with the real key pass: the refusals above were about the signature.
    status, _, _ = env.hsm_call("GET", f"/keys/{name}/", token=good)
    assert status == 200


def test_issuer_is_checked(env, tmp_path):
    """An HSM bound to another tenant's issuer refuses this tenant's
    (correctly signed, right-audience) tokens."""
    other = start("hsm", ["--tenant", "other-tenant", "--jwks", f"{env.entra.http}/{TENANT}/discovery/v2.0/keys"],
                  tmp_path)
    try:
        call("POST", f"{other.http}/_admin/keys", {"name": "k"})
        call("POST", f"{other.http}/_admin/grants", {"key": "/", "object_id": SECRET_OID, "ops": ["get"]})
        token = env.token()
        status, headers, body = env.hsm_call("GET", "/keys/k/", token=token, base=other.http)
        assert status == 401 and body["error"]["message"].startswith("AKV10032: Invalid issuer.")
        assert 'authorization="https://login.microsoftonline.com/other-tenant"' in headers["WWW-Authenticate"]
        name, _ = env.new_key()
        assert env.hsm_call("GET", f"/keys/{name}/", token=token)[0] == 200
    finally:
        other.stop()


def test_one_token_for_many_sdk_calls(env):
    name, version = env.new_key()
    env.entra_admin("POST", "reset")
    cred = env.secret_credential()
    client = env.key_client(cred)
    crypto = env.crypto_client(env.tls_kid(name, version), cred)
    for _ in range(3):
        client.get_key(name)
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"c" * 32)
    for _ in range(3):
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
    stats = env.entra_admin("GET", "stats")
    assert stats["by_client_resource"] == {SECRET_CLIENT: {HSM_RESOURCE: 1}}
    assert stats["client_secret"] == 1 and stats["issued"] == 1


def test_throttling_is_shaped_for_the_sdks_retry(env):
    name, _ = env.new_key()
    before = env.hsm_admin("GET", "stats")
    env.hsm_admin("POST", "faults", [{"status": 429, "retry_after": 1, "op": "get"}])
    started = time.monotonic()
    assert env.key_client(env.secret_credential()).get_key(name).name == name
    assert time.monotonic() - started >= 0.9, "the SDK waited for Retry-After"
    after = env.hsm_admin("GET", "stats")
    assert after["faulted"] == before["faulted"] + 1 and after["pending_faults"] == 0
    assert after["by_key"][name]["429"] == 1
    env.hsm_admin("POST", "faults", {"status": 503})
    status, headers, body = env.hsm_call("GET", f"/keys/{name}/", token=env.token())
    assert status == 503 and body["error"]["code"] == "ServiceUnavailable"
    env.hsm_admin("POST", "faults", {"status": 429, "retry_after": 7})
    status, headers, body = env.hsm_call("GET", f"/keys/{name}/", token=env.token())
    assert status == 429 and headers["Retry-After"] == "7" and body["error"]["code"] == "Throttled"


def test_admin_routes_are_served_over_plain_http_only(env):
    ctx = ssl.create_default_context(cafile=env.hsm.cert)
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{env.hsm.https}/_admin/stats", context=ctx, timeout=10)
    assert e.value.code == 404
    assert call("GET", f"{env.hsm.http}/_admin/stats")[0] == 200


def test_no_secret_or_token_reaches_the_logs(env):
    assert ISSUED_TOKENS, "earlier tests issued tokens"
    logs = env.entra.log.read_text() + env.hsm.log.read_text()
    assert f"POST /{TENANT}/oauth2/v2.0/token -> 200" in logs and "GET /keys/" in logs
    for secret in (SECRET, OTHER_SECRET, IDENTITY_HEADER, *ISSUED_TOKENS):
        assert secret not in logs
    for token in ISSUED_TOKENS:
        assert token.split(".")[2] not in logs
