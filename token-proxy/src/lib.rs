//! cmk-token-proxy: Entra ID tokens for the pod's Azure workload identity,
//! served over HTTP in the App Service managed-identity shape
//! (`GET /msi/token?api-version=2019-08-01&resource=…` with
//! `X-IDENTITY-HEADER`), which cmk-ingest already speaks
//! (`identity = managed-identity` with `identity_header`).
//!
//! Why: on SpinKube the Wasm component has no filesystem, so it cannot read
//! the federated service-account token that the workload-identity webhook
//! projects into the pod and the kubelet rotates about hourly. This native
//! helper reads that file at each exchange, trades it for an access token
//! (client-credentials grant with a client assertion), caches the access
//! token per resource until shortly before it expires, and hands it to
//! callers that present the shared identity header.
//!
//! This module is the sans-IO core: configuration, request decisions, the
//! exchange request, answer parsing, the cache. `main.rs` does the I/O.
//! Tokens, assertions and the identity header never reach a log, an error
//! message or `Debug` output.

use std::collections::HashMap;
use std::fmt;

use serde::Deserialize;
use serde_json::json;

/// The App Service managed-identity api-version callers must send.
pub const API_VERSION: &str = "2019-08-01";
/// The token route.
pub const TOKEN_PATH: &str = "/msi/token";
/// The header callers prove themselves with.
pub const IDENTITY_HEADER: &str = "x-identity-header";
const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest error description passed on.
const MAX_DESCRIPTION: usize = 600;

/// A secret whose `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The value, for the one comparison or request that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Settings, from the environment (the workload-identity webhook injects the
/// `AZURE_*` ones).
#[derive(Debug, Clone)]
pub struct Config {
    /// `TOKEN_PROXY_LISTEN`, default `127.0.0.1:8081`.
    pub listen: String,
    /// `IDENTITY_HEADER`: the shared value callers send as `X-IDENTITY-HEADER`.
    pub identity_header: Secret,
    /// `AZURE_AUTHORITY_HOST`, default `https://login.microsoftonline.com/`.
    pub authority: String,
    /// `AZURE_TENANT_ID`.
    pub tenant: String,
    /// `AZURE_CLIENT_ID`: the identity whose tokens are served.
    pub client_id: String,
    /// `AZURE_FEDERATED_TOKEN_FILE`: the projected service-account token.
    pub token_file: String,
    /// `TOKEN_PROXY_RESOURCES`: resources tokens may be asked for
    /// (comma-separated), default `https://managedhsm.azure.net`.
    pub resources: Vec<String>,
    /// `TOKEN_PROXY_REFRESH_SKEW_SECS`: refresh this long before expiry
    /// (default 300).
    pub refresh_skew_secs: u64,
    /// `TOKEN_PROXY_MAX_CONNECTIONS`: connections served at once (default
    /// 64); more are answered 503 and closed.
    pub max_connections: usize,
    /// `TOKEN_PROXY_HEAD_TIMEOUT_MS`: time for a client to send its whole
    /// request head (default 5000), however slowly it trickles.
    pub head_timeout_ms: u64,
}

impl Config {
    /// Reads and checks the settings through `get` (unset or empty → `None`).
    /// Errors name the variable, never a value.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, String> {
        let required = |name: &str| get(name).ok_or_else(|| format!("{name} is required"));
        let identity_header = required("IDENTITY_HEADER")?;
        if identity_header.len() < 16 {
            return Err("IDENTITY_HEADER must be at least 16 characters".into());
        }
        let authority = get("AZURE_AUTHORITY_HOST")
            .unwrap_or_else(|| "https://login.microsoftonline.com/".into());
        if !(authority.starts_with("https://") || authority.starts_with("http://")) {
            return Err("AZURE_AUTHORITY_HOST must be an http(s) URL".into());
        }
        let tenant = required("AZURE_TENANT_ID")?;
        let client_id = required("AZURE_CLIENT_ID")?;
        let segment = |v: &str| {
            !v.is_empty()
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        };
        if !segment(&tenant) {
            return Err("AZURE_TENANT_ID is not a tenant id or domain".into());
        }
        if !segment(&client_id) {
            return Err("AZURE_CLIENT_ID is not a client id".into());
        }
        let resources: Vec<String> = get("TOKEN_PROXY_RESOURCES")
            .unwrap_or_else(|| "https://managedhsm.azure.net".into())
            .split(',')
            .map(|r| r.trim().trim_end_matches('/').to_owned())
            .filter(|r| !r.is_empty())
            .collect();
        if resources.is_empty() {
            return Err("TOKEN_PROXY_RESOURCES names no resource".into());
        }
        let refresh_skew_secs = match get("TOKEN_PROXY_REFRESH_SKEW_SECS") {
            None => 300,
            Some(v) => v
                .trim()
                .parse()
                .ok()
                .filter(|n| *n <= 3000)
                .ok_or("TOKEN_PROXY_REFRESH_SKEW_SECS must be 0 to 3000")?,
        };
        let number = |name: &str, default: u64, max: u64| -> Result<u64, String> {
            match get(name) {
                None => Ok(default),
                Some(v) => v
                    .trim()
                    .parse()
                    .ok()
                    .filter(|n| (1..=max).contains(n))
                    .ok_or(format!("{name} must be 1 to {max}")),
            }
        };
        let max_connections = number("TOKEN_PROXY_MAX_CONNECTIONS", 64, 4096)? as usize;
        let head_timeout_ms = number("TOKEN_PROXY_HEAD_TIMEOUT_MS", 5000, 60_000)?;
        Ok(Self {
            max_connections,
            head_timeout_ms,
            listen: get("TOKEN_PROXY_LISTEN").unwrap_or_else(|| "127.0.0.1:8081".into()),
            identity_header: Secret(identity_header),
            authority,
            tenant,
            client_id,
            token_file: required("AZURE_FEDERATED_TOKEN_FILE")?,
            resources,
            refresh_skew_secs,
        })
    }
}

/// An incoming request's head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// `GET`, …
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// Decoded query pairs.
    pub query: Vec<(String, String)>,
    /// Headers, names lower-cased.
    pub headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Parses a request head (request line and headers, up to the blank line).
pub fn parse_head(head: &str) -> Result<Request, String> {
    let mut lines = head.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return Err("malformed request line".into());
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return Err("malformed request line".into());
    }
    let (path, q) = target.split_once('?').unwrap_or((target, ""));
    let mut query = Vec::new();
    for pair in q.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        query.push((
            percent_decode(k).ok_or("malformed query")?,
            percent_decode(v).ok_or("malformed query")?,
        ));
    }
    let mut headers = Vec::new();
    for l in lines.filter(|l| !l.is_empty()) {
        let (k, v) = l.split_once(':').ok_or("malformed header")?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    Ok(Request {
        method: method.to_owned(),
        path: path.to_owned(),
        query,
        headers,
    })
}

/// An answer to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// JSON body.
    pub body: String,
}

fn refuse(status: u16, error: &str, description: &str) -> Answer {
    Answer {
        status,
        body: json!({"error": error, "error_description": description}).to_string(),
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Answer a token for this resource (from the cache or a fresh exchange).
    Token {
        /// The resource, as the caller named it (without a trailing slash).
        resource: String,
    },
    /// Answer this at once.
    Answer(Answer),
}

fn equal_in_constant_time(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |d, (x, y)| d | (x ^ y)) == 0
}

/// Decides on a request: the identity header, api-version, resource and
/// identity are checked before any token is handed out.
pub fn decide(req: &Request, cfg: &Config) -> Decision {
    if req.path == "/healthz" && req.method == "GET" {
        return Decision::Answer(Answer {
            status: 200,
            body: json!({"status": "ok"}).to_string(),
        });
    }
    if req.path != TOKEN_PATH {
        return Decision::Answer(refuse(404, "not_found", "no such route"));
    }
    if req.method != "GET" {
        return Decision::Answer(refuse(405, "invalid_request", "use GET"));
    }
    let proof = req.header(IDENTITY_HEADER).unwrap_or("");
    if !equal_in_constant_time(proof.as_bytes(), cfg.identity_header.expose().as_bytes()) {
        return Decision::Answer(refuse(
            401,
            "unauthorized_client",
            "the X-IDENTITY-HEADER request header is missing or wrong",
        ));
    }
    if req.param("api-version") != Some(API_VERSION) {
        return Decision::Answer(refuse(
            400,
            "invalid_request",
            &format!("api-version must be {API_VERSION}"),
        ));
    }
    let Some(resource) = req
        .param("resource")
        .map(|r| r.trim_end_matches('/').to_owned())
        .filter(|r| !r.is_empty())
    else {
        return Decision::Answer(refuse(400, "invalid_request", "resource is required"));
    };
    if !cfg.resources.contains(&resource) {
        return Decision::Answer(refuse(
            403,
            "invalid_resource",
            &format!("tokens for {resource} are not served here (TOKEN_PROXY_RESOURCES)"),
        ));
    }
    for other in ["principal_id", "object_id", "mi_res_id", "msi_res_id"] {
        if req.param(other).is_some() {
            return Decision::Answer(refuse(
                400,
                "invalid_request",
                &format!("select the identity by client_id, not {other}"),
            ));
        }
    }
    if let Some(c) = req.param("client_id").filter(|c| *c != cfg.client_id) {
        return Decision::Answer(refuse(
            400,
            "invalid_request",
            &format!("this proxy serves client {} only, not {c}", cfg.client_id),
        ));
    }
    Decision::Token { resource }
}

/// The token exchange: `(url, form body)` for a client-credentials grant
/// whose client assertion is the federated token.
pub fn exchange_request(cfg: &Config, resource: &str, assertion: &str) -> (String, String) {
    let url = format!(
        "{}/{}/oauth2/v2.0/token",
        cfg.authority.trim_end_matches('/'),
        cfg.tenant
    );
    let scope = format!("{resource}/.default");
    let body = [
        ("grant_type", "client_credentials"),
        ("client_id", cfg.client_id.as_str()),
        ("scope", scope.as_str()),
        ("client_assertion_type", ASSERTION_TYPE),
        ("client_assertion", assertion.trim()),
    ]
    .iter()
    .map(|(k, v)| format!("{}={}", percent_encode(k), percent_encode(v)))
    .collect::<Vec<_>>()
    .join("&");
    (url, body)
}

/// A cached access token.
#[derive(Clone, PartialEq, Eq)]
pub struct Token {
    /// The bearer token.
    pub access_token: String,
    /// Expiry, seconds since the epoch.
    pub expires_on: u64,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted>, expires_on {})", self.expires_on)
    }
}

/// Parses Entra's answer. A refusal is passed on with its status and
/// Entra's `error`, `error_description` and `correlation_id` (they carry no
/// secret), so the caller can tell the operator what Entra said.
pub fn parse_exchange(status: u16, body: &str, now: u64) -> Result<Token, Answer> {
    #[derive(Deserialize, Default)]
    struct Raw {
        access_token: Option<String>,
        expires_in: Option<serde_json::Value>,
        #[serde(default)]
        error: String,
        #[serde(default)]
        error_description: String,
        #[serde(default)]
        correlation_id: Option<String>,
    }
    let raw: Raw = serde_json::from_str(body).unwrap_or_default();
    if !(200..300).contains(&status) {
        let mut out = json!({
            "error": if raw.error.is_empty() { format!("http_{status}") } else { raw.error },
            "error_description": raw.error_description.chars().take(MAX_DESCRIPTION).collect::<String>(),
        });
        if let Some(c) = raw.correlation_id {
            out["correlation_id"] = json!(c);
        }
        // Throttling and outages stay retryable for the caller; anything
        // else is Entra refusing this identity: 401 is what the caller sees
        // from App Service too.
        let status = if status == 429 || status >= 500 {
            status
        } else {
            401
        };
        return Err(Answer {
            status,
            body: out.to_string(),
        });
    }
    let secs = match &raw.expires_in {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    match (raw.access_token.filter(|t| !t.is_empty()), secs) {
        (Some(access_token), Some(secs)) if secs > 0 => Ok(Token {
            access_token,
            expires_on: now + secs,
        }),
        _ => Err(refuse(
            502,
            "invalid_response",
            "the token endpoint answered without a usable token",
        )),
    }
}

/// The App Service-shaped answer for a token.
pub fn token_answer(t: &Token, resource: &str, client_id: &str) -> Answer {
    Answer {
        status: 200,
        body: json!({
            "access_token": t.access_token,
            "expires_on": t.expires_on.to_string(),
            "resource": resource,
            "token_type": "Bearer",
            "client_id": client_id,
        })
        .to_string(),
    }
}

/// Access tokens per resource.
#[derive(Debug, Default)]
pub struct Cache {
    by_resource: HashMap<String, Token>,
}

impl Cache {
    /// A token for `resource` that is still good for more than `skew` seconds.
    pub fn fresh(&self, resource: &str, now: u64, skew: u64) -> Option<&Token> {
        self.by_resource
            .get(resource)
            .filter(|t| t.expires_on > now.saturating_add(skew))
    }

    /// Keeps a token.
    pub fn put(&mut self, resource: &str, t: Token) {
        self.by_resource.insert(resource.to_owned(), t);
    }
}

/// An HTTP/1.1 response for `a` (the connection is closed after it).
pub fn render(a: &Answer) -> Vec<u8> {
    let reason = match a.status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        429 => "Too Many Requests",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Error",
    };
    format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{}",
        a.status,
        a.body.len(),
        a.body
    )
    .into_bytes()
}

/// Counts connections being served, up to a cap.
#[derive(Debug)]
pub struct Slots {
    active: std::sync::atomic::AtomicUsize,
    max: usize,
}

/// One connection's place among the [`Slots`]; freed when dropped (it can
/// move to the connection's thread).
#[derive(Debug)]
pub struct Slot(std::sync::Arc<Slots>);

impl Slots {
    /// Room for `max` connections at once.
    pub fn new(max: usize) -> std::sync::Arc<Self> {
        std::sync::Arc::new(Self {
            active: std::sync::atomic::AtomicUsize::new(0),
            max,
        })
    }

    /// A place for one more connection, or `None` at the cap.
    pub fn try_take(self: &std::sync::Arc<Self>) -> Option<Slot> {
        use std::sync::atomic::Ordering;
        self.active
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(std::sync::Arc::clone(self)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0
            .active
            .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// The answer to a connection over the cap.
pub fn busy() -> Answer {
    refuse(
        503,
        "temporarily_unavailable",
        "too many connections; try again",
    )
}

/// Longest request head read.
pub const MAX_HEAD: usize = 16 * 1024;

/// Reads a request head (up to the blank line) within `timeout` in all: each
/// read waits only for what is left of it, so a client that trickles a byte
/// at a time cannot hold the connection longer. `None` when the head is not
/// complete in time, too long, not UTF-8, or the client goes away.
pub fn read_head(stream: &mut std::net::TcpStream, timeout: std::time::Duration) -> Option<String> {
    use std::io::Read;
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let left = deadline.checked_duration_since(std::time::Instant::now())?;
        if left.is_zero() {
            return None;
        }
        stream.set_read_timeout(Some(left)).ok()?;
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 || buf.len() + n > MAX_HEAD {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    String::from_utf8(buf[..end].to_vec()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "shared-identity-header-0123";

    fn cfg() -> Config {
        let env: HashMap<&str, &str> = HashMap::from([
            ("IDENTITY_HEADER", HEADER),
            ("AZURE_TENANT_ID", "t1"),
            ("AZURE_CLIENT_ID", "c1"),
            (
                "AZURE_FEDERATED_TOKEN_FILE",
                "/var/run/secrets/azure/tokens/azure-identity-token",
            ),
            (
                "TOKEN_PROXY_RESOURCES",
                "https://managedhsm.azure.net, https://acct.documents.azure.com/",
            ),
        ]);
        Config::from_env(|k| env.get(k).map(|v| v.to_string())).unwrap()
    }

    fn get(target: &str, header: Option<&str>) -> Request {
        let h = header
            .map(|v| format!("X-IDENTITY-HEADER: {v}\r\n"))
            .unwrap_or_default();
        parse_head(&format!("GET {target} HTTP/1.1\r\nHost: proxy\r\n{h}\r\n")).unwrap()
    }

    const OK: &str =
        "/msi/token?api-version=2019-08-01&resource=https%3A%2F%2Fmanagedhsm.azure.net";

    fn status(d: Decision) -> u16 {
        match d {
            Decision::Answer(a) => a.status,
            Decision::Token { .. } => 200,
        }
    }

    #[test]
    fn connections_are_capped() {
        let slots = Slots::new(2);
        let a = slots.try_take().unwrap();
        let _b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop(a);
        assert!(slots.try_take().is_some());
        assert_eq!(busy().status, 503);
    }

    #[test]
    fn a_trickling_client_gets_the_head_deadline_in_all() {
        use std::io::Write;
        use std::time::{Duration, Instant};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let client = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            // One byte every 100 ms: each read succeeds well within a
            // per-read timeout, the head never ends.
            for _ in 0..30 {
                if c.write_all(b"G").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let (mut server, _) = listener.accept().unwrap();
        let start = Instant::now();
        assert_eq!(read_head(&mut server, Duration::from_millis(700)), None);
        let took = start.elapsed();
        assert!(took < Duration::from_millis(1500), "{took:?}");
        drop(server);
        client.join().unwrap();
        // A whole head in time is read.
        let addr = listener.local_addr().unwrap();
        let c = std::thread::spawn(move || {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            std::thread::sleep(Duration::from_millis(200));
        });
        let (mut server, _) = listener.accept().unwrap();
        assert_eq!(
            read_head(&mut server, Duration::from_secs(5)).as_deref(),
            Some("GET / HTTP/1.1\r\nHost: x")
        );
        c.join().unwrap();
    }

    #[test]
    fn configuration_defaults_and_checks() {
        let c = cfg();
        assert_eq!((c.max_connections, c.head_timeout_ms), (64, 5000));
        assert_eq!(c.listen, "127.0.0.1:8081");
        assert_eq!(c.authority, "https://login.microsoftonline.com/");
        assert_eq!(
            c.resources,
            [
                "https://managedhsm.azure.net",
                "https://acct.documents.azure.com"
            ]
        );
        assert_eq!(c.refresh_skew_secs, 300);
        assert!(!format!("{c:?}").contains(HEADER), "the header is redacted");
        let without = |skip: &str| {
            Config::from_env(|k| {
                (k != skip)
                    .then(|| match k {
                        "IDENTITY_HEADER" => Some(HEADER.to_string()),
                        "AZURE_TENANT_ID" | "AZURE_CLIENT_ID" => Some("x".into()),
                        "AZURE_FEDERATED_TOKEN_FILE" => Some("/f".into()),
                        _ => None,
                    })
                    .flatten()
            })
        };
        for name in [
            "IDENTITY_HEADER",
            "AZURE_TENANT_ID",
            "AZURE_CLIENT_ID",
            "AZURE_FEDERATED_TOKEN_FILE",
        ] {
            assert!(without(name).unwrap_err().contains(name), "{name}");
        }
        assert!(without("none").is_ok());
        let short = Config::from_env(|k| match k {
            "IDENTITY_HEADER" => Some("short".into()),
            _ => Some("x".into()),
        });
        assert!(short.unwrap_err().contains("16"));
    }

    #[test]
    fn only_callers_with_the_identity_header_get_tokens() {
        let c = cfg();
        assert_eq!(
            decide(&get(OK, Some(HEADER)), &c),
            Decision::Token {
                resource: "https://managedhsm.azure.net".into()
            }
        );
        assert_eq!(status(decide(&get(OK, None), &c)), 401);
        assert_eq!(status(decide(&get(OK, Some("wrong")), &c)), 401);
        assert_eq!(
            status(decide(&get(OK, Some(&HEADER[..HEADER.len() - 1])), &c)),
            401
        );
        // Liveness needs no header and hands out nothing.
        assert_eq!(status(decide(&get("/healthz", None), &c)), 200);
        assert_eq!(status(decide(&get("/other", Some(HEADER)), &c)), 404);
    }

    #[test]
    fn requests_are_checked_before_a_token_is_served() {
        let c = cfg();
        let d = |t: &str| status(decide(&get(t, Some(HEADER)), &c));
        assert_eq!(d("/msi/token?resource=https://managedhsm.azure.net"), 400);
        assert_eq!(d("/msi/token?api-version=2019-08-01"), 400);
        assert_eq!(
            d("/msi/token?api-version=2019-08-01&resource=https://vault.azure.net"),
            403,
            "only the configured resources"
        );
        assert_eq!(
            d("/msi/token?api-version=2019-08-01&resource=https://acct.documents.azure.com/"),
            200
        );
        assert_eq!(d(&format!("{OK}&client_id=c1")), 200);
        assert_eq!(d(&format!("{OK}&client_id=someone-else")), 400);
        assert_eq!(d(&format!("{OK}&principal_id=p")), 400);
        let post = parse_head(&format!(
            "POST {OK} HTTP/1.1\r\nX-IDENTITY-HEADER: {HEADER}\r\n\r\n"
        ))
        .unwrap();
        assert_eq!(status(decide(&post, &c)), 405);
        assert!(parse_head("GET /x\r\n\r\n").is_err());
        assert!(parse_head("GET /x?a=%zz HTTP/1.1\r\n\r\n").is_err());
    }

    #[test]
    fn the_exchange_is_a_client_assertion_grant() {
        let (url, body) = exchange_request(&cfg(), "https://managedhsm.azure.net", " eyJ.a+b/c \n");
        assert_eq!(
            url,
            "https://login.microsoftonline.com/t1/oauth2/v2.0/token"
        );
        assert_eq!(
            body,
            "grant_type=client_credentials&client_id=c1\
             &scope=https%3A%2F%2Fmanagedhsm.azure.net%2F.default\
             &client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer\
             &client_assertion=eyJ.a%2Bb%2Fc"
        );
    }

    #[test]
    fn answers_are_parsed_and_refusals_passed_on() {
        let t = parse_exchange(
            200,
            r#"{"token_type":"Bearer","expires_in":3599,"access_token":"tok"}"#,
            1000,
        )
        .unwrap();
        assert_eq!((t.access_token.as_str(), t.expires_on), ("tok", 4599));
        assert!(!format!("{t:?}").contains("tok"));
        let a = token_answer(&t, "https://managedhsm.azure.net", "c1");
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["expires_on"], "4599", "a string, as App Service sends it");
        assert_eq!(v["access_token"], "tok");
        let refused = parse_exchange(
            401,
            r#"{"error":"invalid_client","error_description":"AADSTS700024: Client assertion is not within its valid time range.","correlation_id":"c-1"}"#,
            1000,
        )
        .unwrap_err();
        assert_eq!(refused.status, 401);
        let v: serde_json::Value = serde_json::from_str(&refused.body).unwrap();
        assert_eq!(v["error"], "invalid_client");
        assert_eq!(v["correlation_id"], "c-1");
        assert!(v["error_description"]
            .as_str()
            .unwrap()
            .starts_with("AADSTS700024"));
        assert_eq!(parse_exchange(400, "{}", 0).unwrap_err().status, 401);
        assert_eq!(parse_exchange(503, "oops", 0).unwrap_err().status, 503);
        assert_eq!(parse_exchange(429, "{}", 0).unwrap_err().status, 429);
        assert_eq!(
            parse_exchange(200, r#"{"access_token":""}"#, 0)
                .unwrap_err()
                .status,
            502
        );
    }

    #[test]
    fn cached_tokens_are_refreshed_ahead_of_expiry() {
        let mut c = Cache::default();
        assert!(c.fresh("r", 0, 300).is_none());
        c.put(
            "r",
            Token {
                access_token: "a".into(),
                expires_on: 1000,
            },
        );
        assert!(c.fresh("r", 699, 300).is_some());
        assert!(c.fresh("r", 700, 300).is_none());
        assert!(c.fresh("other", 0, 300).is_none());
    }

    #[test]
    fn responses_close_the_connection() {
        let r = String::from_utf8(render(&Answer {
            status: 401,
            body: "{}".into(),
        }))
        .unwrap();
        assert!(r.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(r.contains("Content-Length: 2\r\n") && r.contains("Connection: close\r\n"));
        assert!(r.ends_with("\r\n\r\n{}"));
    }
}
