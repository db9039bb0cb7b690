//! Request mirroring: `mirror-target`, `mirror-host`, `mirror-request-body`.
//! The target is parsed into a typed form (scheme, host, port, a literal
//! path and whether `$request_uri` follows it); nothing else of nginx's
//! variables is expanded. Translation resolves its host to a Service
//! (`translate/ingress.rs`). An invalid value turns mirroring off: copies
//! never decide what the original gets.

use http::uri::{Authority, PathAndQuery};
use portico_dataplane::model::MirrorPath;

use super::prelude::*;

/// The variable `mirror-target` may end with.
const REQUEST_URI: &str = "$request_uri";

/// The `mirror-*` annotations, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorAnnotations {
    pub target: Option<MirrorTarget>,
    /// `mirror-request-body: off` sends copies without the body.
    pub request_body: bool,
    /// `mirror-host`: the copies' `Host`; else the target's host.
    pub host: Option<String>,
}

impl Default for MirrorAnnotations {
    fn default() -> Self {
        Self {
            target: None,
            request_body: true,
            host: None,
        }
    }
}

/// `mirror-target`: `http(s)://host[:port][/path][$request_uri]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorTarget {
    pub https: bool,
    /// Lowercase, without the port.
    pub host: String,
    pub port: Option<u16>,
    pub path: MirrorPath,
}

impl MirrorTarget {
    /// The `Host` ingress-nginx sends without `mirror-host`: the target's
    /// host name, without its port.
    pub fn default_host(&self) -> &str {
        &self.host
    }
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "mirror-target",
        "",
        Path,
        Ignored,
        Partly(
            "the host must name a Service of the cluster (`name.namespace.svc[.cluster.local][:port]`) over plain http; only `$request_uri` is expanded, at the end; copies wait for at most `--mirror-max-body` bytes of body (larger ones are not copied) and `--mirror-max-in-flight` copies are in flight at once; without `$request_uri` the copy goes to the path as written (`/` when none), where ingress-nginx sends its internal location's",
        ),
        "Send a copy of each request to this URL, fire and forget: the copy's answer is discarded and never delays or changes the original's. `http://name.namespace.svc$request_uri` keeps the request's path and query. The copy carries the original's headers as they go upstream (`X-Forwarded-*`, `X-Request-ID`). Requests refused by an access check or a limit are not copied. See [mirroring.md](mirroring.md).",
        mirror_target,
    ),
    spec(
        "mirror-request-body",
        "on",
        Path,
        Ignored,
        Full,
        "`off`: copies are sent without the request body.",
        mirror_request_body,
    ),
    spec(
        "mirror-host",
        "",
        Path,
        Ignored,
        Full,
        "The copies' `Host` header (`host[:port]`); unset: the host of `mirror-target`.",
        mirror_host,
    ),
];

fn mirror_target(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.mirror.target = Some(parse_target(v)?);
    Ok(())
}

fn mirror_request_body(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.mirror.request_body = match v {
        "on" => true,
        "off" => false,
        _ => return Err("expected on or off".into()),
    };
    Ok(())
}

fn mirror_host(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.mirror.host = Some(parse_authority(v)?.as_str().to_ascii_lowercase());
    Ok(())
}

/// `host[:port]`, nothing else: no userinfo, no path, no control
/// characters or spaces (which could change the copy's framing).
fn parse_authority(v: &str) -> Result<Authority, String> {
    if v.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("control characters and spaces are not allowed".into());
    }
    if v.contains('@') {
        return Err("a userinfo part (user@) is not allowed".into());
    }
    let a = Authority::try_from(v).map_err(|_| "expected host[:port]".to_owned())?;
    if a.host().is_empty() {
        return Err("the host is empty".into());
    }
    if a.as_str().contains(':') && a.port_u16().is_none() {
        return Err("the port must be 1 to 65535".into());
    }
    Ok(a)
}

fn parse_target(v: &str) -> Result<MirrorTarget, String> {
    let lower = v.get(..8).map(str::to_ascii_lowercase).unwrap_or_default();
    let (https, rest) = if lower.starts_with("http://") {
        (false, &v[7..])
    } else if lower.starts_with("https://") {
        (true, &v[8..])
    } else {
        return Err("expected an http:// or https:// URL".into());
    };
    let end = rest.find(['/', '$', '?', '#']).unwrap_or(rest.len());
    let authority = parse_authority(&rest[..end])?;
    let mut path = &rest[end..];
    if path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
        return Err("control characters and spaces are not allowed".into());
    }
    if path.contains('#') {
        return Err("a fragment (#) is not allowed".into());
    }
    let request_uri = match path.strip_suffix(REQUEST_URI) {
        Some(before) => {
            path = before;
            true
        }
        None => false,
    };
    if path.contains('$') {
        return Err("only $request_uri is expanded, and only at the end".into());
    }
    if !path.is_empty() && !path.starts_with('/') {
        return Err("the path must start with /".into());
    }
    if request_uri && path.contains('?') {
        return Err("$request_uri brings its own query: none may come before it".into());
    }
    if !path.is_empty() {
        PathAndQuery::try_from(path).map_err(|_| "the path is not a valid URL path".to_owned())?;
    }
    Ok(MirrorTarget {
        https,
        host: authority.host().to_ascii_lowercase(),
        port: authority.port_u16(),
        path: MirrorPath::Target {
            prefix: path.to_owned(),
            request_uri,
        },
    })
}

/// `mirror-host` and `mirror-request-body` mean nothing without a target.
pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    if d.out.mirror.target.is_none() {
        for name in ["mirror-request-body", "mirror-host"] {
            d.note(notes, name, "has no effect without mirror-target; ignored");
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::{MirrorTarget, parse_target};
    use crate::annotations::tests::*;
    use portico_dataplane::model::MirrorPath;

    fn target(host: &str, port: Option<u16>, prefix: &str, request_uri: bool) -> MirrorTarget {
        MirrorTarget {
            https: false,
            host: host.into(),
            port,
            path: MirrorPath::Target {
                prefix: prefix.into(),
                request_uri,
            },
        }
    }

    pub(crate) const VALID: &[Valid] = &[
        Valid {
            set: &[("mirror-target", "http://shadow.test.svc$request_uri")],
            want: |a| {
                a.mirror.target = Some(target("shadow.test.svc", None, "", true));
            },
        },
        Valid {
            set: &[
                (
                    "mirror-target",
                    "HTTP://Shadow.Test.svc.cluster.local:8080/copy",
                ),
                ("mirror-request-body", "off"),
                ("mirror-host", "Shadow.Example.com:8443"),
            ],
            want: |a| {
                a.mirror.target = Some(target(
                    "shadow.test.svc.cluster.local",
                    Some(8080),
                    "/copy",
                    false,
                ));
                a.mirror.request_body = false;
                a.mirror.host = Some("shadow.example.com:8443".into());
            },
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "mirror-target",
            fallback: Fallback::Ignored,
            values: &[
                "ftp://shadow.test.svc/",
                "shadow.test.svc",
                "http://user:pw@shadow.test.svc/",
                "http://shadow.test.svc/a b",
                "http://shadow.test.svc/\r\nx: y",
                "http://shadow.test.svc$host$request_uri",
                "http://shadow.test.svc$request_uri/x",
                "http://shadow.test.svc/?a=1$request_uri",
                "http://shadow.test.svc/#top",
                "http://:80/",
                "http://shadow.test.svc:99999/",
            ],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "mirror-request-body",
            fallback: Fallback::Ignored,
            values: &["false", "yes"],
            context: &[("mirror-target", "http://shadow.test.svc/")],
            want: |a| {
                a.mirror.target = Some(target("shadow.test.svc", None, "/", false));
            },
        },
        Invalid {
            name: "mirror-host",
            fallback: Fallback::Ignored,
            values: &["a@b", "shadow.test/x", "a\tb"],
            context: &[("mirror-target", "http://shadow.test.svc/")],
            want: |a| {
                a.mirror.target = Some(target("shadow.test.svc", None, "/", false));
            },
        },
    ];

    #[test]
    fn the_parts_without_a_target_are_ignored() {
        let parsed = parse_checked(&raw(&[
            ("nginx.ingress.kubernetes.io/mirror-host", "shadow.test"),
            ("nginx.ingress.kubernetes.io/mirror-request-body", "off"),
        ]));
        assert_eq!(parsed.diagnostics.len(), 2, "{:?}", parsed.diagnostics);
        assert!(
            parsed
                .diagnostics
                .iter()
                .all(|d| d.message.contains("without mirror-target"))
        );
    }

    #[test]
    fn a_target_keeps_its_literal_path() {
        let t = parse_target("https://m.example.com/shadow/$request_uri").unwrap();
        assert!(t.https);
        assert_eq!(t.host, "m.example.com");
        assert_eq!(
            t.path,
            MirrorPath::Target {
                prefix: "/shadow/".into(),
                request_uri: true
            }
        );
    }
}
