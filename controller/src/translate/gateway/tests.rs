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
