use super::*;
use portico_testkit::jwt::{Signer, jwks, tamper};
use serde_json::json;

const NOW: u64 = 1_000_000_000;
const ISSUER: &str = "https://idp.test";

fn fixed_clock() -> u64 {
    NOW
}

fn provider(signers: &[&Signer]) -> JwtProvider {
    JwtProvider::new(
        ISSUER,
        JwksSource::Inline {
            secret: "default/jwks".into(),
            jwks: jwks(signers),
        },
    )
}

fn filter(providers: Vec<JwtProvider>, required: bool) -> JwtFilter {
    JwtFilter::build_with_clock(
        &Jwt {
            providers,
            required,
        },
        &JwtState::default(),
        &ExternalAuthState::default(),
        fixed_clock,
    )
}

fn claims() -> Value {
    json!({"iss": ISSUER, "sub": "alice", "aud": "api", "exp": NOW + 60})
}

fn bearer(token: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::try_from(format!("Bearer {token}")).unwrap(),
    );
    h
}

/// The upstream headers of an admitted request, or the challenge sent.
fn run(f: &JwtFilter, headers: &HeaderMap) -> Result<HeaderMap, String> {
    match f.check(headers, "app.test") {
        Check::Admit(mut carry) => {
            let mut out = headers.clone();
            carry.apply(&mut out);
            Ok(out)
        }
        Check::Answer(Answer::Unauthorized(v)) => Err(v.to_str().unwrap().to_owned()),
        Check::Answer(_) => Err("another answer".into()),
        Check::Wait(_) => Err("waits".into()),
    }
}

fn refused(r: Refusal) -> Result<HeaderMap, String> {
    Err(format!(
        "Bearer error=\"invalid_token\", error_description=\"{}\"",
        r.description()
    ))
}

#[test]
fn every_accepted_algorithm_verifies() {
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let s = Signer::new(alg, "k1");
        let f = filter(vec![provider(&[&s])], true);
        assert!(run(&f, &bearer(&s.sign(&claims()))).is_ok(), "{alg:?}");
        assert_eq!(
            run(&f, &bearer(&tamper(&s.sign(&claims())))),
            refused(Refusal::Signature),
            "{alg:?}"
        );
    }
}

#[test]
fn hmac_and_none_are_refused() {
    let err = KeySet::parse(br#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"}]}"#)
        .err()
        .unwrap();
    assert!(matches!(err, JwksError::SharedSecret(_)), "{err}");
    assert!(err.to_string().contains("shared secret"));

    // A token signed with HS256 (the RSA key's public bytes as the
    // secret: the classic confusion) is refused before any key is used.
    let s = Signer::new(Algorithm::RS256, "k1");
    let f = filter(vec![provider(&[&s])], true);
    let mut header = jsonwebtoken::Header::new(Algorithm::HS256);
    header.kid = Some("k1".into());
    let hs = jsonwebtoken::encode(
        &header,
        &claims(),
        &jsonwebtoken::EncodingKey::from_secret(b"public bytes"),
    )
    .unwrap();
    assert_eq!(run(&f, &bearer(&hs)), refused(Refusal::Algorithm));

    // alg none: no signature to check.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let none = format!(
        "{}.{}.",
        b64.encode(br#"{"alg":"none","kid":"k1"}"#),
        b64.encode(claims().to_string())
    );
    assert_eq!(run(&f, &bearer(&none)), refused(Refusal::Malformed));
}

#[test]
fn expiry_and_not_before_allow_the_clock_skew() {
    let s = Signer::new(Algorithm::ES256, "k1");
    let f = filter(vec![provider(&[&s])], true);
    let with = |k: &str, v: u64| {
        let mut c = claims();
        c[k] = json!(v);
        bearer(&s.sign(&c))
    };
    assert!(run(&f, &with("exp", NOW - 29)).is_ok());
    assert_eq!(run(&f, &with("exp", NOW - 31)), refused(Refusal::Expired));
    assert!(run(&f, &with("nbf", NOW + 29)).is_ok());
    assert_eq!(
        run(&f, &with("nbf", NOW + 31)),
        refused(Refusal::NotYetValid)
    );
    let mut no_exp = claims();
    no_exp.as_object_mut().unwrap().remove("exp");
    assert_eq!(
        run(&f, &bearer(&s.sign(&no_exp))),
        refused(Refusal::MissingClaim)
    );

    let mut strict = provider(&[&s]);
    strict.clock_skew = Duration::ZERO;
    let f = filter(vec![strict], true);
    assert_eq!(run(&f, &with("exp", NOW - 1)), refused(Refusal::Expired));
}

#[test]
fn issuer_audience_and_required_claims() {
    let s = Signer::new(Algorithm::ES256, "k1");
    let mut p = provider(&[&s]);
    p.audiences = vec!["web".into(), "api".into()];
    p.required_claims = vec!["email".into()];
    let f = filter(vec![p], true);
    let mut c = claims();
    c["email"] = json!("a@example.test");
    assert!(run(&f, &bearer(&s.sign(&c))).is_ok());
    c["aud"] = json!(["other", "web"]);
    assert!(run(&f, &bearer(&s.sign(&c))).is_ok());
    c["aud"] = json!("other");
    assert_eq!(run(&f, &bearer(&s.sign(&c))), refused(Refusal::Audience));
    c["aud"] = json!("api");
    c["iss"] = json!("https://idp.test/");
    assert_eq!(run(&f, &bearer(&s.sign(&c))), refused(Refusal::Issuer));
    assert_eq!(
        run(&f, &bearer(&s.sign(&claims()))),
        refused(Refusal::MissingClaim)
    );
}

#[test]
fn the_issuer_picks_the_provider() {
    let a = Signer::new(Algorithm::ES256, "a");
    let b = Signer::new(Algorithm::EdDSA, "b");
    let mut pb = provider(&[&b]);
    pb.issuer = "https://other.test".into();
    let f = filter(vec![provider(&[&a]), pb], true);
    let mut c = claims();
    assert!(run(&f, &bearer(&a.sign(&c))).is_ok());
    c["iss"] = json!("https://other.test");
    assert!(run(&f, &bearer(&b.sign(&c))).is_ok());
    // Signed by the other issuer's key.
    assert_eq!(run(&f, &bearer(&a.sign(&c))), refused(Refusal::UnknownKey));
}

#[test]
fn missing_token_and_optional_mode() {
    let s = Signer::new(Algorithm::ES256, "k1");
    let mut p = provider(&[&s]);
    p.claim_to_headers = vec![ClaimHeader {
        claim: "sub".into(),
        header: HeaderName::from_static("x-user"),
    }];
    let f = filter(vec![p.clone()], true);
    assert_eq!(
        run(&f, &HeaderMap::new()),
        Err("Bearer realm=\"app.test\"".into())
    );
    let f = filter(vec![p], false);
    let mut forged = HeaderMap::new();
    forged.insert("x-user", HeaderValue::from_static("root"));
    let out = run(&f, &forged).unwrap();
    assert!(out.get("x-user").is_none(), "the client's copy goes");
    // A token present must still be valid.
    assert_eq!(
        run(&f, &bearer(&tamper(&s.sign(&claims())))),
        refused(Refusal::Signature)
    );
}

#[test]
fn claims_become_headers_and_hostile_values_are_refused() {
    let s = Signer::new(Algorithm::ES256, "k1");
    let mut p = provider(&[&s]);
    p.from = TokenSource::Cookie("session".into());
    p.claim_to_headers = ["sub", "n", "admin", "obj"]
        .iter()
        .map(|c| ClaimHeader {
            claim: (*c).into(),
            header: HeaderName::try_from(format!("x-claim-{c}")).unwrap(),
        })
        .collect();
    let f = filter(vec![p], true);
    let mut c = claims();
    c["n"] = json!(42);
    c["admin"] = json!(false);
    c["obj"] = json!({"a": 1});
    let mut h = HeaderMap::new();
    h.insert(
        header::COOKIE,
        HeaderValue::try_from(format!("a=b; session={}", s.sign(&c))).unwrap(),
    );
    h.insert("x-claim-obj", HeaderValue::from_static("forged"));
    h.insert("x-claim-sub", HeaderValue::from_static("forged"));
    let out = run(&f, &h).unwrap();
    assert_eq!(
        out.get_all("x-claim-sub").iter().collect::<Vec<_>>(),
        ["alice"]
    );
    assert_eq!(out["x-claim-n"], "42");
    assert_eq!(out["x-claim-admin"], "false");
    assert!(out.get("x-claim-obj").is_none());

    for hostile in ["alice\r\nx-admin: 1", "a\nb", "nul\0"] {
        c["sub"] = json!(hostile);
        h.insert(
            header::COOKIE,
            HeaderValue::try_from(format!("session={}", s.sign(&c))).unwrap(),
        );
        assert_eq!(run(&f, &h), refused(Refusal::ClaimValue), "{hostile:?}");
    }
}

#[test]
fn a_named_header_carries_the_token_with_or_without_bearer() {
    let s = Signer::new(Algorithm::EdDSA, "k1");
    let mut p = provider(&[&s]);
    p.from = TokenSource::Named(HeaderName::from_static("x-jwt"));
    let f = filter(vec![p], true);
    let token = s.sign(&claims());
    for value in [token.clone(), format!("Bearer {token}")] {
        let mut h = HeaderMap::new();
        h.insert("x-jwt", HeaderValue::try_from(value).unwrap());
        assert!(run(&f, &h).is_ok());
    }
    // The Authorization header is not read for this provider.
    assert_eq!(
        run(&f, &bearer(&token)),
        Err("Bearer realm=\"app.test\"".into())
    );
}

#[test]
fn key_pinned_to_an_algorithm_verifies_only_that_one() {
    let s = Signer::new(Algorithm::RS256, "k1");
    let r384 = Signer::new(Algorithm::RS384, "k1");
    // The JWK says RS256; a token over the same key with RS384 is refused.
    let f = filter(vec![provider(&[&s])], true);
    assert_eq!(
        run(&f, &bearer(&r384.sign(&claims()))),
        refused(Refusal::UnknownKey)
    );
}

#[tokio::test]
async fn kid_refetches_are_rate_limited() {
    let fetched = Fetched {
        keys: ArcSwapOption::empty(),
        attempts: AtomicU64::new(0),
        attempted: Notify::new(),
        wanted: Notify::new(),
        last_wanted: AtomicU64::new(0),
        epoch: tokio::time::Instant::now(),
    };
    assert!(fetched.want());
    assert!(
        !fetched.want(),
        "a second unknown kid right after: no refetch"
    );
}

#[test]
fn max_age_is_bounded() {
    let mut h = HeaderMap::new();
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=600"),
    );
    assert_eq!(max_age(&h), Some(Duration::from_secs(600)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=1"));
    assert_eq!(max_age(&h), Some(MIN_REFRESH));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    assert_eq!(max_age(&h), None);
}

/// Not an assertion: prints what one RS256 check costs on this machine
/// (run with `--release -- --nocapture verification_cost`).
#[test]
fn verification_cost() {
    let s = Signer::new(Algorithm::RS256, "k1");
    let f = filter(vec![provider(&[&s])], true);
    let h = bearer(&s.sign(&claims()));
    let n = 200;
    let start = std::time::Instant::now();
    for _ in 0..n {
        assert!(run(&f, &h).is_ok());
    }
    println!(
        "RS256 token check: {:.1} µs",
        start.elapsed().as_secs_f64() * 1e6 / n as f64
    );
}
