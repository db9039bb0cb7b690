//! The small pieces of HTTP every stage shares: the forwarding header names,
//! hop-by-hop header removal, `host[:port]` splitting, cookies, `Content-Length`, redirect targets and
//! percent-escape digits.
//! Kept apart so the stages depend on it, not on each other.

use std::fmt::Write as _;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::model::Scheme;

pub(crate) static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
pub(crate) static X_FORWARDED_PORT: HeaderName = HeaderName::from_static("x-forwarded-port");
pub(crate) static X_REAL_IP: HeaderName = HeaderName::from_static("x-real-ip");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Splits `host[:port]`, including bracketed IPv6 literals.
pub(crate) fn split_host_port(host: &str) -> (&str, Option<u16>) {
    if host.starts_with('[') {
        if let Some(end) = host.find(']') {
            let port = host[end + 1..]
                .strip_prefix(':')
                .and_then(|p| p.parse().ok());
            return (&host[..=end], port);
        }
        return (host, None);
    }
    match host.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, p.parse().ok()),
        _ => (host, None),
    }
}

/// The value of the first cookie called `name` in the `Cookie` headers.
pub(crate) fn cookie_value<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let pair = pair.trim_ascii();
            let eq = pair.iter().position(|&b| b == b'=')?;
            (pair[..eq].trim_ascii() == name.as_bytes()).then(|| pair[eq + 1..].trim_ascii())
        })
}

/// The declared body length, when there is one and it parses.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// `scheme://host[:port]path_and_query`.
pub(crate) fn location(
    scheme: Scheme,
    host: &str,
    port: Option<u16>,
    path_and_query: &str,
) -> String {
    let mut location = format!("{}://{}", scheme.as_str(), host);
    if let Some(p) = port {
        let _ = write!(location, ":{p}");
    }
    location.push_str(path_and_query);
    location
}

/// The value of one hex digit.
pub(crate) fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Removes hop-by-hop headers (RFC 9110 §7.6.1), including those named in
/// `Connection`. `te: trailers` survives: gRPC needs it end to end. With
/// `keep_upgrade`, `Connection: upgrade` and `Upgrade` are kept.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Most messages carry none of these: one pass over the names spares a
    // hash lookup per name below. `te: trailers`, which every gRPC request
    // carries, is not one.
    if !keep_upgrade
        && !headers
            .iter()
            .any(|(name, value)| is_hop_by_hop(name) && !is_te_trailers(name, value))
    {
        return;
    }
    if headers.contains_key(header::CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
            .collect();
        for name in named {
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            if name == header::TE {
                continue;
            }
            headers.remove(&name);
        }
        headers.remove(header::CONNECTION);
    }
    for name in [
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
    ] {
        headers.remove(name);
    }
    if let Some(te) = headers.get(header::TE)
        && !is_te_trailers(&header::TE, te)
    {
        headers.remove(header::TE);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// `te: trailers`, the one `TE` that goes on.
fn is_te_trailers(name: &HeaderName, value: &HeaderValue) -> bool {
    name == header::TE && value.as_bytes().eq_ignore_ascii_case(b"trailers")
}

/// The names [`strip_hop_by_hop`] may remove.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    // `Connection` may name any header, but only when it is present.
    [
        &header::CONNECTION,
        &header::UPGRADE,
        &header::TE,
        &header::PROXY_AUTHENTICATE,
        &header::PROXY_AUTHORIZATION,
        &header::TRAILER,
        &header::TRANSFER_ENCODING,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
    ]
    .contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("te", HeaderValue::from_static("trailers"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h, false);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["te", "x-keep"]);

        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("gzip"));
        strip_hop_by_hop(&mut h, false);
        assert!(h.is_empty());

        // Each one alone, next to headers that stay, is found by the scan.
        for name in [
            "keep-alive",
            "proxy-connection",
            "proxy-authenticate",
            "proxy-authorization",
            "trailer",
            "transfer-encoding",
            "upgrade",
            "connection",
        ] {
            // The names left after stripping a message of `headers`.
            let left = |headers: [(&'static str, &'static str); 3]| {
                let mut h = HeaderMap::new();
                for (n, v) in headers {
                    h.insert(n, HeaderValue::from_static(v));
                }
                strip_hop_by_hop(&mut h, false);
                h.keys().map(|k| k.to_string()).collect::<Vec<_>>()
            };
            let plain = left([("x-keep", "1"), (name, "x"), ("accept", "*/*")]);
            assert_eq!(plain, ["x-keep", "accept"], "{name}");
            // Beside a gRPC request's `te: trailers`, which stays.
            let grpc = left([("te", "trailers"), (name, "x"), ("x-keep", "1")]);
            assert_eq!(grpc, ["te", "x-keep"], "{name} beside te: trailers");
        }

        // `te: trailers` alone is left as it is, in any case.
        let mut h = HeaderMap::new();
        h.insert("te", HeaderValue::from_static("Trailers"));
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 2);
        assert_eq!(h["te"], "Trailers");
    }

    #[test]
    fn split_host_port_cases() {
        assert_eq!(split_host_port("a.com"), ("a.com", None));
        assert_eq!(split_host_port("a.com:8080"), ("a.com", Some(8080)));
        assert_eq!(split_host_port("[::1]:80"), ("[::1]", Some(80)));
        assert_eq!(split_host_port("[::1]"), ("[::1]", None));
        assert_eq!(split_host_port("::1"), ("::1", None));
    }
}
