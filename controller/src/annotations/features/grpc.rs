//! gRPC: the gRPC-Web bridge (`grpc-web*`) and `grpc-max-message-size`
//! (Portico's own).

use super::prelude::*;
use crate::annotations::{BodySize, list};
use std::time::Duration;

/// `grpc-web*` and `grpc-max-message-size` (Portico's own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcAnnotations {
    /// Bridge gRPC-Web to gRPC on these paths.
    pub web: bool,
    /// Browser origins (`scheme://host[:port]`, lower-cased, or a
    /// `*.` wildcard host) or `*`.
    pub allow_origins: Vec<portico_dataplane::model::OriginPattern>,
    pub allow_headers: Vec<http::HeaderName>,
    pub expose_headers: Vec<http::HeaderName>,
    pub allow_credentials: bool,
    pub max_age: Option<Duration>,
    pub max_message: Option<BodySize>,
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "grpc-web",
        "false",
        Path,
        Ignored,
        Full,
        "Portico's own: bridge gRPC-Web (`application/grpc-web[-text][+proto]`, HTTP/1.1 or HTTP/2, POST) to gRPC toward the backend, which is then spoken to over HTTP/2 (`backend-protocol` HTTP becomes GRPC, HTTPS becomes GRPCS). Other requests on these paths are proxied as usual.",
        grpc_web,
    ),
    spec(
        "grpc-web-allow-origins",
        "",
        Path,
        Ignored,
        Full,
        "Portico's own: browser origins allowed to call the gRPC-Web paths, comma-separated, as cors-allow-origin (`https://app.example.com`, `https://*.example.com`, `*`). Unset: no CORS headers and preflights from other origins are refused (403), so only same-origin pages can call. Invalid entries are dropped, the rest kept. With enable-cors the cors-* settings apply instead, gRPC-Web's headers added (reported).",
        grpc_web_allow_origins,
    ),
    spec(
        "grpc-web-allow-headers",
        "",
        Path,
        Ignored,
        Full,
        "Portico's own: request headers allowed in gRPC-Web preflights besides `x-grpc-web`, `x-user-agent`, `grpc-timeout`, `content-type` and `authorization`, comma-separated.",
        grpc_web_allow_headers,
    ),
    spec(
        "grpc-web-expose-headers",
        "",
        Path,
        Ignored,
        Full,
        "Portico's own: response headers exposed to gRPC-Web pages besides `grpc-status`, `grpc-message` and `grpc-status-details-bin`, comma-separated (e.g. custom metadata).",
        grpc_web_expose_headers,
    ),
    spec(
        "grpc-web-allow-credentials",
        "false",
        Path,
        Ignored,
        Full,
        "Portico's own: let gRPC-Web pages send cookies and HTTP authentication (`Access-Control-Allow-Credentials: true`); with origin `*` the caller's origin is echoed, as browsers require.",
        grpc_web_allow_credentials,
    ),
    spec(
        "grpc-web-max-age",
        "86400",
        Path,
        Ignored,
        Full,
        "Portico's own: how long browsers may cache a gRPC-Web preflight answer; whole seconds or one nginx unit (`10m`), at most 24h.",
        grpc_web_max_age,
    ),
    spec(
        "grpc-max-message-size",
        "4m",
        Path,
        Ignored,
        Full,
        "Portico's own: largest message a gRPC or gRPC-Web client may send (after base64 decoding), same syntax as proxy-body-size, `0` for no limit; a larger one ends the call with RESOURCE_EXHAUSTED. gRPC calls are limited per message, not by proxy-body-size: a stream has no total size.",
        grpc_max_message_size,
    ),
];

fn grpc_web(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.web = values::go_bool(v)?;
    Ok(())
}

fn grpc_web_allow_origins(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.allow_origins = list(v, d, values::cors_origin)?;
    Ok(())
}

fn grpc_web_allow_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.allow_headers = list(v, d, values::header_name)?;
    Ok(())
}

fn grpc_web_expose_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.expose_headers = list(v, d, values::header_name)?;
    Ok(())
}

fn grpc_web_allow_credentials(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.allow_credentials = values::go_bool(v)?;
    Ok(())
}

fn grpc_web_max_age(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.max_age = Some(values::timeout(v)?);
    Ok(())
}

fn grpc_max_message_size(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.max_message = Some(values::body_size(v)?);
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::BodySize;
    use crate::annotations::tests::*;
    use portico_dataplane::model::OriginPattern;

    pub(crate) const VALID: &[Valid] = &[
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
    ];

    pub(crate) const INVALID: &[Invalid] = &[
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
    ];

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
}
