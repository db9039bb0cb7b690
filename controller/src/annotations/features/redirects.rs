//! `app-root`, `permanent-redirect` and `temporal-redirect` (with their codes):
//! answers that send the client elsewhere. Temporal wins over permanent, as
//! in ingress-nginx.

use crate::annotations::{
    Draft,
    Fallback::{Ignored, PathDenied},
    KeyedNote,
    registry::{
        AnnotationSpec,
        Scope::{Ingress, Path},
        Support::{Full, Partly},
        spec,
    },
    values,
};

const DEFAULT_PERMANENT_REDIRECT_CODE: u16 = 301;

const DEFAULT_TEMPORAL_REDIRECT_CODE: u16 = 302;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectTarget {
    /// An absolute `http` or `https` URL with a host.
    pub url: http::Uri,
    /// One of 301, 302, 303, 307, 308.
    pub code: u16,
    /// Written without a path or query (`https://example.com`): the
    /// `Location` is sent as written, with no `/` added (ingress-nginx).
    /// `url` cannot tell: `http::Uri` reads a missing path as `/`.
    pub bare: bool,
}

/// The redirect annotations, held back until [`finish`] knows which wins.
#[derive(Default)]
pub(crate) struct RedirectsDraft {
    /// The URL and whether it was written bare (no path, no query).
    permanent_url: Option<(http::Uri, bool)>,
    permanent_code: Option<u16>,
    temporal_url: Option<(http::Uri, bool)>,
    temporal_code: Option<u16>,
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "app-root",
        "",
        Ingress,
        Ignored,
        Full,
        "Requests for `/` are redirected (302) to this absolute path, e.g. `/app`.",
        app_root,
    ),
    spec(
        "permanent-redirect",
        "",
        Path,
        PathDenied,
        Partly(
            "nginx variables such as `$request_uri` are not expanded: a value with `$` is invalid",
        ),
        "Every request is answered with a redirect to this absolute http(s) URL, code from permanent-redirect-code. When temporal-redirect is also set it wins, as in ingress-nginx.",
        permanent_redirect,
    ),
    spec(
        "permanent-redirect-code",
        "301",
        Path,
        Ignored,
        Partly(
            "only 301, 302, 303, 307 and 308; ingress-nginx also passed 300, 304, 305 and 306 through",
        ),
        "Status code of permanent-redirect.",
        permanent_redirect_code,
    ),
    spec(
        "temporal-redirect",
        "",
        Path,
        PathDenied,
        Partly(
            "nginx variables such as `$request_uri` are not expanded: a value with `$` is invalid",
        ),
        "Every request is answered with a redirect to this absolute http(s) URL, code from temporal-redirect-code.",
        temporal_redirect,
    ),
    spec(
        "temporal-redirect-code",
        "302",
        Path,
        Ignored,
        Partly(
            "only 301, 302, 303, 307 and 308; ingress-nginx also passed 300, 304, 305 and 306 through",
        ),
        "Status code of temporal-redirect.",
        temporal_redirect_code,
    ),
];

fn app_root(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.app_root = Some(values::absolute_path(v)?);
    Ok(())
}

fn permanent_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    d.redirects.permanent_url = Some((values::redirect_url(v)?, values::is_bare_url(v)));
    Ok(())
}

fn permanent_redirect_code(v: &str, d: &mut Draft) -> Result<(), String> {
    d.redirects.permanent_code = Some(values::redirect_code(v)?);
    Ok(())
}

fn temporal_redirect(v: &str, d: &mut Draft) -> Result<(), String> {
    d.redirects.temporal_url = Some((values::redirect_url(v)?, values::is_bare_url(v)));
    Ok(())
}

fn temporal_redirect_code(v: &str, d: &mut Draft) -> Result<(), String> {
    d.redirects.temporal_code = Some(values::redirect_code(v)?);
    Ok(())
}

pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    // ingress-nginx checks temporal-redirect first.
    if let Some((url, bare)) = d.redirects.temporal_url.take() {
        let code = d
            .redirects
            .temporal_code
            .unwrap_or(DEFAULT_TEMPORAL_REDIRECT_CODE);
        d.out.temporal_redirect = Some(RedirectTarget { url, code, bare });
        if d.redirects.permanent_url.take().is_some() {
            d.note(
                notes,
                "permanent-redirect",
                "temporal-redirect is also set and wins, as in ingress-nginx; ignored",
            );
        }
    } else if let Some((url, bare)) = d.redirects.permanent_url.take() {
        let code = d
            .redirects
            .permanent_code
            .unwrap_or(DEFAULT_PERMANENT_REDIRECT_CODE);
        d.out.permanent_redirect = Some(RedirectTarget { url, code, bare });
    }
    if d.out.temporal_redirect.is_none() && d.redirects.temporal_code.is_some() {
        d.note(
            notes,
            "temporal-redirect-code",
            "has no effect without temporal-redirect; ignored",
        );
    }
    if d.out.permanent_redirect.is_none() && d.redirects.permanent_code.is_some() {
        d.note(
            notes,
            "permanent-redirect-code",
            "has no effect without a permanent-redirect in use; ignored",
        );
    }
}
