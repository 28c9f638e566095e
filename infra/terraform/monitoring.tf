# Operations in Azure Monitor: the queries an operator reads, the alert rules
# that call them, and a workbook with the views side by side. Both stages.
#
# The queries are files (infra/monitoring/queries/*.kql), rendered here with
# templatefile(); they read the component's and the bridge's JSON log lines
# from ContainerLogV2 (Container Insights, aks.tf oms_agent and its data
# collection rule, which turns ContainerLogV2 on), whose LogMessage
# column holds a JSON line as a dynamic value
# (https://learn.microsoft.com/azure/azure-monitor/reference/tables/containerlogv2).
# tests/integration/test_monitoring_queries.py runs them against log lines
# the local stack writes; tests/infra/test_monitoring.py holds these rules to
# the provider's validation.
#
# Metric names are Azure Monitor's:
# - Managed HSM: Availability, ServiceApiLatency (dimensions ActivityType,
#   ActivityName, StatusCode, StatusCodeClass)
#   https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-keyvault-managedhsms-metrics
# - Storage queues: Availability
#   https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-storage-storageaccounts-queueservices-metrics
# - Cosmos DB: TotalRequests by StatusCode
#   https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-documentdb-databaseaccounts-metrics
# Cosmos DB's customer-key state is no metric: it is the account property
# customerManagedKeyStatus, read from Azure Resource Graph by a log alert
# (https://learn.microsoft.com/azure/azure-monitor/logs/azure-monitor-data-explorer-proxy).

locals {
  queries_dir = "${path.module}/../monitoring/queries"
  query_vars = {
    namespace = var.kubernetes_namespace
    # spin-operator names the app's container after the SpinApp
    # (infra/deploy/app/spinapp.yaml); the bridge's is "bridge" (bridge.yaml).
    app_container     = "cmk-ingest"
    bridge_container  = "bridge"
    cosmos_account_id = azurerm_cosmosdb_account.main.id
  }
  queries = {
    for f in fileset(local.queries_dir, "*.kql") :
    trimsuffix(f, ".kql") => templatefile("${local.queries_dir}/${f}", local.query_vars)
  }

  action_group_id = var.alert_action_group_id != null ? var.alert_action_group_id : azurerm_monitor_action_group.ops[0].id

  # Log alerts on the component's and the bridge's lines. `query` names a
  # file in infra/monitoring/queries; `measure` the column summed (Total) or
  # the maximum taken (Maximum); `periods` consecutive failing evaluations
  # fire the rule. infra/README.md ("Alerts") has each one's response.
  log_alerts = {
    key-not-usable = {
      query       = "alert-key-not-usable"
      description = "A customer key is not usable: the component answers 503 Key* for more than a minute."
      severity    = 0
      frequency   = "PT1M"
      window      = "PT1M"
      aggregation = "Total"
      measure     = "answers"
      threshold   = 0
      periods     = 2
      operator    = "GreaterThan"
      dimension   = "code"
    }
    poison-queue = {
      query       = "alert-poison-queue"
      description = "Messages wait in the poison queue."
      severity    = 2
      frequency   = "PT5M"
      window      = "PT5M"
      aggregation = "Maximum"
      measure     = "messages"
      threshold   = 0
      periods     = 1
      operator    = "GreaterThan"
      dimension   = "queue"
    }
    # The bridge's silence, from its own lines. Storage's QueueMessageCount
    # cannot stand in for the poison queue: it is listed per account's queue
    # service, in the Capacity category, with no queue dimension (supported
    # metrics page for queueServices, cited at the top).
    bridge-silent = {
      query       = "alert-bridge-silent"
      description = "The queue bridge logged no queue depth for 10 minutes: it is down, stuck, or cannot read the queue (poison-queue and queue-age cannot fire then)."
      severity    = 1
      frequency   = "PT5M"
      window      = "PT10M"
      aggregation = "Total"
      measure     = "depth_lines"
      threshold   = 1
      periods     = 1
      operator    = "LessThan"
      dimension   = null
    }
    queue-age = {
      query       = "alert-queue-age"
      description = "Queue messages reach the bridge older than ${var.alert_queue_age_secs} s."
      severity    = 2
      frequency   = "PT5M"
      window      = "PT5M"
      aggregation = "Maximum"
      measure     = "oldest_secs"
      threshold   = var.alert_queue_age_secs
      periods     = 1
      operator    = "GreaterThan"
      dimension   = null
    }
    server-errors = {
      query       = "alert-server-errors"
      description = "More than ${var.alert_server_error_percent}% of deliveries answered 5xx."
      severity    = 1
      frequency   = "PT5M"
      window      = "PT5M"
      aggregation = "Maximum"
      measure     = "error_percent"
      threshold   = var.alert_server_error_percent
      periods     = 1
      operator    = "GreaterThan"
      dimension   = null
    }
    cosmos-throttled = {
      query       = "alert-cosmos-throttled"
      description = "Cosmos DB throttles the component (429) for 15 minutes."
      severity    = 2
      frequency   = "PT5M"
      window      = "PT5M"
      aggregation = "Total"
      measure     = "throttled"
      threshold   = var.alert_cosmos_throttled_per_5m
      periods     = 3
      operator    = "GreaterThan"
      dimension   = null
    }
    hsm-throttled = {
      query       = "alert-hsm-throttled"
      description = "Managed HSM throttles the component (429)."
      severity    = 2
      frequency   = "PT5M"
      window      = "PT5M"
      aggregation = "Total"
      measure     = "throttled"
      threshold   = 0
      periods     = 1
      operator    = "GreaterThan"
      dimension   = null
    }
    token-failures = {
      query       = "alert-token-failures"
      description = "The component cannot get access tokens from Entra ID (or its token proxy)."
      severity    = 1
      frequency   = "PT5M"
      window      = "PT5M"
      aggregation = "Total"
      measure     = "requests"
      threshold   = 0
      periods     = 1
      operator    = "GreaterThan"
      dimension   = null
    }
  }
}

resource "azurerm_monitor_action_group" "ops" {
  count               = var.alert_action_group_id == null ? 1 : 0
  name                = "ag-${local.base}"
  resource_group_name = azurerm_resource_group.main.name
  location            = "global"
  short_name          = "cmkingest"
  tags                = local.tags
  dynamic "email_receiver" {
    for_each = var.alert_email_addresses
    content {
      name                    = "email-${email_receiver.key}"
      email_address           = email_receiver.value
      use_common_alert_schema = true
    }
  }
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "log" {
  for_each             = local.log_alerts
  name                 = "cmk-ingest-${each.key}"
  display_name         = "cmk-ingest: ${each.key}"
  description          = each.value.description
  resource_group_name  = azurerm_resource_group.main.name
  location             = azurerm_resource_group.main.location
  scopes               = [azurerm_log_analytics_workspace.main.id]
  severity             = each.value.severity
  evaluation_frequency = each.value.frequency
  window_duration      = each.value.window
  # Fires again while the condition lasts; resolves itself when it ends.
  auto_mitigation_enabled = true
  tags                    = local.tags

  criteria {
    query                   = local.queries[each.value.query]
    time_aggregation_method = each.value.aggregation
    metric_measure_column   = each.value.measure
    operator                = each.value.operator
    threshold               = each.value.threshold
    dynamic "dimension" {
      for_each = each.value.dimension == null ? [] : [each.value.dimension]
      content {
        name     = dimension.value
        operator = "Include"
        values   = ["*"]
      }
    }
    failing_periods {
      minimum_failing_periods_to_trigger_alert = each.value.periods
      number_of_evaluation_periods             = each.value.periods
    }
  }

  action {
    action_groups = [local.action_group_id]
  }
}

# Cosmos DB's own view of its customer key (stage two only: stage one has
# none). The rule reads Azure Resource Graph as a user-assigned identity that
# exists, and holds Reader on the account and on the workspace the rule is
# scoped to, before the rule is created: Azure validates a rule's query when
# the rule is created or updated, as the rule's identity, and a system
# identity could only be granted its roles after the rule exists. The
# provider takes `identity { type = "UserAssigned", identity_ids }`
# (monitor_scheduled_query_rules_alert_v2_resource.go:
# commonschema.SystemOrUserAssignedIdentityOptional()).
resource "azurerm_user_assigned_identity" "cosmos_cmk_alert" {
  count               = var.encryption == "customer-managed" ? 1 : 0
  name                = "id-${var.name}-cosmos-cmk-alert"
  location            = azurerm_resource_group.main.location
  resource_group_name = azurerm_resource_group.main.name
  tags                = local.tags
}

resource "azurerm_role_assignment" "cosmos_cmk_alert" {
  for_each = var.encryption == "customer-managed" ? {
    account   = azurerm_cosmosdb_account.main.id
    workspace = azurerm_log_analytics_workspace.main.id
  } : {}
  scope                = each.value
  role_definition_name = "Reader"
  principal_id         = azurerm_user_assigned_identity.cosmos_cmk_alert[0].principal_id
  principal_type       = "ServicePrincipal"
}

resource "azurerm_monitor_scheduled_query_rules_alert_v2" "cosmos_cmk" {
  count                   = var.encryption == "customer-managed" ? 1 : 0
  name                    = "cmk-ingest-cosmos-cmk-status"
  display_name            = "cmk-ingest: cosmos-cmk-status"
  description             = "The Cosmos DB account does not confirm access to its customer-managed key (revoked state)."
  resource_group_name     = azurerm_resource_group.main.name
  location                = azurerm_resource_group.main.location
  scopes                  = [azurerm_log_analytics_workspace.main.id]
  severity                = 0
  evaluation_frequency    = "PT5M"
  window_duration         = "PT5M"
  auto_mitigation_enabled = true
  tags                    = local.tags

  identity {
    type         = "UserAssigned"
    identity_ids = [azurerm_user_assigned_identity.cosmos_cmk_alert[0].id]
  }

  criteria {
    query                   = local.queries["alert-cosmos-cmk-status"]
    time_aggregation_method = "Count"
    operator                = "GreaterThan"
    threshold               = 0
    failing_periods {
      minimum_failing_periods_to_trigger_alert = 1
      number_of_evaluation_periods             = 1
    }
  }

  action {
    action_groups = [local.action_group_id]
  }

  # The roles first: the query is validated as this identity on creation.
  depends_on = [azurerm_role_assignment.cosmos_cmk_alert]
}

# Azure-side signals of the same failures, from platform metrics.
locals {
  metric_alerts = {
    hsm-availability = {
      description = "Managed HSM answers fewer requests successfully (service-side availability; a disabled key or removed access is key-not-usable)."
      scope       = azurerm_key_vault_managed_hardware_security_module.hsm.id
      namespace   = "Microsoft.KeyVault/managedHSMs"
      metric      = "Availability"
      aggregation = "Average"
      operator    = "LessThan"
      threshold   = 99
      severity    = 1
    }
    hsm-latency = {
      description = "Managed HSM answers slower than ${var.alert_hsm_latency_ms} ms on average."
      scope       = azurerm_key_vault_managed_hardware_security_module.hsm.id
      namespace   = "Microsoft.KeyVault/managedHSMs"
      metric      = "ServiceApiLatency"
      aggregation = "Average"
      operator    = "GreaterThan"
      threshold   = var.alert_hsm_latency_ms
      severity    = 2
    }
    storage-queue-availability = {
      description = "The queue service fails requests (its customer key unreachable shows as failed requests)."
      scope       = "${azurerm_storage_account.events.id}/queueServices/default"
      namespace   = "Microsoft.Storage/storageAccounts/queueServices"
      metric      = "Availability"
      aggregation = "Average"
      operator    = "LessThan"
      threshold   = 99
      severity    = 1
    }
  }
}

resource "azurerm_monitor_metric_alert" "platform" {
  for_each            = local.metric_alerts
  name                = "cmk-ingest-${each.key}"
  description         = each.value.description
  resource_group_name = azurerm_resource_group.main.name
  scopes              = [each.value.scope]
  severity            = each.value.severity
  frequency           = "PT1M"
  window_size         = "PT5M"
  tags                = local.tags

  criteria {
    metric_namespace = each.value.namespace
    metric_name      = each.value.metric
    aggregation      = each.value.aggregation
    operator         = each.value.operator
    threshold        = each.value.threshold
  }

  action {
    action_group_id = local.action_group_id
  }
}

resource "azurerm_monitor_metric_alert" "cosmos_throttled" {
  name                = "cmk-ingest-cosmos-429"
  description         = "Cosmos DB answers 429 (all clients of the account, not only the component)."
  resource_group_name = azurerm_resource_group.main.name
  scopes              = [azurerm_cosmosdb_account.main.id]
  severity            = 2
  frequency           = "PT5M"
  window_size         = "PT15M"
  tags                = local.tags

  criteria {
    metric_namespace = "Microsoft.DocumentDB/databaseAccounts"
    metric_name      = "TotalRequests"
    aggregation      = "Count"
    operator         = "GreaterThan"
    threshold        = var.alert_cosmos_throttled_per_5m * 3
    dimension {
      name     = "StatusCode"
      operator = "Include"
      values   = ["429"]
    }
  }

  action {
    action_group_id = local.action_group_id
  }
}

# Resource Health of the three key consumers: a revoked customer key makes
# the account or the HSM report Unavailable or Degraded.
resource "azurerm_monitor_activity_log_alert" "health" {
  name                = "cmk-ingest-resource-health"
  description         = "Cosmos DB, the event storage account or the Managed HSM reports Unavailable or Degraded."
  resource_group_name = azurerm_resource_group.main.name
  location            = "global"
  scopes              = [azurerm_resource_group.main.id]
  tags                = local.tags

  criteria {
    category = "ResourceHealth"
    resource_ids = [
      azurerm_cosmosdb_account.main.id,
      azurerm_storage_account.events.id,
      azurerm_key_vault_managed_hardware_security_module.hsm.id,
    ]
    # From any state but the one it is in: a resource Resource Health could
    # not assess (Unknown) that then turns out Unavailable fires too, and so
    # does Degraded getting worse.
    resource_health {
      current  = ["Unavailable", "Degraded"]
      previous = ["Available", "Unknown", "Degraded"]
    }
  }

  action {
    action_group_id = local.action_group_id
  }
}

# The operator's view: every query side by side (two per row), then the
# platform metrics of the HSM.
locals {
  workbook_views = [
    ["events-accepted", "Deliveries and events per minute by path and outcome", "timechart"],
    ["delivery-latency", "Delivery latency percentiles (ms)", "timechart"],
    ["unavailable-by-reason", "503 answers by reason", "barchart"],
    ["alert-key-not-usable", "Key not usable (503 Key*)", "table"],
    ["cosmos-charge", "Cosmos DB request charge per event and 429 rate", "table"],
    ["dependency-calls", "Managed HSM, Entra ID token and signing-key calls per delivery", "table"],
    ["key-state", "Key state changes seen by the component", "table"],
    ["bridge-actions", "Queue bridge: forwarded, left for retry, poisoned", "barchart"],
    ["queue-depth", "Queue and poison-queue depth", "timechart"],
    ["alert-queue-age", "Oldest message age at the bridge (s)", "table"],
  ]
  workbook = {
    version = "Notebook/1.0"
    items = concat(
      [{
        type    = 1
        name    = "title"
        content = { json = "## cmk-ingest operations\nDeliveries, keys, Cosmos DB, the queue bridge. Runbook: infra/README.md, \"Alerts\"." }
      }],
      [for v in local.workbook_views : {
        type        = 3
        name        = v[0]
        customWidth = "50"
        content = {
          version       = "KqlItem/1.0"
          title         = v[1]
          query         = local.queries[v[0]]
          size          = 0
          queryType     = 0
          resourceType  = "microsoft.operationalinsights/workspaces"
          visualization = v[2]
          timeContext   = { durationMs = 86400000 }
        }
      }],
      [for m in ["Availability", "ServiceApiLatency"] : {
        type        = 10
        name        = "hsm-${lower(m)}"
        customWidth = "50"
        content = {
          version      = "MetricsItem/2.0"
          title        = "Managed HSM ${m}"
          size         = 0
          chartType    = 2
          resourceType = "microsoft.keyvault/managedhsms"
          metricScope  = 0
          resourceIds  = [azurerm_key_vault_managed_hardware_security_module.hsm.id]
          timeContext  = { durationMs = 86400000 }
          metrics = [{
            namespace   = "microsoft.keyvault/managedhsms"
            metric      = "microsoft.keyvault/managedhsms--${m}"
            aggregation = 4
          }]
        }
      }],
    )
    fallbackResourceIds = [azurerm_log_analytics_workspace.main.id]
    "$schema"           = "https://github.com/Microsoft/Application-Insights-Workbooks/blob/master/schema/workbook.json"
  }
}

resource "azurerm_application_insights_workbook" "ops" {
  name                = uuidv5("url", "cmk-ingest/${local.base}/workbook/ops")
  resource_group_name = azurerm_resource_group.main.name
  location            = azurerm_resource_group.main.location
  display_name        = "cmk-ingest operations (${var.encryption})"
  source_id           = lower(azurerm_log_analytics_workspace.main.id)
  category            = "workbook"
  data_json           = jsonencode(local.workbook)
  tags                = local.tags
}
