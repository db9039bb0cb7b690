use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use super::*;
use portico_dataplane::model::{
    AffinityMode, CanaryAffinity, Cors, DisallowedPreflight, HashKey, HashVar, OriginPattern,
    RetryOn, SameSite,
};

const PREFIXES: [&str; 2] = [PORTICO_PREFIX, NGINX_PREFIX];

fn map(prefix: &str, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (format!("{prefix}{name}"), (*value).to_owned()))
        .collect()
}

fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    map("", pairs)
}

/// Parses and checks what holds for every diagnostic.
fn parse_checked(annotations: &BTreeMap<String, String>) -> Parsed {
    let parsed = parse(annotations);
    for d in &parsed.diagnostics {
        assert!(
            !d.message.contains('\n') && !d.message.contains('\r'),
            "message must be one line: {:?}",
            d.message
        );
        assert!(
            d.message.starts_with(&d.key),
            "message must name the key: {:?}",
            d.message
        );
        assert!(
            d.message.contains(&quote(&d.value)),
            "message must show the value: {:?}",
            d.message
        );
        assert_eq!(
            annotations.get(&d.key),
            Some(&d.value),
            "key and value as written"
        );
    }
    parsed
}

fn spec(name: &str) -> &'static AnnotationSpec {
    registry()
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the registry"))
}

fn uri(s: &str) -> http::Uri {
    s.parse().unwrap()
}

fn lit(s: &str) -> RewriteSegment {
    RewriteSegment::Literal(s.to_owned())
}

fn origin(s: &str) -> OriginPattern {
    OriginPattern::parse(s).unwrap()
}

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

/// The effect of `enable-cors: "true"` alone.
fn cors_enabled(a: &mut IngressAnnotations) {
    cors_on(a);
}

fn cors_on(a: &mut IngressAnnotations) -> &mut Cors {
    a.cors.get_or_insert_with(cors_default)
}

fn canary_on(a: &mut IngressAnnotations) -> &mut CanaryAnnotations {
    a.canary.get_or_insert_with(CanaryAnnotations::default)
}

// === valid values ===

/// Annotations (names without prefix) and the fields they set. Each case
/// runs under both spellings and must produce no diagnostic.
struct Valid {
    set: &'static [(&'static str, &'static str)],
    want: fn(&mut IngressAnnotations),
}

const VALID: &[Valid] = &[
    // rewrite-target
    Valid {
        set: &[("rewrite-target", "/")],
        want: |a| {
            a.rewrite_target = Some(RewriteTarget {
                segments: vec![lit("/")],
            })
        },
    },
    Valid {
        set: &[("rewrite-target", "/$2/x")],
        want: |a| {
            a.rewrite_target = Some(RewriteTarget {
                segments: vec![lit("/"), RewriteSegment::Capture(2), lit("/x")],
            })
        },
    },
    Valid {
        set: &[("rewrite-target", "$1")],
        want: |a| {
            a.rewrite_target = Some(RewriteTarget {
                segments: vec![RewriteSegment::Capture(1)],
            })
        },
    },
    Valid {
        set: &[("rewrite-target", " /api/$1$9 ")],
        want: |a| {
            a.rewrite_target = Some(RewriteTarget {
                segments: vec![
                    lit("/api/"),
                    RewriteSegment::Capture(1),
                    RewriteSegment::Capture(9),
                ],
            })
        },
    },
    Valid {
        // `$10` is capture 1 followed by "0", as in nginx.
        set: &[("rewrite-target", "/a%20b/$10;v=1")],
        want: |a| {
            a.rewrite_target = Some(RewriteTarget {
                segments: vec![lit("/a%20b/"), RewriteSegment::Capture(1), lit("0;v=1")],
            })
        },
    },
    // use-regex: every Go strconv.ParseBool spelling
    Valid {
        set: &[("use-regex", "true")],
        want: |a| a.use_regex = true,
    },
    Valid {
        set: &[("use-regex", "True")],
        want: |a| a.use_regex = true,
    },
    Valid {
        set: &[("use-regex", "TRUE")],
        want: |a| a.use_regex = true,
    },
    Valid {
        set: &[("use-regex", "t")],
        want: |a| a.use_regex = true,
    },
    Valid {
        set: &[("use-regex", "T")],
        want: |a| a.use_regex = true,
    },
    Valid {
        set: &[("use-regex", "1")],
        want: |a| a.use_regex = true,
    },
    Valid {
        set: &[("use-regex", "false")],
        want: |_| {},
    },
    Valid {
        set: &[("use-regex", "False")],
        want: |_| {},
    },
    Valid {
        set: &[("use-regex", "FALSE")],
        want: |_| {},
    },
    Valid {
        set: &[("use-regex", "f")],
        want: |_| {},
    },
    Valid {
        set: &[("use-regex", "F")],
        want: |_| {},
    },
    Valid {
        set: &[("use-regex", "0")],
        want: |_| {},
    },
    // app-root
    Valid {
        set: &[("app-root", "/app")],
        want: |a| a.app_root = Some("/app".into()),
    },
    Valid {
        set: &[("app-root", "/app/index.html")],
        want: |a| a.app_root = Some("/app/index.html".into()),
    },
    // client address lists
    Valid {
        set: &[(
            "allowlist-source-range",
            " 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,, 10.1.2.3/8",
        )],
        want: |a| {
            a.allowlist_source_range = Some(
                ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "10.0.0.0/8"]
                    .iter()
                    .map(|n| n.parse().unwrap())
                    .collect(),
            )
        },
    },
    Valid {
        set: &[("whitelist-source-range", "127.0.0.1")],
        want: |a| a.allowlist_source_range = Some(vec!["127.0.0.1/32".parse().unwrap()]),
    },
    Valid {
        set: &[("denylist-source-range", "::1/128")],
        want: |a| a.denylist_source_range = Some(vec!["::1/128".parse().unwrap()]),
    },
    // basic authentication
    Valid {
        set: &[("auth-type", "basic"), ("auth-secret", "users")],
        want: |a| {
            a.auth.basic = true;
            a.auth.secret = Some((None, "users".into()));
        },
    },
    Valid {
        set: &[
            ("auth-type", "basic"),
            ("auth-secret", "shared/team-users"),
            ("auth-secret-type", "auth-map"),
            ("auth-realm", "Authentication Required - foo"),
            ("auth-forward-authorization", "true"),
        ],
        want: |a| {
            a.auth = AuthAnnotations {
                basic: true,
                secret: Some((Some("shared".into()), "team-users".into())),
                secret_type: AuthSecretType::AuthMap,
                realm: Some("Authentication Required - foo".into()),
                forward_authorization: true,
            }
        },
    },
    Valid {
        set: &[
            ("auth-type", "basic"),
            ("auth-secret", "users"),
            ("auth-secret-type", "auth-file"),
        ],
        want: |a| {
            a.auth.basic = true;
            a.auth.secret = Some((None, "users".into()));
        },
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
    // upstream-vhost
    Valid {
        set: &[("upstream-vhost", "Example.COM")],
        want: |a| a.upstream_vhost = Some("example.com".into()),
    },
    Valid {
        set: &[("upstream-vhost", "svc.ns.svc.cluster.local:8080")],
        want: |a| a.upstream_vhost = Some("svc.ns.svc.cluster.local:8080".into()),
    },
    Valid {
        set: &[("upstream-vhost", "10.0.0.1:80")],
        want: |a| a.upstream_vhost = Some("10.0.0.1:80".into()),
    },
    Valid {
        set: &[("upstream-vhost", "[::1]:8443")],
        want: |a| a.upstream_vhost = Some("[::1]:8443".into()),
    },
    Valid {
        set: &[("upstream-vhost", "my_bucket.s3.amazonaws.com")],
        want: |a| a.upstream_vhost = Some("my_bucket.s3.amazonaws.com".into()),
    },
    // x-forwarded-prefix
    Valid {
        set: &[("x-forwarded-prefix", "/api")],
        want: |a| a.x_forwarded_prefix = Some(HeaderValue::from_static("/api")),
    },
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
    // proxy-body-size
    Valid {
        set: &[("proxy-body-size", "0")],
        want: |a| a.proxy_body_size = Some(BodySize::Unlimited),
    },
    Valid {
        set: &[("proxy-body-size", "0m")],
        want: |a| a.proxy_body_size = Some(BodySize::Unlimited),
    },
    Valid {
        set: &[("proxy-body-size", "1024")],
        want: |a| a.proxy_body_size = Some(BodySize::Bytes(1024)),
    },
    Valid {
        set: &[("proxy-body-size", "8k")],
        want: |a| a.proxy_body_size = Some(BodySize::Bytes(8 << 10)),
    },
    Valid {
        set: &[("proxy-body-size", "8K")],
        want: |a| a.proxy_body_size = Some(BodySize::Bytes(8 << 10)),
    },
    Valid {
        set: &[("proxy-body-size", "8m")],
        want: |a| a.proxy_body_size = Some(BodySize::Bytes(8 << 20)),
    },
    Valid {
        set: &[("proxy-body-size", "8M")],
        want: |a| a.proxy_body_size = Some(BodySize::Bytes(8 << 20)),
    },
    Valid {
        set: &[("proxy-body-size", "2g")],
        want: |a| a.proxy_body_size = Some(BodySize::Bytes(2 << 30)),
    },
    Valid {
        set: &[("proxy-body-size", "2G")],
        want: |a| a.proxy_body_size = Some(BodySize::Bytes(2 << 30)),
    },
    // backend-protocol, any case
    Valid {
        set: &[("backend-protocol", "HTTP")],
        want: |a| a.backend_protocol = BackendProtocol::Http,
    },
    Valid {
        set: &[("backend-protocol", "https")],
        want: |a| a.backend_protocol = BackendProtocol::Https,
    },
    Valid {
        set: &[("backend-protocol", "GRPC")],
        want: |a| a.backend_protocol = BackendProtocol::Grpc,
    },
    Valid {
        set: &[("backend-protocol", "Grpcs")],
        want: |a| a.backend_protocol = BackendProtocol::Grpcs,
    },
    Valid {
        set: &[("backend-protocol", "h2c")],
        want: |a| a.backend_protocol = BackendProtocol::H2c,
    },
    // canary
    Valid {
        set: &[("canary", "true")],
        want: |a| a.canary = Some(CanaryAnnotations::default()),
    },
    Valid {
        set: &[("canary", "1")],
        want: |a| a.canary = Some(CanaryAnnotations::default()),
    },
    Valid {
        set: &[("canary", "false")],
        want: |_| {},
    },
    Valid {
        set: &[("canary", "true"), ("canary-weight", "0")],
        want: |a| canary_on(a).weight = Some(0),
    },
    Valid {
        set: &[("canary", "true"), ("canary-weight", "30")],
        want: |a| canary_on(a).weight = Some(30),
    },
    Valid {
        set: &[("canary", "true"), ("canary-weight", "100")],
        want: |a| canary_on(a).weight = Some(100),
    },
    Valid {
        set: &[
            ("canary", "true"),
            ("canary-weight", "5"),
            ("canary-weight-total", "1000"),
        ],
        want: |a| {
            let c = canary_on(a);
            c.weight = Some(5);
            c.weight_total = 1000;
        },
    },
    Valid {
        set: &[("canary", "true"), ("canary-by-header", "X-Canary")],
        want: |a| canary_on(a).by_header = Some(HeaderName::from_static("x-canary")),
    },
    Valid {
        set: &[
            ("canary", "true"),
            ("canary-by-header", "X-Region"),
            ("canary-by-header-value", "eu west"),
        ],
        want: |a| {
            let c = canary_on(a);
            c.by_header = Some(HeaderName::from_static("x-region"));
            c.by_header_value = Some("eu west".into());
        },
    },
    Valid {
        set: &[
            ("canary", "true"),
            ("canary-by-header", "X-Version"),
            ("canary-by-header-pattern", "^v[0-9]+$"),
        ],
        want: |a| {
            let c = canary_on(a);
            c.by_header = Some(HeaderName::from_static("x-version"));
            c.by_header_pattern = Some("^v[0-9]+$".into());
        },
    },
    Valid {
        set: &[("canary", "true"), ("canary-by-cookie", "Canary_Cookie")],
        want: |a| canary_on(a).by_cookie = Some("Canary_Cookie".into()),
    },
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
    Valid {
        set: &[("canary", "true"), ("affinity-canary-behavior", "legacy")],
        want: |a| canary_on(a).affinity = CanaryAffinity::Legacy,
    },
    Valid {
        set: &[("canary", "true"), ("affinity-canary-behavior", "sticky")],
        want: |a| canary_on(a).affinity = CanaryAffinity::Sticky,
    },
    // grpc-web*, grpc-max-message-size
    Valid {
        set: &[
            ("grpc-web", "true"),
            (
                "grpc-web-allow-origins",
                "https://App.example.com,http://localhost:8080, *",
            ),
            ("grpc-web-allow-headers", "X-Tenant, x-tenant"),
            ("grpc-web-expose-headers", "x-trace-id"),
            ("grpc-web-allow-credentials", "1"),
            ("grpc-web-max-age", "10m"),
            ("grpc-max-message-size", "16m"),
        ],
        want: |a| {
            a.grpc.web = true;
            a.grpc.allow_origins = vec![
                origin("https://app.example.com"),
                origin("http://localhost:8080"),
                OriginPattern::Any,
            ];
            a.grpc.allow_headers = vec![http::HeaderName::from_static("x-tenant")];
            a.grpc.expose_headers = vec![http::HeaderName::from_static("x-trace-id")];
            a.grpc.allow_credentials = true;
            a.grpc.max_age = Some(std::time::Duration::from_secs(600));
            a.grpc.max_message = Some(BodySize::Bytes(16 << 20));
        },
    },
    Valid {
        set: &[("grpc-max-message-size", "0")],
        want: |a| a.grpc.max_message = Some(BodySize::Unlimited),
    },
    // server-alias
    Valid {
        set: &[("server-alias", "a.example.com, *.Example.org")],
        want: |a| a.server_alias = vec!["a.example.com".into(), "*.example.org".into()],
    },
    Valid {
        set: &[("server-alias", "b.com,B.com,c.com.,")],
        want: |a| a.server_alias = vec!["b.com".into(), "c.com".into()],
    },
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
    // ssl-redirect, force-ssl-redirect, preserve-trailing-slash, hsts*
    Valid {
        set: &[("ssl-redirect", "false"), ("force-ssl-redirect", "True")],
        want: |a| {
            a.https.ssl_redirect = Some(false);
            a.https.force_ssl_redirect = true;
        },
    },
    Valid {
        set: &[
            ("preserve-trailing-slash", "1"),
            ("hsts", "false"),
            ("hsts-max-age", "31536000"),
            ("hsts-include-subdomains", "f"),
            ("hsts-preload", "true"),
        ],
        want: |a| {
            a.https.preserve_trailing_slash = true;
            a.https.hsts = Some(false);
            a.https.hsts_max_age = Some(31_536_000);
            a.https.hsts_include_subdomains = Some(false);
            a.https.hsts_preload = Some(true);
        },
    },
    // auth-tls-*
    Valid {
        set: &[
            ("auth-tls-secret", "default/client-ca"),
            ("auth-tls-verify-client", "optional_no_ca"),
            ("auth-tls-verify-depth", "2"),
            ("auth-tls-pass-certificate-to-upstream", "true"),
        ],
        want: |a| {
            a.https.auth_tls_secret = Some(("default".into(), "client-ca".into()));
            a.https.auth_tls_verify = Some(AuthTlsVerify::OptionalNoCa);
            a.https.auth_tls_verify_depth = Some(2);
            a.https.auth_tls_pass_certificate = true;
        },
    },
    Valid {
        set: &[("auth-tls-verify-client", "off")],
        want: |a| a.https.auth_tls_verify = Some(AuthTlsVerify::Off),
    },
    Valid {
        set: &[("ssl-passthrough", "true")],
        want: |a| a.ssl_passthrough = true,
    },
    // proxy-ssl-*
    Valid {
        set: &[
            ("proxy-ssl-verify", "on"),
            ("proxy-ssl-secret", "default/backend-ca"),
            ("proxy-ssl-name", "API.internal"),
            ("proxy-ssl-server-name", "on"),
        ],
        want: |a| {
            a.upstream_tls.verify = true;
            a.upstream_tls.secret = Some(("default".into(), "backend-ca".into()));
            a.upstream_tls.name = Some("api.internal".into());
            a.upstream_tls.server_name = true;
        },
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

#[test]
fn valid_values_under_both_spellings() {
    for case in VALID {
        let mut want = IngressAnnotations::default();
        (case.want)(&mut want);
        for prefix in PREFIXES {
            let parsed = parse_checked(&map(prefix, case.set));
            assert_eq!(parsed.diagnostics, vec![], "{prefix}: {:?}", case.set);
            assert_eq!(parsed.ingress, want, "{prefix}: {:?}", case.set);
        }
    }
}

// === invalid values ===

/// `name` set to each of `values` (with `context` set too) must give exactly
/// one `Invalid(fallback)` diagnostic on that key and leave the fields as
/// `want` (the context's effect alone).
struct Invalid {
    name: &'static str,
    fallback: Fallback,
    values: &'static [&'static str],
    context: &'static [(&'static str, &'static str)],
    want: fn(&mut IngressAnnotations),
}

const NO_CONTEXT: &[(&str, &str)] = &[];
const CANARY: &[(&str, &str)] = &[("canary", "true")];
const CORS: &[(&str, &str)] = &[("enable-cors", "true")];
const CANARY_BY_HEADER: &[(&str, &str)] = &[("canary", "true"), ("canary-by-header", "X-Canary")];

fn canary_default(a: &mut IngressAnnotations) {
    a.canary = Some(CanaryAnnotations::default());
}

fn canary_unused(a: &mut IngressAnnotations) {
    canary_on(a).weight = Some(0);
}

fn canary_with_header(a: &mut IngressAnnotations) {
    canary_on(a).by_header = Some(HeaderName::from_static("x-canary"));
}

const INVALID: &[Invalid] = &[
    // One bad entry fails the whole list closed (paths answer 503).
    Invalid {
        name: "allowlist-source-range",
        fallback: Fallback::PathDenied,
        values: &[
            "10.0.0.0/8, 10.0.0.0/33",
            "all",
            "10.0.0.0/8 192.0.2.0/24",
            ",",
            "::/129",
        ],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "denylist-source-range",
        fallback: Fallback::PathDenied,
        values: &["300.1.2.3", "10.0.0.0/8;rm"],
        context: NO_CONTEXT,
        want: |_| {},
    },
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
    Invalid {
        name: "rewrite-target",
        fallback: Fallback::PathDenied,
        values: &[
            "/$host", "/${1}", "/$0", "/x$", "foo/$1", "/a b", "/a?x=$1", "/%zz", "/%2", "/é",
            "/a#b", "/a\r\nb", "/a\0b", "/$1\nx",
        ],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "use-regex",
        fallback: Fallback::Ignored,
        values: &["yes", "TRue", "2", "on"],
        context: NO_CONTEXT,
        want: |_| {},
    },
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
    Invalid {
        name: "upstream-vhost",
        fallback: Fallback::PathDenied,
        values: &[
            "a b",
            "host:0",
            "host:65536",
            "host:abc",
            "host:",
            "-bad.com",
            "$host",
            "http://x.com",
            "[::1",
            "a..b",
            "[::1]:x",
            "a.test\r\nx: y",
            "a\0.test",
        ],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "x-forwarded-prefix",
        fallback: Fallback::Ignored,
        values: &["$prefix", "/a b", "/a?b", "/%g0", "/a\r\nx: y", "/a\0"],
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
    Invalid {
        name: "proxy-body-size",
        fallback: Fallback::Ignored,
        values: &[
            "-1",
            "1t",
            "1.5m",
            "abc",
            "1mb",
            "8b",
            "99999999999999999999",
            "18446744073709551615k",
        ],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "backend-protocol",
        fallback: Fallback::Ignored,
        values: &["AUTO_HTTP", "FCGI", "fcgi", "AJP", "HTTP2", "tcp"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "canary",
        fallback: Fallback::Ignored,
        values: &["yes", "on", "enabled"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "canary-weight",
        fallback: Fallback::Ignored,
        values: &["-1", "abc", "10.5", "4294967296", "10%"],
        context: CANARY,
        want: canary_default,
    },
    Invalid {
        name: "canary-weight-total",
        fallback: Fallback::Ignored,
        values: &["0", "-100", "x"],
        context: CANARY,
        want: canary_default,
    },
    Invalid {
        name: "canary-by-header",
        fallback: Fallback::Ignored,
        values: &["X Canary", "x:y", "é"],
        context: CANARY,
        want: canary_default,
    },
    Invalid {
        name: "canary-by-header-value",
        fallback: Fallback::Ignored,
        values: &["a\u{7f}b", "é", "a\tb"],
        context: CANARY_BY_HEADER,
        want: canary_with_header,
    },
    Invalid {
        name: "canary-by-header-pattern",
        fallback: Fallback::CanaryUnused,
        values: &["(?=x)", "(", r"(a)\1", "(a{1000}){1000}"],
        context: CANARY_BY_HEADER,
        // ingress-nginx: the canary is not used; nothing selects it.
        want: canary_unused,
    },
    Invalid {
        name: "canary-by-cookie",
        fallback: Fallback::Ignored,
        values: &["a b", "a;b", "a=b", "é"],
        context: CANARY,
        want: canary_default,
    },
    // As ingress-nginx: exactly `sticky` or `legacy`; otherwise sticky.
    Invalid {
        name: "affinity-canary-behavior",
        fallback: Fallback::Ignored,
        values: &["Legacy", "none", "sticky,legacy", "true"],
        context: CANARY,
        want: canary_default,
    },
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
    Invalid {
        name: "grpc-web",
        fallback: Fallback::Ignored,
        values: &["yes", "on"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "grpc-web-allow-origins",
        fallback: Fallback::Ignored,
        values: &[",", " , "],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "grpc-web-allow-headers",
        fallback: Fallback::Ignored,
        values: &[","],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "grpc-web-expose-headers",
        fallback: Fallback::Ignored,
        values: &[","],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "grpc-web-allow-credentials",
        fallback: Fallback::Ignored,
        values: &["yes"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "grpc-web-max-age",
        fallback: Fallback::Ignored,
        values: &["forever", "0", "-1"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "grpc-max-message-size",
        fallback: Fallback::Ignored,
        values: &["big", "-1", "4 m"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "server-alias",
        fallback: Fallback::Ignored,
        values: &[",", " , ,"],
        context: NO_CONTEXT,
        want: |_| {},
    },
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
    Invalid {
        name: "ssl-redirect",
        fallback: Fallback::Ignored,
        values: &["yes", "on"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "force-ssl-redirect",
        fallback: Fallback::Ignored,
        values: &["yes"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "preserve-trailing-slash",
        fallback: Fallback::Ignored,
        values: &["2"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "hsts",
        fallback: Fallback::Ignored,
        values: &["on"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "hsts-max-age",
        fallback: Fallback::Ignored,
        values: &["-1", "1y", "99999999999"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "hsts-include-subdomains",
        fallback: Fallback::Ignored,
        values: &["yes"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "hsts-preload",
        fallback: Fallback::Ignored,
        values: &["no"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "auth-tls-secret",
        fallback: Fallback::PathDenied,
        values: &["client-ca", "ns/", "NS/x", "a/b/c"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "auth-tls-verify-client",
        fallback: Fallback::Ignored,
        values: &["yes", "ON", "required"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "auth-tls-verify-depth",
        fallback: Fallback::Ignored,
        values: &["0", "256", "-1"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "auth-tls-pass-certificate-to-upstream",
        fallback: Fallback::Ignored,
        values: &["yes"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "ssl-passthrough",
        fallback: Fallback::Ignored,
        values: &["yes"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "proxy-ssl-verify",
        fallback: Fallback::Ignored,
        values: &["true", "ON"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "proxy-ssl-secret",
        fallback: Fallback::PathDenied,
        values: &["backend-ca", "a/b/c"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "proxy-ssl-name",
        fallback: Fallback::Ignored,
        values: &["*.internal", "a b"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "proxy-ssl-server-name",
        fallback: Fallback::Ignored,
        values: &["yes"],
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

const AUTH: &[(&str, &str)] = &[("auth-type", "basic"), ("auth-secret", "users")];

/// Basic auth fails closed: every invalid part denies the paths (as
/// ingress-nginx denies the location), except the forwarding switch,
/// whose default keeps the credential at the proxy.
const INVALID_AUTH: &[Invalid] = &[
    Invalid {
        name: "auth-type",
        fallback: Fallback::PathDenied,
        values: &["digest", "Basic", "none"],
        context: &[("auth-secret", "users")],
        want: |a| a.auth.secret = Some((None, "users".into())),
    },
    Invalid {
        name: "auth-secret",
        fallback: Fallback::PathDenied,
        values: &["Users", "a/b/c", "/users", "ns/", "user_s"],
        context: &[("auth-type", "basic")],
        want: |_| {},
    },
    Invalid {
        name: "auth-secret-type",
        fallback: Fallback::PathDenied,
        values: &["htpasswd", "auth_file"],
        context: AUTH,
        want: |a| {
            a.auth.basic = true;
            a.auth.secret = Some((None, "users".into()));
        },
    },
    Invalid {
        name: "auth-realm",
        fallback: Fallback::PathDenied,
        values: &["say \"hi\"", "a\\b", "caf\u{e9}"],
        context: AUTH,
        want: |a| {
            a.auth.basic = true;
            a.auth.secret = Some((None, "users".into()));
        },
    },
    Invalid {
        name: "auth-forward-authorization",
        fallback: Fallback::Ignored,
        values: &["yes"],
        context: AUTH,
        want: |a| {
            a.auth.basic = true;
            a.auth.secret = Some((None, "users".into()));
        },
    },
];

#[test]
fn invalid_auth_values_fail_closed() {
    check_invalid(INVALID_AUTH);
}

#[test]
fn auth_parts_need_auth_type_and_basic_needs_a_secret() {
    let parsed = parse_checked(&map(
        NGINX_PREFIX,
        &[("auth-secret", "users"), ("auth-realm", "x")],
    ));
    assert_eq!(
        kinds(&parsed),
        vec![
            ("nginx.ingress.kubernetes.io/auth-secret", IGNORED),
            ("nginx.ingress.kubernetes.io/auth-realm", IGNORED),
        ]
    );
    assert!(!parsed.ingress.auth.basic);

    let parsed = parse_checked(&map(PORTICO_PREFIX, &[("auth-type", "basic")]));
    assert_eq!(
        kinds(&parsed),
        vec![(
            "portico.dev/auth-type",
            DiagnosticKind::Invalid(Fallback::PathDenied)
        )]
    );
    assert!(parsed.diagnostics[0].message.contains("needs auth-secret"));
    assert!(!parsed.ingress.auth.basic);
}

#[test]
fn invalid_values_fall_back_as_documented() {
    check_invalid(INVALID);
}

fn check_invalid(cases: &[Invalid]) {
    for case in cases {
        assert_eq!(
            case.fallback,
            spec(case.name).on_invalid,
            "{}: the table and the registry disagree on the fallback",
            case.name
        );
        let mut want = IngressAnnotations::default();
        (case.want)(&mut want);
        for prefix in PREFIXES {
            for value in case.values {
                let mut pairs = case.context.to_vec();
                pairs.push((case.name, *value));
                let parsed = parse_checked(&map(prefix, &pairs));
                let key = format!("{prefix}{}", case.name);
                assert_eq!(
                    parsed.diagnostics.len(),
                    1,
                    "{key}={value:?}: {:#?}",
                    parsed.diagnostics
                );
                let d = &parsed.diagnostics[0];
                assert_eq!(d.key, key);
                assert_eq!(d.value, *value);
                assert_eq!(
                    d.kind,
                    DiagnosticKind::Invalid(case.fallback),
                    "{}",
                    d.message
                );
                assert!(d.message.contains("invalid"), "{}", d.message);
                assert_eq!(parsed.ingress, want, "{key}={value:?}");
            }
        }
    }
}

// === Service annotations ===

struct ServiceValid {
    set: &'static [(&'static str, &'static str)],
    want: fn(&mut ServiceAnnotations),
}

const SERVICE_VALID: &[ServiceValid] = &[
    ServiceValid {
        set: &[("slow-start", "30s")],
        want: |s| s.slow_start = Some(Duration::from_secs(30)),
    },
    ServiceValid {
        set: &[("slow-start", "0")],
        want: |s| s.slow_start = Some(Duration::ZERO),
    },
    ServiceValid {
        set: &[
            ("health-check-path", "/healthz"),
            ("health-check-port", "8081"),
            ("health-check-interval", "5s"),
            ("health-check-timeout", "500ms"),
        ],
        want: |s| {
            s.health_check_path = Some("/healthz".into());
            s.health_check_port = Some(8081);
            s.health_check_interval = Some(Duration::from_secs(5));
            s.health_check_timeout = Some(Duration::from_millis(500));
        },
    },
    ServiceValid {
        set: &[
            ("health-check-healthy-threshold", "1"),
            ("health-check-unhealthy-threshold", "10"),
            ("health-check-expected-statuses", "200, 204,300-399"),
        ],
        want: |s| {
            s.health_check_healthy_threshold = Some(1);
            s.health_check_unhealthy_threshold = Some(10);
            s.health_check_expected_statuses = Some(vec![(200, 200), (204, 204), (300, 399)]);
        },
    },
    ServiceValid {
        set: &[
            ("outlier-consecutive-5xx", "3"),
            ("outlier-consecutive-errors", "0"),
        ],
        want: |s| {
            s.outlier_consecutive_5xx = Some(3);
            s.outlier_consecutive_errors = Some(0);
        },
    },
    ServiceValid {
        set: &[
            ("outlier-base-ejection-time", "10"),
            ("outlier-max-ejection-time", "2m"),
        ],
        want: |s| {
            s.outlier_base_ejection_time = Some(Duration::from_secs(10));
            s.outlier_max_ejection_time = Some(Duration::from_secs(120));
        },
    },
    ServiceValid {
        set: &[
            ("outlier-max-ejected-percent", "100"),
            ("panic-threshold", "0"),
        ],
        want: |s| {
            s.outlier_max_ejected_percent = Some(100);
            s.panic_threshold = Some(0);
        },
    },
];

/// A Service annotation set to each of `values`: one `Invalid(Ignored)`
/// diagnostic and nothing set.
struct ServiceInvalid {
    name: &'static str,
    values: &'static [&'static str],
}

const SERVICE_INVALID: &[ServiceInvalid] = &[
    ServiceInvalid {
        name: "slow-start",
        values: &["0s", "slow", "2d"],
    },
    ServiceInvalid {
        name: "health-check-path",
        values: &["healthz", "//x", "/a b", "/$x"],
    },
    ServiceInvalid {
        name: "health-check-port",
        values: &["0", "65536", "http"],
    },
    ServiceInvalid {
        name: "health-check-interval",
        values: &["0", "often", "48h"],
    },
    ServiceInvalid {
        name: "health-check-timeout",
        values: &["0ms", "-1"],
    },
    ServiceInvalid {
        name: "health-check-healthy-threshold",
        values: &["0", "two"],
    },
    ServiceInvalid {
        name: "health-check-unhealthy-threshold",
        values: &["0", "-3"],
    },
    ServiceInvalid {
        name: "health-check-expected-statuses",
        values: &["2xx", "99", "600", "399-200", "200-", "200;204"],
    },
    ServiceInvalid {
        name: "outlier-consecutive-5xx",
        values: &["-1", "five", "1.5"],
    },
    ServiceInvalid {
        name: "outlier-consecutive-errors",
        values: &["-1", "x"],
    },
    ServiceInvalid {
        name: "outlier-base-ejection-time",
        values: &["0", "soon", "25h"],
    },
    ServiceInvalid {
        name: "outlier-max-ejection-time",
        values: &["0s", "1d"],
    },
    ServiceInvalid {
        name: "outlier-max-ejected-percent",
        values: &["101", "50%", "-5"],
    },
    ServiceInvalid {
        name: "panic-threshold",
        values: &["200", "half"],
    },
];

fn parse_service_checked(annotations: &BTreeMap<String, String>) -> Parsed {
    let parsed = parse_service(annotations);
    for d in &parsed.diagnostics {
        assert!(d.message.starts_with(&d.key), "{:?}", d.message);
        assert!(d.message.contains(&quote(&d.value)), "{:?}", d.message);
    }
    parsed
}

#[test]
fn valid_service_values_under_both_spellings() {
    for case in SERVICE_VALID {
        let mut want = ServiceAnnotations::default();
        (case.want)(&mut want);
        for prefix in PREFIXES {
            let parsed = parse_service_checked(&map(prefix, case.set));
            assert_eq!(parsed.diagnostics, vec![], "{prefix}: {:?}", case.set);
            assert_eq!(parsed.service, want, "{prefix}: {:?}", case.set);
            assert_eq!(parsed.ingress, IngressAnnotations::default());
        }
    }
}

#[test]
fn invalid_service_values_are_reported_and_ignored() {
    for case in SERVICE_INVALID {
        assert_eq!(spec(case.name).object, ObjectKind::Service, "{}", case.name);
        for prefix in PREFIXES {
            for value in case.values {
                let parsed = parse_service_checked(&map(prefix, &[(case.name, *value)]));
                let key = format!("{prefix}{}", case.name);
                assert_eq!(parsed.diagnostics.len(), 1, "{key}={value:?}");
                let d = &parsed.diagnostics[0];
                assert_eq!(
                    d.kind,
                    DiagnosticKind::Invalid(Fallback::Ignored),
                    "{}",
                    d.message
                );
                assert!(d.message.contains("invalid"), "{}", d.message);
                assert_eq!(
                    parsed.service,
                    ServiceAnnotations::default(),
                    "{key}={value:?}"
                );
            }
        }
    }
}

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

#[test]
fn a_health_check_timeout_longer_than_the_interval_is_capped() {
    let parsed = parse_service_checked(&raw(&[
        ("portico.dev/health-check-interval", "1s"),
        ("portico.dev/health-check-timeout", "5s"),
    ]));
    assert_eq!(
        parsed.service.health_check_timeout,
        Some(Duration::from_secs(1))
    );
    assert_eq!(
        kinds(&parsed),
        vec![("portico.dev/health-check-timeout", DiagnosticKind::Partial)]
    );
    assert!(parsed.service.wants_health_checks());
    assert!(!ServiceAnnotations::default().wants_health_checks());
}

#[test]
fn a_service_reports_only_portico_keys_that_are_not_its_own() {
    let parsed = parse_service_checked(&raw(&[
        ("portico.dev/panic-threshold", "30"),
        ("portico.dev/rewrite-target", "/"),
        ("portico.dev/made-up", "x"),
        ("nginx.ingress.kubernetes.io/rewrite-target", "/"),
        ("nginx.ingress.kubernetes.io/made-up", "x"),
        ("nginx.ingress.kubernetes.io/server-snippet", "x"),
        ("example.com/anything", "x"),
    ]));
    assert_eq!(parsed.service.panic_threshold, Some(30));
    assert_eq!(
        kinds(&parsed),
        vec![
            ("portico.dev/made-up", DiagnosticKind::Unknown),
            ("portico.dev/rewrite-target", DiagnosticKind::Unsupported),
        ]
    );
    assert!(
        parsed.diagnostics[1]
            .message
            .contains("belongs on an Ingress")
    );
}

#[test]
fn service_annotations_on_an_ingress_say_where_they_belong() {
    let parsed = parse_checked(&raw(&[("portico.dev/panic-threshold", "30")]));
    assert_eq!(parsed.ingress, IngressAnnotations::default());
    assert_eq!(
        kinds(&parsed),
        vec![("portico.dev/panic-threshold", DiagnosticKind::Unsupported)]
    );
    assert!(
        parsed.diagnostics[0]
            .message
            .contains("belongs on a Service")
    );
}

#[test]
fn every_annotation_has_valid_and_invalid_cases() {
    let valid: BTreeSet<&str> = VALID
        .iter()
        .flat_map(|c| c.set.iter().map(|(name, _)| *name))
        .chain(
            SERVICE_VALID
                .iter()
                .flat_map(|c| c.set.iter().map(|(name, _)| *name)),
        )
        .collect();
    let invalid: BTreeSet<&str> = INVALID
        .iter()
        .chain(INVALID_AUTH)
        .map(|c| c.name)
        .chain(SERVICE_INVALID.iter().map(|c| c.name))
        .collect();
    for spec in registry() {
        assert!(valid.contains(spec.name), "{}: no valid case", spec.name);
        assert!(
            invalid.contains(spec.name),
            "{}: no invalid case",
            spec.name
        );
    }
}

#[test]
fn invalid_messages_say_why_and_what_happens() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "backend-protocol",
            "AUTO_HTTP",
            &["AUTO_HTTP is not supported", "the default (HTTP) applies"],
        ),
        ("backend-protocol", "fcgi", &["FCGI is not supported"]),
        (
            "custom-headers",
            "default/my-headers",
            &["ConfigMap", "inline"],
        ),
        (
            "custom-headers",
            "X-A: 1\nContent-Length: 0",
            &["line 2: content-length cannot be set", "frames the message"],
        ),
        (
            "rewrite-target",
            "/$host",
            &["nginx variables", "paths answer 503"],
        ),
        (
            "permanent-redirect",
            "https://a.example$request_uri",
            &["$request_uri", "paths answer 503"],
        ),
        (
            "proxy-read-timeout",
            "25h",
            &["at most 24h", "the default (60) applies"],
        ),
        ("proxy-read-timeout", "0", &["greater than 0"]),
        (
            "app-root",
            "//evil.example",
            &["another host", "it stays unset"],
        ),
        ("default-backend", "ns/svc", &["without a namespace"]),
    ];
    for (name, value, needles) in cases {
        let key = format!("{NGINX_PREFIX}{name}");
        let parsed = parse_checked(&raw(&[(key.as_str(), value)]));
        let message = &parsed.diagnostics[0].message;
        for needle in *needles {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }
}

#[test]
fn empty_values_count_as_not_set() {
    for name in [
        "rewrite-target",
        "proxy-read-timeout",
        "canary",
        "custom-headers",
    ] {
        for value in ["", "  "] {
            let parsed = parse_checked(&map(NGINX_PREFIX, &[(name, value)]));
            assert_eq!(parsed.ingress, IngressAnnotations::default());
            assert_eq!(parsed.diagnostics.len(), 1);
            assert_eq!(
                parsed.diagnostics[0].kind,
                DiagnosticKind::Invalid(Fallback::Ignored),
                "{}",
                parsed.diagnostics[0].message
            );
            assert!(parsed.diagnostics[0].message.contains("empty value"));
        }
    }
}

#[test]
fn every_default_parses() {
    for spec in registry().iter().filter(|s| !s.default.is_empty()) {
        let mut draft = Draft::default();
        assert_eq!(
            (spec.parse)(spec.default, &mut draft),
            Ok(()),
            "{}",
            spec.name
        );
    }
}

// === rules between annotations ===

fn kinds(parsed: &Parsed) -> Vec<(&str, DiagnosticKind)> {
    parsed
        .diagnostics
        .iter()
        .map(|d| (d.key.as_str(), d.kind))
        .collect()
}

const IGNORED: DiagnosticKind = DiagnosticKind::Invalid(Fallback::Ignored);

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

#[test]
fn canary_parts_need_canary_true() {
    let parts = [
        ("canary-weight", "10"),
        ("canary-weight-total", "50"),
        ("canary-by-header", "X-Canary"),
        ("canary-by-header-value", "yes"),
        ("canary-by-header-pattern", "y.*"),
        ("canary-by-cookie", "c"),
        ("affinity-canary-behavior", "legacy"),
    ];
    parts_need_a_switch(&parts, "canary", "unless canary is \"true\"");
}

/// `parts` without `switch`, or with it `"false"`: each is reported as
/// ignored, saying `why`, and nothing is set.
#[track_caller]
fn parts_need_a_switch(parts: &[(&str, &str)], switch: &str, why: &str) {
    for value in [None, Some("false")] {
        let mut pairs = parts.to_vec();
        pairs.extend(value.map(|v| (switch, v)));
        let parsed = parse_checked(&map(NGINX_PREFIX, &pairs));
        assert_eq!(parsed.ingress, IngressAnnotations::default());
        assert_eq!(
            parsed.diagnostics.len(),
            parts.len(),
            "{:#?}",
            parsed.diagnostics
        );
        for d in &parsed.diagnostics {
            assert_eq!(d.kind, IGNORED);
            assert!(d.message.contains(why), "{}", d.message);
        }
    }
}

#[test]
fn canary_header_value_and_pattern_need_header() {
    let parsed = parse_checked(&map(
        NGINX_PREFIX,
        &[
            ("canary", "true"),
            ("canary-by-header-value", "yes"),
            ("canary-by-header-pattern", "y.*"),
        ],
    ));
    assert_eq!(parsed.ingress.canary, Some(CanaryAnnotations::default()));
    assert_eq!(
        kinds(&parsed),
        vec![
            (
                "nginx.ingress.kubernetes.io/canary-by-header-value",
                IGNORED
            ),
            (
                "nginx.ingress.kubernetes.io/canary-by-header-pattern",
                IGNORED
            ),
        ]
    );
}

#[test]
fn canary_header_value_wins_over_pattern() {
    let parsed = parse_checked(&map(
        NGINX_PREFIX,
        &[
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-value", "yes"),
            ("canary-by-header-pattern", "y.*"),
        ],
    ));
    let canary = parsed.ingress.canary.clone().unwrap();
    assert_eq!(canary.by_header_value.as_deref(), Some("yes"));
    assert_eq!(canary.by_header_pattern, None);
    assert_eq!(
        kinds(&parsed),
        vec![(
            "nginx.ingress.kubernetes.io/canary-by-header-pattern",
            IGNORED
        )]
    );
}

#[test]
fn canary_weight_above_total_is_capped() {
    let parsed = parse_checked(&map(
        NGINX_PREFIX,
        &[("canary", "true"), ("canary-weight", "150")],
    ));
    assert_eq!(parsed.ingress.canary.as_ref().unwrap().weight, Some(100));
    assert_eq!(
        kinds(&parsed),
        vec![(
            "nginx.ingress.kubernetes.io/canary-weight",
            DiagnosticKind::Partial
        )]
    );
}

#[test]
fn grpc_web_lists_drop_invalid_entries_and_keep_the_rest() {
    let parsed = parse_checked(&map(
        PORTICO_PREFIX,
        &[(
            "grpc-web-allow-origins",
            "https://ok.example, ftp://x.example, https://a.example/path, *.example.com, http://[::1]:3000",
        )],
    ));
    assert_eq!(
        parsed.ingress.grpc.allow_origins,
        vec![origin("https://ok.example"), origin("http://[::1]:3000")]
    );
    assert_eq!(parsed.diagnostics.len(), 3, "{:#?}", parsed.diagnostics);
    assert!(
        parsed
            .diagnostics
            .iter()
            .all(|d| d.message.contains("dropped")),
        "{:#?}",
        parsed.diagnostics
    );
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

#[test]
fn server_alias_drops_invalid_entries_and_keeps_the_rest() {
    let value = "a.example.com, bad_host, *.b.example.com, ~^www\\d+$, x.*.example.com";
    let parsed = parse_checked(&map(NGINX_PREFIX, &[("server-alias", value)]));
    assert_eq!(
        parsed.ingress.server_alias,
        vec!["a.example.com".to_owned(), "*.b.example.com".to_owned()]
    );
    assert_eq!(parsed.diagnostics.len(), 3, "{:#?}", parsed.diagnostics);
    for (d, entry) in parsed
        .diagnostics
        .iter()
        .zip(["bad_host", "~^www\\\\d+$", "x.*.example.com"])
    {
        assert_eq!(d.kind, IGNORED);
        assert!(d.message.contains(entry), "{} lacks {entry}", d.message);
    }
}

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

// === keys ===

#[test]
fn portico_spelling_wins_a_conflict() {
    let parsed = parse_checked(&raw(&[
        ("portico.dev/proxy-read-timeout", "30"),
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "120"),
    ]));
    assert_eq!(
        parsed.ingress.proxy_read_timeout,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        kinds(&parsed),
        vec![(
            "nginx.ingress.kubernetes.io/proxy-read-timeout",
            DiagnosticKind::Conflict
        )]
    );
    assert!(
        parsed.diagnostics[0]
            .message
            .contains("portico.dev/proxy-read-timeout=\"30\"")
    );
}

#[test]
fn same_value_under_both_spellings_is_no_conflict() {
    let parsed = parse_checked(&raw(&[
        ("portico.dev/use-regex", "true"),
        ("nginx.ingress.kubernetes.io/use-regex", " true "),
    ]));
    assert!(parsed.ingress.use_regex);
    assert_eq!(parsed.diagnostics, vec![]);
}

#[test]
fn an_invalid_portico_value_still_wins() {
    let parsed = parse_checked(&raw(&[
        ("portico.dev/rewrite-target", "/$host"),
        ("nginx.ingress.kubernetes.io/rewrite-target", "/$1"),
    ]));
    assert_eq!(parsed.ingress.rewrite_target, None);
    assert_eq!(
        kinds(&parsed),
        vec![
            (
                "nginx.ingress.kubernetes.io/rewrite-target",
                DiagnosticKind::Conflict
            ),
            (
                "portico.dev/rewrite-target",
                DiagnosticKind::Invalid(Fallback::PathDenied)
            ),
        ]
    );
}

#[test]
fn unknown_keys_under_either_prefix() {
    let parsed = parse_checked(&raw(&[
        ("portico.dev/rewrite-targets", "/"),
        ("nginx.ingress.kubernetes.io/no-such-thing", "x"),
        ("portico.dev/", "x"),
    ]));
    assert_eq!(parsed.ingress, IngressAnnotations::default());
    assert_eq!(
        kinds(&parsed),
        vec![
            (
                "nginx.ingress.kubernetes.io/no-such-thing",
                DiagnosticKind::Unknown
            ),
            ("portico.dev/", DiagnosticKind::Unknown),
            ("portico.dev/rewrite-targets", DiagnosticKind::Unknown),
        ]
    );
}

#[test]
fn unsupported_nginx_annotations() {
    let parsed = parse_checked(&raw(&[
        (
            "nginx.ingress.kubernetes.io/auth-url",
            "https://auth.example/",
        ),
        ("nginx.ingress.kubernetes.io/limit-rps", "10"),
        ("nginx.ingress.kubernetes.io/grpc-backend", "true"),
        ("portico.dev/auth-tls-match-cn", "CN=x"),
    ]));
    assert_eq!(parsed.ingress, IngressAnnotations::default());
    assert_eq!(
        kinds(&parsed),
        vec![
            (
                "nginx.ingress.kubernetes.io/auth-url",
                DiagnosticKind::Unsupported
            ),
            (
                "nginx.ingress.kubernetes.io/grpc-backend",
                DiagnosticKind::Unsupported
            ),
            (
                "nginx.ingress.kubernetes.io/limit-rps",
                DiagnosticKind::Unsupported
            ),
            ("portico.dev/auth-tls-match-cn", DiagnosticKind::Unsupported),
        ]
    );
    assert!(
        parsed.diagnostics[0]
            .message
            .contains("not supported by Portico yet")
    );
    assert!(
        parsed.diagnostics[1]
            .message
            .contains("backend-protocol: GRPC")
    );
}

#[test]
fn snippets_are_never_parsed() {
    let snippet = "more_set_headers \"X: $host\";\nreturn 302 /x;";
    for name in [
        "configuration-snippet",
        "server-snippet",
        "auth-snippet",
        "stream-snippet",
        "modsecurity-snippet",
        "made-up-snippet",
    ] {
        for prefix in PREFIXES {
            let parsed = parse_checked(&map(prefix, &[(name, snippet)]));
            assert_eq!(parsed.ingress, IngressAnnotations::default());
            assert_eq!(
                kinds(&parsed),
                vec![(format!("{prefix}{name}").as_str(), DiagnosticKind::Snippet)]
            );
        }
    }
}

#[test]
fn other_prefixes_are_ignored_silently() {
    let parsed = parse_checked(&raw(&[
        ("kubernetes.io/ingress.class", "nginx"),
        ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ("nginx.org/rewrite-target", "/"),
        ("foo.portico.dev/rewrite-target", "/"),
        ("ingress.kubernetes.io/rewrite-target", "/"),
        ("rewrite-target", "/"),
        ("portico.dev", "x"),
        ("Portico.dev/rewrite-target", "/"),
    ]));
    assert_eq!(parsed, Parsed::default());
}

#[test]
fn messages_stay_on_one_line_and_short() {
    let long = format!("/{}\n", "a".repeat(500));
    let parsed = parse_checked(&map(
        NGINX_PREFIX,
        &[("configuration-snippet", long.as_str())],
    ));
    let message = &parsed.diagnostics[0].message;
    assert!(message.len() < 300, "{message}");
    assert!(message.contains('…'));
    assert_eq!(parsed.diagnostics[0].value, long);
}

// === registry mechanisms (with a made-up table) ===

fn set_use_regex(v: &str, d: &mut Draft) -> Result<(), String> {
    features::rewrite::use_regex(v, d)
}

const TEST_REGISTRY: &[AnnotationSpec] = &[
    AnnotationSpec {
        name: "use-regex",
        aliases: &["regex-paths"],
        default: "false",
        scope: Scope::Path,
        object: ObjectKind::Ingress,
        on_invalid: Fallback::Ignored,
        support: Support::Full,
        doc: "test",
        parse: set_use_regex,
    },
    AnnotationSpec {
        name: "health-check-path",
        aliases: &[],
        default: "",
        scope: Scope::Path,
        object: ObjectKind::Service,
        on_invalid: Fallback::Ignored,
        support: Support::Full,
        doc: "test",
        parse: set_use_regex,
    },
];

fn parse_test_registry(pairs: &[(&str, &str)]) -> Parsed {
    parse_with(TEST_REGISTRY, &[], &raw(pairs))
}

#[test]
fn aliases_answer_under_both_prefixes() {
    for key in [
        "portico.dev/regex-paths",
        "nginx.ingress.kubernetes.io/regex-paths",
    ] {
        let parsed = parse_test_registry(&[(key, "true")]);
        assert!(parsed.ingress.use_regex, "{key}");
        assert_eq!(parsed.diagnostics, vec![]);
    }
}

#[test]
fn name_beats_alias_and_portico_beats_nginx() {
    let parsed = parse_test_registry(&[
        ("portico.dev/regex-paths", "true"),
        ("portico.dev/use-regex", "false"),
        ("nginx.ingress.kubernetes.io/use-regex", "1"),
    ]);
    assert!(!parsed.ingress.use_regex);
    assert_eq!(
        kinds(&parsed),
        vec![
            ("portico.dev/regex-paths", DiagnosticKind::Conflict),
            (
                "nginx.ingress.kubernetes.io/use-regex",
                DiagnosticKind::Conflict
            ),
        ]
    );

    let parsed = parse_test_registry(&[
        ("portico.dev/regex-paths", "true"),
        ("nginx.ingress.kubernetes.io/use-regex", "false"),
    ]);
    assert!(
        parsed.ingress.use_regex,
        "a portico alias beats the nginx name"
    );
}

#[test]
fn service_annotations_on_an_ingress_are_unsupported() {
    let parsed = parse_test_registry(&[("portico.dev/health-check-path", "/healthz")]);
    assert_eq!(parsed.ingress, IngressAnnotations::default());
    assert_eq!(
        kinds(&parsed),
        vec![("portico.dev/health-check-path", DiagnosticKind::Unsupported)]
    );
    assert!(parsed.diagnostics[0].message.contains("Service"));
}

// === the tables ===

#[test]
fn names_are_unique_across_both_tables() {
    let mut seen = BTreeSet::new();
    let names = registry()
        .iter()
        .flat_map(|s| std::iter::once(&s.name).chain(s.aliases))
        .chain(
            nginx_not_supported()
                .iter()
                .flat_map(|n| std::iter::once(&n.name).chain(n.aliases)),
        );
    for name in names {
        assert!(seen.insert(*name), "{name} is listed twice");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{name}: names are lower-case words joined by '-'"
        );
    }
}

#[test]
fn snippets_are_only_listed_as_snippets() {
    for spec in registry() {
        assert!(!spec.name.ends_with("-snippet"), "{}", spec.name);
    }
    for known in nginx_not_supported() {
        assert_eq!(
            known.name.ends_with("-snippet"),
            known.status == NginxStatus::Snippet,
            "{}",
            known.name
        );
    }
}

#[test]
fn docs_lines_are_one_line() {
    for spec in registry() {
        assert!(!spec.doc.contains('\n'), "{}", spec.name);
        assert!(
            spec.doc.ends_with('.'),
            "{}: end the doc with a full stop",
            spec.name
        );
    }
}

// === docs/annotations.md ===

#[test]
fn committed_docs_match_the_registry() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/annotations.md");
    let want = markdown();
    if std::env::var("PORTICO_UPDATE_DOCS").as_deref() == Ok("1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/annotations.md differs from the annotation registry; regenerate it with \
         `PORTICO_UPDATE_DOCS=1 cargo test -p portico --lib annotations` and commit the result"
    );
}

#[test]
fn docs_list_every_annotation() {
    let docs = markdown();
    for spec in registry() {
        assert!(
            docs.contains(&format!("| `{}` |", spec.name)),
            "{}",
            spec.name
        );
    }
    for known in nginx_not_supported() {
        assert!(
            docs.contains(&format!("| `{}` |", known.name)),
            "{}",
            known.name
        );
    }
}
