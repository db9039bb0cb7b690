//! Portico's embedded dataplane.
//!
//! The controller turns Kubernetes objects into a [`model::RouteConfig`] and
//! hands it to [`Dataplane::publish`]; the dataplane compiles it into an
//! immutable [`table::RouteTable`] off the request path and swaps one pointer.
//! Requests load the current table once and finish on it, so a swap never
//! fails or mixes a request. This crate knows nothing of Kubernetes.
#![forbid(unsafe_code)]

// Folders in the order a request meets them.
// Where a connection comes in: accept loops, PROXY header, TLS.
pub mod listen;
// What is checked and derived before routing.
pub mod request;
// Which rule a request belongs to.
pub mod route;
// The rule's policies, request side then response side.
pub mod filter;
// Which endpoint, and retries.
pub(crate) mod balance;
// Pooled connections to the endpoints, and their health.
pub(crate) mod upstream;
// Streaming bodies both ways.
pub(crate) mod body;
// The request's phases end to end, and the one answer renderer.
pub(crate) mod proxy;
// gRPC and gRPC-Web framing and statuses.
pub(crate) mod grpc;
// Metrics and the access log.
pub(crate) mod observe;

// Besides the flow.
pub(crate) mod admin;
mod headers;
pub mod model;
pub(crate) mod store;

use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

// Paths the controller's annotation parsers name (kept while that code
// moves on another branch).
pub use crate::filter::basic_auth;
pub use crate::filter::external_auth;
pub use crate::request::forwarded;
pub use crate::route::pattern;

pub use crate::listen::server::ListenerConfig;
pub use crate::observe::AccessLogSink;
pub use crate::observe::trace::{OtlpProtocol, TraceConfig};
pub use crate::route::router::RouteError;
pub use crate::route::table::RouteTable;
pub use crate::upstream::PoolConfig;
pub use crate::upstream::health::EndpointReport;

use crate::admin::PageSet;
use crate::listen::ports::{self, GatewayPorts};
use crate::listen::server::Serving;
use crate::listen::tls::{CertConfig, CertTable, ServerCert};
use crate::listen::{server, tls};
use crate::model::RouteConfig;
use crate::observe::{AccessLog, Metrics, RouteStats};
use crate::upstream::Upstreams;
use crate::upstream::health;

/// Static settings, validated once at start.
pub struct DataplaneConfig {
    pub listener: ListenerConfig,
    pub pool: PoolConfig,
    pub access_log: AccessLogSink,
    /// Lines buffered for the access-log writer before lines are dropped.
    pub access_log_capacity: usize,
    /// On shutdown, how long in-flight requests may take to finish.
    pub drain_timeout: Duration,
    /// Peers whose `X-Forwarded-*` headers are believed
    /// (`--trusted-proxies`); none by default.
    pub trusted_proxies: forwarded::TrustedProxies,
    /// Basic auth's verification limits and cache size (`--basic-auth-*`).
    pub basic_auth: basic_auth::BasicAuthConfig,
    /// Client keys tracked per limit policy (`--limit-max-keys`).
    pub limits: filter::rate_limit::LimitConfig,
    /// OTLP trace export (`--otlp-endpoint`); `None`: no rule traces.
    pub tracing: Option<TraceConfig>,
    /// Global limits' Redis (`--redis-*`) and failure mode.
    pub global_limits: filter::global_rate_limit::GlobalLimitConfig,
    /// Request mirroring's bounds (`--mirror-max-in-flight`, `--mirror-max-body`).
    pub mirror: filter::mirror::MirrorConfig,
    /// The address Gateway listener ports ([`model::GatewayPort`]) are
    /// bound on; `0.0.0.0` by default.
    pub gateway_address: IpAddr,
}

impl Default for DataplaneConfig {
    fn default() -> Self {
        Self {
            listener: ListenerConfig::default(),
            pool: PoolConfig::default(),
            access_log: AccessLogSink::Stdout,
            access_log_capacity: 16 * 1024,
            drain_timeout: Duration::from_secs(30),
            trusted_proxies: forwarded::TrustedProxies::default(),
            basic_auth: basic_auth::BasicAuthConfig::default(),
            limits: filter::rate_limit::LimitConfig::default(),
            tracing: None,
            global_limits: filter::global_rate_limit::GlobalLimitConfig::default(),
            mirror: filter::mirror::MirrorConfig::default(),
            gateway_address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        }
    }
}

/// The sockets [`Dataplane::serve_listeners`] serves, bound by the caller
/// (tests bind port 0).
pub struct Listeners {
    /// Plain HTTP traffic.
    pub http: TcpListener,
    /// TLS traffic, when served.
    pub https: Option<TcpListener>,
    /// `/healthz`, `/readyz`, `/metrics`: for the kubelet and scrapers.
    pub admin: TcpListener,
    /// `/debug/routes`, `/debug/endpoints`: the route table and pod
    /// addresses, so meant for loopback; `None` serves them nowhere.
    pub debug: Option<TcpListener>,
}

/// A Gateway port, and `Ok` when its socket is open, else why not.
pub type PortOutcome = (u16, Result<(), String>);

/// What a publish did.
#[derive(Debug)]
pub struct PublishReport {
    pub generation: u64,
    /// Rules left out because they could not be compiled.
    pub errors: Vec<RouteError>,
    /// Each Gateway port of the config, in port order: `Ok` when its
    /// socket is open (bound now or kept), else why not (a bind error
    /// such as `address in use`, a port listed twice, a main listener's
    /// port). A port that failed is tried again on the next publish.
    pub ports: Vec<PortOutcome>,
}

/// State shared by every connection and the admin listener.
pub(crate) struct Shared {
    /// Shared with the metrics collector, which reads it at scrape time.
    pub(crate) table: Arc<ArcSwap<RouteTable>>,
    pub(crate) metrics: Metrics,
    pub(crate) no_route_stats: Arc<RouteStats>,
    pub(crate) access_log: AccessLog,
    pub(crate) listener: ListenerConfig,
    pub(crate) trusted_proxies: forwarded::TrustedProxies,
    /// Certificates by SNI; read by the TLS resolver on every handshake.
    pub(crate) certs: Arc<ArcSwap<CertTable>>,
    /// Served when no default certificate is published.
    self_signed: Arc<ServerCert>,
    pub(crate) tls: Arc<rustls::ServerConfig>,
    upstreams: Upstreams,
    /// What filters keep across table swaps.
    filter_state: filter::FilterState,
    drain_timeout: Duration,
    generation: AtomicU64,
    draining: AtomicBool,
    /// Serialises publishers so generations are published in order. Never
    /// taken on the request path.
    publish: Mutex<()>,
    /// The Gateway ports' sockets, bound by `publish`.
    gateway_ports: GatewayPorts,
    /// The main listeners' ports, once serving: no Gateway port may take
    /// one. Read by `publish` only.
    main_ports: ArcSwap<Vec<u16>>,
}

impl Shared {
    pub(crate) fn is_ready(&self) -> bool {
        self.generation.load(Ordering::Acquire) > 0 && !self.is_draining()
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// The global limits' Redis, for `/readyz`.
    pub(crate) fn global_limit_status(&self) -> Option<String> {
        self.filter_state.global_limit_status()
    }
}

/// Handle to the dataplane; cheap to clone.
#[derive(Clone)]
pub struct Dataplane {
    shared: Arc<Shared>,
}

// === impl Dataplane ===

impl Dataplane {
    /// Builds the dataplane; starts the access-log writer thread.
    pub fn new(config: DataplaneConfig) -> std::io::Result<Self> {
        let mut metrics = Metrics::new();
        let access_log = AccessLog::start(
            config.access_log,
            config.access_log_capacity,
            metrics.access_log_dropped.clone(),
        )?;
        let upstreams = Upstreams::new(config.pool, metrics.upstream_connect_errors.clone())
            .with_unresolved_counter(metrics.backend_unresolved.clone());
        let table = Arc::new(ArcSwap::from_pointee(RouteTable::empty()));
        metrics.register_upstreams(Arc::clone(&table), Arc::clone(upstreams.health()));
        let no_route_stats = metrics.route_stats(observe::NO_ROUTE);
        let mut filter_state = filter::FilterState::new(basic_auth::Verifier::new(
            config.basic_auth,
            metrics.basic_auth.clone(),
        ))
        .with_external_auth(filter::external_auth::ExternalAuthState::new(
            metrics.external_auth.clone(),
        ))
        .with_limits(filter::rate_limit::Limits::new(
            config.limits,
            metrics.limits.clone(),
        ))
        .with_jwt(filter::jwt::JwtState::new(metrics.jwt.clone()))
        .with_global_limits(filter::global_rate_limit::GlobalLimits::new(
            config.global_limits,
            &metrics.global_limits,
            &metrics.limits,
        ))
        .with_mirror(filter::mirror::MirrorState::new(
            config.mirror,
            metrics.mirror.clone(),
        ));
        filter_state.tracing = config
            .tracing
            .map(|c| observe::trace::Tracing::start(c, metrics.trace_spans_dropped.clone()))
            .transpose()
            .map_err(std::io::Error::other)?
            .map(Arc::new);
        let self_signed =
            Arc::new(ServerCert::self_signed(&["portico.invalid"]).map_err(std::io::Error::other)?);
        let certs = Arc::new(ArcSwap::from_pointee(CertTable::build(
            &CertConfig::default(),
            &self_signed,
            &metrics.tls_default_certificate,
        )));
        let tls =
            tls::main_server_config(Arc::clone(&certs), metrics.tls_default_certificate.clone())
                .map_err(std::io::Error::other)?;
        Ok(Self {
            shared: Arc::new(Shared {
                table,
                metrics,
                no_route_stats,
                access_log,
                listener: config.listener,
                trusted_proxies: config.trusted_proxies,
                certs,
                self_signed,
                tls,
                upstreams,
                filter_state,
                drain_timeout: config.drain_timeout,
                generation: AtomicU64::new(0),
                draining: AtomicBool::new(false),
                publish: Mutex::new(()),
                gateway_ports: GatewayPorts::new(config.gateway_address),
                main_ports: ArcSwap::default(),
            }),
        })
    }

    /// Exports the spans still queued and stops the trace exporter; blocks
    /// up to its export timeout, so call it off the async workers. Spans
    /// of later requests are not exported.
    pub fn shutdown_tracing(&self) {
        if let Some(t) = &self.shared.filter_state.tracing {
            t.shutdown();
        }
    }

    /// Compiles `config` into a new table and makes it live atomically.
    /// Requests already routed finish on the table they started with.
    pub fn publish(&self, config: RouteConfig) -> PublishReport {
        let s = &self.shared;
        // Poisoning only means another publisher panicked; the table it was
        // building was never published, so carrying on is safe.
        let _guard = s.publish.lock().unwrap_or_else(|p| p.into_inner());
        let generation = s.generation.load(Ordering::Acquire) + 1;
        // The live table is the last one published (this lock is held):
        // the build carries its unchanged routes over.
        let previous = s.table.load_full();
        let table = RouteTable::build(
            generation,
            config,
            &s.main_ports.load(),
            (&s.upstreams, &s.metrics, &s.filter_state),
            Some(&previous),
        );
        drop(previous);
        let errors = table.errors().to_vec();
        let published_at = table.published_at();
        let ports = self.open_gateway_ports(&table);
        let table = Arc::new(table);
        s.table.store(Arc::clone(&table));
        // What only the old table named goes with its last request (at once
        // when none is running); the store forgets it now or next time.
        s.upstreams.prune();
        s.filter_state.prune();
        let config = table.config();
        s.metrics.retain_routes(
            &config
                .routes
                .iter()
                .chain(config.ports.iter().flat_map(|p| &p.routes))
                .map(|r| r.id.as_str())
                .collect(),
        );
        s.generation.store(generation, Ordering::Release);
        s.metrics.table_generation.set(generation as i64);
        s.metrics.table_last_swap.set(
            published_at
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        s.metrics.table_rejected_rules.set(errors.len() as i64);
        for e in &errors {
            warn!(error = %e, "rule left out of the routing table");
        }
        info!(
            generation,
            rejected = errors.len(),
            "routing table published"
        );
        PublishReport {
            generation,
            errors,
            ports,
        }
    }

    /// Binds the table's new Gateway ports and lets go of those it no
    /// longer serves (none while draining); each port's outcome, the
    /// table's refusals included, in port order.
    fn open_gateway_ports(&self, table: &RouteTable) -> Vec<PortOutcome> {
        let s = &self.shared;
        let (mut outcomes, open) = if s.is_draining() {
            s.gateway_ports.close_all();
            let wanted: Vec<_> = table.gateway_ports().map(|(p, _)| (p, Ok(()))).collect();
            (GatewayPorts::refused(&wanted), 0)
        } else {
            s.gateway_ports.reconcile(table.gateway_ports())
        };
        s.metrics.gateway_ports_open.set(open as i64);
        for (port, reason) in table.port_errors() {
            warn!(port, reason, "Gateway port left out");
            outcomes.push((*port, Err(reason.clone())));
        }
        outcomes.sort_by_key(|(port, _)| *port);
        outcomes
    }

    /// Makes a certificate set live atomically: the next handshake sees it,
    /// established connections keep what they negotiated. Publish
    /// certificates before the routes that need them.
    pub fn publish_certs(&self, config: CertConfig) {
        let s = &self.shared;
        let _guard = s.publish.lock().unwrap_or_else(|p| p.into_inner());
        let table = CertTable::build(&config, &s.self_signed, &s.metrics.tls_default_certificate);
        s.upstreams.set_client_certs(
            config
                .upstream_client_certs
                .iter()
                .map(|(id, c)| (id.clone(), Arc::clone(c.certified_key())))
                .collect(),
        );
        s.certs.store(Arc::new(table));
        let gauges = &s.metrics.tls_cert_not_after;
        gauges.clear();
        let default = config.default.as_deref().unwrap_or(&s.self_signed);
        let default_name = if config.default.is_some() {
            "default-ssl-certificate"
        } else {
            "self-signed"
        };
        gauges
            .get_or_create(&observe::CertLabels {
                certificate: default_name.into(),
            })
            .set(default.info().not_after);
        let port_bindings = config.ports.iter().flat_map(|p| &p.bindings);
        for b in config.bindings.iter().chain(port_bindings) {
            gauges
                .get_or_create(&observe::CertLabels {
                    certificate: b.name.clone(),
                })
                .set(b.cert.info().not_after);
        }
        info!(
            certificates = config.bindings.len(),
            "certificates published"
        );
    }

    /// The live table.
    pub fn current(&self) -> Arc<RouteTable> {
        self.shared.table.load_full()
    }

    pub fn is_ready(&self) -> bool {
        self.shared.is_ready()
    }

    /// Every endpoint of the live table with its health (`/debug/endpoints`).
    pub fn endpoint_health(&self) -> Vec<health::EndpointReport> {
        self.shared.table.load().endpoint_health()
    }

    /// Active health checks running now: one per distinct endpoint and
    /// check, however many routes share it.
    pub fn live_health_checks(&self) -> usize {
        self.shared.upstreams.live_checks()
    }

    /// Prometheus text of every dataplane metric.
    pub fn encode_metrics(&self) -> Result<String, std::fmt::Error> {
        self.shared.metrics.encode()
    }

    /// Serves the proxy and admin listeners until `shutdown` completes, then
    /// drains: readiness fails, the proxy stops accepting, in-flight requests
    /// get up to the drain timeout. Returns whether the drain finished in time.
    /// No debug pages: see [`Dataplane::serve_listeners`].
    pub async fn serve(
        &self,
        proxy: TcpListener,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> bool {
        self.serve_with_https(proxy, None, admin, shutdown).await
    }

    /// [`Dataplane::serve`], plus an HTTPS listener when `https` is given.
    pub async fn serve_with_https(
        &self,
        proxy: TcpListener,
        https: Option<TcpListener>,
        admin: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> bool {
        let listeners = Listeners {
            http: proxy,
            https,
            admin,
            debug: None,
        };
        self.serve_listeners(listeners, shutdown).await
    }

    /// [`Dataplane::serve`] on every listener in `listeners`, the debug pages
    /// included when it has a debug listener.
    pub async fn serve_listeners(
        &self,
        listeners: Listeners,
        shutdown: impl Future<Output = ()>,
    ) -> bool {
        let Listeners {
            http: proxy,
            https,
            admin,
            debug,
        } = listeners;
        let shared = &self.shared;
        let (stop_tx, stop_rx) = watch::channel(false);
        let (drain_tx, mut drain_rx) = mpsc::channel::<()>(1);
        let main_ports = [Some(&proxy), https.as_ref()]
            .into_iter()
            .flatten()
            .filter_map(|l| l.local_addr().ok())
            .map(|a| a.port())
            .collect();
        shared.main_ports.store(Arc::new(main_ports));
        let https_task = https.map(|listener| {
            tokio::spawn(server::serve_proxy(
                Arc::clone(shared),
                listener,
                Serving::Main { tls: true },
                stop_rx.clone(),
                drain_tx.clone(),
            ))
        });
        // Sockets bound by publishes before now are served from the start.
        let ports_task = tokio::spawn(ports::serve_ports(
            Arc::clone(shared),
            shared.gateway_ports.subscribe(),
            stop_rx.clone(),
            drain_tx.clone(),
        ));
        let proxy_task = tokio::spawn(server::serve_proxy(
            Arc::clone(shared),
            proxy,
            Serving::Main { tls: false },
            stop_rx.clone(),
            drain_tx,
        ));
        let (admin_stop_tx, admin_stop_rx) = watch::channel(false);
        let admin_task = tokio::spawn(admin::serve_admin(
            Arc::clone(shared),
            admin,
            PageSet::Probes,
            admin_stop_rx.clone(),
        ));
        let debug_task = debug.map(|listener| {
            tokio::spawn(admin::serve_admin(
                Arc::clone(shared),
                listener,
                PageSet::Debug,
                admin_stop_rx,
            ))
        });
        let sweeper = tokio::spawn(sweep_idle_connections(Arc::clone(shared)));

        shutdown.await;
        info!("shutting down: draining connections");
        shared.draining.store(true, Ordering::Release);
        let _ = stop_tx.send(true);
        let _ = proxy_task.await;
        if let Some(t) = https_task {
            let _ = t.await;
        }
        let _ = ports_task.await;
        // Refused from now on, like the main listeners' ports.
        shared.gateway_ports.close_all();
        shared.metrics.gateway_ports_open.set(0);
        // Every connection holds a drain sender: recv() ends when all are gone.
        let drained = tokio::time::timeout(shared.drain_timeout, drain_rx.recv())
            .await
            .is_ok();
        if !drained {
            warn!(timeout = ?shared.drain_timeout, "drain deadline passed with requests in flight");
        }
        sweeper.abort();
        let _ = admin_stop_tx.send(true);
        let _ = admin_task.await;
        if let Some(t) = debug_task {
            let _ = t.await;
        }
        drained
    }
}

/// Closes idle upstream connections past their time, for as long as the
/// dataplane serves.
async fn sweep_idle_connections(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(shared.upstreams.sweep_period());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        shared.upstreams.sweep_idle();
    }
}
