//! HTTPS: `ssl-redirect`, `force-ssl-redirect`, `preserve-trailing-slash`,
//! `hsts*` and client certificates (`auth-tls-*`).

use super::prelude::*;
use crate::annotations::namespaced_secret;

/// `ssl-redirect`, `force-ssl-redirect`, `preserve-trailing-slash` and
/// `hsts*`. `None`: the global default applies.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpsAnnotations {
    pub ssl_redirect: Option<bool>,
    pub force_ssl_redirect: bool,
    pub preserve_trailing_slash: bool,
    pub hsts: Option<bool>,
    pub hsts_max_age: Option<u64>,
    pub hsts_include_subdomains: Option<bool>,
    pub hsts_preload: Option<bool>,
    /// `auth-tls-secret`: namespace and name.
    pub auth_tls_secret: Option<(String, String)>,
    pub auth_tls_verify: Option<AuthTlsVerify>,
    pub auth_tls_verify_depth: Option<u8>,
    pub auth_tls_pass_certificate: bool,
}

/// `auth-tls-verify-client`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthTlsVerify {
    On,
    Off,
    Optional,
    OptionalNoCa,
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "ssl-redirect",
        "true",
        Ingress,
        Ignored,
        Full,
        "Plain-HTTP requests for hosts with TLS (a `spec.tls` entry of any Ingress, or an HTTPRoute `policies.tls`) are answered 308 to `https://<host><request URI>`, without a port unless `--https-redirect-port` is set. `/.well-known/acme-challenge/` is never redirected, nor a request carrying `X-Forwarded-Proto: https`.",
        ssl_redirect,
    ),
    spec(
        "force-ssl-redirect",
        "false",
        Ingress,
        Ignored,
        Full,
        "Redirect plain HTTP to HTTPS (as ssl-redirect) even for hosts without TLS, for TLS terminated by a load balancer in front; such a balancer must send `X-Forwarded-Proto: https` for what it received over HTTPS.",
        force_ssl_redirect,
    ),
    spec(
        "preserve-trailing-slash",
        "false",
        Ingress,
        Ignored,
        Full,
        "Keep a trailing `/` of the request URI in HTTPS redirects (by default one is dropped, as ingress-nginx does).",
        preserve_trailing_slash,
    ),
    spec(
        "hsts",
        "true",
        Ingress,
        Ignored,
        Partly(
            "a ConfigMap key in ingress-nginx; here per Ingress, with the global default from `--hsts`",
        ),
        "Send `Strict-Transport-Security` on HTTPS responses for the Ingress's TLS hosts.",
        hsts,
    ),
    spec(
        "hsts-max-age",
        "15724800",
        Ingress,
        Ignored,
        Partly(
            "a ConfigMap key in ingress-nginx; here per Ingress, with the global default from `--hsts-max-age`",
        ),
        "HSTS `max-age` in seconds.",
        hsts_max_age,
    ),
    spec(
        "hsts-include-subdomains",
        "true",
        Ingress,
        Ignored,
        Partly(
            "a ConfigMap key in ingress-nginx; here per Ingress, with the global default from `--hsts-include-subdomains`",
        ),
        "Add `includeSubDomains` to HSTS.",
        hsts_include_subdomains,
    ),
    spec(
        "hsts-preload",
        "false",
        Ingress,
        Ignored,
        Partly(
            "a ConfigMap key in ingress-nginx; here per Ingress, with the global default from `--hsts-preload`",
        ),
        "Add `preload` to HSTS.",
        hsts_preload,
    ),
    spec(
        "auth-tls-secret",
        "",
        Ingress,
        PathDenied,
        Partly(
            "a failed verification ends the TLS handshake instead of answering 400; the Secret must be of type kubernetes.io/tls or Opaque (the types watched), with the CA bundle in `ca.crt`",
        ),
        "`namespace/name` of a Secret whose `ca.crt` (PEM) holds the CAs client certificates must chain to, on the Ingress's hosts. Verification is chosen by the TLS SNI; a request whose Host has this policy on a connection whose SNI did not answers 421 (403 over plain HTTP). An unusable Secret makes the paths answer 503, never serve unverified.",
        auth_tls_secret,
    ),
    spec(
        "auth-tls-verify-client",
        "on",
        Ingress,
        Ignored,
        Full,
        "`on` (a certificate is required), `optional` (verified when sent), `optional_no_ca` (any certificate accepted; the upstream learns whether it verified), `off`. `ssl-client-verify`, `ssl-client-subject-dn` and `ssl-client-issuer-dn` are sent upstream; such headers from clients are always removed.",
        auth_tls_verify_client,
    ),
    spec(
        "auth-tls-verify-depth",
        "1",
        Ingress,
        Ignored,
        Full,
        "How many certificates the client's chain may hold below the CA (1: issued by the CA directly), 1 to 255.",
        auth_tls_verify_depth,
    ),
    spec(
        "auth-tls-pass-certificate-to-upstream",
        "false",
        Ingress,
        Ignored,
        Full,
        "Send the client's certificate upstream as URL-encoded PEM in `ssl-client-cert`.",
        auth_tls_pass_certificate,
    ),
];

fn ssl_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.ssl_redirect = Some(values::go_bool(v)?);
    Ok(())
}

fn force_ssl_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.force_ssl_redirect = values::go_bool(v)?;
    Ok(())
}

fn preserve_trailing_slash(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.preserve_trailing_slash = values::go_bool(v)?;
    Ok(())
}

fn hsts(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.hsts = Some(values::go_bool(v)?);
    Ok(())
}

fn hsts_max_age(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.hsts_max_age = Some(u64::from(values::uint(v)?));
    Ok(())
}

fn hsts_include_subdomains(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.hsts_include_subdomains = Some(values::go_bool(v)?);
    Ok(())
}

fn hsts_preload(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.hsts_preload = Some(values::go_bool(v)?);
    Ok(())
}

fn auth_tls_secret(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.auth_tls_secret = Some(namespaced_secret(v)?);
    Ok(())
}

fn auth_tls_verify_client(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.auth_tls_verify = Some(match v {
        "on" => AuthTlsVerify::On,
        "off" => AuthTlsVerify::Off,
        "optional" => AuthTlsVerify::Optional,
        "optional_no_ca" => AuthTlsVerify::OptionalNoCa,
        _ => return Err("expected on, off, optional or optional_no_ca".into()),
    });
    Ok(())
}

fn auth_tls_verify_depth(v: &str, d: &mut Draft) -> Result<(), String> {
    let depth = values::uint(v)?;
    d.out.https.auth_tls_verify_depth = Some(
        u8::try_from(depth)
            .ok()
            .filter(|d| *d > 0)
            .ok_or("must be from 1 to 255")?,
    );
    Ok(())
}

fn auth_tls_pass_certificate(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.auth_tls_pass_certificate = values::go_bool(v)?;
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::AuthTlsVerify;
    use crate::annotations::tests::*;

    pub(crate) const VALID: &[Valid] = &[
        // ssl-redirect, force-ssl-redirect, preserve-trailing-slash, hsts*
        Valid {
            set: &[("ssl-redirect", "false"), ("force-ssl-redirect", "True")],
            want: |a| {
                a.https.ssl_redirect = Some(false);
                a.https.force_ssl_redirect = true;
            },
        },
        Valid {
            set: &[
                ("preserve-trailing-slash", "1"),
                ("hsts", "false"),
                ("hsts-max-age", "31536000"),
                ("hsts-include-subdomains", "f"),
                ("hsts-preload", "true"),
            ],
            want: |a| {
                a.https.preserve_trailing_slash = true;
                a.https.hsts = Some(false);
                a.https.hsts_max_age = Some(31_536_000);
                a.https.hsts_include_subdomains = Some(false);
                a.https.hsts_preload = Some(true);
            },
        },
        // auth-tls-*
        Valid {
            set: &[
                ("auth-tls-secret", "default/client-ca"),
                ("auth-tls-verify-client", "optional_no_ca"),
                ("auth-tls-verify-depth", "2"),
                ("auth-tls-pass-certificate-to-upstream", "true"),
            ],
            want: |a| {
                a.https.auth_tls_secret = Some(("default".into(), "client-ca".into()));
                a.https.auth_tls_verify = Some(AuthTlsVerify::OptionalNoCa);
                a.https.auth_tls_verify_depth = Some(2);
                a.https.auth_tls_pass_certificate = true;
            },
        },
        Valid {
            set: &[("auth-tls-verify-client", "off")],
            want: |a| a.https.auth_tls_verify = Some(AuthTlsVerify::Off),
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "ssl-redirect",
            fallback: Fallback::Ignored,
            values: &["yes", "on"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "force-ssl-redirect",
            fallback: Fallback::Ignored,
            values: &["yes"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "preserve-trailing-slash",
            fallback: Fallback::Ignored,
            values: &["2"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "hsts",
            fallback: Fallback::Ignored,
            values: &["on"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "hsts-max-age",
            fallback: Fallback::Ignored,
            values: &["-1", "1y", "99999999999"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "hsts-include-subdomains",
            fallback: Fallback::Ignored,
            values: &["yes"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "hsts-preload",
            fallback: Fallback::Ignored,
            values: &["no"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "auth-tls-secret",
            fallback: Fallback::PathDenied,
            values: &["client-ca", "ns/", "NS/x", "a/b/c"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "auth-tls-verify-client",
            fallback: Fallback::Ignored,
            values: &["yes", "ON", "required"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "auth-tls-verify-depth",
            fallback: Fallback::Ignored,
            values: &["0", "256", "-1"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "auth-tls-pass-certificate-to-upstream",
            fallback: Fallback::Ignored,
            values: &["yes"],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];
}
