"""The azurerm provider's `features` block: only blocks and flags azurerm
4.55.0 has, and no purge of soft-deleted key material on destroy. Every
purge flag defaults to true in that version (internal/provider/features.go),
and there is no `managed_hsm` features block (the Managed HSM flags are in
`key_vault`): an unknown block fails `terraform init` before anything
applies. And `storage.data_plane_available = false`: with it on (the
default) the storage account's Read fetches queue and static-website
properties over the data plane (storage_account_resource.go at v4.55.0,
`if !features.FivePointOh() && dataPlaneAvailable`) and fails on the 403 of
an account with public access off. Broken copies fail."""

import hcl2
import pytest

import infra_lib

# internal/provider/features.go at v4.55.0: the features blocks, and the
# key_vault block's flags.
FEATURE_BLOCKS = {"api_management", "app_configuration", "application_insights", "cognitive_account", "key_vault",
                  "log_analytics_workspace", "template_deployment", "virtual_machine", "virtual_machine_scale_set",
                  "resource_group", "recovery_services_vaults", "managed_disk", "storage", "subscription",
                  "postgresql_flexible_server", "machine_learning", "recovery_service", "netapp", "databricks_workspace"}
KEY_VAULT_FLAGS = {
    "purge_soft_delete_on_destroy", "purge_soft_deleted_certificates_on_destroy", "purge_soft_deleted_keys_on_destroy",
    "purge_soft_deleted_secrets_on_destroy", "purge_soft_deleted_hardware_security_modules_on_destroy",
    "purge_soft_deleted_hardware_security_module_keys_on_destroy", "recover_soft_deleted_certificates",
    "recover_soft_deleted_key_vaults", "recover_soft_deleted_keys", "recover_soft_deleted_secrets",
    "recover_soft_deleted_hardware_security_module_keys",
}
PURGE = {f for f in KEY_VAULT_FLAGS if f.startswith("purge_")}


def check(versions_tf: str) -> list[str]:
    import io
    doc = hcl2.load(io.StringIO(versions_tf))
    azurerm = next(p["azurerm"] for p in doc["provider"] if "azurerm" in p)
    features = azurerm["features"][0]
    errors = []
    for block in features:
        if block.startswith("__"):
            continue
        if block not in FEATURE_BLOCKS:
            errors.append(f"features: azurerm 4.55.0 has no `{block}` block")
    kv = (features.get("key_vault") or [{}])[0]
    for flag, value in kv.items():
        if flag.startswith("__"):
            continue
        if flag not in KEY_VAULT_FLAGS:
            errors.append(f"features.key_vault: azurerm 4.55.0 has no `{flag}`")
    for flag in sorted(PURGE):
        value = kv.get(flag)
        value = value[0] if isinstance(value, list) else value
        if value is not False:
            errors.append(f"features.key_vault.{flag} must be false (defaults to true)")
    storage = (features.get("storage") or [{}])[0]
    dpa = storage.get("data_plane_available")
    dpa = dpa[0] if isinstance(dpa, list) else dpa
    if dpa is not False:
        errors.append("features.storage.data_plane_available must be false (defaults to true: every storage "
                      "account Read then reads queue properties over the data plane and fails on 403)")
    return errors


def test_features_purge_nothing():
    assert check((infra_lib.INFRA / "terraform" / "versions.tf").read_text()) == []


@pytest.mark.parametrize("old,new,message", [
    ("      purge_soft_deleted_hardware_security_module_keys_on_destroy = false\n", "",
     "purge_soft_deleted_hardware_security_module_keys_on_destroy must be false"),
    ("purge_soft_deleted_keys_on_destroy                          = false",
     "purge_soft_deleted_keys_on_destroy                          = true", "purge_soft_deleted_keys_on_destroy must be false"),
    ("    resource_group {", "    managed_hsm {\n      purge_soft_delete_on_destroy = false\n    }\n    resource_group {",
     "no `managed_hsm` block"),
    ("      data_plane_available = false\n", "", "data_plane_available must be false"),
    ("data_plane_available = false", "data_plane_available = true", "data_plane_available must be false"),
], ids=["hsm-key-flag-missing", "key-purge-on", "managed-hsm-block", "storage-data-plane-default",
        "storage-data-plane-on"])
def test_broken_copies_fail(old, new, message):
    text = (infra_lib.INFRA / "terraform" / "versions.tf").read_text()
    assert text.count(old) == 1
    errors = check(text.replace(old, new))
    assert any(message in e for e in errors), errors


# storage_account_resource.go at v4.55.0, CustomizeDiff: with
# data_plane_available = false, a storage account whose configuration has
# either block fails every plan ("cannot configure 'queue_properties' when
# the Provider Feature 'data_plane_available' is set to 'false'").
DATA_PLANE_BLOCKS = ("queue_properties", "static_website")


def data_plane_blocks(tf_files: dict[str, str]) -> list[str]:
    """Storage accounts that configure a block the provider refuses with
    `data_plane_available = false`, which versions.tf sets."""
    import io
    errors = []
    for name, text in sorted(tf_files.items()):
        for block in hcl2.load(io.StringIO(text)).get("resource", []):
            for account, body in block.get("azurerm_storage_account", {}).items():
                for key in DATA_PLANE_BLOCKS:
                    if body.get(key):
                        errors.append(f"{name}: azurerm_storage_account.{account} sets `{key}`, refused at plan "
                                      "time with features.storage.data_plane_available = false")
    return errors


def tf_files() -> dict[str, str]:
    return {p.name: p.read_text() for p in sorted((infra_lib.INFRA / "terraform").glob("*.tf"))}


def test_no_storage_account_sets_what_the_provider_refuses_without_the_data_plane():
    assert data_plane_blocks(tf_files()) == []


@pytest.mark.parametrize("file,block", [
    ("backup.tf", "  queue_properties {\n    logging {\n      delete = true\n      read = true\n      write = true\n"
                  "      version = \"1.0\"\n      retention_policy_days = 30\n    }\n  }\n"),
    ("storage.tf", "  static_website {\n    index_document = \"index.html\"\n  }\n"),
], ids=["queue-properties-on-the-backup-account", "static-website-on-the-events-account"])
def test_a_data_plane_block_fails_the_check(file, block):
    files = tf_files()
    anchor = "  sas_policy {\n" if file == "backup.tf" else "  min_tls_version"
    assert files[file].count(anchor) >= 1
    files[file] = files[file].replace(anchor, block + anchor, 1)
    errors = data_plane_blocks(files)
    assert any(f"sets `{block.split()[0]}`" in e and file in e for e in errors), errors
