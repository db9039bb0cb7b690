//! Load-balancing policies through the proxy, against real upstreams:
//! consistent hashing, sticky cookies, slow start.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use http::{Request, StatusCode};
use portico_dataplane::model::{
    AffinityMode, Backend, Balance, CookieAffinity, HashKey, HealthCheck, Probe, RouteConfig,
};
use support::*;

fn backend_with(pods: &[&Pod], balance: Balance) -> Backend {
    let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
    let mut b = backend("default/web:80", &addrs);
    b.policy_mut().balance = balance;
    b
}

fn one_route(b: Backend) -> RouteConfig {
    config(vec![route(
        "r",
        &["web.test"],
        vec![forward_rule(vec![], vec![b])],
    )])
}

/// Which pod answered, and the Set-Cookie it came with.
async fn ask(proxy: &Proxy, headers: &[(&str, &str)]) -> (StatusCode, String, Option<String>) {
    let mut req = Request::get(format!("http://{}/", proxy.addr)).header("host", "web.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, h, _) = send(&h1_client(), req.body(empty()).unwrap()).await;
    let upstream = h
        .get("x-upstream")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let cookie = h.get("set-cookie").map(|v| v.to_str().unwrap().to_owned());
    (status, upstream, cookie)
}

#[tokio::test]
async fn consistent_hash_moves_about_one_nth_of_the_keys_when_an_endpoint_is_added() {
    let pods = [
        Pod::start("p0").await,
        Pod::start("p1").await,
        Pod::start("p2").await,
        Pod::start("p3").await,
        Pod::start("p4").await,
    ];
    let all: Vec<&Pod> = pods.iter().collect();
    let by_user = || Balance::ConsistentHash {
        key: HashKey::parse("$http_x_user").unwrap(),
    };
    let proxy = Proxy::start(one_route(backend_with(&all[..4], by_user()))).await;
    let users: Vec<String> = (0..300).map(|i| format!("user-{i}")).collect();
    let mut before = BTreeMap::new();
    for u in &users {
        let (status, pod, _) = ask(&proxy, &[("x-user", u)]).await;
        assert_eq!(status, StatusCode::OK);
        // The same key, the same endpoint.
        assert_eq!(ask(&proxy, &[("x-user", u)]).await.1, pod);
        before.insert(u.clone(), pod);
    }
    let spread: std::collections::BTreeSet<&String> = before.values().collect();
    assert_eq!(spread.len(), 4, "keys spread over every endpoint");

    proxy.dp.publish(one_route(backend_with(&all, by_user())));
    let mut moved = 0;
    for u in &users {
        let pod = ask(&proxy, &[("x-user", u)]).await.1;
        if pod != before[u] {
            assert_eq!(pod, "p4", "{u} moved between old endpoints");
            moved += 1;
        }
    }
    // One in five, give or take.
    assert!((30..=95).contains(&moved), "{moved} of 300 keys moved");
}

#[tokio::test]
async fn sticky_cookie_survives_swaps_and_moves_when_its_endpoint_dies() {
    for mode in [AffinityMode::Balanced, AffinityMode::Persistent] {
        let pods = [
            Pod::start("p0").await,
            Pod::start("p1").await,
            Pod::start("p2").await,
            Pod::start("p3").await,
        ];
        let all: Vec<&Pod> = pods.iter().collect();
        let sticky = || {
            Balance::Cookie(CookieAffinity {
                mode,
                name: "SESSION".into(),
                ..Default::default()
            })
        };
        let proxy = Proxy::start(one_route(backend_with(&all[..3], sticky()))).await;

        let (_, home, set) = ask(&proxy, &[]).await;
        let set = set.expect("a new session gets a cookie");
        assert!(
            set.starts_with("SESSION=") && set.contains("; HttpOnly"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_owned();
        for _ in 0..10 {
            let (_, pod, again) = ask(&proxy, &[("cookie", &cookie)]).await;
            assert_eq!(pod, home, "{mode:?}");
            assert_eq!(again, None);
        }

        // New tables: another route; then (persistent) another endpoint.
        let mut cfg = one_route(backend_with(&all[..3], sticky()));
        cfg.routes
            .push(route("x", &["x.test"], vec![forward_rule(vec![], vec![])]).into());
        proxy.dp.publish(cfg);
        assert_eq!(ask(&proxy, &[("cookie", &cookie)]).await.1, home);
        if mode == AffinityMode::Persistent {
            proxy.dp.publish(one_route(backend_with(&all, sticky())));
            for _ in 0..5 {
                assert_eq!(ask(&proxy, &[("cookie", &cookie)]).await.1, home);
            }
        }

        // The endpoint starts failing: once ejected, the session moves,
        // and stays where it moved.
        let home_pod = pods.iter().find(|p| p.name == home).unwrap();
        home_pod.set_status(500);
        let mut moved = None;
        for _ in 0..10 {
            let (status, pod, set) = ask(&proxy, &[("cookie", &cookie)]).await;
            if status == StatusCode::OK {
                assert_ne!(pod, home);
                moved = Some((pod, set));
                break;
            }
        }
        let (new_home, set) = moved.expect("the session moved off the failing endpoint");
        let cookie = match (mode, set) {
            // The key maps on to the next endpoint; the cookie stays.
            (AffinityMode::Balanced, None) => cookie.clone(),
            // The cookie named the endpoint: it names the new one now.
            (AffinityMode::Persistent, Some(set)) => set.split(';').next().unwrap().to_owned(),
            (m, set) => panic!("{m:?}: unexpected Set-Cookie {set:?}"),
        };
        for _ in 0..5 {
            assert_eq!(ask(&proxy, &[("cookie", &cookie)]).await.1, new_home);
        }
        // Gone from the EndpointSlice altogether: the same.
        let left: Vec<&Pod> = all
            .iter()
            .copied()
            .filter(|p| p.name != new_home && p.name != home)
            .collect();
        proxy.dp.publish(one_route(backend_with(&left, sticky())));
        let (status, pod, _) = ask(&proxy, &[("cookie", &cookie)]).await;
        assert_eq!(status, StatusCode::OK);
        assert!(left.iter().any(|p| p.name == pod), "{pod}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_recovered_endpoint_ramps_up_per_slow_start() {
    let _frozen = FrozenClock::new();
    let (a, b) = (Pod::start("a").await, Pod::start("b").await);
    let mut backend = backend_with(&[&a, &b], Balance::RoundRobin);
    backend.policy_mut().health_check = Some(HealthCheck {
        probe: Probe::Http {
            path: "/healthz".into(),
        },
        interval: Duration::from_secs(1),
        timeout: Duration::from_millis(500),
        ..HealthCheck::default()
    });
    backend.policy_mut().slow_start = Some(Duration::from_secs(30));
    let proxy = Proxy::start(one_route(backend)).await;
    let dp = &proxy.dp;
    let healthy = |p: &Pod| {
        dp.endpoint_health()
            .into_iter()
            .any(|e| e.address == p.addr && e.active_healthy)
    };
    // Past the first slow start of the whole backend.
    advance_probing(dp, Duration::from_secs(40)).await;
    a.set_health_status(503);
    while healthy(&a) {
        advance_probing(dp, Duration::from_millis(250)).await;
    }
    a.set_health_status(200);
    while !healthy(&a) {
        advance_probing(dp, Duration::from_millis(250)).await;
    }

    // Just back: a tenth of b's weight, then half, then all of it.
    let mut shares = Vec::new();
    for _ in 0..3 {
        let (a0, b0) = (a.hits(), b.hits());
        let client = h1_client();
        for _ in 0..330 {
            assert_eq!(
                get(&client, proxy.addr, "web.test", "/").await.0,
                StatusCode::OK
            );
        }
        shares.push((a.hits() - a0) as f64 / (a.hits() + b.hits() - a0 - b0) as f64);
        advance_probing(dp, Duration::from_secs(15)).await;
    }
    assert!((0.07..0.13).contains(&shares[0]), "{shares:?}");
    assert!((0.30..0.37).contains(&shares[1]), "{shares:?}");
    assert!((0.48..0.52).contains(&shares[2]), "{shares:?}");
}

/// Advances the paused clock in whole-millisecond steps, letting every
/// probe that falls due finish before the next step.
async fn advance_probing(dp: &portico_dataplane::Dataplane, d: Duration) {
    let step = Duration::from_millis(250);
    let mut left = d;
    loop {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while dp
            .endpoint_health()
            .iter()
            .flat_map(|e| &e.checks)
            .any(|c| c.next_probe_in_ms.is_none_or(|ms| ms == 0))
        {
            assert!(std::time::Instant::now() < deadline, "probes never settled");
            tokio::task::yield_now().await;
        }
        if left.is_zero() {
            return;
        }
        let s = step.min(left);
        tokio::time::advance(s).await;
        left -= s;
    }
}
