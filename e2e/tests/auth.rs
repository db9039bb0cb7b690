//! External authentication end to end with the real thing: oauth2-proxy in
//! front of Dex (an OpenID Connect provider with a static password user),
//! the Ingress annotated as oauth2-proxy's docs show for ingress-nginx, and
//! the whole browser flow walked with a cookie jar: the protected page
//! sends the browser to sign in, Dex's login form is posted, the callback
//! sets oauth2-proxy's cookie, the page is served with the user's identity
//! passed on, and signing out denies again.
//!
//! Portico runs from a manifest directory (no API server): the sign-in
//! peers listen on 127.0.0.1, which the API server refuses in
//! EndpointSlices.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use portico_e2e::oidc::{
    CLIENT_ID, CLIENT_SECRET, Dex, OAuth2Proxy, PASSWORD, USER_EMAIL, USER_NAME,
};
use portico_e2e::{Browser, Portico};
use url::Url;

const HOST: &str = "app.e2e.test";

/// The protected application: answers with the identity headers it was
/// given, so the test sees what reached it.
async fn app() -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<Incoming>| async move {
                    let h = |name: &str| {
                        req.headers()
                            .get(name)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    };
                    let body = format!(
                        "app {} user={} email={}",
                        req.uri().path(),
                        h("x-auth-request-user"),
                        h("x-auth-request-email")
                    );
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(addr)
}

fn service(name: &str, addr: SocketAddr) -> String {
    format!(
        r#"---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: auth}}
spec:
  ports: [{{name: http, port: 80, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {name}-1, namespace: auth, labels: {{kubernetes.io/service-name: {name}}}}}
addressType: IPv4
ports: [{{name: http, port: {port}}}]
endpoints: [{{addresses: ["{ip}"]}}]
"#,
        port = addr.port(),
        ip = addr.ip(),
    )
}

/// The two Ingresses of oauth2-proxy's ingress-nginx example: the
/// application with `auth-url`/`auth-signin`/`auth-response-headers`, and
/// oauth2-proxy's own `/oauth2` paths on the same host. `auth-url` names
/// oauth2-proxy's Service (the docs' `https://$host/oauth2/auth` is
/// refused: a request must not choose where the subrequest goes), so the
/// subrequests go to its endpoints.
fn manifests(app: SocketAddr, oauth2_proxy: SocketAddr) -> String {
    format!(
        r#"apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {{name: portico}}
spec: {{controller: portico.dev/ingress-controller}}
{app_svc}{o2p_svc}---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: app
  namespace: auth
  annotations:
    nginx.ingress.kubernetes.io/auth-url: "http://oauth2-proxy.auth.svc.cluster.local/oauth2/auth"
    nginx.ingress.kubernetes.io/auth-signin: "http://$host/oauth2/start?rd=$escaped_request_uri"
    nginx.ingress.kubernetes.io/auth-response-headers: "x-auth-request-user, x-auth-request-email"
spec:
  ingressClassName: portico
  rules:
    - host: {HOST}
      http:
        paths:
          - {{path: /, pathType: Prefix, backend: {{service: {{name: app, port: {{number: 80}}}}}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: oauth2-proxy, namespace: auth}}
spec:
  ingressClassName: portico
  rules:
    - host: {HOST}
      http:
        paths:
          - {{path: /oauth2, pathType: Prefix, backend: {{service: {{name: oauth2-proxy, port: {{number: 80}}}}}}}}
"#,
        app_svc = service("app", app),
        o2p_svc = service("oauth2-proxy", oauth2_proxy),
    )
}

/// `portico run --manifests` on `yaml` (in a folder under `dir`),
/// returned once `host` is served: until the manifests are read every
/// host is 404.
async fn serve(dir: &std::path::Path, yaml: &str, host: &str) -> anyhow::Result<Portico> {
    let manifests = dir.join("manifests");
    std::fs::create_dir(&manifests)?;
    std::fs::write(manifests.join("all.yaml"), yaml)?;
    let portico = Portico::with_manifests(&manifests, &[]).await?;
    portico_e2e::eventually(&format!("{host} served"), portico_e2e::CONVERGE, || async {
        let r = portico.get(host, "/").await.ok()?;
        (r.status != StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    Ok(portico)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oauth2_proxy_and_dex_sign_in_through_auth_url() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let callback = format!("http://{HOST}/oauth2/callback");
    let dex = Dex::start(dir.path(), &callback).await?;
    let o2p = OAuth2Proxy::start(dir.path(), &dex.issuer, &callback, HOST, &[]).await?;
    let app = app().await?;
    let portico = serve(dir.path(), &manifests(app, o2p.addr), HOST).await?;

    let mut browser = Browser::new();
    browser.resolve(HOST, portico.http);
    let page = Url::parse(&format!("http://{HOST}/private/page?x=1"))?;

    // Not signed in: the protected page sends the browser to sign in with
    // where it was going, through oauth2-proxy to Dex's login form.
    let pages = browser.follow(&page).await?;
    let first = &pages[0];
    assert_eq!(first.status, StatusCode::FOUND, "{first:?}");
    let signin = first.location().expect("a sign-in redirect");
    assert_eq!(signin.host_str(), Some(HOST));
    assert_eq!(signin.path(), "/oauth2/start");
    let rd: Vec<_> = signin.query_pairs().filter(|(k, _)| k == "rd").collect();
    assert_eq!(rd.len(), 1, "{signin}");
    assert_eq!(
        rd[0].1, "/private/page?x=1",
        "the original URI, escaped once"
    );
    let form = pages.last().expect("pages");
    assert_eq!(form.status, StatusCode::OK, "{form:?}");
    assert!(
        form.url.as_str().starts_with(&dex.issuer),
        "ends on Dex's login form, not {}",
        form.url
    );
    assert!(form.body.contains("password"), "{}", form.body);

    // The login form posted: Dex redirects to the callback on Portico's
    // host, oauth2-proxy sets its session cookie and sends the browser back
    // to the page, which is now served with the identity passed on.
    let action = form.form_action()?;
    let pages = browser
        .submit(&action, &[("login", USER_EMAIL), ("password", PASSWORD)])
        .await?;
    let served = pages.last().expect("pages");
    assert!(
        pages.iter().any(|p| p.url.path() == "/oauth2/callback"),
        "went through the callback: {:?}",
        pages.iter().map(|p| p.url.as_str()).collect::<Vec<_>>()
    );
    assert!(
        browser.cookie(HOST, "_oauth2_proxy").is_some(),
        "oauth2-proxy's session cookie"
    );
    assert_eq!(served.status, StatusCode::OK, "{served:?}");
    assert_eq!(served.url, page);
    let user = identity(&served.body, "user");
    assert!(
        user == USER_NAME || user.len() > 8,
        "X-Auth-Request-User is the user name or Dex's subject: {}",
        served.body
    );
    assert_eq!(
        identity(&served.body, "email"),
        USER_EMAIL,
        "{}",
        served.body
    );
    assert!(
        served.body.starts_with("app /private/page "),
        "{}",
        served.body
    );

    // A client cannot claim an identity: the auth service's headers
    // replace the ones it sent.
    let forged = browser
        .send_with(
            http::Method::GET,
            &page,
            None,
            &[("x-auth-request-email", "mallory@example.com")],
        )
        .await?;
    assert_eq!(forged.status, StatusCode::OK, "{forged:?}");
    assert_eq!(
        identity(&forged.body, "email"),
        USER_EMAIL,
        "{}",
        forged.body
    );

    // Signed out: the cookie is cleared and the page asks to sign in again.
    let out = Url::parse(&format!("http://{HOST}/oauth2/sign_out"))?;
    browser.follow(&out).await?;
    assert!(browser.cookie(HOST, "_oauth2_proxy").is_none());
    let denied = browser.send(http::Method::GET, &page, None).await?;
    assert_eq!(denied.status, StatusCode::FOUND, "{denied:?}");
    assert_eq!(
        denied.location().map(|u| u.path().to_owned()).as_deref(),
        Some("/oauth2/start")
    );
    drop(portico);
    Ok(())
}

/// An HTTPRoute whose `policies.jwt` trusts Dex: its JWKS from
/// `{issuer}/keys`, the audience our client, the subject and email passed
/// on under the headers the app echoes.
fn jwt_manifests(app: SocketAddr, issuer: &str) -> String {
    format!(
        r#"{app_svc}---
apiVersion: portico.dev/v1alpha1
kind: HTTPRoute
metadata: {{name: api, namespace: auth}}
spec:
  hostnames: [{JWT_HOST}]
  policies:
    jwt:
      providers:
        - issuer: "{issuer}"
          jwksUri: "{issuer}/keys"
          audiences: [{CLIENT_ID}]
          claimToHeaders:
            - {{claim: sub, header: X-Auth-Request-User}}
            - {{claim: email, header: X-Auth-Request-Email}}
  rules:
    - backendRefs: [{{name: app, port: 80}}]
"#,
        app_svc = service("app", app),
    )
}

const JWT_HOST: &str = "api.e2e.test";

/// An ID token from Dex's password grant, checked by `policies.jwt`
/// against Dex's own JWKS: accepted with its claims passed on, forged
/// identity headers replaced; no token or a tampered one refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dex_id_token_passes_policies_jwt() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let dex = Dex::start(dir.path(), "http://unused.e2e.test/callback").await?;
    let app = app().await?;
    let portico = serve(dir.path(), &jwt_manifests(app, &dex.issuer), JWT_HOST).await?;

    let mut browser = Browser::new();
    let token_url = Url::parse(&format!("{}/token", dex.issuer))?;
    let answer = browser
        .send(
            http::Method::POST,
            &token_url,
            Some(&[
                ("grant_type", "password"),
                ("username", USER_EMAIL),
                ("password", PASSWORD),
                ("scope", "openid email"),
                ("client_id", CLIENT_ID),
                ("client_secret", CLIENT_SECRET),
            ]),
        )
        .await?;
    assert_eq!(answer.status, StatusCode::OK, "{answer:?}");
    let tokens: serde_json::Value = serde_json::from_str(&answer.body)?;
    let id_token = tokens["id_token"].as_str().expect("an ID token").to_owned();

    browser.resolve(JWT_HOST, portico.http);
    let page = Url::parse(&format!("http://{JWT_HOST}/data"))?;
    let bearer = format!("Bearer {id_token}");
    let served = browser
        .send_with(
            http::Method::GET,
            &page,
            None,
            &[
                ("authorization", &bearer),
                ("x-auth-request-email", "mallory@example.com"),
            ],
        )
        .await?;
    assert_eq!(served.status, StatusCode::OK, "{served:?}");
    assert_eq!(
        identity(&served.body, "email"),
        USER_EMAIL,
        "{}",
        served.body
    );
    assert!(identity(&served.body, "user").len() > 8, "{}", served.body);

    let missing = browser.send(http::Method::GET, &page, None).await?;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{missing:?}");
    // One character of the signature changed: not Dex's signature.
    let at = id_token.len() - 10;
    let swapped = if &id_token[at..=at] == "A" { "B" } else { "A" };
    let tampered = format!("{}{swapped}{}", &id_token[..at], &id_token[at + 1..]);
    let refused = browser
        .send_with(
            http::Method::GET,
            &page,
            None,
            &[("authorization", &format!("Bearer {tampered}"))],
        )
        .await?;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED, "{refused:?}");
    assert!(
        refused.headers["www-authenticate"]
            .to_str()?
            .contains("error=\"invalid_token\""),
        "{refused:?}"
    );
    drop(portico);
    Ok(())
}

/// The `user=`/`email=` word the app echoed.
fn identity<'a>(body: &'a str, what: &str) -> &'a str {
    body.split_whitespace()
        .find_map(|w| w.strip_prefix(what)?.strip_prefix('='))
        .unwrap_or("-")
}
