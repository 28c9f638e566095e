"""The benchmark harness (scripts/bench) stays runnable: a smoke run with a
few events per way and batch size, the component on both runtimes (the test
host and `wasmtime serve`), must finish without errors and write well-formed
CSV and JSON with their ratios side by side. Timings and targets are not
checked here."""

import csv
import hashlib
import json
import re
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.stack import ROOT


def test_bench_smoke_writes_well_formed_results(tmp_path):
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, str(ROOT / "tests/bench/bench.py"), "--smoke", "--events", "40",
                        "--batches", "1,10", "--concurrency", "4", "--rounds", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (csv_path,) = out.glob("bench-*-smoke.csv")
    rows = list(csv.DictReader(csv_path.open()))
    runtimes = ("host", "wasmtime") if os.environ.get("CMK_TEST_HOST") else ("wasmtime",)
    assert {(row["mode"], row["runtime"], row["batch"]) for row in rows} == {
        (m, rt, b) for m, rt in [*(("component", rt) for rt in runtimes), ("baseline", ""), ("ceiling", "")]
        for b in ("1", "10")}
    # Two rounds: every way of every batch size measured twice, in turn,
    # the second round starting one way later than the first.
    assert sorted(row["round"] for row in rows) == ["1"] * (len(rows) // 2) + ["2"] * (len(rows) // 2)
    order = {k: [(row["mode"], row["runtime"]) for row in rows if row["round"] == k and row["batch"] == "1"]
             for k in ("1", "2")}
    assert order["2"] == order["1"][1:] + order["1"][:1], order
    cores = os.cpu_count()
    for row in rows:
        assert row["errors"] == "0" and row["events"] == "40"
        assert float(row["events_per_s"]) > 0 and float(row["p99_ms"]) >= float(row["p50_ms"]) > 0
        assert float(row["cosmos_requests_per_event"]) > 0
        assert float(row["machine_busy_cores"]) >= 0 and float(row["machine_idle_cores"]) >= 0, row
    # The whole machine while each way ran: busy and idle add up to its
    # cores. A smoke window lasts tens of milliseconds, a few of the
    # kernel's 10 ms ticks, so the check is on all the rows' seconds
    # together, each row allowed a tick per core either way.
    seconds = sum(float(row["wall_s"]) for row in rows)
    counted = sum((float(row["machine_busy_cores"]) + float(row["machine_idle_cores"])) * float(row["wall_s"])
                  for row in rows)
    assert abs(counted - cores * seconds) <= 0.02 * cores * len(rows) + 0.1 * cores * seconds, (counted, seconds)
    assert sum(float(row["machine_busy_cores"]) * float(row["wall_s"]) for row in rows) > 0
    for rt in runtimes:
        component = {row["batch"]: row for row in rows if row["mode"] == "component" and row["runtime"] == rt}
        # The counts are exact, not timings: one HSM wrap and one Cosmos request per delivery.
        assert float(component["10"]["hsm_calls_per_event"]) == 0.1, rt
        assert float(component["10"]["cosmos_requests_per_event"]) == 0.1, rt
        assert float(component["1"]["token_calls_per_event"]) == 0, rt
    # The SDK way wraps each batch's data key with the public key its
    # CryptographyClient fetched once (in the warm-up): no HSM request in
    # the timed part, like the component with hsm_local_wrap.
    baseline = {row["batch"]: row for row in rows if row["mode"] == "baseline"}
    assert float(baseline["1"]["hsm_calls_per_event"]) == 0 and float(baseline["10"]["hsm_calls_per_event"]) == 0
    info = json.loads(next(out.glob("bench-*-smoke.json")).read_text())
    assert info["wasm_bytes"] > 0 and all(info["healthz"][rt]["p50_ms"] > 0 for rt in runtimes)
    # The run names the commit it measured (the test runs in a clone).
    assert re.fullmatch(r"[0-9a-f]{7,}(-dirty)?", info["build"]), info["build"]
    assert {t["target"] for t in info["summary"]["targets"]}
    assert "| way | runtime | batch |" in r.stdout and "target " in r.stdout
    if len(runtimes) == 2:
        ratios = info["summary"]["ratios"]
        assert all(ratios[f"host_vs_wasmtime_events_per_s_{b}"] > 0 for b in (1, 10)), ratios
        assert "test host vs `wasmtime serve`" in r.stdout
    # Each round's ratios of the component to the other ways, and their
    # median (a CPU ratio is left out of a round whose 40 events took no
    # measurable CPU on one runtime).
    by_round = info["summary"]["ratios_by_round"]
    compared = [k for k in by_round if "_vs_baseline_" in k or "_vs_ceiling_" in k]
    assert len(compared) == 2 * 2 * len(runtimes), by_round
    for key in compared:
        values = by_round[key]
        assert len(values) == 2 and info["summary"]["ratios"][key] == pytest.approx(sum(values) / 2, abs=0.01), key
    assert f"{runtimes[0]}_vs_baseline_1 by round:" in r.stdout


def test_bench_tenants_mode_counts_one_wrap_per_tenant_of_a_delivery(tmp_path):
    """Key scopes: with T tenants per delivery each delivery costs exactly
    T wraps, whatever its events (an exact count, not a timing)."""
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, str(ROOT / "tests/bench/bench.py"), "--smoke", "--tenants", "1,3",
                        "--events", "24", "--batches", "6", "--concurrency", "2", "--out", str(out),
                        "--runtimes", "host" if os.environ.get("CMK_TEST_HOST") else "wasmtime"],
                       capture_output=True, text=True, timeout=300, env=dict(os.environ), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (csv_path,) = out.glob("bench-*-smoke.csv")
    rows = list(csv.DictReader(csv_path.open()))
    assert [(row["mode"], row["tenants"]) for row in rows] == [("component", "1"), ("component", "3")]
    for row in rows:
        assert row["errors"] == "0" and float(row["wraps_per_delivery"]) == float(row["tenants"])
        assert int(row["cosmos_requests"]) == int(row["requests"]) == 4  # one batch per delivery
    assert "wraps per delivery = tenants per delivery" in r.stdout


@pytest.mark.skipif(not os.environ.get("CMK_TEST_HOST"), reason="the floor is served on the test host")
def test_bench_floor_mode_measures_the_floor_in_the_same_rounds(tmp_path):
    """`--floor` and `--bound`: the floor component and its bound build
    served beside the component and measured as further runtimes in each
    round; their exchanges are a delivery's (one wrap, one Cosmos DB
    request, a document per event), their ratios are printed and they are
    held to no target."""
    out = tmp_path / "bench"
    r = subprocess.run([sys.executable, str(ROOT / "tests/bench/bench.py"), "--smoke", "--floor", "--bound",
                        "--runtimes", "host", "--events", "40", "--batches", "1,10", "--concurrency", "4", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    rows = list(csv.DictReader(next(out.glob("bench-*-smoke.csv")).open()))
    assert {(row["mode"], row["runtime"], row["batch"]) for row in rows} == {
        (m, rt, b) for m, rt in [("component", "host"), ("component", "floor"), ("component", "bound"),
                                 ("baseline", ""), ("ceiling", "")]
        for b in ("1", "10")}
    for runtime in ("floor", "bound"):
        yardstick = {row["batch"]: row for row in rows if row["runtime"] == runtime}
        for batch, per_event in (("1", 1), ("10", 0.1)):
            assert yardstick[batch]["errors"] == "0"
            assert float(yardstick[batch]["hsm_calls_per_event"]) == per_event
            assert float(yardstick[batch]["cosmos_requests_per_event"]) == per_event
    info = json.loads(next(out.glob("bench-*-smoke.json")).read_text())
    ratios = info["summary"]["ratios"]
    assert all(ratios[k] > 0 for b in (1, 10) for k in (
        f"floor_vs_ceiling_{b}", f"host_vs_floor_events_per_s_{b}", f"bound_vs_ceiling_{b}",
        f"host_vs_bound_events_per_s_{b}"))
    assert not [t for t in info["summary"]["targets"] if "floor" in t["target"] or "bound" in t["target"]]
    assert info["healthz"]["floor"]["p50_ms"] > 0 and info["healthz"]["bound"]["p50_ms"] > 0
    assert info["bound_wasm"]["path"].endswith("cmk_bench_bound.wasm")


@pytest.mark.skipif(not os.environ.get("CMK_TEST_HOST"), reason="the floor is served on the test host")
def test_bench_floor_wasm_serves_another_build_in_the_floors_place(tmp_path):
    """`--floor-wasm`: an A/B of two builds in the same rounds: the build
    given is the one served and measured as 'floor', and the JSON names it."""
    out = tmp_path / "bench"
    other = Path(os.environ["CMK_APP_WASM"])
    r = subprocess.run([sys.executable, str(ROOT / "tests/bench/bench.py"), "--smoke", "--floor", "--runtimes", "host",
                        "--floor-wasm", str(other), "--modes", "component", "--events", "20", "--batches", "1",
                        "--concurrency", "2", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ), stdin=subprocess.DEVNULL)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    info = json.loads(next(out.glob("bench-*-smoke.json")).read_text())
    assert info["floor_wasm"]["path"] == str(other.resolve())
    assert info["floor_wasm"]["bytes"] == other.stat().st_size
    assert info["floor_wasm"]["sha256"] == hashlib.sha256(other.read_bytes()).hexdigest()
    rows = {row["runtime"]: row for row in csv.DictReader(next(out.glob("bench-*-smoke.csv")).open())}
    assert set(rows) == {"host", "floor"}
    assert rows["floor"]["errors"] == "0"
    assert float(rows["floor"]["hsm_wraps"]) == float(rows["host"]["hsm_wraps"]) == 20


def test_pool_checks_the_targets_on_every_round_of_several_runs():
    """`--pool`: the pooled statuses docs/benchmarks.md gives for the S and
    V runs, from their written JSON (each wrap apart, no round left out)."""
    sys.path.insert(0, str(ROOT / "tests/bench"))
    import bench

    def runs(*names):
        return [json.loads((ROOT / f"docs/bench/bench-2026-12-07-{n}.json").read_text()) for n in names]

    def status(pooled, key):
        medians, median, over, n = pooled[key]
        return round(median, 3), over, n

    s = bench.pool(runs("s1", "s3", "s4", "s5", "u2", "s2", "s6"))
    assert status(s["remote"], "host_vs_ceiling_1") == (0.589, 7, 15)
    assert status(s["remote"], "host_vs_baseline_1") == (1.625, 10, 15)
    assert status(s["local"], "host_vs_ceiling_10") == (0.653, 0, 6)
    v = bench.pool(runs("v1", "v2", "v3", "v4", "v5", "v6", "v7"))
    assert v["remote"]["host_vs_ceiling_1"][0] == [0.487, 0.465, 0.45, 0.513, 0.504]
    assert status(v["remote"], "host_vs_ceiling_1") == (0.477, 0, 15)
    assert status(v["local"], "host_vs_ceiling_10") == (0.773, 3, 6)
    ms = v["remote"]["runtime_ms_b1"]["floor"]
    assert len(ms) == 15 and round(min(ms), 2) == 0.53 and round(max(ms), 2) == 0.93
    lines = bench.pool_lines(runs("v6", "v7"))
    assert lines[0] == "local wrap, 2 runs:" and not any(line.startswith("remote") for line in lines)


def test_machine_cpu_counts_every_core_busy_or_idle():
    """The bench's whole-machine figures: over half a second in which this
    process spins for a quarter, busy and idle add up to the machine's
    cores (a 10 ms tick per core either way), and the spin is in busy."""
    sys.path.insert(0, str(ROOT / "tests/bench"))
    import bench

    busy0, idle0 = bench.machine_cpu()
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < 0.25:
        pass
    time.sleep(0.25)
    busy1, idle1 = bench.machine_cpu()
    wall = time.perf_counter() - t0
    cores = os.cpu_count()
    busy, idle = busy1 - busy0, idle1 - idle0
    assert busy >= 0.2 and idle >= 0, (busy, idle)
    assert abs(busy + idle - cores * wall) <= 0.03 * cores + 0.05 * cores * wall, (busy, idle, wall)
