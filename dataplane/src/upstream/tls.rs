//! TLS to upstream endpoints (ingress-nginx `backend-protocol: HTTPS` and
//! `GRPCS`, `proxy-ssl-*`). Verification is off by default, as in
//! ingress-nginx, where backends commonly present self-signed certificates.

use std::sync::Arc;

use rustls::client::ResolvesClientCert;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme, version};
use rustls_pki_types::pem::PemObject;
use tokio_rustls::TlsConnector;

use crate::listen::tls::provider;
use crate::model::{Protocol, UpstreamTls};

/// A connector and the name to connect as, built once per endpoint.
pub(crate) struct UpstreamConnector {
    pub(crate) connector: TlsConnector,
    pub(crate) server_name: ServerName<'static>,
}

impl UpstreamConnector {
    /// ALPN follows the upstream protocol: `http/1.1`, or `h2`.
    /// `client_cert`: the certificate `t.client_cert` names, if published.
    pub(crate) fn new(
        t: &UpstreamTls,
        protocol: Protocol,
        client_cert: Option<Arc<CertifiedKey>>,
    ) -> Result<Self, String> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&version::TLS13, &version::TLS12])
            .map_err(|e| e.to_string())?;
        let builder = if t.verify {
            let mut roots = RootCertStore::empty();
            for c in CertificateDer::pem_slice_iter(t.ca_pem.as_bytes()) {
                let c = c.map_err(|e| format!("CA bundle: {e}"))?;
                roots.add(c).map_err(|e| format!("CA bundle: {e}"))?;
            }
            builder.with_root_certificates(roots)
        } else {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(NoVerification))
        };
        let mut cfg = match (&t.client_cert, client_cert) {
            (None, _) => builder.with_no_client_auth(),
            (Some(_), Some(key)) => builder.with_client_cert_resolver(Arc::new(ClientCert(key))),
            (Some(id), None) => return Err(format!("client certificate {id} is not published")),
        };
        cfg.alpn_protocols = vec![match protocol {
            Protocol::Http1 => b"http/1.1".to_vec(),
            Protocol::H2c => b"h2".to_vec(),
        }];
        cfg.enable_sni = t.sni;
        let server_name = ServerName::try_from(t.server_name.clone())
            .map_err(|e| format!("server name {:?}: {e}", t.server_name))?;
        Ok(Self {
            connector: TlsConnector::from(Arc::new(cfg)),
            server_name,
        })
    }
}

/// Presents one certificate whenever the backend asks.
#[derive(Debug)]
struct ClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for ClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.0))
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Accepts any server certificate; the handshake signatures are still
/// checked, so the connection is encrypted to whoever holds the presented
/// key. ingress-nginx's default towards backends (`proxy-ssl-verify: off`).
#[derive(Debug)]
pub struct NoVerification;

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &provider().signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        provider()
            .signature_verification_algorithms
            .supported_schemes()
    }
}
