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
print("seeds written", file=sys.stderr)
