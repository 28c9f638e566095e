"""Cosmos DB master-key authorization, enforced by a reverse proxy in front of
a local Cosmos REST server.

Why: `@vercel/cosmosdb-server` accepts any `authorization` header (or none),
so on its own a wrongly signed request would pass every local test and fail
only against the real service. This proxy refuses what the service refuses
and forwards the rest unchanged.

What it checks, for every request (`verify()`, callable from tests):

- `authorization` is present; it is URL-decoded (`%3d` and `%3D` alike) and
  parsed as `type=…&ver=…&sig=…`. `type=master` is checked as below;
  `type=aad` (Entra ID) only when `--aad-jwks` is given, as a JWT: RS256
  signature against that JWKS (the Entra stand-in's, refetched once for an
  unknown `kid`), `aud` exactly one of `--aad-audience` or
  `https://cosmos.azure.com` (the service accepts its account's resource and
  that one; a trailing slash does not match, as reported from the service),
  `iss` one of `--aad-issuer`, `exp` not passed and `nbf` reached (60 s of
  leeway). Other types are refused.
- `x-ms-date` is present, an RFC 1123 date, and within 15 minutes of now.
- the signature. The resource type and resource link are derived from the
  method and path as the service derives them:
      segments = the path's non-empty segments, each percent-decoded
      none                 -> type "",               link ""
      odd count  (a feed)  -> type = last segment,   link = all but the last
      even count (an item) -> type = second-to-last, link = the whole path
  so POST /dbs/d/colls/c/docs -> (docs, dbs/d/colls/c), GET …/docs/id ->
  (docs, dbs/d/colls/c/docs/id), POST /dbs -> (dbs, ""), GET / -> ("", ""),
  GET …/colls/c/pkranges -> (pkranges, dbs/d/colls/c). Links keep the ids as
  written. When the database segment is a resource id (8 characters of base64
  for 4 bytes, as the SDKs test it), the link is instead the addressed
  resource's rid, lower-cased.
  The expected `type=master&ver=1.0&sig=…` is then recomputed by the official
  Python SDK's own helper, `azure.cosmos.auth.__get_authorization_token_using_master_key`
  (azure-cosmos 4.17.1): an oracle independent of the component's Rust code,
  so both cannot share one mistake. The HMAC is not re-implemented here.

Answers, shaped like the service's (`{"code","message"}` JSON and an
`x-ms-activity-id` header):
- 401 `Unauthorized`: missing or malformed `authorization`, missing or
  unparsable `x-ms-date`, a refused token type, a signature mismatch (the
  message quotes the payload the proxy signed, as the service does; never the
  key). For tokens: a wrong audience ("Provided AAD token is intended for
  [...]. This database account accepts tokens intended for [...]", 401 with
  sub-status 5008 as reported from the service), an expired token ("Provided
  AAD token has been expired since [...]. Current server time is [...].
  Please refresh the AAD token.", 401 as reported), and (in this proxy's own
  words, no service report found) a bad signature, unknown key, wrong issuer
  or a token not yet valid.
- 403 `Forbidden` "The authorization token is not valid at the current
  time…": `x-ms-date` more than 15 minutes from now. The service answers
  clock skew with 403, not 401 (SDK and tool reports show "Forbidden (403)"
  with this message, quoting token start, expiry and server time).

Everything else is forwarded (method, path and query, headers, body) and the
upstream's status, headers and body are relayed, with two exceptions where
the local server does not do what the service does. A point read of a
missing document, which the local server answers with 500, is answered 404
`NotFound` as the service does. And a write that asks for a minimal answer,
which the local server ignores, gets one (`minimal_answer()`): a document
write (POST or PUT of a document) with `Prefer: return=minimal` is answered
with its status and headers and no body, and in a transactional batch each
successful operation that carried `"minimalReturnPreference": true` loses
its `resourceBody`, as the official SDKs' "content response on write" off
asks of the service (.NET: `EnableContentResponseOnWrite = false` "removes
the resource from the response"; the Python SDK's `no_response` sends the
header, the Java SDK the header and the batch member). `minimal` in the
counters counts the answers so cut. The local server closes every
connection after one answer; the proxy keeps the client's HTTP/1.1
connection alive and opens one upstream connection per request.

Counters (`total`, `rejected`, `forwarded`, `faulted`, `pending_faults`,
`minimal`, and `accepted_by_type` {"master": n, "aad": n}) are at
`GET /_sigcheck/stats`; `POST /_sigcheck/reset` zeroes them and drops pending
faults. These paths are never forwarded and not counted.

The counters are what the component sent, and the tests' own reads with the
official Python SDK sit between their snapshots. That SDK (4.17) also reads
the database account (`GET /`) from a background thread: once, as a health
check, right after each new client's first request, and again every five
minutes. Those reads would land in whatever test runs next and take faults
queued for the component, which never reads the account. So a correctly
signed `GET /` whose `User-Agent` is the Python SDK's is forwarded, counted
only in `sdk_account_reads`, and never faulted; a wrongly signed one is
refused and counted as any other.

Fault injection, for retry tests: `POST /_sigcheck/faults` with a JSON list
queues faults that the next correctly signed requests get instead of being
forwarded (so, as with the service's throttling, nothing is applied):
`{"status": 429, "retry_after_ms": 200}` (Cosmos-shaped 429 with
`x-ms-retry-after-ms`), `{"status": 503}` (or any status), `{"hang_ms": N}`
(answer nothing for N ms, then close), `{"reset": true}` (close the
connection without an answer), `{"batch_status": 429, "retry_after_ms": 200}`
(a transactional batch answered as the service answers one whose operation
was throttled: 207, the first operation 429 with `subStatusCode` 3200 and
`retryAfterMilliseconds`, every other 424; 449 and others alike).
`{"lose_answer": true}` is the one fault that *is* applied: the request is
forwarded and written, then the connection is reset instead of answering
(the write happened, the answer was lost), so a retry repeats a write the
store already holds.
`{"delay_ms": N}` is applied too: the request is held N ms, then forwarded
(a slow store). `"count": K` repeats a fault K times. `max_in_flight` in the
counters is the most correctly signed requests held at once.

The key and tokens are never logged.

    python sigcheck.py --listen 127.0.0.1:PORT --upstream http://127.0.0.1:PORT \\
        --key BASE64KEY [--aad-jwks URL --aad-audience AUD --aad-issuer ISS] [--log FILE]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import email.utils
import hmac
import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass
from datetime import timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable, Mapping

import orjson
from azure.cosmos import auth as _sdk_auth

sys.path.insert(0, str(Path(__file__).resolve().parent))
from entra import InvalidToken, jwt_verify, public_key_of_jwk  # noqa: E402

# A module-level function: its double underscore is not name-mangled, but it is
# private, so look it up by name and fail clearly if a future SDK renames it.
_SDK_HELPER_NAMES = ("__get_authorization_token_using_master_key", "_get_authorization_token_using_master_key")
_sdk_sign = next((getattr(_sdk_auth, n) for n in _SDK_HELPER_NAMES if hasattr(_sdk_auth, n)), None)
if _sdk_sign is None:
    raise ImportError(f"azure.cosmos.auth has none of {_SDK_HELPER_NAMES}: pin azure-cosmos==4.17.1")

SKEW_SECONDS = 15 * 60
CONTROL_PREFIX = "/_sigcheck/"  # the proxy's own endpoints


# -- the check ----------------------------------------------------------------


def _is_rid(segment: str) -> bool:
    """A database resource id: 8 characters of base64 ('-' for '/') for 4 bytes."""
    if len(segment) != 8:
        return False
    try:
        return len(base64.b64decode(segment.replace("-", "/"), validate=True)) == 4
    except (binascii.Error, ValueError):
        return False


def resource_of(path: str) -> tuple[str, str]:
    """(resourceType, resourceLink) of a request path (a query is ignored)."""
    raw = urllib.parse.urlsplit(path).path if "://" in path else path.split("?", 1)[0]
    segments = [urllib.parse.unquote(s) for s in raw.split("/") if s]
    if not segments:
        return "", ""
    feed = len(segments) % 2 == 1
    resource_type = segments[-1] if feed else segments[-2]
    if len(segments) >= 2 and segments[0].lower() == "dbs" and _is_rid(segments[1]):
        # Resource-id addressing: the link is the rid of the addressed
        # resource (a feed's parent), lower-cased.
        return resource_type, (segments[-2] if feed else segments[-1]).lower()
    return resource_type, "/".join(segments[:-1] if feed else segments)


def string_to_sign(method: str, path: str, date: str) -> str:
    """The payload the service signs (for messages; the signing is the SDK's)."""
    resource_type, link = resource_of(path)
    return f"{method.lower()}\n{resource_type.lower()}\n{link}\n{date.lower()}\n\n"


def expected_authorization(method: str, path: str, headers: Mapping[str, str], key: str) -> str:
    """`type=master&ver=1.0&sig=…` (not URL-encoded) as the SDK computes it."""
    resource_type, link = resource_of(path)
    h = {k.lower(): v for k, v in headers.items()}
    sdk_headers = {"x-ms-date": h.get("x-ms-date", "")}
    if "date" in h:
        sdk_headers["date"] = h["date"]
    return _sdk_sign(method, link, resource_type, sdk_headers, key)


def parse_authorization(value: str) -> dict[str, str]:
    """`type=…&ver=…&sig=…` after percent-decoding; values may contain '='."""
    fields = {}
    for part in urllib.parse.unquote(value).split("&"):
        name, sep, v = part.partition("=")
        if sep:
            fields[name.strip().lower()] = v
    return fields


@dataclass
class Verdict:
    status: int  # 0 when accepted
    code: str
    message: str
    sub_status: int | None = None
    kind: str = ""  # the accepted token type

    @property
    def ok(self) -> bool:
        return self.status == 0


ACCEPTED = Verdict(0, "", "ok", kind="aad")
ACCEPTED_MASTER = Verdict(0, "", "ok", kind="master")


def _unauthorized(message: str) -> Verdict:
    return Verdict(401, "Unauthorized", message)


def _http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


# Every account accepts tokens for this audience besides its own resource.
COSMOS_AUDIENCE = "https://cosmos.azure.com"
TOKEN_LEEWAY = 60


class AadPolicy:
    """What an Entra ID token must satisfy: signed by a key of the JWKS at
    `jwks_url` (or given as `keys`), one of `audiences` (plus
    https://cosmos.azure.com), one of `issuers`, inside exp/nbf."""

    def __init__(self, audiences, issuers, jwks_url: str | None = None, keys: dict | None = None,
                 leeway: int = TOKEN_LEEWAY):
        self.audiences = tuple(audiences) + (COSMOS_AUDIENCE,)
        self.issuers = tuple(issuers)
        self.jwks_url, self.leeway = jwks_url, leeway
        self._keys = dict(keys or {})
        self._lock = threading.Lock()

    def keys(self, refresh: bool = False) -> dict:
        with self._lock:
            if self.jwks_url and (refresh or not self._keys):
                with urllib.request.urlopen(self.jwks_url, timeout=5) as r:
                    self._keys = {k["kid"]: public_key_of_jwk(k) for k in json.load(r)["keys"]
                                  if k.get("kty") == "RSA"}
            return self._keys

    @property
    def account(self) -> str:
        host = urllib.parse.urlsplit(self.audiences[0]).hostname or "account"
        return host.split(".")[0]


def _dotnet_time(ts: float) -> str:
    """The service quotes times as `1/30/2025 10:38:31 AM (UTC)`."""
    t = time.gmtime(ts)
    hour = t.tm_hour % 12 or 12
    return f"{t.tm_mon}/{t.tm_mday}/{t.tm_year} {hour}:{t.tm_min:02d}:{t.tm_sec:02d} " \
           f"{'AM' if t.tm_hour < 12 else 'PM'} (UTC)"


def check_aad(token: str, policy: AadPolicy, now: float) -> Verdict:
    blocked = f"Request blocked by Auth {policy.account} : "
    try:
        try:
            claims = jwt_verify(token, policy.keys())
        except InvalidToken as e:
            if e.reason != "unknown_key" or not policy.jwks_url:
                raise
            claims = jwt_verify(token, policy.keys(refresh=True))
    except InvalidToken as e:
        return Verdict(401, "Unauthorized", blocked + {
            "malformed": "The AAD token is malformed.",
            "algorithm": "The AAD token is not signed with RS256.",
            "unknown_key": "The key that signed the AAD token is unknown.",
            "signature": "The AAD token's signature is invalid.",
        }[e.reason])
    except OSError as e:
        return Verdict(401, "Unauthorized", blocked + f"The AAD signing keys could not be read ({e}).")
    aud = claims.get("aud")
    if aud not in policy.audiences:
        return Verdict(401, "Unauthorized", blocked + f"Provided AAD token is intended for [{aud}]. This database "
                       f"account accepts tokens intended for [{', '.join(policy.audiences)}].", 5008)
    if claims.get("iss") not in policy.issuers:
        return Verdict(401, "Unauthorized", blocked + f"Provided AAD token was issued by [{claims.get('iss')}], "
                       "which this database account does not trust.")
    exp, nbf = claims.get("exp"), claims.get("nbf")
    if not isinstance(exp, (int, float)) or exp + policy.leeway < now:
        since = _dotnet_time(exp) if isinstance(exp, (int, float)) else "unknown"
        return Verdict(401, "Unauthorized", blocked + f"Provided AAD token has been expired since [{since}]. "
                       f"Current server time is [{_dotnet_time(now)}]. Please refresh the AAD token.")
    if isinstance(nbf, (int, float)) and nbf - policy.leeway > now:
        return Verdict(401, "Unauthorized", blocked + f"Provided AAD token is not valid before "
                       f"[{_dotnet_time(nbf)}]. Current server time is [{_dotnet_time(now)}].")
    return ACCEPTED


def check(method: str, path: str, headers: Mapping[str, str], key: str,
          now: float | None = None, aad: AadPolicy | None = None) -> Verdict:
    """The full decision for one request, with the status and body to answer."""
    now = time.time() if now is None else now
    h = {k.lower(): v for k, v in headers.items()}

    auth = h.get("authorization", "")
    if not auth:
        return _unauthorized("Required Header authorization is missing. Ensure a valid Authorization token is passed.")

    date = h.get("x-ms-date", "")
    if not date:
        return _unauthorized("Authorization token mandates Date header. Please pass in RFC 1123 style date format.")
    try:
        sent_at = email.utils.parsedate_to_datetime(date)
    except (TypeError, ValueError):
        sent_at = None
    if sent_at is None:
        return _unauthorized(f"The input date header {date!r} is invalid format. "
                             "Please pass in RFC 1123 style date format.")
    if sent_at.tzinfo is None:
        sent_at = sent_at.replace(tzinfo=timezone.utc)
    sent = sent_at.timestamp()
    if abs(sent - now) > SKEW_SECONDS:
        return Verdict(403, "Forbidden",
                       "The authorization token is not valid at the current time. Please create another token and "
                       f"retry (token start time: {_http_date(sent)}, token expiry time: "
                       f"{_http_date(sent + SKEW_SECONDS)}, current server time: {_http_date(now)}).")

    fields = parse_authorization(auth)
    kind, version, sig = fields.get("type", "").lower(), fields.get("ver", ""), fields.get("sig", "")
    if not kind or not version or not sig:
        return _unauthorized("The input authorization token can't serve the request. "
                             "Expected type=…&ver=…&sig=… (URL-encoded).")
    if version != "1.0":
        return _unauthorized(f"The input authorization token can't serve the request. Version {version!r} "
                             "is not supported; use ver=1.0.")
    if kind == "aad":
        if aad is None:
            return _unauthorized("The input authorization token can't serve the request. "
                                 "AAD tokens are not accepted by this check (no --aad-jwks configured).")
        return check_aad(sig, aad, now)
    if kind != "master":
        return _unauthorized(f"The input authorization token can't serve the request. Token type {kind!r} "
                             "is not accepted here (master or aad only).")

    want = parse_authorization(expected_authorization(method, path, h, key))["sig"]
    if not hmac.compare_digest(sig.encode(), want.encode()):
        payload = string_to_sign(method, path, date).replace("\n", "\\n")
        return _unauthorized("The input authorization token can't serve the request. The wrong key is being used "
                             "or the expected payload is not built as per the protocol. "
                             f"Server used the following payload to sign: '{payload}'")
    return ACCEPTED_MASTER


def verify(method: str, path: str, headers: Mapping[str, str], key: str,
           now: float | None = None, aad: AadPolicy | None = None) -> tuple[bool, str]:
    """(ok, reason) for one request; header names in any case; `now` is Unix time."""
    v = check(method, path, headers, key, now, aad)
    return v.ok, v.message


# -- the proxy ----------------------------------------------------------------


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults: list[dict] = []
        self.era = 0
        self.reset()

    def reset(self) -> None:
        self.total = self.forwarded = self.rejected = self.faulted = self.minimal = 0
        self.sdk_account_reads = 0
        # A request still held (a hang outliving its test) belongs to the
        # era before the reset: it is not counted in this one, and its end
        # does not take this one's count down.
        self.era += 1
        self.in_flight = self.max_in_flight = 0
        self.tls_connections = self.tls_requests = 0
        self.accepted_by_type = {"master": 0, "aad": 0}
        self.faults = []

    def as_dict(self) -> dict:
        return {"total": self.total, "forwarded": self.forwarded, "rejected": self.rejected,
                "faulted": self.faulted, "pending_faults": len(self.faults), "max_in_flight": self.max_in_flight,
                "minimal": self.minimal, "sdk_account_reads": self.sdk_account_reads,
                "accepted_by_type": dict(self.accepted_by_type),
                "tls_connections": self.tls_connections, "tls_requests": self.tls_requests}

    def take_fault(self) -> dict | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection",
              "proxy-authenticate", "proxy-authorization"}
FAULT_CODES = {429: "TooManyRequests", 503: "ServiceUnavailable", 500: "InternalServerError",
               408: "RequestTimeout", 449: "RetryWith", 410: "Gone"}


def _is_sdk_account_read(method: str, path: str, user_agent: str) -> bool:
    return method == "GET" and path == "/" and user_agent.startswith("azsdk-python-cosmos/")


def _is_point_read(method: str, path: str) -> bool:
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    return method == "GET" and len(segments) == 6 and segments[4] == "docs"


def minimal_answer(method: str, path: str, headers: Mapping[str, str], request: bytes,
                   status: int, answer: bytes) -> bytes | None:
    """The body the service would send instead of `answer` when the write
    asked for a minimal answer, or None to relay `answer` as it is (see the
    module's docstring)."""
    segments = [s for s in path.split("?", 1)[0].split("/") if s]
    if len(segments) < 5 or segments[4] != "docs" or not 200 <= status < 300:
        return None
    h = {k.lower(): v for k, v in headers.items()}
    if h.get("x-ms-documentdb-isquery", "").lower() == "true" or "query+json" in h.get("content-type", ""):
        return None  # a query's page is its answer, not an echo
    batch = h.get("x-ms-cosmos-is-batch-request", "").lower() == "true"
    if batch and method == "POST" and len(segments) == 5:
        # The service cuts these answers for nothing; here both bodies are
        # parsed, with orjson (about 35 us for ten sealed documents, a third
        # of the json module's time), and only when an operation may have
        # asked, so that the stand-in's own cost stays small beside the
        # local server's (see docs/benchmarks.md).
        if b"minimalReturnPreference" not in request:
            return None
        try:
            ops, results = orjson.loads(request), orjson.loads(answer)
        except orjson.JSONDecodeError:
            return None
        if not (isinstance(ops, list) and isinstance(results, list) and len(ops) == len(results)):
            return None
        cut = False
        for op, result in zip(ops, results):
            code = result.get("statusCode") if isinstance(result, dict) else None
            if (isinstance(op, dict) and op.get("minimalReturnPreference") is True and isinstance(code, int)
                    and 200 <= code < 300 and "resourceBody" in result):
                del result["resourceBody"]
                cut = True
        return orjson.dumps(results) if cut else None
    document_write = (method == "POST" and len(segments) == 5) or (method == "PUT" and len(segments) == 6)
    if document_write and not batch and h.get("prefer", "").strip().lower() == "return=minimal":
        return b""
    return None


def make_handler(upstream: urllib.parse.SplitResult, key: str, stats: Stats, log: Callable[[str], None],
                 aad: AadPolicy | None = None):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every answer carries Content-Length
        # Headers and body go out in two writes: without TCP_NODELAY, Nagle's
        # algorithm holds the body until the client's delayed ACK (~40 ms) on
        # a kept-alive connection.
        disable_nagle_algorithm = True

        def log_message(self, fmt, *args):  # one line per request; no headers, so no credentials
            log(f"{self.address_string()} {fmt % args}")

        def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]], *,
                   own: bool = False, reason: str | None = None) -> None:
            self.send_response_only(status, reason)
            self.log_request(status, len(body))
            if own:
                self.send_header("Date", self.date_time_string())
            length = None
            for k, v in headers:
                lk = k.lower()
                if lk == "content-length":
                    length = v
                elif lk not in HOP_BY_HOP:
                    self.send_header(k, v)
            if self.command == "HEAD":  # relay the upstream's length, send no body
                self.send_header("Content-Length", length if length is not None else str(len(body)))
                self.end_headers()
                return
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict, extra: list[tuple[str, str]] = ()) -> None:
            headers = [("Content-Type", "application/json"), ("x-ms-activity-id", str(uuid.uuid4())), *extra]
            self._reply(status, json.dumps(obj).encode(), headers, own=True)

        def _read_body(self) -> bytes:
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass  # trailers
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _control(self, body: bytes) -> None:
            path = self.path.split("?", 1)[0]
            with stats.lock:
                if path == "/_sigcheck/stats" and self.command == "GET":
                    pass
                elif path == "/_sigcheck/reset" and self.command == "POST":
                    stats.reset()
                elif path == "/_sigcheck/faults" and self.command == "POST":
                    for f in json.loads(body or b"[]"):
                        stats.faults.extend([f] * int(f.get("count", 1)))
                else:
                    return self._json(404, {"code": "NotFound", "message": f"no {self.command} {path} here"})
                snapshot = stats.as_dict()
            self._json(200, snapshot)

        def _handle(self) -> None:
            body = self._read_body()
            if self.path.startswith(CONTROL_PREFIX):
                return self._control(body)
            verdict = check(self.command, self.path, dict(self.headers.items()), key, aad=aad)
            if verdict.ok and _is_sdk_account_read(self.command, self.path, self.headers.get("User-Agent", "")):
                # The tests' own SDK client, reading the account on its own
                # schedule (see the docstring): checked, never counted or faulted.
                with stats.lock:
                    stats.sdk_account_reads += 1
                return self._forward(body)
            with stats.lock:
                stats.total += 1
                if not verdict.ok:
                    stats.rejected += 1
                else:
                    stats.accepted_by_type[verdict.kind] += 1
            if not verdict.ok:
                log(f"rejected {self.command} {self.path}: {verdict.status} {verdict.message}")
                extra = [("x-ms-substatus", str(verdict.sub_status))] if verdict.sub_status else []
                return self._json(verdict.status, {"code": verdict.code, "message": verdict.message}, extra)
            with stats.lock:
                era = stats.era
                stats.in_flight += 1
                stats.max_in_flight = max(stats.max_in_flight, stats.in_flight)
            try:
                fault = stats.take_fault()
                if fault is not None and "delay_ms" in fault:
                    time.sleep(fault["delay_ms"] / 1000)
                    fault = None
                if fault is not None:
                    with stats.lock:
                        stats.faulted += 1
                    return self._inject(fault, body)
                with stats.lock:
                    stats.forwarded += 1
                self._forward(body)
            finally:
                with stats.lock:
                    if stats.era == era:
                        stats.in_flight -= 1

        def _reset(self) -> None:
            self.close_connection = True
            try:
                # Linger 0: the peer sees a reset, not an orderly close.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

        def _forward(self, body: bytes, lose_answer: bool = False) -> None:
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            try:
                # Names as the client wrote them, repeats kept; the length is
                # re-stated (a chunked body was de-chunked above).
                headers = [(k, v) for k, v in self.headers.items()
                           if k.lower() not in HOP_BY_HOP and k.lower() not in ("host", "content-length")]
                headers.append(("Host", upstream.netloc))
                if body or "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
                    headers.append(("Content-Length", str(len(body))))
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                conn.endheaders(body or None)
                resp = conn.getresponse()
                data = resp.read()
                if lose_answer:
                    return self._reset()
                if resp.status == 500 and _is_point_read(self.command, self.path):
                    # The local server answers 500 for a missing document; the service answers 404.
                    return self._json(404, {"code": "NotFound",
                                            "message": "Entity with the specified id does not exist in the system."})
                minimal = minimal_answer(self.command, self.path, dict(self.headers.items()), body,
                                         resp.status, data)
                if minimal is not None:
                    with stats.lock:
                        stats.minimal += 1
                    data = minimal
                self._reply(resp.status, data, resp.getheaders(), reason=resp.reason)
            except OSError as e:
                log(f"upstream error for {self.command} {self.path}: {e!r}")
                self._json(502, {"code": "BadGateway", "message": f"sigcheck could not reach the upstream: {e}"})
            finally:
                conn.close()

        def _inject(self, fault: dict, body: bytes = b"") -> None:
            log(f"fault {fault} for {self.command} {self.path}")
            if fault.get("lose_answer"):
                with stats.lock:
                    stats.forwarded += 1
                self._forward(body, lose_answer=True)
                return
            if "batch_status" in fault:
                try:
                    n = max(1, len(json.loads(body or b"[]")))
                except ValueError:
                    n = 1
                first = {"statusCode": int(fault["batch_status"]), "requestCharge": 0.0}
                if int(fault["batch_status"]) == 429:
                    first["subStatusCode"] = 3200
                if "retry_after_ms" in fault:
                    first["retryAfterMilliseconds"] = int(fault["retry_after_ms"])
                ops = [first] + [{"statusCode": 424, "requestCharge": 0.0} for _ in range(n - 1)]
                return self._reply(207, json.dumps(ops).encode(), [
                    ("Content-Type", "application/json"), ("x-ms-activity-id", str(uuid.uuid4())),
                    ("x-ms-request-charge", "0")], own=True)
            if fault.get("reset") or "hang_ms" in fault:
                if "hang_ms" in fault:
                    time.sleep(fault["hang_ms"] / 1000)
                return self._reset()
            status = int(fault.get("status", 503))
            extra = []
            if "retry_after_ms" in fault:
                extra.append(("x-ms-retry-after-ms", str(fault["retry_after_ms"])))
            self._json(status, {"code": FAULT_CODES.get(status, "Error"), "message": f"injected fault {status}"}, extra)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle

    return Handler


def serve(listen: str, upstream: str, key: str, aad: AadPolicy | None = None,
          log: Callable[[str], None] | None = None) -> ThreadingHTTPServer:
    """A bound server (call `serve_forever()`); port 0 picks a free port."""
    host, port = listen.rsplit(":", 1)
    stats = Stats()
    handler = make_handler(urllib.parse.urlsplit(upstream), key, stats, log or (lambda line: None), aad)
    server = ThreadingHTTPServer((host, int(port)), handler)
    server.daemon_threads = True
    server.stats = stats
    return server


def serve_tls(plain: ThreadingHTTPServer, listen: str, cert: str, key: str) -> ThreadingHTTPServer:
    """An HTTPS listener with the same handler and counters as `plain`,
    serving from a background thread."""
    import ssl

    class TlsHandler(plain.RequestHandlerClass):
        def setup(self):
            # The handshake runs in the request's thread, not the accept loop.
            self.request.settimeout(10)
            self.request.do_handshake()
            self.request.settimeout(None)
            with plain.stats.lock:
                plain.stats.tls_connections += 1
            super().setup()

        def parse_request(self):
            # Counted once the request line and headers are read, before the
            # answer is written: counted after it, a client could read the
            # counters before the count of the request it was answered for.
            ok = super().parse_request()
            if ok:
                with plain.stats.lock:
                    plain.stats.tls_requests += 1
            return ok

    host, port = listen.rsplit(":", 1)
    tls = ThreadingHTTPServer((host, int(port)), TlsHandler)
    tls.daemon_threads = True
    tls.stats = plain.stats
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=tls.serve_forever, name="tls", daemon=True).start()
    return tls


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True, help="HOST:PORT to listen on (PORT 0: any free port)")
    p.add_argument("--upstream", required=True, help="http://HOST:PORT of the Cosmos REST server")
    p.add_argument("--key", required=True, help="the account's master key (base64); never logged")
    p.add_argument("--aad-jwks", help="accept `type=aad` tokens signed by a key of this JWKS (URL)")
    p.add_argument("--aad-audience", action="append", default=[],
                   help="the account's token audience, e.g. https://acct.documents.azure.com (repeatable)")
    p.add_argument("--aad-issuer", action="append", default=[], help="a trusted token issuer (repeatable)")
    p.add_argument("--log", help="append the log here instead of standard error")
    p.add_argument("--listen-tls", help="also serve HTTPS on HOST:PORT (needs --tls-cert and --tls-key)")
    p.add_argument("--tls-cert", help="server certificate (PEM) for --listen-tls")
    p.add_argument("--tls-key", help="its private key (PEM)")
    a = p.parse_args()
    try:
        base64.b64decode(a.key, validate=True)
    except binascii.Error:
        p.error("--key is not base64")

    out = open(a.log, "a", buffering=1, encoding="utf-8") if a.log else sys.stderr
    lock = threading.Lock()

    def log(line: str) -> None:
        with lock:
            print(f"{time.strftime('%H:%M:%S')} {line}", file=out, flush=True)

    aad = None
    if a.aad_jwks:
        if not a.aad_audience or not a.aad_issuer:
            p.error("--aad-jwks needs --aad-audience and --aad-issuer")
        aad = AadPolicy(a.aad_audience, a.aad_issuer, jwks_url=a.aad_jwks)
    server = serve(a.listen, a.upstream, a.key, aad, log)
    host = server.server_address[0]
    print(f"sigcheck listening on http://{host}:{server.server_port}", flush=True)
    if a.listen_tls:
        if not (a.tls_cert and a.tls_key):
            p.error("--listen-tls needs --tls-cert and --tls-key")
        tls = serve_tls(server, a.listen_tls, a.tls_cert, a.tls_key)
        print(f"sigcheck listening on https://{tls.server_address[0]}:{tls.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
