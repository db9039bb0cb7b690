//! A rule's weighted split over its backends, each with its balancer and
//! retry budget: built once per table from the model's backends and the
//! shared endpoints, read by the proxy to pick a backend.

use std::collections::HashMap;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;

use crate::balance::retry::RetryBudget;
use crate::balance::{Balancer, SessionSide};
use crate::filter::{BackendFilters, Interned};
use crate::model::{Backend, Protocol, RetryPolicy, UpstreamTls};
use crate::upstream::{EndpointKey, Upstreams};

/// A weighted split over backends; each backend's [`Balancer`] picks the
/// endpoint. The split's counter is an atomic in the table: a swap restarts
/// the rotation, which is harmless. Endpoint health lives on the endpoints.
#[derive(Default)]
pub struct BackendSet {
    /// Shared with every rule of the table naming an equal backend
    /// ([`SharedBackends`]). Boxed slices, sized exactly: a table keeps
    /// one set per rule.
    backends: Box<[Arc<BackendRuntime>]>,
    /// Cumulative weights, parallel to `backends`.
    cumulative: Box<[u64]>,
    next: AtomicU64,
}

pub struct BackendRuntime {
    pub(crate) name: Arc<str>,
    pub(crate) protocol: Protocol,
    pub balancer: Balancer,
    /// The backend's budget for retries (the policy is the rule's,
    /// `model::Forward::retry`).
    pub(crate) budget: Arc<RetryBudget>,
    /// The backend's own header edits; empty (and unread) for most.
    pub(crate) filters: BackendFilters,
    /// Set when the reference could not be resolved
    /// ([`Backend::invalid`]): requests picked here are answered 500 and
    /// counted on it. Such a backend has no endpoints, checks or pools.
    pub(crate) unresolved: Option<Counter>,
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum PickError {
    /// No backend has weight (or none is listed).
    NoBackend,
    /// The chosen backend has no endpoints.
    NoEndpoints,
    /// The chosen backend's reference could not be resolved.
    Unresolved,
}

// === impl BackendSet ===

impl BackendSet {
    pub(crate) fn build(
        list: &[Backend],
        upstreams: &Upstreams,
        tls: Option<&Arc<UpstreamTls>>,
        retry: &RetryPolicy,
        side: SessionSide,
    ) -> Self {
        let mut interned = Interned::default();
        let mut shared = SharedBackends::default();
        let build = (upstreams, &mut interned, &mut shared);
        Self::build_with(list, tls, retry, side, build)
    }

    /// [`BackendSet::build`], sharing the backends' compiled header edits
    /// (`interned`) and each backend's runtime (`shared`) with the rest of
    /// the table build.
    pub(crate) fn build_with<'c>(
        list: &'c [Backend],
        tls: Option<&'c Arc<UpstreamTls>>,
        retry: &RetryPolicy,
        side: SessionSide,
        (upstreams, interned, shared): (&Upstreams, &mut Interned, &mut SharedBackends<'c>),
    ) -> Self {
        let mut total = 0u64;
        let weighted = list.iter().filter(|b| b.weight > 0).count();
        let mut backends = Vec::with_capacity(weighted);
        let mut cumulative = Vec::with_capacity(weighted);
        for b in list.iter().filter(|b| b.weight > 0) {
            total += u64::from(b.weight);
            cumulative.push(total);
            let key = BackendKey {
                backend: b,
                tls,
                budget: (retry.budget_percent, retry.budget_min_per_second),
                side,
            };
            let runtime = shared.get_or_build(key, || {
                BackendRuntime::build(b, upstreams, tls, retry, side, interned)
            });
            backends.push(runtime);
        }
        Self {
            backends: backends.into_boxed_slice(),
            cumulative: cumulative.into_boxed_slice(),
            next: AtomicU64::new(0),
        }
    }
    /// Picks a backend by weight; its balancer then picks the endpoint.
    pub(crate) fn pick_backend(&self) -> Result<&BackendRuntime, PickError> {
        let total = *self.cumulative.last().ok_or(PickError::NoBackend)?;
        let n = self.next.fetch_add(1, Ordering::Relaxed) % total;
        let idx = self.cumulative.partition_point(|&c| c <= n);
        let backend = self.backends.get(idx).ok_or(PickError::NoBackend)?;
        if let Some(counter) = &backend.unresolved {
            counter.inc();
            return Err(PickError::Unresolved);
        }
        if backend.balancer.is_empty() {
            return Err(PickError::NoEndpoints);
        }
        Ok(backend)
    }

    /// Every backend of the split (for metrics and `/debug`).
    pub fn backends(&self) -> impl Iterator<Item = &BackendRuntime> {
        self.backends.iter().map(|b| &**b)
    }
}

/// What makes two backends' runtimes interchangeable: the whole model
/// backend (name, endpoints, policy, filters), the rule's upstream TLS and
/// retry budget settings, and the side of the split.
#[derive(Clone, Copy, PartialEq)]
struct BackendKey<'c> {
    backend: &'c Backend,
    tls: Option<&'c Arc<UpstreamTls>>,
    budget: (u8, u32),
    side: SessionSide,
}

/// Each distinct backend's runtime of one table build, so that the rules
/// naming an equal backend (at 10,000 rules over 100 Services: 100, not
/// 10,000) share one balancer, as an nginx upstream serves every location
/// naming it. Keys borrow the build's config; the map lives for one build.
#[derive(Default)]
pub(crate) struct SharedBackends<'c> {
    /// By a hash of the name, endpoints and side; equal keys compared whole.
    built: HashMap<u64, Vec<(BackendKey<'c>, Arc<BackendRuntime>)>>,
}

impl<'c> SharedBackends<'c> {
    fn get_or_build(
        &mut self,
        key: BackendKey<'c>,
        build: impl FnOnce() -> BackendRuntime,
    ) -> Arc<BackendRuntime> {
        let mut h = DefaultHasher::new();
        (
            &key.backend.name,
            &key.backend.endpoints,
            key.side == SessionSide::Canary,
        )
            .hash(&mut h);
        let bucket = self.built.entry(h.finish()).or_default();
        if let Some((_, runtime)) = bucket.iter().find(|(k, _)| *k == key) {
            return Arc::clone(runtime);
        }
        let runtime = Arc::new(build());
        bucket.push((key, Arc::clone(&runtime)));
        runtime
    }
}

// === impl BackendRuntime ===

impl BackendRuntime {
    /// One backend's runtime: its endpoints (from the shared store), active
    /// checks, balancer and retry budget.
    fn build(
        b: &Backend,
        upstreams: &Upstreams,
        tls: Option<&Arc<UpstreamTls>>,
        retry: &RetryPolicy,
        side: SessionSide,
        interned: &mut Interned,
    ) -> Self {
        if b.invalid.is_some() {
            return Self::unresolved(b, upstreams);
        }
        let endpoints: Vec<_> = b
            .endpoints
            .iter()
            .map(|&addr| {
                upstreams.endpoint(EndpointKey {
                    addr,
                    protocol: b.protocol,
                    tls: tls.cloned(),
                })
            })
            .collect();
        let checks = match &b.policy.health_check {
            Some(hc) => endpoints
                .iter()
                .filter_map(|ep| upstreams.check(ep, hc))
                .collect(),
            None => Vec::new(),
        };
        Self {
            name: Arc::from(b.name.as_str()),
            protocol: b.protocol,
            balancer: Balancer::new(
                endpoints,
                b.policy.clone(),
                Arc::clone(upstreams.health()),
                checks,
            )
            .for_side(side),
            budget: upstreams.retry_budget(
                &b.name,
                retry.budget_percent,
                retry.budget_min_per_second,
            ),
            filters: BackendFilters::build(&b.filters, interned),
            unresolved: None,
        }
    }

    /// A backend that keeps its share of the split and answers it 500:
    /// no endpoint, health check or pool is made for it, and its retry
    /// budget (never spent: nothing is sent) stays out of the shared store.
    fn unresolved(b: &Backend, upstreams: &Upstreams) -> Self {
        let health = Arc::clone(upstreams.health());
        Self {
            name: Arc::from(b.name.as_str()),
            protocol: b.protocol,
            balancer: Balancer::new(
                Vec::new(),
                b.policy.clone(),
                Arc::clone(&health),
                Vec::new(),
            ),
            budget: Arc::new(RetryBudget::new(0, 0, health)),
            filters: BackendFilters::default(),
            unresolved: Some(upstreams.unresolved_counter().clone()),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    /// A backend of `weight` on loopback `ports`, speaking HTTP/1.1.
    pub(crate) fn backend(name: &str, weight: u32, ports: &[u16]) -> Backend {
        let endpoints = ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
            .collect();
        Backend {
            weight,
            protocol: Protocol::Http1,
            ..Backend::new(name, endpoints)
        }
    }

    impl BackendSet {
        /// A backend, then one of its endpoints.
        pub(crate) fn pick(
            &self,
        ) -> Result<(&BackendRuntime, &Arc<crate::upstream::Endpoint>), PickError> {
            let b = self.pick_backend()?;
            let p = b
                .balancer
                .pick(&Default::default(), &[])
                .ok_or(PickError::NoEndpoints)?;
            Ok((b, p.endpoint))
        }
    }

    fn set(backends: Vec<Backend>) -> BackendSet {
        let upstreams = Upstreams::new(Default::default(), Counter::default());
        BackendSet::build(
            &backends,
            &upstreams,
            None,
            &RetryPolicy::default(),
            SessionSide::Mainline,
        )
    }

    #[test]
    fn weights_split_exactly_over_a_cycle() {
        let s = set(vec![backend("a", 3, &[1]), backend("b", 1, &[2])]);
        let mut a = 0;
        for _ in 0..400 {
            if &*s.pick().unwrap().0.name == "a" {
                a += 1;
            }
        }
        assert_eq!(a, 300);
    }

    #[test]
    fn zero_weight_backend_gets_nothing() {
        let s = set(vec![backend("a", 0, &[1]), backend("b", 1, &[2])]);
        for _ in 0..10 {
            assert_eq!(&*s.pick().unwrap().0.name, "b");
        }
        let none = set(vec![backend("a", 0, &[1])]);
        assert_eq!(none.pick().err(), Some(PickError::NoBackend));
        let empty = set(vec![backend("a", 1, &[])]);
        assert_eq!(empty.pick().err(), Some(PickError::NoEndpoints));
    }

    #[test]
    fn endpoints_round_robin() {
        let s = set(vec![backend("a", 1, &[1, 2, 3])]);
        let ports: Vec<u16> = (0..6).map(|_| s.pick().unwrap().1.addr().port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
    }
}
