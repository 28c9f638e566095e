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

/// The reference tokens of a pointer: what lies between its slashes, after
/// the first. Split by a set of one character rather than by the character
/// `/`: the latter searches with `memchr`, whose setup inside Wasm costs
/// more than walking a pointer's few bytes (about 230 instructions a token).
fn tokens(pointer: &str) -> impl Iterator<Item = &str> {
    pointer.split(['/']).skip(1)
}

/// The member name a token stands for (borrowed when nothing is escaped,
/// as in almost every configured pointer).
fn unescape(token: &str) -> std::borrow::Cow<'_, str> {
    if token.as_bytes().contains(&b'~') {
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

/// A JSON value's kind as messages name it: `null`, `boolean`, `number`,
/// `string`, `array`, `object`.
pub fn json_kind(v: &Value) -> &'static str {
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
    resolve_under(doc, pointer, "")
}

/// [`resolve`], each concrete pointer found written after `prefix` (the
/// pointer of `doc` inside a larger document, e.g. `/event`); a mismatch's
/// pointers are `doc`'s own.
pub fn resolve_under(
    doc: &Value,
    pointer: &str,
    prefix: &str,
) -> Result<Vec<String>, ShapeMismatch> {
    let (found, mut mismatches) = walk(doc, pointer, prefix);
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
    walk(doc, pointer, "")
}

/// The child a member or index token names in `v`: `Ok(None)` when nothing
/// is there (absent member, index past the end, `null` on the way),
/// `Err(())` when `v` has another shape than the token needs. `*` is the
/// caller's.
fn step<'a>(v: &'a Value, token: &str) -> Result<Option<&'a Value>, ()> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(m.get(unescape(token).as_ref())),
        // Digits without a leading zero; one too large for an index names
        // nothing there, like an index past the end.
        Value::Array(a)
            if !token.is_empty()
                && token.bytes().all(|b| b.is_ascii_digit())
                && (token == "0" || !token.starts_with('0')) =>
        {
            Ok(token.parse::<usize>().ok().and_then(|i| a.get(i)))
        }
        _ => Err(()),
    }
}

fn mismatch(pointer: &str, at: &str, v: &Value) -> ShapeMismatch {
    ShapeMismatch {
        pointer: pointer.to_owned(),
        at: if at.is_empty() { "/".into() } else { at.into() },
        found: json_kind(v),
    }
}

fn walk(doc: &Value, pointer: &str, prefix: &str) -> (Vec<String>, Vec<ShapeMismatch>) {
    let with_prefix = |p: &str| {
        let mut s = String::with_capacity(prefix.len() + p.len());
        s.push_str(prefix);
        s.push_str(p);
        s
    };
    // Without `*` (almost every configured pointer) the concrete pointer is
    // the pointer itself: one walk, nothing built on the way.
    if !pointer.split(['/']).any(|t| t == "*") {
        let mut v = doc;
        let mut end = 0;
        for token in tokens(pointer) {
            match step(v, token) {
                Ok(Some(child)) => v = child,
                Ok(None) => return (Vec::new(), Vec::new()),
                Err(()) => return (Vec::new(), vec![mismatch(pointer, &pointer[..end], v)]),
            }
            end += 1 + token.len();
        }
        return (vec![with_prefix(pointer)], Vec::new());
    }
    walk_branches(doc, pointer, prefix)
}

/// The walk that follows every branch of every `*`.
fn walk_branches(doc: &Value, pointer: &str, prefix: &str) -> (Vec<String>, Vec<ShapeMismatch>) {
    let mut at: Vec<(String, &Value)> = vec![(String::new(), doc)];
    let mut mismatches = Vec::new();
    for token in tokens(pointer) {
        let mut next = Vec::new();
        for (path, v) in at {
            match (token, v) {
                (_, Value::Null) => {}
                ("*", Value::Array(a)) => {
                    for (i, child) in a.iter().enumerate() {
                        next.push((format!("{path}/{i}"), child));
                    }
                }
                ("*", _) => mismatches.push(mismatch(pointer, &path, v)),
                _ => match step(v, token) {
                    Ok(Some(child)) => next.push((format!("{path}/{token}"), child)),
                    Ok(None) => {}
                    Err(()) => mismatches.push(mismatch(pointer, &path, v)),
                },
            }
        }
        at = next;
    }
    let found = at
        .into_iter()
        .map(|(p, _)| format!("{prefix}{p}"))
        .collect();
    (found, mismatches)
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
    tokens(pointer).try_fold(doc, |target, token| match target {
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
    tokens(pointer).try_fold(doc, |target, token| match target {
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

#[cfg(test)]
mod tests {
    use super::{walk, walk_branches};
    use proptest::prelude::*;
    use serde_json::Value;

    const TOKENS: [&str; 10] = [
        "a",
        "b",
        "a~1b",
        "a~0b",
        "0",
        "1",
        "01",
        "",
        "x",
        "99999999999999999999999",
    ];

    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            Just(Value::from(1)),
            Just(Value::from("s")),
            Just(Value::from(true)),
        ];
        leaf.prop_recursive(4, 40, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                proptest::collection::btree_map(
                    proptest::sample::select(&["a", "b", "a/b", "a~b", "0", "", "x"][..]),
                    inner,
                    0..5
                )
                .prop_map(|m| Value::Object(
                    m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        /// The walk without `*` finds what the branch-following walk finds.
        #[test]
        fn the_direct_walk_agrees_with_the_branch_walk(
            doc in value(),
            tokens in proptest::collection::vec(proptest::sample::select(&TOKENS[..]), 1..5),
        ) {
            let pointer: String = tokens.iter().map(|t| format!("/{t}")).collect();
            prop_assert_eq!(walk(&doc, &pointer, "/event"), walk_branches(&doc, &pointer, "/event"));
        }
    }
}
