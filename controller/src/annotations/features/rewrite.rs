//! `rewrite-target` and `use-regex`: the path sent upstream and how paths match.

use super::prelude::*;

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
    let segments = rewrite_template(v)?;
    d.out.rewrite_target = Some(RewriteTarget { segments });
    Ok(())
}

pub(crate) fn use_regex(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.use_regex = values::go_bool(v)?;
    Ok(())
}

/// A rewrite template: path text with `$1`..`$9` capture references. It must
/// start with `/` or with a capture (which then carries the leading slash).
fn rewrite_template(s: &str) -> Result<Vec<RewriteSegment>, String> {
    if !(s.starts_with('/') || s.starts_with('$')) {
        return Err("must start with '/' or a capture reference such as $1".into());
    }
    values::check_path_chars(s, true)?;

    let mut segments = Vec::new();
    let mut literal = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            literal.push(c);
            continue;
        }
        match chars.next() {
            Some(d @ '1'..='9') => {
                if !literal.is_empty() {
                    segments.push(RewriteSegment::Literal(std::mem::take(&mut literal)));
                }
                // The match arm guarantees an ASCII digit 1..=9.
                segments.push(RewriteSegment::Capture(d as u8 - b'0'));
            }
            Some('0') => {
                return Err("$0 is not supported; capture references are $1 to $9".into());
            }
            Some(_) => {
                return Err(
                    "nginx variables are not expanded; only $1 to $9 may follow '$'".into(),
                );
            }
            None => return Err("ends with a lone '$'; capture references are $1 to $9".into()),
        }
    }
    if !literal.is_empty() {
        segments.push(RewriteSegment::Literal(literal));
    }
    Ok(segments)
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;
    use crate::annotations::{RewriteSegment, RewriteTarget};

    pub(crate) const VALID: &[Valid] = &[
        // rewrite-target
        Valid {
            set: &[("rewrite-target", "/")],
            want: |a| {
                a.rewrite_target = Some(RewriteTarget {
                    segments: vec![lit("/")],
                })
            },
        },
        Valid {
            set: &[("rewrite-target", "/$2/x")],
            want: |a| {
                a.rewrite_target = Some(RewriteTarget {
                    segments: vec![lit("/"), RewriteSegment::Capture(2), lit("/x")],
                })
            },
        },
        Valid {
            set: &[("rewrite-target", "$1")],
            want: |a| {
                a.rewrite_target = Some(RewriteTarget {
                    segments: vec![RewriteSegment::Capture(1)],
                })
            },
        },
        Valid {
            set: &[("rewrite-target", " /api/$1$9 ")],
            want: |a| {
                a.rewrite_target = Some(RewriteTarget {
                    segments: vec![
                        lit("/api/"),
                        RewriteSegment::Capture(1),
                        RewriteSegment::Capture(9),
                    ],
                })
            },
        },
        Valid {
            // `$10` is capture 1 followed by "0", as in nginx.
            set: &[("rewrite-target", "/a%20b/$10;v=1")],
            want: |a| {
                a.rewrite_target = Some(RewriteTarget {
                    segments: vec![lit("/a%20b/"), RewriteSegment::Capture(1), lit("0;v=1")],
                })
            },
        },
        // use-regex: every Go strconv.ParseBool spelling
        Valid {
            set: &[("use-regex", "true")],
            want: |a| a.use_regex = true,
        },
        Valid {
            set: &[("use-regex", "True")],
            want: |a| a.use_regex = true,
        },
        Valid {
            set: &[("use-regex", "TRUE")],
            want: |a| a.use_regex = true,
        },
        Valid {
            set: &[("use-regex", "t")],
            want: |a| a.use_regex = true,
        },
        Valid {
            set: &[("use-regex", "T")],
            want: |a| a.use_regex = true,
        },
        Valid {
            set: &[("use-regex", "1")],
            want: |a| a.use_regex = true,
        },
        Valid {
            set: &[("use-regex", "false")],
            want: |_| {},
        },
        Valid {
            set: &[("use-regex", "False")],
            want: |_| {},
        },
        Valid {
            set: &[("use-regex", "FALSE")],
            want: |_| {},
        },
        Valid {
            set: &[("use-regex", "f")],
            want: |_| {},
        },
        Valid {
            set: &[("use-regex", "F")],
            want: |_| {},
        },
        Valid {
            set: &[("use-regex", "0")],
            want: |_| {},
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "rewrite-target",
            fallback: Fallback::PathDenied,
            values: &[
                "/$host", "/${1}", "/$0", "/x$", "foo/$1", "/a b", "/a?x=$1", "/%zz", "/%2", "/é",
                "/a#b", "/a\r\nb", "/a\0b", "/$1\nx",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "use-regex",
            fallback: Fallback::Ignored,
            values: &["yes", "TRue", "2", "on"],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];

    fn lit(s: &str) -> RewriteSegment {
        RewriteSegment::Literal(s.to_owned())
    }
}
