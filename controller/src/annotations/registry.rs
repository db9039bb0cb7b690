//! The tables: what Portico implements ([`registry`]) and every other
//! ingress-nginx annotation ([`nginx_not_supported`]), for diagnostics and
//! the generated docs.

use super::Fallback;
use super::{Draft, features};

/// Parses one trimmed, non-empty value into the draft, or says why not.
pub(crate) type ParseFn = fn(&str, &mut Draft) -> Result<(), String>;

/// One behaviour Portico implements, under `portico.dev/<name>` and
/// `nginx.ingress.kubernetes.io/<name>` (and the same for each alias).
#[derive(Clone, Copy, Debug)]
pub struct AnnotationSpec {
    /// The ingress-nginx name without prefix, e.g. `rewrite-target`.
    pub name: &'static str,
    /// Other names for the same behaviour (same two prefixes). The name wins
    /// over an alias of the same prefix.
    pub aliases: &'static [&'static str],
    /// The value that applies when the annotation is absent, as shown in the
    /// docs; empty when "absent" simply means "off".
    pub default: &'static str,
    pub scope: Scope,
    /// Which kind of object carries the annotation.
    pub object: ObjectKind,
    /// What happens when the value is invalid.
    pub on_invalid: Fallback,
    pub support: Support,
    /// One line for the docs table.
    pub doc: &'static str,
    pub(crate) parse: ParseFn,
}

/// Where an annotation takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole object: its virtual host(s) (nginx `server`).
    Ingress,
    /// Each path of the object (nginx `location`).
    Path,
}

/// The kind of object an annotation is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Ingress,
    /// Reserved for per-Service settings such as health checks.
    Service,
}

/// How closely an implemented annotation follows ingress-nginx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    Full,
    /// Implemented with this difference.
    Partly(&'static str),
}

/// An ingress-nginx annotation Portico does not implement. A key naming one
/// yields an `Unsupported` diagnostic (a `*-snippet` key a `Snippet` one).
#[derive(Debug)]
pub struct NginxAnnotation {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub status: NginxStatus,
    /// Short: the feature area, or what to use instead.
    pub note: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NginxStatus {
    NotYet,
    /// Raw nginx configuration: never run.
    Snippet,
    /// Removed from ingress-nginx itself.
    Removed,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingress => "Ingress",
            Scope::Path => "path",
        }
    }
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Ingress => "Ingress",
            ObjectKind::Service => "Service",
        }
    }

    pub(crate) fn article(self) -> &'static str {
        match self {
            ObjectKind::Ingress => "an",
            ObjectKind::Service => "a",
        }
    }
}

impl NginxStatus {
    /// One clause for a diagnostic or the docs.
    pub fn describe(self, note: &str) -> String {
        match self {
            NginxStatus::NotYet => format!("not supported by Portico yet ({note})"),
            NginxStatus::Snippet => "snippets are never run or interpreted by Portico".to_owned(),
            NginxStatus::Removed => format!("removed from ingress-nginx ({note})"),
        }
    }
}

impl AnnotationSpec {
    /// "the default (60) applies" or, without a default, "it stays unset".
    pub(crate) fn default_phrase(&self) -> String {
        if self.default.is_empty() {
            "it stays unset".to_owned()
        } else {
            format!("the default ({}) applies", self.default)
        }
    }

    /// What the invalid value leads to, for messages.
    pub(crate) fn fallback_phrase(&self) -> String {
        match self.on_invalid {
            Fallback::Ignored => format!("ignored, {}", self.default_phrase()),
            Fallback::PathDenied => "the Ingress's paths answer 503".to_owned(),
            Fallback::CanaryUnused => {
                "the canary is not used: its requests go to the mainline".to_owned()
            }
        }
    }
}

/// The behaviours Portico implements, in the order they are parsed (and
/// documented).
pub fn registry() -> &'static [AnnotationSpec] {
    &REGISTRY
}

/// Every other ingress-nginx annotation.
pub fn nginx_not_supported() -> &'static [NginxAnnotation] {
    NGINX_NOT_SUPPORTED
}

pub(super) const fn spec(
    name: &'static str,
    default: &'static str,
    scope: Scope,
    on_invalid: Fallback,
    support: Support,
    doc: &'static str,
    parse: ParseFn,
) -> AnnotationSpec {
    AnnotationSpec {
        name,
        aliases: &[],
        default,
        scope,
        object: ObjectKind::Ingress,
        on_invalid,
        support,
        doc,
        parse,
    }
}

/// A Service annotation: a Portico addition, read from the Service every
/// route to it shares; invalid values are ignored (the default applies).
pub(super) const fn service(
    name: &'static str,
    default: &'static str,
    doc: &'static str,
    parse: ParseFn,
) -> AnnotationSpec {
    AnnotationSpec {
        object: ObjectKind::Service,
        ..spec(
            name,
            default,
            Scope::Ingress,
            Fallback::Ignored,
            Support::Full,
            doc,
            parse,
        )
    }
}

/// The groups' entries, concatenated at compile time.
static REGISTRY: [AnnotationSpec; registry_len(features::RUNS)] = concat(features::RUNS);

const fn registry_len(runs: &[&[AnnotationSpec]]) -> usize {
    let mut len = 0;
    let mut i = 0;
    while i < runs.len() {
        len += runs[i].len();
        i += 1;
    }
    len
}

const fn concat<const N: usize>(runs: &[&[AnnotationSpec]]) -> [AnnotationSpec; N] {
    let mut out = [runs[0][0]; N];
    let mut n = 0;
    let mut i = 0;
    while i < runs.len() {
        let mut j = 0;
        while j < runs[i].len() {
            out[n] = runs[i][j];
            n += 1;
            j += 1;
        }
        i += 1;
    }
    out
}

const fn not_yet(name: &'static str, note: &'static str) -> NginxAnnotation {
    NginxAnnotation {
        name,
        aliases: &[],
        status: NginxStatus::NotYet,
        note,
    }
}

const fn snippet(name: &'static str) -> NginxAnnotation {
    NginxAnnotation {
        name,
        aliases: &[],
        status: NginxStatus::Snippet,
        note: "raw nginx configuration",
    }
}

const fn removed(name: &'static str, note: &'static str) -> NginxAnnotation {
    NginxAnnotation {
        name,
        aliases: &[],
        status: NginxStatus::Removed,
        note,
    }
}

const AUTH_TLS: &str = "client certificate authentication";
const AFFINITY: &str = "session affinity";
const BALANCING: &str = "load balancing";
const BACKEND_TLS: &str = "TLS to backends";
const BUFFERING: &str = "nginx buffering; Portico streams bodies";
const RESPONSE_REWRITE: &str = "rewriting backend responses";
const WAF: &str = "web application firewall";

static NGINX_NOT_SUPPORTED: &[NginxAnnotation] = &[
    removed("add-base-url", "no replacement"),
    snippet("auth-snippet"),
    not_yet("auth-tls-error-page", AUTH_TLS),
    not_yet("auth-tls-match-cn", AUTH_TLS),
    removed("base-url-scheme", "no replacement"),
    not_yet("client-body-buffer-size", BUFFERING),
    snippet("configuration-snippet"),
    not_yet(
        "connection-proxy-header",
        "overriding the upstream Connection header",
    ),
    not_yet("enable-access-log", "per-Ingress access log switch"),
    removed("enable-influxdb", "InfluxDB metrics"),
    not_yet("enable-modsecurity", WAF),
    removed("enable-opentracing", "use OpenTelemetry"),
    not_yet("enable-owasp-core-rules", WAF),
    not_yet("enable-rewrite-log", "nginx rewrite log"),
    not_yet("fastcgi-index", "FastCGI backends"),
    not_yet("fastcgi-params-configmap", "FastCGI backends"),
    not_yet("from-to-www-redirect", "www redirects"),
    removed("grpc-backend", "use backend-protocol: GRPC"),
    not_yet("http2-push-preload", "HTTP/2 server push"),
    removed("influxdb-host", "InfluxDB metrics"),
    removed("influxdb-measurement", "InfluxDB metrics"),
    removed("influxdb-port", "InfluxDB metrics"),
    removed("influxdb-server-name", "InfluxDB metrics"),
    removed("lua-resty-waf", WAF),
    removed("lua-resty-waf-allow-unknown-content-types", WAF),
    removed("lua-resty-waf-debug", WAF),
    removed("lua-resty-waf-extra-rules", WAF),
    removed("lua-resty-waf-ignore-rulesets", WAF),
    removed("lua-resty-waf-process-multipart-body", WAF),
    removed("lua-resty-waf-score-threshold", WAF),
    snippet("modsecurity-snippet"),
    not_yet("modsecurity-transaction-id", WAF),
    removed("opentracing-trust-incoming-span", "use OpenTelemetry"),
    not_yet("proxy-buffer-size", BUFFERING),
    not_yet("proxy-buffering", BUFFERING),
    not_yet("proxy-buffers-number", BUFFERING),
    not_yet("proxy-busy-buffers-size", BUFFERING),
    not_yet("proxy-cookie-domain", RESPONSE_REWRITE),
    not_yet("proxy-cookie-path", RESPONSE_REWRITE),
    not_yet(
        "proxy-http-version",
        "choosing the upstream HTTP version; see backend-protocol",
    ),
    not_yet("proxy-max-temp-file-size", BUFFERING),
    not_yet("proxy-redirect-from", RESPONSE_REWRITE),
    not_yet("proxy-redirect-to", RESPONSE_REWRITE),
    not_yet("proxy-request-buffering", BUFFERING),
    not_yet("proxy-ssl-ciphers", BACKEND_TLS),
    not_yet("proxy-ssl-protocols", BACKEND_TLS),
    not_yet("proxy-ssl-verify-depth", BACKEND_TLS),
    not_yet("relative-redirects", "relative Location headers"),
    not_yet("satisfy", "combining authentication methods"),
    removed("secure-backends", "use backend-protocol: HTTPS"),
    removed("secure-verify-ca-secret", "use proxy-ssl-secret"),
    snippet("server-snippet"),
    not_yet("service-upstream", BALANCING),
    not_yet("session-cookie-conditional-samesite-none", AFFINITY),
    removed("session-cookie-hash", "no replacement"),
    not_yet("session-cookie-partitioned", AFFINITY),
    not_yet("ssl-ciphers", "TLS settings per Ingress"),
    not_yet("ssl-prefer-server-ciphers", "TLS settings per Ingress"),
    snippet("stream-snippet"),
    removed("upstream-fail-timeout", "no replacement"),
    not_yet("upstream-hash-by-subset", BALANCING),
    not_yet("upstream-hash-by-subset-size", BALANCING),
    removed("upstream-max-fails", "no replacement"),
    not_yet("use-port-in-redirects", "redirect Location details"),
];
