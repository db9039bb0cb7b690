//! `rewrite-target` and `use-regex`: the path sent upstream and how paths match.

use crate::annotations::{
    Draft,
    Fallback::{Ignored, PathDenied},
    registry::{AnnotationSpec, Scope::Path, Support::Partly, spec},
    values,
};

/// A rewrite template: literal path text and `$1`..`$9` capture references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RewriteTarget {
    /// `/$2/x` → `[Literal("/"), Capture(2), Literal("/x")]`. Adjacent
    /// literals are merged.
    pub segments: Vec<RewriteSegment>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RewriteSegment {
    /// Path text, copied as written (percent-escapes kept).
    Literal(String),
    /// A capture group of the path's regular expression, 1 to 9.
    Capture(u8),
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "rewrite-target",
        "",
        Path,
        PathDenied,
        Partly("only `$1`..`$9` may follow `$`: nginx variables and query strings are refused"),
        "Path sent upstream instead of the request's: a template with capture references `$1`..`$9` of the path's regular expression (ingress-nginx makes the paths regular expressions when this is set).",
        rewrite_target,
    ),
    spec(
        "use-regex",
        "false",
        Path,
        Ignored,
        Partly(
            "patterns use the regex crate's syntax, not PCRE: no look-around or backreferences; Exact paths on a regex host stay exact",
        ),
        "Paths are case-insensitive regular expressions matched from the start, for every Ingress of the same host (as in ingress-nginx; the other Ingresses get a RegexHost warning). Booleans take Go's spellings: true/false, 1/0, t/f, TRUE/FALSE, True/False.",
        use_regex,
    ),
];

fn rewrite_target(v: &str, d: &mut Draft) -> Result<(), String> {
    let segments = values::rewrite_template(v)?;
    d.out.rewrite_target = Some(RewriteTarget { segments });
    Ok(())
}

pub(crate) fn use_regex(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.use_regex = values::go_bool(v)?;
    Ok(())
}
