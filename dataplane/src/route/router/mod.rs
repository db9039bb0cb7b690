//! Route lookup: compiles a [`RouteConfig`] into an index once, then finds the
//! rule each request follows.
//!
//! This module is pure (no I/O, no async, no metrics) so that precedence can
//! be pinned down by table tests, one per rule (see `tests.rs`). Semantics are
//! those of Kubernetes Ingress and Gateway API `HTTPRoute`:
//!
//! 1. The request host selects one virtual host: an exact hostname, else the
//!    longest matching wildcard suffix, else the default virtual host made of
//!    the routes without hostnames. An Ingress wildcard covers exactly one
//!    extra label and a Gateway API one any number; where both name the same
//!    suffix they share one virtual host for one-label hosts. There is no fallthrough: when
//!    the selected virtual host has no matching rule, the lookup misses.
//! 2. Within it, the matching (rule, match) with the greatest [`MatchRank`]
//!    wins (path kind and length, then method, then number of header matches,
//!    then number of query matches); true ties go to the oldest source, then
//!    namespace and name, then config order.
//!
//! Lookup cost does not grow with the number of routes: hosts and exact paths
//! are hash lookups, prefixes a walk down a path-segment trie, and every
//! candidate list is sorted at build time, so the first candidate whose
//! remaining conditions hold is the answer. Only regular-expression paths are
//! tried one by one, and only in virtual hosts that have them, after exact and
//! prefix paths found nothing.

use foldhash::{HashMap, HashMapExt};
use std::borrow::{Borrow, Cow};
use std::cmp::Reverse;
use std::net::Ipv4Addr;
use std::sync::Arc;

use http::{HeaderMap, HeaderName, Method};
use regex::bytes::Regex;

use crate::headers::hex;
use crate::model::{self, Hostname, PathMatch, RouteConfig, RouteMatch, ValueMatch};

use self::trie::PrefixTrie;

#[cfg(test)]
mod tests;
mod trie;

/// Hosts up to this length are lower-cased on the stack. DNS names are at most
/// 253 bytes, so only hosts that cannot match a valid hostname allocate.
const HOST_BUF_LEN: usize = 256;

/// A compiled [`RouteConfig`]: immutable, cheap to look up in, built off the
/// request path.
#[derive(Clone, Debug, Default)]
pub struct Router {
    /// Shared with the next build wherever that build's routes for the
    /// host are the same objects ([`Router::carrying`]).
    vhosts: Vec<Arc<VirtualHost>>,
    /// Per virtual host, the config index of each of its routes, by the
    /// host's own route number (which its candidates' hits hold): all a
    /// carried host needs anew.
    route_index: Vec<Box<[usize]>>,
    /// Lower-case hostname, without trailing dot, to an index in `vhosts`.
    exact_hosts: HashMap<Box<[u8]>, usize>,
    /// Lower-case wildcard suffix (`example.com` for `*.example.com`): the
    /// virtual host for names one label longer. Holds both kinds of wildcard.
    wildcard_hosts: HashMap<Box<[u8]>, usize>,
    /// Suffixes of any-depth wildcards only: the virtual host for names two or
    /// more labels longer.
    deep_wildcard_hosts: HashMap<Box<[u8]>, usize>,
    default_vhost: Option<usize>,
}

/// Borrowed view of what routing needs from a request.
#[derive(Clone, Copy, Debug)]
pub struct RequestHead<'a> {
    /// Host header or `:authority`; may carry a port (`Example.com:8080`,
    /// `[::1]:80`), any case, and a trailing dot.
    pub host: &'a str,
    /// Path only, no query, as received (no percent-decoding).
    pub path: &'a str,
    /// Raw query string without `?`.
    pub query: Option<&'a str>,
    pub method: &'a Method,
    pub headers: &'a HeaderMap,
}

/// Which rule matched: indexes into the [`RouteConfig`] the [`Router`] was
/// built from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RouteHit {
    /// Index in `config.routes`.
    pub route: usize,
    /// Index in `config.routes[route].rules`.
    pub rule: usize,
    /// Index in `rule.matches`; `None` when the rule has no matches, which
    /// means an implicit `Prefix("/")`.
    pub matched: Option<usize>,
}

/// A rule that could not be compiled; the rule is left out, everything else
/// is served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("route {route_id}: rules[{rule}]: {field}: {reason}")]
pub struct RouteError {
    pub route_id: String,
    /// Index in the route's `rules`.
    pub rule: usize,
    /// The offending field within the rule, e.g. `matches[0].path`.
    pub field: String,
    pub reason: String,
}

/// The rules of one virtual host, indexed by path.
#[derive(Clone, Debug, Default)]
struct VirtualHost {
    /// The addresses of the routes it was built from, in config order
    /// (compared only while those routes are alive: see
    /// [`Router::carrying`]).
    routes: Box<[usize]>,
    /// Every compiled (rule, match) of its routes; `hit.route` is the
    /// host's own route number.
    candidates: Box<[Candidate]>,
    /// Exact path to candidate ids, best first.
    exact_paths: HashMap<Box<str>, Box<[usize]>>,
    prefixes: PrefixTrie,
    /// Regular-expression candidates, best first.
    regexes: Box<[usize]>,
}

/// One compiled (rule, match): the unit precedence orders.
#[derive(Clone, Debug)]
struct Candidate {
    hit: RouteHit,
    rank: MatchRank,
    path: PathCondition,
    method: Option<Method>,
    /// At most one per header name: Gateway API says only the first counts.
    headers: Box<[HeaderCondition]>,
    /// At most one per parameter name, likewise.
    query: Box<[QueryCondition]>,
}

#[derive(Clone, Debug)]
enum PathCondition {
    Exact(Box<str>),
    /// Normalised by [`normalized_prefix`].
    Prefix(Box<str>),
    Regex(Regex),
}

#[derive(Clone, Debug)]
struct HeaderCondition {
    name: HeaderName,
    value: ValueCondition,
}

#[derive(Clone, Debug)]
struct QueryCondition {
    name: Box<str>,
    value: ValueCondition,
}

#[derive(Clone, Debug)]
enum ValueCondition {
    Exact(Box<[u8]>),
    Regex(Regex),
}

/// How specific a match is, as Gateway API ranks `HTTPRoute` matches: greater
/// takes precedence. Fields are in the order of the spec's rules, so the
/// derived `Ord` is the rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct MatchRank {
    path: PathRank,
    /// A match with a method beats one without.
    method: bool,
    /// More header matches win.
    headers: usize,
    /// More query-parameter matches win.
    query: usize,
}

/// Variant order is precedence: any exact path beats any prefix, any prefix
/// beats any regular expression.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PathRank {
    /// Pattern length in bytes: the longer pattern is taken as more specific.
    Regex(usize),
    /// Normalised prefix length in bytes.
    Prefix(usize),
    Exact,
}

/// What decides between candidates of equal [`MatchRank`]: the oldest source,
/// then namespace and name, then config order (route, rule, match). Smaller
/// wins, and no two candidates compare equal.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct TieBreak<'c> {
    created: i64,
    namespace: &'c str,
    name: &'c str,
    route: usize,
    rule: usize,
    matched: usize,
}

/// Ascending order is precedence order: the greatest rank, then the
/// tie-breakers.
type Precedence<'c> = (Reverse<MatchRank>, TieBreak<'c>);

/// A field of a rule that failed to compile, before it is attributed to a
/// route.
struct FieldError {
    field: String,
    reason: String,
}

/// Strips trailing slashes from a `Prefix` path match, keeping a lone `/`:
/// `/foo/` and `/foo` are the same prefix, and `///` is `/`.
///
/// This is the prefix a request was matched against, so it is also the part
/// of the path that `ReplacePrefixMatch` replaces; see [`replace_prefix_match`].
pub fn normalized_prefix(prefix: &str) -> &str {
    let trimmed = prefix.trim_end_matches('/');
    if trimmed.is_empty() {
        // All slashes (or empty): keep at most one.
        &prefix[..prefix.len().min(1)]
    } else {
        trimmed
    }
}

/// Applies Gateway API's `ReplacePrefixMatch`: the part of `path` matched by
/// the `Prefix` match `prefix` becomes `replacement`, honouring segment
/// boundaries (`/foo/bar` with prefix `/foo` and replacement `/xyz` is
/// `/xyz/bar`; with replacement `/` or empty it is `/bar`).
///
/// `prefix` is the path of the match in [`RouteHit::matched`], or `/` when
/// that is `None`. Gateway API only allows `ReplacePrefixMatch` with a
/// `Prefix` match. `path` is expected to be one the prefix matched; if it
/// does not start with the normalised prefix it is returned unchanged.
pub fn replace_prefix_match(path: &str, prefix: &str, replacement: &str) -> String {
    let prefix = normalized_prefix(prefix);
    // `/` matches at the root: the whole path, leading slash included, is the
    // remainder, so that `/bar` with replacement `/xyz` becomes `/xyz/bar`.
    let rest = if prefix == "/" {
        // Nothing of a bare "/" is left to keep: `/` becomes `/xyz`, not `/xyz/`.
        Some(if path == "/" { "" } else { path })
    } else {
        path.strip_prefix(prefix)
    };
    let Some(rest) = rest else {
        return path.to_owned();
    };
    let replacement = replacement.trim_end_matches('/');
    let mut out = String::with_capacity(replacement.len() + rest.len());
    out.push_str(replacement);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    out
}

// === impl Router ===

impl Router {
    /// Compiles `config`. A rule that does not compile (a bad regular
    /// expression, a path that does not start with `/`) is left out and
    /// reported; everything else is served.
    pub fn new(config: &RouteConfig) -> (Router, Vec<RouteError>) {
        Self::for_routes(&config.routes)
    }

    /// [`Router::new`] over a list of routes: the main listeners' or one
    /// Gateway port's ([`model::GatewayPort::routes`]).
    pub fn for_routes<R: Borrow<model::Route>>(routes: &[R]) -> (Router, Vec<RouteError>) {
        Self::carrying(routes, None, &|_| false)
    }

    /// [`Router::for_routes`], taking over each virtual host of `previous`
    /// whose routes are the very same objects (by address), in the same
    /// order, each of them `unchanged`: a host's index depends on nothing
    /// else. Only the routes of hosts built anew are compiled.
    ///
    /// `unchanged` must hold only for routes that are alive, unchanged, and
    /// compiled without error by `previous` (so an address cannot have been
    /// reused, and a carried route reports nothing, as compiling it again
    /// would not); the table build passes the previous table's routes that
    /// reported nothing, which it keeps alive until this returns.
    pub(crate) fn carrying<R: Borrow<model::Route>>(
        routes: &[R],
        previous: Option<&Router>,
        unchanged: &dyn Fn(usize) -> bool,
    ) -> (Router, Vec<RouteError>) {
        let address = |r: &R| std::ptr::from_ref::<model::Route>(r.borrow()) as usize;
        let groups = HostGroups::of(routes);
        // Each host's previous index, if it can be taken over.
        let take = |kind: HostKind, key: Option<&[u8]>, ids: &[usize]| {
            let prev = previous?;
            let id = match (kind, key) {
                (HostKind::Exact, Some(k)) => prev.exact_hosts.get(k).copied(),
                (HostKind::Wildcard, Some(k)) => prev.wildcard_hosts.get(k).copied(),
                (HostKind::Deep, Some(k)) => prev.deep_wildcard_hosts.get(k).copied(),
                _ => prev.default_vhost,
            }?;
            let vhost = prev.vhosts.get(id)?;
            let same = vhost.routes.len() == ids.len()
                && ids
                    .iter()
                    .zip(&vhost.routes)
                    .all(|(&i, &was)| routes.get(i).map(address) == Some(was) && unchanged(was));
            same.then(|| Arc::clone(vhost))
        };
        let mut kept = Vec::with_capacity(groups.len());
        // How many hosts built anew list each route: its candidates are
        // moved into the last one and cloned into the others.
        let mut uses = vec![0u32; routes.len()];
        for (kind, key, ids) in groups.iter() {
            let carried = take(kind, key, ids);
            if carried.is_none() {
                for &i in ids {
                    if let Some(n) = uses.get_mut(i) {
                        *n += 1;
                    }
                }
            }
            kept.push(carried);
        }

        // Compiled in config order, so errors come in that order.
        let mut errors = Vec::new();
        let mut compiled: Vec<Vec<Candidate>> = Vec::with_capacity(routes.len());
        for (route_idx, route) in routes.iter().enumerate() {
            let route = route.borrow();
            let mut candidates = Vec::new();
            if uses.get(route_idx).is_some_and(|&n| n > 0) {
                for (rule_idx, rule) in route.rules.iter().enumerate() {
                    match compile_rule(route_idx, rule_idx, rule) {
                        Ok(c) => candidates.extend(c),
                        Err(fields) => errors.extend(fields.into_iter().map(|e| RouteError {
                            route_id: route.id.clone(),
                            rule: rule_idx,
                            field: e.field,
                            reason: e.reason,
                        })),
                    }
                }
            }
            compiled.push(candidates);
        }

        let mut router = Router {
            vhosts: Vec::with_capacity(groups.len()),
            route_index: Vec::with_capacity(groups.len()),
            ..Router::default()
        };
        for ((kind, key, ids), carried) in groups.0.into_iter().zip(kept) {
            let vhost = carried.unwrap_or_else(|| {
                let mut own = Vec::new();
                for (local, &i) in ids.iter().enumerate() {
                    let (Some(n), Some(candidates)) = (uses.get_mut(i), compiled.get_mut(i)) else {
                        continue;
                    };
                    *n -= 1;
                    let start = own.len();
                    if *n == 0 {
                        own.append(candidates);
                    } else {
                        own.extend(candidates.iter().cloned());
                    }
                    for c in &mut own[start..] {
                        c.hit.route = local;
                    }
                }
                let sources: Vec<&model::SourceRef> = ids
                    .iter()
                    .filter_map(|&i| routes.get(i))
                    .map(|r| &r.borrow().source)
                    .collect();
                let addresses = ids
                    .iter()
                    .filter_map(|&i| routes.get(i))
                    .map(address)
                    .collect();
                Arc::new(VirtualHost::build(addresses, own, &sources))
            });
            let id = router.vhosts.len();
            router.vhosts.push(vhost);
            router.route_index.push(ids.into_boxed_slice());
            let map = match kind {
                HostKind::Exact => &mut router.exact_hosts,
                HostKind::Wildcard => &mut router.wildcard_hosts,
                HostKind::Deep => &mut router.deep_wildcard_hosts,
                HostKind::Default => {
                    router.default_vhost = Some(id);
                    continue;
                }
            };
            map.insert(key.unwrap_or_default(), id);
        }
        (router, errors)
    }

    /// The rule `req` follows, if any.
    pub fn lookup(&self, req: &RequestHead<'_>) -> Option<RouteHit> {
        let id = match host_name(req.host) {
            Some(host) => self.named_vhost(host).or(self.default_vhost),
            None => self.default_vhost,
        }?;
        let mut hit = self.vhosts.get(id)?.lookup(req)?;
        hit.route = *self.route_index.get(id)?.get(hit.route)?;
        Some(hit)
    }

    /// The virtual host named by `host` (port and trailing dot already gone),
    /// compared case-insensitively. Only a host with an upper-case byte is
    /// copied, onto the stack unless it is too long to be a DNS name.
    fn named_vhost(&self, host: &str) -> Option<usize> {
        if self.exact_hosts.is_empty()
            && self.wildcard_hosts.is_empty()
            && self.deep_wildcard_hosts.is_empty()
        {
            return None;
        }
        if !host.bytes().any(|b| b.is_ascii_uppercase()) {
            return self.vhost_for(host.as_bytes());
        }
        let mut buf = [0u8; HOST_BUF_LEN];
        match buf.get_mut(..host.len()) {
            Some(lower) => {
                lower.copy_from_slice(host.as_bytes());
                lower.make_ascii_lowercase();
                self.vhost_for(lower)
            }
            None => self.vhost_for(host.to_ascii_lowercase().as_bytes()),
        }
    }

    /// Exact beats wildcard, and a longer wildcard suffix beats a shorter
    /// one, for a lower-case `host`.
    fn vhost_for(&self, host: &[u8]) -> Option<usize> {
        if let Some(&id) = self.exact_hosts.get(host) {
            return Some(id);
        }
        // Wildcards cover whole, non-empty labels.
        let dot = host.iter().position(|&b| b == b'.')?;
        if dot == 0 {
            return None;
        }
        let mut rest = &host[dot + 1..];
        if let Some(&id) = self.wildcard_hosts.get(rest) {
            return Some(id);
        }
        if self.deep_wildcard_hosts.is_empty() {
            return None;
        }
        loop {
            let dot = rest.iter().position(|&b| b == b'.')?;
            if dot == 0 {
                return None;
            }
            rest = &rest[dot + 1..];
            if let Some(&id) = self.deep_wildcard_hosts.get(rest) {
                return Some(id);
            }
        }
    }
}

/// The host name in a Host header or `:authority`, without port and trailing
/// dot; `None` when there is none to match by name (empty, or an IP literal).
fn host_name(authority: &str) -> Option<&str> {
    if authority.starts_with('[') {
        // `[v6]` or `[v6]:port`.
        return None;
    }
    let host = match authority.split_once(':') {
        Some((host, port)) if !port.contains(':') => host,
        // A bare IPv6 address is not a valid Host, but it is not a name either.
        Some(_) => return None,
        None => authority,
    };
    let host = host.trim_end_matches('.');
    // Top-level domains are never numeric, so only a host ending in a digit
    // can be an IPv4 literal; that keeps the parse off the common path.
    let ipv4 =
        host.as_bytes().last().is_some_and(u8::is_ascii_digit) && host.parse::<Ipv4Addr>().is_ok();
    if host.is_empty() || ipv4 {
        return None;
    }
    Some(host)
}

// === impl HostGroups ===

/// Which map of [`Router`] a virtual host is found in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostKind {
    Exact,
    /// Both kinds of wildcard, for names one label longer.
    Wildcard,
    /// Any-depth wildcards, for names two or more labels longer.
    Deep,
    /// The routes without hostnames.
    Default,
}

/// The routes of each virtual host (config indexes, in config order), with
/// the host's kind and lower-case name or suffix.
struct HostGroups(Vec<HostGroup>);

/// A host's kind, name (`None`: the default host) and routes.
type HostGroup = (HostKind, Option<Box<[u8]>>, Vec<usize>);

impl HostGroups {
    fn of<R: Borrow<model::Route>>(routes: &[R]) -> Self {
        let mut exact: HashMap<Box<[u8]>, Vec<usize>> = HashMap::new();
        let mut wildcard: HashMap<Box<[u8]>, Vec<usize>> = HashMap::new();
        let mut deep: HashMap<Box<[u8]>, Vec<usize>> = HashMap::new();
        let mut default = Vec::new();
        for (route_idx, route) in routes.iter().enumerate() {
            let route = route.borrow();
            if route.hostnames.is_empty() {
                default.push(route_idx);
            }
            for hostname in &route.hostnames {
                let (maps, name): (&mut [&mut HashMap<_, Vec<usize>>], _) = match hostname {
                    Hostname::Exact(name) => (&mut [&mut exact], name),
                    Hostname::Wildcard(suffix) => (&mut [&mut wildcard], suffix),
                    Hostname::WildcardAnyDepth(suffix) => (&mut [&mut wildcard, &mut deep], suffix),
                };
                // The model promises lower case without a trailing dot; a
                // hand-built config that breaks that must still match.
                let key = name.trim_end_matches('.').to_ascii_lowercase();
                for map in maps.iter_mut() {
                    let routes = map
                        .entry(key.as_bytes().to_vec().into_boxed_slice())
                        .or_default();
                    // Routes are visited in order: checking the last entry
                    // lists a route once even when it names a host twice.
                    if routes.last() != Some(&route_idx) {
                        routes.push(route_idx);
                    }
                }
            }
        }
        // Keep each route list in config order after merging both kinds.
        for routes in wildcard.values_mut() {
            routes.sort_unstable();
            routes.dedup();
        }
        let mut groups = Vec::with_capacity(exact.len() + wildcard.len() + deep.len() + 1);
        for (kind, map) in [
            (HostKind::Exact, exact),
            (HostKind::Wildcard, wildcard),
            (HostKind::Deep, deep),
        ] {
            groups.extend(map.into_iter().map(|(key, ids)| (kind, Some(key), ids)));
        }
        if !default.is_empty() {
            groups.push((HostKind::Default, None, default));
        }
        Self(groups)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn iter(&self) -> impl Iterator<Item = (HostKind, Option<&[u8]>, &[usize])> {
        self.0
            .iter()
            .map(|(kind, key, ids)| (*kind, key.as_deref(), &ids[..]))
    }
}

// === impl VirtualHost ===

impl VirtualHost {
    /// `candidates` are its routes' compiled matches, each `hit.route` the
    /// host's own route number, whose source is `sources[hit.route]`;
    /// `routes` their addresses.
    fn build(
        routes: Box<[usize]>,
        candidates: Vec<Candidate>,
        sources: &[&model::SourceRef],
    ) -> Self {
        let precedence: Vec<Option<Precedence<'_>>> = candidates
            .iter()
            .map(|c| sources.get(c.hit.route).map(|s| c.precedence(s)))
            .collect();
        let mut exact: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut prefixes = PrefixTrie::default();
        let mut regexes = Vec::new();
        for (id, candidate) in candidates.iter().enumerate() {
            match &candidate.path {
                PathCondition::Exact(path) => exact.entry(path.clone()).or_default().push(id),
                PathCondition::Prefix(prefix) => prefixes.insert(prefix, id),
                PathCondition::Regex(_) => regexes.push(id),
            }
        }

        // Every candidate has a key (the sources cover every route
        // number), and no two keys are equal, so the order is total and
        // deterministic.
        let by_precedence = |ids: &mut Vec<usize>| ids.sort_by_key(|&id| precedence.get(id));
        prefixes.finish(by_precedence);
        by_precedence(&mut regexes);
        let exact_paths = exact
            .into_iter()
            .map(|(path, mut ids)| {
                by_precedence(&mut ids);
                (path, ids.into_boxed_slice())
            })
            .collect();
        drop(precedence);
        VirtualHost {
            routes,
            candidates: candidates.into_boxed_slice(),
            exact_paths,
            prefixes,
            regexes: regexes.into_boxed_slice(),
        }
    }

    /// Exact paths, then prefixes longest first, then regular expressions:
    /// each stage only runs when the previous one found nothing, and within a
    /// stage candidates are already in precedence order.
    fn lookup(&self, req: &RequestHead<'_>) -> Option<RouteHit> {
        let candidates = &self.candidates[..];
        let first_holding = |ids: &[usize]| {
            ids.iter()
                .filter_map(|&id| candidates.get(id))
                .find(|c| c.conditions_hold(req))
                .map(|c| c.hit)
        };

        if let Some(ids) = self.exact_paths.get(req.path)
            && let Some(hit) = first_holding(ids)
        {
            return Some(hit);
        }
        for ids in self.prefixes.matching(req.path) {
            if let Some(hit) = first_holding(ids) {
                return Some(hit);
            }
        }
        self.regexes
            .iter()
            .filter_map(|&id| candidates.get(id))
            .find(|c| c.path_regex_matches(req.path) && c.conditions_hold(req))
            .map(|c| c.hit)
    }
}

// === impl Candidate ===

impl Candidate {
    /// The sort key that puts the candidate to prefer first. `source` is that
    /// of the candidate's route.
    fn precedence<'c>(&self, source: &'c model::SourceRef) -> Precedence<'c> {
        let tie = TieBreak {
            created: source.created,
            namespace: &source.namespace,
            name: &source.name,
            route: self.hit.route,
            rule: self.hit.rule,
            matched: self.hit.matched.unwrap_or(0),
        };
        (Reverse(self.rank), tie)
    }

    /// Everything but the path, which the index has already matched (or
    /// [`Self::path_regex_matches`] checks).
    fn conditions_hold(&self, req: &RequestHead<'_>) -> bool {
        if let Some(method) = &self.method
            && method != req.method
        {
            return false;
        }
        self.headers.iter().all(|h| h.matches(req.headers))
            && self.query.iter().all(|q| q.matches(req.query))
    }

    fn path_regex_matches(&self, path: &str) -> bool {
        match &self.path {
            PathCondition::Regex(re) => re.is_match(path.as_bytes()),
            // Exact and prefix candidates are never in the regex list.
            PathCondition::Exact(_) | PathCondition::Prefix(_) => false,
        }
    }
}

/// Compiles every match of a rule, or reports every field that failed.
fn compile_rule(
    route: usize,
    rule_idx: usize,
    rule: &model::Rule,
) -> Result<Vec<Candidate>, Vec<FieldError>> {
    let mut errors = Vec::new();
    let mut compiled = Vec::with_capacity(rule.matches.len().max(1));
    if rule.matches.is_empty() {
        let hit = RouteHit {
            route,
            rule: rule_idx,
            matched: None,
        };
        // `Prefix("/")` always compiles.
        compiled.extend(compile_match(hit, "", &RouteMatch::default(), &mut errors));
    }
    for (i, m) in rule.matches.iter().enumerate() {
        let hit = RouteHit {
            route,
            rule: rule_idx,
            matched: Some(i),
        };
        compiled.extend(compile_match(
            hit,
            &format!("matches[{i}]."),
            m,
            &mut errors,
        ));
    }
    check_backend_filters(rule, &mut errors);
    if errors.is_empty() {
        Ok(compiled)
    } else {
        Err(errors)
    }
}

/// A backend's own filters (Gateway API `backendRefs[].filters`) are
/// header edits only: the proxy applies nothing else per backend, and a
/// filter silently skipped would serve what the user meant to restrict.
fn check_backend_filters(rule: &model::Rule, errors: &mut Vec<FieldError>) {
    let model::Action::Forward(fwd) = &rule.action else {
        return;
    };
    let mainline = fwd.backends.iter().enumerate().map(|(i, b)| ("", i, b));
    let canary = fwd.canary.iter().flat_map(|c| c.backends.iter());
    let canary = canary.enumerate().map(|(i, b)| ("canary.", i, b));
    for (set, b, backend) in mainline.chain(canary) {
        for (f, filter) in backend.filters.iter().enumerate() {
            if !matches!(
                filter,
                model::Filter::RequestHeaders(_) | model::Filter::ResponseHeaders(_)
            ) {
                errors.push(FieldError {
                    field: format!("action.forward.{set}backends[{b}].filters[{f}]"),
                    reason: "a backend's filters may only edit request or response headers".into(),
                });
            }
        }
    }
}

/// `field` prefixes the names of failed fields, e.g. `matches[0].`.
fn compile_match(
    hit: RouteHit,
    field: &str,
    m: &RouteMatch,
    errors: &mut Vec<FieldError>,
) -> Option<Candidate> {
    let errors_before = errors.len();
    let mut fail = |name: String, reason: String| {
        errors.push(FieldError {
            field: format!("{field}{name}"),
            reason,
        })
    };

    let path = match &m.path {
        PathMatch::Exact(path) | PathMatch::Prefix(path) if !path.starts_with('/') => {
            fail("path".into(), format!("{path:?} does not start with '/'"));
            None
        }
        PathMatch::Exact(path) => {
            Some((PathCondition::Exact(path.as_str().into()), PathRank::Exact))
        }
        PathMatch::Prefix(prefix) => {
            let prefix = normalized_prefix(prefix);
            Some((
                PathCondition::Prefix(prefix.into()),
                PathRank::Prefix(prefix.len()),
            ))
        }
        PathMatch::RegularExpression(pattern) => match whole_match_regex(pattern) {
            Ok(re) => Some((PathCondition::Regex(re), PathRank::Regex(pattern.len()))),
            Err(reason) => {
                fail("path".into(), reason);
                None
            }
        },
    };

    let mut headers: Vec<HeaderCondition> = Vec::with_capacity(m.headers.len());
    for (i, h) in m.headers.iter().enumerate() {
        if headers.iter().any(|c| c.name == h.name) {
            continue;
        }
        match ValueCondition::compile(&h.value) {
            Ok(value) => headers.push(HeaderCondition {
                name: h.name.clone(),
                value,
            }),
            Err(reason) => fail(format!("headers[{i}].value"), reason),
        }
    }

    let mut query: Vec<QueryCondition> = Vec::with_capacity(m.query.len());
    for (i, q) in m.query.iter().enumerate() {
        if query.iter().any(|c| *c.name == *q.name) {
            continue;
        }
        match ValueCondition::compile(&q.value) {
            Ok(value) => query.push(QueryCondition {
                name: q.name.as_str().into(),
                value,
            }),
            Err(reason) => fail(format!("query[{i}].value"), reason),
        }
    }

    let (path, path_rank) = path?;
    if errors.len() != errors_before {
        return None;
    }
    Some(Candidate {
        hit,
        rank: MatchRank {
            path: path_rank,
            method: m.method.is_some(),
            headers: headers.len(),
            query: query.len(),
        },
        path,
        method: m.method.clone(),
        headers: headers.into_boxed_slice(),
        query: query.into_boxed_slice(),
    })
}

/// Compiles `pattern` to match a whole input, with size limits.
fn whole_match_regex(pattern: &str) -> Result<Regex, String> {
    crate::route::pattern::compile_bytes(&format!("^(?:{pattern})$")).map_err(|e| e.to_string())
}

// === impl HeaderCondition ===

impl HeaderCondition {
    /// A header sent several times matches when any one value does.
    fn matches(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&self.name)
            .iter()
            .any(|v| self.value.matches(v.as_bytes()))
    }
}

// === impl QueryCondition ===

impl QueryCondition {
    fn matches(&self, query: Option<&str>) -> bool {
        query
            .and_then(|q| first_query_value(q, &self.name))
            .is_some_and(|v| self.value.matches(&v))
    }
}

/// The percent-decoded value of the first parameter named `name` (compared
/// after decoding); a parameter without `=` has the empty value. Later
/// parameters of the same name are ignored, as Gateway API asks.
fn first_query_value<'q>(query: &'q str, name: &str) -> Option<Cow<'q, [u8]>> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .find_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (*percent_decode(n) == *name.as_bytes()).then(|| percent_decode(v))
        })
}

/// `application/x-www-form-urlencoded` decoding: `%XX` and `+` as space. An
/// invalid escape is kept as is. Allocates only when there is something to
/// decode.
fn percent_decode(s: &str) -> Cow<'_, [u8]> {
    let bytes = s.as_bytes();
    if !bytes.iter().any(|&b| b == b'%' || b == b'+') {
        return Cow::Borrowed(bytes);
    }
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match (b, bytes.get(i + 1..i + 3)) {
            (b'%', Some(&[hi, lo])) => hex(hi).zip(hex(lo)).map(|(hi, lo)| hi << 4 | lo),
            _ => None,
        };
        match escaped {
            Some(decoded) => {
                out.push(decoded);
                i += 3;
            }
            None => {
                out.push(if b == b'+' { b' ' } else { b });
                i += 1;
            }
        }
    }
    Cow::Owned(out)
}

// === impl ValueCondition ===

impl ValueCondition {
    fn compile(value: &ValueMatch) -> Result<Self, String> {
        Ok(match value {
            ValueMatch::Exact(v) => ValueCondition::Exact(v.as_bytes().into()),
            ValueMatch::RegularExpression(pattern) => {
                ValueCondition::Regex(whole_match_regex(pattern)?)
            }
        })
    }

    fn matches(&self, value: &[u8]) -> bool {
        match self {
            ValueCondition::Exact(v) => **v == *value,
            ValueCondition::Regex(re) => re.is_match(value),
        }
    }
}
