//! HTTPRoute (portico.dev/v1alpha1) semantics, as Gateway API documents them.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use kube::ResourceExt;
use portico_crds::{
    AffinityModeSpec, BackendPolicy, FilterType, GlobalRateLimitPolicy, HTTPCORSFilter, HTTPHeader,
    HTTPHeaderFilter, HTTPMethod, HTTPPathModifier, HTTPRoute, HTTPRouteFilter, HTTPRoutePolicies,
    HTTPRouteRule, LoadBalancingAlgorithm, PathMatchType, PathModifierType, RateLimitKey,
    RateLimitKeyType, RateLimitPolicy, RedirectScheme, SameSiteSpec, StringMatchType,
};
use portico_dataplane::external_auth::Template;
use portico_dataplane::model::{
    Action, AffinityMode, Backend, Balance, ClaimHeader, CookieAffinity, Cors, EndpointPolicy,
    ExternalAuth, ExternalAuthCache, Filter, Forward, GlobalRateLimit, GrpcOptions, GrpcWeb,
    HashKey, HashVar, HeaderMatch, HeaderModifier, HealthCheck, Hostname, InvalidField, JwksSource,
    Jwt, JwtProvider, LimitKey, Mirror, MirrorFraction, OriginHost, OriginPattern,
    OutlierDetection, PathMatch, PathModifier, Probe, Protocol, QueryMatch, Redirect,
    RedirectStatus, Route, RouteMatch, Rule, SameSite, Scheme, SourceRef, StatusRange, Timeouts,
    TokenSource, UrlRewrite, ValueMatch, user_settable,
};

use super::backends::{self, PortRef};
use super::{
    ObjectReport, Settings, TlsBinding, Translation, check_regex, created_secs, header_filters,
};
use crate::diagnostics::{Diagnostic, Kind, ObjectRef};
use crate::snapshot::Snapshot;

/// What the last translation of `portico.dev` HTTPRoutes keeps for the
/// next ([`super::translate_reusing`]): each route's part (its `Route`,
/// shared by `Arc` with the table, its TLS binding and its report), by the
/// object, taken again while the object is the same `Arc` and nothing
/// else it read changed: the Services it looked up and their
/// EndpointSlices, Secrets (JWKS), ExternalNames
/// ([`Snapshot::http_route_inputs`]) and the settings.
#[derive(Default)]
pub struct Memo(super::kept::Kept<(std::sync::Arc<HTTPRoute>, Part)>);

impl Memo {
    /// How many routes the last translation took from the memo.
    pub fn reused(&self) -> usize {
        self.0.reused()
    }
}

/// What one route adds to a translation.
#[derive(Clone)]
struct Part {
    obj: ObjectRef,
    route: Option<std::sync::Arc<Route>>,
    tls: Option<TlsBinding>,
    report: ObjectReport,
}

pub(super) fn translate_all(
    snap: &Snapshot,
    settings: &Settings,
    out: &mut Translation,
    mut memo: Option<&mut Memo>,
) {
    if let Some(m) = memo.as_deref_mut() {
        m.0.start(snap.http_route_inputs(), format!("{settings:?}"));
    }
    for route in &snap.http_routes {
        let part = match memo.as_deref_mut() {
            None => route_part(snap, settings, route),
            Some(m) => {
                // The object is held beside its part, so its address
                // names it while it is kept.
                let address = std::sync::Arc::as_ptr(route) as usize;
                match m.0.take(address) {
                    Some((_, part)) => part.clone(),
                    None => {
                        let (part, services) =
                            backends::recording(|| route_part(snap, settings, route));
                        let kept = (std::sync::Arc::clone(route), part.clone());
                        m.0.insert(address, kept, services);
                        part
                    }
                }
            }
        };
        out.config.routes.extend(part.route);
        out.tls.extend(part.tls);
        out.reports.insert(part.obj, part.report);
    }
    if let Some(m) = memo {
        m.0.sweep();
    }
}

/// Translates one route.
fn route_part(snap: &Snapshot, settings: &Settings, route: &HTTPRoute) -> Part {
    let namespace = route.namespace().unwrap_or_default();
    let obj = ObjectRef {
        kind: Kind::HttpRoute,
        namespace: namespace.clone(),
        name: route.name_any(),
    };
    let mut report = ObjectReport {
        generation: route.metadata.generation,
        uid: route.metadata.uid.clone(),
        ..Default::default()
    };
    let tls = route.spec.policies.as_ref().and_then(|p| p.tls.as_ref());
    let mut shared = None;
    if let Some(mut built) = translate_one(snap, route, &namespace, &mut report) {
        let mut limits = route
            .spec
            .policies
            .as_ref()
            .and_then(|p| p.rate_limit.as_ref())
            .map(|p| rate_limit_filters(p, &built.id, settings, &mut report))
            .unwrap_or_default();
        // After the local limits: a client they refuse costs no Redis
        // round trip.
        limits.extend(
            route
                .spec
                .policies
                .as_ref()
                .and_then(|p| p.global_rate_limit.as_ref())
                .and_then(|p| global_rate_limit_filter(p, &built.id, settings, &mut report)),
        );
        // After the rule's CORS in their stage: see `Filter::stage`.
        for rule in &mut built.rules {
            rule.chain.extend(limits.iter().cloned());
        }
        // Gateway API redirects only through explicit RequestRedirect
        // filters; HSTS follows the global setting for its TLS hosts.
        if tls.is_some() && settings.hsts_enabled {
            built.add_to_every_rule(&[Filter::Hsts(settings.hsts)]);
        }
        shared = Some(built.into_shared());
    }
    let tls = tls.map(|tls| TlsBinding {
        hosts: route.spec.hostnames.clone(),
        secret: (namespace.clone(), tls.secret_name.clone()),
        source: obj.clone(),
        field: "spec.policies.tls".into(),
    });
    Part {
        obj,
        route: shared,
        tls,
        report,
    }
}

fn translate_one(
    snap: &Snapshot,
    route: &HTTPRoute,
    namespace: &str,
    report: &mut ObjectReport,
) -> Option<Route> {
    let mut hostnames = Vec::new();
    for (i, h) in route.spec.hostnames.iter().enumerate() {
        // Gateway API: `*.example.com` covers any number of labels.
        let parsed = match h.strip_prefix("*.") {
            Some(suffix) if !suffix.starts_with('*') => match Hostname::parse(suffix) {
                Some(Hostname::Exact(s)) => Some(Hostname::WildcardAnyDepth(s)),
                _ => None,
            },
            Some(_) => None,
            None => Hostname::parse(h).filter(|h| matches!(h, Hostname::Exact(_))),
        };
        match parsed {
            Some(p) => hostnames.push(p),
            None => report.diagnostics.push(Diagnostic::error(
                "InvalidHostname",
                format!("spec.hostnames[{i}]"),
                format!("{h:?} is not a valid host name; it is not served"),
            )),
        }
    }
    if !route.spec.hostnames.is_empty() && hostnames.is_empty() {
        // Serving on every host instead would be worse than nothing.
        return None;
    }
    let (grpc, grpc_web_cors) = grpc_options(route.spec.policies.as_ref(), report);
    // A route whose auth policy cannot be used is not served, rather than
    // served unguarded.
    let external_auth = match external_auth(route.spec.policies.as_ref()) {
        Ok(a) => a.map(|mut a| {
            super::auth::resolve_auth_service(snap, &mut a);
            Box::new(a)
        }),
        Err(d) => {
            report.diagnostics.push(d);
            return None;
        }
    };
    let jwt = match jwt(snap, namespace, route.spec.policies.as_ref()) {
        Ok(j) => j.map(Box::new),
        Err(d) => {
            report.diagnostics.push(d);
            return None;
        }
    };
    let backend_policy = route
        .spec
        .policies
        .as_ref()
        .and_then(|p| p.backends.as_ref());
    let id = format!("httproute/{namespace}/{}", route.name_any());
    let mut rules = Vec::new();
    for (i, rule) in route.spec.rules.iter().enumerate() {
        report.rules_total += 1;
        let field = format!("spec.rules[{i}]");
        let policies = RoutePolicies {
            grpc: &grpc,
            grpc_web_cors: grpc_web_cors.as_ref(),
            backends: backend_policy,
        };
        match translate_rule(snap, rule, &policies, namespace, &field, report) {
            Ok(mut r) => {
                report.rules_served += 1;
                for f in &mut r.chain {
                    if let Filter::Mirror(m) = f {
                        m.route = id.clone();
                    }
                }
                // JWT before external auth: see `Filter::stage`.
                r.chain.extend(jwt.clone().map(Filter::Jwt));
                r.chain
                    .extend(external_auth.clone().map(Filter::ExternalAuth));
                rules.push(r);
            }
            Err(d) => report.diagnostics.push(d),
        }
    }
    if rules.is_empty() {
        return None;
    }
    Some(Route::new(id, hostnames, rules).with_source(SourceRef {
        kind: "HTTPRoute".into(),
        namespace: namespace.to_owned(),
        name: route.name_any(),
        created: created_secs(&route.metadata),
    }))
}

/// `spec.policies.rateLimit` as the limit filters of every rule, keyed by
/// the route (one state per route, as an Ingress's). An invalid value
/// leaves that limit out, with a warning, as an invalid annotation does.
fn rate_limit_filters(
    p: &RateLimitPolicy,
    route_id: &str,
    settings: &Settings,
    report: &mut ObjectReport,
) -> Vec<Filter> {
    const FIELD: &str = "spec.policies.rateLimit";
    let mut warn = unsupported(report);
    let mut positive = |v: Option<i64>, name: &str, max: u32| -> Option<u32> {
        let v = v?;
        match u32::try_from(v) {
            Ok(n) if (1..=max).contains(&n) => Some(n),
            _ => {
                warn(
                    format!("{FIELD}.{name}"),
                    format!("{v} is not between 1 and {max}; that limit is not applied"),
                );
                None
            }
        }
    };
    let rps = positive(p.requests_per_second, "requestsPerSecond", 1_000_000);
    let rpm = positive(p.requests_per_minute, "requestsPerMinute", 60_000_000);
    let concurrent = positive(p.concurrent_requests, "concurrentRequests", 1_000_000);
    let multiplier = positive(p.burst_multiplier, "burstMultiplier", 1000)
        .unwrap_or(crate::annotations::DEFAULT_BURST_MULTIPLIER);
    let Some(key) = limit_key(p.key.as_ref(), FIELD, &mut warn) else {
        return Vec::new();
    };
    let exempt = exempt_ranges(&p.exempt, FIELD, &mut warn);
    super::limit_filters(
        route_id,
        super::LimitRequest {
            rps,
            rpm,
            multiplier,
            concurrent,
            key,
            exempt,
            headers: p.headers.unwrap_or(false),
        },
        settings,
    )
}

/// Reports an `UnsupportedValue` warning (field, message) on `report`.
fn unsupported(report: &mut ObjectReport) -> impl FnMut(String, String) + '_ {
    |field, message| {
        report
            .diagnostics
            .push(Diagnostic::warning("UnsupportedValue", field, message));
    }
}

/// What a limit policy counts by; `None` (reported) when a Header key
/// names no valid header.
fn limit_key(
    key: Option<&RateLimitKey>,
    field: &str,
    warn: &mut impl FnMut(String, String),
) -> Option<LimitKey> {
    let key = match key {
        None => Some(LimitKey::ClientAddress),
        Some(k) => match (k.key_type, k.header.as_deref()) {
            (RateLimitKeyType::ClientAddress, _) => Some(LimitKey::ClientAddress),
            (RateLimitKeyType::Route, _) => Some(LimitKey::Route),
            (RateLimitKeyType::Header, Some(h)) => HeaderName::from_bytes(h.as_bytes())
                .ok()
                .map(LimitKey::Header),
            (RateLimitKeyType::Header, None) => None,
        },
    };
    if key.is_none() {
        warn(
            format!("{field}.key.header"),
            "type Header needs a valid header name; no limit is applied".into(),
        );
    }
    key
}

/// A limit policy's exempt ranges; invalid entries are reported and left
/// out.
fn exempt_ranges(
    list: &[String],
    field: &str,
    warn: &mut impl FnMut(String, String),
) -> Vec<ipnet::IpNet> {
    let mut exempt = Vec::new();
    for (i, e) in list.iter().enumerate() {
        match portico_dataplane::forwarded::parse_range(e) {
            Ok(net) => exempt.push(net),
            Err(err) => warn(
                format!("{field}.exempt[{i}]"),
                format!("{e:?}: {err}; the entry is left out"),
            ),
        }
    }
    exempt
}

/// `policies.globalRateLimit`: one filter, counters per route (its id).
fn global_rate_limit_filter(
    p: &GlobalRateLimitPolicy,
    route_id: &str,
    settings: &Settings,
    report: &mut ObjectReport,
) -> Option<Filter> {
    const FIELD: &str = "spec.policies.globalRateLimit";
    let mut warn = unsupported(report);
    let Some(limit) = u32::try_from(p.requests)
        .ok()
        .filter(|n| (1..=1_000_000_000).contains(n))
    else {
        warn(
            format!("{FIELD}.requests"),
            format!(
                "{} is not between 1 and 1000000000; no limit is applied",
                p.requests
            ),
        );
        return None;
    };
    let window = parse_duration(&p.window)
        .filter(|d| d.subsec_nanos() == 0)
        .and_then(|d| u32::try_from(d.as_secs()).ok())
        .filter(|s| (1..=86_400).contains(s));
    let Some(window_secs) = window else {
        warn(
            format!("{FIELD}.window"),
            format!(
                "{:?} is not a whole number of seconds from 1s to 24h; no limit is applied",
                p.window
            ),
        );
        return None;
    };
    let key = match limit_key(p.key.as_ref(), FIELD, &mut warn)? {
        LimitKey::ClientAddress => HashKey(vec![HashVar::RemoteAddr]),
        LimitKey::Header(name) => HashKey(vec![HashVar::Header(name)]),
        LimitKey::Route => HashKey(vec![]),
    };
    Some(Filter::GlobalRateLimit(GlobalRateLimit {
        id: route_id.to_owned(),
        limit,
        window_secs,
        key,
        exempt: exempt_ranges(&p.exempt, FIELD, &mut warn),
        status: settings.global_limit_status,
    }))
}

/// What `spec.policies` says for every rule of a route.
struct RoutePolicies<'a> {
    grpc: &'a GrpcOptions,
    /// The gRPC-Web bridge's CORS, when it bridges.
    grpc_web_cors: Option<&'a Cors>,
    backends: Option<&'a BackendPolicy>,
}

/// A rule, or the error that keeps the whole rule out. Unresolvable backends
/// do not: the rule is served and answers 503 for them.
fn translate_rule(
    snap: &Snapshot,
    rule: &HTTPRouteRule,
    policies: &RoutePolicies<'_>,
    namespace: &str,
    field: &str,
    report: &mut ObjectReport,
) -> Result<Rule, Diagnostic> {
    let grpc = policies.grpc;
    let backend_policy = policies.backends;
    let parts = rule_parts(rule, field, &mut report.diagnostics)?;
    let mut list = Vec::new();
    if parts.redirect.is_none() {
        for (j, b) in rule.backend_refs.iter().enumerate() {
            let bf = format!("{field}.backendRefs[{j}]");
            let Some(port) = b.port else {
                report.diagnostics.push(Diagnostic::warning(
                    "UnsupportedValue",
                    format!("{bf}.port"),
                    "a port is required for a Service backend; it receives no traffic",
                ));
                continue;
            };
            let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
            // gRPC-Web bridging needs gRPC, so HTTP/2, to the backend;
            // otherwise the Service port's appProtocol says.
            let protocol = if grpc.web.is_some() {
                Protocol::H2c
            } else {
                backends::app_protocol(snap, namespace, &b.name, port)
            };
            match backends::resolve(
                snap,
                namespace,
                &b.name,
                &PortRef::Number(port),
                protocol,
                weight,
            ) {
                Ok(mut backend) => {
                    if let Some(p) = backend_policy {
                        apply_backend_policy(backend.policy_mut(), p, report);
                    }
                    list.push(backend)
                }
                Err(e) => {
                    report.diagnostics.push(Diagnostic::warning(
                        e.reason,
                        bf.clone(),
                        format!("{}; its share of requests answers 503", e.message),
                    ));
                    // Keep its weight so the others' shares stay as written.
                    list.push(Backend {
                        weight,
                        protocol: Protocol::Http1,
                        ..Backend::new(format!("{namespace}/{}:{port}", b.name), Vec::new())
                    });
                }
            }
        }
    }
    let mut mirrors = Vec::new();
    for (j, f) in rule.filters.iter().enumerate() {
        if f.filter_type == FilterType::RequestMirror {
            let ff = format!("{field}.filters[{j}]");
            mirrors.extend(request_mirror(
                snap,
                namespace,
                f,
                &ff,
                &mut report.diagnostics,
            )?);
        }
    }
    // One CORS filter per rule: the rule's own, else the gRPC-Web bridge's;
    // on a bridged rule either lets gRPC-Web clients work.
    let mut rule = parts.assemble(list, grpc, policies.grpc_web_cors);
    // After the body limit: a request it refuses is not copied. A redirect
    // copies nothing.
    if matches!(rule.action, Action::Forward(_)) {
        rule.chain
            .extend(mirrors.into_iter().map(|m| Filter::Mirror(Box::new(m))));
    }
    Ok(rule)
}

/// What a Gateway-shaped rule says apart from its backends: matches,
/// filters and timeouts, each checked. Shared by `portico.dev` HTTPRoutes
/// and Gateway API HTTPRoutes and GRPCRoutes (`translate::gateway`).
pub(super) struct RuleParts {
    pub(super) matches: Vec<RouteMatch>,
    headers: HeaderEdits,
    pub(super) redirect: Option<Redirect>,
    rewrite: Option<UrlRewrite>,
    cors: Option<Cors>,
    timeouts: Timeouts,
}

/// `rule`'s matches, filters and timeouts, or the error that keeps the
/// whole rule out; findings that leave only a part out go to `found`.
pub(super) fn rule_parts(
    rule: &HTTPRouteRule,
    field: &str,
    found: &mut Vec<Diagnostic>,
) -> Result<RuleParts, Diagnostic> {
    let mut matches = Vec::with_capacity(rule.matches.len());
    for (j, m) in rule.matches.iter().enumerate() {
        let mf = format!("{field}.matches[{j}]");
        let path = match &m.path {
            None => PathMatch::Prefix("/".into()),
            Some(p) => {
                let value = p.value.clone().unwrap_or_else(|| "/".into());
                match p.match_type.unwrap_or(PathMatchType::PathPrefix) {
                    PathMatchType::Exact | PathMatchType::PathPrefix if !value.starts_with('/') => {
                        return Err(Diagnostic::error(
                            "InvalidPath",
                            format!("{mf}.path.value"),
                            format!("{value:?} must start with '/'; this rule is not served"),
                        ));
                    }
                    PathMatchType::Exact => PathMatch::Exact(value),
                    PathMatchType::PathPrefix => PathMatch::Prefix(value),
                    PathMatchType::RegularExpression => {
                        check_regex(&value).map_err(|e| {
                            Diagnostic::error(
                                "InvalidRegex",
                                format!("{mf}.path.value"),
                                format!("{value:?}: {e}; this rule is not served"),
                            )
                        })?;
                        PathMatch::RegularExpression(value)
                    }
                }
            }
        };
        let mut headers = Vec::new();
        for (k, h) in m.headers.iter().enumerate() {
            let hf = format!("{mf}.headers[{k}]");
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| {
                Diagnostic::error(
                    "InvalidHeaderName",
                    format!("{hf}.name"),
                    format!(
                        "{:?} is not a valid header name; this rule is not served",
                        h.name
                    ),
                )
            })?;
            headers.push(HeaderMatch {
                name,
                value: value_match(h.match_type, &h.value, &format!("{hf}.value"))?,
            });
        }
        let mut query = Vec::new();
        for (k, q) in m.query_params.iter().enumerate() {
            query.push(QueryMatch {
                name: q.name.clone(),
                value: value_match(
                    q.match_type,
                    &q.value,
                    &format!("{mf}.queryParams[{k}].value"),
                )?,
            });
        }
        matches.push(RouteMatch {
            path,
            headers,
            query,
            method: m.method.as_ref().map(method),
        });
    }

    let mut filters = HeaderEdits::default();
    let mut redirect = None;
    let mut rewrite = None;
    let mut cors = None;
    for (j, f) in rule.filters.iter().enumerate() {
        let ff = format!("{field}.filters[{j}]");
        if f.filter_type == FilterType::RequestMirror {
            // Resolved by the caller, which has the snapshot:
            // `translate_rule` here, `translate::gateway` for Gateway API.
            continue;
        }
        if f.filter_type == FilterType::Cors {
            let c = f.cors.as_ref().ok_or_else(|| {
                Diagnostic::error(
                    "InvalidFilter",
                    format!("{ff}.cors"),
                    "filter type needs cors; this rule is not served",
                )
            })?;
            cors = Some(cors_filter(c, &format!("{ff}.cors"), found));
            continue;
        }
        apply_filter(
            f,
            &ff,
            &matches,
            &mut filters,
            &mut redirect,
            &mut rewrite,
            found,
        )?;
    }
    Ok(RuleParts {
        matches,
        headers: filters,
        redirect,
        rewrite,
        cors,
        timeouts: timeouts(rule, field)?,
    })
}

impl RuleParts {
    /// The rule: a redirect if a filter says so, else forwarding to
    /// `backends`. `grpc_web_cors` is the CORS of a gRPC-Web bridge, used
    /// when the rule has no CORS filter of its own.
    pub(super) fn assemble(
        self,
        backends: Vec<Backend>,
        grpc: &GrpcOptions,
        grpc_web_cors: Option<&Cors>,
    ) -> Rule {
        let cors = self.cors.or_else(|| grpc_web_cors.cloned()).map(|mut c| {
            if grpc.web.is_some() {
                c.add_grpc_web_headers();
            }
            c
        });
        let action = match self.redirect {
            Some(r) => Action::Redirect(r),
            None => Action::Forward(Forward {
                rewrite: self.rewrite,
                ..Forward::to(backends)
            }),
        };
        // Gateway API sets no body limit: `Rule::new`'s safe default stays.
        let mut rule = Rule {
            matches: self.matches,
            timeouts: self.timeouts,
            grpc: grpc.clone(),
            ..Rule::new(action)
        };
        // Ahead of the body limit, as every translation lists them.
        rule.chain.splice(
            0..0,
            header_filters(self.headers.request, self.headers.response)
                .into_iter()
                .chain(cors.map(Filter::Cors)),
        );
        rule
    }
}

/// A `RequestMirror`'s share of requests from its `percent` or `fraction`
/// (`numerator`, `denominator` defaulting to 100): the field at fault and
/// why when one is out of range or both are set. Shared with Gateway API
/// translation.
pub(super) fn mirror_fraction(
    percent: Option<i32>,
    fraction: Option<(i32, Option<i32>)>,
) -> Result<MirrorFraction, (&'static str, String)> {
    match (percent, fraction) {
        (None, None) => Ok(MirrorFraction::ALL),
        (Some(p), None) => u32::try_from(p)
            .ok()
            .filter(|p| *p <= 100)
            .map(MirrorFraction::percent)
            .ok_or_else(|| ("percent", format!("{p} is not 0 to 100"))),
        (None, Some((numerator, denominator))) => {
            let denominator = denominator.unwrap_or(100);
            match (u32::try_from(numerator), u32::try_from(denominator)) {
                (Ok(n), Ok(d)) if d > 0 && n <= d => Ok(MirrorFraction {
                    numerator: n,
                    denominator: d,
                }),
                _ => Err((
                    "fraction",
                    format!("{numerator}/{denominator} is not a fraction of at most 1"),
                )),
            }
        }
        (Some(_), Some(_)) => Err(("percent", "set at most one of percent and fraction".into())),
    }
}

/// A `RequestMirror` filter: its Service resolved (a missing one is
/// reported and mirrors nothing; the rule is served), its share of
/// requests; the route id is set by [`translate_one`].
fn request_mirror(
    snap: &Snapshot,
    namespace: &str,
    f: &HTTPRouteFilter,
    field: &str,
    found: &mut Vec<Diagnostic>,
) -> Result<Option<Mirror>, Diagnostic> {
    let mf = format!("{field}.requestMirror");
    let m = f.request_mirror.as_ref().ok_or_else(|| {
        Diagnostic::error(
            "InvalidFilter",
            mf.clone(),
            "filter type needs requestMirror; this rule is not served",
        )
    })?;
    let unsupported = |at: &str, message: String| {
        Diagnostic::error(
            "UnsupportedValue",
            format!("{mf}.{at}"),
            format!("{message}; this rule is not served"),
        )
    };
    let fraction = mirror_fraction(
        m.percent,
        m.fraction.as_ref().map(|f| (f.numerator, f.denominator)),
    )
    .map_err(|(at, why)| unsupported(at, why))?;
    let b = &m.backend_ref;
    let port = PortRef::Number(b.port);
    let protocol = backends::app_protocol(snap, namespace, &b.name, b.port);
    let backend = match backends::resolve(snap, namespace, &b.name, &port, protocol, 1) {
        Ok(backend) => backend,
        Err(e) => {
            found.push(Diagnostic::warning(
                e.reason,
                format!("{mf}.backendRef"),
                format!("{}; no requests are mirrored", e.message),
            ));
            return Ok(None);
        }
    };
    let mut mirror = Mirror::to_backend(String::new(), backend);
    mirror.fraction = fraction;
    Ok(Some(mirror))
}

/// A rule's `RequestHeaderModifier` and `ResponseHeaderModifier`: the
/// last of each kind stands.
#[derive(Default)]
struct HeaderEdits {
    request: HeaderModifier,
    response: HeaderModifier,
}

/// `policies.jwt`, parsed whole; Secret key sets read and checked now.
fn jwt(
    snap: &Snapshot,
    namespace: &str,
    policies: Option<&HTTPRoutePolicies>,
) -> Result<Option<Jwt>, Diagnostic> {
    let Some(p) = policies.and_then(|p| p.jwt.as_ref()) else {
        return Ok(None);
    };
    let invalid = |field: &str, reason: String| {
        Diagnostic::error(
            "UnsupportedValue",
            format!("spec.policies.jwt.{field}"),
            format!("{reason}; the route is not served"),
        )
    };
    let mut providers = Vec::with_capacity(p.providers.len());
    for (i, pp) in p.providers.iter().enumerate() {
        let at = |f: &str| format!("providers[{i}].{f}");
        let jwks = match (&pp.jwks_uri, &pp.jwks_secret_ref) {
            (Some(uri), None) => {
                let parsed: http::Uri = uri
                    .parse()
                    .map_err(|_| invalid(&at("jwksUri"), format!("{uri:?} is not a URL")))?;
                if parsed.host().is_none() {
                    return Err(invalid(&at("jwksUri"), format!("{uri:?} has no host")));
                }
                JwksSource::Uri(uri.clone())
            }
            // Same namespace only: the Secret is the route's own.
            (None, Some(r)) => super::auth::jwks_from_secret(
                snap,
                &Settings::default(),
                namespace,
                "jwksSecretRef",
                None,
                &r.name,
            )
            .map_err(|reason| invalid(&at("jwksSecretRef"), reason))?,
            _ => {
                return Err(invalid(
                    &at("jwksUri"),
                    "set exactly one of jwksUri and jwksSecretRef".into(),
                ));
            }
        };
        let mut provider = JwtProvider::new(pp.issuer.clone(), jwks);
        provider.audiences = pp.audiences.clone();
        provider.from = match (&pp.from_header, &pp.from_cookie) {
            (Some(h), None) => {
                TokenSource::Named(HeaderName::from_bytes(h.as_bytes()).map_err(|_| {
                    invalid(&at("fromHeader"), format!("{h:?} is not a header name"))
                })?)
            }
            (None, Some(c)) => TokenSource::Cookie(c.clone()),
            (None, None) => TokenSource::Header,
            (Some(_), Some(_)) => {
                return Err(invalid(
                    &at("fromHeader"),
                    "set at most one of fromHeader and fromCookie".into(),
                ));
            }
        };
        for (j, c) in pp.claim_to_headers.iter().enumerate() {
            let field = at(&format!("claimToHeaders[{j}]"));
            let header = HeaderName::from_bytes(c.header.as_bytes())
                .map_err(|_| invalid(&field, format!("{:?} is not a header name", c.header)))?;
            user_settable(&header)
                .map_err(|reason| invalid(&field, format!("{header} cannot be set: {reason}")))?;
            provider.claim_to_headers.push(ClaimHeader {
                claim: c.claim.clone(),
                header,
            });
        }
        provider.required_claims = pp.required_claims.clone();
        if let Some(s) = pp.clock_skew_seconds {
            let s = u64::try_from(s)
                .ok()
                .filter(|s| *s <= 300)
                .ok_or_else(|| invalid(&at("clockSkewSeconds"), "expected 0 to 300".into()))?;
            provider.clock_skew = Duration::from_secs(s);
        }
        providers.push(provider);
    }
    Ok(Some(Jwt {
        providers,
        required: p.required.unwrap_or(true),
    }))
}

/// `policies.externalAuth`, parsed whole: every value typed, templates
/// checked as the annotations' are.
fn external_auth(policies: Option<&HTTPRoutePolicies>) -> Result<Option<ExternalAuth>, Diagnostic> {
    let Some(p) = policies.and_then(|p| p.external_auth.as_ref()) else {
        return Ok(None);
    };
    let invalid = |field: &str, reason: String| {
        Diagnostic::error(
            "UnsupportedValue",
            format!("spec.policies.externalAuth.{field}"),
            format!("{reason}; the route is not served"),
        )
    };
    let url = Template::service_url(&p.url).map_err(|e| invalid("url", e.to_string()))?;
    let mut auth = ExternalAuth::new(url);
    if let Some(m) = &p.method {
        auth.method = Some(
            Method::from_bytes(m.as_bytes())
                .map_err(|_| invalid("method", format!("{m:?} is not an HTTP method")))?,
        );
    }
    if let Some(signin) = &p.signin {
        auth.signin =
            Some(Template::signin_url(signin).map_err(|e| invalid("signin", e.to_string()))?);
    }
    if let Some(param) = &p.signin_redirect_param {
        portico_dataplane::external_auth::check_redirect_param(param)
            .map_err(|reason| invalid("signinRedirectParam", reason.into()))?;
        auth.signin_redirect_param = param.clone();
    }
    for (i, n) in p.response_headers.iter().enumerate() {
        let name = HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
            invalid(
                &format!("responseHeaders[{i}]"),
                format!("{n:?} is not a header name"),
            )
        })?;
        user_settable(&name).map_err(|reason| {
            invalid(
                &format!("responseHeaders[{i}]"),
                format!("{name} cannot be set: {reason}"),
            )
        })?;
        auth.response_headers.push(name);
    }
    if let Some(r) = &p.request_redirect {
        HeaderValue::from_str(r)
            .map_err(|_| invalid("requestRedirect", "not a valid header value".into()))?;
        auth.request_redirect = Some(r.clone());
    }
    for (i, h) in p.proxy_set_headers.iter().enumerate() {
        let field = format!("proxySetHeaders[{i}]");
        let name = HeaderName::from_bytes(h.name.as_bytes())
            .map_err(|_| invalid(&field, format!("{:?} is not a header name", h.name)))?;
        user_settable(&name)
            .map_err(|reason| invalid(&field, format!("{name} cannot be set: {reason}")))?;
        let value = HeaderValue::from_str(&h.value)
            .map_err(|_| invalid(&field, "not a valid header value".into()))?;
        auth.proxy_set_headers.push((name, value));
    }
    if let Some(c) = &p.cache {
        let key = Template::text(&c.key).map_err(|e| invalid("cache.key", e.to_string()))?;
        let duration = parse_duration(&c.duration)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                invalid(
                    "cache.duration",
                    format!("{:?} is not a duration above 0", c.duration),
                )
            })?;
        auth.cache = Some(ExternalAuthCache { key, duration });
    }
    auth.always_set_cookie = p.always_set_cookie.unwrap_or(false);
    if let Some(t) = &p.timeout {
        auth.timeout = parse_duration(t)
            .filter(|d| !d.is_zero())
            .ok_or_else(|| invalid("timeout", format!("{t:?} is not a duration above 0")))?;
    }
    Ok(Some(auth))
}

/// `policies.grpcWeb` and `policies.grpcMaxMessageBytes`, and the bridge's
/// CORS. The schema already holds the values to their patterns; what still
/// fails to parse is reported and left out, never taking the route down.
fn grpc_options(
    policies: Option<&HTTPRoutePolicies>,
    report: &mut ObjectReport,
) -> (GrpcOptions, Option<Cors>) {
    let mut out = GrpcOptions::default();
    let Some(p) = policies else {
        return (out, None);
    };
    if let Some(max) = p.grpc_max_message_bytes {
        match u64::try_from(max) {
            Ok(n) if n > 0 => out.max_message = n,
            _ => report.diagnostics.push(Diagnostic::warning(
                "UnsupportedValue",
                "spec.policies.grpcMaxMessageBytes",
                format!("{max} is not a positive number of bytes; the 4 MiB default applies"),
            )),
        }
    }
    let Some(web) = &p.grpc_web else {
        return (out, None);
    };
    let mut cors = Cors {
        allow_credentials: web.allow_credentials.unwrap_or(false),
        ..Cors::grpc_web()
    };
    for (i, o) in web.allow_origins.iter().enumerate() {
        match gateway_origin(o) {
            Ok(o) if !cors.allow_origins.contains(&o) => cors.allow_origins.push(o),
            Ok(_) => {}
            Err(reason) => report.diagnostics.push(Diagnostic::warning(
                "UnsupportedValue",
                format!("spec.policies.grpcWeb.allowOrigins[{i}]"),
                format!("{o:?}: {reason}; the entry is left out"),
            )),
        }
    }
    for (list, names, field) in [
        (&mut cors.allow_headers, &web.allow_headers, "allowHeaders"),
        (
            &mut cors.expose_headers,
            &web.expose_headers,
            "exposeHeaders",
        ),
    ] {
        for (i, n) in names.iter().enumerate() {
            match HeaderName::from_bytes(n.as_bytes()) {
                Ok(h) if !list.contains(&h) => list.push(h),
                Ok(_) => {}
                Err(_) => report.diagnostics.push(Diagnostic::warning(
                    "InvalidHeaderName",
                    format!("spec.policies.grpcWeb.{field}[{i}]"),
                    format!("{n:?} is not a valid header name; the entry is left out"),
                )),
            }
        }
    }
    if let Some(v) = &web.max_age {
        match parse_duration(v) {
            Some(d) => cors.max_age = d.as_secs(),
            None => report.diagnostics.push(Diagnostic::warning(
                "UnsupportedValue",
                "spec.policies.grpcWeb.maxAge",
                format!("{v:?} is not a Gateway API duration like 10m; 24h applies"),
            )),
        }
    }
    out.web = Some(GrpcWeb::default());
    (out, Some(cors))
}

/// A Gateway API CORS origin: as the Ingress form, except that a `*.`
/// wildcard host covers any number of labels.
fn gateway_origin(s: &str) -> Result<OriginPattern, String> {
    if s.contains("**") {
        return Err("only a leading `*.` wildcard is allowed in the host".into());
    }
    Ok(match OriginPattern::parse(s)? {
        OriginPattern::Origin {
            scheme,
            host: OriginHost::Subdomain(suffix),
            port,
        } => OriginPattern::Origin {
            scheme,
            host: OriginHost::SubdomainAnyDepth(suffix),
            port,
        },
        other => other,
    })
}

/// A `CORS` filter. The schema holds the lists to their patterns; entries
/// that still fail to parse (manifests never meet the schema) are reported
/// and left out, the rest of the rule is served.
fn cors_filter(c: &HTTPCORSFilter, field: &str, found: &mut Vec<Diagnostic>) -> Cors {
    let mut warn = |at: String, message: String| {
        found.push(Diagnostic::warning("InvalidFilter", at, message));
    };
    let mut allow_origins = Vec::with_capacity(c.allow_origins.len());
    for (i, o) in c.allow_origins.iter().enumerate() {
        match gateway_origin(o) {
            Ok(o) if !allow_origins.contains(&o) => allow_origins.push(o),
            Ok(_) => {}
            Err(reason) => warn(
                format!("{field}.allowOrigins[{i}]"),
                format!("{o:?}: {reason}; the entry is left out"),
            ),
        }
    }
    let mut header_list = |names: &[String], what: &str| {
        let mut out: Vec<HeaderName> = Vec::with_capacity(names.len());
        for (i, n) in names.iter().enumerate() {
            match HeaderName::from_bytes(n.as_bytes()) {
                Ok(h) if !out.contains(&h) => out.push(h),
                Ok(_) => {}
                Err(_) => warn(
                    format!("{field}.{what}[{i}]"),
                    format!("{n:?} is not a valid header name; the entry is left out"),
                ),
            }
        }
        out
    };
    let allow_headers = header_list(&c.allow_headers, "allowHeaders");
    let expose_headers = header_list(&c.expose_headers, "exposeHeaders");
    let max_age = c.max_age_or_default();
    let max_age = u64::try_from(max_age).unwrap_or_else(|_| {
        warn(
            format!("{field}.maxAge"),
            format!(
                "{max_age} is not a number of seconds; the default {} applies",
                portico_crds::DEFAULT_CORS_MAX_AGE
            ),
        );
        portico_crds::DEFAULT_CORS_MAX_AGE.unsigned_abs().into()
    });
    let mut allow_methods: Vec<Method> = Vec::with_capacity(c.allow_methods.len());
    for m in &c.allow_methods {
        // Always a token: the enum's names and `*`.
        if let Ok(m) = Method::from_bytes(m.as_str().as_bytes())
            && !allow_methods.contains(&m)
        {
            allow_methods.push(m);
        }
    }
    Cors {
        allow_origins,
        allow_methods,
        allow_headers,
        expose_headers,
        allow_credentials: c.allow_credentials.unwrap_or(false),
        max_age,
        // Gateway API allows 403 or a bare 200/204; 403 says it plainly.
        disallowed_preflight: Default::default(),
    }
}

fn value_match(
    t: Option<StringMatchType>,
    value: &str,
    field: &str,
) -> Result<ValueMatch, Diagnostic> {
    Ok(match t.unwrap_or(StringMatchType::Exact) {
        StringMatchType::Exact => ValueMatch::Exact(value.to_owned()),
        StringMatchType::RegularExpression => {
            check_regex(value).map_err(|e| {
                Diagnostic::error(
                    "InvalidRegex",
                    field.to_owned(),
                    format!("{value:?}: {e}; this rule is not served"),
                )
            })?;
            ValueMatch::RegularExpression(value.to_owned())
        }
    })
}

fn method(m: &HTTPMethod) -> Method {
    match m {
        HTTPMethod::GET => Method::GET,
        HTTPMethod::HEAD => Method::HEAD,
        HTTPMethod::POST => Method::POST,
        HTTPMethod::PUT => Method::PUT,
        HTTPMethod::DELETE => Method::DELETE,
        HTTPMethod::CONNECT => Method::CONNECT,
        HTTPMethod::OPTIONS => Method::OPTIONS,
        HTTPMethod::TRACE => Method::TRACE,
        HTTPMethod::PATCH => Method::PATCH,
    }
}

fn apply_filter(
    f: &HTTPRouteFilter,
    field: &str,
    matches: &[RouteMatch],
    filters: &mut HeaderEdits,
    redirect: &mut Option<Redirect>,
    rewrite: &mut Option<UrlRewrite>,
    found: &mut Vec<Diagnostic>,
) -> Result<(), Diagnostic> {
    let missing = |name: &str| {
        Diagnostic::error(
            "InvalidFilter",
            format!("{field}.{name}"),
            format!("filter type needs {name}; this rule is not served"),
        )
    };
    match f.filter_type {
        // `translate_rule` keeps the rule's one CORS filter and its
        // mirrors itself.
        FilterType::Cors | FilterType::RequestMirror => {}
        FilterType::RequestHeaderModifier => {
            let m = f
                .request_header_modifier
                .as_ref()
                .ok_or_else(|| missing("requestHeaderModifier"))?;
            filters.request = header_modifier(m, &format!("{field}.requestHeaderModifier"), found)?;
        }
        FilterType::ResponseHeaderModifier => {
            let m = f
                .response_header_modifier
                .as_ref()
                .ok_or_else(|| missing("responseHeaderModifier"))?;
            filters.response =
                header_modifier(m, &format!("{field}.responseHeaderModifier"), found)?;
        }
        FilterType::RequestRedirect => {
            let r = f
                .request_redirect
                .as_ref()
                .ok_or_else(|| missing("requestRedirect"))?;
            let rf = format!("{field}.requestRedirect");
            let status = match r.status_code.unwrap_or(302) {
                301 => RedirectStatus::MovedPermanently,
                302 => RedirectStatus::Found,
                303 => RedirectStatus::SeeOther,
                307 => RedirectStatus::TemporaryRedirect,
                308 => RedirectStatus::PermanentRedirect,
                other => {
                    return Err(Diagnostic::error(
                        "UnsupportedValue",
                        format!("{rf}.statusCode"),
                        format!(
                            "{other} is not a redirect status (301, 302, 303, 307, 308); this rule is not served"
                        ),
                    ));
                }
            };
            let port = r
                .port
                .map(|p| {
                    u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                        Diagnostic::error(
                            "UnsupportedValue",
                            format!("{rf}.port"),
                            format!("{p} is not a port; this rule is not served"),
                        )
                    })
                })
                .transpose()?;
            let built = Redirect {
                scheme: r.scheme.as_ref().map(|s| match s {
                    RedirectScheme::Http => Scheme::Http,
                    RedirectScheme::Https => Scheme::Https,
                }),
                hostname: r
                    .hostname
                    .as_deref()
                    .map(|h| precise_hostname(h, &rf))
                    .transpose()?,
                port,
                path: r
                    .path
                    .as_ref()
                    .map(|p| path_modifier(p, &format!("{rf}.path"), matches))
                    .transpose()?,
                status,
            };
            built
                .check()
                .map_err(|e| invalid_field(e, &rf, r.path.as_ref()))?;
            *redirect = Some(built);
        }
        FilterType::URLRewrite => {
            let r = f
                .url_rewrite
                .as_ref()
                .ok_or_else(|| missing("urlRewrite"))?;
            let rf = format!("{field}.urlRewrite");
            let built = UrlRewrite {
                hostname: r
                    .hostname
                    .as_deref()
                    .map(|h| precise_hostname(h, &rf))
                    .transpose()?,
                path: r
                    .path
                    .as_ref()
                    .map(|p| path_modifier(p, &format!("{rf}.path"), matches))
                    .transpose()?,
            };
            built
                .check()
                .map_err(|e| invalid_field(e, &rf, r.path.as_ref()))?;
            *rewrite = Some(built);
        }
    }
    Ok(())
}

/// A redirect or rewrite host: a host name without wildcard, lower-cased.
/// The schema's pattern says as much, but manifests never met the schema.
fn precise_hostname(h: &str, filter: &str) -> Result<String, Diagnostic> {
    match Hostname::parse(h) {
        Some(Hostname::Exact(name)) if !h.ends_with('.') => Ok(name),
        _ => Err(Diagnostic::error(
            "InvalidFilter",
            format!("{filter}.hostname"),
            format!(
                "{h:?} is not a host name (letters, digits, '-' and '.'); this rule is not served"
            ),
        )),
    }
}

/// A field the dataplane could not send as written: every request of the
/// rule would answer 400, so the rule is not served and the field named.
fn invalid_field(e: InvalidField, filter: &str, path: Option<&HTTPPathModifier>) -> Diagnostic {
    let (field, value) = match (e.field, path) {
        ("path", Some(p)) => match p.modifier_type {
            PathModifierType::ReplaceFullPath => ("path.replaceFullPath", &p.replace_full_path),
            PathModifierType::ReplacePrefixMatch => {
                ("path.replacePrefixMatch", &p.replace_prefix_match)
            }
        },
        (other, _) => (other, &None),
    };
    let shown = value
        .as_deref()
        .map_or(String::new(), |v| format!("{v:?}: "));
    Diagnostic::error(
        "InvalidFilter",
        format!("{filter}.{field}"),
        format!("{shown}{}; this rule is not served", e.reason),
    )
}

fn path_modifier(
    p: &HTTPPathModifier,
    field: &str,
    matches: &[RouteMatch],
) -> Result<PathModifier, Diagnostic> {
    match p.modifier_type {
        PathModifierType::ReplaceFullPath => p
            .replace_full_path
            .clone()
            .map(PathModifier::ReplaceFullPath)
            .ok_or_else(|| {
                Diagnostic::error(
                    "InvalidFilter",
                    format!("{field}.replaceFullPath"),
                    "ReplaceFullPath needs replaceFullPath; this rule is not served",
                )
            }),
        PathModifierType::ReplacePrefixMatch => {
            let all_prefix = matches
                .iter()
                .all(|m| matches!(m.path, PathMatch::Prefix(_)));
            if !all_prefix {
                return Err(Diagnostic::error(
                    "InvalidFilter",
                    format!("{field}.type"),
                    "ReplacePrefixMatch needs every match of the rule to be a PathPrefix match; this rule is not served",
                ));
            }
            p.replace_prefix_match
                .clone()
                .map(PathModifier::ReplacePrefixMatch)
                .ok_or_else(|| {
                    Diagnostic::error(
                        "InvalidFilter",
                        format!("{field}.replacePrefixMatch"),
                        "ReplacePrefixMatch needs replacePrefixMatch; this rule is not served",
                    )
                })
        }
    }
}

/// A header filter. Names the dataplane never lets a filter touch
/// ([`user_settable`]) are reported and left out; the rest of the rule is
/// served.
pub(super) fn header_modifier(
    m: &HTTPHeaderFilter,
    field: &str,
    found: &mut Vec<Diagnostic>,
) -> Result<HeaderModifier, Diagnostic> {
    // The name, or `None` when it is reported and left out.
    let mut name = |n: &str, at: String| -> Result<Option<HeaderName>, Diagnostic> {
        let name = HeaderName::from_bytes(n.as_bytes()).map_err(|_| {
            Diagnostic::error(
                "InvalidHeaderName",
                at.clone(),
                format!("{n:?} is not a valid header name; this rule is not served"),
            )
        })?;
        match user_settable(&name) {
            Ok(()) => Ok(Some(name)),
            Err(reason) => {
                found.push(Diagnostic::error(
                    "InvalidFilter",
                    at,
                    format!("{n:?} cannot be changed by a header filter: {reason}; left out"),
                ));
                Ok(None)
            }
        }
    };
    let mut pairs = |list: &[HTTPHeader], what: &str| {
        let mut out = Vec::with_capacity(list.len());
        for (i, h) in list.iter().enumerate() {
            let Some(name) = name(&h.name, format!("{field}.{what}[{i}].name"))? else {
                continue;
            };
            let value = HeaderValue::from_str(&h.value).map_err(|_| {
                Diagnostic::error(
                    "InvalidHeaderValue",
                    format!("{field}.{what}[{i}].value"),
                    format!(
                        "{:?} is not a valid header value: control characters (CR, LF, NUL, ...) are not allowed; this rule is not served",
                        h.value
                    ),
                )
            })?;
            out.push((name, value));
        }
        Ok::<_, Diagnostic>(out)
    };
    let set = pairs(&m.set, "set")?;
    let add = pairs(&m.add, "add")?;
    let mut remove = Vec::with_capacity(m.remove.len());
    for (i, n) in m.remove.iter().enumerate() {
        remove.extend(name(n, format!("{field}.remove[{i}]"))?);
    }
    Ok(HeaderModifier { set, add, remove })
}

fn timeouts(rule: &HTTPRouteRule, field: &str) -> Result<Timeouts, Diagnostic> {
    let mut t = Timeouts::default();
    let Some(spec) = &rule.timeouts else {
        return Ok(t);
    };
    let parse = |v: &str, name: &str| {
        parse_duration(v).ok_or_else(|| {
            Diagnostic::error(
                "InvalidTimeout",
                format!("{field}.timeouts.{name}"),
                format!(
                    "{v:?} is not a Gateway API duration like 10s or 1m30s; this rule is not served"
                ),
            )
        })
    };
    // Zero disables a Gateway API timeout.
    if let Some(v) = &spec.request {
        t.request = Some(parse(v, "request")?).filter(|d| !d.is_zero());
    }
    if let Some(v) = &spec.backend_request {
        let d = parse(v, "backendRequest")?;
        if !d.is_zero() {
            t.read = d;
        }
    }
    Ok(t)
}

/// Gateway API durations: one to four `<number><unit>` pairs, units h, m,
/// s, ms (`1h`, `1m30s`, `500ms`).
pub(crate) fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s;
    let mut total = Duration::ZERO;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 || digits > 5 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = if rest.starts_with("ms") {
            (Duration::from_millis(1), 2)
        } else if rest.starts_with('h') {
            (Duration::from_secs(3600), 1)
        } else if rest.starts_with('m') {
            (Duration::from_secs(60), 1)
        } else if rest.starts_with('s') {
            (Duration::from_secs(1), 1)
        } else {
            return None;
        };
        rest = &rest[len..];
        total = total.checked_add(unit.checked_mul(u32::try_from(n).ok()?)?)?;
        parts += 1;
        if parts > 4 {
            return None;
        }
    }
    (parts > 0).then_some(total)
}

/// `spec.policies.backends`: each block set replaces what the Service's
/// annotations say about the same thing. Values the schema lets through
/// but Portico cannot use are reported and fall back to the default.
fn apply_backend_policy(policy: &mut EndpointPolicy, p: &BackendPolicy, report: &mut ObjectReport) {
    let found = &mut report.diagnostics;
    if let Some(h) = &p.health_check {
        let d = HealthCheck::default();
        let interval = policy_duration(&h.interval, "healthCheck.interval", d.interval, found);
        let mut timeout = policy_duration(&h.timeout, "healthCheck.timeout", d.timeout, found);
        if timeout > interval {
            timeout = interval;
            found.push(policy_warning(
                "healthCheck.timeout",
                "longer than the interval; capped at the interval".into(),
            ));
        }
        let count = |v: Option<i32>, default: u32| {
            v.and_then(|n| u32::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or(default)
        };
        policy.health_check = Some(HealthCheck {
            probe: match (&h.path, &h.grpc_service) {
                (_, Some(service)) => Probe::Grpc {
                    service: service.clone(),
                },
                (Some(path), None) => Probe::Http { path: path.clone() },
                (None, None) => Probe::Tcp,
            },
            port: h
                .port
                .and_then(|p| u16::try_from(p).ok())
                .filter(|p| *p > 0),
            interval,
            timeout,
            healthy_threshold: count(h.healthy_threshold, d.healthy_threshold),
            unhealthy_threshold: count(h.unhealthy_threshold, d.unhealthy_threshold),
            expected_statuses: if h.expected_statuses.is_empty() {
                d.expected_statuses
            } else {
                h.expected_statuses
                    .iter()
                    .filter_map(|r| {
                        Some(StatusRange {
                            min: u16::try_from(r.min).ok()?,
                            max: u16::try_from(r.max).ok()?,
                        })
                    })
                    .collect()
            },
        });
    }
    if let Some(o) = &p.outlier_detection {
        let d = OutlierDetection::default();
        let count =
            |v: Option<i32>, default: u32| v.and_then(|n| u32::try_from(n).ok()).unwrap_or(default);
        policy.outlier = OutlierDetection {
            consecutive_5xx: count(o.consecutive_5xx, d.consecutive_5xx),
            consecutive_errors: count(o.consecutive_errors, d.consecutive_errors),
            base_ejection: policy_duration(
                &o.base_ejection_time,
                "outlierDetection.baseEjectionTime",
                d.base_ejection,
                found,
            ),
            max_ejection: policy_duration(
                &o.max_ejection_time,
                "outlierDetection.maxEjectionTime",
                d.max_ejection,
                found,
            ),
            max_ejected_percent: o
                .max_ejected_percent
                .and_then(|n| u8::try_from(n).ok())
                .map_or(d.max_ejected_percent, |n| n.min(100)),
        };
    }
    if let Some(t) = p.panic_threshold.and_then(|n| u8::try_from(n).ok()) {
        policy.panic_threshold_percent = t.min(100);
    }
    if let Some(text) = &p.slow_start {
        policy.slow_start = parse_duration(text).filter(|d| !d.is_zero());
        if parse_duration(text).is_none() {
            found.push(policy_warning(
                "slowStart",
                format!("{text:?} is not a duration; slow start is off"),
            ));
        }
    }
    if let Some(lb) = &p.load_balancing {
        policy.balance = match lb.policy {
            LoadBalancingAlgorithm::RoundRobin => Balance::RoundRobin,
            LoadBalancingAlgorithm::LeastRequest => Balance::LeastRequest,
            LoadBalancingAlgorithm::Ewma => Balance::Ewma,
            LoadBalancingAlgorithm::ConsistentHash => {
                match lb.hash_by.as_deref().map(HashKey::parse) {
                    Some(Ok(key)) => Balance::ConsistentHash { key },
                    Some(Err(reason)) => {
                        found.push(policy_warning(
                            "loadBalancing.hashBy",
                            format!("{reason}; requests are round-robined instead"),
                        ));
                        Balance::RoundRobin
                    }
                    None => {
                        found.push(policy_warning(
                            "loadBalancing.hashBy",
                            "ConsistentHash needs hashBy; requests are round-robined instead"
                                .into(),
                        ));
                        Balance::RoundRobin
                    }
                }
            }
            LoadBalancingAlgorithm::Cookie => {
                let d = CookieAffinity::default();
                let c = lb.cookie.clone().unwrap_or_default();
                Balance::Cookie(CookieAffinity {
                    name: c.name.unwrap_or(d.name),
                    mode: match c.mode {
                        Some(AffinityModeSpec::Persistent) => AffinityMode::Persistent,
                        _ => AffinityMode::Balanced,
                    },
                    max_age: c.max_age.and_then(|n| u64::try_from(n).ok()),
                    expires: None,
                    path: c.path.unwrap_or(d.path),
                    domain: c.domain,
                    same_site: c.same_site.map(|s| match s {
                        SameSiteSpec::None => SameSite::None,
                        SameSiteSpec::Lax => SameSite::Lax,
                        SameSiteSpec::Strict => SameSite::Strict,
                    }),
                    secure: c.secure.unwrap_or(false),
                    change_on_failure: c.change_on_failure.unwrap_or(false),
                })
            }
        };
    }
}

fn policy_warning(field: &str, message: String) -> Diagnostic {
    Diagnostic::warning(
        "InvalidPolicy",
        format!("spec.policies.backends.{field}"),
        message,
    )
}

/// A positive Gateway API duration, or the default (reported).
fn policy_duration(
    v: &Option<String>,
    field: &str,
    default: Duration,
    found: &mut Vec<Diagnostic>,
) -> Duration {
    let Some(text) = v else {
        return default;
    };
    match parse_duration(text).filter(|d| !d.is_zero()) {
        Some(d) => d,
        None => {
            found.push(policy_warning(
                field,
                format!("{text:?} is not a positive duration; the default {default:?} applies"),
            ));
            default
        }
    }
}
