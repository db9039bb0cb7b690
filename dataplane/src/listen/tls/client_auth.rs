//! Client certificates per host (ingress-nginx `auth-tls-*`).
//!
//! Verification is decided per SNI: the listener reads the ClientHello first
//! (`LazyConfigAcceptor`) and hands the handshake to the configuration of the
//! host's policy. A failed verification ends the handshake with a TLS alert
//! rather than answering 400 as ingress-nginx does: no request from an
//! unverified client is ever parsed or routed, and the decision is made once
//! per connection instead of per request. The request path then only checks
//! that the request's host uses the policy the connection was verified
//! under (a client cannot present SNI of a host without a policy and send
//! `Host:` of one with it), and passes the verification result upstream.

use std::sync::Arc;

use base64::Engine as _;
use http::HeaderValue;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use super::{CertError, provider};
use crate::model::Hostname;

/// ingress-nginx `auth-tls-verify-client` (`off` is no policy at all).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum VerifyClient {
    /// A certificate signed by the CA is required.
    On,
    /// A certificate is asked for; when one is sent it must verify.
    Optional,
    /// A certificate is asked for and accepted unverified (only its
    /// signature over the handshake is checked, proving possession of the
    /// key); the upstream is told whether it verified against the CA.
    OptionalNoCa,
}

/// A client-certificate policy.
pub struct ClientAuth {
    /// Identifies the policy: routes name the policy their host must have
    /// been verified under by this, e.g. `default/ca on 1`.
    pub id: String,
    pub verify: VerifyClient,
    /// Certificates allowed between the client's and the CA's.
    pub depth: u8,
    ca: Vec<CertificateDer<'static>>,
    /// Requires a certificate that verifies (depth included).
    strict: Arc<dyn ClientCertVerifier>,
    /// What the handshake runs: `strict`, or a lenient form of it.
    handshake: Arc<dyn ClientCertVerifier>,
}

impl std::fmt::Debug for ClientAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientAuth")
            .field("id", &self.id)
            .field("verify", &self.verify)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ClientAuth {
    fn eq(&self, other: &Self) -> bool {
        (&self.id, self.verify, self.depth, &self.ca)
            == (&other.id, other.verify, other.depth, &other.ca)
    }
}

/// Hosts and the policy they use.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientAuthBinding {
    pub hosts: Vec<Hostname>,
    pub auth: Arc<ClientAuth>,
}

impl ClientAuth {
    /// Parses the CA bundle (`ca.crt`, PEM) and builds the verifiers.
    pub fn new(
        id: String,
        ca_pem: &[u8],
        verify: VerifyClient,
        depth: u8,
    ) -> Result<Self, CertError> {
        use rustls_pki_types::pem::PemObject;
        let ca = CertificateDer::pem_slice_iter(ca_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| CertError::CertificatePem(e.to_string()))?;
        if ca.is_empty() {
            return Err(CertError::NoCertificate);
        }
        let mut roots = RootCertStore::empty();
        for c in &ca {
            roots
                .add(c.clone())
                .map_err(|e| CertError::Certificate(e.to_string()))?;
        }
        let roots = Arc::new(roots);
        let webpki = |optional: bool| {
            let b = WebPkiClientVerifier::builder_with_provider(Arc::clone(&roots), provider());
            let b = if optional {
                b.allow_unauthenticated()
            } else {
                b
            };
            b.build().map_err(|e| CertError::Certificate(e.to_string()))
        };
        let strict: Arc<dyn ClientCertVerifier> = Arc::new(DepthLimited {
            inner: webpki(false)?,
            depth,
            anchors: ca.clone(),
        });
        let handshake: Arc<dyn ClientCertVerifier> = match verify {
            VerifyClient::On => Arc::clone(&strict),
            VerifyClient::Optional => Arc::new(DepthLimited {
                inner: webpki(true)?,
                depth,
                anchors: ca.clone(),
            }),
            VerifyClient::OptionalNoCa => Arc::new(Unverified {
                inner: webpki(true)?,
            }),
        };
        Ok(Self {
            id,
            verify,
            depth,
            ca,
            strict,
            handshake,
        })
    }

    pub(crate) fn handshake_verifier(&self) -> Arc<dyn ClientCertVerifier> {
        Arc::clone(&self.handshake)
    }

    /// What the upstream is told about a connection's client certificate
    /// (`peer`: the chain the client presented, leaf first).
    pub(crate) fn client_cert(self: &Arc<Self>, peer: Option<&[CertificateDer<'_>]>) -> ClientCert {
        let Some((leaf, intermediates)) = peer.and_then(|p| p.split_first()) else {
            return ClientCert {
                policy: Arc::clone(self),
                verify: HeaderValue::from_static("NONE"),
                subject: None,
                issuer: None,
                pem: None,
            };
        };
        let verify = match self.verify {
            // The handshake verified it.
            VerifyClient::On | VerifyClient::Optional => HeaderValue::from_static("SUCCESS"),
            VerifyClient::OptionalNoCa => {
                match self
                    .strict
                    .verify_client_cert(leaf, intermediates, UnixTime::now())
                {
                    Ok(_) => HeaderValue::from_static("SUCCESS"),
                    Err(e) => HeaderValue::try_from(format!("FAILED:{e}"))
                        .unwrap_or(HeaderValue::from_static("FAILED")),
                }
            }
        };
        let names = x509_parser::parse_x509_certificate(leaf.as_ref())
            .ok()
            .map(|(_, c)| (rfc2253(c.subject()), rfc2253(c.issuer())));
        let (subject, issuer) = names.unzip();
        ClientCert {
            policy: Arc::clone(self),
            verify,
            subject: subject.and_then(|s| HeaderValue::try_from(s).ok()),
            issuer: issuer.and_then(|s| HeaderValue::try_from(s).ok()),
            pem: HeaderValue::try_from(url_encoded_pem(leaf)).ok(),
        }
    }
}

/// A connection's client-certificate facts, computed once after the
/// handshake, sent upstream with each of its requests.
#[derive(Debug)]
pub(crate) struct ClientCert {
    pub(crate) policy: Arc<ClientAuth>,
    /// `SUCCESS`, `NONE` or `FAILED:<reason>` (nginx `$ssl_client_verify`).
    pub(crate) verify: HeaderValue,
    /// RFC 2253, as nginx `$ssl_client_s_dn`.
    pub(crate) subject: Option<HeaderValue>,
    pub(crate) issuer: Option<HeaderValue>,
    /// The leaf as URL-encoded PEM (nginx `$ssl_client_escaped_cert`).
    pub(crate) pem: Option<HeaderValue>,
}

/// A distinguished name in RFC 2253 form: last RDN first, `,`-separated,
/// special characters escaped.
fn rfc2253(name: &x509_parser::x509::X509Name<'_>) -> String {
    let registry = x509_parser::objects::oid_registry();
    let rdns: Vec<String> = name
        .iter_rdn()
        .map(|rdn| {
            rdn.iter()
                .map(|attr| {
                    let key = x509_parser::objects::oid2abbrev(attr.attr_type(), registry)
                        .map_or_else(|_| attr.attr_type().to_id_string(), str::to_owned);
                    let value = attr.as_str().unwrap_or("");
                    format!("{key}={}", escape_dn_value(value))
                })
                .collect::<Vec<_>>()
                .join("+")
        })
        .collect();
    rdns.into_iter().rev().collect::<Vec<_>>().join(",")
}

fn escape_dn_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && (c == '#' || c == ' '))
            || (i + 1 == v.chars().count() && c == ' ');
        if special {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// What nginx's `$ssl_client_escaped_cert` leaves unescaped (RFC 3986
/// unreserved characters).
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn url_encoded_pem(der: &CertificateDer<'_>) -> String {
    let b64 = base64::engine::general_purpose::STANDARD.encode(der.as_ref());
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in b64.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap_or(""));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    utf8_percent_encode(&pem, URI_COMPONENT).to_string()
}

// === verifiers ===

/// Refuses chains with more than `depth` certificates between the client's
/// and the CA's (nginx `ssl_verify_depth`), then defers to `inner`. A CA
/// certificate the client sends along does not count (OpenSSL clients
/// append what they find in their own trust store).
#[derive(Debug)]
struct DepthLimited {
    inner: Arc<dyn ClientCertVerifier>,
    depth: u8,
    anchors: Vec<CertificateDer<'static>>,
}

/// Accepts any certificate (signatures over the handshake still checked).
#[derive(Debug)]
struct Unverified {
    inner: Arc<dyn ClientCertVerifier>,
}

macro_rules! delegate_signatures {
    () => {
        fn offer_client_auth(&self) -> bool {
            self.inner.offer_client_auth()
        }

        fn client_auth_mandatory(&self) -> bool {
            self.inner.client_auth_mandatory()
        }

        fn root_hint_subjects(&self) -> &[DistinguishedName] {
            self.inner.root_hint_subjects()
        }

        fn verify_tls12_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls12_signature(message, cert, dss)
        }

        fn verify_tls13_signature(
            &self,
            message: &[u8],
            cert: &CertificateDer<'_>,
            dss: &DigitallySignedStruct,
        ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
            self.inner.verify_tls13_signature(message, cert, dss)
        }

        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.inner.supported_verify_schemes()
        }
    };
}

impl ClientCertVerifier for DepthLimited {
    delegate_signatures!();

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // nginx counts the client's certificate and each intermediate; a
        // depth of 1 allows a certificate issued by the CA directly.
        let below_ca = intermediates
            .iter()
            .filter(|c| !self.anchors.iter().any(|a| a.as_ref() == c.as_ref()))
            .count();
        if below_ca + 1 > usize::from(self.depth) {
            return Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::Other(rustls::OtherError(Arc::new(DepthExceeded(
                    self.depth,
                )))),
            ));
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }
}

impl ClientCertVerifier for Unverified {
    delegate_signatures!();

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("certificate chain longer than the verify depth {0}")]
struct DepthExceeded(u8);
