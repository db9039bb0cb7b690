//! Request head rules over raw sockets: the size limits at their
//! boundaries, header names with underscores, the Host rules, message
//! framing (`Content-Length` with `Transfer-Encoding`, codings other than
//! `chunked`) and h2c upgrade smuggling; and the rejections counted.

mod support;

use std::net::SocketAddr;

use http::Request;
use http_body_util::BodyExt;
use support::*;
use tokio::io::AsyncWriteExt;

/// A request for `h.test` with `headers` (each `name: value`), closing
/// the connection after its answer.
fn request(target: &str, headers: &[String]) -> Vec<u8> {
    let mut out = format!("GET {target} HTTP/1.1\r\nhost: h.test\r\nconnection: close\r\n");
    for h in headers {
        out.push_str(h);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.into_bytes()
}

/// `request("/", ..)` whose head (request line and header lines, each with
/// its CRLF, and the blank line) is exactly `total` bytes.
fn request_of_size(total: usize) -> Vec<u8> {
    let base = request("/", &[]).len();
    // Four filler lines `x-fN: v...`, each under the line limit.
    let rest = total - base;
    let each = rest / 4;
    let lines: Vec<String> = (0..4)
        .map(|i| {
            let line = if i == 3 { rest - 3 * each } else { each };
            // `x-fN: ` is 6 bytes, the CRLF 2.
            format!("x-f{i}: {}", "v".repeat(line - 8))
        })
        .collect();
    let out = request("/", &lines);
    assert_eq!(out.len(), total);
    out
}

async fn exchange(addr: SocketAddr, bytes: &[u8]) -> RawResponse {
    let out = raw_exchange(addr, bytes, false).await;
    RawResponse::parse(&out)
        .unwrap_or_else(|| panic!("no response: {:?}", String::from_utf8_lossy(&out)))
}

/// Sends `bytes` and reads until the proxy closes: the answer, and
/// whether the proxy closed the connection after it.
async fn exchange_closing(addr: SocketAddr, bytes: &[u8]) -> (Vec<u8>, bool) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(bytes).await;
    match read_until_closed(&mut s).await {
        Ok(out) => (out, true),
        Err(out) => (out, false),
    }
}

fn rejections(text: &str, reason: &str) -> Option<f64> {
    sample(
        text,
        &format!("portico_request_rejections_total{{reason=\"{reason}\"}}"),
    )
}

/// An upstream that answers 200 to anything, and takes more headers than
/// the proxy lets through plus the ones it adds (hyper's own limit is 100).
async fn roomy_upstream() -> SocketAddr {
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let svc = hyper::service::service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(empty()))
            });
            tokio::spawn(
                http1::Builder::new()
                    .max_headers(200)
                    .serve_connection(TokioIo::new(stream), svc),
            );
        }
    });
    addr
}

#[tokio::test]
async fn size_limits_hold_at_their_boundaries_and_are_counted() {
    let proxy = Proxy::start(simple("h.test", roomy_upstream().await)).await;
    let addr = proxy.addr;

    // `GET ` + target + ` HTTP/1.1`: 8192 bytes, then 8193.
    let at = format!("/{}", "a".repeat(8192 - 13 - 1));
    assert_eq!(exchange(addr, &request(&at, &[])).await.status, 200);
    let over = format!("/{}", "a".repeat(8192 - 13));
    assert_eq!(exchange(addr, &request(&over, &[])).await.status, 414);

    // `x-big: ` + value: 8192 bytes, then 8193.
    let line = |len: usize| vec![format!("x-big: {}", "b".repeat(len - 7))];
    assert_eq!(exchange(addr, &request("/", &line(8192))).await.status, 200);
    assert_eq!(exchange(addr, &request("/", &line(8193))).await.status, 431);

    // The whole head: 32 KiB, then one byte more.
    assert_eq!(
        exchange(addr, &request_of_size(32 * 1024)).await.status,
        200
    );
    assert_eq!(
        exchange(addr, &request_of_size(32 * 1024 + 1)).await.status,
        431
    );

    // 100 header lines (host and connection among them), then 101:
    // hyper answers that one itself.
    let fillers = |n: usize| (0..n).map(|i| format!("x-h{i}: 1")).collect::<Vec<_>>();
    assert_eq!(
        exchange(addr, &request("/", &fillers(98))).await.status,
        200
    );
    assert_eq!(
        exchange(addr, &request("/", &fillers(99))).await.status,
        431
    );

    let text = proxy.scrape().await;
    for reason in ["request_line", "header_line", "header_bytes"] {
        assert_eq!(rejections(&text, reason), Some(1.0), "{reason}: {text}");
    }
    // Counted when hyper ends the connection, after its answer.
    assert_eventually!(
        rejections(&proxy.scrape().await, "head_too_large") == Some(1.0),
        "hyper's 431 not counted"
    );
}

#[tokio::test]
async fn http2_heads_have_the_same_limits() {
    let proxy = Proxy::start(simple("h.test", roomy_upstream().await)).await;
    let mut h2 = h2c_connection(proxy.addr).await;
    let cases = [
        (100, 8192, 200),
        (101, 8192, 431),
        (1, 8192, 200),
        (1, 8193, 431),
    ];
    for (count, line, status) in cases {
        let mut req = Request::get("http://h.test/");
        // `x-big: ` and the value make one line of `line` bytes.
        req = req.header("x-big", "b".repeat(line - 7));
        for i in 1..count {
            req = req.header(format!("x-h{i}"), "1");
        }
        let rsp = h2.send_request(req.body(empty()).unwrap()).await.unwrap();
        let got = rsp.status().as_u16();
        let _ = rsp.into_body().collect().await;
        assert_eq!(got, status, "{count} headers, a {line}-byte line");
    }
    let text = proxy.scrape().await;
    assert_eq!(rejections(&text, "header_count"), Some(1.0), "{text}");
    assert_eq!(rejections(&text, "header_line"), Some(1.0), "{text}");
}

#[tokio::test]
async fn header_names_with_underscores_are_dropped_unless_allowed() {
    let up = Upstream::echo("a").await;
    let headers = [
        "ssl_client_verify: SUCCESS".to_owned(),
        "X_Forwarded_For: 6.6.6.6".to_owned(),
        "x-keep: 1".to_owned(),
    ];
    let proxy = Proxy::start(simple("h.test", up.addr)).await;
    let rsp = exchange(proxy.addr, &request("/", &headers)).await;
    assert_eq!(rsp.status, 200);
    assert_eq!(rsp.header("x-seen-h-x-keep"), Some("1"));
    assert_eq!(rsp.header("x-seen-h-ssl_client_verify"), None);
    assert_eq!(rsp.header("x-seen-h-x_forwarded_for"), None);

    let allowed = Proxy::start_with(simple("h.test", up.addr), |cfg| {
        cfg.listener.head.underscores_in_headers = true;
    })
    .await;
    let rsp = exchange(allowed.addr, &request("/", &headers)).await;
    assert_eq!(rsp.header("x-seen-h-ssl_client_verify"), Some("SUCCESS"));
    assert_eq!(rsp.header("x-seen-h-x_forwarded_for"), Some("6.6.6.6"));
}

#[tokio::test]
async fn host_is_required_once_on_http_1_1() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("h.test", up.addr)).await;
    for (head, status) in [
        (&b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n"[..], 400),
        (
            b"GET / HTTP/1.1\r\nHost: h.test\r\nHost: h.test\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h.test\r\nHost: other.test\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            b"GET http://h.test/ HTTP/1.1\r\nConnection: close\r\n\r\n",
            400,
        ),
        (
            b"GET / HTTP/1.1\r\nHost: h.test\r\nConnection: close\r\n\r\n",
            200,
        ),
        // HTTP/1.0 needs none; without one no route matches.
        (b"GET / HTTP/1.0\r\n\r\n", 404),
        (b"GET / HTTP/1.0\r\nHost: h.test\r\n\r\n", 200),
    ] {
        let rsp = exchange(proxy.addr, head).await;
        assert_eq!(rsp.status, status, "{:?}", String::from_utf8_lossy(head));
    }
    let text = proxy.scrape().await;
    assert_eq!(rejections(&text, "host"), Some(4.0), "{text}");
}

/// Heads whose body framing is in doubt; none may reach the backend.
const BAD_FRAMING: [&[u8]; 6] = [
    b"POST /p HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: gzip, chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked, gzip\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: identity\r\n\r\nhello",
    b"POST /p HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: gzip,\r\n chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"POST /p HTTP/1.0\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
];

#[tokio::test]
async fn transfer_codings_other_than_chunked_are_refused_and_close() {
    let pod = Pod::start("a").await;
    let proxy = Proxy::start(simple("h.test", pod.addr)).await;
    for head in BAD_FRAMING {
        let (out, closed) = exchange_closing(proxy.addr, head).await;
        let rsp = RawResponse::parse(&out);
        let shown = String::from_utf8_lossy(head);
        assert_eq!(rsp.as_ref().map(|r| r.status), Some(400), "{shown}");
        assert!(closed, "{shown}: the connection stays open");
    }
    assert_eq!(pod.hits(), 0, "{:?}", pod.state.paths.lock().unwrap());
    // The two hyper lets through are the proxy's own, and say so.
    let (out, _) = exchange_closing(proxy.addr, BAD_FRAMING[0]).await;
    let rsp = RawResponse::parse(&out).unwrap();
    assert_eq!(rsp.header("connection"), Some("close"));
    let text = proxy.scrape().await;
    assert_eq!(rejections(&text, "transfer_encoding"), Some(3.0), "{text}");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_framed_by_chunked_and_closes() {
    // hyper drops the Content-Length, reads the body as chunked and closes
    // the connection after the answer (RFC 9112 §6.1): what follows the
    // chunked body is never read as a request.
    let pod = Pod::start("a").await;
    let proxy = Proxy::start(simple("h.test", pod.addr)).await;
    for head in [
        &b"POST /p HTTP/1.1\r\nHost: h.test\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n"[..],
        b"POST /p HTTP/1.1\r\nHost: h.test\r\nTransfer-Encoding: chunked\r\nContent-Length: 30\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h.test\r\n\r\n",
    ] {
        let (out, closed) = exchange_closing(proxy.addr, head).await;
        let text = String::from_utf8_lossy(&out);
        assert!(closed, "{text}");
        assert_eq!(text.matches("HTTP/1.1 ").count(), 1, "{text}");
    }
    assert_eq!(*pod.state.paths.lock().unwrap(), ["/p", "/p"]);
}

#[tokio::test]
async fn h2c_upgrades_are_never_forwarded() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("h.test", up.addr)).await;
    for head in [
        &b"GET / HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nHost: h.test\r\nConnection: Upgrade\r\nUpgrade: H2C\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
    ] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(head).await.unwrap();
        let rsp = RawResponse::parse(&read_head(&mut s).await.expect("an answer")).unwrap();
        assert_eq!(rsp.status, 200);
        for seen in [
            "x-seen-h-upgrade",
            "x-seen-h-http2-settings",
            "x-seen-h-connection",
        ] {
            assert_eq!(rsp.header(seen), None, "{seen}");
        }
    }
}
