//! nginx variables in external-auth URLs (`auth-url`, `auth-signin`) and
//! cache keys, as typed parts: parsed once when the model is made, rendered
//! per request. ingress-nginx pasted these strings into nginx.conf; here a
//! variable's value is only ever data, percent-escaped for the part of the
//! URL it lands in, and no variable can change where a subrequest goes.

use std::borrow::Cow;
use std::fmt;
use std::hash::{Hash, Hasher};

use http::{HeaderMap, HeaderName, Uri};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, percent_encode};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::headers::{cookie_value, split_host_port};
use crate::model::Scheme;

/// Longest template accepted: an annotation value, not a document.
const MAX_LEN: usize = 4096;

/// Everything but RFC 3986 unreserved characters is escaped in a query,
/// fragment or cache key: a value can add no `&`, `=` or `#`.
const COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// In a path, `/` stays, so `$request_uri` keeps its segments.
const PATH: &AsciiSet = &COMPONENT.remove(b'/');

/// A parsed template: literal text and variables, each variable tagged
/// with the URL part it sits in.
#[derive(Clone)]
pub struct Template {
    source: Box<str>,
    parts: Box<[Part]>,
}

#[derive(Clone, Debug)]
enum Part {
    Literal(Box<str>),
    Var(Var, Place),
}

/// Where a variable sits, which decides its escaping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Place {
    /// The host of an `auth-signin` URL: only the client's own host.
    Authority,
    Path,
    /// Query, fragment, or a template that is no URL (a cache key).
    Component,
}

/// The variables supported: those real Ingresses use with oauth2-proxy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Var {
    /// The client's host, without port, lowercased (never `upstream-vhost`).
    Host,
    /// The client's `Host` as sent, port included.
    BestHttpHost,
    /// `http` or `https`: how the client reached the proxy.
    Scheme,
    /// The request's path (normalised) and query.
    RequestUri,
    /// The same, always escaped whole (`/` too), wherever it lands.
    EscapedRequestUri,
    /// The first value of a request header.
    Http(HeaderName),
    /// A query argument, decoded then escaped again (names compare
    /// case-insensitively, as nginx's).
    Arg(Box<str>),
    Cookie(Box<str>),
}

/// Why a template was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "unknown variable ${0}: supported are $host, $best_http_host, $scheme, $request_uri, $escaped_request_uri, $http_<name>, $arg_<name> and $cookie_<name>"
    )]
    UnknownVariable(String),
    #[error("a `$` must start a variable name (write `${{name}}` next to other letters)")]
    BareDollar,
    #[error("`${{` without its `}}`")]
    Unclosed,
    #[error("must be an absolute http:// or https:// URL")]
    NotHttp,
    #[error(
        "variable ${0} in the URL's host: the address must be written out, so no request can change where it goes (for oauth2-proxy, name its Service: http://<service>.<namespace>.svc.cluster.local:<port>/oauth2/auth)"
    )]
    VariableInAuthority(String),
    #[error("not a valid URL: {0}")]
    InvalidUrl(String),
    #[error("longer than {MAX_LEN} bytes")]
    TooLong,
}

/// What a template is rendered from: one request's facts.
pub struct Vars<'a> {
    pub scheme: Scheme,
    /// The client's `Host` (or `:authority`).
    pub host: &'a str,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
}

/// The kinds of template, by what they may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A subrequest's URL: no variable before the path.
    Service,
    /// A redirect for the client: its host may be the client's own.
    Signin,
    /// Any text.
    Text,
}

// === impl Template ===

impl Template {
    /// An `auth-url`: http(s), its scheme and authority written out.
    pub fn service_url(text: &str) -> Result<Self, TemplateError> {
        Self::parse(text, Kind::Service)
    }

    /// An `auth-signin`: as [`service_url`](Self::service_url), except that
    /// the host may be `$host` or `$best_http_host` (oauth2-proxy's
    /// documented `https://$host/oauth2/start`): the client is sent back
    /// to the host it asked for.
    pub fn signin_url(text: &str) -> Result<Self, TemplateError> {
        Self::parse(text, Kind::Signin)
    }

    /// A cache key: any text, each variable escaped as a URL component so
    /// that two different requests cannot render the same key by
    /// smuggling a separator.
    pub fn text(text: &str) -> Result<Self, TemplateError> {
        Self::parse(text, Kind::Text)
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The host and port as written, for a URL whose authority holds no
    /// variable (every service URL).
    pub fn authority(&self) -> Option<&str> {
        let (_, rest) = self.source.split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        (!authority.contains('$')).then_some(authority)
    }

    /// Whether the written text (not a variable's value) has a query.
    pub fn has_query(&self) -> bool {
        self.parts
            .iter()
            .any(|p| matches!(p, Part::Literal(l) if l.contains('?')))
    }

    /// Whether the written query already sets `param` (`?rd=` or `&rd=`).
    pub fn sets_param(&self, param: &str) -> bool {
        self.source.split_once('?').is_some_and(|(_, q)| {
            q.split('&')
                .any(|kv| kv.split_once('=').is_some_and(|(k, _)| k == param))
        })
    }

    /// The text for one request. `None` when the client's host cannot
    /// stand in a signin URL's host (a character no host has).
    pub fn render(&self, vars: &Vars<'_>) -> Option<String> {
        let mut out = String::with_capacity(self.source.len() + 64);
        for part in self.parts.iter() {
            match part {
                Part::Literal(l) => out.push_str(l),
                Part::Var(var, place) => {
                    let value = var.value(vars);
                    match place {
                        Place::Authority => {
                            if value.is_empty() || !value.iter().all(|b| is_host_byte(*b)) {
                                return None;
                            }
                            // Checked ASCII just above.
                            out.extend(value.iter().map(|b| char::from(*b)));
                        }
                        Place::Path if *var != Var::EscapedRequestUri => {
                            out.extend(percent_encode(&value, PATH));
                        }
                        _ => out.extend(percent_encode(&value, COMPONENT)),
                    }
                }
            }
        }
        Some(out)
    }

    fn parse(text: &str, kind: Kind) -> Result<Self, TemplateError> {
        if text.len() > MAX_LEN {
            return Err(TemplateError::TooLong);
        }
        let tokens = tokenize(text)?;
        let mut place = match kind {
            Kind::Text => Place::Component,
            Kind::Service | Kind::Signin => {
                let lower = text.get(..8).unwrap_or(text).to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                    return Err(TemplateError::NotHttp);
                }
                Place::Authority
            }
        };
        let mut parts = Vec::with_capacity(tokens.len());
        // A stand-in of the rendered URL, to check the written parts.
        let mut probe = String::with_capacity(text.len());
        let mut scheme_done = kind == Kind::Text;
        for token in tokens {
            match token {
                Token::Literal(l) => {
                    probe.push_str(&l);
                    let mut rest: &str = &l;
                    if !scheme_done {
                        // The scheme is in the first literal (checked above).
                        let at = rest.find("://").map_or(0, |i| i + 3);
                        rest = &rest[at..];
                        scheme_done = true;
                    }
                    for c in rest.chars() {
                        place = match (place, c) {
                            (Place::Authority, '/') => Place::Path,
                            (Place::Authority | Place::Path, '?' | '#') => Place::Component,
                            (p, _) => p,
                        };
                    }
                    parts.push(Part::Literal(l.into()));
                }
                Token::Var(name) => {
                    let var = Var::parse(&name)?;
                    if place == Place::Authority {
                        let allowed = kind == Kind::Signin
                            && matches!(var, Var::Host | Var::BestHttpHost)
                            && probe.ends_with("://");
                        if !allowed {
                            return Err(TemplateError::VariableInAuthority(name));
                        }
                        probe.push_str("host.invalid");
                    } else {
                        probe.push('x');
                    }
                    parts.push(Part::Var(var, place));
                }
            }
        }
        if kind != Kind::Text {
            let uri = Uri::try_from(probe.as_str())
                .map_err(|e| TemplateError::InvalidUrl(e.to_string()))?;
            if uri.host().is_none_or(str::is_empty) {
                return Err(TemplateError::InvalidUrl("no host".into()));
            }
        }
        Ok(Self {
            source: text.into(),
            parts: parts.into(),
        })
    }
}

/// Hosts: letters, digits, `-`, `.`, a port's `:`, an IPv6 literal's
/// brackets.
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b':' | b'[' | b']')
}

enum Token {
    Literal(String),
    Var(String),
}

/// Splits `text` at `$name` and `${name}` (names of letters, digits and
/// `_`, as nginx's).
fn tokenize(text: &str) -> Result<Vec<Token>, TemplateError> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut tokens = Vec::new();
    let mut literal = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        literal.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        let (name, next) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or(TemplateError::Unclosed)?;
            (&braced[..end], &braced[end + 1..])
        } else {
            let end = after.find(|c| !is_name(c)).unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        if name.is_empty() || !name.chars().all(is_name) {
            return Err(TemplateError::BareDollar);
        }
        if !literal.is_empty() {
            tokens.push(Token::Literal(std::mem::take(&mut literal)));
        }
        tokens.push(Token::Var(name.to_owned()));
        rest = next;
    }
    literal.push_str(rest);
    if !literal.is_empty() {
        tokens.push(Token::Literal(literal));
    }
    Ok(tokens)
}

impl PartialEq for Template {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl Eq for Template {}

impl Hash for Template {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.source.hash(state);
    }
}

impl fmt::Debug for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.source, f)
    }
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

/// Written as its source. Read back as a URL when it parses as one of the
/// service's (the most restrictive kind), else as a signin URL, else as
/// text: each use re-checks its kind when the filter is compiled.
impl Serialize for Template {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

impl<'de> Deserialize<'de> for Template {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Template::service_url(&text)
            .or_else(|_| Template::signin_url(&text))
            .or_else(|_| Template::text(&text))
            .map_err(serde::de::Error::custom)
    }
}

// === impl Var ===

impl Var {
    fn parse(name: &str) -> Result<Self, TemplateError> {
        let unknown = || TemplateError::UnknownVariable(name.to_owned());
        Ok(match name {
            "host" => Var::Host,
            "best_http_host" | "http_host" => Var::BestHttpHost,
            "scheme" => Var::Scheme,
            "request_uri" => Var::RequestUri,
            "escaped_request_uri" => Var::EscapedRequestUri,
            _ => {
                if let Some(h) = name.strip_prefix("http_") {
                    let h = h.replace('_', "-").to_ascii_lowercase();
                    Var::Http(HeaderName::try_from(h).map_err(|_| unknown())?)
                } else if let Some(a) = name.strip_prefix("arg_").filter(|a| !a.is_empty()) {
                    Var::Arg(a.into())
                } else if let Some(c) = name.strip_prefix("cookie_").filter(|c| !c.is_empty()) {
                    Var::Cookie(c.into())
                } else {
                    return Err(unknown());
                }
            }
        })
    }

    /// The raw value, before escaping; empty when absent (as nginx's).
    fn value<'a>(&self, vars: &Vars<'a>) -> Cow<'a, [u8]> {
        match self {
            Var::Host => {
                let (host, _) = split_host_port(vars.host);
                Cow::Owned(host.to_ascii_lowercase().into_bytes())
            }
            Var::BestHttpHost => Cow::Borrowed(vars.host.as_bytes()),
            Var::Scheme => Cow::Borrowed(vars.scheme.as_str().as_bytes()),
            Var::RequestUri | Var::EscapedRequestUri => Cow::Borrowed(
                vars.uri
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str())
                    .as_bytes(),
            ),
            Var::Http(name) => {
                Cow::Borrowed(vars.headers.get(name).map_or(&[][..], |v| v.as_bytes()))
            }
            Var::Arg(name) => vars
                .uri
                .query()
                .and_then(|q| {
                    q.split('&').find_map(|kv| {
                        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                        k.eq_ignore_ascii_case(name).then_some(v)
                    })
                })
                .map_or(Cow::Borrowed(&[][..]), |v| percent_decode_str(v).into()),
            Var::Cookie(name) => Cow::Borrowed(cookie_value(vars.headers, name).unwrap_or(&[])),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn vars<'a>(uri: &'a Uri, headers: &'a HeaderMap) -> Vars<'a> {
        Vars {
            scheme: Scheme::Https,
            host: "App.Example.com:8443",
            uri,
            headers,
        }
    }

    fn render(template: &Template, uri: &str, headers: &HeaderMap) -> Option<String> {
        let uri: Uri = uri.parse().unwrap();
        template.render(&vars(&uri, headers))
    }

    #[test]
    fn each_variable_renders_escaped_for_its_place() {
        let mut h = HeaderMap::new();
        h.insert("x-team", HeaderValue::from_static("a b"));
        h.insert("cookie", HeaderValue::from_static("s=1; sid=abc/def"));
        let t = Template::signin_url(
            "https://$host/start?rd=$scheme://$best_http_host$request_uri&e=$escaped_request_uri&t=${http_x_team}&q=$arg_q&c=$cookie_sid&m=$arg_missing",
        )
        .unwrap();
        assert_eq!(
            render(&t, "/p/a?q=%41%2F&z=1", &h).unwrap(),
            "https://app.example.com/start?rd=https://App.Example.com%3A8443%2Fp%2Fa%3Fq%3D%2541%252F%26z%3D1\
             &e=%2Fp%2Fa%3Fq%3D%2541%252F%26z%3D1&t=a%20b&q=A%2F&c=abc%2Fdef&m="
        );
        // In a path, `/` stays; everything else that could end the path is
        // escaped; `$escaped_request_uri` escapes `/` too.
        let t = Template::service_url("http://auth.test/check$request_uri/$escaped_request_uri")
            .unwrap();
        assert_eq!(
            render(&t, "/a/b?x=1", &HeaderMap::new()).unwrap(),
            "http://auth.test/check/a/b%3Fx%3D1/%2Fa%2Fb%3Fx%3D1"
        );
    }

    #[test]
    fn a_hostile_header_value_stays_inside_its_parameter() {
        let mut h = HeaderMap::new();
        h.insert(
            "x-evil",
            HeaderValue::from_bytes(b"a&admin=1#frag%00?x=/y").unwrap(),
        );
        let t = Template::service_url("http://auth.test/check?u=$http_x_evil&ok=1").unwrap();
        let out = render(&t, "/", &h).unwrap();
        assert_eq!(
            out,
            "http://auth.test/check?u=a%26admin%3D1%23frag%2500%3Fx%3D%2Fy&ok=1"
        );
        let uri: Uri = out.parse().unwrap();
        assert_eq!(uri.host(), Some("auth.test"));
        // CR and LF cannot be in a header value hyper accepts; from a
        // cookie or argument they arrive escaped and are escaped again.
        let t = Template::text("$arg_a|$cookie_c").unwrap();
        let mut h = HeaderMap::new();
        h.insert("cookie", HeaderValue::from_static("c=%0D%0A"));
        assert_eq!(
            render(&t, "/?a=%0d%0aSet-Cookie:x", &h).unwrap(),
            "%0D%0ASet-Cookie%3Ax|%250D%250A"
        );
    }

    #[test]
    fn a_variable_cannot_choose_where_a_subrequest_goes() {
        for bad in [
            "http://$host/auth",
            "http://auth.$host/",
            "https://auth.test:$arg_port/",
            "http://$http_x_target",
            "$scheme://auth.test/",
        ] {
            assert!(Template::service_url(bad).is_err(), "{bad}");
        }
        assert!(matches!(
            Template::service_url("http://$host/auth"),
            Err(TemplateError::VariableInAuthority(v)) if v == "host"
        ));
        // A signin URL may send the client back to its own host, and only
        // there.
        assert!(Template::signin_url("https://$host/oauth2/start?rd=$escaped_request_uri").is_ok());
        assert!(Template::signin_url("https://login.$host/").is_err());
        assert!(Template::signin_url("https://$http_x_target/").is_err());
        // A client host that is no host makes no URL.
        let t = Template::signin_url("https://$best_http_host/start").unwrap();
        let uri: Uri = "/".parse().unwrap();
        let h = HeaderMap::new();
        let v = Vars {
            scheme: Scheme::Http,
            host: "evil.test/@x",
            uri: &uri,
            headers: &h,
        };
        assert_eq!(t.render(&v), None);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        for (bad, want) in [
            (
                "http://auth.test/$remote_addr",
                "unknown variable $remote_addr",
            ),
            ("http://auth.test/$", "a `$` must start"),
            ("http://auth.test/${host", "without its"),
            ("ftp://auth.test/", "http:// or https://"),
            ("/oauth2/auth", "http:// or https://"),
            ("http:///nohost", "not a valid URL"),
            ("http://auth.test/a b", "not a valid URL"),
        ] {
            let e = Template::service_url(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert!(Template::text(&"x".repeat(MAX_LEN + 1)).is_err());
        assert!(Template::text("$http_").is_err());
    }

    #[test]
    fn knows_its_authority() {
        let t = Template::service_url("http://auth.ns.svc:4180/check?u=$request_uri").unwrap();
        assert_eq!(t.authority(), Some("auth.ns.svc:4180"));
        let t = Template::service_url("http://auth.test").unwrap();
        assert_eq!(t.authority(), Some("auth.test"));
        let t = Template::signin_url("https://$host/start").unwrap();
        assert_eq!(t.authority(), None);
    }

    #[test]
    fn knows_its_query() {
        let t = Template::signin_url("https://a.test/start?rd=/x").unwrap();
        assert!(t.has_query());
        assert!(t.sets_param("rd"));
        assert!(!t.sets_param("r"));
        let t = Template::signin_url("https://a.test/start").unwrap();
        assert!(!t.has_query());
    }
}
