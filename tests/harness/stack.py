"""The local stack: real local peers on free loopback ports, and the built
component served by a real Wasm runtime.

- Cosmos DB: npm `@vercel/cosmosdb-server` (HTTP), behind `sigcheck.py`, which
  recomputes every master-key signature with the official Python SDK and
  answers 401 as the service does (the server itself accepts any signature).
- Storage queues: npm `azurite` (checks Shared Key signatures), polled by
  the queue bridge (`CMK_BRIDGE`, built by scripts/bootstrap).
- TLS: a CA generated per session (tls.py) issues the stand-ins'
  certificates; the Entra ID and Managed HSM stand-ins and the signature
  check serve HTTPS next to plain HTTP (test controls stay on HTTP).
- The component (`default_runtime`): `spin up` when the Spin CLI is on
  PATH; otherwise the test host (tests/host, built by scripts/bootstrap),
  which runs the unmodified app.wasm as Spin does, trusting the session's
  CA, so the app reaches every stand-in over HTTPS. CMK_RUNTIME=wasmtime
  selects Wasmtime (`wasmtime serve`, the engine Spin embeds) running a copy
  of the app with the test-only Spin stub plugged in (variables from
  SPIN_VARIABLE_*, key-value in a directory), over plain HTTP. Variables
  are resolved from spin.toml's defaults, then local/profile.env, then the
  caller's overrides, as Spin would; the test host is given only the
  profile and the overrides and reads the defaults from spin.toml itself.

Paths to tools come from the CMK_* variables that scripts/bootstrap exports.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EMULATOR_KEY = None  # read from local/profile.env
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
QUEUE_NAME = "events"
TENANT = "cmk-tenant"
KEK_NAME = "app-kek"
# Principals known to the Entra stand-in; none of these are real secrets.
PRINCIPALS = {
    "tenant": TENANT,
    "apps": [
        {"client_id": "app-secret-client", "object_id": "oid-app-secret", "secret": "local-client-secret-0123"},
        {"client_id": "app-workload-client", "object_id": "oid-app-workload"},
        {"client_id": "other-client", "object_id": "oid-other", "secret": "other-client-secret-0123"},
        # Stands for Event Grid's service principal in Entra protected delivery.
        {"client_id": "eventgrid-sender", "object_id": "oid-eventgrid", "secret": "eventgrid-secret-0123"},
        # Its own principal, so the token-refresh test reads its own counters.
        {"client_id": "app-refresh-client", "object_id": "oid-app-refresh", "secret": "refresh-client-secret-0123"},
        # And one for the reliability suite, which shortens token lifetimes and revokes its access.
        {"client_id": "app-reliability-client", "object_id": "oid-app-reliability", "secret": "reliability-client-secret-0123"},
    ],
    "app_roles": {"api://cmk-ingest": {"eventgrid-sender": ["AzureEventGridSecureWebhookSubscriber"]}},
    "managed": [
        {"client_id": "system", "object_id": "oid-app-system-mi"},
        {"client_id": "app-user-mi", "object_id": "oid-app-user-mi"},
    ],
    "identity_header": "local-identity-header-0123",
}
APP_PRINCIPALS = ["oid-app-secret", "oid-app-workload", "oid-app-system-mi", "oid-app-user-mi"]
# The local account's Entra ID audience: what the signature check accepts in
# tokens (besides https://cosmos.azure.com), and the scope apps with
# cosmos_auth = entra ask for (cosmos_token_scope; the endpoint is a loopback
# address, from which no account name can be derived).
COSMOS_AUDIENCE = "https://cmk-local.documents.azure.com"
# Requests `wasmtime serve` runs at once (the rest wait for a slot).
MAX_CONCURRENT_REQUESTS = 100
ISSUERS = [f"https://login.microsoftonline.com/{TENANT}/v2.0", f"https://sts.windows.net/{TENANT}/"]


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        sys.exit(f"{name} is not set: run through scripts/test or scripts/local (they source scripts/bootstrap)")
    return value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Seconds any one HTTP call of the start-up may block (admin calls to the
# stand-ins, provisioning through the SDKs): a stop signal is only acted on
# between calls, so this bounds how long a stop can wait on one.
CALL_TIMEOUT = 5.0


def record(workdir: Path, name: str, value: int) -> None:
    """Appends `value` to workdir/`name` at once (one line each): `ports`
    gets every port before anything listens on it, `children` every child's
    pid (its process group) as soon as it runs. scripts/local reads
    `children` to SIGKILL the groups when the stack itself had to be
    killed; its test reads `ports`, so even a stack stopped half-way
    through its start is checked for ports left open."""
    with open(workdir / name, "a") as f:
        f.write(f"{value}\n")


class Interrupted(Exception):
    """A stop signal arrived (only under `python -m harness.stack`)."""


# The signal that asked the stack to stop, or 0. Written by the signal
# handler and only read elsewhere: the handler does nothing else (no locks, no
# I/O), so a second or overlapping SIGINT/SIGTERM can never block on state the
# interrupted code holds. Waits are woken through signal.set_wakeup_fd.
_stop_signal = 0


def _on_stop_signal(signum, _frame) -> None:
    global _stop_signal
    _stop_signal = _stop_signal or signum


# With CMK_PARENT_PID set (scripts/local sets its own pid), the stack also
# stops when that process is gone: a script killed before it could pass on
# a signal leaves nothing running.
_parent_pid = 0


def _orphaned() -> bool:
    return bool(_parent_pid) and os.getppid() != _parent_pid


def check_interrupted() -> None:
    """Raises Interrupted once a stop signal has arrived (or the parent is
    gone); start-up calls it between steps and while waiting, so a stack
    still starting stops too."""
    if _stop_signal:
        raise Interrupted(signal.Signals(_stop_signal).name)
    if _orphaned():
        raise Interrupted("parent exited")


def wait_for_port(port: int, proc: subprocess.Popen, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check_interrupted()
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout}s")


def read_profile(path: Path = ROOT / "local" / "profile.env") -> dict[str, str]:
    """SPIN_VARIABLE_* assignments of the checked-in local profile."""
    out = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            k, v = line.split("=", 1)
            out[k] = v
    return out


def spin_variables(overrides: dict[str, str], defaults: bool = True) -> dict[str, str]:
    """Resolves the app's variables like Spin: manifest defaults, then the local
    profile, then overrides (as SPIN_VARIABLE_* env). Fails, like `spin up`,
    when a required variable has no value. With `defaults=False`, only the
    profile and the overrides: what a runtime that reads spin.toml's defaults
    itself (the test host, `spin up`) is given."""
    manifest = tomllib.loads((ROOT / "spin.toml").read_text())
    values = {}
    for name, decl in manifest["variables"].items():
        if "default" in decl and defaults:
            values[f"SPIN_VARIABLE_{name.upper()}"] = decl["default"]
    values.update(read_profile())
    values.update(overrides)
    for name, decl in manifest["variables"].items():
        if decl.get("required") and f"SPIN_VARIABLE_{name.upper()}" not in values:
            raise RuntimeError(f"required variable `{name}` has no value")
    return values


def component_variables(app_values: dict[str, str]) -> dict[str, str]:
    """What Spin hands the component: each `[component.*.variables]` template
    resolved against the app variables, as SPIN_VARIABLE_<NAME> for the stub."""
    manifest = tomllib.loads((ROOT / "spin.toml").read_text())
    (component,) = manifest["component"].values()
    app = {k[len("SPIN_VARIABLE_"):].lower(): v for k, v in app_values.items()}

    def resolve(template: str) -> str:
        out, rest = "", template
        while "{{" in rest:
            before, _, after = rest.partition("{{")
            name, _, rest = after.partition("}}")
            out += before + app[name.strip()]
        return out + rest

    return {f"SPIN_VARIABLE_{k.upper()}": resolve(t) for k, t in component.get("variables", {}).items()}


def default_runtime() -> str:
    """The runtime the app is served with unless a caller names one:
    CMK_RUNTIME when set ("host", "wasmtime" or "spin"); else `spin up` when
    the Spin CLI is on PATH (and CMK_FORCE_WASMTIME is unset); else the
    test host when scripts/bootstrap built it (CMK_TEST_HOST); else
    `wasmtime serve` with the plugged Spin stub."""
    chosen = os.environ.get("CMK_RUNTIME")
    if chosen:
        return chosen
    if os.environ.get("CMK_FORCE_WASMTIME"):
        return "wasmtime"
    if shutil.which("spin"):
        return "spin"
    return "host" if os.environ.get("CMK_TEST_HOST") else "wasmtime"


def _killpg(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_all(processes: list[Process], grace: float) -> None:
    """SIGTERM to every process group at once, then SIGKILL to each group:
    to the whole group where the leader outlived `grace` seconds, to what is
    left of it where the leader exited, so that no descendant of a child
    survives its leader. Each group gets one SIGKILL. Every child runs in
    its own session, so its process group id is its pid; the kernel does not
    hand that number to a new process while the group has members, and a
    leader that exited is swept no later than `grace` after it was reaped."""
    for p in processes:
        if p.proc.poll() is None:
            _killpg(p.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in processes:
        try:
            p.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
    for p in processes:
        if p.proc.poll() is None:
            # SIGKILL to the whole group: the leader and what it started.
            _killpg(p.proc.pid, signal.SIGKILL)
            p.proc.wait()
        else:
            # The leader exited on SIGTERM; sweep whatever is left in its
            # group (an empty group answers ProcessLookupError, ignored).
            _killpg(p.proc.pid, signal.SIGKILL)


@dataclass
class Process:
    name: str
    proc: subprocess.Popen
    log: Path

    def stop(self, grace: float = 10.0) -> None:
        stop_all([self], grace)


def start(name: str, argv: list[str], workdir: Path, env_extra: dict[str, str] | None = None) -> Process:
    check_interrupted()
    log = workdir / f"{name}.log"
    child_env = dict(os.environ)
    child_env.update(env_extra or {})
    proc = subprocess.Popen(
        argv,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=child_env,
        cwd=workdir,
        start_new_session=True,
    )
    record(workdir, "children", proc.pid)
    return Process(name, proc, log)


@dataclass
class App:
    """One served instance of the component."""

    url: str
    variables: dict[str, str]
    process: Process
    runtime: str

    def logs(self) -> str:
        return self.process.log.read_text(errors="replace")


@dataclass
class Stack:
    workdir: Path
    processes: list[Process] = field(default_factory=list)
    cosmos_url: str = ""  # through the signature check
    cosmos_raw_url: str = ""  # the server itself, unauthenticated
    queue_url: str = ""
    sigcheck_url: str = ""
    entra_url: str = ""
    hsm_url: str = ""  # plain HTTP, for the component and test controls
    hsm_tls_url: str = ""  # HTTPS, for the official SDK
    hsm_cert: str = ""  # the CA file that verifies every stand-in's HTTPS
    entra_tls_url: str = ""
    sigcheck_tls_url: str = ""  # HTTPS in front of Cosmos DB (the signature check)
    ca: object = None  # tls.LocalCA

    @property
    def cosmos_key(self) -> str:
        return read_profile()["SPIN_VARIABLE_COSMOS_KEY"]

    @property
    def database(self) -> str:
        return read_profile()["SPIN_VARIABLE_COSMOS_DATABASE"]

    @property
    def container(self) -> str:
        return read_profile()["SPIN_VARIABLE_COSMOS_CONTAINER"]

    @property
    def queue_connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
            f"QueueEndpoint={self.queue_url}/{AZURITE_ACCOUNT};"
        )

    def port(self, port: int | None = None) -> int:
        """A port for a child to listen on (a free one unless given),
        recorded in workdir/ports before the child starts."""
        port = port or free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        record(self.workdir, "ports", port)
        return port

    # -- peers -------------------------------------------------------------

    def start_peers(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        from harness.tls import LocalCA

        self.ca = LocalCA(self.workdir / "tls")
        node_modules = Path(env("CMK_NODE_MODULES"))
        python = env("CMK_PYTHON")

        raw_port = self.port()
        cosmos = start(
            "cosmosdb-server",
            ["node", str(node_modules / "@vercel/cosmosdb-server/lib/cli.js"), "-p", str(raw_port), "--no-ssl"],
            self.workdir,
        )
        self.processes.append(cosmos)
        wait_for_port(raw_port, cosmos.proc, "cosmosdb-server")
        self.cosmos_raw_url = f"http://127.0.0.1:{raw_port}"

        self.start_key_services()
        sig_port, sig_tls_port = self.port(), self.port()
        sig_cert, sig_key = self.ca.issue("sigcheck")
        aad = ["--aad-jwks", f"{self.entra_url}/{TENANT}/discovery/v2.0/keys", "--aad-audience", COSMOS_AUDIENCE]
        for issuer in ISSUERS:
            aad += ["--aad-issuer", issuer]
        sig = start(
            "sigcheck",
            [python, str(ROOT / "tests/harness/sigcheck.py"), "--listen", f"127.0.0.1:{sig_port}",
             "--upstream", self.cosmos_raw_url, "--key", self.cosmos_key, *aad,
             "--listen-tls", f"127.0.0.1:{sig_tls_port}", "--tls-cert", str(sig_cert), "--tls-key", str(sig_key)],
            self.workdir,
        )
        self.processes.append(sig)
        wait_for_port(sig_port, sig.proc, "sigcheck")
        wait_for_port(sig_tls_port, sig.proc, "sigcheck (TLS)")
        self.cosmos_url = self.sigcheck_url = f"http://127.0.0.1:{sig_port}"
        self.sigcheck_tls_url = f"https://127.0.0.1:{sig_tls_port}"

        queue_port = self.port()
        azurite = start(
            "azurite-queue",
            [str(node_modules / ".bin/azurite-queue"), "--queueHost", "127.0.0.1", "--queuePort", str(queue_port),
             "--inMemoryPersistence", "--silent", "--disableTelemetry",
             # azure-storage-queue 12.18 speaks a newer API version than azurite 3.35 knows.
             "--skipApiVersionCheck"],
            self.workdir,
        )
        self.processes.append(azurite)
        wait_for_port(queue_port, azurite.proc, "azurite-queue")
        self.queue_url = f"http://127.0.0.1:{queue_port}"

        self.provision()

    def start_key_services(self) -> None:
        """The Entra ID and Managed HSM stand-ins, with the app's key-encryption
        key (RSA-HSM 2048, wrapKey/unwrapKey only) granted to the app's principals."""
        python = env("CMK_PYTHON")
        principals = self.workdir / "principals.json"
        principals.write_text(json.dumps(PRINCIPALS))
        entra_port, entra_tls_port = self.port(), self.port()
        entra_cert, entra_key = self.ca.issue("entra")
        entra = start("entra", [python, str(ROOT / "tests/harness/entra.py"), "--listen",
                                f"127.0.0.1:{entra_port}", "--principals", str(principals), "--state-dir", str(self.workdir),
                                "--listen-tls", f"127.0.0.1:{entra_tls_port}",
                                "--tls-cert", str(entra_cert), "--tls-key", str(entra_key)], self.workdir)
        self.processes.append(entra)
        wait_for_port(entra_port, entra.proc, "entra stand-in")
        wait_for_port(entra_tls_port, entra.proc, "entra stand-in (TLS)")
        self.entra_url = f"http://127.0.0.1:{entra_port}"
        self.entra_tls_url = f"https://127.0.0.1:{entra_tls_port}"
        hsm_cert, hsm_key = self.ca.issue("hsm")
        hsm_port, tls_port = self.port(), self.port()
        hsm = start("hsm", [python, str(ROOT / "tests/harness/hsm.py"), "--listen", f"127.0.0.1:{hsm_port}",
                            "--listen-tls", f"127.0.0.1:{tls_port}", "--state-dir", str(self.workdir),
                            "--tenant", TENANT, "--jwks", f"{self.entra_url}/{TENANT}/discovery/v2.0/keys",
                            "--issuer", f"https://login.microsoftonline.com/{TENANT}/v2.0",
                            "--tls-cert", str(hsm_cert), "--tls-key", str(hsm_key)], self.workdir)
        self.processes.append(hsm)
        wait_for_port(hsm_port, hsm.proc, "hsm stand-in")
        wait_for_port(tls_port, hsm.proc, "hsm stand-in (TLS)")
        self.hsm_url, self.hsm_tls_url = f"http://127.0.0.1:{hsm_port}", f"https://127.0.0.1:{tls_port}"
        self.hsm_cert = str(self.ca.ca_file)
        self.hsm_admin("POST", "keys", {"name": KEK_NAME, "size": 2048, "ops": ["wrapKey", "unwrapKey"]})
        for oid in APP_PRINCIPALS:
            self.hsm_admin("POST", "grants", {"key": KEK_NAME, "object_id": oid, "ops": ["get", "wrapKey", "unwrapKey"]})

    def hsm_admin(self, method: str, path: str, body=None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.hsm_url}/_admin/{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=CALL_TIMEOUT) as r:
            return json.load(r)

    def wait_for_hsm_faults_taken(self, timeout: float = 30.0) -> None:
        """Returns once every queued HSM fault has been taken: a test that
        holds a call with a fault acts in the window the fault opens, not
        after a guessed sleep. A fault still queued at the deadline is
        dropped (a later test's request would take it) and the test fails."""
        deadline = time.monotonic() + timeout
        while self.hsm_admin("GET", "stats")["pending_faults"]:
            if time.monotonic() > deadline:
                self.hsm_admin("POST", "reset")
                raise AssertionError(f"a queued HSM fault was not taken within {timeout}s")
            time.sleep(0.02)

    def entra_admin(self, method: str, path: str, body=None) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.entra_url}/_entra/{path}", data=data, method=method)
        with urllib.request.urlopen(req, timeout=CALL_TIMEOUT) as r:
            return json.load(r)

    def stage_two(self, identity: str = "client-secret", **extra: str) -> dict[str, str]:
        """Spin variables for an app that seals with the stand-in HSM's key,
        getting tokens by `identity`."""
        v = {
            "SPIN_VARIABLE_HSM_ENDPOINT": self.hsm_url,
            "SPIN_VARIABLE_HSM_KEY_NAME": KEK_NAME,
            "SPIN_VARIABLE_CMK_STAGE": "2",
            **self.identity_variables(identity),
        }
        v.update({f"SPIN_VARIABLE_{k.upper()}": val for k, val in extra.items()})
        return v

    def entra_cosmos(self, identity: str = "client-secret", **extra: str) -> dict[str, str]:
        """Spin variables for an app that reaches Cosmos DB with Entra ID
        tokens (no account key) obtained by `identity`."""
        v = {
            "SPIN_VARIABLE_COSMOS_AUTH": "entra",
            "SPIN_VARIABLE_COSMOS_KEY": "",
            "SPIN_VARIABLE_COSMOS_TOKEN_SCOPE": f"{COSMOS_AUDIENCE}/.default",
            **self.identity_variables(identity),
        }
        v.update({f"SPIN_VARIABLE_{k.upper()}": val for k, val in extra.items()})
        return v

    def identity_variables(self, identity: str) -> dict[str, str]:
        """The token source `identity`, pointed at the Entra stand-in."""
        v = {
            "SPIN_VARIABLE_AZURE_AUTHORITY_HOST": self.entra_url,
            "SPIN_VARIABLE_AZURE_TENANT_ID": TENANT,
            "SPIN_VARIABLE_MANAGED_IDENTITY_ORIGIN": self.entra_url,
        }
        if identity == "client-secret":
            v.update(SPIN_VARIABLE_IDENTITY="client-secret", SPIN_VARIABLE_AZURE_CLIENT_ID="app-secret-client",
                     SPIN_VARIABLE_AZURE_CLIENT_SECRET="local-client-secret-0123")
        elif identity == "workload-identity":
            token = self.entra_admin("POST", "federated-token", {"client_id": "app-workload-client"})["token"]
            v.update(SPIN_VARIABLE_IDENTITY="workload-identity", SPIN_VARIABLE_AZURE_CLIENT_ID="app-workload-client",
                     SPIN_VARIABLE_AZURE_FEDERATED_TOKEN=token)
        elif identity == "imds":
            v.update(SPIN_VARIABLE_IDENTITY="managed-identity",
                     SPIN_VARIABLE_MANAGED_IDENTITY_PATH="/metadata/identity/oauth2/token")
        elif identity == "app-service":
            v.update(SPIN_VARIABLE_IDENTITY="managed-identity", SPIN_VARIABLE_AZURE_CLIENT_ID="app-user-mi",
                     SPIN_VARIABLE_MANAGED_IDENTITY_PATH="/msi/token",
                     SPIN_VARIABLE_IDENTITY_HEADER=PRINCIPALS["identity_header"])
        return v

    def cosmos_client(self, key: str | None = None):
        from azure.cosmos import CosmosClient

        return CosmosClient(self.cosmos_url, credential=key or self.cosmos_key, enable_endpoint_discovery=False)

    def container_client(self):
        return self.cosmos_client().get_database_client(self.database).get_container_client(self.container)

    def provision(self) -> None:
        """What infra/ provisions in Azure: the database and container (partition
        key /pk), the queue and its poison queue. Done with the official SDKs,
        through the signature check."""
        from azure.cosmos import PartitionKey
        from azure.storage.queue import QueueServiceClient

        # Each call bounded (CALL_TIMEOUT per attempt, a few attempts), so a
        # stop signal during provisioning is acted on soon.
        from azure.cosmos import CosmosClient

        cosmos = CosmosClient(self.cosmos_url, credential=self.cosmos_key, enable_endpoint_discovery=False,
                              connection_timeout=CALL_TIMEOUT, read_timeout=CALL_TIMEOUT, timeout=2 * CALL_TIMEOUT)
        db = cosmos.create_database_if_not_exists(self.database)
        db.create_container_if_not_exists(self.container, partition_key=PartitionKey(path="/pk"))
        qs = QueueServiceClient.from_connection_string(self.queue_connection_string, connection_timeout=CALL_TIMEOUT,
                                                       read_timeout=CALL_TIMEOUT, retry_total=1)
        for name in (QUEUE_NAME, f"{QUEUE_NAME}-poison"):
            try:
                qs.create_queue(name)
            except Exception as e:  # already exists
                if "QueueAlreadyExists" not in str(e):
                    raise

    # -- the queue bridge ---------------------------------------------------

    def queue_client(self, name: str = QUEUE_NAME, base64_policy: bool = False, create: bool = False):
        """The official SDK's QueueClient; with `base64_policy` it encodes text
        as the Storage SDKs' base64 policy (what Azure Functions expects)."""
        from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy

        extra = {"message_encode_policy": TextBase64EncodePolicy(),
                 "message_decode_policy": TextBase64DecodePolicy()} if base64_policy else {}
        client = QueueClient.from_connection_string(self.queue_connection_string, name, **extra)
        if create:
            client.create_queue()
        return client

    def bridge_env(self, target: str, queue: str = QUEUE_NAME, **settings: str) -> dict[str, str]:
        """Environment for the bridge: the azurite queue, Shared Key with the
        emulator's key, the app's ingest key; `settings` override BRIDGE_*
        (e.g. MAX_DEQUEUE_COUNT="3") or set AZURE_* variables."""
        env_vars = {
            "BRIDGE_QUEUE_URL": f"{self.queue_url}/{AZURITE_ACCOUNT}/{queue}",
            "BRIDGE_TARGET_URL": target,
            "BRIDGE_INGEST_KEY": read_profile()["SPIN_VARIABLE_INGEST_KEYS"].split(",")[0],
            "BRIDGE_AUTH": "shared-key",
            "BRIDGE_ACCOUNT_KEY": AZURITE_KEY,
            "BRIDGE_POLL_INTERVAL_MS": "100",
        }
        for k, v in settings.items():
            env_vars[k if k.startswith(("AZURE_", "IDENTITY_")) else f"BRIDGE_{k}"] = v
        return env_vars

    def run_bridge_once(self, env_vars: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
        """`cmk-ingest-bridge --once`: drains the queue and exits."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "AZURE_", "IDENTITY_"))}
        return subprocess.run([env("CMK_BRIDGE"), "--once"], env={**clean, **env_vars}, capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)

    def start_bridge(self, name: str, env_vars: dict[str, str]) -> Process:
        """The bridge as a long-running process (stopped with the stack)."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("BRIDGE_", "AZURE_", "IDENTITY_"))}
        log = self.workdir / f"{name}.log"
        proc = subprocess.Popen([env("CMK_BRIDGE")], stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, env={**clean, **env_vars}, cwd=self.workdir,
                                start_new_session=True)
        record(self.workdir, "children", proc.pid)
        p = Process(name, proc, log)
        self.processes.append(p)
        return p

    def sigcheck_stats(self) -> dict:
        with urllib.request.urlopen(f"{self.sigcheck_url}/_sigcheck/stats", timeout=CALL_TIMEOUT) as r:
            return json.load(r)

    # -- the component -----------------------------------------------------

    def over_tls(self, variables: dict[str, str]) -> dict[str, str]:
        """`variables` with every stand-in origin the app reaches (Cosmos DB
        through the signature check, Entra ID, Managed HSM) moved from its
        plain HTTP listener to its HTTPS one."""
        origins = {self.sigcheck_url: self.sigcheck_tls_url, self.entra_url: self.entra_tls_url,
                   self.hsm_url: self.hsm_tls_url}
        out = {}
        for k, v in variables.items():
            for plain, tls in origins.items():
                if plain and tls and (v == plain or v.startswith(plain + "/")):
                    v = tls + v[len(plain):]
            out[k] = v
        return out

    def app_kid(self, app: App, kid: str) -> str:
        """A key id from the HSM's admin API (plain listener) as the app sees
        it: on the origin the app was given (HTTPS on the test host)."""
        return app.variables["SPIN_VARIABLE_HSM_ENDPOINT"] + kid[len(self.hsm_url):] if kid.startswith(
            self.hsm_url + "/") else kid

    def serve_app(self, name: str = "app", overrides: dict[str, str] | None = None, port: int | None = None,
                  runtime: str | None = None, tls: bool = True, manifest: Path | None = None,
                  host_args: list[str] | None = None) -> App:
        """Serves the app. `runtime`: "host" (the test host), "wasmtime" or
        "spin"; default `default_runtime()`. On the test host with `tls`, the
        app reaches the stand-ins over HTTPS (under `wasmtime serve` over
        plain HTTP: it trusts only the web PKI); `manifest` replaces
        spin.toml there (same variables) and `host_args` are passed to the
        host last (e.g. `["--request-timeout-secs", "1"]`)."""
        variables = spin_variables({"SPIN_VARIABLE_COSMOS_ENDPOINT": self.cosmos_url, **(overrides or {})})
        port = self.port(port)
        spin = shutil.which("spin")
        runtime = runtime or default_runtime()
        if runtime == "host":
            # The host is given only the profile and the overrides and
            # resolves spin.toml's defaults itself, as `spin up` does;
            # `variables` (App.variables) stays the whole resolved set.
            passed = spin_variables({"SPIN_VARIABLE_COSMOS_ENDPOINT": self.cosmos_url, **(overrides or {})},
                                    defaults=False)
            if tls:
                variables, passed = self.over_tls(variables), self.over_tls(passed)
            state = self.workdir / f"{name}-host-state"
            state.mkdir(exist_ok=True)
            cap = os.environ.get("CMK_MAX_CONCURRENT_REQUESTS", str(MAX_CONCURRENT_REQUESTS))
            argv = [env("CMK_TEST_HOST"), "--manifest", str(manifest or ROOT / "spin.toml"), "--listen", f"127.0.0.1:{port}",
                    "--wasm", env("CMK_APP_WASM"), "--kv-db", str(state / "sqlite_key_value.db"),
                    "--ca-file", str(self.ca.ca_file), "--max-concurrency", cap if cap != "0" else "100000",
                    "--cache-dir", str(Path(os.environ.get("CMK_CACHE", self.workdir)) / "host-code"),
                    *(host_args or [])]
            clean = {k: v for k, v in os.environ.items() if not k.startswith("SPIN_VARIABLE_")}
            log = self.workdir / f"{name}.log"
            proc = Process(name, subprocess.Popen(argv, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, env={**clean, **passed},
                                                  cwd=self.workdir, start_new_session=True), log)
            record(self.workdir, "children", proc.proc.pid)
        elif runtime == "spin":
            argv = [spin or "spin", "up", "--from", str(ROOT / "spin.toml"), "--listen", f"127.0.0.1:{port}",
                    "--state-dir", str(self.workdir / f"{name}-spin-state")]
            proc = start(name, argv, self.workdir, variables)
        else:
            runtime = "wasmtime"
            kv = self.workdir / f"{name}-kv"
            kv.mkdir(exist_ok=True)
            # Past its instance pool (1000 core instances; the app with the
            # stub plugged in takes about 7 per request) `wasmtime serve`
            # answers 500 without Retry-After; with a cap on concurrent
            # requests it queues the rest instead (docs/runtime.md).
            cap = os.environ.get("CMK_MAX_CONCURRENT_REQUESTS", str(MAX_CONCURRENT_REQUESTS))
            argv = [env("CMK_WASMTIME"), "serve", "--addr", f"127.0.0.1:{port}", "-S", "cli",
                    *(["--max-concurrent-requests", cap] if cap != "0" else []),
                    "--dir", f"{kv}::/kv"]
            for k, v in component_variables(variables).items():
                argv += ["--env", f"{k}={v}"]
            argv.append(env("CMK_TEST_WASM"))
            proc = start(name, argv, self.workdir)
        self.processes.append(proc)
        wait_for_port(port, proc.proc, f"{runtime} serving {name}", timeout=120)
        return App(f"http://127.0.0.1:{port}", variables, proc, runtime)

    def stop(self, grace: float = 5.0) -> None:
        """Stops every process the stack started; bounded by `grace` plus
        the time SIGKILL takes."""
        stop_all(list(reversed(self.processes)), grace)
        self.processes.clear()


# What scripts/local seals by default: fields a sample event carries.
LOCAL_PROTECTED_FIELDS = {"*": ["/data/ssn", "/data/card/number"]}


def serve_local(stack: Stack, stage: str, port: int) -> dict:
    """The local run: the app on `port`; in stage two sealing sample fields
    under the stand-in HSM's key and fed by the queue bridge."""
    info: dict = {"stage": stage}
    if stage == "two":
        overrides = stack.stage_two(
            protected_fields=json.dumps(LOCAL_PROTECTED_FIELDS),
            # Check the key on every delivery, so the key drill shows at once.
            hsm_key_check_secs="0",
        )
        info.update(hsm=stack.hsm_url, key=KEK_NAME, protected_fields=LOCAL_PROTECTED_FIELDS)
    else:
        overrides = {}
    # The local run serves the app as users would without Spin: `spin up`
    # when installed, else `wasmtime serve` (CMK_RUNTIME=host for the test host).
    runtime = os.environ.get("CMK_RUNTIME") or ("spin" if shutil.which("spin") and not os.environ.get(
        "CMK_FORCE_WASMTIME") else "wasmtime")
    app = stack.serve_app(port=port, overrides=overrides, runtime=runtime)
    info.update(app=app.url, runtime=app.runtime)
    if stage == "two":
        bridge_settings = dict(
            # A refused message comes back soon, and not to the poison queue
            # during a short key drill.
            VISIBILITY_TIMEOUT_SECS="5", REQUEST_TIMEOUT_SECS="4", MAX_DEQUEUE_COUNT="20",
            POLL_INTERVAL_MS="500",
        )
        stack.start_bridge("bridge", stack.bridge_env(f"{app.url}/queue", **bridge_settings))
        info.update(bridge_queue=QUEUE_NAME, bridge_log=str(stack.workdir / "bridge.log"))
    return info


def main() -> None:
    """`python -m harness.stack DIR [--stage one|two]`: start everything,
    write DIR/stack.json, and serve until SIGINT or SIGTERM (used by
    scripts/local). A stop signal also ends a start still under way; every
    child is stopped, with SIGKILL after a short grace."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--stage", choices=["one", "two"], default="two")
    # Below scripts/local's own grace (2 s), after which it SIGKILLs the
    # stack and the children's groups itself.
    parser.add_argument("--grace", type=float, default=1.5, help="seconds before SIGKILL on stop")
    args = parser.parse_args()
    # Handlers, not a blocked mask: children inherit a blocked mask and
    # would then ignore the SIGTERM that stops them. Set explicitly, since a
    # background job of a shell starts with SIGINT ignored. The handler only
    # records the signal; the wakeup pipe ends the wait below at once.
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _on_stop_signal)
    global _parent_pid
    _parent_pid = int(os.environ.get("CMK_PARENT_PID", "0"))
    workdir = Path(args.dir).resolve()
    port = int(os.environ.get("CMK_PORT", "3000"))
    stack = Stack(workdir)
    try:
        stack.start_peers()
        check_interrupted()
        served = serve_local(stack, args.stage, port)
        info = {
            **served,
            "cosmos": stack.cosmos_url,
            "cosmos_raw": stack.cosmos_raw_url,
            "database": stack.database,
            "container": stack.container,
            "queue": stack.queue_url,
            "queue_connection_string": stack.queue_connection_string,
            "sigcheck": stack.sigcheck_url,
            "entra": stack.entra_url,
            "hsm_tls": stack.hsm_tls_url,
            "logs": str(workdir),
        }
        check_interrupted()
        tmp = workdir / "stack.json.tmp"
        tmp.write_text(json.dumps(info, indent=2))
        tmp.replace(workdir / "stack.json")
        print(json.dumps(info), flush=True)
        while not _stop_signal and not _orphaned():
            try:
                select.select([wake_r], [], [], 1.0)
                while os.read(wake_r, 64):
                    pass
            except (BlockingIOError, InterruptedError):
                pass
    except Interrupted:
        pass
    finally:
        stack.stop(grace=args.grace)


if __name__ == "__main__":
    main()
