//! A real OpenID Connect sign-in: Dex (static password connector, memory
//! storage) as the provider and oauth2-proxy in front of it, both built by
//! `make e2e-tools` and run on 127.0.0.1 for one test.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::process::{Child, Command};

use crate::control_plane::{retry, tail};
use crate::ports::free_port;

/// The one user Dex knows. The hash is bcrypt of `PASSWORD` (cost 10).
pub const USER_EMAIL: &str = "alice@example.com";
pub const USER_NAME: &str = "alice";
pub const PASSWORD: &str = "password";
const PASSWORD_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";
/// The OAuth client oauth2-proxy signs in as.
pub const CLIENT_ID: &str = "portico-e2e";
pub const CLIENT_SECRET: &str = "portico-e2e-client-secret";

const READY: Duration = Duration::from_secs(30);

pub struct Dex {
    /// `http://127.0.0.1:<port>/dex`.
    pub issuer: String,
    _child: Child,
}

impl Dex {
    /// Starts Dex with `CLIENT_ID` allowed to redirect to `redirect_uri`;
    /// returns once its discovery document is served.
    pub async fn start(dir: &Path, redirect_uri: &str) -> anyhow::Result<Self> {
        let dex = crate::tool("dex")?;
        retry("dex", || async {
            let port = free_port()?;
            let issuer = format!("http://127.0.0.1:{port}/dex");
            let config = dir.join("dex.yaml");
            std::fs::write(
                &config,
                format!(
                    r#"issuer: {issuer}
storage:
  type: memory
web:
  http: 127.0.0.1:{port}
oauth2:
  skipApprovalScreen: true
  passwordConnector: local
staticClients:
  - id: {CLIENT_ID}
    secret: {CLIENT_SECRET}
    name: Portico e2e
    redirectURIs: ["{redirect_uri}"]
enablePasswordDB: true
staticPasswords:
  - email: {USER_EMAIL}
    hash: "{PASSWORD_HASH}"
    username: {USER_NAME}
    userID: 08a8684b-db88-4b73-90a9-3cd1661f5466
"#
                ),
            )?;
            let log = dir.join("dex.log");
            let child = spawn(Command::new(&dex).arg("serve").arg(&config), &log)?;
            let child = ready(
                child,
                &format!("{issuer}/.well-known/openid-configuration"),
                &log,
                "dex",
            )
            .await?;
            Ok(Self {
                issuer,
                _child: child,
            })
        })
        .await
    }
}

pub struct OAuth2Proxy {
    /// `127.0.0.1:<port>`.
    pub addr: std::net::SocketAddr,
    _child: Child,
}

impl OAuth2Proxy {
    /// Starts oauth2-proxy against `issuer` with the callback at
    /// `redirect_url`, as its docs configure it behind ingress-nginx
    /// (`--reverse-proxy`, `--set-xauthrequest`, a static upstream: the
    /// proxy only authenticates); `extra` flags added. Returns once `/ping`
    /// answers.
    pub async fn start(
        dir: &Path,
        issuer: &str,
        redirect_url: &str,
        cookie_domain_host: &str,
        extra: &[&str],
    ) -> anyhow::Result<Self> {
        let bin = crate::tool("oauth2-proxy")?;
        retry("oauth2-proxy", || async {
            let port = free_port()?;
            let log = dir.join("oauth2-proxy.log");
            let child = spawn(
                Command::new(&bin)
                    .arg(format!("--http-address=127.0.0.1:{port}"))
                    .args([
                        "--provider=oidc",
                        "--provider-display-name=Dex",
                        "--email-domain=*",
                        "--upstream=static://202",
                        "--set-xauthrequest=true",
                        "--reverse-proxy=true",
                        "--skip-provider-button=true",
                        // Its default (`force`) makes Dex ask for consent
                        // on every sign-in despite `skipApprovalScreen`.
                        "--approval-prompt=auto",
                        "--cookie-secure=false",
                        // 32 bytes: AES-256 for the session cookie.
                        "--cookie-secret=0123456789abcdef0123456789abcdef",
                    ])
                    .arg(format!("--oidc-issuer-url={issuer}"))
                    .arg(format!("--client-id={CLIENT_ID}"))
                    .arg(format!("--client-secret={CLIENT_SECRET}"))
                    .arg(format!("--redirect-url={redirect_url}"))
                    .arg(format!("--whitelist-domain={cookie_domain_host}"))
                    .args(extra),
                &log,
            )?;
            let child = ready(
                child,
                &format!("http://127.0.0.1:{port}/ping"),
                &log,
                "oauth2-proxy",
            )
            .await?;
            Ok(Self {
                addr: ([127, 0, 0, 1], port).into(),
                _child: child,
            })
        })
        .await
    }
}

fn spawn(cmd: &mut Command, log: &PathBuf) -> anyhow::Result<Child> {
    let out = std::fs::File::create(log)?;
    cmd.stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))
}

/// Polls `url` until it answers 200; fails (with the log's end) when the
/// process exits first or `READY` passes.
async fn ready(mut child: Child, url: &str, log: &Path, what: &str) -> anyhow::Result<Child> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = url.parse()?;
    let deadline = Instant::now() + READY;
    loop {
        if let Ok(resp) = client.get(uri.clone()).await {
            let ok = resp.status().is_success();
            let _ = resp.into_body().collect().await;
            if ok {
                return Ok(child);
            }
        }
        if let Some(status) = child.try_wait()? {
            bail!("{what} exited ({status}) before ready:\n{}", tail(log));
        }
        if Instant::now() > deadline {
            bail!("{what} not ready after {READY:?}:\n{}", tail(log));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
