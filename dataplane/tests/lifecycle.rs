//! Publication, admin endpoints and shutdown, over real sockets.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderName, HeaderValue, Request, Response, StatusCode};
use portico_dataplane::model::*;
use portico_dataplane::{AccessLogSink, Dataplane, DataplaneConfig};
use support::*;

/// A table whose one rule sends to `upstream` and stamps responses with the
/// generation it was built for.
fn generation_table(generation: u64, upstream: std::net::SocketAddr) -> RouteConfig {
    let mut rule = forward_rule(vec![], vec![backend("b", &[upstream])]);
    rule.chain.push(Filter::ResponseHeaders(HeaderModifier {
        set: vec![(
            HeaderName::from_static("x-table"),
            HeaderValue::from(generation),
        )],
        ..HeaderModifier::default()
    }));
    config(vec![route("r", &["swap.test"], vec![rule])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swapping_tables_under_load_fails_nothing_and_never_mixes() {
    let even = Upstream::echo("even").await;
    let odd = Upstream::echo("odd").await;
    let proxy = Proxy::start(generation_table(0, even.addr)).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let served = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for _ in 0..16 {
        let stop = Arc::clone(&stop);
        let served = Arc::clone(&served);
        let addr = proxy.addr;
        clients.push(tokio::spawn(async move {
            let c = h1_client();
            let mut failures = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let req = Request::get(format!("http://{addr}/"))
                    .header("host", "swap.test")
                    .body(empty())
                    .unwrap();
                let (status, h, body) = send(&c, req).await;
                served.fetch_add(1, Ordering::Relaxed);
                let table: u64 = h
                    .get("x-table")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(u64::MAX);
                let want = if table.is_multiple_of(2) {
                    "even"
                } else {
                    "odd"
                };
                if status != StatusCode::OK || body != want {
                    failures.push(format!("{status} table={table} body={body}"));
                }
            }
            failures
        }));
    }
    // Let the load get going, then swap hundreds of times while it runs.
    assert_eventually!(served.load(Ordering::Relaxed) > 50, "load started");
    for generation in 1..=300u64 {
        let upstream = if generation.is_multiple_of(2) {
            even.addr
        } else {
            odd.addr
        };
        proxy.dp.publish(generation_table(generation, upstream));
        tokio::task::yield_now().await;
    }
    let before = served.load(Ordering::Relaxed);
    assert_eventually!(
        served.load(Ordering::Relaxed) > before + 50,
        "load continued"
    );
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert_eq!(proxy.dp.current().generation(), 301);
    eprintln!(
        "served {} requests across 300 swaps",
        served.load(Ordering::Relaxed)
    );
}

#[tokio::test]
async fn readiness_follows_publication_and_drain() {
    let up = Upstream::echo("a").await;
    let log = LogCapture::default();
    let dp = Dataplane::new(DataplaneConfig {
        access_log: AccessLogSink::Writer(Box::new(log.clone())),
        ..Default::default()
    })
    .unwrap();
    let mut proxy = Proxy::serve(dp.clone(), log).await;
    let c = h1_client();
    let admin_addr = proxy.admin;
    let admin = move |path: &str| format!("http://{admin_addr}{path}");
    let get_admin = |url: String| {
        let c = c.clone();
        async move { send(&c, Request::get(url).body(empty()).unwrap()).await }
    };

    let (s, _, _) = get_admin(admin("/healthz")).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, body) = get_admin(admin("/readyz")).await;
    assert_eq!(
        s,
        StatusCode::SERVICE_UNAVAILABLE,
        "not ready before a table: {body}"
    );

    dp.publish(simple("ready.test", up.addr));
    let (s, _, _) = get_admin(admin("/readyz")).await;
    assert_eq!(s, StatusCode::OK);

    let (_, _, _) = get(&c, proxy.addr, "ready.test", "/").await;
    let (s, h, metrics) = get_admin(admin("/metrics")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().contains("openmetrics"));
    for needle in [
        "portico_requests_total{route=\"r\",status_class=\"2xx\"} 1",
        "portico_request_duration_seconds_count{route=\"r\"} 1",
        "portico_route_table_generation 1",
        "portico_route_table_last_swap_timestamp_seconds",
        "portico_open_connections",
        "portico_upstream_connect_errors_total 0",
        "portico_access_log_dropped_total 0",
    ] {
        assert!(metrics.contains(needle), "missing {needle}:\n{metrics}");
    }
    let (s, _, routes) = get(&c, proxy.debug, "debug", "/debug/routes").await;
    assert_eq!(s, StatusCode::OK);
    let doc: serde_json::Value = serde_json::from_str(&routes).unwrap();
    assert_eq!(doc["generation"], 1);
    assert_eq!(doc["config"]["routes"][0]["id"], "r");
    assert_eq!(doc["config"]["routes"][0]["hostnames"][0], "ready.test");
    // Each rule's filter chain, in running order: here only the body limit.
    assert_eq!(
        doc["filters"],
        serde_json::json!([{"route": "r", "rules": [[{"body_limit": 1048576}]]}]),
        "{routes}"
    );

    // Drain: readiness fails while the admin listener still answers. Keep a
    // slow request in flight so the drain has something to wait for.
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = Arc::new(tokio::sync::Mutex::new(Some(released)));
    let arrived = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let arrived_up = Arc::clone(&arrived);
    let slow = Upstream::start(move |_req| {
        let released = Arc::clone(&released);
        arrived_up.store(true, Ordering::SeqCst);
        async move {
            if let Some(rx) = released.lock().await.take() {
                let _ = rx.await;
            }
            Response::new(full("finished"))
        }
    })
    .await;
    dp.publish(simple("ready.test", slow.addr));
    let in_flight = {
        let c = c.clone();
        let addr = proxy.addr;
        tokio::spawn(async move { get(&c, addr, "ready.test", "/").await })
    };
    assert_eventually!(arrived.load(Ordering::SeqCst), "slow request in flight");
    proxy.begin_shutdown();
    assert_eventually!(
        get_admin(admin("/readyz")).await.0 == StatusCode::SERVICE_UNAVAILABLE,
        "readiness fails while draining"
    );
    // The listener closes right after readiness flips, not at the same instant.
    assert_eventually!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "no longer accepting"
    );
    // Serving has not finished while the request is in flight: the admin
    // listener, which stops only once serving ends, still answers, and
    // the serve task is still running after that round trip.
    let still_up = c
        .request(Request::get(admin("/readyz")).body(empty()).unwrap())
        .await;
    assert!(
        still_up.is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE),
        "admin still answers while a request is in flight"
    );
    assert!(
        !proxy.done.as_ref().unwrap().is_finished(),
        "serving finished with a request in flight"
    );
    release.send(()).unwrap();
    let (s, _, body) = in_flight.await.unwrap();
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "finished"),
        "in-flight request finished"
    );
    let drained = proxy.done.take().unwrap().await.unwrap();
    assert!(drained, "drain completed before its deadline");
}

/// The route table and pod addresses are on the debug listener only; the
/// admin listener, reachable from outside the pod, answers 404 for them,
/// and the debug listener serves nothing else.
#[tokio::test]
async fn debug_pages_are_served_on_the_debug_listener_only() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("debug.test", up.addr)).await;
    let c = h1_client();
    for path in ["/debug/routes", "/debug/endpoints"] {
        let (s, _, body) = get(&c, proxy.admin, "admin", path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "admin {path}: {body}");
        assert!(!body.contains(&up.addr.to_string()), "admin {path}: {body}");
        let (s, h, body) = get(&c, proxy.debug, "debug", path).await;
        assert_eq!(s, StatusCode::OK, "debug {path}: {body}");
        assert_eq!(h["content-type"], "application/json");
        assert!(body.contains(&up.addr.to_string()), "debug {path}: {body}");
    }
    for path in ["/healthz", "/readyz", "/metrics"] {
        let (s, _, _) = get(&c, proxy.admin, "admin", path).await;
        assert_eq!(s, StatusCode::OK, "admin {path}");
        let (s, _, _) = get(&c, proxy.debug, "debug", path).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "debug {path}");
    }
}

#[tokio::test]
async fn drain_gives_up_at_its_deadline() {
    let arrived = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let arrived_up = Arc::clone(&arrived);
    let hang = Upstream::start(move |_req| {
        arrived_up.store(true, Ordering::SeqCst);
        async {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            Response::new(empty())
        }
    })
    .await;
    let mut proxy = Proxy::start_with(simple("hang.test", hang.addr), |c| {
        c.drain_timeout = Duration::from_millis(300);
    })
    .await;
    let c = h1_client();
    let addr = proxy.addr;
    let _stuck = tokio::spawn(async move {
        let req = Request::get(format!("http://{addr}/"))
            .header("host", "hang.test")
            .body(empty())
            .unwrap();
        let _ = c.request(req).await;
    });
    assert_eventually!(arrived.load(Ordering::SeqCst), "request in flight");
    proxy.begin_shutdown();
    let drained = tokio::time::timeout(Duration::from_secs(10), proxy.done.take().unwrap())
        .await
        .expect("serve returns after the drain deadline")
        .unwrap();
    assert!(!drained);
}

#[tokio::test]
async fn bad_rules_are_reported_and_the_rest_served() {
    let up = Upstream::echo("a").await;
    let bad = Rule {
        matches: vec![RouteMatch {
            path: PathMatch::RegularExpression("/(unclosed".into()),
            ..Default::default()
        }],
        ..forward_rule(vec![], vec![backend("b", &[up.addr])])
    };
    let good = forward_rule(vec![prefix("/")], vec![backend("b", &[up.addr])]);
    let cfg = config(vec![route("r", &["bad.test"], vec![bad, good])]);
    let proxy = Proxy::start(cfg.clone()).await;
    let report = proxy.dp.publish(cfg);
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(report.errors[0].rule, 0);
    let (s, _, body) = get(&h1_client(), proxy.addr, "bad.test", "/(unclosed").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "a"));
    assert!(
        proxy
            .dp
            .encode_metrics()
            .unwrap()
            .contains("portico_route_table_rejected_rules 1")
    );
}

/// A client that has gone quiet over HTTP/2: the connection preface and an
/// empty SETTINGS frame, then nothing; not even the acknowledgement of the
/// PING that hyper's graceful close waits for (a vanished peer never sends
/// it either).
async fn quiet_h2_client(addr: std::net::SocketAddr) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .await
        .unwrap();
    s
}

/// A connection control tick of 100 ms (a quarter of the header-read
/// timeout), so that closing decisions come quickly.
fn quick_ticks(c: &mut DataplaneConfig) {
    c.listener.header_read_timeout = Duration::from_millis(400);
}

#[tokio::test]
async fn an_idle_http2_client_that_never_answers_is_closed() {
    let up = Upstream::echo("a").await;
    // Idle after 200 ms, ticking every 200 ms.
    let proxy = Proxy::start_with(simple("idle.test", up.addr), |c| {
        c.listener.idle_timeout = Duration::from_millis(200);
    })
    .await;
    let mut quiet = quiet_h2_client(proxy.addr).await;
    assert!(
        read_until_closed(&mut quiet).await.is_ok(),
        "idle HTTP/2 connection closed"
    );
}

#[tokio::test]
async fn a_quiet_http2_client_does_not_hold_up_the_drain() {
    let up = Upstream::echo("a").await;
    let mut proxy = Proxy::start_with(simple("quiet.test", up.addr), |c| {
        quick_ticks(c);
        c.drain_timeout = Duration::from_secs(3600);
    })
    .await;
    let _quiet = quiet_h2_client(proxy.addr).await;
    assert_eventually!(
        sample(
            &proxy.dp.encode_metrics().unwrap(),
            "portico_open_connections"
        ) == Some(1.0),
        "the quiet client is connected"
    );
    proxy.begin_shutdown();
    let drained = tokio::time::timeout(Duration::from_secs(10), proxy.done.take().unwrap())
        .await
        .expect("the drain ends: no request is in flight")
        .unwrap();
    assert!(drained);
}

#[tokio::test]
async fn a_drain_lets_a_streaming_response_finish_however_many_ticks_pass() {
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body_util::BodyExt;
    use hyper::body::Frame;
    type Chunk = Result<Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>;
    let (release, released) = tokio::sync::oneshot::channel::<()>();
    let released = std::sync::Mutex::new(Some(released));
    let up = Upstream::start(move |_req| {
        let released = released.lock().unwrap().take();
        async move {
            let first =
                futures_util::stream::once(async { Chunk::Ok(Frame::data("first".into())) });
            let second = futures_util::stream::once(async move {
                if let Some(rx) = released {
                    let _ = rx.await;
                }
                Chunk::Ok(Frame::data("second".into()))
            });
            Response::new(BodyExt::boxed(http_body_util::StreamBody::new(
                first.chain(second),
            )))
        }
    })
    .await;
    let mut proxy = Proxy::start_with(simple("stream.test", up.addr), quick_ticks).await;
    let req = Request::get(proxy.url("/"))
        .header("host", "stream.test")
        .body(empty())
        .unwrap();
    let mut body = h1_client().request(req).await.unwrap().into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(first, "first");

    proxy.begin_shutdown();
    assert_eventually!(
        tokio::net::TcpStream::connect(proxy.addr).await.is_err(),
        "draining"
    );
    // Deliberately idle for several control ticks: a closing connection
    // whose response is still open must not be dropped at any of them.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The upstream is gone too if the connection was dropped.
    let _ = release.send(());
    let rest = body
        .collect()
        .await
        .expect("the response finishes")
        .to_bytes();
    assert_eq!(rest, "second");
    let drained = proxy.done.take().unwrap().await.unwrap();
    assert!(drained);
}
