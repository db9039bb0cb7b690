//! OpenTelemetry traces: one server span per request on the rules that
//! trace, exported over OTLP (gRPC or HTTP/protobuf) by the SDK's batch
//! span processor.
//!
//! The request path only builds its span and, when it ends, offers it to a
//! bounded queue: the processor's own thread batches the queue and the
//! exports run on a runtime of their own (one thread), never on the
//! proxy's workers. When the queue is full, or an export fails (a slow or
//! absent collector), spans are dropped and counted in
//! `portico_trace_spans_dropped_total{reason}`; a request never waits.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{HeaderMap, Method, StatusCode};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, Span, SpanData,
    SpanExporter, SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;

use crate::model::Trace;

static TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
static TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");

/// How spans leave the process (`--otlp-protocol`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP/gRPC, usually port 4317.
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies, usually port 4318 (`/v1/traces`).
    Http,
}

/// The tracing settings, validated once at start.
#[derive(Clone, Debug)]
pub struct TraceConfig {
    /// The collector: `http://host:4317` (gRPC) or `http://host:4318`
    /// (HTTP; `/v1/traces` is added when the path is empty).
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Rules trace unless their Ingress says otherwise
    /// (`--enable-opentelemetry`).
    pub enabled_by_default: bool,
    /// The fraction of new traces recorded; a request with a trusted parent
    /// follows its parent's decision.
    pub sampler_ratio: f64,
    /// The `service.name` resource attribute.
    pub service_name: String,
    /// Spans waiting for export before new ones are dropped.
    pub max_queue_size: usize,
    /// How long a span may wait for its batch to go.
    pub schedule_delay: Duration,
    /// How long one export may take before it fails (and its spans drop).
    pub export_timeout: Duration,
}

impl TraceConfig {
    /// Settings with the defaults for everything but where to send.
    pub fn new(endpoint: impl Into<String>, protocol: OtlpProtocol) -> Self {
        Self {
            endpoint: endpoint.into(),
            protocol,
            enabled_by_default: false,
            sampler_ratio: 1.0,
            service_name: "portico".into(),
            max_queue_size: 2048,
            schedule_delay: Duration::from_secs(5),
            export_timeout: Duration::from_secs(10),
        }
    }
}

/// Why tracing could not start.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    #[error("OTLP exporter: {0}")]
    Exporter(String),
    #[error("OTLP export runtime: {0}")]
    Runtime(#[from] std::io::Error),
    #[error("sampler ratio {0} is not between 0 and 1")]
    Ratio(f64),
}

/// Spans dropped instead of exported, by reason.
#[derive(Clone, Debug, Default)]
pub struct DroppedSpans {
    /// The export queue was full.
    pub queue_full: Counter,
    /// The collector refused the batch, was unreachable or too slow.
    pub export_failed: Counter,
}

/// The running tracer and its exporter; shared by every rule that traces.
#[derive(Debug)]
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    enabled_by_default: bool,
}

impl Tracing {
    /// Builds the exporter (its connections are made on first export, so
    /// an absent collector does not stop the start) and the batch
    /// processor's thread.
    pub fn start(config: TraceConfig, dropped: DroppedSpans) -> Result<Self, TraceError> {
        if !(0.0..=1.0).contains(&config.sampler_ratio) {
            return Err(TraceError::Ratio(config.sampler_ratio));
        }
        // The exporters' connections and timers live on this runtime, off
        // the proxy's workers; it is dropped with the exporter, on the
        // processor's thread.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("portico-otlp")
            .enable_all()
            .build()?;
        let built = {
            let _in_runtime = runtime.enter();
            build_exporter(&config)
        };
        let inner = match built {
            Ok(inner) => inner,
            Err(e) => {
                // Dropping a runtime on an async worker panics.
                runtime.shutdown_background();
                return Err(e);
            }
        };
        let queued = Arc::new(AtomicUsize::new(0));
        let exporter = Exporter {
            inner: Arc::new(inner),
            runtime: Some(runtime),
            queued: Arc::clone(&queued),
            failed: dropped.export_failed.clone(),
        };
        let batch = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_max_queue_size(config.max_queue_size)
                    .with_scheduled_delay(config.schedule_delay)
                    .build(),
            )
            .build();
        let processor = Bounded {
            inner: batch,
            queued,
            capacity: config.max_queue_size,
            full: dropped.queue_full,
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampler_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(config.service_name)
                    .build(),
            )
            .build();
        let tracer = provider.tracer("portico");
        Ok(Self {
            provider,
            tracer,
            enabled_by_default: config.enabled_by_default,
        })
    }

    /// Exports what is queued and stops the exporter; blocks up to the
    /// export timeout. Call off the async workers.
    pub fn shutdown(&self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "tracing: shutdown did not flush every span");
        }
    }
}

fn build_exporter(config: &TraceConfig) -> Result<opentelemetry_otlp::SpanExporter, TraceError> {
    let built = match config.protocol {
        OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .with_endpoint(config.endpoint.clone())
            .with_timeout(config.export_timeout)
            .build(),
        OtlpProtocol::Http => {
            let mut endpoint = config.endpoint.trim_end_matches('/').to_owned();
            // The OTLP/HTTP convention: a base address gets the signal's path.
            if !endpoint.ends_with("/v1/traces") {
                endpoint.push_str("/v1/traces");
            }
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(endpoint)
                .with_timeout(config.export_timeout)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .build()
        }
    };
    built.map_err(|e| TraceError::Exporter(e.to_string()))
}

// === impl Exporter ===

/// The OTLP exporter, run on its own runtime from the processor's thread
/// (which has none); counts the spans of failed exports.
#[derive(Debug)]
struct Exporter {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: Option<tokio::runtime::Runtime>,
    /// Spans offered and not yet exported or dropped ([`Bounded`]).
    queued: Arc<AtomicUsize>,
    failed: Counter,
}

impl SpanExporter for Exporter {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let inner = Arc::clone(&self.inner);
        let result = match &self.runtime {
            Some(rt) => rt
                .spawn(async move { inner.export(batch).await })
                .await
                .unwrap_or_else(|e| Err(OTelSdkError::InternalFailure(e.to_string()))),
            None => Err(OTelSdkError::AlreadyShutdown),
        };
        self.queued.fetch_sub(n, Ordering::Relaxed);
        if result.is_err() {
            self.failed.inc_by(n as u64);
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Set once, when the provider is built, before any export holds a
        // second reference.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        // Dropped on the processor's thread; never wait for the runtime's
        // tasks there.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

// === impl Bounded ===

/// The batch processor behind a counted bound: a span offered when
/// `capacity` are already waiting is dropped here, and counted (the SDK
/// drops them too, but only reports the number at shutdown).
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
    capacity: usize,
    full: Counter,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.capacity {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.full.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

// === impl RuleTrace ===

/// A rule's tracing, compiled once per table build; only on rules that
/// trace (`None` on the others: one branch per request).
#[derive(Debug)]
pub(crate) struct RuleTrace {
    tracing: Arc<Tracing>,
    trust_incoming: bool,
    /// `opentelemetry-operation-name`; else `HTTP <method>`.
    name: Option<Cow<'static, str>>,
}

impl RuleTrace {
    /// The rule's tracing: its own setting, else the global switch.
    pub(crate) fn build(tracing: &Arc<Tracing>, setting: Option<&Trace>) -> Option<Self> {
        let enabled = setting
            .and_then(|s| s.enabled)
            .unwrap_or(tracing.enabled_by_default);
        enabled.then(|| Self {
            tracing: Arc::clone(tracing),
            trust_incoming: setting.is_none_or(|s| s.trust_incoming_span),
            name: setting
                .and_then(|s| s.operation_name.clone())
                .map(Cow::Owned),
        })
    }

    /// Starts the request's server span: the child of the client's
    /// `traceparent` when trusted, else a new root.
    pub(crate) fn start(&self, head: &SpanHead<'_>) -> RequestSpan {
        let propagator = TraceContextPropagator::new();
        let parent = if self.trust_incoming {
            propagator.extract(&HeaderExtractor(head.headers))
        } else {
            Context::new()
        };
        let name = match &self.name {
            Some(n) => n.clone(),
            None => default_name(head.method),
        };
        let mut span = self
            .tracing
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Server)
            .with_start_time(head.start)
            .start_with_context(&self.tracing.tracer, &parent);
        // Attributes only for spans that will be exported: a request the
        // sampler left out allocates none (our sampler reads none).
        if span.is_recording() {
            let method = match default_name(head.method) {
                Cow::Borrowed(name) => Value::from(&name["HTTP ".len()..]),
                Cow::Owned(_) => Value::from(head.method.as_str().to_owned()),
            };
            span.set_attributes([
                KeyValue::new("http.request.method", method),
                KeyValue::new("url.path", head.path.to_owned()),
                KeyValue::new("url.scheme", head.scheme),
                KeyValue::new("server.address", head.host.to_owned()),
                KeyValue::new("client.address", head.client.to_string()),
                KeyValue::new("network.peer.address", head.peer.ip.to_string()),
                KeyValue::new("portico.route", Arc::clone(head.route)),
            ]);
            if let Some(port) = head.peer.port {
                span.set_attribute(KeyValue::new("network.peer.port", i64::from(port)));
            }
            if let Some(ua) = head
                .headers
                .get(http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
            {
                span.set_attribute(KeyValue::new("user_agent.original", ua.to_owned()));
            }
        }
        RequestSpan {
            span: Mutex::new(span),
        }
    }
}

/// What a span is started with, taken from the request before it is
/// consumed.
pub(crate) struct SpanHead<'a> {
    pub method: &'a Method,
    pub path: &'a str,
    pub scheme: &'static str,
    pub host: &'a str,
    pub headers: &'a HeaderMap,
    pub client: std::net::IpAddr,
    /// The connection's peer (a PROXY protocol source is the peer).
    pub peer: crate::request::forwarded::ClientAddr,
    pub route: &'a Arc<str>,
    pub start: std::time::SystemTime,
}

fn default_name(method: &Method) -> Cow<'static, str> {
    Cow::Borrowed(match *method {
        Method::GET => "HTTP GET",
        Method::POST => "HTTP POST",
        Method::PUT => "HTTP PUT",
        Method::DELETE => "HTTP DELETE",
        Method::HEAD => "HTTP HEAD",
        Method::OPTIONS => "HTTP OPTIONS",
        Method::PATCH => "HTTP PATCH",
        Method::CONNECT => "HTTP CONNECT",
        Method::TRACE => "HTTP TRACE",
        // Semantic conventions: other methods are `_OTHER`.
        _ => "HTTP _OTHER",
    })
}

// === impl RequestSpan ===

/// One request's server span. The lock is this request's own (retry
/// events come from the attempt loop through a shared reference); no
/// other request ever takes it.
pub(crate) struct RequestSpan {
    span: Mutex<Span>,
}

impl std::fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RequestSpan")
    }
}

impl RequestSpan {
    fn with<R>(&self, f: impl FnOnce(&mut Span) -> R) -> R {
        f(&mut self.span.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Sets `traceparent` (and `tracestate`) for the upstream to this
    /// span's context, replacing whatever the client sent.
    pub(crate) fn inject(&self, headers: &mut HeaderMap) {
        headers.remove(&TRACEPARENT);
        headers.remove(&TRACESTATE);
        let cx = Context::new().with_remote_span_context(self.with(|s| s.span_context().clone()));
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderInjector(headers));
    }

    /// One event per attempt made again: the endpoint that failed and why.
    pub(crate) fn retry(&self, failed: SocketAddr, reason: &'static str) {
        self.with(|s| {
            if s.is_recording() {
                s.add_event(
                    "retry",
                    vec![
                        KeyValue::new("portico.upstream", failed.to_string()),
                        KeyValue::new("portico.retry.reason", reason),
                    ],
                );
            }
        });
    }

    /// Ends the span with the answer's status; errors on 5xx and on the
    /// gRPC statuses a server is at fault for.
    pub(crate) fn end(self, status: StatusCode, grpc: Option<u8>, upstream: Option<SocketAddr>) {
        let mut span = self
            .span
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner);
        if span.is_recording() {
            span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status.as_u16()),
            ));
            if let Some(addr) = upstream {
                span.set_attribute(KeyValue::new("portico.upstream", addr.to_string()));
            }
            if let Some(code) = grpc {
                span.set_attribute(KeyValue::new("rpc.grpc.status_code", i64::from(code)));
            }
            // UNKNOWN, DEADLINE_EXCEEDED, UNIMPLEMENTED, INTERNAL,
            // UNAVAILABLE, DATA_LOSS: the server's fault (semantic
            // conventions for gRPC server spans).
            let grpc_error = grpc.is_some_and(|c| matches!(c, 2 | 4 | 12 | 13 | 14 | 15));
            if status.is_server_error() || grpc_error {
                span.set_status(Status::error(match grpc {
                    Some(c) if grpc_error => format!("grpc-status {c}"),
                    _ => status.to_string(),
                }));
            }
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bad_endpoint_or_ratio_is_an_error_not_a_panic() {
        let bad = TraceConfig::new("not a uri at all", OtlpProtocol::Grpc);
        assert!(matches!(
            Tracing::start(bad, DroppedSpans::default()),
            Err(TraceError::Exporter(_))
        ));
        let mut ratio = TraceConfig::new("http://127.0.0.1:4317", OtlpProtocol::Http);
        ratio.sampler_ratio = 1.5;
        assert!(matches!(
            Tracing::start(ratio, DroppedSpans::default()),
            Err(TraceError::Ratio(_))
        ));
    }

    #[test]
    fn span_names_are_static_for_known_methods() {
        assert_eq!(default_name(&Method::GET), "HTTP GET");
        assert!(matches!(default_name(&Method::PATCH), Cow::Borrowed(_)));
        let custom = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(default_name(&custom), "HTTP _OTHER");
    }
}
