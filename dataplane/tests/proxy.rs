//! Proxy behaviour over real sockets: real hyper upstreams on 127.0.0.1:0,
//! a real dataplane, real clients.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use portico_dataplane::model::*;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn routes_by_host_and_path() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let cfg = config(vec![
        route(
            "site",
            &["site.example.com"],
            vec![
                forward_rule(vec![prefix("/api")], vec![backend("b", &[b.addr])]),
                forward_rule(vec![], vec![backend("a", &[a.addr])]),
            ],
        ),
        route(
            "wild",
            &["*.wild.test"],
            vec![forward_rule(vec![], vec![backend("b", &[b.addr])])],
        ),
    ]);
    let proxy = Proxy::start(cfg).await;
    let c = h1_client();

    let (s, _, body) = get(&c, proxy.addr, "site.example.com", "/").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "a"));
    let (s, _, body) = get(&c, proxy.addr, "Site.Example.com:8080", "/api/x").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "b"));
    let (s, _, body) = get(&c, proxy.addr, "site.example.com", "/apix").await;
    assert_eq!(
        (s, body.as_str()),
        (StatusCode::OK, "a"),
        "prefix is by segment"
    );
    let (s, _, body) = get(&c, proxy.addr, "x.wild.test", "/").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "b"));

    let (s, h, body) = get(&c, proxy.addr, "x.y.wild.test", "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let id = h["x-request-id"].to_str().unwrap();
    assert!(
        body.contains(id),
        "error body carries the request id: {body}"
    );
}

#[tokio::test]
async fn proxy_headers_are_set() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("h.test", up.addr)).await;
    let c = h1_client();
    let req = Request::get(proxy.url("/p?q=1"))
        .header("host", "h.test")
        .header("x-forwarded-for", "10.1.1.1")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-end-to-end", "kept")
        .body(empty())
        .unwrap();
    let (s, h, _) = send(&c, req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-seen-path"], "/p?q=1");
    assert_eq!(h["x-seen-host"], "h.test");
    // A client's own X-Forwarded-For is replaced (no --trusted-proxies).
    assert_eq!(h["x-seen-h-x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-seen-h-x-forwarded-proto"], "http");
    assert_eq!(h["x-seen-h-x-forwarded-host"], "h.test");
    assert_eq!(
        h["x-seen-h-x-forwarded-port"],
        proxy.addr.port().to_string().as_str()
    );
    assert_eq!(h["x-seen-h-x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-seen-h-x-end-to-end"], "kept");
    assert!(!h.contains_key("x-seen-h-x-hop"), "named in Connection");
    assert!(!h.contains_key("x-seen-h-keep-alive"));
    let id = h["x-seen-h-x-request-id"].to_str().unwrap();
    assert_eq!(id.len(), 32, "generated request id: {id}");

    let req = Request::get(proxy.url("/"))
        .header("host", "h.test")
        .header("x-request-id", "client-chosen-1")
        .body(empty())
        .unwrap();
    let (_, h, _) = send(&c, req).await;
    assert_eq!(h["x-seen-h-x-request-id"], "client-chosen-1");
}

/// The forwarding headers and request id reach the upstream once each
/// whichever way they leave: written by the HTTP/1.1 encoder beside the
/// map, put into the map for filters to edit (the rule's or the
/// backend's), for an HTTP/2 upstream, and for a request left to hyper's
/// client.
#[tokio::test]
async fn forwarding_headers_arrive_once_whichever_way_they_leave() {
    let up = Upstream::echo("a").await;
    let set = |name: &'static str, value: &'static str| HeaderModifier {
        set: vec![(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        )],
        add: vec![],
        remove: vec![HeaderName::from_static("x-real-ip")],
    };
    let mut rule_edit = forward_rule(vec![], vec![backend("b", &[up.addr])]);
    rule_edit
        .chain
        .push(Filter::RequestHeaders(set("x-forwarded-host", "edited")));
    let mut edited_backend = backend("b", &[up.addr]);
    edited_backend.filters = vec![Filter::RequestHeaders(set("x-forwarded-proto", "https"))];
    let mut h2 = backend("b", &[up.addr]);
    h2.protocol = Protocol::H2c;
    let proxy = Proxy::start(config(vec![
        route(
            "plain",
            &["plain.test"],
            vec![forward_rule(vec![], vec![backend("b", &[up.addr])])],
        ),
        route("rule-edit", &["rule-edit.test"], vec![rule_edit]),
        route(
            "backend-edit",
            &["backend-edit.test"],
            vec![forward_rule(vec![], vec![edited_backend])],
        ),
        route("h2", &["h2.test"], vec![forward_rule(vec![], vec![h2])]),
    ]))
    .await;
    let c = h1_client();
    let port = proxy.addr.port().to_string();
    // Every header the proxy adds, once (values joined by `|` otherwise).
    let once = |h: &http::HeaderMap, host: &str, proto: &str, real_ip: bool| {
        assert_eq!(h["x-seen-h-x-forwarded-for"], "127.0.0.1", "{host}");
        assert_eq!(h["x-seen-h-x-forwarded-proto"], proto, "{host}");
        assert_eq!(h["x-seen-h-x-forwarded-port"], port.as_str(), "{host}");
        assert_eq!(h["x-seen-h-x-forwarded-host"], host, "{host}");
        assert_eq!(
            h.get("x-seen-h-x-real-ip").map(|v| v.to_str().unwrap()),
            real_ip.then_some("127.0.0.1"),
            "{host}"
        );
        let id = h["x-seen-h-x-request-id"].to_str().unwrap();
        assert_eq!(id.len(), 32, "{host}: one generated id: {id}");
    };

    let (s, h, _) = get(&c, proxy.addr, "plain.test", "/").await;
    assert_eq!(s, StatusCode::OK);
    once(&h, "plain.test", "http", true);
    let (_, h, _) = get(&c, proxy.addr, "rule-edit.test", "/").await;
    once(&h, "edited", "http", false);
    let (_, h, _) = get(&c, proxy.addr, "backend-edit.test", "/").await;
    once(&h, "backend-edit.test", "https", false);
    let (_, h, _) = get(&c, proxy.addr, "h2.test", "/").await;
    assert_eq!(h["x-seen-version"], "HTTP/2.0");
    once(&h, "h2.test", "http", true);

    // A GET with a body of unknown length is left to hyper's client.
    let raw = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: plain.test\r\nconnection: close\r\n\
          transfer-encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n",
        false,
    )
    .await;
    let rsp = RawResponse::parse(&raw).expect("an answer");
    assert_eq!(rsp.status, 200);
    let mut h = http::HeaderMap::new();
    for (name, value) in &rsp.headers {
        h.append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_str(value).unwrap(),
        );
    }
    once(&h, "plain.test", "http", true);
}

#[tokio::test]
async fn h2c_client_to_h1_upstream_and_h1_client_to_h2c_upstream() {
    let up = Upstream::echo("a").await;
    let mut cfg = config(vec![
        route(
            "to-h1",
            &["h1.test"],
            vec![forward_rule(vec![], vec![backend("b1", &[up.addr])])],
        ),
        route(
            "to-h2",
            &["h2.test"],
            vec![forward_rule(vec![], vec![backend("b2", &[up.addr])])],
        ),
    ]);
    if let Action::Forward(f) = &mut std::sync::Arc::make_mut(&mut cfg.routes[1]).rules[0].action {
        f.backends[0].protocol = Protocol::H2c;
    }
    let proxy = Proxy::start(cfg).await;

    // h2c prior knowledge: the host travels as :authority.
    let req = Request::get(format!("http://h1.test:{}/x", proxy.addr.port()))
        .body(empty())
        .unwrap();
    let conn = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(conn),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let rsp = tx.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(rsp.version(), http::Version::HTTP_2);
    assert_eq!(rsp.headers()["x-seen-version"], "HTTP/1.1");
    assert_eq!(
        rsp.headers()["x-seen-host"],
        format!("h1.test:{}", proxy.addr.port())
    );

    // h1 client to an h2c upstream.
    let (s, h, _) = get(&h1_client(), proxy.addr, "h2.test", "/y").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-seen-version"], "HTTP/2.0");
    assert_eq!(h["x-seen-host"], "h2.test");
}

#[tokio::test]
async fn redirects() {
    let mk = |redirect: Redirect, path: &str| Rule {
        matches: vec![prefix(path)],
        ..Rule::new(Action::Redirect(redirect))
    };
    let cfg = config(vec![route(
        "r",
        &["r.test"],
        vec![
            mk(
                Redirect {
                    scheme: Some(Scheme::Https),
                    hostname: None,
                    port: None,
                    path: None,
                    status: RedirectStatus::PermanentRedirect,
                },
                "/secure",
            ),
            mk(
                Redirect {
                    scheme: None,
                    hostname: Some("new.test".into()),
                    port: Some(8443),
                    path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
                    status: RedirectStatus::MovedPermanently,
                },
                "/v1",
            ),
            mk(
                Redirect {
                    scheme: None,
                    hostname: None,
                    port: None,
                    path: Some(PathModifier::ReplaceFullPath("/home".into())),
                    status: RedirectStatus::Found,
                },
                "/old",
            ),
        ],
    )]);
    let proxy = Proxy::start(cfg).await;
    let c = h1_client();
    let (s, h, _) = get(&c, proxy.addr, "r.test:8080", "/secure/a?x=1").await;
    assert_eq!(s, StatusCode::PERMANENT_REDIRECT);
    assert_eq!(h["location"], "https://r.test/secure/a?x=1");
    let (s, h, _) = get(&c, proxy.addr, "r.test", "/v1/items").await;
    assert_eq!(s, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(h["location"], "http://new.test:8443/v2/items");
    let (s, h, _) = get(&c, proxy.addr, "r.test:8080", "/old/x").await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(h["location"], "http://r.test:8080/home");
}

#[tokio::test]
async fn rewrite_and_header_filters() {
    let up = Upstream::echo("a").await;
    let mut rule = forward_rule(vec![prefix("/app")], vec![backend("b", &[up.addr])]);
    if let Action::Forward(f) = &mut rule.action {
        f.rewrite = Some(UrlRewrite {
            hostname: Some("internal.svc".into()),
            path: Some(PathModifier::ReplacePrefixMatch("/".into())),
        });
    }
    rule.chain.push(Filter::RequestHeaders(HeaderModifier {
        set: vec![(
            HeaderName::from_static("x-set"),
            HeaderValue::from_static("s"),
        )],
        add: vec![(
            HeaderName::from_static("x-add"),
            HeaderValue::from_static("2"),
        )],
        remove: vec![HeaderName::from_static("x-drop")],
    }));
    rule.chain.push(Filter::ResponseHeaders(HeaderModifier {
        set: vec![(
            HeaderName::from_static("x-rsp"),
            HeaderValue::from_static("r"),
        )],
        add: vec![],
        remove: vec![HeaderName::from_static("x-upstream")],
    }));
    let proxy = Proxy::start(config(vec![route("r", &["rw.test"], vec![rule])])).await;
    let req = Request::get(proxy.url("/app/deep/x?k=v"))
        .header("host", "rw.test")
        .header("x-set", "client")
        .header("x-add", "1")
        .header("x-drop", "bye")
        .body(empty())
        .unwrap();
    let (s, h, _) = send(&h1_client(), req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-seen-path"], "/deep/x?k=v");
    assert_eq!(h["x-seen-host"], "internal.svc");
    assert_eq!(h["x-seen-h-x-forwarded-host"], "rw.test");
    assert_eq!(h["x-seen-h-x-set"], "s");
    assert_eq!(h["x-seen-h-x-add"], "1|2");
    assert!(!h.contains_key("x-seen-h-x-drop"));
    assert_eq!(h["x-rsp"], "r");
    assert!(!h.contains_key("x-upstream"));
}

#[tokio::test]
async fn weighted_backends_split_traffic() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let mut ba = backend("a", &[a.addr]);
    ba.weight = 3;
    let bb = backend("b", &[b.addr]);
    let proxy = Proxy::start(config(vec![route(
        "r",
        &["w.test"],
        vec![forward_rule(vec![], vec![ba, bb])],
    )]))
    .await;
    let c = h1_client();
    let mut count_a = 0;
    for _ in 0..100 {
        let (_, _, body) = get(&c, proxy.addr, "w.test", "/").await;
        if body == "a" {
            count_a += 1;
        }
    }
    assert_eq!(count_a, 75);
}

#[tokio::test]
async fn error_statuses() {
    // Bound but never listening: the port stays ours (no other test can
    // take it) and connections to it are refused.
    let reserved = tokio::net::TcpSocket::new_v4().unwrap();
    reserved.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let refused = reserved.local_addr().unwrap();
    let slow = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Response::new(empty())
    })
    .await;
    let mut slow_rule = forward_rule(vec![prefix("/slow")], vec![backend("s", &[slow.addr])]);
    slow_rule.timeouts.read = Duration::from_millis(200);
    let cfg = config(vec![route(
        "r",
        &["e.test"],
        vec![
            forward_rule(vec![prefix("/refused")], vec![backend("x", &[refused])]),
            forward_rule(vec![prefix("/empty")], vec![backend("none", &[])]),
            slow_rule,
        ],
    )]);
    let proxy = Proxy::start(cfg).await;
    let c = h1_client();
    let (s, h, body) = get(&c, proxy.addr, "e.test", "/refused").await;
    assert_eq!(s, StatusCode::BAD_GATEWAY, "{body}");
    assert!(body.contains(h["x-request-id"].to_str().unwrap()));
    let (s, _, _) = get(&c, proxy.addr, "e.test", "/empty").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    let (s, _, _) = get(&c, proxy.addr, "e.test", "/slow").await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    let (s, _, _) = get(&c, proxy.addr, "nothing.test", "/").await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let metrics = proxy.dp.encode_metrics().unwrap();
    assert!(
        metrics.contains("portico_upstream_connect_errors_total 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portico_requests_total{route=\"r\",status_class=\"5xx\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("portico_requests_total{route=\"none\",status_class=\"4xx\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn connect_timeout_is_504() {
    // A listener that never accepts, with its backlog filled: further SYNs
    // are dropped, so connecting hangs until the proxy's connect timeout.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let blackhole = sock.listen(0).unwrap();
    let addr = blackhole.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(300), TcpStream::connect(addr)).await
        {
            fillers.push(s);
        }
    }
    let mut rule = forward_rule(vec![], vec![backend("b", &[addr])]);
    rule.timeouts.connect = Duration::from_millis(300);
    let proxy = Proxy::start(config(vec![route("r", &["ct.test"], vec![rule])])).await;
    let (s, _, body) = get(&h1_client(), proxy.addr, "ct.test", "/").await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
}

#[tokio::test]
async fn body_size_limit() {
    let up = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let n = req
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes().len())
            .unwrap_or(0);
        Response::new(full(n.to_string()))
    })
    .await;
    let mut rule = forward_rule(vec![], vec![backend("b", &[up.addr])]);
    rule.set_body_limit(Some(1000));
    let proxy = Proxy::start(config(vec![route("r", &["b.test"], vec![rule])])).await;
    let c = h1_client();

    let post = |body: Body| {
        Request::post(proxy.url("/"))
            .header("host", "b.test")
            .body(body)
            .unwrap()
    };
    let (s, _, body) = send(&c, post(full(vec![b'x'; 1000]))).await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "1000"));
    let (s, _, _) = send(&c, post(full(vec![b'x'; 1001]))).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "declared length");

    // Chunked: no length up front; the limit trips while streaming.
    let chunks = futures_util::stream::iter((0..20).map(|_| {
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(Bytes::from(
            vec![b'y'; 100],
        )))
    }));
    let body = http_body_util::StreamBody::new(chunks).boxed();
    let (s, _, _) = send(&c, post(body)).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "streamed length");
}

/// A body with a declared length arrives byte for byte and in order,
/// whether its pieces are gathered into the upstream connection's write
/// buffer (small) or written from where they lie (large).
#[tokio::test]
async fn a_large_declared_upload_arrives_whole_and_in_order() {
    // FNV-1a over the body, and its length, as the upstream saw it.
    fn fnv(hash: &mut u64, data: &[u8]) {
        for &b in data {
            *hash = (*hash ^ u64::from(b)).wrapping_mul(0x100000001b3);
        }
    }
    let up = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let mut body = req.into_body();
        let (mut hash, mut len) = (0xcbf29ce484222325u64, 0usize);
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.expect("body frame").into_data() {
                fnv(&mut hash, &data);
                len += data.len();
            }
        }
        Response::new(full(format!("{len} {hash:x}")))
    })
    .await;
    let mut cfg = simple("up.test", up.addr);
    std::sync::Arc::make_mut(&mut cfg.routes[0]).rules[0].set_body_limit(None);
    let proxy = Proxy::start(cfg).await;

    // Pieces below and above the size written directly, in turn.
    let sizes = [
        100usize, 70_000, 3_000, 5_000, 1, 300_000, 4_096, 4_095, 700_000,
    ];
    let total: usize = sizes.iter().sum();
    let all: Vec<u8> = (0..total).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut expected = 0xcbf29ce484222325u64;
    fnv(&mut expected, &all);
    let all = Bytes::from(all);
    let mut at = 0;
    let pieces: Vec<Bytes> = sizes
        .iter()
        .map(|n| {
            at += n;
            all.slice(at - n..at)
        })
        .collect();
    let c = h1_client();
    for _ in 0..2 {
        // Twice: the second on the pooled upstream connection.
        let req = Request::post(proxy.url("/upload"))
            .header("host", "up.test")
            .header("content-length", total.to_string())
            .body(
                http_body_util::StreamBody::new(futures_util::stream::iter(
                    pieces.clone().into_iter().map(|p| {
                        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(
                            p,
                        ))
                    }),
                ))
                .boxed(),
            )
            .unwrap();
        let (s, _, body) = send(&c, req).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(body, format!("{total} {expected:x}"));
    }
}

#[tokio::test]
async fn websocket_upgrade_is_tunnelled() {
    let up = Upstream::start(|mut req: Request<hyper::body::Incoming>| async move {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = on.await {
                let mut io = hyper_util::rt::TokioIo::new(io);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .body(empty())
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(simple("ws.test", up.addr)).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"GET /chat HTTP/1.1\r\nHost: ws.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
    )
    .await
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket"), "{head}");
    s.write_all(b"ping-through-tunnel").await.unwrap();
    let mut echo = [0u8; 19];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut echo))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&echo, b"ping-through-tunnel");
}

#[tokio::test]
async fn responses_stream_before_the_upstream_finishes() {
    let (release_tx, release_rx) = tokio::sync::oneshot::channel::<()>();
    let release_rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(release_rx)));
    let up = Upstream::start(move |_req| {
        let release_rx = std::sync::Arc::clone(&release_rx);
        async move {
            let (tx, rx) = tokio::sync::mpsc::channel::<
                Result<hyper::body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
            >(4);
            tokio::spawn(async move {
                let _ = tx
                    .send(Ok(hyper::body::Frame::data(Bytes::from("first"))))
                    .await;
                if let Some(rx) = release_rx.lock().await.take() {
                    let _ = rx.await;
                }
                let _ = tx
                    .send(Ok(hyper::body::Frame::data(Bytes::from("second"))))
                    .await;
            });
            let stream = tokio_stream(rx);
            Response::new(http_body_util::StreamBody::new(stream).boxed())
        }
    })
    .await;
    let proxy = Proxy::start(simple("s.test", up.addr)).await;
    let c = h1_client();
    let req = Request::get(proxy.url("/"))
        .header("host", "s.test")
        .body(empty())
        .unwrap();
    let rsp = c.request(req).await.unwrap();
    let mut body = rsp.into_body();
    let first = tokio::time::timeout(Duration::from_secs(10), body.frame())
        .await
        .expect("first chunk arrives while the upstream is still sending")
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    release_tx.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
}

fn tokio_stream<T>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn malformed_requests_get_400_and_nothing_breaks() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("m.test", up.addr)).await;
    let garbage: [&[u8]; 6] = [
        b"GARBAGE\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: m.test\r\nBad Header\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: m.test\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        b"GET /\x00\x01 HTTP/1.1\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"GET / HTTP/9.9\r\n\r\n",
    ];
    for g in garbage {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(g).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            out.is_empty() || text.starts_with("HTTP/1.1 400") || text.starts_with("HTTP/1.1 505"),
            "{:?} -> {text}",
            String::from_utf8_lossy(g)
        );
    }
    // Random bytes, deterministic seed.
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..50 {
        let len = rng.usize(1..512);
        let bytes: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let _ = s.write_all(&bytes).await;
        let _ = s.shutdown().await;
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    }
    let (s, _, body) = get(&h1_client(), proxy.addr, "m.test", "/").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "a"), "still serving");
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start_with(simple("sl.test", up.addr), |c| {
        c.listener.header_read_timeout = Duration::from_millis(300);
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: sl.te").await.unwrap();
    let mut out = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await;
    assert!(closed.is_ok(), "connection closed by the proxy");
}

#[tokio::test]
async fn idle_client_connections_are_closed() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start_with(simple("i.test", up.addr), |c| {
        c.listener.idle_timeout = Duration::from_millis(200);
        c.listener.header_read_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: i.test\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "idle keep-alive connection closed");
}

#[tokio::test]
async fn access_log_has_one_json_line_per_request() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("log.test", up.addr)).await;
    let c = h1_client();
    let req = Request::post(proxy.url("/logged?secret=no"))
        .header("host", "log.test")
        .header("x-request-id", "rid-42")
        .body(full("12345"))
        .unwrap();
    let (s, _, _) = send(&c, req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eventually!(!proxy.log.lines().is_empty(), "access log line written");
    let lines = proxy.log.lines();
    let l = &lines[0];
    assert_eq!(l["request_id"], "rid-42");
    assert_eq!(l["method"], "POST");
    assert_eq!(l["host"], "log.test");
    assert_eq!(l["path"], "/logged");
    assert_eq!(l["status"], 200);
    assert_eq!(l["bytes_in"], 5);
    assert_eq!(l["bytes_out"], 1);
    assert_eq!(l["route"], "r");
    assert_eq!(l["upstream_addr"], up.addr.to_string());
    assert!(l["time"].as_str().unwrap().ends_with('Z'));
    assert!(l["duration_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(
        l["client_addr"].as_str().unwrap().split(':').next(),
        Some("127.0.0.1")
    );
}

#[tokio::test]
async fn methods_headers_and_query_select_rules() {
    let a = Upstream::echo("a").await;
    let b = Upstream::echo("b").await;
    let m = RouteMatch {
        path: PathMatch::Prefix("/".into()),
        headers: vec![HeaderMatch {
            name: HeaderName::from_static("x-canary"),
            value: ValueMatch::Exact("1".into()),
        }],
        query: vec![QueryMatch {
            name: "v".into(),
            value: ValueMatch::RegularExpression("[0-9]+".into()),
        }],
        method: Some(Method::POST),
    };
    let cfg = config(vec![route(
        "r",
        &["q.test"],
        vec![
            forward_rule(vec![], vec![backend("a", &[a.addr])]),
            forward_rule(vec![m], vec![backend("b", &[b.addr])]),
        ],
    )]);
    let proxy = Proxy::start(cfg).await;
    let c = h1_client();
    let req = |method: Method, canary: &str, q: &str| {
        Request::builder()
            .method(method)
            .uri(proxy.url(&format!("/x?{q}")))
            .header("host", "q.test")
            .header("x-canary", canary)
            .body(empty())
            .unwrap()
    };
    let (_, _, body) = send(&c, req(Method::POST, "1", "v=42")).await;
    assert_eq!(body, "b");
    let (_, _, body) = send(&c, req(Method::GET, "1", "v=42")).await;
    assert_eq!(body, "a");
    let (_, _, body) = send(&c, req(Method::POST, "0", "v=42")).await;
    assert_eq!(body, "a");
    let (_, _, body) = send(&c, req(Method::POST, "1", "v=x")).await;
    assert_eq!(body, "a");
}

#[tokio::test]
async fn upstream_connections_are_reused() {
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let counter = std::sync::Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(|_req| async {
                    Ok::<_, std::convert::Infallible>(Response::new(full("pooled")))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    let proxy = Proxy::start(simple("pool.test", addr)).await;
    let c = h1_client();
    for _ in 0..20 {
        let (s, _, body) = get(&c, proxy.addr, "pool.test", "/").await;
        assert_eq!((s, body.as_str()), (StatusCode::OK, "pooled"));
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "sequential requests share one upstream connection"
    );
}

/// An upstream that closes a kept-alive connection while it sits idle in
/// the pool (as servers with a short keep-alive timeout do). No task polls
/// an idle connection, so the close is seen only when the next request
/// takes it; that request must go on a new connection, not fail with 502.
#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_not_used() {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Each connection answers one request, then waits for the test to say
    // "close" (the proxy has pooled it by then), closes, and says "closed".
    let (close_tx, close_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
    let close_rx = std::sync::Arc::new(tokio::sync::Mutex::new(close_rx));
    tokio::spawn(async move {
        let mut accepted = 0;
        while let Ok((mut stream, _)) = listener.accept().await {
            accepted += 1;
            let (close_rx, closed_tx) = (close_rx.clone(), closed_tx.clone());
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                let body = format!("conn {accepted}");
                let rsp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(rsp.as_bytes()).await.unwrap();
                // Keep-alive as far as the proxy knows; then gone.
                close_rx.lock().await.recv().await;
                drop(stream);
                let _ = closed_tx.send(());
            });
        }
    });
    let proxy = Proxy::start(simple("closing.test", addr)).await;
    let c = h1_client();
    for n in 1..=3 {
        let (s, _, body) = get(&c, proxy.addr, "closing.test", "/").await;
        assert_eq!((s, body), (StatusCode::OK, format!("conn {n}")));
        close_tx.send(()).unwrap();
        closed.recv().await.unwrap();
    }
}

#[tokio::test]
async fn a_reused_connection_still_times_out_its_response_head() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Answers the first two requests on a connection and never the third:
    // the third waits on a connection whose head timer two requests armed
    // before it.
    let (accepted_tx, mut accepted) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let _ = accepted_tx.send(());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for served in 1.. {
                    let mut chunk = [0u8; 1024];
                    let end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    buf.drain(..end);
                    if served > 2 {
                        std::future::pending::<()>().await;
                    }
                    let body = format!("answer {served}");
                    let rsp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if stream.write_all(rsp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let mut cfg = simple("third.test", addr);
    std::sync::Arc::make_mut(&mut cfg.routes[0]).rules[0]
        .timeouts
        .read = Duration::from_millis(300);
    let proxy = Proxy::start(cfg).await;
    let c = h1_client();
    for n in 1..=2 {
        let (s, _, body) = get(&c, proxy.addr, "third.test", "/").await;
        assert_eq!((s, body), (StatusCode::OK, format!("answer {n}")));
    }
    let (s, _, _) = get(&c, proxy.addr, "third.test", "/").await;
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT);
    accepted.recv().await.unwrap();
    assert!(
        accepted.try_recv().is_err(),
        "all three went on one connection"
    );
}

#[tokio::test]
async fn canary_header_then_cookie_then_weight() {
    let main = Upstream::echo("main").await;
    let canary = Upstream::echo("canary").await;
    let mk = |header: Option<CanaryHeader>, weight: u32| {
        let mut rule = forward_rule(vec![], vec![backend("main", &[main.addr])]);
        if let Action::Forward(f) = &mut rule.action {
            f.canary = Some(Box::new(Canary {
                backends: vec![backend("canary", &[canary.addr])],
                header,
                cookie: Some("beta".into()),
                weight,
                weight_total: 4,
                affinity: Default::default(),
            }));
        }
        rule
    };
    let cfg = config(vec![
        route(
            "always-never",
            &["an.test"],
            vec![mk(
                Some(CanaryHeader {
                    name: HeaderName::from_static("x-canary"),
                    value: CanaryHeaderValue::AlwaysNever,
                }),
                0,
            )],
        ),
        route(
            "exact",
            &["ex.test"],
            vec![mk(
                Some(CanaryHeader {
                    name: HeaderName::from_static("x-canary"),
                    value: CanaryHeaderValue::Exact("yes-please".into()),
                }),
                0,
            )],
        ),
        route(
            "pattern",
            &["pat.test"],
            vec![mk(
                Some(CanaryHeader {
                    name: HeaderName::from_static("x-canary"),
                    value: CanaryHeaderValue::Pattern("^v[0-9]+$".into()),
                }),
                0,
            )],
        ),
        route("weight", &["w.test"], vec![mk(None, 1)]),
    ]);
    let proxy = Proxy::start(cfg).await;
    let c = h1_client();
    let ask = |host: &'static str, header: Option<&'static str>, cookie: Option<&'static str>| {
        let mut req = Request::get(proxy.url("/")).header("host", host);
        if let Some(h) = header {
            req = req.header("x-canary", h);
        }
        if let Some(ck) = cookie {
            req = req.header("cookie", ck);
        }
        let c = c.clone();
        async move { send(&c, req.body(empty()).unwrap()).await.2 }
    };
    // Header first: `always`/`never` beat the cookie.
    assert_eq!(
        ask("an.test", Some("always"), Some("beta=never")).await,
        "canary"
    );
    assert_eq!(
        ask("an.test", Some("never"), Some("beta=always")).await,
        "main"
    );
    // Any other header value leaves it to the cookie, then the weight (0).
    assert_eq!(
        ask("an.test", Some("maybe"), Some("a=1; beta=always")).await,
        "canary"
    );
    assert_eq!(ask("an.test", Some("maybe"), None).await, "main");
    assert_eq!(ask("an.test", None, Some("beta=never")).await, "main");
    // An exact value selects; another value falls through to the cookie.
    assert_eq!(ask("ex.test", Some("yes-please"), None).await, "canary");
    assert_eq!(ask("ex.test", Some("always"), None).await, "main");
    assert_eq!(
        ask("ex.test", Some("nope"), Some("beta=always")).await,
        "canary"
    );
    // A pattern selects when it matches.
    assert_eq!(ask("pat.test", Some("v42"), None).await, "canary");
    assert_eq!(ask("pat.test", Some("v4x"), None).await, "main");
    // Weight 1 of 4: exactly a quarter over whole cycles.
    let mut canaries = 0;
    for _ in 0..40 {
        if ask("w.test", None, None).await == "canary" {
            canaries += 1;
        }
    }
    assert_eq!(canaries, 10);
    // The cookie overrides the weight both ways.
    for _ in 0..4 {
        assert_eq!(ask("w.test", None, Some("beta=never")).await, "main");
    }
}

#[tokio::test]
async fn deny_answers_503_without_contacting_upstreams() {
    let cfg = config(vec![route(
        "d",
        &["deny.test"],
        vec![Rule::new(Action::Deny {
            reason: "invalid permanent-redirect".into(),
        })],
    )]);
    let proxy = Proxy::start(cfg).await;
    let (s, _, body) = get(&h1_client(), proxy.addr, "deny.test", "/x").await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        !body.contains("redirect"),
        "reason leaked to client: {body}"
    );
}

#[tokio::test]
async fn regex_rewrite_like_ingress_nginx() {
    let up = Upstream::echo("a").await;
    let mk = |pattern: &str, replacement: Vec<Substitution>| {
        let mut rule = forward_rule(
            vec![RouteMatch {
                path: PathMatch::RegularExpression(format!("(?i:{pattern}).*")),
                ..Default::default()
            }],
            vec![backend("a", &[up.addr])],
        );
        if let Action::Forward(f) = &mut rule.action {
            f.rewrite = Some(UrlRewrite {
                hostname: None,
                path: Some(PathModifier::RegexReplace {
                    pattern: pattern.into(),
                    replacement,
                }),
            });
        }
        rule
    };
    let cfg = config(vec![
        route(
            "captures",
            &["cap.test"],
            vec![mk(
                "/something(/|$)(.*)",
                vec![Substitution::Literal("/".into()), Substitution::Capture(2)],
            )],
        ),
        route(
            "query",
            &["q.test"],
            vec![mk(
                "/old/(.*)",
                vec![
                    Substitution::Literal("/new?from=".into()),
                    Substitution::Capture(1),
                ],
            )],
        ),
    ]);
    let proxy = Proxy::start(cfg).await;
    let c = h1_client();
    for (host, path, seen) in [
        ("cap.test", "/something/new/x?k=v", "/new/x?k=v"),
        ("cap.test", "/something", "/"),
        ("cap.test", "/SOMETHING/Up", "/Up"),
        ("q.test", "/old/page?k=v", "/new?from=page&k=v"),
    ] {
        let (s, h, _) = get(&c, proxy.addr, host, path).await;
        assert_eq!(s, StatusCode::OK, "{host}{path}");
        assert_eq!(h["x-seen-path"], seen, "{host}{path}");
    }
}
