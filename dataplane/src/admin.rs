//! The admin and debug listeners: one router over every admin page, each
//! listener serving one [`PageSet`]. Probes and metrics must be reachable by
//! the kubelet and scrapers; the debug pages show the route table and pod
//! addresses, so they live on a listener of their own, loopback by default
//! (as Envoy's admin and ingress-nginx's `/configuration`).

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, warn};

use crate::Shared;
use crate::model::{Filter, RouteConfig};
use crate::observe::Rfc3339;

/// Which pages a listener serves; the other set's paths answer 404 there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageSet {
    /// `/healthz`, `/readyz`, `/metrics` (`--admin-addr`).
    Probes,
    /// `/debug/routes`, `/debug/endpoints` (`--debug-addr`).
    Debug,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Page {
    Healthz,
    Readyz,
    Metrics,
    DebugRoutes,
    DebugEndpoints,
}

impl Page {
    fn from_path(path: &str) -> Option<Self> {
        Some(match path {
            "/healthz" => Self::Healthz,
            "/readyz" => Self::Readyz,
            "/metrics" => Self::Metrics,
            "/debug/routes" => Self::DebugRoutes,
            "/debug/endpoints" => Self::DebugEndpoints,
            _ => return None,
        })
    }

    fn set(self) -> PageSet {
        match self {
            Self::Healthz | Self::Readyz | Self::Metrics => PageSet::Probes,
            Self::DebugRoutes | Self::DebugEndpoints => PageSet::Debug,
        }
    }
}

/// Serves `pages` until `stop` turns true. Keeps answering while the proxy
/// drains, so `/readyz` reports the drain.
pub(crate) async fn serve_admin(
    shared: Arc<Shared>,
    listener: TcpListener,
    pages: PageSet,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(async move {
                        let svc = service_fn(move |req| {
                            let shared = Arc::clone(&shared);
                            async move { Ok::<_, Infallible>(route(&shared, pages, &req)) }
                        });
                        let conn = http1::Builder::new()
                            .timer(TokioTimer::new())
                            .header_read_timeout(std::time::Duration::from_secs(10))
                            .serve_connection(TokioIo::new(stream), svc);
                        if let Err(e) = conn.await {
                            debug!(error = %e, ?pages, "admin connection ended");
                        }
                    });
                }
                Err(e) => {
                    warn!(error = %e, ?pages, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            _ = stop.changed() => break,
        }
    }
}

#[derive(Serialize)]
struct DebugRoutes<'a> {
    generation: u64,
    published_at: String,
    rejected: Vec<String>,
    config: &'a RouteConfig,
    /// Each rule's filter chain in running order, derived from `config`.
    filters: Vec<RouteFilters<'a>>,
}

#[derive(Serialize)]
struct RouteFilters<'a> {
    route: &'a str,
    rules: Vec<&'a [Filter]>,
}

fn route(shared: &Shared, pages: PageSet, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let Some(page) = Page::from_path(req.uri().path()).filter(|p| p.set() == pages) else {
        return text(StatusCode::NOT_FOUND, "not found\n");
    };
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    match page {
        Page::Healthz => text(StatusCode::OK, "ok\n"),
        Page::Readyz => {
            if shared.is_ready() {
                // Redis' state is a detail: failing open, the proxy
                // serves, so readiness stays green.
                match shared.global_limit_status() {
                    Some(line) => with_type(
                        StatusCode::OK,
                        format!("ready\n{line}\n"),
                        "text/plain; charset=utf-8",
                    ),
                    None => text(StatusCode::OK, "ready\n"),
                }
            } else if shared.is_draining() {
                text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no routing table published yet\n",
                )
            }
        }
        Page::Metrics => match shared.metrics.encode() {
            Ok(body) => with_type(
                StatusCode::OK,
                body,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ),
            Err(_) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "metrics encoding failed\n",
            ),
        },
        Page::DebugRoutes => {
            let table = shared.table.load_full();
            let doc = DebugRoutes {
                generation: table.generation(),
                published_at: Rfc3339(table.published_at()).to_string(),
                rejected: table
                    .errors()
                    .iter()
                    .map(|e| e.to_string())
                    .chain(
                        table
                            .port_errors()
                            .iter()
                            .map(|(port, reason)| format!("Gateway port {port}: {reason}")),
                    )
                    .collect(),
                config: table.config(),
                filters: table
                    .filters()
                    .map(|(route, rules)| RouteFilters { route, rules })
                    .collect(),
            };
            json(&doc)
        }
        Page::DebugEndpoints => json(&shared.table.load().endpoint_health()),
    }
}

fn json(doc: &impl Serialize) -> Response<Full<Bytes>> {
    match serde_json::to_string_pretty(doc) {
        Ok(json) => with_type(StatusCode::OK, json, "application/json"),
        Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "encoding failed\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    with_type(status, body, "text/plain; charset=utf-8")
}

fn with_type(
    status: StatusCode,
    body: impl Into<Bytes>,
    content_type: &'static str,
) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    rsp
}
