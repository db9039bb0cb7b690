//! The `HTTPRoute` custom resource (`portico.dev/v1alpha1`).
//!
//! It follows Gateway API's `HTTPRoute` v1 (standard channel) field for field
//! where it can, so people who know that API feel at home, with two
//! differences: there are no `parentRefs` (Portico serves every HTTPRoute in
//! its watch scope), and a backend is always a Service in the route's own
//! namespace.
//!
//! Optional fields are `None` when absent. The schema carries Gateway API's
//! defaults, so objects read from the API server arrive with them filled in;
//! objects read from a manifest directory do not, so consumers apply the same
//! defaults through the `*_or_default` helpers below.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// === Validation patterns ===
//
// Public so that the controller can apply the same checks to manifests that
// never pass through an API server.

/// A hostname as Gateway API's `Hostname`: RFC 1123 labels, lower case, with an
/// optional leading `*.` wildcard label. IP addresses are not hostnames.
pub const HOSTNAME_PATTERN: &str =
    r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// A hostname without wildcard (Gateway API's `PreciseHostname`); also the
/// shape of a DNS-1123 subdomain, which Secret names and rule names follow.
pub const PRECISE_HOSTNAME_PATTERN: &str =
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// An HTTP header (or query parameter) name: an RFC 7230 token. `\x60` is a
/// backquote; the pattern is RE2 syntax as the API server evaluates it.
pub const HEADER_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$";

/// A Gateway API Duration (GEP-2257): one to four `<number><unit>` parts,
/// units `h`, `m`, `s`, `ms`, e.g. `1h30m`, `500ms`, `0s`.
pub const DURATION_PATTERN: &str = r"^([0-9]{1,5}(h|m|s|ms)){1,4}$";

/// A Service name: a DNS-1035 label.
pub const SERVICE_NAME_PATTERN: &str = r"^[a-z]([-a-z0-9]*[a-z0-9])?$";

// === Defaults ===

/// The path of a match that does not say (Gateway API default).
pub const DEFAULT_PATH: &str = "/";
/// The weight of a backendRef that does not say (Gateway API default).
pub const DEFAULT_WEIGHT: i32 = 1;
/// The status code of a redirect that does not say (Gateway API default).
pub const DEFAULT_REDIRECT_STATUS_CODE: i32 = 302;

// === Conditions ===

/// Condition type: whether Portico serves the route. `True` (reason
/// `Accepted`) while at least one rule is served; `False` with the reason of
/// the problem when nothing can be.
pub const CONDITION_ACCEPTED: &str = "Accepted";
/// Condition type: whether every Service and Secret the route refers to
/// exists and fits (the Service has the port, the Secret holds a usable
/// certificate).
pub const CONDITION_RESOLVED_REFS: &str = "ResolvedRefs";
/// Condition type (Gateway API's): present and `True` when some rules were
/// skipped while others are served, with the reason of the first skipped rule
/// and a message naming the skipped rules.
pub const CONDITION_PARTIALLY_INVALID: &str = "PartiallyInvalid";

/// `Accepted=True`: the route is served.
pub const REASON_ACCEPTED: &str = "Accepted";
/// `ResolvedRefs=True`: every reference resolved.
pub const REASON_RESOLVED_REFS: &str = "ResolvedRefs";
/// `ResolvedRefs=False`: a backendRef names a Service that does not exist in
/// the route's namespace, or a port the Service does not have.
pub const REASON_BACKEND_NOT_FOUND: &str = "BackendNotFound";
/// `ResolvedRefs=False`: `policies.tls.secretName` names a Secret that does
/// not exist or holds no usable certificate and key (Gateway API's reason for
/// the same problem on a Listener).
pub const REASON_INVALID_CERTIFICATE_REF: &str = "InvalidCertificateRef";

// The reasons below go with `Accepted=False` (nothing served) or
// `PartiallyInvalid=True` (the rule holding the problem is skipped).

/// A `RegularExpression` path, header or query match does not compile or
/// exceeds the size limit.
pub const REASON_INVALID_REGEX: &str = "InvalidRegex";
/// A filter is unusable in a way the schema cannot check (a header value that
/// is not a valid HTTP header value), or breaks a rule the schema states but
/// a manifest never met (manifests do not pass through an API server).
pub const REASON_INVALID_FILTER: &str = "InvalidFilter";
/// A hostname is not valid (reachable only for manifests).
pub const REASON_INVALID_HOSTNAME: &str = "InvalidHostname";
/// A timeout is not a valid Gateway API Duration, or `backendRequest` is
/// longer than `request` (reachable only for manifests).
pub const REASON_INVALID_TIMEOUT: &str = "InvalidTimeout";
/// A value the schema allows but this version of Portico does not implement
/// (Gateway API's reason for the same).
pub const REASON_UNSUPPORTED_VALUE: &str = "UnsupportedValue";
/// Another route already claims what this one asks for and wins on
/// precedence (the older object, then the alphabetically first
/// `namespace/name`), e.g. a different TLS Secret for the same hostname.
pub const REASON_CONFLICTED: &str = "Conflicted";

// === HTTPRoute ===

/// The desired state of an HTTPRoute: which hostnames it serves, and rules
/// that match requests and say where they go.
// The printer columns repeat `type_ = "string"`, which clippy mistakes for a
// duplicated attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
// Group and version repeat `crate::GROUP` and `crate::VERSION` (attributes take
// literals); the schema tests check that they agree.
#[kube(
    group = "portico.dev",
    version = "v1alpha1",
    kind = "HTTPRoute",
    plural = "httproutes",
    singular = "httproute",
    shortname = "phr",
    category = "portico",
    namespaced,
    status = "HTTPRouteStatus",
    derive = "PartialEq",
    doc = "HTTPRoute routes HTTP requests for a set of hostnames to Services in its namespace. It follows Gateway API's HTTPRoute v1 without parentRefs: Portico serves every HTTPRoute it watches.",
    printcolumn(name = "Hostnames", type_ = "string", json_path = ".spec.hostnames"),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(
    "!has(self.policies) || !has(self.policies.tls) || (has(self.hostnames) && size(self.hostnames) > 0)"
).message("policies.tls needs at least one entry in hostnames to serve with the certificate"))]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteSpec {
    /// Hostnames matched against the request's Host header (port ignored).
    /// A name may start with a `*.` wildcard label: `*.example.com` matches
    /// `www.example.com`, not `example.com`. No hostnames: the route serves
    /// requests whose host no other route or Ingress claims.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 253), pattern(HOSTNAME_PATTERN)),
        extend("x-kubernetes-list-type" = "atomic")
    )]
    pub hostnames: Vec<String>,

    /// Rules: matches, filters and backends. Among all routes for a host the
    /// most specific match wins (Exact path, then longest PathPrefix, then
    /// method, then most header matches, then most query matches), then the
    /// oldest route, then the first rule.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(
        validation = Rule::new(
            "self.all(l1, !has(l1.name) || self.exists_one(l2, has(l2.name) && l1.name == l2.name))"
        ).message("Rule name must be unique within the route"),
        validation = Rule::new(TOTAL_MATCHES_RULE).message(
            "While 16 rules and 64 matches per rule are allowed, the total number of matches across all rules in a route must be at most 128"
        )
    )]
    pub rules: Vec<HTTPRouteRule>,

    /// Portico extensions that apply to the whole route.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<HTTPRoutePolicies>,
}

/// Gateway API's limit on the matches of a whole route, spelled out per rule
/// because CEL cannot sum over a list.
const TOTAL_MATCHES_RULE: &str = concat!(
    "(self.size() > 0 ? self[0].matches.size() : 0) + ",
    "(self.size() > 1 ? self[1].matches.size() : 0) + ",
    "(self.size() > 2 ? self[2].matches.size() : 0) + ",
    "(self.size() > 3 ? self[3].matches.size() : 0) + ",
    "(self.size() > 4 ? self[4].matches.size() : 0) + ",
    "(self.size() > 5 ? self[5].matches.size() : 0) + ",
    "(self.size() > 6 ? self[6].matches.size() : 0) + ",
    "(self.size() > 7 ? self[7].matches.size() : 0) + ",
    "(self.size() > 8 ? self[8].matches.size() : 0) + ",
    "(self.size() > 9 ? self[9].matches.size() : 0) + ",
    "(self.size() > 10 ? self[10].matches.size() : 0) + ",
    "(self.size() > 11 ? self[11].matches.size() : 0) + ",
    "(self.size() > 12 ? self[12].matches.size() : 0) + ",
    "(self.size() > 13 ? self[13].matches.size() : 0) + ",
    "(self.size() > 14 ? self[14].matches.size() : 0) + ",
    "(self.size() > 15 ? self[15].matches.size() : 0) <= 128"
);

/// Portico extensions that apply to the whole route (Gateway API would put
/// these on the Gateway or in policy objects).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRoutePolicies {
    /// Serve the route's hostnames over TLS with this certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RouteTls>,

    /// Bridge gRPC-Web to gRPC on every rule of the route. Its backends
    /// are then spoken to over HTTP/2 (gRPC), whatever their appProtocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grpc_web: Option<GrpcWebPolicy>,

    /// Largest message, in bytes, a gRPC or gRPC-Web client may send on
    /// this route (after base64 decoding); a larger one ends the call with
    /// RESOURCE_EXHAUSTED. Absent: 4 MiB, gRPC's own default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub grpc_max_message_bytes: Option<i64>,
    /// How Portico keeps the route's backends' endpoints healthy, for
    /// every backendRef of the route. A block set here replaces, for this
    /// route, what the Services' `portico.dev/*` annotations say about the
    /// same thing; its unset fields take Portico's defaults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backends: Option<BackendPolicy>,
    /// External authentication (oauth2-proxy and the like) for every rule
    /// of the route: each request is first asked of an HTTP service. The
    /// same policy as ingress-nginx's `auth-url` annotations; see
    /// docs/external-auth.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_auth: Option<ExternalAuthPolicy>,
    /// Local request limits on every rule of the route, counted on each
    /// replica (ingress-nginx's `limit-rps`, `limit-rpm`,
    /// `limit-connections`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitPolicy>,
    /// JWT validation for every rule of the route: requests must carry a
    /// token one of the providers signed. Checked before `externalAuth`.
    /// See docs/jwt.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtPolicy>,
    /// A request limit counted by every replica together, in Redis
    /// (`--redis-url`): ingress-nginx's `global-rate-limit`. Checked after
    /// `rateLimit`. See docs/rate-limits.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub global_rate_limit: Option<GlobalRateLimitPolicy>,
}

/// Bearer tokens checked against issuers' keys.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct JwtPolicy {
    /// The issuers whose tokens are accepted; a token's `iss` picks one.
    #[schemars(length(min = 1, max = 8), extend("x-kubernetes-list-type" = "atomic"))]
    pub providers: Vec<JwtProviderPolicy>,
    /// `false`: a request without a token passes (claim headers removed);
    /// one with a token must still carry a valid one. Absent: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required: Option<bool>,
}

/// One issuer: its identifier, where its keys are, what its tokens must
/// say and what is passed on.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("has(self.jwksUri) != has(self.jwksSecretRef)")
        .message("set exactly one of jwksUri and jwksSecretRef"),
    validation = Rule::new("!has(self.fromHeader) || !has(self.fromCookie)")
        .message("set at most one of fromHeader and fromCookie")
)]
#[serde(rename_all = "camelCase")]
pub struct JwtProviderPolicy {
    /// Compared exactly with the token's `iss`.
    #[schemars(length(min = 1, max = 1024))]
    pub issuer: String,
    /// The token's `aud` must hold one of these. Empty: not checked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 1024)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub audiences: Vec<String>,
    /// The issuer's JWKS URL, fetched and refreshed off the request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 2048),
        pattern(r"^[hH][tT][tT][pP][sS]?://[^\s]+$")
    )]
    pub jwks_uri: Option<String>,
    /// An Opaque Secret in the route's namespace whose key `jwks` holds
    /// the issuer's JWKS document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_secret_ref: Option<JwksSecretRef>,
    /// Read the token from this header (its value, `Bearer ` optional).
    /// Absent: `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN))]
    pub from_header: Option<String>,
    /// Read the token from this cookie. Absent: `Authorization: Bearer`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]{1,256}$"))]
    pub from_cookie: Option<String>,
    /// String, number and bool claims set on the upstream request under
    /// these headers; the client's copies are always removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "atomic"))]
    pub claim_to_headers: Vec<ClaimToHeader>,
    /// Claims that must be present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 256)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub required_claims: Vec<String>,
    /// Leeway on `exp` and `nbf`. Absent: 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 300))]
    pub clock_skew_seconds: Option<i64>,
}

/// A Secret in the route's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JwksSecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// A claim copied onto the upstream request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ClaimToHeader {
    #[schemars(length(min = 1, max = 256))]
    pub claim: String,
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN))]
    pub header: String,
}

/// An http(s) URL, nginx variables allowed after the host (checked in full
/// by translation).
pub const AUTH_URL_PATTERN: &str = r"^[hH][tT][tT][pP][sS]?://[^\s]+$";

/// A request to an authentication service before each request.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAuthPolicy {
    /// The service's http(s) URL. May hold `$host`, `$scheme`,
    /// `$request_uri`, `$escaped_request_uri`, `$best_http_host`,
    /// `$http_<name>`, `$arg_<name>`, `$cookie_<name>` after its host,
    /// never in it.
    #[schemars(length(min = 1, max = 2048), pattern(AUTH_URL_PATTERN))]
    pub url: String,

    /// The subrequest's method. Absent: GET.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Z]{1,32}$"))]
    pub method: Option<String>,

    /// Where a 401 from the service sends the client (302), with the
    /// original URL in `signinRedirectParam`. Absent: the 401 reaches the
    /// client with the service's `WWW-Authenticate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 2048), pattern(AUTH_URL_PATTERN))]
    pub signin: Option<String>,

    /// Absent: `rd`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^[A-Za-z0-9._-]{1,64}$"))]
    pub signin_redirect_param: Option<String>,

    /// Headers of the service's 2xx answer copied onto the upstream
    /// request; the client's copies of these names are always removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub response_headers: Vec<String>,

    /// `X-Auth-Request-Redirect` on the subrequest. Absent: the original
    /// request URI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096), pattern(r"^[!-~]+$"))]
    pub request_redirect: Option<String>,

    /// Headers set on the subrequest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "atomic"))]
    pub proxy_set_headers: Vec<HTTPHeader>,

    /// Allowing answers remembered per rendered key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<ExternalAuthCachePolicy>,

    /// The service's `Set-Cookie` also reaches the client when it allows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub always_set_cookie: Option<bool>,

    /// Bounds the whole exchange, as a Gateway API duration. Absent: 5s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub timeout: Option<String>,
}

/// Which allowing answers are remembered (2xx only), and for how long.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalAuthCachePolicy {
    /// A template of the same variables as `url`, e.g.
    /// `$cookie__oauth2_proxy`.
    #[schemars(length(min = 1, max = 1024))]
    pub key: String,
    /// A Gateway API duration.
    #[schemars(pattern(DURATION_PATTERN))]
    pub duration: String,
}

/// Requests per key over time (a leaky bucket as nginx's `limit_req`
/// with `nodelay`), and requests in flight at once per key. Refused
/// requests get `--limit-req-status-code` or `--limit-conn-status-code`
/// (503 by default) with `Retry-After`.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("has(self.requestsPerSecond) || has(self.requestsPerMinute) || has(self.concurrentRequests)")
        .message("set requestsPerSecond, requestsPerMinute or concurrentRequests")
)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitPolicy {
    /// Requests per second per key; `burstMultiplier` times as many more
    /// pass at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub requests_per_second: Option<i64>,
    /// Requests per minute per key; with both set, a request must pass
    /// both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60_000_000))]
    pub requests_per_minute: Option<i64>,
    /// The burst, as a multiple of each rate. Absent: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub burst_multiplier: Option<i64>,
    /// Requests in flight at once per key (until the response ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub concurrent_requests: Option<i64>,
    /// What is counted. Absent: the client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    /// Client addresses or CIDR ranges no limit applies to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 1000),
        inner(length(min = 1, max = 64)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub exempt: Vec<String>,
    /// Send the IETF `RateLimit-Policy` and `RateLimit` headers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<bool>,
}

/// At most `requests` per `window` per key, across every replica (a
/// sliding window counted in Redis). Refused requests get
/// `--global-rate-limit-status-code` (429 by default) with `Retry-After`;
/// when Redis cannot answer they pass, or get 503 with
/// `--global-rate-limit-fail-closed`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GlobalRateLimitPolicy {
    /// Requests per window per key.
    #[schemars(range(min = 1, max = 1_000_000_000))]
    pub requests: i64,
    /// The window, a Gateway API Duration in whole seconds, 1s to 24h
    /// (`10s`, `1m`, `1h`).
    #[schemars(pattern(DURATION_PATTERN))]
    pub window: String,
    /// What is counted. Absent: the client address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<RateLimitKey>,
    /// Client addresses or CIDR ranges never counted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 1000),
        inner(length(min = 1, max = 64)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub exempt: Vec<String>,
}

/// What a limit counts by.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("self.type == 'Header' ? has(self.header) : !has(self.header)")
        .message("header is set exactly when type is Header")
)]
#[serde(rename_all = "camelCase")]
pub struct RateLimitKey {
    #[serde(rename = "type")]
    pub key_type: RateLimitKeyType,
    /// For `Header`: the request header whose value is the key; requests
    /// without it are not limited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN))]
    pub header: Option<String>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum RateLimitKeyType {
    /// The client address (the peer, the PROXY protocol source, or with
    /// `--trusted-proxies` the `X-Forwarded-For` entry).
    #[default]
    ClientAddress,
    /// A request header's value.
    Header,
    /// Every request of the route as one key.
    Route,
}

/// A browser origin (`https://app.example.com`, `http://localhost:8080`)
/// or `*`.
pub const ORIGIN_PATTERN: &str =
    r"^(\*|https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?)$";

/// The gRPC-Web bridge and the CORS answers browsers need to call it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GrpcWebPolicy {
    /// Origins allowed to call from a browser, or `*` for any. Empty: no
    /// CORS headers and preflights refused (same-origin pages only).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 300), pattern(ORIGIN_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub allow_origins: Vec<String>,

    /// Request headers allowed besides `x-grpc-web`, `x-user-agent`,
    /// `grpc-timeout`, `content-type` and `authorization`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub allow_headers: Vec<String>,

    /// Response headers pages may read besides `grpc-status`,
    /// `grpc-message` and `grpc-status-details-bin`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 32),
        inner(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub expose_headers: Vec<String>,

    /// Let pages send cookies and HTTP authentication. With `*` the
    /// caller's origin is echoed, as browsers require.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,

    /// How long browsers may cache a preflight answer, as a Gateway API
    /// duration. Absent: 24h.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub max_age: Option<String>,
}

/// Endpoint health and selection for a route's backends.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendPolicy {
    /// Active health checks: one checker per endpoint, however many routes
    /// use it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheckPolicy>,

    /// Passive outlier detection: endpoints that keep failing requests are
    /// ejected for a while.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outlier_detection: Option<OutlierDetectionPolicy>,

    /// Panic mode: when fewer than this share (percent) of a backend's
    /// endpoints are eligible, requests go to every ready endpoint. 0 turns
    /// it off. Absent: 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub panic_threshold: Option<i32>,

    /// An endpoint that becomes eligible (new, recovered, back from an
    /// ejection) ramps from a tenth of its share to all of it over this
    /// window. Absent or `0s`: off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub slow_start: Option<String>,

    /// How each request's endpoint is chosen. Absent: round robin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load_balancing: Option<LoadBalancingPolicy>,
}

/// A load-balancing policy.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("self.policy != 'ConsistentHash' || has(self.hashBy)")
        .message("ConsistentHash needs hashBy"),
    validation = Rule::new("self.policy == 'Cookie' || !has(self.cookie)")
        .message("cookie is only for the Cookie policy")
)]
#[serde(rename_all = "camelCase")]
pub struct LoadBalancingPolicy {
    pub policy: LoadBalancingAlgorithm,

    /// For ConsistentHash: ingress-nginx `upstream-hash-by` variables,
    /// concatenated: `$remote_addr`, `$request_uri`, `$uri`, `$host`,
    /// `$http_<name>`, `$cookie_<name>`, `$arg_<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 256))]
    pub hash_by: Option<String>,

    /// For Cookie: the sticky-session cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie: Option<SessionCookie>,
}

/// How the endpoint is chosen.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(description = "")]
pub enum LoadBalancingAlgorithm {
    /// Smooth weighted round robin.
    #[default]
    RoundRobin,
    /// The less loaded of two random endpoints.
    LeastRequest,
    /// The lower of two random endpoints' latency average times load.
    #[serde(rename = "EWMA")]
    Ewma,
    /// A consistent hash of `hashBy`, with bounded load.
    ConsistentHash,
    /// Sticky sessions by cookie.
    Cookie,
}

/// The sticky-session cookie (ingress-nginx `session-cookie-*`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionCookie {
    /// Absent: INGRESSCOOKIE.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64), pattern(COOKIE_NAME_PATTERN))]
    pub name: Option<String>,

    /// Balanced (a hashed key: scaling moves a share of sessions) or
    /// Persistent (names its endpoint). Absent: Balanced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<AffinityModeSpec>,

    /// `Max-Age`, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 315_360_000))]
    pub max_age: Option<i64>,

    /// `Path`. Absent: `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), pattern(COOKIE_PATH_PATTERN))]
    pub path: Option<String>,

    /// `Domain`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(PRECISE_HOSTNAME_PATTERN))]
    pub domain: Option<String>,

    /// `SameSite`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub same_site: Option<SameSiteSpec>,

    /// Mark the cookie `Secure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secure: Option<bool>,

    /// After a failed attempt is retried elsewhere, point the session at
    /// the endpoint that answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_on_failure: Option<bool>,
}

/// A cookie's path: an absolute URL path without `;` and `,`.
pub const COOKIE_PATH_PATTERN: &str = r"^/([-A-Za-z0-9/._~!&'()*+=:@]|%[0-9A-Fa-f]{2})*$";

/// A cookie name: an RFC 6265 token.
pub const COOKIE_NAME_PATTERN: &str = r"^[A-Za-z0-9!#$%&'*+\-.^_\x60|~]+$";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(description = "")]
pub enum AffinityModeSpec {
    Balanced,
    Persistent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(description = "")]
pub enum SameSiteSpec {
    None,
    Lax,
    Strict,
}

/// An absolute URL path for health checks.
pub const HEALTH_CHECK_PATH_PATTERN: &str = r"^/([-A-Za-z0-9/._~!&'()*+,;=:@]|%[0-9A-Fa-f]{2})*$";

/// How endpoints are probed. No path and no grpcService: a TCP connect
/// (and the TLS handshake for TLS backends).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("!(has(self.path) && has(self.grpcService))")
        .message("path (HTTP checks) and grpcService (gRPC checks) exclude each other")
)]
#[serde(rename_all = "camelCase")]
pub struct HealthCheckPolicy {
    /// `GET` this path; an expected status passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024), pattern(HEALTH_CHECK_PATH_PATTERN))]
    pub path: Option<String>,

    /// Ask `grpc.health.v1.Health/Check` for this service ("" for the whole
    /// server) over HTTP/2; SERVING passes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub grpc_service: Option<String>,

    /// Probe this port of the endpoint's address instead of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// Between two probes of an endpoint. Absent: 10s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub interval: Option<String>,

    /// A probe that has not passed by then fails; at most the interval.
    /// Absent: 2s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub timeout: Option<String>,

    /// Passing probes in a row to become healthy. Absent: 2.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub healthy_threshold: Option<i32>,

    /// Failing probes in a row to become unhealthy. Absent: 3.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 100))]
    pub unhealthy_threshold: Option<i32>,

    /// HTTP statuses that pass. Absent: 200 to 399.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), extend("x-kubernetes-list-type" = "atomic"))]
    pub expected_statuses: Vec<StatusRangeSpec>,
}

/// An inclusive range of HTTP status codes.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.min <= self.max").message("min must not be above max"))]
#[serde(rename_all = "camelCase")]
pub struct StatusRangeSpec {
    #[schemars(range(min = 100, max = 599))]
    pub min: i32,
    #[schemars(range(min = 100, max = 599))]
    pub max: i32,
}

/// Consecutive failures that eject an endpoint, and for how long.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutlierDetectionPolicy {
    /// 5xx responses in a row that eject; 0 turns this off. Absent: 5.
    #[serde(
        default,
        rename = "consecutive5xx",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 1000))]
    pub consecutive_5xx: Option<i32>,

    /// Connect failures, timeouts and resets in a row that eject; 0 turns
    /// this off. Absent: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub consecutive_errors: Option<i32>,

    /// The first ejection's length; the n-th lasts n times as long.
    /// Absent: 30s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub base_ejection_time: Option<String>,

    /// The longest an ejection lasts. Absent: 5m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub max_ejection_time: Option<String>,

    /// At most this share (percent) of a backend's endpoints is ejected at
    /// once. Absent: 50.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub max_ejected_percent: Option<i32>,
}

/// TLS for the route's hostnames.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RouteTls {
    /// A `kubernetes.io/tls` Secret in the route's namespace whose
    /// certificate covers the route's hostnames.
    #[schemars(length(min = 1, max = 253), pattern(PRECISE_HOSTNAME_PATTERN))]
    pub secret_name: String,
}

/// One rule: requests that match any of `matches` get `filters` applied and
/// are sent to `backendRefs`.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new(
        "(has(self.backendRefs) && size(self.backendRefs) > 0) ? (!has(self.filters) || self.filters.all(f, !has(f.requestRedirect))) : true"
    ).message("RequestRedirect filter must not be used together with backendRefs"),
    validation = Rule::new(
        "(has(self.filters) && self.filters.exists(f, has(f.requestRedirect) && has(f.requestRedirect.path) && f.requestRedirect.path.type == 'ReplacePrefixMatch')) ? (!has(self.matches) || self.matches.all(m, !has(m.path) || !has(m.path.type) || m.path.type == 'PathPrefix')) : true"
    ).message("RequestRedirect with path type ReplacePrefixMatch needs every match of the rule to be a PathPrefix path match"),
    validation = Rule::new(
        "(has(self.filters) && self.filters.exists(f, has(f.urlRewrite) && has(f.urlRewrite.path) && f.urlRewrite.path.type == 'ReplacePrefixMatch')) ? (!has(self.matches) || self.matches.all(m, !has(m.path) || !has(m.path.type) || m.path.type == 'PathPrefix')) : true"
    ).message("URLRewrite with path type ReplacePrefixMatch needs every match of the rule to be a PathPrefix path match")
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteRule {
    /// A name for the rule, unique within the route; shows up in status
    /// messages, metrics and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(PRECISE_HOSTNAME_PATTERN))]
    pub name: Option<String>,

    /// The rule applies when any one of these matches (OR). No matches: a
    /// PathPrefix match on `/`, which matches every request.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        extend(
            "x-kubernetes-list-type" = "atomic",
            "default" = [{ "path": { "type": "PathPrefix", "value": "/" } }]
        )
    )]
    pub matches: Vec<HTTPRouteMatch>,

    /// Applied in order to requests that match. Each filter type may appear
    /// once; RequestRedirect and URLRewrite exclude each other.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "atomic"))]
    #[x_kube(
        validation = Rule::new(
            "!(self.exists(f, f.type == 'RequestRedirect') && self.exists(f, f.type == 'URLRewrite'))"
        ).message("May specify either a RequestRedirect or a URLRewrite filter, but not both"),
        validation = Rule::new("self.filter(f, f.type == 'RequestHeaderModifier').size() <= 1")
            .message("RequestHeaderModifier filter cannot be repeated"),
        validation = Rule::new("self.filter(f, f.type == 'ResponseHeaderModifier').size() <= 1")
            .message("ResponseHeaderModifier filter cannot be repeated"),
        validation = Rule::new("self.filter(f, f.type == 'RequestRedirect').size() <= 1")
            .message("RequestRedirect filter cannot be repeated"),
        validation = Rule::new("self.filter(f, f.type == 'URLRewrite').size() <= 1")
            .message("URLRewrite filter cannot be repeated"),
        validation = Rule::new("self.filter(f, f.type == 'CORS').size() <= 1")
            .message("CORS filter cannot be repeated")
    )]
    pub filters: Vec<HTTPRouteFilter>,

    /// Services in the route's namespace that receive matching requests,
    /// split by weight.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16), extend("x-kubernetes-list-type" = "atomic"))]
    pub backend_refs: Vec<HTTPBackendRef>,

    /// Timeouts for requests that match this rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<HTTPRouteTimeouts>,
}

// === Matches ===

/// Conditions that must all hold (AND) for a request to match.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteMatch {
    /// The path to match. Absent: a PathPrefix match on `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = { "type": "PathPrefix", "value": "/" }))]
    pub path: Option<HTTPPathMatch>,

    /// Request headers that must all match. Names are case-insensitive and
    /// unique within the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub headers: Vec<HTTPHeaderMatch>,

    /// Query parameters that must all match. Names are case-sensitive and
    /// unique within the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub query_params: Vec<HTTPQueryParamMatch>,

    /// The request method must be this one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<HTTPMethod>,
}

/// How to match the request path.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("(self.type in ['Exact','PathPrefix']) ? self.value.startsWith('/') : true")
        .message("Exact and PathPrefix paths must start with '/'"),
    validation = Rule::new("(self.type in ['Exact','PathPrefix']) ? !self.value.contains('//') : true")
        .message("Exact and PathPrefix paths must not contain '//'"),
    validation = Rule::new("(self.type in ['Exact','PathPrefix']) ? !self.value.contains('/./') : true")
        .message("Exact and PathPrefix paths must not contain '/./'"),
    validation = Rule::new("(self.type in ['Exact','PathPrefix']) ? !self.value.contains('/../') : true")
        .message("Exact and PathPrefix paths must not contain '/../'"),
    validation = Rule::new("(self.type in ['Exact','PathPrefix']) ? !self.value.contains('%2f') : true")
        .message("Exact and PathPrefix paths must not contain '%2f'"),
    validation = Rule::new("(self.type in ['Exact','PathPrefix']) ? !self.value.contains('%2F') : true")
        .message("Exact and PathPrefix paths must not contain '%2F'"),
    validation = Rule::new("(self.type in ['Exact','PathPrefix']) ? !self.value.contains('#') : true")
        .message("Exact and PathPrefix paths must not contain '#'"),
    validation = Rule::new("(self.type in ['Exact','PathPrefix']) ? !self.value.endsWith('/..') : true")
        .message("Exact and PathPrefix paths must not end with '/..'"),
    validation = Rule::new("(self.type in ['Exact','PathPrefix']) ? !self.value.endsWith('/.') : true")
        .message("Exact and PathPrefix paths must not end with '/.'"),
    validation = Rule::new(
        r#"(self.type in ['Exact','PathPrefix']) ? self.value.matches(r"""^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$""") : true"#
    ).message("Exact and PathPrefix paths must only contain valid URL path characters (matching ^(?:[-A-Za-z0-9/._~!$&'()*+,;=:@]|[%][0-9a-fA-F]{2})+$)")
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPPathMatch {
    /// How `value` is compared. Absent: PathPrefix.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "PathPrefix"))]
    pub match_type: Option<PathMatchType>,

    /// The path, or for RegularExpression the pattern (Rust `regex` syntax,
    /// matched against the whole path). Absent: `/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024), extend("default" = "/"))]
    pub value: Option<String>,
}

/// How a path is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
// Fields of this type describe it; the OptionalEnum transform would
// overwrite their descriptions with the type's.
#[schemars(description = "")]
pub enum PathMatchType {
    /// The whole path, case-sensitively: `/abc` matches `/abc` only, not
    /// `/abc/` or `/abcd`.
    Exact,
    /// Whole path segments: `/abc` matches `/abc`, `/abc/` and `/abc/def`,
    /// not `/abcd`. A trailing `/` in the value is ignored.
    #[default]
    PathPrefix,
    /// A regular expression that must match the whole path.
    RegularExpression,
}

/// A request header that must match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeaderMatch {
    /// How `value` is compared. Absent: Exact.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Exact"))]
    pub match_type: Option<StringMatchType>,

    /// The header name, case-insensitive.
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN))]
    pub name: String,

    /// The value to compare with, or the pattern for RegularExpression.
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

/// A query parameter that must match.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPQueryParamMatch {
    /// How `value` is compared. Absent: Exact.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    #[schemars(extend("default" = "Exact"))]
    pub match_type: Option<StringMatchType>,

    /// The parameter name, compared exactly.
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN))]
    pub name: String,

    /// The value to compare with, or the pattern for RegularExpression.
    #[schemars(length(min = 1, max = 1024))]
    pub value: String,
}

/// How a header or query parameter value is compared.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
// Fields of this type describe it; the OptionalEnum transform would
// overwrite their descriptions with the type's.
#[schemars(description = "")]
pub enum StringMatchType {
    /// The whole value, case-sensitively.
    #[default]
    Exact,
    /// A regular expression that must match the whole value.
    RegularExpression,
}

/// An HTTP method, upper case as on the wire.
#[allow(clippy::upper_case_acronyms)] // The wire names, which Gateway API uses verbatim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
// Fields of this type describe it; the OptionalEnum transform would
// overwrite their descriptions with the type's.
#[schemars(description = "")]
pub enum HTTPMethod {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    CONNECT,
    OPTIONS,
    TRACE,
    PATCH,
}

// === Filters ===

/// A processing step for matching requests. `type` names the step and the
/// one field of the same name must be set; the others must not.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("!(has(self.requestHeaderModifier) && self.type != 'RequestHeaderModifier')")
        .message("filter.requestHeaderModifier must be nil if the filter.type is not RequestHeaderModifier"),
    validation = Rule::new("!(!has(self.requestHeaderModifier) && self.type == 'RequestHeaderModifier')")
        .message("filter.requestHeaderModifier must be specified for RequestHeaderModifier filter.type"),
    validation = Rule::new("!(has(self.responseHeaderModifier) && self.type != 'ResponseHeaderModifier')")
        .message("filter.responseHeaderModifier must be nil if the filter.type is not ResponseHeaderModifier"),
    validation = Rule::new("!(!has(self.responseHeaderModifier) && self.type == 'ResponseHeaderModifier')")
        .message("filter.responseHeaderModifier must be specified for ResponseHeaderModifier filter.type"),
    validation = Rule::new("!(has(self.requestRedirect) && self.type != 'RequestRedirect')")
        .message("filter.requestRedirect must be nil if the filter.type is not RequestRedirect"),
    validation = Rule::new("!(!has(self.requestRedirect) && self.type == 'RequestRedirect')")
        .message("filter.requestRedirect must be specified for RequestRedirect filter.type"),
    validation = Rule::new("!(has(self.urlRewrite) && self.type != 'URLRewrite')")
        .message("filter.urlRewrite must be nil if the filter.type is not URLRewrite"),
    validation = Rule::new("!(!has(self.urlRewrite) && self.type == 'URLRewrite')")
        .message("filter.urlRewrite must be specified for URLRewrite filter.type"),
    validation = Rule::new("!(has(self.cors) && self.type != 'CORS')")
        .message("filter.cors must be nil if the filter.type is not CORS"),
    validation = Rule::new("!(!has(self.cors) && self.type == 'CORS')")
        .message("filter.cors must be specified for CORS filter.type"),
    validation = Rule::new("!(has(self.requestMirror) && self.type != 'RequestMirror')")
        .message("filter.requestMirror must be nil if the filter.type is not RequestMirror"),
    validation = Rule::new("!(!has(self.requestMirror) && self.type == 'RequestMirror')")
        .message("filter.requestMirror must be specified for RequestMirror filter.type")
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteFilter {
    /// Which filter this is.
    #[serde(rename = "type")]
    pub filter_type: FilterType,

    /// Set, add or remove request headers before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_header_modifier: Option<HTTPHeaderFilter>,

    /// Set, add or remove response headers before answering the client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_header_modifier: Option<HTTPHeaderFilter>,

    /// Answer with a redirect instead of forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_redirect: Option<HTTPRequestRedirectFilter>,

    /// Rewrite the Host header or path while forwarding.
    #[serde(
        default,
        rename = "urlRewrite",
        skip_serializing_if = "Option::is_none"
    )]
    pub url_rewrite: Option<HTTPURLRewriteFilter>,

    /// Answer cross-origin requests from browsers (CORS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<HTTPCORSFilter>,

    /// Copy requests to another Service, fire and forget. May be repeated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_mirror: Option<HTTPRequestMirrorFilter>,
}

/// The kind of a filter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum FilterType {
    RequestHeaderModifier,
    ResponseHeaderModifier,
    RequestRedirect,
    URLRewrite,
    #[serde(rename = "CORS")]
    Cors,
    RequestMirror,
}

/// Header changes. A header name may appear in only one of the lists, once.
/// The framing and connection headers (`Content-Length`,
/// `Transfer-Encoding`, `Trailer`, `Connection`, `Keep-Alive`,
/// `Proxy-Connection`, `TE`, `Upgrade`) and `Host` cannot be set, added or
/// removed: the proxy manages them (use urlRewrite.hostname for the host).
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeaderFilter {
    /// Replace the header's values with this one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub set: Vec<HTTPHeader>,

    /// Append this value to the header's existing values.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"])
    )]
    pub add: Vec<HTTPHeader>,

    /// Remove these headers (names, case-insensitive).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 16),
        inner(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    #[x_kube(
        validation = Rule::new(format!("self.all(n, {})", reserved_header_rule("n")))
            .message(RESERVED_HEADER_MESSAGE)
    )]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new(reserved_header_rule("self.name")).message(RESERVED_HEADER_MESSAGE))]
#[serde(rename_all = "camelCase")]
pub struct HTTPHeader {
    /// The header name, case-insensitive.
    #[schemars(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN))]
    pub name: String,

    /// The value; several values are written comma-separated.
    #[schemars(length(min = 1, max = 4096))]
    pub value: String,
}

/// The CEL condition that the header name `name` (a CEL expression) is none
/// of the names the dataplane never lets a header filter touch
/// ([`portico_dataplane::model::RESERVED_HEADERS`]), compared
/// case-insensitively, so the API server refuses what translation would.
fn reserved_header_rule(name: &str) -> String {
    let names: Vec<String> = portico_dataplane::model::RESERVED_HEADERS
        .iter()
        .map(|(n, _)| format!("'{n}'"))
        .collect();
    format!("!({name}.lowerAscii() in [{}])", names.join(", "))
}

const RESERVED_HEADER_MESSAGE: &str = "Content-Length, Transfer-Encoding, Trailer, Connection, Keep-Alive, Proxy-Connection, TE, Upgrade, Host, SSL-Client-Verify, SSL-Client-Subject-DN, SSL-Client-Issuer-DN and SSL-Client-Cert cannot be set, added or removed by a header filter: they frame the message, belong to the connection or carry the proxy's client-certificate verdict (change the host with urlRewrite.hostname)";

/// Answer with a redirect. Fields left out keep that part of the request URL.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRequestRedirectFilter {
    /// The scheme of the Location. Absent: the request's scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<RedirectScheme>,

    /// The host of the Location. Absent: the request's Host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(PRECISE_HOSTNAME_PATTERN))]
    pub hostname: Option<String>,

    /// How to change the path for the Location. Absent: the request's path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathModifier>,

    /// The port of the Location. Absent: the well-known port of `scheme`
    /// when that is set, else the port the request came in on. Ports 80 for
    /// http and 443 for https are left out of the Location.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// The response status. Absent: 302.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("enum" = [301, 302, 303, 307, 308], "default" = 302))]
    pub status_code: Option<i32>,
}

/// The scheme of a redirect.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
// Fields of this type describe it; the OptionalEnum transform would
// overwrite their descriptions with the type's.
#[schemars(description = "")]
pub enum RedirectScheme {
    #[serde(rename = "http")]
    Http,
    #[serde(rename = "https")]
    Https,
}

/// A change to the request path, for a redirect or a rewrite. The field named
/// by `type` must be set and the other must not.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("self.type == 'ReplaceFullPath' ? has(self.replaceFullPath) : true")
        .message("replaceFullPath must be specified when type is set to 'ReplaceFullPath'"),
    validation = Rule::new("has(self.replaceFullPath) ? self.type == 'ReplaceFullPath' : true")
        .message("type must be 'ReplaceFullPath' when replaceFullPath is set"),
    validation = Rule::new("self.type == 'ReplacePrefixMatch' ? has(self.replacePrefixMatch) : true")
        .message("replacePrefixMatch must be specified when type is set to 'ReplacePrefixMatch'"),
    validation = Rule::new("has(self.replacePrefixMatch) ? self.type == 'ReplacePrefixMatch' : true")
        .message("type must be 'ReplacePrefixMatch' when replacePrefixMatch is set")
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPPathModifier {
    /// Which change to make.
    #[serde(rename = "type")]
    pub modifier_type: PathModifierType,

    /// The new path, replacing the whole request path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub replace_full_path: Option<String>,

    /// Replaces the part of the path that the rule's PathPrefix match
    /// matched, by whole segments: prefix `/foo` with `/xyz` turns `/foo/bar`
    /// into `/xyz/bar`; with `/` or an empty value into `/bar`. Every match
    /// of the rule must be a PathPrefix match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub replace_prefix_match: Option<String>,
}

/// The kind of a path change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum PathModifierType {
    ReplaceFullPath,
    ReplacePrefixMatch,
}

/// Change the request while forwarding it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPURLRewriteFilter {
    /// Replace the Host header with this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(PRECISE_HOSTNAME_PATTERN))]
    pub hostname: Option<String>,

    /// Change the path.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<HTTPPathModifier>,
}

/// Copies of matching requests sent to another Service, fire and forget:
/// the copy's answer is discarded and never delays or changes the
/// original's (Gateway API's `RequestMirror`). Copies keep the request's
/// method, path, query, headers and body (bodies up to
/// `--mirror-max-body`).
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("!(has(self.percent) && has(self.fraction))")
        .message("Only one of percent or fraction may be specified in HTTPRequestMirrorFilter")
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRequestMirrorFilter {
    /// The Service copies go to, in the route's namespace.
    pub backend_ref: HTTPMirrorBackendRef,

    /// The share of requests copied, 0 to 100. Neither this nor fraction:
    /// every request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub percent: Option<i32>,

    /// The share of requests copied, as numerator/denominator.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fraction: Option<MirrorFractionSpec>,
}

/// The Service a mirror sends copies to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPMirrorBackendRef {
    /// The Service's name, in the route's namespace.
    #[schemars(length(min = 1, max = 63), pattern(SERVICE_NAME_PATTERN))]
    pub name: String,

    /// The Service port (`spec.ports[].port`).
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

/// `numerator` of every `denominator` requests.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("self.numerator <= self.denominator")
        .message("numerator must be less than or equal to denominator")
)]
#[serde(rename_all = "camelCase")]
pub struct MirrorFractionSpec {
    #[schemars(range(min = 0))]
    pub numerator: i32,

    /// Absent: 100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 100))]
    pub denominator: Option<i32>,
}

/// A CORS origin as Gateway API writes it: `*`, or `http(s)://host[:port]`
/// where the host may start with a `*.` wildcard (any number of labels)
/// or be `*` alone (any host).
pub const CORS_ORIGIN_PATTERN: &str =
    r"(^\*$)|(^(http(s)?):\/\/(((\*\.)?([a-zA-Z0-9\-]+\.)*[a-zA-Z0-9-]+|\*)(:([0-9]{1,5}))?)$)";

/// A CORS list holds `*` alone or no `*` at all.
const WILDCARD_ALONE: &str = "!('*' in self && self.size() > 1)";

/// The preflight answer's `Access-Control-Max-Age` when `maxAge` is absent
/// (Gateway API's default).
pub const DEFAULT_CORS_MAX_AGE: i32 = 5;

/// Answer cross-origin requests from browsers, as Gateway API's
/// HTTPCORSFilter. A preflight (`OPTIONS` with `Origin` and
/// `Access-Control-Request-Method`) from an allowed origin is answered 204
/// by Portico, never forwarded; one from another origin gets 403. Other
/// answers to an allowed origin get `Access-Control-Allow-Origin` (the
/// origin itself with credentials, never `*`); answers to other origins,
/// or to requests without one, get no CORS headers. Every answer carries
/// `Vary: Origin`.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HTTPCORSFilter {
    /// Origins that may call: `*`, or `<scheme>://<host>(:<port>)` with
    /// scheme http or https; the port defaults to the scheme's (80, 443)
    /// and must match. A host `*.example.com` matches any number of labels
    /// before `example.com` (not `example.com` itself); a host `*` any
    /// host. Case-insensitive.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 253), pattern(CORS_ORIGIN_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    #[x_kube(
        validation = Rule::new(WILDCARD_ALONE)
            .message("AllowOrigins cannot contain '*' alongside other origins")
    )]
    pub allow_origins: Vec<String>,

    /// `Access-Control-Allow-Methods` of preflight answers; `*` for any
    /// (with allowCredentials the preflight's method is echoed). Empty: not
    /// sent, so only GET, HEAD and POST.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 9), extend("x-kubernetes-list-type" = "set"))]
    #[x_kube(
        validation = Rule::new(WILDCARD_ALONE)
            .message("AllowMethods cannot contain '*' alongside other methods")
    )]
    pub allow_methods: Vec<CORSMethod>,

    /// `Access-Control-Allow-Headers` of preflight answers; `*` for any
    /// (with allowCredentials the preflight's requested headers are
    /// echoed). Empty: not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    #[x_kube(
        validation = Rule::new(WILDCARD_ALONE)
            .message("AllowHeaders cannot contain '*' alongside other headers")
    )]
    pub allow_headers: Vec<String>,

    /// `Access-Control-Expose-Headers`: response headers pages may read;
    /// `*` for all (left out with allowCredentials). Empty: not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 1, max = 256), pattern(HEADER_NAME_PATTERN)),
        extend("x-kubernetes-list-type" = "set")
    )]
    pub expose_headers: Vec<String>,

    /// `Access-Control-Allow-Credentials: true`: pages may send cookies and
    /// HTTP authentication. Absent: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_credentials: Option<bool>,

    /// `Access-Control-Max-Age`: seconds a browser may cache a preflight
    /// answer. Absent: 5.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1), extend("default" = 5))]
    pub max_age: Option<i32>,
}

/// A method CORS may allow, or `*` for any.
#[allow(clippy::upper_case_acronyms)] // The wire names, which Gateway API uses verbatim.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
// Fields of this type describe it; the OptionalEnum transform would
// overwrite their descriptions with the type's.
#[schemars(description = "")]
pub enum CORSMethod {
    GET,
    HEAD,
    POST,
    PUT,
    DELETE,
    CONNECT,
    OPTIONS,
    TRACE,
    PATCH,
    #[serde(rename = "*")]
    Any,
}

// === impl HTTPCORSFilter ===

impl HTTPCORSFilter {
    /// The preflight cache time in seconds, 5 when absent.
    pub fn max_age_or_default(&self) -> i32 {
        self.max_age.unwrap_or(DEFAULT_CORS_MAX_AGE)
    }
}

impl CORSMethod {
    /// The method as it appears on the wire, or `*`.
    pub fn as_str(self) -> &'static str {
        match self {
            CORSMethod::GET => "GET",
            CORSMethod::HEAD => "HEAD",
            CORSMethod::POST => "POST",
            CORSMethod::PUT => "PUT",
            CORSMethod::DELETE => "DELETE",
            CORSMethod::CONNECT => "CONNECT",
            CORSMethod::OPTIONS => "OPTIONS",
            CORSMethod::TRACE => "TRACE",
            CORSMethod::PATCH => "PATCH",
            CORSMethod::Any => "*",
        }
    }
}

// === Backends ===

/// A Service in the route's namespace that receives a share of the traffic.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new("has(self.port)").message("port is required: the Service port to send requests to")
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPBackendRef {
    /// The Service's name, in the route's namespace.
    #[schemars(length(min = 1, max = 63), pattern(SERVICE_NAME_PATTERN))]
    pub name: String,

    /// The Service port (`spec.ports[].port`, not the target port).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<i32>,

    /// This backend's share of the rule's traffic relative to the others'
    /// weights. 0 sends it nothing. Absent: 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1_000_000), extend("default" = 1))]
    pub weight: Option<i32>,
}

// === Timeouts ===

/// Timeouts as Gateway API Durations (`10s`, `1m30s`, `500ms`). `0s` turns a
/// timeout off.
#[derive(KubeSchema, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[x_kube(
    validation = Rule::new(
        "!(has(self.request) && has(self.backendRequest) && duration(self.request) != duration('0s') && duration(self.backendRequest) > duration(self.request))"
    ).message("backendRequest timeout cannot be longer than request timeout")
)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteTimeouts {
    /// The whole exchange with the client, from the request's arrival to
    /// the end of the response. Absent: Portico's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub request: Option<String>,

    /// One attempt at the backend, from sending the request to the end of
    /// the response. At most `request`. Absent: Portico's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(DURATION_PATTERN))]
    pub backend_request: Option<String>,
}

// === Status ===

/// What Portico made of the route.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HTTPRouteStatus {
    /// `Accepted` and `ResolvedRefs` (and `PartiallyInvalid` when some rules
    /// are skipped), each with the `observedGeneration` of the spec it
    /// describes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 8),
        extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"])
    )]
    pub conditions: Vec<Condition>,
}

// === impl HTTPRouteMatch ===

impl HTTPRouteMatch {
    /// The path match with Gateway API's defaults applied: an absent path,
    /// type or value means PathPrefix, `/`.
    pub fn path_or_default(&self) -> (PathMatchType, &str) {
        match &self.path {
            Some(path) => (path.match_type_or_default(), path.value_or_default()),
            None => (PathMatchType::default(), DEFAULT_PATH),
        }
    }
}

// === impl HTTPPathMatch ===

impl HTTPPathMatch {
    /// The match type, PathPrefix when absent.
    pub fn match_type_or_default(&self) -> PathMatchType {
        self.match_type.unwrap_or_default()
    }

    /// The path value, `/` when absent.
    pub fn value_or_default(&self) -> &str {
        self.value.as_deref().unwrap_or(DEFAULT_PATH)
    }
}

// === impl HTTPHeaderMatch ===

impl HTTPHeaderMatch {
    /// The match type, Exact when absent.
    pub fn match_type_or_default(&self) -> StringMatchType {
        self.match_type.unwrap_or_default()
    }
}

// === impl HTTPQueryParamMatch ===

impl HTTPQueryParamMatch {
    /// The match type, Exact when absent.
    pub fn match_type_or_default(&self) -> StringMatchType {
        self.match_type.unwrap_or_default()
    }
}

// === impl HTTPMethod ===

impl HTTPMethod {
    /// The method as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            HTTPMethod::GET => "GET",
            HTTPMethod::HEAD => "HEAD",
            HTTPMethod::POST => "POST",
            HTTPMethod::PUT => "PUT",
            HTTPMethod::DELETE => "DELETE",
            HTTPMethod::CONNECT => "CONNECT",
            HTTPMethod::OPTIONS => "OPTIONS",
            HTTPMethod::TRACE => "TRACE",
            HTTPMethod::PATCH => "PATCH",
        }
    }
}

// === impl HTTPRequestRedirectFilter ===

impl HTTPRequestRedirectFilter {
    /// The redirect status code, 302 when absent.
    pub fn status_code_or_default(&self) -> i32 {
        self.status_code.unwrap_or(DEFAULT_REDIRECT_STATUS_CODE)
    }
}

// === impl RedirectScheme ===

impl RedirectScheme {
    /// The scheme as written in a URL.
    pub fn as_str(self) -> &'static str {
        match self {
            RedirectScheme::Http => "http",
            RedirectScheme::Https => "https",
        }
    }
}

// === impl HTTPBackendRef ===

impl HTTPBackendRef {
    /// The weight, 1 when absent.
    pub fn weight_or_default(&self) -> i32 {
        self.weight.unwrap_or(DEFAULT_WEIGHT)
    }
}
