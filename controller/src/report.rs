//! `portico report`: how a running cluster's Ingresses would fare under
//! Portico, before moving them. Every annotation of every selected Ingress
//! is classed (supported, partly, not supported, snippet, invalid,
//! unknown), paths whose meaning changes between ingress-nginx and Portico
//! are listed, and the translation's other findings shown, with a summary
//! per namespace.
//!
//! It reads Ingresses, IngressClasses and Services (list only, no watch, no
//! Secrets) and writes nothing. The classing and the path analysis are a
//! pure function of the objects ([`build`]), tested without a cluster.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::sync::Arc;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use kube::ResourceExt;
use kube::api::{Api, ListParams};
use serde::Serialize;

use crate::annotations::{self, DiagnosticKind, NGINX_PREFIX, PORTICO_PREFIX, Support};
use crate::cli::{ReportArgs, ReportFormat};
use crate::diagnostics::{Kind, ObjectRef, Severity};
use crate::snapshot::{Object, Snapshot};
use crate::translate::class::{DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION, assumed_class};
use crate::translate::{Settings, regex_hosts, translate};

/// Objects per list call: a large cluster is read in pages, not one answer.
const PAGE: u32 = 500;

/// Reasons about Secrets, which the report does not read (least privilege):
/// reporting them would only say "not read".
const SECRET_REASONS: &[&str] = &["InvalidTLS"];

/// Reads the cluster and renders the report.
pub async fn run(args: &ReportArgs) -> anyhow::Result<String> {
    let client = crate::source::cluster::client(args.kubeconfig.as_deref()).await?;
    let ingresses: Api<Ingress> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let services: Api<Service> = match &args.namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let classes: Api<IngressClass> = Api::all(client);
    let input = Input {
        ingresses: list_all(&ingresses).await.context("listing Ingresses")?,
        classes: list_all(&classes).await.context("listing IngressClasses")?,
        services: list_all(&services).await.context("listing Services")?,
    };
    let report = build(input, &args.classes);
    Ok(match args.output {
        ReportFormat::Text => report.text(),
        ReportFormat::Markdown => report.markdown(),
        ReportFormat::Json => report.json(),
    })
}

async fn list_all<K>(api: &Api<K>) -> anyhow::Result<Vec<Arc<K>>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let mut out = Vec::new();
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = api.list(&params).await?;
        out.extend(page.items.into_iter().map(Arc::new));
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(out),
        }
    }
}

/// What the report reads.
#[derive(Default)]
pub struct Input {
    pub ingresses: Vec<Arc<Ingress>>,
    pub classes: Vec<Arc<IngressClass>>,
    pub services: Vec<Arc<Service>>,
}

/// How Portico treats one annotation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Supported,
    /// Implemented with a documented difference.
    Partly,
    NotSupported,
    /// Raw nginx configuration: never run.
    Snippet,
    /// Implemented, but this value cannot be used.
    Invalid,
    /// Not an annotation ingress-nginx or Portico knows.
    Unknown,
}

impl Status {
    const ALL: [Status; 6] = [
        Status::Supported,
        Status::Partly,
        Status::NotSupported,
        Status::Snippet,
        Status::Invalid,
        Status::Unknown,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Status::Supported => "supported",
            Status::Partly => "partly",
            Status::NotSupported => "not supported",
            Status::Snippet => "snippet (never run)",
            Status::Invalid => "invalid",
            Status::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    /// The classes asked for; empty: every Ingress.
    pub classes: Vec<String>,
    pub namespaces: Vec<NamespaceSummary>,
    pub ingresses: Vec<IngressReport>,
}

#[derive(Debug, Default, Serialize)]
pub struct NamespaceSummary {
    pub namespace: String,
    pub ingresses: usize,
    /// Annotations by [`Status`] (serialized by its kebab-case name).
    pub annotations: BTreeMap<Status, usize>,
    pub path_changes: usize,
    /// Translation findings of severity error: something would not be
    /// served as written.
    pub errors: usize,
}

#[derive(Debug, Serialize)]
pub struct IngressReport {
    pub namespace: String,
    pub name: String,
    /// The class it names (or the default class it falls to), if any.
    pub class: Option<String>,
    pub annotations: Vec<AnnotationRow>,
    pub path_changes: Vec<PathChange>,
    /// The translation's findings not about one annotation.
    pub findings: Vec<FindingRow>,
}

#[derive(Debug, Serialize)]
pub struct AnnotationRow {
    pub key: String,
    pub status: Status,
    /// The difference (partly), the reason (invalid, not supported), or
    /// empty.
    pub detail: String,
}

/// A path that matches different requests under Portico than under
/// ingress-nginx.
#[derive(Debug, Serialize)]
pub struct PathChange {
    /// `spec.rules[i].http.paths[j]`.
    pub field: String,
    pub host: String,
    pub path: String,
    pub change: String,
}

#[derive(Debug, Serialize)]
pub struct FindingRow {
    pub severity: &'static str,
    pub field: String,
    pub reason: &'static str,
    pub message: String,
}

/// The report for `input`: Ingresses whose class is in `classes` (all when
/// empty), each translated as if Portico served it.
pub fn build(input: Input, classes: &[String]) -> Report {
    let default_class = input
        .classes
        .iter()
        .find(|c| {
            c.annotations()
                .get(DEFAULT_CLASS_ANNOTATION)
                .is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
        })
        .map(|c| c.name_any());
    let settings = Settings::default();
    let selected: Vec<(Arc<Ingress>, Option<String>)> = input
        .ingresses
        .into_iter()
        .filter_map(|ing| {
            let class = class_of(&ing, default_class.as_deref());
            let wanted = classes.is_empty() || class.as_ref().is_some_and(|c| classes.contains(c));
            wanted.then_some((ing, class))
        })
        .collect();

    // Translate every selected Ingress as Portico's own: its class renamed
    // to the one Portico would own, that class assumed.
    let objects = selected
        .iter()
        .map(|(ing, _)| Object::Ingress(Arc::new(as_ours(ing, &settings))))
        .chain([Object::IngressClass(Arc::new(assumed_class(&settings)))])
        .chain(input.services.into_iter().map(Object::Service));
    let snap = Snapshot::from_objects(objects);
    let t = translate(&snap, &settings);

    let parsed: Vec<_> = selected
        .iter()
        .map(|(ing, _)| (ing, annotations::parse(ing.annotations())))
        .collect();
    let regex = regex_hosts(
        parsed
            .iter()
            .map(|(ing, p)| (*ing, crate::translate::Reads::of(p))),
    );

    let mut ingresses = Vec::new();
    for ((ing, class), (_, parsed)) in selected.iter().zip(&parsed) {
        let obj = ObjectRef {
            kind: Kind::Ingress,
            namespace: ing.namespace().unwrap_or_default(),
            name: ing.name_any(),
        };
        let findings = t
            .reports
            .get(&obj)
            .map(|r| {
                r.diagnostics
                    .iter()
                    .filter(|d| {
                        !d.field.starts_with("metadata.annotations[")
                            && !SECRET_REASONS.contains(&d.reason)
                    })
                    .map(|d| FindingRow {
                        severity: d.severity.as_str(),
                        field: d.field.clone(),
                        reason: d.reason,
                        message: d.message.clone(),
                    })
                    .collect()
            })
            .unwrap_or_default();
        ingresses.push(IngressReport {
            namespace: obj.namespace,
            name: obj.name,
            class: class.clone(),
            annotations: annotation_rows(ing, parsed),
            path_changes: path_changes(ing, &regex),
            findings,
        });
    }
    Report {
        classes: classes.to_vec(),
        namespaces: summarise(&ingresses),
        ingresses,
    }
}

/// The class an Ingress names, else the default class's name.
fn class_of(ing: &Ingress, default_class: Option<&str>) -> Option<String> {
    ing.spec
        .as_ref()
        .and_then(|s| s.ingress_class_name.clone())
        .or_else(|| {
            ing.annotations()
                .get(LEGACY_CLASS_ANNOTATION)
                .map(|v| v.trim().to_owned())
        })
        .or_else(|| default_class.map(str::to_owned))
}

fn as_ours(ing: &Ingress, settings: &Settings) -> Ingress {
    let mut ing = ing.clone();
    ing.annotations_mut().remove(LEGACY_CLASS_ANNOTATION);
    let spec = ing.spec.get_or_insert_with(Default::default);
    spec.ingress_class_name = Some(settings.ingress_class.clone());
    ing
}

/// One row per annotation under either prefix, classed by the registry and
/// by what parsing this Ingress's values said.
fn annotation_rows(ing: &Ingress, parsed: &annotations::Parsed) -> Vec<AnnotationRow> {
    let mut rows = Vec::new();
    for key in ing.annotations().keys() {
        let Some(name) = key
            .strip_prefix(PORTICO_PREFIX)
            .or_else(|| key.strip_prefix(NGINX_PREFIX))
        else {
            continue;
        };
        let said = parsed.diagnostics.iter().find(|d| &d.key == key);
        let (status, detail) = match said.map(|d| (d.kind, &d.message)) {
            Some((DiagnosticKind::Invalid(_), m)) => (Status::Invalid, m.clone()),
            Some((DiagnosticKind::Unsupported, m)) => (Status::NotSupported, m.clone()),
            Some((DiagnosticKind::Snippet, m)) => (Status::Snippet, m.clone()),
            Some((DiagnosticKind::Unknown, m)) => (Status::Unknown, m.clone()),
            Some((DiagnosticKind::Partial, m)) => (Status::Partly, m.clone()),
            // A conflict between spellings: the annotation itself is
            // implemented; say which applies.
            Some((DiagnosticKind::Conflict, m)) => (registry_status(name).0, m.clone()),
            None => registry_status(name),
        };
        rows.push(AnnotationRow {
            key: key.clone(),
            status,
            detail,
        });
    }
    rows
}

/// The registry's word on an annotation Portico implements.
fn registry_status(name: &str) -> (Status, String) {
    match annotations::support_of(name) {
        Some(Support::Full) => (Status::Supported, String::new()),
        Some(Support::Partly(diff)) => (Status::Partly, diff.to_owned()),
        None => (Status::Unknown, String::new()),
    }
}

/// Paths whose matching differs from ingress-nginx's:
/// - an `ImplementationSpecific` path was an nginx string prefix (`/foo`
///   also matched `/foobar`); Portico matches it as `Prefix`, by segment;
/// - a path ending in `/` made nginx answer the path without its slash
///   with a 301 to the slash form; Portico serves it (`Prefix`) or not
///   (`Exact`) without a redirect;
/// - an `Exact` path on a host where an Ingress sets `use-regex` or
///   `rewrite-target` became a case-insensitive regular expression in
///   ingress-nginx; Portico keeps it exact.
fn path_changes(ing: &Ingress, regex: &HashMap<String, ObjectRef>) -> Vec<PathChange> {
    let mut out = Vec::new();
    let rules = ing.spec.iter().flat_map(|s| s.rules.iter().flatten());
    for (i, rule) in rules.enumerate() {
        let host = rule.host.clone().unwrap_or_default();
        let regex_by = regex.get(&host.to_ascii_lowercase());
        let paths = rule.http.iter().flat_map(|h| h.paths.iter());
        for (j, p) in paths.enumerate() {
            let path = p.path.clone().unwrap_or_else(|| "/".into());
            let kind = p.path_type.as_str();
            let mut changes = Vec::new();
            match (kind, regex_by) {
                ("Exact", Some(by)) => changes.push(format!(
                    "ingress-nginx matched this Exact path as a case-insensitive regular expression (Ingress {}/{} sets use-regex or rewrite-target on the host); Portico matches it exactly",
                    by.namespace, by.name
                )),
                ("ImplementationSpecific", None) if path != "/" && !path.ends_with('/') => {
                    changes.push(format!(
                        "ingress-nginx matched {path:?} as a string prefix (also {path}x...); Portico matches whole segments ({path} and {path}/...), as Prefix"
                    ));
                }
                _ => {}
            }
            if regex_by.is_none() && path.len() > 1 && path.ends_with('/') {
                let bare = path.trim_end_matches('/');
                let now = if kind == "Exact" {
                    "Portico answers it 404 from this path (no redirect)"
                } else {
                    "Portico serves it from this path, without a redirect"
                };
                changes.push(format!(
                    "ingress-nginx answered {bare:?} with a 301 redirect to {path:?}; {now}"
                ));
            }
            for change in changes {
                out.push(PathChange {
                    field: format!("spec.rules[{i}].http.paths[{j}]"),
                    host: host.clone(),
                    path: path.clone(),
                    change,
                });
            }
        }
    }
    out
}

fn summarise(ingresses: &[IngressReport]) -> Vec<NamespaceSummary> {
    let mut by_ns: BTreeMap<&str, NamespaceSummary> = BTreeMap::new();
    for ing in ingresses {
        let s = by_ns
            .entry(&ing.namespace)
            .or_insert_with(|| NamespaceSummary {
                namespace: ing.namespace.clone(),
                ..Default::default()
            });
        s.ingresses += 1;
        for row in &ing.annotations {
            *s.annotations.entry(row.status).or_default() += 1;
        }
        s.path_changes += ing.path_changes.len();
        s.errors += ing
            .findings
            .iter()
            .filter(|f| f.severity == Severity::Error.as_str())
            .count();
    }
    by_ns.into_values().collect()
}

// === rendering ===

impl Report {
    fn selection(&self) -> String {
        if self.classes.is_empty() {
            "all Ingresses".into()
        } else {
            format!("Ingresses of class {}", self.classes.join(", "))
        }
    }

    /// Annotation counts over the whole report, by status.
    fn totals(&self) -> BTreeMap<Status, usize> {
        let mut t = BTreeMap::new();
        for row in self.ingresses.iter().flat_map(|i| &i.annotations) {
            *t.entry(row.status).or_default() += 1;
        }
        t
    }

    fn counts_line(&self, counts: &BTreeMap<Status, usize>) -> String {
        Status::ALL
            .iter()
            .map(|s| format!("{} {}", counts.get(s).copied().unwrap_or(0), s.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }

    pub fn text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "portico report: {} ({} Ingresses in {} namespaces)",
            self.selection(),
            self.ingresses.len(),
            self.namespaces.len()
        );
        let _ = writeln!(out, "annotations: {}", self.counts_line(&self.totals()));
        for ing in &self.ingresses {
            let _ = writeln!(
                out,
                "\nIngress {}/{} (class {})",
                ing.namespace,
                ing.name,
                ing.class.as_deref().unwrap_or("none")
            );
            for row in &ing.annotations {
                let _ = write!(out, "  {:<20} {}", row.status.as_str(), row.key);
                if !row.detail.is_empty() {
                    let _ = write!(out, ": {}", row.detail);
                }
                out.push('\n');
            }
            for c in &ing.path_changes {
                let _ = writeln!(
                    out,
                    "  path changes        {} {}: {}",
                    c.field, c.path, c.change
                );
            }
            for f in &ing.findings {
                let _ = writeln!(
                    out,
                    "  {:<20} {} {}: {}",
                    f.severity, f.field, f.reason, f.message
                );
            }
        }
        out.push_str("\nper namespace:\n");
        for ns in &self.namespaces {
            let _ = writeln!(
                out,
                "  {}: {} Ingresses, {} path changes, {} errors; annotations {}",
                ns.namespace,
                ns.ingresses,
                ns.path_changes,
                ns.errors,
                ns_counts(ns)
            );
        }
        out
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "# Portico migration report\n");
        let _ = writeln!(
            out,
            "{}: {} Ingresses in {} namespaces. Annotations: {}.\n",
            self.selection(),
            self.ingresses.len(),
            self.namespaces.len(),
            self.counts_line(&self.totals())
        );
        out.push_str("## Per namespace\n\n| namespace | Ingresses | path changes | errors | annotations |\n|---|---|---|---|---|\n");
        for ns in &self.namespaces {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} |",
                md(&ns.namespace),
                ns.ingresses,
                ns.path_changes,
                ns.errors,
                ns_counts(ns)
            );
        }
        for ing in &self.ingresses {
            let _ = writeln!(
                out,
                "\n## Ingress {}/{} (class {})\n",
                md(&ing.namespace),
                md(&ing.name),
                md(ing.class.as_deref().unwrap_or("none"))
            );
            if !ing.annotations.is_empty() {
                out.push_str("| annotation | status | detail |\n|---|---|---|\n");
                for row in &ing.annotations {
                    let _ = writeln!(
                        out,
                        "| `{}` | {} | {} |",
                        md(&row.key),
                        row.status.as_str(),
                        md(&row.detail)
                    );
                }
            }
            if !ing.path_changes.is_empty() {
                out.push_str("\nPaths whose meaning changes:\n\n");
                for c in &ing.path_changes {
                    let _ = writeln!(
                        out,
                        "- `{}` `{}`: {}",
                        md(&c.field),
                        md(&c.path),
                        md(&c.change)
                    );
                }
            }
            if !ing.findings.is_empty() {
                out.push_str("\nOther findings:\n\n");
                for f in &ing.findings {
                    let _ = writeln!(
                        out,
                        "- {} `{}` {}: {}",
                        f.severity,
                        md(&f.field),
                        f.reason,
                        md(&f.message)
                    );
                }
            }
        }
        out
    }

    pub fn json(&self) -> String {
        // Plain data of strings and numbers: serialising cannot fail.
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }
}

fn ns_counts(ns: &NamespaceSummary) -> String {
    let parts: Vec<String> = ns
        .annotations
        .iter()
        .map(|(k, v)| format!("{v} {}", k.as_str()))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

/// Text from the cluster in a Markdown table cell or line: no pipes, no
/// line breaks, no backticks to break out of code spans.
fn md(s: &str) -> String {
    s.replace('|', "\\|")
        .replace('`', "'")
        .replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests;
