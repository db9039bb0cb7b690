//! What the upstream connection is: `upstream-vhost`, `backend-protocol`,
//! `proxy-ssl-*` (TLS to backends) and `ssl-passthrough`.

use super::prelude::*;
use crate::annotations::namespaced_secret;

/// `proxy-ssl-*`: TLS to backends, used with `backend-protocol` HTTPS or
/// GRPCS.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpstreamTlsAnnotations {
    pub verify: bool,
    pub secret: Option<(String, String)>,
    /// Validated, lower-cased.
    pub name: Option<String>,
    /// `proxy-ssl-server-name`: send SNI.
    pub server_name: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendProtocol {
    #[default]
    Http,
    Https,
    /// gRPC over cleartext HTTP/2.
    Grpc,
    /// gRPC over HTTP/2 with TLS.
    Grpcs,
    /// Cleartext HTTP/2 with prior knowledge.
    H2c,
}

pub(super) const VHOST: &[AnnotationSpec] = &[spec(
    "upstream-vhost",
    "",
    Path,
    PathDenied,
    Partly("nginx variables are not expanded"),
    "`Host` header sent upstream instead of the request's: `host` or `host:port`. Invalid: the paths answer 503, since the backend would serve another virtual host.",
    upstream_vhost,
)];

pub(super) const PROTOCOL: &[AnnotationSpec] = &[spec(
    "backend-protocol",
    "HTTP",
    Path,
    Ignored,
    Partly(
        "AUTO_HTTP, FCGI and AJP are not supported (invalid: HTTP is used); H2C is a Portico addition",
    ),
    "Protocol spoken to the backend: HTTP, HTTPS (HTTP/1.1 over TLS), GRPC, GRPCS (HTTP/2 over TLS) or H2C (cleartext HTTP/2), any case. TLS settings: `proxy-ssl-*`.",
    backend_protocol,
)];

pub(super) const TLS: &[AnnotationSpec] = &[
    spec(
        "proxy-ssl-verify",
        "off",
        Ingress,
        Ignored,
        Full,
        "With `backend-protocol` HTTPS or GRPCS: `on` verifies the backend's certificate against `proxy-ssl-secret`'s `ca.crt` and `proxy-ssl-name`; `off` (default, as ingress-nginx) encrypts without verifying.",
        proxy_ssl_verify,
    ),
    spec(
        "proxy-ssl-secret",
        "",
        Ingress,
        PathDenied,
        Partly("the Secret must be of type kubernetes.io/tls or Opaque (the types watched)"),
        "`namespace/name` of a Secret whose `ca.crt` (PEM) verifies backends when `proxy-ssl-verify` is on, and whose `tls.crt`/`tls.key`, when present, are presented to backends as a client certificate. Unusable: the paths answer 503.",
        proxy_ssl_secret,
    ),
    spec(
        "proxy-ssl-name",
        "",
        Ingress,
        Ignored,
        Partly(
            "the default is the Service's DNS name `<service>.<namespace>.svc`, not ingress-nginx's upstream block name",
        ),
        "The name the backend's certificate is verified against, and sent as SNI with `proxy-ssl-server-name`.",
        proxy_ssl_name,
    ),
    spec(
        "proxy-ssl-server-name",
        "off",
        Ingress,
        Ignored,
        Full,
        "`on` sends the name (proxy-ssl-name or its default) as SNI to backends.",
        proxy_ssl_server_name,
    ),
    spec(
        "ssl-passthrough",
        "false",
        Ingress,
        Ignored,
        Full,
        "TLS for the Ingress's hosts goes, undecrypted, to the backend of each host's first path (chosen by the ClientHello's SNI); other hosts on the HTTPS port are terminated as usual. Needs `--enable-ssl-passthrough` (off by default, as ingress-nginx); plain HTTP to these hosts is still routed.",
        ssl_passthrough,
    ),
];

fn upstream_vhost(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.upstream_vhost = Some(host_and_port(v)?);
    Ok(())
}

fn backend_protocol(v: &str, d: &mut Draft) -> Result<(), String> {
    let upper = v.to_ascii_uppercase();
    d.out.backend_protocol = match upper.as_str() {
        "HTTP" => BackendProtocol::Http,
        "HTTPS" => BackendProtocol::Https,
        "GRPC" => BackendProtocol::Grpc,
        "GRPCS" => BackendProtocol::Grpcs,
        "H2C" => BackendProtocol::H2c,
        "AUTO_HTTP" | "FCGI" | "AJP" => {
            return Err(format!("{upper} is not supported by Portico"));
        }
        _ => return Err("expected HTTP, HTTPS, GRPC, GRPCS or H2C".into()),
    };
    Ok(())
}

/// nginx's `on`/`off`.
fn on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err("expected on or off".into()),
    }
}

fn proxy_ssl_verify(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.upstream_tls.verify = on_off(v)?;
    Ok(())
}

fn proxy_ssl_secret(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.upstream_tls.secret = Some(namespaced_secret(v)?);
    Ok(())
}

fn proxy_ssl_name(v: &str, d: &mut Draft) -> Result<(), String> {
    let name = values::server_name(v)?;
    if name.starts_with("*.") {
        return Err("must be one host name, not a wildcard".into());
    }
    d.out.upstream_tls.name = Some(name);
    Ok(())
}

fn proxy_ssl_server_name(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.upstream_tls.server_name = on_off(v)?;
    Ok(())
}

fn ssl_passthrough(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.ssl_passthrough = values::go_bool(v)?;
    Ok(())
}

/// `host[:port]` for the upstream `Host` header, host lower-cased.
fn host_and_port(s: &str) -> Result<String, String> {
    // A bracketed IPv6 address holds colons of its own.
    let (host, port_part) = match s.rfind(':') {
        Some(i) if !s[i..].contains(']') => (&s[..i], Some(&s[i + 1..])),
        _ => (s, None),
    };
    if !values::is_host(host) {
        return Err("expected host or host:port with a valid host name or IP address".into());
    }
    let mut out = host.to_ascii_lowercase();
    if let Some(p) = port_part {
        let p = values::port(p)
            .ok_or_else(|| "the values::port must be a number from 1 to 65535".to_owned())?;
        out.push(':');
        out.push_str(&p.to_string());
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::BackendProtocol;
    use crate::annotations::tests::*;

    pub(crate) const VALID: &[Valid] = &[
        // upstream-vhost
        Valid {
            set: &[("upstream-vhost", "Example.COM")],
            want: |a| a.upstream_vhost = Some("example.com".into()),
        },
        Valid {
            set: &[("upstream-vhost", "svc.ns.svc.cluster.local:8080")],
            want: |a| a.upstream_vhost = Some("svc.ns.svc.cluster.local:8080".into()),
        },
        Valid {
            set: &[("upstream-vhost", "10.0.0.1:80")],
            want: |a| a.upstream_vhost = Some("10.0.0.1:80".into()),
        },
        Valid {
            set: &[("upstream-vhost", "[::1]:8443")],
            want: |a| a.upstream_vhost = Some("[::1]:8443".into()),
        },
        Valid {
            set: &[("upstream-vhost", "my_bucket.s3.amazonaws.com")],
            want: |a| a.upstream_vhost = Some("my_bucket.s3.amazonaws.com".into()),
        },
        // backend-protocol, any case
        Valid {
            set: &[("backend-protocol", "HTTP")],
            want: |a| a.backend_protocol = BackendProtocol::Http,
        },
        Valid {
            set: &[("backend-protocol", "https")],
            want: |a| a.backend_protocol = BackendProtocol::Https,
        },
        Valid {
            set: &[("backend-protocol", "GRPC")],
            want: |a| a.backend_protocol = BackendProtocol::Grpc,
        },
        Valid {
            set: &[("backend-protocol", "Grpcs")],
            want: |a| a.backend_protocol = BackendProtocol::Grpcs,
        },
        Valid {
            set: &[("backend-protocol", "h2c")],
            want: |a| a.backend_protocol = BackendProtocol::H2c,
        },
        Valid {
            set: &[("ssl-passthrough", "true")],
            want: |a| a.ssl_passthrough = true,
        },
        // proxy-ssl-*
        Valid {
            set: &[
                ("proxy-ssl-verify", "on"),
                ("proxy-ssl-secret", "default/backend-ca"),
                ("proxy-ssl-name", "API.internal"),
                ("proxy-ssl-server-name", "on"),
            ],
            want: |a| {
                a.upstream_tls.verify = true;
                a.upstream_tls.secret = Some(("default".into(), "backend-ca".into()));
                a.upstream_tls.name = Some("api.internal".into());
                a.upstream_tls.server_name = true;
            },
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "upstream-vhost",
            fallback: Fallback::PathDenied,
            values: &[
                "a b",
                "host:0",
                "host:65536",
                "host:abc",
                "host:",
                "-bad.com",
                "$host",
                "http://x.com",
                "[::1",
                "a..b",
                "[::1]:x",
                "a.test\r\nx: y",
                "a\0.test",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "backend-protocol",
            fallback: Fallback::Ignored,
            values: &["AUTO_HTTP", "FCGI", "fcgi", "AJP", "HTTP2", "tcp"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "ssl-passthrough",
            fallback: Fallback::Ignored,
            values: &["yes"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "proxy-ssl-verify",
            fallback: Fallback::Ignored,
            values: &["true", "ON"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "proxy-ssl-secret",
            fallback: Fallback::PathDenied,
            values: &["backend-ca", "a/b/c"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "proxy-ssl-name",
            fallback: Fallback::Ignored,
            values: &["*.internal", "a b"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "proxy-ssl-server-name",
            fallback: Fallback::Ignored,
            values: &["yes"],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];
}
