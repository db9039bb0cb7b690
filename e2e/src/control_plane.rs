//! A real etcd and kube-apiserver on 127.0.0.1, started from the binaries
//! `make e2e-tools` builds. No kubelet, scheduler or controller-manager:
//! tests write the objects those would (EndpointSlices, Service status).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use kube::Client;
use kube::config::{KubeConfigOptions, Kubeconfig};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::pki::Pki;
use crate::ports::{free_port, free_port_pair};

/// How long etcd and the apiserver get to become ready.
const READY_TIMEOUT: Duration = Duration::from_secs(90);
/// Starts retried when a picked port was taken meanwhile.
const START_ATTEMPTS: usize = 3;

pub struct ControlPlane {
    dir: TempDir,
    pki: Pki,
    /// Held for kill-on-drop.
    _etcd: Child,
    etcd_url: String,
    apiserver: Option<Child>,
    apiserver_port: u16,
    admin_kubeconfig: PathBuf,
}

impl ControlPlane {
    /// Starts etcd, then the apiserver, each retried on fresh ports when
    /// it exits before becoming ready (a port taken between pick and bind).
    pub async fn start() -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("portico-e2e-").tempdir()?;
        let pki = Pki::generate(dir.path())?;
        let (etcd, etcd_url) = retry("etcd", || start_etcd(dir.path())).await?;
        let mut plane = Self {
            admin_kubeconfig: dir.path().join("admin.kubeconfig"),
            dir,
            pki,
            _etcd: etcd,
            etcd_url,
            apiserver: None,
            apiserver_port: 0,
        };
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            plane.apiserver_port = free_port()?;
            plane.write_admin_kubeconfig()?;
            match plane.start_apiserver().await {
                Ok(()) => return Ok(plane),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn server_url(&self) -> String {
        format!("https://127.0.0.1:{}", self.apiserver_port)
    }

    pub fn ca_cert(&self) -> &Path {
        &self.pki.ca_cert
    }

    pub fn admin_kubeconfig(&self) -> &Path {
        &self.admin_kubeconfig
    }

    /// A client with cluster-admin rights (client certificate in
    /// `system:masters`).
    pub async fn admin_client(&self) -> anyhow::Result<Client> {
        client_from(&self.admin_kubeconfig).await
    }

    /// Starts the apiserver on the port it had (again, after `stop_apiserver`)
    /// and waits for `/readyz`.
    pub async fn start_apiserver(&mut self) -> anyhow::Result<()> {
        let child = self.spawn_apiserver(self.apiserver_port, "apiserver")?;
        let client = self.admin_client().await?;
        self.apiserver =
            Some(wait_ready(client, child, &self.dir.path().join("apiserver.log")).await?);
        Ok(())
    }

    /// A second apiserver on the same etcd and keys (another port): how the
    /// tests write while the one portico talks to is down. Killed on drop.
    pub async fn start_second_apiserver(&self) -> anyhow::Result<(Child, Client)> {
        let mut last = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            let child = self.spawn_apiserver(port, "apiserver-2")?;
            let mut kc = Kubeconfig::read_from(&self.admin_kubeconfig)?;
            for c in &mut kc.clusters {
                if let Some(cluster) = c.cluster.as_mut() {
                    cluster.server = Some(format!("https://127.0.0.1:{port}"));
                }
            }
            let config =
                kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
            let client = Client::try_from(config)?;
            let log = self.dir.path().join("apiserver-2.log");
            match wait_ready(client.clone(), child, &log).await {
                Ok(child) => return Ok((child, client)),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
    }

    fn spawn_apiserver(&self, port: u16, name: &str) -> anyhow::Result<Child> {
        let d = self.dir.path();
        let log = std::fs::File::create(d.join(format!("{name}.log")))?;
        Command::new(crate::tool("kube-apiserver")?)
            .arg(format!("--etcd-servers={}", self.etcd_url))
            .args(["--bind-address=127.0.0.1", "--advertise-address=127.0.0.1"])
            .arg(format!("--secure-port={port}"))
            .arg(format!(
                "--tls-cert-file={}",
                self.pki.serving_cert.display()
            ))
            .arg(format!(
                "--tls-private-key-file={}",
                self.pki.serving_key.display()
            ))
            .arg(format!("--client-ca-file={}", self.pki.ca_cert.display()))
            .arg(format!(
                "--service-account-key-file={}",
                self.pki.service_account_pub.display()
            ))
            .arg(format!(
                "--service-account-signing-key-file={}",
                self.pki.service_account_key.display()
            ))
            // One issuer for every apiserver: tokens from one verify on all.
            .arg(format!("--service-account-issuer={}", self.server_url()))
            .args([
                "--authorization-mode=RBAC",
                "--service-cluster-ip-range=10.0.0.0/24",
                // No kubelets and no node IPs to keep in the `kubernetes`
                // Service's endpoints.
                "--endpoint-reconciler-type=none",
                "--enable-priority-and-fairness=false",
                "--profiling=false",
            ])
            .arg(format!(
                "--cert-dir={}",
                d.join(format!("{name}-certs")).display()
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .context("starting kube-apiserver")
    }

    /// Kills the apiserver and waits for it to exit; etcd keeps the state.
    pub async fn stop_apiserver(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.apiserver.take() {
            child.kill().await?;
        }
        Ok(())
    }

    fn write_admin_kubeconfig(&self) -> anyhow::Result<()> {
        let yaml = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: e2e\n  cluster:\n    server: {server}\n    certificate-authority: {ca}\nusers:\n- name: admin\n  user:\n    client-certificate: {cert}\n    client-key: {key}\ncontexts:\n- name: e2e\n  context:\n    cluster: e2e\n    user: admin\ncurrent-context: e2e\n",
            server = self.server_url(),
            ca = self.pki.ca_cert.display(),
            cert = self.pki.admin_cert.display(),
            key = self.pki.admin_key.display(),
        );
        std::fs::write(&self.admin_kubeconfig, yaml)?;
        Ok(())
    }
}

impl Drop for ControlPlane {
    /// A failing test shows the API server's last words (its log lives in
    /// the temporary directory about to be removed).
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- kube-apiserver log (tail) ---\n{}",
                tail(&self.dir.path().join("apiserver.log"))
            );
        }
    }
}

pub async fn client_from(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kc = Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default()).await?;
    Ok(Client::try_from(config)?)
}

/// Polls `/readyz` until `ok`; fails early when the process exits.
async fn wait_ready(client: Client, mut child: Child, log: &Path) -> anyhow::Result<Child> {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        let req = http::Request::get("/readyz").body(Vec::new())?;
        if let Ok(body) = client.request_text(req).await
            && body.trim() == "ok"
        {
            return Ok(child);
        }
        if let Some(status) = child.try_wait()? {
            bail!(
                "kube-apiserver exited ({status}) before ready:\n{}",
                tail(log)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "kube-apiserver not ready after {READY_TIMEOUT:?}:\n{}",
                tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn retry<T, F, Fut>(what: &str, mut start: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
{
    let mut last = None;
    for _ in 0..START_ATTEMPTS {
        match start().await {
            Ok(v) => return Ok(v),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no attempt made")))
        .with_context(|| format!("starting {what}"))
}

async fn start_etcd(dir: &Path) -> anyhow::Result<(Child, String)> {
    let (client_port, peer_port) = free_port_pair()?;
    let client = format!("http://127.0.0.1:{client_port}");
    let peer = format!("http://127.0.0.1:{peer_port}");
    let data = dir.join("etcd-data");
    let log_path = dir.join("etcd.log");
    let log = std::fs::File::create(&log_path)?;
    let mut child = Command::new(crate::tool("etcd")?)
        .args(["--name", "e2e"])
        .arg("--data-dir")
        .arg(&data)
        .args(["--listen-client-urls", &client])
        .args(["--advertise-client-urls", &client])
        .args(["--listen-peer-urls", &peer])
        .args(["--initial-advertise-peer-urls", &peer])
        .args(["--initial-cluster", &format!("e2e={peer}")])
        // Test data: durability across power loss is not needed, speed is.
        .arg("--unsafe-no-fsync")
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .context("starting etcd")?;
    let health: http::Uri = format!("{client}/health").parse()?;
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Ok(body) = crate::upstream::plain_get(&health).await
            && body.contains("\"health\":\"true\"")
        {
            return Ok((child, client));
        }
        if let Some(status) = child.try_wait()? {
            bail!("etcd exited ({status}) before ready:\n{}", tail(&log_path));
        }
        if Instant::now() > deadline {
            bail!(
                "etcd not healthy after {READY_TIMEOUT:?}:\n{}",
                tail(&log_path)
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The end of a log file, for failure messages.
pub fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
