//! `proxy-*-timeout` and the retries `proxy-next-upstream*`.

use super::prelude::*;
use crate::annotations::{DiagnosticKind, Note, quote};
use portico_dataplane::model::RetryOn;
use std::time::Duration;

/// `proxy-next-upstream*`. `None`: the default applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetryAnnotations {
    pub on: Option<portico_dataplane::model::RetryOn>,
    /// 0: as many as endpoints.
    pub tries: Option<u32>,
    /// `Some(None)`: explicitly no limit (`0`).
    pub timeout: Option<Option<Duration>>,
}

pub(super) const TIMEOUTS: &[AnnotationSpec] = &[
    spec(
        "proxy-connect-timeout",
        "5",
        Path,
        Ignored,
        Full,
        "Timeout for connecting to a backend: whole seconds as ingress-nginx, or one nginx unit (`500ms`, `30s`, `5m`, `1h`); more than 0, at most 24h.",
        proxy_connect_timeout,
    ),
    spec(
        "proxy-read-timeout",
        "60",
        Path,
        Ignored,
        Full,
        "Longest wait for the backend's response headers and between two pieces of its body; same syntax and bounds as proxy-connect-timeout.",
        proxy_read_timeout,
    ),
    spec(
        "proxy-send-timeout",
        "60",
        Path,
        Ignored,
        Full,
        "Longest wait between two pieces of the request body sent to the backend; same syntax and bounds as proxy-connect-timeout.",
        proxy_send_timeout,
    ),
];

pub(super) const RETRIES: &[AnnotationSpec] = &[
    spec(
        "proxy-next-upstream",
        "error timeout",
        Path,
        Ignored,
        Partly(
            "`invalid_header`, `http_403`, `http_404` and `http_429` are not supported (reported, the rest applies); a request body is never sent twice, so a request with a body is retried only when none of it was sent; retries draw on a budget per backend (20% of its requests plus 10 per second)",
        ),
        "When a failed attempt is tried again on another endpoint of the backend (never one already tried): space-separated `error` (no response: connect failure, reset), `timeout` (connect or response-head timeout), `http_500`, `http_502`, `http_503`, `http_504`, `non_idempotent` (also retry POST, PATCH, ... after they were sent; a request that never left is always retried), or `off`.",
        proxy_next_upstream,
    ),
    spec(
        "proxy-next-upstream-tries",
        "3",
        Path,
        Ignored,
        Full,
        "Attempts in all, the first included; `0`: as many as the backend has endpoints.",
        proxy_next_upstream_tries,
    ),
    spec(
        "proxy-next-upstream-timeout",
        "0",
        Path,
        Ignored,
        Full,
        "No retry starts later than this after the first attempt: whole seconds or one unit (`500ms`, `10s`); `0`: no limit.",
        proxy_next_upstream_timeout,
    ),
];

fn proxy_connect_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.proxy_connect_timeout = Some(values::timeout(v)?);
    Ok(())
}

fn proxy_read_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.proxy_read_timeout = Some(values::timeout(v)?);
    Ok(())
}

fn proxy_send_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.proxy_send_timeout = Some(values::timeout(v)?);
    Ok(())
}

fn proxy_next_upstream(v: &str, d: &mut Draft) -> Result<(), String> {
    let mut on = RetryOn::OFF;
    let mut off = false;
    let mut unsupported = Vec::new();
    for token in v.split_ascii_whitespace() {
        match token {
            "error" => on.error = true,
            "timeout" => on.timeout = true,
            "http_500" => on.http_500 = true,
            "http_502" => on.http_502 = true,
            "http_503" => on.http_503 = true,
            "http_504" => on.http_504 = true,
            "non_idempotent" => on.non_idempotent = true,
            "off" => off = true,
            "invalid_header" | "http_403" | "http_404" | "http_429" => unsupported.push(token),
            _ => {
                return Err(format!(
                    "{} is not one of error, timeout, http_500, http_502, http_503, http_504, non_idempotent, off",
                    quote(token)
                ));
            }
        }
    }
    if off && (on != RetryOn::OFF || !unsupported.is_empty()) {
        return Err("off cannot be combined with other values".into());
    }
    if !unsupported.is_empty() {
        d.notes.push(Note {
            kind: DiagnosticKind::Partial,
            message: format!(
                "{} not supported by Portico; ignored, the rest applies",
                unsupported.join(", ")
            ),
        });
    }
    d.out.retry.on = Some(on);
    Ok(())
}

fn proxy_next_upstream_tries(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.retry.tries = Some(values::uint(v)?);
    Ok(())
}

fn proxy_next_upstream_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.retry.timeout = Some(if v == "0" {
        None
    } else {
        Some(values::timeout(v)?)
    });
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;
    use portico_dataplane::model::RetryOn;
    use std::time::Duration;

    pub(crate) const VALID: &[Valid] = &[
        // timeouts
        Valid {
            set: &[("proxy-connect-timeout", "30")],
            want: |a| a.proxy_connect_timeout = Some(Duration::from_secs(30)),
        },
        Valid {
            set: &[("proxy-connect-timeout", "500ms")],
            want: |a| a.proxy_connect_timeout = Some(Duration::from_millis(500)),
        },
        Valid {
            set: &[("proxy-read-timeout", "90s")],
            want: |a| a.proxy_read_timeout = Some(Duration::from_secs(90)),
        },
        Valid {
            set: &[("proxy-read-timeout", "86400")],
            want: |a| a.proxy_read_timeout = Some(Duration::from_secs(86400)),
        },
        Valid {
            set: &[("proxy-send-timeout", "5m")],
            want: |a| a.proxy_send_timeout = Some(Duration::from_secs(300)),
        },
        Valid {
            set: &[("proxy-send-timeout", "24h")],
            want: |a| a.proxy_send_timeout = Some(Duration::from_secs(86400)),
        },
        // retries
        Valid {
            set: &[
                (
                    "proxy-next-upstream",
                    "error  timeout http_503 non_idempotent",
                ),
                ("proxy-next-upstream-tries", "5"),
                ("proxy-next-upstream-timeout", "10s"),
            ],
            want: |a| {
                a.retry.on = Some(RetryOn {
                    error: true,
                    timeout: true,
                    http_503: true,
                    non_idempotent: true,
                    ..RetryOn::OFF
                });
                a.retry.tries = Some(5);
                a.retry.timeout = Some(Some(Duration::from_secs(10)));
            },
        },
        Valid {
            set: &[
                ("proxy-next-upstream", "off"),
                ("proxy-next-upstream-tries", "0"),
                ("proxy-next-upstream-timeout", "0"),
            ],
            want: |a| {
                a.retry.on = Some(RetryOn::OFF);
                a.retry.tries = Some(0);
                a.retry.timeout = Some(None);
            },
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "proxy-next-upstream",
            fallback: Fallback::Ignored,
            values: &["error,timeout", "off error", "sometimes", "http_5xx"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "proxy-next-upstream-tries",
            fallback: Fallback::Ignored,
            values: &["-1", "three"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "proxy-next-upstream-timeout",
            fallback: Fallback::Ignored,
            values: &["0s", "forever", "25h"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "proxy-connect-timeout",
            fallback: Fallback::Ignored,
            values: &[
                "0",
                "0s",
                "-5",
                "abc",
                "5d",
                "86401",
                "25h",
                "1.5",
                "5 s",
                "9999999999999",
                "5S",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "proxy-read-timeout",
            fallback: Fallback::Ignored,
            values: &["0ms", "+60", "60sec", "1441m"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "proxy-send-timeout",
            fallback: Fallback::Ignored,
            values: &["never", "6 0", "1h30m"],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];

    #[test]
    fn retry_conditions_nginx_has_and_portico_not_are_reported() {
        let parsed = parse_checked(&map(
            NGINX_PREFIX,
            &[("proxy-next-upstream", "error http_404 http_502")],
        ));
        assert_eq!(
            kinds(&parsed),
            vec![(
                "nginx.ingress.kubernetes.io/proxy-next-upstream",
                DiagnosticKind::Partial
            )]
        );
        assert_eq!(
            parsed.ingress.retry.on,
            Some(RetryOn {
                error: true,
                http_502: true,
                ..RetryOn::OFF
            })
        );
    }
}
