//! CORS over real sockets: preflights answered by the proxy, other answers
//! decorated, origins matched as their patterns say, credentials never with
//! a wildcard, and the gRPC-Web bridge's CORS unchanged now that it is the
//! same filter.

mod support;

use std::net::SocketAddr;

use http::{HeaderMap, HeaderName, Method, Request, StatusCode};
use portico_dataplane::model::{
    Cors, DisallowedPreflight, Filter, GrpcWeb, IpAccess, OriginPattern, Protocol, RouteConfig,
    Rule,
};
use portico_testkit::{EchoClient, EchoRequest, grpc_upstream};
use support::*;

const APP: &str = "https://app.example.com";

fn origins(list: &[&str]) -> Vec<OriginPattern> {
    list.iter()
        .map(|o| OriginPattern::parse(o).unwrap())
        .collect()
}

fn names(list: &[&'static str]) -> Vec<HeaderName> {
    list.iter().map(|n| HeaderName::from_static(n)).collect()
}

fn methods(list: &[&str]) -> Vec<Method> {
    list.iter()
        .map(|m| Method::from_bytes(m.as_bytes()).unwrap())
        .collect()
}

/// A CORS filter for `allow`, with credentials.
fn cors(allow: &[&str]) -> Cors {
    Cors {
        allow_origins: origins(allow),
        allow_methods: methods(&["GET", "POST", "PUT"]),
        allow_headers: names(&["content-type", "x-a"]),
        expose_headers: names(&["x-trace"]),
        allow_credentials: true,
        max_age: 60,
        disallowed_preflight: DisallowedPreflight::Refuse,
    }
}

/// A rule forwarding everything to `upstream`, with `cors` on its chain.
fn cors_rule(upstream: SocketAddr, cors: Cors) -> Rule {
    let mut rule = forward_rule(vec![], vec![backend("b", &[upstream])]);
    rule.chain.push(Filter::Cors(cors));
    rule
}

fn one_route(host: &str, rule: Rule) -> RouteConfig {
    config(vec![route("cors", &[host], vec![rule])])
}

fn request(proxy: &Proxy, method: Method, host: &str, headers: &[(&str, &str)]) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(proxy.url("/x"))
        .header("host", host);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(empty()).unwrap()
}

fn preflight(proxy: &Proxy, host: &str, origin: &str, extra: &[(&str, &str)]) -> Request<Body> {
    let mut headers = vec![("origin", origin), ("access-control-request-method", "PUT")];
    headers.extend_from_slice(extra);
    request(proxy, Method::OPTIONS, host, &headers)
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).map(|v| v.to_str().unwrap())
}

/// Every `access-control-*` header, named without that prefix, sorted.
fn access_control(h: &HeaderMap) -> Vec<(&str, &str)> {
    let mut found: Vec<_> = h
        .iter()
        .filter_map(|(n, v)| {
            Some((
                n.as_str().strip_prefix("access-control-")?,
                v.to_str().ok()?,
            ))
        })
        .collect();
    found.sort();
    found
}

/// [`access_control`]'s form of `want`.
fn sorted<'a>(mut want: Vec<(&'a str, &'a str)>) -> Vec<(&'a str, &'a str)> {
    want.sort();
    want
}

/// Every `Vary` value, split and lower-cased.
fn vary(h: &HeaderMap) -> Vec<String> {
    h.get_all("vary")
        .iter()
        .flat_map(|v| v.to_str().unwrap().split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_is_answered_by_the_proxy_and_never_forwarded() {
    let pod = Pod::start("app").await;
    let proxy = Proxy::start(one_route("cors.test", cors_rule(pod.addr, cors(&[APP])))).await;
    let c = h1_client();

    let (status, h, body) = send(
        &c,
        preflight(
            &proxy,
            "cors.test",
            APP,
            &[("access-control-request-headers", "x-a, content-type")],
        ),
    )
    .await;
    assert_eq!(status, StatusCode::NO_CONTENT, "{h:?}");
    assert_eq!(body, "");
    assert_eq!(
        access_control(&h),
        sorted(vec![
            ("allow-origin", APP),
            ("allow-credentials", "true"),
            ("allow-methods", "GET, POST, PUT"),
            ("allow-headers", "content-type, x-a"),
            ("expose-headers", "x-trace"),
            ("max-age", "60"),
        ])
    );
    assert_eq!(vary(&h), ["origin"]);
    assert_eq!(pod.hits(), 0, "a preflight must not reach the upstream");

    // An OPTIONS request that is no preflight (no
    // Access-Control-Request-Method) is the application's: forwarded,
    // and decorated like any answer.
    let (status, h, body) = send(
        &c,
        request(&proxy, Method::OPTIONS, "cors.test", &[("origin", APP)]),
    )
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app"));
    assert_eq!(header(&h, "access-control-allow-origin"), Some(APP));
    assert!(!h.contains_key("access-control-allow-methods"));
    assert_eq!(pod.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_requests_are_forwarded_and_their_answers_decorated() {
    // The upstream varies on something of its own and sends a CORS header
    // of its own, which the filter replaces for an allowed origin.
    let up = Upstream::start(|_req: Request<hyper::body::Incoming>| async move {
        http::Response::builder()
            .header("vary", "accept-encoding")
            .header("access-control-allow-origin", "https://stale.example")
            .body(full("up"))
            .unwrap()
    })
    .await;
    let proxy = Proxy::start(one_route("cors.test", cors_rule(up.addr, cors(&[APP])))).await;
    let c = h1_client();

    let get = |origin: Option<&str>| {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        request(&proxy, Method::GET, "cors.test", &headers)
    };
    let (status, h, body) = send(&c, get(Some(APP))).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "up"));
    assert_eq!(header(&h, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&h, "access-control-expose-headers"), Some("x-trace"));
    assert_eq!(vary(&h), ["accept-encoding", "origin"]);
    // The preflight's lists are for preflights only.
    assert!(!h.contains_key("access-control-allow-methods"));
    assert!(!h.contains_key("access-control-max-age"));

    // Another origin, or none: the answer depends on the origin all the
    // same, so it says so; no CORS headers are added.
    for origin in [Some("https://evil.example"), None] {
        let (status, h, _) = send(&c, get(origin)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            header(&h, "access-control-allow-origin"),
            Some("https://stale.example"),
            "{origin:?}: the upstream's own header is left alone"
        );
        assert!(!h.contains_key("access-control-allow-credentials"));
        assert!(!h.contains_key("access-control-expose-headers"));
        assert_eq!(vary(&h), ["accept-encoding", "origin"], "{origin:?}");
    }
}

/// What an origin is answered in `Access-Control-Allow-Origin`.
enum Want {
    /// Itself, as sent.
    Echo,
    Star,
    /// Nothing: no CORS headers.
    No,
}

/// Origins against patterns, one route per pattern list: what each request
/// `Origin` gets as `Access-Control-Allow-Origin` (`None`: no CORS headers).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_match_as_their_patterns_say() {
    let up = Upstream::echo("up").await;
    let routes: [(&str, &[&str], bool); 8] = [
        ("exact.test", &[APP], true),
        ("port.test", &["https://a.example:8443"], true),
        // ingress-nginx's wildcard: exactly one more label.
        ("wild.test", &["https://*.example.com"], true),
        // Gateway API's: any number of labels.
        ("deep.test", &["https://**.example.com"], true),
        ("http.test", &["http://app.example.com"], true),
        ("two.test", &[APP, "http://localhost:3000"], true),
        ("any.test", &["*"], false),
        ("anycred.test", &["*"], true),
    ];
    let mut list = Vec::new();
    for (host, allow, credentials) in routes {
        let mut c = cors(allow);
        c.allow_credentials = credentials;
        list.push(route(host, &[host], vec![cors_rule(up.addr, c)]));
    }
    let proxy = Proxy::start(config(list)).await;
    let c = h1_client();

    use Want::{Echo, No, Star};
    let cases: &[(&str, &str, Want)] = &[
        ("exact.test", APP, Echo),
        // Case-insensitive; echoed as sent.
        ("exact.test", "HTTPS://APP.Example.COM", Echo),
        // The default port, written out, is the same origin.
        ("exact.test", "https://app.example.com:443", Echo),
        ("exact.test", "https://app.example.com:8443", No),
        ("exact.test", "http://app.example.com", No),
        ("exact.test", "https://app.example.com/", No),
        ("exact.test", "https://app.example.com,", No),
        ("exact.test", "https://app.example.com, https://x.test", No),
        ("exact.test", " ", No),
        ("exact.test", "null", No),
        ("exact.test", "https://app.example.com.evil.test", No),
        ("exact.test", "https://xapp.example.com", No),
        (
            "exact.test",
            "https://evil.test/https://app.example.com",
            No,
        ),
        ("exact.test", "wss://app.example.com", No),
        ("port.test", "https://a.example:8443", Echo),
        ("port.test", "https://a.example", No),
        ("port.test", "http://a.example:8443", No),
        ("wild.test", "https://a.example.com", Echo),
        ("wild.test", "https://A-1.Example.COM", Echo),
        ("wild.test", "https://example.com", No),
        ("wild.test", "https://a.b.example.com", No),
        ("wild.test", "https://.example.com", No),
        ("wild.test", "https://aexample.com", No),
        ("wild.test", "http://a.example.com", No),
        ("wild.test", "https://a.example.com:8443", No),
        ("deep.test", "https://a.b.example.com", Echo),
        ("deep.test", "https://example.com", No),
        ("http.test", "http://app.example.com", Echo),
        ("http.test", "https://app.example.com", No),
        ("two.test", APP, Echo),
        ("two.test", "http://localhost:3000", Echo),
        ("two.test", "http://localhost:3001", No),
        // `*` without credentials names no one: any Origin gets `*`.
        ("any.test", "https://x.test", Star),
        ("any.test", "null", Star),
        ("any.test", "chrome-extension://abc", Star),
        // With credentials only a real http(s) origin is echoed.
        ("anycred.test", "https://x.test", Echo),
        ("anycred.test", "null", No),
        ("anycred.test", "chrome-extension://abc", No),
        ("anycred.test", "ftp://x.test", No),
    ];
    let mut wrong = Vec::new();
    for (host, origin, want) in cases {
        let want = match want {
            Echo => Some(*origin),
            Star => Some("*"),
            No => None,
        };
        let (status, h, _) = send(
            &c,
            request(&proxy, Method::GET, host, &[("origin", origin)]),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let got = header(&h, "access-control-allow-origin");
        if got != want {
            wrong.push(format!(
                "{host} Origin {origin:?}: want {want:?}, got {got:?}"
            ));
        }
        // A preflight agrees with the simple request.
        let (status, h, _) = send(&c, preflight(&proxy, host, origin, &[])).await;
        let want_status = if want.is_some() {
            StatusCode::NO_CONTENT
        } else {
            StatusCode::FORBIDDEN
        };
        if (status, header(&h, "access-control-allow-origin")) != (want_status, want) {
            wrong.push(format!(
                "{host} preflight from {origin:?}: want {want_status} {want:?}, got {status} {:?}",
                header(&h, "access-control-allow-origin")
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_never_come_with_a_wildcard() {
    let up = Upstream::echo("up").await;
    let wildcards = |credentials: bool| Cors {
        allow_origins: vec![OriginPattern::Any],
        allow_methods: methods(&["*"]),
        allow_headers: names(&["*"]),
        expose_headers: names(&["*", "x-trace"]),
        allow_credentials: credentials,
        max_age: 5,
        disallowed_preflight: DisallowedPreflight::Refuse,
    };
    let proxy = Proxy::start(config(vec![
        route(
            "open",
            &["open.test"],
            vec![cors_rule(up.addr, wildcards(false))],
        ),
        route(
            "creds",
            &["creds.test"],
            vec![cors_rule(up.addr, wildcards(true))],
        ),
    ]))
    .await;
    let c = h1_client();
    let asked = [("access-control-request-headers", "x-custom, x-other")];

    let (status, h, _) = send(&c, preflight(&proxy, "open.test", APP, &asked)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(header(&h, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&h, "access-control-allow-methods"), Some("*"));
    assert_eq!(header(&h, "access-control-allow-headers"), Some("*"));
    assert_eq!(
        header(&h, "access-control-expose-headers"),
        Some("*, x-trace")
    );
    assert!(!h.contains_key("access-control-allow-credentials"));

    // With credentials browsers read `*` literally: what was asked is
    // echoed instead, and an exposed `*` left out.
    let (status, h, _) = send(&c, preflight(&proxy, "creds.test", APP, &asked)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(header(&h, "access-control-allow-origin"), Some(APP));
    assert_eq!(header(&h, "access-control-allow-credentials"), Some("true"));
    assert_eq!(header(&h, "access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        header(&h, "access-control-allow-headers"),
        Some("x-custom, x-other")
    );
    assert_eq!(header(&h, "access-control-expose-headers"), Some("x-trace"));
    // Nothing asked, nothing allowed.
    let (_, h, _) = send(&c, preflight(&proxy, "creds.test", APP, &[])).await;
    assert!(!h.contains_key("access-control-allow-headers"));

    for host in ["open.test", "creds.test"] {
        let (_, h, _) = send(&c, request(&proxy, Method::GET, host, &[("origin", APP)])).await;
        let credentials = h.contains_key("access-control-allow-credentials");
        let origin = header(&h, "access-control-allow-origin");
        assert!(
            !(credentials && origin == Some("*")),
            "{host}: credentials with *"
        );
        assert_eq!(origin, Some(if credentials { APP } else { "*" }), "{host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_from_another_origin_is_refused_or_forwarded() {
    let pod = Pod::start("app").await;
    let mut forward = cors(&[APP]);
    forward.disallowed_preflight = DisallowedPreflight::Forward;
    let proxy = Proxy::start(config(vec![
        route(
            "refuse",
            &["refuse.test"],
            vec![cors_rule(pod.addr, cors(&[APP]))],
        ),
        route(
            "forward",
            &["forward.test"],
            vec![cors_rule(pod.addr, forward)],
        ),
    ]))
    .await;
    let c = h1_client();
    let evil = "https://evil.example";

    let (status, h, _) = send(&c, preflight(&proxy, "refuse.test", evil, &[])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!h.contains_key("access-control-allow-origin"));
    assert_eq!(vary(&h), ["origin"]);
    assert_eq!(pod.hits(), 0);

    // ingress-nginx's way: the backend answers, without CORS headers.
    let (status, h, body) = send(&c, preflight(&proxy, "forward.test", evil, &[])).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "app"));
    assert!(!h.contains_key("access-control-allow-origin"));
    assert!(!h.contains_key("access-control-allow-methods"));
    assert_eq!(vary(&h), ["origin"]);
    assert_eq!(pod.hits(), 1);
    // An allowed origin's preflight is still the proxy's.
    let (status, _, _) = send(&c, preflight(&proxy, "forward.test", APP, &[])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(pod.hits(), 1);
}

/// A preflight answers before an access check (it carries no credentials),
/// and the proxy's own refusal is decorated like any answer, so the page
/// can read it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_preflight_answers_before_an_ip_deny_and_the_refusal_is_decorated() {
    let pod = Pod::start("app").await;
    let mut rule = cors_rule(pod.addr, cors(&[APP]));
    rule.chain.insert(
        0,
        Filter::IpAccess(IpAccess {
            allow: vec![],
            deny: vec!["127.0.0.0/8".parse().unwrap()],
        }),
    );
    let proxy = Proxy::start(one_route("cors.test", rule)).await;
    let c = h1_client();

    let (status, h, _) = send(&c, preflight(&proxy, "cors.test", APP, &[])).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(header(&h, "access-control-allow-origin"), Some(APP));

    let (status, h, _) = send(
        &c,
        request(&proxy, Method::GET, "cors.test", &[("origin", APP)]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(header(&h, "access-control-allow-origin"), Some(APP));
    assert_eq!(pod.hits(), 0);
}

/// The gRPC-Web bridge's CORS is [`Cors::grpc_web`] on the same filter: its
/// preflights are answered as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_web_preflight_is_answered_as_before() {
    let up = grpc_upstream().await;
    let mut b = backend("echo", &[up]);
    b.protocol = Protocol::H2c;
    let mut rule = forward_rule(vec![], vec![b]);
    rule.grpc.web = Some(GrpcWeb::default());
    rule.chain.push(Filter::Cors(Cors {
        allow_origins: origins(&[APP]),
        ..Cors::grpc_web()
    }));
    let proxy = Proxy::start(one_route("web.test", rule)).await;
    let c = h1_client();
    let asked = [("access-control-request-headers", "content-type,x-grpc-web")];

    let (status, h, _) = send(&c, preflight(&proxy, "web.test", APP, &asked)).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert_eq!(
        access_control(&h),
        sorted(vec![
            ("allow-origin", APP),
            ("allow-methods", "POST, OPTIONS"),
            (
                "allow-headers",
                "x-grpc-web, x-user-agent, grpc-timeout, content-type, authorization"
            ),
            (
                "expose-headers",
                "grpc-status, grpc-message, grpc-status-details-bin"
            ),
            ("max-age", "86400"),
        ])
    );

    let elsewhere = "https://elsewhere.example";
    let (status, h, _) = send(&c, preflight(&proxy, "web.test", elsewhere, &asked)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!h.contains_key("access-control-allow-origin"));
}

/// A gRPC client sends no `Origin`: its calls pass a CORS rule untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_pass_a_cors_rule() {
    let up = grpc_upstream().await;
    let mut b = backend("echo", &[up]);
    b.protocol = Protocol::H2c;
    let mut rule = forward_rule(vec![prefix("/portico.test.Echo")], vec![b]);
    rule.chain.push(Filter::Cors(cors(&[APP])));
    let proxy = Proxy::start(config(vec![route("grpc", &[], vec![rule])])).await;
    let mut client = EchoClient::connect(format!("http://{}", proxy.addr))
        .await
        .unwrap();
    let rsp = client
        .unary(EchoRequest {
            message: "hi".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rsp.get_ref().message, "hi");
    let h = rsp.metadata();
    assert!(h.get("access-control-allow-origin").is_none());
    // Its answer is still one whose CORS headers depend on the origin.
    assert_eq!(h.get("vary").map(|v| v.to_str().unwrap()), Some("origin"));
}
