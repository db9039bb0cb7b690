//! Bodies stream through the proxy: 256 MiB each way while resident memory
//! grows by less than 16 MiB. Its own test binary so nothing else runs in
//! the process while memory is sampled.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use support::*;

const TOTAL: u64 = 256 * 1024 * 1024;
const CHUNK: usize = 64 * 1024;

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// A body of `total` bytes generated chunk by chunk, never held whole.
fn generated(total: u64) -> Body {
    let chunk = Bytes::from(vec![b'z'; CHUNK]);
    let mut left = total;
    let stream = futures_util::stream::poll_fn(move |_| {
        if left == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = left.min(CHUNK as u64);
        left -= n;
        std::task::Poll::Ready(Some(Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
            Frame::data(chunk.slice(..n as usize)),
        )))
    });
    StreamBody::new(stream).boxed()
}

/// Reads a body to the end, counting bytes and keeping none.
async fn drain(mut body: Incoming) -> u64 {
    let mut n = 0;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.expect("body frame").into_data() {
            n += data.len() as u64;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_in_bounded_memory() {
    let up = Upstream::start(|req: Request<Incoming>| async move {
        if req.method() == http::Method::POST {
            let n = drain(req.into_body()).await;
            Response::new(full(n.to_string()))
        } else {
            Response::new(generated(TOTAL))
        }
    })
    .await;
    let mut cfg = simple("big.test", up.addr);
    std::sync::Arc::make_mut(&mut cfg.routes[0]).rules[0].set_body_limit(None);
    let proxy = Proxy::start(cfg).await;
    let c = h1_client();

    // Warm up pools and allocator before the baseline.
    let req = Request::post(proxy.url("/"))
        .header("host", "big.test")
        .body(generated(4 * 1024 * 1024))
        .unwrap();
    assert_eq!(send(&c, req).await.0, StatusCode::OK);

    let baseline = rss_bytes();
    let peak = Arc::new(AtomicU64::new(baseline));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (Arc::clone(&peak), Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                peak.fetch_max(rss_bytes(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let req = Request::post(proxy.url("/upload"))
        .header("host", "big.test")
        .body(generated(TOTAL))
        .unwrap();
    let (s, _, body) = send(&c, req).await;
    assert_eq!(
        (s, body),
        (StatusCode::OK, TOTAL.to_string()),
        "upload arrived whole"
    );

    let req = Request::get(proxy.url("/download"))
        .header("host", "big.test")
        .body(empty())
        .unwrap();
    let rsp = c.request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    assert_eq!(
        drain(rsp.into_body()).await,
        TOTAL,
        "download arrived whole"
    );

    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    let growth = peak.load(Ordering::Relaxed).saturating_sub(baseline);
    eprintln!(
        "rss baseline {} MiB, growth {:.1} MiB while moving 2 x 256 MiB",
        baseline >> 20,
        growth as f64 / (1 << 20) as f64
    );
    assert!(growth < 16 * 1024 * 1024, "RSS grew by {growth} bytes");
}
