//! Ingress annotations: one registry of the behaviours Portico implements,
//! each answering to `portico.dev/<name>` and, so that Ingresses written for
//! the retired ingress-nginx keep working, `nginx.ingress.kubernetes.io/<name>`.
//!
//! [`parse`] turns an object's annotations into typed values
//! ([`IngressAnnotations`]) plus diagnostics that name the key, the value and
//! why. Nothing here interprets user text: values become enums, integers,
//! `http` types or validated strings, or a diagnostic. Snippets are never
//! parsed further.
//!
//! Adding a behaviour is one [`AnnotationSpec`] entry in `registry.rs` plus its
//! parser in `parsers.rs` (and, if it moves out of the not-supported list, the
//! removal of its line there). `docs/annotations.md` is generated from the
//! registry by [`markdown`]; a test fails when the committed file drifts.

use std::collections::BTreeMap;
use std::time::Duration;

mod markdown;
mod parsers;
mod registry;
mod values;

#[cfg(test)]
mod tests;

pub use self::markdown::markdown;
pub use self::registry::{
    AnnotationSpec, NginxAnnotation, NginxStatus, ObjectKind, Scope, Support, nginx_not_supported,
    registry,
};
pub(crate) use self::values::error_code;

use self::parsers::Draft;

/// Portico's own spelling: `portico.dev/<name>`. Wins over the ingress-nginx
/// spelling when both are set.
pub const PORTICO_PREFIX: &str = "portico.dev/";
/// The ingress-nginx spelling: `nginx.ingress.kubernetes.io/<name>`.
pub const NGINX_PREFIX: &str = "nginx.ingress.kubernetes.io/";

/// Values longer than this are shortened in diagnostic messages (the full
/// value stays in [`AnnotationDiagnostic::value`]).
const MESSAGE_VALUE_MAX: usize = 120;

/// The result of [`parse`] or [`parse_service`]: typed values and what was
/// wrong or ignored.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parsed {
    pub ingress: IngressAnnotations,
    /// Set only by [`parse_service`].
    pub service: ServiceAnnotations,
    pub diagnostics: Vec<AnnotationDiagnostic>,
}

/// The typed annotations of one Service: how Portico keeps its endpoints
/// healthy, for every Ingress and HTTPRoute that sends to it. `None`: the
/// default applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceAnnotations {
    /// An absolute path: checks are HTTP GETs of it (else TCP connects).
    pub health_check_path: Option<String>,
    pub health_check_port: Option<u16>,
    pub health_check_interval: Option<Duration>,
    /// At most the interval.
    pub health_check_timeout: Option<Duration>,
    /// At least 1.
    pub health_check_healthy_threshold: Option<u32>,
    /// At least 1.
    pub health_check_unhealthy_threshold: Option<u32>,
    /// Inclusive ranges of 100..=599.
    pub health_check_expected_statuses: Option<Vec<(u16, u16)>>,
    pub outlier_consecutive_5xx: Option<u32>,
    pub outlier_consecutive_errors: Option<u32>,
    pub outlier_base_ejection_time: Option<Duration>,
    pub outlier_max_ejection_time: Option<Duration>,
    /// 0 to 100.
    pub outlier_max_ejected_percent: Option<u8>,
    /// 0 to 100.
    pub panic_threshold: Option<u8>,
    /// `Some(ZERO)`: explicitly off.
    pub slow_start: Option<Duration>,
}

impl ServiceAnnotations {
    /// Whether any `health-check-*` annotation asks for active checks.
    pub fn wants_health_checks(&self) -> bool {
        self.health_check_path.is_some()
            || self.health_check_port.is_some()
            || self.health_check_interval.is_some()
            || self.health_check_timeout.is_some()
            || self.health_check_healthy_threshold.is_some()
            || self.health_check_unhealthy_threshold.is_some()
            || self.health_check_expected_statuses.is_some()
    }
}

/// One problem with one annotation, reported on the object that carries it.
#[derive(Clone, Debug, PartialEq)]
pub struct AnnotationDiagnostic {
    /// The key as written, e.g. `nginx.ingress.kubernetes.io/rewrite-target`.
    pub key: String,
    /// The value as written.
    pub value: String,
    pub kind: DiagnosticKind,
    /// One line: names the annotation, the value and why.
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiagnosticKind {
    /// The value could not be used; the fallback says what happens instead.
    Invalid(Fallback),
    /// A known ingress-nginx annotation that Portico does not implement.
    Unsupported,
    /// An unknown `portico.dev/*` or `nginx.ingress.kubernetes.io/*` key.
    Unknown,
    /// Any `*-snippet` annotation: never executed or interpreted.
    Snippet,
    /// Both spellings set with different values; `portico.dev` wins. Reported
    /// on the key that lost.
    Conflict,
    /// Accepted with a documented difference from ingress-nginx.
    Partial,
}

/// What happens when an annotation's value is invalid.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fallback {
    /// The annotation is ignored; its default applies.
    Ignored,
    /// The Ingress's paths answer 503 instead of serving something other
    /// than what was asked.
    PathDenied,
    /// The canary Ingress is not used: every request goes to the mainline
    /// (ingress-nginx, for an invalid `canary-by-header-pattern`).
    CanaryUnused,
}

/// The typed annotations of one Ingress. `None` and the `Default` values mean
/// "not set": the controller's defaults apply.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct IngressAnnotations {
    /// `allowlist-source-range` (alias `whitelist-source-range`): only these
    /// clients; `None`: the global list applies.
    pub allowlist_source_range: Option<Vec<ipnet::IpNet>>,
    /// `denylist-source-range`: never these clients.
    pub denylist_source_range: Option<Vec<ipnet::IpNet>>,
    pub rewrite_target: Option<RewriteTarget>,
    pub use_regex: bool,
    /// A validated absolute path (starts with a single `/`).
    pub app_root: Option<String>,
    /// Code defaults to 301.
    pub permanent_redirect: Option<RedirectTarget>,
    /// Code defaults to 302.
    pub temporal_redirect: Option<RedirectTarget>,
    /// A validated `host[:port]`, host lower-cased.
    pub upstream_vhost: Option<String>,
    pub x_forwarded_prefix: Option<http::HeaderValue>,
    pub proxy_connect_timeout: Option<Duration>,
    pub proxy_read_timeout: Option<Duration>,
    pub proxy_send_timeout: Option<Duration>,
    pub proxy_body_size: Option<BodySize>,
    pub backend_protocol: BackendProtocol,
    /// `Some` only when `canary: "true"`.
    pub canary: Option<CanaryAnnotations>,
    /// Validated, lower-cased host names; `*.example.com` wildcards allowed.
    pub server_alias: Vec<String>,
    /// A Service name in the Ingress's namespace (DNS-1035 label).
    pub default_backend: Option<String>,
    /// `custom-http-errors`: statuses 400 to 599, in the order written,
    /// each once; `None`: the global list applies.
    pub custom_http_errors: Option<Vec<u16>>,
    /// `disable-proxy-intercept-errors`: only the proxy's own errors get
    /// pages, never upstream answers.
    pub disable_proxy_intercept_errors: bool,
    /// Response headers to set, in the order written.
    pub custom_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    pub https: HttpsAnnotations,
    pub upstream_tls: UpstreamTlsAnnotations,
    pub ssl_passthrough: bool,
    pub grpc: GrpcAnnotations,
    /// `enable-cors` and `cors-*`, with ingress-nginx's defaults for what
    /// is not set; `Some` only when `enable-cors: "true"`.
    pub cors: Option<portico_dataplane::model::Cors>,
    pub balance: BalanceAnnotations,
    pub retry: RetryAnnotations,
    pub auth: AuthAnnotations,
}

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

/// `grpc-web*` and `grpc-max-message-size` (Portico's own).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GrpcAnnotations {
    /// Bridge gRPC-Web to gRPC on these paths.
    pub web: bool,
    /// Browser origins (`scheme://host[:port]`, lower-cased, or a
    /// `*.` wildcard host) or `*`.
    pub allow_origins: Vec<portico_dataplane::model::OriginPattern>,
    pub allow_headers: Vec<http::HeaderName>,
    pub expose_headers: Vec<http::HeaderName>,
    pub allow_credentials: bool,
    pub max_age: Option<Duration>,
    pub max_message: Option<BodySize>,
}

/// `proxy-next-upstream*`. `None`: the default applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RetryAnnotations {
    pub on: Option<portico_dataplane::model::RetryOn>,
    /// 0: as many as endpoints.
    pub tries: Option<u32>,
    /// `Some(None)`: explicitly no limit (`0`).
    pub timeout: Option<Option<Duration>>,
}

/// `load-balance`, `upstream-hash-by`, `affinity` and `session-cookie-*`:
/// how each request's endpoint is chosen. Precedence (as ingress-nginx):
/// cookie affinity, then the hash, then `load-balance`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BalanceAnnotations {
    pub load_balance: Option<LoadBalance>,
    pub upstream_hash_by: Option<portico_dataplane::model::HashKey>,
    /// `affinity: cookie`.
    pub affinity_cookie: bool,
    pub affinity_mode: Option<portico_dataplane::model::AffinityMode>,
    /// A valid cookie name.
    pub session_cookie_name: Option<String>,
    /// Seconds.
    pub session_cookie_max_age: Option<u64>,
    /// Seconds from the response.
    pub session_cookie_expires: Option<u64>,
    /// A validated absolute path.
    pub session_cookie_path: Option<String>,
    /// A validated, lower-cased host name.
    pub session_cookie_domain: Option<String>,
    pub session_cookie_samesite: Option<portico_dataplane::model::SameSite>,
    pub session_cookie_secure: bool,
    pub session_cookie_change_on_failure: bool,
}

/// `load-balance`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LoadBalance {
    RoundRobin,
    LeastRequest,
    Ewma,
}

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

/// A rewrite template: literal path text and `$1`..`$9` capture references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewriteTarget {
    /// `/$2/x` → `[Literal("/"), Capture(2), Literal("/x")]`. Adjacent
    /// literals are merged.
    pub segments: Vec<RewriteSegment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RewriteSegment {
    /// Path text, copied as written (percent-escapes kept).
    Literal(String),
    /// A capture group of the path's regular expression, 1 to 9.
    Capture(u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectTarget {
    /// An absolute `http` or `https` URL with a host.
    pub url: http::Uri,
    /// One of 301, 302, 303, 307, 308.
    pub code: u16,
    /// Written without a path or query (`https://example.com`): the
    /// `Location` is sent as written, with no `/` added (ingress-nginx).
    /// `url` cannot tell: `http::Uri` reads a missing path as `/`.
    pub bare: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodySize {
    /// `"0"`: no limit.
    Unlimited,
    Bytes(u64),
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

/// How a canary Ingress takes traffic from the main Ingress of the same host
/// and path. Precedence (applied by the dataplane, as ingress-nginx): header,
/// then cookie, then (sticky) the mainline's session cookie, then weight.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryAnnotations {
    /// At most `weight_total`.
    pub weight: Option<u32>,
    /// Defaults to 100; at least 1.
    pub weight_total: u32,
    pub by_header: Option<http::HeaderName>,
    /// Only with `by_header`.
    pub by_header_value: Option<String>,
    /// Only with `by_header` and without `by_header_value`. Compiles with the
    /// regex crate under size limits; matched unanchored, as ingress-nginx.
    pub by_header_pattern: Option<String>,
    pub by_cookie: Option<String>,
    /// `affinity-canary-behavior`.
    pub affinity: portico_dataplane::model::CanaryAffinity,
}

impl Default for CanaryAnnotations {
    fn default() -> Self {
        Self {
            weight: None,
            weight_total: parsers::DEFAULT_CANARY_WEIGHT_TOTAL,
            by_header: None,
            by_header_value: None,
            by_header_pattern: None,
            by_cookie: None,
            affinity: Default::default(),
        }
    }
}

/// Parses an Ingress's annotations. Keys under other prefixes are ignored
/// silently; see the module docs for the rest.
pub fn parse(annotations: &BTreeMap<String, String>) -> Parsed {
    parse_with(registry(), nginx_not_supported(), annotations)
}

/// Parses a Service's annotations: only the registry's Service entries
/// count. Unknown `portico.dev/*` keys and Ingress annotations under
/// `portico.dev/` are reported; `nginx.ingress.kubernetes.io/*` keys that
/// are not Service entries are left alone (ingress-nginx reads none from a
/// Service), as are all other prefixes.
pub fn parse_service(annotations: &BTreeMap<String, String>) -> Parsed {
    parse_object(ObjectKind::Service, registry(), &[], annotations)
}

/// Whether any key could be one of Portico's (a quick check before
/// parsing a Service's annotations).
pub fn has_ours(annotations: &BTreeMap<String, String>) -> bool {
    annotations
        .keys()
        .any(|k| k.starts_with(PORTICO_PREFIX) || k.starts_with(NGINX_PREFIX))
}

// === key resolution ===

/// Which spelling a key used; the lower sorts first and wins.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Spelling {
    PorticoName,
    PorticoAlias,
    NginxName,
    NginxAlias,
}

/// One key that names a registry entry.
struct Candidate<'a> {
    spelling: Spelling,
    key: &'a str,
    value: &'a str,
}

/// [`parse`] against explicit tables, so tests can exercise mechanisms (such
/// as aliases) that the shipped registry does not use yet.
fn parse_with(
    specs: &[AnnotationSpec],
    not_supported: &[NginxAnnotation],
    annotations: &BTreeMap<String, String>,
) -> Parsed {
    parse_object(ObjectKind::Ingress, specs, not_supported, annotations)
}

/// [`parse_with`] for annotations on an object of kind `object`.
fn parse_object(
    object: ObjectKind,
    specs: &[AnnotationSpec],
    not_supported: &[NginxAnnotation],
    annotations: &BTreeMap<String, String>,
) -> Parsed {
    let mut diagnostics = Vec::new();
    let mut candidates: Vec<Vec<Candidate<'_>>> = specs.iter().map(|_| Vec::new()).collect();

    for (key, value) in annotations {
        let (portico, name) = if let Some(name) = key.strip_prefix(PORTICO_PREFIX) {
            (true, name)
        } else if let Some(name) = key.strip_prefix(NGINX_PREFIX) {
            (false, name)
        } else {
            continue;
        };

        // Only Portico's own spelling is reported on a Service: its
        // nginx-prefixed keys mean nothing to ingress-nginx either.
        let quiet = object == ObjectKind::Service && !portico;
        if name.ends_with("-snippet") && object == ObjectKind::Ingress {
            diagnostics.push(diagnostic(
                key,
                value,
                DiagnosticKind::Snippet,
                "snippets are never run or interpreted by Portico; ignored",
            ));
            continue;
        }

        if let Some((index, is_alias)) = find_spec(specs, name) {
            let spec = &specs[index];
            if spec.object != object {
                if quiet {
                    continue;
                }
                let reason = format!(
                    "this annotation belongs on {} {}, not on {} {}; ignored",
                    spec.object.article(),
                    spec.object.as_str(),
                    object.article(),
                    object.as_str()
                );
                diagnostics.push(diagnostic(key, value, DiagnosticKind::Unsupported, &reason));
                continue;
            }
            let spelling = match (portico, is_alias) {
                (true, false) => Spelling::PorticoName,
                (true, true) => Spelling::PorticoAlias,
                (false, false) => Spelling::NginxName,
                (false, true) => Spelling::NginxAlias,
            };
            candidates[index].push(Candidate {
                spelling,
                key,
                value,
            });
            continue;
        }

        if quiet {
            continue;
        }
        if let Some(known) = not_supported
            .iter()
            .find(|n| n.name == name || n.aliases.contains(&name))
        {
            let reason = format!("{}; ignored", known.status.describe(known.note));
            diagnostics.push(diagnostic(key, value, DiagnosticKind::Unsupported, &reason));
            continue;
        }

        diagnostics.push(diagnostic(
            key,
            value,
            DiagnosticKind::Unknown,
            "unknown annotation; ignored",
        ));
    }

    let mut draft = Draft::default();
    for (spec, mut found) in specs.iter().zip(candidates) {
        // Stable: keys of the same spelling keep the map's (sorted) order.
        found.sort_by_key(|c| c.spelling);
        let Some(winner) = found.first() else {
            continue;
        };
        for loser in &found[1..] {
            if loser.value.trim() != winner.value.trim() {
                let reason = format!(
                    "conflicts with {}={}; {} applies",
                    winner.key,
                    quote(winner.value),
                    winner.key
                );
                diagnostics.push(diagnostic(
                    loser.key,
                    loser.value,
                    DiagnosticKind::Conflict,
                    &reason,
                ));
            }
        }

        let value = winner.value.trim();
        if value.is_empty() {
            // As ingress-nginx: an empty value counts as not set.
            diagnostics.push(diagnostic(
                winner.key,
                winner.value,
                DiagnosticKind::Invalid(Fallback::Ignored),
                &format!("empty value; ignored, {}", spec.default_phrase()),
            ));
            continue;
        }

        match (spec.parse)(value, &mut draft) {
            Ok(()) => draft.record(spec.name, winner.key, winner.value),
            Err(reason) => {
                if spec.on_invalid == Fallback::CanaryUnused {
                    draft.canary_unused = true;
                }
                let message = format!("invalid: {reason}; {}", spec.fallback_phrase());
                diagnostics.push(diagnostic(
                    winner.key,
                    winner.value,
                    DiagnosticKind::Invalid(spec.on_invalid),
                    &message,
                ));
            }
        }
        for note in draft.take_notes() {
            diagnostics.push(diagnostic(
                winner.key,
                winner.value,
                note.kind,
                &note.message,
            ));
        }
    }

    let (ingress, service, notes) = draft.finish();
    for note in notes {
        diagnostics.push(diagnostic(&note.key, &note.value, note.kind, &note.message));
    }

    Parsed {
        ingress,
        service,
        diagnostics,
    }
}

/// How closely Portico implements the Ingress annotation `name` (without
/// prefix, an alias allowed); `None` when it does not implement it.
pub fn support_of(name: &str) -> Option<Support> {
    let specs = registry();
    let (i, _) = find_spec(specs, name)?;
    (specs[i].object == ObjectKind::Ingress).then_some(specs[i].support)
}

/// The registry entry `name` refers to, and whether by an alias.
fn find_spec(specs: &[AnnotationSpec], name: &str) -> Option<(usize, bool)> {
    specs.iter().enumerate().find_map(|(i, s)| {
        if s.name == name {
            Some((i, false))
        } else if s.aliases.contains(&name) {
            Some((i, true))
        } else {
            None
        }
    })
}

/// `key="value": reason`, on one line whatever the value holds.
fn diagnostic(key: &str, value: &str, kind: DiagnosticKind, reason: &str) -> AnnotationDiagnostic {
    AnnotationDiagnostic {
        key: key.to_owned(),
        value: value.to_owned(),
        kind,
        message: format!("{key}={}: {reason}", quote(value)),
    }
}

/// A value as it appears in a one-line message: quoted, control characters
/// escaped, long values shortened.
fn quote(value: &str) -> String {
    let mut shown: String = value.chars().take(MESSAGE_VALUE_MAX).collect();
    if shown.len() < value.len() {
        shown.push('…');
    }
    format!("\"{}\"", shown.escape_debug())
}
