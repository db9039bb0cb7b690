//! The route filter chain at request time: a rule's [`Filter`]s compiled
//! once per table build into [`Chain`], run by [`crate::proxy`] around the
//! rule's action.
//!
//! The request side runs in order; a filter lets the request continue or
//! answers it (an [`Answer`], rendered in the caller's protocol by the
//! proxy). A filter that cannot decide without waiting (a password hash
//! off the workers; later an external check) hands the proxy a future:
//! the chain stops there ([`Flow::Pending`]), the proxy awaits it and
//! resumes the chain after it. A chain without such filters runs as a
//! plain loop and allocates nothing for them. The response side runs in reverse on every answer, the filters'
//! own included. A rule without filters holds an empty slice: nothing is
//! allocated and no loop body runs.

pub mod basic_auth;
pub(crate) mod cors;
pub(crate) mod error_pages;
pub mod external_auth;
pub mod global_rate_limit;
pub mod jwt;
pub mod mirror;
pub mod rate_limit;

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::body::ResponseBody;
use crate::filter::basic_auth::{BasicAuthFilter, Check, Verifier};
use crate::filter::cors::CorsPolicy;
use crate::filter::error_pages::{Asker, ErrorPagesRuntime, ErrorRequest};
use crate::filter::external_auth::{AuthCarry, Decision, ExternalAuthFilter, ExternalAuthState};
use crate::filter::global_rate_limit::{GlobalLimiter, GlobalLimits};
use crate::filter::jwt::{JwtFilter, JwtState};
use crate::filter::mirror::{MirrorRuntime, MirrorState, Tee};
use crate::filter::rate_limit::{
    ConnLimiter, ConnectionGuard, Limited, Limits, RateDecision, RateLimiter,
};
use crate::headers;
use crate::model::{Filter, HeaderModifier, HttpsRedirect, RouteClientAuth, Rule, Scheme};
use crate::observe::trace::{RuleTrace, Tracing};
use crate::request::ctx::{Call, ConnInfo, RequestCtx};
use crate::request::forwarded::{IpNet, IpSet};
use crate::upstream::Upstreams;

/// A rule's filters, compiled, in running order.
#[derive(Default)]
pub struct Chain {
    filters: Box<[Compiled]>,
    /// Some filter's response side reads the request's `Origin`, which is
    /// taken before the request is consumed.
    reads_origin: bool,
    /// The index of the error pages filter, whose response side replaces
    /// an answer's body.
    error_pages: Option<usize>,
    /// A basic-auth filter keeps the client's credential from the upstream.
    strips_authorization: bool,
    /// Some filter edits the request headers on their way upstream.
    edits_request_headers: bool,
    /// The response bandwidth limit and its counter, if any.
    throttle: Option<(
        crate::model::ResponseRate,
        prometheus_client::metrics::counter::Counter,
    )>,
    /// The rule's tracing, when it traces (its `Filter::Trace` or the
    /// global switch).
    trace: Option<Box<RuleTrace>>,
    /// The body limit, which the forwarded body is held to as it streams.
    body_limit: Option<u64>,
    /// The index of the client-certificate filter, whose policy says what
    /// the upstream is told of the certificate.
    client_cert: Option<usize>,
}

/// What filters keep outside the table, so that it outlives a swap:
/// basic auth's verification slots and per-Secret caches; external auth's
/// clients and caches; the limits' buckets and counts.
#[derive(Default)]
pub struct FilterState {
    pub(crate) basic_auth: Verifier,
    pub(crate) external_auth: ExternalAuthState,
    pub(crate) limits: Limits,
    /// The tracer, when an OTLP exporter is configured.
    pub(crate) tracing: Option<Arc<Tracing>>,
    /// JWT's JWKS fetchers, one per URL.
    pub(crate) jwt: JwtState,
    /// Global limits' Redis connection and remembered refusals.
    pub(crate) global_limits: GlobalLimits,
    /// Request mirroring's bound on copies in flight.
    pub(crate) mirror: MirrorState,
}

impl FilterState {
    pub fn new(basic_auth: Verifier) -> Self {
        Self {
            basic_auth,
            external_auth: ExternalAuthState::default(),
            limits: Limits::default(),
            tracing: None,
            jwt: JwtState::default(),
            global_limits: GlobalLimits::default(),
            mirror: MirrorState::default(),
        }
    }

    pub fn with_global_limits(mut self, global_limits: GlobalLimits) -> Self {
        self.global_limits = global_limits;
        self
    }

    /// The global limits' line for `/readyz`, once one has asked Redis.
    pub(crate) fn global_limit_status(&self) -> Option<String> {
        self.global_limits.status()
    }

    pub fn with_mirror(mut self, mirror: MirrorState) -> Self {
        self.mirror = mirror;
        self
    }

    pub fn with_jwt(mut self, jwt: JwtState) -> Self {
        self.jwt = jwt;
        self
    }

    pub fn with_external_auth(mut self, external_auth: ExternalAuthState) -> Self {
        self.external_auth = external_auth;
        self
    }

    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Forgets the state no table names any more; after each publish.
    pub(crate) fn prune(&self) {
        self.limits.prune();
        self.global_limits.prune();
    }
}

/// A [`Filter`] with its values prepared: header values formatted, CORS
/// lists joined.
enum Compiled {
    HttpsRedirect(HttpsRedirect),
    Hsts(HeaderValue),
    RequestHeaders(Arc<HeaderModifier>),
    ResponseHeaders(Arc<HeaderModifier>),
    Cors(Box<CorsPolicy>),
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
    ErrorPages(Box<ErrorPagesRuntime>),
    BasicAuth(Box<BasicAuthFilter>),
    ExternalAuth(Box<ExternalAuthFilter>),
    RateLimit(Arc<RateLimiter>),
    ConnectionLimit(Arc<ConnLimiter>),
    /// Applied to the response body (see [`Chain::throttle`]).
    ResponseRate,
    /// Nothing to run in the chain: see [`Chain::trace`].
    Trace,
    Jwt(Box<JwtFilter>),
    GlobalRateLimit(Arc<GlobalLimiter>),
    /// Shared with the copies' tasks, which outlive the request.
    Mirror(Arc<MirrorRuntime>),
}

/// Policy data compiled once per table build and shared by every rule that
/// holds the same value: an Ingress with one 10,000-range allow list and 50
/// paths compiles (and keeps) one set, not 50.
#[derive(Default)]
pub struct Interned {
    ip_sets: HashMap<Box<[IpNet]>, Arc<IpSet>>,
    header_modifiers: HashMap<HeaderModifier, Arc<HeaderModifier>>,
}

/// One backend's own header edits (Gateway API `backendRefs[].filters`),
/// compiled once per build. Request edits run after the rule's (Gateway
/// API runs route filters, then backendRef filters); response edits on
/// that backend's answers, before the rule's response side. Empty for
/// every backend without filters: two empty slices, nothing allocated.
#[derive(Default)]
pub(crate) struct BackendFilters {
    request: Box<[Arc<HeaderModifier>]>,
    response: Box<[Arc<HeaderModifier>]>,
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
    /// 401 with this `WWW-Authenticate` challenge.
    Unauthorized(HeaderValue),
    /// A rate or connection limit's refusal, with `Retry-After` (boxed:
    /// rare on the way, and it carries the optional rate headers).
    Limited(Box<Limited>),
}

/// Where the request side stands.
pub(crate) enum Flow {
    /// Every filter ran, or one answered.
    Done(Option<Answer>),
    /// The filter at `at` waits for something: await [`Pending::wait`],
    /// then [`Chain::resume`].
    Pending(Pending),
}

/// A filter's decision still to come.
pub(crate) struct Pending {
    at: usize,
    wait: Wait,
}

/// What a filter waits for.
enum Wait {
    BasicAuth(basic_auth::Wait),
    ExternalAuth(external_auth::Wait),
    /// Keys being fetched for a token.
    Jwt(external_auth::Wait),
    /// Redis counting the request.
    GlobalRateLimit(external_auth::Wait),
}

impl Pending {
    /// The filter's index and its decision.
    pub(crate) async fn wait(self) -> (usize, Decision) {
        let decision = match self.wait {
            Wait::BasicAuth(w) => Decision {
                answer: w.await,
                carry: None,
            },
            Wait::ExternalAuth(w) | Wait::Jwt(w) | Wait::GlobalRateLimit(w) => w.await,
        };
        (self.at, decision)
    }
}

/// A filter's request side.
enum Verdict {
    Continue,
    Answer(Answer),
    Wait(Wait),
}

/// What the request side leaves for the response side; on the stack.
#[derive(Default)]
pub(crate) struct Passed {
    origin: Option<HeaderValue>,
    /// The index of the filter that answered, if one did.
    answered_by: Option<usize>,
    /// What an error page is asked with; only on rules with error pages.
    error_request: Option<Box<ErrorRequest>>,
    /// External auth's headers for the upstream and cookies for the client.
    auth: Option<Box<AuthCarry>>,
    /// Places held under connection limits, until the response body ends
    /// (empty, without allocating, on rules without one).
    held: Vec<ConnectionGuard>,
    /// A passing request's `RateLimit-Policy` and `RateLimit` values, for
    /// policies that send them.
    rate_headers: Option<(HeaderValue, HeaderValue)>,
    /// JWT's claim headers for the upstream.
    jwt: Option<Box<AuthCarry>>,
    /// The indices of the mirrors that sampled the request (empty, without
    /// allocating, on rules without one).
    mirrors: Vec<usize>,
}

impl Passed {
    /// Puts what external auth allowed with on the request, before it is
    /// forwarded (replacing the client's copies of those headers).
    pub(crate) fn admitted(&mut self, headers: &mut HeaderMap) {
        if let Some(carry) = &mut self.jwt {
            carry.apply(headers);
        }
        if let Some(carry) = &mut self.auth {
            carry.apply(headers);
        }
    }

    /// The places held under connection limits, for the response body to
    /// hold until it ends.
    pub(crate) fn take_held(&mut self) -> Vec<ConnectionGuard> {
        std::mem::take(&mut self.held)
    }

    /// The mirrors that sampled the request, for the forwarding to start
    /// their copies ([`Chain::start_mirrors`]).
    pub(crate) fn take_mirrors(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.mirrors)
    }
}

// === impl Chain ===

impl Chain {
    /// Compiles `filters` (`rule`'s chain in running order, see
    /// [`crate::model::order_filters`]) for `rule`; an error
    /// backend's endpoints come from `upstreams`.
    pub fn build(
        filters: &[Filter],
        rule: &Rule,
        upstreams: &Upstreams,
        state: &FilterState,
    ) -> Self {
        Self::build_with(filters, rule, upstreams, state, &mut Interned::default())
    }

    /// [`build`](Self::build), sharing the data of equal policies with the
    /// other rules of the same table build through `interned`.
    pub fn build_with(
        filters: &[Filter],
        rule: &Rule,
        upstreams: &Upstreams,
        state: &FilterState,
        interned: &mut Interned,
    ) -> Self {
        // The last listed wins, as a later nginx `limit_rate` does.
        let throttle = filters.iter().rev().find_map(|f| match f {
            Filter::ResponseRate(r) => Some((*r, state.limits.throttled())),
            _ => None,
        });
        let trace = state.tracing.as_ref().and_then(|t| {
            let setting = filters.iter().find_map(|f| match f {
                Filter::Trace(s) => Some(s),
                _ => None,
            });
            RuleTrace::build(t, setting).map(Box::new)
        });
        let strips_authorization = filters
            .iter()
            .any(|f| matches!(f, Filter::BasicAuth(a) if !a.forward_authorization));
        // The strictest, should a hand-written chain hold several.
        let body_limit = filters
            .iter()
            .filter_map(|f| match f {
                Filter::BodyLimit(limit) => Some(*limit),
                _ => None,
            })
            .min();
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
                Filter::Cors(cors) => Compiled::Cors(Box::new(CorsPolicy::build(cors))),
                Filter::ClientCert(a) => Compiled::ClientCert(a.clone()),
                Filter::BodyLimit(limit) => Compiled::BodyLimit {
                    limit: *limit,
                    bridged: rule.grpc.web.is_some(),
                },
                Filter::IpAccess(a) => Compiled::IpAccess {
                    allow: (!a.allow.is_empty()).then(|| interned.ip_set(&a.allow)),
                    deny: interned.ip_set(&a.deny),
                },
                Filter::BasicAuth(a) => Compiled::BasicAuth(Box::new(BasicAuthFilter::build(
                    &a.realm,
                    &a.users,
                    &state.basic_auth,
                ))),
                Filter::ExternalAuth(a) => Compiled::ExternalAuth(Box::new(
                    ExternalAuthFilter::build(a, &state.external_auth, upstreams),
                )),
                Filter::Jwt(j) => Compiled::Jwt(Box::new(JwtFilter::build(
                    j,
                    &state.jwt,
                    &state.external_auth,
                ))),
                Filter::ErrorPages(p) => Compiled::ErrorPages(Box::new(ErrorPagesRuntime::build(
                    p,
                    rule.timeouts,
                    upstreams,
                ))),
                Filter::RateLimit(p) => {
                    Compiled::RateLimit(state.limits.rate(p, interned.ip_set(&p.scope.exempt)))
                }
                Filter::ResponseRate(_) => Compiled::ResponseRate,
                Filter::ConnectionLimit(p) => Compiled::ConnectionLimit(
                    state
                        .limits
                        .connections(p, interned.ip_set(&p.scope.exempt)),
                ),
                Filter::Trace(_) => Compiled::Trace,
                Filter::GlobalRateLimit(p) => Compiled::GlobalRateLimit(
                    state.global_limits.limiter(p, interned.ip_set(&p.exempt)),
                ),
                Filter::Mirror(m) => Compiled::Mirror(Arc::new(MirrorRuntime::build(
                    m,
                    rule.timeouts,
                    upstreams,
                    &state.mirror,
                ))),
            })
            .collect();
        let reads_origin = filters.iter().any(|f| matches!(f, Compiled::Cors(_)));
        let edits_request_headers = filters
            .iter()
            .any(|f| matches!(f, Compiled::RequestHeaders(_)));
        // The last listed: its response side is the first to run.
        let error_pages = filters
            .iter()
            .rposition(|f| matches!(f, Compiled::ErrorPages(_)));
        let client_cert = filters
            .iter()
            .position(|f| matches!(f, Compiled::ClientCert(_)));
        Self {
            filters,
            reads_origin,
            error_pages,
            strips_authorization,
            edits_request_headers,
            throttle,
            trace,
            body_limit,
            client_cert,
        }
    }

    /// A fresh bandwidth limit for one response, on rules with one.
    pub(crate) fn throttle(&self) -> Option<rate_limit::Throttle> {
        let (rate, counter) = self.throttle.as_ref()?;
        Some(rate_limit::Throttle::new(
            rate.bytes_per_second,
            rate.after,
            counter.clone(),
        ))
    }

    /// The rule's tracing; `None` when it does not trace.
    pub(crate) fn trace(&self) -> Option<&RuleTrace> {
        self.trace.as_deref()
    }

    pub fn is_empty(&self) -> bool {
        self.filters.is_empty()
    }

    /// The request-body limit; `None`: unlimited.
    pub(crate) fn body_limit(&self) -> Option<u64> {
        self.body_limit
    }

    /// The client-certificate policy the request was admitted under.
    pub(crate) fn client_cert(&self) -> Option<&RouteClientAuth> {
        match self.filters.get(self.client_cert?)? {
            Compiled::ClientCert(a) => Some(a),
            _ => None,
        }
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

    /// The request side, in order: the first answer stops the chain, and
    /// so does a filter that must wait.
    pub(crate) fn request(
        &self,
        req: &Request<Incoming>,
        host: &str,
        ctx: &RequestCtx,
    ) -> (Passed, Flow) {
        let mut passed = Passed {
            origin: if self.reads_origin {
                req.headers().get(header::ORIGIN).cloned()
            } else {
                None
            },
            answered_by: None,
            // Taken before any filter answers: their answers get pages too.
            error_request: self.error_pages.map(|_| Box::new(ErrorRequest::of(req))),
            auth: None,
            held: Vec::new(),
            rate_headers: None,
            jwt: None,
            mirrors: Vec::new(),
        };
        let flow = self.run_from(0, &mut passed, req, host, ctx);
        (passed, flow)
    }

    /// Carries on after the filter at `at` waited: its answer stands, or
    /// the next filters run.
    pub(crate) fn resume(
        &self,
        at: usize,
        decision: Decision,
        passed: &mut Passed,
        req: &Request<Incoming>,
        host: &str,
        ctx: &RequestCtx,
    ) -> Flow {
        let Decision { answer, carry } = decision;
        if carry.is_some() {
            if matches!(self.filters.get(at), Some(Compiled::Jwt(_))) {
                passed.jwt = carry;
            } else {
                passed.auth = carry;
            }
        }
        if answer.is_some() {
            passed.answered_by = Some(at);
            return Flow::Done(answer);
        }
        self.run_from(at + 1, passed, req, host, ctx)
    }

    fn run_from(
        &self,
        start: usize,
        passed: &mut Passed,
        req: &Request<Incoming>,
        host: &str,
        ctx: &RequestCtx,
    ) -> Flow {
        for (i, f) in self.filters.iter().enumerate().skip(start) {
            let verdict = match f {
                Compiled::RateLimit(l) => match l.check(req.headers(), ctx.client_addr().ip) {
                    Some(RateDecision::Refuse(limited)) => {
                        Verdict::Answer(Answer::Limited(Box::new(limited)))
                    }
                    Some(RateDecision::Pass(headers)) => {
                        if headers.is_some() {
                            passed.rate_headers = headers;
                        }
                        Verdict::Continue
                    }
                    None => Verdict::Continue,
                },
                Compiled::ConnectionLimit(l) => {
                    match l.acquire(req.headers(), ctx.client_addr().ip) {
                        Ok(guard) => {
                            passed.held.extend(guard);
                            Verdict::Continue
                        }
                        Err(limited) => Verdict::Answer(Answer::Limited(Box::new(limited))),
                    }
                }
                Compiled::Mirror(m) => {
                    if m.sample() {
                        passed.mirrors.push(i);
                    }
                    Verdict::Continue
                }
                _ => f.verdict(req, host, ctx, passed),
            };
            match verdict {
                Verdict::Continue => {}
                Verdict::Answer(answer) => {
                    passed.answered_by = Some(i);
                    return Flow::Done(Some(answer));
                }
                Verdict::Wait(wait) => return Flow::Pending(Pending { at: i, wait }),
            }
        }
        Flow::Done(None)
    }

    /// Starts the copies of the mirrors at `picked` (see
    /// [`Passed::take_mirrors`]) from the request as it leaves (`head`,
    /// its URI still the routed one); the tee the body must feed when some
    /// copy waits for it.
    pub(crate) fn start_mirrors(
        &self,
        picked: &[usize],
        head: &http::request::Parts,
        host: &HeaderValue,
        body: &Incoming,
    ) -> Option<Tee> {
        let mirrors = picked.iter().filter_map(|&i| match self.filters.get(i) {
            Some(Compiled::Mirror(m)) => Some(m),
            _ => None,
        });
        mirror::start(mirrors, head, host, body)
    }

    /// Whether [`Self::upstream_request`] may edit a header the proxy adds
    /// (any request header modifier may).
    pub(crate) fn edits_request_headers(&self) -> bool {
        self.edits_request_headers
    }

    /// Edits the request headers as they leave for the upstream.
    pub(crate) fn upstream_request(&self, headers: &mut HeaderMap) {
        // Before the user's edits, which may set one of their own.
        if self.strips_authorization {
            headers.remove(header::AUTHORIZATION);
        }
        for f in self.filters.iter() {
            if let Compiled::RequestHeaders(m) = f {
                apply_header_modifier(headers, m);
            }
        }
    }

    /// Whether `rsp` is to be replaced by an error page ([`Self::error_page`]).
    /// gRPC calls never are: their status is in the trailers, and their
    /// clients read no pages.
    pub(crate) fn intercepts(
        &self,
        passed: &Passed,
        rsp: &Response<ResponseBody>,
        ctx: &RequestCtx,
    ) -> bool {
        passed.error_request.is_some()
            && matches!(ctx.call, Call::Http)
            && self
                .error_pages_runtime()
                .is_some_and(|p| p.intercepts(rsp))
    }

    /// The error pages filter's response side: `rsp` with the error
    /// backend's page, or unchanged when none comes. Runs before the other
    /// filters' response sides, which then apply to the page.
    pub(crate) async fn error_page(
        &self,
        passed: &Passed,
        rsp: Response<ResponseBody>,
        ctx: &RequestCtx,
    ) -> Response<ResponseBody> {
        match (self.error_pages_runtime(), passed.error_request.as_deref()) {
            (Some(pages), Some(req)) => {
                let asker = Asker {
                    id: ctx.id(),
                    client: ctx.client_addr().ip,
                };
                pages.render(req, asker, rsp).await
            }
            _ => rsp,
        }
    }

    fn error_pages_runtime(&self) -> Option<&ErrorPagesRuntime> {
        match self.filters.get(self.error_pages?)? {
            Compiled::ErrorPages(p) => Some(p),
            _ => None,
        }
    }

    /// The error backend's endpoints, for health reports.
    pub(crate) fn error_backends(&self) -> impl Iterator<Item = &crate::balance::BackendRuntime> {
        self.error_pages_runtime()
            .into_iter()
            .flat_map(|p| p.backends())
    }

    /// The response side, in reverse, on every answer.
    pub(crate) fn response(&self, passed: &Passed, conn: &ConnInfo, headers: &mut HeaderMap) {
        for (i, f) in self.filters.iter().enumerate().rev() {
            match f {
                Compiled::Hsts(v) if conn.scheme == Scheme::Https => {
                    headers.insert(header::STRICT_TRANSPORT_SECURITY, v.clone());
                }
                Compiled::ResponseHeaders(m) => apply_header_modifier(headers, m),
                Compiled::ExternalAuth(_) => {
                    for cookie in passed.auth.iter().flat_map(|c| &c.cookies) {
                        headers.append(header::SET_COOKIE, cookie.clone());
                    }
                }
                // A preflight answer already carries its CORS headers.
                Compiled::Cors(c) if passed.answered_by != Some(i) => {
                    c.decorate(passed.origin.as_ref(), headers);
                }
                Compiled::RateLimit(_) => {
                    if let Some((policy, state)) = &passed.rate_headers {
                        headers.insert(&rate_limit::RATELIMIT_POLICY, policy.clone());
                        headers.insert(&rate_limit::RATELIMIT, state.clone());
                    }
                }
                _ => {}
            }
        }
    }
}

// === impl BackendFilters ===

impl BackendFilters {
    /// Header edits only: the table build has refused a rule whose
    /// backends hold any other filter (`route::router`), so others are
    /// never seen here.
    pub(crate) fn build(filters: &[Filter], interned: &mut Interned) -> Self {
        if filters.is_empty() {
            return Self::default();
        }
        let edits = |want: fn(&Filter) -> Option<&HeaderModifier>, interned: &mut Interned| {
            filters
                .iter()
                .filter_map(want)
                .map(|m| interned.header_modifier(m))
                .collect()
        };
        let request = edits(
            |f| match f {
                Filter::RequestHeaders(m) => Some(m),
                _ => None,
            },
            interned,
        );
        let response = edits(
            |f| match f {
                Filter::ResponseHeaders(m) => Some(m),
                _ => None,
            },
            interned,
        );
        Self { request, response }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.request.is_empty() && self.response.is_empty()
    }

    /// Whether [`Self::upstream_request`] edits anything.
    pub(crate) fn edits_request(&self) -> bool {
        !self.request.is_empty()
    }

    /// Edits the request headers as they leave for this backend.
    pub(crate) fn upstream_request(&self, headers: &mut HeaderMap) {
        for m in &self.request {
            apply_header_modifier(headers, m);
        }
    }

    /// Edits this backend's answer, in list order.
    pub(crate) fn response(&self, headers: &mut HeaderMap) {
        for m in &self.response {
            apply_header_modifier(headers, m);
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
    /// This filter's request side, for filters that may wait; the others
    /// decide in [`Compiled::request`].
    fn verdict(
        &self,
        req: &Request<Incoming>,
        host: &str,
        ctx: &RequestCtx,
        passed: &mut Passed,
    ) -> Verdict {
        match self {
            Compiled::BasicAuth(a) => match a.check(req.headers()) {
                Check::Admit => Verdict::Continue,
                Check::Answer(answer) => Verdict::Answer(answer),
                Check::Wait(wait) => Verdict::Wait(Wait::BasicAuth(wait)),
            },
            Compiled::ExternalAuth(a) => match a.check(req, host, ctx) {
                external_auth::Check::Admit(carry) => {
                    passed.auth = Some(carry);
                    Verdict::Continue
                }
                external_auth::Check::Answer(answer) => Verdict::Answer(answer),
                external_auth::Check::Wait(wait) => Verdict::Wait(Wait::ExternalAuth(wait)),
            },
            Compiled::Jwt(j) => match j.check(req.headers(), host) {
                jwt::Check::Admit(carry) => {
                    passed.jwt = Some(carry);
                    Verdict::Continue
                }
                jwt::Check::Answer(answer) => Verdict::Answer(answer),
                jwt::Check::Wait(wait) => Verdict::Wait(Wait::Jwt(wait)),
            },
            Compiled::GlobalRateLimit(l) => match l.check(req, host, ctx.client_addr().ip) {
                global_rate_limit::Check::Skip => Verdict::Continue,
                global_rate_limit::Check::Answer(answer) => Verdict::Answer(answer),
                global_rate_limit::Check::Wait(wait) => Verdict::Wait(Wait::GlobalRateLimit(wait)),
            },
            _ => match self.request(req, host, ctx) {
                Some(answer) => Verdict::Answer(answer),
                None => Verdict::Continue,
            },
        }
    }

    /// This filter's request side: `Some` answers in place of the action.
    fn request(&self, req: &Request<Incoming>, host: &str, ctx: &RequestCtx) -> Option<Answer> {
        match self {
            Compiled::HttpsRedirect(r) => {
                needs_https_redirect(req, host, ctx).then(|| https_redirect(r, req, host))
            }
            Compiled::Cors(c) if req.method() == Method::OPTIONS => c
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
                (!grpc && headers::content_length(req.headers()).is_some_and(|len| len > *limit))
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
            .get(&headers::X_FORWARDED_PROTO)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"https"))
}

/// 308 to `https://host[:port]<request URI>`, ingress-nginx's
/// `ssl-redirect`: one trailing `/` of the request URI is dropped unless
/// `preserve_trailing_slash`.
fn https_redirect(r: &HttpsRedirect, req: &Request<Incoming>, host: &str) -> Answer {
    let (host, _) = headers::split_host_port(host);
    let mut uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    if !r.preserve_trailing_slash {
        uri = uri.strip_suffix('/').unwrap_or(uri);
    }
    let port = r.port.filter(|p| *p != Scheme::Https.default_port());
    Answer::Redirect {
        status: StatusCode::PERMANENT_REDIRECT,
        location: headers::location(Scheme::Https, host, port, uri),
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
    use crate::model::{Action, Cors, Forward, GrpcWeb, Hsts, IpAccess, Route, Stage};
    use http::HeaderName;

    fn modifier(name: &'static str) -> HeaderModifier {
        HeaderModifier {
            set: vec![(HeaderName::from_static(name), HeaderValue::from_static("1"))],
            ..HeaderModifier::default()
        }
    }

    fn error_pages() -> Filter {
        Filter::ErrorPages(Box::new(crate::model::ErrorPages {
            codes: vec![404],
            intercept_upstream: true,
            backend: crate::model::Backend::new("errors", vec![]),
            origin: Default::default(),
        }))
    }

    fn rate_limit() -> Filter {
        Filter::RateLimit(crate::model::RateLimit {
            scope: crate::model::LimitScope::new("r"),
            rates: vec![crate::model::Rate {
                requests: 1,
                per: crate::model::RatePeriod::Second,
                burst: 5,
            }],
            headers: false,
        })
    }

    fn connection_limit() -> Filter {
        Filter::ConnectionLimit(crate::model::ConnectionLimit {
            scope: crate::model::LimitScope::new("r"),
            max: 1,
        })
    }

    fn global_rate_limit() -> Filter {
        Filter::GlobalRateLimit(crate::model::GlobalRateLimit {
            id: "r".into(),
            limit: 1,
            window_secs: 1,
            key: crate::model::HashKey(vec![]),
            exempt: vec![],
            status: 429,
        })
    }

    fn mirror() -> Filter {
        Filter::Mirror(Box::new(crate::model::Mirror::to_backend(
            "r",
            crate::model::Backend::new("shadow", vec![]),
        )))
    }

    fn kind(f: &Filter) -> &'static str {
        match f {
            Filter::HttpsRedirect(_) => "https_redirect",
            Filter::Hsts(_) => "hsts",
            Filter::RequestHeaders(_) => "request_headers",
            Filter::ResponseHeaders(_) => "response_headers",
            Filter::Cors(_) => "cors",
            Filter::ClientCert(_) => "client_cert",
            Filter::BodyLimit(_) => "body_limit",
            Filter::IpAccess(_) => "ip_access",
            Filter::ErrorPages(_) => "error_pages",
            Filter::BasicAuth(_) => "basic_auth",
            Filter::ExternalAuth(_) => "external_auth",
            Filter::RateLimit(_) => "rate_limit",
            Filter::ConnectionLimit(_) => "connection_limit",
            Filter::ResponseRate(_) => "response_rate",
            Filter::Trace(_) => "trace",
            Filter::Jwt(_) => "jwt",
            Filter::GlobalRateLimit(_) => "global_rate_limit",
            Filter::Mirror(_) => "mirror",
        }
    }

    /// The whole order in one table: each filter's stage, and the running
    /// order of a rule that has them all. An HTTPS redirect answers before
    /// a CORS preflight, which answers before the limits (nginx's
    /// preaccess phase: a flood costs no access check or password hash),
    /// which answer before a client-certificate
    /// mismatch or an IP deny, which answer before a body-size check,
    /// which answers before a request is mirrored (nginx's precontent
    /// phase: a refused request is never copied); on
    /// the way back the error page comes first (every other filter applies
    /// to it), then CORS decorates, then the header edits, then HSTS.
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
            (Filter::Cors(Cors::grpc_web()), Stage::PreAccess),
            (rate_limit(), Stage::PreAccess),
            (connection_limit(), Stage::PreAccess),
            (global_rate_limit(), Stage::PreAccess),
            (Filter::ClientCert(auth.clone()), Stage::Access),
            (Filter::IpAccess(IpAccess::default()), Stage::Access),
            (Filter::BodyLimit(10), Stage::Content),
            (mirror(), Stage::Content),
            (error_pages(), Stage::Content),
            (Filter::Trace(crate::model::Trace::default()), Stage::Log),
        ];
        for (f, stage) in &every {
            assert_eq!(f.stage(), *stage, "{f:?}");
        }

        // A rule as translation writes it: its header edits, then its own
        // list (in an order the stages overrule), its body limit, and the
        // route-wide policies put ahead of it all.
        let chain_of = |action: Action, own: Vec<Filter>| {
            let mut rule = Rule::new(action);
            rule.chain.splice(
                0..0,
                [
                    Filter::ResponseHeaders(modifier("x-rsp")),
                    Filter::RequestHeaders(modifier("x-req")),
                ],
            );
            rule.chain.extend(own);
            rule.set_body_limit(Some(10));
            rule.grpc.web = Some(GrpcWeb::default());
            let mut route = Route::new("r", vec![], vec![rule]);
            route.add_to_every_rule(&[
                Filter::HttpsRedirect(HttpsRedirect::default()),
                Filter::Hsts(Hsts::DEFAULT),
                Filter::ClientCert(auth.clone()),
            ]);
            let mut chain = route.rules.remove(0).chain;
            crate::model::order_filters(&mut chain);
            chain
        };
        let forward = || Action::Forward(Forward::to(vec![]));
        let chain = chain_of(
            forward(),
            vec![
                Filter::Trace(crate::model::Trace::default()),
                mirror(),
                error_pages(),
                Filter::IpAccess(IpAccess::default()),
                Filter::Cors(Cors::grpc_web()),
                rate_limit(),
                connection_limit(),
                global_rate_limit(),
            ],
        );
        assert_eq!(
            chain.iter().map(kind).collect::<Vec<_>>(),
            [
                "https_redirect",
                "hsts",
                "response_headers",
                "request_headers",
                "cors",
                "rate_limit",
                "connection_limit",
                "global_rate_limit",
                "client_cert",
                "ip_access",
                "body_limit",
                "mirror",
                "error_pages",
                "trace",
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
        // the route-wide ones and header edits of that stage.
        let chain = chain_of(forward(), vec![Filter::ResponseHeaders(modifier("x-own"))]);
        assert_eq!(chain[4], Filter::ResponseHeaders(modifier("x-own")));
        assert_eq!(kind(&chain[5]), "client_cert");

        // Basic auth asks for credentials after the checks that need none:
        // a client the certificate or the address lists refuse is never
        // asked for a password. Translation lists it after the IP lists.
        let basic = Filter::BasicAuth(crate::model::BasicAuth {
            realm: String::new(),
            secret: "default/users".into(),
            users: Default::default(),
            forward_authorization: false,
        });
        assert_eq!(basic.stage(), Stage::Access);
        let chain = chain_of(
            forward(),
            vec![
                Filter::IpAccess(crate::model::IpAccess::default()),
                basic.clone(),
            ],
        );
        assert_eq!(
            chain.iter().map(kind).skip(4).collect::<Vec<_>>(),
            ["client_cert", "ip_access", "basic_auth", "body_limit"]
        );

        // External auth asks its service last of the access checks: after
        // the local ones (no subrequest for a client they refuse), basic
        // auth included. Translation lists it after basic auth.
        let external = Filter::ExternalAuth(Box::new(crate::model::ExternalAuth::new(
            external_auth::Template::service_url("http://auth.test/").unwrap(),
        )));
        assert_eq!(external.stage(), Stage::Access);
        let chain = chain_of(
            forward(),
            vec![
                Filter::IpAccess(crate::model::IpAccess::default()),
                basic.clone(),
                external.clone(),
            ],
        );
        assert_eq!(
            chain.iter().map(kind).skip(4).collect::<Vec<_>>(),
            [
                "client_cert",
                "ip_access",
                "basic_auth",
                "external_auth",
                "body_limit"
            ]
        );

        // A bandwidth limit is about the content.
        let rate = crate::model::ResponseRate {
            bytes_per_second: 1,
            after: 0,
        };
        assert_eq!(Filter::ResponseRate(rate).stage(), Stage::Content);

        // JWT is a local check (no subrequest, keys already fetched): after
        // basic auth, before external auth, so a request without a valid
        // token costs the auth service nothing. Translation lists it there.
        let jwt = Filter::Jwt(Box::new(crate::model::Jwt {
            providers: vec![],
            required: true,
        }));
        assert_eq!(jwt.stage(), Stage::Access);
        let chain = chain_of(
            forward(),
            vec![
                Filter::IpAccess(crate::model::IpAccess::default()),
                basic.clone(),
                jwt,
                external,
            ],
        );
        assert_eq!(
            chain.iter().map(kind).skip(5).collect::<Vec<_>>(),
            [
                "ip_access",
                "basic_auth",
                "jwt",
                "external_auth",
                "body_limit"
            ]
        );

        // Redirect and deny rules read no body.
        let chain = chain_of(Action::Deny { reason: "x".into() }, vec![]);
        assert!(!chain.iter().any(|f| matches!(f, Filter::BodyLimit(_))));
    }

    #[test]
    fn a_rule_without_policies_has_an_empty_chain() {
        // A deny reads no body: not even the default limit.
        let rule = Rule::new(Action::Deny { reason: "x".into() });
        assert!(rule.chain.is_empty());
        let upstreams = Upstreams::new(Default::default(), Default::default());
        assert!(Chain::build(&rule.chain, &rule, &upstreams, &FilterState::default()).is_empty());
    }
}
