"""The queue bridge's Deployment sets exactly what bridge/src/config.rs reads.

Read from the bridge's source at test time: the variable names
(`VARIABLES`), the required ones, the auth modes, and every numeric
setting's default and range (`number("NAME", default, min, max)`). The
Deployment's environment (its env and the ConfigMaps it loads) may name
only those, must set the required ones, secrets only from Secrets, values in
range, a request timeout shorter than the visibility timeout, and a grace
period that lets forwards in flight finish. With workload identity its pods
carry the webhook label and its service account is federated in Terraform.
The KEDA ScaledObject scales that Deployment on the same queue. Broken
copies fail.
"""

import copy
import re
from urllib.parse import urlsplit

import hcl2
import pytest

import infra_lib
from test_identity_wiring import container_env

BRIDGE = "cmk-ingest-bridge"
CONFIG_RS = infra_lib.ROOT / "bridge" / "src" / "config.rs"
SECRETS = {"BRIDGE_INGEST_KEY", "BRIDGE_ACCOUNT_KEY", "AZURE_CLIENT_SECRET", "IDENTITY_HEADER"}
INJECTED = {"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"}


def bridge_reads() -> dict:
    src = CONFIG_RS.read_text().split("#[cfg(test)]")[0]
    block = re.search(r"pub const VARIABLES: &\[&str\] = &\[(.*?)\];", src, re.S).group(1)
    names = set(re.findall(r'"([A-Z0-9_]+)"', block))
    numbers = {m[0]: tuple(int(x.replace("_", "")) for x in m[1:])
               for m in re.findall(r'number\(\s*"([A-Z0-9_]+)",\s*([\d_]+),\s*([\d_]+),\s*([\d_ *]+?)\s*,?\s*\)', src.replace("7 * 24 * 3600", "604800"))}
    auth = set(re.findall(r'^\s*"([a-z-]+)" => ', src, re.M))
    # required at the top level (not inside one auth mode's arm)
    top = src.split("let auth_kind")[0]
    required = set(re.findall(r'required\("([A-Z0-9_]+)"\)', top))
    return {"names": names, "numbers": numbers, "auth": auth, "required": required}


def problems(docs: list[dict], tf: str) -> list[str]:
    out: list[str] = []
    reads = bridge_reads()
    by = infra_lib.by_kind_name(docs)
    cms = {n: d.get("data", {}) for (k, n), d in by.items() if k == "ConfigMap"}
    dep = by.get(("Deployment", BRIDGE))
    if dep is None:
        return ["no bridge Deployment"]
    pod = dep["spec"]["template"]
    env = container_env(pod, cms)
    for name in sorted(set(env) - reads["names"]):
        out.append(f"the bridge reads no `{name}`")
    for name in sorted(reads["required"] - set(env)):
        out.append(f"required `{name}` is not set")
    for name in sorted(SECRETS & set(env)):
        if "secret" not in env[name]:
            out.append(f"`{name}` must come from a Secret")
    val = {k: v.get("value") for k, v in env.items() if "secret" not in v}
    for name, (default, lo, hi) in reads["numbers"].items():
        if name in val:
            v = str(val[name]).strip()
            if not (v.isdigit() and lo <= int(v) <= hi):
                out.append(f"`{name}` = {v!r} is outside {lo}..{hi}")
    num = lambda n: int(val[n]) if str(val.get(n, "")).strip().isdigit() else reads["numbers"][n][0]
    if num("BRIDGE_REQUEST_TIMEOUT_SECS") >= num("BRIDGE_VISIBILITY_TIMEOUT_SECS"):
        out.append("BRIDGE_REQUEST_TIMEOUT_SECS must be shorter than BRIDGE_VISIBILITY_TIMEOUT_SECS")
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    if grace < num("BRIDGE_REQUEST_TIMEOUT_SECS") + 5:
        out.append("terminationGracePeriodSeconds must exceed BRIDGE_REQUEST_TIMEOUT_SECS by a few seconds")
    auth = val.get("BRIDGE_AUTH") or ("shared-key" if "BRIDGE_ACCOUNT_KEY" in env else None)
    if auth not in reads["auth"]:
        out.append(f"BRIDGE_AUTH `{auth}` is not one of {sorted(reads['auth'])}")
    queue = urlsplit(val.get("BRIDGE_QUEUE_URL") or "")
    if auth != "shared-key" and queue.scheme != "https":
        out.append("Entra ID tokens go over https:// only: BRIDGE_QUEUE_URL")
    if auth == "workload-identity":
        for name in sorted(INJECTED & set(env)):
            out.append(f"`{name}` is the webhook's to set")
        if pod["metadata"].get("labels", {}).get("azure.workload.identity/use") != "true":
            out.append("workload identity: the bridge's pods need azure.workload.identity/use: \"true\"")
        sa = pod["spec"].get("serviceAccountName", "default")
        if not by.get(("ServiceAccount", sa), {}).get("metadata", {}).get("annotations", {}).get("azure.workload.identity/client-id"):
            out.append(f"workload identity: service account {sa} has no client-id annotation")
        if f'"system:serviceaccount:${{var.kubernetes_namespace}}:{sa}"' not in tf:
            out.append(f"workload identity: service account {sa} is federated to no identity")
        if "BRIDGE_ACCOUNT_KEY" in env:
            out.append("workload identity: no storage account key belongs in the bridge's environment")
    if not str(val.get("BRIDGE_TARGET_URL", "")).endswith("/queue"):
        out.append("BRIDGE_TARGET_URL must be the app's POST /queue")
    # KEDA: scales this Deployment on the queue it drains.
    scaled = [d for (k, _), d in by.items() if k == "ScaledObject" and d["spec"]["scaleTargetRef"].get("name") == BRIDGE]
    if not scaled:
        out.append("no ScaledObject scales the bridge")
    queue_name = queue.path.rstrip("/").rsplit("/", 1)[-1]
    for s in scaled:
        for t in s["spec"]["triggers"]:
            if t["type"] != "azure-queue" or t["metadata"].get("queueName") != queue_name:
                out.append(f"ScaledObject {s['metadata']['name']}: trigger is not the azure-queue scaler on `{queue_name}`")
    return out


@pytest.fixture(scope="module")
def world():
    return [d["doc"] for d in infra_lib.manifests(infra_lib.INFRA / "deploy")], infra_lib.terraform_text()


def _cm(docs):
    return next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == BRIDGE)["data"]


def test_bridge_environment_matches_its_config(world):
    assert problems(*world) == []


def test_the_source_is_read():
    r = bridge_reads()
    assert {"BRIDGE_QUEUE_URL", "BRIDGE_TARGET_URL", "BRIDGE_INGEST_KEY"} == r["required"]
    assert {"shared-key", "workload-identity", "managed-identity", "client-secret"} == r["auth"]
    assert r["numbers"]["BRIDGE_BATCH_SIZE"] == (16, 1, 32)
    assert r["numbers"]["BRIDGE_VISIBILITY_TIMEOUT_SECS"] == (30, 1, 604800)
    assert set(r["numbers"]) == {"BRIDGE_VISIBILITY_TIMEOUT_SECS", "BRIDGE_REQUEST_TIMEOUT_SECS", "BRIDGE_CONCURRENCY",
                                 "BRIDGE_BATCH_SIZE", "BRIDGE_MAX_DEQUEUE_COUNT", "BRIDGE_POLL_INTERVAL_MS"}


def test_terraform_bridge_environment_names_only_what_the_bridge_reads():
    with open(infra_lib.INFRA / "terraform" / "outputs.tf") as f:
        outputs = hcl2.load(f)["output"]
    value = next(o["bridge_environment"]["value"] for o in outputs if "bridge_environment" in o)
    value = value[0] if isinstance(value, list) else value
    assert set(value) <= bridge_reads()["names"], set(value) - bridge_reads()["names"]
    assert value["BRIDGE_AUTH"] == "workload-identity"


def test_a_misspelled_or_out_of_range_setting_fails(world):
    docs, tf = copy.deepcopy(world)
    cm = _cm(docs)
    cm["BRIDGE_VISIBILITY_TIMEOUT"] = cm.pop("BRIDGE_VISIBILITY_TIMEOUT_SECS")
    cm["BRIDGE_BATCH_SIZE"] = "33"
    errs = problems(docs, tf)
    assert "the bridge reads no `BRIDGE_VISIBILITY_TIMEOUT`" in errs
    assert "`BRIDGE_BATCH_SIZE` = '33' is outside 1..32" in errs
    # with the visibility timeout unset, its default (30) applies
    cm["BRIDGE_REQUEST_TIMEOUT_SECS"] = "30"
    assert "BRIDGE_REQUEST_TIMEOUT_SECS must be shorter than BRIDGE_VISIBILITY_TIMEOUT_SECS" in problems(docs, tf)


def test_a_missing_required_setting_or_unknown_auth_fails(world):
    docs, tf = copy.deepcopy(world)
    cm = _cm(docs)
    del cm["BRIDGE_TARGET_URL"]
    cm["BRIDGE_AUTH"] = "sas"
    errs = problems(docs, tf)
    assert "required `BRIDGE_TARGET_URL` is not set" in errs
    assert any(e.startswith("BRIDGE_AUTH `sas`") for e in errs)


def test_an_account_key_in_a_configmap_or_a_short_grace_period_fails(world):
    docs, tf = copy.deepcopy(world)
    _cm(docs)["BRIDGE_ACCOUNT_KEY"] = "a2V5"
    dep = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == BRIDGE)
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = 10
    errs = problems(docs, tf)
    assert "`BRIDGE_ACCOUNT_KEY` must come from a Secret" in errs
    assert "workload identity: no storage account key belongs in the bridge's environment" in errs
    assert any(e.startswith("terminationGracePeriodSeconds") for e in errs)


def test_workload_identity_without_federation_or_scaler_fails(world):
    docs, tf = copy.deepcopy(world)
    tf = tf.replace(':cmk-ingest-bridge"', ':someone-else"')
    docs = [d for d in docs if d["kind"] != "ScaledObject"]
    errs = problems(docs, tf)
    assert "workload identity: service account cmk-ingest-bridge is federated to no identity" in errs
    assert "no ScaledObject scales the bridge" in errs
