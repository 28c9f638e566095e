"""The reliability suite's moving parts: the events it invents, the senders
that behave as Event Grid and the queue producer do, the fault proxies in
front of each peer, and the checks run afterwards (documents, decryption,
poison queue, statuses, leak scans)."""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import re
import threading
import time
import urllib.request
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from harness.stack import Process, env, free_port, start, wait_for_port, ROOT
from integration.eventgrid import document_id

SOAK = os.environ.get("CMK_SOAK") == "1"

# Protected fields, as configured for the app under test (event type -> pointers).
PROTECTED = {"Contoso.Records.Updated": ["/data/patient", "/data/diagnosis", "/subject"], "*": ["/data"]}

# What docs/ingest.md allows, status -> error codes (None: success).
DOCUMENTED = {
    200: None,
    400: {"InvalidEvent", "InvalidMessage"},
    401: {"Unauthenticated", "InvalidToken"},
    403: {"Forbidden"},
    404: {"NotFound"},
    405: {"MethodNotAllowed"},
    409: {"DocumentConflict"},
    413: {"BodyTooLarge", "TooManyEvents", "DocumentTooLarge"},
    415: {"UnsupportedMediaType"},
    502: {"StoreAuthFailed", "StoreNotFound", "StoreRejected", "KeyRejected"},
    503: {"StoreUnavailable", "ConfigurationError", "KeyDisabled", "KeyExpired", "KeyNotYetValid", "KeyNotFound",
          "KeyAccessDenied", "KeyOperationForbidden", "IdentityFailed", "KeyServiceUnavailable",
          "IdentityUnavailable", "SigningKeysUnavailable"},
}
# Event Grid: these are final (dead-lettered), everything else is retried.
EVENT_GRID_FINAL = {400, 401, 403, 413}


def documented(status, code) -> bool:
    return status in DOCUMENTED and (DOCUMENTED[status] is None or code in DOCUMENTED[status])


class Marks:
    """Unique protected values (`phi-<run>-<hex>`), so a scan can find any
    copy of any of them with one regular expression."""

    def __init__(self, run: str, rng: random.Random):
        self.run, self.rng = run, rng
        self.pattern = re.compile(rf"phi-{run}-[0-9a-f]{{12}}")

    def __call__(self) -> str:
        return f"phi-{self.run}-{self.rng.getrandbits(48):012x}"


@dataclass
class Expected:
    """One good event: where its document goes and what it must hold."""
    source: str
    event_id: str
    etype: str
    subject: str
    data: dict
    path: str  # "eventgrid" or "queue"

    @property
    def doc_id(self) -> str:
        return document_id(self.source, self.event_id)

    def pointers(self) -> list[str]:
        """The protected pointers present in this event, as stored (under /event)."""
        configured = PROTECTED.get(self.etype, PROTECTED["*"])
        present = []
        for p in configured:
            if p == "/subject":
                present.append(p)
            elif p == "/data":
                present.append(p)
            elif p.removeprefix("/data/") in self.data:
                present.append(p)
        return ["/event" + p for p in present]


class Generator:
    def __init__(self, run: str, seed: int, topics: int = 8):
        self.rng = random.Random(seed)
        self.mark = Marks(run, self.rng)
        self.run = run
        self.topics = [f"/topics/rel-{run}-{i}" for i in range(topics)]
        self.sources = [f"/ce/rel-{run}-{i}" for i in range(topics)]
        self.n = 0

    def eventgrid(self, path: str = "eventgrid") -> tuple[dict, Expected]:
        self.n += 1
        topic = self.rng.choice(self.topics)
        eid = str(uuid.UUID(int=self.rng.getrandbits(128)))
        if self.rng.random() < 0.75:
            etype = "Contoso.Records.Updated"
            data = {"patient": self.mark(), "ward": self.n}
            if self.rng.random() < 0.8:  # sometimes a protected field is absent
                data["diagnosis"] = {"code": self.mark(), "note": self.mark()}
        else:
            etype = "Contoso.Lab.Result"
            data = {"result": self.mark(), "units": self.mark(), "seq": self.n}
        # The subject is protected only for Contoso.Records.Updated: only there may it hold a protected value.
        subject = f"patients/{self.mark()}" if etype == "Contoso.Records.Updated" else f"labs/{self.n}"
        event = {"id": eid, "topic": topic, "subject": subject, "eventType": etype,
                 "eventTime": "2026-12-01T10:00:00.000Z", "data": data, "dataVersion": "1.0", "metadataVersion": "1"}
        return event, Expected(topic, eid, etype, subject, data, path)

    def cloudevent(self) -> tuple[dict, Expected]:
        self.n += 1
        source = self.rng.choice(self.sources)
        eid = str(uuid.UUID(int=self.rng.getrandbits(128)))
        data = {"mrn": self.mark(), "note": self.mark(), "seq": self.n}
        subject = f"records/{self.n}"
        event = {"specversion": "1.0", "type": "com.example.record", "source": source, "id": eid,
                 "time": "2026-12-01T10:00:00Z", "subject": subject, "datacontenttype": "application/json",
                 "data": data}
        return event, Expected(source, eid, "com.example.record", subject, data, "queue")

    def bad_message(self) -> str:
        """A permanently bad queue message (no protected value in it)."""
        tag = f"bad-{self.run}-{self.rng.getrandbits(32):08x}"
        kind = self.rng.randrange(5)
        if kind == 0:
            return f"this is not an event {tag}"
        if kind == 1:
            return json.dumps({"hello": tag})
        if kind == 2:
            return base64.b64encode(json.dumps({"specversion": "1.0", "id": tag}).encode()).decode()
        if kind == 3:
            return json.dumps({"id": tag, "topic": "/t", "subject": "s", "eventType": "T", "data": {}})  # no eventTime
        return json.dumps([{"specversion": "1.0", "id": tag, "source": "/s", "type": "t", "time": "yesterday"}])


# -- fault proxies -----------------------------------------------------------

@dataclass
class FaultProxy:
    name: str
    url: str  # plain HTTP: the controls (and the app under `wasmtime serve`)
    process: Process
    app_url: str = ""  # what the app is given: HTTPS when it runs on the test host

    def control(self, what: str, body=None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.url}/_faultproxy/{what}", data=data,
                                     method="POST" if data is not None else "GET")
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.load(r)


def start_proxy(stack, name: str, upstream: str, flavor: str, tls: bool = False, ca=None) -> FaultProxy:
    """A fault proxy in front of `upstream` (a stand-in's plain origin). With
    `tls` it also serves HTTPS with a certificate from `ca` (default the
    session's CA; another CA makes a server the app must refuse) and reaches
    the stand-in on its HTTPS origin, so the stand-in names the HTTPS origin
    in what it answers (key ids), as if the app had reached it directly."""
    port = free_port()
    argv = [env("CMK_PYTHON"), str(ROOT / "tests/harness/faultproxy.py"), "--listen", f"127.0.0.1:{port}",
            "--flavor", flavor]
    app_url = f"http://127.0.0.1:{port}"
    if tls:
        tls_port = free_port()
        cert, key = (ca or stack.ca).issue(f"faultproxy-{name}")
        argv += ["--upstream", stack.over_tls({"upstream": upstream})["upstream"],
                 "--upstream-ca", str(stack.ca.ca_file), "--listen-tls", f"127.0.0.1:{tls_port}",
                 "--tls-cert", str(cert), "--tls-key", str(key)]
        app_url = f"https://127.0.0.1:{tls_port}"
    else:
        argv += ["--upstream", upstream]
    proc = start(f"faultproxy-{name}", argv, stack.workdir)
    stack.processes.append(proc)
    wait_for_port(port, proc.proc, f"fault proxy for {name}")
    if tls:
        wait_for_port(tls_port, proc.proc, f"fault proxy for {name} (TLS)")
    return FaultProxy(name, f"http://127.0.0.1:{port}", proc, app_url)


# -- senders -----------------------------------------------------------------

@dataclass
class Answer:
    status: int | str  # a status, or the name of a transport failure
    code: str | None
    retry_after: str | None
    at: float


@dataclass
class Delivery:
    events: list[dict]
    good: bool  # False: deliberately malformed, must be refused with 400 and never retried
    answers: list[Answer] = field(default_factory=list)
    outcome: str = "pending"  # delivered, dead-lettered, gave-up


def post(host: str, path: str, body: bytes, headers: dict, timeout: float) -> Answer:
    conn = http.client.HTTPConnection(host, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers=headers)
        r = conn.getresponse()
        raw = r.read()
        code = None
        if r.status >= 300:
            try:
                code = json.loads(raw)["error"]["code"]
            except (ValueError, KeyError, TypeError):
                code = "<not a JSON error>"
        return Answer(r.status, code, r.getheader("Retry-After"), time.monotonic())
    except (OSError, http.client.HTTPException) as e:
        return Answer(type(e).__name__, None, None, time.monotonic())
    finally:
        conn.close()


class EventGridSender:
    """Delivers as Event Grid does: 30 s timeout per attempt, final on 400,
    401, 403 and 413 (dead-letter), every other answer and every timeout or
    transport failure retried with back-off. Event Grid's schedule (10 s, 30 s,
    1 min, … up to 24 h) is compressed here: `Retry-After` or the back-off,
    capped at `max_pause` seconds, for at most `deadline` seconds."""

    def __init__(self, app_url: str, ingest_key: str, rng_seed: int, max_pause: float = 2.0,
                 deadline: float = 240.0):
        self.host = app_url.removeprefix("http://")
        self.key = ingest_key
        self.rng = random.Random(rng_seed)
        self.lock = threading.Lock()
        self.max_pause, self.deadline = max_pause, deadline

    def deliver(self, d: Delivery) -> Delivery:
        body = json.dumps(d.events).encode()
        headers = {"content-type": "application/json", "x-cmk-ingest-key": self.key, "aeg-event-type": "Notification"}
        start = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            a = post(self.host, "/events", body, headers, timeout=30)
            d.answers.append(a)
            if a.status == 200:
                d.outcome = "delivered"
                return d
            if a.status in EVENT_GRID_FINAL:
                d.outcome = "dead-lettered"
                return d
            if time.monotonic() - start > self.deadline:
                d.outcome = "gave-up"
                return d
            with self.lock:
                jitter = self.rng.random()
            backoff = min(0.2 * 2 ** min(attempt, 6), self.max_pause)
            try:
                pause = float(a.retry_after) if a.retry_after else backoff
            except ValueError:
                pause = backoff
            time.sleep(min(pause, self.max_pause) * (0.5 + jitter / 2))


def run_deliveries(sender: EventGridSender, deliveries: list[Delivery], concurrency: int) -> list[Delivery]:
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        return list(pool.map(sender.deliver, deliveries))


def batch_sizes(rng: random.Random, total: int) -> list[int]:
    sizes, left = [], total
    while left > 0:
        n = min(left, rng.choice([1, 1, 2, 5, 10, 25, 50, 100]))
        sizes.append(n)
        left -= n
    return sizes


# -- reading back ------------------------------------------------------------

def log_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if "{" in line:
            try:
                out.append(json.loads(line[line.index("{"):]))
            except ValueError:
                pass
    return out


def all_documents(container) -> list[dict]:
    return list(container.query_items("SELECT * FROM c", enable_cross_partition_query=True, max_item_count=1000))


def scan(haystacks: dict[str, str], secrets: dict[str, list[str]], pattern: re.Pattern, jwt: re.Pattern) -> dict:
    """Hits per haystack: any protected value (by its pattern), any secret,
    anything JWT-shaped."""
    hits: dict[str, list[str]] = {}
    for where, text in haystacks.items():
        found = [f"protected value {m}" for m in set(pattern.findall(text))]
        for what, values in secrets.items():
            found += [what for v in values if v and v in text]
        if jwt.search(text):
            found.append("a JWT")
        if found:
            hits[where] = sorted(set(found))
    return hits


def rss_kb(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of a process, in KiB."""
    rss = hwm = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
            elif line.startswith("VmHWM:"):
                hwm = int(line.split()[1])
    return rss, hwm


class RssSampler:
    """Samples a process's resident set every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.05):
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.stop_event = threading.Event()
        self.thread = threading.Thread(target=self.loop, daemon=True)

    def loop(self):
        while not self.stop_event.is_set():
            try:
                self.peak = max(self.peak, rss_kb(self.pid)[0])
            except OSError:
                return
            time.sleep(self.interval)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_event.set()
        self.thread.join()


def histogram(answers) -> dict:
    return dict(sorted(Counter(f"{a.status} {a.code}" if a.code else str(a.status) for a in answers).items()))
