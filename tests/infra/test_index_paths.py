"""The Cosmos DB index exclusions that infra/terraform/cosmos.tf derives from
`protected_fields`: each configured pointer becomes `/event{pointer}/*`, and
a `*` token (every array element) becomes `[]`, the index path's spelling of
"any array element" (Microsoft docs, "Indexing policies in Azure Cosmos DB":
`/path/[]/...`). checkov leaves the dynamic block's `for` expression
unevaluated, so this test evaluates the expression as written in the file,
with a small evaluator of exactly the HCL it uses (string templates, `join`,
`split`, a `for` list with a conditional, `==`); anything else in it fails
the test rather than passing unchecked."""

import re

import pytest

import infra_lib

COSMOS_TF = infra_lib.INFRA / "terraform" / "cosmos.tf"


def exclusion_template(text: str) -> str:
    """The `path` template of the dynamic `excluded_path` block."""
    block = text.split('dynamic "excluded_path"', 1)[1]
    m = re.search(r'^\s*path\s*=\s*"(.*)"\s*$', block, re.M)
    assert m, "no path in the dynamic excluded_path block"
    return m.group(1)


TOKEN = re.compile(r'\s*(?:("(?:[^"\\]|\\.)*")|(==|[()\[\],:?])|([A-Za-z_][A-Za-z0-9_.]*))')


def tokens(expr: str) -> list[tuple[str, str]]:
    out, i = [], 0
    while i < len(expr):
        if expr[i:].strip() == "":
            break
        m = TOKEN.match(expr, i)
        assert m and m.end() > i, f"unsupported HCL at {expr[i:]!r}"
        s, op, name = m.groups()
        out.append(("str", s[1:-1].replace('\\"', '"')) if s else ("op", op) if op else ("name", name))
        i = m.end()
    return out


def evaluate(expr: str, env: dict):
    toks = tokens(expr)
    pos = 0

    def peek():
        return toks[pos] if pos < len(toks) else ("end", "")

    def take(kind=None, value=None):
        nonlocal pos
        t = peek()
        assert (kind is None or t[0] == kind) and (value is None or t[1] == value), f"expected {value or kind}, got {t}"
        pos += 1
        return t

    def cond(env):
        v = eq(env)
        if peek() == ("op", "?"):
            take()
            a = cond(env)
            take("op", ":")
            b = cond(env)
            return a if v else b
        return v

    def eq(env):
        v = primary(env)
        if peek() == ("op", "=="):
            take()
            return v == primary(env)
        return v

    def primary(env):
        kind, val = take()
        if kind == "str":
            return val
        if kind == "op" and val == "[":
            take("name", "for")
            var = take("name")[1]
            take("name", "in")
            seq = cond(env)
            take("op", ":")
            nonlocal pos
            start, out = pos, []
            for item in seq:
                pos = start
                out.append(cond({**env, var: item}))
            if not seq:  # still parse the body
                cond({**env, var: ""})
            take("op", "]")
            return out
        if kind == "name" and peek() == ("op", "("):
            take()
            args = [cond(env)]
            while peek() == ("op", ","):
                take()
                args.append(cond(env))
            take("op", ")")
            funcs = {"join": lambda sep, xs: sep.join(xs), "split": lambda sep, s: s.split(sep)}
            assert val in funcs, f"unsupported function {val}"
            return funcs[val](*args)
        if kind == "name":
            assert val in env, f"unknown name {val}"
            return env[val]
        raise AssertionError(f"unsupported HCL token {val!r}")

    v = cond(env)
    assert peek()[0] == "end", f"trailing HCL: {toks[pos:]}"
    return v


def render(template: str, env: dict) -> str:
    """A string template: literal text and `${expr}` parts."""
    out, i = "", 0
    while i < len(template):
        j = template.find("${", i)
        if j < 0:
            return out + template[i:]
        out += template[i:j]
        depth, k, in_str = 1, j + 2, False
        while depth:
            c = template[k]
            if in_str:
                in_str = not (c == '"' and template[k - 1] != "\\")
            elif c == '"':
                in_str = True
            elif c == "{":
                depth += 1
            elif c == "}":
                depth -= 1
            k += 1
        out += evaluate(template[j + 2:k - 1], env)
        i = k
    return out


CASES = [
    ("/data", "/event/data/*"),
    ("/data/ssn", "/event/data/ssn/*"),
    ("/data/items/*/ssn", "/event/data/items/[]/ssn/*"),
    ("/data/*", "/event/data/[]/*"),
]


@pytest.mark.parametrize("pointer,path", CASES)
def test_each_protected_pointer_is_excluded_with_arrays_as_brackets(pointer, path):
    template = exclusion_template(COSMOS_TF.read_text())
    assert render(template, {"excluded_path.value": pointer}) == path


def test_a_broken_mapping_fails(tree_copy):
    tf = tree_copy / "terraform" / "cosmos.tf"
    text = tf.read_text()
    assert '"[]"' in text
    broken = exclusion_template(text.replace('"[]"', '"*"'))
    assert render(broken, {"excluded_path.value": "/data/items/*/ssn"}) != "/event/data/items/[]/ssn/*"
    # An expression this evaluator does not know fails instead of passing.
    with pytest.raises(AssertionError):
        render(exclusion_template(text.replace("split(", "splitx(")), {"excluded_path.value": "/data"})
