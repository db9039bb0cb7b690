//! The routing model: plain data that the controller builds from Kubernetes
//! objects and hands to the dataplane as a whole.
//!
//! Nothing here is interpreted as text at request time: header names, values
//! and methods are typed; regular expressions are compiled (with size limits)
//! when a [`RouteConfig`] is turned into a live table, and a pattern that does
//! not compile disables only the rule that holds it.
//!
//! Everything is serde-serializable so `/debug/routes` can show the live table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};

/// Request bodies larger than this answer 413 unless a rule says otherwise
/// (ingress-nginx's `proxy-body-size` default).
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 1024 * 1024;

/// Everything the dataplane serves: the unit of atomic publication.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteConfig {
    pub routes: Vec<Route>,
    /// Renders the proxy's own 404 for requests no route matches
    /// (ingress-nginx `--default-backend-service`); `None`: a plain 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<Backend>,
}

impl RouteConfig {
    /// `routes`, with no default backend.
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes,
            default_backend: None,
        }
    }
}

/// The rules one source object contributes (an Ingress, an HTTPRoute).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Route {
    /// Stable, bounded identifier, e.g. `ingress/default/web`. Used as the
    /// metrics label and in access logs, so it must not carry request data.
    pub id: String,
    pub source: SourceRef,
    /// Empty: the route belongs to the default virtual host, which serves
    /// requests whose host matches no other virtual host.
    #[serde(default)]
    pub hostnames: Vec<Hostname>,
    pub rules: Vec<Rule>,
    /// HTTP-to-HTTPS redirect and HSTS for this route's requests.
    #[serde(default)]
    pub https: HttpsPolicy,
}

impl Route {
    /// A route of `rules` for `hostnames` (empty: the default virtual
    /// host), with no source object and no HTTPS policy.
    pub fn new(id: impl Into<String>, hostnames: Vec<Hostname>, rules: Vec<Rule>) -> Self {
        Self {
            id: id.into(),
            source: SourceRef::default(),
            hostnames,
            rules,
            https: HttpsPolicy::default(),
        }
    }
}

/// What a route does about HTTPS (ingress-nginx `ssl-redirect`,
/// `force-ssl-redirect`, `hsts*`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpsPolicy {
    /// Plain-HTTP requests are answered 308 to the same URL over https,
    /// except ACME HTTP-01 challenges (`/.well-known/acme-challenge/`).
    #[serde(default)]
    pub redirect: Option<HttpsRedirect>,
    /// `Strict-Transport-Security` on responses to HTTPS requests.
    #[serde(default)]
    pub hsts: Option<Hsts>,
    /// Requests must come on a TLS connection verified under this
    /// client-certificate policy (published with the certificates).
    #[serde(default)]
    pub client_auth: Option<RouteClientAuth>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteClientAuth {
    /// The policy's id (`crate::listen::tls::ClientAuth::id`).
    pub policy: String,
    /// Send the client's certificate upstream (`ssl-client-cert`).
    #[serde(default)]
    pub pass_certificate: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpsRedirect {
    /// The public HTTPS port when it is not 443.
    #[serde(default)]
    pub port: Option<u16>,
    /// Keep a trailing `/` of the request URI; by default one is dropped,
    /// as ingress-nginx does.
    #[serde(default)]
    pub preserve_trailing_slash: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hsts {
    pub max_age: u64,
    pub include_subdomains: bool,
    pub preload: bool,
}

impl Hsts {
    /// ingress-nginx's defaults: `max-age=15724800; includeSubDomains`.
    pub const DEFAULT: Hsts = Hsts {
        max_age: 15_724_800,
        include_subdomains: true,
        preload: false,
    };

    /// The header value, e.g. `max-age=15724800; includeSubDomains`.
    pub fn header_value(&self) -> String {
        let mut v = format!("max-age={}", self.max_age);
        if self.include_subdomains {
            v.push_str("; includeSubDomains");
        }
        if self.preload {
            v.push_str("; preload");
        }
        v
    }
}

/// Where a route came from; the last tie-breakers of precedence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SourceRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Creation time, seconds since the Unix epoch: older wins a true tie.
    pub created: i64,
}

/// A virtual host name: an exact, lower-case name or a wildcard.
///
/// Ingress and Gateway API disagree on wildcards: an Ingress `*.example.com`
/// matches exactly one extra label, an HTTPRoute `*.example.com` any number
/// of them. Both live in one table, so both are kept apart here.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hostname {
    Exact(String),
    /// Ingress `*.suffix`: exactly one extra label. Holds the suffix after
    /// `*.`, lower case: `Wildcard("example.com")`. Written `*.example.com`.
    Wildcard(String),
    /// Gateway API `*.suffix`: one or more extra labels. Written
    /// `**.example.com` in this model's text form.
    WildcardAnyDepth(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Alternatives: the rule applies when any one matches. Empty means
    /// "every request" (a `Prefix("/")` match).
    #[serde(default)]
    pub matches: Vec<RouteMatch>,
    #[serde(default)]
    pub filters: Filters,
    pub action: Action,
    #[serde(default)]
    pub timeouts: Timeouts,
    /// `None`: unlimited. Not applied to gRPC calls, whose streams are
    /// unbounded: [`GrpcOptions::max_message`] limits each message instead.
    #[serde(default = "default_max_request_body")]
    pub max_request_body: Option<u64>,
    #[serde(default)]
    pub grpc: GrpcOptions,
    /// Filters on the rule's chain besides those derived from the fields
    /// above and the route's [`HttpsPolicy`] (see [`Route::rule_filters`]):
    /// where new policies go. Run by [`Filter::stage`], then list order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Filter>,
}

impl Rule {
    /// A rule for every request with `action` and the defaults: no
    /// filters, the default timeouts, body limit and gRPC options.
    pub fn new(action: Action) -> Self {
        Self {
            matches: Vec::new(),
            filters: Filters::default(),
            action,
            timeouts: Timeouts::default(),
            max_request_body: default_max_request_body(),
            grpc: GrpcOptions::default(),
            chain: Vec::new(),
        }
    }
}

fn default_max_request_body() -> Option<u64> {
    Some(DEFAULT_MAX_REQUEST_BODY)
}

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

/// All conditions must hold (AND).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RouteMatch {
    pub path: PathMatch,
    #[serde(default)]
    pub headers: Vec<HeaderMatch>,
    #[serde(default)]
    pub query: Vec<QueryMatch>,
    #[serde(default, with = "serde_http::opt_method")]
    pub method: Option<Method>,
}

impl Default for RouteMatch {
    fn default() -> Self {
        Self {
            path: PathMatch::Prefix("/".into()),
            headers: Vec::new(),
            query: Vec::new(),
            method: None,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathMatch {
    Exact(String),
    /// Matches by path segment: `/foo` matches `/foo`, `/foo/`, `/foo/bar`,
    /// never `/foobar`. A trailing slash in the prefix is ignored.
    Prefix(String),
    /// Matches the whole path: compiled as `^(?:pattern)$`.
    RegularExpression(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeaderMatch {
    #[serde(with = "serde_http::header_name")]
    pub name: HeaderName,
    pub value: ValueMatch,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueryMatch {
    pub name: String,
    pub value: ValueMatch,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ValueMatch {
    Exact(String),
    /// Matches the whole value: compiled as `^(?:pattern)$`.
    RegularExpression(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Action {
    Forward(Forward),
    Redirect(Redirect),
    /// Answer 503 without contacting anything: the rule's configuration asked
    /// for something that cannot be done safely (an invalid redirect or
    /// rewrite annotation), and serving the request unchanged would be wrong.
    /// `reason` is for operators (`/debug/routes`), never sent to clients.
    Deny {
        reason: String,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forward {
    /// Weighted split; a backend with weight 0 receives nothing. Empty, or
    /// all weights 0, or no endpoints anywhere: 503.
    pub backends: Vec<Backend>,
    #[serde(default)]
    pub rewrite: Option<UrlRewrite>,
    /// An alternative backend set chosen per request (ingress-nginx canary).
    #[serde(default)]
    pub canary: Option<Canary>,
    /// TLS to every backend of the rule (ingress-nginx `backend-protocol:
    /// HTTPS`/`GRPCS`); `None`: cleartext.
    #[serde(default)]
    pub upstream_tls: Option<Arc<UpstreamTls>>,
    /// When a failed attempt is tried again on another endpoint.
    #[serde(default)]
    pub retry: RetryPolicy,
}

impl Forward {
    /// A weighted split over `backends`: no rewrite, no canary, cleartext,
    /// the default retries.
    pub fn to(backends: Vec<Backend>) -> Self {
        Self {
            backends,
            rewrite: None,
            canary: None,
            upstream_tls: None,
            retry: RetryPolicy::default(),
        }
    }
}

/// ingress-nginx `proxy-next-upstream*`, plus a retry budget per backend.
/// A retry goes to an endpoint the request has not tried, within the same
/// backend; a request body is never sent twice (only requests without a
/// body, or whose body was not sent at all, are tried again).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub on: RetryOn,
    /// Attempts in all, the first included; 0: as many as endpoints.
    pub tries: u32,
    /// No retry starts later than this after the first attempt; `None`: no
    /// limit.
    #[serde(default, with = "serde_http::opt_millis")]
    pub timeout: Option<Duration>,
    /// Retries may add at most this share (percent) of a backend's
    /// requests...
    pub budget_percent: u8,
    /// ...plus this many per second, so a quiet backend can still retry.
    pub budget_min_per_second: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            on: RetryOn::default(),
            tries: 3,
            timeout: None,
            budget_percent: 20,
            budget_min_per_second: 10,
        }
    }
}

/// What a retry is for (`proxy-next-upstream`). All false: `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryOn {
    /// No response: connect failure, TLS or protocol error, reset.
    pub error: bool,
    /// Connect timeout, or no response head in time.
    pub timeout: bool,
    pub http_500: bool,
    pub http_502: bool,
    pub http_503: bool,
    pub http_504: bool,
    /// Also retry POST, PATCH and other non-idempotent requests after they
    /// were sent (a request that never left is retried whatever its
    /// method).
    pub non_idempotent: bool,
}

impl Default for RetryOn {
    /// ingress-nginx's `error timeout`.
    fn default() -> Self {
        Self {
            error: true,
            timeout: true,
            http_500: false,
            http_502: false,
            http_503: false,
            http_504: false,
            non_idempotent: false,
        }
    }
}

impl RetryOn {
    pub const OFF: RetryOn = RetryOn {
        error: false,
        timeout: false,
        http_500: false,
        http_502: false,
        http_503: false,
        http_504: false,
        non_idempotent: false,
    };

    /// Whether a response with this status is tried again.
    pub fn status(&self, status: http::StatusCode) -> bool {
        match status.as_u16() {
            500 => self.http_500,
            502 => self.http_502,
            503 => self.http_503,
            504 => self.http_504,
            _ => false,
        }
    }

    pub fn is_off(&self) -> bool {
        !(self.error
            || self.timeout
            || self.http_500
            || self.http_502
            || self.http_503
            || self.http_504)
    }
}

/// TLS to upstream endpoints. Part of the connection pool's key: endpoints
/// with different settings never share connections.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UpstreamTls {
    /// Verify the endpoint's certificate (ingress-nginx `proxy-ssl-verify`,
    /// default off).
    #[serde(default)]
    pub verify: bool,
    /// The name the certificate is verified against and, with `sni`, sent
    /// as SNI (ingress-nginx `proxy-ssl-name`).
    pub server_name: String,
    /// Send `server_name` as SNI (`proxy-ssl-server-name`, default off).
    #[serde(default)]
    pub sni: bool,
    /// PEM CA bundle to verify against (`proxy-ssl-secret`'s `ca.crt`);
    /// empty: nothing verifies, so `verify` fails every connection.
    #[serde(default)]
    pub ca_pem: String,
    /// The id of a client certificate published with the certificates
    /// ([`crate::listen::tls::CertConfig::upstream_client_certs`]), presented to
    /// the backend; the key never enters this model. An id that is not
    /// published fails every connection (502).
    #[serde(default)]
    pub client_cert: Option<String>,
}

/// ingress-nginx canary semantics: the header decides first, then the
/// cookie, then the weight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Canary {
    pub backends: Vec<Backend>,
    #[serde(default)]
    pub header: Option<CanaryHeader>,
    /// A cookie whose value `always` selects the canary and `never` the main
    /// backends.
    #[serde(default)]
    pub cookie: Option<String>,
    /// `weight` out of `weight_total` requests go to the canary when neither
    /// header nor cookie decided.
    pub weight: u32,
    pub weight_total: u32,
    /// What the mainline's sticky sessions (`Balance::Cookie`) mean for the
    /// canary decision (ingress-nginx `affinity-canary-behavior`).
    #[serde(default)]
    pub affinity: CanaryAffinity,
}

/// How a canary treats the mainline's sticky sessions. Either way a
/// request the header or cookie sends to the canary starts no session: a
/// per-request override must not pin the client, nor replace its mainline
/// session.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CanaryAffinity {
    /// A session stays on the side it started on: the weight places new
    /// sessions, and a canary session (one the canary's answer started)
    /// stays on the canary while the weight is above 0. Header and cookie
    /// still decide first.
    #[default]
    Sticky,
    /// The canary decision is made per request whatever the session cookie
    /// says; the canary's answers start no session.
    Legacy,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CanaryHeader {
    #[serde(with = "serde_http::header_name")]
    pub name: HeaderName,
    pub value: CanaryHeaderValue,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CanaryHeaderValue {
    /// `always` selects the canary, `never` the main backends; anything else
    /// leaves the decision to the cookie and the weight.
    AlwaysNever,
    /// Exactly this value selects the canary.
    Exact(String),
    /// A value in which this pattern matches (unanchored) selects the canary.
    Pattern(String),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Backend {
    /// Bounded identifier, e.g. `default/web:80`.
    pub name: String,
    pub weight: u32,
    #[serde(default)]
    pub protocol: Protocol,
    /// The ready endpoints (EndpointSlice `ready`); health checks and
    /// outlier detection narrow them down per request.
    pub endpoints: Vec<SocketAddr>,
    /// How endpoints are kept healthy and chosen.
    #[serde(default)]
    pub policy: EndpointPolicy,
}

impl Backend {
    /// A backend of weight 1 over `endpoints`, spoken to in HTTP/1.1, with
    /// the default endpoint policy.
    pub fn new(name: impl Into<String>, endpoints: Vec<SocketAddr>) -> Self {
        Self {
            name: name.into(),
            weight: 1,
            protocol: Protocol::default(),
            endpoints,
            policy: EndpointPolicy::default(),
        }
    }
}

/// What a backend does about its endpoints' health. The state it acts on
/// (ejections, check results) lives on the endpoint, shared by every
/// backend and every table that points at it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EndpointPolicy {
    /// Active checks; `None`: none, endpoints are trusted while ready.
    #[serde(default)]
    pub health_check: Option<HealthCheck>,
    #[serde(default)]
    pub outlier: OutlierDetection,
    /// Panic mode: when fewer than this share (percent) of the endpoints
    /// are eligible, requests are balanced over all ready endpoints, as
    /// Envoy does, rather than piled onto the few left. 0 turns it off.
    #[serde(default = "default_panic_threshold")]
    pub panic_threshold_percent: u8,
    /// An endpoint that becomes eligible (new, recovered, back from an
    /// ejection) ramps from a tenth of its weight to all of it over this
    /// window. `None`: off.
    #[serde(default, with = "serde_http::opt_millis")]
    pub slow_start: Option<Duration>,
    /// How the endpoint of each request is chosen.
    #[serde(default)]
    pub balance: Balance,
}

/// Load-balancing policy (ingress-nginx `load-balance`, `upstream-hash-by`,
/// `affinity`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Balance {
    /// Smooth weighted round robin: endpoints in turn, slow-starting ones
    /// interleaved at their share.
    #[default]
    RoundRobin,
    /// The less loaded of two endpoints chosen at random (in-flight
    /// requests, divided by weight).
    LeastRequest,
    /// The lower of two random endpoints' response-time average times
    /// in-flight requests (ingress-nginx's `ewma`).
    Ewma,
    /// A consistent hash of the key picks the endpoint; an endpoint over
    /// 1.25 times the average load passes the key on (bounded load).
    ConsistentHash { key: HashKey },
    /// Sticky sessions by cookie.
    Cookie(CookieAffinity),
}

/// An `upstream-hash-by` expression: one or more variables, concatenated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashKey(pub Vec<HashVar>);

/// One variable of a [`HashKey`], as ingress-nginx (nginx) names them.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum HashVar {
    /// `$remote_addr`: the client's IP address.
    RemoteAddr,
    /// `$request_uri`: path and query as the client sent them.
    RequestUri,
    /// `$uri`: the path.
    Uri,
    /// `$host`: the host, lower case, without port.
    Host,
    /// `$http_<name>`: a request header (`_` in the name stands for `-`).
    Header(#[serde(with = "serde_http::header_name")] HeaderName),
    /// `$cookie_<name>`: a cookie's value.
    Cookie(String),
    /// `$arg_<name>`: a query argument's value.
    Arg(String),
}

impl HashKey {
    /// Parses an `upstream-hash-by` expression such as `$request_uri` or
    /// `$host$uri`. Only variables: literal text is refused, so nothing a
    /// user writes is ever interpreted.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("empty".into());
        }
        let mut vars = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let Some(after) = rest.strip_prefix('$') else {
                return Err(format!(
                    "only nginx variables may be used, not text: {:?}",
                    rest.chars().take(20).collect::<String>()
                ));
            };
            let end = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            let (name, tail) = after.split_at(end);
            rest = tail;
            let named = |prefix: &str| name.strip_prefix(prefix).filter(|n| !n.is_empty());
            let var = match name {
                "remote_addr" => HashVar::RemoteAddr,
                "request_uri" => HashVar::RequestUri,
                "uri" => HashVar::Uri,
                "host" => HashVar::Host,
                _ => {
                    if let Some(h) = named("http_") {
                        let header = h.replace('_', "-").to_ascii_lowercase();
                        HashVar::Header(
                            HeaderName::from_bytes(header.as_bytes())
                                .map_err(|_| format!("${name}: not a header name"))?,
                        )
                    } else if let Some(c) = named("cookie_") {
                        HashVar::Cookie(c.to_owned())
                    } else if let Some(a) = named("arg_") {
                        HashVar::Arg(a.to_owned())
                    } else {
                        return Err(format!(
                            "${name} is not supported (use $remote_addr, $request_uri, $uri, $host, $http_<name>, $cookie_<name> or $arg_<name>)"
                        ));
                    }
                }
            };
            vars.push(var);
            if vars.len() > 8 {
                return Err("at most 8 variables".into());
            }
        }
        Ok(HashKey(vars))
    }
}

/// Sticky sessions (ingress-nginx `affinity: cookie` and
/// `session-cookie-*`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CookieAffinity {
    /// A valid cookie name.
    pub name: String,
    pub mode: AffinityMode,
    /// `Max-Age`, seconds.
    #[serde(default)]
    pub max_age: Option<u64>,
    /// `Expires`, seconds from the response.
    #[serde(default)]
    pub expires: Option<u64>,
    /// `Path`; a validated absolute path.
    pub path: String,
    /// `Domain`; a validated host name.
    #[serde(default)]
    pub domain: Option<String>,
    #[serde(default)]
    pub same_site: Option<SameSite>,
    #[serde(default)]
    pub secure: bool,
    /// After a failed attempt, point the cookie at the endpoint that
    /// answered instead.
    #[serde(default)]
    pub change_on_failure: bool,
}

impl Default for CookieAffinity {
    fn default() -> Self {
        Self {
            name: "INGRESSCOOKIE".into(),
            mode: AffinityMode::Balanced,
            max_age: None,
            expires: None,
            path: "/".into(),
            domain: None,
            same_site: None,
            secure: false,
            change_on_failure: false,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AffinityMode {
    /// The cookie holds a key that a consistent hash maps to an endpoint:
    /// adding endpoints moves a share of the sessions (ingress-nginx
    /// `balanced`).
    #[default]
    Balanced,
    /// The cookie names its endpoint: a session stays while the endpoint
    /// is eligible (ingress-nginx `persistent`).
    Persistent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SameSite {
    None,
    Lax,
    Strict,
}

impl SameSite {
    pub fn as_str(self) -> &'static str {
        match self {
            SameSite::None => "None",
            SameSite::Lax => "Lax",
            SameSite::Strict => "Strict",
        }
    }
}

fn default_panic_threshold() -> u8 {
    50
}

impl Default for EndpointPolicy {
    fn default() -> Self {
        Self {
            health_check: None,
            outlier: OutlierDetection::default(),
            panic_threshold_percent: default_panic_threshold(),
            slow_start: None,
            balance: Balance::default(),
        }
    }
}

/// Active health checks: one checker per distinct endpoint and check, off
/// the request path. A verdict flips after `healthy_threshold` or
/// `unhealthy_threshold` results in a row.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HealthCheck {
    pub probe: Probe,
    /// Probe this port of the endpoint's address instead of its own.
    #[serde(default)]
    pub port: Option<u16>,
    /// Between the starts of two probes (less up to a tenth, at random, so
    /// checkers spread out).
    #[serde(with = "serde_http::millis")]
    pub interval: Duration,
    /// A probe that has not succeeded by then failed.
    #[serde(with = "serde_http::millis")]
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// HTTP statuses that pass, as inclusive ranges.
    #[serde(default = "default_expected_statuses")]
    pub expected_statuses: Vec<StatusRange>,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            probe: Probe::Tcp,
            port: None,
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
            healthy_threshold: 2,
            unhealthy_threshold: 3,
            expected_statuses: default_expected_statuses(),
        }
    }
}

fn default_expected_statuses() -> Vec<StatusRange> {
    vec![StatusRange { min: 200, max: 399 }]
}

/// How a health check asks.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Probe {
    /// A TCP connection (and the TLS handshake, when the backend uses TLS)
    /// succeeds.
    Tcp,
    /// `GET path` over the backend's protocol (HTTP/1.1 or HTTP/2, TLS when
    /// the backend uses it) answers an expected status.
    Http { path: String },
    /// `grpc.health.v1.Health/Check` for `service` ("" is the whole
    /// server) answers SERVING.
    Grpc { service: String },
}

/// An inclusive range of HTTP status codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct StatusRange {
    pub min: u16,
    pub max: u16,
}

/// Passive outlier detection: endpoints that keep failing real requests
/// are ejected for `base_ejection` × the number of ejections so far, capped
/// at `max_ejection`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct OutlierDetection {
    /// Consecutive 5xx responses that eject; 0 turns this off.
    pub consecutive_5xx: u32,
    /// Consecutive connect failures, timeouts and resets (no response at
    /// all) that eject; 0 turns this off.
    pub consecutive_errors: u32,
    #[serde(with = "serde_http::millis")]
    pub base_ejection: Duration,
    #[serde(with = "serde_http::millis")]
    pub max_ejection: Duration,
    /// At most this share (percent) of a backend's endpoints is ejected at
    /// once.
    pub max_ejected_percent: u8,
}

impl Default for OutlierDetection {
    fn default() -> Self {
        Self {
            consecutive_5xx: 5,
            consecutive_errors: 5,
            base_ejection: Duration::from_secs(30),
            max_ejection: Duration::from_secs(300),
            max_ejected_percent: 50,
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// HTTP/1.1 to the upstream.
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge, cleartext.
    H2c,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Redirect {
    #[serde(default)]
    pub scheme: Option<Scheme>,
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub path: Option<PathModifier>,
    pub status: RedirectStatus,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scheme {
    Http,
    Https,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RedirectStatus {
    MovedPermanently,
    Found,
    SeeOther,
    TemporaryRedirect,
    PermanentRedirect,
}

impl RedirectStatus {
    pub fn code(self) -> http::StatusCode {
        use http::StatusCode as S;
        match self {
            RedirectStatus::MovedPermanently => S::MOVED_PERMANENTLY,
            RedirectStatus::Found => S::FOUND,
            RedirectStatus::SeeOther => S::SEE_OTHER,
            RedirectStatus::TemporaryRedirect => S::TEMPORARY_REDIRECT,
            RedirectStatus::PermanentRedirect => S::PERMANENT_REDIRECT,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PathModifier {
    ReplaceFullPath(String),
    /// Replaces the part of the path matched by the rule's `Prefix` match.
    ReplacePrefixMatch(String),
    /// ingress-nginx `rewrite-target`: when `pattern` matches the path
    /// (case-insensitively, anywhere, as nginx's `rewrite` does), the path
    /// becomes `replacement` with `$n` captures filled in; otherwise it is
    /// left alone. A `?` in the result starts new query arguments, and the
    /// original ones follow them.
    RegexReplace {
        pattern: String,
        replacement: Vec<Substitution>,
    },
}

/// A piece of a [`PathModifier::RegexReplace`] replacement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Substitution {
    Literal(String),
    /// The text of capture group `n` (empty when the group did not take part).
    Capture(u8),
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UrlRewrite {
    #[serde(default)]
    pub hostname: Option<String>,
    #[serde(default)]
    pub path: Option<PathModifier>,
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

/// Largest message a gRPC client may send unless a rule says otherwise:
/// gRPC's own default receive limit.
pub const DEFAULT_GRPC_MAX_MESSAGE: u64 = 4 * 1024 * 1024;

/// How a rule treats gRPC calls (`application/grpc*` requests) and, when it
/// bridges them, gRPC-Web ones.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GrpcOptions {
    /// Largest message (in bytes, after base64 decoding) a client may send;
    /// a larger one ends the call with RESOURCE_EXHAUSTED.
    #[serde(default = "default_grpc_max_message")]
    pub max_message: u64,
    /// Bridge gRPC-Web requests to gRPC. `None`: gRPC-Web requests are
    /// forwarded as they are (the backend may speak gRPC-Web itself).
    #[serde(default)]
    pub web: Option<GrpcWeb>,
}

fn default_grpc_max_message() -> u64 {
    DEFAULT_GRPC_MAX_MESSAGE
}

impl Default for GrpcOptions {
    fn default() -> Self {
        Self {
            max_message: DEFAULT_GRPC_MAX_MESSAGE,
            web: None,
        }
    }
}

/// The gRPC-Web bridge of a rule. Its browser access (CORS) is a
/// [`Filter::Cors`] on the rule's chain, set up from [`Cors::grpc_web`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpcWeb {}

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

/// Per-rule timeouts. Defaults follow ingress-nginx (`proxy-connect-timeout`
/// 5 s, `proxy-read-timeout` and `proxy-send-timeout` 60 s).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeouts {
    /// TCP connect to an upstream endpoint. Expiry: 504.
    #[serde(with = "serde_http::millis")]
    pub connect: Duration,
    /// Wait for the upstream's response headers, and the longest gap between
    /// two pieces of the upstream's response body.
    #[serde(with = "serde_http::millis")]
    pub read: Duration,
    /// The longest gap between two pieces of the client's request body.
    #[serde(with = "serde_http::millis")]
    pub send: Duration,
    /// The whole exchange, from the request's head to the end of the
    /// response body (Gateway API `timeouts.request`): 504 if it passes
    /// before the response head, a cut-off body after. `None`: only the
    /// other timeouts apply.
    #[serde(default, with = "serde_http::opt_millis")]
    pub request: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(60),
            send: Duration::from_secs(60),
            request: None,
        }
    }
}

// === impl Hostname ===

impl Hostname {
    /// Parses `example.com` or `*.example.com`, lower-casing it. Returns
    /// `None` for anything that is not a plausible DNS name.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim_end_matches('.');
        let (wild, name) = if let Some(rest) = s.strip_prefix("**.") {
            (Some(true), rest)
        } else if let Some(rest) = s.strip_prefix("*.") {
            (Some(false), rest)
        } else {
            (None, s)
        };
        if name.is_empty() || name.len() > 253 {
            return None;
        }
        let valid = name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        });
        if !valid {
            return None;
        }
        let name = name.to_ascii_lowercase();
        Some(match wild {
            None => Hostname::Exact(name),
            Some(false) => Hostname::Wildcard(name),
            Some(true) => Hostname::WildcardAnyDepth(name),
        })
    }
}

impl std::fmt::Display for Hostname {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hostname::Exact(n) => f.write_str(n),
            Hostname::Wildcard(n) => write!(f, "*.{n}"),
            Hostname::WildcardAnyDepth(n) => write!(f, "**.{n}"),
        }
    }
}

impl Serialize for Hostname {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hostname {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Hostname::parse(&s)
            .ok_or_else(|| serde::de::Error::custom(format!("invalid hostname {s:?}")))
    }
}

/// serde adapters for `http` types and durations, so the model stays typed.
mod serde_http {
    pub mod header_name {
        use http::HeaderName;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(v.as_str())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
            let s = String::deserialize(d)?;
            HeaderName::from_bytes(s.as_bytes()).map_err(serde::de::Error::custom)
        }
    }

    pub mod header_names {
        pub use super::tokens::{deserialize, serialize};
    }

    /// A list of typed tokens written as strings: methods, header names.
    pub mod tokens {
        use serde::ser::SerializeSeq;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer, T: AsRef<str>>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for t in v {
                seq.serialize_element(t.as_ref())?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
        where
            D: Deserializer<'de>,
            T: for<'a> TryFrom<&'a str>,
            for<'a> <T as TryFrom<&'a str>>::Error: std::fmt::Display,
        {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|s| T::try_from(s.as_str()).map_err(serde::de::Error::custom))
                .collect()
        }
    }

    pub mod header_pairs {
        use http::{HeaderName, HeaderValue};
        use serde::ser::SerializeSeq;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            v: &[(HeaderName, HeaderValue)],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for (n, val) in v {
                // Values are validated on the way in; show non-UTF-8 lossily.
                let val = String::from_utf8_lossy(val.as_bytes());
                seq.serialize_element(&(n.as_str(), val))?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<(HeaderName, HeaderValue)>, D::Error> {
            Vec::<(String, String)>::deserialize(d)?
                .into_iter()
                .map(|(n, v)| {
                    let n =
                        HeaderName::from_bytes(n.as_bytes()).map_err(serde::de::Error::custom)?;
                    let v = HeaderValue::from_str(&v).map_err(serde::de::Error::custom)?;
                    Ok((n, v))
                })
                .collect()
        }
    }

    pub mod opt_method {
        use http::Method;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &Option<Method>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(m) => s.serialize_some(m.as_str()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Method>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|m| Method::from_bytes(m.as_bytes()).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    pub mod millis {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u64(u64::try_from(v.as_millis()).unwrap_or(u64::MAX))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            Ok(Duration::from_millis(u64::deserialize(d)?))
        }
    }

    pub mod opt_millis {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(&u64::try_from(v.as_millis()).unwrap_or(u64::MAX)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_parse() {
        assert_eq!(
            Hostname::parse("Foo.Example.COM"),
            Some(Hostname::Exact("foo.example.com".into()))
        );
        assert_eq!(
            Hostname::parse("*.example.com"),
            Some(Hostname::Wildcard("example.com".into()))
        );
        assert_eq!(
            Hostname::parse("**.example.com"),
            Some(Hostname::WildcardAnyDepth("example.com".into()))
        );
        for bad in ["", "*.", "a..b", "-a.com", "a b.com", "*.*.com", "a.com/x"] {
            assert_eq!(Hostname::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hash_keys_parse_into_variables_only() {
        assert_eq!(
            HashKey::parse("$request_uri").unwrap(),
            HashKey(vec![HashVar::RequestUri])
        );
        assert_eq!(
            HashKey::parse(" $host$uri ").unwrap(),
            HashKey(vec![HashVar::Host, HashVar::Uri])
        );
        assert_eq!(
            HashKey::parse("$http_x_user_id$cookie_session$arg_page$remote_addr").unwrap(),
            HashKey(vec![
                HashVar::Header(HeaderName::from_static("x-user-id")),
                HashVar::Cookie("session".into()),
                HashVar::Arg("page".into()),
                HashVar::RemoteAddr,
            ])
        );
        for bad in [
            "",
            "request_uri",
            "$",
            "$request_uri-x",
            "$host/$uri",
            "$binary_remote_addr",
            "$http_",
            "$cookie_",
            "${host}",
            "$args",
        ] {
            assert!(HashKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn framing_connection_and_host_headers_are_not_user_settable() {
        for name in [
            "Content-Length",
            "transfer-encoding",
            "TRAILER",
            "connection",
            "Keep-Alive",
            "proxy-connection",
            "te",
            "upgrade",
            "Host",
            // The proxy's client-certificate verdict, which backends trust.
            "SSL-Client-Verify",
            "ssl-client-subject-dn",
            "ssl-client-issuer-dn",
            "ssl-client-cert",
        ] {
            let parsed = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(user_settable(&parsed).is_err(), "{name}");
        }
        for name in [
            "x-a",
            "set-cookie",
            "content-type",
            "x-forwarded-prefix",
            "tee",
        ] {
            assert_eq!(
                user_settable(&HeaderName::from_static(name)),
                Ok(()),
                "{name}"
            );
        }
        // Pseudo-headers are not header names at all.
        assert!(HeaderName::from_bytes(b":path").is_err());
    }

    #[test]
    fn retain_user_settable_drops_and_names_each_refused_entry() {
        let v = HeaderValue::from_static("1");
        let mut m = HeaderModifier {
            set: vec![
                (HeaderName::from_static("content-length"), v.clone()),
                (HeaderName::from_static("x-a"), v.clone()),
            ],
            add: vec![(HeaderName::from_static("transfer-encoding"), v.clone())],
            remove: vec![
                HeaderName::from_static("host"),
                HeaderName::from_static("x-b"),
            ],
        };
        let refused: Vec<_> = m
            .retain_user_settable()
            .into_iter()
            .map(|(list, name, _)| (list, name.as_str().to_owned()))
            .collect();
        assert_eq!(
            refused,
            [
                ("set", "content-length".to_owned()),
                ("add", "transfer-encoding".to_owned()),
                ("remove", "host".to_owned()),
            ]
        );
        assert_eq!(m.set, [(HeaderName::from_static("x-a"), v)]);
        assert!(m.add.is_empty());
        assert_eq!(m.remove, [HeaderName::from_static("x-b")]);
    }

    #[test]
    fn redirect_and_rewrite_fields_are_checked_as_the_proxy_sends_them() {
        let redirect = |hostname: Option<&str>, path: Option<PathModifier>| Redirect {
            scheme: None,
            hostname: hostname.map(str::to_owned),
            port: None,
            path,
            status: RedirectStatus::Found,
        };
        let full = |p: &str| Some(PathModifier::ReplaceFullPath(p.into()));
        assert_eq!(
            redirect(Some("a.example"), full("/caf\u{e9}?x=1")).check(),
            Ok(())
        );
        for bad in ["/a\r\nSet-Cookie: x", "/a\0", "/a\u{7f}"] {
            let e = redirect(None, full(bad)).check().unwrap_err();
            assert_eq!(e.field, "path", "{bad:?}");
        }
        let prefix = Some(PathModifier::ReplacePrefixMatch("/a\nb".into()));
        assert_eq!(redirect(None, prefix).check().unwrap_err().field, "path");
        for bad in ["a.example\r\nx: y", "a b", "a/b", ""] {
            let e = redirect(Some(bad), None).check().unwrap_err();
            assert_eq!(e.field, "hostname", "{bad:?}");
        }

        let rewrite = |hostname: Option<&str>, path: Option<PathModifier>| UrlRewrite {
            hostname: hostname.map(str::to_owned),
            path,
        };
        assert_eq!(
            rewrite(Some("in.example:8080"), full("/x?y=1")).check(),
            Ok(())
        );
        for bad in ["/a b", "/a\r\n", "/a#b"] {
            assert_eq!(rewrite(None, full(bad)).check().unwrap_err().field, "path");
        }
        let template = PathModifier::RegexReplace {
            pattern: "/(.*)".into(),
            replacement: vec![
                Substitution::Literal("/v1/".into()),
                Substitution::Capture(1),
                Substitution::Literal("\n".into()),
            ],
        };
        assert_eq!(
            rewrite(None, Some(template)).check().unwrap_err().field,
            "path"
        );
        assert_eq!(
            rewrite(Some("in\r\nx"), None).check().unwrap_err().field,
            "hostname"
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        let cfg = RouteConfig {
            routes: vec![Route {
                id: "ingress/default/web".into(),
                source: SourceRef::default(),
                hostnames: vec![Hostname::Wildcard("example.com".into())],
                https: HttpsPolicy {
                    redirect: Some(HttpsRedirect {
                        port: Some(8443),
                        preserve_trailing_slash: true,
                    }),
                    hsts: Some(Hsts::DEFAULT),
                    client_auth: Some(RouteClientAuth {
                        policy: "default/ca On 1".into(),
                        pass_certificate: true,
                    }),
                },
                rules: vec![Rule {
                    matches: vec![RouteMatch {
                        path: PathMatch::Exact("/a".into()),
                        headers: vec![HeaderMatch {
                            name: HeaderName::from_static("x-env"),
                            value: ValueMatch::Exact("canary".into()),
                        }],
                        query: vec![],
                        method: Some(Method::POST),
                    }],
                    filters: Filters {
                        request_headers: HeaderModifier {
                            set: vec![(
                                HeaderName::from_static("x-a"),
                                HeaderValue::from_static("1"),
                            )],
                            add: vec![],
                            remove: vec![HeaderName::from_static("x-b")],
                        },
                        response_headers: HeaderModifier::default(),
                    },
                    action: Action::Forward(Forward::to(vec![Backend {
                        name: "default/web:80".into(),
                        weight: 1,
                        protocol: Protocol::H2c,
                        endpoints: vec!["127.0.0.1:8080".parse().unwrap()],
                        policy: EndpointPolicy::default(),
                    }])),
                    timeouts: Timeouts::default(),
                    chain: Vec::new(),
                    max_request_body: Some(10),
                    grpc: Default::default(),
                }],
            }],
            ..Default::default()
        };
        let json = serde_json::to_string(&cfg).unwrap();
        let back: RouteConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(cfg, back);
    }
}
