//! Global rate limits against a real `redis-server` (started per test on a
//! free port, `portico_testkit::redis`): the limit and the refusal, two
//! dataplanes sharing one count, Redis killed mid-load (fail open, counted,
//! shown by `/readyz`; limiting resumes when it returns), fail closed, TLS
//! with a password, and the local pre-check that spares a refused key its
//! round trips. Windows are a minute long: nothing slides during a test.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use http::StatusCode;
use portico_dataplane::filter::global_rate_limit::{GlobalLimitConfig, RedisConfig};
use portico_dataplane::model::*;
use portico_testkit::redis::{RedisOptions, RedisServer, RedisTls};
use support::*;

const HOST: &str = "global.test";

fn policy(limit: u32) -> GlobalRateLimit {
    GlobalRateLimit {
        id: "ingress/default/web".into(),
        limit,
        window_secs: 60,
        key: HashKey::parse("$remote_addr").unwrap(),
        exempt: vec![],
        status: DEFAULT_GLOBAL_LIMIT_STATUS,
    }
}

fn limited_route(upstream: SocketAddr, p: GlobalRateLimit) -> RouteConfig {
    let mut rule = forward_rule(vec![], vec![backend("app", &[upstream])]);
    rule.chain = vec![Filter::GlobalRateLimit(p)];
    config(vec![route("ingress/default/web", &[HOST], vec![rule])])
}

/// Redis at `url`; a call timeout generous enough for a loaded test
/// machine (the timeout path is the killed server's).
fn redis_at(url: &str, ca: Option<String>, fail_closed: bool) -> GlobalLimitConfig {
    GlobalLimitConfig {
        redis: Some(
            RedisConfig::new(url, ca.map(String::into_bytes))
                .unwrap()
                .with_timeouts(Duration::from_secs(2), Duration::from_secs(2)),
        ),
        fail_closed,
    }
}

async fn proxy_for(route: RouteConfig, limits: GlobalLimitConfig) -> Proxy {
    Proxy::start_with(route, move |c| c.global_limits = limits).await
}

/// A GET from the loopback address `from`, on a connection of its own.
async fn get_from(from: &str, proxy: SocketAddr) -> (StatusCode, http::HeaderMap) {
    let (parts, body) = get_head_from(from, proxy, HOST, "/").await;
    http_body_util::BodyExt::collect(body).await.unwrap();
    (parts.status, parts.headers)
}

async fn statuses(from: &str, proxy: SocketAddr, n: usize) -> Vec<u16> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(get_from(from, proxy).await.0.as_u16());
    }
    out
}

async fn readyz(proxy: &Proxy) -> String {
    proxy.admin_page("/readyz").await
}

fn errors(text: &str, reason: &str) -> f64 {
    sample(
        text,
        &format!("portico_global_rate_limit_errors_total{{reason=\"{reason}\"}}"),
    )
    .unwrap_or(0.0)
}

#[tokio::test]
async fn the_limit_passes_then_429_with_retry_after() {
    let redis = RedisServer::start().await;
    let up = Upstream::echo("app").await;
    let mut p = policy(3);
    p.exempt = vec!["127.0.0.9/32".parse().unwrap()];
    let proxy = proxy_for(
        limited_route(up.addr, p),
        redis_at(&redis.url(), None, false),
    )
    .await;

    assert_eq!(statuses("127.0.0.2", proxy.addr, 3).await, [200, 200, 200]);
    let (status, headers) = get_from("127.0.0.2", proxy.addr).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=120).contains(&retry), "Retry-After {retry}");
    // Another client counts apart; an exempt one is never counted.
    assert_eq!(
        statuses("127.0.0.3", proxy.addr, 4).await,
        [200, 200, 200, 429]
    );
    assert_eq!(statuses("127.0.0.9", proxy.addr, 5).await, [200; 5]);

    let text = proxy.scrape().await;
    assert_eq!(
        sample(
            &text,
            "portico_rate_limited_requests_total{route=\"ingress/default/web\",kind=\"global\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert!(readyz(&proxy).await.contains("global rate limit: redis ok"));
}

/// Two dataplanes (two replicas) count in one Redis: together they pass
/// exactly the limit.
#[tokio::test]
async fn two_dataplanes_share_one_limit() {
    let redis = RedisServer::start().await;
    let up = Upstream::echo("app").await;
    let a = proxy_for(
        limited_route(up.addr, policy(5)),
        redis_at(&redis.url(), None, false),
    )
    .await;
    let b = proxy_for(
        limited_route(up.addr, policy(5)),
        redis_at(&redis.url(), None, false),
    )
    .await;
    let mut passed = 0;
    for i in 0..12 {
        let proxy = if i % 2 == 0 { a.addr } else { b.addr };
        if get_from("127.0.0.2", proxy).await.0 == StatusCode::OK {
            passed += 1;
        }
    }
    assert_eq!(passed, 5);
    // A different limit is another policy, with counts of its own.
    a.dp.publish(limited_route(up.addr, policy(6)));
    assert_eq!(
        statuses("127.0.0.2", a.addr, 7).await,
        [200, 200, 200, 200, 200, 200, 429]
    );
}

/// Redis killed mid-load: requests keep passing, the errors are counted
/// and `/readyz` says so (still ready); Redis back on the same port (empty):
/// limiting resumes without a restart.
#[tokio::test]
async fn redis_down_fails_open_and_limiting_resumes_when_it_returns() {
    let mut redis = RedisServer::start().await;
    let up = Upstream::echo("app").await;
    let proxy = proxy_for(
        limited_route(up.addr, policy(2)),
        redis_at(&redis.url(), None, false),
    )
    .await;
    assert_eq!(statuses("127.0.0.2", proxy.addr, 3).await, [200, 200, 429]);

    redis.kill();
    assert_eq!(statuses("127.0.0.3", proxy.addr, 5).await, [200; 5]);
    let text = proxy.scrape().await;
    let failed = errors(&text, "unavailable") + errors(&text, "timeout") + errors(&text, "error");
    assert!(failed >= 5.0, "{text}");
    let ready = readyz(&proxy).await;
    assert!(ready.starts_with("ready\n"), "{ready}");
    assert!(ready.contains("failing open"), "{ready}");

    redis.restart().await;
    assert_eventually!(
        get_from("127.0.0.4", proxy.addr).await.0 == StatusCode::TOO_MANY_REQUESTS,
        "limiting did not resume"
    );
    assert!(readyz(&proxy).await.contains("redis ok"));
}

/// With `--global-rate-limit-fail-closed`, a request Redis cannot decide
/// is answered 503.
#[tokio::test]
async fn fail_closed_answers_503_while_redis_is_down() {
    let mut redis = RedisServer::start().await;
    let up = Upstream::echo("app").await;
    let proxy = proxy_for(
        limited_route(up.addr, policy(100)),
        redis_at(&redis.url(), None, true),
    )
    .await;
    assert_eq!(statuses("127.0.0.2", proxy.addr, 1).await, [200]);
    redis.kill();
    assert_eq!(statuses("127.0.0.2", proxy.addr, 3).await, [503; 3]);
    assert!(readyz(&proxy).await.contains("failing closed"));
    redis.restart().await;
    assert_eventually!(
        get_from("127.0.0.2", proxy.addr).await.0 == StatusCode::OK,
        "requests still refused after Redis returned"
    );
}

/// `rediss://` with a password: the server's certificate checked against
/// `--redis-ca-file`'s CA.
#[tokio::test]
async fn tls_and_a_password() {
    let ca = tls::TestCa::new();
    let leaf = ca.issue(&["localhost"], 7);
    let redis = RedisServer::start_with(RedisOptions {
        tls: Some(RedisTls {
            cert_pem: leaf.cert_pem.clone(),
            key_pem: leaf.key_pem.clone(),
            ca_pem: ca.pem(),
        }),
        password: Some("s3cret".into()),
    })
    .await;
    let up = Upstream::echo("app").await;
    let url = redis.tls_url().unwrap();
    let proxy = proxy_for(
        limited_route(up.addr, policy(2)),
        redis_at(&url, Some(ca.pem()), false),
    )
    .await;
    assert_eq!(statuses("127.0.0.2", proxy.addr, 3).await, [200, 200, 429]);
    assert!(redis.script_calls().await >= 3);

    // The wrong password: Redis refuses, the requests pass, counted.
    let wrong = url.replace("s3cret", "wrong");
    let other = proxy_for(
        limited_route(up.addr, policy(2)),
        redis_at(&wrong, Some(ca.pem()), false),
    )
    .await;
    assert_eq!(statuses("127.0.0.2", other.addr, 3).await, [200; 3]);
    let text = other.scrape().await;
    assert!(
        errors(&text, "unavailable") + errors(&text, "error") >= 3.0,
        "{text}"
    );

    // Another CA's certificate is not trusted.
    let stranger = tls::TestCa::new();
    let untrusted = proxy_for(
        limited_route(up.addr, policy(1)),
        redis_at(&url, Some(stranger.pem()), false),
    )
    .await;
    assert_eq!(statuses("127.0.0.2", untrusted.addr, 2).await, [200, 200]);
}

/// Once Redis has refused a key, the replica refuses it without asking
/// again until the window would let it through: the script's calls on
/// the server stop growing.
#[tokio::test]
async fn a_refused_key_costs_no_more_round_trips() {
    let redis = RedisServer::start().await;
    let up = Upstream::echo("app").await;
    let proxy = proxy_for(
        limited_route(up.addr, policy(1)),
        redis_at(&redis.url(), None, false),
    )
    .await;
    assert_eq!(statuses("127.0.0.2", proxy.addr, 2).await, [200, 429]);
    let calls = redis.script_calls().await;
    assert!(calls >= 2, "{calls}");
    assert_eq!(statuses("127.0.0.2", proxy.addr, 5).await, [429; 5]);
    assert_eq!(redis.script_calls().await, calls);
    // Another key still asks.
    assert_eq!(statuses("127.0.0.3", proxy.addr, 1).await, [200]);
    assert_eq!(redis.script_calls().await, calls + 1);
}

/// A header key counts per header value; a request without it is not
/// counted (nginx does not count an empty key).
#[tokio::test]
async fn a_header_key_counts_per_value() {
    let redis = RedisServer::start().await;
    let up = Upstream::echo("app").await;
    let mut p = policy(2);
    p.key = HashKey::parse("$http_x_user").unwrap();
    let proxy = proxy_for(
        limited_route(up.addr, p),
        redis_at(&redis.url(), None, false),
    )
    .await;
    let client = h1_client();
    let mut seen = Vec::new();
    for user in ["alice", "alice", "alice", "bob", ""] {
        let mut req = http::Request::get(proxy.url("/")).header("host", HOST);
        if !user.is_empty() {
            req = req.header("x-user", user);
        }
        let (status, _, _) = send(&client, req.body(empty()).unwrap()).await;
        seen.push(status.as_u16());
    }
    assert_eq!(seen, [200, 200, 429, 200, 200]);
    assert_eq!(statuses("127.0.0.2", proxy.addr, 4).await, [200; 4]);
}

/// A replica started while Redis is down lets requests through, and
/// limits once Redis comes up: the connection is retried by later
/// requests, not only made once.
#[tokio::test]
async fn redis_down_at_start_then_up() {
    let mut redis = RedisServer::start().await;
    redis.kill();
    let up = Upstream::echo("app").await;
    let proxy = proxy_for(
        limited_route(up.addr, policy(1)),
        redis_at(&redis.url(), None, false),
    )
    .await;
    assert_eq!(statuses("127.0.0.2", proxy.addr, 3).await, [200; 3]);
    redis.restart().await;
    assert_eventually!(
        get_from("127.0.0.3", proxy.addr).await.0 == StatusCode::TOO_MANY_REQUESTS,
        "limiting did not start once Redis came up"
    );
}

/// The script itself, on the server: the previous window's count weighs
/// by the part of it still inside the sliding window; a refused request
/// is not counted; the wait it returns ends within the current window
/// when only the previous window's weight is in the way. The window is an
/// hour and the decisions keep a margin of several requests either side,
/// so the few milliseconds between reading the server's clock and running
/// the script cannot change them.
#[tokio::test]
async fn the_script_weighs_the_previous_window() {
    use portico_dataplane::filter::global_rate_limit::SCRIPT;
    let redis = RedisServer::start().await;
    let window: u64 = 3_600_000;
    let time = redis.command(&["TIME"]).await.unwrap();
    let (secs, micros) = time.split_once(' ').unwrap();
    let now = secs.parse::<u64>().unwrap() * 1000 + micros.parse::<u64>().unwrap() / 1000;
    let current = now / window;
    let elapsed = now - current * window;
    // The share of the previous window still inside the sliding one, in
    // percent of its 100 requests.
    let weight = (window - elapsed) * 100 / window;
    let eval = |key: &'static str, limit: u64| {
        let redis = &redis;
        async move {
            redis
                .command(&[
                    "EVAL",
                    SCRIPT,
                    "1",
                    key,
                    &limit.to_string(),
                    &window.to_string(),
                ])
                .await
                .unwrap()
        }
    };
    // Both keys: 100 requests counted in the previous window.
    for key in ["a", "b"] {
        let prev = (current - 1).to_string();
        redis
            .command(&["HSET", key, "w", &prev, "c", "100", "p", "0"])
            .await
            .unwrap();
    }
    // Room for one more above the weighted count (with a margin): admitted,
    // and the previous count rolls into `p`, the current one starts at 1.
    assert_eq!(eval("a", weight + 6).await, "1 0");
    assert_eq!(redis.command(&["HGET", "a", "c"]).await.unwrap(), "1");
    assert_eq!(redis.command(&["HGET", "a", "p"]).await.unwrap(), "100");
    assert_eq!(
        redis.command(&["HGET", "a", "w"]).await.unwrap(),
        current.to_string()
    );
    if weight > 7 {
        // Below the weighted count: refused, not counted, and the wait
        // ends within this window (the previous one's weight decays).
        let reply = eval("b", weight - 6).await;
        let (admitted, wait) = reply.split_once(' ').unwrap();
        assert_eq!(admitted, "0", "{reply}");
        let wait: u64 = wait.parse().unwrap();
        assert!(wait >= 1 && wait <= window - elapsed, "{reply}");
        let prev = (current - 1).to_string();
        assert_eq!(redis.command(&["HGET", "b", "w"]).await.unwrap(), prev);
        assert_eq!(redis.command(&["HGET", "b", "c"]).await.unwrap(), "100");
    }
}
