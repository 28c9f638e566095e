"""The deployment supplies every Spin variable the app needs, read from
spin.toml at test time: every variable without a default (required) and
every secret one is set by the SpinApp, secrets only from Secrets; every
ConfigMap key it names exists; Terraform's spin_variables output names only
declared variables."""

import copy
import re
import tomllib

import hcl2
import pytest

import infra_lib

# Variables the SpinApp already supplies that spin.toml does not declare yet
# (being added to the app on its own branch); Spin ignores them until then.
PENDING = {"admin_keys"}


def spin_variables():
    manifest = tomllib.loads((infra_lib.ROOT / "spin.toml").read_text())
    return manifest["variables"]


def problems(spinapp: dict, configmaps: dict[str, dict], declared: dict) -> list[str]:
    out = []
    supplied = {}
    for v in spinapp["spec"].get("variables", []):
        supplied[v["name"]] = v
    needed = {n for n, spec in declared.items() if spec.get("required") or spec.get("secret") or "default" not in spec}
    for name in sorted(needed - supplied.keys()):
        kind = "secret" if declared[name].get("secret") else "required"
        out.append(f"{kind} variable `{name}` is not supplied by the SpinApp")
    for name, v in supplied.items():
        if name not in declared and name not in PENDING:
            out.append(f"`{name}` is not a variable in spin.toml")
        src = v.get("valueFrom", {})
        if declared.get(name, {}).get("secret") or name in PENDING:
            if "secretKeyRef" not in src:
                out.append(f"secret variable `{name}` must come from a Secret")
        if "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            if ref["key"] not in configmaps.get(ref["name"], {}):
                out.append(f"`{name}`: ConfigMap {ref['name']} has no key {ref['key']}")
        if declared.get(name, {}).get("required") and src.get("secretKeyRef", {}).get("optional"):
            out.append(f"required variable `{name}` must not be optional")
    return out


@pytest.fixture(scope="module")
def deployed():
    docs = [d["doc"] for d in infra_lib.manifests(infra_lib.INFRA / "deploy")]
    app = next(d for d in docs if d["kind"] == "SpinApp")
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    return app, cms


def test_spinapp_supplies_every_required_and_secret_variable(deployed):
    app, cms = deployed
    assert problems(app, cms, spin_variables()) == []


def test_terraform_outputs_name_only_spin_variables():
    with open(infra_lib.INFRA / "terraform" / "outputs.tf") as f:
        outputs = hcl2.load(f)["output"]
    value = next(o["spin_variables"]["value"] for o in outputs if "spin_variables" in o)
    if isinstance(value, list):
        value = value[0]
    declared = spin_variables()
    assert set(value) <= set(declared), set(value) - set(declared)
    # and every required, non-secret variable comes out of Terraform
    required = {n for n, s in declared.items() if s.get("required") and not s.get("secret")}
    assert required <= set(value)


def test_a_missing_secret_fails(deployed):
    app, cms = copy.deepcopy(deployed)
    app["spec"]["variables"] = [v for v in app["spec"]["variables"] if v["name"] != "read_keys"]
    assert "secret variable `read_keys` is not supplied by the SpinApp" in problems(app, cms, spin_variables())


def test_a_new_required_variable_fails(deployed):
    app, cms = deployed
    declared = dict(spin_variables(), audit_endpoint={"required": True})
    assert "required variable `audit_endpoint` is not supplied by the SpinApp" in problems(app, cms, declared)


def test_a_secret_from_a_configmap_fails(deployed):
    app, cms = copy.deepcopy(deployed)
    for v in app["spec"]["variables"]:
        if v["name"] == "ingest_keys":
            v["valueFrom"] = {"configMapKeyRef": {"name": "cmk-ingest-config", "key": "ingest_keys"}}
    errs = problems(app, cms, spin_variables())
    assert "secret variable `ingest_keys` must come from a Secret" in errs
    assert any(re.search("has no key ingest_keys", e) for e in errs)
