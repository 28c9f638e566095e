resource "azurerm_cosmosdb_account" "main" {
  #checkov:skip=CKV_AZURE_100:that check reads key_vault_key_id only; this account's key is managed_hsm_key_id, held to an HSM key by CKV_CMK_4
  name                = var.cosmos_account_generation == 1 ? "cosmos-${local.base}" : "cosmos-${local.base}-g${var.cosmos_account_generation}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  offer_type          = "Standard"
  kind                = "GlobalDocumentDB"
  minimal_tls_version = "Tls12"
  # Customer-managed key: the versionless id of the HSM key, used through the
  # account's user-assigned identity. managed_hsm_key_id (like
  # key_vault_key_id) is ForceNew in azurerm 4.55.0
  # (internal/services/cosmos/cosmosdb_account_resource.go), and Microsoft's
  # path for a CMK on an existing account takes a Key Vault key only
  # (learn.microsoft.com/azure/cosmos-db/how-to-setup-customer-managed-keys-existing-accounts,
  # keyVaultKeyUri / az cosmosdb update --key-uri). So a populated stage-one
  # account is never switched: prevent_destroy below stops the plan, and the
  # switch is the migration in infra/README.md ("Stage switch"): a new
  # account generation beside this one, records copied, sealed, reads
  # switched, the old account removed by an explicit step.
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

  # Every record lives here: no plan ever replaces or deletes this account.
  lifecycle {
    prevent_destroy = true
    # During the migration the new generation must not take the retiring
    # account's name (the plan would try to create an account that exists).
    precondition {
      condition     = var.cosmos_retiring_account_name != (var.cosmos_account_generation == 1 ? "cosmos-${local.base}" : "cosmos-${local.base}-g${var.cosmos_account_generation}")
      error_message = "cosmos_retiring_account_name names the serving account: raise cosmos_account_generation (infra/README.md, \"Stage switch on a populated estate\")."
    }
  }

  depends_on = [azurerm_key_vault_managed_hardware_security_module_role_assignment.consumer]
}

# The stage-one account during a stage switch: moved here by the explicit
# `terraform state mv` of the migration (infra/README.md, "Stage switch"),
# read by the copy tool until every record is in the new generation, then
# removed by an explicit step. Terraform changes nothing on it (ignore_changes
# = all) and never deletes it (prevent_destroy): the arguments below only
# describe it; what Azure holds is what stage one created.
resource "azurerm_cosmosdb_account" "retiring" {
  #checkov:skip=CKV_CMK_4:the stage-one account being migrated away from holds Microsoft-managed keys by definition; it exists only between the copy and its explicit removal
  #checkov:skip=CKV_AZURE_100:the same stage-one account (Microsoft-managed keys until its explicit removal)
  count                                 = var.cosmos_retiring_account_name == "" ? 0 : 1
  name                                  = var.cosmos_retiring_account_name
  location                              = azurerm_resource_group.main.location
  resource_group_name                   = azurerm_resource_group.main.name
  offer_type                            = "Standard"
  kind                                  = "GlobalDocumentDB"
  minimal_tls_version                   = "Tls12"
  local_authentication_disabled         = true
  access_key_metadata_writes_enabled    = false
  public_network_access_enabled         = false
  network_acl_bypass_for_azure_services = false
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

  lifecycle {
    prevent_destroy = true
    ignore_changes  = all
  }
}

# Its private endpoint, moved here with it: the copy tool reads the old
# account from inside the virtual network.
resource "azurerm_private_endpoint" "cosmos_retiring" {
  count               = var.cosmos_retiring_account_name == "" ? 0 : 1
  name                = "pe-${var.cosmos_retiring_account_name}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "cosmos-retiring"
    private_connection_resource_id = azurerm_cosmosdb_account.retiring[0].id
    subresource_names              = ["Sql"]
    is_manual_connection           = false
  }
  lifecycle {
    ignore_changes = all
  }
}

resource "azurerm_cosmosdb_sql_database" "main" {
  name                = "cmk-ingest"
  resource_group_name = azurerm_resource_group.main.name
  account_name        = azurerm_cosmosdb_account.main.name

  lifecycle {
    # Holds data: tests/infra/replacement_check.py ALWAYS_PROTECTED.
    prevent_destroy = true
  }
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

  lifecycle {
    # Holds data: tests/infra/replacement_check.py ALWAYS_PROTECTED.
    prevent_destroy = true
  }
}

# Entra data-plane access for the app: Cosmos DB Built-in Data Contributor on
# its one container only. A SQL role assignment's scope may be the account, a
# database (/dbs/<db>) or a container (/dbs/<db>/colls/<container>)
# (learn.microsoft.com/azure/cosmos-db/how-to-setup-rbac, "Create role
# assignments"); the component reads and writes one container.
# tests/infra/test_cosmos_role_scope.py keeps it there.
resource "azurerm_cosmosdb_sql_role_assignment" "app" {
  name                = uuidv5("url", "cmk-ingest/${local.base}/cosmos/app")
  resource_group_name = azurerm_resource_group.main.name
  account_name        = azurerm_cosmosdb_account.main.name
  role_definition_id  = "${azurerm_cosmosdb_account.main.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002"
  principal_id        = azurerm_user_assigned_identity.consumer["app"].principal_id
  scope               = "${azurerm_cosmosdb_account.main.id}/dbs/${azurerm_cosmosdb_sql_database.main.name}/colls/${azurerm_cosmosdb_sql_container.events.name}"
}

# The copy of a stage switch (infra/README.md, "Stage switch", step 3):
# the serving account has local authentication off in production, so the
# operator running scripts/migrate-records needs a data-plane role there
# (Cosmos DB Built-in Data Contributor, ...0002: create and read items) and
# one to read the retiring account (Built-in Data Reader, ...0001). Both
# exist only while cosmos_migration_operator_object_ids lists the operator;
# the migration's last step empties it.
resource "azurerm_cosmosdb_sql_role_assignment" "migration_target" {
  for_each            = toset(var.cosmos_migration_operator_object_ids)
  name                = uuidv5("url", "cmk-ingest/${local.base}/cosmos/migration-target/${each.value}")
  resource_group_name = azurerm_resource_group.main.name
  account_name        = azurerm_cosmosdb_account.main.name
  role_definition_id  = "${azurerm_cosmosdb_account.main.id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000002"
  principal_id        = each.value
  scope               = azurerm_cosmosdb_account.main.id
}

resource "azurerm_cosmosdb_sql_role_assignment" "migration_source" {
  for_each            = var.cosmos_retiring_account_name == "" ? toset([]) : toset(var.cosmos_migration_operator_object_ids)
  name                = uuidv5("url", "cmk-ingest/${local.base}/cosmos/migration-source/${each.value}")
  resource_group_name = azurerm_resource_group.main.name
  account_name        = azurerm_cosmosdb_account.retiring[0].name
  role_definition_id  = "${azurerm_cosmosdb_account.retiring[0].id}/sqlRoleDefinitions/00000000-0000-0000-0000-000000000001"
  principal_id        = each.value
  scope               = azurerm_cosmosdb_account.retiring[0].id
}

resource "azurerm_private_endpoint" "cosmos" {
  name                = "pe-${azurerm_cosmosdb_account.main.name}"
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
