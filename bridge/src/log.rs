//! Structured logs: one JSON object per line on stderr, with a UTC
//! timestamp. Callers pass only values that are safe to record: message ids,
//! counts, statuses and error codes, never a message text, key or token.

use serde_json::{Map, Value};

/// Writes one log line.
pub fn emit(level: &str, event: &str, fields: &[(&str, Value)]) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let c = cmk_core::time::UnixTime(now.as_secs()).civil();
    let mut m = Map::new();
    m.insert(
        "ts".into(),
        Value::from(format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
            c.year,
            c.month,
            c.day,
            c.hour,
            c.minute,
            c.second,
            now.subsec_millis()
        )),
    );
    m.insert("level".into(), Value::from(level));
    m.insert("event".into(), Value::from(event));
    for (k, v) in fields {
        m.insert((*k).into(), v.clone());
    }
    // One write per line under stderr's lock, so threads never interleave.
    eprintln!("{}", Value::Object(m));
}
