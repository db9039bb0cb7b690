//! Request head rules, checked once at the top of the service, before
//! routing: the size limits hyper does not apply itself, the Host rules of
//! RFC 9112 §3.2, `Transfer-Encoding`, and the headers never forwarded
//! (names with underscores, `Upgrade: h2c`).
//!
//! hyper answers some heads itself before the service runs (HTTP/1: more
//! headers than the limit, a head larger than its read buffer, a URI over
//! 64 KiB, `Transfer-Encoding` not ending in `chunked`; HTTP/2: a header
//! list over `SETTINGS_MAX_HEADER_LIST_SIZE`); the listener counts the
//! HTTP/1 ones when the connection ends ([`Rejection::HeadTooLarge`],
//! [`Rejection::Malformed`]).

use http::header::{self, HeaderMap, HeaderName};
use http::{Request, StatusCode, Uri, Version};

static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Limits and header rules of a listener; defaults as nginx
/// (`large_client_header_buffers 4 8k`, `underscores_in_headers off`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeadRules {
    /// Request line (`METHOD target HTTP/1.1`; HTTP/2: `:method :path`),
    /// without its CRLF; beyond: 414.
    pub max_request_line: usize,
    /// One header line (`name: value`), without its CRLF; beyond: 431.
    pub max_header_line: usize,
    /// The request line and every header line, each with its CRLF, and the
    /// blank line; beyond: 431.
    pub max_header_bytes: usize,
    /// Header lines; beyond: 431. Above 100, hyper allocates its parse
    /// table per HTTP/1 request instead of keeping it on the stack.
    pub max_headers: usize,
    /// Forward header names with underscores (nginx
    /// `underscores_in_headers`); dropped otherwise.
    pub underscores_in_headers: bool,
}

impl Default for HeadRules {
    fn default() -> Self {
        Self {
            max_request_line: 8 * 1024,
            max_header_line: 8 * 1024,
            max_header_bytes: 32 * 1024,
            max_headers: 100,
            underscores_in_headers: false,
        }
    }
}

/// Why a request head was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HeadError {
    #[error("request line is {len} bytes, over the limit of {limit}")]
    RequestLineTooLong { len: usize, limit: usize },
    #[error("header {name} is a {len}-byte line, over the limit of {limit}")]
    HeaderLineTooLong {
        name: HeaderName,
        len: usize,
        limit: usize,
    },
    #[error("request head is {len} bytes, over the limit of {limit}")]
    HeadTooLarge { len: usize, limit: usize },
    #[error("request has {count} headers, over the limit of {limit}")]
    TooManyHeaders { count: usize, limit: usize },
    #[error("HTTP/1.1 request without a Host header")]
    MissingHost,
    #[error("request with more than one Host header")]
    DuplicateHost,
    #[error("Transfer-Encoding other than a single `chunked`")]
    TransferEncoding,
}

impl HeadError {
    pub fn status(&self) -> StatusCode {
        match self {
            HeadError::RequestLineTooLong { .. } => StatusCode::URI_TOO_LONG,
            HeadError::HeaderLineTooLong { .. }
            | HeadError::HeadTooLarge { .. }
            | HeadError::TooManyHeaders { .. } => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            HeadError::MissingHost | HeadError::DuplicateHost | HeadError::TransferEncoding => {
                StatusCode::BAD_REQUEST
            }
        }
    }

    /// Whether the connection must close after the answer: the body's
    /// framing is in doubt, so nothing after it on the connection can be
    /// trusted to be a request.
    pub fn closes_connection(&self) -> bool {
        matches!(self, HeadError::TransferEncoding)
    }

    pub fn rejection(&self) -> Rejection {
        match self {
            HeadError::RequestLineTooLong { .. } => Rejection::RequestLine,
            HeadError::HeaderLineTooLong { .. } => Rejection::HeaderLine,
            HeadError::HeadTooLarge { .. } => Rejection::HeaderBytes,
            HeadError::TooManyHeaders { .. } => Rejection::HeaderCount,
            HeadError::MissingHost | HeadError::DuplicateHost => Rejection::Host,
            HeadError::TransferEncoding => Rejection::TransferEncoding,
        }
    }
}

/// The bounded `reason` label of `portico_request_rejections_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rejection {
    RequestLine,
    HeaderLine,
    HeaderBytes,
    HeaderCount,
    Host,
    TransferEncoding,
    /// The path could not be normalised.
    Path,
    /// The path routes elsewhere once its `;` parameters are removed.
    PathParameters,
    /// hyper refused an HTTP/1 head as too large (431, or 414 for a URI
    /// over 64 KiB) before the service ran: more headers than the limit,
    /// or a head larger than its read buffer.
    HeadTooLarge,
    /// hyper refused an HTTP/1 head as malformed (400) before the service
    /// ran.
    Malformed,
}

impl Rejection {
    pub const ALL: [Rejection; 10] = [
        Rejection::RequestLine,
        Rejection::HeaderLine,
        Rejection::HeaderBytes,
        Rejection::HeaderCount,
        Rejection::Host,
        Rejection::TransferEncoding,
        Rejection::Path,
        Rejection::PathParameters,
        Rejection::HeadTooLarge,
        Rejection::Malformed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::RequestLine => "request_line",
            Rejection::HeaderLine => "header_line",
            Rejection::HeaderBytes => "header_bytes",
            Rejection::HeaderCount => "header_count",
            Rejection::Host => "host",
            Rejection::TransferEncoding => "transfer_encoding",
            Rejection::Path => "path",
            Rejection::PathParameters => "path_parameters",
            Rejection::HeadTooLarge => "head_too_large",
            Rejection::Malformed => "malformed",
        }
    }
}

/// Checks `req`'s head against `rules` and removes the headers that are
/// never forwarded. One pass over the headers; nothing is allocated unless
/// a header has to go.
pub fn check<B>(req: &mut Request<B>, rules: &HeadRules) -> Result<(), HeadError> {
    let line = request_line_len(req.method().as_str(), req.uri(), req.version());
    if line > rules.max_request_line {
        return Err(HeadError::RequestLineTooLong {
            len: line,
            limit: rules.max_request_line,
        });
    }
    let mut total = line + 2;
    let mut count = 0;
    let mut hosts = 0;
    let mut transfer_encodings = 0;
    let mut only_chunked = true;
    let mut upgrade = false;
    let mut underscores = false;
    for (name, value) in req.headers() {
        count += 1;
        let len = name.as_str().len() + 2 + value.len();
        if len > rules.max_header_line {
            return Err(HeadError::HeaderLineTooLong {
                name: name.clone(),
                len,
                limit: rules.max_header_line,
            });
        }
        total += len + 2;
        if name == header::HOST {
            hosts += 1;
        } else if name == header::TRANSFER_ENCODING {
            transfer_encodings += 1;
            only_chunked &= value
                .as_bytes()
                .trim_ascii()
                .eq_ignore_ascii_case(b"chunked");
        } else if name == header::UPGRADE {
            upgrade = true;
        }
        underscores |= name.as_str().as_bytes().contains(&b'_');
    }
    total += 2;
    if count > rules.max_headers {
        return Err(HeadError::TooManyHeaders {
            count,
            limit: rules.max_headers,
        });
    }
    if total > rules.max_header_bytes {
        return Err(HeadError::HeadTooLarge {
            len: total,
            limit: rules.max_header_bytes,
        });
    }
    if hosts > 1 {
        return Err(HeadError::DuplicateHost);
    }
    let missing_host = match req.version() {
        Version::HTTP_2 | Version::HTTP_3 => req.uri().authority().is_none() && hosts == 0,
        Version::HTTP_11 => hosts == 0,
        _ => false,
    };
    if missing_host {
        return Err(HeadError::MissingHost);
    }
    // hyper already refuses one that does not end in `chunked`; a coding
    // before it (`gzip, chunked`) would reach the backend undeclared once
    // the proxy re-frames the body.
    if transfer_encodings > 1 || !only_chunked {
        return Err(HeadError::TransferEncoding);
    }
    let headers = req.headers_mut();
    if underscores && !rules.underscores_in_headers {
        drop_underscored(headers);
    }
    if upgrade {
        drop_h2c_upgrade(headers);
    }
    Ok(())
}

/// The request line's length as sent, without its CRLF. HTTP/2 has none:
/// its `:method` and `:path` stand in.
fn request_line_len(method: &str, uri: &Uri, version: Version) -> usize {
    let path = uri.path_and_query().map_or(0, |pq| pq.as_str().len());
    if version >= Version::HTTP_2 {
        return method.len() + 1 + path;
    }
    // Absolute form (`GET http://host/p`) and authority form (`CONNECT
    // host:443`) carry more than the path.
    let prefix = match (uri.scheme_str(), uri.authority()) {
        (Some(s), Some(a)) => s.len() + 3 + a.as_str().len(),
        (None, Some(a)) => a.as_str().len(),
        _ => 0,
    };
    method.len() + 1 + prefix + path + 1 + "HTTP/1.1".len()
}

/// So that `ssl_client_verify` cannot pass for `SSL-Client-Verify` at a
/// CGI or WSGI backend, which maps both to `HTTP_SSL_CLIENT_VERIFY`.
fn drop_underscored(headers: &mut HeaderMap) {
    let names: Vec<HeaderName> = headers
        .keys()
        .filter(|n| n.as_str().contains('_'))
        .cloned()
        .collect();
    for name in names {
        headers.remove(&name);
    }
}

/// An h2c upgrade forwarded to an HTTP/1.1 backend that accepts it would
/// turn the connection into an HTTP/2 one the proxy no longer sees (h2c
/// smuggling): the request is served as plain HTTP/1.1 instead.
fn drop_h2c_upgrade(headers: &mut HeaderMap) {
    let h2c = headers
        .get_all(header::UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"h2c"));
    if h2c {
        headers.remove(header::UPGRADE);
        headers.remove(&HTTP2_SETTINGS);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(version: Version, target: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut b = Request::get(target).version(version);
        for (n, v) in headers {
            b = b.header(*n, *v);
        }
        b.body(()).unwrap()
    }

    fn small() -> HeadRules {
        HeadRules {
            max_request_line: 30,
            max_header_line: 20,
            max_header_bytes: 80,
            max_headers: 3,
            underscores_in_headers: false,
        }
    }

    #[test]
    fn rejections_are_listed_in_their_order() {
        // Metrics index their counters by the discriminant.
        for (i, r) in Rejection::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r:?}");
        }
    }

    #[test]
    fn the_request_line_counts_as_sent() {
        // `GET /abc HTTP/1.1`
        assert_eq!(
            request_line_len("GET", &"/abc".parse().unwrap(), Version::HTTP_11),
            17
        );
        // `GET http://h.test/abc HTTP/1.1`
        assert_eq!(
            request_line_len(
                "GET",
                &"http://h.test/abc".parse().unwrap(),
                Version::HTTP_11
            ),
            30
        );
        assert_eq!(
            request_line_len(
                "GET",
                &"http://h.test/abc".parse().unwrap(),
                Version::HTTP_2
            ),
            8
        );
    }

    #[test]
    fn limits_hold_at_their_boundaries() {
        let h = [("host", "h")];
        // `GET ` + 17 + ` HTTP/1.1` = 30 bytes.
        let at = format!("/{}", "a".repeat(16));
        assert_eq!(check(&mut req(Version::HTTP_11, &at, &h), &small()), Ok(()));
        let over = format!("/{}", "a".repeat(17));
        assert!(matches!(
            check(&mut req(Version::HTTP_11, &over, &h), &small()),
            Err(HeadError::RequestLineTooLong { len: 31, limit: 30 })
        ));
        // `x-a: ` + 15 = 20 bytes.
        let v = "v".repeat(15);
        let line = [("host", "h"), ("x-a", v.as_str())];
        assert_eq!(
            check(&mut req(Version::HTTP_11, "/", &line), &small()),
            Ok(())
        );
        let v = "v".repeat(16);
        let line = [("host", "h"), ("x-a", v.as_str())];
        let e = check(&mut req(Version::HTTP_11, "/", &line), &small()).unwrap_err();
        assert_eq!(e.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
        assert_eq!(e.rejection(), Rejection::HeaderLine);
        // `GET / HTTP/1.1` (14 + 2), `host: h` (7 + 2), lines of 18 + 2,
        // the blank line: two fit (67), three do not (87 > 80).
        let (a, b) = ("1".repeat(13), "2".repeat(13));
        let many = [("host", "h"), ("x-a", a.as_str()), ("x-b", b.as_str())];
        assert_eq!(
            check(&mut req(Version::HTTP_11, "/", &many), &small()),
            Ok(())
        );
        let c = "3".repeat(13);
        let four = [
            ("host", "h"),
            ("x-a", a.as_str()),
            ("x-b", b.as_str()),
            ("x-c", c.as_str()),
        ];
        let rules = HeadRules {
            max_headers: 10,
            ..small()
        };
        assert_eq!(
            check(&mut req(Version::HTTP_11, "/", &four), &rules),
            Err(HeadError::HeadTooLarge { len: 87, limit: 80 })
        );
        assert_eq!(
            check(&mut req(Version::HTTP_11, "/", &four), &small()),
            Err(HeadError::TooManyHeaders { count: 4, limit: 3 })
        );
    }

    #[test]
    fn host_rules() {
        let d = HeadRules::default();
        assert_eq!(
            check(&mut req(Version::HTTP_11, "/", &[]), &d),
            Err(HeadError::MissingHost)
        );
        assert_eq!(
            check(
                &mut req(Version::HTTP_11, "/", &[("host", "a"), ("host", "a")]),
                &d
            ),
            Err(HeadError::DuplicateHost)
        );
        assert_eq!(check(&mut req(Version::HTTP_10, "/", &[]), &d), Ok(()));
        assert_eq!(
            check(&mut req(Version::HTTP_2, "http://a.test/", &[]), &d),
            Ok(())
        );
        assert_eq!(
            check(&mut req(Version::HTTP_2, "/", &[]), &d),
            Err(HeadError::MissingHost)
        );
        assert_eq!(
            check(&mut req(Version::HTTP_2, "/", &[("host", "a")]), &d),
            Ok(())
        );
    }

    #[test]
    fn only_a_single_chunked_transfer_encoding_passes() {
        let d = HeadRules::default();
        for (te, ok) in [
            ("chunked", true),
            ("Chunked ", true),
            ("gzip, chunked", false),
            ("identity", false),
            ("chunked, chunked", false),
        ] {
            let mut r = req(
                Version::HTTP_11,
                "/",
                &[("host", "h"), ("transfer-encoding", te)],
            );
            let got = check(&mut r, &d);
            assert_eq!(got.is_ok(), ok, "{te:?}: {got:?}");
            if let Err(e) = got {
                assert!(e.closes_connection());
                assert_eq!(e.status(), StatusCode::BAD_REQUEST);
            }
        }
        let mut two = req(
            Version::HTTP_11,
            "/",
            &[
                ("host", "h"),
                ("transfer-encoding", "gzip"),
                ("transfer-encoding", "chunked"),
            ],
        );
        assert_eq!(check(&mut two, &d), Err(HeadError::TransferEncoding));
    }

    #[test]
    fn underscored_names_are_dropped_unless_allowed() {
        let h = [
            ("host", "h"),
            ("ssl_client_verify", "SUCCESS"),
            ("x-keep", "1"),
            ("a_b", "1"),
        ];
        let mut r = req(Version::HTTP_11, "/", &h);
        check(&mut r, &HeadRules::default()).unwrap();
        let left: Vec<&str> = r.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["host", "x-keep"]);
        let allow = HeadRules {
            underscores_in_headers: true,
            ..HeadRules::default()
        };
        let mut r = req(Version::HTTP_11, "/", &h);
        check(&mut r, &allow).unwrap();
        assert_eq!(r.headers().len(), 4);
    }

    #[test]
    fn h2c_upgrades_are_dropped_and_websocket_kept() {
        let d = HeadRules::default();
        let mut r = req(
            Version::HTTP_11,
            "/",
            &[
                ("host", "h"),
                ("connection", "Upgrade, HTTP2-Settings"),
                ("upgrade", "H2C"),
                ("http2-settings", "AAMAAABkAAQAAP__"),
            ],
        );
        check(&mut r, &d).unwrap();
        assert!(!r.headers().contains_key("upgrade"));
        assert!(!r.headers().contains_key("http2-settings"));
        let mut r = req(
            Version::HTTP_11,
            "/",
            &[
                ("host", "h"),
                ("connection", "Upgrade"),
                ("upgrade", "websocket"),
            ],
        );
        check(&mut r, &d).unwrap();
        assert_eq!(r.headers()["upgrade"], "websocket");
    }
}
