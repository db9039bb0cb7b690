//! What the controller's integration tests share: the real `portico`
//! binary in standalone mode, and polling for convergence.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

pub const PORTICO: &str = env!("CARGO_BIN_EXE_portico");

/// The `portico` IngressClass, marked default, as the first manifest of a
/// multi-document file.
pub const DEFAULT_INGRESS_CLASS: &str = r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: portico
  annotations: {ingressclass.kubernetes.io/is-default-class: "true"}
spec: {controller: portico.dev/ingress-controller}
---
"#;

/// A Service `name` with one port named `http` (80) and an EndpointSlice
/// putting it at `addr`, as a `---`-led manifest to append.
pub fn service_at(name: &str, addr: SocketAddr) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]{slice}"#,
        port = addr.port(),
        slice = endpoint_slice(name, 1, addr),
    )
}

/// EndpointSlice `<service>-<n>` putting the port `http` of Service
/// `service` at `addr`, as a `---`-led manifest to append.
pub fn endpoint_slice(service: &str, n: u32, addr: SocketAddr) -> String {
    format!(
        r#"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {service}-{n}, labels: {{kubernetes.io/service-name: {service}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["{ip}"]}}]
"#,
        port = addr.port(),
        ip = addr.ip(),
    )
}

/// An Ingress `name` for host `<name>.test`, everything to port 80 of
/// Service `service`, with `annotations` (flow-style YAML pairs), as a
/// `---`-led manifest to append.
pub fn ingress_for(name: &str, service: &str, annotations: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: {name}
  annotations: {{{annotations}}}
spec:
  ingressClassName: portico
  rules: [{{host: {name}.test, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}}}]
"#
    )
}

/// Polls `f` until it returns `Some`, for convergence of asynchronous state;
/// fails after 20 s.
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `portico run --manifests DIR` on 127.0.0.1:0 ports. Its stderr is read
/// into `logs` for as long as it runs: portico must never write to a closed
/// stderr in a test that is not about that.
pub struct Portico {
    pub child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    /// The `/debug/*` listener.
    pub debug: SocketAddr,
    logs: mpsc::Receiver<String>,
}

impl Portico {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, &[])
    }

    /// [`Portico::start`] with more `run` flags.
    pub fn start_with(dir: &Path, extra_args: &[&str]) -> Self {
        let mut child = Command::new(PORTICO)
            .args(["run", "--manifests"])
            .arg(dir)
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--admin-addr",
                "127.0.0.1:0",
                "--debug-addr",
                "127.0.0.1:0",
                "--https-addr",
                "127.0.0.1:0",
                "--access-log",
                "false",
            ])
            .args(extra_args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("portico starts");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, logs) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        // The first "listening" line names the bound ports.
        let deadline = Instant::now() + Duration::from_secs(20);
        let (http, https, admin, debug) = loop {
            let line = logs
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("portico logs that it listens");
            let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
            if v["fields"]["message"] == "listening" {
                let addr = |k: &str| v["fields"][k].as_str().unwrap().parse().unwrap();
                break (addr("http"), addr("https"), addr("admin"), addr("debug"));
            }
        };
        Self {
            child,
            http,
            https,
            admin,
            debug,
            logs,
        }
    }

    /// Waits until the first table is published.
    pub async fn ready(&self) {
        let admin = self.admin;
        eventually("readyz", || async move {
            get(admin, "x", "/readyz")
                .await
                .filter(|(s, _)| *s == StatusCode::OK)
        })
        .await;
    }

    /// The first log line holding every one of `needles`, waiting for it.
    pub async fn log_containing(&self, what: &str, needles: &[&str]) -> String {
        eventually(what, || {
            let found = self
                .drain_logs()
                .into_iter()
                .find(|l| needles.iter().all(|n| l.contains(n)));
            async move { found }
        })
        .await
    }

    /// The first log line (JSON) whose message is `message`, waiting for it.
    pub async fn log_line(&self, message: &str) -> serde_json::Value {
        eventually(message, || {
            let found = self.drain_logs().into_iter().find_map(|l| {
                let v: serde_json::Value = serde_json::from_str(&l).ok()?;
                (v["fields"]["message"] == message).then_some(v)
            });
            async move { found }
        })
        .await
    }

    /// Sends SIGTERM, as Kubernetes does to stop a pod.
    pub fn terminate(&self) {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(killed.success());
    }

    /// Waits for the process to exit.
    pub async fn exit_status(mut self) -> std::process::ExitStatus {
        tokio::task::spawn_blocking(move || self.child.wait().unwrap())
            .await
            .unwrap()
    }

    /// Log lines so far, without waiting.
    pub fn drain_logs(&self) -> Vec<String> {
        self.logs.try_iter().collect()
    }
}

impl Drop for Portico {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Option<(StatusCode, String)> {
    let (status, _, body) = request(addr, Method::GET, host, path, &[]).await?;
    Some((status, body))
}

/// One exchange without a body: status, headers and body, or `None` when
/// no answer came within 5 s.
pub async fn request(
    addr: SocketAddr,
    method: Method,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Option<(StatusCode, HeaderMap, String)> {
    let mut req = Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
        .header("host", host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Empty::new()).unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(5), client().request(req))
        .await
        .ok()?
        .ok()?;
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.ok()?.to_bytes();
    Some((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

/// A real HTTP/1.1 server on 127.0.0.1:0 answering with `answer`.
pub async fn serve(
    answer: impl Fn(&Request<Incoming>) -> (StatusCode, String) + Copy + Send + 'static,
) -> SocketAddr {
    serve_with(move |req| {
        let (status, body) = answer(req);
        let mut rsp = Response::new(Full::new(Bytes::from(body)));
        *rsp.status_mut() = status;
        rsp
    })
    .await
}

/// [`serve`] with whole responses (headers included).
pub async fn serve_with(
    answer: impl Fn(&Request<Incoming>) -> Response<Full<Bytes>> + Copy + Send + 'static,
) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(answer(&req))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

/// An upstream answering with its name and the path it saw.
pub async fn upstream(name: &'static str) -> SocketAddr {
    serve(move |req| (StatusCode::OK, format!("{name} {}", req.uri().path()))).await
}

pub fn manifests(upstream: SocketAddr, path: &str) -> String {
    format!(
        r#"
{DEFAULT_INGRESS_CLASS}apiVersion: v1
kind: Service
metadata: {{name: demo}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: demo-1, labels: {{kubernetes.io/service-name: demo}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["{ip}"]}}]
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: demo}}
spec:
  rules:
    - host: demo.test
      http:
        paths:
          - {{path: {path}, pathType: Prefix, backend: {{service: {{name: demo, port: {{number: 80}}}}}}}}
"#,
        port = upstream.port(),
        ip = upstream.ip(),
    )
}

/// Standard base64 (for Secret `data`), so the test needs no extra crate.
pub fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A `kubernetes.io/tls` Secret holding a self-signed certificate for
/// `host` with `serial`, valid for `days` (negative: already expired).
pub fn tls_secret(name: &str, host: &str, serial: u64, days: i64) -> String {
    let mut p = rcgen::CertificateParams::new(vec![host.to_owned()]).unwrap();
    p.serial_number = Some(serial.into());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let at = |secs: i64| rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs(secs as u64);
    p.not_before = at(now.min(now + days * 86400) - 86400);
    p.not_after = at(now + days * 86400);
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = p.self_signed(&key).unwrap();
    format!(
        "apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}}}\ntype: kubernetes.io/tls\ndata:\n  tls.crt: {}\n  tls.key: {}\n",
        base64(cert.pem().as_bytes()),
        base64(key.serialize_pem().as_bytes()),
    )
}

/// The serial of the certificate served at `addr` for `sni`, through
/// openssl (a TLS client no one here wrote).
pub async fn served_serial(addr: SocketAddr, sni: &'static str) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "openssl s_client -connect {addr} -servername {sni} </dev/null 2>/dev/null | openssl x509 -noout -serial"
            ))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Some(text.trim().strip_prefix("serial=")?.to_owned())
    })
    .await
    .unwrap()
}

/// A gRPC echo client through Portico at `addr`, for the host `authority`.
pub async fn echo_client(
    addr: SocketAddr,
    authority: &str,
) -> portico_testkit::EchoClient<tonic::transport::Channel> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .origin(format!("http://{authority}").parse().unwrap())
        .connect()
        .await
        .unwrap();
    portico_testkit::EchoClient::new(channel)
}
