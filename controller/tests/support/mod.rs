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
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

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
