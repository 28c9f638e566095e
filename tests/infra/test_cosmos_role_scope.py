"""The app's Cosmos DB data-plane role is scoped to its one container, not
the account (a SQL role assignment may be scoped to an account, a database or
a container: learn.microsoft.com/azure/cosmos-db/how-to-setup-rbac). A broken
copy fails the check."""

from pathlib import Path

import hcl2
import pytest

import infra_lib


def one(v):
    """python-hcl2 wraps attribute values and blocks in lists (version-dependent)."""
    while isinstance(v, list) and len(v) == 1:
        v = v[0]
    return v


def app_role_scope(tf: Path) -> str:
    with (tf / "cosmos.tf").open() as fh:
        parsed = hcl2.load(fh)
    for r in parsed.get("resource", []):
        ra = r.get("azurerm_cosmosdb_sql_role_assignment", {})
        if "app" in ra:
            return str(one(one(ra["app"])["scope"]))
    return ""


def scope_problems(tf: Path) -> list[str]:
    scope = app_role_scope(tf)
    if not scope:
        return ["no app role assignment"]
    if not scope.startswith("${azurerm_cosmosdb_account.main.id}/dbs/") or "/colls/" not in scope:
        return [f"the app's role is not scoped to its container: {scope}"]
    return []


def test_the_app_role_is_scoped_to_its_container():
    assert scope_problems(infra_lib.INFRA / "terraform") == []


def test_an_account_wide_app_role_fails(tree_copy):
    f = tree_copy / "terraform" / "cosmos.tf"
    text = f.read_text()
    old = '  scope               = "${azurerm_cosmosdb_account.main.id}/dbs/${azurerm_cosmosdb_sql_database.main.name}/colls/${azurerm_cosmosdb_sql_container.events.name}"\n'
    assert text.count(old) == 1
    f.write_text(text.replace(old, "  scope               = azurerm_cosmosdb_account.main.id\n"))
    assert any("not scoped" in p for p in scope_problems(tree_copy / "terraform"))
