//! Request mirroring over real sockets: the copy's method, path, headers
//! and body; `Host` and path from a `mirror-target`; the sampled fraction;
//! a mirror that never answers, one that is closed, a body over the bound
//! and a client that goes away cost the original nothing and are counted;
//! a request an access check refuses is not copied.
//!
//! Copies travel on their own tasks, so a test that expects none sends a
//! "fence" request on a rule that copies everything and waits for the
//! fence's copy: any copy that should not exist was started before it.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use portico_dataplane::filter::mirror::MirrorConfig;
use portico_dataplane::model::*;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const HOST: &str = "app.test";

/// A request as a server saw it.
#[derive(Debug)]
struct Seen {
    method: Method,
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

/// An upstream that answers 200 and reports each request it read whole.
async fn recorder(name: &'static str) -> (Upstream, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let up = Upstream::start(move |req: Request<hyper::body::Incoming>| {
        let tx = tx.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect().await.map(|b| b.to_bytes());
            let len = body.as_ref().map_or(0, |b| b.len());
            if let Ok(body) = body {
                let mut headers = parts.headers;
                // HTTP/2 carries the host as :authority.
                if let Some(a) = parts.uri.authority() {
                    headers.insert("host", a.as_str().parse().unwrap());
                }
                let _ = tx.send(Seen {
                    method: parts.method,
                    path: parts
                        .uri
                        .path_and_query()
                        .map_or(String::new(), |p| p.to_string()),
                    headers,
                    body,
                });
            }
            http::Response::builder()
                .header("x-upstream", name)
                .header("x-body-len", len)
                .body(full(name))
                .unwrap()
        }
    })
    .await;
    (up, rx)
}

/// The next request `rx` reports, within 10 s.
async fn next(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a request within 10 s")
        .expect("the recorder runs")
}

fn mirror_to(route: &str, addr: SocketAddr) -> Mirror {
    Mirror::to_backend(route, backend("shadow", &[addr]))
}

/// A rule for paths under `path` forwarding to `app`, with `filters`.
fn rule(path: &str, app: SocketAddr, filters: Vec<Filter>) -> Rule {
    let mut r = forward_rule(vec![prefix(path)], vec![backend("app", &[app])]);
    r.chain.extend(filters);
    r
}

/// The route `r`: the test's rules, and `/fence`, copying every request
/// to `fence_mirror`.
fn routes(app: SocketAddr, fence_mirror: SocketAddr, mut rules: Vec<Rule>) -> RouteConfig {
    rules.push(rule(
        "/fence",
        app,
        vec![Filter::Mirror(Box::new(mirror_to("fence", fence_mirror)))],
    ));
    config(vec![route("r", &[HOST], rules)])
}

/// [`routes`] with one rule for every path, mirrored to `shadow` (route
/// `r`), then `more` filters.
fn mirrored(app: SocketAddr, shadow: SocketAddr, more: Vec<Filter>) -> RouteConfig {
    let mut filters = vec![Filter::Mirror(Box::new(mirror_to("r", shadow)))];
    filters.extend(more);
    routes(app, shadow, vec![rule("/", app, filters)])
}

/// Sends the fence and waits for its copy on `rx`; returns the copies
/// that came before it.
async fn fence(proxy: &Proxy, rx: &mut mpsc::UnboundedReceiver<Seen>) -> Vec<Seen> {
    let (status, _, _) = get(&h1_client(), proxy.addr, HOST, "/fence").await;
    assert_eq!(status, StatusCode::OK);
    let mut before = Vec::new();
    loop {
        let seen = next(rx).await;
        if seen.path == "/fence" {
            return before;
        }
        before.push(seen);
    }
}

/// `portico_mirror_requests_total` of `route` and `result`.
async fn counted(proxy: &Proxy, route: &str, result: &str) -> u64 {
    let text = proxy.scrape().await;
    sample(
        &text,
        &format!("portico_mirror_requests_total{{route=\"{route}\",result=\"{result}\"}}"),
    )
    .unwrap_or(0.0) as u64
}

async fn post(proxy: &Proxy, path: &str, body: &'static [u8]) -> (StatusCode, HeaderMap, String) {
    let req = Request::post(proxy.url(path))
        .header("host", HOST)
        .header("x-test", "one")
        .body(full(body))
        .unwrap();
    send(&h1_client(), req).await
}

#[tokio::test]
async fn a_copy_carries_the_method_path_headers_and_body() {
    let (app, mut app_rx) = recorder("app").await;
    let (shadow, mut shadow_rx) = recorder("shadow").await;
    let mut nginx_style = mirror_to("r", shadow.addr);
    nginx_style.host = Some("shadow.test:8080".into());
    nginx_style.path = MirrorPath::Target {
        prefix: "/shadow".into(),
        request_uri: true,
    };
    let mut no_body = mirror_to("r", shadow.addr);
    no_body.request_body = false;
    no_body.path = MirrorPath::Target {
        prefix: "/no-body".into(),
        request_uri: false,
    };
    let proxy = Proxy::start(routes(
        app.addr,
        shadow.addr,
        vec![
            rule(
                "/copy",
                app.addr,
                vec![Filter::Mirror(Box::new(mirror_to("r", shadow.addr)))],
            ),
            rule(
                "/target",
                app.addr,
                vec![
                    Filter::Mirror(Box::new(nginx_style)),
                    Filter::Mirror(Box::new(no_body)),
                ],
            ),
        ],
    ))
    .await;

    let (status, headers, body) = post(&proxy, "/copy/a?x=1", b"hello mirror").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-upstream"], "app");
    assert_eq!(body, "app");
    let original = next(&mut app_rx).await;
    let copy = next(&mut shadow_rx).await;
    assert_eq!(copy.method, Method::POST);
    assert_eq!(copy.path, "/copy/a?x=1");
    assert_eq!(copy.body, "hello mirror");
    assert_eq!(copy.body, original.body);
    for name in [
        "host",
        "x-test",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-real-ip",
        "x-request-id",
        "content-length",
    ] {
        assert_eq!(copy.headers.get(name), original.headers.get(name), "{name}");
    }
    assert_eq!(copy.headers["host"], HOST);
    assert_eq!(copy.headers["x-forwarded-for"], "127.0.0.1");

    // A streamed body, in pieces, is copied whole.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!("POST /copy/chunked HTTP/1.1\r\nhost: {HOST}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    for piece in [
        "5\r\nhello\r\n",
        "1\r\n \r\n",
        "6\r\nmirror\r\n",
        "0\r\n\r\n",
    ] {
        s.write_all(piece.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
    }
    let answer = read_until_closed(&mut s).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    let copy = next(&mut shadow_rx).await;
    assert_eq!(copy.path, "/copy/chunked");
    assert_eq!(copy.body, "hello mirror");
    assert_eq!(copy.headers["content-length"], "12");
    assert!(copy.headers.get("transfer-encoding").is_none());

    // ingress-nginx's form: the target's Host, its path then the
    // request's URI; and a copy without the body.
    let (status, _, _) = post(&proxy, "/target/b?y=2", b"payload").await;
    assert_eq!(status, StatusCode::OK);
    let mut copies = [next(&mut shadow_rx).await, next(&mut shadow_rx).await];
    copies.sort_by(|a, b| a.path.cmp(&b.path));
    let [bodiless, with_body] = copies;
    assert_eq!(with_body.path, "/shadow/target/b?y=2");
    assert_eq!(with_body.headers["host"], "shadow.test:8080");
    assert_eq!(with_body.body, "payload");
    assert_eq!(bodiless.path, "/no-body");
    assert_eq!(bodiless.method, Method::POST);
    assert_eq!(bodiless.headers["host"], HOST);
    assert!(bodiless.body.is_empty());
    assert!(bodiless.headers.get("content-length").is_none());

    assert_eventually!(
        counted(&proxy, "r", "sent").await == 4,
        "four copies counted as sent"
    );
}

#[tokio::test]
async fn the_fraction_decides_which_requests_are_copied() {
    let app = Upstream::echo("app").await;
    let (shadow, mut shadow_rx) = recorder("shadow").await;
    let with = |route: &str, fraction| {
        let mut m = mirror_to(route, shadow.addr);
        m.fraction = fraction;
        vec![Filter::Mirror(Box::new(m))]
    };
    let half = MirrorFraction {
        numerator: 1,
        denominator: 2,
    };
    let proxy = Proxy::start(routes(
        app.addr,
        shadow.addr,
        vec![
            rule("/none", app.addr, with("none", MirrorFraction::percent(0))),
            rule("/all", app.addr, with("all", MirrorFraction::percent(100))),
            rule("/half", app.addr, with("half", half)),
        ],
    ))
    .await;
    let client = h1_client();

    for _ in 0..20 {
        let (status, _, _) = get(&client, proxy.addr, HOST, "/none").await;
        assert_eq!(status, StatusCode::OK);
    }
    assert!(fence(&proxy, &mut shadow_rx).await.is_empty());

    for _ in 0..20 {
        let (status, _, _) = get(&client, proxy.addr, HOST, "/all").await;
        assert_eq!(status, StatusCode::OK);
    }
    for _ in 0..20 {
        assert_eq!(next(&mut shadow_rx).await.path, "/all");
    }

    for _ in 0..200 {
        let (status, _, _) = get(&client, proxy.addr, HOST, "/half").await;
        assert_eq!(status, StatusCode::OK);
    }
    let copies = fence(&proxy, &mut shadow_rx).await;
    assert!(copies.iter().all(|c| c.path == "/half"));
    // Every sampled copy is counted once it is answered; by then each has
    // reached the recorder.
    let sent = counted(&proxy, "half", "sent").await;
    let mut received = copies.len() as u64;
    while received < sent {
        assert_eq!(next(&mut shadow_rx).await.path, "/half");
        received += 1;
    }
    assert!(
        0 < received && received < 200,
        "1/2 of 200 requests copied: {received}"
    );
    assert_eq!(counted(&proxy, "none", "sent").await, 0);
}

#[tokio::test]
async fn a_mirror_that_never_answers_costs_the_original_nothing() {
    let app = Upstream::echo("app").await;
    // Accepts connections and never answers on them.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let mut rule = rule(
        "/",
        app.addr,
        vec![Filter::Mirror(Box::new(mirror_to("r", silent_addr)))],
    );
    // Long enough that no copy times out during the test.
    rule.timeouts.read = Duration::from_secs(600);
    let proxy = Proxy::start_with(config(vec![route("r", &[HOST], vec![rule])]), |c| {
        c.mirror = MirrorConfig {
            max_in_flight: 2,
            ..MirrorConfig::default()
        };
    })
    .await;
    let client = h1_client();
    for _ in 0..6 {
        let (status, headers, _) = get(&client, proxy.addr, HOST, "/x").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(headers["x-upstream"], "app");
    }
    // Two copies hang in flight; the bound drops the other four.
    assert_eq!(counted(&proxy, "r", "dropped_busy").await, 4);
    assert_eq!(counted(&proxy, "r", "sent").await, 0);
}

#[tokio::test]
async fn a_closed_mirror_fails_its_copies_only() {
    let app = Upstream::echo("app").await;
    let closed = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(config(vec![route(
        "r",
        &[HOST],
        vec![rule(
            "/",
            app.addr,
            vec![Filter::Mirror(Box::new(mirror_to("r", closed)))],
        )],
    )]))
    .await;
    for _ in 0..5 {
        let (status, _, body) = post(&proxy, "/x", b"body").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "app");
    }
    assert_eventually!(
        counted(&proxy, "r", "failed").await == 5,
        "five copies counted as failed"
    );
}

#[tokio::test]
async fn a_body_over_the_bound_or_cut_short_drops_the_copy_only() {
    let (app, mut app_rx) = recorder("app").await;
    let (shadow, mut shadow_rx) = recorder("shadow").await;
    let proxy = Proxy::start_with(mirrored(app.addr, shadow.addr, vec![]), |c| {
        c.mirror = MirrorConfig {
            max_body: 1024,
            ..MirrorConfig::default()
        };
    })
    .await;

    // Declared over the bound: dropped before a byte is read.
    static BIG: [u8; 4096] = [b'x'; 4096];
    let (status, headers, _) = post(&proxy, "/declared", &BIG).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-body-len"], "4096");
    assert_eq!(next(&mut app_rx).await.body.len(), 4096);
    assert_eq!(counted(&proxy, "r", "dropped_body").await, 1);

    // Streamed over the bound: the tee lets go; the original goes on.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!("POST /streamed HTTP/1.1\r\nhost: {HOST}\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let piece = format!("320\r\n{}\r\n", "y".repeat(800));
    for _ in 0..2 {
        s.write_all(piece.as_bytes()).await.unwrap();
    }
    s.write_all(b"0\r\n\r\n").await.unwrap();
    let answer = read_until_closed(&mut s).await.unwrap();
    assert!(answer.starts_with(b"HTTP/1.1 200"), "{answer:?}");
    assert_eq!(next(&mut app_rx).await.body.len(), 1600);
    assert_eventually!(
        counted(&proxy, "r", "dropped_body").await == 2,
        "the streamed body's copy dropped"
    );

    // A client that goes away mid-body: no copy.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        format!("POST /aborted HTTP/1.1\r\nhost: {HOST}\r\ncontent-length: 100\r\n\r\n0123456789")
            .as_bytes(),
    )
    .await
    .unwrap();
    s.flush().await.unwrap();
    drop(s);
    assert_eventually!(
        counted(&proxy, "r", "dropped_body").await == 3,
        "the aborted body's copy dropped"
    );

    assert!(fence(&proxy, &mut shadow_rx).await.is_empty());
    assert_eq!(counted(&proxy, "r", "sent").await, 0);
}

#[tokio::test]
async fn a_request_an_access_list_refuses_is_not_copied() {
    let app = Upstream::echo("app").await;
    let (shadow, mut shadow_rx) = recorder("shadow").await;
    let proxy = Proxy::start(mirrored(
        app.addr,
        shadow.addr,
        // Listed after the mirror: the stages still run it first.
        vec![Filter::IpAccess(IpAccess {
            allow: vec!["10.0.0.0/8".parse().unwrap()],
            deny: vec![],
        })],
    ))
    .await;
    let (status, _, _) = get(&h1_client(), proxy.addr, HOST, "/x").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(fence(&proxy, &mut shadow_rx).await.is_empty());
}

#[tokio::test]
async fn an_upgrade_request_is_not_copied() {
    let app = Upstream::echo("app").await;
    let (shadow, mut shadow_rx) = recorder("shadow").await;
    let proxy = Proxy::start(mirrored(app.addr, shadow.addr, vec![])).await;
    let req = Request::get(proxy.url("/ws"))
        .header("host", HOST)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .body(empty())
        .unwrap();
    // The echo upstream does not upgrade: a plain answer comes back.
    let (status, headers, _) = send(&h1_client(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-seen-h-upgrade"], "websocket");
    assert!(fence(&proxy, &mut shadow_rx).await.is_empty());
}

#[tokio::test]
async fn an_http2_request_is_copied_to_an_h2c_mirror() {
    let (app, mut app_rx) = recorder("app").await;
    let (shadow, mut shadow_rx) = recorder("shadow").await;
    let mut m = mirror_to("r", shadow.addr);
    m.backend.protocol = Protocol::H2c;
    let proxy = Proxy::start(routes(
        app.addr,
        shadow.addr,
        vec![rule("/", app.addr, vec![Filter::Mirror(Box::new(m))])],
    ))
    .await;
    let req = Request::put(format!("http://{HOST}/h2?z=9"))
        .body(full("over h2"))
        .unwrap();
    let rsp = h2c_connection(proxy.addr)
        .await
        .send_request(req)
        .await
        .unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let original = next(&mut app_rx).await;
    let copy = next(&mut shadow_rx).await;
    assert_eq!(copy.method, Method::PUT);
    assert_eq!(copy.path, "/h2?z=9");
    assert_eq!(copy.body, "over h2");
    assert_eq!(copy.headers["host"], HOST);
    assert_eq!(copy.headers["host"], original.headers["host"]);
}
