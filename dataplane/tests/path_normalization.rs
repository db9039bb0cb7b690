//! Path normalisation through the real listener: which backend gets each
//! request and the exact path it sees, for an adversarial corpus of
//! bypass attempts sent as raw bytes (a client library would normalise
//! some of them itself), over HTTP/1.1 and HTTP/2.

mod support;

use std::net::SocketAddr;

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use portico_dataplane::model::*;
use portico_dataplane::request::path::PathNormalization;
use support::*;

/// Where a request went.
#[derive(Debug, PartialEq)]
enum Outcome {
    /// The backend (`public`, `admin`) and the path it saw.
    Sent(&'static str, &'static str),
    Status(u16),
}

use Outcome::*;

struct Site {
    proxy: Proxy,
    _public: Upstream,
    _admin: Upstream,
}

/// `/admin` goes to the admin backend; `/public` and everything else
/// (`/`) to the public one, which (as a Tomcat or IIS app might) would
/// resolve a path it is sent on its own. `/old` redirects to `/new`;
/// `/api` is rewritten to `/v2` on the public backend.
async fn site(tweak: impl FnOnce(&mut portico_dataplane::DataplaneConfig)) -> Site {
    let public = Upstream::echo("public").await;
    let admin = Upstream::echo("admin").await;
    let redirect = prefix_redirect("/old", "/new");
    let mut rewrite = forward_rule(vec![prefix("/api")], vec![backend("p", &[public.addr])]);
    if let Action::Forward(f) = &mut rewrite.action {
        f.rewrite = Some(UrlRewrite {
            hostname: None,
            path: Some(PathModifier::ReplacePrefixMatch("/v2".into())),
        });
    }
    let rules = vec![
        forward_rule(vec![prefix("/public")], vec![backend("p", &[public.addr])]),
        forward_rule(vec![prefix("/admin")], vec![backend("a", &[admin.addr])]),
        forward_rule(vec![prefix("/")], vec![backend("p", &[public.addr])]),
        redirect,
        rewrite,
    ];
    let proxy = Proxy::start_with(config(vec![route("p", &["p.test"], rules)]), tweak).await;
    Site {
        proxy,
        _public: public,
        _admin: admin,
    }
}

/// One raw HTTP/1.1 request with `target` as its request target.
async fn raw_get(addr: SocketAddr, target: &str) -> RawResponse {
    let req = format!("GET {target} HTTP/1.1\r\nHost: p.test\r\nConnection: close\r\n\r\n");
    let out = raw_exchange(addr, req.as_bytes(), false).await;
    RawResponse::parse(&out).unwrap_or_else(|| {
        panic!(
            "{target:?}: no response: {:?}",
            String::from_utf8_lossy(&out)
        )
    })
}

fn outcome(rsp: &RawResponse) -> (u16, Option<String>, Option<String>) {
    (
        rsp.status,
        rsp.header("x-upstream").map(str::to_owned),
        rsp.header("x-seen-path").map(str::to_owned),
    )
}

fn expected(want: &Outcome) -> (u16, Option<String>, Option<String>) {
    match want {
        Sent(name, path) => (200, Some((*name).to_owned()), Some((*path).to_owned())),
        Status(s) => (*s, None, None),
    }
}

/// Bypass attempts and what each must come to under the default rules.
const CORPUS: &[(&str, Outcome)] = &[
    ("/public/x", Sent("public", "/public/x")),
    ("/admin/x", Sent("admin", "/admin/x")),
    // Dot segments, plain and percent-encoded in either case.
    ("/public/../admin", Sent("admin", "/admin")),
    ("/public/./x", Sent("public", "/public/x")),
    ("/public/x/..", Sent("public", "/public/")),
    ("/public/%2e%2e/admin", Sent("admin", "/admin")),
    ("/public/%2e%2E/admin", Sent("admin", "/admin")),
    ("/public/.%2E/admin", Sent("admin", "/admin")),
    ("/public/%2E/x", Sent("public", "/public/x")),
    ("/public;x/../admin", Sent("admin", "/admin")),
    // Above the root.
    ("/..", Status(400)),
    ("/public/../../admin", Status(400)),
    ("/%2e%2e/admin", Status(400)),
    // Double encoding stays one layer deep: a backend decoding once sees
    // `%2e%2e`, not a dot segment.
    (
        "/public/%252e%252e/admin",
        Sent("public", "/public/%252e%252e/admin"),
    ),
    // Unreserved characters decoded, other escapes upper-cased.
    ("/%70ublic/x", Sent("public", "/public/x")),
    ("/%61dmin", Sent("admin", "/admin")),
    ("/public/a%20b%c3%a9", Sent("public", "/public/a%20b%C3%A9")),
    // Merged slashes.
    ("//admin", Sent("admin", "/admin")),
    ("///public///x//", Sent("public", "/public/x/")),
    // `;` path parameters: on a dot segment, and where Tomcat would route
    // elsewhere, refused; otherwise forwarded as they are.
    ("/public/..;/admin", Status(400)),
    ("/public/.;x/admin", Status(400)),
    ("/admin;x", Status(400)),
    ("/admin;x/y", Status(400)),
    ("/public/x;y", Sent("public", "/public/x;y")),
    ("/app;jsessionid=1", Sent("public", "/app;jsessionid=1")),
    // Backslashes, raw and encoded.
    ("/public\\..\\admin", Status(400)),
    ("/public/..%5Cadmin", Status(400)),
    ("/public/..%5cadmin", Status(400)),
    ("/public/a%5cb", Sent("public", "/public/a%5Cb")),
    // Encoded slashes: kept, unless they hide a dot segment.
    ("/public/a%2fb", Sent("public", "/public/a%2Fb")),
    ("/public/..%2Fadmin", Status(400)),
    ("/public%2F..%2Fadmin", Status(400)),
    ("/public/%2e%2e%2fadmin", Status(400)),
    // Overlong UTF-8 and other bytes that are not UTF-8.
    ("/public/%C0%AE%C0%AE/admin", Status(400)),
    ("/public/%c0%ae", Status(400)),
    ("/public/%ff", Status(400)),
    // NUL and control characters.
    ("/public/%00/x", Status(400)),
    ("/public/%0d%0aX-Injected:%201", Status(400)),
    ("/public/%1f", Status(400)),
    ("/public/%7F", Status(400)),
    // Invalid escapes.
    ("/public/%zz", Status(400)),
    ("/public/%4", Status(400)),
    ("/public/%", Status(400)),
    // The query is left as it was sent.
    (
        "/public/../admin?a=%2e%2e&b=/../x",
        Sent("admin", "/admin?a=%2e%2e&b=/../x"),
    ),
    // Absolute-form request targets.
    ("http://p.test/public/../admin", Sent("admin", "/admin")),
    ("http://p.test//%61dmin", Sent("admin", "/admin")),
    // Rewrites act on the normalised path.
    ("/public/../api/x", Sent("public", "/v2/x")),
    ("/%61pi//x", Sent("public", "/v2/x")),
];

#[tokio::test]
async fn bypass_attempts_route_on_the_normalised_path() {
    let site = site(|_| {}).await;
    let mut failures = Vec::new();
    for (target, want) in CORPUS {
        let got = outcome(&raw_get(site.proxy.addr, target).await);
        if got != expected(want) {
            failures.push(format!("{target:?}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn redirects_act_on_the_normalised_path() {
    let site = site(|_| {}).await;
    for target in ["/public/../old/x", "//%6Fld/./x", "/old//x"] {
        let rsp = raw_get(site.proxy.addr, target).await;
        assert_eq!(rsp.status, 302, "{target}");
        assert_eq!(
            rsp.header("location"),
            Some("http://p.test/new/x"),
            "{target}"
        );
    }
}

#[tokio::test]
async fn the_access_log_keeps_the_path_as_sent() {
    let site = site(|_| {}).await;
    let rsp = raw_get(site.proxy.addr, "/public/%2e%2e/admin").await;
    assert_eq!(rsp.header("x-seen-path"), Some("/admin"));
    assert_eventually!(
        site.proxy
            .log
            .lines()
            .iter()
            .any(|l| l["path"] == "/public/%2e%2e/admin"),
        "no access-log line with the path as sent: {:?}",
        site.proxy.log.lines()
    );
}

#[tokio::test]
async fn refused_paths_are_counted() {
    let site = site(|_| {}).await;
    for target in ["/..", "/public/%00", "/admin;x"] {
        assert_eq!(raw_get(site.proxy.addr, target).await.status, 400);
    }
    let text = site.proxy.scrape().await;
    assert_eq!(
        sample(&text, "portico_request_rejections_total{reason=\"path\"}"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            "portico_request_rejections_total{reason=\"path_parameters\"}"
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn http2_requests_are_normalised_too() {
    let site = site(|_| {}).await;
    let mut h2 = h2c_connection(site.proxy.addr).await;
    for (path, want) in [
        ("/public/%2e%2e/admin", Sent("admin", "/admin")),
        ("//public/./x", Sent("public", "/public/x")),
        ("/public/..%2Fadmin", Status(400)),
        ("/public/..;/admin", Status(400)),
        ("/..", Status(400)),
    ] {
        let req = Request::get(format!("http://p.test{path}"))
            .body(empty())
            .unwrap();
        let rsp = h2.send_request(req).await.unwrap();
        let (parts, body) = rsp.into_parts();
        let _ = body.collect().await;
        let got = (
            parts.status.as_u16(),
            parts
                .headers
                .get("x-upstream")
                .map(|v| v.to_str().unwrap().to_owned()),
            parts
                .headers
                .get("x-seen-path")
                .map(|v| v.to_str().unwrap().to_owned()),
        );
        assert_eq!(got, expected(&want), "{path}");
        if let Status(s) = want {
            assert_eq!(parts.status, StatusCode::from_u16(s).unwrap());
        }
    }
}

#[tokio::test]
async fn none_forwards_the_path_as_sent() {
    let site = site(|cfg| cfg.listener.path.normalization = PathNormalization::None).await;
    for (target, want) in [
        ("/public/../admin", Sent("public", "/public/../admin")),
        (
            "/public/%2e%2e/admin",
            Sent("public", "/public/%2e%2e/admin"),
        ),
        ("//admin", Sent("public", "//admin")),
        ("/%61dmin", Sent("public", "/%61dmin")),
        ("/public/..;/admin", Sent("public", "/public/..;/admin")),
        ("/admin;x", Sent("public", "/admin;x")),
    ] {
        let got = outcome(&raw_get(site.proxy.addr, target).await);
        assert_eq!(got, expected(&want), "{target}");
    }
}

#[tokio::test]
async fn escaped_slashes_can_be_refused_or_decoded() {
    use portico_dataplane::request::path::EscapedSlashes;
    let reject = site(|cfg| cfg.listener.path.escaped_slashes = EscapedSlashes::Reject).await;
    let decode = site(|cfg| cfg.listener.path.escaped_slashes = EscapedSlashes::Decode).await;
    let unmerged = site(|cfg| cfg.listener.path.merge_slashes = false).await;
    for (site, target, want) in [
        (&reject, "/public/a%2Fb", Status(400)),
        (&reject, "/public/a%5cb", Status(400)),
        (&reject, "/public/ab", Sent("public", "/public/ab")),
        (&decode, "/public/a%2Fb", Sent("public", "/public/a/b")),
        (&decode, "/public/..%2Fadmin", Sent("admin", "/admin")),
        (&decode, "/public/..%5Cadmin", Sent("admin", "/admin")),
        (&unmerged, "/public//x", Sent("public", "/public//x")),
        (&unmerged, "//admin", Sent("public", "//admin")),
    ] {
        let got = outcome(&raw_get(site.proxy.addr, target).await);
        assert_eq!(got, expected(&want), "{target}");
    }
}
