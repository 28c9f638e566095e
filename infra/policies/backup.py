"""The HSM backup container's immutability policy keeps blobs for at least a week."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from checkov.common.models.enums import CheckCategories, CheckResult  # noqa: E402
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck  # noqa: E402

from _common import first, refers  # noqa: E402


class BackupImmutabilityPeriod(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Container immutability policy retains blobs for at least 7 days",
            id="CKV_CMK_14",
            categories=[CheckCategories.BACKUP_AND_RECOVERY],
            supported_resources=["azurerm_storage_container_immutability_policy"],
        )

    def scan_resource_conf(self, conf):
        try:
            days = int(first(conf, "immutability_period_in_days"))
        except (TypeError, ValueError):
            return CheckResult.FAILED
        if not refers(first(conf, "storage_container_resource_manager_id"), "azurerm_storage_container."):
            return CheckResult.FAILED
        return CheckResult.PASSED if days >= 7 else CheckResult.FAILED


check = BackupImmutabilityPeriod()
