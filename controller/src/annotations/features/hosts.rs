//! `server-alias`: more host names for an Ingress's rules.

use crate::annotations::{
    Draft,
    Fallback::Ignored,
    list,
    registry::{AnnotationSpec, Scope::Ingress, Support::Partly, spec},
    values,
};

pub(super) const SPECS: &[AnnotationSpec] = &[spec(
    "server-alias",
    "",
    Ingress,
    Ignored,
    Partly("no regular-expression names; invalid entries are dropped and the rest kept"),
    "More host names served like the Ingress's hosts, comma-separated; `*.example.com` wildcards allowed.",
    server_alias,
)];

fn server_alias(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.server_alias = list(v, d, values::server_name)?;
    Ok(())
}
