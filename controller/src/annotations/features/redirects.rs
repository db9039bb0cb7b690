//! `app-root`, `permanent-redirect` and `temporal-redirect` (with their codes):
//! answers that send the client elsewhere. Temporal wins over permanent, as
//! in ingress-nginx.

use super::prelude::*;
use http::Uri;

const DEFAULT_PERMANENT_REDIRECT_CODE: u16 = 301;

const DEFAULT_TEMPORAL_REDIRECT_CODE: u16 = 302;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectTarget {
    /// An absolute `http` or `https` URL with a host.
    pub url: http::Uri,
    /// One of 301, 302, 303, 307, 308.
    pub code: u16,
    /// Written without a path or query (`https://example.com`): the
    /// `Location` is sent as written, with no `/` added (ingress-nginx).
    /// `url` cannot tell: `http::Uri` reads a missing path as `/`.
    pub bare: bool,
}

/// The redirect annotations, held back until [`finish`] knows which wins.
#[derive(Default)]
pub(crate) struct RedirectsDraft {
    /// The URL and whether it was written bare (no path, no query).
    permanent_url: Option<(http::Uri, bool)>,
    permanent_code: Option<u16>,
    temporal_url: Option<(http::Uri, bool)>,
    temporal_code: Option<u16>,
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "app-root",
        "",
        Ingress,
        Ignored,
        Full,
        "Requests for `/` are redirected (302) to this absolute path, e.g. `/app`.",
        app_root,
    ),
    spec(
        "permanent-redirect",
        "",
        Path,
        PathDenied,
        Partly(
            "nginx variables such as `$request_uri` are not expanded: a value with `$` is invalid",
        ),
        "Every request is answered with a redirect to this absolute http(s) URL, code from permanent-redirect-code. When temporal-redirect is also set it wins, as in ingress-nginx.",
        permanent_redirect,
    ),
    spec(
        "permanent-redirect-code",
        "301",
        Path,
        Ignored,
        Partly(
            "only 301, 302, 303, 307 and 308; ingress-nginx also passed 300, 304, 305 and 306 through",
        ),
        "Status code of permanent-redirect.",
        permanent_redirect_code,
    ),
    spec(
        "temporal-redirect",
        "",
        Path,
        PathDenied,
        Partly(
            "nginx variables such as `$request_uri` are not expanded: a value with `$` is invalid",
        ),
        "Every request is answered with a redirect to this absolute http(s) URL, code from temporal-redirect-code.",
        temporal_redirect,
    ),
    spec(
        "temporal-redirect-code",
        "302",
        Path,
        Ignored,
        Partly(
            "only 301, 302, 303, 307 and 308; ingress-nginx also passed 300, 304, 305 and 306 through",
        ),
        "Status code of temporal-redirect.",
        temporal_redirect_code,
    ),
];

fn app_root(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.app_root = Some(values::absolute_path(v)?);
    Ok(())
}

fn permanent_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    d.redirects.permanent_url = Some((redirect_url(v)?, is_bare_url(v)));
    Ok(())
}

fn permanent_redirect_code(v: &str, d: &mut Draft) -> Result<(), String> {
    d.redirects.permanent_code = Some(redirect_code(v)?);
    Ok(())
}

fn temporal_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    d.redirects.temporal_url = Some((redirect_url(v)?, is_bare_url(v)));
    Ok(())
}

fn temporal_redirect_code(v: &str, d: &mut Draft) -> Result<(), String> {
    d.redirects.temporal_code = Some(redirect_code(v)?);
    Ok(())
}

pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    // ingress-nginx checks temporal-redirect first.
    if let Some((url, bare)) = d.redirects.temporal_url.take() {
        let code = d
            .redirects
            .temporal_code
            .unwrap_or(DEFAULT_TEMPORAL_REDIRECT_CODE);
        d.out.temporal_redirect = Some(RedirectTarget { url, code, bare });
        if d.redirects.permanent_url.take().is_some() {
            d.note(
                notes,
                "permanent-redirect",
                "temporal-redirect is also set and wins, as in ingress-nginx; ignored",
            );
        }
    } else if let Some((url, bare)) = d.redirects.permanent_url.take() {
        let code = d
            .redirects
            .permanent_code
            .unwrap_or(DEFAULT_PERMANENT_REDIRECT_CODE);
        d.out.permanent_redirect = Some(RedirectTarget { url, code, bare });
    }
    if d.out.temporal_redirect.is_none() && d.redirects.temporal_code.is_some() {
        d.note(
            notes,
            "temporal-redirect-code",
            "has no effect without temporal-redirect; ignored",
        );
    }
    if d.out.permanent_redirect.is_none() && d.redirects.permanent_code.is_some() {
        d.note(
            notes,
            "permanent-redirect-code",
            "has no effect without a permanent-redirect in use; ignored",
        );
    }
}

/// Whether an absolute URL is written without a path or query
/// (`https://example.com`).
fn is_bare_url(s: &str) -> bool {
    s.split_once("://")
        .is_some_and(|(_, rest)| !rest.contains(['/', '?']))
}

/// An absolute `http`/`https` URL with a host, no user information, no
/// fragment and no nginx variables.
fn redirect_url(s: &str) -> Result<Uri, String> {
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
        return Err(format!(
            "{} is not allowed in a URL",
            values::describe_char(s, i)
        ));
    }
    if !values::percent_escapes_ok(s) {
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
    if !values::is_host(authority.host()) {
        return Err("the URL's host is not a valid host name or IP address".into());
    }
    let host_len = authority.host().len();
    if let Some(port_text) = authority
        .as_str()
        .get(host_len..)
        .and_then(|rest| rest.strip_prefix(':'))
        && values::port(port_text).is_none()
    {
        return Err("the URL's values::port must be a number from 1 to 65535".into());
    }
    Ok(uri)
}

/// A redirect status that means "redirect": 301, 302, 303, 307 or 308.
fn redirect_code(s: &str) -> Result<u16, String> {
    const CODES: [u16; 5] = [301, 302, 303, 307, 308];
    let code = values::uint(s).map_err(|_| "must be one of 301, 302, 303, 307, 308".to_owned())?;
    match u16::try_from(code) {
        Ok(c) if CODES.contains(&c) => Ok(c),
        _ => Err("must be one of 301, 302, 303, 307, 308".into()),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::RedirectTarget;
    use crate::annotations::tests::*;

    pub(crate) const VALID: &[Valid] = &[
        // app-root
        Valid {
            set: &[("app-root", "/app")],
            want: |a| a.app_root = Some("/app".into()),
        },
        Valid {
            set: &[("app-root", "/app/index.html")],
            want: |a| a.app_root = Some("/app/index.html".into()),
        },
        // permanent-redirect (+ code)
        Valid {
            set: &[("permanent-redirect", "https://example.com")],
            want: |a| {
                a.permanent_redirect = Some(RedirectTarget {
                    url: uri("https://example.com"),
                    code: 301,
                    bare: true,
                })
            },
        },
        Valid {
            set: &[("permanent-redirect", "HTTP://Example.com:8080/a/b?q=1&r=2")],
            want: |a| {
                a.permanent_redirect = Some(RedirectTarget {
                    url: uri("HTTP://Example.com:8080/a/b?q=1&r=2"),
                    code: 301,
                    bare: false,
                })
            },
        },
        Valid {
            set: &[
                ("permanent-redirect", "https://[::1]/x"),
                ("permanent-redirect-code", "308"),
            ],
            want: |a| {
                a.permanent_redirect = Some(RedirectTarget {
                    url: uri("https://[::1]/x"),
                    code: 308,
                    bare: false,
                })
            },
        },
        Valid {
            set: &[
                ("permanent-redirect", "http://10.0.0.1/"),
                ("permanent-redirect-code", "302"),
            ],
            want: |a| {
                a.permanent_redirect = Some(RedirectTarget {
                    url: uri("http://10.0.0.1/"),
                    code: 302,
                    bare: false,
                })
            },
        },
        // temporal-redirect (+ code)
        Valid {
            set: &[("temporal-redirect", "https://example.com/maintenance")],
            want: |a| {
                a.temporal_redirect = Some(RedirectTarget {
                    url: uri("https://example.com/maintenance"),
                    code: 302,
                    bare: false,
                })
            },
        },
        Valid {
            set: &[
                ("temporal-redirect", "https://example.com/"),
                ("temporal-redirect-code", "307"),
            ],
            want: |a| {
                a.temporal_redirect = Some(RedirectTarget {
                    url: uri("https://example.com/"),
                    code: 307,
                    bare: false,
                })
            },
        },
        Valid {
            set: &[
                ("temporal-redirect", "https://example.com/"),
                ("temporal-redirect-code", "303"),
            ],
            want: |a| {
                a.temporal_redirect = Some(RedirectTarget {
                    url: uri("https://example.com/"),
                    code: 303,
                    bare: false,
                })
            },
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "app-root",
            fallback: Fallback::Ignored,
            values: &[
                "app",
                "//evil.example",
                "https://example.com/app",
                "/$x",
                "/a b",
                "/a?b=1",
                "/a\r\nSet-Cookie: x=1",
                "/a\0",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "permanent-redirect",
            fallback: Fallback::PathDenied,
            values: &[
                "example.com",
                "/relative",
                "ftp://example.com/",
                "javascript:alert(1)",
                "https://example.com$request_uri",
                "https://user@example.com/",
                "https://example.com/#top",
                "https://exa mple.com/",
                "https://example.com/a\"b",
                "https://example.com/a\r\nSet-Cookie: x=1",
                "https://example.com/\0",
                "https://exa\tmple.com/",
                "https://example.com/{x}",
                "https://example.com/%zz",
                "https://-bad-.com/",
                "https://example.com:0/",
                "https://example.com:99999/",
                "https://",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "permanent-redirect-code",
            fallback: Fallback::Ignored,
            values: &["300", "304", "200", "abc", "-301", "3010"],
            context: &[("permanent-redirect", "https://example.com/")],
            want: |a| {
                a.permanent_redirect = Some(RedirectTarget {
                    url: uri("https://example.com/"),
                    code: 301,
                    bare: false,
                })
            },
        },
        Invalid {
            name: "temporal-redirect",
            fallback: Fallback::PathDenied,
            values: &[
                "https://example.com/$1",
                "mailto:a@example.com",
                "example.com/x",
                "https://example.com/a\nb",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "temporal-redirect-code",
            fallback: Fallback::Ignored,
            values: &["306", "999", "x"],
            context: &[("temporal-redirect", "https://example.com/")],
            want: |a| {
                a.temporal_redirect = Some(RedirectTarget {
                    url: uri("https://example.com/"),
                    code: 302,
                    bare: false,
                })
            },
        },
    ];

    fn uri(s: &str) -> http::Uri {
        s.parse().unwrap()
    }

    #[test]
    fn temporal_redirect_wins_over_permanent() {
        let parsed = parse_checked(&map(
            NGINX_PREFIX,
            &[
                ("permanent-redirect", "https://p.example/"),
                ("permanent-redirect-code", "308"),
                ("temporal-redirect", "https://t.example/"),
            ],
        ));
        let want = IngressAnnotations {
            temporal_redirect: Some(RedirectTarget {
                url: uri("https://t.example/"),
                code: 302,
                bare: false,
            }),
            ..Default::default()
        };
        assert_eq!(parsed.ingress, want);
        assert_eq!(
            kinds(&parsed),
            vec![
                ("nginx.ingress.kubernetes.io/permanent-redirect", IGNORED),
                (
                    "nginx.ingress.kubernetes.io/permanent-redirect-code",
                    IGNORED
                ),
            ]
        );
        assert!(parsed.diagnostics[0].message.contains("temporal-redirect"));
    }

    #[test]
    fn redirect_codes_alone_have_no_effect() {
        let parsed = parse_checked(&map(
            PORTICO_PREFIX,
            &[
                ("permanent-redirect-code", "308"),
                ("temporal-redirect-code", "307"),
            ],
        ));
        assert_eq!(parsed.ingress, IngressAnnotations::default());
        assert_eq!(
            kinds(&parsed),
            vec![
                ("portico.dev/temporal-redirect-code", IGNORED),
                ("portico.dev/permanent-redirect-code", IGNORED),
            ]
        );
        assert!(parsed.diagnostics[0].message.contains("no effect"));
    }
}
