//! Translation: a [`Snapshot`] of Kubernetes objects into the dataplane's
//! [`RouteConfig`], plus diagnostics per object. Pure: no I/O, no clock, no
//! kube client; the same input always gives the same output.
//!
//! A bad object never takes others down: a rule that cannot be served as
//! written is left out (or denied, where serving it differently would be
//! wrong) and reported on its object; everything else is served.

use std::collections::BTreeMap;

use http::Method;
use portico_dataplane::listen::tls::{ClientAuthBinding, PassthroughBinding};
use portico_dataplane::model::{
    Action, Filter, HeaderModifier, Hostname, Hsts, PathMatch, Route, RouteConfig, RouteMatch,
};

use crate::diagnostics::{Diagnostic, Kind, ObjectRef};
use crate::snapshot::{Key, Snapshot};

mod auth;
pub mod backends;
pub mod class;
pub mod gateway;
mod httproute;
mod ingress;
mod kept;
mod mirror;
pub(crate) use ingress::{Reads, regex_hosts};
#[cfg(test)]
mod tests;
mod tls;

/// The one duration grammar, shared with the command line.
pub(crate) use httproute::parse_duration;
pub use tls::{CertStatus, SecretError};

/// Gateway API's reason for a certificate reference that cannot be used,
/// used for every unusable TLS Secret.
pub(crate) const REASON_INVALID_CERTIFICATE_REF: &str =
    portico_crds::REASON_INVALID_CERTIFICATE_REF;

/// What the controller was told about its identity and scope.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `--ingress-class`: the class name the legacy annotation must carry.
    pub ingress_class: String,
    /// `--controller-name`: IngressClasses with this `spec.controller` are ours.
    pub controller_name: String,
    pub watch_ingress_without_class: bool,
    /// `--default-ssl-certificate`: the Secret served for handshakes with no
    /// SNI or an unknown name.
    pub default_certificate: Option<Key>,
    /// `--https-redirect-port`: the public HTTPS port in redirects, when it
    /// is not 443.
    pub https_redirect_port: Option<u16>,
    /// `--hsts`: HSTS for TLS hosts unless an Ingress says otherwise.
    pub hsts_enabled: bool,
    /// `--hsts-max-age` and friends: the HSTS value unless an Ingress says
    /// otherwise.
    pub hsts: Hsts,
    /// `--enable-ssl-passthrough`.
    pub ssl_passthrough: bool,
    /// `--watch-ingress-class`: other controllers' classes whose Ingresses
    /// are served read-only, for a migration test behind a second address.
    pub side_by_side_classes: std::collections::BTreeSet<String>,
    /// `--allowlist-source-range`: clients allowed on every Ingress that
    /// sets no list of its own; empty: all.
    pub allowlist_source_range: Vec<ipnet::IpNet>,
    /// `--denylist-source-range`: clients refused likewise.
    pub denylist_source_range: Vec<ipnet::IpNet>,
    /// `--default-backend-service`: renders the 404 of requests no route
    /// matches, and the error pages of Ingresses without a
    /// `default-backend` of their own.
    pub default_backend_service: Option<backends::ServiceRef>,
    /// `--custom-http-errors`: statuses that get error pages on every
    /// Ingress path without a `custom-http-errors` of its own.
    pub custom_http_errors: Vec<u16>,
    /// `--allow-cross-namespace-auth-secret`: `auth-secret` may name a
    /// Secret in another namespace.
    pub allow_cross_namespace_auth_secret: bool,
    /// `--global-auth-url` and friends: external authentication for every
    /// Ingress path without its own `auth-url` or `enable-global-auth:
    /// "false"`.
    pub global_auth: Option<portico_dataplane::model::ExternalAuth>,
    /// `--limit-req-status-code`: the status of a rate-limited request.
    pub limit_req_status: u16,
    /// `--limit-conn-status-code`: likewise for `limit-connections`.
    pub limit_conn_status: u16,
    /// `--global-rate-limit-status-code`: likewise for `global-rate-limit`.
    pub global_limit_status: u16,
    /// `--gateway-controller-name`: GatewayClasses with this
    /// `spec.controllerName` are ours.
    pub gateway_controller_name: String,
    /// `--gateway-http-port`: Gateway HTTP listeners on this port are
    /// served by the main HTTP listener.
    pub gateway_http_port: u16,
    /// `--gateway-https-port`: likewise for HTTPS and the main HTTPS
    /// listener.
    pub gateway_https_port: u16,
    /// `--gateway-port-offset`: added to every other Gateway listener port.
    pub gateway_port_offset: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            ingress_class: "portico".into(),
            controller_name: "portico.dev/ingress-controller".into(),
            watch_ingress_without_class: false,
            default_certificate: None,
            https_redirect_port: None,
            hsts_enabled: true,
            hsts: Hsts::DEFAULT,
            ssl_passthrough: false,
            side_by_side_classes: std::collections::BTreeSet::new(),
            allowlist_source_range: Vec::new(),
            denylist_source_range: Vec::new(),
            default_backend_service: None,
            custom_http_errors: Vec::new(),
            allow_cross_namespace_auth_secret: false,
            global_auth: None,
            limit_req_status: portico_dataplane::model::DEFAULT_LIMIT_STATUS,
            limit_conn_status: portico_dataplane::model::DEFAULT_LIMIT_STATUS,
            global_limit_status: portico_dataplane::model::DEFAULT_GLOBAL_LIMIT_STATUS,
            gateway_controller_name: gateway::DEFAULT_CONTROLLER_NAME.into(),
            gateway_http_port: 80,
            gateway_https_port: 443,
            gateway_port_offset: 0,
        }
    }
}

/// A rate and connection limit request, checked: from an Ingress's
/// `limit-*` annotations or an HTTPRoute's `policies.rateLimit`.
pub(super) struct LimitRequest {
    pub(super) rps: Option<u32>,
    pub(super) rpm: Option<u32>,
    pub(super) multiplier: u32,
    pub(super) concurrent: Option<u32>,
    pub(super) key: portico_dataplane::model::LimitKey,
    pub(super) exempt: Vec<ipnet::IpNet>,
    pub(super) headers: bool,
}

/// The filters of `r` for the route `id`, whose state they share: one
/// rate limit with every rate (`burst = rate × multiplier`), one
/// connection limit.
pub(super) fn limit_filters(id: &str, r: LimitRequest, settings: &Settings) -> Vec<Filter> {
    use portico_dataplane::model::{ConnectionLimit, LimitScope, Rate, RateLimit, RatePeriod};
    let scope = |status| LimitScope {
        id: id.to_owned(),
        key: r.key.clone(),
        exempt: r.exempt.clone(),
        status,
    };
    let rates: Vec<Rate> = [(r.rps, RatePeriod::Second), (r.rpm, RatePeriod::Minute)]
        .into_iter()
        .filter_map(|(n, per)| {
            n.map(|requests| Rate {
                requests,
                per,
                burst: requests.saturating_mul(r.multiplier),
            })
        })
        .collect();
    let mut out = Vec::new();
    if !rates.is_empty() {
        out.push(Filter::RateLimit(RateLimit {
            scope: scope(settings.limit_req_status),
            rates,
            headers: r.headers,
        }));
    }
    if let Some(max) = r.concurrent {
        out.push(Filter::ConnectionLimit(ConnectionLimit {
            scope: scope(settings.limit_conn_status),
            max,
        }));
    }
    out
}

/// The result of translating one snapshot.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Translation {
    pub config: RouteConfig,
    /// Every object this controller serves (our Ingresses, every HTTPRoute),
    /// with or without findings: status is written from this.
    pub reports: BTreeMap<ObjectRef, ObjectReport>,
    /// TLS Secrets to serve, for the TLS listener.
    pub tls: Vec<TlsBinding>,
    /// Every Secret named by a binding or as the default certificate, parsed
    /// and validated (or why not).
    pub certificates: BTreeMap<Key, CertStatus>,
    /// Hosts that ask clients for certificates, and how.
    pub client_auth: Vec<ClientAuthBinding>,
    /// Hosts whose TLS is passed through to a backend (`ssl-passthrough`).
    pub passthrough: Vec<PassthroughBinding>,
    /// Client certificates to backends (`proxy-ssl-secret`), by id.
    pub upstream_client_certs: Vec<tls::UpstreamClientCert>,
    /// Certificates of Gateway HTTPS listeners on ports of their own.
    pub port_tls: Vec<gateway::PortTls>,
    /// Gateway API status: per GatewayClass, Gateway, listener and route
    /// parent.
    pub gateway: gateway::Results,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct ObjectReport {
    pub generation: Option<i64>,
    /// For Events to name the object exactly.
    pub uid: Option<String>,
    pub diagnostics: Vec<Diagnostic>,
    /// Rules (HTTPRoute rules, Ingress paths) written and rules served.
    pub rules_total: usize,
    pub rules_served: usize,
    /// Served side by side with another controller (`--watch-ingress-class`):
    /// no status and no Events are written for it.
    pub read_only: bool,
}

/// Hosts to serve with the certificate in a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsBinding {
    pub hosts: Vec<String>,
    pub secret: Key,
    pub source: ObjectRef,
    /// Where in the source: `spec.tls[0]`, `spec.policies.tls`.
    pub field: String,
}

/// Translates a snapshot. Never fails: problems become diagnostics.
pub fn translate(snap: &Snapshot, settings: &Settings) -> Translation {
    translate_with(snap, settings, None)
}

/// [`translate`], taking what `memo` kept from the last translation for
/// the Ingresses and Gateway API routes it finds unchanged (see [`Memo`]),
/// and keeping this one's: the result is the same as [`translate`]'s. The
/// rebuild loop's.
pub fn translate_reusing(snap: &Snapshot, settings: &Settings, memo: &mut Memo) -> Translation {
    translate_with(snap, settings, Some(memo))
}

/// What one translation keeps for the next ([`translate_reusing`]), so
/// that an edit to one object does not translate every other again: each
/// Ingress's part ([`ingress::Memo`]) and each Gateway API route's
/// translation and placed routes ([`gateway::Memo`]), each `portico.dev`
/// HTTPRoute's part ([`httproute::Memo`]).
#[derive(Default)]
pub struct Memo {
    ingresses: ingress::Memo,
    routes: gateway::Memo,
    http_routes: httproute::Memo,
}

impl Memo {
    /// How many Ingresses the last translation took from the memo.
    pub fn reused(&self) -> usize {
        self.ingresses.reused()
    }

    /// How many routes it took: `portico.dev` HTTPRoutes and Gateway API
    /// HTTPRoutes and GRPCRoutes.
    pub fn reused_routes(&self) -> usize {
        self.http_routes.reused() + self.routes.reused()
    }
}

fn translate_with(snap: &Snapshot, settings: &Settings, memo: Option<&mut Memo>) -> Translation {
    let (ingress_memo, route_memo, http_route_memo) = match memo {
        Some(m) => (
            Some(&mut m.ingresses),
            Some(&mut m.routes),
            Some(&mut m.http_routes),
        ),
        None => (None, None, None),
    };
    let mut out = Translation::default();
    let tls_hosts = tls::TlsHosts::of(snap, settings);
    out.config.default_backend = default_backend(snap, settings, &mut out);
    ingress::translate_all(snap, settings, &tls_hosts, &mut out, ingress_memo);
    httproute::translate_all(snap, settings, &mut out, http_route_memo);
    gateway::translate_all(snap, settings, &mut out, route_memo);
    tls::resolve_certificates(snap, settings, &mut out);
    report_services(snap, &mut out);
    report_conflicts(&mut out);
    // In running order, as the live table keeps it, so the rebuild loop's
    // comparison with the live config sees an unchanged result as equal.
    out.config.order_chains();
    for report in out.reports.values_mut() {
        report.diagnostics.sort();
        report.diagnostics.dedup();
    }
    out
}

impl ObjectReport {
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == crate::diagnostics::Severity::Error)
    }
}

/// `--default-backend-service`, resolved like any backend; a Service that
/// is not there is reported on itself (there is no object that named it),
/// and requests no route matches get the proxy's plain 404.
/// A rule's header edits as filters, the response edits listed first so
/// that their response side runs after every later filter's of the same
/// stage (see `Filter::stage`); an empty edit is left out.
fn header_filters(request: HeaderModifier, response: HeaderModifier) -> Vec<Filter> {
    let mut out = Vec::new();
    if !response.is_empty() {
        out.push(Filter::ResponseHeaders(response));
    }
    if !request.is_empty() {
        out.push(Filter::RequestHeaders(request));
    }
    out
}

fn default_backend(
    snap: &Snapshot,
    settings: &Settings,
    out: &mut Translation,
) -> Option<portico_dataplane::model::Backend> {
    let r = settings.default_backend_service.as_ref()?;
    match backends::error_backend(snap, r) {
        Ok(b) => Some(b),
        Err(e) => {
            let report = out
                .reports
                .entry(ObjectRef {
                    kind: Kind::Service,
                    namespace: r.namespace.clone(),
                    name: r.name.clone(),
                })
                .or_default();
            if let Some(svc) = snap.services.get(&(r.namespace.clone(), r.name.clone())) {
                report.generation = svc.metadata.generation;
                report.uid = svc.metadata.uid.clone();
            }
            report.diagnostics.push(Diagnostic::warning(
                e.reason,
                "--default-backend-service",
                format!(
                    "{}; requests no route matches get a plain 404, and Ingresses without a default-backend get no error pages",
                    e.message
                ),
            ));
            None
        }
    }
}

/// Findings about Services' own annotations (health checks, outlier
/// detection), reported on the Service: a bad value there is ignored and
/// never keeps a route from being served.
fn report_services(snap: &Snapshot, out: &mut Translation) {
    use kube::ResourceExt;
    for svc in snap.services.values() {
        let raw = svc.annotations();
        if !crate::annotations::has_ours(raw) {
            continue;
        }
        let parsed = crate::annotations::parse_service(raw);
        if parsed.diagnostics.is_empty() {
            continue;
        }
        let report = out
            .reports
            .entry(ObjectRef {
                kind: Kind::Service,
                namespace: svc.namespace().unwrap_or_default(),
                name: svc.name_any(),
            })
            .or_default();
        report.generation = svc.metadata.generation;
        report.uid = svc.metadata.uid.clone();
        report.diagnostics.extend(
            parsed
                .diagnostics
                .iter()
                .map(ingress::annotation_diagnostic),
        );
    }
}

/// Checks that a pattern compiles as the dataplane will compile it.
pub(crate) fn check_regex(pattern: &str) -> Result<(), String> {
    portico_dataplane::route::pattern::compile(pattern, false)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Two objects defining the same host and match is a conflict: precedence
/// picks the oldest object (then namespace/name), and the others are told.
fn report_conflicts(out: &mut Translation) {
    // Borrowed from the routes: this runs over every match of every route
    // on every rebuild, so the key allocates only for header and query
    // conditions, which few matches have.
    type Signature<'r> = (Option<&'r Hostname>, MatchSignature<'r>);
    // A rule without matches matches every path: keyed as the default one.
    let default_match = [RouteMatch::default()];
    let matches = out.config.routes.iter().map(|r| r.rules.len()).sum();
    let mut owners: foldhash::HashMap<Signature<'_>, &Route> =
        foldhash::HashMapExt::with_capacity(matches);
    let mut losers: Vec<(ObjectRef, Diagnostic)> = Vec::new();
    for route in out.config.routes.iter().map(|r| &**r) {
        let hosts: Vec<Option<&Hostname>> = if route.hostnames.is_empty() {
            vec![None]
        } else {
            route.hostnames.iter().map(Some).collect()
        };
        for rule in &route.rules {
            if matches!(rule.action, Action::Deny { .. }) {
                continue;
            }
            let matches = if rule.matches.is_empty() {
                &default_match[..]
            } else {
                &rule.matches[..]
            };
            for m in matches {
                for &host in &hosts {
                    let sig = (host, match_signature(m));
                    let owner = owners.entry(sig).or_insert(route);
                    if std::ptr::eq(*owner, route) || owner.source == route.source {
                        continue;
                    }
                    let (winner, loser) = if precedes(owner, route) {
                        (*owner, route)
                    } else {
                        let old = *owner;
                        *owner = route;
                        (route, old)
                    };
                    let shown_host =
                        host.map_or_else(|| "any host".to_owned(), Hostname::to_string);
                    losers.push((
                        object_ref(loser),
                        Diagnostic::warning(
                            "Conflicted",
                            "spec",
                            format!(
                                "{} on {shown_host} is also defined by {} {}/{}, which is older and wins",
                                describe_match(m),
                                winner.source.kind,
                                winner.source.namespace,
                                winner.source.name,
                            ),
                        ),
                    ));
                }
            }
        }
    }
    for (obj, diag) in losers {
        out.reports.entry(obj).or_default().diagnostics.push(diag);
    }
}

fn precedes(a: &Route, b: &Route) -> bool {
    (a.source.created, &a.source.namespace, &a.source.name)
        <= (b.source.created, &b.source.namespace, &b.source.name)
}

/// What makes two matches the same: path, method, and the header and query
/// conditions in any order (rendered only when there are any).
type MatchSignature<'r> = (&'r PathMatch, Option<&'r Method>, String);

fn match_signature(m: &RouteMatch) -> MatchSignature<'_> {
    let conditions = if m.headers.is_empty() && m.query.is_empty() {
        String::new()
    } else {
        let mut headers: Vec<String> = m.headers.iter().map(|h| format!("{h:?}")).collect();
        headers.sort();
        let mut query: Vec<String> = m.query.iter().map(|q| format!("{q:?}")).collect();
        query.sort();
        format!("{headers:?}|{query:?}")
    };
    (&m.path, m.method.as_ref(), conditions)
}

fn describe_match(m: &RouteMatch) -> String {
    let path = match &m.path {
        PathMatch::Exact(p) => format!("exact path {p}"),
        PathMatch::Prefix(p) => format!("path prefix {p}"),
        PathMatch::RegularExpression(p) => format!("path regex {p}"),
    };
    if m.headers.is_empty() && m.query.is_empty() && m.method.is_none() {
        path
    } else {
        format!("{path} (with the same method, header and query matches)")
    }
}

fn object_ref(route: &Route) -> ObjectRef {
    let kind = match route.source.kind.as_str() {
        "HTTPRoute" => Kind::HttpRoute,
        k if k == Kind::GatewayHttpRoute.as_str() => Kind::GatewayHttpRoute,
        k if k == Kind::GrpcRoute.as_str() => Kind::GrpcRoute,
        _ => Kind::Ingress,
    };
    ObjectRef {
        kind,
        namespace: route.source.namespace.clone(),
        name: route.source.name.clone(),
    }
}

/// Seconds since the epoch of an object's creation; objects without one
/// (manifests) count as created at the epoch, so names break the tie.
pub(crate) fn created_secs(
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> i64 {
    meta.creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
        .unwrap_or(0)
}
