# ---------------------------------------------------------------------------
# Managed HSM full backups. A full backup holds every key, version and role
# assignment, encrypted under the security domain; it is useless without the
# quorum of security-domain keys and restores only into an HSM activated with
# the same security domain. The account that keeps the backups is encrypted
# with a Key Vault key, not an HSM key: after losing the HSM the backups must
# still be readable. Blobs are immutable for hsm_backup_retention_days.
# ---------------------------------------------------------------------------
resource "azurerm_storage_account" "hsm_backup" {
  #checkov:skip=CKV_AZURE_33:the account holds no queues (the backups are blobs, logged by the blobServices diagnostic setting below); queue_properties is written over the queue data plane and refused at plan time with features.storage.data_plane_available = false (storage_account_resource.go CustomizeDiff at v4.55.0)
  name                              = "stbk${local.base}"
  location                          = azurerm_resource_group.main.location
  resource_group_name               = azurerm_resource_group.main.name
  account_tier                      = "Standard"
  account_kind                      = "StorageV2"
  account_replication_type          = "GZRS"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  infrastructure_encryption_enabled = true
  queue_encryption_key_type         = "Account"
  table_encryption_key_type         = "Account"
  shared_access_key_enabled         = false
  default_to_oauth_authentication   = true
  allow_nested_items_to_be_public   = false
  cross_tenant_replication_enabled  = false
  local_user_enabled                = false
  public_network_access_enabled     = length(var.bootstrap_admin_ip_ranges) > 0 ? true : false
  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices", "Logging", "Metrics"]
    ip_rules       = [for r in var.bootstrap_admin_ip_ranges : replace(r, "/32", "")]
  }
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.hsm_backup.id]
  }
  customer_managed_key {
    key_vault_key_id          = azurerm_key_vault_key.hsm_backup_storage.versionless_id
    user_assigned_identity_id = azurerm_user_assigned_identity.hsm_backup.id
  }
  blob_properties {
    versioning_enabled = true
    delete_retention_policy {
      days = 30
    }
    container_delete_retention_policy {
      days = 30
    }
  }
  sas_policy {
    expiration_period = "00.01:00:00"
  }
  tags = local.tags

  lifecycle {
    prevent_destroy = true
  }
  depends_on = [azurerm_role_assignment.hsm_backup_storage_key]
}

resource "azurerm_monitor_diagnostic_setting" "hsm_backup_blobs" {
  name                       = "blob-logs-to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.hsm_backup.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  enabled_log {
    category_group = "allLogs"
  }
}

resource "azurerm_storage_container" "hsm_backup" {
  #checkov:skip=CKV2_AZURE_21:blob reads are logged to Log Analytics by the blobServices diagnostic setting; Storage Insights needs the account's shared key, which is disabled
  name                  = "hsm-backups"
  storage_account_id    = azurerm_storage_account.hsm_backup.id
  container_access_type = "private"

  lifecycle {
    # Holds data: tests/infra/replacement_check.py ALWAYS_PROTECTED.
    prevent_destroy = true
  }
}

resource "azurerm_storage_container_immutability_policy" "hsm_backup" {
  storage_container_resource_manager_id = azurerm_storage_container.hsm_backup.resource_manager_id
  immutability_period_in_days           = var.hsm_backup_retention_days
  protected_append_writes_enabled       = false
  # Lock after the first verified backup and restore drill (irreversible).
  locked = var.hsm_backup_immutability_locked
}

resource "azurerm_private_endpoint" "hsm_backup" {
  name                = "pe-hsmbackup-${local.base}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "blob"
    private_connection_resource_id = azurerm_storage_account.hsm_backup.id
    subresource_names              = ["blob"]
    is_manual_connection           = false
  }
  private_dns_zone_group {
    name                 = "blob"
    private_dns_zone_ids = [azurerm_private_dns_zone.zone["blob"].id]
  }
  tags = local.tags
}

# The HSM writes the backup blobs with this identity (assigned to the HSM with
# `az keyvault update-hsm --mi-user-assigned`, which the provider cannot set).
resource "azurerm_role_assignment" "hsm_backup_blob" {
  scope                = azurerm_storage_container.hsm_backup.resource_manager_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_user_assigned_identity.hsm_backup.principal_id
}

# Starting a full backup needs the Managed HSM Backup role at the HSM scope
# "/": the service offers it at no narrower scope. It grants full and
# single-key backup (backup/start, backup/status, keys/backup), no restore and
# no cryptographic operation on any key; restore needs Managed HSM Restore or
# Administrator (learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles).
# Written over the HSM's data plane, so it waits for the private endpoint and
# DNS link like every HSM data-plane resource (tests/infra/test_hsm_ordering.py).
resource "azurerm_key_vault_managed_hardware_security_module_role_assignment" "hsm_backup" {
  managed_hsm_id     = azurerm_key_vault_managed_hardware_security_module.hsm.id
  name               = uuidv5("url", "cmk-ingest/${local.base}/hsm-backup")
  scope              = "/"
  role_definition_id = local.hsm_roles.backup
  principal_id       = azurerm_user_assigned_identity.hsm_backup.principal_id
  depends_on         = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]
}

# The daily backup CronJob (infra/deploy/spinkube/hsm-backup-cronjob.yaml)
# runs as this identity through workload identity.
resource "azurerm_federated_identity_credential" "hsm_backup" {
  name                = "aks-${var.kubernetes_namespace}-hsm-backup"
  resource_group_name = azurerm_resource_group.main.name
  parent_id           = azurerm_user_assigned_identity.hsm_backup.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.aks.oidc_issuer_url
  subject             = "system:serviceaccount:${var.kubernetes_namespace}:hsm-backup"
}
