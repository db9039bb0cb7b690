//! JWT validation at the edge: a bearer token (header or cookie) checked
//! against its issuer's public keys, its claims copied onto the upstream
//! request.
//!
//! Keys from a Secret are parsed once per table build. Keys from a URL
//! live outside the table in [`JwtState`]: one [`JwksFetcher`] per URL,
//! whose task fetches the set off the request path, refreshes it on a
//! schedule and when a token names an unknown `kid` (at most once per
//! [`REFETCH_MIN_INTERVAL`]), and keeps the last good set through
//! failures. The request path reads the current set through an
//! `ArcSwap`: no lock.
//!
//! Signatures are checked by `jsonwebtoken` (on ring) on the worker: an
//! RS256 verification costs tens of microseconds (see the
//! `verification_cost` test), less than waking a blocking thread.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use prometheus_client::metrics::counter::Counter;
use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::filter::Answer;
use crate::filter::external_auth::{AuthCarry, AuthClient, Decision, ExternalAuthState};
use crate::model::{AuthKeepalive, ClaimHeader, JwksSource, Jwt, JwtProvider, TokenSource};
use crate::store::KeyedStore;

/// The algorithms a token may be signed with. `none` and HMAC are
/// refused: a shared secret would have to sit in the proxy and the IdP.
const ALGORITHMS: [Algorithm; 6] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// A JWKS document larger than this is refused (real ones are a few KiB).
const MAX_JWKS_BYTES: usize = 512 * 1024;
/// Bounds one fetch, connecting included.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);
/// The refresh period when the answer names none (`Cache-Control:
/// max-age`), and the bounds on one it names.
pub const DEFAULT_REFRESH: Duration = Duration::from_secs(300);
const MIN_REFRESH: Duration = Duration::from_secs(30);
const MAX_REFRESH: Duration = Duration::from_secs(24 * 3600);
/// After a failed fetch with no key set yet, retry this soon.
const RETRY: Duration = Duration::from_secs(5);
/// Unknown-`kid` refetches per URL are at most this frequent, so a flood
/// of made-up kids cannot hammer the IdP.
pub const REFETCH_MIN_INTERVAL: Duration = Duration::from_secs(10);
/// How long a request waits for a fetch it needs (the first, or a
/// refetch for its `kid`).
const WAIT_FOR_KEYS: Duration = Duration::from_secs(5);

/// Errors in a JWKS document.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS document: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "key {0:?} is a shared secret (kty oct): HMAC keys are refused, publish the issuer's public keys"
    )]
    SharedSecret(String),
    #[error("key {0:?}: algorithm {1:?} is not accepted (RS256/384/512, ES256/384, EdDSA)")]
    Algorithm(String, KeyAlgorithm),
    #[error("key {0:?}: {1}")]
    Key(String, jsonwebtoken::errors::Error),
    #[error("the key set has no usable key")]
    Empty,
}

/// One public key with the algorithms it may verify.
struct Key {
    kid: Option<String>,
    algorithms: &'static [Algorithm],
    key: DecodingKey,
}

/// An issuer's keys, parsed.
#[derive(Default)]
pub struct KeySet {
    keys: Vec<Key>,
}

impl KeySet {
    /// Parses a JWKS document. A shared secret or a refused algorithm
    /// fails the whole set: it is a configuration mistake to report.
    /// Keys of other uses (`use: enc`) are skipped.
    pub fn parse(text: &[u8]) -> Result<Self, JwksError> {
        let set: JwkSet = serde_json::from_slice(text)?;
        let mut keys = Vec::with_capacity(set.keys.len());
        for jwk in &set.keys {
            if let Some(key) = Key::from_jwk(jwk)? {
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Err(JwksError::Empty);
        }
        Ok(Self { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key for a token's `kid` and `alg`: by `kid` when the token
    /// names one, else the first key of that algorithm.
    fn find(&self, kid: Option<&str>, alg: Algorithm) -> Option<&Key> {
        self.keys.iter().find(|k| {
            k.algorithms.contains(&alg)
                && match kid {
                    Some(kid) => k.kid.as_deref() == Some(kid),
                    None => true,
                }
        })
    }

    fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

impl Key {
    fn from_jwk(jwk: &Jwk) -> Result<Option<Self>, JwksError> {
        let kid = jwk.common.key_id.clone();
        let name = || kid.clone().unwrap_or_default();
        if matches!(
            jwk.common.public_key_use,
            Some(jsonwebtoken::jwk::PublicKeyUse::Encryption)
        ) {
            return Ok(None);
        }
        let by_type: &'static [Algorithm] = match &jwk.algorithm {
            AlgorithmParameters::OctetKey(_) => return Err(JwksError::SharedSecret(name())),
            AlgorithmParameters::RSA(_) => &ALGORITHMS[0..3],
            AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
                EllipticCurve::P256 => &ALGORITHMS[3..4],
                EllipticCurve::P384 => &ALGORITHMS[4..5],
                _ => return Ok(None),
            },
            AlgorithmParameters::OctetKeyPair(_) => &ALGORITHMS[5..6],
        };
        // A key that names its algorithm verifies only that one.
        let algorithms = match jwk.common.key_algorithm {
            None => by_type,
            Some(alg) => {
                let pinned = match alg {
                    KeyAlgorithm::RS256 => &ALGORITHMS[0..1],
                    KeyAlgorithm::RS384 => &ALGORITHMS[1..2],
                    KeyAlgorithm::RS512 => &ALGORITHMS[2..3],
                    KeyAlgorithm::ES256 => &ALGORITHMS[3..4],
                    KeyAlgorithm::ES384 => &ALGORITHMS[4..5],
                    KeyAlgorithm::EdDSA => &ALGORITHMS[5..6],
                    KeyAlgorithm::HS256 | KeyAlgorithm::HS384 | KeyAlgorithm::HS512 => {
                        return Err(JwksError::SharedSecret(name()));
                    }
                    other => return Err(JwksError::Algorithm(name(), other)),
                };
                if !by_type.contains(&pinned[0]) {
                    return Err(JwksError::Algorithm(name(), alg));
                }
                pinned
            }
        };
        let key = DecodingKey::from_jwk(jwk).map_err(|e| JwksError::Key(name(), e))?;
        Ok(Some(Self {
            kid,
            algorithms,
            key,
        }))
    }
}

// === impl JwtState ===

/// The counters of `portico_jwt_checks_total` and
/// `portico_jwks_fetches_total`.
#[derive(Clone, Default)]
pub struct JwtCounters {
    pub allowed: Counter,
    /// No token on a rule that requires one.
    pub missing: Counter,
    /// By [`Refusal`], in [`Refusal::ALL`] order.
    pub refused: [Counter; Refusal::ALL.len()],
    pub fetch_ok: Counter,
    pub fetch_failed: Counter,
}

/// What JWT keeps outside the table: one fetcher per JWKS URL, and the
/// counters.
#[derive(Default)]
pub struct JwtState {
    fetchers: KeyedStore<String, JwksFetcher>,
    counters: Arc<JwtCounters>,
}

impl JwtState {
    pub fn new(counters: JwtCounters) -> Self {
        Self {
            fetchers: KeyedStore::default(),
            counters: Arc::new(counters),
        }
    }

    /// The fetcher for `uri`, started by the first table that names it.
    fn fetcher(&self, uri: &str, auth: &ExternalAuthState) -> Option<Arc<JwksFetcher>> {
        self.fetchers.prune();
        let uri = uri.to_owned();
        self.fetchers.try_get_or_insert_with(uri.clone(), || {
            let parsed: Uri = uri.parse().ok()?;
            let client = auth.client(AuthKeepalive::default(), FETCH_TIMEOUT);
            JwksFetcher::start(parsed, client, Arc::clone(&self.counters))
        })
    }
}

// === impl JwksFetcher ===

/// One JWKS URL's key set, kept fresh by a task that stops with it.
pub struct JwksFetcher {
    shared: Arc<Fetched>,
    task: tokio::task::AbortHandle,
}

struct Fetched {
    keys: ArcSwapOption<KeySet>,
    /// Bumped after every attempt, good or not: waiters look again.
    attempts: AtomicU64,
    attempted: Notify,
    /// A request saw an unknown `kid`.
    wanted: Notify,
    /// When the last `kid` refetch was asked, in ms since `epoch`; 0:
    /// never.
    last_wanted: AtomicU64,
    epoch: tokio::time::Instant,
}

impl Drop for JwksFetcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksFetcher {
    /// `None` outside a tokio runtime (no table is built there).
    fn start(uri: Uri, client: Arc<AuthClient>, counters: Arc<JwtCounters>) -> Option<Self> {
        let handle = tokio::runtime::Handle::try_current().ok()?;
        let shared = Arc::new(Fetched {
            keys: ArcSwapOption::empty(),
            attempts: AtomicU64::new(0),
            attempted: Notify::new(),
            wanted: Notify::new(),
            last_wanted: AtomicU64::new(0),
            epoch: tokio::time::Instant::now(),
        });
        let task = handle
            .spawn(Arc::clone(&shared).run(uri, client, counters))
            .abort_handle();
        Some(Self { shared, task })
    }
}

impl Fetched {
    async fn run(self: Arc<Self>, uri: Uri, client: Arc<AuthClient>, counters: Arc<JwtCounters>) {
        loop {
            let next = match fetch(&client, &uri).await {
                Ok((keys, max_age)) => {
                    counters.fetch_ok.inc();
                    tracing::debug!(jwks.uri = %uri, keys = keys.len(), "JWKS fetched");
                    self.keys.store(Some(Arc::new(keys)));
                    max_age.unwrap_or(DEFAULT_REFRESH)
                }
                Err(error) => {
                    // The last good set stays.
                    counters.fetch_failed.inc();
                    tracing::warn!(jwks.uri = %uri, %error, "JWKS fetch failed");
                    if self.keys.load().is_some() {
                        MIN_REFRESH
                    } else {
                        RETRY
                    }
                }
            };
            self.attempts.fetch_add(1, Ordering::Release);
            self.attempted.notify_waiters();
            tokio::select! {
                _ = tokio::time::sleep(next) => {}
                _ = self.wanted.notified() => {}
            }
        }
    }

    /// Asks for a refetch for an unknown `kid`, unless one was asked less
    /// than [`REFETCH_MIN_INTERVAL`] ago. Whether it was asked.
    fn want(&self) -> bool {
        // +1: 0 means never.
        let now = self.epoch.elapsed().as_millis() as u64 + 1;
        let last = self.last_wanted.load(Ordering::Acquire);
        if last != 0 && now.saturating_sub(last) < REFETCH_MIN_INTERVAL.as_millis() as u64 {
            return false;
        }
        if self
            .last_wanted
            .compare_exchange(last, now, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            // Another request just asked.
            return false;
        }
        self.wanted.notify_one();
        true
    }

    /// Waits until an attempt after `seen` ends, or [`WAIT_FOR_KEYS`].
    async fn after(&self, seen: u64) {
        let _ = tokio::time::timeout(WAIT_FOR_KEYS, async {
            loop {
                let notified = self.attempted.notified();
                if self.attempts.load(Ordering::Acquire) > seen {
                    return;
                }
                notified.await;
            }
        })
        .await;
    }
}

/// Errors fetching a JWKS document.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("request failed: {0}")]
    Request(#[from] hyper_util::client::legacy::Error),
    #[error("timed out")]
    Timeout,
    #[error("answered {0}")]
    Status(StatusCode),
    #[error("body unreadable or larger than {MAX_JWKS_BYTES} bytes")]
    Body,
    #[error(transparent)]
    Jwks(#[from] JwksError),
}

async fn fetch(client: &AuthClient, uri: &Uri) -> Result<(KeySet, Option<Duration>), FetchError> {
    let req = http::Request::get(uri.clone())
        .header(header::ACCEPT, "application/json")
        .body(Empty::<Bytes>::new())
        .map_err(|_| FetchError::Status(StatusCode::BAD_REQUEST))?;
    let exchange = async {
        let rsp = client.request(req).await?;
        if !rsp.status().is_success() {
            return Err(FetchError::Status(rsp.status()));
        }
        let max_age = max_age(rsp.headers());
        let body = Limited::new(rsp.into_body(), MAX_JWKS_BYTES)
            .collect()
            .await
            .map_err(|_| FetchError::Body)?
            .to_bytes();
        Ok((KeySet::parse(&body)?, max_age))
    };
    tokio::time::timeout(FETCH_TIMEOUT, exchange)
        .await
        .map_err(|_| FetchError::Timeout)?
}

/// `Cache-Control: max-age`, within [`MIN_REFRESH`]..[`MAX_REFRESH`].
fn max_age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::CACHE_CONTROL)?.to_str().ok()?;
    value.split(',').find_map(|d| {
        let secs: u64 = d.trim().strip_prefix("max-age=")?.parse().ok()?;
        Some(Duration::from_secs(secs).clamp(MIN_REFRESH, MAX_REFRESH))
    })
}

// === impl JwtFilter ===

/// Seconds since the epoch; a parameter so tests can move time.
pub type Clock = fn() -> u64;

fn system_clock() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A JWT policy, compiled.
pub(crate) struct JwtFilter {
    providers: Arc<[Provider]>,
    required: bool,
    /// Every claim header of every provider: the client's copies go.
    names: Arc<[HeaderName]>,
    counters: Arc<JwtCounters>,
    /// By [`Refusal`], in [`Refusal::ALL`] order: a refusal costs no
    /// allocation for its `WWW-Authenticate`.
    challenges: Arc<[HeaderValue]>,
}

struct Provider {
    issuer: String,
    from: TokenSource,
    keys: Keys,
    /// One per accepted algorithm, in [`ALGORITHMS`] order: the crate
    /// wants every listed algorithm to fit the key.
    validations: Box<[Validation]>,
    claims: Box<[ClaimHeader]>,
    required_claims: Box<[String]>,
    skew: u64,
    now: Clock,
}

enum Keys {
    /// From a Secret; `None`: the document was unusable (reported by
    /// translation), every token fails.
    Static(Option<Arc<KeySet>>),
    Fetched(Option<Arc<JwksFetcher>>),
}

/// Why a token was refused: the `error_description` and the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Malformed,
    Algorithm,
    Issuer,
    UnknownKey,
    Signature,
    Audience,
    Expired,
    NotYetValid,
    MissingClaim,
    ClaimValue,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::Malformed,
        Refusal::Algorithm,
        Refusal::Issuer,
        Refusal::UnknownKey,
        Refusal::Signature,
        Refusal::Audience,
        Refusal::Expired,
        Refusal::NotYetValid,
        Refusal::MissingClaim,
        Refusal::ClaimValue,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed",
            Refusal::Algorithm => "algorithm",
            Refusal::Issuer => "issuer",
            Refusal::UnknownKey => "unknown_key",
            Refusal::Signature => "signature",
            Refusal::Audience => "audience",
            Refusal::Expired => "expired",
            Refusal::NotYetValid => "not_yet_valid",
            Refusal::MissingClaim => "missing_claim",
            Refusal::ClaimValue => "claim_value",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Refusal::Malformed => "malformed token",
            Refusal::Algorithm => "algorithm not accepted",
            Refusal::Issuer => "unknown issuer",
            Refusal::UnknownKey => "unknown signing key",
            Refusal::Signature => "invalid signature",
            Refusal::Audience => "audience not accepted",
            Refusal::Expired => "token expired",
            Refusal::NotYetValid => "token not yet valid",
            Refusal::MissingClaim => "required claim missing",
            Refusal::ClaimValue => "claim not usable as a header value",
        }
    }

    /// The RFC 6750 challenge; made once per table build (see
    /// [`JwtFilter::challenges`]).
    fn challenge(self) -> HeaderValue {
        // Fixed ASCII text: always a valid header value.
        HeaderValue::try_from(format!(
            "Bearer error=\"invalid_token\", error_description=\"{}\"",
            self.description()
        ))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer error=\"invalid_token\""))
    }
}

/// What the filter decided.
pub(crate) enum Check {
    Admit(Box<AuthCarry>),
    Answer(Answer),
    Wait(crate::filter::external_auth::Wait),
}

impl JwtFilter {
    pub(crate) fn build(jwt: &Jwt, state: &JwtState, auth: &ExternalAuthState) -> Self {
        Self::build_with_clock(jwt, state, auth, system_clock)
    }

    pub(crate) fn build_with_clock(
        jwt: &Jwt,
        state: &JwtState,
        auth: &ExternalAuthState,
        now: Clock,
    ) -> Self {
        let providers: Arc<[Provider]> = jwt
            .providers
            .iter()
            .map(|p| Provider::build(p, state, auth, now))
            .collect();
        let mut names: Vec<HeaderName> = jwt
            .providers
            .iter()
            .flat_map(|p| p.claim_to_headers.iter().map(|c| c.header.clone()))
            .collect();
        names.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        names.dedup();
        Self {
            providers,
            required: jwt.required,
            names: names.into(),
            counters: Arc::clone(&state.counters),
            challenges: Refusal::ALL.map(Refusal::challenge).into(),
        }
    }

    pub(crate) fn check(&self, headers: &HeaderMap, host: &str) -> Check {
        let mut saw_token = false;
        for (i, p) in self.providers.iter().enumerate() {
            let Some(token) = p.token(headers) else {
                continue;
            };
            saw_token = true;
            let Some(iss) = peek_issuer(token) else {
                return self.refuse(Refusal::Malformed);
            };
            if iss != p.issuer {
                continue;
            }
            return match p.validate(token) {
                Step::Done(Ok(upstream)) => {
                    self.counters.allowed.inc();
                    Check::Admit(self.carry(upstream))
                }
                Step::Done(Err(r)) => self.refuse(r),
                Step::Fetch(fetcher) => {
                    let seen = fetcher.shared.attempts.load(Ordering::Acquire);
                    let providers = Arc::clone(&self.providers);
                    let names = Arc::clone(&self.names);
                    let counters = Arc::clone(&self.counters);
                    let challenges = Arc::clone(&self.challenges);
                    let token = token.to_owned();
                    Check::Wait(Box::pin(async move {
                        fetcher.shared.after(seen).await;
                        let answer = match providers[i].validate(&token) {
                            Step::Done(Ok(upstream)) => {
                                counters.allowed.inc();
                                return Decision {
                                    answer: None,
                                    carry: Some(Box::new(AuthCarry::new(names, upstream))),
                                };
                            }
                            Step::Done(Err(r)) => {
                                counters.refused[r as usize].inc();
                                Answer::Unauthorized(challenges[r as usize].clone())
                            }
                            // The keys did not come: the proxy's failure,
                            // not the client's.
                            Step::Fetch(_) => Answer::Status(StatusCode::SERVICE_UNAVAILABLE),
                        };
                        Decision {
                            answer: Some(answer),
                            carry: None,
                        }
                    }))
                }
            };
        }
        if saw_token {
            return self.refuse(Refusal::Issuer);
        }
        if self.required {
            self.counters.missing.inc();
            Check::Answer(Answer::Unauthorized(realm(host)))
        } else {
            Check::Admit(self.carry(Vec::new()))
        }
    }

    fn carry(&self, upstream: Vec<(HeaderName, HeaderValue)>) -> Box<AuthCarry> {
        Box::new(AuthCarry::new(Arc::clone(&self.names), upstream))
    }

    fn refuse(&self, r: Refusal) -> Check {
        tracing::debug!(reason = r.description(), "JWT refused");
        self.counters.refused[r as usize].inc();
        Check::Answer(Answer::Unauthorized(self.challenges[r as usize].clone()))
    }
}

/// `Bearer realm="<host>"`; without the realm when the host cannot be
/// quoted.
fn realm(host: &str) -> HeaderValue {
    let (host, _) = crate::headers::split_host_port(host);
    if !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._[]:".contains(&b))
        && let Ok(v) = HeaderValue::try_from(format!("Bearer realm=\"{host}\""))
    {
        return v;
    }
    HeaderValue::from_static("Bearer")
}

/// The unverified `iss` of a token, to pick its provider; the signature
/// and the claim are checked after.
fn peek_issuer(token: &str) -> Option<String> {
    use base64::Engine as _;
    #[derive(serde::Deserialize)]
    struct Iss {
        iss: Option<String>,
    }
    let payload = token.split('.').nth(1)?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Iss>(&json).ok()?.iss
}

enum Step {
    Done(Result<Vec<(HeaderName, HeaderValue)>, Refusal>),
    /// The keys are not there yet, or lack the token's `kid`: wait for
    /// this fetcher's next attempt.
    Fetch(Arc<JwksFetcher>),
}

impl Provider {
    fn build(p: &JwtProvider, state: &JwtState, auth: &ExternalAuthState, now: Clock) -> Self {
        let keys = match &p.jwks {
            JwksSource::Inline { secret, jwks } => {
                Keys::Static(match KeySet::parse(jwks.as_bytes()) {
                    Ok(k) => Some(Arc::new(k)),
                    Err(error) => {
                        tracing::warn!(jwt.secret = %secret, %error, "JWKS unusable");
                        None
                    }
                })
            }
            JwksSource::Uri(uri) => Keys::Fetched(state.fetcher(uri, auth)),
        };
        let validations = ALGORITHMS
            .iter()
            .map(|alg| {
                let mut v = Validation::new(*alg);
                v.set_issuer(&[&p.issuer]);
                if p.audiences.is_empty() {
                    v.validate_aud = false;
                } else {
                    v.set_audience(&p.audiences);
                }
                // Checked in `verify`, with the injected clock.
                v.validate_exp = false;
                v.validate_nbf = false;
                v.required_spec_claims.clear();
                v
            })
            .collect();
        Self {
            issuer: p.issuer.clone(),
            from: p.from.clone(),
            keys,
            validations,
            claims: p.claim_to_headers.clone().into(),
            required_claims: p.required_claims.clone().into(),
            skew: p.clock_skew.as_secs(),
            now,
        }
    }

    fn token<'h>(&self, headers: &'h HeaderMap) -> Option<&'h str> {
        match &self.from {
            TokenSource::Header => headers.get_all(header::AUTHORIZATION).iter().find_map(|v| {
                let v = v.to_str().ok()?;
                let (scheme, token) = v.split_once(' ')?;
                scheme
                    .eq_ignore_ascii_case("bearer")
                    .then(|| token.trim())
                    .filter(|t| !t.is_empty())
            }),
            TokenSource::Named(name) => headers.get(name).and_then(|v| {
                let v = v.to_str().ok()?.trim();
                let token = match v.split_once(' ') {
                    Some((scheme, t)) if scheme.eq_ignore_ascii_case("bearer") => t.trim(),
                    _ => v,
                };
                (!token.is_empty()).then_some(token)
            }),
            TokenSource::Cookie(name) => headers
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .find_map(|pair| {
                    let (k, v) = pair.trim().split_once('=')?;
                    (k == name && !v.is_empty()).then_some(v)
                }),
        }
    }

    fn validate(&self, token: &str) -> Step {
        let Ok(head) = jsonwebtoken::decode_header(token) else {
            return Step::Done(Err(Refusal::Malformed));
        };
        if !ALGORITHMS.contains(&head.alg) {
            return Step::Done(Err(Refusal::Algorithm));
        }
        let kid = head.kid.as_deref();
        let keys = match &self.keys {
            Keys::Static(Some(k)) => Arc::clone(k),
            Keys::Static(None) | Keys::Fetched(None) => {
                return Step::Done(Err(Refusal::UnknownKey));
            }
            Keys::Fetched(Some(f)) => match f.shared.keys.load_full() {
                None => return Step::Fetch(Arc::clone(f)),
                Some(k) => {
                    if let Some(kid) = kid
                        && !k.has_kid(kid)
                        && f.shared.want()
                    {
                        return Step::Fetch(Arc::clone(f));
                    }
                    k
                }
            },
        };
        let Some(key) = keys.find(kid, head.alg) else {
            return Step::Done(Err(Refusal::UnknownKey));
        };
        Step::Done(self.verify(token, key, head.alg))
    }

    fn verify(
        &self,
        token: &str,
        key: &Key,
        alg: Algorithm,
    ) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
        use jsonwebtoken::errors::ErrorKind;
        let Some(validation) = ALGORITHMS
            .iter()
            .position(|a| *a == alg)
            .and_then(|i| self.validations.get(i))
        else {
            return Err(Refusal::Algorithm);
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => Refusal::Signature,
                ErrorKind::InvalidIssuer => Refusal::Issuer,
                ErrorKind::InvalidAudience => Refusal::Audience,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => Refusal::Algorithm,
                ErrorKind::MissingRequiredClaim(_) => Refusal::MissingClaim,
                _ => Refusal::Malformed,
            })?;
        let claims = data.claims;
        let now = (self.now)();
        let Some(exp) = claims.get("exp").and_then(Value::as_u64) else {
            return Err(Refusal::MissingClaim);
        };
        if now > exp.saturating_add(self.skew) {
            return Err(Refusal::Expired);
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = nbf.as_u64().ok_or(Refusal::Malformed)?;
            if now.saturating_add(self.skew) < nbf {
                return Err(Refusal::NotYetValid);
            }
        }
        if self.required_claims.iter().any(|c| !claims.contains_key(c)) {
            return Err(Refusal::MissingClaim);
        }
        claim_headers(&claims, &self.claims)
    }
}

/// The claim headers for the upstream. A claim that is not a string,
/// number or bool is left out; one whose text is not a header value (CR,
/// LF, NUL, ...) refuses the token: it is never pasted.
fn claim_headers(
    claims: &Map<String, Value>,
    wanted: &[ClaimHeader],
) -> Result<Vec<(HeaderName, HeaderValue)>, Refusal> {
    let mut out = Vec::with_capacity(wanted.len());
    for c in wanted {
        let text = match claims.get(&c.claim) {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            Some(Value::Bool(b)) => b.to_string(),
            _ => continue,
        };
        let value = HeaderValue::try_from(text).map_err(|_| Refusal::ClaimValue)?;
        out.push((c.header.clone(), value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
