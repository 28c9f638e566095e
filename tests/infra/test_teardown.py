"""The teardown runbook (infra/README.md, "Teardown without losing the
HSM") takes every resource that carries `prevent_destroy` out of the state
before its `terraform destroy`: one it leaves in stops the destroy
("Instance cannot be destroyed"), and one that holds backups would
otherwise be planned for deletion. Broken copies fail."""

import re

import pytest

import infra_lib
import replacement_check as rc

TF = infra_lib.INFRA / "terraform"
README = infra_lib.INFRA / "README.md"


def teardown_problems(readme: str, resources: dict) -> list[str]:
    section = re.search(r"## Teardown without losing the HSM\n(.*?)\n## ", readme, re.S)
    if not section:
        return ["no \"Teardown without losing the HSM\" section"]
    removed = set()
    for block in re.findall(r"terraform state rm ((?:[^\n]*\\\n)*[^\n]*)", section.group(1)):
        for addr in block.replace("\\\n", " ").split():
            removed.add(addr.strip("'\""))
    protected = sorted(f"{t}.{n}" for (t, n), body in resources.items() if rc._lifecycle(body)["prevent_destroy"])
    return [f"teardown: `terraform state rm` leaves {addr} (prevent_destroy) in the state"
            for addr in protected if addr not in removed]


def test_the_teardown_takes_every_protected_resource_out_of_the_state():
    resources, _ = rc.load_tree(TF)
    assert teardown_problems(README.read_text(), resources) == []
    # The check sees the protected resources at all.
    assert sum(rc._lifecycle(b)["prevent_destroy"] for b in resources.values()) >= 15


@pytest.mark.parametrize("old,new,missing", [
    (" azurerm_storage_container.hsm_backup \\\n", " \\\n", "azurerm_storage_container.hsm_backup"),
    ("terraform state rm azurerm_cosmosdb_account.main azurerm_cosmosdb_sql_database.main \\\n",
     "terraform state rm azurerm_cosmosdb_account.main \\\n", "azurerm_cosmosdb_sql_database.main"),
], ids=["backup-container-left", "database-left"])
def test_a_stale_teardown_fails(old, new, missing):
    resources, _ = rc.load_tree(TF)
    text = README.read_text()
    assert text.count(old) == 1, old
    errors = teardown_problems(text.replace(old, new), resources)
    assert any(missing in e for e in errors), errors
