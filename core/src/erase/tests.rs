//! Tests of [`super`] (`erase`).

use super::*;

fn config(admin: Option<&str>, kek: bool) -> Config {
    crate::testing::maintenance(admin, kek)
}

const KEY: &str = "admin-key-0123456789";

#[test]
fn callers_need_the_admin_key_a_kek_and_a_key_name() {
    let c = config(Some(KEY), true);
    assert_eq!(parse("key=k", None, &c).unwrap_err().status, 401);
    assert_eq!(
        parse("key=k", Some(KEY), &config(Some(KEY), false))
            .unwrap_err()
            .code,
        "KeyNotConfigured"
    );
    assert_eq!(
        parse("key=tenant-b", Some(KEY), &c).unwrap(),
        EraseRequest {
            key: "tenant-b".into(),
            mode: Mode::Count,
            limit: DEFAULT_LIMIT,
            continuation: None
        }
    );
    let d = parse("key=tenant-b&mode=delete&limit=3", Some(KEY), &c).unwrap();
    assert_eq!((d.mode, d.limit), (Mode::Delete, 3));
    for q in [
        "",
        "key=",
        "key=a/b",
        "key=k&mode=purge",
        "key=k&limit=0",
        "key=k&limit=101",
        "key=k&x=1",
        "key=k&mode=delete&continuation=c",
    ] {
        assert_eq!(parse(q, Some(KEY), &c).unwrap_err().status, 400, "{q}");
    }
}

#[test]
fn only_a_key_the_hsm_does_not_have_lets_records_go() {
    assert_eq!(check_gone("k", Ok(())).unwrap_err().code, "KeyStillExists");
    let gone = HsmError::KeyUnavailable {
        reason: Unavailable::NotFound,
        message: "m".into(),
    };
    assert!(check_gone("k", Err(&gone)).is_ok());
    // A disabled key, refused access, or a passing failure decide nothing.
    for e in [
        HsmError::KeyUnavailable {
            reason: Unavailable::Disabled,
            message: "m".into(),
        },
        HsmError::KeyUnavailable {
            reason: Unavailable::AccessDenied,
            message: "m".into(),
        },
        HsmError::Transient {
            status: 503,
            message: "m".into(),
            retry_after_secs: None,
        },
    ] {
        assert_eq!(check_gone("k", Err(&e)).unwrap_err().status, 503, "{e}");
    }
    // A 404 that does not say KeyNotFound (a proxy's page, another pool)
    // is not the key being gone: nothing is removed on it.
    let page = http::Response::builder()
        .status(404)
        .body(b"<html><body>404 Not Found</body></html>".to_vec())
        .unwrap();
    let e = crate::hsm::parse_key(&page).unwrap_err();
    assert_eq!(check_gone("k", Err(&e)).unwrap_err().status, 502, "{e}");
}

#[test]
fn the_query_and_targets_name_only_that_keys_records() {
    let c = config(Some(KEY), true);
    let call = parse("key=tenant-b&limit=5&continuation=tok", Some(KEY), &c).unwrap();
    let req = query_request(
        &call,
        &c,
        c.cosmos.auth.static_credential().unwrap(),
        UnixTime(0),
    )
    .unwrap();
    let body: Value = serde_json::from_slice(req.body()).unwrap();
    assert!(body["query"]
        .as_str()
        .unwrap()
        .contains("STARTSWITH(c.cmk.kid, @p1)"));
    assert_eq!(
        body["parameters"][0]["value"],
        "https://contoso.managedhsm.azure.net/keys/tenant-b/"
    );
    assert_eq!(req.headers()["x-ms-max-item-count"], "5");
    assert_eq!(req.headers()["x-ms-continuation"], "tok");
    assert_eq!(
        kid_prefixes("https://h.example:443", "k"),
        [
            "https://h.example:443/keys/k/".to_owned(),
            "https://h.example/keys/k/".to_owned()
        ]
    );
    let origin = "https://contoso.managedhsm.azure.net";
    let row = |kid: &str| json!({"id": "a", "pk": "/t", "_etag": "\"e\"", "kid": kid});
    let t = target(&row(&format!("{origin}/keys/tenant-b/v1")), &call, origin).unwrap();
    assert_eq!(
        (
            t.id.as_str(),
            t.partition_key.as_str(),
            t.if_match.as_deref()
        ),
        ("a", "/t", Some("\"e\""))
    );
    // Another key (a longer name sharing the prefix, too) is never a target.
    for kid in [
        format!("{origin}/keys/tenant-bb/v1"),
        format!("{origin}/keys/tenant-a/v1"),
        "https://other.managedhsm.azure.net/keys/tenant-b/v1".to_owned(),
    ] {
        assert!(target(&row(&kid), &call, origin).is_none(), "{kid}");
    }
    assert!(target(&json!({"id": "a"}), &call, origin).is_none());
}

#[test]
fn delete_outcomes_and_report() {
    let answer = |status: u16| {
        Ok(Response::builder()
            .status(status)
            .body(br#"{"code":"X","message":"m"}"#.to_vec())
            .unwrap())
    };
    assert!(delete_outcome(answer(204)).unwrap());
    assert!(!delete_outcome(answer(412)).unwrap());
    assert!(!delete_outcome(answer(404)).unwrap());
    assert_eq!(delete_outcome(answer(503)).unwrap_err().status, 503);
    let c = config(Some(KEY), true);
    let call = parse("key=k&mode=delete", Some(KEY), &c).unwrap();
    let r = Report {
        matched: 3,
        deleted: 2,
        conflicts: 1,
        skipped: 1,
    };
    let v: Value =
        serde_json::from_slice(r.render(&call, "KeyNotFound", true, None).body()).unwrap();
    assert_eq!(
        v,
        json!({"key": "k", "keyState": "KeyNotFound", "mode": "delete", "matched": 3, "deleted": 2,
               "conflicts": 1, "skipped": 1, "more": true, "continuation": null})
    );
}

#[test]
fn an_empty_delete_page_with_a_continuation_is_not_the_end() {
    assert!(delete_more(0, true, 50));
    assert!(!delete_more(0, false, 50));
    assert!(delete_more(50, false, 50));
    assert!(!delete_more(49, false, 50));
    assert!(delete_more(3, true, 50));
}
