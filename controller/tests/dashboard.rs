//! The chart's Grafana dashboard queries only what `/metrics` exports:
//! every metric it names and every label it groups by, read from the real
//! `portico` serving real traffic (a route, an upstream under active health
//! checks, a TLS certificate). A renamed metric or label fails here, not on
//! a user's empty panel.

use std::collections::BTreeSet;

use http::StatusCode;

mod support;

use support::{Portico, eventually, get, ingress_for, manifests, tls_secret, upstream};

const DASHBOARD: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../charts/portico/dashboards/portico.json"
);

/// Every string in the dashboard (queries, variable definitions).
fn strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        serde_json::Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

/// The sample lines of `metric` in a Prometheus text exposition.
fn samples<'a>(exposition: &'a str, metric: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    exposition.lines().filter(move |l| {
        l.strip_prefix(metric)
            .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_and_label_the_dashboard_queries_is_exported() {
    let up = upstream("demo").await;
    let dir = tempfile::tempdir().unwrap();
    let app = manifests(up, "/").replace(
        "kind: Service\nmetadata: {name: demo}",
        "kind: Service\nmetadata: {name: demo, annotations: {portico.dev/health-check-path: /healthz}}",
    );
    assert!(
        app.contains("health-check-path"),
        "the manifest changed shape"
    );
    let tls = format!(
        "{}---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: secure}}\nspec:\n  tls: [{{hosts: [secure.test], secretName: secure-tls}}]\n  rules:\n    - host: secure.test\n      http:\n        paths:\n          - {{path: /, pathType: Prefix, backend: {{service: {{name: demo, port: {{number: 80}}}}}}}}\n",
        tls_secret("secure-tls", "secure.test", 7, 30)
    );
    // A limited Ingress: the limit counters exist per route from the start.
    let app = app
        + &ingress_for(
            "limited",
            "demo",
            r#"nginx.ingress.kubernetes.io/limit-rps: "100""#,
        );
    std::fs::write(dir.path().join("app.yaml"), app).unwrap();
    std::fs::write(dir.path().join("tls.yaml"), tls).unwrap();

    let portico = Portico::start(dir.path());
    portico.ready().await;
    assert_eq!(
        get(portico.http, "demo.test", "/").await.unwrap().0,
        StatusCode::OK
    );
    let admin = portico.admin;
    // Health-check and certificate series appear once a probe has run and
    // the certificate is served.
    let metrics = eventually(
        "health checks and certificates in /metrics",
        || async move {
            let (_, m) = get(admin, "x", "/metrics").await?;
            (samples(&m, "portico_upstream_health_checks_total")
                .next()
                .is_some()
                && samples(&m, "portico_tls_certificate_not_after_timestamp_seconds")
                    .next()
                    .is_some())
            .then_some(m)
        },
    )
    .await;

    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(DASHBOARD).unwrap()).unwrap();
    let mut texts = Vec::new();
    strings(&dashboard, &mut texts);
    let name = regex::Regex::new(r"portico_[a-z0-9_]+").unwrap();
    let by = regex::Regex::new(r"by \(([^)]*)\)").unwrap();
    let mut missing = BTreeSet::new();
    let mut queried = 0;
    for text in &texts {
        let names: Vec<&str> = name.find_iter(text).map(|m| m.as_str()).collect();
        queried += names.len();
        for n in &names {
            if samples(&metrics, n).next().is_none() {
                missing.insert(format!("metric {n}"));
            }
        }
        for labels in by.captures_iter(text) {
            for label in labels[1].split(',').map(str::trim).filter(|l| *l != "le") {
                let found = names
                    .iter()
                    .any(|n| samples(&metrics, n).any(|s| s.contains(&format!("{label}=\""))));
                if !found {
                    missing.insert(format!("label {label} of {names:?}"));
                }
            }
        }
    }
    assert!(
        queried > 20,
        "the dashboard queries almost nothing: {queried}"
    );
    assert!(
        missing.is_empty(),
        "not in /metrics: {missing:#?}\n{metrics}"
    );
}
