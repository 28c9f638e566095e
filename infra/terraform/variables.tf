variable "subscription_id" {
  description = "Azure subscription to deploy into."
  type        = string
}

variable "location" {
  description = "Azure region; it must offer Managed HSM, Cosmos DB CMK and AKS encryption at host."
  type        = string
  default     = "westeurope"
}

variable "name" {
  description = "Prefix of every resource name (lowercase letters and digits)."
  type        = string
  default     = "cmkingest"
  validation {
    condition     = can(regex("^[a-z][a-z0-9]{2,11}$", var.name))
    error_message = "name: 3-12 lowercase letters and digits, starting with a letter."
  }
}

# The one switch between the two stages. "microsoft-managed": everything is
# provisioned (the HSM and its keys included) but Cosmos DB, Storage and the
# disks use Microsoft-managed keys and the app seals no fields.
# "customer-managed": Cosmos DB, Storage, the node disks and the app's
# envelope encryption all use keys in the Managed HSM.
variable "encryption" {
  description = "microsoft-managed | customer-managed"
  type        = string
  default     = "customer-managed"
  validation {
    condition     = contains(["microsoft-managed", "customer-managed"], var.encryption)
    error_message = "encryption must be microsoft-managed or customer-managed."
  }
}

# "production" disables Cosmos DB local (master-key) authentication: the app
# reaches Cosmos DB with Entra ID tokens for its own identity
# (cosmos_auth = entra) through the data-plane role in cosmos.tf, and no
# account key exists for anyone to hold. "development" keeps the master key
# (cosmos_auth = master-key, cosmos_key from a Secret) for trying the app.
variable "profile" {
  description = "production | development"
  type        = string
  default     = "production"
  validation {
    condition     = contains(["production", "development"], var.profile)
    error_message = "profile must be production or development."
  }
}

variable "tenant_id" {
  description = "Entra ID tenant of the HSM, the identities and the cluster's RBAC."
  type        = string
}

# The Managed HSM Administrators (built-in role at "/", assigned at creation):
# the security officers who activate the HSM (only Administrator has
# securitydomain/download/action), grant the deployer its time-bound roles and
# run restores. People, not the Terraform principal.
variable "hsm_admin_object_ids" {
  description = "Object ids of the Managed HSM administrators (the security officers: at least two people, never the Terraform principal)."
  type        = list(string)
  validation {
    condition     = length(var.hsm_admin_object_ids) >= 2
    error_message = "At least two HSM administrators (security officers) are needed."
  }
}

variable "key_admin_group_object_id" {
  description = "Entra group of the key administrators: gets the custom cmk-ingest Key Administrator role on each key (never HSM-wide), nothing in the cluster."
  type        = string
}

variable "cluster_admin_group_object_id" {
  description = "Entra group of the cluster administrators: the cluster's Entra admin group and AKS RBAC Cluster Admin. A cluster administrator can run a pod, or mint a service-account token, as the app's workload identity, and so unwrap through it: this group must be neither the key administrators' group nor an HSM administrator, so that no one group both manages the keys and uses them."
  type        = string
  validation {
    condition     = lower(var.cluster_admin_group_object_id) != lower(var.key_admin_group_object_id) && !contains([for id in var.hsm_admin_object_ids : lower(id)], lower(var.cluster_admin_group_object_id))
    error_message = "cluster_admin_group_object_id must differ from key_admin_group_object_id and from every hsm_admin_object_ids entry (object ids compared in any case): cluster administrators can act as the app's identity."
  }
}

variable "hsm_key_size" {
  description = "RSA-HSM size of every key: 2048 (default) or 3072, the sizes of the reference design. On Managed HSM, RSA-3072 unwrap throughput is about a third of RSA-2048's."
  type        = number
  default     = 2048
  validation {
    condition     = contains([2048, 3072], var.hsm_key_size)
    error_message = "hsm_key_size must be 2048 or 3072."
  }
}

variable "key_rotation_after" {
  description = "ISO 8601 duration after creation when the HSM rotates a key (at least P7D; Azure's minimum for a rotation policy)."
  type        = string
  default     = "P180D"
}

variable "key_expire_after" {
  description = "ISO 8601 duration after which a key version expires; longer than key_rotation_after so old versions outlive the switch to the new one."
  type        = string
  default     = "P2Y"
}

variable "key_expiration_date" {
  description = "Hard expiry (RFC 3339) of the current key versions; rotation creates new versions before it."
  type        = string
  default     = "2028-12-31T00:00:00Z"
}

variable "etcd_kms_key_version" {
  description = "Version of aks-etcd-kms-kek that AKS KMS encrypts etcd with; null (the default) for the version Terraform created. The key's rotation policy makes new versions, but AKS keeps the one it was given until this names another (infra/README.md, Key rotation, step 4): move it before the version in use expires."
  type        = string
  default     = null
  validation {
    condition     = var.etcd_kms_key_version == null || can(regex("^[0-9a-f]{32}$", var.etcd_kms_key_version))
    error_message = "etcd_kms_key_version is a key version: 32 lower-case hexadecimal characters (the last segment of the key's versioned id)."
  }
}

# Bootstrap only: the HSM and the Key Vault are reachable from nowhere but the
# private endpoints. While the HSM is activated and Terraform first creates
# keys and role assignments from outside the virtual network, set this to the
# operators' public ranges; set it back to [] (the default) afterwards. Key
# Vault, Storage and Cosmos DB admit exactly these ranges; the Managed HSM
# has no IP rules in the provider and admits every network meanwhile
# (default_action Allow, Entra ID and local RBAC still required). The checks
# fail while it is set.
variable "bootstrap_admin_ip_ranges" {
  description = "Public CIDR ranges allowed to the HSM, Key Vault, Storage, Cosmos DB during bootstrap only."
  type        = list(string)
  default     = []
}

variable "aks_authorized_ip_ranges" {
  description = "Ranges that may reach the AKS API server; empty makes the API server private."
  type        = list(string)
  default     = []
}

variable "kubernetes_version" {
  description = "AKS Kubernetes version (minor); the auto-upgrade channel keeps patches current."
  type        = string
  default     = "1.33"
}

variable "system_vm_size" {
  type    = string
  default = "Standard_D4ds_v5"
}

variable "wasm_vm_size" {
  type    = string
  default = "Standard_D4ds_v5"
}

variable "vnet_cidr" {
  type    = string
  default = "10.42.0.0/16"
}

variable "app_webhook_url" {
  description = "If set, an extra Event Grid subscription delivers straight to the app's POST /events: with ingest_entra_app_id_or_uri set it authenticates with Entra ID tokens, otherwise set webhook_ingest_key (sent in the x-cmk-ingest-key header). Never put the key in the URL."
  type        = string
  default     = ""
  sensitive   = true
}

variable "kubernetes_namespace" {
  type    = string
  default = "cmk-ingest"
}

variable "tags" {
  type    = map(string)
  default = {}
}

variable "protected_fields" {
  description = "The app's protected_fields (JSON: event type -> JSON Pointers into the event). Also excludes those paths from the Cosmos DB index."
  type        = string
  default     = "{\"*\": [\"/data\"]}"
}

variable "hsm_backup_retention_days" {
  description = "Days each HSM backup blob stays immutable."
  type        = number
  default     = 35
}

variable "hsm_backup_immutability_locked" {
  description = "Lock the backup container's immutability policy (irreversible: do it after the first restore drill)."
  type        = bool
  default     = false
}

# Event Grid's "Microsoft Entra ID" webhook authentication for the optional
# direct subscription (app_webhook_url): the client id or application ID URI
# of an app registration that defines the app role
# AzureEventGridSecureWebhookSubscriber, assigned to Event Grid's service
# principal (infra/README.md, "Entra protected delivery"). Event Grid then
# sends a bearer token for it; the app accepts it as ingest_entra_audiences.
# Empty: the webhook presents webhook_ingest_key in x-cmk-ingest-key instead.
# Delivery through the storage queue needs neither.
variable "ingest_entra_app_id_or_uri" {
  description = "App registration (client id or application ID URI) Event Grid requests webhook tokens for; empty: key-authenticated webhook."
  type        = string
  default     = ""
}

variable "cosmos_write_mode" {
  description = "The app's cosmos_write_mode: create (never overwrite a stored event; redeliveries are verified) or upsert."
  type        = string
  default     = "create"
  validation {
    condition     = contains(["create", "upsert"], var.cosmos_write_mode)
    error_message = "cosmos_write_mode must be create or upsert."
  }
}

variable "hsm_local_wrap" {
  description = "The app's hsm_local_wrap: wrap data keys with the KEK's public key instead of calling the HSM per delivery (docs/keys-and-identity.md). Off keeps a per-wrap HSM audit record."
  type        = bool
  default     = false
}

variable "webhook_ingest_key" {
  description = "For a key-authenticated app_webhook_url (ingest_entra_app_id_or_uri empty): one of the app's ingest_keys, sent by Event Grid as the secret static delivery property x-cmk-ingest-key."
  type        = string
  default     = ""
  sensitive   = true
  validation {
    condition     = var.webhook_ingest_key == "" || length(var.webhook_ingest_key) >= 16
    error_message = "webhook_ingest_key must be one of the app's ingest_keys (at least 16 characters; use 32 or more random characters)."
  }
}

# The stage switch on a populated estate (infra/README.md, "Stage switch"):
# the Cosmos DB account cannot take a Managed HSM key in place, so the
# customer-managed account is a new generation beside the stage-one one.
variable "cosmos_account_generation" {
  description = "Generation of the serving Cosmos DB account (its name: cosmos-<base>, then cosmos-<base>-g<N>). Raise by one only in the documented migration."
  type        = number
  default     = 1
  validation {
    condition     = var.cosmos_account_generation >= 1 && floor(var.cosmos_account_generation) == var.cosmos_account_generation
    error_message = "cosmos_account_generation is a whole number from 1."
  }
}

variable "cosmos_retiring_account_name" {
  description = "During a migration only: the name of the previous Cosmos DB account, kept (never changed or deleted by Terraform) until it is removed by an explicit step. Empty otherwise."
  type        = string
  default     = ""
}

variable "cosmos_migration_operator_object_ids" {
  description = "During a migration only: Entra object ids of the operators who run scripts/migrate-records. Each gets Cosmos DB Built-in Data Contributor on the serving account and Built-in Data Reader on the retiring one; set back to [] at the migration's last step, which removes both."
  type        = list(string)
  default     = []
}

# ---------------------------------------------------------------------------
# Key scopes (per-tenant keys). The app picks a tenant from each event with
# key_scope_pointer, looks it up in key_scope_keys (built from tenant_keys)
# and seals that event's protected fields under the tenant's own HSM key
# (docs/keys-and-identity.md). Empty pointer: one key (hsm_key_name) for all.
# ---------------------------------------------------------------------------
variable "tenant_keys" {
  description = "Key scopes: tenant (the value key_scope_pointer selects) -> { key_name = the tenant's RSA-HSM key in the Managed HSM }. Each entry gets its own key, rotation policy and key-scoped roles (hsm.tf); adding or removing one touches no other. Remove an entry only through the erase runbook (infra/README.md, \"Erase a tenant\")."
  type = map(object({
    key_name = string
  }))
  default = {}
  validation {
    # The app refuses a key_scope_keys of more entries (MAX_MAPPED_KEYS in
    # core/src/config/scopes.rs): every pod would stay unready.
    condition     = length(var.tenant_keys) <= 200
    error_message = "tenant_keys: at most 200 tenants (the app's key_scope_keys limit)."
  }
  validation {
    # Printable ASCII without spaces: the value also appears in role
    # assignment names (uuidv5 input) and resource addresses.
    condition     = alltrue([for t in keys(var.tenant_keys) : can(regex("^[[:graph:]]{1,256}$", t))])
    error_message = "tenant_keys: each tenant is 1-256 printable ASCII characters without spaces."
  }
  validation {
    # Managed HSM key names: "a 1-127 character string, starting with a
    # letter and containing only 0-9, a-z, A-Z, and -"
    # (learn.microsoft.com/azure/key-vault/general/about-keys-secrets-certificates,
    # "Object identifiers"); azurerm 4.55.0 does not validate the key name.
    condition     = alltrue([for v in values(var.tenant_keys) : can(regex("^[A-Za-z][A-Za-z0-9-]{0,126}$", v.key_name))])
    error_message = "tenant_keys: each key_name is 1-127 characters, a letter first, then letters, digits and hyphens (Managed HSM key names)."
  }
  validation {
    # Key names are case-insensitive in the HSM: one key per tenant, never
    # shared, and never one of the consumer keys (local.hsm_keys: "<consumer>-kek").
    condition = (
      length(distinct([for v in values(var.tenant_keys) : lower(v.key_name)])) == length(var.tenant_keys)
      && length(setintersection([for v in values(var.tenant_keys) : lower(v.key_name)], ["cosmos-kek", "storage-kek", "app-kek", "disks-kek"])) == 0
    )
    error_message = "tenant_keys: every tenant needs a key name of its own (case-insensitive), other than cosmos-kek, storage-kek, app-kek and disks-kek."
  }
}

variable "erased_tenant_key_names" {
  description = "Key names of erased tenants (infra/README.md, \"Erase a tenant\"). A tenant key of one of these names is refused: creating it would recover the soft-deleted key. Keep every name here for good."
  type        = list(string)
  default     = []
}

variable "key_scope_pointer" {
  description = "The app's key_scope_pointer: JSON Pointer (RFC 6901) into each event that selects its tenant, e.g. /data/tenantId or /source. Empty: key scopes off, every record under hsm_key_name."
  type        = string
  default     = ""
  validation {
    # As the app checks it (core/src/config/scopes.rs): no empty token and no
    # token that is exactly `*` (the app's wildcard, not one field).
    condition     = var.key_scope_pointer == "" || can(regex("^(/(([^~/*]|~[01])([^~/]|~[01])*|[*]([^~/]|~[01])+))+$", var.key_scope_pointer))
    error_message = "key_scope_pointer is empty or a JSON Pointer to one field: one or more /-prefixed non-empty tokens, none exactly *, ~ only as ~0 or ~1."
  }
}

variable "key_scope_unknown" {
  description = "The app's key_scope_unknown: what an event whose tenant is not in tenant_keys gets: refuse (a 4xx the sender must not retry) or default (sealed under hsm_key_name)."
  type        = string
  default     = "refuse"
  validation {
    condition     = contains(["refuse", "default"], var.key_scope_unknown)
    error_message = "key_scope_unknown must be refuse or default."
  }
}
