//! Known-answer and behaviour tests of [`super`] (`request`).

use super::*;

fn batch_of(
    b: &CosmosRequest,
    c: &ContainerLink,
    docs: &[&serde_json::Value],
    op: BatchOperation,
) -> Result<Request<Vec<u8>>, CosmosError> {
    let bodies: Vec<Vec<u8>> = docs
        .iter()
        .map(|d| serde_json::to_vec(d).unwrap())
        .collect();
    let refs: Vec<&[u8]> = bodies.iter().map(Vec::as_slice).collect();
    b.batch(c, "p", &refs, op)
}
use crate::cosmos::{master_key_signature, MasterKey};

fn key() -> MasterKey {
    MasterKey::from_base64(
        "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
    )
    .unwrap()
}

#[test]
fn upsert_request_is_signed_over_what_it_sends() {
    let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
    let cred = Credential::MasterKey(key());
    let now = UnixTime(1_795_480_119);
    let c = ContainerLink::new("wiredb", "items");
    let req = CosmosRequest::new(&endpoint, &cred, now)
        .upsert_document(&c, "p1", b"{\"id\":\"a\"}".to_vec())
        .unwrap();
    assert_eq!(req.method(), Method::POST);
    assert_eq!(
        req.uri().to_string(),
        "http://127.0.0.1:8081/dbs/wiredb/colls/items/docs"
    );
    let h = req.headers();
    assert_eq!(h["x-ms-date"], "Tue, 24 Nov 2026 00:28:39 GMT");
    assert_eq!(h["x-ms-version"], API_VERSION);
    assert_eq!(h["x-ms-documentdb-partitionkey"], "[\"p1\"]");
    assert_eq!(h["x-ms-documentdb-is-upsert"], "True");
    assert_eq!(h["content-length"], "10");
    // The answer carries status and headers only, as with the SDKs'
    // content response on write turned off.
    assert_eq!(h["prefer"], "return=minimal");
    assert_eq!(
        h["authorization"],
        master_key_signature(
            &key(),
            "POST",
            "docs",
            "dbs/wiredb/colls/items",
            "Tue, 24 Nov 2026 00:28:39 GMT"
        )
        .as_str()
    );
    // The Python SDK's on-the-wire signature for this exact request.
    assert!(h["authorization"]
        .to_str()
        .unwrap()
        .ends_with("tHeGybDBswPVyKtqaEbkC%2BZIWtIrYZU8b1f7FzZWl58%3D"));
}

#[test]
fn create_has_no_upsert_header() {
    let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
    let cred = Credential::MasterKey(key());
    let req = CosmosRequest::new(&endpoint, &cred, UnixTime(0))
        .create_document(&ContainerLink::new("d", "c"), "p", b"{}".to_vec())
        .unwrap();
    assert!(req.headers().get("x-ms-documentdb-is-upsert").is_none());
    assert_eq!(req.headers()["prefer"], "return=minimal");
}

#[test]
fn oversized_documents_are_refused_before_sending() {
    let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
    let cred = Credential::MasterKey(key());
    let err = CosmosRequest::new(&endpoint, &cred, UnixTime(0))
        .upsert_document(
            &ContainerLink::new("d", "c"),
            "p",
            vec![b' '; MAX_DOCUMENT_BYTES + 1],
        )
        .unwrap_err();
    assert!(matches!(err, CosmosError::DocumentTooLarge { .. }));
}

#[test]
fn item_operations_are_signed_over_the_document_link() {
    let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
    let cred = Credential::MasterKey(key());
    let b = CosmosRequest::new(&endpoint, &cred, UnixTime(1_795_480_119));
    let c = ContainerLink::new("wiredb", "items");
    let read = b.read_document(&c, "a", "p1");
    assert_eq!(read.method(), Method::GET);
    assert_eq!(read.uri().path(), "/dbs/wiredb/colls/items/docs/a");
    assert_eq!(read.headers()["x-ms-documentdb-partitionkey"], "[\"p1\"]");
    // The Python SDK's on-the-wire signature for GET docs/a at this date.
    assert!(read.headers()["authorization"]
        .to_str()
        .unwrap()
        .ends_with("%2Bk66SR9KVHzN3PLAOT5FRhM4OJmbP%2BphzjmlFdwvoXM%3D"));
    let del = b.delete_document(&c, "a b", "p1");
    assert_eq!(del.method(), Method::DELETE);
    assert_eq!(del.uri().path(), "/dbs/wiredb/colls/items/docs/a%20b");
    assert!(del.headers().get("if-match").is_none());
    let del = b
        .delete_document_if_match(&c, "a b", "p1", Some("\"00-2\""))
        .unwrap();
    assert_eq!(del.headers()["if-match"], "\"00-2\"");
    assert_eq!(del.headers()["x-ms-documentdb-partitionkey"], "[\"p1\"]");
    assert!(b
        .delete_document_if_match(&c, "a", "p1", Some("bad\netag"))
        .is_err());
    let rep = b
        .replace_document(&c, "a", "p1", b"{}".to_vec(), "\"00-1\"")
        .unwrap();
    assert_eq!(rep.method(), Method::PUT);
    assert_eq!(rep.headers()["if-match"], "\"00-1\"");
    assert_eq!(rep.headers()["content-type"], "application/json");
    assert!(b
        .replace_document(&c, "a", "p", vec![b' '; MAX_DOCUMENT_BYTES + 1], "e")
        .is_err());
}

#[test]
fn queries_carry_parameters_and_paging() {
    let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
    let cred = Credential::MasterKey(key());
    let b = CosmosRequest::new(&endpoint, &cred, UnixTime(0));
    let c = ContainerLink::new("d", "c");
    let q = Query::new("SELECT * FROM c WHERE c.pk = @pk AND c.v = @v")
        .param("@pk", "x'; DROP")
        .param("@v", 1);
    let req = b
        .query_documents(&c, &q, Some("x"), 50, Some("+RID:abc#RT:1"))
        .unwrap();
    let h = req.headers();
    assert_eq!(h["content-type"], "application/query+json");
    assert_eq!(h["x-ms-documentdb-isquery"], "True");
    assert_eq!(h["x-ms-max-item-count"], "50");
    assert_eq!(h["x-ms-continuation"], "+RID:abc#RT:1");
    assert_eq!(h["x-ms-documentdb-partitionkey"], "[\"x\"]");
    let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
    assert_eq!(
        body["query"],
        "SELECT * FROM c WHERE c.pk = @pk AND c.v = @v"
    );
    assert_eq!(
        body["parameters"][0],
        serde_json::json!({"name": "@pk", "value": "x'; DROP"})
    );
    let cross = b.query_documents(&c, &q, None, 10, None).unwrap();
    assert_eq!(
        cross.headers()["x-ms-documentdb-query-enablecrosspartition"],
        "True"
    );
    assert!(cross
        .headers()
        .get("x-ms-documentdb-partitionkey")
        .is_none());
}

#[test]
fn batch_is_atomic_and_names_each_partition_key() {
    let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
    let cred = Credential::MasterKey(key());
    let docs = [
        serde_json::json!({"id": "a", "pk": "p"}),
        serde_json::json!({"id": "b", "pk": "p"}),
    ];
    let refs: Vec<&serde_json::Value> = docs.iter().collect();
    let req = batch_of(
        &CosmosRequest::new(&endpoint, &cred, UnixTime(1_795_480_119)),
        &ContainerLink::new("wiredb", "items"),
        &refs,
        BatchOperation::Upsert,
    )
    .unwrap();
    let h = req.headers();
    assert_eq!(h["x-ms-cosmos-is-batch-request"], "True");
    assert_eq!(h["x-ms-cosmos-batch-atomic"], "True");
    assert_eq!(h["x-ms-documentdb-partitionkey"], "[\"p\"]");
    // Signed like any document write to the container.
    assert!(h["authorization"]
        .to_str()
        .unwrap()
        .ends_with("tHeGybDBswPVyKtqaEbkC%2BZIWtIrYZU8b1f7FzZWl58%3D"));
    let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
    assert_eq!(
        body,
        serde_json::json!([
            {"operationType": "Upsert", "partitionKey": "[\"p\"]", "minimalReturnPreference": true, "resourceBody": {"id": "a", "pk": "p"}},
            {"operationType": "Upsert", "partitionKey": "[\"p\"]", "minimalReturnPreference": true, "resourceBody": {"id": "b", "pk": "p"}}
        ])
    );
    // The members in the order the doc comment gives, compact.
    assert!(req.body().starts_with(
        br#"[{"operationType":"Upsert","partitionKey":"[\"p\"]","minimalReturnPreference":true,"resourceBody":{"#
    ));
}

#[test]
fn batch_operation_overhead_is_what_the_body_spends() {
    let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
    let cred = Credential::MasterKey(key());
    let b = CosmosRequest::new(&endpoint, &cred, UnixTime(0));
    let docs: Vec<&[u8]> = vec![b"{\"id\":\"a\"}", b"{\"id\":\"bb\",\"n\":[1,2]}", b"{}"];
    for pk in [
        "p",
        "",
        "Zürich",
        "\u{1F600}\u{1F600}",
        "a\"b\\c\u{1}\u{7f}",
    ] {
        for op in [BatchOperation::Upsert, BatchOperation::Create] {
            let req = b
                .batch(&ContainerLink::new("d", "c"), pk, &docs, op)
                .unwrap();
            let per_op = batch_operation_overhead(pk, op);
            // Brackets, less the separator the last operation does not have.
            let want = docs.iter().map(|d| d.len() + per_op).sum::<usize>() + 2 - 1;
            assert_eq!(req.body().len(), want, "{pk:?}");
        }
    }
}

#[test]
fn batch_of_creates() {
    let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
    let cred = Credential::MasterKey(key());
    let doc = serde_json::json!({"id": "a", "pk": "p"});
    let req = batch_of(
        &CosmosRequest::new(&endpoint, &cred, UnixTime(0)),
        &ContainerLink::new("d", "c"),
        &[&doc, &doc],
        BatchOperation::Create,
    )
    .unwrap();
    let body: serde_json::Value = serde_json::from_slice(req.body()).unwrap();
    assert_eq!(body[1]["operationType"], "Create");
    assert_eq!(req.headers()["x-ms-cosmos-batch-atomic"], "True");
}

#[test]
fn batch_limits() {
    let endpoint = Endpoint::parse("http://127.0.0.1:8081").unwrap();
    let cred = Credential::MasterKey(key());
    let b = CosmosRequest::new(&endpoint, &cred, UnixTime(0));
    let c = ContainerLink::new("d", "c");
    let doc = serde_json::json!({"id": "x"});
    let up = BatchOperation::Upsert;
    assert!(batch_of(&b, &c, &[], up).is_err());
    assert!(batch_of(&b, &c, &vec![&doc; MAX_BATCH_OPERATIONS], up).is_ok());
    assert!(batch_of(&b, &c, &vec![&doc; MAX_BATCH_OPERATIONS + 1], up).is_err());
    let big = serde_json::json!({"id": "x", "blob": "x".repeat(30_000)});
    assert!(matches!(
        batch_of(&b, &c, &vec![&big; 80], up),
        Err(CosmosError::BatchTooLarge { operations: 80, .. })
    ));
}

#[test]
fn partition_key_header_escapes_for_http() {
    assert_eq!(partition_key_header("a\"b\\c"), r#"["a\"b\\c"]"#);
    assert_eq!(partition_key_header("ä😀"), r#"["\u00e4\ud83d\ude00"]"#);
    let parsed: Vec<String> = serde_json::from_str(&partition_key_header("ä😀\n")).unwrap();
    assert_eq!(parsed, vec!["ä😀\n".to_string()]);
}
