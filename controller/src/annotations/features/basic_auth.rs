//! HTTP Basic authentication: `auth-type`, `auth-secret`, `auth-secret-type`,
//! `auth-realm` and `auth-forward-authorization`; the parts need `auth-type`,
//! and `auth-type: basic` fails closed without a Secret.

use super::prelude::*;
use crate::annotations::{DiagnosticKind, Fallback, namespaced_secret};

/// `auth-type`, `auth-secret`, `auth-secret-type`, `auth-realm` and
/// `auth-forward-authorization`: HTTP Basic authentication.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthAnnotations {
    /// `auth-type: basic` (the only type supported).
    pub basic: bool,
    /// The Secret's namespace when written (`namespace/name`), and name.
    pub secret: Option<(Option<String>, String)>,
    pub secret_type: AuthSecretType,
    /// Checked by `portico_dataplane::basic_auth::check_realm`.
    pub realm: Option<String>,
    /// Send the client's `Authorization` upstream.
    pub forward_authorization: bool,
}

/// `auth-secret-type`: how the Secret lists users.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AuthSecretType {
    /// An htpasswd file under the key `auth`.
    #[default]
    AuthFile,
    /// Each key a user, each value a hash.
    AuthMap,
}

/// What [`finish`] needs to know beyond the parsed values.
#[derive(Default)]
pub(crate) struct BasicAuthDraft {
    /// `auth-type` was written, valid or not.
    type_written: bool,
    /// `auth-secret` was written, valid or not (an invalid one is reported
    /// on its own key).
    secret_written: bool,
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "auth-type",
        "",
        Path,
        PathDenied,
        Partly("`digest` is not supported: its paths answer 503"),
        "`basic`: HTTP Basic authentication against the users of `auth-secret`; a request without a listed user's password gets 401 with `WWW-Authenticate: Basic realm=\"<auth-realm>\"` (gRPC callers UNAUTHENTICATED). Checked after the IP lists and client certificates. Fails closed: an invalid value, a missing or unusable Secret makes the paths answer 503.",
        auth_type,
    ),
    spec(
        "auth-secret",
        "",
        Path,
        PathDenied,
        Partly(
            "the Secret must be of type Opaque; another namespace (`namespace/name`) only with `--allow-cross-namespace-auth-secret`; entries with plain-text or crypt(3) DES passwords are refused (that user cannot log in), where nginx accepts them",
        ),
        "The Secret holding the users: `name` (the Ingress's namespace) or `namespace/name`. Hashes: bcrypt (`htpasswd -B`), apr1/MD5-crypt (`-m`), SHA-256/512-crypt (`-2`, `-5`), `{SHA}` (`-s`). Each refused entry is reported by line or key, never with its hash. Changes apply live.",
        auth_secret,
    ),
    spec(
        "auth-secret-type",
        "auth-file",
        Path,
        PathDenied,
        Full,
        "`auth-file`: an htpasswd file under the Secret's key `auth`; `auth-map`: each key a user, each value a hash.",
        auth_secret_type,
    ),
    spec(
        "auth-realm",
        "",
        Path,
        PathDenied,
        Partly("only printable ASCII without `\"` or `\\`, at most 256 characters"),
        "The realm in the `WWW-Authenticate` challenge, which browsers may show in their login prompt.",
        auth_realm,
    ),
    spec(
        "auth-forward-authorization",
        "false",
        Path,
        Ignored,
        Partly(
            "Portico's own; ingress-nginx always forwards the header, Portico keeps the client's credential from the upstream unless this is true",
        ),
        "Send the client's `Authorization` header to the upstream after basic authentication admitted it.",
        auth_forward_authorization,
    ),
];

fn auth_type(v: &str, d: &mut Draft) -> Result<(), String> {
    d.basic_auth.type_written = true;
    match v {
        "basic" => {
            d.out.auth.basic = true;
            Ok(())
        }
        "digest" => Err("digest authentication is not supported, only basic".into()),
        _ => Err("expected basic".into()),
    }
}

/// `name` (the Ingress's namespace) or `namespace/name`.
fn auth_secret(v: &str, d: &mut Draft) -> Result<(), String> {
    d.basic_auth.secret_written = true;
    d.out.auth.secret = Some(secret_ref(v)?);
    Ok(())
}

/// A Secret named `name` (the Ingress's namespace) or `namespace/name`:
/// the namespace when written, and the name.
pub(super) fn secret_ref(v: &str) -> Result<(Option<String>, String), String> {
    Ok(match v.split_once('/') {
        Some(_) => {
            let (ns, name) = namespaced_secret(v)?;
            (Some(ns), name)
        }
        None => (None, values::dns1123_subdomain(v)?),
    })
}

fn auth_secret_type(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.auth.secret_type = match v {
        "auth-file" => AuthSecretType::AuthFile,
        "auth-map" => AuthSecretType::AuthMap,
        _ => return Err("expected auth-file or auth-map".into()),
    };
    Ok(())
}

fn auth_realm(v: &str, d: &mut Draft) -> Result<(), String> {
    portico_dataplane::basic_auth::check_realm(v)?;
    d.out.auth.realm = Some(v.to_owned());
    Ok(())
}

fn auth_forward_authorization(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.auth.forward_authorization = values::go_bool(v)?;
    Ok(())
}

/// The other `auth-*` annotations mean nothing without `auth-type`;
/// `auth-type: basic` without a Secret cannot admit anyone, so it
/// fails closed (ingress-nginx denies the location).
pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    const AUTH_PARTS: [&str; 4] = [
        "auth-secret",
        "auth-secret-type",
        "auth-realm",
        "auth-forward-authorization",
    ];
    if !d.basic_auth.type_written {
        for name in AUTH_PARTS {
            d.note(notes, name, "has no effect without auth-type; ignored");
        }
        return;
    }
    if d.out.auth.basic && d.out.auth.secret.is_none() {
        d.out.auth.basic = false;
        if d.basic_auth.secret_written {
            return;
        }
        d.note_kind(
            notes,
            "auth-type",
            DiagnosticKind::Invalid(Fallback::PathDenied),
            "basic authentication needs auth-secret",
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;
    use crate::annotations::{AuthAnnotations, AuthSecretType};

    pub(crate) const VALID: &[Valid] = &[
        // basic authentication
        Valid {
            set: &[("auth-type", "basic"), ("auth-secret", "users")],
            want: |a| {
                a.auth.basic = true;
                a.auth.secret = Some((None, "users".into()));
            },
        },
        Valid {
            set: &[
                ("auth-type", "basic"),
                ("auth-secret", "shared/team-users"),
                ("auth-secret-type", "auth-map"),
                ("auth-realm", "Authentication Required - foo"),
                ("auth-forward-authorization", "true"),
            ],
            want: |a| {
                a.auth = AuthAnnotations {
                    basic: true,
                    secret: Some((Some("shared".into()), "team-users".into())),
                    secret_type: AuthSecretType::AuthMap,
                    realm: Some("Authentication Required - foo".into()),
                    forward_authorization: true,
                }
            },
        },
        Valid {
            set: &[
                ("auth-type", "basic"),
                ("auth-secret", "users"),
                ("auth-secret-type", "auth-file"),
            ],
            want: |a| {
                a.auth.basic = true;
                a.auth.secret = Some((None, "users".into()));
            },
        },
    ];

    const AUTH: &[(&str, &str)] = &[("auth-type", "basic"), ("auth-secret", "users")];

    /// Basic auth fails closed: every invalid part denies the paths (as
    /// ingress-nginx denies the location), except the forwarding switch,
    /// whose default keeps the credential at the proxy.
    pub(crate) const INVALID_AUTH: &[Invalid] = &[
        Invalid {
            name: "auth-type",
            fallback: Fallback::PathDenied,
            values: &["digest", "Basic", "none"],
            context: &[("auth-secret", "users")],
            want: |a| a.auth.secret = Some((None, "users".into())),
        },
        Invalid {
            name: "auth-secret",
            fallback: Fallback::PathDenied,
            values: &["Users", "a/b/c", "/users", "ns/", "user_s"],
            context: &[("auth-type", "basic")],
            want: |_| {},
        },
        Invalid {
            name: "auth-secret-type",
            fallback: Fallback::PathDenied,
            values: &["htpasswd", "auth_file"],
            context: AUTH,
            want: |a| {
                a.auth.basic = true;
                a.auth.secret = Some((None, "users".into()));
            },
        },
        Invalid {
            name: "auth-realm",
            fallback: Fallback::PathDenied,
            values: &["say \"hi\"", "a\\b", "caf\u{e9}"],
            context: AUTH,
            want: |a| {
                a.auth.basic = true;
                a.auth.secret = Some((None, "users".into()));
            },
        },
        Invalid {
            name: "auth-forward-authorization",
            fallback: Fallback::Ignored,
            values: &["yes"],
            context: AUTH,
            want: |a| {
                a.auth.basic = true;
                a.auth.secret = Some((None, "users".into()));
            },
        },
    ];

    #[test]
    fn invalid_auth_values_fail_closed() {
        check_invalid(INVALID_AUTH);
    }

    #[test]
    fn auth_parts_need_auth_type_and_basic_needs_a_secret() {
        let parsed = parse_checked(&map(
            NGINX_PREFIX,
            &[("auth-secret", "users"), ("auth-realm", "x")],
        ));
        assert_eq!(
            kinds(&parsed),
            vec![
                ("nginx.ingress.kubernetes.io/auth-secret", IGNORED),
                ("nginx.ingress.kubernetes.io/auth-realm", IGNORED),
            ]
        );
        assert!(!parsed.ingress.auth.basic);

        let parsed = parse_checked(&map(PORTICO_PREFIX, &[("auth-type", "basic")]));
        assert_eq!(
            kinds(&parsed),
            vec![(
                "portico.dev/auth-type",
                DiagnosticKind::Invalid(Fallback::PathDenied)
            )]
        );
        assert!(parsed.diagnostics[0].message.contains("needs auth-secret"));
        assert!(!parsed.ingress.auth.basic);
    }
}
