//! Writing objects as a user or a missing controller would: server-side
//! apply, typed or from rendered JSON, and builders for the objects every
//! scenario needs.

use std::net::SocketAddr;

use anyhow::Context;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::discovery::Scope;
use kube::{Client, ResourceExt};

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

const MANAGER: &str = "portico-e2e";

/// Server-side applies a typed object (k8s-openapi types serialize their
/// apiVersion and kind).
pub async fn apply<K: Serialize>(client: &Client, obj: &K) -> anyhow::Result<()> {
    apply_json(client, &serde_json::to_value(obj)?, false).await
}

/// Server-side applies (or with `dry_run`, validates on the server) a
/// manifest of any kind the API server serves.
pub async fn apply_json(
    client: &Client,
    doc: &serde_json::Value,
    dry_run: bool,
) -> anyhow::Result<()> {
    let obj: DynamicObject = serde_json::from_value(doc.clone())?;
    let types = obj
        .types
        .clone()
        .context("manifest without apiVersion/kind")?;
    let gvk = GroupVersionKind::try_from(&types)?;
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("discovering {gvk:?}"))?;
    let api: Api<DynamicObject> = match (caps.scope, obj.namespace()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), &ns, &resource),
        (Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
        (Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    let mut pp = PatchParams::apply(MANAGER).force();
    pp.dry_run = dry_run;
    api.patch(&obj.name_any(), &pp, &Patch::Apply(doc))
        .await
        .with_context(|| format!("applying {} {}", types.kind, obj.name_any()))?;
    Ok(())
}

/// Waits until the API server serves a freshly applied CRD.
pub async fn wait_for_crd(client: &Client, name: &str) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    crate::eventually(&format!("CRD {name} Established"), crate::CONVERGE, || {
        let api = api.clone();
        async move {
            let crd = api.get(name).await.ok()?;
            crd.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        }
    })
    .await;
    Ok(())
}

/// A ClusterIP Service with one port `http` (80 → `target_port`).
pub fn service(namespace: &str, name: &str, target_port: u16) -> Service {
    typed(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": target_port}]},
    }))
}

/// An EndpointSlice as the EndpointSlice controller would write it for
/// Service `service`: ready endpoints at `addrs`, which share one port
/// (named `http`, as a slice has one port list). Named `<service>-<port>`,
/// so upstreams on different ports get a slice each.
pub fn endpoint_slice(namespace: &str, service: &str, addrs: &[SocketAddr]) -> EndpointSlice {
    let port = addrs.first().map_or(80, |a| a.port());
    typed(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": format!("{service}-{port}"),
            "namespace": namespace,
            "labels": {
                "kubernetes.io/service-name": service,
                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
            },
        },
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
        "endpoints": addrs.iter().map(|a| json!({
            "addresses": [a.ip().to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false},
        })).collect::<Vec<_>>(),
    }))
}

/// An Ingress with one host and Prefix paths, each to `service:80`.
/// `class`: `spec.ingressClassName`, or none.
pub fn ingress(
    namespace: &str,
    name: &str,
    class: Option<&str>,
    host: &str,
    paths: &[(&str, &str)],
) -> Ingress {
    let mut spec = json!({
        "rules": [{
            "host": host,
            "http": {"paths": paths.iter().map(|(path, svc)| json!({
                "path": path,
                "pathType": "Prefix",
                "backend": {"service": {"name": svc, "port": {"number": 80}}},
            })).collect::<Vec<_>>()},
        }],
    });
    if let Some(class) = class {
        spec["ingressClassName"] = json!(class);
    }
    typed(json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": name, "namespace": namespace},
        "spec": spec,
    }))
}

/// A `kubernetes.io/tls` Secret: a self-signed certificate for `host`
/// with `serial`, or, with `serial` `None`, a certificate that is not PEM
/// (the API accepts it; portico must not).
pub fn tls_secret(
    namespace: &str,
    name: &str,
    host: &str,
    serial: Option<u64>,
) -> anyhow::Result<Secret> {
    let (cert, key) = match serial {
        Some(serial) => {
            let mut params = rcgen::CertificateParams::new(vec![host.to_owned()])?;
            params.serial_number = Some(serial.into());
            let key = rcgen::KeyPair::generate()?;
            (params.self_signed(&key)?.pem(), key.serialize_pem())
        }
        None => ("not a certificate".to_owned(), "not a key".to_owned()),
    };
    let mut secret: Secret = typed(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
    }));
    secret.data = Some(
        [
            ("tls.crt".to_owned(), ByteString(cert.into_bytes())),
            ("tls.key".to_owned(), ByteString(key.into_bytes())),
        ]
        .into(),
    );
    Ok(secret)
}

/// Waits for a Warning Event (events.k8s.io) about object `regarding` in
/// `namespace`, as `kubectl get events` would show it.
pub async fn warning_event(client: &Client, namespace: &str, regarding: &str) -> Event {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let what = format!("a Warning Event about {namespace}/{regarding}");
    crate::eventually(&what, crate::CONVERGE, || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.type_.as_deref() == Some("Warning")
                    && e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(regarding)
            })
    })
    .await
}

/// Builders above produce valid objects by construction.
pub(crate) fn typed<K: DeserializeOwned>(v: serde_json::Value) -> K {
    serde_json::from_value(v).expect("builder JSON matches the k8s-openapi type")
}
