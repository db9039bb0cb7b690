//! HTTP Basic authentication over real sockets: the challenge, each htpasswd
//! hash kind (fixtures made by the real `htpasswd`, see
//! `fixtures/htpasswd/README.md`), the credential kept from the upstream,
//! gRPC callers, the cache, and slow hashes checked off the proxy's workers.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;
use http::{Request, StatusCode};
use portico_dataplane::filter::basic_auth::{BasicAuthConfig, Credentials, parse_htpasswd};
use portico_dataplane::model::*;
use support::*;

/// alice's password in every fixture; bob's is `hunter2`.
const ALICE: &str = "s3cret pass";

fn users(fixture: &str) -> Credentials {
    let path = format!(
        "{}/tests/fixtures/htpasswd/{fixture}",
        env!("CARGO_MANIFEST_DIR")
    );
    let parsed = parse_htpasswd(&std::fs::read_to_string(path).unwrap());
    assert!(parsed.errors.is_empty(), "{:?}", parsed.errors);
    Credentials::new(parsed.users)
}

fn basic_auth(fixture: &str, forward_authorization: bool) -> Filter {
    Filter::BasicAuth(BasicAuth {
        realm: "Staff only".into(),
        secret: format!("default/{fixture}"),
        users: users(fixture),
        forward_authorization,
    })
}

/// A route for `host` to `upstream`, behind `filter`.
fn guarded(host: &str, upstream: std::net::SocketAddr, filter: Option<Filter>) -> Route {
    let mut rule = forward_rule(vec![], vec![backend("app", &[upstream])]);
    rule.chain.extend(filter);
    route(host, &[host], vec![rule])
}

fn authorization(user: &str, password: &str) -> String {
    let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    format!("Basic {token}")
}

async fn get_as(
    proxy: &Proxy,
    host: &str,
    credential: Option<(&str, &str)>,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::get(proxy.url("/")).header("host", host);
    if let Some((user, password)) = credential {
        req = req.header("authorization", authorization(user, password));
    }
    send(&h1_client(), req.body(empty()).unwrap()).await
}

fn metric(text: &str, series: &str) -> f64 {
    sample(text, series).unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

/// `portico_basic_auth_checks_total` with this result.
fn checks(text: &str, result: &str) -> f64 {
    metric(
        text,
        &format!("portico_basic_auth_checks_total{{result=\"{result}\"}}"),
    )
}

/// An upstream and a proxy with a route for `host` behind `fixture`'s
/// users and one for `open.test` without; with `queue`, one verification
/// slot and that many places to wait for it.
async fn one_route(host: &str, fixture: &str, queue: Option<usize>) -> (Upstream, Arc<Proxy>) {
    let up = Upstream::echo("app").await;
    let routes = config(vec![
        guarded(host, up.addr, Some(basic_auth(fixture, false))),
        guarded("open.test", up.addr, None),
    ]);
    let proxy = Proxy::start_with(routes, |cfg| {
        if let Some(queue) = queue {
            cfg.basic_auth = BasicAuthConfig {
                concurrency: 1,
                queue,
                cache_entries: 16,
            }
        }
    })
    .await;
    (up, Arc::new(proxy))
}

#[tokio::test]
async fn challenges_refuses_and_admits_each_hash_kind() {
    let up = Upstream::echo("app").await;
    let kinds = ["bcrypt", "apr1", "md5crypt", "sha256", "sha512", "sha1"];
    let routes = kinds
        .iter()
        .map(|k| guarded(&format!("{k}.test"), up.addr, Some(basic_auth(k, false))))
        .collect();
    let proxy = Proxy::start(config(routes)).await;

    for kind in kinds {
        let host = format!("{kind}.test");
        let (status, headers, _) = get_as(&proxy, &host, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind}");
        assert_eq!(
            headers["www-authenticate"], "Basic realm=\"Staff only\"",
            "{kind}"
        );
        for (user, password) in [("alice", "hunter2"), ("carol", ALICE), ("", "")] {
            let (status, headers, _) = get_as(&proxy, &host, Some((user, password))).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{kind} {user}");
            assert!(headers.contains_key("www-authenticate"), "{kind}");
        }
        for (user, password) in [("alice", ALICE), ("bob", "hunter2")] {
            let (status, _, body) = get_as(&proxy, &host, Some((user, password))).await;
            assert_eq!(
                (status, body.as_str()),
                (StatusCode::OK, "app"),
                "{kind} {user}"
            );
        }
    }
    // A scheme other than Basic is no credential.
    let req = Request::get(proxy.url("/"))
        .header("host", "sha1.test")
        .header("authorization", "Bearer abc")
        .body(empty())
        .unwrap();
    assert_eq!(send(&h1_client(), req).await.0, StatusCode::UNAUTHORIZED);

    let text = proxy.scrape().await;
    assert_eq!(
        metric(
            &text,
            "portico_basic_auth_checks_total{result=\"verified\"}"
        ),
        12.0
    );
    assert_eq!(
        metric(&text, "portico_basic_auth_checks_total{result=\"refused\"}"),
        18.0
    );
    assert_eq!(
        metric(
            &text,
            "portico_basic_auth_checks_total{result=\"challenged\"}"
        ),
        7.0
    );
}

#[tokio::test]
async fn the_credential_stops_at_the_proxy_unless_the_route_forwards_it() {
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(config(vec![
        guarded("strip.test", up.addr, Some(basic_auth("sha1", false))),
        guarded("forward.test", up.addr, Some(basic_auth("sha1", true))),
        guarded("open.test", up.addr, None),
    ]))
    .await;
    let (status, headers, _) = get_as(&proxy, "strip.test", Some(("alice", ALICE))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        !headers.contains_key("x-seen-h-authorization"),
        "{headers:?}"
    );

    let (status, headers, _) = get_as(&proxy, "forward.test", Some(("alice", ALICE))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers["x-seen-h-authorization"],
        authorization("alice", ALICE).as_str()
    );

    // A route without basic auth leaves the header alone.
    let (_, headers, _) = get_as(&proxy, "open.test", Some(("alice", "x"))).await;
    assert_eq!(
        headers["x-seen-h-authorization"],
        authorization("alice", "x").as_str()
    );
}

#[tokio::test]
async fn grpc_callers_get_a_grpc_status() {
    let (_up, proxy) = one_route("grpc.test", "sha1", None).await;
    // HTTP/2 names the host in `:authority`.
    let call = |credential: Option<String>| {
        let proxy_addr = proxy.addr;
        async move {
            let mut req = Request::post("http://grpc.test/pkg.Svc/Call")
                .header("content-type", "application/grpc")
                .header("te", "trailers");
            if let Some(c) = credential {
                req = req.header("authorization", c);
            }
            let mut conn = h2c_connection(proxy_addr).await;
            let rsp = conn.send_request(req.body(empty()).unwrap()).await.unwrap();
            (rsp.status(), rsp.headers().clone())
        }
    };
    let (status, headers) = call(None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["grpc-status"], "16", "UNAUTHENTICATED: {headers:?}");
    assert!(headers.contains_key("www-authenticate"));
    let (status, headers) = call(Some(authorization("bob", "nope"))).await;
    assert_eq!(
        (status, headers["grpc-status"].as_bytes()),
        (StatusCode::OK, b"16".as_slice())
    );
    // Admitted: the call reaches the upstream, which is no gRPC server.
    let (_, headers) = call(Some(authorization("bob", "hunter2"))).await;
    assert_eq!(
        headers["grpc-status"], "2",
        "UNKNOWN, from the upstream: {headers:?}"
    );
}

#[tokio::test]
async fn a_verified_credential_is_remembered_while_the_secret_is_unchanged() {
    let (up, proxy) = one_route("c.test", "bcrypt", None).await;
    let routes = |fixture: &str| {
        config(vec![guarded(
            "c.test",
            up.addr,
            Some(basic_auth(fixture, false)),
        )])
    };
    let status = |password: &'static str| {
        let proxy = Arc::clone(&proxy);
        async move { get_as(&proxy, "c.test", Some(("alice", password))).await.0 }
    };
    let verified_and_cached = || async {
        let text = proxy.scrape().await;
        (checks(&text, "verified"), checks(&text, "cached"))
    };
    for _ in 0..3 {
        assert_eq!(status(ALICE).await, StatusCode::OK);
    }
    assert_eq!(verified_and_cached().await, (1.0, 2.0));
    // A wrong password is never remembered as right.
    assert_eq!(status("s3cret pas").await, StatusCode::UNAUTHORIZED);

    // The same content in a new table: still remembered.
    proxy.dp.publish(routes("bcrypt"));
    assert_eq!(status(ALICE).await, StatusCode::OK);
    assert_eq!(verified_and_cached().await, (1.0, 3.0));

    // Other content (the same password, hashed anew): checked again.
    proxy.dp.publish(routes("apr1"));
    assert_eq!(status(ALICE).await, StatusCode::OK);
    assert_eq!(verified_and_cached().await, (2.0, 3.0));
}

/// Many requests needing a slow bcrypt check (cost 12) at once: they wait
/// for the one verification slot off the workers while another route on
/// the same proxy answers. One runtime thread for the proxy and the
/// clients: a check run on it would hold everything up.
#[tokio::test]
async fn slow_checks_do_not_stall_other_routes() {
    const CHECKS: usize = 6;
    let (_up, proxy) = one_route("slow.test", "bcrypt-cost12", Some(16)).await;
    let done = Arc::new(AtomicUsize::new(0));
    let mut slow = Vec::new();
    for i in 0..CHECKS {
        let (proxy, done) = (Arc::clone(&proxy), Arc::clone(&done));
        slow.push(tokio::spawn(async move {
            let wrong = format!("wrong {i}");
            let status = get_as(&proxy, "slow.test", Some(("alice", &wrong))).await.0;
            done.fetch_add(1, Ordering::SeqCst);
            status
        }));
    }
    // Every check admitted: they are waiting or running.
    let p = Arc::clone(&proxy);
    assert_eventually!(
        sample(&p.scrape().await, "portico_basic_auth_pending") == Some(CHECKS as f64),
        "the checks were never all pending"
    );
    // Another route answers while they still wait for one slot in turn.
    let (status, _, _) = get_as(&proxy, "open.test", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        done.load(Ordering::SeqCst) < CHECKS,
        "the other route answered only after every slow check"
    );
    for s in slow {
        assert_eq!(s.await.unwrap(), StatusCode::UNAUTHORIZED);
    }
    let text = proxy.scrape().await;
    assert_eq!(metric(&text, "portico_basic_auth_pending"), 0.0);
    assert_eq!(
        metric(&text, "portico_basic_auth_checks_total{result=\"refused\"}"),
        CHECKS as f64
    );
}

/// Past the verification slot and its queue, a request is answered 503 at
/// once and counted, instead of queueing without bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checks_past_the_queue_answer_503() {
    let (_up, proxy) = one_route("slow.test", "bcrypt-cost12", Some(0)).await;
    let p = Arc::clone(&proxy);
    let first =
        tokio::spawn(async move { get_as(&p, "slow.test", Some(("alice", "wrong"))).await.0 });
    let p = Arc::clone(&proxy);
    assert_eventually!(
        sample(&p.scrape().await, "portico_basic_auth_pending") == Some(1.0),
        "the first check never started"
    );
    let (status, _, body) = get_as(&proxy, "slow.test", Some(("alice", ALICE))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(first.await.unwrap(), StatusCode::UNAUTHORIZED);
    assert_eq!(checks(&proxy.scrape().await, "overloaded"), 1.0);
    // With the slot free again, the right password gets in.
    assert_eq!(
        get_as(&proxy, "slow.test", Some(("alice", ALICE))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn users_are_shown_only_as_a_count() {
    let (_up, proxy) = one_route("a.test", "sha512", None).await;
    let req = Request::get(format!("http://{}/debug/routes", proxy.debug))
        .body(empty())
        .unwrap();
    let (status, _, text) = send(&h1_client(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("\"basic_auth\""), "{text}");
    assert!(text.contains("\"realm\": \"Staff only\""), "{text}");
    assert!(text.contains("\"secret\": \"default/sha512\""), "{text}");
    assert!(text.contains("\"users\": 2"), "{text}");
    assert!(!text.contains("$6$"), "a hash is shown: {text}");
}
