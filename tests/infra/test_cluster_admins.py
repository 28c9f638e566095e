"""The cluster's administrators are not the key administrators. Whoever can
create pods or service-account tokens in the app's namespace can act as the
app's workload identity (the app identity is federated to the token
proxy's service account, identities.tf), and that identity unwraps; so the
cluster's Entra admin group and its AKS RBAC Cluster Admin assignment name
`cluster_admin_group_object_id`, whose validation refuses the key
administrators' group and the HSM administrators. Broken copies fail."""

import io

import hcl2
import pytest

import infra_lib
import replacement_check as rc

CLUSTER = "${var.cluster_admin_group_object_id}"


# python-hcl2 wraps each attribute's value in a list.
_one = rc._one


def problems(tf_texts: dict[str, str], variables_tf: str) -> list[str]:
    """`tf_texts`: every .tf file of the root module by name (aks.tf among
    them), so a Kubernetes role assignment in any file is seen."""
    errors = []
    resources = {}
    for text in tf_texts.values():
        for block in hcl2.load(io.StringIO(text)).get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    resources[(rtype, name)] = body
    cluster = resources[("azurerm_kubernetes_cluster", "aks")]
    aad = cluster["azure_active_directory_role_based_access_control"][0]
    if _one(aad.get("admin_group_object_ids")) != [CLUSTER]:
        errors.append(f"the cluster's Entra admin groups are {aad.get('admin_group_object_ids')}, not [{CLUSTER}]")
    admins = [(name, body) for (rtype, name), body in resources.items() if rtype == "azurerm_role_assignment"
              and "Kubernetes" in str(_one(body.get("role_definition_name", "")))]
    for name, body in admins:
        if _one(body.get("principal_id")) != CLUSTER:
            errors.append(f"azurerm_role_assignment.{name} gives {body.get('role_definition_name')} to "
                          f"{body.get('principal_id')}, not {CLUSTER}")
    if not admins:
        errors.append("no AKS RBAC role assignment found")
    variables = {}
    for block in hcl2.load(io.StringIO(variables_tf)).get("variable", []):
        variables.update(block)
    rules = "".join(str(_one(v.get("condition", ""))) for v in variables.get("cluster_admin_group_object_id", {})
                    .get("validation", [])).replace(" ", "")
    for needed in ("lower(var.cluster_admin_group_object_id) != lower(var.key_admin_group_object_id)",
                   "!contains([for id in var.hsm_admin_object_ids : lower(id)], lower(var.cluster_admin_group_object_id))"):
        if needed.replace(" ", "") not in rules:
            errors.append(f"cluster_admin_group_object_id's validation lacks `{needed}`")
    return errors


def texts() -> tuple[dict[str, str], str]:
    tf = infra_lib.INFRA / "terraform"
    return {p.name: p.read_text() for p in sorted(tf.glob("*.tf"))}, (tf / "variables.tf").read_text()


def test_cluster_admins_are_their_own_group():
    assert problems(*texts()) == []


@pytest.mark.parametrize("file,old,new,message", [
    ("aks.tf", "admin_group_object_ids = [var.cluster_admin_group_object_id]",
     "admin_group_object_ids = [var.key_admin_group_object_id]", "Entra admin groups"),
    ("aks.tf", '  role_definition_name = "Azure Kubernetes Service RBAC Cluster Admin"\n  principal_id         = var.cluster_admin_group_object_id',
     '  role_definition_name = "Azure Kubernetes Service RBAC Cluster Admin"\n  principal_id         = var.key_admin_group_object_id',
     "RBAC Cluster Admin"),
    ("variables.tf", "lower(var.cluster_admin_group_object_id) != lower(var.key_admin_group_object_id) && ", "",
     "lacks `lower(var.cluster_admin_group_object_id) != lower(var.key_admin_group_object_id)`"),
    ("variables.tf", "lower(var.cluster_admin_group_object_id) != lower(var.key_admin_group_object_id)",
     "var.cluster_admin_group_object_id != var.key_admin_group_object_id",
     "lacks `lower(var.cluster_admin_group_object_id) != lower(var.key_admin_group_object_id)`"),
    ("other.tf", "", 'resource "azurerm_role_assignment" "more_admins" {\n  scope = azurerm_kubernetes_cluster.aks.id\n'
                     '  role_definition_name = "Azure Kubernetes Service RBAC Admin"\n'
                     '  principal_id = var.key_admin_group_object_id\n}\n', "more_admins"),
], ids=["entra-admins-are-key-admins", "rbac-cluster-admin-to-key-admins", "no-validation", "case-sensitive",
        "kubernetes-role-in-another-file"])
def test_broken_copies_fail(file, old, new, message):
    files, variables = texts()
    if file == "variables.tf":
        assert variables.count(old) == 1, old
        variables = variables.replace(old, new)
    elif file in files:
        assert files[file].count(old) == 1, old
        files[file] = files[file].replace(old, new)
    else:
        files[file] = new
    errors = problems(files, variables)
    assert any(message in e for e in errors), errors
