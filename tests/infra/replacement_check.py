"""Would a switch between two sets of variables replace a resource that holds
data? Offline, without Terraform: each ForceNew argument of the resources
used is evaluated under both sets (variables.tf defaults, a stage's tfvars,
overrides) and compared; a resource whose ForceNew value differs, or that
references a resource being replaced in a ForceNew argument, would be
destroyed and created again by the plan.

A data-holding resource may only be "replaced" that way if it carries
`lifecycle { prevent_destroy = true }` (the plan then stops instead of
destroying it: the switch becomes an explicit, separate step), or ignores
the change (`ignore_changes`). The accounts, the cluster, the HSM, the vault
and the keys carry prevent_destroy in any case.

FORCE_NEW lists, per resource type used here, the arguments azurerm 4.55.0
marks `ForceNew: true` in its schema (or forces new through CustomizeDiff),
read from the provider source at tag v4.55.0:
  azurerm_cosmosdb_account        internal/services/cosmos/cosmosdb_account_resource.go
  azurerm_cosmosdb_sql_database   internal/services/cosmos/cosmosdb_sql_database_resource.go
  azurerm_cosmosdb_sql_container  internal/services/cosmos/cosmosdb_sql_container_resource.go
  azurerm_storage_account         internal/services/storage/storage_account_resource.go
  azurerm_storage_queue           internal/services/storage/storage_queue_resource.go
  azurerm_storage_container       internal/services/storage/storage_container_resource.go
  azurerm_kubernetes_cluster      internal/services/containers/kubernetes_cluster_resource.go
  azurerm_key_vault_managed_hardware_security_module
                                  internal/services/managedhsm/key_vault_managed_hardware_security_module_resource.go
  azurerm_key_vault_managed_hardware_security_module_key
                                  internal/services/managedhsm/key_vault_managed_hardware_security_module_key_resource.go
  azurerm_key_vault               internal/services/keyvault/key_vault_resource.go
  azurerm_key_vault_key           internal/services/keyvault/key_vault_key_resource.go
Notably: Cosmos DB `managed_hsm_key_id` and `key_vault_key_id` are both
ForceNew; the storage account's `customer_managed_key` block is not (the key
switches in place); the cluster's `disk_encryption_set_id` is ForceNew while
`key_management_service` is not. Conditional ones (CustomizeDiff) are listed
as the arguments they guard: Cosmos `backup.type` (Continuous -> Periodic),
Cosmos `analytical_storage_enabled` (true -> false) and `capabilities`
(unless every change is in the service's add/remove lists,
`checkCapabilitiesCanBeUpdated`), both in the account's CustomizeDiff; Cosmos
`restore.*` (each of its arguments `ForceNew: true` in the schema); the
storage account's `immutability_policy` block (`ForceNew: true`),
AKS `network_profile.network_data_plane` / `network_plugin_mode` /
`network_policy`, HSM `security_domain_*` (set -> unset).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import hcl2

FORCE_NEW = {
    "azurerm_cosmosdb_account": ["name", "resource_group_name", "location", "kind", "create_mode",
                                 "free_tier_enabled", "key_vault_key_id", "managed_hsm_key_id", "backup.type",
                                 "analytical_storage_enabled", "capabilities", "restore.source_cosmosdb_account_id",
                                 "restore.restore_timestamp_in_utc", "restore.database", "restore.gremlin_database",
                                 "restore.tables_to_restore"],
    "azurerm_cosmosdb_sql_database": ["name", "resource_group_name", "account_name"],
    "azurerm_cosmosdb_sql_container": ["name", "resource_group_name", "account_name", "database_name",
                                       "partition_key_paths", "partition_key_version", "partition_key_kind"],
    "azurerm_storage_account": ["name", "resource_group_name", "location", "account_tier",
                                "provisioned_billing_model_version", "is_hns_enabled", "nfsv3_enabled",
                                "dns_endpoint_type", "queue_encryption_key_type", "table_encryption_key_type",
                                "infrastructure_encryption_enabled", "immutability_policy"],
    "azurerm_storage_queue": ["name", "storage_account_id"],
    "azurerm_storage_container": ["name", "storage_account_id"],
    "azurerm_kubernetes_cluster": ["name", "resource_group_name", "location", "dns_prefix", "dns_prefix_private_cluster",
                                   "disk_encryption_set_id", "node_resource_group", "private_cluster_enabled",
                                   "private_dns_zone_id", "kubelet_identity.client_id", "kubelet_identity.object_id",
                                   "kubelet_identity.user_assigned_identity_id", "network_profile.network_plugin",
                                   "network_profile.network_mode", "network_profile.dns_service_ip",
                                   "network_profile.pod_cidr", "network_profile.service_cidr",
                                   "network_profile.load_balancer_sku", "network_profile.network_plugin_mode",
                                   "network_profile.network_data_plane", "network_profile.network_policy"],
    "azurerm_key_vault_managed_hardware_security_module": ["name", "resource_group_name", "location", "sku_name",
                                                           "tenant_id", "admin_object_ids", "soft_delete_retention_days",
                                                           "security_domain_key_vault_certificate_ids",
                                                           "security_domain_quorum"],
    "azurerm_key_vault_managed_hardware_security_module_key": ["name", "managed_hsm_id", "key_type", "key_size", "curve"],
    "azurerm_key_vault": ["name", "resource_group_name", "location"],
    "azurerm_key_vault_key": ["name", "key_vault_id", "key_type", "key_size", "curve"],
}

# What holds records, keys or state that a replacement would lose.
DATA_HOLDING = set(FORCE_NEW)
# These carry prevent_destroy whatever the switch.
# The database, container, queues and blob containers too: their parents'
# names are ForceNew in them (cosmosdb_sql_database_resource.go and
# cosmosdb_sql_container_resource.go `account_name`, `database_name`), so a
# generation migration whose `terraform state rm` was missed would plan to
# delete the stage-one database inside the retiring account.
ALWAYS_PROTECTED = {"azurerm_cosmosdb_account", "azurerm_storage_account", "azurerm_kubernetes_cluster",
                    "azurerm_key_vault_managed_hardware_security_module",
                    "azurerm_key_vault_managed_hardware_security_module_key", "azurerm_key_vault_key",
                    "azurerm_cosmosdb_sql_database", "azurerm_cosmosdb_sql_container", "azurerm_storage_queue",
                    "azurerm_storage_container"}


class Unknown(Exception):
    pass


def _one(v):
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def load_tree(tf: Path) -> tuple[dict, dict]:
    """(resources {(type, name): body}, variable defaults)."""
    resources, defaults = {}, {}
    for f in sorted(tf.glob("*.tf")):
        doc = hcl2.load(f.open())
        for entry in doc.get("resource", []):
            for rtype, named in entry.items():
                for rname, body in named.items():
                    resources[(rtype, rname)] = body
        for entry in doc.get("variable", []):
            for name, body in entry.items():
                defaults[name] = _one(body["default"]) if "default" in body else f"<{name}>"
    return resources, defaults


def stage_vars(tf: Path, defaults: dict, stage: str, overrides: dict | None = None) -> dict:
    values = dict(defaults)
    for k, v in hcl2.load((tf / "stages" / f"{stage}.tfvars").open()).items():
        values[k] = _one(v)
    values.update(overrides or {})
    return values


def _split_top(expr: str, sep: str) -> list[str] | None:
    """Split at the first top-level `?` (with its `:`), outside strings and brackets."""
    depth, q, i = 0, False, 0
    qpos = None
    while i < len(expr):
        c = expr[i]
        if q:
            if c == "\\":
                i += 1
            elif c == '"':
                q = False
        elif c == '"':
            q = True
        elif c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and c == "?" and qpos is None:
            qpos = i
        elif depth == 0 and c == ":" and qpos is not None:
            return [expr[:qpos], expr[qpos + 1:i], expr[i + 1:]]
        i += 1
    return None


VAR = re.compile(r"\bvar\.([a-z_][a-z0-9_]*)")


def _cond(expr: str, values: dict) -> bool:
    py = VAR.sub(lambda m: repr(values[m.group(1)]), expr)
    py = py.replace("&&", " and ").replace("||", " or ")
    py = re.sub(r"!(?!=)", " not ", py)
    py = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", re.sub(r"\bnull\b", "None", py)))
    try:
        return bool(eval(py, {"__builtins__": {}}, {"length": len, "True": True, "False": False, "None": None}))
    except Exception as e:  # an expression this evaluator cannot decide
        raise Unknown(f"cannot evaluate `{expr.strip()}`: {e}") from None


def evaluate(value, values: dict):
    """A value with variables substituted and conditionals resolved; other
    references stay as their text."""
    if isinstance(value, list):
        return [evaluate(v, values) for v in value]
    if isinstance(value, dict):
        return {k: evaluate(v, values) for k, v in value.items() if not k.startswith("__")}
    if not isinstance(value, str):
        return value
    s = value
    if s.startswith("${") and s.endswith("}"):
        s = s[2:-1]
        parts = _split_top(s, "?")
        if parts:
            cond, a, b = parts
            branch = a if _cond(cond, values) else b
            branch = branch.strip()
            if branch in ("None", "null"):
                return None
            if branch.startswith('"') and branch.endswith('"'):
                return evaluate(branch[1:-1], values)
            return evaluate("${" + branch + "}", values)
        s = "${" + s + "}"
    return VAR.sub(lambda m: json.dumps(values[m.group(1)]), s)


def _get(body: dict, path: str):
    cur = body
    for seg in path.split("."):
        if isinstance(cur, list):
            cur = cur[0] if cur else None
        if not isinstance(cur, dict) or seg not in cur:
            return None
        cur = cur[seg]
    return _one(cur) if not isinstance(cur, list) or len(cur) == 1 else cur


def _lifecycle(body: dict) -> dict:
    lc = body.get("lifecycle") or [{}]
    lc = lc[0] if isinstance(lc, list) else lc
    ignore = lc.get("ignore_changes", [])
    ignore = [str(x).replace("${", "").replace("}", "") for x in (ignore if isinstance(ignore, list) else [ignore])]
    return {"prevent_destroy": _one(lc.get("prevent_destroy")) in (True, "true"), "ignore": ignore}


def replaced(resources: dict, before: dict, after: dict) -> dict[tuple[str, str], list[str]]:
    """{resource: [why]} for every resource the switch would replace."""
    out: dict[tuple[str, str], list[str]] = {}
    for (rtype, rname), body in resources.items():
        ignore = _lifecycle(body)["ignore"]
        for attr in FORCE_NEW.get(rtype, []):
            if "all" in ignore or attr.split(".")[0] in ignore:
                continue
            raw = _get(body, attr)
            try:
                a, b = evaluate(raw, before), evaluate(raw, after)
            except Unknown as e:
                out.setdefault((rtype, rname), []).append(f"{attr}: {e}")
                continue
            if a != b:
                out.setdefault((rtype, rname), []).append(f"{attr}: {a!r} -> {b!r}")
    # A ForceNew argument that refers to a replaced resource changes too.
    changed = True
    while changed:
        changed = False
        for (rtype, rname), body in resources.items():
            if (rtype, rname) in out or "all" in _lifecycle(body)["ignore"]:
                continue
            for attr in FORCE_NEW.get(rtype, []):
                raw = json.dumps(_get(body, attr))
                # A protected resource stops the plan instead: nothing behind it moves.
                hit = next((f"{t}.{n}" for t, n in out if not _lifecycle(resources[(t, n)])["prevent_destroy"]
                            and re.search(rf"\b{t}\.{n}\b", raw)), None)
                if hit:
                    out[(rtype, rname)] = [f"{attr}: refers to {hit}, which is replaced"]
                    changed = True
                    break
    return out


def check(tf: Path, switches: list[tuple[str, dict, str, dict]]) -> list[str]:
    """Errors for data-holding resources replaced by any switch without
    protection, and for always-protected ones without prevent_destroy."""
    resources, defaults = load_tree(tf)
    errors = []
    for (rtype, rname), body in resources.items():
        if rtype in ALWAYS_PROTECTED and not _lifecycle(body)["prevent_destroy"]:
            errors.append(f"{rtype}.{rname}: holds data and has no lifecycle prevent_destroy")
    for s1, o1, s2, o2 in switches:
        before, after = stage_vars(tf, defaults, s1, o1), stage_vars(tf, defaults, s2, o2)
        for (rtype, rname), why in sorted(replaced(resources, before, after).items()):
            if rtype in DATA_HOLDING and not _lifecycle(resources[(rtype, rname)])["prevent_destroy"]:
                errors.append(f"{s1}{o1 or ''} -> {s2}{o2 or ''}: {rtype}.{rname} would be replaced without "
                              f"protection: {'; '.join(why)}")
    return errors
