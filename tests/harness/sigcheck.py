"""Cosmos DB master-key signature check, as a reverse proxy in front of a local
Cosmos REST server.

`@vercel/cosmosdb-server` accepts any `authorization` header, so on its own it
cannot tell a correctly signed request from a wrong one. This proxy does what
the real service does before serving a request:

- derives the resource type and resource link from the method and path, the
  way the service signs them (feed paths: type = last segment, link = the
  parent; item paths: type = the second-to-last segment, link = the whole
  path; ids percent-decoded, as written);
- recomputes the expected signature with the official Python SDK's own helper
  (`azure.cosmos.auth.__get_authorization_token_using_master_key`), an oracle
  independent of the component's Rust code;
- answers 401 `Unauthorized` with a Cosmos-shaped body when the header is
  missing or the signature differs, and 401 when `x-ms-date` is missing or
  more than 15 minutes from now (the service's clock-skew window).

Requests that pass are forwarded unchanged and the answer is relayed. Counters
(`forwarded`, `rejected`, `faulted`, `total`) are served at
`GET /_sigcheck/stats` and reset by `POST /_sigcheck/reset`. The key is never
logged.

Fault injection, for retry tests: `POST /_sigcheck/faults` with a JSON list
queues faults that the next correctly signed requests get instead of being
forwarded (so, as with the service's throttling, nothing is applied):
`{"status": 429, "retry_after_ms": 200}` (Cosmos-shaped 429 with
`x-ms-retry-after-ms`), `{"status": 503}` (or any status), `{"hang_ms": N}`
(answer nothing for N ms, then close), `{"reset": true}` (close the
connection without an answer). `"count": K` repeats a fault K times.

    sigcheck.py --listen 127.0.0.1:PORT --upstream http://127.0.0.1:PORT --key BASE64KEY
"""

from __future__ import annotations

import argparse
import email.utils
import http.client
import json
import socket
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from azure.cosmos import auth as sdk_auth

SKEW_SECONDS = 15 * 60
_sdk_sign = getattr(sdk_auth, "__get_authorization_token_using_master_key")


def resource_of(path: str) -> tuple[str, str]:
    """(resourceType, resourceLink) for a request path, as the service signs it."""
    segments = [urllib.parse.unquote(s) for s in path.split("?", 1)[0].strip("/").split("/") if s]
    if not segments:
        return "", ""
    if len(segments) % 2 == 1:  # a feed: dbs, dbs/{db}/colls, …/docs
        return segments[-1], "/".join(segments[:-1])
    return segments[-2], "/".join(segments)


def expected_authorization(method: str, path: str, headers: dict[str, str], key: str) -> str:
    resource_type, link = resource_of(path)
    sdk_headers = {"x-ms-date": headers.get("x-ms-date", "")}
    if "date" in headers:
        sdk_headers["date"] = headers["date"]
    return _sdk_sign(method, link, resource_type, sdk_headers, key)


def verify(method: str, path: str, headers: dict[str, str], key: str, now: float | None = None) -> tuple[bool, str]:
    """Checks one request's `authorization` and `x-ms-date` (header names lower-case)."""
    now = time.time() if now is None else now
    date = headers.get("x-ms-date")
    if not date:
        return False, "x-ms-date is missing"
    try:
        sent = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return False, f"x-ms-date {date!r} is not an RFC 1123 date"
    if abs(sent - now) > SKEW_SECONDS:
        return False, f"x-ms-date {date!r} is outside the 15-minute window"
    got = urllib.parse.unquote(headers.get("authorization", ""))
    if not got:
        return False, "authorization is missing"
    if not got.startswith("type=master&"):
        return False, "only master-key authorization is accepted here"
    want = expected_authorization(method, path, headers, key)
    if got != want:
        resource_type, link = resource_of(path)
        return False, f"signature mismatch for {method.lower()}\\n{resource_type}\\n{link}\\n{date.lower()}"
    return True, "ok"


class Stats:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.faults: list[dict] = []
        self.reset()

    def reset(self) -> None:
        self.total = self.forwarded = self.rejected = self.faulted = 0
        self.faults = []

    def as_dict(self) -> dict:
        return {"total": self.total, "forwarded": self.forwarded, "rejected": self.rejected,
                "faulted": self.faulted, "pending_faults": len(self.faults)}

    def take_fault(self) -> dict | None:
        with self.lock:
            return self.faults.pop(0) if self.faults else None


HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def make_handler(upstream: urllib.parse.SplitResult, key: str, stats: Stats, log):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):  # one line per request, no headers
            log(f"{self.command} {self.path} -> {fmt % args}")

        def _reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _json(self, status: int, obj: dict) -> None:
            self._reply(status, json.dumps(obj).encode(), [
                ("Content-Type", "application/json"), ("x-ms-activity-id", str(uuid.uuid4()))])

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

        def _handle(self) -> None:
            body = self._read_body()
            if self.path.startswith("/_sigcheck/"):
                with stats.lock:
                    if self.path == "/_sigcheck/reset" and self.command == "POST":
                        stats.reset()
                    elif self.path == "/_sigcheck/faults" and self.command == "POST":
                        for f in json.loads(body or b"[]"):
                            stats.faults.extend([f] * int(f.get("count", 1)))
                    return self._json(200, stats.as_dict())
            headers = {k.lower(): v for k, v in self.headers.items()}
            ok, reason = verify(self.command, self.path, headers, key)
            with stats.lock:
                stats.total += 1
                if not ok:
                    stats.rejected += 1
            if not ok:
                log(f"rejected {self.command} {self.path}: {reason}")
                return self._json(401, {
                    "code": "Unauthorized",
                    "message": "The input authorization token can't serve the request. The wrong key is being used "
                               f"or the expected payload is not built as per the protocol. {reason}",
                })
            fault = stats.take_fault()
            if fault is not None:
                with stats.lock:
                    stats.faulted += 1
                return self._inject(fault)
            with stats.lock:
                stats.forwarded += 1
            conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=60)
            try:
                fwd = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP and k.lower() != "host"}
                fwd["Host"] = upstream.netloc
                conn.request(self.command, self.path, body=body, headers=fwd)
                resp = conn.getresponse()
                data = resp.read()
                status, headers = resp.status, resp.getheaders()
                if (status == 500 and self.command == "GET" and resource_of(self.path)[0] == "docs"
                        and len(self.path.split("?")[0].strip("/").split("/")) == 6):
                    # The local server answers 500 for a missing document; the
                    # service answers 404 NotFound.
                    status, data = 404, json.dumps({"code": "NotFound", "message": "Entity with the specified id does not exist in the system."}).encode()
                    headers = [("Content-Type", "application/json"), ("x-ms-activity-id", str(uuid.uuid4()))]
                self._reply(status, data, headers)
            finally:
                conn.close()

        def _inject(self, fault: dict) -> None:
            log(f"fault {fault} for {self.command} {self.path}")
            if fault.get("reset") or "hang_ms" in fault:
                if "hang_ms" in fault:
                    time.sleep(fault["hang_ms"] / 1000)
                self.close_connection = True
                try:
                    # Linger 0: the peer sees a reset, not an orderly close.
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                    self.connection.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                return
            status = int(fault.get("status", 503))
            headers = [("Content-Type", "application/json"), ("x-ms-activity-id", str(uuid.uuid4()))]
            if "retry_after_ms" in fault:
                headers.append(("x-ms-retry-after-ms", str(fault["retry_after_ms"])))
            codes = {429: "TooManyRequests", 503: "ServiceUnavailable", 500: "InternalServerError", 408: "RequestTimeout"}
            body = json.dumps({"code": codes.get(status, "Error"), "message": f"injected fault {status}"}).encode()
            self._reply(status, body, headers)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _handle

    return Handler


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--listen", required=True, help="HOST:PORT")
    p.add_argument("--upstream", required=True, help="http://HOST:PORT of the Cosmos REST server")
    p.add_argument("--key", required=True, help="the account key (base64)")
    a = p.parse_args()
    host, port = a.listen.rsplit(":", 1)
    stats = Stats()

    def log(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    server = ThreadingHTTPServer((host, int(port)), make_handler(urllib.parse.urlsplit(a.upstream), a.key, stats, log))
    server.daemon_threads = True
    print(f"sigcheck listening on http://{host}:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
