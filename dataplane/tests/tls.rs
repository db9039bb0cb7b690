//! The HTTPS listener over real TLS handshakes: certificates from a CA
//! generated per test (rcgen), rustls clients, real upstreams, all on
//! 127.0.0.1:0.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use http::{HeaderMap, Request, StatusCode};
use portico_dataplane::listen::tls::CertConfig;
use portico_dataplane::model::{
    Action, Filter, Hostname, Hsts, HttpsRedirect, Protocol, Route, RouteClientAuth, UpstreamTls,
};
use support::tls::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A CA, an echo upstream, and a proxy serving `host` over HTTPS with a
/// certificate from that CA.
async fn serving_one_host(host: &str) -> (TestCa, Upstream, Proxy) {
    let ca = TestCa::new();
    let cert = ca.issue(&[host], 7);
    let up = Upstream::echo("up").await;
    let proxy = Proxy::start(simple(host, up.addr)).await;
    proxy.dp.publish_certs(CertConfig {
        bindings: vec![cert.binding("ns/cert", &[host])],
        default: None,
        ..Default::default()
    });
    (ca, up, proxy)
}

fn metric(text: &str, line_prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(line_prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn sni_selects_exact_then_wildcard_then_default() {
    let ca = TestCa::new();
    let exact = ca.issue(&["a.example.test"], 1);
    let wild = ca.issue(&["*.example.test"], 2);
    let default = ca.issue(&["default.test"], 3);
    let up = Upstream::echo("up").await;
    let proxy = Proxy::start(simple("a.example.test", up.addr)).await;
    proxy.dp.publish_certs(CertConfig {
        bindings: vec![
            wild.binding("ns/wild", &["*.example.test"]),
            exact.binding("ns/exact", &["a.example.test"]),
        ],
        default: None,
        ..Default::default()
    });
    let c = any_cert_client(&[]);
    let leaf = |sni: Option<&'static str>| {
        let c = Arc::clone(&c);
        let addr = proxy.https;
        async move { served_leaf(&connect(&c, addr, sni).await.unwrap()) }
    };
    assert_eq!(leaf(Some("a.example.test")).await, exact.der);
    assert_eq!(leaf(Some("A.EXAMPLE.test")).await, exact.der, "case");
    assert_eq!(leaf(Some("b.example.test")).await, wild.der);
    let generated = leaf(Some("x.b.example.test")).await;
    assert!(
        generated != wild.der && generated != exact.der,
        "a wildcard serves exactly one label"
    );
    assert_eq!(leaf(None).await, generated, "no SNI: the generated default");
    assert_eq!(leaf(Some("unknown.test")).await, generated);

    // A configured default replaces the generated one.
    proxy.dp.publish_certs(CertConfig {
        bindings: vec![exact.binding("ns/exact", &["a.example.test"])],
        default: Some(default.server_cert()),
        ..Default::default()
    });
    assert_eq!(leaf(None).await, default.der);
    assert_eq!(leaf(Some("b.example.test")).await, default.der);
    assert_eq!(leaf(Some("a.example.test")).await, exact.der);

    // The server counts a handshake when it reads the client's Finished,
    // which may be after the client's side is done.
    let ok = "portico_tls_handshakes_total{result=\"ok\",reason=\"none\"}";
    assert_eventually!(
        metric(&proxy.dp.encode_metrics().unwrap(), ok) == Some(9.0),
        "9 handshakes counted: {}",
        proxy.dp.encode_metrics().unwrap()
    );
    let m = proxy.dp.encode_metrics().unwrap();
    assert_eq!(
        metric(&m, "portico_tls_default_certificate_total"),
        Some(5.0)
    );
}

#[tokio::test]
async fn alpn_h2_and_http11_are_proxied() {
    let (ca, _up, proxy) = serving_one_host("h.test").await;
    for (alpn, version) in [(&b"h2"[..], "HTTP/2.0"), (&b"http/1.1"[..], "HTTP/1.1")] {
        let c = client(ca.roots(), Versions::Both, &[alpn]);
        let s = connect(&c, proxy.https, Some("h.test")).await.unwrap();
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(alpn));
        let (status, h, body) = https_get(s, "h.test", "/x?y=1").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "up"));
        assert_eq!(h["x-seen-path"], "/x?y=1");
        assert_eq!(h["x-seen-h-x-forwarded-proto"], "https", "{alpn:?}");
        assert_eq!(
            h["x-seen-h-x-forwarded-port"],
            proxy.https.port().to_string()
        );
        let _ = version;
    }
    // No ALPN at all: HTTP/1.1.
    let c = client(ca.roots(), Versions::Both, &[]);
    let s = connect(&c, proxy.https, Some("h.test")).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), None);
    let (status, _, _) = https_get(s, "h.test", "/").await;
    assert_eq!(status, StatusCode::OK);
    // Only an unknown protocol: refused.
    let c = client(ca.roots(), Versions::Both, &[b"spdy/3"]);
    assert!(connect(&c, proxy.https, Some("h.test")).await.is_err());
}

#[tokio::test]
async fn tls12_only_and_tls13_only_clients_succeed() {
    let (ca, _up, proxy) = serving_one_host("v.test").await;
    for (versions, want) in [
        (Versions::Tls12, rustls::ProtocolVersion::TLSv1_2),
        (Versions::Tls13, rustls::ProtocolVersion::TLSv1_3),
    ] {
        let c = client(ca.roots(), versions, &[b"http/1.1"]);
        let s = connect(&c, proxy.https, Some("v.test")).await.unwrap();
        assert_eq!(s.get_ref().1.protocol_version(), Some(want));
        let (status, _, body) = https_get(s, "v.test", "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "up"));
    }
}

/// A TLS 1.1 ClientHello, written by hand because no TLS library here
/// speaks 1.1. With `supported_versions`, it also lists TLS 1.1 there, as
/// a newer client capped at 1.1 does; without, it is a legacy hello.
fn tls11_client_hello(supported_versions: bool) -> Vec<u8> {
    let mut body = vec![0x03, 0x02]; // client_version TLS 1.1
    body.extend_from_slice(&[0x42; 32]); // random
    body.push(0); // session id
    body.extend_from_slice(&[0x00, 0x04, 0xc0, 0x13, 0x00, 0x2f]); // ECDHE-RSA-AES128-SHA, AES128-SHA
    body.extend_from_slice(&[0x01, 0x00]); // compression: null
    if supported_versions {
        // extensions: supported_versions [TLS 1.1]
        body.extend_from_slice(&[0x00, 0x07, 0x00, 0x2b, 0x00, 0x03, 0x02, 0x03, 0x02]);
    }
    let mut hs = vec![0x01, 0x00];
    hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
    hs.extend_from_slice(&body);
    let mut rec = vec![0x16, 0x03, 0x01];
    rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
    rec.extend_from_slice(&hs);
    rec
}

#[tokio::test]
async fn tls11_is_refused_with_an_alert() {
    let up = Upstream::echo("up").await;
    let proxy = Proxy::start(simple("v.test", up.addr)).await;
    // rustls finds no suite in common with a 1.1-era offer before it looks
    // at versions, so both forms get handshake_failure.
    for (supported_versions, alert) in [(true, 40), (false, 40)] {
        let mut tcp = TcpStream::connect(proxy.https).await.unwrap();
        tcp.write_all(&tls11_client_hello(supported_versions))
            .await
            .unwrap();
        let mut rsp = Vec::new();
        tcp.read_to_end(&mut rsp).await.unwrap();
        assert!(rsp.len() >= 7, "an alert record: {rsp:?}");
        assert_eq!(rsp[0], 0x15, "alert, not a ServerHello: {rsp:?}");
        assert_eq!(rsp[5], 2, "fatal");
        assert_eq!(rsp[6], alert, "{rsp:?}");
    }
    let m = proxy.dp.encode_metrics().unwrap();
    assert_eq!(
        metric(
            &m,
            "portico_tls_handshakes_total{result=\"error\",reason=\"incompatible\"}"
        ),
        Some(2.0),
        "{m}"
    );
}

#[tokio::test]
async fn garbage_and_silence_do_not_hurt_other_handshakes() {
    let (ca, _up, proxy) = serving_one_host("g.test").await;
    // A plain-HTTP request on the TLS port, and a client that says nothing.
    let mut plain = TcpStream::connect(proxy.https).await.unwrap();
    plain
        .write_all(b"GET / HTTP/1.1\r\nHost: g.test\r\n\r\n")
        .await
        .unwrap();
    let _silent = TcpStream::connect(proxy.https).await.unwrap();
    let mut rsp = Vec::new();
    let _ = plain.read_to_end(&mut rsp).await;
    assert!(!rsp.starts_with(b"HTTP/1.1 200"));
    let c = client(ca.roots(), Versions::Both, &[b"h2"]);
    let s = connect(&c, proxy.https, Some("g.test")).await.unwrap();
    let (status, _, _) = https_get(s, "g.test", "/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn certificate_expiry_is_a_metric() {
    let ca = TestCa::new();
    let cert = ca.issue(&["m.test"], 11);
    let proxy = Proxy::start(config(vec![])).await;
    let served = cert.server_cert();
    let not_after = served.info().not_after;
    proxy.dp.publish_certs(CertConfig {
        bindings: vec![cert.binding("prod/m-tls", &["m.test"])],
        default: None,
        ..Default::default()
    });
    let m = proxy.dp.encode_metrics().unwrap();
    assert_eq!(
        metric(
            &m,
            "portico_tls_certificate_not_after_timestamp_seconds{certificate=\"prod/m-tls\"}"
        ),
        Some(not_after as f64),
        "{m}"
    );
    assert!(m.contains(
        "portico_tls_certificate_not_after_timestamp_seconds{certificate=\"self-signed\"}"
    ));
    // Unpublished certificates disappear from the metric.
    proxy.dp.publish_certs(CertConfig::default());
    let m = proxy.dp.encode_metrics().unwrap();
    assert!(!m.contains("prod/m-tls"), "{m}");
}

/// The issue's rotation test: 100 rotations under a steady handshake load.
/// After every publish a new handshake must see the new certificate, no
/// handshake may fail, and each load client sees serials only move forward.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_handshake_load() {
    const ROTATIONS: u64 = 100;
    const CLIENTS: usize = 4;
    let ca = TestCa::new();
    let certs: Vec<_> = (0..=ROTATIONS)
        .map(|serial| ca.issue(&["rot.test"], serial + 1))
        .collect();
    let serial_of = Arc::new(
        certs
            .iter()
            .enumerate()
            .map(|(i, c)| (c.der.clone(), i as u64))
            .collect::<std::collections::HashMap<_, _>>(),
    );
    let proxy = Proxy::start(config(vec![])).await;
    let publish = |i: usize| {
        proxy.dp.publish_certs(CertConfig {
            bindings: vec![certs[i].binding("ns/rot", &["rot.test"])],
            default: None,
            ..Default::default()
        })
    };
    publish(0);
    // Open before any rotation; must keep working on its certificate.
    let early_client = client(ca.roots(), Versions::Both, &[b"http/1.1"]);
    let early = connect(&early_client, proxy.https, Some("rot.test"))
        .await
        .unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let handshakes = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut load = Vec::new();
    for _ in 0..CLIENTS {
        let c = client(ca.roots(), Versions::Both, &[b"h2"]);
        let (stop, handshakes, serial_of) = (
            Arc::clone(&stop),
            Arc::clone(&handshakes),
            Arc::clone(&serial_of),
        );
        let addr = proxy.https;
        load.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            let mut last = 0;
            while !stop.load(Ordering::Relaxed) {
                match connect(&c, addr, Some("rot.test")).await {
                    Ok(mut s) => {
                        let seen = serial_of[&served_leaf(&s)];
                        assert!(seen >= last, "serial went back: {seen} after {last}");
                        last = seen;
                        let _ = s.shutdown().await;
                        handshakes.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            failures
        }));
    }
    let probe = client(ca.roots(), Versions::Both, &[b"h2"]);
    for i in 1..=ROTATIONS as usize {
        publish(i);
        let s = connect(&probe, proxy.https, Some("rot.test"))
            .await
            .unwrap();
        assert_eq!(
            serial_of[&served_leaf(&s)],
            i as u64,
            "a handshake after publish {i} sees certificate {i}"
        );
    }
    stop.store(true, Ordering::Relaxed);
    assert_eq!(served_leaf(&early), certs[0].der);
    let (status, _, _) = https_get(early, "rot.test", "/").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the open connection still serves"
    );
    for task in load {
        let failures = task.await.unwrap();
        assert!(failures.is_empty(), "handshake failures: {failures:?}");
    }
    let n = handshakes.load(Ordering::Relaxed);
    let secs = started.elapsed().as_secs_f64();
    println!(
        "rotation: {ROTATIONS} rotations, {n} load handshakes in {secs:.2}s ({:.0}/s), 0 failures",
        n as f64 / secs
    );
    assert!(n >= ROTATIONS, "the load actually ran across the rotations");
    let m = proxy.dp.encode_metrics().unwrap();
    assert!(
        !m.lines().any(
            |l| l.starts_with("portico_tls_handshakes_total{result=\"error\"")
                && !l.ends_with(" 0")
        ),
        "server-side handshake failures: {m}"
    );
}

#[tokio::test]
async fn http_redirects_to_https_and_https_answers_carry_hsts() {
    let ca = TestCa::new();
    let cert = ca.issue(&["r.test", "p.test", "plain.test"], 21);
    let up = Upstream::echo("up").await;
    let mut redirecting = route(
        "r",
        &["r.test"],
        vec![forward_rule(vec![], vec![backend("b", &[up.addr])])],
    );
    redirecting.add_to_every_rule(&[
        Filter::HttpsRedirect(HttpsRedirect::default()),
        Filter::Hsts(Hsts::DEFAULT),
    ]);
    let mut ported = route(
        "p",
        &["p.test"],
        vec![forward_rule(vec![], vec![backend("b", &[up.addr])])],
    );
    ported.add_to_every_rule(&[
        Filter::HttpsRedirect(HttpsRedirect {
            port: Some(8443),
            preserve_trailing_slash: true,
        }),
        Filter::Hsts(Hsts {
            max_age: 60,
            include_subdomains: false,
            preload: true,
        }),
    ]);
    let plain = route(
        "plain",
        &["plain.test"],
        vec![forward_rule(vec![], vec![backend("b", &[up.addr])])],
    );
    let proxy = Proxy::start(config(vec![redirecting, ported, plain])).await;
    proxy.dp.publish_certs(CertConfig {
        bindings: vec![cert.binding("ns/r", &["r.test", "p.test", "plain.test"])],
        default: None,
        ..Default::default()
    });
    let c = h1_client();
    let location = |h: &HeaderMap| h["location"].to_str().unwrap().to_owned();

    for (host, path, want) in [
        ("r.test", "/a/b?q=1", "https://r.test/a/b?q=1"),
        ("r.test:8080", "/dir/", "https://r.test/dir"),
        ("r.test", "/", "https://r.test"),
        ("p.test", "/dir/?x=1", "https://p.test:8443/dir/?x=1"),
        ("p.test", "/dir/", "https://p.test:8443/dir/"),
    ] {
        let (s, h, _) = get(&c, proxy.addr, host, path).await;
        assert_eq!(s, StatusCode::PERMANENT_REDIRECT, "{host}{path}");
        assert_eq!(location(&h), want, "{host}{path}");
        assert!(
            !h.contains_key("strict-transport-security"),
            "not over http"
        );
    }
    // Exempt: ACME challenges and routes without the policy. (Requests an
    // offloading balancer received over HTTPS are exempt only from a
    // trusted proxy: tests/client_address.rs.)
    let (s, h, _) = get(&c, proxy.addr, "r.test", "/.well-known/acme-challenge/tok").await;
    assert_eq!(s, StatusCode::OK);
    assert!(!h.contains_key("strict-transport-security"));
    let req = Request::get(proxy.url("/x"))
        .header("host", "r.test")
        .header("x-forwarded-proto", "https")
        .body(empty())
        .unwrap();
    assert_eq!(
        send(&c, req).await.0,
        StatusCode::PERMANENT_REDIRECT,
        "a client's own X-Forwarded-Proto spares it nothing"
    );
    assert_eq!(
        get(&c, proxy.addr, "plain.test", "/").await.0,
        StatusCode::OK
    );

    // Over HTTPS: served, with HSTS where the route has it.
    let tls = client(ca.roots(), Versions::Both, &[b"h2"]);
    for (host, hsts) in [
        ("r.test", Some("max-age=15724800; includeSubDomains")),
        ("p.test", Some("max-age=60; preload")),
        ("plain.test", None),
    ] {
        let s = connect(&tls, proxy.https, Some(host)).await.unwrap();
        let (status, h, body) = https_get(s, host, "/dir/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "up"), "{host}");
        assert_eq!(
            h.get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            hsts,
            "{host}"
        );
    }
}

/// Client certificates per host: required, optional, optional without CA;
/// verify depth; results passed upstream; SNI/Host mismatch refused; client
/// headers of the same names never reach upstreams.
#[tokio::test]
async fn client_certificates_per_host() {
    use portico_dataplane::listen::tls::{ClientAuth, ClientAuthBinding, VerifyClient};
    let server_ca = TestCa::new();
    let hosts = ["m.test", "d2.test", "opt.test", "noca.test", "open.test"];
    let server_cert = server_ca.issue(&hosts, 1);
    let client_ca = TestCa::new();
    let alice = client_ca.issue_client("portico", "alice");
    let intermediate = client_ca.intermediate("portico intermediate");
    let bob = intermediate.issue_client("portico", "bob");
    let mallory = TestCa::new().issue_client("evil", "mallory");

    let up = Upstream::echo("up").await;
    let policy = |host: &str, verify, depth| {
        let id = format!("default/client-ca {verify:?} {depth}");
        let auth = ClientAuth::new(id.clone(), client_ca.pem().as_bytes(), verify, depth).unwrap();
        let mut r = route(
            host,
            &[host],
            vec![forward_rule(vec![], vec![backend("b", &[up.addr])])],
        );
        r.add_to_every_rule(&[Filter::ClientCert(RouteClientAuth {
            policy: id,
            pass_certificate: host == "m.test",
        })]);
        let binding = ClientAuthBinding {
            hosts: vec![Hostname::parse(host).unwrap()],
            auth: Arc::new(auth),
        };
        (r, binding)
    };
    let (r1, b1) = policy("m.test", VerifyClient::On, 1);
    let (r2, b2) = policy("d2.test", VerifyClient::On, 2);
    let (r3, b3) = policy("opt.test", VerifyClient::Optional, 1);
    let (r4, b4) = policy("noca.test", VerifyClient::OptionalNoCa, 1);
    let open = route(
        "open.test",
        &["open.test"],
        vec![forward_rule(vec![], vec![backend("b", &[up.addr])])],
    );
    let proxy = Proxy::start(config(vec![r1, r2, r3, r4, open])).await;
    proxy.dp.publish_certs(CertConfig {
        bindings: vec![server_cert.binding("ns/server", &hosts)],
        default: None,
        client_auth: vec![b1, b2, b3, b4],
        ..Default::default()
    });

    let as_client = |who: Option<&Issued>, chain_extra: Option<&TestCa>| match who {
        None => client(server_ca.roots(), Versions::Both, &[b"h2"]),
        Some(c) => {
            let mut chain = vec![c.der.clone()];
            chain.extend(chain_extra.map(|i| i.der.clone()));
            client_with_cert(server_ca.roots(), chain, &c.key_pem, &[b"h2"])
        }
    };
    let request = |cfg: Arc<rustls::ClientConfig>, sni: &'static str, host: &'static str| {
        let addr = proxy.https;
        async move {
            let s = connect(&cfg, addr, Some(sni))
                .await
                .map_err(|e| e.to_string())?;
            try_https_get(s, host, "/", &[("ssl-client-verify", "SUCCESS")]).await
        }
    };
    let verify = |h: &HeaderMap| {
        h.get("x-seen-h-ssl-client-verify")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    // Required: a certificate from the CA passes, with its facts upstream.
    let (s, h, _) = request(as_client(Some(&alice), None), "m.test", "m.test")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    assert_eq!(verify(&h).as_deref(), Some("SUCCESS"));
    assert_eq!(h["x-seen-h-ssl-client-subject-dn"], "CN=alice,O=portico");
    assert_eq!(h["x-seen-h-ssl-client-issuer-dn"], "CN=portico test CA");
    let pem = h["x-seen-h-ssl-client-cert"].to_str().unwrap();
    assert!(pem.starts_with("-----BEGIN%20CERTIFICATE-----%0A"), "{pem}");
    // No certificate, or one from another CA: the handshake is refused.
    for who in [None, Some(&mallory)] {
        let r = request(as_client(who, None), "m.test", "m.test").await;
        assert!(r.is_err(), "{r:?}");
    }
    // The CA itself sent along (as OpenSSL clients do) does not count.
    let (s, _, _) = request(
        as_client(Some(&alice), Some(&client_ca)),
        "m.test",
        "m.test",
    )
    .await
    .unwrap();
    assert_eq!(s, StatusCode::OK);
    // Depth: bob's chain has an intermediate; depth 1 refuses, 2 accepts.
    let bob_chain = || as_client(Some(&bob), Some(&intermediate));
    assert!(request(bob_chain(), "m.test", "m.test").await.is_err());
    let (s, h, _) = request(bob_chain(), "d2.test", "d2.test").await.unwrap();
    assert_eq!(
        (s, verify(&h).as_deref()),
        (StatusCode::OK, Some("SUCCESS"))
    );
    assert!(
        !h.contains_key("x-seen-h-ssl-client-cert"),
        "passed only when asked"
    );

    // Optional: none is fine (NONE), a bad one is refused.
    let (s, h, _) = request(as_client(None, None), "opt.test", "opt.test")
        .await
        .unwrap();
    assert_eq!((s, verify(&h).as_deref()), (StatusCode::OK, Some("NONE")));
    assert!(
        request(as_client(Some(&mallory), None), "opt.test", "opt.test")
            .await
            .is_err()
    );
    // optional_no_ca: any certificate is accepted; upstream learns the truth.
    let (s, h, _) = request(as_client(Some(&mallory), None), "noca.test", "noca.test")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::OK);
    assert!(verify(&h).unwrap().starts_with("FAILED:"), "{h:?}");
    let (_, h, _) = request(as_client(Some(&alice), None), "noca.test", "noca.test")
        .await
        .unwrap();
    assert_eq!(verify(&h).as_deref(), Some("SUCCESS"));

    // SNI of a host without the policy, Host of one with it: 421.
    let (s, _, _) = request(as_client(None, None), "open.test", "m.test")
        .await
        .unwrap();
    assert_eq!(s, StatusCode::MISDIRECTED_REQUEST);
    // Plain HTTP cannot carry a certificate: 403.
    let c = h1_client();
    assert_eq!(
        get(&c, proxy.addr, "m.test", "/").await.0,
        StatusCode::FORBIDDEN
    );
    // A forged header never reaches an upstream.
    let (s, h, _) = request(as_client(None, None), "open.test", "open.test")
        .await
        .unwrap();
    assert_eq!((s, verify(&h)), (StatusCode::OK, None));

    let m = proxy.dp.encode_metrics().unwrap();
    assert!(
        metric(
            &m,
            "portico_tls_handshakes_total{result=\"error\",reason=\"client_certificate\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{m}"
    );
}

/// TLS to upstreams: verification off by default, on with the right CA and
/// name, refused otherwise; SNI only when asked; h2 by ALPN; and pools keyed
/// by the whole upstream identity (a connection verified under one setting
/// is never reused under another).
#[tokio::test]
async fn tls_to_upstreams() {
    let ca = TestCa::new();
    let up = Upstream::echo_tls("tls-up", &ca.issue(&["up.test"], 3)).await;
    let other_ca = TestCa::new();
    let tls = |verify: bool, name: &str, sni: bool, ca_pem: String| UpstreamTls {
        verify,
        server_name: name.into(),
        sni,
        ca_pem,
        client_cert: None,
    };
    // A backend that requires a client certificate from its own CA.
    let client_ca = TestCa::new();
    let picky =
        Upstream::echo_tls_with("picky", &ca.issue(&["up.test"], 4), Some(&client_ca)).await;
    let ours = client_ca.issue_client("portico", "proxy");
    let with_cert = UpstreamTls {
        client_cert: Some("default/backend-client#1".into()),
        ..tls(true, "up.test", true, ca.pem())
    };
    let mut cases = vec![
        (
            "off.test",
            Protocol::Http1,
            tls(false, "up.test", false, String::new()),
        ),
        (
            "verified.test",
            Protocol::Http1,
            tls(true, "up.test", true, ca.pem()),
        ),
        (
            "wrong-ca.test",
            Protocol::Http1,
            tls(true, "up.test", true, other_ca.pem()),
        ),
        (
            "wrong-name.test",
            Protocol::Http1,
            tls(true, "other.test", true, ca.pem()),
        ),
        (
            "h2.test",
            Protocol::H2c,
            tls(true, "up.test", true, ca.pem()),
        ),
    ];
    let routes = cases
        .drain(..)
        .map(|(host, protocol, t)| {
            let mut b = backend("b", &[up.addr]);
            b.protocol = protocol;
            let mut rule = forward_rule(vec![], vec![b]);
            if let Action::Forward(f) = &mut rule.action {
                f.upstream_tls = Some(Arc::new(t));
            }
            route(host, &[host], vec![rule])
        })
        .collect();
    let mut routes: Vec<Route> = routes;
    for (host, t) in [
        ("mtls.test", Some(with_cert)),
        ("mtls-none.test", Some(tls(true, "up.test", true, ca.pem()))),
    ] {
        let mut rule = forward_rule(vec![], vec![backend("b", &[picky.addr])]);
        if let Action::Forward(f) = &mut rule.action {
            f.upstream_tls = t.map(Arc::new);
        }
        routes.push(route(host, &[host], vec![rule]));
    }
    let proxy = Proxy::start_with(config(vec![]), |_| {}).await;
    // Certificates before the routes that name them, as the controller does.
    proxy.dp.publish_certs(CertConfig {
        upstream_client_certs: vec![("default/backend-client#1".into(), ours.server_cert())],
        ..Default::default()
    });
    proxy.dp.publish(config(routes));
    let c = h1_client();
    let (s, h, _) = get(&c, proxy.addr, "mtls.test", "/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-seen-client-cert"], "yes");
    let (s, _, _) = get(&c, proxy.addr, "mtls-none.test", "/").await;
    assert_eq!(
        s,
        StatusCode::BAD_GATEWAY,
        "the backend wants a certificate"
    );

    let (s, h, body) = get(&c, proxy.addr, "off.test", "/x").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "tls-up"));
    assert_eq!(h["x-seen-sni"], "", "no SNI unless asked");
    assert_eq!(h["x-seen-alpn"], "http/1.1");
    for _ in 0..2 {
        let (s, h, _) = get(&c, proxy.addr, "verified.test", "/").await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(h["x-seen-sni"], "up.test");
    }
    // Same address, a warm verified connection in the other pool: still
    // refused.
    for host in ["wrong-ca.test", "wrong-name.test"] {
        let (s, _, _) = get(&c, proxy.addr, host, "/").await;
        assert_eq!(s, StatusCode::BAD_GATEWAY, "{host}");
    }
    let (s, h, _) = get(&c, proxy.addr, "h2.test", "/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-seen-alpn"], "h2");
    assert_eq!(h["x-seen-version"], "HTTP/2.0");
}

/// TLS passthrough: a passthrough host's handshake is with the backend
/// itself (its certificate, its SNI), other hosts on the same port are
/// terminated here, and nothing is passed through unless enabled.
#[tokio::test]
async fn ssl_passthrough_splices_chosen_hosts() {
    use portico_dataplane::listen::tls::PassthroughBinding;
    let backend_ca = TestCa::new();
    let tls_backend = Upstream::echo_tls("backend", &backend_ca.issue(&["pass.test"], 8)).await;
    let proxy_ca = TestCa::new();
    let local = proxy_ca.issue(&["local.test", "pass.test"], 9);
    let up = Upstream::echo("local").await;
    let certs = || CertConfig {
        bindings: vec![local.binding("ns/local", &["local.test", "pass.test"])],
        passthrough: vec![PassthroughBinding {
            name: "default/backend:443".into(),
            hosts: vec![Hostname::parse("pass.test").unwrap()],
            endpoints: vec![tls_backend.addr],
        }],
        ..Default::default()
    };
    let routes = || {
        config(vec![route(
            "local",
            &["local.test", "pass.test"],
            vec![forward_rule(vec![], vec![backend("b", &[up.addr])])],
        )])
    };
    let enabled = Proxy::start_with(routes(), |c| c.listener.ssl_passthrough = true).await;
    enabled.dp.publish_certs(certs());
    let disabled = Proxy::start(routes()).await;
    disabled.dp.publish_certs(certs());

    // Passed through: the backend's certificate and the backend's answer,
    // with the SNI it was sent.
    let to_backend = client(backend_ca.roots(), Versions::Both, &[b"http/1.1"]);
    let s = connect(&to_backend, enabled.https, Some("pass.test"))
        .await
        .unwrap();
    let (status, h, body) = https_get(s, "pass.test", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "backend"));
    assert_eq!(h["x-seen-sni"], "pass.test");
    // Same port, another host: terminated here.
    let to_proxy = client(proxy_ca.roots(), Versions::Both, &[b"h2"]);
    let s = connect(&to_proxy, enabled.https, Some("local.test"))
        .await
        .unwrap();
    let (status, _, body) = https_get(s, "local.test", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "local"));
    // Not enabled: pass.test is terminated here too.
    let s = connect(&to_proxy, disabled.https, Some("pass.test"))
        .await
        .unwrap();
    let (_, _, body) = https_get(s, "pass.test", "/").await;
    assert_eq!(body, "local");
    // Garbage instead of a ClientHello hurts nobody.
    let mut junk = TcpStream::connect(enabled.https).await.unwrap();
    junk.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut rsp = Vec::new();
    let _ = junk.read_to_end(&mut rsp).await;
    let s = connect(&to_backend, enabled.https, Some("pass.test"))
        .await
        .unwrap();
    assert_eq!(https_get(s, "pass.test", "/").await.0, StatusCode::OK);
}
