locals {
  suffix = random_string.suffix.result
  base   = "${var.name}${local.suffix}"
  tags   = merge(var.tags, { app = "cmk-ingest", encryption = var.encryption, profile = var.profile })
}

resource "random_string" "suffix" {
  length  = 5
  lower   = true
  upper   = false
  numeric = true
  special = false
}

resource "azurerm_resource_group" "main" {
  name     = "rg-${var.name}"
  location = var.location
  tags     = local.tags
}

# One workspace for the HSM's audit log, the Key Vault's, Storage, Cosmos DB and
# Container Insights.
resource "azurerm_log_analytics_workspace" "main" {
  name                = "log-${local.base}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  sku                 = "PerGB2018"
  retention_in_days   = 365
  tags                = local.tags
}

resource "azurerm_virtual_network" "main" {
  name                = "vnet-${var.name}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  address_space       = [var.vnet_cidr]
  tags                = local.tags
}

resource "azurerm_subnet" "nodes" {
  name                 = "snet-nodes"
  resource_group_name  = azurerm_resource_group.main.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = [cidrsubnet(var.vnet_cidr, 6, 0)]
}

resource "azurerm_subnet" "endpoints" {
  name                              = "snet-endpoints"
  resource_group_name               = azurerm_resource_group.main.name
  virtual_network_name              = azurerm_virtual_network.main.name
  address_prefixes                  = [cidrsubnet(var.vnet_cidr, 8, 8)]
  private_endpoint_network_policies = "Enabled"
}

# API server VNet integration: the KMS plugin reaches the private Key Vault
# through it (Konnectivity is not supported for private vaults).
resource "azurerm_subnet" "apiserver" {
  name                 = "snet-apiserver"
  resource_group_name  = azurerm_resource_group.main.name
  virtual_network_name = azurerm_virtual_network.main.name
  address_prefixes     = [cidrsubnet(var.vnet_cidr, 12, 160)]
  delegation {
    name = "aks-apiserver"
    service_delegation {
      name    = "Microsoft.ContainerService/managedClusters"
      actions = ["Microsoft.Network/virtualNetworks/subnets/join/action"]
    }
  }
}

# One NSG per subnet; AKS adds its own rules to the node NSG it manages.
resource "azurerm_network_security_group" "subnet" {
  for_each            = toset(["nodes", "endpoints", "apiserver"])
  name                = "nsg-${each.key}"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_subnet_network_security_group_association" "nodes" {
  subnet_id                 = azurerm_subnet.nodes.id
  network_security_group_id = azurerm_network_security_group.subnet["nodes"].id
}

resource "azurerm_subnet_network_security_group_association" "endpoints" {
  subnet_id                 = azurerm_subnet.endpoints.id
  network_security_group_id = azurerm_network_security_group.subnet["endpoints"].id
}

resource "azurerm_subnet_network_security_group_association" "apiserver" {
  subnet_id                 = azurerm_subnet.apiserver.id
  network_security_group_id = azurerm_network_security_group.subnet["apiserver"].id
}

# Private DNS for every private endpoint.
locals {
  private_dns_zones = {
    hsm    = "privatelink.managedhsm.azure.net"
    vault  = "privatelink.vaultcore.azure.net"
    blob   = "privatelink.blob.core.windows.net"
    queue  = "privatelink.queue.core.windows.net"
    cosmos = "privatelink.documents.azure.com"
  }
}

resource "azurerm_private_dns_zone" "zone" {
  for_each            = local.private_dns_zones
  name                = each.value
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_private_dns_zone_virtual_network_link" "link" {
  for_each              = local.private_dns_zones
  name                  = "link-${each.key}"
  resource_group_name   = azurerm_resource_group.main.name
  private_dns_zone_name = azurerm_private_dns_zone.zone[each.key].name
  virtual_network_id    = azurerm_virtual_network.main.id
}
