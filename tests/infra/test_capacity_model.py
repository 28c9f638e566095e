"""scripts/capacity, the capacity model, against figures computed by hand
from docs/capacity.json (the arithmetic is written out beside each case)."""

import collections
import copy
import csv
import importlib.machinery
import importlib.util
import json
import statistics

import pytest

import infra_lib

SCRIPT = infra_lib.ROOT / "scripts" / "capacity"


def load_script():
    loader = importlib.machinery.SourceFileLoader("capacity_script", str(SCRIPT))
    spec = importlib.util.spec_from_loader("capacity_script", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


cap = load_script()


@pytest.fixture
def c():
    return cap.load_constants()


# The measured CPU of the run of 2026-12-01, frozen: the cases written out
# by hand below check the model's arithmetic on these, whatever the latest
# run in docs/capacity.json measured (test_measured_constants_are_the_recorded_runs
# ties that file to its run).
HAND_CPU = {"1": 2.04, "10": 0.32, "100": 0.14}
HAND_LOCAL_WRAP_CPU = {"1": 4.23, "10": 0.47, "100": 0.16}


@pytest.fixture
def hand(c):
    h = copy.deepcopy(c)
    h["measured"]["component_cpu_s_per_1000_events"] = dict(HAND_CPU)
    h["measured"]["local_wrap_component_cpu_s_per_1000_events"] = dict(HAND_LOCAL_WRAP_CPU)
    return h


def test_defaults_by_hand(hand):
    r = cap.defaults_model(hand)
    # 300 events/s, 1024 B, batch 1, one sealed field of 768 B.
    # CPU: 2.04 ms measured at batch 1 + (768 - 500) / 1024 KB * 0.080 ms/KB.
    assert r["cpu_ms_per_event"] == pytest.approx(2.04 + 268 / 1024 * 0.080)  # 2.0609375
    # 300 * 2.0609375 ms = 0.618 vCPU; / (1 vCPU * 0.7) = 0.88 -> 1 pod, raised to min_pods 2.
    assert r["vcpu_needed"] == pytest.approx(0.61828125)
    assert r["pods"] == 2 and r["vcpu"] == 2
    # Document: 1024 + 340 + header 520 + one pointer 20
    #   + sealed value 41 + ceil(4 * (768 + 16) / 3) = 1046, minus the 768 it replaces.
    assert r["document_bytes"] == 1024 + 340 + 520 + 20 + 41 + 1046 - 768 == 2223
    # 2223 B = 2.1709 KB: 6.29 + 0.1709 / 2 * (6.67 - 6.29) = 6.3225, + 0.2 * 12 terms = 8.7225 RU.
    assert r["ru_per_event"] == pytest.approx(6.29 + (2223 / 1024 - 2) / 2 * 0.38 + 2.4)
    assert r["ru_per_s"] == pytest.approx(300 * 8.7224707)
    # HSM: 300 wraps/s of 2,200, plus 2 pods / 30 s key GETs of 1,100.
    assert r["hsm_wraps_per_s"] == 300
    assert r["hsm_gets_per_s"] == pytest.approx(2 / 30)
    assert r["hsm_pct_of_one"] == pytest.approx(100 * (300 / 2200 + (2 / 30) / 1100))
    # Outbound: per delivery one wrap and one Cosmos batch; key GETs; 2 pods * 2 tokens/hour.
    assert r["outbound_per_s"] == pytest.approx(600 + 2 / 30 + 4 / 3600)
    # Bridge: 32 messages per (10 + ceil(32/8) * (50 + 10)) ms = 32 / 0.25 s = 128/s.
    assert r["bridge_msgs_per_s_per_replica"] == pytest.approx(128)
    assert r["bridge_replicas_at_rate"] == 3  # ceil(300 / 128)
    assert r["keda_queue_length"] == 32 + 128  # a batch in flight + 1 s of work
    # Peak: 2 vCPU / 2.0609375 ms = 970 events/s; / 128 = 7.6 -> 8 replicas.
    assert r["peak_events_per_s"] == pytest.approx(2000 / 2.0609375)
    assert r["keda_max_replicas"] == 8
    # Memory: Little's law at full CPU, 970 / 2 pods = 485.2 deliveries/s x 50 ms = 24.3 -> 25
    # requests at once; the bridge at its maximum, 8 replicas x 8 forwards = 64: the larger.
    assert r["pod_latency_ms"] == 50
    assert r["pod_concurrency_at_full_cpu"] == 25
    assert r["bridge_in_flight_max"] == 64 and r["pod_concurrency"] == 64
    # 1 KB deliveries hold the 2 MiB resident slot (14.5 * 1024 / 952190 = 0.016 MiB is less):
    # 64 base + 64 * 2 + 14.5 for one request near the body limit = 206.5 -> 224 (a multiple of 32).
    assert r["memory_per_request_mib"] == 2
    assert r["pod_memory_needed_mib"] == pytest.approx(206.5)
    assert r["pod_memory_mib"] == 224
    assert r["warnings"] == []


def test_measured_batch_sizes_use_the_measured_cpu(hand):
    for batch, ms in ((1, 2.04), (10, 0.32), (100, 0.14)):
        r = cap.model(hand, 1000, 1024, batch, 3, 500)
        assert r["cpu_ms_per_event"] == pytest.approx(ms)
        assert r["events_per_s_per_vcpu"] == pytest.approx(1000 / ms)


def test_other_batch_sizes_follow_the_fixed_plus_per_event_fit(hand):
    # From batch 1 (2.04) and 100 (0.14): per delivery F = 1.90 / 0.99 = 1.91919 ms,
    # per event E = 2.04 - F = 0.12081 ms. Batch 50: E + F / 50 = 0.15919 ms.
    r = cap.model(hand, 1000, 1024, 50, 3, 500)
    assert r["cpu_ms_per_event"] == pytest.approx(0.12080808 + 1.91919192 / 50)
    # The fit reproduces the measured batch 10 within 3 %: 0.12081 + 0.19192 = 0.31273 vs 0.32.
    f = 0.12080808 + 1.91919192 / 10
    assert abs(f - 0.32) / 0.32 < 0.03


def test_larger_events_add_sealing_and_json_cost(hand):
    # 4 KB event, 3 KB sealed: + (3072 - 500) / 1024 * 0.080 + (4096 - 1024) / 1024 * 0.037.
    r = cap.model(hand, 100, 4096, 1, 2, 3072)
    assert r["cpu_ms_per_event"] == pytest.approx(2.04 + 2572 / 1024 * 0.080 + 3 * 0.037)
    # Smaller than measured: the measured cost, not less.
    assert cap.model(hand, 100, 256, 1, 1, 100)["cpu_ms_per_event"] == pytest.approx(2.04)


def test_pods_at_an_exact_multiple_are_not_rounded_up(hand):
    # Batch 10: 4375 events/s * 0.32 ms = 1.4 vCPU = exactly 2 pods at 0.7.
    assert cap.model(hand, 4375, 1024, 10, 3, 500)["pods"] == 2
    assert cap.model(hand, 4376, 1024, 10, 3, 500)["pods"] == 3


def test_cosmos_requests_per_delivery(c):
    # One transactional batch per partition key, at most 100 operations each.
    assert cap.model(c, 1000, 1024, 100, 1, 500, 4)["cosmos_requests_per_delivery"] == 4
    assert cap.model(c, 1000, 1024, 250, 1, 500, 1)["cosmos_requests_per_delivery"] == 3
    # And at most 2 MiB each: 100 documents of 100 KB events with half sealed
    # (102,400 + 340 + 540 + 41 + ceil(4 * 51,216 / 3) - 51,200 = 120,409 B) = 12 MB -> 6 requests.
    r = cap.model(c, 1000, 102400, 100, 1, 51200, 1)
    assert r["document_bytes"] == 102400 + 340 + 540 + 41 + 68288 - 51200 == 120409
    assert r["cosmos_requests_per_delivery"] == 6  # ceil(100 * 120409 / 2097152) = ceil(5.74)
    # Outbound at batch 100, one key: (1 wrap + 6 batches) per 100 events.
    assert r["outbound_per_event"] == pytest.approx((10 * 7 + r["hsm_gets_per_s"] + r["pods"] * 2 / 3600) / 1000)


def test_ru_table_ends_and_nothing_sealed(c):
    # Nothing sealed: no wrap, a header without a data key; 514 + 340 + 170 = 1024 B = 1 KB -> 4.95 + 2.4.
    r = cap.model(c, 100, 514, 1, 0)
    assert r["document_bytes"] == 1024
    assert r["ru_per_event"] == pytest.approx(4.95 + 2.4)
    assert r["hsm_wraps_per_s"] == 0 and r["hsm_gets_per_s"] == 0
    # Below 1 KB the table's smallest charge.
    assert cap.model(c, 100, 10, 1, 0)["ru_per_event"] == pytest.approx(4.95 + 2.4)
    # Two regions write twice.
    c2 = copy.deepcopy(c)
    c2["cosmos"]["regions"] = 2
    assert cap.model(c2, 100, 514, 1, 0)["ru_per_event"] == pytest.approx(2 * 7.35)


def test_local_wrap_moves_the_cost_from_the_hsm_to_the_cpu(hand):
    r = cap.model(hand, 300, 1024, 1, 3, 500, local_wrap=True)
    assert r["hsm_wraps_per_s"] == 0
    assert r["cpu_ms_per_event"] == pytest.approx(4.23)
    # 300 * 4.23 ms = 1.27 vCPU / 0.7 = 1.81 -> 2 pods; outbound: one Cosmos request per event.
    assert r["pods"] == 2
    assert r["outbound_per_s"] == pytest.approx(300 + 2 / 30 + 4 / 3600)


def test_hsm_key_size_and_limit_warnings(c):
    c3 = copy.deepcopy(c)
    c3["hsm"]["key_size"] = 3072
    r = cap.model(c3, 1900, 1024, 1, 1, 512)
    # 1,900 wraps/s is one RSA-3072 HSM's published wrap rate, plus the key GETs.
    assert r["hsm_pct_of_one"] == pytest.approx(100 + 100 * r["hsm_gets_per_s"] / 1100)
    assert any("one Managed HSM" in w for w in r["warnings"])
    # 500 events/s * 8.7 RU > 4,000 RU/s.
    assert any("autoscale maximum" in w for w in cap.model(c, 500, 1024, 1, 1, 768)["warnings"])


def test_push_batches_have_no_bridge_settings(c):
    r = cap.model(c, 1000, 1024, 10, 1, 512)
    assert r["keda_queue_length"] is None and r["keda_max_replicas"] is None
    assert r["bridge_in_flight_max"] is None


def test_push_memory_follows_the_rate_and_the_body(hand):
    # Batch 10 of 1 KB: 0.32 ms/event; 1,000 events/s needs 0.32 vCPU -> 2 pods, 6,250 events/s
    # at full CPU, 312.5 deliveries/s per pod. A delivery: 50 ms + 9 more events * 0.32 ms = 52.88 ms,
    # so 16.5 -> 17 at once; no bridge. 10 KB bodies hold the 2 MiB slot: 64 + 34 + 14.5 = 112.5 -> 128.
    r = cap.model(hand, 1000, 1024, 10, 1, 500)
    assert r["pod_latency_ms"] == pytest.approx(52.88)
    assert r["pod_concurrency"] == r["pod_concurrency_at_full_cpu"] == 17
    assert r["pod_memory_needed_mib"] == pytest.approx(112.5) and r["pod_memory_mib"] == 128
    # Batch 100 of 9 KB events (921,600 B, near the body limit): each in flight holds
    # 14.5 * 921600 / 952190 = 14.03 MiB.
    r = cap.model(hand, 1000, 9216, 100, 1, 4096)
    assert r["memory_per_request_mib"] == pytest.approx(14.5 * 921600 / 952190)
    assert r["pod_memory_needed_mib"] == pytest.approx(64 + r["pod_concurrency"] * 14.5 * 921600 / 952190 + 14.5)
    assert r["pod_memory_mib"] % 32 == 0 and 0 <= r["pod_memory_mib"] - r["pod_memory_needed_mib"] < 32


def test_memory_constants_are_the_recorded_figures(c):
    """The memory per request and per large delivery are the ones the docs
    record (docs/runtime.md's burst under Spin's pool; docs/reliability.md's
    overload figures), and Spin keeps 2 MiB of a slot resident."""
    m = c["memory"]
    runtime = (infra_lib.ROOT / "docs" / "runtime.md").read_text()
    assert "**1.6 MiB per concurrent request**" in runtime
    assert 1.6 <= m["per_concurrent_request_mib"] <= 2  # measured .. Spin's linear_memory_keep_resident
    reliability = (infra_lib.ROOT / "docs" / "reliability.md").read_text()
    figures = json.loads(reliability.split("<!-- figures:overload:begin -->")[1].split("```json")[1].split("```")[0])
    assert figures["one_request"]["body_bytes"] == m["large_request_body_bytes"]
    assert figures["one_request"]["rss_growth_mib"] == m["large_request_mib"]


@pytest.mark.parametrize("kwargs, message", [
    ({"rate": 0}, "rate"),
    ({"rate": 10, "batch": 0}, "batch"),
    ({"rate": 10, "batch": 2, "partition_keys": 3}, "partition_keys"),
    ({"rate": 10, "event_bytes": 100, "sealed_bytes": 200}, "sealed_bytes"),
    ({"rate": 10, "event_bytes": 3_000_000}, "2 MB"),
])
def test_inputs_it_cannot_size_are_refused(c, kwargs, message):
    with pytest.raises(cap.InputError, match=message):
        cap.model(c, **kwargs)


def test_command_line(capsys):
    assert cap.main(["--defaults", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["pods"] == 2 and out["keda_queue_length"] == 160
    assert cap.main(["--rate", "300", "--batch", "10"]) == 0
    assert "none: batches above 1" in capsys.readouterr().out
    assert cap.main(["--rate", "10", "--event-bytes", "3000000"]) == 2
    assert "2 MB item limit" in capsys.readouterr().err


def compact_len(x) -> int:
    return len(json.dumps(x, separators=(",", ":"), ensure_ascii=False).encode())


def pointer_get(doc, pointer):
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        doc = doc[int(token)] if isinstance(doc, list) else doc[token]
    return doc


def test_document_size_matches_the_record_vectors(c):
    """The growth the model adds to an event (the header, and each sealed
    value's wrapper and base64url) against the record format's own vectors:
    the sealed record's compact JSON minus the input's, within 5 % and 20
    bytes (the vectors' key id is 82 characters, the model's 95)."""
    vectors = json.loads((infra_lib.ROOT / "tests" / "data" / "record-v1" / "vectors.json").read_text())
    checked = 0
    for case in vectors["valid"]:
        inp, rec = case.get("input"), case.get("record")
        if not inp or not rec or "sealedKid" in rec["cmk"]:
            continue
        fields = rec["cmk"]["fields"]
        plaintext = sum(compact_len(pointer_get(inp, p)) for p in fields)
        event = compact_len(inp)
        predicted = cap.document_bytes(c, event, len(fields), plaintext) - event - c["cosmos"]["document_overhead_bytes"]
        actual = compact_len(rec) - event
        assert abs(predicted - actual) <= 0.05 * actual + 20, (case["name"], predicted, actual)
        checked += 1
    assert checked >= 3


def test_measured_constants_are_the_recorded_runs(c):
    """The CPU figures in docs/capacity.json are the component rows of the
    runs' CSVs (rounded as docs/benchmarks.md prints them); for a run
    measured in rounds, each figure is the median of its rounds."""
    m = c["measured"]
    for csv_key, table_key, rate_key in (("csv", "component_cpu_s_per_1000_events", "events_per_s_whole_machine"),
                                         ("local_wrap_csv", "local_wrap_component_cpu_s_per_1000_events", None)):
        # The component on the test host (runs with both runtimes list both;
        # runs with the floor list it as runtime `floor`).
        by_batch = collections.defaultdict(list)
        for r in csv.DictReader((infra_lib.ROOT / m[csv_key]).open()):
            if r["mode"] == "component" and r.get("runtime", "") in ("", "host"):
                by_batch[r["batch"]].append(r)
        assert sorted(by_batch) == sorted(m[table_key])
        for batch, rows in by_batch.items():
            def median(column):
                return statistics.median(float(r[column]) for r in rows)
            assert m[table_key][batch] == round(median("cpu_s_per_1000_events"), 3), (csv_key, batch)
            if rate_key:
                assert m[rate_key][batch] == round(median("events_per_s"))
                assert m["p50_ms"][batch] == round(median("p50_ms"), 1)
                assert m["p99_ms"][batch] == round(median("p99_ms"), 1)
