//! External authentication (ingress-nginx `auth-url`, the `auth_request`
//! oauth2-proxy sits behind): each request is first asked of an HTTP
//! service, without its body, with the original headers and the
//! `X-Original-*` facts. 2xx allows (named answer headers go upstream),
//! 401 redirects to sign-in or is passed on, 403 refuses, anything else,
//! a timeout or a connection error fails closed with 500.
//!
//! The exchange runs on the proxy's own task, awaited by the chain
//! ([`super::Flow::Pending`]): it never blocks a worker. The client (a
//! pooled hyper client, https with the system's roots) and the cache of
//! allowing answers live outside the table ([`ExternalAuthState`]), so a
//! table swap keeps warm connections and remembered answers.

pub mod template;

use std::collections::hash_map::RandomState;
use std::future::Future;
use std::hash::BuildHasher;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, StatusCode, Uri, Version};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use prometheus_client::metrics::counter::Counter;
use tokio::time::Instant;
use tracing::{debug, warn};

pub use template::{Template, TemplateError, Var, Vars};

use super::Answer;
use super::error_pages::backend_set;
use crate::balance::BackendSet;
use crate::balance::retry::{self, Failed, Sent, Timing};
use crate::body::{RequestBody, ResponseBody};
use crate::headers::{
    X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP, X_REQUEST_ID,
};
use crate::model::Protocol;
use crate::model::{AuthKeepalive, ExternalAuth};
use crate::request::ctx::{RequestCtx, ip_header};
use crate::store::KeyedStore;
use crate::upstream::Upstreams;

static X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
static X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");
static X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
static X_AUTH_REQUEST_REDIRECT: HeaderName = HeaderName::from_static("x-auth-request-redirect");

/// Slots of one policy's cache: a newer answer replaces the one in its
/// slot.
const CACHE_SLOTS: usize = 256;
/// An answer (key and copied headers) larger than this is not cached, so
/// one policy's cache holds at most `CACHE_SLOTS * CACHE_ENTRY_BYTES`
/// (2 MiB).
const CACHE_ENTRY_BYTES: usize = 8 * 1024;
/// Read of an answer's body, so that its connection can be reused; a
/// longer body closes the connection instead.
const DRAIN_BYTES: usize = 64 * 1024;

/// A signin URL's redirect parameter: a query name that needs no escaping.
pub fn check_redirect_param(param: &str) -> Result<(), &'static str> {
    let ok = !param.is_empty()
        && param.len() <= 64
        && param
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err("expected a query parameter name of at most 64 letters, digits, -, _ or .")
    }
}

/// The client the subrequests go out on: http, or https verified against
/// the system's roots.
pub type AuthClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// The counters of `portico_external_auth_checks_total`.
#[derive(Clone, Default)]
pub struct ExternalAuthCounters {
    /// 2xx from the service.
    pub allowed: Counter,
    /// Allowed by a remembered answer.
    pub cached: Counter,
    /// 401 from the service.
    pub unauthorized: Counter,
    /// 403 from the service.
    pub forbidden: Counter,
    /// Another status, a timeout or a connection error: answered 500.
    pub failed: Counter,
}

/// What external auth keeps outside the table: one pooled client per pool
/// setting, one cache per policy, and the counters.
#[derive(Default)]
pub struct ExternalAuthState {
    clients: KeyedStore<(AuthKeepalive, Duration), AuthClient>,
    /// By the policy's settings (its JSON form without the service's
    /// endpoints, which do not change what is cached).
    caches: KeyedStore<String, AuthCache>,
    tls: OnceLock<Option<rustls::ClientConfig>>,
    counters: ExternalAuthCounters,
}

impl ExternalAuthState {
    pub fn new(counters: ExternalAuthCounters) -> Self {
        Self {
            counters,
            ..Self::default()
        }
    }

    /// The client for `keepalive` and `connect` (timeout), shared with
    /// every policy and table that uses the same settings.
    pub fn client(&self, keepalive: AuthKeepalive, connect: Duration) -> Arc<AuthClient> {
        self.clients.prune();
        self.clients.get_or_insert_with((keepalive, connect), || {
            self.make_client(keepalive, connect)
        })
    }

    fn make_client(&self, keepalive: AuthKeepalive, connect: Duration) -> AuthClient {
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect));
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let https = match self.tls.get_or_init(tls_config) {
            Some(cfg) => builder.with_tls_config(cfg.clone()),
            // No TLS at all: https subrequests fail (closed, 500).
            None => builder.with_tls_config(empty_tls_config()),
        }
        .https_or_http()
        .enable_http1()
        .wrap_connector(http);
        Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_max_idle_per_host(keepalive.connections)
            .pool_idle_timeout(keepalive.idle_timeout)
            .build(https)
    }

    fn cache(&self, policy: &ExternalAuth) -> Arc<AuthCache> {
        let identity = ExternalAuth {
            service: None,
            ..policy.clone()
        };
        // A policy that cannot be written out gets a cache of its own.
        let key =
            serde_json::to_string(&identity).unwrap_or_else(|_| format!("unwritable:{policy:p}"));
        self.caches.prune();
        self.caches.get_or_insert_with(key, AuthCache::new)
    }
}

/// TLS toward auth services: the system's roots, verified (the subrequest
/// carries the client's cookies and credentials).
fn tls_config() -> Option<rustls::ClientConfig> {
    let loaded = rustls_native_certs::load_native_certs();
    if !loaded.errors.is_empty() {
        debug!(errors = ?loaded.errors, "some system root certificates were not read");
    }
    let mut roots = rustls::RootCertStore::empty();
    let (_, refused) = roots.add_parsable_certificates(loaded.certs);
    if refused > 0 {
        debug!(refused, "system root certificates refused");
    }
    let cfg = rustls::ClientConfig::builder_with_provider(crate::listen::tls::provider())
        .with_safe_default_protocol_versions()
        .ok()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Some(cfg)
}

fn empty_tls_config() -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(crate::listen::tls::provider())
        .with_safe_default_protocol_versions()
        .map(|b| {
            b.with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
        .unwrap_or_else(|_| {
            rustls::ClientConfig::builder()
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth()
        })
}

/// What an allowing or denying answer leaves for the rest of the request:
/// the headers for the upstream and the cookies for the client. Boxed in
/// [`super::Passed`]; rules without external auth carry nothing.
#[derive(Debug, Default)]
pub(crate) struct AuthCarry {
    /// Every name of `auth-response-headers`: the client's copies are
    /// removed even when the answer has none.
    names: Arc<[HeaderName]>,
    upstream: Vec<(HeaderName, HeaderValue)>,
    pub(crate) cookies: Vec<HeaderValue>,
}

impl AuthCarry {
    /// Puts `upstream` on the request in place of the client's copies of
    /// every header in `names`.
    pub(crate) fn new(names: Arc<[HeaderName]>, upstream: Vec<(HeaderName, HeaderValue)>) -> Self {
        Self {
            names,
            upstream,
            cookies: Vec::new(),
        }
    }

    /// Puts the service's headers on the request that goes upstream, in
    /// place of any the client sent under those names.
    pub(crate) fn apply(&mut self, headers: &mut HeaderMap) {
        for name in self.names.iter() {
            headers.remove(name);
        }
        for (name, value) in self.upstream.drain(..) {
            headers.append(name, value);
        }
    }
}

/// The filter's decision, once the service answered.
pub(crate) struct Decision {
    pub(crate) answer: Option<Answer>,
    pub(crate) carry: Option<Box<AuthCarry>>,
}

pub(crate) type Wait = Pin<Box<dyn Future<Output = Decision> + Send>>;

/// What the filter decided without waiting.
pub(crate) enum Check {
    /// A remembered answer allows.
    Admit(Box<AuthCarry>),
    Answer(Answer),
    Wait(Wait),
}

/// An external-auth policy, compiled.
pub(crate) struct ExternalAuthFilter {
    inner: Arc<Inner>,
}

struct Inner {
    /// The policy passed the checks translation makes.
    sound: bool,
    client: Arc<AuthClient>,
    url: Template,
    method: Method,
    signin: Option<Template>,
    /// `&rd=` or `?rd=`, or nothing when the written signin URL sets it.
    signin_param: Option<String>,
    names: Arc<[HeaderName]>,
    request_redirect: Option<HeaderValue>,
    proxy_set_headers: Box<[(HeaderName, HeaderValue)]>,
    always_set_cookie: bool,
    timeout: Duration,
    cache: Option<(Template, Duration, Arc<AuthCache>)>,
    /// The in-cluster Service's endpoints, for plain-http URLs naming one.
    service: Option<BackendSet>,
    counters: ExternalAuthCounters,
}

impl ExternalAuthFilter {
    pub(crate) fn build(
        policy: &ExternalAuth,
        state: &ExternalAuthState,
        upstreams: &Upstreams,
    ) -> Self {
        // TLS needs the name the service's certificate carries: https
        // always goes by the URL's host.
        let plain = policy
            .url
            .as_str()
            .get(..5)
            .is_some_and(|s| s.eq_ignore_ascii_case("http:"));
        let service = policy
            .service
            .as_deref()
            .filter(|_| plain)
            .map(|b| backend_set(b, upstreams));
        // Translation checked these; a hand-written table is held to the
        // same rules, failing closed: every request answers 500.
        let sound = Template::service_url(policy.url.as_str()).is_ok()
            && policy
                .signin
                .as_ref()
                .is_none_or(|s| Template::signin_url(s.as_str()).is_ok())
            && check_redirect_param(&policy.signin_redirect_param).is_ok();
        if !sound {
            warn!(auth.url = %policy.url, "external auth policy refused: every request answers 500");
        }
        let signin_param = policy.signin.as_ref().and_then(|s| {
            let param = &policy.signin_redirect_param;
            (!s.sets_param(param)).then(|| {
                let sep = if s.has_query() { '&' } else { '?' };
                format!("{sep}{param}=")
            })
        });
        Self {
            inner: Arc::new(Inner {
                sound,
                client: state.client(policy.keepalive, policy.timeout),
                url: policy.url.clone(),
                method: policy.method.clone().unwrap_or(Method::GET),
                signin: policy.signin.clone(),
                signin_param,
                names: policy.response_headers.clone().into(),
                request_redirect: policy
                    .request_redirect
                    .as_deref()
                    .and_then(|r| HeaderValue::from_str(r).ok()),
                proxy_set_headers: policy.proxy_set_headers.clone().into(),
                always_set_cookie: policy.always_set_cookie,
                timeout: policy.timeout,
                cache: policy
                    .cache
                    .as_ref()
                    .map(|c| (c.key.clone(), c.duration, state.cache(policy))),
                service,
                counters: state.counters.clone(),
            }),
        }
    }

    /// The request side: a remembered answer, or the subrequest to await.
    pub(crate) fn check(&self, req: &Request<Incoming>, host: &str, ctx: &RequestCtx) -> Check {
        let inner = &self.inner;
        if !inner.sound {
            inner.fail(ctx, "the policy did not pass its checks");
            return Check::Answer(Answer::Status(StatusCode::INTERNAL_SERVER_ERROR));
        }
        let vars = Vars {
            scheme: ctx.conn.scheme,
            host,
            uri: req.uri(),
            headers: req.headers(),
        };
        // An empty key (the cookie it names is absent) would lump every
        // such request together: those are always asked.
        let cache_key = inner.cache.as_ref().and_then(|(key, _, cache)| {
            let key = key.render(&vars).filter(|k| !k.is_empty())?;
            Some((key, cache))
        });
        if let Some((key, cache)) = &cache_key
            && let Some(upstream) = cache.get(key)
        {
            inner.counters.cached.inc();
            return Check::Admit(Box::new(AuthCarry {
                names: Arc::clone(&inner.names),
                upstream,
                cookies: Vec::new(),
            }));
        }
        let Some(subrequest) = inner.subrequest(req, &vars, ctx) else {
            inner.fail(ctx, "the auth URL did not render to a URL");
            return Check::Answer(Answer::Status(StatusCode::INTERNAL_SERVER_ERROR));
        };
        // Rendered now, while the request is at hand; only rules with a
        // signin URL pay for it.
        let signin = inner
            .signin
            .as_ref()
            .map(|s| inner.signin_location(s, &vars));
        let inner = Arc::clone(inner);
        let id = ctx.id.clone();
        let cache_key = cache_key.map(|(k, c)| (k, Arc::clone(c)));
        Check::Wait(Box::pin(async move {
            inner.ask(subrequest, signin, cache_key, &id).await
        }))
    }
}

impl Inner {
    /// The subrequest: the method, no body, the client's headers without
    /// hop-by-hop and framing ones, the `X-Original-*` facts, then the
    /// policy's own headers.
    fn subrequest(
        &self,
        req: &Request<Incoming>,
        vars: &Vars<'_>,
        ctx: &RequestCtx,
    ) -> Option<Request<Empty<Bytes>>> {
        let uri = Uri::try_from(self.url.render(vars)?).ok()?;
        let mut headers = req.headers().clone();
        crate::headers::strip_hop_by_hop(&mut headers, false);
        for name in [
            header::HOST,
            header::CONTENT_LENGTH,
            header::EXPECT,
            header::TE,
        ] {
            headers.remove(name);
        }
        let request_uri = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let scheme = HeaderValue::from_static(ctx.conn.scheme.as_str());
        let original_url = format!("{}://{}{request_uri}", ctx.conn.scheme.as_str(), vars.host);
        let uri_value = HeaderValue::from_str(request_uri).ok();
        let client = ip_header(ctx.client_addr());
        let facts = [
            (&X_ORIGINAL_URL, HeaderValue::from_str(&original_url).ok()),
            (
                &X_ORIGINAL_METHOD,
                HeaderValue::from_str(req.method().as_str()).ok(),
            ),
            (&X_FORWARDED_HOST, HeaderValue::from_str(vars.host).ok()),
            (&X_FORWARDED_PROTO, Some(scheme)),
            (&X_FORWARDED_URI, uri_value.clone()),
            (&X_REAL_IP, Some(client.clone())),
            (&X_FORWARDED_FOR, Some(client)),
            (&X_REQUEST_ID, Some(ctx.id.clone())),
            (
                &X_AUTH_REQUEST_REDIRECT,
                self.request_redirect.clone().or(uri_value),
            ),
        ];
        for (name, value) in facts {
            match value {
                Some(v) => headers.insert(name.clone(), v),
                None => headers.remove(name),
            };
        }
        for (name, value) in self.proxy_set_headers.iter() {
            headers.insert(name.clone(), value.clone());
        }
        let mut sub = Request::new(Empty::new());
        *sub.method_mut() = self.method.clone();
        *sub.uri_mut() = uri;
        *sub.headers_mut() = headers;
        Some(sub)
    }

    /// `auth-signin` with the original URL, escaped, in the redirect
    /// parameter; `None` when the client's host cannot make a URL.
    fn signin_location(&self, signin: &Template, vars: &Vars<'_>) -> Option<String> {
        let mut location = signin.render(vars)?;
        if let Some(param) = &self.signin_param {
            location.push_str(param);
            let request_uri = vars.uri.path_and_query().map_or("/", |pq| pq.as_str());
            let original = format!("{}://{}{request_uri}", vars.scheme.as_str(), vars.host);
            location.extend(percent_encoding::utf8_percent_encode(
                &original,
                percent_encoding::NON_ALPHANUMERIC,
            ));
        }
        Some(location)
    }

    async fn ask(
        &self,
        sub: Request<Empty<Bytes>>,
        signin: Option<Option<String>>,
        cache_key: Option<(String, Arc<AuthCache>)>,
        id: &HeaderValue,
    ) -> Decision {
        let url = sub.uri().clone();
        let exchange = async {
            match &self.service {
                Some(service) => self.send_to_service(service, sub).await,
                None => {
                    let rsp = self.client.request(sub).await.map_err(|e| e.to_string())?;
                    let (parts, body) = rsp.into_parts();
                    // Read a short body to the end so the connection goes
                    // back to the pool; a long one is dropped with it.
                    let _ = http_body_util::Limited::new(body, DRAIN_BYTES)
                        .collect()
                        .await;
                    Ok(parts)
                }
            }
        };
        let parts = match tokio::time::timeout(self.timeout, exchange).await {
            Ok(Ok(parts)) => parts,
            Ok(Err(e)) => return self.failed(id, &url, &e),
            Err(_) => return self.failed(id, &url, &"no answer within the auth timeout"),
        };
        let cookies = || -> Vec<HeaderValue> {
            parts
                .headers
                .get_all(header::SET_COOKIE)
                .iter()
                .cloned()
                .collect()
        };
        let status = parts.status;
        if status.is_success() {
            self.counters.allowed.inc();
            let upstream: Vec<(HeaderName, HeaderValue)> = self
                .names
                .iter()
                .flat_map(|n| {
                    parts
                        .headers
                        .get_all(n)
                        .iter()
                        .map(|v| (n.clone(), v.clone()))
                })
                .collect();
            if let Some(((key, cache), (_, duration, _))) = cache_key.zip(self.cache.as_ref()) {
                cache.insert(key, &upstream, *duration);
            }
            let cookies = if self.always_set_cookie {
                cookies()
            } else {
                Vec::new()
            };
            return Decision {
                answer: None,
                carry: Some(Box::new(AuthCarry {
                    names: Arc::clone(&self.names),
                    upstream,
                    cookies,
                })),
            };
        }
        let answer = match status {
            StatusCode::UNAUTHORIZED => {
                self.counters.unauthorized.inc();
                match signin {
                    Some(Some(location)) => Answer::Redirect {
                        status: StatusCode::FOUND,
                        location,
                    },
                    Some(None) => Answer::Status(StatusCode::BAD_REQUEST),
                    None => match parts.headers.get(header::WWW_AUTHENTICATE) {
                        Some(challenge) => Answer::Unauthorized(challenge.clone()),
                        None => Answer::Status(StatusCode::UNAUTHORIZED),
                    },
                }
            }
            StatusCode::FORBIDDEN => {
                self.counters.forbidden.inc();
                Answer::Status(StatusCode::FORBIDDEN)
            }
            other => {
                return self.failed(id, &url, &format_args!("the service answered {other}"));
            }
        };
        Decision {
            answer: Some(answer),
            carry: Some(Box::new(AuthCarry {
                names: Arc::clone(&self.names),
                upstream: Vec::new(),
                cookies: cookies(),
            })),
        }
    }

    /// The subrequest to one of the in-cluster Service's endpoints, through
    /// the upstream pools, with `Host` as the URL names it.
    async fn send_to_service(
        &self,
        service: &BackendSet,
        sub: Request<Empty<Bytes>>,
    ) -> Result<http::response::Parts, String> {
        let backend = service
            .pick_backend()
            .map_err(|_| "the auth Service has no ready endpoints".to_owned())?;
        let (mut parts, _) = sub.into_parts();
        let authority = parts.uri.authority().cloned();
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        match backend.protocol {
            Protocol::Http1 => {
                if let Some(host) = authority.and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                    parts.headers.insert(header::HOST, host);
                }
                parts.version = Version::HTTP_11;
                parts.uri = Uri::from(path);
            }
            // HTTP/2 names the host in the URI, as written.
            Protocol::H2c => parts.version = Version::HTTP_2,
        }
        let req = Request::from_parts(parts, RequestBody::empty());
        let timing = Timing {
            start: Instant::now(),
            wait: self.timeout,
            connect: self.timeout,
        };
        let sent = retry::send_own(backend, Box::new(req), timing).await;
        let Sent {
            rsp,
            recycle,
            in_flight,
            ..
        } = match sent {
            Ok(sent) => sent,
            Err(Failed::NoEndpoint) => return Err("the auth Service has no endpoint".into()),
            Err(Failed::Timeout { addr }) => return Err(format!("{addr} did not answer in time")),
            Err(Failed::Upstream { error, .. }) => return Err(error.to_string()),
        };
        let (parts, body) = rsp.into_parts();
        // Read to the end (bounded) so the connection goes back to its pool.
        let body = ResponseBody::upstream(body, self.timeout, None, recycle).holding(in_flight);
        let _ = http_body_util::Limited::new(body, DRAIN_BYTES)
            .collect()
            .await;
        Ok(parts)
    }

    fn failed(&self, id: &HeaderValue, url: &Uri, error: &dyn std::fmt::Display) -> Decision {
        self.log_failure(id, url, error);
        Decision {
            answer: Some(Answer::Status(StatusCode::INTERNAL_SERVER_ERROR)),
            carry: None,
        }
    }

    fn fail(&self, ctx: &RequestCtx, error: &str) {
        self.log_failure(&ctx.id, &Uri::from_static("/"), &error);
    }

    /// Counts a failure; logs it at warn for the first and then at each
    /// power of two, so that a service that is down writes a handful of
    /// lines, at debug otherwise.
    fn log_failure(&self, id: &HeaderValue, url: &Uri, error: &dyn std::fmt::Display) {
        let count = self.counters.failed.inc().saturating_add(1);
        if count.is_power_of_two() {
            warn!(request.id = ?id, auth.url = %url, count, error = %error, "external auth failed");
        } else {
            debug!(request.id = ?id, auth.url = %url, error = %error, "external auth failed");
        }
    }
}

// === impl AuthCache ===

/// One policy's remembered allowing answers: the copied headers by
/// rendered key, in a fixed number of slots (a newer answer replaces the
/// one in its slot). Lock-free to read; an entry is never served after
/// its time.
pub(crate) struct AuthCache {
    hasher: RandomState,
    slots: Box<[ArcSwapOption<CacheEntry>]>,
}

struct CacheEntry {
    key: Box<str>,
    expires: Instant,
    upstream: Vec<(HeaderName, HeaderValue)>,
}

impl AuthCache {
    fn new() -> Self {
        Self {
            hasher: RandomState::new(),
            slots: (0..CACHE_SLOTS).map(|_| ArcSwapOption::empty()).collect(),
        }
    }

    fn slot(&self, key: &str) -> &ArcSwapOption<CacheEntry> {
        let at = self.hasher.hash_one(key) as usize % self.slots.len();
        &self.slots[at]
    }

    fn get(&self, key: &str) -> Option<Vec<(HeaderName, HeaderValue)>> {
        let entry = self.slot(key).load();
        let entry = entry.as_deref()?;
        (*entry.key == *key && Instant::now() < entry.expires).then(|| entry.upstream.clone())
    }

    fn insert(&self, key: String, upstream: &[(HeaderName, HeaderValue)], ttl: Duration) {
        let size = key.len()
            + upstream
                .iter()
                .map(|(n, v)| n.as_str().len() + v.len())
                .sum::<usize>();
        if size > CACHE_ENTRY_BYTES || ttl.is_zero() {
            return;
        }
        let Some(expires) = Instant::now().checked_add(ttl) else {
            return;
        };
        self.slot(&key).store(Some(Arc::new(CacheEntry {
            key: key.into(),
            expires,
            upstream: upstream.to_vec(),
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_cache_never_serves_an_entry_past_its_time() {
        let cache = AuthCache::new();
        let h = vec![(
            HeaderName::from_static("x-user"),
            HeaderValue::from_static("alice"),
        )];
        cache.insert("k".into(), &h, Duration::from_secs(60));
        assert_eq!(cache.get("k"), Some(h.clone()));
        assert_eq!(cache.get("other"), None);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(cache.get("k"), None);
        // Too large to keep.
        let big = vec![(
            HeaderName::from_static("x-big"),
            HeaderValue::try_from("x".repeat(CACHE_ENTRY_BYTES)).unwrap(),
        )];
        cache.insert("b".into(), &big, Duration::from_secs(60));
        assert_eq!(cache.get("b"), None);
    }
}
