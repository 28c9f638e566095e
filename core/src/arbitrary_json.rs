//! Generated JSON for the core's property tests (strings and values of
//! every kind), shared by the tests of the JSON writer and of the sealed
//! size. Depends on no other module of the core, so any module's tests
//! can use it.

/// Generated strings of up to `max_chars` characters: mostly the ones that
/// matter to JSON writers and to JSON Pointers (controls, quote, backslash,
/// DEL, `~`, `/`, multi-byte), and any character at all.
pub(crate) fn text(max_chars: usize) -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let ch = prop_oneof![
        4 => prop::char::range('\u{0}', '\u{7f}'),
        2 => prop::sample::select(vec![
            '"', '\\', '\n', '\u{1}', '\u{1f}', '\u{7f}', '~', '/', 'é', '€', '🦀'
        ]),
        1 => any::<char>(),
    ];
    prop::collection::vec(ch, 0..max_chars).prop_map(|c| c.into_iter().collect())
}

/// Generated JSON values of every kind, strings from [`text`], nested
/// up to `depth` levels, about `size` nodes in all and at most `branch`
/// members or elements per array or object.
pub(crate) fn value(
    max_chars: usize,
    depth: u32,
    size: u32,
    branch: usize,
) -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
    use proptest::prelude::*;
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text(max_chars).prop_map(Value::String),
    ];
    leaf.prop_recursive(depth, size, branch as u32, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..branch).prop_map(Value::Array),
            prop::collection::vec((text(max_chars), inner), 0..branch)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}
