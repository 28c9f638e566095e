resource "azurerm_cosmosdb_account" "main" {
  #checkov:skip=CKV_AZURE_100:that check reads key_vault_key_id only; this account's key is managed_hsm_key_id, held to an HSM key by CKV_CMK_4
  name                = "cosmos-${local.base}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  offer_type          = "Standard"
  kind                = "GlobalDocumentDB"
  minimal_tls_version = "Tls12"
  # Customer-managed key: the versionless id of the HSM key, used through the
  # account's user-assigned identity (a CMK cannot be added to an existing
  # account: the stage switch recreates the account, so switch before data).
  managed_hsm_key_id    = var.encryption == "customer-managed" ? azurerm_key_vault_managed_hardware_security_module_key.key["cosmos"].id : null
  default_identity_type = "UserAssignedIdentity=${azurerm_user_assigned_identity.consumer["cosmos"].id}"
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.consumer["cosmos"].id]
  }
  # Production: Entra ID only (data-plane role below); no master keys.
  local_authentication_disabled         = var.profile == "production" ? true : false
  access_key_metadata_writes_enabled    = false
  public_network_access_enabled         = length(var.bootstrap_admin_ip_ranges) > 0 ? true : false
  ip_range_filter                       = var.bootstrap_admin_ip_ranges
  network_acl_bypass_for_azure_services = false
  automatic_failover_enabled            = false
  consistency_policy {
    consistency_level = "Session"
  }
  geo_location {
    location          = azurerm_resource_group.main.location
    failover_priority = 0
    zone_redundant    = true
  }
  backup {
    type = "Continuous"
    tier = "Continuous30Days"
  }
  tags = local.tags

  depends_on = [azurerm_key_vault_managed_hardware_security_module_role_assignment.consumer]
}

resource "azurerm_cosmosdb_sql_database" "main" {
  name                = "cmk-ingest"
  resource_group_name = azurerm_resource_group.main.name
  account_name        = azurerm_cosmosdb_account.main.name
}

# The component writes one document per event: {id, pk, event: {...}, cmk:
# {...}} with sealed values at the protected fields' pointers under /event
# (docs/record-format.md). Sealed values and the envelope header are opaque
# ciphertext: indexing them only costs RUs and storage, so they are excluded.
locals {
  protected_pointers = sort(distinct(flatten(values(jsondecode(var.protected_fields)))))
}

resource "azurerm_cosmosdb_sql_container" "events" {
  name                  = "events"
  resource_group_name   = azurerm_resource_group.main.name
  account_name          = azurerm_cosmosdb_account.main.name
  database_name         = azurerm_cosmosdb_sql_database.main.name
  partition_key_paths   = ["/pk"]
  partition_key_version = 2
  autoscale_settings {
    max_throughput = 4000
  }
  indexing_policy {
    indexing_mode = "consistent"
    included_path {
      path = "/*"
    }
    # The envelope header (wrapped data key, kid, field list).
    excluded_path {
      path = "/cmk/*"
    }
    # Every protected field, under /event (protected_fields, the same JSON the
    # app reads; default {"*": ["/data"]} -> /event/data/*). A `*` token (every
    # element of an array) is `[]` in an index path.
    dynamic "excluded_path" {
      for_each = local.protected_pointers
      content {
        path = "/event${join("/", [for t in split("/", excluded_path.value) : t == "*" ? "[]" : t])}/*"
      }
    }
    excluded_path {
      path = "/\"_etag\"/?"
    }
  }
}

# Entra data-plane access for the app: Cosmos DB Built-in Data Contributor on
# this account.
resource "azurerm_cosmosdb_sql_role_assignment" "app" {
  name                = uuidv5("url", "cmk-ingest/${local.base}/cosmos/app")
  resource_group_name = azurerm_resource_group.main.name
  account_name        = azurerm_cosmosdb_account.main.name
  role_definition_id  = "${azurerm_cosmosdb_account.main.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002"
  principal_id        = azurerm_user_assigned_identity.consumer["app"].principal_id
  scope               = azurerm_cosmosdb_account.main.id
}

resource "azurerm_private_endpoint" "cosmos" {
  name                = "pe-cosmos-${local.base}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "cosmos"
    private_connection_resource_id = azurerm_cosmosdb_account.main.id
    subresource_names              = ["Sql"]
    is_manual_connection           = false
  }
  private_dns_zone_group {
    name                 = "cosmos"
    private_dns_zone_ids = [azurerm_private_dns_zone.zone["cosmos"].id]
  }
  tags = local.tags
}

resource "azurerm_monitor_diagnostic_setting" "cosmos" {
  name                           = "cosmos-to-log-analytics"
  target_resource_id             = azurerm_cosmosdb_account.main.id
  log_analytics_workspace_id     = azurerm_log_analytics_workspace.main.id
  log_analytics_destination_type = "Dedicated"
  enabled_log {
    category = "DataPlaneRequests"
  }
  enabled_log {
    category = "ControlPlaneRequests"
  }
}
