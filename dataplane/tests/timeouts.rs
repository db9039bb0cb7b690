//! Per-route timeouts over real sockets: the request timeout over the whole
//! exchange, and the gaps allowed inside a body in either direction.

mod support;

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use portico_dataplane::model::Timeouts;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Longer than any timeout under test and far shorter than the defaults
/// they replace: a test that reaches it has found the timeout missing.
const PATIENCE: Duration = Duration::from_secs(20);

/// How the upstream's response body goes on after its head.
#[derive(Clone, Copy)]
enum Tail {
    /// A chunk every `gap`, `count` of them in all.
    Chunks { count: usize, gap: Duration },
    /// One chunk, then nothing (the connection stays open).
    Stall,
}

/// Each chunk the upstream sends.
const CHUNK: &[u8] = b"tick\n";

/// An upstream answering 200 at once with a body that goes on as `tail`
/// says, for as long as the proxy reads it.
async fn streaming_upstream(tail: Tail) -> Upstream {
    Upstream::start(move |_req: Request<Incoming>| async move {
        let (tx, rx) = mpsc::channel::<Result<Frame<Bytes>, std::io::Error>>(1);
        tokio::spawn(async move {
            let chunk = || Ok(Frame::data(Bytes::from_static(CHUNK)));
            match tail {
                Tail::Chunks { count, gap } => {
                    let mut every = tokio::time::interval(gap);
                    for _ in 0..count {
                        every.tick().await;
                        if tx.send(chunk()).await.is_err() {
                            return;
                        }
                    }
                }
                // Ends when the proxy drops the body.
                Tail::Stall => {
                    if tx.send(chunk()).await.is_ok() {
                        tx.closed().await;
                    }
                }
            }
        });
        let body = StreamBody::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        Response::new(BodyExt::boxed(BodyExt::map_err(body, |e| e.into())))
    })
    .await
}

/// Proxies one GET to an upstream streaming as `tail` says, through a rule
/// with timeouts set by `set`, and reads the 200's body frame by frame: the
/// bytes that came, and whether it ended cleanly (`Ok`) or was cut (`Err`).
async fn stream_through(
    tail: Tail,
    set: impl FnOnce(&mut Timeouts),
) -> (usize, Result<(), hyper::Error>) {
    let up = streaming_upstream(tail).await;
    let proxy = proxy_with("stream.test", &up, set).await;
    let req = Request::get(proxy.url("/"))
        .header("host", "stream.test")
        .body(empty())
        .unwrap();
    let rsp = h1_client().request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    let mut body = rsp.into_body();
    let read = async {
        let mut n = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => n += f.data_ref().map_or(0, |d| d.len()),
                Err(e) => return (n, Err(e)),
            }
        }
        (n, Ok(()))
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("the body ended within the test's patience")
}

async fn proxy_with(host: &str, up: &Upstream, set: impl FnOnce(&mut Timeouts)) -> Proxy {
    let mut rule = forward_rule(vec![], vec![backend("b", &[up.addr])]);
    set(&mut rule.timeouts);
    Proxy::start(config(vec![route("r", &[host], vec![rule])])).await
}

#[tokio::test]
async fn the_request_timeout_answers_504_when_the_head_is_late() {
    let up = Upstream::start(|_req: Request<Incoming>| async move {
        std::future::pending::<()>().await;
        Response::new(empty())
    })
    .await;
    let proxy = proxy_with("late.test", &up, |t| {
        t.request = Some(Duration::from_millis(300));
    })
    .await;
    let (s, _, body) =
        tokio::time::timeout(PATIENCE, get(&h1_client(), proxy.addr, "late.test", "/"))
            .await
            .expect("the request timeout ended the exchange");
    assert_eq!(s, StatusCode::GATEWAY_TIMEOUT, "{body}");
}

#[tokio::test]
async fn the_request_timeout_cuts_a_body_that_streams_past_it() {
    let endless = Tail::Chunks {
        count: usize::MAX,
        gap: Duration::from_millis(20),
    };
    let (n, end) = stream_through(endless, |t| {
        t.request = Some(Duration::from_millis(500));
    })
    .await;
    assert!(n > 0, "the body streamed before the cut");
    assert!(
        end.is_err(),
        "the client sees a cut body, not a complete one"
    );
}

#[tokio::test]
async fn the_request_timeout_cuts_a_body_that_stalls() {
    // The gap allowed is far longer than the request's whole time.
    let (n, end) = stream_through(Tail::Stall, |t| {
        t.request = Some(Duration::from_millis(300));
        t.read = Duration::from_secs(3600);
    })
    .await;
    assert_eq!(n, CHUNK.len(), "the first chunk came through");
    assert!(end.is_err());
}

#[tokio::test]
async fn a_gap_in_the_response_body_longer_than_the_read_timeout_cuts_it() {
    let (n, end) = stream_through(Tail::Stall, |t| {
        t.read = Duration::from_millis(300);
    })
    .await;
    assert_eq!(n, CHUNK.len());
    assert!(end.is_err());
}

#[tokio::test]
async fn a_body_that_keeps_coming_outlives_the_read_timeout() {
    // Each gap is short, the whole longer than the read timeout: only
    // gaps count. Each gap has a second of slack for a busy machine.
    let steady = Tail::Chunks {
        count: 30,
        gap: Duration::from_millis(50),
    };
    let (n, end) = stream_through(steady, |t| {
        t.read = Duration::from_secs(1);
    })
    .await;
    assert!(end.is_ok(), "{end:?}");
    assert_eq!(n, 30 * CHUNK.len());
}

#[tokio::test]
async fn a_gap_in_the_request_body_longer_than_the_send_timeout_is_408() {
    // The upstream reads the body, so the proxy is waiting on the client.
    let up = Upstream::start(|req: Request<Incoming>| async move {
        let n = req.into_body().collect().await.map(|b| b.to_bytes().len());
        Response::new(full(format!("{n:?}")))
    })
    .await;
    let proxy = proxy_with("send.test", &up, |t| {
        t.send = Duration::from_millis(300);
    })
    .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"POST / HTTP/1.1\r\nHost: send.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    // The rest of the body never comes; the connection stays open.
    let head = tokio::time::timeout(PATIENCE, read_head(&mut s))
        .await
        .expect("the send timeout ended the wait")
        .expect("an answer before the connection closed");
    let text = String::from_utf8_lossy(&head);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}
