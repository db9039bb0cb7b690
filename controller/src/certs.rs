//! What the TLS listener serves, across rebuilds.
//!
//! Translation is pure and judges only the snapshot in front of it; whether
//! a broken Secret's hosts keep a certificate depends on what earlier
//! snapshots held. That memory is this one value, owned by the rebuild loop
//! ([`crate::reconcile`]): the last certificate that validated, per Secret,
//! for as long as some object still references the Secret.

use std::collections::BTreeMap;
use std::sync::Arc;

use portico_dataplane::listen::tls::{CertBinding, CertConfig, PortCerts, ServerCert};
use portico_dataplane::model::Hostname;

use crate::snapshot::Key;
use crate::translate::{Settings, Translation};

#[derive(Debug, Default)]
pub struct CertMemory {
    last_good: BTreeMap<Key, Arc<ServerCert>>,
}

impl CertMemory {
    /// Remembers every certificate that validated in `t`, forgets Secrets no
    /// longer referenced, and says what to serve: for each binding the
    /// Secret's current certificate, else its last good one, else nothing
    /// (the default certificate answers for those hosts).
    pub fn serve(&mut self, t: &Translation, settings: &Settings) -> CertConfig {
        self.last_good.retain(|k, _| t.certificates.contains_key(k));
        for (key, status) in &t.certificates {
            if let Ok(cert) = status {
                self.last_good.insert(key.clone(), Arc::clone(cert));
            }
        }
        let bindings = t
            .tls
            .iter()
            .filter_map(|b| {
                let cert = self.last_good.get(&b.secret)?;
                Some(CertBinding {
                    name: format!("{}/{}", b.secret.0, b.secret.1),
                    hosts: b.hosts.iter().filter_map(|h| Hostname::parse(h)).collect(),
                    cert: Arc::clone(cert),
                })
            })
            .collect();
        let default = settings
            .default_certificate
            .as_ref()
            .and_then(|k| self.last_good.get(k))
            .cloned();
        CertConfig {
            bindings,
            default,
            // No memory here: a policy whose CA cannot be used denies its
            // paths instead (fail closed), so there is nothing to keep.
            client_auth: t.client_auth.clone(),
            passthrough: t.passthrough.clone(),
            // Invalid ones deny their paths (fail closed): nothing to keep.
            upstream_client_certs: t.upstream_client_certs.clone(),
            ports: t
                .port_tls
                .iter()
                .map(|p| PortCerts {
                    port: p.port,
                    bindings: p
                        .bindings
                        .iter()
                        .filter_map(|(hosts, secret)| {
                            Some(CertBinding {
                                name: format!("{}/{}", secret.0, secret.1),
                                hosts: hosts.iter().filter_map(|h| Hostname::parse(h)).collect(),
                                cert: Arc::clone(self.last_good.get(secret)?),
                            })
                        })
                        .collect(),
                    default: p
                        .default
                        .as_ref()
                        .and_then(|k| self.last_good.get(k))
                        .cloned(),
                })
                .collect(),
        }
    }
}
