"""Writes the seed corpora in fuzz/seeds/<target>/ from the repository's own
samples (Microsoft's documented event shapes used by the integration tests,
the record-format vectors, the stand-ins' answer shapes). Run from the
repository root with the test environment's Python: python fuzz/seeds/make.py"""

import base64
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, "tests")
from integration.eventgrid import STORAGE_EVENT, VALIDATION, custom_event  # noqa: E402

HERE = Path(__file__).resolve().parent


def put(target, name, data):
    d = HERE / target
    d.mkdir(exist_ok=True)
    (d / name).write_bytes(data if isinstance(data, bytes) else data.encode())


def j(v):
    return json.dumps(v, separators=(",", ":"))


ce = {"specversion": "1.0", "type": "com.example.someevent", "source": "/mycontext", "id": "A234-1234-1234",
      "time": "2018-04-05T17:31:00Z", "comexampleextension1": "value", "datacontenttype": "application/json",
      "data": {"appinfoA": "abc", "appinfoB": 123}}
put("event_grid", "custom", j([custom_event("/topics/a", patient="p-1")]))
put("event_grid", "storage", j([STORAGE_EVENT]))
put("event_grid", "validation", j(VALIDATION))
put("cloudevents", "structured", j(ce))
put("cloudevents", "batch", j([ce, dict(ce, id="2", data_base64="AAEC")]))
put("cloudevents", "binary", "specversion=1.0;id=1;source=%2Fs;type=t\napplication/json\n{\"a\":1}")
put("queue_message", "plain", j(ce))
put("queue_message", "base64", base64.b64encode(j(STORAGE_EVENT).encode()).decode())
put("queue_message", "dapr-metadata", "x-cmk-queue-message-id: m1\nx-cmk-queue-dequeue-count: 2\n"
    "x-cmk-queue-insertion-time: Fri, 09 Oct 2009 21:04:30 GMT\nx-cmk-queue-forwarder: dapr\n")

vectors = json.loads(Path("tests/data/record-v1/vectors.json").read_text())
for i, v in enumerate(vectors["valid"]):
    put("record_opener", f"valid-{i}", j(v["record"]))
for i, v in enumerate(vectors["refused"][:4]):
    put("record_opener", f"refused-{i}", j(v["record"]))


def b64u(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


try:
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import padding
    key = serialization.load_pem_private_key(Path("tests/data/record-v1/test-kek.pem").read_bytes(), None)
    now = 1_800_000_000
    claims = {"aud": "api://cmk-ingest", "iss": "https://login.microsoftonline.com/t/v2.0", "tid": "t",
              "azp": "eventgrid-app", "oid": "o", "roles": ["AzureEventGridSecureWebhookSubscriber"],
              "nbf": now - 300, "exp": now + 3600}
    signing_input = f"{b64u(j({'typ': 'JWT', 'alg': 'RS256', 'kid': 'k1'}).encode())}.{b64u(j(claims).encode())}"
    sig = key.sign(signing_input.encode(), padding.PKCS1v15(), hashes.SHA256())
    put("sender_token", "valid", f"{signing_input}.{b64u(sig)}")
except ImportError:
    pass
put("sender_token", "jwks", (Path(__file__).resolve().parents[1] / "fuzz_targets" / "sender_token.rs")
    .read_text().split('const JWKS: &str = r#"')[1].split('"#;')[0])
put("sender_token", "bearer", "Bearer a.b.c")
# A kept-signatures list (`jwt::checked`) of two.
put("sender_token", "checked", "cmk-checked-signatures/v1\n"
    "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8 1799999400 1800003600\n"
    "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8 1799999400 1800007200")


def resp(status, body):
    return status.to_bytes(2, "big") + (body if isinstance(body, bytes) else body.encode())


# The responses target maps the first two bytes to 100 + n % 500.
put("responses", "cosmos-batch", resp(100, j([{"statusCode": 201, "requestCharge": 5.7, "eTag": "\"e\""}] * 3)))
put("responses", "cosmos-207", resp(107, j([{"statusCode": 429, "subStatusCode": 3200, "retryAfterMilliseconds": 5},
                                            {"statusCode": 424}, {"statusCode": 424}])))
put("responses", "cosmos-read", resp(100, j({"id": "x", "pk": "p", "_etag": "\"e\"", "_ts": 1, "event": {}})))
put("responses", "cosmos-query", resp(100, j({"Documents": [{"id": "x"}], "_count": 1})))
put("responses", "cosmos-error", resp(329, j({"code": "TooManyRequests", "message": "m"})))
put("responses", "hsm-key", resp(100, j({"key": {"kid": "https://h.managedhsm.azure.net/keys/k/v1", "kty": "RSA-HSM",
                                                 "key_ops": ["wrapKey", "unwrapKey"], "n": "AQAB", "e": "AQAB"},
                                         "attributes": {"enabled": True, "nbf": 1, "exp": 2}})))
put("responses", "hsm-crypt", resp(100, j({"kid": "https://h.managedhsm.azure.net/keys/k/v1", "value": "AQID"})))
put("responses", "hsm-error", resp(303, j({"error": {"code": "Forbidden", "message": "m",
                                                     "innererror": {"code": "KeyDisabled"}}})))
put("responses", "entra-token", resp(100, j({"token_type": "Bearer", "expires_in": 3599, "access_token": "tok"})))
put("responses", "entra-error", resp(300, j({"error": "invalid_client", "error_description": "AADSTS7000215: x",
                                             "error_codes": [7000215], "correlation_id": "c"})))

# signed_token: a mode byte (0: header NUL payload, signed as they are;
# 1: edits of a valid token's claims, three bytes each plus a value).
put("signed_token", "raw-valid", b"\x00" + j({"typ": "JWT", "alg": "RS256", "kid": "k1"}).encode() + b"\x00"
    + j({"aud": "api://cmk-ingest", "iss": "https://login.microsoftonline.com/t/v2.0", "tid": "t",
         "azp": "eventgrid-app", "roles": ["AzureEventGridSecureWebhookSubscriber"], "exp": 1_800_003_600}).encode())
put("signed_token", "raw-float-exp", b"\x00" + j({"typ": "JWT", "alg": "RS256", "kid": "k1"}).encode() + b"\x00"
    + j({"aud": "api://cmk-ingest", "iss": "https://login.microsoftonline.com/t/v2.0", "tid": "t",
         "azp": "eventgrid-app", "roles": ["AzureEventGridSecureWebhookSubscriber"], "exp": 1_800_003_600.5}).encode())
put("signed_token", "raw-claims", b"\x00" + j({"aud": ["x", "api://cmk-ingest"], "exp": "1800000000"}).encode())
put("signed_token", "raw-header", b'\x00{"alg":"none","kid":"k1"}\x00{}')
put("signed_token", "valid", b"\x01")
put("signed_token", "edits", bytes([1, 0, 4, 3]) + b"api" + bytes([2, 0, 1]) + b"u" + bytes([0x87, 0, 0, 4, 8, 0]))

# delivery: content type, then `name=value;...` headers, then the body.
def delivery(ct, headers, body):
    return f"{ct}\n{headers}\n{body}"


put("delivery", "event-grid", delivery("application/json", "", j([custom_event("/topics/a", patient="p-1")])))
put("delivery", "validation", delivery("application/json; charset=utf-8", "", j(VALIDATION)))
put("delivery", "structured", delivery("application/cloudevents+json", "", j(ce)))
put("delivery", "batch", delivery("application/cloudevents-batch+json", "", j([ce, dict(ce, id="2")])))
put("delivery", "batch-over-limit", delivery("application/cloudevents-batch+json", "",
                                             j([dict(ce, id=str(i)) for i in range(5)])))
put("delivery", "binary", delivery("application/json", "ce-specversion=1.0;ce-id=1;ce-source=/s;ce-type=t",
                                   j({"a": 1})))
put("delivery", "deep", delivery("application/json", "", "[" * 8 + "]" * 8))

# hsm_crypt: a mode byte (bit 0: build the JSON, bit 1: vault with :443,
# bit 2: the other version, bit 3: an error status), then the body or
# `kid` NUL value.
kid = "https://contoso.managedhsm.azure.net/keys/app-kek/v1"
put("hsm_crypt", "answer", b"\x01" + kid.encode() + b"\x00" + bytes(range(32)))
put("hsm_crypt", "answer-port", b"\x03" + kid.replace(".net/", ".net:443/").encode() + b"\x00\x01")
put("hsm_crypt", "other-version", b"\x05" + kid.encode() + b"\x00\x01")
put("hsm_crypt", "raw", b"\x00" + j({"kid": kid, "value": "AAEC"}).encode())
put("hsm_crypt", "error", b"\x38" + j({"error": {"code": "Forbidden", "message": "m"}}).encode())

# queue_xml: Get Messages (the REST reference's example), Put Message, an error.
put("queue_xml", "list", Path("bridge/src/storage.rs").read_text()
    .split('const LIST: &str = r#"')[1].split('"#;')[0])
put("queue_xml", "empty", '<?xml version="1.0" encoding="utf-8"?><QueueMessagesList />')
put("queue_xml", "put", '<?xml version="1.0" encoding="utf-8"?><QueueMessagesList><QueueMessage>'
    "<MessageId>m</MessageId><InsertionTime>t</InsertionTime><ExpirationTime>t</ExpirationTime>"
    "<PopReceipt>p</PopReceipt><TimeNextVisible>t</TimeNextVisible></QueueMessage></QueueMessagesList>")
put("queue_xml", "error", '<?xml version="1.0" encoding="utf-8"?><Error><Code>QueueNotFound</Code>'
    "<Message>The specified queue does not exist.\nRequestId:r\nTime:t</Message></Error>")
put("queue_xml", "text", '{"id":"a&b","x":"<\u00e9\U0001F600>","cr":"\r\n","cdata":"<![CDATA[x]]>"}')

# proxy_head: request heads as the token proxy reads them.
put("proxy_head", "token", "GET /msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fmanagedhsm.azure.net%2F"
    "&client_id=client HTTP/1.1\r\nHost: localhost:8081\r\nX-IDENTITY-HEADER: identity-header-0123456789\r\n\r\n")
put("proxy_head", "no-identity", "GET /msi/token?api-version=2019-08-01&resource=https://cosmos.azure.com "
    "HTTP/1.1\r\nHost: h\r\n\r\n")
put("proxy_head", "healthz", "GET /healthz HTTP/1.0\r\n\r\n")
put("proxy_head", "post", "POST /msi/token?resource=x&principal_id=p HTTP/1.1\r\nContent-Length: 0\r\n\r\n")

# compact_json: JSON values and texts with every escape class, at and
# across eight-byte boundaries.
put("compact_json", "document", j({"id": "e1", "pk": "/t", "event": {"data": {"text": "line\none\ttab \"q\" \\ \u0001\u001f\u007f",
    "n": [0, -1, 1.5, 1e300, 18446744073709551615], "x": None, "b": True, "\u00e9\u65e5\U0001f980": ""}}}))
put("compact_json", "raw-text", b"abcdefg\"hijklmn\\op\x00q\x1frstu\xc3\xa9\xff\xfe")

# sealed_record: a mode byte (0 round trip, 1 plaintext, 2 edits), then the
# value, the plaintext bytes or the edit operations.
put("sealed_record", "round-trip-object", b"\x00" + j({"name": "n", "a/b": [1, 2.5, None], "t~": {"x": True}}).encode())
put("sealed_record", "round-trip-scalar", b"\x00" + j("a protected string \u00e9").encode())
put("sealed_record", "plaintext", b"\x01" + j({"a": 1, "b": [True, None, -0.5e-3]}).encode())
put("sealed_record", "plaintext-duplicate", b'\x01{"a":1,"a":2}')
put("sealed_record", "edits", bytes([2, 0, 2, 6, 0x10, 5, 0x41, 3, 0x07, 9, 4, 0x2f, 0x2f]))
put("sealed_record", "edits-kid", bytes([2, 0, 2]) + bytes([2, b"x"[0]]) + bytes([0, 6, 2]) + b"x" * 2)

# kv_entry: stored bytes, or a name NUL a value; with sealed entries of both
# kinds under the target's fixed secret.
import hashlib  # noqa: E402
import hmac  # noqa: E402


def derive(label):
    return hmac.new(b"kv-store-key-0123456789abcdef", label, hashlib.sha256).digest()


name = b"entra-token/v1/abcdefghijklmnopqrstuvwx"
token = j({"token": "eyJ0eXAiOiJKV1QifQ.e30.c2ln", "expires_on": 1800000000}).encode()
mac = hmac.new(derive(b"cmk-ingest/kv-store/v1"), len(name).to_bytes(8, "big") + name + token,
               hashlib.sha256).digest()
put("kv_entry", "mac-entry", b"cmk-kv1:" + mac + token)
put("kv_entry", "name-value", name + b"\x00" + token)
put("kv_entry", "plain", token)
try:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    nonce = bytes(range(12))
    aad = b"cmk-kv2:" + len(name).to_bytes(8, "big") + name
    put("kv_entry", "secret-entry", b"cmk-kv2:" + nonce
        + AESGCM(derive(b"cmk-ingest/kv-store/secret/v1")).encrypt(nonce, token, aad))
except ImportError:
    pass
print("seeds written", file=sys.stderr)
