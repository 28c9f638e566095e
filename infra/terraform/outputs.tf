# Everything the app's Spin variables (spin.toml) need from the estate, plus
# what the bridge and the deploy manifests need. Secrets are not outputs: the
# ingest and read keys are the operators' to generate, and in the production
# profile there is no Cosmos DB key at all.
output "spin_variables" {
  description = "Non-secret Spin variables for the app (SpinKube ConfigMap or spin cloud variables)."
  value       = {
    cosmos_endpoint   = trimsuffix(azurerm_cosmosdb_account.main.endpoint, "/")
    cosmos_database   = azurerm_cosmosdb_sql_database.main.name
    cosmos_container  = azurerm_cosmosdb_sql_container.events.name
    cosmos_auth       = "master-key"
    partition_key     = "/source"
    protected_fields  = var.protected_fields
    hsm_endpoint      = trimsuffix(azurerm_key_vault_managed_hardware_security_module.hsm.hsm_uri, "/")
    hsm_key_name      = var.encryption == "customer-managed" ? azurerm_key_vault_managed_hardware_security_module_key.key["app"].name : ""
    identity          = "workload-identity"
    azure_tenant_id   = var.tenant_id
    azure_client_id   = azurerm_user_assigned_identity.consumer["app"].client_id
  }
}

output "bridge_environment" {
  description = "Environment of the queue bridge Deployment."
  value       = {
    BRIDGE_QUEUE_URL    = "${azurerm_storage_account.events.primary_queue_endpoint}${azurerm_storage_queue.events.name}"
    BRIDGE_POISON_QUEUE = azurerm_storage_queue.poison.name
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

output "security_domain_certificate_ids" {
  value = azurerm_key_vault_certificate.security_domain[*].id
}

output "encryption" {
  value = var.encryption
}

# The security domain the provider downloaded at activation, wrapped to the
# security-domain certificates. Save it offline right after the first apply
# (infra/README.md, bootstrap step 3); it is also in the state, so the state
# backend must be as protected as the HSM's administrators.
output "security_domain_encrypted_data" {
  value     = azurerm_key_vault_managed_hardware_security_module.hsm.security_domain_encrypted_data
  sensitive = true
}
