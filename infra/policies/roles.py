"""Role assignments on keys are never broader than one key.

Managed HSM local RBAC: every assignment is scoped to /keys/<name>, except the
Managed HSM Backup role, which the service grants at "/" only (it allows full
backup and restore, no key operation). Azure RBAC on Key Vault: the Key Vault
crypto roles are assigned on a key, never on the vault or wider.
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(__file__))

from checkov.common.models.enums import CheckCategories, CheckResult  # noqa: E402
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck  # noqa: E402

from _common import KV_KEY, first, refers  # noqa: E402

BACKUP_ROLE = "7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8"
KEY_SCOPE = re.compile(r"^/keys/[^/]+$")


class HsmRoleScopedToKey(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Managed HSM role assignment is scoped to a single key",
            id="CKV_CMK_3",
            categories=[CheckCategories.IAM],
            supported_resources=["azurerm_key_vault_managed_hardware_security_module_role_assignment"],
        )

    def scan_resource_conf(self, conf):
        scope = first(conf, "scope")
        role = str(first(conf, "role_definition_id", ""))
        if role.rstrip("/").endswith(BACKUP_ROLE):
            return CheckResult.PASSED if scope == "/" else CheckResult.FAILED
        if not isinstance(scope, str):
            return CheckResult.FAILED
        # "/keys/${azurerm_..._key.key["x"].name}" renders with the reference inline.
        scope = scope.replace("${", "").replace("}", "")
        return CheckResult.PASSED if KEY_SCOPE.match(scope) or re.match(r"^/keys/azurerm_key_vault_managed_hardware_security_module_key\.[^/]+\.name$", scope) else CheckResult.FAILED


class KeyVaultCryptoRoleOnKey(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Key Vault crypto role assignment is scoped to a single key",
            id="CKV_CMK_13",
            categories=[CheckCategories.IAM],
            supported_resources=["azurerm_role_assignment"],
        )

    def scan_resource_conf(self, conf):
        role = str(first(conf, "role_definition_name", "") or "")
        if not (role.startswith("Key Vault Crypto") or role.startswith("Managed HSM")):
            return CheckResult.PASSED
        return CheckResult.PASSED if refers(first(conf, "scope"), KV_KEY) else CheckResult.FAILED


check = HsmRoleScopedToKey()
check_kv = KeyVaultCryptoRoleOnKey()
