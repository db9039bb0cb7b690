//! Local rate and connection limits over real sockets: a burst then the
//! refusal (status, `Retry-After`, the opt-in RateLimit headers), two
//! client addresses limited apart, an exempt address, requests in flight
//! per client, state kept across a republish of the same policy and fresh
//! for changed settings, and what a gRPC caller gets. Refill is tested in
//! the limiter's unit tests with a clock they move; here only burst
//! exhaustion (one request per minute: nothing refills during a test).

mod support;

use std::net::SocketAddr;

use http::{Request, Response, StatusCode};
use portico_dataplane::model::*;
use support::*;
use tokio::sync::{mpsc, oneshot};

const HOST: &str = "limited.test";

fn per_minute(burst: u32) -> RateLimit {
    RateLimit {
        scope: LimitScope::new("ingress/default/web"),
        rates: vec![Rate {
            requests: 1,
            per: RatePeriod::Minute,
            burst,
        }],
        headers: false,
    }
}

fn limited_route(upstream: SocketAddr, filters: Vec<Filter>) -> RouteConfig {
    let mut rule = forward_rule(vec![], vec![backend("app", &[upstream])]);
    rule.chain = filters;
    config(vec![route("ingress/default/web", &[HOST], vec![rule])])
}

/// A GET for `path` from the loopback address `from` (127.0.0.0/8 is all
/// loopback), on a connection of its own.
async fn get_from(from: &str, proxy: SocketAddr, path: &str) -> (StatusCode, http::HeaderMap) {
    let (parts, body) = head_from(from, proxy, path).await;
    http_body_util::BodyExt::collect(body).await.unwrap();
    (parts.status, parts.headers)
}

/// [`get_from`] up to the answer's head; the body still to read.
async fn head_from(
    from: &str,
    proxy: SocketAddr,
    path: &str,
) -> (http::response::Parts, hyper::body::Incoming) {
    get_head_from(from, proxy, HOST, path).await
}

async fn statuses(from: &str, proxy: SocketAddr, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get_from(from, proxy, "/").await.0.as_u16());
    }
    out
}

#[tokio::test]
async fn a_burst_passes_then_the_refusal_says_when_to_retry() {
    let up = Upstream::echo("app").await;
    let mut limit = per_minute(2);
    limit.scope.status = 429;
    limit.headers = true;
    let proxy = Proxy::start(limited_route(up.addr, vec![Filter::RateLimit(limit)])).await;

    // One plus the burst pass at once (nginx `nodelay`).
    let (status, headers) = get_from("127.0.0.2", proxy.addr, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["ratelimit-policy"], "\"local\";q=3;w=180");
    assert_eq!(headers["ratelimit"], "\"local\";r=2;t=60");
    assert_eq!(statuses("127.0.0.2", proxy.addr, 2).await, [200, 200]);

    let (status, headers) = get_from("127.0.0.2", proxy.addr, "/").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(
        headers["ratelimit"].to_str().unwrap().split(';').nth(1),
        Some("r=0")
    );

    let text = proxy.scrape().await;
    assert_eq!(
        sample(
            &text,
            "portico_rate_limited_requests_total{route=\"ingress/default/web\",kind=\"rate\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "portico_rate_limit_tracked_keys"), Some(1.0));
}

#[tokio::test]
async fn clients_are_limited_apart_and_exempt_ones_never() {
    let up = Upstream::echo("app").await;
    let mut limit = per_minute(1);
    limit.scope.exempt = vec!["127.0.0.4/32".parse().unwrap()];
    let proxy = Proxy::start(limited_route(up.addr, vec![Filter::RateLimit(limit)])).await;

    assert_eq!(statuses("127.0.0.2", proxy.addr, 3).await, [200, 200, 503]);
    // Another address has its own bucket.
    assert_eq!(statuses("127.0.0.3", proxy.addr, 3).await, [200, 200, 503]);
    // An exempt one has none.
    assert_eq!(statuses("127.0.0.4", proxy.addr, 6).await, [200; 6]);
}

#[tokio::test]
async fn a_republish_keeps_the_buckets_and_new_settings_start_fresh() {
    let up = Upstream::echo("app").await;
    let limit = Filter::RateLimit(per_minute(1));
    let proxy = Proxy::start(limited_route(up.addr, vec![limit.clone()])).await;
    assert_eq!(statuses("127.0.0.2", proxy.addr, 3).await, [200, 200, 503]);

    // The same policy (a reconcile with nothing changed): still empty.
    proxy.dp.publish(limited_route(up.addr, vec![limit]));
    assert_eq!(statuses("127.0.0.2", proxy.addr, 1).await, [503]);

    // A larger burst is a new policy, with full buckets.
    proxy.dp.publish(limited_route(
        up.addr,
        vec![Filter::RateLimit(per_minute(2))],
    ));
    assert_eq!(
        statuses("127.0.0.2", proxy.addr, 4).await,
        [200, 200, 200, 503]
    );
}

/// A bandwidth limit delivers every byte, and delays the body once past
/// the free bytes (counted; the timing itself is a unit test's).
#[tokio::test]
async fn a_bandwidth_limit_delivers_everything_and_engages() {
    let body = "x".repeat(4096);
    let up = Upstream::start(move |_| {
        let body = body.clone();
        async move { Response::new(full(body)) }
    })
    .await;
    let rate = Filter::ResponseRate(ResponseRate {
        // 4096 bytes, 4000 free: 96 bytes at 1 MB/s, under 0.1 ms.
        bytes_per_second: 1_000_000,
        after: 4000,
    });
    let proxy = Proxy::start(limited_route(up.addr, vec![rate])).await;
    let (parts, body) = head_from("127.0.0.2", proxy.addr, "/").await;
    assert_eq!(parts.status, StatusCode::OK);
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .unwrap()
        .to_bytes();
    assert_eq!(bytes.len(), 4096);
    let text = proxy.scrape().await;
    assert_eq!(
        sample(&text, "portico_response_throttled_total"),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn grpc_callers_get_resource_exhausted() {
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(limited_route(
        up.addr,
        vec![Filter::RateLimit(per_minute(0))],
    ))
    .await;
    let mut conn = h2c_connection(proxy.addr).await;
    // The first reaches the upstream (no gRPC server: UNKNOWN).
    let (_, headers) = grpc_call(&mut conn).await;
    assert_eq!(headers["grpc-status"], "2", "{headers:?}");
    let (status, headers) = grpc_call(&mut conn).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["grpc-status"], "8",
        "RESOURCE_EXHAUSTED: {headers:?}"
    );
    assert!(headers.contains_key("retry-after"));
}

async fn grpc_call(
    conn: &mut hyper::client::conn::http2::SendRequest<Body>,
) -> (StatusCode, http::HeaderMap) {
    let req = Request::post(format!("http://{HOST}/pkg.Svc/Call"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    let rsp = conn.send_request(req).await.unwrap();
    (rsp.status(), rsp.headers().clone())
}

/// An upstream that answers `/hold` requests at once with a body it ends
/// only when the test releases it (it is told of each on `arrived`), and
/// others with a whole body: a place is held until the body ends, not only
/// until the answer's head.
async fn holding_upstream() -> (Upstream, mpsc::UnboundedReceiver<oneshot::Sender<()>>) {
    let (tx, arrived) = mpsc::unbounded_channel();
    let up = Upstream::start(move |req| {
        let tx = tx.clone();
        async move {
            if req.uri().path() != "/hold" {
                return Response::new(full("done"));
            }
            let (release, released) = oneshot::channel::<()>();
            tx.send(release).unwrap();
            let body = tokio_stream::once(released).then_frame();
            Response::new(body)
        }
    })
    .await;
    (up, arrived)
}

/// A body of one chunk, sent when the release comes.
trait ThenFrame {
    fn then_frame(self) -> Body;
}

impl<S> ThenFrame for S
where
    S: tokio_stream::Stream<Item = oneshot::Receiver<()>> + Send + Sync + 'static,
{
    fn then_frame(self) -> Body {
        use http_body_util::BodyExt;
        use tokio_stream::StreamExt;
        let frames = self.then(|released| async move {
            let _ = released.await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(
                bytes::Bytes::from_static(b"done"),
            ))
        });
        http_body_util::StreamBody::new(frames).boxed()
    }
}

#[tokio::test]
async fn requests_in_flight_are_limited_per_client() {
    let (up, mut arrived) = holding_upstream().await;
    let limit = Filter::ConnectionLimit(ConnectionLimit {
        scope: LimitScope::new("ingress/default/web"),
        max: 2,
    });
    let proxy = Proxy::start(limited_route(up.addr, vec![limit])).await;
    let addr = proxy.addr;

    // Two requests whose answers' heads have come back, their bodies not
    // yet: they hold their places until their bodies end.
    let mut held = Vec::new();
    for _ in 0..2 {
        let (parts, body) = head_from("127.0.0.2", addr, "/hold").await;
        assert_eq!(parts.status, StatusCode::OK);
        held.push(tokio::spawn(http_body_util::BodyExt::collect(body)));
    }
    let mut releases = vec![arrived.recv().await.unwrap(), arrived.recv().await.unwrap()];

    let (status, headers) = get_from("127.0.0.2", addr, "/").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(headers["retry-after"], "1");
    // Another client has places of its own.
    assert_eq!(get_from("127.0.0.3", addr, "/").await.0, StatusCode::OK);

    // One finishes: its place is free once its response has ended.
    releases.pop().unwrap().send(()).unwrap();
    assert_eventually!(
        get_from("127.0.0.2", addr, "/").await.0 == StatusCode::OK,
        "a place did not free up"
    );
    releases.pop().unwrap().send(()).unwrap();
    for h in held {
        assert_eq!(h.await.unwrap().unwrap().to_bytes(), "done");
    }
    let text = proxy.scrape().await;
    assert!(
        sample(
            &text,
            "portico_rate_limited_requests_total{route=\"ingress/default/web\",kind=\"connections\"}"
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    // Every place given back: no key left tracked.
    assert_eventually!(
        sample(&proxy.scrape().await, "portico_rate_limit_tracked_keys") == Some(0.0),
        "keys still tracked"
    );
}
