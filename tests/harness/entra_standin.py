"""A local Microsoft Entra ID stand-in: the token endpoints the component
calls, issuing RS256 access tokens that the Managed HSM stand-in validates.

Routes (shapes from Microsoft's identity platform and managed-identity
documentation, and the azure-identity library's requests):
- `POST /{tenant}/oauth2/v2.0/token`: client-credentials grant with
  `client_secret`, or with `client_assertion_type=…jwt-bearer` and a
  `client_assertion` (workload identity: a service-account token minted by
  this stand-in's own "cluster issuer", see `/_entra/federated-token`).
  Success `{"token_type","expires_in","ext_expires_in","access_token"}`;
  refusals Entra-shaped `{"error","error_description" (AADSTS…),
  "error_codes","timestamp","trace_id","correlation_id"}`.
- `GET /metadata/identity/oauth2/token` (IMDS): needs `Metadata: true`;
  answers with string-valued `expires_in`/`expires_on` as IMDS does.
- `GET /msi/token` (App Service / Container Apps): needs `X-IDENTITY-HEADER`.
- `GET /{tenant}/discovery/v2.0/keys`: the signing keys (JWKS).

Tokens: `iss` = `https://login.microsoftonline.com/{tenant}/v2.0`, `aud` =
the scope without `/.default`, `oid`/`sub` = the principal's object id,
`appid`/`azp`, `tid`, `iat`/`nbf`/`exp` (lifetime settable).

Test controls under `/_entra/`: `stats` (token requests per grant type and
per client), `reset`, `config` (`{"lifetime": seconds}`), `federated-token`
(mint a workload-identity assertion for a client id). Secrets and tokens are
never logged.

    entra_standin.py --listen 127.0.0.1:PORT --principals FILE.json
FILE.json: {"tenant": "...", "apps": [{"client_id", "object_id", "secret"?}],
"managed": [{"client_id", "object_id"}], "identity_header": "..."}
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.parse
import uuid
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography.hazmat.primitives.asymmetric import rsa

sys.path.insert(0, __file__.rsplit("/", 1)[0])
import jwt_rs256  # noqa: E402

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
FEDERATED_ISSUER = "https://oidc.cluster.local/"
FEDERATED_AUDIENCE = "api://AzureADTokenExchange"


class Entra:
    def __init__(self, principals: dict):
        self.tenant = principals["tenant"]
        self.apps = {a["client_id"]: a for a in principals.get("apps", [])}
        self.managed = {m["client_id"]: m for m in principals.get("managed", [])}
        self.identity_header = principals.get("identity_header", "")
        self.signing = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = uuid.uuid4().hex[:16]
        self.cluster = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.cluster_kid = "cluster-" + uuid.uuid4().hex[:8]
        self.lifetime = 3600
        self.lock = threading.Lock()
        self.reset()

    def reset(self):
        self.stats = {"client_secret": 0, "workload_identity": 0, "imds": 0, "app_service": 0, "refused": 0,
                      "by_client": {}}

    @property
    def issuer(self):
        return f"https://login.microsoftonline.com/{self.tenant}/v2.0"

    def count(self, grant: str, client_id: str):
        with self.lock:
            self.stats[grant] += 1
            self.stats["by_client"][client_id] = self.stats["by_client"].get(client_id, 0) + 1

    def token(self, client_id: str, object_id: str, resource: str) -> tuple[str, int]:
        now = int(time.time())
        with self.lock:
            lifetime = self.lifetime
        claims = {"aud": resource, "iss": self.issuer, "iat": now, "nbf": now, "exp": now + lifetime,
                  "oid": object_id, "sub": object_id, "appid": client_id, "azp": client_id, "tid": self.tenant,
                  "jti": uuid.uuid4().hex, "ver": "2.0"}
        return jwt_rs256.sign(claims, self.signing, self.kid), lifetime

    def federated_token(self, client_id: str) -> str:
        now = int(time.time())
        claims = {"iss": FEDERATED_ISSUER, "sub": f"system:serviceaccount:cmk:{client_id}", "aud": [FEDERATED_AUDIENCE],
                  "iat": now, "nbf": now, "exp": now + 3600}
        return jwt_rs256.sign(claims, self.cluster, self.cluster_kid)


def aadsts(status: int, error: str, code: int, text: str):
    trace, corr = str(uuid.uuid4()), str(uuid.uuid4())
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return status, {
        "error": error,
        "error_description": f"AADSTS{code}: {text} Trace ID: {trace} Correlation ID: {corr} Timestamp: {stamp}",
        "error_codes": [code], "timestamp": stamp, "trace_id": trace, "correlation_id": corr,
    }


def make_handler(entra: Entra, log):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            log(f"{self.command} {self.path.split('?')[0]} -> {fmt % args}")

        def reply(self, status: int, obj: dict, headers=()):
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers:
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def do_GET(self):
            url = urllib.parse.urlsplit(self.path)
            q = dict(urllib.parse.parse_qsl(url.query))
            if url.path == f"/{entra.tenant}/discovery/v2.0/keys":
                return self.reply(200, {"keys": [jwt_rs256.jwk(entra.signing, entra.kid)]})
            if url.path == "/_entra/stats":
                with entra.lock:
                    return self.reply(200, json.loads(json.dumps(entra.stats)))
            if url.path == "/metadata/identity/oauth2/token":
                if self.headers.get("Metadata", "").lower() != "true":
                    return self.reply(400, {"error": "invalid_request",
                                            "error_description": "Required metadata header not specified"})
                return self.managed_identity("imds", q)
            if url.path == "/msi/token":
                if not entra.identity_header or self.headers.get("X-IDENTITY-HEADER") != entra.identity_header:
                    return self.reply(401, {"statusCode": 401, "message": "Unauthorized: X-IDENTITY-HEADER is missing or wrong"})
                return self.managed_identity("app_service", q)
            self.reply(404, {"error": "not_found"})

        def managed_identity(self, kind: str, q: dict):
            resource = q.get("resource", "")
            client_id = q.get("client_id") or "system"
            mi = entra.managed.get(client_id)
            if not resource or mi is None:
                with entra.lock:
                    entra.stats["refused"] += 1
                return self.reply(400, {"error": "invalid_request",
                                        "error_description": "Identity not found" if mi is None else "resource is required"})
            token, lifetime = entra.token(client_id, mi["object_id"], resource)
            entra.count(kind, client_id)
            now = int(time.time())
            out = {"access_token": token, "expires_on": str(now + lifetime), "resource": resource,
                   "token_type": "Bearer", "client_id": client_id}
            if kind == "imds":
                out.update({"expires_in": str(lifetime), "ext_expires_in": str(lifetime), "not_before": str(now)})
            self.reply(200, out)

        def do_POST(self):
            url = urllib.parse.urlsplit(self.path)
            raw = self.body()
            if url.path == "/_entra/reset":
                with entra.lock:
                    entra.reset()
                return self.reply(200, {})
            if url.path == "/_entra/config":
                cfg = json.loads(raw or b"{}")
                with entra.lock:
                    entra.lifetime = int(cfg.get("lifetime", entra.lifetime))
                return self.reply(200, {"lifetime": entra.lifetime})
            if url.path == "/_entra/federated-token":
                return self.reply(200, {"token": entra.federated_token(json.loads(raw)["client_id"])})
            if url.path != f"/{entra.tenant}/oauth2/v2.0/token":
                return self.reply(*aadsts(400, "invalid_request", 90002, f"Tenant '{url.path.split('/')[1]}' not found."))
            form = dict(urllib.parse.parse_qsl(raw.decode()))
            status, obj = self.client_credentials(form)
            if status != 200:
                with entra.lock:
                    entra.stats["refused"] += 1
            cid = self.headers.get("client-request-id")
            self.reply(status, obj, [("client-request-id", cid)] if cid else ())

        def client_credentials(self, form: dict):
            if form.get("grant_type") != "client_credentials":
                return aadsts(400, "unsupported_grant_type", 70003, "The app requested an unsupported grant type.")
            app = entra.apps.get(form.get("client_id", ""))
            if app is None:
                return aadsts(400, "unauthorized_client", 700016,
                              f"Application with identifier '{form.get('client_id')}' was not found in the directory.")
            scope = form.get("scope", "")
            if not scope.endswith("/.default"):
                return aadsts(400, "invalid_scope", 70011, "The provided value for the input parameter 'scope' is not valid.")
            if "client_secret" in form:
                if not app.get("secret") or form["client_secret"] != app["secret"]:
                    return aadsts(401, "invalid_client", 7000215, "Invalid client secret provided.")
                grant = "client_secret"
            elif form.get("client_assertion_type") == ASSERTION_TYPE:
                try:
                    claims = jwt_rs256.verify(form.get("client_assertion", ""), {entra.cluster_kid: entra.cluster.public_key()})
                except jwt_rs256.InvalidToken as e:
                    return aadsts(401, "invalid_client", 700211, f"No matching federated identity record found for presented assertion ({e}).")
                now = time.time()
                if (claims.get("iss") != FEDERATED_ISSUER or FEDERATED_AUDIENCE not in claims.get("aud", [])
                        or claims.get("sub") != f"system:serviceaccount:cmk:{app['client_id']}"):
                    return aadsts(401, "invalid_client", 700211, "No matching federated identity record found for presented assertion.")
                if claims.get("exp", 0) < now:
                    return aadsts(401, "invalid_client", 700024, "Client assertion is not within its valid time range.")
                grant = "workload_identity"
            else:
                return aadsts(401, "invalid_client", 7000218,
                              "The request body must contain the following parameter: 'client_assertion' or 'client_secret'.")
            token, lifetime = entra.token(app["client_id"], app["object_id"], scope[: -len("/.default")])
            entra.count(grant, app["client_id"])
            return 200, {"token_type": "Bearer", "expires_in": lifetime, "ext_expires_in": lifetime, "access_token": token}

    return Handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True)
    p.add_argument("--principals", required=True)
    a = p.parse_args()
    entra = Entra(json.loads(open(a.principals).read()))
    host, port = a.listen.rsplit(":", 1)

    def log(line):
        print(line, file=sys.stderr, flush=True)

    server = ThreadingHTTPServer((host, int(port)), make_handler(entra, log))
    server.daemon_threads = True
    print(f"entra listening on http://{host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
