//! Known-answer and behaviour tests of [`super`] (`seal`).

use super::*;

const KEY: &str = "admin-key-0123456789";
const KID: &str = "https://contoso.managedhsm.azure.net/keys/app-kek/v2";

fn config_with(kek: bool, protected: &str) -> Config {
    let stage = if kek { "2" } else { "1" };
    let mut extra = vec![
        ("admin_keys", KEY),
        ("protected_fields", protected),
        ("cmk_stage", stage),
    ];
    if kek {
        extra.push(("hsm_key_name", "app-kek"));
    }
    crate::testing::config(&extra)
}

fn config() -> Config {
    config_with(
        true,
        r#"{"Visit": ["/data/patient", "/subject"], "*": ["/data"]}"#,
    )
}

fn cred(c: &Config) -> Credential {
    c.cosmos.auth.static_credential().unwrap().clone()
}

/// A record as stored in the first stage (system properties included).
fn stage_one(n: u32, ty: &str) -> Value {
    json!({"id": format!("id-{n}"), "pk": format!("/topics/{}", n % 3), "v": 1, "encoding": "structured",
           "event": {"specversion": "1.0", "id": format!("e{n}"), "source": format!("/topics/{}", n % 3),
                     "type": ty, "subject": format!("subject {n}"),
                     "data": {"patient": format!("Patient {n}"), "bed": n}},
           "_rid": "r", "_self": "s", "_etag": format!("\"etag-{n}\""), "_ts": 1, "_attachments": "a/"})
}

fn counter() -> impl FnMut() -> [u8; 12] {
    let mut i = 0u32;
    move || {
        i += 1;
        let mut n = [0u8; 12];
        n[..4].copy_from_slice(&i.to_be_bytes());
        n
    }
}

fn page_dek() -> Dek {
    Dek::from_bytes(&[5u8; 32]).unwrap()
}

fn sealed_page(items: &[Value], c: &Config, opened: &OpenedKeys) -> Vec<Step> {
    let plans = plan_page(items, c, &cred(c), UnixTime(0));
    let dek = page_dek();
    let key = DeliveryKey {
        dek: &dek,
        kid: KID,
        wrapped_dek: b"page-wrapped",
    };
    seal_page(
        items,
        plans,
        &key,
        opened,
        &mut counter(),
        c,
        &cred(c),
        UnixTime(0),
    )
}

fn replaced(step: &Step) -> &Value {
    match step {
        Step::Replace { body, .. } => body,
        other => panic!("not a replace: {other:?}"),
    }
}

#[test]
fn callers_need_the_admin_key_and_the_second_stage() {
    let c = config();
    assert_eq!(parse("", None, &c).unwrap_err().status, 401);
    assert_eq!(
        parse("", Some("other-key-0123456789"), &c)
            .unwrap_err()
            .status,
        403
    );
    let off = config_with(false, r#"{"*": ["/data"]}"#);
    let e = parse("", Some(KEY), &off).unwrap_err();
    assert_eq!((e.status.as_u16(), e.code), (409, "KeyNotConfigured"));
    assert!(e.message.contains("second stage"));
    assert_eq!(
        parse("limit=7&continuation=%2BRID%3Ax", Some(KEY), &c).unwrap(),
        SealRequest {
            limit: 7,
            continuation: Some("+RID:x".into()),
            key: None
        }
    );
    for q in ["limit=0", "limit=101", "x=1", "key=app-kek"] {
        assert_eq!(parse(q, Some(KEY), &c).unwrap_err().status, 400, "{q}");
    }
}

#[test]
fn the_query_reads_every_record_across_partitions() {
    let c = config();
    let call = SealRequest {
        limit: 9,
        continuation: Some("tok".into()),
        key: None,
    };
    let req = query_request(&call, &c, &cred(&c), UnixTime(0)).unwrap();
    let body: Value = serde_json::from_slice(req.body()).unwrap();
    assert_eq!(body["query"], "SELECT * FROM c");
    let h = req.headers();
    assert_eq!(h["x-ms-documentdb-query-enablecrosspartition"], "True");
    assert_eq!(h["x-ms-max-item-count"], "9");
    assert_eq!(h["x-ms-continuation"], "tok");
}

#[test]
fn stage_one_records_are_sealed_as_the_write_path_seals_them() {
    let c = config();
    let items = vec![stage_one(1, "Visit"), stage_one(2, "Other")];
    let plans = plan_page(&items, &c, &cred(&c), UnixTime(0));
    assert!(
        matches!(&plans[0], Plan::Seal(at) if at.etag == "\"etag-1\"" && at.partition_key == "/topics/1")
    );
    assert!(needs_data_key(&plans));
    assert!(data_keys_to_open(&plans).is_empty());
    let steps = sealed_page(&items, &c, &OpenedKeys::default());
    let visit = replaced(&steps[0]);
    assert_eq!(
        visit["cmk"]["fields"],
        json!(["/event/data/patient", "/event/subject"])
    );
    assert_eq!(visit["cmk"]["kid"], KID);
    assert_eq!(visit["event"]["data"]["bed"], 1, "unprotected fields stay");
    assert!(!visit.to_string().contains("subject 1"));
    let other = replaced(&steps[1]);
    assert_eq!(
        other["event"]["subject"], "subject 2",
        "not protected for this type"
    );
    assert_eq!(other["cmk"]["fields"], json!(["/event/data"]));
    for (doc, orig) in [visit, other].into_iter().zip(&items) {
        let text = doc.to_string();
        assert!(!text.contains("Patient"), "{text}");
        assert!(doc.as_object().unwrap().keys().all(|k| !k.starts_with('_')));
        // Opens to exactly what was stored before, system properties aside.
        assert_eq!(
            envelope::open(doc, &page_dek(), None).unwrap(),
            content(orig)
        );
    }
    // The same as a delivery of these documents would have stored.
    let dek = page_dek();
    let key = DeliveryKey {
        dek: &dek,
        kid: KID,
        wrapped_dek: b"page-wrapped",
    };
    let at = rewrap::locate(&items[0]).unwrap();
    let direct = seal_as_written(
        content(&items[0]),
        &at,
        &key,
        &mut counter(),
        &c,
        &cred(&c),
        UnixTime(0),
    )
    .unwrap();
    assert_eq!(&direct, visit);
}

#[test]
fn a_record_with_none_of_the_fields_still_gets_a_header() {
    let c = config();
    let mut d = stage_one(3, "Visit");
    d["event"].as_object_mut().unwrap().remove("subject");
    d["event"]["data"]
        .as_object_mut()
        .unwrap()
        .remove("patient");
    let steps = sealed_page(&[d.clone()], &c, &OpenedKeys::default());
    let body = replaced(&steps[0]);
    assert_eq!(body["cmk"]["fields"], json!([]));
    assert_eq!(body["event"], d["event"]);
}

#[test]
fn sealed_records_are_left_alone_so_a_second_pass_seals_nothing() {
    let c = config();
    let items = vec![stage_one(1, "Visit"), stage_one(2, "Other")];
    let steps = sealed_page(&items, &c, &OpenedKeys::default());
    let stored: Vec<Value> = steps
        .iter()
        .map(|s| {
            let mut d = replaced(s).clone();
            d["_etag"] = json!("\"new\"");
            d
        })
        .collect();
    let plans = plan_page(&stored, &c, &cred(&c), UnixTime(0));
    assert_eq!(plans, vec![Plan::AlreadySealed, Plan::AlreadySealed]);
    assert!(!needs_data_key(&plans));
    let again = sealed_page(&stored, &c, &OpenedKeys::default());
    assert!(again
        .iter()
        .all(|s| *s == Step::Settled(Outcome::AlreadySealed)));
}

#[test]
fn a_header_missing_a_configured_field_is_opened_and_sealed_again() {
    // Sealed while only /data/patient was protected; now /subject is too.
    let narrow = config_with(true, r#"{"*": ["/data/patient"]}"#);
    let old = replaced(&sealed_page(&[stage_one(4, "Visit")], &narrow, &OpenedKeys::default())[0])
        .clone();
    let mut stored = old.clone();
    stored["_etag"] = json!("\"etag-4b\"");
    let c = config();
    let plans = plan_page(&[stored.clone()], &c, &cred(&c), UnixTime(0));
    let Plan::Reseal(at, h) = &plans[0] else {
        panic!("{plans:?}")
    };
    assert_eq!(at.etag, "\"etag-4b\"");
    assert_eq!(
        data_keys_to_open(&plans),
        vec![(h.kid.clone(), h.wrapped_dek.clone())]
    );
    // Without its data key the record fails and is left as it is.
    let steps = sealed_page(&[stored.clone()], &c, &OpenedKeys::default());
    assert!(matches!(&steps[0], Step::Settled(Outcome::Failed { id: Some(i), .. }) if i == "id-4"));
    let mut opened = OpenedKeys::default();
    opened.add(h.kid.clone(), h.wrapped_dek.clone(), Ok(page_dek()));
    let new_dek = Dek::from_bytes(&[6u8; 32]).unwrap();
    let key = DeliveryKey {
        dek: &new_dek,
        kid: "https://contoso.managedhsm.azure.net/keys/app-kek/v3",
        wrapped_dek: b"new-page",
    };
    let steps = seal_page(
        &[stored.clone()],
        plans,
        &key,
        &opened,
        &mut counter(),
        &c,
        &cred(&c),
        UnixTime(0),
    );
    let Step::Replace {
        body,
        resealed: true,
        ..
    } = &steps[0]
    else {
        panic!("{steps:?}")
    };
    assert_eq!(
        body["cmk"]["fields"],
        json!(["/event/data/patient", "/event/subject"])
    );
    assert!(!body.to_string().contains("subject 4"));
    assert_eq!(
        envelope::open(body, &new_dek, None).unwrap(),
        content(&stage_one(4, "Visit"))
    );
}

#[test]
fn fields_sealed_before_stay_sealed_when_the_configuration_narrows_or_nests() {
    // Sealed whole under `*: /data`; now only /data/patient and /subject.
    let wide = config_with(true, r#"{"*": ["/data"]}"#);
    let mut stored =
        replaced(&sealed_page(&[stage_one(5, "Visit")], &wide, &OpenedKeys::default())[0]).clone();
    stored["_etag"] = json!("\"e\"");
    let c = config();
    let plans = plan_page(&[stored.clone()], &c, &cred(&c), UnixTime(0));
    let Plan::Reseal(_, h) = &plans[0] else {
        panic!("/subject is new: {plans:?}")
    };
    let mut opened = OpenedKeys::default();
    opened.add(h.kid.clone(), h.wrapped_dek.clone(), Ok(page_dek()));
    let steps = seal_page(
        &[stored],
        plans,
        &DeliveryKey {
            dek: &page_dek(),
            kid: KID,
            wrapped_dek: b"w",
        },
        &opened,
        &mut counter(),
        &c,
        &cred(&c),
        UnixTime(0),
    );
    let body = replaced(&steps[0]);
    // /event/data/patient lies inside /event/data, which stays sealed whole.
    assert_eq!(
        body["cmk"]["fields"],
        json!(["/event/data", "/event/subject"])
    );
    assert!(!body.to_string().contains("Patient"));
    // A header covering more than is configured is already sealed.
    let only_patient = config_with(true, r#"{"*": ["/data/patient"]}"#);
    let mut s = body.clone();
    s["_etag"] = json!("\"f\"");
    assert_eq!(
        plan(&s, &only_patient, &cred(&only_patient), UnixTime(0)),
        Plan::AlreadySealed
    );
}

#[test]
fn damaged_records_fail_and_are_left_as_they_are() {
    let c = config();
    let sealed =
        replaced(&sealed_page(&[stage_one(6, "Visit")], &c, &OpenedKeys::default())[0]).clone();
    let mut no_header = sealed.clone();
    no_header.as_object_mut().unwrap().remove("cmk");
    no_header["_etag"] = json!("\"e\"");
    let mut unlisted = sealed.clone();
    unlisted["cmk"]["fields"] = json!(["/event/subject"]);
    unlisted["_etag"] = json!("\"e\"");
    let mut bad_version = sealed.clone();
    bad_version["cmk"]["v"] = json!(9);
    bad_version["_etag"] = json!("\"e\"");
    let mut no_etag = stage_one(7, "Visit");
    no_etag.as_object_mut().unwrap().remove("_etag");
    for (name, d) in [
        ("no header", no_header),
        ("unlisted", unlisted),
        ("version", bad_version),
        ("no etag", no_etag),
    ] {
        let steps = sealed_page(&[d], &c, &OpenedKeys::default());
        let Step::Settled(Outcome::Failed { reason, .. }) = &steps[0] else {
            panic!("{name}: {steps:?}")
        };
        assert!(!reason.contains("Patient"), "{name}: {reason}");
    }
}

#[test]
fn replaces_are_conditional_and_outcomes_add_up() {
    let c = config();
    let steps = sealed_page(&[stage_one(8, "Visit")], &c, &OpenedKeys::default());
    let Step::Replace { at, body, .. } = &steps[0] else {
        panic!()
    };
    let req = replace_request(at, body, &c, &cred(&c), UnixTime(0)).unwrap();
    assert_eq!(req.method(), http::Method::PUT);
    assert_eq!(req.headers()["if-match"], "\"etag-8\"");
    assert_eq!(
        req.headers()["x-ms-documentdb-partitionkey"],
        "[\"/topics/2\"]"
    );
    let answer = |status: u16| {
        Ok(Response::builder()
            .status(status)
            .body(br#"{"code":"X","message":"m"}"#.to_vec())
            .unwrap())
    };
    let ok = Response::builder()
        .status(200)
        .header("etag", "\"e2\"")
        .body(br#"{"id":"a"}"#.to_vec())
        .unwrap();
    assert_eq!(
        replace_outcome(Ok(ok), true, "a").unwrap(),
        Outcome::Sealed { resealed: true }
    );
    assert_eq!(
        replace_outcome(answer(412), false, "a").unwrap(),
        Outcome::Conflict
    );
    assert_eq!(
        replace_outcome(answer(404), false, "a").unwrap(),
        Outcome::Conflict
    );
    assert_eq!(
        replace_outcome(answer(503), false, "a").unwrap_err().status,
        503
    );
    let mut r = Report::default();
    for o in [
        Outcome::Sealed { resealed: false },
        Outcome::Sealed { resealed: true },
        Outcome::AlreadySealed,
        Outcome::Conflict,
        Outcome::Failed {
            id: Some("b".into()),
            reason: "bad".into(),
        },
    ] {
        r.add(o);
    }
    let v: Value = serde_json::from_slice(r.render(Some(KID), Some("c".into())).body()).unwrap();
    assert_eq!(
        v,
        json!({"kid": KID, "scanned": 5, "sealed": 2, "resealed": 1, "alreadySealed": 1,
               "conflicts": 1, "failed": 1, "failedDocuments": [{"id": "b", "reason": "bad"}],
               "continuation": "c"})
    );
}
