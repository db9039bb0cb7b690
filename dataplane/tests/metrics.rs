//! Metric values as the admin listener serves them at `/metrics`, over real
//! sockets: not only that a series exists, but that it reads what happened.

mod support;

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use portico_dataplane::AccessLogSink;
use support::*;

const OPEN_CONNECTIONS: &str = "portico_open_connections";
const GENERATION: &str = "portico_route_table_generation";
const LAST_SWAP: &str = "portico_route_table_last_swap_timestamp_seconds";
const LOG_DROPPED: &str = "portico_access_log_dropped_total";
const REQUESTS: &str = "portico_requests_total{";

#[tokio::test]
async fn open_connections_counts_a_kept_alive_client_until_it_closes() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("conn.test", up.addr)).await;
    assert_eq!(sample(&proxy.scrape().await, OPEN_CONNECTIONS), Some(0.0));

    // One client connection, kept alive after its request.
    let stream = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let req = Request::get("/")
        .header("host", "conn.test")
        .body(empty())
        .unwrap();
    let rsp = sender.send_request(req).await.unwrap();
    assert_eq!(rsp.status(), StatusCode::OK);
    // Counted from the accept, so before its first answer.
    assert_eq!(sample(&proxy.scrape().await, OPEN_CONNECTIONS), Some(1.0));

    rsp.into_body().collect().await.unwrap();
    // Dropping the sender closes the now idle connection.
    drop(sender);
    conn.await.unwrap().unwrap();
    assert_eventually!(
        sample(&proxy.scrape().await, OPEN_CONNECTIONS) == Some(0.0),
        "open connections back to 0 after the client closed"
    );
}

#[tokio::test]
async fn each_publish_moves_generation_by_one_and_stamps_the_swap_time() {
    let up = Upstream::echo("a").await;
    let proxy = Proxy::start(simple("gen.test", up.addr)).await;
    let first = sample(&proxy.scrape().await, GENERATION).expect("generation sample");
    assert_eq!(first, 1.0, "one publish so far");
    for n in 1..=3 {
        proxy.dp.publish(simple("gen.test", up.addr));
        let text = proxy.scrape().await;
        assert_eq!(sample(&text, GENERATION), Some(first + f64::from(n)));
        let swapped = sample(&text, LAST_SWAP).expect("last-swap sample");
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            (now - swapped).abs() < 60.0,
            "last swap {swapped} is not a Unix time near now ({now})"
        );
    }
}

/// An access-log sink whose writes block until the test lets go: the
/// writer thread is stuck from its first flush on.
struct StuckSink {
    stuck: Arc<AtomicBool>,
    release: std::sync::mpsc::Receiver<()>,
}

impl Write for StuckSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.stuck.store(true, Ordering::SeqCst);
        // Returns once the sender is dropped.
        let _ = self.release.recv();
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_access_log_drops_lines_and_never_holds_requests() {
    const BURST: usize = 32;
    let up = Upstream::echo("a").await;
    let stuck = Arc::new(AtomicBool::new(false));
    let (release, blocked) = std::sync::mpsc::channel::<()>();
    let sink = StuckSink {
        stuck: Arc::clone(&stuck),
        release: blocked,
    };
    let proxy = Proxy::start_with(simple("log.test", up.addr), |c| {
        c.access_log = AccessLogSink::Writer(Box::new(sink));
        c.access_log_capacity = 1;
    })
    .await;
    let c = h1_client();
    // The first line gets the writer thread stuck in its write.
    let (s, _, _) = get(&c, proxy.addr, "log.test", "/").await;
    assert_eq!(s, StatusCode::OK);
    assert_eventually!(stuck.load(Ordering::SeqCst), "log writer stuck");
    assert_eq!(sample(&proxy.scrape().await, LOG_DROPPED), Some(0.0));

    let burst: Vec<_> = (0..BURST)
        .map(|i| {
            let c = c.clone();
            let addr = proxy.addr;
            tokio::spawn(async move { get(&c, addr, "log.test", &format!("/{i}")).await.0 })
        })
        .collect();
    for r in burst {
        assert_eq!(r.await.unwrap(), StatusCode::OK);
    }
    // The queue holds one line; the rest of the burst is dropped and counted.
    assert_eventually!(
        sample(&proxy.scrape().await, LOG_DROPPED).is_some_and(|n| n > 0.0),
        "dropped lines counted"
    );
    drop(release);
}

#[tokio::test]
async fn request_counter_series_do_not_grow_with_paths_or_hosts() {
    let up = Upstream::echo("a").await;
    // A route by exact host and one by wildcard.
    let cfg = config(
        [("exact", "labels.test"), ("wild", "*.wild.test")]
            .map(|(id, host)| {
                let rule = forward_rule(vec![], vec![backend("b", &[up.addr])]);
                route(id, &[host], vec![rule])
            })
            .to_vec(),
    );
    let proxy = Proxy::start(cfg).await;
    let c = h1_client();
    let series = |text: &str| text.lines().filter(|l| l.starts_with(REQUESTS)).count();
    let total = |text: &str| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(REQUESTS))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    };
    // Every route and the no-route label answered once first.
    for host in ["labels.test", "x.wild.test", "unknown.test"] {
        get(&c, proxy.addr, host, "/").await;
    }
    assert_eventually!(total(&proxy.scrape().await) == 3.0, "warm-up counted");
    let before = proxy.scrape().await;

    for i in 0..100 {
        get(&c, proxy.addr, "labels.test", &format!("/path/{i}")).await;
        get(&c, proxy.addr, &format!("h{i}.wild.test"), "/").await;
        get(&c, proxy.addr, &format!("h{i}.unknown.test"), "/").await;
    }
    assert_eventually!(
        total(&proxy.scrape().await) == 303.0,
        "every request counted"
    );
    let after = proxy.scrape().await;
    assert_eq!(
        series(&after),
        series(&before),
        "request series grew with paths or hosts:\n{after}"
    );
}

#[tokio::test]
async fn a_route_no_table_names_loses_its_series() {
    let up = Upstream::echo("a").await;
    let one = |id: &str, host: &str| {
        route(
            id,
            &[host],
            vec![forward_rule(vec![], vec![backend("b", &[up.addr])])],
        )
    };
    let proxy = Proxy::start(config(vec![one("old", "old.test")])).await;
    let c = h1_client();
    get(&c, proxy.addr, "old.test", "/").await;
    get(&c, proxy.addr, "unknown.test", "/").await;
    let named = |text: &str, route: &str| {
        text.lines()
            .any(|l| l.contains(&format!("route=\"{route}\"")))
    };
    assert_eventually!(
        named(&proxy.scrape().await, "old"),
        "the route's series exported"
    );

    // A rename: the old id's series go with the table that named it; the
    // no-route series stays.
    proxy.dp.publish(config(vec![one("new", "new.test")]));
    get(&c, proxy.addr, "new.test", "/").await;
    let text = proxy.scrape().await;
    assert!(
        !named(&text, "old"),
        "a removed route's series kept:\n{text}"
    );
    assert!(named(&text, "new"), "{text}");
    assert!(named(&text, "none"), "the no-route series dropped:\n{text}");
}
