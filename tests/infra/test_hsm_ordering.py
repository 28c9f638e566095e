"""Every Managed HSM data-plane resource waits for the HSM's network path.

The provider creates and reads HSM keys, rotation policies, role definitions
and role assignments over the HSM's data plane (https://<hsm>.managedhsm.azure.net),
which after the bootstrap is reachable only through the private endpoint and
its private DNS zone link. Terraform does not know that: without an explicit
`depends_on` it may create them in parallel with the endpoint and fail with a
name-resolution or 403 error. Broken copies fail."""

import io

import hcl2
import pytest

import infra_lib

DATA_PLANE = (
    "azurerm_key_vault_managed_hardware_security_module_key",
    "azurerm_key_vault_managed_hardware_security_module_key_rotation_policy",
    "azurerm_key_vault_managed_hardware_security_module_role_assignment",
    "azurerm_key_vault_managed_hardware_security_module_role_definition",
)
NETWORK_PATH = ("azurerm_private_endpoint.hsm", "azurerm_private_dns_zone_virtual_network_link.link")


def check(tf_dir) -> list[str]:
    errors, seen = [], 0
    for f in sorted(tf_dir.glob("*.tf")):
        doc = hcl2.load(io.StringIO(f.read_text()))
        for block in doc.get("resource", []):
            for rtype, instances in block.items():
                if rtype not in DATA_PLANE:
                    continue
                for name, body in instances.items():
                    seen += 1
                    deps = " ".join(str(d) for d in body.get("depends_on", []))
                    missing = [p for p in NETWORK_PATH if p not in deps]
                    if missing:
                        errors.append(f"{f.name}: {rtype}.{name} does not depend on {', '.join(missing)}")
    if not seen:
        errors.append("no Managed HSM data-plane resource found")
    return errors


def test_hsm_data_plane_waits_for_the_network_path():
    assert check(infra_lib.INFRA / "terraform") == []


BROKEN = [
    ("backup role without the endpoint", "backup.tf",
     "  depends_on         = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]\n}\n\n# The daily backup",
     "}\n\n# The daily backup", "hsm_backup does not depend on"),
    ("rotation policy without the dns link", "hsm.tf",
     "key[each.key].id\n  time_after_creation = var.key_rotation_after\n  expire_after        = var.key_expire_after\n"
     "  depends_on          = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]",
     "key[each.key].id\n  time_after_creation = var.key_rotation_after\n  expire_after        = var.key_expire_after\n"
     "  depends_on          = [azurerm_private_endpoint.hsm]", "does not depend on azurerm_private_dns_zone_virtual_network_link.link"),
    ("tenant key role without the endpoint", "hsm.tf",
     'consumer["app"].principal_id\n  depends_on         = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]',
     'consumer["app"].principal_id\n  depends_on         = [azurerm_private_dns_zone_virtual_network_link.link]',
     "tenant_app does not depend on"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_copies_fail(case, tree_copy):
    _, file, old, new, message = case
    p = tree_copy / "terraform" / file
    text = p.read_text()
    assert text.count(old) == 1, old
    p.write_text(text.replace(old, new))
    errors = check(tree_copy / "terraform")
    assert any(message in e for e in errors), errors
