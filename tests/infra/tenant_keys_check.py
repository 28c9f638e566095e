"""Per-tenant keys (key scopes) in infra/terraform, offline.

Two checks, both on the parsed HCL (no Terraform binary):

structure(tf)  the tenant keys are built like the consumer keys and each is
               reachable by the app identity alone on its own key:
               - every resource that depends on var.tenant_keys is a
                 `for_each = var.tenant_keys` (keyed by tenant), never `count`
                 (a count index shifts when a tenant is added or removed);
               - the key: RSA-HSM, `key_size`, `expiration_date` and
                 `ignore_changes` as the consumer keys, key_opts exactly
                 wrapKey/unwrapKey, `prevent_destroy`, and the precondition
                 that refuses an erased tenant's key name;
               - a rotation policy per tenant key with the consumer keys'
                 rotation arguments;
               - the app identity's Crypto Service Encryption User and the
                 key admin group's custom role, each scoped to
                 `/keys/<that tenant's key name>`;
               - the names the variable's validation reserves are exactly the
                 consumer keys' (`local.hsm_keys`: "<consumer>-kek");
               - the spin_variables output maps each tenant whose app role
                 assignment exists to its key resource's name (so the app is
                 told only keys Terraform created and it may use).

instances(tf, values) / diff(tf, before, after)
               every resource instance address with its arguments rendered
               for one value of the variables: for_each over
               var.tenant_keys expands to `type.name["<tenant>"]` with
               each.key / each.value substituted, count to `type.name[<i>]`,
               anything else stays one address; `var.*` is substituted with
               its value, other references stay as text. Comparing two
               values of tenant_keys gives the addresses added, removed, and
               kept but changed: adding or removing one tenant must add or
               remove exactly that tenant's instances and change nothing
               else (an argument that reads the whole map, a name from a
               position, or a count would show up as a changed instance).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import hcl2

HSM = "azurerm_key_vault_managed_hardware_security_module"
KEY_T = f"{HSM}_key"
ROT_T = f"{HSM}_key_rotation_policy"
ROLE_T = f"{HSM}_role_assignment"
TENANT_VAR = "var.tenant_keys"
# The tenant-scoped resources and what each must be.
KEY = (KEY_T, "tenant")
ROTATION = (ROT_T, "tenant")
APP_ROLE = (ROLE_T, "tenant_app")
ADMIN_ROLE = (ROLE_T, "tenant_key_admin")
TENANT_RESOURCES = (KEY, ROTATION, APP_ROLE, ADMIN_ROLE)
# Their consumer-key counterparts, which they must match.
CONSUMER = {KEY: (KEY_T, "key"), ROTATION: (ROT_T, "key"), APP_ROLE: (ROLE_T, "consumer"), ADMIN_ROLE: (ROLE_T, "key_admin")}
KEY_SCOPE = "/keys/${" + KEY_T + ".tenant[each.key].name}"
NOT_ARGUMENTS = {"for_each", "count", "lifecycle", "depends_on", "provider"}


def _one(v):
    return v[0] if isinstance(v, list) and len(v) == 1 else v


def load(tf: Path) -> dict:
    """{'resource': {(type, name): body}, 'variable': {name: body},
    'locals': {name: value}, 'output': {name: body}} over every .tf file."""
    out = {"resource": {}, "variable": {}, "locals": {}, "output": {}}
    for f in sorted(tf.glob("*.tf")):
        doc = hcl2.load(f.open())
        for entry in doc.get("resource", []):
            for rtype, named in entry.items():
                for rname, body in named.items():
                    out["resource"][(rtype, rname)] = body
        for entry in doc.get("variable", []):
            out["variable"].update(entry)
        for entry in doc.get("locals", []):
            out["locals"].update({k: v for k, v in entry.items() if not k.startswith("__")})
        for entry in doc.get("output", []):
            out["output"].update(entry)
    return out


def _text(v) -> str:
    return json.dumps(v, sort_keys=True)


def _mentions_tenants(body: dict) -> bool:
    text = _text({k: v for k, v in body.items() if not k.startswith("__")})
    return TENANT_VAR in text or f"{KEY_T}.tenant[" in text or "each.value.key_name" in text


def _lifecycle(body: dict) -> dict:
    lc = _one(body.get("lifecycle") or [{}]) or {}
    return lc if isinstance(lc, dict) else {}


def defaults(tree: dict) -> dict:
    return {n: _one(b["default"]) if "default" in b else f"<{n}>" for n, b in tree["variable"].items()}


def structure(tf: Path) -> list[str]:
    tree = load(tf)
    res = tree["resource"]
    errors = []
    for addr, body in res.items():
        if not _mentions_tenants(body):
            continue
        name = f"{addr[0]}.{addr[1]}"
        if "count" in body:
            errors.append(f"{name}: uses count over the tenants; a tenant's instance must be keyed by the tenant (for_each = var.tenant_keys)")
        elif _one(body.get("for_each")) != "${" + TENANT_VAR + "}":
            errors.append(f"{name}: depends on the tenants but is not `for_each = var.tenant_keys`")
    for addr in TENANT_RESOURCES:
        if addr not in res:
            errors.append(f"{addr[0]}.{addr[1]}: missing")
    if errors:
        return errors

    def arg(addr, a):
        return _one(res[addr].get(a))

    key, ckey = res[KEY], res[CONSUMER[KEY]]
    ops = arg(KEY, "key_opts")
    if not isinstance(ops, list) or sorted(ops) != ["unwrapKey", "wrapKey"]:
        errors.append(f"tenant key: key_opts must be exactly wrapKey, unwrapKey; is {ops}")
    if arg(KEY, "key_type") != "RSA-HSM":
        errors.append(f"tenant key: key_type must be RSA-HSM; is {arg(KEY, 'key_type')}")
    for a in ("key_size", "expiration_date", "managed_hsm_id"):
        if arg(KEY, a) != _one(ckey.get(a)):
            errors.append(f"tenant key: {a} is {arg(KEY, a)!r}, the consumer keys' is {_one(ckey.get(a))!r}")
    if arg(KEY, "name") != "${each.value.key_name}":
        errors.append(f"tenant key: name must be the tenant's key_name; is {arg(KEY, 'name')!r}")
    lc, clc = _lifecycle(key), _lifecycle(ckey)
    if _one(lc.get("prevent_destroy")) is not True:
        errors.append("tenant key: no lifecycle prevent_destroy")
    if _one(lc.get("ignore_changes")) != _one(clc.get("ignore_changes")):
        errors.append("tenant key: ignore_changes differs from the consumer keys'")
    if "var.erased_tenant_key_names" not in _text(lc.get("precondition", [])):
        errors.append("tenant key: no precondition refusing an erased tenant's key name (erased_tenant_key_names)")

    if arg(ROTATION, "managed_hsm_key_id") != "${" + KEY_T + ".tenant[each.key].id}":
        errors.append(f"tenant rotation policy: managed_hsm_key_id must be the same tenant's key id; is {arg(ROTATION, 'managed_hsm_key_id')!r}")
    for a in ("time_after_creation", "expire_after", "time_before_expiry"):
        if arg(ROTATION, a) != _one(res[CONSUMER[ROTATION]].get(a)):
            errors.append(f"tenant rotation policy: {a} is {arg(ROTATION, a)!r}, the consumer keys' is {_one(res[CONSUMER[ROTATION]].get(a))!r}")

    for addr, who in ((APP_ROLE, "the app identity"), (ADMIN_ROLE, "the key admin group")):
        label = f"{addr[0]}.{addr[1]}"
        if arg(addr, "scope") != KEY_SCOPE:
            errors.append(f"{label}: scope must be that tenant's key alone ({KEY_SCOPE}); is {arg(addr, 'scope')!r}")
        if "${each.key}" not in str(arg(addr, "name")):
            errors.append(f"{label}: the assignment's name must derive from the tenant (each.key)")
        consumer = res[CONSUMER[addr]]
        if arg(addr, "role_definition_id") != _one(consumer.get("role_definition_id")):
            errors.append(f"{label}: role is {arg(addr, 'role_definition_id')!r}, not that of {CONSUMER[addr][1]}")
    if arg(APP_ROLE, "principal_id") != '${azurerm_user_assigned_identity.consumer["app"].principal_id}':
        errors.append(f"{ROLE_T}.tenant_app: principal must be the app identity; is {arg(APP_ROLE, 'principal_id')!r}")
    if arg(ADMIN_ROLE, "principal_id") != _one(res[CONSUMER[ADMIN_ROLE]].get("principal_id")):
        errors.append(f"{ROLE_T}.tenant_key_admin: principal must be the key admin group")

    # The reserved key names in tenant_keys' validation: the consumer keys.
    hsm_keys = tree["locals"].get("hsm_keys")
    hsm_keys = _one(hsm_keys) if hsm_keys is not None else {}
    consumers = {f"{k}-kek" for k in hsm_keys}
    var = tree["variable"].get("tenant_keys", {})
    reserved = set()
    for v in var.get("validation", []):
        reserved |= set(re.findall(r"'([a-z]+-kek)'", _text(v.get("condition"))))
    if reserved != consumers:
        errors.append(f"tenant_keys validation reserves {sorted(reserved)}, the consumer keys are {sorted(consumers)}")

    spin = _one(tree["output"].get("spin_variables", {}).get("value"))
    keys_expr = (spin or {}).get("key_scope_keys", "")
    if not re.search(r"for (\w+)\s*,\s*\w+ in " + re.escape(ROLE_T) + r"\.tenant_app : \1 => " + re.escape(KEY_T) + r"\.tenant\[\1\]\.name", str(keys_expr)):
        errors.append("spin_variables.key_scope_keys must map each tenant whose app role exists to its key resource's name; "
                      f"is {keys_expr!r}")
    return errors


# --- instance addresses for one value of the variables -----------------------

_VAR = re.compile(r"\bvar\.([a-z_][a-z0-9_]*)")
_REF_EACH = re.compile(r"\b([a-z0-9_]+)\.([a-z0-9_]+)\[each\.key\]")


def _render(body: dict, values: dict, tenant=None, value=None, index=None) -> dict:
    args = {k: v for k, v in body.items() if k not in NOT_ARGUMENTS and not k.startswith("__")}
    text = _text(args)
    if tenant is not None:
        # A reference to another tenant-keyed resource's instance names it by
        # the same tenant; then each.* are the tenant and its value.
        text = _REF_EACH.sub(lambda m: f"{m.group(1)}.{m.group(2)}[<{tenant}>]", text)
        text = text.replace("each.value.key_name", f"<{value.get('key_name')}>")
        text = text.replace("each.value", f"<{json.dumps(value, sort_keys=True)}>")
        text = text.replace("each.key", f"<{tenant}>")
    if index is not None:
        text = text.replace("count.index", str(index))
    return json.loads(_VAR.sub(lambda m: f"<{json.dumps(values.get(m.group(1)), sort_keys=True)}>".replace('"', "'"), text))


def instances(tf: Path, values: dict) -> dict[str, dict]:
    tree = load(tf)
    vals = dict(defaults(tree), **values)
    out = {}
    for (rtype, rname), body in tree["resource"].items():
        base = f"{rtype}.{rname}"
        fe, count = _one(body.get("for_each")), _one(body.get("count"))
        if fe == "${" + TENANT_VAR + "}":
            for t, v in vals["tenant_keys"].items():
                out[f'{base}["{t}"]'] = _render(body, vals, tenant=t, value=v)
        elif count is not None and TENANT_VAR in str(count):
            for i in range(len(vals["tenant_keys"])):
                out[f"{base}[{i}]"] = _render(body, vals, index=i)
        else:
            out[base] = _render(body, vals)
    return out


def diff(tf: Path, before: dict, after: dict) -> tuple[set[str], set[str], set[str]]:
    """(added, removed, changed) instance addresses between two variable values."""
    a, b = instances(tf, before), instances(tf, after)
    changed = {k for k in a.keys() & b.keys() if a[k] != b[k]}
    return set(b) - set(a), set(a) - set(b), changed


def one_tenant_changes(tf: Path, before: dict, after: dict) -> list[str]:
    """Errors unless going from `before` to `after` (each a tenant_keys value
    differing by tenants added or removed) adds or removes exactly those
    tenants' instances of every tenant resource and changes nothing else."""
    added, removed, changed = diff(tf, {"tenant_keys": before}, {"tenant_keys": after})
    errors = [f"{k}: changes when {sorted(set(after) ^ set(before))} is added or removed" for k in sorted(changed)]
    for t in sorted(set(after) - set(before)):
        want = {f'{r}.{n}["{t}"]' for r, n in TENANT_RESOURCES}
        if not want <= added:
            errors.append(f"adding {t!r} does not add {sorted(want - added)}")
    for t in sorted(set(before) - set(after)):
        want = {f'{r}.{n}["{t}"]' for r, n in TENANT_RESOURCES}
        if not want <= removed:
            errors.append(f"removing {t!r} does not remove {sorted(want - removed)}")
    moved = set(after) ^ set(before)
    for k in sorted(added | removed):
        m = re.search(r'\["([^"]*)"\]$', k)
        if not m or m.group(1) not in moved:
            errors.append(f"{k}: {'added' if k in added else 'removed'}, but it is not one of {sorted(moved)}'s instances")
    return errors


# --- the erase runbook against the tenant resources ---------------------------

_ADDR = re.compile(r"(azurerm_[a-z0-9_]+)\.([a-z0-9_]+)\[\"T\"\]")


def erase_runbook(readme: str, tf: Path) -> list[str]:
    """infra/README.md, "Erase a tenant": step 2 takes some of the tenant's
    instances out of the state (`terraform state rm`) and says which ones
    the plan then destroys. Every tenant resource with prevent_destroy must
    be taken out (a plan cannot destroy it: it would stop), the plan must
    destroy exactly the others, and none of those may carry prevent_destroy."""
    m = re.search(r"### Erase a tenant \(crypto-shredding\)\n(.*?)(?=\n##)", readme + "\n## ", re.S)
    section = m.group(1) if m else ""
    step2 = re.search(r"\n2\. (.*?)\n3\. ", section, re.S)
    if not step2:
        return ["infra/README.md: no step 2 in \"Erase a tenant\""]
    text = step2.group(1)
    rm_block = re.search(r"terraform state rm (.*?)```", text, re.S)
    removed = {(t, n) for t, n in _ADDR.findall(rm_block.group(1))} if rm_block else set()
    plan = re.search(r"terraform plan` must show(.*?);", text, re.S)
    destroyed = {n for n in re.findall(r"…role_assignment\.([a-z0-9_]+)\[\"T\"\]", plan.group(1))} if plan else set()
    resources = load(tf)["resource"]
    tenant = {addr: body for addr, body in resources.items() if _one(body.get("for_each")) == "${" + TENANT_VAR + "}"}
    errors = []
    if not removed:
        errors.append("\"Erase a tenant\" step 2: no `terraform state rm` of the tenant's instances")
    for addr in sorted(removed - set(tenant)):
        errors.append(f"\"Erase a tenant\" step 2: state rm of {addr[0]}.{addr[1]}, which is not a tenant resource")
    for addr, body in sorted(tenant.items()):
        protected = _one(_lifecycle(body).get("prevent_destroy")) is True
        label = f"{addr[0]}.{addr[1]}"
        if addr in removed:
            continue
        if protected:
            errors.append(f"\"Erase a tenant\" step 2: {label} has prevent_destroy but is not taken out of the state: the plan would stop")
        elif not (addr[0] == ROLE_T and addr[1] in destroyed):
            errors.append(f"\"Erase a tenant\" step 2: the plan destroys {label}[\"T\"], which the runbook does not list")
    for name in sorted(destroyed - {n for t, n in tenant if t == ROLE_T}):
        errors.append(f"\"Erase a tenant\" step 2: lists {name} as destroyed, not a tenant role assignment")
    return errors
