//! `global-rate-limit` through the real binary: two `portico run` processes
//! (two replicas) counting in one real `redis-server` pass exactly the
//! limit together, refusing with `--global-rate-limit-status-code` and
//! `Retry-After`; with Redis gone both let requests through (fail open)
//! and `/readyz` says so while staying ready. Keyed by a header, so that
//! the fail-open part uses a key no process has seen refused.

mod support;

use http::StatusCode;
use portico_testkit::redis::RedisServer;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_limit() {
    let mut redis = RedisServer::start().await;
    let up = upstream("app").await;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = format!("{DEFAULT_INGRESS_CLASS}{}", service_at("app", up));
    yaml += &ingress_for(
        "shared",
        "app",
        r#"nginx.ingress.kubernetes.io/global-rate-limit: "5", nginx.ingress.kubernetes.io/global-rate-limit-window: "1m", nginx.ingress.kubernetes.io/global-rate-limit-key: "$http_x_user""#,
    );
    std::fs::write(dir.path().join("app.yaml"), yaml).unwrap();
    let url = redis.url();
    let args = [
        "--redis-url",
        &url,
        // Generous: the two processes share a loaded test machine.
        "--redis-timeout",
        "2s",
        "--global-rate-limit-status-code",
        "503",
    ];
    let a = Portico::start_with(dir.path(), &args);
    let b = Portico::start_with(dir.path(), &args);
    a.ready().await;
    b.ready().await;

    let mut statuses = Vec::new();
    for i in 0..10 {
        let addr = if i % 2 == 0 { a.http } else { b.http };
        let (status, headers, _) = request(
            addr,
            http::Method::GET,
            "shared.test",
            "/",
            &[("x-user", "alice")],
        )
        .await
        .unwrap();
        if status != StatusCode::OK {
            assert!(headers.contains_key("retry-after"), "{headers:?}");
        }
        statuses.push(status.as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 200, 200, 503, 503, 503, 503, 503]);

    // Another key (alice's refusal is remembered by each process until
    // her window would let her through: that needs no Redis).
    redis.kill();
    for addr in [a.http, b.http, a.http, b.http, a.http, b.http] {
        let (status, _, _) = request(
            addr,
            http::Method::GET,
            "shared.test",
            "/",
            &[("x-user", "bob")],
        )
        .await
        .unwrap();
        assert_eq!(status, StatusCode::OK, "fail open");
    }
    let (status, ready) = get(a.admin, "x", "/readyz").await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        ready.contains("global rate limit: redis") && ready.contains("failing open"),
        "{ready}"
    );
    let (_, metrics) = get(b.admin, "x", "/metrics").await.unwrap();
    assert!(
        metrics.contains("portico_global_rate_limit_errors_total{reason=\"unavailable\"}")
            || metrics.contains("portico_global_rate_limit_errors_total{reason=\"timeout\"}"),
        "{metrics}"
    );
}
