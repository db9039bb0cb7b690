//! Request mirroring (ingress-nginx `mirror-target`, `mirror-host`,
//! `mirror-request-body`; Gateway API `RequestMirror`): a copy of a
//! forwarded request goes to another backend, fire and forget.
//!
//! The original never waits for its copy. The chain's request side only
//! samples (a thread-local RNG, no lock): the copy is made where the
//! request leaves for its upstream, with the head as it leaves (forwarding
//! headers, request id, header edits). A request without a body, or a
//! mirror without `request_body`, is sent at once on its own task. A body
//! is teed: it streams upstream unchanged while [`Tee`] keeps a copy of its
//! pieces (reference-counted, not copied) up to `--mirror-max-body`; at its
//! end the copy is sent. A body over the bound, a client that goes away,
//! an upstream that never reads the body: the copy is dropped, never the
//! original. Copies in flight (buffering or sending) are bounded by
//! `--mirror-max-in-flight` across the process; one more is dropped. Every
//! copy is counted in `portico_mirror_requests_total{route,result}`.
//!
//! The copy's answer is read and dropped (64 KiB within 1 s at most, past
//! which its connection is closed). It is sent once (no retry) under the
//! rule's connect and read timeouts.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::{Authority, PathAndQuery, Uri};
use http::{Method, Request, Version};
use http_body::Body as _;
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::time::Instant;
use tracing::debug;

use crate::balance::retry::{self, Timing};
use crate::balance::{BackendSet, RequestKey};
use crate::body::{RequestBody, ResponseBody};
use crate::model::{self, MirrorPath, Protocol, RetryPolicy, Timeouts};
use crate::upstream::Upstreams;

/// Copies in flight at once unless `--mirror-max-in-flight` says
/// otherwise: with [`DEFAULT_MAX_BODY`], at most 64 MiB of buffered bodies.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 1024;

/// The largest body copied unless `--mirror-max-body` says otherwise.
/// ingress-nginx buffers the whole body (`mirror_request_body on`) up to
/// `client_max_body_size`, 1 MiB by default, and holds the original back
/// meanwhile; here the original streams and the copy is held in memory, so
/// the bound is smaller: 64 KiB covers API and form payloads.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// Static settings (`--mirror-max-in-flight`, `--mirror-max-body`).
#[derive(Clone, Copy, Debug)]
pub struct MirrorConfig {
    pub max_in_flight: usize,
    pub max_body: usize,
}

impl Default for MirrorConfig {
    fn default() -> Self {
        Self {
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            max_body: DEFAULT_MAX_BODY,
        }
    }
}

/// `portico_mirror_requests_total`, registered by [`crate::observe::Metrics`].
#[derive(Clone, Default)]
pub struct MirrorCounters {
    pub requests: Family<MirrorLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct MirrorLabels {
    pub route: String,
    /// `sent` (an answer came), `dropped_busy`, `dropped_body`, `failed`.
    pub result: &'static str,
}

/// What mirroring keeps outside the table: the process-wide bound on
/// copies in flight, which outlives every swap.
#[derive(Default)]
pub struct MirrorState {
    slots: Arc<Slots>,
    counters: MirrorCounters,
}

impl MirrorState {
    pub fn new(config: MirrorConfig, counters: MirrorCounters) -> Self {
        Self {
            slots: Arc::new(Slots {
                used: AtomicUsize::new(0),
                max: config.max_in_flight,
                max_body: config.max_body,
            }),
            counters,
        }
    }
}

/// The in-flight bound: one atomic shared by every copy.
#[derive(Debug)]
struct Slots {
    used: AtomicUsize,
    max: usize,
    max_body: usize,
}

impl Default for Slots {
    fn default() -> Self {
        let c = MirrorConfig::default();
        Self {
            used: AtomicUsize::new(0),
            max: c.max_in_flight,
            max_body: c.max_body,
        }
    }
}

/// A copy's place under the bound, given back when dropped.
struct Slot(Arc<Slots>);

impl Slot {
    fn take(slots: &Arc<Slots>) -> Option<Self> {
        slots
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < slots.max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(slots)))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.used.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The rule's counters, one per result, made once per table build.
struct Results {
    sent: Counter,
    dropped_busy: Counter,
    dropped_body: Counter,
    failed: Counter,
}

/// Where the copies' path and query come from, parsed once.
enum CopyPath {
    Request,
    Fixed(PathAndQuery),
    /// Followed by the request's URI.
    Prefix(String),
}

/// A [`model::Mirror`] compiled: its backend's endpoints resolved, its
/// `Host` and path parsed, its counters made.
pub(crate) struct MirrorRuntime {
    backend: BackendSet,
    numerator: u32,
    denominator: u32,
    request_body: bool,
    host: Option<HeaderValue>,
    path: CopyPath,
    timeouts: Timeouts,
    slots: Arc<Slots>,
    results: Results,
}

impl MirrorRuntime {
    pub(crate) fn build(
        m: &model::Mirror,
        timeouts: Timeouts,
        upstreams: &Upstreams,
        state: &MirrorState,
    ) -> Self {
        let result = |result| {
            state
                .counters
                .requests
                .get_or_create(&MirrorLabels {
                    route: m.route.clone(),
                    result,
                })
                .clone()
        };
        let results = Results {
            sent: result("sent"),
            dropped_busy: result("dropped_busy"),
            dropped_body: result("dropped_body"),
            failed: result("failed"),
        };
        let host = m.host.as_deref().map(|h| {
            Authority::try_from(h)
                .ok()
                .and_then(|a| a.as_str().try_into().ok())
        });
        let path = match &m.path {
            MirrorPath::Request => Some(CopyPath::Request),
            MirrorPath::Target {
                prefix,
                request_uri: false,
            } => {
                let p = if prefix.is_empty() { "/" } else { prefix };
                PathAndQuery::try_from(p).ok().map(CopyPath::Fixed)
            }
            MirrorPath::Target {
                prefix,
                request_uri: true,
            } => (prefix.is_empty() || PathAndQuery::try_from(prefix.as_str()).is_ok())
                .then(|| CopyPath::Prefix(prefix.clone())),
        };
        // Translation checks both; a hand-written table with an invalid
        // one copies nothing rather than send something else.
        let (numerator, host, path) = match (host, path) {
            (None, Some(path)) => (m.fraction.numerator, None, path),
            (Some(Some(host)), Some(path)) => (m.fraction.numerator, Some(host), path),
            _ => {
                debug!(route = %m.route, "mirror with an invalid host or path: no copies");
                (0, None, CopyPath::Request)
            }
        };
        Self {
            backend: super::error_pages::backend_set(&m.backend, upstreams),
            numerator,
            denominator: m.fraction.denominator,
            request_body: m.request_body,
            host,
            path,
            timeouts,
            slots: Arc::clone(&state.slots),
            results,
        }
    }

    /// Whether this request is copied: `numerator` of `denominator`, at
    /// random (a thread-local generator: no lock, no shared state).
    pub(crate) fn sample(&self) -> bool {
        if self.numerator == 0 || self.denominator == 0 {
            return false;
        }
        self.numerator >= self.denominator || fastrand::u32(0..self.denominator) < self.numerator
    }

    /// The copy's path and query, from the request's as routed.
    fn path_and_query(&self, original: &Uri) -> Option<PathAndQuery> {
        let request_uri = || original.path_and_query().map_or("/", |pq| pq.as_str());
        match &self.path {
            CopyPath::Request => PathAndQuery::try_from(request_uri()).ok(),
            CopyPath::Fixed(pq) => Some(pq.clone()),
            CopyPath::Prefix(prefix) => {
                PathAndQuery::try_from(format!("{prefix}{}", request_uri())).ok()
            }
        }
    }
}

/// What a copy is sent with, taken from the request as it leaves.
struct CopyHead {
    method: Method,
    path_and_query: PathAndQuery,
    headers: HeaderMap,
    host: HeaderValue,
}

/// A copy waiting to be sent: its mirror, head and place under the bound.
struct PendingCopy {
    mirror: Arc<MirrorRuntime>,
    head: CopyHead,
    _slot: Slot,
}

/// Starts the copies of a request whose mirrors sampled it: those without
/// a body to wait for are sent now; the others wait in the returned tee,
/// which the request body feeds. `head` is the request as it leaves (its
/// URI still the one routed), `host` the client's.
pub(crate) fn start<'a>(
    mirrors: impl Iterator<Item = &'a Arc<MirrorRuntime>>,
    head: &Parts,
    host: &HeaderValue,
    body: &Incoming,
) -> Option<Tee> {
    let bodiless = body.is_end_stream();
    let declared = body.size_hint().exact();
    let mut tee: Option<Tee> = None;
    for m in mirrors {
        let wants_body = m.request_body && !bodiless;
        if wants_body && declared.is_some_and(|len| len > m.slots.max_body as u64) {
            // Known too large before a byte is read: no buffering at all.
            m.results.dropped_body.inc();
            continue;
        }
        let Some(slot) = Slot::take(&m.slots) else {
            m.results.dropped_busy.inc();
            continue;
        };
        let Some(path_and_query) = m.path_and_query(&head.uri) else {
            m.results.failed.inc();
            continue;
        };
        let copy = PendingCopy {
            mirror: Arc::clone(m),
            head: CopyHead {
                method: head.method.clone(),
                path_and_query,
                headers: head.headers.clone(),
                host: m.host.clone().unwrap_or_else(|| host.clone()),
            },
            _slot: slot,
        };
        if wants_body {
            let max = m.slots.max_body;
            tee.get_or_insert_with(|| Tee::new(max)).copies.push(copy);
        } else {
            tokio::spawn(send(copy, Bytes::new()));
        }
    }
    tee
}

/// The copies waiting for the request body, and its pieces so far.
pub(crate) struct Tee {
    copies: Vec<PendingCopy>,
    pieces: Vec<Bytes>,
    len: usize,
    max: usize,
}

impl Tee {
    fn new(max: usize) -> Self {
        Self {
            copies: Vec::new(),
            pieces: Vec::new(),
            len: 0,
            max,
        }
    }

    /// Keeps a piece of the body (a reference, not a copy of the bytes);
    /// `false` when the body is over the bound: drop the tee.
    pub(crate) fn push(&mut self, data: &Bytes) -> bool {
        self.len = self.len.saturating_add(data.len());
        if self.len > self.max {
            return false;
        }
        if !data.is_empty() {
            self.pieces.push(data.clone());
        }
        true
    }

    /// The body ended: each copy goes on its own task.
    pub(crate) fn finish(mut self) {
        let body = match self.pieces.len() {
            0 => Bytes::new(),
            1 => self.pieces[0].clone(),
            _ => {
                let mut all = BytesMut::with_capacity(self.len);
                for p in &self.pieces {
                    all.extend_from_slice(p);
                }
                all.freeze()
            }
        };
        for copy in std::mem::take(&mut self.copies) {
            tokio::spawn(send(copy, body.clone()));
        }
    }
}

impl Drop for Tee {
    /// Dropped before the body's end (over the bound, the client gone, the
    /// upstream done without it): the copies go unsent.
    fn drop(&mut self) {
        for copy in &self.copies {
            copy.mirror.results.dropped_body.inc();
        }
    }
}

/// Sends one copy and drops its answer; counts the result.
async fn send(copy: PendingCopy, body: Bytes) {
    let PendingCopy {
        mirror,
        head,
        _slot,
    } = copy;
    let sent = exchange(&mirror, head, body).await;
    if sent {
        mirror.results.sent.inc();
    } else {
        mirror.results.failed.inc();
    }
}

/// Whether an answer came.
async fn exchange(m: &MirrorRuntime, head: CopyHead, body: Bytes) -> bool {
    let Ok(backend) = m.backend.pick_backend() else {
        debug!("mirror backend has no endpoints; copy dropped");
        return false;
    };
    let Some(req) = request(head, body, backend.protocol) else {
        return false;
    };
    let timing = Timing {
        start: Instant::now(),
        wait: m.timeouts.read,
        connect: m.timeouts.connect,
    };
    let sent = retry::send(
        backend,
        &RequestKey::default(),
        Box::new(req),
        &RetryPolicy::default(),
        false,
        timing,
        retry::Along::default(),
    )
    .await;
    let Ok(sent) = sent else {
        debug!(backend = %backend.name, "mirror copy got no answer");
        return false;
    };
    // Read off and dropped, bounded: see `drain`.
    let rsp = ResponseBody::upstream(sent.rsp.into_body(), m.timeouts.read, None, sent.recycle)
        .holding(sent.in_flight);
    super::error_pages::drain(rsp).await;
    true
}

/// The copy as it goes to the mirror backend, in its protocol's form.
fn request(head: CopyHead, body: Bytes, protocol: Protocol) -> Option<Request<RequestBody>> {
    let CopyHead {
        method,
        path_and_query,
        mut headers,
        host,
    } = head;
    // The body goes whole, with its length; an original's chunked framing
    // was hop-by-hop and is gone.
    headers.remove(header::TRANSFER_ENCODING);
    if body.is_empty() {
        headers.remove(header::CONTENT_LENGTH);
    } else {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    let mut req = Request::new(RequestBody::buffered(body));
    *req.method_mut() = method;
    match protocol {
        Protocol::Http1 => {
            *req.version_mut() = Version::HTTP_11;
            headers.insert(header::HOST, host);
            *req.uri_mut() = Uri::from(path_and_query);
        }
        Protocol::H2c => {
            *req.version_mut() = Version::HTTP_2;
            headers.remove(header::HOST);
            let authority = Authority::try_from(host.as_bytes()).ok()?;
            *req.uri_mut() = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
                .ok()?;
        }
    }
    *req.headers_mut() = headers;
    Some(req)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime(fraction: model::MirrorFraction) -> MirrorRuntime {
        let mut m = model::Mirror::to_backend("r", model::Backend::new("m", vec![]));
        m.fraction = fraction;
        let upstreams = Upstreams::new(Default::default(), Default::default());
        MirrorRuntime::build(&m, Timeouts::default(), &upstreams, &MirrorState::default())
    }

    #[test]
    fn sampling_follows_the_fraction() {
        let all = runtime(model::MirrorFraction::ALL);
        assert!((0..1000).all(|_| all.sample()));
        let none = runtime(model::MirrorFraction::percent(0));
        assert!(!(0..1000).any(|_| none.sample()));
        let zero_denominator = runtime(model::MirrorFraction {
            numerator: 1,
            denominator: 0,
        });
        assert!(!zero_denominator.sample());
        let half = runtime(model::MirrorFraction {
            numerator: 1,
            denominator: 2,
        });
        let n = (0..10_000).filter(|_| half.sample()).count();
        // 10,000 draws: 5,000 ± 500 is more than 10 standard deviations.
        assert!((4500..5500).contains(&n), "{n}");
    }

    #[test]
    fn the_in_flight_bound_holds_and_frees() {
        let slots = Arc::new(Slots {
            used: AtomicUsize::new(0),
            max: 2,
            max_body: 0,
        });
        let a = Slot::take(&slots).unwrap();
        let _b = Slot::take(&slots).unwrap();
        assert!(Slot::take(&slots).is_none());
        drop(a);
        assert!(Slot::take(&slots).is_some());
    }

    #[test]
    fn the_tee_keeps_pieces_up_to_its_bound() {
        let mut tee = Tee::new(10);
        assert!(tee.push(&Bytes::from_static(b"hello")));
        assert!(tee.push(&Bytes::from_static(b"world")));
        assert!(!tee.push(&Bytes::from_static(b"!")));
    }

    #[test]
    fn target_paths_are_joined_with_the_request_uri() {
        let uri: Uri = "/a/b?x=1".parse().unwrap();
        let mut m = runtime(model::MirrorFraction::ALL);
        assert_eq!(m.path_and_query(&uri).unwrap(), "/a/b?x=1");
        m.path = CopyPath::Prefix("/shadow".into());
        assert_eq!(m.path_and_query(&uri).unwrap(), "/shadow/a/b?x=1");
        m.path = CopyPath::Fixed(PathAndQuery::from_static("/fixed"));
        assert_eq!(m.path_and_query(&uri).unwrap(), "/fixed");
    }
}
