//! Sealing as text against the tree path ([`crate::envelope::Sealer::seal`])
//! and [`crate::envelope::open`].

use crate::compact_json;
use crate::envelope::{lookup_mut, open, Dek, Sealer, HEADER};
use serde_json::{json, Value};

// A key version and pointers with characters JSON must escape.
const KID: &str = "https://contoso.managedhsm.azure.net/keys/app-kek/0123456789abcdef\"\\";

fn dek() -> Dek {
    Dek::from_bytes(&[7u8; 32]).unwrap()
}

fn doc() -> Value {
    json!({"id": "4b0dbc4eff002a3f", "pk": "/topics/\"a\"", "v": 1,
           "event": {"id": "1", "data": {"name": "Ada\nLovelace", "we\"ird~/": [1, 2.5, {"z": null, "a": "é"}],
                     "visit": {"ward": 7, "at": "2026"}, "public": "ok"}}})
}

const POINTERS: [&str; 3] = [
    "/event/data/name",
    "/event/data/we\"ird~0~1",
    "/event/data/visit",
];

fn nonce(i: usize) -> [u8; 12] {
    [i as u8 + 1; 12]
}

/// The document sealed by text: each value's canonical text sealed and
/// parsed back into its place, the header likewise; and the texts.
fn sealed_by_text(sealer: &Sealer<'_>) -> (Value, Vec<Vec<u8>>, Vec<u8>) {
    let mut d = doc();
    let (id, pk) = (
        d["id"].as_str().unwrap().to_owned(),
        d["pk"].as_str().unwrap().to_owned(),
    );
    let one = sealer.document(&id, &pk);
    let mut texts = Vec::new();
    for (i, p) in POINTERS.iter().enumerate() {
        let slot = lookup_mut(&mut d, p).unwrap();
        let mut out = b"(".to_vec();
        one.seal_text(p, &compact_json::to_vec(slot), nonce(i), &mut out);
        // Appends, and leaves what was there.
        assert_eq!(out[0], b'(');
        let text = out[1..].to_vec();
        *slot = serde_json::from_slice(&text).unwrap();
        texts.push(text);
    }
    let mut header = Vec::new();
    sealer.header_text(&POINTERS, &mut header);
    d.as_object_mut()
        .unwrap()
        .insert(HEADER.into(), serde_json::from_slice(&header).unwrap());
    (d, texts, header)
}

#[test]
fn text_sealing_writes_what_the_tree_path_writes_byte_for_byte() {
    let sealer = Sealer::new(&dek(), KID, b"wrapped key bytes");
    let (by_text, texts, header) = sealed_by_text(&sealer);
    let mut by_tree = doc();
    let mut n = 0;
    let pointers: Vec<String> = POINTERS.iter().map(|p| p.to_string()).collect();
    sealer
        .seal(&mut by_tree, &pointers, || {
            n += 1;
            nonce(n - 1)
        })
        .unwrap();
    assert_eq!(by_text, by_tree);
    // The texts are the canonical forms of the tree path's values.
    for (p, text) in POINTERS.iter().zip(&texts) {
        assert_eq!(
            text,
            &compact_json::to_vec(lookup_mut(&mut by_tree, p).unwrap())
        );
    }
    assert_eq!(header, compact_json::to_vec(&by_tree[HEADER]));
}

#[test]
fn text_sealed_documents_open_and_bind_their_place() {
    let sealer = Sealer::new(&dek(), KID, b"wrapped key bytes");
    let (sealed, _, _) = sealed_by_text(&sealer);
    assert_ne!(
        sealed["event"]["data"]["name"],
        doc()["event"]["data"]["name"]
    );
    // Opening gives the document back as it was, without the header.
    assert_eq!(open(&sealed, &dek(), None).unwrap(), doc());
    // A value sealed for one pointer does not open at another, nor under
    // another document id.
    let mut moved = sealed.clone();
    let v = moved["event"]["data"]["name"].clone();
    moved["event"]["data"]["visit"] = v;
    assert!(open(&moved, &dek(), None).is_err());
    let mut renamed = sealed;
    renamed["id"] = json!("another");
    assert!(open(&renamed, &dek(), None).is_err());
}
