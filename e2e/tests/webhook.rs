//! `portico webhook` called by the real kube-apiserver: an invalid Ingress
//! is refused with the reason, an unsupported annotation is admitted with
//! a warning the client receives, and with the default `failurePolicy:
//! Ignore` a webhook that is down blocks nothing.

use std::process::Stdio;

use anyhow::Context as _;
use http::Request;
use kube::Client;
use portico_e2e::{CONVERGE, TestEnv, apply_json, eventually, ingress, portico_binary};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A CA and a serving certificate for 127.0.0.1, as PEM: (ca, cert, key).
fn webhook_pki() -> anyhow::Result<(String, String, String)> {
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate()?)?;
    let key = KeyPair::generate()?;
    let cert = CertificateParams::new(vec!["127.0.0.1".into()])?.signed_by(&key, &ca)?;
    Ok((ca.pem(), cert.pem(), key.serialize_pem()))
}

/// Starts `portico webhook` on 127.0.0.1:0; returns it and its port, read
/// from its "listening" log line.
async fn start_webhook(dir: &std::path::Path) -> anyhow::Result<(Child, u16)> {
    let mut child = Command::new(portico_binary()?)
        .args(["webhook", "--webhook-addr", "127.0.0.1:0"])
        .arg("--tls-cert-file")
        .arg(dir.join("tls.crt"))
        .arg("--tls-key-file")
        .arg(dir.join("tls.key"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .context("starting portico webhook")?;
    let mut lines = BufReader::new(child.stderr.take().context("stderr")?).lines();
    let port = tokio::time::timeout(CONVERGE, async {
        while let Ok(Some(line)) = lines.next_line().await {
            let Ok(log) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if log["fields"]["message"] == "admission webhook listening" {
                let addr: std::net::SocketAddr = log["fields"]["addr"].as_str()?.parse().ok()?;
                return Some(addr.port());
            }
        }
        None
    })
    .await
    .ok()
    .flatten()
    .context("the webhook did not report its address")?;
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((child, port))
}

/// Creates `obj` with a plain POST; the status, the `Warning` headers and
/// the body.
async fn create(
    client: &Client,
    path: &str,
    obj: &Value,
) -> anyhow::Result<(u16, Vec<String>, String)> {
    let req = Request::post(path)
        .header("content-type", "application/json")
        .body(kube::client::Body::from(serde_json::to_vec(obj)?))?;
    let rsp = client.send(req).await?;
    let status = rsp.status().as_u16();
    let warnings = rsp
        .headers()
        .get_all("warning")
        .iter()
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let body = http_body_util::BodyExt::collect(rsp.into_body())
        .await?
        .to_bytes();
    Ok((
        status,
        warnings,
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

fn annotated(ns: &str, name: &str, key: &str, value: &str) -> anyhow::Result<Value> {
    let mut ing = serde_json::to_value(ingress(
        ns,
        name,
        Some("portico"),
        &format!("{name}.example"),
        &[("/", "web")],
    ))?;
    ing["metadata"]["annotations"] = json!({ key: value });
    Ok(ing)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_calls_the_webhook() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-webhook", &[]).await?;
    let ns = env.namespace.as_str();
    let dir = tempfile::tempdir()?;
    let (ca, cert, key) = webhook_pki()?;
    std::fs::write(dir.path().join("tls.crt"), cert)?;
    std::fs::write(dir.path().join("tls.key"), key)?;
    let (mut webhook, port) = start_webhook(dir.path()).await?;
    apply_json(
        &env.admin,
        &json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": "portico"},
            "webhooks": [{
                "name": "validate.portico.dev",
                "clientConfig": {
                    "url": format!("https://127.0.0.1:{port}/validate"),
                    "caBundle": k8s_openapi::ByteString(ca.into_bytes()),
                },
                "rules": [
                    {"apiGroups": ["networking.k8s.io"], "apiVersions": ["v1"],
                     "operations": ["CREATE", "UPDATE"], "resources": ["ingresses"]},
                    {"apiGroups": ["portico.dev"], "apiVersions": ["v1alpha1"],
                     "operations": ["CREATE", "UPDATE"], "resources": ["httproutes"]},
                ],
                "admissionReviewVersions": ["v1"],
                "sideEffects": "None",
                "failurePolicy": "Ignore",
                "timeoutSeconds": 5,
            }],
        }),
        false,
    )
    .await?;
    let path = format!("/apis/networking.k8s.io/v1/namespaces/{ns}/ingresses");

    // The configuration takes effect within moments; until then the
    // invalid Ingress would be stored, so each try uses a new name.
    let mut attempt = 0;
    let refused = eventually(
        "the API server refuses an invalid Ingress",
        CONVERGE,
        || {
            attempt += 1;
            let bad = annotated(
                ns,
                &format!("bad-{attempt}"),
                "nginx.ingress.kubernetes.io/permanent-redirect",
                "not a url",
            );
            let (client, path) = (env.admin.clone(), path.clone());
            async move {
                let (status, _, body) = create(&client, &path, &bad.ok()?).await.ok()?;
                (status == 400 || status == 403 || status == 422).then_some(body)
            }
        },
    )
    .await;
    assert!(refused.contains("InvalidAnnotation"), "{refused}");
    assert!(refused.contains("permanent-redirect"), "{refused}");

    let sloppy = annotated(
        ns,
        "sloppy",
        "nginx.ingress.kubernetes.io/server-snippet",
        "return 200;",
    )?;
    let (status, warnings, body) = create(&env.admin, &path, &sloppy).await?;
    assert_eq!(status, 201, "{body}");
    assert!(
        warnings.iter().any(|w| w.contains("SnippetNotAllowed")),
        "{warnings:?}"
    );

    // Down: with failurePolicy Ignore, nothing is blocked.
    webhook.kill().await?;
    let bad = annotated(
        ns,
        "while-down",
        "nginx.ingress.kubernetes.io/permanent-redirect",
        "not a url",
    )?;
    let (status, _, body) = create(&env.admin, &path, &bad).await?;
    assert_eq!(status, 201, "{body}");
    Ok(())
}
