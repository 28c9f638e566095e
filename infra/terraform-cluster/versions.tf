# The cluster's workloads as a root module of its own, applied after
# infra/terraform (infra/README.md, "Apply order"). It reads the cluster by
# name, so a plan of the Azure estate never depends on the cluster's API and
# a cluster that is replaced (or removed) cannot leave Helm releases in a
# state that targets it: this module is destroyed or re-applied explicitly,
# against the cluster that exists.
terraform {
  required_version = ">= 1.9.0"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "= 4.55.0"
    }
    helm = {
      source  = "hashicorp/helm"
      version = "= 3.1.1"
    }
  }
}

provider "azurerm" {
  subscription_id = var.subscription_id
  features {}
}

data "azurerm_kubernetes_cluster" "aks" {
  name                = var.cluster_name
  resource_group_name = var.resource_group_name
}

# The cluster has local accounts disabled: Helm reaches it with an Entra ID
# token from kubelogin (https://azure.github.io/kubelogin), as the operator
# running Terraform (who needs "Azure Kubernetes Service RBAC Cluster Admin").
provider "helm" {
  kubernetes = {
    host                   = data.azurerm_kubernetes_cluster.aks.kube_config[0].host
    cluster_ca_certificate = base64decode(data.azurerm_kubernetes_cluster.aks.kube_config[0].cluster_ca_certificate)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "kubelogin"
      args        = ["get-token", "--login", "azurecli", "--server-id", "6dae42f8-4368-4678-94ff-3960e28e3630"]
    }
  }
}
