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

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::{
        Fallback,
        tests::{Invalid, NO_CONTEXT, Valid},
    };

    pub(crate) const VALID: &[Valid] = &[
        // client address lists
        Valid {
            set: &[(
                "allowlist-source-range",
                " 10.0.0.0/8, 192.0.2.7 ,2001:db8::/32,, 10.1.2.3/8",
            )],
            want: |a| {
                a.allowlist_source_range = Some(
                    ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32", "10.0.0.0/8"]
                        .iter()
                        .map(|n| n.parse().unwrap())
                        .collect(),
                )
            },
        },
        Valid {
            set: &[("whitelist-source-range", "127.0.0.1")],
            want: |a| a.allowlist_source_range = Some(vec!["127.0.0.1/32".parse().unwrap()]),
        },
        Valid {
            set: &[("denylist-source-range", "::1/128")],
            want: |a| a.denylist_source_range = Some(vec!["::1/128".parse().unwrap()]),
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        // One bad entry fails the whole list closed (paths answer 503).
        Invalid {
            name: "allowlist-source-range",
            fallback: Fallback::PathDenied,
            values: &[
                "10.0.0.0/8, 10.0.0.0/33",
                "all",
                "10.0.0.0/8 192.0.2.0/24",
                ",",
                "::/129",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "denylist-source-range",
            fallback: Fallback::PathDenied,
            values: &["300.1.2.3", "10.0.0.0/8;rm"],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];
}
