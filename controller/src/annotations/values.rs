//! Value syntaxes shared by the annotation parsers. Each function returns a
//! typed value or a short reason (no key, no value: the caller adds those).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use http::HeaderName;
use portico_dataplane::model::OriginPattern;

use super::BodySize;

/// Timeouts above this are refused: a day is longer than any sane proxy
/// timeout, and the bound keeps arithmetic on them far from overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

/// The longest header value an annotation may set or match
/// (`custom-headers`, `canary-by-header-value`).
pub(super) const HEADER_VALUE_MAX_LEN: usize = 4096;

/// Go's `strconv.ParseBool`, which ingress-nginx uses for every boolean.
pub(crate) fn go_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(
            "expected a boolean: true or false (also 1, t, T, TRUE, True, 0, f, F, FALSE, False)"
                .into(),
        ),
    }
}

/// Splits `123abc` into (`123`, `abc`); the digits may be empty.
pub(super) fn split_digits(s: &str) -> (&str, &str) {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s.split_at(end)
}

/// A non-negative decimal integer that fits `u32` (no sign, no spaces).
pub(crate) fn uint(s: &str) -> Result<u32, String> {
    let (digits, rest) = split_digits(s);
    if digits.is_empty() || !rest.is_empty() {
        return Err("expected a non-negative whole number".into());
    }
    digits
        .parse()
        .map_err(|_| format!("must be at most {}", u32::MAX))
}

/// ingress-nginx's integer seconds, or one nginx time value with a unit:
/// `500ms`, `30s`, `5m`, `1h`. Greater than 0 and at most [`MAX_TIMEOUT`].
pub(crate) fn timeout(s: &str) -> Result<Duration, String> {
    const SYNTAX: &str =
        "expected whole seconds (e.g. 60) or a number with one unit of ms, s, m, h (e.g. 90s, 5m)";
    let (digits, unit) = split_digits(s);
    // More digits than this cannot be within the bound in any unit.
    if digits.is_empty() || digits.len() > 12 {
        return Err(if digits.is_empty() {
            SYNTAX.into()
        } else {
            "must be at most 24h".into()
        });
    }
    let n: u64 = digits.parse().map_err(|_| SYNTAX.to_owned())?;
    let duration = match unit {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 60 * 60),
        _ => return Err(SYNTAX.into()),
    };
    if duration.is_zero() {
        return Err("must be greater than 0".into());
    }
    if duration > MAX_TIMEOUT {
        return Err("must be at most 24h".into());
    }
    Ok(duration)
}

/// nginx's size syntax: bytes, or a number with `k`/`K`, `m`/`M`, `g`/`G`.
/// Zero (with or without a unit) is "no limit", as nginx.
pub(crate) fn body_size(s: &str) -> Result<BodySize, String> {
    const SYNTAX: &str = "expected a size in bytes, optionally with a unit k, m or g (e.g. 8m)";
    let (digits, unit) = split_digits(s);
    if digits.is_empty() {
        return Err(SYNTAX.into());
    }
    let multiplier: u64 = match unit {
        "" => 1,
        "k" | "K" => 1 << 10,
        "m" | "M" => 1 << 20,
        "g" | "G" => 1 << 30,
        _ => return Err(SYNTAX.into()),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
        .ok_or_else(|| "too large".to_owned())?;
    Ok(if bytes == 0 {
        BodySize::Unlimited
    } else {
        BodySize::Bytes(bytes)
    })
}

// === paths ===

/// RFC 3986 `pchar` minus `%` (checked separately) plus `/`.
fn is_path_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@/".contains(&b)
}

/// Whether `bytes[i..]` starts with `%` and two hex digits.
fn is_percent_escape(bytes: &[u8], i: usize) -> bool {
    bytes.get(i) == Some(&b'%')
        && bytes
            .get(i + 1..i + 3)
            .is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit))
}

/// Whether every `%` in `s` starts a percent-escape.
pub(super) fn percent_escapes_ok(s: &str) -> bool {
    let bytes = s.as_bytes();
    (0..bytes.len()).all(|i| bytes[i] != b'%' || is_percent_escape(bytes, i))
}

/// Checks that `s` holds only path characters and well-formed
/// percent-escapes; `$` is refused unless `dollar_ok`. Returns the reason.
pub(super) fn check_path_chars(s: &str, dollar_ok: bool) -> Result<(), String> {
    let bytes = s.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            if !is_percent_escape(bytes, i) {
                return Err("'%' must start a percent-escape such as %20".into());
            }
            i += 3;
            continue;
        }
        if b == b'$' && !dollar_ok {
            return Err("nginx variables ($...) are not expanded; '$' is not allowed here".into());
        }
        if b == b'?' {
            return Err("a query string ('?') is not allowed here".into());
        }
        if !is_path_char(b) {
            return Err(format!(
                "{} is not allowed in a URL path",
                describe_char(s, i)
            ));
        }
        i += 1;
    }
    Ok(())
}

/// `'x'` for printable ASCII, else the escaped character.
pub(super) fn describe_char(s: &str, byte_index: usize) -> String {
    let c = s
        .get(byte_index..)
        .and_then(|rest| rest.chars().next())
        .unwrap_or('?');
    format!("'{}'", c.escape_debug())
}

/// An absolute path on this host: starts with one `/` (`//x` would be read
/// as another host by browsers), path characters only, no `$`.
pub(crate) fn absolute_path(s: &str) -> Result<String, String> {
    if !s.starts_with('/') {
        return Err("must be an absolute path starting with '/'".into());
    }
    if s.starts_with("//") {
        return Err("must not start with '//' (browsers read that as another host)".into());
    }
    check_path_chars(s, false)?;
    Ok(s.to_owned())
}

// === hosts ===

/// One DNS label: letters, digits, `-` (and `_` when allowed), not starting
/// or ending with `-`, at most 63 bytes.
fn is_dns_label(label: &str, underscore_ok: bool) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && !label.starts_with('-')
        && !label.ends_with('-')
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || (underscore_ok && b == b'_'))
}

/// A DNS name of at least one label, at most 253 bytes.
fn is_dns_name(name: &str, underscore_ok: bool) -> bool {
    !name.is_empty() && name.len() <= 253 && name.split('.').all(|l| is_dns_label(l, underscore_ok))
}

/// A virtual host name: `example.com` or `*.example.com`, lower-cased; one
/// trailing dot is dropped (as the dataplane does).
pub(crate) fn server_name(s: &str) -> Result<String, String> {
    if s.starts_with('~') {
        return Err("regular-expression server names are not supported".into());
    }
    let s = s.strip_suffix('.').unwrap_or(s);
    let (wildcard, name) = match s.strip_prefix("*.") {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    if name.contains('*') {
        return Err("only a leading '*.' wildcard is supported".into());
    }
    if !is_dns_name(name, false) {
        return Err("not a valid host name".into());
    }
    let name = name.to_ascii_lowercase();
    Ok(if wildcard { format!("*.{name}") } else { name })
}

/// A host for a URL or a `Host` header: a DNS name (underscores allowed, as
/// some internal names use them), an IPv4 address or a bracketed IPv6
/// address.
pub(super) fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    host.parse::<Ipv4Addr>().is_ok() || is_dns_name(host, true)
}

/// A TCP port 1..=65535 written in decimal.
pub(super) fn port(s: &str) -> Option<u16> {
    let (digits, rest) = split_digits(s);
    if digits.is_empty() || digits.len() > 5 || !rest.is_empty() {
        return None;
    }
    digits.parse::<u16>().ok().filter(|p| *p != 0)
}

/// A CORS origin pattern as ingress-nginx reads it: `*`,
/// `http(s)://host[:port]` (no path, lower-cased, the default port left
/// out), or `http(s)://*.example.com` for exactly one more label.
pub(crate) fn cors_origin(s: &str) -> Result<OriginPattern, String> {
    // `**.` is the model's spelling of Gateway API's any-depth wildcard.
    if s.contains("**") {
        return Err("only a leading `*.` wildcard is allowed in the host".into());
    }
    OriginPattern::parse(s)
}

/// A namespace or Secret name: a DNS-1123 subdomain (lower-case letters,
/// digits, '-' and '.', alphanumeric at both ends, at most 253 characters).
pub(crate) fn dns1123_subdomain(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 253
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("{s:?} is not a valid Kubernetes name"))
    }
}

// === URLs ===

// === headers and cookies ===

/// A request header name; `HeaderName` lower-cases it.
pub(crate) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| "not a valid header name".to_owned())
}

/// An RFC 6265 cookie name (an HTTP token), case kept.
pub(crate) fn cookie_name(s: &str) -> Result<String, String> {
    let token = s.len() <= 256
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if token {
        Ok(s.to_owned())
    } else {
        Err("not a valid cookie name (letters, digits and !#$%&'*+-.^_`|~)".into())
    }
}
