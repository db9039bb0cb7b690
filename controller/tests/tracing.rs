//! OpenTelemetry traces end to end: the real `portico` binary exports to a
//! real OpenTelemetry Collector (built by `make otelcol` from
//! `e2e/tools/otelcol/`), whose file exporter writes what it received; the
//! tests read the spans back from that file.

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http::{Method, StatusCode};
use serde_json::Value;
use support::*;

/// The collector binary: `PORTICO_OTELCOL`, else where `make otelcol`
/// puts it. Missing, the test fails and says how to build it.
fn otelcol_bin() -> PathBuf {
    let path = std::env::var_os("PORTICO_OTELCOL").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../e2e/tools/bin/otelcol"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: run `make otelcol` (or set PORTICO_OTELCOL)",
        path.display()
    );
    path
}

/// A running collector: OTLP gRPC and HTTP receivers on 127.0.0.1 port 0
/// (it logs the ports it bound), spans written to `spans.json`.
struct Collector {
    child: Child,
    grpc: SocketAddr,
    http: SocketAddr,
    file: PathBuf,
    _dir: tempfile::TempDir,
}

impl Collector {
    fn start() -> Self {
        let bin = otelcol_bin();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("spans.json");
        let config = dir.path().join("config.yaml");
        std::fs::write(
            &config,
            format!(
                r#"
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "127.0.0.1:0"}}
      http: {{endpoint: "127.0.0.1:0"}}
exporters:
  file: {{path: "{}", flush_interval: 50ms}}
service:
  telemetry: {{metrics: {{level: none}}}}
  pipelines:
    traces: {{receivers: [otlp], exporters: [file]}}
"#,
                file.display()
            ),
        )
        .unwrap();
        let mut child = Command::new(bin)
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("otelcol starts");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Read for as long as it runs, so it never blocks on its logs.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut grpc, mut http) = (None, None);
        loop {
            let line = rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                .expect("otelcol logs that it is ready");
            let endpoint = || {
                let at = line.find(r#""endpoint": ""#)? + r#""endpoint": ""#.len();
                line[at..].split('"').next()?.parse::<SocketAddr>().ok()
            };
            if line.contains("Starting GRPC server") {
                grpc = endpoint();
            } else if line.contains("Starting HTTP server") {
                http = endpoint();
            } else if line.contains("Everything is ready") {
                break;
            }
        }
        Self {
            child,
            grpc: grpc.expect("the gRPC receiver's address"),
            http: http.expect("the HTTP receiver's address"),
            file,
            _dir: dir,
        }
    }

    /// Every span received so far.
    fn spans(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.file).unwrap_or_default();
        let mut out = Vec::new();
        // One ExportTraceServiceRequest (OTLP JSON) per line.
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                let service = attr(&rs["resource"], "service.name");
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    for span in ss["spans"].as_array().into_iter().flatten() {
                        let mut span = span.clone();
                        span["service"] = service.clone().into();
                        out.push(span);
                    }
                }
            }
        }
        out
    }

    /// Waits for the span whose `url.path` is `path`.
    async fn span_for(&self, path: &str) -> Value {
        eventually(&format!("a span for {path}"), || {
            let found = self
                .spans()
                .into_iter()
                .find(|s| attr(s, "url.path").as_deref() == Some(path));
            async move { found }
        })
        .await
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An OTLP JSON attribute's value as text (ints are strings there too).
fn attr(holder: &Value, key: &str) -> Option<String> {
    let kv = holder["attributes"]
        .as_array()?
        .iter()
        .find(|kv| kv["key"] == key)?;
    let v = &kv["value"];
    v["stringValue"]
        .as_str()
        .or(v["intValue"].as_str())
        .map(str::to_owned)
        .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
}

/// An upstream that answers with the `traceparent` it received, or 503 on
/// `/fail`.
async fn echo_traceparent() -> SocketAddr {
    serve(|req| {
        let tp = req
            .headers()
            .get("traceparent")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_default();
        let status = if req.uri().path() == "/fail" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        (status, tp)
    })
    .await
}

fn manifests_for(upstream: SocketAddr) -> String {
    let mut m = DEFAULT_INGRESS_CLASS.to_owned();
    m.push_str(service_at("app", upstream).trim_start_matches("\n---"));
    m.push_str(&ingress_for(
        "traced",
        "app",
        r#"nginx.ingress.kubernetes.io/opentelemetry-operation-name: checkout"#,
    ));
    m.push_str(&ingress_for(
        "untrusted",
        "app",
        r#"nginx.ingress.kubernetes.io/opentelemetry-trust-incoming-span: "false""#,
    ));
    m.push_str(&ingress_for(
        "off",
        "app",
        r#"nginx.ingress.kubernetes.io/enable-opentelemetry: "false""#,
    ));
    m.push_str(&ingress_for("plain", "app", ""));
    m
}

/// Portico serving [`manifests_for`] an upstream that echoes its
/// `traceparent`, tracing by default to `endpoint`; with the manifests'
/// directory, which must outlive it.
async fn start_portico(endpoint: &str, extra: &[&str]) -> (Portico, SocketAddr, tempfile::TempDir) {
    let upstream = echo_traceparent().await;
    let (portico, dir) = run_portico(&manifests_for(upstream), endpoint, extra).await;
    (portico, upstream, dir)
}

/// Portico serving `manifests`, tracing every Ingress to `endpoint` (as
/// service `edge`) unless it says otherwise.
async fn run_portico(
    manifests: &str,
    endpoint: &str,
    extra: &[&str],
) -> (Portico, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.yaml"), manifests).unwrap();
    let mut args = vec![
        "--enable-opentelemetry",
        "true",
        "--otlp-endpoint",
        endpoint,
        "--otel-service-name",
        "edge",
    ];
    args.extend_from_slice(extra);
    let portico = Portico::start_with(dir.path(), &args);
    portico.ready().await;
    (portico, dir)
}

/// A request carrying the client's own span ([`TRACE_ID`], [`PARENT_ID`]);
/// what the upstream received as `traceparent`.
async fn send_with_parent(portico: &Portico, host: &str, path: &str) -> String {
    send(portico, host, path, &[("traceparent", &incoming())]).await
}

fn incoming() -> String {
    format!("00-{TRACE_ID}-{PARENT_ID}-01")
}

async fn send(portico: &Portico, host: &str, path: &str, headers: &[(&str, &str)]) -> String {
    let (status, _, body) = request(portico.http, Method::GET, host, path, headers)
        .await
        .expect("an answer");
    assert!(
        status == StatusCode::OK || path == "/fail",
        "{host}{path}: {status}"
    );
    body
}

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_collector_over_grpc() {
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.grpc);
    let (portico, upstream, _dir) =
        start_portico(&endpoint, &["--otel-schedule-delay", "50ms"]).await;

    // A trusted incoming span is the server span's parent; the upstream
    // gets the server span's context in the same trace.
    let incoming = incoming();
    let sent_up = send(
        &portico,
        "traced.test",
        "/checkout",
        &[("traceparent", &incoming), ("user-agent", "probe/1")],
    )
    .await;
    let span = collector.span_for("/checkout").await;
    assert_eq!(span["name"], "checkout");
    assert_eq!(span["kind"], 2, "SERVER: {span}");
    assert_eq!(span["traceId"], TRACE_ID);
    assert_eq!(span["parentSpanId"], PARENT_ID);
    assert_eq!(span["service"], "edge");
    assert_eq!(
        sent_up,
        format!("00-{TRACE_ID}-{}-01", span["spanId"].as_str().unwrap()),
        "the upstream continues the server span"
    );
    assert_eq!(attr(&span, "http.request.method").as_deref(), Some("GET"));
    assert_eq!(
        attr(&span, "server.address").as_deref(),
        Some("traced.test")
    );
    assert_eq!(
        attr(&span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(&span, "client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        attr(&span, "user_agent.original").as_deref(),
        Some("probe/1")
    );
    assert_eq!(attr(&span, "portico.upstream"), Some(upstream.to_string()));
    assert!(
        attr(&span, "portico.route").is_some_and(|r| r.contains("traced")),
        "{span}"
    );

    // Untrusted: a new root, and the client's header replaced upstream.
    let sent_up = send_with_parent(&portico, "untrusted.test", "/untrusted").await;
    let span = collector.span_for("/untrusted").await;
    assert_eq!(span["name"], "HTTP GET");
    assert_ne!(span["traceId"], TRACE_ID);
    assert!(
        span["parentSpanId"].as_str().unwrap_or("").is_empty(),
        "{span}"
    );
    let trace_id = span["traceId"].as_str().unwrap();
    assert!(sent_up.starts_with(&format!("00-{trace_id}-")), "{sent_up}");

    // No incoming span: a new trace, propagated all the same.
    let sent_up = send(&portico, "plain.test", "/plain", &[]).await;
    let span = collector.span_for("/plain").await;
    assert_eq!(
        sent_up,
        format!(
            "00-{}-{}-01",
            span["traceId"].as_str().unwrap(),
            span["spanId"].as_str().unwrap()
        )
    );

    // An upstream 5xx marks the span as an error.
    send(&portico, "plain.test", "/fail", &[]).await;
    let span = collector.span_for("/fail").await;
    assert_eq!(span["status"]["code"], 2, "ERROR: {span}");
    assert_eq!(
        attr(&span, "http.response.status_code").as_deref(),
        Some("503")
    );

    // Tracing off for one Ingress: no span, and the client's header goes
    // upstream untouched. The later request's span shows the earlier one
    // had its chance to be exported.
    let sent_up = send_with_parent(&portico, "off.test", "/off").await;
    assert_eq!(sent_up, incoming);
    send(&portico, "plain.test", "/after-off", &[]).await;
    collector.span_for("/after-off").await;
    assert!(
        !collector
            .spans()
            .iter()
            .any(|s| attr(s, "url.path").as_deref() == Some("/off")),
        "a rule with tracing off made a span"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_a_real_collector_over_http_protobuf() {
    let collector = Collector::start();
    let endpoint = format!("http://{}", collector.http);
    let (portico, _, _dir) = start_portico(
        &endpoint,
        &["--otlp-protocol", "http", "--otel-schedule-delay", "50ms"],
    )
    .await;
    let sent_up = send_with_parent(&portico, "traced.test", "/over-http").await;
    let span = collector.span_for("/over-http").await;
    assert_eq!(span["name"], "checkout");
    assert_eq!(span["traceId"], TRACE_ID);
    assert_eq!(span["parentSpanId"], PARENT_ID);
    assert!(sent_up.starts_with(&format!("00-{TRACE_ID}-")), "{sent_up}");
}

/// A collector that accepts connections and never answers, then none at
/// all: every request is still served, and the spans that cannot go are
/// dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_down_neither_fails_nor_stalls_requests() {
    // Connections complete in its backlog; nothing is ever read.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let endpoint = format!("http://{}", black_hole.local_addr().unwrap());
    let (portico, _, _dir) = start_portico(
        &endpoint,
        &[
            "--otel-schedule-delay",
            "10ms",
            "--otel-max-queue-size",
            "4",
        ],
    )
    .await;
    for i in 0..40 {
        // `request` gives up after 5 s: a stalled request fails here.
        let sent_up = send(&portico, "plain.test", &format!("/r{i}"), &[]).await;
        assert!(sent_up.starts_with("00-"), "{sent_up}");
    }
    let admin = portico.admin;
    eventually("spans counted as dropped", || async move {
        let (_, metrics) = get(admin, "x", "/metrics").await?;
        metrics
            .lines()
            .find(|l| l.starts_with("portico_trace_spans_dropped_total{reason=\"queue_full\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .filter(|n| *n > 0)
    })
    .await;
    drop(black_hole);
}

/// A retry is an event on the request's one span: the endpoint that failed
/// and why; the span ends with the endpoint that answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_an_event_on_the_span() {
    let collector = Collector::start();
    let failing = serve(|_| (StatusCode::SERVICE_UNAVAILABLE, String::new())).await;
    let healthy = echo_traceparent().await;
    let mut m = DEFAULT_INGRESS_CLASS.to_owned();
    m.push_str("apiVersion: v1\nkind: Service\nmetadata: {name: pair}\nspec: {ports: [{name: http, port: 80}]}\n");
    m.push_str(&endpoint_slice("pair", 1, failing));
    m.push_str(&endpoint_slice("pair", 2, healthy));
    m.push_str(&ingress_for(
        "retried",
        "pair",
        r#"nginx.ingress.kubernetes.io/proxy-next-upstream: "error http_503""#,
    ));
    let endpoint = format!("http://{}", collector.grpc);
    let (portico, _dir) = run_portico(&m, &endpoint, &["--otel-schedule-delay", "50ms"]).await;

    // Round robin over two endpoints: one of two requests meets the
    // failing one first.
    for path in ["/retry-0", "/retry-1"] {
        send(&portico, "retried.test", path, &[]).await;
    }
    let (a, b) = (
        collector.span_for("/retry-0").await,
        collector.span_for("/retry-1").await,
    );
    let retried: Vec<&Value> = [&a, &b]
        .into_iter()
        .filter(|s| s["events"].as_array().is_some_and(|e| !e.is_empty()))
        .collect();
    assert_eq!(retried.len(), 1, "{a}\n{b}");
    let span = retried[0];
    let event = &span["events"][0];
    assert_eq!(event["name"], "retry");
    assert_eq!(attr(event, "portico.upstream"), Some(failing.to_string()));
    assert_eq!(
        attr(event, "portico.retry.reason").as_deref(),
        Some("status")
    );
    assert_eq!(
        attr(span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(attr(span, "portico.upstream"), Some(healthy.to_string()));
}

/// A gRPC call's span has the call's status, from its trailers or a
/// trailers-only answer, and a server-side failure marks it an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_records_its_status() {
    let collector = Collector::start();
    let echo = portico_testkit::grpc_upstream().await;
    let mut m = DEFAULT_INGRESS_CLASS.to_owned();
    m.push_str(service_at("echo", echo).trim_start_matches("\n---"));
    m.push_str(&ingress_for(
        "grpc",
        "echo",
        r#"nginx.ingress.kubernetes.io/backend-protocol: GRPC"#,
    ));
    let endpoint = format!("http://{}", collector.grpc);
    let (portico, _dir) = run_portico(&m, &endpoint, &["--otel-schedule-delay", "50ms"]).await;

    let mut client = echo_client(portico.http, "grpc.test").await;
    let failed = client
        .unary(portico_testkit::EchoRequest {
            message: "down".into(),
            code: 14,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(failed.code(), tonic::Code::Unavailable);
    let span = collector.span_for("/portico.test.Echo/Unary").await;
    assert_eq!(attr(&span, "rpc.grpc.status_code").as_deref(), Some("14"));
    assert_eq!(
        attr(&span, "http.response.status_code").as_deref(),
        Some("200")
    );
    assert_eq!(span["status"]["code"], 2, "ERROR: {span}");
}
