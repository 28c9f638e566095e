"""Keys: RSA-HSM of 2048 or 3072 bits (the reference design's sizes),
wrapKey/unwrapKey only, with an expiry."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from checkov.common.models.enums import CheckCategories, CheckResult  # noqa: E402
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck  # noqa: E402

from _common import first  # noqa: E402

ALLOWED_OPS = {"wrapKey", "unwrapKey"}
SIZES = {2048, 3072}


class KeyWrapUnwrapOnly(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Key is RSA-HSM (2048 or 3072 bits) and allows wrapKey/unwrapKey only",
            id="CKV_CMK_2",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=[
                "azurerm_key_vault_managed_hardware_security_module_key",
                "azurerm_key_vault_key",
            ],
        )

    def scan_resource_conf(self, conf):
        ops = first(conf, "key_opts")
        if not isinstance(ops, list) or not ops or not set(ops) <= ALLOWED_OPS:
            return CheckResult.FAILED
        if first(conf, "key_type") != "RSA-HSM":
            return CheckResult.FAILED
        size = first(conf, "key_size")
        try:
            if int(size) not in SIZES:
                return CheckResult.FAILED
        except (TypeError, ValueError):
            return CheckResult.FAILED
        if first(conf, "expiration_date") in (None, "", "None"):
            return CheckResult.FAILED
        return CheckResult.PASSED


check = KeyWrapUnwrapOnly()
