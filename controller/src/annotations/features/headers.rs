//! Headers Portico adds: `x-forwarded-prefix` upstream, `custom-headers` on
//! responses.

use crate::annotations::{
    Draft,
    Fallback::Ignored,
    registry::{
        AnnotationSpec,
        Scope::Path,
        Support::{Full, Partly},
        spec,
    },
    values,
};

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
    d.out.x_forwarded_prefix = Some(values::path_header_value(v)?);
    Ok(())
}

fn custom_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.custom_headers = values::header_lines(v)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::{
        Fallback,
        tests::{Invalid, NO_CONTEXT, Valid},
    };
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
