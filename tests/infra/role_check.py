"""Each runbook operation against the documented permissions of the role the
runbook tells the operator to use.

The runbook (infra/README.md) lists its Managed HSM operations in one table
between `<!-- runbook-roles -->` markers: operation | command | role. Each
command needs data actions (below, from the Managed HSM data-action names in
learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles, "Permitted
operations"); the role must grant all of them. Built-in roles' data actions
are that page's table; the custom "cmk-ingest Key Administrator" role's are
infra/terraform/hsm-key-admin-role.json, which must contain exactly
read, write and rotate and must cover what Terraform creates for it.
"""

from __future__ import annotations

import json
import re

P = "Microsoft.KeyVault/managedHsm"

# learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles, "Permitted operations".
BUILT_IN = {
    "Managed HSM Administrator": {"/securitydomain/download/action", "/securitydomain/upload/action",
                                  "/securitydomain/upload/read", "/securitydomain/transferkey/read",
                                  "/roleAssignments/read/action", "/roleAssignments/write/action",
                                  "/roleAssignments/delete/action", "/roleDefinitions/read/action",
                                  "/roleDefinitions/write/action", "/roleDefinitions/delete/action",
                                  "/backup/start/action", "/backup/status/action", "/restore/start/action",
                                  "/restore/status/action"},
    "Managed HSM Crypto Officer": {"/keys/deletedKeys/read/action", "/keys/deletedKeys/recover/action",
                                   "/keys/deletedKeys/delete", "/roleAssignments/read/action",
                                   "/roleAssignments/write/action", "/roleAssignments/delete/action",
                                   "/roleDefinitions/read/action", "/roleDefinitions/write/action",
                                   "/roleDefinitions/delete/action"},
    "Managed HSM Crypto User": {"/keys/read/action", "/keys/write/action", "/keys/rotate/action", "/keys/create",
                                "/keys/delete", "/keys/backup/action", "/keys/restore/action", "/keys/release/action",
                                "/keys/import/action", "/keys/encrypt/action", "/keys/decrypt/action",
                                "/keys/wrap/action", "/keys/unwrap/action", "/keys/sign/action", "/keys/verify/action",
                                "/roleAssignments/read/action", "/roleDefinitions/read/action"},
    "Managed HSM Policy Administrator": {"/roleAssignments/read/action", "/roleAssignments/write/action",
                                         "/roleAssignments/delete/action", "/roleDefinitions/read/action",
                                         "/roleDefinitions/write/action", "/roleDefinitions/delete/action"},
    "Managed HSM Crypto Auditor": {"/keys/read/action", "/keys/deletedKeys/delete", "/roleAssignments/read/action",
                                   "/roleDefinitions/read/action"},
    "Managed HSM Crypto Service Encryption User": {"/keys/read/action", "/keys/wrap/action", "/keys/unwrap/action"},
    "Managed HSM Backup": {"/keys/backup/action", "/backup/start/action", "/backup/status/action"},
    "Managed HSM Restore": {"/keys/restore/action", "/restore/start/action", "/restore/status/action"},
}
BUILT_IN = {role: {P + a for a in actions} for role, actions in BUILT_IN.items()}
CUSTOM_ROLE = "cmk-ingest Key Administrator"
CUSTOM_EXACT = {P + "/keys/read/action", P + "/keys/write/action", P + "/keys/rotate/action"}

# Command (prefix) -> the data actions it needs.
NEEDS = [
    ("az keyvault security-domain download", {"/securitydomain/download/action"}),
    ("az keyvault security-domain init-recovery", {"/securitydomain/transferkey/read"}),
    ("az keyvault security-domain upload", {"/securitydomain/upload/action"}),
    ("az keyvault role assignment create", {"/roleAssignments/write/action"}),
    ("az keyvault role assignment delete", {"/roleAssignments/delete/action"}),
    ("az keyvault role definition update", {"/roleDefinitions/write/action"}),
    ("az keyvault role definition create", {"/roleDefinitions/write/action"}),
    ("az keyvault key create", {"/keys/create"}),
    ("az keyvault key rotate", {"/keys/rotate/action"}),
    ("az keyvault key set-attributes", {"/keys/write/action"}),
    ("az keyvault key show", {"/keys/read/action"}),
    # before "key list": the first matching prefix decides
    ("az keyvault key list-deleted", {"/keys/deletedKeys/read/action"}),
    ("az keyvault key list", {"/keys/read/action"}),
    ("az keyvault key delete", {"/keys/delete"}),
    ("az keyvault key recover", {"/keys/deletedKeys/recover/action"}),
    ("az keyvault backup start", {"/backup/start/action"}),
    ("az keyvault restore start", {"/restore/start/action"}),
    # Terraform's HSM data-plane resources: keys and rotation policies, then
    # the role definition and role assignments.
    ("terraform apply (keys)", {"/keys/create", "/keys/write/action", "/keys/read/action"}),
    ("terraform apply (roles)", {"/roleDefinitions/write/action", "/roleAssignments/write/action"}),
    # A tenant removed from tenant_keys: Terraform deletes its two key-scoped
    # role assignments (after reading them).
    ("terraform apply (remove roles)", {"/roleAssignments/read/action", "/roleAssignments/delete/action"}),
    # Every later plan refreshes those resources; the provider's Read of an
    # HSM key, rotation policy, role definition or role assignment returns
    # every error but 404, so a plan needs all three reads.
    ("terraform plan (refresh)", {"/keys/read/action", "/roleDefinitions/read/action",
                                  "/roleAssignments/read/action"}),
]
NEEDS = [(cmd, {P + a for a in actions}) for cmd, actions in NEEDS]


def runbook_rows(readme: str) -> list[tuple[str, str, str]]:
    m = re.search(r"<!-- runbook-roles -->(.*?)<!-- /runbook-roles -->", readme, re.S)
    if not m:
        return []
    rows = []
    for line in m.group(1).splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or set(cells[0]) <= {"-", " "} or cells[0] == "operation":
            continue
        rows.append(tuple(c.replace("`", "") for c in cells))
    return rows


def custom_actions(role_json: str) -> set[str]:
    return set(json.loads(role_json)["dataActions"])


def terraform_custom_actions(hsm_tf: str) -> set[str]:
    m = re.search(r'resource "azurerm_key_vault_managed_hardware_security_module_role_definition" "key_admin" \{(.*?)\n\}',
                  hsm_tf, re.S)
    if not m:
        return set()
    return set(re.findall(r'"(Microsoft\.KeyVault/managedHsm/[^"]+)"', m.group(1)))


def check(readme: str, role_json: str, hsm_tf: str) -> list[str]:
    errors = []
    custom = custom_actions(role_json)
    if custom != CUSTOM_EXACT:
        errors.append(f"{CUSTOM_ROLE}: data actions must be exactly read, write, rotate; are {sorted(custom)}")
    tf = terraform_custom_actions(hsm_tf)
    if not tf:
        errors.append("hsm.tf: no key_admin role definition")
    elif not tf <= custom:
        errors.append(f"{CUSTOM_ROLE}: Terraform grants {sorted(tf - custom)} beyond hsm-key-admin-role.json")
    if 'role_definition_id = azurerm_key_vault_managed_hardware_security_module_role_definition.key_admin.resource_manager_id' not in hsm_tf:
        errors.append("hsm.tf: the key admin group's assignments do not use the custom role")
    roles = dict(BUILT_IN)
    roles[CUSTOM_ROLE] = custom
    rows = runbook_rows(readme)
    if not rows:
        errors.append("infra/README.md: no runbook-roles table")
    for op, cmd, role in rows:
        role_name = role.split("(")[0].strip()
        if role_name not in roles:
            errors.append(f"{op}: unknown role `{role_name}`")
            continue
        needed = next((acts for prefix, acts in NEEDS if cmd.startswith(prefix)), None)
        if needed is None:
            errors.append(f"{op}: no known permissions for `{cmd}`")
            continue
        missing = needed - roles[role_name]
        if missing:
            errors.append(f"{op}: `{role_name}` lacks {sorted(missing)} for `{cmd}`")
    return errors
