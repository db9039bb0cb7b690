//! The upstream HTTP/1.1 connection pool over real sockets: idle
//! connections are bounded in number, closed once past the idle timeout,
//! and let go when their upstream closes them.

mod support;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Response, StatusCode};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Barrier, Notify};

/// An upstream's connections: how many it accepted, and how many the other
/// side (the proxy) closed.
#[derive(Default)]
struct Conns {
    accepted: AtomicUsize,
    closed_by_proxy: AtomicUsize,
}

impl Conns {
    fn accepted(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    fn closed(&self) -> usize {
        self.closed_by_proxy.load(Ordering::SeqCst)
    }
}

/// A keep-alive HTTP/1.1 upstream answering 200. The first `together`
/// requests wait for each other, so that many are in flight at once.
async fn counting_upstream(together: usize) -> (SocketAddr, Arc<Conns>) {
    let barrier = Arc::new(Barrier::new(together.max(1)));
    let seen = Arc::new(AtomicUsize::new(0));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let conns = Arc::new(Conns::default());
    let counted = Arc::clone(&conns);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            counted.accepted.fetch_add(1, Ordering::SeqCst);
            let (conns, barrier, seen) = (
                Arc::clone(&counted),
                Arc::clone(&barrier),
                Arc::clone(&seen),
            );
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let barrier = Arc::clone(&barrier);
                    let wait = seen.fetch_add(1, Ordering::SeqCst) < together;
                    async move {
                        if wait {
                            barrier.wait().await;
                        }
                        Ok::<_, Infallible>(Response::new(full("ok")))
                    }
                });
                // Ends when the proxy closes the connection.
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
                conns.closed_by_proxy.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    (addr, conns)
}

async fn get_ok(proxy: &Proxy, host: &str) {
    let (s, _, body) = get(&h1_client(), proxy.addr, host, "/").await;
    assert_eq!((s, body.as_str()), (StatusCode::OK, "ok"));
}

#[tokio::test]
async fn an_idle_connection_is_closed_once_past_the_idle_timeout() {
    let (up, conns) = counting_upstream(0).await;
    let proxy = Proxy::start_with(simple("idle.test", up), |c| {
        c.pool.idle_timeout = Duration::from_millis(300);
    })
    .await;
    get_ok(&proxy, "idle.test").await;
    assert_eq!(conns.accepted(), 1);
    // Nothing else happens: the proxy itself must close it.
    assert_eventually!(conns.closed() == 1, "idle connection closed by the proxy");
    get_ok(&proxy, "idle.test").await;
    assert_eq!(
        conns.accepted(),
        2,
        "a new connection after the old one closed"
    );
}

#[tokio::test]
async fn idle_connections_beyond_the_bound_are_closed() {
    const AT_ONCE: usize = 5;
    const KEPT: usize = 2;
    let (up, conns) = counting_upstream(AT_ONCE).await;
    let proxy = Proxy::start_with(simple("bound.test", up), |c| {
        c.pool.max_idle_per_endpoint = KEPT;
    })
    .await;
    // Each request waits for the others at the upstream: five connections.
    let all = (0..AT_ONCE).map(|_| get_ok(&proxy, "bound.test"));
    futures_util::future::join_all(all).await;
    assert_eq!(conns.accepted(), AT_ONCE);
    assert_eventually!(
        conns.closed() == AT_ONCE - KEPT,
        "{} of {AT_ONCE} closed, want {}",
        conns.closed(),
        AT_ONCE - KEPT
    );
    // The two kept are reused, not replaced.
    get_ok(&proxy, "bound.test").await;
    assert_eq!(conns.accepted(), AT_ONCE);
}

#[tokio::test]
async fn an_idle_connection_its_upstream_closed_is_let_go() {
    // Answers one request per connection with keep-alive, then closes its
    // side when told, and counts when the proxy closes the other.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let conns = Arc::new(Conns::default());
    let close = Arc::new(Notify::new());
    let (counted, told) = (Arc::clone(&conns), Arc::clone(&close));
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counted.accepted.fetch_add(1, Ordering::SeqCst);
            let (conns, told) = (Arc::clone(&counted), Arc::clone(&told));
            tokio::spawn(async move {
                if read_head(&mut stream).await.is_none() {
                    return;
                }
                let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                if stream.write_all(answer).await.is_err() {
                    return;
                }
                told.notified().await;
                let _ = stream.shutdown().await;
                // The proxy's end: the read sees it close.
                let mut buf = [0u8; 64];
                while let Ok(n) = stream.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
                conns.closed_by_proxy.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    // An idle timeout far past the test's patience: only noticing the
    // upstream's close can end the connection in time.
    let proxy = Proxy::start_with(simple("fin.test", up), |c| {
        c.pool.idle_timeout = Duration::from_secs(3600);
    })
    .await;
    get_ok(&proxy, "fin.test").await;
    close.notify_one();
    assert_eventually!(
        conns.closed() == 1,
        "the proxy closed its end of a connection its upstream closed"
    );
}
