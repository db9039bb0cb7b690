//! The live routing table: a compiled [`RouteConfig`] plus the runtime handles
//! its rules need (shared upstream endpoints, metric counters). Immutable once
//! built; replaced whole on every publish.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use crate::model::{Action, Protocol, Route, RouteConfig, RouteMatch, Rule};
use crate::observe::{Metrics, RouteStats};
use crate::router::{RequestHead, RouteError, Router};
use crate::upstream::{Endpoint, EndpointKey, Upstreams};

pub struct RouteTable {
    generation: u64,
    published_at: SystemTime,
    config: Arc<RouteConfig>,
    router: Router,
    /// `[route][rule]`, parallel to `config`.
    rules: Vec<Vec<RuleRuntime>>,
    errors: Vec<RouteError>,
}

/// What the proxy needs at request time for one rule.
pub struct RuleRuntime {
    pub route_id: Arc<str>,
    pub stats: Arc<RouteStats>,
    /// Empty for redirects.
    pub backends: BackendSet,
}

/// A weighted split over backends, each a round robin over its endpoints.
/// Counters are atomics in the table: a swap restarts the rotation, which is
/// harmless; durable balancer state arrives with health-checked upstreams.
#[derive(Default)]
pub struct BackendSet {
    backends: Vec<BackendRuntime>,
    /// Cumulative weights, parallel to `backends`.
    cumulative: Vec<u64>,
    next: AtomicU64,
}

pub struct BackendRuntime {
    pub name: Arc<str>,
    pub protocol: Protocol,
    endpoints: Vec<Arc<Endpoint>>,
    next: AtomicU64,
}

/// A routed request: everything borrowed from the table it was routed on.
pub struct Routed<'t> {
    pub route: &'t Route,
    pub rule: &'t Rule,
    pub matched: Option<&'t RouteMatch>,
    pub runtime: &'t RuleRuntime,
}

#[derive(Debug, PartialEq, Eq)]
pub enum PickError {
    /// No backend has weight (or none is listed).
    NoBackend,
    /// The chosen backend has no endpoints.
    NoEndpoints,
}

// === impl RouteTable ===

impl RouteTable {
    /// The table served before the first publish: it routes nothing.
    pub fn empty() -> Self {
        Self {
            generation: 0,
            published_at: SystemTime::now(),
            config: Arc::default(),
            router: Router::new(&RouteConfig::default()).0,
            rules: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Compiles a config. Rules that do not compile are left out and reported;
    /// everything else is served.
    pub fn build(
        generation: u64,
        config: RouteConfig,
        upstreams: &Upstreams,
        metrics: &Metrics,
    ) -> Self {
        upstreams.prune();
        let (router, errors) = Router::new(&config);
        let rules = config
            .routes
            .iter()
            .map(|route| {
                let route_id: Arc<str> = Arc::from(route.id.as_str());
                let stats = metrics.route_stats(&route.id);
                route
                    .rules
                    .iter()
                    .map(|rule| RuleRuntime {
                        route_id: Arc::clone(&route_id),
                        stats: Arc::clone(&stats),
                        backends: BackendSet::build(rule, upstreams),
                    })
                    .collect()
            })
            .collect();
        Self {
            generation,
            published_at: SystemTime::now(),
            config: Arc::new(config),
            router,
            rules,
            errors,
        }
    }

    pub fn lookup(&self, head: &RequestHead<'_>) -> Option<Routed<'_>> {
        let hit = self.router.lookup(head)?;
        let route = self.config.routes.get(hit.route)?;
        let rule = route.rules.get(hit.rule)?;
        let runtime = self.rules.get(hit.route)?.get(hit.rule)?;
        let matched = hit.matched.and_then(|m| rule.matches.get(m));
        Some(Routed {
            route,
            rule,
            matched,
            runtime,
        })
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn published_at(&self) -> SystemTime {
        self.published_at
    }

    pub fn config(&self) -> &RouteConfig {
        &self.config
    }

    pub fn errors(&self) -> &[RouteError] {
        &self.errors
    }
}

// === impl BackendSet ===

impl BackendSet {
    fn build(rule: &Rule, upstreams: &Upstreams) -> Self {
        let Action::Forward(fwd) = &rule.action else {
            return Self::default();
        };
        let mut total = 0u64;
        let mut backends = Vec::new();
        let mut cumulative = Vec::new();
        for b in fwd.backends.iter().filter(|b| b.weight > 0) {
            total += u64::from(b.weight);
            cumulative.push(total);
            backends.push(BackendRuntime {
                name: Arc::from(b.name.as_str()),
                protocol: b.protocol,
                endpoints: b
                    .endpoints
                    .iter()
                    .map(|&addr| {
                        upstreams.endpoint(EndpointKey {
                            addr,
                            protocol: b.protocol,
                        })
                    })
                    .collect(),
                next: AtomicU64::new(0),
            });
        }
        Self {
            backends,
            cumulative,
            next: AtomicU64::new(0),
        }
    }

    /// Picks a backend by weight, then an endpoint by round robin.
    pub fn pick(&self) -> Result<(&BackendRuntime, &Arc<Endpoint>), PickError> {
        let total = *self.cumulative.last().ok_or(PickError::NoBackend)?;
        let n = self.next.fetch_add(1, Ordering::Relaxed) % total;
        let idx = self.cumulative.partition_point(|&c| c <= n);
        let backend = self.backends.get(idx).ok_or(PickError::NoBackend)?;
        let endpoint = backend.pick().ok_or(PickError::NoEndpoints)?;
        Ok((backend, endpoint))
    }
}

impl BackendRuntime {
    fn pick(&self) -> Option<&Arc<Endpoint>> {
        if self.endpoints.is_empty() {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) as usize % self.endpoints.len();
        self.endpoints.get(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Backend, Forward, SourceRef, Timeouts};
    use prometheus_client::metrics::counter::Counter;

    fn backend(name: &str, weight: u32, ports: &[u16]) -> Backend {
        Backend {
            name: name.into(),
            weight,
            protocol: Protocol::Http1,
            endpoints: ports
                .iter()
                .map(|p| format!("127.0.0.1:{p}").parse().unwrap())
                .collect(),
        }
    }

    fn set(backends: Vec<Backend>) -> BackendSet {
        let rule = Rule {
            matches: vec![],
            filters: Default::default(),
            action: Action::Forward(Forward {
                backends,
                rewrite: None,
            }),
            timeouts: Timeouts::default(),
            max_request_body: None,
        };
        let upstreams = Upstreams::new(Default::default(), Counter::default());
        BackendSet::build(&rule, &upstreams)
    }

    #[test]
    fn weights_split_exactly_over_a_cycle() {
        let s = set(vec![backend("a", 3, &[1]), backend("b", 1, &[2])]);
        let mut a = 0;
        for _ in 0..400 {
            if &*s.pick().unwrap().0.name == "a" {
                a += 1;
            }
        }
        assert_eq!(a, 300);
    }

    #[test]
    fn zero_weight_backend_gets_nothing() {
        let s = set(vec![backend("a", 0, &[1]), backend("b", 1, &[2])]);
        for _ in 0..10 {
            assert_eq!(&*s.pick().unwrap().0.name, "b");
        }
        let none = set(vec![backend("a", 0, &[1])]);
        assert_eq!(none.pick().err(), Some(PickError::NoBackend));
        let empty = set(vec![backend("a", 1, &[])]);
        assert_eq!(empty.pick().err(), Some(PickError::NoEndpoints));
    }

    #[test]
    fn endpoints_round_robin() {
        let s = set(vec![backend("a", 1, &[1, 2, 3])]);
        let ports: Vec<u16> = (0..6).map(|_| s.pick().unwrap().1.addr().port()).collect();
        assert_eq!(ports, [1, 2, 3, 1, 2, 3]);
    }

    #[test]
    fn endpoints_are_shared_across_builds() {
        let upstreams = Upstreams::new(Default::default(), Counter::default());
        let metrics = Metrics::new();
        let cfg = || RouteConfig {
            routes: vec![Route {
                id: "r".into(),
                source: SourceRef::default(),
                hostnames: vec![],
                rules: vec![Rule {
                    matches: vec![],
                    filters: Default::default(),
                    action: Action::Forward(Forward {
                        backends: vec![backend("a", 1, &[9])],
                        rewrite: None,
                    }),
                    timeouts: Timeouts::default(),
                    max_request_body: None,
                }],
            }],
        };
        let t1 = RouteTable::build(1, cfg(), &upstreams, &metrics);
        let t2 = RouteTable::build(2, cfg(), &upstreams, &metrics);
        let e1 = Arc::clone(t1.rules[0][0].backends.pick().unwrap().1);
        let e2 = Arc::clone(t2.rules[0][0].backends.pick().unwrap().1);
        assert!(Arc::ptr_eq(&e1, &e2));
        drop((t1, t2, e1, e2));
        assert_eq!(upstreams.live_endpoints(), 0);
    }
}
