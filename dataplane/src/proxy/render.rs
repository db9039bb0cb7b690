//! The one place answers are made: a filter's or a redirect rule's answer
//! ([`render`]) and the proxy's own errors ([`RequestCtx::error`]), in the
//! caller's protocol (plain text, or gRPC trailers-only for gRPC and
//! gRPC-Web).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{BodyError, ResponseBody};
use crate::filter::Answer;
use crate::grpc::{self, Code, GrpcBodyError};
use crate::headers::X_REQUEST_ID;
use crate::request::ctx::{Call, RequestCtx};
use crate::upstream::UpstreamError;
use tracing::warn;

impl RequestCtx {
    /// The proxy's own error answer, in the caller's protocol.
    pub(crate) fn error(&self, status: StatusCode) -> Response<ResponseBody> {
        match &self.call {
            Call::Http => error_response(status, &self.id),
            _ => {
                let reason = status.canonical_reason().unwrap_or("error");
                let message = format!(
                    "portico: {reason} (request id {})",
                    String::from_utf8_lossy(self.id.as_bytes())
                );
                self.grpc_status(Code::from_http(status), &message, StatusCode::OK)
            }
        }
    }

    /// A gRPC (or gRPC-Web) trailers-only answer: the status in the headers,
    /// no body, under `http` (200 unless the protocol asks for another).
    pub(crate) fn grpc_status(
        &self,
        code: Code,
        message: &str,
        http: StatusCode,
    ) -> Response<ResponseBody> {
        let content_type = match &self.call {
            Call::Web {
                content_type,
                text_out,
            } => content_type.response(*text_out),
            _ => HeaderValue::from_static("application/grpc"),
        };
        let mut rsp = grpc::trailers_only(code, message, content_type);
        *rsp.status_mut() = http;
        rsp.headers_mut()
            .insert(X_REQUEST_ID.clone(), self.id.clone());
        rsp
    }
}

/// The one renderer of a filter's or a redirect rule's answer, in the
/// caller's protocol. A redirect stays a redirect for HTTP and gRPC-Web
/// (a browser's fetch follows it); a gRPC client cannot follow one, so it
/// gets a status it can read, with the `Location` for whoever looks.
pub(super) fn render(answer: Answer, ctx: &RequestCtx) -> Response<ResponseBody> {
    match answer {
        Answer::Preflight(rsp) => *rsp,
        Answer::Status(status) => ctx.error(status),
        Answer::Limited(limited) => {
            // gRPC's own mapping makes 429 and 503 UNAVAILABLE, which
            // clients retry at once; a limit is a quota: RESOURCE_EXHAUSTED.
            let mut rsp = match ctx.call {
                Call::Http => ctx.error(limited.status),
                Call::Grpc | Call::Web { .. } => ctx.grpc_status(
                    Code::ResourceExhausted,
                    &format!("portico: rate limited (HTTP {})", limited.status.as_u16()),
                    StatusCode::OK,
                ),
            };
            let h = rsp.headers_mut();
            h.insert(header::RETRY_AFTER, HeaderValue::from(limited.retry_after));
            if let Some((policy, state)) = limited.headers {
                h.insert(&crate::filter::rate_limit::RATELIMIT_POLICY, policy);
                h.insert(&crate::filter::rate_limit::RATELIMIT, state);
            }
            rsp
        }
        Answer::Unauthorized(challenge) => {
            let mut rsp = ctx.error(StatusCode::UNAUTHORIZED);
            rsp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, challenge);
            rsp
        }
        Answer::Redirect { status, location } => {
            // A location the client's own path made invalid.
            let Ok(location) = HeaderValue::try_from(location) else {
                return ctx.error(StatusCode::BAD_REQUEST);
            };
            let mut rsp = match ctx.call {
                Call::Grpc => ctx.grpc_status(
                    Code::from_http(status),
                    &format!("portico: redirected with HTTP {}", status.as_u16()),
                    StatusCode::OK,
                ),
                Call::Http | Call::Web { .. } => {
                    let mut rsp = Response::new(ResponseBody::empty());
                    *rsp.status_mut() = status;
                    rsp
                }
            };
            rsp.headers_mut().insert(header::LOCATION, location);
            rsp
        }
    }
}

pub(super) fn upstream_error_response(
    e: &UpstreamError,
    ctx: &RequestCtx,
) -> Response<ResponseBody> {
    let status = match e {
        UpstreamError::ConnectTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        UpstreamError::Connect { .. }
        | UpstreamError::Tls { .. }
        | UpstreamError::Handshake { .. }
        | UpstreamError::H2Handshake { .. } => StatusCode::BAD_GATEWAY,
        UpstreamError::Http { .. } | UpstreamError::H1 { .. } | UpstreamError::H2 { .. } => {
            match e.body_error() {
                Some(BodyError::TooLarge { .. }) => StatusCode::PAYLOAD_TOO_LARGE,
                Some(BodyError::Timeout(_)) => StatusCode::REQUEST_TIMEOUT,
                // Only response bodies carry the request timeout.
                Some(BodyError::Deadline) => StatusCode::GATEWAY_TIMEOUT,
                // The client's body broke off: nothing useful reaches it anyway.
                Some(BodyError::Stream(_)) => StatusCode::BAD_REQUEST,
                Some(BodyError::Grpc(e)) => return grpc_body_error(e, ctx),
                // Only response bodies read from upstream; not a request's.
                Some(BodyError::Upstream(_)) | None => StatusCode::BAD_GATEWAY,
            }
        }
    };
    if status.is_server_error() {
        warn!(request.id = ?ctx.id, error = %e, "upstream request failed");
    }
    ctx.error(status)
}

/// The proxy cut a gRPC call's request stream before the backend answered.
/// Invalid base64 is the client's fault in HTTP terms too (400).
pub(super) fn grpc_body_error(e: &GrpcBodyError, ctx: &RequestCtx) -> Response<ResponseBody> {
    let http = match e {
        GrpcBodyError::InvalidBase64 => StatusCode::BAD_REQUEST,
        GrpcBodyError::MessageTooLarge { .. } => StatusCode::OK,
    };
    ctx.grpc_status(e.code(), &format!("portico: {e}"), http)
}

/// The one place errors become responses: a short plain-text body naming the
/// status and the request id.
fn error_response(status: StatusCode, id: &HeaderValue) -> Response<ResponseBody> {
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "{} {}\nrequest id: {}\n",
        status.as_u16(),
        reason,
        String::from_utf8_lossy(id.as_bytes())
    );
    let mut rsp = Response::new(ResponseBody::full(Bytes::from(body)));
    *rsp.status_mut() = status;
    let h = rsp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    h.insert(X_REQUEST_ID.clone(), id.clone());
    rsp
}

/// An upstream answered a gRPC call with something that is not gRPC.
pub(super) fn non_grpc_answer(status: StatusCode, ctx: &RequestCtx) -> Response<ResponseBody> {
    let code = if status.is_success() {
        Code::Unknown
    } else {
        Code::from_http(status)
    };
    let message = format!("upstream answered HTTP {} without gRPC", status.as_u16());
    ctx.grpc_status(code, &message, StatusCode::OK)
}
