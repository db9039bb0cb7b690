//! The PROXY protocol on the proxy listeners (`--proxy-protocol`), over real
//! sockets: v1 and v2 headers before HTTP and before TLS, the address they
//! carry as the client's, and headers that are missing, malformed,
//! oversized or late closing only their own connection.

mod support;

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use portico_dataplane::DataplaneConfig;
use portico_dataplane::listen::tls::{CertConfig, PassthroughBinding};
use portico_dataplane::model::Hostname;
use portico_dataplane::request::forwarded::{TrustedProxies, parse_range};
use ppp::v2::{Addresses, Builder, Command, Protocol, Version};
use rustls::pki_types::ServerName;
use support::tls::*;
use support::*;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

const HEADERS: &str = "portico_proxy_protocol_headers_total";

fn v1(text: &str) -> Vec<u8> {
    text.as_bytes().to_vec()
}

/// A v2 PROXY header from `src` (to an arbitrary destination).
fn v2_proxy(src: &str) -> Vec<u8> {
    let src: SocketAddr = src.parse().unwrap();
    let dst: SocketAddr = match src {
        SocketAddr::V4(_) => "10.0.0.1:443".parse().unwrap(),
        SocketAddr::V6(_) => "[fd00::1]:443".parse().unwrap(),
    };
    Builder::with_addresses(
        Version::Two | Command::Proxy,
        Protocol::Stream,
        Addresses::from((src, dst)),
    )
    .build()
    .unwrap()
}

/// A v2 LOCAL header, as a load balancer's own health checks send.
fn v2_local() -> Vec<u8> {
    Builder::with_addresses(
        Version::Two | Command::Local,
        Protocol::Unspecified,
        Addresses::Unspecified,
    )
    .build()
    .unwrap()
}

/// A stream that sends `header` in the same write as the first bytes
/// written to it: a load balancer's header and the client's first bytes
/// in one segment, so the proxy reads past the header.
struct Prefixed {
    inner: TcpStream,
    header: Vec<u8>,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if self.header.is_empty() {
            return Pin::new(&mut self.inner).poll_write(cx, buf);
        }
        let mut both = self.header.clone();
        both.extend_from_slice(buf);
        let header = self.header.len();
        match Pin::new(&mut self.inner).poll_write(cx, &both) {
            Poll::Ready(Ok(n)) if n > header => {
                self.header.clear();
                Poll::Ready(Ok(n - header))
            }
            // Loopback takes a few hundred bytes whole.
            Poll::Ready(Ok(_)) => Poll::Ready(Err(io::Error::other("short first write"))),
            other => other,
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How a test client sends its PROXY header.
#[derive(Clone, Copy, Debug)]
enum Delivery {
    /// Alone, then the client's bytes.
    Apart,
    /// In one segment with the client's first bytes.
    Together,
}

/// A connection to `addr` that has sent `header` as `how` says.
async fn connect_with(addr: SocketAddr, header: &[u8], how: Delivery) -> Pin<Box<dyn IoStream>> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    match how {
        Delivery::Apart => {
            tcp.write_all(header).await.unwrap();
            Box::pin(tcp)
        }
        Delivery::Together => Box::pin(Prefixed {
            inner: tcp,
            header: header.to_vec(),
        }),
    }
}

trait IoStream: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> IoStream for T {}

/// One HTTP/1.1 GET for `host` over `io`: the status and the headers.
async fn get_over<S>(io: S, host: &str) -> (StatusCode, HeaderMap)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", host)
        .body(empty())
        .unwrap();
    let rsp = tx.send_request(req).await.unwrap();
    let (parts, body) = rsp.into_parts();
    body.collect().await.unwrap();
    (parts.status, parts.headers)
}

/// Over TLS (SNI `host`, trusting `ca`), after the header.
async fn get_over_tls(
    addr: SocketAddr,
    header: &[u8],
    how: Delivery,
    ca: &TestCa,
    host: &str,
) -> (StatusCode, HeaderMap) {
    let io = connect_with(addr, header, how).await;
    let cfg = client(ca.roots(), Versions::Both, &[b"http/1.1"]);
    let name = ServerName::try_from(host.to_owned()).unwrap();
    let tls = TlsConnector::from(cfg).connect(name, io).await.unwrap();
    get_over(tls, host).await
}

/// A proxy with the PROXY protocol on, serving `pp.test` over HTTP and
/// HTTPS (certificate from the returned CA) to an echo upstream.
async fn proxy_protocol_proxy(
    tweak: impl FnOnce(&mut DataplaneConfig),
) -> (TestCa, Upstream, Proxy) {
    let ca = TestCa::new();
    let up = Upstream::echo("up").await;
    let proxy = Proxy::start_with(simple("pp.test", up.addr), |c| {
        c.listener.proxy_protocol = true;
        tweak(c);
    })
    .await;
    proxy.dp.publish_certs(CertConfig {
        bindings: vec![ca.issue(&["pp.test"], 3).binding("ns/pp", &["pp.test"])],
        ..Default::default()
    });
    (ca, up, proxy)
}

fn counted(proxy: &Proxy, result: &str, reason: &str) -> f64 {
    let series = format!("{HEADERS}{{result=\"{result}\",reason=\"{reason}\"}}");
    sample(&proxy.dp.encode_metrics().unwrap(), &series).unwrap_or(0.0)
}

/// Every header kind, and the client address the upstream should see
/// (`None`: the socket's peer, 127.0.0.1).
fn headers() -> Vec<(&'static str, Vec<u8>, Option<&'static str>)> {
    vec![
        (
            "v1 TCP4",
            v1("PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\r\n"),
            Some("203.0.113.7"),
        ),
        (
            "v1 TCP6",
            v1("PROXY TCP6 2001:db8::7 fd00::1 4711 443\r\n"),
            Some("2001:db8::7"),
        ),
        ("v1 UNKNOWN", v1("PROXY UNKNOWN\r\n"), None),
        (
            "v2 PROXY IPv4",
            v2_proxy("203.0.113.8:4711"),
            Some("203.0.113.8"),
        ),
        (
            "v2 PROXY IPv6",
            v2_proxy("[2001:db8::8]:4711"),
            Some("2001:db8::8"),
        ),
        ("v2 LOCAL", v2_local(), None),
    ]
}

#[tokio::test]
async fn the_header_names_the_client_on_the_http_listener() {
    let (_ca, _up, proxy) = proxy_protocol_proxy(|_| {}).await;
    let mut n = 0;
    for (kind, header, client) in headers() {
        for how in [Delivery::Apart, Delivery::Together] {
            let io = connect_with(proxy.addr, &header, how).await;
            let (s, h) = get_over(io, "pp.test").await;
            assert_eq!(s, StatusCode::OK, "{kind} {how:?}");
            let want = client.unwrap_or("127.0.0.1");
            assert_eq!(h["x-seen-h-x-forwarded-for"], want, "{kind} {how:?}");
            assert_eq!(h["x-seen-h-x-real-ip"], want, "{kind} {how:?}");
            assert_eq!(h["x-seen-h-x-forwarded-proto"], "http");
            n += 1;
            assert_eventually!(proxy.log.lines().len() >= n, "logged");
            let logged = proxy.log.lines()[n - 1]["client_addr"]
                .as_str()
                .unwrap()
                .to_owned();
            match client {
                // The port the header carries, too.
                Some(ip) if ip.contains(':') => assert_eq!(logged, format!("[{ip}]:4711")),
                Some(ip) => assert_eq!(logged, format!("{ip}:4711")),
                None => assert!(logged.starts_with("127.0.0.1:"), "{kind}: {logged}"),
            }
        }
    }
    assert_eq!(counted(&proxy, "ok", "none"), n as f64);
}

#[tokio::test]
async fn the_header_comes_before_tls_on_the_https_listener() {
    let (ca, _up, proxy) = proxy_protocol_proxy(|_| {}).await;
    for (kind, header, client) in headers() {
        for how in [Delivery::Apart, Delivery::Together] {
            let (s, h) = get_over_tls(proxy.https, &header, how, &ca, "pp.test").await;
            assert_eq!(s, StatusCode::OK, "{kind} {how:?}");
            let want = client.unwrap_or("127.0.0.1");
            assert_eq!(h["x-seen-h-x-forwarded-for"], want, "{kind} {how:?}");
            assert_eq!(h["x-seen-h-x-real-ip"], want, "{kind} {how:?}");
            assert_eq!(h["x-seen-h-x-forwarded-proto"], "https");
        }
    }
}

#[tokio::test]
async fn the_header_comes_before_the_passthrough_client_hello() {
    let backend_ca = TestCa::new();
    let tls_backend = Upstream::echo_tls("backend", &backend_ca.issue(&["pass.test"], 8)).await;
    let (ca, _up, proxy) = proxy_protocol_proxy(|c| c.listener.ssl_passthrough = true).await;
    proxy.dp.publish_certs(CertConfig {
        bindings: vec![ca.issue(&["pp.test"], 4).binding("ns/pp", &["pp.test"])],
        passthrough: vec![PassthroughBinding {
            name: "default/backend:443".into(),
            hosts: vec![Hostname::parse("pass.test").unwrap()],
            endpoints: vec![tls_backend.addr],
        }],
        ..Default::default()
    });
    let header = v1("PROXY TCP4 203.0.113.7 10.0.0.1 4711 443\r\n");
    for how in [Delivery::Apart, Delivery::Together] {
        // Spliced: the backend's own handshake, without the header.
        let (s, h) = get_over_tls(proxy.https, &header, how, &backend_ca, "pass.test").await;
        assert_eq!(s, StatusCode::OK, "{how:?}");
        assert_eq!(h["x-upstream"], "backend");
        // Terminated here: the hello the passthrough check read is replayed.
        let (s, h) = get_over_tls(proxy.https, &header, how, &ca, "pp.test").await;
        assert_eq!(s, StatusCode::OK, "{how:?}");
        assert_eq!(h["x-seen-h-x-real-ip"], "203.0.113.7");
    }
}

#[tokio::test]
async fn trusted_proxies_apply_with_the_header_source_as_the_peer() {
    let trust = |ranges: &'static [&'static str]| {
        move |c: &mut DataplaneConfig| {
            c.trusted_proxies = TrustedProxies::new(ranges.iter().map(|r| parse_range(r).unwrap()));
        }
    };
    let header = v1("PROXY TCP4 203.0.113.7 10.0.0.1 4711 80\r\n");
    let get = |addr: SocketAddr| {
        let header = header.clone();
        async move {
            let mut tcp = TcpStream::connect(addr).await.unwrap();
            tcp.write_all(&header).await.unwrap();
            let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .unwrap();
            tokio::spawn(conn);
            let req = Request::get("/")
                .header("host", "pp.test")
                .header("x-forwarded-for", "198.51.100.9")
                .body(empty())
                .unwrap();
            tx.send_request(req).await.unwrap().headers().clone()
        }
    };
    // The source the header carries is a trusted proxy: its X-Forwarded-For
    // names the client.
    let (_ca, _up, proxy) = proxy_protocol_proxy(trust(&["203.0.113.0/24"])).await;
    let h = get(proxy.addr).await;
    assert_eq!(h["x-seen-h-x-real-ip"], "198.51.100.9");
    assert_eq!(h["x-seen-h-x-forwarded-for"], "198.51.100.9, 203.0.113.7");
    // The socket's peer (the balancer) is trusted, but the header's source
    // is the peer that counts.
    let (_ca, _up, proxy) = proxy_protocol_proxy(trust(&["127.0.0.1/32"])).await;
    let h = get(proxy.addr).await;
    assert_eq!(h["x-seen-h-x-real-ip"], "203.0.113.7");
    assert_eq!(h["x-seen-h-x-forwarded-for"], "203.0.113.7");
}

#[tokio::test]
async fn bad_headers_close_their_connection_and_are_counted() {
    let (ca, _up, proxy) = proxy_protocol_proxy(|_| {}).await;
    let mut oversized_v2 = v2_proxy("203.0.113.8:4711");
    // Declares 8 KiB of TLVs.
    oversized_v2[14..16].copy_from_slice(&8192u16.to_be_bytes());
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "missing",
            b"GET / HTTP/1.1\r\nhost: pp.test\r\n\r\n".to_vec(),
        ),
        (
            "malformed",
            v1("PROXY TCP4 203.0.113.300 10.0.0.1 4711 80\r\n"),
        ),
        ("malformed", v1("PROXY TCP4 203.0.113.7 10.0.0.1 4711\r\n")),
        (
            "oversized",
            v1(&format!("PROXY TCP4 {}\r\n", "1".repeat(200))),
        ),
        ("oversized", oversized_v2),
        ("closed", v1("PROXY TCP4 203.0.113.7")),
    ];
    for listener in [proxy.addr, proxy.https] {
        for (reason, bytes) in &cases {
            let before = counted(&proxy, "error", reason);
            // Half-closed after the bytes: the "closed" case ends there.
            let answer = raw_exchange(listener, bytes, true).await;
            assert!(
                answer.is_empty(),
                "{reason}: closed without an answer, got {:?}",
                String::from_utf8_lossy(&answer)
            );
            assert_eventually!(
                counted(&proxy, "error", reason) == before + 1.0,
                "{reason} counted"
            );
        }
        // A TLS ClientHello where the header should be.
        let before = counted(&proxy, "error", "missing");
        let cfg = client(ca.roots(), Versions::Both, &[]);
        let tls = connect(&cfg, listener, Some("pp.test")).await;
        assert!(tls.is_err(), "no handshake without a header");
        assert_eventually!(
            counted(&proxy, "error", "missing") == before + 1.0,
            "a bare ClientHello counted"
        );
    }
    // Other connections were never disturbed.
    let header = v1("PROXY TCP4 203.0.113.7 10.0.0.1 4711 80\r\n");
    let (s, h) = get_over(
        connect_with(proxy.addr, &header, Delivery::Apart).await,
        "pp.test",
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-seen-h-x-real-ip"], "203.0.113.7");
    let (s, _) = get_over_tls(proxy.https, &header, Delivery::Together, &ca, "pp.test").await;
    assert_eq!(s, StatusCode::OK);
}

/// The paused clock moves to the next timer whenever every task waits: a
/// stalled header meets its timeout (5 s by default) without real waiting.
#[tokio::test(start_paused = true)]
async fn a_stalled_header_times_out_and_is_counted() {
    let (_ca, _up, proxy) = proxy_protocol_proxy(|_| {}).await;
    for listener in [proxy.addr, proxy.https] {
        let before = counted(&proxy, "error", "timeout");
        let mut s = TcpStream::connect(listener).await.unwrap();
        s.write_all(b"PROXY TCP4 203.0.113.7 ").await.unwrap();
        let answer = read_until_closed(&mut s)
            .await
            .expect("closed by the header timeout, before the test's own");
        assert!(answer.is_empty());
        assert_eq!(counted(&proxy, "error", "timeout"), before + 1.0);
    }
}
