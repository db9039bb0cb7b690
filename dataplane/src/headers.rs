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

/// The forwarding headers and the request id of a request from an
/// untrusted peer, when nothing between their making and the wire reads or
/// edits them: carried beside the request instead of inserted into its
/// header map (about 240 instructions an insert, six a request). Portico's
/// own HTTP/1.1 client writes them into the head as it encodes it
/// ([`Self::write_h1`]); every other way out puts them into the map first
/// ([`Self::insert_into`]). The request's map holds none of these names
/// ([`names_forwarding`] said so), so they are never sent twice.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ForwardingFields<'a> {
    /// `X-Forwarded-For` and `X-Real-IP`: the peer's address.
    pub client_ip: &'a HeaderValue,
    /// `X-Forwarded-Proto`.
    pub scheme: Scheme,
    /// `X-Forwarded-Host`: the request's host.
    pub host: &'a HeaderValue,
    /// `X-Forwarded-Port`: the port the request came in on.
    pub port: &'a HeaderValue,
    /// `X-Request-ID`.
    pub request_id: &'a HeaderValue,
}

impl ForwardingFields<'_> {
    /// Appends the fields to a request head being encoded, in the order
    /// [`Self::insert_into`] adds them.
    pub(crate) fn write_h1(&self, dst: &mut Vec<u8>) {
        let fields: [(&[u8], &[u8]); 6] = [
            (b"x-forwarded-for: ", self.client_ip.as_bytes()),
            (b"x-real-ip: ", self.client_ip.as_bytes()),
            (b"x-forwarded-proto: ", self.scheme.as_str().as_bytes()),
            (b"x-forwarded-host: ", self.host.as_bytes()),
            (b"x-forwarded-port: ", self.port.as_bytes()),
            (b"x-request-id: ", self.request_id.as_bytes()),
        ];
        let len: usize = fields.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
        dst.reserve(len);
        for (name, value) in fields {
            dst.extend_from_slice(name);
            dst.extend_from_slice(value);
            dst.extend_from_slice(b"\r\n");
        }
    }

    /// Puts the fields into `headers`, replacing any there (the request id
    /// as [`upstream_request_id`] marks it).
    pub(crate) fn insert_into(&self, headers: &mut HeaderMap) {
        headers.reserve(6);
        headers.insert(X_FORWARDED_FOR.clone(), self.client_ip.clone());
        headers.insert(X_REAL_IP.clone(), self.client_ip.clone());
        headers.insert(
            X_FORWARDED_PROTO.clone(),
            HeaderValue::from_static(self.scheme.as_str()),
        );
        headers.insert(X_FORWARDED_HOST.clone(), self.host.clone());
        headers.insert(X_FORWARDED_PORT.clone(), self.port.clone());
        headers.insert(X_REQUEST_ID.clone(), upstream_request_id(self.request_id));
    }
}

/// The request id as sent upstream: marked never to be indexed. HPACK
/// (HTTP/2) would otherwise add every request's new id to the connection's
/// header table, each evicting entries that later requests repeat (the
/// forwarding headers), which then go out in full again. HTTP/1.1 ignores
/// the mark.
pub(crate) fn upstream_request_id(id: &HeaderValue) -> HeaderValue {
    let mut id = id.clone();
    id.set_sensitive(true);
    id
}

/// Whether `headers` holds a field [`ForwardingFields`] would set, or a
/// `Forwarded` (which the proxy drops for an untrusted peer): one pass over
/// the names, which a request rarely has.
pub(crate) fn names_forwarding(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        let s = name.as_str().as_bytes();
        name == header::FORWARDED
            || (s.len() >= X_REAL_IP.as_str().len()
                && s[0] == b'x'
                && [
                    &X_FORWARDED_FOR,
                    &X_REAL_IP,
                    &X_FORWARDED_PROTO,
                    &X_FORWARDED_HOST,
                    &X_FORWARDED_PORT,
                    &X_REQUEST_ID,
                ]
                .contains(&name))
    })
}

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
    fn forwarding_names_are_found_among_others() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-fo", HeaderValue::from_static("1"));
        h.insert("x-real-ipx", HeaderValue::from_static("1"));
        h.insert(header::HOST, HeaderValue::from_static("a"));
        assert!(!names_forwarding(&h));
        for name in [
            "x-forwarded-for",
            "x-real-ip",
            "x-forwarded-proto",
            "x-forwarded-host",
            "x-forwarded-port",
            "x-request-id",
            "forwarded",
        ] {
            let mut h = h.clone();
            h.insert(HeaderName::from_static(name), HeaderValue::from_static("1"));
            assert!(names_forwarding(&h), "{name}");
        }
    }

    #[test]
    fn forwarding_fields_are_written_as_they_are_inserted() {
        let ip = HeaderValue::from_static("127.0.0.1");
        let host = HeaderValue::from_static("h.test");
        let port = HeaderValue::from_static("8080");
        let id = HeaderValue::from_static("abc");
        let fields = ForwardingFields {
            client_ip: &ip,
            scheme: Scheme::Https,
            host: &host,
            port: &port,
            request_id: &id,
        };
        let mut head = Vec::new();
        fields.write_h1(&mut head);
        let mut map = HeaderMap::new();
        fields.insert_into(&mut map);
        let mut from_map = Vec::new();
        for (name, value) in &map {
            from_map.extend_from_slice(name.as_str().as_bytes());
            from_map.extend_from_slice(b": ");
            from_map.extend_from_slice(value.as_bytes());
            from_map.extend_from_slice(b"\r\n");
        }
        assert_eq!(
            String::from_utf8(head).unwrap(),
            String::from_utf8(from_map).unwrap()
        );
        assert!(map[&X_REQUEST_ID].is_sensitive());
        assert!(!map[&X_FORWARDED_FOR].is_sensitive());
    }

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
