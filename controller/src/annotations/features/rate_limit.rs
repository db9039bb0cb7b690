//! Local rate and connection limits: `limit-rps`, `limit-rpm`,
//! `limit-burst-multiplier`, `limit-connections`, `limit-allowlist` (alias
//! `limit-whitelist`), `limit-rate`, `limit-rate-after` and
//! `limit-headers` (Portico's own). As
//! ingress-nginx, an invalid value is ignored (that limit is not applied,
//! or the default applies), with a diagnostic.

use super::prelude::*;

/// The limits an Ingress asks for; zero or unset: none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LimitAnnotations {
    /// Requests per second per client address.
    pub rps: Option<u32>,
    /// Requests per minute per client address.
    pub rpm: Option<u32>,
    /// `burst = rate × multiplier`; `None`: 5.
    pub burst_multiplier: Option<u32>,
    /// Requests in flight per client address.
    pub connections: Option<u32>,
    /// Clients no limit applies to.
    pub allowlist: Vec<ipnet::IpNet>,
    /// Send the IETF `RateLimit-Policy` and `RateLimit` headers.
    pub headers: bool,
    /// `limit-rate`: response bandwidth, KiB per second (nginx `k`).
    pub rate_kib: Option<u32>,
    /// `limit-rate-after`: KiB sent before `limit-rate` applies.
    pub rate_after_kib: Option<u32>,
}

/// ingress-nginx's default burst multiplier.
pub const DEFAULT_BURST_MULTIPLIER: u32 = 5;

/// Sane bounds: far above any real limit, low enough that `rate ×
/// multiplier` cannot overflow and a bucket's interval is at least a
/// nanosecond.
const MAX_RPS: u32 = 1_000_000;
const MAX_RPM: u32 = 60_000_000;
const MAX_BURST_MULTIPLIER: u32 = 1_000;
const MAX_CONNECTIONS: u32 = 1_000_000;
/// 1 GiB/s and 1 TiB: above any real response.
const MAX_RATE_KIB: u32 = 1 << 20;
const MAX_RATE_AFTER_KIB: u32 = 1 << 30;

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "limit-rps",
        "",
        Path,
        Ignored,
        Partly(
            "per replica, as ingress-nginx; a request is refused with --limit-req-status-code (503) and Retry-After",
        ),
        "Requests per second per client address (nginx `limit_req`, `nodelay`): `rate × limit-burst-multiplier` more pass at once, then one per `1/rate` s; beyond that the answer is `--limit-req-status-code` (default 503) with `Retry-After`. Counted per replica, shared by the Ingress's paths. `0`: no limit. At most 1000000.",
        limit_rps,
    ),
    spec(
        "limit-rpm",
        "",
        Path,
        Ignored,
        Partly("per replica, as ingress-nginx"),
        "Requests per minute per client address, as `limit-rps`; with both set, a request must pass both. `0`: no limit. At most 60000000.",
        limit_rpm,
    ),
    spec(
        "limit-burst-multiplier",
        "5",
        Path,
        Ignored,
        Full,
        "The burst of `limit-rps` and `limit-rpm`: that many times the rate may pass at once. 1 to 1000.",
        limit_burst_multiplier,
    ),
    spec(
        "limit-connections",
        "",
        Path,
        Ignored,
        Partly(
            "counts requests in flight (until the response ends), not TCP connections: the same for HTTP/1.1, and what a client can hold open on one HTTP/2 connection",
        ),
        "Requests in flight at once per client address (nginx `limit_conn`); one more is answered `--limit-conn-status-code` (default 503). Per replica. `0`: no limit. At most 1000000.",
        limit_connections,
    ),
    AnnotationSpec {
        aliases: &["limit-whitelist"],
        ..spec(
            "limit-allowlist",
            "",
            Path,
            Ignored,
            Full,
            "Client addresses no rate or connection limit applies to (CIDR ranges or addresses, comma-separated). An invalid list is ignored: the limits apply to every client.",
            limit_allowlist,
        )
    },
    spec(
        "limit-rate",
        "",
        Path,
        Ignored,
        Full,
        "Response bandwidth per request, in kilobytes (KiB) per second (nginx `limit_rate Nk`): after `limit-rate-after`, each response body is sent at this rate on average. `0`: no limit. At most 1048576.",
        limit_rate,
    ),
    spec(
        "limit-rate-after",
        "0",
        Path,
        Ignored,
        Full,
        "Kilobytes (KiB) of each response sent at full speed before `limit-rate` applies.",
        limit_rate_after,
    ),
    spec(
        "limit-headers",
        "false",
        Path,
        Ignored,
        Full,
        "Portico's own: send the IETF `RateLimit-Policy` and `RateLimit` headers (draft-ietf-httpapi-ratelimit-headers) on the answers of paths with `limit-rps` or `limit-rpm`.",
        limit_headers,
    ),
];

/// A whole number from 0 to `max`.
fn bounded(v: &str, max: u32) -> Result<u32, String> {
    let n = values::uint(v)?;
    if n > max {
        return Err(format!("must be at most {max}"));
    }
    Ok(n)
}

fn limit_rps(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.limits.rps = Some(bounded(v, MAX_RPS)?);
    Ok(())
}

fn limit_rpm(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.limits.rpm = Some(bounded(v, MAX_RPM)?);
    Ok(())
}

fn limit_burst_multiplier(v: &str, d: &mut Draft) -> Result<(), String> {
    let n = bounded(v, MAX_BURST_MULTIPLIER)?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    d.out.limits.burst_multiplier = Some(n);
    Ok(())
}

fn limit_connections(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.limits.connections = Some(bounded(v, MAX_CONNECTIONS)?);
    Ok(())
}

fn limit_allowlist(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.limits.allowlist = super::access_lists::source_ranges(v)?;
    Ok(())
}

fn limit_rate(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.limits.rate_kib = Some(bounded(v, MAX_RATE_KIB)?);
    Ok(())
}

fn limit_rate_after(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.limits.rate_after_kib = Some(bounded(v, MAX_RATE_AFTER_KIB)?);
    Ok(())
}

fn limit_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.limits.headers = values::go_bool(v)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;

    pub(crate) const VALID: &[Valid] = &[
        Valid {
            set: &[("limit-rps", "10"), ("limit-burst-multiplier", "3")],
            want: |a| {
                a.limits.rps = Some(10);
                a.limits.burst_multiplier = Some(3);
            },
        },
        Valid {
            set: &[("limit-rpm", "600"), ("limit-rps", "0")],
            want: |a| {
                a.limits.rpm = Some(600);
                a.limits.rps = Some(0);
            },
        },
        Valid {
            set: &[("limit-connections", "20"), ("limit-headers", "true")],
            want: |a| {
                a.limits.connections = Some(20);
                a.limits.headers = true;
            },
        },
        Valid {
            set: &[("limit-allowlist", "10.0.0.0/8, 192.0.2.7")],
            want: |a| {
                a.limits.allowlist = vec![
                    "10.0.0.0/8".parse().unwrap(),
                    "192.0.2.7/32".parse().unwrap(),
                ]
            },
        },
        Valid {
            set: &[("limit-rate", "100"), ("limit-rate-after", "1024")],
            want: |a| {
                a.limits.rate_kib = Some(100);
                a.limits.rate_after_kib = Some(1024);
            },
        },
        Valid {
            set: &[("limit-whitelist", "::1")],
            want: |a| a.limits.allowlist = vec!["::1/128".parse().unwrap()],
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "limit-rps",
            fallback: Fallback::Ignored,
            values: &["-1", "1.5", "ten", "1000001", "99999999999"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "limit-rpm",
            fallback: Fallback::Ignored,
            values: &["-5", "60000001", "5/m"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "limit-burst-multiplier",
            fallback: Fallback::Ignored,
            values: &["0", "1001", "x"],
            context: &[("limit-rps", "5")],
            want: |a| a.limits.rps = Some(5),
        },
        Invalid {
            name: "limit-connections",
            fallback: Fallback::Ignored,
            values: &["-1", "1000001", "many"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "limit-allowlist",
            fallback: Fallback::Ignored,
            values: &["10.0.0.0/33", "all", ","],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "limit-rate",
            fallback: Fallback::Ignored,
            values: &["1m", "-1", "1048577"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "limit-rate-after",
            fallback: Fallback::Ignored,
            values: &["10k", "1073741825"],
            context: &[("limit-rate", "10")],
            want: |a| a.limits.rate_kib = Some(10),
        },
        Invalid {
            name: "limit-headers",
            fallback: Fallback::Ignored,
            values: &["yes"],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];
}
