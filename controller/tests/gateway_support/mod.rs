//! What the Gateway API tests share: the conformance suite's Gateway, its
//! echo backend, requests and the three-consecutive-passes rule.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Method, Response, StatusCode};
use http_body_util::Full;

use crate::support::*;

pub const CLASS_AND_GATEWAY: &str = r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {name: portico}
spec: {controllerName: portico.dev/gateway-controller}
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: same-namespace, namespace: default}
spec:
  gatewayClassName: portico
  listeners:
    - {name: http, port: 80, protocol: HTTP, allowedRoutes: {namespaces: {from: All}}}
"#;

/// The conformance echo backend's answer, reduced: which backend, and the
/// path, host and headers it saw.
#[derive(Debug, serde::Deserialize)]
pub struct Echo {
    pub backend: String,
    pub path: String,
    pub host: String,
    pub headers: BTreeMap<String, String>,
}

pub async fn echo(name: &'static str) -> SocketAddr {
    serve_with(move |req| {
        let headers: BTreeMap<String, String> = req
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into()))
            .collect();
        let body = serde_json::json!({
            "backend": name,
            "path": req.uri().path_and_query().map_or("/", |p| p.as_str()),
            "host": req.headers().get("host").map_or("", |h| h.to_str().unwrap_or("")),
            "headers": headers,
        });
        let mut rsp = Response::new(Full::new(Bytes::from(body.to_string())));
        rsp.headers_mut()
            .insert("x-header-remove", "from-backend".parse().unwrap());
        rsp
    })
    .await
}

/// `service_at` in another namespace.
pub fn service_in(namespace: &str, name: &str, addr: SocketAddr) -> String {
    service_at(name, addr)
        .replace(
            &format!("metadata: {{name: {name}}}"),
            &format!("metadata: {{name: {name}, namespace: {namespace}}}"),
        )
        .replace(
            &format!("metadata: {{name: {name}-1, labels:"),
            &format!("metadata: {{name: {name}-1, namespace: {namespace}, labels:"),
        )
}

/// A request through Portico: status, response headers and the echo.
pub async fn call(
    addr: SocketAddr,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, http::HeaderMap, Option<Echo>) {
    let (status, headers, body) = request(addr, method, host, path, headers)
        .await
        .expect("an answer");
    (status, headers, serde_json::from_str(&body).ok())
}

/// Writes `manifests` to a fresh folder and starts Portico on it with
/// `extra` run flags, ready; the folder lives as long as the caller keeps
/// it (tests edit it).
pub async fn portico_on(manifests: &str, extra: &[&str]) -> (tempfile::TempDir, Portico) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), manifests).unwrap();
    let portico = Portico::start_with(dir.path(), extra);
    portico.ready().await;
    (dir, portico)
}

/// The conformance pass rule: the same expectation met on three
/// consecutive requests (after convergence).
pub async fn three_times<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    eventually(what, || {
        let first = check();
        async move { first.await.then_some(()) }
    })
    .await;
    for _ in 0..3 {
        assert!(check().await, "{what}: not stable over three requests");
    }
}

/// A backend that accepts connections and reads requests but never
/// answers: whatever times out is Portico.
pub async fn silent() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut sink = tokio::io::sink();
                let _ = tokio::io::copy(&mut stream, &mut sink).await;
            });
        }
    });
    addr
}

/// A backend that reports the path and `x-test` header of every request
/// it gets on the returned channel, and answers 200.
pub async fn recorder() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<(String, String)>();
    // `serve_with` takes a `Copy` closure: a leaked sender is one.
    let tx: &'static tokio::sync::mpsc::UnboundedSender<(String, String)> = Box::leak(Box::new(tx));
    let addr = serve_with(move |req| {
        let marker = req
            .headers()
            .get("x-test")
            .map_or("", |v| v.to_str().unwrap_or(""))
            .to_owned();
        let _ = tx.send((req.uri().path().to_owned(), marker));
        Response::new(Full::new(Bytes::from_static(b"recorded")))
    })
    .await;
    (addr, rx)
}

/// The next request a [`recorder`] saw; a bound, not a synchronisation:
/// it returns as soon as the request arrives.
pub async fn next_seen(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
) -> (String, String) {
    tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv())
        .await
        .expect("a request reaches the backend")
        .expect("the backend is serving")
}

/// `portico validate DIR`: its exit code and standard output.
pub fn validate(dir: &std::path::Path) -> (Option<i32>, String) {
    let out = std::process::Command::new(PORTICO)
        .arg("validate")
        .arg(dir)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// An HTTPRoute `name` of Gateway `same-namespace` sending `path` to
/// infra-backend-v1 and a copy of each request to each of `mirrors`.
pub fn mirror_route(name: &str, path: &str, mirrors: &[&str]) -> String {
    let mut filters = String::new();
    for m in mirrors {
        filters.push_str(&format!(
            "        - type: RequestMirror\n          requestMirror: {{backendRef: {{name: {m}, port: 80}}}}\n"
        ));
    }
    format!(
        "\n---\napiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  parentRefs: [{{name: same-namespace}}]\n  rules:\n    - matches: [{{path: {{type: PathPrefix, value: {path}}}}}]\n      filters:\n{filters}      backendRefs: [{{name: infra-backend-v1, port: 80}}]\n"
    )
}

/// Three passes of the primary backend (infra-backend-v1) answering
/// `path` sent with `x-test: copied`.
pub async fn primary_answers(http: SocketAddr, path: &str) {
    three_times(&format!("the primary backend answers {path}"), || async {
        let (status, _, echo) = call(
            http,
            Method::GET,
            "example.com",
            path,
            &[("x-test", "copied")],
        )
        .await;
        status == StatusCode::OK && echo.is_some_and(|e| e.backend == "infra-backend-v1")
    })
    .await;
}

/// Three passes of `host` + `path` answered by `want` (a backend name), or
/// by 404 when `want` is `None`.
pub async fn expect(http: SocketAddr, host: &str, path: &str, want: Option<&str>) {
    let what = format!("{host}{path} → {want:?}");
    three_times(&what, || async {
        let (s, _, e) = call(http, Method::GET, host, path, &[]).await;
        match want {
            Some(b) => s == StatusCode::OK && e.is_some_and(|e| e.backend == b),
            None => s == StatusCode::NOT_FOUND,
        }
    })
    .await;
}

/// `manifests` with the suite's three echo backends, infra-backend-v1..v3,
/// started and their Services appended.
pub async fn with_infra_backends(manifests: &str) -> String {
    let mut m = manifests.to_owned();
    for name in ["infra-backend-v1", "infra-backend-v2", "infra-backend-v3"] {
        m.push_str(&service_at(name, echo(name).await));
    }
    m
}

/// `GET https://{host}/` through curl at `addr` (a TLS client no one here
/// wrote; the certificate is not checked): the body, empty when none came.
pub async fn curl_https(addr: SocketAddr, host: &'static str) -> String {
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl")
            .args(["-sS", "-k", "--max-time", "5", "--resolve"])
            .arg(format!("{host}:{}:127.0.0.1", addr.port()))
            .arg(format!("https://{host}:{}/", addr.port()))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .unwrap()
}

/// A port free a moment ago, as a Gateway listener's port after
/// `offset`: (the listener port to write, the address it is bound at).
pub fn gateway_port(offset: u16) -> (u16, SocketAddr) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listener_port = port
        .checked_sub(offset)
        .expect("ephemeral ports are above the offset");
    (listener_port, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// The suite's `web-backend` echo, in namespace
/// `gateway-conformance-web-backend`, started; its Service as a manifest.
pub async fn web_backend() -> String {
    service_in(
        "gateway-conformance-web-backend",
        "web-backend",
        echo("web-backend").await,
    )
}
