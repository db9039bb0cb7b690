//! The one check of what users may set: reserved headers, redirect and
//! rewrite fields.

#[allow(unused_imports)]
use super::*;

// === user-written fields ===

/// Header names no user-written header modifier may set, add or remove
/// (HTTPRoute header filters, `custom-headers`), each with the reason.
///
/// The framing headers would let one route's author forge where a message
/// ends: a `Content-Length` set on a response makes the client read the
/// rest, or the next response on a shared connection, as something else.
/// The hop-by-hop ones belong to a single connection and are the proxy's to
/// manage. The upstream `Host` is chosen by a URL rewrite, which keeps it
/// and the HTTP/2 `:authority` consistent. HTTP/2 pseudo-headers (`:path`)
/// are not header names at all: [`HeaderName`] refuses them.
pub const RESERVED_HEADERS: [(&str, &str); 13] = [
    ("connection", HOP_BY_HOP),
    ("content-length", FRAMING),
    ("host", HOST),
    ("keep-alive", HOP_BY_HOP),
    ("proxy-connection", HOP_BY_HOP),
    ("ssl-client-cert", CLIENT_CERT),
    ("ssl-client-issuer-dn", CLIENT_CERT),
    ("ssl-client-subject-dn", CLIENT_CERT),
    ("ssl-client-verify", CLIENT_CERT),
    ("te", HOP_BY_HOP),
    ("trailer", FRAMING),
    ("transfer-encoding", FRAMING),
    ("upgrade", HOP_BY_HOP),
];

const FRAMING: &str =
    "it frames the message, and a written value would desynchronise the connection";
const HOP_BY_HOP: &str = "it belongs to one connection (hop-by-hop) and only the proxy sets it";
const CLIENT_CERT: &str = "it carries the proxy's client-certificate verdict to the upstream, which must be able to trust it";
const HOST: &str = "the upstream host is changed with a URL rewrite hostname (upstream-vhost), not a header filter";

/// Whether a user-written header modifier may set, add or remove `name`;
/// the reason when it may not. [`HeaderName`] is lower case, so the check is
/// case-insensitive.
pub fn user_settable(name: &HeaderName) -> Result<(), &'static str> {
    match RESERVED_HEADERS.iter().find(|(n, _)| *n == name.as_str()) {
        Some((_, reason)) => Err(reason),
        None => Ok(()),
    }
}

/// A field of a redirect or rewrite that the proxy could not put into the
/// request it forwards or the `Location` it answers with: such a rule would
/// answer 400 to every request.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidField {
    /// `hostname` or `path`.
    pub field: &'static str,
    pub reason: &'static str,
}

const NOT_A_HOST: &str =
    "not a valid host: control characters (CR, LF, NUL, ...), spaces and '/' are not allowed";
const NOT_A_LOCATION: &str =
    "not valid in a Location header: control characters (CR, LF, NUL, ...) are not allowed";
const NOT_A_PATH: &str =
    "not a valid URL path: control characters (CR, LF, NUL, ...), spaces and '#' are not allowed";

/// A host the proxy can write as `Host`, as `:authority` and into a
/// `Location`.
fn check_host(host: &str) -> Result<(), InvalidField> {
    let ok = HeaderValue::from_str(host).is_ok() && http::uri::Authority::try_from(host).is_ok();
    ok.then_some(()).ok_or(InvalidField {
        field: "hostname",
        reason: NOT_A_HOST,
    })
}

impl PathModifier {
    /// The literal text of the modifier (the replacement, or the pieces of
    /// a rewrite template).
    fn literals(&self) -> impl Iterator<Item = &str> {
        let (one, many) = match self {
            PathModifier::ReplaceFullPath(p) | PathModifier::ReplacePrefixMatch(p) => {
                (Some(p.as_str()), &[][..])
            }
            PathModifier::RegexReplace { replacement, .. } => (None, &replacement[..]),
        };
        one.into_iter().chain(many.iter().filter_map(|s| match s {
            Substitution::Literal(l) => Some(l.as_str()),
            Substitution::Capture(_) => None,
        }))
    }
}

impl Redirect {
    /// Checks the written fields as the proxy uses them: the host and path
    /// go into a `Location` header value.
    pub fn check(&self) -> Result<(), InvalidField> {
        if let Some(h) = &self.hostname {
            check_host(h)?;
        }
        for text in self.path.iter().flat_map(PathModifier::literals) {
            HeaderValue::from_str(text).map_err(|_| InvalidField {
                field: "path",
                reason: NOT_A_LOCATION,
            })?;
        }
        Ok(())
    }
}

impl UrlRewrite {
    /// Checks the written fields as the proxy uses them: the host becomes
    /// `Host` or `:authority`, the path the request target.
    pub fn check(&self) -> Result<(), InvalidField> {
        if let Some(h) = &self.hostname {
            check_host(h)?;
        }
        for text in self.path.iter().flat_map(PathModifier::literals) {
            // `PathAndQuery` would silently drop what follows a `#` (a
            // fragment), serving a path other than the one written.
            let fragment = text.contains('#');
            if fragment || http::uri::PathAndQuery::try_from(text).is_err() {
                return Err(InvalidField {
                    field: "path",
                    reason: NOT_A_PATH,
                });
            }
        }
        Ok(())
    }
}
