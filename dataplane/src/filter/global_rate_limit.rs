//! Global (cross-replica) rate limits: ingress-nginx's `global-rate-limit`,
//! counted in Redis by every replica together.
//!
//! ## The algorithm: a sliding window, on the server
//!
//! As ingress-nginx's lua-resty-global-throttle: per key, the count of the
//! current fixed window `c` and of the previous one `p`; a request at
//! `elapsed` into the current window sees
//! `c + p × (window − elapsed) / window` requests, and passes when one
//! more stays within the limit. One Lua
//! script ([`SCRIPT`], `EVALSHA`, `EVAL` after a `NOSCRIPT`) reads and
//! updates the key's hash atomically, on the server's clock (`TIME`), so
//! replicas with skewed clocks agree on the windows. A refused request is
//! not counted (as the local limiter, a refusal costs nothing), and the
//! script says how long until one more would pass if no other replica
//! admitted one meanwhile: the `Retry-After`. A sliding window rather than
//! GCRA: it is what ingress-nginx users configured (a count per window, not
//! a rate and a burst), and its state (two counts) expires on its own.
//!
//! ## The local pre-check
//!
//! Once the server refuses a key, the replica remembers until when
//! ([`Refused`], bounded like the local limiter's keys) and refuses that
//! key's requests without a round trip until then. Counts only rise while
//! a key is refused (other replicas may admit more, never fewer), so the
//! server would refuse those requests too: the pre-check never refuses a
//! request Redis would have admitted, except by the drift between the two
//! clocks over the wait. The deadline is taken from when the request was
//! sent, before the server computed it, so it errs on the early side.
//!
//! ## Failure
//!
//! Redis unreachable, slower than `--redis-timeout`, or answering an error:
//! the request passes (fail open, as ingress-nginx), or is answered 503
//! with `--global-rate-limit-fail-closed`; counted in
//! `portico_global_rate_limit_errors_total{reason}`, logged at most once per
//! [`LOG_INTERVAL`], shown by `/readyz`. The connection (one multiplexed
//! connection per replica, redis' `ConnectionManager`) reconnects on its
//! own, so limiting resumes when Redis returns.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use http::header::HeaderMap;
use http::{Request, StatusCode};
use hyper::body::Incoming;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ring::digest;
use rustls_pki_types::pem::PemObject as _;
use tracing::warn;

use crate::filter::Answer;
use crate::filter::external_auth::{Decision, Wait};
use crate::filter::rate_limit::{LimitCounters, LimitLabels, Limited};
use crate::model::{GlobalRateLimit, HashKey, HashVar};
use crate::request::forwarded::IpSet;
use crate::store::KeyedStore;

/// The sliding window. KEYS[1]: the key's hash (`w`: the current window's
/// number, `c`, `p`: its count and the previous one's); ARGV[1]: the limit;
/// ARGV[2]: the window in milliseconds. Returns `{1, 0}` when the request
/// is admitted (and counted), `{0, ms}` when refused, `ms` the wait until
/// one more would pass.
pub const SCRIPT: &str = r"
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local current = math.floor(now / window)
local state = redis.call('HMGET', KEYS[1], 'w', 'c', 'p')
local w = tonumber(state[1])
local c = tonumber(state[2]) or 0
local p = tonumber(state[3]) or 0
if w ~= current then
  if w == current - 1 then p = c else p = 0 end
  c = 0
end
local elapsed = now - current * window
if p * (window - elapsed) / window + c + 1 <= limit then
  redis.call('HSET', KEYS[1], 'w', current, 'c', c + 1, 'p', p)
  redis.call('PEXPIRE', KEYS[1], 2 * window)
  return {1, 0}
end
local wait
if c + 1 <= limit then
  wait = math.ceil(window * (1 - (limit - 1 - c) / p)) - elapsed
else
  wait = window - elapsed + math.ceil(window * (1 - (limit - 1) / c))
end
if wait < 1 then wait = 1 end
return {0, wait}
";

/// Errors are logged at most this often (each is counted).
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// `--redis-timeout` unless set: one round trip to a Redis nearby, with
/// room; past it the request is decided as if Redis were down.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_millis(50);
/// `--redis-connect-timeout` unless set.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Keys remembered as refused per policy: as many as the local limiter
/// tracks by default.
const MAX_REFUSED_KEYS: usize = crate::filter::rate_limit::DEFAULT_MAX_KEYS;

/// Where the counters live and what to do without them; validated at start.
#[derive(Clone, Default)]
pub struct GlobalLimitConfig {
    /// `None`: no `--redis-url`; global limits act as if Redis were down.
    pub redis: Option<RedisConfig>,
    /// Answer 503 when Redis cannot decide, instead of letting the
    /// request pass.
    pub fail_closed: bool,
}

/// A Redis to count in.
#[derive(Clone)]
pub struct RedisConfig {
    client: redis::Client,
    pub connect_timeout: Duration,
    pub call_timeout: Duration,
}

/// Why a Redis configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum RedisConfigError {
    #[error("--redis-url: {0}")]
    Url(String),
    #[error("--redis-ca-file needs a rediss:// URL")]
    CaWithoutTls,
    #[error("--redis-ca-file: {0}")]
    Ca(String),
}

impl RedisConfig {
    /// `url`: `redis://[user:password@]host[:port][/db]` or `rediss://...`
    /// (TLS: the system's roots, or `ca_pem`'s certificates only).
    pub fn new(url: &str, ca_pem: Option<Vec<u8>>) -> Result<Self, RedisConfigError> {
        use redis::IntoConnectionInfo;
        // The message names the part that is wrong, never the password.
        let info = url
            .into_connection_info()
            .map_err(|e| RedisConfigError::Url(e.to_string()))?;
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        let client = match ca_pem {
            None => redis::Client::open(info),
            Some(_) if !tls => return Err(RedisConfigError::CaWithoutTls),
            Some(pem) => {
                // Refused here rather than at the first connection.
                if rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
                    .filter_map(Result::ok)
                    .next()
                    .is_none()
                {
                    return Err(RedisConfigError::Ca("no PEM certificate in it".into()));
                }
                redis::Client::build_with_tls(
                    info,
                    redis::TlsCertificates {
                        client_tls: None,
                        root_cert: Some(pem),
                    },
                )
            }
        }
        .map_err(|e| RedisConfigError::Url(e.to_string()))?;
        Ok(Self {
            client,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
        })
    }

    pub fn with_timeouts(mut self, connect: Duration, call: Duration) -> Self {
        self.connect_timeout = connect;
        self.call_timeout = call;
        self
    }
}

/// The errors' metric, one counter per reason, resolved at start.
#[derive(Clone, Default)]
pub struct GlobalLimitCounters {
    pub errors: Family<ReasonLabel, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, prometheus_client::encoding::EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

/// Why Redis could not decide.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Failure {
    /// No answer within `--redis-timeout`.
    Timeout,
    /// Not connected: refused, reset, or connecting.
    Unavailable,
    /// An error reply, or one the script does not give.
    Error,
    /// No `--redis-url`.
    Unconfigured,
}

impl Failure {
    const ALL: [Failure; 4] = [
        Failure::Timeout,
        Failure::Unavailable,
        Failure::Error,
        Failure::Unconfigured,
    ];

    fn label(self) -> &'static str {
        match self {
            Failure::Timeout => "timeout",
            Failure::Unavailable => "unavailable",
            Failure::Error => "error",
            Failure::Unconfigured => "unconfigured",
        }
    }
}

/// What global limits keep across table swaps: the one connection, the
/// health seen, and each policy's remembered refusals.
pub struct GlobalLimits {
    redis: Arc<Redis>,
    policies: KeyedStore<GlobalRateLimit, GlobalLimiter>,
    limited: Family<LimitLabels, Counter>,
}

impl Default for GlobalLimits {
    fn default() -> Self {
        Self::new(
            GlobalLimitConfig::default(),
            &GlobalLimitCounters::default(),
            &LimitCounters::default(),
        )
    }
}

/// The shared connection and what it has been through.
struct Redis {
    config: Option<RedisConfig>,
    fail_closed: bool,
    /// Made at the first table build (on a runtime) that names a global
    /// limit, so a replica without one never connects; reconnects on its
    /// own. `Some(None)`: no `--redis-url`, or it could not be set up.
    conn: std::sync::OnceLock<Option<ConnectionManager>>,
    script: redis::Script,
    errors: [Counter; 4],
    epoch: Instant,
    /// Milliseconds since `epoch` of the last error logged, plus one (0:
    /// never).
    last_log: AtomicU64,
    /// The last call's outcome: 0 none yet, 1 answered, 2 + a `Failure`'s
    /// index.
    health: AtomicU8,
}

impl GlobalLimits {
    pub fn new(
        config: GlobalLimitConfig,
        counters: &GlobalLimitCounters,
        limits: &LimitCounters,
    ) -> Self {
        let errors = Failure::ALL.map(|f| {
            counters
                .errors
                .get_or_create(&ReasonLabel { reason: f.label() })
                .clone()
        });
        Self {
            redis: Arc::new(Redis {
                config: config.redis,
                fail_closed: config.fail_closed,
                conn: std::sync::OnceLock::new(),
                script: redis::Script::new(SCRIPT),
                errors,
                epoch: Instant::now(),
                last_log: AtomicU64::new(0),
                health: AtomicU8::new(0),
            }),
            policies: KeyedStore::default(),
            limited: limits.limited.clone(),
        }
    }

    /// The limiter for `policy`: the live one if some table holds an equal
    /// policy, else a fresh one. Table builds only.
    pub(crate) fn limiter(
        &self,
        policy: &GlobalRateLimit,
        exempt: Arc<IpSet>,
    ) -> Arc<GlobalLimiter> {
        self.redis.connect();
        self.policies.get_or_insert_with(policy.clone(), || {
            GlobalLimiter::new(policy, exempt, Arc::clone(&self.redis), &self.limited)
        })
    }

    /// Forgets the policies no table names; after each publish.
    pub(crate) fn prune(&self) {
        self.policies.prune();
    }

    /// One line for `/readyz` once a global limit has asked Redis; `None`
    /// before. Readiness itself does not depend on it.
    pub(crate) fn status(&self) -> Option<String> {
        let r = &self.redis;
        let mode = if r.fail_closed {
            "failing closed (503)"
        } else {
            "failing open"
        };
        match r.health.load(Ordering::Relaxed) {
            0 => None,
            1 => Some("global rate limit: redis ok".to_owned()),
            n => {
                let f = Failure::ALL[usize::from(n - 2).min(Failure::ALL.len() - 1)];
                Some(format!("global rate limit: redis {} ({mode})", f.label()))
            }
        }
    }
}

impl Redis {
    /// Makes the connection handle, once, without waiting for it: the
    /// first call connects. Needs a tokio runtime (table builds run on
    /// one); without one, calls fail as unavailable.
    fn connect(&self) {
        // Without a runtime, try again at the next build rather than
        // settle on no connection.
        if self.conn.get().is_some() || tokio::runtime::Handle::try_current().is_err() {
            return;
        }
        self.conn.get_or_init(|| {
            let config = self.config.as_ref()?;
            let manager = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(config.connect_timeout))
                .set_response_timeout(Some(config.call_timeout))
                // Reconnection is retried by the next request's call: a
                // few quick tries, then the error is the request's.
                .set_number_of_retries(2)
                .set_min_delay(Duration::from_millis(10))
                .set_max_delay(config.connect_timeout);
            match ConnectionManager::new_lazy_with_config(config.client.clone(), manager) {
                Ok(m) => Some(m),
                Err(e) => {
                    warn!(error = %e, "global rate limit: cannot set up the Redis connection");
                    None
                }
            }
        });
    }

    fn answered(&self) {
        self.health.store(1, Ordering::Relaxed);
    }

    /// Counts `f`, logs it unless one was logged within [`LOG_INTERVAL`].
    fn failed(&self, f: Failure, detail: &dyn std::fmt::Display) {
        let i = Failure::ALL.iter().position(|x| *x == f).unwrap_or(0);
        self.errors[i].inc();
        // `i` is below 4.
        self.health.store(2 + i as u8, Ordering::Relaxed);
        let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let last = self.last_log.load(Ordering::Relaxed);
        let interval = u64::try_from(LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if (last == 0 || now.saturating_sub(last) >= interval)
            && self
                .last_log
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            let mode = if self.fail_closed {
                "answering 503"
            } else {
                "letting requests through"
            };
            warn!(reason = f.label(), error = %detail, "global rate limit: Redis cannot decide; {mode} (logged at most every 10 s, counted in portico_global_rate_limit_errors_total)");
        }
    }

    /// The answer when Redis cannot decide.
    fn undecided(&self) -> Option<Answer> {
        self.fail_closed
            .then_some(Answer::Status(StatusCode::SERVICE_UNAVAILABLE))
    }
}

// === impl GlobalLimiter ===

/// One global policy, compiled: its key, its Redis key prefix and the keys
/// it has seen refused.
pub(crate) struct GlobalLimiter {
    key: HashKey,
    exempt: Arc<IpSet>,
    limit: u32,
    window_ms: u64,
    status: StatusCode,
    /// SHA-256 of the policy's identity and settings: what keeps two
    /// policies' counters apart.
    policy: [u8; 32],
    /// `portico:grl:<16 hex digits of the policy>:`.
    prefix: String,
    redis: Arc<Redis>,
    refused: Refused,
    limited: Counter,
}

/// Keys the server refused, and until when (milliseconds since `epoch`).
struct Refused {
    map: DashMap<u128, u64>,
    epoch: Instant,
    max: usize,
}

/// What the filter decided without waiting.
pub(crate) enum Check {
    /// Not limited (exempt, or no key).
    Skip,
    Answer(Answer),
    Wait(Wait),
}

impl GlobalLimiter {
    fn new(
        p: &GlobalRateLimit,
        exempt: Arc<IpSet>,
        redis: Arc<Redis>,
        limited: &Family<LimitLabels, Counter>,
    ) -> Self {
        let policy = policy_digest(p);
        let prefix = format!("portico:grl:{}:", hex(&policy[..8]));
        Self {
            key: p.key.clone(),
            exempt,
            limit: p.limit.max(1),
            window_ms: u64::from(p.window_secs.max(1)) * 1000,
            status: StatusCode::from_u16(p.status)
                .ok()
                .filter(|s| s.is_client_error() || s.is_server_error())
                .unwrap_or(StatusCode::TOO_MANY_REQUESTS),
            policy,
            prefix,
            redis,
            refused: Refused {
                map: DashMap::new(),
                epoch: Instant::now(),
                max: MAX_REFUSED_KEYS,
            },
            limited: limited
                .get_or_create(&LimitLabels {
                    route: p.id.clone(),
                    kind: "global",
                })
                .clone(),
        }
    }

    /// Decides from what is known here, or asks Redis.
    pub(crate) fn check(
        self: &Arc<Self>,
        req: &Request<Incoming>,
        host: &str,
        client: IpAddr,
    ) -> Check {
        if self.exempt.contains(client) {
            return Check::Skip;
        }
        let Some(digest) = key_digest(&self.policy, &self.key, req, host, client) else {
            return Check::Skip;
        };
        let local = u128::from_be_bytes(digest[..16].try_into().unwrap_or_default());
        let now = self.refused.now();
        if let Some(until) = self.refused.until(local, now) {
            self.limited.inc();
            return Check::Answer(self.refusal(until - now));
        }
        let Some(Some(conn)) = self.redis.conn.get() else {
            let f = if self.redis.config.is_none() {
                Failure::Unconfigured
            } else {
                Failure::Unavailable
            };
            self.redis.failed(f, &"no connection");
            return match self.redis.undecided() {
                Some(a) => Check::Answer(a),
                None => Check::Skip,
            };
        };
        let mut conn = conn.clone();
        let mut redis_key = String::with_capacity(self.prefix.len() + 32);
        redis_key.push_str(&self.prefix);
        redis_key.push_str(&hex(&digest[..16]));
        let this = Arc::clone(self);
        Check::Wait(Box::pin(async move {
            let answer = this.ask(&mut conn, &redis_key, local, now).await;
            Decision {
                answer,
                carry: None,
            }
        }))
    }

    /// One script call, within the call timeout.
    async fn ask(
        &self,
        conn: &mut ConnectionManager,
        redis_key: &str,
        local: u128,
        sent: u64,
    ) -> Option<Answer> {
        let timeout = self
            .redis
            .config
            .as_ref()
            .map_or(DEFAULT_CALL_TIMEOUT, |c| c.call_timeout);
        let mut call = self.redis.script.key(redis_key);
        call.arg(self.limit).arg(self.window_ms);
        let reply = tokio::time::timeout(timeout, call.invoke_async::<(u8, u64)>(conn)).await;
        match reply {
            Ok(Ok((1, _))) => {
                self.redis.answered();
                None
            }
            Ok(Ok((_, wait_ms))) => {
                self.redis.answered();
                self.refused
                    .remember(local, sent.saturating_add(wait_ms.max(1)));
                self.limited.inc();
                Some(self.refusal(wait_ms))
            }
            Ok(Err(e)) => {
                let f = if e.is_timeout() {
                    Failure::Timeout
                } else if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal()
                {
                    Failure::Unavailable
                } else {
                    Failure::Error
                };
                self.redis.failed(f, &e);
                self.redis.undecided()
            }
            Err(_) => {
                self.redis
                    .failed(Failure::Timeout, &"no answer in --redis-timeout");
                self.redis.undecided()
            }
        }
    }

    fn refusal(&self, wait_ms: u64) -> Answer {
        Answer::Limited(Box::new(Limited {
            status: self.status,
            retry_after: wait_ms.div_ceil(1000).max(1),
            headers: None,
        }))
    }

    /// The Redis key of a key digest, for tests.
    #[cfg(test)]
    fn redis_key_of(&self, digest: &[u8; 32]) -> String {
        format!("{}{}", self.prefix, hex(&digest[..16]))
    }
}

impl Refused {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// When `key` may pass again, if it is still refused at `now`; a past
    /// deadline is forgotten.
    fn until(&self, key: u128, now: u64) -> Option<u64> {
        let until = *self.map.get(&key)?;
        if until > now {
            return Some(until);
        }
        self.map.remove_if(&key, |_, u| *u <= now);
        None
    }

    /// Remembers a refusal; at the cap, forgets the past ones first, and
    /// when all are current, remembers nothing (the key costs round trips).
    fn remember(&self, key: u128, until: u64) {
        if self.map.len() >= self.max {
            let now = self.now();
            self.map.retain(|_, u| *u > now);
            if self.map.len() >= self.max {
                return;
            }
        }
        self.map.insert(key, until);
    }
}

/// The policy's identity and every setting the counts depend on, hashed:
/// stable across replicas and restarts (no random key), so every replica
/// counts in the same Redis key.
fn policy_digest(p: &GlobalRateLimit) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(b"portico global rate limit v1\0");
    for part in [
        p.id.as_bytes(),
        &p.limit.to_be_bytes(),
        &p.window_secs.to_be_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    for var in &p.key.0 {
        let (tag, name): (u8, &[u8]) = match var {
            HashVar::RemoteAddr => (1, b""),
            HashVar::RequestUri => (2, b""),
            HashVar::Uri => (3, b""),
            HashVar::Host => (4, b""),
            HashVar::Header(h) => (5, h.as_str().as_bytes()),
            HashVar::Cookie(c) => (6, c.as_bytes()),
            HashVar::Arg(a) => (7, a.as_bytes()),
        };
        ctx.update(&[tag]);
        ctx.update(&(name.len() as u64).to_be_bytes());
        ctx.update(name);
    }
    sha256(ctx)
}

/// The request's key value under `policy`, hashed: `None` when none of the
/// key's variables is present (nginx does not count an empty key). The
/// value never reaches Redis as text: only its hash, so no client can
/// change a Redis key's shape or length.
fn key_digest(
    policy: &[u8; 32],
    key: &HashKey,
    req: &Request<Incoming>,
    host: &str,
    client: IpAddr,
) -> Option<[u8; 32]> {
    key_digest_of(policy, key, req.uri(), req.headers(), host, client)
}

fn key_digest_of(
    policy: &[u8; 32],
    key: &HashKey,
    uri: &http::Uri,
    headers: &HeaderMap,
    host: &str,
    client: IpAddr,
) -> Option<[u8; 32]> {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(policy);
    // No variables: the route as one key.
    let mut any = key.0.is_empty();
    let mut part = |bytes: Option<&[u8]>| match bytes.filter(|b| !b.is_empty()) {
        Some(b) => {
            any = true;
            // Length-prefixed: ("a", "bc") and ("ab", "c") differ.
            ctx.update(&(b.len() as u64 + 1).to_be_bytes());
            ctx.update(b);
        }
        None => ctx.update(&0u64.to_be_bytes()),
    };
    for var in &key.0 {
        match var {
            HashVar::RemoteAddr => {
                let ip = match client {
                    IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
                    IpAddr::V6(v6) => v6.octets(),
                };
                part(Some(&ip));
            }
            HashVar::RequestUri => part(Some(
                uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes(),
            )),
            HashVar::Uri => part(Some(uri.path().as_bytes())),
            HashVar::Host => {
                let (host, _) = crate::headers::split_host_port(host);
                part(Some(host.to_ascii_lowercase().as_bytes()));
            }
            HashVar::Header(name) => part(headers.get(name).map(|v| v.as_bytes())),
            HashVar::Cookie(name) => part(crate::headers::cookie_value(headers, name)),
            HashVar::Arg(name) => part(crate::balance::query_arg(uri.query(), name)),
        }
    }
    any.then(|| sha256(ctx))
}

fn sha256(ctx: digest::Context) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(key: &str) -> GlobalRateLimit {
        GlobalRateLimit {
            id: "ingress/default/web".into(),
            limit: 10,
            window_secs: 60,
            key: HashKey::parse(key).unwrap(),
            exempt: vec![],
            status: 429,
        }
    }

    fn digest_of(
        p: &GlobalRateLimit,
        uri: &str,
        headers: &[(&str, &str)],
        ip: &str,
    ) -> Option<[u8; 32]> {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        key_digest_of(
            &policy_digest(p),
            &p.key,
            &uri.parse().unwrap(),
            &h,
            "example.test",
            ip.parse().unwrap(),
        )
    }

    #[test]
    fn keys_are_namespaced_bounded_and_stable() {
        let by_addr = policy("$remote_addr");
        let a = digest_of(&by_addr, "/", &[], "127.0.0.1").unwrap();
        assert_eq!(a, digest_of(&by_addr, "/x", &[], "127.0.0.1").unwrap());
        assert_ne!(a, digest_of(&by_addr, "/", &[], "127.0.0.2").unwrap());
        // Another policy (another route, limit or window) never shares it.
        for other in [
            GlobalRateLimit {
                id: "ingress/default/other".into(),
                ..by_addr.clone()
            },
            GlobalRateLimit {
                limit: 11,
                ..by_addr.clone()
            },
            GlobalRateLimit {
                window_secs: 61,
                ..by_addr.clone()
            },
        ] {
            assert_ne!(policy_digest(&other), policy_digest(&by_addr));
            assert_ne!(Some(a), digest_of(&other, "/", &[], "127.0.0.1"));
        }
        // The status and the exemptions do not change what is counted.
        let other = GlobalRateLimit {
            status: 503,
            ..by_addr.clone()
        };
        assert_eq!(policy_digest(&other), policy_digest(&by_addr));

        // A header key: absent or empty, not limited; any value, one fixed
        // length of Redis key whatever the client sends.
        let by_user = policy("$http_x_user");
        assert_eq!(digest_of(&by_user, "/", &[], "127.0.0.1"), None);
        assert_eq!(
            digest_of(&by_user, "/", &[("x-user", "")], "127.0.0.1"),
            None
        );
        let long = "x".repeat(4000);
        let limiter =
            GlobalLimits::default().limiter(&by_user, Arc::new(IpSet::new(&[] as &[ipnet::IpNet])));
        let short_key = limiter
            .redis_key_of(&digest_of(&by_user, "/", &[("x-user", "a")], "127.0.0.1").unwrap());
        let long_key = limiter
            .redis_key_of(&digest_of(&by_user, "/", &[("x-user", &long)], "127.0.0.1").unwrap());
        assert_eq!(short_key.len(), long_key.len());
        assert!(short_key.starts_with("portico:grl:"));
        assert!(
            long_key
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b':')
        );
        // Concatenated variables are length-prefixed.
        let two = policy("$http_a$http_b");
        assert_ne!(
            digest_of(&two, "/", &[("a", "x"), ("b", "yz")], "127.0.0.1"),
            digest_of(&two, "/", &[("a", "xy"), ("b", "z")], "127.0.0.1"),
        );
        // No variables: the route as one key.
        let route = GlobalRateLimit {
            key: HashKey(vec![]),
            ..by_addr.clone()
        };
        assert_eq!(
            digest_of(&route, "/a", &[], "127.0.0.1"),
            digest_of(&route, "/b", &[], "::1")
        );
        // The hash is a fixed function of the policy: every replica agrees.
        assert_eq!(
            hex(&policy_digest(&by_addr)[..8]),
            hex(&policy_digest(&policy("$remote_addr"))[..8])
        );
    }

    #[test]
    fn refusals_are_remembered_until_due_and_bounded() {
        let r = Refused {
            map: DashMap::new(),
            epoch: Instant::now(),
            max: 2,
        };
        r.remember(1, 100);
        assert_eq!(r.until(1, 50), Some(100));
        assert_eq!(r.until(1, 100), None);
        assert!(r.map.is_empty(), "a past deadline is forgotten");
        r.remember(1, u64::MAX);
        r.remember(2, u64::MAX);
        r.remember(3, u64::MAX);
        assert_eq!(r.until(3, 0), None, "at the cap nothing more is remembered");
        assert_eq!(r.map.len(), 2);
    }
}
