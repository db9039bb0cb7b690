//! Endpoint health against real upstreams: passive outlier detection,
//! panic mode, and health that outlives table swaps and is shared by every
//! route pointing at an endpoint.

mod support;

use std::net::SocketAddr;

use http::StatusCode;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use portico_dataplane::RouteTable;
use portico_dataplane::model::{Backend, RouteConfig};
use portico_dataplane::route::router::RequestHead;
use support::*;

fn backend_of(pods: &[&Pod], tweak: impl FnOnce(&mut Backend)) -> Backend {
    let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
    let mut b = backend("default/web:80", &addrs);
    tweak(&mut b);
    b
}

fn one_route(b: Backend) -> RouteConfig {
    config(vec![route(
        "r",
        &["web.test"],
        vec![forward_rule(vec![], vec![b])],
    )])
}

/// The addresses the live table would send `host` requests to right now.
fn eligible(table: &RouteTable, host: &str) -> Vec<SocketAddr> {
    let head = RequestHead {
        host,
        path: "/",
        query: None,
        method: &http::Method::GET,
        headers: &http::HeaderMap::new(),
    };
    let routed = table.lookup(&head).expect("routed");
    routed
        .runtime
        .backends
        .backends()
        .flat_map(|b| b.balancer.eligible())
        .collect()
}

async fn statuses(
    client: &Client<HttpConnector, Body>,
    proxy: SocketAddr,
    host: &str,
    n: usize,
) -> Vec<StatusCode> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(client, proxy, host, "/").await.0);
    }
    out
}

#[tokio::test]
async fn consecutive_5xx_eject_the_endpoint() {
    let bad = Pod::start("bad").await;
    let (b, c) = (Pod::start("b").await, Pod::start("c").await);
    bad.set_status(500);
    let proxy = Proxy::start(one_route(backend_of(&[&bad, &b, &c], |_| {}))).await;
    let client = h1_client();

    let got = statuses(&client, proxy.addr, "web.test", 60).await;
    // Round robin sends it every third request until its fifth 500 in a
    // row; then it is out for the base ejection time (30 s).
    assert_eq!(bad.hits(), 5);
    assert_eq!(
        got.iter()
            .filter(|s| **s == StatusCode::INTERNAL_SERVER_ERROR)
            .count(),
        5
    );
    assert_eq!(b.hits() + c.hits(), 55);
    assert!(!eligible(&proxy.dp.current(), "web.test").contains(&bad.addr));
}

#[tokio::test]
async fn connect_failures_eject_the_endpoint() {
    let dead = Pod::start("dead").await;
    dead.stop().await;
    let (b, c) = (Pod::start("b").await, Pod::start("c").await);
    let proxy = Proxy::start(one_route(backend_of(&[&dead, &b, &c], |_| {}))).await;
    let client = h1_client();

    let first = statuses(&client, proxy.addr, "web.test", 15).await;
    assert!(
        first.iter().filter(|s| **s != StatusCode::OK).count() <= 5,
        "{first:?}"
    );
    assert_eq!(eligible(&proxy.dp.current(), "web.test"), [b.addr, c.addr]);
    let later = statuses(&client, proxy.addr, "web.test", 30).await;
    assert!(later.iter().all(|s| *s == StatusCode::OK), "{later:?}");
}

#[tokio::test]
async fn at_most_half_the_endpoints_are_ejected() {
    let (a, b) = (Pod::start("a").await, Pod::start("b").await);
    a.set_status(503);
    b.set_status(503);
    let proxy = Proxy::start(one_route(backend_of(&[&a, &b], |_| {}))).await;
    let client = h1_client();

    statuses(&client, proxy.addr, "web.test", 30).await;
    let left = eligible(&proxy.dp.current(), "web.test");
    assert_eq!(left.len(), 1, "{left:?}");
    // The one left keeps serving, failing or not.
    let kept = if left[0] == a.addr { &a } else { &b };
    let before = kept.hits();
    statuses(&client, proxy.addr, "web.test", 10).await;
    assert_eq!(kept.hits() - before, 10);
}

#[tokio::test]
async fn too_few_eligible_endpoints_is_panic_mode() {
    let good = Pod::start("good").await;
    let bad: Vec<Pod> = vec![
        Pod::start("bad1").await,
        Pod::start("bad2").await,
        Pod::start("bad3").await,
    ];
    for p in &bad {
        p.set_status(500);
    }
    let pods: Vec<&Pod> = std::iter::once(&good).chain(bad.iter()).collect();
    let b = backend_of(&pods, |b| b.policy_mut().outlier.max_ejected_percent = 100);
    let proxy = Proxy::start(one_route(b)).await;
    let client = h1_client();

    // Until the third failing pod is ejected, one in four is eligible...
    statuses(&client, proxy.addr, "web.test", 40).await;
    assert_eq!(eligible(&proxy.dp.current(), "web.test"), [good.addr]);
    let table = proxy.dp.current();
    let head = RequestHead {
        host: "web.test",
        path: "/",
        query: None,
        method: &http::Method::GET,
        headers: &http::HeaderMap::new(),
    };
    let routed = table.lookup(&head).unwrap();
    let balancer = &routed.runtime.backends.backends().next().unwrap().balancer;
    assert!(balancer.in_panic());

    // ...which is below the 50% panic threshold: requests are spread over
    // every ready endpoint instead of piling onto the last good one.
    let before: Vec<u64> = bad.iter().map(Pod::hits).collect();
    let good_before = good.hits();
    statuses(&client, proxy.addr, "web.test", 40).await;
    for (p, b) in bad.iter().zip(before) {
        assert_eq!(p.hits() - b, 10, "{}", p.name);
    }
    assert_eq!(good.hits() - good_before, 10);
}

#[tokio::test]
async fn an_ejection_survives_a_table_swap() {
    let bad = Pod::start("bad").await;
    let good = Pod::start("good").await;
    bad.set_status(502);
    let b = backend_of(&[&bad, &good], |_| {});
    let proxy = Proxy::start(one_route(b.clone())).await;
    let client = h1_client();

    statuses(&client, proxy.addr, "web.test", 20).await;
    assert_eq!(bad.hits(), 5);
    // A new table with the same endpoint (and another route): the endpoint
    // is the same object, ejection included.
    let mut cfg = one_route(b);
    cfg.routes.push(std::sync::Arc::new(route(
        "other",
        &["other.test"],
        vec![forward_rule(vec![], vec![backend_of(&[&good], |_| {})])],
    )));
    proxy.dp.publish(cfg);
    let got = statuses(&client, proxy.addr, "web.test", 20).await;
    assert!(got.iter().all(|s| *s == StatusCode::OK), "{got:?}");
    assert_eq!(bad.hits(), 5);
}

#[tokio::test]
async fn an_ejection_is_shared_by_every_route_to_the_endpoint() {
    let bad = Pod::start("bad").await;
    let good = Pod::start("good").await;
    bad.set_status(500);
    let cfg = config(vec![
        route(
            "x",
            &["x.test"],
            vec![forward_rule(
                vec![],
                vec![backend_of(&[&bad, &good], |_| {})],
            )],
        ),
        route(
            "y",
            &["y.test"],
            vec![forward_rule(
                vec![],
                vec![backend_of(&[&good, &bad], |_| {})],
            )],
        ),
    ]);
    let proxy = Proxy::start(cfg).await;
    let client = h1_client();

    statuses(&client, proxy.addr, "x.test", 20).await;
    assert_eq!(bad.hits(), 5);
    let got = statuses(&client, proxy.addr, "y.test", 20).await;
    assert!(got.iter().all(|s| *s == StatusCode::OK), "{got:?}");
    assert_eq!(bad.hits(), 5);
}

#[tokio::test]
async fn no_ready_endpoint_is_503_and_grpc_shaped_for_grpc() {
    let proxy = Proxy::start(config(vec![route(
        "r",
        &[],
        vec![forward_rule(vec![], vec![backend("default/none:80", &[])])],
    )]))
    .await;
    let client = h1_client();
    let (status, _, _) = get(&client, proxy.addr, "web.test", "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);

    let req = http::Request::post(format!("http://{}/pkg.Svc/Call", proxy.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    let (status, headers, _) = send(&h2c_client(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["grpc-status"], "14");
}

/// The value of the series `name{labels}` in the metrics text.
fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn upstream_metrics_are_per_endpoint_not_per_route() {
    let bad = Pod::start("bad").await;
    let good = Pod::start("good").await;
    bad.set_status(500);
    let routes = (0..50)
        .map(|i| {
            let host = format!("h{i}.test");
            route(
                &host,
                &[host.as_str()],
                vec![forward_rule(
                    vec![],
                    vec![backend_of(&[&bad, &good], |_| {})],
                )],
            )
        })
        .collect();
    let proxy = Proxy::start(config(routes)).await;
    let client = h1_client();
    for i in 0..20 {
        get(&client, proxy.addr, &format!("h{i}.test"), "/").await;
    }
    let text = proxy.dp.encode_metrics().unwrap();
    let series = |name: &str| text.lines().filter(|l| l.starts_with(name)).count();
    // Fifty routes, two endpoints: two series each.
    assert_eq!(series("portico_upstream_endpoint_healthy{"), 2, "{text}");
    assert_eq!(
        series("portico_upstream_endpoint_requests_total{"),
        2,
        "{text}"
    );
    let b = format!("backend=\"default/web:80\",endpoint=\"{}\"", bad.addr);
    let g = format!("backend=\"default/web:80\",endpoint=\"{}\"", good.addr);
    assert_eq!(
        metric(&text, &format!("portico_upstream_endpoint_healthy{{{b}}}")),
        Some(0.0)
    );
    assert_eq!(
        metric(&text, &format!("portico_upstream_endpoint_healthy{{{g}}}")),
        Some(1.0)
    );
    let requests = |p: &Pod| {
        metric(
            &text,
            &format!(
                "portico_upstream_endpoint_requests_total{{endpoint=\"{}\"}}",
                p.addr
            ),
        )
    };
    assert_eq!(requests(&bad), Some(5.0));
    assert_eq!(requests(&good), Some(15.0));
    assert_eq!(
        metric(
            &text,
            &format!(
                "portico_upstream_endpoint_ejections_total{{endpoint=\"{}\"}}",
                bad.addr
            )
        ),
        Some(1.0)
    );
    // /debug/endpoints on the debug listener says the same, per endpoint.
    let (status, _, body) = get(&client, proxy.debug, "debug", "/debug/endpoints").await;
    assert_eq!(status, StatusCode::OK);
    let list: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(list.len(), 2, "{body}");
    let bad_report = list
        .iter()
        .find(|e| e["address"] == bad.addr.to_string())
        .unwrap();
    assert_eq!(bad_report["eligible"], false);
    assert_eq!(bad_report["ejections"], 1);
    assert!(bad_report["ejected_for_ms"].is_u64());

    // Gone with the endpoints.
    proxy.dp.publish(RouteConfig::default());
    let text = proxy.dp.encode_metrics().unwrap();
    assert!(
        !text.contains("portico_upstream_endpoint_healthy{"),
        "{text}"
    );
}
