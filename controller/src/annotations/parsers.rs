//! One parser per registry entry, writing into a [`Draft`]; rules that span
//! several annotations (redirect codes, canary parts) run in
//! [`Draft::finish`], once every value is known.

use super::values;
use http::{HeaderName, Method};
use portico_dataplane::model::{
    AffinityMode, CanaryAffinity, Cors, DisallowedPreflight, HashKey, OriginPattern, RetryOn,
    SameSite,
};

use super::{
    AuthSecretType, AuthTlsVerify, BackendProtocol, CanaryAnnotations, DiagnosticKind, Fallback,
    IngressAnnotations, LoadBalance, RedirectTarget, RewriteTarget, ServiceAnnotations, quote,
};

pub(crate) const DEFAULT_CANARY_WEIGHT_TOTAL: u32 = 100;
const DEFAULT_PERMANENT_REDIRECT_CODE: u16 = 301;
const DEFAULT_TEMPORAL_REDIRECT_CODE: u16 = 302;

/// The annotations that only mean something on a canary Ingress.
const CANARY_PARTS: [&str; 7] = [
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "affinity-canary-behavior",
];

/// ingress-nginx's CORS defaults (`enable-cors` alone).
pub(crate) const DEFAULT_CORS_ALLOW_METHODS: &str = "GET, PUT, POST, DELETE, PATCH, OPTIONS";
pub(crate) const DEFAULT_CORS_ALLOW_HEADERS: &str = "DNT,Keep-Alive,User-Agent,X-Requested-With,If-Modified-Since,Cache-Control,Content-Type,Range,Authorization";
pub(crate) const DEFAULT_CORS_MAX_AGE: u64 = 1_728_000;

/// The annotations that only mean something with `enable-cors: "true"`.
const CORS_PARTS: [&str; 6] = [
    "cors-allow-origin",
    "cors-allow-methods",
    "cors-allow-headers",
    "cors-expose-headers",
    "cors-allow-credentials",
    "cors-max-age",
];

/// The gRPC-Web bridge's own CORS settings, replaced by `enable-cors`'s.
const GRPC_WEB_CORS_PARTS: [&str; 5] = [
    "grpc-web-allow-origins",
    "grpc-web-allow-headers",
    "grpc-web-expose-headers",
    "grpc-web-allow-credentials",
    "grpc-web-max-age",
];

/// A diagnostic about the annotation being parsed right now.
pub(crate) struct Note {
    pub(crate) kind: DiagnosticKind,
    pub(crate) message: String,
}

/// A diagnostic about an annotation parsed earlier.
pub(crate) struct KeyedNote {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) kind: DiagnosticKind,
    pub(crate) message: String,
}

/// Values parsed so far, some held back until [`Draft::finish`].
#[derive(Default)]
pub(crate) struct Draft {
    out: IngressAnnotations,
    svc: ServiceAnnotations,
    /// The URL and whether it was written bare (no path, no query).
    permanent_url: Option<(http::Uri, bool)>,
    permanent_code: Option<u16>,
    temporal_url: Option<(http::Uri, bool)>,
    temporal_code: Option<u16>,
    canary_enabled: bool,
    canary: CanaryAnnotations,
    cors_enabled: bool,
    cors: CorsDraft,
    /// An annotation whose invalid value leaves the canary unused was
    /// invalid.
    pub(crate) canary_unused: bool,
    notes: Vec<Note>,
    /// `auth-type` was written, valid or not.
    auth_type_written: bool,
    /// `auth-secret` was written, valid or not (an invalid one is reported
    /// on its own key).
    auth_secret_written: bool,
    /// Registry name, key and value of every annotation that parsed.
    accepted: Vec<(&'static str, String, String)>,
}

/// The `cors-*` values set, before `enable-cors` says whether they count.
#[derive(Default)]
struct CorsDraft {
    allow_origins: Option<Vec<OriginPattern>>,
    allow_methods: Option<Vec<Method>>,
    allow_headers: Option<Vec<HeaderName>>,
    expose_headers: Option<Vec<HeaderName>>,
    allow_credentials: Option<bool>,
    max_age: Option<u64>,
}

impl Draft {
    pub(crate) fn record(&mut self, name: &'static str, key: &str, value: &str) {
        self.accepted.push((name, key.to_owned(), value.to_owned()));
    }

    /// Diagnostics a parser left about the annotation it just parsed.
    pub(crate) fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// Applies the rules between annotations and returns the result with the
    /// diagnostics those rules produced.
    pub(crate) fn finish(mut self) -> (IngressAnnotations, ServiceAnnotations, Vec<KeyedNote>) {
        let mut notes = Vec::new();
        self.finish_redirects(&mut notes);
        self.finish_canary(&mut notes);
        self.finish_health_check(&mut notes);
        self.finish_balance(&mut notes);
        self.finish_auth(&mut notes);
        self.finish_cors(&mut notes);
        (self.out, self.svc, notes)
    }

    /// ingress-nginx's CORS: the `cors-*` settings count only with
    /// `enable-cors: "true"`, and what is not set takes its default.
    fn finish_cors(&mut self, notes: &mut Vec<KeyedNote>) {
        if !self.cors_enabled {
            for name in CORS_PARTS {
                self.note(
                    notes,
                    name,
                    "has no effect unless enable-cors is \"true\"; ignored",
                );
            }
            return;
        }
        let c = std::mem::take(&mut self.cors);
        let origins = c.allow_origins.unwrap_or_else(|| vec![OriginPattern::Any]);
        let any = origins.contains(&OriginPattern::Any);
        if any && c.allow_credentials == Some(true) {
            self.note_kind(
                notes,
                "cors-allow-credentials",
                DiagnosticKind::Partial,
                "not with cors-allow-origin \"*\": echoing every origin with credentials would let any site read answers with its visitors' cookies; Access-Control-Allow-Origin: * is sent without credentials (browsers ignored ingress-nginx's credentials with * too); list the origins instead",
            );
        }
        if self.out.grpc.web {
            for name in GRPC_WEB_CORS_PARTS {
                self.note(
                    notes,
                    name,
                    "enable-cors is also set and its cors-* settings apply to these gRPC-Web paths; ignored",
                );
            }
        }
        let defaults = |text: &str| -> Vec<HeaderName> {
            text.split(',')
                .filter_map(|n| values::header_name(n.trim()).ok())
                .collect()
        };
        self.out.cors = Some(Cors {
            allow_origins: origins,
            allow_methods: c.allow_methods.unwrap_or_else(|| {
                DEFAULT_CORS_ALLOW_METHODS
                    .split(',')
                    .filter_map(|m| values::cors_method(m.trim()).ok())
                    .collect()
            }),
            allow_headers: c
                .allow_headers
                .unwrap_or_else(|| defaults(DEFAULT_CORS_ALLOW_HEADERS)),
            expose_headers: c.expose_headers.unwrap_or_default(),
            allow_credentials: c.allow_credentials.unwrap_or(true) && !any,
            max_age: c.max_age.unwrap_or(DEFAULT_CORS_MAX_AGE),
            // ingress-nginx leaves such a preflight to the backend.
            disallowed_preflight: DisallowedPreflight::Forward,
        });
    }

    /// The other `auth-*` annotations mean nothing without `auth-type`;
    /// `auth-type: basic` without a Secret cannot admit anyone, so it
    /// fails closed (ingress-nginx denies the location).
    fn finish_auth(&mut self, notes: &mut Vec<KeyedNote>) {
        const AUTH_PARTS: [&str; 4] = [
            "auth-secret",
            "auth-secret-type",
            "auth-realm",
            "auth-forward-authorization",
        ];
        if !self.auth_type_written {
            for name in AUTH_PARTS {
                self.note(notes, name, "has no effect without auth-type; ignored");
            }
            return;
        }
        if self.out.auth.basic && self.out.auth.secret.is_none() {
            self.out.auth.basic = false;
            if self.auth_secret_written {
                return;
            }
            self.note_kind(
                notes,
                "auth-type",
                DiagnosticKind::Invalid(Fallback::PathDenied),
                "basic authentication needs auth-secret",
            );
        }
    }

    fn finish_redirects(&mut self, notes: &mut Vec<KeyedNote>) {
        // ingress-nginx checks temporal-redirect first.
        if let Some((url, bare)) = self.temporal_url.take() {
            let code = self.temporal_code.unwrap_or(DEFAULT_TEMPORAL_REDIRECT_CODE);
            self.out.temporal_redirect = Some(RedirectTarget { url, code, bare });
            if self.permanent_url.take().is_some() {
                self.note(
                    notes,
                    "permanent-redirect",
                    "temporal-redirect is also set and wins, as in ingress-nginx; ignored",
                );
            }
        } else if let Some((url, bare)) = self.permanent_url.take() {
            let code = self
                .permanent_code
                .unwrap_or(DEFAULT_PERMANENT_REDIRECT_CODE);
            self.out.permanent_redirect = Some(RedirectTarget { url, code, bare });
        }
        if self.out.temporal_redirect.is_none() && self.temporal_code.is_some() {
            self.note(
                notes,
                "temporal-redirect-code",
                "has no effect without temporal-redirect; ignored",
            );
        }
        if self.out.permanent_redirect.is_none() && self.permanent_code.is_some() {
            self.note(
                notes,
                "permanent-redirect-code",
                "has no effect without a permanent-redirect in use; ignored",
            );
        }
    }

    fn finish_canary(&mut self, notes: &mut Vec<KeyedNote>) {
        if !self.canary_enabled {
            for name in CANARY_PARTS {
                self.note(
                    notes,
                    name,
                    "has no effect unless canary is \"true\"; ignored",
                );
            }
            return;
        }
        let mut canary = std::mem::take(&mut self.canary);
        if self.canary_unused {
            // Still a canary (it must not take over the mainline's paths),
            // but one that nothing selects: no header, no cookie, weight 0.
            self.out.canary = Some(CanaryAnnotations {
                weight: Some(0),
                weight_total: canary.weight_total,
                ..CanaryAnnotations::default()
            });
            return;
        }
        if let Some(weight) = canary.weight {
            let total = canary.weight_total;
            if weight > total {
                canary.weight = Some(total);
                self.note_kind(
                    notes,
                    "canary-weight",
                    DiagnosticKind::Partial,
                    &format!(
                        "above canary-weight-total ({total}); capped at {total}, every request goes to the canary"
                    ),
                );
            }
        }
        if canary.by_header.is_none() {
            if canary.by_header_value.take().is_some() {
                self.note(
                    notes,
                    "canary-by-header-value",
                    "has no effect without canary-by-header; ignored",
                );
            }
            if canary.by_header_pattern.take().is_some() {
                self.note(
                    notes,
                    "canary-by-header-pattern",
                    "has no effect without canary-by-header; ignored",
                );
            }
        } else if canary.by_header_value.is_some() && canary.by_header_pattern.take().is_some() {
            self.note(
                notes,
                "canary-by-header-pattern",
                "canary-by-header-value is also set and wins, as in ingress-nginx; ignored",
            );
        }
        self.out.canary = Some(canary);
    }

    /// ingress-nginx's precedence: affinity, then the hash, then
    /// load-balance; cookie settings need affinity.
    fn finish_balance(&mut self, notes: &mut Vec<KeyedNote>) {
        const COOKIE_PARTS: [&str; 9] = [
            "affinity-mode",
            "session-cookie-name",
            "session-cookie-max-age",
            "session-cookie-expires",
            "session-cookie-path",
            "session-cookie-domain",
            "session-cookie-samesite",
            "session-cookie-secure",
            "session-cookie-change-on-failure",
        ];
        let b = &self.out.balance;
        if !b.affinity_cookie {
            for name in COOKIE_PARTS {
                self.note(
                    notes,
                    name,
                    "has no effect without affinity: cookie; ignored",
                );
            }
            if b.upstream_hash_by.is_some() && b.load_balance.is_some() {
                self.note(
                    notes,
                    "load-balance",
                    "upstream-hash-by is also set and wins, as in ingress-nginx; ignored",
                );
            }
            return;
        }
        for name in ["upstream-hash-by", "load-balance"] {
            self.note(
                notes,
                name,
                "affinity: cookie is also set and wins, as in ingress-nginx; ignored",
            );
        }
    }

    /// A probe may not outlive the interval that schedules the next one.
    fn finish_health_check(&mut self, notes: &mut Vec<KeyedNote>) {
        let interval = self
            .svc
            .health_check_interval
            .unwrap_or(std::time::Duration::from_secs(10));
        if let Some(timeout) = self.svc.health_check_timeout
            && timeout > interval
        {
            self.svc.health_check_timeout = Some(interval);
            self.note_kind(
                notes,
                "health-check-timeout",
                DiagnosticKind::Partial,
                &format!("longer than the interval ({interval:?}); capped at the interval"),
            );
        }
    }

    /// An `Invalid(Ignored)` note on the accepted annotation `name`, if set.
    fn note(&self, notes: &mut Vec<KeyedNote>, name: &str, message: &str) {
        self.note_kind(
            notes,
            name,
            DiagnosticKind::Invalid(Fallback::Ignored),
            message,
        );
    }

    fn note_kind(
        &self,
        notes: &mut Vec<KeyedNote>,
        name: &str,
        kind: DiagnosticKind,
        message: &str,
    ) {
        if let Some((_, key, value)) = self.accepted.iter().find(|(n, _, _)| *n == name) {
            notes.push(KeyedNote {
                key: key.clone(),
                value: value.clone(),
                kind,
                message: message.to_owned(),
            });
        }
    }
}

// === parsers, in registry order ===

pub(crate) fn rewrite_target(v: &str, d: &mut Draft) -> Result<(), String> {
    let segments = values::rewrite_template(v)?;
    d.out.rewrite_target = Some(RewriteTarget { segments });
    Ok(())
}

pub(crate) fn use_regex(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.use_regex = values::go_bool(v)?;
    Ok(())
}

pub(crate) fn app_root(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.app_root = Some(values::absolute_path(v)?);
    Ok(())
}

pub(crate) fn permanent_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    d.permanent_url = Some((values::redirect_url(v)?, values::is_bare_url(v)));
    Ok(())
}

pub(crate) fn permanent_redirect_code(v: &str, d: &mut Draft) -> Result<(), String> {
    d.permanent_code = Some(values::redirect_code(v)?);
    Ok(())
}

pub(crate) fn temporal_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    d.temporal_url = Some((values::redirect_url(v)?, values::is_bare_url(v)));
    Ok(())
}

pub(crate) fn temporal_redirect_code(v: &str, d: &mut Draft) -> Result<(), String> {
    d.temporal_code = Some(values::redirect_code(v)?);
    Ok(())
}

pub(crate) fn upstream_vhost(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.upstream_vhost = Some(values::host_and_port(v)?);
    Ok(())
}

pub(crate) fn x_forwarded_prefix(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.x_forwarded_prefix = Some(values::path_header_value(v)?);
    Ok(())
}

pub(crate) fn proxy_connect_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.proxy_connect_timeout = Some(values::timeout(v)?);
    Ok(())
}

pub(crate) fn proxy_read_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.proxy_read_timeout = Some(values::timeout(v)?);
    Ok(())
}

pub(crate) fn proxy_send_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.proxy_send_timeout = Some(values::timeout(v)?);
    Ok(())
}

pub(crate) fn proxy_body_size(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.proxy_body_size = Some(values::body_size(v)?);
    Ok(())
}

pub(crate) fn backend_protocol(v: &str, d: &mut Draft) -> Result<(), String> {
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

pub(crate) fn canary(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary_enabled = values::go_bool(v)?;
    Ok(())
}

pub(crate) fn canary_weight(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.weight = Some(values::uint(v)?);
    Ok(())
}

pub(crate) fn canary_weight_total(v: &str, d: &mut Draft) -> Result<(), String> {
    let total = values::uint(v)?;
    if total == 0 {
        return Err("must be at least 1".into());
    }
    d.canary.weight_total = total;
    Ok(())
}

pub(crate) fn canary_by_header(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.by_header = Some(values::header_name(v)?);
    Ok(())
}

pub(crate) fn canary_by_header_value(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.by_header_value = Some(values::header_match_value(v)?);
    Ok(())
}

pub(crate) fn canary_by_header_pattern(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.by_header_pattern = Some(values::bounded_regex(v)?);
    Ok(())
}

pub(crate) fn canary_by_cookie(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.by_cookie = Some(values::cookie_name(v)?);
    Ok(())
}

/// As ingress-nginx, on the canary Ingress.
pub(crate) fn affinity_canary_behavior(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.affinity = match v {
        "sticky" => CanaryAffinity::Sticky,
        "legacy" => CanaryAffinity::Legacy,
        _ => return Err("expected sticky or legacy".into()),
    };
    Ok(())
}

/// Invalid entries are dropped one by one (each with a diagnostic); the
/// valid ones are kept, duplicates once.
pub(crate) fn allowlist_source_range(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.allowlist_source_range = Some(values::source_ranges(v)?);
    Ok(())
}

pub(crate) fn denylist_source_range(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.denylist_source_range = Some(values::source_ranges(v)?);
    Ok(())
}

pub(crate) fn server_alias(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.server_alias = list(v, d, values::server_name)?;
    Ok(())
}

pub(crate) fn default_backend(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.default_backend = Some(values::dns1035_label(v)?);
    Ok(())
}

/// Invalid entries are dropped one by one (each with a diagnostic); the
/// valid ones are kept, duplicates once. None valid: ignored, so the
/// global list still applies.
pub(crate) fn custom_http_errors(v: &str, d: &mut Draft) -> Result<(), String> {
    let codes = list(v, d, values::error_code)?;
    if codes.is_empty() {
        return Err("no status from 400 to 599".into());
    }
    d.out.custom_http_errors = Some(codes);
    Ok(())
}

pub(crate) fn disable_proxy_intercept_errors(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.disable_proxy_intercept_errors = values::go_bool(v)?;
    Ok(())
}

pub(crate) fn custom_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.custom_headers = values::header_lines(v)?;
    Ok(())
}

pub(crate) fn ssl_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.ssl_redirect = Some(values::go_bool(v)?);
    Ok(())
}

pub(crate) fn force_ssl_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.force_ssl_redirect = values::go_bool(v)?;
    Ok(())
}

pub(crate) fn preserve_trailing_slash(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.preserve_trailing_slash = values::go_bool(v)?;
    Ok(())
}

pub(crate) fn hsts(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.hsts = Some(values::go_bool(v)?);
    Ok(())
}

pub(crate) fn hsts_max_age(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.hsts_max_age = Some(u64::from(values::uint(v)?));
    Ok(())
}

pub(crate) fn hsts_include_subdomains(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.hsts_include_subdomains = Some(values::go_bool(v)?);
    Ok(())
}

/// `namespace/name` of a Secret.
fn namespaced_secret(v: &str) -> Result<(String, String), String> {
    let (ns, name) = v
        .split_once('/')
        .ok_or("expected namespace/name of a Secret")?;
    Ok((
        values::dns1123_subdomain(ns)?,
        values::dns1123_subdomain(name)?,
    ))
}

pub(crate) fn auth_tls_secret(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.auth_tls_secret = Some(namespaced_secret(v)?);
    Ok(())
}

pub(crate) fn auth_tls_verify_client(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.auth_tls_verify = Some(match v {
        "on" => AuthTlsVerify::On,
        "off" => AuthTlsVerify::Off,
        "optional" => AuthTlsVerify::Optional,
        "optional_no_ca" => AuthTlsVerify::OptionalNoCa,
        _ => return Err("expected on, off, optional or optional_no_ca".into()),
    });
    Ok(())
}

pub(crate) fn auth_tls_verify_depth(v: &str, d: &mut Draft) -> Result<(), String> {
    let depth = values::uint(v)?;
    d.out.https.auth_tls_verify_depth = Some(
        u8::try_from(depth)
            .ok()
            .filter(|d| *d > 0)
            .ok_or("must be from 1 to 255")?,
    );
    Ok(())
}

pub(crate) fn auth_tls_pass_certificate(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.auth_tls_pass_certificate = values::go_bool(v)?;
    Ok(())
}

pub(crate) fn auth_type(v: &str, d: &mut Draft) -> Result<(), String> {
    d.auth_type_written = true;
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
pub(crate) fn auth_secret(v: &str, d: &mut Draft) -> Result<(), String> {
    d.auth_secret_written = true;
    d.out.auth.secret = Some(match v.split_once('/') {
        Some(_) => {
            let (ns, name) = namespaced_secret(v)?;
            (Some(ns), name)
        }
        None => (None, values::dns1123_subdomain(v)?),
    });
    Ok(())
}

pub(crate) fn auth_secret_type(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.auth.secret_type = match v {
        "auth-file" => AuthSecretType::AuthFile,
        "auth-map" => AuthSecretType::AuthMap,
        _ => return Err("expected auth-file or auth-map".into()),
    };
    Ok(())
}

pub(crate) fn auth_realm(v: &str, d: &mut Draft) -> Result<(), String> {
    portico_dataplane::basic_auth::check_realm(v)?;
    d.out.auth.realm = Some(v.to_owned());
    Ok(())
}

pub(crate) fn auth_forward_authorization(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.auth.forward_authorization = values::go_bool(v)?;
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

pub(crate) fn proxy_ssl_verify(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.upstream_tls.verify = on_off(v)?;
    Ok(())
}

pub(crate) fn proxy_ssl_secret(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.upstream_tls.secret = Some(namespaced_secret(v)?);
    Ok(())
}

pub(crate) fn proxy_ssl_name(v: &str, d: &mut Draft) -> Result<(), String> {
    let name = values::server_name(v)?;
    if name.starts_with("*.") {
        return Err("must be one host name, not a wildcard".into());
    }
    d.out.upstream_tls.name = Some(name);
    Ok(())
}

pub(crate) fn proxy_ssl_server_name(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.upstream_tls.server_name = on_off(v)?;
    Ok(())
}

pub(crate) fn ssl_passthrough(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.ssl_passthrough = values::go_bool(v)?;
    Ok(())
}

pub(crate) fn grpc_web(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.web = values::go_bool(v)?;
    Ok(())
}

/// Comma-separated entries, each parsed on its own: an invalid one is
/// dropped with a note, the rest kept. No entry at all is invalid.
fn list<T: PartialEq>(
    v: &str,
    d: &mut Draft,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    let mut any = false;
    for entry in v.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        any = true;
        match parse(entry) {
            Ok(item) if !out.contains(&item) => out.push(item),
            Ok(_) => {}
            Err(reason) => d.notes.push(Note {
                kind: DiagnosticKind::Invalid(Fallback::Ignored),
                message: format!("entry {} dropped: {reason}", quote(entry)),
            }),
        }
    }
    if !any {
        return Err("no entries".into());
    }
    Ok(out)
}

pub(crate) fn grpc_web_allow_origins(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.allow_origins = list(v, d, values::cors_origin)?;
    Ok(())
}

pub(crate) fn grpc_web_allow_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.allow_headers = list(v, d, values::header_name)?;
    Ok(())
}

pub(crate) fn grpc_web_expose_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.expose_headers = list(v, d, values::header_name)?;
    Ok(())
}

pub(crate) fn grpc_web_allow_credentials(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.allow_credentials = values::go_bool(v)?;
    Ok(())
}

pub(crate) fn grpc_web_max_age(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.max_age = Some(values::timeout(v)?);
    Ok(())
}

pub(crate) fn enable_cors(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors_enabled = values::go_bool(v)?;
    Ok(())
}

pub(crate) fn cors_allow_origin(v: &str, d: &mut Draft) -> Result<(), String> {
    let mut origins = list(v, d, values::cors_origin)?;
    // As ingress-nginx: `*` anywhere allows every origin.
    if origins.contains(&OriginPattern::Any) {
        origins = vec![OriginPattern::Any];
    }
    d.cors.allow_origins = Some(origins);
    Ok(())
}

pub(crate) fn cors_allow_methods(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.allow_methods = Some(list(v, d, values::cors_method)?);
    Ok(())
}

pub(crate) fn cors_allow_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.allow_headers = Some(list(v, d, values::header_name)?);
    Ok(())
}

pub(crate) fn cors_expose_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.expose_headers = Some(list(v, d, values::header_name)?);
    Ok(())
}

pub(crate) fn cors_allow_credentials(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.allow_credentials = Some(values::go_bool(v)?);
    Ok(())
}

pub(crate) fn cors_max_age(v: &str, d: &mut Draft) -> Result<(), String> {
    d.cors.max_age = Some(u64::from(values::uint(v)?));
    Ok(())
}

pub(crate) fn grpc_max_message_size(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.grpc.max_message = Some(values::body_size(v)?);
    Ok(())
}

pub(crate) fn hsts_preload(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.https.hsts_preload = Some(values::go_bool(v)?);
    Ok(())
}

// === Service annotations ===

pub(crate) fn health_check_path(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_path = Some(values::absolute_path(v)?);
    Ok(())
}

pub(crate) fn health_check_port(v: &str, d: &mut Draft) -> Result<(), String> {
    let port = values::uint(v)?;
    d.svc.health_check_port = Some(
        u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or("must be a port from 1 to 65535")?,
    );
    Ok(())
}

pub(crate) fn health_check_interval(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_interval = Some(values::timeout(v)?);
    Ok(())
}

pub(crate) fn health_check_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_timeout = Some(values::timeout(v)?);
    Ok(())
}

fn threshold(v: &str) -> Result<u32, String> {
    let n = values::uint(v)?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

pub(crate) fn health_check_healthy_threshold(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_healthy_threshold = Some(threshold(v)?);
    Ok(())
}

pub(crate) fn health_check_unhealthy_threshold(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_unhealthy_threshold = Some(threshold(v)?);
    Ok(())
}

pub(crate) fn health_check_expected_statuses(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_expected_statuses = Some(values::status_ranges(v)?);
    Ok(())
}

pub(crate) fn outlier_consecutive_5xx(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.outlier_consecutive_5xx = Some(values::uint(v)?);
    Ok(())
}

pub(crate) fn outlier_consecutive_errors(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.outlier_consecutive_errors = Some(values::uint(v)?);
    Ok(())
}

pub(crate) fn outlier_base_ejection_time(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.outlier_base_ejection_time = Some(values::timeout(v)?);
    Ok(())
}

pub(crate) fn outlier_max_ejection_time(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.outlier_max_ejection_time = Some(values::timeout(v)?);
    Ok(())
}

pub(crate) fn outlier_max_ejected_percent(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.outlier_max_ejected_percent = Some(values::percent(v)?);
    Ok(())
}

pub(crate) fn panic_threshold(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.panic_threshold = Some(values::percent(v)?);
    Ok(())
}

pub(crate) fn slow_start(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.slow_start = Some(if v == "0" {
        std::time::Duration::ZERO
    } else {
        values::timeout(v)?
    });
    Ok(())
}

// === load balancing (Ingress) ===

pub(crate) fn load_balance(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.load_balance = Some(match v {
        "round_robin" => LoadBalance::RoundRobin,
        "least_request" => LoadBalance::LeastRequest,
        "ewma" => LoadBalance::Ewma,
        _ => return Err("expected round_robin, least_request or ewma".into()),
    });
    Ok(())
}

pub(crate) fn upstream_hash_by(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.upstream_hash_by = Some(HashKey::parse(v)?);
    Ok(())
}

pub(crate) fn affinity(v: &str, d: &mut Draft) -> Result<(), String> {
    if v != "cookie" {
        return Err("the only affinity is cookie".into());
    }
    d.out.balance.affinity_cookie = true;
    Ok(())
}

pub(crate) fn affinity_mode(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.affinity_mode = Some(match v {
        "balanced" => AffinityMode::Balanced,
        "persistent" => AffinityMode::Persistent,
        _ => return Err("expected balanced or persistent".into()),
    });
    Ok(())
}

pub(crate) fn session_cookie_name(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_name = Some(values::cookie_name(v)?);
    Ok(())
}

pub(crate) fn session_cookie_max_age(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_max_age = Some(u64::from(values::uint(v)?));
    Ok(())
}

pub(crate) fn session_cookie_expires(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_expires = Some(u64::from(values::uint(v)?));
    Ok(())
}

pub(crate) fn session_cookie_path(v: &str, d: &mut Draft) -> Result<(), String> {
    let path = values::absolute_path(v)?;
    if path.contains([';', ',']) {
        return Err("';' and ',' cannot be in a cookie path".into());
    }
    d.out.balance.session_cookie_path = Some(path);
    Ok(())
}

pub(crate) fn session_cookie_domain(v: &str, d: &mut Draft) -> Result<(), String> {
    let name = values::server_name(v.strip_prefix('.').unwrap_or(v))?;
    if name.starts_with("*.") {
        return Err("must be a host name, not a wildcard".into());
    }
    d.out.balance.session_cookie_domain = Some(name);
    Ok(())
}

pub(crate) fn session_cookie_samesite(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_samesite = Some(match v.to_ascii_lowercase().as_str() {
        "none" => SameSite::None,
        "lax" => SameSite::Lax,
        "strict" => SameSite::Strict,
        _ => return Err("expected None, Lax or Strict".into()),
    });
    Ok(())
}

pub(crate) fn session_cookie_secure(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_secure = values::go_bool(v)?;
    Ok(())
}

pub(crate) fn session_cookie_change_on_failure(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.balance.session_cookie_change_on_failure = values::go_bool(v)?;
    Ok(())
}

// === retries ===

pub(crate) fn proxy_next_upstream(v: &str, d: &mut Draft) -> Result<(), String> {
    let mut on = RetryOn::OFF;
    let mut off = false;
    let mut unsupported = Vec::new();
    for token in v.split_ascii_whitespace() {
        match token {
            "error" => on.error = true,
            "timeout" => on.timeout = true,
            "http_500" => on.http_500 = true,
            "http_502" => on.http_502 = true,
            "http_503" => on.http_503 = true,
            "http_504" => on.http_504 = true,
            "non_idempotent" => on.non_idempotent = true,
            "off" => off = true,
            "invalid_header" | "http_403" | "http_404" | "http_429" => unsupported.push(token),
            _ => {
                return Err(format!(
                    "{} is not one of error, timeout, http_500, http_502, http_503, http_504, non_idempotent, off",
                    quote(token)
                ));
            }
        }
    }
    if off && (on != RetryOn::OFF || !unsupported.is_empty()) {
        return Err("off cannot be combined with other values".into());
    }
    if !unsupported.is_empty() {
        d.notes.push(Note {
            kind: DiagnosticKind::Partial,
            message: format!(
                "{} not supported by Portico; ignored, the rest applies",
                unsupported.join(", ")
            ),
        });
    }
    d.out.retry.on = Some(on);
    Ok(())
}

pub(crate) fn proxy_next_upstream_tries(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.retry.tries = Some(values::uint(v)?);
    Ok(())
}

pub(crate) fn proxy_next_upstream_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.retry.timeout = Some(if v == "0" {
        None
    } else {
        Some(values::timeout(v)?)
    });
    Ok(())
}
