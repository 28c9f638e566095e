"""Helpers shared by the custom checkov policies.

checkov hands a resource check its rendered configuration: every attribute is
a one-element list (blocks are lists of dicts), references it cannot resolve
stay as text such as ``azurerm_key_vault_managed_hardware_security_module_key.key["cosmos"].id``.
"""

HSM_KEY = "azurerm_key_vault_managed_hardware_security_module_key."
KV_KEY = "azurerm_key_vault_key."


def first(conf, name, default=None):
    """The value of attribute ``name`` (unwrapped from checkov's list)."""
    if not isinstance(conf, dict) or name not in conf:
        return default
    v = conf[name]
    if isinstance(v, list):
        return v[0] if v else default
    return v


def block(conf, name):
    """The first instance of nested block ``name`` (dict) or None."""
    v = first(conf, name)
    return v if isinstance(v, dict) else None


def is_true(v):
    return v is True or (isinstance(v, str) and v.strip().lower() == "true")


def refers(v, prefix):
    """Whether a rendered value is a reference to a resource of a given type."""
    if isinstance(v, list):
        return bool(v) and all(refers(x, prefix) for x in v)
    return isinstance(v, str) and v.replace("${", "").lstrip().startswith(prefix)
