//! The gRPC-Web bridge: gRPC-Web requests over HTTP/1.1 and HTTP/2 become
//! gRPC calls to a real tonic upstream over h2c, and the answers come back
//! in gRPC-Web framing, binary or base64 text.
//!
//! Requests are written by hand here where the exact bytes matter (chunk
//! boundaries, padding, trailer frames); a real client (tonic-web's) checks
//! that what we produce is what clients expect.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use portico_dataplane::model::{
    Action, Cors, Filter, GrpcWeb, OriginPattern, Protocol, RouteConfig,
};
use portico_testkit::{EchoClient, EchoReply, EchoRequest, grpc_upstream, read_in_order};
use prost::Message;
use support::*;
use tokio::sync::mpsc;
use tonic::Code;

const ORIGIN: &str = "https://app.example.com";

fn web_routes(endpoints: &[SocketAddr], max_message: Option<u64>) -> RouteConfig {
    let mut b = backend("echo", endpoints);
    b.protocol = Protocol::H2c;
    let mut rule = forward_rule(vec![prefix("/portico.test.Echo")], vec![b]);
    rule.grpc.web = Some(GrpcWeb::default());
    rule.chain.push(Filter::Cors(Cors {
        allow_origins: vec![OriginPattern::parse(ORIGIN).unwrap()],
        ..Cors::grpc_web()
    }));
    if let Some(max) = max_message {
        rule.grpc.max_message = max;
    }
    config(vec![route("web", &[], vec![rule])])
}

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

/// One length-prefixed gRPC message.
fn frame(msg: &impl Message) -> Bytes {
    Bytes::from(portico_testkit::frame(msg))
}

/// A gRPC-Web answer, split into its messages and trailer frame.
#[derive(Debug)]
struct WebAnswer {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    replies: Vec<EchoReply>,
    /// The `0x80` frame's `key: value` lines.
    trailers: Option<Vec<(String, String)>>,
}

impl WebAnswer {
    fn trailer(&self, key: &str) -> Option<&str> {
        self.trailers
            .as_ref()?
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Decodes base64 by 4-character quanta, as clients do: padding may end
/// any quantum.
fn decode_text(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for quantum in body.chunks(4) {
        let lenient = base64::engine::GeneralPurpose::new(
            &base64::alphabet::STANDARD,
            base64::engine::GeneralPurposeConfig::new()
                .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
        );
        lenient
            .decode_vec(quantum, &mut out)
            .expect("valid base64 quantum");
    }
    out
}

fn parse_web(status: StatusCode, headers: HeaderMap, body: Bytes) -> WebAnswer {
    let ct = headers["content-type"].to_str().unwrap().to_owned();
    let raw = if ct.starts_with("application/grpc-web-text") {
        decode_text(&body)
    } else {
        body.to_vec()
    };
    let mut data = &raw[..];
    let mut replies = Vec::new();
    let mut trailers = None;
    while !data.is_empty() {
        assert!(trailers.is_none(), "nothing may follow the trailer frame");
        assert!(data.len() >= 5, "truncated frame header");
        let flag = data[0];
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let payload = &data[5..5 + len];
        if flag & 0x80 != 0 {
            let text = std::str::from_utf8(payload).expect("trailers are ASCII");
            trailers = Some(
                text.split("\r\n")
                    .filter(|l| !l.is_empty())
                    .map(|l| {
                        let (k, v) = l.split_once(": ").expect("key: value");
                        (k.to_owned(), v.to_owned())
                    })
                    .collect(),
            );
        } else {
            replies.push(EchoReply::decode(payload).expect("a reply"));
        }
        data = &data[5 + len..];
    }
    WebAnswer {
        status,
        headers,
        body,
        replies,
        trailers,
    }
}

async fn call(
    client: &hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        Body,
    >,
    proxy: &Proxy,
    path: &str,
    content_type: &str,
    body: Body,
    extra: &[(&str, &str)],
) -> WebAnswer {
    let mut b = Request::post(format!("http://{}{path}", proxy.addr))
        .header("content-type", content_type)
        .header("x-grpc-web", "1");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let rsp = tokio::time::timeout(
        Duration::from_secs(20),
        client.request(b.body(body).unwrap()),
    )
    .await
    .expect("answer within 20 s")
    .expect("the proxy answers");
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    parse_web(parts.status, parts.headers, body)
}

fn assert_ok(a: &WebAnswer) {
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.trailer("grpc-status"), Some("0"), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_unary_over_http1_and_http2() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(web_routes(&[up], None)).await;
    for client in [h1_client(), h2c_client()] {
        let a = call(
            &client,
            &proxy,
            "/portico.test.Echo/Unary",
            "application/grpc-web+proto",
            full(frame(&req("hello"))),
            &[],
        )
        .await;
        assert_ok(&a);
        assert_eq!(a.headers["content-type"], "application/grpc-web+proto");
        assert!(
            !a.headers.contains_key("content-length")
                || a.headers["content-length"] == a.body.len().to_string().as_str()
        );
        assert_eq!(a.headers["x-echo"], "hello", "metadata as headers");
        assert_eq!(a.replies.len(), 1);
        assert_eq!(a.replies[0].message, "hello");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_type_mirrors_the_request() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(web_routes(&[up], None)).await;
    let c = h1_client();
    for (sent, accept, want) in [
        ("application/grpc-web", None, "application/grpc-web"),
        (
            "Application/GRPC-Web+proto; charset=utf-8",
            None,
            "application/grpc-web+proto",
        ),
        (
            "application/grpc-web-text",
            None,
            "application/grpc-web-text",
        ),
        (
            "application/grpc-web-text+proto",
            Some("*/*"),
            "application/grpc-web-text+proto",
        ),
        (
            "application/grpc-web+proto",
            Some("application/grpc-web-text"),
            "application/grpc-web-text+proto",
        ),
        (
            "application/grpc-web-text",
            Some("application/grpc-web"),
            "application/grpc-web",
        ),
    ] {
        let text_in = sent.to_ascii_lowercase().contains("-text");
        let msg = frame(&req("ct"));
        let body = if text_in {
            Bytes::from(STANDARD.encode(&msg))
        } else {
            msg
        };
        let extra: Vec<(&str, &str)> = accept.iter().map(|a| ("accept", *a)).collect();
        let a = call(
            &c,
            &proxy,
            "/portico.test.Echo/Unary",
            sent,
            full(body),
            &extra,
        )
        .await;
        assert_ok(&a);
        assert_eq!(
            a.headers["content-type"]
                .to_str()
                .unwrap()
                .to_ascii_lowercase(),
            want,
            "sent {sent}, accept {accept:?}"
        );
        assert_eq!(a.replies[0].message, "ct");
    }
}

/// A body sent in the given pieces, each as its own chunk on the wire.
fn chunked(pieces: Vec<Bytes>) -> Body {
    let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, Infallible>>(pieces.len().max(1));
    for p in pieces {
        tx.try_send(Ok(Frame::data(p))).unwrap();
    }
    drop(tx);
    StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx))
        .map_err(|e| match e {})
        .boxed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_mode_decodes_any_chunking_and_mid_body_padding() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(web_routes(&[up], None)).await;
    // Three messages, each base64-encoded on its own (padding mid-body), as
    // a client encoding message by message sends them.
    let text: String = ["a", "bb", "ccc"]
        .iter()
        .map(|m| STANDARD.encode(frame(&req(m))))
        .collect();
    assert!(text.trim_end_matches('=').contains('='), "{text}");
    for split in [1, 3, 5, 7] {
        let pieces: Vec<Bytes> = text
            .as_bytes()
            .chunks(split)
            .map(Bytes::copy_from_slice)
            .collect();
        for client in [h1_client(), h2c_client()] {
            let a = call(
                &client,
                &proxy,
                "/portico.test.Echo/ClientStream",
                "application/grpc-web-text",
                chunked(pieces.clone()),
                &[],
            )
            .await;
            assert_ok(&a);
            assert_eq!(a.headers["content-type"], "application/grpc-web-text");
            assert_eq!(a.replies.len(), 1);
            assert_eq!(a.replies[0].message, "a,bb,ccc", "chunks of {split}");
            assert_eq!(a.replies[0].index, 3);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_base64_is_a_400() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(web_routes(&[up], None)).await;
    let a = call(
        &h1_client(),
        &proxy,
        "/portico.test.Echo/Unary",
        "application/grpc-web-text",
        full("AAAA!AAA"),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.headers["grpc-status"], "3");
    assert!(a.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_status_code_reaches_the_client() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(web_routes(&[up], None)).await;
    let c = h1_client();
    for code in 1..=16 {
        // Unary errors come back trailers-only: status in the headers, an
        // empty body, no trailer frame.
        let a = call(
            &c,
            &proxy,
            "/portico.test.Echo/Unary",
            "application/grpc-web+proto",
            full(frame(&EchoRequest {
                code,
                ..req("100% broken: ünïcode")
            })),
            &[],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
        assert_eq!(a.headers["grpc-status"], code.to_string().as_str());
        assert_eq!(a.headers["content-type"], "application/grpc-web+proto");
        // Percent-encoded by the upstream, passed through as it is.
        let m = a.headers["grpc-message"].to_str().unwrap();
        assert!(
            m.starts_with("100%25") && m.contains("%C3%BCn%C3%AFcode"),
            "{m}"
        );
        assert!(a.body.is_empty(), "trailers-only has no body: {:?}", a.body);

        // After messages, the status comes in the trailer frame.
        let a = call(
            &c,
            &proxy,
            "/portico.test.Echo/ServerStream",
            "application/grpc-web-text",
            full(STANDARD.encode(frame(&EchoRequest {
                code,
                count: 2,
                ..req("then fail")
            }))),
            &[],
        )
        .await;
        assert_eq!(a.replies.len(), 2);
        assert_eq!(a.trailer("grpc-status"), Some(code.to_string().as_str()));
        assert_eq!(a.trailer("grpc-message"), Some("then%20fail"));
        assert!(!a.headers.contains_key("grpc-status"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_before_upstream_headers_are_trailers_only() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let c = h1_client();
    let cases = [
        (
            Proxy::start(web_routes(&[], None)).await,
            "/portico.test.Echo/Unary",
            Code::Unavailable,
        ),
        (
            Proxy::start(web_routes(&[closed], None)).await,
            "/portico.test.Echo/Unary",
            Code::Unavailable,
        ),
        (
            Proxy::start(web_routes(&[closed], None)).await,
            "/other.Service/Call",
            Code::Unimplemented,
        ),
    ];
    for (proxy, path, code) in &cases {
        for ct in ["application/grpc-web+proto", "application/grpc-web-text"] {
            // A valid body in either encoding: otherwise a text-mode decode
            // error races the upstream's connection error for the answer.
            let body = if ct.ends_with("-text") {
                Bytes::from(STANDARD.encode(frame(&req("x"))))
            } else {
                frame(&req("x"))
            };
            let a = call(&c, proxy, path, ct, full(body), &[]).await;
            assert_eq!(a.status, StatusCode::OK, "{path}: {a:?}");
            assert_eq!(a.headers["content-type"], ct);
            assert_eq!(
                a.headers["grpc-status"],
                (*code as i32).to_string().as_str()
            );
            assert!(a.headers.contains_key("grpc-message"));
            assert!(a.body.is_empty());
        }
    }
}

/// Reads one HTTP/1.1 answer with a `content-length` (the proxy's own
/// trailers-only answers) off a raw connection; its head, lowercased.
async fn read_answer(s: &mut tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut byte))
            .await
            .expect("an answer within 10 s")
            .expect("the connection stays open for the answer");
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    let mut body = vec![0; len];
    s.read_exact(&mut body).await.unwrap();
    head
}

/// connect-node's gRPC-Web transport writes the head of a chunked request,
/// then the body. When the backend is down the proxy answers at once; it
/// must read the body first, or hyper closes the connection with the body
/// unread, the kernel resets it, and the client sees EPIPE instead of
/// UNAVAILABLE (seen with the real client: controller/tests/grpc_web_clients.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_before_the_request_body_keeps_the_http1_connection() {
    use tokio::io::AsyncWriteExt;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let proxy = Proxy::start(web_routes(&[closed], None)).await;
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let body = frame(&req("nobody home"));
    let mut chunk = format!("{:x}\r\n", body.len()).into_bytes();
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(b"\r\n0\r\n\r\n");
    let head = b"POST /portico.test.Echo/Unary HTTP/1.1\r\nhost: web.test\r\n\
        content-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\n\
        transfer-encoding: chunked\r\n\r\n";
    for round in 0..2 {
        s.write_all(head)
            .await
            .expect("the proxy keeps the connection");
        // Not synchronisation: the body comes late on purpose, after the
        // proxy has found the backend down.
        tokio::time::sleep(Duration::from_millis(100)).await;
        s.write_all(&chunk)
            .await
            .expect("the proxy keeps the connection");
        let answer = read_answer(&mut s).await;
        assert!(
            answer.starts_with("http/1.1 200"),
            "round {round}: {answer}"
        );
        assert!(
            answer.contains("grpc-status: 14"),
            "round {round}: {answer}"
        );
        assert!(
            !answer.contains("connection: close"),
            "round {round}: {answer}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_grpc_upstream_answer_becomes_a_status() {
    let html = Upstream::start(|_req| async {
        let mut rsp = http::Response::new(full("<html>503</html>"));
        *rsp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        rsp
    })
    .await;
    let proxy = Proxy::start(web_routes(&[html.addr], None)).await;
    let a = call(
        &h1_client(),
        &proxy,
        "/portico.test.Echo/Unary",
        "application/grpc-web",
        full(frame(&req("x"))),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.headers["grpc-status"], "14");
    assert!(a.body.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_ends_a_long_stream_with_deadline_exceeded() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(web_routes(&[up], None)).await;
    let a = call(
        &h1_client(),
        &proxy,
        "/portico.test.Echo/ServerStream",
        "application/grpc-web+proto",
        full(frame(&EchoRequest {
            count: 20,
            delay_ms: 100,
            ..req("slow")
        })),
        &[("grpc-timeout", "500m")],
    )
    .await;
    assert_eq!(a.trailer("grpc-status"), Some("4"), "{a:?}");
    assert!(!a.replies.is_empty() && a.replies.len() < 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_messages_both_ways_in_both_encodings() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(web_routes(&[up], None)).await;
    let big = "x".repeat(3 << 20);
    let encode = |ct: &str, msg: Bytes| {
        if ct.contains("text") {
            Bytes::from(STANDARD.encode(&msg))
        } else {
            msg
        }
    };
    for ct in ["application/grpc-web+proto", "application/grpc-web-text"] {
        // A large request (the joined messages come back in the body).
        let up = encode(ct, frame(&req(&big)));
        let a = call(
            &h1_client(),
            &proxy,
            "/portico.test.Echo/ClientStream",
            ct,
            full(up),
            &[],
        )
        .await;
        assert_ok(&a);
        assert_eq!(a.replies[0].message.len(), 3 << 20);
        // A large reply.
        let down = encode(
            ct,
            frame(&EchoRequest {
                reply_size: 4 << 20,
                ..req("big")
            }),
        );
        let a = call(
            &h1_client(),
            &proxy,
            "/portico.test.Echo/Unary",
            ct,
            full(down),
            &[],
        )
        .await;
        assert_ok(&a);
        assert_eq!(a.replies[0].payload.len(), 4 << 20);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_over_the_limit_is_resource_exhausted() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(web_routes(&[up], Some(1024))).await;
    let small = STANDARD.encode(frame(&req("fits")));
    let large = STANDARD.encode(frame(&req(&"y".repeat(4096))));
    // The first message passes; the second's header is over the limit.
    let a = call(
        &h1_client(),
        &proxy,
        "/portico.test.Echo/ClientStream",
        "application/grpc-web-text",
        full(format!("{small}{large}")),
        &[],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let status = a
        .headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .or(a.trailer("grpc-status"));
    assert_eq!(status, Some("8"), "{a:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_stream_over_http1_delivers_each_message_as_it_is_sent() {
    // A gRPC upstream written by hand, so the test decides when each
    // message is sent: the second only after the client has the first.
    let (tx, rx) = mpsc::channel::<Frame<Bytes>>(4);
    let rx = std::sync::Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let up = Upstream::start(move |_req| {
        let rx = rx.clone();
        async move {
            let rx = rx.lock().await.take().expect("one call");
            let body = StreamBody::new(tokio_stream::StreamExt::map(
                tokio_stream::wrappers::ReceiverStream::new(rx),
                Ok::<_, Infallible>,
            ))
            .map_err(|e| match e {})
            .boxed();
            http::Response::builder()
                .header("content-type", "application/grpc")
                .body(body)
                .unwrap()
        }
    })
    .await;
    let proxy = Proxy::start(web_routes(&[up.addr], None)).await;
    let rsp = h1_client()
        .request(
            Request::post(format!(
                "http://{}/portico.test.Echo/ServerStream",
                proxy.addr
            ))
            .header("content-type", "application/grpc-web-text")
            .body(full(STANDARD.encode(frame(&req("s")))))
            .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(rsp.headers()["transfer-encoding"], "chunked");
    let mut body = rsp.into_body();
    let mut got = Vec::new();
    for i in 0..3u32 {
        let reply = EchoReply {
            message: "s".into(),
            index: i,
            payload: Vec::new(),
        };
        tx.send(Frame::data(frame(&reply))).await.unwrap();
        // This message must arrive while the upstream still holds the rest.
        let mut text = Vec::new();
        while decode_text(&text).len() < frame(&reply).len() {
            // Generous: a proxy that held the stream would never deliver.
            let f = tokio::time::timeout(Duration::from_secs(20), body.frame())
                .await
                .expect("each message arrives while the stream is open")
                .expect("more body")
                .expect("frame");
            text.extend_from_slice(f.data_ref().expect("data"));
        }
        let raw = decode_text(&text);
        got.push(EchoReply::decode(&raw[5..]).unwrap());
    }
    let mut t = HeaderMap::new();
    t.insert("grpc-status", "0".parse().unwrap());
    tx.send(Frame::trailers(t)).await.unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    let last = decode_text(&rest);
    assert_eq!(last[0], 0x80);
    assert_eq!(&last[5..], b"grpc-status: 0\r\n");
    assert_eq!(got.iter().map(|r| r.index).collect::<Vec<_>>(), [0, 1, 2]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_and_response_headers() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(web_routes(&[up], None)).await;
    let c = h1_client();
    let preflight = |origin: &str| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{}/portico.test.Echo/Unary", proxy.addr))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header("access-control-request-headers", "content-type,x-grpc-web")
            .body(empty())
            .unwrap()
    };
    let (status, h, _) = send(&c, preflight(ORIGIN)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(h["access-control-allow-origin"], ORIGIN);
    assert_eq!(h["access-control-allow-methods"], "POST, OPTIONS");
    let allowed = h["access-control-allow-headers"].to_str().unwrap();
    for name in [
        "x-grpc-web",
        "x-user-agent",
        "grpc-timeout",
        "content-type",
        "authorization",
    ] {
        assert!(allowed.contains(name), "{allowed}");
    }
    assert!(h.contains_key("access-control-max-age"));
    let (status, h, _) = send(&c, preflight("https://elsewhere.example")).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!h.contains_key("access-control-allow-origin"));

    let a = call(
        &c,
        &proxy,
        "/portico.test.Echo/Unary",
        "application/grpc-web+proto",
        full(frame(&req("cors"))),
        &[("origin", ORIGIN)],
    )
    .await;
    assert_ok(&a);
    assert_eq!(a.headers["access-control-allow-origin"], ORIGIN);
    let exposed = a.headers["access-control-expose-headers"].to_str().unwrap();
    for name in ["grpc-status", "grpc-message", "grpc-status-details-bin"] {
        assert!(exposed.contains(name), "{exposed}");
    }
}

/// The filter chain's order over the wire: an HTTPS redirect answers
/// before a CORS preflight, which answers before a client-certificate
/// mismatch; on the way back CORS decorates every answer (the filters' own
/// included) and a response header edit comes after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_answer_in_stage_order() {
    let up = grpc_upstream().await;
    let mut routes = web_routes(&[up], None);
    let r = std::sync::Arc::make_mut(&mut routes.routes[0]);
    r.add_to_every_rule(&[
        Filter::HttpsRedirect(Default::default()),
        Filter::ClientCert(portico_dataplane::model::RouteClientAuth {
            policy: "default/client-ca".into(),
            pass_certificate: false,
        }),
    ]);
    r.rules[0].chain.push(Filter::ResponseHeaders(
        portico_dataplane::model::HeaderModifier {
            set: vec![(
                http::HeaderName::from_static("access-control-max-age"),
                http::HeaderValue::from_static("60"),
            )],
            ..Default::default()
        },
    ));
    let c = h1_client();
    let preflight = |proxy: &Proxy| {
        Request::builder()
            .method(Method::OPTIONS)
            .uri(format!("http://{}/portico.test.Echo/Unary", proxy.addr))
            .header("origin", ORIGIN)
            .header("access-control-request-method", "POST")
            .body(empty())
            .unwrap()
    };

    let proxy = Proxy::start(routes.clone()).await;
    let (status, h, _) = send(&c, preflight(&proxy)).await;
    assert_eq!(status, StatusCode::PERMANENT_REDIRECT, "redirect first");
    assert!(h["location"].to_str().unwrap().starts_with("https://"));
    assert_eq!(h["access-control-allow-origin"], ORIGIN, "{h:?}");

    std::sync::Arc::make_mut(&mut routes.routes[0]).rules[0]
        .chain
        .retain(|f| !matches!(f, Filter::HttpsRedirect(_)));
    let proxy = Proxy::start(routes).await;
    let (status, h, _) = send(&c, preflight(&proxy)).await;
    assert_eq!(status, StatusCode::NO_CONTENT, "preflight before access");
    assert_eq!(h["access-control-max-age"], "60", "the edit runs last");

    // Plain HTTP carries no certificate: refused, as a gRPC-Web status.
    let a = call(
        &c,
        &proxy,
        "/portico.test.Echo/Unary",
        "application/grpc-web+proto",
        full(frame(&req("x"))),
        &[("origin", ORIGIN)],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(
        a.headers["grpc-status"],
        (Code::PermissionDenied as i32).to_string().as_str()
    );
    assert_eq!(a.headers["access-control-allow-origin"], ORIGIN);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_bridge_grpc_web_passes_through_untouched() {
    let seen = Upstream::start(|req: Request<hyper::body::Incoming>| async move {
        let ct = req.headers()["content-type"].clone();
        http::Response::builder()
            .header("x-seen-content-type", ct)
            .body(empty())
            .unwrap()
    })
    .await;
    let mut routes = web_routes(&[seen.addr], None);
    let rule = &mut std::sync::Arc::make_mut(&mut routes.routes[0]).rules[0];
    rule.grpc.web = None;
    rule.chain.clear();
    if let Action::Forward(f) = &mut rule.action {
        f.backends[0].protocol = Protocol::Http1;
    }
    let proxy = Proxy::start(routes).await;
    let (status, h, _) = send(
        &h1_client(),
        Request::post(proxy.url("/portico.test.Echo/Unary"))
            .header("content-type", "application/grpc-web-text")
            .body(full("AAAAAAA="))
            .unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(h["x-seen-content-type"], "application/grpc-web-text");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_web_client_calls_through_the_bridge() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(web_routes(&[up], None)).await;
    let http = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let svc = tower::ServiceBuilder::new()
        .layer(tonic_web::GrpcWebClientLayer::new())
        .service(http);
    let mut c = EchoClient::with_origin(svc, format!("http://{}", proxy.addr).parse().unwrap());
    let rsp = c.unary(req("from tonic-web")).await.unwrap();
    assert_eq!(rsp.into_inner().message, "from tonic-web");
    let stream = c
        .server_stream(EchoRequest {
            count: 50,
            ..req("s")
        })
        .await
        .unwrap()
        .into_inner();
    let n = read_in_order(stream).await;
    assert_eq!(n, 50);
    let err = c
        .unary(EchoRequest {
            code: Code::AlreadyExists as i32,
            ..req("dup")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::AlreadyExists);
    assert_eq!(err.message(), "dup");

    let metrics = proxy.dp.encode_metrics().unwrap();
    assert!(
        metrics.contains(r#"portico_grpc_calls_total{protocol="grpc-web",code="OK"} 2"#),
        "{metrics}"
    );
    assert!(
        metrics
            .contains(r#"portico_grpc_calls_total{protocol="grpc-web",code="ALREADY_EXISTS"} 1"#),
        "{metrics}"
    );
}
