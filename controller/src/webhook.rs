//! `portico webhook`: a validating admission webhook that parses and
//! nothing more.
//!
//! The API server sends each Ingress and `portico.dev` HTTPRoute it is about
//! to store; the webhook runs the same annotation parsing and translation
//! as `portico run`, on that object alone, and answers: denied, naming the
//! field and reason, when part of the object could not be served as
//! written; allowed with admission `warnings` (which `kubectl apply`
//! prints) for unsupported annotations and partly supported behaviour.
//!
//! It runs nothing a user wrote, reads no Secrets (it has no API client at
//! all), keeps no state between requests, and answers within a bounded
//! time and body size: the lesson of ingress-nginx's admission webhook,
//! which rendered user input into a configuration and became the door.
//! Findings that depend on other objects (a Service not found, a canary
//! without its main Ingress, a TLS Secret) are not the webhook's to judge:
//! the object may legitimately arrive before them.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use portico_crds::HTTPRoute;
use portico_dataplane::listen::tls::ServerCert;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use tokio::net::TcpListener;
use tracing::{debug, info, warn};

use crate::cli::WebhookArgs;
use crate::diagnostics::{Diagnostic, Kind, ObjectRef, Severity};
use crate::snapshot::{Object, Snapshot, key};
use crate::translate::{Settings, translate};

/// The API server's own limit on a request body; an object cannot be
/// larger.
const MAX_REVIEW_BYTES: usize = 3 << 20;
/// A review is answered or dropped within this (the API server's default
/// webhook timeout is 10 s).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the certificate files are read again (cert-manager rotates
/// them in place).
const CERT_RELOAD: Duration = Duration::from_secs(30);
/// Kubernetes drops warnings longer than this.
const MAX_WARNING_CHARS: usize = 256;
/// Reasons that speak of the object alone. Everything else an error can
/// say (a missing Service or Secret, a canary without its main Ingress, a
/// conflict with another object) depends on the rest of the cluster.
const LOCAL_REASONS: &[&str] = &[
    "InvalidAnnotation",
    "InvalidFilter",
    "InvalidHeaderName",
    "InvalidHeaderValue",
    "InvalidHostname",
    "InvalidPath",
    "InvalidPathType",
    "InvalidPolicy",
    "InvalidRegex",
    "InvalidTimeout",
    "UnsupportedValue",
];

/// Findings about the object's relation to others (a Service or Secret not
/// found, a canary without its main Ingress, a clash with another object):
/// not the webhook's to report, since it sees the object alone.
const CROSS_OBJECT_REASONS: &[&str] = &[
    "BackendNotFound",
    "CanaryWithoutMain",
    "Conflicted",
    "InvalidTLS",
    "PassthroughDisabled",
    "RegexHost",
    "UnsupportedBackend",
];

/// Serves reviews on `--webhook-addr` until the process ends.
pub async fn serve(args: WebhookArgs) -> anyhow::Result<()> {
    let certs = Arc::new(Reloading::load(&args.tls_cert_file, &args.tls_key_file)?);
    tokio::spawn(Arc::clone(&certs).reload_forever());
    let tls =
        rustls::ServerConfig::builder_with_provider(portico_dataplane::listen::tls::provider())
            .with_safe_default_protocol_versions()
            .context("TLS versions")?
            .with_no_client_auth()
            .with_cert_resolver(certs);
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(tls));
    let listener = TcpListener::bind(args.webhook_addr)
        .await
        .with_context(|| format!("binding --webhook-addr {}", args.webhook_addr))?;
    info!(addr = %listener.local_addr()?, "admission webhook listening");
    let settings = Arc::new(args.class.settings());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let settings = Arc::clone(&settings);
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(REVIEW_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => return debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => return debug!(%peer, "TLS handshake timed out"),
            };
            let svc = service_fn(move |req| {
                let settings = Arc::clone(&settings);
                async move { Ok::<_, Infallible>(handle(req, &settings).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(REVIEW_TIMEOUT)
                .serve_connection(TokioIo::new(tls), svc);
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "webhook connection ended");
            }
        });
    }
}

async fn handle(req: Request<Incoming>, settings: &Settings) -> Response<Full<Bytes>> {
    if req.uri().path() != "/validate" {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST an AdmissionReview\n");
    }
    let body = Limited::new(req.into_body(), MAX_REVIEW_BYTES);
    let body = match tokio::time::timeout(REVIEW_TIMEOUT, body.collect()).await {
        Ok(Ok(b)) => b.to_bytes(),
        Ok(Err(_)) => return text(StatusCode::PAYLOAD_TOO_LARGE, "review too large\n"),
        Err(_) => return text(StatusCode::REQUEST_TIMEOUT, "review too slow\n"),
    };
    let answer = review(&body, settings);
    match serde_json::to_vec(&answer) {
        Ok(json) => {
            let mut rsp = Response::new(Full::new(Bytes::from(json)));
            rsp.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            rsp
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot encode the answer: {e}\n"),
        ),
    }
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut rsp = Response::new(Full::new(Bytes::from(body.to_owned())));
    *rsp.status_mut() = status;
    rsp
}

/// Answers one AdmissionReview (the JSON the API server posts). Pure: the
/// same review always gets the same answer.
pub fn review(body: &[u8], settings: &Settings) -> AdmissionReview<DynamicObject> {
    let review: AdmissionReview<DynamicObject> = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return AdmissionResponse::invalid(format!("not an AdmissionReview: {e}"))
                .into_review();
        }
    };
    let req: AdmissionRequest<DynamicObject> = match review.try_into() {
        Ok(r) => r,
        Err(e) => return AdmissionResponse::invalid(e.to_string()).into_review(),
    };
    let rsp = AdmissionResponse::from(&req);
    if matches!(req.operation, Operation::Delete | Operation::Connect) {
        return rsp.into_review();
    }
    let Some(object) = &req.object else {
        return rsp.into_review();
    };
    let value = match serde_json::to_value(object) {
        Ok(v) => v,
        Err(e) => {
            return rsp
                .deny(format!("cannot read the object: {e}"))
                .into_review();
        }
    };
    let verdict = match (req.kind.group.as_str(), req.kind.kind.as_str()) {
        ("networking.k8s.io", "Ingress") => {
            typed::<Ingress>(value).map(|ing| judge_ingress(ing, settings))
        }
        ("portico.dev", "HTTPRoute") => {
            typed::<HTTPRoute>(value).map(|r| judge(Object::HttpRoute(Arc::new(r)), settings))
        }
        // Not ours to judge: allowed as it is.
        _ => Ok(Verdict::default()),
    };
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => return rsp.deny(e).into_review(),
    };
    let mut rsp = if verdict.errors.is_empty() {
        rsp
    } else {
        rsp.deny(verdict.errors.join("; "))
    };
    if !verdict.warnings.is_empty() {
        rsp.warnings = Some(verdict.warnings);
    }
    rsp.into_review()
}

/// The object as its type, or what the API server would have said.
fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| format!("{}: {}", e.path(), e.inner()))
}

#[derive(Debug, Default, PartialEq)]
struct Verdict {
    errors: Vec<String>,
    warnings: Vec<String>,
}

/// Only Ingresses that name our class are judged: the webhook sees no
/// IngressClass objects, so the name is what it goes by (as `portico
/// validate` does on input without IngressClasses).
fn judge_ingress(ing: Ingress, settings: &Settings) -> Verdict {
    let class = ing
        .spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.as_deref())
        .or_else(|| {
            ing.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(crate::translate::class::LEGACY_CLASS_ANNOTATION))
                .map(|v| v.trim())
        });
    if class != Some(settings.ingress_class.as_str()) {
        return Verdict::default();
    }
    judge(Object::Ingress(Arc::new(ing)), settings)
}

fn judge(object: Object, settings: &Settings) -> Verdict {
    let target = match &object {
        Object::Ingress(x) => (Kind::Ingress, key(x.as_ref())),
        Object::HttpRoute(x) => (Kind::HttpRoute, key(x.as_ref())),
        _ => return Verdict::default(),
    };
    let class = Object::IngressClass(Arc::new(crate::translate::class::assumed_class(settings)));
    let snap = Snapshot::from_objects([object, class]);
    let t = translate(&snap, settings);
    let target = ObjectRef {
        kind: target.0,
        namespace: target.1.0,
        name: target.1.1,
    };
    let mut verdict = Verdict::default();
    let Some(report) = t.reports.get(&target) else {
        return verdict;
    };
    for d in &report.diagnostics {
        match d.severity {
            Severity::Error if LOCAL_REASONS.contains(&d.reason) => {
                verdict.errors.push(describe(d));
            }
            // Depends on other objects: not the webhook's to judge.
            Severity::Error => {}
            Severity::Warning if CROSS_OBJECT_REASONS.contains(&d.reason) => {}
            Severity::Warning => verdict.warnings.push(truncate(&describe(d))),
        }
    }
    verdict
}

fn describe(d: &Diagnostic) -> String {
    format!("{}: {}: {}", d.field, d.reason, d.message)
}

fn truncate(s: &str) -> String {
    if s.chars().count() <= MAX_WARNING_CHARS {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(MAX_WARNING_CHARS - 3).collect();
    out.push_str("...");
    out
}

// === certificates ===

/// The serving certificate, read again from its files when they change.
#[derive(Debug)]
struct Reloading {
    cert_file: PathBuf,
    key_file: PathBuf,
    current: arc_swap::ArcSwap<(Vec<u8>, Arc<CertifiedKey>)>,
}

impl Reloading {
    fn load(cert_file: &Path, key_file: &Path) -> anyhow::Result<Self> {
        let (pem, key) = read_pair(cert_file, key_file)?;
        Ok(Self {
            cert_file: cert_file.to_owned(),
            key_file: key_file.to_owned(),
            current: arc_swap::ArcSwap::from_pointee((pem, key)),
        })
    }

    async fn reload_forever(self: Arc<Self>) {
        let mut tick = tokio::time::interval(CERT_RELOAD);
        loop {
            tick.tick().await;
            match read_pair(&self.cert_file, &self.key_file) {
                Ok((pem, key)) if pem != self.current.load().0 => {
                    info!("webhook certificate reloaded");
                    self.current.store(Arc::new((pem, key)));
                }
                Ok(_) => {}
                // The last good certificate keeps serving.
                Err(e) => warn!(error = %e, "webhook certificate not reloaded"),
            }
        }
    }
}

impl ResolvesServerCert for Reloading {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.current.load().1))
    }
}

fn read_pair(cert_file: &Path, key_file: &Path) -> anyhow::Result<(Vec<u8>, Arc<CertifiedKey>)> {
    let cert = std::fs::read(cert_file)
        .with_context(|| format!("reading --tls-cert-file {}", cert_file.display()))?;
    let key = std::fs::read(key_file)
        .with_context(|| format!("reading --tls-key-file {}", key_file.display()))?;
    let parsed = ServerCert::from_pem(&cert, &key).context("the webhook certificate")?;
    let mut both = cert;
    both.extend_from_slice(&key);
    Ok((both, Arc::clone(parsed.certified_key())))
}

#[cfg(test)]
mod tests;
