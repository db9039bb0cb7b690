//! JWT validation over real sockets: a real JWKS server in the test
//! (hyper on 127.0.0.1:0) serving keys made in the test, tokens signed
//! with them, a real upstream that echoes what it receives.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http::{HeaderMap, Request, Response, StatusCode};
use jsonwebtoken::Algorithm;
use portico_dataplane::model::*;
use portico_testkit::jwt::{Signer, jwks, now, tamper};
use serde_json::{Value, json};
use support::*;

const ISSUER: &str = "https://idp.test";

/// What the JWKS server serves, and how often it was asked.
#[derive(Default)]
struct Served {
    jwks: String,
    down: bool,
    hits: u64,
}

struct JwksServer {
    addr: SocketAddr,
    served: Arc<Mutex<Served>>,
    _server: Upstream,
}

impl JwksServer {
    async fn start(signers: &[&Signer]) -> Self {
        let served = Arc::new(Mutex::new(Served {
            jwks: jwks(signers),
            ..Served::default()
        }));
        let state = Arc::clone(&served);
        let server = Upstream::start(move |_req: Request<hyper::body::Incoming>| {
            let state = Arc::clone(&state);
            async move {
                let mut s = state.lock().unwrap();
                s.hits += 1;
                if s.down {
                    return Response::builder().status(503).body(empty()).unwrap();
                }
                Response::builder()
                    .header("content-type", "application/json")
                    .body(full(s.jwks.clone()))
                    .unwrap()
            }
        })
        .await;
        Self {
            addr: server.addr,
            served,
            _server: server,
        }
    }

    fn uri(&self) -> String {
        format!("http://{}/keys", self.addr)
    }

    fn serve(&self, signers: &[&Signer]) {
        self.served.lock().unwrap().jwks = jwks(signers);
    }

    fn set_down(&self) {
        self.served.lock().unwrap().down = true;
    }

    fn hits(&self) -> u64 {
        self.served.lock().unwrap().hits
    }
}

fn provider(jwks: &JwksServer) -> JwtProvider {
    let mut p = JwtProvider::new(ISSUER, JwksSource::Uri(jwks.uri()));
    p.audiences = vec!["api".into()];
    p.claim_to_headers = vec![
        ClaimHeader {
            claim: "sub".into(),
            header: http::HeaderName::from_static("x-user"),
        },
        ClaimHeader {
            claim: "email".into(),
            header: http::HeaderName::from_static("x-email"),
        },
    ];
    p
}

fn guarded(host: &str, upstream: SocketAddr, p: JwtProvider) -> Route {
    let mut rule = forward_rule(vec![], vec![backend("app", &[upstream])]);
    rule.chain.push(Filter::Jwt(Box::new(Jwt {
        providers: vec![p],
        required: true,
    })));
    route(host, &[host], vec![rule])
}

fn claims() -> Value {
    json!({
        "iss": ISSUER, "aud": "api", "sub": "alice", "email": "alice@example.test",
        "exp": now() + 300,
    })
}

async fn call(proxy: &Proxy, token: Option<&str>) -> (StatusCode, HeaderMap, String) {
    let mut req = Request::get(proxy.url("/"))
        .header("host", "app.test")
        .header("x-user", "root")
        .header("x-email", "root@evil.test");
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    send(&h1_client(), req.body(empty()).unwrap()).await
}

fn invalid(reason: &str) -> String {
    format!("Bearer error=\"invalid_token\", error_description=\"{reason}\"")
}

#[tokio::test]
async fn a_valid_token_carries_its_claims_upstream_and_nothing_forged() {
    let key = Signer::new(Algorithm::RS256, "k1");
    let idp = JwksServer::start(&[&key]).await;
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(config(vec![guarded("app.test", up.addr, provider(&idp))])).await;

    // The first request waits for the first fetch.
    let (status, headers, body) = call(&proxy, Some(&key.sign(&claims()))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["x-seen-h-x-user"], "alice");
    assert_eq!(headers["x-seen-h-x-email"], "alice@example.test");

    // A token without the email claim: the forged copy still goes.
    let mut c = claims();
    c.as_object_mut().unwrap().remove("email");
    let (status, headers, _) = call(&proxy, Some(&key.sign(&c))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers["x-seen-h-x-user"], "alice");
    assert!(!headers.contains_key("x-seen-h-x-email"), "{headers:?}");
}

#[tokio::test]
async fn each_invalid_token_gets_an_rfc6750_challenge() {
    let key = Signer::new(Algorithm::ES256, "k1");
    let stranger = Signer::new(Algorithm::ES256, "k2");
    let idp = JwksServer::start(&[&key]).await;
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(config(vec![guarded("app.test", up.addr, provider(&idp))])).await;

    let (status, headers, _) = call(&proxy, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"app.test\"");

    let with = |k: &str, v: Value| {
        let mut c = claims();
        c[k] = v;
        key.sign(&c)
    };
    let cases = [
        (with("exp", json!(now() - 120)), "token expired"),
        (with("iss", json!("https://evil.test")), "unknown issuer"),
        (with("aud", json!("other")), "audience not accepted"),
        (tamper(&key.sign(&claims())), "invalid signature"),
        (stranger.sign(&claims()), "unknown signing key"),
        ("not.a.token".to_owned(), "malformed token"),
    ];
    for (token, reason) in cases {
        let (status, headers, body) = call(&proxy, Some(&token)).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{reason}: {body}");
        assert_eq!(headers["www-authenticate"], invalid(reason).as_str());
    }
    // Counted by reason, a bounded label set.
    let metrics = proxy.scrape().await;
    for (result, n) in [("missing", 1.0), ("expired", 1.0), ("unknown_key", 1.0)] {
        let series = format!("portico_jwt_checks_total{{result=\"{result}\"}}");
        assert_eq!(sample(&metrics, &series), Some(n), "{series}\n{metrics}");
    }
    assert_eq!(
        sample(&metrics, "portico_jwks_fetches_total{result=\"ok\"}"),
        // The first fetch, and the refetch the stranger's kid asked for.
        Some(2.0)
    );
}

#[tokio::test]
async fn a_rotated_key_is_fetched_on_its_first_token_and_kept_through_outages() {
    let old = Signer::new(Algorithm::EdDSA, "old");
    let new = Signer::new(Algorithm::EdDSA, "new");
    let idp = JwksServer::start(&[&old]).await;
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(config(vec![guarded("app.test", up.addr, provider(&idp))])).await;
    assert_eq!(
        call(&proxy, Some(&old.sign(&claims()))).await.0,
        StatusCode::OK
    );
    let fetched = idp.hits();

    // The IdP rotates: the first token with the new kid makes the proxy
    // refetch, and waits for it.
    idp.serve(&[&new]);
    let (status, _, body) = call(&proxy, Some(&new.sign(&claims()))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(idp.hits(), fetched + 1);

    // The IdP goes down: the last good set still validates; a flood of
    // made-up kids right after a refetch asks the IdP nothing.
    idp.set_down();
    let bogus = Signer::new(Algorithm::EdDSA, "bogus");
    for _ in 0..5 {
        let (status, headers, _) = call(&proxy, Some(&bogus.sign(&claims()))).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        assert_eq!(
            headers["www-authenticate"],
            invalid("unknown signing key").as_str()
        );
    }
    assert_eq!(idp.hits(), fetched + 1, "rate-limited refetches");
    assert_eq!(
        call(&proxy, Some(&new.sign(&claims()))).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn grpc_callers_get_unauthenticated() {
    let key = Signer::new(Algorithm::ES384, "k1");
    let idp = JwksServer::start(&[&key]).await;
    let up = Upstream::echo("app").await;
    let proxy = Proxy::start(config(vec![guarded("app.test", up.addr, provider(&idp))])).await;
    for token in [None, Some(tamper(&key.sign(&claims())))] {
        let mut req = Request::post("http://app.test/pkg.Svc/Call")
            .header("content-type", "application/grpc")
            .header("te", "trailers");
        if let Some(t) = &token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let mut conn = h2c_connection(proxy.addr).await;
        let rsp = conn.send_request(req.body(empty()).unwrap()).await.unwrap();
        assert_eq!(rsp.status(), StatusCode::OK);
        assert_eq!(rsp.headers()["grpc-status"], "16", "{:?}", rsp.headers());
    }
}
