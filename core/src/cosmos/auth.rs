//! The `authorization` header: master-key HMAC or an Entra ID token.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

use super::link::Target;
use crate::percent::percent_encode;

/// A Cosmos DB account key, held decoded. Its `Debug` form never shows it.
#[derive(Clone)]
pub struct MasterKey(Vec<u8>);

/// Why a configured master key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MasterKeyError {
    /// The key is not standard base64.
    #[error("the Cosmos DB key is not valid base64")]
    NotBase64,
    /// The key decodes to nothing.
    #[error("the Cosmos DB key is empty")]
    Empty,
}

impl MasterKey {
    /// Decodes the key as the portal shows it (standard base64).
    pub fn from_base64(encoded: &str) -> Result<Self, MasterKeyError> {
        let bytes = STANDARD
            .decode(encoded.trim())
            .map_err(|_| MasterKeyError::NotBase64)?;
        if bytes.is_empty() {
            return Err(MasterKeyError::Empty);
        }
        Ok(Self(bytes))
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(<redacted>)")
    }
}

/// How requests to Cosmos DB are authorized.
#[derive(Clone)]
pub enum Credential {
    /// Account key: each request carries an HMAC-SHA256 signature.
    MasterKey(MasterKey),
    /// Entra ID access token for the account's scope.
    BearerToken(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::MasterKey(_) => f.write_str("Credential::MasterKey(<redacted>)"),
            Credential::BearerToken(_) => f.write_str("Credential::BearerToken(<redacted>)"),
        }
    }
}

impl Credential {
    /// The `authorization` header value for one request. A master-key value
    /// is URL-encoded as the service expects; a token is sent as the official
    /// Python SDK sends it, `type=aad&ver=1.0&sig=<token>` unencoded (a JWT
    /// holds only URL-safe characters). `date` is the exact `x-ms-date` sent.
    pub fn header_value(&self, verb: &http::Method, target: &Target, date: &str) -> String {
        match self {
            Credential::MasterKey(key) => master_key_signature(
                key,
                verb.as_str(),
                target.resource_type.as_str(),
                &target.link,
                date,
            ),
            Credential::BearerToken(token) => bearer_header_value(token),
        }
    }
}

fn bearer_header_value(token: &str) -> String {
    [BEARER_PREFIX, token].concat()
}

/// What precedes the token in an Entra ID `authorization` value.
const BEARER_PREFIX: &str = "type=aad&ver=1.0&sig=";

/// Puts a fresh Entra ID token on a request built earlier: the token header
/// does not depend on the verb, link or date, so nothing else changes. How
/// a request refused with 401/403 is sent once more after the token was
/// renewed. Fails only for a token that is not a valid header value.
pub fn reauthorize(req: &mut http::Request<Vec<u8>>, token: &str) -> Result<(), InvalidToken> {
    let v = http::HeaderValue::from_str(&bearer_header_value(token)).map_err(|_| InvalidToken)?;
    req.headers_mut().insert(http::header::AUTHORIZATION, v);
    Ok(())
}

/// The Entra ID token `req` is signed with (what [`reauthorize`] or a
/// token credential put there); `None` for a request signed otherwise. How
/// a request refused with 401/403 tells which token was refused.
pub fn bearer_token(req: &http::Request<Vec<u8>>) -> Option<&str> {
    req.headers()
        .get(http::header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix(BEARER_PREFIX)
}

/// A token that cannot be sent in a header.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the access token is not a valid header value")]
pub struct InvalidToken;

/// The master-key `authorization` value, URL-encoded:
/// `type=master&ver=1.0&sig=` + base64(HMAC-SHA256(key, string to sign)), where
/// the string to sign is `lower(verb)\nlower(resourceType)\nresourceLink\nlower(date)\n\n`.
pub fn master_key_signature(
    key: &MasterKey,
    verb: &str,
    resource_type: &str,
    resource_link: &str,
    date: &str,
) -> String {
    let string_to_sign = [
        &verb.to_ascii_lowercase(),
        "\n",
        &resource_type.to_ascii_lowercase(),
        "\n",
        resource_link,
        "\n",
        &date.to_ascii_lowercase(),
        "\n\n",
    ]
    .concat();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes keys of any length");
    mac.update(string_to_sign.as_bytes());
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    encode_header_value(&["type=master&ver=1.0&sig=", &sig].concat())
}

/// URL-encodes an authorization value (`=`, `&`, `+`, `/` and the rest).
pub fn encode_header_value(raw: &str) -> String {
    percent_encode(raw)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sig_of(header: &str) -> String {
        let prefix = "type%3Dmaster%26ver%3D1.0%26sig%3D";
        let encoded = header.strip_prefix(prefix).expect("master prefix");
        encoded
            .replace("%2B", "+")
            .replace("%2F", "/")
            .replace("%3D", "=")
    }

    // Microsoft's REST documentation, "Access control in the Azure Cosmos DB SQL API".
    #[test]
    fn docs_example_get_database() {
        let key = MasterKey::from_base64(
            "dsZQi3KtZmCv1ljt3VNWNm7sQUF1y5rJfC6kv5JiwvW0EndXdDku/dkKBp8/ufDToSxLzR4y+O/0H/t4bQtVNw==",
        )
        .unwrap();
        let h = master_key_signature(
            &key,
            "GET",
            "dbs",
            "dbs/ToDoList",
            "Thu, 27 Apr 2017 00:51:12 GMT",
        );
        assert_eq!(sig_of(&h), "c09PEVJrgp2uQRkr934kFbTqhByc7TVr3OHyqlu+c+c=");
    }

    // Azure SDK for Rust, azure_data_cosmos authorization_policy tests.
    #[test]
    fn rust_sdk_primary_key_vector() {
        let key = MasterKey::from_base64(
            "8F8xXXOptJxkblM1DBXW7a6NMI5oE8NnwPGYBmwxLCKfejOK7B7yhcCHMGvN3PBrlMLIOeol1Hv9RCdzAZR5sg==",
        )
        .unwrap();
        let h = master_key_signature(
            &key,
            "GET",
            "dbs",
            "dbs/MyDatabase/colls/MyCollection",
            "Mon, 01 Jan 1900 01:00:00 GMT",
        );
        assert_eq!(
            h,
            "type%3Dmaster%26ver%3D1.0%26sig%3DQkz%2Fr%2B1N2%2BPEnNijxGbGB%2FADvLsLBQmZ7uBBMuIwf4I%3D"
        );
    }

    // The Azure SDK for Rust's current vectors: `primary_key_0` signs a
    // collection link as resource type `colls`, `primary_key_1` the
    // documented example with a 68-character key.
    #[test]
    fn rust_sdk_current_vectors() {
        let key0 = MasterKey::from_base64(
            "8F8xXXOptJxkblM1DBXW7a6NMI5oE8NnwPGYBmwxLCKfejOK7B7yhcCHMGvN3PBrlMLIOeol1Hv9RCdzAZR5sg==",
        )
        .unwrap();
        let h = master_key_signature(
            &key0,
            "GET",
            "colls",
            "dbs/MyDatabase/colls/MyCollection",
            "Mon, 01 Jan 1900 01:00:00 GMT",
        );
        assert_eq!(sig_of(&h), "vrHmd02almbIg1e4htVWH+Eg/OhEHip3VTwFivZLH0A=");
        let key1 = MasterKey::from_base64(
            "dsZQi3KtZmCv1ljt3VNWNm7sQUF1y5rJfC6kv5JiwvW0EndXdDku/dkKBp8/ufDToSxL",
        )
        .unwrap();
        let h = master_key_signature(
            &key1,
            "GET",
            "dbs",
            "dbs/ToDoList",
            "Thu, 27 Apr 2017 00:51:12 GMT",
        );
        assert_eq!(sig_of(&h), "KvBM8vONofkv3yKm/8zD9MEGlbu6jjHDJBp4E9c2ZZI=");
    }

    // Captured from the official Python SDK on the wire (emulator key).
    #[test]
    fn python_sdk_wire_vectors() {
        let key = MasterKey::from_base64(
            "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==",
        )
        .unwrap();
        let date = "Tue, 24 Nov 2026 00:28:39 GMT";
        let cases = [
            (
                "POST",
                "docs",
                "dbs/wiredb/colls/items",
                "tHeGybDBswPVyKtqaEbkC+ZIWtIrYZU8b1f7FzZWl58=",
            ),
            (
                "GET",
                "docs",
                "dbs/wiredb/colls/items/docs/a",
                "+k66SR9KVHzN3PLAOT5FRhM4OJmbP+phzjmlFdwvoXM=",
            ),
            (
                "POST",
                "colls",
                "dbs/wiredb",
                "tHKoiDQ8Swr6loR5S9YGap29wHZ+8SPLuElXDrYhqVI=",
            ),
            (
                "GET",
                "",
                "",
                "QXeN3ZfHbRcaC3w6pYIRh8Aqt7bdWOnAcUOpwXE0vZI=",
            ),
        ];
        for (verb, ty, link, want) in cases {
            assert_eq!(
                sig_of(&master_key_signature(&key, verb, ty, link, date)),
                want,
                "{verb} {ty} {link}"
            );
        }
    }

    // The official Python SDK's header for a token (azure-cosmos
    // CosmosBearerTokenCredentialPolicy): `type=aad&ver=1.0&sig=<token>`.
    #[test]
    fn entra_token_is_sent_as_the_python_sdk_sends_it() {
        let c = Credential::BearerToken("eyJ0.eyJ1.c2l-_g".into());
        let t = super::super::link::ContainerLink::new("db", "c").documents();
        assert_eq!(
            c.header_value(&http::Method::POST, &t, "x"),
            "type=aad&ver=1.0&sig=eyJ0.eyJ1.c2l-_g"
        );
        let mut req = http::Request::new(Vec::new());
        reauthorize(&mut req, "eyJ2.eyJ3.bmV3").unwrap();
        assert_eq!(
            req.headers()["authorization"],
            "type=aad&ver=1.0&sig=eyJ2.eyJ3.bmV3"
        );
        assert_eq!(reauthorize(&mut req, "bad\ntoken"), Err(InvalidToken));
        // Which token a request was signed with.
        assert_eq!(bearer_token(&req), Some("eyJ2.eyJ3.bmV3"));
        assert_eq!(bearer_token(&http::Request::new(Vec::new())), None);
        let mut master = http::Request::new(Vec::new());
        master.headers_mut().insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::from_static("type%3Dmaster%26ver%3D1.0%26sig%3Dx"),
        );
        assert_eq!(bearer_token(&master), None);
    }

    #[test]
    fn keys_are_never_printed() {
        let k = MasterKey::from_base64("c2VjcmV0LWtleQ==").unwrap();
        assert!(!format!("{k:?}").contains("c2VjcmV0"));
        assert!(!format!("{:?}", Credential::MasterKey(k)).contains("c2VjcmV0"));
        assert!(!format!("{:?}", Credential::BearerToken("tok123".into())).contains("tok123"));
    }

    #[test]
    fn bad_keys_are_refused() {
        assert_eq!(
            MasterKey::from_base64("not base64!").unwrap_err(),
            MasterKeyError::NotBase64
        );
        assert_eq!(
            MasterKey::from_base64("").unwrap_err(),
            MasterKeyError::Empty
        );
    }
}
