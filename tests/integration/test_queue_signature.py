"""Differential test: for generated Queue service requests (the bridge's
operations, with random accounts, keys, dates, message ids, pop receipts and
body lengths), the bridge's Shared Key signature equals the one the official
Python SDK computes with its own policy (`azure-storage-queue`'s
SharedKeyCredentialPolicy). azurite checks the same signatures on the wire
(tests/integration/test_queue_bridge.py)."""

import base64
import json
import random
import subprocess
import urllib.parse

from azure.core.pipeline import PipelineContext, PipelineRequest
from azure.core.pipeline.transport import HttpRequest
from azure.storage.queue._shared.authentication import SharedKeyCredentialPolicy

from harness.stack import ROOT

DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
RECEIPT = "ABCXYZabcxyz0189+/="


def sdk_authorization(case):
    req = HttpRequest(case["method"], case["url"], headers=dict(case["headers"]))
    pipeline_request = PipelineRequest(req, PipelineContext(None))
    SharedKeyCredentialPolicy(case["account"], case["key"]).on_request(pipeline_request)
    return req.headers["Authorization"]


def rand_case(rng):
    account = rng.choice(["devstoreaccount1", "contoso", "a" * 24, "acct" + str(rng.randint(0, 999))])
    queue = rng.choice(["events", "events-poison", "q" + "-x" * rng.randint(1, 5)])
    path_style = rng.random() < 0.5
    origin = "http://127.0.0.1:10001" if path_style else f"https://{account}.queue.core.windows.net"
    base = f"{origin}/{account}/{queue}" if path_style else f"{origin}/{queue}"
    date = (f"{rng.choice(DAYS)}, {rng.randint(1, 28):02d} {rng.choice(MONTHS)} {rng.randint(2000, 2099)} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} GMT")
    headers = [["x-ms-version", rng.choice(["2021-08-06", "2019-12-12"])], ["x-ms-date", date]]
    op = rng.choice(["get", "delete", "put", "create"])
    if op == "get":
        method = "GET"
        url = f"{base}/messages?numofmessages={rng.randint(1, 32)}&visibilitytimeout={rng.randint(1, 604800)}"
    elif op == "delete":
        method = "DELETE"
        receipt = "".join(rng.choice(RECEIPT) for _ in range(rng.randint(8, 40)))
        url = f"{base}/messages/{rng.randbytes(16).hex()}?popreceipt={urllib.parse.quote(receipt, safe='')}"
    elif op == "put":
        method = "POST"
        url = f"{base}/messages?messagettl=-1"
        headers += [["content-type", "application/xml; charset=utf-8"], ["content-length", str(rng.randint(1, 65536))]]
    else:
        method = "PUT"
        url = base
        headers += [["content-length", "0"]]
    if rng.random() < 0.3:
        headers.append(["x-ms-client-request-id", str(rng.randbytes(8).hex())])
    rng.shuffle(headers)
    key = base64.b64encode(rng.randbytes(rng.choice([32, 64]))).decode()
    return {"method": method, "url": url, "headers": headers, "account": account, "key": key}


def test_shared_key_signatures_match_the_python_sdk():
    rng = random.Random(20261125)
    cases = [rand_case(rng) for _ in range(3000)]
    proc = subprocess.run(
        ["cargo", "run", "--quiet", "-p", "cmk-ingest-bridge", "--example", "queue-sign"],
        input="".join(json.dumps(c) + "\n" for c in cases),
        capture_output=True, text=True, cwd=ROOT, check=True)
    ours = proc.stdout.splitlines()
    assert len(ours) == len(cases)
    mismatches = [(c, o) for c, o in zip(cases, ours) if sdk_authorization(c) != o]
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ; first: {mismatches[0]}"


def test_the_check_can_fail():
    case = rand_case(random.Random(1))
    wrong = dict(case, key=base64.b64encode(b"another key of thirty-two bytes!").decode())
    assert sdk_authorization(case) != sdk_authorization(wrong)
