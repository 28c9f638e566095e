# The event path: Event Grid -> queue "events" -> bridge -> app POST /queue.
# Failed messages go to "events-poison"; undeliverable events to the
# "dead-letters" container.
resource "azurerm_storage_account" "events" {
  #checkov:skip=CKV_AZURE_36:bypass includes AzureServices (network_rules below); checkov 3.3.30 renders this account's bypass list one level deeper and misses it (the HSM backup account, written the same way, passes)
  #checkov:skip=CKV2_AZURE_1:the customer key is set inline (customer_managed_key with managed_hsm_key_id); CKV_CMK_5 holds it to an HSM key
  #checkov:skip=CKV_AZURE_33:queue logging is the queueServices diagnostic setting below (StorageRead/Write/Delete to Log Analytics); queue_properties is written over the queue data plane and is refused with features.storage.data_plane_available = false, which versions.tf sets so that no plan reads this account's data plane (hashicorp/terraform-provider-azurerm issue 33454)
  name                              = "st${local.base}"
  location                          = azurerm_resource_group.main.location
  resource_group_name               = azurerm_resource_group.main.name
  account_tier                      = "Standard"
  account_kind                      = "StorageV2"
  account_replication_type          = "GZRS"
  min_tls_version                   = "TLS1_2"
  https_traffic_only_enabled        = true
  infrastructure_encryption_enabled = true
  # Queues and tables use the account key (the customer-managed one in the
  # CMK stage), not a service-managed key.
  queue_encryption_key_type        = "Account"
  table_encryption_key_type        = "Account"
  shared_access_key_enabled        = var.encryption == "customer-managed" ? false : true
  default_to_oauth_authentication  = true
  allow_nested_items_to_be_public  = false
  cross_tenant_replication_enabled = false
  local_user_enabled               = false
  public_network_access_enabled    = length(var.bootstrap_admin_ip_ranges) > 0 ? true : false
  network_rules {
    default_action = "Deny"
    bypass         = ["AzureServices", "Logging", "Metrics"]
    ip_rules       = [for r in var.bootstrap_admin_ip_ranges : replace(r, "/32", "")]
  }
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.consumer["storage"].id]
  }
  dynamic "customer_managed_key" {
    for_each = var.encryption == "customer-managed" ? [1] : []
    content {
      managed_hsm_key_id        = azurerm_key_vault_managed_hardware_security_module_key.key["storage"].id
      user_assigned_identity_id = azurerm_user_assigned_identity.consumer["storage"].id
    }
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

  # Holds the event queue, the poison queue and the dead letters. The stage
  # switch changes customer_managed_key and shared_access_key_enabled, both
  # in place (neither is ForceNew in azurerm 4.55.0
  # internal/services/storage/storage_account_resource.go); the ForceNew
  # arguments here do not depend on the stage (tests/infra/test_replacement.py).
  lifecycle {
    prevent_destroy = true
  }

  depends_on = [azurerm_key_vault_managed_hardware_security_module_role_assignment.consumer]
}

resource "azurerm_storage_queue" "events" {
  name               = "events"
  storage_account_id = azurerm_storage_account.events.id

  lifecycle {
    # Holds data: tests/infra/replacement_check.py ALWAYS_PROTECTED.
    prevent_destroy = true
  }
}

resource "azurerm_storage_queue" "poison" {
  name               = "events-poison"
  storage_account_id = azurerm_storage_account.events.id

  lifecycle {
    # Holds data: tests/infra/replacement_check.py ALWAYS_PROTECTED.
    prevent_destroy = true
  }
}

resource "azurerm_storage_container" "dead_letters" {
  #checkov:skip=CKV2_AZURE_21:blob reads are logged to Log Analytics by the blobServices diagnostic setting; Storage Insights needs the account's shared key, which is disabled
  name                  = "dead-letters"
  storage_account_id    = azurerm_storage_account.events.id
  container_access_type = "private"

  lifecycle {
    # Holds data: tests/infra/replacement_check.py ALWAYS_PROTECTED.
    prevent_destroy = true
  }
}

resource "azurerm_monitor_diagnostic_setting" "blobs" {
  name                       = "blob-logs-to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.events.id}/blobServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  enabled_log {
    category_group = "allLogs"
  }
}

# Queue logs and metrics through Azure Monitor (control plane), instead of
# the account's queue_properties (Storage Analytics), which the provider
# reads and writes over the queue data plane (hashicorp/terraform-provider-azurerm
# issue 33454). Leaving queue_properties out is not enough on its own: with
# features.storage.data_plane_available on (the default), azurerm 4.55.0's
# storage account Read fetches the queue and static-website properties over
# the data plane whether or not they are configured, and fails on a 403.
# versions.tf turns the flag off, which also refuses queue_properties here.
resource "azurerm_monitor_diagnostic_setting" "queues" {
  name                       = "queue-logs-to-log-analytics"
  target_resource_id         = "${azurerm_storage_account.events.id}/queueServices/default"
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  enabled_log {
    category_group = "allLogs"
  }
  enabled_metric {
    category = "Transaction"
  }
}

resource "azurerm_private_endpoint" "queue" {
  name                = "pe-queue-${local.base}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "queue"
    private_connection_resource_id = azurerm_storage_account.events.id
    subresource_names              = ["queue"]
    is_manual_connection           = false
  }
  private_dns_zone_group {
    name                 = "queue"
    private_dns_zone_ids = [azurerm_private_dns_zone.zone["queue"].id]
  }
  tags = local.tags
}

resource "azurerm_private_endpoint" "blob" {
  name                = "pe-blob-${local.base}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "blob"
    private_connection_resource_id = azurerm_storage_account.events.id
    subresource_names              = ["blob"]
    is_manual_connection           = false
  }
  private_dns_zone_group {
    name                 = "blob"
    private_dns_zone_ids = [azurerm_private_dns_zone.zone["blob"].id]
  }
  tags = local.tags
}

# The bridge reads and deletes queue messages and writes to the poison queue.
resource "azurerm_role_assignment" "bridge_queue" {
  scope                = azurerm_storage_account.events.id
  role_definition_name = "Storage Queue Data Message Processor"
  principal_id         = azurerm_user_assigned_identity.bridge.principal_id
}

resource "azurerm_role_assignment" "bridge_poison" {
  scope                = "${azurerm_storage_account.events.id}/queueServices/default/queues/${azurerm_storage_queue.poison.name}"
  role_definition_name = "Storage Queue Data Message Sender"
  principal_id         = azurerm_user_assigned_identity.bridge.principal_id
}

# Re-queuing puts a message back into its own queue (a key-state refusal:
# the message keeps its tries, docs/bridge.md); Message Processor has no
# add (learn.microsoft.com/azure/role-based-access-control/built-in-roles,
# Storage Queue Data Message Processor: peek, retrieve and delete).
resource "azurerm_role_assignment" "bridge_requeue" {
  scope                = "${azurerm_storage_account.events.id}/queueServices/default/queues/${azurerm_storage_queue.events.name}"
  role_definition_name = "Storage Queue Data Message Sender"
  principal_id         = azurerm_user_assigned_identity.bridge.principal_id
}

# KEDA reads queue metadata (length) through the same identity.
resource "azurerm_role_assignment" "bridge_queue_reader" {
  scope                = "${azurerm_storage_account.events.id}/queueServices/default/queues/${azurerm_storage_queue.events.name}"
  role_definition_name = "Storage Queue Data Reader"
  principal_id         = azurerm_user_assigned_identity.bridge.principal_id
}
