//! Scale: EndpointSlices changing under load (scenario 7) and 2,000
//! Ingresses applied at once (10).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::StatusCode;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use portico_e2e::{
    CONVERGE, Portico, PorticoOptions, TestEnv, Upstream, apply, endpoint_slice, eventually,
    ingress, service,
};

/// What the load saw: answers per upstream, in order, and every failure.
#[derive(Default)]
struct Seen {
    answers: Vec<String>,
    failures: Vec<String>,
}

impl Seen {
    fn count(&self, name: &str) -> usize {
        self.answers.iter().filter(|a| *a == name).count()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_slices_scale_under_load_without_failures() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-slices", &[]).await?;
    let ns = env.namespace.clone();
    let a = Upstream::start("a").await?;
    let b = Upstream::start("b").await?;
    let c = Upstream::start("c").await?;
    apply(&env.admin, &service(&ns, "web", a.addr.port())).await?;
    apply(&env.admin, &endpoint_slice(&ns, "web", &[a.addr])).await?;
    let portico = Arc::new(Portico::start(&env, PorticoOptions::default()).await?);
    apply(
        &env.admin,
        &ingress(
            &ns,
            "site",
            Some("portico"),
            "site.example",
            &[("/", "web")],
        ),
    )
    .await?;
    portico
        .wait_for("site.example", "/", StatusCode::OK, "a /")
        .await;

    // Four clients in a loop until told to stop.
    let seen = Arc::new(Mutex::new(Seen::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for _ in 0..4 {
        let (portico, seen, stop) = (portico.clone(), seen.clone(), stop.clone());
        clients.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let outcome = portico.get("site.example", "/").await;
                let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
                match outcome {
                    Ok(r) if r.status == StatusCode::OK => {
                        let name = r.body.split(' ').next().unwrap_or_default().to_owned();
                        seen.answers.push(name);
                    }
                    Ok(r) => seen.failures.push(format!("{} {}", r.status, r.body)),
                    Err(e) => seen.failures.push(format!("{e:#}")),
                }
            }
        }));
    }
    let answered_by_since = |from: usize, name: &'static str, seen: &Arc<Mutex<Seen>>| {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.answers[from..].iter().any(|a| a == name)
    };

    // Scale up: b and c join.
    apply(&env.admin, &endpoint_slice(&ns, "web", &[b.addr])).await?;
    apply(&env.admin, &endpoint_slice(&ns, "web", &[c.addr])).await?;
    let mark = seen.lock().unwrap_or_else(|p| p.into_inner()).answers.len();
    eventually("b and c answering after scale-up", CONVERGE, || async {
        (answered_by_since(mark, "b", &seen) && answered_by_since(mark, "c", &seen)).then_some(())
    })
    .await;

    // Scale down to c: a's and b's slices go, as their pods would.
    let slices: Api<EndpointSlice> = Api::namespaced(env.admin.clone(), &ns);
    for gone in [&a, &b] {
        slices
            .delete(
                &format!("web-{}", gone.addr.port()),
                &DeleteParams::default(),
            )
            .await?;
    }
    eventually("only c answering after scale-down", CONVERGE, || async {
        let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
        let tail = seen
            .answers
            .len()
            .checked_sub(200)
            .map(|s| &seen.answers[s..])?;
        tail.iter().all(|a| a == "c").then_some(())
    })
    .await;

    stop.store(true, Ordering::Relaxed);
    for client in clients {
        client.await?;
    }
    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    println!(
        "slices under load: {} requests (a {}, b {}, c {}), {} failed",
        seen.answers.len(),
        seen.count("a"),
        seen.count("b"),
        seen.count("c"),
        seen.failures.len()
    );
    assert!(
        seen.failures.is_empty(),
        "failed requests while scaling: {:?}",
        &seen.failures[..seen.failures.len().min(10)]
    );
    Ok(())
}

/// How many Ingresses scenario 10 applies.
const MANY: usize = 2000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_ingresses_at_once() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-many", &[]).await?;
    let ns = env.namespace.clone();
    let _web = env.backend("web").await?;
    let portico = Portico::start(&env, PorticoOptions::default()).await?;
    let rss_before = portico.rss_kib();

    let start = Instant::now();
    // 16 writers, each applying every 16th Ingress.
    let ingresses: Api<Ingress> = Api::namespaced(env.admin.clone(), &ns);
    let mut writers = Vec::new();
    for w in 0..16 {
        let (api, ns) = (ingresses.clone(), ns.clone());
        writers.push(tokio::spawn(async move {
            let pp = PatchParams::apply("portico-e2e").force();
            for i in (w..MANY).step_by(16) {
                let name = format!("app-{i}");
                let ing = ingress(
                    &ns,
                    &name,
                    Some("portico"),
                    &format!("{name}.example"),
                    &[("/", "web")],
                );
                api.patch(&name, &pp, &Patch::Apply(&ing)).await?;
            }
            anyhow::Ok(())
        }));
    }
    for w in writers {
        w.await??;
    }
    let applied = start.elapsed();
    // Live means answering; waiting on each in turn ends when all are.
    for i in 0..MANY {
        let host = format!("app-{i}.example");
        eventually(
            &format!("{host} live"),
            Duration::from_secs(120),
            || async {
                let r = portico.get(&host, "/").await.ok()?;
                (r.status == StatusCode::OK).then_some(())
            },
        )
        .await;
    }
    let live = start.elapsed();
    let rss_after = portico.rss_kib();
    println!(
        "{MANY} Ingresses: applied in {applied:?}, all live after {live:?}; portico RSS {} KiB before, {} KiB after",
        rss_before.map_or("?".into(), |r| r.to_string()),
        rss_after.map_or("?".into(), |r| r.to_string()),
    );
    assert!(rss_after.is_some(), "portico's RSS must be readable");
    Ok(())
}
