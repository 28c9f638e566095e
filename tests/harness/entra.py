"""A local Microsoft Entra ID stand-in: the token endpoints the component and
the official `azure-identity` credentials call, issuing RS256 access tokens
that the Managed HSM stand-in (`hsm.py`) validates against this stand-in's
signing keys.

Why: there is no emulator for Entra ID. This process behaves like the
service on the wire for the grants the component uses, and
`test_standins.py` proves it with the official SDK (`azure-identity` 1.27.0
with MSAL 1.39): `ClientSecretCredential`, `WorkloadIdentityCredential` and
`ManagedIdentityCredential` (IMDS and App Service) obtain tokens from it.

Two listeners serve the same routes: plain HTTP (for the component, whose
runtime trusts only public roots) and HTTPS with a self-signed certificate for
127.0.0.1 and localhost, written to --state-dir as `entra-cert.pem` (MSAL and
azure-identity accept only an https authority). Both bind loopback only.

Routes (shapes from Microsoft's identity-platform, IMDS and App Service
references, azure-identity/MSAL source, and real error bodies quoted in
public issue threads):

- `GET /{tenant}/v2.0/.well-known/openid-configuration`: issuer, jwks_uri,
  token_endpoint, authorization_endpoint (endpoints on the listener the
  request came in on; MSAL reads them when `disable_instance_discovery=True`).
- `GET /{tenant}/discovery/v2.0/keys`: JWKS `{"keys":[{kty,use:"sig",kid,x5t,
  n,e,x5c,cloud_instance_name,issuer}]}` (`kid` = `x5t`, the certificate's
  SHA-1 thumbprint; no `alg`, as in Entra's): as Entra publishes
  several keys at once (keys rolled in and out), four RSA-2048 keys, each
  with its self-signed certificate in `x5c`, generated at start (about
  6 KB); tokens are signed with the second.
- `POST /{tenant}/oauth2/v2.0/token` (form): `grant_type=client_credentials`,
  `client_id`, `scope` (must end in `/.default`), and either `client_secret`
  or `client_assertion_type=urn:ietf:params:oauth:client-assertion-type:jwt-bearer`
  with `client_assertion` (workload identity: a JWT from the "cluster OIDC
  issuer" this stand-in also simulates; minted by `/_entra/federated-token`).
  200 `{"token_type":"Bearer","expires_in":N,"ext_expires_in":N,"access_token"}`.
  Refusals are Entra-shaped: `{"error","error_description":"AADSTSnnn: … Trace
  ID: … Correlation ID: … Timestamp: …","error_codes":[n],"timestamp",
  "trace_id","correlation_id"}`:
    400 invalid_request 90002 unknown tenant; 900144 missing parameter;
    900561 not a POST; 400 unsupported_grant_type 70003;
    400 unauthorized_client 700016 unknown client;
    400 invalid_scope 1002012 scope without `/.default`, 70011 malformed scope;
    401 invalid_client 7000215 wrong secret, 7000218 no credential,
    50027 malformed assertion, 70021 no federated credential, 700211 issuer,
    700212 audience, 700213 subject, 700027 signature, 700024 time range.
  A `client-request-id` (or `x-client-request-id`, `x-ms-client-request-id`)
  request header is echoed as `client-request-id` and becomes the
  correlation id, as Entra does.
- IMDS: `GET /metadata/identity/oauth2/token?api-version=2018-02-01&resource=R
  [&client_id=C|object_id=O|msi_res_id=M]` needs `Metadata: true` (else 400
  `{"error":"invalid_request","error_description":"Required metadata header not
  specified"}`); 200 with string values, as IMDS answers: `{"access_token",
  "client_id","expires_in","expires_on","ext_expires_in","not_before",
  "resource","token_type":"Bearer"}`. azure-identity reaches it through
  `AZURE_POD_IDENTITY_AUTHORITY_HOST=http://127.0.0.1:P`.
- App Service / Container Apps: `GET /msi/token?api-version=2019-08-01&resource=R
  [&client_id=C|principal_id=O|object_id=O|mi_res_id=M]` with
  `X-IDENTITY-HEADER` equal to the configured value (else 401); 200
  `{"access_token","expires_on":"<unix>","resource","token_type","client_id"}`.
  azure-identity reaches it through `IDENTITY_ENDPOINT=http://127.0.0.1:P/msi/token`
  and `IDENTITY_HEADER`.

Access tokens: header `{"typ":"JWT","alg":"RS256","x5t","kid"}`; claims `aud`
= the resource (scope minus `/.default`), `iss` =
`https://login.microsoftonline.com/{tenant}/v2.0`, `tid`, `oid` = `sub` = the
principal's object id, `appid` = `azp` = its client id, `idtyp` "app", `ver`
"2.0", `iat` = `nbf` = now - 300 s (Entra back-dates them for clock skew),
`exp` = now + lifetime (default 3600 s, `--lifetime` or `/_entra/config`),
`jti` (and `uti`, Entra's name for it). The real service issues v1.0 tokens
(`iss` https://sts.windows.net/{tenant}/) for resources that do not opt into
v2.0, Managed HSM among them; the component must not depend on `iss`/`ver`.

Principals, from --principals FILE.json and/or the --app/--workload/--managed
flags:
    {"tenant": "t",
     "apps": [{"client_id", "object_id", "secret"?,
               "federated"?: [{"issuer"?, "subject"?, "audience"?}]}],
     "workload": [{"client_id", "object_id", "issuer"?, "subject"?}],
     "managed": [{"client_id", "object_id", "system_assigned"?: true}],
     "identity_header": "...",
     "app_roles": {"<resource>": {"<client_id>": ["<role>", ...]}}}
App roles assigned to a client on a resource appear as the `roles` claim of
that client's tokens for that resource, as Entra issues them.
A federated credential's issuer defaults to the cluster issuer
(`--cluster-issuer`, default https://oidc.cluster.local/), its subject to
`system:serviceaccount:cmk:{client_id}`, its audience to
`api://AzureADTokenExchange`. An app with neither a secret nor a federated
credential gets that default federated credential. A managed identity whose
client id is "system" is the system-assigned identity too.

Test controls under `/_entra/` (both listeners; plain JSON):
- `GET /_entra/stats`: `{"requests","issued","refused", "client_secret",
  "workload_identity","imds","app_service" (tokens issued per grant),
  "jwks" (signing-key documents served),
  "refused_by_grant":{…}, "by_client":{client:n},
  "by_client_resource":{client:{resource:n}}}`.
- `GET /_entra/issued-tokens[?client_id=C]`: `{"tokens": [{"client_id",
  "resource", "expires_on", "token"}]}`, the last 1000 access tokens issued
  (oldest first), so tests can check that none of them reached a log.
- `POST /_entra/reset`: zero the counters, drop faults, restore the lifetime
  and every withdrawn signing key.
- `POST /_entra/withdraw-key` `{"kid"?}`: the signing-key document leaves
  out that key (by default the one tokens are signed with, as when a tenant
  removes a key it still has tokens of) → `{"withdrawn": [kid, …]}`.
- `POST /_entra/config` `{"lifetime": seconds}` (may be negative, to issue
  already-expired tokens) → the current config.
- `POST /_entra/federated-token` `{"client_id"}` or `{"subject", "issuer"?,
  "audience"?, "lifetime"?}` → `{"token","issuer","subject","audience",
  "expires_on"}`: a service-account token signed by the cluster issuer's key
  (only this stand-in knows it), for `AZURE_FEDERATED_TOKEN_FILE`.
- `POST /_entra/faults` `[{"status": 429|503|…, "retry_after"?: s,
  "count"?: n, "route"?: "token"|"jwks"}]`: the next token requests (any
  grant), or with `"route": "jwks"` the next signing-key requests, get these
  answers.
Secrets, assertions and tokens are never logged (only method, path, status).

    python entra.py --state-dir DIR [--listen 127.0.0.1:0] [--listen-tls 127.0.0.1:0]
        [--principals FILE.json] [--tenant T] [--app CLIENT:OBJECT:SECRET]...
        [--workload CLIENT:OBJECT[:SUBJECT]]... [--managed CLIENT:OBJECT[:system]]...
        [--identity-header VALUE] [--lifetime 3600] [--cluster-issuer URL]
prints `entra listening on http://127.0.0.1:P https://127.0.0.1:Q` when ready.

The JWT, certificate and listener helpers here are shared with `hsm.py`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import datetime
import hashlib
import hmac
import ipaddress
import json
import ssl
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterable

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

AUTHORITY_HOST = "https://login.microsoftonline.com"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"
DEFAULT_CLUSTER_ISSUER = "https://oidc.cluster.local/"
ASSERTION_SKEW = 300  # seconds of clock skew allowed on client assertions
ISSUE_BACKDATE = 300  # Entra sets iat/nbf five minutes in the past
ISSUED_KEPT = 1000  # access tokens kept for GET /_entra/issued-tokens


# -- shared helpers (also used by hsm.py) -------------------------------------


def b64u(data: bytes) -> str:
    """base64url without padding."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64u_decode(text: str) -> bytes:
    """base64url with or without padding; raises ValueError on anything else."""
    if not isinstance(text, str):
        raise ValueError("not a string")
    stripped = text.rstrip("=")
    try:
        return base64.b64decode(stripped + "=" * (-len(stripped) % 4), altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"not base64url: {e}") from None


def int_b64u(n: int) -> str:
    return b64u(n.to_bytes((n.bit_length() + 7) // 8, "big"))


def key_thumbprint(public_key: rsa.RSAPublicKey) -> str:
    """A stable key id in Entra's style (base64url of a SHA-1 thumbprint)."""
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return b64u(hashlib.sha1(der).digest())


def jwk_of(public_key: rsa.RSAPublicKey, kid: str, **extra: Any) -> dict:
    nums = public_key.public_numbers()
    return {"kty": "RSA", "use": "sig", "kid": kid, "x5t": kid, "n": int_b64u(nums.n), "e": int_b64u(nums.e),
            "alg": "RS256", **extra}


def signing_certificate(key: rsa.RSAPrivateKey) -> bytes:
    """A self-signed certificate for a token-signing key, DER (Entra's are
    issued to CN=accounts.accesscontrol.windows.net)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "accounts.accesscontrol.windows.net")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=5 * 365))
            .sign(key, hashes.SHA256()))
    return cert.public_bytes(serialization.Encoding.DER)


def published_jwk(key: rsa.RSAPrivateKey, issuer: str) -> dict:
    """A signing key as Entra's JWKS lists it: `kid` and `x5t` the
    certificate's SHA-1 thumbprint (base64url), the certificate in `x5c`,
    no `alg`."""
    der = signing_certificate(key)
    thumbprint = b64u(hashlib.sha1(der).digest())
    jwk = jwk_of(key.public_key(), thumbprint, x5c=[base64.b64encode(der).decode()],
                 cloud_instance_name="microsoftonline.com", issuer=issuer)
    del jwk["alg"]
    return jwk


def public_key_of_jwk(jwk: dict) -> rsa.RSAPublicKey:
    n = int.from_bytes(b64u_decode(jwk["n"]), "big")
    e = int.from_bytes(b64u_decode(jwk["e"]), "big")
    return rsa.RSAPublicNumbers(e, n).public_key()


def jwt_sign(claims: dict, key: rsa.RSAPrivateKey, kid: str, typ: str = "JWT") -> str:
    header = {"typ": typ, "alg": "RS256", "x5t": kid, "kid": kid}
    signing_input = b64u(json.dumps(header, separators=(",", ":")).encode()) + "." + \
        b64u(json.dumps(claims, separators=(",", ":")).encode())
    signature = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    return signing_input + "." + b64u(signature)


class InvalidToken(Exception):
    """`reason` is one of malformed, algorithm, unknown_key, signature."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason


def jwt_parse(token: str) -> tuple[dict, dict]:
    """(header, claims) without checking the signature."""
    try:
        h, p, _s = token.split(".")
        header, claims = json.loads(b64u_decode(h)), json.loads(b64u_decode(p))
    except Exception:  # any malformation
        raise InvalidToken("malformed", "the token is not a well-formed JWS compact serialization") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise InvalidToken("malformed", "the token's header or payload is not a JSON object")
    return header, claims


def jwt_verify(token: str, keys: dict[str, rsa.RSAPublicKey]) -> dict:
    """Checks the RS256 signature against `keys` (by kid) and returns the
    claims; the caller checks aud/iss/exp/nbf."""
    header, claims = jwt_parse(token)
    if header.get("alg") != "RS256":
        raise InvalidToken("algorithm", f"algorithm {header.get('alg')!r} is not accepted")
    key = keys.get(header.get("kid"))
    if key is None:
        raise InvalidToken("unknown_key", "the key used to sign the token is unknown")
    h, p, s = token.split(".")
    try:
        key.verify(b64u_decode(s), f"{h}.{p}".encode(), padding.PKCS1v15(), hashes.SHA256())
    except Exception:
        raise InvalidToken("signature", "the token's signature is invalid") from None
    return claims


def write_self_signed(state_dir: Path, stem: str) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost (it is its own
    trust anchor: pass the .pem as `connection_verify`)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{stem} stand-in 127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                    x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_encipherment=True, key_cert_sign=True,
                                     content_commitment=False, data_encipherment=False, key_agreement=False,
                                     crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    state_dir.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = state_dir / f"{stem}-cert.pem", state_dir / f"{stem}-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.touch(mode=0o600)
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT on a loopback address only (these processes hand out tokens
    and private keys to anyone who asks)."""
    host, _, port = value.rpartition(":")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        loopback = ipaddress.ip_address(host).version == 4 and ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback or not port.isdigit():
        raise argparse.ArgumentTypeError(f"{value!r}: listen on 127.0.0.1:PORT (loopback IPv4 only)")
    return host, int(port)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver's default backlog (5) drops connection attempts beyond it
    # when many arrive at once (a delivery wrapping under ten tenant keys in
    # parallel, from several instances), and the client's SYN retry costs a
    # second; the services themselves accept far more.
    request_queue_size = 256

    def handle_error(self, request, client_address):  # one line instead of a traceback
        exc = sys.exc_info()[1]
        if isinstance(exc, (ssl.SSLError, ConnectionError, TimeoutError)):
            print(f"connection from {client_address[0]}:{client_address[1]} dropped: {type(exc).__name__}",
                  file=sys.stderr, flush=True)
        else:
            super().handle_error(request, client_address)


def start_listeners(handler: type[BaseHTTPRequestHandler], listen: tuple[str, int], listen_tls: tuple[str, int],
                    cert: Path, key: Path) -> tuple[ThreadingHTTPServer, ThreadingHTTPServer]:
    """A plain and a TLS listener with the same handler; the TLS one serves
    from a background thread, the caller runs `plain.serve_forever()`."""
    plain = _Server(listen, handler)
    tls = _Server(listen_tls, handler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    # The handshake runs in the request's thread (JsonHandler.setup), so a
    # client that never completes it cannot stall the accept loop.
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=tls.serve_forever, name="tls", daemon=True).start()
    return plain, tls


class JsonHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive JSON handler: reads each request's body up front
    (so a refusal never leaves bytes on the connection), logs method, path
    and status only."""

    protocol_version = "HTTP/1.1"
    server_version = "standin/1"
    # Headers and body are separate writes: without TCP_NODELAY, Nagle's
    # algorithm holds the body for the client's delayed ACK (~40 ms).
    disable_nagle_algorithm = True
    timeout = 120
    log_name = "standin"

    def version_string(self) -> str:
        return self.server_version

    def setup(self):
        if isinstance(self.request, ssl.SSLSocket):
            self.request.settimeout(10)
            self.request.do_handshake()
        super().setup()

    # -- request ---------------------------------------------------------
    @property
    def is_tls(self) -> bool:
        return isinstance(self.connection, ssl.SSLSocket)

    @property
    def origin(self) -> str:
        """scheme://host[:port] the client used (Host header)."""
        host = self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]
        return f"{'https' if self.is_tls else 'http'}://{host}"

    def _read_body(self) -> bytes:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def _dispatch(self):
        self.body = self._read_body()
        url = urllib.parse.urlsplit(self.path)
        self.url_path = url.path
        self.query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        try:
            self.route()
        except Exception as e:  # a bug in a stand-in must not look like a service answer
            self.log_message("internal error on %s %s: %s: %s", self.command, self.url_path, type(e).__name__, e)
            self.send_json(500, {"error": {"code": "StandInError", "message": f"{type(e).__name__}: {e}"}})

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _dispatch

    def route(self):  # pragma: no cover - overridden
        raise NotImplementedError

    def json_body(self) -> Any:
        return json.loads(self.body or b"{}")

    # -- response --------------------------------------------------------
    def send_json(self, status: int, obj: Any, headers: Iterable[tuple[str, str]] = ()):
        body = json.dumps(obj).encode() if obj is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store, no-cache")
        self.send_header("Pragma", "no-cache")
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_request(self, code="-", size="-"):
        code = getattr(code, "value", code)
        self.log_message("%s %s -> %s", self.command, urllib.parse.urlsplit(self.path).path, code)

    def log_message(self, fmt, *args):
        sys.stderr.write(f"{self.log_name}: {fmt % args}\n")
        sys.stderr.flush()


def admin_error(message: str) -> dict:
    return {"error": message}


# -- the Entra ID model ---------------------------------------------------------


class Entra:
    def __init__(self, principals: dict, lifetime: int, cluster_issuer: str):
        self.tenant: str = principals["tenant"]
        self.cluster_issuer = cluster_issuer
        self.apps: dict[str, dict] = {}
        for app in principals.get("apps", []):
            feds = app.get("federated")
            if feds is None and not app.get("secret"):
                feds = [{}]  # an app with no credential at all: the default workload identity
            self.apps[app["client_id"]] = {"client_id": app["client_id"], "object_id": app["object_id"],
                                           "secret": app.get("secret"),
                                           "federated": [self._federated(app["client_id"], f) for f in feds or []]}
        for w in principals.get("workload", []):
            entry = self.apps.setdefault(w["client_id"], {"client_id": w["client_id"], "object_id": w["object_id"],
                                                          "secret": None, "federated": []})
            entry["federated"].append(self._federated(w["client_id"], w))
        self.managed: dict[str, dict] = {m["client_id"]: m for m in principals.get("managed", [])}
        self.system_mi = next((m for m in self.managed.values()
                               if m.get("system_assigned") or m["client_id"] == "system"), None)
        self.identity_header: str = principals.get("identity_header", "")
        # App roles assigned to a client on a resource (the app registration
        # that exposes them): {resource: {client_id: [role, ...]}}.
        self.app_roles: dict[str, dict[str, list[str]]] = principals.get("app_roles", {})
        self.signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        # The published set: the signing key among others (keys the tenant
        # rolls in and out), each with its certificate, as Entra's.
        others = [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(3)]
        self.published_keys = [published_jwk(k, self.issuer) for k in [others[0], self.signing, *others[1:]]]
        self.kid = self.published_keys[1]["kid"]
        self.cluster = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cluster_kid = key_thumbprint(self.cluster.public_key())
        self.default_lifetime = self.lifetime = lifetime
        self.lock = threading.Lock()
        self.faults: list[dict] = []
        self.issued_tokens: list[dict] = []
        self.reset()

    def _federated(self, client_id: str, f: dict) -> dict:
        return {"issuer": f.get("issuer") or self.cluster_issuer,
                "subject": f.get("subject") or f"system:serviceaccount:cmk:{client_id}",
                "audience": f.get("audience") or FEDERATED_AUDIENCE}

    def reset(self):
        self.stats = {"requests": 0, "issued": 0, "refused": 0, "client_secret": 0, "workload_identity": 0,
                      "imds": 0, "app_service": 0, "jwks": 0, "refused_by_grant": {}, "by_client": {}, "by_client_resource": {}}
        self.faults = []
        self.lifetime = self.default_lifetime
        self.withdrawn: set[str] = set()

    @property
    def issuer(self) -> str:
        return f"{AUTHORITY_HOST}/{self.tenant}/v2.0"

    def issued(self, grant: str, client_id: str, resource: str):
        with self.lock:
            s = self.stats
            s["issued"] += 1
            s[grant] += 1
            s["by_client"][client_id] = s["by_client"].get(client_id, 0) + 1
            per = s["by_client_resource"].setdefault(client_id, {})
            per[resource] = per.get(resource, 0) + 1

    def refused(self, grant: str):
        with self.lock:
            self.stats["refused"] += 1
            self.stats["refused_by_grant"][grant] = self.stats["refused_by_grant"].get(grant, 0) + 1

    def take_fault(self, route: str = "token") -> dict | None:
        """The first pending fault for `route` (`token`: the token
        endpoint, the default; `jwks`: the signing keys), taken."""
        with self.lock:
            for i, f in enumerate(self.faults):
                if f.get("route", "token") == route:
                    return self.faults.pop(i)
            return None

    def access_token(self, client_id: str, object_id: str, resource: str) -> tuple[str, int, int]:
        """(token, lifetime, issued-at)."""
        now = int(time.time())
        with self.lock:
            lifetime = self.lifetime
        token_id = b64u(uuid.uuid4().bytes)
        claims = {"aud": resource, "iss": self.issuer, "iat": now - ISSUE_BACKDATE, "nbf": now - ISSUE_BACKDATE,
                  "exp": now + lifetime, "azp": client_id, "appid": client_id, "idtyp": "app", "oid": object_id,
                  "sub": object_id, "tid": self.tenant, "jti": token_id, "uti": token_id, "ver": "2.0"}
        roles = self.app_roles.get(resource, {}).get(client_id)
        if roles:
            claims["roles"] = list(roles)
        token = jwt_sign(claims, self.signing, self.kid)
        with self.lock:
            self.issued_tokens.append({"client_id": client_id, "resource": resource, "expires_on": now + lifetime,
                                       "token": token})
            del self.issued_tokens[:-ISSUED_KEPT]
        return token, lifetime, now

    def federated_token(self, subject: str, issuer: str, audience: str, lifetime: int) -> tuple[str, int]:
        now = int(time.time())
        claims = {"aud": [audience], "iss": issuer, "sub": subject, "iat": now, "nbf": now, "exp": now + lifetime,
                  "kubernetes.io": {"namespace": subject.split(":")[2] if subject.count(":") >= 3 else "default"}}
        return jwt_sign(claims, self.cluster, self.cluster_kid), now + lifetime


def aadsts(status: int, error: str, code: int, text: str, correlation_id: str | None = None) -> tuple[int, dict]:
    trace, corr = str(uuid.uuid4()), correlation_id or str(uuid.uuid4())
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} Timestamp: {stamp}",
        "error_codes": [code], "timestamp": stamp, "trace_id": trace, "correlation_id": corr,
    }


def _iso(t: float) -> str:
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.0000000Z")


def make_handler(entra: Entra) -> type[JsonHandler]:
    class Handler(JsonHandler):
        log_name = "entra"

        def route(self):
            parts = [p for p in self.url_path.split("/") if p]
            if parts[:1] == ["_entra"]:
                return self.admin(parts[1:])
            with entra.lock:
                entra.stats["requests"] += 1
            if self.url_path == "/metadata/identity/oauth2/token" and self.command == "GET":
                return self.imds()
            if self.url_path == "/msi/token" and self.command == "GET":
                return self.app_service()
            if len(parts) == 4 and parts[1:] == ["oauth2", "v2.0", "token"]:
                return self.token(parts[0])
            if len(parts) == 4 and parts[1:] == ["discovery", "v2.0", "keys"] and self.command == "GET":
                if parts[0] != entra.tenant:
                    return self.send_json(*self.unknown_tenant(parts[0], "invalid_tenant"))
                with entra.lock:
                    entra.stats["jwks"] += 1
                fault = entra.take_fault("jwks")
                if fault:
                    return self.fault(fault, [])
                with entra.lock:
                    keys = [k for k in entra.published_keys if k["kid"] not in entra.withdrawn]
                return self.send_json(200, {"keys": keys})
            if len(parts) == 4 and parts[1:] == ["v2.0", ".well-known", "openid-configuration"] \
                    and self.command == "GET":
                return self.openid_configuration(parts[0])
            self.send_json(404, {"error": "not_found", "error_description": f"No route for {self.command} "
                                                                            f"{self.url_path}"})

        # -- discovery ---------------------------------------------------
        def unknown_tenant(self, tenant: str, error: str = "invalid_request") -> tuple[int, dict]:
            return aadsts(400, error, 90002, f"Tenant '{tenant}' not found. Check to make sure you have the correct "
                                             "tenant ID and are signing into the correct cloud. Check with your "
                                             "subscription administrator, this may happen if there are no active "
                                             "subscriptions for the tenant.", self.correlation_id())

        def openid_configuration(self, tenant: str):
            if tenant != entra.tenant:
                return self.send_json(*self.unknown_tenant(tenant, "invalid_tenant"))
            base = f"{self.origin}/{tenant}"
            self.send_json(200, {
                "token_endpoint": f"{base}/oauth2/v2.0/token",
                "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt",
                                                          "client_secret_basic"],
                "jwks_uri": f"{base}/discovery/v2.0/keys",
                "response_modes_supported": ["query", "fragment", "form_post"],
                "subject_types_supported": ["pairwise"],
                "id_token_signing_alg_values_supported": ["RS256"],
                "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
                "scopes_supported": ["openid", "profile", "email", "offline_access"],
                "issuer": entra.issuer,
                "request_uri_parameter_supported": False,
                "authorization_endpoint": f"{base}/oauth2/v2.0/authorize",
                "device_authorization_endpoint": f"{base}/oauth2/v2.0/devicecode",
                "end_session_endpoint": f"{base}/oauth2/v2.0/logout",
                "tenant_region_scope": None,
                "cloud_instance_name": "microsoftonline.com",
                "cloud_graph_host_name": "graph.windows.net",
                "msgraph_host": "graph.microsoft.com",
            })

        # -- token endpoint ----------------------------------------------
        def correlation_id(self) -> str | None:
            for name in ("client-request-id", "x-client-request-id", "x-ms-client-request-id"):
                if self.headers.get(name):
                    return self.headers[name]
            return None

        def token(self, tenant: str):
            cid = self.correlation_id()
            echo = [("client-request-id", cid)] if cid else []
            if tenant != entra.tenant:
                status, obj = self.unknown_tenant(tenant)
            elif self.command != "POST":
                status, obj = aadsts(400, "invalid_request", 900561,
                                     f"The endpoint only accepts POST, OPTIONS requests. Received a {self.command} "
                                     "request.", cid)
            else:
                fault = entra.take_fault()
                if fault:
                    return self.fault(fault, echo)
                form = dict(urllib.parse.parse_qsl(self.body.decode("utf-8", "replace"), keep_blank_values=True))
                status, obj, grant = self.client_credentials(form, cid)
                if status != 200:
                    entra.refused(grant)
            headers = echo + [("x-ms-request-id", obj.get("trace_id") or str(uuid.uuid4()))]
            self.send_json(status, obj, headers)

        def fault(self, fault: dict, echo: list):
            status = int(fault.get("status", 503))
            headers = list(echo)
            if "retry_after" in fault:
                headers.append(("Retry-After", str(fault["retry_after"])))
            error = "temporarily_unavailable" if status >= 500 or status == 429 else "invalid_request"
            code = 50196 if status == 429 else 90033
            text = ("The server terminated an operation because it encountered a client request loop."
                    if status == 429 else "A transient error has occurred. Please try again.")
            self.send_json(*aadsts(status, error, code, text, self.correlation_id()), headers)

        def client_credentials(self, form: dict, cid: str | None) -> tuple[int, dict, str]:
            grant = "client_secret" if "client_secret" in form else (
                "workload_identity" if "client_assertion" in form else "client_credentials")

            def missing(name: str):
                return (*aadsts(400, "invalid_request", 900144, "The request body must contain the following "
                                                                f"parameter: '{name}'.", cid), grant)

            if not form.get("grant_type"):
                return missing("grant_type")
            if form["grant_type"] != "client_credentials":
                return (*aadsts(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type "
                                                                      f"'{form['grant_type']}'.", cid), grant)
            client_id = form.get("client_id", "")
            if not client_id:
                return missing("client_id")
            if not form.get("scope"):
                return missing("scope")
            app = entra.apps.get(client_id)
            if app is None:
                return (*aadsts(400, "unauthorized_client", 700016,
                                f"Application with identifier '{client_id}' was not found in the directory "
                                f"'{entra.tenant}'. This can happen if the application has not been installed by the "
                                "administrator of the tenant or consented to by any user in the tenant. You may have "
                                "sent your authentication request to the wrong tenant.", cid), grant)
            scope = form["scope"].strip()
            if len(scope.split()) == 1 and not scope.endswith("/.default"):
                return (*aadsts(400, "invalid_scope", 1002012,
                                f"The provided value for scope {scope} is not valid. Client credential flows "
                                "must have a scope value with /.default suffixed to the resource identifier "
                                "(application ID URI).", cid), grant)
            resource = scope[: -len("/.default")]
            if len(scope.split()) != 1 or not (resource.startswith(("https://", "http://", "api://"))
                                               or _is_guid(resource)):
                return (*aadsts(400, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is "
                                                             f"not valid. The scope {scope} is not valid.", cid), grant)

            if "client_secret" in form:
                if not app["secret"] or not hmac.compare_digest(form["client_secret"].encode(),
                                                                app["secret"].encode()):
                    return (*aadsts(401, "invalid_client", 7000215,
                                    "Invalid client secret provided. Ensure the secret being sent in the request is "
                                    "the client secret value, not the client secret ID, for a secret added to app "
                                    f"'{client_id}'.", cid), grant)
            elif "client_assertion" in form or "client_assertion_type" in form:
                if form.get("client_assertion_type") != ASSERTION_TYPE:
                    return (*aadsts(400, "invalid_request", 70002 if form.get("client_assertion_type") else 900144,
                                    "The request body must contain the following parameter: 'client_assertion_type'."
                                    if not form.get("client_assertion_type") else
                                    f"Invalid client_assertion_type '{form['client_assertion_type']}'.", cid), grant)
                problem = self.check_assertion(app, form.get("client_assertion", ""), cid)
                if problem:
                    return (*problem, grant)
            else:
                return (*aadsts(401, "invalid_client", 7000218, "The request body must contain the following "
                                                                "parameter: 'client_assertion' or 'client_secret'.",
                                cid), grant)
            token, lifetime, _now = entra.access_token(client_id, app["object_id"], resource)
            entra.issued(grant, client_id, resource)
            return 200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime,
                         "access_token": token}, grant

        def check_assertion(self, app: dict, assertion: str, cid: str | None) -> tuple[int, dict] | None:
            """Workload identity federation: match a federated credential, then
            check the cluster issuer's signature and the time range."""
            if not app["federated"]:
                return aadsts(401, "invalid_client", 70021, "No matching federated identity record found for "
                                                            "presented assertion.", cid)
            try:
                header, claims = jwt_parse(assertion)
            except InvalidToken:
                return aadsts(401, "invalid_client", 50027, "JWT token is invalid or malformed.", cid)
            iss, sub = claims.get("iss"), claims.get("sub")
            auds = claims.get("aud") if isinstance(claims.get("aud"), list) else [claims.get("aud")]
            candidates = [f for f in app["federated"] if f["issuer"] == iss]
            if not candidates:
                return aadsts(401, "invalid_client", 700211, f"No matching federated identity record found for "
                                                             f"presented assertion issuer '{iss}'. Please check your "
                                                             "federated identity credential Subject, Audience and "
                                                             "Issuer against the presented assertion. "
                                                             "https://learn.microsoft.com/entra/workload-id/"
                                                             "workload-identity-federation", cid)
            keys = {entra.cluster_kid: entra.cluster.public_key()} if iss == entra.cluster_issuer else {}
            try:
                jwt_verify(assertion, keys)
            except InvalidToken:
                return aadsts(401, "invalid_client", 700027, "Client assertion failed signature validation.", cid)
            now = time.time()
            exp, nbf = claims.get("exp"), claims.get("nbf", claims.get("iat", 0))
            if not isinstance(exp, (int, float)) or exp + ASSERTION_SKEW < now or nbf - ASSERTION_SKEW > now:
                return aadsts(401, "invalid_client", 700024,
                              f"Client assertion is not within its valid time range. Current time: {_iso(now)}, "
                              f"assertion valid from {_iso(nbf or 0)}, expiry time of assertion "
                              f"{_iso(exp if isinstance(exp, (int, float)) else 0)}. Review the documentation at "
                              "https://learn.microsoft.com/entra/identity-platform/certificate-credentials .", cid)
            candidates = [f for f in candidates if f["audience"] in auds]
            if not candidates:
                return aadsts(401, "invalid_client", 700212, "No matching federated identity record found for "
                                                             f"presented assertion audience '{auds[0]}'. Please check "
                                                             "your federated identity credential Subject, Audience and "
                                                             "Issuer against the presented assertion.", cid)
            if not any(f["subject"] == sub for f in candidates):
                return aadsts(401, "invalid_client", 700213, "No matching federated identity record found for "
                                                             f"presented assertion subject '{sub}'. Check your "
                                                             "federated identity credential Subject, Audience and "
                                                             "Issuer against the presented assertion. "
                                                             "https://learn.microsoft.com/entra/workload-id/"
                                                             "workload-identity-federation", cid)
            return None

        # -- managed identity --------------------------------------------
        def managed_identity(self, selectors: dict) -> dict | None:
            """The identity a managed-identity request names, or the
            system-assigned one when it names none."""
            client_id, object_id, res_id = selectors.get("client_id"), selectors.get("object_id"), \
                selectors.get("res_id")
            if not (client_id or object_id or res_id):
                return entra.system_mi
            for m in entra.managed.values():
                if (client_id and m["client_id"] == client_id) or (object_id and m["object_id"] == object_id) or \
                        (res_id and m.get("resource_id") == res_id):
                    return m
            return None

        def imds(self):
            q = self.query
            if self.headers.get("Metadata", "").lower() != "true":
                entra.refused("imds")
                return self.send_json(400, {"error": "invalid_request",
                                            "error_description": "Required metadata header not specified"})
            if not q.get("api-version"):
                entra.refused("imds")
                return self.send_json(400, {"error": "invalid_request",
                                            "error_description": "Required query variable 'api-version' is missing"})
            if not q.get("resource"):
                entra.refused("imds")
                return self.send_json(400, {"error": "invalid_request",
                                            "error_description": "Required audience parameter not specified"})
            mi = self.managed_identity({"client_id": q.get("client_id"), "object_id": q.get("object_id"),
                                        "res_id": q.get("msi_res_id") or q.get("mi_res_id")})
            if mi is None:
                entra.refused("imds")
                return self.send_json(400, {"error": "invalid_request", "error_description": "Identity not found"})
            resource = q["resource"]
            token, lifetime, now = entra.access_token(mi["client_id"], mi["object_id"], resource)
            entra.issued("imds", mi["client_id"], resource)
            self.send_json(200, {"access_token": token, "client_id": mi["client_id"], "expires_in": str(lifetime),
                                 "expires_on": str(now + lifetime), "ext_expires_in": str(lifetime),
                                 "not_before": str(now - ISSUE_BACKDATE), "resource": resource,
                                 "token_type": "Bearer"})

        def app_service(self):
            q = self.query
            given = self.headers.get("X-IDENTITY-HEADER")
            if not entra.identity_header or not given or not hmac.compare_digest(given.encode(),
                                                                                 entra.identity_header.encode()):
                entra.refused("app_service")
                return self.send_json(401, {"statusCode": 401, "message": "Unauthorized: the X-IDENTITY-HEADER "
                                                                          "request header is missing or wrong.",
                                            "correlationId": str(uuid.uuid4())})
            if q.get("api-version") != "2019-08-01" or not q.get("resource"):
                entra.refused("app_service")
                problem = "resource is required" if q.get("api-version") == "2019-08-01" else \
                    f"api-version '{q.get('api-version')}' is not supported; use 2019-08-01"
                return self.send_json(400, {"statusCode": 400, "message": problem,
                                            "correlationId": str(uuid.uuid4())})
            mi = self.managed_identity({"client_id": q.get("client_id"),
                                        "object_id": q.get("principal_id") or q.get("object_id"),
                                        "res_id": q.get("mi_res_id")})
            if mi is None:
                entra.refused("app_service")
                return self.send_json(400, {"statusCode": 400, "message": "Unable to load the proper Managed Identity.",
                                            "correlationId": str(uuid.uuid4())})
            resource = q["resource"]
            token, lifetime, now = entra.access_token(mi["client_id"], mi["object_id"], resource)
            entra.issued("app_service", mi["client_id"], resource)
            self.send_json(200, {"access_token": token, "expires_on": str(now + lifetime), "resource": resource,
                                 "token_type": "Bearer", "client_id": mi["client_id"]})

        # -- test controls -----------------------------------------------
        def admin(self, parts: list[str]):
            try:
                body = self.json_body() if self.command == "POST" else {}
            except ValueError:
                return self.send_json(400, admin_error("body is not JSON"))
            if parts == ["stats"] and self.command == "GET":
                with entra.lock:
                    return self.send_json(200, json.loads(json.dumps(entra.stats)))
            if parts == ["issued-tokens"] and self.command == "GET":
                client = self.query.get("client_id")
                with entra.lock:
                    tokens = [dict(t) for t in entra.issued_tokens if client in (None, t["client_id"])]
                return self.send_json(200, {"tokens": tokens})
            if self.command != "POST":
                return self.send_json(404, admin_error(f"no admin route {self.command} {self.url_path}"))
            if parts == ["reset"]:
                with entra.lock:
                    entra.reset()
                return self.send_json(200, {})
            if parts == ["config"]:
                if "lifetime" in body:
                    if not isinstance(body["lifetime"], int):
                        return self.send_json(400, admin_error("lifetime must be an integer (seconds)"))
                    with entra.lock:
                        entra.lifetime = body["lifetime"]
                with entra.lock:
                    return self.send_json(200, {"lifetime": entra.lifetime})
            if parts == ["faults"]:
                faults = body if isinstance(body, list) else [body]
                with entra.lock:
                    for f in faults:
                        entra.faults.extend([f] * int(f.get("count", 1)))
                    return self.send_json(200, {"pending_faults": len(entra.faults)})
            if parts == ["federated-token"]:
                return self.mint_federated(body)
            if parts == ["withdraw-key"]:
                if not isinstance(body, dict):
                    return self.send_json(400, admin_error("body is not a JSON object"))
                kid = body.get("kid", entra.kid)
                with entra.lock:
                    if kid not in {k["kid"] for k in entra.published_keys}:
                        return self.send_json(400, admin_error(f"no published key {kid!r}"))
                    entra.withdrawn.add(kid)
                    return self.send_json(200, {"withdrawn": sorted(entra.withdrawn)})
            self.send_json(404, admin_error(f"no admin route {self.command} {self.url_path}"))

        def mint_federated(self, body: dict):
            cred = {}
            if body.get("client_id"):
                app = entra.apps.get(body["client_id"])
                if app is None or not app["federated"]:
                    return self.send_json(400, admin_error(f"{body['client_id']!r} has no federated credential"))
                cred = next((f for f in app["federated"] if f["issuer"] == entra.cluster_issuer), app["federated"][0])
            subject = body.get("subject") or cred.get("subject")
            if not subject:
                return self.send_json(400, admin_error("give client_id or subject"))
            issuer = body.get("issuer") or cred.get("issuer") or entra.cluster_issuer
            audience = body.get("audience") or cred.get("audience") or FEDERATED_AUDIENCE
            lifetime = int(body.get("lifetime", 3600))
            token, expires_on = entra.federated_token(subject, issuer, audience, lifetime)
            self.send_json(200, {"token": token, "issuer": issuer, "subject": subject, "audience": audience,
                                 "expires_on": expires_on})

    return Handler


def _is_guid(text: str) -> bool:
    try:
        uuid.UUID(text)
        return True
    except ValueError:
        return False


# -- CLI ------------------------------------------------------------------------


def load_principals(args: argparse.Namespace) -> dict:
    principals: dict = json.loads(Path(args.principals).read_text()) if args.principals else {}
    if args.tenant:
        principals["tenant"] = args.tenant
    principals.setdefault("tenant", "cmk-tenant")
    for spec in args.app:
        client_id, object_id, secret = spec.split(":", 2)
        principals.setdefault("apps", []).append({"client_id": client_id, "object_id": object_id, "secret": secret})
    for spec in args.workload:
        client_id, object_id, *subject = spec.split(":", 2)
        principals.setdefault("workload", []).append({"client_id": client_id, "object_id": object_id,
                                                      "subject": subject[0] if subject else None})
    for spec in args.managed:
        client_id, object_id, *kind = spec.split(":", 2)
        principals.setdefault("managed", []).append({"client_id": client_id, "object_id": object_id,
                                                     "system_assigned": kind == ["system"]})
    if args.identity_header:
        principals["identity_header"] = args.identity_header
    return principals


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", type=parse_listen, default="127.0.0.1:0", help="plain HTTP, 127.0.0.1:PORT (0: any)")
    p.add_argument("--listen-tls", type=parse_listen, default="127.0.0.1:0", help="HTTPS, 127.0.0.1:PORT (0: any)")
    p.add_argument("--state-dir", help="where entra-cert.pem/entra-key.pem are written (default: a new temp dir)")
    p.add_argument("--principals", help="JSON file of tenant, apps, workload and managed identities")
    p.add_argument("--tenant", help="tenant id (overrides the file's; default cmk-tenant)")
    p.add_argument("--app", action="append", default=[], metavar="CLIENT:OBJECT:SECRET")
    p.add_argument("--workload", action="append", default=[], metavar="CLIENT:OBJECT[:SUBJECT]")
    p.add_argument("--managed", action="append", default=[], metavar="CLIENT:OBJECT[:system]")
    p.add_argument("--identity-header", help="the App Service X-IDENTITY-HEADER value")
    p.add_argument("--lifetime", type=int, default=3600, help="access-token lifetime in seconds")
    p.add_argument("--cluster-issuer", default=DEFAULT_CLUSTER_ISSUER, help="issuer of federated assertions")
    p.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM) instead of a self-signed one")
    p.add_argument("--tls-key", help="the private key (PEM) of --tls-cert")
    args = p.parse_args(argv)

    entra = Entra(load_principals(args), args.lifetime, args.cluster_issuer)
    state_dir = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="entra-standin-"))
    if args.tls_cert and args.tls_key:
        cert, key = Path(args.tls_cert), Path(args.tls_key)
    else:
        cert, key = write_self_signed(state_dir, "entra")
    plain, tls = start_listeners(make_handler(entra), args.listen, args.listen_tls, cert, key)
    print(f"entra: tenant {entra.tenant}, certificate {cert}", file=sys.stderr, flush=True)
    print(f"entra listening on http://{plain.server_address[0]}:{plain.server_port} "
          f"https://{tls.server_address[0]}:{tls.server_port}", flush=True)
    try:
        plain.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
