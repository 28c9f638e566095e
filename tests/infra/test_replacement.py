"""The stage switch, and closing the bootstrap, replace nothing that holds
data without protection (replacement_check.py keeps the ForceNew list with
its provider-source citation). Broken copies fail."""

import pytest

import infra_lib
import replacement_check as rc

TF = infra_lib.INFRA / "terraform"
SWITCHES = [
    # Stage one -> stage two (infra/README.md, "Stage switch").
    ("microsoft-managed", {}, "customer-managed", {}),
    # Closing the bootstrap (bootstrap_admin_ip_ranges back to []).
    ("customer-managed", {"bootstrap_admin_ip_ranges": ["203.0.113.7/32"]}, "customer-managed", {}),
    ("microsoft-managed", {"bootstrap_admin_ip_ranges": ["203.0.113.7/32"]}, "microsoft-managed", {}),
]


def test_no_unprotected_replacement():
    assert rc.check(TF, SWITCHES) == []


def test_the_stage_switch_stops_at_the_cosmos_account_only():
    """Storage and the cluster switch in place; the Cosmos DB account would
    be replaced (managed_hsm_key_id is ForceNew), so its prevent_destroy stops
    the plan and the switch is the documented migration."""
    resources, defaults = rc.load_tree(TF)
    before = rc.stage_vars(TF, defaults, "microsoft-managed")
    after = rc.stage_vars(TF, defaults, "customer-managed")
    out = rc.replaced(resources, before, after)
    assert set(out) == {("azurerm_cosmosdb_account", "main")}, out
    assert any(w.startswith("managed_hsm_key_id") for w in out[("azurerm_cosmosdb_account", "main")])


def test_force_new_list_names_real_arguments(schema):
    for rtype, attrs in rc.FORCE_NEW.items():
        s = schema["resource"].get(rtype)
        assert s is not None, f"{rtype} is not used by the tree (or missing from the schema copy)"
        for attr in attrs:
            cur = s
            segs = attr.split(".")
            for i, seg in enumerate(segs):
                if i < len(segs) - 1:
                    assert seg in cur["blocks"], f"{rtype}.{attr}"
                    cur = cur["blocks"][seg]["block"]
                else:
                    assert seg in cur["attributes"] or seg in cur["blocks"], f"{rtype}.{attr}"


BROKEN = [
    ("cosmos account unprotected", [("cosmos.tf", "    prevent_destroy = true\n    # During the migration", "    # During the migration")],
     "azurerm_cosmosdb_account.main would be replaced without protection: managed_hsm_key_id"),
    ("cluster disks by stage, unprotected", [
        ("aks.tf", "disk_encryption_set_id = azurerm_disk_encryption_set.disks.id",
         'disk_encryption_set_id = var.encryption == "customer-managed" ? azurerm_disk_encryption_set.disks.id : null'),
        ("aks.tf", "  lifecycle {\n    prevent_destroy = true\n  }\n\n  depends_on = [\n    azurerm_role_assignment.aks_network,", "  depends_on = [\n    azurerm_role_assignment.aks_network,")],
     "azurerm_kubernetes_cluster.aks would be replaced without protection: disk_encryption_set_id"),
    ("storage ForceNew by stage, unprotected", [
        ("storage.tf", "infrastructure_encryption_enabled = true", 'infrastructure_encryption_enabled = var.encryption == "customer-managed"'),
        ("storage.tf", "  lifecycle {\n    prevent_destroy = true\n  }\n\n  depends_on = [azurerm_key_vault_managed_hardware_security_module_role_assignment.consumer]\n}\n\nresource \"azurerm_storage_queue\"",
         "  depends_on = [azurerm_key_vault_managed_hardware_security_module_role_assignment.consumer]\n}\n\nresource \"azurerm_storage_queue\"")],
     "azurerm_storage_account.events would be replaced without protection: infrastructure_encryption_enabled"),
    ("a queue replaced by stage", [("storage.tf", '  name               = "events"\n', '  name               = var.encryption == "customer-managed" ? "events-cmk" : "events"\n'),
                                   ("storage.tf", 'storage_account_id = azurerm_storage_account.events.id\n\n  lifecycle {\n    # Holds data: tests/infra/replacement_check.py ALWAYS_PROTECTED.\n    prevent_destroy = true\n  }\n}\n\nresource "azurerm_storage_queue" "poison"',
                                    'storage_account_id = azurerm_storage_account.events.id\n}\n\nresource "azurerm_storage_queue" "poison"')],
     "azurerm_storage_queue.events would be replaced without protection: name"),
    ("cosmos database without prevent_destroy", [("cosmos.tf", 'account_name        = azurerm_cosmosdb_account.main.name\n\n  lifecycle {\n    # Holds data: tests/infra/replacement_check.py ALWAYS_PROTECTED.\n    prevent_destroy = true\n  }\n}\n\n# The component writes',
                                                 'account_name        = azurerm_cosmosdb_account.main.name\n}\n\n# The component writes')],
     "azurerm_cosmosdb_sql_database.main: holds data and has no lifecycle prevent_destroy"),
    ("backup blob container without prevent_destroy", [("backup.tf", 'container_access_type = "private"\n\n  lifecycle {\n    # Holds data: tests/infra/replacement_check.py ALWAYS_PROTECTED.\n    prevent_destroy = true\n  }\n}\n\nresource "azurerm_storage_container_immutability_policy"',
                                                       'container_access_type = "private"\n}\n\nresource "azurerm_storage_container_immutability_policy"')],
     "azurerm_storage_container.hsm_backup: holds data and has no lifecycle prevent_destroy"),
    ("backup account without prevent_destroy", [("backup.tf", "  lifecycle {\n    prevent_destroy = true\n  }\n  depends_on = [azurerm_role_assignment.hsm_backup_storage_key]", "  depends_on = [azurerm_role_assignment.hsm_backup_storage_key]")],
     "azurerm_storage_account.hsm_backup: holds data and has no lifecycle prevent_destroy"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_copies_fail(case, tree_copy):
    _, edits, message = case
    for file, old, new in edits:
        p = tree_copy / "terraform" / file
        text = p.read_text()
        assert text.count(old) == 1, f"{file}: anchor must occur once: {old!r}"
        p.write_text(text.replace(old, new))
    errors = rc.check(tree_copy / "terraform", SWITCHES)
    assert any(message in e for e in errors), errors
