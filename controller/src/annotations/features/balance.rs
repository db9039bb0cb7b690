//! Load balancing and session affinity: `load-balance`, `upstream-hash-by`,
//! `affinity`, `affinity-mode` and `session-cookie-*`. Precedence (as
//! ingress-nginx): cookie affinity, then the hash, then `load-balance`.

use super::prelude::*;
use portico_dataplane::model::{AffinityMode, HashKey, SameSite};

/// `load-balance`, `upstream-hash-by`, `affinity` and `session-cookie-*`:
/// how each request's endpoint is chosen. Precedence (as ingress-nginx):
/// cookie affinity, then the hash, then `load-balance`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BalanceAnnotations {
    pub load_balance: Option<LoadBalance>,
    pub upstream_hash_by: Option<portico_dataplane::model::HashKey>,
    /// `affinity: cookie`.
    pub affinity_cookie: bool,
    pub affinity_mode: Option<portico_dataplane::model::AffinityMode>,
    /// A valid cookie name.
    pub session_cookie_name: Option<String>,
    /// Seconds.
    pub session_cookie_max_age: Option<u64>,
    /// Seconds from the response.
    pub session_cookie_expires: Option<u64>,
    /// A validated absolute path.
    pub session_cookie_path: Option<String>,
    /// A validated, lower-cased host name.
    pub session_cookie_domain: Option<String>,
    pub session_cookie_samesite: Option<portico_dataplane::model::SameSite>,
    pub session_cookie_secure: bool,
    pub session_cookie_change_on_failure: bool,
}

/// `load-balance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadBalance {
    RoundRobin,
    LeastRequest,
    Ewma,
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "load-balance",
        "round_robin",
        Path,
        Ignored,
        Partly(
            "`least_request` is a Portico addition; slow-starting endpoints get their share in every policy",
        ),
        "How each request's endpoint is chosen: `round_robin` (smooth weighted: endpoints in turn), `least_request` (the less loaded of two random endpoints) or `ewma` (the lower of two random endpoints' response-time average times their in-flight requests). Health, ejections and panic mode apply first; `upstream-hash-by` and `affinity` take precedence.",
        load_balance,
    ),
    spec(
        "upstream-hash-by",
        "",
        Path,
        Ignored,
        Partly(
            "only variables, concatenated: `$remote_addr`, `$request_uri`, `$uri`, `$host`, `$http_<name>`, `$cookie_<name>`, `$arg_<name>` (literal text and other variables are refused); an endpoint with more than 1.25 times the average load passes keys on (bounded load); requests without any of the variables are round-robined",
        ),
        "Consistent hashing: requests with the same key (e.g. `$request_uri`, `$http_x_user_id`, `$host$uri`) go to the same endpoint, and adding or removing an endpoint moves only its share of keys. Parsed into a typed key, never interpreted as text.",
        upstream_hash_by,
    ),
    spec(
        "affinity",
        "",
        Path,
        Ignored,
        Full,
        "`cookie`: sticky sessions. A client without the session cookie gets one (`Set-Cookie`, HttpOnly) for the endpoint it was sent to, and keeps going there while that endpoint is eligible; when it is not, the session moves.",
        affinity,
    ),
    spec(
        "affinity-mode",
        "balanced",
        Path,
        Ignored,
        Full,
        "`balanced`: the cookie holds a key a consistent hash maps to an endpoint, so scaling up moves a share of sessions; `persistent`: the cookie names its endpoint, which keeps its sessions as long as it lives.",
        affinity_mode,
    ),
    spec(
        "session-cookie-name",
        "INGRESSCOOKIE",
        Path,
        Ignored,
        Full,
        "Name of the sticky-session cookie.",
        session_cookie_name,
    ),
    spec(
        "session-cookie-max-age",
        "",
        Path,
        Ignored,
        Full,
        "`Max-Age` of the cookie in seconds; without it and session-cookie-expires the cookie lasts the browser session.",
        session_cookie_max_age,
    ),
    spec(
        "session-cookie-expires",
        "",
        Path,
        Ignored,
        Full,
        "`Expires` of the cookie, in seconds from the response.",
        session_cookie_expires,
    ),
    spec(
        "session-cookie-path",
        "",
        Path,
        Ignored,
        Full,
        "`Path` of the cookie; by default the Ingress path (`/` for regular-expression paths).",
        session_cookie_path,
    ),
    spec(
        "session-cookie-domain",
        "",
        Path,
        Ignored,
        Full,
        "`Domain` of the cookie (a host name).",
        session_cookie_domain,
    ),
    spec(
        "session-cookie-samesite",
        "",
        Path,
        Ignored,
        Partly("session-cookie-conditional-samesite-none is not supported"),
        "`SameSite` of the cookie: `None`, `Lax` or `Strict`.",
        session_cookie_samesite,
    ),
    spec(
        "session-cookie-secure",
        "false",
        Path,
        Ignored,
        Full,
        "Mark the cookie `Secure`.",
        session_cookie_secure,
    ),
    spec(
        "session-cookie-change-on-failure",
        "false",
        Path,
        Ignored,
        Full,
        "After a failed attempt is retried on another endpoint (proxy-next-upstream), point the session at that endpoint; otherwise the session stays with its endpoint.",
        session_cookie_change_on_failure,
    ),
];

fn load_balance(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.load_balance = Some(match v {
        "round_robin" => LoadBalance::RoundRobin,
        "least_request" => LoadBalance::LeastRequest,
        "ewma" => LoadBalance::Ewma,
        _ => return Err("expected round_robin, least_request or ewma".into()),
    });
    Ok(())
}

fn upstream_hash_by(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.upstream_hash_by = Some(HashKey::parse(v)?);
    Ok(())
}

fn affinity(v: &str, d: &mut Draft) -> Result<(), String> {
    if v != "cookie" {
        return Err("the only affinity is cookie".into());
    }
    d.out.balance.affinity_cookie = true;
    Ok(())
}

fn affinity_mode(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.affinity_mode = Some(match v {
        "balanced" => AffinityMode::Balanced,
        "persistent" => AffinityMode::Persistent,
        _ => return Err("expected balanced or persistent".into()),
    });
    Ok(())
}

fn session_cookie_name(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_name = Some(values::cookie_name(v)?);
    Ok(())
}

fn session_cookie_max_age(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_max_age = Some(u64::from(values::uint(v)?));
    Ok(())
}

fn session_cookie_expires(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_expires = Some(u64::from(values::uint(v)?));
    Ok(())
}

fn session_cookie_path(v: &str, d: &mut Draft) -> Result<(), String> {
    let path = values::absolute_path(v)?;
    if path.contains([';', ',']) {
        return Err("';' and ',' cannot be in a cookie path".into());
    }
    d.out.balance.session_cookie_path = Some(path);
    Ok(())
}

fn session_cookie_domain(v: &str, d: &mut Draft) -> Result<(), String> {
    let name = values::server_name(v.strip_prefix('.').unwrap_or(v))?;
    if name.starts_with("*.") {
        return Err("must be a host name, not a wildcard".into());
    }
    d.out.balance.session_cookie_domain = Some(name);
    Ok(())
}

fn session_cookie_samesite(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_samesite = Some(match v.to_ascii_lowercase().as_str() {
        "none" => SameSite::None,
        "lax" => SameSite::Lax,
        "strict" => SameSite::Strict,
        _ => return Err("expected None, Lax or Strict".into()),
    });
    Ok(())
}

fn session_cookie_secure(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_secure = values::go_bool(v)?;
    Ok(())
}

fn session_cookie_change_on_failure(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_change_on_failure = values::go_bool(v)?;
    Ok(())
}

/// ingress-nginx's precedence: affinity, then the hash, then
/// load-balance; cookie settings need affinity.
pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    const COOKIE_PARTS: [&str; 9] = [
        "affinity-mode",
        "session-cookie-name",
        "session-cookie-max-age",
        "session-cookie-expires",
        "session-cookie-path",
        "session-cookie-domain",
        "session-cookie-samesite",
        "session-cookie-secure",
        "session-cookie-change-on-failure",
    ];
    let b = &d.out.balance;
    if !b.affinity_cookie {
        for name in COOKIE_PARTS {
            d.note(
                notes,
                name,
                "has no effect without affinity: cookie; ignored",
            );
        }
        if b.upstream_hash_by.is_some() && b.load_balance.is_some() {
            d.note(
                notes,
                "load-balance",
                "upstream-hash-by is also set and wins, as in ingress-nginx; ignored",
            );
        }
        return;
    }
    for name in ["upstream-hash-by", "load-balance"] {
        d.note(
            notes,
            name,
            "affinity: cookie is also set and wins, as in ingress-nginx; ignored",
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::LoadBalance;
    use crate::annotations::tests::*;
    use http::HeaderName;
    use portico_dataplane::model::{AffinityMode, HashKey, HashVar, SameSite};

    pub(crate) const VALID: &[Valid] = &[
        // load balancing
        Valid {
            set: &[("load-balance", "ewma")],
            want: |a| a.balance.load_balance = Some(LoadBalance::Ewma),
        },
        Valid {
            set: &[("load-balance", "least_request")],
            want: |a| a.balance.load_balance = Some(LoadBalance::LeastRequest),
        },
        Valid {
            set: &[("upstream-hash-by", "$host$http_x_user_id")],
            want: |a| {
                a.balance.upstream_hash_by = Some(HashKey(vec![
                    HashVar::Host,
                    HashVar::Header(HeaderName::from_static("x-user-id")),
                ]))
            },
        },
        Valid {
            set: &[
                ("affinity", "cookie"),
                ("affinity-mode", "persistent"),
                ("session-cookie-name", "route"),
                ("session-cookie-max-age", "3600"),
                ("session-cookie-expires", "7200"),
                ("session-cookie-path", "/shop"),
            ],
            want: |a| {
                let b = &mut a.balance;
                b.affinity_cookie = true;
                b.affinity_mode = Some(AffinityMode::Persistent);
                b.session_cookie_name = Some("route".into());
                b.session_cookie_max_age = Some(3600);
                b.session_cookie_expires = Some(7200);
                b.session_cookie_path = Some("/shop".into());
            },
        },
        Valid {
            set: &[
                ("affinity", "cookie"),
                ("session-cookie-domain", ".Example.com"),
                ("session-cookie-samesite", "strict"),
                ("session-cookie-secure", "true"),
                ("session-cookie-change-on-failure", "true"),
            ],
            want: |a| {
                let b = &mut a.balance;
                b.affinity_cookie = true;
                b.session_cookie_domain = Some("example.com".into());
                b.session_cookie_samesite = Some(SameSite::Strict);
                b.session_cookie_secure = true;
                b.session_cookie_change_on_failure = true;
            },
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "load-balance",
            fallback: Fallback::Ignored,
            values: &["least_conn", "RoundRobin", "random"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "upstream-hash-by",
            fallback: Fallback::Ignored,
            values: &[
                "$binary_remote_addr",
                "request_uri",
                "$host-$uri",
                "${host}",
                "$http_",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "affinity",
            fallback: Fallback::Ignored,
            values: &["ip", "Cookie"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "affinity-mode",
            fallback: Fallback::Ignored,
            values: &["sticky"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "session-cookie-name",
            fallback: Fallback::Ignored,
            values: &["a b", "a;b", "a=b"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "session-cookie-max-age",
            fallback: Fallback::Ignored,
            values: &["-1", "1h"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "session-cookie-expires",
            fallback: Fallback::Ignored,
            values: &["tomorrow"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "session-cookie-path",
            fallback: Fallback::Ignored,
            values: &["shop", "/a b", "/a;b"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "session-cookie-domain",
            fallback: Fallback::Ignored,
            values: &["*.example.com", "a b"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "session-cookie-samesite",
            fallback: Fallback::Ignored,
            values: &["Sometimes"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "session-cookie-secure",
            fallback: Fallback::Ignored,
            values: &["yes"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "session-cookie-change-on-failure",
            fallback: Fallback::Ignored,
            values: &["on"],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];

    #[test]
    fn affinity_beats_the_hash_which_beats_load_balance() {
        let parsed = parse_checked(&map(
            PORTICO_PREFIX,
            &[("upstream-hash-by", "$uri"), ("load-balance", "ewma")],
        ));
        assert_eq!(kinds(&parsed), vec![("portico.dev/load-balance", IGNORED)]);
        let parsed = parse_checked(&map(
            PORTICO_PREFIX,
            &[("upstream-hash-by", "$uri"), ("affinity", "cookie")],
        ));
        assert_eq!(
            kinds(&parsed),
            vec![("portico.dev/upstream-hash-by", IGNORED)]
        );
    }

    #[test]
    fn session_cookie_settings_need_affinity() {
        let parsed = parse_checked(&map(
            NGINX_PREFIX,
            &[
                ("session-cookie-name", "route"),
                ("affinity-mode", "persistent"),
            ],
        ));
        assert_eq!(
            kinds(&parsed),
            vec![
                ("nginx.ingress.kubernetes.io/affinity-mode", IGNORED),
                ("nginx.ingress.kubernetes.io/session-cookie-name", IGNORED),
            ]
        );
    }
}
