//! The HTTP/2 upstream client: flow control, trailers, resets, refusals,
//! GOAWAY and stream limits, against upstreams written over the `h2`
//! crate's server so each test controls the frames, and clients over its
//! client so each test controls windows and resets.

mod support;

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::{HeaderMap, Request, Response, StatusCode};
use portico_dataplane::model::{Protocol, RouteConfig};
use support::*;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Barrier, mpsc};

type Handler = Arc<
    dyn Fn(Request<RecvStream>, SendResponse<Bytes>) -> Pin<Box<dyn Future<Output = ()> + Send>>
        + Send
        + Sync,
>;

/// An h2c upstream over the `h2` crate's server: each stream goes to
/// `handler` in a task of its own.
struct FrameUpstream {
    addr: SocketAddr,
    /// Connections accepted.
    connections: Arc<AtomicUsize>,
    /// Streams accepted.
    streams: Arc<AtomicUsize>,
}

impl FrameUpstream {
    async fn start<F, Fut>(settings: h2::server::Builder, go_away_first: bool, handler: F) -> Self
    where
        F: Fn(Request<RecvStream>, SendResponse<Bytes>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req, rsp| Box::pin(handler(req, rsp)));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let streams = Arc::new(AtomicUsize::new(0));
        let (conns, strs) = (Arc::clone(&connections), Arc::clone(&streams));
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                conns.fetch_add(1, Ordering::SeqCst);
                let (handler, strs, settings) =
                    (Arc::clone(&handler), Arc::clone(&strs), settings.clone());
                tokio::spawn(async move {
                    let Ok(mut conn) = settings.handshake::<_, Bytes>(tcp).await else {
                        return;
                    };
                    let mut first = true;
                    while let Some(Ok((req, rsp))) = conn.accept().await {
                        strs.fetch_add(1, Ordering::SeqCst);
                        if first && go_away_first {
                            // Before the answer goes out: the proxy reads
                            // the GOAWAY ahead of the response.
                            conn.graceful_shutdown();
                        }
                        first = false;
                        tokio::spawn(handler(req, rsp));
                    }
                });
            }
        });
        Self {
            addr,
            connections,
            streams,
        }
    }
}

fn small_windows() -> h2::server::Builder {
    let mut b = h2::server::Builder::new();
    b.initial_window_size(16 * 1024)
        .initial_connection_window_size(16 * 1024);
    b
}

/// Reads a body to its end (releasing the window as it goes), then its
/// trailers.
async fn read_body(recv: &mut RecvStream) -> (Vec<u8>, Option<HeaderMap>) {
    let mut data = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.expect("body data");
        let _ = recv.flow_control().release_capacity(chunk.len());
        data.extend_from_slice(&chunk);
    }
    let trailers = recv.trailers().await.expect("trailers");
    (data, trailers)
}

/// Answers at once, then echoes every piece of the request body as it
/// arrives, and its trailers (or its end) last: a response that streams
/// while the request does.
async fn echo(req: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
    let mut recv = req.into_body();
    let mut send = respond
        .send_response(Response::new(()), false)
        .expect("response head");
    while let Some(chunk) = recv.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = recv.flow_control().release_capacity(chunk.len());
        if send.send_data(chunk, false).is_err() {
            return;
        }
    }
    match recv.trailers().await {
        Ok(Some(mut t)) => {
            t.insert("x-upstream-trailer", "done".parse().unwrap());
            let _ = send.send_trailers(t);
        }
        _ => {
            let _ = send.send_data(Bytes::new(), true);
        }
    }
}

/// An upstream that resets every stream with `reason` before answering.
async fn resetting(reason: Reason) -> FrameUpstream {
    let handler = move |_req, mut respond: SendResponse<Bytes>| async move {
        respond.send_reset(reason);
    };
    FrameUpstream::start(h2::server::Builder::new(), false, handler).await
}

/// A 200 with `body`, sent at once.
async fn answer(mut respond: SendResponse<Bytes>, body: &'static str) {
    let mut send = respond
        .send_response(Response::new(()), false)
        .expect("response head");
    let _ = send.send_data(Bytes::from_static(body.as_bytes()), true);
}

fn h2c_routes(endpoints: &[SocketAddr]) -> RouteConfig {
    let mut b = backend("up", endpoints);
    b.protocol = Protocol::H2c;
    b.policy_mut().outlier.consecutive_errors = 0;
    let mut rule = forward_rule(vec![], vec![b]);
    // Bodies larger than the proxy's own windows.
    rule.set_body_limit(None);
    config(vec![route("r", &["h2.test"], vec![rule])])
}

/// A client connection to the proxy over the `h2` crate, with `window` as
/// both its stream and connection windows.
async fn client(proxy: &Proxy, window: u32) -> h2::client::SendRequest<Bytes> {
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (tx, conn) = h2::client::Builder::new()
        .initial_window_size(window)
        .initial_connection_window_size(window)
        .handshake::<_, Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    tx.ready().await.unwrap()
}

fn request(method: &str) -> Request<()> {
    Request::builder()
        .method(method)
        .uri("http://h2.test/call")
        .body(())
        .unwrap()
}

/// Bounds a test step: a hang fails the test instead of stalling it.
async fn within<F: Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(20), fut)
        .await
        .unwrap_or_else(|_| panic!("{what} within 20 s"))
}

async fn get(tx: &mut h2::client::SendRequest<Bytes>) -> (StatusCode, Vec<u8>) {
    let mut tx = tx.clone().ready().await.unwrap();
    let (rsp, _) = tx.send_request(request("GET"), true).unwrap();
    let rsp = within("response", rsp).await.expect("response head");
    let status = rsp.status();
    let (body, _) = within("body", read_body(&mut rsp.into_body())).await;
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_larger_than_every_window_flows_both_ways() {
    let up = FrameUpstream::start(small_windows(), false, echo).await;
    let proxy = Proxy::start(h2c_routes(&[up.addr])).await;
    let mut tx = client(&proxy, 16 * 1024).await;
    // Above the upstream's 16 KiB windows, and above the proxy's own
    // upstream stream window (2 MiB) on the way back.
    let body: Vec<u8> = (0..3 << 20).map(|i| (i % 251) as u8).collect();
    let (rsp, mut send) = tx.send_request(request("POST"), false).unwrap();
    let sending = {
        let body = Bytes::from(body.clone());
        async move {
            for piece in body.chunks(64 * 1024) {
                send.reserve_capacity(1);
                while send.capacity() == 0 {
                    std::future::poll_fn(|cx| send.poll_capacity(cx))
                        .await
                        .expect("capacity")
                        .expect("capacity");
                }
                send.send_data(body.slice_ref(piece), false).unwrap();
            }
            send.send_data(Bytes::new(), true).unwrap();
        }
    };
    let receiving = async {
        let rsp = rsp.await.expect("response head");
        assert_eq!(rsp.status(), StatusCode::OK);
        read_body(&mut rsp.into_body()).await
    };
    let ((), (echoed, _)) = within("echo", futures_util::future::join(sending, receiving)).await;
    assert_eq!(echoed.len(), body.len());
    assert!(echoed == body, "the echo differs from the body");
}

/// A call through the proxy to the echoing upstream, its request body open
/// after its first piece.
async fn echo_call(
    first: &'static [u8],
) -> (
    FrameUpstream,
    Proxy,
    h2::client::ResponseFuture,
    h2::SendStream<Bytes>,
) {
    let up = FrameUpstream::start(h2::server::Builder::new(), false, echo).await;
    let proxy = Proxy::start(h2c_routes(&[up.addr])).await;
    let mut tx = client(&proxy, 65_535).await;
    let (rsp, mut send) = tx.send_request(request("POST"), false).unwrap();
    send.send_data(Bytes::from_static(first), false).unwrap();
    (up, proxy, rsp, send)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_pass_both_ways() {
    let (_up, _proxy, rsp, mut send) = echo_call(b"payload").await;
    let mut trailers = HeaderMap::new();
    trailers.insert("x-client-trailer", "sent".parse().unwrap());
    send.send_trailers(trailers).unwrap();
    let rsp = within("response", rsp).await.expect("response head");
    let (body, trailers) = within("body", read_body(&mut rsp.into_body())).await;
    assert_eq!(body, b"payload");
    let trailers = trailers.expect("response trailers");
    assert_eq!(trailers["x-client-trailer"], "sent");
    assert_eq!(trailers["x-upstream-trailer"], "done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_streams_while_the_request_body_still_streams() {
    let (_up, _proxy, rsp, mut send) = echo_call(b"ping-1").await;
    // The head comes while the request body is still open.
    let rsp = within("response", rsp).await.expect("response head");
    let mut recv = rsp.into_body();
    for i in 1..=3 {
        let want = format!("ping-{i}");
        let mut got = Vec::new();
        while got.len() < want.len() {
            let chunk = within("echo", recv.data()).await.expect("more").unwrap();
            let _ = recv.flow_control().release_capacity(chunk.len());
            got.extend_from_slice(&chunk);
        }
        assert_eq!(got, want.as_bytes());
        // Only after its echo came back: each piece had to flow up while
        // nothing else moved the exchange on.
        if i < 3 {
            let next = format!("ping-{}", i + 1);
            send.send_data(Bytes::from(next), false).unwrap();
        }
    }
    send.send_data(Bytes::new(), true).unwrap();
    let (rest, _) = within("end", read_body(&mut recv)).await;
    assert!(rest.is_empty());
}

/// A client that resets its stream while the request body is open, before
/// the answer (`answer_head` false) or after its head: the reset the
/// upstream sees.
async fn client_cancel(answer_head: bool) -> Reason {
    // `None` when the stream arrives, then how it was reset.
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let handler = move |_req, mut respond: SendResponse<Bytes>| {
        let seen = seen_tx.clone();
        async move {
            let _ = seen.send(None);
            let reason = if answer_head {
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                std::future::poll_fn(|cx| send.poll_reset(cx)).await
            } else {
                std::future::poll_fn(|cx| respond.poll_reset(cx)).await
            };
            let _ = seen.send(Some(reason.expect("a reset, not an error")));
        }
    };
    let up = FrameUpstream::start(h2::server::Builder::new(), false, handler).await;
    let proxy = Proxy::start(h2c_routes(&[up.addr])).await;
    let mut tx = client(&proxy, 65_535).await;
    let (rsp, mut send) = tx.send_request(request("POST"), false).unwrap();
    send.send_data(Bytes::from_static(b"part"), false).unwrap();
    assert_eq!(within("upstream stream", seen.recv()).await, Some(None));
    if answer_head {
        // The head is in: the rest of the request body is piped on its own.
        let rsp = within("response", rsp).await.expect("response head");
        assert_eq!(rsp.status(), StatusCode::OK);
    }
    send.send_reset(Reason::CANCEL);
    within("upstream reset", seen.recv())
        .await
        .flatten()
        .expect("a reset")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cancels_before_the_answer_cancels_upstream() {
    assert_eq!(client_cancel(false).await, Reason::CANCEL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_cancels_while_the_request_streams_cancels_upstream() {
    assert_eq!(client_cancel(true).await, Reason::CANCEL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_before_the_answer_is_a_bad_gateway() {
    let up = resetting(Reason::INTERNAL_ERROR).await;
    let proxy = Proxy::start(h2c_routes(&[up.addr])).await;
    let mut tx = client(&proxy, 65_535).await;
    let (status, _) = get(&mut tx).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_reset_mid_body_cuts_the_clients_body() {
    // The reset waits for the client to have read the first piece: one
    // that came with the head would fail the head instead.
    let read = Arc::new(tokio::sync::Notify::new());
    let up = FrameUpstream::start(h2::server::Builder::new(), false, {
        let read = Arc::clone(&read);
        move |_req, mut respond: SendResponse<Bytes>| {
            let read = Arc::clone(&read);
            async move {
                let mut send = respond.send_response(Response::new(()), false).unwrap();
                send.send_data(Bytes::from_static(b"partial"), false)
                    .unwrap();
                read.notified().await;
                send.send_reset(Reason::INTERNAL_ERROR);
            }
        }
    })
    .await;
    let proxy = Proxy::start(h2c_routes(&[up.addr])).await;
    let mut tx = client(&proxy, 65_535).await;
    let (rsp, _) = tx.send_request(request("GET"), true).unwrap();
    let rsp = within("response", rsp).await.expect("response head");
    assert_eq!(rsp.status(), StatusCode::OK);
    let mut recv = rsp.into_body();
    let first = within("first piece", recv.data())
        .await
        .expect("data")
        .unwrap();
    assert_eq!(&first[..], b"partial");
    read.notify_one();
    let cut = within("body", recv.data()).await;
    assert!(
        matches!(cut, Some(Err(_))),
        "the client's body was not cut: {cut:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_stream_is_retried_on_another_endpoint() {
    let refuser = resetting(Reason::REFUSED_STREAM).await;
    let good = FrameUpstream::start(h2::server::Builder::new(), false, |_req, respond| {
        answer(respond, "good")
    })
    .await;
    let proxy = Proxy::start(h2c_routes(&[refuser.addr, good.addr])).await;
    let mut tx = client(&proxy, 65_535).await;
    for _ in 0..8 {
        let (status, body) = get(&mut tx).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"good"[..]));
    }
    assert!(
        refuser.streams.load(Ordering::SeqCst) > 0,
        "no request tried the refusing endpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_goaway_the_next_request_opens_a_new_connection() {
    let up = FrameUpstream::start(h2::server::Builder::new(), true, |_req, respond| {
        answer(respond, "ok")
    })
    .await;
    let proxy = Proxy::start(h2c_routes(&[up.addr])).await;
    let mut tx = client(&proxy, 65_535).await;
    for _ in 0..2 {
        let (status, body) = get(&mut tx).await;
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_beyond_the_upstreams_stream_limit_wait_and_none_fail() {
    let mut settings = h2::server::Builder::new();
    settings.max_concurrent_streams(2);
    // Streams answer in pairs: two must be open at once, and a third never
    // is (the upstream would refuse it).
    let pairs = Arc::new(Barrier::new(2));
    let warm = Arc::new(AtomicUsize::new(0));
    let up = FrameUpstream::start(settings, false, move |_req, respond| {
        let (pairs, warm) = (Arc::clone(&pairs), Arc::clone(&warm));
        async move {
            // The first request only warms the connection (the proxy has the
            // limit from the upstream's SETTINGS by its answer).
            if warm.fetch_add(1, Ordering::SeqCst) > 0 {
                pairs.wait().await;
            }
            answer(respond, "ok").await;
        }
    })
    .await;
    let proxy = Proxy::start(h2c_routes(&[up.addr])).await;
    let mut tx = client(&proxy, 65_535).await;
    assert_eq!(get(&mut tx).await.0, StatusCode::OK);
    let calls = (0..10).map(|_| {
        let mut tx = tx.clone();
        async move { get(&mut tx).await }
    });
    for (status, body) in within("calls", futures_util::future::join_all(calls)).await {
        assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"ok"[..]));
    }
    assert_eq!(up.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_body_over_the_limit_is_refused_as_on_http1() {
    // Answers only after the whole body: the limit trips first.
    let up = FrameUpstream::start(
        h2::server::Builder::new(),
        false,
        |req, respond| async move {
            let mut recv = req.into_body();
            while let Some(Ok(chunk)) = recv.data().await {
                let _ = recv.flow_control().release_capacity(chunk.len());
            }
            answer(respond, "read").await;
        },
    )
    .await;
    let mut routes = h2c_routes(&[up.addr]);
    std::sync::Arc::make_mut(&mut routes.routes[0]).rules[0].set_body_limit(Some(1024));
    let proxy = Proxy::start(routes).await;
    let mut tx = client(&proxy, 65_535).await;
    // No content-length: the limit is found while the body streams.
    let (rsp, mut send) = tx.send_request(request("POST"), false).unwrap();
    send.send_data(Bytes::from(vec![b'x'; 600]), false).unwrap();
    send.send_data(Bytes::from(vec![b'x'; 600]), true).unwrap();
    let rsp = within("response", rsp).await.expect("response head");
    assert_eq!(rsp.status(), StatusCode::PAYLOAD_TOO_LARGE);
}
