"""AKS: node disks under the HSM key, encryption at host on every pool, Entra
ID only (no local accounts), OIDC issuer and workload identity."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from checkov.common.models.enums import CheckCategories, CheckResult  # noqa: E402
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck  # noqa: E402

from _common import HSM_KEY, block, first, is_true, refers  # noqa: E402


class DiskEncryptionSetHsmKey(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Disk Encryption Set uses a Managed HSM key through a user-assigned identity",
            id="CKV_CMK_7",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["azurerm_disk_encryption_set"],
        )

    def scan_resource_conf(self, conf):
        if not refers(first(conf, "managed_hsm_key_id"), HSM_KEY):
            return CheckResult.FAILED
        if first(conf, "key_vault_key_id") not in (None, "None"):
            return CheckResult.FAILED
        ident = block(conf, "identity")
        if not ident or first(ident, "type") != "UserAssigned":
            return CheckResult.FAILED
        return CheckResult.PASSED


class EncryptionAtHostEveryPool(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Every AKS node pool has encryption at host",
            id="CKV_CMK_8",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["azurerm_kubernetes_cluster", "azurerm_kubernetes_cluster_node_pool"],
        )

    def scan_resource_conf(self, conf):
        pool = block(conf, "default_node_pool") if "default_node_pool" in conf else conf
        if "default_node_pool" not in conf and "kubernetes_cluster_id" not in conf:
            return CheckResult.FAILED  # a cluster without its default pool block
        return CheckResult.PASSED if is_true(first(pool, "host_encryption_enabled")) else CheckResult.FAILED


class AksEntraOnly(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="AKS has local accounts disabled and Entra ID with Azure RBAC",
            id="CKV_CMK_9",
            categories=[CheckCategories.IAM],
            supported_resources=["azurerm_kubernetes_cluster"],
        )

    def scan_resource_conf(self, conf):
        if not is_true(first(conf, "local_account_disabled")):
            return CheckResult.FAILED
        aad = block(conf, "azure_active_directory_role_based_access_control")
        if not aad or not is_true(first(aad, "azure_rbac_enabled")):
            return CheckResult.FAILED
        return CheckResult.PASSED


class AksWorkloadIdentity(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="AKS has the OIDC issuer and workload identity enabled",
            id="CKV_CMK_10",
            categories=[CheckCategories.IAM],
            supported_resources=["azurerm_kubernetes_cluster"],
        )

    def scan_resource_conf(self, conf):
        ok = is_true(first(conf, "oidc_issuer_enabled")) and is_true(first(conf, "workload_identity_enabled"))
        return CheckResult.PASSED if ok else CheckResult.FAILED


class AksOsDisksUseDes(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="AKS node OS disks use the customer-key Disk Encryption Set",
            id="CKV_CMK_12",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["azurerm_kubernetes_cluster"],
        )

    def scan_resource_conf(self, conf):
        ok = refers(first(conf, "disk_encryption_set_id"), "azurerm_disk_encryption_set.")
        return CheckResult.PASSED if ok else CheckResult.FAILED


check_des = DiskEncryptionSetHsmKey()
check_host = EncryptionAtHostEveryPool()
check_entra = AksEntraOnly()
check_wi = AksWorkloadIdentity()
check_osdisk = AksOsDisksUseDes()
