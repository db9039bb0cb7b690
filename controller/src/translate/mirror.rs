//! Request mirroring from the `mirror-*` annotations: the target's host
//! must name a Service of the snapshot, whose endpoints the copies go to
//! (as an error backend's). Portico does not resolve other hosts by DNS
//! for copies: a target it cannot resolve is reported and mirrors nothing,
//! and the paths serve as if it were not there.

use portico_dataplane::model::Mirror;

use super::ObjectReport;
use super::auth::cluster_service_ref;
use super::backends;
use crate::annotations::MirrorAnnotations;
use crate::diagnostics::Diagnostic;
use crate::snapshot::Snapshot;

/// The field diagnostics about the target are reported on.
const FIELD: &str = "metadata.annotations[mirror-target]";

/// The mirror `a` asks for, without its route (the translator sets it per
/// route); `None` when off or when the target cannot be resolved (reported
/// on `report`).
pub(super) fn ingress_mirror(
    snap: &Snapshot,
    a: &MirrorAnnotations,
    report: &mut ObjectReport,
) -> Option<Mirror> {
    let target = a.target.as_ref()?;
    let mut refuse = |reason: &'static str, message: String| {
        report.diagnostics.push(Diagnostic::warning(
            reason,
            FIELD,
            format!("{message}; no requests are mirrored"),
        ));
        None
    };
    if target.https {
        return refuse(
            "InvalidAnnotation",
            "https mirror targets are not supported: name a Service over http".into(),
        );
    }
    let port = target.port.unwrap_or(80);
    let Some(service) = cluster_service_ref(&target.host, port) else {
        return refuse(
            "InvalidAnnotation",
            format!(
                "{} is not a Service's cluster name (name.namespace.svc[.cluster.local]); other hosts are not mirrored to",
                target.host
            ),
        );
    };
    let backend = match backends::error_backend(snap, &service) {
        Ok(b) => b,
        Err(e) => return refuse(e.reason, e.message),
    };
    let mut m = Mirror::to_backend(String::new(), backend);
    m.request_body = a.request_body;
    m.host = Some(
        a.host
            .clone()
            .unwrap_or_else(|| target.default_host().to_owned()),
    );
    m.path = target.path.clone();
    Some(m)
}
