//! Percent-encoding (RFC 3986): ids and partition keys in Cosmos DB
//! resource paths and header values, and the path segments and query
//! values of the component's own routes and of CloudEvents' binary-mode
//! headers.

/// Percent-encodes every byte outside `A-Z a-z 0-9 - _ . ~` (RFC 3986's
/// unreserved characters).
pub fn percent_encode(s: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            // By hand: `format!` costs about a thousand instructions an
            // escape, and a signed Cosmos DB request has several.
            out.push('%');
            out.push(HEX[usize::from(b >> 4)] as char);
            out.push(HEX[usize::from(b & 0xf)] as char);
        }
    }
    out
}

/// Decodes `%XX` escapes; `None` for malformed escapes or non-UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_reserved_and_non_ascii_text() {
        for s in ["a b/c?d#e%f", "Zürich", "-_.~", "", "ü/%"] {
            assert_eq!(percent_decode(&percent_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(percent_encode("a b/ü"), "a%20b%2F%C3%BC");
    }

    #[test]
    fn every_byte_encodes_as_formatted_upper_case_hex() {
        // Characters whose UTF-8 holds every byte text can hold: all of
        // ASCII, every continuation byte (0x80 to 0xbf) and every lead byte
        // (0xc2 to 0xf4; 0xc0, 0xc1 and 0xf5 to 0xff never occur).
        let s: String = (0u32..0x800)
            .chain([0x800])
            .chain((0x1000..0x10000).step_by(0x1000))
            .chain([0x10000, 0x40000, 0x80000, 0xc0000, 0x100000])
            .filter_map(char::from_u32)
            .collect();
        let mut seen = [false; 256];
        s.bytes().for_each(|b| seen[usize::from(b)] = true);
        let never = |b: usize| matches!(b, 0xc0 | 0xc1 | 0xf5..=0xff);
        assert!((0..256).all(|b| seen[b] != never(b)));
        let oracle: String = s
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        assert_eq!(percent_encode(&s), oracle);
    }

    #[test]
    fn refuses_malformed_escapes_and_non_utf8() {
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%4"), None);
        assert_eq!(percent_decode("%ff"), None);
        assert_eq!(percent_decode("a%2Fb").as_deref(), Some("a/b"));
    }
}
