//! `proxy-body-size`: the largest request body.

use super::prelude::*;

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

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::BodySize;
    use crate::annotations::tests::*;

    pub(crate) const VALID: &[Valid] = &[
        // proxy-body-size
        Valid {
            set: &[("proxy-body-size", "0")],
            want: |a| a.proxy_body_size = Some(BodySize::Unlimited),
        },
        Valid {
            set: &[("proxy-body-size", "0m")],
            want: |a| a.proxy_body_size = Some(BodySize::Unlimited),
        },
        Valid {
            set: &[("proxy-body-size", "1024")],
            want: |a| a.proxy_body_size = Some(BodySize::Bytes(1024)),
        },
        Valid {
            set: &[("proxy-body-size", "8k")],
            want: |a| a.proxy_body_size = Some(BodySize::Bytes(8 << 10)),
        },
        Valid {
            set: &[("proxy-body-size", "8K")],
            want: |a| a.proxy_body_size = Some(BodySize::Bytes(8 << 10)),
        },
        Valid {
            set: &[("proxy-body-size", "8m")],
            want: |a| a.proxy_body_size = Some(BodySize::Bytes(8 << 20)),
        },
        Valid {
            set: &[("proxy-body-size", "8M")],
            want: |a| a.proxy_body_size = Some(BodySize::Bytes(8 << 20)),
        },
        Valid {
            set: &[("proxy-body-size", "2g")],
            want: |a| a.proxy_body_size = Some(BodySize::Bytes(2 << 30)),
        },
        Valid {
            set: &[("proxy-body-size", "2G")],
            want: |a| a.proxy_body_size = Some(BodySize::Bytes(2 << 30)),
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[Invalid {
        name: "proxy-body-size",
        fallback: Fallback::Ignored,
        values: &[
            "-1",
            "1t",
            "1.5m",
            "abc",
            "1mb",
            "8b",
            "99999999999999999999",
            "18446744073709551615k",
        ],
        context: NO_CONTEXT,
        want: |_| {},
    }];
}
