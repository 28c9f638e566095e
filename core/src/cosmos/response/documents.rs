//! The documents of a query page, split without parsing them: the byte
//! range of each element of the top-level object's `Documents` array,
//! found by a scan that follows only strings and brackets (no recursion,
//! so no depth limit). A page whose whole parse fails (one document nested
//! past `serde_json`'s recursion limit) is parsed document by document from
//! these ranges, so the others are still read.

/// The byte ranges of the `Documents` elements of a page, in order; `None`
/// if `body` is not an object holding a `Documents` array, scanned whole.
pub(super) fn ranges(body: &[u8]) -> Option<Vec<(usize, usize)>> {
    let mut found = None;
    let mut i = ws(body, 0);
    expect(body, i, b'{')?;
    i = ws(body, i + 1);
    if body.get(i) == Some(&b'}') {
        return None;
    }
    loop {
        expect(body, i, b'"')?;
        let key_start = i;
        let key_end = string_end(body, i)?;
        let key = &body[i + 1..key_end - 1];
        i = ws(body, key_end);
        expect(body, i, b':')?;
        i = ws(body, i + 1);
        // The key, and every member but the documents, must be what the
        // whole parse would take (checked without recursion): the only
        // thing this path tolerates is a document that does not parse.
        valid(&body[key_start..key_end])?;
        if key == b"Documents" {
            if found.is_some() {
                return None;
            }
            let (elements, end) = array(body, i)?;
            found = Some(elements);
            i = end;
        } else {
            let end = value_end(body, i)?;
            valid(&body[i..end])?;
            i = end;
        }
        i = ws(body, i);
        match body.get(i)? {
            b',' => i = ws(body, i + 1),
            b'}' => break,
            _ => return None,
        }
    }
    // Nothing but whitespace may follow the object.
    (ws(body, i + 1) == body.len()).then_some(())?;
    found
}

/// The elements of the array starting at `i`, and the index past it.
fn array(body: &[u8], i: usize) -> Option<(Vec<(usize, usize)>, usize)> {
    expect(body, i, b'[')?;
    let mut out = Vec::new();
    let mut i = ws(body, i + 1);
    if body.get(i) == Some(&b']') {
        return Some((out, i + 1));
    }
    loop {
        let end = value_end(body, i)?;
        out.push((i, end));
        i = ws(body, end);
        match body.get(i)? {
            b',' => i = ws(body, i + 1),
            b']' => return Some((out, i + 1)),
            _ => return None,
        }
    }
}

/// The index past the value starting at `i`: a string, an object or array
/// (brackets counted, strings stepped over), or a scalar up to the next
/// delimiter. Whether the value is valid JSON is for the parser to say.
fn value_end(body: &[u8], i: usize) -> Option<usize> {
    match body.get(i)? {
        b'"' => string_end(body, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            loop {
                match body.get(j)? {
                    b'"' => {
                        j = string_end(body, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth = depth.checked_sub(1)?;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
        }
        _ => {
            let len = body[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']') || c.is_ascii_whitespace())
                .unwrap_or(body.len() - i);
            (len > 0).then_some(i + len)
        }
    }
}

/// The index past the string whose opening quote is at `i`.
fn string_end(body: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    loop {
        match body.get(j)? {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
}

/// Whether `v` is one well-formed JSON value, checked by serde_json
/// skipping it (which does not recurse).
fn valid(v: &[u8]) -> Option<()> {
    serde_json::from_slice::<serde::de::IgnoredAny>(v)
        .ok()
        .map(|_| ())
}

fn ws(body: &[u8], mut i: usize) -> usize {
    while body
        .get(i)
        .is_some_and(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
    {
        i += 1;
    }
    i
}

fn expect(body: &[u8], i: usize, c: u8) -> Option<()> {
    (body.get(i) == Some(&c)).then_some(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn split(body: &str) -> Option<Vec<&str>> {
        ranges(body.as_bytes()).map(|r| r.into_iter().map(|(s, e)| &body[s..e]).collect())
    }

    #[test]
    fn finds_each_document_whatever_it_holds() {
        let page = r#" {"_rid":"x","Documents":[ {"id":"a","s":"}],{\"[\\"} , [1,{"b":[]}] ,"t", 5 ,null,{}],"_count":6} "#;
        assert_eq!(
            split(page).unwrap(),
            [
                r#"{"id":"a","s":"}],{\"[\\"}"#,
                r#"[1,{"b":[]}]"#,
                r#""t""#,
                "5",
                "null",
                "{}"
            ]
        );
        assert_eq!(split(r#"{"Documents":[]}"#).unwrap(), Vec::<&str>::new());
        // A member before `Documents` nested deep is stepped over.
        let deep = format!(
            r#"{{"x":{}1{},"Documents":[1]}}"#,
            "[".repeat(10_000),
            "]".repeat(10_000)
        );
        assert_eq!(split(&deep).unwrap(), ["1"]);
    }

    #[test]
    fn refuses_what_is_not_a_page() {
        for body in [
            "",
            "[]",
            "{}",
            r#"{"Documents":{}}"#,
            r#"{"Documents":[1,]}"#,
            r#"{"Documents":[1"#,
            r#"{"Documents":[1]"#,
            r#"{"Documents":[1]} x"#,
            r#"{"Documents":["a]}"#,
            r#"{"Documents":[{]}"#,
            r#"{"Other":[1]}"#,
            r#"{"Documents" [1]}"#,
            // What the whole parse refuses for another reason than depth.
            r#"{"Documents":[1],"Documents":[2]}"#,
            r#"{"_rid":"x\q","Documents":[1]}"#,
            r#"{"Documents":[1],"_count":tru}"#,
            r#"{"x":{],"Documents":[1]}"#,
            r#"{"\q":1,"Documents":[1]}"#,
        ] {
            assert_eq!(ranges(body.as_bytes()), None, "{body}");
        }
    }

    proptest! {
        /// On any page serde_json parses, the ranges are exactly its
        /// documents, each parsing to the same value.
        #[test]
        fn agrees_with_the_parser(docs in proptest::collection::vec(crate::arbitrary_json::value(6, 4, 24, 4), 0..5), pad in "[ \t\r\n]{0,2}") {
            let body = format!(
                r#"{{"_rid":"r",{pad}"Documents"{pad}:{pad}[{pad}{}{pad}],"_count":{}}}"#,
                docs.iter().map(|d| serde_json::to_string(d).unwrap()).collect::<Vec<_>>().join(&format!("{pad},{pad}")),
                docs.len()
            );
            let found = ranges(body.as_bytes()).expect("a page");
            let parsed: Vec<serde_json::Value> = found
                .iter()
                .map(|&(s, e)| serde_json::from_slice(&body.as_bytes()[s..e]).unwrap())
                .collect();
            prop_assert_eq!(parsed, docs);
            // No proper prefix of a page is one.
            for cut in 0..body.len() {
                if body.is_char_boundary(cut) {
                    prop_assert_eq!(ranges(&body.as_bytes()[..cut]), None, "{}", &body[..cut]);
                }
            }
        }
    }
}
