//! Metrics and the access log.
//!
//! The request path only touches atomics: per-route counters are resolved
//! from their label families when a table is built, the latency histogram is
//! a fixed array of atomic buckets, and each request formats its access-log
//! line into a recycled buffer that a bounded queue takes to a writer thread.
//! When the queue is full the line is dropped and counted; a request never
//! waits for the log.

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crossbeam_queue::ArrayQueue;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::request::forwarded::ClientAddr;
use crate::request::head::Rejection;

/// Label used for requests that matched no route.
pub const NO_ROUTE: &str = "none";

/// Upper bounds (seconds) of the request duration histogram.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Every metric the dataplane exports, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabel, AtomicHistogram, fn() -> AtomicHistogram>,
    pub upstream_connect_errors: Counter,
    pub open_connections: Gauge,
    pub table_generation: Gauge,
    pub table_last_swap: Gauge<f64, AtomicU64>,
    pub table_rejected_rules: Gauge,
    pub access_log_dropped: Counter,
    /// Resolved at start from a fixed set of reasons, so counting a
    /// handshake takes no lock.
    tls_handshakes: HashMap<(bool, &'static str), Counter>,
    /// Handshakes answered with the default certificate (no SNI, or a name
    /// no certificate covers).
    pub tls_default_certificate: Counter,
    /// `notAfter` of every served certificate, by its name.
    pub tls_cert_not_after: Family<CertLabels, Gauge>,
    /// `[protocol][code]`, the last code slot for calls that ended without
    /// a status: resolved at start so counting takes no lock.
    grpc_calls: Vec<Vec<Counter>>,
    /// By [`Rejection`], resolved at start so counting takes no lock.
    request_rejections: Vec<Counter>,
    /// PROXY protocol headers read; refusals by the reasons of
    /// [`crate::listen::proxy_protocol::ProxyHeaderError::REASONS`], in order.
    proxy_protocol_ok: Counter,
    proxy_protocol_refused: Vec<Counter>,
    /// Basic-auth checks by result, and those waiting for a hash.
    pub basic_auth: crate::filter::basic_auth::AuthCounters,
}

/// How a gRPC call reached the proxy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GrpcProtocol {
    Grpc = 0,
    GrpcWeb = 1,
    GrpcWebText = 2,
}

impl GrpcProtocol {
    const ALL: [GrpcProtocol; 3] = [
        GrpcProtocol::Grpc,
        GrpcProtocol::GrpcWeb,
        GrpcProtocol::GrpcWebText,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrpcProtocol::Grpc => "grpc",
            GrpcProtocol::GrpcWeb => "grpc-web",
            GrpcProtocol::GrpcWebText => "grpc-web-text",
        }
    }
}

/// gRPC status names as metric labels, by code; the last is "no status".
const GRPC_CODES: [&str; 18] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
    "NONE",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct GrpcLabels {
    protocol: &'static str,
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct ResultLabels {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RejectionLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct HandshakeLabels {
    result: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct CertLabels {
    /// `namespace/name` of the Secret, or `default` for the generated one.
    pub certificate: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
struct RequestLabels {
    route: String,
    status_class: &'static str,
}

/// Request counters and the latency histogram of one route, resolved when
/// the table is built so that recording is a few atomic adds.
#[derive(Debug)]
pub struct RouteStats {
    by_class: [Counter; 5],
    duration: AtomicHistogram,
}

// === impl Metrics ===

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("portico");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests served, by route and status class",
            requests.clone(),
        );
        let request_duration: Family<RouteLabel, AtomicHistogram, fn() -> AtomicHistogram> =
            Family::new_with_constructor(|| AtomicHistogram::new(&DURATION_BUCKETS));
        registry.register(
            "request_duration_seconds",
            "Time from request head received to response body finished, by route",
            request_duration.clone(),
        );
        let upstream_connect_errors = Counter::default();
        registry.register(
            "upstream_connect_errors",
            "Failed or timed-out connection attempts to upstream endpoints",
            upstream_connect_errors.clone(),
        );
        let open_connections = Gauge::default();
        registry.register(
            "open_connections",
            "Client connections currently open on the proxy listener",
            open_connections.clone(),
        );
        let table_generation = Gauge::default();
        registry.register(
            "route_table_generation",
            "Generation of the live routing table (increments on every publish)",
            table_generation.clone(),
        );
        let table_last_swap = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "route_table_last_swap_timestamp_seconds",
            "Unix time at which the live routing table was published",
            table_last_swap.clone(),
        );
        let table_rejected_rules = Gauge::default();
        registry.register(
            "route_table_rejected_rules",
            "Rules left out of the live table because they could not be compiled",
            table_rejected_rules.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access-log lines dropped because the log queue was full",
            access_log_dropped.clone(),
        );
        let handshakes = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes on the HTTPS listener, by result and failure reason",
            handshakes.clone(),
        );
        let mut tls_handshakes = HashMap::new();
        tls_handshakes.insert(
            (true, "none"),
            handshakes
                .get_or_create(&HandshakeLabels {
                    result: "ok",
                    reason: "none",
                })
                .clone(),
        );
        for reason in crate::listen::tls::HANDSHAKE_FAILURES {
            let c = handshakes
                .get_or_create(&HandshakeLabels {
                    result: "error",
                    reason,
                })
                .clone();
            tls_handshakes.insert((false, reason), c);
        }
        let tls_default_certificate = Counter::default();
        registry.register(
            "tls_default_certificate",
            "TLS handshakes served the default certificate (no SNI, or an unknown name)",
            tls_default_certificate.clone(),
        );
        let tls_cert_not_after = Family::<CertLabels, Gauge>::default();
        registry.register(
            "tls_certificate_not_after_timestamp_seconds",
            "Expiry (notAfter, Unix seconds) of each certificate served",
            tls_cert_not_after.clone(),
        );
        let grpc = Family::<GrpcLabels, Counter>::default();
        registry.register(
            "grpc_calls",
            "gRPC calls by client protocol (grpc, grpc-web, grpc-web-text) and final status (NONE: the call ended without one, e.g. the client went away)",
            grpc.clone(),
        );
        let grpc_calls = GrpcProtocol::ALL
            .iter()
            .map(|p| {
                GRPC_CODES
                    .iter()
                    .map(|code| {
                        grpc.get_or_create(&GrpcLabels {
                            protocol: p.as_str(),
                            code,
                        })
                        .clone()
                    })
                    .collect()
            })
            .collect();
        let rejections = Family::<RejectionLabels, Counter>::default();
        registry.register(
            "request_rejections",
            "Requests refused before routing for their head or path, by reason (head_too_large and malformed: answered by the HTTP/1 parser itself)",
            rejections.clone(),
        );
        let request_rejections = Rejection::ALL
            .iter()
            .map(|r| {
                rejections
                    .get_or_create(&RejectionLabels { reason: r.as_str() })
                    .clone()
            })
            .collect();
        // The same labels as TLS handshakes: result, and a bounded reason.
        let proxy_protocol = Family::<HandshakeLabels, Counter>::default();
        registry.register(
            "proxy_protocol_headers",
            "PROXY protocol headers on the proxy listeners (--proxy-protocol), by result and refusal reason; a refused one closes its connection",
            proxy_protocol.clone(),
        );
        let proxy_protocol_ok = proxy_protocol
            .get_or_create(&HandshakeLabels {
                result: "ok",
                reason: "none",
            })
            .clone();
        let proxy_protocol_refused = crate::listen::proxy_protocol::ProxyHeaderError::REASONS
            .iter()
            .map(|reason| {
                proxy_protocol
                    .get_or_create(&HandshakeLabels {
                        result: "error",
                        reason,
                    })
                    .clone()
            })
            .collect();
        let checks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "basic_auth_checks",
            "Basic-authentication checks by result: cached (a remembered credential), verified (a hash checked), refused (wrong or unknown credentials), challenged (none sent), overloaded (answered 503: too many checks waiting)",
            checks.clone(),
        );
        let result = |result| checks.get_or_create(&ResultLabels { result }).clone();
        let basic_auth = crate::filter::basic_auth::AuthCounters {
            cached: result("cached"),
            verified: result("verified"),
            refused: result("refused"),
            challenged: result("challenged"),
            overloaded: result("overloaded"),
            pending: Gauge::default(),
        };
        registry.register(
            "basic_auth_pending",
            "Basic-authentication password checks admitted and not finished (running or waiting for a slot)",
            basic_auth.pending.clone(),
        );
        Self {
            basic_auth,
            request_rejections,
            grpc_calls,
            proxy_protocol_ok,
            proxy_protocol_refused,
            registry,
            requests,
            request_duration,
            upstream_connect_errors,
            open_connections,
            table_generation,
            table_last_swap,
            table_rejected_rules,
            access_log_dropped,
            tls_handshakes,
            tls_default_certificate,
            tls_cert_not_after,
        }
    }

    /// Counts a finished gRPC call; a status outside the known codes counts
    /// as UNKNOWN, as gRPC clients read it.
    pub fn grpc_call(&self, protocol: GrpcProtocol, code: Option<u8>) {
        let slot = match code {
            None => GRPC_CODES.len() - 1,
            Some(c) if usize::from(c) < GRPC_CODES.len() - 1 => usize::from(c),
            Some(_) => 2,
        };
        if let Some(c) = self
            .grpc_calls
            .get(protocol as usize)
            .and_then(|codes| codes.get(slot))
        {
            c.inc();
        }
    }

    /// Counts a refused request; returns how many of that reason came
    /// before it.
    pub fn request_rejected(&self, reason: Rejection) -> u64 {
        self.request_rejections
            .get(reason as usize)
            .map_or(0, |c| c.inc())
    }

    /// Counts a handshake; `reason` is `none` on success, else a bounded
    /// label from a fixed set.
    pub fn tls_handshake(&self, ok: bool, reason: &'static str) {
        let key = if ok { (true, "none") } else { (false, reason) };
        if let Some(c) = self
            .tls_handshakes
            .get(&key)
            .or_else(|| self.tls_handshakes.get(&(false, "other")))
        {
            c.inc();
        }
    }

    /// Counts a PROXY protocol header read (`None`) or refused for `reason`
    /// (one of [`crate::listen::proxy_protocol::ProxyHeaderError::REASONS`]).
    pub fn proxy_protocol_header(&self, refused: Option<&'static str>) {
        let Some(reason) = refused else {
            self.proxy_protocol_ok.inc();
            return;
        };
        let slot = crate::listen::proxy_protocol::ProxyHeaderError::REASONS
            .iter()
            .position(|r| *r == reason);
        if let Some(c) = slot.and_then(|i| self.proxy_protocol_refused.get(i)) {
            c.inc();
        }
    }

    /// Resolves the counters of one route. Called off the request path.
    pub fn route_stats(&self, route: &str) -> Arc<RouteStats> {
        let by_class = ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|status_class| {
            self.requests
                .get_or_create(&RequestLabels {
                    route: route.to_owned(),
                    status_class,
                })
                .clone()
        });
        let duration = self
            .request_duration
            .get_or_create(&RouteLabel {
                route: route.to_owned(),
            })
            .clone();
        Arc::new(RouteStats { by_class, duration })
    }

    /// Upstream health, load and retries, read from the live table at
    /// scrape time, and the health-check duration histogram.
    pub(crate) fn register_upstreams(
        &mut self,
        table: Arc<arc_swap::ArcSwap<crate::route::table::RouteTable>>,
        health: Arc<crate::upstream::health::HealthShared>,
    ) {
        self.registry.register(
            "upstream_health_check_duration_seconds",
            "Time active health-check probes took",
            health.check_duration.clone(),
        );
        self.registry.register_collector(Box::new(
            crate::upstream::health::metrics::UpstreamCollector { table, health },
        ));
    }

    /// Prometheus text exposition.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::with_capacity(4096);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

// === impl RouteStats ===

impl RouteStats {
    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        let class = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[class].inc();
        self.duration.observe(elapsed);
    }
}

/// A Prometheus histogram made of atomics, so observing takes no lock
/// (prometheus-client's own histogram takes a mutex per observation).
/// Clones share the same buckets.
#[derive(Clone, Debug)]
pub struct AtomicHistogram {
    inner: Arc<HistogramBuckets>,
}

#[derive(Debug)]
struct HistogramBuckets {
    bounds: Vec<f64>,
    /// Non-cumulative count per bucket; the last one is `+Inf`.
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
}

// === impl AtomicHistogram ===

impl AtomicHistogram {
    pub fn new(bounds: &[f64]) -> Self {
        Self {
            inner: Arc::new(HistogramBuckets {
                bounds: bounds.to_vec(),
                counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
                sum_micros: AtomicU64::new(0),
            }),
        }
    }

    pub fn observe(&self, d: Duration) {
        let h = &*self.inner;
        let secs = d.as_secs_f64();
        let idx = h
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(h.bounds.len());
        h.counts[idx].fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        h.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder takes per-bucket counts and accumulates them itself.
        let h = &*self.inner;
        let mut count = 0;
        let mut buckets = Vec::with_capacity(h.counts.len());
        for (i, c) in h.counts.iter().enumerate() {
            let n = c.load(Ordering::Relaxed);
            count += n;
            let bound = h.bounds.get(i).copied().unwrap_or(f64::INFINITY);
            buckets.push((bound, n));
        }
        let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// One access-log line, as the request path hands it over.
#[derive(Debug)]
pub struct AccessRecord {
    pub time: SystemTime,
    pub request_id: http::HeaderValue,
    /// `ip:port`, or `ip` alone for an address from `X-Forwarded-For`
    /// without a port.
    pub client_addr: ClientAddr,
    pub method: http::Method,
    pub host: http::HeaderValue,
    /// Only the path is logged: query strings often carry secrets.
    pub uri: http::Uri,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub upstream_addr: Option<SocketAddr>,
    pub route: Arc<str>,
}

impl AccessRecord {
    /// Appends the record as one JSON object and a newline. Written by
    /// hand: this runs once per request, and the fields are few and fixed.
    /// Strings are escaped as JSON requires; bytes that are not UTF-8
    /// become U+FFFD.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"time\":\"");
        write_rfc3339(out, self.time);
        out.extend_from_slice(b"\",\"request_id\":");
        json_str(out, self.request_id.as_bytes());
        out.extend_from_slice(b",\"client_addr\":\"");
        match self.client_addr.port {
            Some(port) => push_addr(out, SocketAddr::new(self.client_addr.ip, port)),
            None => {
                let _ = write!(out, "{}", self.client_addr.ip);
            }
        }
        out.extend_from_slice(b"\",\"method\":");
        json_str(out, self.method.as_str().as_bytes());
        out.extend_from_slice(b",\"host\":");
        json_str(out, self.host.as_bytes());
        out.extend_from_slice(b",\"path\":");
        json_str(out, self.uri.path().as_bytes());
        out.extend_from_slice(b",\"status\":");
        push_int(out, u64::from(self.status), 1);
        out.extend_from_slice(b",\"bytes_in\":");
        push_int(out, self.bytes_in, 1);
        out.extend_from_slice(b",\"bytes_out\":");
        push_int(out, self.bytes_out, 1);
        // Milliseconds with three decimals: microsecond resolution.
        let micros = self.duration.as_micros();
        out.extend_from_slice(b",\"duration_ms\":");
        push_int(out, (micros / 1000) as u64, 1);
        out.push(b'.');
        push_int(out, (micros % 1000) as u64, 3);
        out.extend_from_slice(b",\"upstream_addr\":");
        match self.upstream_addr {
            None => out.extend_from_slice(b"null"),
            Some(a) => {
                out.push(b'"');
                push_addr(out, a);
                out.push(b'"');
            }
        }
        out.extend_from_slice(b",\"route\":");
        json_str(out, self.route.as_bytes());
        out.extend_from_slice(b"}\n");
    }
}

/// `addr` as its `Display` writes it; IPv4 without the formatting
/// machinery, which costs more than the rest of the line.
fn push_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => {
            for (i, octet) in a.ip().octets().into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                push_int(out, u64::from(octet), 1);
            }
            out.push(b':');
            push_int(out, u64::from(a.port()), 1);
        }
        SocketAddr::V6(_) => {
            let _ = write!(out, "{addr}");
        }
    }
}

/// `n` in decimal, zero-padded to at least `width` digits.
fn push_int(out: &mut Vec<u8>, mut n: u64, width: usize) {
    let mut digits = [b'0'; 20];
    let mut i = digits.len();
    while n > 0 || digits.len() - i < width {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    out.extend_from_slice(&digits[i..]);
}

/// A JSON string: quoted, with `"`, `\\` and control characters escaped.
fn json_str(out: &mut Vec<u8>, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    // Checking is much cheaper than the lossy conversion's walk, and almost
    // every value is valid.
    let lossy;
    let text = match std::str::from_utf8(bytes) {
        Ok(_) => bytes,
        Err(_) => {
            lossy = String::from_utf8_lossy(bytes);
            lossy.as_bytes()
        }
    };
    let mut clean = 0;
    for (i, &b) in text.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&text[clean..i]);
        if escape.is_empty() {
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        } else {
            out.extend_from_slice(escape);
        }
        clean = i + 1;
    }
    out.extend_from_slice(&text[clean..]);
    out.push(b'"');
}

/// Where access-log lines go.
pub enum AccessLogSink {
    Stdout,
    Disabled,
    /// Any writer; lines are written by a dedicated thread, never a request.
    Writer(Box<dyn Write + Send>),
}

/// The request side of the access log: a bounded, lossy, lock-free queue of
/// formatted lines.
///
/// The request formats its own line (nginx does the same): a fraction of a
/// microsecond per request, spread evenly, where formatting batches on the
/// writer thread stole the proxy's core in bursts and showed in its p99.
/// Line buffers come back from the writer through `free`, so a steady
/// stream allocates nothing. The writer thread is never woken per line:
/// waking it costs a context switch per request when it shares a core with
/// the proxy. It wakes on a short period instead, and writes what came.
#[derive(Clone)]
pub struct AccessLog {
    queues: Option<Arc<LineQueues>>,
    dropped: Counter,
}

struct LineQueues {
    lines: ArrayQueue<Vec<u8>>,
    free: ArrayQueue<Vec<u8>>,
}

/// How often the writer thread drains the queue. The queue must hold what
/// arrives in one period: 16k lines per 4 ms is 4M requests/s.
const LOG_FLUSH_PERIOD: Duration = Duration::from_millis(4);

/// Line buffers start at this capacity; one that grew past
/// [`LINE_KEEP_CAPACITY`] (a huge host or path) is not kept for reuse.
const LINE_CAPACITY: usize = 384;
const LINE_KEEP_CAPACITY: usize = 4096;

// === impl AccessLog ===

impl AccessLog {
    /// Starts the writer thread (it exits once every `AccessLog` is dropped).
    pub fn start(sink: AccessLogSink, capacity: usize, dropped: Counter) -> std::io::Result<Self> {
        let writer: Box<dyn Write + Send> = match sink {
            AccessLogSink::Disabled => {
                return Ok(Self {
                    queues: None,
                    dropped,
                });
            }
            AccessLogSink::Stdout => Box::new(std::io::stdout()),
            AccessLogSink::Writer(w) => w,
        };
        let queues = Arc::new(LineQueues::new(capacity));
        let reader = Arc::clone(&queues);
        std::thread::Builder::new()
            .name("portico-access-log".into())
            .spawn(move || write_lines(&reader, writer))?;
        Ok(Self {
            queues: Some(queues),
            dropped,
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.queues.is_some()
    }

    /// Never waits: a full queue drops the line and counts it.
    pub fn log(&self, record: &AccessRecord) {
        let Some(q) = &self.queues else { return };
        let mut line = q
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(LINE_CAPACITY));
        record.write_json(&mut line);
        if let Err(line) = q.lines.push(line) {
            self.dropped.inc();
            q.recycle(line);
        }
    }
}

impl LineQueues {
    fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            lines: ArrayQueue::new(capacity),
            // Enough spare buffers for a period's worth at a steady rate;
            // beyond that, a burst allocates and the spares are dropped.
            free: ArrayQueue::new(capacity.min(4096)),
        }
    }

    fn recycle(&self, mut line: Vec<u8>) {
        if line.capacity() <= LINE_KEEP_CAPACITY {
            line.clear();
            let _ = self.free.push(line);
        }
    }
}

fn write_lines(queues: &Arc<LineQueues>, writer: Box<dyn Write + Send>) {
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, writer);
    loop {
        // The last handle gone: write what is left and stop.
        let last_round = Arc::strong_count(queues) == 1;
        let mut wrote = false;
        while let Some(line) = queues.lines.pop() {
            if out.write_all(&line).is_err() {
                return;
            }
            queues.recycle(line);
            wrote = true;
        }
        if wrote && out.flush().is_err() {
            return;
        }
        if last_round {
            return;
        }
        std::thread::sleep(LOG_FLUSH_PERIOD);
    }
}

/// Formats a UTC timestamp with millisecond precision, without a date crate.
pub struct Rfc3339(pub SystemTime);

impl std::fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Vec::with_capacity(24);
        write_rfc3339(&mut out, self.0);
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ`, in UTC.
fn write_rfc3339(out: &mut Vec<u8>, t: SystemTime) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days((secs / 86_400) as i64);
    push_int(out, y.max(0) as u64, 4);
    out.push(b'-');
    push_int(out, u64::from(m), 2);
    out.push(b'-');
    push_int(out, u64::from(day), 2);
    out.push(b'T');
    push_int(out, rem / 3600, 2);
    out.push(b':');
    push_int(out, (rem / 60) % 60, 2);
    out.push(b':');
    push_int(out, rem % 60, 2);
    out.push(b'.');
    push_int(out, u64::from(d.subsec_millis()), 3);
    out.push(b'Z');
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats_known_instants() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_000_000_123);
        assert_eq!(Rfc3339(t).to_string(), "2026-11-18T11:06:40.123Z");
        assert_eq!(Rfc3339(UNIX_EPOCH).to_string(), "1970-01-01T00:00:00.000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(Rfc3339(leap).to_string(), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for a in [
            "0.0.0.0:0",
            "127.0.0.1:1",
            "10.20.255.3:65535",
            "255.255.255.255:8080",
            "[::1]:443",
            "[2001:db8::1:0:7]:80",
        ] {
            let addr: SocketAddr = a.parse().unwrap();
            let mut out = Vec::new();
            push_addr(&mut out, addr);
            assert_eq!(String::from_utf8(out).unwrap(), addr.to_string());
        }
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = AtomicHistogram::new(&[0.01, 0.1]);
        h.observe(Duration::from_millis(5));
        h.observe(Duration::from_millis(50));
        h.observe(Duration::from_secs(3));
        let mut reg = Registry::default();
        reg.register("d", "help", h);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &reg).unwrap();
        assert!(out.contains("d_bucket{le=\"0.01\"} 1"), "{out}");
        assert!(out.contains("d_bucket{le=\"0.1\"} 2"), "{out}");
        assert!(out.contains("d_bucket{le=\"+Inf\"} 3"), "{out}");
        assert!(out.contains("d_count 3"), "{out}");
    }

    #[test]
    fn full_queue_drops_and_counts() {
        let dropped = Counter::default();
        let log = AccessLog {
            queues: Some(Arc::new(LineQueues::new(1))),
            dropped: dropped.clone(),
        };
        log.log(&record());
        log.log(&record());
        log.log(&record());
        assert_eq!(dropped.get(), 2);
        // The dropped lines' buffers are kept for the next ones.
        assert_eq!(log.queues.as_ref().unwrap().free.len(), 1);
    }

    fn record() -> AccessRecord {
        AccessRecord {
            time: UNIX_EPOCH + Duration::from_millis(1_795_000_000_123),
            request_id: http::HeaderValue::from_static("r"),
            client_addr: "127.0.0.1:1".parse::<SocketAddr>().unwrap().into(),
            method: http::Method::GET,
            host: http::HeaderValue::from_static("h"),
            uri: http::Uri::from_static("/"),
            status: 200,
            bytes_in: 0,
            bytes_out: 0,
            duration: Duration::ZERO,
            upstream_addr: None,
            route: Arc::from("r"),
        }
    }

    fn line(rec: &AccessRecord) -> serde_json::Value {
        let mut out = Vec::new();
        rec.write_json(&mut out);
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        serde_json::from_slice(&out).expect("one valid JSON object")
    }

    #[test]
    fn a_line_is_json_with_every_field() {
        let rec = AccessRecord {
            request_id: http::HeaderValue::from_static("abc-123"),
            client_addr: "[2001:db8::1]:4242".parse::<SocketAddr>().unwrap().into(),
            method: http::Method::from_bytes(b"PURGE").unwrap(),
            host: http::HeaderValue::from_static("example.com:8080"),
            uri: http::Uri::from_static("/a/b%20c?token=secret"),
            status: 503,
            bytes_in: 12,
            bytes_out: 18_446_744_073_709_551_615,
            duration: Duration::from_micros(1_234_567),
            upstream_addr: Some("10.1.2.3:8080".parse().unwrap()),
            route: Arc::from("ingress/default/web/0/0"),
            ..record()
        };
        let v = line(&rec);
        assert_eq!(
            v,
            serde_json::json!({
                "time": "2026-11-18T11:06:40.123Z",
                "request_id": "abc-123",
                "client_addr": "[2001:db8::1]:4242",
                "method": "PURGE",
                "host": "example.com:8080",
                "path": "/a/b%20c",
                "status": 503,
                "bytes_in": 12,
                "bytes_out": 18_446_744_073_709_551_615u64,
                "duration_ms": 1234.567,
                "upstream_addr": "10.1.2.3:8080",
                "route": "ingress/default/web/0/0",
            })
        );
        let v = line(&record());
        assert_eq!(v["upstream_addr"], serde_json::Value::Null);
        assert_eq!(v["duration_ms"], 0.0);
        // An address from X-Forwarded-For, without a port.
        let rec = AccessRecord {
            client_addr: ClientAddr::new("2001:db8::7".parse().unwrap(), None),
            ..record()
        };
        assert_eq!(line(&rec)["client_addr"], "2001:db8::7");
    }

    #[test]
    fn strings_are_escaped_and_made_utf8() {
        // A header value may hold quotes, backslashes, tabs and obs-text.
        let host = http::HeaderValue::from_bytes(b"a\"b\\c\td\xff\xc3\xa9").unwrap();
        let rec = AccessRecord {
            host,
            route: Arc::from("r\n\u{1}\u{1f}\u{7f}"),
            ..record()
        };
        let v = line(&rec);
        assert_eq!(v["host"], "a\"b\\c\td\u{fffd}\u{e9}");
        assert_eq!(v["route"], "r\n\u{1}\u{1f}\u{7f}");
    }

    #[test]
    fn route_stats_count_by_class() {
        let m = Metrics::new();
        let s = m.route_stats("ingress/default/web");
        let ms = Duration::from_millis(1);
        s.record(http::StatusCode::OK, ms);
        s.record(http::StatusCode::SERVICE_UNAVAILABLE, ms);
        s.record(
            http::StatusCode::SERVICE_UNAVAILABLE,
            Duration::from_secs(20),
        );
        let text = m.encode().unwrap();
        assert!(
            text.contains(
                "portico_request_duration_seconds_bucket{le=\"0.001\",route=\"ingress/default/web\"} 2"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "portico_request_duration_seconds_count{route=\"ingress/default/web\"} 3"
            ),
            "{text}"
        );
        assert!(
            text.contains(
                "portico_requests_total{route=\"ingress/default/web\",status_class=\"5xx\"} 2"
            ),
            "{text}"
        );
    }
}
