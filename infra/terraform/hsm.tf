data "azurerm_client_config" "current" {}

# ---------------------------------------------------------------------------
# Key Vault Premium. Managed HSM holds every key that a service accepts from
# it; this vault holds the rest, under the same rules (purge protection,
# RSA-HSM keys, key-scoped roles, private endpoint only):
#   - the AKS KMS (etcd secrets) key: AKS KMS takes an Azure Key Vault key id,
#     not a Managed HSM key;
#   - the key of the storage account that keeps the HSM's own full backups: a
#     backup encrypted by the HSM it backs up could not be read after losing
#     that HSM;
# The security domain's custodian keys are in no vault at all: each custodian
# generates an RSA key pair offline and hands over only the certificate
# (infra/README.md, "Activate the HSM"). Key Vault could not hold them
# usefully anyway: a certificate policy may be exportable only with key type
# RSA or EC ("Exportable keys are allowed only with RSA and EC. HSM keys are
# non-exportable", learn.microsoft.com/azure/key-vault/certificates/about-certificates),
# and every exportable private key in one vault is a full quorum for whoever
# administers it; purge protection keeps even deleted ones recoverable.
# ---------------------------------------------------------------------------
resource "azurerm_key_vault" "kv" {
  name                          = "kv-${local.base}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  tenant_id                     = var.tenant_id
  sku_name                      = "premium"
  purge_protection_enabled      = true
  soft_delete_retention_days    = 90
  rbac_authorization_enabled    = true
  public_network_access_enabled = length(var.bootstrap_admin_ip_ranges) > 0 ? true : false
  network_acls {
    default_action = "Deny"
    bypass         = "AzureServices"
    ip_rules       = var.bootstrap_admin_ip_ranges
  }
  tags = local.tags
}

# ---------------------------------------------------------------------------
# Managed HSM: FIPS 140-3 level 3, single tenant; the customer holds the
# security domain.
# ---------------------------------------------------------------------------
resource "azurerm_key_vault_managed_hardware_security_module" "hsm" {
  name                       = "hsm-${local.base}"
  location                   = azurerm_resource_group.main.location
  resource_group_name        = azurerm_resource_group.main.name
  tenant_id                  = var.tenant_id
  sku_name                   = "Standard_B1"
  admin_object_ids           = var.hsm_admin_object_ids
  purge_protection_enabled   = true
  soft_delete_retention_days = 90
  # Private endpoint only, except while bootstrapping. The provider has no IP
  # rules for Managed HSM (network_acls takes default_action and bypass only,
  # azurerm 4.55.0 internal/services/managedhsm/key_vault_managed_hardware_security_module_resource.go),
  # so during bootstrap (bootstrap_admin_ip_ranges set) the HSM admits every
  # network and relies on Entra ID plus local RBAC alone; closing the
  # bootstrap switches both back to Deny / disabled in place (the provider's
  # Update sends network_acls and public_network_access, no replacement).
  public_network_access_enabled = length(var.bootstrap_admin_ip_ranges) > 0 ? true : false
  network_acls {
    default_action = length(var.bootstrap_admin_ip_ranges) > 0 ? "Allow" : "Deny"
    bypass         = "AzureServices"
  }
  # Not activated here: security_domain_key_vault_certificate_ids would make
  # the provider download the security domain inside this create call, with
  # certificates whose private keys sit in a Key Vault. The administrators in
  # admin_object_ids activate it from the custodians' offline certificates
  # (`az keyvault security-domain download`, infra/README.md). Only the
  # Managed HSM Administrator role has securitydomain/download/action
  # (learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles).
  tags = local.tags

  lifecycle {
    prevent_destroy = true
  }
}

resource "azurerm_monitor_diagnostic_setting" "hsm" {
  name                       = "audit-to-log-analytics"
  target_resource_id         = azurerm_key_vault_managed_hardware_security_module.hsm.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  enabled_log {
    category = "AuditEvent"
  }
  enabled_metric {
    category = "AllMetrics"
  }
}

resource "azurerm_monitor_diagnostic_setting" "kv" {
  name                       = "audit-to-log-analytics"
  target_resource_id         = azurerm_key_vault.kv.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  enabled_log {
    category = "AuditEvent"
  }
  enabled_metric {
    category = "AllMetrics"
  }
}

resource "azurerm_private_endpoint" "hsm" {
  name                = "pe-hsm-${local.base}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "hsm"
    private_connection_resource_id = azurerm_key_vault_managed_hardware_security_module.hsm.id
    subresource_names              = ["managedhsm"]
    is_manual_connection           = false
  }
  private_dns_zone_group {
    name                 = "hsm"
    private_dns_zone_ids = [azurerm_private_dns_zone.zone["hsm"].id]
  }
  tags = local.tags
}

resource "azurerm_private_endpoint" "kv" {
  name                = "pe-kv-${local.base}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  subnet_id           = azurerm_subnet.endpoints.id
  private_service_connection {
    name                           = "vault"
    private_connection_resource_id = azurerm_key_vault.kv.id
    subresource_names              = ["vault"]
    is_manual_connection           = false
  }
  private_dns_zone_group {
    name                 = "vault"
    private_dns_zone_ids = [azurerm_private_dns_zone.zone["vault"].id]
  }
  tags = local.tags
}

# ---------------------------------------------------------------------------
# HSM keys: one per consumer, RSA-HSM, wrapKey/unwrapKey only. They exist in
# both stages (the HSM comes first); the switch decides who uses them.
# ---------------------------------------------------------------------------
locals {
  hsm_keys = {
    cosmos  = "Cosmos DB account encryption"
    storage = "Storage account encryption (event queue, poison queue, dead letters)"
    app     = "the app's envelope KEK: wraps each delivery's data key"
    disks   = "AKS node OS disks and persistent volumes, through the Disk Encryption Set"
  }
  # Managed HSM local RBAC built-in role definitions and their data actions:
  # learn.microsoft.com/azure/key-vault/managed-hsm/built-in-roles (the
  # role-permission check, tests/infra/test_runbook_roles.py, keeps the same
  # table and holds every runbook step to it).
  hsm_roles = {
    crypto_service_encryption_user = "/Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/33413926-3206-4cdd-b39a-83574fe37a17"
    backup                         = "/Microsoft.KeyVault/providers/Microsoft.Authorization/roleDefinitions/7b127d3c-77bd-4e3e-bbe0-dbb8971fa7f8"
  }
}

# Everything on the HSM's data plane below (role definition, keys, rotation
# policies, role assignments) depends on its private path, the private
# endpoint and the DNS zone link, as the Key Vault keys wait for theirs: after
# the bootstrap the data plane is reachable through that path only.

# The key administrators' role: read a key, change its attributes (enable,
# disable, expiry: keys/write/action) and rotate it (keys/rotate/action).
# Rotation policies are Terraform's, applied by the deployer. Not key creation or deletion, no cryptographic
# operation, and no roleAssignments/write or roleDefinitions/write, so a key
# administrator cannot grant anyone (themselves included) unwrap. Managed HSM
# Crypto Officer, which this replaces, can do none of read/write/rotate and
# can write role assignments (built-in-roles table).
#
# azurerm 4.55.0 validates data_actions against the Key Vault 7.4 SDK's
# DataAction enum (vendor/github.com/jackofallops/kermit/sdk/keyvault/7.4/keyvault/enums.go),
# which has no keys/rotate/action: Terraform creates the role with read and
# write, and the HSM policy administrators add rotate once from
# hsm-key-admin-role.json (infra/README.md, "Apply order", step 5). The
# permission drift that leaves is ignored here; the offline checks compare
# this resource and that file.
resource "azurerm_key_vault_managed_hardware_security_module_role_definition" "key_admin" {
  name           = uuidv5("url", "cmk-ingest/${local.base}/role/key-administrator")
  managed_hsm_id = azurerm_key_vault_managed_hardware_security_module.hsm.id
  role_name      = "cmk-ingest Key Administrator"
  description    = "Read, update attributes (enable/disable, expiry) and rotate keys. No create, delete, crypto or role management."
  permission {
    data_actions = [
      "Microsoft.KeyVault/managedHsm/keys/read/action",
      "Microsoft.KeyVault/managedHsm/keys/write/action",
    ]
  }
  lifecycle {
    ignore_changes = [permission]
  }
  depends_on = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]
}

resource "azurerm_key_vault_managed_hardware_security_module_key" "key" {
  for_each        = local.hsm_keys
  name            = "${each.key}-kek"
  managed_hsm_id  = azurerm_key_vault_managed_hardware_security_module.hsm.id
  key_type        = "RSA-HSM"
  key_size        = var.hsm_key_size
  key_opts        = ["wrapKey", "unwrapKey"]
  expiration_date = var.key_expiration_date
  tags            = merge(local.tags, { purpose = each.value })

  lifecycle {
    prevent_destroy = true
    # Never updated after creation: the provider's Update sends every key
    # update with `enabled = true` (azurerm 4.55.0
    # key_vault_managed_hardware_security_module_key_resource.go, Update),
    # so any change here (tags follow the stage) would re-enable a key
    # disabled for revocation. Rotation creates new versions outside
    # Terraform. tests/infra/test_key_updates.py.
    ignore_changes = [key_opts, tags, expiration_date, not_before_date]
  }
  depends_on = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]
}

# Rotation: a new version every key_rotation_after (Azure's minimum is 7 days);
# versions expire after key_expire_after. Cosmos DB, Storage and the Disk
# Encryption Set follow the versionless key id; the runbook keeps each old
# version enabled until every consumer has moved. managed_hsm_key_id takes
# the versionless key id (the key resource's `id`); azurerm 4.55.0 deprecates
# no managed_hsm_key_id argument of the resources used here.
resource "azurerm_key_vault_managed_hardware_security_module_key_rotation_policy" "key" {
  for_each            = local.hsm_keys
  managed_hsm_key_id  = azurerm_key_vault_managed_hardware_security_module_key.key[each.key].id
  time_after_creation = var.key_rotation_after
  expire_after        = var.key_expire_after
  depends_on          = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]
}

# Each consumer's identity may get, wrap and unwrap with its own key only.
resource "azurerm_key_vault_managed_hardware_security_module_role_assignment" "consumer" {
  for_each           = local.hsm_keys
  managed_hsm_id     = azurerm_key_vault_managed_hardware_security_module.hsm.id
  name               = uuidv5("url", "cmk-ingest/${local.base}/${each.key}/crypto-service-encryption-user")
  scope              = "/keys/${azurerm_key_vault_managed_hardware_security_module_key.key[each.key].name}"
  role_definition_id = local.hsm_roles.crypto_service_encryption_user
  principal_id       = azurerm_user_assigned_identity.consumer[each.key].principal_id
  depends_on         = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]
}

# Attributes, rotation policy and rotation of each key stay with the key admin
# group, key by key, through the custom role above.
resource "azurerm_key_vault_managed_hardware_security_module_role_assignment" "key_admin" {
  for_each           = local.hsm_keys
  managed_hsm_id     = azurerm_key_vault_managed_hardware_security_module.hsm.id
  name               = uuidv5("url", "cmk-ingest/${local.base}/${each.key}/key-administrator")
  scope              = "/keys/${azurerm_key_vault_managed_hardware_security_module_key.key[each.key].name}"
  role_definition_id = azurerm_key_vault_managed_hardware_security_module_role_definition.key_admin.resource_manager_id
  principal_id       = var.key_admin_group_object_id
  depends_on         = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]
}

# ---------------------------------------------------------------------------
# Key scopes: one HSM key per tenant (var.tenant_keys), for the app's envelope
# encryption only. Every resource below is a for_each keyed by the tenant, so
# adding or removing one tenant adds or removes that tenant's instances
# (`...tenant["<tenant>"]`) and changes no other key, rotation policy or role
# assignment (tests/infra/test_tenant_keys.py compares the instance addresses
# and arguments for two values of the variable). The keys are built exactly
# as the consumer keys above: RSA-HSM of hsm_key_size bits, wrapKey/unwrapKey
# only, the same expiry, rotation policy and prevent_destroy.
#
# Erasing a tenant (crypto-shredding) is a runbook step, never a plan: a plan
# that would destroy a tenant key stops at prevent_destroy (lifecycle cannot
# differ per instance), and azurerm 4.55.0 would only soft-delete it anyway
# (purge protection; features.key_vault in versions.tf). infra/README.md,
# "Erase a tenant": the key leaves the state (`terraform state rm`), the
# tenant leaves tenant_keys, Terraform removes the tenant's role assignments,
# and an officer deletes the key; the HSM purges it when soft delete ends.
# ---------------------------------------------------------------------------
resource "azurerm_key_vault_managed_hardware_security_module_key" "tenant" {
  for_each        = var.tenant_keys
  name            = each.value.key_name
  managed_hsm_id  = azurerm_key_vault_managed_hardware_security_module.hsm.id
  key_type        = "RSA-HSM"
  key_size        = var.hsm_key_size
  key_opts        = ["wrapKey", "unwrapKey"]
  expiration_date = var.key_expiration_date
  tags            = merge(local.tags, { purpose = "the app's envelope KEK for one key scope (tenant)" })

  lifecycle {
    prevent_destroy = true
    # Never updated after creation: the provider's Update sends every key
    # update with `enabled = true` (azurerm 4.55.0
    # key_vault_managed_hardware_security_module_key_resource.go, Update),
    # so any change here (tags follow the stage) would re-enable a key
    # disabled for revocation. Rotation creates new versions outside
    # Terraform. tests/infra/test_key_updates.py.
    ignore_changes = [key_opts, tags, expiration_date, not_before_date]
    # With features.key_vault.recover_soft_deleted_hardware_security_module_keys
    # (versions.tf), the provider's Create answers a 409 from the HSM by
    # recovering the soft-deleted key of that name (azurerm 4.55.0
    # key_vault_managed_hardware_security_module_key_resource.go, Create:
    # `RecoverSoftDeletedHSMKeys && ResponseWasConflict` -> RecoverDeletedKey).
    # An erased tenant's key name listed in erased_tenant_key_names can
    # therefore never come back through a plan.
    precondition {
      condition     = !contains([for n in var.erased_tenant_key_names : lower(n)], lower(each.value.key_name))
      error_message = "This key name belongs to an erased tenant (erased_tenant_key_names): creating it would recover the soft-deleted key and make the erased records readable again."
    }
  }
  depends_on = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]
}

resource "azurerm_key_vault_managed_hardware_security_module_key_rotation_policy" "tenant" {
  for_each            = var.tenant_keys
  managed_hsm_key_id  = azurerm_key_vault_managed_hardware_security_module_key.tenant[each.key].id
  time_after_creation = var.key_rotation_after
  expire_after        = var.key_expire_after
  depends_on          = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]
}

# The app identity may get, wrap and unwrap with each tenant key, one
# assignment per key, scoped to that key alone.
resource "azurerm_key_vault_managed_hardware_security_module_role_assignment" "tenant_app" {
  for_each           = var.tenant_keys
  managed_hsm_id     = azurerm_key_vault_managed_hardware_security_module.hsm.id
  name               = uuidv5("url", "cmk-ingest/${local.base}/tenant/${each.key}/crypto-service-encryption-user")
  scope              = "/keys/${azurerm_key_vault_managed_hardware_security_module_key.tenant[each.key].name}"
  role_definition_id = local.hsm_roles.crypto_service_encryption_user
  principal_id       = azurerm_user_assigned_identity.consumer["app"].principal_id
  depends_on         = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]
}

# Attributes and rotation of each tenant key stay with the key admin group,
# key by key, as for the consumer keys.
resource "azurerm_key_vault_managed_hardware_security_module_role_assignment" "tenant_key_admin" {
  for_each           = var.tenant_keys
  managed_hsm_id     = azurerm_key_vault_managed_hardware_security_module.hsm.id
  name               = uuidv5("url", "cmk-ingest/${local.base}/tenant/${each.key}/key-administrator")
  scope              = "/keys/${azurerm_key_vault_managed_hardware_security_module_key.tenant[each.key].name}"
  role_definition_id = azurerm_key_vault_managed_hardware_security_module_role_definition.key_admin.resource_manager_id
  principal_id       = var.key_admin_group_object_id
  depends_on         = [azurerm_private_endpoint.hsm, azurerm_private_dns_zone_virtual_network_link.link]
}

# ---------------------------------------------------------------------------
# Key Vault keys (see the top of this file for why these live in Key Vault).
# ---------------------------------------------------------------------------
resource "azurerm_key_vault_key" "hsm_backup_storage" {
  name            = "hsm-backup-storage-kek"
  key_vault_id    = azurerm_key_vault.kv.id
  key_type        = "RSA-HSM"
  key_size        = var.hsm_key_size
  key_opts        = ["wrapKey", "unwrapKey"]
  expiration_date = var.key_expiration_date
  rotation_policy {
    expire_after         = var.key_expire_after
    notify_before_expiry = "P30D"
    automatic {
      time_after_creation = var.key_rotation_after
    }
  }
  tags = local.tags
  lifecycle {
    prevent_destroy = true
    # Never updated after creation: the provider's Update sends `enabled =
    # true` with every change, the rotation policy's too (azurerm 4.55.0
    # key_vault_key_resource.go, resourceKeyVaultKeyUpdate), which would
    # re-enable a disabled key; and the deployer may no longer hold the
    # role that writes keys. tests/infra/test_key_updates.py.
    ignore_changes = [key_opts, tags, expiration_date, not_before_date, rotation_policy]
  }
  depends_on = [azurerm_private_endpoint.kv]
}

resource "azurerm_key_vault_key" "etcd_kms" {
  #checkov:skip=CKV_CMK_2:AKS KMS encrypts and decrypts the etcd data keys with encrypt/decrypt, not wrapKey/unwrapKey; the key is scoped to the cluster identity alone
  name            = "aks-etcd-kms-kek"
  key_vault_id    = azurerm_key_vault.kv.id
  key_type        = "RSA-HSM"
  key_size        = var.hsm_key_size
  key_opts        = ["encrypt", "decrypt"]
  expiration_date = var.key_expiration_date
  rotation_policy {
    expire_after         = var.key_expire_after
    notify_before_expiry = "P30D"
    automatic {
      time_after_creation = var.key_rotation_after
    }
  }
  tags = local.tags
  lifecycle {
    prevent_destroy = true
    # Never updated after creation: the provider's Update sends `enabled =
    # true` with every change, the rotation policy's too (azurerm 4.55.0
    # key_vault_key_resource.go, resourceKeyVaultKeyUpdate), which would
    # re-enable a disabled key; and the deployer may no longer hold the
    # role that writes keys. tests/infra/test_key_updates.py.
    ignore_changes = [key_opts, tags, expiration_date, not_before_date, rotation_policy]
  }
  depends_on = [azurerm_private_endpoint.kv]
}

resource "azurerm_role_assignment" "hsm_backup_storage_key" {
  scope                = azurerm_key_vault_key.hsm_backup_storage.resource_versionless_id
  role_definition_name = "Key Vault Crypto Service Encryption User"
  principal_id         = azurerm_user_assigned_identity.hsm_backup.principal_id
}

resource "azurerm_role_assignment" "etcd_kms_key" {
  scope                = azurerm_key_vault_key.etcd_kms.resource_versionless_id
  role_definition_name = "Key Vault Crypto User"
  principal_id         = azurerm_user_assigned_identity.aks.principal_id
}
