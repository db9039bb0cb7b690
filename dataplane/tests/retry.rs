//! Retries (`proxy-next-upstream`) against real upstreams: what is retried,
//! where, how often, and the budget that stops retry storms.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, StatusCode};
use portico_dataplane::model::{Action, Backend, RetryOn, RetryPolicy, RouteConfig, Rule};
use support::*;

fn rule(pods: &[&Pod], retry: RetryPolicy, tweak: impl FnOnce(&mut Backend)) -> Rule {
    let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
    let mut b = backend("default/web:80", &addrs);
    // These tests count attempts; ejections would only get in the way.
    b.policy_mut().outlier.consecutive_5xx = 0;
    b.policy_mut().outlier.consecutive_errors = 0;
    tweak(&mut b);
    let mut r = forward_rule(vec![], vec![b]);
    if let Action::Forward(f) = &mut r.action {
        f.retry = retry;
    }
    r
}

fn one_route(r: Rule) -> RouteConfig {
    config(vec![route("r", &["web.test"], vec![r])])
}

fn on_503() -> RetryPolicy {
    RetryPolicy {
        on: RetryOn {
            http_503: true,
            ..RetryOn::default()
        },
        ..RetryPolicy::default()
    }
}

fn hits(pods: &[&Pod]) -> Vec<u64> {
    pods.iter().map(|p| p.hits()).collect()
}

async fn request(proxy: &Proxy, method: &str, body: &'static str) -> StatusCode {
    let req = Request::builder()
        .method(method)
        .uri(format!("http://{}/", proxy.addr))
        .header("host", "web.test")
        .body(if body.is_empty() { empty() } else { full(body) })
        .unwrap();
    send(&h1_client(), req).await.0
}

#[tokio::test]
async fn a_connect_failure_is_retried_on_another_endpoint() {
    let dead = Pod::start("dead").await;
    dead.stop().await;
    let good = Pod::start("good").await;
    let proxy = Proxy::start(one_route(rule(
        &[&dead, &good],
        RetryPolicy::default(),
        |_| {},
    )))
    .await;
    for _ in 0..10 {
        assert_eq!(request(&proxy, "GET", "").await, StatusCode::OK);
    }
    // A request that never left goes elsewhere whatever its method, body
    // included.
    for _ in 0..4 {
        assert_eq!(request(&proxy, "POST", "order=1").await, StatusCode::OK);
    }
    assert_eq!(good.hits(), 14);

    // `off`: the client sees the failure.
    let no_retry = RetryPolicy {
        on: RetryOn::OFF,
        ..RetryPolicy::default()
    };
    proxy
        .dp
        .publish(one_route(rule(&[&dead, &good], no_retry, |_| {})));
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(request(&proxy, "GET", "").await);
    }
    assert!(got.contains(&StatusCode::BAD_GATEWAY), "{got:?}");
}

#[tokio::test]
async fn a_retry_goes_to_an_endpoint_not_tried_yet() {
    let pods = [
        Pod::start("a").await,
        Pod::start("b").await,
        Pod::start("c").await,
    ];
    let all: Vec<&Pod> = pods.iter().collect();
    for p in &pods {
        p.set_status(503);
    }
    let proxy = Proxy::start(one_route(rule(&all, on_503(), |_| {}))).await;
    // Three tries, three different endpoints; the last answer is the one
    // the client gets.
    assert_eq!(
        request(&proxy, "GET", "").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(hits(&all), [1, 1, 1]);

    // Tries bound the attempts.
    let two = RetryPolicy {
        tries: 2,
        ..on_503()
    };
    proxy.dp.publish(one_route(rule(&all, two, |_| {})));
    request(&proxy, "GET", "").await;
    assert_eq!(hits(&all).iter().sum::<u64>(), 5);

    // A healthy endpoint among them answers.
    proxy.dp.publish(one_route(rule(&all, on_503(), |_| {})));
    pods[1].set_status(200);
    for _ in 0..6 {
        assert_eq!(request(&proxy, "GET", "").await, StatusCode::OK);
    }
}

#[tokio::test]
async fn only_idempotent_or_replayable_requests_are_retried_after_they_were_sent() {
    let pods = [Pod::start("a").await, Pod::start("b").await];
    let all: Vec<&Pod> = pods.iter().collect();
    for p in &pods {
        p.set_status(503);
    }
    let proxy = Proxy::start(one_route(rule(&all, on_503(), |_| {}))).await;
    let total = || hits(&all).iter().sum::<u64>();

    request(&proxy, "POST", "").await;
    assert_eq!(total(), 1, "POST is not idempotent");
    request(&proxy, "PUT", "").await;
    assert_eq!(total(), 3, "PUT is");

    let any_method = RetryPolicy {
        on: RetryOn {
            non_idempotent: true,
            ..on_503().on
        },
        ..on_503()
    };
    proxy.dp.publish(one_route(rule(&all, any_method, |_| {})));
    request(&proxy, "POST", "").await;
    assert_eq!(total(), 5, "non_idempotent retries a bodiless POST");
    // A body that was sent is never sent again: it cannot be replayed.
    request(&proxy, "POST", "order=1").await;
    assert_eq!(total(), 6);
    request(&proxy, "PUT", "doc").await;
    assert_eq!(total(), 7);
}

#[tokio::test]
async fn a_timeout_is_retried_elsewhere() {
    let slow = Pod::start("slow").await;
    let fast = Pod::start("fast").await;
    slow.set_delay(Duration::from_secs(30));
    let mut r = rule(&[&slow, &fast], RetryPolicy::default(), |_| {});
    r.timeouts.read = Duration::from_millis(200);
    let proxy = Proxy::start(one_route(r)).await;
    for _ in 0..4 {
        assert_eq!(request(&proxy, "GET", "").await, StatusCode::OK);
    }
    // Every other request went to the slow one first, timed out, and went
    // on to the fast one.
    assert_eq!((slow.hits(), fast.hits()), (2, 4));
}

#[tokio::test(start_paused = true)]
async fn the_retry_budget_bounds_amplification_when_every_endpoint_fails() {
    // The clock stands still: the per-second floor is granted once.
    let _frozen = FrozenClock::new();
    let pods = [
        Pod::start("a").await,
        Pod::start("b").await,
        Pod::start("c").await,
    ];
    let all: Vec<&Pod> = pods.iter().collect();
    for p in &pods {
        p.set_status(503);
    }
    let policy = on_503();
    let proxy = Proxy::start(one_route(rule(&all, policy.clone(), |_| {}))).await;
    let requests = 200u64;
    for _ in 0..requests {
        assert_eq!(
            request(&proxy, "GET", "").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let attempts: u64 = hits(&all).iter().sum();
    // Unbudgeted, three tries each would be 600 attempts. The budget allows
    // 20% of the requests plus the floor (10 in this second).
    let bound = requests
        + requests * u64::from(policy.budget_percent) / 100
        + u64::from(policy.budget_min_per_second);
    assert!(attempts <= bound, "{attempts} attempts, bound {bound}");
    assert!(attempts >= bound - 2, "the budget was not used: {attempts}");
    let text = proxy.dp.encode_metrics().unwrap();
    let value = |series: &str| {
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .parse::<u64>()
                    .ok()
            })
            .unwrap_or_else(|| panic!("no {series} in {text}"))
    };
    let backend = "{backend=\"default/web:80\"}";
    assert_eq!(
        value(&format!("portico_upstream_retries_total{backend}")),
        attempts - requests
    );
    assert!(
        value(&format!(
            "portico_upstream_retry_budget_exhausted_total{backend}"
        )) > 100
    );
}

#[tokio::test(start_paused = true)]
async fn a_retry_budget_outlives_a_republish_and_restarts_with_new_settings() {
    // The clock stands still: one second's floor, granted once.
    let _frozen = FrozenClock::new();
    let pods = [Pod::start("a").await, Pod::start("b").await];
    let all: Vec<&Pod> = pods.iter().collect();
    for p in &pods {
        p.set_status(503);
    }
    // One retry per second from the floor; requests earn none.
    let cfg = |floor: u32| {
        let policy = RetryPolicy {
            tries: 2,
            budget_percent: 0,
            budget_min_per_second: floor,
            ..on_503()
        };
        one_route(rule(&all, policy, |_| {}))
    };
    let proxy = Proxy::start(cfg(1)).await;
    let mut seen = 0;
    let mut attempts = || {
        let total: u64 = hits(&all).iter().sum();
        let n = total - seen;
        seen = total;
        n
    };
    let failed = async || {
        assert_eq!(
            request(&proxy, "GET", "").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    };
    failed().await;
    assert_eq!(attempts(), 2, "the floor pays for one retry");
    failed().await;
    assert_eq!(attempts(), 1, "spent");

    // The same backend and budget settings: the same, spent budget.
    proxy.dp.publish(cfg(1));
    failed().await;
    assert_eq!(attempts(), 1, "a republish refilled the budget");

    // Other budget settings: a budget of their own, unspent.
    proxy.dp.publish(cfg(2));
    failed().await;
    assert_eq!(attempts(), 2);

    // A backend no table names any more loses its budget.
    proxy.dp.publish(RouteConfig::default());
    proxy.dp.publish(cfg(2));
    failed().await;
    assert_eq!(attempts(), 2);
}
