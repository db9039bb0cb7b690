//! Gateway HTTPS listeners with real certificates (generated here; the YAML
//! fixtures in `translate/fixtures/gateway_*.yaml` cover the rest).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use portico_crds::gateway::{Gateway, GatewayClass, ReferenceGrant};
use portico_dataplane::model::PortProtocol;
use rcgen::{CertificateParams, KeyPair};

use super::ServedPort;
use crate::certs::CertMemory;
use crate::snapshot::{Object, Snapshot};
use crate::translate::{Settings, translate};

fn tls_secret(namespace: &str, name: &str, host: &str) -> Object {
    let params = CertificateParams::new(vec![host.to_owned()]).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = params.self_signed(&key).unwrap();
    let mut data = BTreeMap::new();
    data.insert("tls.crt".to_owned(), ByteString(cert.pem().into_bytes()));
    data.insert(
        "tls.key".to_owned(),
        ByteString(key.serialize_pem().into_bytes()),
    );
    let mut s = Secret::default();
    s.metadata.name = Some(name.into());
    s.metadata.namespace = Some(namespace.into());
    s.type_ = Some("kubernetes.io/tls".into());
    s.data = Some(data);
    Object::Secret(Arc::new(s))
}

fn objects(yaml: &str) -> Vec<Object> {
    let class: GatewayClass = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n",
    )
    .unwrap();
    let gw: Gateway = serde_yaml::from_str(yaml).unwrap();
    vec![
        Object::GatewayClass(Arc::new(class)),
        Object::Gateway(Arc::new(gw)),
    ]
}

const GATEWAY: &str = "apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: gw, namespace: default}
spec:
  gatewayClassName: portico
  listeners:
    - {name: main, port: 443, protocol: HTTPS, hostname: secure.test, tls: {certificateRefs: [{name: secure}]}}
    - {name: own, port: 8443, protocol: HTTPS, hostname: own.test, tls: {certificateRefs: [{name: own}]}}
    - {name: own-default, port: 8443, protocol: HTTPS, tls: {certificateRefs: [{name: fallback, namespace: certs}]}}
";

/// An HTTPS listener on 443 binds its Secret on the main TLS listener; on
/// another port its certificates become that port's, the listener without
/// hostname its default; a Secret in another namespace needs a grant.
#[test]
fn https_listeners_bind_their_certificates_where_they_are_served() {
    let mut objs = objects(GATEWAY);
    objs.push(tls_secret("default", "secure", "secure.test"));
    objs.push(tls_secret("default", "own", "own.test"));
    objs.push(tls_secret("certs", "fallback", "any.test"));
    let settings = Settings::default();

    let t = translate(&Snapshot::from_objects(objs.clone()), &settings);
    let gw = &t.gateway.gateways[&("default".into(), "gw".into())];
    assert_eq!(
        gw.listeners[0].served_port,
        Some(ServedPort::Main(PortProtocol::Https))
    );
    assert!(
        t.tls
            .iter()
            .any(|b| b.hosts == ["secure.test"] && b.secret.1 == "secure")
    );
    assert_eq!(gw.listeners[1].served_port, Some(ServedPort::Port(8443)));
    // No grant: the cross-namespace certificate is refused.
    assert!(!gw.listeners[2].resolved_refs.status);
    assert_eq!(gw.listeners[2].resolved_refs.reason, "RefNotPermitted");
    assert_eq!(t.port_tls.len(), 1);
    assert_eq!(t.port_tls[0].default, None);
    assert_eq!(t.config.ports[0].protocol, PortProtocol::Https);

    let grant: ReferenceGrant = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: g, namespace: certs}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: Gateway, namespace: default}]\n  to: [{group: '', kind: Secret}]\n",
    )
    .unwrap();
    objs.push(Object::ReferenceGrant(Arc::new(grant)));
    let t = translate(&Snapshot::from_objects(objs), &settings);
    let gw = &t.gateway.gateways[&("default".into(), "gw".into())];
    assert!(
        gw.listeners[2].resolved_refs.status,
        "{:?}",
        gw.listeners[2]
    );
    assert_eq!(
        t.port_tls[0].default,
        Some(("certs".into(), "fallback".into()))
    );
    // The rebuild loop turns them into the port's certificates.
    let certs = CertMemory::default().serve(&t, &settings);
    assert_eq!(certs.ports.len(), 1);
    assert_eq!(certs.ports[0].port, 8443);
    assert_eq!(certs.ports[0].bindings.len(), 1);
    assert!(certs.ports[0].default.is_some());
}

/// A missing Secret: `ResolvedRefs` False with `InvalidCertificateRef`,
/// not programmed, and nothing bound.
#[test]
fn an_https_listener_without_its_secret_is_not_served() {
    let t = translate(
        &Snapshot::from_objects(objects(GATEWAY)),
        &Settings::default(),
    );
    let gw = &t.gateway.gateways[&("default".into(), "gw".into())];
    for l in &gw.listeners {
        assert!(!l.programmed.status, "{l:?}");
        assert_eq!(l.served_port, None);
    }
    assert_eq!(
        gw.listeners[0].resolved_refs.reason,
        "InvalidCertificateRef"
    );
    assert!(t.tls.is_empty() && t.port_tls.is_empty() && t.config.ports.is_empty());
    assert_eq!(gw.programmed.reason, "Invalid");
}

/// Objects from YAML documents, as standalone mode reads them.
fn parsed(yaml: &str) -> Vec<Object> {
    crate::source::manifests::parse_documents(std::path::Path::new("test.yaml"), yaml).objects
}

const CLASS: &str = "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n";

/// A Gateway with one listener, created at `created`.
fn gateway(name: &str, created: &str, listener: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: default, creationTimestamp: \"{created}\"}}\nspec:\n  gatewayClassName: portico\n  listeners: [{listener}]\n"
    )
}

/// An HTTPRoute of `parent` with `hostnames` and one rule for `path`.
fn route(name: &str, parent: &str, hostnames: &str, path: &str) -> String {
    format!(
        "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: {parent}}}]\n  hostnames: {hostnames}\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], backendRefs: [{{name: web, port: 80}}]}}]\n"
    )
}

fn gateway_result<'a>(
    t: &'a crate::translate::Translation,
    name: &str,
) -> &'a super::GatewayResult {
    &t.gateway.gateways[&("default".into(), name.into())]
}

/// Two Gateways' hostname-less HTTP listeners on one port share it (on the
/// main listener and on a port of its own): both are served, every route
/// of both lands in that place's routes, and each Gateway counts its own.
#[test]
fn http_listeners_of_two_gateways_share_a_port() {
    for (port, served) in [
        (80, ServedPort::Main(PortProtocol::Http)),
        (9000, ServedPort::Port(9000)),
    ] {
        let listener = format!("{{name: http, port: {port}, protocol: HTTP}}");
        let mut m = CLASS.to_owned();
        m.push_str(&gateway("one", "2026-01-01T00:00:00Z", &listener));
        m.push_str(&gateway("two", "2026-02-01T00:00:00Z", &listener));
        m.push_str(&route("a", "one", "[a.test]", "/"));
        m.push_str(&route("any-one", "one", "[]", "/one"));
        m.push_str(&route("b", "two", "[b.test]", "/"));
        m.push_str(&route("any-two", "two", "[]", "/two"));
        let t = translate(&Snapshot::from_objects(parsed(&m)), &Settings::default());
        for gw in ["one", "two"] {
            let l = &gateway_result(&t, gw).listeners[0];
            assert_eq!(l.served_port, Some(served), "{gw} on {port}: {l:?}");
            assert!(!l.conflicted.status, "{gw} on {port}: {l:?}");
            assert_eq!(l.attached_routes, 2, "{gw} on {port}");
        }
        let routes = if port == 80 {
            &t.config.routes
        } else {
            assert_eq!(t.config.ports.len(), 1);
            &t.config.ports[0].routes
        };
        let mut names: Vec<&str> = routes.iter().map(|r| r.source.name.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names, ["a", "any-one", "any-two", "b"], "on {port}");
        // A route of every host also competes under the names the others
        // route: once in the default virtual host, once under those names.
        let any_one: Vec<Vec<String>> = routes
            .iter()
            .filter(|r| r.source.name == "any-one")
            .map(|r| r.hostnames.iter().map(ToString::to_string).collect())
            .collect();
        assert_eq!(
            any_one,
            [vec![], vec!["a.test".to_owned(), "b.test".to_owned()]],
            "on {port}"
        );
    }
}

/// Within one Gateway two listeners for one port and hostname conflict
/// (the later is not served); across Gateways only different protocols
/// on one port do.
#[test]
fn hostname_conflicts_are_within_one_gateway_and_protocol_conflicts_across() {
    let mut m = CLASS.to_owned();
    m.push_str(&gateway(
        "one",
        "2026-01-01T00:00:00Z",
        "{name: a, port: 9000, protocol: HTTP}, {name: b, port: 9000, protocol: HTTP}",
    ));
    m.push_str(&gateway(
        "two",
        "2026-02-01T00:00:00Z",
        "{name: tls, port: 9000, protocol: HTTPS, tls: {certificateRefs: [{name: x}]}}",
    ));
    let mut objs = parsed(&m);
    objs.push(tls_secret("default", "x", "x.test"));
    let t = translate(&Snapshot::from_objects(objs), &Settings::default());
    let one = gateway_result(&t, "one");
    assert!(!one.listeners[0].conflicted.status);
    assert_eq!(one.listeners[1].conflicted.reason, "HostnameConflict");
    assert_eq!(one.listeners[1].served_port, None);
    let two = gateway_result(&t, "two");
    assert_eq!(two.listeners[0].conflicted.reason, "ProtocolConflict");
    assert_eq!(two.listeners[0].served_port, None);
}

/// HTTPS listeners of two Gateways for one hostname on one port share it
/// when they name the same Secret; with another Secret the younger is
/// `Conflicted` (one SNI name gets one certificate), the message naming
/// the Secret that is served.
#[test]
fn https_listeners_of_two_gateways_share_a_hostname_only_with_one_certificate() {
    for (second, shared) in [("same", true), ("other", false)] {
        let mut m = CLASS.to_owned();
        m.push_str(&gateway(
            "one",
            "2026-01-01T00:00:00Z",
            "{name: tls, port: 9443, protocol: HTTPS, hostname: s.test, tls: {certificateRefs: [{name: same}]}}",
        ));
        m.push_str(&gateway(
            "two",
            "2026-02-01T00:00:00Z",
            &format!("{{name: tls, port: 9443, protocol: HTTPS, hostname: s.test, tls: {{certificateRefs: [{{name: {second}}}]}}}}"),
        ));
        let mut objs = parsed(&m);
        objs.push(tls_secret("default", "same", "s.test"));
        objs.push(tls_secret("default", "other", "s.test"));
        let t = translate(&Snapshot::from_objects(objs), &Settings::default());
        assert!(gateway_result(&t, "one").listeners[0].programmed.status);
        let l = &gateway_result(&t, "two").listeners[0];
        assert_eq!(l.programmed.status, shared, "{second}: {l:?}");
        if !shared {
            assert_eq!(l.conflicted.reason, "HostnameConflict");
            assert!(
                l.conflicted.message.contains("Secret default/same"),
                "{}",
                l.conflicted.message
            );
        }
        assert_eq!(t.port_tls.len(), 1);
        assert!(t.port_tls[0].bindings.iter().all(|(_, k)| k.1 == "same"));
    }
}

/// A route that names none of our Gateways any more (its Gateway deleted,
/// moved to another class, or the parentRef removed) but still carries
/// our entry in `status.parents` gets a result without parents, so the
/// writer takes our entry out; without such an entry it gets none.
#[test]
fn a_route_that_left_our_gateways_gets_a_result_without_parents() {
    let status = |controller: &str| {
        format!(
            "status:\n  parents:\n    - {{parentRef: {{name: gone}}, controllerName: {controller}, conditions: []}}\n"
        )
    };
    for (controller, stale) in [
        ("portico.dev/gateway-controller", true),
        ("example.com/other", false),
    ] {
        // Without a GatewayClass of ours at all, too.
        for class in [CLASS, ""] {
            let mut m = class.to_owned();
            m.push_str(&route("left", "gone", "[]", "/"));
            m.push_str(&status(controller));
            let t = translate(&Snapshot::from_objects(parsed(&m)), &Settings::default());
            let key = super::RouteRef {
                kind: super::RouteKind::Http,
                namespace: "default".into(),
                name: "left".into(),
            };
            assert_eq!(t.gateway.routes.contains_key(&key), stale, "{controller}");
            if stale {
                let r = &t.gateway.routes[&key];
                assert!(r.parents.is_empty());
                assert_eq!(r.existing_parents.len(), 1);
            }
        }
    }
}

/// One listener's result by Gateway (namespace `gateway-conformance-infra`)
/// and listener name.
fn listener<'a>(
    t: &'a crate::translate::Translation,
    gateway: &str,
    name: &str,
) -> &'a super::ListenerResult {
    let gw = &t.gateway.gateways[&("gateway-conformance-infra".into(), gateway.into())];
    gw.listeners
        .iter()
        .find(|l| l.name == name)
        .unwrap_or_else(|| panic!("{gateway} has no listener {name}"))
}

/// A conformance manifest, `{GATEWAY_CLASS_NAME}` being ours.
fn conformance(yaml: &str) -> crate::translate::Translation {
    let mut m = CLASS.to_owned();
    m.push_str("---\n");
    m.push_str(&yaml.replace("\"{GATEWAY_CLASS_NAME}\"", "portico"));
    translate(&Snapshot::from_objects(parsed(&m)), &Settings::default())
}

/// GatewayWithAttachedRoutes (upstream manifest): `attachedRoutes` counts
/// the routes accepted per listener, per Gateway (three Gateways share
/// port 80), selecting namespaces by the `kubernetes.io/metadata.name`
/// label every namespace carries; a UDP listener is not accepted and
/// counts none.
#[test]
fn gateway_with_attached_routes() {
    let gateway = |name: &str, udp: bool| {
        let udp = if udp {
            "    - {name: udp, port: 8080, protocol: UDP, allowedRoutes: {kinds: [{kind: UDPRoute}], namespaces: {from: Selector, selector: {matchLabels: {kubernetes.io/metadata.name: gateway-conformance-infra}}}}}\n"
        } else {
            ""
        };
        format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: Gateway\nmetadata: {{name: {name}, namespace: gateway-conformance-infra}}\nspec:\n  gatewayClassName: \"{{GATEWAY_CLASS_NAME}}\"\n  listeners:\n{udp}    - {{name: http, port: 80, protocol: HTTP, allowedRoutes: {{kinds: [{{kind: HTTPRoute}}], namespaces: {{from: Selector, selector: {{matchLabels: {{kubernetes.io/metadata.name: gateway-conformance-infra}}}}}}}}}}\n---\n"
        )
    };
    let route = |name: &str, gateway: &str| {
        format!(
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: gateway-conformance-infra}}\nspec:\n  parentRefs: [{{kind: Gateway, name: {gateway}, namespace: gateway-conformance-infra}}]\n  rules: [{{backendRefs: [{{name: infra-backend-v1, port: 8080}}]}}]\n---\n"
        )
    };
    let mut m = gateway("gateway-with-one-attached-route", false);
    m.push_str(&route("http-route-1", "gateway-with-one-attached-route"));
    m.push_str(&gateway("gateway-with-two-attached-routes", false));
    m.push_str(&route("http-route-2", "gateway-with-two-attached-routes"));
    m.push_str(&route("http-route-3", "gateway-with-two-attached-routes"));
    let two = "gateway-with-two-listeners-and-one-attached-route";
    m.push_str(&gateway(two, true));
    m.push_str(&route("http-route-4", two));
    let t = conformance(&m);
    for (gw, name, attached, accepted) in [
        ("gateway-with-one-attached-route", "http", 1, true),
        ("gateway-with-two-attached-routes", "http", 2, true),
        (two, "http", 1, true),
        (two, "udp", 0, false),
    ] {
        let l = listener(&t, gw, name);
        assert_eq!(l.attached_routes, attached, "{gw}/{name}");
        assert_eq!(l.accepted.status, accepted, "{gw}/{name}: {l:?}");
        assert_eq!(l.programmed.status, accepted, "{gw}/{name}: {l:?}");
    }
}

/// GatewayInvalidTLSConfiguration (upstream manifest): an HTTPS listener
/// whose certificateRef names a missing Secret, another group, another
/// kind, or a malformed Secret has `ResolvedRefs: False`
/// (`InvalidCertificateRef`) and is not programmed; the Gateway's HTTP
/// listener on the shared port 80 is, and serves its control route.
#[test]
fn gateway_invalid_tls_configuration() {
    let mut m = String::new();
    for (name, reference) in [
        (
            "gateway-certificate-nonexistent-secret",
            "{group: \"\", kind: Secret, name: nonexistent-certificate}",
        ),
        (
            "gateway-certificate-unsupported-group",
            "{group: wrong.group.company.io, kind: Secret, name: tls-validity-checks-certificate}",
        ),
        (
            "gateway-certificate-unsupported-kind",
            "{group: \"\", kind: WrongKind, name: tls-validity-checks-certificate}",
        ),
        (
            "gateway-certificate-malformed-secret",
            "{group: \"\", kind: Secret, name: malformed-certificate}",
        ),
    ] {
        m.push_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: {name}, namespace: gateway-conformance-infra}}\nspec:\n  gatewayClassName: \"{{GATEWAY_CLASS_NAME}}\"\n  listeners:\n    - {{name: http, port: 80, protocol: HTTP, allowedRoutes: {{namespaces: {{from: Same}}}}}}\n    - {{name: https, port: 443, protocol: HTTPS, allowedRoutes: {{namespaces: {{from: All}}}}, tls: {{certificateRefs: [{reference}]}}}}\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}-control, namespace: gateway-conformance-infra}}\nspec:\n  parentRefs: [{{name: {name}, sectionName: http}}]\n  hostnames: [{name}.example.com]\n  rules: [{{backendRefs: [{{name: infra-backend-v1, port: 8080}}]}}]\n---\n"
        ));
    }
    m.push_str("apiVersion: v1\nkind: Secret\nmetadata: {name: malformed-certificate, namespace: gateway-conformance-infra}\ndata: {tls.crt: SGVsbG8gd29ybGQK, tls.key: SGVsbG8gd29ybGQK}\ntype: kubernetes.io/tls\n");
    let t = conformance(&m);
    for gw in [
        "gateway-certificate-nonexistent-secret",
        "gateway-certificate-unsupported-group",
        "gateway-certificate-unsupported-kind",
        "gateway-certificate-malformed-secret",
    ] {
        let https = listener(&t, gw, "https");
        assert!(!https.resolved_refs.status, "{gw}: {https:?}");
        assert_eq!(https.resolved_refs.reason, "InvalidCertificateRef", "{gw}");
        assert!(!https.programmed.status, "{gw}");
        let http = listener(&t, gw, "http");
        assert!(http.programmed.status, "{gw}: {http:?}");
        assert_eq!(http.attached_routes, 1, "{gw}");
        let hosts: Vec<String> = t
            .config
            .routes
            .iter()
            .filter(|r| r.source.name == format!("{gw}-control"))
            .flat_map(|r| r.hostnames.iter().map(ToString::to_string))
            .collect();
        assert_eq!(hosts, [format!("{gw}.example.com")]);
    }
}

/// HTTPRouteInvalidParentRefNotMatchingSectionName,
/// ...NotMatchingListenerPort, ...SectionNameNotMatchingPort and
/// HTTPRouteInvalidCrossNamespaceParentRef: a parentRef naming no listener
/// is `NoMatchingParent`; one from a namespace the listener does not allow
/// is `NotAllowedByListeners`; neither is served.
#[test]
fn invalid_parent_refs_are_not_accepted() {
    let mut m = CLASS.to_owned();
    m.push_str(&gateway(
        "same-namespace",
        "2026-01-01T00:00:00Z",
        "{name: http, port: 80, protocol: HTTP}",
    ));
    let mut cases = Vec::new();
    for (name, namespace, parent, reason) in [
        (
            "section",
            "default",
            "{name: same-namespace, sectionName: nonexistent}",
            "NoMatchingParent",
        ),
        (
            "port",
            "default",
            "{name: same-namespace, port: 81}",
            "NoMatchingParent",
        ),
        (
            "section-port",
            "default",
            "{name: same-namespace, sectionName: http, port: 81}",
            "NoMatchingParent",
        ),
        (
            "cross-namespace",
            "gateway-conformance-web-backend",
            "{name: same-namespace, namespace: default}",
            "NotAllowedByListeners",
        ),
    ] {
        m.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  parentRefs: [{parent}]\n  hostnames: [{name}.example.com]\n  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]\n"
        ));
        cases.push((name, namespace, reason));
    }
    let t = translate(&Snapshot::from_objects(parsed(&m)), &Settings::default());
    for (name, namespace, reason) in cases {
        let key = super::RouteRef {
            kind: super::RouteKind::Http,
            namespace: namespace.into(),
            name: name.into(),
        };
        let parent = &t.gateway.routes[&key].parents[0];
        assert_eq!(
            (parent.accepted.status, parent.accepted.reason),
            (false, reason),
            "{name}"
        );
        assert!(
            t.config.routes.iter().all(|r| r.source.name != name),
            "{name} is served"
        );
    }
    assert_eq!(
        gateway_result(&t, "same-namespace").listeners[0].attached_routes,
        0
    );
}

/// GatewayInvalidRouteKind and HTTPRouteDisallowedKind: a listener's
/// `allowedRoutes.kinds` entry Portico cannot attach is left out with
/// `ResolvedRefs: False` (`InvalidRouteKinds`); a listener left with no
/// kind takes no route, and an HTTPRoute there is `NotAllowedByListeners`.
#[test]
fn route_kinds_a_listener_cannot_take() {
    let mut m = CLASS.to_owned();
    m.push_str(&gateway(
        "kinds",
        "2026-01-01T00:00:00Z",
        "{name: only-invalid, port: 80, protocol: HTTP, hostname: a.test, allowedRoutes: {kinds: [{kind: FooRoute}]}}, {name: mixed, port: 80, protocol: HTTP, hostname: b.test, allowedRoutes: {kinds: [{kind: HTTPRoute}, {kind: FooRoute}]}}, {name: tls-only, port: 80, protocol: HTTP, hostname: c.test, allowedRoutes: {kinds: [{kind: TLSRoute}]}}",
    ));
    m.push_str(
        &route("disallowed", "kinds", "[c.test]", "/")
            .replace("[{name: kinds}]", "[{name: kinds, sectionName: tls-only}]"),
    );
    let t = translate(&Snapshot::from_objects(parsed(&m)), &Settings::default());
    let gw = gateway_result(&t, "kinds");
    for (l, kinds) in gw.listeners.iter().zip([&[][..], &["HTTPRoute"], &[]]) {
        assert_eq!(
            (l.resolved_refs.status, l.resolved_refs.reason),
            (false, "InvalidRouteKinds"),
            "{l:?}"
        );
        assert_eq!(l.supported_kinds, kinds, "{}", l.name);
    }
    assert_eq!(gw.listeners[2].attached_routes, 0);
    let key = super::RouteRef {
        kind: super::RouteKind::Http,
        namespace: "default".into(),
        name: "disallowed".into(),
    };
    let parent = &t.gateway.routes[&key].parents[0];
    assert_eq!(
        (parent.accepted.status, parent.accepted.reason),
        (false, "NotAllowedByListeners")
    );
}

/// GatewaySecretMissingReferenceGrant, GatewaySecretInvalidReferenceGrant,
/// GatewaySecretReferenceGrantAllInNamespace and
/// GatewaySecretReferenceGrantSpecific: a certificateRef into another
/// namespace resolves only with a ReferenceGrant there for Gateways of
/// this namespace that names that Secret or every Secret.
#[test]
fn certificate_refs_across_namespaces_need_a_matching_grant() {
    let grant = |to: &str| {
        format!(
            "---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {{name: grant, namespace: gateway-conformance-web-backend}}\nspec:\n  from: [{{group: gateway.networking.k8s.io, kind: Gateway, namespace: gateway-conformance-infra}}]\n  to: [{to}]\n"
        )
    };
    for (case, grant, resolved) in [
        ("missing", String::new(), false),
        (
            "invalid",
            grant("{group: \"\", kind: Secret, name: not-the-certificate}"),
            false,
        ),
        (
            "all-in-namespace",
            grant("{group: \"\", kind: Secret}"),
            true,
        ),
        (
            "specific",
            grant("{group: \"\", kind: Secret, name: certificate}"),
            true,
        ),
    ] {
        let mut m = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gateway-secret, namespace: gateway-conformance-infra}\nspec:\n  gatewayClassName: \"{GATEWAY_CLASS_NAME}\"\n  listeners:\n    - {name: https, port: 443, protocol: HTTPS, hostname: secure.test, tls: {certificateRefs: [{group: \"\", kind: Secret, name: certificate, namespace: gateway-conformance-web-backend}]}}\n".to_owned();
        m.push_str(&grant);
        let mut objs = parsed(&format!(
            "{CLASS}---\n{}",
            m.replace("\"{GATEWAY_CLASS_NAME}\"", "portico")
        ));
        objs.push(tls_secret(
            "gateway-conformance-web-backend",
            "certificate",
            "secure.test",
        ));
        let t = translate(&Snapshot::from_objects(objs), &Settings::default());
        let l = listener(&t, "gateway-secret", "https");
        assert_eq!(l.resolved_refs.status, resolved, "{case}: {l:?}");
        assert_eq!(l.programmed.status, resolved, "{case}");
        if !resolved {
            assert_eq!(l.resolved_refs.reason, "RefNotPermitted", "{case}");
        }
    }
}

/// The route memo: a route kept from the last translation is placed again
/// when its attachments changed (another route came whose name its
/// wildcard covers, or that a catch-all route also serves; the Gateway's
/// listener moved to a port of its own), and the result equals a full
/// translation each time; unchanged routes keep their `Route`s by `Arc`.
#[test]
fn kept_routes_are_placed_again_when_their_attachments_change() {
    use crate::translate::{Memo, translate_reusing};
    let route = |name: &str, hostnames: &str| {
        let r: portico_crds::gateway::HttpRoute = serde_yaml::from_str(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: gw}}]\n  hostnames: {hostnames}\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: /{name}}}}}]}}]\n"
        ))
        .unwrap();
        Object::GatewayHttpRoute(Arc::new(r))
    };
    let gateway = |port: u16| {
        objects(&format!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {{name: gw, namespace: default}}\nspec:\n  gatewayClassName: portico\n  listeners: [{{name: http, port: {port}, protocol: HTTP}}]\n"
        ))
    };
    let kept = vec![
        route("wild", "['*.example.test']"),
        route("exact", "[a.example.test]"),
        route("all", "[]"),
    ];
    let later = route("b", "[b.example.test]");
    let settings = Settings::default();
    let mut memo = Memo::default();
    let steps: [(&str, Vec<Object>, usize); 4] = [
        (
            "first",
            gateway(80).into_iter().chain(kept.clone()).collect(),
            0,
        ),
        (
            "again",
            gateway(80).into_iter().chain(kept.clone()).collect(),
            3,
        ),
        (
            "a route for b.example.test added",
            gateway(80)
                .into_iter()
                .chain(kept.clone())
                .chain([later.clone()])
                .collect(),
            3,
        ),
        (
            "the listener on a port of its own",
            gateway(8080)
                .into_iter()
                .chain(kept.clone())
                .chain([later])
                .collect(),
            4,
        ),
    ];
    let mut last: Option<crate::translate::Translation> = None;
    for (step, objs, reused) in steps {
        let snap = Snapshot::from_objects(objs);
        let t = translate_reusing(&snap, &settings, &mut memo);
        assert!(
            t == translate(&snap, &settings),
            "{step}: differs from a full translation"
        );
        assert_eq!(memo.reused_routes(), reused, "{step}");
        if step == "again" {
            let before = last.as_ref().unwrap();
            assert!(!t.config.routes.is_empty());
            for (a, b) in before.config.routes.iter().zip(&t.config.routes) {
                assert!(Arc::ptr_eq(a, b), "{step}: {} placed anew", a.id);
            }
        }
        last = Some(t);
    }
}
