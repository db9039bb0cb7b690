//! CORS at request time: a rule's [`Cors`] compiled once per table build
//! into a [`CorsPolicy`], which answers preflights and decorates answers.
//!
//! One implementation for every place CORS comes from (ingress-nginx's
//! `enable-cors` annotations, HTTPRoute's `CORS` filter, the gRPC-Web
//! bridge); what differs between them is data in [`Cors`].
//!
//! - A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`)
//!   from an allowed origin is answered 204 by the proxy, never forwarded.
//!   From another origin it is refused (403) or forwarded, as
//!   [`DisallowedPreflight`] says, without CORS headers either way.
//! - Every other answer to an allowed origin gets `Access-Control-Allow-Origin`
//!   (and credentials and exposed headers); an answer to any other origin, or
//!   to a request without one, gets none.
//! - Every answer of the rule carries `Vary: Origin`: whether CORS headers are
//!   there depends on the request's `Origin`, so a cache must not hand one
//!   origin's answer to another.
//!
//! The request's `Origin` is matched without allocating: it is parsed in
//! place as `scheme://host[:port]` and compared case-insensitively with each
//! pattern. Only a serialized http(s) origin can be echoed; `Origin: null`
//! and other schemes are answered only by a credential-less `*`, which
//! names no one.

use http::header::{self, HeaderMap, HeaderValue};
use http::{Response, StatusCode};

use crate::body::ResponseBody;
use crate::model::{Cors, DisallowedPreflight, OriginHost, OriginPattern, Scheme};

/// A rule's [`Cors`], with its header values made once per table.
#[derive(Debug)]
pub struct CorsPolicy {
    /// `*` among the origins.
    any_origin: bool,
    /// The other origins.
    origins: Box<[OriginPattern]>,
    credentials: bool,
    allow_methods: Listed,
    allow_headers: Listed,
    expose_headers: Option<HeaderValue>,
    max_age: HeaderValue,
    disallowed_preflight: DisallowedPreflight,
}

/// What a preflight answer says in one of its lists.
#[derive(Debug)]
enum Listed {
    Omit,
    Value(HeaderValue),
    /// A wildcard with credentials: the preflight's own request header is
    /// echoed, as browsers read `*` literally then.
    Echo,
}

// === impl CorsPolicy ===

impl CorsPolicy {
    pub fn build(cors: &Cors) -> Self {
        let credentials = cors.allow_credentials;
        let expose: Vec<&str> = cors
            .expose_headers
            .iter()
            .map(|n| n.as_str())
            .filter(|n| !(credentials && *n == "*"))
            .collect();
        Self {
            any_origin: cors.allow_origins.contains(&OriginPattern::Any),
            origins: cors
                .allow_origins
                .iter()
                .filter(|o| **o != OriginPattern::Any)
                .cloned()
                .collect(),
            credentials,
            allow_methods: Listed::build(
                cors.allow_methods.iter().map(|m| m.as_str()),
                credentials,
            ),
            allow_headers: Listed::build(
                cors.allow_headers.iter().map(|n| n.as_str()),
                credentials,
            ),
            expose_headers: join(&expose),
            max_age: HeaderValue::from(cors.max_age),
            disallowed_preflight: cors.disallowed_preflight,
        }
    }

    /// The `Access-Control-Allow-Origin` answer for `origin`, if it may
    /// call: `*` for anyone without credentials, else the origin itself.
    fn allow_origin(&self, origin: &HeaderValue) -> Option<HeaderValue> {
        if self.any_origin && !self.credentials {
            return Some(HeaderValue::from_static("*"));
        }
        let o = RequestOrigin::parse(origin.as_bytes())?;
        (self.any_origin || self.origins.iter().any(|p| o.matches(p))).then(|| origin.clone())
    }

    /// Answers a preflight (the caller checked the method is `OPTIONS`):
    /// `None` when the request is not one, or when one from an origin that
    /// may not call is to be forwarded.
    pub fn preflight(&self, req: &HeaderMap) -> Option<Response<ResponseBody>> {
        let origin = req.get(header::ORIGIN)?;
        let method = req.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
        let mut rsp = Response::new(ResponseBody::empty());
        let Some(allowed) = self.allow_origin(origin) else {
            return match self.disallowed_preflight {
                DisallowedPreflight::Forward => None,
                DisallowedPreflight::Refuse => {
                    *rsp.status_mut() = StatusCode::FORBIDDEN;
                    vary_origin(rsp.headers_mut());
                    Some(rsp)
                }
            };
        };
        *rsp.status_mut() = StatusCode::NO_CONTENT;
        let h = rsp.headers_mut();
        vary_origin(h);
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if self.credentials {
            h.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        let requested_headers = req.get(header::ACCESS_CONTROL_REQUEST_HEADERS);
        for (name, listed, requested) in [
            (
                header::ACCESS_CONTROL_ALLOW_METHODS,
                &self.allow_methods,
                Some(method),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                &self.allow_headers,
                requested_headers,
            ),
        ] {
            let value = match listed {
                Listed::Omit => None,
                Listed::Value(v) => Some(v.clone()),
                Listed::Echo => requested.cloned(),
            };
            if let Some(v) = value {
                h.insert(name, v);
            }
        }
        if let Some(v) = &self.expose_headers {
            h.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
        h.insert(header::ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        Some(rsp)
    }

    /// CORS headers on any other answer (upstream's or the proxy's own);
    /// `origin` is the request's.
    pub fn decorate(&self, origin: Option<&HeaderValue>, rsp: &mut HeaderMap) {
        vary_origin(rsp);
        let Some(allowed) = origin.and_then(|o| self.allow_origin(o)) else {
            return;
        };
        rsp.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        if self.credentials {
            rsp.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        if let Some(v) = &self.expose_headers {
            rsp.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v.clone());
        }
    }
}

impl Listed {
    fn build<'a>(items: impl Iterator<Item = &'a str>, credentials: bool) -> Self {
        let items: Vec<&str> = items.collect();
        if credentials && items.contains(&"*") {
            return Listed::Echo;
        }
        join(&items).map_or(Listed::Omit, Listed::Value)
    }
}

/// `a, b, c`, or `None` for no items. Methods and header names are tokens,
/// so the value is always valid.
fn join(items: &[&str]) -> Option<HeaderValue> {
    if items.is_empty() {
        return None;
    }
    HeaderValue::from_str(&items.join(", ")).ok()
}

/// Adds `origin` to `Vary` unless it is listed there already (or `*` is).
fn vary_origin(h: &mut HeaderMap) {
    let listed = h.get_all(header::VARY).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',')
                .map(str::trim)
                .any(|t| t == "*" || t.eq_ignore_ascii_case("origin"))
        })
    });
    if !listed {
        h.append(header::VARY, HeaderValue::from_static("origin"));
    }
}

// === impl RequestOrigin ===

/// A request's `Origin`, borrowed: a serialized http(s) origin.
#[derive(Debug, PartialEq, Eq)]
struct RequestOrigin<'a> {
    scheme: Scheme,
    host: &'a str,
    /// As written, or the scheme's default.
    port: u16,
}

impl<'a> RequestOrigin<'a> {
    /// `scheme://host[:port]` with an http(s) scheme, a DNS name or IP
    /// address as host (no empty labels) and nothing after the port.
    fn parse(bytes: &'a [u8]) -> Option<Self> {
        let s = std::str::from_utf8(bytes).ok()?;
        let (scheme, rest) = s.split_once("://")?;
        let scheme = if scheme.eq_ignore_ascii_case("https") {
            Scheme::Https
        } else if scheme.eq_ignore_ascii_case("http") {
            Scheme::Http
        } else {
            return None;
        };
        let (host, port) = match rest.strip_prefix('[') {
            Some(v6) => {
                let end = v6.find(']')?;
                v6[..end].parse::<std::net::Ipv6Addr>().ok()?;
                (&rest[..end + 2], &rest[end + 2..])
            }
            None => {
                let end = rest.find(':').unwrap_or(rest.len());
                let host = &rest[..end];
                let labels_ok = host.split('.').all(|l| {
                    !l.is_empty() && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                });
                if !labels_ok {
                    return None;
                }
                (host, &rest[end..])
            }
        };
        let port = match port.strip_prefix(':') {
            None if port.is_empty() => scheme.default_port(),
            None => return None,
            Some(p) if !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) => {
                p.parse::<u16>().ok().filter(|p| *p != 0)?
            }
            Some(_) => return None,
        };
        Some(Self { scheme, host, port })
    }

    fn matches(&self, pattern: &OriginPattern) -> bool {
        let OriginPattern::Origin { scheme, host, port } = pattern else {
            return true;
        };
        if *scheme != self.scheme || *port != self.port {
            return false;
        }
        match host {
            OriginHost::Exact(h) => h.eq_ignore_ascii_case(self.host),
            OriginHost::Subdomain(suffix) => {
                labels_before(self.host, suffix).is_some_and(|l| !l.contains('.'))
            }
            OriginHost::SubdomainAnyDepth(suffix) => labels_before(self.host, suffix).is_some(),
            OriginHost::Any => true,
        }
    }
}

/// What comes before `.suffix` in `host`, if `host` ends with it and
/// something comes before.
fn labels_before<'h>(host: &'h str, suffix: &str) -> Option<&'h str> {
    let cut = host.len().checked_sub(suffix.len() + 1)?;
    let (labels, tail) = (host.get(..cut)?, host.get(cut..)?);
    let ends = tail.strip_prefix('.')?.eq_ignore_ascii_case(suffix);
    (ends && !labels.is_empty()).then_some(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin(s: &str) -> Option<RequestOrigin<'_>> {
        RequestOrigin::parse(s.as_bytes())
    }

    #[test]
    fn request_origins_parse_in_place() {
        assert_eq!(
            origin("HTTPS://App.Example.com"),
            Some(RequestOrigin {
                scheme: Scheme::Https,
                host: "App.Example.com",
                port: 443
            })
        );
        assert_eq!(origin("http://a.test:8080").map(|o| o.port), Some(8080));
        assert_eq!(origin("http://[::1]:3000").map(|o| o.host), Some("[::1]"));
        for bad in [
            "null",
            "a.test",
            "ftp://a.test",
            "https://a.test/",
            "https://a.test:0",
            "https://a.test:70000",
            "https://a.test:",
            "https://a..test",
            "https://.a.test",
            "https://a.test.",
            "https://a_b.test",
            "https://[::1",
            "https://[zz]",
            "https://u@a.test",
            "https://",
        ] {
            assert_eq!(origin(bad), None, "{bad}");
        }
    }

    #[test]
    fn labels_before_a_suffix() {
        assert_eq!(labels_before("a.example.com", "example.com"), Some("a"));
        assert_eq!(labels_before("a.b.Example.COM", "example.com"), Some("a.b"));
        assert_eq!(labels_before("example.com", "example.com"), None);
        assert_eq!(labels_before(".example.com", "example.com"), None);
        assert_eq!(labels_before("aexample.com", "example.com"), None);
        assert_eq!(labels_before("com", "example.com"), None);
    }

    fn grpc_web(origins: &[&str], credentials: bool) -> CorsPolicy {
        let mut cors = Cors::grpc_web();
        cors.allow_origins = origins
            .iter()
            .map(|o| OriginPattern::parse(o).unwrap())
            .collect();
        cors.allow_headers
            .push(http::HeaderName::from_static("x-tenant"));
        cors.expose_headers
            .push(http::HeaderName::from_static("x-trace"));
        cors.allow_credentials = credentials;
        cors.max_age = 600;
        CorsPolicy::build(&cors)
    }

    fn preflight_headers(origin: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, HeaderValue::from_str(origin).unwrap());
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        h
    }

    /// The gRPC-Web bridge's CORS, as it was before it became data.
    #[test]
    fn grpc_web_preflights_allow_listed_origins_only() {
        let web = grpc_web(&["https://app.example.com"], false);
        let ok = web
            .preflight(&preflight_headers("https://app.example.com"))
            .unwrap();
        assert_eq!(ok.status(), StatusCode::NO_CONTENT);
        let h = ok.headers();
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://app.example.com"
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_METHODS], "POST, OPTIONS");
        assert_eq!(
            h[header::ACCESS_CONTROL_ALLOW_HEADERS],
            "x-grpc-web, x-user-agent, grpc-timeout, content-type, authorization, x-tenant"
        );
        assert_eq!(h[header::ACCESS_CONTROL_MAX_AGE], "600");
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_CREDENTIALS));
        let refused = web
            .preflight(&preflight_headers("https://evil.example"))
            .unwrap();
        assert_eq!(refused.status(), StatusCode::FORBIDDEN);
        assert!(
            !refused
                .headers()
                .contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN)
        );
        // Not a preflight: no Access-Control-Request-Method.
        let mut plain = HeaderMap::new();
        plain.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example.com"),
        );
        assert!(web.preflight(&plain).is_none());
    }

    #[test]
    fn grpc_web_wildcard_origin_and_credentials() {
        let any = grpc_web(&["*"], false);
        let rsp = any.preflight(&preflight_headers("https://x.test")).unwrap();
        assert_eq!(rsp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN], "*");
        let creds = grpc_web(&["*"], true);
        let rsp = creds
            .preflight(&preflight_headers("https://x.test"))
            .unwrap();
        assert_eq!(
            rsp.headers()[header::ACCESS_CONTROL_ALLOW_ORIGIN],
            "https://x.test"
        );
        assert_eq!(
            rsp.headers()[header::ACCESS_CONTROL_ALLOW_CREDENTIALS],
            "true"
        );
        let mut out = HeaderMap::new();
        creds.decorate(Some(&HeaderValue::from_static("https://x.test")), &mut out);
        assert_eq!(
            out[header::ACCESS_CONTROL_EXPOSE_HEADERS],
            "grpc-status, grpc-message, grpc-status-details-bin, x-trace"
        );
        let none = grpc_web(&[], false);
        let mut out = HeaderMap::new();
        none.decorate(Some(&HeaderValue::from_static("https://x.test")), &mut out);
        assert!(!out.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
        assert_eq!(out[header::VARY], "origin");
    }

    #[test]
    fn vary_names_origin_once() {
        let mut h = HeaderMap::new();
        h.append(header::VARY, HeaderValue::from_static("accept-encoding"));
        vary_origin(&mut h);
        vary_origin(&mut h);
        let all: Vec<_> = h.get_all(header::VARY).iter().collect();
        assert_eq!(all, ["accept-encoding", "origin"]);
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static("Accept, Origin"));
        vary_origin(&mut h);
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
    }

    #[test]
    fn origin_patterns_parse_and_print_back() {
        for (text, shown) in [
            ("*", "*"),
            ("https://App.Example.com", "https://app.example.com"),
            ("HTTP://a.test:80", "http://a.test"),
            ("https://a.test:8443", "https://a.test:8443"),
            ("https://*.example.com", "https://*.example.com"),
            ("https://**.example.com:444", "https://**.example.com:444"),
            ("http://*", "http://*"),
            ("http://[::1]:3000", "http://[::1]:3000"),
            ("http://127.0.0.1:3000", "http://127.0.0.1:3000"),
        ] {
            let p = OriginPattern::parse(text).unwrap();
            assert_eq!(p.to_string(), shown, "{text}");
            assert_eq!(OriginPattern::parse(shown), Ok(p), "{shown}");
        }
        for (bad, why) in [
            ("example.com", "scheme"),
            ("//example.com", "scheme"),
            ("ftp://example.com", "http or https"),
            ("chrome-extension://abc", "http or https"),
            ("https://example.com/", "path"),
            ("https://example.com/app", "path"),
            ("https://example.com?x", "path"),
            ("https://u:p@example.com", "user"),
            ("https://example.com:0", "port"),
            ("https://example.com:65536", "port"),
            ("https://example.com:+1", "port"),
            ("https://example.com:", "port"),
            ("https://a.*.example.com", "wildcard"),
            ("https://*example.com", "wildcard"),
            ("https://*.", "wildcard"),
            ("https://exa mple.com", "host"),
            ("https://", "host"),
            ("https://[zz]", "IPv6"),
        ] {
            let e = OriginPattern::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
