//! HTTP Basic authentication (ingress-nginx `auth-type: basic`): htpasswd
//! entries parsed into typed hashes, and their verification off the async
//! workers.
//!
//! A password hash is slow on purpose (bcrypt at cost 10 takes tens of
//! milliseconds), so checking one on a tokio worker would stall every other
//! request on it. A check runs on the blocking pool behind two semaphores:
//! at most `concurrency` hashes at once, at most `queue` more waiting; past
//! that the request answers 503 at once and is counted. A small cache of
//! recently verified credentials spares a logged-in browser a hash per
//! request; it holds a keyed hash of `user:password`, never the password,
//! and belongs to one Secret's content: it survives table swaps while that
//! content is unchanged and is dropped with it.
//!
//! A failed attempt costs the same whether the user exists or not: an
//! unknown user's password is checked against a hash of the file's most
//! common kind and cost.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use base64::Engine as _;
use http::StatusCode;
use http::header::{self, HeaderMap, HeaderValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use ring::{digest, hmac};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tracing::warn;

use crate::filter::Answer;
use crate::store::KeyedStore;

/// bcrypt costs above this are refused: one check would take about a
/// second of CPU, per request that misses the cache.
pub const MAX_BCRYPT_COST: u32 = 14;
/// SHA-crypt rounds above this are refused, for the same reason.
pub const MAX_SHA_CRYPT_ROUNDS: u32 = 1_000_000;
/// Realms longer than this are refused.
pub const MAX_REALM_LEN: usize = 256;

// === hashes ===

/// One htpasswd password hash, checked and typed when parsed. Its text is
/// never printed (`Debug` shows the kind) nor serialised.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash {
    kind: HashKind,
}

#[derive(Clone, PartialEq, Eq)]
enum HashKind {
    /// `$2a$`, `$2b$`, `$2y$`: the bcrypt crate reads the text.
    Bcrypt { text: Box<str>, cost: u32 },
    /// `$apr1$` (Apache) or `$1$` (MD5-crypt): the same algorithm, each
    /// with its own magic.
    Md5Crypt {
        magic: &'static str,
        salt: Box<str>,
        /// The 22 characters of the encoded digest.
        digest: Box<str>,
    },
    /// `$5$` or `$6$`: the sha-crypt crate reads the text.
    ShaCrypt {
        text: Box<str>,
        sha512: bool,
        rounds: u32,
    },
    /// `{SHA}`: unsalted SHA-1, base64.
    Sha1([u8; 20]),
}

/// Why an htpasswd entry is refused. Never holds the hash itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum HashError {
    #[error("empty password hash")]
    Empty,
    #[error(
        "a crypt(3) DES hash is refused (it reads only 8 characters of a password); use bcrypt (htpasswd -B)"
    )]
    Des,
    #[error(
        "not a supported hash (bcrypt, apr1/MD5-crypt, SHA-256/512-crypt or {{SHA}}); plain-text passwords are refused"
    )]
    Plain,
    #[error("unsupported hash scheme {0}; use bcrypt (htpasswd -B)")]
    Unsupported(String),
    #[error("malformed {0} hash")]
    Malformed(&'static str),
    #[error("{kind} cost {cost} is above {max}: each check would take too long")]
    TooCostly {
        kind: &'static str,
        cost: u32,
        max: u32,
    },
}

/// The alphabet of crypt(3)'s base64.
const CRYPT64: &[u8; 64] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

fn is_crypt64(s: &str) -> bool {
    s.bytes().all(|b| CRYPT64.contains(&b))
}

impl PasswordHash {
    /// Parses one hash as htpasswd writes it.
    pub fn parse(text: &str) -> Result<Self, HashError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(HashError::Empty);
        }
        if let Some(b64) = text.strip_prefix("{SHA}") {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(b64)
                .map_err(|_| HashError::Malformed("{SHA}"))?;
            let digest: [u8; 20] = bytes
                .try_into()
                .map_err(|_| HashError::Malformed("{SHA}"))?;
            return Ok(Self {
                kind: HashKind::Sha1(digest),
            });
        }
        let Some(rest) = text.strip_prefix('$') else {
            return Err(if text.len() == 13 && is_crypt64(text) {
                HashError::Des
            } else {
                HashError::Plain
            });
        };
        let (id, _) = rest.split_once('$').ok_or(HashError::Plain)?;
        let kind = match id {
            "2a" | "2b" | "2y" => bcrypt_kind(text)?,
            "apr1" => md5_kind("$apr1$", &rest[5..])?,
            "1" => md5_kind("$1$", &rest[2..])?,
            "5" | "6" => sha_crypt_kind(text, id == "6", &rest[2..])?,
            _ => {
                // The scheme's name only, and only when it looks like one.
                let shown = if id.len() <= 16 && id.bytes().all(|b| b.is_ascii_alphanumeric()) {
                    format!("${id}$")
                } else {
                    "(unknown)".to_owned()
                };
                return Err(HashError::Unsupported(shown));
            }
        };
        Ok(Self { kind })
    }

    /// Whether `password` matches, in constant time for the comparison.
    /// Slow by design: never call it on an async worker.
    pub fn verify(&self, password: &[u8]) -> bool {
        match &self.kind {
            // The crate compares with `subtle`; an error is a mismatch.
            HashKind::Bcrypt { text, .. } => bcrypt::verify(password, text).unwrap_or(false),
            HashKind::Md5Crypt {
                magic,
                salt,
                digest,
            } => {
                let computed = md5_crypt(password, magic.as_bytes(), salt.as_bytes());
                computed.as_slice().ct_eq(digest.as_bytes()).into()
            }
            HashKind::ShaCrypt { text, .. } => {
                use sha_crypt::PasswordVerifier as _;
                // The crate compares with constant-time equality.
                sha_crypt::ShaCrypt::default()
                    .verify_password(password, &**text)
                    .is_ok()
            }
            HashKind::Sha1(want) => {
                use sha1::Digest as _;
                let got = sha1::Sha1::digest(password);
                got.as_slice().ct_eq(want).into()
            }
        }
    }

    /// The kind's name, for `Debug` and messages.
    pub fn kind_name(&self) -> &'static str {
        match &self.kind {
            HashKind::Bcrypt { .. } => "bcrypt",
            HashKind::Md5Crypt {
                magic: "$apr1$", ..
            } => "apr1",
            HashKind::Md5Crypt { .. } => "MD5-crypt",
            HashKind::ShaCrypt { sha512: false, .. } => "SHA-256-crypt",
            HashKind::ShaCrypt { sha512: true, .. } => "SHA-512-crypt",
            HashKind::Sha1(_) => "{SHA}",
        }
    }

    /// Kind and cost: hashes of one class take the same time to check.
    fn class(&self) -> (&'static str, u32) {
        let cost = match &self.kind {
            HashKind::Bcrypt { cost, .. } => *cost,
            HashKind::ShaCrypt { rounds, .. } => *rounds,
            HashKind::Md5Crypt { .. } | HashKind::Sha1(_) => 0,
        };
        (self.kind_name(), cost)
    }

    /// Feeds the hash into a content fingerprint.
    fn fingerprint(&self, ctx: &mut digest::Context) {
        match &self.kind {
            HashKind::Bcrypt { text, .. } | HashKind::ShaCrypt { text, .. } => {
                ctx.update(text.as_bytes())
            }
            HashKind::Md5Crypt {
                magic,
                salt,
                digest,
            } => {
                ctx.update(magic.as_bytes());
                ctx.update(salt.as_bytes());
                ctx.update(b"$");
                ctx.update(digest.as_bytes());
            }
            HashKind::Sha1(d) => {
                ctx.update(b"{SHA}");
                ctx.update(d);
            }
        }
        ctx.update(&[0]);
    }
}

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PasswordHash({})", self.kind_name())
    }
}

fn bcrypt_kind(text: &str) -> Result<HashKind, HashError> {
    let parts: bcrypt::HashParts = text.parse().map_err(|_| HashError::Malformed("bcrypt"))?;
    let cost = parts.get_cost();
    if cost > MAX_BCRYPT_COST {
        return Err(HashError::TooCostly {
            kind: "bcrypt",
            cost,
            max: MAX_BCRYPT_COST,
        });
    }
    Ok(HashKind::Bcrypt {
        text: text.into(),
        cost,
    })
}

/// `rest`: what follows the magic, `salt$digest`.
fn md5_kind(magic: &'static str, rest: &str) -> Result<HashKind, HashError> {
    let malformed = HashError::Malformed(if magic == "$apr1$" {
        "apr1"
    } else {
        "MD5-crypt"
    });
    let (salt, digest) = rest.split_once('$').ok_or(malformed.clone())?;
    if salt.is_empty() || salt.len() > 8 || digest.len() != 22 || !is_crypt64(digest) {
        return Err(malformed);
    }
    Ok(HashKind::Md5Crypt {
        magic,
        salt: salt.into(),
        digest: digest.into(),
    })
}

/// `rest`: what follows `$5$`, `[rounds=N$]salt$digest`.
fn sha_crypt_kind(text: &str, sha512: bool, rest: &str) -> Result<HashKind, HashError> {
    let name = if sha512 {
        "SHA-512-crypt"
    } else {
        "SHA-256-crypt"
    };
    let malformed = HashError::Malformed(name);
    let mut fields: Vec<&str> = rest.split('$').collect();
    let rounds = match fields.first().and_then(|f| f.strip_prefix("rounds=")) {
        Some(n) => {
            let n: u32 = n.parse().map_err(|_| malformed.clone())?;
            fields.remove(0);
            n
        }
        None => 5000,
    };
    let digest_len = if sha512 { 86 } else { 43 };
    match fields[..] {
        [salt, digest] if digest.len() == digest_len && is_crypt64(digest) && !salt.is_empty() => {}
        _ => return Err(malformed),
    }
    // glibc's range; sha-crypt refuses what lies outside it.
    if rounds < 1000 {
        return Err(malformed);
    }
    if rounds > MAX_SHA_CRYPT_ROUNDS {
        return Err(HashError::TooCostly {
            kind: name,
            cost: rounds,
            max: MAX_SHA_CRYPT_ROUNDS,
        });
    }
    Ok(HashKind::ShaCrypt {
        text: text.into(),
        sha512,
        rounds,
    })
}

/// MD5-crypt (FreeBSD's, and Apache's apr1 with its own magic), on the
/// `md-5` crate: no maintained crate implements it. Returns the 22
/// characters of the encoded digest.
fn md5_crypt(password: &[u8], magic: &[u8], salt: &[u8]) -> [u8; 22] {
    use md5::{Digest, Md5};
    let mut alt = Md5::new();
    alt.update(password);
    alt.update(salt);
    alt.update(password);
    let alt = alt.finalize();

    let mut ctx = Md5::new();
    ctx.update(password);
    ctx.update(magic);
    ctx.update(salt);
    let mut left = password.len();
    while left > 0 {
        let n = left.min(16);
        ctx.update(&alt[..n]);
        left -= n;
    }
    let mut i = password.len();
    while i > 0 {
        if i & 1 == 1 {
            ctx.update([0u8]);
        } else {
            ctx.update(&password[..1]);
        }
        i >>= 1;
    }
    let mut fin: [u8; 16] = ctx.finalize().into();
    for round in 0..1000 {
        let mut c = Md5::new();
        if round & 1 == 1 {
            c.update(password);
        } else {
            c.update(fin);
        }
        if round % 3 != 0 {
            c.update(salt);
        }
        if round % 7 != 0 {
            c.update(password);
        }
        if round & 1 == 1 {
            c.update(fin);
        } else {
            c.update(password);
        }
        fin = c.finalize().into();
    }
    let mut out = [0u8; 22];
    let mut at = 0;
    let mut put = |mut v: u32, n: usize| {
        for _ in 0..n {
            out[at] = CRYPT64[(v & 0x3f) as usize];
            at += 1;
            v >>= 6;
        }
    };
    let f = |i: usize| u32::from(fin[i]);
    for (a, b, c) in [(0, 6, 12), (1, 7, 13), (2, 8, 14), (3, 9, 15), (4, 10, 5)] {
        put((f(a) << 16) | (f(b) << 8) | f(c), 4);
    }
    put(f(11), 2);
    out
}

// === users ===

/// One user of a basic-auth filter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credential {
    pub user: String,
    pub hash: PasswordHash,
}

/// The users of a basic-auth filter. Serialised as their count only: the
/// hashes never leave the process (`/debug/routes`), so a config read back
/// from JSON has no users and denies everyone.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Credentials(Arc<[Credential]>);

impl Credentials {
    pub fn new(users: Vec<Credential>) -> Self {
        Self(users.into())
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Credential> {
        self.0.iter()
    }

    /// A digest of the users and hashes: the identity of the content, under
    /// which its cache outlives table swaps.
    fn fingerprint(&self) -> [u8; 32] {
        let mut ctx = digest::Context::new(&digest::SHA256);
        for c in self.0.iter() {
            ctx.update(c.user.as_bytes());
            ctx.update(&[0]);
            c.hash.fingerprint(&mut ctx);
        }
        let mut out = [0u8; 32];
        out.copy_from_slice(ctx.finish().as_ref());
        out
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({} users)", self.0.len())
    }
}

impl Serialize for Credentials {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(self.0.len() as u64)
    }
}

impl<'de> Deserialize<'de> for Credentials {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(Self::default())
    }
}

/// An htpasswd entry that was refused, by line (1-based) or key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntryError {
    /// `line 3` or `key "alice"`.
    pub at: String,
    /// The user, when the entry names one.
    pub user: Option<String>,
    pub reason: String,
}

/// Users and the entries refused on the way.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedUsers {
    pub users: Vec<Credential>,
    pub errors: Vec<EntryError>,
}

impl ParsedUsers {
    fn add(&mut self, at: String, user: &str, hash: &str) {
        let user_owned = (!user.is_empty()).then(|| user.to_owned());
        if user.is_empty() {
            self.errors.push(EntryError {
                at,
                user: None,
                reason: "no user name".into(),
            });
            return;
        }
        if self.users.iter().any(|c| c.user == user) {
            self.errors.push(EntryError {
                at,
                user: user_owned,
                reason: "the user is listed again; the first entry applies".into(),
            });
            return;
        }
        match PasswordHash::parse(hash) {
            Ok(hash) => self.users.push(Credential {
                user: user.to_owned(),
                hash,
            }),
            Err(e) => self.errors.push(EntryError {
                at,
                user: user_owned,
                reason: e.to_string(),
            }),
        }
    }
}

/// An htpasswd file (`auth-secret-type: auth-file`): `user:hash` lines, as
/// nginx reads them: blank lines and `#` comments skipped, anything after a
/// second `:` a comment, the first entry of a user applies.
pub fn parse_htpasswd(text: &str) -> ParsedUsers {
    let mut out = ParsedUsers::default();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let at = format!("line {}", i + 1);
        let Some((user, rest)) = line.split_once(':') else {
            out.errors.push(EntryError {
                at,
                user: None,
                reason: "not a user:hash line".into(),
            });
            continue;
        };
        let hash = rest.split_once(':').map_or(rest, |(h, _)| h);
        out.add(at, user, hash);
    }
    out
}

/// A user map (`auth-secret-type: auth-map`): each key a user, each value
/// a hash.
pub fn parse_user_map<'a>(entries: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> ParsedUsers {
    let mut out = ParsedUsers::default();
    for (user, value) in entries {
        let at = format!("key {user:?}");
        match std::str::from_utf8(value) {
            Ok(hash) => out.add(at, user, hash),
            Err(_) => out.errors.push(EntryError {
                at,
                user: Some(user.to_owned()),
                reason: "the value is not text".into(),
            }),
        }
    }
    out
}

/// Whether a realm can be sent as a quoted string: printable ASCII, no
/// `"` or `\`, at most [`MAX_REALM_LEN`] bytes.
pub fn check_realm(realm: &str) -> Result<(), &'static str> {
    if realm.len() > MAX_REALM_LEN {
        return Err("longer than 256 characters");
    }
    if realm.bytes().any(|b| b == b'"' || b == b'\\') {
        return Err("must not contain '\"' or '\\'");
    }
    if !realm.bytes().all(|b| (b' '..=b'~').contains(&b)) {
        return Err("only printable ASCII characters are allowed");
    }
    Ok(())
}

// === runtime ===

/// Limits of verification (flags `--basic-auth-*`).
#[derive(Clone, Copy, Debug)]
pub struct BasicAuthConfig {
    /// Hashes checked at once, on the blocking pool.
    pub concurrency: usize,
    /// Checks waiting for a slot beyond those; more answer 503.
    pub queue: usize,
    /// Verified credentials remembered per Secret content; 0: none.
    pub cache_entries: usize,
}

impl Default for BasicAuthConfig {
    fn default() -> Self {
        Self {
            concurrency: std::thread::available_parallelism().map_or(1, |n| n.get()),
            queue: 256,
            cache_entries: 1024,
        }
    }
}

/// The counters and gauge of `portico_basic_auth_*`.
#[derive(Clone, Default)]
pub struct AuthCounters {
    /// Admitted by a remembered credential.
    pub cached: Counter,
    /// Admitted after a hash check.
    pub verified: Counter,
    /// Wrong or unknown credentials.
    pub refused: Counter,
    /// No usable `Authorization: Basic` header.
    pub challenged: Counter,
    /// Answered 503: too many checks waiting.
    pub overloaded: Counter,
    /// Checks admitted and not finished.
    pub pending: Gauge,
}

/// What basic auth keeps outside the table: the verification slots, and
/// each Secret content's users and cache.
pub struct Verifier {
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
    cache_entries: usize,
    /// By content fingerprint: the one keyed store of state that outlives
    /// table swaps. Taken only when a table is built, never on the request
    /// path.
    tables: KeyedStore<[u8; 32], UserTable>,
    counters: AuthCounters,
}

impl Default for Verifier {
    fn default() -> Self {
        Self::new(BasicAuthConfig::default(), AuthCounters::default())
    }
}

impl Verifier {
    pub fn new(config: BasicAuthConfig, counters: AuthCounters) -> Self {
        let running = config.concurrency.clamp(1, Semaphore::MAX_PERMITS / 2);
        let admitted = running.saturating_add(config.queue.min(Semaphore::MAX_PERMITS / 2));
        Self {
            admitted: Arc::new(Semaphore::new(admitted)),
            running: Arc::new(Semaphore::new(running)),
            cache_entries: config.cache_entries,
            tables: KeyedStore::default(),
            counters,
        }
    }

    /// The users of `credentials`, shared with every earlier table built
    /// with the same content (and so its cache).
    fn table(&self, credentials: &Credentials) -> Arc<UserTable> {
        self.tables.prune();
        self.tables
            .get_or_insert_with(credentials.fingerprint(), || {
                UserTable::new(credentials, self.cache_entries)
            })
    }
}

/// One Secret content's users, by name, and its cache.
struct UserTable {
    users: HashMap<Box<[u8]>, PasswordHash>,
    /// Checked for unknown users: of the file's most common kind and cost.
    dummy: Option<PasswordHash>,
    cache: CredentialCache,
}

impl UserTable {
    fn new(credentials: &Credentials, cache_entries: usize) -> Self {
        let mut classes: Vec<((&str, u32), usize, &PasswordHash)> = Vec::new();
        for c in credentials.iter() {
            let class = c.hash.class();
            match classes.iter_mut().find(|(k, _, _)| *k == class) {
                Some((_, n, _)) => *n += 1,
                None => classes.push((class, 1, &c.hash)),
            }
        }
        // Most common first; the first listed on a tie.
        let dummy = classes
            .iter()
            .rev()
            .max_by_key(|(_, n, _)| *n)
            .map(|(_, _, h)| (*h).clone());
        Self {
            users: credentials
                .iter()
                .map(|c| (c.user.as_bytes().into(), c.hash.clone()))
                .collect(),
            dummy,
            cache: CredentialCache::new(cache_entries),
        }
    }

    /// Checks `user:password`. Slow: on the blocking pool only.
    fn verify(&self, credential: &[u8]) -> bool {
        let (user, password) = split_credential(credential);
        match self.users.get(user) {
            Some(hash) => hash.verify(password),
            None => {
                // The same work as for a user who exists; the answer is no.
                if let Some(d) = &self.dummy {
                    let _ = d.verify(password);
                }
                false
            }
        }
    }
}

/// `user:password` split at the first `:` (RFC 7617).
fn split_credential(credential: &[u8]) -> (&[u8], &[u8]) {
    match credential.iter().position(|b| *b == b':') {
        Some(i) => (&credential[..i], &credential[i + 1..]),
        None => (credential, &[]),
    }
}

/// Recently verified credentials, as keyed hashes, in a fixed number of
/// slots (a newer entry replaces the one in its slot). Lock-free to read.
struct CredentialCache {
    key: Option<hmac::Key>,
    slots: Box<[ArcSwapOption<[u8; 32]>]>,
}

impl CredentialCache {
    fn new(entries: usize) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let key = match hmac::Key::generate(hmac::HMAC_SHA256, &rng) {
            Ok(k) => Some(k),
            Err(_) => {
                warn!("no randomness for the basic-auth cache key; every request is checked");
                None
            }
        };
        let entries = if key.is_some() { entries } else { 0 };
        Self {
            key,
            slots: (0..entries).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    fn tag(&self, credential: &[u8]) -> Option<[u8; 32]> {
        let key = self.key.as_ref().filter(|_| !self.slots.is_empty())?;
        let mut tag = [0u8; 32];
        tag.copy_from_slice(hmac::sign(key, credential).as_ref());
        Some(tag)
    }

    fn slot(&self, tag: &[u8; 32]) -> &ArcSwapOption<[u8; 32]> {
        let mut n = [0u8; 8];
        n.copy_from_slice(&tag[..8]);
        // `tag` only exists with slots: the length is never zero here.
        &self.slots[(u64::from_le_bytes(n) % self.slots.len() as u64) as usize]
    }

    fn contains(&self, tag: &[u8; 32]) -> bool {
        self.slot(tag)
            .load()
            .as_deref()
            .is_some_and(|t| bool::from(t.ct_eq(tag)))
    }

    fn insert(&self, tag: [u8; 32]) {
        self.slot(&tag).store(Some(Arc::new(tag)));
    }
}

/// A basic-auth filter, compiled.
pub(crate) struct BasicAuthFilter {
    /// `Basic realm="..."`.
    challenge: HeaderValue,
    users: Arc<UserTable>,
    admitted: Arc<Semaphore>,
    running: Arc<Semaphore>,
    counters: AuthCounters,
}

/// A check that must wait for a hash.
pub(crate) type Wait = Pin<Box<dyn Future<Output = Option<Answer>> + Send>>;

/// What the filter decided without waiting.
pub(crate) enum Check {
    Admit,
    Answer(Answer),
    Wait(Wait),
}

impl BasicAuthFilter {
    pub(crate) fn build(realm: &str, credentials: &Credentials, verifier: &Verifier) -> Self {
        // The translation checked the realm; a hand-written one that fails
        // the check is sent empty rather than unquoted.
        let realm = if check_realm(realm).is_ok() {
            realm
        } else {
            ""
        };
        let challenge = HeaderValue::try_from(format!("Basic realm=\"{realm}\""))
            .unwrap_or_else(|_| HeaderValue::from_static("Basic realm=\"\""));
        Self {
            challenge,
            users: verifier.table(credentials),
            admitted: Arc::clone(&verifier.admitted),
            running: Arc::clone(&verifier.running),
            counters: verifier.counters.clone(),
        }
    }

    fn unauthorized(&self) -> Answer {
        Answer::Unauthorized(self.challenge.clone())
    }

    /// The request side: admitted from the cache, challenged, refused at
    /// once when overloaded, or a hash check to await.
    pub(crate) fn check(&self, headers: &HeaderMap) -> Check {
        let Some(credential) = basic_credential(headers) else {
            self.counters.challenged.inc();
            return Check::Answer(self.unauthorized());
        };
        let tag = self.users.cache.tag(&credential);
        if tag.is_some_and(|t| self.users.cache.contains(&t)) {
            self.counters.cached.inc();
            return Check::Admit;
        }
        let Ok(admitted) = Arc::clone(&self.admitted).try_acquire_owned() else {
            self.counters.overloaded.inc();
            return Check::Answer(Answer::Status(StatusCode::SERVICE_UNAVAILABLE));
        };
        let pending = Pending::new(admitted, &self.counters.pending);
        let running = Arc::clone(&self.running);
        let users = Arc::clone(&self.users);
        let counters = self.counters.clone();
        let unauthorized = self.unauthorized();
        Check::Wait(Box::pin(async move {
            let Ok(slot) = running.acquire_owned().await else {
                return Some(Answer::Status(StatusCode::SERVICE_UNAVAILABLE));
            };
            let checker = Arc::clone(&users);
            // The permits go with the work: a client that leaves does not
            // free a slot while its hash still runs.
            let ok = tokio::task::spawn_blocking(move || {
                let _held = (slot, pending);
                checker.verify(&credential)
            })
            .await;
            match ok {
                Ok(true) => {
                    if let Some(t) = tag {
                        users.cache.insert(t);
                    }
                    counters.verified.inc();
                    None
                }
                Ok(false) => {
                    counters.refused.inc();
                    Some(unauthorized)
                }
                Err(_) => Some(Answer::Status(StatusCode::INTERNAL_SERVER_ERROR)),
            }
        }))
    }
}

/// An admitted check: holds its queue slot and counts as pending.
struct Pending {
    _admitted: OwnedSemaphorePermit,
    gauge: Gauge,
}

impl Pending {
    fn new(admitted: OwnedSemaphorePermit, gauge: &Gauge) -> Self {
        gauge.inc();
        Self {
            _admitted: admitted,
            gauge: gauge.clone(),
        }
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.gauge.dec();
    }
}

/// The decoded `user:password` of an `Authorization: Basic` header.
fn basic_credential(headers: &HeaderMap) -> Option<Vec<u8>> {
    let value = headers.get(header::AUTHORIZATION)?.as_bytes();
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, token) = value.split_at(space);
    if !scheme.eq_ignore_ascii_case(b"basic") {
        return None;
    }
    CREDENTIALS.decode(token.trim_ascii()).ok()
}

/// Standard base64; padding optional, as some clients leave it out.
const CREDENTIALS: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent),
);

#[cfg(test)]
mod tests {
    use super::*;

    /// Fixtures made by the real `htpasswd` (tests/fixtures/README.md):
    /// user `alice`, password `s3cret pass`; `bob`, password `hunter2`.
    fn fixture(name: &str) -> String {
        let path = format!(
            "{}/tests/fixtures/htpasswd/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn users(name: &str) -> Vec<Credential> {
        let parsed = parse_htpasswd(&fixture(name));
        assert!(parsed.errors.is_empty(), "{name}: {:?}", parsed.errors);
        parsed.users
    }

    #[test]
    fn each_hash_kind_checks_right_and_wrong_passwords() {
        for (file, kind) in [
            ("bcrypt", "bcrypt"),
            ("apr1", "apr1"),
            ("md5crypt", "MD5-crypt"),
            ("sha256", "SHA-256-crypt"),
            ("sha512", "SHA-512-crypt"),
            ("sha1", "{SHA}"),
        ] {
            let users = users(file);
            assert_eq!(users.len(), 2, "{file}");
            let alice = &users[0];
            let bob = &users[1];
            assert_eq!((alice.user.as_str(), bob.user.as_str()), ("alice", "bob"));
            assert_eq!(alice.hash.kind_name(), kind, "{file}");
            assert!(alice.hash.verify(b"s3cret pass"), "{file}");
            assert!(bob.hash.verify(b"hunter2"), "{file}");
            assert!(!alice.hash.verify(b"hunter2"), "{file}");
            assert!(!alice.hash.verify(b"s3cret pas"), "{file}");
            assert!(!alice.hash.verify(b""), "{file}");
            // Never printed.
            let shown = format!("{alice:?}");
            assert!(!shown.contains('$') && !shown.contains("{SHA}="), "{shown}");
        }
        let rounds = users("sha512-rounds");
        assert!(matches!(
            rounds[0].hash.kind,
            HashKind::ShaCrypt { rounds: 10_000, .. }
        ));
        assert!(rounds[0].hash.verify(b"s3cret pass"));
        assert!(!rounds[0].hash.verify(b"hunter2"));
    }

    #[test]
    fn unknown_users_are_refused_after_the_same_work() {
        let creds = Credentials::new(users("bcrypt"));
        let table = UserTable::new(&creds, 0);
        assert!(table.verify(b"alice:s3cret pass"));
        assert!(table.verify(b"bob:hunter2"));
        assert!(!table.verify(b"alice:hunter2"));
        assert!(!table.verify(b"carol:hunter2"));
        // Another user's password does not let an unknown user in, though
        // the dummy check is of a real entry.
        assert!(!table.verify(b"carol:s3cret pass"));
        assert!(!table.verify(b"alice"));
        assert_eq!(
            table.dummy.as_ref().map(PasswordHash::kind_name),
            Some("bcrypt")
        );
    }

    #[test]
    fn the_dummy_is_of_the_most_common_class() {
        let mut all = users("sha1");
        all.extend(users("bcrypt").into_iter().map(|mut c| {
            c.user.push('2');
            c
        }));
        all.extend(users("apr1").into_iter().map(|mut c| {
            c.user.push('3');
            c
        }));
        all.pop();
        let table = UserTable::new(&Credentials::new(all), 0);
        // Two {SHA}, two bcrypt, one apr1: the first listed of the tie.
        assert_eq!(
            table.dummy.as_ref().map(PasswordHash::kind_name),
            Some("{SHA}")
        );
    }

    #[test]
    fn refused_kinds_say_why_without_the_hash() {
        let des = fixture("des");
        let parsed = parse_htpasswd(&des);
        assert!(parsed.users.is_empty());
        assert_eq!(parsed.errors.len(), 1);
        assert_eq!(parsed.errors[0].at, "line 1");
        assert_eq!(parsed.errors[0].user.as_deref(), Some("alice"));
        assert!(
            parsed.errors[0].reason.contains("DES"),
            "{:?}",
            parsed.errors
        );
        let hash = des.trim().split_once(':').unwrap().1;
        assert!(!parsed.errors[0].reason.contains(hash));

        let plain = parse_htpasswd(&fixture("plain"));
        assert!(plain.users.is_empty());
        assert!(plain.errors[0].reason.contains("plain-text"), "{plain:?}");
        assert!(!plain.errors[0].reason.contains("hunter2"));

        for (hash, want) in [
            ("", HashError::Empty),
            (
                "$2x$05$abcdefghijklmnopqrstuuabcdefghijklmnopqrstuvwxyz01234",
                HashError::Unsupported("$2x$".into()),
            ),
            (
                "$argon2id$v=19$m=65536,t=2,p=1$c29tZXNhbHQ$aGFzaA",
                HashError::Unsupported("$argon2id$".into()),
            ),
            ("$9$", HashError::Unsupported("$9$".into())),
            ("$apr1$toolongsalt$abc", HashError::Malformed("apr1")),
            ("$6$salt$short", HashError::Malformed("SHA-512-crypt")),
            ("{SHA}not base64!", HashError::Malformed("{SHA}")),
            ("$2y$05$short", HashError::Malformed("bcrypt")),
            (
                "$5$rounds=10$salt$0123456789012345678901234567890123456789012",
                HashError::Malformed("SHA-256-crypt"),
            ),
        ] {
            assert_eq!(PasswordHash::parse(hash), Err(want), "{hash}");
        }
        let bcrypt = fixture("bcrypt");
        let costly = bcrypt.lines().next().unwrap().split_once(':').unwrap().1;
        assert!(PasswordHash::parse(costly).is_ok());
        let costly = costly.replace("$05$", "$15$");
        assert!(matches!(
            PasswordHash::parse(&costly),
            Err(HashError::TooCostly { cost: 15, .. })
        ));
        let rounds = format!("$6$rounds=2000000$salt${}", "a".repeat(86));
        assert!(matches!(
            PasswordHash::parse(&rounds),
            Err(HashError::TooCostly {
                cost: 2_000_000,
                ..
            })
        ));
    }

    #[test]
    fn htpasswd_files_as_nginx_reads_them() {
        let sha1 = fixture("sha1");
        let text = format!(
            "# team\r\n\r\n{}\r\nbroken line\r\n:{{SHA}}x\r\nalice:{{SHA}}0JQeaNqPOBUf+Gph/Fn3xc+fyqI=\r\n",
            sha1.trim().replace('\n', ":comment\r\n")
        );
        let parsed = parse_htpasswd(&text);
        let names: Vec<&str> = parsed.users.iter().map(|c| c.user.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert!(parsed.users[0].hash.verify(b"s3cret pass"));
        let errors: Vec<(&str, Option<&str>)> = parsed
            .errors
            .iter()
            .map(|e| (e.at.as_str(), e.user.as_deref()))
            .collect();
        assert_eq!(
            errors,
            [
                ("line 5", None),
                ("line 6", None),
                ("line 7", Some("alice"))
            ]
        );
        assert!(parsed.errors[2].reason.contains("first entry applies"));
    }

    #[test]
    fn user_maps_take_a_hash_per_key() {
        let sha1 = users("sha1");
        let line = fixture("sha1");
        let alice_hash = line.lines().next().unwrap().split_once(':').unwrap().1;
        let parsed = parse_user_map([
            ("alice", alice_hash.as_bytes()),
            ("eve", b"plain".as_slice()),
            ("mallory", b"\xff".as_slice()),
        ]);
        assert_eq!(parsed.users, sha1[..1]);
        let at: Vec<&str> = parsed.errors.iter().map(|e| e.at.as_str()).collect();
        assert_eq!(at, ["key \"eve\"", "key \"mallory\""]);
    }

    #[test]
    fn realms_are_quotable_text() {
        assert!(check_realm("Authentication Required - foo").is_ok());
        assert!(check_realm("").is_ok());
        for bad in ["a\"b", "a\\b", "a\nb", "a\tb", "é", &"x".repeat(257)] {
            assert!(check_realm(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn credentials_show_only_their_count() {
        let creds = Credentials::new(users("bcrypt"));
        assert_eq!(serde_json::to_string(&creds).unwrap(), "2");
        assert_eq!(format!("{creds:?}"), "Credentials(2 users)");
        let back: Credentials = serde_json::from_str("2").unwrap();
        assert!(back.is_empty());
    }

    #[test]
    fn the_cache_remembers_keyed_hashes_per_content() {
        let verifier = Verifier::default();
        let creds = Credentials::new(users("sha1"));
        let a = verifier.table(&creds);
        let b = verifier.table(&Credentials::new(users("sha1")));
        assert!(Arc::ptr_eq(&a, &b), "same content, same cache");
        let other = verifier.table(&Credentials::new(users("apr1")));
        assert!(!Arc::ptr_eq(&a, &other));

        let tag = a.cache.tag(b"alice:s3cret pass").unwrap();
        assert!(!a.cache.contains(&tag));
        a.cache.insert(tag);
        assert!(a.cache.contains(&tag));
        assert!(b.cache.contains(&tag));
        assert!(!other.cache.contains(&tag));
        // The tag is keyed: not a plain digest of the credential.
        let plain = digest::digest(&digest::SHA256, b"alice:s3cret pass");
        assert_ne!(tag.as_slice(), plain.as_ref());

        // Once no table holds it, the content's cache is gone.
        drop((a, b));
        let again = verifier.table(&creds);
        assert!(!again.cache.contains(&tag));

        let none = CredentialCache::new(0);
        assert!(none.tag(b"alice:x").is_none());
    }

    #[test]
    fn basic_credentials_are_read_from_the_header() {
        let mut h = HeaderMap::new();
        assert_eq!(basic_credential(&h), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic YWxpY2U6eA=="),
        );
        assert_eq!(basic_credential(&h).as_deref(), Some(b"alice:x".as_slice()));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("basic  YWxpY2U6eA"),
        );
        assert_eq!(basic_credential(&h).as_deref(), Some(b"alice:x".as_slice()));
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer YWxpY2U6eA=="),
        );
        assert_eq!(basic_credential(&h), None);
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Basic !!"));
        assert_eq!(basic_credential(&h), None);
        assert_eq!(
            split_credential(b"a:b:c"),
            (b"a".as_slice(), b"b:c".as_slice())
        );
    }
}
