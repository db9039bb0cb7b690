//! Scenario 6: a TLS Secret created, rotated and broken through the API;
//! the served certificate follows, and the last good one is kept.

use portico_e2e::{
    CONVERGE, Portico, PorticoOptions, TestEnv, apply, eventually, ingress, tls_secret,
    warning_event,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secret_created_rotated_broken() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-tls", &[]).await?;
    let ns = env.namespace.as_str();
    let _web = env.backend("web").await?;
    let portico = Portico::start(&env, PorticoOptions::default()).await?;
    let mut site = ingress(
        ns,
        "secure",
        Some("portico"),
        "secure.example",
        &[("/", "web")],
    );
    let tls = serde_json::json!([{"hosts": ["secure.example"], "secretName": "secure-tls"}]);
    site.spec.get_or_insert_default().tls = Some(serde_json::from_value(tls)?);
    apply(&env.admin, &site).await?;

    let serving = |want: &'static str| {
        let portico = &portico;
        async move {
            portico
                .served_serial("secure.example")
                .await
                .filter(|s| s.eq_ignore_ascii_case(want))
        }
    };
    apply(
        &env.admin,
        &tls_secret(ns, "secure-tls", "secure.example", Some(0x0a01))?,
    )
    .await?;
    eventually("the created Secret's certificate served", CONVERGE, || {
        serving("0A01")
    })
    .await;

    apply(
        &env.admin,
        &tls_secret(ns, "secure-tls", "secure.example", Some(0x0a02))?,
    )
    .await?;
    eventually("the rotated certificate served", CONVERGE, || {
        serving("0A02")
    })
    .await;

    // Broken: a Warning Event says so and the last good certificate stays.
    apply(
        &env.admin,
        &tls_secret(ns, "secure-tls", "secure.example", None)?,
    )
    .await?;
    let event = warning_event(&env.admin, ns, "secure").await;
    println!("broken Secret: {:?} {:?}", event.reason, event.note);
    assert_eq!(
        portico.served_serial("secure.example").await.as_deref(),
        Some("0A02"),
        "the last good certificate keeps serving"
    );
    Ok(())
}
