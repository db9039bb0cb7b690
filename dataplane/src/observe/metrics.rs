//! Prometheus metrics: bounded label sets resolved when a table is built,
//! atomics on the request path, a fixed-bucket latency histogram.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::request::head::Rejection;

/// Label used for requests that matched no route.
pub const NO_ROUTE: &str = "none";

/// Upper bounds (seconds) of the request duration histogram.
const DURATION_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The `status_class` label's values, in `RouteStats::by_class` order.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Every metric the dataplane exports, registered once.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    request_duration: Family<RouteLabel, AtomicHistogram, fn() -> AtomicHistogram>,
    /// Route ids with series in `requests` and `request_duration`, so a
    /// publish can drop those of routes no table names any more (series are
    /// otherwise kept forever, and renamed routes would grow the process).
    /// Touched only by table builds and publishes, never by a request.
    route_ids: Mutex<HashSet<String>>,
    pub upstream_connect_errors: Counter,
    pub open_connections: Gauge,
    /// Gateway listener ports with an open socket.
    pub gateway_ports_open: Gauge,
    /// Requests the split sent to a backend whose reference could not be
    /// resolved (answered 500).
    pub backend_unresolved: Counter,
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
    /// External-auth checks by result.
    pub external_auth: crate::filter::external_auth::ExternalAuthCounters,
    /// Requests refused by rate and connection limits; keys tracked.
    pub limits: crate::filter::rate_limit::LimitCounters,
    /// Mirrored copies by route and result.
    pub mirror: crate::filter::mirror::MirrorCounters,
    /// Trace spans dropped instead of exported, by reason.
    pub trace_spans_dropped: crate::observe::trace::DroppedSpans,
    /// JWT checks by result, JWKS fetches by result.
    pub jwt: crate::filter::jwt::JwtCounters,
    /// Requests Redis could not decide for a global limit, by reason.
    pub global_limits: crate::filter::global_rate_limit::GlobalLimitCounters,
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
struct ReasonLabels {
    reason: &'static str,
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
        let gateway_ports_open = Gauge::default();
        registry.register(
            "gateway_ports_open",
            "Gateway listener ports with an open socket (bound by a publish, not yet closed)",
            gateway_ports_open.clone(),
        );
        let backend_unresolved = Counter::default();
        registry.register(
            "backend_unresolved_requests",
            "Requests sent by a rule's split to a backend whose reference could not be resolved, answered 500 (gRPC: UNAVAILABLE) without contacting anything",
            backend_unresolved.clone(),
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
        let checks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "external_auth_checks",
            "External-authentication checks by result: allowed (2xx), cached (a remembered 2xx), unauthorized (401), forbidden (403), failed (another status, a timeout or a connection error: answered 500)",
            checks.clone(),
        );
        let result = |result| checks.get_or_create(&ResultLabels { result }).clone();
        let external_auth = crate::filter::external_auth::ExternalAuthCounters {
            allowed: result("allowed"),
            cached: result("cached"),
            unauthorized: result("unauthorized"),
            forbidden: result("forbidden"),
            failed: result("failed"),
        };
        let limits = crate::filter::rate_limit::LimitCounters::default();
        registry.register(
            "rate_limited_requests",
            "Requests refused by a limit, by route and kind (rate: limit-rps/limit-rpm; connections: limit-connections; global: global-rate-limit, counted in Redis)",
            limits.limited.clone(),
        );
        registry.register(
            "rate_limit_tracked_keys",
            "Client keys the local limits track on this replica, all policies together",
            limits.tracked.clone(),
        );
        registry.register(
            "response_throttled",
            "Responses whose body a bandwidth limit (limit-rate) delayed at least once",
            limits.throttled.clone(),
        );
        registry.register(
            "rate_limit_untracked",
            "New client keys let through unlimited because their policy tracked --limit-max-keys keys already",
            limits.untracked.clone(),
        );
        let global_limits = crate::filter::global_rate_limit::GlobalLimitCounters::default();
        registry.register(
            "global_rate_limit_errors",
            "Requests a global limit could not ask Redis about, by reason: timeout (no answer within --redis-timeout), unavailable (not connected), error (an error reply), unconfigured (no --redis-url); they pass, or are answered 503 with --global-rate-limit-fail-closed",
            global_limits.errors.clone(),
        );
        let mirror = crate::filter::mirror::MirrorCounters::default();
        registry.register(
            "mirror_requests",
            "Mirrored copies of requests by route and result: sent (the mirror answered), dropped_busy (--mirror-max-in-flight copies were in flight), dropped_body (the body was over --mirror-max-body, or ended early), failed (no answer: no endpoint, connection error or timeout)",
            mirror.requests.clone(),
        );
        let dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "trace_spans_dropped",
            "OpenTelemetry spans dropped instead of exported: queue_full (the export queue was full), export_failed (the collector refused, was unreachable or too slow)",
            dropped.clone(),
        );
        let reason = |reason| dropped.get_or_create(&ReasonLabels { reason }).clone();
        let trace_spans_dropped = crate::observe::trace::DroppedSpans {
            queue_full: reason("queue_full"),
            export_failed: reason("export_failed"),
        };
        let jwt_checks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "jwt_checks",
            "JWT checks by result: allowed, missing (no token where one is required), or the refusal's reason (malformed, algorithm, issuer, unknown_key, signature, audience, expired, not_yet_valid, missing_claim, claim_value)",
            jwt_checks.clone(),
        );
        let jwks_fetches = Family::<ResultLabels, Counter>::default();
        registry.register(
            "jwks_fetches",
            "JWKS fetches by result: ok, failed (the last good key set is kept)",
            jwks_fetches.clone(),
        );
        // Each in its own closure: `get_or_create` returns a read guard,
        // and two in one expression would deadlock on the second's insert.
        let fetch_result = |result| jwks_fetches.get_or_create(&ResultLabels { result }).clone();
        let jwt_result = |result| jwt_checks.get_or_create(&ResultLabels { result }).clone();
        let jwt = crate::filter::jwt::JwtCounters {
            allowed: jwt_result("allowed"),
            missing: jwt_result("missing"),
            refused: crate::filter::jwt::Refusal::ALL.map(|r| jwt_result(r.label())),
            fetch_ok: fetch_result("ok"),
            fetch_failed: fetch_result("failed"),
        };
        Self {
            trace_spans_dropped,
            jwt,
            global_limits,
            basic_auth,
            external_auth,
            limits,
            mirror,
            request_rejections,
            grpc_calls,
            proxy_protocol_ok,
            proxy_protocol_refused,
            registry,
            requests,
            request_duration,
            route_ids: Mutex::default(),
            upstream_connect_errors,
            open_connections,
            gateway_ports_open,
            backend_unresolved,
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
        self.route_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(route.to_owned());
        let by_class = STATUS_CLASSES.map(|status_class| {
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

    /// Drops the series of every route `live` does not name (and that is
    /// not the no-route series), after a publish: a deleted or renamed
    /// route's counters leave the exposition, as its table has. Requests
    /// still finishing on the old table count into detached counters.
    pub fn retain_routes(&self, live: &HashSet<&str>) {
        let mut ids = self.route_ids.lock().unwrap_or_else(|p| p.into_inner());
        ids.retain(|id| {
            if live.contains(id.as_str()) || id == NO_ROUTE {
                return true;
            }
            for status_class in STATUS_CLASSES {
                self.requests.remove(&RequestLabels {
                    route: id.clone(),
                    status_class,
                });
            }
            self.request_duration
                .remove(&RouteLabel { route: id.clone() });
            false
        });
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

#[cfg(test)]
mod tests {
    use super::*;

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
