"""Every resource type, argument, block and referenced attribute in
infra/terraform and infra/terraform-cluster (the two root modules) exists in
the pinned providers' schema (offline copy in provider-schema.json), like
`terraform validate`; typos fail."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import infra_lib
import schema_check

TF = infra_lib.INFRA / "terraform"
CLUSTER = infra_lib.INFRA / "terraform-cluster"
ROOTS = (TF, CLUSTER)


def test_schema_copy_matches_pinned_providers(schema):
    versions = {p: v["version"] for p, v in schema["providers"].items()}
    for root in ROOTS:
        text = (root / "versions.tf").read_text()
        for provider, version in versions.items():
            if f"{provider} = {{" in text:
                assert f'version = "= {version}"' in text.split(f"{provider} = {{", 1)[1].split("}", 1)[0], (root, provider)
    pinned = "".join((root / "versions.tf").read_text() for root in ROOTS)
    for provider in versions:
        assert f"{provider} = {{" in pinned, f"{provider} is pinned in neither root module"
    assert not schema["missing"]


def test_schema_copy_is_current():
    """The committed copy is what the generator makes from the pinned
    bindings for the types the tree uses now."""
    nm = os.environ.get("CMK_INFRA_NODE_MODULES")
    out = subprocess.run(
        ["node", str(infra_lib.HERE / "node" / "provider-schema.mjs"), nm, *map(str, ROOTS)],
        capture_output=True, text=True, check=True, timeout=300,
    ).stdout
    committed = (infra_lib.HERE / "provider-schema.json").read_text()
    assert json.loads(out) == json.loads(committed), "regenerate: scripts/infra-check --regenerate-schema"


@pytest.mark.parametrize("root", ROOTS, ids=lambda r: r.name)
def test_tree_matches_schema(schema, root):
    assert schema_check.check_tree(root, schema) == []


BROKEN = [
    ("typo in an argument", "hsm.tf", "purge_protection_enabled   = true", "purge_protecton_enabled    = true",
     "unsupported argument or block `purge_protecton_enabled`"),
    ("unknown block", "aks.tf", "  workload_autoscaler_profile {", "  workload_autoscaler {",
     "unsupported argument or block `workload_autoscaler`"),
    ("unknown nested argument", "aks.tf", "    keda_enabled = true", "    keda = true",
     "unsupported argument or block `keda`"),
    ("unknown resource type", "storage.tf", 'resource "azurerm_storage_queue" "poison"', 'resource "azurerm_storage_queues" "poison"',
     "`azurerm_storage_queues` does not exist"),
    ("missing required argument", "cosmos.tf", '  offer_type          = "Standard"\n', "",
     "missing required argument `offer_type`"),
    ("unknown attribute in a reference", "identities.tf", "azurerm_user_assigned_identity.aks.principal_id\n",
     "azurerm_user_assigned_identity.aks.object_id\n", "has no attribute `object_id`"),
    ("unknown argument in a dynamic block", "storage.tf", "      user_assigned_identity_id = azurerm_user_assigned_identity.consumer[\"storage\"].id\n",
     "      identity_id = azurerm_user_assigned_identity.consumer[\"storage\"].id\n", "unsupported argument or block `identity_id`"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_copies_fail_the_schema(case, tree_copy, schema):
    _, file, old, new, message = case
    p = tree_copy / "terraform" / file
    text = p.read_text()
    assert old in text
    p.write_text(text.replace(old, new, 1))
    errors = schema_check.check_tree(tree_copy / "terraform", schema)
    assert any(message in e for e in errors), errors
