//! Custom error pages (ingress-nginx `custom-http-errors`, `default-backend`,
//! `--default-backend-service`) over real sockets: a real upstream answers
//! errors, a real error backend writes back what it was asked with, and
//! the client gets the page under the original status.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portico_dataplane::model::{
    Backend, ErrorOrigin, ErrorPages, Filter, GrpcWeb, HeaderModifier, Protocol, RouteConfig, Rule,
};
use support::*;
use tokio::net::TcpListener;

/// A real error backend: answers `status` (200 unless told) with a page
/// listing what it was asked with, one `name=value` line per header after
/// the method and path, and counts the requests.
struct ErrorBackend {
    upstream: Upstream,
    hits: Arc<AtomicU64>,
}

impl ErrorBackend {
    async fn start(status: StatusCode) -> Self {
        let hits = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&hits);
        let upstream = Upstream::start(move |req: Request<Incoming>| {
            counted.fetch_add(1, Ordering::SeqCst);
            async move {
                let mut page = format!(
                    "method={}\npath={}\nversion={:?}\nauthority={}\n",
                    req.method(),
                    req.uri().path_and_query().map_or("", |p| p.as_str()),
                    req.version(),
                    req.uri().authority().map_or("", |a| a.as_str()),
                );
                for (name, value) in req.headers() {
                    page.push_str(&format!("{name}={}\n", value.to_str().unwrap_or("?")));
                }
                let body = req.into_body().collect().await.unwrap().to_bytes();
                page.push_str(&format!("body-bytes={}\n", body.len()));
                Response::builder()
                    .status(status)
                    .header("content-type", "text/x-error-page")
                    .header("cache-control", "no-store")
                    .header("x-error-backend-own", "not for clients")
                    .body(full(page))
                    .unwrap()
            }
        })
        .await;
        Self { upstream, hits }
    }

    fn backend(&self) -> Backend {
        backend("errors/page:80", &[self.upstream.addr])
    }

    fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }
}

/// The page's `name=value` lines.
fn asked(page: &str) -> BTreeMap<String, String> {
    page.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// An upstream answering the status its path ends with (`.../status/404`),
/// with a body and headers of its own; 200 elsewhere.
async fn app() -> Upstream {
    Upstream::start(|req: Request<Incoming>| async move {
        let status = req
            .uri()
            .path()
            .rsplit_once("/status/")
            .and_then(|(_, s)| s.parse().ok())
            .unwrap_or(200);
        // Read the body, as an application would, before answering.
        let _ = req.into_body().collect().await;
        Response::builder()
            .status(status)
            .header("content-type", "text/x-app")
            .header("set-cookie", "app=1")
            .body(full(format!("app answered {status}")))
            .unwrap()
    })
    .await
}

fn pages(codes: &[u16], backend: Backend) -> ErrorPages {
    ErrorPages {
        codes: codes.to_vec(),
        intercept_upstream: true,
        backend,
        origin: ErrorOrigin {
            namespace: "shop".into(),
            ingress: "web".into(),
            service: "app".into(),
            port: "http".into(),
        },
    }
}

fn with_pages(mut rule: Rule, pages: ErrorPages) -> Rule {
    rule.chain.push(Filter::ErrorPages(Box::new(pages)));
    rule
}

fn one_rule(rule: Rule) -> RouteConfig {
    config(vec![route("r", &["shop.test"], vec![rule])])
}

async fn request(
    proxy: &Proxy,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: &'static str,
) -> (StatusCode, http::HeaderMap, String) {
    let mut req = Request::builder()
        .method(method)
        .uri(proxy.url(path))
        .header("host", "shop.test");
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    let body = if body.is_empty() { empty() } else { full(body) };
    send(&h1_client(), req.body(body).unwrap()).await
}

/// GETs `path`: the answer must be the error backend's page for `code`,
/// under that status. What the backend was asked with.
async fn expect_page(proxy: &Proxy, path: &str, code: u16) -> BTreeMap<String, String> {
    let (status, _, page) = request(proxy, Method::GET, path, &[], "").await;
    assert_eq!(status.as_u16(), code, "{path}: {page}");
    let seen = asked(&page);
    assert_eq!(
        seen.get("x-code").map(String::as_str),
        Some(&*code.to_string()),
        "{path}: {page}"
    );
    seen
}

/// GETs `path`: the answer must be the app's own, with `code`.
async fn expect_app(proxy: &Proxy, path: &str, code: u16) {
    let (status, headers, body) = request(proxy, Method::GET, path, &[], "").await;
    assert_eq!(status.as_u16(), code, "{path}");
    assert_eq!(body, format!("app answered {code}"), "{path}");
    assert_eq!(headers["set-cookie"], "app=1", "{path}");
}

#[tokio::test]
async fn a_listed_upstream_status_gets_the_page_under_that_status() {
    let app = app().await;
    let errors = ErrorBackend::start(StatusCode::OK).await;
    let rule = forward_rule(vec![], vec![backend("app", &[app.addr])]);
    let proxy = Proxy::start(one_rule(with_pages(
        rule,
        pages(&[404, 503], errors.backend()),
    )))
    .await;

    let (status, headers, page) = request(
        &proxy,
        Method::GET,
        "/status/404?q=1",
        &[
            ("accept", "application/json"),
            ("x-request-id", "req-1"),
            ("cookie", "session=secret"),
        ],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let seen = asked(&page);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["path"], "/");
    assert_eq!(seen["x-code"], "404");
    assert_eq!(seen["x-format"], "application/json");
    assert_eq!(seen["x-original-uri"], "/status/404?q=1");
    assert_eq!(seen["x-namespace"], "shop");
    assert_eq!(seen["x-ingress-name"], "web");
    assert_eq!(seen["x-service-name"], "app");
    assert_eq!(seen["x-service-port"], "http");
    assert_eq!(seen["x-request-id"], "req-1");
    assert_eq!(seen["x-forwarded-for"], "127.0.0.1");
    assert_eq!(seen["host"], "shop.test");
    // Nothing else of the client's: no cookies, no credentials.
    assert!(!seen.contains_key("cookie"), "{page}");
    // The page's content headers, none of the upstream's answer, none of
    // the error backend's others.
    assert_eq!(headers["content-type"], "text/x-error-page");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(!headers.contains_key("set-cookie"), "{headers:?}");
    assert!(!headers.contains_key("x-error-backend-own"), "{headers:?}");

    expect_page(&proxy, "/status/503", 503).await;
    assert_eq!(errors.hits(), 2);

    // `/debug/routes` says which rule intercepts which codes.
    let (_, _, routes) = get(&h1_client(), proxy.debug, "debug", "/debug/routes").await;
    let routes: serde_json::Value = serde_json::from_str(&routes).unwrap();
    let chain = &routes["filters"][0]["rules"][0];
    let codes = chain
        .as_array()
        .unwrap()
        .iter()
        .find_map(|f| f.get("error_pages"))
        .expect("error_pages on the rule's chain")["codes"]
        .clone();
    assert_eq!(codes, serde_json::json!([404, 503]));
}

#[tokio::test]
async fn statuses_not_listed_pass_through_unchanged() {
    let app = app().await;
    let errors = ErrorBackend::start(StatusCode::OK).await;
    let rule = forward_rule(vec![], vec![backend("app", &[app.addr])]);
    let proxy = Proxy::start(one_rule(with_pages(rule, pages(&[404], errors.backend())))).await;
    for status in [500, 503, 200, 403] {
        expect_app(&proxy, &format!("/status/{status}"), status).await;
    }
    assert_eq!(errors.hits(), 0);
    // The listed one does get the page.
    expect_page(&proxy, "/status/404", 404).await;
}

#[tokio::test]
async fn disable_proxy_intercept_errors_leaves_upstream_answers_and_pages_the_proxys_own() {
    let app = app().await;
    let errors = ErrorBackend::start(StatusCode::OK).await;
    let no_intercept = |rule: Rule| {
        let mut p = pages(&[404, 503], errors.backend());
        p.intercept_upstream = false;
        with_pages(rule, p)
    };
    let served = no_intercept(forward_rule(
        vec![prefix("/status")],
        vec![backend("app", &[app.addr])],
    ));
    let empty = no_intercept(forward_rule(
        vec![prefix("/empty")],
        vec![backend("none", &[])],
    ));
    let proxy = Proxy::start(config(vec![route(
        "r",
        &["shop.test"],
        vec![served, empty],
    )]))
    .await;

    expect_app(&proxy, "/status/404", 404).await;
    assert_eq!(errors.hits(), 0);
    expect_page(&proxy, "/empty", 503).await;
    assert_eq!(errors.hits(), 1);
}

#[tokio::test]
async fn the_proxys_503_for_a_backend_without_endpoints_gets_the_page() {
    let errors = ErrorBackend::start(StatusCode::OK).await;
    let rule = forward_rule(vec![], vec![backend("none", &[])]);
    let proxy = Proxy::start(one_rule(with_pages(rule, pages(&[503], errors.backend())))).await;
    let (status, headers, page) =
        request(&proxy, Method::GET, "/a", &[("x-request-id", "req-2")], "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let seen = asked(&page);
    assert_eq!(seen["x-code"], "503");
    assert_eq!(seen["x-original-uri"], "/a");
    // The proxy's own headers stay on its answer.
    assert_eq!(headers["x-request-id"], "req-2");
    assert_eq!(headers["content-type"], "text/x-error-page");
}

#[tokio::test]
async fn unmatched_requests_get_the_default_backends_404() {
    let app = app().await;
    let errors = ErrorBackend::start(StatusCode::NOT_FOUND).await;
    let mut cfg = config(vec![route(
        "r",
        &["shop.test"],
        vec![forward_rule(
            vec![prefix("/status")],
            vec![backend("app", &[app.addr])],
        )],
    )]);

    // Without a default backend: the proxy's plain 404.
    let proxy = Proxy::start(cfg.clone()).await;
    let (status, _, body) = get(&h1_client(), proxy.addr, "other.test", "/x").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.starts_with("404 Not Found"), "{body}");

    cfg.default_backend = Some(errors.backend());
    let proxy = Proxy::start(cfg).await;
    // An unknown host, and a known host's unknown path.
    for (host, path) in [("other.test", "/x?y=1"), ("shop.test", "/nowhere")] {
        let (status, headers, page) = get(&h1_client(), proxy.addr, host, path).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let seen = asked(&page);
        assert_eq!(seen["x-code"], "404", "{page}");
        assert_eq!(seen["x-original-uri"], path);
        assert_eq!(seen["host"], host);
        // No rule, so nothing to say about one.
        for h in [
            "x-namespace",
            "x-ingress-name",
            "x-service-name",
            "x-service-port",
        ] {
            assert!(!seen.contains_key(h), "{h} in {page}");
        }
        assert_eq!(headers["content-type"], "text/x-error-page");
    }
    // Matched requests never see it.
    let (status, _, body) = get(&h1_client(), proxy.addr, "shop.test", "/status/200").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, "app answered 200");
    assert_eq!(errors.hits(), 2);
}

#[tokio::test]
async fn an_error_backend_that_fails_leaves_the_original_answer() {
    let app = app().await;
    // A port nothing listens on any more.
    let gone = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let down = backend("errors/gone:80", &[gone]);
    let errors = ErrorBackend::start(StatusCode::OK).await;
    let no_endpoints = backend("errors/none:80", &[]);
    let rules = vec![
        with_pages(
            forward_rule(vec![prefix("/status")], vec![backend("app", &[app.addr])]),
            pages(&[404], down.clone()),
        ),
        with_pages(
            forward_rule(vec![prefix("/empty")], vec![backend("none", &[])]),
            pages(&[503], down),
        ),
        with_pages(
            forward_rule(vec![prefix("/other")], vec![backend("app", &[app.addr])]),
            pages(&[404], no_endpoints),
        ),
        with_pages(
            forward_rule(vec![prefix("/working")], vec![backend("app", &[app.addr])]),
            pages(&[404], errors.backend()),
        ),
    ];
    let proxy = Proxy::start(config(vec![route("r", &["shop.test"], rules)])).await;

    expect_app(&proxy, "/status/404", 404).await;

    let (status, _, body) = request(&proxy, Method::GET, "/empty", &[], "").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(body.starts_with("503 Service Unavailable"), "{body}");

    expect_app(&proxy, "/other/status/404", 404).await;

    // The same answer with a working error backend gets its page.
    expect_page(&proxy, "/working/status/404", 404).await;
}

#[tokio::test]
async fn the_error_backends_own_answer_is_never_intercepted() {
    let app = app().await;
    // It answers 503 to everything: an error status of its own.
    let failing = ErrorBackend::start(StatusCode::SERVICE_UNAVAILABLE).await;
    // It answers 404, the status it is asked for (as ingress-nginx's
    // custom-error-pages does), itself a listed code.
    let mirroring = ErrorBackend::start(StatusCode::NOT_FOUND).await;
    let rules = vec![
        with_pages(
            forward_rule(vec![prefix("/a")], vec![backend("app", &[app.addr])]),
            pages(&[404, 503], failing.backend()),
        ),
        with_pages(
            forward_rule(vec![prefix("/b")], vec![backend("app", &[app.addr])]),
            pages(&[404, 503], mirroring.backend()),
        ),
    ];
    let proxy = Proxy::start(config(vec![route("r", &["shop.test"], rules)])).await;

    expect_app(&proxy, "/a/status/404", 404).await;
    assert_eq!(failing.hits(), 1);

    expect_page(&proxy, "/b/status/404", 404).await;
    assert_eq!(mirroring.hits(), 1);
}

#[tokio::test]
async fn a_requests_body_is_never_sent_to_the_error_backend() {
    let app = app().await;
    let errors = ErrorBackend::start(StatusCode::OK).await;
    let rule = forward_rule(vec![], vec![backend("app", &[app.addr])]);
    let proxy = Proxy::start(one_rule(with_pages(rule, pages(&[500], errors.backend())))).await;
    let (status, _, page) = request(
        &proxy,
        Method::POST,
        "/status/500",
        &[("content-type", "application/json")],
        "{\"card\":\"4111\"}",
    )
    .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let seen = asked(&page);
    assert_eq!(seen["method"], "GET");
    assert_eq!(seen["body-bytes"], "0");
    assert!(!seen.contains_key("content-length"), "{page}");
    assert!(!seen.contains_key("content-type"), "{page}");

    // A HEAD is asked as a HEAD: no page body for a body-less answer.
    let (status, headers, body) = request(&proxy, Method::HEAD, "/status/500", &[], "").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(headers["content-type"], "text/x-error-page");
    assert_eq!(body, "");
    assert_eq!(errors.hits(), 2);
}

#[tokio::test]
async fn an_h2c_error_backend_is_asked_over_http2() {
    let app = app().await;
    let errors = ErrorBackend::start(StatusCode::OK).await;
    let mut h2c = errors.backend();
    h2c.protocol = Protocol::H2c;
    let rule = forward_rule(vec![], vec![backend("app", &[app.addr])]);
    let proxy = Proxy::start(one_rule(with_pages(rule, pages(&[404], h2c)))).await;
    let seen = expect_page(&proxy, "/status/404", 404).await;
    assert_eq!(seen["version"], "HTTP/2.0");
    assert_eq!(seen["authority"], "shop.test");
    assert_eq!(seen["path"], "/");
}

#[tokio::test]
async fn response_filters_apply_to_the_page() {
    let app = app().await;
    let errors = ErrorBackend::start(StatusCode::OK).await;
    let mut rule = forward_rule(vec![], vec![backend("app", &[app.addr])]);
    rule.chain.push(Filter::ResponseHeaders(HeaderModifier {
        set: vec![(
            http::HeaderName::from_static("x-frame-options"),
            http::HeaderValue::from_static("DENY"),
        )],
        ..Default::default()
    }));
    let proxy = Proxy::start(one_rule(with_pages(rule, pages(&[404], errors.backend())))).await;
    let (status, headers, page) = request(&proxy, Method::GET, "/status/404", &[], "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(asked(&page)["x-code"], "404");
    assert_eq!(headers["x-frame-options"], "DENY");
}

#[tokio::test]
async fn grpc_calls_are_never_intercepted() {
    let app = app().await;
    let errors = ErrorBackend::start(StatusCode::OK).await;
    // gRPC: an upstream's non-gRPC 404 becomes a gRPC status.
    let grpc = with_pages(
        forward_rule(vec![prefix("/status")], vec![backend("app", &[app.addr])]),
        pages(&[404, 405], errors.backend()),
    );
    // gRPC-Web: a bridged call must be a POST; a GET answers 405 with a
    // gRPC status, which the client reads from the headers.
    let mut web_backend = backend("app", &[app.addr]);
    web_backend.protocol = Protocol::H2c;
    let mut web = with_pages(
        forward_rule(vec![prefix("/web")], vec![web_backend]),
        pages(&[404, 405], errors.backend()),
    );
    web.grpc.web = Some(GrpcWeb::default());
    let proxy = Proxy::start(config(vec![route("r", &["shop.test"], vec![grpc, web])])).await;

    let req = Request::post(proxy.url("/status/404"))
        .header("host", "shop.test")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(empty())
        .unwrap();
    let (status, headers, _) = send(&h2c_client(), req).await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers.contains_key("grpc-status"), "{headers:?}");

    let (status, headers, body) = request(
        &proxy,
        Method::GET,
        "/web/x",
        &[("content-type", "application/grpc-web+proto")],
        "",
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(headers["grpc-status"], "12", "{headers:?} {body}");
    assert_eq!(headers["content-type"], "application/grpc-web+proto");
    assert_eq!(errors.hits(), 0);

    // The same answer to a plain HTTP client gets the page.
    expect_page(&proxy, "/status/404", 404).await;
}

/// An upstream that numbers its connections and answers the status its
/// path ends with, with a small body and the connection's number.
async fn numbering_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let next = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let n = next.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    let status: u16 = req
                        .uri()
                        .path()
                        .strip_prefix("/status/")
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(200);
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(status)
                            .header("x-conn", n.to_string())
                            .body(full("a body the proxy has to read off"))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn an_intercepted_answers_connection_goes_back_to_the_pool() {
    let up = numbering_upstream().await;
    let errors = ErrorBackend::start(StatusCode::OK).await;
    let rule = forward_rule(vec![], vec![backend("app", &[up])]);
    let proxy = Proxy::start(one_rule(with_pages(rule, pages(&[404], errors.backend())))).await;

    expect_page(&proxy, "/status/404", 404).await;
    // The intercepted answer came on connection 0; its body is read off in
    // the background, and the connection serves a later request. Had it
    // been dropped unread, the connection would have closed.
    assert_eventually!(
        request(&proxy, Method::GET, "/status/200", &[], "").await.1["x-conn"] == "0",
        "the intercepted answer's connection never served again"
    );
}
