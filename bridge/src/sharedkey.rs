//! Shared Key authorization for the Queue service (API version 2009-09-19
//! and later): an HMAC-SHA256 over a canonical form of the request, keyed
//! with the account key.
//!
//! ```text
//! StringToSign = VERB \n Content-Encoding \n Content-Language \n
//!                Content-Length (empty when 0) \n Content-MD5 \n Content-Type \n
//!                Date \n If-Modified-Since \n If-Match \n If-None-Match \n
//!                If-Unmodified-Since \n Range \n
//!                CanonicalizedHeaders   (x-ms-* lower-cased, sorted, "name:value\n")
//!                CanonicalizedResource  ("/" account path, then "\nname:value" per
//!                                        query parameter, names lower-cased and
//!                                        sorted, values percent-decoded)
//! Authorization = "SharedKey " account ":" base64(HMAC-SHA256(key, StringToSign))
//! ```
//!
//! The bridge only sends `x-ms-date`, `x-ms-version` and
//! `x-ms-client-request-id`, whose order is the same under the service's
//! collation and plain byte order. A test checks signatures against the
//! official Python SDK (`azure-storage-queue`'s own policy), and azurite
//! refuses a wrong one.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::fmt;

/// A decoded account key. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccountKey(Vec<u8>);

impl AccountKey {
    /// Decodes the base64 key as the portal shows it.
    pub fn from_base64(text: &str) -> Result<Self, &'static str> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "the account key is not base64")?;
        if bytes.is_empty() {
            return Err("the account key is empty");
        }
        Ok(Self(bytes))
    }
}

impl fmt::Debug for AccountKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccountKey(<redacted>)")
    }
}

const STANDARD_HEADERS: [&str; 11] = [
    "content-encoding",
    "content-language",
    "content-length",
    "content-md5",
    "content-type",
    "date",
    "if-modified-since",
    "if-match",
    "if-none-match",
    "if-unmodified-since",
    "range",
];

/// The string the signature covers.
pub fn string_to_sign<B>(req: &http::Request<B>, account: &str) -> String {
    let value = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let mut out = format!("{}\n", req.method().as_str());
    for name in STANDARD_HEADERS {
        let v = value(name);
        if !(name == "content-length" && v == "0") {
            out.push_str(v);
        }
        out.push('\n');
    }
    let mut ms: Vec<(String, &str)> = req
        .headers()
        .iter()
        .filter(|(k, _)| k.as_str().starts_with("x-ms-"))
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("")))
        .collect();
    ms.sort();
    for (k, v) in ms {
        out.push_str(&format!("{k}:{v}\n"));
    }
    out.push('/');
    out.push_str(account);
    out.push_str(req.uri().path());
    let mut query: Vec<(String, String)> = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            let decode = |s: &str| cmk_core::percent::percent_decode(s).unwrap_or(s.to_owned());
            (decode(k).to_ascii_lowercase(), decode(v))
        })
        .collect();
    query.sort();
    for (k, v) in query {
        out.push_str(&format!("\n{k}:{v}"));
    }
    out
}

/// The `Authorization` header value for a request.
pub fn authorization<B>(req: &http::Request<B>, account: &str, key: &AccountKey) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(&key.0).expect("HMAC takes any key length");
    mac.update(string_to_sign(req, account).as_bytes());
    format!(
        "SharedKey {account}:{}",
        STANDARD.encode(mac.finalize().into_bytes())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    // The emulator's published account key (not a secret).
    const DEV_KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    fn get() -> http::Request<Vec<u8>> {
        http::Request::get(
            "http://127.0.0.1:10001/devstoreaccount1/events/messages?visibilitytimeout=30&numofmessages=16",
        )
        .header("x-ms-version", "2021-08-06")
        .header("x-ms-date", "Tue, 24 Nov 2026 00:28:39 GMT")
        .body(Vec::new())
        .unwrap()
    }

    #[test]
    fn canonical_form_of_get_messages() {
        assert_eq!(
            string_to_sign(&get(), "devstoreaccount1"),
            "GET\n\n\n\n\n\n\n\n\n\n\n\n\
             x-ms-date:Tue, 24 Nov 2026 00:28:39 GMT\nx-ms-version:2021-08-06\n\
             /devstoreaccount1/devstoreaccount1/events/messages\nnumofmessages:16\nvisibilitytimeout:30"
        );
    }

    #[test]
    fn known_answer() {
        // Computed with the official Python SDK's SharedKeyCredentialPolicy
        // for the same request (tests/integration/test_queue_signature.py
        // checks many more).
        let key = AccountKey::from_base64(DEV_KEY).unwrap();
        assert_eq!(
            authorization(&get(), "devstoreaccount1", &key),
            "SharedKey devstoreaccount1:nOoIC26p0jHorg0Gw5ALoi1dkelOqT2dfpbI4leoSJc="
        );
    }

    #[test]
    fn query_values_are_decoded_and_zero_length_is_empty() {
        let req = http::Request::delete(
            "http://h/acct/q/messages/abc?popreceipt=AgAAAAMAAAAAAAAA%2Bx%2F%3D%3D",
        )
        .header("content-length", "0")
        .header("x-ms-date", "d")
        .body(Vec::<u8>::new())
        .unwrap();
        let s = string_to_sign(&req, "acct");
        assert!(s.starts_with("DELETE\n\n\n\n"), "{s}");
        assert!(s.ends_with("/acct/acct/q/messages/abc\npopreceipt:AgAAAAMAAAAAAAAA+x/=="));
    }

    #[test]
    fn bad_keys_and_redaction() {
        assert!(AccountKey::from_base64("not base64!").is_err());
        assert!(AccountKey::from_base64("").is_err());
        let k = AccountKey::from_base64(DEV_KEY).unwrap();
        assert!(!format!("{k:?}").contains("Eby8"));
    }
}
