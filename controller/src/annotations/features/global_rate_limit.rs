//! Global rate limits, counted in Redis by every replica together:
//! `global-rate-limit`, `global-rate-limit-window`, `global-rate-limit-key`
//! and `global-rate-limit-ignored-cidrs`. As ingress-nginx: a limit without
//! a window (or of 0) is no limit, an invalid window denies the paths, an
//! invalid key falls back to `$remote_addr`.

use super::prelude::*;
use portico_dataplane::model::HashKey;

/// The global limit an Ingress asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GlobalLimitAnnotations {
    /// Requests per window; 0 or unset: none.
    pub limit: Option<u32>,
    /// The window, whole seconds.
    pub window_secs: Option<u32>,
    /// `None`: `$remote_addr`.
    pub key: Option<HashKey>,
    /// Clients never limited.
    pub ignored_cidrs: Vec<ipnet::IpNet>,
}

/// What `finish` needs to know beyond the typed values.
#[derive(Default)]
pub(crate) struct GlobalLimitDraft {
    /// A window was written, valid or not (an invalid one has its own
    /// diagnostic and denies the paths).
    window_written: bool,
}

/// Far above any real limit.
const MAX_LIMIT: u32 = 1_000_000_000;
/// A day: longer windows belong to quotas, not rate limits.
const MAX_WINDOW_SECS: u32 = 24 * 60 * 60;

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "global-rate-limit",
        "",
        Ingress,
        Ignored,
        Partly(
            "counted in Redis (--redis-url) rather than memcached; a sliding window as ingress-nginx's lua-resty-global-throttle",
        ),
        "Requests per `global-rate-limit-window` per key (`global-rate-limit-key`), counted by every replica together in Redis (`--redis-url`); beyond that the answer is `--global-rate-limit-status-code` (default 429) with `Retry-After`. Shared by the Ingress's paths. Needs `global-rate-limit-window`. `0`: no limit. When Redis cannot answer, requests pass (or get 503 with `--global-rate-limit-fail-closed`).",
        global_rate_limit,
    ),
    spec(
        "global-rate-limit-window",
        "",
        Ingress,
        PathDenied,
        Full,
        "The window of `global-rate-limit`: a duration such as `10s`, `1m` or `1h30m` (whole seconds, 1s to 24h). Invalid: the paths answer 503, as ingress-nginx.",
        global_rate_limit_window,
    ),
    spec(
        "global-rate-limit-key",
        "$remote_addr",
        Ingress,
        Ignored,
        Partly(
            "only variables, concatenated (`$remote_addr`, `$request_uri`, `$uri`, `$host`, `$http_<name>`, `$cookie_<name>`, `$arg_<name>`); literal text and `${...}` are refused",
        ),
        "What `global-rate-limit` counts by: nginx variables, concatenated (e.g. `$http_x_api_client`, `$remote_addr$http_x_api_client`). A request with none of them is not limited. Hashed before it reaches Redis; never interpreted. Invalid: `$remote_addr`.",
        global_rate_limit_key,
    ),
    spec(
        "global-rate-limit-ignored-cidrs",
        "",
        Ingress,
        Ignored,
        Full,
        "Client addresses `global-rate-limit` never counts (CIDR ranges or addresses, comma-separated). An invalid list is ignored: every client is limited.",
        global_rate_limit_ignored_cidrs,
    ),
];

fn global_rate_limit(v: &str, d: &mut Draft) -> Result<(), String> {
    let n = values::uint(v)?;
    if n > MAX_LIMIT {
        return Err(format!("must be at most {MAX_LIMIT}"));
    }
    d.out.global_limit.limit = Some(n);
    Ok(())
}

fn global_rate_limit_window(v: &str, d: &mut Draft) -> Result<(), String> {
    d.global_limit.window_written = true;
    d.out.global_limit.window_secs = Some(window(v)?);
    Ok(())
}

fn global_rate_limit_key(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.global_limit.key = Some(HashKey::parse(v)?);
    Ok(())
}

fn global_rate_limit_ignored_cidrs(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.global_limit.ignored_cidrs = super::access_lists::source_ranges(v)?;
    Ok(())
}

/// The window as ingress-nginx reads it (Go's duration syntax), in the
/// Gateway API grammar Portico reads everywhere (`10s`, `1m`, `1h30m`):
/// whole seconds, 1s to 24h.
fn window(s: &str) -> Result<u32, String> {
    let d = crate::translate::parse_duration(s.trim())
        .ok_or("expected a duration such as 10s, 1m or 1h30m")?;
    if d.subsec_nanos() != 0 {
        return Err("must be whole seconds".into());
    }
    match u32::try_from(d.as_secs()) {
        Ok(0) => Err("must be at least 1s".into()),
        Ok(n) if n <= MAX_WINDOW_SECS => Ok(n),
        _ => Err("must be at most 24h".into()),
    }
}

/// A limit without a window, or a window without a limit, does nothing:
/// said on the one that is set.
pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    let g = &d.out.global_limit;
    let limit = g.limit.filter(|n| *n > 0);
    match (limit, g.window_secs) {
        (Some(_), None) if !d.global_limit.window_written => d.note(
            notes,
            "global-rate-limit",
            "needs global-rate-limit-window; no global limit applies",
        ),
        (None, Some(_)) if g.limit.is_none() => d.note(
            notes,
            "global-rate-limit-window",
            "has no effect without global-rate-limit",
        ),
        _ => {}
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::annotations::tests::*;

    pub(crate) const VALID: &[Valid] = &[
        Valid {
            set: &[
                ("global-rate-limit", "100"),
                ("global-rate-limit-window", "1m"),
            ],
            want: |a| {
                a.global_limit.limit = Some(100);
                a.global_limit.window_secs = Some(60);
            },
        },
        Valid {
            set: &[
                ("global-rate-limit", "5"),
                ("global-rate-limit-window", "1h30m"),
                ("global-rate-limit-key", "$remote_addr$http_x_api_client"),
                ("global-rate-limit-ignored-cidrs", "10.0.0.0/8, 192.0.2.7"),
            ],
            want: |a| {
                a.global_limit.limit = Some(5);
                a.global_limit.window_secs = Some(5400);
                a.global_limit.key =
                    Some(HashKey::parse("$remote_addr$http_x_api_client").unwrap());
                a.global_limit.ignored_cidrs = vec![
                    "10.0.0.0/8".parse().unwrap(),
                    "192.0.2.7/32".parse().unwrap(),
                ];
            },
        },
        Valid {
            set: &[
                ("global-rate-limit", "0"),
                ("global-rate-limit-window", "10s"),
            ],
            want: |a| {
                a.global_limit.limit = Some(0);
                a.global_limit.window_secs = Some(10);
            },
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "global-rate-limit",
            fallback: Fallback::Ignored,
            values: &["-1", "ten", "1.5", "1000000001"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "global-rate-limit-window",
            fallback: Fallback::PathDenied,
            values: &[
                "1", "0s", "1.5m", "1d", "25h", "m", "1m-", "1500ms", "99999s",
            ],
            context: &[("global-rate-limit", "10")],
            want: |a| a.global_limit.limit = Some(10),
        },
        Invalid {
            name: "global-rate-limit-key",
            fallback: Fallback::Ignored,
            values: &[
                "remote_addr",
                "${remote_addr}",
                "$remote_addr-$host",
                "$server_name",
            ],
            context: &[
                ("global-rate-limit", "10"),
                ("global-rate-limit-window", "1m"),
            ],
            want: |a| {
                a.global_limit.limit = Some(10);
                a.global_limit.window_secs = Some(60);
            },
        },
        Invalid {
            name: "global-rate-limit-ignored-cidrs",
            fallback: Fallback::Ignored,
            values: &["10.0.0.0/33", "everyone"],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];

    #[test]
    fn windows_as_ingress_nginx_writes_them() {
        assert_eq!(window("10s"), Ok(10));
        assert_eq!(window("2m"), Ok(120));
        assert_eq!(window("1h0m30s"), Ok(3630));
        assert_eq!(window("24h"), Ok(86_400));
    }

    #[test]
    fn a_limit_and_a_window_need_each_other() {
        for (set, on) in [
            (&[("global-rate-limit", "10")][..], "global-rate-limit"),
            (
                &[("global-rate-limit-window", "1m")][..],
                "global-rate-limit-window",
            ),
        ] {
            let parsed = parse_checked(&map(crate::annotations::PORTICO_PREFIX, set));
            assert_eq!(parsed.diagnostics.len(), 1, "{set:?}");
            assert!(parsed.diagnostics[0].key.ends_with(on), "{parsed:?}");
        }
    }
}
