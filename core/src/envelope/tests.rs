//! Known-answer and behaviour tests of [`super`] (`envelope`).

use super::*;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

const KID: &str =
    "https://contoso.managedhsm.azure.net/keys/app-kek/0123456789abcdef0123456789abcdef";

fn dek() -> Dek {
    Dek::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap()
}

fn doc() -> Value {
    json!({"id": "c0114e694b0dbc4eff002a3fa6e240759991be2505d38676b32d86010c21c31e", "pk": "/topics/a", "v": 1,
           "event": {"id": "1", "type": "T", "data": {"name": "Ada Lovelace", "ssn": "078-05-1120", "visit": {"ward": 7}, "public": "ok"}}})
}

fn fields() -> Vec<String> {
    vec![
        "/event/data/name".into(),
        "/event/data/ssn".into(),
        "/event/data/visit".into(),
        "/event/data/absent".into(),
    ]
}

fn counter_nonces() -> impl FnMut() -> [u8; 12] {
    let mut i = 0u8;
    move || {
        i += 1;
        [i; 12]
    }
}

fn sealed() -> Value {
    let mut d = doc();
    // The configured fields as the writer resolves them: the absent one
    // names nothing, so it is not passed.
    let done = seal(
        &mut d,
        &fields()[..3],
        &dek(),
        KID,
        b"wrapped-dek-bytes",
        counter_nonces(),
    )
    .unwrap();
    assert_eq!(done, &fields()[..3]);
    d
}

#[test]
fn a_pointer_to_seal_that_names_nothing_is_refused() {
    // The writer resolves pointers before sealing; were the two ever to
    // disagree, the value meant to be sealed must not be stored as it is.
    let mut d = doc();
    let e = seal(
        &mut d,
        &fields(),
        &dek(),
        KID,
        b"wrapped-dek-bytes",
        counter_nonces(),
    )
    .unwrap_err();
    assert!(
        matches!(&e, EnvelopeError::Malformed(m) if m.contains("/event/data/absent")),
        "{e:?}"
    );
}

#[test]
fn sealing_hides_protected_values_and_keeps_the_rest() {
    let d = sealed();
    let text = d.to_string();
    for secret in ["Ada Lovelace", "078-05-1120", "ward"] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
    assert_eq!(d["event"]["data"]["public"], "ok");
    assert_eq!(d["cmk"]["kid"], KID);
    assert_eq!(
        d["cmk"]["fields"],
        json!(["/event/data/name", "/event/data/ssn", "/event/data/visit"])
    );
    assert_eq!(d["event"]["data"]["name"]["cmk"], 1);
}

#[test]
fn known_answer_for_a_fixed_key_and_nonce() {
    // Vector also in docs/record-format.md, for other implementations.
    let d = sealed();
    assert_eq!(d["event"]["data"]["name"]["iv"], "AQEBAQEBAQEBAQEB");
    assert_eq!(d["event"]["data"]["name"]["ct"], KAT_NAME_CT);
}

// Computed independently with Python `cryptography` (AESGCM) from the inputs above.
const KAT_NAME_CT: &str = "VYKBVEjJBxCxOAZ7fUU8GbL8v12UrKpcN7Uu3eiS";

#[test]
fn open_round_trips_and_limits_fields() {
    let d = sealed();
    let opened = open(&d, &dek(), None).unwrap();
    assert_eq!(opened, doc());
    let only = vec!["/event/data/ssn".to_string()];
    let partial = open(&d, &dek(), Some(&only)).unwrap();
    assert_eq!(partial["event"]["data"]["ssn"], "078-05-1120");
    assert_eq!(partial["event"]["data"]["name"]["cmk"], 1);
    let h = header(&d).unwrap().unwrap();
    assert!(needs_key(&h, None));
    assert!(needs_key(&h, Some(&only)));
    let none: Vec<String> = vec!["/event/data/public".into()];
    assert!(!needs_key(&h, Some(&none)));
    let keyless = open_with(&d, None, Some(&none)).unwrap();
    assert_eq!(keyless["event"]["data"]["name"], d["event"]["data"]["name"]);
    assert!(keyless.get("cmk").is_none());
    assert!(open_with(&d, None, Some(&only)).is_err());
    assert!(open_with(&d, None, None).is_err());
}

#[test]
fn moved_or_altered_ciphertext_fails_to_open() {
    let base = sealed();
    let swap = |a: &str, b: &str| {
        let mut d = base.clone();
        let va = d.pointer(a).unwrap().clone();
        let vb = d.pointer(b).unwrap().clone();
        *d.pointer_mut(a).unwrap() = vb;
        *d.pointer_mut(b).unwrap() = va;
        d
    };
    let tampered: Vec<(&str, Value)> = vec![
        (
            "fields swapped",
            swap("/event/data/name", "/event/data/ssn"),
        ),
        ("other id", {
            let mut d = base.clone();
            d["id"] = json!("x");
            d
        }),
        ("other partition", {
            let mut d = base.clone();
            d["pk"] = json!("/topics/b");
            d
        }),
        ("other kid", {
            let mut d = base.clone();
            d["cmk"]["kid"] = json!(KID.replace("0123", "9999"));
            d
        }),
        ("bit flip", {
            let mut d = base.clone();
            let ct = d["event"]["data"]["ssn"]["ct"].as_str().unwrap().to_owned();
            let mut bytes = URL_SAFE_NO_PAD.decode(&ct).unwrap();
            bytes[0] ^= 1;
            d["event"]["data"]["ssn"]["ct"] = json!(URL_SAFE_NO_PAD.encode(bytes));
            d
        }),
    ];
    for (name, d) in tampered {
        assert!(
            matches!(open(&d, &dek(), None), Err(EnvelopeError::Tampered(_))),
            "{name}"
        );
    }
    let wrong_key = Dek::from_bytes(&[9u8; 32]).unwrap();
    assert!(matches!(
        open(&base, &wrong_key, None),
        Err(EnvelopeError::Tampered(_))
    ));
}

#[test]
fn malformed_and_unsupported_records_are_refused() {
    let base = sealed();
    let with = |ptr: &str, v: Value| {
        let mut d = base.clone();
        *d.pointer_mut(ptr).unwrap() = v;
        d
    };
    assert!(matches!(
        open(&with("/cmk/v", json!(2)), &dek(), None),
        Err(EnvelopeError::Unsupported(_))
    ));
    assert!(matches!(
        open(&with("/cmk/alg", json!("A128GCM")), &dek(), None),
        Err(EnvelopeError::Unsupported(_))
    ));
    assert!(matches!(
        open(&with("/cmk/wrap", json!("RSA1_5")), &dek(), None),
        Err(EnvelopeError::Unsupported(_))
    ));
    assert!(matches!(
        open(&with("/cmk/dek", json!("***")), &dek(), None),
        Err(EnvelopeError::Malformed(_))
    ));
    assert!(matches!(
        open(
            &with(
                "/cmk/fields",
                json!(["/event/data/name", "/event/data/name"])
            ),
            &dek(),
            None
        ),
        Err(EnvelopeError::Malformed(_))
    ));
    assert!(matches!(
        open(&with("/event/data/ssn", json!("plain")), &dek(), None),
        Err(EnvelopeError::Malformed(_))
    ));
    assert!(matches!(
        open(&with("/event/data/ssn/iv", json!("AQID")), &dek(), None),
        Err(EnvelopeError::Malformed(_))
    ));
    let mut truncated = base.clone();
    truncated["event"]["data"]
        .as_object_mut()
        .unwrap()
        .remove("visit");
    assert!(matches!(
        open(&truncated, &dek(), None),
        Err(EnvelopeError::Malformed(_))
    ));
    assert_eq!(header(&doc()).unwrap(), None);
    assert!(open(&doc(), &dek(), None).is_err());
    let mut twice = base.clone();
    assert!(seal(&mut twice, &fields(), &dek(), KID, b"w", counter_nonces()).is_err());
    assert!(Dek::from_bytes(&[0u8; 31]).is_err());
}

#[test]
fn rewrap_changes_only_the_header_and_still_opens() {
    let base = sealed();
    let new_kid = KID.replace("0123456789abcdef0123", "fedcba9876543210fedc");
    let r = rewrapped(&base, &new_kid, b"rewrapped-dek").unwrap();
    assert_eq!(r["cmk"]["kid"], json!(new_kid));
    assert_eq!(r["cmk"]["sealedKid"], KID);
    assert_eq!(r["event"], base["event"], "ciphertext is unchanged");
    let h = header(&r).unwrap().unwrap();
    assert_eq!(h.wrapped_dek, b"rewrapped-dek");
    assert_eq!(open(&r, &dek(), None).unwrap(), doc());
    // A second rotation keeps the original sealing version.
    let again = rewrapped(&r, &KID.replace("0123", "4444"), b"third").unwrap();
    assert_eq!(again["cmk"]["sealedKid"], KID);
    assert_eq!(open(&again, &dek(), None).unwrap(), doc());
    // Rewrapping back to the sealing version drops the member.
    let back = rewrapped(&again, KID, b"fourth").unwrap();
    assert!(back["cmk"].get("sealedKid").is_none());
    assert_eq!(open(&back, &dek(), None).unwrap(), doc());
    // The sealing version is authenticated: editing it fails to open.
    let mut edited = r.clone();
    edited["cmk"]["sealedKid"] = json!(new_kid);
    assert!(matches!(
        open(&edited, &dek(), None),
        Err(EnvelopeError::Tampered(_))
    ));
    edited["cmk"]["sealedKid"] = json!("");
    assert!(matches!(
        open(&edited, &dek(), None),
        Err(EnvelopeError::Malformed(_))
    ));
    assert!(rewrapped(&doc(), &new_kid, b"x").is_err());
}

#[test]
fn unlisted_sealed_values_and_padding() {
    let d = sealed();
    assert_eq!(
        sealed_pointers(&d),
        ["/event/data/name", "/event/data/ssn", "/event/data/visit"]
    );
    // The header edited to unlist a field: refused, nothing returned.
    let mut unlisted = d.clone();
    unlisted["cmk"]["fields"] = json!(["/event/data/name", "/event/data/ssn"]);
    // The error names the event member only, not names inside it.
    assert!(matches!(
        open(&unlisted, &dek(), None),
        Err(EnvelopeError::Tampered(p)) if p == "under /event/data"
    ));
    // Padded base64url is read as well.
    let mut padded = d.clone();
    let ct = padded["event"]["data"]["ssn"]["ct"]
        .as_str()
        .unwrap()
        .to_owned();
    let pad = "=".repeat((4 - ct.len() % 4) % 4);
    assert!(
        !pad.is_empty(),
        "the vector's ct needs padding to test this"
    );
    padded["event"]["data"]["ssn"]["ct"] = json!(format!("{ct}{pad}"));
    assert_eq!(open(&padded, &dek(), None).unwrap(), doc());
    // Escaped names and array elements get proper pointers.
    let odd = json!({"id": "x", "a/b": {"cmk": 1, "iv": "", "ct": ""},
                     "l": [0, {"cmk": 1, "iv": "", "ct": ""}], "cmk": {"cmk": 1, "iv": "", "ct": ""}});
    assert_eq!(sealed_pointers(&odd), ["/a~1b", "/l/1"]);
}

#[test]
fn pointers_resolve_with_wildcards_and_report_other_shapes() {
    let d = json!({"data": {"items": [{"ssn": 1}, {"x": 2}, {"ssn": null}], "s": "t", "n": null, "a~b": {"c/d": 1}}});
    assert_eq!(
        resolve(&d, "/data/items/*/ssn").unwrap(),
        ["/data/items/0/ssn", "/data/items/2/ssn"]
    );
    assert_eq!(resolve(&d, "/data/items/1/x").unwrap(), ["/data/items/1/x"]);
    assert_eq!(resolve(&d, "/data/items/01/x").unwrap_err().found, "array");
    assert_eq!(
        resolve(&d, "/data/items/9/x").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(resolve(&d, "/data/a~0b/c~1d").unwrap(), ["/data/a~0b/c~1d"]);
    assert_eq!(resolve(&d, "/data/absent/x").unwrap(), Vec::<String>::new());
    assert_eq!(resolve(&d, "/data/n/x").unwrap(), Vec::<String>::new());
    let m = resolve(&d, "/data/s/x").unwrap_err();
    assert_eq!(
        (m.at.as_str(), m.found, m.pointer.as_str()),
        ("/data/s", "string", "/data/s/x")
    );
    assert_eq!(resolve(&d, "/data/items/ssn").unwrap_err().found, "array");
    assert_eq!(resolve(&d, "/data/*").unwrap_err().found, "object");
}

#[test]
fn readers_check_the_key_and_every_configured_field() {
    let d = sealed();
    let h = header(&d).unwrap().unwrap();
    let hsm = "https://contoso.managedhsm.azure.net";
    let protected: Vec<String> = fields();
    let expect = Expect {
        hsm,
        key_name: "app-kek",
        protected: &protected,
    };
    assert_eq!(check_expected(&d, &h, &expect), Ok(()));
    // A sealed value planted under a name that may be data: refused, and
    // named by its event member only.
    let mut planted = d.clone();
    planted["event"]["data"]["Jane Roe 078-05-1120"] = d["event"]["data"]["ssn"].clone();
    assert_eq!(
        check_expected(&planted, &h, &expect),
        Err(EnvelopeError::Tampered("under /event/data".into()))
    );
    assert!(kid_belongs(
        KID,
        "https://contoso.managedhsm.azure.net:443",
        "app-kek"
    ));
    for (hsm, key) in [
        ("https://other.managedhsm.azure.net", "app-kek"),
        ("https://contoso.managedhsm.azure.net", "app"),
        ("https://contoso.managedhsm.azure", "app-kek"),
    ] {
        let e = Expect {
            hsm,
            key_name: key,
            protected: &protected,
        };
        assert!(
            matches!(check_expected(&d, &h, &e), Err(EnvelopeError::Tampered(_))),
            "{hsm} {key}"
        );
    }
    assert!(!kid_belongs(
        "https://contoso.managedhsm.azure.net/keys/app-kek/",
        hsm,
        "app-kek"
    ));
    assert!(!kid_belongs(
        "https://contoso.managedhsm.azure.net/keys/app-kek/v/x",
        hsm,
        "app-kek"
    ));
    // A forged header listing no field, over plaintext: refused.
    let mut forged = doc();
    seal_nothing(&mut forged, KID).unwrap();
    let fh = header(&forged).unwrap().unwrap();
    assert!(fh.wrapped_dek.is_empty());
    assert!(
        matches!(check_expected(&forged, &fh, &expect), Err(EnvelopeError::Tampered(p)) if p.contains("/event/data/name"))
    );
    // The same header where the configuration protects nothing present opens.
    let none: Vec<String> = vec!["/event/data/absent".into()];
    let e = Expect {
        hsm,
        key_name: "app-kek",
        protected: &none,
    };
    assert_eq!(check_expected(&forged, &fh, &e), Ok(()));
    assert_eq!(open_with(&forged, None, None).unwrap(), doc());
    // A field sealed whole covers the pointers inside it.
    let inside: Vec<String> = vec!["/event/data/visit/ward".into()];
    let e = Expect {
        hsm,
        key_name: "app-kek",
        protected: &inside,
    };
    assert_eq!(check_expected(&d, &h, &e), Ok(()));
    // Another shape inside a field sealed whole is no concern either.
    let star: Vec<String> = vec!["/event/data/visit/*/x".into()];
    let e = Expect {
        hsm,
        key_name: "app-kek",
        protected: &star,
    };
    assert_eq!(check_expected(&d, &h, &e), Ok(()));
    // Under a header listing no field: a wildcard branch of another
    // shape does not hide its plaintext siblings, and a value of another
    // shape where a field is protected (which the writer refuses) is
    // tampered too.
    let items: Vec<String> = vec!["/event/data/items/*/ssn".into()];
    let e = Expect {
        hsm,
        key_name: "app-kek",
        protected: &items,
    };
    for data in [
        json!({"items": [{"ssn": "078-05-1120"}, "x"]}),
        json!({"items": ["x", {"ssn": "078-05-1120"}]}),
        json!({"items": ["x"]}),
        json!({"items": "ssn=078-05-1120"}),
        json!("ssn=078-05-1120"),
    ] {
        let mut f = doc();
        f["event"]["data"] = data.clone();
        seal_nothing(&mut f, KID).unwrap();
        let fh = header(&f).unwrap().unwrap();
        assert!(
            matches!(check_expected(&f, &fh, &e), Err(EnvelopeError::Tampered(_))),
            "{data}"
        );
    }
    // `null` and an absent member stay "nothing there".
    for data in [
        json!({"items": null}),
        json!({"items": [null, {}]}),
        json!(null),
    ] {
        let mut f = doc();
        f["event"]["data"] = data.clone();
        seal_nothing(&mut f, KID).unwrap();
        let fh = header(&f).unwrap().unwrap();
        assert_eq!(check_expected(&f, &fh, &e), Ok(()), "{data}");
    }
    // A key-less header must list no field.
    let mut bad = d.clone();
    bad["cmk"].as_object_mut().unwrap().remove("dek");
    assert!(matches!(header(&bad), Err(EnvelopeError::Malformed(_))));
    // Rewrapping a key-less header moves only its kid.
    let moved = rewrapped(&forged, &KID.replace("0123", "4444"), &[]).unwrap();
    assert_eq!(moved["cmk"]["kid"], json!(KID.replace("0123", "4444")));
    assert!(moved["cmk"].get("dek").is_none() && moved["cmk"].get("sealedKid").is_none());
}

#[test]
fn headers_and_plaintext_are_read_strictly() {
    let base = sealed();
    let with = |ptr: &str, v: Value| {
        let mut d = base.clone();
        *d.pointer_mut(ptr).unwrap() = v;
        d
    };
    for (d, want) in [
        (with("/cmk", Value::Null), "Malformed"),
        (with("/cmk", json!([])), "Malformed"),
        (with("/cmk/v", json!("1")), "Unsupported"),
        (with("/cmk/v", json!(1.0)), "Unsupported"),
        (with("/cmk/fields", json!(["event/data/name"])), "Malformed"),
        (
            with("/cmk/fields", json!(["/event/data/n~2ame"])),
            "Malformed",
        ),
        (with("/id", json!(7)), "Malformed"),
        (with("/pk", Value::Null), "Malformed"),
        (
            {
                let mut d = base.clone();
                d["cmk"]["extra"] = json!(1);
                d
            },
            "Malformed",
        ),
    ] {
        let got = open(&d, &dek(), None);
        let kind = match &got {
            Err(EnvelopeError::Malformed(_)) => "Malformed",
            Err(EnvelopeError::Unsupported(_)) => "Unsupported",
            other => panic!("{other:?}"),
        };
        assert_eq!(kind, want, "{}", d["cmk"]);
    }
    assert_eq!(
        parse_plaintext(b"{\"a\":1,\"b\":[1,2.5,null]}"),
        Some(json!({"a": 1, "b": [1, 2.5, null]}))
    );
    for bad in [
        &b"{\"a\":1,\"a\":2}"[..],
        b"NaN",
        b"\"\xff\"",
        b"[1,]",
        b"1 2",
    ] {
        assert_eq!(
            parse_plaintext(bad),
            None,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    // Non-canonical trailing bits and the standard alphabet are not base64url.
    let ct = base["event"]["data"]["ssn"]["ct"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut last = ct.clone().into_bytes();
    let i = last.len() - 1;
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let pos = alphabet.iter().position(|c| *c == last[i]).unwrap();
    last[i] = alphabet[pos ^ 1];
    let d = with(
        "/event/data/ssn/ct",
        json!(String::from_utf8(last).unwrap()),
    );
    assert!(matches!(
        open(&d, &dek(), None),
        Err(EnvelopeError::Malformed(_))
    ));
    let d = with("/event/data/ssn/iv", json!("AQEBAQEBAQEBAQE+"));
    assert!(matches!(
        open(&d, &dek(), None),
        Err(EnvelopeError::Malformed(_))
    ));
}

#[test]
fn associated_data_layout() {
    let aad = associated_data("i", "pk", "/p", "k");
    let mut want = b"cmk-ingest/field/v1\0".to_vec();
    for part in ["i", "pk", "/p", "k"] {
        want.extend_from_slice(&(part.len() as u32).to_be_bytes());
        want.extend_from_slice(part.as_bytes());
    }
    assert_eq!(aad, want);
}

#[test]
fn the_key_name_of_a_kid_is_read_only_under_the_configured_hsm() {
    let hsm = "https://contoso.managedhsm.azure.net";
    assert_eq!(
        key_name_of(&format!("{hsm}/keys/tenant-a/0b2d"), hsm),
        Some("tenant-a")
    );
    assert_eq!(
        key_name_of(&format!("{hsm}/keys/tenant-a/0b2d"), &format!("{hsm}:443")),
        Some("tenant-a")
    );
    for kid in [
        "https://other.managedhsm.azure.net/keys/tenant-a/0b2d".to_owned(),
        format!("{hsm}/keys/tenant-a/"),
        format!("{hsm}/keys/tenant-a"),
        format!("{hsm}/keys/tenant-a/v/x"),
        format!("{hsm}/secrets/tenant-a/0b2d"),
        format!("{hsm}/keys//0b2d"),
    ] {
        assert_eq!(key_name_of(&kid, hsm), None, "{kid}");
    }
}

#[test]
fn pointer_lookups_find_what_serde_json_finds() {
    let v = json!({"a": {"b/c": [10, {"~d": 1, "": 2}], "0": "zero"}, "": {"": 3}, "e~1": 4});
    for p in [
        "",
        "/",
        "//",
        "/a",
        "/a/b~1c",
        "/a/b~1c/0",
        "/a/b~1c/1/~0d",
        "/a/b~1c/1/",
        "/a/b~1c/01",
        "/a/b~1c/+1",
        "/a/b~1c/2",
        "/a/b~1c/-",
        "/a/0",
        "/e~01",
        "/e~1",
        "a",
        "/x/y",
        "/a/b~1c/0/z",
    ] {
        assert_eq!(lookup(&v, p), v.pointer(p), "{p}");
        let mut ours = v.clone();
        let mut theirs = v.clone();
        assert_eq!(lookup_mut(&mut ours, p), theirs.pointer_mut(p), "{p}");
    }
}
