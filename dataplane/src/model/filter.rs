//! The policies on a rule's chain: `Filter`, its stages and their data.

#[allow(unused_imports)]
use super::*;

// === impl Filter ===

/// One policy of a rule's filter chain. The chain runs each request through
/// its filters by [`Stage`], then in list order within a stage (the order
/// Gateway API promises for HTTPRoute filters); the response side runs in
/// reverse, so the first filter's response side runs last.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Filter {
    /// Plain-HTTP requests are answered 308 to https (ingress-nginx
    /// `ssl-redirect`, `force-ssl-redirect`).
    HttpsRedirect(HttpsRedirect),
    /// `Strict-Transport-Security` on answers to HTTPS requests.
    Hsts(Hsts),
    /// Edits the request headers as they go upstream.
    RequestHeaders(HeaderModifier),
    /// Edits the headers of every answer, the proxy's own included.
    ResponseHeaders(HeaderModifier),
    /// CORS: answers preflights from allowed origins and decorates every
    /// answer to them (ingress-nginx `enable-cors`, HTTPRoute's `CORS`
    /// filter, the gRPC-Web bridge's browser access).
    Cors(Cors),
    /// The request must come on a TLS connection verified under this
    /// client-certificate policy: 421 over TLS otherwise, 403 over HTTP.
    ClientCert(RouteClientAuth),
    /// A declared request body (`Content-Length`) larger than this answers
    /// 413 before anything is sent upstream, and a streamed one is cut off
    /// there (gRPC calls excepted: [`GrpcOptions::max_message`] limits each
    /// message instead). Only on forwarding rules.
    BodyLimit(u64),
    /// Client address lists (ingress-nginx `allowlist-source-range`,
    /// `denylist-source-range`): 403 for a denied client.
    IpAccess(IpAccess),
    /// Answers with one of these statuses get their body from an error
    /// backend (ingress-nginx `custom-http-errors`). Boxed: it holds a
    /// whole backend, and most rules have none.
    ErrorPages(Box<ErrorPages>),
    /// HTTP Basic authentication (ingress-nginx `auth-type: basic`): 401
    /// with a challenge unless the request carries a listed user's
    /// password.
    BasicAuth(BasicAuth),
}

/// Who may use a rule by HTTP Basic authentication, from a Secret's
/// htpasswd entries. Shown in `/debug/routes` as realm, Secret and user
/// count: the hashes never leave the process.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BasicAuth {
    /// Sent as `WWW-Authenticate: Basic realm="<realm>"`; must pass
    /// [`crate::filter::basic_auth::check_realm`] (else it is sent empty).
    #[serde(default)]
    pub realm: String,
    /// Where the users come from, `namespace/name`: for people reading
    /// the table.
    #[serde(default)]
    pub secret: String,
    /// Serialised as their count.
    #[serde(default)]
    pub users: crate::filter::basic_auth::Credentials,
    /// Send the client's `Authorization` header upstream (ingress-nginx
    /// does); by default the credential stops at the proxy.
    #[serde(default)]
    pub forward_authorization: bool,
}

/// Custom error pages: when the upstream answers one of `codes`, or the
/// proxy itself would, the answer keeps its status and takes its body and
/// content headers from `backend`, asked with ingress-nginx's `X-Code`,
/// `X-Format`, `X-Original-URI`, ... headers. gRPC calls are never
/// intercepted: their status is in the trailers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorPages {
    /// Statuses 400 to 599.
    pub codes: Vec<u16>,
    /// Also upstream answers; `false` (ingress-nginx
    /// `disable-proxy-intercept-errors`): only the proxy's own errors.
    #[serde(default = "yes")]
    pub intercept_upstream: bool,
    /// The Service that renders the pages (cleartext; weight ignored).
    pub backend: Backend,
    /// What the error backend is told about the rule.
    #[serde(default)]
    pub origin: ErrorOrigin,
}

fn yes() -> bool {
    true
}

/// The rule an error happened on, as ingress-nginx tells its default
/// backend: `X-Namespace`, `X-Ingress-Name`, `X-Service-Name`,
/// `X-Service-Port`. An empty field is not sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorOrigin {
    #[serde(default)]
    pub namespace: String,
    #[serde(default)]
    pub ingress: String,
    #[serde(default)]
    pub service: String,
    /// The Service port as written: a number or a name.
    #[serde(default)]
    pub port: String,
}

/// Which client addresses may use a rule. The address is the one the
/// proxy derives per request (the peer, the PROXY protocol source, or a
/// trusted proxy's `X-Forwarded-For` entry). As nginx's `deny` before
/// `allow`: a client in `deny` is refused; with a non-empty `allow`, so is
/// every client outside it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAccess {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<ipnet::IpNet>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<ipnet::IpNet>,
}

/// The phases a request goes through, after nginx's (rewrite → pre-access →
/// access → content → log): a redirect answers before anyone is asked for
/// credentials, a CORS preflight (which carries none) before an access
/// check, and the content phase sees only admitted requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Rewrite,
    PreAccess,
    Access,
    Content,
    Log,
}

impl Filter {
    /// The one place a filter's stage is decided. Within a stage, list
    /// order holds. The header edits sit in the first stage so that their
    /// response side runs after every later filter's (a CORS decoration
    /// can be overridden), and HSTS's after theirs (it cannot be removed).
    pub fn stage(&self) -> Stage {
        match self {
            Filter::HttpsRedirect(_)
            | Filter::Hsts(_)
            | Filter::RequestHeaders(_)
            | Filter::ResponseHeaders(_) => Stage::Rewrite,
            Filter::Cors(_) => Stage::PreAccess,
            Filter::IpAccess(_) | Filter::ClientCert(_) | Filter::BasicAuth(_) => Stage::Access,
            // Content: its response side (the error page) runs first on
            // the way back, so every other filter's applies to the page.
            Filter::BodyLimit(_) | Filter::ErrorPages(_) => Stage::Content,
        }
    }
}

/// Orders a rule's filters for running: by stage, list order within one.
pub fn order_filters(filters: &mut [Filter]) {
    // Stable: list order within a stage is kept.
    filters.sort_by_key(Filter::stage);
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HeaderModifier {
    /// Replace any existing values.
    #[serde(default, with = "serde_http::header_pairs")]
    pub set: Vec<(HeaderName, HeaderValue)>,
    /// Append a value, keeping existing ones.
    #[serde(default, with = "serde_http::header_pairs")]
    pub add: Vec<(HeaderName, HeaderValue)>,
    #[serde(default, with = "serde_http::header_names")]
    pub remove: Vec<HeaderName>,
}

impl HeaderModifier {
    pub fn is_empty(&self) -> bool {
        self.set.is_empty() && self.add.is_empty() && self.remove.is_empty()
    }

    /// Drops every entry [`user_settable`] refuses; returns them as
    /// (`set`/`add`/`remove`, name, reason).
    pub fn retain_user_settable(&mut self) -> Vec<(&'static str, HeaderName, &'static str)> {
        let mut refused = Vec::new();
        for (list, pairs) in [("set", &mut self.set), ("add", &mut self.add)] {
            pairs.retain(|(name, _)| match user_settable(name) {
                Ok(()) => true,
                Err(reason) => {
                    refused.push((list, name.clone(), reason));
                    false
                }
            });
        }
        self.remove.retain(|name| match user_settable(name) {
            Ok(()) => true,
            Err(reason) => {
                refused.push(("remove", name.clone(), reason));
                false
            }
        });
        refused
    }
}
