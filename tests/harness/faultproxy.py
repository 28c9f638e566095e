"""A fault-injecting HTTP proxy that sits in front of any local peer (the
Cosmos signature check, the Managed HSM stand-in, the Entra stand-in) and,
by a seeded random script, answers in the ways a network and a busy cloud
service do.

Why: the peers' own fault queues (`sigcheck.py`, `hsm.py`, `entra.py`) inject
one scripted answer at a time, which suits a test of one retry. The
reliability suite needs faults firing at random, at a given rate, on every
hop at once, while thousands of requests run, and it needs the faults that
only something between client and server can produce: an answer lost after
the peer applied the request, a body cut off mid-way.

Kinds (each drawn per request with its own probability):

- `429`: not forwarded; 429 with `Retry-After` (seconds) and
  `x-ms-retry-after-ms` (Cosmos DB's header), body in the peer's shape;
- `503`, `500`: not forwarded; that status, body in the peer's shape;
- `stall`: not forwarded; the proxy holds the connection `stall_ms` (past
  the client's attempt timeout) without a byte, then closes it;
- `reset`: **forwarded** (the peer applies it), then the connection is reset
  (RST) instead of relaying the answer: the answer is lost;
- `truncate`: **forwarded**, then the status line, the headers (with the full
  `Content-Length`) and half the body are relayed and the connection reset.

The script is a seeded `random.Random`: the sequence of decisions is fixed
by the seed; which request gets which decision follows arrival order, which
concurrency makes vary from run to run. Peer shapes (`--flavor`): `cosmos`
(`{"code","message"}` and `x-ms-activity-id`), `keyvault` (`{"error":
{"code","message"}}`), `entra` (`{"error","error_description":"AADSTS…",
"error_codes"}`).

Controls (never forwarded, never faulted):
- `POST /_faultproxy/config` `{"seed"?, "rates"?: {kind: p}, "stall_ms"?,
  "retry_after_s"?, "retry_after_ms"?}`: a new script (a new seed restarts
  the sequence); `{"rates": {}}` turns faults off;
- `GET /_faultproxy/stats`: `{"requests","forwarded","faults":{kind: n}}`;
- `POST /_faultproxy/reset`: zero the counters and turn faults off.

Loopback only. Logs one line per fault (kind, method, path without query);
never headers or bodies, so no credential reaches its log.

TLS (for an app on the test host, which reaches every peer over HTTPS):
`--listen-tls HOST:PORT --tls-cert C --tls-key K` serves the same proxy over
HTTPS too (handshake in the request's thread; a failed one is counted as
`tls_failures`), and an `https://` upstream is verified against
`--upstream-ca`, so the peer sees TLS and the proxy's Host, as if the app
had reached it directly.

    python faultproxy.py --listen 127.0.0.1:P --upstream http://127.0.0.1:Q --flavor cosmos
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

KINDS = ("429", "503", "500", "stall", "reset", "truncate")
CONTROL = "/_faultproxy/"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length"}


class Script:
    """The seeded fault script and the counters."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        with self.lock:
            self.rng = random.Random(0)
            self.rates: dict[str, float] = {}
            self.stall_ms = 3000
            self.retry_after_s = 1
            self.retry_after_ms = 200
            self.requests = self.forwarded = 0
            self.tls_connections = self.tls_failures = 0
            self.faults = {k: 0 for k in KINDS}

    def configure(self, cfg: dict) -> None:
        with self.lock:
            if "seed" in cfg:
                self.rng = random.Random(int(cfg["seed"]))
            if "rates" in cfg:
                unknown = set(cfg["rates"]) - set(KINDS)
                if unknown:
                    raise ValueError(f"unknown fault kinds {sorted(unknown)}; known: {KINDS}")
                self.rates = {k: float(v) for k, v in cfg["rates"].items()}
            for name in ("stall_ms", "retry_after_s", "retry_after_ms"):
                if name in cfg:
                    setattr(self, name, int(cfg[name]))

    def draw(self) -> str | None:
        with self.lock:
            self.requests += 1
            x = self.rng.random()
            for kind in KINDS:
                p = self.rates.get(kind, 0.0)
                if x < p:
                    self.faults[kind] += 1
                    return kind
                x -= p
            return None

    def snapshot(self) -> dict:
        with self.lock:
            return {"requests": self.requests, "forwarded": self.forwarded, "faults": dict(self.faults),
                    "rates": dict(self.rates), "tls_connections": self.tls_connections,
                    "tls_failures": self.tls_failures}


def error_body(flavor: str, status: int) -> tuple[bytes, list[tuple[str, str]]]:
    words = {429: ("TooManyRequests", "Throttled", "temporarily_unavailable", 50196),
             503: ("ServiceUnavailable", "ServiceUnavailable", "temporarily_unavailable", 90033),
             500: ("InternalServerError", "InternalError", "server_error", 90033)}[status]
    message = f"injected fault {status}"
    if flavor == "cosmos":
        return json.dumps({"code": words[0], "message": message}).encode(), [("x-ms-activity-id", str(uuid.uuid4()))]
    if flavor == "keyvault":
        return json.dumps({"error": {"code": words[1], "message": message}}).encode(), []
    cid = str(uuid.uuid4())
    return json.dumps({"error": words[2], "error_description": f"AADSTS{words[3]}: {message}. Trace ID: {cid} "
                       f"Correlation ID: {cid}", "error_codes": [words[3]], "correlation_id": cid}).encode(), []


def make_handler(upstream: urllib.parse.SplitResult, flavor: str, script: Script,
                 upstream_tls: ssl.SSLContext | None = None):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        timeout = 120

        def log_message(self, fmt, *args):
            pass  # only faults are logged

        def note(self, kind: str) -> None:
            sys.stderr.write(f"faultproxy[{flavor}]: {kind} {self.command} {self.path.split('?', 1)[0]}\n")
            sys.stderr.flush()

        def read_body(self) -> bytes:
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

        def reply(self, status: int, body: bytes, headers: list[tuple[str, str]]) -> None:
            self.send_response_only(status)
            self.send_header("Date", self.date_time_string())
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def abort(self) -> None:
            """Resets the connection (RST, not FIN): the client sees a
            transport failure, never a clean end."""
            try:
                self.wfile.flush()
            except OSError:
                pass
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            self.close_connection = True
            try:
                self.connection.close()
            except OSError:
                pass

        def forward(self, body: bytes) -> tuple[int, list[tuple[str, str]], bytes]:
            if upstream.scheme == "https":
                conn = http.client.HTTPSConnection(upstream.hostname, upstream.port, timeout=90, context=upstream_tls)
            else:
                conn = http.client.HTTPConnection(upstream.hostname, upstream.port, timeout=90)
            try:
                headers = [(k, v) for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP]
                if body or "Content-Length" in self.headers or "Transfer-Encoding" in self.headers:
                    headers.append(("Content-Length", str(len(body))))
                conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    conn.putheader(k, v)
                conn.endheaders(body if body else None)
                resp = conn.getresponse()
                data = resp.read()
                return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() not in HOP_BY_HOP], data
            finally:
                conn.close()

        def handle_one(self) -> None:
            body = self.read_body()
            path = self.path.split("?", 1)[0]
            if path.startswith(CONTROL):
                return self.control(path, body)
            kind = script.draw()
            if kind in ("429", "503", "500"):
                self.note(kind)
                status = int(kind)
                payload, extra = error_body(flavor, status)
                headers = [("Content-Type", "application/json"), *extra]
                if status == 429:
                    headers += [("Retry-After", str(script.retry_after_s)),
                                ("x-ms-retry-after-ms", str(script.retry_after_ms))]
                return self.reply(status, payload, headers)
            if kind == "stall":
                self.note(kind)
                time.sleep(script.stall_ms / 1000)
                return self.abort()
            try:
                status, headers, data = self.forward(body)
            except OSError as e:
                sys.stderr.write(f"faultproxy[{flavor}]: upstream failed: {type(e).__name__}\n")
                return self.abort()
            with script.lock:
                script.forwarded += 1
            if kind == "reset":
                self.note(kind)
                return self.abort()
            if kind == "truncate" and len(data) >= 2:
                self.note(kind)
                self.send_response_only(status)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])
                return self.abort()
            self.reply(status, data, headers)

        def control(self, path: str, body: bytes) -> None:
            try:
                if path == CONTROL + "config" and self.command == "POST":
                    script.configure(json.loads(body or b"{}"))
                elif path == CONTROL + "reset" and self.command == "POST":
                    script.reset()
                elif not (path == CONTROL + "stats" and self.command == "GET"):
                    return self.reply(404, b'{"error":"no such control"}', [("Content-Type", "application/json")])
            except (ValueError, TypeError) as e:
                return self.reply(400, json.dumps({"error": str(e)}).encode(), [("Content-Type", "application/json")])
            self.reply(200, json.dumps(script.snapshot()).encode(), [("Content-Type", "application/json")])

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = handle_one

    return Handler


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request, client_address):  # a client that went away: one line, no traceback
        sys.stderr.write(f"faultproxy: connection error: {sys.exc_info()[0].__name__}\n")


def serve_tls(handler, script: Script, listen: str, cert: str, key: str) -> Server:
    """The same proxy (same script and counters) over HTTPS, from a
    background thread; the handshake runs in the request's thread, so a
    client that stalls or refuses the certificate never blocks the accept
    loop."""

    class TlsHandler(handler):
        def setup(self):
            self.request.settimeout(10)
            try:
                self.request.do_handshake()
            except (OSError, ValueError):
                with script.lock:
                    script.tls_failures += 1
                raise
            self.request.settimeout(None)
            with script.lock:
                script.tls_connections += 1
            super().setup()

    host, _, port = listen.rpartition(":")
    tls = Server((host, int(port)), TlsHandler)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    tls.socket = ctx.wrap_socket(tls.socket, server_side=True, do_handshake_on_connect=False)
    threading.Thread(target=tls.serve_forever, name="tls", daemon=True).start()
    return tls


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--listen", required=True, help="127.0.0.1:PORT")
    p.add_argument("--upstream", required=True, help="http(s)://127.0.0.1:PORT of the peer")
    p.add_argument("--flavor", choices=("cosmos", "keyvault", "entra"), required=True)
    p.add_argument("--listen-tls", help="also serve HTTPS on 127.0.0.1:PORT (needs --tls-cert and --tls-key)")
    p.add_argument("--tls-cert", help="server certificate (PEM) for --listen-tls")
    p.add_argument("--tls-key", help="its private key (PEM)")
    p.add_argument("--upstream-ca", help="CA file (PEM) that verifies an https:// upstream")
    args = p.parse_args(argv)
    for listen in filter(None, (args.listen, args.listen_tls)):
        if listen.rpartition(":")[0] not in ("127.0.0.1", "localhost", "::1"):
            sys.exit("faultproxy listens on loopback only")
    if args.listen_tls and not (args.tls_cert and args.tls_key):
        p.error("--listen-tls needs --tls-cert and --tls-key")
    upstream = urllib.parse.urlsplit(args.upstream)
    upstream_tls = ssl.create_default_context(cafile=args.upstream_ca) if upstream.scheme == "https" else None
    script = Script()
    handler = make_handler(upstream, args.flavor, script, upstream_tls)
    host, _, port = args.listen.rpartition(":")
    server = Server((host, int(port)), handler)
    if args.listen_tls:
        tls = serve_tls(handler, script, args.listen_tls, args.tls_cert, args.tls_key)
        print(f"faultproxy[{args.flavor}] listening on https://{args.listen_tls.rpartition(':')[0]}:"
              f"{tls.server_address[1]}", flush=True)
    print(f"faultproxy[{args.flavor}] listening on http://{host}:{server.server_address[1]} -> {args.upstream}",
          flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
