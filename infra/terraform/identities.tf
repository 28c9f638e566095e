# One user-assigned identity per consumer of a key, and one per workload that
# needs Azure access. None of them can use another's key.
resource "azurerm_user_assigned_identity" "consumer" {
  for_each            = local.hsm_keys
  name                = "id-${var.name}-${each.key}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = merge(local.tags, { uses = "${each.key}-kek" })
}

# The queue bridge: reads the event queue, moves poison messages. No key.
resource "azurerm_user_assigned_identity" "bridge" {
  name                = "id-${var.name}-bridge"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

# The HSM full-backup operator (and the identity the HSM writes backups with).
resource "azurerm_user_assigned_identity" "hsm_backup" {
  name                = "id-${var.name}-hsm-backup"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

# The AKS control plane (KMS, network) and the kubelet.
resource "azurerm_user_assigned_identity" "aks" {
  name                = "id-${var.name}-aks"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_user_assigned_identity" "kubelet" {
  name                = "id-${var.name}-kubelet"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

# Workload identity: Kubernetes service accounts (infra/deploy) exchange their
# projected tokens for these identities.
#
# The app's identity is federated to the token proxy's service account, not
# to the SpinApp's: the component cannot read a projected token file (its
# world has no filesystem), so the proxy (cmk-token-proxy, a plain
# Deployment) holds the federation and serves the app's tokens to the app's
# pods only (NetworkPolicy + identity header; docs/keys-and-identity.md). The
# SpinApp's own service account is federated to nothing.
resource "azurerm_federated_identity_credential" "app" {
  name                = "aks-${var.kubernetes_namespace}-token-proxy"
  resource_group_name = azurerm_resource_group.main.name
  parent_id           = azurerm_user_assigned_identity.consumer["app"].id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.aks.oidc_issuer_url
  subject             = "system:serviceaccount:${var.kubernetes_namespace}:cmk-token-proxy"
}

resource "azurerm_federated_identity_credential" "bridge" {
  name                = "aks-${var.kubernetes_namespace}-bridge"
  resource_group_name = azurerm_resource_group.main.name
  parent_id           = azurerm_user_assigned_identity.bridge.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.aks.oidc_issuer_url
  subject             = "system:serviceaccount:${var.kubernetes_namespace}:cmk-ingest-bridge"
}

# KEDA's operator reads the queue length with its own federated identity.
resource "azurerm_federated_identity_credential" "keda" {
  name                = "aks-kube-system-keda-operator"
  resource_group_name = azurerm_resource_group.main.name
  parent_id           = azurerm_user_assigned_identity.bridge.id
  audience            = ["api://AzureADTokenExchange"]
  issuer              = azurerm_kubernetes_cluster.aks.oidc_issuer_url
  subject             = "system:serviceaccount:kube-system:keda-operator"
}

# The cluster identity manages the node subnet and acts on the kubelet identity.
resource "azurerm_role_assignment" "aks_network" {
  scope                = azurerm_virtual_network.main.id
  role_definition_name = "Network Contributor"
  principal_id         = azurerm_user_assigned_identity.aks.principal_id
}

resource "azurerm_role_assignment" "aks_kubelet_operator" {
  scope                = azurerm_user_assigned_identity.kubelet.id
  role_definition_name = "Managed Identity Operator"
  principal_id         = azurerm_user_assigned_identity.aks.principal_id
}
