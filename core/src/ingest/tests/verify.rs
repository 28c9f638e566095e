//! Tests of create mode's verification.

use super::*;

#[test]
fn create_mode_never_upserts() {
    let Plan::Write(w) = plan(
        Some("application/json"),
        &[],
        &body(json!([
            event_in("1", "/a"),
            event_in("2", "/a"),
            event_in("3", "/b")
        ])),
        &create_config(),
        &cred(),
        UnixTime(0),
    )
    .unwrap() else {
        panic!()
    };
    let ops: Value = serde_json::from_slice(w.units[0].request.body()).unwrap();
    assert_eq!(ops[0]["operationType"], "Create");
    assert!(w.units[1]
        .request
        .headers()
        .get("x-ms-documentdb-is-upsert")
        .is_none());
    let one = create_request(&w.documents[0], &create_config(), &cred(), UnixTime(0)).unwrap();
    assert!(one.headers().get("x-ms-documentdb-is-upsert").is_none());
    assert_eq!(
        read_request(&w.documents[0], &create_config(), &cred(), UnixTime(0))
            .uri()
            .path(),
        format!("/dbs/db/colls/events/docs/{}", w.documents[0].id)
    );
}

#[test]
fn conflicts_are_recognised_in_both_forms() {
    let w = writes(vec![
        event_in("1", "/a"),
        event_in("2", "/a"),
        event_in("3", "/b"),
    ]);
    let batch409 = Ok(Response::builder()
        .status(207)
        .body(br#"[{"statusCode":424},{"statusCode":409}]"#.to_vec())
        .unwrap());
    let single409 = Ok(Response::builder().status(409).body(Vec::new()).unwrap());
    assert!(is_conflict(
        &unit_outcome(&w.units[0], batch409).unwrap_err()
    ));
    assert!(is_conflict(
        &unit_outcome(&w.units[1], single409).unwrap_err()
    ));
    let throttled = Ok(Response::builder()
        .status(207)
        .body(br#"[{"statusCode":429},{"statusCode":424}]"#.to_vec())
        .unwrap());
    assert!(!is_conflict(
        &unit_outcome(&w.units[0], throttled).unwrap_err()
    ));
}

#[test]
fn a_stored_document_is_verified_not_overwritten() {
    let w = writes(vec![event("1")]);
    let ours = &w.documents[0];
    let mut stored = ours.body.clone();
    stored["_rid"] = json!("r");
    stored["_etag"] = json!("\"e\"");
    stored["_ts"] = json!(5);
    assert!(verify_stored(ours, read_answer(200, &stored)).is_ok());
    stored["event"]["data"]["a"] = json!(2);
    assert_eq!(
        verify_stored(ours, read_answer(200, &stored)).unwrap_err(),
        CosmosError::ExistsWithOtherContent {
            id: ours.id.clone()
        }
    );
    assert_eq!(
        ApiError::from(&CosmosError::ExistsWithOtherContent { id: "x".into() }).status,
        409
    );
    let gone = read_answer(404, &json!({"code": "NotFound", "message": "m"}));
    assert!(verify_stored(ours, gone).unwrap_err().is_transient());
}

#[test]
fn a_redelivery_sealed_under_a_fresh_key_matches_its_stored_document() {
    let protected =
        crate::config::ProtectedFields::parse(r#"{"*": ["/data"]}"#, "/source").unwrap();
    let seal_with = |key_byte: u8, events: Vec<Value>| {
        let dek = crate::envelope::Dek::from_bytes(&[key_byte; 32]).unwrap();
        let mut n = key_byte;
        let mut nonce = || {
            n = n.wrapping_add(1);
            [n; 12]
        };
        let key = DeliveryKey {
            dek: &dek,
            kid: "https://h.managedhsm.azure.net/keys/k/v1",
            wrapped_dek: &[key_byte; 8],
        };
        seal(
            writes(events).documents,
            &protected,
            &key,
            &mut nonce,
            &config(),
            &cred(),
            UnixTime(0),
        )
        .unwrap()
        .documents
        .remove(0)
        .body
    };
    let first = seal_with(1, vec![event("1")]);
    let again = seal_with(9, vec![event("1")]);
    assert_ne!(first, again, "fresh key and nonces");
    assert!(stored_matches(&first, &again));
    // Unsealed members must still agree.
    let mut changed = event("1");
    changed["subject"] = json!("other");
    assert!(!stored_matches(&first, &seal_with(9, vec![changed])));
    // A sealed and an unsealed form of the event do not match.
    assert!(!stored_matches(
        &first,
        &writes(vec![event("1")]).documents[0].body
    ));
    // Nor does a different set of sealed fields.
    let mut other = again.clone();
    other["cmk"]["fields"] = json!([]);
    assert!(!stored_matches(&first, &other));
}

#[test]
fn create_mode_reports_conflicts_per_document() {
    let w = writes(vec![event_in("1", "/a"), event_in("2", "/b")]);
    let conflict = |statuses: Vec<u16>| {
        Ok(UnitWritten {
            statuses,
            metrics: Metrics::default(),
        })
    };
    // One new, one conflicting: 200, the conflict reported; a
    // redelivery (the first now already there) gets the same answer.
    for first in [201, 200] {
        let (r, _) = respond(&w, vec![conflict(vec![first]), conflict(vec![CONFLICT])]);
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(
            (v["accepted"].clone(), v["conflicts"].clone()),
            (json!(1), json!(1))
        );
        assert_eq!(v["documents"][1]["status"], 409);
        assert_eq!(v["documents"][1]["code"], "DocumentConflict");
        assert!(v["documents"][0].get("code").is_none());
    }
    // Nothing of the delivery could be stored: 409 as a whole.
    let (r, _) = respond(&w, vec![conflict(vec![CONFLICT]), conflict(vec![CONFLICT])]);
    assert_eq!(r.status(), 409);
    let v: Value = serde_json::from_slice(r.body()).unwrap();
    assert_eq!(v["error"]["code"], "DocumentConflict");
    // A retryable failure still outranks everything.
    let (r, _) = respond(
        &w,
        vec![
            conflict(vec![CONFLICT]),
            Err(CosmosError::Transport("reset".into())),
        ],
    );
    assert_eq!(r.status(), 503);
}
