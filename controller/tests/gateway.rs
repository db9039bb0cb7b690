//! Gateway API served by the real binary in standalone mode, modelled on
//! the Gateway API conformance suite's tests (same manifests where they
//! fit, same requests, same pass rules): a Gateway listener on port 80
//! lands on the main HTTP listener, 443 on the main HTTPS listener.

mod gateway_support;
mod support;

use std::collections::BTreeMap;

use gateway_support::*;
use http::{Method, StatusCode};
use support::*;

/// HTTPRouteSimpleSameNamespace, HTTPRouteMatching, HTTPRouteHeaderMatching,
/// HTTPRouteQueryParamMatching, HTTPRouteMethodMatching,
/// HTTPRouteRequestHeaderModifier, HTTPRouteResponseHeaderModifier,
/// HTTPRouteRedirectScheme/HostName/StatusCode/PathRedirect,
/// HTTPRouteRewritePath, HTTPRouteRewriteHost, HTTPRouteWeight,
/// HTTPRouteInvalidNonExistentBackendRef, HTTPRouteReferenceGrant and
/// HTTPRouteInvalidCrossNamespaceBackendRef, on a port-80 listener served
/// by the main HTTP listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_listener_on_port_80_serves_httproutes_on_the_main_listener() {
    let mut m = with_infra_backends(CLASS_AND_GATEWAY).await;
    m.push_str(&web_backend().await);
    m.push_str(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: matching, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  rules:
    - matches: [{path: {type: PathPrefix, value: /}}]
      backendRefs: [{name: infra-backend-v1, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /v2}}, {headers: [{name: version, value: two}]}]
      backendRefs: [{name: infra-backend-v2, port: 80}]
    - matches: [{path: {type: Exact, value: /exact}, queryParams: [{name: animal, value: whale}]}]
      backendRefs: [{name: infra-backend-v3, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /method}, method: POST}]
      backendRefs: [{name: infra-backend-v3, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /set}}]
      filters:
        - type: RequestHeaderModifier
          requestHeaderModifier:
            set: [{name: X-Header-Set, value: set-overwrites-values}]
            add: [{name: X-Header-Add, value: add-appends-values}]
            remove: [X-Header-Remove]
        - type: ResponseHeaderModifier
          responseHeaderModifier:
            set: [{name: X-Header-Set, value: set-in-response}]
            remove: [X-Header-Remove]
      backendRefs: [{name: infra-backend-v1, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /scheme-and-host}}]
      filters: [{type: RequestRedirect, requestRedirect: {scheme: https, hostname: example.org, statusCode: 301}}]
    - matches: [{path: {type: PathPrefix, value: /original-prefix}}]
      filters: [{type: RequestRedirect, requestRedirect: {path: {type: ReplacePrefixMatch, replacePrefixMatch: /replacement-prefix}}}]
    - matches: [{path: {type: PathPrefix, value: /prefix/one}}]
      filters: [{type: URLRewrite, urlRewrite: {hostname: one.example.org, path: {type: ReplacePrefixMatch, replacePrefixMatch: /one}}}]
      backendRefs: [{name: infra-backend-v1, port: 80}]
    - matches: [{path: {type: PathPrefix, value: /weighted}}]
      backendRefs:
        - {name: infra-backend-v1, port: 80, weight: 70}
        - {name: infra-backend-v2, port: 80, weight: 30}
        - {name: infra-backend-v3, port: 80, weight: 0}
    - matches: [{path: {type: PathPrefix, value: /missing}}]
      backendRefs: [{name: does-not-exist, port: 8080}]
    - matches: [{path: {type: PathPrefix, value: /cross}}]
      backendRefs: [{name: web-backend, namespace: gateway-conformance-web-backend, port: 80}]
"#,
    );
    let (dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    let get = |path: &'static str, headers: &'static [(&'static str, &'static str)]| async move {
        call(http, Method::GET, "example.com", path, headers).await
    };
    let backend = |path: &'static str,
                   headers: &'static [(&'static str, &'static str)],
                   want: &'static str| async move {
        let (s, _, e) = get(path, headers).await;
        s == StatusCode::OK && e.is_some_and(|e| e.backend == want)
    };

    // Matching: path prefix, header, exact path with a query parameter,
    // method.
    three_times("/ to v1", || backend("/", &[], "infra-backend-v1")).await;
    three_times("/v2 to v2", || backend("/v2/x", &[], "infra-backend-v2")).await;
    three_times("version: two to v2", || {
        backend("/", &[("version", "two")], "infra-backend-v2")
    })
    .await;
    three_times("exact + query to v3", || {
        backend("/exact?animal=whale", &[], "infra-backend-v3")
    })
    .await;
    three_times("exact without the query to v1", || {
        backend("/exact?animal=dolphin", &[], "infra-backend-v1")
    })
    .await;
    let (s, _, e) = call(http, Method::POST, "example.com", "/method", &[]).await;
    assert_eq!(
        (s, e.map(|e| e.backend)),
        (StatusCode::OK, Some("infra-backend-v3".into()))
    );
    three_times("GET /method to v1", || {
        backend("/method", &[], "infra-backend-v1")
    })
    .await;

    // Header modifiers, both directions.
    let (s, headers, e) = get(
        "/set",
        &[
            ("X-Header-Set", "some-other-value"),
            ("X-Header-Add", "add-val"),
            ("X-Header-Remove", "gone"),
        ],
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let e = e.expect("echo");
    assert_eq!(
        e.headers.get("x-header-set").map(String::as_str),
        Some("set-overwrites-values")
    );
    assert!(
        e.headers
            .get("x-header-add")
            .is_some_and(|v| v.contains("add-appends-values")),
        "{:?}",
        e.headers
    );
    assert!(
        !e.headers.contains_key("x-header-remove"),
        "{:?}",
        e.headers
    );
    assert_eq!(headers.get("x-header-set").unwrap(), "set-in-response");
    assert!(headers.get("x-header-remove").is_none());

    // Redirects: scheme, host and status; path prefix replaced.
    let (s, headers, _) = get("/scheme-and-host", &[]).await;
    assert_eq!(s, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(headers["location"], "https://example.org/scheme-and-host");
    let (s, headers, _) = get("/original-prefix/lemon", &[]).await;
    assert_eq!(s, StatusCode::FOUND);
    assert_eq!(
        headers["location"],
        "http://example.com/replacement-prefix/lemon"
    );

    // Rewrites: the backend sees the new prefix and host.
    let (s, _, e) = get("/prefix/one/two", &[]).await;
    assert_eq!(s, StatusCode::OK);
    let e = e.expect("echo");
    assert_eq!(
        (e.path.as_str(), e.host.as_str()),
        ("/one/two", "one.example.org")
    );

    // Weights 70/30/0 within ±5% of 500 requests.
    let mut seen: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..500 {
        let (s, _, e) = get("/weighted", &[]).await;
        assert_eq!(s, StatusCode::OK);
        *seen.entry(e.expect("echo").backend).or_default() += 1;
    }
    let share = |b: &str| f64::from(seen.get(b).copied().unwrap_or(0)) / 500.0;
    assert!((share("infra-backend-v1") - 0.7).abs() <= 0.05, "{seen:?}");
    assert!((share("infra-backend-v2") - 0.3).abs() <= 0.05, "{seen:?}");
    assert_eq!(share("infra-backend-v3"), 0.0, "{seen:?}");

    // A backendRef that does not resolve, or crosses namespaces without a
    // ReferenceGrant, is never sent to; the table holds it as an
    // unresolved backend and the dataplane answers 500 for it
    // (HTTPRouteInvalidNonExistentBackendRef, ...CrossNamespaceBackendRef).
    for path in ["/missing", "/cross"] {
        let (s, _, e) = get(path, &[]).await;
        assert!(
            s == StatusCode::INTERNAL_SERVER_ERROR && e.is_none(),
            "{path}: {s}"
        );
    }
    let (_, routes) = support::get(portico.debug, "x", "/debug/routes")
        .await
        .unwrap();
    assert!(
        routes.contains("Service default/does-not-exist not found"),
        "{routes}"
    );
    assert!(
        routes.contains("no ReferenceGrant there allows it"),
        "{routes}"
    );

    // The grant lets the route in, live; deleting it withdraws it.
    let grant = dir.path().join("grant.yaml");
    std::fs::write(
        &grant,
        r#"apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: reference-grant, namespace: gateway-conformance-web-backend}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}]
  to: [{group: "", kind: Service, name: web-backend}]
"#,
    )
    .unwrap();
    three_times("the granted cross-namespace backend", || {
        backend("/cross", &[], "web-backend")
    })
    .await;
    std::fs::remove_file(&grant).unwrap();
    three_times("the grant withdrawn", || async {
        let (s, _, e) = get("/cross", &[]).await;
        s == StatusCode::INTERNAL_SERVER_ERROR && e.is_none()
    })
    .await;
}

/// GRPCRouteExactMethodMatching and GRPCRouteHeaderMatching against the
/// testkit's gRPC echo server, in h2c.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpcroute_routes_by_service_and_method_to_an_h2c_backend() {
    let echo = portico_testkit::grpc_upstream().await;
    let mut m = CLASS_AND_GATEWAY.to_owned();
    m.push_str(&service_at("grpc-echo", echo));
    m.push_str(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: exact-matching, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  hostnames: [grpc.test]
  rules:
    - matches: [{method: {service: portico.test.Echo, method: Unary}}]
      backendRefs: [{name: grpc-echo, port: 80}]
"#,
    );
    let (_dir, portico) = portico_on(&m, &[]).await;
    let mut client = echo_client(portico.http, "grpc.test").await;
    let reply = eventually("the unary call answered", || {
        let mut client = client.clone();
        async move {
            client
                .unary(portico_testkit::EchoRequest {
                    message: "hello".into(),
                    ..Default::default()
                })
                .await
                .ok()
        }
    })
    .await;
    assert_eq!(reply.into_inner().message, "hello");
    // Another method of the service matches no rule.
    let other = client
        .server_stream(portico_testkit::EchoRequest {
            message: "x".into(),
            count: 1,
            ..Default::default()
        })
        .await;
    assert!(other.is_err(), "{other:?}");
}

/// An HTTPS listener on 443 (HTTPRouteHTTPSListener): its certificate is
/// served for its hostname on the main HTTPS listener, and its routes
/// answer there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_listener_on_443_serves_its_certificate_and_routes() {
    let v1 = echo("infra-backend-v1").await;
    let mut m = CLASS_AND_GATEWAY.replace(
        "    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}",
        "    - {name: https, port: 443, protocol: HTTPS, hostname: secure.test, tls: {certificateRefs: [{name: secure-tls}]}}",
    );
    m.push_str(&service_at("infra-backend-v1", v1));
    m.push_str(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: https, namespace: default}
spec:
  parentRefs: [{name: same-namespace}]
  rules: [{backendRefs: [{name: infra-backend-v1, port: 80}]}]
---
"#,
    );
    m.push_str(&tls_secret("secure-tls", "secure.test", 0x6a7e, 30));
    let (_dir, portico) = portico_on(&m, &[]).await;
    let https = portico.https;
    eventually("the listener's certificate", || async move {
        served_serial(https, "secure.test")
            .await
            .filter(|s| s.eq_ignore_ascii_case("6A7E"))
    })
    .await;
    let body = curl_https(https, "secure.test").await;
    let e: Echo = serde_json::from_str(&body).expect(&body);
    assert_eq!(e.backend, "infra-backend-v1");
    // The main HTTP listener shares the table: a name attached only over
    // HTTPS is redirected there, never served in clear.
    let (s, headers, body) = request(portico.http, Method::GET, "secure.test", "/a?b", &[])
        .await
        .unwrap();
    assert!(s.is_redirection(), "{s} {body}");
    assert_eq!(headers["location"], "https://secure.test/a?b");
}

/// `portico validate` reports Gateway API objects with the per-route
/// findings, naming the object and the field.
#[test]
fn validate_reports_gateway_findings() {
    let dir = tempfile::tempdir().unwrap();
    let mut m = CLASS_AND_GATEWAY.to_owned();
    m.push_str(
        r#"
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: default}
spec:
  parentRefs: [{name: same-namespace, sectionName: nope}, {name: same-namespace}]
  rules:
    - backendRefs: [{name: missing, port: 80}]
    - filters: [{type: RequestMirror, requestMirror: {backendRef: {name: missing, port: 80}}}]
    - filters: [{type: ExtensionRef, extensionRef: {group: example.dev, kind: Plugin, name: x}}]
"#,
    );
    std::fs::write(dir.path().join("gw.yaml"), m).unwrap();
    let (code, text) = validate(dir.path());
    assert_eq!(code, Some(1), "{text}");
    for want in [
        "HTTPRoute.gateway.networking.k8s.io default/web: spec.parentRefs[0]: NoMatchingParent",
        "HTTPRoute.gateway.networking.k8s.io default/web: spec.rules[0].backendRefs[0]: BackendNotFound",
        "HTTPRoute.gateway.networking.k8s.io default/web: spec.rules[1].filters[0].requestMirror.backendRef: BackendNotFound: Service default/missing not found; no copies are sent",
        "HTTPRoute.gateway.networking.k8s.io default/web: spec.rules[2].filters[0].type: UnsupportedValue",
        "ok: Gateway default/same-namespace",
    ] {
        assert!(text.contains(want), "{want}\n{text}");
    }
}

/// HTTPRouteListenerHostnameMatching: four listeners on port 80 with
/// exact and wildcard hostnames; each request goes to the routes of the
/// most specific listener whose hostname matches, or to none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listener_hostnames_pick_the_most_specific_listener() {
    let mut m = with_infra_backends(&CLASS_AND_GATEWAY.replace(
        "    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}",
        r#"    - {name: listener-1, port: 80, protocol: HTTP, hostname: bar.com}
    - {name: listener-2, port: 80, protocol: HTTP, hostname: foo.bar.com}
    - {name: listener-3, port: 80, protocol: HTTP, hostname: "*.bar.com"}
    - {name: listener-4, port: 80, protocol: HTTP, hostname: "*.foo.com"}"#,
    ))
    .await;
    for (name, sections, backend) in [
        ("backend-v1", "[listener-1]", "infra-backend-v1"),
        ("backend-v2", "[listener-2]", "infra-backend-v2"),
        ("backend-v3", "[listener-3, listener-4]", "infra-backend-v3"),
    ] {
        let parents: Vec<String> = sections
            .trim_matches(['[', ']'])
            .split(", ")
            .map(|s| format!("{{name: same-namespace, sectionName: {s}}}"))
            .collect();
        m.push_str(&format!(
            "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{}]\n  rules: [{{backendRefs: [{{name: {backend}, port: 80}}]}}]\n",
            parents.join(", ")
        ));
    }
    let (_dir, portico) = portico_on(&m, &[]).await;
    let http = portico.http;
    for (host, want) in [
        ("bar.com", Some("infra-backend-v1")),
        ("foo.bar.com", Some("infra-backend-v2")),
        ("baz.bar.com", Some("infra-backend-v3")),
        ("boo.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.bar.com", Some("infra-backend-v3")),
        ("multiple.prefixes.foo.com", Some("infra-backend-v3")),
        ("foo.com", None),
        ("no.matching.host", None),
    ] {
        expect(http, host, "/", want).await;
    }
}

/// HTTPRouteRequestMirror: each request of the rule is also sent, fire and
/// forget, to the mirror's backend with the same path and headers; the
/// client gets the primary backend's answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_mirror_copies_requests_to_its_backend() {
    let primary = echo("infra-backend-v1").await;
    let (mirror, mut copies) = recorder().await;
    let mut m = CLASS_AND_GATEWAY.to_owned();
    m.push_str(&service_at("infra-backend-v1", primary));
    m.push_str(&service_at("infra-backend-v2", mirror));
    m.push_str(&mirror_route(
        "request-mirror",
        "/mirror",
        &["infra-backend-v2"],
    ));
    let (_dir, portico) = portico_on(&m, &[]).await;
    primary_answers(portico.http, "/mirror/x").await;
    // At least the four answered requests were copied; a bound, not a
    // synchronisation: the copies arrive as soon as they are sent.
    for _ in 0..4 {
        let copy = next_seen(&mut copies).await;
        assert_eq!(copy, ("/mirror/x".to_owned(), "copied".to_owned()));
    }
}

/// A Gateway listener on a port of its own (not 80/443): the dataplane
/// opens it at `port + --gateway-port-offset` on the HTTP listener's
/// address, and its routes answer there only, not on the main listener.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_on_another_port_gets_a_socket_and_routes_of_its_own() {
    let backend = echo("infra-backend-v1").await;
    let offset: u16 = 1000;
    let (listener_port, on_port) = gateway_port(offset);
    let mut m = format!(
        r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portico}}
spec: {{controllerName: portico.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: extra, namespace: default}}
spec:
  gatewayClassName: portico
  listeners:
    - {{name: admin-ui, port: {listener_port}, protocol: HTTP}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: ui, namespace: default}}
spec:
  parentRefs: [{{name: extra}}]
  hostnames: [ui.test]
  rules:
    - backendRefs: [{{name: infra-backend-v1, port: 80}}]
"#
    );
    m.push_str(&service_at("infra-backend-v1", backend));
    let (_dir, portico) = portico_on(&m, &["--gateway-port-offset", &offset.to_string()]).await;
    three_times("the route answers on the Gateway's port", || async {
        let (status, _, echo) = call(on_port, Method::GET, "ui.test", "/", &[]).await;
        status == StatusCode::OK && echo.is_some_and(|e| e.backend == "infra-backend-v1")
    })
    .await;
    let (status, _, _) = call(portico.http, Method::GET, "ui.test", "/", &[]).await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the main listener does not serve another port's routes"
    );
}
