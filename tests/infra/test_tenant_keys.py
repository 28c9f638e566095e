"""Per-tenant keys (key scopes): each tenant's key is an RSA-HSM key with
wrapKey/unwrapKey only, the consumer keys' rotation policy and
prevent_destroy, reachable by the app identity on that key alone, and
everything is keyed by tenant, so adding or removing one tenant adds or
removes only that tenant's instances (tenant_keys_check.py compares the
instance addresses and their arguments for two values of tenant_keys).
checkov's key and role policies run on every tenant instance. Broken copies
fail."""

import re

import hcl2
import pytest

import infra_lib
import replacement_check as rc
import tenant_keys_check as tk

TF = infra_lib.INFRA / "terraform"
KEY = 'azurerm_key_vault_managed_hardware_security_module_key.tenant'
APP_ROLE = 'azurerm_key_vault_managed_hardware_security_module_role_assignment.tenant_app'
ADMIN_ROLE = 'azurerm_key_vault_managed_hardware_security_module_role_assignment.tenant_key_admin'
ROTATION = 'azurerm_key_vault_managed_hardware_security_module_key_rotation_policy.tenant'

ACME = {"key_name": "tenant-acme"}
GLOBEX = {"key_name": "tenant-globex"}
INITECH = {"key_name": "tenant-initech"}
# (before, after): a tenant added last, one added that sorts first (a name or
# count taken from a position would shift every other tenant), one removed
# from the middle, the first and the last tenant.
SWITCHES = [
    ({"acme": ACME, "globex": GLOBEX}, {"acme": ACME, "globex": GLOBEX, "initech": INITECH}),
    ({"acme": ACME, "globex": GLOBEX}, {"aaa": {"key_name": "tenant-aaa"}, "acme": ACME, "globex": GLOBEX}),
    ({"acme": ACME, "globex": GLOBEX, "initech": INITECH}, {"acme": ACME, "initech": INITECH}),
    ({}, {"acme": ACME}),
    ({"acme": ACME}, {}),
]


def test_tenant_keys_are_built_like_the_consumer_keys():
    assert tk.structure(TF) == []


@pytest.mark.parametrize("before,after", SWITCHES, ids=["add-last", "add-first", "remove-middle", "first", "last"])
def test_one_tenant_changes_only_its_own_instances(before, after):
    assert tk.one_tenant_changes(TF, before, after) == []


def test_the_comparison_sees_every_tenant_resource():
    """The expansion really yields the tenant's four instances (a check that
    found nothing would pass everything)."""
    added, removed, changed = tk.diff(TF, {"tenant_keys": {}}, {"tenant_keys": {"acme": ACME}})
    assert added == {f'{r}["acme"]' for r in (KEY, ROTATION, APP_ROLE, ADMIN_ROLE)}
    assert not removed and not changed
    inst = tk.instances(TF, {"tenant_keys": {"acme": ACME, "globex": GLOBEX}})
    assert "tenant-acme" in str(inst[f'{KEY}["acme"]']["name"])
    # each role assignment names its own tenant's key instance, not another's
    assert "tenant[<acme>].name" in str(inst[f'{APP_ROLE}["acme"]']["scope"])
    assert "tenant[<globex>].name" in str(inst[f'{APP_ROLE}["globex"]']["scope"])


def test_tenant_keys_are_protected_like_every_key():
    """replacement_check holds every HSM key to prevent_destroy; the tenant
    key is one of them."""
    resources, _ = rc.load_tree(TF)
    assert ("azurerm_key_vault_managed_hardware_security_module_key", "tenant") in resources
    assert rc.check(TF, []) == []


def _var_patterns():
    with open(TF / "variables.tf") as f:
        variables = {k: v for e in hcl2.load(f)["variable"] for k, v in e.items()}
    conds = " ".join(str(v["condition"]) for v in variables["tenant_keys"]["validation"])
    key_name = re.search(r'regex\("(\^\[A-Za-z\][^"]*)"', conds).group(1)
    pointer = re.search(r'regex\("([^"]*)"', str(variables["key_scope_pointer"]["validation"])).group(1)
    return key_name, pointer


def test_variable_validation_patterns():
    """The key-name rule is Microsoft's for Key Vault and Managed HSM objects
    (1-127 characters, a letter first, letters, digits and hyphens); the
    pointer rule is RFC 6901's. Both patterns are plain RE2 that Python's re
    reads the same way."""
    key_name, pointer = _var_patterns()
    for ok in ("tenant-acme", "a", "T1", "a" * 127):
        assert re.fullmatch(key_name, ok), ok
    for bad in ("", "1tenant", "tenant_acme", "tenant.acme", "tenant acme", "-x", "a" * 128):
        assert not re.fullmatch(key_name, bad), bad
    for ok in ("/data/tenantId", "/source", "/data/a~1b", "/data/~0x", "/data/*x", "/data/a*", "/*a"):
        assert re.fullmatch(pointer, ok), ok
    for bad in ("data/tenantId", "/data/~2", "/data/~", "#/data", "/", "/data/*", "/*/t", "/data//t", "/data/"):
        assert not re.fullmatch(pointer, bad), bad


def test_the_tenant_count_is_bounded_like_the_app():
    """tenant_keys has at most as many entries as the app accepts in
    key_scope_keys (MAX_MAPPED_KEYS): more would leave every pod unready."""
    with open(TF / "variables.tf") as f:
        variables = {k: v for e in hcl2.load(f)["variable"] for k, v in e.items()}
    conds = [str(v["condition"]) for v in variables["tenant_keys"]["validation"]]
    app = re.search(r"pub const MAX_MAPPED_KEYS: usize = (\d+);",
                    (infra_lib.ROOT / "core/src/config/scopes.rs").read_text()).group(1)
    assert any(re.search(rf"length\(var\.tenant_keys\)\s*<=\s*{app}\b", c) for c in conds), conds


def test_the_key_scope_settings_reach_the_app():
    """Terraform's spin_variables, the ConfigMap and the SpinApp carry the
    three key-scope settings under the names the component reads."""
    from test_spin_variables import terraform_spin_variables
    names = {"key_scope_pointer", "key_scope_keys", "key_scope_unknown"}
    assert names <= set(terraform_spin_variables())
    docs = [d["doc"] for d in infra_lib.manifests(infra_lib.INFRA / "deploy")]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "cmk-ingest-config")
    app = next(d for d in docs if d["kind"] == "SpinApp")
    assert names <= set(cm["data"])
    assert cm["data"]["key_scope_keys"] == "{}" and cm["data"]["key_scope_unknown"] in ("refuse", "default")
    passed = {v["name"]: v["valueFrom"]["configMapKeyRef"]["key"] for v in app["spec"]["variables"] if "configMapKeyRef" in v.get("valueFrom", {})}
    assert all(passed.get(n) == n for n in names)


# --- broken copies --------------------------------------------------------------

COUNT_KEY = (
    "hsm.tf",
    'resource "azurerm_key_vault_managed_hardware_security_module_key" "tenant" {\n  for_each        = var.tenant_keys\n  name            = each.value.key_name',
    'resource "azurerm_key_vault_managed_hardware_security_module_key" "tenant" {\n  count           = length(var.tenant_keys)\n  name            = values(var.tenant_keys)[count.index].key_name',
)
BROKEN_STRUCTURE = [
    ("key by count", [COUNT_KEY], "uses count over the tenants"),
    ("key allows encrypt", [("hsm.tf", 'for_each        = var.tenant_keys\n  name            = each.value.key_name\n  managed_hsm_id  = azurerm_key_vault_managed_hardware_security_module.hsm.id\n  key_type        = "RSA-HSM"\n  key_size        = var.hsm_key_size\n  key_opts        = ["wrapKey", "unwrapKey"]',
                             'for_each        = var.tenant_keys\n  name            = each.value.key_name\n  managed_hsm_id  = azurerm_key_vault_managed_hardware_security_module.hsm.id\n  key_type        = "RSA-HSM"\n  key_size        = var.hsm_key_size\n  key_opts        = ["wrapKey", "unwrapKey", "encrypt"]')],
     "key_opts must be exactly wrapKey, unwrapKey"),
    ("key of a fixed size", [("hsm.tf", 'name            = each.value.key_name\n  managed_hsm_id  = azurerm_key_vault_managed_hardware_security_module.hsm.id\n  key_type        = "RSA-HSM"\n  key_size        = var.hsm_key_size',
                              'name            = each.value.key_name\n  managed_hsm_id  = azurerm_key_vault_managed_hardware_security_module.hsm.id\n  key_type        = "RSA-HSM"\n  key_size        = 4096')],
     "tenant key: key_size"),
    ("key without prevent_destroy", [("hsm.tf", "    prevent_destroy = true\n    # Never updated after creation: the provider's Update sends every key\n    # update with `enabled = true` (azurerm 4.55.0\n    # key_vault_managed_hardware_security_module_key_resource.go, Update),\n    # so any change here (tags follow the stage) would re-enable a key\n    # disabled for revocation. Rotation creates new versions outside\n    # Terraform. tests/infra/test_key_updates.py.\n    ignore_changes = [key_opts, tags, expiration_date, not_before_date]\n    # With features",
                                      "    ignore_changes = [key_opts, tags, expiration_date, not_before_date]\n    # With features")],
     "tenant key: no lifecycle prevent_destroy"),
    ("erased names may come back", [("hsm.tf", "    precondition {\n      condition     = !contains([for n in var.erased_tenant_key_names : lower(n)], lower(each.value.key_name))",
                                     "    precondition {\n      condition     = true")],
     "no precondition refusing an erased tenant's key name"),
    ("no rotation policy", [("hsm.tf", 'resource "azurerm_key_vault_managed_hardware_security_module_key_rotation_policy" "tenant" {',
                             'resource "azurerm_key_vault_managed_hardware_security_module_key_rotation_policy" "tenant_unused" {\n  count               = 0')],
     "key_rotation_policy.tenant: missing"),
    ("rotation of its own", [("hsm.tf", "tenant[each.key].id\n  time_after_creation = var.key_rotation_after",
                              'tenant[each.key].id\n  time_after_creation = "P3650D"')],
     "tenant rotation policy: time_after_creation"),
    ("app role on all keys", [("hsm.tf", 'tenant/${each.key}/crypto-service-encryption-user")\n  scope              = "/keys/${azurerm_key_vault_managed_hardware_security_module_key.tenant[each.key].name}"',
                               'tenant/${each.key}/crypto-service-encryption-user")\n  scope              = "/keys"')],
     "tenant_app: scope must be that tenant's key alone"),
    ("app role on the app key", [("hsm.tf", 'tenant/${each.key}/crypto-service-encryption-user")\n  scope              = "/keys/${azurerm_key_vault_managed_hardware_security_module_key.tenant[each.key].name}"',
                                  'tenant/${each.key}/crypto-service-encryption-user")\n  scope              = "/keys/${azurerm_key_vault_managed_hardware_security_module_key.key["app"].name}"')],
     "tenant_app: scope must be that tenant's key alone"),
    ("app role for another identity", [("hsm.tf", 'principal_id       = azurerm_user_assigned_identity.consumer["app"].principal_id',
                                        'principal_id       = azurerm_user_assigned_identity.bridge.principal_id')],
     "tenant_app: principal must be the app identity"),
    ("key admins as crypto users", [("hsm.tf", 'tenant/${each.key}/key-administrator")\n  scope              = "/keys/${azurerm_key_vault_managed_hardware_security_module_key.tenant[each.key].name}"\n  role_definition_id = azurerm_key_vault_managed_hardware_security_module_role_definition.key_admin.resource_manager_id',
                                     'tenant/${each.key}/key-administrator")\n  scope              = "/keys/${azurerm_key_vault_managed_hardware_security_module_key.tenant[each.key].name}"\n  role_definition_id = local.hsm_roles.crypto_service_encryption_user')],
     "tenant_key_admin: role is"),
    ("mapping from the variable, not the keys", [("outputs.tf", "jsonencode({ for t, a in azurerm_key_vault_managed_hardware_security_module_role_assignment.tenant_app : t => azurerm_key_vault_managed_hardware_security_module_key.tenant[t].name })",
                                                  "jsonencode({ for t, v in var.tenant_keys : t => v.key_name })")],
     "key_scope_keys must map each tenant whose app role exists"),
    ("mapping from the keys, not the app's roles", [("outputs.tf", "jsonencode({ for t, a in azurerm_key_vault_managed_hardware_security_module_role_assignment.tenant_app : t => azurerm_key_vault_managed_hardware_security_module_key.tenant[t].name })",
                                                     "jsonencode({ for t, k in azurerm_key_vault_managed_hardware_security_module_key.tenant : t => k.name })")],
     "key_scope_keys must map each tenant whose app role exists"),
    ("a consumer key name allowed", [("variables.tf", '["cosmos-kek", "storage-kek", "app-kek", "disks-kek"]', '["cosmos-kek", "storage-kek", "disks-kek"]')],
     "tenant_keys validation reserves"),
]

BROKEN_CHANGES = [
    ("key by count", [COUNT_KEY], f"{KEY}[0]: changes"),
    ("role name from the tenant's position", [("hsm.tf", 'uuidv5("url", "cmk-ingest/${local.base}/tenant/${each.key}/crypto-service-encryption-user")',
                                               'uuidv5("url", "cmk-ingest/${local.base}/tenant/${index(keys(var.tenant_keys), each.key)}/crypto-service-encryption-user")')],
     f'{APP_ROLE}["acme"]: changes'),
    ("every key tagged with the tenant count", [("hsm.tf", '{ purpose = "the app\'s envelope KEK for one key scope (tenant)" }',
                                                 '{ purpose = "the app\'s envelope KEK for one key scope (tenant)", scopes = length(var.tenant_keys) }')],
     f'{KEY}["acme"]: changes'),
]


def _edit(tree, edits):
    for file, old, new in edits:
        p = tree / "terraform" / file
        text = p.read_text()
        assert text.count(old) == 1, f"{file}: anchor must occur once: {old!r}"
        p.write_text(text.replace(old, new))


@pytest.mark.parametrize("case", BROKEN_STRUCTURE, ids=[c[0] for c in BROKEN_STRUCTURE])
def test_broken_structure_fails(case, tree_copy):
    _, edits, message = case
    _edit(tree_copy, edits)
    errors = tk.structure(tree_copy / "terraform")
    assert any(message in e for e in errors), errors


@pytest.mark.parametrize("case", BROKEN_CHANGES, ids=[c[0] for c in BROKEN_CHANGES])
def test_a_change_that_touches_other_tenants_fails(case, tree_copy):
    _, edits, message = case
    _edit(tree_copy, edits)
    errors = tk.one_tenant_changes(tree_copy / "terraform", *SWITCHES[1])
    assert any(message in e for e in errors), errors


def test_a_tenant_key_without_prevent_destroy_fails_the_replacement_check(tree_copy):
    _edit(tree_copy, [BROKEN_STRUCTURE[3][1][0]])
    errors = rc.check(tree_copy / "terraform", [])
    assert any("_key.tenant: holds data and has no lifecycle prevent_destroy" in e for e in errors), errors


# --- checkov's key and role policies on every tenant instance -------------------

TENANTS_TFVARS = """
tenant_keys = {
  acme   = { key_name = "tenant-acme" }
  globex = { key_name = "tenant-globex" }
}
key_scope_pointer = "/data/tenantId"
"""


def _with_tenants(tree):
    p = tree / "terraform" / "stages" / "customer-managed.tfvars"
    p.write_text(p.read_text() + TENANTS_TFVARS)


def test_checkov_policies_cover_every_tenant_instance_and_fail_broken_ones(tree_copy):
    """One run on a copy with two tenants and two deliberate faults on the
    tenant resources: a key allowing encrypt, the app's role on every key.
    The consumer keys still pass (the faults touch the tenants only), and
    each tenant instance gets its verdict."""
    _with_tenants(tree_copy)
    pristine = infra_lib.run_checkov(tree_copy, "customer-managed", ["CKV_CMK_2", "CKV_CMK_3"])
    ok = infra_lib.passed(pristine)
    for t in ("acme", "globex"):
        for check, res in (("CKV_CMK_2", KEY), ("CKV_CMK_3", APP_ROLE), ("CKV_CMK_3", ADMIN_ROLE)):
            assert (check, f'{res}["{t}"]') in ok, (check, res, t)
    assert not infra_lib.failed(pristine)

    _edit(tree_copy, [BROKEN_STRUCTURE[1][1][0], BROKEN_STRUCTURE[7][1][0]])
    broken = infra_lib.run_checkov(tree_copy, "customer-managed", ["CKV_CMK_2", "CKV_CMK_3"])
    fails = infra_lib.failed(broken)
    for t in ("acme", "globex"):
        assert ("CKV_CMK_2", f'{KEY}["{t}"]') in fails
        assert ("CKV_CMK_3", f'{APP_ROLE}["{t}"]') in fails
    assert ("CKV_CMK_2", 'azurerm_key_vault_managed_hardware_security_module_key.key["app"]') in infra_lib.passed(broken)


# --- monitoring covers every key -------------------------------------------------

QUERIES = infra_lib.INFRA / "monitoring" / "queries"


def key_coverage(queries) -> list[str]:
    """The key alert and the key-state view cover every key, tenant keys
    included: they select by answer code or event, never by a key's name
    (a tenant key is named by the operator, so a rule naming keys would
    silently miss the next tenant)."""
    errors = []
    for q in sorted(queries.glob("*.kql")):
        body = "\n".join(l for l in q.read_text().splitlines() if not l.lstrip().startswith("//"))
        if re.search(r'"[A-Za-z0-9-]*-kek"|tenant-', body) or re.search(r"LogMessage\.key\)?\s*(==|=~|in|has|startswith)", body):
            errors.append(f"{q.name}: selects by key name")
    alert = (queries / "alert-key-not-usable.kql").read_text()
    if 'code startswith "Key"' not in alert:
        errors.append("alert-key-not-usable.kql: does not select every Key* answer")
    if "key = tostring(LogMessage.key)" not in (queries / "key-state.kql").read_text():
        errors.append("key-state.kql: does not show which key changed")
    return errors


def test_key_alerts_cover_every_key():
    assert key_coverage(QUERIES) == []


@pytest.mark.parametrize("file,old,new,message", [
    ("alert-key-not-usable.kql", '| where status == 503 and code startswith "Key"',
     '| where status == 503 and code startswith "Key" and tostring(LogMessage.key) == "app-kek"', "alert-key-not-usable.kql: selects by key name"),
    ("alert-key-not-usable.kql", 'code startswith "Key"', 'code == "KeyDisabled"', "does not select every Key* answer"),
    ("key-state.kql", "| where tostring(LogMessage.event) == \"key_state\"",
     "| where tostring(LogMessage.event) == \"key_state\" and tostring(LogMessage.key) in (\"app-kek\")", "key-state.kql: selects by key name"),
])
def test_a_key_rule_that_names_keys_fails(tree_copy, file, old, new, message):
    p = tree_copy / "monitoring" / "queries" / file
    text = p.read_text()
    assert text.count(old) == 1, old
    p.write_text(text.replace(old, new))
    errors = key_coverage(tree_copy / "monitoring" / "queries")
    assert any(message in e for e in errors), errors


# --- the erase runbook matches the tenant resources -----------------------------

README = infra_lib.INFRA / "README.md"


def test_the_erase_runbook_takes_out_exactly_the_protected_instances():
    assert tk.erase_runbook(README.read_text(), TF) == []


@pytest.mark.parametrize("target,old,new,message", [
    ("readme", "   terraform state rm 'azurerm_key_vault_managed_hardware_security_module_key_rotation_policy.tenant[\"T\"]' \\\n     'azurerm_key_vault_managed_hardware_security_module_key.tenant[\"T\"]'",
     "   terraform state rm 'azurerm_key_vault_managed_hardware_security_module_key_rotation_policy.tenant[\"T\"]'",
     "_key.tenant has prevent_destroy but is not taken out of the state"),
    ("readme", "`…role_assignment.tenant_key_admin[\"T\"]`,\n   and",
     "nothing,\n   and", "the plan destroys azurerm_key_vault_managed_hardware_security_module_role_assignment.tenant_key_admin[\"T\"]"),
    ("tf", '/tenant/${each.key}/key-administrator")\n',
     '/tenant/${each.key}/key-administrator")\n  lifecycle {\n    prevent_destroy = true\n  }\n',
     "tenant_key_admin has prevent_destroy but is not taken out of the state"),
], ids=["key left in the state", "a destroyed role not listed", "a protected role"])
def test_a_stale_erase_runbook_fails(tree_copy, target, old, new, message):
    p = tree_copy / "README.md" if target == "readme" else tree_copy / "terraform" / "hsm.tf"
    text = p.read_text()
    assert text.count(old) == 1, old
    p.write_text(text.replace(old, new))
    errors = tk.erase_runbook((tree_copy / "README.md").read_text(), tree_copy / "terraform")
    assert any(message in e for e in errors), errors
