//! Policies against real endpoints (no traffic: picks only).

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use super::*;
use crate::model::{Protocol, SameSite};
use crate::upstream::{EndpointKey, Upstreams};

fn endpoints(upstreams: &Upstreams, ports: std::ops::Range<u16>) -> Vec<Arc<Endpoint>> {
    ports
        .map(|p| {
            upstreams.endpoint(EndpointKey {
                addr: SocketAddr::from(([127, 0, 0, 1], p)),
                protocol: Protocol::Http1,
                tls: None,
            })
        })
        .collect()
}

fn balancer(upstreams: &Upstreams, eps: Vec<Arc<Endpoint>>, policy: EndpointPolicy) -> Balancer {
    Balancer::new(
        eps,
        Arc::new(policy),
        Arc::clone(upstreams.health()),
        vec![],
    )
}

fn counts(b: &Balancer, key: &RequestKey, n: usize) -> Vec<usize> {
    let mut c = vec![0; b.endpoints().len()];
    for _ in 0..n {
        c[b.pick(key, &[]).unwrap().index] += 1;
    }
    c
}

#[test]
fn round_robin_takes_turns_and_skips_tried() {
    let u = Upstreams::new(Default::default(), Counter::default());
    let b = balancer(&u, endpoints(&u, 1..4), EndpointPolicy::default());
    let key = RequestKey::default();
    let order: Vec<usize> = (0..6).map(|_| b.pick(&key, &[]).unwrap().index).collect();
    assert_eq!(order, [0, 1, 2, 0, 1, 2]);
    for _ in 0..10 {
        let i = b.pick(&key, &[1]).unwrap().index;
        assert_ne!(i, 1);
    }
    assert!(b.pick(&key, &[0, 1, 2]).is_none());
}

#[tokio::test(start_paused = true)]
async fn slow_start_ramps_a_new_endpoint_smoothly() {
    let u = Upstreams::new(Default::default(), Counter::default());
    let old = endpoints(&u, 1..3);
    tokio::time::advance(Duration::from_secs(60)).await;
    let mut eps = old.clone();
    eps.extend(endpoints(&u, 3..4));
    let policy = EndpointPolicy {
        slow_start: Some(Duration::from_secs(30)),
        ..Default::default()
    };
    let b = balancer(&u, eps, policy);
    let key = RequestKey::default();
    // At first a tenth of a full weight: 100 of 2100.
    let c = counts(&b, &key, 2100);
    assert!((90..=110).contains(&c[2]), "{c:?}");
    // Interleaved, never two in a row.
    let mut last = usize::MAX;
    for _ in 0..2100 {
        let i = b.pick(&key, &[]).unwrap().index;
        assert!(!(i == 2 && last == 2));
        last = i;
    }
    // Half way: half a weight, 500 of 2500.
    tokio::time::advance(Duration::from_secs(15)).await;
    let c = counts(&b, &key, 2500);
    assert!((480..=520).contains(&c[2]), "{c:?}");
    // Then an equal share.
    tokio::time::advance(Duration::from_secs(15)).await;
    assert_eq!(counts(&b, &key, 300), [100, 100, 100]);
}

#[test]
fn least_request_avoids_the_loaded_endpoint() {
    let u = Upstreams::new(Default::default(), Counter::default());
    let policy = EndpointPolicy {
        balance: Balance::LeastRequest,
        ..Default::default()
    };
    let b = balancer(&u, endpoints(&u, 1..4), policy);
    let key = RequestKey::default();
    let busy = b.pick(&key, &[]).unwrap();
    let held: Vec<InFlight> = (0..10).map(|_| b.in_flight(&busy)).collect();
    let busy = busy.index;
    // Two distinct choices: the loaded one always loses.
    let c = counts(&b, &key, 300);
    assert_eq!(c[busy], 0, "{c:?}");
    drop(held);
    let c = counts(&b, &key, 3000);
    assert!(c.iter().all(|n| *n > 800), "{c:?}");
}

#[tokio::test(start_paused = true)]
async fn ewma_prefers_the_faster_endpoint() {
    let u = Upstreams::new(Default::default(), Counter::default());
    let policy = EndpointPolicy {
        balance: Balance::Ewma,
        ..Default::default()
    };
    let b = balancer(&u, endpoints(&u, 1..3), policy);
    b.record(0, Outcome::Success, Duration::from_millis(200));
    b.record(1, Outcome::Success, Duration::from_millis(5));
    let c = counts(&b, &RequestKey::default(), 100);
    assert_eq!(c, [0, 100]);
}

#[test]
fn a_hash_key_sticks_until_its_endpoint_is_overloaded() {
    let u = Upstreams::new(Default::default(), Counter::default());
    let policy = EndpointPolicy {
        balance: Balance::ConsistentHash {
            key: HashKey::parse("$http_x_user").unwrap(),
        },
        ..Default::default()
    };
    let b = balancer(&u, endpoints(&u, 1..5), policy);
    let mut headers = HeaderMap::new();
    headers.insert("x-user", HeaderValue::from_static("alice"));
    let uri = Uri::from_static("/");
    let view = RequestView {
        client: IpAddr::from([10, 0, 0, 1]),
        uri: &uri,
        host: "a.test",
        headers: &headers,
    };
    let key = b.request_key(&view);
    let home = b.pick(&key, &[]).unwrap().index;
    for _ in 0..20 {
        assert_eq!(b.pick(&key, &[]).unwrap().index, home);
    }
    // One hot key: its requests pile up on one endpoint until that one
    // carries more than 1.25 times the average; then the key spills over.
    let mut held = Vec::new();
    let mut spilled = None;
    for _ in 0..20 {
        let p = b.pick(&key, &[]).unwrap();
        if p.index != home {
            spilled = Some(p.index);
            break;
        }
        held.push(b.in_flight(&p));
    }
    assert!(spilled.is_some(), "never spilled over");
    assert!(held.len() <= 2, "spilled after {}", held.len());
    // No key: round robin.
    let none = b.request_key(&RequestView {
        headers: &HeaderMap::new(),
        ..view
    });
    assert!(none.hash.is_none());
}

#[test]
fn persistent_cookies_name_their_endpoint_across_tables() {
    let u = Upstreams::new(Default::default(), Counter::default());
    let policy = EndpointPolicy {
        balance: Balance::Cookie(CookieAffinity {
            mode: AffinityMode::Persistent,
            same_site: Some(SameSite::Lax),
            secure: true,
            max_age: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    let b1 = balancer(&u, endpoints(&u, 1..4), policy.clone());
    let first = b1.pick(&RequestKey::default(), &[]).unwrap();
    let cookie = first
        .set_cookie
        .clone()
        .expect("a new session gets a cookie");
    let text = cookie.to_str().unwrap();
    assert!(
        text.starts_with("INGRESSCOOKIE=")
            && text.ends_with("; Path=/; Max-Age=3600; SameSite=Lax; Secure; HttpOnly"),
        "{text}"
    );
    let value = text.split(';').next().unwrap().to_owned();
    let mut headers = HeaderMap::new();
    headers.insert(http::header::COOKIE, HeaderValue::from_str(&value).unwrap());
    let uri = Uri::from_static("/");
    let view = RequestView {
        client: IpAddr::from([10, 0, 0, 1]),
        uri: &uri,
        host: "a.test",
        headers: &headers,
    };
    // A later table, endpoints in another order: the same endpoint.
    let mut reordered = endpoints(&u, 1..4);
    reordered.reverse();
    let b2 = balancer(&u, reordered, policy);
    let key = b2.request_key(&view);
    for _ in 0..10 {
        let p = b2.pick(&key, &[]).unwrap();
        assert_eq!(p.endpoint.addr(), first.endpoint.addr());
        assert!(p.set_cookie.is_none());
    }
    // Tried already (a failed attempt): another endpoint; the session is
    // re-pointed only under change-on-failure.
    let own = b2
        .endpoints()
        .iter()
        .position(|e| e.addr() == first.endpoint.addr())
        .unwrap();
    let p = b2.pick(&key, &[own]).unwrap();
    assert_ne!(p.index, own);
    assert!(p.set_cookie.is_none());
    let mut policy = b2.policy().clone();
    if let Balance::Cookie(c) = &mut policy.balance {
        c.change_on_failure = true;
    }
    let b3 = balancer(&u, endpoints(&u, 1..4), policy);
    let own = b3
        .endpoints()
        .iter()
        .position(|e| e.addr() == first.endpoint.addr())
        .unwrap();
    let p = b3.pick(&key, &[own]).unwrap();
    assert_ne!(p.index, own);
    assert!(p.set_cookie.is_some());
}

#[test]
fn a_session_cookie_says_its_side() {
    use super::SessionSide::{Canary, Mainline};
    let parse = |v: &str| SessionSide::parse(v.as_bytes());
    assert_eq!(parse("00000000000000ff"), Some((Mainline, 255)));
    assert_eq!(parse("00000000000000FF.canary"), Some((Canary, 255)));
    for bad in [
        "ff",
        "+0000000000000ff",
        "00000000000000ff.other",
        "00000000000000ff.canary.canary",
        ".canary",
        "",
    ] {
        assert_eq!(parse(bad), None, "{bad:?}");
    }
}
