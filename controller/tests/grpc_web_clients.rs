//! The gRPC-Web bridge with real clients nobody here wrote: connect-node's
//! gRPC-Web transport (HTTP/1.1 and h2c) and protobuf-ts's fetch transport
//! (text and binary), pinned in `e2e/grpc-web/package-lock.json`, call a
//! real tonic upstream through the real `portico` binary. The Node script
//! `e2e/grpc-web/client.mjs` reports what each client saw as JSON lines;
//! the verdicts are here.
//!
//! Needs `make grpc-web-clients` (npm ci and code generation); fails, never
//! skips, when that has not been run.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

mod support;

use support::{DEFAULT_INGRESS_CLASS, Portico};

const ORIGIN: &str = "https://app.example.com";
const CLIENTS: [&str; 4] = [
    "connect-h1",
    "connect-h2",
    "protobuf-ts-text",
    "protobuf-ts-binary",
];

/// What `client.mjs` printed, by (client, case).
type Lines = BTreeMap<(String, String), Value>;

/// The Echo service on `/portico.test.Echo` and a dead backend on `/down`,
/// both bridged, on any host.
fn manifests(echo: SocketAddr, dead: SocketAddr) -> String {
    let service = |name: &str, addr: SocketAddr| {
        format!(
            r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec:
  ports: [{{name: grpc, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: grpc, port: {port}}}]
endpoints: [{{addresses: ["{ip}"]}}]
"#,
            port = addr.port(),
            ip = addr.ip(),
        )
    };
    format!(
        r#"
{DEFAULT_INGRESS_CLASS}apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: echo
  annotations:
    portico.dev/grpc-web: "true"
    portico.dev/grpc-web-allow-origins: "{ORIGIN}"
    portico.dev/grpc-web-expose-headers: "x-echo"
spec:
  rules:
    - http:
        paths:
          - {{path: /portico.test.Echo, pathType: Prefix, backend: {{service: {{name: echo, port: {{number: 80}}}}}}}}
          - {{path: /down, pathType: Prefix, backend: {{service: {{name: down, port: {{number: 80}}}}}}}}
{}{}"#,
        service("echo", echo),
        service("down", dead),
    )
}

/// `e2e/grpc-web`, checked for what `make grpc-web-clients` produces.
fn client_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/grpc-web");
    for needed in [
        "node_modules/@connectrpc/connect-node",
        "node_modules/@protobuf-ts/grpcweb-transport",
        "gen/es/portico/test/echo_pb.js",
        "gen/protobuf-ts/portico/test/echo.client.js",
    ] {
        assert!(
            dir.join(needed).exists(),
            "{} is missing: run `make grpc-web-clients` (npm ci and code generation in e2e/grpc-web)",
            dir.join(needed).display()
        );
    }
    dir
}

/// Runs `client.mjs` to the end (at most 3 minutes) and returns its lines
/// keyed by (client, case).
fn run_clients(dir: &Path, args: &[String]) -> Lines {
    let node = std::env::var("PORTICO_NODE").unwrap_or_else(|_| "node".to_owned());
    let mut child = Command::new(&node)
        .arg(dir.join("client.mjs"))
        .args(args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{node}: {e}; run `make grpc-web-clients` to install Node"));
    let stdout = child.stdout.take().expect("stdout");
    let stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap_or_default());
    let err = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(180);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for node") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("client.mjs still running after 3 minutes");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(status.success(), "client.mjs: {status}\n{err}\n{out}");
    // Shown with --nocapture, or when the test fails.
    eprintln!("{out}{err}");
    out.lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("client.mjs printed {line:?}: {e}"));
            let key = (
                v["client"].as_str().unwrap().to_owned(),
                v["case"].as_str().unwrap().to_owned(),
            );
            (key, v)
        })
        .collect()
}

/// One finding per broken expectation, so a run shows all of them.
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, what: &str, line: &Value) {
        if !ok {
            self.0.push(format!("{what}: {line}"));
        }
    }
}

fn replies(v: &Value) -> &[Value] {
    v["replies"].as_array().map_or(&[], Vec::as_slice)
}

fn arrivals(v: &Value) -> Vec<f64> {
    v["arrivals_ms"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default()
}

/// Percent-decodes a grpc-message as the gRPC spec has it (UTF-8, then
/// `%XX`); invalid escapes stay as they are.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The line for `client` and `case`; a missing one fails every check on it.
fn line(lines: &Lines, client: &str, case: &str) -> Value {
    lines
        .get(&(client.to_owned(), case.to_owned()))
        .cloned()
        .unwrap_or_else(|| Value::String(format!("no line for {client} {case}")))
}

fn judge_client(f: &mut Findings, client: &str, lines: &Lines) {
    let get = |case: &str| line(lines, client, case);
    let what = |case: &str, expect: &str| format!("{client} {case}: {expect}");
    // protobuf-ts hands grpc-message over as it came on the wire,
    // percent-encoded (timostamm/protobuf-ts#83); connect decodes it.
    let message = |v: &Value| {
        let m = v["message"].as_str().unwrap_or_default();
        if client.starts_with("protobuf-ts") {
            percent_decode(m)
        } else {
            m.to_owned()
        }
    };

    let v = get("unary");
    f.check(v["code"] == 0, &what("unary", "OK"), &v);
    f.check(
        replies(&v)
            .first()
            .is_some_and(|r| r["message"] == "hello portico"),
        &what("unary", "the echoed message"),
        &v,
    );
    f.check(
        v["headers"]["x-echo"] == "hello portico",
        &what("unary", "x-echo response metadata"),
        &v,
    );

    // Every status, trailers-only, with a grpc-message that needs
    // percent-encoding.
    for code in 1..=16 {
        let case = format!("status-{code}");
        let v = get(&case);
        f.check(v["code"] == code, &what(&case, &format!("code {code}")), &v);
        f.check(
            message(&v) == format!("status {code}: ünïcödé, 100% & more"),
            &what(&case, "the grpc-message, decoded"),
            &v,
        );
    }

    let v = get("stream-20");
    let indices: Vec<u64> = replies(&v)
        .iter()
        .filter_map(|r| r["index"].as_u64())
        .collect();
    f.check(v["code"] == 0, &what("stream-20", "OK"), &v);
    f.check(
        indices == (0..20).collect::<Vec<u64>>(),
        &what("stream-20", "20 replies in order"),
        &v,
    );

    let v = get("stream-error-after-2");
    f.check(
        replies(&v).len() == 2,
        &what("stream-error-after-2", "2 replies"),
        &v,
    );
    f.check(
        v["code"] == 9 && message(&v) == "stream failed after two",
        &what("stream-error-after-2", "then FAILED_PRECONDITION"),
        &v,
    );

    let v = get("deadline-exceeded");
    f.check(
        v["code"] == 4,
        &what("deadline-exceeded", "DEADLINE_EXCEEDED"),
        &v,
    );

    let v = get("reply-4mib");
    f.check(v["code"] == 0, &what("reply-4mib", "OK"), &v);
    f.check(
        replies(&v)
            .first()
            .is_some_and(|r| r["payload_len"] == 4 * 1024 * 1024),
        &what("reply-4mib", "a 4 MiB payload"),
        &v,
    );

    let v = get("backend-down");
    f.check(v["code"] == 14, &what("backend-down", "UNAVAILABLE"), &v);

    // 5 replies 200 ms apart: each must reach the client as it is sent, not
    // when the stream ends (over HTTP/1.1, three of the four clients: Node's
    // fetch speaks HTTP/1.1). Only the spacing is asserted (first to last
    // covers 800 ms of server delays), never wall-clock totals.
    let v = get("slow-stream");
    let at = arrivals(&v);
    let end = v["end_ms"].as_f64().unwrap_or(0.0);
    f.check(
        v["code"] == 0 && at.len() == 5,
        &what("slow-stream", "5 replies then OK"),
        &v,
    );
    // Arrival order only: that each message arrives while the stream is
    // still open is proven without clocks in dataplane/tests/grpc_web.rs
    // (`a_long_stream_over_http1_delivers_each_message_as_it_is_sent`, whose
    // upstream sends the next message only once the client has the last).
    f.check(
        at.len() == 5 && at.windows(2).all(|w| w[0] <= w[1]) && at[4] <= end,
        &what("slow-stream", "the replies arrive in order, before the end"),
        &v,
    );
}

#[test]
fn real_grpc_web_clients_through_the_binary() {
    let dir = client_dir();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let echo = rt.block_on(portico_testkit::grpc_upstream());
    // A port that was just free: nothing listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let manifests_dir = tempfile::tempdir().unwrap();
    std::fs::write(
        manifests_dir.path().join("echo.yaml"),
        manifests(echo, dead),
    )
    .unwrap();
    let portico = Portico::start(manifests_dir.path());
    rt.block_on(portico.ready());

    let base = format!("http://{}", portico.http);
    let lines = run_clients(
        &dir,
        &[
            "--base".into(),
            base.clone(),
            "--down".into(),
            format!("{base}/down"),
            "--origin".into(),
            ORIGIN.into(),
        ],
    );

    let mut f = Findings::default();
    for client in CLIENTS {
        judge_client(&mut f, client, &lines);
    }

    let allowed = &line(&lines, "fetch", "cors-allowed");
    let h = &allowed["headers"];
    f.check(
        allowed["status"]
            .as_u64()
            .is_some_and(|s| (200..300).contains(&s)),
        "preflight from the allowed origin: 2xx",
        allowed,
    );
    f.check(
        h["access-control-allow-origin"] == ORIGIN,
        "preflight from the allowed origin: allowed",
        allowed,
    );
    f.check(
        h["access-control-allow-methods"]
            .as_str()
            .is_some_and(|m| m.contains("POST")),
        "preflight: POST allowed",
        allowed,
    );
    f.check(
        h["access-control-allow-headers"].as_str().is_some_and(|m| {
            ["content-type", "x-grpc-web", "x-user-agent", "grpc-timeout"]
                .iter()
                .all(|want| m.to_ascii_lowercase().contains(want))
        }),
        "preflight: the gRPC-Web request headers allowed",
        allowed,
    );
    let refused = &line(&lines, "fetch", "cors-disallowed");
    f.check(
        refused["headers"]["access-control-allow-origin"].is_null(),
        "preflight from another origin: not allowed",
        refused,
    );

    assert!(
        f.0.is_empty(),
        "{} broken expectations:\n{}",
        f.0.len(),
        f.0.join("\n")
    );
    drop(rt);
}
