//! Scenario 1: an Ingress goes live, moves, and goes away; apply-to-live
//! latency over 100 Ingresses.

use std::time::{Duration, Instant};

use http::StatusCode;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams};
use portico_e2e::{Portico, PorticoOptions, TestEnv, apply, ingress};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_created_changed_deleted() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-ingress", &[]).await?;
    let ns = env.namespace.as_str();
    let _web = env.backend("web").await?;
    let portico = Portico::start(&env, PorticoOptions::default()).await?;
    let site = |path| {
        ingress(
            ns,
            "site",
            Some("portico"),
            "site.example",
            &[(path, "web")],
        )
    };

    apply(&env.admin, &site("/old")).await?;
    portico
        .wait_for("site.example", "/old/x", StatusCode::OK, "web /old/x")
        .await;

    // Path changed: the new path is live and the old one is gone.
    apply(&env.admin, &site("/new")).await?;
    portico
        .wait_for("site.example", "/new", StatusCode::OK, "web /new")
        .await;
    assert_eq!(
        portico.get("site.example", "/old/x").await?.status,
        StatusCode::NOT_FOUND,
        "the old path must stop routing in the same table swap"
    );

    let ingresses: Api<Ingress> = Api::namespaced(env.admin.clone(), ns);
    ingresses.delete("site", &DeleteParams::default()).await?;
    portico
        .wait_for("site.example", "/new", StatusCode::NOT_FOUND, "")
        .await;
    Ok(())
}

/// Apply-to-live latency: each Ingress applied, then polled every 20 ms
/// until it answers. Printed, never asserted as a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_to_live_latency_over_100_ingresses() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-latency", &[]).await?;
    let ns = env.namespace.as_str();
    let _web = env.backend("web").await?;
    let portico = Portico::start(&env, PorticoOptions::default()).await?;

    let mut latencies = Vec::with_capacity(100);
    for i in 0..100 {
        let host = format!("app-{i}.example");
        let start = Instant::now();
        apply(
            &env.admin,
            &ingress(
                ns,
                &format!("app-{i}"),
                Some("portico"),
                &host,
                &[("/", "web")],
            ),
        )
        .await?;
        portico.wait_for(&host, "/", StatusCode::OK, "web /").await;
        latencies.push(start.elapsed());
    }
    latencies.sort();
    let pct = |p: usize| latencies[(latencies.len() * p / 100).min(latencies.len() - 1)];
    println!(
        "apply-to-live over {} Ingresses: p50 {:?}, p99 {:?}, max {:?}",
        latencies.len(),
        pct(50),
        pct(99),
        latencies.last().copied().unwrap_or(Duration::ZERO)
    );
    // Every earlier Ingress still serves after the last one landed.
    for i in [0, 50, 99] {
        let r = portico.get(&format!("app-{i}.example"), "/").await?;
        assert_eq!(r.status, StatusCode::OK, "app-{i} after all 100 applied");
    }
    Ok(())
}
