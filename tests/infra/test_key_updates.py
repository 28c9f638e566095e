"""Terraform never updates a key after creating it. The azurerm provider's
Update of a key sends `enabled = true` with whatever changed (azurerm
4.55.0: key_vault_managed_hardware_security_module_key_resource.go,
Update; key_vault_key_resource.go, resourceKeyVaultKeyUpdate), so an apply
that touched a key's tags (they follow the stage), dates, operations or
rotation policy would re-enable a key disabled for revocation, and fail
with 403 once the deployer's key-writing role has lapsed. Every argument
that is not ForceNew in the provider's schema must be in the key's
`ignore_changes`. Broken copies fail."""

import io

import hcl2
import pytest

import infra_lib
import replacement_check as rc

# The arguments each key resource's Update sends (its schema at v4.55.0,
# every argument without ForceNew that is not Computed only).
UPDATABLE = {
    "azurerm_key_vault_managed_hardware_security_module_key": {"key_opts", "not_before_date", "expiration_date", "tags"},
    "azurerm_key_vault_key": {"key_opts", "not_before_date", "expiration_date", "rotation_policy", "tags"},
}


def ignored(body: dict) -> set[str]:
    names = set()
    for lifecycle in body.get("lifecycle", []):
        for entry in lifecycle.get("ignore_changes", []):
            for item in entry if isinstance(entry, list) else [entry]:
                names.add(str(item).strip("${}"))
    return names


def check(tf_files: dict[str, str]) -> tuple[list[str], int]:
    """Errors, and how many key resources were checked."""
    errors, keys = [], 0
    for name, text in sorted(tf_files.items()):
        for block in hcl2.load(io.StringIO(text)).get("resource", []):
            for rtype, updatable in UPDATABLE.items():
                for key, body in block.get(rtype, {}).items():
                    keys += 1
                    missing = sorted(updatable - ignored(body))
                    if missing:
                        errors.append(f"{name}: {rtype}.{key} must ignore changes to {missing}: the provider's "
                                      "Update re-enables the key")
    return errors, keys


def tf_files() -> dict[str, str]:
    out = {}
    for d in ("terraform", "terraform-cluster"):
        out.update({f"{d}/{p.name}": p.read_text() for p in sorted((infra_lib.INFRA / d).glob("*.tf"))})
    return out


def test_no_key_is_ever_updated():
    errors, keys = check(tf_files())
    assert errors == []
    # The consumer keys, the tenant keys, and the two Key Vault keys.
    assert keys == 4


@pytest.mark.parametrize("old,new,missing", [
    ("    ignore_changes = [key_opts, tags, expiration_date, not_before_date]\n    # With",
     "    ignore_changes = [key_opts, expiration_date, not_before_date]\n    # With", "'tags'"),
    ("    ignore_changes = [key_opts, tags, expiration_date, not_before_date]\n  }\n  depends_on",
     "    ignore_changes = [expiration_date, not_before_date]\n  }\n  depends_on", "'key_opts'"),
    ("ignore_changes = [key_opts, tags, expiration_date, not_before_date, rotation_policy]",
     "ignore_changes = [key_opts, tags, expiration_date, not_before_date]", "'rotation_policy'"),
], ids=["tenant-key-tags", "consumer-key-opts", "key-vault-key-rotation-policy"])
def test_broken_copies_fail(old, new, missing):
    files = tf_files()
    text = files["terraform/hsm.tf"]
    assert text.count(old) >= 1, old
    files["terraform/hsm.tf"] = text.replace(old, new, 1)
    errors, _ = check(files)
    assert any(missing in e for e in errors), errors


def kms_key_problems(aks_tf: str) -> list[str]:
    """AKS KMS's key version is the operator's to move: the key resource's
    `id` stays the version it created (key_vault_key_resource.go, Read), so
    a bare `azurerm_key_vault_key.etcd_kms.id` could never leave it."""
    cluster = next(b["azurerm_kubernetes_cluster"]["aks"] for b in hcl2.load(io.StringIO(aks_tf))["resource"]
                   if "azurerm_kubernetes_cluster" in b)
    kms = cluster["dynamic"][0]["key_management_service"]["content"][0]
    key_id = "".join(str(rc._one(kms["key_vault_key_id"])).split())
    if key_id != "".join(EXPECTED_KMS_KEY_ID.split()):
        return [f"AKS KMS key id {key_id} is not the created version or, with etcd_kms_key_version, that "
                f"version of the key ({EXPECTED_KMS_KEY_ID})"]
    return []


# The created version while etcd_kms_key_version is null, else that version
# of the same key (as python-hcl2 writes the expression: `null` as None).
EXPECTED_KMS_KEY_ID = ("${var.etcd_kms_key_version == None ? azurerm_key_vault_key.etcd_kms.id : "
                       "\"${azurerm_key_vault_key.etcd_kms.versionless_id}/${var.etcd_kms_key_version}\"}")


def test_aks_kms_moves_by_its_variable():
    assert kms_key_problems((infra_lib.INFRA / "terraform" / "aks.tf").read_text()) == []


@pytest.mark.parametrize("replacement", [
    "azurerm_key_vault_key.etcd_kms.id",
    "(var.etcd_kms_key_version == null ? azurerm_key_vault_key.etcd_kms.id : azurerm_key_vault_key.etcd_kms.id)",
    '"${azurerm_key_vault_key.etcd_kms.id}/${var.etcd_kms_key_version}"',
], ids=["bare-id", "never-moves", "two-versions"])
def test_a_kms_key_id_that_cannot_move_or_is_malformed_fails(replacement):
    text = (infra_lib.INFRA / "terraform" / "aks.tf").read_text()
    start = text.index("      key_vault_key_id = (var.etcd_kms_key_version")
    end = text.index("\n", text.index(": \"${", start))
    broken = text[:start] + f"      key_vault_key_id = {replacement}" + text[end:]
    assert any("AKS KMS key id" in e for e in kms_key_problems(broken))
