//! `server-alias`: more host names for an Ingress's rules.

use super::prelude::*;
use crate::annotations::list;

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

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;

    pub(crate) const VALID: &[Valid] = &[
        // server-alias
        Valid {
            set: &[("server-alias", "a.example.com, *.Example.org")],
            want: |a| a.server_alias = vec!["a.example.com".into(), "*.example.org".into()],
        },
        Valid {
            set: &[("server-alias", "b.com,B.com,c.com.,")],
            want: |a| a.server_alias = vec!["b.com".into(), "c.com".into()],
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[Invalid {
        name: "server-alias",
        fallback: Fallback::Ignored,
        values: &[",", " , ,"],
        context: NO_CONTEXT,
        want: |_| {},
    }];

    #[test]
    fn server_alias_drops_invalid_entries_and_keeps_the_rest() {
        let value = "a.example.com, bad_host, *.b.example.com, ~^www\\d+$, x.*.example.com";
        let parsed = parse_checked(&map(NGINX_PREFIX, &[("server-alias", value)]));
        assert_eq!(
            parsed.ingress.server_alias,
            vec!["a.example.com".to_owned(), "*.b.example.com".to_owned()]
        );
        assert_eq!(parsed.diagnostics.len(), 3, "{:#?}", parsed.diagnostics);
        for (d, entry) in
            parsed
                .diagnostics
                .iter()
                .zip(["bad_host", "~^www\\\\d+$", "x.*.example.com"])
        {
            assert_eq!(d.kind, IGNORED);
            assert!(d.message.contains(entry), "{} lacks {entry}", d.message);
        }
    }
}
