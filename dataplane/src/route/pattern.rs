//! User-supplied regular expressions, compiled under one set of limits
//! everywhere: route matches, rewrites, canary header patterns, and the
//! controller's checks. A route author must not be able to make Portico spend
//! unbounded memory or stack on one rule, and a pattern the controller accepts
//! must compile here.

use regex::RegexBuilder;
use regex::bytes::RegexBuilder as BytesRegexBuilder;

/// Compiled-program size bound.
pub const SIZE_LIMIT: usize = 1 << 20;
/// Lazy DFA cache bound.
pub const DFA_SIZE_LIMIT: usize = 1 << 20;
/// Nesting depth bound (the parser recurses).
pub const NEST_LIMIT: u32 = 100;

/// Why a pattern was refused, in one line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("the regular expression is too large once compiled")]
    TooBig,
    #[error("{0}")]
    Syntax(String),
}

impl From<regex::Error> for PatternError {
    fn from(e: regex::Error) -> Self {
        match e {
            regex::Error::CompiledTooBig(_) => PatternError::TooBig,
            other => {
                // The crate's syntax errors span lines, pointing into the
                // pattern; the last line says why.
                let text = other.to_string();
                let reason = text
                    .lines()
                    .rev()
                    .map(str::trim)
                    .find(|l| !l.is_empty())
                    .unwrap_or("syntax error");
                PatternError::Syntax(reason.strip_prefix("error: ").unwrap_or(reason).to_owned())
            }
        }
    }
}

/// Compiles a pattern over text.
pub fn compile(pattern: &str, case_insensitive: bool) -> Result<regex::Regex, PatternError> {
    Ok(RegexBuilder::new(pattern)
        .case_insensitive(case_insensitive)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .nest_limit(NEST_LIMIT)
        .build()?)
}

/// Compiles a pattern over bytes (paths and header values as received).
pub fn compile_bytes(pattern: &str) -> Result<regex::bytes::Regex, PatternError> {
    Ok(BytesRegexBuilder::new(pattern)
        .size_limit(SIZE_LIMIT)
        .dfa_size_limit(DFA_SIZE_LIMIT)
        .nest_limit(NEST_LIMIT)
        .build()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_line() {
        let e = compile("(unclosed", false).unwrap_err();
        assert!(
            matches!(&e, PatternError::Syntax(r) if !r.contains('\n')),
            "{e:?}"
        );
        assert_eq!(
            compile("a{1000}{1000}", false).unwrap_err(),
            PatternError::TooBig
        );
        let deep = format!("{}a{}", "(".repeat(200), ")".repeat(200));
        assert!(compile_bytes(&deep).is_err());
        assert!(compile("^/API", true).unwrap().is_match("/api"));
    }
}
