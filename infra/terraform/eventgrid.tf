# Producers publish CloudEvents to this topic with Entra ID (local auth off).
# One subscription delivers every event to the storage queue, which the bridge
# drains into the app; a second, optional one delivers straight to the app.
#
# Event Grid reaches Storage over the public endpoint (it cannot deliver to
# private endpoints: learn.microsoft.com/azure/event-grid/managed-service-identity,
# "Private endpoints"). The events account keeps default_action = "Deny" with
# the AzureServices bypass, and Event Grid passes it as a trusted service only
# with the topic's SYSTEM-assigned identity: "If a firewall or virtual network
# rule is configured for the Azure Storage account, you can use only the
# system-assigned managed identity if Allow Azure services on the trusted
# service list to access the storage account is also enabled ... You can't
# use user-assigned managed identity" (learn.microsoft.com/azure/event-grid/handler-storage-queues).
# The same holds for dead-lettering into the same account. So the topic has a
# system-assigned identity, and both delivery and dead-letter use it.
resource "azurerm_eventgrid_topic" "events" {
  #checkov:skip=CKV_AZURE_193:producers outside the virtual network publish here; local auth is off, so every publish needs an Entra ID token with EventGrid Data Sender on this topic
  name                          = "evgt-${local.base}"
  location                      = azurerm_resource_group.main.location
  resource_group_name           = azurerm_resource_group.main.name
  input_schema                  = "CloudEventSchemaV1_0"
  local_auth_enabled            = false
  public_network_access_enabled = true
  inbound_ip_rule               = []
  identity {
    type = "SystemAssigned"
  }
  tags = local.tags
}

resource "azurerm_role_assignment" "eventgrid_queue" {
  scope                = "${azurerm_storage_account.events.id}/queueServices/default/queues/${azurerm_storage_queue.events.name}"
  role_definition_name = "Storage Queue Data Message Sender"
  principal_id         = azurerm_eventgrid_topic.events.identity[0].principal_id
}

resource "azurerm_role_assignment" "eventgrid_dead_letters" {
  scope                = azurerm_storage_container.dead_letters.resource_manager_id
  role_definition_name = "Storage Blob Data Contributor"
  principal_id         = azurerm_eventgrid_topic.events.identity[0].principal_id
}

resource "azurerm_eventgrid_event_subscription" "queue" {
  name                  = "to-queue"
  scope                 = azurerm_eventgrid_topic.events.id
  event_delivery_schema = "CloudEventSchemaV1_0"
  delivery_identity {
    type = "SystemAssigned"
  }
  storage_queue_endpoint {
    storage_account_id                    = azurerm_storage_account.events.id
    queue_name                            = azurerm_storage_queue.events.name
    queue_message_time_to_live_in_seconds = 604800
  }
  dead_letter_identity {
    type = "SystemAssigned"
  }
  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.events.id
    storage_blob_container_name = azurerm_storage_container.dead_letters.name
  }
  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
  depends_on = [azurerm_role_assignment.eventgrid_queue, azurerm_role_assignment.eventgrid_dead_letters]
}

# Optional: deliver straight to the app's POST /events (CloudEvents; the app
# answers the webhook OPTIONS handshake). Keep max_events_per_batch at or below
# the app's max_events_per_request. With ingest_entra_app_id_or_uri set, Event
# Grid authenticates with a Microsoft Entra ID token for that app registration
# (the app checks it: ingest_entra_audiences in the spin_variables output);
# otherwise Event Grid sends webhook_ingest_key in the x-cmk-ingest-key header,
# a secret static delivery property (never in the URL: URLs are logged by
# ingress and the runtime, and app_webhook_url sits in state unmasked by the
# service). Delivery properties: learn.microsoft.com/azure/event-grid/delivery-properties
resource "azurerm_eventgrid_event_subscription" "webhook" {
  count                 = var.app_webhook_url == "" ? 0 : 1
  name                  = "to-app"
  scope                 = azurerm_eventgrid_topic.events.id
  event_delivery_schema = "CloudEventSchemaV1_0"
  webhook_endpoint {
    url                               = var.app_webhook_url
    max_events_per_batch              = 100
    preferred_batch_size_in_kilobytes = 512
    active_directory_tenant_id        = var.ingest_entra_app_id_or_uri == "" ? null : var.tenant_id
    active_directory_app_id_or_uri    = var.ingest_entra_app_id_or_uri == "" ? null : var.ingest_entra_app_id_or_uri
  }
  dynamic "delivery_property" {
    for_each = var.ingest_entra_app_id_or_uri == "" ? [1] : []
    content {
      header_name = "x-cmk-ingest-key"
      type        = "Static"
      value       = var.webhook_ingest_key
      secret      = true
    }
  }
  dead_letter_identity {
    type = "SystemAssigned"
  }
  storage_blob_dead_letter_destination {
    storage_account_id          = azurerm_storage_account.events.id
    storage_blob_container_name = azurerm_storage_container.dead_letters.name
  }
  retry_policy {
    max_delivery_attempts = 30
    event_time_to_live    = 1440
  }
  lifecycle {
    # The key goes in the header, never in the URL (see above).
    precondition {
      condition     = !strcontains(lower(var.app_webhook_url), "code=")
      error_message = "app_webhook_url must not carry a key (code=): set webhook_ingest_key, which Event Grid sends in the x-cmk-ingest-key header."
    }
    # Without Entra protected delivery the key is the webhook's only
    # credential: with an empty one the app refuses every delivery.
    precondition {
      condition     = var.ingest_entra_app_id_or_uri != "" || var.webhook_ingest_key != ""
      error_message = "app_webhook_url needs ingest_entra_app_id_or_uri (Entra protected delivery) or webhook_ingest_key (one of the app's ingest_keys)."
    }
  }
}
