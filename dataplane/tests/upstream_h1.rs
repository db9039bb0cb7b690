//! Portico's own HTTP/1.1 upstream client over real sockets: framing of
//! requests and responses as an upstream sees and sends them byte for byte,
//! and when a connection is (and is not) reused.

mod support;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// What a raw upstream does after answering.
#[derive(Clone, Copy, PartialEq)]
enum After {
    Keep,
    Close,
}

/// What a raw upstream saw: connections accepted, and each request's bytes
/// (head and body as framed on the wire).
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    requests: Mutex<Vec<Vec<u8>>>,
    /// Connections the upstream itself has closed.
    closed: AtomicUsize,
}

impl Seen {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn request(&self, i: usize) -> String {
        String::from_utf8_lossy(&self.requests.lock().unwrap()[i]).into_owned()
    }
}

type Answer = Arc<dyn Fn(usize) -> (Vec<u8>, After) + Send + Sync>;

/// An upstream that reads each request whole (by its content-length or
/// chunked framing) and answers the `n`th request with exactly the bytes
/// `answer(n)` gives.
async fn raw_upstream(
    answer: impl Fn(usize) -> (Vec<u8>, After) + Send + Sync + 'static,
) -> (SocketAddr, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let answer: Answer = Arc::new(answer);
    let counted = Arc::clone(&seen);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.accepted.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(serve_raw(stream, Arc::clone(&counted), Arc::clone(&answer)));
        }
    });
    (addr, seen)
}

async fn serve_raw(mut stream: TcpStream, seen: Arc<Seen>, answer: Answer) {
    let mut buf = Vec::new();
    while let Some(request) = read_request(&mut stream, &mut buf).await {
        let n = {
            let mut all = seen.requests.lock().unwrap();
            all.push(request);
            all.len() - 1
        };
        let (bytes, after) = answer(n);
        if stream.write_all(&bytes).await.is_err() {
            break;
        }
        if after == After::Close {
            let _ = stream.shutdown().await;
            drop(stream);
            seen.closed.fetch_add(1, Ordering::SeqCst);
            return;
        }
    }
}

/// One request off `stream` (`buf` holds what was read past the last):
/// `None` when the peer closed.
async fn read_request(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let len = if let Some(cl) = head.lines().find_map(|l| l.strip_prefix("content-length:")) {
        let n: usize = cl.trim().parse().unwrap();
        while buf.len() < head_end + n {
            fill(stream, buf).await?;
        }
        head_end + n
    } else if head.contains("transfer-encoding: chunked") {
        loop {
            // The last chunk: at the start, or after a line end.
            let body = &buf[head_end..];
            if body.starts_with(b"0\r\n\r\n") {
                break head_end + 5;
            }
            if let Some(at) = body.windows(6).position(|w| w == b"\n0\r\n\r\n") {
                break head_end + at + 6;
            }
            fill(stream, buf).await?;
        }
    } else {
        head_end
    };
    Some(buf.drain(..len).collect())
}

async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match stream.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

fn keep(bytes: &str) -> (Vec<u8>, After) {
    (bytes.as_bytes().to_vec(), After::Keep)
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

async fn proxy_to(up: SocketAddr) -> Proxy {
    Proxy::start(simple("h1.test", up)).await
}

async fn get_body(proxy: &Proxy, path: &str) -> (StatusCode, String) {
    let (status, _, body) = get(&h1_client(), proxy.addr, "h1.test", path).await;
    (status, body)
}

#[tokio::test]
async fn keep_alive_connections_are_reused() {
    let (up, seen) = raw_upstream(|_| keep(OK)).await;
    let proxy = proxy_to(up).await;
    for i in 0..5 {
        assert_eq!(
            get_body(&proxy, &format!("/n/{i}?q=1")).await,
            (StatusCode::OK, "ok".into())
        );
    }
    assert_eq!(
        seen.accepted(),
        1,
        "one upstream connection for five requests"
    );
    let first = seen.request(0);
    assert!(first.starts_with("GET /n/0?q=1 HTTP/1.1\r\n"), "{first}");
    assert!(first.contains("host: h1.test\r\n"), "{first}");
    assert!(first.ends_with("\r\n\r\n"), "no body on a GET: {first}");
}

#[tokio::test]
async fn chunked_responses_pass_their_trailers_on() {
    let (up, seen) = raw_upstream(|_| {
        keep("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-sum: 42\r\n\r\n")
    })
    .await;
    let proxy = proxy_to(up).await;
    // Over h2 to the proxy, so the trailers can reach the client.
    let mut h2 = h2c_connection(proxy.addr).await;
    for _ in 0..2 {
        let req = Request::get("http://h1.test/").body(empty()).unwrap();
        let rsp = h2.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        let collected = rsp.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers");
        assert_eq!(trailers["x-sum"], "42");
        assert_eq!(collected.to_bytes(), "hello world");
    }
    assert_eq!(seen.accepted(), 1, "the chunked body was read to its end");
}

#[tokio::test]
async fn a_close_delimited_response_is_read_to_the_end_and_not_reused() {
    let (up, seen) = raw_upstream(|_| {
        (
            b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n\r\nuntil the end".to_vec(),
            After::Close,
        )
    })
    .await;
    let proxy = proxy_to(up).await;
    for _ in 0..2 {
        assert_eq!(
            get_body(&proxy, "/").await,
            (StatusCode::OK, "until the end".into())
        );
    }
    assert_eq!(seen.accepted(), 2);
}

#[tokio::test]
async fn transfer_encoding_wins_over_content_length_and_the_connection_is_dropped() {
    let (up, seen) = raw_upstream(|_| {
        keep("HTTP/1.1 200 OK\r\ncontent-length: 100\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
    })
    .await;
    let proxy = proxy_to(up).await;
    for _ in 0..2 {
        let (status, headers, body) = get(&h1_client(), proxy.addr, "h1.test", "/").await;
        assert_eq!((status, body.as_str()), (StatusCode::OK, "hello"));
        assert_ne!(
            headers.get("content-length").map(|v| v.as_bytes()),
            Some(&b"100"[..])
        );
    }
    assert_eq!(
        seen.accepted(),
        2,
        "a connection that sent both is not reused"
    );
}

#[tokio::test]
async fn a_head_over_the_limit_is_a_502() {
    let (up, _seen) = raw_upstream(|_| {
        let big = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\n\r\n", "a".repeat(420_000));
        keep(&big)
    })
    .await;
    let proxy = proxy_to(up).await;
    assert_eq!(get_body(&proxy, "/").await.0, StatusCode::BAD_GATEWAY);
}

#[tokio::test]
async fn invalid_content_length_and_garbage_are_502s() {
    let answers = [
        "HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-length: 3\r\n\r\nok",
        "HTTP/1.1 200 OK\r\ncontent-length: -2\r\n\r\nok",
        "HTTP/1.1 200 OK\r\nx: a\r\n folded\r\ncontent-length: 2\r\n\r\nok",
        "SMTP ready\r\n\r\n",
    ];
    let (up, _seen) = raw_upstream(move |n| keep(answers[n % answers.len()])).await;
    let proxy = proxy_to(up).await;
    for _ in answers {
        assert_eq!(get_body(&proxy, "/").await.0, StatusCode::BAD_GATEWAY);
    }
}

#[tokio::test]
async fn a_pooled_connection_its_upstream_closed_is_replaced() {
    let (up, seen) = raw_upstream(|_| (OK.as_bytes().to_vec(), After::Close)).await;
    let proxy = proxy_to(up).await;
    assert_eq!(get_body(&proxy, "/").await, (StatusCode::OK, "ok".into()));
    // The response said nothing of closing: the proxy pooled it.
    assert_eventually!(seen.closed.load(Ordering::SeqCst) == 1, "upstream closed");
    assert_eq!(get_body(&proxy, "/").await, (StatusCode::OK, "ok".into()));
    assert_eq!(seen.accepted(), 2);
}

#[tokio::test]
async fn bytes_after_a_response_body_stop_reuse() {
    let (up, seen) =
        raw_upstream(|_| keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokEXTRA")).await;
    let proxy = proxy_to(up).await;
    for _ in 0..2 {
        assert_eq!(get_body(&proxy, "/").await, (StatusCode::OK, "ok".into()));
    }
    assert_eq!(seen.accepted(), 2);
}

#[tokio::test]
async fn head_204_and_304_responses_have_no_body_and_keep_the_connection() {
    let answers = [
        "HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n",
        "HTTP/1.1 204 No Content\r\n\r\n",
        "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
        OK,
    ];
    let (up, seen) = raw_upstream(move |n| keep(answers[n])).await;
    let proxy = proxy_to(up).await;
    let client = h1_client();
    let head = Request::head(proxy.url("/"))
        .header("host", "h1.test")
        .body(empty())
        .unwrap();
    let (status, headers, body) = send(&client, head).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, ""));
    assert_eq!(headers["content-length"], "10");
    assert_eq!(get_body(&proxy, "/").await.0, StatusCode::NO_CONTENT);
    assert_eq!(get_body(&proxy, "/").await.0, StatusCode::NOT_MODIFIED);
    assert_eq!(get_body(&proxy, "/").await, (StatusCode::OK, "ok".into()));
    assert_eq!(seen.accepted(), 1);
    assert!(seen.request(0).starts_with("HEAD / HTTP/1.1\r\n"));
}

#[tokio::test]
async fn informational_responses_are_skipped_and_reason_phrases_kept() {
    let (up, seen) = raw_upstream(|_| {
        keep("HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nlink: </a>\r\n\r\nHTTP/1.1 200 Quite Fine\r\ncontent-length: 2\r\n\r\nok")
    })
    .await;
    let proxy = proxy_to(up).await;
    let raw = raw_exchange(
        proxy.addr,
        b"GET / HTTP/1.1\r\nhost: h1.test\r\nconnection: close\r\n\r\n",
        false,
    )
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200 Quite Fine\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nok"), "{text}");
    assert_eq!(get_body(&proxy, "/").await, (StatusCode::OK, "ok".into()));
    assert_eq!(seen.accepted(), 1);
}

#[tokio::test]
async fn request_bodies_go_out_with_content_length_or_chunked() {
    let (up, seen) = raw_upstream(|_| keep(OK)).await;
    let proxy = proxy_to(up).await;
    let client = h1_client();
    let sized = Request::post(proxy.url("/sized"))
        .header("host", "h1.test")
        .body(full("hello"))
        .unwrap();
    assert_eq!(send(&client, sized).await.0, StatusCode::OK);
    let (tx, rx) = mpsc::channel::<
        Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(4);
    let streamed = Request::post(proxy.url("/streamed"))
        .header("host", "h1.test")
        .body(BodyExt::boxed(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
        .unwrap();
    let sending = tokio::spawn(async move {
        for part in ["hello", " ", "world"] {
            tx.send(Ok(http_body::Frame::data(Bytes::from(part))))
                .await
                .unwrap();
        }
    });
    assert_eq!(send(&client, streamed).await.0, StatusCode::OK);
    sending.await.unwrap();
    let sized = seen.request(0);
    assert!(sized.starts_with("POST /sized HTTP/1.1\r\n"), "{sized}");
    assert!(sized.contains("content-length: 5\r\n"), "{sized}");
    assert!(sized.ends_with("\r\n\r\nhello"), "{sized}");
    let streamed = seen.request(1);
    assert!(
        streamed.contains("transfer-encoding: chunked\r\n"),
        "{streamed}"
    );
    assert!(!streamed.contains("content-length"), "{streamed}");
    let body = &streamed[streamed.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(dechunk(body), "hello world", "{body:?}");
    assert!(body.ends_with("0\r\n\r\n"));
    assert_eq!(seen.accepted(), 1);
}

/// The data of a chunked body (no extensions, no trailers).
fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size, 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

#[tokio::test]
async fn an_early_answer_comes_back_before_the_request_body_is_done() {
    // Reads the head only, answers 413 and closes.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_some() {
                    let _ = stream
                        .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 4\r\nconnection: close\r\n\r\nbig!")
                        .await;
                }
            });
        }
    });
    let proxy = proxy_to(up).await;
    let (tx, rx) = mpsc::channel::<
        Result<http_body::Frame<Bytes>, Box<dyn std::error::Error + Send + Sync>>,
    >(4);
    tx.send(Ok(http_body::Frame::data(Bytes::from("first part"))))
        .await
        .unwrap();
    let req = Request::builder()
        .method(Method::PUT)
        .uri(proxy.url("/upload"))
        .header("host", "h1.test")
        .body(BodyExt::boxed(StreamBody::new(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
        .unwrap();
    // The sender stays open: the body is not done when the answer comes.
    let (status, _, body) = send(&h1_client(), req).await;
    assert_eq!(
        (status, body.as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, "big!")
    );
    drop(tx);
}
