//! Portico's dataplane as the proxy under test in `bench/load.sh`: one route
//! that forwards everything to one HTTP/1.1 upstream, on one thread.
//!
//! The runtime is tokio's current_thread, so the proxy uses one core like the
//! single-worker nginx and single-thread haproxy it is compared with (the
//! access-log writer thread is pinned to the same core by the script). The
//! dataplane runs with its production defaults, access log included.
//!
//! Usage: `bench_proxy LISTEN_ADDR ADMIN_ADDR UPSTREAM_ADDR`. Port 0 is
//! allowed; the bound addresses are printed on stderr, since stdout carries
//! the access log. `BENCH_ACCESS_LOG=off` disables the access log, to
//! measure its cost; the bench itself keeps it on, as production does.
//!
//! With `BENCH_TLS_CERT` and `BENCH_TLS_KEY` (PEM files), LISTEN_ADDR
//! serves HTTPS with that certificate as the default one (the bench's TLS
//! modes); plain HTTP then listens on an unused port.
//!
//! With `BENCH_POLICIES=on` the route carries the policies of the bench's
//! policy mode: an IP allow-list (ten ranges, the client's among them),
//! CORS for one origin with credentials, and basic auth from the htpasswd
//! file `BENCH_HTPASSWD`.
//!
//! With `BENCH_POLICIES=limit` the route carries one local rate limit per
//! client address that no request reaches (the cost of the check, not of
//! refusals); with `BENCH_POLICIES=limit-keys` the limit is keyed by the
//! `x-client` header, which the bench's wrk script varies over 100,000
//! values, so the limiter tracks that many keys.
//!
//! With `BENCH_POLICIES=auth` every request is first asked of an external
//! auth service (the bench upstream itself, which allows everything:
//! `GET /auth`), as `auth-url` does; `auth-cache` adds the auth cache keyed
//! by the host, so only the first request of each minute is asked.
//!
//! With `BENCH_POLICIES=global-limit` the route carries one global rate
//! limit per client address, counted in the Redis at `BENCH_REDIS_URL`
//! (the script starts one on the load core), high enough that no request
//! is refused: every request costs one script call, so the run shows the
//! round trip's added latency and CPU.

use std::net::SocketAddr;

use portico_dataplane::filter::basic_auth::{Credentials, parse_htpasswd};
use portico_dataplane::filter::external_auth::Template;
use portico_dataplane::filter::global_rate_limit::{GlobalLimitConfig, RedisConfig};
use portico_dataplane::listen::tls::{CertConfig, ServerCert};
use portico_dataplane::model::{
    Action, Backend, BasicAuth, Cors, ExternalAuth, ExternalAuthCache, Filter, Forward,
    GlobalRateLimit, HashKey, HashVar, IpAccess, LimitKey, LimitScope, OriginPattern, Rate,
    RateLimit, RatePeriod, Route, RouteConfig, Rule,
};
use portico_dataplane::{AccessLogSink, Dataplane, DataplaneConfig};
use tokio::net::TcpListener;

type Error = Box<dyn std::error::Error + Send + Sync>;

// The same allocator as the `portico` binary.
#[global_allocator]
static GLOBAL: portico_alloc::Mimalloc = portico_alloc::Mimalloc;

const USAGE: &str = "usage: bench_proxy LISTEN_ADDR ADMIN_ADDR UPSTREAM_ADDR";

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let mut addr = || -> Result<SocketAddr, Error> { Ok(args.next().ok_or(USAGE)?.parse()?) };
    let (listen, admin, upstream) = (addr()?, addr()?, addr()?);
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(listen, admin, upstream))
}

async fn run(listen: SocketAddr, admin: SocketAddr, upstream: SocketAddr) -> Result<(), Error> {
    let proxy_listener = TcpListener::bind(listen).await?;
    let admin_listener = TcpListener::bind(admin).await?;
    eprintln!(
        "bench_proxy: proxy {} admin {} upstream {upstream}",
        proxy_listener.local_addr()?,
        admin_listener.local_addr()?,
    );

    // Production defaults: the access log goes to stdout. Turning it off
    // is for diagnosis only, to see what it costs.
    let mut config = DataplaneConfig::default();
    if std::env::var_os("BENCH_ACCESS_LOG").is_some_and(|v| v == "off") {
        config.access_log = AccessLogSink::Disabled;
    }
    let mode = std::env::var("BENCH_POLICIES");
    if mode.as_deref() == Ok("global-limit") {
        let url = std::env::var("BENCH_REDIS_URL").map_err(|_| "BENCH_REDIS_URL is not set")?;
        config.global_limits = GlobalLimitConfig {
            redis: Some(RedisConfig::new(&url, None)?),
            fail_closed: false,
        };
    }
    let dp = Dataplane::new(config)?;
    let mut routes = route_to(upstream);
    match mode.as_deref() {
        Ok("on") => std::sync::Arc::make_mut(&mut routes.routes[0]).rules[0].chain = policies()?,
        Ok("limit") => {
            std::sync::Arc::make_mut(&mut routes.routes[0]).rules[0].chain =
                vec![limit(LimitKey::ClientAddress)]
        }
        Ok(mode @ ("auth" | "auth-cache")) => {
            let url = Template::service_url(&format!("http://{upstream}/auth"))?;
            let mut auth = ExternalAuth::new(url);
            if mode == "auth-cache" {
                auth.cache = Some(ExternalAuthCache {
                    key: Template::text("$host")?,
                    duration: std::time::Duration::from_secs(60),
                });
            }
            std::sync::Arc::make_mut(&mut routes.routes[0]).rules[0].chain =
                vec![Filter::ExternalAuth(Box::new(auth))];
        }
        Ok("limit-keys") => {
            let header = http::HeaderName::from_static("x-client");
            std::sync::Arc::make_mut(&mut routes.routes[0]).rules[0].chain =
                vec![limit(LimitKey::Header(header))];
        }
        Ok("global-limit") => {
            std::sync::Arc::make_mut(&mut routes.routes[0]).rules[0].chain = vec![global_limit()]
        }
        _ => {}
    }
    let report = dp.publish(routes);
    if !report.errors.is_empty() {
        return Err(format!("route rejected: {:?}", report.errors).into());
    }
    let tls = match (
        std::env::var_os("BENCH_TLS_CERT").filter(|v| !v.is_empty()),
        std::env::var_os("BENCH_TLS_KEY").filter(|v| !v.is_empty()),
    ) {
        (Some(cert), Some(key)) => {
            let cert = ServerCert::from_pem(&std::fs::read(cert)?, &std::fs::read(key)?)?;
            dp.publish_certs(CertConfig {
                default: Some(std::sync::Arc::new(cert)),
                ..Default::default()
            });
            true
        }
        _ => false,
    };
    let (http, https) = if tls {
        (
            TcpListener::bind("127.0.0.1:0").await?,
            Some(proxy_listener),
        )
    } else {
        (proxy_listener, None)
    };

    let shutdown = async {
        // SIGTERM (what the script sends) needs no handler: it just ends us.
        let _ = tokio::signal::ctrl_c().await;
    };
    if !dp
        .serve_with_https(http, https, admin_listener, shutdown)
        .await
    {
        eprintln!("bench_proxy: drain deadline passed with requests in flight");
    }
    Ok(())
}

/// Everything, on any host, to the one upstream.
fn route_to(upstream: SocketAddr) -> RouteConfig {
    let backends = vec![Backend::new("bench", vec![upstream])];
    let rule = Rule::new(Action::Forward(Forward::to(backends)));
    RouteConfig::new(vec![Route::new("bench", vec![], vec![rule])])
}

/// The policy mode's filters, as translation would make them from
/// `allowlist-source-range`, `enable-cors` + `cors-allow-origin` and
/// `auth-type: basic`.
fn policies() -> Result<Vec<Filter>, Error> {
    let allow = [
        "192.0.2.0/24",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "100.64.0.0/10",
        "169.254.0.0/16",
        "224.0.0.0/4",
        "240.0.0.0/4",
        "2001:db8::/32",
        "fd00::/8",
        "127.0.0.0/8",
    ]
    .iter()
    .map(|r| r.parse())
    .collect::<Result<_, _>>()?;
    let htpasswd = std::fs::read_to_string(std::env::var("BENCH_HTPASSWD")?)?;
    let users = parse_htpasswd(&htpasswd);
    if !users.errors.is_empty() || users.users.is_empty() {
        return Err(format!("BENCH_HTPASSWD: {:?}", users.errors).into());
    }
    Ok(vec![
        Filter::IpAccess(IpAccess {
            allow,
            deny: Vec::new(),
        }),
        Filter::Cors(Cors {
            allow_origins: vec![OriginPattern::parse("https://app.bench.test")?],
            allow_credentials: true,
            ..Cors::default()
        }),
        Filter::BasicAuth(BasicAuth {
            realm: "bench".into(),
            secret: "bench/users".into(),
            users: Credentials::new(users.users),
            forward_authorization: false,
        }),
    ])
}

/// A per-second limit far above what one proxy core serves: every request
/// is checked and passes. `BENCH_LIMIT_RPS=N` sets a real one instead (N
/// per second, burst 5 x N as ingress-nginx's default multiplier), to see
/// how closely the enforced rate follows the configured one.
fn limit(key: LimitKey) -> Filter {
    let (requests, burst) = match std::env::var("BENCH_LIMIT_RPS")
        .ok()
        .and_then(|v| v.parse::<u32>().ok())
    {
        Some(n) => (n, n.saturating_mul(5)),
        None => (100_000_000, 500_000_000),
    };
    Filter::RateLimit(RateLimit {
        scope: LimitScope {
            id: "bench".into(),
            key,
            exempt: Vec::new(),
            status: 503,
        },
        rates: vec![Rate {
            requests,
            per: RatePeriod::Second,
            burst,
        }],
        headers: false,
    })
}

/// A global limit no request reaches (a billion per minute per client
/// address): each request asks Redis once and passes.
fn global_limit() -> Filter {
    Filter::GlobalRateLimit(GlobalRateLimit {
        id: "bench".into(),
        limit: 1_000_000_000,
        window_secs: 60,
        key: HashKey(vec![HashVar::RemoteAddr]),
        exempt: Vec::new(),
        status: 429,
    })
}
