//! Active health checks against real upstreams, on tokio's paused clock:
//! virtual time moves only when a test advances it, in small steps, each
//! after every probe that was due has finished (so bounds on detection
//! time are exact, and no wall-clock time is asserted).

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use portico_dataplane::Dataplane;
use portico_dataplane::EndpointReport;
use portico_dataplane::model::{
    Action, Backend, HealthCheck, Probe, Protocol, RouteConfig, StatusRange, UpstreamTls,
};
use support::*;
use tokio::time::Instant;

const INTERVAL: Duration = Duration::from_secs(10);
const STEP: Duration = Duration::from_millis(250);

fn http_check() -> HealthCheck {
    HealthCheck {
        probe: Probe::Http {
            path: "/healthz".into(),
        },
        ..HealthCheck::default()
    }
}

fn checked(name: &str, pods: &[&Pod], check: HealthCheck) -> Backend {
    let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
    let mut b = backend(name, &addrs);
    b.policy_mut().health_check = Some(check);
    b
}

fn one_route(b: Backend) -> RouteConfig {
    config(vec![route(
        "r",
        &["web.test"],
        vec![forward_rule(vec![], vec![b])],
    )])
}

/// Waits (yielding, never advancing the clock) until no probe is running
/// or due.
async fn settle(dp: &Dataplane) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let busy = dp
            .endpoint_health()
            .iter()
            .flat_map(|e| &e.checks)
            .any(|c| c.next_probe_in_ms.is_none_or(|ms| ms == 0));
        if !busy {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "health checks never settled: {:#?}",
            dp.endpoint_health()
        );
        tokio::task::yield_now().await;
    }
}

/// Lets `d` of virtual time pass, probing as it goes.
async fn pass(dp: &Dataplane, d: Duration) {
    let end = Instant::now() + d;
    settle(dp).await;
    while Instant::now() < end {
        tokio::time::advance(STEP.min(end - Instant::now())).await;
        settle(dp).await;
    }
}

/// Passes time until `cond` holds for `addr`'s report; returns how long
/// that took. Gives up after `limit`.
async fn until(
    dp: &Dataplane,
    addr: SocketAddr,
    limit: Duration,
    cond: impl Fn(&EndpointReport) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if cond(&report(dp, addr)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() <= limit,
            "not within {limit:?}: {:#?}",
            report(dp, addr)
        );
        pass(dp, STEP).await;
    }
}

fn report(dp: &Dataplane, addr: SocketAddr) -> EndpointReport {
    dp.endpoint_health()
        .into_iter()
        .find(|e| e.address == addr)
        .expect("endpoint in the table")
}

fn requests_to(dp: &Dataplane, addr: SocketAddr) -> u64 {
    report(dp, addr).requests
}

async fn all_ok(proxy: &Proxy, n: usize) {
    // A fresh client: virtual hours may have passed since the last one.
    let client = h1_client();
    for i in 0..n {
        let (status, _, body) = get(&client, proxy.addr, "web.test", "/").await;
        assert_eq!(status, StatusCode::OK, "request {i}: {body}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_killed_endpoint_stops_receiving_requests_within_the_bound() {
    let _frozen = FrozenClock::new();
    let (a, b, c) = (
        Pod::start("a").await,
        Pod::start("b").await,
        Pod::start("c").await,
    );
    let check = http_check();
    let proxy = Proxy::start(one_route(checked("web", &[&a, &b, &c], check.clone()))).await;
    let dp = &proxy.dp;
    pass(dp, INTERVAL).await;
    assert!(a.health_hits() >= 1, "every endpoint was probed");
    all_ok(&proxy, 6).await;
    assert_eq!(a.hits(), 2);

    a.stop().await;
    let took = until(dp, a.addr, Duration::from_secs(60), |r| !r.active_healthy).await;
    // Found within unhealthy-threshold intervals plus one (the wait for
    // the first failing probe), and not before three probes failed.
    let bound = INTERVAL * check.unhealthy_threshold + INTERVAL;
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    assert!(took >= INTERVAL.mul_f64(0.9) * 2, "flipped early: {took:?}");

    let text = dp.encode_metrics().unwrap();
    assert!(
        text.contains(&format!(
            "portico_upstream_endpoint_healthy{{backend=\"web\",endpoint=\"{}\"}} 0",
            a.addr
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "portico_upstream_health_checks_total{{endpoint=\"{}\",result=\"fail\"}} 3",
            a.addr
        )),
        "{text}"
    );
    assert!(text.contains("portico_upstream_health_check_duration_seconds_count"));

    // From then on no request goes there, and none fails.
    let before = requests_to(dp, a.addr);
    all_ok(&proxy, 30).await;
    assert_eq!(requests_to(dp, a.addr), before);
    assert_eq!(b.hits() + c.hits(), 4 + 30);
}

#[tokio::test(start_paused = true)]
async fn a_restarted_endpoint_comes_back_after_healthy_threshold_probes() {
    let _frozen = FrozenClock::new();
    let (a, b) = (Pod::start("a").await, Pod::start("b").await);
    let check = http_check();
    let proxy = Proxy::start(one_route(checked("web", &[&a, &b], check.clone()))).await;
    let dp = &proxy.dp;
    a.stop().await;
    until(dp, a.addr, Duration::from_secs(60), |r| !r.active_healthy).await;
    all_ok(&proxy, 10).await;
    assert_eq!(b.hits(), 10);

    a.restart().await;
    let took = until(dp, a.addr, Duration::from_secs(60), |r| r.active_healthy).await;
    let bound = INTERVAL * check.healthy_threshold + INTERVAL;
    assert!(took <= bound, "took {took:?}, bound {bound:?}");
    assert!(took >= INTERVAL.mul_f64(0.9), "flipped early: {took:?}");
    all_ok(&proxy, 10).await;
    assert_eq!(a.hits(), 5);
}

#[tokio::test(start_paused = true)]
async fn one_checker_per_endpoint_shared_by_100_routes() {
    let _frozen = FrozenClock::new();
    let pods = [
        Pod::start("a").await,
        Pod::start("b").await,
        Pod::start("c").await,
    ];
    let refs: Vec<&Pod> = pods.iter().collect();
    let hosts: Vec<String> = (0..100).map(|i| format!("h{i}.test")).collect();
    let routes = hosts
        .iter()
        .map(|h| {
            route(
                h,
                &[h.as_str()],
                vec![forward_rule(
                    vec![],
                    vec![checked("web", &refs, http_check())],
                )],
            )
        })
        .collect();
    let proxy = Proxy::start(config(routes)).await;
    let dp = &proxy.dp;
    assert_eq!(dp.live_health_checks(), 3);

    pass(dp, INTERVAL * 5).await;
    for p in &pods {
        // The first probe within one interval, then one per interval (less
        // up to a tenth): five or six in five intervals, not hundreds.
        let n = p.health_hits();
        assert!((5..=6).contains(&n), "{}: {n} probes", p.name);
    }

    // Once no table uses the endpoints, their checks stop.
    proxy.dp.publish(RouteConfig::default());
    assert_eq!(dp.live_health_checks(), 0);
    let before: Vec<u64> = pods.iter().map(Pod::health_hits).collect();
    for _ in 0..40 {
        tokio::time::advance(INTERVAL / 4).await;
        tokio::task::yield_now().await;
    }
    let after: Vec<u64> = pods.iter().map(Pod::health_hits).collect();
    assert_eq!(before, after);
}

#[tokio::test(start_paused = true)]
async fn active_health_survives_a_table_swap() {
    let _frozen = FrozenClock::new();
    let (a, b) = (Pod::start("a").await, Pod::start("b").await);
    let backend = checked("web", &[&a, &b], http_check());
    let proxy = Proxy::start(one_route(backend.clone())).await;
    let dp = &proxy.dp;
    a.set_health_status(503);
    until(dp, a.addr, Duration::from_secs(60), |r| !r.active_healthy).await;
    let probes = report(dp, a.addr).checks[0].probes;

    // A new table with the same backend and one more route: the same
    // check carries on, verdict and count included.
    let mut cfg = one_route(backend);
    cfg.routes.push(
        route(
            "other",
            &["other.test"],
            vec![forward_rule(vec![], vec![backend_of_b(&b)])],
        )
        .into(),
    );
    dp.publish(cfg);
    let r = report(dp, a.addr);
    assert!(!r.active_healthy && !r.eligible, "{r:#?}");
    assert_eq!(r.checks[0].probes, probes);
    assert_eq!(dp.live_health_checks(), 2);
    all_ok(&proxy, 10).await;
    assert_eq!(a.hits(), 0);
}

fn backend_of_b(b: &Pod) -> Backend {
    backend("other", &[b.addr])
}

#[tokio::test(start_paused = true)]
async fn every_endpoint_unhealthy_is_panic_mode_not_an_outage() {
    let _frozen = FrozenClock::new();
    let (a, b, c) = (
        Pod::start("a").await,
        Pod::start("b").await,
        Pod::start("c").await,
    );
    for p in [&a, &b, &c] {
        p.set_health_status(500);
    }
    let proxy = Proxy::start(one_route(checked("web", &[&a, &b, &c], http_check()))).await;
    let dp = &proxy.dp;
    for p in [&a, &b, &c] {
        until(dp, p.addr, Duration::from_secs(60), |r| !r.active_healthy).await;
    }
    // The checks say all are down, yet the pods answer: requests are spread
    // over every ready endpoint rather than refused.
    all_ok(&proxy, 30).await;
    assert_eq!((a.hits(), b.hits(), c.hits()), (10, 10, 10));
}

#[tokio::test(start_paused = true)]
async fn http_checks_want_an_expected_status_and_tcp_checks_a_connection() {
    let _frozen = FrozenClock::new();
    let pods = [
        Pod::start("http-503").await,
        Pod::start("http-503-expected").await,
        Pod::start("tcp").await,
        Pod::start("tcp-stopped").await,
        Pod::start("other").await,
    ];
    for p in &pods[..3] {
        p.set_health_status(503);
    }
    let expect_5xx = HealthCheck {
        expected_statuses: vec![StatusRange { min: 500, max: 599 }],
        ..http_check()
    };
    let tcp = HealthCheck::default();
    let backends = vec![
        checked("a", &[&pods[0], &pods[4]], http_check()),
        checked("b", &[&pods[1], &pods[4]], expect_5xx),
        checked("c", &[&pods[2], &pods[3], &pods[4]], tcp),
    ];
    let proxy = Proxy::start(config(
        backends
            .into_iter()
            .enumerate()
            .map(|(i, b)| {
                let host = format!("{i}.test");
                route(&host, &[host.as_str()], vec![forward_rule(vec![], vec![b])])
            })
            .collect(),
    ))
    .await;
    let dp = &proxy.dp;
    pods[3].stop().await;
    pass(dp, INTERVAL * 5).await;
    let healthy = |p: &Pod| report(dp, p.addr).active_healthy;
    assert!(!healthy(&pods[0]), "503 is not in 200-399");
    assert!(healthy(&pods[1]), "503 is expected");
    assert!(healthy(&pods[2]), "TCP checks ignore HTTP");
    assert!(!healthy(&pods[3]), "refused");
    assert_eq!(pods[2].health_hits(), 0, "TCP checks send no request");
}

#[tokio::test(start_paused = true)]
async fn grpc_backends_are_checked_with_the_grpc_health_protocol() {
    let _frozen = FrozenClock::new();
    let (a, b) = (Pod::start("a").await, Pod::start("b").await);
    let check = HealthCheck {
        probe: Probe::Grpc {
            service: String::new(),
        },
        ..HealthCheck::default()
    };
    let mut backend = checked("grpc", &[&a, &b], check);
    backend.protocol = Protocol::H2c;
    let proxy = Proxy::start(one_route(backend)).await;
    let dp = &proxy.dp;
    a.set_grpc_serving(false);
    until(dp, a.addr, Duration::from_secs(60), |r| !r.active_healthy).await;
    // b's checker runs on its own schedule: a probe may be in flight (seen
    // by b, not yet counted) when a turns unhealthy; wait until it is not.
    until(dp, b.addr, Duration::from_secs(60), |r| {
        r.checks[0].probes >= 2 && r.checks[0].probes == b.health_hits()
    })
    .await;
    let rb = report(dp, b.addr);
    assert!(rb.active_healthy);
    // Every probe of b was a gRPC health call.
    assert!(rb.checks[0].probes >= 2);
    assert_eq!(b.health_hits(), rb.checks[0].probes);

    a.set_grpc_serving(true);
    until(dp, a.addr, Duration::from_secs(60), |r| r.active_healthy).await;
}

#[tokio::test(start_paused = true)]
async fn checks_of_tls_backends_speak_tls() {
    let _frozen = FrozenClock::new();
    let ca = tls::TestCa::new();
    let tls_up = Upstream::echo_tls("tls", &ca.issue(&["up.test"], 1)).await;
    let plain = Pod::start("plain").await;
    let mut backend = backend("web", &[tls_up.addr, plain.addr]);
    backend.policy_mut().health_check = Some(HealthCheck {
        probe: Probe::Http { path: "/".into() },
        ..HealthCheck::default()
    });
    let mut rule = forward_rule(vec![], vec![backend]);
    if let Action::Forward(f) = &mut rule.action {
        f.upstream_tls = Some(Arc::new(UpstreamTls {
            verify: false,
            server_name: "up.test".into(),
            sni: true,
            ca_pem: String::new(),
            client_cert: None,
        }));
    }
    let proxy = Proxy::start(config(vec![route("r", &["web.test"], vec![rule])])).await;
    let dp = &proxy.dp;
    until(dp, plain.addr, Duration::from_secs(60), |r| {
        !r.active_healthy
    })
    .await;
    until(dp, tls_up.addr, Duration::from_secs(60), |r| {
        r.checks[0].probes >= 3
    })
    .await;
    let r = report(dp, tls_up.addr);
    assert!(r.active_healthy, "{r:#?}");
    assert_eq!(
        plain.health_hits(),
        0,
        "no plaintext request to a TLS backend"
    );
}

#[tokio::test(start_paused = true)]
async fn a_changed_check_starts_afresh() {
    let _frozen = FrozenClock::new();
    let (a, b) = (Pod::start("a").await, Pod::start("b").await);
    let proxy = Proxy::start(one_route(checked("web", &[&a, &b], http_check()))).await;
    let dp = &proxy.dp;
    a.set_health_status(503);
    until(dp, a.addr, Duration::from_secs(60), |r| !r.active_healthy).await;

    // Other check settings are another check: no verdict, no probes yet,
    // and the old one gone with the table that used it.
    let other = HealthCheck {
        interval: INTERVAL * 2,
        ..http_check()
    };
    dp.publish(one_route(checked("web", &[&a, &b], other)));
    let r = report(dp, a.addr);
    assert!(r.active_healthy && r.eligible, "{r:#?}");
    assert_eq!(r.checks.len(), 1);
    assert_eq!(r.checks[0].probes, 0);
    assert_eq!(dp.live_health_checks(), 2);

    // It finds the endpoint failing on its own.
    until(dp, a.addr, INTERVAL * 2 * 4, |r| !r.active_healthy).await;
}
