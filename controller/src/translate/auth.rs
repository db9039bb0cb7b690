//! Basic authentication: the users an Ingress's `auth-secret` names, read
//! from its Opaque Secret and parsed into typed hashes. Each refused entry
//! is reported on the Ingress by line or key, never with its hash; a Secret
//! that cannot admit anyone denies the paths (503, as ingress-nginx's
//! "location denied"), never serves them unauthenticated.

use portico_dataplane::filter::basic_auth::{Credentials, parse_htpasswd, parse_user_map};
use portico_dataplane::model::BasicAuth;

use super::Settings;
use crate::annotations::{AuthAnnotations, AuthSecretType};
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
    let ns = secret_ns.as_deref().unwrap_or(namespace);
    if ns != namespace && !settings.allow_cross_namespace_auth_secret {
        return Err(format!(
            "auth-secret names Secret {ns}/{name} in another namespace, allowed only with --allow-cross-namespace-auth-secret"
        ));
    }
    let secret = snap
        .secrets
        .get(&(ns.to_owned(), name.clone()))
        .ok_or_else(|| format!("no Opaque Secret named {ns}/{name}"))?;
    if let Some(t) = secret.type_.as_deref().filter(|t| *t != "Opaque") {
        return Err(format!("Secret {ns}/{name} is of type {t}, not Opaque"));
    }
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
