//! `cmk-ingest-bridge [--once]`: forwards Azure Storage queue messages to
//! cmk-ingest's `POST /queue`. Settings come from `BRIDGE_*` and `AZURE_*`
//! environment variables (see docs/bridge.md). SIGTERM or SIGINT stops
//! polling, lets in-flight forwards finish and exits 0; a second signal
//! exits at once with 1.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use cmk_ingest_bridge::config::Config;
use cmk_ingest_bridge::driver::Bridge;
use cmk_ingest_bridge::log::emit;
use serde_json::json;

const USAGE: &str = "usage: cmk-ingest-bridge [--once]

Polls the Storage queue BRIDGE_QUEUE_URL and forwards each message to
BRIDGE_TARGET_URL (cmk-ingest's POST /queue). --once: exit when a poll
finds no visible message (messages left for redelivery stay hidden until
their visibility timeout; exit 1 if a poll fails). See docs/bridge.md.";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let once = match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        [] => false,
        ["--once"] => true,
        ["--help" | "-h"] => {
            println!("{USAGE}");
            return;
        }
        _ => {
            eprintln!("{USAGE}");
            std::process::exit(2);
        }
    };
    let cfg = match Config::load(|name| std::env::var(name).ok()) {
        Ok(c) => c,
        Err(e) => {
            emit(
                "error",
                "config_invalid",
                &[("error", json!(e.to_string()))],
            );
            std::process::exit(2);
        }
    };
    let shutdown = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // The first signal sets the flag; a second one, with the flag set, exits.
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&shutdown))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&shutdown)))
            .expect("signal handlers can be installed");
    }
    std::process::exit(Bridge::new(cfg, shutdown).run(once));
}
