//! `proxy-body-size`: the largest request body.

use crate::annotations::{
    Draft,
    Fallback::Ignored,
    registry::{AnnotationSpec, Scope::Path, Support::Full, spec},
    values,
};

pub(super) const SPECS: &[AnnotationSpec] = &[spec(
    "proxy-body-size",
    "1m",
    Path,
    Ignored,
    Full,
    "Largest request body accepted (larger: 413): bytes, or a number with `k`, `m` or `g` (either case), e.g. `8m`; `0` means unlimited.",
    proxy_body_size,
)];

fn proxy_body_size(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.proxy_body_size = Some(values::body_size(v)?);
    Ok(())
}
