//! Command-line interface. Every `run` flag is also an environment variable
//! `PORTICO_<FLAG>`, as Helm charts and container platforms prefer.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use http::{HeaderName, Method};
use portico_dataplane::external_auth::Template;
use portico_dataplane::model::{ExternalAuth, Hsts};
use portico_dataplane::request::forwarded::IpNet;
use portico_dataplane::request::head::HeadRules;
use portico_dataplane::request::path::{EscapedSlashes, PathNormalization, PathPolicy};

use crate::translate::Settings;
use crate::translate::backends::{PortRef, ServiceRef};

#[derive(Parser, Debug)]
#[command(
    name = "portico",
    version,
    about = "Kubernetes ingress controller with an embedded Rust dataplane"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the controller and the proxy: against a cluster (kubeconfig or
    /// in-cluster config), or from a directory of manifests (`--manifests`).
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions Portico serves (YAML).
    Crds,
    /// Parse and translate manifests offline; print every object's
    /// diagnostics. Exits 1 when any is an error.
    Validate(ValidateArgs),
    /// Serve the validating admission webhook: parses Ingresses and
    /// HTTPRoutes as `run` would, denies what cannot be served as written,
    /// warns about the rest. No API client, no Secrets, no state.
    Webhook(WebhookArgs),
    /// Before a migration: read a cluster's Ingresses (kubeconfig) and
    /// report, per Ingress and per namespace, which annotations Portico
    /// supports, partly supports or does not, and which paths change
    /// meaning. Reads Ingresses, IngressClasses and Services; writes
    /// nothing.
    Report(ReportArgs),
    /// Print the version.
    Version,
}

#[derive(Args, Debug, Clone)]
pub struct ClassArgs {
    /// Ingresses carrying the legacy `kubernetes.io/ingress.class`
    /// annotation with this value are ours.
    #[arg(long, env = "PORTICO_INGRESS_CLASS", default_value = "portico")]
    pub ingress_class: String,
    /// IngressClasses whose `spec.controller` is this are ours.
    #[arg(
        long,
        env = "PORTICO_CONTROLLER_NAME",
        default_value = "portico.dev/ingress-controller"
    )]
    pub controller_name: String,
    /// Serve Ingresses that name no class even without a default
    /// IngressClass of ours.
    #[arg(long, env = "PORTICO_WATCH_INGRESS_WITHOUT_CLASS")]
    pub watch_ingress_without_class: bool,
    /// Side-by-side mode for a migration: also serve Ingresses of these
    /// classes (another controller's, e.g. `nginx`), read-only: no status
    /// and no Events are written for them. Comma-separated or repeated.
    #[arg(long, env = "PORTICO_WATCH_INGRESS_CLASS", value_delimiter = ',')]
    pub watch_ingress_class: Vec<String>,
    /// Clients allowed on every Ingress without an `allowlist-source-range`
    /// annotation of its own (CIDR ranges or addresses, comma-separated);
    /// empty: all.
    #[arg(long, env = "PORTICO_ALLOWLIST_SOURCE_RANGE", value_delimiter = ',', value_parser = parse_range)]
    pub allowlist_source_range: Vec<IpNet>,
    /// Clients refused on every Ingress without a `denylist-source-range`
    /// annotation of its own.
    #[arg(long, env = "PORTICO_DENYLIST_SOURCE_RANGE", value_delimiter = ',', value_parser = parse_range)]
    pub denylist_source_range: Vec<IpNet>,
    /// `namespace/name[:port]` of the Service that renders the 404 of
    /// requests no route matches, and the custom error pages of Ingresses
    /// without a `default-backend` annotation (ingress-nginx's flag of the
    /// same name). The port is a number or a name; default: the Service's
    /// first port. Default: none (a plain 404).
    #[arg(long, env = "PORTICO_DEFAULT_BACKEND_SERVICE", value_parser = parse_service_ref)]
    pub default_backend_service: Option<ServiceRef>,
    /// Statuses (400 to 599, comma-separated) whose answers get a custom
    /// error page on every Ingress path without a `custom-http-errors`
    /// annotation of its own: ingress-nginx's ConfigMap key of the same
    /// name, as a flag (Portico reads no ConfigMap). Default: none.
    #[arg(long, env = "PORTICO_CUSTOM_HTTP_ERRORS", value_delimiter = ',', value_parser = parse_error_code)]
    pub custom_http_errors: Vec<u16>,
    /// Let an Ingress's `auth-secret` name a Secret in another namespace
    /// (`namespace/name`), as ingress-nginx's
    /// `allow-cross-namespace-resources`. Off: such an Ingress's paths
    /// answer 503.
    #[arg(long, env = "PORTICO_ALLOW_CROSS_NAMESPACE_AUTH_SECRET")]
    pub allow_cross_namespace_auth_secret: bool,
    /// External authentication for every Ingress path without an
    /// `auth-url` of its own and without `enable-global-auth: "false"`
    /// (ingress-nginx's ConfigMap key `global-auth-url`): an http(s) URL,
    /// nginx variables as in `auth-url`. Default: none.
    #[arg(long, env = "PORTICO_GLOBAL_AUTH_URL", value_parser = parse_auth_url)]
    pub global_auth_url: Option<Template>,
    /// The `auth-signin` of the global policy. Default: none (a 401 from
    /// the service reaches the client).
    #[arg(long, env = "PORTICO_GLOBAL_AUTH_SIGNIN", value_parser = parse_auth_signin, requires = "global_auth_url")]
    pub global_auth_signin: Option<Template>,
    /// The `auth-response-headers` of the global policy (comma-separated).
    /// Default: none.
    #[arg(long, env = "PORTICO_GLOBAL_AUTH_RESPONSE_HEADERS", value_delimiter = ',', value_parser = parse_auth_response_header, requires = "global_auth_url")]
    pub global_auth_response_headers: Vec<HeaderName>,
    /// The `auth-method` of the global policy. Default: GET.
    #[arg(long, env = "PORTICO_GLOBAL_AUTH_METHOD", value_parser = parse_auth_method, requires = "global_auth_url")]
    pub global_auth_method: Option<Method>,
    /// The status of a request refused by `limit-rps`/`limit-rpm` (400 to
    /// 599; ingress-nginx's `limit-req-status-code`, default 503; 429 is
    /// the usual alternative).
    #[arg(long, env = "PORTICO_LIMIT_REQ_STATUS_CODE", default_value_t = 503, value_parser = parse_error_code)]
    pub limit_req_status_code: u16,
    /// The status of a request refused by `limit-connections` (400 to
    /// 599; ingress-nginx's `limit-conn-status-code`, default 503).
    #[arg(long, env = "PORTICO_LIMIT_CONN_STATUS_CODE", default_value_t = 503, value_parser = parse_error_code)]
    pub limit_conn_status_code: u16,
    /// The status of a request refused by `global-rate-limit` (400 to 599;
    /// ingress-nginx's `global-rate-limit-status-code`, default 429).
    #[arg(long, env = "PORTICO_GLOBAL_RATE_LIMIT_STATUS_CODE", default_value_t = 429, value_parser = parse_error_code)]
    pub global_rate_limit_status_code: u16,
    /// Gateway API: GatewayClasses whose `spec.controllerName` is this are
    /// ours, and so are their Gateways.
    #[arg(
        long,
        env = "PORTICO_GATEWAY_CONTROLLER_NAME",
        default_value = crate::translate::gateway::DEFAULT_CONTROLLER_NAME
    )]
    pub gateway_controller_name: String,
    /// Gateway HTTP listeners on this port are served by the main HTTP
    /// listener (the chart's Service maps 80 there).
    #[arg(long, env = "PORTICO_GATEWAY_HTTP_PORT", default_value_t = 80)]
    pub gateway_http_port: u16,
    /// Gateway HTTPS listeners on this port are served by the main HTTPS
    /// listener (the chart's Service maps 443 there).
    #[arg(long, env = "PORTICO_GATEWAY_HTTPS_PORT", default_value_t = 443)]
    pub gateway_https_port: u16,
    /// Added to every other Gateway listener port to get the port bound
    /// (status reports the port bound), so Gateways run without root or
    /// in tests on high ports.
    #[arg(long, env = "PORTICO_GATEWAY_PORT_OFFSET", default_value_t = 0)]
    pub gateway_port_offset: u16,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Serve from the manifests under this directory instead of a cluster.
    /// The directory is watched; changes are live within a second.
    #[arg(long, env = "PORTICO_MANIFESTS")]
    pub manifests: Option<PathBuf>,
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account.
    #[arg(long, env = "PORTICO_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub class: ClassArgs,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "PORTICO_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// `namespace/name` of the Service whose load-balancer addresses are
    /// written into Ingress status.
    #[arg(long, env = "PORTICO_PUBLISH_SERVICE")]
    pub publish_service: Option<String>,
    /// Addresses (IPs or host names, comma-separated) written into Ingress
    /// status; overrides `--publish-service`.
    #[arg(long, env = "PORTICO_PUBLISH_STATUS_ADDRESS", value_delimiter = ',')]
    pub publish_status_address: Vec<String>,
    /// Remove the Ingress status addresses on shutdown when this is the
    /// last replica.
    #[arg(long, env = "PORTICO_UPDATE_STATUS_ON_SHUTDOWN", default_value_t = true, action = clap::ArgAction::Set)]
    pub update_status_on_shutdown: bool,
    #[arg(long, env = "PORTICO_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    #[arg(long, env = "PORTICO_HTTPS_ADDR", default_value = "0.0.0.0:8443")]
    pub https_addr: SocketAddr,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Liveness, readiness and metrics (`/healthz`, `/readyz`, `/metrics`)
    /// for the kubelet and scrapers.
    #[arg(long, env = "PORTICO_ADMIN_ADDR", default_value = "0.0.0.0:10254")]
    pub admin_addr: SocketAddr,
    /// The debug pages (`/debug/routes`, `/debug/endpoints`): they show the
    /// route table and pod addresses, so loopback by default (reach them
    /// with `kubectl port-forward`); `off` serves them nowhere.
    #[arg(long, env = "PORTICO_DEBUG_ADDR", default_value = "127.0.0.1:10255", value_parser = parse_debug_addr)]
    pub debug_addr: DebugAddr,
    /// Elect a leader through a Lease; only the leader writes status and
    /// Events. Default: on against a cluster (off with `--manifests`).
    #[arg(long, env = "PORTICO_LEADER_ELECT", action = clap::ArgAction::Set)]
    pub leader_elect: Option<bool>,
    /// Name of the Lease used for leader election.
    #[arg(long, env = "PORTICO_ELECTION_ID", default_value = "portico-leader")]
    pub election_id: String,
    /// Namespace of the Lease; default: the pod's namespace
    /// (`POD_NAMESPACE`), else `default`.
    #[arg(long, env = "PORTICO_ELECTION_NAMESPACE")]
    pub election_namespace: Option<String>,
    #[arg(long, env = "PORTICO_LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Access log on stdout (one JSON line per request).
    #[arg(long, env = "PORTICO_ACCESS_LOG", default_value_t = true, action = clap::ArgAction::Set)]
    pub access_log: bool,
    /// On SIGTERM, how long in-flight requests may take to finish before
    /// portico exits anyway: seconds (`30`) or a duration (`30s`, `1m30s`,
    /// `1500ms`). Keep it
    /// below the pod's terminationGracePeriodSeconds.
    #[arg(long, env = "PORTICO_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub drain_timeout: Duration,
    #[command(flatten)]
    pub request: RequestArgs,
    #[command(flatten)]
    pub client_address: ClientAddressArgs,
    #[command(flatten)]
    pub basic_auth: BasicAuthArgs,
    /// Client keys each rate or connection limit tracks (at about 70 bytes
    /// a key: 100000 is about 7 MB per policy); a new client beyond them is
    /// not limited until idle keys are forgotten (counted in
    /// `portico_rate_limit_untracked_total`).
    #[arg(long, env = "PORTICO_LIMIT_MAX_KEYS", default_value_t = 100_000, value_parser = clap::value_parser!(u32).range(1..=100_000_000))]
    pub limit_max_keys: u32,
    #[command(flatten)]
    pub tracing: TracingArgs,
    #[command(flatten)]
    pub global_limits: GlobalLimitArgs,
    #[command(flatten)]
    pub mirror: MirrorArgs,
}

/// Where global rate limits count (Redis) and what happens without it.
#[derive(Args, Debug, Clone)]
pub struct GlobalLimitArgs {
    /// The Redis that `global-rate-limit` counts in, shared by every
    /// replica: `redis://[user:password@]host[:port][/db]`, or `rediss://`
    /// for TLS (the system's roots, or `--redis-ca-file`). Default: none
    /// (global limits let every request through, counted as
    /// `reason="unconfigured"`).
    #[arg(long, env = "PORTICO_REDIS_URL", value_parser = parse_redis_url)]
    pub redis_url: Option<RedisUrl>,
    /// PEM certificates that a `rediss://` server's certificate must chain
    /// to, instead of the system's roots.
    #[arg(long, env = "PORTICO_REDIS_CA_FILE", requires = "redis_url")]
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// How long a connection to Redis may take (`1s`, `500ms`).
    #[arg(long, env = "PORTICO_REDIS_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub redis_connect_timeout: Duration,
    /// How long a request waits for Redis' count; past it the request is
    /// decided as if Redis were down. Default: 50ms.
    #[arg(long, env = "PORTICO_REDIS_TIMEOUT", default_value = "50ms", value_parser = parse_duration)]
    pub redis_timeout: Duration,
    /// Answer 503 when Redis cannot count a request (unreachable, slow,
    /// erroring) instead of letting it through (ingress-nginx's
    /// behaviour, the default).
    #[arg(long, env = "PORTICO_GLOBAL_RATE_LIMIT_FAIL_CLOSED")]
    pub global_rate_limit_fail_closed: bool,
}

/// A Redis URL, which may hold a password: never printed.
#[derive(Clone)]
pub struct RedisUrl(String);

impl std::fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RedisUrl(<redacted>)")
    }
}

fn parse_redis_url(s: &str) -> Result<RedisUrl, String> {
    portico_dataplane::filter::global_rate_limit::RedisConfig::new(s, None)
        .map(|_| RedisUrl(s.to_owned()))
        .map_err(|e| e.to_string())
}

impl GlobalLimitArgs {
    pub fn config(
        &self,
    ) -> anyhow::Result<portico_dataplane::filter::global_rate_limit::GlobalLimitConfig> {
        use anyhow::Context as _;
        use portico_dataplane::filter::global_rate_limit::{GlobalLimitConfig, RedisConfig};
        let redis = match &self.redis_url {
            None => None,
            Some(RedisUrl(url)) => {
                let ca =
                    match &self.redis_ca_file {
                        Some(path) => Some(std::fs::read(path).with_context(|| {
                            format!("reading --redis-ca-file {}", path.display())
                        })?),
                        None => None,
                    };
                Some(
                    RedisConfig::new(url, ca)?
                        .with_timeouts(self.redis_connect_timeout, self.redis_timeout),
                )
            }
        };
        Ok(GlobalLimitConfig {
            redis,
            fail_closed: self.global_rate_limit_fail_closed,
        })
    }
}

/// Request mirroring's bounds (`mirror-target`, HTTPRoute `RequestMirror`).
#[derive(Args, Debug, Clone)]
pub struct MirrorArgs {
    /// Mirrored copies in flight at once, all routes together (buffering
    /// their body or waiting for the mirror's answer); one more is dropped
    /// and counted (`portico_mirror_requests_total{result="dropped_busy"}`),
    /// the original untouched.
    #[arg(long, env = "PORTICO_MIRROR_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub mirror_max_in_flight: u32,
    /// The largest request body copied to a mirror, in bytes; the copy of
    /// a larger one is dropped and counted (`result="dropped_body"`), the
    /// original streams on. With the default in-flight bound, at most
    /// 64 MiB of bodies are held.
    #[arg(long, env = "PORTICO_MIRROR_MAX_BODY", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(0..=16_777_216))]
    pub mirror_max_body: u32,
}

impl MirrorArgs {
    pub fn config(&self) -> portico_dataplane::filter::mirror::MirrorConfig {
        // u32 always fits a usize on the platforms portico builds for.
        let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        portico_dataplane::filter::mirror::MirrorConfig {
            max_in_flight: n(self.mirror_max_in_flight),
            max_body: n(self.mirror_max_body),
        }
    }
}

/// OpenTelemetry traces: where spans go and which requests make them.
#[derive(Args, Debug, Clone)]
pub struct TracingArgs {
    /// Trace every Ingress's requests unless its `enable-opentelemetry`
    /// annotation says `false` (ingress-nginx's ConfigMap key of the same
    /// name). Needs `--otlp-endpoint`.
    #[arg(long, env = "PORTICO_ENABLE_OPENTELEMETRY", default_value_t = false, action = clap::ArgAction::Set)]
    pub enable_opentelemetry: bool,
    /// The OpenTelemetry collector spans are exported to, e.g.
    /// `http://otel-collector.observability:4317` (gRPC) or `:4318` (HTTP;
    /// `/v1/traces` is added). Unset: nothing is traced, whatever the
    /// switches say.
    #[arg(long, env = "PORTICO_OTLP_ENDPOINT")]
    pub otlp_endpoint: Option<String>,
    /// OTLP over gRPC or over HTTP with protobuf bodies.
    #[arg(long, env = "PORTICO_OTLP_PROTOCOL", value_enum, default_value_t = OtlpProtocolArg::Grpc)]
    pub otlp_protocol: OtlpProtocolArg,
    /// The fraction of new traces recorded, 0 to 1; a request whose trusted
    /// `traceparent` says sampled (or not) follows it.
    #[arg(long, env = "PORTICO_OTEL_SAMPLER_RATIO", default_value_t = 1.0, value_parser = parse_ratio)]
    pub otel_sampler_ratio: f64,
    /// The `service.name` of every span.
    #[arg(long, env = "PORTICO_OTEL_SERVICE_NAME", default_value = "portico")]
    pub otel_service_name: String,
    /// Spans waiting for export before new ones are dropped (counted in
    /// `portico_trace_spans_dropped_total`).
    #[arg(long, env = "PORTICO_OTEL_MAX_QUEUE_SIZE", default_value_t = 2048, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub otel_max_queue_size: u32,
    /// How long a span may wait before its batch is exported (a duration:
    /// `5s`, `200ms`).
    #[arg(long, env = "PORTICO_OTEL_SCHEDULE_DELAY", default_value = "5s", value_parser = parse_duration)]
    pub otel_schedule_delay: Duration,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocolArg {
    Grpc,
    Http,
}

impl TracingArgs {
    /// The dataplane's tracing, or `None` without an endpoint.
    pub fn config(&self) -> anyhow::Result<Option<portico_dataplane::TraceConfig>> {
        let Some(endpoint) = &self.otlp_endpoint else {
            if self.enable_opentelemetry {
                anyhow::bail!("--enable-opentelemetry needs --otlp-endpoint");
            }
            return Ok(None);
        };
        let protocol = match self.otlp_protocol {
            OtlpProtocolArg::Grpc => portico_dataplane::OtlpProtocol::Grpc,
            OtlpProtocolArg::Http => portico_dataplane::OtlpProtocol::Http,
        };
        let mut config = portico_dataplane::TraceConfig::new(endpoint.clone(), protocol);
        config.enabled_by_default = self.enable_opentelemetry;
        config.sampler_ratio = self.otel_sampler_ratio;
        config.service_name = self.otel_service_name.clone();
        config.max_queue_size = usize::try_from(self.otel_max_queue_size).unwrap_or(usize::MAX);
        config.schedule_delay = self.otel_schedule_delay;
        Ok(Some(config))
    }
}

fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(format!("{s:?} is not a ratio between 0 and 1")),
    }
}

/// How basic-auth passwords are checked: off the proxy's workers, bounded.
#[derive(Args, Debug, Clone)]
pub struct BasicAuthArgs {
    /// Password hashes checked at once, on threads apart from the proxy's
    /// (bcrypt is slow on purpose). Default: the number of CPUs.
    #[arg(long, env = "PORTICO_BASIC_AUTH_CONCURRENCY", value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub basic_auth_concurrency: Option<u32>,
    /// Checks that may wait for one of those beyond them; past that a
    /// request answers 503 at once (counted in
    /// `portico_basic_auth_checks_total{result="overloaded"}`).
    #[arg(long, env = "PORTICO_BASIC_AUTH_QUEUE", default_value_t = 256, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub basic_auth_queue: u32,
    /// Credentials remembered after a successful check, per Secret, so a
    /// logged-in browser is not checked again on every request (as keyed
    /// hashes, never the password); 0: check every request.
    #[arg(long, env = "PORTICO_BASIC_AUTH_CACHE_ENTRIES", default_value_t = 1024, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub basic_auth_cache_entries: u32,
}

impl BasicAuthArgs {
    pub fn config(&self) -> portico_dataplane::filter::basic_auth::BasicAuthConfig {
        let defaults = portico_dataplane::filter::basic_auth::BasicAuthConfig::default();
        // u32 always fits a usize on the platforms portico builds for.
        let n = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        portico_dataplane::filter::basic_auth::BasicAuthConfig {
            concurrency: self.basic_auth_concurrency.map_or(defaults.concurrency, n),
            queue: n(self.basic_auth_queue),
            cache_entries: n(self.basic_auth_cache_entries),
        }
    }
}

/// How request paths are normalised and which request heads are refused
/// before routing.
#[derive(Args, Debug, Clone)]
pub struct RequestArgs {
    /// Normalise request paths before routing and forward the normalised
    /// path (`rfc3986`), or route on and forward the path as sent (`none`).
    #[arg(long, env = "PORTICO_PATH_NORMALIZATION", value_enum, default_value_t = PathNormalizationArg::Rfc3986)]
    pub path_normalization: PathNormalizationArg,
    /// Merge repeated slashes in request paths (`//a` is `/a`), as nginx's
    /// `merge_slashes`.
    #[arg(long, env = "PORTICO_MERGE_SLASHES", default_value_t = true, action = clap::ArgAction::Set)]
    pub merge_slashes: bool,
    /// What `%2F` and `%5C` in a request path do: stay encoded (`keep`),
    /// refuse the request (`reject`), or become `/` (`decode`).
    #[arg(long, env = "PORTICO_ESCAPED_SLASHES", value_enum, default_value_t = EscapedSlashesArg::Keep)]
    pub escaped_slashes: EscapedSlashesArg,
    /// Forward request headers whose names contain underscores (dropped
    /// otherwise, as nginx's `underscores_in_headers off`).
    #[arg(long, env = "PORTICO_UNDERSCORES_IN_HEADERS")]
    pub underscores_in_headers: bool,
    /// Longest request line, bytes (414 beyond).
    #[arg(long, env = "PORTICO_MAX_REQUEST_LINE_BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_request_line_bytes: u32,
    /// Longest request header line, bytes (431 beyond).
    #[arg(long, env = "PORTICO_MAX_HEADER_LINE_BYTES", default_value_t = 8192, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_header_line_bytes: u32,
    /// Largest request head (request line and headers), bytes (431 beyond).
    #[arg(long, env = "PORTICO_MAX_HEADER_BYTES", default_value_t = 32768, value_parser = clap::value_parser!(u32).range(1..))]
    pub max_header_bytes: u32,
    /// Most request headers (431 beyond). Above 100 each HTTP/1 request
    /// costs an allocation more.
    #[arg(long, env = "PORTICO_MAX_HEADERS", default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_headers: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PathNormalizationArg {
    Rfc3986,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum EscapedSlashesArg {
    Keep,
    Reject,
    Decode,
}

impl RequestArgs {
    pub fn path_policy(&self) -> PathPolicy {
        PathPolicy {
            normalization: match self.path_normalization {
                PathNormalizationArg::Rfc3986 => PathNormalization::Rfc3986,
                PathNormalizationArg::None => PathNormalization::None,
            },
            merge_slashes: self.merge_slashes,
            escaped_slashes: match self.escaped_slashes {
                EscapedSlashesArg::Keep => EscapedSlashes::Keep,
                EscapedSlashesArg::Reject => EscapedSlashes::Reject,
                EscapedSlashesArg::Decode => EscapedSlashes::Decode,
            },
        }
    }

    pub fn head_rules(&self) -> HeadRules {
        // u32 always fits a usize on the platforms portico builds for.
        let bytes = |n: u32| usize::try_from(n).unwrap_or(usize::MAX);
        HeadRules {
            max_request_line: bytes(self.max_request_line_bytes),
            max_header_line: bytes(self.max_header_line_bytes),
            max_header_bytes: bytes(self.max_header_bytes),
            max_headers: bytes(self.max_headers),
            underscores_in_headers: self.underscores_in_headers,
        }
    }
}

/// Whose word is taken for the client's address (ingress-nginx
/// `use-forwarded-headers`, `proxy-real-ip-cidr`, `use-proxy-protocol`).
#[derive(Args, Debug, Clone)]
pub struct ClientAddressArgs {
    /// Peers whose X-Forwarded-For, X-Forwarded-Proto, X-Forwarded-Host and
    /// X-Forwarded-Port are believed: CIDR ranges or addresses,
    /// comma-separated (`10.0.0.0/8,fd00::/8`). The client is then the
    /// rightmost X-Forwarded-For entry outside these ranges. Default: none
    /// (every forwarding header is replaced with what portico saw).
    #[arg(long, env = "PORTICO_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_range)]
    pub trusted_proxies: Vec<IpNet>,
    /// Every connection on the HTTP and HTTPS listeners begins with a PROXY
    /// protocol header (v1 or v2), as AWS NLB and other TCP load balancers
    /// send; its source address is the client's. Connections without one
    /// are closed.
    #[arg(long, env = "PORTICO_PROXY_PROTOCOL")]
    pub proxy_protocol: bool,
}

/// Where the debug pages are served, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DebugAddr {
    Off,
    Listen(SocketAddr),
}

/// The HTTPS listener's certificates, redirects and HSTS.
#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// `namespace/name` of a `kubernetes.io/tls` Secret served to TLS clients
    /// that send no SNI or an unknown name; default: a self-signed
    /// certificate generated at start.
    #[arg(long, env = "PORTICO_DEFAULT_SSL_CERTIFICATE", value_parser = parse_namespaced)]
    pub default_ssl_certificate: Option<(String, String)>,
    /// The public HTTPS port written into HTTP-to-HTTPS redirects, when it
    /// is not 443 (the Service usually maps 443 to `--https-addr`).
    #[arg(long, env = "PORTICO_HTTPS_REDIRECT_PORT")]
    pub https_redirect_port: Option<u16>,
    /// Send Strict-Transport-Security on HTTPS responses for TLS hosts
    /// (an Ingress may override with the `hsts` annotation).
    #[arg(long, env = "PORTICO_HSTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub hsts: bool,
    /// HSTS max-age, seconds.
    #[arg(long, env = "PORTICO_HSTS_MAX_AGE", default_value_t = Hsts::DEFAULT.max_age)]
    pub hsts_max_age: u64,
    /// Add includeSubDomains to HSTS.
    #[arg(long, env = "PORTICO_HSTS_INCLUDE_SUBDOMAINS", default_value_t = Hsts::DEFAULT.include_subdomains, action = clap::ArgAction::Set)]
    pub hsts_include_subdomains: bool,
    /// Add preload to HSTS.
    #[arg(long, env = "PORTICO_HSTS_PRELOAD", default_value_t = Hsts::DEFAULT.preload, action = clap::ArgAction::Set)]
    pub hsts_preload: bool,
    /// Honour `ssl-passthrough` Ingresses: their hosts' TLS goes
    /// undecrypted to the backend (one extra ClientHello parse per TLS
    /// connection).
    #[arg(long, env = "PORTICO_ENABLE_SSL_PASSTHROUGH")]
    pub enable_ssl_passthrough: bool,
}

impl TlsArgs {
    /// `settings` with these flags applied.
    pub fn apply(&self, settings: Settings) -> Settings {
        Settings {
            default_certificate: self.default_ssl_certificate.clone(),
            https_redirect_port: self.https_redirect_port,
            hsts_enabled: self.hsts,
            hsts: Hsts {
                max_age: self.hsts_max_age,
                include_subdomains: self.hsts_include_subdomains,
                preload: self.hsts_preload,
            },
            ssl_passthrough: self.enable_ssl_passthrough,
            ..settings
        }
    }
}

#[derive(Args, Debug, Clone)]
pub struct ValidateArgs {
    /// Manifest files or directories (searched for *.yaml / *.yml); `-`
    /// reads one stream from standard input (`helm template ... | portico
    /// validate -`).
    #[arg(required = true)]
    pub paths: Vec<PathBuf>,
    #[command(flatten)]
    pub class: ClassArgs,
    /// Fail (exit 1) on warnings too: unsupported annotations, values
    /// ignored, documents of kinds Portico does not read.
    #[arg(long)]
    pub strict: bool,
    /// `text` for people, `json` for machines, `github` for GitHub Actions
    /// workflow annotations.
    #[arg(long, short = 'o', value_enum, default_value_t = ValidateFormat::Text)]
    pub output: ValidateFormat,
}

#[derive(Args, Debug, Clone)]
pub struct WebhookArgs {
    /// Where the API server reaches the webhook (HTTPS, path `/validate`).
    #[arg(long, env = "PORTICO_WEBHOOK_ADDR", default_value = "0.0.0.0:8443")]
    pub webhook_addr: SocketAddr,
    /// PEM certificate chain served to the API server; read again when it
    /// changes (cert-manager rotates it in place).
    #[arg(long, env = "PORTICO_TLS_CERT_FILE")]
    pub tls_cert_file: PathBuf,
    /// PEM private key of that certificate.
    #[arg(long, env = "PORTICO_TLS_KEY_FILE")]
    pub tls_key_file: PathBuf,
    #[command(flatten)]
    pub class: ClassArgs,
}

#[derive(Args, Debug, Clone)]
pub struct ReportArgs {
    /// Kubeconfig file; default: $KUBECONFIG, ~/.kube/config, or the
    /// in-cluster service account.
    #[arg(long, env = "PORTICO_KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Only Ingresses of these classes (`spec.ingressClassName`, the
    /// legacy annotation, or the default IngressClass); repeat or
    /// comma-separate. Default: every Ingress.
    #[arg(long = "class", value_delimiter = ',')]
    pub classes: Vec<String>,
    /// Only this namespace. Default: all.
    #[arg(long, short = 'n')]
    pub namespace: Option<String>,
    #[arg(long, short = 'o', value_enum, default_value_t = ReportFormat::Text)]
    pub output: ReportFormat,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Text,
    Markdown,
    Json,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ValidateFormat {
    Text,
    Json,
    Github,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

impl ClassArgs {
    pub fn settings(&self) -> Settings {
        Settings {
            ingress_class: self.ingress_class.clone(),
            controller_name: self.controller_name.clone(),
            watch_ingress_without_class: self.watch_ingress_without_class,
            side_by_side_classes: self
                .watch_ingress_class
                .iter()
                .map(|c| c.trim())
                .filter(|c| !c.is_empty())
                .map(str::to_owned)
                .collect(),
            allowlist_source_range: self.allowlist_source_range.clone(),
            denylist_source_range: self.denylist_source_range.clone(),
            default_backend_service: self.default_backend_service.clone(),
            custom_http_errors: self.custom_http_errors.clone(),
            allow_cross_namespace_auth_secret: self.allow_cross_namespace_auth_secret,
            global_auth: self.global_auth_url.clone().map(|url| {
                let mut auth = ExternalAuth::new(url);
                auth.signin = self.global_auth_signin.clone();
                auth.response_headers = self.global_auth_response_headers.clone();
                auth.method = self.global_auth_method.clone();
                auth
            }),
            limit_req_status: self.limit_req_status_code,
            limit_conn_status: self.limit_conn_status_code,
            global_limit_status: self.global_rate_limit_status_code,
            gateway_controller_name: self.gateway_controller_name.clone(),
            gateway_http_port: self.gateway_http_port,
            gateway_https_port: self.gateway_https_port,
            gateway_port_offset: self.gateway_port_offset,
            ..Settings::default()
        }
    }
}

/// A whole number of seconds (`30`), or a duration as Gateway API writes
/// it (`30s`, `1500ms`, `2m`, `1m30s`): one grammar for users to learn.
fn parse_duration(s: &str) -> Result<Duration, String> {
    s.parse()
        .ok()
        .map(Duration::from_secs)
        .or_else(|| crate::translate::parse_duration(s))
        .ok_or_else(|| format!("{s:?} is not a duration such as 30s, 1500ms or 1m30s"))
}

/// `--global-auth-url`.
fn parse_auth_url(s: &str) -> Result<Template, String> {
    Template::service_url(s).map_err(|e| e.to_string())
}

/// `--global-auth-signin`.
fn parse_auth_signin(s: &str) -> Result<Template, String> {
    Template::signin_url(s).map_err(|e| e.to_string())
}

/// A `--global-auth-response-headers` entry: a header a user may set.
fn parse_auth_response_header(s: &str) -> Result<HeaderName, String> {
    let name = HeaderName::from_bytes(s.trim().as_bytes())
        .map_err(|_| format!("{s:?} is not a header name"))?;
    portico_dataplane::model::user_settable(&name)
        .map_err(|reason| format!("{name} cannot be set: {reason}"))?;
    Ok(name)
}

/// `--global-auth-method`: a method in capitals.
fn parse_auth_method(s: &str) -> Result<Method, String> {
    if s.is_empty() || s.len() > 32 || !s.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("{s:?} is not an HTTP method in capitals, e.g. GET"));
    }
    Method::from_bytes(s.as_bytes()).map_err(|e| e.to_string())
}

/// A `--trusted-proxies` entry.
fn parse_range(s: &str) -> Result<IpNet, String> {
    portico_dataplane::request::forwarded::parse_range(s).map_err(|e| e.to_string())
}

/// A `--custom-http-errors` entry.
fn parse_error_code(s: &str) -> Result<u16, String> {
    crate::annotations::error_code(s).map_err(|e| format!("{s:?}: {e}"))
}

/// `namespace/name[:port]`: Kubernetes names, the port a number or a
/// Service port name.
fn parse_service_ref(s: &str) -> Result<ServiceRef, String> {
    let bad = || format!("{s:?} is not namespace/name[:port]");
    let (namespace, rest) = s.split_once('/').ok_or_else(bad)?;
    let (name, port) = match rest.split_once(':') {
        Some((name, port)) => (name, Some(port)),
        None => (rest, None),
    };
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if !label(namespace) || !label(name) {
        return Err(bad());
    }
    let port = match port {
        None => None,
        Some(p) if p.bytes().all(|b| b.is_ascii_digit()) => match p.parse::<u16>() {
            Ok(n) if n > 0 => Some(PortRef::Number(i32::from(n))),
            _ => return Err(format!("{s:?}: port {p:?} is not 1 to 65535")),
        },
        Some(p) if label(p) && p.len() <= 15 => Some(PortRef::Name(p.to_owned())),
        Some(p) => {
            return Err(format!(
                "{s:?}: {p:?} is neither a port number nor a port name"
            ));
        }
    };
    Ok(ServiceRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port,
    })
}

/// `off`, or an address to listen on.
fn parse_debug_addr(s: &str) -> Result<DebugAddr, String> {
    if s == "off" {
        return Ok(DebugAddr::Off);
    }
    s.parse()
        .map(DebugAddr::Listen)
        .map_err(|_| format!("{s:?} is neither an address such as 127.0.0.1:10255 nor off"))
}

/// `namespace/name`, both non-empty.
fn parse_namespaced(s: &str) -> Result<(String, String), String> {
    match s.split_once('/') {
        Some((ns, name)) if !ns.is_empty() && !name.is_empty() && !name.contains('/') => {
            Ok((ns.to_owned(), name.to_owned()))
        }
        _ => Err(format!("{s:?} is not namespace/name")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_as_seconds_or_gateway_api_durations() {
        let secs = Duration::from_secs;
        assert_eq!(parse_duration("30"), Ok(secs(30)));
        assert_eq!(parse_duration("30s"), Ok(secs(30)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(secs(120)));
        assert_eq!(parse_duration("1m30s"), Ok(secs(90)));
        for bad in ["", "s", "-1s", "1.5s", "30 s", "ten"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
    }

    fn run_args(extra: &[&str]) -> Result<RunArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["portico", "run"][..], extra].concat())?;
        match cli.command {
            Command::Run(args) => Ok(*args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn basic_auth_flags_bound_the_checks() {
        let config = |extra: &[&str]| run_args(extra).unwrap().basic_auth.config();
        let default = config(&[]);
        assert_eq!((default.queue, default.cache_entries), (256, 1024));
        assert!(default.concurrency >= 1);
        let set = config(&[
            "--basic-auth-concurrency=3",
            "--basic-auth-queue=0",
            "--basic-auth-cache-entries=0",
        ]);
        assert_eq!((set.concurrency, set.queue, set.cache_entries), (3, 0, 0));
        assert!(run_args(&["--basic-auth-concurrency=0"]).is_err());
    }

    #[test]
    fn limit_flags_default_to_ingress_nginx() {
        let args = run_args(&[]).unwrap();
        let settings = args.class.settings();
        assert_eq!(
            (settings.limit_req_status, settings.limit_conn_status),
            (503, 503)
        );
        assert_eq!(args.limit_max_keys, 100_000);
        let mirror = args.mirror.config();
        assert_eq!(
            (mirror.max_in_flight, mirror.max_body),
            (
                portico_dataplane::filter::mirror::DEFAULT_MAX_IN_FLIGHT,
                portico_dataplane::filter::mirror::DEFAULT_MAX_BODY
            )
        );
        let args = run_args(&[
            "--limit-req-status-code=429",
            "--limit-conn-status-code=429",
            "--limit-max-keys=10",
        ])
        .unwrap();
        let settings = args.class.settings();
        assert_eq!(
            (settings.limit_req_status, settings.limit_conn_status),
            (429, 429)
        );
        assert_eq!(args.limit_max_keys, 10);
        assert!(run_args(&["--limit-req-status-code=200"]).is_err());
        assert!(run_args(&["--limit-max-keys=0"]).is_err());
    }

    #[test]
    fn global_limit_flags() {
        let args = run_args(&[]).unwrap();
        assert_eq!(args.class.settings().global_limit_status, 429);
        let g = &args.global_limits;
        assert!(g.redis_url.is_none() && !g.global_rate_limit_fail_closed);
        assert_eq!(g.redis_timeout, Duration::from_millis(50));
        assert_eq!(g.redis_connect_timeout, Duration::from_secs(1));
        assert!(g.config().unwrap().redis.is_none());

        let args = run_args(&[
            "--redis-url=rediss://user:hunter2@redis.example:6380/2",
            "--redis-timeout=20ms",
            "--global-rate-limit-fail-closed",
            "--global-rate-limit-status-code=503",
        ])
        .unwrap();
        let g = &args.global_limits;
        assert_eq!(g.redis_timeout, Duration::from_millis(20));
        let config = g.config().unwrap();
        assert!(config.fail_closed && config.redis.is_some());
        assert_eq!(args.class.settings().global_limit_status, 503);
        // The password never shows.
        assert!(!format!("{args:?}").contains("hunter2"));

        for bad in [
            "--redis-url=http://redis:6379",
            "--redis-url=redis://",
            "--global-rate-limit-status-code=200",
            "--redis-ca-file=/ca.pem",
        ] {
            assert!(run_args(&[bad]).is_err(), "{bad}");
        }
        // A CA file needs TLS, and must hold a certificate.
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "not a certificate").unwrap();
        let ca_arg = format!("--redis-ca-file={}", ca.display());
        let args = run_args(&["--redis-url=rediss://redis:6380", &ca_arg]).unwrap();
        assert!(args.global_limits.config().is_err());
        let args = run_args(&["--redis-url=redis://redis:6379", &ca_arg]).unwrap();
        assert!(args.global_limits.config().is_err());
    }

    #[test]
    fn tracing_needs_an_endpoint_and_a_ratio_within_bounds() {
        let tracing = |extra: &[&str]| run_args(extra).map(|a| a.tracing.config());
        assert!(tracing(&[]).unwrap().unwrap().is_none());
        assert!(
            tracing(&["--enable-opentelemetry", "true"])
                .unwrap()
                .is_err()
        );
        let config = tracing(&[
            "--otlp-endpoint",
            "http://collector:4318",
            "--otlp-protocol",
            "http",
            "--otel-sampler-ratio",
            "0.25",
        ])
        .unwrap()
        .unwrap()
        .unwrap();
        assert_eq!(config.protocol, portico_dataplane::OtlpProtocol::Http);
        assert_eq!(config.sampler_ratio, 0.25);
        assert!(!config.enabled_by_default);
        assert_eq!(config.service_name, "portico");
        assert!(run_args(&["--otel-sampler-ratio", "1.5"]).is_err());
    }

    #[test]
    fn drain_timeout_defaults_to_30s() {
        let run = |extra: &[&str]| run_args(extra).unwrap().drain_timeout;
        assert_eq!(run(&[]), Duration::from_secs(30));
        assert_eq!(run(&["--drain-timeout", "5s"]), Duration::from_secs(5));
    }

    fn request_args(extra: &[&str]) -> Result<RequestArgs, clap::Error> {
        let cli = Cli::try_parse_from([&["portico", "run"][..], extra].concat())?;
        match cli.command {
            Command::Run(args) => Ok(args.request),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn request_flags_default_to_the_secure_settings() {
        let args = request_args(&[]).unwrap();
        assert_eq!(args.path_policy(), PathPolicy::default());
        assert_eq!(args.head_rules(), HeadRules::default());
        let args = request_args(&[
            "--path-normalization=none",
            "--merge-slashes=false",
            "--escaped-slashes=decode",
            "--underscores-in-headers",
            "--max-request-line-bytes=100",
            "--max-header-line-bytes=200",
            "--max-header-bytes=300",
            "--max-headers=40",
        ])
        .unwrap();
        assert_eq!(
            args.path_policy(),
            PathPolicy {
                normalization: PathNormalization::None,
                merge_slashes: false,
                escaped_slashes: EscapedSlashes::Decode,
            }
        );
        assert_eq!(
            args.head_rules(),
            HeadRules {
                max_request_line: 100,
                max_header_line: 200,
                max_header_bytes: 300,
                max_headers: 40,
                underscores_in_headers: true,
            }
        );
        for bad in [
            "--path-normalization=nginx",
            "--escaped-slashes=drop",
            "--max-headers=0",
            "--max-header-bytes=-1",
        ] {
            assert!(request_args(&[bad]).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn client_address_flags_default_to_trusting_no_one() {
        let run = |extra: &[&str]| {
            let cli = Cli::try_parse_from([&["portico", "run"][..], extra].concat());
            cli.map(|c| match c.command {
                Command::Run(args) => args.client_address,
                other => panic!("parsed as {other:?}"),
            })
        };
        let default = run(&[]).unwrap();
        assert!(default.trusted_proxies.is_empty());
        assert!(!default.proxy_protocol);

        let set = run(&[
            "--trusted-proxies",
            "10.0.0.0/8, 192.0.2.1,fd00::/8",
            "--proxy-protocol",
        ])
        .unwrap();
        let ranges: Vec<String> = set.trusted_proxies.iter().map(|r| r.to_string()).collect();
        assert_eq!(ranges, ["10.0.0.0/8", "192.0.2.1/32", "fd00::/8"]);
        assert!(set.proxy_protocol);

        let e = run(&["--trusted-proxies", "10.0.0.0/8,10.0.0.0/33"]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("--trusted-proxies") && text.contains("\"10.0.0.0/33\""),
            "{text}"
        );
    }

    #[test]
    fn global_auth_flags_make_one_policy() {
        let class = |extra: &[&str]| run_args(extra).map(|a| a.class);
        assert_eq!(class(&[]).unwrap().settings().global_auth, None);
        let settings = class(&[
            "--global-auth-url",
            "http://oauth2-proxy.auth.svc:4180/oauth2/auth",
            "--global-auth-signin",
            "https://$host/oauth2/start?rd=$escaped_request_uri",
            "--global-auth-response-headers",
            "X-Auth-Request-User,X-Auth-Request-Email",
            "--global-auth-method",
            "HEAD",
        ])
        .unwrap()
        .settings();
        let auth = settings.global_auth.unwrap();
        assert_eq!(
            auth.url.as_str(),
            "http://oauth2-proxy.auth.svc:4180/oauth2/auth"
        );
        assert_eq!(
            auth.signin.unwrap().as_str(),
            "https://$host/oauth2/start?rd=$escaped_request_uri"
        );
        assert_eq!(
            auth.response_headers,
            ["x-auth-request-user", "x-auth-request-email"]
        );
        assert_eq!(auth.method, Some(Method::HEAD));
        for bad in [
            &["--global-auth-url", "http://$host/auth"][..],
            &["--global-auth-url", "http://a.test/$remote_addr"],
            &["--global-auth-signin", "https://a.test/"],
            &[
                "--global-auth-url",
                "http://a.test/",
                "--global-auth-response-headers",
                "Host",
            ],
            &[
                "--global-auth-url",
                "http://a.test/",
                "--global-auth-method",
                "get",
            ],
        ] {
            assert!(class(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn error_page_flags_parse_as_ingress_nginx_writes_them() {
        let class = |extra: &[&str]| run_args(extra).map(|a| a.class);
        let none = class(&[]).unwrap();
        assert_eq!(none.default_backend_service, None);
        assert!(none.custom_http_errors.is_empty());

        let set = class(&[
            "--default-backend-service",
            "ingress/errors",
            "--custom-http-errors",
            "404, 503,500",
        ])
        .unwrap();
        let settings = set.settings();
        assert_eq!(
            settings.default_backend_service,
            Some(ServiceRef {
                namespace: "ingress".into(),
                name: "errors".into(),
                port: None,
            })
        );
        assert_eq!(settings.custom_http_errors, [404, 503, 500]);
        let port = |v: &str| {
            class(&["--default-backend-service", v])
                .unwrap()
                .default_backend_service
                .unwrap()
                .port
        };
        assert_eq!(port("a/b:8080"), Some(PortRef::Number(8080)));
        assert_eq!(port("a/b:http"), Some(PortRef::Name("http".into())));

        for bad in [
            "errors",
            "a/b/c",
            "A/b",
            "a/",
            "/b",
            "a/b:0",
            "a/b:70000",
            "a/b:Http",
            "a/b:",
        ] {
            assert!(
                class(&["--default-backend-service", bad]).is_err(),
                "{bad:?} accepted"
            );
        }
        for bad in ["200", "404,600", "4xx", "404;503"] {
            let e = class(&["--custom-http-errors", bad])
                .unwrap_err()
                .to_string();
            assert!(e.contains("--custom-http-errors"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn debug_pages_default_to_loopback_and_can_be_turned_off() {
        let debug = |extra: &[&str]| run_args(extra).map(|a| a.debug_addr);
        let loopback = "127.0.0.1:10255".parse().unwrap();
        assert_eq!(debug(&[]).unwrap(), DebugAddr::Listen(loopback));
        assert_eq!(debug(&["--debug-addr", "off"]).unwrap(), DebugAddr::Off);
        let any = "0.0.0.0:9999".parse().unwrap();
        assert_eq!(
            debug(&["--debug-addr", "0.0.0.0:9999"]).unwrap(),
            DebugAddr::Listen(any)
        );
        for bad in ["", "Off", "none", "10255", "localhost:10255"] {
            assert!(debug(&["--debug-addr", bad]).is_err(), "{bad:?} accepted");
        }
    }
}
