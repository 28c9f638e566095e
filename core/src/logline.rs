//! One structured log line: a JSON object with `level`, `event` and the
//! caller's fields, keys in sorted order (as a `serde_json::Map` orders
//! them), a later field replacing an earlier one of the same name, and a
//! newline. Written straight from the borrowed values: no map is built and
//! no value cloned (two or three lines per request), by the component's own
//! JSON writer ([`crate::compact_json`], serde_json's text byte for byte):
//! inside Wasm, serde_json's escaping looks at a line's strings a byte at a
//! time (docs/benchmarks.md has what that cost).

use serde_json::Value;

/// The line for `event` at `level` with `fields`.
pub fn format(level: &str, event: &str, fields: &[(&str, Value)]) -> Vec<u8> {
    let level = Value::from(level);
    let event = Value::from(event);
    let mut entries: Vec<(&str, &Value)> = Vec::with_capacity(fields.len() + 2);
    entries.push(("level", &level));
    entries.push(("event", &event));
    entries.extend(fields.iter().map(|(k, v)| (*k, v)));
    // Stable: of the entries with one name, the last stays last.
    entries.sort_by(|a, b| a.0.cmp(b.0));
    let mut line = Vec::with_capacity(256);
    line.push(b'{');
    let mut first = true;
    for (i, (k, v)) in entries.iter().enumerate() {
        if entries.get(i + 1).is_some_and(|next| next.0 == *k) {
            continue;
        }
        if !first {
            line.push(b',');
        }
        first = false;
        crate::compact_json::write_str(&mut line, k);
        line.push(b':');
        crate::compact_json::write_value(&mut line, v);
    }
    line.extend_from_slice(b"}\n");
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Map};

    /// What the line was built as before: a map, serialized.
    fn via_map(level: &str, event: &str, fields: &[(&str, Value)]) -> Vec<u8> {
        let mut m = Map::new();
        m.insert("level".into(), Value::from(level));
        m.insert("event".into(), Value::from(event));
        for (k, v) in fields {
            m.insert((*k).into(), v.clone());
        }
        let mut line = serde_json::to_vec(&Value::Object(m)).unwrap();
        line.push(b'\n');
        line
    }

    /// A log line's level, event and fields.
    type Case<'a> = (&'a str, &'a str, Vec<(&'a str, Value)>);

    #[test]
    fn lines_are_those_of_a_serialized_map() {
        let cases: Vec<Case> = vec![
            ("info", "subscription_validated", vec![]),
            (
                "info",
                "request",
                vec![
                    ("route", json!("push")),
                    ("status", json!(200)),
                    ("code", Value::Null),
                    ("hsm", json!({"calls": 1, "b": [1, "x\"\n"]})),
                    ("Zeta", json!(1.5)),
                    ("é", json!("ü\u{1}")),
                ],
            ),
            // A field named like an earlier one replaces it, as in a map.
            (
                "warn",
                "x",
                vec![
                    ("event", json!("y")),
                    ("a", json!(1)),
                    ("a", json!(2)),
                    ("level", json!("error")),
                ],
            ),
        ];
        for (level, event, fields) in cases {
            assert_eq!(
                String::from_utf8(format(level, event, &fields)).unwrap(),
                String::from_utf8(via_map(level, event, &fields)).unwrap()
            );
        }
    }
}
