//! Headers Portico adds: `x-forwarded-prefix` upstream, `custom-headers` on
//! responses.

use crate::annotations::{
    Draft,
    Fallback::Ignored,
    registry::{
        AnnotationSpec,
        Scope::Path,
        Support::{Full, Partly},
        spec,
    },
    values,
};

pub(super) const FORWARDED_PREFIX: &[AnnotationSpec] = &[spec(
    "x-forwarded-prefix",
    "",
    Path,
    Ignored,
    Full,
    "Sends `X-Forwarded-Prefix` with this URL path (e.g. `/api`) to the backend.",
    x_forwarded_prefix,
)];

pub(super) const CUSTOM: &[AnnotationSpec] = &[spec(
    "custom-headers",
    "",
    Path,
    Ignored,
    Partly(
        "the value is the headers themselves, one `Name: value` per line, not a ConfigMap reference: Portico does not read ConfigMaps",
    ),
    "Response headers to set, one `Name: value` per line; the framing and connection headers (Content-Length, Transfer-Encoding, Connection, ...) and Host are refused, so the whole annotation is ignored.",
    custom_headers,
)];

fn x_forwarded_prefix(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.x_forwarded_prefix = Some(values::path_header_value(v)?);
    Ok(())
}

fn custom_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.custom_headers = values::header_lines(v)?;
    Ok(())
}
