//! Time and number formatting for logs, without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// Formats a UTC timestamp with millisecond precision, without a date crate.
pub struct Rfc3339(pub SystemTime);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Vec::with_capacity(24);
        write_rfc3339(&mut out, self.0);
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, in UTC. After the year, the digits go into
/// a fixed buffer and the buffer into `out` once: a push per field was
/// most of its cost on the access-log line.
pub(super) fn write_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    // The year may be wider than four digits; the rest is fixed.
    push_int(out, y.max(0) as u64, 4);
    let mut s = *b"-00-00T00:00:00.000Z";
    put_digits(&mut s[1..3], u64::from(m));
    put_digits(&mut s[4..6], u64::from(day));
    put_digits(&mut s[7..9], rem / 3600);
    put_digits(&mut s[10..12], (rem / 60) % 60);
    put_digits(&mut s[13..15], rem % 60);
    put_digits(&mut s[16..19], u64::from(d.subsec_millis()));
    out.extend_from_slice(&s);
}

/// The last `field.len()` decimal digits of `n`, zero-padded, into `field`.
fn put_digits(field: &mut [u8], mut n: u64) {
    for digit in field.iter_mut().rev() {
        *digit = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// `n` in decimal, zero-padded to at least `width` digits.
pub(super) fn push_int(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while n > 0 || digits.len() - i < width {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_formats_known_instants() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(Rfc3339(t).to_string(), "2026-11-18T11:06:40.123Z");
        assert_eq!(Rfc3339(UNIX_EPOCH).to_string(), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(Rfc3339(leap).to_string(), "2000-02-29T00:00:00.000Z");
        let end = UNIX_EPOCH + Duration::from_millis(253_402_300_799_999);
        assert_eq!(Rfc3339(end).to_string(), "9999-12-31T23:59:59.999Z");
        let wide = UNIX_EPOCH + Duration::from_secs(253_402_300_800);
        assert_eq!(Rfc3339(wide).to_string(), "10000-01-01T00:00:00.000Z");
    }
}
