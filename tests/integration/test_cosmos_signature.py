"""Differential test: for thousands of generated (verb, resource type, link,
date, key) tuples, the component's master-key signature equals the one the
official Python SDK (`azure-cosmos`, its own auth helper) computes."""

import base64
import json
import random
import subprocess
import urllib.parse

from azure.cosmos import auth as sdk_auth

from harness.stack import ROOT

sdk_sign = getattr(sdk_auth, "__get_authorization_token_using_master_key")

VERBS = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "get", "Post"]
TYPES = ["dbs", "colls", "docs", "pkranges", "users", "permissions", "sprocs", "offers", "", "DOCS"]
ALPHABET = "abcXYZ019 -_.~!$&'()*+,;=:@äöüßéñ中文😀\u00a0%"
DAYS = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]


def rand_id(rng):
    return "".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 24)))


def rand_link(rng):
    ids = [rand_id(rng) for _ in range(rng.randint(0, 3))]
    parts = []
    for kind, i in zip(["dbs", "colls", "docs"], ids):
        parts += [kind, i]
    return "/".join(parts)


def rand_date(rng):
    return (f"{rng.choice(DAYS)}, {rng.randint(1, 28):02d} {rng.choice(MONTHS)} {rng.randint(1990, 2099)} "
            f"{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d} GMT")


def test_signatures_match_the_python_sdk_for_generated_requests():
    rng = random.Random(20261125)
    cases = []
    for _ in range(5000):
        cases.append({
            "verb": rng.choice(VERBS),
            "resource_type": rng.choice(TYPES),
            "link": rand_link(rng),
            "date": rand_date(rng),
            "key": base64.b64encode(rng.randbytes(rng.choice([16, 32, 64, 65]))).decode(),
        })
    proc = subprocess.run(
        ["cargo", "run", "--quiet", "--release", "-p", "cmk-core", "--example", "cosmos-sign"],
        input="".join(json.dumps(c, ensure_ascii=False) + "\n" for c in cases),
        capture_output=True, text=True, cwd=ROOT, check=True)
    ours = proc.stdout.splitlines()
    assert len(ours) == len(cases)
    mismatches = []
    for case, header in zip(cases, ours):
        want = sdk_sign(case["verb"], case["link"], case["resource_type"], {"x-ms-date": case["date"]}, case["key"])
        if urllib.parse.unquote(header) != want:
            mismatches.append((case, header, want))
    assert not mismatches, f"{len(mismatches)} of {len(cases)} differ, first: {mismatches[0]}"
    # The encoded form is what goes on the wire: no raw '+', '/', '=' or '&'.
    assert all(not set(h) & set("+/=&") for h in ours)
