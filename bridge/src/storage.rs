//! Queue service REST calls as values: the requests the bridge sends (Get
//! Messages, Delete Message, Put Message, Create Queue) and the parsing of
//! their XML answers. No I/O; time is an argument.
//!
//! References: Queue service REST API, "Get Messages", "Delete Message",
//! "Put Message", "Create Queue"; errors are `<Error><Code>…</Code>
//! <Message>…</Message></Error>` with the code also in `x-ms-error-code`.

use cmk_core::time::UnixTime;
use http::{Method, Request};

use crate::address::QueueAddress;
use crate::decide::MessageTtl;
use crate::sharedkey::{authorization, AccountKey};

/// REST API version sent as `x-ms-version`. Entra ID bearer tokens need
/// 2017-11-09 or later; this is one the Python SDK and azurite both speak.
pub const API_VERSION: &str = "2021-08-06";
/// Scope of Entra ID tokens for Azure Storage.
pub const STORAGE_SCOPE: &str = "https://storage.azure.com/.default";

/// How a request is authorized.
#[derive(Debug, Clone)]
pub enum Authorization<'a> {
    /// Shared Key with the account key.
    SharedKey(&'a AccountKey),
    /// An Entra ID access token for [`STORAGE_SCOPE`].
    Bearer(&'a str),
}

fn encode(s: &str) -> String {
    cmk_core::cosmos::encode_header_value(s)
}

fn build(
    method: Method,
    q: &QueueAddress,
    path_and_query: &str,
    body: Vec<u8>,
    now: UnixTime,
    auth: &Authorization<'_>,
) -> Request<Vec<u8>> {
    let mut b = Request::builder()
        .method(method)
        .uri(format!("{}{}", q.origin, path_and_query))
        .header("x-ms-version", API_VERSION)
        .header("x-ms-date", now.rfc1123());
    if !body.is_empty() {
        b = b
            .header("content-type", "application/xml; charset=utf-8")
            .header("content-length", body.len());
    }
    let mut req = b.body(body).expect("the parts are valid");
    let value = match auth {
        Authorization::SharedKey(key) => authorization(&req, &q.account, key),
        Authorization::Bearer(token) => format!("Bearer {token}"),
    };
    req.headers_mut().insert(
        http::header::AUTHORIZATION,
        http::HeaderValue::from_str(&value).expect("base64 and token characters are valid"),
    );
    req
}

/// Get Messages: up to `count` (1-32) messages, hidden for `visibility_secs`.
pub fn get_messages(
    q: &QueueAddress,
    count: u8,
    visibility_secs: u32,
    now: UnixTime,
    auth: &Authorization<'_>,
) -> Request<Vec<u8>> {
    build(
        Method::GET,
        q,
        &format!(
            "{}/messages?numofmessages={count}&visibilitytimeout={visibility_secs}",
            q.path()
        ),
        Vec::new(),
        now,
        auth,
    )
}

/// Delete Message, with the pop receipt of the Get that returned it.
pub fn delete_message(
    q: &QueueAddress,
    id: &str,
    pop_receipt: &str,
    now: UnixTime,
    auth: &Authorization<'_>,
) -> Request<Vec<u8>> {
    build(
        Method::DELETE,
        q,
        &format!(
            "{}/messages/{}?popreceipt={}",
            q.path(),
            encode(id),
            encode(pop_receipt)
        ),
        Vec::new(),
        now,
        auth,
    )
}

/// Put Message with `text` exactly as given, never expiring
/// (`messagettl=-1`): a poisoned message waits for an operator.
pub fn put_message(
    q: &QueueAddress,
    text: &str,
    now: UnixTime,
    auth: &Authorization<'_>,
) -> Request<Vec<u8>> {
    build(
        Method::POST,
        q,
        &format!("{}/messages?messagettl=-1", q.path()),
        put_message_body(text),
        now,
        auth,
    )
}

/// Put Message with `text` exactly as given, hidden for `visibility_secs`
/// and living `ttl` (the service's default of 7 days when `None`, never
/// expiring for [`MessageTtl::Never`]): a message put back into its own
/// queue.
pub fn requeue_message(
    q: &QueueAddress,
    text: &str,
    visibility_secs: u64,
    ttl: Option<MessageTtl>,
    now: UnixTime,
    auth: &Authorization<'_>,
) -> Request<Vec<u8>> {
    // The visibility timeout must stay below the time to live.
    let visibility = match ttl {
        Some(MessageTtl::Secs(t)) => visibility_secs.min(t.saturating_sub(1)),
        _ => visibility_secs,
    };
    let ttl = match ttl {
        Some(MessageTtl::Secs(t)) => format!("&messagettl={t}"),
        Some(MessageTtl::Never) => "&messagettl=-1".to_owned(),
        None => String::new(),
    };
    build(
        Method::POST,
        q,
        &format!("{}/messages?visibilitytimeout={visibility}{ttl}", q.path()),
        put_message_body(text),
        now,
        auth,
    )
}

/// Create Queue (201 created, 204 already there).
pub fn create_queue(q: &QueueAddress, now: UnixTime, auth: &Authorization<'_>) -> Request<Vec<u8>> {
    let mut req = build(Method::PUT, q, &q.path(), Vec::new(), now, auth);
    // A PUT without a body still states its length.
    req.headers_mut().insert(
        http::header::CONTENT_LENGTH,
        http::HeaderValue::from_static("0"),
    );
    req
}

/// Get Queue Metadata: its answer's `x-ms-approximate-messages-count` is
/// the queue's depth.
pub fn get_metadata(q: &QueueAddress, now: UnixTime, auth: &Authorization<'_>) -> Request<Vec<u8>> {
    build(
        Method::GET,
        q,
        &format!("{}?comp=metadata", q.path()),
        Vec::new(),
        now,
        auth,
    )
}

/// The approximate message count of a Get Queue Metadata answer.
pub fn parse_depth(resp: &http::Response<Vec<u8>>) -> Option<u64> {
    resp.headers()
        .get("x-ms-approximate-messages-count")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// One message as Get Messages returns it.
#[derive(Clone, PartialEq, Eq)]
pub struct Received {
    /// Message id.
    pub id: String,
    /// Pop receipt for Delete / Update.
    pub pop_receipt: String,
    /// Times dequeued, this time included.
    pub dequeue_count: u32,
    /// Insertion time as the service wrote it (RFC 1123).
    pub insertion_time: String,
    /// Expiration time as the service wrote it (RFC 1123), if given.
    pub expiration_time: Option<String>,
    /// The message text, unescaped: exactly what the sender put.
    pub text: String,
}

impl std::fmt::Debug for Received {
    // The text is payload: it never reaches Debug output or logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Received")
            .field("id", &self.id)
            .field("dequeue_count", &self.dequeue_count)
            .field("text_bytes", &self.text.len())
            .finish_non_exhaustive()
    }
}

/// An answer that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not the expected XML.
    #[error("unexpected answer from the queue service: {0}")]
    Malformed(&'static str),
}

/// Unescapes XML character data: the five predefined entities and numeric
/// character references (CDATA sections are taken as they are).
fn unescape(s: &str) -> Result<String, XmlError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find(['&', '<']) {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after
                .find("]]>")
                .ok_or(XmlError::Malformed("unterminated CDATA"))?;
            out.push_str(&after[..end]);
            rest = &after[end + 3..];
            continue;
        }
        if rest.starts_with('<') {
            return Err(XmlError::Malformed("markup inside a text element"));
        }
        let end = rest
            .find(';')
            .ok_or(XmlError::Malformed("unterminated entity"))?;
        let name = &rest[1..end];
        let c = match name {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            n if n.starts_with("#x") || n.starts_with("#X") => u32::from_str_radix(&n[2..], 16)
                .ok()
                .and_then(char::from_u32)
                .ok_or(XmlError::Malformed("bad character reference"))?,
            n if n.starts_with('#') => n[1..]
                .parse::<u32>()
                .ok()
                .and_then(char::from_u32)
                .ok_or(XmlError::Malformed("bad character reference"))?,
            _ => return Err(XmlError::Malformed("unknown entity")),
        };
        out.push(c);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Escapes text for an XML element.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // Carriage returns would be normalized away by the parser.
            '\r' => out.push_str("&#13;"),
            c => out.push(c),
        }
    }
    out
}

/// The body of Put Message.
pub fn put_message_body(text: &str) -> Vec<u8> {
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessage><MessageText>{}</MessageText></QueueMessage>",
        escape(text)
    )
    .into_bytes()
}

/// The text of the first `<tag>…</tag>` (or `<tag/>`) in `xml`.
fn element<'a>(xml: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    if let Some(start) = xml.find(&open) {
        let from = start + open.len();
        let end = xml[from..].find(&format!("</{tag}>"))?;
        return Some(&xml[from..from + end]);
    }
    xml.contains(&format!("<{tag}/>")).then_some("")
}

/// Every `<QueueMessage>…</QueueMessage>` block.
fn blocks(xml: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find("<QueueMessage>") {
        let from = start + "<QueueMessage>".len();
        match rest[from..].find("</QueueMessage>") {
            Some(end) => {
                out.push(&rest[from..from + end]);
                rest = &rest[from + end..];
            }
            None => break,
        }
    }
    out
}

/// Parses Get Messages' `<QueueMessagesList>`.
pub fn parse_messages(body: &[u8]) -> Result<Vec<Received>, XmlError> {
    let xml = std::str::from_utf8(body).map_err(|_| XmlError::Malformed("not UTF-8"))?;
    if !xml.contains("<QueueMessagesList") {
        return Err(XmlError::Malformed("no QueueMessagesList"));
    }
    blocks(xml)
        .into_iter()
        .map(|b| {
            let field =
                |tag| element(b, tag).ok_or(XmlError::Malformed("a message field is missing"));
            Ok(Received {
                id: unescape(field("MessageId")?)?,
                pop_receipt: unescape(field("PopReceipt")?)?,
                dequeue_count: field("DequeueCount")?
                    .trim()
                    .parse()
                    .map_err(|_| XmlError::Malformed("DequeueCount is not a number"))?,
                insertion_time: unescape(field("InsertionTime")?)?,
                expiration_time: element(b, "ExpirationTime").and_then(|e| unescape(e).ok()),
                text: unescape(field("MessageText")?)?,
            })
        })
        .collect()
}

/// The id of the message Put Message created.
pub fn parse_put(body: &[u8]) -> Option<String> {
    let xml = std::str::from_utf8(body).ok()?;
    unescape(element(xml, "MessageId")?).ok()
}

/// The service's error code and message, from the body (or `None`).
pub fn parse_error(body: &[u8]) -> Option<(String, String)> {
    let xml = std::str::from_utf8(body).ok()?;
    let code = unescape(element(xml, "Code")?).ok()?;
    let message = element(xml, "Message")
        .and_then(|m| unescape(m).ok())
        .unwrap_or_default();
    // The message's first line; later lines repeat request ids and time.
    let first = message
        .lines()
        .next()
        .unwrap_or("")
        .chars()
        .take(300)
        .collect();
    Some((code, first))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q() -> QueueAddress {
        QueueAddress::parse("http://127.0.0.1:10001/devstoreaccount1/events").unwrap()
    }

    const KEY: &str =
        "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

    #[test]
    fn requests_have_the_documented_shape() {
        let key = AccountKey::from_base64(KEY).unwrap();
        let auth = Authorization::SharedKey(&key);
        let now = UnixTime(1_795_998_519);
        let get = get_messages(&q(), 16, 30, now, &auth);
        assert_eq!(get.method(), Method::GET);
        assert_eq!(
            get.uri().to_string(),
            "http://127.0.0.1:10001/devstoreaccount1/events/messages?numofmessages=16&visibilitytimeout=30"
        );
        assert_eq!(get.headers()["x-ms-version"], API_VERSION);
        assert_eq!(get.headers()["x-ms-date"], now.rfc1123());
        assert!(get.headers()["authorization"]
            .to_str()
            .unwrap()
            .starts_with("SharedKey devstoreaccount1:"));
        let del = delete_message(&q(), "id-1", "AgAA+/==", now, &auth);
        assert_eq!(
            del.uri().path_and_query().unwrap().as_str(),
            "/devstoreaccount1/events/messages/id-1?popreceipt=AgAA%2B%2F%3D%3D"
        );
        let put = put_message(&q().sibling("events-poison").unwrap(), "a<b&c", now, &auth);
        assert_eq!(put.method(), Method::POST);
        assert_eq!(
            put.uri().path_and_query().unwrap().as_str(),
            "/devstoreaccount1/events-poison/messages?messagettl=-1"
        );
        assert_eq!(
            put.headers()["content-length"],
            put.body().len().to_string().as_str()
        );
        assert!(
            String::from_utf8_lossy(put.body()).contains("<MessageText>a&lt;b&amp;c</MessageText>")
        );
        let again = requeue_message(&q(), "a", 60, Some(MessageTtl::Secs(3600)), now, &auth);
        assert_eq!(
            again.uri().path_and_query().unwrap().as_str(),
            "/devstoreaccount1/events/messages?visibilitytimeout=60&messagettl=3600"
        );
        let short = requeue_message(&q(), "a", 60, Some(MessageTtl::Secs(30)), now, &auth);
        assert_eq!(
            short.uri().query(),
            Some("visibilitytimeout=29&messagettl=30")
        );
        let never = requeue_message(&q(), "a", 60, Some(MessageTtl::Never), now, &auth);
        assert_eq!(
            never.uri().query(),
            Some("visibilitytimeout=60&messagettl=-1")
        );
        let default = requeue_message(&q(), "a", 60, None, now, &auth);
        assert_eq!(default.uri().query(), Some("visibilitytimeout=60"));
        let bearer = get_messages(&q(), 1, 1, now, &Authorization::Bearer("tok"));
        assert_eq!(bearer.headers()["authorization"], "Bearer tok");
        let create = create_queue(&q(), now, &auth);
        assert_eq!(create.method(), Method::PUT);
        assert_eq!(create.uri().path(), "/devstoreaccount1/events");
    }

    // The Get Messages example of the REST reference, with a text that
    // needs unescaping.
    const LIST: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<QueueMessagesList>
  <QueueMessage>
    <MessageId>5974b586-0df3-4e2d-ad0c-18e3892bfca2</MessageId>
    <InsertionTime>Fri, 09 Oct 2009 21:04:30 GMT</InsertionTime>
    <ExpirationTime>Fri, 16 Oct 2009 21:04:30 GMT</ExpirationTime>
    <PopReceipt>YzQ4Yzg1MDItYTc0Ny00OWNjLTkxYTUtZGM0MDFiZDAwYzEw</PopReceipt>
    <TimeNextVisible>Fri, 09 Oct 2009 23:29:20 GMT</TimeNextVisible>
    <DequeueCount>1</DequeueCount>
    <MessageText>{&quot;id&quot;:&quot;a&amp;b&quot;,&quot;x&quot;:&quot;&lt;&#233;&#x1F600;&gt;&quot;}</MessageText>
  </QueueMessage>
  <QueueMessage>
    <MessageId>m2</MessageId>
    <InsertionTime>t</InsertionTime>
    <PopReceipt>p2</PopReceipt>
    <DequeueCount>6</DequeueCount>
    <MessageText>PHRleHQ+</MessageText>
  </QueueMessage>
</QueueMessagesList>"#;

    #[test]
    fn get_messages_answer_is_parsed_and_unescaped() {
        let m = parse_messages(LIST.as_bytes()).unwrap();
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].id, "5974b586-0df3-4e2d-ad0c-18e3892bfca2");
        assert_eq!(m[0].dequeue_count, 1);
        assert_eq!(m[0].insertion_time, "Fri, 09 Oct 2009 21:04:30 GMT");
        assert_eq!(
            m[0].expiration_time.as_deref(),
            Some("Fri, 16 Oct 2009 21:04:30 GMT")
        );
        assert_eq!(m[0].text, "{\"id\":\"a&b\",\"x\":\"<é😀>\"}");
        assert_eq!((m[1].dequeue_count, m[1].text.as_str()), (6, "PHRleHQ+"));
        assert!(
            !format!("{:?}", m[0]).contains("a&b"),
            "Debug shows no text"
        );
        let empty = "<?xml version=\"1.0\" encoding=\"utf-8\"?><QueueMessagesList />";
        assert!(parse_messages(empty.as_bytes()).unwrap().is_empty());
        assert!(parse_messages(b"<html>").is_err());
        assert!(parse_messages(
            b"<QueueMessagesList><QueueMessage><MessageId>x</MessageId></QueueMessage></QueueMessagesList>"
        )
        .is_err());
    }

    #[test]
    fn queue_depth_comes_from_the_metadata_answer() {
        let now = UnixTime(1_700_000_000);
        let key = AccountKey::from_base64(KEY).unwrap();
        let req = get_metadata(&q(), now, &Authorization::SharedKey(&key));
        assert_eq!(req.method(), Method::GET);
        assert_eq!(
            req.uri().to_string(),
            "http://127.0.0.1:10001/devstoreaccount1/events?comp=metadata"
        );
        assert!(req.headers()["authorization"]
            .to_str()
            .unwrap()
            .starts_with("SharedKey devstoreaccount1:"));
        let resp = http::Response::builder()
            .header("x-ms-approximate-messages-count", "7")
            .body(Vec::new())
            .unwrap();
        assert_eq!(parse_depth(&resp), Some(7));
        let none = http::Response::builder().body(Vec::new()).unwrap();
        assert_eq!(parse_depth(&none), None);
    }

    #[test]
    fn escaping_round_trips() {
        for text in ["plain", "a<b>&\"'c", "é😀\r\n\t", "]]>", "eyJpZCI6IjEifQ=="] {
            let body = String::from_utf8(put_message_body(text)).unwrap();
            let inner = element(&body, "MessageText").unwrap();
            assert_eq!(unescape(inner).unwrap(), text);
        }
        assert_eq!(unescape("<![CDATA[a<b]]>&amp;").unwrap(), "a<b&");
        assert!(unescape("&nope;").is_err());
        assert!(unescape("&#xZZ;").is_err());
    }

    #[test]
    fn error_answers() {
        let body = b"<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>AuthenticationFailed</Code><Message>Server failed to authenticate the request. Make sure the value of the Authorization header is formed correctly including the signature.\nRequestId:1\nTime:2026</Message></Error>";
        let (code, message) = parse_error(body).unwrap();
        assert_eq!(code, "AuthenticationFailed");
        assert!(message.starts_with("Server failed to authenticate"));
        assert!(!message.contains("RequestId"));
        assert_eq!(parse_error(b"not xml"), None);
        assert_eq!(
            parse_put(b"<QueueMessagesList><QueueMessage><MessageId>n1</MessageId></QueueMessage></QueueMessagesList>"),
            Some("n1".into())
        );
    }
}
