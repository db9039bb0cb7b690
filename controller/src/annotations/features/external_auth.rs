//! External authentication (oauth2-proxy's ingress-nginx set): `auth-url`
//! and its parts (`auth-method`, `auth-signin`, `auth-response-headers`,
//! ...), the pool knobs `auth-keepalive*`, `enable-global-auth` and
//! Portico's `auth-timeout`. Everything is parsed into typed values: URLs
//! and cache keys into templates of known nginx variables
//! (`portico_dataplane::external_auth::Template`). An invalid part of a
//! policy fails closed (the paths answer 503) rather than let requests
//! through unchecked; the parts mean nothing without `auth-url`.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use portico_dataplane::external_auth::Template;
use portico_dataplane::model::{AuthKeepalive, ExternalAuth, ExternalAuthCache};

use super::prelude::*;
use crate::annotations::{DiagnosticKind, Note};

/// The `auth-*` annotations of external authentication, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalAuthAnnotations {
    pub url: Option<Template>,
    pub method: Option<Method>,
    pub signin: Option<Template>,
    pub signin_redirect_param: Option<String>,
    pub response_headers: Vec<HeaderName>,
    pub request_redirect: Option<String>,
    pub proxy_set_headers: Vec<(HeaderName, HeaderValue)>,
    pub always_set_cookie: bool,
    pub cache_key: Option<Template>,
    /// Only 2xx answers are cached; `None`: no cache.
    pub cache_duration: Option<Duration>,
    pub keepalive: Option<usize>,
    pub keepalive_timeout: Option<Duration>,
    pub timeout: Option<Duration>,
    /// `enable-global-auth`: the `--global-auth-url` policy applies to
    /// paths without their own `auth-url`.
    pub global: bool,
}

impl Default for ExternalAuthAnnotations {
    fn default() -> Self {
        Self {
            url: None,
            method: None,
            signin: None,
            signin_redirect_param: None,
            response_headers: Vec::new(),
            request_redirect: None,
            proxy_set_headers: Vec::new(),
            always_set_cookie: false,
            cache_key: None,
            cache_duration: None,
            keepalive: None,
            keepalive_timeout: None,
            timeout: None,
            global: true,
        }
    }
}

impl ExternalAuthAnnotations {
    /// The dataplane policy, when `auth-url` is set.
    pub fn policy(&self) -> Option<ExternalAuth> {
        let mut p = ExternalAuth::new(self.url.clone()?);
        p.method = self.method.clone();
        p.signin = self.signin.clone();
        if let Some(param) = &self.signin_redirect_param {
            p.signin_redirect_param = param.clone();
        }
        p.response_headers = self.response_headers.clone();
        p.request_redirect = self.request_redirect.clone();
        p.proxy_set_headers = self.proxy_set_headers.clone();
        p.always_set_cookie = self.always_set_cookie;
        if let Some(t) = self.timeout {
            p.timeout = t;
        }
        p.cache = match (&self.cache_key, self.cache_duration) {
            (Some(key), Some(duration)) => Some(ExternalAuthCache {
                key: key.clone(),
                duration,
            }),
            _ => None,
        };
        let defaults = AuthKeepalive::default();
        p.keepalive = AuthKeepalive {
            connections: self.keepalive.unwrap_or(defaults.connections),
            idle_timeout: self.keepalive_timeout.unwrap_or(defaults.idle_timeout),
        };
        Some(p)
    }
}

/// Which parts were written, valid or not.
#[derive(Default)]
pub(crate) struct ExternalAuthDraft {
    url_written: bool,
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "auth-url",
        "",
        Path,
        PathDenied,
        Partly(
            "nginx variables: only $host, $best_http_host, $scheme, $request_uri, $escaped_request_uri, $http_<name>, $arg_<name>, $cookie_<name>, each escaped for where it lands, and none in the URL's host or port; with `auth-type: basic` too, basic authentication is checked first",
        ),
        "The authentication service, an http(s) URL: each request is first sent there (its method by `auth-method`, no body, the client's headers plus `X-Original-URL`, `X-Original-Method`, `X-Forwarded-Host`, `-Proto`, `-Uri`, `X-Real-IP`, `X-Request-Id`, `X-Auth-Request-Redirect`). 2xx allows; 401 redirects to `auth-signin` or answers 401 with the service's `WWW-Authenticate`; 403 answers 403; any other answer, a timeout or an unreachable service answers 500. See docs/external-auth.md.",
        auth_url,
    ),
    spec(
        "auth-method",
        "GET",
        Path,
        PathDenied,
        Full,
        "The subrequest's HTTP method.",
        auth_method,
    ),
    spec(
        "auth-signin",
        "",
        Path,
        PathDenied,
        Partly(
            "the variables of `auth-url`; the host may also be exactly `$host` or `$best_http_host`",
        ),
        "Where a 401 from the service sends the client (302), with the original URL, escaped, in `auth-signin-redirect-param` unless the written URL already sets it.",
        auth_signin,
    ),
    spec(
        "auth-signin-redirect-param",
        "rd",
        Path,
        PathDenied,
        Full,
        "The query parameter of `auth-signin` that carries the original URL.",
        auth_signin_redirect_param,
    ),
    spec(
        "auth-response-headers",
        "",
        Path,
        PathDenied,
        Full,
        "Comma-separated headers copied from the service's 2xx answer onto the upstream request; copies the client sent under those names are removed, present in the answer or not.",
        auth_response_headers,
    ),
    spec(
        "auth-request-redirect",
        "",
        Path,
        PathDenied,
        Full,
        "The `X-Auth-Request-Redirect` header of the subrequest; the original request URI when unset.",
        auth_request_redirect,
    ),
    spec(
        "auth-proxy-set-headers",
        "",
        Path,
        PathDenied,
        Partly(
            "the value is the headers themselves, one `Name: value` per line, not a ConfigMap reference: Portico does not read ConfigMaps",
        ),
        "Headers set on the subrequest, one `Name: value` per line; framing, connection and Host headers are refused.",
        auth_proxy_set_headers,
    ),
    spec(
        "auth-cache-key",
        "",
        Path,
        PathDenied,
        Partly(
            "variables as in `auth-url`, each escaped, so that no two requests share a key by smuggling a separator",
        ),
        "With `auth-cache-duration`, allowing answers (and their copied headers) are remembered per rendered key, e.g. `$cookie__oauth2_proxy`.",
        auth_cache_key,
    ),
    spec(
        "auth-cache-duration",
        "",
        Path,
        Ignored,
        Partly("only 2xx answers are cached: other statuses listed are reported and not cached"),
        "Statuses then a duration, e.g. `200 202 5m`: how long an allowing answer is remembered (at most 24h). Each policy keeps up to 256 answers of up to 8 KiB.",
        auth_cache_duration,
    ),
    spec(
        "auth-always-set-cookie",
        "false",
        Path,
        Ignored,
        Full,
        "The service's `Set-Cookie` also reaches the client when it allows (always when it denies).",
        auth_always_set_cookie,
    ),
    spec(
        "auth-keepalive",
        "32",
        Path,
        Ignored,
        Partly("Portico pools connections to the service by default (ingress-nginx: 0, none)"),
        "Idle connections kept to the authentication service; 0 closes each after use.",
        auth_keepalive,
    ),
    spec(
        "auth-keepalive-requests",
        "",
        Path,
        Ignored,
        Partly("accepted and ignored: Portico's pool does not limit the requests per connection"),
        "Requests per pooled connection (ignored).",
        auth_keepalive_requests,
    ),
    spec(
        "auth-keepalive-share-vars",
        "",
        Path,
        Ignored,
        Partly("accepted and ignored: the subrequest shares no nginx variables"),
        "Whether the subrequest shares nginx variables (ignored).",
        auth_keepalive_share_vars,
    ),
    spec(
        "auth-keepalive-timeout",
        "60s",
        Path,
        Ignored,
        Full,
        "How long an idle pooled connection to the service is kept.",
        auth_keepalive_timeout,
    ),
    spec(
        "auth-timeout",
        "5s",
        Path,
        Ignored,
        Partly("Portico's own"),
        "Bounds the whole exchange with the authentication service, connecting included; past it the request answers 500.",
        auth_timeout,
    ),
    spec(
        "enable-global-auth",
        "true",
        Path,
        Ignored,
        Full,
        "`false`: the paths opt out of the `--global-auth-url` policy. A path with its own `auth-url` uses that one.",
        enable_global_auth,
    ),
];

fn template(
    v: &str,
    parse: fn(&str) -> Result<Template, portico_dataplane::external_auth::TemplateError>,
) -> Result<Template, String> {
    parse(v).map_err(|e| e.to_string())
}

fn auth_url(v: &str, d: &mut Draft) -> Result<(), String> {
    d.external_auth.url_written = true;
    d.out.external_auth.url = Some(template(v, Template::service_url)?);
    Ok(())
}

fn auth_method(v: &str, d: &mut Draft) -> Result<(), String> {
    // A token of letters only: the methods HTTP defines and extensions.
    if v.len() > 32 || !v.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err("expected an HTTP method in capitals, e.g. GET".into());
    }
    d.out.external_auth.method =
        Some(Method::from_bytes(v.as_bytes()).map_err(|_| "not an HTTP method".to_owned())?);
    Ok(())
}

fn auth_signin(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.external_auth.signin = Some(template(v, Template::signin_url)?);
    Ok(())
}

fn auth_signin_redirect_param(v: &str, d: &mut Draft) -> Result<(), String> {
    portico_dataplane::external_auth::check_redirect_param(v)?;
    d.out.external_auth.signin_redirect_param = Some(v.to_owned());
    Ok(())
}

/// Every entry must be a header a user may set: a dropped entry would let
/// the client's own copy through.
fn auth_response_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    let mut names = Vec::new();
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let name = values::header_name(entry).map_err(|e| format!("{entry:?}: {e}"))?;
        portico_dataplane::model::user_settable(&name)
            .map_err(|reason| format!("{name} cannot be set: {reason}"))?;
        if !names.contains(&name) {
            names.push(name);
        }
    }
    if names.is_empty() {
        return Err("no header names".into());
    }
    d.out.external_auth.response_headers = names;
    Ok(())
}

fn auth_request_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    if v.len() > values::HEADER_VALUE_MAX_LEN || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err("expected a URL or path of visible ASCII characters".into());
    }
    d.out.external_auth.request_redirect = Some(v.to_owned());
    Ok(())
}

fn auth_proxy_set_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.external_auth.proxy_set_headers = super::headers::header_lines(v)?;
    Ok(())
}

fn auth_cache_key(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.external_auth.cache_key = Some(template(v, Template::text)?);
    Ok(())
}

/// `200 202 401 5m`: statuses, then one duration.
fn auth_cache_duration(v: &str, d: &mut Draft) -> Result<(), String> {
    let mut words: Vec<&str> = v.split_ascii_whitespace().collect();
    let Some(duration) = words.pop() else {
        return Err("expected statuses then a duration, e.g. 200 202 5m".into());
    };
    let duration = values::timeout(duration)?;
    let mut not_cached = Vec::new();
    for word in words {
        let code: u16 = word
            .parse()
            .ok()
            .filter(|c| (100..600).contains(c))
            .ok_or_else(|| format!("{word:?} is not an HTTP status"))?;
        if !(200..300).contains(&code) {
            not_cached.push(word);
        }
    }
    if !not_cached.is_empty() {
        d.notes.push(Note {
            kind: DiagnosticKind::Partial,
            message: format!(
                "only 2xx answers are cached; {} not cached",
                not_cached.join(", ")
            ),
        });
    }
    d.out.external_auth.cache_duration = Some(duration);
    Ok(())
}

fn auth_always_set_cookie(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.external_auth.always_set_cookie = values::go_bool(v)?;
    Ok(())
}

/// At most this many idle connections per service.
const MAX_KEEPALIVE: u32 = 1024;

fn auth_keepalive(v: &str, d: &mut Draft) -> Result<(), String> {
    let n = values::uint(v)?;
    if n > MAX_KEEPALIVE {
        return Err(format!("must be at most {MAX_KEEPALIVE}"));
    }
    d.out.external_auth.keepalive = Some(n as usize);
    Ok(())
}

/// Checked, then ignored: the registry's `Partly` says so in `portico
/// report` and the docs.
fn auth_keepalive_requests(v: &str, _: &mut Draft) -> Result<(), String> {
    values::uint(v).map(drop)
}

fn auth_keepalive_share_vars(v: &str, _: &mut Draft) -> Result<(), String> {
    values::go_bool(v).map(drop)
}

fn auth_keepalive_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.external_auth.keepalive_timeout = Some(values::timeout(v)?);
    Ok(())
}

fn auth_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.external_auth.timeout = Some(values::timeout(v)?);
    Ok(())
}

fn enable_global_auth(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.external_auth.global = values::go_bool(v)?;
    Ok(())
}

/// The parts mean nothing without `auth-url`. An invalid `auth-url` is
/// reported on its own key and denies the paths.
pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    if d.external_auth.url_written {
        return;
    }
    for spec in SPECS {
        if !matches!(spec.name, "auth-url" | "enable-global-auth") {
            d.note(notes, spec.name, "has no effect without auth-url; ignored");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::time::Duration;

    use crate::annotations::tests::*;
    use portico_dataplane::external_auth::Template;

    const URL: &str = "http://oauth2-proxy.auth.svc.cluster.local/oauth2/auth";

    fn url() -> Option<Template> {
        Some(Template::service_url(URL).unwrap())
    }

    pub(crate) const VALID: &[Valid] = &[
        Valid {
            set: &[
                ("auth-url", URL),
                (
                    "auth-signin",
                    "https://$host/oauth2/start?rd=$escaped_request_uri",
                ),
                (
                    "auth-response-headers",
                    "X-Auth-Request-User, X-Auth-Request-Email",
                ),
                ("auth-method", "POST"),
                ("auth-signin-redirect-param", "return_to"),
                ("auth-request-redirect", "https://app.example.com/"),
                ("auth-proxy-set-headers", "X-Team: platform"),
                ("auth-always-set-cookie", "true"),
                ("auth-cache-key", "$cookie__oauth2_proxy"),
                ("auth-cache-duration", "200 202 5m"),
                ("auth-keepalive", "10"),
                ("auth-keepalive-timeout", "30s"),
                ("auth-timeout", "2s"),
            ],
            want: |a| {
                let e = &mut a.external_auth;
                e.url = url();
                e.signin = Some(
                    Template::signin_url("https://$host/oauth2/start?rd=$escaped_request_uri")
                        .unwrap(),
                );
                e.response_headers = vec![
                    http::HeaderName::from_static("x-auth-request-user"),
                    http::HeaderName::from_static("x-auth-request-email"),
                ];
                e.method = Some(http::Method::POST);
                e.signin_redirect_param = Some("return_to".into());
                e.request_redirect = Some("https://app.example.com/".into());
                e.proxy_set_headers = vec![(
                    http::HeaderName::from_static("x-team"),
                    http::HeaderValue::from_static("platform"),
                )];
                e.always_set_cookie = true;
                e.cache_key = Some(Template::text("$cookie__oauth2_proxy").unwrap());
                e.cache_duration = Some(Duration::from_secs(300));
                e.keepalive = Some(10);
                e.keepalive_timeout = Some(Duration::from_secs(30));
                e.timeout = Some(Duration::from_secs(2));
            },
        },
        Valid {
            set: &[("enable-global-auth", "false")],
            want: |a| a.external_auth.global = false,
        },
        Valid {
            set: &[
                ("auth-url", URL),
                ("auth-keepalive-requests", "1000"),
                ("auth-keepalive-share-vars", "false"),
            ],
            want: |a| a.external_auth.url = url(),
        },
    ];

    const AUTH_URL: &[(&str, &str)] = &[("auth-url", URL)];

    /// A part of a policy set to each of `values`, next to a valid
    /// `auth-url`.
    const fn part(
        name: &'static str,
        fallback: Fallback,
        values: &'static [&'static str],
    ) -> Invalid {
        Invalid {
            name,
            fallback,
            values,
            context: AUTH_URL,
            want: |a| a.external_auth.url = url(),
        }
    }

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "auth-url",
            fallback: Fallback::PathDenied,
            values: &[
                "http://$host/oauth2/auth",
                "http://auth.test/$remote_addr",
                "/oauth2/auth",
                "ftp://auth.test/",
            ],
            context: &[],
            want: |_| {},
        },
        part(
            "auth-method",
            Fallback::PathDenied,
            &["get", "GET\r\nX-Evil: 1", "G T"],
        ),
        part(
            "auth-signin",
            Fallback::PathDenied,
            &["https://login.$host/", "https://x.test/$foo"],
        ),
        part(
            "auth-signin-redirect-param",
            Fallback::PathDenied,
            &["rd&x=1", "a b"],
        ),
        part(
            "auth-response-headers",
            Fallback::PathDenied,
            &["Content-Length", "bad header"],
        ),
        part("auth-request-redirect", Fallback::PathDenied, &["a b"]),
        part(
            "auth-proxy-set-headers",
            Fallback::PathDenied,
            &["auth/headers-cm", "Host: evil.test"],
        ),
        part("auth-cache-key", Fallback::PathDenied, &["$remote_user"]),
        part(
            "auth-cache-duration",
            Fallback::Ignored,
            &["5x", "200 abc 5m", "0"],
        ),
        part("auth-always-set-cookie", Fallback::Ignored, &["yes"]),
        part("auth-keepalive", Fallback::Ignored, &["-1", "100000"]),
        part("auth-keepalive-requests", Fallback::Ignored, &["many"]),
        part("auth-keepalive-share-vars", Fallback::Ignored, &["maybe"]),
        part("auth-keepalive-timeout", Fallback::Ignored, &["forever"]),
        part("auth-timeout", Fallback::Ignored, &["0", "5y"]),
        Invalid {
            name: "enable-global-auth",
            fallback: Fallback::Ignored,
            values: &["no"],
            context: &[],
            want: |_| {},
        },
    ];

    #[test]
    fn parts_need_auth_url_and_non_2xx_statuses_are_not_cached() {
        let parsed = parse_checked(&map(
            NGINX_PREFIX,
            &[
                ("auth-signin", "https://login.test/"),
                ("enable-global-auth", "false"),
            ],
        ));
        assert_eq!(
            kinds(&parsed),
            vec![("nginx.ingress.kubernetes.io/auth-signin", IGNORED)]
        );
        assert!(parsed.ingress.external_auth.policy().is_none());

        let parsed = parse_checked(&map(
            PORTICO_PREFIX,
            &[("auth-url", URL), ("auth-cache-duration", "200 401 5m")],
        ));
        assert_eq!(
            kinds(&parsed),
            vec![("portico.dev/auth-cache-duration", DiagnosticKind::Partial)]
        );
        assert!(parsed.diagnostics[0].message.contains("401 not cached"));
        let policy = parsed.ingress.external_auth.policy().unwrap();
        // A duration without a key caches nothing.
        assert_eq!(policy.cache, None);
        assert_eq!(
            policy.timeout,
            portico_dataplane::model::ExternalAuth::DEFAULT_TIMEOUT
        );
    }
}
