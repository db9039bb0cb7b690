//! Test support: real servers on 127.0.0.1:0 and a real dataplane.
#![allow(dead_code)]

pub mod tls;

use std::convert::Infallible;
use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use portico_dataplane::model::*;
use portico_dataplane::{
    AccessLogSink, Dataplane, DataplaneConfig, ListenerConfig, Listeners, PublishReport,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub type Body = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;
type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>> + Send + Sync,
>;

/// Retries an assertion until it holds or a generous deadline passes; for
/// convergence, never for timing.
#[macro_export]
macro_rules! assert_eventually {
    ($cond:expr, $($msg:tt)+) => {{
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            if $cond { break; }
            if std::time::Instant::now() > deadline { panic!($($msg)+); }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }};
}

pub fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|e| match e {}).boxed()
}

pub fn empty() -> Body {
    Empty::new().map_err(|e| match e {}).boxed()
}

/// A real upstream HTTP server (HTTP/1.1 and h2c on one port).
pub struct Upstream {
    pub addr: SocketAddr,
    _stop: oneshot::Sender<()>,
}

impl Upstream {
    /// Answers every request with `handler`.
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        Self::start_with(handler, None).await
    }

    /// [`Upstream::echo`] over TLS with `cert` (ALPN h2 and http/1.1); the
    /// SNI and ALPN it saw come back as `x-seen-sni` and `x-seen-alpn`.
    pub async fn echo_tls(name: &'static str, cert: &tls::Issued) -> Self {
        Self::echo_tls_with(name, cert, None).await
    }

    /// [`Upstream::echo_tls`] requiring a client certificate from
    /// `client_ca` when given; `x-seen-client-cert` says whether one came.
    pub async fn echo_tls_with(
        name: &'static str,
        cert: &tls::Issued,
        client_ca: Option<&tls::TestCa>,
    ) -> Self {
        let provider = portico_dataplane::listen::tls::provider();
        let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = match client_ca {
            None => builder.with_no_client_auth(),
            Some(ca) => builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(ca.roots()),
                    provider,
                )
                .build()
                .unwrap(),
            ),
        };
        let mut cfg = builder
            .with_single_cert(
                vec![cert.der.clone()],
                rustls::pki_types::pem::PemObject::from_pem_slice(cert.key_pem.as_bytes()).unwrap(),
            )
            .unwrap();
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
        Self::start_with(echo_handler(name), Some(acceptor)).await
    }

    async fn start_with<F, Fut>(handler: F, tls: Option<tokio_rustls::TlsAcceptor>) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Body>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(handler(req)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel::<()>();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((stream, _)) = accepted else { continue };
                        let handler = Arc::clone(&handler);
                        let tls = tls.clone();
                        tokio::spawn(async move {
                            let builder = auto::Builder::new(TokioExecutor::new());
                            let Some(tls) = tls else {
                                let svc = service_fn(move |req| {
                                    let h = Arc::clone(&handler);
                                    async move { Ok::<_, Infallible>(h(req).await) }
                                });
                                let _ = builder
                                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                    .await;
                                return;
                            };
                            let Ok(stream) = tls.accept(stream).await else { return };
                            let (_, conn) = stream.get_ref();
                            let sni = conn.server_name().unwrap_or("").to_owned();
                            let alpn = String::from_utf8_lossy(conn.alpn_protocol().unwrap_or(b""))
                                .into_owned();
                            let client_cert = if conn.peer_certificates().is_some() { "yes" } else { "no" };
                            let svc = service_fn(move |req| {
                                let h = Arc::clone(&handler);
                                let (sni, alpn) = (sni.clone(), alpn.clone());
                                async move {
                                    let mut rsp = h(req).await;
                                    let headers = rsp.headers_mut();
                                    headers.insert("x-seen-sni", sni.parse().unwrap());
                                    headers.insert("x-seen-alpn", alpn.parse().unwrap());
                                    headers.insert("x-seen-client-cert", client_cert.parse().unwrap());
                                    Ok::<_, Infallible>(rsp)
                                }
                            });
                            let _ = builder
                                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                                .await;
                        });
                    }
                    _ = &mut stopped => break,
                }
            }
        });
        Self { addr, _stop: stop }
    }

    /// Answers 200 with `name` as body and echoes request facts as headers:
    /// `x-upstream`, `x-seen-path`, `x-seen-host`, `x-seen-version`, and every
    /// request header as `x-seen-h-<name>` (multiple values joined by `|`).
    pub async fn echo(name: &'static str) -> Self {
        Self::start(echo_handler(name)).await
    }
}

/// The handler of [`Upstream::echo`].
fn echo_handler(
    name: &'static str,
) -> impl Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Body>> + Send>>
+ Send
+ Sync
+ 'static {
    move |req: Request<Incoming>| {
        Box::pin(async move {
            let mut rsp = Response::builder()
                .header("x-upstream", name)
                .header(
                    "x-seen-path",
                    req.uri().path_and_query().map_or("", |p| p.as_str()),
                )
                .header(
                    "x-seen-host",
                    req.uri()
                        .authority()
                        .map(|a| a.to_string())
                        .or_else(|| {
                            req.headers()
                                .get("host")
                                .and_then(|h| h.to_str().ok())
                                .map(str::to_owned)
                        })
                        .unwrap_or_default(),
                )
                .header("x-seen-version", format!("{:?}", req.version()));
            for key in req.headers().keys() {
                let joined: Vec<&str> = req
                    .headers()
                    .get_all(key)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .collect();
                rsp = rsp.header(format!("x-seen-h-{key}"), joined.join("|"));
            }
            rsp.body(full(name)).unwrap()
        }) as Pin<Box<dyn Future<Output = Response<Body>> + Send>>
    }
}

/// A dataplane serving on 127.0.0.1:0, with its access log captured.
pub struct Proxy {
    pub dp: Dataplane,
    pub addr: SocketAddr,
    /// The HTTPS listener.
    pub https: SocketAddr,
    /// `/healthz`, `/readyz`, `/metrics`.
    pub admin: SocketAddr,
    /// `/debug/*`.
    pub debug: SocketAddr,
    pub log: LogCapture,
    shutdown: Option<oneshot::Sender<()>>,
    pub done: Option<tokio::task::JoinHandle<bool>>,
}

/// Access-log lines written by the dataplane's writer thread.
#[derive(Clone, Default)]
pub struct LogCapture(Arc<Mutex<Vec<u8>>>);

impl Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogCapture {
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let buf = self.0.lock().unwrap();
        String::from_utf8_lossy(&buf)
            .lines()
            .map(|l| serde_json::from_str(l).expect("access log line is JSON"))
            .collect()
    }
}

impl Proxy {
    pub async fn start(routes: RouteConfig) -> Self {
        Self::start_with(routes, |_| {}).await
    }

    pub async fn start_with(routes: RouteConfig, tweak: impl FnOnce(&mut DataplaneConfig)) -> Self {
        let log = LogCapture::default();
        let mut cfg = DataplaneConfig {
            access_log: AccessLogSink::Writer(Box::new(log.clone())),
            listener: ListenerConfig::default(),
            ..Default::default()
        };
        tweak(&mut cfg);
        let dp = Dataplane::new(cfg).unwrap();
        dp.publish(routes);
        Self::serve(dp, log).await
    }

    /// A dataplane binding Gateway listener ports on 127.0.0.1, with
    /// `routes` published before it serves (their sockets are served from
    /// the start); that publish's report.
    pub async fn start_gateway(
        routes: RouteConfig,
        tweak: impl FnOnce(&mut DataplaneConfig),
    ) -> (Self, PublishReport) {
        let log = LogCapture::default();
        let mut cfg = DataplaneConfig {
            access_log: AccessLogSink::Writer(Box::new(log.clone())),
            gateway_address: std::net::Ipv4Addr::LOCALHOST.into(),
            ..Default::default()
        };
        tweak(&mut cfg);
        let dp = Dataplane::new(cfg).unwrap();
        let report = dp.publish(routes);
        (Self::serve(dp, log).await, report)
    }

    /// Serves a dataplane that has not necessarily published anything.
    pub async fn serve(dp: Dataplane, log: LogCapture) -> Self {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let https_addr = https.local_addr().unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let debug = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = proxy.local_addr().unwrap();
        let admin_addr = admin.local_addr().unwrap();
        let debug_addr = debug.local_addr().unwrap();
        let listeners = Listeners {
            http: proxy,
            https: Some(https),
            admin,
            debug: Some(debug),
        };
        let (tx, rx) = oneshot::channel::<()>();
        let dp2 = dp.clone();
        let done = tokio::spawn(async move {
            dp2.serve_listeners(listeners, async {
                let _ = rx.await;
            })
            .await
        });
        Self {
            dp,
            addr,
            https: https_addr,
            admin: admin_addr,
            debug: debug_addr,
            log,
            shutdown: Some(tx),
            done: Some(done),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn begin_shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }

    /// The OpenMetrics text the admin listener serves at `/metrics`.
    pub async fn scrape(&self) -> String {
        self.admin_page("/metrics").await
    }

    /// An admin page's text (`/metrics`, `/readyz`), which must answer 200.
    pub async fn admin_page(&self, path: &str) -> String {
        let req = Request::get(format!("http://{}{path}", self.admin))
            .body(empty())
            .unwrap();
        let (status, _, text) = send(&h1_client(), req).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        text
    }
}

/// A GET for `path` on `host` from the loopback address `from`
/// (127.0.0.0/8 is all loopback), on a connection of its own: the
/// answer's head, its body still to read.
pub async fn get_head_from(
    from: &str,
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> (http::response::Parts, hyper::body::Incoming) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket
        .bind(SocketAddr::new(
            from.parse::<std::net::IpAddr>().unwrap(),
            0,
        ))
        .unwrap();
    let stream = socket.connect(proxy).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(empty())
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    rsp.into_parts()
}

/// A port that was free on 127.0.0.1 a moment ago (bound to port 0, read,
/// let go): for Gateway listener ports, which the test names before the
/// dataplane binds them. The one race these tests accept.
pub fn free_port() -> u16 {
    let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    probe.local_addr().unwrap().port()
}

/// The value of the sample line `series` (a name, with its `{labels}` if it
/// has any) in metrics text; `# HELP` and `# TYPE` lines never match.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Writes `bytes` on a new connection to `addr`, optionally half-closes,
/// and returns everything the peer sends until it closes (or 10 s pass).
/// Write errors are ignored: a proxy may close on a bad request before
/// reading all of it.
pub async fn raw_exchange(addr: SocketAddr, bytes: &[u8], half_close: bool) -> Vec<u8> {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    if half_close {
        let _ = s.shutdown().await;
    }
    read_until_closed(&mut s)
        .await
        .unwrap_or_else(|partial| partial)
}

/// Everything the peer sends until it closes; `Err` with what came if it
/// is still open after 10 s.
pub async fn read_until_closed(s: &mut tokio::net::TcpStream) -> Result<Vec<u8>, Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    match tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await {
        Ok(_) => Ok(out),
        Err(_) => Err(out),
    }
}

/// Reads from a raw socket up to the end of a message head (a blank line):
/// what came, or `None` if the peer closed (or failed) first.
pub async fn read_head(s: &mut tokio::net::TcpStream) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    Some(head)
}

/// An HTTP/2 (h2c) connection with prior knowledge, driven by its own task.
pub async fn h2c_connection(addr: SocketAddr) -> hyper::client::conn::http2::SendRequest<Body> {
    let io = TokioIo::new(tokio::net::TcpStream::connect(addr).await.unwrap());
    let (sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .handshake(io)
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

pub fn h1_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub fn h2c_client() -> Client<HttpConnector, Body> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// Sends a GET with a Host header and returns status, headers and body.
pub async fn get(
    client: &Client<HttpConnector, Body>,
    proxy: SocketAddr,
    host: &str,
    path: &str,
) -> (StatusCode, http::HeaderMap, String) {
    let req = Request::get(format!("http://{proxy}{path}"))
        .header("host", host)
        .body(empty())
        .unwrap();
    send(client, req).await
}

pub async fn send(
    client: &Client<HttpConnector, Body>,
    req: Request<Body>,
) -> (StatusCode, http::HeaderMap, String) {
    let rsp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("response within 20s")
        .expect("request succeeds");
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.expect("body").to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

// === route builders ===

pub fn backend(name: &str, addrs: &[SocketAddr]) -> Backend {
    Backend::new(name, addrs.to_vec())
}

pub fn forward_rule(matches: Vec<RouteMatch>, backends: Vec<Backend>) -> Rule {
    Rule {
        matches,
        ..Rule::new(Action::Forward(Forward::to(backends)))
    }
}

/// A 302 for paths under `from`, with that prefix replaced by `to`.
pub fn prefix_redirect(from: &str, to: &str) -> Rule {
    Rule {
        matches: vec![prefix(from)],
        ..Rule::new(Action::Redirect(Redirect {
            scheme: None,
            hostname: None,
            port: None,
            path: Some(PathModifier::ReplacePrefixMatch(to.into())),
            status: RedirectStatus::Found,
        }))
    }
}

pub fn prefix(p: &str) -> RouteMatch {
    RouteMatch {
        path: PathMatch::Prefix(p.into()),
        ..Default::default()
    }
}

pub fn route(id: &str, hosts: &[&str], rules: Vec<Rule>) -> Route {
    let hostnames = hosts.iter().map(|h| Hostname::parse(h).unwrap()).collect();
    let mut route = Route::new(id, hostnames, rules);
    route.source = SourceRef {
        kind: "Test".into(),
        namespace: "default".into(),
        name: id.into(),
        created: 0,
    };
    route
}

pub fn config(routes: Vec<Route>) -> RouteConfig {
    RouteConfig::new(routes)
}

/// One route sending everything for `host` to `upstream`.
pub fn simple(host: &str, upstream: SocketAddr) -> RouteConfig {
    config(vec![route(
        "r",
        &[host],
        vec![forward_rule(vec![], vec![backend("b", &[upstream])])],
    )])
}

// === pods: upstreams a test can break ===

/// A real HTTP server (HTTP/1.1 and h2c) standing for one pod: it can be
/// made to answer another status, answer slowly, be stopped (listener and
/// every connection closed, so connecting is refused) and restarted on the
/// same address. `/healthz` answers `health_status` and is counted apart;
/// `/grpc.health.v1.Health/Check` answers the gRPC health protocol with
/// `grpc_serving`.
pub struct Pod {
    pub name: &'static str,
    pub addr: SocketAddr,
    pub state: Arc<PodState>,
    server: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

pub struct PodState {
    /// Requests other than health checks.
    pub hits: std::sync::atomic::AtomicU64,
    /// Health-check requests (HTTP or gRPC).
    pub health_hits: std::sync::atomic::AtomicU64,
    pub status: std::sync::atomic::AtomicU16,
    pub health_status: std::sync::atomic::AtomicU16,
    pub grpc_serving: std::sync::atomic::AtomicBool,
    pub delay_ms: std::sync::atomic::AtomicU64,
    /// Request paths in order (health checks excluded).
    pub paths: Mutex<Vec<String>>,
}

impl Pod {
    pub async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(PodState {
            hits: Default::default(),
            health_hits: Default::default(),
            status: std::sync::atomic::AtomicU16::new(200),
            health_status: std::sync::atomic::AtomicU16::new(200),
            grpc_serving: std::sync::atomic::AtomicBool::new(true),
            delay_ms: Default::default(),
            paths: Mutex::default(),
        });
        let pod = Self {
            name,
            addr,
            state,
            server: Mutex::new(None),
        };
        pod.serve(listener);
        pod
    }

    fn serve(&self, listener: TcpListener) {
        let state = Arc::clone(&self.state);
        let name = self.name;
        let task = tokio::spawn(async move {
            // Dropping the set (when the task is aborted) closes every
            // connection the pod has.
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = Arc::clone(&state);
                conns.spawn(async move {
                    let svc = service_fn(move |req| pod_answer(name, Arc::clone(&state), req));
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        *self.server.lock().unwrap() = Some(task);
    }

    pub fn hits(&self) -> u64 {
        self.state.hits.load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn health_hits(&self) -> u64 {
        self.state
            .health_hits
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    pub fn set_status(&self, status: u16) {
        self.state
            .status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_health_status(&self, status: u16) {
        self.state
            .health_status
            .store(status, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_grpc_serving(&self, serving: bool) {
        self.state
            .grpc_serving
            .store(serving, std::sync::atomic::Ordering::SeqCst);
    }

    pub fn set_delay(&self, d: Duration) {
        self.state
            .delay_ms
            .store(d.as_millis() as u64, std::sync::atomic::Ordering::SeqCst);
    }

    /// Closes the listener and every connection: new connections are
    /// refused from the moment this returns.
    pub async fn stop(&self) {
        let task = self.server.lock().unwrap().take();
        if let Some(task) = task {
            task.abort();
            let _ = task.await;
        }
    }

    /// Listens on the same address again.
    pub async fn restart(&self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

async fn pod_answer(
    name: &'static str,
    state: Arc<PodState>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    use std::sync::atomic::Ordering::SeqCst;
    let path = req.uri().path().to_owned();
    if path == "/grpc.health.v1.Health/Check" {
        state.health_hits.fetch_add(1, SeqCst);
        let _ = req.into_body().collect().await;
        // HealthCheckResponse { status: SERVING (1) or NOT_SERVING (2) }.
        let status = if state.grpc_serving.load(SeqCst) {
            1
        } else {
            2
        };
        let frame = Bytes::from(vec![0, 0, 0, 0, 2, 0x08, status]);
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let body = http_body_util::StreamBody::new(futures_util::stream::iter([
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(frame)),
            Ok(hyper::body::Frame::trailers(trailers)),
        ]));
        return Ok(Response::builder()
            .header("content-type", "application/grpc")
            .body(BodyExt::boxed(body))
            .unwrap());
    }
    if path == "/healthz" {
        state.health_hits.fetch_add(1, SeqCst);
        let status = StatusCode::from_u16(state.health_status.load(SeqCst)).unwrap();
        return Ok(Response::builder().status(status).body(full(name)).unwrap());
    }
    state.hits.fetch_add(1, SeqCst);
    state.paths.lock().unwrap().push(
        req.uri()
            .path_and_query()
            .map_or("", |p| p.as_str())
            .to_owned(),
    );
    let delay = state.delay_ms.load(SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let status = StatusCode::from_u16(state.status.load(SeqCst)).unwrap();
    Ok(Response::builder()
        .status(status)
        .header("x-upstream", name)
        .body(full(name))
        .unwrap())
}

/// Keeps tokio's paused clock from moving on its own while real sockets
/// are in use: a running blocking task inhibits auto-advance, so the clock
/// moves only by `tokio::time::advance`. Without it the clock would jump to
/// the next timer whenever the runtime waits for I/O.
pub struct FrozenClock {
    release: Option<std::sync::mpsc::Sender<()>>,
}

impl FrozenClock {
    pub fn new() -> Self {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        tokio::task::spawn_blocking(move || {
            let _ = rx.recv();
        });
        Self { release: Some(tx) }
    }
}

impl Drop for FrozenClock {
    fn drop(&mut self) {
        if let Some(tx) = self.release.take() {
            let _ = tx.send(());
        }
    }
}

/// A response read off a raw socket: its status and head fields (names
/// lower-cased), from the first message in `bytes`.
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
}

impl RawResponse {
    /// `None` when `bytes` does not start with a status line.
    pub fn parse(bytes: &[u8]) -> Option<Self> {
        let text = String::from_utf8_lossy(bytes);
        let head = text.split("\r\n\r\n").next()?;
        let mut lines = head.split("\r\n");
        let status = lines
            .next()?
            .strip_prefix("HTTP/1.")?
            .get(2..5)?
            .parse()
            .ok()?;
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        Some(Self { status, headers })
    }

    /// The first value of `name` (lower-case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}
