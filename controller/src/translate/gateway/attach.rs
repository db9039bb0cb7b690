//! Route attachment: each `parentRefs[]` entry naming a Gateway of ours is
//! matched to its listeners (`sectionName`, `port`), kept to those whose
//! `allowedRoutes` admit the route, and the route's hostnames intersected
//! with each listener's (wildcards on both sides, any depth). A name a more
//! specific listener on the same port claims is left to that listener's
//! routes. An HTTPRoute and a GRPCRoute on one listener with intersecting
//! hostnames: the older route is accepted, the other is not.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use portico_crds::gateway::gateways::GatewayListenersAllowedRoutesNamespacesSelector;
use portico_dataplane::model::Hostname;

use super::http::GatewayRoute;
use super::listeners::{AllowedNamespaces, Listener, Place};
use super::{Cond, ParentResult, RouteKind, RouteRef, RouteResult, report_of};
use crate::diagnostics::Diagnostic;
use crate::snapshot::Snapshot;
use crate::translate::Translation;

/// A route on one listener.
#[derive(Debug)]
pub(super) struct Attachment {
    pub(super) listener: usize,
    /// The intersected hostnames; `None`: every host (neither the route
    /// nor the listener names one).
    pub(super) hostnames: Option<Vec<Hostname>>,
    /// For a route of every host: the names other routes of its place
    /// name, which it also serves (see [`share_hostnames`]).
    pub(super) also: Vec<Hostname>,
}

/// Per listener and route kind, the hostnames routes took so far (`None`:
/// every host). By kind, so that a route is compared only with the other
/// kind's claims: with routes of one kind, attaching stays linear.
type Taken = BTreeMap<usize, BTreeMap<RouteKind, Vec<Option<Vec<Hostname>>>>>;

/// Attaches every route; returns each route's attachments (same order as
/// `routes`), counts them on the listeners and writes route results and
/// findings. `controller` is our `controllerName`: a route that names none
/// of our Gateways any more but still carries our entry in
/// `status.parents` gets a result without parents, so the writer removes
/// that entry.
pub(super) fn attach_all(
    snap: &Snapshot,
    routes: &[std::sync::Arc<GatewayRoute>],
    listeners: &mut [Listener],
    controller: &str,
    out: &mut Translation,
) -> Vec<Vec<Attachment>> {
    let mut result: Vec<Vec<Attachment>> = routes.iter().map(|_| Vec::new()).collect();
    // Oldest first: it wins an HTTPRoute/GRPCRoute hostname clash.
    let mut order: Vec<usize> = (0..routes.len()).collect();
    order.sort_by_key(|&i| (routes[i].created, &routes[i].namespace, &routes[i].name));
    let mut taken = Taken::new();
    for i in order {
        let route = &routes[i];
        let mut parents = Vec::new();
        let mut findings = Vec::new();
        for (p, parent) in route.parent_refs.iter().enumerate() {
            if !parent.is_gateway() {
                continue;
            }
            let gw_ns = parent
                .namespace
                .clone()
                .unwrap_or_else(|| route.namespace.clone());
            let gw_key = (gw_ns, parent.name.clone());
            if !out.gateway.gateways.contains_key(&gw_key) {
                // Not a Gateway of ours: another controller's to report.
                continue;
            }
            let field = format!("spec.parentRefs[{p}]");
            let accepted = match attach_one(snap, route, parent, &gw_key, listeners, &mut taken) {
                Ok(list) => {
                    for a in &list {
                        let l = &mut listeners[a.listener];
                        l.result.attached_routes += 1;
                        if let Some(hs) = &a.hostnames {
                            l.route_hostnames.extend(hs.iter().cloned());
                        }
                    }
                    result[i].extend(list);
                    Cond::yes("Accepted", "")
                }
                Err(cond) => {
                    findings.push(Diagnostic::error(
                        cond.reason,
                        field.clone(),
                        format!("{}; the route is not served there", cond.message),
                    ));
                    cond
                }
            };
            parents.push(ParentResult {
                parent: parent.clone(),
                accepted,
                resolved_refs: route.resolved_refs.clone(),
                partially_invalid: route.unsupported.clone().filter(|_| route.rules_served > 0),
            });
        }
        if parents.is_empty() {
            let stale = route
                .status_parents
                .iter()
                .any(|p| p.get("controllerName").and_then(|c| c.as_str()) == Some(controller));
            if !stale {
                continue;
            }
            // No findings: the route is not ours any more.
            report_of(out, route.kind.object_kind(), &route.meta);
        } else {
            let report = report_of(out, route.kind.object_kind(), &route.meta);
            report.diagnostics.extend(route.diagnostics.iter().cloned());
            report.diagnostics.extend(findings);
            report.rules_total = route.rules_total;
            report.rules_served = route.rules_served;
        }
        out.gateway.routes.insert(
            route_ref(route),
            RouteResult {
                generation: route.meta.generation,
                parents,
                existing_parents: route.status_parents.clone(),
            },
        );
    }
    result
}

fn route_ref(route: &GatewayRoute) -> RouteRef {
    RouteRef {
        kind: route.kind,
        namespace: route.namespace.clone(),
        name: route.name.clone(),
    }
}

/// The listeners of one parent the route attaches to, or why none.
fn attach_one(
    snap: &Snapshot,
    route: &GatewayRoute,
    parent: &super::ParentRef,
    gw_key: &(String, String),
    listeners: &[Listener],
    taken: &mut Taken,
) -> Result<Vec<Attachment>, Cond> {
    if route.rules_served == 0 {
        return Err(route.unsupported.clone().map_or_else(
            || Cond::no("UnsupportedValue", "no rule can be served"),
            |c| Cond::no("UnsupportedValue", c.message),
        ));
    }
    if route.hostnames_invalid {
        return Err(Cond::no(
            "UnsupportedValue",
            "none of the route's hostnames is valid",
        ));
    }
    let named: Vec<usize> = listeners
        .iter()
        .enumerate()
        .filter(|(_, l)| &l.gateway == gw_key)
        .filter(|(_, l)| parent.section_name.as_ref().is_none_or(|s| *s == l.name))
        .filter(|(_, l)| parent.port.is_none_or(|p| p == l.port))
        .map(|(i, _)| i)
        .collect();
    if named.is_empty() {
        return Err(Cond::no(
            "NoMatchingParent",
            format!(
                "Gateway {}/{} has no listener{}{}",
                gw_key.0,
                gw_key.1,
                parent
                    .section_name
                    .as_ref()
                    .map_or(String::new(), |s| format!(" named {s}")),
                parent
                    .port
                    .map_or(String::new(), |p| format!(" on port {p}")),
            ),
        ));
    }
    let ready: Vec<usize> = named
        .into_iter()
        .filter(|&i| listeners[i].serves())
        .collect();
    if ready.is_empty() {
        return Err(Cond::no(
            "NoMatchingParent",
            "the listeners it names are not served (see the Gateway's status)",
        ));
    }
    let allowed: Vec<usize> = ready
        .into_iter()
        .filter(|&i| allows(snap, &listeners[i], route, &gw_key.0))
        .collect();
    if allowed.is_empty() {
        return Err(Cond::no(
            "NotAllowedByListeners",
            "no listener it names allows routes of this kind from this namespace",
        ));
    }
    let mut out = Vec::new();
    let mut clash = None;
    for i in allowed {
        let l = &listeners[i];
        let Some(hostnames) = intersect_listener(&route.hostnames, l.hostname.as_ref()) else {
            continue;
        };
        let hostnames = match hostnames {
            None => None,
            Some(list) => {
                let kept: Vec<Hostname> = list
                    .into_iter()
                    .filter(|h| !claimed_by_more_specific(h, l, i, listeners))
                    .collect();
                if kept.is_empty() {
                    continue;
                }
                Some(kept)
            }
        };
        let by_kind = taken.entry(i).or_default();
        let clashing = by_kind
            .iter()
            .filter(|(kind, _)| **kind != route.kind)
            .find(|(_, claims)| {
                claims
                    .iter()
                    .any(|hs| overlap(hs.as_deref(), hostnames.as_deref()))
            });
        if let Some((kind, _)) = clashing {
            clash = Some(Cond::no(
                "HostnameConflict",
                format!(
                    "a {} on listener {} already serves these hostnames, and is older",
                    kind.as_str(),
                    l.name
                ),
            ));
            continue;
        }
        by_kind
            .entry(route.kind)
            .or_default()
            .push(hostnames.clone());
        out.push(Attachment {
            listener: i,
            hostnames,
            also: Vec::new(),
        });
    }
    if out.is_empty() {
        return Err(clash.unwrap_or_else(|| {
            Cond::no(
                "NoMatchingListenerHostname",
                "no hostname of the route matches a hostname of the listeners it names",
            )
        }));
    }
    Ok(out)
}

/// Gateway API matches a request against every route whose hostnames
/// match its host; the dataplane picks one virtual host, the most specific.
/// So a route whose hostname (or lack of one) covers a more specific name
/// another route of the same place names also serves that name, and
/// competes there by match precedence (HTTPRouteMatchingAcrossRoutes). A
/// name a more specific listener claims stays with that listener's routes.
pub(super) fn share_hostnames(attached: &mut [Vec<Attachment>], listeners: &[Listener]) {
    // The main listeners share one table.
    let table = |p: Place| {
        if p == Place::MainHttps {
            Place::MainHttp
        } else {
            p
        }
    };
    let mut named: BTreeMap<Place, BTreeSet<Hostname>> = BTreeMap::new();
    for a in attached.iter().flatten() {
        if let Some(hs) = &a.hostnames {
            named
                .entry(table(listeners[a.listener].place))
                .or_default()
                .extend(hs.iter().cloned());
        }
    }
    for a in attached.iter_mut().flatten() {
        let l = &listeners[a.listener];
        let Some(names) = named.get(&table(l.place)) else {
            continue;
        };
        // Only a wildcard covers a name other than itself: a route of
        // exact names (the common case) gains none, and is not compared
        // with every name of its place, which made this quadratic.
        let wildcards: Option<Vec<&Hostname>> = a.hostnames.as_ref().map(|hs| {
            hs.iter()
                .filter(|h| !matches!(h, Hostname::Exact(_)))
                .collect()
        });
        if wildcards.as_ref().is_some_and(Vec::is_empty) {
            continue;
        }
        let extra: Vec<Hostname> = names
            .iter()
            .filter(|n| match (&a.hostnames, &wildcards) {
                (Some(hs), Some(wild)) => !hs.contains(n) && wild.iter().any(|h| covers(h, n)),
                _ => true,
            })
            .filter(|n| !claimed_by_more_specific(n, l, a.listener, listeners))
            .cloned()
            .collect();
        match &mut a.hostnames {
            None => a.also = extra,
            Some(hs) => hs.extend(extra),
        }
    }
}

/// `allowedRoutes`: the route's kind, and its namespace.
fn allows(snap: &Snapshot, l: &Listener, route: &GatewayRoute, gw_namespace: &str) -> bool {
    if !l.kinds.contains(&route.kind) {
        return false;
    }
    match &l.namespaces {
        AllowedNamespaces::Same => route.namespace == gw_namespace,
        AllowedNamespaces::All => true,
        AllowedNamespaces::Selector(sel) => {
            let empty = ObjectMeta::default();
            let meta = snap
                .namespaces
                .get(&route.namespace)
                .map_or(&empty, |n| &n.metadata);
            let mut labels = meta.labels.clone().unwrap_or_default();
            // The API server sets it on every namespace; standalone
            // manifests need not list their Namespaces for it.
            labels.insert(
                "kubernetes.io/metadata.name".into(),
                route.namespace.clone(),
            );
            selects(sel, &labels)
        }
    }
}

/// A label selector over a namespace's labels. An operator it does not
/// know selects nothing.
pub(super) fn selects(
    sel: &GatewayListenersAllowedRoutesNamespacesSelector,
    labels: &BTreeMap<String, String>,
) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
    let by_expressions = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_expressions
}

/// The route's hostnames on a listener: `None` (outer) when none
/// intersects; `Some(None)` for every host.
#[allow(clippy::option_option)]
fn intersect_listener(
    route: &[Hostname],
    listener: Option<&Hostname>,
) -> Option<Option<Vec<Hostname>>> {
    match (route.is_empty(), listener) {
        (true, None) => Some(None),
        (true, Some(l)) => Some(Some(vec![l.clone()])),
        (false, None) => Some(Some(route.to_vec())),
        (false, Some(l)) => {
            let list: Vec<Hostname> = route.iter().filter_map(|h| intersect(h, l)).collect();
            (!list.is_empty()).then_some(Some(list))
        }
    }
}

/// The names both cover, as the more specific of the two.
pub(super) fn intersect(a: &Hostname, b: &Hostname) -> Option<Hostname> {
    if covers(a, b) {
        Some(b.clone())
    } else if covers(b, a) {
        Some(a.clone())
    } else {
        None
    }
}

/// Every name `inner` matches, `outer` matches too.
fn covers(outer: &Hostname, inner: &Hostname) -> bool {
    use Hostname::{Exact, Wildcard, WildcardAnyDepth};
    let under = |name: &str, suffix: &str| {
        name.len() > suffix.len() + 1
            && name.ends_with(suffix)
            && name.as_bytes()[name.len() - suffix.len() - 1] == b'.'
    };
    match (outer, inner) {
        (Exact(a), Exact(b)) => a == b,
        (WildcardAnyDepth(s) | Wildcard(s), Exact(n)) => under(n, s),
        (WildcardAnyDepth(s), WildcardAnyDepth(t) | Wildcard(t)) => s == t || under(t, s),
        (Wildcard(s), Wildcard(t)) => s == t,
        _ => false,
    }
}

fn overlap(a: Option<&[Hostname]>, b: Option<&[Hostname]>) -> bool {
    match (a, b) {
        (None, _) | (_, None) => true,
        (Some(a), Some(b)) => a
            .iter()
            .any(|x| b.iter().any(|y| intersect(x, y).is_some())),
    }
}

/// A more specific listener on the same port (another hostname that covers
/// `h`) takes `h`: requests for it go to that listener's routes.
fn claimed_by_more_specific(h: &Hostname, l: &Listener, index: usize, all: &[Listener]) -> bool {
    all.iter().enumerate().any(|(j, other)| {
        j != index
            && other.place == l.place
            && other.serves()
            && other.specificity() > l.specificity()
            && other.hostname.as_ref().is_some_and(|oh| covers(oh, h))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Hostname {
        super::super::parse_hostname(s).unwrap()
    }

    #[test]
    fn hostnames_intersect_with_wildcards_on_both_sides() {
        let cases = [
            (
                "foo.example.com",
                "foo.example.com",
                Some("foo.example.com"),
            ),
            ("foo.example.com", "*.example.com", Some("foo.example.com")),
            ("a.b.example.com", "*.example.com", Some("a.b.example.com")),
            ("*.example.com", "foo.example.com", Some("foo.example.com")),
            ("*.example.com", "*.example.com", Some("*.example.com")),
            (
                "*.foo.example.com",
                "*.example.com",
                Some("*.foo.example.com"),
            ),
            ("example.com", "*.example.com", None),
            ("foo.example.net", "*.example.com", None),
            ("*.example.net", "*.example.com", None),
            ("xexample.com", "*.example.com", None),
        ];
        for (route, listener, want) in cases {
            let got = intersect(&h(route), &h(listener));
            assert_eq!(got, want.map(h), "{route} ∩ {listener}");
        }
    }

    #[test]
    fn selectors_match_labels_and_expressions() {
        let sel: GatewayListenersAllowedRoutesNamespacesSelector =
            serde_json::from_value(serde_json::json!({
                "matchLabels": {"team": "a"},
                "matchExpressions": [
                    {"key": "env", "operator": "In", "values": ["prod", "stage"]},
                    {"key": "frozen", "operator": "DoesNotExist"}
                ]
            }))
            .unwrap();
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(selects(&sel, &labels(&[("team", "a"), ("env", "prod")])));
        assert!(!selects(&sel, &labels(&[("team", "b"), ("env", "prod")])));
        assert!(!selects(&sel, &labels(&[("team", "a"), ("env", "dev")])));
        assert!(!selects(
            &sel,
            &labels(&[("team", "a"), ("env", "prod"), ("frozen", "1")])
        ));
    }
}
