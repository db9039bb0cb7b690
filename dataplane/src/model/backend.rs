//! Forwarding: backends, endpoints, balancing, affinity, canaries, retries
//! and health policy.

#[allow(unused_imports)]
use super::*;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forward {
    /// Weighted split; a backend with weight 0 receives nothing. Empty, or
    /// all weights 0, or no endpoints anywhere: 503.
    pub backends: Vec<Backend>,
    #[serde(default)]
    pub rewrite: Option<UrlRewrite>,
    /// An alternative backend set chosen per request (ingress-nginx canary).
    /// Boxed: few rules have one, and every rule is kept.
    #[serde(default)]
    pub canary: Option<Box<Canary>>,
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
    /// How endpoints are kept healthy and chosen. Shared: most backends
    /// have the default policy, and every rule naming a Service gets the
    /// same one; change it with [`Backend::policy_mut`].
    #[serde(default = "EndpointPolicy::shared_default")]
    pub policy: Arc<EndpointPolicy>,
    /// Filters of this backend alone, run when a request is sent to it
    /// (Gateway API `backendRefs[].filters`): request header edits as the
    /// request leaves for it, response header edits on its answer. Only
    /// [`Filter::RequestHeaders`] and [`Filter::ResponseHeaders`]; the table
    /// build refuses a rule holding any other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub filters: Vec<Filter>,
    /// The reference could not be resolved (Gateway API: a missing
    /// Service, a kind Portico does not serve, a cross-namespace reference
    /// no ReferenceGrant allows). Requests the split sends here are
    /// answered 500, as the Gateway API asks, and the others keep their
    /// share. The reason is for operators (`/debug/routes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid: Option<String>,
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
            policy: EndpointPolicy::shared_default(),
            filters: Vec::new(),
            invalid: None,
        }
    }

    /// The policy to change, copied first if it is shared.
    pub fn policy_mut(&mut self) -> &mut EndpointPolicy {
        Arc::make_mut(&mut self.policy)
    }

    /// Sets how endpoints are chosen, leaving a shared policy shared when
    /// it already chooses so.
    pub fn set_balance(&mut self, balance: Balance) {
        if self.policy.balance != balance {
            self.policy_mut().balance = balance;
        }
    }

    /// A backend whose reference could not be resolved: its share of
    /// requests is answered 500 (see [`Backend::invalid`]).
    pub fn invalid(name: impl Into<String>, weight: u32, reason: impl Into<String>) -> Self {
        Self {
            weight,
            invalid: Some(reason.into()),
            ..Self::new(name, Vec::new())
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

impl EndpointPolicy {
    /// The default policy, one allocation for the process.
    pub fn shared_default() -> Arc<EndpointPolicy> {
        static DEFAULT: std::sync::LazyLock<Arc<EndpointPolicy>> =
            std::sync::LazyLock::new(|| Arc::new(EndpointPolicy::default()));
        Arc::clone(&DEFAULT)
    }

    /// `self` shared: the process's default when it is the default.
    pub fn shared(self) -> Arc<EndpointPolicy> {
        if self == EndpointPolicy::default() {
            Self::shared_default()
        } else {
            Arc::new(self)
        }
    }
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
