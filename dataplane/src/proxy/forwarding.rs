//! The headers that tell the upstream about the request's way in: the
//! forwarding headers (`X-Forwarded-*`, `X-Real-IP`, `Forwarded`), the
//! request id and the client certificate's facts (`ssl-client-*`).

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::headers::{
    ForwardingFields, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PORT, X_FORWARDED_PROTO,
    X_REAL_IP, X_REQUEST_ID, upstream_request_id,
};
use crate::model::RouteClientAuth;
use crate::request::ctx::{RequestCtx, ip_header};

static SSL_CLIENT_VERIFY: HeaderName = HeaderName::from_static("ssl-client-verify");
static SSL_CLIENT_SUBJECT_DN: HeaderName = HeaderName::from_static("ssl-client-subject-dn");
static SSL_CLIENT_ISSUER_DN: HeaderName = HeaderName::from_static("ssl-client-issuer-dn");
static SSL_CLIENT_CERT: HeaderName = HeaderName::from_static("ssl-client-cert");

/// Client-certificate facts for the upstream; any the client sent are
/// dropped first, on every request, so they can never be forged.
pub(super) fn set_client_cert_headers(
    headers: &mut HeaderMap,
    ctx: &RequestCtx,
    auth: Option<&RouteClientAuth>,
) {
    // One pass over the names rather than four hash lookups: a client
    // rarely sends any of them.
    if headers
        .keys()
        .any(|n| n.as_str().starts_with("ssl-client-"))
    {
        for name in [
            &SSL_CLIENT_VERIFY,
            &SSL_CLIENT_SUBJECT_DN,
            &SSL_CLIENT_ISSUER_DN,
            &SSL_CLIENT_CERT,
        ] {
            headers.remove(name);
        }
    }
    let (Some(auth), Some(cert)) = (auth, ctx.conn.client_cert.as_ref()) else {
        return;
    };
    headers.insert(SSL_CLIENT_VERIFY.clone(), cert.verify.clone());
    for (name, value) in [
        (&SSL_CLIENT_SUBJECT_DN, &cert.subject),
        (&SSL_CLIENT_ISSUER_DN, &cert.issuer),
    ] {
        if let Some(v) = value {
            headers.insert(name.clone(), v.clone());
        }
    }
    if auth.pass_certificate
        && let Some(pem) = &cert.pem
    {
        headers.insert(SSL_CLIENT_CERT.clone(), pem.clone());
    }
}

/// Keeps a client-supplied id when it is a sane token, otherwise makes one
/// (32 hex digits, as ingress-nginx's `$req_id`).
pub(super) fn request_id(headers: &HeaderMap) -> HeaderValue {
    if let Some(v) = headers.get(&X_REQUEST_ID) {
        let b = v.as_bytes();
        if !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic()) {
            return v.clone();
        }
    }
    // 32 lowercase hex digits, without the formatting machinery.
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = [0u8; 32];
    let n = fastrand::u128(..);
    for (i, digit) in id.iter_mut().enumerate() {
        *digit = HEX[((n >> (124 - 4 * i)) & 0xf) as usize];
    }
    // The array itself is the value's owner: one allocation, shared by the
    // copies that go upstream, into the answer and into the log. (A value
    // made from a slice is a vector, whose first clone allocates again.)
    // 32 hex digits are always a valid header value.
    HeaderValue::from_maybe_shared(bytes::Bytes::from_owner(id))
        .unwrap_or_else(|_| HeaderValue::from_static("0"))
}

/// How many headers `proxy::forward` adds to every request: the five forwarding
/// headers and the request id.
pub(super) const ADDED_REQUEST_HEADERS: usize = 6;

/// The forwarding headers and request id for an untrusted peer: every one
/// what this proxy saw.
pub(super) fn own_fields<'a>(ctx: &'a RequestCtx, host: &'a HeaderValue) -> ForwardingFields<'a> {
    ForwardingFields {
        client_ip: &ctx.conn.client_ip,
        scheme: ctx.conn.scheme,
        host,
        port: &ctx.conn.local_port,
        request_id: &ctx.id,
    }
}

/// The forwarding headers upstreams read, and the request id. For an
/// untrusted peer every one is what this proxy saw ([`own_fields`]): the
/// client's own claims are replaced, and a `Forwarded` header it sent is
/// dropped (only proxies set that one, and upstream frameworks believe
/// it). A trusted proxy's `X-Forwarded-For` is appended to, and its
/// `X-Forwarded-Proto`, `-Host`, `-Port` and `Forwarded` are kept (ours
/// fill in those it left out).
pub(super) fn add_forwarded_headers(headers: &mut HeaderMap, ctx: &RequestCtx, host: &HeaderValue) {
    let conn = &ctx.conn;
    if !conn.trusted {
        own_fields(ctx, host).insert_into(headers);
        headers.remove(header::FORWARDED);
        return;
    }
    headers.insert(X_REQUEST_ID.clone(), upstream_request_id(&ctx.id));
    let scheme = HeaderValue::from_static(conn.scheme.as_str());
    let xff = appended_forwarded_for(headers, &conn.client_ip);
    headers.insert(X_FORWARDED_FOR.clone(), xff);
    let client = ctx.client_addr();
    let real_ip = if client.ip == conn.client.ip {
        conn.client_ip.clone()
    } else {
        ip_header(client)
    };
    headers.insert(X_REAL_IP.clone(), real_ip);
    headers.entry(&X_FORWARDED_PROTO).or_insert(scheme);
    headers
        .entry(&X_FORWARDED_HOST)
        .or_insert_with(|| host.clone());
    headers
        .entry(&X_FORWARDED_PORT)
        .or_insert_with(|| conn.local_port.clone());
}

/// `X-Forwarded-For` as received (several headers joined, in order) with
/// `peer` appended.
fn appended_forwarded_for(headers: &HeaderMap, peer: &HeaderValue) -> HeaderValue {
    let mut prior = headers.get_all(&X_FORWARDED_FOR).iter().peekable();
    if prior.peek().is_none() {
        return peer.clone();
    }
    let mut joined = Vec::new();
    for v in prior {
        joined.extend_from_slice(v.as_bytes());
        joined.extend_from_slice(b", ");
    }
    joined.extend_from_slice(peer.as_bytes());
    // Valid values joined by ", " are a valid value.
    HeaderValue::from_bytes(&joined).unwrap_or_else(|_| peer.clone())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::SystemTime;

    use tokio::time::Instant;

    use super::*;
    use crate::model::Scheme;
    use crate::request::ctx::{Call, ConnInfo};

    #[test]
    fn forged_client_certificate_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert("ssl-client-verify", HeaderValue::from_static("SUCCESS"));
        h.insert("ssl-client-cert", HeaderValue::from_static("forged"));
        h.insert("x-keep", HeaderValue::from_static("1"));
        let ctx = RequestCtx {
            start: Instant::now(),
            time: SystemTime::now(),
            id: HeaderValue::from_static("id"),
            client: "10.0.0.1:4000".parse::<SocketAddr>().unwrap().into(),
            conn: Arc::new(ConnInfo::new(
                "10.0.0.1:4000".parse().unwrap(),
                "0.0.0.0:80".parse().unwrap(),
                Scheme::Http,
                false,
            )),
            bytes_in: None,
            call: Call::Http,
            trace: None,
        };
        set_client_cert_headers(&mut h, &ctx, None);
        let left: Vec<&str> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-keep"]);
        assert_eq!(ctx.conn.client_ip, "10.0.0.1");
        assert_eq!(ctx.conn.local_port, "80");
    }

    #[test]
    fn the_upstream_copy_of_the_request_id_is_never_indexed() {
        let id = request_id(&HeaderMap::new());
        let upstream = upstream_request_id(&id);
        assert!(upstream.is_sensitive());
        assert_eq!(upstream.as_bytes(), id.as_bytes());
        // The id the proxy keeps (for its answers and the log) is unmarked.
        assert!(!id.is_sensitive());
    }

    #[test]
    fn request_id_kept_or_generated() {
        let mut h = HeaderMap::new();
        let generated = request_id(&h);
        assert_eq!(generated.len(), 32);
        assert!(
            generated
                .as_bytes()
                .iter()
                .all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')),
            "{generated:?}"
        );
        assert_ne!(generated, request_id(&h));
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static(""));
        assert_eq!(request_id(&h).len(), 32);
    }
}
