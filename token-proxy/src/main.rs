//! The I/O around `token_proxy`: a loopback (or pod-network) HTTP listener,
//! the projected token file read at each exchange, and one HTTPS call to
//! the Entra ID token endpoint. One JSON log line per request, without
//! tokens, assertions or the identity header.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use token_proxy::{
    busy, decide, exchange_request, parse_exchange, parse_head, read_head, render, token_answer,
};
use token_proxy::{Answer, Cache, Config, Decision, Slots};

struct State {
    cfg: Config,
    cache: Mutex<Cache>,
    agent: ureq::Agent,
    slots: Arc<Slots>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn log(fields: serde_json::Value) {
    eprintln!("{fields}");
}

fn main() {
    let cfg = Config::from_env(|k| std::env::var(k).ok().filter(|v| !v.trim().is_empty()))
        .unwrap_or_else(|e| {
            log(serde_json::json!({"level": "error", "event": "config_invalid", "error": e}));
            std::process::exit(2);
        });
    let listener = TcpListener::bind(&cfg.listen).unwrap_or_else(|e| {
        log(
            serde_json::json!({"level": "error", "event": "listen_failed", "error": e.to_string()}),
        );
        std::process::exit(2);
    });
    let addr = listener.local_addr().expect("bound");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let state = Arc::new(State {
        slots: Slots::new(cfg.max_connections),
        cfg,
        cache: Mutex::new(Cache::default()),
        agent,
    });
    println!("token-proxy listening on http://{addr}");
    for mut stream in listener.incoming().flatten() {
        let state = Arc::clone(&state);
        let Some(slot) = state.slots.try_take() else {
            // At the cap: answer at once from this thread (no read, no new
            // thread) and close.
            let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
            let _ = stream.write_all(&render(&busy()));
            log(
                serde_json::json!({"level": "warn", "event": "connection_refused",
                "reason": "too many connections", "max_connections": state.cfg.max_connections}),
            );
            continue;
        };
        std::thread::spawn(move || {
            serve(stream, &state);
            drop(slot);
        });
    }
}

fn serve(mut stream: TcpStream, state: &State) {
    let timeout = Duration::from_millis(state.cfg.head_timeout_ms);
    let Some(head) = read_head(&mut stream, timeout) else {
        return;
    };
    let (answer, path, cached) = match parse_head(&head) {
        Err(e) => (
            Answer {
                status: 400,
                body: serde_json::json!({"error": "invalid_request", "error_description": e})
                    .to_string(),
            },
            String::new(),
            false,
        ),
        Ok(req) => {
            let (answer, cached) = match decide(&req, &state.cfg) {
                Decision::Answer(a) => (a, false),
                Decision::Token { resource } => token(state, &resource),
            };
            (answer, req.path, cached)
        }
    };
    log(serde_json::json!({
        "level": if answer.status < 400 { "info" } else { "warn" },
        "event": "request",
        "path": path,
        "status": answer.status,
        "cached": cached,
    }));
    let _ = stream.write_all(&render(&answer));
}

/// A token for `resource`, from the cache or a fresh exchange. The cache
/// lock is held across the exchange so concurrent misses make one call.
fn token(state: &State, resource: &str) -> (Answer, bool) {
    let cfg = &state.cfg;
    let mut cache = state.cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(t) = cache.fresh(resource, now(), cfg.refresh_skew_secs) {
        return (token_answer(t, resource, &cfg.client_id), true);
    }
    // Read afresh each time: the kubelet rotates the projected token.
    let assertion = match std::fs::read_to_string(&cfg.token_file) {
        Ok(a) if !a.trim().is_empty() => a,
        Ok(_) | Err(_) => {
            let answer = Answer {
                status: 503,
                body: serde_json::json!({"error": "federated_token_unreadable",
                    "error_description": "the federated token file (AZURE_FEDERATED_TOKEN_FILE) is missing or empty"})
                .to_string(),
            };
            return (answer, false);
        }
    };
    let (url, body) = exchange_request(cfg, resource, &assertion);
    let sent = state
        .agent
        .post(&url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .header("Accept", "application/json")
        .send(body.as_bytes());
    let answer = match sent {
        Err(e) => Answer {
            status: 503,
            body: serde_json::json!({"error": "token_endpoint_unreachable",
                "error_description": format!("could not reach the token endpoint: {e}")})
            .to_string(),
        },
        Ok(mut resp) => {
            let status = resp.status().as_u16();
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            match parse_exchange(status, &text, now()) {
                Ok(t) => {
                    let a = token_answer(&t, resource, &cfg.client_id);
                    cache.put(resource, t);
                    a
                }
                Err(a) => a,
            }
        }
    };
    (answer, false)
}
