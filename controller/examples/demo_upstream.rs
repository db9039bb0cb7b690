//! The demo upstream `make run` starts: answers every request with a short
//! text describing what it received, so the proxy's work is visible.
//!
//! Usage: `demo_upstream ADDR` (default `127.0.0.1:9090`).

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".into())
        .parse()?;
    let listener = TcpListener::bind(addr).await?;
    println!("demo upstream listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let _ = auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service_fn(answer))
                .await;
        });
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut body = String::from("Hello from the Portico demo upstream.\n\n");
    let _ = writeln!(body, "{} {} {:?}", req.method(), req.uri(), req.version());
    for (name, value) in req.headers() {
        let _ = writeln!(
            body,
            "{name}: {}",
            String::from_utf8_lossy(value.as_bytes())
        );
    }
    Ok(Response::new(Full::new(Bytes::from(body))))
}
