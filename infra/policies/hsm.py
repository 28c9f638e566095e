"""Managed HSM: purge protection, 90-day soft delete, no public network, and
security domain activation with at least three certificates and a quorum."""
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


class HsmSecurityDomainQuorum(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Managed HSM is activated with at least 3 security domain certificates and a quorum of at least 2",
            id="CKV_CMK_11",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["azurerm_key_vault_managed_hardware_security_module"],
        )

    def scan_resource_conf(self, conf):
        certs = first(conf, "security_domain_key_vault_certificate_ids")
        quorum = first(conf, "security_domain_quorum")
        if certs is None or quorum is None:
            return CheckResult.FAILED
        try:
            quorum = int(quorum)
        except (TypeError, ValueError):
            return CheckResult.FAILED
        # A splat over a counted certificate resource stays a reference; its
        # count is held to >= 3 by the variable's validation.
        if isinstance(certs, list):
            if len(certs) < 3 and not all(isinstance(c, str) and "[*]" in c for c in certs):
                return CheckResult.FAILED
            if all(isinstance(c, str) and "[*]" not in c for c in certs) and quorum > len(certs):
                return CheckResult.FAILED
        elif not (isinstance(certs, str) and "[*]" in certs):
            return CheckResult.FAILED
        return CheckResult.PASSED if quorum >= 2 else CheckResult.FAILED


check = HsmProtectedAndPrivate()
check_quorum = HsmSecurityDomainQuorum()
