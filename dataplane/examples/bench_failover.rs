//! `make bench` failover scenario: a client load through Portico's
//! dataplane to three upstream pods, one of which is killed (listener and
//! every connection closed) partway through. Prints, per configuration,
//! the client error rate and how long recovery took:
//!
//! - *off dead pod*: from the kill to the last attempt Portico sent to the
//!   dead pod (retries included);
//! - *last error*: from the kill to the last request a client saw fail;
//! - *detected*: from the kill to the active check marking it unhealthy.
//!
//! Figures are measured and reported, never asserted. Everything runs in
//! one process on loopback, so the numbers are about Portico's behaviour,
//! not network latency.
//!
//! Usage: `bench_failover [SECONDS [CLIENTS]]` (default 10 s, 16 clients;
//! the kill comes at a fifth of the run).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_dataplane::model::{
    Action, Backend, EndpointPolicy, Forward, HealthCheck, Probe, RetryOn, RetryPolicy, Route,
    RouteConfig, Rule,
};
use portico_dataplane::{AccessLogSink, Dataplane, DataplaneConfig};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

type Error = Box<dyn std::error::Error + Send + Sync>;

#[global_allocator]
static GLOBAL: portico_alloc::Mimalloc = portico_alloc::Mimalloc;

struct Scenario {
    name: &'static str,
    active_checks: bool,
    passive: bool,
    retries: bool,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "checks + ejection + retries (defaults)",
        active_checks: true,
        passive: true,
        retries: true,
    },
    Scenario {
        name: "checks + ejection, retries off",
        active_checks: true,
        passive: true,
        retries: false,
    },
    Scenario {
        name: "ejection + retries, no checks",
        active_checks: false,
        passive: true,
        retries: true,
    },
    Scenario {
        name: "checks only (no ejection, no retries)",
        active_checks: true,
        passive: false,
        retries: false,
    },
];

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let seconds: u64 = args.next().map_or(Ok(10), |s| s.parse())?;
    let clients: usize = args.next().map_or(Ok(16), |s| s.parse())?;
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?
        .block_on(async {
            println!(
                "failover: 3 pods, one killed at {:.1} s of {seconds} s, {clients} keep-alive clients; \
                 health checks every 1 s (timeout 500 ms, 3 failures to flip)",
                seconds as f64 / 5.0
            );
            println!(
                "{:<38} {:>9} {:>7} {:>10} {:>12} {:>11} {:>10}",
                "configuration", "requests", "errors", "error rate", "off dead pod", "last error", "detected"
            );
            for s in &SCENARIOS {
                let r = run(s, Duration::from_secs(seconds), clients).await?;
                println!(
                    "{:<38} {:>9} {:>7} {:>9.3}% {:>12} {:>11} {:>10}",
                    s.name,
                    r.requests,
                    r.errors,
                    100.0 * r.errors as f64 / r.requests.max(1) as f64,
                    ms(r.off_dead_pod),
                    ms(r.last_error),
                    ms(r.detected),
                );
            }
            Ok(())
        })
}

fn ms(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".into(), |d| format!("{} ms", d.as_millis()))
}

struct Report {
    requests: u64,
    errors: u64,
    off_dead_pod: Option<Duration>,
    last_error: Option<Duration>,
    detected: Option<Duration>,
}

async fn run(s: &Scenario, total: Duration, clients: usize) -> Result<Report, Error> {
    let mut pods = Vec::new();
    for _ in 0..3 {
        pods.push(Pod::start().await?);
    }
    let mut policy = EndpointPolicy::default();
    if !s.passive {
        policy.outlier.consecutive_5xx = 0;
        policy.outlier.consecutive_errors = 0;
    }
    if s.active_checks {
        policy.health_check = Some(HealthCheck {
            probe: Probe::Http {
                path: "/healthz".into(),
            },
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            ..HealthCheck::default()
        });
    }
    let retry = if s.retries {
        RetryPolicy::default()
    } else {
        RetryPolicy {
            on: RetryOn::OFF,
            ..RetryPolicy::default()
        }
    };
    let dp = Dataplane::new(DataplaneConfig {
        access_log: AccessLogSink::Disabled,
        ..Default::default()
    })?;
    dp.publish(routes(pods.iter().map(|p| p.addr).collect(), policy, retry));
    let proxy = TcpListener::bind("127.0.0.1:0").await?;
    let admin = TcpListener::bind("127.0.0.1:0").await?;
    let proxy_addr = proxy.local_addr()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = {
        let dp = dp.clone();
        tokio::spawn(async move {
            dp.serve(proxy, admin, async {
                let _ = stop_rx.await;
            })
            .await
        })
    };

    let start = Instant::now();
    let end = start + total;
    let kill_at = start + total / 5;
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    // Micros since start of the last failed request.
    let last_error = Arc::new(AtomicU64::new(0));
    let mut load = JoinSet::new();
    for _ in 0..clients {
        let (requests, errors, last_error) = (requests.clone(), errors.clone(), last_error.clone());
        load.spawn(async move {
            let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
            while Instant::now() < end {
                let req = Request::get(format!("http://{proxy_addr}/"))
                    .header("host", "bench.test")
                    .body(Empty::new())
                    .expect("valid request");
                let ok = match client.request(req).await {
                    Ok(rsp) => {
                        let ok = rsp.status().is_success();
                        ok && rsp.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                };
                requests.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                    last_error.fetch_max(start.elapsed().as_micros() as u64, Ordering::Relaxed);
                }
            }
        });
    }

    // Watch the dead pod: when attempts to it stop, when a check says so.
    tokio::time::sleep_until(kill_at.into()).await;
    let dead = pods[0].addr;
    pods[0].stop().await;
    let killed = Instant::now();
    let mut attempts = None;
    let mut off_dead_pod = None;
    let mut detected = None;
    while Instant::now() < end {
        if let Some(r) = dp.endpoint_health().into_iter().find(|e| e.address == dead) {
            if attempts != Some(r.requests) {
                attempts = Some(r.requests);
                off_dead_pod = Some(killed.elapsed());
            }
            if detected.is_none() && !r.active_healthy {
                detected = Some(killed.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    while load.join_next().await.is_some() {}
    let _ = stop_tx.send(());
    let _ = serving.await;
    let last = last_error.load(Ordering::Relaxed);
    let kill_offset = killed.duration_since(start);
    Ok(Report {
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        off_dead_pod,
        last_error: (last > 0).then(|| Duration::from_micros(last).saturating_sub(kill_offset)),
        detected,
    })
}

fn routes(endpoints: Vec<SocketAddr>, policy: EndpointPolicy, retry: RetryPolicy) -> RouteConfig {
    let backend = Backend {
        policy: policy.into(),
        ..Backend::new("bench/web:80", endpoints)
    };
    let forward = Forward {
        retry,
        ..Forward::to(vec![backend])
    };
    let rule = Rule::new(Action::Forward(forward));
    RouteConfig::new(vec![Route::new("bench", vec![], vec![rule])])
}

/// An upstream that can be killed: listener and connections closed.
struct Pod {
    addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
}

impl Pod {
    async fn start() -> Result<Self, Error> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let server = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                conns.spawn(async move {
                    let svc = service_fn(|_req: Request<Incoming>| async {
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, server })
    }

    async fn stop(&self) {
        self.server.abort();
        while !self.server.is_finished() {
            tokio::task::yield_now().await;
        }
    }
}
