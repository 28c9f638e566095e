"""A small evaluator for the subset of KQL that infra/monitoring/queries use,
so the operator's queries can be run against log lines the component and the
bridge really write, offline.

Supported: a table (`ContainerLogV2`; `arg("")...` is recognized and refused
with `Unsupported`), `| where`, `| extend`, `| project`, `| summarize AGG, ...
by KEY, ...` with count(), countif(), sum(), max(), percentile(); scalar
functions tostring, toint, tolong, todouble, tobool, isnotempty, bin; member
access on dynamic values (`LogMessage.a.b`); `and`, `or`, comparisons, `in`,
`startswith`, `contains` and their `!` forms; + - * /.

Every dynamic member read is recorded with the conversion applied to it
(`Query.reads`), so a test can hold each query to the fields that the logged
JSON really has.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from dataclasses import dataclass, field

TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+(?:\.\d+)?)(?P<unit>ms|s|m|h|d)?\b
    | (?P<str>"(?:[^"\\]|\\.)*")
    | (?P<op>==|!=|>=|<=|!startswith|!contains|!in|[()|,.=<>+\-*/])
    | (?P<name>[A-Za-z_$][A-Za-z0-9_]*)
    )""",
    re.VERBOSE,
)
UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
CONVERSIONS = {"tostring": str, "toint": int, "tolong": int, "todouble": float, "tobool": bool}


class Unsupported(Exception):
    """The query uses KQL this evaluator does not implement."""


@dataclass
class Tok:
    kind: str
    value: object


def tokenize(text: str) -> list[Tok]:
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise Unsupported(f"cannot read {text[pos:pos + 30]!r}")
        pos = m.end()
        if m.group("num") is not None:
            n = float(m.group("num"))
            if m.group("unit"):
                out.append(Tok("timespan", dt.timedelta(seconds=n * UNITS[m.group("unit")])))
            else:
                out.append(Tok("num", int(n) if n.is_integer() and "." not in m.group("num") else n))
        elif m.group("str") is not None:
            out.append(Tok("str", bytes(m.group("str")[1:-1], "utf-8").decode("unicode_escape")))
        elif m.group("op") is not None:
            out.append(Tok("op", m.group("op")))
        else:
            out.append(Tok("name", m.group("name")))
    return out


# Expressions are tuples: ("lit", v) ("col", name) ("member", expr, key)
# ("call", fname, [args]) ("bin", op, l, r) ("not", e) ("in", e, [items], negated)

class Parser:
    def __init__(self, toks: list[Tok]):
        self.t, self.i = toks, 0

    def peek(self, k=0):
        return self.t[self.i + k] if self.i + k < len(self.t) else Tok("eof", None)

    def take(self, kind=None, value=None):
        tok = self.peek()
        if (kind and tok.kind != kind) or (value is not None and tok.value != value):
            raise Unsupported(f"expected {value or kind}, found {tok.value!r}")
        self.i += 1
        return tok

    def at(self, kind, value=None):
        tok = self.peek()
        return tok.kind == kind and (value is None or tok.value == value)

    def expr(self):
        return self.or_()

    def or_(self):
        e = self.and_()
        while self.at("name", "or"):
            self.take()
            e = ("bin", "or", e, self.and_())
        return e

    def and_(self):
        e = self.cmp()
        while self.at("name", "and"):
            self.take()
            e = ("bin", "and", e, self.cmp())
        return e

    def cmp(self):
        e = self.add()
        tok = self.peek()
        if tok.kind == "op" and tok.value in ("==", "!=", ">", ">=", "<", "<=", "!startswith", "!contains", "!in"):
            self.take()
            if tok.value == "!in":
                return ("in", e, self.items(), True)
            return ("bin", tok.value, e, self.add())
        if tok.kind == "name" and tok.value in ("startswith", "contains", "in"):
            self.take()
            if tok.value == "in":
                return ("in", e, self.items(), False)
            return ("bin", tok.value, e, self.add())
        return e

    def items(self):
        self.take("op", "(")
        out = [self.expr()]
        while self.at("op", ","):
            self.take()
            out.append(self.expr())
        self.take("op", ")")
        return out

    def add(self):
        e = self.mul()
        while self.at("op", "+") or self.at("op", "-"):
            op = self.take().value
            e = ("bin", op, e, self.mul())
        return e

    def mul(self):
        e = self.unary()
        while self.at("op", "*") or self.at("op", "/"):
            op = self.take().value
            e = ("bin", op, e, self.unary())
        return e

    def unary(self):
        if self.at("op", "-"):
            self.take()
            return ("bin", "-", ("lit", 0), self.unary())
        return self.postfix()

    def postfix(self):
        e = self.atom()
        while self.at("op", "."):
            self.take()
            e = ("member", e, self.take("name").value)
        return e

    def atom(self):
        tok = self.take()
        if tok.kind in ("num", "str", "timespan"):
            return ("lit", tok.value)
        if tok.kind == "op" and tok.value == "(":
            e = self.expr()
            self.take("op", ")")
            return e
        if tok.kind == "name":
            if tok.value in ("true", "false"):
                return ("lit", tok.value == "true")
            if self.at("op", "("):
                self.take()
                args = []
                if not self.at("op", ")"):
                    args.append(self.expr())
                    while self.at("op", ","):
                        self.take()
                        args.append(self.expr())
                self.take("op", ")")
                return ("call", tok.value, args)
            return ("col", tok.value)
        raise Unsupported(f"unexpected {tok.value!r}")

    def assignment(self):
        """`name = expr`, or an expression named as KQL would name it."""
        if self.at("name") and self.peek(1).kind == "op" and self.peek(1).value == "=":
            name = self.take().value
            self.take()
            return name, self.expr()
        e = self.expr()
        return default_name(e), e

    def assignments(self):
        out = [self.assignment()]
        while self.at("op", ","):
            self.take()
            out.append(self.assignment())
        return out


def default_name(e) -> str:
    if e[0] == "col":
        return e[1]
    if e[0] == "call" and e[1] == "bin" and e[2] and e[2][0][0] == "col":
        return e[2][0][1]
    if e[0] == "call":
        return f"{e[1]}_"
    raise Unsupported(f"name this column: {e}")


@dataclass
class Read:
    """One dynamic member read: its path under the column, the conversion
    applied to it (or None) and the `event` value filtered on, if any."""
    column: str
    path: tuple[str, ...]
    conversion: str | None


@dataclass
class Query:
    table: str
    stages: list[tuple]
    reads: list[Read] = field(default_factory=list)

    def events(self) -> set[str]:
        """The `event` values the query filters on (tostring(LogMessage.event) == "x")."""
        out = set()
        for kind, arg in self.stages:
            if kind == "where":
                _events(arg, out)
        return out

    def columns(self) -> list[str]:
        """The output columns of the last summarize/project and what follows."""
        cols: list[str] = []
        for kind, arg in self.stages:
            if kind == "extend":
                cols += [n for n, _ in arg if n not in cols]
            elif kind == "project":
                cols = [n for n, _ in arg]
            elif kind == "summarize":
                aggs, keys = arg
                cols = [n for n, _ in keys] + [n for n, _ in aggs]
        return cols

    def run(self, rows: list[dict]) -> list[dict]:
        for kind, arg in self.stages:
            if kind == "where":
                rows = [r for r in rows if truthy(ev(arg, r))]
            elif kind == "extend":
                out = []
                for r in rows:
                    r = dict(r)
                    for name, e in arg:
                        r[name] = ev(e, r)
                    out.append(r)
                rows = out
            elif kind == "project":
                rows = [{n: ev(e, r) for n, e in arg} for r in rows]
            elif kind == "summarize":
                rows = summarize(arg, rows)
        return rows


def _events(e, out):
    if e[0] == "bin" and e[1] in ("and", "or"):
        _events(e[2], out)
        _events(e[3], out)
    elif e[0] == "bin" and e[1] == "==" and _is_event(e[2]) and e[3][0] == "lit":
        out.add(e[3][1])


def _is_event(e):
    return e == ("call", "tostring", [("member", ("col", "LogMessage"), "event")])


def _collect_reads(e, reads, conversion=None):
    if not isinstance(e, tuple):
        return
    if e[0] == "member":
        path, base = [], e
        while base[0] == "member":
            path.insert(0, base[2])
            base = base[1]
        if base[0] == "col":
            reads.append(Read(base[1], tuple(path), conversion))
        return
    if e[0] == "call":
        conv = e[1] if e[1] in CONVERSIONS else None
        for a in e[2]:
            _collect_reads(a, reads, conv)
        return
    for part in e[1:]:
        if isinstance(part, tuple):
            _collect_reads(part, reads)
        elif isinstance(part, list):
            for p in part:
                _collect_reads(p, reads)


def parse(text: str) -> Query:
    lines = [ln.split("//", 1)[0] if not ln.lstrip().startswith("//") else "" for ln in text.splitlines()]
    body = " ".join(ln for ln in lines if ln.strip())
    if body.lstrip().startswith("arg("):
        raise Unsupported("Azure Resource Graph (arg) is not a log table")
    p = Parser(tokenize(body))
    table = p.take("name").value
    stages = []
    while not p.at("eof"):
        p.take("op", "|")
        op = p.take("name").value
        if op == "where":
            stages.append(("where", p.expr()))
        elif op == "extend":
            stages.append(("extend", p.assignments()))
        elif op == "project":
            stages.append(("project", p.assignments()))
        elif op == "summarize":
            aggs = p.assignments()
            keys = []
            if p.at("name", "by"):
                p.take()
                keys = p.assignments()
            stages.append(("summarize", (aggs, keys)))
        else:
            raise Unsupported(f"operator {op}")
    q = Query(table, stages)
    for kind, arg in stages:
        if kind == "where":
            _collect_reads(arg, q.reads)
        elif kind in ("extend", "project"):
            for _, e in arg:
                _collect_reads(e, q.reads)
        elif kind == "summarize":
            for _, e in arg[0] + arg[1]:
                _collect_reads(e, q.reads)
    return q


def truthy(v) -> bool:
    return v is True


def convert(fname, v):
    """KQL's conversions: null (and anything that does not convert) -> null,
    except tostring(null) == ""."""
    if fname == "tostring":
        if v is None:
            return ""
        if isinstance(v, bool):
            return "true" if v else "false"
        return v if isinstance(v, str) else str(v)
    if v is None:
        return None
    try:
        if fname in ("toint", "tolong"):
            if isinstance(v, bool):
                return int(v)
            return int(float(v)) if not isinstance(v, int) else v
        if fname == "todouble":
            return float(v)
        if fname == "tobool":
            if isinstance(v, bool):
                return v
            if isinstance(v, str) and v.lower() in ("true", "false"):
                return v.lower() == "true"
            return None
    except (TypeError, ValueError):
        return None
    raise Unsupported(fname)


def ev(e, row):
    kind = e[0]
    if kind == "lit":
        return e[1]
    if kind == "col":
        if e[1] not in row:
            raise Unsupported(f"no column {e[1]}")
        return row[e[1]]
    if kind == "member":
        base = ev(e[1], row)
        return base.get(e[2]) if isinstance(base, dict) else None
    if kind == "call":
        fname, args = e[1], e[2]
        if fname in CONVERSIONS:
            return convert(fname, ev(args[0], row))
        if fname == "isnotempty":
            v = ev(args[0], row)
            return v is not None and v != ""
        if fname == "bin":
            v, span = ev(args[0], row), ev(args[1], row)
            if isinstance(v, dt.datetime):
                secs = span.total_seconds()
                epoch = dt.datetime(1970, 1, 1, tzinfo=v.tzinfo)
                return epoch + dt.timedelta(seconds=math.floor((v - epoch).total_seconds() / secs) * secs)
            return None if v is None else math.floor(v / span) * span
        raise Unsupported(f"function {fname}")
    if kind == "in":
        v = ev(e[1], row)
        found = v in [ev(i, row) for i in e[2]]
        return not found if e[3] else found
    if kind == "bin":
        op = e[1]
        if op == "and":
            return truthy(ev(e[2], row)) and truthy(ev(e[3], row))
        if op == "or":
            return truthy(ev(e[2], row)) or truthy(ev(e[3], row))
        a, b = ev(e[2], row), ev(e[3], row)
        if op in ("startswith", "!startswith", "contains", "!contains"):
            a, b = convert("tostring", a).lower(), convert("tostring", b).lower()
            hit = a.startswith(b) if "startswith" in op else b in a
            return not hit if op.startswith("!") else hit
        if a is None or b is None:
            return None
        if op == "==":
            return a == b
        if op == "!=":
            return a != b
        if op in (">", ">=", "<", "<="):
            return {">": a > b, ">=": a >= b, "<": a < b, "<=": a <= b}[op]
        if op == "+":
            return a + b
        if op == "-":
            return a - b
        if op == "*":
            return a * b
        if op == "/":
            if b == 0:
                return None
            return a / b if isinstance(a, float) or isinstance(b, float) or a % b else a // b
    raise Unsupported(f"expression {e}")


def percentile(values, p):
    """Nearest-rank percentile, as KQL's percentile() approximates."""
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    k = max(0, math.ceil(p / 100 * len(vals)) - 1)
    return vals[k]


def aggregate(e, rows):
    if e[0] != "call":
        raise Unsupported(f"aggregate {e}")
    fname, args = e[1], e[2]
    if fname == "count":
        return len(rows)
    if fname == "countif":
        return sum(1 for r in rows if truthy(ev(args[0], r)))
    vals = [ev(args[0], r) for r in rows]
    present = [v for v in vals if v is not None]
    if fname == "sum":
        return sum(present) if present else 0
    if fname == "max":
        return max(present) if present else None
    if fname == "percentile":
        return percentile(vals, ev(args[1], {}))
    raise Unsupported(f"aggregation {fname}")


def summarize(arg, rows):
    aggs, keys = arg
    groups: dict[tuple, list] = {}
    for r in rows:
        k = tuple(ev(e, r) for _, e in keys)
        groups.setdefault(k, []).append(r)
    if not keys:
        groups.setdefault((), [])
    out = []
    for k, members in groups.items():
        row = {name: k[i] for i, (name, _) in enumerate(keys)}
        for name, e in aggs:
            row[name] = aggregate(e, members)
        out.append(row)
    return out


def render(template: str, values: dict[str, str]) -> str:
    """Terraform templatefile() for templates that only interpolate names:
    every `${name}` must have a value."""
    def sub(m):
        if m.group(1) not in values:
            raise KeyError(f"template variable {m.group(1)} has no value")
        return str(values[m.group(1)])
    if "%{" in template:
        raise Unsupported("template directives")
    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", sub, template)


def template_names(template: str) -> set[str]:
    return set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", template))


def container_log_rows(lines: list[str], namespace: str, container: str, pod: str) -> list[dict]:
    """ContainerLogV2 rows for a container's stdout/stderr: JSON lines become
    a dynamic LogMessage (as Container Insights stores them), others a string."""
    import json

    rows = []
    now = dt.datetime.now(dt.timezone.utc)
    for ln in lines:
        ln = ln.strip()
        if not ln:
            continue
        try:
            msg = json.loads(ln)
        except ValueError:
            msg = ln
        ts = now
        if isinstance(msg, dict) and isinstance(msg.get("ts"), str):
            try:
                ts = dt.datetime.fromisoformat(msg["ts"].replace("Z", "+00:00"))
            except ValueError:
                pass
        rows.append({"TimeGenerated": ts, "PodNamespace": namespace, "ContainerName": container,
                     "PodName": pod, "LogMessage": msg, "LogSource": "stderr"})
    return rows
