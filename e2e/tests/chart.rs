//! The Helm chart against the real API server: lint, render with defaults
//! and with every optional feature, server-side dry-run of each manifest,
//! and its RBAC being exactly what the controller needs (the other tests
//! prove it sufficient by running portico with it).

use std::process::Command;

use http::StatusCode;
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use portico_e2e::{Chart, Portico, PorticoOptions, TestEnv, apply, apply_json, ingress, tool};

#[test]
fn chart_crds_are_the_committed_crds() -> anyhow::Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let name = "httproutes.portico.dev.yaml";
    let committed = std::fs::read_to_string(root.join("crds").join(name))?;
    let in_chart = std::fs::read_to_string(Chart::dir().join("crds").join(name))?;
    assert!(
        committed == in_chart,
        "charts/portico/crds/{name} differs from crds/{name}: copy it over"
    );
    Ok(())
}

#[test]
fn helm_lint_passes() -> anyhow::Result<()> {
    let out = Command::new(tool("helm")?)
        .args(["lint", "--strict"])
        .arg(Chart::dir())
        .output()?;
    assert!(
        out.status.success(),
        "helm lint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Every optional feature on.
const ALL_ON: &[&str] = &[
    "ingressClass.default=true",
    "controller.watchIngressWithoutClass=true",
    "controller.watchIngressClasses={nginx,traefik}",
    "webhook.enabled=true",
    "webhook.failurePolicy=Fail",
    "webhook.namespaceSelector.matchLabels.portico-webhook=enabled",
    "controller.watchNamespace=apps",
    "controller.publishStatusAddress={198.51.100.1,lb.example.net}",
    "autoscaling.enabled=true",
    "serviceMonitor.enabled=true",
    "dashboard.enabled=true",
    "service.externalTrafficPolicy=Local",
    "tls.defaultCertificate=apps/default-tls",
    "tls.sslPassthrough=true",
    "service.httpsPort=8443",
    "controller.extraEnv[0].name=RUST_LOG",
    "controller.extraEnv[0].value=debug",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rendered_manifests_pass_server_side_dry_run() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-chart", &[]).await?;
    for values in [&[][..], ALL_ON] {
        let chart = Chart::render("portico", &env.namespace, values)?;
        let kinds: Vec<&str> = chart
            .docs
            .iter()
            .filter_map(|d| d["kind"].as_str())
            .collect();
        for expected in [
            "Deployment",
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "Role",
            "RoleBinding",
            "IngressClass",
            "Service",
            "PodDisruptionBudget",
        ] {
            assert!(
                kinds.contains(&expected),
                "{expected} not rendered: {kinds:?}"
            );
        }
        if !values.is_empty() {
            assert!(kinds.contains(&"HorizontalPodAutoscaler"), "{kinds:?}");
            assert!(kinds.contains(&"ServiceMonitor"), "{kinds:?}");
            // The dashboard ships whole: its JSON survives the template.
            let dashboard = chart
                .docs
                .iter()
                .find(|d| {
                    d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1"
                })
                .expect("dashboard ConfigMap rendered");
            let json: serde_json::Value = serde_json::from_str(
                dashboard["data"]["portico.json"]
                    .as_str()
                    .unwrap_or_default(),
            )?;
            assert_eq!(json["uid"], "portico");
        }
        for doc in &chart.docs {
            // The Prometheus Operator CRD is not installed here.
            if doc["kind"] == "ServiceMonitor" {
                continue;
            }
            apply_json(&env.admin, doc, true).await?;
        }
    }
    Ok(())
}

/// The chart's Deployment args run the real binary: every flag the chart
/// passes exists and parses, and portico serves with them (listen
/// addresses moved to 127.0.0.1:0, the rest verbatim); the debug pages are
/// on loopback, not on the admin port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chart_deployment_args_run_the_real_binary() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-args", &[]).await?;
    let deployment = env
        .chart
        .of_kinds(&["Deployment"])
        .next()
        .expect("the chart renders a Deployment");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let chart_args: Vec<&str> = container["args"]
        .as_array()
        .expect("the container has args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    // The debug pages show the route table and pod addresses: loopback only.
    let debug_addr: std::net::SocketAddr = chart_args
        .iter()
        .find_map(|a| a.strip_prefix("--debug-addr="))
        .expect("the chart passes --debug-addr")
        .parse()?;
    assert!(debug_addr.ip().is_loopback(), "--debug-addr={debug_addr}");
    let args: Vec<String> = chart_args
        .iter()
        .copied()
        .map(|a| match a.split_once('=') {
            Some((flag, _)) if flag.ends_with("-addr") => format!("{flag}=127.0.0.1:0"),
            _ => a.to_owned(),
        })
        .collect();
    assert_eq!(args.first().map(String::as_str), Some("run"));
    let _web = env.backend("web").await?;
    let portico = Portico::start(
        &env,
        PorticoOptions {
            exact_args: Some(args),
            ..Default::default()
        },
    )
    .await?;
    let site = ingress(
        &env.namespace,
        "site",
        Some("portico"),
        "site.example",
        &[("/", "web")],
    );
    apply(&env.admin, &site).await?;
    portico
        .wait_for("site.example", "/", StatusCode::OK, "web /")
        .await;
    for probe in ["/healthz", "/readyz"] {
        let r = portico.admin_get(probe).await?;
        assert!(r.status.is_success(), "{probe}: {}", r.status);
    }
    let r = portico.admin_get("/debug/routes").await?;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "admin /debug/routes");
    let r = portico.debug_get("/debug/routes").await?;
    assert!(
        r.status.is_success() && r.body.contains("site.example"),
        "debug /debug/routes: {} {}",
        r.status,
        r.body
    );
    Ok(())
}

/// Whether the chart's ServiceAccount may `verb` `group/resource` in
/// `namespace` (cluster-wide when `None`), as the API server decides.
async fn may(
    env: &TestEnv,
    verb: &str,
    group: &str,
    resource: &str,
    namespace: Option<&str>,
) -> anyhow::Result<bool> {
    let (resource, subresource) = match resource.split_once('/') {
        Some((r, s)) => (r, Some(s.to_owned())),
        None => (resource, None),
    };
    let sa = env
        .chart
        .of_kinds(&["ServiceAccount"])
        .next()
        .and_then(|s| s["metadata"]["name"].as_str())
        .unwrap_or_default()
        .to_owned();
    let ns = &env.namespace;
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{ns}:{sa}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{ns}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                subresource,
                namespace: namespace.map(str::to_owned),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let api: Api<SubjectAccessReview> = Api::all(env.admin.clone());
    let r = api.create(&PostParams::default(), &review).await?;
    Ok(r.status.is_some_and(|s| s.allowed))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rbac_is_exactly_what_the_controller_calls() -> anyhow::Result<()> {
    let env = TestEnv::start("e2e-rbac", &[]).await?;
    let ns = env.namespace.clone();
    const VERBS: &[&str] = &[
        "get",
        "list",
        "watch",
        "create",
        "update",
        "patch",
        "delete",
        "deletecollection",
    ];
    const READ: &[&str] = &["get", "list", "watch"];
    // (group, resource, verbs allowed in any namespace)
    let cluster_wide: &[(&str, &str, &[&str])] = &[
        ("networking.k8s.io", "ingresses", READ),
        ("networking.k8s.io", "ingressclasses", READ),
        ("", "services", READ),
        ("discovery.k8s.io", "endpointslices", READ),
        ("", "secrets", READ),
        ("portico.dev", "httproutes", READ),
        (
            "networking.k8s.io",
            "ingresses/status",
            &["update", "patch"],
        ),
        ("portico.dev", "httproutes/status", &["update", "patch"]),
        ("gateway.networking.k8s.io", "gatewayclasses", READ),
        ("gateway.networking.k8s.io", "gateways", READ),
        ("gateway.networking.k8s.io", "httproutes", READ),
        ("gateway.networking.k8s.io", "grpcroutes", READ),
        ("gateway.networking.k8s.io", "referencegrants", READ),
        (
            "gateway.networking.k8s.io",
            "gatewayclasses/status",
            &["update", "patch"],
        ),
        (
            "gateway.networking.k8s.io",
            "gateways/status",
            &["update", "patch"],
        ),
        (
            "gateway.networking.k8s.io",
            "httproutes/status",
            &["update", "patch"],
        ),
        (
            "gateway.networking.k8s.io",
            "grpcroutes/status",
            &["update", "patch"],
        ),
        ("gateway.networking.k8s.io", "referencegrants/status", &[]),
        ("events.k8s.io", "events", &["create", "patch"]),
        ("", "events", &[]),
        ("", "pods", &[]),
        ("", "configmaps", &[]),
        ("", "namespaces", READ),
        ("", "serviceaccounts", &[]),
        ("", "services/status", &[]),
        ("apps", "deployments", &[]),
        ("coordination.k8s.io", "leases", &[]),
        ("rbac.authorization.k8s.io", "clusterroles", &[]),
        ("apiextensions.k8s.io", "customresourcedefinitions", &[]),
    ];
    let mut wrong = Vec::new();
    for (group, resource, allowed) in cluster_wide {
        for verb in VERBS {
            for namespace in [Some("elsewhere"), Some(ns.as_str())] {
                let expected = allowed.contains(verb)
                    // The leader-election Role, in the release namespace only.
                    || (*resource == "leases"
                        && namespace == Some(ns.as_str())
                        && ["get", "create", "update", "patch"].contains(verb));
                if may(&env, verb, group, resource, namespace).await? != expected {
                    wrong.push(format!(
                        "{verb} {group}/{resource} in {namespace:?}: expected allowed={expected}"
                    ));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "RBAC differs from the list:\n{}",
        wrong.join("\n")
    );
    Ok(())
}
