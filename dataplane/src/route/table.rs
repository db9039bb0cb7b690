//! The live routing table: a compiled [`RouteConfig`] plus the runtime handles
//! its rules need (shared upstream endpoints, metric counters). Immutable once
//! built; a new one on every publish, which carries the unchanged routes'
//! compiled rules over from the last.

use foldhash::{HashMap, HashMapExt, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use http::HeaderMap;
use regex::Regex;

use crate::balance::{BackendRuntime, BackendSet, SessionSide, SharedBackends};
use crate::filter::error_pages::ErrorPagesRuntime;
use crate::filter::{Chain, FilterState, Interned};
use crate::headers::cookie_value;
use crate::model::{
    Action, Backend, Balance, Canary, CanaryAffinity, CanaryHeaderValue, Filter, PathModifier,
    PortProtocol, RetryPolicy, Route, RouteConfig, RouteMatch, Rule, UpstreamTls, filters_ordered,
    order_filters,
};
use crate::observe::{Metrics, RouteStats};
use crate::request::ctx::Listener;
use crate::route::router::{RequestHead, RouteError, Router};
use crate::upstream::Upstreams;

pub struct RouteTable {
    generation: u64,
    published_at: SystemTime,
    config: Arc<RouteConfig>,
    router: Router,
    /// `[route][rule]`, parallel to `config`. A route's rules are shared
    /// with the next table when it carries the route over unchanged.
    rules: Vec<RouteRules>,
    errors: Vec<RouteError>,
    /// Renders the 404 of requests no route matches.
    default_backend: Option<ErrorPagesRuntime>,
    /// The Gateway ports served, by port (sorted, unique).
    ports: Vec<PortRoutes>,
    /// Ports of `config.ports` left out, and why.
    port_errors: Vec<(u16, String)>,
}

/// One Gateway port's routes, compiled like the main listeners'.
struct PortRoutes {
    port: u16,
    protocol: PortProtocol,
    /// Index in `config.ports`.
    index: usize,
    router: Router,
    /// `[route][rule]`, parallel to `config.ports[index].routes`.
    rules: Vec<RouteRules>,
}

/// One route's compiled rules, in rule order.
type RouteRules = Arc<[RuleRuntime]>;

/// What the proxy needs at request time for one rule.
pub struct RuleRuntime {
    pub(crate) route_id: Arc<str>,
    pub(crate) stats: Arc<RouteStats>,
    /// Empty for redirects.
    pub backends: BackendSet,
    /// Boxed: most rules have none.
    pub(crate) canary: Option<Box<CanaryRuntime>>,
    /// The compiled pattern of a [`PathModifier::RegexReplace`] rewrite.
    pub(crate) rewrite_regex: Option<Regex>,
    /// The rule bridges gRPC-Web calls to gRPC.
    pub(crate) bridges_grpc_web: bool,
    /// The rule's filters compiled; as data they are the config's
    /// `Rule::chain`, already in running order.
    pub(crate) chain: Chain,
}

/// A compiled [`Canary`]: decides per request which backend set serves it.
pub(crate) struct CanaryRuntime {
    pub backends: BackendSet,
    header: Option<(http::HeaderName, CanaryHeaderRuntime)>,
    cookie: Option<Box<str>>,
    weight: u64,
    weight_total: u64,
    next: AtomicU64,
    /// The mainline's session cookie, when its sessions keep their side
    /// ([`CanaryAffinity::Sticky`] and cookie affinity on the mainline).
    session_cookie: Option<Box<str>>,
    affinity: CanaryAffinity,
}

/// Which backends serve a request, as [`CanaryRuntime::choose`] decided.
pub(crate) struct Chosen<'t> {
    pub(crate) backends: &'t BackendSet,
    /// Their answer may start (or re-point) a sticky session; `false` for a
    /// request the header or cookie forced onto the canary, and under
    /// [`CanaryAffinity::Legacy`] for every canary answer.
    pub(crate) starts_sessions: bool,
}

/// What decided a canary question, in ingress-nginx's order plus sessions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Decision {
    /// `canary-by-header` or `canary-by-cookie`: per request.
    Forced(SessionSide),
    /// The request's sticky session.
    Session(SessionSide),
    Weight(SessionSide),
}

enum CanaryHeaderRuntime {
    AlwaysNever,
    Exact(Box<str>),
    Pattern(Regex),
}

/// A routed request: everything borrowed from the table it was routed on.
pub struct Routed<'t> {
    pub(crate) rule: &'t Rule,
    pub(crate) matched: Option<&'t RouteMatch>,
    pub runtime: &'t RuleRuntime,
}

// === impl RouteTable ===

impl RouteTable {
    /// The table served before the first publish: it routes nothing.
    pub(crate) fn empty() -> Self {
        Self {
            generation: 0,
            published_at: SystemTime::now(),
            config: Arc::default(),
            router: Router::new(&RouteConfig::default()).0,
            rules: Vec::new(),
            errors: Vec::new(),
            default_backend: None,
            ports: Vec::new(),
            port_errors: Vec::new(),
        }
    }

    /// Compiles a config. Rules that do not compile are left out and reported;
    /// everything else is served. A Gateway port listed twice, or equal to
    /// one of `reserved` (the main listeners' ports), is left out.
    ///
    /// A route equal to one of `previous`'s (same id, same config after
    /// the same refusals) keeps that table's compiled rules (`Arc`
    /// shared), unless its build there reported anything: a one-Ingress
    /// edit compiles that Ingress's routes only. Likewise a virtual host
    /// whose routes are all `previous`'s very objects keeps its index
    /// ([`Router::carrying`]): only the edited hosts are indexed anew.
    pub(crate) fn build(
        generation: u64,
        config: RouteConfig,
        reserved: &[u16],
        stores: (&Upstreams, &Metrics, &FilterState),
        previous: Option<&RouteTable>,
    ) -> Self {
        let meter = Meter::default();
        Self::build_metered(generation, config, reserved, stores, previous, meter).0
    }

    /// The heap a table built from `config` keeps, by part, as `live`
    /// (the bytes allocated and not yet freed, from a counting allocator)
    /// sees it: for `translate_bench`, not for serving. The build starts
    /// from empty stores, as a process's first publish does.
    #[doc(hidden)]
    pub fn heap_by_part(
        config: RouteConfig,
        live: &dyn Fn() -> isize,
    ) -> Vec<(&'static str, isize)> {
        let upstreams = Upstreams::new(Default::default(), Default::default());
        let metrics = Metrics::new();
        let filter_state = FilterState::default();
        let meter = Meter {
            live: Some(live),
            ..Meter::default()
        };
        let stores = (&upstreams, &metrics, &filter_state);
        let (table, meter) = Self::build_metered(1, config, &[], stores, None, meter);
        let kept = Part::ALL.map(|(part, name)| (name, meter.kept[part as usize]));
        drop(table);
        kept.to_vec()
    }

    fn build_metered<'m>(
        generation: u64,
        config: RouteConfig,
        reserved: &[u16],
        (upstreams, metrics, filter_state): (&Upstreams, &Metrics, &FilterState),
        previous: Option<&RouteTable>,
        mut meter: Meter<'m>,
    ) -> (Self, Meter<'m>) {
        let mut config = config;
        // What the previous table's routes lists (main, then each Gateway
        // port's) may hand over.
        let mut carry = previous.map_or_else(Carry::default, |p| {
            Carry::of(&p.config.routes, &p.rules, &p.errors)
        });
        let mut port_carries: Vec<(u16, Carry<'_>)> = previous
            .map(|p| {
                let ports = p
                    .ports
                    .iter()
                    .filter_map(|r| Some((r.port, p.port_carry(r.port)?)));
                ports.collect()
            })
            .unwrap_or_default();
        // Routes the last build compiled without a finding, handed over
        // by `Arc` (an unchanged object's, from translation's memo): they
        // are in order and refused nothing then, so they are not walked
        // again, and a host whose routes are all such keeps its index.
        let unchanged = |address: usize| {
            carry.checked(address) || port_carries.iter().any(|(_, c)| c.checked(address))
        };
        // In place, once: the config is what `/debug/routes` shows.
        let refused = order_and_refuse(&mut config, &unchanged);
        let (router, mut errors) = meter.part(Part::Router, || {
            Router::carrying(&config.routes, previous.map(|p| &p.router), &unchanged)
        });
        errors.extend(refused);
        // Indexed now, while the previous routes are vouched for; their
        // errors are listed after the main listeners' rules', as before.
        let (allowed, port_errors) = allowed_ports(&config, reserved);
        let port_routers: Vec<(usize, Router, Vec<RouteError>)> = allowed
            .into_iter()
            .filter_map(|index| {
                let port = config.ports.get(index)?;
                let last = previous
                    .and_then(|p| p.port(port.port))
                    .map(|(p, _)| &p.router);
                let (router, refused) = Router::carrying(&port.routes, last, &unchanged);
                Some((index, router, refused))
            })
            .collect();
        let mut interned = Interned::default();
        let mut build = Build {
            upstreams,
            metrics,
            filter_state,
            interned: &mut interned,
            shared: SharedBackends::default(),
            errors: &mut errors,
            meter,
        };
        let rules = build.rules(&config.routes, &mut carry);
        let ports = port_routers
            .into_iter()
            .filter_map(|(index, router, refused)| {
                Some((index, config.ports.get(index)?, router, refused))
            })
            .map(|(index, port, router, refused)| {
                build.errors.extend(refused);
                let mut carry = port_carries
                    .iter()
                    .position(|(p, _)| *p == port.port)
                    .map(|i| port_carries.swap_remove(i).1)
                    .unwrap_or_default();
                PortRoutes {
                    port: port.port,
                    protocol: port.protocol,
                    index,
                    router,
                    rules: build.rules(&port.routes, &mut carry),
                }
            })
            .collect();
        let mut meter = build.meter;
        let default_backend = meter.part(Part::DefaultBackend, || {
            let b = config.default_backend.as_ref()?;
            Some(ErrorPagesRuntime::unmatched(b, upstreams))
        });
        let table = Self {
            generation,
            published_at: SystemTime::now(),
            config: Arc::new(config),
            router,
            rules,
            errors,
            default_backend,
            ports,
            port_errors,
        };
        (table, meter)
    }

    /// What a build may carry over from this table's routes on Gateway
    /// port `port`.
    fn port_carry(&self, port: u16) -> Option<Carry<'_>> {
        let (p, routes) = self.port(port)?;
        Some(Carry::of(routes, &p.rules, &self.errors))
    }

    /// Gateway port `port`'s compiled part and its routes, if served.
    fn port(&self, port: u16) -> Option<(&PortRoutes, &[Arc<Route>])> {
        let i = self.ports.binary_search_by_key(&port, |p| p.port).ok()?;
        let p = self.ports.get(i)?;
        Some((p, &self.config.ports.get(p.index)?.routes))
    }

    /// The rule a request on the main listeners follows.
    pub fn lookup(&self, head: &RequestHead<'_>) -> Option<Routed<'_>> {
        routed(&self.router, &self.config.routes, &self.rules, head)
    }

    /// The rule a request on `listener` follows: a Gateway port routes
    /// among its own routes only, and a port this table does not serve
    /// (a connection accepted before the port was dropped) routes nothing.
    pub(crate) fn lookup_on(
        &self,
        listener: Listener,
        head: &RequestHead<'_>,
    ) -> Option<Routed<'_>> {
        match listener {
            Listener::Main => self.lookup(head),
            Listener::Gateway(port) => {
                let (p, routes) = self.port(port)?;
                routed(&p.router, routes, &p.rules, head)
            }
        }
    }

    /// The Gateway ports this table serves, in port order.
    pub(crate) fn gateway_ports(&self) -> impl Iterator<Item = (u16, PortProtocol)> + '_ {
        self.ports.iter().map(|p| (p.port, p.protocol))
    }

    /// Gateway ports left out of this table, and why.
    pub(crate) fn port_errors(&self) -> &[(u16, String)] {
        &self.port_errors
    }

    /// The error pages of requests no route matches, if a default backend
    /// is set.
    pub(crate) fn default_backend(&self) -> Option<&ErrorPagesRuntime> {
        self.default_backend.as_ref()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub(crate) fn published_at(&self) -> SystemTime {
        self.published_at
    }

    /// The configuration the table was built from, as published (fields
    /// the build refused already taken out).
    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    /// Each route's id with each rule's filter chain, in running order:
    /// the main listeners' routes, then each Gateway port's.
    pub(crate) fn filters(&self) -> impl Iterator<Item = (&str, Vec<&[Filter]>)> {
        let ports = self.ports.iter().flat_map(|p| {
            let routes = self.config.ports.get(p.index).map(|c| c.routes.as_slice());
            routes.unwrap_or_default()
        });
        self.config.routes.iter().chain(ports).map(|route| {
            let chains = route.rules.iter().map(|r| r.chain.as_slice()).collect();
            (route.id.as_str(), chains)
        })
    }

    pub(crate) fn errors(&self) -> &[RouteError] {
        &self.errors
    }

    /// Every backend of every rule, canaries and error backends included
    /// (a backend used by several rules comes once per rule).
    pub fn backends(&self) -> impl Iterator<Item = &BackendRuntime> {
        self.rules
            .iter()
            .chain(self.ports.iter().flat_map(|p| &p.rules))
            .flat_map(|rules| rules.iter())
            .flat_map(|r| {
                r.backends
                    .backends()
                    .chain(r.canary.iter().flat_map(|c| c.backends.backends()))
                    .chain(r.chain.error_backends())
            })
            .chain(self.default_backend.iter().flat_map(|d| d.backends()))
    }

    /// Each endpoint of each backend once, with its health.
    pub(crate) fn endpoint_health(&self) -> Vec<crate::upstream::health::EndpointReport> {
        let mut seen = std::collections::BTreeMap::new();
        for b in self.backends() {
            for r in b.balancer.report(&b.name) {
                seen.entry((r.backend.clone(), r.address)).or_insert(r);
            }
        }
        seen.into_values().collect()
    }
}

/// The rule `head` follows in one list of routes and its router.
fn routed<'t>(
    router: &Router,
    routes: &'t [Arc<Route>],
    rules: &'t [RouteRules],
    head: &RequestHead<'_>,
) -> Option<Routed<'t>> {
    let hit = router.lookup(head)?;
    let rule = routes.get(hit.route)?.rules.get(hit.rule)?;
    let runtime = rules.get(hit.route)?.get(hit.rule)?;
    let matched = hit.matched.and_then(|m| rule.matches.get(m));
    Some(Routed {
        rule,
        matched,
        runtime,
    })
}

/// The previous table's routes of one list (the main listeners' or a
/// Gateway port's) with their compiled rules, for the next build to carry
/// over those it finds unchanged: by address (a route handed over by
/// `Arc`), else by id and content.
#[derive(Default)]
struct Carry<'p> {
    routes: &'p [Arc<Route>],
    rules: &'p [RouteRules],
    /// The routes whose build reported nothing, by address: only those
    /// are carried.
    by_address: HashMap<usize, usize>,
    taken: Vec<bool>,
    /// By id, made at the first route not found by address (an edit's).
    by_id: Option<HashMap<&'p str, Vec<usize>>>,
}

impl<'p> Carry<'p> {
    /// A route whose build reported anything is left out, so the next
    /// build compiles it anew and reports it again.
    fn of(routes: &'p [Arc<Route>], rules: &'p [RouteRules], errors: &[RouteError]) -> Self {
        let reported: HashSet<&str> = errors.iter().map(|e| e.route_id.as_str()).collect();
        let mut by_address = HashMap::with_capacity(routes.len());
        for (i, route) in routes.iter().enumerate() {
            if !reported.contains(route.id.as_str()) {
                by_address.insert(Arc::as_ptr(route) as usize, i);
            }
        }
        Self {
            routes,
            rules,
            by_address,
            taken: vec![false; routes.len()],
            by_id: None,
        }
    }

    /// Whether the route at `address` is one of these, unreported. Sound
    /// only while they are alive (the build borrows their table).
    fn checked(&self, address: usize) -> bool {
        self.by_address.contains_key(&address)
    }

    /// The compiled rules of a route equal to `route`, each taken once
    /// (an Ingress gives one route per host, all with its id): the very
    /// same route (handed over by `Arc`) without comparing, else an equal
    /// one (a translation from scratch).
    fn take(&mut self, route: &Arc<Route>) -> Option<RouteRules> {
        let i = match self.by_address.get(&(Arc::as_ptr(route) as usize)) {
            Some(&i) if !self.taken.get(i).copied().unwrap_or(true) => i,
            _ => self.find_equal(route)?,
        };
        *self.taken.get_mut(i)? = true;
        self.rules.get(i).cloned()
    }

    fn find_equal(&mut self, route: &Route) -> Option<usize> {
        let (routes, by_address) = (self.routes, &self.by_address);
        let by_id = self.by_id.get_or_insert_with(|| {
            let mut by_id: HashMap<&str, Vec<usize>> = HashMap::new();
            for &i in by_address.values() {
                if let Some(r) = routes.get(i) {
                    by_id.entry(r.id.as_str()).or_default().push(i);
                }
            }
            by_id
        });
        let same_id = by_id.get(route.id.as_str())?;
        same_id.iter().copied().find(|&i| {
            !self.taken.get(i).copied().unwrap_or(true)
                && self.routes.get(i).is_some_and(|old| **old == *route)
        })
    }
}

/// What one table build shares while compiling each list of routes.
struct Build<'b, 'm> {
    upstreams: &'b Upstreams,
    metrics: &'b Metrics,
    filter_state: &'b FilterState,
    interned: &'b mut Interned,
    /// Each distinct backend's runtime, shared by the rules naming it.
    shared: SharedBackends<'b>,
    errors: &'b mut Vec<RouteError>,
    meter: Meter<'m>,
}

/// The parts of a table [`RouteTable::heap_by_part`] counts.
#[derive(Clone, Copy)]
enum Part {
    Router,
    RouteIds,
    RouteStats,
    Chains,
    BackendSets,
    Canaries,
    Rewrites,
    /// The `[route][rule]` vectors of `RuleRuntime`s themselves.
    RuleRuntimes,
    DefaultBackend,
}

impl Part {
    const ALL: [(Part, &'static str); 9] = [
        (Part::Router, "router"),
        (Part::RouteIds, "route ids"),
        (Part::RouteStats, "route metric series"),
        (Part::Chains, "compiled filter chains"),
        (Part::BackendSets, "backend sets (balancers, endpoints)"),
        (Part::Canaries, "canaries"),
        (Part::Rewrites, "rewrite regexes"),
        (Part::RuleRuntimes, "RuleRuntime vectors"),
        (Part::DefaultBackend, "default backend"),
    ];
}

/// Counts the heap each part of a build keeps, when given a reading of
/// the bytes allocated and not yet freed (a counting allocator's); a
/// build without one only calls through.
#[derive(Default)]
struct Meter<'m> {
    live: Option<&'m dyn Fn() -> isize>,
    kept: [isize; Part::ALL.len()],
}

impl Meter<'_> {
    fn part<T>(&mut self, part: Part, f: impl FnOnce() -> T) -> T {
        let Some(live) = self.live else { return f() };
        let before = live();
        let out = f();
        self.kept[part as usize] += live() - before;
        out
    }
}

impl<'b> Build<'b, '_> {
    /// Each rule's runtime, `[route][rule]`, parallel to `routes`.
    fn rules(&mut self, routes: &'b [Arc<Route>], carry: &mut Carry<'_>) -> Vec<RouteRules> {
        let before = self.meter.live.map(|live| live());
        let inner_before: isize = self.meter.kept.iter().sum();
        let rules = routes
            .iter()
            .map(|route| {
                if let Some(rules) = carry.take(route) {
                    return rules;
                }
                let route_id: Arc<str> = self
                    .meter
                    .part(Part::RouteIds, || Arc::from(route.id.as_str()));
                let metrics = self.metrics;
                let stats = self
                    .meter
                    .part(Part::RouteStats, || metrics.route_stats(&route.id));
                route
                    .rules
                    .iter()
                    .enumerate()
                    .map(|(idx, rule)| self.rule(route, &route_id, &stats, idx, rule))
                    .collect()
            })
            .collect();
        if let (Some(live), Some(before)) = (self.meter.live, before) {
            let inner: isize = self.meter.kept.iter().sum::<isize>() - inner_before;
            self.meter.kept[Part::RuleRuntimes as usize] += live() - before - inner;
        }
        rules
    }

    fn rule(
        &mut self,
        route: &Route,
        route_id: &Arc<str>,
        stats: &Arc<RouteStats>,
        idx: usize,
        rule: &'b Rule,
    ) -> RuleRuntime {
        let Self {
            upstreams,
            filter_state,
            interned,
            shared,
            errors,
            meter,
            ..
        } = self;
        let (upstreams, filter_state) = (*upstreams, *filter_state);
        let mut error = |field: &str, reason: String| {
            errors.push(RouteError {
                route_id: route.id.clone(),
                rule: idx,
                field: field.into(),
                reason,
            })
        };
        let chain = meter.part(Part::Chains, || {
            Chain::build_with(&rule.chain, rule, upstreams, filter_state, interned)
        });
        let Action::Forward(fwd) = &rule.action else {
            return RuleRuntime {
                route_id: Arc::clone(route_id),
                stats: Arc::clone(stats),
                backends: BackendSet::default(),
                canary: None,
                rewrite_regex: None,
                bridges_grpc_web: false,
                chain,
            };
        };
        let rewrite_regex = meter.part(Part::Rewrites, || {
            match fwd.rewrite.as_ref().and_then(|r| r.path.as_ref()) {
                Some(PathModifier::RegexReplace { pattern, .. }) => match rewrite_regex(pattern) {
                    Ok(re) => Some(re),
                    Err(e) => {
                        error("rewrite.path.pattern", e);
                        None
                    }
                },
                _ => None,
            }
        });
        let tls = fwd.upstream_tls.as_ref();
        let canary = meter.part(Part::Canaries, || {
            let c = fwd.canary.as_ref()?;
            let build = (upstreams, &mut **interned, &mut *shared);
            CanaryRuntime::build(c, &fwd.backends, tls, &fwd.retry, build)
                .map(Box::new)
                .map_err(|e| error("canary.header", e))
                .ok()
        });
        let backends = meter.part(Part::BackendSets, || {
            let build = (upstreams, &mut **interned, shared);
            BackendSet::build_with(&fwd.backends, tls, &fwd.retry, SessionSide::Mainline, build)
        });
        RuleRuntime {
            route_id: Arc::clone(route_id),
            stats: Arc::clone(stats),
            backends,
            canary,
            rewrite_regex,
            bridges_grpc_web: rule.grpc.web.is_some(),
            chain,
        }
    }
}

/// The indexes of `config.ports` to serve, in port order, and the ports
/// left out: port 0, a port listed twice (both entries: which one was
/// meant is not ours to guess) or a main listener's.
fn allowed_ports(config: &RouteConfig, reserved: &[u16]) -> (Vec<usize>, Vec<(u16, String)>) {
    let mut refused: Vec<(u16, String)> = Vec::new();
    let mut allowed = Vec::new();
    for (i, p) in config.ports.iter().enumerate() {
        if refused.iter().any(|(port, _)| *port == p.port) {
            continue;
        }
        let listed = config.ports.iter().filter(|q| q.port == p.port).count();
        let reason = if p.port == 0 {
            // Binding it would pick a port no client knows.
            "port 0 is not a listener port".to_owned()
        } else if reserved.contains(&p.port) {
            "the port of a main listener".to_owned()
        } else if listed > 1 {
            format!("listed {listed} times")
        } else {
            allowed.push((p.port, i));
            continue;
        };
        refused.push((p.port, reason));
    }
    allowed.sort_unstable();
    (allowed.into_iter().map(|(_, i)| i).collect(), refused)
}

/// Puts every rule's chain in running order ([`RouteConfig::order_chains`])
/// and leaves out what no table may apply, however the config was written
/// ([`refuse_unsafe_fields`]), except in routes of `checked`. A route is
/// copied only if it changes.
fn order_and_refuse(config: &mut RouteConfig, checked: &dyn Fn(usize) -> bool) -> Vec<RouteError> {
    let mut errors = Vec::new();
    let ports = config.ports.iter_mut().flat_map(|p| &mut p.routes);
    for route in config.routes.iter_mut().chain(ports) {
        if checked(Arc::as_ptr(route) as usize) {
            continue;
        }
        let ordered = route.rules.iter().all(|r| filters_ordered(&r.chain));
        if !ordered || !all_user_settable(route) {
            let route = Arc::make_mut(route);
            for rule in &mut route.rules {
                order_filters(&mut rule.chain);
            }
            refuse_unsafe_fields(route, &mut errors);
        }
        check_actions(route, &mut errors);
    }
    errors
}

/// The header modifiers of `route`'s rules and their backends.
fn header_modifiers(route: &Route) -> impl Iterator<Item = &crate::model::HeaderModifier> {
    route.rules.iter().flat_map(|rule| {
        let backends = match &rule.action {
            Action::Forward(f) => &f.backends[..],
            _ => &[],
        };
        let chains = std::iter::once(&rule.chain).chain(backends.iter().map(|b| &b.filters));
        chains.flatten().filter_map(|f| match f {
            Filter::RequestHeaders(m) | Filter::ResponseHeaders(m) => Some(m),
            _ => None,
        })
    })
}

fn all_user_settable(route: &Route) -> bool {
    header_modifiers(route).all(|m| m.all_user_settable())
}

/// Leaves out headers a header modifier must not touch
/// ([`crate::model::user_settable`]). Off the request path.
fn refuse_unsafe_fields(route: &mut Route, errors: &mut Vec<RouteError>) {
    for (idx, rule) in route.rules.iter_mut().enumerate() {
        let backend_chains = match &mut rule.action {
            Action::Forward(f) => f.backends.iter_mut().enumerate().collect(),
            _ => Vec::new(),
        };
        let chains = std::iter::once(("chain".to_owned(), &mut rule.chain)).chain(
            backend_chains.into_iter().map(|(b, backend)| {
                (
                    format!("action.forward.backends[{b}].filters"),
                    &mut backend.filters,
                )
            }),
        );
        for (at, chain) in chains {
            for (i, f) in chain.iter_mut().enumerate() {
                let (which, m) = match f {
                    Filter::RequestHeaders(m) => ("request_headers", m),
                    Filter::ResponseHeaders(m) => ("response_headers", m),
                    _ => continue,
                };
                for (list, name, reason) in m.retain_user_settable() {
                    errors.push(RouteError {
                        route_id: route.id.clone(),
                        rule: idx,
                        field: format!("{at}[{i}].{which}.{list}"),
                        reason: format!("{name}: {reason}; left out"),
                    });
                }
            }
        }
    }
}

/// Reports redirect and rewrite fields the proxy cannot send: their
/// requests answer 400.
fn check_actions(route: &Route, errors: &mut Vec<RouteError>) {
    for (idx, rule) in route.rules.iter().enumerate() {
        let invalid = match &rule.action {
            Action::Redirect(r) => r.check().err().map(|e| ("redirect", e)),
            Action::Forward(f) => f
                .rewrite
                .as_ref()
                .and_then(|r| r.check().err())
                .map(|e| ("rewrite", e)),
            Action::Deny { .. } => None,
        };
        if let Some((what, e)) = invalid {
            errors.push(RouteError {
                route_id: route.id.clone(),
                rule: idx,
                field: format!("action.{what}.{}", e.field),
                reason: format!("{}; requests answer 400", e.reason),
            });
        }
    }
}

/// nginx's `rewrite` is case-insensitive for ingress-nginx locations and
/// matches anywhere in the path.
fn rewrite_regex(pattern: &str) -> Result<Regex, String> {
    crate::route::pattern::compile(pattern, true).map_err(|e| e.to_string())
}

// === impl CanaryRuntime ===

impl CanaryRuntime {
    fn build<'c>(
        c: &'c Canary,
        mainline: &[Backend],
        tls: Option<&'c Arc<UpstreamTls>>,
        retry: &RetryPolicy,
        build: (&Upstreams, &mut Interned, &mut SharedBackends<'c>),
    ) -> Result<Self, String> {
        let header = match &c.header {
            None => None,
            Some(h) => {
                let value = match &h.value {
                    CanaryHeaderValue::AlwaysNever => CanaryHeaderRuntime::AlwaysNever,
                    CanaryHeaderValue::Exact(v) => CanaryHeaderRuntime::Exact(v.as_str().into()),
                    CanaryHeaderValue::Pattern(p) => CanaryHeaderRuntime::Pattern(
                        crate::route::pattern::compile(p, false).map_err(|e| e.to_string())?,
                    ),
                };
                Some((h.name.clone(), value))
            }
        };
        let session_cookie = match c.affinity {
            CanaryAffinity::Sticky => mainline.iter().find_map(|b| match &b.policy.balance {
                Balance::Cookie(a) => Some(Box::from(a.name.as_str())),
                _ => None,
            }),
            CanaryAffinity::Legacy => None,
        };
        Ok(Self {
            backends: BackendSet::build_with(&c.backends, tls, retry, SessionSide::Canary, build),
            header,
            cookie: c.cookie.as_deref().map(Box::from),
            weight: u64::from(c.weight),
            weight_total: u64::from(c.weight_total.max(1)),
            next: AtomicU64::new(0),
            session_cookie,
            affinity: c.affinity,
        })
    }

    /// The backends for a request: the canary's or `mainline`.
    pub(crate) fn choose<'t>(
        &'t self,
        headers: &HeaderMap,
        mainline: &'t BackendSet,
    ) -> Chosen<'t> {
        let (side, starts_sessions) = match self.decide(headers) {
            // A per-request override leaves the client's session alone.
            Decision::Forced(SessionSide::Canary) => (SessionSide::Canary, false),
            Decision::Weight(SessionSide::Canary) => {
                (SessionSide::Canary, self.affinity == CanaryAffinity::Sticky)
            }
            Decision::Forced(side) | Decision::Session(side) | Decision::Weight(side) => {
                (side, true)
            }
        };
        Chosen {
            backends: match side {
                SessionSide::Canary => &self.backends,
                SessionSide::Mainline => mainline,
            },
            starts_sessions,
        }
    }

    /// ingress-nginx order: the header decides, then the cookie; then the
    /// request's sticky session keeps its side (sticky only, and a canary
    /// session only while the weight is above 0, so a weight of 0 drains
    /// the canary); then the weight (spread evenly: `weight` of every
    /// `weight_total` requests).
    fn decide(&self, headers: &HeaderMap) -> Decision {
        use SessionSide::{Canary, Mainline};
        if let Some((name, rule)) = &self.header
            && let Some(value) = headers.get(name).map(|v| v.as_bytes())
        {
            match rule {
                CanaryHeaderRuntime::Exact(want) => {
                    if value == want.as_bytes() {
                        return Decision::Forced(Canary);
                    }
                }
                CanaryHeaderRuntime::Pattern(re) => {
                    if std::str::from_utf8(value).is_ok_and(|v| re.is_match(v)) {
                        return Decision::Forced(Canary);
                    }
                }
                CanaryHeaderRuntime::AlwaysNever => match value {
                    b"always" => return Decision::Forced(Canary),
                    b"never" => return Decision::Forced(Mainline),
                    _ => {}
                },
            }
        }
        if let Some(cookie) = &self.cookie {
            match cookie_value(headers, cookie) {
                Some(b"always") => return Decision::Forced(Canary),
                Some(b"never") => return Decision::Forced(Mainline),
                _ => {}
            }
        }
        if self.weight == 0 {
            return Decision::Weight(Mainline);
        }
        if let Some(name) = &self.session_cookie
            && let Some((side, _)) =
                cookie_value(headers, name).and_then(crate::balance::SessionSide::parse)
        {
            return Decision::Session(side);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.weight_total;
        Decision::Weight(if n < self.weight { Canary } else { Mainline })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::test_backend as backend;
    use crate::model::{Forward, Route};
    use prometheus_client::metrics::counter::Counter;

    /// A table built from fresh stores.
    fn table(cfg: RouteConfig) -> RouteTable {
        let upstreams = Upstreams::new(Default::default(), Counter::default());
        let stores = (&upstreams, &Metrics::new(), &FilterState::default());
        RouteTable::build(1, cfg, &[], stores, None)
    }

    #[test]
    fn endpoints_are_shared_across_builds() {
        let upstreams = Upstreams::new(Default::default(), Counter::default());
        let metrics = Metrics::new();
        let cfg = || {
            let mut rule = Rule::new(Action::Forward(Forward::to(vec![backend("a", 1, &[9])])));
            rule.set_body_limit(None);
            RouteConfig::new(vec![Route::new("r", vec![], vec![rule])])
        };
        let state = FilterState::default();
        let stores = (&upstreams, &metrics, &state);
        let t1 = RouteTable::build(1, cfg(), &[], stores, None);
        let t2 = RouteTable::build(2, cfg(), &[], stores, None);
        let e1 = Arc::clone(t1.rules[0][0].backends.pick().unwrap().1);
        let e2 = Arc::clone(t2.rules[0][0].backends.pick().unwrap().1);
        assert!(Arc::ptr_eq(&e1, &e2));
        drop((t1, t2, e1, e2));
        assert_eq!(upstreams.live_endpoints(), 0);
    }

    /// A forwarding route on `host` to one endpoint on `port`.
    fn route_on(host: &str, port: u16) -> Route {
        let mut rule = Rule::new(Action::Forward(Forward::to(vec![backend("a", 1, &[port])])));
        rule.set_body_limit(None);
        let host = crate::model::Hostname::parse(host).unwrap();
        Route::new(format!("ingress/default/{host}"), vec![host], vec![rule])
    }

    #[test]
    fn an_unchanged_route_keeps_its_compiled_rules_and_an_edited_one_is_rebuilt() {
        let upstreams = Upstreams::new(Default::default(), Counter::default());
        let (metrics, state) = (Metrics::new(), FilterState::default());
        let stores = (&upstreams, &metrics, &state);
        let first = vec![route_on("kept.example", 9), route_on("edited.example", 9)];
        let t1 = RouteTable::build(1, RouteConfig::new(first), &[], stores, None);
        // Reordered too: routes are found by id and content, not position.
        let second = vec![route_on("edited.example", 10), route_on("kept.example", 9)];
        let t2 = RouteTable::build(2, RouteConfig::new(second), &[], stores, Some(&t1));
        assert!(Arc::ptr_eq(&t1.rules[0], &t2.rules[1]));
        assert!(!Arc::ptr_eq(&t1.rules[1], &t2.rules[0]));
        let port = |t: &RouteTable, route: usize| {
            let (_, endpoint) = t.rules[route][0].backends.pick().unwrap();
            endpoint.key().addr.port()
        };
        assert_eq!(port(&t2, 0), 10);
        assert_eq!(port(&t2, 1), 9);
    }

    #[test]
    fn a_route_whose_build_reported_errors_is_compiled_and_reported_again() {
        let upstreams = Upstreams::new(Default::default(), Counter::default());
        let (metrics, state) = (Metrics::new(), FilterState::default());
        let stores = (&upstreams, &metrics, &state);
        let cfg = || {
            let mut route = route_on("bad.example", 9);
            if let Action::Forward(f) = &mut route.rules[0].action {
                f.rewrite = Some(crate::model::UrlRewrite {
                    hostname: None,
                    path: Some(PathModifier::RegexReplace {
                        pattern: "(unclosed".into(),
                        replacement: Vec::new(),
                    }),
                });
            }
            RouteConfig::new(vec![route])
        };
        let t1 = RouteTable::build(1, cfg(), &[], stores, None);
        assert_eq!(t1.errors().len(), 1);
        let t2 = RouteTable::build(2, cfg(), &[], stores, Some(&t1));
        assert_eq!(t2.errors(), t1.errors());
        assert!(!Arc::ptr_eq(&t1.rules[0], &t2.rules[0]));
    }

    /// A route handed over by `Arc` from the live table's config is
    /// carried without comparing and without its checks walked again.
    #[test]
    fn a_route_handed_over_by_arc_keeps_its_compiled_rules() {
        let upstreams = Upstreams::new(Default::default(), Counter::default());
        let (metrics, state) = (Metrics::new(), FilterState::default());
        let stores = (&upstreams, &metrics, &state);
        let t1 = RouteTable::build(
            1,
            RouteConfig::new(vec![route_on("a.example", 9)]),
            &[],
            stores,
            None,
        );
        let shared = Arc::clone(&t1.config().routes[0]);
        let mut next = RouteConfig::default();
        next.routes.push(Arc::clone(&shared));
        let t2 = RouteTable::build(2, next, &[], stores, Some(&t1));
        assert!(Arc::ptr_eq(&t2.config().routes[0], &shared));
        assert!(Arc::ptr_eq(&t1.rules[0], &t2.rules[0]));
    }

    /// A shared route the build must change (a header no edit may touch)
    /// is copied, never changed under its other owners, and reported on
    /// every build it comes to.
    #[test]
    fn a_shared_route_with_a_refused_header_is_copied_and_reported_each_time() {
        use crate::model::{Filter, HeaderModifier};
        let upstreams = Upstreams::new(Default::default(), Counter::default());
        let (metrics, state) = (Metrics::new(), FilterState::default());
        let stores = (&upstreams, &metrics, &state);
        let sets_a_header = |r: &Route| {
            r.rules[0]
                .chain
                .iter()
                .any(|f| matches!(f, Filter::RequestHeaders(m) if !m.set.is_empty()))
        };
        let mut route = route_on("a.example", 9);
        route.rules[0]
            .chain
            .push(Filter::RequestHeaders(HeaderModifier {
                set: vec![(
                    http::header::TRANSFER_ENCODING,
                    http::HeaderValue::from_static("chunked"),
                )],
                ..Default::default()
            }));
        let shared = Arc::new(route);
        let config = || RouteConfig {
            routes: vec![Arc::clone(&shared)],
            ..Default::default()
        };
        let t1 = RouteTable::build(1, config(), &[], stores, None);
        let t2 = RouteTable::build(2, config(), &[], stores, Some(&t1));
        for t in [&t1, &t2] {
            assert_eq!(t.errors().len(), 1, "{:?}", t.errors());
            assert!(!Arc::ptr_eq(&t.config().routes[0], &shared));
            assert!(!sets_a_header(&t.config().routes[0]));
        }
        assert!(
            sets_a_header(&shared),
            "the shared route itself is unchanged"
        );
    }

    /// Rules naming an equal backend share one runtime (balancer, endpoint
    /// list), as an nginx upstream serves every location naming it; any
    /// difference in the backend or its settings gets a runtime of its own.
    #[test]
    fn rules_naming_an_equal_backend_share_one_runtime() {
        let rule = |b: Backend, budget: u8| {
            let mut fwd = Forward::to(vec![b]);
            fwd.retry.budget_percent = budget;
            Rule::new(Action::Forward(fwd))
        };
        let mut other_policy = backend("a", 1, &[9]);
        other_policy.policy_mut().panic_threshold_percent = 0;
        let cfg = RouteConfig::new(vec![
            Route::new("r1", vec![], vec![rule(backend("a", 1, &[9]), 20)]),
            Route::new(
                "r2",
                vec![],
                vec![
                    rule(backend("a", 1, &[9]), 20),
                    rule(backend("a", 1, &[9, 10]), 20),
                    rule(backend("a", 1, &[9]), 50),
                    rule(other_policy, 20),
                ],
            ),
        ]);
        let t = table(cfg);
        let runtime = |route: usize, rule: usize| -> *const BackendRuntime {
            t.rules[route][rule].backends.backends().next().unwrap()
        };
        assert_eq!(runtime(0, 0), runtime(1, 0), "equal backends share");
        for other in 1..4 {
            assert_ne!(runtime(0, 0), runtime(1, other), "rule {other} differs");
        }
    }

    /// `/debug/routes` shows the config's own chains, in running order:
    /// the table keeps no second copy.
    #[test]
    fn the_config_keeps_each_chain_in_running_order() {
        use crate::model::{Filter, Hsts};
        let mut rule = Rule::new(Action::Forward(Forward::to(vec![backend("a", 1, &[9])])));
        // Listed after the body limit, run before it.
        rule.chain.push(Filter::Hsts(Hsts::DEFAULT));
        let listed = rule.chain.clone();
        let t = table(RouteConfig::new(vec![Route::new("r", vec![], vec![rule])]));
        let mut ordered = listed.clone();
        crate::model::order_filters(&mut ordered);
        assert_ne!(ordered, listed, "the case needs a chain out of order");
        assert_eq!(t.config().routes[0].rules[0].chain, ordered);
        let (_, chains) = t.filters().next().unwrap();
        assert_eq!(chains, [ordered.as_slice()]);
    }

    #[test]
    fn ports_listed_twice_or_taken_by_a_main_listener_are_left_out() {
        use crate::model::{GatewayPort, PortProtocol};
        let cfg = RouteConfig {
            ports: [9000, 8443, 80, 9000, 7000, 0, 9000]
                .map(|p| GatewayPort::new(p, PortProtocol::Http, vec![]))
                .to_vec(),
            ..RouteConfig::default()
        };
        let (allowed, refused) = allowed_ports(&cfg, &[80, 443]);
        let ports: Vec<u16> = allowed.iter().map(|&i| cfg.ports[i].port).collect();
        assert_eq!(ports, [7000, 8443], "in port order");
        assert_eq!(
            refused,
            [
                (9000, "listed 3 times".to_owned()),
                (80, "the port of a main listener".to_owned()),
                (0, "port 0 is not a listener port".to_owned()),
            ]
        );
    }

    /// An Ingress with one long list and many paths compiles the list once.
    #[test]
    fn rules_with_the_same_policy_data_share_one_compiled_copy() {
        use crate::model::{Filter, HeaderModifier, IpAccess};
        use crate::request::forwarded::IpNet;
        use std::net::IpAddr;

        // 10,000 ranges that do not merge: the lower half of each /24.
        let long: Vec<IpNet> = (0..10_000u32)
            .map(|i| format!("10.{}.{}.0/25", i / 256, i % 256).parse().unwrap())
            .collect();
        let short: Vec<IpNet> = long[..10].to_vec();
        let header = |v: &'static str| HeaderModifier {
            set: vec![(
                http::HeaderName::from_static("x-policy"),
                http::HeaderValue::from_static(v),
            )],
            ..HeaderModifier::default()
        };
        let rule = |allow: &[IpNet], h: &'static str| {
            let mut r = Rule::new(Action::Deny { reason: "x".into() });
            r.chain = vec![
                Filter::IpAccess(IpAccess {
                    allow: allow.to_vec(),
                    deny: vec![],
                }),
                Filter::ResponseHeaders(header(h)),
            ];
            r
        };
        let route = |id: &str, rules| Route::new(id, vec![], rules);
        let cfg = RouteConfig::new(vec![
            route("a", vec![rule(&long, "1"), rule(&long, "1")]),
            route("b", vec![rule(&long, "1"), rule(&short, "2")]),
        ]);
        let t = table(cfg);
        let sets = |route: usize, rule: usize| t.rules[route][rule].chain.ip_sets();
        let (a0, a1, b0, b1) = (sets(0, 0), sets(0, 1), sets(1, 0), sets(1, 1));
        // Allow, then deny (empty, shared by all).
        assert_eq!(a0.len(), 2);
        for other in [&a1, &b0] {
            assert!(Arc::ptr_eq(a0[0], other[0]), "one compiled long list");
        }
        assert!(!Arc::ptr_eq(a0[0], b1[0]), "another list, another set");
        for s in [&a1, &b0, &b1] {
            assert!(Arc::ptr_eq(a0[1], s[1]));
        }
        let mods = |route: usize, rule: usize| t.rules[route][rule].chain.header_modifiers();
        assert!(Arc::ptr_eq(mods(0, 0)[0], mods(1, 0)[0]));
        assert!(!Arc::ptr_eq(mods(0, 0)[0], mods(1, 1)[0]));
        assert_eq!(**mods(1, 1)[0], header("2"));

        // Lookups through the shared set are each list's own.
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let allow = &a1[0];
        assert!(allow.contains(ip("10.0.0.1")));
        assert!(allow.contains(ip("10.39.15.127")));
        assert!(!allow.contains(ip("10.39.15.128")));
        assert!(!allow.contains(ip("10.39.16.1")));
        assert!(!allow.contains(ip("192.0.2.1")));
        let short_set = &b1[0];
        assert!(short_set.contains(ip("10.0.9.1")));
        assert!(!short_set.contains(ip("10.0.10.1")));
        assert!(!a0[1].contains(ip("10.0.0.1")), "empty deny list");
    }
}
