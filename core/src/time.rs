//! Wall-clock time as plain values, so every time-dependent decision in the
//! core takes `now` as an argument and tests can pin it.

use std::fmt;

/// How far in the future a cached time may lie (clock skew between
/// instances sharing the store) before it is disbelieved.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// Seconds since the Unix epoch (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub u64);

const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A calendar date and time of day in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Civil {
    /// Year, e.g. 2026.
    pub year: i64,
    /// Month, 1..=12.
    pub month: u32,
    /// Day of month, 1..=31.
    pub day: u32,
    /// Hour, 0..=23.
    pub hour: u32,
    /// Minute, 0..=59.
    pub minute: u32,
    /// Second, 0..=59.
    pub second: u32,
}

impl UnixTime {
    /// The current time from the host's wall clock (`wasi:clocks/wall-clock`
    /// inside the component).
    pub fn now() -> Self {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        UnixTime(secs)
    }

    /// Splits into calendar fields (proleptic Gregorian, UTC).
    pub fn civil(self) -> Civil {
        let days = (self.0 / 86_400) as i64;
        let rem = (self.0 % 86_400) as u32;
        // Howard Hinnant's civil_from_days.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            year,
            month,
            day,
            hour: rem / 3600,
            minute: rem % 3600 / 60,
            second: rem % 60,
        }
    }

    /// Builds a time from calendar fields; `None` when a field is out of range.
    pub fn from_civil(c: Civil) -> Option<Self> {
        if !(1..=12).contains(&c.month)
            || c.day == 0
            || c.day > days_in_month(c.year, c.month)
            || c.hour > 23
            || c.minute > 59
            || c.second > 60
            || c.year < 1970
        {
            return None;
        }
        let y = c.year - i64::from(c.month <= 2);
        let era = y.div_euclid(400);
        let yoe = y.rem_euclid(400);
        let m = i64::from(c.month);
        let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(c.day) - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let secs = days * 86_400
            + i64::from(c.hour) * 3600
            + i64::from(c.minute) * 60
            + i64::from(c.second.min(59));
        u64::try_from(secs).ok().map(UnixTime)
    }

    /// RFC 1123 form used by HTTP dates and Cosmos DB's `x-ms-date`,
    /// e.g. `Tue, 24 Nov 2026 00:28:39 GMT`.
    pub fn rfc1123(self) -> String {
        // By hand, not `format!` (about 9 k instructions a call in Wasm):
        // every Cosmos DB request carries one.
        let c = self.civil();
        let mut out = String::with_capacity(29);
        out.push_str(DAYS[((self.0 / 86_400) % 7) as usize]);
        out.push_str(", ");
        push_padded(&mut out, u64::from(c.day), 2);
        out.push(' ');
        out.push_str(MONTHS[(c.month - 1) as usize]);
        out.push(' ');
        push_padded(&mut out, c.year.unsigned_abs(), 4);
        out.push(' ');
        push_clock(&mut out, &c);
        out.push_str(" GMT");
        out
    }

    /// Parses the RFC 1123 form produced by [`UnixTime::rfc1123`].
    pub fn parse_rfc1123(s: &str) -> Option<Self> {
        // "Tue, 24 Nov 2026 00:28:39 GMT"
        let rest = s.split_once(", ")?.1;
        let mut parts = rest.split(' ');
        let day = parts.next()?.parse().ok()?;
        let mon = parts.next()?;
        let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
        let year = parts.next()?.parse().ok()?;
        let mut hms = parts.next()?.split(':');
        let hour = hms.next()?.parse().ok()?;
        let minute = hms.next()?.parse().ok()?;
        let second = hms.next()?.parse().ok()?;
        if parts.next()? != "GMT" || parts.next().is_some() {
            return None;
        }
        Self::from_civil(Civil {
            year,
            month,
            day,
            hour,
            minute,
            second,
        })
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.civil();
        let mut out = String::with_capacity(20);
        push_padded(&mut out, c.year.unsigned_abs(), 4);
        out.push('-');
        push_padded(&mut out, u64::from(c.month), 2);
        out.push('-');
        push_padded(&mut out, u64::from(c.day), 2);
        out.push('T');
        push_clock(&mut out, &c);
        out.push('Z');
        f.write_str(&out)
    }
}

/// `n` in decimal, with leading zeros to at least `width` digits (as
/// `{:0width$}` writes it).
fn push_padded(out: &mut String, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    let start = i.min(digits.len() - width);
    for &d in &digits[start..] {
        out.push(char::from(d));
    }
}

/// `hh:mm:ss`.
fn push_clock(out: &mut String, c: &Civil) {
    push_padded(out, u64::from(c.hour), 2);
    out.push(':');
    push_padded(out, u64::from(c.minute), 2);
    out.push(':');
    push_padded(out, u64::from(c.second), 2);
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1123_known_dates() {
        assert_eq!(UnixTime(0).rfc1123(), "Thu, 01 Jan 1970 00:00:00 GMT");
        // Date of the Cosmos DB access-control documentation example.
        assert_eq!(
            UnixTime(1_493_254_272).rfc1123(),
            "Thu, 27 Apr 2017 00:51:12 GMT"
        );
        assert_eq!(
            UnixTime(1_795_480_119).rfc1123(),
            "Tue, 24 Nov 2026 00:28:39 GMT"
        );
        // Leap day.
        assert_eq!(
            UnixTime(951_782_400).rfc1123(),
            "Tue, 29 Feb 2000 00:00:00 GMT"
        );
    }

    #[test]
    fn both_forms_match_their_formatted_oracle() {
        let mut times: Vec<u64> = (0..4_102_444_800u64).step_by(86_400 * 11 + 3_599).collect();
        // Years past 9999 and the largest time: more than four digits.
        times.extend([253_402_300_799, 253_402_300_800, u64::MAX / 2, u64::MAX]);
        for t in times {
            let c = UnixTime(t).civil();
            let rfc1123 = format!(
                "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
                DAYS[((t / 86_400) % 7) as usize],
                c.day,
                MONTHS[(c.month - 1) as usize],
                c.year,
                c.hour,
                c.minute,
                c.second
            );
            let rfc3339 = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
                c.year, c.month, c.day, c.hour, c.minute, c.second
            );
            assert_eq!(UnixTime(t).rfc1123(), rfc1123, "{t}");
            assert_eq!(UnixTime(t).to_string(), rfc3339, "{t}");
        }
    }

    #[test]
    fn rfc1123_round_trips_over_a_wide_range() {
        let mut t = 0u64;
        while t < 4_102_444_800 {
            let s = UnixTime(t).rfc1123();
            assert_eq!(UnixTime::parse_rfc1123(&s), Some(UnixTime(t)), "{s}");
            t += 86_400 * 13 + 3_607;
        }
    }

    #[test]
    fn parse_rejects_malformed_dates() {
        for bad in [
            "",
            "Tue 24 Nov 2026 00:28:39 GMT",
            "Tue, 31 Nov 2026 00:28:39 GMT",
            "Tue, 24 Nov 2026 24:00:00 GMT",
            "Tue, 24 Nov 2026 00:28:39 UTC",
            "Tue, 24 Xyz 2026 00:28:39 GMT",
        ] {
            assert_eq!(UnixTime::parse_rfc1123(bad), None, "{bad}");
        }
    }

    #[test]
    fn display_is_rfc3339_utc() {
        assert_eq!(UnixTime(1_795_480_119).to_string(), "2026-11-24T00:28:39Z");
    }
}
