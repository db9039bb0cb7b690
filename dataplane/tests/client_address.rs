//! Whose word the proxy takes for the client's address and scheme, over
//! real sockets: by default only what it saw itself; with
//! `--trusted-proxies`, a trusted peer's `X-Forwarded-*` headers.

mod support;

use http::{HeaderMap, Request, StatusCode};
use portico_dataplane::DataplaneConfig;
use portico_dataplane::model::{Balance, Filter, HashKey, HttpsRedirect, RouteConfig};
use portico_dataplane::request::forwarded::{TrustedProxies, parse_range};
use support::*;

/// Trusts `ranges` (the test client is 127.0.0.1).
fn trusting(ranges: &'static [&'static str]) -> impl FnOnce(&mut DataplaneConfig) {
    move |c| {
        c.trusted_proxies = TrustedProxies::new(ranges.iter().map(|r| parse_range(r).unwrap()));
    }
}

/// Sends a GET for `fwd.test` with `headers` (a name may repeat) and
/// returns what the echo upstream saw.
async fn upstream_sees(proxy: &Proxy, headers: &[(&str, &str)]) -> HeaderMap {
    let mut req = Request::get(proxy.url("/")).header("host", "fwd.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (s, h, body) = send(&h1_client(), req.body(empty()).unwrap()).await;
    assert_eq!(s, StatusCode::OK, "{body}");
    h
}

/// The access log's client address of the last request.
async fn logged_client(proxy: &Proxy, n: usize) -> String {
    assert_eventually!(proxy.log.lines().len() >= n, "{n} access-log lines");
    proxy.log.lines()[n - 1]["client_addr"]
        .as_str()
        .unwrap()
        .to_owned()
}

const SPOOFED: &[(&str, &str)] = &[
    ("x-forwarded-for", "198.51.100.1"),
    ("x-real-ip", "198.51.100.2"),
    ("x-forwarded-proto", "https"),
    ("x-forwarded-host", "evil.test"),
    ("x-forwarded-port", "1"),
    ("forwarded", "for=198.51.100.3;proto=https"),
];

#[tokio::test]
async fn by_default_upstreams_see_only_what_the_proxy_saw() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("fwd.test", up.addr)).await;
    let h = upstream_sees(&proxy, SPOOFED).await;
    assert_eq!(h["x-seen-h-x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-seen-h-x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-seen-h-x-forwarded-proto"], "http");
    assert_eq!(h["x-seen-h-x-forwarded-host"], "fwd.test");
    assert_eq!(
        h["x-seen-h-x-forwarded-port"],
        proxy.addr.port().to_string().as_str()
    );
    assert!(
        !h.contains_key("x-seen-h-forwarded"),
        "a client's Forwarded is dropped"
    );
    let logged = logged_client(&proxy, 1).await;
    assert!(logged.starts_with("127.0.0.1:"), "{logged}");
}

#[tokio::test]
async fn an_untrusted_peer_cannot_name_the_client_when_others_are_trusted() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start_with(simple("fwd.test", up.addr), trusting(&["10.0.0.0/8"])).await;
    let h = upstream_sees(&proxy, SPOOFED).await;
    assert_eq!(h["x-seen-h-x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-seen-h-x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-seen-h-x-forwarded-proto"], "http");
    assert_eq!(h["x-seen-h-x-forwarded-host"], "fwd.test");
    assert!(!h.contains_key("x-seen-h-forwarded"));
    assert!(logged_client(&proxy, 1).await.starts_with("127.0.0.1:"));
}

#[tokio::test]
async fn a_trusted_peer_names_the_client_and_keeps_its_headers() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start_with(
        simple("fwd.test", up.addr),
        trusting(&["127.0.0.1/32", "10.0.0.0/8"]),
    )
    .await;
    // The rightmost untrusted entry; the chain is appended to.
    let h = upstream_sees(&proxy, SPOOFED).await;
    assert_eq!(h["x-seen-h-x-real-ip"], "198.51.100.1");
    assert_eq!(h["x-seen-h-x-forwarded-for"], "198.51.100.1, 127.0.0.1");
    assert_eq!(h["x-seen-h-x-forwarded-proto"], "https");
    assert_eq!(h["x-seen-h-x-forwarded-host"], "evil.test");
    assert_eq!(h["x-seen-h-x-forwarded-port"], "1");
    assert_eq!(h["x-seen-h-forwarded"], "for=198.51.100.3;proto=https");
    assert_eq!(logged_client(&proxy, 1).await, "198.51.100.1");

    // A chain: the client's own claim, then what trusted hops saw.
    let h = upstream_sees(
        &proxy,
        &[(
            "x-forwarded-for",
            "192.0.2.66, 203.0.113.7, 10.1.1.1, 10.2.2.2",
        )],
    )
    .await;
    assert_eq!(h["x-seen-h-x-real-ip"], "203.0.113.7");
    assert_eq!(
        h["x-seen-h-x-forwarded-for"],
        "192.0.2.66, 203.0.113.7, 10.1.1.1, 10.2.2.2, 127.0.0.1"
    );
    // Headers the trusted peer left out are ours.
    assert_eq!(h["x-seen-h-x-forwarded-proto"], "http");
    assert_eq!(h["x-seen-h-x-forwarded-host"], "fwd.test");
    assert_eq!(
        h["x-seen-h-x-forwarded-port"],
        proxy.addr.port().to_string().as_str()
    );
    assert_eq!(logged_client(&proxy, 2).await, "203.0.113.7");

    // Every hop trusted: the leftmost.
    let h = upstream_sees(&proxy, &[("x-forwarded-for", "10.3.3.3, 10.1.1.1")]).await;
    assert_eq!(h["x-seen-h-x-real-ip"], "10.3.3.3");
    // No X-Forwarded-For at all: the peer.
    let h = upstream_sees(&proxy, &[]).await;
    assert_eq!(h["x-seen-h-x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-seen-h-x-forwarded-for"], "127.0.0.1");
}

/// The `X-Real-IP` and `X-Forwarded-For` the upstream saw.
async fn client_seen(proxy: &Proxy, headers: &[(&str, &str)]) -> (String, String) {
    let h = upstream_sees(proxy, headers).await;
    let text = |name: &str| h[name].to_str().unwrap().to_owned();
    (text("x-seen-h-x-real-ip"), text("x-seen-h-x-forwarded-for"))
}

#[tokio::test]
async fn forwarded_for_in_odd_shapes() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start_with(
        simple("fwd.test", up.addr),
        trusting(&["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]),
    )
    .await;
    // Several headers are one list, in order, sent on as one.
    let (ip, xff) = client_seen(
        &proxy,
        &[
            ("x-forwarded-for", "203.0.113.7"),
            ("x-forwarded-for", "10.1.1.1, 10.2.2.2"),
        ],
    )
    .await;
    assert_eq!(ip, "203.0.113.7");
    assert_eq!(xff, "203.0.113.7, 10.1.1.1, 10.2.2.2, 127.0.0.1");
    // A malformed entry ends the walk at the last good address.
    let (ip, _) = client_seen(
        &proxy,
        &[("x-forwarded-for", "203.0.113.7, unknown, 10.1.1.1")],
    )
    .await;
    assert_eq!(ip, "10.1.1.1");
    let (ip, xff) = client_seen(&proxy, &[("x-forwarded-for", "203.0.113.7, not-an-ip")]).await;
    assert_eq!(ip, "127.0.0.1");
    assert_eq!(
        xff, "203.0.113.7, not-an-ip, 127.0.0.1",
        "sent on as it came"
    );
    // IPv6, bare, bracketed and with a port; IPv4 with a port.
    for (value, want) in [
        ("2001:db8::7, fd00::1", "2001:db8::7"),
        ("[2001:db8::7]:4711, fd00::1", "2001:db8::7"),
        ("[2001:db8::7]", "2001:db8::7"),
        ("203.0.113.7:4711", "203.0.113.7"),
    ] {
        let (ip, _) = client_seen(&proxy, &[("x-forwarded-for", value)]).await;
        assert_eq!(ip, want, "{value}");
    }
    // A long value (under the 8 KiB header-line limit, far over the bound
    // on entries read): read from the right only (the bound is reached
    // among trusted hops), and still answered.
    let huge = std::iter::repeat_n("10.9.9.9", 700)
        .collect::<Vec<_>>()
        .join(", ");
    let huge = format!("203.0.113.7, {huge}");
    let (ip, _) = client_seen(&proxy, &[("x-forwarded-for", &huge)]).await;
    assert_eq!(ip, "10.9.9.9");
}

fn redirecting(up: &Upstream) -> RouteConfig {
    let mut r = route(
        "r",
        &["fwd.test"],
        vec![forward_rule(vec![], vec![backend("b", &[up.addr])])],
    );
    r.add_to_every_rule(&[Filter::HttpsRedirect(HttpsRedirect::default())]);
    config(vec![r])
}

#[tokio::test]
async fn only_a_trusted_peer_spares_a_request_the_https_redirect() {
    let up = Upstream::echo("a").await;
    let claim = || {
        Request::get("/x")
            .header("host", "fwd.test")
            .header("x-forwarded-proto", "https")
    };
    let untrusted = Proxy::start_with(redirecting(&up), trusting(&["10.0.0.0/8"])).await;
    let req = claim().uri(untrusted.url("/x")).body(empty()).unwrap();
    let (s, h, _) = send(&h1_client(), req).await;
    assert_eq!(s, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h["location"], "https://fwd.test/x");

    let trusted = Proxy::start_with(redirecting(&up), trusting(&["127.0.0.1/32"])).await;
    let req = claim().uri(trusted.url("/x")).body(empty()).unwrap();
    let (s, h, _) = send(&h1_client(), req).await;
    assert_eq!(
        s,
        StatusCode::OK,
        "received over HTTPS by the proxy in front"
    );
    assert_eq!(h["x-seen-h-x-forwarded-proto"], "https");
    // From the trusted peer too, plain HTTP is redirected.
    let req = Request::get(trusted.url("/x"))
        .header("host", "fwd.test")
        .body(empty())
        .unwrap();
    assert_eq!(
        send(&h1_client(), req).await.0,
        StatusCode::PERMANENT_REDIRECT
    );
}

#[tokio::test]
async fn hashing_by_client_uses_the_address_a_trusted_peer_names() {
    let pods = [
        Pod::start("p0").await,
        Pod::start("p1").await,
        Pod::start("p2").await,
        Pod::start("p3").await,
    ];
    let mut b = backend(
        "default/web:80",
        &pods.iter().map(|p| p.addr).collect::<Vec<_>>(),
    );
    b.policy_mut().balance = Balance::ConsistentHash {
        key: HashKey::parse("$remote_addr").unwrap(),
    };
    let routes = config(vec![route(
        "r",
        &["fwd.test"],
        vec![forward_rule(vec![], vec![b])],
    )]);
    let proxy = Proxy::start_with(routes, trusting(&["127.0.0.1/32"])).await;
    let pod_for = |client: String| {
        let proxy = &proxy;
        async move {
            let req = Request::get(proxy.url("/"))
                .header("host", "fwd.test")
                .header("x-forwarded-for", client)
                .body(empty())
                .unwrap();
            let (s, h, _) = send(&h1_client(), req).await;
            assert_eq!(s, StatusCode::OK);
            h["x-upstream"].to_str().unwrap().to_owned()
        }
    };
    let mut used = std::collections::BTreeSet::new();
    for i in 0..32 {
        let client = format!("203.0.113.{i}");
        let first = pod_for(client.clone()).await;
        assert_eq!(pod_for(client.clone()).await, first, "{client} sticks");
        used.insert(first);
    }
    // All from one socket peer: hashing that would use one pod.
    assert!(used.len() > 1, "clients spread over pods: {used:?}");
}
