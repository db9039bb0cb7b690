//! GatewayClasses and Gateway listeners: which classes are ours, where each
//! listener is served, its certificate, which routes it allows, and the
//! conflicts between listeners sharing a port.

use std::collections::{BTreeMap, BTreeSet};

use kube::ResourceExt;
use portico_crds::gateway::Gateway;
use portico_crds::gateway::gateways::{
    GatewayListeners, GatewayListenersAllowedRoutesNamespacesFrom,
    GatewayListenersAllowedRoutesNamespacesSelector, GatewayListenersTlsMode,
};
use portico_dataplane::model::{Hostname, PortProtocol};

use super::{
    ClassResult, Cond, GROUP, GatewayResult, ListenerResult, Results, RouteKind, ServedPort,
    grants, parse_hostname, report_of,
};
use crate::diagnostics::{Diagnostic, Kind, ObjectRef};
use crate::snapshot::{Key, Snapshot, key};
use crate::translate::{Settings, Translation, created_secs, tls};

const REASON_UNSUPPORTED_ADDRESS: &str = "UnsupportedAddress";

/// Where a listener's routes are served.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Place {
    MainHttp,
    MainHttps,
    /// A port of its own, after the offset.
    Port(u16),
}

/// Which namespaces' routes a listener accepts.
#[derive(Clone, Debug)]
pub(super) enum AllowedNamespaces {
    Same,
    All,
    Selector(GatewayListenersAllowedRoutesNamespacesSelector),
}

/// One listener of a Gateway of ours, checked.
#[derive(Debug)]
pub(super) struct Listener {
    pub(super) gateway: Key,
    pub(super) index: usize,
    pub(super) name: String,
    /// As written: `parentRefs[].port` names it.
    pub(super) port: i32,
    pub(super) place: Place,
    pub(super) protocol: PortProtocol,
    pub(super) hostname: Option<Hostname>,
    pub(super) namespaces: AllowedNamespaces,
    pub(super) kinds: Vec<RouteKind>,
    /// The TLS Secret of an HTTPS listener, when it resolved.
    pub(super) cert: Option<Key>,
    /// Hostnames of the routes attached, for the certificate of a listener
    /// without a hostname of its own.
    pub(super) route_hostnames: Vec<Hostname>,
    pub(super) result: ListenerResult,
    pub(super) diagnostics: Vec<Diagnostic>,
}

impl Listener {
    /// Accepted, without conflict, its references resolved: routes attach
    /// to it and it is served.
    pub(super) fn serves(&self) -> bool {
        self.result.accepted.status && !self.result.conflicted.status && self.cert_ready()
    }

    fn cert_ready(&self) -> bool {
        self.protocol == PortProtocol::Http || self.cert.is_some()
    }

    pub(super) fn gateway_ref(&self) -> ObjectRef {
        ObjectRef {
            kind: Kind::Gateway,
            namespace: self.gateway.0.clone(),
            name: self.gateway.1.clone(),
        }
    }

    /// Hostnames, if any, as the most specific first: exact, then longer
    /// wildcard suffixes, then none.
    pub(super) fn specificity(&self) -> (u8, usize) {
        match &self.hostname {
            Some(Hostname::Exact(s)) => (2, s.len()),
            Some(Hostname::Wildcard(s) | Hostname::WildcardAnyDepth(s)) => (1, s.len()),
            None => (0, 0),
        }
    }
}

/// The names of our GatewayClasses, each reported Accepted.
pub(super) fn classes(
    snap: &Snapshot,
    settings: &Settings,
    out: &mut Translation,
) -> BTreeSet<String> {
    let mut ours = BTreeSet::new();
    for (name, class) in &snap.gateway_classes {
        if class.spec.controller_name != settings.gateway_controller_name {
            continue;
        }
        ours.insert(name.clone());
        report_of(out, Kind::GatewayClass, &class.metadata);
        out.gateway.classes.insert(
            name.clone(),
            ClassResult {
                generation: class.metadata.generation,
                accepted: Cond::yes("Accepted", "handled by Portico"),
            },
        );
    }
    ours
}

/// Every listener of every Gateway of `classes`, oldest Gateway first (it
/// wins a conflict), checked and with conflicts decided.
pub(super) fn listeners(
    snap: &Snapshot,
    settings: &Settings,
    classes: &BTreeSet<String>,
    out: &mut Translation,
) -> Vec<Listener> {
    let mut gateways: Vec<&Gateway> = snap
        .gateways
        .iter()
        .map(|g| &**g)
        .filter(|g| classes.contains(&g.spec.gateway_class_name))
        .collect();
    gateways.sort_by_key(|g| (created_secs(&g.metadata), key(*g)));
    let mut all = Vec::new();
    for gw in gateways {
        let report = report_of(out, Kind::Gateway, &gw.metadata);
        // Portico is reached at its Service's addresses; it cannot take
        // others.
        let unsupported_address = gw.spec.addresses.as_ref().is_some_and(|a| !a.is_empty());
        let (accepted, programmed) = if unsupported_address {
            (
                Cond::no(
                    REASON_UNSUPPORTED_ADDRESS,
                    "spec.addresses cannot be assigned: the Gateway is reached at the addresses of Portico's Service",
                ),
                Cond::no("AddressNotAssigned", "no address could be assigned"),
            )
        } else {
            (Cond::yes("Accepted", ""), Cond::yes("Programmed", ""))
        };
        if unsupported_address {
            report.diagnostics.push(Diagnostic::error(
                REASON_UNSUPPORTED_ADDRESS,
                "spec.addresses",
                "Portico cannot assign addresses: the Gateway is reached at the addresses of its Service; the Gateway is not served",
            ));
        }
        out.gateway.gateways.insert(
            key(gw),
            GatewayResult {
                generation: gw.metadata.generation,
                accepted,
                programmed,
                listeners: Vec::new(),
            },
        );
        for (i, l) in gw.spec.listeners.iter().enumerate() {
            let mut listener = check(snap, settings, gw, i, l);
            if unsupported_address {
                listener.result.accepted = Cond::no(
                    "UnsupportedValue",
                    "the Gateway asks for spec.addresses, which Portico cannot assign",
                );
            }
            all.push(listener);
        }
    }
    conflicts(&mut all);
    all
}

/// One listener: its place, protocol, hostname, certificate and allowed
/// routes; conflicts come later.
fn check(
    snap: &Snapshot,
    settings: &Settings,
    gw: &Gateway,
    index: usize,
    l: &GatewayListeners,
) -> Listener {
    let namespace = gw.namespace().unwrap_or_default();
    let field = format!("spec.listeners[{index}]");
    let mut diagnostics = Vec::new();
    let mut accepted = Cond::yes("Accepted", "");
    let mut resolved_refs = Cond::yes("ResolvedRefs", "");
    let mut refuse = |cond: &mut Cond, reason: &'static str, at: String, message: String| {
        if cond.status {
            *cond = Cond::no(reason, message.clone());
        }
        diagnostics.push(Diagnostic::error(reason, at, message));
    };
    let protocol = match l.protocol.as_str() {
        "HTTP" => PortProtocol::Http,
        "HTTPS" => PortProtocol::Https,
        other => {
            refuse(
                &mut accepted,
                "UnsupportedProtocol",
                format!("{field}.protocol"),
                format!(
                    "{other:?} is not supported (HTTP and HTTPS are); the listener is not served"
                ),
            );
            PortProtocol::Http
        }
    };
    let port = u16::try_from(l.port).ok().filter(|p| *p > 0);
    let place = match (port, protocol) {
        (Some(p), PortProtocol::Http) if p == settings.gateway_http_port => Some(Place::MainHttp),
        (Some(p), PortProtocol::Https) if p == settings.gateway_https_port => {
            Some(Place::MainHttps)
        }
        // The main listeners speak one protocol each.
        (Some(p), _) if p == settings.gateway_http_port || p == settings.gateway_https_port => None,
        (Some(p), _) => p.checked_add(settings.gateway_port_offset).map(Place::Port),
        (None, _) => None,
    };
    if place.is_none() && accepted.status {
        refuse(
            &mut accepted,
            "PortUnavailable",
            format!("{field}.port"),
            format!(
                "port {} cannot serve {}: ports {} (HTTP) and {} (HTTPS) are the main listeners', and a port plus the offset {} must stay below 65536; the listener is not served",
                l.port,
                l.protocol,
                settings.gateway_http_port,
                settings.gateway_https_port,
                settings.gateway_port_offset
            ),
        );
    }
    let hostname = match l.hostname.as_deref() {
        None | Some("") => None,
        Some(h) => match parse_hostname(h) {
            Some(h) => Some(h),
            None => {
                refuse(
                    &mut accepted,
                    "UnsupportedValue",
                    format!("{field}.hostname"),
                    format!(
                        "{h:?} is not a host name or `*.` wildcard; the listener is not served"
                    ),
                );
                None
            }
        },
    };
    let mut cert = None;
    if protocol == PortProtocol::Https && accepted.status {
        match certificate(snap, &namespace, l, &field) {
            Ok(k) => cert = Some(k),
            Err((reason, at, message)) => {
                let cond = if reason == "UnsupportedValue" {
                    &mut accepted
                } else {
                    &mut resolved_refs
                };
                refuse(cond, reason, at, message);
            }
        }
    }
    let allowed = l.allowed_routes.as_ref();
    let namespaces = match allowed
        .and_then(|a| a.namespaces.as_ref())
        .map(|n| (n.from.clone(), n.selector.clone()))
    {
        None | Some((None | Some(GatewayListenersAllowedRoutesNamespacesFrom::Same), _)) => {
            AllowedNamespaces::Same
        }
        Some((Some(GatewayListenersAllowedRoutesNamespacesFrom::All), _)) => AllowedNamespaces::All,
        Some((Some(GatewayListenersAllowedRoutesNamespacesFrom::Selector), Some(sel))) => {
            AllowedNamespaces::Selector(sel)
        }
        Some((Some(GatewayListenersAllowedRoutesNamespacesFrom::Selector), None)) => {
            refuse(
                &mut accepted,
                "UnsupportedValue",
                format!("{field}.allowedRoutes.namespaces.selector"),
                "from: Selector needs a selector; the listener is not served".into(),
            );
            AllowedNamespaces::Same
        }
    };
    let mut kinds = Vec::new();
    match allowed
        .and_then(|a| a.kinds.as_ref())
        .filter(|k| !k.is_empty())
    {
        None => kinds = vec![RouteKind::Http, RouteKind::Grpc],
        Some(list) => {
            for (k, rk) in list.iter().enumerate() {
                let group = rk.group.as_deref().unwrap_or(GROUP);
                match (group, rk.kind.as_str()) {
                    (GROUP, "HTTPRoute") => kinds.push(RouteKind::Http),
                    (GROUP, "GRPCRoute") => kinds.push(RouteKind::Grpc),
                    (g, kind) => refuse(
                        &mut resolved_refs,
                        "InvalidRouteKinds",
                        format!("{field}.allowedRoutes.kinds[{k}]"),
                        format!(
                            "{kind} of group {g:?} cannot attach to an {} listener; left out",
                            l.protocol
                        ),
                    ),
                }
            }
            kinds.dedup();
        }
    }
    Listener {
        gateway: key(gw),
        index,
        name: l.name.clone(),
        port: l.port,
        place: place.unwrap_or(Place::MainHttp),
        protocol,
        hostname,
        namespaces,
        kinds: kinds.clone(),
        cert,
        route_hostnames: Vec::new(),
        result: ListenerResult {
            name: l.name.clone(),
            served_port: None,
            attached_routes: 0,
            supported_kinds: kinds.iter().map(|k| k.as_str()).collect(),
            accepted,
            programmed: Cond::no("Pending", ""),
            resolved_refs,
            conflicted: Cond::no("NoConflicts", ""),
        },
        diagnostics,
    }
}

/// The Secret of an HTTPS listener: `tls.mode` Terminate, the first
/// `certificateRefs` entry a kubernetes.io/tls Secret this Gateway may
/// read. Else the reason, the field and the message.
fn certificate(
    snap: &Snapshot,
    namespace: &str,
    l: &GatewayListeners,
    field: &str,
) -> Result<Key, (&'static str, String, String)> {
    let tls = l.tls.as_ref();
    if matches!(
        tls.and_then(|t| t.mode.as_ref()),
        Some(GatewayListenersTlsMode::Passthrough)
    ) {
        return Err((
            "UnsupportedValue",
            format!("{field}.tls.mode"),
            "an HTTPS listener terminates TLS; Passthrough is not supported; the listener is not served".into(),
        ));
    }
    let refs = tls
        .and_then(|t| t.certificate_refs.as_deref())
        .unwrap_or_default();
    let Some(r) = refs.first() else {
        return Err((
            "InvalidCertificateRef",
            format!("{field}.tls.certificateRefs"),
            "an HTTPS listener needs a certificate; the listener is not served".into(),
        ));
    };
    let at = format!("{field}.tls.certificateRefs[0]");
    if !r.group.as_deref().unwrap_or("").is_empty()
        || r.kind.as_deref().unwrap_or("Secret") != "Secret"
    {
        return Err((
            "InvalidCertificateRef",
            at,
            "only core Secrets are supported; the listener is not served".into(),
        ));
    }
    let target = r.namespace.clone().unwrap_or_else(|| namespace.to_owned());
    if target != namespace
        && !grants::permits(
            snap,
            (GROUP, "Gateway", namespace),
            ("", "Secret", &target, &r.name),
        )
    {
        return Err((
            "RefNotPermitted",
            format!("{at}.namespace"),
            format!(
                "Secret {target}/{} is in another namespace and no ReferenceGrant there allows it; the listener is not served",
                r.name
            ),
        ));
    }
    let k = (target, r.name.clone());
    let is_tls = snap
        .secrets
        .get(&k)
        .is_some_and(|s| s.type_.as_deref() == Some("kubernetes.io/tls"));
    if !is_tls {
        return Err((
            "InvalidCertificateRef",
            at,
            format!(
                "no Secret of type kubernetes.io/tls named {}/{}; the listener is not served",
                k.0, k.1
            ),
        ));
    }
    tls::load(snap, &k).map_err(|e| {
        (
            "InvalidCertificateRef",
            at,
            format!("{e}; the listener is not served"),
        )
    })?;
    Ok(k)
}

/// Listeners sharing a place. The first (oldest Gateway, then listener
/// order) decides the protocol of a port of its own, across Gateways.
/// Hostnames conflict within one Gateway only, as the spec defines listener
/// conflicts: listeners of different Gateways on one place share it, their
/// routes told apart by host and path as on one listener. HTTPS is the
/// exception: one SNI name gets one certificate, so another Gateway's
/// listener for the same hostname (or none) is shared only when it names
/// the same Secret. Later ones are `Conflicted` and not served.
fn conflicts(all: &mut [Listener]) {
    let mut protocols: BTreeMap<Place, (PortProtocol, usize)> = BTreeMap::new();
    let mut hosts: BTreeMap<(Place, Option<Hostname>), Vec<usize>> = BTreeMap::new();
    for i in 0..all.len() {
        if !all[i].result.accepted.status {
            continue;
        }
        let place = all[i].place;
        let (first_protocol, first) = *protocols.entry(place).or_insert((all[i].protocol, i));
        let conflict = if first_protocol != all[i].protocol {
            Some((
                "ProtocolConflict",
                format!(
                    "port {} is already {:?} for Gateway {}/{} listener {}",
                    all[i].port,
                    first_protocol,
                    all[first].gateway.0,
                    all[first].gateway.1,
                    all[first].name
                ),
            ))
        } else {
            let owners = hosts.entry((place, all[i].hostname.clone())).or_default();
            let l = &all[i];
            let same_gateway = owners.iter().find(|&&j| all[j].gateway == l.gateway);
            let other_cert = owners.iter().find(|&&j| {
                l.protocol == PortProtocol::Https
                    && l.cert.is_some()
                    && all[j].cert.is_some()
                    && all[j].cert != l.cert
            });
            let hostname = l
                .hostname
                .as_ref()
                .map_or_else(|| "(any)".to_owned(), super::hostname_text);
            let found = match (same_gateway, other_cert) {
                (Some(&j), _) => Some((j, String::new())),
                (None, Some(&j)) => Some((
                    j,
                    all[j].cert.as_ref().map_or_else(String::new, |(ns, name)| {
                        format!(" with another certificate (Secret {ns}/{name}); one name gets one certificate")
                    }),
                )),
                (None, None) => None,
            };
            if found.is_none() {
                owners.push(i);
            }
            found.map(|(j, why)| {
                (
                    "HostnameConflict",
                    format!(
                        "port {} and hostname {hostname} are already served for Gateway {}/{} listener {}, which comes first{why}",
                        l.port, all[j].gateway.0, all[j].gateway.1, all[j].name
                    ),
                )
            })
        };
        if let Some((reason, message)) = conflict {
            let l = &mut all[i];
            l.diagnostics.push(Diagnostic::error(
                reason,
                format!("spec.listeners[{}]", l.index),
                format!("{message}; the listener is not served"),
            ));
            l.result.conflicted = Cond::yes(reason, message);
        }
    }
}

/// Whether a listener is programmed, as translation sees it; after the
/// publish, [`Results::apply_port_outcomes`] takes back a port the
/// dataplane could not open.
fn programmed(l: &Listener) -> Cond {
    if l.serves() {
        Cond::yes("Programmed", "")
    } else {
        Cond::no("Invalid", "the listener is not served")
    }
}

/// Writes the listeners' results and findings onto their Gateways.
pub(super) fn finish(listeners: &[Listener], out: &mut Translation) {
    for l in listeners {
        let mut result = l.result.clone();
        result.programmed = programmed(l);
        if l.serves() {
            result.served_port = Some(match l.place {
                Place::MainHttp => ServedPort::Main(PortProtocol::Http),
                Place::MainHttps => ServedPort::Main(PortProtocol::Https),
                Place::Port(p) => ServedPort::Port(p),
            });
        }
        if let Some(gw) = out.gateway.gateways.get_mut(&l.gateway) {
            gw.listeners.push(result);
        }
        out.reports
            .entry(l.gateway_ref())
            .or_default()
            .diagnostics
            .extend(l.diagnostics.iter().cloned());
    }
    for gw in out.gateway.gateways.values_mut() {
        if gw
            .listeners
            .iter()
            .any(|l| !l.accepted.status && l.accepted.message.contains("spec.addresses"))
        {
            gw.accepted = Cond::no(
                "UnsupportedAddress",
                "spec.addresses cannot be assigned: the Gateway is reached at the addresses of Portico's Service",
            );
            gw.programmed = Cond::no("AddressNotAssigned", "no address could be assigned");
            continue;
        }
        summarize(gw);
    }
}

/// A Gateway's own conditions from its listeners': not accepted when none
/// is served, not programmed when none is programmed.
fn summarize(gw: &mut GatewayResult) {
    let total = gw.listeners.len();
    let valid = gw.listeners.iter().filter(|l| l.programmed.status).count();
    if valid < total {
        gw.accepted = Cond {
            status: valid > 0,
            reason: "ListenersNotValid",
            message: format!("{} of {total} listeners are not served", total - valid),
        };
    }
    if valid == 0 {
        gw.programmed = Cond::no("Invalid", "no listener is served");
    }
}

impl Results {
    /// The dataplane's bind results after a publish
    /// (`PublishReport::ports`): a listener on a Gateway port that could not
    /// be opened (address in use, no permission) is neither accepted
    /// (`PortUnavailable`) nor programmed, and its Gateway says so. The
    /// dataplane tries the port again on the next publish.
    pub fn apply_port_outcomes(&mut self, outcomes: &[(u16, Result<(), String>)]) {
        for gw in self.gateways.values_mut() {
            let mut failed = false;
            for l in &mut gw.listeners {
                let Some(ServedPort::Port(port)) = l.served_port else {
                    continue;
                };
                if let Some((_, Err(e))) = outcomes.iter().find(|(p, _)| *p == port) {
                    let why = format!("port {port} could not be opened: {e}");
                    l.accepted = Cond::no("PortUnavailable", why.clone());
                    l.programmed = Cond::no("Invalid", why);
                    l.served_port = None;
                    failed = true;
                }
            }
            if failed {
                summarize(gw);
            }
        }
    }
}
