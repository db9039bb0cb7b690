//! gRPC: the gRPC-Web bridge (`grpc-web*`) and `grpc-max-message-size`
//! (Portico's own).

use crate::annotations::{
    BodySize, Draft,
    Fallback::Ignored,
    list,
    registry::{AnnotationSpec, Scope::Path, Support::Full, spec},
    values,
};
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
