//! Known-answer and behaviour tests of [`super`] (`response`).

use super::*;
use crate::api::{ApiError, DEFAULT_RETRY_AFTER_SECS};

fn svc(status: u16, retry_after_ms: Option<u64>) -> ServiceError {
    ServiceError {
        status,
        sub_status: None,
        code: "C".into(),
        message: "m".into(),
        activity_id: None,
        retry_after_ms,
    }
}

#[test]
fn cosmos_failures_map_to_sender_actions() {
    let map = |e: CosmosError| ApiError::from(&e);
    let t = map(CosmosError::Transient(svc(429, Some(1500))));
    assert_eq!((t.status.as_u16(), t.retry_after), (503, Some(2)));
    assert_eq!(
        map(CosmosError::Transport("reset".into())).retry_after,
        Some(DEFAULT_RETRY_AFTER_SECS)
    );
    assert_eq!(map(CosmosError::Unauthorized(svc(401, None))).status, 502);
    assert_eq!(map(CosmosError::NotFound(svc(404, None))).status, 502);
    assert_eq!(map(CosmosError::Rejected(svc(400, None))).status, 502);
    assert_eq!(
        map(CosmosError::DocumentTooLarge { size: 3, limit: 2 }).status,
        413
    );
}

fn resp(status: u16, headers: &[(&str, &str)], body: &str) -> Response<Vec<u8>> {
    let mut b = Response::builder().status(status);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(body.as_bytes().to_vec()).unwrap()
}

#[test]
fn created_and_replaced_are_success_with_metrics() {
    let r = resp(
        201,
        &[
            ("x-ms-request-charge", "6.29"),
            ("x-ms-activity-id", "a-1"),
            ("etag", "\"0001\""),
        ],
        "{}",
    );
    let o = parse_write(&r).unwrap();
    assert_eq!(o.status, 201);
    assert_eq!(o.etag.as_deref(), Some("\"0001\""));
    assert_eq!(o.metrics.request_charge, 6.29);
    assert_eq!(o.metrics.activity_id.as_deref(), Some("a-1"));
    assert_eq!(parse_write(&resp(200, &[], "{}")).unwrap().status, 200);
}

#[test]
fn unauthorized_carries_code_message_and_activity() {
    let r = resp(
        401,
        &[("x-ms-activity-id", "act-9")],
        r#"{"code":"Unauthorized","message":"The input authorization token can't serve the request."}"#,
    );
    match parse_write(&r).unwrap_err() {
        CosmosError::Unauthorized(e) => {
            assert_eq!(e.code, "Unauthorized");
            assert!(e.message.starts_with("The input authorization token"));
            assert_eq!(e.activity_id.as_deref(), Some("act-9"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn throttling_is_transient_with_retry_after() {
    let r = resp(
        429,
        &[("x-ms-retry-after-ms", "250"), ("x-ms-substatus", "3200")],
        r#"{"code":"TooManyRequests","message":"Request rate is large"}"#,
    );
    let e = parse_write(&r).unwrap_err();
    assert!(e.is_transient());
    assert_eq!(e.retry_after_ms(), Some(250));
    for s in [408, 449, 500, 503] {
        assert!(
            parse_write(&resp(s, &[], "")).unwrap_err().is_transient(),
            "{s}"
        );
    }
}

#[test]
fn other_statuses_are_classified() {
    assert!(matches!(
        parse_write(&resp(404, &[], "")).unwrap_err(),
        CosmosError::NotFound(_)
    ));
    assert!(matches!(
        parse_write(&resp(409, &[], "")).unwrap_err(),
        CosmosError::Conflict(_)
    ));
    assert!(matches!(
        parse_write(&resp(412, &[], "")).unwrap_err(),
        CosmosError::PreconditionFailed(_)
    ));
    match parse_write(&resp(400, &[], "not json")).unwrap_err() {
        CosmosError::Rejected(e) => {
            assert_eq!(e.code, "BadRequest");
            assert_eq!(e.message, "not json");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        parse_write(&resp(204, &[], "")).unwrap_err(),
        CosmosError::InvalidResponse(_)
    ));
}

#[test]
fn batch_success_yields_every_operation() {
    let body = r#"[{"statusCode":201,"requestCharge":5.7,"eTag":"\"1\""},{"statusCode":200,"requestCharge":10.1,"eTag":"\"2\""}]"#;
    let o = parse_batch(&resp(200, &[("x-ms-request-charge", "15.8")], body), 2).unwrap();
    assert_eq!(o.results.len(), 2);
    assert_eq!(o.results[0].status, 201);
    assert_eq!(o.results[1].etag.as_deref(), Some("\"2\""));
    assert_eq!(o.metrics.request_charge, 15.8);
}

#[test]
fn batch_failure_names_the_operation() {
    let body = r#"[{"statusCode":424},{"statusCode":409,"requestCharge":1.2},{"statusCode":424}]"#;
    let e = parse_batch(&resp(207, &[("x-ms-activity-id", "b-1")], body), 3).unwrap_err();
    assert_eq!(
        e,
        CosmosError::BatchOperationFailed {
            index: 1,
            status: 409,
            activity_id: Some("b-1".into()),
            transient: false,
            retry_after_ms: None
        }
    );
    let body = r#"[{"statusCode":429,"retryAfterMilliseconds":40},{"statusCode":424}]"#;
    let e = parse_batch(&resp(207, &[], body), 2).unwrap_err();
    assert!(e.is_transient());
    assert_eq!(e.retry_after_ms(), Some(40));
}

#[test]
fn a_batch_with_a_throttled_operation_is_worth_retrying() {
    // 429 with the operation's own pause; 449 with the response's.
    let throttled = r#"[{"statusCode":424},{"statusCode":429,"subStatusCode":3200,"retryAfterMilliseconds":120},{"statusCode":424}]"#;
    assert_eq!(
        transient_failure(&resp(207, &[], throttled)),
        Some(Some(120))
    );
    let retry_with = r#"[{"statusCode":449},{"statusCode":424}]"#;
    assert_eq!(
        transient_failure(&resp(207, &[("x-ms-retry-after-ms", "30")], retry_with)),
        Some(Some(30))
    );
    assert_eq!(
        transient_failure(&resp(207, &[], r#"[{"statusCode":503}]"#)),
        Some(None)
    );
    // A conflict or a bad operation will not pass; nor does success.
    for body in [
        r#"[{"statusCode":424},{"statusCode":409}]"#,
        r#"[{"statusCode":400},{"statusCode":424}]"#,
        r#"[{"statusCode":201},{"statusCode":200}]"#,
        "not json",
    ] {
        assert_eq!(transient_failure(&resp(207, &[], body)), None, "{body}");
    }
    assert_eq!(transient_failure(&resp(200, &[], "[]")), None);
    assert_eq!(transient_failure(&resp(201, &[], "{}")), None);
    // Plain failures keep their classification.
    assert_eq!(
        transient_failure(&resp(429, &[("x-ms-retry-after-ms", "250")], "")),
        Some(Some(250))
    );
    assert_eq!(transient_failure(&resp(408, &[], "")), Some(None));
    assert_eq!(transient_failure(&resp(401, &[], "")), None);
    assert_eq!(transient_failure(&resp(409, &[], "")), None);
}

#[test]
fn batch_answers_that_do_not_fit_are_refused() {
    assert!(matches!(
        parse_batch(&resp(200, &[], "[]"), 1),
        Err(CosmosError::InvalidResponse(_))
    ));
    assert!(matches!(
        parse_batch(&resp(200, &[], "{}"), 1),
        Err(CosmosError::InvalidResponse(_))
    ));
    assert!(matches!(
        parse_batch(&resp(413, &[], ""), 1),
        Err(CosmosError::Rejected(_))
    ));
    assert!(parse_batch(&resp(429, &[], ""), 1)
        .unwrap_err()
        .is_transient());
}

#[test]
fn reads_deletes_and_queries() {
    let doc = r#"{"id":"a","pk":"p","_etag":"\"e1\"","_ts":1}"#;
    let r = parse_read(&resp(200, &[("x-ms-request-charge", "1")], doc)).unwrap();
    assert_eq!(r.body["id"], "a");
    assert_eq!(r.etag.as_deref(), Some("\"e1\""));
    assert!(matches!(
        parse_read(&resp(404, &[], r#"{"code":"NotFound","message":"x"}"#)),
        Err(CosmosError::NotFound(_))
    ));
    assert!(matches!(
        parse_read(&resp(200, &[], "[1]")),
        Err(CosmosError::InvalidResponse(_))
    ));
    assert!(parse_delete(&resp(204, &[], "")).is_ok());
    assert!(matches!(
        parse_delete(&resp(404, &[], "")),
        Err(CosmosError::NotFound(_))
    ));
    let page = r#"{"_rid":"x","Documents":[{"id":"a"},{"id":"b"}],"_count":2}"#;
    let q = parse_query(&resp(200, &[("x-ms-continuation", "tok")], page)).unwrap();
    assert_eq!(q.items.len(), 2);
    assert_eq!(q.continuation.as_deref(), Some("tok"));
    assert_eq!(
        parse_query(&resp(200, &[], page)).unwrap().continuation,
        None
    );
    assert!(matches!(
        parse_query(&resp(200, &[], "{}")),
        Err(CosmosError::InvalidResponse(_))
    ));
    assert!(parse_query(&resp(429, &[], "")).unwrap_err().is_transient());
}

#[test]
fn a_document_too_deep_to_parse_is_set_aside_and_the_page_goes_on() {
    let deep = |levels: usize, id: &str| {
        format!(
            r#"{{"id":"{id}","pk":"p","event":{}1{}}}"#,
            r#"{"a":"#.repeat(levels),
            "}".repeat(levels)
        )
    };
    let brackets = |levels: usize| format!("{}1{}", "[".repeat(levels), "]".repeat(levels));
    // Each document counts its own levels: 127 parse (the page's object
    // and array no longer count), 128 do not. A member named like
    // serde_json's private raw-value marker is data like any other (its
    // `raw_value` feature, which would reinterpret it, is off here).
    let page = format!(
        r#"{{"Documents":[{},{},{{"pk":"p","x":{},"id":"last"}},{{"id":"m","$serde_json::private::RawValue":"not json"}},{{"pk":"p","x":{}}}],"_count":5}}"#,
        deep(126, "fits"),
        deep(127, "too-deep"),
        brackets(5_000),
        brackets(200)
    );
    let q = parse_query(&resp(200, &[], &page)).unwrap();
    assert_eq!(q.items.len(), 2);
    assert_eq!(q.items[0]["id"], "fits");
    assert_eq!(q.items[1]["$serde_json::private::RawValue"], "not json");
    let ids: Vec<_> = q.unparsed.iter().map(|u| u.id.as_deref()).collect();
    // The id is read past a member far deeper than the parser's limit.
    assert_eq!(ids, [Some("too-deep"), Some("last"), None]);
    assert!(
        q.unparsed
            .iter()
            .all(|u| u.reason.contains("recursion limit")),
        "{:?}",
        q.unparsed
    );
}

#[test]
fn same_content_ignores_system_properties_only() {
    let ours = serde_json::json!({"id": "a", "pk": "p", "event": {"n": 1}});
    let stored = serde_json::json!({"id": "a", "pk": "p", "event": {"n": 1}, "_rid": "r", "_etag": "e", "_ts": 5, "_self": "s", "_attachments": "at"});
    assert!(same_content(&stored, &ours));
    let changed = serde_json::json!({"id": "a", "pk": "p", "event": {"n": 2}, "_ts": 5});
    assert!(!same_content(&changed, &ours));
    let extra = serde_json::json!({"id": "a", "pk": "p", "event": {"n": 1}, "x": 1});
    assert!(!same_content(&extra, &ours));
}

#[test]
fn long_messages_are_shortened() {
    let body = format!(
        r#"{{"code":"BadRequest","message":"{}"}}"#,
        "x".repeat(5000)
    );
    match parse_write(&resp(400, &[], &body)).unwrap_err() {
        CosmosError::Rejected(e) => assert_eq!(e.message.len(), MAX_MESSAGE_CHARS),
        other => panic!("{other:?}"),
    }
}
