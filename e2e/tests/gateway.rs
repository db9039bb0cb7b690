//! Gateway API against a real kube-apiserver (issue 21, Tests): the
//! upstream v1.6.1 standard-channel CRDs installed unchanged, a
//! GatewayClass and a Gateway whose HTTP and HTTPS listeners portico binds
//! on unprivileged ports (`--gateway-port-offset`), routes attached across
//! namespaces with and without ReferenceGrants, a GRPCRoute, every status
//! read back with its `observedGeneration`, and an HTTPRoute edited under
//! load (weights, a rule added, rules reordered, and reordered alone)
//! without one failed request.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::api::{Api, Patch, PatchParams};
use portico_e2e::{
    CONVERGE, GatewayPorts, HostCertificate, Portico, PorticoOptions, TestEnv, apply, apply_json,
    condition, condition_state, delete_gateway_object, get_gateway_object, host_tls_secret,
    https_get, install_gateway_api, namespace,
};
use serde_json::{Value, json};

const CONTROLLER: &str = "portico.dev/gateway-controller";
/// What Gateway `addresses` must report (`--publish-status-address`).
const ADDRESS: &str = "198.51.100.9";

/// A control plane with the Gateway API CRDs and a GatewayClass of ours,
/// and portico running against it with the Gateway ports mapped.
struct World {
    env: TestEnv,
    ports: GatewayPorts,
    portico: Portico,
}

/// Where Gateway `addresses` come from.
enum Published {
    /// `--publish-status-address=ADDRESS`.
    Address,
    /// `--publish-service` naming the chart's LoadBalancer Service, whose
    /// status has [`LB_IP`] and [`LB_HOSTNAME`] (as a cloud's load-balancer
    /// controller would write them).
    Service,
}

const LB_IP: &str = "203.0.113.7";
const LB_HOSTNAME: &str = "lb.example.net";

async fn world(namespace: &str, published: Published) -> anyhow::Result<World> {
    let env = TestEnv::start(namespace, &[]).await?;
    let publish = match published {
        Published::Address => format!("--publish-status-address={ADDRESS}"),
        Published::Service => {
            let service = env
                .chart
                .of_kinds(&["Service"])
                .find(|s| s["spec"]["type"] == "LoadBalancer")
                .cloned()
                .context("the chart renders no LoadBalancer Service")?;
            apply_json(&env.admin, &service, false).await?;
            let name = service["metadata"]["name"].as_str().unwrap_or_default();
            let lb = json!({"status": {"loadBalancer": {"ingress": [
                {"ip": LB_IP}, {"hostname": LB_HOSTNAME}]}}});
            Api::<Service>::namespaced(env.admin.clone(), namespace)
                .patch_status(name, &PatchParams::default(), &Patch::Merge(lb))
                .await?;
            format!("--publish-service={namespace}/{name}")
        }
    };
    // The CRDs exist before portico starts, as in a cluster that has them.
    install_gateway_api(&env.admin).await?;
    apply_json(
        &env.admin,
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GatewayClass",
            "metadata": {"name": "portico"},
            "spec": {"controllerName": CONTROLLER},
        }),
        false,
    )
    .await?;
    let ports = GatewayPorts::pick()?;
    let portico = Portico::start(
        &env,
        PorticoOptions {
            args: vec![ports.flag(), publish],
            ..Default::default()
        },
    )
    .await?;
    Ok(World {
        env,
        ports,
        portico,
    })
}

/// Polls a Gateway API object until `ok` holds; panics with what was
/// waited for and the object as last seen.
async fn wait_object(
    client: &Client,
    kind: &str,
    ns: Option<&str>,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + CONVERGE;
    let mut last = None;
    loop {
        if let Some(obj) = get_gateway_object(client, kind, ns, name).await {
            if ok(&obj) {
                return obj;
            }
            last = Some(obj);
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {CONVERGE:?} waiting for {kind} {name}: {what}; last seen:\n{}",
            serde_json::to_string_pretty(&last).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Every condition in the object's status (its own, its listeners', its
/// route parents') carries `observedGeneration` equal to its generation,
/// and there is at least one.
fn current(obj: &Value) -> bool {
    fn collect<'a>(v: &'a Value, out: &mut Vec<&'a Value>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v) {
                        ("conditions", Value::Array(cs)) => out.extend(cs),
                        _ => collect(v, out),
                    }
                }
            }
            Value::Array(vs) => vs.iter().for_each(|v| collect(v, out)),
            _ => {}
        }
    }
    let generation = &obj["metadata"]["generation"];
    let mut conditions = Vec::new();
    collect(&obj["status"], &mut conditions);
    !conditions.is_empty()
        && conditions
            .iter()
            .all(|c| &c["observedGeneration"] == generation)
}

fn is(conditions: &Value, type_: &str, status: &str, reason: &str) -> bool {
    condition_state(conditions, type_) == Some((status.to_owned(), reason.to_owned()))
}

/// A Gateway status's listener `name`.
fn listener<'a>(gw: &'a Value, name: &str) -> &'a Value {
    gw["status"]["listeners"]
        .as_array()
        .and_then(|ls| ls.iter().find(|l| l["name"] == name))
        .unwrap_or(&Value::Null)
}

/// A route status's conditions for our parent entry with `sectionName`.
fn parent<'a>(route: &'a Value, section: &str) -> &'a Value {
    route["status"]["parents"]
        .as_array()
        .and_then(|ps| {
            ps.iter().find(|p| {
                p["controllerName"] == CONTROLLER && p["parentRef"]["sectionName"] == section
            })
        })
        .map_or(&Value::Null, |p| &p["conditions"])
}

/// An HTTPRoute with one rule to `backend` (`namespace` when another),
/// attached to listener `section` of Gateway `edge` in `gw_ns`.
fn http_route(
    ns: &str,
    name: &str,
    gw_ns: &str,
    sections: &[&str],
    path: &str,
    backend: (&str, Option<&str>),
) -> Value {
    let mut backend_ref = json!({"name": backend.0, "port": 80});
    if let Some(other) = backend.1 {
        backend_ref["namespace"] = json!(other);
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "parentRefs": sections.iter().map(|s| json!({"name": "edge", "namespace": gw_ns, "sectionName": s})).collect::<Vec<_>>(),
            "rules": [{
                "matches": [{"path": {"type": "PathPrefix", "value": path}}],
                "backendRefs": [backend_ref],
            }],
        },
    })
}

/// Gateway `edge`: HTTP listeners on one port (any hostname, `All`; a
/// `Same` one; a `Selector` one; one for gRPC), HTTPS listeners on another, and with
/// `cross_namespace_cert` one more whose certificate is another
/// namespace's Secret.
fn edge_gateway(ns: &str, ports: GatewayPorts, cross_namespace_cert: bool) -> Value {
    let all = json!({"namespaces": {"from": "All"}});
    let mut listeners = vec![
        json!({"name": "http", "port": ports.http, "protocol": "HTTP", "allowedRoutes": all}),
        json!({"name": "same", "port": ports.http, "protocol": "HTTP", "hostname": "same.example",
               "allowedRoutes": {"namespaces": {"from": "Same"}}}),
        json!({"name": "selected", "port": ports.http, "protocol": "HTTP", "hostname": "selected.example",
               "allowedRoutes": {"namespaces": {"from": "Selector", "selector": {"matchLabels": {"team": "a"}}}}}),
        // Its own hostname: a GRPCRoute and an HTTPRoute whose hostnames
        // meet on one listener conflict.
        json!({"name": "grpc", "port": ports.http, "protocol": "HTTP", "hostname": "grpc.example"}),
        json!({"name": "https", "port": ports.https, "protocol": "HTTPS", "hostname": "secure.example",
               "tls": {"mode": "Terminate", "certificateRefs": [{"name": "secure-tls"}]}, "allowedRoutes": all}),
    ];
    if cross_namespace_cert {
        listeners.push(json!({"name": "https-other", "port": ports.https, "protocol": "HTTPS", "hostname": "other.example",
            "tls": {"certificateRefs": [{"name": "other-tls", "namespace": "team-b"}]}, "allowedRoutes": all}));
    }
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": ns},
        "spec": {"gatewayClassName": "portico", "listeners": listeners},
    })
}

/// A ReferenceGrant in `ns` letting `from_kind`s of `from_ns` refer to
/// `to_kind`s (core group) there.
fn grant(ns: &str, name: &str, from_kind: &str, from_ns: &str, to_kind: &str) -> Value {
    json!({
        "apiVersion": "gateway.networking.k8s.io/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "from": [{"group": "gateway.networking.k8s.io", "kind": from_kind, "namespace": from_ns}],
            "to": [{"group": "", "kind": to_kind}],
        },
    })
}

/// An HTTPRoute in a table: namespace, name, the listeners it attaches
/// to, its path prefix, its backend Service and that Service's namespace
/// when another.
type RouteRow<'a> = (
    &'a str,
    &'a str,
    &'a [&'a str],
    &'a str,
    &'a str,
    Option<&'a str>,
);

/// `(type, status, reason)` of a condition.
type Expect = (&'static str, &'static str, &'static str);
const ACCEPTED: Expect = ("Accepted", "True", "Accepted");
const RESOLVED: Expect = ("ResolvedRefs", "True", "ResolvedRefs");
const NOT_ALLOWED: Expect = ("Accepted", "False", "NotAllowedByListeners");
const REF_NOT_PERMITTED: Expect = ("ResolvedRefs", "False", "RefNotPermitted");
const NO_MATCHING_PARENT: Expect = ("Accepted", "False", "NoMatchingParent");

fn all(conditions: &Value, expect: &[Expect]) -> bool {
    expect.iter().all(|(t, s, r)| is(conditions, t, s, r))
}

/// Waits for what portico writes in the statuses of Gateway `edge` and
/// its routes.
struct Statuses<'a> {
    client: &'a Client,
    gw_ns: &'a str,
}

impl Statuses<'_> {
    async fn gateway(&self, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
        wait_object(self.client, "Gateway", Some(self.gw_ns), "edge", what, ok).await
    }

    async fn attached(&self, l: &str, n: u64) {
        let what = format!("{n} routes attached to listener {l}");
        self.gateway(&what, |g| listener(g, l)["attachedRoutes"] == n)
            .await;
    }

    /// [`Self::route_of`] an HTTPRoute.
    async fn route(&self, ns: &str, name: &str, section: &str, expect: &[Expect]) -> Value {
        self.route_of("HTTPRoute", ns, name, section, expect).await
    }

    /// Route `kind ns/name`'s entry for listener `section` meets `expect`
    /// and every condition is current.
    async fn route_of(
        &self,
        kind: &str,
        ns: &str,
        name: &str,
        section: &str,
        expect: &[Expect],
    ) -> Value {
        let what = format!("parent {section}: {expect:?}, current");
        wait_object(self.client, kind, Some(ns), name, &what, |r| {
            all(parent(r, section), expect) && current(r)
        })
        .await
    }
}

/// The GatewayClass and Gateway statuses, TLS with SNI on the mapped
/// HTTPS port, and cross-namespace references: a backendRef and a
/// certificateRef withdrawn and granted live by ReferenceGrants;
/// `allowedRoutes` `Same`, `All` and `Selector`; a GRPCRoute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_listeners_statuses_and_reference_grants() -> anyhow::Result<()> {
    let World {
        env,
        ports,
        portico,
    } = world("e2e-gateway", Published::Address).await?;
    let client = &env.admin;
    let gw_ns = env.namespace.as_str();
    let statuses = Statuses { client, gw_ns };
    let (http, https) = (ports.bound(ports.http), ports.bound(ports.https));
    apply(client, &namespace("team-a", &[("team", "a")])).await?;
    apply(client, &namespace("team-b", &[])).await?;
    apply(client, &namespace("team-c", &[])).await?;
    let _web = env.backend("web").await?;
    let _store = env.backend_in("team-b", "store").await?;
    let _a = env.backend_in("team-a", "a-web").await?;
    let _c = env.backend_in("team-c", "c-web").await?;
    let secure = HostCertificate::generate("secure.example")?;
    let other = HostCertificate::generate("other.example")?;
    apply(client, &host_tls_secret(gw_ns, "secure-tls", &secure)).await?;
    apply(client, &host_tls_secret("team-b", "other-tls", &other)).await?;

    // GatewayClass: accepted, with the features portico's tests cover.
    let class = wait_object(client, "GatewayClass", None, "portico", "Accepted", |c| {
        all(&c["status"]["conditions"], &[ACCEPTED]) && current(c)
    })
    .await;
    let features: Vec<&str> = class["status"]["supportedFeatures"]
        .as_array()
        .map(|fs| fs.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default();
    for core in ["Gateway", "HTTPRoute", "ReferenceGrant", "GRPCRoute"] {
        assert!(features.contains(&core), "{core} missing from {features:?}");
    }
    assert!(features.is_sorted(), "unsorted: {features:?}");

    apply_json(client, &edge_gateway(gw_ns, ports, false), false).await?;
    let routes: [RouteRow; 5] = [
        (
            gw_ns,
            "web",
            &["same", "https", "https-other"],
            "/",
            "web",
            None,
        ),
        // To team-b: needs a grant there.
        ("team-a", "shop", &["http"], "/", "store", Some("team-b")),
        // On `same` from a namespace not the Gateway's.
        ("team-a", "intruder", &["same"], "/x", "a-web", None),
        // On `selected`: team-a is labelled team=a, team-c is not.
        ("team-a", "selected-a", &["selected"], "/", "a-web", None),
        ("team-c", "selected-c", &["selected"], "/c", "c-web", None),
    ];
    for (ns, name, sections, path, svc, svc_ns) in routes {
        let route = http_route(ns, name, gw_ns, sections, path, (svc, svc_ns));
        apply_json(client, &route, false).await?;
    }

    // Served on the mapped ports: HTTP, and HTTPS with SNI and the
    // listener's certificate verified.
    portico
        .wait_for_on(http, "same.example", "/", StatusCode::OK, "web /")
        .await;
    portico
        .wait_for_on(http, "selected.example", "/", StatusCode::OK, "a-web /")
        .await;
    let r = https_get(https, "secure.example", &secure.ca, "/tls").await?;
    assert_eq!((r.status, r.body.as_str()), (StatusCode::OK, "web /tls"));

    let served = [
        ACCEPTED,
        ("Programmed", "True", "Programmed"),
        RESOLVED,
        ("Conflicted", "False", "NoConflicts"),
    ];
    let gw = statuses
        .gateway("Accepted, Programmed, listeners, current", |g| {
            all(&g["status"]["conditions"], &served[..2])
                && ["http", "same", "selected", "https"].iter().all(|l| {
                    all(&listener(g, l)["conditions"], &served)
                        && listener(g, l)["attachedRoutes"] == 1
                })
                && current(g)
        })
        .await;
    assert_eq!(gw["metadata"]["generation"], 1);
    let addresses = json!([{"type": "IPAddress", "value": ADDRESS}]);
    assert_eq!(gw["status"]["addresses"], addresses);
    // The port actually bound, after the offset.
    for (l, bound) in [("http", http), ("selected", http), ("https", https)] {
        let programmed = condition(&listener(&gw, l)["conditions"], "Programmed").cloned();
        let message = format!("served on port {}", bound.port());
        assert_eq!(
            programmed.as_ref().map(|c| &c["message"]),
            Some(&json!(message)),
            "listener {l}: {programmed:?}"
        );
    }
    let kinds = json!([
        {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute"},
        {"group": "gateway.networking.k8s.io", "kind": "GRPCRoute"},
    ]);
    assert_eq!(listener(&gw, "http")["supportedKinds"], kinds);

    // allowedRoutes: Same takes the Gateway's namespace and refuses
    // team-a; Selector refuses team-c until team-c is labelled, live.
    statuses
        .route(gw_ns, "web", "same", &[ACCEPTED, RESOLVED])
        .await;
    statuses
        .route("team-a", "intruder", "same", &[NOT_ALLOWED])
        .await;
    statuses
        .route("team-c", "selected-c", "selected", &[NOT_ALLOWED])
        .await;
    statuses
        .route("team-a", "selected-a", "selected", &[ACCEPTED, RESOLVED])
        .await;
    // Status is written after the table with those routes is live: the
    // refused ones are not served.
    let r = portico.get_on(http, "same.example", "/x").await?;
    assert_eq!(r.body, "web /x", "team-a's route on a Same listener");
    let r = portico.get_on(http, "selected.example", "/c").await?;
    assert_eq!(r.body, "a-web /c", "team-c is not selected yet");
    apply(client, &namespace("team-c", &[("team", "a")])).await?;
    portico
        .wait_for_on(http, "selected.example", "/c", StatusCode::OK, "c-web /c")
        .await;
    statuses
        .route("team-c", "selected-c", "selected", &[ACCEPTED])
        .await;
    statuses.attached("selected", 2).await;

    // A backendRef into team-b: 500 and RefNotPermitted without a grant;
    // served and resolved with one; withdrawn live when it is deleted.
    let refused = [ACCEPTED, REF_NOT_PERMITTED];
    let error = StatusCode::INTERNAL_SERVER_ERROR;
    statuses.route("team-a", "shop", "http", &refused).await;
    portico
        .wait_for_on(http, "shop.example", "/", error, "")
        .await;
    let shop_grant = grant("team-b", "shop", "HTTPRoute", "team-a", "Service");
    apply_json(client, &shop_grant, false).await?;
    portico
        .wait_for_on(http, "shop.example", "/cart", StatusCode::OK, "store /cart")
        .await;
    statuses
        .route("team-a", "shop", "http", &[ACCEPTED, RESOLVED])
        .await;
    delete_gateway_object(client, "ReferenceGrant", Some("team-b"), "shop").await?;
    portico
        .wait_for_on(http, "shop.example", "/", error, "")
        .await;
    statuses.route("team-a", "shop", "http", &refused).await;

    // A certificateRef into team-b, added by editing the Gateway: the
    // listener is not served (no handshake for its name) until a grant
    // lets the Gateway's namespace read the Secret. Until the listener
    // exists, the route naming it is told so.
    statuses
        .route(gw_ns, "web", "https-other", &[NO_MATCHING_PARENT])
        .await;
    apply_json(client, &edge_gateway(gw_ns, ports, true), false).await?;
    let gw = statuses
        .gateway("https-other RefNotPermitted at generation 2", |g| {
            let c = &listener(g, "https-other")["conditions"];
            g["metadata"]["generation"] == 2
                && all(c, &[REF_NOT_PERMITTED, ("Programmed", "False", "Invalid")])
                && current(g)
        })
        .await;
    let https_listener = &listener(&gw, "https")["conditions"];
    assert!(all(https_listener, &served), "untouched: {https_listener}");
    match https_get(https, "other.example", &other.ca, "/").await {
        Err(e) => assert!(format!("{e:#}").contains("TLS handshake"), "{e:#}"),
        Ok(r) => panic!("other.example served without its Secret: {}", r.body),
    }
    let secret_grant = grant("team-b", "edge", "Gateway", gw_ns, "Secret");
    apply_json(client, &secret_grant, false).await?;
    // Certificates are published just before the routes that need them
    // (`Dataplane::publish_certs`): the first handshake can precede the
    // route by a moment (a 404), so wait for the answer itself.
    portico_e2e::eventually("other.example over TLS → web /o", CONVERGE, || async {
        let r = https_get(https, "other.example", &other.ca, "/o")
            .await
            .ok()?;
        (r.status == StatusCode::OK && r.body == "web /o").then_some(())
    })
    .await;
    statuses
        .gateway("https-other served", |g| {
            all(&listener(g, "https-other")["conditions"], &served)
                && all(&g["status"]["conditions"], &served[..2])
                && current(g)
        })
        .await;
    statuses.attached("https-other", 1).await;
    statuses
        .route(gw_ns, "web", "https-other", &[ACCEPTED, RESOLVED])
        .await;
    // SNI still picks each listener's own certificate.
    let r = https_get(https, "secure.example", &secure.ca, "/s").await?;
    assert_eq!(r.body, "web /s");

    // A GRPCRoute through the same Gateway port, to an h2c backend: the
    // matched method is served, another method of the service is not.
    env.grpc_backend("grpc-echo").await?;
    apply_json(
        client,
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "GRPCRoute",
            "metadata": {"name": "echo", "namespace": gw_ns},
            "spec": {
                "parentRefs": [{"name": "edge", "sectionName": "grpc"}],
                "rules": [{
                    "matches": [{"method": {"service": "portico.test.Echo", "method": "Unary"}}],
                    "backendRefs": [{"name": "grpc-echo", "port": 80}],
                }],
            },
        }),
        false,
    )
    .await?;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{http}"))?
        .origin("http://grpc.example".parse()?)
        .connect()
        .await?;
    let echo = portico_testkit::EchoClient::new(channel);
    let request = |count| portico_testkit::EchoRequest {
        message: "over the gateway".into(),
        count,
        ..Default::default()
    };
    let reply = portico_e2e::eventually("the GRPCRoute's unary call", CONVERGE, || {
        let mut echo = echo.clone();
        async move { echo.unary(request(0)).await.ok() }
    })
    .await;
    assert_eq!(reply.into_inner().message, "over the gateway");
    let unmatched = echo.clone().server_stream(request(1)).await;
    assert!(
        unmatched.is_err(),
        "ServerStream matches no rule: {unmatched:?}"
    );
    statuses
        .route_of("GRPCRoute", gw_ns, "echo", "grpc", &[ACCEPTED, RESOLVED])
        .await;
    statuses.attached("grpc", 1).await;
    Ok(())
}

// === Route edits under load ===

/// The route `app` as edit `k` leaves it.
#[derive(Clone, Copy, Debug, Default)]
struct Shape {
    /// Rule `/a`'s weights: v1 1 / v2 0, or flipped.
    a_to_v2: bool,
    /// Rule `/d` (to v1) present.
    with_d: bool,
    /// Rules written in reverse order.
    reversed: bool,
}

impl Shape {
    /// Edit `k` (from 1) changes one thing in turn: the weights, a rule
    /// added or removed, the rules' order.
    fn after(self, k: u32) -> Self {
        match k % 3 {
            1 => Self {
                a_to_v2: !self.a_to_v2,
                ..self
            },
            2 => Self {
                with_d: !self.with_d,
                ..self
            },
            _ => Self {
                reversed: !self.reversed,
                ..self
            },
        }
    }

    /// Which backend must answer `path` (rule order never matters:
    /// Gateway API precedence is by match, longest prefix first).
    fn backend_for(self, path: &str) -> &'static str {
        match path {
            p if p.starts_with("/a") => {
                if self.a_to_v2 {
                    "v2"
                } else {
                    "v1"
                }
            }
            p if p.starts_with("/b") => "v2",
            p if p.starts_with("/d") && self.with_d => "v1",
            _ => "v3",
        }
    }

    /// The HTTPRoute; every rule stamps `x-edit: k` on its answers, so a
    /// response tells which edit's table served it.
    fn route(self, ns: &str, k: u32) -> Value {
        let stamp = json!([{"type": "ResponseHeaderModifier",
            "responseHeaderModifier": {"set": [{"name": "x-edit", "value": k.to_string()}]}}]);
        let prefix = |p: &str| json!([{"path": {"type": "PathPrefix", "value": p}}]);
        let (w1, w2) = if self.a_to_v2 { (0, 1) } else { (1, 0) };
        let mut rules = vec![
            json!({"matches": prefix("/a"), "filters": stamp, "backendRefs": [
                {"name": "v1", "port": 80, "weight": w1}, {"name": "v2", "port": 80, "weight": w2}]}),
            json!({"matches": prefix("/b"), "filters": stamp, "backendRefs": [{"name": "v2", "port": 80}]}),
            json!({"filters": stamp, "backendRefs": [{"name": "v3", "port": 80}]}),
        ];
        if self.with_d {
            rules.push(json!({"matches": prefix("/d"), "filters": stamp, "backendRefs": [{"name": "v1", "port": 80}]}));
        }
        if self.reversed {
            rules.reverse();
        }
        json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute",
            "metadata": {"name": "app", "namespace": ns},
            "spec": {
                "parentRefs": [{"name": "edge", "sectionName": "http"}],
                "hostnames": ["app.example"],
                "rules": rules,
            },
        })
    }
}

/// The paths the load cycles through: one per rule, and one for the
/// catch-all.
const PATHS: [&str; 4] = ["/a/1", "/b/2", "/d/3", "/other"];

/// What the load saw, shared by the clients.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
    /// Connections the keep-alive clients opened.
    opened: AtomicU64,
    /// Non-2xx answers and connection or protocol errors.
    failed: AtomicU64,
    /// 2xx answers from a backend the stamped edit does not route to.
    misrouted: AtomicU64,
    /// Answers per edit stamp.
    per_edit: Mutex<BTreeMap<u32, u64>>,
    /// The first few problems, for the failure message.
    samples: Mutex<Vec<String>>,
}

impl Tally {
    fn record(&self, path: &str, shapes: &[Shape], answer: anyhow::Result<Answer>) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let problem = match answer {
            Err(e) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                Some(format!("{path}: {e:#}"))
            }
            Ok(a) if !a.status.is_success() => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                Some(format!("{path}: {} {:?}", a.status, a.body))
            }
            Ok(a) => {
                let expected = a
                    .edit
                    .and_then(|k| shapes.get(k as usize))
                    .map(|s| s.backend_for(path));
                let served_by = a.body.split(' ').next();
                if let Some(k) = a.edit {
                    *self
                        .per_edit
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(k)
                        .or_default() += 1;
                }
                (expected.is_none() || expected != served_by).then(|| {
                    self.misrouted.fetch_add(1, Ordering::Relaxed);
                    format!("{path}: edit {:?} answered by {:?}", a.edit, a.body)
                })
            }
        };
        if let Some(p) = problem {
            let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
            if samples.len() < 10 {
                samples.push(p);
            }
        }
    }

    fn answered_under(&self, k: u32) -> u64 {
        self.per_edit
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&k)
            .copied()
            .unwrap_or(0)
    }
}

struct Answer {
    status: StatusCode,
    edit: Option<u32>,
    body: String,
}

/// A request for `app.example` (origin form: in absolute form the URI's
/// authority, not `Host`, would name the host).
fn app_request(path: &str, close: bool) -> anyhow::Result<Request<Empty<Bytes>>> {
    let mut req = Request::get(path).header(http::header::HOST, "app.example");
    if close {
        req = req.header(http::header::CONNECTION, "close");
    }
    Ok(req.body(Empty::new())?)
}

async fn answer(resp: http::Response<hyper::body::Incoming>) -> anyhow::Result<Answer> {
    let status = resp.status();
    let edit = resp
        .headers()
        .get("x-edit")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(Answer {
        status,
        edit,
        body: String::from_utf8_lossy(&body).into_owned(),
    })
}

/// An HTTP/1.1 connection to `addr`.
async fn connect(addr: SocketAddr) -> anyhow::Result<SendRequest<Empty<Bytes>>> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

/// `path` on `sender`'s connection.
async fn get_on(
    sender: &mut SendRequest<Empty<Bytes>>,
    path: &str,
    close: bool,
) -> anyhow::Result<Answer> {
    sender.ready().await?;
    answer(sender.send_request(app_request(path, close)?).await?).await
}

/// A client on one connection for as long as it runs: a connection closed
/// under it fails the request in flight or the next (no pool retries
/// elsewhere, so a swap that closed connections would count). After a
/// failure it connects again; `opened` counts its connections.
async fn keep_alive_client(addr: SocketAddr, first: usize, load: Load) {
    let mut conn = None;
    let mut i = first;
    while !load.stop.load(Ordering::Relaxed) {
        let path = PATHS[i % PATHS.len()];
        i += 1;
        let sender = match &mut conn {
            Some(sender) => sender,
            None => match connect(addr).await {
                Ok(sender) => {
                    load.tally.opened.fetch_add(1, Ordering::Relaxed);
                    conn.insert(sender)
                }
                Err(e) => {
                    load.tally
                        .record(path, &load.shapes, Err(e.context("connecting")));
                    continue;
                }
            },
        };
        let a = get_on(sender, path, false).await;
        if a.is_err() {
            conn = None;
        }
        load.tally.record(path, &load.shapes, a);
    }
}

/// A client opening a connection per request, closed after the answer.
async fn new_connection_client(addr: SocketAddr, first: usize, load: Load) {
    let mut i = first;
    while !load.stop.load(Ordering::Relaxed) {
        let path = PATHS[i % PATHS.len()];
        i += 1;
        let a = match connect(addr).await {
            Ok(mut sender) => get_on(&mut sender, path, true).await,
            Err(e) => Err(e.context("connecting")),
        };
        load.tally.record(path, &load.shapes, a);
    }
}

/// What a load client shares with the test.
#[derive(Clone)]
struct Load {
    tally: Arc<Tally>,
    stop: Arc<AtomicBool>,
    shapes: Arc<[Shape]>,
}

/// 24 edits (weights, a rule added or removed, rules reordered) and 8 that
/// only reorder the rules; each lands (its stamp seen, its routing right,
/// its status current) while six clients keep requesting: four each on
/// one keep-alive connection, two opening a connection per request. Every
/// non-2xx answer, connection error and misrouted answer is counted; all
/// must be zero, and the keep-alive clients never needed a second
/// connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn route_edits_under_load_fail_no_request() -> anyhow::Result<()> {
    const EDITS: u32 = 24;
    /// Answers the load must get from each edit's table before the next
    /// edit: traffic straddles every swap.
    const PER_EDIT: u64 = 50;
    const KEEP_ALIVE: usize = 4;
    const NEW_CONNECTION: usize = 2;
    let World {
        env,
        ports,
        portico,
    } = world("e2e-gateway-load", Published::Service).await?;
    let client = &env.admin;
    let ns = env.namespace.as_str();
    let addr = ports.bound(ports.http);
    let statuses = Statuses { client, gw_ns: ns };
    let _v = [
        env.backend("v1").await?,
        env.backend("v2").await?,
        env.backend("v3").await?,
    ];
    apply_json(
        client,
        &json!({
            "apiVersion": "gateway.networking.k8s.io/v1",
            "kind": "Gateway",
            "metadata": {"name": "edge", "namespace": ns},
            "spec": {"gatewayClassName": "portico", "listeners": [
                {"name": "http", "port": ports.http, "protocol": "HTTP"}]},
        }),
        false,
    )
    .await?;
    let mut shapes = vec![Shape::default()];
    for k in 1..=EDITS {
        let next = shapes[k as usize - 1].after(k);
        shapes.push(next);
    }
    let shapes: Arc<[Shape]> = shapes.into();
    apply_json(client, &shapes[0].route(ns, 0), false).await?;
    portico
        .wait_for_on(addr, "app.example", "/a", StatusCode::OK, "v1 /a")
        .await;

    let load = Load {
        tally: Arc::new(Tally::default()),
        stop: Arc::new(AtomicBool::new(false)),
        shapes: shapes.clone(),
    };
    let tally = load.tally.clone();
    let mut clients = Vec::new();
    for c in 0..KEEP_ALIVE {
        clients.push(tokio::spawn(keep_alive_client(addr, c, load.clone())));
    }
    for c in 0..NEW_CONNECTION {
        clients.push(tokio::spawn(new_connection_client(addr, c, load.clone())));
    }

    let started = Instant::now();
    let mut generation = 1;
    let mut reorders_alone = 0;
    for k in 1..=EDITS {
        let shape = shapes[k as usize];
        apply_json(client, &shape.route(ns, k), false).await?;
        generation += 1;
        let what = format!("edit {k} ({shape:?}) answering under load");
        portico_e2e::eventually(&what, CONVERGE, || async {
            (tally.answered_under(k) >= PER_EDIT).then_some(())
        })
        .await;
        let route = statuses
            .route(ns, "app", "http", &[ACCEPTED, RESOLVED])
            .await;
        assert_eq!(route["metadata"]["generation"], json!(generation));
        if k % 3 == 0 {
            // The rules reordered and nothing else, the edit Envoy
            // Gateway's users report 503s for: the answers do not change,
            // so the status (written once the table is live) says it was
            // taken, then the load runs on under it.
            let reordered = Shape {
                reversed: !shape.reversed,
                ..shape
            };
            apply_json(client, &reordered.route(ns, k), false).await?;
            generation += 1;
            let route = statuses
                .route(ns, "app", "http", &[ACCEPTED, RESOLVED])
                .await;
            assert_eq!(route["metadata"]["generation"], json!(generation));
            let seen = tally.answered_under(k);
            let what = format!("edit {k} reordered alone, answering under load");
            portico_e2e::eventually(&what, CONVERGE, || async {
                (tally.answered_under(k) >= seen + PER_EDIT).then_some(())
            })
            .await;
            reorders_alone += 1;
        }
    }
    let editing = started.elapsed();
    // The Gateway still counts the one route, its status current, its
    // addresses the published Service's.
    let addresses = json!([
        {"type": "IPAddress", "value": LB_IP},
        {"type": "Hostname", "value": LB_HOSTNAME},
    ]);
    statuses
        .gateway("one route attached, the Service's addresses", |g| {
            listener(g, "http")["attachedRoutes"] == 1
                && g["status"]["addresses"] == addresses
                && current(g)
        })
        .await;
    load.stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await?;
    }
    let requests = tally.requests.load(Ordering::Relaxed);
    let failed = tally.failed.load(Ordering::Relaxed);
    let misrouted = tally.misrouted.load(Ordering::Relaxed);
    let opened = tally.opened.load(Ordering::Relaxed);
    println!(
        "route edits under load: {EDITS} edits and {reorders_alone} reorders alone in \
         {editing:?}, {requests} requests from \
         {KEEP_ALIVE} keep-alive clients ({opened} connections) and {NEW_CONNECTION} clients \
         opening a connection per request, {failed} failed, {misrouted} misrouted; \
         answers per edit {:?}",
        tally.per_edit.lock().unwrap_or_else(|p| p.into_inner())
    );
    let samples = tally
        .samples
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    assert_eq!(
        failed, 0,
        "failed requests during route edits: {samples:#?}"
    );
    assert_eq!(
        misrouted, 0,
        "misrouted requests during route edits: {samples:#?}"
    );
    assert_eq!(
        opened, KEEP_ALIVE as u64,
        "a table swap closed keep-alive connections"
    );

    // The Gateway deleted: its port stops accepting.
    delete_gateway_object(client, "Gateway", Some(ns), "edge").await?;
    portico_e2e::eventually("the Gateway's port closed", CONVERGE, || async {
        tokio::net::TcpStream::connect(addr)
            .await
            .is_err()
            .then_some(())
    })
    .await;
    Ok(())
}
