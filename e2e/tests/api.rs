//! What users see through the API: HTTPRoute conditions (scenario 3), the
//! CRD's CEL rules, IngressClass handling (2), Warning Events for invalid
//! annotations (5), Ingress status addresses (4), and side-by-side mode
//! (`--watch-ingress-class`) and `portico report` for a migration.

use std::time::Duration;

use http::StatusCode;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, Patch, PatchParams};
use portico_crds::HTTPRoute;
use portico_e2e::{
    CONVERGE, Portico, PorticoOptions, TestEnv, apply, apply_json, eventually, ingress,
    portico_binary, wait_for_crd, warning_event,
};
use serde_json::json;

fn httproute(ns: &str, name: &str, host: &str, backend: &str) -> serde_json::Value {
    json!({
        "apiVersion": "portico.dev/v1alpha1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "hostnames": [host],
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": "/"}}],
                "backendRefs": [{"name": backend, "port": 80}],
            }],
        },
    })
}

/// An IngressClass of another controller.
async fn other_class(env: &TestEnv, name: &str, controller: &str) -> anyhow::Result<()> {
    apply_json(
        &env.admin,
        &json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "IngressClass",
            "metadata": {"name": name},
            "spec": {"controller": controller},
        }),
        false,
    )
    .await
}

/// `(status, reason, observedGeneration)` of condition `type_`.
fn condition(route: &HTTPRoute, type_: &str) -> Option<(String, String, Option<i64>)> {
    route
        .status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.observed_generation))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn httproute_routes_and_reports_conditions() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-httproute", &[]).await?;
    let ns = env.namespace.as_str();
    let _api_upstream = env.backend("api").await?;
    let portico = Portico::start(&env, PorticoOptions::default()).await?;

    apply_json(
        &env.admin,
        &httproute(ns, "shop", "shop.example", "api"),
        false,
    )
    .await?;
    portico
        .wait_for("shop.example", "/v1/x", StatusCode::OK, "api /v1/x")
        .await;
    let routes: Api<HTTPRoute> = Api::namespaced(env.admin.clone(), ns);
    let generation = routes.get("shop").await?.metadata.generation;
    eventually("shop Accepted and ResolvedRefs", CONVERGE, || async {
        let r = routes.get("shop").await.ok()?;
        let accepted = condition(&r, "Accepted")?;
        let resolved = condition(&r, "ResolvedRefs")?;
        (accepted == ("True".into(), "Accepted".into(), generation)
            && resolved == ("True".into(), "ResolvedRefs".into(), generation))
            .then_some(())
    })
    .await;

    // A route to a Service that does not exist.
    apply_json(
        &env.admin,
        &httproute(ns, "lost", "lost.example", "missing"),
        false,
    )
    .await?;
    eventually(
        "lost ResolvedRefs=False BackendNotFound",
        CONVERGE,
        || async {
            let r = routes.get("lost").await.ok()?;
            let (status, reason, observed) = condition(&r, "ResolvedRefs")?;
            (status == "False" && reason == "BackendNotFound" && observed == r.metadata.generation)
                .then_some(())
        },
    )
    .await;

    // A spec change: observedGeneration follows.
    let mut moved = httproute(ns, "shop", "shop2.example", "api");
    moved["metadata"]["labels"] = json!({"e2e": "moved"});
    apply_json(&env.admin, &moved, false).await?;
    portico
        .wait_for("shop2.example", "/", StatusCode::OK, "api /")
        .await;
    eventually("shop observedGeneration follows", CONVERGE, || async {
        let r = routes.get("shop").await.ok()?;
        let (_, _, observed) = condition(&r, "Accepted")?;
        (observed.is_some() && observed == r.metadata.generation && observed != generation)
            .then_some(())
    })
    .await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crd_cel_rules_reject_invalid_httproute() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-cel", &[]).await?;
    let mut invalid = httproute(&env.namespace, "bad", "bad.example", "api");
    invalid["spec"]["rules"][0]["backendRefs"][0]
        .as_object_mut()
        .map(|b| b.remove("port"));
    let err = apply_json(&env.admin, &invalid, false)
        .await
        .expect_err("the API server must reject a backendRef without port");
    let message = format!("{err:#}");
    assert!(
        message.contains("port is required"),
        "expected the CEL message, got: {message}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_class_ours_others_default_and_none() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-class", &[]).await?;
    let ns = env.namespace.as_str();
    let _web = env.backend("web").await?;
    other_class(&env, "other", "example.com/other").await?;
    let portico = Portico::start(&env, PorticoOptions::default()).await?;

    apply(
        &env.admin,
        &ingress(ns, "ours", Some("portico"), "ours.example", &[("/", "web")]),
    )
    .await?;
    apply(
        &env.admin,
        &ingress(
            ns,
            "theirs",
            Some("other"),
            "theirs.example",
            &[("/", "web")],
        ),
    )
    .await?;
    apply(
        &env.admin,
        &ingress(ns, "none", None, "none.example", &[("/", "web")]),
    )
    .await?;
    portico
        .wait_for("ours.example", "/", StatusCode::OK, "web /")
        .await;
    // The legacy annotation naming our `--ingress-class` is ours too.
    let mut legacy = ingress(ns, "legacy", None, "legacy.example", &[("/", "web")]);
    legacy.metadata.annotations = Some(
        [(
            "kubernetes.io/ingress.class".to_owned(),
            "portico".to_owned(),
        )]
        .into(),
    );
    apply(&env.admin, &legacy).await?;
    portico
        .wait_for("legacy.example", "/", StatusCode::OK, "web /")
        .await;
    assert_eq!(
        portico.get("theirs.example", "/").await?.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        portico.get("none.example", "/").await?.status,
        StatusCode::NOT_FOUND
    );

    // Our class made the default: class-less Ingresses become ours.
    let default_class = env.chart.of_kinds(&["IngressClass"]).next().cloned();
    let mut default_class = default_class.expect("the chart renders the IngressClass");
    default_class["metadata"]["annotations"] =
        json!({"ingressclass.kubernetes.io/is-default-class": "true"});
    apply_json(&env.admin, &default_class, false).await?;
    portico
        .wait_for("none.example", "/", StatusCode::OK, "web /")
        .await;
    assert_eq!(
        portico.get("theirs.example", "/").await?.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        portico.get("ours.example", "/").await?.status,
        StatusCode::OK
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_annotation_warns_and_the_rest_serves() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-events", &[]).await?;
    let ns = env.namespace.as_str();
    let _web = env.backend("web").await?;
    let portico = Portico::start(&env, PorticoOptions::default()).await?;

    let mut sloppy = ingress(
        ns,
        "sloppy",
        Some("portico"),
        "sloppy.example",
        &[("/a", "web"), ("/b", "web")],
    );
    sloppy.metadata.annotations = Some(
        [(
            "nginx.ingress.kubernetes.io/proxy-read-timeout".to_owned(),
            "soon".to_owned(),
        )]
        .into(),
    );
    apply(&env.admin, &sloppy).await?;
    apply(
        &env.admin,
        &ingress(ns, "tidy", Some("portico"), "tidy.example", &[("/", "web")]),
    )
    .await?;

    let event = warning_event(&env.admin, ns, "sloppy").await;
    assert_eq!(event.reason.as_deref(), Some("InvalidAnnotation"));
    let note = event.note.unwrap_or_default();
    assert!(note.contains("proxy-read-timeout"), "note: {note}");

    portico
        .wait_for("sloppy.example", "/a", StatusCode::OK, "web /a")
        .await;
    portico
        .wait_for("sloppy.example", "/b", StatusCode::OK, "web /b")
        .await;
    portico
        .wait_for("tidy.example", "/", StatusCode::OK, "web /")
        .await;
    Ok(())
}

/// Side-by-side mode: another controller's Ingresses are served, and
/// Portico writes neither their status nor Events about them, while it
/// still does both for its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn side_by_side_serves_other_classes_read_only() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-side", &[]).await?;
    let ns = env.namespace.as_str();
    let _web = env.backend("web").await?;
    other_class(&env, "nginx", "k8s.io/ingress-nginx").await?;
    let portico = Portico::start(
        &env,
        PorticoOptions {
            args: vec![
                "--watch-ingress-class".into(),
                "nginx".into(),
                "--publish-status-address".into(),
                "203.0.113.9".into(),
            ],
            ..Default::default()
        },
    )
    .await?;
    let sloppy = |name: &str, class: &str, host: &str| {
        let mut ing = ingress(ns, name, Some(class), host, &[("/", "web")]);
        ing.metadata.annotations = Some(
            [(
                "nginx.ingress.kubernetes.io/proxy-read-timeout".to_owned(),
                "soon".to_owned(),
            )]
            .into(),
        );
        ing
    };
    // Named to sort first: the status writer goes through objects in name
    // order, so by the time "ours" is written, "a-theirs" would have been.
    apply(&env.admin, &sloppy("a-theirs", "nginx", "theirs.example")).await?;
    apply(&env.admin, &sloppy("ours", "portico", "ours.example")).await?;
    portico
        .wait_for("theirs.example", "/", StatusCode::OK, "web /")
        .await;
    portico
        .wait_for("ours.example", "/", StatusCode::OK, "web /")
        .await;
    warning_event(&env.admin, ns, "ours").await;
    let ingresses: Api<Ingress> = Api::namespaced(env.admin.clone(), ns);
    let ip = Some("203.0.113.9".to_owned());
    eventually("status of ours", CONVERGE, || async {
        (ingress_addresses(&ingresses, "ours").await? == vec![(ip.clone(), None)]).then_some(())
    })
    .await;

    let theirs = ingress_addresses(&ingresses, "a-theirs").await;
    assert!(
        theirs.as_ref().is_none_or(Vec::is_empty),
        "status written for another controller's Ingress: {theirs:?}"
    );
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(env.admin.clone(), ns);
    let about_theirs = events
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some("a-theirs"))
        .count();
    assert_eq!(
        about_theirs, 0,
        "Events sent about another controller's Ingress"
    );
    Ok(())
}

/// `status.loadBalancer.ingress` of an Ingress as (ip, hostname) pairs.
async fn ingress_addresses(
    api: &Api<Ingress>,
    name: &str,
) -> Option<Vec<(Option<String>, Option<String>)>> {
    let ing = api.get(name).await.ok()?;
    Some(
        ing.status?
            .load_balancer?
            .ingress
            .unwrap_or_default()
            .into_iter()
            .map(|i| (i.ip, i.hostname))
            .collect(),
    )
}

/// Runs portico with `args`, serves Ingress `site`, and waits for its
/// status addresses to be `expected` (ip, hostname). Returns portico.
async fn expect_status_addresses(
    env: &TestEnv,
    args: Vec<String>,
    expected: &[(Option<&str>, Option<&str>)],
) -> anyhow::Result<Portico> {
    let ns = env.namespace.as_str();
    let portico = Portico::start(
        env,
        PorticoOptions {
            args,
            ..Default::default()
        },
    )
    .await?;
    let _web = env.backend("web").await?;
    let site = ingress(ns, "site", Some("portico"), "site.example", &[("/", "web")]);
    apply(&env.admin, &site).await?;
    portico
        .wait_for("site.example", "/", StatusCode::OK, "web /")
        .await;
    let ingresses: Api<Ingress> = Api::namespaced(env.admin.clone(), ns);
    let expected: Vec<(Option<String>, Option<String>)> = expected
        .iter()
        .map(|(ip, host)| (ip.map(str::to_owned), host.map(str::to_owned)))
        .collect();
    eventually(
        &format!("Ingress status {expected:?}"),
        CONVERGE,
        || async { (ingress_addresses(&ingresses, "site").await? == expected).then_some(()) },
    )
    .await;
    Ok(portico)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_address_from_publish_service() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-publish", &[]).await?;
    // The chart's own Service, as `--publish-service` points at by default.
    let chart_service = env
        .chart
        .of_kinds(&["Service"])
        .find(|s| s["spec"]["type"] == "LoadBalancer")
        .cloned()
        .expect("the chart renders a LoadBalancer Service");
    apply_json(&env.admin, &chart_service, false).await?;
    let name = chart_service["metadata"]["name"]
        .as_str()
        .unwrap_or_default();
    // What a cloud load-balancer controller would write.
    let services: Api<Service> = Api::namespaced(env.admin.clone(), &env.namespace);
    let set_lb_ip = |ip: &'static str| {
        let services = services.clone();
        let lb = json!({"status": {"loadBalancer": {"ingress": [{"ip": ip}]}}});
        async move {
            services
                .patch_status(name, &PatchParams::default(), &Patch::Merge(lb))
                .await
        }
    };
    set_lb_ip("203.0.113.7").await?;
    let flag = format!("--publish-service={}/{name}", env.namespace);
    let mut portico =
        expect_status_addresses(&env, vec![flag], &[(Some("203.0.113.7"), None)]).await?;

    // The load balancer's address changes while portico runs: the Service
    // is re-read every 15 s and Ingress status follows.
    set_lb_ip("203.0.113.8").await?;
    let ingresses: Api<Ingress> = Api::namespaced(env.admin.clone(), &env.namespace);
    eventually("Ingress status follows the Service", CONVERGE, || async {
        let addrs = ingress_addresses(&ingresses, "site").await?;
        (addrs == vec![(Some("203.0.113.8".to_owned()), None)]).then_some(())
    })
    .await;

    // No ready endpoint behind the published Service: this is the last
    // replica, and it takes its addresses out of the status on SIGTERM
    // (`--update-status-on-shutdown`, on by default) before it exits.
    let exit = portico.terminate(Duration::from_secs(45)).await?;
    assert!(exit.success(), "portico exited with {exit}");
    assert_eq!(ingress_addresses(&ingresses, "site").await, Some(vec![]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_address_from_publish_status_address_kept_on_shutdown() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-address", &[]).await?;
    let expected = [(Some("198.51.100.1"), None), (None, Some("lb.example.net"))];
    let mut portico = expect_status_addresses(
        &env,
        vec!["--publish-status-address=198.51.100.1,lb.example.net".into()],
        &expected,
    )
    .await?;
    // Without --publish-service a replica cannot tell whether it is the
    // last, so stopping keeps the addresses (no flapping on rollouts).
    let exit = portico.terminate(Duration::from_secs(45)).await?;
    assert!(exit.success(), "portico exited with {exit}");
    let ingresses: Api<Ingress> = Api::namespaced(env.admin.clone(), &env.namespace);
    let kept = ingress_addresses(&ingresses, "site")
        .await
        .unwrap_or_default();
    assert_eq!(
        kept.len(),
        expected.len(),
        "addresses after SIGTERM: {kept:?}"
    );
    Ok(())
}

/// `portico report` against a real API server, with the chart's
/// ServiceAccount (so the chart's RBAC is enough for it): the Ingresses of
/// the asked class only, each annotation classed, paths whose meaning
/// changes, a summary per namespace; text, Markdown and JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_reads_the_clusters_ingresses() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-report", &[]).await?;
    let ns = env.namespace.as_str();
    other_class(&env, "nginx", "k8s.io/ingress-nginx").await?;
    let mut shop = ingress(
        ns,
        "shop",
        Some("nginx"),
        "shop.example",
        &[("/app/", "web")],
    );
    shop.metadata.annotations = Some(
        [
            ("nginx.ingress.kubernetes.io/proxy-read-timeout", "30"),
            (
                "nginx.ingress.kubernetes.io/configuration-snippet",
                "deny all;",
            ),
            ("nginx.ingress.kubernetes.io/enable-modsecurity", "true"),
            ("nginx.ingress.kubernetes.io/proxy-connect-timeout", "soon"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .into(),
    );
    apply(&env.admin, &shop).await?;
    apply(
        &env.admin,
        &ingress(ns, "ours", Some("portico"), "ours.example", &[("/", "web")]),
    )
    .await?;

    let report = |format: &'static str| {
        let kubeconfig = env.portico_kubeconfig.clone();
        async move {
            let out = tokio::process::Command::new(portico_binary()?)
                .arg("report")
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--class", "nginx", "-o", format])
                .output()
                .await?;
            anyhow::ensure!(
                out.status.success(),
                "portico report -o {format}: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            Ok::<_, anyhow::Error>(String::from_utf8(out.stdout)?)
        }
    };
    let json: serde_json::Value = serde_json::from_str(&report("json").await?)?;
    let ingresses = json["ingresses"].as_array().expect("ingresses");
    assert_eq!(ingresses.len(), 1, "{json:#}");
    assert_eq!(ingresses[0]["name"], "shop");
    let status = |key: &str| {
        ingresses[0]["annotations"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|r| r["key"] == format!("nginx.ingress.kubernetes.io/{key}"))
            })
            .map(|r| r["status"].clone())
    };
    assert_eq!(status("proxy-read-timeout"), Some(json!("supported")));
    assert_eq!(status("configuration-snippet"), Some(json!("snippet")));
    assert_eq!(status("enable-modsecurity"), Some(json!("not-supported")));
    assert_eq!(status("proxy-connect-timeout"), Some(json!("invalid")));
    assert_eq!(ingresses[0]["path_changes"][0]["path"], "/app/");
    assert_eq!(json["namespaces"][0]["namespace"], ns);
    assert_eq!(json["namespaces"][0]["ingresses"], 1);

    let text = report("text").await?;
    assert!(
        text.contains(&format!("Ingress {ns}/shop (class nginx)")),
        "{text}"
    );
    let markdown = report("markdown").await?;
    assert!(
        markdown.starts_with("# Portico migration report"),
        "{markdown}"
    );
    Ok(())
}

/// The generated Gateway API types against the real API server with the
/// upstream CRDs (and their CEL rules): what the types write is accepted,
/// and reads back equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_api_types_round_trip_through_the_api_server() -> anyhow::Result<()> {
    use kube::api::PostParams;
    use portico_crds::gateway::{Gateway, GatewayClass, HttpRoute, ReferenceGrant};

    let env = TestEnv::start("e2e-gwapi", &[]).await?;
    let ns = env.namespace.as_str();
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/gateway-api/v1.6.1");
    for kind in [
        "gatewayclasses",
        "gateways",
        "httproutes",
        "referencegrants",
    ] {
        let text =
            std::fs::read_to_string(dir.join(format!("gateway.networking.k8s.io_{kind}.yaml")))?;
        let doc: serde_json::Value = serde_yaml::from_str(&text)?;
        apply_json(&env.admin, &doc, false).await?;
        wait_for_crd(&env.admin, &format!("{kind}.gateway.networking.k8s.io")).await?;
    }

    async fn round_trip<K>(api: Api<K>, yaml: &str) -> anyhow::Result<()>
    where
        K: kube::Resource
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let obj: K = serde_yaml::from_str(yaml)?;
        let created = api.create(&PostParams::default(), &obj).await?;
        let read = api
            .get(&created.meta().name.clone().unwrap_or_default())
            .await?;
        // The server fills in the CRDs' defaults: what was written must
        // read back as written, besides them.
        let spec = |o: &K| serde_json::to_value(o).map(|v| v["spec"].clone());
        let (wrote, read) = (spec(&obj)?, spec(&read)?);
        anyhow::ensure!(
            within(&wrote, &read),
            "read back differs:\n{read:#}\nwrote\n{wrote:#}"
        );
        Ok(())
    }
    /// Every value of `a` is in `b` at the same place (lists item by item).
    fn within(a: &serde_json::Value, b: &serde_json::Value) -> bool {
        use serde_json::Value;
        match (a, b) {
            (Value::Object(a), Value::Object(b)) => a
                .iter()
                .all(|(k, v)| v.is_null() || b.get(k).is_some_and(|w| within(v, w))),
            (Value::Array(a), Value::Array(b)) => {
                a.len() == b.len() && a.iter().zip(b).all(|(v, w)| within(v, w))
            }
            _ => a == b,
        }
    }

    round_trip(
        Api::<GatewayClass>::all(env.admin.clone()),
        "metadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n",
    )
    .await?;
    round_trip(
        Api::<Gateway>::namespaced(env.admin.clone(), ns),
        r#"
metadata: {name: edge}
spec:
  gatewayClassName: portico
  listeners:
  - {name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}
  - name: https
    protocol: HTTPS
    port: 443
    hostname: "*.example.com"
    tls: {mode: Terminate, certificateRefs: [{kind: Secret, group: "", name: wildcard}]}
"#,
    )
    .await?;
    round_trip(
        Api::<HttpRoute>::namespaced(env.admin.clone(), ns),
        r#"
metadata: {name: web}
spec:
  parentRefs: [{name: edge, sectionName: https}]
  hostnames: ["shop.example.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-env, value: prod}]}
    backendRefs: [{name: api, port: 8080, weight: 90}, {name: api-next, port: 8080, weight: 10}]
"#,
    )
    .await?;
    round_trip(
        Api::<ReferenceGrant>::namespaced(env.admin.clone(), ns),
        "metadata: {name: allow}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]\n  to: [{group: \"\", kind: Service}]\n",
    )
    .await?;
    Ok(())
}
