//! HTTP semantics a proxy owes its clients and upstreams, over real sockets:
//! hop-by-hop headers, answers to malformed heads, forwarding headers,
//! redirects, request ids; and the defaults, which match ingress-nginx.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use portico_dataplane::model::*;
use portico_dataplane::{DataplaneConfig, ListenerConfig};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP/1.1 upstream that answers every request head on a connection
/// with `response`, byte for byte.
async fn raw_upstream(response: &'static [u8]) -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 1024];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        if stream.write_all(response).await.is_err() {
                            return;
                        }
                    }
                    match stream.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
            });
        }
    });
    addr
}

/// GET `/` from `host` over h2c with prior knowledge; the host goes as
/// `:authority`, which HTTP/2 routes by.
async fn h2c_get(proxy: std::net::SocketAddr, host: &str) -> (StatusCode, http::HeaderMap, String) {
    let mut tx = h2c_connection(proxy).await;
    let req = Request::get(format!("http://{host}:{}/", proxy.port()))
        .body(empty())
        .unwrap();
    let (parts, body) = tx.send_request(req).await.unwrap().into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

#[tokio::test]
async fn hop_by_hop_response_headers_never_reach_the_client() {
    let up = raw_upstream(
        b"HTTP/1.1 200 OK\r\n\
          Connection: x-a\r\n\
          x-a: 1\r\n\
          Keep-Alive: timeout=5\r\n\
          Proxy-Connection: keep-alive\r\n\
          x-end-to-end: kept\r\n\
          Transfer-Encoding: chunked\r\n\
          \r\n\
          5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let proxy = Proxy::start(simple("hop.test", up)).await;
    for h2 in [false, true] {
        let (s, h, body) = if h2 {
            h2c_get(proxy.addr, "hop.test").await
        } else {
            get(&h1_client(), proxy.addr, "hop.test", "/").await
        };
        assert_eq!((s, body.as_str()), (StatusCode::OK, "hello"), "h2: {h2}");
        assert_eq!(h["x-end-to-end"], "kept", "h2: {h2}");
        for name in ["connection", "x-a", "keep-alive", "proxy-connection"] {
            assert!(!h.contains_key(name), "h2: {h2}: {name} reached the client");
        }
        // The upstream's chunking is its own hop's framing. An HTTP/1.1
        // answer of unknown length is chunked again by the proxy's own
        // framing; HTTP/2 has none.
        match h.get(header::TRANSFER_ENCODING) {
            None => {}
            Some(te) if !h2 && te == "chunked" => {}
            Some(te) => panic!("h2: {h2}: transfer-encoding {te:?} reached the client"),
        }
    }
}

/// Request heads that are malformed at the header level.
const BAD_HEADS: [&[u8]; 4] = [
    b"GET / HTTP/1.1\r\nHost: m.test\r\nBad Header\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: m.test\r\nX-B\x01d: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: m.test\r\nX Space: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: m.test\r\n: no-name\r\n\r\n",
];

#[tokio::test]
async fn a_malformed_header_gets_a_400_status_line() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("m.test", up.addr)).await;
    for head in BAD_HEADS {
        let out = raw_exchange(proxy.addr, head, false).await;
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.starts_with("HTTP/1.1 400 "),
            "{:?} -> {text:?}",
            String::from_utf8_lossy(head)
        );
    }
}

/// Malformed, truncated and odd requests, from a fixed seed: broken request
/// lines, headers, framing, hosts and paths, and raw noise, plain and after
/// the HTTP/2 preface.
fn malformed_requests() -> Vec<Vec<u8>> {
    let bases: [&[u8]; 6] = [
        b"POST /p/x?q=1 HTTP/1.1\r\nHost: f.test\r\nContent-Length: 5\r\nX-Request-Id: abc\r\n\r\nhello",
        b"POST /p HTTP/1.1\r\nHost: f.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"GET /r/old HTTP/1.1\r\nHost: f.test:8080\r\n\r\n",
        b"GET /ws HTTP/1.1\r\nHost: f.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
        b"GET http://f.test/abs HTTP/1.1\r\nHost: f.test\r\nX-Forwarded-For: 1.2.3.4\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x12\x04\x00\x00\x00\x00\x00",
    ];
    let mut out: Vec<Vec<u8>> = [
        &b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: f.test:99999\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: :\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: f.test\r\nHost: g.test\r\n\r\n",
        b"GET //../../x HTTP/1.1\r\nHost: f.test\r\n\r\n",
        b"GET /r/old%zz HTTP/1.1\r\nHost: f.test\r\n\r\n",
        b"GET /r/old HTTP/1.1\r\nHost: f.test\xff\r\n\r\n",
        b"OPTIONS * HTTP/1.1\r\nHost: f.test\r\n\r\n",
        b"CONNECT f.test:443 HTTP/1.1\r\nHost: f.test:443\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: f.test\r\nContent-Length: -1\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: f.test\r\nContent-Length: 1,1\r\n\r\nx",
        b"POST /p HTTP/1.1\r\nHost: f.test\r\nContent-Length: 99\r\n\r\nshort",
        b"POST /p HTTP/1.1\r\nHost: f.test\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffffff\r\n",
        b"POST /p HTTP/1.1\r\nHost: f.test\r\nTransfer-Encoding: chunked\r\n\r\n5;x=\"\r\nhel",
        b"POST /p HTTP/1.1\r\nHost: f.test\r\nTransfer-Encoding: gzip\r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: f.test\r\nX-Request-Id: \x7f\x80\r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: f.test\r\nX-Forwarded-For: ,,,\r\nX-Forwarded-For: \r\n\r\n",
        b"GET /p HTTP/1.1\r\nHost: f.test\r\nContent-Type: application/grpc-web-text\r\n\r\n",
        b"POST /p HTTP/1.1\r\nHost: f.test\r\nContent-Type: application/grpc\r\nTE: trailers\r\ngrpc-timeout: 99999999999H\r\nContent-Length: 3\r\n\r\n\x00\x00\x00",
        b"GET / HTTP/1.0\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"\r\n\r\n\r\n",
    ]
    .iter()
    .map(|b| b.to_vec())
    .collect();
    out.push(
        format!(
            "GET / HTTP/1.1\r\nHost: f.test\r\nX-Big: {}\r\n\r\n",
            "b".repeat(200_000)
        )
        .into_bytes(),
    );
    let mut many = b"GET / HTTP/1.1\r\nHost: f.test\r\n".to_vec();
    for i in 0..500 {
        many.extend_from_slice(format!("X-H{i}: v\r\n").as_bytes());
    }
    many.extend_from_slice(b"\r\n");
    out.push(many);

    let mut rng = fastrand::Rng::with_seed(0x9e37);
    const ODD: [u8; 10] = [0, b'\r', b'\n', b':', b' ', b'\t', 0x7f, 0xff, b'%', b'/'];
    for _ in 0..240 {
        let mut req = bases[rng.usize(..bases.len())].to_vec();
        for _ in 0..rng.usize(1..4) {
            let i = rng.usize(..req.len());
            match rng.u8(..4) {
                0 => req[i] = rng.u8(..),
                1 => req[i] = ODD[rng.usize(..ODD.len())],
                2 => req.insert(i, ODD[rng.usize(..ODD.len())]),
                _ => req.truncate(i.max(1)),
            }
        }
        out.push(req);
    }
    // Bytes valid in a request target, so the head still parses and the
    // odd path goes on to routing, rewrites and redirects.
    const IN_PATH: [u8; 10] = [b'%', b'/', b'.', b'?', b'#', b'[', b'@', b'~', b'*', b':'];
    for _ in 0..80 {
        let mut req = bases[rng.usize(..bases.len() - 1)].to_vec();
        // The target runs from after its leading `/` to the second space.
        let start = req.iter().position(|b| *b == b' ').unwrap_or(0) + 2;
        let end = start + req[start..].iter().position(|b| *b == b' ').unwrap_or(0);
        for _ in 0..rng.usize(1..5) {
            req.insert(rng.usize(start..=end), IN_PATH[rng.usize(..IN_PATH.len())]);
        }
        out.push(req);
    }
    for _ in 0..40 {
        let len = rng.usize(1..512);
        out.push((0..len).map(|_| rng.u8(..)).collect());
    }
    out
}

#[tokio::test]
async fn malformed_requests_never_panic_and_serving_goes_on() {
    let up = Upstream::echo("a").await;
    let redirect = prefix_redirect("/r", "/new");
    let forward = forward_rule(vec![prefix("/")], vec![backend("b", &[up.addr])]);
    let cfg = config(vec![route("f", &["f.test"], vec![redirect, forward])]);
    // Short client timeouts: a request left unfinished (not half-closed)
    // is cut off soon rather than in a minute.
    let proxy = Proxy::start_with(cfg, |c| {
        c.listener.header_read_timeout = Duration::from_secs(1);
        c.listener.idle_timeout = Duration::from_secs(1);
    })
    .await;

    // A panic in a connection or request task would only end that task:
    // the hook sees it wherever it happens. The hook is the process's, so
    // it counts only this test's thread (this single-threaded runtime runs
    // the proxy's tasks too) and the dataplane's own threads, not the
    // failing assertions of tests running beside it.
    let panics = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&panics);
    let test_thread = std::thread::current().id();
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let thread = std::thread::current();
        if thread.id() == test_thread || thread.name().is_some_and(|n| n.starts_with("portico-")) {
            counted.fetch_add(1, Ordering::SeqCst);
        }
        default_hook(info);
    }));
    // Each request twice: half-closed after it (the proxy sees the end at
    // once), and left open (it is served or cut off by the timeouts).
    let requests = malformed_requests();
    let exchanges = requests.iter().flat_map(|r| [(r, true), (r, false)]);
    futures_util::stream::iter(exchanges)
        .for_each_concurrent(64, |(req, half_close)| async move {
            raw_exchange(proxy.addr, req, half_close).await;
        })
        .await;
    let (s, _, body) = get(&h1_client(), proxy.addr, "f.test", "/").await;
    // Back to the default hook before any assertion can panic.
    drop(std::panic::take_hook());
    assert_eq!(panics.load(Ordering::SeqCst), 0, "panics while serving");
    assert_eq!((s, body.as_str()), (StatusCode::OK, "a"), "still serving");
}

#[tokio::test]
async fn a_client_cannot_claim_https_on_the_plain_listener() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("xfp.test", up.addr)).await;
    let req = Request::get(proxy.url("/"))
        .header("host", "xfp.test")
        .header("x-forwarded-proto", "https")
        .body(empty())
        .unwrap();
    let (s, h, _) = send(&h1_client(), req).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["x-seen-h-x-forwarded-proto"], "http");
}

#[tokio::test]
async fn see_other_and_temporary_redirects() {
    let redirect = |path: &str, to: Redirect| Rule {
        matches: vec![prefix(path)],
        ..Rule::new(Action::Redirect(to))
    };
    let cfg = config(vec![route(
        "r",
        &["redir.test"],
        vec![
            redirect(
                "/form",
                Redirect {
                    scheme: None,
                    hostname: None,
                    port: None,
                    path: Some(PathModifier::ReplaceFullPath("/done".into())),
                    status: RedirectStatus::SeeOther,
                },
            ),
            redirect(
                "/api",
                Redirect {
                    scheme: None,
                    hostname: Some("api.test".into()),
                    port: None,
                    path: None,
                    status: RedirectStatus::TemporaryRedirect,
                },
            ),
        ],
    )]);
    let proxy = Proxy::start(cfg).await;
    let c = h1_client();
    let post = |path: &str| {
        Request::post(proxy.url(path))
            .header("host", "redir.test:8080")
            .body(full("x"))
            .unwrap()
    };
    let (s, h, _) = send(&c, post("/form/submit")).await;
    assert_eq!(s, StatusCode::SEE_OTHER);
    assert_eq!(h["location"], "http://redir.test:8080/done");
    let (s, h, _) = send(&c, post("/api/v1?k=v")).await;
    assert_eq!(s, StatusCode::TEMPORARY_REDIRECT);
    assert_eq!(h["location"], "http://api.test:8080/api/v1?k=v");
}

/// Sends one request without an `X-Request-Id`; returns the id the upstream
/// received and the access-log line's id. (A forwarded answer carries the
/// upstream's headers only, as with ingress-nginx; error answers name the
/// id.)
async fn generated_request_id() -> (String, String) {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("rid.test", up.addr)).await;
    let (s, h, _) = get(&h1_client(), proxy.addr, "rid.test", "/").await;
    assert_eq!(s, StatusCode::OK);
    let upstream = h["x-seen-h-x-request-id"].to_str().unwrap().to_owned();
    assert_eventually!(!proxy.log.lines().is_empty(), "access log line written");
    let logged = proxy.log.lines()[0]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    (upstream, logged)
}

#[tokio::test]
async fn a_generated_request_id_is_the_one_upstream_and_in_the_log() {
    let (upstream, logged) = generated_request_id().await;
    assert_eq!(upstream.len(), 32, "generated id: {upstream}");
    assert!(
        upstream.bytes().all(|b| b.is_ascii_hexdigit()),
        "{upstream}"
    );
    assert_eq!(logged, upstream);
}

#[test]
fn defaults_match_ingress_nginx() {
    let t = Timeouts::default();
    assert_eq!(t.connect, Duration::from_secs(5), "proxy-connect-timeout");
    assert_eq!(t.read, Duration::from_secs(60), "proxy-read-timeout");
    assert_eq!(t.send, Duration::from_secs(60), "proxy-send-timeout");
    assert_eq!(t.request, None);

    assert_eq!(DEFAULT_MAX_REQUEST_BODY, 1024 * 1024, "proxy-body-size 1m");
    // A forwarding rule gets the default body limit on its chain...
    let rule = forward_rule(vec![], vec![]);
    assert_eq!(rule.chain, [Filter::BodyLimit(1024 * 1024)]);
    // ...and one that names no timeouts the default ones.
    let mut rule = serde_json::to_value(rule).unwrap();
    rule.as_object_mut().unwrap().remove("timeouts");
    let rule: Rule = serde_json::from_value(rule).unwrap();
    assert_eq!(rule.timeouts, Timeouts::default());

    let l = ListenerConfig::default();
    assert_eq!(
        l.header_read_timeout,
        Duration::from_secs(60),
        "client-header-timeout"
    );
    assert_eq!(
        l.idle_timeout,
        Duration::from_secs(75),
        "keep-alive (client)"
    );
    assert_eq!(
        DataplaneConfig::default().drain_timeout,
        Duration::from_secs(30)
    );
}
