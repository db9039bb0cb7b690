//! Routes, rules, matches, actions, redirects, rewrites and timeouts.

#[allow(unused_imports)]
use super::*;

/// Request bodies larger than this answer 413 unless a rule says otherwise
/// (ingress-nginx's `proxy-body-size` default).
pub const DEFAULT_MAX_REQUEST_BODY: u64 = 1024 * 1024;

/// Everything the dataplane serves: the unit of atomic publication.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct RouteConfig {
    /// Shared: a rebuild hands an unchanged route over by `Arc` from the
    /// last translation (and the table build recognises it by pointer),
    /// so two tables and a translation hold one copy of it.
    pub routes: Vec<Arc<Route>>,
    /// Renders the proxy's own 404 for requests no route matches
    /// (ingress-nginx `--default-backend-service`); `None`: a plain 404.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_backend: Option<Backend>,
    /// Gateway listener ports besides the main listeners, each with its
    /// own routes ([`GatewayPort`]); at most one entry per port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<GatewayPort>,
}

/// By value, taking a shared route as equal to itself without comparing
/// it: the rebuild loop compares each translation with the live table's
/// config, which shares most routes with it.
impl PartialEq for RouteConfig {
    fn eq(&self, other: &Self) -> bool {
        let Self {
            routes,
            default_backend,
            ports,
        } = self;
        same_routes(routes, &other.routes)
            && *default_backend == other.default_backend
            && *ports == other.ports
    }
}

/// Element by element, by pointer first.
pub(crate) fn same_routes(a: &[Arc<Route>], b: &[Arc<Route>]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| Arc::ptr_eq(x, y) || x == y)
}

impl RouteConfig {
    /// `routes`, with no default backend.
    pub fn new(routes: Vec<Route>) -> Self {
        Self {
            routes: routes.into_iter().map(Route::into_shared).collect(),
            default_backend: None,
            ports: Vec::new(),
        }
    }

    /// Puts every rule's chain in running order ([`order_filters`]), in
    /// place. Translation does it so that two translations compare equal
    /// to the live table's config, which the table build orders again
    /// (a no-op then) for a config written by hand. A route already in
    /// order is left as it is, so a shared one is not copied.
    pub fn order_chains(&mut self) {
        let ports = self.ports.iter_mut().flat_map(|p| &mut p.routes);
        for route in self.routes.iter_mut().chain(ports) {
            if route.rules.iter().all(|r| filters_ordered(&r.chain)) {
                continue;
            }
            for rule in &mut Arc::make_mut(route).rules {
                order_filters(&mut rule.chain);
            }
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
}

impl Route {
    /// A route of `rules` for `hostnames` (empty: the default virtual
    /// host), with no source object.
    pub fn new(id: impl Into<String>, hostnames: Vec<Hostname>, rules: Vec<Rule>) -> Self {
        Self {
            id: id.into(),
            source: SourceRef::default(),
            hostnames,
            rules,
        }
    }

    /// The route, from `source`.
    pub fn with_source(mut self, source: SourceRef) -> Self {
        self.source = source;
        self
    }

    /// The finished route, shared: every list trimmed to its length first,
    /// as a route is kept for as long as it is served (by the live table,
    /// the next translation and the translation memo) and its lists grew
    /// by doubling while it was built (a rule's one-filter chain held room
    /// for four 128-byte filters).
    pub fn into_shared(mut self) -> Arc<Route> {
        self.shrink_to_fit();
        Arc::new(self)
    }

    fn shrink_to_fit(&mut self) {
        self.id.shrink_to_fit();
        self.hostnames.shrink_to_fit();
        self.rules.shrink_to_fit();
        for rule in &mut self.rules {
            rule.matches.shrink_to_fit();
            for m in &mut rule.matches {
                m.headers.shrink_to_fit();
                m.query.shrink_to_fit();
            }
            rule.chain.shrink_to_fit();
            if let Action::Forward(forward) = &mut rule.action {
                shrink_backends(&mut forward.backends);
                if let Some(canary) = &mut forward.canary {
                    shrink_backends(&mut canary.backends);
                }
            }
        }
    }

    /// Puts `filters` on every rule's chain, ahead of the rule's own: a
    /// policy of the whole route (HTTPS redirect, HSTS, client
    /// certificates) comes first within its stage.
    pub fn add_to_every_rule(&mut self, filters: &[Filter]) {
        if filters.is_empty() {
            return;
        }
        for rule in &mut self.rules {
            rule.chain.splice(0..0, filters.iter().cloned());
        }
    }
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
    pub action: Action,
    #[serde(default)]
    pub timeouts: Timeouts,
    #[serde(default)]
    pub grpc: GrpcOptions,
    /// Every policy of the rule (see [`Filter`]). Run by [`Filter::stage`],
    /// then list order ([`order_filters`], at translation and table build).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chain: Vec<Filter>,
}

impl Rule {
    /// A rule for every request with `action` and the defaults: the
    /// default timeouts, body limit (where it forwards) and gRPC options,
    /// no other filters.
    pub fn new(action: Action) -> Self {
        let mut rule = Self {
            matches: Vec::new(),
            action,
            timeouts: Timeouts::default(),
            grpc: GrpcOptions::default(),
            chain: Vec::new(),
        };
        rule.set_body_limit(Some(DEFAULT_MAX_REQUEST_BODY));
        rule
    }

    /// Replaces the rule's request-body limit (`None`: unlimited). Only a
    /// forwarding rule gets one: a redirect or a deny reads no body.
    pub fn set_body_limit(&mut self, limit: Option<u64>) {
        self.chain.retain(|f| !matches!(f, Filter::BodyLimit(_)));
        if let (Some(limit), Action::Forward(_)) = (limit, &self.action) {
            // First of its stage, ahead of error pages.
            let at = self
                .chain
                .iter()
                .position(|f| f.stage() >= Stage::Content)
                .unwrap_or(self.chain.len());
            self.chain.insert(at, Filter::BodyLimit(limit));
        }
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

#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
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

fn shrink_backends(backends: &mut Vec<Backend>) {
    backends.shrink_to_fit();
    for b in backends {
        b.name.shrink_to_fit();
        b.endpoints.shrink_to_fit();
        b.filters.shrink_to_fit();
    }
}
