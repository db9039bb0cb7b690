//! TLS Secrets: each Secret a [`TlsBinding`] names (and the
//! `--default-ssl-certificate`) is parsed and validated against the
//! snapshot's clock. A Secret that cannot be served yields a Warning on every
//! object that references it, naming the Secret and the reason.
//!
//! What is served instead (the last good certificate, or the default) is
//! decided outside this pure function, by [`crate::certs::CertMemory`] in the
//! rebuild loop, because it depends on what earlier snapshots held.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use portico_dataplane::listen::tls::{CertError, ClientAuth, ServerCert, VerifyClient};
use portico_dataplane::model::{Hostname, UpstreamTls};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

use super::{Settings, TlsBinding, Translation, class, gateway};
use crate::annotations::{AuthTlsVerify, HttpsAnnotations, UpstreamTlsAnnotations};
use crate::diagnostics::Diagnostic;
use crate::snapshot::{Key, Snapshot};

/// Why a Secret's certificate is not served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SecretError {
    #[error("no Secret of type kubernetes.io/tls named {0}/{1}")]
    NotFound(String, String),
    #[error("Secret {0}/{1} has no {2}")]
    MissingKey(String, String, &'static str),
    #[error("Secret {0}/{1}: {2}")]
    Invalid(String, String, CertError),
}

/// The outcome for one Secret.
pub type CertStatus = Result<Arc<ServerCert>, SecretError>;

/// Parses every Secret bound or named as the default; adds a diagnostic to
/// each referencing object for each that cannot be served, and one for each
/// TLS host that is not a valid name.
pub(super) fn resolve_certificates(snap: &Snapshot, settings: &Settings, out: &mut Translation) {
    let mut certs: BTreeMap<Key, CertStatus> = BTreeMap::new();
    let wanted = out
        .tls
        .iter()
        .map(|b| &b.secret)
        .chain(out.port_tls.iter().flat_map(gateway::PortTls::secrets))
        .chain(settings.default_certificate.as_ref());
    for key in wanted {
        if !certs.contains_key(key) {
            certs.insert(key.clone(), load(snap, key));
        }
    }
    let mut diagnostics = Vec::new();
    // The listener serves the first binding of a name (objects in
    // namespace/name order, Ingresses before HTTPRoutes).
    let mut claimed: BTreeMap<Hostname, &TlsBinding> = BTreeMap::new();
    for b in &out.tls {
        if let Some(Err(e)) = certs.get(&b.secret) {
            diagnostics.push((
                b.source.clone(),
                Diagnostic::warning(
                    super::REASON_INVALID_CERTIFICATE_REF,
                    format!("{}.secretName", b.field),
                    format!(
                        "{e}; its hosts keep the last good certificate, or the default one if there never was one"
                    ),
                ),
            ));
        }
        for (i, h) in b.hosts.iter().enumerate() {
            if let Some(name) = Hostname::parse(h) {
                let first = *claimed.entry(name).or_insert(b);
                if first.secret != b.secret {
                    diagnostics.push((
                        b.source.clone(),
                        Diagnostic::warning(
                            "Conflicted",
                            format!("{}.hosts[{i}]", b.field),
                            format!(
                                "{h} is also bound to Secret {}/{} by {}, which comes first and is served",
                                first.secret.0, first.secret.1, first.source
                            ),
                        ),
                    ));
                }
            } else {
                diagnostics.push((
                    b.source.clone(),
                    Diagnostic::warning(
                        "InvalidTLS",
                        format!("{}.hosts[{i}]", b.field),
                        format!("{h:?} is not a valid host name; no certificate is bound to it"),
                    ),
                ));
            }
        }
    }
    for (obj, d) in diagnostics {
        out.reports.entry(obj).or_default().diagnostics.push(d);
    }
    out.certificates = certs;
}

/// Hosts served over TLS by any object: where `ssl-redirect` and HSTS
/// apply, whichever object's rules serve the host (as ingress-nginx decides
/// per server, not per Ingress).
#[derive(Clone, PartialEq)]
pub(super) struct TlsHosts(HashSet<Hostname>);

impl TlsHosts {
    pub(super) fn of(snap: &Snapshot, settings: &Settings) -> Self {
        let ingress_hosts = snap
            .ingresses
            .iter()
            .filter(|ing| class::ingress_is_ours(ing, &snap.ingress_classes, settings))
            .filter_map(|ing| ing.spec.as_ref()?.tls.as_ref())
            .flatten()
            .filter(|t| t.secret_name.as_deref().is_some_and(|s| !s.is_empty()))
            .flat_map(|t| t.hosts.iter().flatten());
        let route_hosts = snap
            .http_routes
            .iter()
            .filter(|r| r.spec.policies.as_ref().is_some_and(|p| p.tls.is_some()))
            .flat_map(|r| r.spec.hostnames.iter());
        Self(
            ingress_hosts
                .chain(route_hosts)
                .filter_map(|h| Hostname::parse(h))
                .collect(),
        )
    }

    /// Whether a certificate binding covers `host`: the same name, or a
    /// wildcard one label up.
    pub(super) fn covers(&self, host: &Hostname) -> bool {
        if self.0.contains(host) {
            return true;
        }
        match host {
            Hostname::Exact(name) => name
                .split_once('.')
                .is_some_and(|(_, parent)| self.0.contains(&Hostname::Wildcard(parent.to_owned()))),
            Hostname::Wildcard(_) | Hostname::WildcardAnyDepth(_) => false,
        }
    }
}

/// The client-certificate policy an Ingress's `auth-tls-*` annotations ask
/// for: `None` when off; an error naming the Secret and the reason when its
/// CA bundle cannot be used (the caller then denies the paths: an Ingress
/// asking for client certificates is never served without them).
pub(super) fn client_auth(
    snap: &Snapshot,
    a: &HttpsAnnotations,
) -> Result<Option<Arc<ClientAuth>>, String> {
    let Some((ns, name)) = &a.auth_tls_secret else {
        return Ok(None);
    };
    let verify = match a.auth_tls_verify.unwrap_or(AuthTlsVerify::On) {
        AuthTlsVerify::Off => return Ok(None),
        AuthTlsVerify::On => VerifyClient::On,
        AuthTlsVerify::Optional => VerifyClient::Optional,
        AuthTlsVerify::OptionalNoCa => VerifyClient::OptionalNoCa,
    };
    let depth = a.auth_tls_verify_depth.unwrap_or(1);
    let ca = ca_bundle(snap, ns, name)?;
    let id = format!("{ns}/{name} {verify:?} {depth}");
    ClientAuth::new(id, ca, verify, depth)
        .map(|auth| Some(Arc::new(auth)))
        .map_err(|e| format!("Secret {ns}/{name}: ca.crt: {e}"))
}

/// A client certificate for backends, under the id routes name it by.
pub type UpstreamClientCert = (String, Arc<ServerCert>);

/// TLS to an Ingress's backends from its `proxy-ssl-*` annotations;
/// `default_name` when `proxy-ssl-name` is unset. With the client
/// certificate to publish when `proxy-ssl-secret` holds `tls.crt` and
/// `tls.key`. An error when verification is on and there is no usable CA
/// bundle, or when the client certificate cannot be used.
pub(super) fn upstream_tls(
    snap: &Snapshot,
    a: &UpstreamTlsAnnotations,
    default_name: String,
) -> Result<(UpstreamTls, Option<UpstreamClientCert>), String> {
    let client_cert = match &a.secret {
        Some((ns, name)) => upstream_client_cert(snap, ns, name)?,
        None => None,
    };
    let ca_pem = match (&a.secret, a.verify) {
        (_, false) => String::new(),
        (None, true) => {
            return Err("proxy-ssl-verify is on but proxy-ssl-secret names no CA".into());
        }
        (Some((ns, name)), true) => {
            let ca = ca_bundle(snap, ns, name)?;
            let certs = CertificateDer::pem_slice_iter(ca)
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| format!("Secret {ns}/{name}: ca.crt: {e}"))?;
            if certs.is_empty() {
                return Err(format!("Secret {ns}/{name}: ca.crt holds no certificate"));
            }
            String::from_utf8_lossy(ca).into_owned()
        }
    };
    let tls = UpstreamTls {
        verify: a.verify,
        server_name: a.name.clone().unwrap_or(default_name),
        sni: a.server_name,
        ca_pem,
        client_cert: client_cert.as_ref().map(|(id, _)| id.clone()),
    };
    Ok((tls, client_cert))
}

/// The Secret's `tls.crt`/`tls.key` when it has them (a CA-only Secret has
/// none). The id carries a digest of the chain so that a rotated
/// certificate gets fresh connection pools.
fn upstream_client_cert(
    snap: &Snapshot,
    ns: &str,
    name: &str,
) -> Result<Option<UpstreamClientCert>, String> {
    let key = (ns.to_owned(), name.to_owned());
    let Some(data) = snap.secrets.get(&key).and_then(|s| s.data.as_ref()) else {
        return Ok(None);
    };
    if !data.contains_key("tls.crt") && !data.contains_key("tls.key") {
        return Ok(None);
    }
    let cert = load(snap, &key).map_err(|e| format!("{e} (client certificate to backends)"))?;
    let mut digest = std::collections::hash_map::DefaultHasher::new();
    std::hash::Hash::hash(cert.chain(), &mut digest);
    let id = format!("{ns}/{name}#{:016x}", std::hash::Hasher::finish(&digest));
    Ok(Some((id, cert)))
}

/// A Secret's non-empty `ca.crt`. A CA bundle may come in a TLS Secret or
/// an Opaque one (ingress-nginx's `auth-tls-secret` docs use either), and
/// both kinds are watched.
fn ca_bundle<'s>(snap: &'s Snapshot, ns: &str, name: &str) -> Result<&'s [u8], String> {
    snap.secrets
        .get(&(ns.to_owned(), name.to_owned()))
        .ok_or_else(|| format!("no Secret of type kubernetes.io/tls or Opaque named {ns}/{name}"))?
        .data
        .as_ref()
        .and_then(|d| d.get("ca.crt"))
        .map(|v| v.0.as_slice())
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("Secret {ns}/{name} has no ca.crt"))
}

pub(super) fn load(snap: &Snapshot, key: &Key) -> CertStatus {
    let (ns, name) = key;
    let secret: &Secret = snap
        .secrets
        .get(key)
        .ok_or_else(|| SecretError::NotFound(ns.clone(), name.clone()))?;
    let field = |k: &'static str| {
        secret
            .data
            .as_ref()
            .and_then(|d| d.get(k))
            .filter(|v| !v.0.is_empty())
            .ok_or_else(|| SecretError::MissingKey(ns.clone(), name.clone(), k))
    };
    let crt = field("tls.crt")?;
    let key_pem = field("tls.key")?;
    let invalid = |e| SecretError::Invalid(ns.clone(), name.clone(), e);
    let cert = ServerCert::from_pem(&crt.0, &key_pem.0).map_err(invalid)?;
    cert.check_validity(snap.taken_at).map_err(invalid)?;
    Ok(Arc::new(cert))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::api::networking::v1::Ingress;
    use rcgen::{CertificateParams, KeyPair};

    use crate::certs::CertMemory;
    use crate::diagnostics::{Kind, ObjectRef};
    use crate::snapshot::{Object, Snapshot};
    use crate::translate::{Settings, Translation, translate};

    const NOW: i64 = 1_800_000_000;

    /// PEM certificate and key for `host`, valid `from..until` (Unix secs).
    fn pem(host: &str, from: i64, until: i64) -> (String, String) {
        let mut p = CertificateParams::new(vec![host.to_owned()]).unwrap();
        p.not_before =
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(from as u64);
        p.not_after =
            rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(until as u64);
        let key = KeyPair::generate().unwrap();
        let cert = p.self_signed(&key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn secret(name: &str, crt: &str, key: &str) -> Object {
        let mut data = BTreeMap::new();
        data.insert("tls.crt".to_owned(), ByteString(crt.as_bytes().to_vec()));
        data.insert("tls.key".to_owned(), ByteString(key.as_bytes().to_vec()));
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("default".into());
        s.type_ = Some("kubernetes.io/tls".into());
        s.data = Some(data);
        Object::Secret(Arc::new(s))
    }

    fn ingress(secret: &str) -> Object {
        let yaml = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: default, annotations: {{kubernetes.io/ingress.class: portico}}}}\nspec:\n  tls: [{{hosts: [web.test], secretName: {secret}}}]\n  defaultBackend: {{service: {{name: web, port: {{number: 80}}}}}}\n"
        );
        Object::Ingress(Arc::new(serde_yaml::from_str::<Ingress>(&yaml).unwrap()))
    }

    fn run(objects: Vec<Object>) -> Translation {
        let mut snap = Snapshot::from_objects(objects);
        snap.taken_at = NOW;
        translate(&snap, &Settings::default())
    }

    fn web() -> ObjectRef {
        ObjectRef {
            kind: Kind::Ingress,
            namespace: "default".into(),
            name: "web".into(),
        }
    }

    /// The one TLS finding on the Ingress, if any (its Service is absent on
    /// purpose: that finding is not this module's).
    fn finding(t: &Translation) -> Option<String> {
        let r = t.reports.get(&web())?;
        let tls: Vec<_> = r
            .diagnostics
            .iter()
            .filter(|d| d.field.starts_with("spec.tls"))
            .collect();
        assert!(tls.len() <= 1, "{tls:?}");
        tls.first()
            .map(|d| format!("{} {}: {}", d.reason, d.field, d.message))
    }

    #[test]
    fn valid_certificate_is_served_without_findings() {
        let (crt, key) = pem("web.test", NOW - 10, NOW + 10);
        let t = run(vec![ingress("web-tls"), secret("web-tls", &crt, &key)]);
        assert_eq!(finding(&t), None);
        let status = &t.certificates[&("default".to_owned(), "web-tls".to_owned())];
        assert!(status.is_ok(), "{status:?}");
    }

    #[test]
    fn invalid_secrets_are_warnings_naming_secret_and_reason() {
        let (crt, key) = pem("web.test", NOW - 10, NOW + 10);
        let (_, other_key) = pem("web.test", NOW - 10, NOW + 10);
        let (old_crt, old_key) = pem("web.test", NOW - 100, NOW - 1);
        let (new_crt, new_key) = pem("web.test", NOW + 1, NOW + 100);
        let cases = [
            (crt.clone(), other_key, "does not match"),
            (old_crt, old_key, "expired"),
            (new_crt, new_key, "not valid before"),
            ("garbage".into(), key.clone(), "no certificate"),
            (crt.clone(), String::new(), "has no tls.key"),
        ];
        for (crt, key, want) in cases {
            let t = run(vec![ingress("web-tls"), secret("web-tls", &crt, &key)]);
            let got = finding(&t).expect("a finding");
            assert!(
                got.starts_with(
                    "InvalidCertificateRef spec.tls[0].secretName: Secret default/web-tls"
                ) && got.contains(want),
                "want {want:?} in {got}"
            );
        }
        let t = run(vec![ingress("absent")]);
        assert!(finding(&t).unwrap().contains("named default/absent"));
    }

    #[test]
    fn last_good_certificate_is_kept_until_unreferenced() {
        let (good_crt, good_key) = pem("web.test", NOW - 10, NOW + 10);
        let (bad_crt, bad_key) = pem("web.test", NOW - 100, NOW - 1);
        let settings = Settings::default();
        let mut memory = CertMemory::default();

        // Never good: nothing bound, so the default certificate answers.
        let t = run(vec![
            ingress("web-tls"),
            secret("web-tls", &bad_crt, &bad_key),
        ]);
        assert!(memory.serve(&t, &settings).bindings.is_empty());

        let t = run(vec![
            ingress("web-tls"),
            secret("web-tls", &good_crt, &good_key),
        ]);
        let good = memory.serve(&t, &settings);
        assert_eq!(good.bindings.len(), 1);
        assert_eq!(good.bindings[0].name, "default/web-tls");

        // Broken update, then the Secret deleted: the good one stays.
        let t = run(vec![
            ingress("web-tls"),
            secret("web-tls", &bad_crt, &bad_key),
        ]);
        assert_eq!(memory.serve(&t, &settings), good);
        let t = run(vec![ingress("web-tls")]);
        assert_eq!(memory.serve(&t, &settings), good);

        // No longer referenced: forgotten, so a later broken Secret of the
        // same name does not resurrect it.
        let t = run(vec![]);
        assert!(memory.serve(&t, &settings).bindings.is_empty());
        let t = run(vec![
            ingress("web-tls"),
            secret("web-tls", &bad_crt, &bad_key),
        ]);
        assert!(memory.serve(&t, &settings).bindings.is_empty());
    }

    fn mtls_ingress(annotations: &str) -> Object {
        let yaml = format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: web, namespace: default, annotations: {{kubernetes.io/ingress.class: portico, {annotations}}}}}\nspec:\n  rules: [{{host: web.test, http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {{number: 80}}}}}}}}]}}}}]\n"
        );
        Object::Ingress(Arc::new(serde_yaml::from_str::<Ingress>(&yaml).unwrap()))
    }

    fn ca_secret(name: &str, ca_pem: &str) -> Object {
        let mut data = BTreeMap::new();
        data.insert("ca.crt".to_owned(), ByteString(ca_pem.as_bytes().to_vec()));
        let mut s = Secret::default();
        s.metadata.name = Some(name.into());
        s.metadata.namespace = Some("default".into());
        s.data = Some(data);
        Object::Secret(Arc::new(s))
    }

    /// The rule's client-certificate filter.
    fn client_cert(
        rule: &portico_dataplane::model::Rule,
    ) -> Option<portico_dataplane::model::RouteClientAuth> {
        rule.chain.iter().find_map(|f| match f {
            portico_dataplane::model::Filter::ClientCert(a) => Some(a.clone()),
            _ => None,
        })
    }

    #[test]
    fn client_auth_policy_from_annotations() {
        use portico_dataplane::listen::tls::VerifyClient;
        use portico_dataplane::model::{Action, Hostname, RouteClientAuth};
        let (ca, _) = pem("client-ca", NOW - 10, NOW + 10);
        let t = run(vec![
            mtls_ingress(
                "portico.dev/auth-tls-secret: default/client-ca, nginx.ingress.kubernetes.io/auth-tls-verify-client: optional, nginx.ingress.kubernetes.io/auth-tls-pass-certificate-to-upstream: \"true\"",
            ),
            ca_secret("client-ca", &ca),
        ]);
        assert_eq!(t.client_auth.len(), 1);
        let b = &t.client_auth[0];
        assert_eq!(b.hosts, vec![Hostname::parse("web.test").unwrap()]);
        assert_eq!(b.auth.verify, VerifyClient::Optional);
        assert_eq!(
            client_cert(&t.config.routes[0].rules[0]),
            Some(RouteClientAuth {
                policy: b.auth.id.clone(),
                pass_certificate: true,
            })
        );

        // Off: no policy. An unusable CA: an error, and the paths deny.
        let t = run(vec![
            mtls_ingress(
                "portico.dev/auth-tls-secret: default/client-ca, portico.dev/auth-tls-verify-client: \"off\"",
            ),
            ca_secret("client-ca", &ca),
        ]);
        assert!(t.client_auth.is_empty());
        assert_eq!(client_cert(&t.config.routes[0].rules[0]), None);
        for (objects, want) in [
            (
                vec![],
                "no Secret of type kubernetes.io/tls or Opaque named default/client-ca",
            ),
            (
                vec![ca_secret("client-ca", "junk")],
                "Secret default/client-ca: ca.crt",
            ),
        ] {
            let mut objects = objects;
            objects.push(mtls_ingress(
                "portico.dev/auth-tls-secret: default/client-ca",
            ));
            let t = run(objects);
            let d = &t.reports[&web()].diagnostics;
            assert!(
                d.iter().any(|d| d.reason == "InvalidCertificateRef"
                    && d.field == "metadata.annotations[auth-tls-secret]"
                    && d.message.contains(want)),
                "{d:?}"
            );
            assert!(t.client_auth.is_empty());
            assert!(
                t.config.routes[0]
                    .rules
                    .iter()
                    .all(|r| matches!(r.action, Action::Deny { .. })),
                "never served without client verification"
            );
        }
    }

    #[test]
    fn verified_upstream_tls_carries_the_ca_bundle() {
        use portico_dataplane::model::Action;
        let (ca, _) = pem("backend-ca", NOW - 10, NOW + 10);
        let t = run(vec![
            mtls_ingress(
                "nginx.ingress.kubernetes.io/backend-protocol: HTTPS, nginx.ingress.kubernetes.io/proxy-ssl-verify: \"on\", nginx.ingress.kubernetes.io/proxy-ssl-secret: default/backend-ca",
            ),
            ca_secret("backend-ca", &ca),
        ]);
        let Action::Forward(f) = &t.config.routes[0].rules[0].action else {
            panic!("{:?}", t.config.routes[0].rules[0].action);
        };
        let tls = f.upstream_tls.as_ref().unwrap();
        assert!(tls.verify);
        assert_eq!(tls.ca_pem, ca);
        assert_eq!(tls.server_name, "web.default.svc");
        assert_eq!(
            tls.client_cert, None,
            "a CA-only Secret has no client certificate"
        );

        // With tls.crt and tls.key too: a client certificate, published
        // under an id that names the Secret and changes with the chain.
        let (crt, key) = pem("proxy.client", NOW - 10, NOW + 10);
        let Object::Secret(with_client) = secret("backend-ca", &crt, &key) else {
            unreachable!()
        };
        let mut with_client = (*with_client).clone();
        if let Some(d) = with_client.data.as_mut() {
            d.insert("ca.crt".into(), ByteString(ca.as_bytes().to_vec()));
        }
        let t = run(vec![
            mtls_ingress(
                "nginx.ingress.kubernetes.io/backend-protocol: HTTPS, nginx.ingress.kubernetes.io/proxy-ssl-verify: \"on\", nginx.ingress.kubernetes.io/proxy-ssl-secret: default/backend-ca",
            ),
            Object::Secret(Arc::new(with_client)),
        ]);
        let Action::Forward(f) = &t.config.routes[0].rules[0].action else {
            panic!("{:?}", t.config.routes[0].rules[0].action);
        };
        let id = f
            .upstream_tls
            .as_ref()
            .unwrap()
            .client_cert
            .clone()
            .unwrap();
        assert!(id.starts_with("default/backend-ca#"), "{id}");
        assert_eq!(t.upstream_client_certs.len(), 1);
        assert_eq!(t.upstream_client_certs[0].0, id);
        // A bundle that does not parse denies the paths.
        let t = run(vec![
            mtls_ingress(
                "nginx.ingress.kubernetes.io/backend-protocol: HTTPS, nginx.ingress.kubernetes.io/proxy-ssl-verify: \"on\", nginx.ingress.kubernetes.io/proxy-ssl-secret: default/backend-ca",
            ),
            ca_secret(
                "backend-ca",
                "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n",
            ),
        ]);
        assert!(matches!(
            t.config.routes[0].rules[0].action,
            Action::Deny { .. }
        ));
    }

    #[test]
    fn default_certificate_comes_from_its_secret() {
        let (crt, key) = pem("default.test", NOW - 10, NOW + 10);
        let mut snap = Snapshot::from_objects(vec![secret("fallback", &crt, &key)]);
        snap.taken_at = NOW;
        let settings = Settings {
            default_certificate: Some(("default".into(), "fallback".into())),
            ..Settings::default()
        };
        let t = translate(&snap, &settings);
        let served = CertMemory::default().serve(&t, &settings);
        assert!(served.default.is_some());
    }
}
