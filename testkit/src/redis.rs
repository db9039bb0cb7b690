//! A real `redis-server` for the global rate limit's tests: started on a
//! free loopback port (Redis cannot take port 0: a port is picked by
//! binding 127.0.0.1:0, and another is tried when the server fails to
//! start), without persistence, killed on drop. Optionally TLS (certificate
//! files from the test) and a password. [`RedisServer::command`] speaks
//! plain RESP on the plain port, which a TLS server keeps open too, so the
//! tests can read `INFO commandstats`.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// TLS for the server: PEM files' contents.
pub struct RedisTls {
    pub cert_pem: String,
    pub key_pem: String,
    pub ca_pem: String,
}

#[derive(Default)]
pub struct RedisOptions {
    pub tls: Option<RedisTls>,
    /// `requirepass`.
    pub password: Option<String>,
}

pub struct RedisServer {
    child: Option<Child>,
    /// The plain port.
    pub port: u16,
    /// The TLS port, when TLS is on.
    pub tls_port: Option<u16>,
    password: Option<String>,
    args: Vec<String>,
    /// Holds the certificate files; removed on drop.
    _dir: tempfile::TempDir,
}

/// A port nothing listens on right now.
/// A free port below the kernel's ephemeral range, picked at random and
/// checked by binding it. Not `bind(0)`: a port from the ephemeral range
/// can be taken, while the server is down for a test, by an outgoing
/// connection, including a client's retry to that very port, which the
/// kernel may give the same port as its source and so connect to itself
/// (TCP self-connect); the server then cannot start again on it.
fn free_port() -> u16 {
    use std::hash::BuildHasher;
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let low = 10_000u16.min(ephemeral_start / 2);
    let span = u64::from(ephemeral_start.saturating_sub(low).max(1));
    let seed = std::collections::hash_map::RandomState::new();
    for attempt in 0..1000u64 {
        let port = low + (seed.hash_one(attempt) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    // Every pick taken: fall back to the kernel's choice.
    let l = TcpListener::bind("127.0.0.1:0").expect("binding 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

impl RedisServer {
    pub async fn start() -> Self {
        Self::start_with(RedisOptions::default()).await
    }

    pub async fn start_with(opts: RedisOptions) -> Self {
        let mut last_error = String::new();
        for _ in 0..10 {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let port = free_port();
            let tls_port = opts.tls.as_ref().map(|_| free_port());
            let mut args: Vec<String> = [
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--protected-mode",
                "no",
            ]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
            args.extend(["--port".into(), port.to_string()]);
            args.extend(["--dir".into(), dir.path().display().to_string()]);
            if let Some(pw) = &opts.password {
                args.extend(["--requirepass".into(), pw.clone()]);
            }
            if let (Some(tls), Some(tls_port)) = (&opts.tls, tls_port) {
                let write = |name: &str, pem: &str| -> PathBuf {
                    let path = dir.path().join(name);
                    std::fs::write(&path, pem).expect("writing a PEM file");
                    path
                };
                let cert = write("redis.crt", &tls.cert_pem);
                let key = write("redis.key", &tls.key_pem);
                let ca = write("ca.crt", &tls.ca_pem);
                args.extend(["--tls-port".into(), tls_port.to_string()]);
                args.extend(["--tls-cert-file".into(), cert.display().to_string()]);
                args.extend(["--tls-key-file".into(), key.display().to_string()]);
                args.extend(["--tls-ca-cert-file".into(), ca.display().to_string()]);
                args.extend(["--tls-auth-clients".into(), "no".into()]);
            }
            let mut server = Self {
                child: None,
                port,
                tls_port,
                password: opts.password.clone(),
                args,
                _dir: dir,
            };
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// Starts the server with `args`, and waits until it answers PING.
    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                format!("cannot run redis-server ({e}); `make test` installs it (apt-get install redis-server)")
            })?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                return Err(format!("redis-server exited: {status}"));
            }
            if self.command(&["PING"]).await.is_ok_and(|r| r == "PONG") {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.kill();
                return Err("no PONG within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// `redis://[:password@]127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        match &self.password {
            Some(pw) => format!("redis://:{pw}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// `rediss://[:password@]localhost:<tls port>` (the certificate names
    /// `localhost`).
    pub fn tls_url(&self) -> Option<String> {
        let port = self.tls_port?;
        Some(match &self.password {
            Some(pw) => format!("rediss://:{pw}@localhost:{port}"),
            None => format!("rediss://localhost:{port}"),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Kills the server (SIGKILL: no goodbye to clients) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts it again on the same ports, empty (nothing is persisted).
    pub async fn restart(&mut self) {
        self.kill();
        let mut last = String::new();
        for _ in 0..50 {
            match self.spawn_and_wait().await {
                Ok(()) => return,
                // The port may still be held for a moment.
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("redis-server did not restart on port {}: {last}", self.port);
    }

    /// One command on the plain port (after AUTH when there is a
    /// password); the reply as text: a status or bulk string, an integer,
    /// an array's items joined by spaces, or `Err` with an error reply.
    pub async fn command(&self, args: &[&str]) -> Result<String, String> {
        let stream = TcpStream::connect(self.addr())
            .await
            .map_err(|e| e.to_string())?;
        let mut conn = BufReader::new(stream);
        if let Some(pw) = &self.password {
            send(&mut conn, &["AUTH", pw]).await?;
            read_reply(&mut conn).await?;
        }
        send(&mut conn, args).await?;
        read_reply(&mut conn).await
    }

    /// Calls of the limiter's script so far (`EVALSHA` and `EVAL`, from
    /// `INFO commandstats`).
    pub async fn script_calls(&self) -> u64 {
        let info = self
            .command(&["INFO", "commandstats"])
            .await
            .expect("INFO commandstats");
        info.lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| {
                l.split([':', ','])
                    .find_map(|kv| kv.strip_prefix("calls="))
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn send(conn: &mut BufReader<TcpStream>, args: &[&str]) -> Result<(), String> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend(format!("${}\r\n", a.len()).bytes());
        out.extend(a.bytes());
        out.extend(b"\r\n");
    }
    conn.get_mut()
        .write_all(&out)
        .await
        .map_err(|e| e.to_string())
}

async fn read_reply(conn: &mut BufReader<TcpStream>) -> Result<String, String> {
    let mut line = String::new();
    conn.read_line(&mut line).await.map_err(|e| e.to_string())?;
    let line = line.trim_end();
    let (kind, rest) = line.split_at(line.len().min(1));
    match kind {
        "+" | ":" => Ok(rest.to_owned()),
        "-" => Err(rest.to_owned()),
        "$" => {
            let len: i64 = rest.parse().map_err(|_| format!("bad reply {line:?}"))?;
            if len < 0 {
                return Ok(String::new());
            }
            let mut buf = vec![0; usize::try_from(len).unwrap_or(0) + 2];
            conn.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            buf.truncate(buf.len() - 2);
            String::from_utf8(buf).map_err(|e| e.to_string())
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|_| format!("bad reply {line:?}"))?;
            let mut items = Vec::new();
            for _ in 0..n.max(0) {
                items.push(Box::pin(read_reply(conn)).await?);
            }
            Ok(items.join(" "))
        }
        _ => Err(format!("unexpected reply {line:?}")),
    }
}
