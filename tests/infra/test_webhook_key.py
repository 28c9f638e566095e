"""The optional webhook subscription never carries the ingest key in its URL:
without Entra ID authentication it sends the key as a secret static delivery
property `x-cmk-ingest-key` (Event Grid: "Delivery properties"; provider
block `delivery_property`), and preconditions refuse a plan whose URL
carries `code=` or whose key is empty without Entra ID authentication. A
broken copy fails the check."""

from pathlib import Path

import hcl2
import pytest

import infra_lib


def one(v):
    """python-hcl2 wraps attribute values and blocks in lists (version-dependent)."""
    while isinstance(v, list) and len(v) == 1:
        v = v[0]
    return v


def webhook_key_problems(tf: Path) -> list[str]:
    with (tf / "eventgrid.tf").open() as fh:
        parsed = hcl2.load(fh)
    subs = [r["azurerm_eventgrid_event_subscription"] for r in parsed.get("resource", [])
            if "azurerm_eventgrid_event_subscription" in r]
    webhook = next((s["webhook"] for s in subs if "webhook" in s), None)
    if webhook is None:
        return ["no webhook subscription"]
    problems = []
    endpoint = one(webhook["webhook_endpoint"])
    if "code=" in str(one(endpoint.get("url"))):
        problems.append("the endpoint URL carries ?code=")
    props = []
    for d in webhook.get("dynamic", []):
        if "delivery_property" in d:
            props.append(one(d["delivery_property"]["content"]))
    props += webhook.get("delivery_property", [])
    props = [{k: one(v) for k, v in one(p).items()} for p in props]
    key = [p for p in props if p.get("header_name") == "x-cmk-ingest-key"]
    if not key:
        problems.append("no x-cmk-ingest-key delivery property")
    for p in key:
        if p.get("type") != "Static":
            problems.append("the key property is not Static")
        if p.get("secret") is not True:
            problems.append("the key property is not secret")
        if "webhook_ingest_key" not in str(p.get("value")):
            problems.append("the key property does not take webhook_ingest_key")
    conditions = [str(one(p.get("condition"))) for lc in webhook.get("lifecycle", [])
                  for p in one(lc).get("precondition", [])]
    compact = [c.replace(" ", "").removeprefix("${").removesuffix("}") for c in conditions]
    if '!strcontains(lower(var.app_webhook_url),"code=")' not in compact:
        problems.append("no precondition refusing code= in app_webhook_url")
    if 'var.ingest_entra_app_id_or_uri!=""||var.webhook_ingest_key!=""' not in compact:
        problems.append("no precondition refusing an empty webhook_ingest_key without Entra ID")
    return problems


def test_webhook_sends_the_key_in_a_secret_header():
    assert webhook_key_problems(infra_lib.INFRA / "terraform") == []


@pytest.mark.parametrize("old, new, problem", [
    ("      secret      = true\n", "      secret      = false\n", "not secret"),
    ('header_name = "x-cmk-ingest-key"', 'header_name = "x-other"', "no x-cmk-ingest-key"),
    ("url                               = var.app_webhook_url",
     'url                               = "${var.app_webhook_url}?code=${var.webhook_ingest_key}"', "?code="),
    ('condition     = !strcontains(lower(var.app_webhook_url), "code=")',
     'condition     = strcontains(lower(var.app_webhook_url), "code=")', "refusing code="),
    ('condition     = !strcontains(lower(var.app_webhook_url), "code=")', "condition     = true", "refusing code="),
    ('condition     = var.ingest_entra_app_id_or_uri != "" || var.webhook_ingest_key != ""',
     'condition     = var.ingest_entra_app_id_or_uri != "" || var.webhook_ingest_key == ""', "empty webhook_ingest_key"),
    ('condition     = var.ingest_entra_app_id_or_uri != "" || var.webhook_ingest_key != ""',
     'condition     = var.ingest_entra_app_id_or_uri == "" || var.webhook_ingest_key != ""', "empty webhook_ingest_key"),
])
def test_broken_copies_fail(tree_copy, old, new, problem):
    f = tree_copy / "terraform" / "eventgrid.tf"
    text = f.read_text()
    assert text.count(old) == 1
    f.write_text(text.replace(old, new))
    assert any(problem in p for p in webhook_key_problems(tree_copy / "terraform"))
