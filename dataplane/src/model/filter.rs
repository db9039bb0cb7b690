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
    /// 413 before anything is sent upstream (gRPC calls excepted).
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
    /// External authentication (ingress-nginx `auth-url`, oauth2-proxy's
    /// `auth_request`): each request is first asked of an HTTP service.
    /// Boxed: large, and most rules have none.
    ExternalAuth(Box<ExternalAuth>),
    /// JWT bearer tokens checked against issuers' keys (HTTPRoute
    /// `policies.jwt`, `portico.dev/jwt-*`): 401 unless a valid token
    /// comes. Boxed: large, and most rules have none.
    Jwt(Box<Jwt>),
}

/// Who may use a rule by a JWT one of `providers` signed. See
/// [`crate::filter::jwt`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Jwt {
    pub providers: Vec<JwtProvider>,
    /// `false`: a request without a token passes (claim headers removed);
    /// one with a token must still carry a valid one.
    #[serde(default = "yes")]
    pub required: bool,
}

/// One issuer whose tokens a rule accepts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct JwtProvider {
    /// Compared exactly with the token's `iss`.
    pub issuer: String,
    /// The token's `aud` must hold one of these; empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    pub jwks: JwksSource,
    #[serde(default)]
    pub from: TokenSource,
    /// Claim name → upstream header; string, number and bool claims only.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub claim_to_headers: Vec<ClaimHeader>,
    /// Claims that must be present (besides `exp`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub required_claims: Vec<String>,
    /// Leeway on `exp` and `nbf`.
    #[serde(with = "serde_http::millis", default = "clock_skew")]
    pub clock_skew: Duration,
}

impl JwtProvider {
    pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(30);

    /// A provider for `issuer` with every other setting at its default.
    pub fn new(issuer: impl Into<String>, jwks: JwksSource) -> Self {
        Self {
            issuer: issuer.into(),
            audiences: Vec::new(),
            jwks,
            from: TokenSource::default(),
            claim_to_headers: Vec::new(),
            required_claims: Vec::new(),
            clock_skew: Self::DEFAULT_CLOCK_SKEW,
        }
    }
}

fn clock_skew() -> Duration {
    JwtProvider::DEFAULT_CLOCK_SKEW
}

/// Where an issuer's public keys come from.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksSource {
    /// Fetched (https, or http inside the cluster) off the request path
    /// and refreshed.
    Uri(String),
    /// A JWKS document from a Secret's `jwks` key, translated in.
    Inline {
        /// `namespace/name`, for people reading the table.
        secret: String,
        jwks: String,
    },
}

/// Where the token is read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenSource {
    /// `Authorization: Bearer <token>`.
    #[default]
    Header,
    /// The value of the named cookie.
    Cookie(String),
    /// The value of this header, after an optional `Bearer ` (for
    /// gateways that pass tokens under their own name).
    Named(#[serde(with = "serde_http::header_name")] HeaderName),
}

/// A claim copied onto the upstream request.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ClaimHeader {
    pub claim: String,
    #[serde(with = "serde_http::header_name")]
    pub header: HeaderName,
}

/// Who may use a rule, as an HTTP service says (ingress-nginx `auth-*`
/// annotations, HTTPRoute `policies.externalAuth`): 2xx allows, 401 asks
/// the client to sign in, 403 refuses, anything else fails closed (500).
/// Templates are parsed when the model is made; see
/// [`crate::filter::external_auth`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ExternalAuth {
    /// The service's URL: http or https, no variable in its authority.
    pub url: crate::filter::external_auth::Template,
    /// The subrequest's method; GET when unset.
    #[serde(default, with = "serde_http::opt_method")]
    pub method: Option<Method>,
    /// Where a 401 sends the client (302), with the original URL in
    /// `signin_redirect_param`; without it the 401 goes to the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signin: Option<crate::filter::external_auth::Template>,
    /// `rd` unless set.
    #[serde(default = "rd")]
    pub signin_redirect_param: String,
    /// Copied from an allowing answer onto the upstream request; any the
    /// client sent are removed, present in the answer or not.
    #[serde(default, with = "serde_http::header_names")]
    pub response_headers: Vec<HeaderName>,
    /// `X-Auth-Request-Redirect`; the original URI when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<String>,
    /// Set on the subrequest after every other header.
    #[serde(default, with = "serde_http::header_pairs")]
    pub proxy_set_headers: Vec<(HeaderName, HeaderValue)>,
    /// The service's `Set-Cookie` also reaches the client on an allowed
    /// request (always on a denied one).
    #[serde(default)]
    pub always_set_cookie: bool,
    /// Bounds the whole exchange, connecting included.
    #[serde(with = "serde_http::millis", default = "auth_timeout")]
    pub timeout: Duration,
    /// Allowing answers remembered per rendered key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<ExternalAuthCache>,
    /// The client's idle connections to the service.
    #[serde(default)]
    pub keepalive: AuthKeepalive,
    /// The in-cluster Service a plain-http `url` names, when the
    /// controller knows it: subrequests go to its endpoints (with `Host`
    /// as written), through the same pools and health as routes. Without
    /// it the URL's host is resolved by DNS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<Box<Backend>>,
}

fn rd() -> String {
    "rd".into()
}

fn auth_timeout() -> Duration {
    ExternalAuth::DEFAULT_TIMEOUT
}

impl ExternalAuth {
    /// ingress-nginx's `proxy_connect_timeout`/`proxy_read_timeout`
    /// defaults for the auth location.
    pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

    /// A policy asking `url` with every other setting at its default.
    pub fn new(url: crate::filter::external_auth::Template) -> Self {
        Self {
            url,
            method: None,
            signin: None,
            signin_redirect_param: rd(),
            response_headers: Vec::new(),
            request_redirect: None,
            proxy_set_headers: Vec::new(),
            always_set_cookie: false,
            timeout: Self::DEFAULT_TIMEOUT,
            cache: None,
            keepalive: AuthKeepalive::default(),
            service: None,
        }
    }
}

/// Which allowing answers are remembered, and for how long (2xx only).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExternalAuthCache {
    pub key: crate::filter::external_auth::Template,
    #[serde(with = "serde_http::millis")]
    pub duration: Duration,
}

/// The auth client's pool (ingress-nginx `auth-keepalive`,
/// `auth-keepalive-timeout`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AuthKeepalive {
    /// Idle connections kept per service; 0 closes each after use.
    pub connections: usize,
    #[serde(with = "serde_http::millis")]
    pub idle_timeout: Duration,
}

impl Default for AuthKeepalive {
    fn default() -> Self {
        Self {
            connections: 32,
            idle_timeout: Duration::from_secs(60),
        }
    }
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
            Filter::IpAccess(_)
            | Filter::ClientCert(_)
            | Filter::BasicAuth(_)
            | Filter::Jwt(_)
            | Filter::ExternalAuth(_) => Stage::Access,
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

impl Route {
    /// A rule's filter chain, in running order, derived from where the
    /// settings live in this model: the route's HTTPS policy (redirect,
    /// HSTS, client certificates) and the rule's header modifiers and body
    /// limit, then the rule's own [`Rule::chain`]. Off the request path,
    /// once per table build.
    pub fn rule_filters(&self, rule: &Rule) -> Vec<Filter> {
        let mut out = Vec::new();
        let https = &self.https;
        if let Some(r) = https.redirect {
            out.push(Filter::HttpsRedirect(r));
        }
        if let Some(h) = https.hsts {
            out.push(Filter::Hsts(h));
        }
        // Listed before the response side of every later filter: see
        // `Filter::stage`.
        if !rule.filters.response_headers.is_empty() {
            out.push(Filter::ResponseHeaders(
                rule.filters.response_headers.clone(),
            ));
        }
        if !rule.filters.request_headers.is_empty() {
            out.push(Filter::RequestHeaders(rule.filters.request_headers.clone()));
        }
        if let Some(a) = &https.client_auth {
            out.push(Filter::ClientCert(a.clone()));
        }
        // Bodies only matter where a request is forwarded: a redirect or a
        // deny reads no body.
        if matches!(rule.action, Action::Forward(_))
            && let Some(limit) = rule.max_request_body
        {
            out.push(Filter::BodyLimit(limit));
        }
        out.extend(rule.chain.iter().cloned());
        order_filters(&mut out);
        out
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    #[serde(default)]
    pub request_headers: HeaderModifier,
    #[serde(default)]
    pub response_headers: HeaderModifier,
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
