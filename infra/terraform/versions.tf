# Terraform >= 1.9 (or OpenTofu >= 1.8). Provider versions are pinned exactly:
# tests/infra/provider-schema.json is the schema of these same versions, and
# the offline checks hold every resource and argument here to it.
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
    random = {
      source  = "hashicorp/random"
      version = "= 3.7.2"
    }
  }
}

provider "azurerm" {
  subscription_id     = var.subscription_id
  storage_use_azuread = true
  features {
    key_vault {
      # Never purge key material on destroy: a purged key makes every record,
      # disk and backup it protects unreadable for good.
      purge_soft_delete_on_destroy    = false
      recover_soft_deleted_key_vaults = true
      recover_soft_deleted_keys       = true
    }
    managed_hsm {
      purge_soft_delete_on_destroy = false
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
  }
}

# The cluster has local accounts disabled: Helm reaches it with an Entra ID
# token from kubelogin (https://azure.github.io/kubelogin), as the operator
# running Terraform (who needs "Azure Kubernetes Service RBAC Cluster Admin").
provider "helm" {
  kubernetes = {
    host                   = azurerm_kubernetes_cluster.aks.kube_config[0].host
    cluster_ca_certificate = base64decode(azurerm_kubernetes_cluster.aks.kube_config[0].cluster_ca_certificate)
    exec = {
      api_version = "client.authentication.k8s.io/v1beta1"
      command     = "kubelogin"
      args        = ["get-token", "--login", "azurecli", "--server-id", "6dae42f8-4368-4678-94ff-3960e28e3630"]
    }
  }
}
