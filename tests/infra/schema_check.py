"""Holds a Terraform tree to the provider schema, the way `terraform validate`
would, without Terraform or a provider download.

The schema is tests/infra/provider-schema.json, generated from the pinned
provider bindings (tests/infra/node/provider-schema.mjs). Checked:

- every resource and data source type exists in the schema;
- every argument and nested block exists where it is written (dynamic blocks
  included), and every required argument and required block is present;
- every reference `TYPE.NAME.ATTR` / `data.TYPE.NAME.ATTR` names a resource
  declared in the tree and an attribute that type has.
"""

from __future__ import annotations

import re
from pathlib import Path

import hcl2

META = {"count", "for_each", "depends_on", "lifecycle", "provider", "provisioner", "connection"}
PREFIXES = ("azurerm_", "helm_", "random_")


def _parse(tf_dir: Path) -> dict[str, dict]:
    out = {}
    for f in sorted(tf_dir.glob("*.tf")):
        with open(f) as fh:
            out[f.name] = hcl2.load(fh)
    return out


def _check_body(body: dict, schema: dict, where: str, errors: list[str]) -> None:
    attrs, blocks = schema["attributes"], schema["blocks"]
    present = set()
    for key, value in body.items():
        if key.startswith("__") or key in META:
            continue
        if key == "dynamic":
            for dyn in value:
                for name, spec in dyn.items():
                    if name not in blocks:
                        errors.append(f"{where}: unknown block `dynamic \"{name}\"`")
                        continue
                    present.add(name)
                    for content in spec.get("content", []):
                        _check_body(content, blocks[name]["block"], f"{where}.{name}", errors)
            continue
        present.add(key)
        if key in attrs:
            continue
        if key in blocks:
            items = value if isinstance(value, list) else [value]
            if blocks[key]["nesting"] == "single" and len(items) > 1:
                errors.append(f"{where}: block `{key}` may appear once")
            for item in items:
                if isinstance(item, dict):
                    _check_body(item, blocks[key]["block"], f"{where}.{key}", errors)
            continue
        errors.append(f"{where}: unsupported argument or block `{key}`")
    for name, spec in attrs.items():
        if spec["required"] and name not in present:
            errors.append(f"{where}: missing required argument `{name}`")
    for name, spec in blocks.items():
        if spec["required"] and name not in present:
            errors.append(f"{where}: missing required block `{name}`")


def _strip_comments(text: str) -> str:
    return "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(("#", "//")))


REF = re.compile(r"(?<![\w.\"])(data\.)?((?:azurerm|helm|random)_[a-z0-9_]+)\.([a-z_][a-z0-9_-]*)(?:\[[^\]]*\]|\[\*\])?\.([a-z_][a-z0-9_]*)")


def check_tree(tf_dir: Path, schema: dict) -> list[str]:
    errors: list[str] = []
    declared = {"resource": set(), "data": set()}
    for fname, doc in _parse(tf_dir).items():
        for kind in ("resource", "data"):
            for entry in doc.get(kind, []):
                for rtype, named in entry.items():
                    for rname, body in named.items():
                        declared[kind].add((rtype, rname))
                        if not rtype.startswith(PREFIXES):
                            errors.append(f"{fname}: {kind} type `{rtype}` has no provider schema here")
                            continue
                        s = schema[kind].get(rtype)
                        if s is None:
                            errors.append(f"{fname}: {kind} type `{rtype}` does not exist in the provider schema")
                            continue
                        _check_body(body, s, f"{fname}: {kind}.{rtype}.{rname}", errors)
    for f in sorted(tf_dir.glob("*.tf")):
        text = _strip_comments(f.read_text())
        for m in REF.finditer(text):
            kind = "data" if m.group(1) else "resource"
            rtype, rname, attr = m.group(2), m.group(3), m.group(4)
            ref = f"{'data.' if kind == 'data' else ''}{rtype}.{rname}.{attr}"
            if (rtype, rname) not in declared[kind]:
                errors.append(f"{f.name}: reference `{ref}` names no declared {kind}")
                continue
            s = schema[kind].get(rtype)
            if s is None:
                continue
            known = set(s["exported"]) | set(s["attributes"]) | set(s["blocks"])
            if attr not in known:
                errors.append(f"{f.name}: reference `{ref}`: `{rtype}` has no attribute `{attr}`")
    return sorted(set(errors))
