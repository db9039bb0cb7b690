//! One table test per precedence rule. Each table is arranged so that the
//! rule under test has to overturn the tie-breakers (config order, source
//! age, names): a router that ignored the rule would return another hit.

use http::{HeaderMap, HeaderName, HeaderValue, Method};

use super::*;
use crate::model::{
    Action, Forward, HeaderMatch, QueryMatch, Route, RouteConfig, RouteMatch, Rule, SourceRef,
};

// === helpers ===

fn route(id: &str, hosts: &[&str], rules: Vec<Rule>) -> Route {
    let hostnames = hosts
        .iter()
        .map(|h| Hostname::parse(h).expect("test hostname"))
        .collect();
    Route::new(id, hostnames, rules).with_source(SourceRef {
        kind: "HTTPRoute".into(),
        namespace: "default".into(),
        name: id.into(),
        created: 0,
    })
}

fn with_source(mut route: Route, namespace: &str, name: &str, created: i64) -> Route {
    route.source.namespace = namespace.into();
    route.source.name = name.into();
    route.source.created = created;
    route
}

fn rule(matches: Vec<RouteMatch>) -> Rule {
    Rule {
        matches,
        ..Rule::new(Action::Forward(Forward::to(vec![])))
    }
}

fn path_match(path: PathMatch) -> RouteMatch {
    RouteMatch {
        path,
        ..RouteMatch::default()
    }
}

fn exact(p: &str) -> RouteMatch {
    path_match(PathMatch::Exact(p.into()))
}

fn prefix(p: &str) -> RouteMatch {
    path_match(PathMatch::Prefix(p.into()))
}

fn regex(p: &str) -> RouteMatch {
    path_match(PathMatch::RegularExpression(p.into()))
}

/// Builder methods for the non-path conditions of a match.
trait MatchExt {
    fn method(self, method: Method) -> Self;
    fn header(self, name: &'static str, value: &str) -> Self;
    fn header_regex(self, name: &'static str, pattern: &str) -> Self;
    fn query(self, name: &str, value: &str) -> Self;
    fn query_regex(self, name: &str, pattern: &str) -> Self;
}

impl MatchExt for RouteMatch {
    fn method(mut self, method: Method) -> Self {
        self.method = Some(method);
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push(HeaderMatch {
            name: HeaderName::from_static(name),
            value: ValueMatch::Exact(value.into()),
        });
        self
    }

    fn header_regex(mut self, name: &'static str, pattern: &str) -> Self {
        self.headers.push(HeaderMatch {
            name: HeaderName::from_static(name),
            value: ValueMatch::RegularExpression(pattern.into()),
        });
        self
    }

    fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push(QueryMatch {
            name: name.into(),
            value: ValueMatch::Exact(value.into()),
        });
        self
    }

    fn query_regex(mut self, name: &str, pattern: &str) -> Self {
        self.query.push(QueryMatch {
            name: name.into(),
            value: ValueMatch::RegularExpression(pattern.into()),
        });
        self
    }
}

fn router(routes: Vec<Route>) -> Router {
    let (router, errors) = Router::new(&RouteConfig::new(routes));
    assert_eq!(errors, vec![], "test config must compile");
    router
}

/// An owned request to borrow a [`RequestHead`] from.
struct Req {
    host: String,
    path: String,
    query: Option<String>,
    method: Method,
    headers: HeaderMap,
}

/// A GET for `host` and `path_and_query` (`/p?q=1`).
fn req(host: &str, path_and_query: &str) -> Req {
    let (path, query) = match path_and_query.split_once('?') {
        Some((p, q)) => (p, Some(q.to_owned())),
        None => (path_and_query, None),
    };
    Req {
        host: host.into(),
        path: path.into(),
        query,
        method: Method::GET,
        headers: HeaderMap::new(),
    }
}

impl Req {
    fn method(mut self, method: Method) -> Self {
        self.method = method;
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.append(
            HeaderName::from_static(name),
            HeaderValue::from_str(value).expect("test header value"),
        );
        self
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            host: &self.host,
            path: &self.path,
            query: self.query.as_deref(),
            method: &self.method,
            headers: &self.headers,
        }
    }
}

fn hit(route: usize, rule: usize, matched: usize) -> Option<RouteHit> {
    Some(RouteHit {
        route,
        rule,
        matched: Some(matched),
    })
}

/// A hit on a rule without matches.
fn hit_any(route: usize, rule: usize) -> Option<RouteHit> {
    Some(RouteHit {
        route,
        rule,
        matched: None,
    })
}

#[track_caller]
fn assert_table(router: &Router, cases: &[(Req, Option<RouteHit>)]) {
    for (req, expected) in cases {
        assert_eq!(
            router.lookup(&req.head()),
            *expected,
            "{} {}{}{} {:?}",
            req.method,
            req.host,
            req.path,
            req.query
                .as_deref()
                .map(|q| format!("?{q}"))
                .unwrap_or_default(),
            req.headers,
        );
    }
}

// === hosts ===

#[test]
fn hostname_exact_beats_wildcard() {
    // The wildcard route comes first and is older: only the host rule can
    // make the exact one win.
    let router = router(vec![
        with_source(
            route("wild", &["*.example.com"], vec![rule(vec![])]),
            "a",
            "a",
            1,
        ),
        with_source(
            route("exact", &["foo.example.com"], vec![rule(vec![])]),
            "z",
            "z",
            2,
        ),
    ]);
    assert_table(
        &router,
        &[
            (req("foo.example.com", "/"), hit_any(1, 0)),
            (req("bar.example.com", "/"), hit_any(0, 0)),
        ],
    );
}

#[test]
fn wildcard_matches_one_label_only() {
    let router = router(vec![route("wild", &["*.example.com"], vec![rule(vec![])])]);
    assert_table(
        &router,
        &[
            (req("a.example.com", "/"), hit_any(0, 0)),
            (req("a-b.example.com", "/x"), hit_any(0, 0)),
            (req("example.com", "/"), None),
            (req("a.b.example.com", "/"), None),
            (req(".example.com", "/"), None),
            (req("a.example.org", "/"), None),
        ],
    );
}

#[test]
fn any_depth_wildcard_matches_one_or_more_labels() {
    let router = router(vec![route("deep", &["**.example.com"], vec![rule(vec![])])]);
    assert_table(
        &router,
        &[
            (req("a.example.com", "/"), hit_any(0, 0)),
            (req("a.b.c.example.com", "/"), hit_any(0, 0)),
            (req("example.com", "/"), None),
            (req("a..example.com", "/"), None),
            (req("a.example.org", "/"), None),
        ],
    );
}

#[test]
fn longer_wildcard_suffix_wins() {
    // The shorter suffix is older and first in config: only suffix length can
    // make the longer one win.
    let router = router(vec![
        with_source(
            route("short", &["**.example.com"], vec![rule(vec![])]),
            "a",
            "a",
            1,
        ),
        with_source(
            route("long", &["**.b.example.com"], vec![rule(vec![])]),
            "z",
            "z",
            2,
        ),
    ]);
    assert_table(
        &router,
        &[
            (req("a.b.example.com", "/"), hit_any(1, 0)),
            (req("x.a.b.example.com", "/"), hit_any(1, 0)),
            (req("b.example.com", "/"), hit_any(0, 0)),
            (req("x.c.example.com", "/"), hit_any(0, 0)),
        ],
    );
}

#[test]
fn ingress_and_gateway_wildcards_share_one_label_hosts() {
    // An Ingress `*.example.com` (one label) and an HTTPRoute one (any depth)
    // on the same suffix: one-label hosts see both routes' rules, deeper
    // hosts only the HTTPRoute's.
    let router = router(vec![
        route(
            "ingress",
            &["*.example.com"],
            vec![rule(vec![prefix("/a")])],
        ),
        route(
            "gateway",
            &["**.example.com"],
            vec![rule(vec![prefix("/b")])],
        ),
    ]);
    assert_table(
        &router,
        &[
            (req("x.example.com", "/a"), hit(0, 0, 0)),
            (req("x.example.com", "/b"), hit(1, 0, 0)),
            (req("y.x.example.com", "/a"), None),
            (req("y.x.example.com", "/b"), hit(1, 0, 0)),
        ],
    );
}

#[test]
fn default_vhost_when_no_host_matches() {
    let router = router(vec![
        route(
            "named",
            &["example.com", "*.example.net"],
            vec![rule(vec![])],
        ),
        route("default", &[], vec![rule(vec![])]),
    ]);
    assert_table(
        &router,
        &[
            (req("example.com", "/"), hit_any(0, 0)),
            (req("a.example.net", "/"), hit_any(0, 0)),
            (req("other.com", "/"), hit_any(1, 0)),
            (req("example.net", "/"), hit_any(1, 0)),
            (req("", "/"), hit_any(1, 0)),
            (req(":8080", "/"), hit_any(1, 0)),
            (req("10.0.0.1", "/"), hit_any(1, 0)),
            (req("10.0.0.1:8080", "/"), hit_any(1, 0)),
            (req("[::1]:8080", "/"), hit_any(1, 0)),
        ],
    );
}

#[test]
fn no_fallthrough_to_default_vhost() {
    let router = router(vec![
        route(
            "exact",
            &["api.example.com"],
            vec![rule(vec![exact("/only")])],
        ),
        route("wild", &["*.example.com"], vec![rule(vec![prefix("/")])]),
        route("default", &[], vec![rule(vec![prefix("/")])]),
        route(
            "wild-only",
            &["*.example.org"],
            vec![rule(vec![exact("/only")])],
        ),
    ]);
    assert_table(
        &router,
        &[
            (req("api.example.com", "/only"), hit(0, 0, 0)),
            // Neither the wildcard nor the default virtual host answers for a
            // host that has its own virtual host.
            (req("api.example.com", "/other"), None),
            (req("www.example.com", "/other"), hit(1, 0, 0)),
            (req("www.example.org", "/other"), None),
            (req("unknown.test", "/other"), hit(2, 0, 0)),
        ],
    );
}

#[test]
fn routes_sharing_a_hostname_merge() {
    let router = router(vec![
        route("a", &["example.com"], vec![rule(vec![prefix("/a")])]),
        route(
            "b",
            &["example.com", "example.com"],
            vec![rule(vec![prefix("/b")])],
        ),
        route(
            "c",
            &["other.com", "*.example.com"],
            vec![rule(vec![prefix("/a")])],
        ),
    ]);
    assert_table(
        &router,
        &[
            (req("example.com", "/a/x"), hit(0, 0, 0)),
            (req("example.com", "/b/x"), hit(1, 0, 0)),
            (req("example.com", "/c"), None),
            (req("other.com", "/a"), hit(2, 0, 0)),
            (req("www.example.com", "/a"), hit(2, 0, 0)),
        ],
    );
}

#[test]
fn host_port_and_case_ignored() {
    let router = router(vec![
        route("exact", &["example.com"], vec![rule(vec![])]),
        route("wild", &["*.example.org"], vec![rule(vec![])]),
    ]);
    assert_table(
        &router,
        &[
            (req("example.com", "/"), hit_any(0, 0)),
            (req("Example.COM", "/"), hit_any(0, 0)),
            (req("example.com:8080", "/"), hit_any(0, 0)),
            (req("EXAMPLE.com:443", "/"), hit_any(0, 0)),
            (req("example.com.", "/"), hit_any(0, 0)),
            (req("Example.Com.:80", "/"), hit_any(0, 0)),
            (req("example.com:", "/"), hit_any(0, 0)),
            (req("WWW.Example.Org:8443", "/"), hit_any(1, 0)),
            (req("www.example.org.", "/"), hit_any(1, 0)),
            (req("example.co", "/"), None),
        ],
    );
}

#[test]
fn long_host_is_lowercased_without_panicking() {
    // Longer than the stack buffer: the lower-casing must fall back to the
    // heap and still match. `Hostname::parse` would reject this name, so the
    // route is built by hand.
    let long = format!("{}.com", "a".repeat(300));
    let mut r = route("long", &[], vec![rule(vec![])]);
    r.hostnames = vec![Hostname::Exact(long.clone())];
    let router = router(vec![r]);
    assert_table(
        &router,
        &[
            (req(&long.to_ascii_uppercase(), "/"), hit_any(0, 0)),
            (req(&long, "/"), hit_any(0, 0)),
            (req(&format!("B{long}"), "/"), None),
        ],
    );
}

#[test]
fn ipv6_host_literal() {
    let router = router(vec![
        route(
            "named",
            &["example.com", "*.1"],
            vec![rule(vec![prefix("/named")])],
        ),
        route("default", &[], vec![rule(vec![prefix("/default")])]),
    ]);
    assert_table(
        &router,
        &[
            (req("[::1]:8080", "/default"), hit(1, 0, 0)),
            (req("[::1]", "/default"), hit(1, 0, 0)),
            (req("[2001:db8::1]:443", "/default"), hit(1, 0, 0)),
            // Not valid in a Host header, but must not be taken for a name
            // with a port.
            (req("::1", "/default"), hit(1, 0, 0)),
            (req("[::1]:8080", "/named"), None),
        ],
    );
}

#[test]
fn ipv4_host_literal_is_not_a_name() {
    // `*.0.0.1` parses as a hostname; an IP literal must still not match it.
    let router = router(vec![
        route("wild", &["*.0.0.1"], vec![rule(vec![prefix("/")])]),
        route("default", &[], vec![rule(vec![exact("/d")])]),
    ]);
    assert_table(
        &router,
        &[
            (req("127.0.0.1:80", "/d"), hit(1, 0, 0)),
            (req("127.0.0.1:80", "/x"), None),
            (req("a.0.0.1", "/x"), hit(0, 0, 0)),
        ],
    );
}

#[test]
fn empty_router_matches_nothing() {
    let (router, errors) = Router::new(&RouteConfig::default());
    assert_eq!(errors, vec![]);
    assert_table(
        &router,
        &[(req("example.com", "/"), None), (req("", "/"), None)],
    );
    assert_eq!(Router::default().lookup(&req("", "/").head()), None);
}

// === paths ===

#[test]
fn exact_path_beats_prefix() {
    // The prefix match is otherwise more specific (method, header, query) and
    // comes first.
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![
                prefix("/foo")
                    .method(Method::GET)
                    .header("x-a", "1")
                    .query("q", "1"),
            ]),
            rule(vec![exact("/foo")]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/foo?q=1").header("x-a", "1"), hit(0, 1, 0)),
            (req("h", "/foo/?q=1").header("x-a", "1"), hit(0, 0, 0)),
            (req("h", "/foo/bar?q=1").header("x-a", "1"), hit(0, 0, 0)),
            (req("h", "/foo"), hit(0, 1, 0)),
        ],
    );
}

#[test]
fn exact_path_is_byte_equal() {
    let router = router(vec![route("r", &[], vec![rule(vec![exact("/a/b")])])]);
    assert_table(
        &router,
        &[
            (req("h", "/a/b"), hit(0, 0, 0)),
            (req("h", "/a/b/"), None),
            (req("h", "/A/b"), None),
            (req("h", "/a%2Fb"), None),
            (req("h", "/a/b?x=1"), hit(0, 0, 0)),
        ],
    );
}

#[test]
fn exact_path_falls_back_to_prefix_when_conditions_fail() {
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![exact("/foo").method(Method::POST)]),
            rule(vec![prefix("/")]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/foo").method(Method::POST), hit(0, 0, 0)),
            (req("h", "/foo"), hit(0, 1, 0)),
        ],
    );
}

#[test]
fn longest_prefix_wins() {
    // Shorter prefixes come first and carry more conditions.
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![prefix("/").method(Method::GET).header("x-a", "1")]),
            rule(vec![prefix("/foo").method(Method::GET)]),
            rule(vec![prefix("/foo/bar/")]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/foo/bar/baz").header("x-a", "1"), hit(0, 2, 0)),
            (req("h", "/foo/bar").header("x-a", "1"), hit(0, 2, 0)),
            (req("h", "/foo/barbaz").header("x-a", "1"), hit(0, 1, 0)),
            (req("h", "/foo/baz").header("x-a", "1"), hit(0, 1, 0)),
            (req("h", "/other").header("x-a", "1"), hit(0, 0, 0)),
            // Longest prefix does not hold: fall back to shorter ones.
            (
                req("h", "/foo/x").method(Method::POST).header("x-a", "1"),
                None,
            ),
            (req("h", "/foo/bar/x").method(Method::POST), hit(0, 2, 0)),
        ],
    );
}

#[test]
fn prefix_matches_by_segment() {
    let router = router(vec![
        route("foo", &["foo.test"], vec![rule(vec![prefix("/foo")])]),
        route("slash", &["slash.test"], vec![rule(vec![prefix("/bar/")])]),
        route("root", &["root.test"], vec![rule(vec![prefix("/")])]),
        route("deep", &["deep.test"], vec![rule(vec![prefix("/a/b")])]),
    ]);
    assert_table(
        &router,
        &[
            (req("foo.test", "/foo"), hit(0, 0, 0)),
            (req("foo.test", "/foo/"), hit(0, 0, 0)),
            (req("foo.test", "/foo/bar"), hit(0, 0, 0)),
            (req("foo.test", "/foo//bar"), hit(0, 0, 0)),
            (req("foo.test", "/foobar"), None),
            (req("foo.test", "/fo"), None),
            (req("foo.test", "/"), None),
            (req("foo.test", "/Foo"), None),
            // A trailing slash in the prefix is ignored.
            (req("slash.test", "/bar"), hit(1, 0, 0)),
            (req("slash.test", "/bar/"), hit(1, 0, 0)),
            (req("slash.test", "/bar/x"), hit(1, 0, 0)),
            (req("slash.test", "/barx"), None),
            (req("root.test", "/"), hit(2, 0, 0)),
            (req("root.test", "//"), hit(2, 0, 0)),
            (req("root.test", "/anything/at/all"), hit(2, 0, 0)),
            (req("root.test", "*"), hit(2, 0, 0)),
            (req("deep.test", "/a/b/c"), hit(3, 0, 0)),
            (req("deep.test", "/a/b"), hit(3, 0, 0)),
            (req("deep.test", "/a"), None),
            (req("deep.test", "/a/bc"), None),
        ],
    );
}

#[test]
fn empty_segments_are_literal() {
    // Slashes are not merged: `//x` is the segments "" and "x".
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![prefix("/a/b")]),
            rule(vec![prefix("//x")]),
            rule(vec![prefix("/")]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/a//b"), hit(0, 2, 0)),
            (req("h", "/a/b//"), hit(0, 0, 0)),
            (req("h", "//x"), hit(0, 1, 0)),
            (req("h", "//x/y"), hit(0, 1, 0)),
            (req("h", "/x"), hit(0, 2, 0)),
            (req("h", "//"), hit(0, 2, 0)),
            (req("h", "/"), hit(0, 2, 0)),
        ],
    );
}

#[test]
fn rule_without_matches_is_prefix_root() {
    // Ranks as `Prefix("/")`: loses to any longer prefix, beats a regex.
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![]),
            rule(vec![prefix("/foo")]),
            rule(vec![regex("/bar")]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/foo/x"), hit(0, 1, 0)),
            (req("h", "/bar"), hit_any(0, 0)),
            (req("h", "/"), hit_any(0, 0)),
        ],
    );
}

#[test]
fn prefix_beats_regex() {
    let router = router(vec![
        route(
            "both",
            &["both.test"],
            vec![
                rule(vec![
                    regex("/foo/.*").method(Method::GET).header("x-a", "1"),
                ]),
                rule(vec![prefix("/")]),
            ],
        ),
        route(
            "regex-only",
            &["regex.test"],
            vec![rule(vec![prefix("/bar")]), rule(vec![regex("/foo/.*")])],
        ),
    ]);
    assert_table(
        &router,
        &[
            (req("both.test", "/foo/x").header("x-a", "1"), hit(0, 1, 0)),
            (req("regex.test", "/foo/x"), hit(1, 1, 0)),
            (req("regex.test", "/bar/x"), hit(1, 0, 0)),
            (req("regex.test", "/baz"), None),
        ],
    );
}

#[test]
fn longer_regex_wins() {
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![regex("/a.*").method(Method::GET)]),
            rule(vec![regex("/a/b/.*")]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/a/b/c"), hit(0, 1, 0)),
            (req("h", "/a/x"), hit(0, 0, 0)),
            (req("h", "/a/b/c").method(Method::POST), hit(0, 1, 0)),
            (req("h", "/a/x").method(Method::POST), None),
        ],
    );
}

#[test]
fn regex_is_whole_path() {
    let router = router(vec![
        route("plain", &["plain.test"], vec![rule(vec![regex("/foo")])]),
        // Alternation must be anchored as a whole, not just its ends.
        route("alt", &["alt.test"], vec![rule(vec![regex("/a|/b")])]),
    ]);
    assert_table(
        &router,
        &[
            (req("plain.test", "/foo"), hit(0, 0, 0)),
            (req("plain.test", "/foo/bar"), None),
            (req("plain.test", "/x/foo"), None),
            (req("alt.test", "/a"), hit(1, 0, 0)),
            (req("alt.test", "/b"), hit(1, 0, 0)),
            (req("alt.test", "/ab"), None),
            (req("alt.test", "/x/b"), None),
        ],
    );
}

#[test]
fn bad_regex_skips_only_that_rule() {
    let config = RouteConfig::new(vec![
        route(
            "r",
            &[],
            vec![
                rule(vec![prefix("/"), regex("/api/(")]),
                rule(vec![prefix("/api")]),
                rule(vec![prefix("/h").header_regex("x-a", "[")]),
                rule(vec![prefix("/q").query_regex("q", "a{99999}")]),
                rule(vec![prefix("/")]),
            ],
        ),
        route(
            "other",
            &["other.test"],
            vec![rule(vec![prefix("no-slash")])],
        ),
    ]);
    let (router, errors) = Router::new(&config);
    let fields: Vec<_> = errors
        .iter()
        .map(|e| (e.route_id.as_str(), e.rule, e.field.as_str()))
        .collect();
    assert_eq!(
        fields,
        vec![
            ("r", 0, "matches[1].path"),
            ("r", 2, "matches[0].headers[0].value"),
            ("r", 3, "matches[0].query[0].value"),
            ("other", 0, "matches[0].path"),
        ]
    );
    assert!(
        errors[0]
            .to_string()
            .starts_with("route r: rules[0]: matches[1].path: "),
        "{}",
        errors[0]
    );
    assert_table(
        &router,
        &[
            (req("h", "/api/x"), hit(0, 1, 0)),
            (req("h", "/h").header("x-a", "["), hit(0, 4, 0)),
            (req("h", "/q?q=a"), hit(0, 4, 0)),
            (req("h", "/"), hit(0, 4, 0)),
            (req("other.test", "/no-slash"), None),
        ],
    );
}

// === method, headers, query ===

#[test]
fn method_beats_no_method() {
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![prefix("/").header("x-a", "1")]),
            rule(vec![prefix("/").method(Method::POST)]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (
                req("h", "/").method(Method::POST).header("x-a", "1"),
                hit(0, 1, 0),
            ),
            (req("h", "/").header("x-a", "1"), hit(0, 0, 0)),
            (req("h", "/"), None),
        ],
    );
}

#[test]
fn more_headers_win() {
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![prefix("/").header("x-a", "1").query("q", "1")]),
            rule(vec![prefix("/").header("x-a", "1").header("x-b", "2")]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (
                req("h", "/?q=1").header("x-a", "1").header("x-b", "2"),
                hit(0, 1, 0),
            ),
            (req("h", "/?q=1").header("x-a", "1"), hit(0, 0, 0)),
            (req("h", "/").header("x-a", "1").header("x-b", "3"), None),
        ],
    );
}

#[test]
fn repeated_header_name_counts_once() {
    // Only the first entry for a name counts, for matching and for rank: the
    // second rule has one effective header match, not two.
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![prefix("/").header("x-a", "1").header("x-b", "1")]),
            rule(vec![prefix("/").header("x-a", "1").header("x-a", "2")]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/").header("x-a", "1"), hit(0, 1, 0)),
            (req("h", "/").header("x-a", "2"), None),
            (
                req("h", "/").header("x-a", "1").header("x-b", "1"),
                hit(0, 0, 0),
            ),
        ],
    );
}

#[test]
fn repeated_query_name_counts_once() {
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![prefix("/").query("a", "1").query("b", "1")]),
            rule(vec![prefix("/").query("a", "1").query("a", "2")]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/?a=1"), hit(0, 1, 0)),
            (req("h", "/?a=2"), None),
            (req("h", "/?a=1&b=1"), hit(0, 0, 0)),
        ],
    );
}

#[test]
fn header_value_exact_any_occurrence() {
    let router = router(vec![route(
        "r",
        &[],
        vec![rule(vec![prefix("/").header("x-env", "canary")])],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/").header("x-env", "canary"), hit(0, 0, 0)),
            (
                req("h", "/")
                    .header("x-env", "prod")
                    .header("x-env", "canary"),
                hit(0, 0, 0),
            ),
            (req("h", "/").header("x-env", "Canary"), None),
            (req("h", "/").header("x-env", "canary, prod"), None),
            (req("h", "/").header("x-other", "canary"), None),
        ],
    );
}

#[test]
fn header_value_regex() {
    let router = router(vec![route(
        "r",
        &[],
        vec![rule(vec![prefix("/").header_regex("x-version", "v[0-9]+")])],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/").header("x-version", "v12"), hit(0, 0, 0)),
            (req("h", "/").header("x-version", "xv12"), None),
            (req("h", "/").header("x-version", "v12x"), None),
            (
                req("h", "/")
                    .header("x-version", "old")
                    .header("x-version", "v3"),
                hit(0, 0, 0),
            ),
            (req("h", "/"), None),
        ],
    );
}

#[test]
fn more_query_params_win() {
    let router = router(vec![route(
        "r",
        &[],
        vec![
            rule(vec![prefix("/").query("a", "1")]),
            rule(vec![prefix("/").query("a", "1").query("b", "2")]),
        ],
    )]);
    assert_table(
        &router,
        &[
            (req("h", "/?a=1&b=2"), hit(0, 1, 0)),
            (req("h", "/?b=2&a=1"), hit(0, 1, 0)),
            (req("h", "/?a=1&b=3"), hit(0, 0, 0)),
            (req("h", "/?a=2&b=2"), None),
            (req("h", "/"), None),
        ],
    );
}

#[test]
fn query_param_percent_decoded() {
    let router = router(vec![
        route(
            "r",
            &["decode.test"],
            vec![rule(vec![prefix("/").query("q", "a b/c")])],
        ),
        route(
            "flag",
            &["flag.test"],
            vec![rule(vec![prefix("/").query("flag", "")])],
        ),
        route(
            "regex",
            &["regex.test"],
            vec![rule(vec![prefix("/").query_regex("id", "[0-9]+")])],
        ),
    ]);
    assert_table(
        &router,
        &[
            (req("decode.test", "/?q=a%20b%2Fc"), hit(0, 0, 0)),
            (req("decode.test", "/?q=a+b%2fc"), hit(0, 0, 0)),
            (req("decode.test", "/?%71=a+b/c"), hit(0, 0, 0)),
            (req("decode.test", "/?x=1&&q=a%20b/c&"), hit(0, 0, 0)),
            (req("decode.test", "/?q=a%2"), None),
            (req("decode.test", "/?Q=a+b/c"), None),
            // The first occurrence of a name is the one compared.
            (req("decode.test", "/?q=x&q=a+b/c"), None),
            (req("decode.test", "/?q=a+b/c&q=x"), hit(0, 0, 0)),
            (req("flag.test", "/?flag"), hit(1, 0, 0)),
            (req("flag.test", "/?flag="), hit(1, 0, 0)),
            (req("flag.test", "/?flag=1"), None),
            (req("flag.test", "/?flags"), None),
            (req("regex.test", "/?id=%31%32"), hit(2, 0, 0)),
            (req("regex.test", "/?id=12a"), None),
        ],
    );
}

#[test]
fn percent_decode_keeps_invalid_escapes() {
    for (raw, decoded) in [
        ("plain", &b"plain"[..]),
        ("a%20b", b"a b"),
        ("a+b", b"a b"),
        ("%41%4a%4A", b"AJJ"),
        ("100%", b"100%"),
        ("%zz%4", b"%zz%4"),
        ("%%41", b"%A"),
        ("%ff", b"\xff"),
    ] {
        assert_eq!(&*percent_decode(raw), decoded, "{raw:?}");
    }
}

// === tie-breakers ===

#[test]
fn oldest_source_wins_tie() {
    // The newer route comes first in config and sorts first by name.
    let router = router(vec![
        with_source(
            route("new", &["example.com"], vec![rule(vec![prefix("/")])]),
            "a",
            "a",
            200,
        ),
        with_source(
            route("old", &["example.com"], vec![rule(vec![prefix("/")])]),
            "z",
            "z",
            100,
        ),
    ]);
    assert_table(&router, &[(req("example.com", "/x"), hit(1, 0, 0))]);
}

#[test]
fn namespace_name_breaks_tie() {
    let router = router(vec![
        with_source(
            route("b-a", &["ns.test"], vec![rule(vec![prefix("/")])]),
            "b",
            "a",
            1,
        ),
        with_source(
            route("a-z", &["ns.test"], vec![rule(vec![prefix("/")])]),
            "a",
            "z",
            1,
        ),
        with_source(
            route("c-y", &["name.test"], vec![rule(vec![prefix("/")])]),
            "c",
            "y",
            1,
        ),
        with_source(
            route("c-x", &["name.test"], vec![rule(vec![prefix("/")])]),
            "c",
            "x",
            1,
        ),
    ]);
    assert_table(
        &router,
        &[
            (req("ns.test", "/"), hit(1, 0, 0)),
            (req("name.test", "/"), hit(3, 0, 0)),
        ],
    );
}

#[test]
fn rule_order_breaks_tie() {
    let router = router(vec![
        route(
            "rules",
            &["rules.test"],
            vec![rule(vec![prefix("/")]), rule(vec![prefix("/")])],
        ),
        route(
            "matches",
            &["matches.test"],
            vec![rule(vec![
                prefix("/").query("x", "1"),
                prefix("/").query("y", "1"),
            ])],
        ),
        // Same source twice: config order decides.
        route(
            "same",
            &["same.test"],
            vec![rule(vec![exact("/b")]), rule(vec![prefix("/")])],
        ),
        route("same", &["same.test"], vec![rule(vec![prefix("/")])]),
    ]);
    assert_table(
        &router,
        &[
            (req("rules.test", "/"), hit(0, 0, 0)),
            (req("matches.test", "/?y=1&x=1"), hit(1, 0, 0)),
            (req("matches.test", "/?y=1"), hit(1, 0, 1)),
            (req("same.test", "/a"), hit(2, 1, 0)),
        ],
    );
}

#[test]
fn match_rank_orders_like_gateway_api() {
    // The ordering itself, from most to least specific.
    let rank = |path, method, headers, query| MatchRank {
        path,
        method,
        headers,
        query,
    };
    let descending = [
        rank(PathRank::Exact, false, 0, 0),
        rank(PathRank::Prefix(5), false, 0, 0),
        rank(PathRank::Prefix(4), true, 3, 3),
        rank(PathRank::Prefix(4), true, 0, 0),
        rank(PathRank::Prefix(4), false, 2, 0),
        rank(PathRank::Prefix(4), false, 1, 9),
        rank(PathRank::Prefix(4), false, 1, 0),
        rank(PathRank::Prefix(1), false, 0, 0),
        rank(PathRank::Regex(100), true, 9, 9),
        rank(PathRank::Regex(2), false, 0, 0),
    ];
    for pair in descending.windows(2) {
        assert!(pair[0] > pair[1], "{:?} > {:?}", pair[0], pair[1]);
    }
}

// === helpers for the proxy ===

#[test]
fn normalized_prefix_strips_trailing_slashes() {
    for (prefix, normalized) in [
        ("/", "/"),
        ("//", "/"),
        ("/foo", "/foo"),
        ("/foo/", "/foo"),
        ("/foo//", "/foo"),
        ("/foo/bar/", "/foo/bar"),
        ("", ""),
    ] {
        assert_eq!(normalized_prefix(prefix), normalized, "{prefix:?}");
    }
}

#[test]
fn replace_prefix_match_follows_gateway_api() {
    // The table from the Gateway API `HTTPPathModifier` documentation, plus
    // the root prefix.
    for (path, prefix, replacement, rewritten) in [
        ("/foo/bar", "/foo", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo", "/xyz/", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz", "/xyz/bar"),
        ("/foo/bar", "/foo/", "/xyz/", "/xyz/bar"),
        ("/foo", "/foo", "/xyz", "/xyz"),
        ("/foo/", "/foo", "/xyz", "/xyz/"),
        ("/foo/bar", "/foo", "", "/bar"),
        ("/foo/", "/foo", "", "/"),
        ("/foo", "/foo", "", "/"),
        ("/foo/", "/foo", "/", "/"),
        ("/foo", "/foo", "/", "/"),
        ("/bar", "/", "/xyz", "/xyz/bar"),
        ("/bar", "/", "/", "/bar"),
        ("/other", "/foo", "/xyz", "/other"),
    ] {
        assert_eq!(
            replace_prefix_match(path, prefix, replacement),
            rewritten,
            "{path} {prefix} {replacement}"
        );
    }
}

// === scale ===

#[test]
fn ten_thousand_routes() {
    const N: usize = 10_000;
    let mut routes = Vec::with_capacity(2 * N + 1);
    // Many virtual hosts, a few rules each.
    for i in 0..N {
        routes.push(route(
            &format!("host-{i}"),
            &[&format!("svc-{i}.example.com")],
            vec![
                rule(vec![exact("/healthz")]),
                rule(vec![prefix("/api/v1/items")]),
                rule(vec![prefix("/").method(Method::GET)]),
            ],
        ));
    }
    // Many paths under one virtual host.
    for i in 0..N {
        routes.push(route(
            &format!("path-{i}"),
            &["api.example.com"],
            vec![
                rule(vec![prefix(&format!("/api/v1/svc-{i}/items"))]),
                rule(vec![exact(&format!("/api/v1/svc-{i}/status"))]),
            ],
        ));
    }
    routes.push(route(
        "canary",
        &["api.example.com"],
        vec![rule(vec![prefix("/api/v1").header("x-canary", "1")])],
    ));
    let router = router(routes);

    let mut cases = Vec::new();
    for i in [0, 1, 4_999, 9_999] {
        let host = format!("svc-{i}.example.com");
        cases.push((req(&host, "/healthz"), hit(i, 0, 0)));
        cases.push((req(&host, "/api/v1/items/7"), hit(i, 1, 0)));
        cases.push((req(&host, "/api/v1/itemsx"), hit(i, 2, 0)));
        cases.push((req(&host, "/x").method(Method::POST), None));

        let p = N + i;
        cases.push((
            req(
                "api.example.com",
                &format!("/api/v1/svc-{i}/items/42/details"),
            ),
            hit(p, 0, 0),
        ));
        cases.push((
            req("api.example.com", &format!("/api/v1/svc-{i}/status")),
            hit(p, 1, 0),
        ));
        cases.push((
            req("api.example.com", &format!("/api/v1/svc-{i}/status/x")),
            None,
        ));
        cases.push((
            req("api.example.com", &format!("/api/v1/svc-{i}/status/x")).header("x-canary", "1"),
            hit(2 * N, 0, 0),
        ));
    }
    cases.push((req("svc-10000.example.com", "/"), None));
    cases.push((req("api.example.com", "/api/v2"), None));
    assert_table(&router, &cases);
}

#[test]
fn router_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + 'static>() {}
    assert_send_sync::<Router>();
}

// === carrying virtual hosts over ===

/// A host whose routes are the previous build's very objects keeps that
/// build's index, and its hits name the new config's positions; an
/// edited host, or one whose routes are not vouched for, is built anew.
#[test]
fn a_host_whose_routes_are_the_same_objects_keeps_its_index() {
    let a = Arc::new(route("a", &["a.example"], vec![rule(vec![prefix("/")])]));
    let b = Arc::new(route(
        "b",
        &["b.example", "c.example"],
        vec![rule(vec![prefix("/b")])],
    ));
    let (r1, errors) = Router::for_routes(&[Arc::clone(&a), Arc::clone(&b)]);
    assert_eq!(errors, vec![]);
    let alive: std::collections::HashSet<usize> = [&a, &b].map(|r| Arc::as_ptr(r) as usize).into();
    let edited = Arc::new(route("a", &["a.example"], vec![rule(vec![prefix("/a")])]));
    // Reordered: b now comes first.
    let routes = [Arc::clone(&b), edited];
    let (r2, errors) = Router::carrying(&routes, Some(&r1), &|x| alive.contains(&x));
    assert_eq!(errors, vec![]);
    let vhost = |r: &Router, host: &str| Arc::clone(&r.vhosts[r.exact_hosts[host.as_bytes()]]);
    for host in ["b.example", "c.example"] {
        assert!(Arc::ptr_eq(&vhost(&r1, host), &vhost(&r2, host)), "{host}");
        assert_eq!(r2.lookup(&req(host, "/b/x").head()), hit(0, 0, 0), "{host}");
    }
    assert!(!Arc::ptr_eq(
        &vhost(&r1, "a.example"),
        &vhost(&r2, "a.example")
    ));
    assert_eq!(r2.lookup(&req("a.example", "/a/x").head()), hit(1, 0, 0));
    assert_eq!(r2.lookup(&req("a.example", "/x").head()), None);

    let (r3, _) = Router::carrying(&routes, Some(&r1), &|_| false);
    assert!(!Arc::ptr_eq(
        &vhost(&r1, "b.example"),
        &vhost(&r3, "b.example")
    ));
    assert_eq!(r3.lookup(&req("b.example", "/b").head()), hit(0, 0, 0));
}

/// A host gaining or losing a route is built anew, even when every route
/// it keeps is the same object.
#[test]
fn a_host_with_a_route_more_or_less_is_built_anew() {
    let a = Arc::new(route("a", &["a.example"], vec![rule(vec![prefix("/a")])]));
    let b = Arc::new(route("b", &["a.example"], vec![rule(vec![prefix("/b")])]));
    let alive: std::collections::HashSet<usize> = [&a, &b].map(|r| Arc::as_ptr(r) as usize).into();
    let (both, _) = Router::for_routes(&[Arc::clone(&a), Arc::clone(&b)]);
    let (one, _) = Router::carrying(&[Arc::clone(&a)], Some(&both), &|x| alive.contains(&x));
    assert_eq!(one.lookup(&req("a.example", "/b").head()), None);
    assert_eq!(one.lookup(&req("a.example", "/a").head()), hit(0, 0, 0));
    let (again, _) = Router::carrying(&[Arc::clone(&a), Arc::clone(&b)], Some(&one), &|x| {
        alive.contains(&x)
    });
    assert_eq!(again.lookup(&req("a.example", "/b").head()), hit(1, 0, 0));
}
