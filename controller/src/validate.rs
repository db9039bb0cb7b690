//! `portico validate`: the same parsing and translation as `portico run`,
//! offline, with every finding printed. What a platform team runs in CI,
//! usually on an application repository that does not hold the chart's
//! IngressClass, and on `helm template` or `kustomize build` output.
//!
//! Exit codes: [`EXIT_CLEAN`], [`EXIT_FINDINGS`], [`EXIT_UNREADABLE`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::cli::{ValidateArgs, ValidateFormat};
use crate::diagnostics::{Kind, ObjectRef, Severity};
use crate::snapshot::{Object, Snapshot, key};
use crate::source::manifests::{
    MAX_FILE_BYTES, ManifestError, NotRead, Problem, parse_documents, read_file,
};
use crate::translate::class::{assumed_class, class_verdict};
use crate::translate::{Settings, translate};

/// Nothing to report (under `--strict`, not even a warning).
pub const EXIT_CLEAN: u8 = 0;
/// Something is not served as written (under `--strict`, also warnings and
/// documents that are not read).
pub const EXIT_FINDINGS: u8 = 1;
/// A path or standard input could not be read: nothing reliable was said.
pub const EXIT_UNREADABLE: u8 = 2;

/// The path that stands for standard input.
const STDIN: &str = "-";
/// Where annotation findings point to.
const ANNOTATIONS_DOC: &str = "docs/annotations.md";

/// The report text and the exit code.
pub fn validate(args: &ValidateArgs) -> (String, u8) {
    let input = read_input(&args.paths);
    let settings = args.class.settings();
    let mut objects = input.objects;
    let assumed_class = assume_class(&mut objects, &settings);
    let snap = Snapshot::from_objects(objects);
    let t = translate(&snap, &settings);

    let mut findings = Vec::new();
    for e in &input.errors {
        findings.push(Finding {
            severity: Severity::Error,
            object: None,
            file: Some(e.file.clone()),
            document: e.document,
            field: String::new(),
            reason: "InvalidManifest",
            message: e.reason.to_string(),
        });
    }
    let mut served = Vec::new();
    for (obj, report) in &t.reports {
        if report.diagnostics.is_empty() {
            served.push((obj.clone(), report.rules_served, report.rules_total));
        }
        for d in &report.diagnostics {
            findings.push(Finding {
                severity: d.severity,
                object: Some(obj.clone()),
                file: input.files_of.get(obj).cloned(),
                document: None,
                field: d.field.clone(),
                reason: d.reason,
                message: d.message.clone(),
            });
        }
    }
    for (file, n) in &input.not_read {
        findings.push(Finding {
            severity: Severity::Warning,
            object: None,
            file: Some(file.clone()),
            document: Some(n.document),
            field: String::new(),
            reason: "NotRead",
            message: match n.why {
                Some(why) => format!("{} ({}) is not read: {why}", n.object, n.kind),
                None => format!("{} ({}) is not read by Portico", n.object, n.kind),
            },
        });
    }
    // Ingresses of other controllers are not findings, but a platform team
    // validating its manifests wants to see that they will not be served.
    let skipped: Vec<(ObjectRef, String)> = snap
        .ingresses
        .iter()
        .filter_map(|ing| {
            let why = class_verdict(ing, &snap.ingress_classes, &settings).err()?;
            let (namespace, name) = key(ing.as_ref());
            Some((
                ObjectRef {
                    kind: Kind::Ingress,
                    namespace,
                    name,
                },
                why,
            ))
        })
        .collect();

    let unreadable = input
        .errors
        .iter()
        .any(|e| matches!(e.reason, Problem::Unreadable(_)));
    let failing = findings
        .iter()
        .any(|f| f.severity == Severity::Error || args.strict);
    let code = if unreadable {
        EXIT_UNREADABLE
    } else if failing {
        EXIT_FINDINGS
    } else {
        EXIT_CLEAN
    };
    let summary = Summary {
        files: input.files,
        ingresses: snap.ingresses.len(),
        http_routes: snap.http_routes.len(),
        served: t.reports.len(),
        skipped: skipped.len(),
        findings: findings.len() - input.errors.len() - input.not_read.len(),
        manifest_errors: input.errors.len(),
        not_read: input.not_read.len(),
    };
    let report = Report {
        assumed_class: assumed_class.then_some(settings.ingress_class.as_str()),
        findings,
        served,
        skipped,
        summary,
        strict: args.strict,
        code,
    };
    let text = match args.output {
        ValidateFormat::Text => report.text(),
        ValidateFormat::Json => report.json(),
        ValidateFormat::Github => report.github(),
    };
    (text, code)
}

/// An application repository rarely holds the IngressClass (the chart
/// installs it). When the input holds no IngressClass at all, the
/// configured class (`--ingress-class`) is taken to be Portico's, so its
/// Ingresses are validated rather than skipped as "not ours". Input that
/// holds IngressClasses is judged by them, as the controller would.
fn assume_class(objects: &mut Vec<Object>, settings: &Settings) -> bool {
    if objects.iter().any(|o| matches!(o, Object::IngressClass(_))) {
        return false;
    }
    objects.push(Object::IngressClass(Arc::new(assumed_class(settings))));
    true
}

/// Everything read from the paths.
#[derive(Default)]
struct Input {
    files: usize,
    objects: Vec<Object>,
    errors: Vec<ManifestError>,
    not_read: Vec<(PathBuf, NotRead)>,
    /// The file each object came from, for findings to point at.
    files_of: BTreeMap<ObjectRef, PathBuf>,
}

fn read_input(paths: &[PathBuf]) -> Input {
    let mut input = Input::default();
    let mut files = Vec::new();
    let mut stdin = false;
    for p in paths {
        if p.as_os_str() == STDIN {
            stdin = true;
        } else {
            collect(p, &mut files, &mut input.errors);
        }
    }
    files.sort();
    let mut texts: Vec<(PathBuf, Result<String, ManifestError>)> = Vec::new();
    if stdin {
        texts.push((PathBuf::from("<stdin>"), read_stdin()));
    }
    texts.extend(files.into_iter().map(|f| {
        let text = read_file(&f);
        (f, text)
    }));
    input.files = texts.len();
    for (file, text) in texts {
        let text = match text {
            Ok(t) => t,
            Err(e) => {
                input.errors.push(e);
                continue;
            }
        };
        let parsed = parse_documents(&file, &text);
        for o in &parsed.objects {
            if let Some(r) = object_ref(o) {
                input.files_of.entry(r).or_insert_with(|| file.clone());
            }
        }
        input.objects.extend(parsed.objects);
        input.errors.extend(parsed.errors);
        input
            .not_read
            .extend(parsed.skipped.into_iter().map(|n| (file.clone(), n)));
    }
    input
}

/// Standard input, under the same size limit as a file.
fn read_stdin() -> Result<String, ManifestError> {
    let err = |reason| ManifestError {
        file: PathBuf::from("<stdin>"),
        document: None,
        reason,
    };
    let mut bytes = Vec::new();
    std::io::stdin()
        .lock()
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| err(Problem::Unreadable(e.to_string())))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(err(Problem::FileTooLarge {
            size: bytes.len() as u64,
        }));
    }
    String::from_utf8(bytes).map_err(|e| err(Problem::NotUtf8(e.utf8_error().to_string())))
}

fn object_ref(o: &Object) -> Option<ObjectRef> {
    let (kind, (namespace, name)) = match o {
        Object::Ingress(x) => (Kind::Ingress, key(x.as_ref())),
        Object::IngressClass(x) => (Kind::IngressClass, key(x.as_ref())),
        Object::HttpRoute(x) => (Kind::HttpRoute, key(x.as_ref())),
        Object::Service(x) => (Kind::Service, key(x.as_ref())),
        Object::EndpointSlice(x) => (Kind::EndpointSlice, key(x.as_ref())),
        Object::Secret(x) => (Kind::Secret, key(x.as_ref())),
        Object::GatewayClass(x) => (Kind::GatewayClass, key(x.as_ref())),
        Object::Gateway(x) => (Kind::Gateway, key(x.as_ref())),
        Object::GatewayHttpRoute(x) => (Kind::GatewayHttpRoute, key(x.as_ref())),
        Object::GrpcRoute(x) => (Kind::GrpcRoute, key(x.as_ref())),
        Object::ReferenceGrant(x) => (Kind::ReferenceGrant, key(x.as_ref())),
        Object::Namespace(_) => return None,
    };
    Some(ObjectRef {
        kind,
        namespace,
        name,
    })
}

/// One thing to tell the user, whatever its source.
struct Finding {
    severity: Severity,
    object: Option<ObjectRef>,
    file: Option<PathBuf>,
    document: Option<usize>,
    field: String,
    reason: &'static str,
    message: String,
}

impl Finding {
    fn doc(&self) -> Option<&'static str> {
        self.field
            .starts_with("metadata.annotations")
            .then_some(ANNOTATIONS_DOC)
    }

    /// Where, for text: the object, else the file and document.
    fn place(&self) -> String {
        match (&self.object, &self.file) {
            (Some(o), _) => o.to_string(),
            (None, Some(f)) => match self.document {
                Some(d) => format!("{}: document {d}", f.display()),
                None => f.display().to_string(),
            },
            (None, None) => String::new(),
        }
    }
}

struct Summary {
    files: usize,
    ingresses: usize,
    http_routes: usize,
    served: usize,
    skipped: usize,
    findings: usize,
    manifest_errors: usize,
    not_read: usize,
}

struct Report<'a> {
    assumed_class: Option<&'a str>,
    findings: Vec<Finding>,
    served: Vec<(ObjectRef, usize, usize)>,
    skipped: Vec<(ObjectRef, String)>,
    summary: Summary,
    strict: bool,
    code: u8,
}

impl Report<'_> {
    fn assumption(&self) -> Option<String> {
        self.assumed_class.map(|class| {
            format!(
                "no IngressClass in the input: Ingresses of class {class:?} are validated as Portico's (the chart installs that IngressClass)"
            )
        })
    }

    fn text(&self) -> String {
        let mut out = String::new();
        if let Some(note) = self.assumption() {
            let _ = writeln!(out, "note: {note}");
        }
        for f in &self.findings {
            match (f.reason, &f.object) {
                ("InvalidManifest", _) => {
                    let _ = writeln!(out, "error: {}: {}", f.place(), f.message);
                }
                ("NotRead", _) => {
                    let _ = writeln!(out, "not read: {}: {}", f.place(), f.message);
                }
                _ => {
                    let _ = writeln!(
                        out,
                        "{}: {}: {}: {}: {}",
                        f.severity,
                        f.place(),
                        f.field,
                        f.reason,
                        f.message
                    );
                }
            }
        }
        for (obj, served, total) in &self.served {
            let _ = writeln!(out, "ok: {obj}: {served} of {total} rules served");
        }
        for (obj, why) in &self.skipped {
            let _ = writeln!(out, "skipped: {obj}: not ours: {why}");
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "{} files, {} Ingresses, {} HTTPRoutes; {} objects served, {} Ingresses of other classes skipped, {} findings, {} manifest errors, {} documents not read{}",
            s.files,
            s.ingresses,
            s.http_routes,
            s.served,
            s.skipped,
            s.findings,
            s.manifest_errors,
            s.not_read,
            if self.strict { " (strict)" } else { "" },
        );
        out
    }

    fn json(&self) -> String {
        let object = |o: &ObjectRef| json!({ "kind": o.kind.as_str(), "namespace": o.namespace, "name": o.name });
        let findings: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "severity": f.severity.to_string(),
                    "object": f.object.as_ref().map(object),
                    "file": f.file.as_ref().map(|p| p.display().to_string()),
                    "document": f.document,
                    "field": f.field,
                    "reason": f.reason,
                    "message": f.message,
                    "doc": f.doc(),
                })
            })
            .collect();
        let served: Vec<Value> = self
            .served
            .iter()
            .map(|(o, served, total)| {
                json!({ "object": object(o), "rules_served": served, "rules_total": total })
            })
            .collect();
        let skipped: Vec<Value> = self
            .skipped
            .iter()
            .map(|(o, why)| json!({ "object": object(o), "reason": why }))
            .collect();
        let s = &self.summary;
        let doc = json!({
            "exit_code": self.code,
            "strict": self.strict,
            "note": self.assumption(),
            "findings": findings,
            "served": served,
            "skipped": skipped,
            "summary": {
                "files": s.files,
                "ingresses": s.ingresses,
                "http_routes": s.http_routes,
                "objects_served": s.served,
                "skipped": s.skipped,
                "findings": s.findings,
                "manifest_errors": s.manifest_errors,
                "not_read": s.not_read,
            },
        });
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_else(|e| {
            // Only maps with non-string keys fail to serialise; there are none.
            format!("{{\"error\": \"{e}\"}}")
        });
        text.push('\n');
        text
    }

    /// GitHub Actions workflow commands: one annotation per finding, on the
    /// file it came from when known. Warnings stay warnings under
    /// `--strict`; the exit code fails the step.
    fn github(&self) -> String {
        let mut out = String::new();
        if let Some(note) = self.assumption() {
            let _ = writeln!(
                out,
                "::notice title=portico validate::{}",
                escape_data(&note)
            );
        }
        for f in &self.findings {
            let level = f.severity.as_str();
            let mut props = String::new();
            if let Some(file) = &f.file {
                let _ = write!(
                    props,
                    "file={},",
                    escape_property(&file.display().to_string())
                );
            }
            let _ = write!(
                props,
                "title={}",
                escape_property(&format!("portico: {}", f.reason))
            );
            let mut message = f.place();
            if !f.field.is_empty() {
                let _ = write!(message, ": {}", f.field);
            }
            let _ = write!(message, ": {}", f.message);
            let _ = writeln!(out, "::{level} {props}::{}", escape_data(&message));
        }
        let s = &self.summary;
        let _ = writeln!(
            out,
            "portico validate: {} objects served, {} findings, {} manifest errors, {} documents not read",
            s.served, s.findings, s.manifest_errors, s.not_read
        );
        out
    }
}

/// A workflow command's message: `%`, CR and LF would end or forge it.
fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// A workflow command's property value: also `:` and `,`.
fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

fn collect(path: &Path, files: &mut Vec<PathBuf>, errors: &mut Vec<ManifestError>) {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => match std::fs::read_dir(path) {
            Ok(entries) => {
                for entry in entries.flatten() {
                    let p = entry.path();
                    let hidden = entry.file_name().to_string_lossy().starts_with('.');
                    if hidden {
                        continue;
                    }
                    if p.is_dir() {
                        collect(&p, files, errors);
                    } else if matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml"))
                    {
                        files.push(p);
                    }
                }
            }
            Err(e) => errors.push(ManifestError {
                file: path.to_owned(),
                document: None,
                reason: Problem::Unreadable(e.to_string()),
            }),
        },
        Ok(_) => files.push(path.to_owned()),
        Err(e) => errors.push(ManifestError {
            file: path.to_owned(),
            document: None,
            reason: Problem::Unreadable(e.to_string()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workflow_command_values_cannot_forge_a_command() {
        assert_eq!(escape_data("a%b\r\n::error::x"), "a%25b%0D%0A::error::x");
        assert_eq!(escape_property("a:b,c\nd"), "a%3Ab%2Cc%0Ad");
    }

    #[test]
    fn the_class_is_assumed_only_without_ingress_classes() {
        let settings = Settings::default();
        let mut none = Vec::new();
        assert!(assume_class(&mut none, &settings));
        let Some(Object::IngressClass(c)) = none.first() else {
            panic!("no class added: {none:?}");
        };
        assert_eq!(
            c.metadata.name.as_deref(),
            Some(settings.ingress_class.as_str())
        );
        let mut some = none.clone();
        assert!(!assume_class(&mut some, &settings));
        assert_eq!(some.len(), 1);
    }
}
