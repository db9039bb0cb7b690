//! External authentication over real sockets: a real HTTP auth service in
//! the test records what it is asked and answers by the status in its
//! path (`/200`, `/401`, ...; `/hang` holds the request until the test
//! releases it). Each status path, the subrequest's headers, header copying,
//! cookies, the cache, timeouts, refused connections and gRPC callers.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{HeaderMap, Request, Response, StatusCode};
use portico_dataplane::external_auth::Template;
use portico_dataplane::model::*;
use support::*;
use tokio::sync::Notify;

/// What the auth service saw of one subrequest.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    uri: String,
    headers: HeaderMap,
    body_len: usize,
}

/// The auth service: answers the status its path names, with a user
/// header, a cookie and a challenge; `/hang` waits for `release`.
struct AuthService {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    release: Arc<Notify>,
    _server: Upstream,
}

impl AuthService {
    async fn start() -> Self {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(Notify::new());
        let (log, gate) = (Arc::clone(&seen), Arc::clone(&release));
        let server = Upstream::start(move |req: Request<hyper::body::Incoming>| {
            let (log, gate) = (Arc::clone(&log), Arc::clone(&gate));
            async move {
                use http_body_util::BodyExt as _;
                let (parts, body) = req.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes().len())
                    .unwrap_or(0);
                log.lock().unwrap().push(Seen {
                    method: parts.method.to_string(),
                    uri: parts.uri.to_string(),
                    headers: parts.headers.clone(),
                    body_len: body,
                });
                let path = parts.uri.path().trim_start_matches('/');
                if path == "hang" {
                    gate.notified().await;
                }
                let status = path.split('/').next().unwrap_or("").parse().unwrap_or(500);
                Response::builder()
                    .status(status)
                    .header("x-auth-request-user", "alice")
                    .header("x-auth-request-groups", "a")
                    .header("x-auth-request-groups", "b")
                    .header("set-cookie", "_oauth2_proxy=fresh; Path=/")
                    .header("www-authenticate", "Bearer realm=\"sso\"")
                    .body(full("auth says no"))
                    .unwrap()
            }
        })
        .await;
        Self {
            addr: server.addr,
            seen,
            release,
            _server: server,
        }
    }

    fn url(&self, path: &str) -> Template {
        Template::service_url(&format!("http://{}{path}", self.addr)).unwrap()
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

fn auth(url: Template) -> ExternalAuth {
    let mut a = ExternalAuth::new(url);
    a.response_headers = vec![
        http::HeaderName::from_static("x-auth-request-user"),
        http::HeaderName::from_static("x-auth-request-email"),
        http::HeaderName::from_static("x-auth-request-groups"),
    ];
    a
}

fn guarded(host: &str, upstream: SocketAddr, auth: ExternalAuth) -> Route {
    let mut rule = forward_rule(vec![], vec![backend("app", &[upstream])]);
    rule.chain.push(Filter::ExternalAuth(Box::new(auth)));
    route(host, &[host], vec![rule])
}

async fn get_with(
    proxy: &Proxy,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::get(proxy.url(path)).header("host", host);
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    send(&h1_client(), req.body(empty()).unwrap()).await
}

#[tokio::test]
async fn an_allowed_request_carries_the_services_headers_upstream() {
    let svc = AuthService::start().await;
    let up = Upstream::echo("app").await;
    let mut policy = auth(svc.url("/200/check"));
    policy.proxy_set_headers = vec![(
        http::HeaderName::from_static("x-auth-team"),
        http::HeaderValue::from_static("platform"),
    )];
    let proxy = Proxy::start(config(vec![guarded("ok.test", up.addr, policy)])).await;

    let req = Request::post(proxy.url("/app/page?q=1&r=2"))
        .header("host", "ok.test")
        .header("cookie", "_oauth2_proxy=abc")
        .header("authorization", "Bearer token")
        .header("x-auth-request-user", "mallory")
        .header("x-auth-request-email", "mallory@evil.test")
        .header("x-original-url", "http://forged.test/")
        .header("content-type", "text/plain")
        .body(full("the body stays for the upstream"))
        .unwrap();
    let (status, headers, body) = send(&h1_client(), req).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The service's answer replaced the client's claims; a listed header
    // the service did not send is not left to the client either.
    assert_eq!(headers["x-seen-h-x-auth-request-user"], "alice");
    assert_eq!(headers["x-seen-h-x-auth-request-groups"], "a|b");
    assert!(!headers.contains_key("x-seen-h-x-auth-request-email"));
    // Cookies only reach the client on allowed requests when asked for.
    assert!(!headers.contains_key("set-cookie"));

    let seen = svc.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "GET");
    assert_eq!(s.uri, "/200/check");
    assert_eq!(s.body_len, 0);
    let h = &s.headers;
    assert!(!h.contains_key("content-length"), "{h:?}");
    assert_eq!(h["cookie"], "_oauth2_proxy=abc");
    assert_eq!(h["authorization"], "Bearer token");
    assert_eq!(h["x-original-url"], "http://ok.test/app/page?q=1&r=2");
    assert_eq!(h["x-original-method"], "POST");
    assert_eq!(h["x-forwarded-host"], "ok.test");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-uri"], "/app/page?q=1&r=2");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    // The same id the upstream gets.
    assert_eq!(h["x-request-id"], headers["x-seen-h-x-request-id"]);
    assert_eq!(h["x-auth-request-redirect"], "/app/page?q=1&r=2");
    assert_eq!(h["x-auth-team"], "platform");
    assert_eq!(h["host"], svc.addr.to_string());
}

#[tokio::test]
async fn each_denial_answers_as_ingress_nginx() {
    let svc = AuthService::start().await;
    let up = Upstream::echo("app").await;
    let mut signin = auth(svc.url("/401"));
    signin.signin = Some(Template::signin_url("https://login.test/oauth2/start").unwrap());
    let mut own_param = auth(svc.url("/401"));
    own_param.signin = Some(Template::signin_url("https://$host/oauth2/start?x=1").unwrap());
    own_param.signin_redirect_param = "return_to".into();
    let proxy = Proxy::start(config(vec![
        guarded("challenge.test", up.addr, auth(svc.url("/401"))),
        guarded("signin.test", up.addr, signin),
        guarded("own.test", up.addr, own_param),
        guarded("forbidden.test", up.addr, auth(svc.url("/403"))),
        guarded("teapot.test", up.addr, auth(svc.url("/418"))),
        guarded("redirect.test", up.addr, auth(svc.url("/302"))),
    ]))
    .await;

    // 401 without a signin URL: the service's challenge, and its cookie.
    let (status, headers, _) = get_with(&proxy, "challenge.test", "/", &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"sso\"");
    assert_eq!(headers["set-cookie"], "_oauth2_proxy=fresh; Path=/");

    // 401 with one: 302 there, the original URL escaped whole in `rd`.
    let (status, headers, _) = get_with(&proxy, "signin.test", "/a/b?c=1&d=2", &[]).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        headers["location"],
        "https://login.test/oauth2/start?rd=http%3A%2F%2Fsignin%2Etest%2Fa%2Fb%3Fc%3D1%26d%3D2"
    );
    assert_eq!(headers["set-cookie"], "_oauth2_proxy=fresh; Path=/");

    // The client's own host, and a named parameter after a written query.
    let (status, headers, _) = get_with(&proxy, "own.test", "/x", &[]).await;
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        headers["location"],
        "https://own.test/oauth2/start?x=1&return_to=http%3A%2F%2Fown%2Etest%2Fx"
    );

    let (status, _, _) = get_with(&proxy, "forbidden.test", "/", &[]).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // Anything else fails closed.
    for host in ["teapot.test", "redirect.test"] {
        let (status, headers, body) = get_with(&proxy, host, "/", &[]).await;
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{host}");
        assert!(!body.contains("app"), "{host}: {body}");
        assert!(!headers.contains_key("set-cookie"), "{host}");
    }
    let metrics = proxy.scrape().await;
    let count = |result: &str| {
        sample(
            &metrics,
            &format!("portico_external_auth_checks_total{{result=\"{result}\"}}"),
        )
        .unwrap_or_else(|| panic!("{result} in\n{metrics}"))
    };
    assert_eq!(count("unauthorized"), 3.0);
    assert_eq!(count("forbidden"), 1.0);
    assert_eq!(count("failed"), 2.0);
}

#[tokio::test]
async fn always_set_cookie_passes_the_cookie_on_success() {
    let svc = AuthService::start().await;
    let up = Upstream::echo("app").await;
    let mut policy = auth(svc.url("/200"));
    policy.always_set_cookie = true;
    let proxy = Proxy::start(config(vec![guarded("ok.test", up.addr, policy)])).await;
    let (status, headers, _) = get_with(&proxy, "ok.test", "/", &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["set-cookie"], "_oauth2_proxy=fresh; Path=/");
    assert_eq!(headers["x-upstream"], "app");
}

#[tokio::test]
async fn a_timeout_and_a_refused_connection_fail_closed() {
    let svc = AuthService::start().await;
    let up = Upstream::echo("app").await;
    let mut hang = auth(svc.url("/hang"));
    hang.timeout = Duration::from_millis(200);
    // A port nothing listens on any more.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let refused = auth(Template::service_url(&format!("http://{closed}/auth")).unwrap());
    let proxy = Proxy::start(config(vec![
        guarded("hang.test", up.addr, hang),
        guarded("refused.test", up.addr, refused),
    ]))
    .await;

    let (status, _, _) = get_with(&proxy, "hang.test", "/", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    // The service got the request and was still holding it.
    assert_eq!(svc.seen().len(), 1);
    svc.release.notify_waiters();

    let (status, _, _) = get_with(&proxy, "refused.test", "/", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
}

#[tokio::test]
async fn the_cache_remembers_allowing_answers_only() {
    let svc = AuthService::start().await;
    let up = Upstream::echo("app").await;
    let cached = |url| {
        let mut a = auth(url);
        a.cache = Some(ExternalAuthCache {
            key: Template::text("$cookie__oauth2_proxy$http_authorization").unwrap(),
            duration: Duration::from_secs(300),
        });
        a
    };
    let proxy = Proxy::start(config(vec![
        guarded("ok.test", up.addr, cached(svc.url("/200"))),
        guarded("no.test", up.addr, cached(svc.url("/401"))),
    ]))
    .await;
    let alice = [("cookie", "_oauth2_proxy=alice")];
    for _ in 0..2 {
        let (status, headers, _) = get_with(&proxy, "ok.test", "/", &alice).await;
        assert_eq!(status, StatusCode::OK);
        // A remembered answer keeps its copied headers.
        assert_eq!(headers["x-seen-h-x-auth-request-user"], "alice");
    }
    assert_eq!(
        svc.seen().len(),
        1,
        "the second request came from the cache"
    );
    // Another key is asked again.
    let bob = [("cookie", "_oauth2_proxy=bob")];
    let (status, _, _) = get_with(&proxy, "ok.test", "/", &bob).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(svc.seen().len(), 2);
    // Without the cookie the key is empty: never remembered.
    for _ in 0..2 {
        let (status, _, _) = get_with(&proxy, "ok.test", "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }
    assert_eq!(svc.seen().len(), 4);
    // Denials are never remembered.
    for _ in 0..2 {
        let (status, _, _) = get_with(&proxy, "no.test", "/", &alice).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(svc.seen().len(), 6);
}

#[tokio::test]
async fn templates_render_per_request() {
    let svc = AuthService::start().await;
    let up = Upstream::echo("app").await;
    let url = Template::service_url(&format!(
        "http://{}/200/check?host=$host&team=$http_x_team&rd=$escaped_request_uri",
        svc.addr
    ))
    .unwrap();
    // `upstream-vhost`: the upstream gets another Host; `$host` stays the
    // client's.
    let mut route = guarded("t.test", up.addr, auth(url));
    if let Action::Forward(f) = &mut route.rules[0].action {
        f.rewrite = Some(UrlRewrite {
            hostname: Some("internal.vhost".into()),
            path: None,
        });
    }
    let proxy = Proxy::start(config(vec![route])).await;
    let (status, headers, _) = get_with(
        &proxy,
        "T.test:8080",
        "/p?a=1",
        &[("x-team", "a&admin=1#%")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-seen-host"], "internal.vhost");
    let seen = svc.seen();
    assert_eq!(
        seen[0].uri,
        "/200/check?host=t.test&team=a%26admin%3D1%23%25&rd=%2Fp%3Fa%3D1"
    );
}

#[tokio::test]
async fn grpc_callers_get_a_grpc_status() {
    let svc = AuthService::start().await;
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(config(vec![
        guarded("no.test", up.addr, auth(svc.url("/403"))),
        guarded("down.test", up.addr, auth(svc.url("/503"))),
    ]))
    .await;
    // HTTP/2 names the host in `:authority`. 403 is PERMISSION_DENIED; a
    // failed check (500) UNKNOWN.
    for (host, code) in [("no.test", "7"), ("down.test", "2")] {
        let req = Request::post(format!("http://{host}/pkg.Svc/Call"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(empty())
            .unwrap();
        let mut conn = h2c_connection(proxy.addr).await;
        let rsp = conn.send_request(req).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK, "{host}");
        assert_eq!(
            rsp.headers()["grpc-status"],
            code,
            "{host}: {:?}",
            rsp.headers()
        );
    }
}

#[tokio::test]
async fn an_in_cluster_service_is_asked_at_its_endpoints() {
    let svc = AuthService::start().await;
    let up = Upstream::echo("app").await;
    // A name no resolver knows: only the Service's endpoints can answer.
    let mut policy = auth(
        Template::service_url("http://oauth2-proxy.auth.svc.cluster.local:4180/200/check").unwrap(),
    );
    policy.service = Some(Box::new(backend("auth/oauth2-proxy:4180", &[svc.addr])));
    let proxy = Proxy::start(config(vec![guarded("ok.test", up.addr, policy)])).await;
    let (status, headers, body) = get_with(&proxy, "ok.test", "/", &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-seen-h-x-auth-request-user"], "alice");
    let seen = svc.seen();
    assert_eq!(seen[0].uri, "/200/check");
    assert_eq!(
        seen[0].headers["host"],
        "oauth2-proxy.auth.svc.cluster.local:4180"
    );
}

#[tokio::test]
async fn a_hand_written_policy_that_fails_the_checks_fails_closed() {
    let svc = AuthService::start().await;
    let up = Upstream::echo("app").await;
    // Read back from JSON as translation never writes it: the service's
    // host from the client's Host header, which here names the auth
    // service itself.
    let steered: ExternalAuth =
        serde_json::from_value(serde_json::json!({"url": "http://$best_http_host/200"})).unwrap();
    let mut bad_param = auth(svc.url("/401"));
    bad_param.signin = Some(Template::signin_url("https://login.test/").unwrap());
    bad_param.signin_redirect_param = "rd&next".into();
    let mut any_host = guarded("any", up.addr, steered);
    any_host.hostnames.clear();
    let proxy = Proxy::start(config(vec![
        guarded("param.test", up.addr, bad_param),
        any_host,
    ]))
    .await;
    let (status, _, _) = get_with(&proxy, &svc.addr.to_string(), "/", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let (status, _, _) = get_with(&proxy, "param.test", "/", &[]).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(svc.seen().is_empty(), "{:?}", svc.seen());
}
