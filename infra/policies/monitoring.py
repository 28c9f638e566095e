"""Every alert rule notifies someone: a log search alert, a metric alert and
an activity log alert each name an action group. A rule without one fires
into the portal only, and a revoked key goes unnoticed."""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

from checkov.common.models.enums import CheckCategories, CheckResult  # noqa: E402
from checkov.terraform.checks.resource.base_resource_check import BaseResourceCheck  # noqa: E402

from _common import first  # noqa: E402


def _named(v) -> bool:
    if isinstance(v, list):
        return bool(v) and all(_named(x) for x in v)
    return isinstance(v, str) and v.strip() not in ("", "null")


class AlertNotifiesActionGroup(BaseResourceCheck):
    def __init__(self):
        super().__init__(
            name="Alert rule notifies an action group",
            id="CKV_OPS_1",
            categories=[CheckCategories.LOGGING],
            supported_resources=[
                "azurerm_monitor_scheduled_query_rules_alert_v2",
                "azurerm_monitor_metric_alert",
                "azurerm_monitor_activity_log_alert",
            ],
        )

    def scan_resource_conf(self, conf):
        actions = conf.get("action") or []
        for action in actions:
            if not isinstance(action, dict):
                continue
            groups = first(action, "action_groups") if "action_groups" in action else first(action, "action_group_id")
            if _named(groups):
                return CheckResult.PASSED
        return CheckResult.FAILED


check = AlertNotifiesActionGroup()
