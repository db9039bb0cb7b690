//! The route filter chain at request time: a rule's [`Filter`]s compiled
//! once per table build into [`Chain`], run by [`crate::proxy`] around the
//! rule's action.
//!
//! The request side runs in order; a filter lets the request continue or
//! answers it (an [`Answer`], rendered in the caller's protocol by the
//! proxy). The response side runs in reverse on every answer, the filters'
//! own included. A rule without filters holds an empty slice: nothing is
//! allocated and no loop body runs.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, StatusCode};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::forwarded::{IpNet, IpSet};
use crate::grpc_web::WebRuntime;
use crate::model::{Filter, GrpcWeb, HeaderModifier, HttpsRedirect, RouteClientAuth, Rule, Scheme};
use crate::proxy::{self, Call, ConnInfo, RequestCtx};

/// A rule's filters, compiled, in running order.
#[derive(Default)]
pub struct Chain {
    filters: Box<[Compiled]>,
    /// Some filter's response side reads the request's `Origin`, which is
    /// taken before the request is consumed.
    reads_origin: bool,
}

/// A [`Filter`] with its values prepared: header values formatted, CORS
/// lists joined.
enum Compiled {
    HttpsRedirect(HttpsRedirect),
    Hsts(HeaderValue),
    RequestHeaders(Arc<HeaderModifier>),
    ResponseHeaders(Arc<HeaderModifier>),
    GrpcWebCors(WebRuntime),
    ClientCert(RouteClientAuth),
    /// `bridged`: the rule turns gRPC-Web calls into gRPC ones, which are
    /// limited per message instead.
    BodyLimit {
        limit: u64,
        bridged: bool,
    },
    IpAccess {
        allow: Option<Arc<IpSet>>,
        deny: Arc<IpSet>,
    },
}

/// Policy data compiled once per table build and shared by every rule that
/// holds the same value: an Ingress with one 10,000-range allow list and 50
/// paths compiles (and keeps) one set, not 50.
#[derive(Default)]
pub struct Interned {
    ip_sets: HashMap<Box<[IpNet]>, Arc<IpSet>>,
    header_modifiers: HashMap<HeaderModifier, Arc<HeaderModifier>>,
}

/// A filter's answer in place of the rule's action.
pub(crate) enum Answer {
    /// A redirect to `location` (checked as a header value when rendered).
    Redirect {
        status: StatusCode,
        location: String,
    },
    /// A CORS preflight answer, complete (boxed: rare, and large).
    Preflight(Box<http::Response<ResponseBody>>),
    /// The proxy's own error answer with this status.
    Status(StatusCode),
}

/// What the request side leaves for the response side; on the stack.
#[derive(Default)]
pub(crate) struct Passed {
    origin: Option<HeaderValue>,
    /// The index of the filter that answered, if one did.
    answered_by: Option<usize>,
}

// === impl Chain ===

impl Chain {
    /// Compiles `filters` (in running order, see
    /// [`crate::model::Route::rule_filters`]) for `rule`.
    pub fn build(filters: &[Filter], rule: &Rule) -> Self {
        Self::build_with(filters, rule, &mut Interned::default())
    }

    /// [`build`](Self::build), sharing the data of equal policies with the
    /// other rules of the same table build through `interned`.
    pub fn build_with(filters: &[Filter], rule: &Rule, interned: &mut Interned) -> Self {
        let filters: Box<[Compiled]> = filters
            .iter()
            .map(|f| match f {
                Filter::HttpsRedirect(r) => Compiled::HttpsRedirect(*r),
                // Digits and fixed words: always a valid header value.
                Filter::Hsts(h) => match HeaderValue::try_from(h.header_value()) {
                    Ok(v) => Compiled::Hsts(v),
                    Err(_) => Compiled::Hsts(HeaderValue::from_static("max-age=0")),
                },
                Filter::RequestHeaders(m) => Compiled::RequestHeaders(interned.header_modifier(m)),
                Filter::ResponseHeaders(m) => {
                    Compiled::ResponseHeaders(interned.header_modifier(m))
                }
                Filter::GrpcWebCors(cors) => {
                    Compiled::GrpcWebCors(WebRuntime::build(&GrpcWeb { cors: cors.clone() }))
                }
                Filter::ClientCert(a) => Compiled::ClientCert(a.clone()),
                Filter::BodyLimit(limit) => Compiled::BodyLimit {
                    limit: *limit,
                    bridged: rule.grpc.web.is_some(),
                },
                Filter::IpAccess(a) => Compiled::IpAccess {
                    allow: (!a.allow.is_empty()).then(|| interned.ip_set(&a.allow)),
                    deny: interned.ip_set(&a.deny),
                },
            })
            .collect();
        let reads_origin = filters
            .iter()
            .any(|f| matches!(f, Compiled::GrpcWebCors(_)));
        Self {
            filters,
            reads_origin,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The compiled IP sets of the chain's access lists (allow, then deny).
    #[cfg(test)]
    pub(crate) fn ip_sets(&self) -> Vec<&Arc<IpSet>> {
        self.filters
            .iter()
            .flat_map(|f| match f {
                Compiled::IpAccess { allow, deny } => allow.iter().chain([deny]).collect(),
                _ => Vec::new(),
            })
            .collect()
    }

    /// The compiled header modifiers of the chain, in order.
    #[cfg(test)]
    pub(crate) fn header_modifiers(&self) -> Vec<&Arc<HeaderModifier>> {
        self.filters
            .iter()
            .filter_map(|f| match f {
                Compiled::RequestHeaders(m) | Compiled::ResponseHeaders(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The request side, in order: the first answer stops the chain.
    pub(crate) fn request(
        &self,
        req: &Request<Incoming>,
        host: &str,
        ctx: &RequestCtx,
    ) -> (Passed, Option<Answer>) {
        let mut passed = Passed {
            origin: if self.reads_origin {
                req.headers().get(header::ORIGIN).cloned()
            } else {
                None
            },
            answered_by: None,
        };
        for (i, f) in self.filters.iter().enumerate() {
            if let Some(answer) = f.request(req, host, ctx) {
                passed.answered_by = Some(i);
                return (passed, Some(answer));
            }
        }
        (passed, None)
    }

    /// Edits the request headers as they leave for the upstream.
    pub(crate) fn upstream_request(&self, headers: &mut HeaderMap) {
        for f in self.filters.iter() {
            if let Compiled::RequestHeaders(m) = f {
                apply_header_modifier(headers, m);
            }
        }
    }

    /// The response side, in reverse, on every answer.
    pub(crate) fn response(&self, passed: &Passed, conn: &ConnInfo, headers: &mut HeaderMap) {
        for (i, f) in self.filters.iter().enumerate().rev() {
            match f {
                Compiled::Hsts(v) if conn.scheme == Scheme::Https => {
                    headers.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
                }
                Compiled::ResponseHeaders(m) => apply_header_modifier(headers, m),
                // A preflight answer already carries its CORS headers.
                Compiled::GrpcWebCors(w) if passed.answered_by != Some(i) => {
                    w.decorate(passed.origin.as_ref(), headers);
                }
                _ => {}
            }
        }
    }
}

// === impl Interned ===

impl Interned {
    /// The set of `nets`, compiled by the first rule that holds this list.
    fn ip_set(&mut self, nets: &[IpNet]) -> Arc<IpSet> {
        intern(&mut self.ip_sets, nets, || IpSet::new(nets))
    }

    fn header_modifier(&mut self, m: &HeaderModifier) -> Arc<HeaderModifier> {
        intern(&mut self.header_modifiers, m, || m.clone())
    }
}

/// The value under `key` in `map`, made (and the key copied) on first use.
fn intern<Q, K, V>(map: &mut HashMap<K, Arc<V>>, key: &Q, make: impl FnOnce() -> V) -> Arc<V>
where
    Q: ?Sized + Hash + Eq + ToOwned,
    K: Borrow<Q> + Hash + Eq + From<Q::Owned>,
{
    if let Some(v) = map.get(key) {
        return Arc::clone(v);
    }
    let v = Arc::new(make());
    map.insert(K::from(key.to_owned()), Arc::clone(&v));
    v
}

// === impl Compiled ===

impl Compiled {
    /// This filter's request side: `Some` answers in place of the action.
    fn request(&self, req: &Request<Incoming>, host: &str, ctx: &RequestCtx) -> Option<Answer> {
        match self {
            Compiled::HttpsRedirect(r) => {
                needs_https_redirect(req, host, ctx).then(|| https_redirect(r, req, host))
            }
            Compiled::GrpcWebCors(w) if req.method() == Method::OPTIONS => w
                .preflight(req.headers())
                .map(|r| Answer::Preflight(Box::new(r))),
            Compiled::ClientCert(a) if !verified_under(&ctx.conn, a) => {
                // 421 over TLS (the connection's SNI host has another
                // policy, RFC 9110 §15.5.20), 403 over plain HTTP (no
                // certificate can come that way).
                Some(Answer::Status(match ctx.conn.scheme {
                    Scheme::Https => StatusCode::MISDIRECTED_REQUEST,
                    Scheme::Http => StatusCode::FORBIDDEN,
                }))
            }
            Compiled::IpAccess { allow, deny } => {
                let ip = ctx.client_addr().ip;
                let refused = (!deny.is_empty() && deny.contains(ip))
                    || allow.as_ref().is_some_and(|a| !a.contains(ip));
                refused.then_some(Answer::Status(StatusCode::FORBIDDEN))
            }
            Compiled::BodyLimit { limit, bridged } => {
                // A gRPC stream is unbounded: its messages are limited one
                // by one.
                let grpc = match ctx.call {
                    Call::Grpc => true,
                    Call::Web { .. } => *bridged,
                    Call::Http => false,
                };
                (!grpc && proxy::content_length(req.headers()).is_some_and(|len| len > *limit))
                    .then_some(Answer::Status(StatusCode::PAYLOAD_TOO_LARGE))
            }
            _ => None,
        }
    }
}

/// Whether the connection was verified under the route's client-certificate
/// policy: its SNI host has that policy. Otherwise a client could name a
/// host without a policy in SNI and one with it in `Host`.
fn verified_under(conn: &ConnInfo, auth: &RouteClientAuth) -> bool {
    conn.client_cert
        .as_ref()
        .is_some_and(|c| c.policy.id == auth.policy)
}

/// ACME HTTP-01 challenges must be answered over plain HTTP.
const ACME_CHALLENGE: &str = "/.well-known/acme-challenge/";

/// A route's HTTPS redirect applies to plain-HTTP requests with a host,
/// except ACME challenges and requests a TLS-terminating load balancer in
/// front already received over HTTPS (`X-Forwarded-Proto: https`, as
/// ingress-nginx's `force-ssl-redirect` behind an offloading load balancer
/// needs). That header counts only from a trusted proxy, as ingress-nginx
/// reads it only with `use-forwarded-headers`: from anyone else it is the
/// client's claim, and would spare a plain-HTTP request its redirect.
fn needs_https_redirect(req: &Request<Incoming>, host: &str, ctx: &RequestCtx) -> bool {
    ctx.conn.scheme == Scheme::Http
        && !host.is_empty()
        && !req.uri().path().starts_with(ACME_CHALLENGE)
        && !forwarded_over_https(req, ctx)
}

/// A trusted proxy in front says it received the request over HTTPS.
fn forwarded_over_https(req: &Request<Incoming>, ctx: &RequestCtx) -> bool {
    ctx.conn.trusted
        && req
            .headers()
            .get(&proxy::X_FORWARDED_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// 308 to `https://host[:port]<request URI>`, ingress-nginx's
/// `ssl-redirect`: one trailing `/` of the request URI is dropped unless
/// `preserve_trailing_slash`.
fn https_redirect(r: &HttpsRedirect, req: &Request<Incoming>, host: &str) -> Answer {
    let (host, _) = proxy::split_host_port(host);
    let mut uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if !r.preserve_trailing_slash {
        uri = uri.strip_suffix('/').unwrap_or(uri);
    }
    let port = r.port.filter(|p| *p != Scheme::Https.default_port());
    Answer::Redirect {
        status: StatusCode::PERMANENT_REDIRECT,
        location: proxy::location(Scheme::Https, host, port, uri),
    }
}

pub(crate) fn apply_header_modifier(headers: &mut HeaderMap, m: &HeaderModifier) {
    if m.is_empty() {
        return;
    }
    for (name, value) in &m.set {
        headers.insert(name.clone(), value.clone());
    }
    for (name, value) in &m.add {
        headers.append(name.clone(), value.clone());
    }
    for name in &m.remove {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Action, Cors, Forward, Hsts, HttpsPolicy, Route, SourceRef, Stage};
    use http::HeaderName;

    fn modifier(name: &'static str) -> HeaderModifier {
        HeaderModifier {
            set: vec![(HeaderName::from_static(name), HeaderValue::from_static("1"))],
            ..HeaderModifier::default()
        }
    }

    fn kind(f: &Filter) -> &'static str {
        match f {
            Filter::HttpsRedirect(_) => "https_redirect",
            Filter::Hsts(_) => "hsts",
            Filter::RequestHeaders(_) => "request_headers",
            Filter::ResponseHeaders(_) => "response_headers",
            Filter::GrpcWebCors(_) => "grpc_web_cors",
            Filter::ClientCert(_) => "client_cert",
            Filter::BodyLimit(_) => "body_limit",
            Filter::IpAccess(_) => "ip_access",
        }
    }

    /// The whole order in one table: each filter's stage, and the running
    /// order of a rule that has them all. An HTTPS redirect answers before
    /// a CORS preflight, which answers before a client-certificate
    /// mismatch, which answers before a body-size check; on the way back
    /// CORS decorates first, then the header edits, then HSTS.
    #[test]
    fn filter_order() {
        let auth = RouteClientAuth {
            policy: "p".into(),
            pass_certificate: false,
        };
        let every = [
            (
                Filter::HttpsRedirect(HttpsRedirect::default()),
                Stage::Rewrite,
            ),
            (Filter::Hsts(Hsts::DEFAULT), Stage::Rewrite),
            (Filter::ResponseHeaders(modifier("x-rsp")), Stage::Rewrite),
            (Filter::RequestHeaders(modifier("x-req")), Stage::Rewrite),
            (Filter::GrpcWebCors(Cors::default()), Stage::PreAccess),
            (Filter::ClientCert(auth.clone()), Stage::Access),
            (Filter::BodyLimit(10), Stage::Content),
        ];
        for (f, stage) in &every {
            assert_eq!(f.stage(), *stage, "{f:?}");
        }
        assert_eq!(
            Filter::IpAccess(crate::model::IpAccess::default()).stage(),
            Stage::Access
        );

        let mut rule = Rule::new(Action::Forward(Forward {
            backends: vec![],
            rewrite: None,
            canary: None,
            upstream_tls: None,
            retry: Default::default(),
        }));
        rule.filters.request_headers = modifier("x-req");
        rule.filters.response_headers = modifier("x-rsp");
        rule.max_request_body = Some(10);
        rule.grpc.web = Some(GrpcWeb::default());
        let route = Route {
            id: "r".into(),
            source: SourceRef::default(),
            hostnames: vec![],
            rules: vec![],
            https: HttpsPolicy {
                redirect: Some(HttpsRedirect::default()),
                hsts: Some(Hsts::DEFAULT),
                client_auth: Some(auth),
            },
        };
        let chain = route.rule_filters(&rule);
        assert_eq!(
            chain.iter().map(kind).collect::<Vec<_>>(),
            [
                "https_redirect",
                "hsts",
                "response_headers",
                "request_headers",
                "grpc_web_cors",
                "client_cert",
                "body_limit",
            ]
        );
        assert_eq!(chain, every.map(|(f, _)| f));

        // Within a stage, list order holds whatever the input order.
        let mut shuffled = vec![
            Filter::BodyLimit(1),
            Filter::ResponseHeaders(modifier("x-b")),
            Filter::ClientCert(RouteClientAuth {
                policy: "p".into(),
                pass_certificate: false,
            }),
            Filter::ResponseHeaders(modifier("x-a")),
        ];
        crate::model::order_filters(&mut shuffled);
        assert_eq!(
            shuffled.iter().map(kind).collect::<Vec<_>>(),
            [
                "response_headers",
                "response_headers",
                "client_cert",
                "body_limit"
            ]
        );
        assert_eq!(shuffled[0], Filter::ResponseHeaders(modifier("x-b")));

        // A filter on the rule's own list takes its stage's place, after
        // the derived ones of that stage.
        rule.chain = vec![Filter::ResponseHeaders(modifier("x-own"))];
        let chain = route.rule_filters(&rule);
        assert_eq!(chain[4], Filter::ResponseHeaders(modifier("x-own")));
        assert_eq!(kind(&chain[5]), "grpc_web_cors");
        rule.chain.clear();

        // Redirect and deny rules read no body and bridge nothing.
        rule.action = Action::Deny { reason: "x".into() };
        let chain = route.rule_filters(&rule);
        assert!(
            !chain
                .iter()
                .any(|f| matches!(f, Filter::BodyLimit(_) | Filter::GrpcWebCors(_)))
        );
    }

    #[test]
    fn a_rule_without_policies_has_an_empty_chain() {
        let mut rule = Rule::new(Action::Deny { reason: "x".into() });
        rule.max_request_body = None;
        let route = Route {
            id: "r".into(),
            source: SourceRef::default(),
            hostnames: vec![],
            rules: vec![],
            https: HttpsPolicy::default(),
        };
        let filters = route.rule_filters(&rule);
        assert!(filters.is_empty());
        assert!(Chain::build(&filters, &rule).is_empty());
    }
}
