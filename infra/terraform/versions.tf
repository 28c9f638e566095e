# Terraform >= 1.9 (or OpenTofu >= 1.8). Provider versions are pinned exactly:
# tests/infra/provider-schema.json is the schema of these same versions, and
# the offline checks hold every resource and argument here to it.
#
# This root module holds the Azure estate only. The Helm releases live in a
# root module of their own (infra/terraform-cluster, applied second): a plan
# here never has to reach the cluster's API, and a cluster change can never
# leave releases behind that target a cluster being replaced.
terraform {
  required_version = ">= 1.9.0"
  required_providers {
    azurerm = {
      source  = "hashicorp/azurerm"
      version = "= 4.55.0"
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
    # Never purge on destroy: a purged key makes every record, disk and backup
    # it protects unreadable for good. azurerm 4.55.0 defaults every one of
    # these flags to true (internal/provider/features.go, "key_vault" block),
    # and has no "managed_hsm" features block: the Managed HSM flags live
    # here too.
    key_vault {
      purge_soft_delete_on_destroy                                = false
      purge_soft_deleted_keys_on_destroy                          = false
      purge_soft_deleted_certificates_on_destroy                  = false
      purge_soft_deleted_secrets_on_destroy                       = false
      purge_soft_deleted_hardware_security_modules_on_destroy     = false
      purge_soft_deleted_hardware_security_module_keys_on_destroy = false
      recover_soft_deleted_key_vaults                             = true
      recover_soft_deleted_keys                                   = true
      recover_soft_deleted_hardware_security_module_keys          = true
    }
    resource_group {
      prevent_deletion_if_contains_resources = true
    }
    # Read the storage accounts over Resource Manager only. With this flag on
    # (the default), azurerm 4.55.0's storage account Read also fetches the
    # queue and static-website service properties over the data plane
    # (internal/services/storage/storage_account_resource.go, Read/flatten,
    # `if !features.FivePointOh() && dataPlaneAvailable`) and tolerates only
    # connection errors (storage_account_data_plane_helpers.go
    # `connectionError`: "dial tcp" or EOF), not the 403 an account with
    # public access off or a Deny firewall answers: every plan would fail on
    # the HSM backup account and on the events account. Nothing here sets
    # queue_properties or static_website (refused with the flag off), and the
    # queues and containers are addressed by storage_account_id (Resource
    # Manager).
    storage {
      data_plane_available = false
    }
  }
}
