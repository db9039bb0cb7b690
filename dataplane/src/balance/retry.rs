//! Sending a request to a backend: the first attempt, and retries on other
//! endpoints when the rule's `proxy-next-upstream` policy allows.
//!
//! A retry never sends a request body twice: only a request without a body
//! is rebuilt and sent again, or one that came back from a failed attempt
//! untouched (the connection failed before anything was sent, in which case
//! any method may go elsewhere, as nginx does). After a request was sent,
//! only idempotent methods are retried unless `non_idempotent` is set.
//!
//! Retries draw on a budget per backend, so a backend where everything
//! fails sees at most 20% more attempts (plus a few per second), not three
//! times its load.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri, Version};
use tokio::time::Instant;

use crate::balance::BackendRuntime;
use crate::balance::{InFlight, RequestKey};
use crate::body::RequestBody;
use crate::headers::ForwardingFields;
use crate::model::RetryPolicy;
use crate::observe::trace::RequestSpan;
use crate::upstream::body::UpstreamBody;
use crate::upstream::health::{HealthShared, Outcome};
use crate::upstream::{Recycle, SendError, UpstreamError, UpstreamRequest};

/// Most retries a budget saves up from past requests.
const MAX_SAVED_RETRIES: u64 = 100;
/// Budget tokens are thousandths of a retry.
const TOKEN: u64 = 1000;

/// A response from an endpoint.
pub(crate) struct Sent {
    pub rsp: Response<UpstreamBody>,
    pub recycle: Option<Box<Recycle>>,
    pub addr: SocketAddr,
    /// Counts the request on its endpoint until the response body ends.
    pub in_flight: InFlight,
    /// A sticky-session cookie for the response.
    pub set_cookie: Option<HeaderValue>,
}

/// Why no response came.
pub(crate) enum Failed {
    /// The backend has no endpoint to try.
    NoEndpoint,
    /// No response head within the read timeout.
    Timeout { addr: SocketAddr },
    Upstream {
        error: UpstreamError,
        addr: SocketAddr,
        /// The request, when none of it left: its body is still the
        /// client's, for the caller to drain before answering.
        unsent: Option<UpstreamRequest>,
    },
}

impl Failed {
    fn with_unsent(self, req: UpstreamRequest) -> Self {
        match self {
            Failed::Upstream {
                error,
                addr,
                unsent: None,
            } => Failed::Upstream {
                error,
                addr,
                unsent: Some(req),
            },
            other => other,
        }
    }
}

/// Retries as a share of a backend's requests, plus a floor per second.
/// Lives outside the table (keyed by backend), so a swap neither refills
/// nor drains it.
pub struct RetryBudget {
    percent: u64,
    min_per_second: u64,
    shared: Arc<HealthShared>,
    /// Thousandths of a retry, earned by requests.
    tokens: AtomicU64,
    /// The second (high 32 bits) and floor retries used in it (low 32).
    floor: AtomicU64,
    retries: AtomicU64,
    exhausted: AtomicU64,
}

impl RetryBudget {
    pub(crate) fn new(percent: u8, min_per_second: u32, shared: Arc<HealthShared>) -> Self {
        Self {
            percent: u64::from(percent.min(100)),
            min_per_second: u64::from(min_per_second),
            shared,
            tokens: AtomicU64::new(0),
            floor: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        }
    }

    /// Retries made, and retries refused because the budget was spent.
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.retries.load(Ordering::Relaxed),
            self.exhausted.load(Ordering::Relaxed),
        )
    }

    /// A request came: it earns `percent` of a retry.
    fn deposit(&self) {
        let earned = self.percent * TOKEN / 100;
        if self.tokens.load(Ordering::Relaxed) < MAX_SAVED_RETRIES * TOKEN {
            self.tokens.fetch_add(earned, Ordering::Relaxed);
        }
    }

    /// Takes one retry, from this second's floor first; `false`: spent.
    fn withdraw(&self) -> bool {
        let second = self.shared.now_ms() / 1000;
        let mut cur = self.floor.load(Ordering::Relaxed);
        loop {
            let (at, used) = (cur >> 32, cur & 0xffff_ffff);
            let next = if at != second {
                (second << 32) | 1
            } else if used < self.min_per_second {
                cur + 1
            } else {
                break;
            };
            if self.min_per_second == 0 {
                break;
            }
            match self
                .floor
                .compare_exchange_weak(cur, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(actual) => cur = actual,
            }
        }
        self.tokens
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |t| {
                t.checked_sub(TOKEN)
            })
            .is_ok()
    }
}

/// What is needed to send a bodiless request again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    /// `Some` for a request without a body: it can be sent again as is.
    fn of(req: &Request<RequestBody>) -> Option<Self> {
        http_body::Body::is_end_stream(req.body()).then(|| Self {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        })
    }

    fn build(&self) -> UpstreamRequest {
        let mut req = Box::new(Request::new(RequestBody::empty()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// RFC 9110 §9.2.2, as nginx reads it.
fn idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// The clock of one request's attempts.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Timing {
    /// When the request started: the first attempt's clock reading.
    pub start: Instant,
    /// How long each attempt waits for a response head.
    pub wait: Duration,
    /// How long each attempt may take to connect.
    pub connect: Duration,
}

/// What goes with a request to every endpoint it is tried on.
#[derive(Clone, Copy, Default)]
pub(crate) struct Along<'a> {
    /// The request's span: each retry is an event on it.
    pub trace: Option<&'a RequestSpan>,
    /// The forwarding headers, when they are not in the request's map.
    pub fields: Option<&'a ForwardingFields<'a>>,
}

/// Sends `req` to an endpoint of `backend`, then retries as the policy
/// allows. `retry: false` (an upgrade) sends once.
/// A request the proxy makes itself (an error page, an external-auth
/// subrequest): any endpoint of `backend`, the default retry policy.
pub(crate) async fn send_own(
    backend: &BackendRuntime,
    req: UpstreamRequest,
    timing: Timing,
) -> Result<Sent, Failed> {
    let policy = RetryPolicy::default();
    send(
        backend,
        &RequestKey::default(),
        req,
        &policy,
        true,
        timing,
        Along::default(),
    )
    .await
}

pub(crate) async fn send(
    backend: &BackendRuntime,
    key: &RequestKey,
    req: UpstreamRequest,
    policy: &RetryPolicy,
    retry: bool,
    timing: Timing,
    along: Along<'_>,
) -> Result<Sent, Failed> {
    let Timing {
        start,
        wait,
        connect: connect_timeout,
    } = timing;
    let balancer = &backend.balancer;
    let retry = retry && !policy.on.is_off();
    let method_ok = idempotent(req.method()) || policy.on.non_idempotent;
    let max_attempts = match policy.tries {
        0 => usize::MAX,
        n => n as usize,
    };
    // A sent request is sent again only from this copy of its head, and
    // only to another endpoint: with one endpoint or one try there is no
    // second attempt, and the copy (the whole header map) is not made.
    let replay = (retry && method_ok && max_attempts > 1 && balancer.endpoints().len() > 1)
        .then(|| Replay::of(&req))
        .flatten();
    // The first attempt goes out on the clock reading the request started
    // with (microseconds old); only a retry reads the clock again.
    let deadline = policy.timeout.map(|t| start + t);
    backend.budget.deposit();

    // The endpoints already tried, filled (and allocated) only when an
    // attempt is made again: most requests make one.
    let mut tried: Vec<usize> = Vec::new();
    let mut pick = balancer
        .pick_at(key, &tried, start)
        .ok_or(Failed::NoEndpoint)?;
    let mut set_cookie = pick.set_cookie.take();
    let mut req = req;
    let mut sent_at = start;
    loop {
        let endpoint = pick.endpoint;
        let addr = endpoint.addr();
        let in_flight = balancer.in_flight(&pick);
        // Too far to put on the clock: never.
        let head_deadline = sent_at.checked_add(wait);
        let result = endpoint
            .send(req, along.fields, connect_timeout, sent_at, head_deadline)
            .await;
        let latency = if balancer.wants_latency() {
            sent_at.elapsed()
        } else {
            Duration::ZERO
        };

        // What could be sent again if the attempt may be retried, and what
        // the client gets if not.
        let (again, outcome) = match result {
            Ok(Ok((rsp, recycle))) => {
                let status = rsp.status();
                let outcome = if status.is_server_error() {
                    Outcome::ServerError
                } else {
                    Outcome::Success
                };
                balancer.record(pick.index, outcome, latency);
                let again = (retry && policy.on.status(status) && method_ok)
                    .then(|| replay.as_ref().map(Replay::build))
                    .flatten();
                let sent = Sent {
                    rsp,
                    recycle,
                    addr,
                    in_flight,
                    set_cookie: set_cookie.clone(),
                };
                (again, Ok(sent))
            }
            Ok(Err(SendError { error, request })) => {
                if error.body_error().is_some() {
                    // The client's own body failed it: not the endpoint's
                    // fault, and nothing to send again.
                    return Err(Failed::Upstream {
                        error,
                        addr,
                        unsent: None,
                    });
                }
                balancer.record(pick.index, Outcome::LocalError, latency);
                let wanted = retry
                    && match error {
                        UpstreamError::ConnectTimeout { .. } => policy.on.timeout,
                        _ => policy.on.error,
                    };
                let (again, unsent) = match request {
                    // Never left: any method may go elsewhere.
                    Some(r) if wanted => (Some(r), None),
                    None if wanted && method_ok => (replay.as_ref().map(Replay::build), None),
                    unsent => (None, unsent),
                };
                (
                    again,
                    Err(Failed::Upstream {
                        error,
                        addr,
                        unsent,
                    }),
                )
            }
            Err(_elapsed) => {
                balancer.record(pick.index, Outcome::LocalError, latency);
                let again = (retry && policy.on.timeout && method_ok)
                    .then(|| replay.as_ref().map(Replay::build))
                    .flatten();
                (again, Err(Failed::Timeout { addr }))
            }
        };
        let next = again.map(|r| {
            tried.push(pick.index);
            sent_at = Instant::now();
            next_attempt(backend, key, &tried, deadline, max_attempts, sent_at, r)
        });
        match next {
            // A failed response is dropped unread: its connection closes.
            Some(Ok((next, r))) => {
                // Only an attempt that is made is an event.
                if let Some(t) = along.trace {
                    t.retry(addr, outcome_reason(&outcome));
                }
                drop(outcome);
                (pick, req) = (next, r);
                // Only a retry under change-on-failure re-points a session.
                if let Some(c) = pick.set_cookie.take() {
                    set_cookie = Some(c);
                }
            }
            // No attempt left: the request goes back with the failure.
            Some(Err(r)) => return outcome.map_err(|f| f.with_unsent(r)),
            None => return outcome,
        }
    }
}

/// Why an attempt is made again, for the trace's retry event.
fn outcome_reason(outcome: &Result<Sent, Failed>) -> &'static str {
    match outcome {
        Ok(_) => "status",
        Err(Failed::Timeout { .. }) => "timeout",
        Err(_) => "error",
    }
}

/// The endpoint and request of the next attempt, if one may be made: tries
/// and time left, another endpoint to try, and budget for it.
fn next_attempt<'b>(
    backend: &'b BackendRuntime,
    key: &RequestKey,
    tried: &[usize],
    deadline: Option<Instant>,
    max_attempts: usize,
    now: Instant,
    req: UpstreamRequest,
) -> Result<(crate::balance::Pick<'b>, UpstreamRequest), UpstreamRequest> {
    if tried.len() >= max_attempts || deadline.is_some_and(|d| now >= d) {
        return Err(req);
    }
    let Some(next) = backend.balancer.pick_at(key, tried, now) else {
        return Err(req);
    };
    if !backend.budget.withdraw() {
        backend.budget.exhausted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(backend = %backend.name, "retry budget spent");
        return Err(req);
    }
    backend.budget.retries.fetch_add(1, Ordering::Relaxed);
    Ok((next, req))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_budget_is_a_share_of_requests_plus_a_floor_per_second() {
        let b = RetryBudget::new(20, 3, Arc::default());
        // A quiet backend: the floor only.
        assert_eq!((0..10).filter(|_| b.withdraw()).count(), 3);
        // 50 requests earn 10 retries.
        for _ in 0..50 {
            b.deposit();
        }
        assert_eq!((0..20).filter(|_| b.withdraw()).count(), 10);
        // A new second, a new floor.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!((0..10).filter(|_| b.withdraw()).count(), 3);
        // Savings are capped.
        for _ in 0..10_000 {
            b.deposit();
        }
        let saved = (0..1_000).filter(|_| b.withdraw()).count() as u64;
        assert!(saved <= MAX_SAVED_RETRIES + 1, "{saved}");
    }

    #[test]
    fn idempotent_methods_as_nginx() {
        for m in [
            Method::GET,
            Method::HEAD,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ] {
            assert!(idempotent(&m), "{m}");
        }
        for m in [Method::POST, Method::PATCH, Method::CONNECT] {
            assert!(!idempotent(&m), "{m}");
        }
    }
}
