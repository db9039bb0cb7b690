//! The standalone manifests mode: every `*.yaml`/`*.yml` under a directory,
//! multi-document, read as the API server would store them.
//!
//! A file that does not parse is reported (file, document index, reason) and
//! its last good objects keep serving: one bad edit never empties the table.
//!
//! Reading is bounded. YAML aliases let a few bytes stand for a great many
//! nodes ("billion laughs"), so a document is expanded under a budget that
//! stops the work as soon as it is spent, and a file, its documents and its
//! expansion all have limits ([`MAX_FILE_BYTES`] and the others). Values the
//! API server would refuse are refused here too, naming the object and the
//! field.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{self, Read};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_yaml::value::{Tag, TaggedValue};
use serde_yaml::{Mapping, Value};
use tracing::warn;

use crate::snapshot::{Object, Snapshot};

// === limits ===

/// A manifest file larger than this is not read.
pub const MAX_FILE_BYTES: u64 = 16 << 20;
/// Documents read from one file; the rest of the file is not.
pub const MAX_DOCUMENTS: usize = 10_000;
/// YAML text of one document. The API server refuses requests over 3 MiB,
/// so no object it stores is longer as JSON, and YAML is seldom longer.
/// Parsing holds all of a document's events at once, some hundred bytes
/// for each two bytes of the densest YAML: this bounds that cost too.
pub const MAX_DOCUMENT_YAML: usize = 3 << 20;
/// Scalar text (keys and values) one document may expand to once aliases
/// are followed, for the same reason as [`MAX_DOCUMENT_YAML`].
pub const MAX_DOCUMENT_TEXT: usize = 3 << 20;
/// Nodes (scalars, sequences, mappings) one document may expand to. An
/// Ingress path takes 15 nodes in about 85 bytes of JSON, so an Ingress at
/// etcd's default 1.5 MiB object limit has some 270,000: this is twice
/// that, and bounds an expanded document to some 80 MB while it is read.
pub const MAX_DOCUMENT_NODES: usize = 1 << 19;
/// Scalar text a whole file may expand to: what a file of the largest size
/// holds without aliases, so aliases never make a file cost more than that.
pub const MAX_FILE_TEXT: usize = MAX_FILE_BYTES as usize;
/// Nodes a whole file may expand to (see [`MAX_FILE_TEXT`] and
/// [`MAX_DOCUMENT_NODES`]).
pub const MAX_FILE_NODES: usize = 1 << 22;
/// Nesting of sequences and mappings; Kubernetes objects stay far below,
/// and it keeps the expansion's recursion short (the YAML parser itself
/// stops at 128).
pub const MAX_DEPTH: usize = 100;

/// Which expansion limit a document ran into.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Limit {
    DocumentText,
    DocumentNodes,
    FileText,
    FileNodes,
    Depth,
}

impl fmt::Display for Limit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Limit::DocumentText => write!(
                f,
                "more than {MAX_DOCUMENT_TEXT} bytes of text, the limit per document (the API server's request limit)"
            ),
            Limit::DocumentNodes => write!(
                f,
                "more than {MAX_DOCUMENT_NODES} nodes, the limit per document"
            ),
            Limit::FileText => write!(
                f,
                "more than {MAX_FILE_TEXT} bytes of text with the file's earlier documents, the limit per file"
            ),
            Limit::FileNodes => write!(
                f,
                "more than {MAX_FILE_NODES} nodes with the file's earlier documents, the limit per file"
            ),
            Limit::Depth => write!(f, "more than {MAX_DEPTH} levels of nesting"),
        }
    }
}

// === errors ===

/// One document (or file) that could not be read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
#[error("{}: {}{reason}", file.display(), document.map(|d| format!("document {d}: ")).unwrap_or_default())]
pub struct ManifestError {
    pub file: PathBuf,
    /// 0-based index of the document in the file; `None` for errors about the
    /// whole file (unreadable, too large, not UTF-8).
    pub document: Option<usize>,
    pub reason: Problem,
}

/// Why a file or document was not read.
#[derive(Clone, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Problem {
    #[error("{0}")]
    Unreadable(String),
    #[error("{size} bytes is more than {MAX_FILE_BYTES}, the limit per manifest file")]
    FileTooLarge { size: u64 },
    #[error("not UTF-8: {0}")]
    NotUtf8(String),
    #[error("more than {MAX_DOCUMENTS} documents, the limit per file; the rest is not read")]
    TooManyDocuments,
    /// Not parsed: found by its `---` line, so its kind and name are not
    /// known.
    #[error(
        "{size} bytes of YAML is more than {MAX_DOCUMENT_YAML}, the limit per document (the API server's request limit); it and the rest of the file are not read"
    )]
    DocumentTooLong { size: usize },
    /// Broken YAML: the rest of the file cannot be located reliably.
    #[error("{0}")]
    Yaml(String),
    /// Aliases (or sheer size) expand the document past a limit; the work
    /// stopped there. `object` is `Kind namespace/name` as far as it was
    /// read before.
    #[error("{}expands to {limit}", prefix(object))]
    TooLarge { object: String, limit: Limit },
    /// What the API server would refuse: a missing or mistyped field, a
    /// value out of range.
    #[error("{}{}{message}", prefix(object), prefix(field))]
    Invalid {
        object: String,
        /// Where in the object, e.g. `spec.rules[0].http.paths`; empty for
        /// the object as a whole.
        field: String,
        message: String,
    },
}

/// `text: `, or nothing for no text.
fn prefix(text: &str) -> String {
    if text.is_empty() {
        String::new()
    } else {
        format!("{text}: ")
    }
}

/// Documents of kinds Portico does not read (Deployments, ConfigMaps, ...)
/// are skipped; they commonly share a directory with Ingresses.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Object>,
    pub errors: Vec<ManifestError>,
    /// Documents of kinds Portico does not read.
    pub skipped: Vec<NotRead>,
}

/// A document Portico does not read, for `portico validate` to list: a
/// platform team must see that a Gateway API route or an Opaque Secret in
/// its manifests is not served, rather than nothing at all.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotRead {
    pub document: usize,
    /// `apiVersion/kind`, e.g. `gateway.networking.k8s.io/v1/HTTPRoute`.
    pub kind: String,
    /// `Kind namespace/name`, as far as the document says.
    pub object: String,
    /// Why, when the kind alone does not say.
    pub why: Option<&'static str>,
}

/// Moves `stringData` into `data`, where it wins, as the API server does
/// when it stores a Secret.
fn merge_string_data(secret: &mut k8s_openapi::api::core::v1::Secret) {
    if let Some(strings) = secret.string_data.take() {
        let data = secret.data.get_or_insert_with(Default::default);
        for (k, v) in strings {
            data.insert(k, k8s_openapi::ByteString(v.into_bytes()));
        }
    }
}

/// Reads a manifest file as text, refusing one over [`MAX_FILE_BYTES`]
/// without reading it all.
pub fn read_file(path: &Path) -> Result<String, ManifestError> {
    let err = |reason| ManifestError {
        file: path.to_owned(),
        document: None,
        reason,
    };
    let io_err = |e: io::Error| err(Problem::Unreadable(e.to_string()));
    let file = fs::File::open(path).map_err(io_err)?;
    let mut bytes = Vec::new();
    // One byte past the limit tells a file at the limit from a larger one,
    // even one that grows while it is read.
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        let size = fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(err(Problem::FileTooLarge { size }));
    }
    String::from_utf8(bytes).map_err(|e| err(Problem::NotUtf8(e.utf8_error().to_string())))
}

/// Parses a multi-document YAML text.
pub fn parse_documents(file: &Path, text: &str) -> Parsed {
    let err = |document, reason| ManifestError {
        file: file.to_owned(),
        document,
        reason,
    };
    if text.len() as u64 > MAX_FILE_BYTES {
        let size = text.len() as u64;
        return Parsed {
            errors: vec![err(None, Problem::FileTooLarge { size })],
            ..Default::default()
        };
    }
    // The documents before one too long to parse are read as usual.
    let too_long = document_too_long(text);
    let readable = too_long.map_or(text, |d| &text[..d.start]);
    let mut out = Parsed::default();
    if !readable.is_empty() {
        parse_stream(file, readable, &mut out);
    }
    if let Some(d) = too_long
        && d.index < MAX_DOCUMENTS
    {
        out.errors.push(err(
            Some(d.index),
            Problem::DocumentTooLong { size: d.size },
        ));
    }
    out
}

fn parse_stream(file: &Path, text: &str, out: &mut Parsed) {
    let err = |document, reason| ManifestError {
        file: file.to_owned(),
        document: Some(document),
        reason,
    };
    let mut file_budget = FileBudget::default();
    for (idx, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        if idx == MAX_DOCUMENTS {
            out.errors.push(err(idx, Problem::TooManyDocuments));
            break;
        }
        let mut budget = file_budget.document();
        let expanded = budget.seed(Slot::Root).deserialize(doc);
        file_budget.spent(&budget);
        let value = match expanded {
            Ok(v) => v,
            Err(e) => match budget.exceeded {
                Some(limit) => {
                    let object = budget.identity.describe();
                    out.errors
                        .push(err(idx, Problem::TooLarge { object, limit }));
                    if matches!(limit, Limit::FileText | Limit::FileNodes) {
                        break;
                    }
                    // The document was cut short, not the stream.
                    continue;
                }
                None => {
                    out.errors.push(err(idx, Problem::Yaml(e.to_string())));
                    // The YAML stream itself is broken: later documents
                    // cannot be located reliably.
                    break;
                }
            },
        };
        if value.is_null() {
            continue;
        }
        if let Err(reason) = parse_value(value, idx, "", out) {
            out.errors.push(err(idx, reason));
        }
    }
}

/// The first document longer than [`MAX_DOCUMENT_YAML`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TooLong {
    /// Its index, counted as the YAML parser counts documents.
    index: usize,
    /// Byte offset of its first line.
    start: usize,
    size: usize,
}

/// Finds a document too long to parse before the parser holds it, by the
/// lines that start documents: `---` at the start of a line, which YAML
/// keeps out of any content. Text before the first such line is a
/// document of its own only if it holds more than comments, directives
/// and blank lines (as the parser counts). A `...` end marker followed by
/// a bare document only makes a span longer, never shorter, so nothing
/// too long is missed.
fn document_too_long(text: &str) -> Option<TooLong> {
    let starts_document = |line: &str| {
        line.strip_prefix("---").is_some_and(|rest| {
            rest.is_empty() || rest.starts_with(|c: char| c.is_ascii_whitespace())
        })
    };
    let is_content = |line: &str| {
        let line = line.trim_start();
        !(line.is_empty() || line.starts_with('#') || line.starts_with('%'))
    };
    let mut current = TooLong {
        index: 0,
        start: 0,
        size: 0,
    };
    let mut after_marker = false;
    let mut bare_first = false;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if starts_document(line) {
            current.size = offset - current.start;
            if current.size > MAX_DOCUMENT_YAML {
                return Some(current);
            }
            // A preamble without content belongs to the first document.
            if after_marker || bare_first {
                current.index += 1;
                current.start = offset;
            }
            after_marker = true;
        } else if !after_marker && is_content(line) {
            bare_first = true;
        }
        offset += line.len();
    }
    current.size = text.len() - current.start;
    (current.size > MAX_DOCUMENT_YAML).then_some(current)
}

/// `Kind namespace/name` of a document's value, as far as it says.
fn identity_of(value: &Value, within: &str) -> String {
    let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let meta = value.get("metadata");
    Identity {
        kind: text(value.get("kind")),
        namespace: text(meta.and_then(|m| m.get("namespace"))),
        name: text(meta.and_then(|m| m.get("name"))),
    }
    .describe_within(within)
}

fn parse_value(value: Value, idx: usize, within: &str, out: &mut Parsed) -> Result<(), Problem> {
    let object = identity_of(&value, within);
    let invalid = |field: &str, message: &str| Problem::Invalid {
        object: object.clone(),
        field: field.to_owned(),
        message: message.to_owned(),
    };
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("apiVersion", "missing"))?
        .to_owned();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or_else(|| invalid("kind", "missing"))?
        .to_owned();
    fn namespaced<T: kube::Resource>(mut obj: T) -> T {
        // kubectl applies namespaced objects without one to `default`.
        if obj.meta().namespace.as_deref().unwrap_or("").is_empty() {
            obj.meta_mut().namespace = Some("default".into());
        }
        obj
    }
    let name_missing = |v: &Value| {
        v.get("metadata")
            .and_then(|m| m.get("name"))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    };
    let known = matches!(
        (api_version.as_str(), kind.as_str()),
        ("networking.k8s.io/v1", "Ingress" | "IngressClass")
            | ("portico.dev/v1alpha1", "HTTPRoute")
            | ("v1", "Service" | "Secret" | "Namespace")
            | (
                GATEWAY_V1 | GATEWAY_V1BETA1,
                "GatewayClass" | "Gateway" | "HTTPRoute"
            )
            | (GATEWAY_V1, "GRPCRoute")
            | (GATEWAY_V1BETA1, "ReferenceGrant")
            | ("discovery.k8s.io/v1", "EndpointSlice")
    );
    if known && name_missing(&value) {
        return Err(invalid("metadata.name", "missing"));
    }
    let object = match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => {
            Object::Ingress(Arc::new(namespaced(typed(value, &object)?)))
        }
        ("networking.k8s.io/v1", "IngressClass") => {
            Object::IngressClass(Arc::new(typed(value, &object)?))
        }
        ("portico.dev/v1alpha1", "HTTPRoute") => {
            Object::HttpRoute(Arc::new(namespaced(typed(value, &object)?)))
        }
        (GATEWAY_V1 | GATEWAY_V1BETA1, "GatewayClass") => {
            Object::GatewayClass(Arc::new(typed(value, &object)?))
        }
        (GATEWAY_V1 | GATEWAY_V1BETA1, "Gateway") => {
            Object::Gateway(Arc::new(namespaced(typed(value, &object)?)))
        }
        (GATEWAY_V1 | GATEWAY_V1BETA1, "HTTPRoute") => {
            Object::GatewayHttpRoute(Arc::new(namespaced(typed(value, &object)?)))
        }
        (GATEWAY_V1, "GRPCRoute") => {
            Object::GrpcRoute(Arc::new(namespaced(typed(value, &object)?)))
        }
        (GATEWAY_V1BETA1, "ReferenceGrant") => {
            Object::ReferenceGrant(Arc::new(namespaced(typed(value, &object)?)))
        }
        ("v1", "Namespace") => Object::Namespace(Arc::new(typed(value, &object)?)),
        ("v1", "Service") => {
            let svc: k8s_openapi::api::core::v1::Service = typed(value, &object)?;
            check_service_ports(&svc).map_err(|(field, message)| invalid(&field, &message))?;
            Object::Service(Arc::new(namespaced(svc)))
        }
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            let slice: k8s_openapi::api::discovery::v1::EndpointSlice = typed(value, &object)?;
            check_slice_ports(&slice).map_err(|(field, message)| invalid(&field, &message))?;
            Object::EndpointSlice(Arc::new(namespaced(slice)))
        }
        ("v1", "Secret") => {
            let mut secret: k8s_openapi::api::core::v1::Secret = typed(value, &object)?;
            // No type is Opaque, as the API server reads it.
            if !matches!(
                secret.type_.as_deref(),
                None | Some("kubernetes.io/tls" | "Opaque")
            ) {
                out.skipped.push(NotRead {
                    document: idx,
                    kind: "v1/Secret".into(),
                    object: object.clone(),
                    why: Some("only kubernetes.io/tls and Opaque Secrets are read"),
                });
                return Ok(());
            }
            merge_string_data(&mut secret);
            Object::Secret(Arc::new(namespaced(secret)))
        }
        ("v1", "List") => {
            let items = match value.get("items") {
                None | Some(Value::Null) => Vec::new(),
                Some(Value::Sequence(items)) => items.clone(),
                Some(_) => return Err(invalid("items", "expected a sequence")),
            };
            for (i, item) in items.into_iter().enumerate() {
                parse_value(item, idx, &format!("items[{i}]"), out)?;
            }
            return Ok(());
        }
        _ => {
            out.skipped.push(NotRead {
                document: idx,
                kind: format!("{api_version}/{kind}"),
                object: object.clone(),
                why: None,
            });
            return Ok(());
        }
    };
    out.objects.push(object);
    Ok(())
}

/// Gateway API versions read. v1beta1 GatewayClass, Gateway and HTTPRoute
/// have the v1 shape (the API server serves both), so one type reads both;
/// ReferenceGrant is v1beta1 only in the standard channel.
const GATEWAY_V1: &str = "gateway.networking.k8s.io/v1";
const GATEWAY_V1BETA1: &str = "gateway.networking.k8s.io/v1beta1";

/// The typed object, or the field that does not fit and why.
fn typed<T: serde::de::DeserializeOwned>(v: Value, object: &str) -> Result<T, Problem> {
    serde_path_to_error::deserialize(v).map_err(|e| {
        let path = e.path().to_string();
        Problem::Invalid {
            object: object.to_owned(),
            // `.` is the object itself.
            field: if path == "." { String::new() } else { path },
            message: e.into_inner().to_string(),
        }
    })
}

/// A TCP or UDP port number, as the API server checks them.
fn port_number(n: i32) -> Result<(), String> {
    if (1..=65535).contains(&n) {
        Ok(())
    } else {
        Err(format!("{n} is not a port number from 1 to 65535"))
    }
}

/// The API server's IANA service name rule for named ports: at most 15
/// lower-case letters, digits and single inner `-`, with a letter.
fn port_name(s: &str) -> Result<(), String> {
    let ok = !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && s.bytes().any(|b| b.is_ascii_lowercase())
        && !s.starts_with('-')
        && !s.ends_with('-')
        && !s.contains("--");
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{s:?} is not a port name (at most 15 lower-case letters, digits and '-', with a letter)"
        ))
    }
}

/// `spec.ports[]`: `port`, `targetPort` and `nodePort` as the API server
/// checks them.
fn check_service_ports(svc: &k8s_openapi::api::core::v1::Service) -> Result<(), (String, String)> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    let ports = svc.spec.iter().flat_map(|s| s.ports.iter().flatten());
    for (i, p) in ports.enumerate() {
        let at = |f: &str| format!("spec.ports[{i}].{f}");
        port_number(p.port).map_err(|m| (at("port"), m))?;
        match &p.target_port {
            None => {}
            Some(IntOrString::Int(n)) => port_number(*n).map_err(|m| (at("targetPort"), m))?,
            Some(IntOrString::String(name)) => {
                port_name(name).map_err(|m| (at("targetPort"), m))?
            }
        }
        // 0 is "none allocated".
        if let Some(n) = p.node_port.filter(|n| *n != 0) {
            port_number(n).map_err(|m| (at("nodePort"), m))?;
        }
    }
    Ok(())
}

/// `ports[].port` of an EndpointSlice, as the API server checks it.
fn check_slice_ports(
    slice: &k8s_openapi::api::discovery::v1::EndpointSlice,
) -> Result<(), (String, String)> {
    for (i, p) in slice.ports.iter().flatten().enumerate() {
        if let Some(n) = p.port {
            port_number(n).map_err(|m| (format!("ports[{i}].port"), m))?;
        }
    }
    Ok(())
}

// === bounded expansion ===

/// What the file's documents may still expand to.
struct FileBudget {
    text: usize,
    nodes: usize,
}

impl Default for FileBudget {
    fn default() -> Self {
        Self {
            text: MAX_FILE_TEXT,
            nodes: MAX_FILE_NODES,
        }
    }
}

impl FileBudget {
    /// The budget of the next document: its own limits, or what is left of
    /// the file's when that is less.
    fn document(&self) -> Budget {
        let (text, text_limit) = if self.text < MAX_DOCUMENT_TEXT {
            (self.text, Limit::FileText)
        } else {
            (MAX_DOCUMENT_TEXT, Limit::DocumentText)
        };
        let (nodes, nodes_limit) = if self.nodes < MAX_DOCUMENT_NODES {
            (self.nodes, Limit::FileNodes)
        } else {
            (MAX_DOCUMENT_NODES, Limit::DocumentNodes)
        };
        Budget {
            text,
            text_start: text,
            text_limit,
            nodes,
            nodes_start: nodes,
            nodes_limit,
            depth: 0,
            exceeded: None,
            identity: Identity::default(),
        }
    }

    fn spent(&mut self, doc: &Budget) {
        self.text -= doc.text_start - doc.text;
        self.nodes -= doc.nodes_start - doc.nodes;
    }
}

/// What one document may still expand to, and what it has said about
/// itself so far (for the error, should the budget run out).
struct Budget {
    text: usize,
    text_start: usize,
    text_limit: Limit,
    nodes: usize,
    nodes_start: usize,
    nodes_limit: Limit,
    depth: usize,
    /// Set when the budget ran out: the error is ours, not the YAML's.
    exceeded: Option<Limit>,
    identity: Identity,
}

impl Budget {
    /// The seed that expands a value at `slot` under this budget.
    fn seed(&mut self, slot: Slot) -> ValueSeed<'_> {
        ValueSeed { budget: self, slot }
    }

    /// Accounts for one node holding `text` bytes; fails once spent.
    fn node<E: de::Error>(&mut self, text: usize) -> Result<(), E> {
        if self.nodes == 0 {
            return Err(self.exceed(self.nodes_limit));
        }
        self.nodes -= 1;
        if text > self.text {
            return Err(self.exceed(self.text_limit));
        }
        self.text -= text;
        Ok(())
    }

    /// Accounts for a sequence or mapping, one level deeper.
    fn open<E: de::Error>(&mut self) -> Result<(), E> {
        self.node(0)?;
        if self.depth == MAX_DEPTH {
            return Err(self.exceed(Limit::Depth));
        }
        self.depth += 1;
        Ok(())
    }

    fn close(&mut self) {
        self.depth -= 1;
    }

    fn exceed<E: de::Error>(&mut self, limit: Limit) -> E {
        self.exceeded = Some(limit);
        E::custom(limit)
    }
}

/// `kind`, `metadata.namespace` and `metadata.name` of a document, noted
/// while it is expanded.
#[derive(Default)]
struct Identity {
    kind: Option<String>,
    namespace: Option<String>,
    name: Option<String>,
}

impl Identity {
    /// `Ingress shop/web`, `Ingress`, `shop/web`, or nothing.
    fn describe(&self) -> String {
        self.describe_within("")
    }

    /// [`Identity::describe`] after `within` (a List's `items[i]`).
    fn describe_within(&self, within: &str) -> String {
        let mut out = within.to_owned();
        if !out.is_empty() {
            out.push_str(": ");
        }
        if let Some(kind) = &self.kind {
            out.push_str(kind);
        }
        if let Some(name) = &self.name {
            if self.kind.is_some() {
                out.push(' ');
            }
            // kubectl puts namespaced objects without one in `default`.
            let ns = self.namespace.as_deref().filter(|n| !n.is_empty());
            out.push_str(ns.unwrap_or("default"));
            out.push('/');
            out.push_str(name);
        }
        out.trim_end_matches(": ").to_owned()
    }
}

/// Where a value sits, as far as [`Identity`] cares.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Root,
    Kind,
    Metadata,
    Namespace,
    Name,
    Other,
}

/// Deserializes a [`Value`] as `serde_yaml` does, charging every node
/// (aliases expanded) to the budget: an alias bomb fails at the first node
/// past the budget, with memory bounded by it.
struct ValueSeed<'b> {
    budget: &'b mut Budget,
    slot: Slot,
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML value")
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        self.budget.node(0)?;
        Ok(Value::Bool(b))
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        self.budget.node(0)?;
        Ok(Value::Number(n.into()))
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        self.budget.node(0)?;
        Ok(Value::Number(n.into()))
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        self.budget.node(0)?;
        Ok(Value::Number(n.into()))
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        self.budget.node(s.len())?;
        let id = &mut self.budget.identity;
        let noted = match self.slot {
            Slot::Kind => Some(&mut id.kind),
            Slot::Namespace => Some(&mut id.namespace),
            Slot::Name => Some(&mut id.name),
            _ => None,
        };
        if let Some(noted) = noted {
            *noted = Some(s.to_owned());
        }
        Ok(Value::String(s.to_owned()))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        self.budget.node(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        self.deserialize(d)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.budget.open()?;
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(self.budget.seed(Slot::Other))? {
            out.push(v);
        }
        self.budget.close();
        Ok(Value::Sequence(out))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.budget.open()?;
        let mut out = Mapping::new();
        while let Some(key) = map.next_key_seed(self.budget.seed(Slot::Other))? {
            let slot = match (self.slot, key.as_str()) {
                (Slot::Root, Some("kind")) => Slot::Kind,
                (Slot::Root, Some("metadata")) => Slot::Metadata,
                (Slot::Metadata, Some("namespace")) => Slot::Namespace,
                (Slot::Metadata, Some("name")) => Slot::Name,
                _ => Slot::Other,
            };
            let value = map.next_value_seed(self.budget.seed(slot))?;
            // As serde_yaml's own `Mapping`: a repeated key is an error.
            if out.contains_key(&key) {
                return Err(de::Error::custom(format_args!(
                    "duplicate entry with key {}",
                    serde_yaml::to_string(&key).unwrap_or_default().trim_end()
                )));
            }
            out.insert(key, value);
        }
        self.budget.close();
        Ok(Value::Mapping(out))
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use de::VariantAccess;
        // A tagged value (`!tag value`).
        let (tag, contents): (String, _) = data.variant()?;
        self.budget.node(tag.len())?;
        let value = contents.newtype_variant_seed(self.budget.seed(Slot::Other))?;
        Ok(Value::Tagged(Box::new(TaggedValue {
            tag: Tag::new(tag),
            value,
        })))
    }
}

/// The manifest directory and the last good objects of each file.
#[derive(Debug)]
pub struct ManifestDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

#[derive(Debug, Default)]
struct FileState {
    /// The file as listed when it was last read: a file listed with the
    /// same stamp is not read again.
    stamp: Option<Stamp>,
    fingerprint: Option<u64>,
    /// The last good parse: served until the file parses again.
    objects: Vec<Object>,
    /// Errors of the current content; empty when it parsed.
    errors: Vec<ManifestError>,
}

/// What says a file may have changed without reading it: its modification
/// time, size and inode (a file renamed into place is a new inode).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

/// A file modified this recently is read even with an unchanged stamp: a
/// second write within the file system's timestamp granularity (a jiffy on
/// Linux) that keeps the size would otherwise go unseen.
const RACY: Duration = Duration::from_secs(2);

impl Stamp {
    fn of(meta: &fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            modified: meta.modified().ok(),
            len: meta.len(),
            inode,
        }
    }

    /// Whether a file with this stamp, read before, needs no new read.
    fn settled(self, before: Option<Stamp>, now: SystemTime) -> bool {
        let old_enough = self
            .modified
            .and_then(|m| now.duration_since(m).ok())
            .is_some_and(|age| age >= RACY);
        before == Some(self) && old_enough
    }
}

/// Whether a file notification may name a changed file. Opening a file is
/// not a change: inotify reports the watcher's own reads to it too, and
/// taking those as changes read the last edited file again, and again, for
/// as long as the process ran (most of a core at 10,000 files). A write
/// that closes (`CLOSE_WRITE`) is one.
pub fn is_change(kind: &notify::EventKind) -> bool {
    use notify::EventKind;
    use notify::event::{AccessKind, AccessMode};
    match kind {
        EventKind::Access(AccessKind::Close(AccessMode::Write)) => true,
        EventKind::Access(_) => false,
        _ => true,
    }
}

/// What a rescan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Whether any file's content (or the set of files) changed.
    pub changed: bool,
}

impl ManifestDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            files: BTreeMap::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Lists the directory and re-reads each manifest file whose stamp
    /// (modification time, size, inode) changed since it was read; files
    /// whose bytes did not change are not parsed again, and a removed file's
    /// objects go with it.
    pub fn rescan(&mut self) -> io::Result<Scan> {
        self.rescan_named(&[])
    }

    /// [`ManifestDir::rescan`], reading the files in `named` (the paths a
    /// change notification named, sorted) whatever their stamp says.
    pub fn rescan_named(&mut self, named: &[PathBuf]) -> io::Result<Scan> {
        let mut found = Vec::new();
        collect_files(&self.root, &mut found)?;
        found.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let mut scan = Scan::default();
        let before = self.files.len();
        self.files
            .retain(|path, _| found.binary_search_by(|(p, _)| p.cmp(path)).is_ok());
        scan.changed |= self.files.len() != before;
        let now = SystemTime::now();
        for (path, stamp) in found {
            let force = named.binary_search(&path).is_ok();
            scan.changed |= self.refresh(path, stamp, force, now);
        }
        Ok(scan)
    }

    /// Reads only the files `named` (a notification's paths) when they say
    /// all that changed: manifest files written, created or removed, and
    /// other files, which do not count. `None` when a full
    /// [`ManifestDir::rescan`] is needed: nothing named (an overflowed
    /// queue), a directory, a hidden entry (a ConfigMap mount's `..data`
    /// swap), a path outside the root, or a removed entry that held files.
    /// At 10,000 files a full listing costs about a second of CPU.
    pub fn refresh_named(&mut self, named: &[PathBuf]) -> Option<Scan> {
        if named.is_empty() {
            return None;
        }
        let mut scan = Scan::default();
        let now = SystemTime::now();
        for path in named {
            let rest = path.strip_prefix(&self.root).ok()?;
            if rest
                .components()
                .any(|c| c.as_os_str().to_string_lossy().starts_with('.'))
            {
                return None;
            }
            let manifest = matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml")
            );
            match fs::metadata(path) {
                Ok(meta) if meta.is_dir() => return None,
                Ok(meta) if manifest => {
                    let stamp = Stamp::of(&meta);
                    scan.changed |= self.refresh(path.clone(), stamp, true, now);
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if self.files.remove(path).is_some() {
                        scan.changed = true;
                    } else if self
                        .files
                        .range::<Path, _>((Bound::Excluded(path.as_path()), Bound::Unbounded))
                        .next()
                        .is_some_and(|(p, _)| p.starts_with(path))
                    {
                        // A removed directory: its files go too.
                        return None;
                    }
                }
                Err(_) => return None,
            }
        }
        Some(scan)
    }

    /// Reads one listed file if its stamp says it may have changed (or
    /// `force`); whether its objects or errors changed.
    fn refresh(&mut self, path: PathBuf, stamp: Stamp, force: bool, now: SystemTime) -> bool {
        let state = self.files.entry(path.clone()).or_default();
        if stamp.settled(state.stamp, now) && !force {
            return false;
        }
        // Taken before the read: a write after it is seen next time.
        state.stamp = Some(stamp);
        let text = match read_file(&path) {
            Ok(t) => Ok(t),
            // Deleted between listing and reading: the next scan sees it.
            Err(ManifestError {
                reason: Problem::Unreadable(_),
                ..
            }) if !path.exists() => return false,
            Err(e) => Err(e),
        };
        let mut h = DefaultHasher::new();
        match &text {
            Ok(t) => t.hash(&mut h),
            Err(e) => e.hash(&mut h),
        }
        let fingerprint = h.finish();
        if state.fingerprint == Some(fingerprint) {
            return false;
        }
        state.fingerprint = Some(fingerprint);
        if text.as_ref().is_ok_and(String::is_empty) && !state.objects.is_empty() {
            // A writer that truncates before it writes is seen empty for
            // a moment: serving nothing from the file then would empty
            // the table until the write lands, and keep it empty if that
            // write is malformed.
            warn!(
                file = %path.display(),
                "manifest file is empty; its last objects keep serving until it has content again or is deleted"
            );
            return false;
        }
        let parsed = match text {
            Ok(text) => parse_documents(&path, &text),
            Err(e) => Parsed {
                errors: vec![e],
                ..Default::default()
            },
        };
        if parsed.errors.is_empty() {
            state.objects = parsed.objects;
            state.errors.clear();
        } else {
            state.errors = parsed.errors;
        }
        true
    }

    /// Current errors, by file.
    pub fn errors(&self) -> Vec<ManifestError> {
        self.files
            .values()
            .flat_map(|f| f.errors.iter().cloned())
            .collect()
    }

    pub fn snapshot(&self) -> Snapshot {
        Snapshot::from_objects(self.files.values().flat_map(|f| f.objects.iter().cloned()))
    }
}

fn collect_files(dir: &Path, out: &mut Vec<(PathBuf, Stamp)>) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name();
        // Editors' and Kubernetes ConfigMap mounts' hidden entries (`..data`).
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let meta = fs::metadata(&path)?;
        if meta.is_dir() {
            collect_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push((path, Stamp::of(&meta)));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::key;

    fn parse(text: &str) -> Parsed {
        parse_documents(Path::new("m.yaml"), text)
    }

    /// The errors as they are printed.
    fn errors(p: &Parsed) -> Vec<String> {
        p.errors.iter().map(ToString::to_string).collect()
    }

    const SERVICE: &str = "apiVersion: v1\nkind: Service\nmetadata: {name: web, namespace: shop}\nspec: {ports: [{port: 80}]}\n";

    /// A ConfigMap whose `data` is a list `levels` aliases deep, each
    /// holding ten of the one before: 10^levels scalars from a few hundred
    /// bytes. A long list of numbers first raises serde_yaml's own
    /// repetition limit (a hundred alias jumps per event of the document)
    /// far past what it takes to exhaust memory.
    fn laughs(levels: usize) -> String {
        let mut text = String::from(
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol, namespace: shop}\npad: [",
        );
        text.push_str(&"0,".repeat(20_000));
        text.push_str("0]\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..=levels {
            let prev = format!("*l{}", i - 1);
            let refs = [prev.as_str(); 10].join(", ");
            text.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
        }
        text
    }

    /// The Gateway API kinds are read in their served versions (v1, and
    /// v1beta1 for ReferenceGrant and the kinds whose shape it shares),
    /// namespaced ones defaulting to `default`; Namespaces for selectors.
    #[test]
    fn gateway_api_kinds_are_read() {
        let p = parse(concat!(
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n---\n",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: gw}\nspec: {gatewayClassName: portico, listeners: [{name: http, port: 80, protocol: HTTP}]}\n---\n",
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: HTTPRoute\nmetadata: {name: r, namespace: shop}\nspec: {parentRefs: [{name: gw}]}\n---\n",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: g, namespace: shop}\nspec: {}\n---\n",
            "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: rg, namespace: shop}\nspec: {from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: default}], to: [{group: '', kind: Service}]}\n---\n",
            "apiVersion: v1\nkind: Namespace\nmetadata: {name: shop, labels: {team: a}}\n---\n",
            "apiVersion: gateway.networking.k8s.io/v1\nkind: ReferenceGrant\nmetadata: {name: not-served}\nspec: {from: [], to: []}\n",
        ));
        assert!(p.errors.is_empty(), "{:?}", errors(&p));
        let snap = Snapshot::from_objects(p.objects);
        assert_eq!(snap.gateway_classes.len(), 1);
        assert_eq!(snap.gateways.len(), 1);
        assert_eq!(key(&*snap.gateways[0]), ("default".into(), "gw".into()));
        assert_eq!(
            key(&*snap.gateway_http_routes[0]),
            ("shop".into(), "r".into())
        );
        assert_eq!(snap.grpc_routes.len(), 1);
        assert_eq!(snap.reference_grants.len(), 1);
        assert!(snap.namespaces.contains_key("shop"));
        // ReferenceGrant v1 is not in the standard channel v1.6.1.
        assert_eq!(p.skipped.len(), 1, "{:?}", p.skipped);
    }

    /// TLS and Opaque Secrets are read (no type is Opaque), with
    /// `stringData` moved into `data` as the API server does; other types
    /// are listed as not read.
    #[test]
    fn opaque_and_tls_secrets_are_read_others_listed() {
        let p = parse(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: users}\ntype: Opaque\ndata: {auth: YQ==, other: Yg==}\nstringData: {auth: 'alice:x'}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: untyped}\ndata: {auth: YQ==}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: token}\ntype: kubernetes.io/service-account-token\n",
        );
        assert!(p.errors.is_empty(), "{:?}", errors(&p));
        let secrets: Vec<_> = p
            .objects
            .iter()
            .filter_map(|o| match o {
                Object::Secret(s) => Some(s),
                _ => None,
            })
            .collect();
        assert_eq!(secrets.len(), 2);
        let data = secrets[0].data.as_ref().unwrap();
        assert_eq!(data["auth"].0, b"alice:x");
        assert_eq!(data["other"].0, b"b");
        assert!(secrets[0].string_data.is_none());
        assert_eq!(secrets[1].metadata.name.as_deref(), Some("untyped"));
        assert_eq!(p.skipped.len(), 1);
        assert_eq!(
            p.skipped[0].why,
            Some("only kubernetes.io/tls and Opaque Secrets are read")
        );
    }

    #[test]
    fn nested_aliases_stop_at_the_node_limit_naming_the_object() {
        let p = parse(&laughs(9));
        assert_eq!(
            p.errors,
            [ManifestError {
                file: "m.yaml".into(),
                document: Some(0),
                reason: Problem::TooLarge {
                    object: "ConfigMap shop/lol".into(),
                    limit: Limit::DocumentNodes,
                },
            }]
        );
        assert_eq!(
            errors(&p),
            [format!(
                "m.yaml: document 0: ConfigMap shop/lol: expands to more than {MAX_DOCUMENT_NODES} nodes, the limit per document"
            )]
        );
    }

    #[test]
    fn one_wide_anchor_referenced_many_times_stops_at_the_text_limit() {
        let big = "x".repeat(64 * 1024);
        let refs = ["*big"; 100].join(", ");
        let text = format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: wide}}\ntype: kubernetes.io/tls\nbig: &big {big}\ndata: [{refs}]\n"
        );
        let p = parse(&text);
        assert_eq!(
            errors(&p),
            [format!(
                "m.yaml: document 0: Secret default/wide: expands to more than {MAX_DOCUMENT_TEXT} bytes of text, the limit per document (the API server's request limit)"
            )]
        );
    }

    #[test]
    fn deep_nesting_stops_at_the_depth_limit() {
        let deep = format!("{}{}", "[".repeat(500), "]".repeat(500));
        let p = parse(&format!("kind: Deep\nspec: {deep}\n---\n{SERVICE}"));
        assert_eq!(
            errors(&p),
            [format!(
                "m.yaml: document 0: Deep: expands to more than {MAX_DEPTH} levels of nesting"
            )]
        );
        // Cut short is not broken: the next document is read.
        assert_eq!(p.objects.len(), 1);
    }

    #[test]
    fn a_bomb_does_not_keep_the_other_documents_from_being_read() {
        let p = parse(&format!("{SERVICE}---\n{}---\n{SERVICE}", laughs(9)));
        assert_eq!(p.objects.len(), 2);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].document, Some(1));
    }

    #[test]
    fn documents_share_the_file_budget() {
        // Each document expands to 2 MiB: under the limit per document,
        // but four of them are over the file's.
        let doc = |i: usize| {
            let big = "x".repeat(64 * 1024);
            let refs = ["*big"; 31].join(", ");
            format!(
                "apiVersion: v1\nkind: Big\nmetadata: {{name: b{i}}}\nbig: &big {big}\ndata: [{refs}]\n"
            )
        };
        let docs: Vec<String> = (0..12).map(doc).collect();
        let p = parse(&docs.join("---\n"));
        let e = &p.errors;
        // Documents 0 to 7 fit in 16 MiB; the rest of the file is not read.
        assert_eq!(e.len(), 1, "{:?}", errors(&p));
        assert_eq!(e[0].document, Some(7));
        assert_eq!(
            e[0].reason,
            Problem::TooLarge {
                object: "Big default/b7".into(),
                limit: Limit::FileText,
            }
        );
    }

    #[test]
    fn many_documents_stop_at_the_document_limit() {
        let text = format!("{SERVICE}{}", "---\n".repeat(MAX_DOCUMENTS + 5));
        let p = parse(&text);
        assert_eq!(p.objects.len(), 1);
        assert_eq!(
            errors(&p),
            [format!(
                "m.yaml: document {MAX_DOCUMENTS}: more than {MAX_DOCUMENTS} documents, the limit per file; the rest is not read"
            )]
        );
    }

    #[test]
    fn an_oversized_file_is_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.yaml");
        let line = "# padding padding padding padding padding padding padding padding\n";
        let size = MAX_FILE_BYTES as usize + 1;
        std::fs::write(&path, line.repeat(size / line.len() + 1)).unwrap();
        let e = read_file(&path).unwrap_err();
        assert_eq!(e.document, None);
        assert!(
            matches!(e.reason, Problem::FileTooLarge { size: s } if s > MAX_FILE_BYTES),
            "{e}"
        );
        assert!(e.to_string().contains("the limit per manifest file"), "{e}");
        // Text handed over directly is held to the same limit.
        let p = parse(&"#\n".repeat(size / 2 + 1));
        assert!(matches!(p.errors[0].reason, Problem::FileTooLarge { .. }));

        std::fs::write(&path, SERVICE).unwrap();
        assert_eq!(read_file(&path).unwrap(), SERVICE);
    }

    #[test]
    fn an_overlong_document_is_refused_before_it_is_parsed() {
        let long = format!(
            "kind: Long\ndata: [{}0]\n",
            "0,".repeat(MAX_DOCUMENT_YAML / 2)
        );
        // Comments before the first `---` belong to the first document.
        let p = parse(&format!(
            "# objects\n---\n{SERVICE}---\n{long}---\n{SERVICE}"
        ));
        assert_eq!(p.objects.len(), 1);
        assert_eq!(p.errors.len(), 1);
        assert_eq!(p.errors[0].document, Some(1));
        assert!(
            errors(&p)[0].contains("the limit per document (the API server's request limit)"),
            "{:?}",
            errors(&p)
        );
        // A first document without `---` counts as one.
        let p = parse(&format!("{SERVICE}---\n{long}"));
        assert_eq!(p.errors[0].document, Some(1));
        let p = parse(&long);
        assert_eq!(p.errors[0].document, Some(0));
        assert!(p.objects.is_empty());
    }

    #[test]
    fn type_errors_name_the_object_and_the_field() {
        let ingress = "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: web, namespace: shop}\nspec:\n  rules:\n    - http: {paths: abc}\n";
        let p = parse(&format!("{SERVICE}---\n{ingress}"));
        assert_eq!(
            errors(&p),
            [
                "m.yaml: document 1: Ingress shop/web: spec.rules[0].http.paths: invalid type: string \"abc\", expected a sequence"
            ]
        );
        let list = "apiVersion: v1\nkind: List\nitems:\n  - {apiVersion: v1, kind: Service, metadata: {name: a}, spec: {ports: [{port: x}]}}\n";
        let e = errors(&parse(list));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].starts_with(
                "m.yaml: document 0: items[0]: Service default/a: spec.ports[0].port: invalid type: string \"x\""
            ),
            "{e:?}"
        );
        assert_eq!(
            errors(&parse("apiVersion: v1\nmetadata: {name: x}\n")),
            ["m.yaml: document 0: default/x: kind: missing"]
        );
    }

    #[test]
    fn ports_out_of_range_are_refused_naming_the_field() {
        let service = |ports: &str| {
            format!(
                "apiVersion: v1\nkind: Service\nmetadata: {{name: web, namespace: shop}}\nspec: {{ports: [{ports}]}}\n"
            )
        };
        let cases = [
            (
                "{port: 70000}",
                "spec.ports[0].port: 70000 is not a port number from 1 to 65535",
            ),
            ("{port: 80}, {port: 0}", "spec.ports[1].port: 0 is not"),
            (
                "{port: 80, targetPort: 65536}",
                "spec.ports[0].targetPort: 65536 is not",
            ),
            (
                "{port: 80, targetPort: -1}",
                "spec.ports[0].targetPort: -1 is not",
            ),
            (
                "{port: 80, targetPort: Web_1}",
                "spec.ports[0].targetPort: \"Web_1\" is not a port name",
            ),
            (
                "{port: 80, nodePort: 99999}",
                "spec.ports[0].nodePort: 99999 is not",
            ),
        ];
        for (ports, want) in cases {
            let p = parse(&service(ports));
            let e = errors(&p);
            assert!(p.objects.is_empty(), "{ports}");
            assert_eq!(e.len(), 1, "{ports}: {e:?}");
            assert!(
                e[0].starts_with(&format!("m.yaml: document 0: Service shop/web: {want}")),
                "{ports}: {e:?}"
            );
        }
        for ports in [
            "{port: 1, targetPort: 65535, nodePort: 0}",
            "{port: 80, targetPort: http-2}",
        ] {
            let p = parse(&service(ports));
            assert_eq!(errors(&p), Vec::<String>::new(), "{ports}");
        }

        let slice = |port: &str| {
            format!(
                "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints: []\n"
            )
        };
        assert_eq!(
            errors(&parse(&slice("0"))),
            [
                "m.yaml: document 0: EndpointSlice default/web-1: ports[0].port: 0 is not a port number from 1 to 65535"
            ]
        );
        assert_eq!(errors(&parse(&slice("8080"))), Vec::<String>::new());
    }

    #[test]
    fn an_empty_read_and_a_malformed_edit_keep_the_last_objects() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("app.yaml");
        let mut manifests = ManifestDir::new(dir.path());
        let services = |m: &ManifestDir| m.snapshot().services.keys().cloned().collect::<Vec<_>>();
        let web = vec![("shop".to_owned(), "web".to_owned())];

        std::fs::write(&file, SERVICE).unwrap();
        assert!(manifests.rescan().unwrap().changed);
        assert_eq!(services(&manifests), web);
        // A writer that truncates, then writes: seen empty for a moment.
        std::fs::write(&file, "").unwrap();
        assert!(!manifests.rescan().unwrap().changed);
        assert_eq!(services(&manifests), web);
        assert!(manifests.errors().is_empty());
        std::fs::write(&file, "kind: [oops\n").unwrap();
        assert!(manifests.rescan().unwrap().changed);
        assert_eq!(services(&manifests), web);
        assert_eq!(manifests.errors().len(), 1);
        // Unchanged bytes are not parsed again.
        assert!(!manifests.rescan().unwrap().changed);

        // A bomb next to it: its file serves nothing, the other keeps on.
        std::fs::write(dir.path().join("bomb.yaml"), laughs(9)).unwrap();
        std::fs::write(&file, SERVICE).unwrap();
        assert!(manifests.rescan().unwrap().changed);
        assert_eq!(services(&manifests), web);
        let e = manifests.errors();
        assert_eq!(e.len(), 1);
        assert!(e[0].file.ends_with("bomb.yaml"), "{e:?}");
    }

    /// A rescan reads only files whose stamp changed (or that a
    /// notification named); a removed file's objects go with it.
    #[test]
    fn only_changed_or_named_files_are_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (web, other) = (dir.path().join("web.yaml"), dir.path().join("other.yaml"));
        let mut manifests = ManifestDir::new(dir.path());
        let services = |m: &ManifestDir| m.snapshot().services.keys().cloned().collect::<Vec<_>>();
        let named = |n: &str| ("shop".to_owned(), n.to_owned());
        // Same length as SERVICE: only the stamp's time can tell them apart.
        let renamed = SERVICE.replace("name: web", "name: api");
        assert_eq!(renamed.len(), SERVICE.len());
        let settled = SystemTime::now() - 2 * RACY;
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).unwrap();
            let f = std::fs::File::options().write(true).open(path).unwrap();
            f.set_modified(settled).unwrap();
        };

        write(&web, SERVICE);
        write(&other, &SERVICE.replace("name: web", "name: db"));
        assert!(manifests.rescan().unwrap().changed);
        assert_eq!(services(&manifests), [named("db"), named("web")]);
        // Rewritten in place with the same size and time: not read.
        write(&web, &renamed);
        assert!(!manifests.rescan().unwrap().changed);
        assert_eq!(services(&manifests), [named("db"), named("web")]);
        // Named by a notification: read.
        assert!(
            manifests
                .rescan_named(std::slice::from_ref(&web))
                .unwrap()
                .changed
        );
        assert_eq!(services(&manifests), [named("api"), named("db")]);
        // A new time (or size, or inode) is read without being named.
        std::fs::write(&web, SERVICE).unwrap();
        assert!(manifests.rescan().unwrap().changed);
        assert_eq!(services(&manifests), [named("db"), named("web")]);
        std::fs::remove_file(&other).unwrap();
        assert!(manifests.rescan().unwrap().changed);
        assert_eq!(services(&manifests), [named("web")]);
    }

    /// A notification's paths alone are read when they say all that
    /// changed; anything else asks for the full listing.
    #[test]
    fn named_files_alone_are_read_or_a_full_listing_is_asked_for() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let (web, db) = (root.join("web.yaml"), root.join("db.yaml"));
        let mut manifests = ManifestDir::new(root);
        let services = |m: &ManifestDir| m.snapshot().services.keys().cloned().collect::<Vec<_>>();
        let named = |n: &str| ("shop".to_owned(), n.to_owned());
        std::fs::write(&web, SERVICE).unwrap();
        assert!(manifests.rescan().unwrap().changed);

        // A new file, named: read without a listing.
        std::fs::write(&db, SERVICE.replace("name: web", "name: db")).unwrap();
        let scan = manifests.refresh_named(std::slice::from_ref(&db)).unwrap();
        assert!(scan.changed);
        assert_eq!(services(&manifests), [named("db"), named("web")]);
        // Another kind of file, named: nothing to do.
        std::fs::write(root.join("notes.txt"), "x").unwrap();
        assert!(
            !manifests
                .refresh_named(&[root.join("notes.txt")])
                .unwrap()
                .changed
        );
        // Removed, named: its objects go.
        std::fs::remove_file(&db).unwrap();
        assert!(
            manifests
                .refresh_named(std::slice::from_ref(&db))
                .unwrap()
                .changed
        );
        assert_eq!(services(&manifests), [named("web")]);

        // A directory, a hidden entry, a path elsewhere, or nothing named:
        // the full listing.
        std::fs::create_dir(root.join("more")).unwrap();
        assert!(manifests.refresh_named(&[root.join("more")]).is_none());
        assert!(manifests.refresh_named(&[root.join("..data")]).is_none());
        assert!(
            manifests
                .refresh_named(&[PathBuf::from("/elsewhere.yaml")])
                .is_none()
        );
        assert!(manifests.refresh_named(&[]).is_none());
        // A removed directory that held files.
        std::fs::write(
            root.join("more/api.yaml"),
            SERVICE.replace("name: web", "name: api"),
        )
        .unwrap();
        assert!(manifests.rescan().unwrap().changed);
        std::fs::remove_dir_all(root.join("more")).unwrap();
        assert!(manifests.refresh_named(&[root.join("more")]).is_none());
        assert!(manifests.rescan().unwrap().changed);
        assert_eq!(services(&manifests), [named("web")]);
    }

    #[test]
    fn values_read_as_serde_yaml_reads_them() {
        let text = "a: &x {b: [1, -2, 2.5, true, null, ~, 'q']}\nc: *x\n!t d: !u e\n";
        let mut budget = FileBudget::default().document();
        let doc = serde_yaml::Deserializer::from_str(text).next().unwrap();
        let ours = budget.seed(Slot::Root).deserialize(doc).unwrap();
        let theirs: Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(ours, theirs);
        // A repeated key is an error, as in serde_yaml.
        let doc = serde_yaml::Deserializer::from_str("a: 1\na: 2\n")
            .next()
            .unwrap();
        let e = FileBudget::default()
            .document()
            .seed(Slot::Root)
            .deserialize(doc)
            .unwrap_err();
        assert!(e.to_string().contains("duplicate entry with key a"), "{e}");
    }

    /// The watcher's own read of a file raises an open notification that
    /// must not count as a change, or every read would cause the next.
    /// Over a real inotify watch: events arrive in order, so once a later
    /// write's close is seen, the read's notification has been seen too.
    #[test]
    fn reading_a_file_is_not_a_change_and_writing_one_is() {
        use notify::Watcher;
        use std::sync::mpsc;
        use std::time::Duration;

        let dir = tempfile::tempdir().unwrap();
        let (tx, rx) = mpsc::channel();
        let mut watcher = notify::recommended_watcher(move |e: notify::Result<notify::Event>| {
            let _ = tx.send(e.unwrap());
        })
        .unwrap();
        watcher
            .watch(dir.path(), notify::RecursiveMode::Recursive)
            .unwrap();
        // The changes `is_change` lets through, up to `path`'s closing write.
        let changes_until_written = |path: &Path| {
            let mut changes = Vec::new();
            loop {
                // A bound for a failing test only; events come at once.
                let e = rx.recv_timeout(Duration::from_secs(10)).unwrap();
                let written = e.kind
                    == notify::EventKind::Access(notify::event::AccessKind::Close(
                        notify::event::AccessMode::Write,
                    ));
                let named = e
                    .paths
                    .iter()
                    .any(|p| p.ends_with(path.file_name().unwrap()));
                if is_change(&e.kind) {
                    changes.extend(e.paths);
                }
                if written && named {
                    return changes;
                }
            }
        };
        let web = dir.path().join("web.yaml");
        fs::write(&web, "a: 1\n").unwrap();
        assert!(
            changes_until_written(&web)
                .iter()
                .any(|p| p.ends_with("web.yaml"))
        );
        fs::read_to_string(&web).unwrap();
        let later = dir.path().join("later.yaml");
        fs::write(&later, "b: 1\n").unwrap();
        let changes = changes_until_written(&later);
        assert!(
            !changes.iter().any(|p| p.ends_with("web.yaml")),
            "the read counted as a change: {changes:?}"
        );
    }
}
