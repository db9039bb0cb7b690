//! CORS: `enable-cors` and `cors-*`, with ingress-nginx's defaults for what is
//! not set; the `cors-*` parts count only with `enable-cors: "true"`.

use super::prelude::*;
use crate::annotations::{DiagnosticKind, list};
use http::{HeaderName, Method};
use portico_dataplane::model::{Cors, DisallowedPreflight, OriginPattern};

/// ingress-nginx's CORS defaults (`enable-cors` alone).
const DEFAULT_CORS_ALLOW_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";

const DEFAULT_CORS_ALLOW_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";

const DEFAULT_CORS_MAX_AGE: u64 = 1_728_000;

/// The annotations that only mean something with `enable-cors: "true"`.
const CORS_PARTS: [&str; 6] = [
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
];

/// The gRPC-Web bridge's own CORS settings, replaced by `enable-cors`'s.
const GRPC_WEB_CORS_PARTS: [&str; 5] = [
    "grpc-web-allow-origins",
    "grpc-web-allow-headers",
    "grpc-web-expose-headers",
    "grpc-web-allow-credentials",
    "grpc-web-max-age",
];

/// The `cors-*` values set, before `enable-cors` says whether they count.
#[derive(Default)]
pub(crate) struct CorsDraft {
    enabled: bool,
    allow_origins: Option<Vec<OriginPattern>>,
    allow_methods: Option<Vec<Method>>,
    allow_headers: Option<Vec<HeaderName>>,
    expose_headers: Option<Vec<HeaderName>>,
    allow_credentials: Option<bool>,
    max_age: Option<u64>,
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "enable-cors",
        "false",
        Path,
        Ignored,
        Full,
        "Answer cross-origin requests from browsers (CORS) on these paths, as ingress-nginx: a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed origin is answered 204 by Portico and never forwarded; other answers to an allowed origin get `Access-Control-Allow-Origin` (and the credentials and exposed headers); an origin that may not call, or a request without one, gets no CORS headers; every answer gets `Vary: Origin`. The `cors-*` annotations do nothing without it (reported). See docs/cors.md.",
        enable_cors,
    ),
    spec(
        "cors-allow-origin",
        "*",
        Path,
        Ignored,
        Partly(
            "with `*`, a request without `Origin` gets no CORS headers, and `*` never comes with credentials (see cors-allow-credentials)",
        ),
        "Origins that may call, comma-separated: `*`, `https://app.example.com` (a port when not the scheme's default: `https://app.example.com:8443` matches only that port), or `https://*.example.com` (exactly one more label: not `example.com`, not `a.b.example.com`); case-insensitive. `*` anywhere allows every origin. Entries without an http or https scheme, with a path, or otherwise malformed are dropped (reported) and the rest kept, as ingress-nginx does. A preflight from an origin that may not call is forwarded to the backend without CORS headers, as ingress-nginx does.",
        cors_allow_origin,
    ),
    spec(
        "cors-allow-methods",
        DEFAULT_CORS_ALLOW_METHODS,
        Path,
        Ignored,
        Partly(
            "an invalid entry is dropped and the rest kept, where ingress-nginx falls back to the default list",
        ),
        "`Access-Control-Allow-Methods` of preflight answers: methods, comma-separated, case kept (methods are case-sensitive), or `*` (with credentials the preflight's method is echoed instead).",
        cors_allow_methods,
    ),
    spec(
        "cors-allow-headers",
        DEFAULT_CORS_ALLOW_HEADERS,
        Path,
        Ignored,
        Partly(
            "an invalid entry is dropped and the rest kept, where ingress-nginx falls back to the default list; names are sent lower-case",
        ),
        "`Access-Control-Allow-Headers` of preflight answers: header names, comma-separated, or `*` (with credentials the preflight's requested headers are echoed instead).",
        cors_allow_headers,
    ),
    spec(
        "cors-expose-headers",
        "",
        Path,
        Ignored,
        Full,
        "`Access-Control-Expose-Headers`: response headers pages may read besides the safelisted ones, comma-separated, or `*` (left out with credentials, where browsers read it as a header name). Unset: not sent.",
        cors_expose_headers,
    ),
    spec(
        "cors-allow-credentials",
        "true",
        Path,
        Ignored,
        Partly(
            "not with cors-allow-origin `*` (reported when set): `Access-Control-Allow-Origin: *` is sent without credentials, since echoing every origin with credentials would let any site read answers with its visitors' cookies (browsers ignored ingress-nginx's credentials with `*` too)",
        ),
        "`Access-Control-Allow-Credentials: true`: pages may send cookies and HTTP authentication; the caller's origin is echoed in `Access-Control-Allow-Origin`, never `*`.",
        cors_allow_credentials,
    ),
    spec(
        "cors-max-age",
        "1728000",
        Path,
        Ignored,
        Full,
        "`Access-Control-Max-Age`: how long, in whole seconds, browsers may cache a preflight answer (they cap it themselves, Chromium at 2 hours).",
        cors_max_age,
    ),
];

fn enable_cors(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.enabled = values::go_bool(v)?;
    Ok(())
}

fn cors_allow_origin(v: &str, d: &mut Draft) -> Result<(), String> {
    let mut origins = list(v, d, values::cors_origin)?;
    // As ingress-nginx: `*` anywhere allows every origin.
    if origins.contains(&OriginPattern::Any) {
        origins = vec![OriginPattern::Any];
    }
    d.cors.allow_origins = Some(origins);
    Ok(())
}

fn cors_allow_methods(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.allow_methods = Some(list(v, d, cors_method)?);
    Ok(())
}

fn cors_allow_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.allow_headers = Some(list(v, d, values::header_name)?);
    Ok(())
}

fn cors_expose_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.expose_headers = Some(list(v, d, values::header_name)?);
    Ok(())
}

fn cors_allow_credentials(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.allow_credentials = Some(values::go_bool(v)?);
    Ok(())
}

fn cors_max_age(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.max_age = Some(u64::from(values::uint(v)?));
    Ok(())
}

/// ingress-nginx's CORS: the `cors-*` settings count only with
/// `enable-cors: "true"`, and what is not set takes its default.
pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    if !d.cors.enabled {
        for name in CORS_PARTS {
            d.note(
                notes,
                name,
                "has no effect unless enable-cors is \"true\"; ignored",
            );
        }
        return;
    }
    let c = std::mem::take(&mut d.cors);
    let origins = c.allow_origins.unwrap_or_else(|| vec![OriginPattern::Any]);
    let any = origins.contains(&OriginPattern::Any);
    if any && c.allow_credentials == Some(true) {
        d.note_kind(
            notes,
            "cors-allow-credentials",
            DiagnosticKind::Partial,
            "not with cors-allow-origin \"*\": echoing every origin with credentials would let any site read answers with its visitors' cookies; Access-Control-Allow-Origin: * is sent without credentials (browsers ignored ingress-nginx's credentials with * too); list the origins instead",
        );
    }
    if d.out.grpc.web {
        for name in GRPC_WEB_CORS_PARTS {
            d.note(
                notes,
                name,
                "enable-cors is also set and its cors-* settings apply to these gRPC-Web paths; ignored",
            );
        }
    }
    let defaults = |text: &str| -> Vec<HeaderName> {
        text.split(',')
            .filter_map(|n| values::header_name(n.trim()).ok())
            .collect()
    };
    d.out.cors = Some(Cors {
        allow_origins: origins,
        allow_methods: c.allow_methods.unwrap_or_else(|| {
            DEFAULT_CORS_ALLOW_METHODS
                .split(',')
                .filter_map(|m| cors_method(m.trim()).ok())
                .collect()
        }),
        allow_headers: c
            .allow_headers
            .unwrap_or_else(|| defaults(DEFAULT_CORS_ALLOW_HEADERS)),
        expose_headers: c.expose_headers.unwrap_or_default(),
        allow_credentials: c.allow_credentials.unwrap_or(true) && !any,
        max_age: c.max_age.unwrap_or(DEFAULT_CORS_MAX_AGE),
        // ingress-nginx leaves such a preflight to the backend.
        disallowed_preflight: DisallowedPreflight::Forward,
    });
}

/// A method for `Access-Control-Allow-Methods`: an HTTP token, case kept
/// (methods are case-sensitive), or `*` for any.
fn cors_method(s: &str) -> Result<Method, String> {
    Method::from_bytes(s.as_bytes())
        .map_err(|_| "not a method name (letters, digits and !#$%&'*+-.^_`|~)".to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;
    use http::HeaderName;
    use portico_dataplane::model::{Cors, DisallowedPreflight, OriginPattern};

    pub(crate) const VALID: &[Valid] = &[
        // enable-cors, cors-*
        Valid {
            set: &[("enable-cors", "true")],
            want: cors_enabled,
        },
        Valid {
            set: &[("enable-cors", "false")],
            want: |_| {},
        },
        Valid {
            set: &[
                ("enable-cors", "true"),
                (
                    "cors-allow-origin",
                    "https://App.example.com:8443, http://*.example.com,, ",
                ),
                ("cors-allow-credentials", "true"),
            ],
            want: |a| {
                let c = cors_on(a);
                c.allow_origins = vec![
                    origin("https://app.example.com:8443"),
                    origin("http://*.example.com"),
                ];
                c.allow_credentials = true;
            },
        },
        Valid {
            // As ingress-nginx: `*` anywhere allows every origin.
            set: &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://a.example, *"),
            ],
            want: |a| cors_on(a).allow_origins = vec![OriginPattern::Any],
        },
        Valid {
            set: &[
                ("enable-cors", "true"),
                ("cors-allow-methods", "GET,PUT, PROPFIND ,"),
                ("cors-allow-headers", "X-Tenant, x-tenant,Content-Type"),
                ("cors-expose-headers", "X-Trace-Id, *"),
                ("cors-allow-credentials", "false"),
                ("cors-max-age", "0"),
            ],
            want: |a| {
                let c = cors_on(a);
                c.allow_methods = ["GET", "PUT", "PROPFIND"]
                    .map(|m| http::Method::from_bytes(m.as_bytes()).unwrap())
                    .to_vec();
                c.allow_headers = vec![
                    HeaderName::from_static("x-tenant"),
                    HeaderName::from_static("content-type"),
                ];
                c.expose_headers = vec![
                    HeaderName::from_static("x-trace-id"),
                    HeaderName::from_static("*"),
                ];
                c.max_age = 0;
            },
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "enable-cors",
            fallback: Fallback::Ignored,
            values: &["yes", "on", "enabled"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "cors-allow-origin",
            fallback: Fallback::Ignored,
            values: &[",", " , ,"],
            context: CORS,
            want: cors_enabled,
        },
        Invalid {
            name: "cors-allow-methods",
            fallback: Fallback::Ignored,
            values: &[",", ", ,"],
            context: CORS,
            want: cors_enabled,
        },
        Invalid {
            name: "cors-allow-headers",
            fallback: Fallback::Ignored,
            values: &[","],
            context: CORS,
            want: cors_enabled,
        },
        Invalid {
            name: "cors-expose-headers",
            fallback: Fallback::Ignored,
            values: &[","],
            context: CORS,
            want: cors_enabled,
        },
        Invalid {
            name: "cors-allow-credentials",
            fallback: Fallback::Ignored,
            values: &["yes", "on"],
            context: CORS,
            want: cors_enabled,
        },
        Invalid {
            name: "cors-max-age",
            fallback: Fallback::Ignored,
            values: &["-1", "1d", "1.5", "forever", "4294967296"],
            context: CORS,
            want: cors_enabled,
        },
    ];

    const CORS: &[(&str, &str)] = &[("enable-cors", "true")];

    /// `enable-cors: "true"` alone: ingress-nginx's defaults, except that `*`
    /// comes without credentials.
    fn cors_default() -> Cors {
        Cors {
            allow_origins: vec![OriginPattern::Any],
            allow_methods: ["GET", "PUT", "POST", "DELETE", "PATCH", "OPTIONS"]
                .map(|m| http::Method::from_bytes(m.as_bytes()).unwrap())
                .to_vec(),
            allow_headers: [
                "dnt",
                "keep-alive",
                "user-agent",
                "x-requested-with",
                "if-modified-since",
                "cache-control",
                "content-type",
                "range",
                "authorization",
            ]
            .map(HeaderName::from_static)
            .to_vec(),
            expose_headers: vec![],
            allow_credentials: false,
            max_age: 1_728_000,
            disallowed_preflight: DisallowedPreflight::Forward,
        }
    }

    fn cors_on(a: &mut IngressAnnotations) -> &mut Cors {
        a.cors.get_or_insert_with(cors_default)
    }

    /// The effect of `enable-cors: "true"` alone.
    fn cors_enabled(a: &mut IngressAnnotations) {
        cors_on(a);
    }

    #[test]
    fn cors_settings_need_enable_cors() {
        let parts = [
            ("cors-allow-origin", "https://a.example"),
            ("cors-allow-methods", "GET"),
            ("cors-allow-headers", "x-a"),
            ("cors-expose-headers", "x-b"),
            ("cors-allow-credentials", "true"),
            ("cors-max-age", "60"),
        ];
        parts_need_a_switch(&parts, "enable-cors", "unless enable-cors is \"true\"");
    }

    #[test]
    fn cors_lists_drop_invalid_entries_and_keep_the_rest() {
        let parsed = parse_checked(&map(
            NGINX_PREFIX,
            &[
                ("enable-cors", "true"),
                (
                    "cors-allow-origin",
                    "https://ok.example, example.com, ftp://x.example, https://a.example/path, chrome-extension://abc, https://a.*.example.com, http://**.example.com,",
                ),
                ("cors-allow-methods", "GET, (bad), POST"),
                ("cors-allow-headers", "x-a, bad header"),
            ],
        ));
        let cors = parsed.ingress.cors.unwrap();
        assert_eq!(cors.allow_origins, vec![origin("https://ok.example")]);
        assert_eq!(
            cors.allow_methods,
            vec![http::Method::GET, http::Method::POST]
        );
        assert_eq!(cors.allow_headers, vec![HeaderName::from_static("x-a")]);
        let dropped: Vec<(&str, &str)> = parsed
            .diagnostics
            .iter()
            .map(|d| {
                assert_eq!(d.kind, IGNORED);
                let entry = d.message.split('"').nth(3).unwrap_or_default();
                (d.key.strip_prefix(NGINX_PREFIX).unwrap(), entry)
            })
            .collect();
        assert_eq!(
            dropped,
            [
                ("cors-allow-origin", "example.com"),
                ("cors-allow-origin", "ftp://x.example"),
                ("cors-allow-origin", "https://a.example/path"),
                ("cors-allow-origin", "chrome-extension://abc"),
                ("cors-allow-origin", "https://a.*.example.com"),
                ("cors-allow-origin", "http://**.example.com"),
                ("cors-allow-methods", "(bad)"),
                ("cors-allow-headers", "bad header"),
            ],
            "{:#?}",
            parsed.diagnostics
        );
        for (d, why) in parsed.diagnostics.iter().zip([
            "scheme",
            "http or https",
            "path",
            "http or https",
            "wildcard",
            "wildcard",
        ]) {
            assert!(d.message.contains(why), "{} lacks {why}", d.message);
        }
        // Every entry invalid: nobody may call, as in ingress-nginx.
        let parsed = parse_checked(&map(
            NGINX_PREFIX,
            &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "example.com"),
            ],
        ));
        assert_eq!(parsed.ingress.cors.unwrap().allow_origins, vec![]);
    }

    #[test]
    fn cors_credentials_never_go_with_any_origin() {
        // The default origin is `*`: credentials are left out, silently when
        // only defaulted, reported when asked for.
        let parsed = parse_checked(&map(PORTICO_PREFIX, &[("enable-cors", "true")]));
        assert!(!parsed.ingress.cors.unwrap().allow_credentials);
        assert_eq!(parsed.diagnostics, vec![]);
        for origins in [None, Some("*"), Some("https://a.example, *")] {
            let mut pairs = vec![("enable-cors", "true"), ("cors-allow-credentials", "true")];
            pairs.extend(origins.map(|o| ("cors-allow-origin", o)));
            let parsed = parse_checked(&map(PORTICO_PREFIX, &pairs));
            assert!(!parsed.ingress.cors.as_ref().unwrap().allow_credentials);
            assert_eq!(
                kinds(&parsed),
                vec![(
                    "portico.dev/cors-allow-credentials",
                    DiagnosticKind::Partial
                )]
            );
        }
        let parsed = parse_checked(&map(
            PORTICO_PREFIX,
            &[
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://a.example"),
            ],
        ));
        assert!(parsed.ingress.cors.unwrap().allow_credentials);
    }

    #[test]
    fn enable_cors_replaces_the_grpc_web_cors_settings() {
        let parsed = parse_checked(&map(
            PORTICO_PREFIX,
            &[
                ("grpc-web", "true"),
                ("grpc-web-allow-origins", "https://a.example"),
                ("grpc-web-max-age", "60"),
                ("enable-cors", "true"),
                ("cors-allow-origin", "https://b.example"),
            ],
        ));
        assert_eq!(
            parsed.ingress.cors.as_ref().unwrap().allow_origins,
            vec![origin("https://b.example")]
        );
        assert_eq!(
            kinds(&parsed),
            vec![
                ("portico.dev/grpc-web-allow-origins", IGNORED),
                ("portico.dev/grpc-web-max-age", IGNORED),
            ]
        );
    }
}
