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
    /// External authentication (ingress-nginx `auth-url`, oauth2-proxy's
    /// `auth_request`): each request is first asked of an HTTP service.
    /// Boxed: large, and most rules have none.
    ExternalAuth(Box<ExternalAuth>),
    /// Requests per client key over time (ingress-nginx `limit-rps`,
    /// `limit-rpm`): over the limit answers `status` with `Retry-After`.
    RateLimit(RateLimit),
    /// Requests in flight at once per client key (ingress-nginx
    /// `limit-connections`): one more answers `status`.
    ConnectionLimit(ConnectionLimit),
    /// Response bandwidth (ingress-nginx `limit-rate`,
    /// `limit-rate-after`): after the first `after` bytes of a response,
    /// its body is sent at `bytes_per_second` on average.
    ResponseRate(ResponseRate),
    /// OpenTelemetry for the rule's requests (ingress-nginx
    /// `enable-opentelemetry`, `opentelemetry-*`): a rule without one
    /// follows the global `--enable-opentelemetry`.
    Trace(Trace),
    /// JWT bearer tokens checked against issuers' keys (HTTPRoute
    /// `policies.jwt`, `portico.dev/jwt-*`): 401 unless a valid token
    /// comes. Boxed: large, and most rules have none.
    Jwt(Box<Jwt>),
    /// Requests per key per window across every replica, counted in
    /// Redis (ingress-nginx `global-rate-limit`): over the limit answers
    /// `status` with `Retry-After`.
    GlobalRateLimit(GlobalRateLimit),
    /// Copies of the rule's requests sent to another backend, fire and
    /// forget (ingress-nginx `mirror-target`, Gateway API
    /// `RequestMirror`): the copy's answer is discarded and never delays
    /// or changes the original's. Boxed: it holds a whole backend, and
    /// most rules have none. See [`crate::filter::mirror`].
    Mirror(Box<Mirror>),
}

/// Where a rule's requests are copied to, and which of them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Mirror {
    /// The metrics' `route` label; translation uses the route id (as
    /// [`LimitScope::id`]).
    pub route: String,
    /// Where copies go (cleartext; weight ignored), its endpoints resolved
    /// by translation like an error backend's.
    pub backend: Backend,
    /// The share of requests copied; all when unset.
    #[serde(default)]
    pub fraction: MirrorFraction,
    /// Copy the request body too (ingress-nginx `mirror-request-body`);
    /// `false`: copies go without one.
    #[serde(default = "yes")]
    pub request_body: bool,
    /// The copies' `Host` (ingress-nginx `mirror-host`); `None`: the
    /// original request's. Checked as an authority by translation; the
    /// table build turns a rule with an invalid one into no copies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The copies' path and query.
    #[serde(default)]
    pub path: MirrorPath,
}

impl Mirror {
    /// Every request of route `route` copied to `backend` with the
    /// request's own `Host`, path, query and body: Gateway API's
    /// `RequestMirror` (set [`Mirror::fraction`] from its `percent` or
    /// `fraction`).
    pub fn to_backend(route: impl Into<String>, backend: Backend) -> Self {
        Self {
            route: route.into(),
            backend,
            fraction: MirrorFraction::ALL,
            request_body: true,
            host: None,
            path: MirrorPath::Request,
        }
    }
}

/// `numerator` of every `denominator` requests, sampled at random per
/// request (Gateway API `fraction`; `percent` is `n/100`). A numerator of
/// 0 copies none; one at or above the denominator copies all.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MirrorFraction {
    pub numerator: u32,
    /// More than 0; a 0 copies none.
    pub denominator: u32,
}

impl MirrorFraction {
    pub const ALL: Self = Self {
        numerator: 1,
        denominator: 1,
    };

    /// Gateway API's `percent`, 0 to 100.
    pub fn percent(p: u32) -> Self {
        Self {
            numerator: p,
            denominator: 100,
        }
    }
}

impl Default for MirrorFraction {
    fn default() -> Self {
        Self::ALL
    }
}

/// The copies' path and query.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MirrorPath {
    /// The request's, as routed (before a rule's rewrite): Gateway API's
    /// `RequestMirror`.
    #[default]
    Request,
    /// ingress-nginx's `mirror-target` path: `prefix` as written (`/` when
    /// empty and nothing follows), then the request's URI when the target
    /// ends in `$request_uri`. Checked as a path by translation.
    Target { prefix: String, request_uri: bool },
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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ResponseRate {
    /// More than 0.
    pub bytes_per_second: u64,
    #[serde(default)]
    pub after: u64,
}

/// nginx `limit_req` with `nodelay`, as ingress-nginx configures it: each
/// key has a leaky bucket per rate; a request within `burst` of the rate
/// passes at once, one beyond it is refused (and costs nothing). The
/// buckets live outside the table, shared by every rule holding an equal
/// value ([`crate::filter::FilterState`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RateLimit {
    /// `status`: `--limit-req-status-code`.
    #[serde(flatten)]
    pub scope: LimitScope,
    /// A request must pass each (ingress-nginx applies `limit-rps` and
    /// `limit-rpm` both when both are set). One or two.
    pub rates: Vec<Rate>,
    /// Send the IETF `RateLimit-Policy` and `RateLimit` headers.
    #[serde(default)]
    pub headers: bool,
}

/// One leaky bucket: `requests` per `per`, and `burst` more at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Rate {
    pub requests: u32,
    pub per: RatePeriod,
    #[serde(default)]
    pub burst: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RatePeriod {
    Second,
    Minute,
}

impl RatePeriod {
    pub fn seconds(self) -> u64 {
        match self {
            RatePeriod::Second => 1,
            RatePeriod::Minute => 60,
        }
    }
}

/// What a limit counts by.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKey {
    /// The client address the proxy derives (the peer, the PROXY protocol
    /// source, or a trusted proxy's `X-Forwarded-For` entry).
    #[default]
    ClientAddress,
    /// A request header's value; a request without it (or with it empty)
    /// is not limited, as nginx does not count an empty key.
    Header(#[serde(with = "super::serde_http::header_name")] HeaderName),
    /// Every request as one key.
    Route,
}

/// nginx `limit_conn` per request, as ingress-nginx's `limit-connections`:
/// at most `max` requests of one key in flight at once (until the
/// response body ends); one more answers `status`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConnectionLimit {
    /// `status`: `--limit-conn-status-code`.
    #[serde(flatten)]
    pub scope: LimitScope,
    pub max: u32,
}

/// What every kind of limit has: whose state it is, what it counts by,
/// whom it spares and how it refuses.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LimitScope {
    /// Whose state this is: rules with the same id and settings share it.
    /// Translation uses the route id: ingress-nginx keeps one zone per
    /// Ingress, shared by its paths. Also the metrics' `route` label.
    pub id: String,
    #[serde(default)]
    pub key: LimitKey,
    /// Clients never limited (`limit-allowlist`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<ipnet::IpNet>,
    /// The refusal's status, 400 to 599.
    #[serde(default = "service_unavailable")]
    pub status: u16,
}

impl LimitScope {
    /// Per client address, refused with ingress-nginx's 503.
    pub fn new(id: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            key: LimitKey::ClientAddress,
            exempt: Vec::new(),
            status: DEFAULT_LIMIT_STATUS,
        }
    }
}

/// ingress-nginx's `global-rate-limit`: at most `limit` requests per
/// `window_secs` per key, counted in Redis by every replica together (a
/// sliding window, [`crate::filter::global_rate_limit`]). Counters are
/// shared by every rule holding the same `id`, limit, window and key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GlobalRateLimit {
    /// Whose counters these are; translation uses the route id (one
    /// namespace per Ingress, as ingress-nginx's per-Ingress UID). Also
    /// the metrics' `route` label.
    pub id: String,
    /// Requests per window, more than 0.
    pub limit: u32,
    /// The window, in whole seconds, more than 0.
    pub window_secs: u32,
    /// What a request counts by: its variables' values together. No
    /// variables: every request of the rule counts as one key. A request
    /// with none of the variables present is not limited.
    pub key: HashKey,
    /// Clients never limited (`global-rate-limit-ignored-cidrs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exempt: Vec<ipnet::IpNet>,
    /// The refusal's status, 400 to 599 (`--global-rate-limit-status-code`).
    #[serde(default = "too_many_requests")]
    pub status: u16,
}

/// ingress-nginx's default refusal status for global limits.
pub const DEFAULT_GLOBAL_LIMIT_STATUS: u16 = 429;

fn too_many_requests() -> u16 {
    DEFAULT_GLOBAL_LIMIT_STATUS
}

/// ingress-nginx's default refusal status for both limits.
pub const DEFAULT_LIMIT_STATUS: u16 = 503;

fn service_unavailable() -> u16 {
    DEFAULT_LIMIT_STATUS
}

/// A rule's tracing settings; what it does is in `observe::trace`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trace {
    /// `None`: the global switch decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Continue the client's `traceparent`; else start a new trace and
    /// replace the client's header upstream.
    #[serde(default = "yes")]
    pub trust_incoming_span: bool,
    /// The span's name, taken literally; else `HTTP <method>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operation_name: Option<String>,
}

impl Default for Trace {
    fn default() -> Self {
        Self {
            enabled: None,
            trust_incoming_span: true,
            operation_name: None,
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
            // nginx's preaccess phase, where `limit_req` and `limit_conn`
            // run: a flood is refused before any access check or password
            // hash is paid for. Translation lists them after CORS, whose
            // preflight ingress-nginx answers earlier (`return` in the
            // rewrite phase).
            // Translation lists the global limit after the local ones: a
            // client a local limit refuses costs no Redis round trip.
            Filter::RateLimit(_) | Filter::ConnectionLimit(_) | Filter::GlobalRateLimit(_) => {
                Stage::PreAccess
            }
            Filter::Cors(_) => Stage::PreAccess,
            Filter::IpAccess(_)
            | Filter::ClientCert(_)
            | Filter::BasicAuth(_)
            | Filter::Jwt(_)
            | Filter::ExternalAuth(_) => Stage::Access,
            // Content: its response side (the error page) runs first on
            // the way back, so every other filter's applies to the page.
            // nginx's `mirror` runs in its precontent phase, after the
            // access checks and limits: a refused request is not copied.
            // Translation lists it after the body limit, which nginx checks
            // on `Content-Length` before any phase runs.
            Filter::BodyLimit(_)
            | Filter::ErrorPages(_)
            | Filter::ResponseRate(_)
            | Filter::Mirror(_) => Stage::Content,
            // Observes, never answers: its span wraps the whole request.
            Filter::Trace(_) => Stage::Log,
        }
    }
}

/// Orders a rule's filters for running: by stage, list order within one.
pub fn order_filters(filters: &mut [Filter]) {
    // Stable: list order within a stage is kept.
    filters.sort_by_key(Filter::stage);
}

/// Whether `filters` are in running order already ([`order_filters`]).
pub fn filters_ordered(filters: &[Filter]) -> bool {
    filters.is_sorted_by_key(Filter::stage)
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

    /// Whether [`user_settable`] allows every entry, so that
    /// [`Self::retain_user_settable`] would leave it as it is.
    pub fn all_user_settable(&self) -> bool {
        let names = self.set.iter().chain(&self.add).map(|(name, _)| name);
        names.chain(&self.remove).all(|n| user_settable(n).is_ok())
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
