//! Gateway API in the e2e world: the upstream CRDs installed as a user
//! would, unprivileged listener ports for `--gateway-port-offset`, reading
//! objects (and their status) of any Gateway API kind, and an HTTPS client
//! that verifies the certificate a Gateway listener serves for a name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind};
use rustls_pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};

use crate::Response;
use crate::pki::HostCertificate;

/// The Gateway API CRDs' group.
pub const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// The upstream v1.6.1 standard-channel bundle, unchanged:
/// `PORTICO_GATEWAY_API_DIR`, else `../shared/gateway-api/v1.6.1` beside
/// the repository.
pub fn gateway_api_dir() -> PathBuf {
    std::env::var_os("PORTICO_GATEWAY_API_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/gateway-api/v1.6.1")
        })
}

/// Applies every document of the upstream bundle (its CRDs and its
/// ValidatingAdmissionPolicy), as `kubectl apply --server-side -f <dir>`
/// would, and waits until the kinds Portico serves are established.
pub async fn install_gateway_api(client: &Client) -> anyhow::Result<()> {
    let dir = gateway_api_dir();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading the Gateway API bundle at {}", dir.display()))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    // In file order, as `kubectl apply -f <dir>` goes.
    files.sort();
    for path in files
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
    {
        let text = std::fs::read_to_string(path)?;
        for doc in crate::chart::parse_documents(&text)? {
            crate::apply_json(client, &doc, false)
                .await
                .with_context(|| format!("applying {}", path.display()))?;
        }
    }
    for plural in [
        "gatewayclasses",
        "gateways",
        "httproutes",
        "grpcroutes",
        "referencegrants",
    ] {
        crate::wait_for_crd(client, &format!("{plural}.{GATEWAY_GROUP}")).await?;
    }
    Ok(())
}

/// Listener ports for one Gateway's HTTP and HTTPS listeners, and the
/// `--gateway-port-offset` that maps them onto two free unprivileged
/// ports. Free when picked (see [`crate::free_port_pair`]).
#[derive(Clone, Copy, Debug)]
pub struct GatewayPorts {
    pub offset: u16,
    /// The listener ports written in the Gateway.
    pub http: u16,
    pub https: u16,
}

impl GatewayPorts {
    /// Listener port 1000 for HTTP (away from the main listeners' 80 and
    /// 443) and whatever lands the HTTPS one on the second free port.
    pub fn pick() -> anyhow::Result<Self> {
        let (a, b) = crate::free_port_pair()?;
        let (low, high) = (a.min(b), a.max(b));
        let offset = low
            .checked_sub(1000)
            .context("free port below 1000: no room for an offset")?;
        Ok(Self {
            offset,
            http: 1000,
            https: 1000 + (high - low),
        })
    }

    /// Where listener port `port` is bound (the main listeners' address
    /// is 127.0.0.1 and Gateway ports take its address).
    pub fn bound(&self, port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port + self.offset))
    }

    /// The `portico run` flag.
    pub fn flag(&self) -> String {
        format!("--gateway-port-offset={}", self.offset)
    }
}

/// An object of a Gateway API kind (`v1`, except `ReferenceGrant`:
/// `v1beta1`) as JSON, status included; `None` when absent or on error
/// (callers poll).
pub async fn get_gateway_object(
    client: &Client,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> Option<Value> {
    let api = gateway_api(client, kind, namespace);
    serde_json::to_value(api.get(name).await.ok()?).ok()
}

/// Deletes an object of a Gateway API kind.
pub async fn delete_gateway_object(
    client: &Client,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
) -> anyhow::Result<()> {
    gateway_api(client, kind, namespace)
        .delete(name, &DeleteParams::default())
        .await
        .with_context(|| format!("deleting {kind} {name}"))?;
    Ok(())
}

fn gateway_api(client: &Client, kind: &str, namespace: Option<&str>) -> Api<DynamicObject> {
    let version = if kind == "ReferenceGrant" {
        "v1beta1"
    } else {
        "v1"
    };
    let gvk = GroupVersionKind::gvk(GATEWAY_GROUP, version, kind);
    let plural = match kind {
        "GatewayClass" => "gatewayclasses".to_owned(),
        other => format!("{}s", other.to_lowercase()),
    };
    let resource = ApiResource::from_gvk_with_plural(&gvk, &plural);
    match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
        None => Api::all_with(client.clone(), &resource),
    }
}

/// A Namespace with labels (for listeners' `allowedRoutes` selectors).
pub fn namespace(name: &str, labels: &[(&str, &str)]) -> Namespace {
    let labels: serde_json::Map<String, Value> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), json!(v)))
        .collect();
    crate::objects::typed(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": labels},
    }))
}

/// A `kubernetes.io/tls` Secret holding `cert`.
pub fn host_tls_secret(namespace: &str, name: &str, cert: &HostCertificate) -> Secret {
    let mut secret: Secret = crate::objects::typed(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "type": "kubernetes.io/tls",
    }));
    secret.data = Some(
        [
            (
                "tls.crt".to_owned(),
                ByteString(cert.cert_pem.clone().into_bytes()),
            ),
            (
                "tls.key".to_owned(),
                ByteString(cert.key_pem.clone().into_bytes()),
            ),
        ]
        .into(),
    );
    secret
}

/// GET `https://<sni><path>` at `addr`: a real TLS handshake with SNI
/// `sni`, the server's certificate verified for `sni` against `ca` alone,
/// then HTTP/1.1. An error when the handshake or verification fails.
pub async fn https_get(
    addr: SocketAddr,
    sni: &str,
    ca: &CertificateDer<'static>,
    path: &str,
) -> anyhow::Result<Response> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone())?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_owned())?, tcp)
        .await
        .with_context(|| format!("TLS handshake with {addr} for {sni}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    tokio::spawn(conn);
    let req = Request::get(path)
        .header(http::header::HOST, sni)
        .body(Empty::<Bytes>::new())?;
    let resp = sender.send_request(req).await?;
    let status: StatusCode = resp.status();
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// The condition `type_` among `conditions` (a status's JSON array).
pub fn condition<'a>(conditions: &'a Value, type_: &str) -> Option<&'a Value> {
    conditions.as_array()?.iter().find(|c| c["type"] == type_)
}

/// `(status, reason)` of condition `type_`, for assertions.
pub fn condition_state(conditions: &Value, type_: &str) -> Option<(String, String)> {
    let c = condition(conditions, type_)?;
    Some((
        c["status"].as_str()?.to_owned(),
        c["reason"].as_str()?.to_owned(),
    ))
}
