"""Cosmos DB and Storage are encrypted with customer-held keys through a
user-assigned identity; Storage adds infrastructure (double) encryption."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from checkov.common.models.enums import CheckCategories, CheckResult  # noqa: E402
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck  # noqa: E402

from _common import HSM_KEY, KV_KEY, block, first, is_true, refers  # noqa: E402


def user_assigned(conf):
    ident = block(conf, "identity")
    return bool(ident) and first(ident, "type") == "UserAssigned"


class CosmosUsesHsmKey(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Cosmos DB account is encrypted with a Managed HSM key through a user-assigned identity",
            id="CKV_CMK_4",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["azurerm_cosmosdb_account"],
        )

    def scan_resource_conf(self, conf):
        if not refers(first(conf, "managed_hsm_key_id"), HSM_KEY):
            return CheckResult.FAILED
        if first(conf, "key_vault_key_id") not in (None, "None"):
            return CheckResult.FAILED
        if not user_assigned(conf):
            return CheckResult.FAILED
        if not str(first(conf, "default_identity_type", "")).startswith("UserAssignedIdentity="):
            return CheckResult.FAILED
        return CheckResult.PASSED


class StorageUsesCustomerKey(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Storage account is encrypted with a customer-held RSA-HSM key through a user-assigned identity",
            id="CKV_CMK_5",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["azurerm_storage_account"],
        )

    def scan_resource_conf(self, conf):
        cmk = block(conf, "customer_managed_key")
        if not cmk or not user_assigned(conf):
            return CheckResult.FAILED
        if not first(cmk, "user_assigned_identity_id"):
            return CheckResult.FAILED
        hsm, kv = first(cmk, "managed_hsm_key_id"), first(cmk, "key_vault_key_id")
        # The HSM backup account is the one place a Key Vault key is right: it
        # must stay readable after losing the HSM it backs up.
        if refers(hsm, HSM_KEY):
            return CheckResult.PASSED
        if refers(kv, KV_KEY) and conf.get("__address__", "").endswith(".hsm_backup"):
            return CheckResult.PASSED
        return CheckResult.FAILED


class StorageHardened(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Storage account has infrastructure encryption, account-key queues/tables, TLS 1.2 and no shared key",
            id="CKV_CMK_6",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["azurerm_storage_account"],
        )

    def scan_resource_conf(self, conf):
        if not is_true(first(conf, "infrastructure_encryption_enabled")):
            return CheckResult.FAILED
        if first(conf, "queue_encryption_key_type") != "Account" or first(conf, "table_encryption_key_type") != "Account":
            return CheckResult.FAILED
        if first(conf, "min_tls_version") != "TLS1_2":
            return CheckResult.FAILED
        if first(conf, "shared_access_key_enabled", True) not in (False, "false"):
            return CheckResult.FAILED
        return CheckResult.PASSED


check_cosmos = CosmosUsesHsmKey()
check_storage = StorageUsesCustomerKey()
check_hardened = StorageHardened()
