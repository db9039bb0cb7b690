//! Route lookup cost against table size.
//!
//! Lookup must not grow with the number of routes, so each shape is measured
//! at 10, 1,000 and 10,000 routes:
//!
//! - `hosts`: routes spread over that many hostnames, a few rules each;
//! - `paths`: that many API paths under one hostname, plus a few header-match
//!   rules on a shared prefix that every miss under it has to try.
//!
//! Kept short so `cargo bench -p portico-dataplane --bench lookup` stays well
//! under two minutes on a small machine.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderName, Method};
use portico_dataplane::model::{
    Action, Forward, HeaderMatch, Hostname, PathMatch, Route, RouteConfig, RouteMatch, Rule,
    SourceRef, ValueMatch,
};
use portico_dataplane::route::router::{RequestHead, RouteHit, Router};

const SIZES: [usize; 3] = [10, 1_000, 10_000];
/// Header-match rules in the `paths` shape.
const HEADER_RULES: usize = 5;

fn route(i: usize, hostname: &str, rules: Vec<Rule>) -> Route {
    let hostnames = vec![Hostname::Exact(hostname.into())];
    Route::new(format!("httproute/default/r-{i}"), hostnames, rules).with_source(SourceRef {
        kind: "HTTPRoute".into(),
        namespace: "default".into(),
        name: format!("r-{i}"),
        created: i as i64,
    })
}

fn rule(path: PathMatch, headers: Vec<HeaderMatch>) -> Rule {
    Rule {
        matches: vec![RouteMatch {
            path,
            headers,
            ..RouteMatch::default()
        }],
        ..Rule::new(Action::Forward(Forward::to(vec![])))
    }
}

/// `n` hostnames, three rules each.
fn hosts_config(n: usize) -> RouteConfig {
    let routes = (0..n)
        .map(|i| {
            route(
                i,
                &format!("svc-{i}.example.com"),
                vec![
                    rule(PathMatch::Exact("/healthz".into()), vec![]),
                    rule(PathMatch::Prefix("/api/v1/items".into()), vec![]),
                    rule(PathMatch::Prefix("/static".into()), vec![]),
                ],
            )
        })
        .collect();
    RouteConfig::new(routes)
}

/// `n` services under one hostname, a prefix and an exact path each, plus a
/// few header-match rules on `/api/v1`.
fn paths_config(n: usize) -> RouteConfig {
    let mut routes: Vec<Route> = (0..n)
        .map(|i| {
            route(
                i,
                "api.example.com",
                vec![
                    rule(PathMatch::Prefix(format!("/api/v1/svc-{i}/items")), vec![]),
                    rule(PathMatch::Exact(format!("/api/v1/svc-{i}/status")), vec![]),
                ],
            )
        })
        .collect();
    for t in 0..HEADER_RULES {
        routes.push(route(
            n + t,
            "api.example.com",
            vec![rule(
                PathMatch::Prefix("/api/v1".into()),
                vec![HeaderMatch {
                    name: HeaderName::from_static("x-tenant"),
                    value: ValueMatch::Exact(format!("tenant-{t}")),
                }],
            )],
        ));
    }
    RouteConfig::new(routes)
}

struct Request {
    name: &'static str,
    host: String,
    path: String,
    expected: Option<RouteHit>,
}

fn hosts_requests(n: usize) -> Vec<Request> {
    let i = n / 2;
    let host = format!("svc-{i}.example.com");
    let hit = |rule| {
        Some(RouteHit {
            route: i,
            rule,
            matched: Some(0),
        })
    };
    vec![
        Request {
            name: "deep",
            host: host.clone(),
            path: "/api/v1/items/42/details".into(),
            expected: hit(1),
        },
        Request {
            name: "exact",
            host: host.clone(),
            path: "/healthz".into(),
            expected: hit(0),
        },
        // Known host, no rule for the path.
        Request {
            name: "miss",
            host,
            path: "/api/v2/other".into(),
            expected: None,
        },
    ]
}

fn paths_requests(n: usize) -> Vec<Request> {
    let i = n / 2;
    let hit = |rule| {
        Some(RouteHit {
            route: i,
            rule,
            matched: Some(0),
        })
    };
    vec![
        Request {
            name: "deep",
            host: "api.example.com".into(),
            path: format!("/api/v1/svc-{i}/items/42/details"),
            expected: hit(0),
        },
        Request {
            name: "exact",
            host: "api.example.com".into(),
            path: format!("/api/v1/svc-{i}/status"),
            expected: hit(1),
        },
        // Walks down to `/api/v1` and tries every header-match rule there.
        Request {
            name: "miss",
            host: "api.example.com".into(),
            path: "/api/v1/no-such-svc/items".into(),
            expected: None,
        },
    ]
}

fn bench_shape(
    c: &mut Criterion,
    shape: &str,
    config: fn(usize) -> RouteConfig,
    requests: fn(usize) -> Vec<Request>,
) {
    let mut group = c.benchmark_group(format!("lookup/{shape}"));
    let headers = HeaderMap::new();
    for n in SIZES {
        let (router, errors) = Router::new(&config(n));
        assert!(errors.is_empty(), "{errors:?}");
        for req in requests(n) {
            let head = RequestHead {
                host: &req.host,
                path: &req.path,
                query: None,
                method: &Method::GET,
                headers: &headers,
            };
            // A bench of the wrong answer is worthless.
            assert_eq!(
                router.lookup(&head),
                req.expected,
                "{shape}/{n}/{}",
                req.name
            );
            group.bench_with_input(BenchmarkId::new(req.name, n), &head, |b, head| {
                b.iter(|| router.lookup(black_box(head)))
            });
        }
    }
    group.finish();
}

fn lookup(c: &mut Criterion) {
    bench_shape(c, "hosts", hosts_config, hosts_requests);
    bench_shape(c, "paths", paths_config, paths_requests);
}

/// Compiling happens off the request path on every publish; worth watching.
fn build(c: &mut Criterion) {
    let mut group = c.benchmark_group("build");
    group.sample_size(10);
    let n = 10_000;
    let hosts = hosts_config(n);
    let paths = paths_config(n);
    group.bench_function(BenchmarkId::new("hosts", n), |b| {
        b.iter(|| Router::new(black_box(&hosts)))
    });
    group.bench_function(BenchmarkId::new("paths", n), |b| {
        b.iter(|| Router::new(black_box(&paths)))
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = lookup, build
}
criterion_main!(benches);
