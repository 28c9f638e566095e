"""Kubernetes manifests under infra/deploy, offline.

Built-in kinds and KEDA's are validated with the kubernetes-models packages
(OpenAPI types, enums, required fields). SpinKube's kinds (SpinApp,
SpinAppExecutor from spin-operator v0.6.1, Shim from runtime-class-manager
v0.2.0) have no model package: their fields are checked here against the
fields those operators document, unknown ones included.
"""

import copy

import pytest
import yaml

import infra_lib

DEPLOY = infra_lib.INFRA / "deploy"

# Field names and simple types per the spin-operator v0.6.1 API reference.
OBJ, STR, INT, BOOL, LIST, MAP = dict, str, int, bool, list, dict
SPINAPP_SPEC = {
    "executor": STR, "image": STR, "imagePullSecrets": LIST, "checks": OBJ, "replicas": INT,
    "enableAutoscaling": BOOL, "runtimeConfig": OBJ, "volumes": LIST, "volumeMounts": LIST,
    "variables": LIST, "serviceAnnotations": MAP, "deploymentAnnotations": MAP, "podAnnotations": MAP,
    "podLabels": MAP, "resources": OBJ, "components": LIST, "serviceAccountName": STR, "invocationLimits": MAP,
}
SPINAPP_REQUIRED = {"executor", "image"}
SPINVAR = {"name": STR, "value": STR, "valueFrom": OBJ}
VALUE_FROM = {"secretKeyRef", "configMapKeyRef", "fieldRef", "resourceFieldRef"}
KEY_REF = {"name": STR, "key": STR, "optional": BOOL}
CHECKS = {"readiness", "liveness"}
PROBE = {"httpGet": OBJ, "initialDelaySeconds": INT, "timeoutSeconds": INT, "periodSeconds": INT,
         "successThreshold": INT, "failureThreshold": INT}
RESOURCES = {"limits": MAP, "requests": MAP}
EXECUTOR_SPEC = {"createDeployment": BOOL, "deploymentConfig": OBJ}
EXECUTOR_DEPLOYMENT = {"runtimeClassName": STR, "spinImage": STR, "caCertSecret": STR,
                       "installDefaultCACerts": BOOL, "otel": OBJ}
SHIM_SPEC = {"nodeSelector": MAP, "fetchStrategy": OBJ, "containerdRuntimeOptions": MAP,
             "runtimeClass": OBJ, "rolloutStrategy": OBJ}


def fields(obj, allowed, where, errors, required=()):
    if not isinstance(obj, dict):
        errors.append(f"{where}: expected an object")
        return
    for k, v in obj.items():
        if k not in allowed:
            errors.append(f"{where}: unknown field `{k}`")
        elif allowed[k] is INT and not (isinstance(v, int) and not isinstance(v, bool)):
            errors.append(f"{where}.{k}: expected an integer")
        elif allowed[k] is not INT and not isinstance(v, allowed[k]):
            errors.append(f"{where}.{k}: expected {allowed[k].__name__}")
    for k in required:
        if k not in obj:
            errors.append(f"{where}: missing `{k}`")


def check_spinkube(doc) -> list[str]:
    errors: list[str] = []
    kind, spec = doc.get("kind"), doc.get("spec", {})
    api = doc.get("apiVersion")
    if kind == "SpinApp":
        if api != "core.spinkube.dev/v1alpha1":
            errors.append(f"SpinApp apiVersion {api}")
        fields(spec, SPINAPP_SPEC, "spec", errors, SPINAPP_REQUIRED)
        for i, var in enumerate(spec.get("variables", [])):
            w = f"spec.variables[{i}]"
            fields(var, SPINVAR, w, errors, ("name",))
            if ("value" in var) == ("valueFrom" in var):
                errors.append(f"{w}: exactly one of value and valueFrom")
            vf = var.get("valueFrom", {})
            for src, ref in vf.items():
                if src not in VALUE_FROM:
                    errors.append(f"{w}.valueFrom: unknown source `{src}`")
                elif src in ("secretKeyRef", "configMapKeyRef"):
                    fields(ref, KEY_REF, f"{w}.valueFrom.{src}", errors, ("name", "key"))
        for name, probe in spec.get("checks", {}).items():
            if name not in CHECKS:
                errors.append(f"spec.checks: unknown check `{name}`")
            fields(probe, PROBE, f"spec.checks.{name}", errors)
            if "httpGet" in probe:
                fields(probe["httpGet"], {"path": STR, "httpHeaders": LIST}, f"spec.checks.{name}.httpGet", errors, ("path",))
        if "resources" in spec:
            fields(spec["resources"], RESOURCES, "spec.resources", errors)
    elif kind == "SpinAppExecutor":
        if api != "core.spinkube.dev/v1alpha1":
            errors.append(f"SpinAppExecutor apiVersion {api}")
        fields(spec, EXECUTOR_SPEC, "spec", errors, ("createDeployment",))
        if "deploymentConfig" in spec:
            fields(spec["deploymentConfig"], EXECUTOR_DEPLOYMENT, "spec.deploymentConfig", errors)
    elif kind == "Shim":
        if api != "runtime.spinkube.dev/v1alpha1":
            errors.append(f"Shim apiVersion {api}")
        fields(spec, SHIM_SPEC, "spec", errors, ("nodeSelector", "fetchStrategy", "runtimeClass"))
        for i, p in enumerate(spec.get("fetchStrategy", {}).get("platforms", [])):
            fields(p, {"os": STR, "arch": STR, "location": STR, "sha256": STR}, f"spec.fetchStrategy.platforms[{i}]", errors,
                   ("os", "arch", "location", "sha256"))
            if len(p.get("sha256", "")) != 64:
                errors.append(f"spec.fetchStrategy.platforms[{i}].sha256: not a SHA-256")
        fields(spec.get("runtimeClass", {}), {"name": STR, "handler": STR}, "spec.runtimeClass", errors, ("name", "handler"))
    else:
        errors.append(f"no schema for {api} {kind}")
    return errors


@pytest.fixture(scope="module")
def docs():
    return infra_lib.manifests(DEPLOY)


def test_models_validate_every_known_kind(docs):
    results = infra_lib.validate_k8s(docs)
    bad = [r for r in results if r["status"] == "invalid"]
    assert not bad, bad
    kinds = {r["kind"] for r in results if r["status"] == "valid"}
    assert {"Deployment", "Service", "ConfigMap", "ServiceAccount", "CronJob", "StorageClass", "ScaledObject",
            "TriggerAuthentication", "NetworkPolicy", "Namespace"} <= kinds


def test_spinkube_kinds_use_documented_fields(docs):
    results = infra_lib.validate_k8s(docs)
    unmodelled = [d["doc"] for d, r in zip(docs, results) if r["status"] == "no-model"]
    assert {d["kind"] for d in unmodelled} == {"SpinApp", "SpinAppExecutor", "Shim"}
    for d in unmodelled:
        assert check_spinkube(d) == [], d["kind"]


def test_wiring(docs):
    by = {(d["doc"]["kind"], d["doc"]["metadata"]["name"]): d["doc"] for d in docs}
    app = by[("SpinApp", "cmk-ingest")]
    execu = by[("SpinAppExecutor", app["spec"]["executor"])]
    shim = by[("Shim", "spin-v2")]
    assert execu["spec"]["deploymentConfig"]["runtimeClassName"] == shim["spec"]["runtimeClass"]["name"]
    assert ("ServiceAccount", app["spec"]["serviceAccountName"]) in by
    scaled = by[("ScaledObject", "cmk-ingest-bridge")]
    assert ("Deployment", scaled["spec"]["scaleTargetRef"]["name"]) in by
    auth = by[("TriggerAuthentication", scaled["spec"]["triggers"][0]["authenticationRef"]["name"])]
    assert auth["spec"]["podIdentity"]["provider"] == "azure-workload"
    bridge = by[("Deployment", "cmk-ingest-bridge")]["spec"]["template"]
    assert bridge["metadata"]["labels"]["azure.workload.identity/use"] == "true"
    env = by[("ConfigMap", "cmk-ingest-bridge")]["data"]
    assert env["BRIDGE_TARGET_URL"].endswith("/queue") and env["BRIDGE_AUTH"] == "workload-identity"
    assert env["BRIDGE_POISON_QUEUE"] == "events-poison" and env["BRIDGE_MAX_DEQUEUE_COUNT"] == "5"
    cls = by[("StorageClass", "managed-csi-cmk")]
    assert cls["parameters"]["diskEncryptionType"] == "EncryptionAtRestWithCustomerKey"


def _spinapp(docs):
    return copy.deepcopy(next(d for d in docs if d["doc"]["kind"] == "SpinApp"))


def test_broken_spinapp_fails(docs):
    d = _spinapp(docs)["doc"]
    d["spec"]["replica"] = 2
    d["spec"]["variables"][0]["valueFrom"]["configMapRef"] = d["spec"]["variables"][0]["valueFrom"].pop("configMapKeyRef")
    errs = check_spinkube(d)
    assert any("unknown field `replica`" in e for e in errs)
    assert any("unknown source `configMapRef`" in e for e in errs)


def test_broken_builtin_kind_fails(docs):
    d = copy.deepcopy(next(x for x in docs if x["doc"]["kind"] == "Deployment"))
    d["doc"]["spec"]["replicas"] = "one"
    k = copy.deepcopy(next(x for x in docs if x["doc"]["kind"] == "ScaledObject"))
    del k["doc"]["spec"]["scaleTargetRef"]
    results = infra_lib.validate_k8s([d, k])
    assert [r["status"] for r in results] == ["invalid", "invalid"], results


def image_problems(app_dir, docs) -> list[str]:
    """Every image is pinned: the app's own three by short name through the
    kustomization's images: (a tag or digest, never latest), others by a
    version tag or digest in place; every manifest of the folder is listed
    as a resource, and the SpinApp's spec.image is taught to the transformer."""
    out = []
    kz = yaml.safe_load((app_dir / "kustomization.yaml").read_text())
    listed = set(kz.get("resources", []))
    for f in sorted(app_dir.glob("*.yaml")):
        if f.name not in ("kustomization.yaml", "kustomizeconfig.yaml") and f.name not in listed:
            out.append(f"{f.name} is not a resource of the kustomization")
    pins = {i["name"]: i for i in kz.get("images", [])}
    cfg_files = kz.get("configurations", [])
    taught = any(
        {"path": "spec/image", "kind": "SpinApp"} in (yaml.safe_load((app_dir / c).read_text()) or {}).get("images", [])
        for c in cfg_files)
    images = []
    for d in docs:
        doc = d["doc"]
        if not d["file"].startswith("app/"):
            continue
        if doc["kind"] == "SpinApp":
            images.append(("SpinApp", doc["spec"]["image"]))
            if not taught:
                out.append("the kustomization does not rewrite the SpinApp's spec.image")
        spec = doc.get("spec", {})
        tmpl = spec.get("jobTemplate", {}).get("spec", {}).get("template") or spec.get("template")
        for c in (tmpl or {}).get("spec", {}).get("containers", []):
            images.append((doc["kind"], c["image"]))
    for kind, image in images:
        if image in pins:
            p = pins[image]
            if not p.get("digest") and (not p.get("newTag") or p["newTag"] == "latest"):
                out.append(f"{kind} image {image}: pinned to no tag or digest")
        elif "@sha256:" not in image and (":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest")):
            out.append(f"{kind} image {image}: not pinned")
    return out


def test_images_are_pinned_and_every_manifest_is_deployed(docs):
    assert image_problems(DEPLOY / "app", docs) == []


def test_unpinned_image_or_unlisted_manifest_fails(docs, tmp_path):
    import shutil
    app = tmp_path / "app"
    shutil.copytree(DEPLOY / "app", app)
    kz = yaml.safe_load((app / "kustomization.yaml").read_text())
    kz["resources"].remove("token-proxy.yaml")
    next(i for i in kz["images"] if i["name"] == "cmk-token-proxy")["newTag"] = "latest"
    kz.pop("configurations")
    (app / "kustomization.yaml").write_text(yaml.safe_dump(kz))
    broken = copy.deepcopy(docs)
    next(d for d in broken if d["doc"]["kind"] == "CronJob")["doc"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["image"] = "azure-cli"
    errs = image_problems(app, broken)
    assert "token-proxy.yaml is not a resource of the kustomization" in errs
    assert "Deployment image cmk-token-proxy: pinned to no tag or digest" in errs
    assert "the kustomization does not rewrite the SpinApp's spec.image" in errs
    assert "CronJob image azure-cli: not pinned" in errs
