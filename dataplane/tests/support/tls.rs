//! TLS test support: a generated CA issuing server certificates (rcgen), and
//! real rustls clients.

use std::net::SocketAddr;
use std::sync::Arc;

use base64::Engine as _;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use portico_dataplane::listen::tls::danger::NoVerification;
use portico_dataplane::listen::tls::{CertBinding, ServerCert};
use portico_dataplane::model::Hostname;
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// A certificate authority generated for one test.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub der: CertificateDer<'static>,
}

/// An issued server certificate: PEM for Secrets, parsed for the dataplane.
pub struct Issued {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "portico test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `names` with this serial number.
    pub fn issue(&self, names: &[&str], serial: u64) -> Issued {
        self.issue_with(names, serial, |_| {})
    }

    pub fn issue_with(
        &self,
        names: &[&str],
        serial: u64,
        tweak: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.serial_number = Some(serial.into());
        tweak(&mut params);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    /// An intermediate CA issued by this one.
    pub fn intermediate(&self, cn: &str) -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, cn);
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        TestCa {
            der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A client certificate with subject `O=<org>, CN=<cn>`.
    pub fn issue_client(&self, org: &str, cn: &str) -> Issued {
        self.issue_with(&[], 100, |p| {
            p.distinguished_name = rcgen::DistinguishedName::new();
            p.distinguished_name
                .push(rcgen::DnType::OrganizationName, org);
            p.distinguished_name.push(rcgen::DnType::CommonName, cn);
            p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        })
    }

    /// The CA certificate as PEM (a `ca.crt`).
    pub fn pem(&self) -> String {
        let b64 = base64::engine::general_purpose::STANDARD.encode(self.der.as_ref());
        let lines: Vec<&str> = b64
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }

    pub fn roots(&self) -> RootCertStore {
        let mut roots = RootCertStore::empty();
        roots.add(self.der.clone()).unwrap();
        roots
    }
}

impl Issued {
    pub fn server_cert(&self) -> Arc<ServerCert> {
        Arc::new(ServerCert::from_pem(self.cert_pem.as_bytes(), self.key_pem.as_bytes()).unwrap())
    }

    pub fn binding(&self, name: &str, hosts: &[&str]) -> CertBinding {
        CertBinding {
            name: name.into(),
            hosts: hosts.iter().map(|h| Hostname::parse(h).unwrap()).collect(),
            cert: self.server_cert(),
        }
    }
}

/// Which TLS versions a client offers.
#[derive(Clone, Copy, Debug)]
pub enum Versions {
    Both,
    Tls12,
    Tls13,
}

/// A client trusting `roots`, offering `alpn`, never resuming sessions (so
/// every handshake is full and shows the server's current certificate).
pub fn client(roots: RootCertStore, versions: Versions, alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut cfg = builder(versions)
        .with_root_certificates(roots)
        .with_no_client_auth();
    finish(&mut cfg, alpn);
    Arc::new(cfg)
}

/// A client trusting `roots` that presents `chain` (leaf first) with `key`.
pub fn client_with_cert(
    roots: RootCertStore,
    chain: Vec<CertificateDer<'static>>,
    key_pem: &str,
    alpn: &[&[u8]],
) -> Arc<ClientConfig> {
    use rustls::pki_types::pem::PemObject;
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let mut cfg = builder(Versions::Both)
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    finish(&mut cfg, alpn);
    Arc::new(cfg)
}

/// A client that accepts any certificate: for tests that look at which
/// certificate the server chose, not whether it is trusted.
pub fn any_cert_client(alpn: &[&[u8]]) -> Arc<ClientConfig> {
    let mut cfg = builder(Versions::Both)
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(NoVerification))
        .with_no_client_auth();
    finish(&mut cfg, alpn);
    Arc::new(cfg)
}

fn builder(versions: Versions) -> rustls::ConfigBuilder<ClientConfig, rustls::WantsVerifier> {
    let v: &[&'static rustls::SupportedProtocolVersion] = match versions {
        Versions::Both => &[&rustls::version::TLS13, &rustls::version::TLS12],
        Versions::Tls12 => &[&rustls::version::TLS12],
        Versions::Tls13 => &[&rustls::version::TLS13],
    };
    ClientConfig::builder_with_provider(portico_dataplane::listen::tls::provider())
        .with_protocol_versions(v)
        .unwrap()
}

fn finish(cfg: &mut ClientConfig, alpn: &[&[u8]]) {
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    cfg.resumption = rustls::client::Resumption::disabled();
}

/// Connects and completes a handshake; `sni: None` sends no SNI.
pub async fn connect(
    cfg: &Arc<ClientConfig>,
    addr: SocketAddr,
    sni: Option<&str>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let (cfg, name) = match sni {
        Some(n) => (
            Arc::clone(cfg),
            ServerName::try_from(n.to_owned()).map_err(std::io::Error::other)?,
        ),
        None => {
            let mut c = (**cfg).clone();
            c.enable_sni = false;
            (Arc::new(c), ServerName::try_from("no-sni.invalid").unwrap())
        }
    };
    TlsConnector::from(cfg).connect(name, tcp).await
}

/// The leaf certificate the server presented.
pub fn served_leaf(s: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    s.get_ref().1.peer_certificates().expect("a certificate")[0].clone()
}

pub type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// One GET over an established TLS connection, h2 or HTTP/1.1 as ALPN chose.
pub async fn https_get(stream: Tls, host: &str, path: &str) -> (StatusCode, HeaderMap, String) {
    try_https_get(stream, host, path, &[]).await.unwrap()
}

/// [`https_get`] with extra request headers; an error when the server ends
/// the connection (as after a refused client certificate in TLS 1.3, where
/// the client's handshake completes before the server has judged it).
pub async fn try_https_get(
    stream: Tls,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(StatusCode, HeaderMap, String), String> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let mut req = if h2 {
        Request::get(format!("https://{host}{path}"))
    } else {
        Request::get(path).header("host", host)
    };
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(super::empty()).unwrap();
    let e = |e: hyper::Error| e.to_string();
    let rsp = if h2 {
        let (mut tx, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(e)?;
        tokio::spawn(conn);
        tx.send_request(req).await.map_err(e)?
    } else {
        let (mut tx, conn) = hyper::client::conn::http1::handshake(io).await.map_err(e)?;
        tokio::spawn(conn);
        tx.send_request(req).await.map_err(e)?
    };
    let (parts, body) = rsp.into_parts();
    let body = body.collect().await.map_err(e)?.to_bytes();
    Ok((
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}
