"""Answers from a peer that are too large or unlike their `Content-Length`:
the component reads them through its own `wasi:http` edge, which reserves
room from a declared length only up to a small cap, reads at most 32 MiB and
refuses a body that ends short of its declared length. A Cosmos DB stand-in
answering so must end in a transient 503 with `Retry-After` (the sender
retries later), never in a trapped instance (the runtime's 500) or in a
write counted as done."""

import socket
import threading
import uuid

import pytest

from integration.eventgrid import custom_event
from integration.test_foundation import post


class RawPeer:
    """Answers every request with `status`, the declared `Content-Length`
    and only `sent` bytes of body, then closes the connection cleanly."""

    def __init__(self, status: int, declared: int, sent: bytes):
        self.head = (f"HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\n"
                     f"content-length: {declared}\r\nconnection: close\r\n\r\n").encode()
        self.sent = sent
        self.requests = 0
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self.serve, daemon=True).start()

    def serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                try:
                    while b"\r\n\r\n" not in data:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        data += chunk
                    head, _, body = data.partition(b"\r\n\r\n")
                    length = next((int(l.split(b":", 1)[1]) for l in head.split(b"\r\n")
                                   if l.lower().startswith(b"content-length:")), 0)
                    while len(body) < length:
                        chunk = conn.recv(65536)
                        if not chunk:
                            break
                        body += chunk
                    self.requests += 1
                    conn.sendall(self.head + self.sent)
                    conn.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

    def close(self):
        self.sock.close()


BIG = 40 * 1024 * 1024  # over the 32 MiB an answer may have


@pytest.mark.parametrize("declared, sent", [
    # An answer over the limit, whole and as declared: before the limit it
    # was read in full and the write counted as done.
    (BIG, b" " * BIG),
    # About 2 GB declared: never reserved, refused before reading.
    (2_000_000_000, b'{"id":"x"}'),
    # A body that ends before its declared length (the runtime's HTTP
    # client reports it too; the component no longer relies on that).
    (100, b'{"id":"x"}'),
], ids=["over-limit", "huge-declared", "short"])
def test_an_oversized_or_short_answer_is_a_transient_failure(stack, declared, sent):
    peer = RawPeer(201, declared, sent)
    try:
        app = stack.serve_app(name=f"app-raw-peer-{uuid.uuid4().hex[:8]}", tls=False, overrides={
            "SPIN_VARIABLE_COSMOS_ENDPOINT": peer.url, "SPIN_VARIABLE_COSMOS_RETRY_BUDGET_MS": "2000"})
        status, headers, body = post(f"{app.url}/events", [custom_event(f"/topics/raw-peer-{uuid.uuid4()}")])
        assert status == 503, body
        assert headers.get("retry-after"), headers
        assert peer.requests >= 1
    finally:
        peer.close()
