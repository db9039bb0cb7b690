//! More of the Gateway API conformance suite (v1.6) against the real binary
//! in standalone mode: each test names the upstream case it models, with
//! the upstream manifests adapted to echo backends on 127.0.0.1, the same
//! requests and the same pass rules (three consecutive passes).

mod gateway_support;
mod support;

use gateway_support::*;
use http::{Method, StatusCode};
use support::*;

/// An HTTPRoute of the conformance shape, as YAML.
fn httproute(name: &str, spec: &str) -> String {
    format!(
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n{spec}"
    )
}

/// Port sharing across Gateways, as the upstream suite's several Gateways
/// with hostname-less HTTP listeners on port 80 need: two Gateways on one
/// port, each with a route for a host of its own and one without
/// hostnames. Every route answers on the shared port, by host and path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_share_port_80() {
    let mut m = with_infra_backends(CLASS_AND_GATEWAY).await;
    // A second Gateway like the first: the suite's `all-namespaces`.
    let (_, gateway) = CLASS_AND_GATEWAY.split_once("---").expect("two documents");
    m.push_str("---");
    m.push_str(&gateway.replace("name: same-namespace", "name: all-namespaces"));
    for (name, gateway, hostnames, path, backend) in [
        (
            "one-host",
            "same-namespace",
            "[one.example.com]",
            "/",
            "infra-backend-v1",
        ),
        (
            "one-any",
            "same-namespace",
            "[]",
            "/one",
            "infra-backend-v1",
        ),
        (
            "two-host",
            "all-namespaces",
            "[two.example.com]",
            "/",
            "infra-backend-v2",
        ),
        (
            "two-any",
            "all-namespaces",
            "[]",
            "/two",
            "infra-backend-v2",
        ),
    ] {
        m.push_str(&httproute(
            name,
            &format!(
                "  parentRefs: [{{name: {gateway}}}]\n  hostnames: {hostnames}\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
            ),
        ));
    }
    let (_dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    for (host, path, want) in [
        ("one.example.com", "/", Some("infra-backend-v1")),
        ("two.example.com", "/", Some("infra-backend-v2")),
        ("any.example.com", "/one", Some("infra-backend-v1")),
        ("any.example.com", "/two", Some("infra-backend-v2")),
        // Hostname-less routes compete under the named hosts too.
        ("one.example.com", "/two", Some("infra-backend-v2")),
        ("two.example.com", "/one/x", Some("infra-backend-v1")),
        ("any.example.com", "/", None),
    ] {
        expect(http, host, path, want).await;
    }
}

/// HTTPRouteHostnameIntersection: a Gateway with exact and wildcard
/// listener hostnames; routes attach only where their hostnames intersect
/// the listeners', and answer only for the intersection. The route whose
/// hostnames intersect none is `NoMatchingListenerHostname`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_hostname_intersection() {
    let mut m = with_infra_backends(&CLASS_AND_GATEWAY.replace(
        "    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}",
        r#"    - {name: listener-1, port: 80, protocol: HTTP, hostname: very.specific.com}
    - {name: listener-2, port: 80, protocol: HTTP, hostname: "*.wildcard.io"}
    - {name: listener-3, port: 80, protocol: HTTP, hostname: "*.anotherwildcard.io"}"#,
    ))
    .await;
    for (name, hostnames, path, backend) in [
        (
            "specific-host-matches-listener-specific-host",
            r#"[non.matching.com, "*.nonmatchingwildcard.io", very.specific.com]"#,
            "/s1",
            "infra-backend-v1",
        ),
        (
            "specific-host-matches-listener-wildcard-host",
            "[non.matching.com, wildcard.io, foo.wildcard.io, bar.wildcard.io, foo.bar.wildcard.io]",
            "/s2",
            "infra-backend-v2",
        ),
        (
            "wildcard-host-matches-listener-specific-host",
            r#"[non.matching.com, "*.specific.com"]"#,
            "/s3",
            "infra-backend-v3",
        ),
        (
            "wildcard-host-matches-listener-wildcard-host",
            r#"["*.anotherwildcard.io"]"#,
            "/s4",
            "infra-backend-v1",
        ),
        (
            "no-intersecting-hosts",
            "[specific.but.wrong.com, wildcard.io]",
            "/s5",
            "infra-backend-v2",
        ),
    ] {
        m.push_str(&httproute(
            name,
            &format!(
                "  parentRefs: [{{name: same-namespace}}]\n  hostnames: {hostnames}\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], backendRefs: [{{name: {backend}, port: 8080}}]}}]\n"
            ),
        ));
    }
    // The suite's Services listen on 8080.
    let m = m.replace(
        "ports: [{name: http, port: 80,",
        "ports: [{name: http, port: 8080,",
    );
    let (dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    for (host, path, want) in [
        ("very.specific.com", "/s1", Some("infra-backend-v1")),
        // The port in the Host header is not part of the match.
        ("very.specific.com:1234", "/s1", Some("infra-backend-v1")),
        ("non.matching.com", "/s1", None),
        ("foo.nonmatchingwildcard.io", "/s1", None),
        ("foo.wildcard.io", "/s1", None),
        ("very.specific.com", "/non-matching-prefix", None),
        ("foo.wildcard.io", "/s2", Some("infra-backend-v2")),
        ("bar.wildcard.io", "/s2", Some("infra-backend-v2")),
        ("foo.bar.wildcard.io", "/s2", Some("infra-backend-v2")),
        ("non.matching.com", "/s2", None),
        ("wildcard.io", "/s2", None),
        ("very.specific.com", "/s2", None),
        ("foo.wildcard.io", "/non-matching-prefix", None),
        ("very.specific.com", "/s3", Some("infra-backend-v3")),
        ("non.matching.com", "/s3", None),
        ("foo.specific.com", "/s3", None),
        ("foo.wildcard.io", "/s3", None),
        ("foo.anotherwildcard.io", "/s4", Some("infra-backend-v1")),
        ("bar.anotherwildcard.io", "/s4", Some("infra-backend-v1")),
        (
            "foo.bar.anotherwildcard.io",
            "/s4",
            Some("infra-backend-v1"),
        ),
        ("anotherwildcard.io", "/s4", None),
        ("foo.wildcard.io", "/s4", None),
        ("very.specific.com", "/s4", None),
        ("specific.but.wrong.com", "/s5", None),
        ("wildcard.io", "/s5", None),
    ] {
        expect(http, host, path, want).await;
    }
    // Status as `portico validate` reports it from the same manifests.
    let (_, text) = validate(dir.path());
    assert!(
        text.contains(
            "default/no-intersecting-hosts: spec.parentRefs[0]: NoMatchingListenerHostname"
        ),
        "{text}"
    );
    assert!(
        !text.contains("default/wildcard-host-matches-listener-wildcard-host: spec.parentRefs"),
        "{text}"
    );
}

/// HTTPRouteMatchingAcrossRoutes: two routes on one listener, one for
/// `example.com` and `example.net`, one for `*.com`; a request for
/// `example.com` is matched against both (the longest path, then the
/// header match, wins), `example.net` against the first only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_matching_across_routes() {
    let mut m = with_infra_backends(CLASS_AND_GATEWAY).await;
    m.push_str(&httproute(
        "matching-part1",
        r#"  parentRefs: [{name: same-namespace}]
  hostnames: [example.com, example.net]
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}, {headers: [{name: version, value: one}]}]
      backendRefs: [{name: infra-backend-v1, port: 80}]
"#,
    ));
    m.push_str(&httproute(
        "matching-part2",
        r#"  parentRefs: [{name: same-namespace}]
  hostnames: ["*.com"]
  rules:
    - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
      backendRefs: [{name: infra-backend-v2, port: 80}]
"#,
    ));
    let (_dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    for (host, path, headers, want) in [
        ("example.com", "/", &[][..], "infra-backend-v1"),
        ("example.com", "/example", &[], "infra-backend-v1"),
        ("example.net", "/example", &[], "infra-backend-v1"),
        (
            "example.com",
            "/example",
            &[("version", "one")],
            "infra-backend-v1",
        ),
        ("example.com", "/v2", &[], "infra-backend-v2"),
        // v2 matches are limited to example.com.
        ("example.net", "/v2", &[], "infra-backend-v1"),
        ("example.com", "/v2/example", &[], "infra-backend-v2"),
        (
            "example.com",
            "/",
            &[("version", "two")],
            "infra-backend-v2",
        ),
    ] {
        three_times(&format!("{host}{path} {headers:?}"), || async {
            let (s, _, e) = call(http, Method::GET, host, path, headers).await;
            s == StatusCode::OK && e.is_some_and(|e| e.backend == want)
        })
        .await;
    }
}

/// HTTPRoutePathMatchOrder: exact paths before prefixes, longer prefixes
/// before shorter ones, whatever the rule order. (The upstream manifest is
/// not in the reference index; the rules here give the upstream requests
/// their upstream answers, written in the reverse order of precedence.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_path_match_order() {
    let mut m = with_infra_backends(CLASS_AND_GATEWAY).await;
    m.push_str(&httproute(
        "path-matching-order",
        r#"  parentRefs: [{name: same-namespace}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /match}}]
      backendRefs: [{name: infra-backend-v3, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /match/prefix}}]
      backendRefs: [{name: infra-backend-v1, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /match/prefix/one}}]
      backendRefs: [{name: infra-backend-v2, port: 80}]
    - matches: [{path: {type: Exact, value: /match}}]
      backendRefs: [{name: infra-backend-v1, port: 80}]
    - matches: [{path: {type: Exact, value: /match/exact}}]
      backendRefs: [{name: infra-backend-v2, port: 80}]
    - matches: [{path: {type: Exact, value: /match/exact/one}}]
      backendRefs: [{name: infra-backend-v3, port: 80}]
"#,
    ));
    let (_dir, portico) = portico_on(&m, &[]).await;
    for (path, want) in [
        ("/match/exact/one", "infra-backend-v3"),
        ("/match/exact", "infra-backend-v2"),
        ("/match", "infra-backend-v1"),
        ("/match/prefix/one/any", "infra-backend-v2"),
        ("/match/prefix/any", "infra-backend-v1"),
        ("/match/any", "infra-backend-v3"),
    ] {
        expect(portico.http, "example.com", path, Some(want)).await;
    }
}

/// HTTPRouteTimeoutRequest and HTTPRouteTimeoutBackendRequest: a backend
/// that never answers gets the request cut at the route's
/// `timeouts.request` or `timeouts.backendRequest`, answered 504.
/// HTTPRouteBackendRequestHeaderModifier: a `backendRef`'s own
/// `RequestHeaderModifier` edits what that backend sees, and only that one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_timeouts_and_backend_request_header_modifier() {
    let hang = silent().await;
    let mut m = with_infra_backends(CLASS_AND_GATEWAY).await;
    m.push_str(&service_at("slow", hang));
    m.push_str(&httproute(
        "timeouts",
        r#"  parentRefs: [{name: same-namespace}]
  rules:
    - matches: [{path: {type: Exact, value: /request-timeout}}]
      timeouts: {request: 500ms}
      backendRefs: [{name: slow, port: 80}]
    - matches: [{path: {type: Exact, value: /backend-timeout}}]
      timeouts: {request: 10s, backendRequest: 500ms}
      backendRefs: [{name: slow, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /backend-headers}}]
      backendRefs:
        - name: infra-backend-v1
          port: 80
          filters:
            - type: RequestHeaderModifier
              requestHeaderModifier:
                set: [{name: X-Header-Set, value: set-overwrites-values}]
                add: [{name: X-Header-Add, value: add-appends-values}]
                remove: [X-Header-Remove]
    - matches: [{path: {type: PathPrefix, value: /other-backend}}]
      backendRefs: [{name: infra-backend-v2, port: 80}]
"#,
    ));
    let (_dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    for path in ["/request-timeout", "/backend-timeout"] {
        three_times(path, || async {
            let (s, _, _) = call(http, Method::GET, "example.com", path, &[]).await;
            s == StatusCode::GATEWAY_TIMEOUT
        })
        .await;
    }
    let sent = [
        ("X-Header-Set", "some-other-value"),
        ("X-Header-Add", "add-val"),
        ("X-Header-Remove", "gone"),
    ];
    three_times("the backendRef's header edits", || async {
        let (s, _, e) = call(http, Method::GET, "example.com", "/backend-headers", &sent).await;
        let Some(e) = e.filter(|_| s == StatusCode::OK) else {
            return false;
        };
        e.backend == "infra-backend-v1"
            && e.headers.get("x-header-set").map(String::as_str) == Some("set-overwrites-values")
            // The echo keeps one value per name: the appended one is last.
            && e.headers
                .get("x-header-add")
                .is_some_and(|v| v.contains("add-appends-values"))
            && !e.headers.contains_key("x-header-remove")
    })
    .await;
    // Another backend's requests are not edited.
    let (s, _, e) = call(http, Method::GET, "example.com", "/other-backend", &sent).await;
    assert_eq!(s, StatusCode::OK);
    let e = e.expect("echo");
    assert_eq!(
        e.headers.get("x-header-set").map(String::as_str),
        Some("some-other-value")
    );
    assert!(e.headers.contains_key("x-header-remove"));
}

/// HTTPRouteRequestMultipleMirrors: two `RequestMirror` filters on one
/// rule; each request reaches both mirrors, and the client gets the
/// primary backend's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_request_multiple_mirrors() {
    let primary = echo("infra-backend-v1").await;
    let (v2, mut to_v2) = recorder().await;
    let (v3, mut to_v3) = recorder().await;
    let mut m = CLASS_AND_GATEWAY.to_owned();
    m.push_str(&service_at("infra-backend-v1", primary));
    m.push_str(&service_at("infra-backend-v2", v2));
    m.push_str(&service_at("infra-backend-v3", v3));
    m.push_str(&mirror_route(
        "request-multiple-mirrors",
        "/multi-mirror",
        &["infra-backend-v2", "infra-backend-v3"],
    ));
    let (_dir, portico) = portico_on(&m, &[]).await;
    primary_answers(portico.http, "/multi-mirror/x").await;
    for _ in 0..4 {
        let want = ("/multi-mirror/x".to_owned(), "copied".to_owned());
        assert_eq!(next_seen(&mut to_v2).await, want);
        assert_eq!(next_seen(&mut to_v3).await, want);
    }
}

/// GatewayModifyListeners and HTTPRouteHTTPSListener on a Gateway port of
/// its own: a listener added to a running Gateway (HTTPS, on a port of its
/// own, with a generated certificate) starts serving the route that names
/// it by `sectionName`, through a real TLS handshake with that
/// certificate; removing the listener closes its port while the Gateway's
/// other listener keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_added_and_removed_live_serves_https_on_its_port() {
    let mut m = with_infra_backends(CLASS_AND_GATEWAY).await;
    m.push_str(&httproute(
        "http-route",
        "  parentRefs: [{name: same-namespace, sectionName: http}]\n  rules: [{backendRefs: [{name: infra-backend-v1, port: 80}]}]\n",
    ));
    m.push_str(&httproute(
        "https-route",
        "  parentRefs: [{name: same-namespace, sectionName: https}]\n  hostnames: [secure.test]\n  rules: [{backendRefs: [{name: infra-backend-v2, port: 80}]}]\n",
    ));
    m.push_str("\n---\n");
    m.push_str(&tls_secret("secure-tls", "secure.test", 0x5ec, 30));
    let offset: u16 = 1000;
    let (listener_port, on_port) = gateway_port(offset);
    let (dir, portico) = portico_on(&m, &["--gateway-port-offset", &offset.to_string()]).await;
    expect(portico.http, "example.com", "/", Some("infra-backend-v1")).await;

    let with_https = m.replace(
        "    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}",
        &format!(
            "    - {{name: http, port: 80, protocol: HTTP, allowedRoutes: {{namespaces: {{from: All}}}}}}\n    - {{name: https, port: {listener_port}, protocol: HTTPS, tls: {{certificateRefs: [{{name: secure-tls}}]}}}}"
        ),
    );
    assert_ne!(with_https, m);
    std::fs::write(dir.path().join("app.yaml"), &with_https).unwrap();
    eventually("the added listener's certificate", || async move {
        served_serial(on_port, "secure.test")
            .await
            .filter(|s| s.eq_ignore_ascii_case("05EC"))
    })
    .await;
    three_times("the route of the added listener over TLS", || async {
        serde_json::from_str::<Echo>(&curl_https(on_port, "secure.test").await)
            .is_ok_and(|e| e.backend == "infra-backend-v2")
    })
    .await;
    // Its route is not served on the HTTP listener.
    expect(portico.http, "secure.test", "/", Some("infra-backend-v1")).await;

    std::fs::write(dir.path().join("app.yaml"), &m).unwrap();
    eventually("the removed listener's port closed", || async move {
        tokio::net::TcpStream::connect(on_port)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    expect(portico.http, "example.com", "/", Some("infra-backend-v1")).await;
}

/// The gRPC status of one unary call through Portico at `addr` for
/// `authority`, with `metadata`.
async fn grpc_code(
    addr: std::net::SocketAddr,
    authority: &str,
    metadata: &[(&'static str, &'static str)],
) -> tonic::Code {
    let mut client = echo_client(addr, authority).await;
    let mut req = tonic::Request::new(portico_testkit::EchoRequest {
        message: "hello".into(),
        ..Default::default()
    });
    for (k, v) in metadata {
        req.metadata_mut().insert(*k, v.parse().unwrap());
    }
    match client.unary(req).await {
        Ok(_) => tonic::Code::Ok,
        Err(status) => status.code(),
    }
}

/// GRPCRouteHeaderMatching and GRPCRouteListenerHostnameMatching, with one
/// gRPC echo backend: a rule's header match decides whether the call
/// reaches it (another header value goes to a rule whose backend does not
/// resolve: UNAVAILABLE, as GRPCRoute asks; no match: UNIMPLEMENTED), and
/// listener hostnames decide which listener's routes a call's authority
/// reaches.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcroute_header_and_listener_hostname_matching() {
    let echo = portico_testkit::grpc_upstream().await;
    let mut m = CLASS_AND_GATEWAY.replace(
        "    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}",
        r#"    - {name: listener-1, port: 80, protocol: HTTP, hostname: bar.com}
    - {name: listener-2, port: 80, protocol: HTTP, hostname: foo.bar.com}
    - {name: listener-3, port: 80, protocol: HTTP, hostname: "*.bar.com"}"#,
    );
    m.push_str(&service_at("grpc-infra-backend-v1", echo));
    for (name, section, rules) in [
        (
            "header-matching",
            "listener-1",
            "    - matches: [{headers: [{name: version, value: one}]}]\n      backendRefs: [{name: grpc-infra-backend-v1, port: 80}]\n    - matches: [{headers: [{name: version, value: two}]}]\n      backendRefs: [{name: grpc-infra-backend-v2, port: 80}]\n",
        ),
        (
            "specific",
            "listener-2",
            "    - backendRefs: [{name: grpc-infra-backend-v1, port: 80}]\n",
        ),
        (
            "wildcard",
            "listener-3",
            "    - backendRefs: [{name: grpc-infra-backend-v2, port: 80}]\n",
        ),
    ] {
        m.push_str(&format!(
            "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: same-namespace, sectionName: {section}}}]\n  rules:\n{rules}"
        ));
    }
    let (_dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    use tonic::Code::{Ok, Unavailable, Unimplemented};
    for (authority, metadata, want) in [
        ("bar.com", &[("version", "one")][..], Ok),
        ("bar.com", &[("version", "two")], Unavailable),
        ("bar.com", &[("version", "three")], Unimplemented),
        ("bar.com", &[], Unimplemented),
        ("foo.bar.com", &[], Ok),
        ("baz.bar.com", &[], Unavailable),
        ("foo.com", &[], Unimplemented),
    ] {
        three_times(&format!("{authority} {metadata:?} → {want:?}"), || async {
            grpc_code(http, authority, metadata).await == want
        })
        .await;
    }
}

/// Three passes of a redirect: `path` answered `status` with `location`.
async fn expect_redirect(http: std::net::SocketAddr, path: &str, status: u16, location: &str) {
    three_times(&format!("{path} → {status} {location}"), || async {
        let (s, headers, _) = call(http, Method::GET, "example.com", path, &[]).await;
        s.as_u16() == status && headers.get("location").is_some_and(|l| l == location)
    })
    .await;
}

/// HTTPRouteExactPathMatching (Exact matches the whole path only),
/// HTTPRouteParentRefPort (a parentRef naming the listener's port
/// attaches), HTTPRouteRedirectPort (the redirect's port in `Location`)
/// and HTTPRoute303Redirect/307/308 (the status codes besides 301/302).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_exact_paths_parent_ref_port_and_redirects() {
    let mut m = with_infra_backends(CLASS_AND_GATEWAY).await;
    m.push_str(&httproute(
        "exact-matching",
        r#"  parentRefs: [{name: same-namespace, port: 80}]
  rules:
    - matches: [{path: {type: Exact, value: /one}}]
      backendRefs: [{name: infra-backend-v1, port: 80}]
    - matches: [{path: {type: Exact, value: /two}}]
      backendRefs: [{name: infra-backend-v2, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /port}}]
      filters: [{type: RequestRedirect, requestRedirect: {port: 8083}}]
    - matches: [{path: {type: PathPrefix, value: /port-and-host}}]
      filters: [{type: RequestRedirect, requestRedirect: {hostname: example.org, port: 8083}}]
    - matches: [{path: {type: PathPrefix, value: /port-and-status}}]
      filters: [{type: RequestRedirect, requestRedirect: {port: 8083, statusCode: 301}}]
    - matches: [{path: {type: PathPrefix, value: /see-other}}]
      filters: [{type: RequestRedirect, requestRedirect: {statusCode: 303}}]
    - matches: [{path: {type: PathPrefix, value: /temporary}}]
      filters: [{type: RequestRedirect, requestRedirect: {statusCode: 307}}]
    - matches: [{path: {type: PathPrefix, value: /permanent}}]
      filters: [{type: RequestRedirect, requestRedirect: {statusCode: 308}}]
"#,
    ));
    let (_dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    for (path, want) in [
        ("/one", Some("infra-backend-v1")),
        ("/two", Some("infra-backend-v2")),
        ("/", None),
        ("/one/example", None),
        ("/two/", None),
    ] {
        expect(http, "example.com", path, want).await;
    }
    for (path, status, location) in [
        ("/port", 302, "http://example.com:8083/port"),
        (
            "/port-and-host",
            302,
            "http://example.org:8083/port-and-host",
        ),
        (
            "/port-and-status",
            301,
            "http://example.com:8083/port-and-status",
        ),
        ("/see-other", 303, "http://example.com/see-other"),
        ("/temporary", 307, "http://example.com/temporary"),
        ("/permanent", 308, "http://example.com/permanent"),
    ] {
        expect_redirect(http, path, status, location).await;
    }
}

/// HTTPRouteCrossNamespace: a route in the web-backend namespace attaches
/// to the `backend-namespaces` Gateway of the infra namespace, whose
/// listener selects namespaces labelled `gateway-conformance: backend`,
/// and sends to a Service of its own namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_cross_namespace() {
    let mut m = CLASS_AND_GATEWAY
        .replace(
            "name: same-namespace, namespace: default",
            "name: backend-namespaces, namespace: gateway-conformance-infra",
        )
        .replace(
            "allowedRoutes: {namespaces: {from: All}}",
            "allowedRoutes: {namespaces: {from: Selector, selector: {matchLabels: {gateway-conformance: backend}}}}",
        );
    m.push_str(
        "\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: gateway-conformance-web-backend, labels: {gateway-conformance: backend}}\n",
    );
    m.push_str(&web_backend().await);
    m.push_str(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: cross-namespace, namespace: gateway-conformance-web-backend}
spec:
  parentRefs: [{name: backend-namespaces, namespace: gateway-conformance-infra}]
  rules: [{backendRefs: [{name: web-backend, port: 80}]}]
"#,
    );
    let (_dir, portico) = portico_on(&m, &[]).await;
    expect(portico.http, "example.com", "/", Some("web-backend")).await;
}

/// HTTPRouteInvalidBackendRefUnknownKind, HTTPRouteInvalidReferenceGrant
/// and HTTPRoutePartiallyInvalidViaInvalidReferenceGrant: a backendRef of
/// a kind Portico does not send to, or into another namespace whose
/// ReferenceGrant does not cover it (it names another Service), is
/// answered 500 without contacting anything; the route's other rules are
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_invalid_backend_refs_answer_500() {
    let mut m = with_infra_backends(CLASS_AND_GATEWAY).await;
    m.push_str(&web_backend().await);
    m.push_str(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: reference-grant-wrong-service, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service, name: not-web-backend}]
"#,
    );
    m.push_str(&httproute(
        "invalid-backend-refs",
        r#"  parentRefs: [{name: same-namespace}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /unknown-kind}}]
      backendRefs: [{group: unknown.example.com, kind: UnknownKind, name: infra-backend-v1, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /invalid-grant}}]
      backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /valid}}]
      backendRefs: [{name: infra-backend-v1, port: 80}]
"#,
    ));
    let (dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    expect(http, "example.com", "/valid", Some("infra-backend-v1")).await;
    for path in ["/unknown-kind", "/invalid-grant"] {
        three_times(path, || async {
            let (s, _, e) = call(http, Method::GET, "example.com", path, &[]).await;
            s == StatusCode::INTERNAL_SERVER_ERROR && e.is_none()
        })
        .await;
    }
    let (_, text) = validate(dir.path());
    for want in [
        "default/invalid-backend-refs: spec.rules[0].backendRefs[0].kind: InvalidKind",
        "default/invalid-backend-refs: spec.rules[1].backendRefs[0].namespace: RefNotPermitted",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
}

/// HTTPRouteServiceTypes: backends behind a headless Service and behind a
/// Service without selector whose EndpointSlice is written by hand are
/// served like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_service_types() {
    let mut m = CLASS_AND_GATEWAY.to_owned();
    let headless = service_at("headless", echo("headless").await)
        .replace("spec:\n  ports:", "spec:\n  clusterIP: None\n  ports:");
    assert!(headless.contains("clusterIP: None"));
    m.push_str(&headless);
    m.push_str(&service_at(
        "manual-endpointslices",
        echo("manual-endpointslices").await,
    ));
    m.push_str(&httproute(
        "service-types",
        r#"  parentRefs: [{name: same-namespace}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /headless}}]
      backendRefs: [{name: headless, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /manual}}]
      backendRefs: [{name: manual-endpointslices, port: 80}]
"#,
    ));
    let (_dir, portico) = portico_on(&m, &[]).await;
    expect(portico.http, "example.com", "/headless", Some("headless")).await;
    expect(
        portico.http,
        "example.com",
        "/manual",
        Some("manual-endpointslices"),
    )
    .await;
}

/// GatewayHTTPListenerIsolation (upstream manifest): four listeners on
/// port 80 (no hostname, `*.example.com`, `*.foo.example.com`,
/// `abc.foo.example.com`), one route each; a request reaches only the
/// routes of the most specific listener matching its host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_http_listener_isolation() {
    let mut m = CLASS_AND_GATEWAY
        .split_once("---")
        .expect("two documents")
        .0
        .to_owned();
    m.push_str(&service_in(
        "gateway-conformance-infra",
        "infra-backend-v1",
        echo("infra-backend-v1").await,
    ));
    m.push_str("\n---\napiVersion: gateway.networking.k8s.io/v1beta1\nkind: Gateway\nmetadata: {name: http-listener-isolation, namespace: gateway-conformance-infra}\nspec:\n  gatewayClassName: portico\n  listeners:\n    - {name: empty-hostname, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}\n");
    let listeners = [
        ("wildcard-example-com", "\"*.example.com\""),
        ("wildcard-foo-example-com", "\"*.foo.example.com\""),
        ("abc-foo-example-com", "abc.foo.example.com"),
    ];
    for (name, hostname) in listeners {
        m.push_str(&format!(
            "    - {{name: {name}, port: 80, protocol: HTTP, hostname: {hostname}, allowedRoutes: {{namespaces: {{from: All}}}}}}\n"
        ));
    }
    let sections = [
        "empty-hostname",
        "wildcard-example-com",
        "wildcard-foo-example-com",
        "abc-foo-example-com",
    ];
    for section in sections {
        m.push_str(&format!(
            "---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: attaches-to-{section}, namespace: gateway-conformance-infra}}\nspec:\n  parentRefs: [{{name: http-listener-isolation, namespace: gateway-conformance-infra, sectionName: {section}}}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: /{section}}}}}], backendRefs: [{{name: infra-backend-v1, port: 80}}]}}]\n"
        ));
    }
    let (_dir, portico) = portico_on(&m, &[]).await;
    for (host, own) in [
        ("bar.com", "empty-hostname"),
        ("bar.example.com", "wildcard-example-com"),
        ("bar.foo.example.com", "wildcard-foo-example-com"),
        ("abc.foo.example.com", "abc-foo-example-com"),
    ] {
        for section in sections {
            let want = (section == own).then_some("infra-backend-v1");
            expect(portico.http, host, &format!("/{section}"), want).await;
        }
    }
}

/// HTTPRouteNamedRule: rules with and without a `name` are served alike.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_named_rule() {
    let mut m = with_infra_backends(CLASS_AND_GATEWAY).await;
    m.push_str(&httproute(
        "named-rule",
        r#"  parentRefs: [{name: same-namespace}]
  rules:
    - name: named-rule
      matches: [{path: {type: PathPrefix, value: /named}}]
      backendRefs: [{name: infra-backend-v1, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /unnamed}}]
      backendRefs: [{name: infra-backend-v2, port: 80}]
"#,
    ));
    let (_dir, portico) = portico_on(&m, &[]).await;
    expect(
        portico.http,
        "example.com",
        "/named",
        Some("infra-backend-v1"),
    )
    .await;
    expect(
        portico.http,
        "example.com",
        "/unnamed",
        Some("infra-backend-v2"),
    )
    .await;
}

/// GRPCRouteNamedRule: a GRPCRoute rule with a `name` is served like one
/// without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcroute_named_rule() {
    let echo = portico_testkit::grpc_upstream().await;
    let mut m = CLASS_AND_GATEWAY.to_owned();
    m.push_str(&service_at("grpc-infra-backend-v1", echo));
    m.push_str(
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: named-rule, namespace: default}\nspec:\n  parentRefs: [{name: same-namespace}]\n  hostnames: [grpc.test]\n  rules:\n    - name: named-rule\n      matches: [{method: {service: portico.test.Echo, method: Unary}}]\n      backendRefs: [{name: grpc-infra-backend-v1, port: 80}]\n",
    );
    let (_dir, portico) = portico_on(&m, &[]).await;
    three_times("the named rule answers", || async {
        grpc_code(portico.http, "grpc.test", &[]).await == tonic::Code::Ok
    })
    .await;
}

/// The suite's Gateway and a route to infra-backend-v1 at `addr`, its
/// Service port declaring `app_protocol`.
fn behind_app_protocol(addr: std::net::SocketAddr, app_protocol: &str) -> String {
    let mut m = CLASS_AND_GATEWAY.to_owned();
    let service = service_at("infra-backend-v1", addr).replace(
        "ports: [{name: http, port: 80,",
        &format!("ports: [{{name: http, port: 80, appProtocol: {app_protocol},"),
    );
    assert!(service.contains("appProtocol"));
    m.push_str(&service);
    m.push_str(&httproute(
        "backend-protocol",
        "  parentRefs: [{name: same-namespace}]\n  rules: [{backendRefs: [{name: infra-backend-v1, port: 80}]}]\n",
    ));
    m
}

/// An HTTP/1.1 head read byte by byte up to its blank line, so nothing
/// after it is consumed; `None` when the connection ends first.
async fn read_head(stream: &mut tokio::net::TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.ok()?;
        head.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// An echo speaking only cleartext HTTP/2 (prior knowledge), answering
/// with the HTTP version it was spoken to in.
async fn h2c_echo() -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(
                    |req: http::Request<hyper::body::Incoming>| async move {
                        let body = serde_json::json!({
                            "backend": format!("h2c {:?}", req.version()),
                            "path": req.uri().path(),
                            "host": "",
                            "headers": {},
                        });
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(bytes::Bytes::from(body.to_string())),
                        ))
                    },
                );
                let _ =
                    hyper::server::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
            });
        }
    });
    addr
}

/// HTTPRouteBackendProtocolH2C: a backend whose Service port says
/// `appProtocol: kubernetes.io/h2c` is spoken to in cleartext HTTP/2,
/// whatever the client spoke.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_backend_protocol_h2c() {
    let m = behind_app_protocol(h2c_echo().await, "kubernetes.io/h2c");
    let (_dir, portico) = portico_on(&m, &[]).await;
    expect(portico.http, "example.com", "/", Some("h2c HTTP/2.0")).await;
}

/// HTTPRouteRedirectPortAndScheme, its cases on a listener on port 80:
/// the redirect's scheme and port, a port left out when it is the
/// scheme's own (the suite accepts it written too).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_redirect_port_and_scheme_on_port_80() {
    let cases = [
        ("/scheme-nil-and-port-nil", "", "http", None),
        ("/scheme-nil-and-port-80", "port: 80", "http", None),
        (
            "/scheme-nil-and-port-8080",
            "port: 8080",
            "http",
            Some(8080),
        ),
        ("/scheme-https-and-port-nil", "scheme: https", "https", None),
        (
            "/scheme-https-and-port-443",
            "scheme: https, port: 443",
            "https",
            None,
        ),
        (
            "/scheme-https-and-port-8443",
            "scheme: https, port: 8443",
            "https",
            Some(8443),
        ),
    ];
    let mut rules = String::new();
    for (path, redirect, _, _) in cases {
        let sep = if redirect.is_empty() { "" } else { ", " };
        rules.push_str(&format!(
            "    - matches: [{{path: {{type: Exact, value: {path}}}}}]\n      filters: [{{type: RequestRedirect, requestRedirect: {{hostname: example.org{sep}{redirect}}}}}]\n"
        ));
    }
    let mut m = CLASS_AND_GATEWAY.to_owned();
    m.push_str(&httproute(
        "http-route-for-listener-on-port-80",
        &format!("  parentRefs: [{{name: same-namespace}}]\n  rules:\n{rules}"),
    ));
    let (_dir, portico) = portico_on(&m, &[]).await;
    for (path, _, scheme, port) in cases {
        three_times(path, || async {
            let (s, headers, _) = call(portico.http, Method::GET, "example.com", path, &[]).await;
            let Some(location) = headers.get("location").and_then(|l| l.to_str().ok()) else {
                return false;
            };
            let Ok(uri) = location.parse::<http::Uri>() else {
                return false;
            };
            let default = if scheme == "https" { 443 } else { 80 };
            s == StatusCode::FOUND
                && uri.scheme_str() == Some(scheme)
                && uri.host() == Some("example.org")
                && uri.port_u16().filter(|p| *p != default) == port
                && uri.path() == path
        })
        .await;
    }
}

/// A backend that answers an upgrade request with 101 and then echoes
/// every byte back: what a WebSocket echo does once the handshake is over.
async fn upgrade_echo() -> std::net::SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(head) = read_head(&mut stream).await else {
                    return;
                };
                let head = head.to_ascii_lowercase();
                if !head.contains("upgrade: websocket") {
                    let _ = stream
                        .write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                        .await;
                    return;
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n")
                    .await;
                let (mut r, mut w) = stream.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

/// HTTPRouteBackendProtocolWebSocket: behind a Service port with
/// `appProtocol: kubernetes.io/ws`, an upgrade request is answered 101 by
/// the backend and the connection then carries bytes both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_backend_protocol_websocket() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let m = behind_app_protocol(upgrade_echo().await, "kubernetes.io/ws");
    let (_dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    three_times("a WebSocket upgrade carries bytes both ways", || async move {
        let Ok(mut conn) = tokio::net::TcpStream::connect(http).await else {
            return false;
        };
        let handshake = "GET /ws HTTP/1.1\r\nhost: example.com\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-version: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n";
        if conn.write_all(handshake.as_bytes()).await.is_err() {
            return false;
        }
        if !read_head(&mut conn)
            .await
            .is_some_and(|h| h.starts_with("HTTP/1.1 101"))
        {
            return false;
        }
        let mut echoed = [0u8; 5];
        conn.write_all(b"hello").await.is_ok()
            && tokio::time::timeout(
                std::time::Duration::from_secs(5),
                conn.read_exact(&mut echoed),
            )
            .await
            .is_ok_and(|r| r.is_ok())
            && &echoed == b"hello"
    })
    .await;
}

/// HTTPRouteParentRefPort, modelled: a Gateway with listeners on two
/// ports; a parentRef naming a port attaches to that port's listeners
/// only, so each route answers on its own port and not on the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_parent_ref_port() {
    let offset: u16 = 1000;
    let (listener_port, on_port) = gateway_port(offset);
    let mut m = with_infra_backends(&CLASS_AND_GATEWAY.replace(
        "    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}",
        &format!(
            "    - {{name: http, port: 80, protocol: HTTP}}\n    - {{name: http-other, port: {listener_port}, protocol: HTTP}}"
        ),
    ))
    .await;
    for (name, port, path, backend) in [
        ("on-80", 80, "/eighty", "infra-backend-v1"),
        ("on-other", listener_port, "/other", "infra-backend-v2"),
    ] {
        m.push_str(&httproute(
            name,
            &format!(
                "  parentRefs: [{{name: same-namespace, port: {port}}}]\n  rules: [{{matches: [{{path: {{type: PathPrefix, value: {path}}}}}], backendRefs: [{{name: {backend}, port: 80}}]}}]\n"
            ),
        ));
    }
    let (_dir, portico) = portico_on(&m, &["--gateway-port-offset", &offset.to_string()]).await;
    expect(
        portico.http,
        "example.com",
        "/eighty",
        Some("infra-backend-v1"),
    )
    .await;
    expect(portico.http, "example.com", "/other", None).await;
    expect(on_port, "example.com", "/other", Some("infra-backend-v2")).await;
    expect(on_port, "example.com", "/eighty", None).await;
}

/// HTTPRouteCORS: the upstream `http-with-cors-exact` route; a preflight
/// from an allowed origin (exact and wildcard) is answered by Portico with
/// the policy's headers, one from another origin gets none of them, and an
/// actual request from an allowed origin reaches the backend and carries
/// the allow and expose headers back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_cors() {
    let mut m = with_infra_backends(CLASS_AND_GATEWAY).await;
    m.push_str(&httproute(
        "http-with-cors-exact",
        r#"  parentRefs: [{name: same-namespace}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /cors-exact}}]
      backendRefs: [{name: infra-backend-v1, port: 80}]
      filters:
        - type: CORS
          cors:
            allowOrigins: ["https://www.foo.com", "https://www.bar.com", "https://*.foobar.com"]
            allowMethods: [GET, POST, PUT, PATCH, DELETE, OPTIONS]
            allowHeaders: [x-header-1, x-header-2]
            exposeHeaders: [x-header-3, x-header-4]
            allowCredentials: true
            maxAge: 3600
"#,
    ));
    let (_dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    let list = |h: &http::HeaderMap, name: &str| -> Vec<String> {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .collect()
    };
    for origin in ["https://www.foo.com", "https://api.foobar.com"] {
        three_times(&format!("a preflight from {origin}"), || async move {
            let (status, h, echo) = call(
                http,
                Method::OPTIONS,
                "example.com",
                "/cors-exact",
                &[
                    ("origin", origin),
                    ("access-control-request-method", "GET"),
                    ("access-control-request-headers", "x-header-1, x-header-2"),
                ],
            )
            .await;
            let methods = list(&h, "access-control-allow-methods");
            let headers = list(&h, "access-control-allow-headers");
            (status == StatusCode::OK || status == StatusCode::NO_CONTENT)
                && echo.is_none()
                && h.get("access-control-allow-origin")
                    .and_then(|v| v.to_str().ok())
                    == Some(origin)
                && ["get", "post", "put", "patch", "delete", "options"]
                    .iter()
                    .all(|m| methods.iter().any(|x| x == m))
                && ["x-header-1", "x-header-2"]
                    .iter()
                    .all(|m| headers.iter().any(|x| x == m))
                && h.get("access-control-allow-credentials")
                    .map(|v| v.as_bytes())
                    == Some(b"true".as_slice())
                && h.get("access-control-max-age").map(|v| v.as_bytes()) == Some(b"3600".as_slice())
        })
        .await;
    }
    three_times("a preflight from an origin not allowed", || async move {
        let (_, h, _) = call(
            http,
            Method::OPTIONS,
            "example.com",
            "/cors-exact",
            &[
                ("origin", "https://foobar.com"),
                ("access-control-request-method", "GET"),
            ],
        )
        .await;
        h.get("access-control-allow-origin").is_none()
            && h.get("access-control-allow-methods").is_none()
    })
    .await;
    three_times("an actual request from an allowed origin", || async move {
        let (status, h, echo) = call(
            http,
            Method::GET,
            "example.com",
            "/cors-exact",
            &[("origin", "https://www.bar.com")],
        )
        .await;
        let exposed = list(&h, "access-control-expose-headers");
        status == StatusCode::OK
            && echo.is_some_and(|e| e.backend == "infra-backend-v1")
            && h.get("access-control-allow-origin").map(|v| v.as_bytes())
                == Some(b"https://www.bar.com".as_slice())
            && ["x-header-3", "x-header-4"]
                .iter()
                .all(|m| exposed.iter().any(|x| x == m))
    })
    .await;
}
