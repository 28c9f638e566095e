"""The teardown runbook (infra/README.md, "Teardown without losing the
HSM"): its `terraform state rm` lines take every resource that carries
`prevent_destroy` out of the state before its `terraform destroy` (one left
in stops the destroy, "Instance cannot be destroyed"), and what it keeps
(the first `state rm`: the HSM and its backups) keeps what those need to
stay readable and managed: every vault, key, identity, storage account or
container and role a kept resource refers to, and every role assignment on
a kept resource for a kept identity or for people (a variable), else the
destroy deletes the backup account's key vault or the key administrators'
roles. Commented lines do not count. Broken copies fail."""

import re

import pytest

import infra_lib
import replacement_check as rc

TF = infra_lib.INFRA / "terraform"
README = infra_lib.INFRA / "README.md"

# What a kept resource needs kept with it, when it refers to one.
KEY_PATH = {"azurerm_key_vault", "azurerm_key_vault_key", "azurerm_user_assigned_identity", "azurerm_role_assignment",
            "azurerm_key_vault_managed_hardware_security_module_key",
            "azurerm_key_vault_managed_hardware_security_module_role_assignment",
            "azurerm_key_vault_managed_hardware_security_module_role_definition", "azurerm_storage_account",
            "azurerm_storage_container"}
ROLE_ASSIGNMENTS = {"azurerm_role_assignment", "azurerm_key_vault_managed_hardware_security_module_role_assignment"}


def refs(body) -> set[str]:
    return {f"{t}.{n}" for t, n in re.findall(r"\b(azurerm_[a-z_]+)\.([a-z0-9_]+)", str(body))}


def state_rms(readme: str) -> list[set[str]] | None:
    """The addresses of each `terraform state rm` of the section's shell
    block, in order; comment lines left out."""
    section = re.search(r"## Teardown without losing the HSM\n(.*?)\n## ", readme, re.S)
    block = section and re.search(r"```sh\n(.*?)```", section.group(1), re.S)
    if not block:
        return None
    lines = [ln for ln in block.group(1).splitlines() if not ln.lstrip().startswith("#")]
    text = "\n".join(lines).replace("\\\n", " ")
    return [{a.strip("'\"") for a in m.split()} for m in re.findall(r"terraform state rm ([^\n]*)", text)]


def teardown_problems(readme: str, resources: dict) -> list[str]:
    rms = state_rms(readme)
    if not rms:
        return ["no `terraform state rm` in the \"Teardown without losing the HSM\" shell block"]
    kept, removed = rms[0], set().union(*rms)
    errors = []
    # A count resource that exists only during a migration: its state rm is
    # a comment (a lone state rm of nothing fails).
    absent_by_default = {"azurerm_cosmosdb_account.retiring"}
    for (t, n), body in sorted(resources.items()):
        addr = f"{t}.{n}"
        if rc._lifecycle(body)["prevent_destroy"] and addr not in removed | absent_by_default:
            errors.append(f"teardown: `terraform state rm` leaves {addr} (prevent_destroy) in the state")
    by_addr = {f"{t}.{n}": b for (t, n), b in resources.items()}
    todo = [a for a in kept if a in by_addr]
    seen = set(todo)
    while todo:
        for r in sorted(refs(by_addr[todo.pop()])):
            if r in by_addr and r.split(".")[0] in KEY_PATH and r not in seen:
                seen.add(r)
                todo.append(r)
    for addr, body in by_addr.items():
        if addr.split(".")[0] in ROLE_ASSIGNMENTS and refs(body) & seen:
            principal = str(body.get("principal_id"))
            if "var." in principal or refs(principal) & seen:
                seen.add(addr)
                seen |= {r for r in refs(body) if r in by_addr and r.split(".")[0] in KEY_PATH}
    for addr in sorted(seen - kept):
        errors.append(f"teardown: {addr} is destroyed while what it serves is kept; take it out of the state "
                      "with the HSM and its backups")
    return errors


def test_the_teardown_keeps_what_it_keeps_readable_and_forgets_every_protected_resource():
    resources, _ = rc.load_tree(TF)
    assert teardown_problems(README.read_text(), resources) == []
    # The check sees the protected resources, and the kept ones.
    assert sum(rc._lifecycle(b)["prevent_destroy"] for b in resources.values()) >= 15
    assert len(state_rms(README.read_text())[0]) >= 15


@pytest.mark.parametrize("old,new,missing", [
    (" azurerm_storage_container.hsm_backup \\\n", " \\\n", "azurerm_storage_container.hsm_backup"),
    ("terraform state rm azurerm_cosmosdb_account.main azurerm_cosmosdb_sql_database.main \\\n",
     "terraform state rm azurerm_cosmosdb_account.main \\\n", "azurerm_cosmosdb_sql_database.main"),
    ("  azurerm_key_vault.kv azurerm_user_assigned_identity.hsm_backup \\\n",
     "  azurerm_user_assigned_identity.hsm_backup \\\n", "azurerm_key_vault.kv"),
    ("  'azurerm_key_vault_managed_hardware_security_module_role_assignment.key_admin' \\\n", "",
     "role_assignment.key_admin"),
    ("azurerm_role_assignment.hsm_backup_storage_key azurerm_role_assignment.hsm_backup_blob \\\n",
     "azurerm_role_assignment.hsm_backup_storage_key \\\n", "azurerm_role_assignment.hsm_backup_blob"),
    ("terraform state rm azurerm_cosmosdb_account.main", "# terraform state rm azurerm_cosmosdb_account.main",
     "azurerm_cosmosdb_account.main"),
], ids=["backup-container-left", "database-left", "backup-key-vault-destroyed", "key-admin-role-destroyed",
        "backup-writer-role-destroyed", "state-rm-commented-out"])
def test_a_stale_teardown_fails(old, new, missing):
    resources, _ = rc.load_tree(TF)
    text = README.read_text()
    assert text.count(old) == 1, old
    errors = teardown_problems(text.replace(old, new), resources)
    assert any(missing in e for e in errors), errors
