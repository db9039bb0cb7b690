//! The gRPC part of `make bench` (driven by `bench/grpc.sh`): unary gRPC
//! calls straight to a tonic upstream and through Portico, and gRPC-Web
//! unary calls through Portico's bridge, each measured by the same load
//! client, so the ratios say what the proxy costs.
//!
//! Three roles, one per process so the script can pin each to a core:
//!
//! - `bench_grpc upstream ADDR`: the `portico.test.Echo` service over h2c,
//!   on one thread.
//! - `bench_grpc proxy LISTEN UPSTREAM`: Portico's dataplane on one thread
//!   (as `bench_proxy`), one route to UPSTREAM over h2c with the gRPC-Web
//!   bridge on, access log on (production defaults).
//! - `bench_grpc load TARGET MODE SECONDS CONCURRENCY`: MODE `grpc` (tonic
//!   client, one HTTP/2 connection, CONCURRENCY calls in flight),
//!   `grpc-stream` (the same connection, CONCURRENCY long-lived `Bidi`
//!   streams, each sending a message and waiting for its echo: messages
//!   over streams, not stream setups) or `grpc-web` (HTTP/1.1, CONCURRENCY
//!   keep-alive connections, binary gRPC-Web). Prints one JSON line:
//!   calls (messages) per second, p50 and p99 in ms, errors.
//! - `bench_grpc calls TARGET MODE COUNT CONCURRENCY`: the same, but
//!   exactly COUNT calls (messages) and then stop, for counting the work
//!   per call (`bench/instructions.sh`, `BENCH_TARGETS=grpc`); exits with
//!   an error unless every one succeeded.
//!
//! Every call must succeed with status OK; failures are counted and
//! reported, never hidden.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portico_dataplane::model::{
    Action, Backend, Forward, GrpcWeb, Protocol, Route, RouteConfig, Rule,
};
use portico_dataplane::{Dataplane, DataplaneConfig};
use portico_testkit::{EchoClient, EchoRequest};
use tokio::net::TcpListener;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[global_allocator]
static GLOBAL: portico_alloc::Mimalloc = portico_alloc::Mimalloc;

const USAGE: &str = "usage: bench_grpc upstream ADDR | proxy LISTEN UPSTREAM | load TARGET grpc|grpc-stream|grpc-web SECONDS CONCURRENCY | calls TARGET grpc|grpc-stream|grpc-web COUNT CONCURRENCY";

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match args.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["upstream", addr] => rt.block_on(upstream(addr.parse()?)),
        ["proxy", listen, upstream] => rt.block_on(proxy(listen.parse()?, upstream.parse()?)),
        ["load", target, mode, seconds, conc] => rt.block_on(load(
            target.parse()?,
            mode,
            Until::Elapsed(Duration::from_secs(seconds.parse()?)),
            conc.parse()?,
        )),
        ["calls", target, mode, count, conc] => rt.block_on(load(
            target.parse()?,
            mode,
            Until::Count(count.parse()?),
            conc.parse()?,
        )),
        _ => Err(USAGE.into()),
    }
}

async fn upstream(addr: SocketAddr) -> Result<(), Error> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("bench_grpc: upstream {}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(portico_testkit::EchoServer::new(
            portico_testkit::EchoService,
        ))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}

async fn proxy(listen: SocketAddr, upstream: SocketAddr) -> Result<(), Error> {
    let proxy_listener = TcpListener::bind(listen).await?;
    let admin_listener = TcpListener::bind("127.0.0.1:0").await?;
    eprintln!("bench_grpc: proxy {}", proxy_listener.local_addr()?);
    let dp = Dataplane::new(DataplaneConfig::default())?;
    let backend = Backend {
        protocol: Protocol::H2c,
        ..Backend::new("echo", vec![upstream])
    };
    let mut rule = Rule::new(Action::Forward(Forward::to(vec![backend])));
    rule.set_body_limit(None);
    rule.grpc.web = Some(GrpcWeb::default());
    let report = dp.publish(RouteConfig::new(vec![Route::new(
        "bench-grpc",
        vec![],
        vec![rule],
    )]));
    if !report.errors.is_empty() {
        return Err(format!("route rejected: {:?}", report.errors).into());
    }
    dp.serve(proxy_listener, admin_listener, std::future::pending())
        .await;
    Ok(())
}

fn request() -> EchoRequest {
    EchoRequest {
        message: "bench".into(),
        ..Default::default()
    }
}

/// When a load run ends.
#[derive(Clone, Copy)]
enum Until {
    /// After this long.
    Elapsed(Duration),
    /// After this many calls were started.
    Count(u64),
}

/// Counts shared by the client tasks.
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
    stop: AtomicBool,
    /// Calls still to start, when the run is a fixed count.
    left: Option<AtomicU64>,
}

impl Tally {
    /// Whether a task may start another call.
    fn next(&self) -> bool {
        if self.stop.load(Ordering::Relaxed) {
            return false;
        }
        self.left.as_ref().is_none_or(|left| {
            left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                .is_ok()
        })
    }
}

async fn load(
    target: SocketAddr,
    mode: &str,
    until: Until,
    concurrency: usize,
) -> Result<(), Error> {
    let tally = Arc::new(Tally {
        ok: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        stop: AtomicBool::new(false),
        left: match until {
            Until::Elapsed(_) => None,
            Until::Count(n) => Some(AtomicU64::new(n)),
        },
    });
    let start = Instant::now();
    let mut tasks = Vec::new();
    match mode {
        "grpc" => {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))?
                .connect()
                .await?;
            for _ in 0..concurrency {
                let mut client = EchoClient::new(channel.clone());
                let tally = Arc::clone(&tally);
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while tally.next() {
                        let t = Instant::now();
                        match client.unary(request()).await {
                            Ok(_) => {
                                lat.push(t.elapsed().as_micros() as u32);
                                tally.ok.fetch_add(1, Ordering::Relaxed);
                            }
                            Err(_) => {
                                tally.errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                    lat
                }));
            }
        }
        "grpc-stream" => {
            let channel = tonic::transport::Endpoint::from_shared(format!("http://{target}"))?
                .connect()
                .await?;
            for _ in 0..concurrency {
                let mut client = EchoClient::new(channel.clone());
                let tally = Arc::clone(&tally);
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    let (tx, rx) = tokio::sync::mpsc::channel(1);
                    let mut replies = match client
                        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
                        .await
                    {
                        Ok(rsp) => rsp.into_inner(),
                        Err(_) => {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            return lat;
                        }
                    };
                    while tally.next() {
                        let t = Instant::now();
                        let ok = tx.send(request()).await.is_ok()
                            && matches!(replies.message().await, Ok(Some(_)));
                        if ok {
                            lat.push(t.elapsed().as_micros() as u32);
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            // The stream is broken: count it and stop this task.
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                            break;
                        }
                    }
                    lat
                }));
            }
        }
        "grpc-web" => {
            let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
            let body = Bytes::from(portico_testkit::frame(&request()));
            let uri: http::Uri = format!("http://{target}/portico.test.Echo/Unary").parse()?;
            for _ in 0..concurrency {
                let client = client.clone();
                let tally = Arc::clone(&tally);
                let (uri, body) = (uri.clone(), body.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    while tally.next() {
                        let t = Instant::now();
                        let req = http::Request::post(uri.clone())
                            .header("content-type", "application/grpc-web+proto")
                            .header("x-grpc-web", "1")
                            .body(Full::new(body.clone()))
                            .expect("request");
                        let ok = match client.request(req).await {
                            Ok(rsp) if rsp.status() == 200 => match rsp.collect().await {
                                // The trailer frame carries the status.
                                Ok(b) => ends_ok(&b.to_bytes()),
                                Err(_) => false,
                            },
                            _ => false,
                        };
                        if ok {
                            lat.push(t.elapsed().as_micros() as u32);
                            tally.ok.fetch_add(1, Ordering::Relaxed);
                        } else {
                            tally.errors.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    lat
                }));
            }
        }
        _ => return Err(USAGE.into()),
    }
    // A timed run's time ends at the stop (as before the counted mode); a
    // counted run's when its last call does.
    let mut elapsed = None;
    if let Until::Elapsed(duration) = until {
        tokio::time::sleep(duration).await;
        tally.stop.store(true, Ordering::Relaxed);
        elapsed = Some(start.elapsed().as_secs_f64());
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await?);
    }
    let elapsed = elapsed.unwrap_or_else(|| start.elapsed().as_secs_f64());
    lat.sort_unstable();
    let pct = |p: f64| -> f64 {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .map_or(0.0, |us| f64::from(*us) / 1e3)
    };
    println!(
        "{{\"mode\":\"{mode}\",\"target\":\"{target}\",\"calls_per_s\":{:.0},\"p50_ms\":{:.3},\"p99_ms\":{:.3},\"ok\":{},\"errors\":{}}}",
        tally.ok.load(Ordering::Relaxed) as f64 / elapsed,
        pct(0.50),
        pct(0.99),
        tally.ok.load(Ordering::Relaxed),
        tally.errors.load(Ordering::Relaxed),
    );
    if matches!(until, Until::Count(_)) && tally.errors.load(Ordering::Relaxed) > 0 {
        return Err("some calls failed".into());
    }
    Ok(())
}

/// Whether a gRPC-Web body ends with a trailer frame saying `grpc-status: 0`.
fn ends_ok(body: &[u8]) -> bool {
    let mut rest = body;
    while rest.len() >= 5 {
        let len = u32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(payload) = rest.get(5..5 + len) else {
            return false;
        };
        if rest[0] & 0x80 != 0 {
            return payload.starts_with(b"grpc-status: 0\r\n");
        }
        rest = &rest[5 + len..];
    }
    false
}
