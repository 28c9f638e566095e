"""The operations view (infra/terraform/monitoring.tf, infra/monitoring/
queries) holds together offline; each rule fails on a broken copy.

- every query file is wired into Terraform, every query a rule or the
  workbook names exists, and every template variable has a value;
- log alert rules use only values the provider accepts (azurerm
  internal/services/monitor/monitor_scheduled_query_rules_alert_v2_resource.go:
  evaluation_frequency and window_duration from fixed lists, severity 0-4,
  failing periods 1-6, time_aggregation_method Count/Average/Minimum/
  Maximum/Total, operator Equal/GreaterThan(OrEqual)/LessThan(OrEqual)),
  and their measure and dimension columns are columns the
  query returns;
- metric alerts name metrics Azure Monitor documents for the namespace;
- every alert rule notifies an action group (checkov CKV_OPS_1);
- the cluster's Container Insights rule collects ContainerLogV2, which the
  queries read, and is associated with the cluster;
- a rule reading Azure Resource Graph names a documented table, and runs as
  a user-assigned identity whose Reader roles exist before the rule (Azure
  validates the query as that identity when the rule is created);
- the SpinKube executor's OpenTelemetry settings are spin-operator's.

That each query reads fields the component and the bridge really log is
tests/integration/test_monitoring_queries.py (it needs the local stack).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import hcl2
import pytest
import yaml

import infra_lib

sys.path.insert(0, str(infra_lib.ROOT / "tests"))
from harness import kql  # noqa: E402

TF = "terraform/monitoring.tf"
QUERIES = "monitoring/queries"

# azurerm v4 monitor_scheduled_query_rules_alert_v2_resource.go validation.
FREQUENCIES = {"PT1M", "PT5M", "PT10M", "PT15M", "PT30M", "PT45M", "PT1H", "PT2H", "PT3H", "PT4H", "PT5H",
               "PT6H", "P1D"}
WINDOWS = FREQUENCIES | {"P2D"}
AGGREGATIONS = {"Count", "Average", "Minimum", "Maximum", "Total"}
OPERATORS = {"Equal", "GreaterThan", "GreaterThanOrEqual", "LessThan", "LessThanOrEqual"}

# Azure Monitor supported metrics (name in REST API -> aggregations):
# https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-keyvault-managedhsms-metrics
# https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-storage-storageaccounts-queueservices-metrics
# https://learn.microsoft.com/azure/azure-monitor/reference/supported-metrics/microsoft-documentdb-databaseaccounts-metrics
METRICS = {
    "Microsoft.KeyVault/managedHSMs": {"Availability": {"Average"}, "ServiceApiLatency": {"Average"},
                                       "ServiceApiHit": {"Count"}},
    "Microsoft.Storage/storageAccounts/queueServices": {"Availability": {"Average", "Minimum", "Maximum"},
                                                        "QueueMessageCount": {"Average"},
                                                        "Transactions": {"Total"}},
    "Microsoft.DocumentDB/databaseAccounts": {"TotalRequests": {"Count"}, "TotalRequestUnits": {"Total"}},
}
METRIC_DIMENSIONS = {("Microsoft.DocumentDB/databaseAccounts", "TotalRequests"): {"StatusCode", "OperationType",
                                                                                   "DatabaseName", "CollectionName",
                                                                                   "Region", "Status"}}

# spin-operator v0.6.1 api/v1alpha1/spinappexecutor_types.go, OtelConfig json tags.
OTEL_KEYS = {"exporter_otlp_endpoint", "exporter_otlp_traces_endpoint", "exporter_otlp_metrics_endpoint",
             "exporter_otlp_logs_endpoint"}


def parse_tf(infra: Path) -> dict:
    with open(infra / TF) as fh:
        return hcl2.load(fh)


def locals_of(doc: dict) -> dict:
    out = {}
    for block in doc.get("locals", []):
        out.update(block)
    return out


def resources(doc: dict, rtype: str) -> dict:
    out = {}
    for entry in doc.get("resource", []):
        for name, body in entry.get(rtype, {}).items():
            out[name] = body
    return out


def unwrap(v):
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def query_names(infra: Path) -> set[str]:
    return {p.stem for p in (infra / QUERIES).glob("*.kql")}


def wiring_errors(infra: Path) -> list[str]:
    errors = []
    text = (infra / TF).read_text()
    names = query_names(infra)
    for n in sorted(names):
        if f'"{n}"' not in text:
            errors.append(f"query {n}.kql is not used by monitoring.tf")
    loc = locals_of(parse_tf(infra))
    named = [unwrap(a)["query"] for a in unwrap(loc["log_alerts"]).values()]
    named += [v[0] for v in unwrap(loc["workbook_views"])]
    named += re.findall(r'local\.queries\["([^"]+)"\]', text)
    for n in named:
        if n not in names:
            errors.append(f"monitoring.tf names query {n}, which has no file")
    keys = set(unwrap(loc["query_vars"]))
    for n in sorted(names):
        used = kql.template_names((infra / QUERIES / f"{n}.kql").read_text())
        for missing in sorted(used - keys):
            errors.append(f"{n}.kql uses ${{{missing}}}, which query_vars does not set")
    if "templatefile(" not in text or "fileset(local.queries_dir" not in text:
        errors.append("queries are not read from their files")
    return errors


def rendered(infra: Path, name: str) -> str:
    values = {k: "x" for k in kql.template_names((infra / QUERIES / f"{name}.kql").read_text())}
    return kql.render((infra / QUERIES / f"{name}.kql").read_text(), values)


def number(v):
    v = unwrap(v)
    return v if isinstance(v, (int, float)) else None


def rule_errors(infra: Path) -> list[str]:
    errors = []
    doc = parse_tf(infra)
    loc = locals_of(doc)
    for key, a in unwrap(loc["log_alerts"]).items():
        a = unwrap(a)
        where = f"log_alerts.{key}"
        if a["frequency"] not in FREQUENCIES:
            errors.append(f"{where}: evaluation_frequency {a['frequency']} is not accepted")
        if a["window"] not in WINDOWS:
            errors.append(f"{where}: window_duration {a['window']} is not accepted")
        if a["aggregation"] not in AGGREGATIONS:
            errors.append(f"{where}: time_aggregation_method {a['aggregation']} is not accepted")
        if a.get("operator") not in OPERATORS:
            errors.append(f"{where}: operator {a.get('operator')} is not accepted")
        if not (isinstance(a["severity"], int) and 0 <= a["severity"] <= 4):
            errors.append(f"{where}: severity {a['severity']} outside 0-4")
        if not (isinstance(a["periods"], int) and 1 <= a["periods"] <= 6):
            errors.append(f"{where}: failing periods {a['periods']} outside 1-6")
        if a["query"] not in query_names(infra):
            continue
        columns = kql.parse(rendered(infra, a["query"])).columns()
        if a["measure"] not in columns:
            errors.append(f"{where}: measure column {a['measure']} is not returned by {a['query']}.kql {columns}")
        dim = a.get("dimension")
        if dim not in (None, "null", "${null}") and dim not in columns:
            errors.append(f"{where}: dimension {dim} is not returned by {a['query']}.kql")
    metric_bodies = list(unwrap(loc["metric_alerts"]).items())
    for name, body in resources(doc, "azurerm_monitor_metric_alert").items():
        if "for_each" in body:
            continue
        c = unwrap(body["criteria"])
        metric_bodies.append((name, {"namespace": unwrap(c["metric_namespace"]), "metric": unwrap(c["metric_name"]),
                                     "aggregation": unwrap(c["aggregation"]),
                                     "dimensions": [unwrap(unwrap(d)["name"]) for d in c.get("dimension", [])]}))
    for name, m in metric_bodies:
        m = unwrap(m)
        ns, metric, agg = m["namespace"], m["metric"], m["aggregation"]
        if ns not in METRICS:
            errors.append(f"{name}: namespace {ns} is not documented here")
        elif metric not in METRICS[ns]:
            errors.append(f"{name}: {ns} has no metric {metric}")
        elif agg not in METRICS[ns][metric]:
            errors.append(f"{name}: {ns} {metric} is not aggregated by {agg}")
        for d in m.get("dimensions", []):
            if d not in METRIC_DIMENSIONS.get((ns, metric), set()):
                errors.append(f"{name}: {ns} {metric} has no dimension {d}")
    for name, body in resources(doc, "azurerm_monitor_scheduled_query_rules_alert_v2").items():
        for attr, allowed in (("evaluation_frequency", FREQUENCIES), ("window_duration", WINDOWS)):
            v = unwrap(body[attr])
            if v not in allowed and "each.value" not in str(v):
                errors.append(f"{name}: {attr} {v} is not accepted")
    return errors


def test_every_query_is_wired_into_terraform():
    assert wiring_errors(infra_lib.INFRA) == []
    assert len(query_names(infra_lib.INFRA)) >= 15


def test_alert_rules_use_values_the_provider_accepts():
    assert rule_errors(infra_lib.INFRA) == []


# Resource Graph tables as Microsoft spells them, for `arg("").<table>`:
# https://learn.microsoft.com/azure/governance/resource-graph/concepts/query-language
# ("Resource Graph tables"); the cross-service form, `arg("").Resources`:
# https://learn.microsoft.com/azure/azure-monitor/logs/azure-monitor-data-explorer-proxy
ARG_TABLES = {"Resources", "ResourceContainers", "AdvisorResources", "AlertsManagementResources",
              "HealthResources", "PolicyResources", "SecurityResources"}


def resource_graph_errors(infra: Path) -> list[str]:
    """Queries reading Azure Resource Graph (which the local evaluator does
    not run) name documented tables; rules calling them run as a
    user-assigned identity granted its roles before the rule exists."""
    errors = []
    arg_queries = set()
    for n in sorted(query_names(infra)):
        text = (infra / QUERIES / f"{n}.kql").read_text()
        body = "\n".join(ln for ln in text.splitlines() if not ln.lstrip().startswith("//"))
        for m in re.finditer(r'arg\(""\)\s*\.?\s*([A-Za-z_]*)', body):
            arg_queries.add(n)
            if m.group(1) not in ARG_TABLES:
                errors.append(f"{n}.kql: arg(\"\").{m.group(1)} is not a documented Resource Graph table")
    doc = parse_tf(infra)
    identities = resources(doc, "azurerm_user_assigned_identity")
    roles = resources(doc, "azurerm_role_assignment")
    for name, body in resources(doc, "azurerm_monitor_scheduled_query_rules_alert_v2").items():
        query = re.search(r'local\.queries\["([^"]+)"\]', str(unwrap(body["criteria"])))
        if not query or query.group(1) not in arg_queries:
            continue
        ident = unwrap(body.get("identity") or [{}])
        ids = str(ident.get("identity_ids", ""))
        if unwrap(ident.get("type")) != "UserAssigned" or not ids:
            errors.append(f"{name}: reads Resource Graph without a user-assigned identity")
            continue
        uai = re.search(r"azurerm_user_assigned_identity\.(\w+)", ids)
        if not uai or uai.group(1) not in identities:
            errors.append(f"{name}: its identity is no user-assigned identity of this configuration")
            continue
        granted = {r for r, b in roles.items()
                   if f"azurerm_user_assigned_identity.{uai.group(1)}" in str(unwrap(b["principal_id"]))
                   and unwrap(b["role_definition_name"]) == "Reader"}
        if not granted:
            errors.append(f"{name}: its identity holds no Reader role")
        depends = str(body.get("depends_on", ""))
        for r in sorted(granted):
            if f"azurerm_role_assignment.{r}" not in depends:
                errors.append(f"{name}: does not depend on azurerm_role_assignment.{r}")
    return errors


def test_resource_graph_rules_name_documented_tables_and_hold_their_roles_first():
    assert resource_graph_errors(infra_lib.INFRA) == []


ARG_BROKEN = [
    ("undocumented table", f"{QUERIES}/alert-cosmos-cmk-status.kql", 'arg("").Resources\n', 'arg("").resources\n',
     'arg("").resources is not a documented Resource Graph table'),
    ("system identity", TF, 'type         = "UserAssigned"\n    identity_ids = [azurerm_user_assigned_identity.cosmos_cmk_alert[0].id]',
     'type = "SystemAssigned"', "reads Resource Graph without a user-assigned identity"),
    ("rule created before its roles", TF, "  depends_on = [azurerm_role_assignment.cosmos_cmk_alert]\n", "",
     "does not depend on azurerm_role_assignment.cosmos_cmk_alert"),
    ("roles for another principal", TF,
     "principal_id         = azurerm_user_assigned_identity.cosmos_cmk_alert[0].principal_id",
     "principal_id         = azurerm_user_assigned_identity.bridge.principal_id", "its identity holds no Reader role"),
]


@pytest.mark.parametrize("case", ARG_BROKEN, ids=[c[0] for c in ARG_BROKEN])
def test_broken_resource_graph_rules_fail(case, tree_copy):
    _, rel, old, new, message = case
    break_copy(tree_copy, rel, old, new)
    errors = resource_graph_errors(tree_copy)
    assert any(message in e for e in errors), errors


def container_log_errors(infra: Path) -> list[str]:
    """aks.tf: a data collection rule whose ContainerInsights extension sets
    enableContainerLogV2 and whose flow sends Microsoft-ContainerLogV2 to the
    workspace, associated with the cluster."""
    with open(infra / "terraform/aks.tf") as fh:
        doc = hcl2.load(fh)
    text = (infra / "terraform/aks.tf").read_text()
    rules = resources(doc, "azurerm_monitor_data_collection_rule")
    errors = []
    good = []
    for name, body in rules.items():
        src = unwrap(unwrap(body.get("data_sources", [{}])).get("extension", [{}]))
        if unwrap(src.get("extension_name")) != "ContainerInsights":
            continue
        block = re.search(r'resource "azurerm_monitor_data_collection_rule" "%s" \{(.*?)\n\}' % name, text, re.S)
        if not block or not re.search(r"enableContainerLogV2\s*=\s*true", block.group(1)):
            errors.append(f"{name}: enableContainerLogV2 is not true")
        flow = str(unwrap(body.get("data_flow", [{}])).get("streams"))
        streams = flow if "Microsoft-" in flow else str(locals_of(doc).get(flow.split("local.")[-1].strip("${}'\" ]"), ""))
        if "Microsoft-ContainerLogV2" not in streams:
            errors.append(f"{name}: the data flow does not carry Microsoft-ContainerLogV2")
        good.append(name)
    if not good:
        errors.append("no ContainerInsights data collection rule")
    assoc = resources(doc, "azurerm_monitor_data_collection_rule_association")
    if not any(f"azurerm_monitor_data_collection_rule.{g}.id" in str(unwrap(b.get("data_collection_rule_id")))
               and "azurerm_kubernetes_cluster.aks.id" in str(unwrap(b.get("target_resource_id")))
               for b in assoc.values() for g in good):
        errors.append("the Container Insights rule is not associated with the cluster")
    return errors


def test_container_insights_collects_container_log_v2():
    assert container_log_errors(infra_lib.INFRA) == []


@pytest.mark.parametrize("old,new,message", [
    ("enableContainerLogV2   = true", "enableContainerLogV2   = false", "enableContainerLogV2 is not true"),
    ('    "Microsoft-ContainerLogV2",\n', "", "does not carry Microsoft-ContainerLogV2"),
    ("target_resource_id      = azurerm_kubernetes_cluster.aks.id",
     "target_resource_id      = azurerm_log_analytics_workspace.main.id", "is not associated with the cluster"),
])
def test_broken_container_insights_fails(tree_copy, old, new, message):
    break_copy(tree_copy, "terraform/aks.tf", old, new)
    errors = container_log_errors(tree_copy)
    assert any(message in e for e in errors), errors


def health_errors(infra: Path) -> list[str]:
    """The Resource Health alert fires on a move into Unavailable or Degraded
    from Available and from Unknown (a state Resource Health reports when it
    cannot assess the resource)."""
    errors = []
    for name, body in resources(parse_tf(infra), "azurerm_monitor_activity_log_alert").items():
        c = unwrap(body["criteria"])
        if unwrap(c.get("category")) != "ResourceHealth":
            continue
        rh = unwrap(c.get("resource_health") or [{}])
        current, previous = unwrap(rh.get("current")) or [], unwrap(rh.get("previous")) or []
        for state in ("Unavailable", "Degraded"):
            if state not in current:
                errors.append(f"{name}: does not fire on {state}")
        for state in ("Available", "Unknown"):
            if previous and state not in previous:
                errors.append(f"{name}: misses a move from {state}")
    return errors


def test_resource_health_alert_covers_unknown():
    assert health_errors(infra_lib.INFRA) == []


def test_a_health_alert_missing_unknown_fails(tree_copy):
    break_copy(tree_copy, TF, 'previous = ["Available", "Unknown", "Degraded"]', 'previous = ["Available"]')
    assert "health: misses a move from Unknown" in health_errors(tree_copy)


def test_workbook_is_valid_for_the_provider():
    """name: a lower-case UUID; source_id: no upper-case letter
    (application_insights_workbook_resource.go validation)."""
    text = (infra_lib.INFRA / TF).read_text()
    body = resources(parse_tf(infra_lib.INFRA), "azurerm_application_insights_workbook")["ops"]
    assert unwrap(body["name"]).startswith("${uuidv5(")
    assert unwrap(body["source_id"]).startswith("${lower(")
    assert "jsonencode(local.workbook)" in text


def break_copy(tree: Path, rel: str, old: str, new: str) -> None:
    p = tree / rel
    text = p.read_text()
    assert text.count(old) == 1, f"{old!r} must occur once in {rel}"
    p.write_text(text.replace(old, new))


WIRING_BROKEN = [
    ("unused query file", None, None, None, "is not used by monitoring.tf"),
    ("rule names a missing query", TF, 'query       = "alert-hsm-throttled"', 'query       = "alert-hsm-throttling"',
     "names query alert-hsm-throttling, which has no file"),
    ("workbook names a missing query", TF, '["queue-depth", "Queue and', '["queue-depths", "Queue and',
     "names query queue-depths"),
    ("template variable without a value", f"{QUERIES}/queue-depth.kql", '"${bridge_container}"', '"${bridge}"',
     "uses ${bridge}, which query_vars does not set"),
]


@pytest.mark.parametrize("case", WIRING_BROKEN, ids=[c[0] for c in WIRING_BROKEN])
def test_broken_wiring_fails(case, tree_copy):
    _, rel, old, new, message = case
    if rel is None:
        (tree_copy / QUERIES / "forgotten.kql").write_text("ContainerLogV2\n| where true\n")
    else:
        break_copy(tree_copy, rel, old, new)
    assert any(message in e for e in wiring_errors(tree_copy)), wiring_errors(tree_copy)


RULES_BROKEN = [
    ("window the provider refuses", 'window      = "PT5M"\n      aggregation = "Total"\n      measure     = "throttled"\n      threshold   = 0',
     'window      = "PT2M"\n      aggregation = "Total"\n      measure     = "throttled"\n      threshold   = 0',
     "window_duration PT2M is not accepted"),
    ("operator the provider refuses", 'periods     = 1\n      operator    = "LessThan"', 'periods     = 1\n      operator    = "Below"',
     "operator Below is not accepted"),
    ("severity out of range", "severity    = 0\n      frequency   = \"PT1M\"", "severity    = 5\n      frequency   = \"PT1M\"",
     "severity 5 outside 0-4"),
    ("measure the query does not return", 'measure     = "oldest_secs"', 'measure     = "oldest"',
     "measure column oldest is not returned"),
    ("dimension the query does not return", 'dimension   = "code"', 'dimension   = "reason"',
     "dimension reason is not returned"),
    ("metric name typo", 'metric      = "ServiceApiLatency"', 'metric      = "ServiceApiLatencies"',
     "has no metric ServiceApiLatencies"),
    ("unknown metric dimension", 'name     = "StatusCode"', 'name     = "HttpStatus"', "has no dimension HttpStatus"),
    ("aggregation the metric lacks", 'metric_name      = "TotalRequests"\n    aggregation      = "Count"',
     'metric_name      = "TotalRequests"\n    aggregation      = "Average"', "is not aggregated by Average"),
]


@pytest.mark.parametrize("case", RULES_BROKEN, ids=[c[0] for c in RULES_BROKEN])
def test_broken_rules_fail(case, tree_copy):
    _, old, new, message = case
    break_copy(tree_copy, TF, old, new)
    errors = rule_errors(tree_copy)
    assert any(message in e for e in errors), errors


def test_a_measure_column_change_in_a_query_fails(tree_copy):
    break_copy(tree_copy, f"{QUERIES}/alert-server-errors.kql", "extend error_percent", "extend error_share")
    assert any("measure column error_percent" in e for e in rule_errors(tree_copy))


LOG_RULES = ["key-not-usable", "poison-queue", "bridge-silent", "queue-age", "server-errors", "cosmos-throttled", "hsm-throttled",
             "token-failures"]
# checkov expands for_each over a literal map but keeps a map with resource
# references (metric_alerts) as one resource.
ALERTS = ({f'azurerm_monitor_scheduled_query_rules_alert_v2.log["{k}"]' for k in LOG_RULES}
          | {"azurerm_monitor_metric_alert.platform", "azurerm_monitor_metric_alert.cosmos_throttled",
             "azurerm_monitor_activity_log_alert.health"})


def test_every_alert_rule_notifies_an_action_group(report_cmk, report_mm):
    for report, expected in ((report_cmk, ALERTS | {"azurerm_monitor_scheduled_query_rules_alert_v2.cosmos_cmk[0]"}),
                             (report_mm, ALERTS)):
        assert not {r for c, r in infra_lib.failed(report) if c == "CKV_OPS_1"}
        assert {r for c, r in infra_lib.passed(report) if c == "CKV_OPS_1"} == expected


def test_an_alert_without_an_action_group_fails(tree_copy):
    break_copy(tree_copy, TF, "  action {\n    action_groups = [local.action_group_id]\n  }\n}\n\n# Cosmos DB's own",
               "}\n\n# Cosmos DB's own")
    break_copy(tree_copy, TF, "  action {\n    action_group_id = local.action_group_id\n  }\n}\n\n# Resource Health",
               "}\n\n# Resource Health")
    report = infra_lib.run_checkov(tree_copy, "customer-managed", ["CKV_OPS_1"])
    failed = {r for c, r in infra_lib.failed(report) if c == "CKV_OPS_1"}
    assert any(r.startswith("azurerm_monitor_scheduled_query_rules_alert_v2.log") for r in failed), failed
    assert "azurerm_monitor_metric_alert.cosmos_throttled" in failed, failed
    assert not any(r.startswith("azurerm_monitor_activity_log_alert") for r in failed)


def otel_errors(deploy: Path) -> list[str]:
    errors = []
    docs = [d for f in sorted(deploy.rglob("*.yaml")) for d in yaml.safe_load_all(f.read_text()) if d]
    executors = [d for d in docs if d.get("kind") == "SpinAppExecutor"]
    if not executors:
        return ["no SpinAppExecutor"]
    for ex in executors:
        otel = (ex.get("spec", {}).get("deploymentConfig") or {}).get("otel")
        if not otel:
            errors.append(f"{ex['metadata']['name']}: no otel settings")
            continue
        for k, v in otel.items():
            if k not in OTEL_KEYS:
                errors.append(f"otel.{k} is not a spin-operator setting")
            elif not re.match(r"^https?://[a-z0-9.-]+(:\d+)?(/.*)?$", str(v)):
                errors.append(f"otel.{k}: {v} is not an http(s) URL")
        traces = otel.get("exporter_otlp_traces_endpoint")
        if not traces or not str(traces).endswith("/v1/traces"):
            errors.append("otel: the traces endpoint (OTLP/HTTP, /v1/traces) is not set")
        if "exporter_otlp_endpoint" in otel:
            errors.append("otel: the general endpoint also exports Spin's logs and metrics")
    return errors


def test_spin_traces_are_exported_from_spinkube():
    assert otel_errors(infra_lib.INFRA / "deploy") == []


@pytest.mark.parametrize("old,new,message", [
    ("exporter_otlp_traces_endpoint:", "exporter_otlp_trace_endpoint:", "is not a spin-operator setting"),
    (":4318/v1/traces", ":4318", "the traces endpoint"),
])
def test_broken_otel_settings_fail(tree_copy, old, new, message):
    break_copy(tree_copy, "deploy/app/executor.yaml", old, new)
    assert any(message in e for e in otel_errors(tree_copy / "deploy")), otel_errors(tree_copy / "deploy")


def alert_names(infra: Path) -> set[str]:
    """Every alert rule's name after the `cmk-ingest-` prefix."""
    doc = parse_tf(infra)
    loc = locals_of(doc)
    names = set(unwrap(loc["log_alerts"])) | set(unwrap(loc["metric_alerts"]))
    for rtype in ("azurerm_monitor_scheduled_query_rules_alert_v2", "azurerm_monitor_metric_alert",
                  "azurerm_monitor_activity_log_alert"):
        for body in resources(doc, rtype).values():
            name = unwrap(body["name"])
            if "${" not in name:
                names.add(name.removeprefix("cmk-ingest-"))
    return names


def runbook_errors(infra: Path) -> list[str]:
    """Every alert has a row in the runbook's Alerts table, with three steps."""
    text = (infra / "README.md").read_text()
    table = text.split("### Alerts", 1)[1].split("\n### ", 1)[0] if "### Alerts" in text else ""
    rows = [ln for ln in table.splitlines() if ln.startswith("| `")]
    errors = []
    for name in sorted(alert_names(infra)):
        row = next((r for r in rows if f"`{name}`" in r.split("|")[1]), None)
        if row is None:
            errors.append(f"alert {name} has no row in the runbook")
        elif not all(f"{i}. " in row.split("|")[3] for i in (1, 2, 3)):
            errors.append(f"alert {name}: the runbook row lacks three steps")
    return errors


def test_the_runbook_maps_every_alert_to_its_response():
    assert len(alert_names(infra_lib.INFRA)) == 14
    assert runbook_errors(infra_lib.INFRA) == []


def test_an_alert_missing_from_the_runbook_fails(tree_copy):
    break_copy(tree_copy, TF, "    hsm-throttled = {", "    hsm-throttling = {")
    assert "alert hsm-throttling has no row in the runbook" in runbook_errors(tree_copy)
    break_copy(tree_copy, "README.md", "3. Raise the container's autoscale max throughput.", "Raise the throughput.")
    assert any("cosmos-throttled: the runbook row lacks three steps" in e for e in runbook_errors(tree_copy))
