//! Status and Event writing against kube's client over an in-process API
//! stand-in (the one place a fake API server is allowed: these are unit tests
//! of what gets written; the real API server is exercised by `e2e/`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::*;
use crate::diagnostics::{Diagnostic, Kind, ObjectRef, Severity};
use crate::translate::{ObjectReport, Translation};

/// One request the client made.
#[derive(Clone, Debug)]
struct Call {
    method: Method,
    path: String,
    query: String,
    content_type: String,
    body: Value,
}

/// What the stand-in answers for reads.
#[derive(Clone, Default)]
struct Fixture {
    /// `GET /api/v1/namespaces/{ns}/services/{name}`.
    service: Option<Value>,
    /// `GET .../endpointslices` items.
    slices: Vec<Value>,
}

#[derive(Clone, Default)]
struct ApiLog(Arc<Mutex<Vec<Call>>>);

impl ApiLog {
    fn calls(&self) -> Vec<Call> {
        self.0.lock().unwrap().clone()
    }

    fn writes(&self) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method != Method::GET)
            .collect()
    }

    fn status_patches(&self) -> Vec<Call> {
        self.writes()
            .into_iter()
            .filter(|c| c.method == Method::PATCH && c.path.ends_with("/status"))
            .collect()
    }

    fn events(&self) -> Vec<Call> {
        self.writes()
            .into_iter()
            .filter(|c| c.path.contains("/events"))
            .collect()
    }
}

fn client(log: &ApiLog, fixture: Fixture) -> Client {
    let log = log.clone();
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let log = log.clone();
        let fixture = fixture.clone();
        async move {
            let (parts, body) = req.into_parts();
            let bytes = body.collect().await.expect("request body").to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let call = Call {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                content_type: parts
                    .headers
                    .get(http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned(),
                body,
            };
            log.0.lock().unwrap().push(call.clone());
            let (status, answer) = answer(&call, &fixture);
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .header(http::header::CONTENT_TYPE, "application/json")
                    .body(Full::new(Bytes::from(answer.to_string())))
                    .unwrap(),
            )
        }
    });
    Client::new(service, "default")
}

/// Echoes writes back as the stored object; serves the fixture for reads.
fn answer(call: &Call, fixture: &Fixture) -> (StatusCode, Value) {
    let segments: Vec<&str> = call.path.split('/').collect();
    let not_found = (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404}),
    );
    match call.method {
        Method::PATCH | Method::POST => {
            let mut obj = call.body.clone();
            if let Some(ns) = segments
                .iter()
                .position(|s| *s == "namespaces")
                .and_then(|i| segments.get(i + 1))
            {
                obj["metadata"]["namespace"] = json!(ns);
            }
            if call.method == Method::PATCH {
                let name = segments[segments.len() - 2];
                obj["metadata"]["name"] = json!(name);
                obj["spec"] = json!({});
            } else if obj["metadata"]["name"].is_null() {
                obj["metadata"]["name"] = json!("generated");
            }
            (StatusCode::OK, obj)
        }
        Method::GET if call.path.ends_with("/endpointslices") => (
            StatusCode::OK,
            json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList",
                   "metadata": {}, "items": fixture.slices}),
        ),
        Method::GET if call.path.contains("/services/") => match &fixture.service {
            Some(s) => (StatusCode::OK, s.clone()),
            None => not_found,
        },
        _ => not_found,
    }
}

fn writer(log: &ApiLog, fixture: Fixture, publish_service: Option<&str>) -> StatusWriter {
    StatusWriter::new(
        client(log, fixture),
        "portico-test".into(),
        publish_service.map(str::to_owned),
        Vec::new(),
        true,
        "portico.dev/gateway-controller".into(),
    )
}

fn object(kind: Kind, name: &str) -> ObjectRef {
    ObjectRef {
        kind,
        namespace: "shop".into(),
        name: name.into(),
    }
}

fn report(
    generation: i64,
    diagnostics: Vec<Diagnostic>,
    total: usize,
    served: usize,
) -> ObjectReport {
    ObjectReport {
        generation: Some(generation),
        uid: Some(format!("uid-{generation}")),
        diagnostics,
        rules_total: total,
        rules_served: served,
        read_only: false,
    }
}

fn warning(reason: &'static str, field: &str) -> Diagnostic {
    Diagnostic {
        severity: Severity::Warning,
        reason,
        field: field.into(),
        message: "not a duration".into(),
    }
}

fn translation(entries: Vec<(ObjectRef, ObjectReport)>) -> Translation {
    Translation {
        reports: entries.into_iter().collect::<BTreeMap<_, _>>(),
        ..Default::default()
    }
}

#[tokio::test]
async fn ingress_status_is_server_side_applied_once() {
    let log = ApiLog::default();
    let mut w = writer(&log, Fixture::default(), None);
    w.publish_addresses = vec!["203.0.113.7".into(), "lb.example.com".into()];
    w.refresh_addresses().await;
    let t = translation(vec![(
        object(Kind::Ingress, "web"),
        report(1, vec![], 1, 1),
    )]);

    w.write_all(&t).await;
    let patches = log.status_patches();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    let p = &patches[0];
    assert_eq!(
        p.path,
        "/apis/networking.k8s.io/v1/namespaces/shop/ingresses/web/status"
    );
    assert_eq!(p.content_type, "application/apply-patch+yaml");
    assert!(
        p.query.contains("fieldManager=portico.dev%2Fstatus"),
        "{}",
        p.query
    );
    assert!(p.query.contains("force=true"), "{}", p.query);
    assert_eq!(
        p.body["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "203.0.113.7"}, {"hostname": "lb.example.com"}])
    );

    // The same content is not written again.
    w.write_all(&t).await;
    assert_eq!(log.status_patches().len(), 1);
}

#[tokio::test]
async fn new_addresses_rewrite_ingress_status() {
    let log = ApiLog::default();
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "portico", "namespace": "ingress"},
        "status": {"loadBalancer": {"ingress": [{"ip": "198.51.100.1"}]}}
    });
    let mut w = writer(
        &log,
        Fixture {
            service: Some(service),
            ..Default::default()
        },
        Some("ingress/portico"),
    );
    let t = translation(vec![(
        object(Kind::Ingress, "web"),
        report(1, vec![], 1, 1),
    )]);
    w.write_all(&t).await;
    assert_eq!(
        log.status_patches()[0].body["status"]["loadBalancer"]["ingress"],
        json!([])
    );

    w.refresh_addresses().await;
    assert!(log.calls().iter().any(
        |c| c.method == Method::GET && c.path == "/api/v1/namespaces/ingress/services/portico"
    ));
    w.write_all(&t).await;
    let patches = log.status_patches();
    assert_eq!(patches.len(), 2);
    assert_eq!(
        patches[1].body["status"]["loadBalancer"]["ingress"],
        json!([{"ip": "198.51.100.1"}])
    );
}

#[tokio::test]
async fn httproute_conditions_carry_reason_and_generation() {
    let log = ApiLog::default();
    let mut w = writer(&log, Fixture::default(), None);
    let missing = Diagnostic {
        severity: Severity::Error,
        reason: "BackendNotFound",
        field: "spec.rules[0].backendRefs[0]".into(),
        message: "Service shop/gone not found".into(),
    };
    let route = object(Kind::HttpRoute, "api");
    w.write_all(&translation(vec![(
        route.clone(),
        report(4, vec![missing], 2, 2),
    )]))
    .await;

    let patches = log.status_patches();
    assert_eq!(patches.len(), 1);
    assert_eq!(
        patches[0].path,
        "/apis/portico.dev/v1alpha1/namespaces/shop/httproutes/api/status"
    );
    let conditions = patches[0].body["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    let find = |t: &str| conditions.iter().find(|c| c["type"] == t).cloned().unwrap();
    let accepted = find("Accepted");
    assert_eq!(accepted["status"], "True");
    assert_eq!(accepted["observedGeneration"], 4);
    let resolved = find("ResolvedRefs");
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "BackendNotFound");
    assert_eq!(resolved["observedGeneration"], 4);
    assert!(resolved["message"].as_str().unwrap().contains("shop/gone"));

    // Fixed: ResolvedRefs flips, Accepted keeps its transition time.
    w.write_all(&translation(vec![(route, report(5, vec![], 2, 2))]))
        .await;
    let patches = log.status_patches();
    assert_eq!(patches.len(), 2);
    let after = patches[1].body["status"]["conditions"]
        .as_array()
        .unwrap()
        .clone();
    let accepted_after = after.iter().find(|c| c["type"] == "Accepted").unwrap();
    assert_eq!(
        accepted_after["lastTransitionTime"],
        accepted["lastTransitionTime"]
    );
    let resolved_after = after.iter().find(|c| c["type"] == "ResolvedRefs").unwrap();
    assert_eq!(resolved_after["status"], "True");
    assert_eq!(resolved_after["observedGeneration"], 5);
}

#[tokio::test]
async fn a_warning_event_per_finding_per_generation() {
    let log = ApiLog::default();
    let mut w = writer(&log, Fixture::default(), None);
    let ingress = object(Kind::Ingress, "web");
    let field = "metadata.annotations[nginx.ingress.kubernetes.io/proxy-read-timeout]";
    let t = translation(vec![(
        ingress.clone(),
        report(1, vec![warning("InvalidAnnotation", field)], 1, 1),
    )]);

    w.write_all(&t).await;
    let events = log.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    let e = &events[0].body;
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["reason"], "InvalidAnnotation");
    assert!(e["note"].as_str().unwrap().starts_with(field), "{e}");
    assert_eq!(e["regarding"]["kind"], "Ingress");
    assert_eq!(e["regarding"]["namespace"], "shop");
    assert_eq!(e["regarding"]["name"], "web");
    assert_eq!(e["regarding"]["uid"], "uid-1");
    assert_eq!(e["reportingController"], REPORTING_CONTROLLER);

    // Rebuilt with the same finding: no second Event.
    w.write_all(&t).await;
    assert_eq!(log.events().len(), 1);

    // A new generation with the same finding is reported again.
    let t2 = translation(vec![(
        ingress,
        report(2, vec![warning("InvalidAnnotation", field)], 1, 1),
    )]);
    w.write_all(&t2).await;
    assert_eq!(log.events().len(), 2);
}

#[tokio::test]
async fn side_by_side_ingresses_get_no_status_and_no_events() {
    let log = ApiLog::default();
    let mut w = writer(&log, Fixture::default(), None);
    w.publish_addresses = vec!["203.0.113.7".into()];
    w.refresh_addresses().await;
    let field = "metadata.annotations[nginx.ingress.kubernetes.io/proxy-read-timeout]";
    let theirs = ObjectReport {
        read_only: true,
        ..report(1, vec![warning("InvalidAnnotation", field)], 1, 1)
    };
    let t = translation(vec![
        (object(Kind::Ingress, "theirs"), theirs),
        (
            object(Kind::Ingress, "ours"),
            report(1, vec![warning("InvalidAnnotation", field)], 1, 1),
        ),
    ]);
    w.write_all(&t).await;
    let patches = log.status_patches();
    assert_eq!(patches.len(), 1, "{patches:#?}");
    assert!(
        patches[0].path.ends_with("/ingresses/ours/status"),
        "{patches:#?}"
    );
    let events = log.events();
    assert_eq!(events.len(), 1, "{events:#?}");
    assert_eq!(events[0].body["regarding"]["name"], "ours");
}

/// Drives the writer's loop: a translation arrives, then the loop stops.
async fn run_once(leading: bool) -> ApiLog {
    let log = ApiLog::default();
    let w = writer(&log, Fixture::default(), None);
    let (reports_tx, reports_rx) = watch::channel(None);
    let (_leader_tx, leader_rx) = watch::channel(leading);
    let (stop_tx, stop_rx) = watch::channel(false);
    let t = translation(vec![(
        object(Kind::Ingress, "web"),
        report(1, vec![warning("InvalidAnnotation", "spec")], 1, 1),
    )]);
    reports_tx.send_replace(Some(Arc::new(t)));
    stop_tx.send_replace(true);
    // The loop handles the translation before the stop, then returns.
    w.run(reports_rx, leader_rx, stop_rx).await;
    log
}

#[tokio::test]
async fn only_the_leader_writes() {
    let leader = run_once(true).await;
    assert_eq!(leader.status_patches().len(), 1);
    assert_eq!(leader.events().len(), 1);

    let follower = run_once(false).await;
    assert!(follower.writes().is_empty(), "{:#?}", follower.writes());
}

fn slice(ready: bool, terminating: bool) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": "portico-abc", "namespace": "ingress",
                     "labels": {"kubernetes.io/service-name": "portico"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["10.0.0.9"],
                       "conditions": {"ready": ready, "terminating": terminating}}]
    })
}

async fn shutdown_with(slices: Vec<Value>) -> ApiLog {
    let log = ApiLog::default();
    let mut w = writer(
        &log,
        Fixture {
            slices,
            ..Default::default()
        },
        Some("ingress/portico"),
    );
    w.publish_addresses = vec!["203.0.113.7".into()];
    w.refresh_addresses().await;
    let t = translation(vec![(
        object(Kind::Ingress, "web"),
        report(1, vec![], 1, 1),
    )]);
    w.write_all(&t).await;
    w.clear_addresses_if_last(Some(Arc::new(t))).await;
    log
}

#[tokio::test]
async fn last_replica_clears_addresses_on_shutdown() {
    // This replica is terminating and no other is ready: clear.
    let log = shutdown_with(vec![slice(false, true)]).await;
    let patches = log.status_patches();
    assert_eq!(patches.len(), 2, "{patches:#?}");
    assert_eq!(
        patches[1].body["status"]["loadBalancer"]["ingress"],
        json!([])
    );
    assert!(log.calls().iter().any(|c| {
        c.method == Method::GET
            && c.path == "/apis/discovery.k8s.io/v1/namespaces/ingress/endpointslices"
            && c.query
                .contains("labelSelector=kubernetes.io%2Fservice-name%3Dportico")
    }));

    // Another replica is still ready behind the Service: keep the addresses.
    let log = shutdown_with(vec![slice(true, false)]).await;
    assert_eq!(log.status_patches().len(), 1);
}

#[tokio::test]
async fn stops_after_the_rebuild_loop_has_ended() {
    let log = ApiLog::default();
    let w = writer(&log, Fixture::default(), None);
    let (reports_tx, reports_rx) = watch::channel(None);
    let (_leader_tx, leader_rx) = watch::channel(true);
    let (stop_tx, stop_rx) = watch::channel(false);
    // `run` drops the rebuild loop before it stops the writer.
    drop(reports_tx);
    stop_tx.send_replace(true);
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        w.run(reports_rx, leader_rx, stop_rx),
    )
    .await
    .expect("the writer handles the stop");
}

#[test]
fn an_unusable_certificate_reference_is_unresolved() {
    let bad_cert = Diagnostic {
        severity: Severity::Error,
        reason: crate::translate::REASON_INVALID_CERTIFICATE_REF,
        field: "spec.policies.tls".into(),
        message: "Secret shop/api-tls: no certificate in tls.crt".into(),
    };
    let status = httproute_status(&report(2, vec![bad_cert], 1, 1), None);
    let resolved = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "ResolvedRefs")
        .unwrap()
        .clone();
    assert_eq!(resolved["status"], "False");
    assert_eq!(resolved["reason"], "InvalidCertificateRef");
    assert!(
        resolved["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.policies.tls: Secret shop/api-tls")
    );
}

/// Gateway API statuses go to each kind's status subresource, server-side
/// applied, and unchanged content is not written again (nested transition
/// times included).
#[tokio::test]
async fn gateway_api_statuses_are_applied_once() {
    let log = ApiLog::default();
    let mut w = writer(&log, Fixture::default(), None);
    w.publish_addresses = vec!["203.0.113.7".into()];
    w.refresh_addresses().await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/fixtures");
    let mut objects = Vec::new();
    for name in ["base.yml", "gateway_grpc.yaml"] {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path).unwrap();
        objects.extend(crate::source::manifests::parse_documents(&path, &text).objects);
    }
    let t = crate::translate::translate(
        &crate::snapshot::Snapshot::from_objects(objects),
        &crate::translate::Settings::default(),
    );
    w.write_all(&t).await;
    let mut paths: Vec<String> = log.status_patches().into_iter().map(|c| c.path).collect();
    paths.sort();
    assert_eq!(
        paths,
        [
            "/apis/gateway.networking.k8s.io/v1/gatewayclasses/portico/status",
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/gateways/gw/status",
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/grpcroutes/bad/status",
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/grpcroutes/echo/status",
            "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/clash/status",
        ]
    );
    let gw = log
        .status_patches()
        .into_iter()
        .find(|c| c.path.ends_with("/gateways/gw/status"))
        .unwrap();
    assert_eq!(gw.body["kind"], "Gateway");
    assert_eq!(
        gw.body["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "203.0.113.7"}])
    );
    assert_eq!(gw.body["status"]["listeners"][0]["attachedRoutes"], 1);

    let before = log.status_patches().len();
    w.write_all(&t).await;
    assert_eq!(log.status_patches().len(), before, "rewritten unchanged");
}

/// A route whose parentRef no longer names a Gateway of ours: the writer
/// applies `status.parents` without our stale entry and with the other
/// controller's; once the route's status shows that, nothing more is
/// written for it.
#[tokio::test]
async fn a_stale_route_parent_of_ours_is_removed() {
    let log = ApiLog::default();
    let mut w = writer(&log, Fixture::default(), None);
    let manifests = |parents: &str| {
        format!(
            r#"apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata: {{name: portico}}
spec: {{controllerName: portico.dev/gateway-controller}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: left, namespace: default}}
spec:
  parentRefs: [{{name: theirs}}]
  rules: [{{backendRefs: [{{name: web, port: 80}}]}}]
status:
  parents: {parents}
"#
        )
    };
    let theirs =
        r#"{parentRef: {name: theirs}, controllerName: example.com/other, conditions: []}"#;
    let ours = r#"{parentRef: {name: gone}, controllerName: portico.dev/gateway-controller, conditions: []}"#;
    let translated = |text: String| {
        let path = std::path::Path::new("route.yaml");
        crate::translate::translate(
            &crate::snapshot::Snapshot::from_objects(
                crate::source::manifests::parse_documents(path, &text).objects,
            ),
            &crate::translate::Settings::default(),
        )
    };
    w.write_all(&translated(manifests(&format!("[{ours}, {theirs}]"))))
        .await;
    let patches = log.status_patches();
    assert_eq!(patches.len(), 2, "{patches:?}");
    let route = patches
        .iter()
        .find(|c| c.path.ends_with("/httproutes/left/status"))
        .expect("the route's status written");
    assert_eq!(
        route.body["status"]["parents"],
        json!([{"parentRef": {"name": "theirs"}, "controllerName": "example.com/other", "conditions": []}])
    );
    // The watch brings the written status back: nothing left to remove.
    w.write_all(&translated(manifests(&format!("[{theirs}]"))))
        .await;
    assert_eq!(log.status_patches().len(), 2);
}
