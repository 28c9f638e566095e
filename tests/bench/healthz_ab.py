"""Runtime CPU per `/healthz` request for several builds of the component,
side by side on the test host: one host per `.wasm`, rounds interleaved,
each round 3,000 sequential requests over one keep-alive connection, CPU
from `/proc` (utime + stime of the host process). `/healthz` does no I/O,
so the figure is the per-request cost of a fresh instance: its creation,
the guest's routing and answer, and its teardown (the pooled slot's reset,
which grows with the instance's linear memory).

    . scripts/bootstrap
    SPIN_WASMTIME_POOLING=1 "$CMK_PYTHON" tests/bench/healthz_ab.py A.wasm B.wasm [--rounds 7]
"""

import argparse
import http.client
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
REQUESTS = 3000


def cpu_times(pid: int) -> tuple[float, float]:
    """A process's user and system CPU seconds so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def cpu_seconds(pid: int) -> float:
    return sum(cpu_times(pid))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("wasm", nargs="+", type=Path)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    # /healthz reads no setting, but the manifest's required ones must resolve.
    env = {**os.environ, "SPIN_VARIABLE_COSMOS_CONTAINER": "c", "SPIN_VARIABLE_COSMOS_DATABASE": "d",
           "SPIN_VARIABLE_COSMOS_ENDPOINT": "https://127.0.0.1:1"}
    hosts = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, wasm in enumerate(args.wasm):
            port = 18100 + i
            p = subprocess.Popen([os.environ["CMK_TEST_HOST"], "--manifest", str(ROOT / "spin.toml"),
                                  "--listen", f"127.0.0.1:{port}", "--wasm", str(wasm),
                                  "--kv-db", f"{tmp}/kv{i}.db", "--cache-dir", f"{tmp}/code"],
                                 env=env, stderr=subprocess.DEVNULL)
            hosts.append((wasm, p, port))
        try:
            time.sleep(5)
            results = {wasm: [] for wasm in args.wasm}
            print("round," + ",".join(w.name for w in args.wasm))
            for r in range(args.rounds):
                for wasm, p, port in hosts:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    for _ in range(50):
                        conn.request("GET", "/healthz")
                        conn.getresponse().read()
                    before = cpu_seconds(p.pid)
                    for _ in range(REQUESTS):
                        conn.request("GET", "/healthz")
                        resp = conn.getresponse()
                        resp.read()
                        assert resp.status == 200
                    results[wasm].append((cpu_seconds(p.pid) - before) / REQUESTS * 1e6)
                    conn.close()
                print(f"{r}," + ",".join(f"{results[w][-1]:.1f}" for w in args.wasm), flush=True)
            for w in args.wasm:
                print(f"# {w.name}: median {statistics.median(results[w]):.1f} us, best {min(results[w]):.1f} us",
                      file=sys.stderr)
        finally:
            for _, p, _ in hosts:
                p.kill()


if __name__ == "__main__":
    main()
