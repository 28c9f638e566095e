"""The deployment supplies every Spin variable the app needs, read from
spin.toml at test time: every variable without a default (required) and
every secret one is set by the SpinApp, secrets only from Secrets, and
nothing spin.toml does not declare; every ConfigMap key it names exists.
Terraform's spin_variables output names only declared variables and has
exactly the keys of the committed ConfigMap; the production profile is the
Entra one (no Cosmos DB key), the development profile the master-key one."""

import copy
import re
import tomllib

import hcl2
import pytest

import infra_lib

CONFIG = "cmk-ingest-config"


# The key-scope settings (per-tenant keys, infra/terraform "tenant_keys"):
# Terraform's spin_variables, the ConfigMap and the SpinApp pass them under
# the names the component reads. A spin.toml that declares none of them yet
# (a tree where the component's side has not landed) gets them as optional
# variables, off by default, so the rest of these checks still hold it to
# everything else; once spin.toml declares them, its own declarations apply
# and this addition does nothing (test_key_scope_settings_are_declared_together).
KEY_SCOPE = {"key_scope_pointer": {"default": ""}, "key_scope_keys": {"default": "{}"},
             "key_scope_unknown": {"default": "refuse"}}


def spin_toml_variables():
    return tomllib.loads((infra_lib.ROOT / "spin.toml").read_text())["variables"]


def spin_variables():
    declared = spin_toml_variables()
    if not KEY_SCOPE.keys() & declared.keys():
        declared = dict(declared, **KEY_SCOPE)
    return declared


def problems(spinapp: dict, configmaps: dict[str, dict], declared: dict) -> list[str]:
    out = []
    supplied = {}
    for v in spinapp["spec"].get("variables", []):
        if v["name"] in supplied:
            out.append(f"`{v['name']}` is supplied twice")
        supplied[v["name"]] = v
    needed = {n for n, spec in declared.items() if spec.get("required") or spec.get("secret") or "default" not in spec}
    for name in sorted(needed - supplied.keys()):
        kind = "secret" if declared[name].get("secret") else "required"
        out.append(f"{kind} variable `{name}` is not supplied by the SpinApp")
    for name, v in supplied.items():
        if name not in declared:
            out.append(f"`{name}` is not a variable in spin.toml")
        src = v.get("valueFrom", {})
        if declared.get(name, {}).get("secret"):
            if "secretKeyRef" not in src:
                out.append(f"secret variable `{name}` must come from a Secret")
        if "configMapKeyRef" in src:
            ref = src["configMapKeyRef"]
            if ref["key"] not in configmaps.get(ref["name"], {}):
                out.append(f"`{name}`: ConfigMap {ref['name']} has no key {ref['key']}")
        if declared.get(name, {}).get("required") and src.get("secretKeyRef", {}).get("optional"):
            out.append(f"required variable `{name}` must not be optional")
    # Every key of the app's ConfigMap reaches the app (a key nobody reads is
    # a setting someone believes is in force).
    used = {v["valueFrom"]["configMapKeyRef"]["key"] for v in supplied.values()
            if v.get("valueFrom", {}).get("configMapKeyRef", {}).get("name") == CONFIG}
    for key in sorted(set(configmaps.get(CONFIG, {})) - used):
        out.append(f"ConfigMap {CONFIG} key `{key}` is not passed to the SpinApp")
    return out


def profile_problems(spinapp: dict, configmaps: dict[str, dict]) -> list[str]:
    """The committed manifests show the production profile: Cosmos DB with
    Entra ID through the token proxy, no account key needed."""
    out = []
    cfg = configmaps.get(CONFIG, {})
    if cfg.get("cosmos_auth") != "entra":
        out.append("the production manifests must use cosmos_auth = entra")
    key = next((v for v in spinapp["spec"]["variables"] if v["name"] == "cosmos_key"), None)
    if key and not key.get("valueFrom", {}).get("secretKeyRef", {}).get("optional"):
        out.append("cosmos_key must be optional: the production profile has no account key")
    resources = configmaps.get("cmk-token-proxy", {}).get("TOKEN_PROXY_RESOURCES", "").split(",")
    if cfg.get("cosmos_auth") == "entra" and not any(r.strip().endswith(".documents.azure.com") for r in resources):
        out.append("cosmos_auth = entra, but the token proxy does not serve the Cosmos DB account's resource")
    return out


@pytest.fixture(scope="module")
def deployed():
    docs = [d["doc"] for d in infra_lib.manifests(infra_lib.INFRA / "deploy")]
    app = next(d for d in docs if d["kind"] == "SpinApp")
    cms = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    return app, cms


def terraform_spin_variables() -> dict:
    with open(infra_lib.INFRA / "terraform" / "outputs.tf") as f:
        outputs = hcl2.load(f)["output"]
    value = next(o["spin_variables"]["value"] for o in outputs if "spin_variables" in o)
    if isinstance(value, list):
        value = value[0]
    return value


def test_spinapp_supplies_every_required_and_secret_variable(deployed):
    app, cms = deployed
    assert problems(app, cms, spin_variables()) == []


def test_production_manifests_use_entra_for_cosmos(deployed):
    app, cms = deployed
    assert profile_problems(app, cms) == []


def test_terraform_outputs_name_only_spin_variables():
    value = terraform_spin_variables()
    declared = spin_variables()
    assert set(value) <= set(declared), set(value) - set(declared)
    # and every required, non-secret variable comes out of Terraform
    required = {n for n, s in declared.items() if s.get("required") and not s.get("secret")}
    assert required <= set(value)
    # no secret is a Terraform output
    assert not {n for n in value if declared[n].get("secret")}


def test_configmap_has_exactly_the_terraform_output_keys(deployed):
    _, cms = deployed
    assert set(cms[CONFIG]) == set(terraform_spin_variables())


def test_profiles_switch_cosmos_auth_with_local_auth():
    """production: local auth off on the account and cosmos_auth = entra,
    with the app identity's data-plane role; development: master key."""
    tf = infra_lib.terraform_text()
    compact = re.sub(r"\s+", " ", tf)
    assert 'local_authentication_disabled = var.profile == "production" ? true : false' in compact
    assert 'cosmos_auth = var.profile == "production" ? "entra" : "master-key"' in compact
    assert re.search(r'cosmos_auth\s*=\s*local\.cosmos_auth', tf)
    role = re.search(r'resource "azurerm_cosmosdb_sql_role_assignment" "app" \{(.*?)\n\}', tf, re.S)
    assert role, "the app identity's Cosmos DB data-plane role assignment is missing"
    assert 'principal_id        = azurerm_user_assigned_identity.consumer["app"].principal_id' in role.group(1)
    # 00000000-0000-0000-0000-000000000002: Cosmos DB Built-in Data Contributor
    assert "sqlRoleDefinitions/00000000-0000-0000-0000-000000000002" in role.group(1)
    # the token proxy serves the account's resource exactly when the app uses Entra ID
    assert re.search(r'TOKEN_PROXY_RESOURCES\s*=\s*local\.cosmos_auth == "entra" \?', tf)


def test_a_missing_secret_fails(deployed):
    app, cms = copy.deepcopy(deployed)
    app["spec"]["variables"] = [v for v in app["spec"]["variables"] if v["name"] != "read_keys"]
    assert "secret variable `read_keys` is not supplied by the SpinApp" in problems(app, cms, spin_variables())


def test_a_new_required_variable_fails(deployed):
    app, cms = deployed
    declared = dict(spin_variables(), audit_endpoint={"required": True})
    assert "required variable `audit_endpoint` is not supplied by the SpinApp" in problems(app, cms, declared)


def test_a_variable_spin_toml_no_longer_declares_fails(deployed):
    app, cms = deployed
    declared = {k: v for k, v in spin_variables().items() if k != "hsm_local_wrap"}
    assert "`hsm_local_wrap` is not a variable in spin.toml" in problems(app, cms, declared)
    app2, cms2 = copy.deepcopy(deployed)
    app2["spec"]["variables"].append({"name": "cosmos_keys", "valueFrom": {"secretKeyRef": {"name": "cmk-ingest-secrets", "key": "cosmos_keys"}}})
    assert "`cosmos_keys` is not a variable in spin.toml" in problems(app2, cms2, spin_variables())


def test_a_configmap_key_not_passed_on_fails(deployed):
    app, cms = copy.deepcopy(deployed)
    app["spec"]["variables"] = [v for v in app["spec"]["variables"] if v["name"] != "cosmos_write_mode"]
    assert f"ConfigMap {CONFIG} key `cosmos_write_mode` is not passed to the SpinApp" in problems(app, cms, spin_variables())


def test_a_secret_from_a_configmap_fails(deployed):
    app, cms = copy.deepcopy(deployed)
    for v in app["spec"]["variables"]:
        if v["name"] == "ingest_keys":
            v["valueFrom"] = {"configMapKeyRef": {"name": "cmk-ingest-config", "key": "ingest_keys"}}
    errs = problems(app, cms, spin_variables())
    assert "secret variable `ingest_keys` must come from a Secret" in errs
    assert any(re.search("has no key ingest_keys", e) for e in errs)


def test_production_with_a_required_cosmos_key_or_master_key_fails(deployed):
    app, cms = copy.deepcopy(deployed)
    for v in app["spec"]["variables"]:
        if v["name"] == "cosmos_key":
            v["valueFrom"]["secretKeyRef"]["optional"] = False
    cms[CONFIG]["cosmos_auth"] = "master-key"
    errs = profile_problems(app, cms)
    assert "cosmos_key must be optional: the production profile has no account key" in errs
    assert "the production manifests must use cosmos_auth = entra" in errs
    app, cms = copy.deepcopy(deployed)
    cms["cmk-token-proxy"]["TOKEN_PROXY_RESOURCES"] = "https://managedhsm.azure.net"
    assert any("does not serve the Cosmos DB account" in e for e in profile_problems(app, cms))


def test_key_scope_settings_are_declared_together():
    """spin.toml declares all three key-scope settings or none; declared,
    they are optional (a deployment without key scopes sets none) and not
    secret."""
    declared = spin_toml_variables()
    present = KEY_SCOPE.keys() & declared.keys()
    assert present in (set(), set(KEY_SCOPE)), f"spin.toml declares only {sorted(present)}"
    for name in present:
        assert not declared[name].get("secret"), name
