"""A local Azure Key Vault Managed HSM stand-in for the keys the component
uses: RSA-HSM keys with versions, `wrapkey`/`unwrapkey` (RSA-OAEP-256 and
RSA-OAEP), bearer tokens from the Entra stand-in (`entra.py`), per-key grants
in the style of Managed HSM local RBAC, and the key states that must stop the
component.

Why: no emulator exists for Managed HSM. This process answers as the service
does on the wire, and `test_standins.py` proves the parts marked "SDK" below
with the official `azure-keyvault-keys` 4.11.3 (with `azure-identity` 1.27.0
credentials against the Entra stand-in).

Checked against the official SDK (tests in test_standins.py):
- the challenge flow: a request without a token gets 401 with
  `WWW-Authenticate: Bearer authorization="https://login.microsoftonline.com/{tenant}",
  resource="https://managedhsm.azure.net"`, the SDK asks its credential for
  `https://managedhsm.azure.net/.default` and retries with the bearer token;
- `GET /keys/{name}/` (latest) and `GET /keys/{name}/{version}`: the bundle
  `{"key": {kid, kty: "RSA-HSM", key_ops, n, e}, "attributes": {enabled, created,
  updated, recoveryLevel, recoverableDays, exportable, nbf?, exp?}}` parses into
  `KeyVaultKey` (2048- and 3072-bit keys);
- remote `wrapkey`/`unwrapkey` (`{"alg", "value"}` → `{"kid", "value"}`,
  base64url) round trips with RSA-OAEP-256 and RSA-OAEP, interoperable with
  plain RSA-OAEP math on both sides;
- the errors the SDK raises: 403 (disabled key on unwrap, expired and
  not-yet-valid key on wrap, missing grant, operation outside key_ops) as
  `HttpResponseError`
  carrying `error.code` and `error.innererror.code`; 404 as
  `ResourceNotFoundError`; 401 for a wrong audience, an expired token and a
  foreign signature as `ClientAuthenticationError`; a 429 with `Retry-After`
  that the SDK retries;
- one token per credential across many SDK calls.
Tested with raw HTTP only (the SDK never sends such requests): the issuer
check (AKV10032), api-version refusal, malformed bodies, the 503 body.
Checked only against Microsoft's REST reference, azure-wire.md and error
bodies quoted in public issue threads (the SDK does not look at them):
- a disabled key still performs `wrapKey` (a public-key operation, as
  reported from a live service); keys outside their nbf/exp window still
  `unwrapKey` (Key Vault's key reference: not-yet-valid and expired keys
  work for decrypt, unwrap and verify) but refuse `wrapKey` (the reference:
  such a key must not wrap new keys);
- the exact messages and inner codes: `KeyDisabled` (reported), `AccessDenied`
  (Managed HSM's RBAC code), `KeyNotFound`, `BadParameter` for an unsupported
  api-version ("The specified version (…) is not recognized…", quoted from a
  Key Vault answer), for malformed bodies and for a failed OAEP decryption
  ("Error occurred while decoding OAEP padding.", quoted from Key Vault);
  `KeyExpired`, `KeyNotYetValid` and `KeyOperationForbidden` messages are this
  stand-in's wording; 401 messages AKV10000 / AKV10022 / AKV10032 / AKV10046 /
  "[TokenExpired] Error validating token: 'S2S12086'." are quoted from Key
  Vault answers;
- the order of checks (api-version, token, fault, grant, body, key, key_ops,
  key state), the 429 (`Throttled`) and 503 bodies.
Not modelled: soft delete on the data plane (a deleted key or version is
gone for the data plane until an admin `recover`, below), deleting a single version (the service cannot; tests use it to simulate
a lost version), key creation through the data plane, other key types,
encrypt/decrypt/sign/verify, release policies, PoP tokens, CAE claims
challenges.

Two listeners share one key store: HTTPS with a self-signed certificate for
127.0.0.1 and localhost (`hsm-cert.pem` in --state-dir; for the SDK, which
insists on TLS) and plain HTTP (for the component under Wasmtime, which trusts
only public roots). A key id names the listener it was read through (or
--vault-url). The api-version query parameter is required: 7.4, 7.5, 7.6,
2025-06-01, 2025-07-01. Routes: `GET /keys/{name}`, `GET /keys/{name}/`
(latest version), `GET /keys/{name}/{version}`, `POST
/keys/{name}/{version}/wrapkey` and `/unwrapkey` (`/keys/{name}/wrapkey`
without a version uses the latest).

Tokens: RS256, signature checked against the Entra stand-in's JWKS (--jwks,
fetched at the first request, re-fetched when a token names an unknown key),
`aud` https://managedhsm.azure.net, `iss` (--issuer), `exp`/`nbf` with
--leeway seconds (60); the caller is the token's `oid`, authorized per key:
grants {object id → ops among get, wrapKey, unwrapKey} per key name, or for
every key with key "/" (a role assignment at scope "/").

Faults, like sigcheck's: `POST /_admin/faults` `[{"status": 429, "retry_after": 1,
"count"?: n, "op"?: "get"|"wrapkey"|"unwrapkey"}]` — the next authenticated
data-plane requests (of that op) get that answer instead (429 `Throttled` with
`Retry-After`, 503 `ServiceUnavailable`, …).

Test controls, plain JSON on the HTTP listener only (404 on HTTPS):
- `POST /_admin/keys` `{"name", "size"?: 2048|3072|4096, "ops"?: ["wrapKey",
  "unwrapKey"], "enabled"?, "nbf"?, "exp"?}` → `{"name","version","kid",
  "key","attributes"}` (a new version if the name exists);
- `POST /_admin/keys/{name}/rotate` `{"size"?, "ops"?}` → the new version;
- `POST /_admin/keys/{name}/state` `{"version"?, "enabled"?, "nbf"?, "exp"?}`
  (unix seconds, null clears; latest version unless given) → the bundle;
- `DELETE /_admin/keys/{name}` and `DELETE /_admin/keys/{name}/{version}`;
- `POST /_admin/keys/{name}/recover` `{"version"?}`: undoes those deletions
  (all deleted versions, or the one given), as recovering a soft-deleted key
  does on the service (Managed HSM keeps deleted keys for the retention
  period); the key material is the same, so records wrapped before open again;
- `POST /_admin/keys/{name}/purge`: drops the deleted versions for good (as
  purging a soft-deleted key does): recover and private-pem find nothing;
- `GET /_admin/keys` (names, versions, state; no private material);
- `GET /_admin/keys/{name}/{version}/private-pem` → `{"pem"}` (tests only:
  decrypt independently of this process's code);
- `POST /_admin/grants` `{"key", "object_id", "ops"}` sets that principal's
  ops on the key (`[]` revokes all); `POST /_admin/revoke` `{"key",
  "object_id", "ops"?}` removes some or all; `GET /_admin/grants`;
- `GET /_admin/stats` → totals and `by_key`: successful `get`/`wrapkey`/
  `unwrapkey`, refusals by status (`"400"`, `"401"`, `"403"`, `"404"`,
  `"429"`, `"503"`, …), `faulted`, `pending_faults`, and
  `token_remaining_min_by_oid` (per caller, the least time, in seconds, a
  valid bearer token it presented had left before its `exp`);
- `POST /_admin/reset` (zero the counters, drop faults; `{"keys": true}`
  also drops keys and grants), `POST /_admin/reset-stats` (counters only).
Tokens and key material are never logged (only method, path, status).

    python hsm.py --tenant T --jwks http://127.0.0.1:P/T/discovery/v2.0/keys
        [--issuer https://login.microsoftonline.com/T/v2.0] [--listen 127.0.0.1:0]
        [--listen-tls 127.0.0.1:0] [--state-dir DIR] [--vault-url URL] [--leeway 60]
prints `hsm listening on http://127.0.0.1:P https://127.0.0.1:Q` when ready.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from entra import (AUTHORITY_HOST, InvalidToken, JsonHandler, admin_error, b64u, b64u_decode,  # noqa: E402
                   int_b64u, jwt_verify, parse_listen, public_key_of_jwk, start_listeners, write_self_signed)

API_VERSIONS = ("7.4", "7.5", "7.6", "2025-06-01", "2025-07-01")
LATEST_API_VERSION = "2025-07-01"
AUDIENCE = "https://managedhsm.azure.net"
KEY_OPS = ("encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey", "import", "export")
GRANTABLE = ("get", "wrapKey", "unwrapKey")
DATA_ACTIONS = {"get": "Microsoft.KeyVault/managedHsm/keys/read/action",
                "wrapKey": "Microsoft.KeyVault/managedHsm/keys/wrap/action",
                "unwrapKey": "Microsoft.KeyVault/managedHsm/keys/unwrap/action"}
ROUTE_OF = {"get": "get", "wrapKey": "wrapkey", "unwrapKey": "unwrapkey"}
ALGORITHMS = {"RSA-OAEP-256": hashes.SHA256, "RSA-OAEP": hashes.SHA1}
KEY_SIZES = (2048, 3072, 4096)
JWKS_REFRESH_SECONDS = 1.0


def oaep(alg: str) -> padding.OAEP:
    h = ALGORITHMS[alg]
    return padding.OAEP(mgf=padding.MGF1(algorithm=h()), algorithm=h(), label=None)


def kv_error(code: str, message: str, inner: str | None = None) -> dict:
    err: dict = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return {"error": err}


@dataclass
class Version:
    version: str
    private: rsa.RSAPrivateKey
    ops: list[str]
    created: int
    updated: int
    enabled: bool = True
    nbf: int | None = None
    exp: int | None = None
    deleted: bool = False


class Store:
    def __init__(self, tenant: str, jwks_url: str, issuer: str, leeway: int, vault_url: str | None):
        self.tenant, self.jwks_url, self.issuer, self.leeway = tenant, jwks_url, issuer, leeway
        self.vault_url = vault_url.rstrip("/") if vault_url else None
        self.lock = threading.RLock()
        self.keys: dict[str, list[Version]] = {}
        self.grants: dict[str, dict[str, set[str]]] = {}
        self.jwks: dict[str, rsa.RSAPublicKey] = {}
        self.jwks_fetched = 0.0
        self.reset_stats()
        self.faults: list[dict] = []

    def reset_stats(self):
        self.stats: dict = {"faulted": 0, "by_key": {}, "token_remaining_min_by_oid": {}}

    def count(self, key: str | None, what: str):
        with self.lock:
            for bucket in (self.stats, self.stats["by_key"].setdefault(key or "-", {})):
                bucket[what] = bucket.get(what, 0) + 1

    def snapshot(self) -> dict:
        with self.lock:
            out = json.loads(json.dumps(self.stats))
            out["pending_faults"] = len(self.faults)
        for bucket in [out, *out["by_key"].values()]:
            for what in ("get", "wrapkey", "unwrapkey", "401", "403", "404"):
                bucket.setdefault(what, 0)
        return out

    # -- tokens --------------------------------------------------------------
    def signing_keys(self, refresh: bool = False) -> dict[str, rsa.RSAPublicKey]:
        with self.lock:
            stale = not self.jwks or (refresh and time.monotonic() - self.jwks_fetched > JWKS_REFRESH_SECONDS)
            if stale:
                with urllib.request.urlopen(self.jwks_url, timeout=5) as r:
                    keys = json.load(r)["keys"]
                self.jwks = {k["kid"]: public_key_of_jwk(k) for k in keys if k.get("kty") == "RSA"}
                self.jwks_fetched = time.monotonic()
            return self.jwks

    # -- keys ----------------------------------------------------------------
    def create(self, name: str, size: int, ops: list[str], enabled: bool = True, nbf: int | None = None,
               exp: int | None = None) -> Version:
        now = int(time.time())
        v = Version(version=uuid.uuid4().hex, private=rsa.generate_private_key(public_exponent=65537, key_size=size),
                    ops=list(ops), created=now, updated=now, enabled=enabled, nbf=nbf, exp=exp)
        with self.lock:
            self.keys.setdefault(name, []).append(v)
        return v

    def find(self, name: str, version: str | None) -> Version | None:
        with self.lock:
            live = [v for v in self.keys.get(name, []) if not v.deleted]
        if not live:
            return None
        if not version:
            return live[-1]
        return next((v for v in live if v.version == version), None)

    def allowed(self, oid: str, name: str, op: str) -> bool:
        with self.lock:
            return any(op in self.grants.get(scope, {}).get(oid, ()) for scope in ("/", name))


def make_handler(store: Store) -> type[JsonHandler]:
    class Handler(JsonHandler):
        log_name = "hsm"
        key_name: str | None = None

        # -- plumbing ----------------------------------------------------
        def send_json(self, status, obj, headers=()):
            if self.key_name is not None and status >= 400:
                store.count(self.key_name, str(status))
            extra = [("x-ms-request-id", str(uuid.uuid4())), ("x-ms-keyvault-region", "local"),
                     ("x-ms-server-latency", "1")]
            if self.headers.get("x-ms-client-request-id"):
                extra.append(("x-ms-client-request-id", self.headers["x-ms-client-request-id"]))
            super().send_json(status, obj, [*extra, *headers])

        def base(self) -> str:
            return store.vault_url or self.origin

        def kid(self, name: str, v: Version) -> str:
            return f"{self.base()}/keys/{name}/{v.version}"

        def bundle(self, name: str, v: Version) -> dict:
            pub = v.private.public_key().public_numbers()
            attrs: dict = {"enabled": v.enabled, "created": v.created, "updated": v.updated,
                           "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90, "exportable": False}
            if v.nbf is not None:
                attrs["nbf"] = v.nbf
            if v.exp is not None:
                attrs["exp"] = v.exp
            return {"key": {"kid": self.kid(name, v), "kty": "RSA-HSM", "key_ops": list(v.ops),
                            "n": int_b64u(pub.n), "e": int_b64u(pub.e)},
                    "attributes": attrs}

        def route(self):
            self.key_name = None  # the handler object lives as long as the keep-alive connection
            segs = [urllib.parse.unquote(s) for s in self.url_path.split("/")[1:]]
            if segs[0] == "_admin":
                if self.is_tls:
                    return self.send_json(404, kv_error("NotFound", "The requested resource was not found."))
                return self.admin(segs[1:])
            if segs[0] == "keys" and len(segs) >= 2 and segs[1]:
                name, rest = segs[1], segs[2:]
                if self.command == "GET" and len(rest) <= 1:
                    return self.data_plane(name, rest[0] if rest else None, "get")
                op = {"wrapkey": "wrapKey", "unwrapkey": "unwrapKey"}.get(rest[-1].lower() if rest else "")
                if op and len(rest) in (1, 2):
                    if self.command != "POST":
                        message = f"The requested resource does not support http method '{self.command}'."
                        return self.send_json(405, kv_error("MethodNotAllowed", message))
                    return self.data_plane(name, rest[0] if len(rest) == 2 else None, op)
            self.send_json(404, kv_error("NotFound", "The requested resource was not found."))

        # -- data plane --------------------------------------------------
        def data_plane(self, name: str, version: str | None, op: str):
            self.key_name = name
            v = self.query.get("api-version")
            if v not in API_VERSIONS:
                message = ("The specified version ({}) is not recognized. Consider using the latest supported "
                           "version ({}).".format(v, LATEST_API_VERSION)) if v else \
                    "The 'api-version' query parameter is missing. Specify an api-version."
                return self.send_json(400, kv_error("BadParameter", message))
            claims = self.authenticate()
            if claims is None or self.fault(ROUTE_OF[op]) or not self.authorize(claims, name, op):
                return
            if op == "get":
                key = store.find(name, version)
                if key is None:
                    return self.not_found(name, version)
                store.count(name, "get")
                return self.send_json(200, self.bundle(name, key))
            return self.key_operation(name, version, op)

        def challenge(self) -> list[tuple[str, str]]:
            return [("WWW-Authenticate", f'Bearer authorization="{AUTHORITY_HOST}/{store.tenant}", '
                                         f'resource="{AUDIENCE}"')]

        def unauthorized(self, message: str) -> None:
            self.send_json(401, kv_error("Unauthorized", message), self.challenge())
            return None

        def authenticate(self) -> dict | None:
            """The token's claims, or None after answering 401."""
            scheme, _, token = (self.headers.get("Authorization") or "").strip().partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return self.unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
            try:
                try:
                    claims = jwt_verify(token, store.signing_keys())
                except InvalidToken as e:
                    if e.reason != "unknown_key":
                        raise
                    claims = jwt_verify(token, store.signing_keys(refresh=True))
            except InvalidToken as e:
                return self.unauthorized({
                    "malformed": "[TokenMalformed] Error validating token: the bearer token is malformed.",
                    "algorithm": "[InvalidAlgorithm] Error validating token: only RS256 tokens are accepted.",
                    "unknown_key": "AKV10046: Unable to resolve the key used for signature validation.",
                    "signature": "[InvalidSignature] Error validating token: signature validation failed.",
                }[e.reason])
            except OSError as e:  # the JWKS could not be fetched
                self.log_message("JWKS fetch from %s failed: %s", store.jwks_url, e)
                return self.unauthorized("AKV10046: Unable to resolve the key used for signature validation.")
            now = time.time()
            aud = claims.get("aud")
            auds = aud if isinstance(aud, list) else [aud]
            if not any(a in (AUDIENCE, AUDIENCE + "/") for a in auds):
                return self.unauthorized(f"AKV10022: Invalid audience. Expected {AUDIENCE}, found: {aud}.")
            if claims.get("iss") != store.issuer:
                return self.unauthorized(f"AKV10032: Invalid issuer. Expected one of {store.issuer}, "
                                         f"found {claims.get('iss')}.")
            exp, nbf = claims.get("exp"), claims.get("nbf")
            if not isinstance(exp, (int, float)) or exp + store.leeway < now:
                return self.unauthorized("[TokenExpired] Error validating token: 'S2S12086'.")
            if isinstance(nbf, (int, float)) and nbf - store.leeway > now:
                return self.unauthorized("[TokenNotYetValid] Error validating token: the token is not valid "
                                         "before its nbf time.")
            if not claims.get("oid"):
                return self.unauthorized("[InvalidToken] Error validating token: the token has no oid claim.")
            with store.lock:  # how close to expiry callers cut it (tests of token refresh)
                by_oid = store.stats["token_remaining_min_by_oid"]
                by_oid[claims["oid"]] = min(by_oid.get(claims["oid"], exp - now), exp - now)
            return claims

        def fault(self, route: str) -> bool:
            with store.lock:
                f = next((f for f in store.faults if f.get("op", route) == route), None)
                if f is not None:
                    store.faults.remove(f)
                    store.stats["faulted"] += 1
            if f is None:
                return False
            status = int(f.get("status", 503))
            headers = [("Retry-After", str(f["retry_after"]))] if "retry_after" in f else []
            body = {
                429: kv_error("Throttled", "Request was not processed because too many requests were received. "
                                           "Reason: the Managed HSM's request limit was exceeded."),
                503: kv_error("ServiceUnavailable", "The service is temporarily unavailable. Please retry."),
                500: kv_error("InternalServerError", "An internal server error occurred. Please retry."),
            }.get(status, kv_error("StandInFault", f"Fault injected by the stand-in ({status})."))
            self.send_json(status, body, headers)
            return True

        def authorize(self, claims: dict, name: str, op: str) -> bool:
            oid = claims["oid"]
            if store.allowed(oid, name, op):
                return True
            self.send_json(403, kv_error(
                "Forbidden",
                "Caller is not authorized to perform action on resource.\r\n"
                "If role assignments, deny assignments or role definitions were changed recently, please observe "
                "propagation time.\r\n"
                f"Caller: appid={claims.get('appid') or claims.get('azp')};oid={oid};iss={claims.get('iss')}\r\n"
                f"Action: '{DATA_ACTIONS[op]}'\r\n"
                f"Resource: '/keys/{name}'\r\n"
                "Assignment: (not found)\r\n"
                "DenyAssignmentId: null\r\n"
                "DecisionReason: null \r\n"
                f"Vault: {self.headers.get('Host', 'localhost')};location=local\r\n",
                "AccessDenied"))
            return False

        def not_found(self, name: str, version: str | None):
            ident = f"{name}/{version}" if version else name
            self.send_json(404, kv_error("KeyNotFound", f"A key with (name/id) {ident} was not found in this key "
                                                        "vault. If you recently deleted this key you may be able to "
                                                        "recover it using the correct recovery command. For help "
                                                        "resolving this issue, please see "
                                                        "https://go.microsoft.com/fwlink/?linkid=2125182"))

        def key_operation(self, name: str, version: str | None, op: str):
            try:
                req = json.loads(self.body or b"null")
            except ValueError:
                req = None
            if not isinstance(req, dict):
                return self.send_json(400, kv_error("BadParameter", "The request body is not a valid JSON object."))
            problems = []
            alg, raw = req.get("alg"), req.get("value")
            if not alg:
                problems.append("Property 'alg' is required.")
            elif alg not in ALGORITHMS:
                problems.append(f"Algorithm '{alg}' is not supported for key type RSA-HSM and operation {op}.")
            if raw is None or raw == "":
                problems.append("Property 'value' is required.")
            else:
                try:
                    value = b64u_decode(raw)
                except ValueError:
                    problems.append("Content of 'value' is not base64url.")
            if problems:
                return self.send_json(400, kv_error("BadParameter", "\r\n".join(problems) + "\r\n"))
            key = store.find(name, version)
            if key is None:
                return self.not_found(name, version)
            if op not in key.ops:
                return self.send_json(403, kv_error("Forbidden", f"Operation {op} is not permitted on this key: it "
                                                                 f"is not in the key's key_ops ({', '.join(key.ops)}).",
                                                    "KeyOperationForbidden"))
            now = time.time()
            if op == "unwrapKey":
                # A private-key operation: refused on a disabled key. Outside
                # the nbf/exp window it still works, as Key Vault documents
                # ("not-yet-valid and expired keys ... will work for decrypt,
                # unwrap, and verify"), to allow recovery of old data.
                if not key.enabled:
                    return self.send_json(403, kv_error("Forbidden", "Operation unwrapKey is not allowed on a "
                                                                     "disabled key.", "KeyDisabled"))
                try:
                    out = key.private.decrypt(value, oaep(alg))
                except ValueError:
                    return self.send_json(400, kv_error("BadParameter", "Error occurred while decoding OAEP padding."))
            else:
                # wrapKey is a public-key operation: the service performs it
                # even for a disabled key (azure-wire.md), but not outside
                # the nbf/exp window, where a key must not wrap new keys.
                if key.exp is not None and now >= key.exp:
                    return self.send_json(403, kv_error("Forbidden", "Operation wrapKey is not allowed on an "
                                                                     "expired key.", "KeyExpired"))
                if key.nbf is not None and now < key.nbf:
                    return self.send_json(403, kv_error("Forbidden", "Operation wrapKey is not allowed on a key "
                                                                     "that is not yet valid (nbf).", "KeyNotYetValid"))
                try:
                    out = key.private.public_key().encrypt(value, oaep(alg))
                except ValueError:
                    return self.send_json(400, kv_error("BadParameter", "The value is too long for the key size "
                                                                        f"and algorithm {alg}."))
            store.count(name, ROUTE_OF[op])
            self.send_json(200, {"kid": self.kid(name, key), "value": b64u(out)})

        # -- test controls -----------------------------------------------
        def admin(self, parts: list[str]):
            try:
                body = self.json_body() if self.command in ("POST", "DELETE") and self.body else {}
            except ValueError:
                return self.send_json(400, admin_error("body is not JSON"))
            try:
                return self.admin_route(parts, body)
            except (KeyError, TypeError, ValueError) as e:
                return self.send_json(400, admin_error(f"bad admin request: {type(e).__name__}: {e}"))

        def admin_key_spec(self, body: dict, defaults: Version | None = None) -> tuple[int, list[str]]:
            size = int(body.get("size", defaults.private.key_size if defaults else 2048))
            ops = body.get("ops", defaults.ops if defaults else ["wrapKey", "unwrapKey"])
            if size not in KEY_SIZES:
                raise ValueError(f"size must be one of {KEY_SIZES}")
            if not isinstance(ops, list) or any(o not in KEY_OPS for o in ops):
                raise ValueError(f"ops must be a list of {KEY_OPS}")
            return size, ops

        def created(self, name: str, v: Version):
            self.send_json(200, {"name": name, "version": v.version, "kid": self.kid(name, v), **self.bundle(name, v)})

        def admin_route(self, parts: list[str], body):
            cmd = self.command
            if cmd == "GET" and parts == ["stats"]:
                return self.send_json(200, store.snapshot())
            if cmd == "GET" and parts == ["grants"]:
                with store.lock:
                    return self.send_json(200, {k: {o: sorted(ops) for o, ops in g.items()}
                                                for k, g in store.grants.items()})
            if cmd == "GET" and parts == ["keys"]:
                with store.lock:
                    listing = {n: [{"version": v.version, "size": v.private.key_size, "ops": v.ops,
                                    "enabled": v.enabled, "nbf": v.nbf, "exp": v.exp, "deleted": v.deleted}
                                   for v in vs] for n, vs in store.keys.items()}
                return self.send_json(200, listing)
            if cmd == "GET" and len(parts) == 4 and parts[0] == "keys" and parts[3] == "private-pem":
                v = store.find(parts[1], parts[2])
                if v is None:
                    return self.send_json(404, admin_error("no such key version"))
                pem = v.private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()).decode()
                return self.send_json(200, {"pem": pem})
            if cmd == "DELETE" and parts[:1] == ["keys"] and len(parts) in (2, 3):
                with store.lock:
                    hit = [v for v in store.keys.get(parts[1], [])
                           if not v.deleted and (len(parts) == 2 or v.version == parts[2])]
                    for v in hit:
                        v.deleted = True
                if not hit:
                    return self.send_json(404, admin_error("no such key or version"))
                return self.send_json(200, {"deleted": [v.version for v in hit]})
            if cmd != "POST":
                return self.send_json(404, admin_error(f"no admin route {cmd} {self.url_path}"))
            if parts == ["keys"]:
                size, ops = self.admin_key_spec(body)
                name = body["name"]
                if not isinstance(name, str) or not name or not all(c.isalnum() or c == "-" for c in name):
                    raise ValueError("name must be letters, digits and dashes")
                v = store.create(name, size, ops, bool(body.get("enabled", True)), body.get("nbf"), body.get("exp"))
                return self.created(name, v)
            if len(parts) == 3 and parts[0] == "keys" and parts[2] == "rotate":
                latest = store.find(parts[1], None)
                if latest is None:
                    return self.send_json(404, admin_error("no such key"))
                size, ops = self.admin_key_spec(body, latest)
                return self.created(parts[1], store.create(parts[1], size, ops))
            if len(parts) == 3 and parts[0] == "keys" and parts[2] == "recover":
                with store.lock:
                    hit = [v for v in store.keys.get(parts[1], [])
                           if v.deleted and body.get("version") in (None, v.version)]
                    for v in hit:
                        v.deleted = False
                if not hit:
                    return self.send_json(404, admin_error("no deleted key or version of that name"))
                return self.send_json(200, {"recovered": [v.version for v in hit]})
            if len(parts) == 3 and parts[0] == "keys" and parts[2] == "purge":
                # Purging a soft-deleted key: its deleted versions and their
                # private material are gone for good; recover finds nothing.
                with store.lock:
                    versions = store.keys.get(parts[1], [])
                    hit = [v for v in versions if v.deleted]
                    store.keys[parts[1]] = [v for v in versions if not v.deleted]
                    if not store.keys[parts[1]]:
                        del store.keys[parts[1]]
                if not hit:
                    return self.send_json(404, admin_error("no deleted key of that name"))
                return self.send_json(200, {"purged": [v.version for v in hit]})
            if len(parts) == 3 and parts[0] == "keys" and parts[2] == "state":
                v = store.find(parts[1], body.get("version"))
                if v is None:
                    return self.send_json(404, admin_error("no such key or version"))
                with store.lock:
                    for field in ("enabled", "nbf", "exp"):
                        if field in body:
                            setattr(v, field, body[field] if field != "enabled" else bool(body[field]))
                    v.updated = int(time.time())
                return self.send_json(200, self.bundle(parts[1], v))
            if parts == ["grants"]:
                ops = body["ops"]
                if not isinstance(ops, list) or any(o not in GRANTABLE for o in ops):
                    raise ValueError(f"ops must be a list of {GRANTABLE}")
                with store.lock:
                    store.grants.setdefault(body["key"], {})[body["object_id"]] = set(ops)
                return self.send_json(200, {"key": body["key"], "object_id": body["object_id"], "ops": sorted(ops)})
            if parts == ["revoke"]:
                with store.lock:
                    held = store.grants.get(body["key"], {}).get(body["object_id"], set())
                    held -= set(body.get("ops", GRANTABLE))
                    return self.send_json(200, {"key": body["key"], "object_id": body["object_id"],
                                                "ops": sorted(held)})
            if parts == ["faults"]:
                faults = body if isinstance(body, list) else [body]
                with store.lock:
                    for f in faults:
                        store.faults.extend([dict(f)] * int(f.get("count", 1)))
                    return self.send_json(200, {"pending_faults": len(store.faults)})
            if parts in (["reset"], ["reset-stats"]):
                with store.lock:
                    store.reset_stats()
                    if parts == ["reset"]:
                        store.faults.clear()
                        if body.get("keys"):
                            store.keys.clear()
                            store.grants.clear()
                return self.send_json(200, {})
            self.send_json(404, admin_error(f"no admin route {cmd} {self.url_path}"))

    return Handler


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", type=parse_listen, default="127.0.0.1:0", help="plain HTTP (component, admin)")
    p.add_argument("--listen-tls", type=parse_listen, default="127.0.0.1:0", help="HTTPS (official SDK)")
    p.add_argument("--state-dir", help="where hsm-cert.pem/hsm-key.pem are written (default: a new temp dir)")
    p.add_argument("--tenant", required=True, help="the tenant named in the 401 challenge")
    p.add_argument("--jwks", required=True, help="the Entra stand-in's JWKS URL")
    p.add_argument("--issuer", help="expected token issuer (default https://login.microsoftonline.com/TENANT/v2.0)")
    p.add_argument("--vault-url", help="base of key ids (default: the URL each request came in on)")
    p.add_argument("--leeway", type=int, default=60, help="seconds of clock skew allowed on exp/nbf")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM) instead of a self-signed one")
    p.add_argument("--tls-key", help="the private key (PEM) of --tls-cert")
    args = p.parse_args(argv)

    store = Store(args.tenant, args.jwks, args.issuer or f"{AUTHORITY_HOST}/{args.tenant}/v2.0", args.leeway,
                  args.vault_url)
    state_dir = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="hsm-standin-"))
    if args.tls_cert and args.tls_key:
        cert, key = Path(args.tls_cert), Path(args.tls_key)
    else:
        cert, key = write_self_signed(state_dir, "hsm")
    plain, tls = start_listeners(make_handler(store), args.listen, args.listen_tls, cert, key)
    print(f"hsm: tenant {args.tenant}, certificate {cert}", file=sys.stderr, flush=True)
    print(f"hsm listening on http://{plain.server_address[0]}:{plain.server_port} "
          f"https://{tls.server_address[0]}:{tls.server_port}", flush=True)
    try:
        plain.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
