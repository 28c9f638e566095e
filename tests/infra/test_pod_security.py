"""The manifests as the cluster would admit them: the SpinAppExecutor in the
SpinApp's namespace (spin-operator v0.6.1's webhook) and applied before it
(kustomize `sortOptions: fifo`), and every pod, the ones
spin-operator creates for the app included, admitted by its namespace's Pod
Security `enforce` level, with that level no looser than needed and
warn/audit at restricted (k8s_rules.py). Broken copies fail."""

import shutil

import pytest

import infra_lib
import k8s_rules

DEPLOY = infra_lib.INFRA / "deploy"


def test_manifests_are_admitted():
    assert k8s_rules.check(DEPLOY) == []


def test_the_app_namespace_enforces_baseline_and_reports_restricted():
    levels = k8s_rules.namespace_levels(k8s_rules.load(DEPLOY))
    assert levels["cmk-ingest"] == {"enforce": "baseline", "warn": "restricted", "audit": "restricted"}


def test_operator_pods_would_be_refused_by_restricted():
    """Why enforce is baseline: the pod spin-operator v0.6.1 builds has no
    securityContext, which restricted refuses and baseline admits."""
    objs = k8s_rules.load(DEPLOY)
    pods = [pod for _, what, pod in k8s_rules.pod_templates(objs) if "spin-operator" in what]
    assert pods
    for pod in pods:
        assert k8s_rules.violations(pod, "restricted")
        assert not k8s_rules.violations(pod, "baseline")


def _edit(deploy, file, old, new):
    p = deploy / file
    text = p.read_text()
    assert text.count(old) == 1, f"{file}: anchor must occur once: {old!r}"
    p.write_text(text.replace(old, new))


BROKEN = [
    ("executor with the cluster add-ons", None, "is not in namespace cmk-ingest"),
    ("kustomize legacy order", ("app/kustomization.yaml", "sortOptions:\n  order: fifo\n", ""),
     "does not set sortOptions.order: fifo"),
    ("spinapp before its executor", ("app/kustomization.yaml", "  - executor.yaml\n  - spinapp.yaml\n",
                                     "  - spinapp.yaml\n  - executor.yaml\n"), "listed before its executor"),
    ("namespace enforces restricted", ("app/namespace.yaml", "enforce: baseline", "enforce: restricted"),
     "refused by enforce=restricted"),
    ("namespace enforces nothing", ("app/namespace.yaml", "enforce: baseline", "enforce: privileged"),
     "looser than needed"),
    ("warn lowered", ("app/namespace.yaml", "warn: restricted", "warn: baseline"), "warn and audit must stay restricted"),
    ("bridge may escalate", ("app/bridge.yaml", "allowPrivilegeEscalation: false", "allowPrivilegeEscalation: true"),
     "Deployment/cmk-ingest-bridge: does not meet restricted"),
    ("token proxy keeps capabilities", ("app/token-proxy.yaml", 'drop: ["ALL"]', 'drop: ["NET_RAW"]'),
     "capabilities do not drop ALL"),
    ("backup job on a host path", ("app/hsm-backup-cronjob.yaml", "          volumes:\n            - name: tmp\n",
                                  "          volumes:\n            - name: host\n              hostPath:\n                path: /var\n            - name: tmp\n"),
     "hostPath volume host"),
]


@pytest.mark.parametrize("case", BROKEN, ids=[c[0] for c in BROKEN])
def test_broken_copies_fail(case, tree_copy):
    name, edit, message = case
    deploy = tree_copy / "deploy"
    if edit is None:
        # The executor back among the cluster add-ons (no namespace there).
        shutil.move(deploy / "app" / "executor.yaml", deploy / "spinkube" / "executor.yaml")
        _edit(deploy, "app/kustomization.yaml", "  - executor.yaml\n", "")
        _edit(deploy, "spinkube/kustomization.yaml", "  - shim-spin.yaml\n", "  - shim-spin.yaml\n  - executor.yaml\n")
    else:
        _edit(deploy, *edit)
    errors = k8s_rules.check(deploy)
    assert any(message in e for e in errors), errors
