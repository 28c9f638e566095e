"""The KQL evaluator behind the monitoring query test: known answers for
each construct the queries use, and a refusal for what it does not know."""

import datetime as dt

import pytest

from harness import kql

T0 = dt.datetime(2026, 1, 1, 10, 0, 30, tzinfo=dt.timezone.utc)


def rows(*messages):
    return [{"TimeGenerated": T0 + dt.timedelta(seconds=i * 20), "PodNamespace": "ns", "ContainerName": "c",
             "LogMessage": m} for i, m in enumerate(messages)]


DATA = rows({"event": "request", "status": 200, "code": None, "d": 10, "x": {"n": 1}},
            {"event": "request", "status": 503, "code": "KeyDisabled", "d": 30, "x": {"n": 2}},
            {"event": "request", "status": 503, "code": "StoreUnavailable", "d": 20, "x": {"n": 3}},
            {"event": "other", "status": 500},
            "a line that is not JSON")


def q(text):
    return kql.parse("T\n" + text).run(DATA)


def test_where_extend_and_conversions():
    out = q('| where tostring(LogMessage.event) == "request"\n| extend c = tostring(LogMessage.code)\n| project c')
    assert [r["c"] for r in out] == ["", "KeyDisabled", "StoreUnavailable"]
    assert q('| where toint(LogMessage.status) >= 500 and tostring(LogMessage.code) startswith "key"') != []
    assert len(q('| where tostring(LogMessage.code) !startswith "Key"')) == 4
    assert len(q('| where tostring(LogMessage.event) in ("other", "none")')) == 1
    assert len(q('| where isnotempty(tostring(LogMessage.code)) or toint(LogMessage.status) == 500')) == 3


def test_summarize_aggregates_and_bins():
    out = q('| where tostring(LogMessage.event) == "request"\n'
            '| extend s = toint(LogMessage.status), d = toint(LogMessage.d), n = toint(LogMessage.x.n)\n'
            '| summarize total = count(), errors = countif(s >= 500), n = sum(n), top = max(d), '
            'p50 = percentile(d, 50) by bin(TimeGenerated, 1m)\n'
            '| extend share = 100.0 * errors / total')
    assert [(r["TimeGenerated"].minute, r["total"], r["errors"], r["n"], r["top"], r["p50"]) for r in out] == \
        [(0, 2, 1, 3, 30, 10), (1, 1, 1, 3, 20, 20)]
    assert out[0]["share"] == 50.0


def test_an_empty_summarize_without_keys_still_answers_one_row():
    assert q('| where false\n| summarize n = count(), m = max(toint(LogMessage.d))') == [{"n": 0, "m": None}]


def test_reads_are_recorded_with_their_conversion():
    parsed = kql.parse('T | extend a = toint(LogMessage.x.n), b = LogMessage.y')
    assert [(r.path, r.conversion) for r in parsed.reads] == [(("x", "n"), "toint"), (("y",), None)]
    assert parsed.columns() == ["a", "b"]


def test_templates_and_unsupported_constructs():
    assert kql.render('x == "${a}"', {"a": "v"}) == 'x == "v"'
    with pytest.raises(KeyError):
        kql.render("${b}", {})
    for text in ('arg("").resources', "T | join (U) on x", "T | where a =~ 1"):
        with pytest.raises(kql.Unsupported):
            kql.parse(text)
