//! Ingress (networking.k8s.io/v1) semantics, with ingress-nginx annotations.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use http::HeaderName;
use k8s_openapi::api::networking::v1::{HTTPIngressPath, Ingress, IngressBackend};
use kube::ResourceExt;
use portico_dataplane::model::{
    Action, Backend, BasicAuth, Canary, CanaryHeader, CanaryHeaderValue, Cors,
    DEFAULT_GRPC_MAX_MESSAGE, ErrorOrigin, ErrorPages, ExternalAuth, Filter, Forward,
    GlobalRateLimit, GrpcOptions, GrpcWeb, HashKey, HashVar, HeaderModifier, Hostname, Hsts,
    HttpsRedirect, IpAccess, Jwt, LimitKey, Mirror, PathMatch, PathModifier, Protocol, Redirect,
    RedirectStatus, ResponseRate, RetryPolicy, Route, RouteClientAuth, RouteMatch, Rule, Scheme,
    SourceRef, Substitution, Timeouts, UrlRewrite,
};

use super::auth;
use super::backends::{self, PortRef};
use super::mirror;
use super::tls::{self, TlsHosts};
use super::{
    ObjectReport, Settings, TlsBinding, Translation, check_regex, class, created_secs,
    header_filters,
};
use crate::annotations::{
    self, AnnotationDiagnostic, BackendProtocol, BodySize, CanaryAnnotations,
    DEFAULT_BURST_MULTIPLIER, DiagnosticKind, Fallback, IngressAnnotations, Parsed, RedirectTarget,
    RewriteSegment,
};
use crate::diagnostics::{Diagnostic, Kind, ObjectRef};
use crate::snapshot::{Key, Snapshot};
use portico_dataplane::listen::tls::{ClientAuth, ClientAuthBinding, PassthroughBinding};

/// Where a main Ingress put a (host, path, pathType), for canaries to join.
type PathKey = (String, String, String);

pub(super) fn translate_all(
    snap: &Snapshot,
    settings: &Settings,
    tls_hosts: &TlsHosts,
    out: &mut Translation,
    mut memo: Option<&mut Memo>,
) {
    // Entries stay in place (they are large, and most are kept); each one
    // this translation finds is marked with its epoch, and the others
    // (deleted or replaced objects) are dropped at the end.
    let epoch = memo.as_deref_mut().map_or(0, |m| {
        m.epoch = m.epoch.wrapping_add(1);
        m.epoch
    });
    // Each Ingress's annotations, parsed unless a kept part stands in for
    // them (then what every translation reads of them comes from the memo).
    let mut ours: Vec<Ours<'_>> = snap
        .ingresses
        .iter()
        .filter(|ing| class::ingress_is_ours(ing, &snap.ingress_classes, settings))
        .map(|ing| {
            let kept = memo
                .as_deref()
                .and_then(|m| m.entries.get(&address(ing)))
                .filter(|e| e.part.is_some())
                .map(|e| e.reads);
            match kept {
                Some(reads) => (ing, None, reads),
                None => {
                    // Parsing reads the annotations only.
                    let parsed = Box::new(annotations::parse(ing.annotations()));
                    let reads = Reads::of(&parsed);
                    (ing, Some(parsed), reads)
                }
            }
        })
        .collect();
    let regex_hosts = regex_hosts(ours.iter().map(|(ing, _, reads)| (*ing, *reads)));
    let global_error_backend = out.config.default_backend.clone();
    let ctx = PartContext {
        snap,
        settings,
        tls_hosts,
        regex_hosts: &regex_hosts,
        global_error_backend: global_error_backend.as_ref(),
    };
    if let Some(m) = memo.as_deref_mut() {
        m.reused = 0;
        let context = Context::of(&ctx);
        match &m.context {
            // Only Services or their endpoints changed (a pod came or
            // went): the parts that looked any of them up are translated
            // afresh.
            Some(last) if last.same_besides_services(&context) => {
                let changed = last.objects.changed_services(&context.objects);
                if !changed.is_empty() {
                    for e in m.entries.values_mut() {
                        if e.services.iter().any(|k| changed.contains(k)) {
                            e.part = None;
                        }
                    }
                }
            }
            // Something else an Ingress's translation reads changed: every
            // part is translated afresh.
            _ => m.entries.values_mut().for_each(|e| e.part = None),
        }
        m.context = Some(context);
    }
    // Main paths by key, for canaries to find; none kept without canaries.
    let mut index: Option<HashMap<PathKey, (usize, usize)>> = ours
        .iter()
        .any(|(_, _, reads)| reads.canary)
        .then(HashMap::new);
    let mut canaries = Vec::new();
    for (ing, parsed, reads) in &mut ours {
        let ing: &Arc<Ingress> = ing;
        if let Some(m) = memo.as_deref_mut()
            && let Some(entry) = m.entries.get_mut(&address(ing))
            && let Some(part) = &entry.part
        {
            m.reused += 1;
            part.merge_into(out, index.as_mut());
            entry.epoch = epoch;
            continue;
        }
        // Not kept, or kept before the context changed.
        let parsed: &Parsed =
            parsed.get_or_insert_with(|| Box::new(annotations::parse(ing.annotations())));
        let obj = ObjectRef {
            kind: Kind::Ingress,
            namespace: ing.namespace().unwrap_or_default(),
            name: ing.name_any(),
        };
        if let Some(canary) = &parsed.ingress.canary {
            canaries.push((
                ing,
                canary.clone(),
                parsed.ingress.backend_protocol,
                obj.clone(),
                new_report(&ctx, ing, parsed),
            ));
        }
        let Some(m) = memo.as_deref_mut() else {
            if parsed.ingress.canary.is_none() {
                main_part(&ctx, ing, parsed, obj).merge_into(out, index.as_mut());
            }
            continue;
        };
        let (part, services) = backends::recording(|| {
            parsed
                .ingress
                .canary
                .is_none()
                .then(|| main_part(&ctx, ing, parsed, obj))
        });
        if let Some(part) = &part {
            part.merge_into(out, index.as_mut());
        }
        // A part that reads the clock (a client certificate's validity,
        // `proxy-ssl-secret`) is translated every time.
        let part = part.filter(|_| parsed.ingress.upstream_tls.secret.is_none());
        m.entries.insert(
            address(ing),
            Entry {
                _object: Arc::clone(ing),
                reads: *reads,
                part,
                services: services.into_iter().collect(),
                epoch,
            },
        );
    }
    if let Some(m) = memo {
        m.entries.retain(|_, e| e.epoch == epoch);
    }
    // `Some` whenever there are canaries.
    let index = index.unwrap_or_default();
    for (ing, canary, protocol, obj, mut report) in canaries {
        attach_canary(snap, ing, &canary, protocol, &index, out, &mut report);
        out.reports.insert(obj, report);
    }
}

/// What the last translation of Ingresses keeps for the next
/// ([`super::translate_reusing`]): each Ingress's parsed annotations, and
/// what it added to the translation, by the object. An Ingress object
/// that is the same `Arc` as last time (watch caches and the manifest
/// directory keep an unchanged object's) gets its part again, as long as
/// nothing else it may read changed ([`Context`]); otherwise everything is
/// translated afresh.
#[derive(Default)]
pub struct Memo {
    context: Option<Context>,
    /// By the object's address; the entry holds the object, so the address
    /// is not reused while it is here.
    entries: HashMap<usize, Entry>,
    /// Counts translations: an entry holds the last one that found it.
    epoch: u64,
    /// Parts the last translation reused.
    reused: usize,
}

impl Memo {
    /// How many Ingresses the last translation took from the memo.
    pub fn reused(&self) -> usize {
        self.reused
    }
}

struct Entry {
    /// Held so that its address names it while it is here.
    _object: Arc<Ingress>,
    reads: Reads,
    /// `None` for a canary, whose paths join main Ingresses' routes and are
    /// attached on every translation.
    part: Option<IngressPart>,
    /// Every Service the part looked up (found or not): a change to one of
    /// them or to its EndpointSlices translates the Ingress again.
    services: Box<[Key]>,
    epoch: u64,
}

/// An Ingress of ours, its annotations parsed unless its kept part stands
/// in for them (boxed: `Parsed` is over 2 KB, and the list holds every
/// Ingress), and what every translation reads of them.
type Ours<'s> = (&'s Arc<Ingress>, Option<Box<Parsed>>, Reads);

/// What a translation reads of every Ingress's annotations, kept part or
/// not: kept in the memo instead of the parsed annotations (about 2 KB
/// an Ingress, most of it defaults).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reads {
    canary: bool,
    /// `use-regex` or `rewrite-target`: the Ingress's hosts become regex
    /// hosts ([`regex_hosts`]).
    regex: bool,
}

impl Reads {
    pub(crate) fn of(parsed: &Parsed) -> Self {
        let a = &parsed.ingress;
        Self {
            canary: a.canary.is_some(),
            regex: a.use_regex || a.rewrite_target.is_some(),
        }
    }
}

fn address(ing: &Arc<Ingress>) -> usize {
    Arc::as_ptr(ing) as usize
}

/// Everything besides the Ingress itself that its part may depend on.
struct Context {
    /// What of the snapshot an Ingress's translation reads
    /// ([`Snapshot::ingress_inputs`]), compared object by object by
    /// identity.
    objects: Snapshot,
    settings: String,
    tls_hosts: TlsHosts,
    regex_hosts: HashMap<String, ObjectRef>,
    global_error_backend: Option<Backend>,
}

impl Context {
    fn of(ctx: &PartContext<'_>) -> Self {
        Self {
            objects: ctx.snap.ingress_inputs(),
            settings: format!("{:?}", ctx.settings),
            tls_hosts: ctx.tls_hosts.clone(),
            regex_hosts: ctx.regex_hosts.clone(),
            global_error_backend: ctx.global_error_backend.cloned(),
        }
    }
}

impl Context {
    /// Whether everything a part may read is the same, Services and their
    /// EndpointSlices aside, which each entry records for itself.
    fn same_besides_services(&self, other: &Self) -> bool {
        self.objects
            .same_objects_besides_ingresses_and_services(&other.objects)
            && self.settings == other.settings
            && self.tls_hosts == other.tls_hosts
            && self.regex_hosts == other.regex_hosts
            && self.global_error_backend == other.global_error_backend
    }
}

/// What an Ingress's translation reads besides the Ingress.
struct PartContext<'a> {
    snap: &'a Snapshot,
    settings: &'a Settings,
    tls_hosts: &'a TlsHosts,
    regex_hosts: &'a HashMap<String, ObjectRef>,
    global_error_backend: Option<&'a Backend>,
}

/// What one main (non-canary) Ingress adds to a translation.
#[derive(Clone)]
struct IngressPart {
    obj: ObjectRef,
    report: ObjectReport,
    /// Shared with the translation it went into, and from there with the
    /// table: a kept part costs the memo no copy of its routes.
    routes: Vec<(Arc<Route>, RuleKeys)>,
    tls: Vec<TlsBinding>,
    upstream_client_certs: Vec<tls::UpstreamClientCert>,
    client_auth: Option<Arc<ClientAuth>>,
    passthrough: Vec<PassthroughBinding>,
}

impl IngressPart {
    /// Appends the part, in the order a translation of every Ingress in
    /// turn writes it; `index`, when there are canaries, learns its paths.
    /// Routes go in by `Arc`; what else the part holds is small.
    fn merge_into(
        &self,
        out: &mut Translation,
        mut index: Option<&mut HashMap<PathKey, (usize, usize)>>,
    ) {
        out.tls.extend(self.tls.iter().cloned());
        for (id, cert) in &self.upstream_client_certs {
            if !out.upstream_client_certs.iter().any(|(i, _)| i == id) {
                out.upstream_client_certs.push((id.clone(), cert.clone()));
            }
        }
        let first_route = out.config.routes.len();
        for (offset, (route, keys)) in self.routes.iter().enumerate() {
            if let Some(auth) = &self.client_auth
                && !route.hostnames.is_empty()
            {
                out.client_auth.push(ClientAuthBinding {
                    hosts: route.hostnames.clone(),
                    auth: Arc::clone(auth),
                });
            }
            if let Some(index) = index.as_deref_mut() {
                for (rule_idx, key) in keys {
                    if let Some(key) = key {
                        index
                            .entry(key.clone())
                            .or_insert((first_route + offset, *rule_idx));
                    }
                }
            }
            out.config.routes.push(Arc::clone(route));
        }
        out.passthrough.extend(self.passthrough.iter().cloned());
        out.reports.insert(self.obj.clone(), self.report.clone());
    }
}

fn new_report(ctx: &PartContext<'_>, ing: &Ingress, parsed: &Parsed) -> ObjectReport {
    let mut report = ObjectReport {
        generation: ing.metadata.generation,
        uid: ing.metadata.uid.clone(),
        read_only: class::is_side_by_side(ing, &ctx.snap.ingress_classes, ctx.settings),
        ..Default::default()
    };
    report
        .diagnostics
        .extend(parsed.diagnostics.iter().map(annotation_diagnostic));
    report
}

/// Translates one main Ingress.
fn main_part(
    ctx: &PartContext<'_>,
    ing: &Arc<Ingress>,
    parsed: &Parsed,
    obj: ObjectRef,
) -> IngressPart {
    let PartContext {
        snap,
        settings,
        tls_hosts,
        regex_hosts,
        global_error_backend,
    } = *ctx;
    let mut report = new_report(ctx, ing, parsed);
    let mut denied = parsed.diagnostics.iter().find_map(|d| match d.kind {
        DiagnosticKind::Invalid(Fallback::PathDenied) => Some(d.message.clone()),
        _ => None,
    });
    // A Secret an annotation names that cannot be used denies the
    // Ingress's paths (503) rather than serving them unguarded.
    let deny = |report: &mut ObjectReport,
                denied: &mut Option<String>,
                code: &'static str,
                field: &str,
                reason: String| {
        report.diagnostics.push(Diagnostic::error(
            code,
            field,
            format!("{reason}; the Ingress's paths answer 503"),
        ));
        denied.get_or_insert(reason);
    };
    let client_auth = tls::client_auth(snap, &parsed.ingress.https).unwrap_or_else(|reason| {
        let field = "metadata.annotations[auth-tls-secret]";
        let code = crate::translate::REASON_INVALID_CERTIFICATE_REF;
        deny(&mut report, &mut denied, code, field, reason);
        None
    });
    let mirror = mirror::ingress_mirror(snap, &parsed.ingress.mirror, &mut report);
    let error_pages = error_pages(
        snap,
        settings,
        &parsed.ingress,
        &obj.namespace,
        global_error_backend,
        &mut report,
    );
    let basic_auth = match auth::basic_auth(
        snap,
        settings,
        &obj.namespace,
        &parsed.ingress.auth,
        &mut report.diagnostics,
    ) {
        Ok(a) => a,
        Err(reason) => {
            deny(
                &mut report,
                &mut denied,
                "InvalidAuthSecret",
                auth::FIELD,
                reason,
            );
            None
        }
    };
    let jwt = match auth::jwt(snap, settings, &obj.namespace, &parsed.ingress.jwt) {
        Ok(j) => j.map(Box::new),
        Err(reason) => {
            deny(
                &mut report,
                &mut denied,
                "InvalidJwtKeys",
                auth::JWT_FIELD,
                reason,
            );
            None
        }
    };
    // The Ingress's own policy, else the global one unless it opts
    // out; a denied Ingress (an invalid `auth-url` among the reasons)
    // serves nothing to guard.
    let ext = &parsed.ingress.external_auth;
    let external_auth = ext
        .policy()
        .or_else(|| settings.global_auth.clone().filter(|_| ext.global))
        .filter(|_| denied.is_none())
        .map(|mut a| {
            auth::resolve_auth_service(snap, &mut a);
            Box::new(a)
        });
    let mut t = IngressTranslator {
        snap,
        settings,
        tls_hosts,
        error_pages,
        mirror,
        client_auth: client_auth.clone(),
        basic_auth,
        jwt,
        external_auth,
        upstream_client_certs: Vec::new(),
        ing,
        ann: &parsed.ingress,
        denied,
        report: &mut report,
        namespace: obj.namespace.clone(),
        regex_hosts,
        obj: &obj,
    };
    let mut tls = Vec::new();
    let routes = t.routes(&mut tls);
    let upstream_client_certs = std::mem::take(&mut t.upstream_client_certs);
    let mut passthrough_bindings = Vec::new();
    if parsed.ingress.ssl_passthrough {
        passthrough(
            snap,
            settings,
            ing,
            &obj.namespace,
            &mut report,
            &mut passthrough_bindings,
        );
    }
    IngressPart {
        obj,
        report,
        routes: routes
            .into_iter()
            .map(|(route, keys)| (route.into_shared(), keys))
            .collect(),
        tls,
        upstream_client_certs,
        client_auth,
        passthrough: passthrough_bindings,
    }
}

/// Hosts whose paths are all regular expressions, and the first Ingress that
/// made them so. In ingress-nginx, `use-regex` or `rewrite-target` on any
/// Ingress for a host makes every Prefix and ImplementationSpecific path of
/// that host, on every Ingress, a case-insensitive `~* ^path` location.
/// (Exact paths stay exact here; ingress-nginx turns them into regexes too.)
pub(crate) fn regex_hosts<'a>(
    ours: impl IntoIterator<Item = (&'a Arc<Ingress>, Reads)>,
) -> HashMap<String, ObjectRef> {
    let mut hosts = HashMap::new();
    for (ing, reads) in ours {
        if reads.canary || !reads.regex {
            continue;
        }
        let obj = ObjectRef {
            kind: Kind::Ingress,
            namespace: ing.namespace().unwrap_or_default(),
            name: ing.name_any(),
        };
        let rules = ing.spec.iter().flat_map(|s| s.rules.iter().flatten());
        for rule in rules {
            let host = rule
                .host
                .as_deref()
                .unwrap_or_default()
                .to_ascii_lowercase();
            hosts.entry(host).or_insert_with(|| obj.clone());
        }
    }
    hosts
}

pub(super) fn annotation_diagnostic(d: &AnnotationDiagnostic) -> Diagnostic {
    let field = format!("metadata.annotations[{}]", d.key);
    let msg = d.message.clone();
    // Parsing already says what happens instead for most values; say it
    // once.
    let with = |phrase: &str, said: &str| {
        if msg.contains(said) {
            msg.clone()
        } else {
            format!("{msg}; {phrase}")
        }
    };
    match d.kind {
        DiagnosticKind::Invalid(Fallback::PathDenied) => Diagnostic::error(
            "InvalidAnnotation",
            field,
            with("the Ingress's paths answer 503", "answer 503"),
        ),
        DiagnosticKind::Invalid(Fallback::CanaryUnused) => {
            Diagnostic::error("InvalidAnnotation", field, msg)
        }
        DiagnosticKind::Invalid(Fallback::Ignored) => {
            Diagnostic::warning("InvalidAnnotation", field, with("ignored", "ignored"))
        }
        DiagnosticKind::Unsupported => Diagnostic::warning("UnsupportedAnnotation", field, msg),
        DiagnosticKind::Unknown => Diagnostic::warning("UnknownAnnotation", field, msg),
        DiagnosticKind::Snippet => Diagnostic::warning("SnippetNotAllowed", field, msg),
        DiagnosticKind::Conflict => Diagnostic::warning("ConflictingAnnotation", field, msg),
        DiagnosticKind::Partial => Diagnostic::warning("PartiallySupported", field, msg),
    }
}

struct IngressTranslator<'a> {
    snap: &'a Snapshot,
    settings: &'a Settings,
    tls_hosts: &'a TlsHosts,
    /// The codes, whether upstream answers are intercepted, and the error
    /// backend, when the paths get custom error pages.
    error_pages: Option<(Vec<u16>, bool, Backend)>,
    /// `mirror-target` and its parts, its Service resolved.
    mirror: Option<Mirror>,
    client_auth: Option<Arc<ClientAuth>>,
    /// `auth-type: basic` and its users.
    basic_auth: Option<BasicAuth>,
    jwt: Option<Box<Jwt>>,
    /// `auth-url` and its parts, or the global policy.
    external_auth: Option<Box<ExternalAuth>>,
    /// Client certificates to backends this Ingress's rules name.
    upstream_client_certs: Vec<tls::UpstreamClientCert>,
    ing: &'a Ingress,
    ann: &'a IngressAnnotations,
    /// Why every path answers 503 instead, when an annotation asks for it.
    denied: Option<String>,
    report: &'a mut ObjectReport,
    namespace: String,
    /// Hosts made regex hosts by some Ingress, see [`regex_hosts`].
    regex_hosts: &'a HashMap<String, ObjectRef>,
    obj: &'a ObjectRef,
}

/// A host's rules and, per rule, the (host, path, pathType) a canary may join.
type HostRules = (Vec<Rule>, Vec<(usize, Option<PathKey>)>);

/// Per rule of a route, its index and the (host, path, pathType) a canary
/// may join.
type RuleKeys = Vec<(usize, Option<PathKey>)>;
/// A route and its rules' keys.
type BuiltRoute = (Route, RuleKeys);

impl IngressTranslator<'_> {
    fn source(&self) -> SourceRef {
        SourceRef {
            kind: "Ingress".into(),
            namespace: self.namespace.clone(),
            name: self.ing.name_any(),
            created: created_secs(&self.ing.metadata),
        }
    }

    fn route_id(&self) -> String {
        format!("ingress/{}/{}", self.namespace, self.ing.name_any())
    }

    fn routes(&mut self, tls: &mut Vec<TlsBinding>) -> Vec<BuiltRoute> {
        let Some(spec) = self.ing.spec.as_ref() else {
            return Vec::new();
        };
        for (i, t) in spec.tls.iter().flatten().enumerate() {
            match t.secret_name.as_deref().filter(|s| !s.is_empty()) {
                Some(secret) => tls.push(TlsBinding {
                    hosts: t.hosts.clone().unwrap_or_default(),
                    secret: (self.namespace.clone(), secret.to_owned()),
                    source: self.obj.clone(),
                    field: format!("spec.tls[{i}]"),
                }),
                None => self.report.diagnostics.push(Diagnostic::warning(
                    "InvalidTLS",
                    format!("spec.tls[{i}].secretName"),
                    "no secretName: these hosts are served with the default certificate",
                )),
            }
        }

        // Rules grouped by host, in order; `None` is the no-host group.
        let mut by_host: BTreeMap<Option<String>, HostRules> = BTreeMap::new();
        let mut host_order: Vec<Option<String>> = Vec::new();
        for (i, rule) in spec.rules.iter().flatten().enumerate() {
            let host = match rule.host.as_deref().filter(|h| !h.is_empty()) {
                None => None,
                Some(h) => match Hostname::parse(h) {
                    Some(_) => Some(h.to_ascii_lowercase()),
                    None => {
                        self.report.diagnostics.push(Diagnostic::error(
                            "InvalidHostname",
                            format!("spec.rules[{i}].host"),
                            format!("{h:?} is not a valid host name; this rule is not served"),
                        ));
                        continue;
                    }
                },
            };
            if !by_host.contains_key(&host) {
                host_order.push(host.clone());
            }
            let regex_host = self.regex_host(host.as_deref().unwrap_or_default(), i);
            let entry = by_host.entry(host.clone()).or_default();
            for (j, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
                let field = format!("spec.rules[{i}].http.paths[{j}]");
                self.report.rules_total += 1;
                if let Some(model_rule) = self.path_rule(path, &field, regex_host) {
                    self.report.rules_served += 1;
                    let key = (
                        host.clone().unwrap_or_default(),
                        path.path.clone().unwrap_or_else(|| "/".into()),
                        path.path_type.clone(),
                    );
                    entry.1.push((entry.0.len(), Some(key)));
                    entry.0.push(model_rule);
                }
            }
        }

        let default_backend = spec.default_backend.as_ref().map(|b| {
            self.report.rules_total += 1;
            self.report.rules_served += 1;
            let action = self.forward_action(b, "spec.defaultBackend", "/");
            let mut rule = self.base_rule(Vec::new(), action);
            rule.chain.extend(self.mirror_filter(&rule.action));
            rule.chain.extend(self.error_pages_filter(b, &rule.action));
            rule
        });
        let app_root = self.ann.app_root.as_ref().map(|root| {
            let action = self.checked(
                Action::Redirect(Redirect {
                    scheme: None,
                    hostname: None,
                    port: None,
                    path: Some(PathModifier::ReplaceFullPath(root.clone())),
                    status: RedirectStatus::Found,
                }),
                "app-root",
            );
            self.base_rule(
                vec![RouteMatch {
                    path: PathMatch::Exact("/".into()),
                    ..Default::default()
                }],
                action,
            )
        });

        let aliases: Vec<Hostname> = self
            .ann
            .server_alias
            .iter()
            .filter_map(|a| Hostname::parse(a))
            .collect();
        let mut routes = Vec::new();
        for host in host_order {
            let Some((mut rules, mut keys)) = by_host.remove(&host) else {
                continue;
            };
            if let Some(r) = &app_root {
                rules.push(r.clone());
                keys.push((rules.len() - 1, None));
            }
            if let Some(r) = &default_backend {
                rules.push(r.clone());
                keys.push((rules.len() - 1, None));
            }
            let mut hostnames: Vec<Hostname> =
                host.iter().filter_map(|h| Hostname::parse(h)).collect();
            if !hostnames.is_empty() {
                hostnames.extend(aliases.iter().cloned());
            }
            let https = self.https_filters(&hostnames);
            let mut route =
                Route::new(self.route_id(), hostnames, rules).with_source(self.source());
            route.add_to_every_rule(&https);
            routes.push((route, keys));
        }
        // The default backend also serves hosts no rule names.
        if let Some(r) = default_backend {
            let covered = routes.iter().any(|(route, _)| route.hostnames.is_empty());
            if !covered {
                let mut route =
                    Route::new(self.route_id(), Vec::new(), vec![r]).with_source(self.source());
                route.add_to_every_rule(&self.https_filters(&[]));
                routes.push((route, vec![(0, None)]));
            }
        }
        routes
    }

    /// The filters of every path of a route: `ssl-redirect` (default on)
    /// and HSTS apply to hosts served over TLS, `force-ssl-redirect` to any
    /// host, including the catch-all; then client certificates.
    fn https_filters(&self, hostnames: &[Hostname]) -> Vec<Filter> {
        let a = &self.ann.https;
        let s = self.settings;
        let tls = hostnames.iter().any(|h| self.tls_hosts.covers(h));
        let redirect = (a.force_ssl_redirect || (tls && a.ssl_redirect.unwrap_or(true))).then_some(
            HttpsRedirect {
                port: s.https_redirect_port,
                preserve_trailing_slash: a.preserve_trailing_slash,
            },
        );
        let hsts = (tls && a.hsts.unwrap_or(s.hsts_enabled)).then_some(Hsts {
            max_age: a.hsts_max_age.unwrap_or(s.hsts.max_age),
            include_subdomains: a
                .hsts_include_subdomains
                .unwrap_or(s.hsts.include_subdomains),
            preload: a.hsts_preload.unwrap_or(s.hsts.preload),
        });
        let client_auth = self.client_auth.as_ref().map(|auth| RouteClientAuth {
            policy: auth.id.clone(),
            pass_certificate: a.auth_tls_pass_certificate,
        });
        redirect
            .map(Filter::HttpsRedirect)
            .into_iter()
            .chain(hsts.map(Filter::Hsts))
            .chain(client_auth.map(Filter::ClientCert))
            .collect()
    }

    /// A rule with the annotations that apply to every path.
    fn base_rule(&self, matches: Vec<RouteMatch>, action: Action) -> Rule {
        let mut request = HeaderModifier::default();
        if let Some(prefix) = &self.ann.x_forwarded_prefix {
            request.set.push((
                HeaderName::from_static("x-forwarded-prefix"),
                prefix.clone(),
            ));
        }
        let response = HeaderModifier {
            set: self.ann.custom_headers.clone(),
            ..HeaderModifier::default()
        };
        let defaults = Timeouts::default();
        let mut rule = Rule {
            matches,
            timeouts: Timeouts {
                connect: self.ann.proxy_connect_timeout.unwrap_or(defaults.connect),
                read: self.ann.proxy_read_timeout.unwrap_or(defaults.read),
                send: self.ann.proxy_send_timeout.unwrap_or(defaults.send),
                request: None,
            },
            grpc: self.grpc_options(),
            ..Rule::new(action)
        };
        // Basic auth after the IP lists, external auth after basic auth;
        // the limits after CORS in their stage: see `Filter::stage`.
        rule.chain.splice(
            0..0,
            header_filters(request, response)
                .into_iter()
                .chain(self.ip_access().map(Filter::IpAccess))
                .chain(self.basic_auth.clone().map(Filter::BasicAuth))
                .chain(self.jwt.clone().map(Filter::Jwt))
                .chain(self.external_auth.clone().map(Filter::ExternalAuth))
                .chain(self.cors().map(Filter::Cors))
                .chain(self.limits())
                .chain(self.ann.trace.clone().map(Filter::Trace)),
        );
        rule.set_body_limit(match self.ann.proxy_body_size {
            None => Some(portico_dataplane::model::DEFAULT_MAX_REQUEST_BODY),
            Some(BodySize::Unlimited) => None,
            Some(BodySize::Bytes(n)) => Some(n),
        });
        rule
    }

    /// `limit-rps`, `limit-rpm` (one rate-limit filter, both rates) and
    /// `limit-connections`, per client address, for every path; the state
    /// is the Ingress's (its route id), as ingress-nginx's zones.
    fn limits(&self) -> Vec<Filter> {
        let l = &self.ann.limits;
        let on = |n: Option<u32>| n.filter(|n| *n > 0);
        let bandwidth = on(l.rate_kib).map(|kib| {
            Filter::ResponseRate(ResponseRate {
                bytes_per_second: u64::from(kib) * 1024,
                after: u64::from(l.rate_after_kib.unwrap_or(0)) * 1024,
            })
        });
        let mut out = super::limit_filters(
            &self.route_id(),
            super::LimitRequest {
                rps: on(l.rps),
                rpm: on(l.rpm),
                multiplier: l.burst_multiplier.unwrap_or(DEFAULT_BURST_MULTIPLIER),
                concurrent: on(l.connections),
                key: LimitKey::ClientAddress,
                exempt: l.allowlist.clone(),
                headers: l.headers,
            },
            self.settings,
        );
        out.extend(self.global_limit());
        out.extend(bandwidth);
        out
    }

    /// `global-rate-limit` with its window: counters per Ingress (its
    /// route id), as ingress-nginx's per-Ingress namespace; after the
    /// local limits, so a client they refuse costs no Redis round trip.
    fn global_limit(&self) -> Option<Filter> {
        let g = &self.ann.global_limit;
        let limit = g.limit.filter(|n| *n > 0)?;
        Some(Filter::GlobalRateLimit(GlobalRateLimit {
            id: self.route_id(),
            limit,
            window_secs: g.window_secs?,
            key: g
                .key
                .clone()
                .unwrap_or_else(|| HashKey(vec![HashVar::RemoteAddr])),
            exempt: g.ignored_cidrs.clone(),
            status: self.settings.global_limit_status,
        }))
    }

    /// The Ingress's access lists, each its own or else the global one.
    fn ip_access(&self) -> Option<IpAccess> {
        let allow = self
            .ann
            .allowlist_source_range
            .as_ref()
            .unwrap_or(&self.settings.allowlist_source_range);
        let deny = self
            .ann
            .denylist_source_range
            .as_ref()
            .unwrap_or(&self.settings.denylist_source_range);
        (!allow.is_empty() || !deny.is_empty()).then(|| IpAccess {
            allow: allow.clone(),
            deny: deny.clone(),
        })
    }

    fn grpc_options(&self) -> GrpcOptions {
        let g = &self.ann.grpc;
        GrpcOptions {
            max_message: match g.max_message {
                None => DEFAULT_GRPC_MAX_MESSAGE,
                Some(BodySize::Unlimited) => u64::MAX,
                Some(BodySize::Bytes(n)) => n,
            },
            web: g.web.then(GrpcWeb::default),
        }
    }

    /// The paths' one CORS filter: `enable-cors`'s, or the gRPC-Web
    /// bridge's own; on gRPC-Web paths either lets gRPC-Web clients work.
    fn cors(&self) -> Option<Cors> {
        let g = &self.ann.grpc;
        let mut cors = match &self.ann.cors {
            Some(cors) => cors.clone(),
            None if g.web => {
                let mut cors = Cors::grpc_web();
                cors.allow_origins = g.allow_origins.clone();
                for (list, extra) in [
                    (&mut cors.allow_headers, &g.allow_headers),
                    (&mut cors.expose_headers, &g.expose_headers),
                ] {
                    for name in extra {
                        if !list.contains(name) {
                            list.push(name.clone());
                        }
                    }
                }
                cors.allow_credentials = g.allow_credentials;
                if let Some(max_age) = g.max_age {
                    cors.max_age = max_age.as_secs();
                }
                cors
            }
            None => return None,
        };
        if g.web {
            cors.add_grpc_web_headers();
        }
        Some(cors)
    }

    /// Whether the paths of `host` are regular expressions; says so when
    /// another Ingress made them so.
    fn regex_host(&mut self, host: &str, rule: usize) -> bool {
        let own = self.ann.use_regex || self.ann.rewrite_target.is_some();
        match self.regex_hosts.get(host) {
            Some(by) if !own => {
                self.report.diagnostics.push(Diagnostic::warning(
                    "RegexHost",
                    format!("spec.rules[{rule}].host"),
                    format!(
                        "{by} sets use-regex or rewrite-target for host {host:?}, so this rule's Prefix paths are case-insensitive regular expressions matched from the start, as in ingress-nginx"
                    ),
                ));
                true
            }
            Some(_) => true,
            None => own,
        }
    }

    fn path_rule(&mut self, path: &HTTPIngressPath, field: &str, regex_mode: bool) -> Option<Rule> {
        let value = path.path.clone().unwrap_or_default();
        let value = if value.is_empty() {
            "/".to_owned()
        } else {
            value
        };
        let path_match = match path.path_type.as_str() {
            "Exact" => PathMatch::Exact(value.clone()),
            "Prefix" | "ImplementationSpecific" if regex_mode => {
                // nginx `location ~* ^path`: case-insensitive, from the start.
                let pattern = format!("(?i:{value}).*");
                if let Err(e) = check_regex(&pattern) {
                    self.report.diagnostics.push(Diagnostic::error(
                        "InvalidRegex",
                        format!("{field}.path"),
                        format!("{value:?} is not a valid regular expression ({e}); this path is not served"),
                    ));
                    return None;
                }
                PathMatch::RegularExpression(pattern)
            }
            "Prefix" | "ImplementationSpecific" => PathMatch::Prefix(value.clone()),
            other => {
                self.report.diagnostics.push(Diagnostic::error(
                    "InvalidPathType",
                    format!("{field}.pathType"),
                    format!("{other:?} is not Exact, Prefix or ImplementationSpecific; this path is not served"),
                ));
                return None;
            }
        };
        if !value.starts_with('/') {
            self.report.diagnostics.push(Diagnostic::error(
                "InvalidPath",
                format!("{field}.path"),
                format!("{value:?} must start with '/'; this path is not served"),
            ));
            return None;
        }
        let matches = vec![RouteMatch {
            path: path_match,
            ..Default::default()
        }];
        // The sticky cookie's default path: the Ingress path, when it is one.
        let cookie_path = match &matches[0].path {
            PathMatch::RegularExpression(_) => "/".to_owned(),
            _ if value
                .bytes()
                .all(|b| b.is_ascii_graphic() && b != b';' && b != b',') =>
            {
                value.clone()
            }
            _ => "/".to_owned(),
        };
        let action = self.path_action(
            &path.backend,
            &value,
            &cookie_path,
            &format!("{field}.backend"),
        );
        let mut rule = self.base_rule(matches, action);
        rule.chain.extend(self.mirror_filter(&rule.action));
        rule.chain
            .extend(self.error_pages_filter(&path.backend, &rule.action));
        Some(rule)
    }

    /// The Ingress's mirror on a forwarding path, counted under its route;
    /// listed after the body limit (set by `base_rule`), before the error
    /// pages, as nginx checks the body size first.
    fn mirror_filter(&self, action: &Action) -> Option<Filter> {
        let mut m = self.mirror.clone()?;
        if !matches!(action, Action::Forward(_)) {
            return None;
        }
        m.route = self.route_id();
        Some(Filter::Mirror(Box::new(m)))
    }

    /// The path's custom error pages; the error backend is told the
    /// path's own Service and port as written. A redirect has no errors
    /// to render.
    fn error_pages_filter(&self, backend: &IngressBackend, action: &Action) -> Option<Filter> {
        let (codes, intercept_upstream, error_backend) = self.error_pages.as_ref()?;
        if matches!(action, Action::Redirect(_)) {
            return None;
        }
        let service = backend.service.as_ref();
        let port = service
            .and_then(|s| s.port.as_ref())
            .map(|p| match (&p.number, &p.name) {
                (Some(n), _) => n.to_string(),
                (None, Some(name)) => name.clone(),
                (None, None) => String::new(),
            });
        Some(Filter::ErrorPages(Box::new(ErrorPages {
            codes: codes.clone(),
            intercept_upstream: *intercept_upstream,
            backend: error_backend.clone(),
            origin: ErrorOrigin {
                namespace: self.namespace.clone(),
                ingress: self.ing.name_any(),
                service: service.map(|s| s.name.clone()).unwrap_or_default(),
                port: port.unwrap_or_default(),
            },
        })))
    }

    fn path_action(
        &mut self,
        backend: &IngressBackend,
        path: &str,
        cookie_path: &str,
        field: &str,
    ) -> Action {
        if let Some(reason) = &self.denied {
            return Action::Deny {
                reason: reason.clone(),
            };
        }
        // ingress-nginx: temporal-redirect wins over permanent-redirect.
        let redirect = match (&self.ann.temporal_redirect, &self.ann.permanent_redirect) {
            (Some(r), _) => Some((r, "temporal-redirect")),
            (None, Some(r)) => Some((r, "permanent-redirect")),
            (None, None) => None,
        };
        if let Some((r, annotation)) = redirect {
            return self.checked(redirect_action(r), annotation);
        }
        let mut action = self.forward_action(backend, field, cookie_path);
        if let Action::Forward(fwd) = &mut action {
            let path_rewrite =
                self.ann
                    .rewrite_target
                    .as_ref()
                    .map(|t| PathModifier::RegexReplace {
                        pattern: path.to_owned(),
                        replacement: substitutions(&t.segments),
                    });
            if path_rewrite.is_some() || self.ann.upstream_vhost.is_some() {
                fwd.rewrite = Some(UrlRewrite {
                    hostname: self.ann.upstream_vhost.clone(),
                    path: path_rewrite,
                });
            }
        }
        self.checked(action, "rewrite-target")
    }

    /// The dataplane's own check of what goes into a `Location` or the
    /// forwarded request. The annotation parsers are stricter, so this only
    /// keeps a drift between the two from reaching requests (which would
    /// answer 400): the paths answer 503 and the annotation is named.
    fn checked(&mut self, action: Action, annotation: &str) -> Action {
        let invalid = match &action {
            Action::Redirect(r) => r.check().err(),
            Action::Forward(f) => f.rewrite.as_ref().and_then(|r| r.check().err()),
            Action::Deny { .. } => None,
        };
        let Some(e) = invalid else {
            return action;
        };
        let annotation = match (&action, e.field) {
            (Action::Forward(_), "hostname") => "upstream-vhost",
            _ => annotation,
        };
        let reason = format!("{annotation}: {}", e.reason);
        self.report.diagnostics.push(Diagnostic::error(
            "InvalidAnnotation",
            format!("metadata.annotations[{annotation}]"),
            format!("{}; the Ingress's paths answer 503", e.reason),
        ));
        Action::Deny { reason }
    }

    fn forward_action(
        &mut self,
        backend: &IngressBackend,
        field: &str,
        cookie_path: &str,
    ) -> Action {
        let (protocol, tls) = match self.ann.backend_protocol {
            // The gRPC-Web bridge speaks gRPC, so HTTP/2, to the backend.
            BackendProtocol::Http if self.ann.grpc.web => (Protocol::H2c, false),
            BackendProtocol::Https if self.ann.grpc.web => (Protocol::H2c, true),
            BackendProtocol::Http => (Protocol::Http1, false),
            BackendProtocol::H2c | BackendProtocol::Grpc => (Protocol::H2c, false),
            BackendProtocol::Https => (Protocol::Http1, true),
            BackendProtocol::Grpcs => (Protocol::H2c, true),
        };
        let upstream_tls = if tls {
            let service = backend.service.as_ref().map_or("", |s| s.name.as_str());
            let default_name = format!("{service}.{}.svc", self.namespace);
            match tls::upstream_tls(self.snap, &self.ann.upstream_tls, default_name) {
                Ok((t, client_cert)) => {
                    self.upstream_client_certs.extend(client_cert);
                    Some(Arc::new(t))
                }
                Err(reason) => {
                    self.report.diagnostics.push(Diagnostic::error(
                        crate::translate::REASON_INVALID_CERTIFICATE_REF,
                        "metadata.annotations[proxy-ssl-secret]",
                        format!("{reason}; these paths answer 503 rather than skip verification"),
                    ));
                    return Action::Deny { reason };
                }
            }
        } else {
            None
        };
        let grpc = matches!(
            self.ann.backend_protocol,
            BackendProtocol::Grpc | BackendProtocol::Grpcs
        );
        let backends = match resolve_ingress_backend(self.snap, &self.namespace, backend, protocol)
        {
            Ok(b) => {
                let mut b = self.with_default_backend(b, protocol);
                if grpc {
                    backends::grpc_health_checks(&mut b);
                }
                b.set_balance(backends::balance(&self.ann.balance, cookie_path));
                vec![b]
            }
            Err((reason, message)) => {
                self.report.diagnostics.push(Diagnostic::warning(
                    reason,
                    field.to_owned(),
                    format!("{message}; requests answer 503"),
                ));
                Vec::new()
            }
        };
        let r = &self.ann.retry;
        let d = RetryPolicy::default();
        Action::Forward(Forward {
            upstream_tls,
            retry: RetryPolicy {
                on: r.on.unwrap_or(d.on),
                tries: r.tries.unwrap_or(d.tries),
                timeout: r.timeout.unwrap_or(d.timeout),
                ..d
            },
            ..Forward::to(backends)
        })
    }

    /// ingress-nginx `default-backend`: serves when the Service has no ready
    /// endpoint.
    fn with_default_backend(&mut self, b: Backend, protocol: Protocol) -> Backend {
        let Some(name) = &self.ann.default_backend else {
            return b;
        };
        if !b.endpoints.is_empty() {
            return b;
        }
        // The default backend's first port, as ingress-nginx uses it.
        let port = backends::first_port(self.snap, &self.namespace, name);
        let resolved = port
            .ok_or_else(|| {
                format!(
                    "Service {}/{name} not found or has no ports",
                    self.namespace
                )
            })
            .and_then(|port| {
                backends::resolve(
                    self.snap,
                    &self.namespace,
                    name,
                    &PortRef::Number(port),
                    protocol,
                    b.weight,
                )
                .map_err(|e| e.message)
            });
        match resolved {
            Ok(fallback) => fallback,
            Err(message) => {
                self.report.diagnostics.push(Diagnostic::warning(
                    "BackendNotFound",
                    "metadata.annotations[default-backend]",
                    message,
                ));
                b
            }
        }
    }
}

/// What an Ingress's paths get for custom error pages: its own
/// `custom-http-errors` or else `--custom-http-errors`, rendered by its
/// `default-backend` or else `--default-backend-service` (ingress-nginx
/// falls back the same way when the annotation's Service is missing).
/// `None`: no codes, or no error backend (reported when the Ingress asked).
fn error_pages(
    snap: &Snapshot,
    settings: &Settings,
    ann: &IngressAnnotations,
    namespace: &str,
    global: Option<&Backend>,
    report: &mut ObjectReport,
) -> Option<(Vec<u16>, bool, Backend)> {
    let codes = ann
        .custom_http_errors
        .as_ref()
        .unwrap_or(&settings.custom_http_errors);
    if codes.is_empty() {
        if ann.disable_proxy_intercept_errors {
            report.diagnostics.push(Diagnostic::warning(
                "InvalidAnnotation",
                "metadata.annotations[disable-proxy-intercept-errors]",
                "has no effect without custom-http-errors (or --custom-http-errors); ignored",
            ));
        }
        return None;
    }
    let own = ann.default_backend.as_ref().and_then(|name| {
        let r = backends::ServiceRef {
            namespace: namespace.to_owned(),
            name: name.clone(),
            port: None,
        };
        backends::error_backend(snap, &r)
            .map_err(|e| {
                let instead = if global.is_some() {
                    "custom error pages use --default-backend-service"
                } else {
                    "no custom error pages are served"
                };
                report.diagnostics.push(Diagnostic::warning(
                    e.reason,
                    "metadata.annotations[default-backend]",
                    format!("{}; {instead}", e.message),
                ));
            })
            .ok()
    });
    let Some(backend) = own.or_else(|| global.cloned()) else {
        if ann.custom_http_errors.is_some() && ann.default_backend.is_none() {
            report.diagnostics.push(Diagnostic::warning(
                "NoDefaultBackend",
                "metadata.annotations[custom-http-errors]",
                "no default-backend annotation and no --default-backend-service render the pages; answers pass through unchanged",
            ));
        }
        return None;
    };
    Some((codes.clone(), !ann.disable_proxy_intercept_errors, backend))
}

/// `ssl-passthrough`: each host's TLS to the backend of its first path.
fn passthrough(
    snap: &Snapshot,
    settings: &Settings,
    ing: &Ingress,
    namespace: &str,
    report: &mut ObjectReport,
    out: &mut Vec<PassthroughBinding>,
) {
    let field = "metadata.annotations[ssl-passthrough]";
    if !settings.ssl_passthrough {
        report.diagnostics.push(Diagnostic::warning(
            "PassthroughDisabled",
            field,
            "TLS passthrough is off (--enable-ssl-passthrough); the hosts are terminated as usual",
        ));
        return;
    }
    let rules = ing.spec.as_ref().and_then(|s| s.rules.as_ref());
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let Some(host) = rule.host.as_deref().and_then(Hostname::parse) else {
            continue;
        };
        let Some(path) = rule.http.as_ref().and_then(|h| h.paths.first()) else {
            continue;
        };
        match resolve_ingress_backend(snap, namespace, &path.backend, Protocol::Http1) {
            Ok(b) => out.push(PassthroughBinding {
                name: b.name,
                hosts: vec![host],
                endpoints: b.endpoints,
            }),
            Err((reason, message)) => report.diagnostics.push(Diagnostic::warning(
                reason,
                format!("spec.rules[{i}].http.paths[0].backend"),
                format!("{message}; TLS for {host} is closed"),
            )),
        }
    }
}

fn resolve_ingress_backend(
    snap: &Snapshot,
    namespace: &str,
    backend: &IngressBackend,
    protocol: Protocol,
) -> Result<Backend, (&'static str, String)> {
    let Some(svc) = &backend.service else {
        return Err((
            "UnsupportedBackend",
            "only Service backends are supported, not resource backends".into(),
        ));
    };
    let port = match svc.port.as_ref() {
        Some(p) => match (&p.number, &p.name) {
            (Some(n), _) => PortRef::Number(*n),
            (None, Some(name)) => PortRef::Name(name.clone()),
            (None, None) => {
                return Err((
                    "BackendNotFound",
                    "service port has neither number nor name".into(),
                ));
            }
        },
        None => return Err(("BackendNotFound", "service port is missing".into())),
    };
    backends::resolve(snap, namespace, &svc.name, &port, protocol, 1)
        .map_err(|e| (e.reason, e.message))
}

fn redirect_action(r: &RedirectTarget) -> Action {
    let scheme = match r.url.scheme_str() {
        Some("https") => Scheme::Https,
        _ => Scheme::Http,
    };
    let status = match r.code {
        301 => RedirectStatus::MovedPermanently,
        303 => RedirectStatus::SeeOther,
        307 => RedirectStatus::TemporaryRedirect,
        308 => RedirectStatus::PermanentRedirect,
        _ => RedirectStatus::Found,
    };
    // As written: ingress-nginx answers `Location: http://host` for a URL
    // without a path, not `http://host/`.
    let path = if r.bare {
        String::new()
    } else {
        r.url
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned())
    };
    Action::Redirect(Redirect {
        scheme: Some(scheme),
        hostname: r.url.host().map(str::to_owned),
        port: r.url.port_u16(),
        path: Some(PathModifier::ReplaceFullPath(path)),
        status,
    })
}

#[cfg(test)]
#[test]
fn redirect_urls_keep_their_path_as_written() {
    let path_of = |url: &str| {
        let r = RedirectTarget {
            url: url.parse().unwrap(),
            code: 301,
            bare: !url.split_once("://").unwrap().1.contains(['/', '?']),
        };
        match redirect_action(&r) {
            Action::Redirect(Redirect {
                path: Some(PathModifier::ReplaceFullPath(p)),
                ..
            }) => p,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(path_of("https://new.test"), "");
    assert_eq!(path_of("https://new.test/"), "/");
    assert_eq!(path_of("https://new.test/a?b=1"), "/a?b=1");
    assert_eq!(path_of("https://new.test?b=1"), "?b=1");
}

fn substitutions(segments: &[RewriteSegment]) -> Vec<Substitution> {
    segments
        .iter()
        .map(|s| match s {
            RewriteSegment::Literal(l) => Substitution::Literal(l.clone()),
            RewriteSegment::Capture(n) => Substitution::Capture(*n),
        })
        .collect()
}

/// A canary Ingress joins the main Ingress serving the same host, path and
/// pathType (ingress-nginx); its own other annotations do not apply.
fn attach_canary(
    snap: &Snapshot,
    ing: &Ingress,
    canary: &CanaryAnnotations,
    protocol: BackendProtocol,
    index: &HashMap<PathKey, (usize, usize)>,
    out: &mut Translation,
    report: &mut ObjectReport,
) {
    let namespace = ing.namespace().unwrap_or_default();
    let grpc = protocol == BackendProtocol::Grpc;
    let protocol = match protocol {
        BackendProtocol::H2c | BackendProtocol::Grpc => Protocol::H2c,
        _ => Protocol::Http1,
    };
    let header = canary.by_header.as_ref().map(|name| CanaryHeader {
        name: name.clone(),
        value: match (&canary.by_header_value, &canary.by_header_pattern) {
            (Some(v), _) => CanaryHeaderValue::Exact(v.clone()),
            (None, Some(p)) => CanaryHeaderValue::Pattern(p.clone()),
            (None, None) => CanaryHeaderValue::AlwaysNever,
        },
    });
    let Some(spec) = ing.spec.as_ref() else {
        return;
    };
    for (i, rule) in spec.rules.iter().flatten().enumerate() {
        let host = rule.host.clone().unwrap_or_default().to_ascii_lowercase();
        for (j, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let field = format!("spec.rules[{i}].http.paths[{j}]");
            report.rules_total += 1;
            let key = (
                host.clone(),
                path.path.clone().unwrap_or_else(|| "/".into()),
                path.path_type.clone(),
            );
            let Some(&(route_idx, rule_idx)) = index.get(&key) else {
                report.diagnostics.push(Diagnostic::warning(
                    "CanaryWithoutMain",
                    field,
                    format!(
                        "no non-canary Ingress serves host {:?} path {:?} ({}); this canary path is not served",
                        key.0, key.1, key.2
                    ),
                ));
                continue;
            };
            let backend = match resolve_ingress_backend(snap, &namespace, &path.backend, protocol) {
                Ok(mut b) => {
                    if protocol == Protocol::H2c && grpc {
                        backends::grpc_health_checks(&mut b);
                    }
                    b
                }
                Err((reason, message)) => {
                    report.diagnostics.push(Diagnostic::warning(
                        reason,
                        format!("{field}.backend"),
                        message,
                    ));
                    continue;
                }
            };
            let Some(main) = out
                .config
                .routes
                .get_mut(route_idx)
                .and_then(|r| Arc::make_mut(r).rules.get_mut(rule_idx))
            else {
                continue;
            };
            let Action::Forward(fwd) = &mut main.action else {
                report.diagnostics.push(Diagnostic::warning(
                    "CanaryWithoutMain",
                    field,
                    "the main Ingress's path does not forward (it redirects or is denied); this canary path is not served",
                ));
                continue;
            };
            if fwd.canary.is_some() {
                report.diagnostics.push(Diagnostic::warning(
                    "Conflicted",
                    field,
                    "another canary Ingress already serves this path; only one canary per path is used",
                ));
                continue;
            }
            // The weighted split picks the canary; the main path's policy
            // picks its endpoint (and, with cookie affinity, names the
            // session cookie both sides share).
            let mut backend = backend;
            if let Some(main_backend) = fwd.backends.first() {
                backend.set_balance(main_backend.policy.balance.clone());
            }
            fwd.canary = Some(Box::new(Canary {
                backends: vec![backend],
                header: header.clone(),
                cookie: canary.by_cookie.clone(),
                weight: canary.weight.unwrap_or(0),
                weight_total: canary.weight_total,
                affinity: canary.affinity,
            }));
            report.rules_served += 1;
        }
    }
}
