//! Endpoint health: whether an endpoint may take requests, kept on the
//! shared [`Endpoint`](crate::upstream::Endpoint) so every route and every
//! table that points at it sees the same state, and a table swap keeps it.
//!
//! An endpoint is *eligible* when it is ready (it is in the table at all:
//! the EndpointSlice said so), no active check reports it unhealthy, and
//! passive outlier detection has not ejected it. Everything the request
//! path reads or writes here is an atomic; nothing blocks.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::model::OutlierDetection;
use crate::observe::AtomicHistogram;

pub(crate) mod check;
pub(crate) mod metrics;

/// Upper bounds (seconds) of the health-check duration histogram.
const CHECK_DURATION_BUCKETS: [f64; 10] =
    [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

/// State every endpoint shares: the clock origin health times are kept
/// against, and a generation that moves whenever any endpoint's eligibility
/// flips, so balancers know when to look again.
#[derive(Debug)]
pub struct HealthShared {
    epoch: Instant,
    generation: AtomicU64,
    /// How long active probes take, every endpoint together.
    pub(crate) check_duration: AtomicHistogram,
}

impl Default for HealthShared {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            generation: AtomicU64::new(0),
            check_duration: AtomicHistogram::new(&CHECK_DURATION_BUCKETS),
        }
    }
}

impl HealthShared {
    /// Milliseconds since the epoch, on tokio's clock (so paused-clock tests
    /// drive it). Never 0, so 0 can mean "never".
    pub fn now_ms(&self) -> u64 {
        self.ms_at(Instant::now())
    }

    /// [`now_ms`](Self::now_ms) at `at`: a request reads the clock once and
    /// uses that reading for every decision it makes.
    pub(crate) fn ms_at(&self, at: Instant) -> u64 {
        let ms = at.saturating_duration_since(self.epoch).as_millis();
        u64::try_from(ms).unwrap_or(u64::MAX - 1) + 1
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    pub(crate) fn bump(&self) {
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// One endpoint of one backend as `/debug/endpoints` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct EndpointReport {
    pub backend: String,
    pub address: std::net::SocketAddr,
    /// Ready, passing active checks and not ejected.
    pub eligible: bool,
    pub active_healthy: bool,
    /// Time left in the current ejection.
    pub ejected_for_ms: Option<u64>,
    /// Its share while it slow-starts (100: full weight).
    pub weight_percent: u64,
    pub in_flight: u64,
    pub requests: u64,
    pub ejections: u64,
    pub checks: Vec<check::CheckReport>,
}

/// What one attempt on an endpoint came to, for outlier detection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A response below 500.
    Success,
    /// A 5xx response.
    ServerError,
    /// No response: connect failure, timeout, reset.
    LocalError,
}

/// One endpoint's health. Lives on the endpoint.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    /// Active checkers currently reporting the endpoint unhealthy.
    active_failing: AtomicU32,
    /// When the endpoint last became healthy (created, or an active check
    /// recovered), in [`HealthShared::now_ms`] time; slow start ramps from
    /// the later of this and the end of the last ejection.
    healthy_since_ms: AtomicU64,
    /// 0: not ejected; otherwise ejected until this time.
    ejected_until_ms: AtomicU64,
    /// Ejections so far; the next one lasts this many base times.
    ejections: AtomicU32,
    consecutive_5xx: AtomicU32,
    consecutive_errors: AtomicU32,
    /// Requests sent and not yet answered in full.
    pub(crate) in_flight: AtomicU64,
    /// Attempts sent to this endpoint (retries included).
    pub(crate) requests: AtomicU64,
    pub(crate) ejections_total: AtomicU64,
    pub(crate) checks_ok: AtomicU64,
    pub(crate) checks_failed: AtomicU64,
    /// Exponentially weighted response time (nanoseconds, f64 bits) and
    /// when it was last updated (ms), for the `ewma` balancer.
    ewma_ns: AtomicU64,
    ewma_at_ms: AtomicU64,
}

/// How quickly the response-time average forgets (as ingress-nginx's ewma
/// balancer: 10 s).
const EWMA_DECAY_MS: f64 = 10_000.0;

impl EndpointHealth {
    pub(crate) fn new(now_ms: u64) -> Self {
        let h = Self::default();
        h.healthy_since_ms.store(now_ms, Ordering::Relaxed);
        h
    }

    /// Eligible: no active check says unhealthy and not ejected.
    pub fn is_eligible(&self, now_ms: u64) -> bool {
        self.is_active_healthy() && !self.is_ejected(now_ms)
    }

    pub fn is_active_healthy(&self) -> bool {
        self.active_failing.load(Ordering::Acquire) == 0
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until_ms.load(Ordering::Acquire)
    }

    /// When the current ejection ends, if ejected.
    pub(crate) fn ejected_until(&self, now_ms: u64) -> Option<u64> {
        let until = self.ejected_until_ms.load(Ordering::Acquire);
        (now_ms < until).then_some(until)
    }

    /// Since when the endpoint has been taking traffic (for slow start).
    pub(crate) fn eligible_since(&self) -> u64 {
        self.healthy_since_ms
            .load(Ordering::Relaxed)
            .max(self.ejected_until_ms.load(Ordering::Relaxed))
    }

    /// The response-time average in nanoseconds, decayed to now; 0 before
    /// the first response.
    pub(crate) fn ewma_ns(&self, now_ms: u64) -> f64 {
        let v = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let at = self.ewma_at_ms.load(Ordering::Relaxed);
        // An idle endpoint's average fades, so it gets tried again.
        v * (-(now_ms.saturating_sub(at) as f64) / EWMA_DECAY_MS).exp()
    }

    /// Folds one response time in. Racing updates may lose a sample, which
    /// an average shrugs off; taking a lock here would not be worth it.
    pub(crate) fn observe_latency(&self, latency: Duration, now_ms: u64) {
        let sample = latency.as_nanos() as f64;
        let at = self.ewma_at_ms.swap(now_ms, Ordering::Relaxed);
        let old = f64::from_bits(self.ewma_ns.load(Ordering::Relaxed));
        let v = if at == 0 {
            sample
        } else {
            let w = (-(now_ms.saturating_sub(at) as f64) / EWMA_DECAY_MS).exp();
            old * w + sample * (1.0 - w)
        };
        self.ewma_ns.store(v.to_bits(), Ordering::Relaxed);
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Records an attempt's outcome; returns whether this ejected the
    /// endpoint. `peers` are the backend's endpoints (this one included),
    /// which bound how many may be ejected at once.
    pub(crate) fn record<'p>(
        &self,
        outcome: Outcome,
        policy: &OutlierDetection,
        peers: impl ExactSizeIterator<Item = &'p EndpointHealth>,
        shared: &HealthShared,
    ) -> bool {
        let (counter, threshold) = match outcome {
            Outcome::Success => {
                // Plain loads first: most responses succeed and the counters
                // are already 0, so no cache line is dirtied.
                for c in [&self.consecutive_5xx, &self.consecutive_errors] {
                    if c.load(Ordering::Relaxed) != 0 {
                        c.store(0, Ordering::Relaxed);
                    }
                }
                return false;
            }
            Outcome::ServerError => (&self.consecutive_5xx, policy.consecutive_5xx),
            Outcome::LocalError => (&self.consecutive_errors, policy.consecutive_errors),
        };
        let n = counter.fetch_add(1, Ordering::AcqRel).saturating_add(1);
        if threshold == 0 || n < threshold {
            return false;
        }
        self.try_eject(policy, peers, shared)
    }

    fn try_eject<'p>(
        &self,
        policy: &OutlierDetection,
        peers: impl ExactSizeIterator<Item = &'p EndpointHealth>,
        shared: &HealthShared,
    ) -> bool {
        let now = shared.now_ms();
        let prev = self.ejected_until_ms.load(Ordering::Acquire);
        if now < prev {
            return false;
        }
        let total = peers.len();
        let mut ejected = 0usize;
        for p in peers {
            if p.is_ejected(now) {
                ejected += 1;
            }
        }
        let allowed = total * usize::from(policy.max_ejected_percent.min(100)) / 100;
        if ejected >= allowed {
            return false;
        }
        // An endpoint that stayed in for a whole maximum ejection time
        // starts over at the base time.
        let max_ms = duration_ms(policy.max_ejection);
        if prev != 0 && now.saturating_sub(prev) > max_ms {
            self.ejections.store(0, Ordering::Relaxed);
        }
        let k = self.ejections.load(Ordering::Relaxed).saturating_add(1);
        let ms = duration_ms(policy.base_ejection)
            .saturating_mul(u64::from(k))
            .min(max_ms.max(1));
        // Only one racer ejects (and counts).
        if self
            .ejected_until_ms
            .compare_exchange(
                prev,
                now.saturating_add(ms),
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_err()
        {
            return false;
        }
        self.ejections.store(k, Ordering::Relaxed);
        self.consecutive_5xx.store(0, Ordering::Relaxed);
        self.consecutive_errors.store(0, Ordering::Relaxed);
        self.ejections_total.fetch_add(1, Ordering::Relaxed);
        shared.bump();
        true
    }

    /// An active checker's verdict flipped. Called by checkers only, under
    /// their own lock, so that a checker that goes away takes back exactly
    /// what it put in.
    pub(crate) fn set_active_failing(&self, failing: bool, shared: &HealthShared) {
        if failing {
            self.active_failing.fetch_add(1, Ordering::AcqRel);
        } else if self.active_failing.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.healthy_since_ms
                .store(shared.now_ms(), Ordering::Relaxed);
        }
        shared.bump();
    }
}

pub(crate) fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> OutlierDetection {
        OutlierDetection {
            consecutive_5xx: 3,
            consecutive_errors: 2,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_for_base_times_count() {
        let shared = HealthShared::default();
        let eps: Vec<EndpointHealth> = (0..4)
            .map(|_| EndpointHealth::new(shared.now_ms()))
            .collect();
        let p = policy();
        let record = |i: usize, o| eps[i].record(o, &p, eps.iter(), &shared);
        assert!(!record(0, Outcome::ServerError));
        assert!(!record(0, Outcome::ServerError));
        // A success in between starts the count over.
        assert!(!record(0, Outcome::Success));
        assert!(!record(0, Outcome::ServerError));
        assert!(!record(0, Outcome::ServerError));
        assert!(record(0, Outcome::ServerError));
        assert!(!eps[0].is_eligible(shared.now_ms()));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!eps[0].is_eligible(shared.now_ms()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(eps[0].is_eligible(shared.now_ms()));
        // The second ejection lasts twice as long.
        assert!(!record(0, Outcome::LocalError));
        assert!(record(0, Outcome::LocalError));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(eps[0].is_ejected(shared.now_ms()));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(!eps[0].is_ejected(shared.now_ms()));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_is_capped_and_resets_after_a_quiet_spell() {
        let shared = HealthShared::default();
        let eps: Vec<EndpointHealth> = (0..2).map(|_| EndpointHealth::new(1)).collect();
        let p = OutlierDetection {
            consecutive_errors: 1,
            ..policy()
        };
        for k in 1..=12u64 {
            assert!(eps[0].record(Outcome::LocalError, &p, eps.iter(), &shared));
            let until = eps[0].ejected_until(shared.now_ms()).unwrap();
            let want = (30_000 * k).min(300_000);
            assert_eq!(until - shared.now_ms(), want, "ejection {k}");
            tokio::time::advance(Duration::from_millis(want)).await;
        }
        // Healthy for longer than the cap: back to the base time.
        tokio::time::advance(Duration::from_secs(301)).await;
        assert!(eps[0].record(Outcome::LocalError, &p, eps.iter(), &shared));
        let until = eps[0].ejected_until(shared.now_ms()).unwrap();
        assert_eq!(until - shared.now_ms(), 30_000);
    }

    #[tokio::test(start_paused = true)]
    async fn at_most_the_allowed_share_is_ejected() {
        let shared = HealthShared::default();
        let eps: Vec<EndpointHealth> = (0..4).map(|_| EndpointHealth::new(1)).collect();
        let p = OutlierDetection {
            consecutive_5xx: 1,
            ..policy()
        };
        let ejected: Vec<bool> = (0..4)
            .map(|i| eps[i].record(Outcome::ServerError, &p, eps.iter(), &shared))
            .collect();
        assert_eq!(ejected, [true, true, false, false]);
        // Zero turns a detector off.
        let off = OutlierDetection {
            consecutive_5xx: 0,
            ..policy()
        };
        for _ in 0..100 {
            assert!(!eps[3].record(Outcome::ServerError, &off, eps.iter(), &shared));
        }
    }
    #[tokio::test(start_paused = true)]
    async fn ewma_follows_latency_and_fades_when_idle() {
        let shared = HealthShared::default();
        let h = EndpointHealth::new(1);
        h.observe_latency(Duration::from_millis(100), shared.now_ms());
        assert!((h.ewma_ns(shared.now_ms()) - 1e8).abs() < 1.0);
        tokio::time::advance(Duration::from_secs(10)).await;
        let faded = h.ewma_ns(shared.now_ms());
        assert!(faded < 0.4e8 && faded > 0.3e8, "{faded}");
    }
}
