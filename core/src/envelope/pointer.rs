//! JSON Pointers (RFC 6901) as protected-field paths, with `*` for every
//! element of an array: which pointers are valid, and what one resolves
//! to in a document (or why it cannot be resolved there).

use serde_json::Value;

/// Whether `p` is a JSON Pointer (RFC 6901) to a member: it starts with `/`
/// and every `~` is followed by `0` or `1`.
pub fn valid_pointer(p: &str) -> bool {
    p.starts_with('/') && {
        let mut chars = p.chars();
        let mut ok = true;
        while let Some(c) = chars.next() {
            if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
                ok = false;
                break;
            }
        }
        ok
    }
}

/// The member name a token stands for (borrowed when nothing is escaped,
/// as in almost every configured pointer).
fn unescape(token: &str) -> std::borrow::Cow<'_, str> {
    if token.contains('~') {
        token.replace("~1", "/").replace("~0", "~").into()
    } else {
        token.into()
    }
}

/// Where a configured pointer meets a value of another shape than the
/// pointer needs (a string, number, boolean or array where it names a
/// member; an object or scalar where it has `*`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeMismatch {
    /// The pointer as configured (may contain `*`).
    pub pointer: String,
    /// The concrete pointer of the value that has another shape.
    pub at: String,
    /// What was found there: `string`, `number`, `boolean`, `array`, `object`.
    pub found: &'static str,
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The concrete pointers a configured pointer names in `doc`. Tokens are
/// RFC 6901 (escaped as written); `*` stands for every element of an array.
/// An absent member, an index past the end, or `null` on the way means
/// nothing is there (optional fields): no pointer, no error. Any other
/// value where the pointer needs to go deeper is a [`ShapeMismatch`] (the
/// first one found; the writer refuses the event).
pub fn resolve(doc: &Value, pointer: &str) -> Result<Vec<String>, ShapeMismatch> {
    let (found, mut mismatches) = resolve_branches(doc, pointer);
    if mismatches.is_empty() {
        Ok(found)
    } else {
        Err(mismatches.swap_remove(0))
    }
}

/// [`resolve`] that follows every branch: the concrete pointers found and,
/// separately, every place a value has another shape. A reader needs both:
/// one branch of another shape under `*` must not hide the others.
pub fn resolve_branches(doc: &Value, pointer: &str) -> (Vec<String>, Vec<ShapeMismatch>) {
    let mut at: Vec<(String, &Value)> = vec![(String::new(), doc)];
    let mut mismatches = Vec::new();
    for token in pointer.split('/').skip(1) {
        let mut next = Vec::new();
        for (path, v) in at {
            match v {
                Value::Null => {}
                Value::Object(m) if token != "*" => {
                    if let Some(child) = m.get(unescape(token).as_ref()) {
                        next.push((format!("{path}/{token}"), child));
                    }
                }
                Value::Array(a) if token == "*" => {
                    for (i, child) in a.iter().enumerate() {
                        next.push((format!("{path}/{i}"), child));
                    }
                }
                Value::Array(a)
                    if !token.is_empty()
                        && token.bytes().all(|b| b.is_ascii_digit())
                        && (token == "0" || !token.starts_with('0')) =>
                {
                    if let Some(child) = token.parse::<usize>().ok().and_then(|i| a.get(i)) {
                        next.push((format!("{path}/{token}"), child));
                    }
                }
                _ => mismatches.push(ShapeMismatch {
                    pointer: pointer.to_owned(),
                    at: if path.is_empty() { "/".into() } else { path },
                    found: kind(v),
                }),
            }
        }
        at = next;
    }
    (at.into_iter().map(|(p, _)| p).collect(), mismatches)
}

/// `Value::pointer`, without allocating: serde_json unescapes every token
/// into a new `String`; here only a token holding `~` is unescaped.
pub(crate) fn lookup<'a>(doc: &'a Value, pointer: &str) -> Option<&'a Value> {
    if pointer.is_empty() {
        return Some(doc);
    }
    if !pointer.starts_with('/') {
        return None;
    }
    pointer
        .split('/')
        .skip(1)
        .try_fold(doc, |target, token| match target {
            Value::Object(map) => map.get(unescape(token).as_ref()),
            Value::Array(list) => array_index(&unescape(token)).and_then(|i| list.get(i)),
            _ => None,
        })
}

/// `Value::pointer_mut`, without allocating (see [`lookup`]).
pub(crate) fn lookup_mut<'a>(doc: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    if pointer.is_empty() {
        return Some(doc);
    }
    if !pointer.starts_with('/') {
        return None;
    }
    pointer
        .split('/')
        .skip(1)
        .try_fold(doc, |target, token| match target {
            Value::Object(map) => map.get_mut(unescape(token).as_ref()),
            Value::Array(list) => array_index(&unescape(token)).and_then(move |i| list.get_mut(i)),
            _ => None,
        })
}

/// An array index as serde_json's pointers read one: no sign, no leading
/// zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}
