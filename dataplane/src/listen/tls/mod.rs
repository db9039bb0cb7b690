//! TLS termination: certificates chosen by SNI from an atomically swapped
//! table, the one rustls server configuration, and certificate parsing and
//! validation for the controller.
//!
//! Crypto provider: ring. The controller's kube client already links rustls
//! 0.23 with ring, so choosing ring here keeps one provider and one rustls in
//! the binary, and no aws-lc-sys C/CMake build.
//!
//! Certificates live in their own store ([`CertTable`] behind an `ArcSwap`),
//! published by [`crate::Dataplane::publish_certs`], rather than inside the
//! [`crate::route::table::RouteTable`]:
//! - the handshake needs only certificates, the request path only routes;
//!   neither loads what it does not use;
//! - private keys never enter the serde-serializable route model that
//!   `/debug/routes` shows;
//! - the controller publishes certificates before routes, so by the time a
//!   route for a TLS host is live its certificate is too.
//!
//! The [`ServerConfig`] is built once; its resolver reads the live table on
//! every handshake. A publish is seen by the next handshake; established
//! connections keep the certificate they negotiated; session tickets and the
//! session cache survive every swap because the configuration does.

use std::collections::HashMap;
use std::sync::Arc;

use arc_swap::ArcSwap;
use prometheus_client::metrics::counter::Counter;
use rustls::crypto::CryptoProvider;
use rustls::server::WebPkiClientVerifier;
use rustls::server::{ClientHello, ResolvesServerCert, ServerSessionMemoryCache};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, version};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Serialize;
use tracing::warn;

use crate::model::Hostname;

mod client_auth;
pub(crate) mod passthrough;

pub use passthrough::PassthroughBinding;

/// Certificate verifiers that verify less, for callers that mean it.
pub mod danger {
    pub use crate::upstream::tls::NoVerification;
}

pub(crate) use client_auth::ClientCert;
pub use client_auth::{ClientAuth, ClientAuthBinding, VerifyClient};

/// Sessions remembered for TLS 1.2 session-id resumption (and TLS 1.3 when
/// tickets are refused), per process.
const SESSION_CACHE_SIZE: usize = 16 * 1024;

/// ALPN protocols offered, in server preference order.
pub const ALPN: [&[u8]; 2] = [b"h2", b"http/1.1"];

/// Why a certificate or key cannot be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CertError {
    #[error("no certificate in tls.crt")]
    NoCertificate,
    #[error("tls.crt is not valid PEM: {0}")]
    CertificatePem(String),
    #[error("tls.crt is not a valid X.509 certificate: {0}")]
    Certificate(String),
    #[error("tls.key holds no private key")]
    NoKey,
    #[error("tls.key is not a valid PEM private key: {0}")]
    KeyPem(String),
    #[error("tls.key is not a usable private key: {0}")]
    Key(String),
    #[error("tls.key does not match the certificate in tls.crt")]
    KeyMismatch,
    #[error("the certificate expired at {not_after} (Unix seconds)")]
    Expired { not_after: i64 },
    #[error("the certificate is not valid before {not_before} (Unix seconds)")]
    NotYetValid { not_before: i64 },
    #[error("cannot generate a certificate: {0}")]
    Generate(String),
}

/// Facts about a certificate for metrics, diagnostics and tests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// Validity bounds, Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
    /// Hex, colon-separated, as `openssl x509 -serial` shows it.
    pub serial: String,
    pub subject: String,
}

/// A parsed certificate chain with its private key, ready to serve.
///
/// Equality compares the chain only: the key is checked to match the leaf,
/// so the same chain implies the same key.
pub struct ServerCert {
    key: Arc<CertifiedKey>,
    info: CertInfo,
}

impl std::fmt::Debug for ServerCert {
    // Never prints key material.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCert")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ServerCert {
    fn eq(&self, other: &Self) -> bool {
        self.key.cert == other.key.cert
    }
}

impl Eq for ServerCert {}

/// The crypto provider every TLS object in Portico uses.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

// === impl ServerCert ===

impl ServerCert {
    /// Parses a PEM chain (leaf first) and a PEM private key (PKCS#8, PKCS#1
    /// or SEC1) and checks that the key belongs to the leaf. Validity dates
    /// are checked separately ([`ServerCert::check_validity`]) so parsing
    /// needs no clock.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, CertError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::CertificatePem(e.to_string()))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| match e {
            rustls_pki_types::pem::Error::NoItemsFound => CertError::NoKey,
            e => CertError::KeyPem(e.to_string()),
        })?;
        Self::from_der(chain, key)
    }

    pub fn from_der(
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<Self, CertError> {
        let leaf = chain.first().ok_or(CertError::NoCertificate)?;
        let info = cert_info(leaf)?;
        let signing_key = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|e| CertError::Key(e.to_string()))?;
        let key = CertifiedKey::new(chain, signing_key);
        match key.keys_match() {
            // ring can always derive the public key; "unknown" would only
            // mean a provider that cannot, which is not a mismatch.
            Ok(()) | Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(rustls::Error::InconsistentKeys(_)) => return Err(CertError::KeyMismatch),
            Err(e) => return Err(CertError::Certificate(e.to_string())),
        }
        Ok(Self {
            key: Arc::new(key),
            info,
        })
    }

    /// A self-signed ECDSA P-256 certificate for `names`, for the default
    /// certificate when none is configured (clients see an untrusted
    /// certificate rather than a failed handshake, as with ingress-nginx's
    /// fake certificate).
    pub fn self_signed(names: &[&str]) -> Result<Self, CertError> {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let generated = rcgen::generate_simple_self_signed(names)
            .map_err(|e| CertError::Generate(e.to_string()))?;
        let key = PrivateKeyDer::Pkcs8(generated.signing_key.serialize_der().into());
        Self::from_der(vec![generated.cert.der().clone()], key)
    }

    /// Fails when `now` (Unix seconds) is outside the leaf's validity.
    pub fn check_validity(&self, now: i64) -> Result<(), CertError> {
        if now > self.info.not_after {
            return Err(CertError::Expired {
                not_after: self.info.not_after,
            });
        }
        if now < self.info.not_before {
            return Err(CertError::NotYetValid {
                not_before: self.info.not_before,
            });
        }
        Ok(())
    }

    pub fn info(&self) -> &CertInfo {
        &self.info
    }

    /// The chain as served, leaf first.
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.key.cert
    }

    /// The chain and signing key, as rustls serves them.
    pub fn certified_key(&self) -> &Arc<CertifiedKey> {
        &self.key
    }
}

fn cert_info(der: &CertificateDer<'_>) -> Result<CertInfo, CertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
        .map_err(|e| CertError::Certificate(e.to_string()))?;
    let validity = cert.validity();
    Ok(CertInfo {
        not_before: validity.not_before.timestamp(),
        not_after: validity.not_after.timestamp(),
        serial: cert.raw_serial_as_string(),
        subject: cert.subject().to_string(),
    })
}

// === certificate table ===

/// One certificate and the host names it serves.
#[derive(Clone, Debug, PartialEq)]
pub struct CertBinding {
    /// Bounded identifier, e.g. the Secret's `namespace/name`: the metrics
    /// label and the log field.
    pub name: String,
    /// Exact names and wildcards; a wildcard (either kind) serves exactly one
    /// extra label, as certificates do (RFC 6125).
    pub hosts: Vec<Hostname>,
    pub cert: Arc<ServerCert>,
}

/// Everything the TLS listener serves: the unit of certificate publication.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CertConfig {
    /// Earlier bindings win a host claimed twice.
    pub bindings: Vec<CertBinding>,
    /// For handshakes without SNI or for an unknown name; `None`: the
    /// self-signed certificate generated at start.
    pub default: Option<Arc<ServerCert>>,
    /// Hosts that ask clients for certificates. Earlier bindings win a host
    /// claimed twice.
    pub client_auth: Vec<ClientAuthBinding>,
    /// Hosts whose TLS goes undecrypted to a backend; served only with
    /// [`crate::listen::server::ListenerConfig::ssl_passthrough`].
    pub passthrough: Vec<PassthroughBinding>,
    /// Client certificates presented to backends, by the id routes name
    /// them with ([`crate::model::UpstreamTls::client_cert`]). Ids must
    /// change when the certificate does: they key connection pools.
    pub upstream_client_certs: Vec<(String, Arc<ServerCert>)>,
    /// Certificates of the Gateway HTTPS ports
    /// ([`crate::model::GatewayPort`]), one entry per port: a handshake on
    /// such a port is served from its entry only, never from the main
    /// listener's bindings.
    pub ports: Vec<PortCerts>,
}

/// The certificates of one Gateway HTTPS port: its listeners'
/// `certificateRefs`, bound to the listeners' hostnames.
#[derive(Clone, Debug, PartialEq)]
pub struct PortCerts {
    pub port: u16,
    /// Earlier bindings win a host claimed twice (translation lists the
    /// listeners with exact hostnames first).
    pub bindings: Vec<CertBinding>,
    /// For handshakes without SNI, or with a name no binding holds: the
    /// certificate of the port's listener without a hostname, if it has
    /// one. `None`: such handshakes fail (no certificate is sent that
    /// no listener asked for).
    pub default: Option<Arc<ServerCert>>,
}

/// Host names to values: exact names, then one-label wildcards;
/// case-insensitive. The first value inserted for a name wins.
struct HostMap<T> {
    exact: HashMap<Box<str>, T>,
    /// By the suffix after `*.`.
    wildcard: HashMap<Box<str>, T>,
}

/// Which entry of a table a name selected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Selected {
    Exact,
    Wildcard,
    Default,
}

impl<T> HostMap<T> {
    fn new() -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
        }
    }

    fn insert(&mut self, host: &Hostname, value: impl FnOnce() -> T) {
        let (map, name) = match host {
            Hostname::Exact(n) => (&mut self.exact, n),
            // A certificate's wildcard covers one label, whatever routing
            // does with the name (RFC 6125).
            Hostname::Wildcard(n) | Hostname::WildcardAnyDepth(n) => (&mut self.wildcard, n),
        };
        map.entry(Box::from(name.to_ascii_lowercase()))
            .or_insert_with(value);
    }

    fn get(&self, server_name: &str) -> Option<(&T, Selected)> {
        let name = server_name.trim_end_matches('.');
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(v) = self.exact.get(name) {
            return Some((v, Selected::Exact));
        }
        let (_, parent) = name.split_once('.')?;
        self.wildcard.get(parent).map(|v| (v, Selected::Wildcard))
    }
}

/// Certificates by name, and the default.
struct CertIndex {
    names: HostMap<Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl CertIndex {
    fn select(&self, server_name: Option<&str>) -> (Arc<CertifiedKey>, Selected) {
        match server_name.and_then(|n| self.names.get(n)) {
            Some((k, sel)) => (Arc::clone(k), sel),
            None => (Arc::clone(&self.default), Selected::Default),
        }
    }
}

/// One Gateway HTTPS port's certificates: no fallback beyond its own
/// default, which it may lack.
struct PortIndex {
    names: HostMap<Arc<CertifiedKey>>,
    default: Option<Arc<CertifiedKey>>,
}

impl PortIndex {
    fn build(p: &PortCerts) -> Self {
        let mut names = HostMap::new();
        for b in &p.bindings {
            for h in &b.hosts {
                names.insert(h, || Arc::clone(&b.cert.key));
            }
        }
        Self {
            names,
            default: p.default.as_ref().map(|c| Arc::clone(&c.key)),
        }
    }

    fn select(&self, server_name: Option<&str>) -> Option<Arc<CertifiedKey>> {
        match server_name.and_then(|n| self.names.get(n)) {
            Some((k, _)) => Some(Arc::clone(k)),
            None => self.default.clone(),
        }
    }
}

/// The immutable table the TLS listener reads: certificates, and the
/// server configuration of each client-certificate policy.
pub struct CertTable {
    certs: Arc<CertIndex>,
    policies: HostMap<Arc<Policy>>,
    passthrough: HostMap<Arc<passthrough::PassthroughTarget>>,
    /// The Gateway HTTPS ports' certificates, by port.
    ports: HashMap<u16, PortIndex>,
}

/// A client-certificate policy made servable: its own server configuration
/// (own session cache and ticket keys, so no session crosses policies).
pub(crate) struct Policy {
    /// `None`: the configuration could not be built; handshakes are refused.
    pub(crate) config: Option<Arc<ServerConfig>>,
    pub(crate) auth: Arc<ClientAuth>,
}

impl CertTable {
    /// Never fails: a policy whose configuration cannot be built (which
    /// [`ClientAuth::new`] already ruled out) refuses every handshake for
    /// its hosts rather than serving them without client verification.
    pub(crate) fn build(
        config: &CertConfig,
        fallback: &ServerCert,
        default_served: &Counter,
    ) -> Self {
        let mut names = HostMap::new();
        for b in &config.bindings {
            for h in &b.hosts {
                names.insert(h, || Arc::clone(&b.cert.key));
            }
        }
        let default = Arc::clone(&config.default.as_deref().unwrap_or(fallback).key);
        let certs = Arc::new(CertIndex { names, default });
        let mut policies = HostMap::new();
        let mut built: HashMap<&str, Arc<Policy>> = HashMap::new();
        for b in &config.client_auth {
            let policy = built.entry(b.auth.id.as_str()).or_insert_with(|| {
                let resolver = Arc::new(FixedResolver {
                    certs: Arc::clone(&certs),
                    default_served: default_served.clone(),
                });
                let config = server_config(resolver, b.auth.handshake_verifier())
                    .map_err(|e| {
                        warn!(policy = %b.auth.id, error = %e, "client-certificate policy not servable; its hosts refuse handshakes");
                    })
                    .ok();
                Arc::new(Policy {
                    config,
                    auth: Arc::clone(&b.auth),
                })
            });
            for h in &b.hosts {
                policies.insert(h, || Arc::clone(policy));
            }
        }
        let mut passthrough = HostMap::new();
        for b in &config.passthrough {
            let target = Arc::new(passthrough::PassthroughTarget::new(b));
            for h in &b.hosts {
                passthrough.insert(h, || Arc::clone(&target));
            }
        }
        let ports = config
            .ports
            .iter()
            .map(|p| (p.port, PortIndex::build(p)))
            .collect();
        Self {
            certs,
            policies,
            passthrough,
            ports,
        }
    }

    /// The certificate a Gateway HTTPS port serves for a name: its
    /// bindings, then its default; `None` fails the handshake. Never the
    /// main listener's certificates.
    pub fn select_on_port(
        &self,
        port: u16,
        server_name: Option<&str>,
    ) -> Option<Arc<CertifiedKey>> {
        self.ports.get(&port)?.select(server_name)
    }

    /// The certificate for a name: exact, then wildcard, then the default.
    pub fn select(&self, server_name: Option<&str>) -> (Arc<CertifiedKey>, Selected) {
        self.certs.select(server_name)
    }

    /// Where a name's TLS is passed through to, if anywhere.
    pub(crate) fn passthrough(
        &self,
        server_name: Option<&str>,
    ) -> Option<&Arc<passthrough::PassthroughTarget>> {
        server_name
            .and_then(|n| self.passthrough.get(n))
            .map(|(t, _)| t)
    }

    /// The client-certificate policy of a name, if it has one.
    pub(crate) fn policy(&self, server_name: Option<&str>) -> Option<&Arc<Policy>> {
        server_name
            .and_then(|n| self.policies.get(n))
            .map(|(p, _)| p)
    }
}

/// The main configuration's resolver: reads the live table on every
/// handshake (one atomic load, no lock).
pub(crate) struct SniResolver {
    table: Arc<ArcSwap<CertTable>>,
    /// Handshakes whose SNI named no configured host (or had none).
    default_served: Counter,
}

/// A policy configuration's resolver: the certificates of the table it was
/// built with (a policy configuration lives no longer than its table).
struct FixedResolver {
    certs: Arc<CertIndex>,
    default_served: Counter,
}

impl std::fmt::Debug for SniResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SniResolver").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FixedResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FixedResolver").finish_non_exhaustive()
    }
}

fn count_default(
    selected: (Arc<CertifiedKey>, Selected),
    c: &Counter,
) -> Option<Arc<CertifiedKey>> {
    if selected.1 == Selected::Default {
        c.inc();
    }
    Some(selected.0)
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        count_default(
            self.table.load().select(hello.server_name()),
            &self.default_served,
        )
    }
}

impl ResolvesServerCert for FixedResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        count_default(self.certs.select(hello.server_name()), &self.default_served)
    }
}

/// A Gateway HTTPS port's resolver: that port's entry of the live table
/// on every handshake (one atomic load, no lock).
struct PortResolver {
    port: u16,
    table: Arc<ArcSwap<CertTable>>,
}

impl std::fmt::Debug for PortResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortResolver")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl ResolvesServerCert for PortResolver {
    /// `None` makes rustls refuse the handshake with an `access_denied`
    /// alert.
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.table
            .load()
            .select_on_port(self.port, hello.server_name())
    }
}

/// A Gateway HTTPS port's configuration, made once when its socket starts
/// serving (its session cache and ticket keys live as long as the socket);
/// certificates from the port's entry of the live `table`. No client
/// certificates are asked for.
pub(crate) fn port_server_config(
    port: u16,
    table: Arc<ArcSwap<CertTable>>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    server_config(
        Arc::new(PortResolver { port, table }),
        WebPkiClientVerifier::no_client_auth(),
    )
}

/// The main configuration, for every host without a client-certificate
/// policy; certificates from the live `table`.
pub(crate) fn main_server_config(
    table: Arc<ArcSwap<CertTable>>,
    default_served: Counter,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    server_config(
        Arc::new(SniResolver {
            table,
            default_served,
        }),
        WebPkiClientVerifier::no_client_auth(),
    )
}

/// A server configuration: TLS 1.3 and 1.2 only, ALPN h2 and http/1.1,
/// session tickets and a session cache of its own.
fn server_config(
    resolver: Arc<dyn ResolvesServerCert>,
    client: Arc<dyn rustls::server::danger::ClientCertVerifier>,
) -> Result<Arc<ServerConfig>, rustls::Error> {
    let mut cfg = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])?
        .with_client_cert_verifier(client)
        .with_cert_resolver(resolver);
    cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
    cfg.session_storage = ServerSessionMemoryCache::new(SESSION_CACHE_SIZE);
    cfg.ticketer = rustls::crypto::ring::Ticketer::new()?;
    Ok(Arc::new(cfg))
}

/// Every reason [`handshake_failure_reason`] gives, for the metric labels.
pub(crate) const HANDSHAKE_FAILURES: [&str; 11] = [
    "timeout",
    "eof",
    "io",
    "protocol_version",
    "incompatible",
    "no_application_protocol",
    "alert_received",
    "invalid_message",
    "client_certificate",
    "peer_misbehaved",
    "other",
];

/// A bounded label for a failed handshake, from the error tokio-rustls
/// returns.
pub(crate) fn handshake_failure_reason(e: &std::io::Error) -> &'static str {
    use rustls::Error as E;
    let Some(tls) = e.get_ref().and_then(|inner| inner.downcast_ref::<E>()) else {
        return match e.kind() {
            std::io::ErrorKind::UnexpectedEof => "eof",
            _ => "io",
        };
    };
    match tls {
        E::PeerIncompatible(p) => match p {
            rustls::PeerIncompatible::Tls12NotOfferedOrEnabled
            | rustls::PeerIncompatible::SupportedVersionsExtensionRequired => "protocol_version",
            _ => "incompatible",
        },
        E::NoApplicationProtocol => "no_application_protocol",
        E::AlertReceived(_) => "alert_received",
        E::InvalidMessage(_) | E::InappropriateHandshakeMessage { .. } => "invalid_message",
        E::InvalidCertificate(_) | E::NoCertificatesPresented => "client_certificate",
        E::PeerMisbehaved(_) => "peer_misbehaved",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str) -> Arc<ServerCert> {
        Arc::new(ServerCert::self_signed(&[name]).unwrap())
    }

    #[test]
    fn selection_order_and_case() {
        let exact = cert("a.example.com");
        let wild = cert("*.example.com");
        let fallback = cert("fallback");
        let config = CertConfig {
            bindings: vec![
                CertBinding {
                    name: "ns/wild".into(),
                    hosts: vec![Hostname::parse("*.example.com").unwrap()],
                    cert: Arc::clone(&wild),
                },
                CertBinding {
                    name: "ns/exact".into(),
                    hosts: vec![Hostname::parse("a.example.com").unwrap()],
                    cert: Arc::clone(&exact),
                },
            ],
            default: None,
            ..CertConfig::default()
        };
        let t = CertTable::build(&config, &fallback, &Counter::default());
        let served = |n: Option<&str>| {
            let (k, sel) = t.select(n);
            let which = [&exact, &wild, &fallback]
                .iter()
                .position(|c| c.chain() == &k.cert[..])
                .unwrap();
            (which, sel)
        };
        assert_eq!(served(Some("a.example.com")), (0, Selected::Exact));
        assert_eq!(served(Some("A.Example.COM")), (0, Selected::Exact));
        assert_eq!(served(Some("b.example.com")), (1, Selected::Wildcard));
        assert_eq!(served(Some("x.b.example.com")), (2, Selected::Default));
        assert_eq!(served(Some("example.com")), (2, Selected::Default));
        assert_eq!(served(None), (2, Selected::Default));
    }

    #[test]
    fn bad_pem_is_an_error_not_a_panic() {
        let good = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let crt = good.cert.pem();
        let key = good.signing_key.serialize_pem();
        assert!(ServerCert::from_pem(crt.as_bytes(), key.as_bytes()).is_ok());
        assert_eq!(
            ServerCert::from_pem(b"", key.as_bytes()).unwrap_err(),
            CertError::NoCertificate
        );
        assert_eq!(
            ServerCert::from_pem(crt.as_bytes(), b"junk").unwrap_err(),
            CertError::NoKey
        );
        assert_eq!(
            ServerCert::from_pem(crt.as_bytes(), other.signing_key.serialize_pem().as_bytes())
                .unwrap_err(),
            CertError::KeyMismatch
        );
        let garbage = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        assert!(matches!(
            ServerCert::from_pem(garbage.as_bytes(), key.as_bytes()).unwrap_err(),
            CertError::Certificate(_)
        ));
    }
}
