"""The README's first command, as a user runs it: `scripts/local` sets up,
starts the local stack and serves the app; the `curl` it prints ingests an
event, the second reads the document back through the component, and the
printed Python SDK command reads it straight from the local Cosmos server.
Ctrl-C (SIGINT) stops everything."""

import json
import os
import re
import signal
import subprocess
import time

from harness.stack import ROOT, free_port


def commands_after(text: str, heading: str) -> str:
    """The first command printed under a heading, continuation lines joined."""
    block = text.split(heading, 1)[1].lstrip("\n")
    lines = []
    for line in block.splitlines():
        lines.append(line.strip())
        if not line.rstrip().endswith("\\"):
            break
    return " ".join(l.rstrip("\\").strip() for l in lines)


def test_scripts_local_serves_and_its_samples_work(tmp_path):
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    out = tmp_path / "local.out"
    with open(out, "w") as sink:
        proc = subprocess.Popen(["bash", str(ROOT / "scripts" / "local")], stdout=sink, stderr=subprocess.STDOUT,
                                env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while "Ctrl-C stops" not in out.read_text():
            assert proc.poll() is None, out.read_text()
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        text = out.read_text()
        assert f"serving at http://127.0.0.1:{port}" in text, text

        ingest = commands_after(text, "Ingest an Event Grid event (keys come from local/profile.env):")
        assert ingest.startswith("curl ")
        r = subprocess.run(["bash", "-c", ingest], capture_output=True, text=True, timeout=60)
        body = json.loads(r.stdout)
        assert body["accepted"] == 1 and len(body["documents"]) == 1, body
        doc_id = body["documents"][0]["id"]

        read = commands_after(text, "Read it back through the component (the id is the one the call above prints):")
        assert doc_id in read
        r = subprocess.run(["bash", "-c", read], capture_output=True, text=True, timeout=60)
        record = json.loads(r.stdout)
        assert record["id"] == doc_id and record["event"]["data"] == {"name": "Ada"}, record

        sdk = commands_after(text, "or with the official Python SDK, straight from the local Cosmos server:")
        r = subprocess.run(["bash", "-c", sdk], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        stored = json.loads(r.stdout)
        assert stored["id"] == doc_id and stored["event"]["data"] == {"name": "Ada"}, stored
        assert re.search(r"runtime: (spin|wasmtime)", text)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    # Everything it started is gone: the port is free again.
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
