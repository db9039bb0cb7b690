//! Basic authentication: the users an Ingress's `auth-secret` names, read
//! from its Opaque Secret and parsed into typed hashes. Each refused entry
//! is reported on the Ingress by line or key, never with its hash; a Secret
//! that cannot admit anyone denies the paths (503, as ingress-nginx's
//! "location denied"), never serves them unauthenticated.

use k8s_openapi::api::core::v1::Secret;
use portico_dataplane::external_auth::Template;
use portico_dataplane::filter::basic_auth::{Credentials, parse_htpasswd, parse_user_map};
use portico_dataplane::filter::jwt::KeySet;
use portico_dataplane::model::{
    BasicAuth, ClaimHeader, ExternalAuth, JwksSource, Jwt, JwtProvider, TokenSource,
};

use super::Settings;
use super::backends::{PortRef, ServiceRef};
use crate::annotations::{AuthAnnotations, AuthSecretType, JwtAnnotations};
use crate::diagnostics::Diagnostic;
use crate::snapshot::Snapshot;

/// The field diagnostics about the Secret are reported on.
pub(super) const FIELD: &str = "metadata.annotations[auth-secret]";

/// The basic-auth filter `a` asks for, on an Ingress in `namespace`:
/// `None` when off; an error naming the Secret and the reason when no one
/// could be admitted (the caller denies the paths). Refused entries are
/// added to `diagnostics` as warnings.
pub(super) fn basic_auth(
    snap: &Snapshot,
    settings: &Settings,
    namespace: &str,
    a: &AuthAnnotations,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<Option<BasicAuth>, String> {
    let Some((secret_ns, name)) = a.secret.as_ref().filter(|_| a.basic) else {
        return Ok(None);
    };
    let (ns, secret) = opaque_secret(
        snap,
        settings,
        namespace,
        "auth-secret",
        secret_ns.as_deref(),
        name,
    )?;
    let data = secret.data.as_ref();
    let parsed = match a.secret_type {
        AuthSecretType::AuthFile => {
            let auth = data
                .and_then(|d| d.get("auth"))
                .ok_or_else(|| format!("Secret {ns}/{name} has no key auth"))?;
            let text = std::str::from_utf8(&auth.0)
                .map_err(|_| format!("Secret {ns}/{name}: auth is not UTF-8 text"))?;
            parse_htpasswd(text)
        }
        AuthSecretType::AuthMap => parse_user_map(
            data.into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), v.0.as_slice())),
        ),
    };
    for e in &parsed.errors {
        let who = match &e.user {
            Some(user) => format!("user {user:?} cannot log in"),
            None => "ignored".to_owned(),
        };
        diagnostics.push(Diagnostic::warning(
            "InvalidAuthSecret",
            FIELD,
            format!("Secret {ns}/{name}: {}: {}; {who}", e.at, e.reason),
        ));
    }
    if parsed.users.is_empty() {
        return Err(format!("Secret {ns}/{name} lists no usable user"));
    }
    Ok(Some(BasicAuth {
        realm: a.realm.clone().unwrap_or_default(),
        secret: format!("{ns}/{name}"),
        users: Credentials::new(parsed.users),
        forward_authorization: a.forward_authorization,
    }))
}

/// The Opaque Secret `annotation` names (`namespace/name` or `name` in
/// `namespace`), and its namespace.
fn opaque_secret<'s>(
    snap: &'s Snapshot,
    settings: &Settings,
    namespace: &str,
    annotation: &str,
    secret_ns: Option<&str>,
    name: &str,
) -> Result<(String, &'s Secret), String> {
    let ns = secret_ns.unwrap_or(namespace);
    if ns != namespace && !settings.allow_cross_namespace_auth_secret {
        return Err(format!(
            "{annotation} names Secret {ns}/{name} in another namespace, allowed only with --allow-cross-namespace-auth-secret"
        ));
    }
    let secret = snap
        .secrets
        .get(&(ns.to_owned(), name.to_owned()))
        .ok_or_else(|| format!("no Opaque Secret named {ns}/{name}"))?;
    if let Some(t) = secret.type_.as_deref().filter(|t| *t != "Opaque") {
        return Err(format!("Secret {ns}/{name} is of type {t}, not Opaque"));
    }
    Ok((ns.to_owned(), secret))
}

/// The field diagnostics about JWT keys are reported on.
pub(super) const JWT_FIELD: &str = "metadata.annotations[jwt-issuer]";

/// The JWT filter `a` asks for, on an Ingress in `namespace`: `None` when
/// off; an error naming the Secret and the reason when its keys are
/// unusable (the caller denies the paths).
pub(super) fn jwt(
    snap: &Snapshot,
    settings: &Settings,
    namespace: &str,
    a: &JwtAnnotations,
) -> Result<Option<Jwt>, String> {
    let Some(issuer) = &a.issuer else {
        return Ok(None);
    };
    let jwks = match (&a.jwks_uri, &a.jwks_secret) {
        (Some(uri), None) => JwksSource::Uri(uri.clone()),
        (None, Some((secret_ns, name))) => jwks_from_secret(
            snap,
            settings,
            namespace,
            "jwt-jwks-secret",
            secret_ns.as_deref(),
            name,
        )?,
        // Reported by the annotation parser, which also denies the paths.
        _ => return Err("JWT validation needs exactly one key source".into()),
    };
    let mut p = JwtProvider::new(issuer.clone(), jwks);
    p.audiences = a.audiences.clone();
    p.from = match &a.from_cookie {
        Some(c) => TokenSource::Cookie(c.clone()),
        None => TokenSource::Header,
    };
    p.claim_to_headers = a
        .claim_to_headers
        .iter()
        .map(|(claim, header)| ClaimHeader {
            claim: claim.clone(),
            header: header.clone(),
        })
        .collect();
    if let Some(skew) = a.clock_skew {
        p.clock_skew = skew;
    }
    Ok(Some(Jwt {
        providers: vec![p],
        required: a.required,
    }))
}

/// The JWKS document under the key `jwks` of the Opaque Secret `name`,
/// checked now so that a broken one (or an HMAC key) is reported on the
/// object that names it.
pub(super) fn jwks_from_secret(
    snap: &Snapshot,
    settings: &Settings,
    namespace: &str,
    field: &str,
    secret_ns: Option<&str>,
    name: &str,
) -> Result<JwksSource, String> {
    let (ns, secret) = opaque_secret(snap, settings, namespace, field, secret_ns, name)?;
    let text = secret
        .data
        .as_ref()
        .and_then(|d| d.get("jwks"))
        .ok_or_else(|| format!("Secret {ns}/{name} has no key jwks"))?;
    let text = std::str::from_utf8(&text.0)
        .map_err(|_| format!("Secret {ns}/{name}: jwks is not UTF-8 text"))?;
    KeySet::parse(text.as_bytes()).map_err(|e| format!("Secret {ns}/{name}: jwks: {e}"))?;
    Ok(JwksSource::Inline {
        secret: format!("{ns}/{name}"),
        jwks: text.to_owned(),
    })
}

/// Points an external-auth policy whose plain-http URL names an in-cluster
/// Service (`http://name.namespace.svc[.cluster.local][:port]/...`) at that
/// Service's endpoints, resolved from the same EndpointSlices as routes.
/// Anything else, or a Service the snapshot does not hold, stays with DNS.
pub(crate) fn resolve_auth_service(snap: &Snapshot, auth: &mut ExternalAuth) {
    auth.service = auth_service_ref(&auth.url)
        .and_then(|r| super::backends::error_backend(snap, &r).ok())
        .map(Box::new);
}

/// The Service an auth URL names, if it names one by its cluster DNS name.
fn auth_service_ref(url: &Template) -> Option<ServiceRef> {
    if !url.as_str().get(..7)?.eq_ignore_ascii_case("http://") {
        return None;
    }
    let authority = url.authority()?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().ok()?),
        None => (authority, 80),
    };
    cluster_service_ref(host, port)
}

/// The Service a host name names by its cluster DNS name
/// (`name.namespace.svc[.cluster.local]`), on `port`.
pub(super) fn cluster_service_ref(host: &str, port: u16) -> Option<ServiceRef> {
    let host = host.to_ascii_lowercase();
    let rest = host
        .strip_suffix(".svc.cluster.local")
        .or_else(|| host.strip_suffix(".svc"))?;
    let (name, namespace) = rest.split_once('.')?;
    if namespace.contains('.') || name.is_empty() || namespace.is_empty() {
        return None;
    }
    Some(ServiceRef {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port: Some(PortRef::Number(i32::from(port))),
    })
}

#[cfg(test)]
mod auth_service_tests {
    use super::*;

    #[test]
    fn only_cluster_names_of_plain_http_urls_name_a_service() {
        let r =
            |u: &str| auth_service_ref(&Template::service_url(u).unwrap()).map(|r| r.to_string());
        assert_eq!(
            r("http://oauth2-proxy.auth.svc.cluster.local/oauth2/auth").as_deref(),
            Some("auth/oauth2-proxy:80")
        );
        assert_eq!(
            r("http://OAuth.Auth.svc:4180/x").as_deref(),
            Some("auth/oauth:4180")
        );
        assert_eq!(r("https://oauth2-proxy.auth.svc/x"), None);
        assert_eq!(r("http://auth.example.com/x"), None);
        assert_eq!(r("http://a.b.c.svc/x"), None);
        assert_eq!(r("http://auth.svc/x"), None);
    }
}
