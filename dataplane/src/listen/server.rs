//! Listeners: accept loops for the proxy and connection lifecycles (client
//! timeouts, graceful drain).

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use http_body::{Body, Frame, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use rustls::server::Acceptor;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tokio_rustls::LazyConfigAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{Instrument, debug, debug_span, warn};

use crate::Shared;
use crate::listen::proxy_protocol::{self, ProxyHeaderError};
use crate::listen::tls::ClientCert;
use crate::listen::tls::passthrough::{Rewind, read_client_hello};
use crate::model::Scheme;
use crate::proxy;
use crate::request::ctx::{ConnInfo, Listener};
use crate::request::head::{HeadRules, Rejection};
use crate::request::path::PathPolicy;
use crate::upstream::BoxedSpawn;
use bytes::Bytes;

/// Client-side settings of the proxy listener.
#[derive(Clone, Copy, Debug)]
pub struct ListenerConfig {
    /// Time allowed to send a whole request head, and to start the next one
    /// on a kept-alive HTTP/1 connection (slowloris guard; nginx
    /// `client_header_timeout`). Checked on the connection's control tick,
    /// so a head is cut off up to a quarter of this late.
    pub header_read_timeout: Duration,
    /// A connection with no bytes either way for this long is closed
    /// gracefully (never under an in-flight request). Checked on the same
    /// tick (this period, or a quarter of `header_read_timeout` if that is
    /// shorter), so the effective idle time is up to one tick longer. A
    /// closing connection (idle or draining) that is still open a tick
    /// later with no request in flight is dropped: an HTTP/2 client that
    /// never acknowledges the graceful close would otherwise keep it.
    pub idle_timeout: Duration,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// Time allowed for a whole TLS handshake.
    pub tls_handshake_timeout: Duration,
    /// Pass TLS for `ssl-passthrough` hosts through to their backends
    /// (`--enable-ssl-passthrough`). Costs one extra ClientHello parse per
    /// TLS connection, so off by default, as in ingress-nginx.
    pub ssl_passthrough: bool,
    /// How request paths are normalised before routing.
    pub path: PathPolicy,
    /// Request head limits and header rules.
    pub head: HeadRules,
    /// Every connection on the proxy listeners begins with a PROXY
    /// protocol header (v1 or v2), whose source address is the client's
    /// (`--proxy-protocol`; ingress-nginx `use-proxy-protocol`). A
    /// connection without one is closed.
    pub proxy_protocol: bool,
    /// Time allowed for the PROXY protocol header.
    pub proxy_protocol_timeout: Duration,
}

impl Default for ListenerConfig {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(60),
            idle_timeout: Duration::from_secs(75),
            max_concurrent_streams: 128,
            tls_handshake_timeout: Duration::from_secs(10),
            ssl_passthrough: false,
            path: PathPolicy::default(),
            head: HeadRules::default(),
            proxy_protocol: false,
            proxy_protocol_timeout: Duration::from_secs(5),
        }
    }
}

/// What a proxy listener serves.
#[derive(Clone)]
pub(crate) enum Serving {
    /// A main listener: plain HTTP, or with `tls` the main certificates
    /// (SNI, client-certificate policies, passthrough).
    Main { tls: bool },
    /// A Gateway port ([`crate::model::GatewayPort`]): its own routes, and
    /// with `tls` its own certificates only.
    Gateway {
        port: u16,
        tls: Option<Arc<rustls::ServerConfig>>,
    },
}

impl Serving {
    fn is_tls(&self) -> bool {
        match self {
            Serving::Main { tls } => *tls,
            Serving::Gateway { tls, .. } => tls.is_some(),
        }
    }

    fn listener(&self) -> Listener {
        match self {
            Serving::Main { .. } => Listener::Main,
            Serving::Gateway { port, .. } => Listener::Gateway(*port),
        }
    }
}

/// Accepts until `shutdown` turns true, then drops the listener; every
/// connection task holds a clone of `drain` so the caller can wait for them.
/// Over TLS, each connection is a TLS handshake first (in its own task, so
/// a slow client never holds up the accept loop).
pub(crate) async fn serve_proxy(
    shared: Arc<Shared>,
    listener: TcpListener,
    serving: Serving,
    mut shutdown: watch::Receiver<bool>,
    drain: mpsc::Sender<()>,
) {
    let cfg = shared.listener;
    // Only the port is used (X-Forwarded-Port); it is the listener's, so
    // there is no need to ask the kernel per connection.
    let Ok(local) = listener.local_addr() else {
        warn!("proxy listener has no local address; not serving");
        return;
    };
    // HTTP/2's task per stream, boxed as the upstream client's are.
    let mut builder = auto::Builder::new(BoxedSpawn);
    builder
        .http1()
        .timer(HeadTimer)
        // hyper adds it to the clock unchecked: keep it on the clock.
        .header_read_timeout(clock_span(cfg.header_read_timeout))
        // Exactly the limit: hyper answers 431 beyond it, and parses up to
        // 100 headers without allocating.
        .max_headers(cfg.head.max_headers)
        // Heads up to the byte limit must reach the service, which checks
        // each line and the total exactly.
        .max_buf_size(HYPER_MAX_BUF.max(cfg.head.max_header_bytes.saturating_mul(2)));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(cfg.max_concurrent_streams)
        .max_header_list_size(h2_header_list_size(&cfg.head));
    let builder = Arc::new(builder);
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((mut stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    let tls = serving.is_tls();
                    let scheme = if tls { Scheme::Https } else { Scheme::Http };
                    let span = debug_span!("conn", client.addr = %peer, tls);
                    let shared = Arc::clone(&shared);
                    let builder = Arc::clone(&builder);
                    let shutdown = shutdown.clone();
                    let drain = drain.clone();
                    let serving = serving.clone();
                    tokio::spawn(
                        async move {
                            let Some((client, rest)) = proxy_header(&shared, &mut stream, peer).await else {
                                return;
                            };
                            let trusted = shared.trusted_proxies.contains(client.ip());
                            let mut conn = ConnInfo::new(client, local, scheme, trusted);
                            conn.listener = serving.listener();
                            if let Serving::Gateway { tls: Some(config), .. } = &serving {
                                if let Some(stream) = port_handshake(&shared, config, stream, rest).await {
                                    serve_conn(shared, builder, stream, conn, shutdown, drain).await;
                                }
                            } else if tls {
                                if let Some((stream, client_cert)) = handshake(&shared, stream, rest).await {
                                    conn.client_cert = client_cert;
                                    serve_conn(shared, builder, stream, conn, shutdown, drain).await;
                                }
                            } else if rest.is_empty() {
                                serve_conn(shared, builder, stream, conn, shutdown, drain).await;
                            } else {
                                let stream = Rewind::new(rest, stream);
                                serve_conn(shared, builder, stream, conn, shutdown, drain).await;
                            }
                        }
                        .instrument(span),
                    );
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off rather
                    // than spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = shutdown.changed() => break,
        }
    }
}

/// The connection's client and the bytes already read from it. With
/// `--proxy-protocol`, that is the PROXY header's source (the socket's
/// peer for LOCAL and UNKNOWN) and what came after the header; `None` when
/// the header is missing, malformed, oversized or late: the caller closes
/// the connection. Every header is counted.
async fn proxy_header(
    shared: &Shared,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Option<(SocketAddr, Bytes)> {
    if !shared.listener.proxy_protocol {
        return Some((peer, Bytes::new()));
    }
    let limit = shared.listener.proxy_protocol_timeout;
    let read = tokio::time::timeout(limit, proxy_protocol::read_header(stream))
        .await
        .unwrap_or(Err(ProxyHeaderError::Timeout));
    match read {
        Ok(header) => {
            shared.metrics.proxy_protocol_header(None);
            Some((header.source.unwrap_or(peer), header.rest))
        }
        Err(e) => {
            debug!(error = %e, reason = e.reason(), "PROXY protocol header refused; closing");
            shared.metrics.proxy_protocol_header(Some(e.reason()));
            None
        }
    }
}

/// Runs a TLS handshake under the handshake timeout and counts its result.
/// The ClientHello is read first so the host's client-certificate policy
/// picks the server configuration; returns the connection's client
/// certificate facts when its host has a policy. `rest`: bytes already
/// read from the connection (after a PROXY header), the hello's start.
async fn handshake(
    shared: &Shared,
    mut stream: TcpStream,
    rest: Bytes,
) -> Option<(TlsStream<Rewind<TcpStream>>, Option<Arc<ClientCert>>)> {
    let limit = shared.listener.tls_handshake_timeout;
    let metrics = &shared.metrics;
    let accept = async {
        let stream = if shared.listener.ssl_passthrough {
            let (hello, sni) = read_client_hello(&mut stream, rest).await?;
            let target = shared.certs.load().passthrough(sni.as_deref()).cloned();
            if let Some(target) = target {
                return Ok(Err((target, Rewind::new(hello, stream))));
            }
            Rewind::new(hello, stream)
        } else {
            Rewind::new(rest, stream)
        };
        let start = LazyConfigAcceptor::new(Acceptor::default(), stream).await?;
        let table = shared.certs.load_full();
        let policy = table.policy(start.client_hello().server_name());
        let config = match policy {
            None => Arc::clone(&shared.tls),
            Some(p) => p.config.clone().ok_or_else(|| {
                io::Error::other("the host's client-certificate policy cannot be served")
            })?,
        };
        let tls = start.into_stream(config).await?;
        let client_cert =
            policy.map(|p| Arc::new(p.auth.client_cert(tls.get_ref().1.peer_certificates())));
        Ok::<_, io::Error>(Ok((tls, client_cert)))
    };
    match tokio::time::timeout(limit, accept).await {
        Ok(Ok(Ok(done))) => {
            metrics.tls_handshake(true, "none");
            Some(done)
        }
        // Not ours to terminate: the splice outlives the handshake timeout.
        Ok(Ok(Err((target, client)))) => {
            target.splice(client).await;
            None
        }
        Ok(Err(e)) => {
            let reason = crate::listen::tls::handshake_failure_reason(&e);
            debug!(error = %e, reason, "TLS handshake failed");
            metrics.tls_handshake(false, reason);
            None
        }
        Err(_) => {
            debug!(timeout = ?limit, "TLS handshake timed out");
            metrics.tls_handshake(false, "timeout");
            None
        }
    }
}

/// A Gateway HTTPS port's handshake under the handshake timeout, counted
/// like the main listener's: the port's own configuration, no passthrough,
/// no client certificates.
async fn port_handshake(
    shared: &Shared,
    config: &Arc<rustls::ServerConfig>,
    stream: TcpStream,
    rest: Bytes,
) -> Option<TlsStream<Rewind<TcpStream>>> {
    let limit = shared.listener.tls_handshake_timeout;
    let accept =
        tokio_rustls::TlsAcceptor::from(Arc::clone(config)).accept(Rewind::new(rest, stream));
    match tokio::time::timeout(limit, accept).await {
        Ok(Ok(tls)) => {
            shared.metrics.tls_handshake(true, "none");
            Some(tls)
        }
        Ok(Err(e)) => {
            let reason = crate::listen::tls::handshake_failure_reason(&e);
            debug!(error = %e, reason, "TLS handshake failed");
            shared.metrics.tls_handshake(false, reason);
            None
        }
        Err(_) => {
            debug!(timeout = ?limit, "TLS handshake timed out");
            shared.metrics.tls_handshake(false, "timeout");
            None
        }
    }
}

async fn serve_conn<S>(
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<BoxedSpawn>>,
    stream: S,
    info: ConnInfo,
    mut shutdown: watch::Receiver<bool>,
    _drain: mpsc::Sender<()>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    shared.metrics.open_connections.inc();
    let (period, idle_ticks) = control_period(&shared.listener);
    let activity = Arc::new(AtomicU64::new(0));
    let io = TokioIo::new(ActivityIo {
        inner: stream,
        count: 0,
        activity: Arc::clone(&activity),
    });
    let svc_shared = Arc::clone(&shared);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let svc_in_flight = Arc::clone(&in_flight);
    // Shared by the connection's requests: one reference count per request,
    // not a copy of every field.
    let info = Arc::new(info);
    // Each request's future is boxed: it is kilobytes (the upstream
    // exchange and retries live in it), and hyper moves the future it is
    // given whole: into the HTTP/1 dispatcher's slot per request, and for
    // HTTP/2 into a task of its own, through several moves. A box makes all
    // of those a pointer's.
    let svc = service_fn(move |req| {
        let request = InFlightRequest::enter(&svc_in_flight);
        let (shared, info) = (Arc::clone(&svc_shared), Arc::clone(&info));
        boxed_request(shared, info, req, request)
    });
    let conn = builder.serve_connection_with_upgrades(io, svc);
    tokio::pin!(conn);
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // Accepted while the drain began: the change is already seen.
    let mut closing = *shutdown.borrow();
    if closing {
        conn.as_mut().graceful_shutdown();
    }
    let changed = std::pin::pin!(shutdown.changed());
    let mut control = Control::new(changed, ticker);
    let mut seen = 0;
    let mut quiet_ticks = 0;
    let res = std::future::poll_fn(|cx| {
        loop {
            if let Poll::Ready(res) = conn.as_mut().poll(cx) {
                return Poll::Ready(res);
            }
            let was_closing = closing;
            let mut abandon = false;
            control.poll_if_woken(cx, |event| match event {
                ControlEvent::Shutdown => closing = true,
                ControlEvent::Tick if !closing => {
                    let now = activity.load(Ordering::Relaxed);
                    quiet_ticks = if now == seen { quiet_ticks + 1 } else { 0 };
                    if quiet_ticks >= idle_ticks {
                        debug!("closing idle connection");
                        closing = true;
                    }
                    seen = now;
                }
                // hyper closes an HTTP/2 connection gracefully only once the
                // client acknowledges a PING; a client that is gone, or
                // never sent its SETTINGS, never does. At a tick after the
                // close began, nothing in flight is lost by dropping it.
                ControlEvent::Tick => abandon = in_flight.load(Ordering::Acquire) == 0,
            });
            if abandon {
                debug!("dropping a closing connection with nothing in flight");
                return Poll::Ready(Ok(()));
            }
            if closing == was_closing {
                return Poll::Pending;
            }
            // Starting a graceful shutdown needs the connection polled again.
            conn.as_mut().graceful_shutdown();
        }
    })
    .await;
    if let Err(e) = res {
        // hyper answered these heads itself, before the service ran.
        match e.downcast_ref::<hyper::Error>() {
            Some(h) if h.is_parse_too_large() => {
                proxy::count_rejection(&shared, Rejection::HeadTooLarge, &e);
            }
            Some(h) if h.is_parse() => proxy::count_rejection(&shared, Rejection::Malformed, &e),
            _ => debug!(error = %e, "connection ended with error"),
        }
    }
    shared.metrics.open_connections.dec();
}

/// One request's future, in its box.
///
/// The box is allocated first and the future made into it: made first, on
/// the stack, all of its size (kilobytes, most of it not yet written)
/// would be copied in. Rust has no placement, but the compiler does this
/// when the future is made by a call that cannot unwind and whose result
/// goes straight into the box, which it can see only when both are
/// compiled together: hence two functions of this crate, neither inlined
/// into the generic connection code that other crates instantiate.
///
/// The request goes through the proxy's phases in a box of its own too:
/// each `async fn` it is passed to by value would keep a copy of it in the
/// request's future (the argument and the local it becomes), a few hundred
/// bytes written per phase.
#[inline(never)]
fn boxed_request(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    req: http::Request<hyper::body::Incoming>,
    request: InFlightRequest,
) -> Pin<Box<impl Future<Output = RequestOutput> + Send>> {
    let req = Box::new(req);
    Box::into_pin(Box::write(
        Box::new_uninit(),
        request_future(shared, info, req, request),
    ))
}

type RequestOutput = Result<http::Response<Counted<crate::body::ResponseBody>>, Infallible>;

/// One request's future, unstarted (see [`boxed_request`]). Written out
/// rather than as an `async fn`, so that it is certain the attribute
/// applies to the function that makes the future, which is what was
/// checked in the machine code.
#[inline(never)]
#[allow(clippy::manual_async_fn)]
fn request_future(
    shared: Arc<Shared>,
    info: Arc<ConnInfo>,
    req: Box<http::Request<hyper::body::Incoming>>,
    request: InFlightRequest,
) -> impl Future<Output = RequestOutput> + Send {
    async move {
        let rsp = proxy::handle(shared, info, req).await?;
        Ok(rsp.map(|body| Counted { body, request }))
    }
}

/// hyper's own default HTTP/1 read buffer (about 400 KiB); kept unless the
/// head limit needs more.
const HYPER_MAX_BUF: usize = 8192 + 4096 * 100;

/// HTTP/2's `SETTINGS_MAX_HEADER_LIST_SIZE`: the head byte limit plus the
/// 32 bytes RFC 9113 §6.5.2 counts per field, so that heads up to the
/// limit reach the service, which checks them exactly (h2 answers 431
/// itself beyond this).
fn h2_header_list_size(head: &HeadRules) -> u32 {
    let fields = head.max_headers.saturating_add(8);
    let size = head
        .max_header_bytes
        .saturating_add(fields.saturating_mul(32));
    u32::try_from(size).unwrap_or(u32::MAX)
}

/// The period of a connection's control tick, and how many quiet ticks in
/// a row make it idle.
///
/// The tick also bounds how late a slow request head is cut off: the
/// header-read deadline ([`HeadTimer`]) is checked whenever the
/// connection is polled, and the tick polls it at least once a period. A
/// quarter of the header timeout makes the cut-off at most a quarter late.
fn control_period(cfg: &ListenerConfig) -> (Duration, u32) {
    let idle = clock_span(cfg.idle_timeout);
    let period = clock_span(idle.min(cfg.header_read_timeout / 4));
    let ticks = idle.as_nanos().div_ceil(period.as_nanos());
    (period, u32::try_from(ticks).unwrap_or(u32::MAX).max(1))
}

/// A configured timeout made safe to put on the clock: a zero period would
/// make an interval panic, and a huge one overflow `Instant`.
fn clock_span(d: Duration) -> Duration {
    d.clamp(
        Duration::from_millis(1),
        Duration::from_secs(365 * 24 * 3600),
    )
}

/// hyper's HTTP/1 header-read timer, without a timer per request.
///
/// hyper arms the header-read timeout for every request head it reads
/// (and for the wait for the next one on a kept-alive connection). With
/// tokio's timer that is a timer-wheel entry registered and cancelled per
/// request, each under the timer driver's one lock, which every worker
/// thread shares. Here the timeout is only a deadline, checked when hyper
/// polls it; nothing wakes it. The connection's control tick
/// ([`control_period`]) polls the connection, so an overdue head is cut off
/// at most one period late.
#[derive(Clone, Copy, Debug)]
struct HeadTimer;

/// A deadline that is checked when polled and never wakes anyone itself;
/// `None` never comes.
struct Deadline(Option<Instant>);

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        match self.0 {
            Some(deadline) if Instant::now() >= deadline => Poll::Ready(()),
            _ => Poll::Pending,
        }
    }
}

impl hyper::rt::Sleep for Deadline {}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline(Instant::now().checked_add(duration)))
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(Deadline(Some(deadline)))
    }
}

/// What woke a connection's [`Control`].
enum ControlEvent {
    /// The listener is draining.
    Shutdown,
    /// An idle-check period passed.
    Tick,
}

/// A connection task's side events (the drain signal and the idle tick),
/// polled only after their own waker fired.
///
/// The task wakes for every read and write of its connection. Polling the
/// side futures on each of those wakes, as a `select!` does, costs a timer
/// poll and two locks of the drain signal's waiter list per wake (tokio's
/// `Notified` locks it to register and again to unregister), and that list
/// is shared by every connection of every worker thread. Here the side
/// futures get a waker of their own, which marks them woken and wakes the
/// task; a wake for IO costs one check of that mark.
struct Control<'a, F> {
    shutdown: Option<Pin<&'a mut F>>,
    ticker: tokio::time::Interval,
    woken: Arc<SideWake>,
    waker: Waker,
}

/// The side futures' waker: records that it fired, then wakes the task.
struct SideWake {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl Wake for SideWake {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<'a, F: Future> Control<'a, F> {
    fn new(shutdown: Pin<&'a mut F>, ticker: tokio::time::Interval) -> Self {
        let woken = Arc::new(SideWake {
            // Polled on the first poll, which registers them.
            fired: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(Arc::clone(&woken));
        Self {
            shutdown: Some(shutdown),
            ticker,
            woken,
            waker,
        }
    }

    /// Registers the task's waker, and if a side future woke since the
    /// last call, polls them and reports what happened.
    fn poll_if_woken(&mut self, cx: &Context<'_>, mut on: impl FnMut(ControlEvent)) {
        self.woken.task.register(cx.waker());
        if !self.woken.fired.swap(false, Ordering::AcqRel) {
            return;
        }
        let mut side = Context::from_waker(&self.waker);
        if let Some(shutdown) = self.shutdown.as_mut()
            && shutdown.as_mut().poll(&mut side).is_ready()
        {
            self.shutdown = None;
            on(ControlEvent::Shutdown);
        }
        // Ready at most once per period (missed ticks are delayed, not
        // bunched); polling again registers the next one.
        while self.ticker.poll_tick(&mut side).is_ready() {
            on(ControlEvent::Tick);
        }
    }
}

/// Counts a request as in flight on its connection until its response body
/// is done (dropped), so a closing connection is never dropped under it.
struct InFlightRequest(Arc<AtomicUsize>);

impl InFlightRequest {
    fn enter(count: &Arc<AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(count))
    }
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request [`InFlightRequest`].
    struct Counted<B> {
        #[pin]
        body: B,
        request: InFlightRequest,
    }
}

impl<B: Body> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().body.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Counts reads and writes so the connection task can tell an idle client.
struct ActivityIo<S> {
    inner: S,
    /// This wrapper is the only writer, so a plain store of its own count
    /// does: no locked read-modify-write per read and write.
    count: u64,
    activity: Arc<AtomicU64>,
}

impl<S> ActivityIo<S> {
    fn touch(&mut self) {
        self.count = self.count.wrapping_add(1);
        self.activity.store(self.count, Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ActivityIo<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let res = Pin::new(&mut this.inner).poll_read(cx, buf);
        if buf.filled().len() != before {
            this.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ActivityIo<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write(cx, buf);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let res = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.touch();
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// Counts its polls and keeps the last waker it was given.
    struct Side<'a> {
        polls: &'a AtomicUsize,
        waker: &'a std::sync::Mutex<Option<Waker>>,
    }

    impl Future for Side<'_> {
        type Output = ();
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            *self.waker.lock().unwrap() = Some(cx.waker().clone());
            Poll::Pending
        }
    }

    #[test]
    fn the_control_tick_serves_both_timeouts() {
        let cfg = |idle_ms, header_ms| ListenerConfig {
            idle_timeout: Duration::from_millis(idle_ms),
            header_read_timeout: Duration::from_millis(header_ms),
            ..ListenerConfig::default()
        };
        let ms = Duration::from_millis;
        // The defaults: 60 s heads, 75 s idle.
        assert_eq!(control_period(&cfg(75_000, 60_000)), (ms(15_000), 5));
        assert_eq!(control_period(&cfg(200, 3_600_000)), (ms(200), 1));
        assert_eq!(control_period(&cfg(75_000, 300)), (ms(75), 1000));
        assert_eq!(control_period(&cfg(1000, 1000)), (ms(250), 4));
        // Zero timeouts tick every millisecond rather than panic.
        assert_eq!(control_period(&cfg(0, 0)), (ms(1), 1));
        let huge = ListenerConfig {
            idle_timeout: Duration::MAX,
            header_read_timeout: Duration::MAX,
            ..ListenerConfig::default()
        };
        assert_eq!(control_period(&huge).1, 1);
        // What hyper adds to the clock for the header timeout stays on it.
        assert!(
            Instant::now()
                .checked_add(clock_span(Duration::MAX))
                .is_some()
        );
    }

    #[test]
    fn a_head_deadline_is_checked_when_polled() {
        use hyper::rt::Timer;
        let mut cx = Context::from_waker(Waker::noop());
        let mut past = HeadTimer.sleep_until(Instant::now());
        assert!(past.as_mut().poll(&mut cx).is_ready());
        let mut later = HeadTimer.sleep(Duration::from_secs(3600));
        assert!(later.as_mut().poll(&mut cx).is_pending());
        let mut never = HeadTimer.sleep(Duration::MAX);
        assert!(never.as_mut().poll(&mut cx).is_pending());
    }

    #[tokio::test]
    async fn side_futures_are_polled_only_after_their_waker_fired() {
        let polls = AtomicUsize::new(0);
        let side_waker = std::sync::Mutex::new(None);
        let side = std::pin::pin!(Side {
            polls: &polls,
            waker: &side_waker,
        });
        let ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + Duration::from_secs(3600),
            Duration::from_secs(3600),
        );
        let mut control = Control::new(side, ticker);
        let cx = Context::from_waker(Waker::noop());
        let mut events = 0;

        control.poll_if_woken(&cx, |_| events += 1);
        assert_eq!(polls.load(Ordering::SeqCst), 1, "the first call registers");
        for _ in 0..10 {
            control.poll_if_woken(&cx, |_| events += 1);
        }
        assert_eq!(
            polls.load(Ordering::SeqCst),
            1,
            "wakes for IO do not poll it"
        );

        side_waker.lock().unwrap().take().unwrap().wake();
        control.poll_if_woken(&cx, |_| events += 1);
        assert_eq!(polls.load(Ordering::SeqCst), 2, "its own wake does");
        assert_eq!(events, 0);
    }
}
