"""Workload identity on SpinKube through the token proxy, offline.

The component cannot read a projected token file, so the app identity is
federated to the token proxy's service account and the proxy serves the
app's tokens (docs/keys-and-identity.md). Checked here: the proxy's
Deployment, Service and service account; the Terraform federation of the
app identity to that service account (and to nothing the SpinApp runs as);
the NetworkPolicy that admits only the app's pods; the SpinApp pointed at
the Service (identity = managed-identity, origin, path, identity header from
the proxy's own Secret); the origin being a bare scheme://host:port, as
spin.toml's allowed_outbound_hosts needs, since it builds that list from
managed_identity_origin. Each rule also fails on a broken copy.
"""

import copy
import re
import tomllib
from urllib.parse import urlsplit

import pytest

import infra_lib

PROXY = "cmk-token-proxy"
CONFIG = "cmk-ingest-config"
APP_NAME_LABEL = "core.spinkube.dev/app-name"
PROXY_SRC = infra_lib.ROOT / "token-proxy" / "src" / "lib.rs"
# Set by the workload-identity webhook, not by the manifests.
INJECTED = {"AZURE_CLIENT_ID", "AZURE_TENANT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_AUTHORITY_HOST"}


def proxy_reads() -> tuple[set[str], str]:
    """Environment variables the proxy reads, and its token route."""
    src = PROXY_SRC.read_text()
    names = set(re.findall(r'(?:required|get)\("([A-Z][A-Z0-9_]+)"\)', src.split("#[cfg(test)]")[0]))
    path = re.search(r'pub const TOKEN_PATH: &str = "([^"]+)";', src).group(1)
    return names, path


def container_env(pod: dict, configmaps: dict) -> dict[str, dict]:
    """name -> source ({"value": v} | {"configMap": (name, key)} | {"secret": (name, key, optional)})."""
    out = {}
    for c in pod["spec"]["containers"]:
        for ef in c.get("envFrom", []):
            ref = ef.get("configMapRef", {}).get("name")
            for k, v in configmaps.get(ref, {}).items():
                out[k] = {"value": v, "configMap": ref}
        for e in c.get("env", []):
            vf = e.get("valueFrom", {})
            if "secretKeyRef" in vf:
                r = vf["secretKeyRef"]
                out[e["name"]] = {"secret": (r["name"], r["key"], bool(r.get("optional")))}
            elif "configMapKeyRef" in vf:
                r = vf["configMapKeyRef"]
                out[e["name"]] = {"value": configmaps.get(r["name"], {}).get(r["key"]), "configMap": r["name"]}
            else:
                out[e["name"]] = {"value": e.get("value")}
    return out


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector.get("matchLabels")) and all(labels.get(k) == v for k, v in selector["matchLabels"].items())


def problems(docs: list[dict], spin: dict, tf: str) -> list[str]:
    out: list[str] = []
    by = infra_lib.by_kind_name(docs)
    cms = {n: d.get("data", {}) for (k, n), d in by.items() if k == "ConfigMap"}
    app = next((d for (k, _), d in by.items() if k == "SpinApp"), None)
    dep = by.get(("Deployment", PROXY))
    svc = by.get(("Service", PROXY))
    if app is None or dep is None or svc is None:
        return [f"missing: {[n for n, x in (('SpinApp', app), ('Deployment', dep), ('Service', svc)) if x is None]}"]
    ns = dep["metadata"]["namespace"]
    pod = dep["spec"]["template"]
    labels = pod["metadata"].get("labels", {})
    cfg = cms.get(CONFIG, {})
    reads, token_path = proxy_reads()

    # The proxy: its own service account, federated; settings it reads.
    sa_name = pod["spec"].get("serviceAccountName")
    sa = by.get(("ServiceAccount", sa_name or ""))
    if sa_name != PROXY or sa is None:
        out.append("the token proxy must run as its own service account cmk-token-proxy")
    elif sa["metadata"].get("annotations", {}).get("azure.workload.identity/client-id") != cfg.get("azure_client_id"):
        out.append("the proxy's service account must carry the app identity's client id (the app's azure_client_id)")
    if labels.get("azure.workload.identity/use") != "true":
        out.append("the proxy's pods need azure.workload.identity/use: \"true\"")
    env = container_env(pod, cms)
    for name in sorted(set(env) - reads):
        out.append(f"the proxy reads no `{name}`")
    for name in sorted(set(env) & INJECTED):
        out.append(f"`{name}` is the webhook's to set")
    header = env.get("IDENTITY_HEADER", {}).get("secret")
    if not header or header[2]:
        out.append("IDENTITY_HEADER must come from a Secret, not optional")
    listen = env.get("TOKEN_PROXY_LISTEN", {}).get("value", "127.0.0.1:8081")
    if not listen.startswith("0.0.0.0:"):
        out.append("TOKEN_PROXY_LISTEN must listen on the pod network (0.0.0.0:PORT) behind a Service")
    listen_port = int(listen.rsplit(":", 1)[1])
    ports = {p.get("name"): p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}

    # The Service in front of it.
    if not selects({"matchLabels": svc["spec"].get("selector", {})}, labels):
        out.append("the Service does not select the proxy's pods")
    svc_ports = {}
    for p in svc["spec"].get("ports", []):
        target = p.get("targetPort", p["port"])
        svc_ports[p["port"]] = ports.get(target, target)

    # The SpinApp pointed at it.
    vars_ = {v["name"]: v for v in app["spec"].get("variables", [])}
    if cfg.get("identity") != "managed-identity":
        out.append("the app must use identity = managed-identity (the token proxy)")
    origin = cfg.get("managed_identity_origin", "")
    u = urlsplit(origin)
    if u.scheme != "http" or not u.hostname or u.port is None or u.path not in ("",) or u.query:
        out.append(f"managed_identity_origin `{origin}` must be http://host:port, nothing more (it is an allowed outbound host)")
    else:
        if not re.fullmatch(rf"{PROXY}\.{re.escape(ns)}(\.svc(\.cluster\.local)?)?", u.hostname):
            out.append(f"managed_identity_origin names `{u.hostname}`, not the Service {PROXY}.{ns}")
        if svc_ports.get(u.port) != listen_port:
            out.append(f"the Service does not carry port {u.port} to the proxy's {listen_port}")
    if cfg.get("managed_identity_path") != token_path:
        out.append(f"managed_identity_path must be the proxy's {token_path}")
    ih = vars_.get("identity_header", {}).get("valueFrom", {}).get("secretKeyRef", {})
    if not header or (ih.get("name"), ih.get("key")) != header[:2] or ih.get("optional"):
        out.append("identity_header must come from the Secret and key the proxy checks (IDENTITY_HEADER), not optional")
    component = next(iter(spin["component"].values()))
    if "{{ managed_identity_origin }}" not in component.get("allowed_outbound_hosts", []):
        out.append("spin.toml's allowed_outbound_hosts does not admit managed_identity_origin")
    if app["spec"].get("podLabels", {}).get("azure.workload.identity/use") == "true":
        out.append("the SpinApp's pods carry workload identity: they cannot use it, and it would federate them")

    # Terraform: the app identity is federated to the proxy's service account,
    # and the SpinApp's service account to nothing.
    fics = re.findall(r'resource "azurerm_federated_identity_credential" "(\w+)" \{(.*?)\n\}', tf, re.S)
    subject = f"system:serviceaccount:${{var.kubernetes_namespace}}:{PROXY}"
    if not any('consumer["app"].id' in body and f'"{subject}"' in body for _, body in fics):
        out.append("the app identity is not federated to the token proxy's service account")
    app_sa = app["spec"].get("serviceAccountName", "default")
    for name, body in fics:
        if f'"system:serviceaccount:${{var.kubernetes_namespace}}:{app_sa}"' in body:
            out.append(f"federated credential `{name}` federates the SpinApp's service account")

    # The NetworkPolicy: only the app's pods reach the proxy, only on its port;
    # its egress is limited too.
    app_labels = {APP_NAME_LABEL: app["metadata"]["name"]}
    policies = [d for (k, _), d in by.items() if k == "NetworkPolicy" and selects(d["spec"].get("podSelector", {}), labels)]
    if not policies:
        out.append("no NetworkPolicy selects the token proxy's pods")
    for pol in policies:
        name = pol["metadata"]["name"]
        types = set(pol["spec"].get("policyTypes", []))
        if not {"Ingress", "Egress"} <= types:
            out.append(f"NetworkPolicy {name} must restrict Ingress and Egress")
        for rule in pol["spec"].get("ingress", []):
            peers = rule.get("from", [])
            if not peers:
                out.append(f"NetworkPolicy {name}: an ingress rule without `from` admits every pod")
            for peer in peers:
                if set(peer) != {"podSelector"} or peer["podSelector"].get("matchLabels") != app_labels:
                    out.append(f"NetworkPolicy {name}: ingress from {peer}, not only the app's pods ({app_labels})")
            rports = {p.get("port") for p in rule.get("ports", [])}
            if rports != {listen_port} and rports != {"tokens"}:
                out.append(f"NetworkPolicy {name}: ingress ports {sorted(map(str, rports))}, not only {listen_port}")
        for rule in pol["spec"].get("egress", []):
            if not rule.get("ports"):
                out.append(f"NetworkPolicy {name}: an egress rule without ports")
    return out


@pytest.fixture(scope="module")
def world():
    docs = [d["doc"] for d in infra_lib.manifests(infra_lib.INFRA / "deploy")]
    spin = tomllib.loads((infra_lib.ROOT / "spin.toml").read_text())
    return docs, spin, infra_lib.terraform_text()


def broken(world, edit):
    docs, spin, tf = copy.deepcopy(world)
    tf = edit(docs, spin, tf) or tf
    return problems(docs, spin, tf)


def _doc(docs, kind, name):
    return next(d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name)


def test_the_app_gets_its_tokens_from_the_proxy(world):
    assert problems(*world) == []


def test_the_proxy_serves_the_routes_and_settings_it_reads():
    reads, path = proxy_reads()
    assert path == "/msi/token"
    assert {"IDENTITY_HEADER", "TOKEN_PROXY_LISTEN", "TOKEN_PROXY_RESOURCES", "TOKEN_PROXY_REFRESH_SKEW_SECS"} | INJECTED <= reads


def test_the_token_refresher_is_gone(world):
    docs, _, _ = world
    assert not [d for d in docs if d["kind"] == "CronJob" and "token" in d["metadata"]["name"]]
    app = next(d for d in docs if d["kind"] == "SpinApp")
    assert "podAnnotations" not in app["spec"], "nothing rolls the app's pods for tokens any more"


def test_missing_network_policy_fails(world):
    def edit(docs, spin, tf):
        docs[:] = [d for d in docs if not (d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "token-proxy-from-app-only")]
    assert "no NetworkPolicy selects the token proxy's pods" in broken(world, edit)


def test_network_policy_admitting_everyone_fails(world):
    def edit(docs, spin, tf):
        pol = _doc(docs, "NetworkPolicy", "token-proxy-from-app-only")
        pol["spec"]["ingress"][0].pop("from")
    assert any("without `from` admits every pod" in e for e in broken(world, edit))

    def edit2(docs, spin, tf):
        pol = _doc(docs, "NetworkPolicy", "token-proxy-from-app-only")
        pol["spec"]["ingress"][0]["from"] = [{"namespaceSelector": {}}]
        pol["spec"]["policyTypes"] = ["Ingress"]
    errs = broken(world, edit2)
    assert any("not only the app's pods" in e for e in errs)
    assert any("must restrict Ingress and Egress" in e for e in errs)


def test_network_policy_for_another_app_fails(world):
    def edit(docs, spin, tf):
        pol = _doc(docs, "NetworkPolicy", "token-proxy-from-app-only")
        pol["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"] = {APP_NAME_LABEL: "other-app"}
    assert any("not only the app's pods" in e for e in broken(world, edit))


def test_origin_with_a_path_or_the_wrong_port_fails(world):
    def edit(docs, spin, tf):
        _doc(docs, "ConfigMap", CONFIG)["data"]["managed_identity_origin"] += "/msi/token"
    assert any("must be http://host:port" in e for e in broken(world, edit))

    def edit2(docs, spin, tf):
        _doc(docs, "Service", PROXY)["spec"]["ports"][0]["port"] = 8080
    assert any("does not carry port 8081" in e for e in broken(world, edit2))

    def edit3(docs, spin, tf):
        _doc(docs, "ConfigMap", CONFIG)["data"]["managed_identity_origin"] = "http://169.254.169.254:80"
    assert any("not the Service cmk-token-proxy" in e for e in broken(world, edit3))


def test_outbound_hosts_without_the_origin_fails(world):
    def edit(docs, spin, tf):
        c = next(iter(spin["component"].values()))
        c["allowed_outbound_hosts"].remove("{{ managed_identity_origin }}")
    assert "spin.toml's allowed_outbound_hosts does not admit managed_identity_origin" in broken(world, edit)


def test_identity_header_from_another_secret_fails(world):
    def edit(docs, spin, tf):
        app = next(d for d in docs if d["kind"] == "SpinApp")
        v = next(v for v in app["spec"]["variables"] if v["name"] == "identity_header")
        v["valueFrom"]["secretKeyRef"]["name"] = "cmk-ingest-secrets"
    assert any("identity_header must come from the Secret" in e for e in broken(world, edit))


def test_federation_to_the_wrong_service_account_fails(world):
    def edit(docs, spin, tf):
        return tf.replace(":cmk-token-proxy\"", ":cmk-ingest\"")
    errs = broken(world, edit)
    assert "the app identity is not federated to the token proxy's service account" in errs
    assert any("federates the SpinApp's service account" in e for e in errs)


def test_proxy_with_unknown_settings_or_without_workload_identity_fails(world):
    def edit(docs, spin, tf):
        _doc(docs, "ConfigMap", PROXY)["data"]["TOKEN_PROXY_PORT"] = "8081"
        dep = _doc(docs, "Deployment", PROXY)
        del dep["spec"]["template"]["metadata"]["labels"]["azure.workload.identity/use"]
    errs = broken(world, edit)
    assert "the proxy reads no `TOKEN_PROXY_PORT`" in errs
    assert any("azure.workload.identity/use" in e for e in errs)
