//! Canary Ingresses: `canary`, `canary-*` and `affinity-canary-behavior`;
//! the parts count only with `canary: "true"`.

use super::prelude::*;
use crate::annotations::{DiagnosticKind, Fallback, values::HEADER_VALUE_MAX_LEN};
use portico_dataplane::model::CanaryAffinity;

const DEFAULT_CANARY_WEIGHT_TOTAL: u32 = 100;

/// The annotations that only mean something on a canary Ingress.
const CANARY_PARTS: [&str; 7] = [
    "canary-weight",
    "canary-weight-total",
    "canary-by-header",
    "canary-by-header-value",
    "canary-by-header-pattern",
    "canary-by-cookie",
    "affinity-canary-behavior",
];

/// How a canary Ingress takes traffic from the main Ingress of the same host
/// and path. Precedence (applied by the dataplane, as ingress-nginx): header,
/// then cookie, then (sticky) the mainline's session cookie, then weight.
#[derive(Clone, Debug, PartialEq)]
pub struct CanaryAnnotations {
    /// At most `weight_total`.
    pub weight: Option<u32>,
    /// Defaults to 100; at least 1.
    pub weight_total: u32,
    pub by_header: Option<http::HeaderName>,
    /// Only with `by_header`.
    pub by_header_value: Option<String>,
    /// Only with `by_header` and without `by_header_value`. Compiles with the
    /// regex crate under size limits; matched unanchored, as ingress-nginx.
    pub by_header_pattern: Option<String>,
    pub by_cookie: Option<String>,
    /// `affinity-canary-behavior`.
    pub affinity: portico_dataplane::model::CanaryAffinity,
}

impl Default for CanaryAnnotations {
    fn default() -> Self {
        Self {
            weight: None,
            weight_total: DEFAULT_CANARY_WEIGHT_TOTAL,
            by_header: None,
            by_header_value: None,
            by_header_pattern: None,
            by_cookie: None,
            affinity: Default::default(),
        }
    }
}

/// The canary annotations, held back until [`finish`] knows whether
/// `canary: "true"` is set.
#[derive(Default)]
pub(crate) struct CanaryDraft {
    enabled: bool,
    parts: CanaryAnnotations,
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "canary",
        "false",
        Ingress,
        Ignored,
        Full,
        "Makes this Ingress a canary of the Ingress with the same host and path; the canary-* annotations apply only with `\"true\"`. Invalid: not a canary.",
        canary,
    ),
    spec(
        "canary-weight",
        "0",
        Ingress,
        Ignored,
        Full,
        "Share of requests sent to the canary, out of canary-weight-total; a larger value is capped at the total. Tried after canary-by-header and canary-by-cookie.",
        canary_weight,
    ),
    spec(
        "canary-weight-total",
        "100",
        Ingress,
        Ignored,
        Full,
        "Total that canary-weight is a share of; at least 1.",
        canary_weight_total,
    ),
    spec(
        "canary-by-header",
        "",
        Ingress,
        Ignored,
        Full,
        "Request header that picks the canary: `always` sends to it, `never` keeps away from it, other values fall through to canary-by-cookie and canary-weight.",
        canary_by_header,
    ),
    spec(
        "canary-by-header-value",
        "",
        Ingress,
        Ignored,
        Full,
        "The canary-by-header value that sends to the canary (instead of `always`); needs canary-by-header.",
        canary_by_header_value,
    ),
    spec(
        "canary-by-header-pattern",
        "",
        Ingress,
        Fallback::CanaryUnused,
        Partly("the regex crate's syntax, not PCRE: no look-around or backreferences"),
        "Regular expression searched in the canary-by-header value to send to the canary; needs canary-by-header, ignored when canary-by-header-value is set (as ingress-nginx).",
        canary_by_header_pattern,
    ),
    spec(
        "canary-by-cookie",
        "",
        Ingress,
        Ignored,
        Full,
        "Cookie that picks the canary: `always` sends to it, `never` keeps away from it, other values fall through to canary-weight.",
        canary_by_cookie,
    ),
    spec(
        "affinity-canary-behavior",
        "sticky",
        Ingress,
        Ignored,
        Partly(
            "canary-by-header and canary-by-cookie decide before the session cookie, and an answer they force onto the canary sets no session cookie (ingress-nginx keeps a mainline session on the mainline whatever the header, and starts a canary session from a forced answer)",
        ),
        "On the canary Ingress, when the main Ingress has `affinity: cookie`. `sticky`: a session stays on the side it started on: canary-weight places new sessions, and a session started by a canary answer stays on the canary while canary-weight is above 0. `legacy`: canary-weight decides per request whatever the session cookie, and canary answers set no session cookie.",
        affinity_canary_behavior,
    ),
];

fn canary(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.enabled = values::go_bool(v)?;
    Ok(())
}

fn canary_weight(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.parts.weight = Some(values::uint(v)?);
    Ok(())
}

fn canary_weight_total(v: &str, d: &mut Draft) -> Result<(), String> {
    let total = values::uint(v)?;
    if total == 0 {
        return Err("must be at least 1".into());
    }
    d.canary.parts.weight_total = total;
    Ok(())
}

fn canary_by_header(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.parts.by_header = Some(values::header_name(v)?);
    Ok(())
}

fn canary_by_header_value(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.parts.by_header_value = Some(header_match_value(v)?);
    Ok(())
}

fn canary_by_header_pattern(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.parts.by_header_pattern = Some(bounded_regex(v)?);
    Ok(())
}

fn canary_by_cookie(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.parts.by_cookie = Some(values::cookie_name(v)?);
    Ok(())
}

/// As ingress-nginx, on the canary Ingress.
fn affinity_canary_behavior(v: &str, d: &mut Draft) -> Result<(), String> {
    d.canary.parts.affinity = match v {
        "sticky" => CanaryAffinity::Sticky,
        "legacy" => CanaryAffinity::Legacy,
        _ => return Err("expected sticky or legacy".into()),
    };
    Ok(())
}

pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    if !d.canary.enabled {
        for name in CANARY_PARTS {
            d.note(
                notes,
                name,
                "has no effect unless canary is \"true\"; ignored",
            );
        }
        return;
    }
    let mut canary = std::mem::take(&mut d.canary.parts);
    if d.canary_unused {
        // Still a canary (it must not take over the mainline's paths),
        // but one that nothing selects: no header, no cookie, weight 0.
        d.out.canary = Some(CanaryAnnotations {
            weight: Some(0),
            weight_total: canary.weight_total,
            ..CanaryAnnotations::default()
        });
        return;
    }
    if let Some(weight) = canary.weight {
        let total = canary.weight_total;
        if weight > total {
            canary.weight = Some(total);
            d.note_kind(
                notes,
                "canary-weight",
                DiagnosticKind::Partial,
                &format!(
                    "above canary-weight-total ({total}); capped at {total}, every request goes to the canary"
                ),
            );
        }
    }
    if canary.by_header.is_none() {
        if canary.by_header_value.take().is_some() {
            d.note(
                notes,
                "canary-by-header-value",
                "has no effect without canary-by-header; ignored",
            );
        }
        if canary.by_header_pattern.take().is_some() {
            d.note(
                notes,
                "canary-by-header-pattern",
                "has no effect without canary-by-header; ignored",
            );
        }
    } else if canary.by_header_value.is_some() && canary.by_header_pattern.take().is_some() {
        d.note(
            notes,
            "canary-by-header-pattern",
            "canary-by-header-value is also set and wins, as in ingress-nginx; ignored",
        );
    }
    d.out.canary = Some(canary);
}

const PATTERN_MAX_LEN: usize = 1024;

/// A header value to compare against: visible ASCII and inner spaces.
fn header_match_value(s: &str) -> Result<String, String> {
    if s.len() > HEADER_VALUE_MAX_LEN {
        return Err(format!("longer than {HEADER_VALUE_MAX_LEN} bytes"));
    }
    if s.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
        Ok(s.to_owned())
    } else {
        Err("only visible ASCII characters and spaces are allowed".into())
    }
}

/// A regular expression that compiles with the regex crate under the
/// dataplane's size limits.
fn bounded_regex(s: &str) -> Result<String, String> {
    if s.len() > PATTERN_MAX_LEN {
        return Err(format!("longer than {PATTERN_MAX_LEN} bytes"));
    }
    use portico_dataplane::pattern::{PatternError, compile};
    compile(s, false).map(|_| s.to_owned()).map_err(|e| match e {
        PatternError::TooBig => e.to_string(),
        PatternError::Syntax(reason) => format!(
            "not a valid regular expression ({reason}); the syntax is the regex crate's, without look-around or backreferences"
        ),
    })
}

#[cfg(test)]
pub(crate) mod tests;
