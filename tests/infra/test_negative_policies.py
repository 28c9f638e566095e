"""Each custom policy fails on a deliberately broken copy of infra/.

A case edits one file of a copy (the edit must apply exactly once, so a
renamed attribute cannot turn a case into a no-op) and names the check and
resource that must then fail; the same pair passes on the real tree. Cases
that touch different checks share one checkov run; a group never holds two
edits aimed at the same check and resource.
"""

import re

import pytest

import infra_lib

HSM = "azurerm_key_vault_managed_hardware_security_module.hsm"
AKS = "azurerm_kubernetes_cluster.aks"

# (id, file, old, new, [(check, resource), ...])
CASES = {
    "A": [
        ("hsm-without-purge-protection", "hsm.tf",
         "  purge_protection_enabled   = true\n  soft_delete_retention_days = 90\n  # Private",
         "  purge_protection_enabled   = false\n  soft_delete_retention_days = 90\n  # Private",
         [("CKV_CMK_1", HSM)]),
        ("hsm-activated-from-vault-certificates", "hsm.tf",
         "  tags = local.tags\n\n  lifecycle {\n    prevent_destroy = true\n  }\n}\n\nresource \"azurerm_monitor_diagnostic_setting\" \"hsm\"",
         "  security_domain_key_vault_certificate_ids = [\"https://kv.vault.azure.net/certificates/c0/1\", \"https://kv.vault.azure.net/certificates/c1/1\", \"https://kv.vault.azure.net/certificates/c2/1\"]\n  security_domain_quorum                    = 2\n  tags = local.tags\n\n  lifecycle {\n    prevent_destroy = true\n  }\n}\n\nresource \"azurerm_monitor_diagnostic_setting\" \"hsm\"",
         [("CKV_CMK_11", HSM)]),
        ("hsm-key-allows-encrypt", "hsm.tf",
         'key_opts        = ["wrapKey", "unwrapKey"]\n  expiration_date = var.key_expiration_date\n  tags            = merge(local.tags, { purpose = each.value })',
         'key_opts        = ["wrapKey", "unwrapKey", "encrypt", "decrypt"]\n  expiration_date = var.key_expiration_date\n  tags            = merge(local.tags, { purpose = each.value })',
         [("CKV_CMK_2", 'azurerm_key_vault_managed_hardware_security_module_key.key["app"]')]),
        ("hsm-wide-role-assignment", "hsm.tf",
         'crypto-service-encryption-user")\n  scope              = "/keys/${azurerm_key_vault_managed_hardware_security_module_key.key[each.key].name}"',
         'crypto-service-encryption-user")\n  scope              = "/"',
         [("CKV_CMK_3", 'azurerm_key_vault_managed_hardware_security_module_role_assignment.consumer["cosmos"]')]),
        ("key-vault-role-on-the-vault", "hsm.tf",
         "scope                = azurerm_key_vault_key.hsm_backup_storage.resource_versionless_id",
         "scope                = azurerm_key_vault.kv.id",
         [("CKV_CMK_13", "azurerm_role_assignment.hsm_backup_storage_key")]),
        ("cosmos-without-cmk", "cosmos.tf",
         'managed_hsm_key_id    = var.encryption == "customer-managed" ? azurerm_key_vault_managed_hardware_security_module_key.key["cosmos"].id : null',
         "managed_hsm_key_id    = null",
         [("CKV_CMK_4", "azurerm_cosmosdb_account.main")]),
        ("storage-cmk-from-a-key-vault-key", "storage.tf",
         'managed_hsm_key_id        = azurerm_key_vault_managed_hardware_security_module_key.key["storage"].id',
         "key_vault_key_id          = azurerm_key_vault_key.hsm_backup_storage.versionless_id",
         [("CKV_CMK_5", "azurerm_storage_account.events")]),
        ("storage-without-infrastructure-encryption", "storage.tf",
         "infrastructure_encryption_enabled = true",
         "infrastructure_encryption_enabled = false",
         [("CKV_CMK_6", "azurerm_storage_account.events")]),
        ("des-key-from-key-vault", "aks.tf",
         'managed_hsm_key_id        = azurerm_key_vault_managed_hardware_security_module_key.key["disks"].id',
         "key_vault_key_id          = azurerm_key_vault_key.hsm_backup_storage.id",
         [("CKV_CMK_7", "azurerm_disk_encryption_set.disks")]),
        ("wasm-pool-without-host-encryption", "aks.tf",
         "  host_encryption_enabled = true\n  os_disk_type            = \"Managed\"",
         "  host_encryption_enabled = false\n  os_disk_type            = \"Managed\"",
         [("CKV_CMK_8", "azurerm_kubernetes_cluster_node_pool.wasm")]),
        ("aks-local-accounts", "aks.tf",
         "local_account_disabled            = true",
         "local_account_disabled            = false",
         [("CKV_CMK_9", AKS)]),
        ("aks-without-workload-identity", "aks.tf",
         "workload_identity_enabled = true",
         "workload_identity_enabled = false",
         [("CKV_CMK_10", AKS)]),
        ("aks-os-disks-on-platform-keys", "aks.tf",
         'disk_encryption_set_id = azurerm_disk_encryption_set.disks.id',
         "disk_encryption_set_id = null",
         [("CKV_CMK_12", AKS)]),
        ("backup-immutability-one-day", "backup.tf",
         "immutability_period_in_days           = var.hsm_backup_retention_days",
         "immutability_period_in_days           = 1",
         [("CKV_CMK_14", "azurerm_storage_container_immutability_policy.hsm_backup")]),
    ],
    "B": [
        ("hsm-public-network", "hsm.tf",
         "  public_network_access_enabled = length(var.bootstrap_admin_ip_ranges) > 0 ? true : false\n  network_acls {\n    default_action = length",
         "  public_network_access_enabled = true\n  network_acls {\n    default_action = length",
         [("CKV_CMK_1", HSM)]),
        ("key-vault-key-of-4096-bits", "hsm.tf",
         'name            = "hsm-backup-storage-kek"\n  key_vault_id    = azurerm_key_vault.kv.id\n  key_type        = "RSA-HSM"\n  key_size        = var.hsm_key_size',
         'name            = "hsm-backup-storage-kek"\n  key_vault_id    = azurerm_key_vault.kv.id\n  key_type        = "RSA-HSM"\n  key_size        = 4096',
         [("CKV_CMK_2", "azurerm_key_vault_key.hsm_backup_storage")]),
        ("default-pool-without-host-encryption", "aks.tf",
         "    only_critical_addons_enabled = true\n    host_encryption_enabled      = true",
         "    only_critical_addons_enabled = true\n    host_encryption_enabled      = false",
         [("CKV_CMK_8", AKS)]),
    ],
}


def apply(infra, file, old, new):
    p = infra / "terraform" / file
    text = p.read_text()
    assert text.count(old) == 1, f"{file}: the edit's anchor must occur exactly once:\n{old}"
    p.write_text(text.replace(old, new))


@pytest.fixture(scope="module")
def pristine(report_cmk):
    return infra_lib.passed(report_cmk)


@pytest.mark.parametrize("group", sorted(CASES))
def test_broken_copies_fail_their_policy(group, tree_copy, pristine):
    expected = set()
    for _, file, old, new, pairs in CASES[group]:
        apply(tree_copy, file, old, new)
        expected |= set(pairs)
    report = infra_lib.run_checkov(tree_copy, "customer-managed")
    fails = infra_lib.failed(report)
    for pair in expected:
        assert pair in pristine, f"{pair} should pass on the real tree"
        assert pair in fails, f"{pair} did not fail on the broken copy"


def test_backup_container_without_immutability_policy_fails(tree_copy):
    # Removing the policy resource entirely: the graph check finds no connection.
    p = tree_copy / "terraform" / "backup.tf"
    text = p.read_text()
    start = text.index('resource "azurerm_storage_container_immutability_policy" "hsm_backup" {')
    end = text.index("\n}\n", start) + 3
    p.write_text(text[:start] + text[end:])
    fails = infra_lib.failed(infra_lib.run_checkov(tree_copy, "customer-managed", ["CKV2_CMK_1"]))
    assert ("CKV2_CMK_1", "azurerm_storage_container.hsm_backup") in fails


# Certificate policies (CKV_CMK_15): the tree holds no Key Vault certificate
# (the security domain's custodian keys are generated offline), so the policy
# is exercised on copies that add certificates: each must get the verdict.
CERT = """
resource "azurerm_key_vault_certificate" "{name}" {{
  name         = "{name}"
  key_vault_id = azurerm_key_vault.kv.id
  certificate_policy {{
    issuer_parameters {{
      name = "Self"
    }}
    key_properties {{
      exportable = {exportable}
      key_type   = "{key_type}"
      key_size   = {key_size}
      reuse_key  = {reuse}
    }}
    secret_properties {{
      content_type = "application/x-pkcs12"
    }}
    x509_certificate_properties {{
      subject            = "CN={subject}"
      key_usage          = ["keyEncipherment", "digitalSignature"]
      validity_in_months = 12
    }}
  }}
}}
"""
CERT_CASES = [
    # (name, exportable, key_type, key_size, reuse_key, subject, verdict)
    ("exportable_rsa_hsm", "true", "RSA-HSM", 3072, "false", "tls", "FAILED"),
    ("exportable_rsa", "true", "RSA", 3072, "false", "tls", "PASSED"),
    ("hsm_not_exportable", "false", "RSA-HSM", 2048, "false", "tls", "PASSED"),
    ("rsa_1024", "false", "RSA-HSM", 1024, "false", "tls", "FAILED"),
    ("reused_key", "false", "RSA-HSM", 2048, "true", "tls", "FAILED"),
    ("custodian_in_vault", "true", "RSA", 3072, "false", "hsm security domain custodian 0", "FAILED"),
]


def test_certificate_policy_rules(tree_copy):
    p = tree_copy / "terraform" / "hsm.tf"
    p.write_text(p.read_text() + "".join(
        CERT.format(name=n, exportable=e, key_type=k, key_size=s, reuse=r, subject=sub) for n, e, k, s, r, sub, _ in CERT_CASES))
    report = infra_lib.run_checkov(tree_copy, "customer-managed", ["CKV_CMK_15"])
    fails, passes = infra_lib.failed(report), infra_lib.passed(report)
    for name, *_, verdict in CERT_CASES:
        pair = ("CKV_CMK_15", f"azurerm_key_vault_certificate.{name}")
        assert pair in (fails if verdict == "FAILED" else passes), f"{name}: expected {verdict}"


def test_cases_cover_every_custom_policy():
    covered = {c for group in CASES.values() for *_, pairs in group for c, _ in pairs} | {"CKV2_CMK_1", "CKV_CMK_15"}
    assert covered == {f"CKV_CMK_{i}" for i in range(1, 16)} | {"CKV2_CMK_1"}
