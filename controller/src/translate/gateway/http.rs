//! Gateway API HTTPRoutes: rules through the same checks as `portico.dev`
//! HTTPRoutes (`translate::httproute::rule_parts`: matches, filters,
//! timeouts), backends with their own filters, and the 500 the spec asks
//! for a backend that cannot be resolved. Also the route shape GRPCRoutes
//! share ([`GatewayRoute`], [`build`]).

use portico_crds::HTTPRouteRule;
use portico_crds::gateway::HttpRoute;
use portico_dataplane::model::{Backend, Filter, GrpcOptions, Hostname, Mirror, Protocol, Rule};
use serde::Deserialize;

use super::{Cond, GROUP, ParentRef, RouteKind, grants, parse_hostname, reshape};
use crate::diagnostics::Diagnostic;
use crate::snapshot::Snapshot;
use crate::translate::backends::{self, PortRef};
use crate::translate::created_secs;
use crate::translate::httproute::{header_modifier, mirror_fraction, rule_parts};

/// A route of either kind, translated once and then placed on every
/// listener it attaches to.
#[derive(Debug)]
pub(super) struct GatewayRoute {
    pub(super) kind: RouteKind,
    pub(super) namespace: String,
    pub(super) name: String,
    pub(super) created: i64,
    pub(super) meta: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    /// Valid hostnames; `hostnames_invalid`: some were written but none
    /// is valid, so the route matches no host.
    pub(super) hostnames: Vec<Hostname>,
    pub(super) hostnames_invalid: bool,
    pub(super) parent_refs: Vec<ParentRef>,
    /// How many rules are served. The rules themselves are kept apart
    /// ([`Translated`]): the memo keeps this, not them, once they are
    /// placed.
    pub(super) rules_served: usize,
    pub(super) rules_total: usize,
    /// `ResolvedRefs`: the first backend that did not resolve, and why.
    pub(super) resolved_refs: Cond,
    /// Why some rules are not served (`UnsupportedValue`), if any is not.
    pub(super) unsupported: Option<Cond>,
    pub(super) diagnostics: Vec<Diagnostic>,
    /// `status.parents` as last written (every controller's): status keeps
    /// the other controllers' entries, the list being one atomic value.
    pub(super) status_parents: Vec<serde_json::Value>,
}

impl GatewayRoute {
    pub(super) fn id(&self) -> String {
        let prefix = match self.kind {
            RouteKind::Http => "gateway-httproute",
            RouteKind::Grpc => "grpcroute",
        };
        format!("{prefix}/{}/{}", self.namespace, self.name)
    }
}

/// A `backendRefs[]` entry of either route kind.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BackendRefSpec {
    #[serde(default)]
    group: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    port: Option<i32>,
    #[serde(default)]
    weight: Option<i32>,
    #[serde(default)]
    filters: Vec<serde_json::Value>,
}

/// One rule as read: the part `rule_parts` checks (in the `portico.dev`
/// shape, which Gateway API's matches, filters and timeouts share), its
/// backendRefs and its `RequestMirror` filters.
pub(super) struct RuleInput {
    pub(super) rule: HTTPRouteRule,
    pub(super) backend_refs: Vec<BackendRefSpec>,
    pub(super) mirrors: Vec<(String, MirrorSpec)>,
}

impl RuleInput {
    /// The schema's default rule: every request, no filters, no backends
    /// (so every request answers 500).
    pub(super) fn every_request() -> Self {
        Self {
            rule: HTTPRouteRule::default(),
            backend_refs: Vec::new(),
            mirrors: Vec::new(),
        }
    }
}

/// A `RequestMirror` filter: where copies go and which share of requests.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MirrorSpec {
    backend_ref: BackendRefSpec,
    #[serde(default)]
    percent: Option<i32>,
    #[serde(default)]
    fraction: Option<FractionSpec>,
}

#[derive(Debug, Deserialize)]
pub(super) struct FractionSpec {
    numerator: i32,
    #[serde(default)]
    denominator: Option<i32>,
}

/// A route translated: what attachment and status read, and its rules.
pub(super) type Translated = (GatewayRoute, Vec<Rule>);

pub(super) fn translate(snap: &Snapshot, r: &HttpRoute) -> Translated {
    let parent_refs = reshape(&r.spec.parent_refs).unwrap_or_default();
    let rules = rule_inputs(r.spec.rules.as_deref(), |rule, field| {
        let value = serde_json::to_value(rule).map_err(|e| invalid(field, e))?;
        rule_input(value, field)
    });
    let (mut route, rules) = build(
        snap,
        RouteKind::Http,
        &r.metadata,
        r.spec.hostnames.as_deref().unwrap_or_default(),
        parent_refs,
        rules,
    );
    route.status_parents = status_parents(r.status.as_ref().map(|s| &s.parents));
    (route, rules)
}

/// A route's rules (either kind) as [`RuleInput`]s by `each`, with its
/// field path; none written is the schema's default: one rule for every
/// request, no backends.
pub(super) fn rule_inputs<R>(
    rules: Option<&[R]>,
    each: impl Fn(&R, &str) -> Result<RuleInput, Diagnostic>,
) -> Vec<Result<RuleInput, Diagnostic>> {
    match rules {
        None | Some([]) => vec![Ok(RuleInput::every_request())],
        Some(rules) => rules
            .iter()
            .enumerate()
            .map(|(i, r)| each(r, &format!("spec.rules[{i}]")))
            .collect(),
    }
}

/// A route's `status.parents` as JSON values.
pub(super) fn status_parents<T: serde::Serialize>(parents: Option<&T>) -> Vec<serde_json::Value> {
    parents
        .and_then(|p| serde_json::to_value(p).ok())
        .and_then(|v| match v {
            serde_json::Value::Array(a) => Some(a),
            _ => None,
        })
        .unwrap_or_default()
}

fn invalid(field: &str, e: impl std::fmt::Display) -> Diagnostic {
    Diagnostic::error(
        "UnsupportedValue",
        field.to_owned(),
        format!("{e}; this rule is not served"),
    )
}

/// A rule's JSON (either kind) as a [`RuleInput`]: filters Portico does
/// not serve keep the rule out.
pub(super) fn rule_input(
    mut value: serde_json::Value,
    field: &str,
) -> Result<RuleInput, Diagnostic> {
    let backend_refs = match value.as_object_mut().and_then(|o| o.remove("backendRefs")) {
        Some(v) => {
            serde_json::from_value(v).map_err(|e| invalid(&format!("{field}.backendRefs"), e))?
        }
        None => Vec::new(),
    };
    // Mirrors are taken out before the rest is read in the `portico.dev`
    // shape, which has no such filter; their stage is fixed, so their place
    // in the list does not matter.
    let mut mirrors = Vec::new();
    if let Some(filters) = value.get_mut("filters").and_then(|f| f.as_array_mut()) {
        let mut kept = Vec::with_capacity(filters.len());
        for (j, f) in std::mem::take(filters).into_iter().enumerate() {
            let at = format!("{field}.filters[{j}]");
            if f.get("type").and_then(|t| t.as_str()) == Some("RequestMirror") {
                let spec = f
                    .get("requestMirror")
                    .cloned()
                    .ok_or_else(|| invalid(&at, "type RequestMirror without requestMirror"))
                    .and_then(|m| {
                        serde_json::from_value::<MirrorSpec>(m)
                            .map_err(|e| invalid(&format!("{at}.requestMirror"), e))
                    })?;
                mirrors.push((format!("{at}.requestMirror.backendRef"), spec));
                continue;
            }
            unsupported_filter(&f, &at)?;
            kept.push(f);
        }
        *filters = kept;
    }
    let rule = serde_json::from_value(value).map_err(|e| invalid(field, e))?;
    Ok(RuleInput {
        rule,
        backend_refs,
        mirrors,
    })
}

/// `RequestMirror` on a backendRef (copies are per rule) and
/// `ExtensionRef` (no extensions) keep a rule out.
fn unsupported_filter(f: &serde_json::Value, field: &str) -> Result<(), Diagnostic> {
    match f.get("type").and_then(|t| t.as_str()) {
        Some("RequestMirror") => Err(Diagnostic::error(
            "UnsupportedValue",
            format!("{field}.type"),
            "RequestMirror on a backendRef is not supported (put it on the rule); this rule is not served",
        )),
        Some("ExtensionRef") => Err(Diagnostic::error(
            "UnsupportedValue",
            format!("{field}.type"),
            "ExtensionRef filters are not supported; this rule is not served",
        )),
        _ => Ok(()),
    }
}

/// The route from its rules, each checked and its backends resolved.
pub(super) fn build(
    snap: &Snapshot,
    kind: RouteKind,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    hostnames: &[String],
    parent_refs: Vec<ParentRef>,
    inputs: Vec<Result<RuleInput, Diagnostic>>,
) -> Translated {
    let namespace = meta.namespace.clone().unwrap_or_default();
    let mut route = GatewayRoute {
        kind,
        namespace: namespace.clone(),
        name: meta.name.clone().unwrap_or_default(),
        created: created_secs(meta),
        meta: meta.clone(),
        hostnames: Vec::new(),
        hostnames_invalid: false,
        parent_refs,
        rules_served: 0,
        rules_total: inputs.len(),
        resolved_refs: Cond::yes("ResolvedRefs", ""),
        unsupported: None,
        diagnostics: Vec::new(),
        status_parents: Vec::new(),
    };
    for (i, h) in hostnames.iter().enumerate() {
        match parse_hostname(h) {
            Some(p) => route.hostnames.push(p),
            None => route.diagnostics.push(Diagnostic::error(
                "UnsupportedValue",
                format!("spec.hostnames[{i}]"),
                format!("{h:?} is not a valid host name; it is not served"),
            )),
        }
    }
    route.hostnames_invalid = !hostnames.is_empty() && route.hostnames.is_empty();
    let protocol = match kind {
        RouteKind::Http => None,
        // gRPC is HTTP/2; Portico speaks it in cleartext to backends.
        RouteKind::Grpc => Some(Protocol::H2c),
    };
    let mut rules = Vec::with_capacity(inputs.len());
    for (i, input) in inputs.into_iter().enumerate() {
        let field = format!("spec.rules[{i}]");
        let built = input.and_then(|input| {
            let parts = rule_parts(&input.rule, &field, &mut route.diagnostics)?;
            let mut list = Vec::new();
            if parts.redirect.is_none() {
                for (j, b) in input.backend_refs.iter().enumerate() {
                    list.push(backend(
                        snap,
                        kind,
                        &namespace,
                        b,
                        protocol,
                        RefUse::Backend(&format!("{field}.backendRefs[{j}]")),
                        &mut route,
                    )?);
                }
                if list.is_empty() {
                    // No backend: every request answers 500, as the spec says.
                    list.push(Backend::invalid(
                        format!("{}/{}:rules[{i}]", namespace, route.name),
                        1,
                        "the rule has no backendRefs",
                    ));
                }
            }
            let mut rule = parts.assemble(list, &GrpcOptions::default(), None);
            for (at, m) in &input.mirrors {
                let fraction = mirror_fraction(
                    m.percent,
                    m.fraction.as_ref().map(|f| (f.numerator, f.denominator)),
                )
                .map_err(|(which, why)| {
                    invalid(
                        &format!("{}.{which}", at.trim_end_matches(".backendRef")),
                        why,
                    )
                })?;
                let target = backend(
                    snap,
                    kind,
                    &namespace,
                    &m.backend_ref,
                    protocol,
                    RefUse::Mirror(at),
                    &mut route,
                )?;
                // An unresolved mirror is reported (ResolvedRefs) and copies
                // nothing; the rule itself is served.
                if target.invalid.is_none() {
                    rule.chain.push(Filter::Mirror(Box::new(Mirror {
                        fraction,
                        ..Mirror::to_backend(route.id(), target)
                    })));
                }
            }
            Ok(rule)
        });
        match built {
            Ok(rule) => rules.push(rule),
            Err(d) => {
                route.unsupported.get_or_insert_with(|| {
                    Cond::yes("UnsupportedValue", format!("{}: {}", d.field, d.message))
                });
                route.diagnostics.push(d);
            }
        }
    }
    route.rules_served = rules.len();
    (route, rules)
}

/// What a backendRef is for, and its field: what an unresolved one means
/// differs.
#[derive(Clone, Copy)]
enum RefUse<'a> {
    /// A rule's backendRef: its share of requests answers 500.
    Backend(&'a str),
    /// A `RequestMirror`'s: no copies are sent.
    Mirror(&'a str),
}

/// One backendRef: the Service's endpoints, or an unresolved backend that
/// answers 500 for its share. Its own filters ride on it. A filter Portico
/// cannot run per backend keeps the rule out (the error).
fn backend(
    snap: &Snapshot,
    kind: RouteKind,
    namespace: &str,
    b: &BackendRefSpec,
    protocol: Option<Protocol>,
    used: RefUse<'_>,
    route: &mut GatewayRoute,
) -> Result<Backend, Diagnostic> {
    let (field, effect) = match used {
        RefUse::Backend(f) => (f, "its share of requests answers 500"),
        RefUse::Mirror(f) => (f, "no copies are sent"),
    };
    let weight = u32::try_from(b.weight.unwrap_or(1)).unwrap_or(0);
    let target_ns = b.namespace.clone().unwrap_or_else(|| namespace.to_owned());
    let port_text = b.port.map_or_else(|| "-".to_owned(), |p| p.to_string());
    let name = format!("{target_ns}/{}:{port_text}", b.name);
    let mut filters = Vec::new();
    for (k, f) in b.filters.iter().enumerate() {
        let ff = format!("{field}.filters[{k}]");
        unsupported_filter(f, &ff)?;
        let parsed: portico_crds::HTTPRouteFilter =
            serde_json::from_value(f.clone()).map_err(|e| invalid(&ff, e))?;
        let found = &mut route.diagnostics;
        match (
            &parsed.request_header_modifier,
            &parsed.response_header_modifier,
        ) {
            (Some(m), _)
                if parsed.filter_type == portico_crds::FilterType::RequestHeaderModifier =>
            {
                filters.push(Filter::RequestHeaders(header_modifier(
                    m,
                    &format!("{ff}.requestHeaderModifier"),
                    found,
                )?));
            }
            (_, Some(m))
                if parsed.filter_type == portico_crds::FilterType::ResponseHeaderModifier =>
            {
                filters.push(Filter::ResponseHeaders(header_modifier(
                    m,
                    &format!("{ff}.responseHeaderModifier"),
                    found,
                )?));
            }
            _ => {
                return Err(Diagnostic::error(
                    "UnsupportedValue",
                    format!("{ff}.type"),
                    "only RequestHeaderModifier and ResponseHeaderModifier are supported on a backendRef; this rule is not served",
                ));
            }
        }
    }
    let unresolved = |route: &mut GatewayRoute, reason: &'static str, at: String, why: String| {
        if route.resolved_refs.status {
            route.resolved_refs = Cond::no(reason, why.clone());
        }
        route
            .diagnostics
            .push(Diagnostic::warning(reason, at, format!("{why}; {effect}")));
        Backend::invalid(name.clone(), weight, why)
    };
    let group = b.group.as_deref().unwrap_or("");
    let backend_kind = b.kind.as_deref().unwrap_or("Service");
    if !group.is_empty() || backend_kind != "Service" {
        return Ok(unresolved(
            route,
            "InvalidKind",
            format!("{field}.kind"),
            format!(
                "{backend_kind} of group {group:?} is not a kind Portico sends to (core Services are)"
            ),
        ));
    }
    if target_ns != namespace
        && !grants::permits(
            snap,
            (GROUP, kind.as_str(), namespace),
            ("", "Service", &target_ns, &b.name),
        )
    {
        return Ok(unresolved(
            route,
            "RefNotPermitted",
            format!("{field}.namespace"),
            format!(
                "Service {target_ns}/{} is in another namespace and no ReferenceGrant there allows it",
                b.name
            ),
        ));
    }
    let Some(port) = b.port else {
        return Ok(unresolved(
            route,
            "BackendNotFound",
            format!("{field}.port"),
            "a port is required for a Service backend".into(),
        ));
    };
    let protocol =
        protocol.unwrap_or_else(|| backends::app_protocol(snap, &target_ns, &b.name, port));
    match backends::resolve(
        snap,
        &target_ns,
        &b.name,
        &PortRef::Number(port),
        protocol,
        weight,
    ) {
        Ok(mut backend) => {
            backend.filters = filters;
            Ok(backend)
        }
        Err(e) => Ok(unresolved(
            route,
            "BackendNotFound",
            field.to_owned(),
            e.message,
        )),
    }
}
