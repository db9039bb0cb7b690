//! `portico validate`: the same parsing and translation as `portico run`,
//! offline, with every finding printed. What a platform team runs in CI.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::cli::ValidateArgs;
use crate::diagnostics::Severity;
use crate::snapshot::{Object, Snapshot, key};
use crate::source::manifests::{ManifestError, Problem, parse_documents, read_file};
use crate::translate::class::class_verdict;
use crate::translate::translate;

/// The report text and whether anything was an error.
pub fn validate(args: &ValidateArgs) -> (String, bool) {
    let mut files = Vec::new();
    let mut errors: Vec<ManifestError> = Vec::new();
    for p in &args.paths {
        collect(p, &mut files, &mut errors);
    }
    files.sort();
    let mut objects: Vec<Object> = Vec::new();
    for f in &files {
        match read_file(f) {
            Ok(text) => {
                let parsed = parse_documents(f, &text);
                objects.extend(parsed.objects);
                errors.extend(parsed.errors);
            }
            Err(e) => errors.push(e),
        }
    }
    let snap = Snapshot::from_objects(objects);
    let t = translate(&snap, &args.class.settings());

    let mut out = String::new();
    let mut failed = !errors.is_empty();
    for e in &errors {
        let _ = writeln!(out, "error: {e}");
    }
    let mut findings = 0;
    for (obj, report) in &t.reports {
        if report.diagnostics.is_empty() {
            let _ = writeln!(
                out,
                "ok: {obj}: {} of {} rules served",
                report.rules_served, report.rules_total
            );
            continue;
        }
        for d in &report.diagnostics {
            findings += 1;
            failed |= d.severity == Severity::Error;
            let _ = writeln!(
                out,
                "{}: {obj}: {}: {}: {}",
                d.severity, d.field, d.reason, d.message
            );
        }
    }
    // Ingresses of other controllers are not errors, but a platform team
    // validating its manifests wants to see that they will not be served.
    let settings = args.class.settings();
    let mut skipped = 0;
    for ing in &snap.ingresses {
        if let Err(why) = class_verdict(ing, &snap.ingress_classes, &settings) {
            skipped += 1;
            let (ns, name) = key(ing.as_ref());
            let _ = writeln!(out, "skipped: Ingress {ns}/{name}: not ours: {why}");
        }
    }
    let ingresses = snap.ingresses.len();
    let served = t.reports.len();
    let _ = writeln!(
        out,
        "{} files, {ingresses} Ingresses, {} HTTPRoutes; {served} objects served, {skipped} Ingresses of other classes skipped, {findings} findings, {} manifest errors",
        files.len(),
        snap.http_routes.len(),
        errors.len()
    );
    (out, failed)
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
