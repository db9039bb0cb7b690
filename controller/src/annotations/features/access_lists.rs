//! IP access lists: `allowlist-source-range` (alias
//! `whitelist-source-range`) and `denylist-source-range`.

use super::prelude::*;

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
    d.out.allowlist_source_range = Some(source_ranges(v)?);
    Ok(())
}

fn denylist_source_range(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.denylist_source_range = Some(source_ranges(v)?);
    Ok(())
}

/// Most entries in one source-range list: far more than any real list, few
/// enough that a list stays cheap to build.
const MAX_SOURCE_RANGES: usize = 100_000;

/// A comma-separated list of CIDR ranges or single addresses, IPv4 or IPv6
/// (`allowlist-source-range`). Every entry must parse: an access list with
/// a typo must not open or close more than it says, so the caller fails
/// closed on an error.
pub(super) fn source_ranges(s: &str) -> Result<Vec<ipnet::IpNet>, String> {
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if out.len() == MAX_SOURCE_RANGES {
            return Err(format!("more than {MAX_SOURCE_RANGES} entries"));
        }
        let net = portico_dataplane::forwarded::parse_range(entry).map_err(|e| e.to_string())?;
        out.push(net);
    }
    if out.is_empty() {
        return Err("no entries".into());
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;

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
