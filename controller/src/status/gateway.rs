//! Gateway API status content, from translation's typed results
//! ([`crate::translate::gateway::Results`]): GatewayClass `Accepted` and
//! `supportedFeatures`, Gateway and listener conditions with
//! `attachedRoutes` and the published addresses, and route
//! `status.parents` with our `controllerName`. Pure: the writer applies it.

use k8s_openapi::api::networking::v1::IngressLoadBalancerIngress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use serde_json::{Value, json};

use super::{condition, keep_transition_times};
use crate::translate::gateway::{
    ClassResult, Cond, GROUP, GatewayResult, ParentResult, RouteResult, ServedPort,
};

/// The Gateway API features Portico's tests exercise end to end
/// (`controller/tests/gateway.rs`, `gateway_conformance.rs`), sorted as
/// the spec asks. A feature is listed only when a request-level test
/// covers it (docs/gateway.md, "Conformance").
pub const SUPPORTED_FEATURES: &[&str] = &[
    "GRPCRoute",
    "GRPCRouteNamedRouteRule",
    "Gateway",
    "GatewayHTTPListenerIsolation",
    "HTTPRoute",
    "HTTPRoute303RedirectStatusCode",
    "HTTPRoute307RedirectStatusCode",
    "HTTPRoute308RedirectStatusCode",
    "HTTPRouteBackendProtocolH2C",
    "HTTPRouteBackendProtocolWebSocket",
    "HTTPRouteBackendRequestHeaderModification",
    "HTTPRouteBackendTimeout",
    "HTTPRouteCORS",
    "HTTPRouteHostRewrite",
    "HTTPRouteMethodMatching",
    "HTTPRouteNamedRouteRule",
    "HTTPRouteParentRefPort",
    "HTTPRoutePathRedirect",
    "HTTPRoutePathRewrite",
    "HTTPRoutePortRedirect",
    "HTTPRouteQueryParamMatching",
    "HTTPRouteRequestMirror",
    "HTTPRouteRequestMultipleMirrors",
    "HTTPRouteRequestTimeout",
    "HTTPRouteResponseHeaderModification",
    "HTTPRouteSchemeRedirect",
    "ReferenceGrant",
];

fn cond(type_: &str, c: &Cond, generation: Option<i64>) -> Condition {
    condition(type_, c.status, c.reason, &c.message, generation)
}

pub fn gatewayclass_status(r: &ClassResult, previous: Option<&Value>) -> Value {
    let mut conditions = vec![cond("Accepted", &r.accepted, r.generation)];
    keep_transition_times(&mut conditions, previous.and_then(|p| p.get("conditions")));
    let features: Vec<Value> = SUPPORTED_FEATURES
        .iter()
        .map(|f| json!({ "name": f }))
        .collect();
    json!({ "conditions": conditions, "supportedFeatures": features })
}

/// A Gateway's status; `addresses` are Portico's Service's (as Ingress
/// status has them, from `--publish-service` or
/// `--publish-status-address`).
pub fn gateway_status(
    r: &GatewayResult,
    addresses: &[IngressLoadBalancerIngress],
    previous: Option<&Value>,
) -> Value {
    let g = r.generation;
    let mut conditions = vec![
        cond("Accepted", &r.accepted, g),
        cond("Programmed", &r.programmed, g),
    ];
    keep_transition_times(&mut conditions, previous.and_then(|p| p.get("conditions")));
    let listeners: Vec<Value> = r
        .listeners
        .iter()
        .map(|l| {
            let mut conditions = vec![
                cond("Accepted", &l.accepted, g),
                cond("Programmed", &l.programmed, g),
                cond("ResolvedRefs", &l.resolved_refs, g),
                cond("Conflicted", &l.conflicted, g),
            ];
            if let Some(ServedPort::Port(port)) = l.served_port {
                // Where it is actually bound (after --gateway-port-offset).
                conditions[1].message = format!("served on port {port}");
            }
            let prev = previous
                .and_then(|p| p.get("listeners"))
                .and_then(|ls| ls.as_array())
                .and_then(|ls| ls.iter().find(|x| x.get("name") == Some(&json!(l.name))))
                .and_then(|x| x.get("conditions"));
            keep_transition_times(&mut conditions, prev);
            let kinds: Vec<Value> = l
                .supported_kinds
                .iter()
                .map(|k| json!({ "group": GROUP, "kind": k }))
                .collect();
            json!({
                "name": l.name,
                "supportedKinds": kinds,
                "attachedRoutes": l.attached_routes,
                "conditions": conditions,
            })
        })
        .collect();
    let addresses: Vec<Value> = addresses
        .iter()
        .filter_map(|a| match (&a.ip, &a.hostname) {
            (Some(ip), _) => Some(json!({ "type": "IPAddress", "value": ip })),
            (None, Some(h)) => Some(json!({ "type": "Hostname", "value": h })),
            (None, None) => None,
        })
        .collect();
    json!({ "addresses": addresses, "conditions": conditions, "listeners": listeners })
}

/// A route's `status.parents`: ours (one per parentRef naming a Gateway of
/// ours), then every other controller's entry as found.
pub fn route_status(r: &RouteResult, controller: &str, previous: Option<&Value>) -> Value {
    let mut parents: Vec<Value> = r
        .parents
        .iter()
        .map(|p| parent_status(p, r.generation, controller, previous))
        .collect();
    parents.extend(
        r.existing_parents
            .iter()
            .filter(|p| p.get("controllerName") != Some(&json!(controller)))
            .cloned(),
    );
    json!({ "parents": parents })
}

fn parent_status(
    p: &ParentResult,
    generation: Option<i64>,
    controller: &str,
    previous: Option<&Value>,
) -> Value {
    let parent = &p.parent;
    let mut reference = serde_json::Map::new();
    reference.insert(
        "group".into(),
        json!(parent.group.as_deref().unwrap_or(GROUP)),
    );
    reference.insert(
        "kind".into(),
        json!(parent.kind.as_deref().unwrap_or("Gateway")),
    );
    if let Some(ns) = &parent.namespace {
        reference.insert("namespace".into(), json!(ns));
    }
    reference.insert("name".into(), json!(parent.name));
    if let Some(s) = &parent.section_name {
        reference.insert("sectionName".into(), json!(s));
    }
    if let Some(port) = parent.port {
        reference.insert("port".into(), json!(port));
    }
    let reference = Value::Object(reference);
    let mut conditions = vec![
        cond("Accepted", &p.accepted, generation),
        cond("ResolvedRefs", &p.resolved_refs, generation),
    ];
    if let Some(c) = &p.partially_invalid {
        conditions.push(cond("PartiallyInvalid", c, generation));
    }
    let prev = previous
        .and_then(|v| v.get("parents"))
        .and_then(|ps| ps.as_array())
        .and_then(|ps| ps.iter().find(|x| x.get("parentRef") == Some(&reference)))
        .and_then(|x| x.get("conditions"));
    keep_transition_times(&mut conditions, prev);
    json!({
        "parentRef": reference,
        "controllerName": controller,
        "conditions": conditions,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::snapshot::Snapshot;
    use crate::source::manifests::parse_documents;
    use crate::translate::{Settings, translate};

    /// A fixture's translation.
    fn translated(fixture: &str) -> crate::translate::Translation {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/fixtures");
        let mut objects = Vec::new();
        for name in ["base.yml", fixture] {
            let path = dir.join(name);
            let text = std::fs::read_to_string(&path).unwrap();
            objects.extend(parse_documents(&path, &text).objects);
        }
        translate(
            &Snapshot::from_objects(objects),
            &Settings {
                gateway_port_offset: 10000,
                ..Settings::default()
            },
        )
    }

    fn types_and_reasons(conds: &Value) -> Vec<(String, String, String)> {
        conds
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["type"].as_str().unwrap().to_owned(),
                    c["status"].as_str().unwrap().to_owned(),
                    c["reason"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn t3(a: &str, b: &str, c: &str) -> (String, String, String) {
        (a.into(), b.into(), c.into())
    }

    #[test]
    fn gatewayclass_status_accepts_and_lists_the_tested_features() {
        let t = translated("gateway_listeners.yaml");
        let s = gatewayclass_status(&t.gateway.classes["portico"], None);
        assert_eq!(
            types_and_reasons(&s["conditions"]),
            [t3("Accepted", "True", "Accepted")]
        );
        assert_eq!(s["conditions"][0]["observedGeneration"], 2);
        let names: Vec<&str> = s["supportedFeatures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["name"].as_str().unwrap())
            .collect();
        let mut sorted = names.clone();
        sorted.sort_unstable();
        assert_eq!(names, sorted);
        assert!(names.contains(&"HTTPRoute") && names.contains(&"GRPCRoute"));
    }

    #[test]
    fn gateway_status_has_listeners_addresses_and_the_served_port() {
        let t = translated("gateway_listeners.yaml");
        let gw = &t.gateway.gateways[&("default".into(), "main".into())];
        let addresses = [IngressLoadBalancerIngress {
            ip: Some("192.0.2.10".into()),
            ..Default::default()
        }];
        let s = gateway_status(gw, &addresses, None);
        assert_eq!(
            s["addresses"],
            json!([{"type": "IPAddress", "value": "192.0.2.10"}])
        );
        assert_eq!(
            types_and_reasons(&s["conditions"]),
            [
                t3("Accepted", "True", "ListenersNotValid"),
                t3("Programmed", "True", "Programmed")
            ]
        );
        let listeners = s["listeners"].as_array().unwrap();
        assert_eq!(listeners.len(), 4);
        assert_eq!(listeners[0]["attachedRoutes"], 1);
        assert_eq!(
            listeners[0]["supportedKinds"],
            json!([{"group": GROUP, "kind": "HTTPRoute"}, {"group": GROUP, "kind": "GRPCRoute"}])
        );
        assert_eq!(
            listeners[1]["conditions"][1]["message"],
            "served on port 18080"
        );
        assert_eq!(
            types_and_reasons(&listeners[2]["conditions"]),
            [
                t3("Accepted", "False", "UnsupportedProtocol"),
                t3("Programmed", "False", "Invalid"),
                t3("ResolvedRefs", "True", "ResolvedRefs"),
                t3("Conflicted", "False", "NoConflicts"),
            ]
        );
        assert_eq!(listeners[2]["conditions"][0]["observedGeneration"], 3);
    }

    /// A Gateway port the dataplane could not open (`PublishReport::ports`)
    /// takes its listener back: not accepted (`PortUnavailable`), not
    /// programmed; a port that opened changes nothing.
    #[test]
    fn a_port_the_dataplane_could_not_open_is_port_unavailable() {
        let mut t = translated("gateway_listeners.yaml");
        t.gateway
            .apply_port_outcomes(&[(18080, Err("address in use".into())), (18081, Ok(()))]);
        let gw = &t.gateway.gateways[&("default".into(), "main".into())];
        let s = gateway_status(gw, &[], None);
        let listeners = s["listeners"].as_array().unwrap();
        assert_eq!(
            types_and_reasons(&listeners[1]["conditions"])[..2],
            [
                t3("Accepted", "False", "PortUnavailable"),
                t3("Programmed", "False", "Invalid"),
            ]
        );
        assert_eq!(
            listeners[1]["conditions"][0]["message"],
            "port 18080 could not be opened: address in use"
        );
        assert_eq!(
            types_and_reasons(&s["conditions"]),
            [
                t3("Accepted", "True", "ListenersNotValid"),
                t3("Programmed", "True", "Programmed")
            ]
        );
    }

    #[test]
    fn route_status_lists_our_parents_and_keeps_other_controllers() {
        let t = translated("gateway_httproute.yaml");
        let key = crate::translate::gateway::RouteRef {
            kind: crate::translate::gateway::RouteKind::Http,
            namespace: "default".into(),
            name: "shop".into(),
        };
        let mut r = t.gateway.routes[&key].clone();
        r.existing_parents = vec![
            json!({"parentRef": {"name": "theirs"}, "controllerName": "example.com/other", "conditions": []}),
            json!({"parentRef": {"name": "gw"}, "controllerName": "portico.dev/gateway-controller", "conditions": []}),
        ];
        let s = route_status(&r, "portico.dev/gateway-controller", None);
        let parents = s["parents"].as_array().unwrap();
        assert_eq!(parents.len(), 2, "{s}");
        assert_eq!(
            parents[0]["parentRef"],
            json!({"group": GROUP, "kind": "Gateway", "name": "gw"})
        );
        assert_eq!(
            parents[0]["controllerName"],
            "portico.dev/gateway-controller"
        );
        assert_eq!(
            types_and_reasons(&parents[0]["conditions"]),
            [
                t3("Accepted", "True", "Accepted"),
                t3("ResolvedRefs", "False", "BackendNotFound"),
                t3("PartiallyInvalid", "True", "UnsupportedValue"),
            ]
        );
        assert_eq!(parents[1]["controllerName"], "example.com/other");
        // Writing again with the same content keeps transition times.
        let again = route_status(&r, "portico.dev/gateway-controller", Some(&s));
        assert_eq!(again, s);
    }

    /// GatewayClassObservedGenerationBump, GatewayObservedGenerationBump and
    /// HTTPRouteObservedGenerationBump: after a spec change (a new
    /// generation), every condition carries the new `observedGeneration`,
    /// so the content differs and the writer applies it.
    #[test]
    fn conditions_follow_the_generation() {
        let status_at = |generation: i64| {
            let text = format!(
                "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {{name: portico, generation: {generation}}}\nspec: {{controllerName: portico.dev/gateway-controller}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default, generation: {generation}}}\nspec:\n  gatewayClassName: portico\n  listeners: [{{name: http, port: 80, protocol: HTTP}}]\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: web, namespace: default, generation: {generation}}}\nspec:\n  parentRefs: [{{name: gw}}]\n  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]\n"
            );
            let objects = parse_documents(Path::new("bump.yaml"), &text).objects;
            let t = translate(&Snapshot::from_objects(objects), &Settings::default());
            let route = crate::translate::gateway::RouteRef {
                kind: crate::translate::gateway::RouteKind::Http,
                namespace: "default".into(),
                name: "web".into(),
            };
            [
                gatewayclass_status(&t.gateway.classes["portico"], None)["conditions"].clone(),
                gateway_status(
                    &t.gateway.gateways[&("default".into(), "gw".into())],
                    &[],
                    None,
                )["conditions"]
                    .clone(),
                gateway_status(
                    &t.gateway.gateways[&("default".into(), "gw".into())],
                    &[],
                    None,
                )["listeners"][0]["conditions"]
                    .clone(),
                route_status(
                    &t.gateway.routes[&route],
                    "portico.dev/gateway-controller",
                    None,
                )["parents"][0]["conditions"]
                    .clone(),
            ]
        };
        for generation in [1, 2] {
            for conditions in status_at(generation) {
                for c in conditions.as_array().unwrap() {
                    assert_eq!(c["observedGeneration"], generation, "{c}");
                }
            }
        }
        assert_ne!(status_at(1), status_at(2));
    }

    /// A route without parents of ours (it left our Gateways) is written
    /// with every other controller's entry and none of ours.
    #[test]
    fn route_status_without_our_parents_drops_our_stale_entry() {
        let r = RouteResult {
            generation: Some(4),
            parents: Vec::new(),
            existing_parents: vec![
                json!({"parentRef": {"name": "gone"}, "controllerName": "portico.dev/gateway-controller", "conditions": []}),
                json!({"parentRef": {"name": "theirs"}, "controllerName": "example.com/other", "conditions": []}),
            ],
        };
        let s = route_status(&r, "portico.dev/gateway-controller", None);
        assert_eq!(
            s["parents"],
            json!([{"parentRef": {"name": "theirs"}, "controllerName": "example.com/other", "conditions": []}])
        );
        let mut alone = r.clone();
        alone.existing_parents.truncate(1);
        let s = route_status(&alone, "portico.dev/gateway-controller", None);
        assert_eq!(s["parents"], json!([]));
    }
}
