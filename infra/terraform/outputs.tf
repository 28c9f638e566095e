# Everything the app's Spin variables (spin.toml) need from the estate, plus
# what the bridge, the token proxy and the deploy manifests need. Secrets are
# not outputs: the ingest, read and admin keys and the identity header are the
# operators' to generate, and in the production profile there is no Cosmos DB
# key at all.
locals {
  # The token proxy's Service (infra/deploy/app/token-proxy.yaml). The app's
  # managed_identity_origin, and so one of its allowed outbound hosts
  # (spin.toml builds that list from the variable): scheme, host and port.
  token_proxy_origin = "http://cmk-token-proxy.${var.kubernetes_namespace}.svc.cluster.local:8081"
  # Resource of the account's Entra ID tokens, as the component derives it
  # from cosmos_endpoint (scheme://host, no port, no trailing slash).
  cosmos_resource = "https://${azurerm_cosmosdb_account.main.name}.documents.azure.com"
  # production: local auth is off on the account (cosmos.tf), so the app
  # authorizes with Entra ID through its data-plane role.
  cosmos_auth = var.profile == "production" ? "entra" : "master-key"
}

output "spin_variables" {
  description = "Non-secret Spin variables for the app (SpinKube ConfigMap cmk-ingest-config, or spin cloud deploy --variable)."
  value       = {
    cosmos_endpoint    = trimsuffix(azurerm_cosmosdb_account.main.endpoint, "/")
    cosmos_database    = azurerm_cosmosdb_sql_database.main.name
    cosmos_container   = azurerm_cosmosdb_sql_container.events.name
    cosmos_auth        = local.cosmos_auth
    cosmos_token_scope = ""
    cosmos_write_mode  = var.cosmos_write_mode
    partition_key      = "/source"
    protected_fields   = var.protected_fields
    # Refuse any record without an envelope header. During a stage switch
    # the new account holds copied first-stage records in plaintext until
    # the sealing pass has passed over them: the runbook sets this to "true"
    # in the ConfigMap for that window only (infra/README.md, "Stage
    # switch", step 4).
    read_accept_unsealed = "false"
    hsm_endpoint         = trimsuffix(azurerm_key_vault_managed_hardware_security_module.hsm.hsm_uri, "/")
    hsm_key_name         = var.encryption == "customer-managed" ? azurerm_key_vault_managed_hardware_security_module_key.key["app"].name : ""
    hsm_key_check_secs   = "30"
    hsm_local_wrap       = var.hsm_local_wrap ? "true" : "false"
    # Explicit either way: the app refuses to start with protected_fields
    # set and no key name unless the first stage is chosen.
    cmk_stage = var.encryption == "customer-managed" ? "2" : "1"
    # Key scopes (tenant -> HSM key, hsm.tf "tenant" keys). The mapping is
    # built from the app identity's role assignments on the tenant keys, so
    # it names only keys Terraform created and the app may use (an apply
    # that fails on a role leaves that tenant out). Off in the first stage
    # (nothing sealed). Off, the values are the ones the app reads as unset
    # (empty pointer, "{}", "refuse"; tests/deploy_settings.rs loads them).
    key_scope_pointer = var.encryption == "customer-managed" ? var.key_scope_pointer : ""
    key_scope_keys    = var.encryption == "customer-managed" ? jsonencode({ for t, a in azurerm_key_vault_managed_hardware_security_module_role_assignment.tenant_app : t => azurerm_key_vault_managed_hardware_security_module_key.tenant[t].name }) : "{}"
    key_scope_unknown = var.encryption == "customer-managed" && var.key_scope_pointer != "" ? var.key_scope_unknown : "refuse"
    # Tokens from the token proxy, which holds the app identity's workload
    # identity federation (identities.tf).
    identity                = "managed-identity"
    managed_identity_origin = local.token_proxy_origin
    managed_identity_path   = "/msi/token"
    azure_tenant_id         = var.tenant_id
    azure_client_id         = azurerm_user_assigned_identity.consumer["app"].client_id
    azure_authority_host    = "https://login.microsoftonline.com"
    # Entra protected delivery on the optional webhook (eventgrid.tf); empty:
    # off, deliveries present an ingest key.
    ingest_entra_audiences = var.ingest_entra_app_id_or_uri
    ingest_entra_tenant_id = ""
    ingest_entra_issuers   = ""
    ingest_entra_roles     = "AzureEventGridSecureWebhookSubscriber"
  }
  precondition {
    condition     = var.key_scope_pointer == "" || length(var.tenant_keys) > 0
    error_message = "key_scope_pointer is set but tenant_keys is empty: add the tenants' keys, or clear the pointer."
  }
}

output "token_proxy_environment" {
  description = "Environment of the token proxy Deployment (the workload-identity webhook adds AZURE_CLIENT_ID, AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST)."
  value       = {
    TOKEN_PROXY_LISTEN = "0.0.0.0:8081"
    # The HSM always; the Cosmos DB account when the app authorizes with Entra ID.
    TOKEN_PROXY_RESOURCES         = local.cosmos_auth == "entra" ? "https://managedhsm.azure.net,${local.cosmos_resource}" : "https://managedhsm.azure.net"
    TOKEN_PROXY_REFRESH_SKEW_SECS = "300"
  }
}

output "app_identity_client_id" {
  description = "Client id of the app identity: the token proxy's service account annotation."
  value       = azurerm_user_assigned_identity.consumer["app"].client_id
}

output "bridge_environment" {
  description = "Environment of the queue bridge Deployment (names as bridge/src/config.rs reads them)."
  value       = {
    BRIDGE_QUEUE_URL    = "${azurerm_storage_account.events.primary_queue_endpoint}${azurerm_storage_queue.events.name}"
    BRIDGE_POISON_QUEUE = azurerm_storage_queue.poison.name
    BRIDGE_TARGET_URL   = "http://cmk-ingest.${var.kubernetes_namespace}.svc.cluster.local/queue"
    BRIDGE_AUTH         = "workload-identity"
    AZURE_CLIENT_ID     = azurerm_user_assigned_identity.bridge.client_id
    AZURE_TENANT_ID     = var.tenant_id
  }
}

output "storage_account_name" {
  value = azurerm_storage_account.events.name
}

output "hsm_name" {
  value = azurerm_key_vault_managed_hardware_security_module.hsm.name
}

output "hsm_uri" {
  value = azurerm_key_vault_managed_hardware_security_module.hsm.hsm_uri
}

output "hsm_key_ids" {
  description = "Versionless ids of the HSM keys, per consumer."
  value       = { for k, v in azurerm_key_vault_managed_hardware_security_module_key.key : k => v.id }
}

output "hsm_tenant_key_ids" {
  description = "Versionless ids of the tenant keys (key scopes), per tenant."
  value       = { for t, v in azurerm_key_vault_managed_hardware_security_module_key.tenant : t => v.id }
}

output "hsm_backup_container_url" {
  value = "${azurerm_storage_account.hsm_backup.primary_blob_endpoint}${azurerm_storage_container.hsm_backup.name}"
}

output "hsm_backup_storage_account_name" {
  value = azurerm_storage_account.hsm_backup.name
}

output "hsm_backup_identity_client_id" {
  value = azurerm_user_assigned_identity.hsm_backup.client_id
}

output "hsm_backup_identity_id" {
  value = azurerm_user_assigned_identity.hsm_backup.id
}

output "disk_encryption_set_id" {
  description = "For the managed-csi-cmk StorageClass (diskEncryptionSetID)."
  value       = azurerm_disk_encryption_set.disks.id
}

output "aks_name" {
  value = azurerm_kubernetes_cluster.aks.name
}

output "aks_oidc_issuer_url" {
  value = azurerm_kubernetes_cluster.aks.oidc_issuer_url
}

output "eventgrid_topic_endpoint" {
  value = azurerm_eventgrid_topic.events.endpoint
}

output "encryption" {
  value = var.encryption
}

# For the cluster root module (infra/terraform-cluster): which cluster it
# installs onto.
output "resource_group_name" {
  value = azurerm_resource_group.main.name
}
