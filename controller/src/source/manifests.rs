//! The standalone manifests mode: every `*.yaml`/`*.yml` under a directory,
//! multi-document, read as the API server would store them.
//!
//! A file that does not parse is reported (file, document index, reason) and
//! its last good objects keep serving: one bad edit never empties the table.

use std::collections::BTreeMap;
use std::fs;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use serde_yaml::Value;

use crate::snapshot::{Object, Snapshot};

/// One document that could not be read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ManifestError {
    pub file: PathBuf,
    /// 0-based index of the document in the file; `None` for errors about the
    /// whole file (unreadable, not YAML at all).
    pub document: Option<usize>,
    pub reason: String,
}

impl std::fmt::Display for ManifestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.document {
            Some(d) => write!(f, "{}: document {d}: {}", self.file.display(), self.reason),
            None => write!(f, "{}: {}", self.file.display(), self.reason),
        }
    }
}

/// Documents of kinds Portico does not read (Deployments, ConfigMaps, ...)
/// are skipped; they commonly share a directory with Ingresses.
#[derive(Debug, Default)]
pub struct Parsed {
    pub objects: Vec<Object>,
    pub errors: Vec<ManifestError>,
    /// `(document index, "apiVersion/kind")` of skipped documents.
    pub skipped: Vec<(usize, String)>,
}

/// Parses a multi-document YAML text.
pub fn parse_documents(file: &Path, text: &str) -> Parsed {
    let mut out = Parsed::default();
    for (idx, doc) in serde_yaml::Deserializer::from_str(text).enumerate() {
        let err = |reason: String| ManifestError {
            file: file.to_owned(),
            document: Some(idx),
            reason,
        };
        let value = match Value::deserialize(doc) {
            Ok(v) => v,
            Err(e) => {
                out.errors.push(err(e.to_string()));
                // The YAML stream itself is broken: later documents cannot
                // be located reliably.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        if let Err(reason) = parse_value(value, idx, &mut out) {
            out.errors.push(err(reason));
        }
    }
    out
}

fn parse_value(value: Value, idx: usize, out: &mut Parsed) -> Result<(), String> {
    let api_version = value
        .get("apiVersion")
        .and_then(Value::as_str)
        .ok_or("apiVersion is missing")?
        .to_owned();
    let kind = value
        .get("kind")
        .and_then(Value::as_str)
        .ok_or("kind is missing")?
        .to_owned();
    fn typed<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, String> {
        serde_yaml::from_value(v).map_err(|e| format!("{what}: {e}"))
    }
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
            | ("v1", "Service" | "Secret")
            | ("discovery.k8s.io/v1", "EndpointSlice")
    );
    if known && name_missing(&value) {
        return Err(format!("{kind}: metadata.name is missing"));
    }
    let object = match (api_version.as_str(), kind.as_str()) {
        ("networking.k8s.io/v1", "Ingress") => {
            Object::Ingress(Arc::new(namespaced(typed(value, "Ingress")?)))
        }
        ("networking.k8s.io/v1", "IngressClass") => {
            Object::IngressClass(Arc::new(typed(value, "IngressClass")?))
        }
        ("portico.dev/v1alpha1", "HTTPRoute") => {
            Object::HttpRoute(Arc::new(namespaced(typed(value, "HTTPRoute")?)))
        }
        ("v1", "Service") => Object::Service(Arc::new(namespaced(typed(value, "Service")?))),
        ("discovery.k8s.io/v1", "EndpointSlice") => {
            Object::EndpointSlice(Arc::new(namespaced(typed(value, "EndpointSlice")?)))
        }
        ("v1", "Secret") => {
            let secret: k8s_openapi::api::core::v1::Secret = typed(value, "Secret")?;
            if secret.type_.as_deref() != Some("kubernetes.io/tls") {
                out.skipped
                    .push((idx, "v1/Secret (not kubernetes.io/tls)".into()));
                return Ok(());
            }
            Object::Secret(Arc::new(namespaced(secret)))
        }
        ("v1", "List") => {
            let items = value
                .get("items")
                .and_then(Value::as_sequence)
                .cloned()
                .unwrap_or_default();
            for (i, item) in items.into_iter().enumerate() {
                parse_value(item, idx, out).map_err(|e| format!("items[{i}]: {e}"))?;
            }
            return Ok(());
        }
        _ => {
            out.skipped.push((idx, format!("{api_version}/{kind}")));
            return Ok(());
        }
    };
    out.objects.push(object);
    Ok(())
}

/// The manifest directory and the last good objects of each file.
#[derive(Debug)]
pub struct ManifestDir {
    root: PathBuf,
    files: BTreeMap<PathBuf, FileState>,
}

#[derive(Debug, Default)]
struct FileState {
    fingerprint: Option<u64>,
    /// The last good parse: served until the file parses again.
    objects: Vec<Object>,
    /// Errors of the current content; empty when it parsed.
    errors: Vec<ManifestError>,
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

    /// Re-reads every manifest file; files whose bytes did not change are not
    /// parsed again.
    pub fn rescan(&mut self) -> io::Result<Scan> {
        let mut found = Vec::new();
        collect_files(&self.root, &mut found)?;
        found.sort();
        let mut scan = Scan::default();
        let before = self.files.len();
        self.files
            .retain(|path, _| found.binary_search(path).is_ok());
        scan.changed |= self.files.len() != before;
        for path in found {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                // Deleted between listing and reading: the next scan sees it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let state = self.files.entry(path.clone()).or_default();
                    state.errors = vec![ManifestError {
                        file: path,
                        document: None,
                        reason: e.to_string(),
                    }];
                    continue;
                }
            };
            let mut h = DefaultHasher::new();
            bytes.hash(&mut h);
            let fingerprint = h.finish();
            let state = self.files.entry(path.clone()).or_default();
            if state.fingerprint == Some(fingerprint) {
                continue;
            }
            state.fingerprint = Some(fingerprint);
            scan.changed = true;
            let parsed = match std::str::from_utf8(&bytes) {
                Ok(text) => parse_documents(&path, text),
                Err(e) => Parsed {
                    errors: vec![ManifestError {
                        file: path.clone(),
                        document: None,
                        reason: format!("not UTF-8: {e}"),
                    }],
                    ..Default::default()
                },
            };
            if parsed.errors.is_empty() {
                state.objects = parsed.objects;
                state.errors.clear();
            } else {
                state.errors = parsed.errors;
            }
        }
        Ok(scan)
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

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
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
            out.push(path);
        }
    }
    Ok(())
}
