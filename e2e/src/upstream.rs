//! Real upstream HTTP servers, and a plain HTTP client.
//!
//! The API server rejects loopback addresses in EndpointSlices, so
//! upstreams listen on this host's own non-loopback address (port 0): the
//! source address of its default route, or `PORTICO_E2E_UPSTREAM_IP`.

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};

use anyhow::Context;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// Answers every request with `<name> <path>`; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind((host_ip()?, 0)).await?;
        let addr = listener.local_addr()?;
        let name: std::sync::Arc<str> = name.into();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let name = name.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let body = format!("{name} {}", req.uri().path());
                        async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Ok(Self { addr, task })
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The address upstreams listen on: see the module docs.
pub fn host_ip() -> anyhow::Result<IpAddr> {
    if let Some(ip) = std::env::var_os("PORTICO_E2E_UPSTREAM_IP") {
        return Ok(ip.to_string_lossy().parse()?);
    }
    // Connecting a UDP socket sends nothing; it only selects the route and
    // so the local address. 203.0.113.1 is TEST-NET-3 (never a real peer).
    let probe = std::net::UdpSocket::bind("0.0.0.0:0")?;
    probe.connect("203.0.113.1:9").context(
        "no default route: set PORTICO_E2E_UPSTREAM_IP to a non-loopback address of this host",
    )?;
    let ip = probe.local_addr()?.ip();
    if ip.is_loopback() || ip.is_unspecified() {
        anyhow::bail!("no non-loopback address ({ip}): set PORTICO_E2E_UPSTREAM_IP");
    }
    Ok(ip)
}

/// GET over plain HTTP; the body as text whatever the status.
pub async fn plain_get(uri: &http::Uri) -> anyhow::Result<String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(uri.clone()).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}
