//! The request path, as named phases: head rules → path normalisation →
//! route → filter chain, request side (see [`crate::filter`]) → (redirect |
//! forward | deny) → filter chain, response side → respond.
//!
//! Each request loads the live table once and finishes on it. Errors become
//! small plain-text responses carrying the request id, or gRPC statuses for
//! gRPC callers ([`RequestCtx::error`]); a filter's answer is rendered in
//! one place too ([`render`]).

use std::borrow::Cow;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt as _;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::Shared;
use crate::balance::retry::{self, Failed, Sent};
use crate::balance::{BackendRuntime, PickError};
use crate::balance::{RequestKey, RequestView};
use crate::body::{Done, GrpcRequest, RequestBody, ResponseBody};
use crate::filter::{Answer, Chain, Flow, Passed};
use crate::grpc::web::{WebContentType, WebEncoder};
use crate::grpc::{self, CallFailure, Code};
use crate::headers::{
    ForwardingFields, location, names_forwarding, split_host_port, strip_hop_by_hop,
};
use crate::model::{
    Action, Forward, PathMatch, PathModifier, Protocol, Redirect, Substitution, Timeouts,
};
use crate::observe::trace::SpanHead;
use crate::observe::{AccessRecord, NO_ROUTE, RouteStats};
use crate::request::ctx::{Call, ConnInfo, Listener, RequestCtx};
use crate::request::head::{self, Rejection};
use crate::request::path::{self, PathError, PathNormalization, PathPolicy};
use crate::route::router::{RequestHead, replace_prefix_match};
use crate::route::table::{RouteTable, Routed};
use crate::upstream::UpstreamRequest;

mod forwarding;
mod render;

use forwarding::{
    ADDED_REQUEST_HEADERS, add_forwarded_headers, own_fields, request_id, set_client_cert_headers,
};
use render::{grpc_body_error, non_grpc_answer, render, upstream_error_response};

/// Serves one request. Never fails: every error is a response.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    conn: Arc<ConnInfo>,
    mut req: Box<Request<Incoming>>,
) -> Result<Response<ResponseBody>, Infallible> {
    let mut ctx = RequestCtx {
        start: Instant::now(),
        time: SystemTime::now(),
        id: request_id(req.headers()),
        client: conn.client_addr(&shared.trusted_proxies, req.headers()),
        conn,
        bytes_in: (!req.body().is_end_stream()).then(Arc::default),
        call: Call::of(req.headers()),
        trace: None,
    };
    let host_value = request_host(&req);
    // Taken before the path is normalised: the log keeps the URI as sent.
    let log = LogFields::new(&shared, &req, &host_value);
    if let Some(mut rsp) = refuse_head_or_path(&shared, &mut req, &ctx) {
        finish(&shared, ctx, log, None, NO_ROUTE.into(), None, &mut rsp);
        return Ok(rsp);
    }
    // One load per request; the table lives as long as this request needs it.
    let table = shared.table.load_full();
    let host = host_value.to_str().unwrap_or("");
    let head = RequestHead {
        host,
        path: req.uri().path(),
        query: req.uri().query(),
        method: req.method(),
        headers: req.headers(),
    };
    let Some(routed) = table.lookup_on(ctx.conn.listener, &head) else {
        let mut rsp = unmatched(&table, &req, &ctx).await;
        finish(&shared, ctx, log, None, NO_ROUTE.into(), None, &mut rsp);
        return Ok(rsp);
    };
    if let Some(mut rsp) = refuse_route_parameters(&shared, &table, &head, &routed, &ctx) {
        finish(&shared, ctx, log, None, NO_ROUTE.into(), None, &mut rsp);
        return Ok(rsp);
    }
    let route_id = Arc::clone(&routed.runtime.route_id);
    let stats = Arc::clone(&routed.runtime.stats);
    // One branch for rules that do not trace.
    if let Some(trace) = routed.runtime.chain.trace() {
        ctx.trace = Some(Box::new(trace.start(&SpanHead {
            method: req.method(),
            path: req.uri().path(),
            scheme: ctx.conn.scheme.as_str(),
            host,
            headers: req.headers(),
            client: ctx.client.ip,
            peer: ctx.conn.client,
            route: &route_id,
            start: ctx.time,
        })));
    }
    // The rule's filters around its action: the request side may answer
    // in its place; the response side runs on every answer.
    let chain = &routed.runtime.chain;
    let (mut passed, answer) = request_filters(chain, &req, host, &ctx).await;
    // What external auth allowed with (its headers) goes upstream.
    passed.admitted(req.headers_mut());
    let mirrors = passed.take_mirrors();
    let (mut rsp, upstream) = act(answer, &routed, req, &host_value, host, &ctx, mirrors).await;
    // An error page first (boxed, so requests without one do not carry the
    // error backend's exchange in their future).
    if chain.intercepts(&passed, &rsp, &ctx) {
        rsp = Box::pin(chain.error_page(&passed, rsp, &ctx)).await;
    }
    // The answer is edited in place from here on: each move of it by value
    // (into a phase and back out) is a copy of a few hundred bytes.
    response_filters(chain, &mut passed, &mut rsp, &ctx);
    finish(&shared, ctx, log, Some(stats), route_id, upstream, &mut rsp);
    Ok(rsp)
}

/// The request head's rules and the path's normalisation, before routing:
/// the answer to a refused request.
fn refuse_head_or_path(
    shared: &Shared,
    req: &mut Request<Incoming>,
    ctx: &RequestCtx,
) -> Option<Response<ResponseBody>> {
    if let Err(e) = head::check(req, &shared.listener.head) {
        count_rejection(shared, e.rejection(), &e);
        let mut rsp = ctx.error(e.status());
        if e.closes_connection() {
            rsp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        return Some(rsp);
    }
    if let Err(e) = normalize_path(req, shared.listener.path) {
        count_rejection(shared, Rejection::Path, &e);
        return Some(ctx.error(StatusCode::BAD_REQUEST));
    }
    None
}

/// The 404 of a request no route matches, rendered by
/// `--default-backend-service` for HTTP callers on the main listeners (a
/// Gateway port's misses are plain: the default backend is Ingress's).
async fn unmatched(
    table: &RouteTable,
    req: &Request<Incoming>,
    ctx: &RequestCtx,
) -> Response<ResponseBody> {
    let rsp = ctx.error(StatusCode::NOT_FOUND);
    match table.default_backend() {
        Some(pages) if matches!(ctx.call, Call::Http) && ctx.conn.listener == Listener::Main => {
            let asker = crate::filter::error_pages::Asker {
                id: &ctx.id,
                client: ctx.client.ip,
            };
            let req = crate::filter::error_pages::ErrorRequest::of(req);
            Box::pin(pages.render(&req, asker, rsp)).await
        }
        _ => rsp,
    }
}

/// The answer to a path whose `;` parameters would route it elsewhere
/// (see [`check_parameters`]).
fn refuse_route_parameters(
    shared: &Shared,
    table: &RouteTable,
    head: &RequestHead<'_>,
    routed: &Routed<'_>,
    ctx: &RequestCtx,
) -> Option<Response<ResponseBody>> {
    let policy = shared.listener.path;
    if policy.normalization != PathNormalization::None
        && let Err(e) = check_parameters(table, ctx.conn.listener, head, routed, policy)
    {
        count_rejection(shared, Rejection::PathParameters, &e);
        return Some(ctx.error(StatusCode::BAD_REQUEST));
    }
    None
}

// === phase: filters and action ===

/// The chain's request side, in order: what it leaves for the response
/// side, and the answer of the filter that stood in for the action.
async fn request_filters(
    chain: &Chain,
    req: &Request<Incoming>,
    host: &str,
    ctx: &RequestCtx,
) -> (Passed, Option<Answer>) {
    let (mut passed, mut flow) = chain.request(req, host, ctx);
    // Only a filter that must wait (a password hash) makes the chain await.
    loop {
        match flow {
            Flow::Done(answer) => return (passed, answer),
            Flow::Pending(p) => {
                let (at, answer) = p.wait().await;
                flow = chain.resume(at, answer, &mut passed, req, host, ctx);
            }
        }
    }
}

/// The rule's action, unless a filter answered: redirect, forward or deny.
/// Only a forwarded request is mirrored (`mirrors`: the chain's mirrors
/// that sampled it).
async fn act(
    answer: Option<Answer>,
    routed: &Routed<'_>,
    req: Box<Request<Incoming>>,
    host_value: &HeaderValue,
    host: &str,
    ctx: &RequestCtx,
    mirrors: Vec<usize>,
) -> (Response<ResponseBody>, Option<SocketAddr>) {
    match (answer, &routed.rule.action) {
        (Some(a), _) => (render(a, ctx), None),
        (None, Action::Redirect(r)) => (render(redirect(r, routed, &req, host, ctx), ctx), None),
        (None, Action::Forward(_)) => forward(routed, req, host_value, ctx, mirrors).await,
        (None, Action::Deny { .. }) => (ctx.error(StatusCode::SERVICE_UNAVAILABLE), None),
    }
}

/// The chain's response side on every answer (after its error page, if
/// any): the filters in reverse.
fn response_filters(
    chain: &Chain,
    passed: &mut Passed,
    rsp: &mut Response<ResponseBody>,
    ctx: &RequestCtx,
) {
    chain.response(passed, &ctx.conn, rsp.headers_mut());
    // Connection-limit places are held until the body ends.
    let held = passed.take_held();
    if !held.is_empty() {
        rsp.body_mut().hold(held);
    }
    if let Some(t) = chain.throttle() {
        rsp.body_mut().throttle(t);
    }
}

// === phase: request head and path ===

/// Counts a request refused before routing and logs why: at warn for the
/// first of its reason and then at each power of two, so that a flood
/// writes a handful of lines; at debug otherwise.
pub(crate) fn count_rejection(shared: &Shared, reason: Rejection, error: &dyn std::fmt::Display) {
    let count = shared.metrics.request_rejected(reason).saturating_add(1);
    if count.is_power_of_two() {
        warn!(reason = reason.as_str(), count, error = %error, "request refused");
    } else {
        debug!(reason = reason.as_str(), error = %error, "request refused");
    }
}

/// Replaces the request's path with its normalised form, which routing,
/// rewrites, redirects and the upstream all see. The query is left as sent.
fn normalize_path(req: &mut Request<Incoming>, policy: PathPolicy) -> Result<(), PathError> {
    let mut path_and_query = match path::normalize(req.uri().path(), policy)? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(p) => p,
    };
    if let Some(q) = req.uri().query() {
        path_and_query.push('?');
        path_and_query.push_str(q);
    }
    let mut parts = req.uri().clone().into_parts();
    // The normalised path holds only characters the URI parser accepted
    // and escapes, so neither step fails; if one did, the path is refused.
    parts.path_and_query =
        Some(PathAndQuery::try_from(path_and_query).map_err(|_| PathError::InvalidEscape)?);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| PathError::InvalidEscape)?;
    Ok(())
}

/// Refuses a path that routes to another rule without its `;` parameters,
/// as Tomcat and Spring read it (`/admin;x` is their `/admin`). Only a
/// path with a `;` pays for the second lookup.
fn check_parameters(
    table: &RouteTable,
    listener: Listener,
    head: &RequestHead<'_>,
    routed: &Routed<'_>,
    policy: PathPolicy,
) -> Result<(), PathError> {
    let Some(bare) = path::without_parameters(head.path) else {
        return Ok(());
    };
    let bare = path::normalize(&bare, policy)?;
    let same = table
        .lookup_on(
            listener,
            &RequestHead {
                path: &bare,
                ..*head
            },
        )
        .is_some_and(|other| std::ptr::eq(other.rule, routed.rule));
    if same {
        Ok(())
    } else {
        Err(PathError::ParametersChangeRoute)
    }
}

// === phase: redirect ===

fn redirect(
    r: &Redirect,
    routed: &Routed<'_>,
    req: &Request<Incoming>,
    host: &str,
    ctx: &RequestCtx,
) -> Answer {
    let scheme = r.scheme.unwrap_or(ctx.conn.scheme);
    let (req_host, req_port) = split_host_port(host);
    let target_host = r.hostname.as_deref().unwrap_or(req_host);
    // Gateway API: an explicit scheme implies its well-known port; otherwise
    // keep the port the client used.
    let port = r
        .port
        .or(if r.scheme.is_some() { None } else { req_port })
        .filter(|p| *p != scheme.default_port());
    let path_and_query = match &r.path {
        Some(m) => modified_path_and_query(m, routed, req.uri()),
        None => req
            .uri()
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
    };
    Answer::Redirect {
        status: r.status.code(),
        location: location(scheme, target_host, port, &path_and_query),
    }
}

// === phase: forward ===

/// What a forwarded call is, decided before it leaves and read again when
/// its answer comes back.
struct Exchange<'r> {
    /// A gRPC-Web call the rule bridges to gRPC: its content type, and
    /// whether the answer goes back as text.
    bridge: Option<(&'r WebContentType, bool)>,
    /// gRPC proper, or a bridged gRPC-Web call.
    grpc_call: bool,
    /// The client's gRPC deadline, which bounds the whole call.
    grpc_timeout: Option<Duration>,
    /// The answer may start (or re-point) a sticky session.
    starts_sessions: bool,
    /// Only gRPC calls share a failure slot between their two bodies;
    /// plain HTTP allocates nothing for it.
    failure: Option<CallFailure>,
    /// Upgrades (WebSocket) only exist client-h1 to upstream-h1.
    upgrade: bool,
    /// The client speaks HTTP/1: an unsent body is drained before the
    /// answer.
    client_h1: bool,
    /// The rule's mirrors that sampled the request (empty, without
    /// allocating, on rules without one).
    mirrors: Vec<usize>,
    /// The forwarding headers and request id, when they travel beside the
    /// request rather than in its header map ([`ForwardingFields`]).
    fields: Option<ForwardingFields<'r>>,
}

/// Forwards the request to the rule's backends: pick a backend, build the
/// upstream request, call it (with retries), shape the answer.
async fn forward(
    routed: &Routed<'_>,
    mut req: Box<Request<Incoming>>,
    host: &HeaderValue,
    ctx: &RequestCtx,
    mirrors: Vec<usize>,
) -> (Response<ResponseBody>, Option<SocketAddr>) {
    let rule = routed.rule;
    let Action::Forward(fwd) = &rule.action else {
        return (ctx.error(StatusCode::INTERNAL_SERVER_ERROR), None);
    };
    // A gRPC-Web call on a bridging rule becomes a gRPC call upstream; on
    // another rule it goes as it is, to a backend that speaks gRPC-Web.
    let bridge = match &ctx.call {
        Call::Web {
            content_type,
            text_out,
        } if routed.runtime.bridges_grpc_web => Some((content_type, *text_out)),
        _ => None,
    };
    if bridge.is_some() && req.method() != Method::POST {
        let rsp = ctx.grpc_status(
            Code::Unimplemented,
            "gRPC-Web calls must use POST",
            StatusCode::METHOD_NOT_ALLOWED,
        );
        return (rsp, None);
    }
    let (backend, starts_sessions) = match pick_backend(routed, &req) {
        Ok(picked) => picked,
        Err(PickError::Unresolved) => return (unresolved(ctx), None),
        Err(PickError::NoBackend | PickError::NoEndpoints) => {
            return (ctx.error(StatusCode::SERVICE_UNAVAILABLE), None);
        }
    };
    let key = backend.balancer.request_key(&RequestView {
        client: ctx.client_addr().ip,
        uri: req.uri(),
        host: host.to_str().unwrap_or(""),
        headers: req.headers(),
    });
    let protocol = backend.protocol;
    if bridge.is_some() && protocol == Protocol::Http1 {
        // The controller never builds this; a hand-written table might.
        let rsp = ctx.grpc_status(
            Code::Unavailable,
            "portico: the backend of a gRPC-Web route must speak HTTP/2",
            StatusCode::OK,
        );
        return (rsp, None);
    }

    let upgrade = req.version() == Version::HTTP_11
        && protocol == Protocol::Http1
        && is_upgrade(req.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut *req));
    let mut exchange = Exchange {
        bridge,
        grpc_call: bridge.is_some() || matches!(ctx.call, Call::Grpc),
        grpc_timeout: None,
        starts_sessions,
        failure: None,
        upgrade,
        client_h1: req.version() < Version::HTTP_2,
        mirrors,
        fields: None,
    };
    let backend_edits = backend.filters.edits_request();
    // The forwarding headers travel beside the request to the HTTP/1.1
    // encoder when nothing on the way reads or edits them: no filter edits
    // request headers, no mirror copies the head, the peer is not trusted
    // (its headers are appended to or kept) and the client sent none of
    // their names (which are to be replaced).
    let carried = protocol == Protocol::Http1
        && !upgrade
        && !ctx.conn.trusted
        && exchange.mirrors.is_empty()
        && !backend_edits
        && !routed.runtime.chain.edits_request_headers()
        && !names_forwarding(req.headers());
    exchange.fields = carried.then(|| own_fields(ctx, host));
    let upstream_req = match upstream_request(routed, fwd, req, host, ctx, protocol, &mut exchange)
    {
        Ok(mut r) => {
            // Gateway API: route filters, then the backendRef's.
            if backend_edits {
                backend.filters.upstream_request(r.headers_mut());
            }
            r
        }
        Err(status) => return (ctx.error(status), None),
    };
    let timeouts = rule.timeouts;
    let sent = match call_upstream(backend, &key, upstream_req, fwd, timeouts, &exchange, ctx).await
    {
        Ok(sent) => sent,
        Err(answer) => return answer,
    };
    let (mut rsp, addr) = shape_response(sent, client_upgrade, exchange, timeouts, ctx);
    // The backend's own edits come before the rule's response side.
    if !backend.filters.is_empty() {
        backend.filters.response(rsp.headers_mut());
    }
    (rsp, addr)
}

/// The backend set (mainline or canary) and, by its weighted split, the
/// backend; whether its answer may start a sticky session.
fn pick_backend<'t>(
    routed: &Routed<'t>,
    req: &Request<Incoming>,
) -> Result<(&'t BackendRuntime, bool), PickError> {
    let (backends, starts_sessions) = match &routed.runtime.canary {
        Some(canary) => {
            let chosen = canary.choose(req.headers(), &routed.runtime.backends);
            (chosen.backends, chosen.starts_sessions)
        }
        None => (&routed.runtime.backends, true),
    };
    // The weighted split picks the backend; its balancer the endpoint.
    let b = backends.pick_backend()?;
    Ok((b, starts_sessions))
}

/// The answer for a request the split sent to a backend whose reference
/// could not be resolved: 500, as the Gateway API asks of HTTPRoute; a gRPC
/// caller gets `UNAVAILABLE`, as it asks of GRPCRoute (the mapping of 500
/// would say `UNKNOWN`).
fn unresolved(ctx: &RequestCtx) -> Response<ResponseBody> {
    match ctx.call {
        Call::Http => ctx.error(StatusCode::INTERNAL_SERVER_ERROR),
        Call::Grpc | Call::Web { .. } => ctx.grpc_status(
            Code::Unavailable,
            "portico: the backend could not be resolved",
            StatusCode::OK,
        ),
    }
}

/// The request as it goes upstream: rewritten target, forwarding and
/// filter headers, the upstream protocol's form, the body under the
/// rule's limits. Also notes the call's gRPC deadline and failure slot,
/// and starts the copies of the `mirrors` that sampled the request.
fn upstream_request(
    routed: &Routed<'_>,
    fwd: &Forward,
    req: Box<Request<Incoming>>,
    host: &HeaderValue,
    ctx: &RequestCtx,
    protocol: Protocol,
    exchange: &mut Exchange<'_>,
) -> Result<UpstreamRequest, StatusCode> {
    let rule = routed.rule;
    let (path_and_query, host_value) = upstream_target(routed, fwd, &req, host)?;
    let (mut parts, body) = (*req).into_parts();
    set_upstream_headers(&mut parts.headers, routed, host, ctx, exchange);
    // Copies leave with the head as the original does, before its
    // protocol's form and rewrite; nothing to do on rules without mirrors.
    // An upgrade (WebSocket) is not copied: a copy cannot hold a tunnel,
    // and nginx's mirror subrequests do not upgrade either.
    let tee = (!exchange.mirrors.is_empty() && !exchange.upgrade)
        .then(|| {
            let chain = &routed.runtime.chain;
            chain.start_mirrors(&exchange.mirrors, &parts, host, &body)
        })
        .flatten();
    parts.uri = match protocol {
        Protocol::Http1 => {
            parts.version = Version::HTTP_11;
            parts.headers.insert(header::HOST, host_value);
            Uri::from(path_and_query)
        }
        Protocol::H2c => {
            // HTTP/2 carries the host as :authority, never as a Host header.
            parts.version = Version::HTTP_2;
            parts.headers.remove(header::HOST);
            let authority = Authority::try_from(host_value.to_str().unwrap_or("").as_bytes())
                .map_err(|_| StatusCode::BAD_REQUEST)?;
            Uri::builder()
                .scheme(if fwd.upstream_tls.is_some() {
                    "https"
                } else {
                    "http"
                })
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
                .map_err(|_| StatusCode::BAD_REQUEST)?
        }
    };
    let mut body = RequestBody::new(
        body,
        routed.runtime.chain.body_limit(),
        rule.timeouts.send,
        ctx.bytes_in.clone(),
    );
    if let Some(tee) = tee {
        body = body.tee(tee);
    }
    exchange.failure = exchange.grpc_call.then(CallFailure::default);
    if let Some(f) = &exchange.failure {
        let text_in = exchange.bridge.is_some_and(|(ct, _)| ct.text);
        body = body.grpc(GrpcRequest::new(rule.grpc.max_message, text_in, f.clone()));
    }
    // A gRPC client's deadline bounds the whole call, streams included.
    exchange.grpc_timeout = exchange
        .grpc_call
        .then(|| parts.headers.get(&grpc::GRPC_TIMEOUT))
        .flatten()
        .and_then(grpc::parse_timeout);
    Ok(Box::new(Request::from_parts(parts, body)))
}

/// The upstream path and query (the rule's rewrite applied) and host.
fn upstream_target(
    routed: &Routed<'_>,
    fwd: &Forward,
    req: &Request<Incoming>,
    host: &HeaderValue,
) -> Result<(PathAndQuery, HeaderValue), StatusCode> {
    let rewrite = fwd.rewrite.as_ref();
    let path_and_query = match rewrite.and_then(|r| r.path.as_ref()) {
        Some(m) => PathAndQuery::try_from(modified_path_and_query(m, routed, req.uri()))
            .map_err(|_| StatusCode::BAD_REQUEST)?,
        None => req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/")),
    };
    let host_value = match rewrite.and_then(|r| r.hostname.as_deref()) {
        Some(h) => HeaderValue::from_str(h).map_err(|_| StatusCode::BAD_REQUEST)?,
        None => host.clone(),
    };
    Ok((path_and_query, host_value))
}

/// The request headers as they leave: hop-by-hop ones dropped, the
/// forwarding headers, client-certificate facts and request id set, the
/// filters' edits made, and gRPC's own for a bridged call.
fn set_upstream_headers(
    headers: &mut HeaderMap,
    routed: &Routed<'_>,
    host: &HeaderValue,
    ctx: &RequestCtx,
    exchange: &Exchange<'_>,
) {
    // First: a `Connection` header may name one the proxy adds.
    strip_hop_by_hop(headers, exchange.upgrade);
    // Into the map, unless they go beside the request to the encoder.
    if exchange.fields.is_none() {
        // Room for all at once, rather than the map growing (and
        // reindexing) on the way.
        headers.reserve(ADDED_REQUEST_HEADERS);
        add_forwarded_headers(headers, ctx, host);
    }
    set_client_cert_headers(headers, ctx, routed.runtime.chain.client_cert());
    routed.runtime.chain.upstream_request(headers);
    if let Some(trace) = &ctx.trace {
        trace.inject(headers);
    }
    if let Some((content_type, _)) = exchange.bridge {
        // gRPC proper toward the backend: its content type, no length (a
        // text body shrinks when decoded), and `te: trailers`, which gRPC
        // servers may insist on.
        headers.insert(header::CONTENT_TYPE, content_type.upstream());
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// Sends the request to an endpoint of `backend`, retried elsewhere per
/// the rule's policy (upgrades are sent once); a failure is answered here.
async fn call_upstream(
    backend: &BackendRuntime,
    key: &RequestKey,
    upstream_req: UpstreamRequest,
    fwd: &Forward,
    timeouts: Timeouts,
    exchange: &Exchange<'_>,
    ctx: &RequestCtx,
) -> Result<Sent, (Response<ResponseBody>, Option<SocketAddr>)> {
    let wait = match exchange.grpc_timeout {
        Some(deadline) => deadline,
        None => timeouts
            .request
            .map_or(timeouts.read, |total| total.min(timeouts.read)),
    };
    let sent = retry::send(
        backend,
        key,
        upstream_req,
        &fwd.retry,
        !exchange.upgrade,
        retry::Timing {
            start: ctx.start,
            wait,
            connect: timeouts.connect,
        },
        retry::Along {
            trace: ctx.trace.as_deref(),
            fields: exchange.fields.as_ref(),
        },
    )
    .await;
    match sent {
        Ok(sent) => Ok(sent),
        Err(Failed::NoEndpoint) => Err((ctx.error(StatusCode::SERVICE_UNAVAILABLE), None)),
        Err(Failed::Timeout { addr }) => Err((ctx.error(StatusCode::GATEWAY_TIMEOUT), Some(addr))),
        Err(Failed::Upstream {
            error,
            addr,
            unsent,
        }) => {
            // An HTTP/2 upstream sees only a reset when the proxy cuts the
            // request stream; the reason is in `failure`.
            let mut rsp = match exchange.failure.as_ref().and_then(CallFailure::get) {
                Some(cut) => grpc_body_error(cut, ctx),
                None => upstream_error_response(&error, ctx),
            };
            if let Some(unsent) = unsent.filter(|_| exchange.client_h1)
                && !Box::pin(discard(unsent.into_body())).await
            {
                rsp.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Err((rsp, Some(addr)))
        }
    }
}

/// The upstream's answer as the client gets it: a tunnel for an upgrade,
/// hop-by-hop headers dropped, a session cookie, the body under the
/// rule's timeouts or the gRPC call's deadline (re-encoded for a bridged
/// gRPC-Web call).
fn shape_response(
    sent: Sent,
    client_upgrade: Option<hyper::upgrade::OnUpgrade>,
    exchange: Exchange<'_>,
    timeouts: Timeouts,
    ctx: &RequestCtx,
) -> (Response<ResponseBody>, Option<SocketAddr>) {
    let Sent {
        mut rsp,
        recycle,
        addr: upstream_addr,
        in_flight,
        set_cookie,
    } = sent;

    if rsp.status() == StatusCode::SWITCHING_PROTOCOLS {
        return match client_upgrade {
            Some(client) => {
                let upstream = hyper::upgrade::on(&mut rsp);
                // The upgraded connection is never pooled again; its handle
                // lives as long as the tunnel so hyper hands the IO over.
                tokio::spawn(tunnel(client, upstream, upstream_addr, recycle));
                let (mut parts, _) = rsp.into_parts();
                strip_hop_by_hop(&mut parts.headers, true);
                (
                    Response::from_parts(parts, ResponseBody::empty()),
                    Some(upstream_addr),
                )
            }
            // 101 without an upgrade request is a protocol violation.
            None => (ctx.error(StatusCode::BAD_GATEWAY), Some(upstream_addr)),
        };
    }

    let (mut parts, body) = rsp.into_parts();
    strip_hop_by_hop(&mut parts.headers, false);
    parts.version = Version::HTTP_11;
    if let Some(cookie) = set_cookie.filter(|_| exchange.starts_sessions) {
        parts.headers.append(header::SET_COOKIE, cookie);
    }
    let body = if exchange.grpc_call {
        if !grpc::is_grpc(&parts.headers) {
            // Not a gRPC answer (an HTML error page, a 503 from a sidecar):
            // the client can only understand a status.
            return (non_grpc_answer(parts.status, ctx), Some(upstream_addr));
        }
        let deadline = exchange.grpc_timeout.and_then(|t| ctx.start.checked_add(t));
        let web = match exchange.bridge {
            None => None,
            Some((content_type, text_out)) => {
                parts
                    .headers
                    .insert(header::CONTENT_TYPE, content_type.response(text_out));
                parts.headers.remove(header::CONTENT_LENGTH);
                if parts.headers.contains_key(&grpc::GRPC_STATUS) && body.is_end_stream() {
                    // Trailers-only: the status is already in the headers;
                    // the body stays empty, with no trailer frame.
                    return (
                        Response::from_parts(parts, ResponseBody::empty()),
                        Some(upstream_addr),
                    );
                }
                Some(WebEncoder::new(text_out))
            }
        };
        ResponseBody::upstream_grpc(body, deadline, recycle)
            .grpc_call(exchange.failure.unwrap_or_default(), web)
    } else {
        // The request timeout bounds the whole exchange (Gateway API): once
        // the head is in, what is left of it bounds the body.
        let until = timeouts.request.and_then(|t| ctx.start.checked_add(t));
        ResponseBody::upstream(body, timeouts.read, until, recycle)
    };
    let body = body.holding(in_flight);
    (Response::from_parts(parts, body), Some(upstream_addr))
}

/// At most this much of an unsent request's body is read and dropped before
/// the proxy answers, within [`DISCARD_TIME`].
const DISCARD_BYTES: usize = 1 << 20;
const DISCARD_TIME: Duration = Duration::from_secs(1);

/// Reads and drops the rest of a request body the upstream never got;
/// whether it ended within the bounds. hyper keeps an HTTP/1.1 connection
/// only when the request body was read to its end, and closes it with an
/// unread body behind the answer: the kernel then resets the connection,
/// and a client still writing its body (connect-node's gRPC-Web transport
/// sends it after the head) sees EPIPE or ECONNRESET instead of the answer.
/// nginx likewise discards the body before its own error pages. When the
/// body does not end in time the answer says `Connection: close`, so the
/// client does not reuse a connection that is about to close.
async fn discard(mut body: RequestBody) -> bool {
    let read = async {
        let mut left = DISCARD_BYTES;
        while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { return false };
            if let Some(data) = frame.data_ref() {
                let Some(rest) = left.checked_sub(data.len()) else {
                    return false;
                };
                left = rest;
            }
        }
        true
    };
    tokio::time::timeout(DISCARD_TIME, read)
        .await
        .unwrap_or(false)
}

async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    addr: SocketAddr,
    _conn: Option<Box<crate::upstream::Recycle>>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            debug!(upstream.addr = %addr, error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        debug!(upstream.addr = %addr, error = %e, "tunnel ended");
    }
}

// === phase: respond ===

/// Fields of the access-log line taken from the request before it is
/// consumed; empty when the access log is off.
struct LogFields {
    method: Method,
    host: HeaderValue,
    uri: Uri,
}

impl LogFields {
    /// Shared handles, not copies: the line is formatted once, when the
    /// response ends.
    fn new(shared: &Shared, req: &Request<Incoming>, host: &HeaderValue) -> Option<Self> {
        shared.access_log.is_enabled().then(|| Self {
            method: req.method().clone(),
            host: host.clone(),
            uri: req.uri().clone(),
        })
    }
}

/// Attaches the completion hook: counts, times and logs the request when
/// its response body ends (or the client goes away).
fn finish(
    shared: &Arc<Shared>,
    ctx: RequestCtx,
    log: Option<LogFields>,
    stats: Option<Arc<RouteStats>>,
    route: Arc<str>,
    upstream: Option<SocketAddr>,
    rsp: &mut Response<ResponseBody>,
) {
    let status = rsp.status();
    let shared = Arc::clone(shared);
    // A trailers-only answer carries the status in its headers.
    let header_status = grpc::status_of(rsp.headers());
    rsp.body_mut().on_done(Box::new(move |done: Done| {
        let bytes_out = done.bytes;
        let elapsed = ctx.start.elapsed();
        let grpc_code = ctx
            .call
            .protocol()
            .map(|protocol| (protocol, header_status.or(done.grpc_status)));
        if let Some((protocol, code)) = grpc_code {
            shared.metrics.grpc_call(protocol, code);
        }
        if let Some(trace) = ctx.trace {
            trace.end(status, grpc_code.and_then(|(_, code)| code), upstream);
        }
        match &stats {
            Some(s) => s.record(status, elapsed),
            None => shared.no_route_stats.record(status, elapsed),
        }
        if let Some(log) = log {
            shared.access_log.log(&AccessRecord {
                time: ctx.time,
                request_id: ctx.id,
                client_addr: ctx.client,
                method: log.method,
                host: log.host,
                uri: log.uri,
                status: status.as_u16(),
                bytes_in: ctx.bytes_in.map_or(0, |b| b.load(Ordering::Relaxed)),
                bytes_out,
                duration: elapsed,
                upstream_addr: upstream,
                route,
            });
        }
    }));
}

// === helpers ===

/// The host a request is for: `:authority` (HTTP/2, absolute-form) first,
/// then `Host`.
fn request_host(req: &Request<Incoming>) -> HeaderValue {
    if let Some(a) = req.uri().authority() {
        return HeaderValue::from_str(a.as_str()).unwrap_or(HeaderValue::from_static(""));
    }
    req.headers()
        .get(header::HOST)
        .cloned()
        .unwrap_or(HeaderValue::from_static(""))
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
}

/// The rewritten path with the request's query. A modifier whose result has
/// its own `?query` (an ingress-nginx rewrite target) keeps the request's
/// arguments after those, as nginx does.
fn modified_path_and_query(m: &PathModifier, routed: &Routed<'_>, uri: &Uri) -> String {
    let mut path = modify_path(m, routed, uri.path());
    if let Some(q) = uri.query() {
        path.push(if path.contains('?') { '&' } else { '?' });
        path.push_str(q);
    }
    path
}

/// Applies a path modifier. `ReplacePrefixMatch` replaces the part matched by
/// the rule's prefix, by segment; with other match kinds it replaces the
/// whole path.
fn modify_path(m: &PathModifier, routed: &Routed<'_>, path: &str) -> String {
    match m {
        PathModifier::ReplaceFullPath(p) => p.clone(),
        PathModifier::RegexReplace { replacement, .. } => {
            // The table compiled the pattern; without it, leave the path.
            let Some(caps) = routed
                .runtime
                .rewrite_regex
                .as_ref()
                .and_then(|re| re.captures(path))
            else {
                return path.to_owned();
            };
            let mut out = String::with_capacity(path.len());
            for piece in replacement {
                match piece {
                    Substitution::Literal(s) => out.push_str(s),
                    Substitution::Capture(n) => {
                        out.push_str(caps.get(usize::from(*n)).map_or("", |m| m.as_str()));
                    }
                }
            }
            if !out.starts_with('/') {
                out.insert(0, '/');
            }
            out
        }
        PathModifier::ReplacePrefixMatch(replacement) => {
            let prefix = match routed.matched.map(|m| &m.path) {
                Some(PathMatch::Prefix(p)) => p.as_str(),
                None => "/",
                Some(PathMatch::Exact(_) | PathMatch::RegularExpression(_)) => {
                    return replacement.clone();
                }
            };
            replace_prefix_match(path, prefix, replacement)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upgrade_keeps_connection_upgrade() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, Upgrade"),
        );
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h["connection"], "upgrade");
        assert_eq!(h["upgrade"], "websocket");
    }
}
