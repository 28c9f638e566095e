"""Key Vault certificate policies that Key Vault accepts and that keep
private keys where they belong.

- exportable only with key type RSA or EC: "Exportable keys are allowed only
  with RSA and EC. HSM keys are non-exportable"
  (learn.microsoft.com/azure/key-vault/certificates/about-certificates,
  "Exportable or non-exportable key"); a policy with exportable = true and
  RSA-HSM / EC-HSM is refused when the certificate is created;
- RSA keys of 2048, 3072 or 4096 bits (the provider's and the service's sizes);
- no key reuse on renewal (a renewed certificate gets a new key pair);
- a self-issued certificate for the HSM's security domain is not made here at
  all: its custodian keys are generated offline (infra/README.md, "Activate
  the HSM"), so a certificate whose subject names a security-domain custodian
  fails.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from checkov.common.models.enums import CheckCategories, CheckResult  # noqa: E402
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck  # noqa: E402

from _common import block, first, is_true  # noqa: E402

EXPORTABLE_TYPES = {"RSA", "EC"}
RSA_SIZES = {2048, 3072, 4096}


class CertificatePolicyAccepted(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Key Vault certificate: exportable only with RSA/EC, RSA 2048/3072/4096, no key reuse, no security-domain custodian keys",
            id="CKV_CMK_15",
            categories=[CheckCategories.ENCRYPTION],
            supported_resources=["azurerm_key_vault_certificate"],
        )

    def scan_resource_conf(self, conf):
        policy = block(conf, "certificate_policy")
        if policy is None:
            # An imported certificate (certificate block) carries its own key.
            return CheckResult.PASSED if block(conf, "certificate") is not None else CheckResult.FAILED
        props = block(policy, "key_properties")
        if props is None:
            return CheckResult.FAILED
        key_type = str(first(props, "key_type", ""))
        if is_true(first(props, "exportable")) and key_type not in EXPORTABLE_TYPES:
            return CheckResult.FAILED
        if key_type in ("RSA", "RSA-HSM"):
            try:
                if int(first(props, "key_size")) not in RSA_SIZES:
                    return CheckResult.FAILED
            except (TypeError, ValueError):
                return CheckResult.FAILED
        if is_true(first(props, "reuse_key")):
            return CheckResult.FAILED
        x509 = block(policy, "x509_certificate_properties") or {}
        subject = str(first(x509, "subject", "")).lower()
        if "security domain" in subject or "security-domain" in subject:
            return CheckResult.FAILED
        return CheckResult.PASSED


check = CertificatePolicyAccepted()
