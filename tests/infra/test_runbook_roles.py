"""Every Managed HSM operation in the runbook is permitted by the role the
runbook names for it; the key administrators' custom role is exactly read,
write and rotate (role_check.py). Broken copies fail."""

import pytest

import infra_lib
import role_check

README = infra_lib.INFRA / "README.md"
ROLE_JSON = infra_lib.INFRA / "terraform" / "hsm-key-admin-role.json"
HSM_TF = infra_lib.INFRA / "terraform" / "hsm.tf"


def _check(readme=None, role_json=None, hsm_tf=None):
    return role_check.check(readme or README.read_text(), role_json or ROLE_JSON.read_text(), hsm_tf or HSM_TF.read_text())


def test_runbook_operations_are_permitted():
    assert _check() == []


def test_the_table_covers_the_operations_that_matter():
    cmds = " ".join(cmd for _, cmd, _ in role_check.runbook_rows(README.read_text()))
    for needed in ("security-domain download", "key rotate", "key set-attributes", "backup start", "restore start",
                   "security-domain upload", "terraform apply (keys)", "terraform apply (roles)",
                   "terraform plan (refresh)", "key delete", "key list-deleted", "terraform apply (remove roles)"):
        assert needed in cmds, needed


def _swap(text, old, new):
    assert text.count(old) >= 1, old
    return text.replace(old, new)


BROKEN = [
    ("restore with the backup role", "readme", "| `az keyvault restore start` | Managed HSM Restore", "| `az keyvault restore start` | Managed HSM Backup",
     "`Managed HSM Backup` lacks"),
    ("rotate as crypto officer", "readme", "| `az keyvault key rotate` | cmk-ingest Key Administrator", "| `az keyvault key rotate` | Managed HSM Crypto Officer",
     "`Managed HSM Crypto Officer` lacks"),
    ("keys created as administrator", "readme", "| `terraform apply (keys)` | Managed HSM Crypto User", "| `terraform apply (keys)` | Managed HSM Administrator",
     "`Managed HSM Administrator` lacks"),
    ("plan with the backup role", "readme", "| `terraform plan (refresh)` | Managed HSM Crypto Auditor",
     "| `terraform plan (refresh)` | Managed HSM Backup", "`Managed HSM Backup` lacks"),
    ("tenant key deleted by the key admins", "readme", "| `az keyvault key delete` | Managed HSM Crypto User (at /keys/<tenant key>)",
     "| `az keyvault key delete` | cmk-ingest Key Administrator", "`cmk-ingest Key Administrator` lacks"),
    ("deleted keys listed by a crypto user", "readme", "| `az keyvault key list-deleted` | Managed HSM Crypto Officer",
     "| `az keyvault key list-deleted` | Managed HSM Crypto User", "`Managed HSM Crypto User` lacks"),
    ("custom role without rotate", "json", '    "Microsoft.KeyVault/managedHsm/keys/write/action",\n    "Microsoft.KeyVault/managedHsm/keys/rotate/action"',
     '    "Microsoft.KeyVault/managedHsm/keys/write/action"', "must be exactly read, write, rotate"),
    ("custom role may grant roles", "json", '"Microsoft.KeyVault/managedHsm/keys/rotate/action"',
     '"Microsoft.KeyVault/managedHsm/keys/rotate/action",\n    "Microsoft.KeyVault/managedHsm/roleAssignments/write/action"',
     "must be exactly read, write, rotate"),
    ("terraform grants unwrap to key admins", "tf", '      "Microsoft.KeyVault/managedHsm/keys/write/action",\n    ]',
     '      "Microsoft.KeyVault/managedHsm/keys/write/action",\n      "Microsoft.KeyVault/managedHsm/keys/unwrap/action",\n    ]',
     "beyond hsm-key-admin-role.json"),
    ("key admins back on crypto officer", "tf",
     "role_definition_id = azurerm_key_vault_managed_hardware_security_module_role_definition.key_admin.resource_manager_id",
     'role_definition_id = "/Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/515eb02d-2335-4d2d-92f2-b1cbdf9c3778"',
     "do not use the custom role"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_copies_fail(case):
    _, target, old, new, message = case
    readme, role_json, hsm_tf = README.read_text(), ROLE_JSON.read_text(), HSM_TF.read_text()
    if target == "readme":
        readme = _swap(readme, old, new)
    elif target == "json":
        role_json = _swap(role_json, old, new)
    else:
        hsm_tf = _swap(hsm_tf, old, new)
    errors = role_check.check(readme, role_json, hsm_tf)
    assert any(message in e for e in errors), errors
