//! Service references to endpoint addresses: ready endpoints from the
//! Service's EndpointSlices, with the port resolved through the Service port
//! (EndpointSlice ports carry the Service port's name and the resolved
//! `targetPort`), and `ExternalName` Services through resolved DNS names.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use portico_dataplane::model::{
    Backend, Balance, CookieAffinity, EndpointPolicy, HealthCheck, OutlierDetection, Probe,
    Protocol, StatusRange,
};

use crate::annotations::{self, BalanceAnnotations, LoadBalance, ServiceAnnotations};
use crate::snapshot::{Key, Snapshot, external_name_key};

thread_local! {
    /// The Services looked up while [`recording`] runs on this thread.
    static LOOKED_UP: RefCell<Option<BTreeSet<Key>>> = const { RefCell::new(None) };
}

/// Runs `f` and returns, with its result, every Service (namespace, name)
/// it looked up, found or not. A Service's EndpointSlices are read under
/// the same key, so the set names everything of Services and endpoints
/// that `f`'s result depends on: the translation memo keeps a part until
/// one of them changes. Every lookup of this module goes through
/// [`service_of`]. A recording inside another adds to the outer one too.
/// The outer recording is put back even if `f` panics, so a thread that
/// goes on (the blocking pool's) does not note lookups forever.
pub(crate) fn recording<T>(f: impl FnOnce() -> T) -> (T, BTreeSet<Key>) {
    /// Ends this recording when dropped, whichever way `f` left.
    struct Restore(Option<Option<BTreeSet<Key>>>);
    impl Restore {
        fn finish(&mut self) -> BTreeSet<Key> {
            let Some(outer) = self.0.take() else {
                return BTreeSet::new();
            };
            LOOKED_UP.with(|l| {
                let mut l = l.borrow_mut();
                let read = l.take().unwrap_or_default();
                *l = outer.map(|mut o| {
                    o.extend(read.iter().cloned());
                    o
                });
                read
            })
        }
    }
    impl Drop for Restore {
        fn drop(&mut self) {
            self.finish();
        }
    }
    let mut restore = Restore(Some(
        LOOKED_UP.with(|l| l.borrow_mut().replace(BTreeSet::new())),
    ));
    let value = f();
    (value, restore.finish())
}

/// The Service `namespace/name`, noted if a [`recording`] runs.
fn service_of<'s>(snap: &'s Snapshot, namespace: &str, name: &str) -> Option<&'s Arc<Service>> {
    let key = (namespace.to_owned(), name.to_owned());
    let found = snap.services.get(&key);
    LOOKED_UP.with(|l| {
        if let Some(set) = l.borrow_mut().as_mut() {
            set.insert(key);
        }
    });
    found
}

/// How a backend names the Service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    Number(i32),
    Name(String),
}

/// A Service named by a flag or an annotation rather than an Ingress
/// backend. `port` `None`: its first port, as ingress-nginx uses a default
/// backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceRef {
    pub namespace: String,
    pub name: String,
    pub port: Option<PortRef>,
}

impl std::fmt::Display for ServiceRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)?;
        match &self.port {
            Some(PortRef::Number(n)) => write!(f, ":{n}"),
            Some(PortRef::Name(n)) => write!(f, ":{n}"),
            None => Ok(()),
        }
    }
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
    let app = service_of(snap, namespace, service)
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
    let Some(svc) = service_of(snap, namespace, service) else {
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
    let policy = endpoint_policy(svc).shared();

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
            weight,
            protocol,
            policy,
            ..Backend::new(name, endpoints)
        });
    }

    let Some(service_port) = service_port else {
        return Err(port_not_found(namespace, service, port));
    };
    Ok(Backend {
        weight,
        protocol,
        policy,
        ..Backend::new(name, ready_endpoints(snap, &key, service_port))
    })
}

/// The first port of a Service, as ingress-nginx uses a default backend.
pub fn first_port(snap: &Snapshot, namespace: &str, service: &str) -> Option<i32> {
    service_of(snap, namespace, service)?
        .spec
        .as_ref()?
        .ports
        .as_ref()?
        .first()
        .map(|p| p.port)
}

/// A Service that renders custom error pages (`default-backend`,
/// `--default-backend-service`): cleartext, HTTP/1.1 unless its port's
/// `appProtocol` says h2c.
pub fn error_backend(snap: &Snapshot, r: &ServiceRef) -> Result<Backend, Unresolved> {
    let number = match &r.port {
        Some(PortRef::Number(n)) => Some(*n),
        Some(PortRef::Name(name)) => service_of(snap, &r.namespace, &r.name)
            .and_then(|s| s.spec.as_ref()?.ports.as_ref())
            .and_then(|ports| ports.iter().find(|p| p.name.as_deref() == Some(name)))
            .map(|p| p.port),
        None => first_port(snap, &r.namespace, &r.name),
    };
    let Some(number) = number else {
        return Err(Unresolved {
            reason: "BackendNotFound",
            message: format!("Service {r} not found or has no such port"),
        });
    };
    let protocol = app_protocol(snap, &r.namespace, &r.name, number);
    resolve(
        snap,
        &r.namespace,
        &r.name,
        &PortRef::Number(number),
        protocol,
        1,
    )
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

/// What a Service's annotations ask of its endpoints; the defaults where
/// they say nothing or something invalid (reported on the Service by
/// [`super::report_services`]).
pub fn endpoint_policy(svc: &Service) -> EndpointPolicy {
    let Some(raw) = svc.metadata.annotations.as_ref() else {
        return EndpointPolicy::default();
    };
    if !annotations::has_ours(raw) {
        return EndpointPolicy::default();
    }
    policy_from(&annotations::parse_service(raw).service)
}

fn policy_from(a: &ServiceAnnotations) -> EndpointPolicy {
    let d = EndpointPolicy::default();
    let o = OutlierDetection::default();
    let h = HealthCheck::default();
    let health_check = a.wants_health_checks().then(|| HealthCheck {
        probe: match &a.health_check_path {
            Some(path) => Probe::Http { path: path.clone() },
            None => Probe::Tcp,
        },
        port: a.health_check_port,
        interval: a.health_check_interval.unwrap_or(h.interval),
        timeout: a.health_check_timeout.unwrap_or(h.timeout),
        healthy_threshold: a
            .health_check_healthy_threshold
            .unwrap_or(h.healthy_threshold),
        unhealthy_threshold: a
            .health_check_unhealthy_threshold
            .unwrap_or(h.unhealthy_threshold),
        expected_statuses: a.health_check_expected_statuses.as_ref().map_or(
            h.expected_statuses,
            |r| {
                r.iter()
                    .map(|&(min, max)| StatusRange { min, max })
                    .collect()
            },
        ),
    });
    EndpointPolicy {
        health_check,
        outlier: OutlierDetection {
            consecutive_5xx: a.outlier_consecutive_5xx.unwrap_or(o.consecutive_5xx),
            consecutive_errors: a.outlier_consecutive_errors.unwrap_or(o.consecutive_errors),
            base_ejection: a.outlier_base_ejection_time.unwrap_or(o.base_ejection),
            max_ejection: a.outlier_max_ejection_time.unwrap_or(o.max_ejection),
            max_ejected_percent: a
                .outlier_max_ejected_percent
                .unwrap_or(o.max_ejected_percent),
        },
        panic_threshold_percent: a.panic_threshold.unwrap_or(d.panic_threshold_percent),
        slow_start: a.slow_start.filter(|d| !d.is_zero()),
        balance: Balance::default(),
    }
}

/// The balancing policy an Ingress's annotations ask for; `cookie_path` is
/// the sticky cookie's path unless `session-cookie-path` says otherwise.
pub fn balance(a: &BalanceAnnotations, cookie_path: &str) -> Balance {
    if a.affinity_cookie {
        let d = CookieAffinity::default();
        return Balance::Cookie(CookieAffinity {
            name: a.session_cookie_name.clone().unwrap_or(d.name),
            mode: a.affinity_mode.unwrap_or(d.mode),
            max_age: a.session_cookie_max_age,
            expires: a.session_cookie_expires,
            path: a
                .session_cookie_path
                .clone()
                .unwrap_or_else(|| cookie_path.to_owned()),
            domain: a.session_cookie_domain.clone(),
            same_site: a.session_cookie_samesite,
            secure: a.session_cookie_secure,
            change_on_failure: a.session_cookie_change_on_failure,
        });
    }
    if let Some(key) = &a.upstream_hash_by {
        return Balance::ConsistentHash { key: key.clone() };
    }
    match a.load_balance {
        None | Some(LoadBalance::RoundRobin) => Balance::RoundRobin,
        Some(LoadBalance::LeastRequest) => Balance::LeastRequest,
        Some(LoadBalance::Ewma) => Balance::Ewma,
    }
}

/// gRPC backends are checked with the gRPC health protocol (for the whole
/// server), whatever path the Service names.
pub fn grpc_health_checks(b: &mut Backend) {
    if b.policy.health_check.is_some()
        && let Some(hc) = b.policy_mut().health_check.as_mut()
    {
        hc.probe = Probe::Grpc {
            service: String::new(),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn looked_up(keys: &[&str]) -> BTreeSet<Key> {
        keys.iter()
            .map(|k| ("default".to_owned(), (*k).to_owned()))
            .collect()
    }

    /// A recording notes lookups, found or not; an inner one's also count
    /// for the outer; and a panic inside ends the recording.
    #[test]
    fn a_recording_notes_every_lookup_and_ends_even_on_a_panic() {
        let snap = Snapshot::default();
        let ((_, inner), outer) = recording(|| {
            service_of(&snap, "default", "a");
            recording(|| service_of(&snap, "default", "b").is_some())
        });
        assert_eq!(inner, looked_up(&["b"]));
        assert_eq!(outer, looked_up(&["a", "b"]));

        let panicked = std::panic::catch_unwind(|| {
            recording(|| {
                service_of(&snap, "default", "c");
                panic!("translation failed");
            })
        });
        assert!(panicked.is_err());
        assert!(
            LOOKED_UP.with(|l| l.borrow().is_none()),
            "still recording after the panic"
        );
        let (_, after) = recording(|| service_of(&snap, "default", "d"));
        assert_eq!(after, looked_up(&["d"]));
    }
}
