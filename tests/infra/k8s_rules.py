"""Admission rules for infra/deploy that the cluster would apply, offline:

- spin-operator v0.6.1's SpinApp webhook looks the named SpinAppExecutor up
  in the SpinApp's own namespace (internal/webhook/spinapp_validating.go,
  fetchExecutor) and rejects the SpinApp when it is not there;
- Pod Security admission (kubernetes.io/docs/concepts/security/pod-security-standards)
  checks every pod against its namespace's `enforce` level. spin-operator
  v0.6.1 creates the app's pods itself, with no securityContext
  (internal/controller/spinapp_controller.go, constructDeployment), so the
  pod it would create is rebuilt here from the SpinApp and checked too.

- kustomize's default ("legacy") output order sorts kinds it does not know
  by name (api/resid/gvk.go, IsLessThan), so `SpinApp` would be sent before `SpinAppExecutor` and the
  webhook above would reject the first apply. Every kustomization holding a
  SpinApp sets `sortOptions: {order: fifo}` (kustomize >= 5.0, in kubectl
  since 1.27; api/types/kustomization.go `SortOptions`) and lists the
  executor first.

Namespaces are the ones the objects land in: metadata.namespace, or the
`namespace:` of the kustomization of their folder (kustomize sets it on every
namespaced object).
"""

from __future__ import annotations

from pathlib import Path

import yaml

CLUSTER_SCOPED = {"Namespace", "StorageClass", "Shim", "RuntimeClass", "ClusterRole", "ClusterRoleBinding",
                  "CustomResourceDefinition"}
LEVELS = ["privileged", "baseline", "restricted"]

# Pod Security Standards, v1.33 (the pinned AKS minor).
BASELINE_CAPS = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE",
                 "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
VOLUME_META = {"name"}


def load(deploy: Path) -> list[dict]:
    """Every object under deploy/, each with its effective namespace."""
    out = []
    for folder in sorted({p.parent for p in deploy.rglob("*.yaml")}):
        kust = folder / "kustomization.yaml"
        ns_default = None
        listed = None
        if kust.exists():
            k = yaml.safe_load(kust.read_text())
            ns_default = k.get("namespace")
            listed = {r for r in k.get("resources", []) if not r.startswith("http")}
        for f in sorted(folder.glob("*.yaml")):
            if f.name in ("kustomization.yaml", "kustomizeconfig.yaml"):
                continue
            if listed is not None and f.name not in listed:
                continue
            for doc in yaml.safe_load_all(f.read_text()):
                if not doc or "kind" not in doc:
                    continue
                ns = None
                if doc["kind"] not in CLUSTER_SCOPED:
                    ns = ns_default or doc.get("metadata", {}).get("namespace") or "default"
                out.append({"file": f"{folder.name}/{f.name}", "doc": doc, "namespace": ns})
    return out


def pod_templates(objs: list[dict]) -> list[tuple[str, str, dict]]:
    """(namespace, what, pod spec) for every workload, the app's pods as
    spin-operator v0.6.1 would create them included."""
    out = []
    for o in objs:
        d, kind = o["doc"], o["doc"]["kind"]
        name = f"{kind}/{d['metadata']['name']}"
        if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job", "ReplicaSet"):
            out.append((o["namespace"], name, d["spec"]["template"]["spec"]))
        elif kind == "CronJob":
            out.append((o["namespace"], name, d["spec"]["jobTemplate"]["spec"]["template"]["spec"]))
        elif kind == "Pod":
            out.append((o["namespace"], name, d["spec"]))
        elif kind == "SpinApp":
            out.append((o["namespace"], f"{name} (pods created by spin-operator)", spinapp_pod(d, objs)))
    return out


def spinapp_pod(app: dict, objs: list[dict]) -> dict:
    """The pod spec spin-operator v0.6.1 builds for a SpinApp whose executor
    has a runtimeClassName: no pod or container securityContext."""
    spec = app["spec"]
    runtime = None
    for o in objs:
        d = o["doc"]
        if d["kind"] == "SpinAppExecutor" and d["metadata"]["name"] == spec.get("executor"):
            runtime = d["spec"].get("deploymentConfig", {}).get("runtimeClassName")
    container = {"name": app["metadata"]["name"], "image": spec.get("image"), "command": ["/"],
                 "ports": [{"name": "http-app", "containerPort": 80}]}
    if spec.get("volumeMounts"):
        container["volumeMounts"] = spec["volumeMounts"]
    pod = {"runtimeClassName": runtime, "serviceAccountName": spec.get("serviceAccountName", "default"),
           "containers": [container]}
    if spec.get("volumes"):
        pod["volumes"] = spec["volumes"]
    return pod


def violations(pod: dict, level: str) -> list[str]:
    """What a pod spec breaks at a Pod Security level (empty: admitted)."""
    if level == "privileged":
        return []
    out = []
    psc = pod.get("securityContext") or {}
    containers = [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if pod.get(key):
            out.append(f"{key}")
    for v in pod.get("volumes", []) or []:
        if "hostPath" in v:
            out.append(f"hostPath volume {v.get('name')}")
    if (psc.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append("pod seccompProfile Unconfined")
    for c in containers:
        sc = c.get("securityContext") or {}
        n = c.get("name")
        if sc.get("privileged"):
            out.append(f"{n}: privileged")
        added = set((sc.get("capabilities") or {}).get("add", []) or [])
        if added - BASELINE_CAPS:
            out.append(f"{n}: capabilities added {sorted(added - BASELINE_CAPS)}")
        if any(p.get("hostPort") for p in c.get("ports", []) or []):
            out.append(f"{n}: hostPort")
        if (sc.get("seccompProfile") or {}).get("type") == "Unconfined":
            out.append(f"{n}: seccompProfile Unconfined")
        if sc.get("procMount") not in (None, "Default"):
            out.append(f"{n}: procMount")
    if level == "baseline":
        return out
    for v in pod.get("volumes", []) or []:
        kinds = set(v) - VOLUME_META
        if not kinds <= RESTRICTED_VOLUMES:
            out.append(f"volume {v.get('name')}: type {sorted(kinds - RESTRICTED_VOLUMES)}")
    pod_nonroot = psc.get("runAsNonRoot") is True
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
    if psc.get("runAsUser") == 0:
        out.append("pod runAsUser 0")
    for c in containers:
        sc = c.get("securityContext") or {}
        n = c.get("name")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{n}: allowPrivilegeEscalation not false")
        if not (sc.get("runAsNonRoot") is True or (pod_nonroot and sc.get("runAsNonRoot") is not False)):
            out.append(f"{n}: runAsNonRoot not true")
        if sc.get("runAsUser") == 0:
            out.append(f"{n}: runAsUser 0")
        if not ((sc.get("seccompProfile") or {}).get("type") in ("RuntimeDefault", "Localhost")
                or (pod_seccomp and "seccompProfile" not in sc)):
            out.append(f"{n}: seccompProfile not RuntimeDefault/Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{n}: capabilities do not drop ALL")
        if set(caps.get("add") or []) - {"NET_BIND_SERVICE"}:
            out.append(f"{n}: capabilities added beyond NET_BIND_SERVICE")
    return out


def namespace_levels(objs: list[dict]) -> dict[str, dict[str, str]]:
    out = {}
    for o in objs:
        d = o["doc"]
        if d["kind"] == "Namespace":
            labels = d["metadata"].get("labels", {}) or {}
            out[d["metadata"]["name"]] = {
                mode: labels.get(f"pod-security.kubernetes.io/{mode}", "privileged") for mode in ("enforce", "warn", "audit")
            }
    return out


def fifo_order(folder: Path) -> list[tuple[str, str]]:
    """(kind, name) of a kustomization's objects in the order `fifo` emits
    them: its resources in the order listed, each file's documents in order."""
    k = yaml.safe_load((folder / "kustomization.yaml").read_text())
    out = []
    for r in k.get("resources", []):
        f = folder / r
        if r.startswith("http") or not f.is_file():
            continue
        for doc in yaml.safe_load_all(f.read_text()):
            if doc and "kind" in doc:
                out.append((doc["kind"], doc.get("metadata", {}).get("name")))
    return out


def apply_order_errors(deploy: Path) -> list[str]:
    errors = []
    for kust in sorted(deploy.rglob("kustomization.yaml")):
        order = fifo_order(kust.parent)
        apps = [(i, n) for i, (kind, n) in enumerate(order) if kind == "SpinApp"]
        if not apps:
            continue
        where = kust.relative_to(deploy)
        k = yaml.safe_load(kust.read_text())
        if (k.get("sortOptions") or {}).get("order") != "fifo":
            errors.append(f"{where}: holds a SpinApp but does not set sortOptions.order: fifo (kustomize's legacy "
                          "order emits SpinApp before SpinAppExecutor; the webhook rejects the first apply)")
        executors = {n: i for i, (kind, n) in enumerate(order) if kind == "SpinAppExecutor"}
        for i, name in apps:
            app_doc = next(d for f in k.get("resources", []) if (kust.parent / f).is_file()
                           for d in yaml.safe_load_all((kust.parent / f).read_text())
                           if d and d.get("kind") == "SpinApp" and d["metadata"]["name"] == name)
            ex = app_doc["spec"].get("executor")
            if ex in executors and executors[ex] > i:
                errors.append(f"{where}: SpinApp {name} is listed before its executor `{ex}`; list the executor first")
    return errors


def check(deploy: Path) -> list[str]:
    """Every rule over infra/deploy; the list of what breaks them."""
    objs = load(deploy)
    errors = []
    # 1. The executor in the SpinApp's namespace.
    executors = {(o["namespace"], o["doc"]["metadata"]["name"]) for o in objs if o["doc"]["kind"] == "SpinAppExecutor"}
    for o in objs:
        d = o["doc"]
        if d["kind"] == "SpinApp":
            ex = d["spec"].get("executor")
            if (o["namespace"], ex) not in executors:
                elsewhere = sorted(ns for ns, n in executors if n == ex)
                errors.append(f"SpinApp {o['namespace']}/{d['metadata']['name']}: executor `{ex}` is not in namespace "
                              f"{o['namespace']} (found in {elsewhere or 'no namespace'}); the webhook rejects it")
    # 1b. The executor applied before the SpinApp.
    errors += apply_order_errors(deploy)
    # 2. Pod Security.
    levels = namespace_levels(objs)
    for ns, what, pod in pod_templates(objs):
        if ns not in levels:
            errors.append(f"{what}: namespace {ns} is not declared here (its Pod Security levels are unknown)")
            continue
        lv = levels[ns]
        v = violations(pod, lv["enforce"])
        if v:
            errors.append(f"{what}: refused by enforce={lv['enforce']} in {ns}: {v}")
    for ns, lv in levels.items():
        if lv["warn"] != "restricted" or lv["audit"] != "restricted":
            errors.append(f"namespace {ns}: warn and audit must stay restricted (are {lv['warn']}/{lv['audit']})")
        pods = [(what, pod) for pns, what, pod in pod_templates(objs) if pns == ns]
        # Least privilege: enforce is the strictest level that admits every pod.
        strictest = next((lvl for lvl in reversed(LEVELS) if all(not violations(p, lvl) for _, p in pods)), "privileged")
        if LEVELS.index(lv["enforce"]) < LEVELS.index(strictest):
            errors.append(f"namespace {ns}: enforce={lv['enforce']} is looser than needed ({strictest} admits every pod)")
        # Only the operator-built pods may need the exception.
        for what, pod in pods:
            if "spin-operator" not in what and violations(pod, "restricted"):
                errors.append(f"{what}: does not meet restricted: {violations(pod, 'restricted')}")
    return errors
