//! gRPC as the proxy sees it: recognising gRPC requests, the deadline a
//! client asked for, and errors the proxy itself produces, which must be
//! gRPC-shaped (HTTP 200, trailers-only, `grpc-status` and a percent-encoded
//! `grpc-message`) because gRPC clients ignore HTTP status and bodies.
//!
//! References: the gRPC over HTTP/2 protocol spec (`PROTOCOL-HTTP2.md`) and
//! the HTTP to gRPC status mapping (`http-grpc-status-mapping.md`).

pub(crate) mod web;

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ResponseBody;

pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
pub static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRPC status codes the proxy produces or maps to.
// The whole table, as gRPC numbers it: the proxy produces only some.
#[allow(dead_code)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// The status for an HTTP error the proxy would otherwise answer with,
    /// following gRPC's HTTP-to-gRPC mapping, with the proxy's own causes
    /// made precise: a timeout is a deadline, a size limit is exhaustion.
    pub fn from_http(status: StatusCode) -> Self {
        match status.as_u16() {
            200..=299 => Code::Ok,
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            408 | 504 => Code::DeadlineExceeded,
            413 | 431 => Code::ResourceExhausted,
            429 | 502 | 503 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }

    pub fn as_u8(self) -> u8 {
        self as u8
    }

    /// `grpc-status` header value.
    pub fn header_value(self) -> HeaderValue {
        HeaderValue::from(u16::from(self.as_u8()))
    }
}

/// Whether the content type is gRPC proper: `application/grpc` or
/// `application/grpc+<subtype>`, optionally with parameters.
pub fn is_grpc(headers: &HeaderMap) -> bool {
    let Some(ct) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    let Some(rest) = strip_prefix_ignore_case(essence, "application/grpc") else {
        return false;
    };
    rest.is_empty() || rest.starts_with('+')
}

pub(crate) fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Parses `grpc-timeout`: up to 8 ASCII digits and a unit (`H`, `M`, `S`,
/// `m`, `u`, `n`). Anything else is ignored, as the spec asks of servers.
pub fn parse_timeout(value: &HeaderValue) -> Option<Duration> {
    let s = value.to_str().ok()?;
    if s.len() < 2 || s.len() > 9 {
        return None;
    }
    let (digits, unit) = s.split_at(s.len() - 1);
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// A gRPC message frame header: flag byte and 32-bit big-endian length.
pub(crate) const FRAME_HEADER_LEN: usize = 5;

/// Why a gRPC (or gRPC-Web) request body was cut off by the proxy.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GrpcBodyError {
    #[error("the request body is not valid base64")]
    InvalidBase64,
    #[error("a {len}-byte message exceeds the {max}-byte limit")]
    MessageTooLarge { len: u64, max: u64 },
}

impl GrpcBodyError {
    pub fn code(&self) -> Code {
        match self {
            GrpcBodyError::InvalidBase64 => Code::InvalidArgument,
            GrpcBodyError::MessageTooLarge { .. } => Code::ResourceExhausted,
        }
    }
}

/// Follows gRPC length-prefixed frames through a byte stream, however it is
/// chunked: knows where each message ends, and refuses one larger than the
/// limit as soon as its header says so, before it is buffered anywhere.
#[derive(Clone, Debug)]
pub struct FrameCursor {
    max: u64,
    header: [u8; FRAME_HEADER_LEN],
    header_len: usize,
    /// Message bytes still to come in the current frame.
    remaining: u64,
}

impl FrameCursor {
    pub fn new(max: u64) -> Self {
        Self {
            max,
            header: [0; FRAME_HEADER_LEN],
            header_len: 0,
            remaining: 0,
        }
    }

    /// Follows `data`; an error names the first frame over the limit.
    pub fn advance(&mut self, mut data: &[u8]) -> Result<(), GrpcBodyError> {
        while !data.is_empty() {
            if self.remaining > 0 {
                let n = usize::try_from(self.remaining)
                    .unwrap_or(usize::MAX)
                    .min(data.len());
                self.remaining -= n as u64;
                data = &data[n..];
                continue;
            }
            let n = (FRAME_HEADER_LEN - self.header_len).min(data.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&data[..n]);
            self.header_len += n;
            data = &data[n..];
            if self.header_len == FRAME_HEADER_LEN {
                self.header_len = 0;
                let len = u64::from(u32::from_be_bytes([
                    self.header[1],
                    self.header[2],
                    self.header[3],
                    self.header[4],
                ]));
                if len > self.max {
                    return Err(GrpcBodyError::MessageTooLarge { len, max: self.max });
                }
                self.remaining = len;
            }
        }
        Ok(())
    }

    /// Between two frames: another frame may start here.
    pub fn at_boundary(&self) -> bool {
        self.header_len == 0 && self.remaining == 0
    }
}

/// Why the proxy cut a call's request stream, shared between the request
/// body (which records it) and the response body (which reports it to the
/// client as the call's status).
#[derive(Clone, Debug, Default)]
pub struct CallFailure(Arc<OnceLock<GrpcBodyError>>);

impl CallFailure {
    pub fn set(&self, e: GrpcBodyError) {
        let _ = self.0.set(e);
    }

    pub fn get(&self) -> Option<&GrpcBodyError> {
        self.0.get()
    }
}

/// Percent-encodes a `grpc-message`: everything outside printable ASCII,
/// and `%` itself, as `%XX` of its UTF-8 bytes.
pub fn encode_message(message: &str) -> HeaderValue {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    // Only printable ASCII remains, which is always a valid header value.
    HeaderValue::from_str(&out).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// The `grpc-status` in headers or trailers, when it is a number.
pub fn status_of(headers: &HeaderMap) -> Option<u8> {
    headers.get(&GRPC_STATUS)?.to_str().ok()?.parse().ok()
}

/// `grpc-status` and (when not empty) `grpc-message`, as trailers.
pub fn status_trailers(code: Code, message: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(GRPC_STATUS.clone(), code.header_value());
    if !message.is_empty() {
        h.insert(GRPC_MESSAGE.clone(), encode_message(message));
    }
    h
}

/// The proxy's own answer to a gRPC call it cannot forward: HTTP 200 with
/// the status in the headers and no body (a trailers-only response).
pub fn trailers_only(
    code: Code,
    message: &str,
    content_type: HeaderValue,
) -> Response<ResponseBody> {
    let mut rsp = Response::new(ResponseBody::empty());
    *rsp.headers_mut() = status_trailers(code, message);
    rsp.headers_mut().insert(header::CONTENT_TYPE, content_type);
    rsp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn recognises_grpc_content_types() {
        for ct in [
            "application/grpc",
            "application/grpc+proto",
            "Application/GRPC+json",
            "application/grpc; charset=utf-8",
        ] {
            assert!(is_grpc(&headers(ct)), "{ct}");
        }
        for ct in [
            "application/grpc-web",
            "application/grpc-web-text+proto",
            "application/grpcx",
            "application/json",
        ] {
            assert!(!is_grpc(&headers(ct)), "{ct}");
        }
        assert!(!is_grpc(&HeaderMap::new()));
    }

    #[test]
    fn timeouts_follow_the_spec() {
        let t = |s: &str| parse_timeout(&HeaderValue::from_str(s).unwrap());
        assert_eq!(t("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(t("2M"), Some(Duration::from_secs(120)));
        assert_eq!(t("3S"), Some(Duration::from_secs(3)));
        assert_eq!(t("250m"), Some(Duration::from_millis(250)));
        assert_eq!(t("7u"), Some(Duration::from_micros(7)));
        assert_eq!(t("99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in ["", "S", "123456789S", "1.5S", "-1S", "10s", "10"] {
            assert_eq!(t(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn messages_are_percent_encoded() {
        assert_eq!(encode_message("no route"), "no route");
        assert_eq!(encode_message("100% down"), "100%25 down");
        assert_eq!(encode_message("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn proxy_errors_map_to_grpc_codes() {
        assert_eq!(Code::from_http(StatusCode::NOT_FOUND), Code::Unimplemented);
        assert_eq!(
            Code::from_http(StatusCode::SERVICE_UNAVAILABLE),
            Code::Unavailable
        );
        assert_eq!(Code::from_http(StatusCode::BAD_GATEWAY), Code::Unavailable);
        assert_eq!(
            Code::from_http(StatusCode::GATEWAY_TIMEOUT),
            Code::DeadlineExceeded
        );
        assert_eq!(
            Code::from_http(StatusCode::PAYLOAD_TOO_LARGE),
            Code::ResourceExhausted
        );
        assert_eq!(
            Code::from_http(StatusCode::UNAUTHORIZED),
            Code::Unauthenticated
        );
        assert_eq!(Code::from_http(StatusCode::IM_A_TEAPOT), Code::Unknown);
    }

    #[test]
    fn trailers_only_is_http_200_with_status_headers() {
        let rsp = trailers_only(
            Code::Unavailable,
            "no endpoint",
            HeaderValue::from_static("application/grpc"),
        );
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()[&GRPC_STATUS], "14");
        assert_eq!(rsp.headers()[&GRPC_MESSAGE], "no endpoint");
        assert_eq!(rsp.headers()[header::CONTENT_TYPE], "application/grpc");
        assert!(http_body::Body::is_end_stream(rsp.body()));
    }
    #[test]
    fn frame_cursor_follows_headers_across_chunks() {
        let mut frames = Vec::new();
        for len in [3u32, 10, 0] {
            frames.push(0u8);
            frames.extend_from_slice(&len.to_be_bytes());
            frames.extend(std::iter::repeat_n(7u8, len as usize));
        }
        for split in 1..=8 {
            let mut cursor = FrameCursor::new(10);
            let mut boundaries = 0;
            for chunk in frames.chunks(split) {
                cursor.advance(chunk).unwrap();
                boundaries += usize::from(cursor.at_boundary());
            }
            assert!(cursor.at_boundary(), "chunks of {split}");
            assert!(boundaries >= 1);
            let mut tight = FrameCursor::new(9);
            let err = frames
                .chunks(split)
                .map(|c| tight.advance(c))
                .find_map(Result::err);
            assert_eq!(
                err,
                Some(GrpcBodyError::MessageTooLarge { len: 10, max: 9 })
            );
        }
        let mut mid = FrameCursor::new(10);
        mid.advance(&frames[..7]).unwrap();
        assert!(!mid.at_boundary());
    }
}
