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
//!
//! Policies: smooth weighted round robin (default), least request (power
//! of two choices), EWMA, consistent hashing with bounded load, and cookie
//! affinity. Slow start scales an endpoint's weight for all of them.

pub(crate) mod retry;
mod set;

#[cfg(test)]
pub(crate) use set::tests::backend as test_backend;
pub use set::{BackendRuntime, BackendSet};
pub(crate) use set::{PickError, SharedBackends};

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;
use http::{HeaderMap, HeaderValue, Uri};

use crate::model::{AffinityMode, Balance, CookieAffinity, EndpointPolicy, HashKey, HashVar};
use crate::upstream::Endpoint;
use crate::upstream::health::check::Check;
use crate::upstream::health::{EndpointReport, HealthShared, Outcome, duration_ms};

pub mod ring;

use self::ring::{Ring, endpoint_id, mix};

/// Full weight; slow start scales it down to a tenth.
const FULL: u64 = 1000;
const SLOW_START_FLOOR: u64 = FULL / 10;
/// Consistent hashing with bounded load: an endpoint with more than this
/// many times the average in-flight load passes keys on (Mirrokni et al.).
const LOAD_BOUND: f64 = 1.25;

/// The endpoints of one backend and how to choose among them.
pub struct Balancer {
    endpoints: Vec<Arc<Endpoint>>,
    policy: Arc<EndpointPolicy>,
    shared: Arc<HealthShared>,
    eligible: ArcSwap<Eligible>,
    next: AtomicU64,
    /// Requests in flight through this backend, for bounded load.
    load: Arc<AtomicU64>,
    /// Built for consistent hashing and balanced cookie affinity.
    ring: Ring,
    /// Sorted (endpoint id, index), for persistent cookie affinity.
    ids: Vec<(u64, usize)>,
    /// The active checks of these endpoints; held so they run while this
    /// table (or a later one) uses them.
    checks: Vec<Arc<Check>>,
    /// Whose sticky sessions this backend starts and follows.
    side: SessionSide,
}

/// Which backends of a rule a sticky session belongs to: the mainline's,
/// or the canary's, whose session cookies carry [`CANARY_SESSION`] after
/// the key. A backend follows only its own side's sessions, so a canary
/// session can be told from a mainline one before any backend is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SessionSide {
    #[default]
    Mainline,
    Canary,
}

/// The end of a canary session cookie's value.
const CANARY_SESSION: &str = ".canary";

impl SessionSide {
    /// The side and key of a session cookie's value: 16 hex digits, then
    /// [`CANARY_SESSION`] for the canary's.
    pub fn parse(value: &[u8]) -> Option<(SessionSide, u64)> {
        let (side, hex) = match value.strip_suffix(CANARY_SESSION.as_bytes()) {
            Some(hex) => (SessionSide::Canary, hex),
            None => (SessionSide::Mainline, value),
        };
        if hex.len() != 16 || !hex.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        let key = u64::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?;
        Some((side, key))
    }

    fn suffix(self) -> &'static str {
        match self {
            SessionSide::Mainline => "",
            SessionSide::Canary => CANARY_SESSION,
        }
    }
}

/// Which endpoints requests may go to, as of a health generation.
#[derive(Debug)]
struct Eligible {
    generation: u64,
    /// The snapshot is stale from this time on (an ejection ends).
    valid_until_ms: u64,
    /// Indices into the balancer's endpoints.
    candidates: Vec<usize>,
    /// `is_candidate[i]`: whether endpoint `i` is among the candidates.
    is_candidate: Vec<bool>,
    panic: bool,
}

/// What of a request decides its endpoint under hash and cookie policies,
/// taken before the request is sent on (and kept for its retries).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestKey {
    /// The `upstream-hash-by` key's hash; `None`: no such key in the
    /// request (round robin then).
    hash: Option<u64>,
    /// The sticky cookie's value, when it parses.
    cookie: Option<u64>,
}

/// What a request needs to compute its [`RequestKey`].
pub struct RequestView<'a> {
    pub client: IpAddr,
    pub uri: &'a Uri,
    /// The host as routed (may carry a port).
    pub host: &'a str,
    pub headers: &'a HeaderMap,
}

/// One chosen endpoint.
pub struct Pick<'b> {
    pub endpoint: &'b Arc<Endpoint>,
    /// Its position in the backend, to leave it out of retries.
    pub index: usize,
    /// A sticky-session cookie to send with the response.
    pub set_cookie: Option<HeaderValue>,
}

/// Counts a request in flight on an endpoint (and its backend) until
/// dropped; held until the response body is done.
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    load: Arc<AtomicU64>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint
            .health
            .in_flight
            .fetch_sub(1, Ordering::Relaxed);
        self.load.fetch_sub(1, Ordering::Relaxed);
    }
}

// === impl Balancer ===

impl Balancer {
    pub fn new(
        endpoints: Vec<Arc<Endpoint>>,
        policy: Arc<EndpointPolicy>,
        shared: Arc<HealthShared>,
        checks: Vec<Arc<Check>>,
    ) -> Self {
        let (ring, ids) = match &policy.balance {
            Balance::ConsistentHash { .. } => {
                (Ring::new(endpoints.iter().map(|e| e.addr())), vec![])
            }
            Balance::Cookie(c) => match c.mode {
                AffinityMode::Balanced => (Ring::new(endpoints.iter().map(|e| e.addr())), vec![]),
                AffinityMode::Persistent => {
                    let mut ids: Vec<(u64, usize)> = endpoints
                        .iter()
                        .enumerate()
                        .map(|(i, e)| (endpoint_id(e.addr()), i))
                        .collect();
                    ids.sort_unstable();
                    (Ring::default(), ids)
                }
            },
            _ => (Ring::default(), vec![]),
        };
        Self {
            eligible: ArcSwap::from_pointee(Eligible {
                // Never a live generation: the first pick builds a snapshot.
                generation: u64::MAX,
                valid_until_ms: 0,
                candidates: Vec::new(),
                is_candidate: Vec::new(),
                panic: false,
            }),
            endpoints,
            policy,
            shared,
            next: AtomicU64::new(0),
            load: Arc::default(),
            ring,
            ids,
            checks,
            side: SessionSide::Mainline,
        }
    }

    /// Starts and follows the sticky sessions of `side` only.
    pub fn for_side(mut self, side: SessionSide) -> Self {
        self.side = side;
        self
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
    pub fn eligible(&self) -> Vec<SocketAddr> {
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

    /// The part of `req` this backend's policy picks by.
    pub fn request_key(&self, req: &RequestView<'_>) -> RequestKey {
        match &self.policy.balance {
            Balance::ConsistentHash { key } => RequestKey {
                hash: hash_request(key, req),
                cookie: None,
            },
            Balance::Cookie(c) => RequestKey {
                hash: None,
                cookie: crate::headers::cookie_value(req.headers, &c.name)
                    .and_then(SessionSide::parse)
                    .and_then(|(side, key)| (side == self.side).then_some(key)),
            },
            _ => RequestKey::default(),
        }
    }

    /// Chooses an endpoint, never one of `tried` (the endpoints this request
    /// already failed on). `None`: no endpoint left to try.
    pub fn pick(&self, key: &RequestKey, tried: &[usize]) -> Option<Pick<'_>> {
        self.pick_at(key, tried, tokio::time::Instant::now())
    }

    /// [`pick`](Self::pick) on the clock reading `at`, so a request reads
    /// the clock once for all it decides.
    pub fn pick_at(
        &self,
        key: &RequestKey,
        tried: &[usize],
        at: tokio::time::Instant,
    ) -> Option<Pick<'_>> {
        let now = self.shared.ms_at(at);
        let snap = self.snapshot(now);
        let (index, set_cookie) = match &self.policy.balance {
            Balance::RoundRobin => (self.round_robin(&snap, tried, now)?, None),
            Balance::LeastRequest => (self.two_choices(&snap, tried, now, false)?, None),
            Balance::Ewma => (self.two_choices(&snap, tried, now, true)?, None),
            Balance::ConsistentHash { .. } => match key.hash {
                Some(h) => (self.on_ring(&snap, h, tried, true)?, None),
                None => (self.round_robin(&snap, tried, now)?, None),
            },
            Balance::Cookie(c) => self.sticky(c, &snap, key, tried, now)?,
        };
        let endpoint = self.endpoints.get(index)?;
        Some(Pick {
            endpoint,
            index,
            set_cookie,
        })
    }

    /// Counts an attempt on the picked endpoint: in flight until the guard
    /// drops, and in the endpoint's requests.
    pub fn in_flight(&self, pick: &Pick<'_>) -> InFlight {
        let h = &pick.endpoint.health;
        h.requests.fetch_add(1, Ordering::Relaxed);
        h.in_flight.fetch_add(1, Ordering::Relaxed);
        self.load.fetch_add(1, Ordering::Relaxed);
        InFlight {
            endpoint: Arc::clone(pick.endpoint),
            load: Arc::clone(&self.load),
        }
    }

    /// Whether [`record`](Self::record) uses the latency it is given (only
    /// the EWMA balancer does); others spare the request a clock read.
    pub fn wants_latency(&self) -> bool {
        self.policy.balance == Balance::Ewma
    }

    /// Records an attempt's outcome on the endpoint at `index`; `latency`
    /// (to the response head) feeds the EWMA.
    pub fn record(&self, index: usize, outcome: Outcome, latency: std::time::Duration) {
        let Some(ep) = self.endpoints.get(index) else {
            return;
        };
        if outcome != Outcome::LocalError && self.policy.balance == Balance::Ewma {
            ep.health.observe_latency(latency, self.shared.now_ms());
        }
        ep.health.record(
            outcome,
            &self.policy.outlier,
            self.endpoints.iter().map(|e| &e.health),
            &self.shared,
        );
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
                    weight_percent: self.weight(ep, now) / (FULL / 100),
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

    /// The current snapshot, rebuilt first when stale. A guard, not a
    /// clone: a pick touches no shared reference count.
    fn snapshot(&self, now: u64) -> arc_swap::Guard<Arc<Eligible>> {
        let generation = self.shared.generation();
        let current = self.eligible.load();
        if current.generation == generation && now < current.valid_until_ms {
            return current;
        }
        drop(current);
        let n = self.endpoints.len();
        let mut candidates = Vec::with_capacity(n);
        let mut valid_until_ms = u64::MAX;
        for (i, ep) in self.endpoints.iter().enumerate() {
            if ep.health.is_eligible(now) {
                candidates.push(i);
            } else if let Some(until) = ep.health.ejected_until(now) {
                valid_until_ms = valid_until_ms.min(until);
            }
        }
        let threshold = usize::from(self.policy.panic_threshold_percent.min(100));
        let panic = candidates.len() * 100 < threshold * n;
        if panic {
            candidates = (0..n).collect();
        }
        let mut is_candidate = vec![false; n];
        for &i in &candidates {
            is_candidate[i] = true;
        }
        // Racing rebuilds compute the same thing; the last one stays.
        self.eligible.store(Arc::new(Eligible {
            generation,
            valid_until_ms,
            candidates,
            is_candidate,
            panic,
        }));
        self.eligible.load()
    }

    /// An endpoint's weight in `FULL` units: all of it, or less while it
    /// slow-starts.
    fn weight(&self, ep: &Endpoint, now: u64) -> u64 {
        let Some(window) = self.policy.slow_start else {
            return FULL;
        };
        let window = duration_ms(window).max(1);
        let elapsed = now.saturating_sub(ep.health.eligible_since());
        if elapsed >= window {
            return FULL;
        }
        (FULL * elapsed / window).max(SLOW_START_FLOOR)
    }

    /// Smooth weighted round robin without a lock: endpoints take turns;
    /// one at weight w of FULL takes w of every FULL of its turns, spread
    /// evenly (a Bresenham line over the rounds), so a slow-starting
    /// endpoint is interleaved, never bursted.
    fn round_robin(&self, snap: &Eligible, tried: &[usize], now: u64) -> Option<usize> {
        let c = &snap.candidates;
        let n = c.len();
        if n == 0 {
            return None;
        }
        let mut best: Option<(u64, usize)> = None;
        // Retries start from a random place, so they do not shift the
        // rotation that first attempts follow (which would send every
        // first attempt to the endpoint that just failed).
        let mut own = fastrand::u64(..);
        for _ in 0..(4 * n + 16) {
            let k = if tried.is_empty() {
                self.next.fetch_add(1, Ordering::Relaxed)
            } else {
                own = own.wrapping_add(1);
                own
            };
            let i = c[(k % n as u64) as usize];
            if tried.contains(&i) {
                if tried.len() >= n && c.iter().all(|i| tried.contains(i)) {
                    return None;
                }
                continue;
            }
            let w = self.weight(&self.endpoints[i], now);
            let round = (k / n as u64) % FULL;
            if w >= FULL || (round + 1) * w / FULL > round * w / FULL {
                return Some(i);
            }
            if best.is_none_or(|(bw, _)| w > bw) {
                best = Some((w, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// The better of two random candidates: fewer requests in flight per
    /// unit of weight, or (EWMA) lower average latency times that.
    fn two_choices(&self, snap: &Eligible, tried: &[usize], now: u64, ewma: bool) -> Option<usize> {
        let open: Vec<usize> = if tried.is_empty() {
            Vec::new()
        } else {
            snap.candidates
                .iter()
                .copied()
                .filter(|i| !tried.contains(i))
                .collect()
        };
        let c: &[usize] = if tried.is_empty() {
            &snap.candidates
        } else {
            &open
        };
        match c.len() {
            0 => return None,
            1 => return Some(c[0]),
            _ => {}
        }
        let a = fastrand::usize(..c.len());
        let mut b = fastrand::usize(..c.len() - 1);
        if b >= a {
            b += 1;
        }
        let score = |i: usize| {
            let ep = &self.endpoints[i];
            let load = (ep.health.in_flight() + 1) as f64;
            let cost = if ewma {
                // +1 ms: an endpoint with no samples yet is not free.
                (ep.health.ewma_ns(now) + 1e6) * load
            } else {
                load
            };
            cost / self.weight(ep, now) as f64
        };
        let (a, b) = (c[a], c[b]);
        Some(if score(b) < score(a) { b } else { a })
    }

    /// The first endpoint clockwise from `hash` that is a candidate, not
    /// tried, and (when `bounded`) not over the load bound.
    fn on_ring(&self, snap: &Eligible, hash: u64, tried: &[usize], bounded: bool) -> Option<usize> {
        let n = snap.candidates.len();
        if n == 0 {
            return None;
        }
        let total = self.load.load(Ordering::Relaxed) as f64;
        let bound = (LOAD_BOUND * (total + 1.0) / n as f64).ceil() as u64;
        let mut fallback = None;
        for i in self.ring.walk(hash) {
            if !snap.is_candidate[i] || tried.contains(&i) {
                continue;
            }
            if !bounded || self.endpoints[i].health.in_flight() < bound {
                return Some(i);
            }
            fallback.get_or_insert(i);
        }
        fallback
    }

    /// Cookie affinity: the cookie's endpoint while it is a candidate,
    /// otherwise a new one (and a cookie naming it).
    fn sticky(
        &self,
        c: &CookieAffinity,
        snap: &Eligible,
        key: &RequestKey,
        tried: &[usize],
        now: u64,
    ) -> Option<(usize, Option<HeaderValue>)> {
        match c.mode {
            AffinityMode::Persistent => {
                let stuck = key.cookie.and_then(|id| {
                    let at = self.ids.binary_search_by_key(&id, |(id, _)| *id).ok()?;
                    let i = self.ids[at].1;
                    (snap.is_candidate[i] && !tried.contains(&i)).then_some(i)
                });
                if let Some(i) = stuck {
                    return Some((i, None));
                }
                let i = self.round_robin(snap, tried, now)?;
                let id = endpoint_id(self.endpoints[i].addr());
                // A retry re-points the session only under change-on-failure.
                let repoint = tried.is_empty() || c.change_on_failure;
                Some((i, repoint.then(|| set_cookie(c, id, self.side)).flatten()))
            }
            AffinityMode::Balanced => {
                // Sessions stay put under load: no bound here.
                if let Some(k) = key.cookie
                    && let Some(i) = self.on_ring(snap, mix(k), tried, false)
                {
                    // After a failure the session may move to the endpoint
                    // that answers (change-on-failure): a fresh key whose
                    // first choice is that endpoint.
                    if tried.is_empty() || !c.change_on_failure {
                        return Some((i, None));
                    }
                }
                if !tried.is_empty() && !c.change_on_failure {
                    // A retry of a new session: the cookie keeps pointing
                    // where the first attempt went.
                    let i = self.on_ring(snap, mix(fastrand::u64(..)), tried, false)?;
                    return Some((i, None));
                }
                // A new session: a random key the ring maps to an endpoint
                // not tried yet.
                let mut last = None;
                for _ in 0..16 {
                    let k = fastrand::u64(..);
                    let i = self.on_ring(snap, mix(k), tried, false)?;
                    if self.ring.walk(mix(k)).next() == Some(i) {
                        return Some((i, set_cookie(c, k, self.side)));
                    }
                    last = Some((i, k));
                }
                last.map(|(i, k)| (i, set_cookie(c, k, self.side)))
            }
        }
    }
}

/// The `upstream-hash-by` key of a request; `None` when none of its
/// variables is present.
fn hash_request(key: &HashKey, req: &RequestView<'_>) -> Option<u64> {
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    let mut any = false;
    let mut part = |bytes: Option<&[u8]>| {
        if let Some(b) = bytes {
            any = true;
            h.write(b);
        }
        // A separator, so `$host$uri` of ("a", "bc") and ("ab", "c") differ.
        h.write_u8(0xff);
    };
    for var in &key.0 {
        match var {
            HashVar::RemoteAddr => {
                let ip = match req.client {
                    IpAddr::V4(v4) => v4.octets().to_vec(),
                    IpAddr::V6(v6) => v6.octets().to_vec(),
                };
                part(Some(&ip));
            }
            HashVar::RequestUri => part(Some(
                req.uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .as_bytes(),
            )),
            HashVar::Uri => part(Some(req.uri.path().as_bytes())),
            HashVar::Host => {
                let (host, _) = crate::headers::split_host_port(req.host);
                part(Some(host.to_ascii_lowercase().as_bytes()));
            }
            HashVar::Header(name) => part(req.headers.get(name).map(|v| v.as_bytes())),
            HashVar::Cookie(name) => part(crate::headers::cookie_value(req.headers, name)),
            HashVar::Arg(name) => part(query_arg(req.uri.query(), name)),
        }
    }
    any.then(|| mix(h.finish()))
}

/// The raw value of the first query argument called `name`.
pub(crate) fn query_arg<'q>(query: Option<&'q str>, name: &str) -> Option<&'q [u8]> {
    query?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then_some(v.as_bytes())
    })
}

/// `Set-Cookie` for a sticky session of `side` holding `value`. The
/// controller validates name, path and domain; a value that could still add
/// an attribute of its own is never sent.
fn set_cookie(c: &CookieAffinity, value: u64, side: SessionSide) -> Option<HeaderValue> {
    use std::fmt::Write as _;
    let breaks_attributes = |t: &str| {
        t.bytes()
            .any(|b| !b.is_ascii_graphic() || b == b';' || b == b',')
    };
    if breaks_attributes(&c.name)
        || c.name.contains('=')
        || breaks_attributes(&c.path)
        || c.domain.as_deref().is_some_and(breaks_attributes)
    {
        return None;
    }
    let mut s = format!("{}={value:016x}{}; Path={}", c.name, side.suffix(), c.path);
    if let Some(d) = &c.domain {
        let _ = write!(s, "; Domain={d}");
    }
    if let Some(age) = c.max_age {
        let _ = write!(s, "; Max-Age={age}");
    }
    if let Some(secs) = c.expires {
        let at = std::time::SystemTime::now() + std::time::Duration::from_secs(secs);
        let _ = write!(s, "; Expires={}", httpdate::fmt_http_date(at));
    }
    if let Some(same) = c.same_site {
        let _ = write!(s, "; SameSite={}", same.as_str());
    }
    if c.secure {
        s.push_str("; Secure");
    }
    s.push_str("; HttpOnly");
    // Names and paths were validated as cookie and URL syntax.
    HeaderValue::try_from(s).ok()
}

#[cfg(test)]
mod tests;
