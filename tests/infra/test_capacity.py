"""The deployment's sizes follow the capacity model (scripts/capacity,
docs/capacity.md): the SpinApp's replicas, CPU and memory, the bridge's KEDA
ScaledObject, the bridge and app settings the model assumes, and the Cosmos
DB container's autoscale maximum, all against `scripts/capacity --defaults`.
Broken copies fail; docs/capacity.md's tables are the script's output."""

import re
import shutil

import yaml

import infra_lib
from test_capacity_model import cap

DEPLOY_APP = infra_lib.INFRA / "deploy" / "app"
COSMOS_TF = infra_lib.INFRA / "terraform" / "cosmos.tf"
VARIABLES_TF = infra_lib.INFRA / "terraform" / "variables.tf"


def cpu_cores(q) -> float:
    q = str(q)
    return int(q[:-1]) / 1000 if q.endswith("m") else float(q)


MEMORY_UNITS = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "k": 1000 / 2**20, "M": 10**6 / 2**20, "G": 10**9 / 2**20}


def memory_mib(q) -> float | None:
    """A Kubernetes memory quantity in MiB (plain bytes or a binary or
    decimal suffix); None for anything else."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)(Ki|Mi|Gi|k|M|G)?", str(q))
    if not m:
        return None
    return float(m.group(1)) * (MEMORY_UNITS[m.group(2)] if m.group(2) else 1 / 2**20)


def capacity_problems(app_dir, cosmos_tf: str, variables_tf: str, c: dict) -> list[str]:
    r = cap.defaults_model(c)
    by = infra_lib.by_kind_name(
        d for f in sorted(app_dir.glob("*.yaml")) if f.name not in ("kustomization.yaml", "kustomizeconfig.yaml")
        for d in yaml.safe_load_all(f.read_text()) if d)
    out = []

    app = by[("SpinApp", "cmk-ingest")]["spec"]
    if app.get("replicas") != r["pods"]:
        out.append(f"SpinApp replicas {app.get('replicas')}, the model needs {r['pods']}")
    if app.get("enableAutoscaling"):
        out.append("SpinApp enableAutoscaling: the model sizes fixed replicas")
    res = app.get("resources", {})
    for kind in ("requests", "limits"):
        cpu = res.get(kind, {}).get("cpu")
        if cpu is None or cpu_cores(cpu) != r["vcpu_per_pod"]:
            out.append(f"SpinApp {kind}.cpu {cpu}, the model counts {r['vcpu_per_pod']} vCPU per pod")
        mem = res.get(kind, {}).get("memory")
        if mem is None or memory_mib(mem) != r["pod_memory_mib"]:
            out.append(f"SpinApp {kind}.memory {mem}, the model gives {r['pod_memory_mib']}Mi")

    scaled = by[("ScaledObject", "cmk-ingest-bridge")]["spec"]
    if scaled.get("maxReplicaCount") != r["keda_max_replicas"]:
        out.append(f"ScaledObject maxReplicaCount {scaled.get('maxReplicaCount')}, the model gives {r['keda_max_replicas']}")
    meta = scaled["triggers"][0]["metadata"]
    if meta.get("queueLength") != str(r["keda_queue_length"]):
        out.append(f"ScaledObject queueLength {meta.get('queueLength')!r}, the model gives '{r['keda_queue_length']}'")
    if meta.get("queueLengthStrategy", "all") != "all":
        out.append("ScaledObject queueLengthStrategy: the model counts in-flight messages (all)")

    bridge = by[("ConfigMap", "cmk-ingest-bridge")]["data"]
    for var, key in (("BRIDGE_CONCURRENCY", "concurrency"), ("BRIDGE_BATCH_SIZE", "batch_size")):
        if bridge.get(var) != str(c["bridge"][key]):
            out.append(f"bridge {var} {bridge.get(var)!r}, the model assumes {c['bridge'][key]}")
    cfg = by[("ConfigMap", "cmk-ingest-config")]["data"]
    if cfg.get("hsm_key_check_secs") != str(c["hsm"]["key_check_secs"]):
        out.append(f"hsm_key_check_secs {cfg.get('hsm_key_check_secs')!r}, the model assumes {c['hsm']['key_check_secs']}")
    if cfg.get("hsm_local_wrap") != str(c["defaults"]["local_wrap"]).lower():
        out.append(f"hsm_local_wrap {cfg.get('hsm_local_wrap')!r}, the model's default is {c['defaults']['local_wrap']}")

    m = re.search(r'resource "azurerm_cosmosdb_sql_container" "events".*?max_throughput\s*=\s*(\d+)', cosmos_tf, re.S)
    tf_max = int(m.group(1)) if m else None
    if tf_max != c["cosmos"]["autoscale_max_ru_s"]:
        out.append(f"events container autoscale max_throughput {tf_max}, docs/capacity.json says {c['cosmos']['autoscale_max_ru_s']}")
    if tf_max is not None and r["ru_per_s"] > tf_max:
        out.append(f"the default rate needs {r['ru_per_s']:.0f} RU/s, above the container's autoscale maximum {tf_max}")
    m = re.search(r'variable "hsm_key_size".*?default\s*=\s*(\d+)', variables_tf, re.S)
    if not m or int(m.group(1)) != c["hsm"]["key_size"]:
        out.append(f"hsm_key_size default {m and m.group(1)}, docs/capacity.json says {c['hsm']['key_size']}")
    if r["warnings"]:
        out += [f"the default rate: {w}" for w in r["warnings"]]
    return out


def test_manifests_follow_the_capacity_model():
    c = cap.load_constants()
    assert capacity_problems(DEPLOY_APP, COSMOS_TF.read_text(), VARIABLES_TF.read_text(), c) == []


def test_broken_copies_fail(tmp_path):
    c = cap.load_constants()
    r = cap.defaults_model(c)
    mem, keda = f"{r['pod_memory_mib']}Mi", r["keda_max_replicas"]
    app = tmp_path / "app"
    shutil.copytree(DEPLOY_APP, app)
    p = app / "spinapp.yaml"
    text = p.read_text()
    broken = (text.replace("  replicas: 2\n", "  replicas: 3\n")
              .replace(f'    limits:\n      cpu: "1"\n      memory: {mem}', '    limits:\n      cpu: "1"\n      memory: 256Mi')
              .replace(f'    requests:\n      cpu: "1"\n      memory: {mem}', "    requests:\n      cpu: 100m\n      memory: 64Mi"))
    assert broken.count("256Mi") == 1 and broken.count("64Mi") == 1, "the copy was not broken as meant"
    p.write_text(broken)
    p = app / "keda.yaml"
    p.write_text(p.read_text().replace('queueLength: "160"', 'queueLength: "64"')
                 .replace(f"maxReplicaCount: {keda}", "maxReplicaCount: 10"))
    p = app / "config.yaml"
    p.write_text(p.read_text().replace('BRIDGE_BATCH_SIZE: "32"', 'BRIDGE_BATCH_SIZE: "16"').replace('hsm_key_check_secs: "30"', 'hsm_key_check_secs: "300"'))
    cosmos = COSMOS_TF.read_text().replace("max_throughput = 4000", "max_throughput = 1000")
    variables = re.sub(r'(variable "hsm_key_size".*?default\s*=\s*)2048', r"\g<1>3072", VARIABLES_TF.read_text(), flags=re.S)
    errs = capacity_problems(app, cosmos, variables, c)
    assert "SpinApp replicas 3, the model needs 2" in errs
    assert "SpinApp requests.cpu 100m, the model counts 1 vCPU per pod" in errs
    assert f"SpinApp limits.memory 256Mi, the model gives {mem}" in errs
    assert f"SpinApp requests.memory 64Mi, the model gives {mem}" in errs
    assert f"ScaledObject maxReplicaCount 10, the model gives {keda}" in errs
    assert "ScaledObject queueLength '64', the model gives '160'" in errs
    assert "bridge BRIDGE_BATCH_SIZE '16', the model assumes 32" in errs
    assert "hsm_key_check_secs '300', the model assumes 30" in errs
    assert "events container autoscale max_throughput 1000, docs/capacity.json says 4000" in errs
    assert any(e.startswith("the default rate needs 2617 RU/s, above") for e in errs)
    assert "hsm_key_size default 3072, docs/capacity.json says 2048" in errs
    # A default rate beyond what the estate carries fails too.
    c["defaults"]["rate"] = 600
    errs = capacity_problems(DEPLOY_APP, COSMOS_TF.read_text(), VARIABLES_TF.read_text(), c)
    assert errs and all("autoscale maximum" in e for e in errs), errs


def test_doc_tables_are_the_scripts_output():
    c = cap.load_constants()
    text = (infra_lib.ROOT / "docs" / "capacity.md").read_text()
    start, end = text.index(cap.DOC_BEGIN), text.index(cap.DOC_END) + len(cap.DOC_END)
    assert text[start:end] == cap.markdown(c), "run scripts/capacity --update-doc"


def test_doc_tables_check_fails_on_an_edited_table(tmp_path):
    c = cap.load_constants()
    doc = tmp_path / "capacity.md"
    doc.write_text("intro\n" + cap.markdown(c).replace("| SpinApp pods | 2 ×", "| SpinApp pods | 3 ×") + "\nrest\n")
    assert cap.update_doc(c, doc) is True  # it differed, and is rewritten
    assert "| SpinApp pods | 2 ×" in doc.read_text() and doc.read_text().endswith("\nrest\n")
    assert cap.update_doc(c, doc) is False
