//! cmk-test-host: test tooling, never shipped. Runs the unmodified
//! cmk-ingest component (the `.wasm` users deploy) the way `spin up` does,
//! with the Spin imports implemented natively. See docs/runtime.md, "The
//! test host", for where it follows Spin and where it does not.
//!
//! Usage: cmk-test-host --manifest spin.toml --listen 127.0.0.1:PORT
//!        [--wasm app.wasm] [--kv-db FILE] [--ca-file PEM]...
//!        [--max-concurrency N] [--request-timeout-secs S] [--cache-dir DIR]
//!
//! `--max-concurrency` (default 100): requests past it wait for a slot.
//! Each request is numbered in the log, which says when it waits for a
//! slot, when it takes one and which fresh instance serves it.
//! `--request-timeout-secs` (default: none, as Spin): ends a request's
//! instance after S seconds and answers 500.
//! `CMK_TEST_HOST_PERFMAP=1` (for profiling, see tests/bench/host_profile.py):
//! Wasmtime writes `/tmp/perf-<pid>.map`, so `perf` names the guest's
//! compiled functions (with a `.wasm` built without stripping its names).
//! `CMK_TEST_HOST_MEMSTATS=1` (for measuring): each request logs the size
//! its instance's linear memory reached, which is what a pooled slot
//! zeroes when the instance ends (docs/runtime.md, "Memory on SpinKube").

mod allowed;
mod kv;
mod manifest;
mod outbound;
mod pooling;

use anyhow::{bail, Context, Result};
use hyper::server::conn::http1;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use wasmtime::component::{Component, HasSelf, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

wasmtime::component::bindgen!({
    inline: "
        package cmk:test-host;
        world spin-imports {
            import fermyon:spin/variables@2.0.0;
            import fermyon:spin/key-value@2.0.0;
        }
    ",
    path: "../../wit/deps/spin@2.0.0",
    with: { "fermyon:spin/key-value.store": crate::KvStore },
});

use fermyon::spin::{key_value, variables};

/// Spin's `DEFAULT_STORE_TABLE_CAPACITY` (crates/factor-key-value/src/host.rs).
const STORE_TABLE_CAPACITY: usize = 256;
/// Epoch tick: a guest busy on the CPU yields this often, so the
/// per-request timeout can stop it.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// An open key-value store (the resource's host side): its label.
pub struct KvStore {
    label: String,
}

struct Shared {
    component_id: String,
    variables: HashMap<String, String>,
    kv_allowed: Vec<String>,
    kv: kv::Sqlite,
    outbound: outbound::Outbound,
}

struct Host {
    table: ResourceTable,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: outbound::Hooks,
    shared: Arc<Shared>,
    open_stores: usize,
    memory: Option<MemoryPeak>,
}

/// Records the largest size the instance's linear memories reached
/// (`CMK_TEST_HOST_MEMSTATS=1`); allows every growth, as without it.
#[derive(Default)]
struct MemoryPeak {
    bytes: usize,
}

impl wasmtime::ResourceLimiter for MemoryPeak {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.bytes = self.bytes.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        _desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(true)
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

impl variables::Host for Host {
    fn get(&mut self, name: String) -> Result<String, variables::Error> {
        if let Err(reason) = manifest::validate_name(&name) {
            return Err(variables::Error::InvalidName(reason));
        }
        self.shared.variables.get(&name).cloned().ok_or_else(|| {
            variables::Error::Undefined(format!(
                "no variable for {:?}.{name:?}",
                self.shared.component_id
            ))
        })
    }
}

impl key_value::Host for Host {}

impl key_value::HostStore for Host {
    fn open(&mut self, label: String) -> Result<Resource<KvStore>, key_value::Error> {
        may_open(&self.shared.kv_allowed, &label, self.open_stores)?;
        let r = self
            .table
            .push(KvStore { label })
            .map_err(|e| key_value::Error::Other(e.to_string()))?;
        self.open_stores += 1;
        Ok(r)
    }

    fn get(
        &mut self,
        s: Resource<KvStore>,
        key: String,
    ) -> Result<Option<Vec<u8>>, key_value::Error> {
        let label = self.label(&s)?;
        self.shared
            .kv
            .get(&label, &key)
            .map_err(key_value::Error::Other)
    }

    fn set(
        &mut self,
        s: Resource<KvStore>,
        key: String,
        value: Vec<u8>,
    ) -> Result<(), key_value::Error> {
        let label = self.label(&s)?;
        self.shared
            .kv
            .set(&label, &key, &value)
            .map_err(key_value::Error::Other)
    }

    fn delete(&mut self, s: Resource<KvStore>, key: String) -> Result<(), key_value::Error> {
        let label = self.label(&s)?;
        self.shared
            .kv
            .delete(&label, &key)
            .map_err(key_value::Error::Other)
    }

    fn exists(&mut self, s: Resource<KvStore>, key: String) -> Result<bool, key_value::Error> {
        let label = self.label(&s)?;
        self.shared
            .kv
            .get(&label, &key)
            .map(|v| v.is_some())
            .map_err(key_value::Error::Other)
    }

    fn get_keys(&mut self, s: Resource<KvStore>) -> Result<Vec<String>, key_value::Error> {
        let label = self.label(&s)?;
        self.shared.kv.keys(&label).map_err(key_value::Error::Other)
    }

    fn drop(&mut self, s: Resource<KvStore>) -> wasmtime::Result<()> {
        self.table.delete(s)?;
        self.open_stores -= 1;
        Ok(())
    }
}

/// Spin's checks on `store.open` (`crates/factor-key-value/src/host.rs`):
/// a label the component's `key_value_stores` does not list is
/// `access-denied`, whether or not the store exists; past the table's
/// capacity, `store-table-full`.
fn may_open(allowed: &[String], label: &str, open: usize) -> Result<(), key_value::Error> {
    if !allowed.iter().any(|a| a == label) {
        return Err(key_value::Error::AccessDenied);
    }
    if open >= STORE_TABLE_CAPACITY {
        return Err(key_value::Error::StoreTableFull);
    }
    Ok(())
}

impl Host {
    fn label(&self, s: &Resource<KvStore>) -> Result<String, key_value::Error> {
        self.table
            .get(s)
            .map(|s| s.label.clone())
            .map_err(|e| key_value::Error::Other(e.to_string()))
    }
}

struct Args {
    manifest: PathBuf,
    listen: SocketAddr,
    wasm: Option<PathBuf>,
    kv_db: Option<PathBuf>,
    ca_files: Vec<PathBuf>,
    max_concurrency: usize,
    request_timeout: Option<Duration>,
    cache_dir: Option<PathBuf>,
}

/// Spin's HTTP trigger sets no per-request timeout by default:
/// `DEFAULT_REQUEST_TIMEOUT` is `None` in `crates/trigger-http/src/lib.rs`
/// (v4.0.2 and main), and its `--request-timeout` flag "only affects WASIp3
/// components"; the WASI 0.2 executor (`crates/trigger-http/src/wasi.rs`)
/// runs the handler to completion, and v3.x has no timeout at all. Spin's
/// main branch adds an epoch deadline for WASI 0.2 (`request_deadline`,
/// applied in `wasi.rs`), but only for embedders that build
/// `InstanceReuseConfig::single_use_with_request_deadline`; `spin up`
/// leaves it `None`. So a WASI 0.2 app such as this one runs unbounded
/// under `spin up`; the timeout here is opt-in (`--request-timeout-secs`).
const DEFAULT_REQUEST_TIMEOUT: Option<Duration> = None;

fn parse_args() -> Result<Args> {
    let mut args = Args {
        manifest: PathBuf::from("spin.toml"),
        listen: "127.0.0.1:3000".parse()?,
        wasm: None,
        kv_db: None,
        ca_files: Vec::new(),
        max_concurrency: 100,
        request_timeout: DEFAULT_REQUEST_TIMEOUT,
        cache_dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--manifest" => args.manifest = value()?.into(),
            "--listen" => args.listen = value()?.parse().context("--listen")?,
            "--wasm" => args.wasm = Some(value()?.into()),
            "--kv-db" => args.kv_db = Some(value()?.into()),
            "--ca-file" => args.ca_files.push(value()?.into()),
            "--max-concurrency" => {
                args.max_concurrency = value()?.parse().context("--max-concurrency")?;
                if args.max_concurrency == 0 {
                    bail!("--max-concurrency must be at least 1");
                }
            }
            "--request-timeout-secs" => {
                let secs: f64 = value()?.parse().context("--request-timeout-secs")?;
                if !(secs.is_finite() && secs > 0.0) {
                    bail!("--request-timeout-secs must be a positive number of seconds");
                }
                args.request_timeout = Some(Duration::from_secs_f64(secs));
            }
            "--cache-dir" => args.cache_dir = Some(value()?.into()),
            other => bail!("unknown argument {other:?} (see the usage in tests/host/src/main.rs)"),
        }
    }
    Ok(args)
}

/// Compiles the component, or loads the machine code compiled for the same
/// bytes by the same engine from `cache_dir`.
fn load_component(
    engine: &Engine,
    wasm: &std::path::Path,
    cache_dir: Option<&std::path::Path>,
) -> Result<Component> {
    let bytes = std::fs::read(wasm).with_context(|| format!("reading {}", wasm.display()))?;
    let Some(dir) = cache_dir else {
        return Ok(Component::new(engine, &bytes)?);
    };
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    bytes.hash(&mut h);
    engine.precompile_compatibility_hash().hash(&mut h);
    let path = dir.join(format!("{:016x}.cwasm", h.finish()));
    if path.exists() {
        // SAFETY: the file was written by `serialize` below for this engine
        // configuration (its name hashes the engine's compatibility hash).
        if let Ok(c) = unsafe { Component::deserialize_file(engine, &path) } {
            return Ok(c);
        }
    }
    let component = Component::new(engine, &bytes)?;
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, component.serialize()?)?;
    std::fs::rename(&tmp, &path)?;
    Ok(component)
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    // The engine's settings first: a bad allocator setting stops the start
    // before anything else is read, as in Spin (its engine is built first).
    let mut config = Config::new();
    config.epoch_interruption(true);
    if std::env::var("CMK_TEST_HOST_PERFMAP").as_deref() == Ok("1") {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    let allocator = pooling::configure(&mut config, &|k| std::env::var(k).ok())?;
    let app = manifest::App::load(&args.manifest, &|k| std::env::var(k).ok())
        .with_context(|| format!("loading {}", args.manifest.display()))?;
    // Spin refuses to start on a store the runtime config does not define;
    // without runtime config only `default` exists.
    for label in &app.key_value_stores {
        if label != "default" {
            bail!("component {:?} uses key-value store {label:?}, which is not defined (only \"default\" is)", app.component_id);
        }
    }
    if !app.ignored.is_empty() {
        eprintln!(
            "cmk-test-host: manifest fields with no effect here, ignored: {}",
            app.ignored.join(", ")
        );
    }
    let allowed = allowed::AllowedHosts::parse(&app.allowed_outbound_hosts)
        .context("invalid allowed_outbound_hosts")?;
    let kv_path = args.kv_db.clone().unwrap_or_else(|| {
        args.manifest
            .parent()
            .unwrap_or(std::path::Path::new("."))
            .join(".spin/sqlite_key_value.db")
    });
    let shared = Arc::new(Shared {
        component_id: app.component_id.clone(),
        variables: app.component_variables.clone(),
        kv_allowed: app.key_value_stores.clone(),
        kv: kv::Sqlite::open(&kv_path)?,
        outbound: outbound::Outbound::new(allowed, &args.ca_files)?,
    });

    let engine = Engine::new(&config)?;
    let wasm = args.wasm.clone().unwrap_or(app.source.clone());
    let component = load_component(&engine, &wasm, args.cache_dir.as_deref())?;
    let mut linker: Linker<Host> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    variables::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h)?;
    key_value::add_to_linker::<Host, HasSelf<Host>>(&mut linker, |h| h)?;
    // Instantiation is pre-checked once; each request only instantiates.
    let pre = ProxyPre::new(linker.instantiate_pre(&component)?)?;

    {
        let engine = engine.clone();
        std::thread::spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            engine.increment_epoch();
        });
    }

    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    let server = Arc::new(Server {
        pre,
        shared,
        slots: Arc::new(Semaphore::new(args.max_concurrency)),
        cap: args.max_concurrency,
        timeout: args.request_timeout,
        requests: AtomicU64::new(0),
        instances: Arc::new(AtomicU64::new(0)),
        memstats: std::env::var("CMK_TEST_HOST_MEMSTATS").as_deref() == Ok("1"),
    });
    // Values are never logged; secret ones are only counted.
    eprintln!(
        "cmk-test-host: serving {} on http://{}{} ({}, kv {}, at most {} requests at once, request timeout {}, outbound hosts {:?}, {} secret variables)",
        wasm.display(),
        listener.local_addr()?,
        app.route,
        allocator.describe(),
        kv_path.display(),
        args.max_concurrency,
        args.request_timeout
            .map_or("none".to_string(), |t| format!("{t:?}")),
        app.allowed_outbound_hosts,
        app.secret.len()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        let (conn, _) = tokio::select! {
            r = listener.accept() => r?,
            _ = term.recv() => return Ok(()),
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let _ = conn.set_nodelay(true);
        let server = server.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let server = server.clone();
                async move { server.handle(req).await }
            });
            if let Err(e) = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(hyper_util::rt::TokioIo::new(conn), service)
                .await
            {
                if !e.is_incomplete_message() {
                    eprintln!("cmk-test-host: connection error: {e}");
                }
            }
        });
    }
}

struct Server {
    pre: ProxyPre<Host>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    cap: usize,
    timeout: Option<Duration>,
    /// Requests received, numbering them in the log.
    requests: AtomicU64,
    /// Instances created: one per request (logged, so tests can count).
    instances: Arc<AtomicU64>,
    /// `CMK_TEST_HOST_MEMSTATS=1`: log each instance's linear memory size.
    memstats: bool,
}

fn plain(status: u16, text: &str) -> hyper::Response<HyperOutgoingBody> {
    use http_body_util::BodyExt;
    let body = http_body_util::Full::new(bytes::Bytes::from(text.to_string()))
        .map_err(|never| match never {})
        .boxed_unsync();
    hyper::Response::builder()
        .status(status)
        .body(body)
        .expect("static response")
}

impl Server {
    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
    ) -> Result<hyper::Response<HyperOutgoingBody>> {
        let n = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        // The concurrency cap: wait for a slot (as `wasmtime serve` does).
        // Each request logs when it waits, and once instantiated, one line
        // with its slot and its instance (one write per request: Spin logs
        // nothing per request, so the host keeps its own cost to that).
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                eprintln!(
                    "cmk-test-host: request {n}: waiting for a slot ({} of {} in use)",
                    self.cap, self.cap
                );
                self.slots.clone().acquire_owned().await?
            }
        };
        let in_use = self.cap - self.slots.available_permits();
        let cap = self.cap;
        let mut store = Store::new(
            self.pre.engine(),
            Host {
                table: ResourceTable::new(),
                wasi: WasiCtx::builder().inherit_stdout().inherit_stderr().build(),
                http: WasiHttpCtx::new(),
                hooks: self.shared.outbound.hooks(),
                shared: self.shared.clone(),
                open_stores: 0,
                memory: self.memstats.then(MemoryPeak::default),
            },
        );
        if self.memstats {
            store.limiter(|host| host.memory.as_mut().expect("set with memstats"));
        }
        store.epoch_deadline_async_yield_and_update(1);
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store
            .data_mut()
            .http()
            .new_incoming_request(Scheme::Http, req)?;
        let out = store.data_mut().http().new_response_outparam(sender)?;
        let pre = self.pre.clone();
        let timeout = self.timeout;
        let instances = self.instances.clone();
        // A fresh instance per request, as Spin; the task runs until the
        // guest has written the whole response body, or the timeout ends it.
        let task = tokio::spawn(async move {
            let _permit = permit;
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                let k = instances.fetch_add(1, Ordering::Relaxed) + 1;
                eprintln!(
                    "cmk-test-host: request {n}: slot taken ({in_use} of {cap} in use), instance {k} instantiated"
                );
                let handled = proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, req, out)
                    .await;
                if let Some(peak) = &store.data().memory {
                    eprintln!(
                        "cmk-test-host: request {n}: linear memory reached {} bytes",
                        peak.bytes
                    );
                }
                handled
            };
            let Some(timeout) = timeout else {
                return run.await;
            };
            match tokio::time::timeout(timeout, run).await {
                Ok(r) => r,
                Err(_) => Err(wasmtime::format_err!("request timed out after {timeout:?}")),
            }
        });
        match receiver.await {
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(code)) => {
                eprintln!("cmk-test-host: guest answered with error {code:?}");
                Ok(plain(500, "internal server error\n"))
            }
            Err(_) => {
                let reason = match task.await {
                    Ok(Ok(())) => "guest never set a response".to_string(),
                    Ok(Err(e)) => format!("{e:?}"),
                    Err(e) => e.to_string(),
                };
                eprintln!("cmk-test-host: request failed: {reason}");
                Ok(plain(500, "internal server error\n"))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_label_the_component_does_not_list_is_access_denied() {
        let allowed = vec!["default".to_string()];
        assert!(may_open(&allowed, "default", 0).is_ok());
        for label in ["other", "Default", "default ", ""] {
            assert!(
                matches!(
                    may_open(&allowed, label, 0),
                    Err(key_value::Error::AccessDenied)
                ),
                "{label:?}"
            );
        }
        assert!(matches!(
            may_open(&[], "default", 0),
            Err(key_value::Error::AccessDenied)
        ));
    }

    #[test]
    fn the_store_table_has_spins_capacity() {
        let allowed = vec!["default".to_string()];
        assert!(may_open(&allowed, "default", STORE_TABLE_CAPACITY - 1).is_ok());
        assert!(matches!(
            may_open(&allowed, "default", STORE_TABLE_CAPACITY),
            Err(key_value::Error::StoreTableFull)
        ));
    }
}
