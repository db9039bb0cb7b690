//! Gateway API (`gateway.networking.k8s.io`): GatewayClasses, Gateways and
//! their listeners, HTTPRoutes and GRPCRoutes attached to them, and the
//! ReferenceGrants that let references cross namespaces, translated into
//! the same [`RouteConfig`](portico_dataplane::model::RouteConfig) as
//! Ingresses and `portico.dev` HTTPRoutes, plus a typed status for each
//! ([`Results`]).
//!
//! One file per concern: `listeners` (classes, listeners, ports,
//! conflicts), `attach` (parentRefs, allowedRoutes, hostnames), `http` and
//! `grpc` (rules and backends), `grants` (ReferenceGrant). Where a listener
//! lands: a listener on `--gateway-http-port` (HTTP) or
//! `--gateway-https-port` (HTTPS) is served by the main listener, its
//! routes in `RouteConfig::routes`; any other port becomes a
//! [`GatewayPort`] at `port + --gateway-port-offset`.

use std::collections::BTreeMap;
use std::sync::Arc;

use portico_dataplane::model::{
    Filter, GatewayPort, Hostname, HttpsRedirect, PortProtocol, Route, SourceRef,
};

use super::{ObjectReport, TlsBinding, Translation};
use crate::diagnostics::{Kind, ObjectRef};
use crate::snapshot::{Key, Snapshot};

mod attach;
mod grants;
mod grpc;
mod http;
mod listeners;
#[cfg(test)]
mod tests;

use listeners::{Listener, Place};

/// `--gateway-controller-name`'s default.
pub const DEFAULT_CONTROLLER_NAME: &str = "portico.dev/gateway-controller";
/// The Gateway API group.
pub const GROUP: &str = portico_crds::gateway::GROUP;

/// One condition: `status` True or False, a CamelCase reason, a message.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Cond {
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Cond {
    pub fn yes(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: true,
            reason,
            message: message.into(),
        }
    }

    pub fn no(reason: &'static str, message: impl Into<String>) -> Self {
        Self {
            status: false,
            reason,
            message: message.into(),
        }
    }
}

/// Everything Gateway API status says, from one translation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Results {
    /// GatewayClasses of `--gateway-controller-name`, by name.
    pub classes: BTreeMap<String, ClassResult>,
    /// Gateways of those classes.
    pub gateways: BTreeMap<Key, GatewayResult>,
    /// Routes with at least one parentRef to one of those Gateways; only
    /// those parents are listed (others belong to other controllers). A
    /// route with none but an entry of ours left in its `status.parents`
    /// is here without parents, so that entry is removed.
    pub routes: BTreeMap<RouteRef, RouteResult>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ClassResult {
    pub generation: Option<i64>,
    pub accepted: Cond,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GatewayResult {
    pub generation: Option<i64>,
    pub accepted: Cond,
    pub programmed: Cond,
    /// In `spec.listeners` order.
    pub listeners: Vec<ListenerResult>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ListenerResult {
    pub name: String,
    /// Where it is served: the main listener or a port of its own (after
    /// `--gateway-port-offset`); `None` when it is not served.
    pub served_port: Option<ServedPort>,
    /// Routes accepted on this listener.
    pub attached_routes: i32,
    /// Route kinds (group `gateway.networking.k8s.io`) it accepts.
    pub supported_kinds: Vec<&'static str>,
    pub accepted: Cond,
    pub programmed: Cond,
    pub resolved_refs: Cond,
    pub conflicted: Cond,
}

/// Where a listener is served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum ServedPort {
    /// By the main HTTP or HTTPS listener (`--http-port`/`--https-port`).
    Main(PortProtocol),
    /// A port of its own.
    Port(u16),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RouteKind {
    Http,
    Grpc,
}

impl RouteKind {
    pub fn as_str(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }

    fn object_kind(self) -> Kind {
        match self {
            RouteKind::Http => Kind::GatewayHttpRoute,
            RouteKind::Grpc => Kind::GrpcRoute,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteRef {
    pub kind: RouteKind,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct RouteResult {
    pub generation: Option<i64>,
    /// One per parentRef naming a Gateway of ours, in `spec.parentRefs`
    /// order.
    pub parents: Vec<ParentResult>,
    /// `status.parents` as found (every controller's): the list is one
    /// atomic value, so a write keeps the other controllers' entries.
    #[serde(skip)]
    pub existing_parents: Vec<serde_json::Value>,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct ParentResult {
    pub parent: ParentRef,
    pub accepted: Cond,
    pub resolved_refs: Cond,
    /// Some rules are not served (Gateway API's `PartiallyInvalid`).
    pub partially_invalid: Option<Cond>,
}

/// A route's `parentRefs[]` entry, defaults applied.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    #[serde(default)]
    pub group: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub namespace: Option<String>,
    pub name: String,
    #[serde(default)]
    pub section_name: Option<String>,
    #[serde(default)]
    pub port: Option<i32>,
}

impl ParentRef {
    /// Names a Gateway (the default group and kind).
    fn is_gateway(&self) -> bool {
        self.group.as_deref().unwrap_or(GROUP) == GROUP
            && self.kind.as_deref().unwrap_or("Gateway") == "Gateway"
    }
}

/// The certificates of a Gateway HTTPS port of its own: becomes a
/// `listen::tls::PortCerts` once the Secrets are loaded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortTls {
    pub port: u16,
    /// Host names (Gateway `*.` wildcards as written) and their Secret;
    /// exact hostnames first, so they win a name claimed twice.
    pub bindings: Vec<(Vec<String>, Key)>,
    /// The certificate of the port's listener without a hostname.
    pub default: Option<Key>,
}

impl PortTls {
    pub fn secrets(&self) -> impl Iterator<Item = &Key> {
        self.bindings
            .iter()
            .map(|(_, k)| k)
            .chain(self.default.as_ref())
    }
}

/// A Gateway `*.suffix` as written, for certificate bindings.
fn hostname_text(h: &Hostname) -> String {
    match h {
        Hostname::Exact(s) => s.clone(),
        Hostname::Wildcard(s) | Hostname::WildcardAnyDepth(s) => format!("*.{s}"),
    }
}

/// Parses a Gateway API hostname: exact, or `*.` then a name (any depth).
pub(super) fn parse_hostname(h: &str) -> Option<Hostname> {
    match h.strip_prefix("*.") {
        Some(suffix) if !suffix.starts_with('*') => match Hostname::parse(suffix) {
            Some(Hostname::Exact(s)) => Some(Hostname::WildcardAnyDepth(s)),
            _ => None,
        },
        Some(_) => None,
        None => Hostname::parse(h).filter(|h| matches!(h, Hostname::Exact(_))),
    }
}

/// Converts between two serde shapes of the same API object (kopium's
/// per-kind types and the shared ones translation reads).
fn reshape<T: serde::Serialize, U: serde::de::DeserializeOwned>(v: &T) -> Result<U, String> {
    serde_json::to_value(v)
        .and_then(serde_json::from_value)
        .map_err(|e| e.to_string())
}

/// What the last translation of Gateway API routes keeps for the next
/// ([`super::translate_reusing`]), by the route object:
/// - its translation ([`http::GatewayRoute`]: what attachment and status
///   read, findings), taken again while the object is the same `Arc`
///   (watch caches and the manifest directory keep an unchanged object's)
///   and nothing else it read changed: the Services it looked up and
///   their EndpointSlices, ReferenceGrants, resolved ExternalNames
///   ([`Snapshot::route_inputs`]);
/// - the `Route`s its rules were placed as, taken again, by `Arc`, when
///   its translation was and it is attached exactly as last time. Sharing
///   them lets the table build carry their compiled rules over. The rules
///   are not kept apart from them: a kept route attached differently is
///   translated again for its rules.
///
/// Attachment itself runs afresh every time: it depends on every Gateway
/// and on the other routes (`attach::share_hostnames`), and is cheap.
#[derive(Default)]
pub struct Memo(super::kept::Kept<Entry>);

impl Memo {
    /// How many routes the last translation took from the memo.
    pub fn reused(&self) -> usize {
        self.0.reused()
    }

    /// The translation of `object`: the kept one (without its rules), or
    /// a new one, kept with the Services it looked up; and its entry's
    /// address.
    fn route(&mut self, snap: &Snapshot, object: Held) -> (Arc<http::GatewayRoute>, usize, Rules) {
        let address = object.address();
        if let Some(e) = self.0.take(address) {
            return (Arc::clone(&e.route), address, None);
        }
        let ((route, rules), services) = super::backends::recording(|| object.translate(snap));
        let route = Arc::new(route);
        let entry = Entry {
            object,
            route: Arc::clone(&route),
            placed: None,
        };
        self.0.insert(address, entry, services);
        (route, address, Some(rules))
    }
}

/// A route's rules, when they were translated this time.
type Rules = Option<Vec<portico_dataplane::model::Rule>>;

/// A route object of either kind.
#[derive(Clone)]
enum Held {
    Http(Arc<portico_crds::gateway::HttpRoute>),
    Grpc(Arc<portico_crds::gateway::GrpcRoute>),
}

impl Held {
    fn address(&self) -> usize {
        match self {
            Held::Http(r) => Arc::as_ptr(r) as usize,
            Held::Grpc(r) => Arc::as_ptr(r) as usize,
        }
    }

    fn translate(&self, snap: &Snapshot) -> http::Translated {
        match self {
            Held::Http(r) => http::translate(snap, r),
            Held::Grpc(r) => grpc::translate(snap, r),
        }
    }
}

struct Entry {
    /// Held so that its address names it while it is here, and to be
    /// translated again for its rules.
    object: Held,
    route: Arc<http::GatewayRoute>,
    /// Where the route was last placed, and as what.
    placed: Option<Placed>,
}

/// A route's placement and the `Route`s made of it.
struct Placed {
    placements: Vec<Placement>,
    redirect_port: Option<u16>,
    routes: Vec<(Place, Arc<Route>)>,
}

/// One attachment as placing reads it: where it is served, its hostnames
/// (`None`: every host) and the names it also serves (see
/// [`attach::share_hostnames`]).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Placement {
    place: Place,
    hostnames: Option<Vec<Hostname>>,
    also: Vec<Hostname>,
}

/// Translates every Gateway of our classes and the routes attached to them.
pub(super) fn translate_all(
    snap: &Snapshot,
    settings: &super::Settings,
    out: &mut Translation,
    mut memo: Option<&mut Memo>,
) {
    // Without a class of ours, routes are still read: one may carry a
    // stale entry of ours in its status to take back.
    let classes = listeners::classes(snap, settings, out);
    let mut listeners = listeners::listeners(snap, settings, &classes, out);
    let objects = snap
        .gateway_http_routes
        .iter()
        .map(|r| Held::Http(Arc::clone(r)))
        .chain(snap.grpc_routes.iter().map(|r| Held::Grpc(Arc::clone(r))));
    // Each route's translation, its entry's address (with a memo) and its
    // rules (when translated this time).
    let mut routes = Vec::new();
    let mut addresses = Vec::new();
    let mut rules: Vec<Rules> = Vec::new();
    if let Some(m) = memo.as_deref_mut() {
        m.0.start(snap.route_inputs(), String::new());
    }
    for object in objects {
        let (route, address, r) = match memo.as_deref_mut() {
            Some(m) => m.route(snap, object),
            None => {
                let (route, r) = object.translate(snap);
                (Arc::new(route), 0, Some(r))
            }
        };
        routes.push(route);
        addresses.push(address);
        rules.push(r);
    }
    let mut attached = attach::attach_all(
        snap,
        &routes,
        &mut listeners,
        &settings.gateway_controller_name,
        out,
    );
    attach::share_hostnames(&mut attached, &listeners);
    // Routes by the place that serves them.
    let mut placed: BTreeMap<Place, Vec<Arc<Route>>> = BTreeMap::new();
    let each = routes.iter().zip(&addresses).zip(rules).zip(attached);
    for (((route, address), rules), attachments) in each {
        let placements: Vec<Placement> = attachments
            .into_iter()
            .map(|a| Placement {
                place: listeners[a.listener].place,
                hostnames: a.hostnames,
                also: a.also,
            })
            .collect();
        let entry = memo.as_deref_mut().and_then(|m| m.0.get_mut(*address));
        let made = match entry {
            Some(Entry {
                placed: Some(last), ..
            }) if last.placements == placements
                && last.redirect_port == settings.https_redirect_port =>
            {
                last.routes.clone()
            }
            Some(e) => {
                // Kept, but attached differently: its rules again.
                let rules = rules.unwrap_or_else(|| e.object.translate(snap).1);
                let made = place_route(route, &rules, &placements, settings);
                e.placed = Some(Placed {
                    placements,
                    redirect_port: settings.https_redirect_port,
                    routes: made.clone(),
                });
                made
            }
            None => place_route(route, &rules.unwrap_or_default(), &placements, settings),
        };
        for (place, r) in made {
            placed.entry(place).or_default().push(r);
        }
    }
    if let Some(m) = memo {
        m.0.sweep();
    }
    for (place, routes) in placed {
        match place {
            Place::MainHttp | Place::MainHttps => out.config.routes.extend(routes),
            Place::Port(port) => {
                let protocol = listeners
                    .iter()
                    .find(|l| l.place == place && l.serves())
                    .map_or(PortProtocol::Http, |l| l.protocol);
                out.config.ports.push(GatewayPort {
                    port,
                    protocol,
                    routes,
                });
            }
        }
    }
    // Every served port, even with no route: the listener is open.
    for l in listeners.iter().filter(|l| l.serves()) {
        if let Place::Port(port) = l.place
            && !out.config.ports.iter().any(|p| p.port == port)
        {
            out.config
                .ports
                .push(GatewayPort::new(port, l.protocol, Vec::new()));
        }
    }
    out.config.ports.sort_by_key(|p| p.port);
    certificates(&listeners, out);
    listeners::finish(&listeners, out);
}

/// One route's `Route`s, by place, in the order they are served: its
/// hostnames on each are the union of its attachments' there.
fn place_route(
    route: &http::GatewayRoute,
    rules: &[portico_dataplane::model::Rule],
    placements: &[Placement],
    settings: &super::Settings,
) -> Vec<(Place, Arc<Route>)> {
    let mut by_place: BTreeMap<Place, Option<Vec<Hostname>>> = BTreeMap::new();
    // Names a catch-all attachment also serves, by place.
    let mut also: BTreeMap<Place, Vec<Hostname>> = BTreeMap::new();
    for a in placements {
        let place = a.place;
        let entry = by_place.entry(place).or_insert_with(|| Some(Vec::new()));
        match (entry.as_mut(), &a.hostnames) {
            // A listener without hostname and a route without: every host
            // of the place (its default virtual host).
            (_, None) => *entry = None,
            (Some(list), Some(hs)) => {
                for h in hs {
                    if !list.contains(h) {
                        list.push(h.clone());
                    }
                }
            }
            (None, Some(_)) => {}
        }
        let names = also.entry(place).or_default();
        for h in &a.also {
            if !names.contains(h) {
                names.push(h.clone());
            }
        }
    }
    let build = |hostnames: Option<Vec<Hostname>>| {
        Route::new(route.id(), hostnames.unwrap_or_default(), rules.to_vec()).with_source(
            SourceRef {
                kind: route.kind.object_kind().as_str().into(),
                namespace: route.namespace.clone(),
                name: route.name.clone(),
                created: route.created,
            },
        )
    };
    // A route of every host is also put under the names other routes of
    // its place name, so it competes there too.
    let mut also_at = |place: Place| {
        let names = also.remove(&place).unwrap_or_default();
        (!names.is_empty()).then(|| build(Some(names)))
    };
    let redirect = |mut r: Route| {
        r.add_to_every_rule(&[Filter::HttpsRedirect(HttpsRedirect {
            port: settings.https_redirect_port,
            preserve_trailing_slash: true,
        })]);
        r
    };
    let mut out = Vec::new();
    let mut put = |place: Place, r: Route| out.push((place, r.into_shared()));
    // The main listeners share one table: names attached only over HTTPS
    // are redirected there over HTTP, never served in clear.
    let http = by_place.remove(&Place::MainHttp);
    let https_only = match (&http, by_place.remove(&Place::MainHttps)) {
        (_, None) | (Some(None), _) => None,
        (None, Some(s)) => Some(s),
        (Some(Some(h)), Some(None)) => (!h.is_empty()).then_some(None),
        (Some(Some(h)), Some(Some(s))) => {
            let rest: Vec<Hostname> = s.into_iter().filter(|n| !h.contains(n)).collect();
            (!rest.is_empty()).then_some(Some(rest))
        }
    };
    let (http_also, https_also) = (also_at(Place::MainHttp), also_at(Place::MainHttps));
    if let Some(h) = http {
        let every_host = h.is_none();
        put(Place::MainHttp, build(h));
        if every_host && let Some(r) = http_also {
            put(Place::MainHttp, r);
        }
    }
    if let Some(s) = https_only {
        let every_host = s.is_none();
        put(Place::MainHttps, redirect(build(s)));
        if every_host && let Some(r) = https_also {
            put(Place::MainHttps, redirect(r));
        }
    }
    for (place, hostnames) in by_place {
        let every_host = hostnames.is_none();
        put(place, build(hostnames));
        if every_host && let Some(r) = also_at(place) {
            put(place, r);
        }
    }
    out
}

/// HTTPS listeners' certificates: on the main listener, bindings for the
/// listener's hostname (or, without one, its routes' hostnames); on a port
/// of its own, that port's `PortTls`.
fn certificates(listeners: &[Listener], out: &mut Translation) {
    let mut ports: BTreeMap<u16, PortTls> = BTreeMap::new();
    // Exact hostnames first: they win a name a wildcard also covers.
    let mut order: Vec<&Listener> = listeners
        .iter()
        .filter(|l| l.serves() && l.cert.is_some())
        .collect();
    order.sort_by_key(|l| !matches!(l.hostname, Some(Hostname::Exact(_))));
    for l in order {
        let Some(secret) = l.cert.clone() else {
            continue;
        };
        let hosts: Vec<String> = match &l.hostname {
            Some(h) => vec![hostname_text(h)],
            None => l
                .route_hostnames
                .iter()
                .map(hostname_text)
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect(),
        };
        match l.place {
            Place::MainHttps => {
                if !hosts.is_empty() {
                    out.tls.push(TlsBinding {
                        hosts,
                        secret,
                        source: l.gateway_ref(),
                        field: format!("spec.listeners[{}].tls.certificateRefs[0]", l.index),
                    });
                }
            }
            Place::Port(port) => {
                let entry = ports.entry(port).or_insert_with(|| PortTls {
                    port,
                    bindings: Vec::new(),
                    default: None,
                });
                if l.hostname.is_none() {
                    entry.default.get_or_insert(secret);
                } else {
                    entry.bindings.push((hosts, secret));
                }
            }
            Place::MainHttp => {}
        }
    }
    out.port_tls.extend(ports.into_values());
}

/// The report of an object, created with its generation and uid.
fn report_of<'a>(
    out: &'a mut Translation,
    kind: Kind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
) -> &'a mut ObjectReport {
    let obj = ObjectRef {
        kind,
        namespace: meta.namespace.clone().unwrap_or_default(),
        name: meta.name.clone().unwrap_or_default(),
    };
    let report = out.reports.entry(obj).or_default();
    report.generation = meta.generation;
    report.uid = meta.uid.clone();
    report
}
