//! Custom error pages: `default-backend`, `custom-http-errors` and
//! `disable-proxy-intercept-errors`.

use super::prelude::*;
use crate::annotations::list;

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "default-backend",
        "",
        Path,
        Ignored,
        Full,
        "Service in the Ingress's namespace (its first port) that answers when the path's Service has no endpoints, and renders the paths' custom error pages instead of `--default-backend-service` (docs/error-pages.md).",
        default_backend,
    ),
    spec(
        "custom-http-errors",
        "",
        Path,
        Ignored,
        Partly(
            "the answer keeps its original status whatever success status the error backend answers with (ingress-nginx passes the error backend's status on), and the page is asked for with GET (HEAD for HEAD), not the client's method",
        ),
        "Statuses (400 to 599, comma-separated) whose answers get their body from the error backend (`default-backend`, else `--default-backend-service`), with ingress-nginx's X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, X-Service-Name, X-Service-Port and X-Request-ID headers; the answer keeps its status. Overrides `--custom-http-errors`. gRPC calls are never intercepted. Invalid entries are dropped and reported.",
        custom_http_errors,
    ),
    spec(
        "disable-proxy-intercept-errors",
        "false",
        Path,
        Ignored,
        Full,
        "`true`: upstream answers with a `custom-http-errors` status pass through unchanged; only the proxy's own errors (no endpoints, upstream unreachable, refused by a filter) get the error page.",
        disable_proxy_intercept_errors,
    ),
];

fn default_backend(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.default_backend = Some(dns1035_label(v)?);
    Ok(())
}

/// Invalid entries are dropped one by one (each with a diagnostic); the
/// valid ones are kept, duplicates once. None valid: ignored, so the
/// global list still applies.
fn custom_http_errors(v: &str, d: &mut Draft) -> Result<(), String> {
    let codes = list(v, d, error_code)?;
    if codes.is_empty() {
        return Err("no status from 400 to 599".into());
    }
    d.out.custom_http_errors = Some(codes);
    Ok(())
}

fn disable_proxy_intercept_errors(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.disable_proxy_intercept_errors = values::go_bool(v)?;
    Ok(())
}

/// An error status a custom error page may be served for: 400 to 599
/// (`custom-http-errors`, `--custom-http-errors`).
pub(crate) fn error_code(s: &str) -> Result<u16, String> {
    const RANGE: &str = "expected an HTTP error status from 400 to 599";
    let (digits, rest) = values::split_digits(s.trim());
    if digits.len() != 3 || !rest.is_empty() {
        return Err(RANGE.into());
    }
    match digits.parse() {
        Ok(code @ 400..=599) => Ok(code),
        _ => Err(RANGE.into()),
    }
}

/// A Kubernetes DNS-1035 label (a Service name): lower-case letters, digits
/// and `-`, starting with a letter, at most 63 characters.
fn dns1035_label(s: &str) -> Result<String, String> {
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

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;

    pub(crate) const VALID: &[Valid] = &[
        // default-backend, custom-http-errors, disable-proxy-intercept-errors
        Valid {
            set: &[("default-backend", "fallback-svc")],
            want: |a| a.default_backend = Some("fallback-svc".into()),
        },
        Valid {
            set: &[("custom-http-errors", "404, 503,500,,404,599,400")],
            want: |a| a.custom_http_errors = Some(vec![404, 503, 500, 599, 400]),
        },
        Valid {
            set: &[
                ("custom-http-errors", "502"),
                ("disable-proxy-intercept-errors", "true"),
            ],
            want: |a| {
                a.custom_http_errors = Some(vec![502]);
                a.disable_proxy_intercept_errors = true;
            },
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "custom-http-errors",
            fallback: Fallback::Ignored,
            values: &[",", " , ,"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "disable-proxy-intercept-errors",
            fallback: Fallback::Ignored,
            values: &["yes", "on", "2"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "default-backend",
            fallback: Fallback::Ignored,
            values: &[
                "ns/svc",
                "Svc",
                "1svc",
                "svc-",
                "svc_name",
                "svc.ns",
                "a123456789012345678901234567890123456789012345678901234567890123",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];

    #[test]
    fn custom_http_errors_drops_invalid_entries_and_keeps_the_rest() {
        let value = "404, 200, 5O3, 600, 399, 4040, -404, 503";
        let parsed = parse_checked(&map(NGINX_PREFIX, &[("custom-http-errors", value)]));
        assert_eq!(parsed.ingress.custom_http_errors, Some(vec![404, 503]));
        let bad = ["200", "5O3", "600", "399", "4040", "-404"];
        assert_eq!(
            parsed.diagnostics.len(),
            bad.len(),
            "{:#?}",
            parsed.diagnostics
        );
        for (d, entry) in parsed.diagnostics.iter().zip(bad) {
            assert_eq!(d.kind, IGNORED);
            assert!(
                d.message.contains(&format!("\"{entry}\"")) && d.message.contains("400 to 599"),
                "{}",
                d.message
            );
        }
        // No valid entry at all: the annotation is ignored (the global list
        // applies), and says so.
        let parsed = parse_checked(&map(NGINX_PREFIX, &[("custom-http-errors", "200,302")]));
        assert_eq!(parsed.ingress.custom_http_errors, None);
        assert_eq!(parsed.diagnostics.len(), 3, "{:#?}", parsed.diagnostics);
        assert!(
            parsed
                .diagnostics
                .iter()
                .all(|d| d.kind == IGNORED && d.message.contains("400 to 599")),
            "{:#?}",
            parsed.diagnostics
        );
    }
}
