//! Real upstream HTTP servers, and a plain HTTP client.
//!
//! The API server rejects loopback addresses in EndpointSlices, so
//! upstreams listen (port 0) in this process's own network namespace,
//! reached through a veth on 198.18.0.0/15: see [`crate::netns`].

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::task::JoinHandle;

use crate::netns::UpstreamNetns;

/// Answers every request with `<name> <path>`; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Upstream {
    pub async fn start(name: &str) -> anyhow::Result<Self> {
        let listener = UpstreamNetns::get()?.bind()?;
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

/// GET over plain HTTP; the body as text whatever the status.
pub async fn plain_get(uri: &http::Uri) -> anyhow::Result<String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let resp = client.get(uri.clone()).await?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// The testkit's gRPC `Echo` service (every call shape) over h2c, listening
/// where the HTTP upstreams do; it runs until the test's runtime ends.
pub async fn grpc_upstream() -> anyhow::Result<SocketAddr> {
    let listener = UpstreamNetns::get()?.bind()?;
    let addr = listener.local_addr()?;
    portico_testkit::serve_grpc_upstream(listener);
    Ok(addr)
}
