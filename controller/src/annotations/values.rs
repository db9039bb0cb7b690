//! Value syntaxes shared by the annotation parsers. Each function returns a
//! typed value or a short reason (no key, no value: the caller adds those).

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method, Uri};
use portico_dataplane::model::OriginPattern;

use super::{BodySize, RewriteSegment};

/// Timeouts above this are refused: a day is longer than any sane proxy
/// timeout, and the bound keeps arithmetic on them far from overflow.
const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 60 * 60);

const PATTERN_MAX_LEN: usize = 1024;

/// Bounds on `custom-headers`, so one annotation cannot blow up every response.
const CUSTOM_HEADERS_MAX: usize = 64;
const HEADER_VALUE_MAX_LEN: usize = 4096;

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
fn split_digits(s: &str) -> (&str, &str) {
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

/// An error status a custom error page may be served for: 400 to 599
/// (`custom-http-errors`, `--custom-http-errors`).
pub(crate) fn error_code(s: &str) -> Result<u16, String> {
    const RANGE: &str = "expected an HTTP error status from 400 to 599";
    let (digits, rest) = split_digits(s.trim());
    if digits.len() != 3 || !rest.is_empty() {
        return Err(RANGE.into());
    }
    match digits.parse() {
        Ok(code @ 400..=599) => Ok(code),
        _ => Err(RANGE.into()),
    }
}

/// HTTP status codes and inclusive ranges, comma-separated: `200-399`,
/// `200,204`, within 100-599.
pub(crate) fn status_ranges(s: &str) -> Result<Vec<(u16, u16)>, String> {
    const SYNTAX: &str =
        "expected status codes or ranges from 100 to 599, comma-separated, e.g. 200-399 or 200,204";
    let code = |t: &str| -> Result<u16, String> {
        let t = t.trim();
        let (digits, rest) = split_digits(t);
        if digits.len() != 3 || !rest.is_empty() {
            return Err(SYNTAX.into());
        }
        let n: u16 = digits.parse().map_err(|_| SYNTAX.to_owned())?;
        if !(100..=599).contains(&n) {
            return Err(SYNTAX.into());
        }
        Ok(n)
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let (min, max) = match part.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => {
                let c = code(part)?;
                (c, c)
            }
        };
        if min > max {
            return Err(format!("range {min}-{max} is empty"));
        }
        out.push((min, max));
    }
    if out.len() > 32 {
        return Err("at most 32 codes or ranges".into());
    }
    Ok(out)
}

/// A whole percentage, 0 to 100.
pub(crate) fn percent(s: &str) -> Result<u8, String> {
    let n = uint(s).map_err(|_| "expected a whole percentage from 0 to 100".to_owned())?;
    u8::try_from(n)
        .ok()
        .filter(|n| *n <= 100)
        .ok_or_else(|| "expected a whole percentage from 0 to 100".to_owned())
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
fn percent_escapes_ok(s: &str) -> bool {
    let bytes = s.as_bytes();
    (0..bytes.len()).all(|i| bytes[i] != b'%' || is_percent_escape(bytes, i))
}

/// Checks that `s` holds only path characters and well-formed
/// percent-escapes; `$` is refused unless `dollar_ok`. Returns the reason.
fn check_path_chars(s: &str, dollar_ok: bool) -> Result<(), String> {
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
fn describe_char(s: &str, byte_index: usize) -> String {
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

/// A header value that is a URL path prefix (`X-Forwarded-Prefix`).
pub(crate) fn path_header_value(s: &str) -> Result<HeaderValue, String> {
    check_path_chars(s, false)?;
    HeaderValue::from_str(s).map_err(|_| "not a valid header value".to_owned())
}

/// A rewrite template: path text with `$1`..`$9` capture references. It must
/// start with `/` or with a capture (which then carries the leading slash).
pub(crate) fn rewrite_template(s: &str) -> Result<Vec<RewriteSegment>, String> {
    if !(s.starts_with('/') || s.starts_with('$')) {
        return Err("must start with '/' or a capture reference such as $1".into());
    }
    check_path_chars(s, true)?;

    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            literal.push(c);
            continue;
        }
        match chars.next() {
            Some(d @ '1'..='9') => {
                if !literal.is_empty() {
                    segments.push(RewriteSegment::Literal(std::mem::take(&mut literal)));
                }
                // The match arm guarantees an ASCII digit 1..=9.
                segments.push(RewriteSegment::Capture(d as u8 - b'0'));
            }
            Some('0') => {
                return Err("$0 is not supported; capture references are $1 to $9".into());
            }
            Some(_) => {
                return Err(
                    "nginx variables are not expanded; only $1 to $9 may follow '$'".into(),
                );
            }
            None => return Err("ends with a lone '$'; capture references are $1 to $9".into()),
        }
    }
    if !literal.is_empty() {
        segments.push(RewriteSegment::Literal(literal));
    }
    Ok(segments)
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
fn is_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner.parse::<Ipv6Addr>().is_ok();
    }
    host.parse::<Ipv4Addr>().is_ok() || is_dns_name(host, true)
}

/// A TCP port 1..=65535 written in decimal.
fn port(s: &str) -> Option<u16> {
    let (digits, rest) = split_digits(s);
    if digits.is_empty() || digits.len() > 5 || !rest.is_empty() {
        return None;
    }
    digits.parse::<u16>().ok().filter(|p| *p != 0)
}

/// `host[:port]` for the upstream `Host` header, host lower-cased.
pub(crate) fn host_and_port(s: &str) -> Result<String, String> {
    // A bracketed IPv6 address holds colons of its own.
    let (host, port_part) = match s.rfind(':') {
        Some(i) if !s[i..].contains(']') => (&s[..i], Some(&s[i + 1..])),
        _ => (s, None),
    };
    if !is_host(host) {
        return Err("expected host or host:port with a valid host name or IP address".into());
    }
    let mut out = host.to_ascii_lowercase();
    if let Some(p) = port_part {
        let p = port(p).ok_or_else(|| "the port must be a number from 1 to 65535".to_owned())?;
        out.push(':');
        out.push_str(&p.to_string());
    }
    Ok(out)
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

/// A method for `Access-Control-Allow-Methods`: an HTTP token, case kept
/// (methods are case-sensitive), or `*` for any.
pub(crate) fn cors_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.as_bytes())
        .map_err(|_| "not a method name (letters, digits and !#$%&'*+-.^_`|~)".to_owned())
}

/// A Kubernetes DNS-1035 label (a Service name): lower-case letters, digits
/// and `-`, starting with a letter, at most 63 characters.
pub(crate) fn dns1035_label(s: &str) -> Result<String, String> {
    let ok = s.len() <= 63
        && s.starts_with(|c: char| c.is_ascii_lowercase())
        && !s.ends_with('-')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(s.to_owned())
    } else if s.contains('/') {
        Err("must be a Service name in the Ingress's namespace, without a namespace".into())
    } else {
        Err("must be a Service name: lower-case letters, digits and '-', starting with a letter, at most 63 characters".into())
    }
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

/// An absolute `http`/`https` URL with a host, no user information, no
/// fragment and no nginx variables.
/// Most entries in one source-range list: far more than any real list, few
/// enough that a list stays cheap to build.
const MAX_SOURCE_RANGES: usize = 100_000;

/// A comma-separated list of CIDR ranges or single addresses, IPv4 or IPv6
/// (`allowlist-source-range`). Every entry must parse: an access list with
/// a typo must not open or close more than it says, so the caller fails
/// closed on an error.
pub(crate) fn source_ranges(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if out.len() == MAX_SOURCE_RANGES {
            return Err(format!("more than {MAX_SOURCE_RANGES} entries"));
        }
        let net = portico_dataplane::forwarded::parse_range(entry).map_err(|e| e.to_string())?;
        out.push(net);
    }
    if out.is_empty() {
        return Err("no entries".into());
    }
    Ok(out)
}

/// Whether an absolute URL is written without a path or query
/// (`https://example.com`).
pub(crate) fn is_bare_url(s: &str) -> bool {
    s.split_once("://")
        .is_some_and(|(_, rest)| !rest.contains(['/', '?']))
}

pub(crate) fn redirect_url(s: &str) -> Result<Uri, String> {
    if s.contains('$') {
        return Err(
            "nginx variables such as $request_uri are not expanded; '$' is not allowed".into(),
        );
    }
    if s.contains('#') {
        return Err("a fragment ('#') is not supported".into());
    }
    // RFC 3986 characters only, with well-formed percent-escapes.
    let uri_char = |b: u8| b.is_ascii_alphanumeric() || b"-._~:/?[]@!&'()*+,;=%".contains(&b);
    if let Some(i) = s.bytes().position(|b| !uri_char(b)) {
        return Err(format!("{} is not allowed in a URL", describe_char(s, i)));
    }
    if !percent_escapes_ok(s) {
        return Err("'%' must start a percent-escape such as %20".into());
    }
    let uri: Uri = s.parse().map_err(|_| "not a valid URL".to_owned())?;
    match uri.scheme_str() {
        Some(scheme)
            if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") => {}
        _ => return Err("must be an absolute http:// or https:// URL".into()),
    }
    let Some(authority) = uri.authority() else {
        return Err("must be an absolute http:// or https:// URL".into());
    };
    if authority.as_str().contains('@') {
        return Err("user information ('user@') is not allowed in the URL".into());
    }
    if !is_host(authority.host()) {
        return Err("the URL's host is not a valid host name or IP address".into());
    }
    let host_len = authority.host().len();
    if let Some(port_text) = authority
        .as_str()
        .get(host_len..)
        .and_then(|rest| rest.strip_prefix(':'))
        && port(port_text).is_none()
    {
        return Err("the URL's port must be a number from 1 to 65535".into());
    }
    Ok(uri)
}

/// A redirect status that means "redirect": 301, 302, 303, 307 or 308.
pub(crate) fn redirect_code(s: &str) -> Result<u16, String> {
    const CODES: [u16; 5] = [301, 302, 303, 307, 308];
    let code = uint(s).map_err(|_| "must be one of 301, 302, 303, 307, 308".to_owned())?;
    match u16::try_from(code) {
        Ok(c) if CODES.contains(&c) => Ok(c),
        _ => Err("must be one of 301, 302, 303, 307, 308".into()),
    }
}

// === headers and cookies ===

/// A request header name; `HeaderName` lower-cases it.
pub(crate) fn header_name(s: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(s.as_bytes()).map_err(|_| "not a valid header name".to_owned())
}

/// A header value to compare against: visible ASCII and inner spaces.
pub(crate) fn header_match_value(s: &str) -> Result<String, String> {
    if s.len() > HEADER_VALUE_MAX_LEN {
        return Err(format!("longer than {HEADER_VALUE_MAX_LEN} bytes"));
    }
    if s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        Ok(s.to_owned())
    } else {
        Err("only visible ASCII characters and spaces are allowed".into())
    }
}

/// A regular expression that compiles with the regex crate under the
/// dataplane's size limits.
pub(crate) fn bounded_regex(s: &str) -> Result<String, String> {
    if s.len() > PATTERN_MAX_LEN {
        return Err(format!("longer than {PATTERN_MAX_LEN} bytes"));
    }
    use portico_dataplane::pattern::{PatternError, compile};
    compile(s, false).map(|_| s.to_owned()).map_err(|e| match e {
        PatternError::TooBig => e.to_string(),
        PatternError::Syntax(reason) => format!(
            "not a valid regular expression ({reason}); the syntax is the regex crate's, without look-around or backreferences"
        ),
    })
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

/// Inline `Name: value` lines, one header per line; blank lines skipped.
pub(crate) fn header_lines(s: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
    if !s.contains(':') {
        return Err(
            "looks like a ConfigMap reference; Portico does not read ConfigMaps, write the headers inline as 'Name: value' lines"
                .into(),
        );
    }
    let mut headers = Vec::new();
    for (index, line) in s.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let number = index + 1;
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!("line {number}: expected 'Name: value'"));
        };
        let name = HeaderName::from_bytes(name.trim().as_bytes())
            .map_err(|_| format!("line {number}: not a valid header name"))?;
        // The dataplane's one list of what no user-written header may touch.
        if let Err(reason) = portico_dataplane::model::user_settable(&name) {
            return Err(format!("line {number}: {name} cannot be set: {reason}"));
        }
        let value = value.trim();
        if value.is_empty() {
            return Err(format!("line {number}: empty header value"));
        }
        if value.len() > HEADER_VALUE_MAX_LEN {
            return Err(format!(
                "line {number}: value longer than {HEADER_VALUE_MAX_LEN} bytes"
            ));
        }
        if !value
            .bytes()
            .all(|b| b.is_ascii_graphic() || b == b' ' || b == b'\t')
        {
            return Err(format!(
                "line {number}: only visible ASCII characters and spaces are allowed in the value"
            ));
        }
        let value = HeaderValue::from_str(value)
            .map_err(|_| format!("line {number}: not a valid header value"))?;
        headers.push((name, value));
        if headers.len() > CUSTOM_HEADERS_MAX {
            return Err(format!("more than {CUSTOM_HEADERS_MAX} headers"));
        }
    }
    if headers.is_empty() {
        return Err("no 'Name: value' lines".into());
    }
    Ok(headers)
}
