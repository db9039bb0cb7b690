//! Choosing an endpoint of a backend for one request.
//!
//! A [`Balancer`] is built with the table (one per backend) and holds the
//! backend's endpoints; the health it reads lives on the endpoints
//! themselves. Which endpoints are candidates is cached in an
//! [`Eligible`] snapshot that is rebuilt only when some endpoint's health
//! flipped (a shared generation moved) or an ejection it knows of ran out,
//! so a pick costs a few atomic loads, never a scan and never a lock.
//!
//! Panic mode: when fewer than the policy's share of the endpoints are
//! eligible, every ready endpoint is a candidate again, as Envoy does,
//! rather than letting the few left melt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use crate::health::check::Check;
use crate::health::{EndpointReport, HealthShared, Outcome};
use crate::model::EndpointPolicy;
use crate::upstream::Endpoint;

/// The endpoints of one backend and how to choose among them.
pub struct Balancer {
    endpoints: Vec<Arc<Endpoint>>,
    policy: EndpointPolicy,
    shared: Arc<HealthShared>,
    eligible: ArcSwap<Eligible>,
    next: AtomicU64,
    /// The active checks of these endpoints; held so they run while this
    /// table (or a later one) uses them.
    checks: Vec<Arc<Check>>,
}

/// Which endpoints requests may go to, as of a health generation.
#[derive(Debug)]
struct Eligible {
    generation: u64,
    /// The snapshot is stale from this time on (an ejection ends).
    valid_until_ms: u64,
    /// Indices into the balancer's endpoints.
    candidates: Vec<usize>,
    panic: bool,
}

/// One chosen endpoint.
pub struct Pick<'b> {
    pub endpoint: &'b Arc<Endpoint>,
    /// Its position in the backend, to leave it out of retries.
    pub index: usize,
}

/// Counts a request in flight on an endpoint until dropped; held until the
/// response body is done.
pub struct InFlight {
    endpoint: Arc<Endpoint>,
}

impl InFlight {
    /// Counts one attempt on `endpoint`: in flight now, and in its requests.
    pub fn new(endpoint: &Arc<Endpoint>) -> Self {
        endpoint.health.requests.fetch_add(1, Ordering::Relaxed);
        endpoint.health.in_flight.fetch_add(1, Ordering::Relaxed);
        Self {
            endpoint: Arc::clone(endpoint),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint
            .health
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Balancer ===

impl Balancer {
    pub fn new(
        endpoints: Vec<Arc<Endpoint>>,
        policy: EndpointPolicy,
        shared: Arc<HealthShared>,
        checks: Vec<Arc<Check>>,
    ) -> Self {
        Self {
            eligible: ArcSwap::from_pointee(Eligible {
                // Never a live generation: the first pick builds a snapshot.
                generation: u64::MAX,
                valid_until_ms: 0,
                candidates: Vec::new(),
                panic: false,
            }),
            endpoints,
            policy,
            shared,
            next: AtomicU64::new(0),
            checks,
        }
    }

    /// Each endpoint's health, for `/debug/endpoints`.
    pub fn report(&self, backend: &str) -> Vec<EndpointReport> {
        let now = self.shared.now_ms();
        self.endpoints
            .iter()
            .map(|ep| {
                let h = &ep.health;
                EndpointReport {
                    backend: backend.to_owned(),
                    address: ep.addr(),
                    eligible: h.is_eligible(now),
                    active_healthy: h.is_active_healthy(),
                    ejected_for_ms: h.ejected_until(now).map(|u| u - now),
                    in_flight: h.in_flight(),
                    requests: h.requests.load(Ordering::Relaxed),
                    ejections: h.ejections_total.load(Ordering::Relaxed),
                    checks: self
                        .checks
                        .iter()
                        .filter(|c| Arc::ptr_eq(c.endpoint(), ep))
                        .map(|c| c.report())
                        .collect(),
                }
            })
            .collect()
    }

    /// The active checks of this backend's endpoints.
    pub fn checks(&self) -> &[Arc<Check>] {
        &self.checks
    }

    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    pub fn policy(&self) -> &EndpointPolicy {
        &self.policy
    }

    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }

    /// The endpoints that are eligible right now (ready, passing active
    /// checks, not ejected), whether or not panic mode overrides them.
    pub fn eligible(&self) -> Vec<std::net::SocketAddr> {
        let now = self.shared.now_ms();
        self.endpoints
            .iter()
            .filter(|e| e.health.is_eligible(now))
            .map(|e| e.addr())
            .collect()
    }

    /// Whether requests are spread over all ready endpoints because too few
    /// are eligible.
    pub fn in_panic(&self) -> bool {
        self.snapshot(self.shared.now_ms()).panic
    }

    /// Chooses an endpoint, never one of `tried` (the endpoints this request
    /// already failed on). `None`: no endpoint left to try.
    pub fn pick(&self, tried: &[usize]) -> Option<Pick<'_>> {
        let now = self.shared.now_ms();
        let snap = self.snapshot(now);
        let index = self.round_robin(&snap.candidates, tried)?;
        let endpoint = self.endpoints.get(index)?;
        Some(Pick { endpoint, index })
    }

    /// Records an attempt's outcome on the endpoint at `index`.
    pub fn record(&self, index: usize, outcome: Outcome) {
        let Some(ep) = self.endpoints.get(index) else {
            return;
        };
        ep.health.record(
            outcome,
            &self.policy.outlier,
            self.endpoints.iter().map(|e| &e.health),
            &self.shared,
        );
    }

    /// The current snapshot, rebuilt first when stale.
    fn snapshot(&self, now: u64) -> Arc<Eligible> {
        let generation = self.shared.generation();
        let current = self.eligible.load_full();
        if current.generation == generation && now < current.valid_until_ms {
            return current;
        }
        let mut candidates = Vec::with_capacity(self.endpoints.len());
        let mut valid_until_ms = u64::MAX;
        for (i, ep) in self.endpoints.iter().enumerate() {
            if ep.health.is_eligible(now) {
                candidates.push(i);
            } else if let Some(until) = ep.health.ejected_until(now) {
                valid_until_ms = valid_until_ms.min(until);
            }
        }
        let threshold = usize::from(self.policy.panic_threshold_percent.min(100));
        let panic = candidates.len() * 100 < threshold * self.endpoints.len();
        if panic {
            candidates = (0..self.endpoints.len()).collect();
        }
        let snap = Arc::new(Eligible {
            generation,
            valid_until_ms,
            candidates,
            panic,
        });
        // Racing rebuilds compute the same thing; the last one stays.
        self.eligible.store(Arc::clone(&snap));
        snap
    }

    /// Rotates over the candidates, skipping tried ones.
    fn round_robin(&self, candidates: &[usize], tried: &[usize]) -> Option<usize> {
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        for _ in 0..n {
            let k = self.next.fetch_add(1, Ordering::Relaxed);
            let i = candidates[(k % n as u64) as usize];
            if !tried.contains(&i) {
                return Some(i);
            }
        }
        None
    }
}
