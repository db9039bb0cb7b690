//! The real `portico` binary, run out of cluster with a kubeconfig.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;

use crate::TestEnv;

/// The `portico` binary: `PORTICO_BIN`, else `portico` beside the test's
/// target directory (after `cargo build -p portico`).
/// The `portico` binary under test (`PORTICO_BIN`, or the one next to
/// the test's target directory).
pub fn binary() -> anyhow::Result<PathBuf> {
    let path = match std::env::var_os("PORTICO_BIN") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()?
            .parent()
            .and_then(|deps| deps.parent())
            .context("test binary outside a target directory")?
            .join("portico"),
    };
    if !path.is_file() {
        bail!(
            "{} is missing: run `cargo build -p portico` (or `make e2e`), or set PORTICO_BIN",
            path.display()
        );
    }
    Ok(path)
}

#[derive(Default, Clone)]
pub struct PorticoOptions {
    /// Leader-election identity (`POD_NAME`); default: the process id.
    pub identity: Option<String>,
    /// Extra `portico run` flags.
    pub args: Vec<String>,
    /// Replaces the harness's own flags (listeners, leader election, log
    /// format) when set: the test passes a whole command line, e.g. the
    /// chart's. `--kubeconfig` is still added; logs must stay JSON.
    pub exact_args: Option<Vec<String>>,
}

pub struct Portico {
    child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    /// The `/debug/*` listener; `None` with `--debug-addr=off`.
    pub debug: Option<SocketAddr>,
    logs: Arc<Mutex<Vec<String>>>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

pub struct Response {
    pub status: StatusCode,
    pub body: String,
}

impl Portico {
    /// Starts `portico run` against the test's API server as the chart's
    /// ServiceAccount, listeners on 127.0.0.1:0, leader election in the test
    /// namespace. Returns once it reports its bound addresses.
    pub async fn start(env: &TestEnv, opts: PorticoOptions) -> anyhow::Result<Self> {
        let own_args = || {
            [
                "run",
                "--http-addr=127.0.0.1:0",
                "--https-addr=127.0.0.1:0",
                "--admin-addr=127.0.0.1:0",
                "--debug-addr=127.0.0.1:0",
                "--leader-elect=true",
                "--access-log=false",
                "--log-format=json",
            ]
            .map(str::to_owned)
            .into_iter()
            .chain([format!("--election-namespace={}", env.namespace)])
            .collect()
        };
        let mut cmd = Command::new(binary()?);
        cmd.args(opts.exact_args.clone().unwrap_or_else(own_args))
            .arg("--kubeconfig")
            .arg(&env.portico_kubeconfig)
            .args(&opts.args)
            .env("POD_NAMESPACE", &env.namespace);
        if let Some(id) = &opts.identity {
            cmd.env("POD_NAME", id);
        }
        Self::spawn(cmd).await
    }

    /// Starts `portico run --manifests dir` (no cluster), listeners on
    /// 127.0.0.1:0, with `args` added. Returns once it reports its bound
    /// addresses. For peers that must be reached at a loopback address,
    /// which the API server refuses in EndpointSlices.
    pub async fn with_manifests(dir: &Path, args: &[&str]) -> anyhow::Result<Self> {
        let mut cmd = Command::new(binary()?);
        cmd.args([
            "run",
            "--http-addr=127.0.0.1:0",
            "--https-addr=127.0.0.1:0",
            "--admin-addr=127.0.0.1:0",
            "--debug-addr=127.0.0.1:0",
            "--access-log=false",
            "--log-format=json",
        ])
        .arg("--manifests")
        .arg(dir)
        .args(args);
        Self::spawn(cmd).await
    }

    async fn spawn(mut cmd: Command) -> anyhow::Result<Self> {
        cmd.env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().context("starting portico")?;
        let stderr = child.stderr.take().context("portico stderr")?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addrs_tx, mut addrs_rx) = watch::channel(None);
        let sink = Arc::clone(&logs);
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Some(addrs) = listening(&line) {
                    let _ = addrs_tx.send(Some(addrs));
                }
                sink.lock().unwrap_or_else(|p| p.into_inner()).push(line);
            }
        });
        let Listening {
            http,
            https,
            admin,
            debug,
        } = tokio::time::timeout(crate::CONVERGE, async {
            addrs_rx
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|a| *a)
        })
        .await
        .ok()
        .flatten()
        .with_context(|| {
            format!(
                "portico did not report its listeners:\n{}",
                logs.lock().unwrap_or_else(|p| p.into_inner()).join("\n")
            )
        })?;
        Ok(Self {
            child,
            http,
            https,
            admin,
            debug,
            logs,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// GET `path` on the proxy with `Host: host`.
    pub async fn get(&self, host: &str, path: &str) -> anyhow::Result<Response> {
        self.get_on(self.http, host, path).await
    }

    /// GET `path` with `Host: host` on another of portico's listeners (a
    /// Gateway port).
    pub async fn get_on(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
    ) -> anyhow::Result<Response> {
        let req = Request::get(format!("http://{addr}{path}"))
            .header(http::header::HOST, host)
            .body(Empty::new())?;
        self.send(req).await
    }

    /// GET `path` on the admin listener.
    pub async fn admin_get(&self, path: &str) -> anyhow::Result<Response> {
        let req = Request::get(format!("http://{}{path}", self.admin)).body(Empty::new())?;
        self.send(req).await
    }

    /// GET `path` on the debug listener.
    pub async fn debug_get(&self, path: &str) -> anyhow::Result<Response> {
        let debug = self.debug.context("portico runs with --debug-addr=off")?;
        let req = Request::get(format!("http://{debug}{path}")).body(Empty::new())?;
        self.send(req).await
    }

    async fn send(&self, req: Request<Empty<Bytes>>) -> anyhow::Result<Response> {
        let resp = self.client.request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok(Response {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    }

    /// Waits until `host` + `path` answers `status` with a body containing
    /// `body` (any body when empty).
    pub async fn wait_for(&self, host: &str, path: &str, status: StatusCode, body: &str) {
        self.wait_for_on(self.http, host, path, status, body).await;
    }

    /// [`Self::wait_for`] on another of portico's listeners.
    pub async fn wait_for_on(
        &self,
        addr: SocketAddr,
        host: &str,
        path: &str,
        status: StatusCode,
        body: &str,
    ) {
        let what = format!("GET {host}{path} at {addr} → {status} {body:?}");
        crate::eventually(&what, crate::CONVERGE, || async {
            let r = self.get_on(addr, host, path).await.ok()?;
            (r.status == status && r.body.contains(body)).then_some(())
        })
        .await;
    }

    /// The serial (hex, as openssl prints it) of the certificate served on
    /// the HTTPS listener for SNI `sni`, as `openssl s_client` (a TLS peer
    /// no one here wrote) sees it.
    pub async fn served_serial(&self, sni: &str) -> Option<String> {
        let script = format!(
            "openssl s_client -connect {} -servername {sni} </dev/null 2>/dev/null | openssl x509 -noout -serial",
            self.https
        );
        let out = Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .await
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Some(text.trim().strip_prefix("serial=")?.to_owned())
    }

    /// Every log line so far (JSON), for assertions and failure messages.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// SIGKILL: no drain, no Lease release (a crashed replica).
    pub async fn kill(&mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }

    /// Resident memory of the process (`VmRSS`), in KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// SIGTERM (through `kill(1)`: this crate has no unsafe code), then
    /// waits up to `deadline` for the exit; the exit status.
    pub async fn terminate(&mut self, deadline: Duration) -> anyhow::Result<ExitStatus> {
        let pid = self.child.id().context("portico already exited")?;
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()?;
        anyhow::ensure!(sent.success(), "kill -TERM {pid} failed");
        tokio::time::timeout(deadline, self.child.wait())
            .await
            .with_context(|| format!("portico still running {deadline:?} after SIGTERM"))?
            .context("waiting for portico")
    }

    /// Whether the process is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Portico {
    /// A failing test shows what portico said.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs();
            let from = logs.len().saturating_sub(40);
            eprintln!(
                "--- portico log (last {} lines) ---\n{}",
                logs.len() - from,
                logs[from..].join("\n")
            );
        }
    }
}

/// The bound addresses portico reports in its `listening` log line.
#[derive(Clone, Copy)]
struct Listening {
    http: SocketAddr,
    https: SocketAddr,
    admin: SocketAddr,
    debug: Option<SocketAddr>,
}

fn listening(line: &str) -> Option<Listening> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = &v["fields"];
    if fields["message"] != "listening" {
        return None;
    }
    let addr = |name: &str| fields[name].as_str()?.parse().ok();
    Some(Listening {
        http: addr("http")?,
        https: addr("https")?,
        admin: addr("admin")?,
        // `off` when the debug pages are turned off.
        debug: addr("debug"),
    })
}
