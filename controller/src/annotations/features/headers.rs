//! Headers Portico adds: `x-forwarded-prefix` upstream, `custom-headers` on
//! responses.

use super::prelude::*;
use crate::annotations::values::HEADER_VALUE_MAX_LEN;
use http::{HeaderName, HeaderValue};

pub(super) const FORWARDED_PREFIX: &[AnnotationSpec] = &[spec(
    "x-forwarded-prefix",
    "",
    Path,
    Ignored,
    Full,
    "Sends `X-Forwarded-Prefix` with this URL path (e.g. `/api`) to the backend.",
    x_forwarded_prefix,
)];

pub(super) const CUSTOM: &[AnnotationSpec] = &[spec(
    "custom-headers",
    "",
    Path,
    Ignored,
    Partly(
        "the value is the headers themselves, one `Name: value` per line, not a ConfigMap reference: Portico does not read ConfigMaps",
    ),
    "Response headers to set, one `Name: value` per line; the framing and connection headers (Content-Length, Transfer-Encoding, Connection, ...) and Host are refused, so the whole annotation is ignored.",
    custom_headers,
)];

fn x_forwarded_prefix(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.x_forwarded_prefix = Some(path_header_value(v)?);
    Ok(())
}

fn custom_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.custom_headers = header_lines(v)?;
    Ok(())
}

/// A header value that is a URL path prefix (`X-Forwarded-Prefix`).
fn path_header_value(s: &str) -> Result<HeaderValue, String> {
    values::check_path_chars(s, false)?;
    HeaderValue::from_str(s).map_err(|_| "not a valid header value".to_owned())
}

/// Bounds on `custom-headers` (with [`HEADER_VALUE_MAX_LEN`]), so one
/// annotation cannot blow up every response.
const CUSTOM_HEADERS_MAX: usize = 64;

/// Inline `Name: value` lines, one header per line; blank lines skipped.
pub(super) fn header_lines(s: &str) -> Result<Vec<(HeaderName, HeaderValue)>, String> {
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

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;
    use http::{HeaderName, HeaderValue};

    pub(crate) const VALID: &[Valid] = &[
        // x-forwarded-prefix
        Valid {
            set: &[("x-forwarded-prefix", "/api")],
            want: |a| a.x_forwarded_prefix = Some(HeaderValue::from_static("/api")),
        },
        // custom-headers
        Valid {
            set: &[(
                "custom-headers",
                "X-Frame-Options: DENY\n\nStrict-Transport-Security:  max-age=31536000; includeSubDomains\n",
            )],
            want: |a| {
                a.custom_headers = vec![
                    (
                        HeaderName::from_static("x-frame-options"),
                        HeaderValue::from_static("DENY"),
                    ),
                    (
                        HeaderName::from_static("strict-transport-security"),
                        HeaderValue::from_static("max-age=31536000; includeSubDomains"),
                    ),
                ]
            },
        },
        Valid {
            set: &[("custom-headers", "Set-Cookie: a=1\r\nSet-Cookie: b=2")],
            want: |a| {
                a.custom_headers = vec![
                    (
                        HeaderName::from_static("set-cookie"),
                        HeaderValue::from_static("a=1"),
                    ),
                    (
                        HeaderName::from_static("set-cookie"),
                        HeaderValue::from_static("b=2"),
                    ),
                ]
            },
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "x-forwarded-prefix",
            fallback: Fallback::Ignored,
            values: &["$prefix", "/a b", "/a?b", "/%g0", "/a\r\nx: y", "/a\0"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "custom-headers",
            fallback: Fallback::Ignored,
            values: &[
                "default/my-headers",
                "my-headers",
                "X-A: 1\nbad line",
                "Connection: close",
                "Transfer-Encoding: chunked",
                "X-A: 1\nContent-Length: 0",
                "KEEP-ALIVE: timeout=5",
                "Host: evil.example",
                "X-A:",
                "Bad Name: v",
                "X-A: café",
                ":v",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];
}
