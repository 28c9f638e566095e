# ---------------------------------------------------------------------------
# Disks under the customer key: a Disk Encryption Set whose key is the HSM's
# "disks-kek" (wrap/unwrap only), used through its own identity with the
# key-scoped Crypto Service Encryption User role. The cluster's node OS disks
# use it, and so do persistent volumes through the managed-csi-cmk
# StorageClass (infra/deploy/spinkube/storageclass.yaml).
#
# disk_encryption_set_id is ForceNew on the cluster (azurerm 4.55.0
# internal/services/containers/kubernetes_cluster_resource.go): setting it only
# in the customer-managed stage replaced the cluster at the switch. The key
# exists in both stages, so the cluster takes the set from creation in both,
# and the stage switch changes nothing on the cluster that forces a new one
# (KMS, key_management_service, updates in place). Prerequisites of the
# cluster: infra/README.md, "Apply order" (EncryptionAtHost feature).
# ---------------------------------------------------------------------------
resource "azurerm_disk_encryption_set" "disks" {
  name                      = "des-${local.base}"
  location                  = azurerm_resource_group.main.location
  resource_group_name       = azurerm_resource_group.main.name
  managed_hsm_key_id        = azurerm_key_vault_managed_hardware_security_module_key.key["disks"].id
  auto_key_rotation_enabled = true
  encryption_type           = "EncryptionAtRestWithCustomerKey"
  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.consumer["disks"].id]
  }
  tags       = local.tags
  depends_on = [azurerm_key_vault_managed_hardware_security_module_role_assignment.consumer]
}

# The cluster identity creates disks with the set (node OS disks and volumes).
resource "azurerm_role_assignment" "aks_des" {
  scope                = azurerm_disk_encryption_set.disks.id
  role_definition_name = "Reader"
  principal_id         = azurerm_user_assigned_identity.aks.principal_id
}

resource "azurerm_kubernetes_cluster" "aks" {
  #checkov:skip=CKV_AZURE_226:OS disks are managed disks under the HSM key (Disk Encryption Set); ephemeral OS disks would need every pool scaled to zero to take a rotated key
  name                = "aks-${local.base}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  dns_prefix          = "aks-${local.base}"
  kubernetes_version  = var.kubernetes_version
  sku_tier            = "Standard"
  node_resource_group = "rg-${var.name}-nodes"

  automatic_upgrade_channel = "patch"
  node_os_upgrade_channel   = "NodeImage"

  # Workload identity: pods exchange projected service-account tokens for
  # Entra tokens of the identities federated in identities.tf.
  oidc_issuer_enabled       = true
  workload_identity_enabled = true

  # Entra ID sign-in and Azure RBAC for Kubernetes; no local accounts.
  local_account_disabled            = true
  role_based_access_control_enabled = true
  azure_active_directory_role_based_access_control {
    tenant_id              = var.tenant_id
    azure_rbac_enabled     = true
    admin_group_object_ids = [var.cluster_admin_group_object_id]
  }

  # Private API server unless authorized ranges are given.
  private_cluster_enabled = length(var.aks_authorized_ip_ranges) == 0
  api_server_access_profile {
    authorized_ip_ranges                = var.aks_authorized_ip_ranges
    virtual_network_integration_enabled = true
    subnet_id                           = azurerm_subnet.apiserver.id
  }

  # Node OS disks under the HSM key, from creation, in both stages (see the
  # top of this file).
  disk_encryption_set_id = azurerm_disk_encryption_set.disks.id

  # etcd secrets under the Key Vault key (see hsm.tf for why Key Vault).
  dynamic "key_management_service" {
    for_each = var.encryption == "customer-managed" ? [1] : []
    content {
      # The resource's `id` is the version it created, whatever the rotation
      # policy has made since (azurerm 4.55.0 key_vault_key_resource.go,
      # Read, keeps the state's version): AKS moves only when told to.
      key_vault_key_id = (var.etcd_kms_key_version == null ? azurerm_key_vault_key.etcd_kms.id
      : "${azurerm_key_vault_key.etcd_kms.versionless_id}/${var.etcd_kms_key_version}")
      key_vault_network_access = "Private"
    }
  }

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.aks.id]
  }
  kubelet_identity {
    user_assigned_identity_id = azurerm_user_assigned_identity.kubelet.id
    client_id                 = azurerm_user_assigned_identity.kubelet.client_id
    object_id                 = azurerm_user_assigned_identity.kubelet.principal_id
  }

  # System pool: cluster add-ons only.
  default_node_pool {
    name                         = "system"
    vm_size                      = var.system_vm_size
    vnet_subnet_id               = azurerm_subnet.nodes.id
    only_critical_addons_enabled = true
    host_encryption_enabled      = true
    os_disk_type                 = "Managed"
    os_sku                       = "AzureLinux"
    auto_scaling_enabled         = true
    min_count                    = 2
    max_count                    = 4
    max_pods                     = 110
    zones                        = ["1", "2", "3"]
    temporary_name_for_rotation  = "systemtmp"
    upgrade_settings {
      max_surge = "33%"
    }
  }

  # Azure CNI overlay with Cilium network policy.
  network_profile {
    network_plugin      = "azure"
    network_plugin_mode = "overlay"
    network_data_plane  = "cilium"
    network_policy      = "cilium"
    pod_cidr            = "192.168.0.0/16"
    service_cidr        = "172.16.0.0/16"
    dns_service_ip      = "172.16.0.10"
    outbound_type       = "loadBalancer"
    load_balancer_sku   = "standard"
  }

  # KEDA add-on: scales the bridge on queue length.
  workload_autoscaler_profile {
    keda_enabled = true
  }

  # Container Insights into the shared workspace, with managed identity. What
  # it collects is the data collection rule below (container_insights).
  oms_agent {
    log_analytics_workspace_id      = azurerm_log_analytics_workspace.main.id
    msi_auth_for_monitoring_enabled = true
  }

  microsoft_defender {
    log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  }

  azure_policy_enabled = true

  key_vault_secrets_provider {
    secret_rotation_enabled = true
  }

  storage_profile {
    disk_driver_enabled = true
    file_driver_enabled = false
    blob_driver_enabled = false
  }

  tags = local.tags

  # Etcd and the node disks live here: no plan replaces the cluster. A change
  # that needs a new cluster is an explicit, separate step (infra/README.md,
  # "Stage switch"); the Helm releases are in infra/terraform-cluster and
  # re-applied against the cluster that exists.
  lifecycle {
    prevent_destroy = true
  }

  depends_on = [
    azurerm_role_assignment.aks_network,
    azurerm_role_assignment.aks_kubelet_operator,
    azurerm_role_assignment.aks_des,
    azurerm_role_assignment.etcd_kms_key,
    azurerm_role_assignment.aks_kms_private_link,
  ]
}

# KMS with a private Key Vault: the cluster identity creates the private link
# the KMS plugin uses, which needs "Key Vault Contributor" on the vault
# (learn.microsoft.com/azure/aks/use-kms-etcd-encryption, "Assign permissions
# to create a private link"). A control-plane role: no key, secret or certificate
# data action; the vault's data plane stays on Azure RBAC.
resource "azurerm_role_assignment" "aks_kms_private_link" {
  scope                = azurerm_key_vault.kv.id
  role_definition_name = "Key Vault Contributor"
  principal_id         = azurerm_user_assigned_identity.aks.principal_id
}

# Wasm pool: runs the Spin apps and the bridge (containerd-shim-spin is
# installed on these nodes by the runtime class manager's Shim, which selects
# the label spin=true). The system pool takes critical add-ons only, so
# workloads land here without taints (SpinApp has no tolerations field).
resource "azurerm_kubernetes_cluster_node_pool" "wasm" {
  name                    = "wasm"
  kubernetes_cluster_id   = azurerm_kubernetes_cluster.aks.id
  mode                    = "User"
  vm_size                 = var.wasm_vm_size
  vnet_subnet_id          = azurerm_subnet.nodes.id
  host_encryption_enabled = true
  os_disk_type            = "Managed"
  os_sku                  = "AzureLinux"
  auto_scaling_enabled    = true
  min_count               = 2
  max_count               = 10
  max_pods                = 110
  zones                   = ["1", "2", "3"]
  node_labels             = {
    "spin"     = "true"
    "workload" = "wasm"
  }
  upgrade_settings {
    max_surge = "33%"
  }
  tags = local.tags
}

resource "azurerm_monitor_diagnostic_setting" "aks" {
  name                       = "aks-to-log-analytics"
  target_resource_id         = azurerm_kubernetes_cluster.aks.id
  log_analytics_workspace_id = azurerm_log_analytics_workspace.main.id
  enabled_log {
    category = "kube-audit-admin"
  }
  enabled_log {
    category = "guard"
  }
}

# The cluster administrators administer the cluster through Azure RBAC. Not
# the key administrators: whoever can create pods or service-account tokens
# in the app's namespace can act as the app's workload identity, which
# unwraps (tests/infra/test_cluster_admins.py).
resource "azurerm_role_assignment" "aks_admins" {
  scope                = azurerm_kubernetes_cluster.aks.id
  role_definition_name = "Azure Kubernetes Service RBAC Cluster Admin"
  principal_id         = var.cluster_admin_group_object_id
}

# What Container Insights collects, stated rather than left to a default: the
# operator's queries (infra/monitoring/queries) read containers' stdout and
# stderr from ContainerLogV2, which the rule's ContainerInsights extension
# turns on with dataCollectionSettings.enableContainerLogV2 = true
# (https://learn.microsoft.com/azure/azure-monitor/containers/container-insights-logs-schema,
# "Enable the ContainerLogV2 schema"; the Terraform onboarding, a rule plus
# its association with the cluster:
# https://learn.microsoft.com/azure/azure-monitor/containers/kubernetes-monitoring-enable).
locals {
  container_insights_streams = [
    "Microsoft-ContainerLogV2",
    "Microsoft-KubeEvents",
    "Microsoft-KubePodInventory",
    "Microsoft-KubeNodeInventory",
    "Microsoft-InsightsMetrics",
  ]
}

resource "azurerm_monitor_data_collection_rule" "container_insights" {
  name                = "MSCI-${azurerm_resource_group.main.location}-${azurerm_kubernetes_cluster.aks.name}"
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  tags                = local.tags

  destinations {
    log_analytics {
      name                  = "ciworkspace"
      workspace_resource_id = azurerm_log_analytics_workspace.main.id
    }
  }

  data_flow {
    streams      = local.container_insights_streams
    destinations = ["ciworkspace"]
  }

  data_sources {
    extension {
      name           = "ContainerInsightsExtension"
      extension_name = "ContainerInsights"
      streams        = local.container_insights_streams
      extension_json = jsonencode({
        dataCollectionSettings = {
          interval               = "1m"
          namespaceFilteringMode = "Off"
          enableContainerLogV2   = true
        }
      })
    }
  }
}

resource "azurerm_monitor_data_collection_rule_association" "container_insights" {
  name                    = "ContainerInsightsExtension"
  target_resource_id      = azurerm_kubernetes_cluster.aks.id
  data_collection_rule_id = azurerm_monitor_data_collection_rule.container_insights.id
  description             = "Container Insights collection for the cluster (ContainerLogV2); removing it stops the logs the alerts read."
}
