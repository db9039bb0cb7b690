//! The standalone manifests mode through the real `portico` binary: real
//! upstreams on 127.0.0.1:0, real files, real signals.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use http::StatusCode;
use tokio::net::TcpListener;

mod support;

use support::{
    DEFAULT_INGRESS_CLASS, PORTICO, Portico, base64, eventually, get, ingress_for, manifests,
    serve, served_serial, service_at, tls_secret, upstream,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_manifests_follows_edits_keeps_last_good_and_exits_cleanly() {
    let up = upstream("demo").await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.yaml");
    std::fs::write(&file, manifests(up, "/")).unwrap();
    // An unrelated kind in the same directory is skipped, not an error.
    std::fs::write(
        dir.path().join("deploy.yml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n",
    )
    .unwrap();

    let portico = Portico::start(dir.path());
    portico.ready().await;
    let (status, body) = get(portico.http, "demo.test", "/hello").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "demo /hello"));
    assert_eq!(
        get(portico.http, "other.test", "/").await.unwrap().0,
        StatusCode::NOT_FOUND
    );
    // The live table is on --debug-addr, not on the admin port.
    let (status, routes) = get(portico.debug, "x", "/debug/routes").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{routes}");
    assert!(routes.contains("demo.test"), "{routes}");
    let (status, _) = get(portico.admin, "x", "/debug/routes").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);

    // An edit is live without a restart.
    std::fs::write(&file, manifests(up, "/v2")).unwrap();
    let http = portico.http;
    eventually("edited path live", || async move {
        let old = get(http, "demo.test", "/hello").await?;
        (old.0 == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    assert_eq!(
        get(http, "demo.test", "/v2/x").await.unwrap(),
        (StatusCode::OK, "demo /v2/x".to_owned())
    );

    // A malformed edit is reported with file and document, and the file's
    // last good objects keep serving.
    let broken = manifests(up, "/v3").replace("kind: Ingress\n", "kind: Ingress\nspec: [oops\n");
    std::fs::write(&file, broken).unwrap();
    let reported = portico
        .log_containing(
            "malformed file reported",
            &["manifest not loaded", "app.yaml"],
        )
        .await;
    let v: serde_json::Value = serde_json::from_str(&reported).unwrap();
    assert!(v["fields"]["document"].is_number(), "{reported}");
    assert_eq!(
        get(http, "demo.test", "/v2/x").await.unwrap().0,
        StatusCode::OK
    );
    assert_eq!(
        get(http, "demo.test", "/v3/x").await.unwrap().0,
        StatusCode::NOT_FOUND
    );

    // SIGTERM: drain, then exit 0.
    portico.terminate();
    let exit = portico.exit_status().await;
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
}

/// The debug pages show the route table and pod addresses: unless told
/// otherwise, portico serves them on loopback only. Read from the binary's
/// own help, so nothing binds the default's fixed port.
#[test]
fn debug_pages_default_to_a_loopback_address() {
    let out = Command::new(PORTICO)
        .args(["run", "--help"])
        .env_remove("PORTICO_DEBUG_ADDR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    // The flag's entry: its line and its description, up to the next flag.
    let entry = help
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("--debug-addr "))
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !l.trim_start().starts_with('-'))
        .map(|(_, l)| l)
        .collect::<Vec<_>>()
        .join("\n");
    let default = entry
        .split_once("[default: ")
        .and_then(|(_, rest)| rest.split_once(']'))
        .map(|(value, _)| value)
        .expect("--debug-addr has a default");
    let addr: SocketAddr = default.parse().unwrap();
    assert!(addr.ip().is_loopback(), "--debug-addr defaults to {addr}");
}

/// `--drain-timeout` is the drain deadline: with a request whose upstream
/// never answers, portico gives up at the flag's deadline (not the default
/// 30 s, which is past this test's patience), says which one, and exits 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_flag_sets_the_drain_deadline() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        // Reads each request and never answers it.
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = listener.accept().await {
            let mut buf = [0u8; 1024];
            if stream.read(&mut buf).await.is_ok_and(|n| n > 0) {
                let _ = arrived_tx.send(());
            }
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), manifests(up, "/")).unwrap();
    let portico = Portico::start_with(dir.path(), &["--drain-timeout", "1s"]);
    portico.ready().await;

    let mut client = tokio::net::TcpStream::connect(portico.http).await.unwrap();
    client
        .write_all(b"GET /hang HTTP/1.1\r\nHost: demo.test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(20), arrived.recv())
        .await
        .expect("the request reached the upstream");

    portico.terminate();
    let gave_up = portico
        .log_line("drain deadline passed with requests in flight")
        .await;
    assert_eq!(gave_up["fields"]["timeout"], "1s", "{gave_up}");
    let exit = portico.exit_status().await;
    assert_eq!(exit.code(), Some(0), "exit status {exit:?}");
    drop(client);
}

/// The path and head flags reach the listener: the default normalises
/// the path the upstream sees, `--path-normalization=none` forwards it as
/// sent, and `--max-request-line-bytes` bounds the request line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_and_head_flags_reach_the_listener() {
    async fn answer(addr: SocketAddr, target: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        let head = format!("GET {target} HTTP/1.1\r\nHost: demo.test\r\nConnection: close\r\n\r\n");
        s.write_all(head.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "no answer to {target}");
        String::from_utf8_lossy(&out).into_owned()
    }
    let up = upstream("demo").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), manifests(up, "/")).unwrap();

    let normalised = Portico::start_with(dir.path(), &["--max-request-line-bytes", "40"]);
    normalised.ready().await;
    let rsp = answer(normalised.http, "/a/%2e%2e//b").await;
    assert!(rsp.ends_with("demo /b"), "{rsp}");
    // `GET ` + 27 + ` HTTP/1.1` is 40 bytes; one more is refused.
    let at = format!("/{}", "x".repeat(26));
    assert!(
        answer(normalised.http, &at)
            .await
            .starts_with("HTTP/1.1 200")
    );
    let over = format!("/{}", "x".repeat(27));
    let rsp = answer(normalised.http, &over).await;
    assert!(rsp.starts_with("HTTP/1.1 414"), "{rsp}");

    let as_sent = Portico::start_with(dir.path(), &["--path-normalization", "none"]);
    as_sent.ready().await;
    let rsp = answer(as_sent.http, "/a/%2e%2e//b").await;
    assert!(rsp.ends_with("demo /a/%2e%2e//b"), "{rsp}");
}

/// A directory holding `good.yaml`: an Ingress, its Service and endpoints.
fn dir_with_good_manifests() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("good.yaml"),
        manifests("127.0.0.1:1".parse().unwrap(), "/"),
    )
    .unwrap();
    dir
}

#[test]
fn validate_reports_each_object_and_fails_on_errors() {
    let dir = dir_with_good_manifests();
    let ok = Command::new(PORTICO)
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&ok.stdout);
    assert!(ok.status.success(), "{out}");
    assert!(out.contains("ok: Ingress default/demo"), "{out}");

    std::fs::write(
        dir.path().join("bad.yaml"),
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: bad
  annotations:
    nginx.ingress.kubernetes.io/permanent-redirect: "not a url"
    nginx.ingress.kubernetes.io/server-snippet: "return 200;"
spec:
  rules:
    - host: bad.test
      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: demo, port: {number: 80}}}}]}
---
apiVersion: v1
kind: Service
metadata: {name: broken}
spec: {ports: "not a list"}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: theirs}
spec:
  ingressClassName: nginx
  rules: [{host: theirs.test}]
"#,
    )
    .unwrap();
    let bad = Command::new(PORTICO)
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&bad.stdout);
    assert_eq!(bad.status.code(), Some(1), "{out}");
    assert!(out.contains("bad.yaml: document 1"), "{out}");
    assert!(
        out.contains("error: Ingress default/bad: metadata.annotations[nginx.ingress.kubernetes.io/permanent-redirect]: InvalidAnnotation"),
        "{out}"
    );
    assert!(out.contains("SnippetNotAllowed"), "{out}");
    assert!(
        out.contains(
            "skipped: Ingress default/theirs: not ours: IngressClass nginx does not exist"
        ),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_name_services_resolve_by_dns() {
    let up = upstream("external").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: outside}}
spec: {{type: ExternalName, externalName: localhost., ports: [{{name: http, port: {port}}}]}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: outside
  annotations: {{kubernetes.io/ingress.class: portico}}
spec:
  rules:
    - host: outside.test
      http:
        paths:
          - {{path: /, pathType: Prefix, backend: {{service: {{name: outside, port: {{name: http}}}}}}}}
"#,
            port = up.port()
        ),
    )
    .unwrap();
    let portico = Portico::start(dir.path());
    portico.ready().await;
    let http = portico.http;
    // 503 until the name resolves, then the upstream answers.
    let (status, body) = eventually("the ExternalName resolves", || async move {
        get(http, "outside.test", "/x")
            .await
            .filter(|(s, _)| *s != StatusCode::SERVICE_UNAVAILABLE)
    })
    .await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "external /x"));
}

#[test]
fn crds_prints_the_committed_yaml() {
    let out = Command::new(PORTICO).arg("crds").output().unwrap();
    assert!(out.status.success());
    let committed = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/httproutes.portico.dev.yaml"),
    )
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), committed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secret_edits_rotate_certificates_and_bad_ones_keep_the_last_good() {
    let up = upstream("demo").await;
    let dir = tempfile::tempdir().unwrap();
    let tls_ingress = manifests(up, "/").replace(
        "spec:\n  rules:",
        "spec:\n  tls: [{hosts: [demo.test], secretName: demo-tls}]\n  rules:",
    );
    std::fs::write(dir.path().join("app.yaml"), tls_ingress).unwrap();
    let secret = dir.path().join("secret.yaml");
    std::fs::write(&secret, tls_secret("demo-tls", "demo.test", 0x0a01, 30)).unwrap();

    let portico = Portico::start(dir.path());
    let https = portico.https;
    let serial = |want: &'static str| async move {
        served_serial(https, "demo.test")
            .await
            .filter(|s| s.eq_ignore_ascii_case(want))
    };
    eventually("the Secret's certificate served", || serial("0A01")).await;

    // An expired certificate is reported on the Ingress; the last good one
    // keeps serving.
    std::fs::write(&secret, tls_secret("demo-tls", "demo.test", 0x0a02, -1)).unwrap();
    portico
        .log_containing(
            "the expired Secret reported",
            &["InvalidCertificateRef", "expired"],
        )
        .await;
    assert_eq!(
        served_serial(https, "demo.test").await.as_deref(),
        Some("0A01")
    );

    // A good update rotates without a restart.
    std::fs::write(&secret, tls_secret("demo-tls", "demo.test", 0x0a03, 30)).unwrap();
    eventually("the rotated certificate served", || serial("0A03")).await;
    // Unknown names get the generated default, not the Secret's.
    assert_ne!(
        served_serial(https, "other.test").await.as_deref(),
        Some("0A03")
    );
}

/// Runs curl (a client no one here wrote); its stdout, or `None` when curl
/// itself failed (refused handshake and the like).
async fn curl(args: Vec<String>) -> Option<String> {
    tokio::task::spawn_blocking(move || {
        let out = Command::new("curl")
            .args(["-sS", "--max-time", "5"])
            .args(&args)
            .output()
            .ok()?;
        if !out.status.success() {
            eprintln!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        }
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await
    .unwrap()
}

/// A CA (PEM) and a leaf it issued for `names` (PEM certificate and key).
fn issued_by_ca(names: &[&str]) -> (String, String, String) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    // rcgen's default subject is the same for every certificate: a leaf
    // whose issuer equals its subject looks self-signed to OpenSSL, and
    // two CAs with one name make OpenSSL send the wrong one as a chain.
    ca_params.distinguished_name.push(
        rcgen::DnType::CommonName,
        format!("test CA for {}", names[0]),
    );
    ca_params.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let mut leaf = rcgen::CertificateParams::new(names).unwrap();
    leaf.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert.pem(), leaf.pem(), leaf_key.serialize_pem())
}

/// Through the real binary and curl: HTTPS by SNI with HSTS, the 308
/// redirect from HTTP, and a host that requires client certificates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_redirects_hsts_and_client_certificates_with_curl() {
    let up = upstream("demo").await;
    let dir = tempfile::tempdir().unwrap();
    let (server_ca, server_crt, server_key) = issued_by_ca(&["demo.test", "mtls.test"]);
    let (client_ca, client_crt, client_key) = issued_by_ca(&["client"]);
    let app = manifests(up, "/").replace(
        "spec:\n  rules:",
        "spec:\n  tls: [{hosts: [demo.test, mtls.test], secretName: site-tls}]\n  rules:",
    ) + &format!(
        "---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata:\n  name: mtls\n  annotations: {{nginx.ingress.kubernetes.io/auth-tls-secret: default/client-ca}}\nspec:\n  rules:\n    - host: mtls.test\n      http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: demo, port: {{number: 80}}}}}}}}]}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: site-tls}}\ntype: kubernetes.io/tls\ndata: {{tls.crt: {}, tls.key: {}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: client-ca}}\ntype: kubernetes.io/tls\ndata: {{ca.crt: {}}}\n",
        base64(server_crt.as_bytes()),
        base64(server_key.as_bytes()),
        base64(client_ca.as_bytes()),
    );
    std::fs::write(dir.path().join("app.yaml"), app).unwrap();
    let files = dir.path();
    let write = |name: &str, text: &str| {
        let p = files.join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let ca_file = write("server-ca.pem", &server_ca);
    let crt_file = write("client.pem", &client_crt);
    let key_file = write("client-key.pem", &client_key);

    let portico = Portico::start(dir.path());
    let https = portico.https;
    let resolve = |host: &str| format!("{host}:{}:127.0.0.1", https.port());
    let base = |host: &str| {
        vec![
            "--cacert".to_owned(),
            ca_file.clone(),
            "--resolve".to_owned(),
            resolve(host),
            "-D".to_owned(),
            "-".to_owned(),
            format!("https://{host}:{}/hello", https.port()),
        ]
    };
    // HTTPS with the Secret's certificate (curl verifies it), and HSTS.
    let headers = eventually("HTTPS served with the Secret's certificate", || {
        curl(base("demo.test"))
    })
    .await;
    assert!(headers.starts_with("HTTP/2 200"), "{headers}");
    assert!(
        headers.contains("strict-transport-security: max-age=15724800; includeSubDomains"),
        "{headers}"
    );
    // Plain HTTP for a TLS host: 308 to https, no port.
    let http = curl(vec![
        "-D".into(),
        "-".into(),
        "-o".into(),
        "/dev/null".into(),
        "-H".into(),
        "Host: demo.test".into(),
        format!("http://{}/a/b?c=1", portico.http),
    ])
    .await
    .unwrap();
    assert!(http.starts_with("HTTP/1.1 308"), "{http}");
    assert!(
        http.contains("location: https://demo.test/a/b?c=1"),
        "{http}"
    );
    // Client certificates: refused without, served with.
    assert_eq!(curl(base("mtls.test")).await, None, "no client certificate");
    let mut with_cert = base("mtls.test");
    with_cert.extend(["--cert".into(), crt_file, "--key".into(), key_file]);
    let served = curl(with_cert)
        .await
        .expect("served with a client certificate");
    assert!(served.starts_with("HTTP/2 200"), "{served}");
}

// === bounded manifests and user-written fields ===

/// A ConfigMap whose aliases expand to 10^9 scalars from 40 KB ("billion
/// laughs"). The long list first raises serde_yaml's own repetition limit
/// (a hundred alias jumps per event) far past what exhausts memory.
fn alias_bomb() -> String {
    let mut text = String::from(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lol, namespace: shop}\npad: [",
    );
    text.push_str(&"0,".repeat(20_000));
    text.push_str("0]\nl0: &l0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..=9 {
        let prev = format!("*l{}", i - 1);
        let refs = [prev.as_str(); 10].join(", ");
        text.push_str(&format!("l{i}: &l{i} [{refs}]\n"));
    }
    text
}

/// `portico validate PATH`, killed (and the test failed) if it has not
/// finished within a minute: a guard against a hang, not a timing
/// assertion. Returns the exit code and stdout.
fn validate_with_guard(path: &Path) -> (Option<i32>, String) {
    use std::io::Read;
    let mut child = Command::new(PORTICO)
        .arg("validate")
        .arg(path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // stdout closes when the process exits.
    std::thread::spawn(move || {
        let mut out = String::new();
        let _ = stdout.read_to_string(&mut out);
        let _ = tx.send(out);
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(out) => (child.wait().unwrap().code(), out),
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("portico validate did not finish");
        }
    }
}

#[test]
fn validate_stops_an_alias_bomb_and_names_it() {
    let dir = dir_with_good_manifests();
    std::fs::write(dir.path().join("bomb.yaml"), alias_bomb()).unwrap();
    let (code, out) = validate_with_guard(dir.path());
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(
            "bomb.yaml: document 0: ConfigMap shop/lol: expands to more than 524288 nodes, the limit per document"
        ),
        "{out}"
    );
    // The other file is still validated.
    assert!(out.contains("ok: Ingress default/demo"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_good_files_next_to_an_alias_bomb() {
    let up = upstream("demo").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), manifests(up, "/")).unwrap();
    std::fs::write(dir.path().join("bomb.yaml"), alias_bomb()).unwrap();

    let portico = Portico::start(dir.path());
    portico.ready().await;
    let (status, body) = get(portico.http, "demo.test", "/x").await.unwrap();
    assert_eq!((status, body.as_str()), (StatusCode::OK, "demo /x"));
    let reported = portico
        .log_line("manifest not loaded; its file's last good objects keep serving")
        .await;
    let fields = &reported["fields"];
    assert!(
        fields["file"].as_str().unwrap().ends_with("bomb.yaml"),
        "{reported}"
    );
    assert_eq!(fields["document"], 0, "{reported}");
    assert!(
        fields["reason"]
            .as_str()
            .unwrap()
            .contains("ConfigMap shop/lol: expands to more than"),
        "{reported}"
    );
}

#[test]
fn validate_names_the_object_and_field_of_type_errors_and_bad_ports() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.yaml"),
        r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: web, namespace: shop}
spec:
  rules:
    - host: web.test
      http: {paths: "abc"}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{name: http, port: 70000, targetPort: 8080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 0}]
endpoints: [{addresses: ["127.0.0.1"]}]
"#,
    )
    .unwrap();
    let (code, out) = validate_with_guard(dir.path());
    assert_eq!(code, Some(1), "{out}");
    for want in [
        r#"bad.yaml: document 0: Ingress shop/web: spec.rules[0].http.paths: invalid type: string "abc", expected a sequence"#,
        "bad.yaml: document 1: Service shop/web: spec.ports[0].port: 70000 is not a port number from 1 to 65535",
        "bad.yaml: document 2: EndpointSlice shop/web-1: ports[0].port: 0 is not a port number from 1 to 65535",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
}

#[test]
fn validate_refuses_framing_headers_and_unsendable_redirect_fields() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("routes.yaml"),
        r#"
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {ports: [{port: 80}]}
---
apiVersion: portico.dev/v1alpha1
kind: HTTPRoute
metadata: {name: forge}
spec:
  hostnames: [forge.test]
  rules:
    - filters:
        - type: ResponseHeaderModifier
          responseHeaderModifier: {set: [{name: Content-Length, value: "0"}, {name: x-ok, value: "1"}]}
        - type: RequestHeaderModifier
          requestHeaderModifier: {add: [{name: Transfer-Encoding, value: chunked}]}
      backendRefs: [{name: web, port: 80}]
---
apiVersion: portico.dev/v1alpha1
kind: HTTPRoute
metadata: {name: crlf}
spec:
  hostnames: [crlf.test]
  rules:
    - filters:
        - type: RequestRedirect
          requestRedirect: {path: {type: ReplaceFullPath, replaceFullPath: "/a\r\nSet-Cookie: x=1"}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: headers
  annotations:
    nginx.ingress.kubernetes.io/custom-headers: "Content-Length: 0"
    nginx.ingress.kubernetes.io/app-root: "/a\r\nb"
spec:
  ingressClassName: portico
  rules:
    - host: headers.test
      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: portico}
spec: {controller: portico.dev/ingress-controller}
"#,
    )
    .unwrap();
    let (code, out) = validate_with_guard(dir.path());
    assert_eq!(code, Some(1), "{out}");
    for want in [
        r#"error: HTTPRoute default/forge: spec.rules[0].filters[0].responseHeaderModifier.set[0].name: InvalidFilter: "Content-Length" cannot be changed by a header filter: it frames the message"#,
        r#"error: HTTPRoute default/forge: spec.rules[0].filters[1].requestHeaderModifier.add[0].name: InvalidFilter: "Transfer-Encoding" cannot be changed"#,
        r#"error: HTTPRoute default/crlf: spec.rules[0].filters[0].requestRedirect.path.replaceFullPath: InvalidFilter: "/a\r\nSet-Cookie: x=1": not valid in a Location header"#,
        "warning: Ingress default/headers: metadata.annotations[nginx.ingress.kubernetes.io/custom-headers]: InvalidAnnotation",
        "content-length cannot be set: it frames the message",
        "warning: Ingress default/headers: metadata.annotations[nginx.ingress.kubernetes.io/app-root]: InvalidAnnotation",
    ] {
        assert!(out.contains(want), "{want}\n{out}");
    }
}

/// `portico validate ARGS...` with `stdin` piped in; exit code and stdout.
fn validate_args(args: &[&str], stdin: &str) -> (Option<i32>, String) {
    use std::io::Write;
    let mut child = Command::new(PORTICO)
        .arg("validate")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// An application repository's Ingress: it names the chart's class, which
/// the repository does not hold, and carries one invalid and one
/// unsupported annotation.
const APP_INGRESS: &str = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  namespace: web
  annotations:
    nginx.ingress.kubernetes.io/permanent-redirect: "not a url"
spec:
  ingressClassName: portico
  rules:
    - host: shop.test
      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 80}}}}]}
"#;

/// A kind Portico does not read.
const UNREAD_ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1alpha2
kind: TCPRoute
metadata: {name: api, namespace: web}
spec:
  rules: []
"#;

#[test]
fn validate_assumes_the_configured_class_when_the_input_holds_none() {
    let (code, out) = validate_args(&["-"], APP_INGRESS);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("note: no IngressClass in the input: Ingresses of class \"portico\""),
        "{out}"
    );
    assert!(
        out.contains("error: Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/permanent-redirect]: InvalidAnnotation"),
        "{out}"
    );
    // --ingress-class names the class to assume.
    let (code, out) = validate_args(&["-", "--ingress-class", "internal"], APP_INGRESS);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("skipped: Ingress web/shop: not ours: IngressClass portico does not exist"),
        "{out}"
    );
    // Input that holds IngressClasses is judged by them.
    let other = format!(
        "{APP_INGRESS}---\napiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {{name: nginx}}\nspec: {{controller: k8s.io/ingress-nginx}}\n"
    );
    let (code, out) = validate_args(&["-"], &other);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("note:"), "{out}");
    assert!(out.contains("IngressClass portico does not exist"), "{out}");
}

#[test]
fn validate_lists_documents_it_does_not_read_and_strict_fails_on_them() {
    let dir = dir_with_good_manifests();
    std::fs::write(dir.path().join("gateway.yaml"), UNREAD_ROUTE).unwrap();
    let (code, out) = validate_with_guard(dir.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("gateway.yaml: document 0: TCPRoute web/api (gateway.networking.k8s.io/v1alpha2/TCPRoute) is not read by Portico"),
        "{out}"
    );
    assert!(out.contains("1 documents not read"), "{out}");
    let path = dir.path().to_str().unwrap();
    let (code, out) = validate_args(&[path, "--strict"], "");
    assert_eq!(code, Some(1), "{out}");
}

#[test]
fn validate_strict_fails_on_warnings() {
    let ingress = r#"
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: shop
  annotations:
    nginx.ingress.kubernetes.io/server-snippet: "return 200;"
spec:
  ingressClassName: portico
  rules:
    - host: shop.test
      http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: shop, port: {number: 80}}}}]}
"#;
    let (code, out) = validate_args(&["-"], ingress);
    assert!(out.contains("warning: Ingress default/shop"), "{out}");
    assert!(!out.contains("error:"), "{out}");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = validate_args(&["--strict", "-"], ingress);
    assert_eq!(code, Some(1), "{out}");
}

#[test]
fn validate_speaks_json_and_github_and_exits_2_on_unreadable_input() {
    let input = format!("{APP_INGRESS}---{UNREAD_ROUTE}");
    let (code, out) = validate_args(&["-o", "json", "-"], &input);
    assert_eq!(code, Some(1), "{out}");
    let doc: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(doc["exit_code"], 1);
    let findings = doc["findings"].as_array().unwrap();
    let invalid = findings
        .iter()
        .find(|f| f["reason"] == "InvalidAnnotation")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(invalid["severity"], "error");
    assert_eq!(invalid["object"]["kind"], "Ingress");
    assert_eq!(invalid["object"]["namespace"], "web");
    assert_eq!(invalid["object"]["name"], "shop");
    assert_eq!(invalid["file"], "<stdin>");
    assert_eq!(
        invalid["field"],
        "metadata.annotations[nginx.ingress.kubernetes.io/permanent-redirect]"
    );
    assert_eq!(invalid["doc"], "docs/annotations.md");
    assert!(findings.iter().any(|f| f["reason"] == "NotRead"), "{out}");
    assert_eq!(doc["summary"]["not_read"], 1);

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), APP_INGRESS).unwrap();
    let path = dir.path().to_str().unwrap();
    let (code, out) = validate_args(&["-o", "github", path], "");
    assert_eq!(code, Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("::error "))
        .unwrap_or_else(|| panic!("{out}"));
    // The file property has its `:` escaped only where it has one; the
    // message carries the object and field.
    assert!(line.contains("app.yaml,title=portico%3A InvalidAnnotation::Ingress web/shop: metadata.annotations[nginx.ingress.kubernetes.io/permanent-redirect]: "), "{line}");
    assert!(
        out.contains("::notice title=portico validate::no IngressClass"),
        "{out}"
    );

    let missing = dir.path().join("missing.yaml");
    let (code, out) = validate_args(&[missing.to_str().unwrap()], "");
    assert_eq!(code, Some(2), "{out}");
}

/// A redirect URL without a path goes out as written (ingress-nginx), not
/// with a `/` added; one with a path keeps it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_annotations_send_the_url_as_written() {
    async fn location(addr: SocketAddr, host: &str) -> String {
        let text = raw_get(addr, host, "").await;
        text.lines()
            .find_map(|l| l.strip_prefix("location: "))
            .unwrap_or_else(|| panic!("no Location: {text}"))
            .to_owned()
    }
    let dir = dir_with_good_manifests();
    let redirect = |name: &str, url: &str| {
        let annotation = format!(r#"nginx.ingress.kubernetes.io/permanent-redirect: "{url}""#);
        ingress_for(name, "demo", &annotation)
    };
    let text =
        redirect("bare", "https://new.test") + &redirect("pathed", "https://new.test/landing");
    std::fs::write(dir.path().join("redirects.yaml"), text).unwrap();
    let portico = Portico::start_with(dir.path(), &[]);
    portico.ready().await;
    assert_eq!(
        location(portico.http, "bare.test").await,
        "https://new.test"
    );
    assert_eq!(
        location(portico.http, "pathed.test").await,
        "https://new.test/landing"
    );
}

/// The whole answer to `GET /` on `host`, with `extra` header lines, over
/// a raw connection (no client library normalising anything).
async fn raw_get(addr: SocketAddr, host: &str, extra: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET / HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n");
    s.write_all(head.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "no answer for {host}");
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of [`raw_get`]'s answer.
async fn status_of(addr: SocketAddr, host: &str, extra: &str) -> u16 {
    let text = raw_get(addr, host, extra).await;
    text.split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {text}"))
}

/// One more Ingress document: `name.test` to the `demo` Service, with
/// `annotations` (a YAML flow mapping's entries).
fn ingress(name: &str, annotations: &str) -> String {
    ingress_for(name, "demo", annotations)
}

/// `allowlist-source-range` (and its alias), `denylist-source-range`, their
/// global flags, fail-closed lists, and the client address they judge
/// (a trusted proxy's X-Forwarded-For entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ip_access_lists_judge_the_client_address() {
    let up = upstream("demo").await;
    let dir = tempfile::tempdir().unwrap();
    let text = manifests(up, "/")
        + &ingress("open", "")
        + &ingress(
            "local",
            r#"nginx.ingress.kubernetes.io/whitelist-source-range: "127.0.0.1/32, ::1""#,
        )
        + &ingress(
            "elsewhere",
            r#"nginx.ingress.kubernetes.io/allowlist-source-range: "192.0.2.0/24""#,
        )
        + &ingress(
            "denied",
            r#"portico.dev/denylist-source-range: "10.0.0.0/8,127.0.0.0/8""#,
        )
        + &ingress(
            "typo",
            r#"nginx.ingress.kubernetes.io/allowlist-source-range: "127.0.0.1/33""#,
        )
        + &ingress(
            "own-deny",
            r#"nginx.ingress.kubernetes.io/denylist-source-range: "192.0.2.1""#,
        );
    std::fs::write(dir.path().join("app.yaml"), text).unwrap();

    let portico = Portico::start_with(dir.path(), &[]);
    portico.ready().await;
    for (host, want) in [
        ("open.test", 200),
        ("local.test", 200),
        ("elsewhere.test", 403),
        ("denied.test", 403),
        // Fails closed, as ingress-nginx.
        ("typo.test", 503),
    ] {
        assert_eq!(status_of(portico.http, host, "").await, want, "{host}");
    }
    // Without --trusted-proxies an X-Forwarded-For claim changes nothing.
    let claim = "X-Forwarded-For: 192.0.2.9\r\n";
    assert_eq!(status_of(portico.http, "elsewhere.test", claim).await, 403);
    drop(portico);

    // Behind a trusted proxy the client is its X-Forwarded-For entry; the
    // global deny list applies where an Ingress has no deny list of its own.
    let behind = Portico::start_with(
        dir.path(),
        &[
            "--trusted-proxies",
            "127.0.0.1/32",
            "--denylist-source-range",
            "127.0.0.1",
        ],
    );
    behind.ready().await;
    assert_eq!(status_of(behind.http, "elsewhere.test", claim).await, 200);
    assert_eq!(status_of(behind.http, "local.test", claim).await, 403);
    assert_eq!(status_of(behind.http, "open.test", "").await, 403);
    assert_eq!(status_of(behind.http, "own-deny.test", "").await, 200);
}

/// An upstream answering the status its path ends with (`/status/404`) as
/// `<name> <status>`, or, when `page` is set, 200 with the error headers it
/// was asked with (an error backend).
async fn status_upstream(name: &'static str, page: bool) -> SocketAddr {
    serve(move |req| {
        let header = |n: &str| {
            req.headers()
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_owned()
        };
        if page {
            let body = format!(
                "{name} code={} ingress={} service={} port={}",
                header("x-code"),
                header("x-ingress-name"),
                header("x-service-name"),
                header("x-service-port"),
            );
            return (StatusCode::OK, body);
        }
        let status = req
            .uri()
            .path()
            .strip_prefix("/status/")
            .and_then(|s| s.parse().ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::OK);
        (status, format!("{name} {}", status.as_u16()))
    })
    .await
}

/// `custom-http-errors`, `default-backend`, `disable-proxy-intercept-errors`
/// and the global `--default-backend-service` and `--custom-http-errors`,
/// through the real binary; invalid entries reported by `portico validate`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_error_pages_from_annotations_and_flags() {
    let app = status_upstream("app", false).await;
    let own = status_upstream("own-page", true).await;
    let global = status_upstream("global-page", true).await;
    let ingress = |name: &str, annotations: &str| ingress_for(name, "app", annotations);
    let text = String::from(DEFAULT_INGRESS_CLASS)
        + &service_at("app", app)
        + &service_at("own-errors", own)
        + &service_at("global-errors", global)
        + &ingress(
            "pages",
            r#"nginx.ingress.kubernetes.io/custom-http-errors: "404,503", nginx.ingress.kubernetes.io/default-backend: own-errors"#,
        )
        + &ingress("plain", "")
        + &ingress(
            "passing",
            r#"portico.dev/custom-http-errors: "404", portico.dev/disable-proxy-intercept-errors: "true""#,
        );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), &text).unwrap();

    let portico = Portico::start_with(
        dir.path(),
        &[
            "--default-backend-service",
            "default/global-errors",
            "--custom-http-errors",
            "500",
        ],
    );
    portico.ready().await;
    let http = portico.http;
    for (host, path, status, body) in [
        // The Ingress's own codes and error backend; told its Service.
        (
            "pages.test",
            "/status/404",
            404,
            "own-page code=404 ingress=pages service=app port=80",
        ),
        // Its own list replaces the global one.
        ("pages.test", "/status/500", 500, "app 500"),
        // The global codes and backend where the Ingress says nothing.
        (
            "plain.test",
            "/status/500",
            500,
            "global-page code=500 ingress=plain service=app port=80",
        ),
        ("plain.test", "/status/404", 404, "app 404"),
        ("plain.test", "/status/200", 200, "app 200"),
        // Upstream answers pass through.
        ("passing.test", "/status/404", 404, "app 404"),
        // No route: the global default backend renders the 404.
        (
            "unknown.test",
            "/",
            404,
            "global-page code=404 ingress=- service=- port=-",
        ),
    ] {
        let got = get(http, host, path).await.unwrap();
        assert_eq!(
            (got.0.as_u16(), got.1.as_str()),
            (status, body),
            "{host}{path}"
        );
    }
    let (_, routes) = get(portico.debug, "x", "/debug/routes").await.unwrap();
    assert!(routes.contains("\"error_pages\""), "{routes}");
    drop(portico);

    // Without the flags: a plain 404, and only the annotated Ingress's pages.
    let bare = Portico::start(dir.path());
    bare.ready().await;
    let (status, body) = get(bare.http, "unknown.test", "/").await.unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body.starts_with("404 Not Found"), "{body}");
    assert_eq!(
        get(bare.http, "plain.test", "/status/500").await.unwrap(),
        (StatusCode::INTERNAL_SERVER_ERROR, "app 500".to_owned())
    );
    assert_eq!(
        get(bare.http, "pages.test", "/status/503").await.unwrap().1,
        "own-page code=503 ingress=pages service=app port=80"
    );
    drop(bare);

    // An invalid entry is named by `portico validate`, the rest kept.
    let typo = text.replace("\"404,503\"", "\"404,5O3\"");
    let (code, out) = validate_args(&["-"], &typo);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("Ingress default/pages")
            && out.contains("nginx.ingress.kubernetes.io/custom-http-errors")
            && out.contains("\"5O3\"")
            && out.contains("400 to 599"),
        "{out}"
    );
}

/// A line of a htpasswd fixture made by the real `htpasswd`
/// (`dataplane/tests/fixtures/htpasswd/README.md`), under `user`.
fn htpasswd_line(fixture: &str, line: usize, user: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../dataplane/tests/fixtures/htpasswd")
        .join(fixture);
    let text = std::fs::read_to_string(path).unwrap();
    let (_, hash) = text.lines().nth(line).unwrap().split_once(':').unwrap();
    format!("{user}:{hash}")
}

/// `auth-type: basic` against an Opaque Secret in the manifests directory;
/// rewriting the Secret with another password applies live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn basic_auth_follows_its_secret() {
    let up = upstream("demo").await;
    let dir = tempfile::tempdir().unwrap();
    let guarded = r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: guarded
  annotations:
    nginx.ingress.kubernetes.io/auth-type: basic
    nginx.ingress.kubernetes.io/auth-secret: users
    nginx.ingress.kubernetes.io/auth-realm: Staff only
spec:
  ingressClassName: portico
  rules: [{host: guarded.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: demo, port: {number: 80}}}}]}}]
"#;
    std::fs::write(dir.path().join("app.yaml"), manifests(up, "/") + guarded).unwrap();
    let secret = |auth: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: users}}\ntype: Opaque\ndata:\n  auth: {}\n",
            base64(auth.as_bytes())
        )
    };
    let secret_file = dir.path().join("users.yaml");
    // alice's password is `s3cret pass`.
    std::fs::write(&secret_file, secret(&htpasswd_line("sha1", 0, "alice"))).unwrap();

    let portico = Portico::start(dir.path());
    portico.ready().await;
    let http = portico.http;
    let as_alice = |password: &'static str| async move {
        let token = base64(format!("alice:{password}").as_bytes());
        status_of(
            http,
            "guarded.test",
            &format!("Authorization: Basic {token}\r\n"),
        )
        .await
    };
    let challenge = raw_get(http, "guarded.test", "").await;
    assert!(challenge.starts_with("HTTP/1.1 401"), "{challenge}");
    assert!(
        challenge.contains("www-authenticate: Basic realm=\"Staff only\""),
        "{challenge}"
    );
    assert_eq!(as_alice("s3cret pass").await, 200);
    assert_eq!(as_alice("hunter2").await, 401);

    // A new password (apr1 of `hunter2`), and a refused plain-text entry
    // that is reported without its password.
    let rotated = format!("{}\nmallory:plaintext\n", htpasswd_line("apr1", 1, "alice"));
    std::fs::write(&secret_file, secret(&rotated)).unwrap();
    eventually("the new password accepted", || async move {
        (as_alice("hunter2").await == 200).then_some(())
    })
    .await;
    assert_eq!(as_alice("s3cret pass").await, 401);
    let reported = portico
        .log_containing(
            "the refused entry reported",
            &["InvalidAuthSecret", "mallory"],
        )
        .await;
    assert!(
        reported.contains("Secret default/users: line 2"),
        "{reported}"
    );
    assert!(!reported.contains("plaintext"), "{reported}");

    // The debug page shows the Secret and how many users, never a hash.
    let (_, routes) = get(portico.debug, "x", "/debug/routes").await.unwrap();
    assert!(routes.contains("\"secret\": \"default/users\""), "{routes}");
    assert!(routes.contains("\"users\": 1"), "{routes}");
    assert!(!routes.contains("$apr1$"), "{routes}");

    // A Secret that is gone denies the paths: never served unauthenticated.
    std::fs::remove_file(&secret_file).unwrap();
    eventually("the paths denied", || async move {
        (status_of(http, "guarded.test", "").await == 503).then_some(())
    })
    .await;
}

const APP_ORIGIN: &str = "https://app.example.com";

/// CORS manifests: ingress-nginx's annotations on an Ingress (and
/// `cors-*` without `enable-cors` on another), Gateway API's filter on an
/// HTTPRoute.
fn cors_manifests(up: SocketAddr) -> String {
    manifests(up, "/")
        + &ingress(
            "cors",
            &format!(
                r#"nginx.ingress.kubernetes.io/enable-cors: "true",
                   nginx.ingress.kubernetes.io/cors-allow-origin: "{APP_ORIGIN}, https://*.example.org, example.net,",
                   nginx.ingress.kubernetes.io/cors-allow-methods: "GET, PUT",
                   nginx.ingress.kubernetes.io/cors-max-age: "600""#
            ),
        )
        + &ingress(
            "cors-off",
            &format!(r#"nginx.ingress.kubernetes.io/cors-allow-origin: "{APP_ORIGIN}""#),
        )
        + r#"
---
apiVersion: portico.dev/v1alpha1
kind: HTTPRoute
metadata: {name: gw}
spec:
  hostnames: [gw.test]
  rules:
    - filters:
        - type: CORS
          cors:
            allowOrigins: ["https://*.example.org"]
            allowMethods: ["*"]
            allowCredentials: true
            maxAge: 30
      backendRefs: [{name: demo, port: 80}]
"#
}

fn preflight(origin: &str) -> [(&str, &str); 3] {
    [
        ("origin", origin),
        ("access-control-request-method", "PUT"),
        ("access-control-request-headers", "x-custom"),
    ]
}

/// CORS from manifests to answers: a preflight from an allowed origin is
/// the proxy's (the upstream, which answers `demo <path>`, never sees it),
/// other answers are decorated, and the two wildcards differ as ingress-nginx
/// and Gateway API say.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_annotations_and_the_httproute_filter_answer_browsers() {
    use http::Method;
    use support::request;

    let up = upstream("demo").await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("app.yaml"), cors_manifests(up)).unwrap();
    let portico = Portico::start(dir.path());
    portico.ready().await;
    let http = portico.http;
    let send = |method: Method, host: &'static str, headers: Vec<(&'static str, &'static str)>| async move {
        request(http, method, host, "/x", &headers).await.unwrap()
    };
    // The CORS headers a test looks at, in this order.
    let cors = |h: &http::HeaderMap| {
        [
            "access-control-allow-origin",
            "access-control-allow-credentials",
            "access-control-allow-methods",
            "access-control-max-age",
        ]
        .map(|n| h.get(n).map(|v| v.to_str().unwrap().to_owned()))
    };
    let want = |values: [Option<&str>; 4]| values.map(|v| v.map(str::to_owned));

    // The Ingress: ingress-nginx's defaults for what is not set.
    let (status, h, body) =
        send(Method::OPTIONS, "cors.test", preflight(APP_ORIGIN).to_vec()).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert_eq!(
        cors(&h),
        want([
            Some(APP_ORIGIN),
            Some("true"),
            Some("GET, PUT"),
            Some("600")
        ])
    );
    assert!(
        h.get("access-control-allow-headers")
            .is_some_and(|v| v.to_str().unwrap().contains("authorization")),
        "{h:?}"
    );

    // One label before example.org: allowed, echoed on a simple request.
    let shop = "https://shop.example.org";
    let (status, h, body) = send(Method::GET, "cors.test", vec![("origin", shop)]).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "demo /x"));
    assert_eq!(cors(&h), want([Some(shop), Some("true"), None, None]));
    assert_eq!(h["vary"], "origin");

    // Two labels: not for an ingress-nginx wildcard. Its preflight goes to
    // the backend, as ingress-nginx sends it, without CORS headers.
    let deep = "https://a.shop.example.org";
    let (status, h, body) = send(Method::OPTIONS, "cors.test", preflight(deep).to_vec()).await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "demo /x"));
    assert_eq!(cors(&h), want([None; 4]));

    // cors-* without enable-cors does nothing.
    let (status, h, _) = send(Method::GET, "cors-off.test", vec![("origin", APP_ORIGIN)]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(cors(&h), want([None; 4]));
    assert!(!h.contains_key("vary"), "{h:?}");

    // The HTTPRoute: Gateway API's wildcard covers any number of labels;
    // with credentials the origin and the requested method are echoed.
    let (status, h, body) = send(Method::OPTIONS, "gw.test", preflight(deep).to_vec()).await;
    assert_eq!((status, body.as_str()), (StatusCode::NO_CONTENT, ""));
    assert_eq!(
        cors(&h),
        want([Some(deep), Some("true"), Some("PUT"), Some("30")])
    );
    // Another origin's preflight is refused there, never forwarded.
    let (status, h, body) = send(Method::OPTIONS, "gw.test", preflight(APP_ORIGIN).to_vec()).await;
    assert_eq!((status, body.as_str()), (StatusCode::FORBIDDEN, ""));
    assert_eq!(cors(&h), want([None; 4]));

    // The live table shows the typed filters.
    let (status, routes) = get(portico.debug, "x", "/debug/routes").await.unwrap();
    assert_eq!(status, StatusCode::OK, "{routes}");
    assert!(routes.contains(r#""https://**.example.org""#), "{routes}");
    assert!(
        routes.contains(r#""disallowed_preflight": "forward""#),
        "{routes}"
    );
}

#[test]
fn validate_names_dropped_and_ignored_cors_settings() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("app.yaml"),
        cors_manifests("127.0.0.1:1".parse().unwrap()),
    )
    .unwrap();
    let out = Command::new(PORTICO)
        .arg("validate")
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    // Warnings only: every object is served.
    assert!(out.status.success(), "{text}");
    let warned = |object: &str, needle: &str| {
        text.lines().any(|l| {
            l.starts_with("warning: ")
                && l.contains(object)
                && l.contains("cors-allow-origin")
                && l.contains(needle)
        })
    };
    assert!(
        warned("Ingress default/cors:", r#"entry "example.net" dropped"#),
        "{text}"
    );
    assert!(
        warned("Ingress default/cors-off:", "unless enable-cors is"),
        "{text}"
    );
}

/// An auth service like oauth2-proxy's `/oauth2/auth`: 202 with the user
/// for the cookie `session=ok`, 401 otherwise.
async fn auth_service() -> SocketAddr {
    support::serve_with(|req| {
        let signed_in = req
            .headers()
            .get("cookie")
            .is_some_and(|c| c.as_bytes() == b"session=ok");
        let rsp = if signed_in {
            http::Response::builder()
                .status(StatusCode::ACCEPTED)
                .header("x-auth-request-user", "alice")
        } else {
            http::Response::builder().status(StatusCode::UNAUTHORIZED)
        };
        rsp.body(http_body_util::Full::new(bytes::Bytes::new()))
            .unwrap()
    })
    .await
}

/// oauth2-proxy's documented annotations through the real binary and a
/// real auth service: sign-in redirect, the user passed on in place of the
/// client's forgery, and `--global-auth-url` with its opt-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn external_auth_guards_paths_as_oauth2_proxy_expects() {
    let auth = auth_service().await;
    let up = serve(|req| {
        let user = req
            .headers()
            .get_all("x-auth-request-user")
            .iter()
            .map(|v| v.to_str().unwrap_or("?"))
            .collect::<Vec<_>>()
            .join(",");
        (StatusCode::OK, format!("user={user}"))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let text = manifests(up, "/")
        + &ingress(
            "sso",
            &format!(
                r#"nginx.ingress.kubernetes.io/auth-url: "http://{auth}/oauth2/auth",
                   nginx.ingress.kubernetes.io/auth-signin: "https://login.test/oauth2/start",
                   nginx.ingress.kubernetes.io/auth-response-headers: "X-Auth-Request-User""#
            ),
        )
        + &ingress("global", "")
        + &ingress(
            "public",
            r#"nginx.ingress.kubernetes.io/enable-global-auth: "false""#,
        );
    std::fs::write(dir.path().join("all.yaml"), text).unwrap();
    let global = format!("http://{auth}/oauth2/auth");
    let portico = Portico::start_with(dir.path(), &["--global-auth-url", &global]);
    portico.ready().await;
    let http = portico.http;

    let (status, headers, _) =
        support::request(http, http::Method::GET, "sso.test", "/page?a=1", &[])
            .await
            .expect("an answer");
    assert_eq!(status, StatusCode::FOUND);
    assert_eq!(
        headers["location"],
        "https://login.test/oauth2/start?rd=http%3A%2F%2Fsso%2Etest%2Fpage%3Fa%3D1"
    );
    let signed_in = [("cookie", "session=ok"), ("x-auth-request-user", "mallory")];
    let (status, _, body) = support::request(http, http::Method::GET, "sso.test", "/", &signed_in)
        .await
        .expect("an answer");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "user=alice"));

    // The global policy: no signin URL, so the 401 reaches the client.
    let (status, _) = get(http, "global.test", "/").await.expect("an answer");
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (status, body) = get(http, "public.test", "/").await.expect("an answer");
    assert_eq!((status, body.as_str()), (StatusCode::OK, "user="));
}

/// An upstream that answers `/hold` only when told to (it says when such a
/// request has arrived), anything else at once.
async fn holding_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<tokio::sync::oneshot::Sender<()>>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 1024];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                if head.starts_with(b"GET /hold ") {
                    let (release, released) = tokio::sync::oneshot::channel::<()>();
                    let _ = tx.send(release);
                    let _ = released.await;
                }
                let _ = s
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (addr, arrived)
}

/// `limit-rps` and `limit-connections` through the real binary, with the
/// status flags: the burst passes, then 429 with `Retry-After`; one
/// request in flight per client, the next refused 503 until it ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_annotations_and_status_flags() {
    let (up, mut arrived) = holding_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let mut yaml = format!("{DEFAULT_INGRESS_CLASS}{}", service_at("app", up));
    yaml += &ingress_for(
        "rated",
        "app",
        r#"nginx.ingress.kubernetes.io/limit-rpm: "1", nginx.ingress.kubernetes.io/limit-burst-multiplier: "2""#,
    );
    yaml += &ingress_for(
        "conns",
        "app",
        r#"nginx.ingress.kubernetes.io/limit-connections: "1""#,
    );
    std::fs::write(dir.path().join("app.yaml"), yaml).unwrap();
    let portico = Portico::start_with(dir.path(), &["--limit-req-status-code", "429"]);
    portico.ready().await;
    let http = portico.http;

    // 1 per minute with a burst of 2: three pass, the fourth is refused.
    for _ in 0..3 {
        let (status, _) = get(http, "rated.test", "/").await.unwrap();
        assert_eq!(status, StatusCode::OK);
    }
    let (status, headers, _) = support::request(http, http::Method::GET, "rated.test", "/", &[])
        .await
        .unwrap();
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key("retry-after"), "{headers:?}");

    let held = tokio::spawn(async move { get(http, "conns.test", "/hold").await });
    let release = arrived.recv().await.unwrap();
    let (status, _) = get(http, "conns.test", "/").await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    release.send(()).unwrap();
    assert_eq!(held.await.unwrap().unwrap().0, StatusCode::OK);
    eventually("the place to free up", || async move {
        get(http, "conns.test", "/")
            .await
            .filter(|(s, _)| *s == StatusCode::OK)
    })
    .await;
}

/// `portico.dev/jwt-*` on an Ingress, its JWKS in an Opaque Secret in the
/// manifests directory: a token that key signed passes with its claims as
/// headers; forged headers do not; a Secret holding an HMAC key is
/// reported on the Ingress and denies its paths.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_annotations_validate_against_a_secrets_jwks() {
    use portico_testkit::jwt::{Algorithm, Signer, jwks, now};
    // Answers with the claim header it received.
    let up = serve(|req| {
        let user = req
            .headers()
            .get_all("x-user")
            .iter()
            .map(|v| v.to_str().unwrap_or("?").to_owned())
            .collect::<Vec<_>>();
        (StatusCode::OK, format!("user={}", user.join("|")))
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let guarded = r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: guarded
  annotations:
    portico.dev/jwt-issuer: https://idp.test
    portico.dev/jwt-jwks-secret: idp-keys
    portico.dev/jwt-audiences: api
    portico.dev/jwt-claim-to-headers: |
      sub:X-User
spec:
  ingressClassName: portico
  rules: [{host: guarded.test, http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: demo, port: {number: 80}}}}]}}]
"#;
    std::fs::write(dir.path().join("app.yaml"), manifests(up, "/") + guarded).unwrap();
    let key = Signer::new(Algorithm::ES256, "k1");
    let secret = |jwks: &str| {
        format!(
            "apiVersion: v1\nkind: Secret\nmetadata: {{name: idp-keys}}\ntype: Opaque\ndata:\n  jwks: {}\n",
            base64(jwks.as_bytes())
        )
    };
    let secret_file = dir.path().join("keys.yaml");
    std::fs::write(&secret_file, secret(&jwks(&[&key]))).unwrap();

    let portico = Portico::start(dir.path());
    portico.ready().await;
    let http = portico.http;
    let token = key.sign(&serde_json::json!({
        "iss": "https://idp.test", "aud": "api", "sub": "alice", "exp": now() + 300,
    }));
    let bearer = format!("Bearer {token}");
    let call = |auth: Option<&str>| {
        let mut headers = vec![("x-user", "root")];
        if let Some(a) = auth {
            headers.push(("authorization", a));
        }
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.to_owned()))
            .collect();
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            support::request(http, http::Method::GET, "guarded.test", "/", &headers)
                .await
                .unwrap()
        }
    };
    let (status, headers, _) = call(None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers["www-authenticate"], "Bearer realm=\"guarded.test\"");
    let (status, _, body) = call(Some(&bearer)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, "user=alice");

    // A shared secret in the key set: reported, and the paths denied.
    std::fs::write(
        &secret_file,
        secret(r#"{"keys":[{"kty":"oct","kid":"s","k":"c2VjcmV0"}]}"#),
    )
    .unwrap();
    let bearer2 = bearer.clone();
    eventually("the paths denied", || {
        let b = bearer2.clone();
        async move { (call(Some(&b)).await.0 == StatusCode::SERVICE_UNAVAILABLE).then_some(()) }
    })
    .await;
    let reported = portico
        .log_containing(
            "the HMAC key reported",
            &["InvalidJwtKeys", "shared secret"],
        )
        .await;
    assert!(reported.contains("Secret default/idp-keys"), "{reported}");
}

/// A recording upstream: answers 200 and sends each request's path, `Host`
/// and body on the channel, once it has read the whole body.
async fn recording_upstream() -> (
    SocketAddr,
    tokio::sync::mpsc::UnboundedReceiver<(String, String, String)>,
) {
    use http_body_util::BodyExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let tx = tx.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes());
                            let path = parts.uri.path_and_query().map(|p| p.to_string());
                            let host = parts.headers.get("host").and_then(|h| h.to_str().ok());
                            if let (Ok(body), Some(path), Some(host)) = (body, path, host) {
                                let body = String::from_utf8_lossy(&body).into_owned();
                                let _ = tx.send((path, host.to_owned(), body));
                            }
                            Ok::<_, std::convert::Infallible>(http::Response::new(
                                http_body_util::Full::new(bytes::Bytes::from_static(b"shadow")),
                            ))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirror_target_copies_requests_to_a_service() {
    let up = upstream("demo").await;
    let (shadow, mut copies) = recording_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let text = manifests(up, "/")
        + &service_at("shadow", shadow)
        + &ingress_for(
            "mirrored",
            "demo",
            r#"nginx.ingress.kubernetes.io/mirror-target: "http://shadow.default.svc$request_uri""#,
        );
    std::fs::write(dir.path().join("app.yaml"), text).unwrap();
    let portico = Portico::start(dir.path());
    portico.ready().await;

    let answer = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(portico.http).await.unwrap();
        s.write_all(b"POST /orders/7?x=1 HTTP/1.1\r\nhost: mirrored.test\r\ncontent-length: 5\r\nconnection: close\r\n\r\norder")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
            .await
            .expect("an answer within 20 s")
            .unwrap();
        String::from_utf8_lossy(&out).into_owned()
    };
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("demo /orders/7"), "{answer}");
    let copy = tokio::time::timeout(Duration::from_secs(20), copies.recv())
        .await
        .expect("a copy within 20 s")
        .unwrap();
    assert_eq!(
        copy,
        (
            "/orders/7?x=1".to_owned(),
            "shadow.default.svc".to_owned(),
            "order".to_owned()
        )
    );
}

#[test]
fn validate_reports_a_mirror_target_it_cannot_resolve() {
    let text = format!(
        "{DEFAULT_INGRESS_CLASS}{}",
        ingress_for(
            "external",
            "demo",
            r#"nginx.ingress.kubernetes.io/mirror-target: "http://test.env.com$request_uri""#,
        )
        .trim_start_matches("\n---\n")
    );
    let (code, out) = validate_args(&["-"], &text);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("metadata.annotations[mirror-target]: InvalidAnnotation")
            && out.contains("test.env.com is not a Service's cluster name"),
        "{out}"
    );
}
