//! Connections to upstream endpoints.
//!
//! One [`Endpoint`] per distinct upstream identity (address, protocol and TLS
//! settings: SNI, verification, CA), shared by every route and
//! every table that points at it, so a table swap keeps warm connections.
//! Tables hold `Arc<Endpoint>`s resolved when they are built: the request
//! path never looks anything up in a shared map and takes no lock.
//!
//! HTTP/1.1 goes through our own client (`upstream::h1`), except the
//! requests it leaves to hyper's (upgrades among them); each client's idle
//! connections wait in a bounded lock-free queue per endpoint. HTTP/2 (h2c,
//! or TLS with ALPN h2) uses one multiplexed connection per endpoint,
//! replaced when it closes, driven by our own client over the `h2` crate
//! (`upstream::h2`).

pub mod body;
pub mod h1;
pub mod h2;
pub mod health;
pub(crate) mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use crossbeam_queue::ArrayQueue;
use futures_util::FutureExt;
use futures_util::future::Either;
use http::{Request, Response};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use prometheus_client::metrics::counter::Counter;
use rustls::sign::CertifiedKey;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tracing::debug;

use crate::balance::retry::RetryBudget;
use crate::body::{BodyError, RequestBody, find_body_error};
use crate::headers::ForwardingFields;
use crate::model::HealthCheck;
use crate::model::{Protocol, UpstreamTls};
use crate::store::KeyedStore;
use crate::upstream::body::UpstreamBody;
use crate::upstream::h2::{H2Conn, H2Error};
use crate::upstream::health::check::{Check, CheckKey};
use crate::upstream::health::{EndpointHealth, HealthShared};
use crate::upstream::tls::UpstreamConnector;

/// Identifies an upstream connection pool: the whole upstream identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EndpointKey {
    pub addr: SocketAddr,
    pub protocol: Protocol,
    pub tls: Option<Arc<UpstreamTls>>,
}

/// An upstream connection, cleartext or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// Connection-pool settings shared by all endpoints.
#[derive(Clone, Copy, Debug)]
pub struct PoolConfig {
    /// Idle HTTP/1.1 connections kept per endpoint.
    pub max_idle_per_endpoint: usize,
    /// An idle connection older than this is closed: never reused, and
    /// dropped by the next sweep (ingress-nginx `upstream-keepalive-timeout`).
    pub idle_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            max_idle_per_endpoint: 128,
            idle_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS to {addr}: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    #[error("HTTP handshake with {addr}: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("upstream {addr}: {source}")]
    Http {
        addr: SocketAddr,
        source: hyper::Error,
    },
    /// From Portico's own HTTP/1.1 client ([`h1`]).
    #[error("upstream {addr}: {source}")]
    H1 { addr: SocketAddr, source: h1::Error },
    #[error("HTTP/2 handshake with {addr}: {source}")]
    H2Handshake {
        addr: SocketAddr,
        source: ::h2::Error,
    },
    #[error("upstream {addr}: {source}")]
    H2 { addr: SocketAddr, source: H2Error },
}

impl UpstreamError {
    /// The client's request body's own failure, when that is what failed
    /// the request.
    pub fn body_error(&self) -> Option<&BodyError> {
        match self {
            UpstreamError::Http { source, .. } => find_body_error(source),
            UpstreamError::H2 {
                source: H2Error::RequestBody(e),
                ..
            } => Some(e),
            UpstreamError::H1 {
                source: h1::Error::Body(e),
                ..
            } => Some(e),
            _ => None,
        }
    }
}

/// A request on its way upstream. Boxed from where it is built to where it
/// is written: it passes through several `async fn`s, and each that took
/// it by value would keep a copy of it (hundreds of bytes) in the
/// request's future, written once more per phase.
pub type UpstreamRequest = Box<Request<RequestBody>>;

/// A failed [`Endpoint::send`]: the error, and the request when none of it
/// was sent. Boxed: the send's result is moved through every layer of the
/// call on the way back, and an unsent request (rare) inline would make
/// every answer's result twice its size.
pub struct SendError {
    pub error: UpstreamError,
    pub request: Option<UpstreamRequest>,
}

impl SendError {
    fn unsent(error: UpstreamError, request: UpstreamRequest) -> Self {
        Self {
            error,
            request: Some(request),
        }
    }
}

impl From<UpstreamError> for SendError {
    fn from(error: UpstreamError) -> Self {
        Self {
            error,
            request: None,
        }
    }
}

/// Hands out shared [`Endpoint`]s, and the other per-upstream state that
/// outlives a table swap ([`crate::store`]); used only while building tables.
pub struct Upstreams {
    /// By the whole upstream identity: a change of TLS settings is a new
    /// pool (and fresh health).
    endpoints: KeyedStore<EndpointKey, Endpoint>,
    /// Client certificates for upstream TLS by id, as last published with
    /// the certificates (which come before the routes that name them).
    client_certs: ArcSwap<HashMap<String, Arc<CertifiedKey>>>,
    pool: PoolConfig,
    connect_errors: Counter,
    health: Arc<HealthShared>,
    /// By endpoint and check settings.
    checks: KeyedStore<CheckKey, Check>,
    /// By backend and budget settings.
    budgets: KeyedStore<BudgetKey, RetryBudget>,
    /// Requests picked onto a backend whose reference could not be
    /// resolved (`portico_backend_unresolved_requests_total`).
    unresolved: Counter,
}

/// A retry budget's identity: the backend and the budget's settings.
#[derive(Debug, PartialEq, Eq, Hash)]
struct BudgetKey {
    backend: String,
    percent: u8,
    per_second: u32,
}

// === impl Upstreams ===

impl Upstreams {
    pub fn new(pool: PoolConfig, connect_errors: Counter) -> Self {
        Self {
            endpoints: KeyedStore::default(),
            client_certs: ArcSwap::default(),
            pool,
            connect_errors,
            health: Arc::default(),
            checks: KeyedStore::default(),
            budgets: KeyedStore::default(),
            unresolved: Counter::default(),
        }
    }

    /// Counts requests sent to unresolved backends on `counter`.
    pub fn with_unresolved_counter(mut self, counter: Counter) -> Self {
        self.unresolved = counter;
        self
    }

    pub(crate) fn unresolved_counter(&self) -> &Counter {
        &self.unresolved
    }

    /// The retry budget of backend `name`, shared with every table (and
    /// rule) that already uses it with the same settings.
    pub(crate) fn retry_budget(
        &self,
        name: &str,
        percent: u8,
        per_second: u32,
    ) -> Arc<RetryBudget> {
        let key = BudgetKey {
            backend: name.to_owned(),
            percent,
            per_second,
        };
        self.budgets.get_or_insert_with(key, || {
            RetryBudget::new(percent, per_second, Arc::clone(&self.health))
        })
    }

    /// The active check `config` of `endpoint`, shared with every table that
    /// already checks it so; started if need be. `None` outside a tokio
    /// runtime (nothing could run the probes).
    pub(crate) fn check(
        &self,
        endpoint: &Arc<Endpoint>,
        config: &HealthCheck,
    ) -> Option<Arc<Check>> {
        let key = CheckKey {
            endpoint: endpoint.key().clone(),
            check: config.clone(),
        };
        self.checks
            .try_get_or_insert_with(key, || Check::start(endpoint, config, &self.health))
    }

    /// Active checks running now (one per distinct endpoint and check).
    pub fn live_checks(&self) -> usize {
        self.checks.live()
    }

    /// The clock and generation every endpoint's health shares.
    pub fn health(&self) -> &Arc<HealthShared> {
        &self.health
    }

    pub(crate) fn set_client_certs(&self, certs: HashMap<String, Arc<CertifiedKey>>) {
        self.client_certs.store(Arc::new(certs));
    }

    /// The endpoint for `key`, shared with every table that already uses it.
    pub fn endpoint(&self, key: EndpointKey) -> Arc<Endpoint> {
        let client_cert = || {
            key.tls
                .as_ref()
                .and_then(|t| t.client_cert.as_ref())
                .and_then(|id| self.client_certs.load().get(id).cloned())
        };
        let make = || {
            Endpoint::new(
                key.clone(),
                self.pool,
                self.connect_errors.clone(),
                client_cert(),
                EndpointHealth::new(self.health.now_ms()),
            )
        };
        self.endpoints.get_or_insert_with(key.clone(), make)
    }

    /// Forgets endpoints, checks and budgets that no table holds any more;
    /// after each publish.
    pub fn prune(&self) {
        self.checks.prune();
        self.budgets.prune();
        self.endpoints.prune();
    }

    /// How often idle connections are looked over: a few times per idle
    /// timeout, so none outlives it by much, and at least every few seconds,
    /// so a connection its upstream closed is let go soon.
    pub(crate) fn sweep_period(&self) -> Duration {
        (self.pool.idle_timeout / 4).clamp(Duration::from_millis(50), Duration::from_secs(5))
    }

    /// Closes the pooled connections that outlived the idle timeout or that
    /// their upstream closed, on every endpoint; off the request path (the
    /// endpoint store's lock is held only to list them).
    pub(crate) fn sweep_idle(&self) {
        let now = Instant::now();
        for ep in self.endpoints.values() {
            ep.sweep_idle(now);
        }
    }

    pub fn live_endpoints(&self) -> usize {
        self.endpoints.live()
    }
}

/// hyper's side of an HTTP/1.1 upstream connection: the future that reads
/// and writes it (hyper's type for it cannot be named). Boxed, so idle
/// slots stay small.
type H1Conn = Pin<Box<dyn Future<Output = hyper::Result<()>> + Send>>;

/// An HTTP/1.1 upstream connection, driven by whichever request uses it.
///
/// There is no task per connection: the request that sends on it polls
/// `conn` itself, first for the response head ([`Exchange`]) and then from
/// its response body ([`Recycle::drive`]). Handing a request to another task
/// and its response back (a channel send, a oneshot and two task wake-ups
/// per request) cost more than any other single step of proxying a small
/// request. An idle connection is polled by nobody; one the upstream closed
/// meanwhile is noticed by the first poll of the next request on it, which
/// reads before it writes: hyper then hands the request back unsent, and it
/// goes on another connection.
struct H1 {
    tx: http1::SendRequest<RequestBody>,
    conn: H1Conn,
    /// The response-head deadline of the request on it, reused from one
    /// request to the next (see [`HeadTimeout`]).
    timer: Pin<Box<Sleep>>,
}

impl H1 {
    /// Drives the connection until hyper is ready for the next message:
    /// `true` then, `false` if the connection ended instead.
    fn poll_settle(&mut self, cx: &mut Context<'_>) -> Poll<bool> {
        if let Poll::Ready(result) = self.conn.as_mut().poll(cx) {
            if let Err(e) = result {
                debug!(error = %e, "upstream connection ended");
            }
            return Poll::Ready(false);
        }
        self.tx.poll_ready(cx).map(|r| r.is_ok())
    }
}

struct IdleH1 {
    h1: H1,
    since: Instant,
}

/// A connection of Portico's own client ([`h1`]), idle.
struct IdleConn {
    conn: Box<h1::Conn>,
    since: Instant,
}

/// Sends a request on an [`H1`] and drives the connection until the
/// response head is in.
///
/// The response future is polled with a no-op waker: only polling `conn`
/// can complete it, and `conn` is polled first, every time, with the
/// task's waker; waking the task from inside its own poll would only make
/// the runtime poll it once more for nothing.
struct Exchange<'a, F> {
    conn: &'a mut Option<H1Conn>,
    response: Pin<&'a mut F>,
    /// Armed for this request's deadline; `None`: no deadline.
    timer: Option<Pin<&'a mut Sleep>>,
}

impl<F: Future> Future for Exchange<'_, F> {
    type Output = Result<F::Output, HeadTimeout>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        drive(this.conn, cx);
        if this.conn.is_none() {
            // The connection is gone; hyper has failed the response (or
            // delivered it just before), and says so at once.
            return this.response.as_mut().poll(cx).map(Ok);
        }
        let mut noop = Context::from_waker(Waker::noop());
        if let Poll::Ready(rsp) = this.response.as_mut().poll(&mut noop) {
            return Poll::Ready(Ok(rsp));
        }
        if let Some(timer) = this.timer.as_mut()
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(HeadTimeout));
        }
        Poll::Pending
    }
}

/// No response head came by the request's deadline.
///
/// On HTTP/1.1 the deadline is a timer each connection keeps and re-arms
/// per request, rather than a fresh `timeout_at` per request: moving a
/// registered tokio timer later is one atomic step, where registering
/// and cancelling one takes the timer driver's mutex each time, and that
/// mutex is shared by every worker thread. A connection's timer that
/// outlives its request fires later for nothing (a spurious wake of the
/// task it last served) and is re-armed by the next request.
#[derive(Debug)]
pub struct HeadTimeout;

/// An endpoint's answer: the response head (the body streams), and for
/// HTTP/1.1 on hyper's client the connection to hand back in when the body
/// has been read (Portico's own client's body hands its connection back
/// itself).
/// The connection comes back boxed: only hyper's client has one, and the
/// answer is moved through every layer of the call.
pub type Answer = (Response<UpstreamBody>, Option<Box<Recycle>>);

/// `fut`, unless `deadline` comes first (`None`: no deadline): a timer of
/// its own, registered and cancelled. For connecting, and for HTTP/2,
/// whose concurrent streams cannot share one connection's timer.
///
/// A combinator rather than an `async fn`: an `async fn` keeps its
/// argument (`fut`, kilobytes) for its whole life beside the future it
/// awaits, doubling what every request's future carries and moves.
fn within<F: Future>(
    deadline: Option<Instant>,
    fut: F,
) -> impl Future<Output = Result<F::Output, HeadTimeout>> {
    match deadline {
        Some(at) => {
            Either::Left(tokio::time::timeout_at(at, fut).map(|r| r.map_err(|_| HeadTimeout)))
        }
        None => Either::Right(fut.map(Ok)),
    }
}

/// Polls `conn` once; an ended connection is dropped.
fn drive(conn: &mut Option<H1Conn>, cx: &mut Context<'_>) {
    if let Some(c) = conn.as_mut()
        && let Poll::Ready(result) = c.as_mut().poll(cx)
    {
        if let Err(e) = result {
            debug!(error = %e, "upstream connection ended");
        }
        *conn = None;
    }
}

/// An HTTP/1.1 connection whose response is still being read. The response
/// body drives it ([`drive`](Self::drive)) before each read. Handing it in
/// with [`Recycle::finish`] once the body has ended returns it to the idle
/// queue; dropping it closes the connection (a body cut short leaves the
/// connection in an unknown state).
pub struct Recycle {
    endpoint: Arc<Endpoint>,
    tx: http1::SendRequest<RequestBody>,
    /// `None` once the connection ended, or when a task of its own drives
    /// it (an upgrade).
    conn: Option<H1Conn>,
    timer: Pin<Box<Sleep>>,
}

impl Recycle {
    /// Lets the connection read the response body on: called by the body
    /// before each poll of the response, with the body's task context.
    pub fn drive(&mut self, cx: &mut Context<'_>) {
        drive(&mut self.conn, cx);
    }

    /// Whether the response body can be read without a waker of its own:
    /// only [`drive`](Self::drive) moves it on.
    pub fn drives_body(&self) -> bool {
        self.conn.is_some()
    }

    pub fn finish(self) {
        let Recycle {
            endpoint,
            tx,
            conn: Some(conn),
            timer,
        } = self
        else {
            return;
        };
        let mut h1 = H1 { tx, conn, timer };
        // Usually hyper has already seen the end of the message by the time
        // the reader has, so the connection is ready at once and no task is
        // needed; otherwise let it settle off the request path.
        match h1.poll_settle(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(true) => endpoint.park(h1),
            Poll::Ready(false) => {}
            Poll::Pending => {
                tokio::spawn(async move {
                    if std::future::poll_fn(|cx| h1.poll_settle(cx)).await {
                        endpoint.park(h1);
                    }
                });
            }
        }
    }
}

/// The executor of the proxy listener's HTTP/2 connections: hyper spawns
/// on it every stream's task.
///
/// hyper hands its tasks over as one enum type, as large as its largest
/// variant (kilobytes). Spawned as they are, each stream's task would be
/// that large: a large aligned allocation for the task and the whole size
/// copied as tokio moves it in and out of the task's cell. Boxed first, the
/// future is copied once, into its box, and the task holds a pointer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BoxedSpawn;

impl<F> hyper::rt::Executor<F> for BoxedSpawn
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, fut: F) {
        tokio::spawn(Box::pin(fut));
    }
}

/// One upstream endpoint and its connections.
pub struct Endpoint {
    key: EndpointKey,
    pool: PoolConfig,
    idle: ArrayQueue<IdleH1>,
    /// Idle connections of Portico's own HTTP/1.1 client; those of hyper's
    /// (upgrades and the other requests it leaves to hyper) are in `idle`.
    idle_conns: ArrayQueue<IdleConn>,
    h2: ArcSwapOption<H2Conn>,
    /// Serialises HTTP/2 connection setup so a burst opens one connection.
    /// Taken only when there is no usable connection.
    h2_connecting: tokio::sync::Mutex<()>,
    connect_errors: Counter,
    /// `Err`: the TLS settings cannot be used; every request answers 502.
    tls: Option<Result<UpstreamConnector, String>>,
    /// Eligibility, outlier state and load; shared by every route.
    pub health: EndpointHealth,
}

// === impl Endpoint ===

impl Endpoint {
    fn new(
        key: EndpointKey,
        pool: PoolConfig,
        connect_errors: Counter,
        client_cert: Option<Arc<CertifiedKey>>,
        health: EndpointHealth,
    ) -> Self {
        let tls = key
            .tls
            .as_deref()
            .map(|t| UpstreamConnector::new(t, key.protocol, client_cert));
        Self {
            tls,
            key,
            pool,
            idle: ArrayQueue::new(pool.max_idle_per_endpoint.max(1)),
            idle_conns: ArrayQueue::new(pool.max_idle_per_endpoint.max(1)),
            h2: ArcSwapOption::empty(),
            h2_connecting: tokio::sync::Mutex::new(()),
            connect_errors,
            health,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.key.addr
    }

    /// Sends one request and returns the response head; the body streams.
    /// For HTTP/1.1 the connection comes back as a [`Recycle`] to hand in
    /// when the response body has been read to its end. A request that
    /// failed before any of it was sent comes back in the error, untouched,
    /// so it can be tried elsewhere.
    /// `now` is the caller's clock reading, against which idle connections
    /// are aged; `deadline` bounds the whole of it, connecting included,
    /// until the response head is in (`None`: no bound).
    /// `fields`: the forwarding headers, when they are not in the
    /// request's map; the own HTTP/1.1 client writes them into the head,
    /// any other way out puts them into the map first.
    /// An unsent request comes back in the box it came in
    /// ([`UpstreamRequest`]).
    pub(crate) fn send<'a>(
        self: &'a Arc<Self>,
        mut req: UpstreamRequest,
        fields: Option<&'a ForwardingFields<'a>>,
        connect_timeout: Duration,
        now: Instant,
        deadline: Option<Instant>,
    ) -> impl Future<Output = Result<Result<Answer, SendError>, HeadTimeout>> + 'a {
        // Not an `async fn`: that would keep `req` beside the future it is
        // moved into (see `within`).
        match self.key.protocol {
            Protocol::Http1 => {
                Either::Left(self.send_h1(req, fields, connect_timeout, now, deadline))
            }
            Protocol::H2c => {
                if let Some(f) = fields {
                    f.insert_into(req.headers_mut());
                }
                Either::Right(
                    within(deadline, self.send_h2(req, connect_timeout))
                        .map(|r| r.map(|sent| sent.map(|rsp| (rsp, None)))),
                )
            }
        }
    }

    async fn send_h1(
        self: &Arc<Self>,
        mut req: UpstreamRequest,
        fields: Option<&ForwardingFields<'_>>,
        connect_timeout: Duration,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Result<Result<Answer, SendError>, HeadTimeout> {
        // Decided before anything is sent: what Portico's own client does
        // not frame goes to hyper's.
        if let Some(framing) = h1::codec::plan(&req) {
            return self
                .send_own(req, fields, framing, connect_timeout, now, deadline)
                .await;
        }
        if let Some(f) = fields {
            f.insert_into(req.headers_mut());
        }
        loop {
            // One exchange below for pooled and new connections alike: each
            // `.await` site is a slot of its own in this future.
            let (h1, pooled) = match self.pooled(now) {
                Some(h1) => (h1, true),
                // Connecting is rare next to reusing: boxed, so its state
                // (TCP and TLS handshakes, over a kilobyte) is not part of
                // every request's future, which the server moves whole when
                // it starts the request.
                None => match within(deadline, Box::pin(self.new_h1(connect_timeout))).await? {
                    Ok(h1) => (h1, false),
                    Err(error) => return Ok(Err(SendError::unsent(error, req))),
                },
            };
            match self.exchange(h1, req, deadline).await? {
                // Not sent: a pooled connection went away while idle; the
                // request goes on the next one.
                Err(SendError {
                    request: Some(r), ..
                }) if pooled => req = r,
                sent => return Ok(sent),
            }
        }
    }

    /// [`send_h1`](Self::send_h1) on Portico's own client: the response
    /// body brings the connection back to the idle queue itself, so there
    /// is no [`Recycle`].
    async fn send_own(
        self: &Arc<Self>,
        mut req: UpstreamRequest,
        fields: Option<&ForwardingFields<'_>>,
        framing: h1::codec::RequestFraming,
        connect_timeout: Duration,
        now: Instant,
        deadline: Option<Instant>,
    ) -> Result<Result<Answer, SendError>, HeadTimeout> {
        loop {
            let (conn, pooled) = match self.pooled_conn(now) {
                Some(conn) => (conn, true),
                // Boxed, as in `send_h1`.
                None => match within(deadline, Box::pin(self.connect(connect_timeout))).await? {
                    Ok(io) => (h1::Conn::new(io), false),
                    Err(error) => return Ok(Err(SendError::unsent(error, req))),
                },
            };
            match h1::exchange(conn, req, fields, framing, deadline).await? {
                Ok(exchanged) => {
                    let (rsp, body) = h1::H1Body::new(exchanged, Arc::clone(self));
                    return Ok(Ok((rsp.map(|()| UpstreamBody::H1(body)), None)));
                }
                // Not sent: the pooled connection went away after the
                // check; the request goes on the next one.
                Err((_, Some(r))) if pooled => req = r,
                Err((source, request)) => {
                    let error = UpstreamError::H1 {
                        addr: self.key.addr,
                        source,
                    };
                    return Ok(Err(SendError { error, request }));
                }
            }
        }
    }

    /// An idle connection of Portico's own client young enough to reuse
    /// and that its upstream has not closed (checked without blocking);
    /// others are dropped on the way.
    fn pooled_conn(&self, now: Instant) -> Option<Box<h1::Conn>> {
        while let Some(mut idle) = self.idle_conns.pop() {
            let age = now.saturating_duration_since(idle.since);
            if age <= self.pool.idle_timeout && idle.conn.idle_usable() {
                return Some(idle.conn);
            }
        }
        None
    }

    /// A full queue closes the connection: the bound on idle ones.
    pub(crate) fn park_conn(&self, conn: Box<h1::Conn>) {
        let _ = self.idle_conns.push(IdleConn {
            conn,
            since: Instant::now(),
        });
    }

    /// An idle connection young enough to reuse, if one is pooled; older
    /// ones and those hyper no longer sends on are dropped on the way.
    fn pooled(&self, now: Instant) -> Option<H1> {
        while let Some(idle) = self.idle.pop() {
            let age = now.saturating_duration_since(idle.since);
            if age <= self.pool.idle_timeout && idle.h1.tx.is_ready() {
                return Some(idle.h1);
            }
        }
        None
    }

    fn handshake_failed(&self, source: hyper::Error) -> UpstreamError {
        UpstreamError::Handshake {
            addr: self.key.addr,
            source,
        }
    }

    /// Connects and shakes hands.
    async fn new_h1(&self, connect_timeout: Duration) -> Result<H1, UpstreamError> {
        let io = self.connect(connect_timeout).await?;
        let (tx, conn) = http1::Builder::new()
            .handshake(TokioIo::new(io))
            .await
            .map_err(|source| self.handshake_failed(source))?;
        Ok(H1 {
            tx,
            conn: Box::pin(conn.with_upgrades()),
            // Armed (and registered with the runtime's timer) by the first
            // exchange that has a deadline.
            timer: Box::pin(tokio::time::sleep_until(Instant::now())),
        })
    }

    /// Sends `req` on `h1`, driving it until the response head is in.
    async fn exchange(
        self: &Arc<Self>,
        h1: H1,
        req: UpstreamRequest,
        deadline: Option<Instant>,
    ) -> Result<Result<Answer, SendError>, HeadTimeout> {
        let H1 {
            mut tx,
            conn,
            mut timer,
        } = h1;
        if let Some(at) = deadline {
            timer.as_mut().reset(at);
        }
        let mut conn = Some(conn);
        let response = tx.try_send_request(*req);
        tokio::pin!(response);
        let result = Exchange {
            conn: &mut conn,
            response: response.as_mut(),
            timer: deadline.map(|_| timer.as_mut()),
        }
        .await?;
        let rsp = match result {
            Ok(rsp) => rsp,
            Err(mut e) => {
                let request = e.take_message().map(Box::new);
                return Ok(Err(SendError {
                    error: self.http_error(e.into_error()),
                    request,
                }));
            }
        };
        // An upgrade (101, or a CONNECT's 2xx) hands the connection's IO
        // over only while the connection is polled, and the tunnel that
        // waits for it runs in another task: the connection gets one too.
        if rsp
            .extensions()
            .get::<hyper::upgrade::OnUpgrade>()
            .is_some()
            && let Some(conn) = conn.take()
        {
            let addr = self.key.addr;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    debug!(upstream.addr = %addr, error = %e, "upstream connection ended");
                }
            });
        }
        let recycle = Recycle {
            endpoint: Arc::clone(self),
            tx,
            conn,
            timer,
        };
        Ok(Ok((rsp.map(UpstreamBody::from), Some(Box::new(recycle)))))
    }

    /// Looks over each connection idle now, once: one too old, or that ended
    /// (its upstream closed it: polling it reads the end), is dropped, which
    /// closes it; the rest go back. Requests may take and return connections
    /// meanwhile; the queue is lock-free.
    fn sweep_idle(&self, now: Instant) {
        let mut cx = Context::from_waker(Waker::noop());
        for _ in 0..self.idle.len() {
            let Some(mut idle) = self.idle.pop() else {
                return;
            };
            let young = now.saturating_duration_since(idle.since) <= self.pool.idle_timeout;
            if young && !matches!(idle.h1.poll_settle(&mut cx), Poll::Ready(false)) {
                let _ = self.idle.push(idle);
            }
        }
        for _ in 0..self.idle_conns.len() {
            let Some(mut idle) = self.idle_conns.pop() else {
                return;
            };
            let young = now.saturating_duration_since(idle.since) <= self.pool.idle_timeout;
            if young && idle.conn.idle_usable() {
                let _ = self.idle_conns.push(idle);
            }
        }
    }

    /// A full queue closes the connection: the bound on idle ones.
    fn park(&self, h1: H1) {
        let _ = self.idle.push(IdleH1 {
            h1,
            since: Instant::now(),
        });
    }

    /// Sends on the endpoint's HTTP/2 connection, opening one if there is
    /// none; a request the connection could not take (it had failed or been
    /// told to go away since it was last used) goes once on a new one.
    async fn send_h2(
        self: &Arc<Self>,
        mut req: UpstreamRequest,
        connect_timeout: Duration,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let mut again = true;
        loop {
            let conn = match self.h2.load_full() {
                Some(c) if !c.is_closed() => c,
                // Rare, and large: boxed (as `new_h1` in `send_h1`).
                _ => match Box::pin(self.connect_h2(connect_timeout)).await {
                    Ok(c) => c,
                    Err(error) => return Err(SendError::unsent(error, req)),
                },
            };
            let failed = match h2::send(&conn, *req).await {
                Ok(rsp) => return Ok(rsp.map(UpstreamBody::H2)),
                Err(failed) => failed,
            };
            if conn.is_closed() {
                self.h2.compare_and_swap(&Some(conn), None);
            }
            match failed.request {
                Some(r) if again => {
                    again = false;
                    req = Box::new(r);
                }
                request => {
                    return Err(SendError {
                        error: UpstreamError::H2 {
                            addr: self.key.addr,
                            source: failed.error,
                        },
                        request: request.map(Box::new),
                    });
                }
            }
        }
    }

    async fn connect_h2(&self, connect_timeout: Duration) -> Result<Arc<H2Conn>, UpstreamError> {
        let _guard = self.h2_connecting.lock().await;
        if let Some(c) = self.h2.load_full()
            && !c.is_closed()
        {
            return Ok(c);
        }
        let io = self.connect(connect_timeout).await?;
        let addr = self.key.addr;
        let conn = H2Conn::handshake(io, addr)
            .await
            .map_err(|source| UpstreamError::H2Handshake { addr, source })?;
        let conn = Arc::new(conn);
        self.h2.store(Some(Arc::clone(&conn)));
        Ok(conn)
    }

    /// TCP, then TLS when the endpoint has it, all within `timeout`.
    async fn connect(&self, timeout: Duration) -> Result<Box<dyn Io>, UpstreamError> {
        let addr = self.key.addr;
        let result = match tokio::time::timeout(timeout, self.connect_to(addr)).await {
            Err(_) => Err(UpstreamError::ConnectTimeout { addr, timeout }),
            Ok(r) => r,
        };
        if result.is_err() {
            self.connect_errors.inc();
        }
        result
    }

    /// TCP to `addr` (the endpoint's own, or a health-check port of its
    /// host), then TLS with the endpoint's connector when it has one.
    pub(crate) async fn connect_to(&self, addr: SocketAddr) -> Result<Box<dyn Io>, UpstreamError> {
        let io = TcpStream::connect(addr)
            .await
            .map_err(|source| UpstreamError::Connect { addr, source })?;
        // Small responses must not wait for Nagle.
        let _ = io.set_nodelay(true);
        let tls = match &self.tls {
            None => return Ok(Box::new(io) as Box<dyn Io>),
            Some(Err(reason)) => {
                return Err(UpstreamError::Tls {
                    addr,
                    reason: reason.clone(),
                });
            }
            Some(Ok(tls)) => tls,
        };
        let io = tls
            .connector
            .connect(tls.server_name.clone(), io)
            .await
            .map_err(|e| UpstreamError::Tls {
                addr,
                reason: e.to_string(),
            })?;
        Ok(Box::new(io) as Box<dyn Io>)
    }

    pub fn protocol(&self) -> Protocol {
        self.key.protocol
    }

    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub fn key(&self) -> &EndpointKey {
        &self.key
    }

    fn http_error(&self, source: hyper::Error) -> UpstreamError {
        UpstreamError::Http {
            addr: self.key.addr,
            source,
        }
    }
}
