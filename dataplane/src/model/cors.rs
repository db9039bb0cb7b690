//! CORS settings and origin patterns.

#[allow(unused_imports)]
use super::*;

/// Cross-origin access for browser clients (CORS): which origins may read
/// a rule's answers, and what their preflights are told. One type for the
/// ingress-nginx `enable-cors` annotations, HTTPRoute's `CORS` filter and
/// the gRPC-Web bridge; compiled once per table build by
/// [`crate::filter::cors::CorsPolicy`].
///
/// In the lists, `*` is the CORS wildcard: any method, any header, every
/// header exposed. With credentials a wildcard is never sent: the
/// preflight's own request method and headers are echoed, and an exposed
/// `*` is left out, as browsers read `*` literally then.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Cors {
    /// Who may call. Empty: nobody, no CORS headers at all.
    #[serde(default)]
    pub allow_origins: Vec<OriginPattern>,
    /// `Access-Control-Allow-Methods` of a preflight answer, as written
    /// (methods are case-sensitive). Empty: not sent.
    #[serde(default, with = "serde_http::tokens")]
    pub allow_methods: Vec<Method>,
    /// `Access-Control-Allow-Headers` of a preflight answer. Empty: not sent.
    #[serde(default, with = "serde_http::tokens")]
    pub allow_headers: Vec<HeaderName>,
    /// `Access-Control-Expose-Headers`: response headers pages may read.
    /// Empty: not sent.
    #[serde(default, with = "serde_http::tokens")]
    pub expose_headers: Vec<HeaderName>,
    /// `Access-Control-Allow-Credentials: true`; an allowed origin is then
    /// answered with itself, never `*`, as browsers require.
    #[serde(default)]
    pub allow_credentials: bool,
    /// `Access-Control-Max-Age`: how long, in seconds, a browser may cache
    /// a preflight answer.
    #[serde(default)]
    pub max_age: u64,
    #[serde(default)]
    pub disallowed_preflight: DisallowedPreflight,
}

/// What a preflight from an origin that may not call gets. Either way it
/// carries no CORS headers, so the browser does not send the request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DisallowedPreflight {
    /// 403 from the proxy (Gateway API allows it; the gRPC-Web bridge).
    #[default]
    Refuse,
    /// Forwarded like any request (ingress-nginx, whose backends may
    /// answer other origins' preflights themselves).
    Forward,
}

/// Request headers gRPC-Web clients send.
const GRPC_WEB_REQUEST_HEADERS: [&str; 5] = [
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "content-type",
    "authorization",
];
/// Response headers gRPC-Web clients must read.
const GRPC_WEB_RESPONSE_HEADERS: [&str; 3] =
    ["grpc-status", "grpc-message", "grpc-status-details-bin"];

/// Browsers cap what they honour (Chromium: 2 h), so a day is "as long as
/// allowed".
pub const GRPC_WEB_CORS_MAX_AGE: u64 = 86_400;

impl Cors {
    /// A gRPC-Web rule's CORS before any origin is allowed: `POST` calls
    /// with the headers gRPC-Web clients send, their status headers
    /// readable, preflights cached a day; other origins' preflights get 403.
    pub fn grpc_web() -> Self {
        let mut cors = Self {
            allow_methods: vec![Method::POST, Method::OPTIONS],
            max_age: GRPC_WEB_CORS_MAX_AGE,
            ..Self::default()
        };
        cors.add_grpc_web_headers();
        cors
    }

    /// Allows the request headers gRPC-Web clients send and exposes the
    /// status headers they read, unless already listed: a gRPC-Web rule's
    /// CORS, however it was configured, lets its clients work.
    pub fn add_grpc_web_headers(&mut self) {
        for (list, names) in [
            (&mut self.allow_headers, &GRPC_WEB_REQUEST_HEADERS[..]),
            (&mut self.expose_headers, &GRPC_WEB_RESPONSE_HEADERS[..]),
        ] {
            for name in names {
                let name = HeaderName::from_static(name);
                if !list.contains(&name) {
                    list.push(name);
                }
            }
        }
    }
}

/// An origin CORS allows: `*`, or `scheme://host[:port]` where the host
/// may be a wildcard. Written as text in `/debug/routes`: `*`,
/// `https://app.example.com`, `http://localhost:8080`, `https://*.example.com`
/// (one more label: ingress-nginx), `https://**.example.com` (one or more:
/// Gateway API's `*.`), `https://*` (any host).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginPattern {
    Any,
    Origin {
        scheme: Scheme,
        host: OriginHost,
        /// The port the origin names, or its scheme's default: browsers
        /// leave the default out, so `https://a.com:443` is `https://a.com`.
        port: u16,
    },
}

/// The host part of an [`OriginPattern`], lower case.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OriginHost {
    /// A DNS name, an IPv4 address or a bracketed IPv6 address.
    Exact(String),
    /// `*.suffix`: exactly one label before `suffix`.
    Subdomain(String),
    /// `**.suffix`: one or more labels before `suffix`.
    SubdomainAnyDepth(String),
    /// `*`: any host.
    Any,
}

// === impl OriginPattern ===

impl OriginPattern {
    /// Parses the text form (see the type). Scheme and host are lower-cased;
    /// the reason says what is wrong, for diagnostics.
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::Any);
        }
        let lower = s.to_ascii_lowercase();
        let Some((scheme, rest)) = lower.split_once("://") else {
            return Err("an origin needs a scheme: http:// or https://".into());
        };
        let scheme = match scheme {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            _ => return Err(format!("the scheme must be http or https, not {scheme:?}")),
        };
        if rest.contains(['/', '?', '#']) {
            return Err("an origin has no path, query or fragment".into());
        }
        if rest.contains('@') {
            return Err("an origin has no user name or password".into());
        }
        // A bracketed IPv6 address holds colons of its own.
        let (host, port) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains(']') => (&rest[..i], Some(&rest[i + 1..])),
            _ => (rest, None),
        };
        let port = match port {
            None => scheme.default_port(),
            // Digits only: `u16::from_str` would take a `+`.
            Some(p) => Some(p)
                .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u16>().ok())
                .filter(|p| *p != 0)
                .ok_or("the port must be a number from 1 to 65535")?,
        };
        let dns = |name: &str| {
            !name.ends_with('.')
                && matches!(Hostname::parse(name), Some(Hostname::Exact(n)) if n == name)
        };
        let host = if host == "*" {
            OriginHost::Any
        } else if let Some(suffix) = host.strip_prefix("**.") {
            dns(suffix)
                .then(|| OriginHost::SubdomainAnyDepth(suffix.to_owned()))
                .ok_or("a wildcard must be followed by a domain, as in *.example.com")?
        } else if let Some(suffix) = host.strip_prefix("*.") {
            dns(suffix)
                .then(|| OriginHost::Subdomain(suffix.to_owned()))
                .ok_or("a wildcard must be followed by a domain, as in *.example.com")?
        } else if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
            v6.parse::<std::net::Ipv6Addr>()
                .map_err(|_| format!("{host} is not an IPv6 address"))?;
            OriginHost::Exact(host.to_owned())
        } else if host.contains('*') {
            return Err("only a leading `*.` wildcard is allowed in the host".into());
        } else if dns(host) {
            OriginHost::Exact(host.to_owned())
        } else {
            return Err(format!("{host:?} is not a valid host name"));
        };
        Ok(Self::Origin { scheme, host, port })
    }
}

impl std::fmt::Display for OriginPattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Self::Origin { scheme, host, port } = self else {
            return f.write_str("*");
        };
        write!(f, "{}://", scheme.as_str())?;
        match host {
            OriginHost::Exact(h) => f.write_str(h)?,
            OriginHost::Subdomain(s) => write!(f, "*.{s}")?,
            OriginHost::SubdomainAnyDepth(s) => write!(f, "**.{s}")?,
            OriginHost::Any => f.write_str("*")?,
        }
        if *port != scheme.default_port() {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

impl Serialize for OriginPattern {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for OriginPattern {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        OriginPattern::parse(&s)
            .map_err(|e| serde::de::Error::custom(format!("invalid origin {s:?}: {e}")))
    }
}
