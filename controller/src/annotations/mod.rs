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
//! # Layout
//!
//! One file per feature group, `features/<group>.rs` (or `<group>/mod.rs`
//! and `<group>/tests.rs` when long), holds all of that group: its registry
//! entries (`SPECS`, or one slice per run where its entries are not adjacent
//! in the registry), its typed output (re-exported here), its parsers, the
//! value syntaxes only it uses, its part of the `Draft` (values held back
//! until the rules between annotations run), its `finish` (those rules) and
//! its tests (its `VALID` and `INVALID` cases plus its own rules' tests).
//! Shared by every group: this file (key resolution and spellings, the
//! `parse_object` loop, the `Draft` core and the `list` and Secret-name
//! helpers), `values.rs` (syntaxes several groups use), `registry.rs` (the
//! spec types, `registry()` as the concatenation of `features::RUNS`, the
//! table of ingress-nginx annotations Portico does not implement),
//! `markdown.rs` (`docs/annotations.md`, generated from the registry; a
//! test fails when the committed file drifts) and `tests.rs` (the harness
//! that runs every group's cases, and the tests of the shared machinery).
//!
//! # Adding an annotation
//!
//! 1. its entry in its group's `SPECS` (a new group: a file under
//!    `features/`, its `mod` line and its slice in `features::RUNS`, whose
//!    order is parse order, diagnostic order and docs order);
//! 2. its parser beside it, writing the typed field (on
//!    [`IngressAnnotations`], or the group's own struct) or, when other
//!    annotations decide what it means, the group's draft part, with the
//!    rule in the group's `finish` (called from `Draft::finish`);
//! 3. a valid and an invalid case in the group's `VALID` and `INVALID`
//!    (`every_annotation_has_valid_and_invalid_cases` insists);
//! 4. the removal of its line from the not-supported table if it was there;
//! 5. `PORTICO_UPDATE_DOCS=1 cargo test -p portico --lib annotations` to
//!    regenerate `docs/annotations.md`.

use std::collections::BTreeMap;
use std::time::Duration;

mod features;
mod markdown;
mod registry;
mod values;

#[cfg(test)]
mod tests;

pub(crate) use self::features::error_pages::error_code;
pub use self::markdown::markdown;
pub use self::registry::{
    AnnotationSpec, NginxAnnotation, NginxStatus, ObjectKind, Scope, Support, nginx_not_supported,
    registry,
};

pub use self::features::balance::{BalanceAnnotations, LoadBalance};
pub use self::features::basic_auth::{AuthAnnotations, AuthSecretType};
pub use self::features::canary::CanaryAnnotations;
pub use self::features::external_auth::ExternalAuthAnnotations;
pub use self::features::global_rate_limit::GlobalLimitAnnotations;
pub use self::features::grpc::GrpcAnnotations;
pub use self::features::https::{AuthTlsVerify, HttpsAnnotations};
pub use self::features::jwt::JwtAnnotations;
pub use self::features::mirror::{MirrorAnnotations, MirrorTarget};
pub use self::features::rate_limit::{DEFAULT_BURST_MULTIPLIER, LimitAnnotations};
pub use self::features::redirects::RedirectTarget;
pub use self::features::rewrite::{RewriteSegment, RewriteTarget};
pub use self::features::service_health::ServiceAnnotations;
pub use self::features::timeouts::RetryAnnotations;
pub use self::features::upstream::{BackendProtocol, UpstreamTlsAnnotations};

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
    /// `auth-url` and its parts; `enable-global-auth`.
    pub external_auth: ExternalAuthAnnotations,
    /// `limit-*`: local rate and connection limits.
    pub limits: LimitAnnotations,
    /// `global-rate-limit*`: the limit counted in Redis.
    pub global_limit: GlobalLimitAnnotations,
    /// `enable-opentelemetry`, `opentelemetry-*`; `None` when none is set
    /// (the global switch and defaults apply).
    pub trace: Option<portico_dataplane::model::Trace>,
    /// `jwt-*`: JWT validation.
    pub jwt: JwtAnnotations,
    pub mirror: MirrorAnnotations,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BodySize {
    /// `"0"`: no limit.
    Unlimited,
    Bytes(u64),
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

// === the draft ===

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

/// Values parsed so far. A group whose rules span several annotations
/// holds its values back in its own part until its `finish` runs.
#[derive(Default)]
pub(crate) struct Draft {
    out: IngressAnnotations,
    svc: ServiceAnnotations,
    redirects: features::redirects::RedirectsDraft,
    canary: features::canary::CanaryDraft,
    cors: features::cors::CorsDraft,
    basic_auth: features::basic_auth::BasicAuthDraft,
    external_auth: features::external_auth::ExternalAuthDraft,
    jwt: features::jwt::JwtDraft,
    global_limit: features::global_rate_limit::GlobalLimitDraft,
    /// An annotation whose invalid value leaves the canary unused was
    /// invalid.
    canary_unused: bool,
    notes: Vec<Note>,
    /// Registry name, key and value of every annotation that parsed.
    accepted: Vec<(&'static str, String, String)>,
}

impl Draft {
    fn record(&mut self, name: &'static str, key: &str, value: &str) {
        self.accepted.push((name, key.to_owned(), value.to_owned()));
    }

    /// Diagnostics a parser left about the annotation it just parsed.
    fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// Applies the rules between annotations (each group's `finish`) and
    /// returns the result with the diagnostics those rules produced.
    fn finish(mut self) -> (IngressAnnotations, ServiceAnnotations, Vec<KeyedNote>) {
        let mut notes = Vec::new();
        features::redirects::finish(&mut self, &mut notes);
        features::canary::finish(&mut self, &mut notes);
        features::service_health::finish(&mut self, &mut notes);
        features::balance::finish(&mut self, &mut notes);
        features::basic_auth::finish(&mut self, &mut notes);
        features::external_auth::finish(&mut self, &mut notes);
        features::jwt::finish(&mut self, &mut notes);
        features::cors::finish(&mut self, &mut notes);
        features::global_rate_limit::finish(&mut self, &mut notes);
        features::mirror::finish(&mut self, &mut notes);
        (self.out, self.svc, notes)
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

// === helpers shared by several groups ===

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
