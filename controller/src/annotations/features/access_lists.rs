//! IP access lists: `allowlist-source-range` (alias
//! `whitelist-source-range`) and `denylist-source-range`.

use crate::annotations::{
    Draft,
    Fallback::PathDenied,
    registry::{AnnotationSpec, Scope::Ingress, Support::Full, spec},
    values,
};

pub(super) const SPECS: &[AnnotationSpec] = &[
    AnnotationSpec {
        aliases: &["whitelist-source-range"],
        ..spec(
            "allowlist-source-range",
            "",
            Ingress,
            PathDenied,
            Full,
            "Only clients in these ranges may use the Ingress (CIDR ranges or addresses, IPv4 and IPv6, comma-separated); others get 403. Overrides `--allowlist-source-range`. The client is the peer, the PROXY protocol source, or with `--trusted-proxies` the `X-Forwarded-For` entry (docs/client-address.md). Fails closed: an invalid list makes the paths answer 503.",
            allowlist_source_range,
        )
    },
    spec(
        "denylist-source-range",
        "",
        Ingress,
        PathDenied,
        Full,
        "Clients in these ranges get 403 (checked before the allow list, as nginx's `deny` before `allow`). Overrides `--denylist-source-range`. Fails closed: an invalid list makes the paths answer 503.",
        denylist_source_range,
    ),
];

/// Invalid entries are dropped one by one (each with a diagnostic); the
/// valid ones are kept, duplicates once.
fn allowlist_source_range(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.allowlist_source_range = Some(values::source_ranges(v)?);
    Ok(())
}

fn denylist_source_range(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.denylist_source_range = Some(values::source_ranges(v)?);
    Ok(())
}
