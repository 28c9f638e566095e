//! Tests of answers from write outcomes.

use super::*;

#[test]
fn summary_reports_every_document() {
    let w = writes(vec![
        event_in("1", "/a"),
        event_in("2", "/b"),
        event_in("3", "/a"),
    ]);
    let (r, outcomes) = summarize(&w, vec![batch_ok(&[201, 200]), ok(201)]);
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["accepted"], 3);
    assert_eq!(v["requests"], 2);
    assert_eq!(v["requestCharge"], 6.5);
    assert_eq!(v["documents"][0]["id"], json!(w.documents[0].id));
    let statuses: Vec<&Value> = (0..3).map(|i| &v["documents"][i]["status"]).collect();
    assert_eq!(statuses, [&json!(201), &json!(201), &json!(200)]);
    assert!(outcomes[0].batch && outcomes[0].documents == 2);
}

#[test]
fn any_failure_fails_the_delivery_preferring_retryable() {
    let w = writes(vec![event_in("1", "/a"), event_in("2", "/b")]);
    let unauthorized = || {
        Ok(Response::builder()
            .status(401)
            .body(br#"{"code":"Unauthorized","message":"no"}"#.to_vec())
            .unwrap())
    };
    let (r, _) = summarize(&w, vec![ok(201), unauthorized()]);
    assert_eq!(r.status(), 502);
    let (r, _) = summarize(
        &w,
        vec![unauthorized(), Err(CosmosError::Transport("reset".into()))],
    );
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let w = writes(vec![event_in("1", "/a"), event_in("2", "/a")]);
    // A batch still throttled when the retry budget ran out (the I/O
    // layer retries such answers first: cosmos::transient_failure).
    let failed = Ok(Response::builder()
        .status(207)
        .body(br#"[{"statusCode":424},{"statusCode":429}]"#.to_vec())
        .unwrap());
    let (r, _) = summarize(&w, vec![failed]);
    assert_eq!(r.status(), 503);
}
