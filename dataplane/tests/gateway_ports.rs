//! Gateway listener ports over real sockets: ports opened, kept and closed
//! by publishes, routes per port, certificates per port, a backend's own
//! header edits and unresolved backends. Everything on 127.0.0.1.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderName, HeaderValue, Request, StatusCode};
use hyper_util::rt::TokioIo;
use portico_dataplane::listen::tls::{CertConfig, PortCerts};
use portico_dataplane::model::*;
use support::tls::*;
use support::*;
use tokio::net::TcpStream;
use tokio::sync::{Semaphore, mpsc};

fn at(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// `n` distinct ports free a moment ago.
fn free_ports<const N: usize>() -> [u16; N] {
    let mut ports = [0; N];
    let mut i = 0;
    while i < N {
        let p = free_port();
        if !ports[..i].contains(&p) {
            ports[i] = p;
            i += 1;
        }
    }
    ports
}

fn http_port(port: u16, routes: Vec<Route>) -> GatewayPort {
    GatewayPort::new(port, PortProtocol::Http, routes)
}

/// A route sending everything for `host` to one backend named `id`.
fn to(id: &str, host: &str, upstream: SocketAddr) -> Route {
    route(
        id,
        &[host],
        vec![forward_rule(vec![], vec![backend(id, &[upstream])])],
    )
}

fn edits(set: &[(&'static str, &'static str)]) -> HeaderModifier {
    HeaderModifier {
        set: set
            .iter()
            .map(|(n, v)| (HeaderName::from_static(n), HeaderValue::from_static(v)))
            .collect(),
        ..HeaderModifier::default()
    }
}

/// Whether a new connection to `addr` is refused.
async fn refused(addr: SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_err()
}

/// An upstream that holds each answer until the test releases one.
struct Held {
    upstream: Upstream,
    arrived: mpsc::UnboundedReceiver<()>,
    gate: Arc<Semaphore>,
}

impl Held {
    async fn start() -> Self {
        let (tx, arrived) = mpsc::unbounded_channel();
        let gate = Arc::new(Semaphore::new(0));
        let g = Arc::clone(&gate);
        let upstream = Upstream::start(move |_req| {
            let (tx, g) = (tx.clone(), Arc::clone(&g));
            async move {
                let _ = tx.send(());
                g.acquire().await.unwrap().forget();
                http::Response::new(full("held"))
            }
        })
        .await;
        Self {
            upstream,
            arrived,
            gate,
        }
    }

    /// Waits for a request to reach it; panics after 10 s rather than hang
    /// a test whose request went elsewhere.
    async fn arrival(&mut self) {
        tokio::time::timeout(std::time::Duration::from_secs(10), self.arrived.recv())
            .await
            .expect("a request reaches the held upstream within 10 s")
            .unwrap();
    }

    fn release(&self) {
        self.gate.add_permits(1);
    }
}

/// A GET for `host` on a new connection to `addr`, run by its own task.
fn spawn_get(
    addr: SocketAddr,
    host: &'static str,
) -> tokio::task::JoinHandle<(StatusCode, http::HeaderMap, String)> {
    tokio::spawn(async move { get(&h1_client(), addr, host, "/").await })
}

#[tokio::test]
async fn each_port_routes_among_its_own_routes() {
    let main = Upstream::echo("main").await;
    let one = Upstream::echo("one").await;
    let two = Upstream::echo("two").await;
    let [p1, p2] = free_ports();
    let mut cfg = config(vec![to("main", "app.test", main.addr)]);
    cfg.ports = vec![
        http_port(p1, vec![to("one", "app.test", one.addr)]),
        http_port(p2, vec![to("two", "app.test", two.addr)]),
    ];
    let (proxy, report) = Proxy::start_gateway(cfg, |_| {}).await;
    let mut want = vec![(p1, Ok(())), (p2, Ok(()))];
    want.sort_by_key(|(p, _)| *p);
    assert_eq!(report.ports, want);

    let c = h1_client();
    for (addr, upstream) in [(proxy.addr, "main"), (at(p1), "one"), (at(p2), "two")] {
        for _ in 0..3 {
            let (status, headers, body) = get(&c, addr, "app.test", "/").await;
            assert_eq!(status, StatusCode::OK, "{addr}");
            assert_eq!(body, upstream, "{addr}");
            // The port the request came in on.
            assert_eq!(
                headers["x-seen-h-x-forwarded-port"],
                addr.port().to_string()
            );
        }
    }
    // HTTP/2 with prior knowledge, as on the main listener.
    let mut h2 = h2c_connection(at(p2)).await;
    let req = Request::get("http://app.test/").body(empty()).unwrap();
    let rsp = h2.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["x-upstream"], "two");
    assert_eq!(
        sample(&proxy.scrape().await, "portico_gateway_ports_open"),
        Some(2.0)
    );
}

#[tokio::test]
async fn a_port_takes_the_main_listeners_client_settings() {
    let up = Upstream::echo("up").await;
    let [p] = free_ports();
    let mut cfg = config(vec![]);
    cfg.ports = vec![http_port(p, vec![to("up", "app.test", up.addr)])];
    let (_proxy, _) = Proxy::start_gateway(cfg, |c| c.listener.proxy_protocol = true).await;

    // The PROXY protocol header names the client.
    let request = "PROXY TCP4 203.0.113.7 127.0.0.1 4711 80\r\n\
                   GET / HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n";
    let rsp = RawResponse::parse(&raw_exchange(at(p), request.as_bytes(), false).await).unwrap();
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.header("x-seen-h-x-real-ip"), Some("203.0.113.7"));
    // Without one, the connection is closed unanswered.
    let bare = b"GET / HTTP/1.1\r\nHost: app.test\r\n\r\n";
    assert!(raw_exchange(at(p), bare, false).await.is_empty());
}

#[tokio::test]
async fn a_port_answers_a_plain_404_for_hosts_it_does_not_serve() {
    let main = Upstream::echo("main").await;
    let one = Upstream::echo("one").await;
    let default = Pod::start("default").await;
    let [p] = free_ports();
    let mut cfg = config(vec![to("main", "main.test", main.addr)]);
    cfg.ports = vec![http_port(p, vec![to("one", "app.test", one.addr)])];
    cfg.default_backend = Some(backend("default", &[default.addr]));
    let (proxy, _) = Proxy::start_gateway(cfg, |_| {}).await;
    let c = h1_client();

    // Another port's host, an unknown one: a plain 404; the default
    // backend belongs to the main listeners.
    for host in ["main.test", "other.test"] {
        let (status, headers, body) = get(&c, at(p), host, "/").await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{host}");
        assert!(body.starts_with("404 Not Found"), "{body}");
        assert!(headers.get("x-upstream").is_none());
    }
    assert_eq!(default.hits(), 0);
    // The port's host is not served on the main listener, which asks its
    // default backend for the page.
    let (status, _, _) = get(&c, proxy.addr, "app.test", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(default.hits(), 1);
    let (_, _, body) = get(&c, at(p), "app.test", "/").await;
    assert_eq!(body, "one");
}

#[tokio::test]
async fn a_kept_port_keeps_its_connections_and_a_dropped_one_drains() {
    let one = Upstream::echo("one").await;
    let two = Upstream::echo("two").await;
    let mut held = Held::start().await;
    let [p] = free_ports();
    let slow = held.upstream.addr;
    let with_port = |upstream: SocketAddr| {
        let mut cfg = config(vec![]);
        cfg.ports = vec![http_port(
            p,
            vec![
                to("app", "app.test", upstream),
                to("slow", "slow.test", slow),
            ],
        )];
        cfg
    };
    let (proxy, _) = Proxy::start_gateway(with_port(one.addr), |_| {}).await;

    // One kept-alive HTTP/1.1 connection across the republish.
    let stream = TcpStream::connect(at(p)).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let ask = |tx: &mut hyper::client::conn::http1::SendRequest<Body>| {
        let req = Request::get("/")
            .header("host", "app.test")
            .body(empty())
            .unwrap();
        let sent = tx.send_request(req);
        async move {
            let rsp = sent.await.expect("the same connection answers");
            rsp.headers()["x-upstream"].to_str().unwrap().to_owned()
        }
    };
    assert_eq!(ask(&mut tx).await, "one");
    let report = proxy.dp.publish(with_port(two.addr));
    assert_eq!(report.ports, vec![(p, Ok(()))]);
    // The new table, on the same connection.
    assert_eq!(ask(&mut tx).await, "two");
    assert!(!conn.is_finished());

    // A request in flight on the port when a publish drops it.
    let in_flight = spawn_get(at(p), "slow.test");
    held.arrival().await;
    let report = proxy.dp.publish(config(vec![]));
    assert!(report.ports.is_empty());
    assert_eventually!(refused(at(p)).await, "the dropped port still accepts");
    assert!(!in_flight.is_finished());
    held.release();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "held"));
    assert_eq!(
        sample(&proxy.scrape().await, "portico_gateway_ports_open"),
        Some(0.0)
    );
}

#[tokio::test]
async fn a_taken_port_is_reported_and_bound_once_free() {
    let up = Upstream::echo("up").await;
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = holder.local_addr().unwrap().port();
    let [free] = free_ports();
    let ports = || {
        vec![
            http_port(free, vec![to("a", "app.test", up.addr)]),
            http_port(taken, vec![to("b", "app.test", up.addr)]),
        ]
    };
    let mut cfg = config(vec![]);
    cfg.ports = ports();
    let (proxy, report) = Proxy::start_gateway(cfg.clone(), |_| {}).await;
    let outcome = |report: &portico_dataplane::PublishReport, port| {
        report
            .ports
            .iter()
            .find(|(p, _)| *p == port)
            .map(|(_, r)| r.clone())
    };
    assert_eq!(outcome(&report, taken), Some(Err("address in use".into())));
    assert_eq!(outcome(&report, free), Some(Ok(())));
    let c = h1_client();
    let (status, _, _) = get(&c, at(free), "app.test", "/").await;
    assert_eq!(status, StatusCode::OK);

    // Free now: the next publish binds it.
    drop(holder);
    let report = proxy.dp.publish(cfg);
    assert!(report.ports.iter().all(|(_, r)| r.is_ok()), "{report:?}");
    let (status, _, body) = get(&c, at(taken), "app.test", "/").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "up"));

    // A port listed twice, or a main listener's, is left out; the rest
    // serves.
    let [twice] = free_ports();
    let mut cfg = config(vec![]);
    cfg.ports = ports();
    cfg.ports.push(http_port(twice, vec![]));
    cfg.ports.push(http_port(twice, vec![]));
    cfg.ports.push(http_port(proxy.addr.port(), vec![]));
    let report = proxy.dp.publish(cfg);
    assert_eq!(outcome(&report, twice), Some(Err("listed 2 times".into())));
    assert_eq!(
        outcome(&report, proxy.addr.port()),
        Some(Err("the port of a main listener".into()))
    );
    assert_eq!(outcome(&report, free), Some(Ok(())));
    assert!(refused(at(twice)).await);
    // Operators see the refusals, and the ports, in `/debug/routes`.
    let (_, _, page) = get(&c, proxy.debug, "debug", "/debug/routes").await;
    let page: serde_json::Value = serde_json::from_str(&page).unwrap();
    let rejected = page["rejected"].as_array().unwrap();
    assert!(
        rejected.contains(&format!("Gateway port {twice}: listed 2 times").into()),
        "{rejected:?}"
    );
    assert_eq!(page["config"]["ports"].as_array().unwrap().len(), 5);
    let (status, _, _) = get(&c, at(free), "app.test", "/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_https_port_serves_its_own_certificates_only() {
    let ca = TestCa::new();
    let a = ca.issue(&["a.test"], 1);
    let b = ca.issue(&["b.test"], 2);
    let main_cert = ca.issue(&["main.test"], 3);
    let up = Upstream::echo("up").await;
    let [p] = free_ports();
    let mut cfg = config(vec![to("main", "main.test", up.addr)]);
    cfg.ports = vec![GatewayPort::new(
        p,
        PortProtocol::Https,
        vec![to("a", "a.test", up.addr), to("b", "b.test", up.addr)],
    )];
    let (proxy, report) = Proxy::start_gateway(cfg, |_| {}).await;
    assert_eq!(report.ports, vec![(p, Ok(()))]);
    proxy.dp.publish_certs(CertConfig {
        bindings: vec![main_cert.binding("ns/main", &["main.test"])],
        default: Some(main_cert.server_cert()),
        ports: vec![PortCerts {
            port: p,
            bindings: vec![
                a.binding("ns/a", &["a.test"]),
                b.binding("ns/b", &["b.test"]),
            ],
            default: None,
        }],
        ..Default::default()
    });

    let trusting = client(ca.roots(), Versions::Both, &[b"h2", b"http/1.1"]);
    for (name, cert) in [("a.test", &a), ("b.test", &b)] {
        let s = connect(&trusting, at(p), Some(name)).await.unwrap();
        assert_eq!(served_leaf(&s), cert.der, "{name}");
        assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (status, headers, body) = https_get(s, name, "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "up"));
        assert_eq!(headers["x-seen-h-x-forwarded-proto"], "https");
    }
    let h1 = client(ca.roots(), Versions::Tls12, &[b"http/1.1"]);
    let s = connect(&h1, at(p), Some("a.test")).await.unwrap();
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(https_get(s, "a.test", "/").await.0, StatusCode::OK);

    // A name the port has no certificate for (the main listener's
    // included) or no SNI: the handshake fails, whatever the client would
    // accept; the main listener's certificates are never sent here.
    let anything = any_cert_client(&[b"h2", b"http/1.1"]);
    for sni in [Some("unknown.test"), Some("main.test"), None] {
        let e = connect(&anything, at(p), sni).await.unwrap_err();
        let tls = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>());
        assert_eq!(
            tls,
            Some(&rustls::Error::AlertReceived(
                rustls::AlertDescription::AccessDenied
            )),
            "{sni:?}: {e}"
        );
    }
    // The main listener still serves its own.
    let s = connect(&trusting, proxy.https, Some("main.test"))
        .await
        .unwrap();
    assert_eq!(served_leaf(&s), main_cert.der);
}

#[tokio::test]
async fn each_backend_applies_only_its_own_header_edits() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let mut ba = backend("a", &[a.addr]);
    ba.filters = vec![
        Filter::RequestHeaders(edits(&[("x-backend", "a"), ("x-order", "backend")])),
        Filter::ResponseHeaders(edits(&[("x-picked", "a"), ("x-rsp-order", "backend")])),
    ];
    let mut bb = backend("b", &[b.addr]);
    bb.filters = vec![
        Filter::RequestHeaders(edits(&[("x-b-only", "b")])),
        Filter::ResponseHeaders(edits(&[("x-picked", "b")])),
    ];
    let mut rule = forward_rule(vec![], vec![ba, bb]);
    // The rule's own edits: its request side runs before a backend's, its
    // response side after.
    rule.chain
        .push(Filter::RequestHeaders(edits(&[("x-order", "rule")])));
    rule.chain
        .push(Filter::ResponseHeaders(edits(&[("x-rsp-order", "rule")])));
    let proxy = Proxy::start(config(vec![route("r", &["app.test"], vec![rule])])).await;

    let c = h1_client();
    let mut seen = [0, 0];
    for _ in 0..4 {
        let (status, h, _) = get(&c, proxy.addr, "app.test", "/").await;
        assert_eq!(status, StatusCode::OK);
        let picked = h["x-upstream"].to_str().unwrap();
        assert_eq!(h["x-picked"], picked, "the picked backend's edit only");
        assert_eq!(h["x-rsp-order"], "rule");
        match picked {
            "a" => {
                seen[0] += 1;
                assert_eq!(h["x-seen-h-x-backend"], "a");
                assert_eq!(h["x-seen-h-x-order"], "backend");
                assert!(h.get("x-seen-h-x-b-only").is_none());
            }
            _ => {
                seen[1] += 1;
                assert_eq!(h["x-seen-h-x-b-only"], "b");
                assert_eq!(h["x-seen-h-x-order"], "rule");
                assert!(h.get("x-seen-h-x-backend").is_none());
            }
        }
    }
    assert_eq!(seen, [2, 2], "a 1:1 split alternates");

    // Any other filter on a backend refuses the rule, on a Gateway port
    // as on the main listeners.
    let [p] = free_ports();
    let mut bad = backend("a", &[a.addr]);
    bad.filters = vec![Filter::Hsts(Hsts::DEFAULT)];
    let mut cfg = config(vec![]);
    cfg.ports = vec![http_port(
        p,
        vec![route(
            "bad",
            &["app.test"],
            vec![forward_rule(vec![], vec![bad])],
        )],
    )];
    let (gw, report) = Proxy::start_gateway(cfg, |_| {}).await;
    assert_eq!(report.errors.len(), 1, "{:?}", report.errors);
    assert_eq!(report.errors[0].route_id, "bad");
    assert_eq!(
        report.errors[0].field,
        "action.forward.backends[0].filters[0]"
    );
    let (status, _, _) = get(&c, at(p), "app.test", "/").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    drop(gw);
}

#[tokio::test]
async fn an_unresolved_backend_answers_500_and_keeps_its_share() {
    let good = Pod::start("good").await;
    let missing = || Backend::invalid("default/missing", 1, "Service default/missing not found");
    let [p] = free_ports();
    let mut cfg = config(vec![]);
    cfg.ports = vec![http_port(
        p,
        vec![
            route(
                "alone",
                &["alone.test"],
                vec![forward_rule(vec![], vec![missing()])],
            ),
            route(
                "split",
                &["split.test"],
                vec![forward_rule(
                    vec![],
                    vec![backend("good", &[good.addr]), missing()],
                )],
            ),
        ],
    )];
    let (proxy, report) = Proxy::start_gateway(cfg, |_| {}).await;
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    // Only the resolved backend has endpoints.
    assert_eq!(proxy.dp.endpoint_health().len(), 1);

    let c = h1_client();
    let (status, _, _) = get(&c, at(p), "alone.test", "/").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // gRPC: UNAVAILABLE, as GRPCRoute asks.
    let mut h2 = h2c_connection(at(p)).await;
    let call = Request::post("http://alone.test/pkg.Service/Call")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    let rsp = h2.send_request(call).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.headers()["grpc-status"], "14");

    // The weighted split is a rotation: exactly half each.
    let mut answered = [0, 0];
    for _ in 0..200 {
        match get(&c, at(p), "split.test", "/").await.0 {
            StatusCode::OK => answered[0] += 1,
            StatusCode::INTERNAL_SERVER_ERROR => answered[1] += 1,
            other => panic!("{other}"),
        }
    }
    assert_eq!(answered, [100, 100]);
    assert_eq!(good.hits(), 100);
    assert_eq!(
        sample(
            &proxy.scrape().await,
            "portico_backend_unresolved_requests_total"
        ),
        Some(102.0)
    );
    // No upstream in the access log for those answers.
    assert_eventually!(proxy.log.lines().len() >= 202, "access log lines");
    let lines = proxy.log.lines();
    let unresolved: Vec<_> = lines.iter().filter(|l| l["status"] == 500).collect();
    assert_eq!(unresolved.len(), 101);
    assert!(unresolved.iter().all(|l| l["upstream_addr"].is_null()));
}

#[tokio::test]
async fn shutdown_drains_a_gateway_port() {
    let mut held = Held::start().await;
    let [p] = free_ports();
    let mut cfg = config(vec![]);
    cfg.ports = vec![http_port(
        p,
        vec![to("slow", "slow.test", held.upstream.addr)],
    )];
    let (mut proxy, _) = Proxy::start_gateway(cfg, |_| {}).await;

    let in_flight = spawn_get(at(p), "slow.test");
    held.arrival().await;
    proxy.begin_shutdown();
    assert_eventually!(
        refused(at(p)).await,
        "the port still accepts while draining"
    );
    assert!(!in_flight.is_finished());
    held.release();
    let (status, _, body) = in_flight.await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "held"));
    let drained = proxy.done.take().unwrap().await.unwrap();
    assert!(drained, "the drain finished in time");
}
