"""The signature check (`sigcheck.py`) on its own, and in front of a real local
Cosmos REST server driven by the official Python SDK.

- Its oracle, the SDK's own master-key helper, reproduces the published
  known-answer vectors, and so does a plain HMAC written here as a cross-check.
- `verify()` accepts those vectors when given the path and date they were
  made for, and refuses a wrong verb, link, key, token type, a missing or
  unparsable date and a date outside the 15-minute window.
- End to end: `CosmosClient` with the right key creates a database, a
  container (`/pk`), upserts and reads a document through the proxy; with a
  wrong key it gets 401 and nothing reaches the server; a request dated 20
  minutes ago gets the service's clock-skew answer (403 Forbidden); the
  proxy keeps HTTP/1.1 connections alive and counts what it did.

The server comes from COSMOS_SERVER_JS (path to
`@vercel/cosmosdb-server/lib/cli.js`), or from CMK_NODE_MODULES as exported by
scripts/bootstrap. Without either the end-to-end tests fail, never skip.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import uuid
from pathlib import Path

import pytest

from cryptography.hazmat.primitives.asymmetric import rsa

from harness.entra import b64u, jwk_of, jwt_sign, key_thumbprint
from harness.sigcheck import (AadPolicy, _sdk_sign, check, expected_authorization, minimal_answer, resource_of,
                              verify)

SIGCHECK = Path(__file__).with_name("sigcheck.py")
EMULATOR_KEY = "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw=="
WRONG_KEY = base64.b64encode(b"not the account key, 32 bytes...").decode()

# (verb, resource type, resource link, x-ms-date, key, signature, request path or None)
DOCS_KEY = "dsZQi3KtZmCv1ljt3VNWNm7sQUF1y5rJfC6kv5JiwvW0EndXdDku/dkKBp8/ufDToSxLzR4y+O/0H/t4bQtVNw=="
RUST_KEY = "8F8xXXOptJxkblM1DBXW7a6NMI5oE8NnwPGYBmwxLCKfejOK7B7yhcCHMGvN3PBrlMLIOeol1Hv9RCdzAZR5sg=="
WIRE_DATE = "Tue, 24 Nov 2026 00:28:39 GMT"
VECTORS = [
    ("GET", "dbs", "dbs/ToDoList", "Thu, 27 Apr 2017 00:51:12 GMT", DOCS_KEY,
     "c09PEVJrgp2uQRkr934kFbTqhByc7TVr3OHyqlu+c+c=", "/dbs/ToDoList"),
    # The Rust SDK's test signs a collection link with type `dbs`: no request path derives that pair.
    ("GET", "dbs", "dbs/MyDatabase/colls/MyCollection", "Mon, 01 Jan 1900 01:00:00 GMT", RUST_KEY,
     "Qkz/r+1N2+PEnNijxGbGB/ADvLsLBQmZ7uBBMuIwf4I=", None),
    ("POST", "docs", "dbs/wiredb/colls/items", WIRE_DATE, EMULATOR_KEY,
     "tHeGybDBswPVyKtqaEbkC+ZIWtIrYZU8b1f7FzZWl58=", "/dbs/wiredb/colls/items/docs"),
    ("GET", "docs", "dbs/wiredb/colls/items/docs/a", WIRE_DATE, EMULATOR_KEY,
     "+k66SR9KVHzN3PLAOT5FRhM4OJmbP+phzjmlFdwvoXM=", "/dbs/wiredb/colls/items/docs/a"),
    ("POST", "colls", "dbs/wiredb", WIRE_DATE, EMULATOR_KEY,
     "tHKoiDQ8Swr6loR5S9YGap29wHZ+8SPLuElXDrYhqVI=", "/dbs/wiredb/colls"),
    ("GET", "", "", WIRE_DATE, EMULATOR_KEY,
     "QXeN3ZfHbRcaC3w6pYIRh8Aqt7bdWOnAcUOpwXE0vZI=", "/"),
]


def plain_hmac(verb: str, resource_type: str, link: str, date: str, key: str) -> str:
    """Cross-check only: the documented recipe, independent of the SDK."""
    text = f"{verb.lower()}\n{resource_type.lower()}\n{link}\n{date.lower()}\n\n"
    return base64.b64encode(hmac.new(base64.b64decode(key), text.encode(), hashlib.sha256).digest()).decode()


def encoded(sig: str, lower_escapes: bool = False) -> str:
    """The header as a client sends it: URL-encoded, `%3D` or (as some official code does) `%3d`."""
    value = urllib.parse.quote(f"type=master&ver=1.0&sig={sig}", safe="-_.!~*'()")
    if lower_escapes:
        value = value.replace("%3D", "%3d").replace("%2B", "%2b").replace("%2F", "%2f")
    return value


def at(date: str) -> float:
    return email.utils.parsedate_to_datetime(date).timestamp()


def rfc1123(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def signed_headers(method: str, path: str, key: str, ts: float | None = None) -> dict[str, str]:
    date = rfc1123(time.time() if ts is None else ts)
    auth = expected_authorization(method, path, {"x-ms-date": date}, key)
    return {"x-ms-date": date, "authorization": urllib.parse.quote(auth, safe="-_.!~*'()"),
            "x-ms-version": "2020-07-15"}


# -- the check, without a server -----------------------------------------------


@pytest.mark.parametrize("path, want", [
    ("/", ("", "")),
    ("", ("", "")),
    ("/dbs", ("dbs", "")),
    ("/dbs/db", ("dbs", "dbs/db")),
    ("/dbs/db/colls", ("colls", "dbs/db")),
    ("/dbs/db/colls/c", ("colls", "dbs/db/colls/c")),
    ("/dbs/db/colls/c/docs", ("docs", "dbs/db/colls/c")),
    ("/dbs/db/colls/c/docs/", ("docs", "dbs/db/colls/c")),
    ("/dbs/db/colls/c/docs/id", ("docs", "dbs/db/colls/c/docs/id")),
    ("/dbs/db/colls/c/pkranges", ("pkranges", "dbs/db/colls/c")),
    ("/dbs/db/colls/c/docs/a%20b%2Bc%C3%A4?x=1", ("docs", "dbs/db/colls/c/docs/a b+cä")),
    ("/dbs/my%20db/colls/c%26d/docs", ("docs", "dbs/my db/colls/c&d")),
    ("/offers", ("offers", "")),
    # Resource-id addressing: the link is the addressed resource's rid, lower-cased.
    ("/dbs/AbCdEA==/colls/AbCdEFGHIJ0=/docs", ("docs", "abcdefghij0=")),
    ("/dbs/AbCdEA==/colls/AbCdEFGHIJ0=/docs/AbCdEFGHIJ0BAAAAAAAAAA==", ("docs", "abcdefghij0baaaaaaaaaa==")),
    ("/dbs/AbCdEA==", ("dbs", "abcdea==")),
])
def test_resource_type_and_link_from_the_path(path, want):
    assert resource_of(path) == want


@pytest.mark.parametrize("verb, rtype, link, date, key, sig, path", VECTORS)
def test_the_sdk_oracle_and_a_plain_hmac_reproduce_the_known_answers(verb, rtype, link, date, key, sig, path):
    assert _sdk_sign(verb, link, rtype, {"x-ms-date": date}, key) == f"type=master&ver=1.0&sig={sig}"
    assert plain_hmac(verb, rtype, link, date, key) == sig


@pytest.mark.parametrize("verb, rtype, link, date, key, sig, path", [v for v in VECTORS if v[6] is not None])
def test_verify_accepts_the_known_answers_at_their_own_date(verb, rtype, link, date, key, sig, path):
    assert resource_of(path) == (rtype, link)
    for lower in (False, True):
        headers = {"x-ms-date": date, "authorization": encoded(sig, lower)}
        assert verify(verb, path, headers, key, at(date)) == (True, "ok")
    # Header names in any case, as they arrive.
    assert verify(verb, path, {"X-MS-Date": date, "Authorization": encoded(sig)}, key, at(date))[0]
    # One character off, or the other key: refused; a minute later: still accepted.
    flipped = ("A" if sig[0] != "A" else "B") + sig[1:]
    assert not verify(verb, path, {"x-ms-date": date, "authorization": encoded(flipped)}, key, at(date))[0]
    other = EMULATOR_KEY if key != EMULATOR_KEY else DOCS_KEY
    assert not verify(verb, path, {"x-ms-date": date, "authorization": encoded(sig)}, other, at(date))[0]
    assert verify(verb, path, {"x-ms-date": date, "authorization": encoded(sig)}, key, at(date) + 60)[0]


def test_verify_refuses_what_the_service_refuses():
    now = at(WIRE_DATE)
    path = "/dbs/wiredb/colls/items/docs"
    good = encoded("tHeGybDBswPVyKtqaEbkC+ZIWtIrYZU8b1f7FzZWl58=")
    h = {"x-ms-date": WIRE_DATE, "authorization": good}
    assert verify("POST", path, h, EMULATOR_KEY, now) == (True, "ok")

    def status(method=None, p=None, headers=None, key=EMULATOR_KEY, when=now, aad=None):
        v = check(method or "POST", p or path, h if headers is None else headers, key, when, aad)
        return v.status, v.code

    assert status(method="GET") == (401, "Unauthorized")  # wrong verb
    assert status(p=path + "/x") == (401, "Unauthorized")  # wrong link
    assert status(p="/dbs/wiredb/colls/Items/docs") == (401, "Unauthorized")  # links are case-sensitive
    assert status(key=WRONG_KEY) == (401, "Unauthorized")
    assert status(headers={"x-ms-date": WIRE_DATE}) == (401, "Unauthorized")  # no authorization
    assert status(headers={"authorization": good}) == (401, "Unauthorized")  # no x-ms-date
    assert status(headers={"x-ms-date": "yesterday", "authorization": good}) == (401, "Unauthorized")
    assert status(headers={"x-ms-date": WIRE_DATE, "authorization": "garbage"}) == (401, "Unauthorized")
    assert status(headers={"x-ms-date": WIRE_DATE, "authorization": good.replace("1.0", "2.0")}) == (401, "Unauthorized")
    resource = urllib.parse.quote("type=resource&ver=1.0&sig=abc", safe="")
    assert status(headers={"x-ms-date": WIRE_DATE, "authorization": resource}) == (401, "Unauthorized")
    # Clock skew: 15 minutes either way is accepted, more is refused as the service does (403).
    assert status(when=now + 15 * 60) == (0, "")
    assert status(when=now - 15 * 60) == (0, "")
    assert status(when=now + 20 * 60) == (403, "Forbidden")
    assert status(when=now - 16 * 60) == (403, "Forbidden")
    v = check("POST", path, h, EMULATOR_KEY, now + 20 * 60)
    assert "not valid at the current time" in v.message and "token expiry time: Tue, 24 Nov 2026 00:43:39 GMT" in v.message
    # A mismatch names the payload the proxy signed (as the service does), never the key.
    v = check("POST", path, h, WRONG_KEY, now)
    assert "post\\ndocs\\ndbs/wiredb/colls/items\\ntue, 24 nov 2026 00:28:39 gmt\\n\\n" in v.message
    assert WRONG_KEY not in v.message and EMULATOR_KEY not in v.message
    # Entra ID tokens: refused unless a policy is configured (see the tests below).
    aad = {"x-ms-date": WIRE_DATE, "authorization": "type=aad&ver=1.0&sig=eyJ0eXAi.eyJhdWQi.c2ln"}
    assert status(headers=aad) == (401, "Unauthorized")


# -- Entra ID tokens ---------------------------------------------------------------

ACCOUNT_AUDIENCE = "https://sigacct.documents.azure.com"
ISSUER = "https://login.microsoftonline.com/t1/v2.0"
SIGNER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STRANGER = rsa.generate_private_key(public_exponent=65537, key_size=2048)
KID = key_thumbprint(SIGNER.public_key())


def policy(**kw) -> AadPolicy:
    return AadPolicy([ACCOUNT_AUDIENCE], [ISSUER, "https://sts.windows.net/t1/"],
                     keys={KID: SIGNER.public_key()}, **kw)


def token(now: float, key=SIGNER, kid=KID, **claims) -> str:
    base = {"aud": ACCOUNT_AUDIENCE, "iss": ISSUER, "iat": int(now) - 300, "nbf": int(now) - 300,
            "exp": int(now) + 3600, "oid": "oid-1", "tid": "t1"}
    base.update(claims)
    return jwt_sign({k: v for k, v in base.items() if v is not None}, key, kid)


def aad_check(tok: str, now: float, encode: bool = False, pol: AadPolicy | None = None):
    value = f"type=aad&ver=1.0&sig={tok}"
    if encode:
        value = urllib.parse.quote(value, safe="")
    return check("POST", "/dbs/d/colls/c/docs", {"x-ms-date": rfc1123(now), "authorization": value},
                 EMULATOR_KEY, now, pol or policy())


def test_aad_tokens_are_verified_like_the_service():
    now = time.time()
    # Accepted: a good token, sent as the Python SDK sends it or URL-encoded;
    # the global Cosmos DB audience; the v1.0 issuer form.
    for encode in (False, True):
        assert aad_check(token(now), now, encode).ok
    assert aad_check(token(now, aud="https://cosmos.azure.com"), now).ok
    assert aad_check(token(now, iss="https://sts.windows.net/t1/"), now).ok
    assert aad_check(token(now), now).kind == "aad"

    def refused(v):
        assert (v.status, v.code) == (401, "Unauthorized"), v
        return v.message

    # Another account's audience, or this one's with a trailing slash (reported from the service).
    for aud in ("https://other.documents.azure.com", ACCOUNT_AUDIENCE + "/", "https://managedhsm.azure.net"):
        v = aad_check(token(now, aud=aud), now)
        assert f"Provided AAD token is intended for [{aud}]" in refused(v) and v.sub_status == 5008
        assert ACCOUNT_AUDIENCE in v.message
    # Expired (beyond the leeway), not yet valid, another issuer.
    assert "has been expired since" in refused(aad_check(token(now, exp=int(now) - 120), now))
    assert aad_check(token(now, exp=int(now) - 30), now).ok  # inside the 60 s leeway
    assert "has been expired" in refused(aad_check(token(now, exp=None), now))
    assert "not valid before" in refused(aad_check(token(now, nbf=int(now) + 600), now))
    assert "issued by" in refused(aad_check(token(now, iss="https://login.microsoftonline.com/t2/v2.0"), now))
    # Signature: another key under the trusted kid, an unknown kid, a tampered payload, alg none, garbage.
    assert "signature" in refused(aad_check(token(now, key=STRANGER), now))
    assert "unknown" in refused(aad_check(token(now, key=STRANGER, kid="nope"), now))
    h, p, sig = token(now).split(".")
    forged = b64u(json.dumps({"aud": ACCOUNT_AUDIENCE, "iss": ISSUER, "exp": int(now) + 3600}).encode())
    assert "signature" in refused(aad_check(f"{h}.{forged}.{sig}", now))
    none = b64u(b'{"alg":"none","typ":"JWT"}') + "." + p + "."
    assert "RS256" in refused(aad_check(none, now))
    assert "malformed" in refused(aad_check("not-a-jwt", now))
    # Without a policy no token is accepted at all.
    v = check("POST", "/dbs/d/colls/c/docs", {"x-ms-date": rfc1123(now), "authorization":
                                              f"type=aad&ver=1.0&sig={token(now)}"}, EMULATOR_KEY, now)
    assert v.status == 401 and "no --aad-jwks" in v.message


# -- in front of the real local server -------------------------------------------


def server_js() -> Path:
    path = os.environ.get("COSMOS_SERVER_JS")
    if not path and os.environ.get("CMK_NODE_MODULES"):
        path = str(Path(os.environ["CMK_NODE_MODULES"]) / "@vercel/cosmosdb-server/lib/cli.js")
    if not path:
        pytest.fail("COSMOS_SERVER_JS is not set: point it at @vercel/cosmosdb-server/lib/cli.js "
                    "(npm install @vercel/cosmosdb-server@1.0.1), or run through scripts/test", pytrace=False)
    if not Path(path).is_file():
        pytest.fail(f"COSMOS_SERVER_JS={path} is not a file", pytrace=False)
    return Path(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def upstream(tmp_path_factory):
    js = server_js()
    port = free_port()
    log = tmp_path_factory.mktemp("cosmosdb-server") / "server.log"
    proc = subprocess.Popen(["node", str(js), "-p", str(port), "--no-ssl"], stdout=log.open("wb"),
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            if proc.poll() is not None:
                pytest.fail(f"cosmosdb-server exited with {proc.returncode}: {log.read_text()}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"cosmosdb-server did not listen on {port}", pytrace=False)
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        stop(proc)


class Proxy:
    """sigcheck.py run as its CLI, on a port of its own choosing."""

    def __init__(self, upstream: str, log: Path, *extra: str):
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, str(SIGCHECK), "--listen", "127.0.0.1:0", "--upstream", upstream,
             "--key", EMULATOR_KEY, "--log", str(log), *extra],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        # The CLI announces itself with exactly one line once it is listening.
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("sigcheck listening on http://127.0.0.1:"):
            stop(self.proc)
            raise RuntimeError(f"sigcheck did not start: {line!r} {self.proc.stdout.read().decode()!r}")
        self.url = line.split()[-1]
        self.port = urllib.parse.urlsplit(self.url).port

    def conn(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def stats(self) -> dict:
        c = self.conn()
        c.request("GET", "/_sigcheck/stats")
        r = c.getresponse()
        assert r.status == 200
        return json.loads(r.read())


@pytest.fixture(scope="module")
def proxy(upstream, tmp_path_factory):
    p = Proxy(upstream, tmp_path_factory.mktemp("sigcheck") / "sigcheck.log")
    yield p
    stop(p.proc)


def cosmos_client(url: str, key: str):
    from azure.cosmos import CosmosClient

    return CosmosClient(url, credential=key, enable_endpoint_discovery=False)


def test_the_sdk_works_through_the_proxy_with_the_right_key(proxy):
    from azure.cosmos import PartitionKey

    before = proxy.stats()
    client = cosmos_client(proxy.url, EMULATOR_KEY)
    db = client.create_database_if_not_exists("sigdb")
    container = db.create_container_if_not_exists("items", partition_key=PartitionKey(path="/pk"))
    doc = {"id": "a b+ä", "pk": "p1", "n": 1}
    container.upsert_item(doc)
    container.upsert_item({**doc, "n": 2})
    got = container.read_item("a b+ä", partition_key="p1")
    assert (got["id"], got["pk"], got["n"]) == ("a b+ä", "p1", 2)
    assert [d["n"] for d in container.query_items("SELECT * FROM c WHERE c.pk = 'p1'", partition_key="p1")] == [2]
    after = proxy.stats()
    assert after["rejected"] == before["rejected"], proxy.log.read_text()
    assert after["forwarded"] - before["forwarded"] >= 5
    assert after["total"] - before["total"] == after["forwarded"] - before["forwarded"]


def test_a_wrong_key_gets_401_and_reaches_nothing(proxy, upstream):
    from azure.cosmos.exceptions import CosmosHttpResponseError

    before = proxy.stats()
    with pytest.raises(CosmosHttpResponseError) as e:
        # The client's constructor already reads the account (GET /), so this may fail there.
        cosmos_client(proxy.url, WRONG_KEY).create_database("must-not-exist")
    assert e.value.status_code == 401
    assert "can't serve the request" in e.value.message
    after = proxy.stats()
    assert after["rejected"] > before["rejected"] and after["forwarded"] == before["forwarded"]
    # The server never saw it (read directly, around the proxy).
    u = urllib.parse.urlsplit(upstream)
    c = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    c.request("GET", "/dbs", headers=signed_headers("GET", "/dbs", EMULATOR_KEY))
    assert "must-not-exist" not in [d["id"] for d in json.loads(c.getresponse().read())["Databases"]]
    assert WRONG_KEY not in proxy.log.read_text() and EMULATOR_KEY not in proxy.log.read_text()


def test_a_request_dated_20_minutes_ago_is_refused(proxy):
    before = proxy.stats()
    c = proxy.conn()
    c.request("GET", "/dbs", headers=signed_headers("GET", "/dbs", EMULATOR_KEY, time.time() - 20 * 60))
    r = c.getresponse()
    body = json.loads(r.read())
    assert r.status == 403 and body["code"] == "Forbidden", body
    assert "not valid at the current time" in body["message"]
    uuid.UUID(r.getheader("x-ms-activity-id"))
    assert proxy.stats()["rejected"] == before["rejected"] + 1


def test_keep_alive_and_answers_of_its_own(proxy):
    c = proxy.conn()
    c.request("GET", "/", headers=signed_headers("GET", "/", EMULATOR_KEY))
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())
    sock = c.sock
    # A refused request on the same connection: Cosmos-shaped, with a length, and the connection stays.
    c.request("POST", "/dbs", body=b'{"id":"x"}', headers={"x-ms-date": rfc1123(time.time()),
                                                          "Content-Type": "application/json"})
    r = c.getresponse()
    body = json.loads(r.read())
    assert (r.status, body["code"]) == (401, "Unauthorized")
    assert r.getheader("Content-Length") and r.getheader("x-ms-activity-id")
    c.request("GET", "/dbs/sigdb/colls/items/docs/nothing-here",
              headers={**signed_headers("GET", "/dbs/sigdb/colls/items/docs/nothing-here", EMULATOR_KEY),
                       "x-ms-documentdb-partitionkey": '["p1"]'})
    r = c.getresponse()
    assert (r.status, json.loads(r.read())["code"]) == (404, "NotFound")  # the server itself says 500
    assert c.sock is sock, "the proxy closed a keep-alive connection"


def test_bodies_are_forwarded_whatever_the_framing(proxy):
    """Lower-case header names (as Wasmtime's client sends them) and chunked
    bodies reach the server once, with one Content-Length."""
    path = "/dbs/sigdb/colls/items/docs"
    for i, chunked in enumerate((False, True)):
        body = json.dumps({"id": f"framing-{i}", "pk": "p2"}).encode()
        headers = {**signed_headers("POST", path, EMULATOR_KEY), "x-ms-documentdb-partitionkey": '["p2"]',
                   "x-ms-documentdb-is-upsert": "True", "content-type": "application/json"}
        c = proxy.conn()
        c.putrequest("POST", path, skip_accept_encoding=True)
        for k, v in headers.items():
            c.putheader(k, v)
        if chunked:
            c.putheader("transfer-encoding", "chunked")
            c.endheaders()
            for piece in (body[:5], body[5:]):
                c.send(b"%x\r\n%s\r\n" % (len(piece), piece))
            c.send(b"0\r\n\r\n")
        else:
            c.putheader("content-length", str(len(body)))
            c.endheaders(body)
        r = c.getresponse()
        got = r.read()
        assert r.status in (200, 201), (chunked, r.status, got)
        assert json.loads(got)["id"] == f"framing-{i}"


DOCS = "/dbs/d/colls/c/docs"
MINIMAL = {"Prefer": "return=minimal"}


def test_minimal_answers_are_cut_as_the_service_cuts_them():
    doc = json.dumps({"id": "a", "pk": "p", "_etag": "\"1\""}).encode()
    # A point write that asks for it: status and headers only.
    assert minimal_answer("POST", DOCS, MINIMAL, b"{}", 201, doc) == b""
    assert minimal_answer("POST", DOCS, {"prefer": " Return=Minimal "}, b"{}", 200, doc) == b""
    assert minimal_answer("PUT", DOCS + "/a", MINIMAL, b"{}", 200, doc) == b""
    # Relayed as they are: no preference, a read, a failure, another resource.
    query = {**MINIMAL, "x-ms-documentdb-isquery": "True", "Content-Type": "application/query+json"}
    for method, path, headers, status in [("POST", DOCS, {}, 201), ("GET", DOCS + "/a", MINIMAL, 200),
                                          ("POST", DOCS, query, 200),
                                          ("POST", DOCS, MINIMAL, 409), ("POST", "/dbs/d/colls", MINIMAL, 201),
                                          ("POST", DOCS, {"Prefer": "return=representation"}, 201)]:
        assert minimal_answer(method, path, headers, b"{}", status, doc) is None, (method, path, headers, status)
    # A batch: each successful operation that asked loses its resourceBody;
    # one that did not ask, and a failed one, keep what they had.
    batch = {"x-ms-cosmos-is-batch-request": "True"}
    ops = [{"operationType": "Upsert", "minimalReturnPreference": True, "resourceBody": {"id": "a"}},
           {"operationType": "Upsert", "resourceBody": {"id": "b"}},
           {"operationType": "Create", "minimalReturnPreference": True, "resourceBody": {"id": "c"}}]
    results = [{"statusCode": 201, "requestCharge": 1.5, "eTag": "\"e1\"", "resourceBody": {"id": "a"}},
               {"statusCode": 200, "requestCharge": 1.0, "eTag": "\"e2\"", "resourceBody": {"id": "b"}},
               {"statusCode": 409, "requestCharge": 0.0, "resourceBody": {"id": "c"}}]
    cut = minimal_answer("POST", DOCS, batch, json.dumps(ops).encode(), 200, json.dumps(results).encode())
    assert json.loads(cut) == [{"statusCode": 201, "requestCharge": 1.5, "eTag": "\"e1\""}, results[1], results[2]]
    # A batch whose operations did not ask, even under the header: as it is.
    plain = [{k: v for k, v in op.items() if k != "minimalReturnPreference"} for op in ops]
    assert minimal_answer("POST", DOCS, {**batch, **MINIMAL}, json.dumps(plain).encode(), 200,
                          json.dumps(results).encode()) is None
    # A result whose status is not a number is relayed, not a crash.
    for odd in ("201", None, "abc", {"x": 1}, 201.5):
        assert minimal_answer("POST", DOCS, batch, json.dumps(ops[:1]).encode(), 200,
                              json.dumps([{"statusCode": odd, "resourceBody": {}}]).encode()) is None, odd


def test_the_sdk_without_content_on_write_gets_no_body(proxy):
    """The official SDK's own minimal write (`no_response`, which sends
    `Prefer: return=minimal`) lands the document and gets no body back."""
    from azure.cosmos import PartitionKey

    client = cosmos_client(proxy.url, EMULATOR_KEY)
    container = client.create_database_if_not_exists("sigdb").create_container_if_not_exists(
        "items", partition_key=PartitionKey(path="/pk"))
    before = proxy.stats()["minimal"]
    got = container.upsert_item({"id": "quiet", "pk": "p3", "n": 7}, no_response=True)
    assert not got
    assert proxy.stats()["minimal"] == before + 1
    assert container.read_item("quiet", partition_key="p3")["n"] == 7
    # And a transactional batch as the component sends it: results without documents.
    path = "/dbs/sigdb/colls/items/docs"
    ops = [{"operationType": "Upsert", "partitionKey": '["p3"]', "minimalReturnPreference": True,
            "resourceBody": {"id": f"quiet-{i}", "pk": "p3"}} for i in range(2)]
    body = json.dumps(ops).encode()
    c = proxy.conn()
    c.request("POST", path, body, {**signed_headers("POST", path, EMULATOR_KEY), "content-type": "application/json",
                                   "x-ms-documentdb-partitionkey": '["p3"]', "x-ms-cosmos-is-batch-request": "True",
                                   "x-ms-cosmos-batch-atomic": "True"})
    r = c.getresponse()
    results = json.loads(r.read())
    assert r.status == 200 and [x["statusCode"] for x in results] == [201, 201], results
    assert not any("resourceBody" in x for x in results)
    assert proxy.stats()["minimal"] == before + 2
    assert container.read_item("quiet-1", partition_key="p3")["id"] == "quiet-1"


def test_counters_and_reset(proxy):
    c = proxy.conn()
    c.request("POST", "/_sigcheck/reset")
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["total"] == 0
    c.request("GET", "/", headers=signed_headers("GET", "/", EMULATOR_KEY))
    c.getresponse().read()
    c.request("GET", "/", headers={"x-ms-date": rfc1123(time.time()), "authorization": encoded("x")})
    c.getresponse().read()
    stats = proxy.stats()
    assert {k: stats[k] for k in ("total", "forwarded", "rejected")} == {"total": 2, "forwarded": 1, "rejected": 1}


def test_the_python_sdks_own_account_reads_are_neither_counted_nor_faulted(proxy):
    """The SDK reads the account from a background thread after a client's
    first request; such a read must not move the counters the tests compare,
    nor take a fault queued for the component."""
    sdk = "azsdk-python-cosmos/4.17.1 Python/3.11.2 (Linux)"
    c = proxy.conn()
    c.request("POST", "/_sigcheck/reset")
    c.getresponse().read()
    c.request("POST", "/_sigcheck/faults", body=json.dumps([{"status": 503}]).encode())
    c.getresponse().read()
    c.request("GET", "/", headers={**signed_headers("GET", "/", EMULATOR_KEY), "User-Agent": sdk})
    r = c.getresponse()
    assert r.status == 200 and json.loads(r.read())["id"]
    stats = proxy.stats()
    assert (stats["total"], stats["forwarded"], stats["pending_faults"], stats["sdk_account_reads"]) == (0, 0, 1, 1)
    # Signed wrongly, it is refused and counted as any other request.
    c.request("GET", "/", headers={"x-ms-date": rfc1123(time.time()), "authorization": encoded("x"), "User-Agent": sdk})
    r = c.getresponse()
    assert r.status == 401 and json.loads(r.read())["code"] == "Unauthorized"
    # Any other client's account read, or the SDK's other requests, take the fault.
    c.request("GET", "/", headers=signed_headers("GET", "/", EMULATOR_KEY))
    r = c.getresponse()
    r.read()
    stats = proxy.stats()
    assert r.status == 503 and (stats["total"], stats["rejected"], stats["faulted"]) == (2, 1, 1)


@pytest.fixture(scope="module")
def jwks_url():
    """The signing key's JWKS on a loopback port, as the Entra stand-in serves it."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    body = json.dumps({"keys": [jwk_of(SIGNER.public_key(), KID)]}).encode()

    class Keys(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Keys)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/t1/discovery/v2.0/keys"
    server.shutdown()


def test_aad_tokens_through_the_proxy_and_the_sdk(upstream, proxy, jwks_url, tmp_path, monkeypatch):
    """The CLI fetches the JWKS and verifies tokens; the official SDK, given a
    token credential, sends its own header form and is accepted; a token for
    another audience reaches nothing."""
    import azure.core.pipeline.policies._authentication as core_auth
    from azure.core.credentials import AccessToken
    from azure.cosmos import CosmosClient, PartitionKey

    # The SDK sends tokens only over TLS; the local server speaks plain HTTP.
    monkeypatch.setattr(core_auth, "_enforce_https", lambda request: None)

    now = time.time()
    good = token(now)
    headers = {"x-ms-date": rfc1123(now), "authorization": f"type=aad&ver=1.0&sig={good}"}
    c = proxy.conn()  # the module's proxy has no --aad-jwks
    c.request("GET", "/", headers=headers)
    r = c.getresponse()
    assert (r.status, json.loads(r.read())["code"]) == (401, "Unauthorized")
    with_aad = Proxy(upstream, tmp_path / "aad.log", "--aad-jwks", jwks_url, "--aad-audience", ACCOUNT_AUDIENCE,
                     "--aad-issuer", ISSUER)
    try:
        class Fixed:
            def __init__(self, tok):
                self.tok, self.scopes = tok, []

            def get_token(self, *scopes, **kw):
                self.scopes += scopes
                return AccessToken(self.tok, int(now) + 3600)

        cred = Fixed(good)
        client = CosmosClient(with_aad.url, credential=cred, enable_endpoint_discovery=False)
        db = client.create_database_if_not_exists("aaddb")
        items = db.create_container_if_not_exists("items", partition_key=PartitionKey(path="/pk"))
        items.upsert_item({"id": "a", "pk": "p"})
        assert items.read_item("a", partition_key="p")["id"] == "a"
        assert cred.scopes and all(sc == "http://127.0.0.1/.default" for sc in cred.scopes)  # the SDK's derivation
        stats = with_aad.stats()
        assert stats["rejected"] == 0 and stats["accepted_by_type"]["aad"] == stats["forwarded"] >= 3
        before = stats["forwarded"]
        with pytest.raises(Exception) as e:
            wrong = CosmosClient(with_aad.url, credential=Fixed(token(now, aud="https://other.documents.azure.com")),
                                 enable_endpoint_discovery=False)
            wrong.get_database_client("aaddb").get_container_client("items").upsert_item({"id": "b", "pk": "p"})
        assert getattr(e.value, "status_code", None) == 401, e.value
        assert "intended for [https://other.documents.azure.com]" in str(e.value)
        assert with_aad.stats()["forwarded"] == before
        assert good not in (tmp_path / "aad.log").read_text()
    finally:
        stop(with_aad.proc)
