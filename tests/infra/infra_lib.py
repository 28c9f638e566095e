"""Helpers of the offline infra checks: paths, checkov runs, manifest loading,
Kubernetes model validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "infra"
HERE = Path(__file__).resolve().parent


def run_checkov(infra: Path, stage: str, checks: list[str] | None = None) -> dict:
    """checkov over infra/terraform with one stage's tfvars and the custom
    policies in infra/policies; returns the terraform JSON report."""
    tf = infra / "terraform"
    cmd = [
        sys.executable, "-m", "checkov.main",
        "-d", str(tf),
        "--framework", "terraform",
        "--skip-download",
        "--external-checks-dir", str(infra / "policies"),
        "--var-file", str(tf / "stages" / f"{stage}.tfvars"),
        "--compact", "-o", "json",
    ]
    if checks:
        cmd += ["--check", ",".join(checks)]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tf)
    if p.returncode not in (0, 1):
        raise AssertionError(f"checkov exited {p.returncode}:\n{p.stderr[-4000:]}")
    report = json.loads(p.stdout)
    if isinstance(report, list):
        report = next(r for r in report if r.get("check_type") == "terraform")
    if "results" not in report:  # no check ran at all
        report = {"results": {"failed_checks": [], "passed_checks": [], "skipped_checks": []}, "summary": report}
    return report


def failed(report: dict) -> set[tuple[str, str]]:
    return {(c["check_id"], c["resource"]) for c in report["results"]["failed_checks"]}


def passed(report: dict) -> set[tuple[str, str]]:
    return {(c["check_id"], c["resource"]) for c in report["results"]["passed_checks"]}


def manifests(deploy: Path) -> list[dict]:
    """Every Kubernetes object under infra/deploy (kustomizations and their
    transformer configurations excluded)."""
    out = []
    for f in sorted(deploy.rglob("*.yaml")):
        if f.name == "kustomizeconfig.yaml":
            continue
        for doc in yaml.safe_load_all(f.read_text()):
            if not doc or doc.get("kind") == "Kustomization":
                continue
            out.append({"file": str(f.relative_to(deploy)), "doc": doc})
    return out


def validate_k8s(docs: list[dict]) -> list[dict]:
    nm = os.environ.get("CMK_INFRA_NODE_MODULES")
    if not nm:
        raise AssertionError("CMK_INFRA_NODE_MODULES is not set: run scripts/infra-check")
    p = subprocess.run(
        ["node", str(HERE / "node" / "validate-manifests.mjs"), nm],
        input=json.dumps(docs), capture_output=True, text=True, timeout=300,
    )
    if p.returncode != 0:
        raise AssertionError(p.stderr)
    return json.loads(p.stdout)


def by_kind_name(docs: list[dict]) -> dict:
    """{(kind, name): object} over manifests() or plain objects."""
    out = {}
    for d in docs:
        doc = d.get("doc", d)
        out[(doc["kind"], doc["metadata"]["name"])] = doc
    return out


def terraform_text() -> str:
    return "\n".join(p.read_text() for p in sorted((INFRA / "terraform").glob("*.tf")))
