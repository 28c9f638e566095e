"""A local Azure Key Vault Managed HSM stand-in for the keys the component
uses: RSA-HSM keys with versions, wrapkey/unwrapkey with RSA-OAEP-256,
bearer-token checks, per-principal grants, and the key states that must
stop the component.

Checked against the official SDK (`azure-keyvault-keys` 4.11.3, in
tests/harness/test_standins.py): the challenge flow (401 with
`WWW-Authenticate: Bearer authorization=…, resource=https://managedhsm.azure.net`
then a bearer token), `GET /keys/{name}/` and `/keys/{name}/{version}` bundles
(`{"key": {kid, kty, key_ops, n, e}, "attributes": {…}}`), remote
`wrapkey`/`unwrapkey` results (`{"kid", "value"}`, base64url), and errors
the SDK raises as the right exceptions (403 for a disabled key's unwrap,
404 for a missing version). Checked only against Microsoft's REST reference
and reported service behaviour (shared/reference/azure-wire.md): the
`innererror` codes (`KeyDisabled`, `KeyOperationForbidden`, `AccessDenied`),
that a disabled key still wraps (a public-key operation), api-version
refusal, throttling shape.

Two listeners share one key store: HTTPS (self-signed certificate for
127.0.0.1, written to --state-dir, for the SDK) and plain HTTP (for the
component under Wasmtime, which trusts only public roots). A key id names
the listener it was read through.

Tokens: RS256, signature checked against the Entra stand-in's JWKS (--jwks),
`aud` https://managedhsm.azure.net, `iss` (--issuer), `exp`/`nbf` with 60 s
leeway; the caller is the token's `oid`, authorized per key by grants.

Test controls under `/_admin/` (plain JSON, HTTP listener only): create a key,
rotate, set state (enabled/nbf/exp), delete a version, grant/revoke, stats,
private key of a version (PEM, for independent decryption in tests), faults.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import ipaddress
import json
import ssl
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).parent))
import jwt_rs256  # noqa: E402

API_VERSIONS = {"7.4", "7.5", "7.6", "2025-06-01", "2025-07-01"}
AUDIENCE = "https://managedhsm.azure.net"
LEEWAY = 60


def b64u(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def b64u_decode(s: str) -> bytes:
    s = s.replace("+", "-").replace("/", "_").rstrip("=")
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def oaep(alg: str):
    h = hashes.SHA256() if alg == "RSA-OAEP-256" else hashes.SHA1()
    return padding.OAEP(mgf=padding.MGF1(algorithm=h), algorithm=h, label=None)


class Store:
    def __init__(self, tenant: str, jwks_url: str, issuer: str):
        self.tenant, self.jwks_url, self.issuer = tenant, jwks_url, issuer
        self.lock = threading.RLock()
        self.keys: dict[str, list[dict]] = {}
        self.grants: dict[str, dict[str, set[str]]] = {}
        self.faults: list[dict] = []
        self.jwks: dict = {}
        self.stats = {}
        self.reset_stats()

    def reset_stats(self):
        self.stats = {"get": 0, "wrapkey": 0, "unwrapkey": 0, "401": 0, "403": 0, "404": 0}

    def signing_keys(self, refresh=False):
        if refresh or not self.jwks:
            with urllib.request.urlopen(self.jwks_url) as r:
                keys = json.load(r)["keys"]
            self.jwks = {k["kid"]: rsa.RSAPublicNumbers(int.from_bytes(b64u_decode(k["e"]), "big"),
                                                        int.from_bytes(b64u_decode(k["n"]), "big")).public_key()
                         for k in keys}
        return self.jwks

    def create(self, name: str, size: int, ops: list[str]) -> dict:
        now = int(time.time())
        version = uuid.uuid4().hex
        v = {"version": version, "private": rsa.generate_private_key(public_exponent=65537, key_size=size),
             "ops": ops, "enabled": True, "nbf": None, "exp": None, "created": now, "updated": now, "deleted": False}
        with self.lock:
            self.keys.setdefault(name, []).append(v)
        return v

    def version(self, name: str, version: str | None) -> dict | None:
        with self.lock:
            versions = [v for v in self.keys.get(name, []) if not v["deleted"]]
        if not versions:
            return None
        if version in (None, ""):
            return versions[-1]
        return next((v for v in versions if v["version"] == version), None)


def kv_error(code: str, message: str, inner: str | None = None) -> dict:
    err = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return {"error": err}


def make_handler(store: Store, log, admin: bool):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            log(f"{self.command} {self.path.split('?')[0]} -> {fmt % args}")

        def reply(self, status: int, obj: dict | None, headers=()):
            body = json.dumps(obj).encode() if obj is not None else b""
            if status in (401, 403, 404):
                with store.lock:
                    store.stats[str(status)] += 1
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("x-ms-request-id", str(uuid.uuid4()))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def base(self) -> str:
            scheme = "https" if isinstance(self.connection, ssl.SSLSocket) else "http"
            return f"{scheme}://{self.headers.get('Host')}"

        def bundle(self, name: str, v: dict) -> dict:
            pub = v["private"].public_key().public_numbers()
            attrs = {"enabled": v["enabled"], "created": v["created"], "updated": v["updated"],
                     "recoveryLevel": "Recoverable+Purgeable", "recoverableDays": 90, "exportable": False}
            if v["nbf"]:
                attrs["nbf"] = v["nbf"]
            if v["exp"]:
                attrs["exp"] = v["exp"]
            return {"key": {"kid": f"{self.base()}/keys/{name}/{v['version']}", "kty": "RSA-HSM", "key_ops": v["ops"],
                            "n": b64u(pub.n.to_bytes((pub.n.bit_length() + 7) // 8, "big")),
                            "e": b64u(pub.e.to_bytes(3, "big"))},
                    "attributes": attrs}

        def caller(self) -> str | None:
            """The token's object id, or None after answering 401."""
            auth = self.headers.get("Authorization", "")
            if not auth.startswith("Bearer "):
                self.reply(401, kv_error("Unauthorized", "AKV10000: Request is missing a Bearer or PoP token."), [
                    ("WWW-Authenticate", f'Bearer authorization="https://login.microsoftonline.com/{store.tenant}", resource="{AUDIENCE}"')])
                return None
            token = auth[len("Bearer "):]
            try:
                try:
                    claims = jwt_rs256.verify(token, store.signing_keys())
                except jwt_rs256.InvalidToken as e:
                    if "unknown signing key" not in str(e):
                        raise
                    claims = jwt_rs256.verify(token, store.signing_keys(refresh=True))
            except jwt_rs256.InvalidToken as e:
                self.reply(401, kv_error("Unauthorized", f"AKV10022: Invalid token: {e}."))
                return None
            now = time.time()
            problem = None
            if claims.get("aud") != AUDIENCE:
                problem = f"AKV10022: Invalid audience. Expected {AUDIENCE}, found: {claims.get('aud')}."
            elif claims.get("iss") != store.issuer:
                problem = "AKV10032: Invalid issuer."
            elif claims.get("exp", 0) + LEEWAY < now:
                problem = "AKV10022: Token is expired."
            elif claims.get("nbf", 0) - LEEWAY > now:
                problem = "AKV10022: Token is not yet valid."
            if problem:
                self.reply(401, kv_error("Unauthorized", problem))
                return None
            return claims.get("oid")

        def authorized(self, oid: str, name: str, op: str) -> bool:
            with store.lock:
                ok = op in store.grants.get(name, {}).get(oid, set())
            if not ok:
                self.reply(403, kv_error("Forbidden", f"Caller is not authorized to perform action on resource. "
                                                     f"If role assignments were recently changed, please wait several minutes. "
                                                     f"Caller: oid={oid}; Action: Microsoft.KeyVault/managedHsm/keys/{op}/action; "
                                                     f"Resource: /keys/{name}", "AccessDenied"))
            return ok

        def api_version_ok(self, q: dict) -> bool:
            v = q.get("api-version")
            if v not in API_VERSIONS:
                self.reply(400, kv_error("BadParameter", f"The specified version ({v}) is not recognized. "
                                                         f"Consider using the latest supported version ({max(API_VERSIONS)})."))
                return False
            return True

        def fault(self) -> bool:
            with store.lock:
                f = store.faults.pop(0) if store.faults else None
            if f is None:
                return False
            status = int(f.get("status", 503))
            headers = [("Retry-After", str(f["retry_after"]))] if "retry_after" in f else []
            code = "Throttled" if status == 429 else "ServiceUnavailable"
            self.reply(status, kv_error(code, f"injected {status}"), headers)
            return True

        def read_body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            parts = url.path.strip("/").split("/")
            if admin and parts[0] == "_admin":
                return self.admin_get(parts[1:])
            if parts[0] != "keys" or len(parts) not in (2, 3):
                return self.reply(404, kv_error("NotFound", "Not found"))
            if not self.api_version_ok(q):
                return
            oid = self.caller()
            if oid is None or self.fault() or not self.authorized(oid, parts[1], "get"):
                return
            v = store.version(parts[1], parts[2] if len(parts) == 3 else None)
            if v is None:
                return self.reply(404, kv_error("KeyNotFound", f"A key with (name/id) {'/'.join(parts[1:])} was not found in this key vault. "
                                                              "If you recently deleted this key you may be able to recover it using the correct recovery command."))
            with store.lock:
                store.stats["get"] += 1
            self.reply(200, self.bundle(parts[1], v))

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            parts = url.path.strip("/").split("/")
            raw = self.read_body()
            if admin and parts[0] == "_admin":
                return self.admin_post(parts[1:], json.loads(raw or b"{}"))
            if parts[0] != "keys" or len(parts) != 4 or parts[3] not in ("wrapkey", "unwrapkey"):
                return self.reply(404, kv_error("NotFound", "Not found"))
            if not self.api_version_ok(q):
                return
            oid = self.caller()
            op = "wrapKey" if parts[3] == "wrapkey" else "unwrapKey"
            if oid is None or self.fault() or not self.authorized(oid, parts[1], op):
                return
            v = store.version(parts[1], parts[2])
            if v is None:
                return self.reply(404, kv_error("KeyNotFound", f"A key with (name/id) {parts[1]}/{parts[2]} was not found in this key vault."))
            try:
                req = json.loads(raw)
                alg, value = req["alg"], b64u_decode(req["value"])
            except Exception:
                return self.reply(400, kv_error("BadParameter", "The request body is not a valid key operation request."))
            if alg not in ("RSA-OAEP-256", "RSA-OAEP"):
                return self.reply(400, kv_error("BadParameter", f"Algorithm {alg} is not supported for this key."))
            if op not in v["ops"]:
                return self.reply(403, kv_error("Forbidden", f"Operation {op} is not permitted on this key.", "KeyOperationForbidden"))
            now = time.time()
            if op == "unwrapKey":
                if not v["enabled"]:
                    return self.reply(403, kv_error("Forbidden", "Operation unwrapKey is not allowed on a disabled key.", "KeyDisabled"))
                if v["exp"] and now >= v["exp"]:
                    return self.reply(403, kv_error("Forbidden", "Operation unwrapKey is not allowed on an expired key.", "KeyExpired"))
                if v["nbf"] and now < v["nbf"]:
                    return self.reply(403, kv_error("Forbidden", "Operation unwrapKey is not allowed before the key's activation date.", "KeyNotYetValid"))
                try:
                    out = v["private"].decrypt(value, oaep(alg))
                except Exception:
                    return self.reply(400, kv_error("BadParameter", "Invalid ciphertext: the value could not be unwrapped."))
            else:
                # A public-key operation: the service performs it even for a
                # disabled key (azure-wire.md).
                out = v["private"].public_key().encrypt(value, oaep(alg))
            with store.lock:
                store.stats[parts[3]] += 1
            self.reply(200, {"kid": f"{self.base()}/keys/{parts[1]}/{v['version']}", "value": b64u(out)})

        def do_DELETE(self):
            parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
            if admin and parts[:2] == ["_admin", "keys"] and len(parts) in (3, 4):
                with store.lock:
                    for v in store.keys.get(parts[2], []):
                        if len(parts) == 3 or v["version"] == parts[3]:
                            v["deleted"] = True
                return self.reply(200, {})
            self.reply(404, kv_error("NotFound", "Not found"))

        # -- test controls -------------------------------------------------
        def admin_get(self, parts):
            if parts == ["stats"]:
                with store.lock:
                    return self.reply(200, dict(store.stats))
            if len(parts) == 4 and parts[0] == "keys" and parts[3] == "private-pem":
                v = store.version(parts[1], parts[2])
                pem = v["private"].private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()).decode()
                return self.reply(200, {"pem": pem})
            self.reply(404, {})

        def admin_post(self, parts, body):
            if parts == ["keys"]:
                v = store.create(body["name"], int(body.get("size", 2048)), body.get("ops", ["wrapKey", "unwrapKey"]))
                return self.reply(200, self.bundle(body["name"], v))
            if len(parts) == 3 and parts[0] == "keys" and parts[2] == "rotate":
                latest = store.version(parts[1], None)
                v = store.create(parts[1], latest["private"].key_size, latest["ops"])
                return self.reply(200, self.bundle(parts[1], v))
            if len(parts) == 3 and parts[0] == "keys" and parts[2] == "state":
                v = store.version(parts[1], body.get("version"))
                with store.lock:
                    for k in ("enabled", "nbf", "exp"):
                        if k in body:
                            v[k] = body[k]
                    v["updated"] = int(time.time())
                return self.reply(200, self.bundle(parts[1], v))
            if parts == ["grants"]:
                with store.lock:
                    store.grants.setdefault(body["key"], {})[body["object_id"]] = set(body.get("ops", []))
                return self.reply(200, {})
            if parts == ["faults"]:
                with store.lock:
                    for f in body:
                        store.faults.extend([f] * int(f.get("count", 1)))
                return self.reply(200, {})
            if parts == ["reset-stats"]:
                with store.lock:
                    store.reset_stats()
                return self.reply(200, {})
            self.reply(404, {})

    return Handler


def self_signed(state_dir: Path) -> tuple[Path, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                        x509.DNSName("localhost")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = state_dir / "hsm-cert.pem", state_dir / "hsm-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True, help="HOST:PORT for plain HTTP (component, admin)")
    p.add_argument("--listen-tls", required=True, help="HOST:PORT for HTTPS (official SDK)")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--tenant", required=True)
    p.add_argument("--jwks", required=True, help="the Entra stand-in's JWKS URL")
    p.add_argument("--issuer", required=True)
    a = p.parse_args()
    store = Store(a.tenant, a.jwks, a.issuer)

    def log(line):
        print(line, file=sys.stderr, flush=True)

    host, port = a.listen.rsplit(":", 1)
    plain = ThreadingHTTPServer((host, int(port)), make_handler(store, log, admin=True))
    thost, tport = a.listen_tls.rsplit(":", 1)
    tls = ThreadingHTTPServer((thost, int(tport)), make_handler(store, log, admin=False))
    cert, key = self_signed(Path(a.state_dir))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True)
    for s in (plain, tls):
        s.daemon_threads = True
    threading.Thread(target=tls.serve_forever, daemon=True).start()
    print(f"hsm listening on http://{host}:{plain.server_port} https://{thost}:{tls.server_port}", flush=True)
    plain.serve_forever()


if __name__ == "__main__":
    main()
