//! CloudEvents 1.0: structured, batch and binary mode. For binary mode the
//! input's first line is split into `ce-` headers (`name=value;...`), the
//! second is the content type, the rest the body.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = cmk_core::events::decode_cloudevent(data);
    let _ = cmk_core::events::decode_cloudevents_batch(data);
    let mut parts = data.splitn(3, |b| *b == b'\n');
    let (Some(h), Some(ct), Some(body)) = (parts.next(), parts.next(), parts.next()) else {
        return;
    };
    let headers: Vec<(String, String)> = String::from_utf8_lossy(h)
        .split(';')
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (format!("ce-{k}"), v.to_owned()))
        .collect();
    let ct = std::str::from_utf8(ct).ok();
    let _ = cmk_core::events::decode_cloudevent_binary(&headers, ct, body);
});
