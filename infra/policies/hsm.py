"""Managed HSM: purge protection, 90-day soft delete, no public network, and
activation by its administrators from offline custodian certificates."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from checkov.common.models.enums import CheckCategories, CheckResult  # noqa: E402
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck  # noqa: E402

from _common import block, first, is_true  # noqa: E402


class HsmProtectedAndPrivate(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Managed HSM has purge protection, 90-day soft delete and no public network access",
            id="CKV_CMK_1",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["azurerm_key_vault_managed_hardware_security_module"],
        )

    def scan_resource_conf(self, conf):
        if not is_true(first(conf, "purge_protection_enabled")):
            return CheckResult.FAILED
        if first(conf, "soft_delete_retention_days") not in (90, "90"):
            return CheckResult.FAILED
        # The provider's default for public_network_access_enabled is true.
        if first(conf, "public_network_access_enabled", True) not in (False, "false"):
            return CheckResult.FAILED
        acls = block(conf, "network_acls")
        if not acls or first(acls, "default_action") != "Deny":
            return CheckResult.FAILED
        return CheckResult.PASSED


class HsmActivatedOffline(BaseResourceCheck):
    """The security domain is never downloaded by Terraform.

    With security_domain_key_vault_certificate_ids the provider activates the
    HSM inside its create call from certificates in a Key Vault (azurerm
    4.55.0 key_vault_managed_hardware_security_module_resource.go,
    securityDomainDownload), so every custodian private key sits in one vault
    whose administrators hold a full quorum, and the security domain lands in
    the state. The administrators activate it from offline custodian
    certificates instead (infra/README.md, "Activate the HSM").
    """

    def __init__(self):
        super().__init__(
            name="Managed HSM is activated offline by its administrators, not from vault-held certificates",
            id="CKV_CMK_11",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["azurerm_key_vault_managed_hardware_security_module"],
        )

    def scan_resource_conf(self, conf):
        for arg in ("security_domain_key_vault_certificate_ids", "security_domain_quorum"):
            if first(conf, arg) not in (None, [], ""):
                return CheckResult.FAILED
        # admin_object_ids (at least two security officers) is held by the
        # variable's validation; checkov cannot see a value without default.
        return CheckResult.PASSED


check = HsmProtectedAndPrivate()
check_offline = HsmActivatedOffline()
