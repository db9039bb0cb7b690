//! The upstream for `bench/load.sh`: answers every request with 200 and a
//! fixed 13-byte body, over HTTP/1.1 with keep-alive, on one thread.
//! Two exceptions, for the 1 MiB body scenario of `make bench-report`:
//! `GET /1m` answers a 1 MiB body, and a request with a body (a 1 MiB
//! `POST`) has it read to the end and dropped before the answer, as an
//! application would, so the proxy streams the whole upload.
//!
//! The same process sits behind every proxy under comparison, so it must cost
//! the same per request whoever calls it and stay far from being the
//! bottleneck: no routing, no logging, a static body.
//!
//! Usage: `bench_upstream ADDR` (e.g. `127.0.0.1:0`). The first line on
//! stdout is the bound address, for scripts to read.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const BODY: &[u8] = b"hello, world\n";
const LARGE_PATH: &str = "/1m";
const LARGE_LEN: usize = 1 << 20;

type Error = Box<dyn std::error::Error + Send + Sync>;

fn main() -> Result<(), Error> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .ok_or("usage: bench_upstream ADDR (e.g. 127.0.0.1:0)")?
        .parse()?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> Result<(), Error> {
    let listener = TcpListener::bind(addr).await?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", listener.local_addr()?)?;
    stdout.flush()?;
    drop(stdout);

    // Made once; each answer clones the handle, not the bytes.
    let large = Bytes::from(vec![b'x'; LARGE_LEN]);
    let mut http = http1::Builder::new();
    http.keep_alive(true);
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(conn) => conn,
            // Out of descriptors and the like: keep serving the others.
            Err(error) => {
                eprintln!("accept: {error}");
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let large = large.clone();
        let conn = http.serve_connection(
            TokioIo::new(stream),
            service_fn(move |req| answer(req, large.clone())),
        );
        tokio::spawn(async move {
            // Peers resetting connections at the end of a run is expected.
            let _ = conn.await;
        });
    }
}

async fn answer(req: Request<Incoming>, large: Bytes) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = if req.uri().path() == LARGE_PATH {
        large
    } else {
        Bytes::from_static(BODY)
    };
    // Read frame by frame, keeping none: the upload's cost is the proxy's
    // and the socket's, not a 1 MiB buffer here.
    let mut incoming = req.into_body();
    while let Some(frame) = incoming.frame().await {
        if frame.is_err() {
            break;
        }
    }
    let mut rsp = Response::new(Full::new(body));
    rsp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    Ok(rsp)
}
