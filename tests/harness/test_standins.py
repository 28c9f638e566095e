"""The Managed HSM and Entra ID stand-ins are faithful where the component
relies on them: the official `azure-keyvault-keys` SDK reads keys, wraps and
unwraps through them, and sees the errors it sees from the service; values
wrapped by the stand-in unwrap with plain RSA-OAEP-256 math and vice versa."""

import base64
import json
import os
import time
import urllib.error
import urllib.parse
import urllib.request

import pytest
from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.keyvault.keys import KeyClient
from azure.keyvault.keys.crypto import CryptographyClient, KeyWrapAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from harness.stack import KEK_NAME, TENANT


class StandInCredential:
    """A TokenCredential for the SDK that uses the stand-in's client-credentials
    endpoint. (azure-identity's credentials insist on an HTTPS authority with
    instance discovery; the grant itself is the one the component makes.)"""

    def __init__(self, entra_url, client_id, secret):
        self.entra_url, self.client_id, self.secret = entra_url, client_id, secret
        self.calls = 0

    def get_token(self, *scopes, **kwargs):
        self.calls += 1
        form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": self.client_id,
                                       "client_secret": self.secret, "scope": scopes[0]}).encode()
        with urllib.request.urlopen(f"{self.entra_url}/{TENANT}/oauth2/v2.0/token", data=form) as r:
            t = json.load(r)
        return AccessToken(t["access_token"], int(time.time()) + t["expires_in"])

    def get_token_info(self, *scopes, **kwargs):
        from azure.core.credentials import AccessTokenInfo
        t = self.get_token(*scopes)
        return AccessTokenInfo(t.token, t.expires_on)


OAEP256 = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


@pytest.fixture(scope="module")
def cred(stack):
    return StandInCredential(stack.entra_url, "app-secret-client", "local-client-secret-0123")


def key_client(stack, cred):
    return KeyClient(vault_url=stack.hsm_tls_url, credential=cred, verify_challenge_resource=False,
                     connection_verify=stack.hsm_cert)


def test_sdk_reads_the_key_after_the_challenge(stack, cred):
    key = key_client(stack, cred).get_key(KEK_NAME)
    assert key.key_type == "RSA-HSM"
    assert sorted(key.key_operations) == ["unwrapKey", "wrapKey"]
    assert key.properties.enabled and key.properties.recovery_level == "Recoverable+Purgeable"
    assert key.id.startswith(f"{stack.hsm_tls_url}/keys/{KEK_NAME}/")
    again = key_client(stack, cred).get_key(KEK_NAME, key.properties.version)
    assert again.key.n == key.key.n
    assert cred.calls >= 1


def test_sdk_wraps_and_unwraps(stack, cred):
    key = key_client(stack, cred).get_key(KEK_NAME)
    crypto = CryptographyClient(key, credential=cred, verify_challenge_resource=False, connection_verify=stack.hsm_cert)
    before = stack.hsm_admin("GET", "stats")
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"k" * 32)
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == b"k" * 32
    assert stack.hsm_admin("GET", "stats")["unwrapkey"] == before["unwrapkey"] + 1


def test_sdk_wraps_remotely_when_it_cannot_read_the_key(stack):
    stack.hsm_admin("POST", "grants", {"key": KEK_NAME, "object_id": "oid-other", "ops": ["wrapKey", "unwrapKey"]})
    other = StandInCredential(stack.entra_url, "other-client", "other-client-secret-0123")
    kid = key_client(stack, StandInCredential(stack.entra_url, "app-secret-client", "local-client-secret-0123")).get_key(KEK_NAME).id
    crypto = CryptographyClient(kid, credential=other, verify_challenge_resource=False, connection_verify=stack.hsm_cert)
    before = stack.hsm_admin("GET", "stats")
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"r" * 32)
    assert stack.hsm_admin("GET", "stats")["wrapkey"] == before["wrapkey"] + 1
    assert crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key).key == b"r" * 32
    stack.hsm_admin("POST", "grants", {"key": KEK_NAME, "object_id": "oid-other", "ops": []})
    with pytest.raises(HttpResponseError) as e:
        crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped.encrypted_key)
    assert e.value.status_code == 403


def raw(stack, cred, method, path, body=None):
    token = cred.get_token("https://managedhsm.azure.net/.default").token
    req = urllib.request.Request(f"{stack.hsm_url}{path}?api-version=2025-07-01", method=method,
                                 data=json.dumps(body).encode() if body else None,
                                 headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.load(r)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def test_wrapping_matches_plain_rsa_oaep_256(stack, cred):
    status, bundle = raw(stack, cred, "GET", f"/keys/{KEK_NAME}/")
    version = bundle["key"]["kid"].rsplit("/", 1)[1]
    pem = stack.hsm_admin("GET", f"keys/{KEK_NAME}/{version}/private-pem")["pem"]
    private = serialization.load_pem_private_key(pem.encode(), password=None)
    status, out = raw(stack, cred, "POST", f"/keys/{KEK_NAME}/{version}/wrapkey", {"alg": "RSA-OAEP-256", "value": b64u(b"d" * 32)})
    assert status == 200
    assert private.decrypt(base64.urlsafe_b64decode(out["value"] + "=="), OAEP256) == b"d" * 32
    n = int.from_bytes(base64.urlsafe_b64decode(bundle["key"]["n"] + "=="), "big")
    e = int.from_bytes(base64.urlsafe_b64decode(bundle["key"]["e"] + "=="), "big")
    local = rsa.RSAPublicNumbers(e, n).public_key().encrypt(b"l" * 32, OAEP256)
    status, out = raw(stack, cred, "POST", f"/keys/{KEK_NAME}/{version}/unwrapkey", {"alg": "RSA-OAEP-256", "value": b64u(local)})
    assert status == 200 and base64.urlsafe_b64decode(out["value"] + "==") == b"l" * 32


def test_disabled_key_refuses_unwrap_but_still_wraps(stack, cred):
    key = key_client(stack, cred).get_key(KEK_NAME)
    crypto = CryptographyClient(key, credential=cred, verify_challenge_resource=False, connection_verify=stack.hsm_cert)
    wrapped = crypto.wrap_key(KeyWrapAlgorithm.rsa_oaep_256, b"x" * 32).encrypted_key
    stack.hsm_admin("POST", f"keys/{KEK_NAME}/state", {"enabled": False})
    try:
        with pytest.raises(HttpResponseError) as e:
            crypto.unwrap_key(KeyWrapAlgorithm.rsa_oaep_256, wrapped)
        assert e.value.status_code == 403 and "disabled" in str(e.value)
        assert key_client(stack, cred).get_key(KEK_NAME).properties.enabled is False
        status, out = raw(stack, cred, "POST", f"/keys/{KEK_NAME}/{key.properties.version}/wrapkey",
                          {"alg": "RSA-OAEP-256", "value": b64u(b"y" * 32)})
        assert status == 200
        status, out = raw(stack, cred, "POST", f"/keys/{KEK_NAME}/{key.properties.version}/unwrapkey",
                          {"alg": "RSA-OAEP-256", "value": out["value"]})
        assert status == 403 and out["error"]["innererror"]["code"] == "KeyDisabled"
    finally:
        stack.hsm_admin("POST", f"keys/{KEK_NAME}/state", {"enabled": True})


def test_missing_versions_tokens_and_api_versions(stack, cred):
    with pytest.raises(ResourceNotFoundError):
        key_client(stack, cred).get_key(KEK_NAME, "0" * 32)
    req = urllib.request.Request(f"{stack.hsm_url}/keys/{KEK_NAME}/?api-version=2025-07-01")
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 401 and 'resource="https://managedhsm.azure.net"' in e.value.headers["WWW-Authenticate"]
    # A token for another audience is refused.
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": "app-secret-client",
                                   "client_secret": "local-client-secret-0123", "scope": "https://cosmos.azure.com/.default"}).encode()
    with urllib.request.urlopen(f"{stack.entra_url}/{TENANT}/oauth2/v2.0/token", data=form) as r:
        other = json.load(r)["access_token"]
    req = urllib.request.Request(f"{stack.hsm_url}/keys/{KEK_NAME}/?api-version=2025-07-01", headers={"Authorization": f"Bearer {other}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 401 and "audience" in json.loads(e.value.read())["error"]["message"]
    # An expired token is refused.
    stack.entra_admin("POST", "config", {"lifetime": -300})
    try:
        status, out = raw(stack, cred, "GET", f"/keys/{KEK_NAME}/")
        assert status == 401 and "expired" in out["error"]["message"]
    finally:
        stack.entra_admin("POST", "config", {"lifetime": 3600})
    token = cred.get_token("https://managedhsm.azure.net/.default").token
    req = urllib.request.Request(f"{stack.hsm_url}/keys/{KEK_NAME}/?api-version=1999-01-01", headers={"Authorization": f"Bearer {token}"})
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(req)
    assert e.value.code == 400 and json.loads(e.value.read())["error"]["code"] == "BadParameter"


def test_entra_refusals_are_shaped_like_entra(stack):
    form = urllib.parse.urlencode({"grant_type": "client_credentials", "client_id": "app-secret-client",
                                   "client_secret": "wrong", "scope": "https://managedhsm.azure.net/.default"}).encode()
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(f"{stack.entra_url}/{TENANT}/oauth2/v2.0/token", data=form)
    body = json.loads(e.value.read())
    assert e.value.code == 401 and body["error"] == "invalid_client"
    assert body["error_description"].startswith("AADSTS7000215") and body["correlation_id"]
