//! An ingest delivery as the component reads it: the body shape check
//! (nesting depth, events per batch) and the decoder behind the content-type
//! dispatch (Event Grid schema, CloudEvents structured, batch and binary).
//! The input's first line is the content type, the second the headers
//! (`name=value;...`), the rest the body. A body the shape check lets
//! through never decodes into more events than the limit allows.
#![no_main]
use cmk_core::config::Config;
use cmk_core::ingest::{self, Decoded};
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;

/// Small limits, so that the fuzzer reaches both sides of each.
const MAX_EVENTS: usize = 4;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| {
        Config::load(|name| {
            Ok(match name {
                "cosmos_endpoint" => Some("http://127.0.0.1:8081".into()),
                "cosmos_database" => Some("db".into()),
                "cosmos_container" => Some("events".into()),
                "cosmos_key" => Some("c2VjcmV0".into()),
                "max_events_per_request" => Some(MAX_EVENTS.to_string()),
                "max_nesting_depth" => Some("6".into()),
                _ => None,
            })
        })
        .expect("the fixed configuration loads")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (Some(ct), Some(h), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let ct = std::str::from_utf8(ct).ok().filter(|c| !c.is_empty());
    let headers: Vec<(String, String)> = String::from_utf8_lossy(h)
        .split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let shape = ingest::check_shape(body, config());
    let decoded = ingest::decode(ct, &headers, body);
    if let (Ok(()), Ok(Decoded::Events(events))) = (&shape, &decoded) {
        assert!(
            events.len() <= MAX_EVENTS,
            "{} events passed the shape check",
            events.len()
        );
    }
});
