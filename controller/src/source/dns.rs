//! `ExternalName` Services: their DNS names, resolved off the request path
//! and outside translation (which does no I/O), fed into every snapshot.
//!
//! The resolver asks the system resolver (so `/etc/hosts`, search domains and
//! the cluster DNS apply, as for any process in the pod) when a new name
//! appears and every [`REFRESH`] after. A failed or empty answer keeps the
//! last good addresses: a DNS outage must not take a working route down. A
//! name that never resolved has no endpoints, so its routes answer 503.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::reconcile::SnapshotFn;
use crate::snapshot::{Snapshot, external_name_key};

/// How often names in use are resolved again. Kubernetes' cluster DNS gives
/// Service records a 30 s TTL (CoreDNS' default `ttl 30`).
pub const REFRESH: Duration = Duration::from_secs(30);
/// One lookup's bound; a name that takes longer keeps its last addresses.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Default)]
struct State {
    /// Names the last snapshot uses.
    wanted: BTreeSet<String>,
    resolved: BTreeMap<String, Vec<IpAddr>>,
}

/// Stops the resolver when dropped.
pub struct Resolver {
    task: JoinHandle<()>,
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Wraps a snapshot source so that its snapshots carry resolved addresses of
/// the `ExternalName` Services they hold; `changes` is notified whenever
/// addresses change, so a rebuild picks them up.
pub fn resolve_external_names(inner: SnapshotFn, changes: Arc<Notify>) -> (SnapshotFn, Resolver) {
    let state = Arc::new(Mutex::new(State::default()));
    let wanted_changed = Arc::new(Notify::new());
    let task = tokio::spawn(resolve_loop(
        Arc::clone(&state),
        Arc::clone(&wanted_changed),
        changes,
    ));
    let f: SnapshotFn = Arc::new(move || {
        let mut snap = inner()?;
        let names = names_in(&snap);
        let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
        if names != state.wanted {
            state.wanted = names;
            wanted_changed.notify_one();
        }
        snap.external_names = state
            .resolved
            .iter()
            .filter(|(name, _)| state.wanted.contains(*name))
            .map(|(n, ips)| (n.clone(), ips.clone()))
            .collect();
        Some(snap)
    });
    (f, Resolver { task })
}

/// The DNS names of a snapshot's `ExternalName` Services, normalised.
fn names_in(snap: &Snapshot) -> BTreeSet<String> {
    snap.services
        .values()
        .filter_map(|svc| svc.spec.as_ref())
        .filter(|spec| spec.type_.as_deref() == Some("ExternalName"))
        .filter_map(|spec| spec.external_name.as_deref())
        .map(external_name_key)
        .filter(|n| !n.is_empty())
        .collect()
}

async fn resolve_loop(state: Arc<Mutex<State>>, wanted_changed: Arc<Notify>, changes: Arc<Notify>) {
    // The last failure per name, to log a failure once rather than every round.
    let mut failing: BTreeMap<String, String> = BTreeMap::new();
    loop {
        let wanted: Vec<String> = {
            let state = state.lock().unwrap_or_else(|p| p.into_inner());
            state.wanted.iter().cloned().collect()
        };
        let answers = join_all(wanted.iter().map(|name| lookup(name))).await;
        let mut fresh = BTreeMap::new();
        for (name, answer) in wanted.iter().zip(answers) {
            match answer {
                Ok(ips) => {
                    if failing.remove(name).is_some() {
                        info!(name, "ExternalName resolves again");
                    }
                    fresh.insert(name.clone(), ips);
                }
                Err(reason) => {
                    if failing.get(name) != Some(&reason) {
                        warn!(name, %reason, "cannot resolve an ExternalName Service's name; its last addresses (if any) keep serving");
                        failing.insert(name.clone(), reason);
                    }
                }
            }
        }
        failing.retain(|n, _| wanted.contains(n));
        let changed = {
            let mut state = state.lock().unwrap_or_else(|p| p.into_inner());
            let State { wanted, resolved } = &mut *state;
            let before = resolved.clone();
            // Keep last good answers for names still wanted; forget the rest.
            resolved.retain(|n, _| wanted.contains(n));
            for (name, ips) in fresh {
                if wanted.contains(&name) {
                    resolved.insert(name, ips);
                }
            }
            *resolved != before
        };
        if changed {
            changes.notify_one();
        }
        tokio::select! {
            () = wanted_changed.notified() => {}
            () = tokio::time::sleep(REFRESH) => {}
        }
    }
}

/// Sorted, de-duplicated addresses, or why there are none.
async fn lookup(name: &str) -> Result<Vec<IpAddr>, String> {
    let answer = tokio::time::timeout(LOOKUP_TIMEOUT, tokio::net::lookup_host((name, 0))).await;
    let ips: BTreeSet<IpAddr> = match answer {
        Err(_) => return Err(format!("no answer within {LOOKUP_TIMEOUT:?}")),
        Ok(Err(e)) => return Err(e.to_string()),
        Ok(Ok(addrs)) => addrs.map(|a| a.ip()).collect(),
    };
    if ips.is_empty() {
        return Err("no addresses".into());
    }
    Ok(ips.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use k8s_openapi::api::core::v1::{Service, ServiceSpec};
    use kube::api::ObjectMeta;

    use super::*;
    use crate::snapshot::Object;

    fn external(name: &str, dns: &str) -> Object {
        Object::Service(Arc::new(Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("shop".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ExternalName".into()),
                external_name: Some(dns.into()),
                ..Default::default()
            }),
            status: None,
        }))
    }

    fn source(objects: Vec<Object>) -> SnapshotFn {
        Arc::new(move || Some(Snapshot::from_objects(objects.clone())))
    }

    #[tokio::test]
    async fn names_resolve_and_trigger_a_rebuild() {
        let changes = Arc::new(Notify::new());
        let (snapshot, _resolver) = resolve_external_names(
            source(vec![
                external("local", "LocalHost."),
                // `.invalid` never resolves (RFC 2606).
                external("nowhere", "portico-test.invalid"),
            ]),
            Arc::clone(&changes),
        );
        // The first snapshot makes the names known; nothing is resolved yet.
        let first = snapshot().unwrap();
        assert!(first.external_names.is_empty());

        let deadline = Instant::now() + LOOKUP_TIMEOUT * 4;
        let resolved = loop {
            tokio::time::timeout_at(deadline.into(), changes.notified())
                .await
                .expect("a rebuild is requested once the name resolves");
            let snap = snapshot().unwrap();
            if !snap.external_names.is_empty() {
                break snap.external_names;
            }
        };
        assert!(
            resolved["localhost"].contains(&IpAddr::from([127, 0, 0, 1])),
            "{resolved:?}"
        );
        assert!(!resolved.contains_key("portico-test.invalid"));
    }

    #[test]
    fn only_external_name_services_are_looked_up() {
        let mut plain = external("plain", "ignored.example");
        if let Object::Service(svc) = &mut plain {
            Arc::make_mut(svc).spec.as_mut().unwrap().type_ = Some("ClusterIP".into());
        }
        let snap = Snapshot::from_objects(vec![plain, external("db", "DB.Example.com.")]);
        assert_eq!(
            names_in(&snap),
            BTreeSet::from(["db.example.com".to_owned()])
        );
    }
}
