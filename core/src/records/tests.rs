//! Known-answer and behaviour tests of [`super`] (`records`).

use super::*;

fn config(read_keys: Option<&str>) -> Config {
    Config::load(|name| {
        Ok(match name {
            "cosmos_endpoint" => Some("http://127.0.0.1:8081".into()),
            "cosmos_database" => Some("db".into()),
            "cosmos_container" => Some("events".into()),
            "cosmos_key" => Some("c2VjcmV0".into()),
            "read_keys" => read_keys.map(str::to_owned),
            _ => None,
        })
    })
    .unwrap()
}

const KEY: &str = "reader-key-0123456789";

/// A document id (64 lowercase hex digits).
macro_rules! id {
    () => {
        "c0114e694b0dbc4eff002a3fa6e240759991be2505d38676b32d86010c21c31e"
    };
}

#[test]
fn callers_need_the_read_key() {
    let c = config(Some(KEY));
    assert_eq!(
        parse(concat!("/records/p/", id!()), None, &c)
            .unwrap_err()
            .status,
        401
    );
    assert_eq!(
        parse(
            concat!("/records/p/", id!()),
            Some("wrong-key-0123456789"),
            &c
        )
        .unwrap_err()
        .status,
        403
    );
    assert!(parse(concat!("/records/p/", id!()), Some(KEY), &c).is_ok());
    let off = config(None);
    assert_eq!(
        parse(concat!("/records/p/", id!()), Some(KEY), &off)
            .unwrap_err()
            .code,
        "ReadDisabled"
    );
}

#[test]
fn paths_and_parameters() {
    let c = config(Some(KEY));
    assert_eq!(
        parse(concat!("/records/%2Ftopics%2Fa/", id!()), Some(KEY), &c).unwrap(),
        ReadRequest::One {
            partition_key: "/topics/a".into(),
            id: id!().into()
        }
    );
    assert_eq!(
        parse(
            "/records/%2Ft?type=A.B&limit=5&continuation=%2BRID%3Ax",
            Some(KEY),
            &c
        )
        .unwrap(),
        ReadRequest::Page {
            partition_key: "/t".into(),
            event_type: Some("A.B".into()),
            limit: 5,
            continuation: Some("+RID:x".into())
        }
    );
    for bad in [
        "/records/",
        "/records/a/b/c",
        "/records/%zz",
        "/records/p?limit=0",
        "/records/p?limit=101",
        "/records/p?x=1",
        concat!("/records/p/", id!(), "?type=x"),
        concat!("/records/p/", id!(), "?fields=/x&limit=2"),
    ] {
        assert_eq!(parse(bad, Some(KEY), &c).unwrap_err().status, 400, "{bad}");
    }
}

#[test]
fn erasure_needs_the_admin_key_and_passes_if_match_through() {
    let c = Config::load(|name| {
        Ok(match name {
            "cosmos_endpoint" => Some("http://127.0.0.1:8081".into()),
            "cosmos_database" => Some("db".into()),
            "cosmos_container" => Some("events".into()),
            "cosmos_key" => Some("c2VjcmV0".into()),
            "read_keys" => Some(KEY.into()),
            "admin_keys" => Some("admin-key-0123456789".into()),
            _ => None,
        })
    })
    .unwrap();
    let admin = Some("admin-key-0123456789");
    assert_eq!(
        parse_delete_request(concat!("/records/p/", id!()), None, None, &c)
            .unwrap_err()
            .status,
        401
    );
    // The read key does not erase.
    assert_eq!(
        parse_delete_request(concat!("/records/p/", id!()), Some(KEY), None, &c)
            .unwrap_err()
            .status,
        403
    );
    assert_eq!(
        parse_delete_request(
            concat!("/records/p/", id!()),
            admin,
            None,
            &config(Some(KEY))
        )
        .unwrap_err()
        .code,
        "AdminDisabled"
    );
    let d = parse_delete_request(
        concat!("/records/%2Ft/", id!()),
        admin,
        Some(" \"e1\" "),
        &c,
    )
    .unwrap();
    assert_eq!(
        d,
        DeleteRequest {
            partition_key: "/t".into(),
            id: id!().into(),
            if_match: Some("\"e1\"".into())
        }
    );
    let req = delete_request(
        &d,
        &c,
        c.cosmos.auth.static_credential().unwrap(),
        UnixTime(0),
    )
    .unwrap();
    assert_eq!(req.method(), http::Method::DELETE);
    assert_eq!(
        req.uri().path(),
        concat!("/dbs/db/colls/events/docs/", id!())
    );
    assert_eq!(req.headers()["if-match"], "\"e1\"");
    for bad in [
        "/records/p",
        concat!("/records/p/", id!(), "/b"),
        "/records/p/",
        concat!("/records/p/", id!(), "?x=1"),
        concat!("/records/%zz/", id!()),
        "/records/p/a%20b",
        concat!("/records/%1B/", id!()),
    ] {
        assert_eq!(
            parse_delete_request(bad, admin, None, &c)
                .unwrap_err()
                .status,
            400,
            "{bad}"
        );
    }
    let answer_after = |status: u16, attempts: u32| {
        delete_answer(
            Ok(Response::builder().status(status).body(Vec::new()).unwrap()),
            attempts,
        )
    };
    let answer = |status: u16| answer_after(status, 1);
    assert_eq!(answer(204).unwrap().0.status(), 204);
    assert_eq!(answer(404).unwrap_err().code, "RecordNotFound");
    // A retried delete that finds nothing: an earlier attempt erased it.
    assert_eq!(answer_after(404, 2).unwrap().0.status(), 204);
    assert_eq!(answer(412).unwrap_err().status, 412);
    assert_eq!(answer(429).unwrap_err().status, 503);
}

#[test]
fn fields_select_what_is_opened() {
    let c = config(Some(KEY));
    assert!(parse(
        concat!("/records/p/", id!(), "?fields=/event/data/ssn"),
        Some(KEY),
        &c
    )
    .is_ok());
    assert!(parse("/records/p?fields=&limit=3", Some(KEY), &c).is_ok());
    assert_eq!(fields(concat!("/records/p/", id!())).unwrap(), None);
    assert_eq!(fields("/records/p/a?fields=").unwrap(), Some(vec![]));
    assert_eq!(
        fields("/records/p?fields=/event/data/a,%2Fevent%2Fdata%2Fb&fields=/x%2Cy&fields=/x%2Cy")
            .unwrap(),
        Some(vec![
            "/event/data/a".into(),
            "/event/data/b".into(),
            "/x,y".into()
        ])
    );
    for q in ["?fields=event", "?fields=%zz"] {
        assert_eq!(
            fields(&format!("/records/p{q}")).unwrap_err().status,
            400,
            "{q}"
        );
    }
}

#[test]
fn page_queries_are_parameterized() {
    let c = config(Some(KEY));
    let r = parse("/records/p%27%20OR%201%3D1?type=T", Some(KEY), &c).unwrap();
    let req = request(
        &r,
        &c,
        c.cosmos.auth.static_credential().unwrap(),
        UnixTime(0),
    )
    .unwrap();
    let body: Value = serde_json::from_slice(req.body()).unwrap();
    assert_eq!(
        body["query"],
        "SELECT * FROM c WHERE c.pk = @pk AND c.event.type = @type"
    );
    assert_eq!(body["parameters"][0]["value"], "p' OR 1=1");
}

#[test]
fn a_page_reports_unreadable_records_beside_the_readable_ones() {
    let page = Answer::Page(
        vec![json!({"id": "a", "_rid": "r"})],
        Some("c".into()),
        vec![Unreadable {
            id: json!("b"),
            code: "RecordTampered",
            message: "m".into(),
        }],
    );
    let r = render(page);
    assert_eq!(r.status(), 200);
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(
        v,
        json!({"records": [{"id": "a"}], "continuation": "c",
               "unreadable": [{"id": "b", "error": {"code": "RecordTampered", "message": "m"}}]})
    );
}

#[test]
fn answers_hide_system_properties_and_map_not_found() {
    let read = ReadRequest::One {
        partition_key: "p".into(),
        id: "a".into(),
    };
    let ok = Response::builder()
        .status(200)
        .header("etag", "\"e\"")
        .body(br#"{"id":"a","_rid":"r","_self":"s","_etag":"\"e\"","_ts":1}"#.to_vec())
        .unwrap();
    let r = parse_answer(&read, Ok(ok)).map(render).unwrap();
    assert_eq!(r.headers()["etag"], "\"e\"");
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v, json!({"id": "a", "_etag": "\"e\"", "_ts": 1}));
    let missing = Response::builder()
        .status(404)
        .body(br#"{"code":"NotFound","message":"gone"}"#.to_vec())
        .unwrap();
    assert_eq!(
        parse_answer(&read, Ok(missing))
            .map(render)
            .unwrap_err()
            .status,
        404
    );
}
