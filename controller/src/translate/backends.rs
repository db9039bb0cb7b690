//! Service references to endpoint addresses: ready endpoints from the
//! Service's EndpointSlices, with the port resolved through the Service port
//! (EndpointSlice ports carry the Service port's name and the resolved
//! `targetPort`), and `ExternalName` Services through resolved DNS names.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use k8s_openapi::api::core::v1::ServicePort;
use portico_dataplane::model::{Backend, Protocol};

use crate::snapshot::{Snapshot, external_name_key};

/// How a backend names the Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

/// Why a backend reference did not resolve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unresolved {
    pub reason: &'static str,
    pub message: String,
}

/// A resolved backend, possibly with no endpoints (which answers 503).
/// The protocol a Service port's `appProtocol` asks for (Gateway API's
/// convention): `kubernetes.io/h2c`, `h2c` and `grpc` are cleartext HTTP/2;
/// anything else, or none, HTTP/1.1.
pub fn app_protocol(snap: &Snapshot, namespace: &str, service: &str, port: i32) -> Protocol {
    let key = (namespace.to_owned(), service.to_owned());
    let app = snap
        .services
        .get(&key)
        .and_then(|s| s.spec.as_ref())
        .and_then(|s| s.ports.as_deref())
        .and_then(|ports| ports.iter().find(|p| p.port == port))
        .and_then(|p| p.app_protocol.as_deref());
    match app {
        Some(a)
            if a.eq_ignore_ascii_case("kubernetes.io/h2c")
                || a.eq_ignore_ascii_case("h2c")
                || a.eq_ignore_ascii_case("grpc") =>
        {
            Protocol::H2c
        }
        _ => Protocol::Http1,
    }
}

pub fn resolve(
    snap: &Snapshot,
    namespace: &str,
    service: &str,
    port: &PortRef,
    protocol: Protocol,
    weight: u32,
) -> Result<Backend, Unresolved> {
    let key = (namespace.to_owned(), service.to_owned());
    let Some(svc) = snap.services.get(&key) else {
        return Err(Unresolved {
            reason: "BackendNotFound",
            message: format!("Service {namespace}/{service} not found"),
        });
    };
    let spec = svc.spec.as_ref();
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let service_port = ports.iter().find(|p| match port {
        PortRef::Number(n) => p.port == *n,
        PortRef::Name(name) => p.name.as_deref() == Some(name.as_str()),
    });
    let external_name = spec
        .filter(|s| s.type_.as_deref() == Some("ExternalName"))
        .and_then(|s| s.external_name.as_deref());
    let port_text = match port {
        PortRef::Number(n) => n.to_string(),
        PortRef::Name(n) => n.clone(),
    };
    let name = format!("{namespace}/{service}:{port_text}");

    // An ExternalName Service has no EndpointSlices: its port is used as is.
    if let Some(dns) = external_name {
        let number = match (service_port, port) {
            (Some(p), _) => p.port,
            (None, PortRef::Number(n)) => *n,
            (None, PortRef::Name(_)) => return Err(port_not_found(namespace, service, port)),
        };
        let Ok(number) = u16::try_from(number) else {
            return Err(port_not_found(namespace, service, port));
        };
        let endpoints = snap
            .external_names
            .get(&external_name_key(dns))
            .map(|ips| ips.iter().map(|ip| SocketAddr::new(*ip, number)).collect())
            .unwrap_or_default();
        return Ok(Backend {
            name,
            weight,
            protocol,
            endpoints,
        });
    }

    let Some(service_port) = service_port else {
        return Err(port_not_found(namespace, service, port));
    };
    Ok(Backend {
        name,
        weight,
        protocol,
        endpoints: ready_endpoints(snap, &key, service_port),
    })
}

fn port_not_found(namespace: &str, service: &str, port: &PortRef) -> Unresolved {
    let port = match port {
        PortRef::Number(n) => format!("port {n}"),
        PortRef::Name(n) => format!("port named {n:?}"),
    };
    Unresolved {
        reason: "BackendNotFound",
        message: format!("Service {namespace}/{service} has no {port}"),
    }
}

/// Ready addresses of the Service's slices for this Service port, sorted and
/// de-duplicated so identical inputs give identical tables.
fn ready_endpoints(
    snap: &Snapshot,
    key: &(String, String),
    service_port: &ServicePort,
) -> Vec<SocketAddr> {
    let mut out = BTreeSet::new();
    for slice in snap.endpoint_slices.get(key).into_iter().flatten() {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == service_port.name.as_deref().unwrap_or(""))
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in &slice.endpoints {
            // The API says a missing `ready` means ready.
            let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
            if !ready {
                continue;
            }
            for addr in &ep.addresses {
                if let Ok(ip) = addr.parse::<IpAddr>() {
                    out.insert(SocketAddr::new(ip, port));
                }
            }
        }
    }
    out.into_iter().collect()
}
