//! Table-driven translation tests from YAML fixtures in `fixtures/`: one
//! file per rule of Ingress and HTTPRoute semantics and per annotation.
//!
//! A fixture is a multi-document YAML file: the Kubernetes objects, then one
//! `kind: Expect` document (apiVersion `test.portico.dev/v1`) saying which
//! route and rule real requests would get (looked up through the dataplane's
//! own router, so precedence is the one served) and exactly which
//! diagnostics each object gets. `fixtures/base.yml` holds the IngressClass,
//! Services and EndpointSlices every fixture shares.

use std::collections::BTreeMap;
use std::path::Path;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use portico_dataplane::model::Filter;
use portico_dataplane::route::router::{RequestHead, Router};
use serde::Deserialize;
use serde_json::Value;

use std::sync::Arc;

use super::{Memo, Settings, Translation, translate, translate_reusing};
use crate::snapshot::Snapshot;
use crate::source::manifests::parse_documents;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Expect {
    #[allow(dead_code)]
    api_version: String,
    #[allow(dead_code)]
    kind: String,
    #[serde(default)]
    settings: ExpectSettings,
    #[serde(default)]
    requests: Vec<RequestCase>,
    /// Every diagnostic of every object, exactly.
    #[serde(default)]
    diagnostics: Vec<DiagnosticCase>,
    /// Objects served (reported), when given.
    #[serde(default)]
    served: Option<Vec<String>>,
    /// Objects served read-only (side by side), when given.
    #[serde(default)]
    read_only: Option<Vec<String>>,
    /// TLS bindings as `ns/secret: [hosts]`, when given.
    #[serde(default)]
    tls: Option<BTreeMap<String, Vec<String>>>,
    /// Passthrough bindings as `name: [endpoints]` by host, when given.
    #[serde(default)]
    passthrough: Option<BTreeMap<String, Vec<String>>>,
    /// A subset of the default backend of unmatched requests (JSON form;
    /// `null`: none), when given.
    #[serde(default)]
    default_backend: Option<Value>,
    /// A subset of the Gateway API results: `classes` by name, `gateways`
    /// by `ns/name`, `routes` by `Kind ns/name` (JSON form), when given.
    #[serde(default)]
    gateway: Option<Value>,
    /// Gateway ports as `port: {protocol, routes: {id: [hostnames]}}`,
    /// exactly, when given.
    #[serde(default)]
    ports: Option<Value>,
    /// Gateway port certificates as `port: {default, bindings: {ns/secret:
    /// [hosts]}}`, exactly, when given.
    #[serde(default)]
    port_tls: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ExpectSettings {
    #[serde(default)]
    watch_ingress_without_class: bool,
    #[serde(default)]
    ingress_class: Option<String>,
    #[serde(default)]
    ssl_passthrough: bool,
    #[serde(default)]
    watch_ingress_class: Vec<String>,
    /// `--default-backend-service` as `namespace/name`.
    #[serde(default)]
    default_backend_service: Option<String>,
    #[serde(default)]
    custom_http_errors: Vec<u16>,
    #[serde(default)]
    allow_cross_namespace_auth_secret: bool,
    /// `--global-auth-url`.
    #[serde(default)]
    global_auth_url: Option<String>,
    /// `--gateway-port-offset`.
    #[serde(default)]
    gateway_port_offset: u16,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RequestCase {
    host: String,
    path: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    /// The route id that serves it; `null`: no route (404).
    route: Option<String>,
    /// A subset of the matched rule's JSON form (`/debug/routes` shape).
    #[serde(default)]
    rule: Option<Value>,
    /// A subset of the matched rule's HTTPS filters (JSON form), as
    /// `{redirect, hsts, client_auth}`: its `https_redirect`, `hsts` and
    /// `client_cert` filters, `null` for one it does not have.
    #[serde(default)]
    https: Option<Value>,
}

#[derive(Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(deny_unknown_fields)]
struct DiagnosticCase {
    object: String,
    severity: String,
    reason: String,
    field: String,
}

fn run_fixture(path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).map_err(|e| e.to_string())?;
    let parsed = parse_documents(path, &text);
    if !parsed.errors.is_empty() {
        return Err(format!("fixture does not parse: {:?}", parsed.errors));
    }
    let expect_doc = serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .find(|v| v.get("kind").and_then(|k| k.as_str()) == Some("Expect"))
        .ok_or("no Expect document")?;
    let expect: Expect = serde_yaml::from_value(expect_doc).map_err(|e| format!("Expect: {e}"))?;
    let mut settings = Settings {
        watch_ingress_without_class: expect.settings.watch_ingress_without_class,
        ..Settings::default()
    };
    if let Some(c) = &expect.settings.ingress_class {
        settings.ingress_class = c.clone();
    }
    settings.ssl_passthrough = expect.settings.ssl_passthrough;
    settings.default_backend_service = expect.settings.default_backend_service.as_ref().map(|s| {
        let (namespace, name) = s.split_once('/').unwrap_or(("", s));
        super::backends::ServiceRef {
            namespace: namespace.into(),
            name: name.into(),
            port: None,
        }
    });
    settings.custom_http_errors = expect.settings.custom_http_errors.clone();
    settings.allow_cross_namespace_auth_secret = expect.settings.allow_cross_namespace_auth_secret;
    settings.global_auth = expect.settings.global_auth_url.as_deref().map(|url| {
        portico_dataplane::model::ExternalAuth::new(
            portico_dataplane::external_auth::Template::service_url(url).expect("globalAuthUrl"),
        )
    });
    settings.gateway_port_offset = expect.settings.gateway_port_offset;
    settings.side_by_side_classes = expect
        .settings
        .watch_ingress_class
        .iter()
        .cloned()
        .collect();
    // Every fixture sees the shared objects of `base.yml` first.
    let base_path = path.with_file_name("base.yml");
    let base_text = std::fs::read_to_string(&base_path).map_err(|e| e.to_string())?;
    let base = parse_documents(&base_path, &base_text);
    if !base.errors.is_empty() {
        return Err(format!("base.yml does not parse: {:?}", base.errors));
    }
    let snap = Snapshot::from_objects(base.objects.into_iter().chain(parsed.objects));
    let t = translate(&snap, &settings);
    // Pure: the same input gives the same output.
    if translate(&snap, &settings) != t {
        return Err("translation is not deterministic".into());
    }
    incremental_as_full(&snap, &settings, &t)?;
    check_requests(&t, &expect.requests)?;
    check_diagnostics(&t, &expect.diagnostics)?;
    if let Some(served) = &expect.served {
        let got: Vec<String> = t.reports.keys().map(|o| o.to_string()).collect();
        if &got != served {
            return Err(format!("served objects: got {got:?}, want {served:?}"));
        }
    }
    if let Some(want) = &expect.read_only {
        let got: Vec<String> = t
            .reports
            .iter()
            .filter(|(_, r)| r.read_only)
            .map(|(o, _)| o.to_string())
            .collect();
        if &got != want {
            return Err(format!("read-only objects: got {got:?}, want {want:?}"));
        }
    }
    if let Some(want) = &expect.passthrough {
        let got: BTreeMap<String, Vec<String>> = t
            .passthrough
            .iter()
            .flat_map(|b| {
                b.hosts.iter().map(|h| {
                    let eps = b.endpoints.iter().map(|e| e.to_string()).collect();
                    (h.to_string(), eps)
                })
            })
            .collect();
        if &got != want {
            return Err(format!("passthrough: got {got:?}, want {want:?}"));
        }
    }
    if let Some(want) = &expect.default_backend {
        let got = serde_json::to_value(&t.config.default_backend).map_err(|e| e.to_string())?;
        subset(want, &got, "default_backend")?;
    }
    if let Some(want) = &expect.gateway {
        subset(want, &gateway_json(&t.gateway)?, "gateway")?;
    }
    if let Some(want) = &expect.ports {
        let got: serde_json::Map<String, Value> = t
            .config
            .ports
            .iter()
            .map(|p| {
                let routes: serde_json::Map<String, Value> = p
                    .routes
                    .iter()
                    .map(|r| {
                        let hosts = r.hostnames.iter().map(|h| Value::from(h.to_string()));
                        (r.id.clone(), Value::Array(hosts.collect()))
                    })
                    .collect();
                let v =
                    serde_json::json!({"protocol": format!("{:?}", p.protocol), "routes": routes});
                (p.port.to_string(), v)
            })
            .collect();
        let got = Value::Object(got);
        if &got != want {
            return Err(format!("ports: got {got}, want {want}"));
        }
    }
    if let Some(want) = &expect.port_tls {
        let got: serde_json::Map<String, Value> = t
            .port_tls
            .iter()
            .map(|p| {
                let bindings: serde_json::Map<String, Value> = p
                    .bindings
                    .iter()
                    .map(|(hosts, k)| (format!("{}/{}", k.0, k.1), serde_json::json!(hosts)))
                    .collect();
                let default = p.default.as_ref().map(|k| format!("{}/{}", k.0, k.1));
                (
                    p.port.to_string(),
                    serde_json::json!({"default": default, "bindings": bindings}),
                )
            })
            .collect();
        let got = Value::Object(got);
        if &got != want {
            return Err(format!("portTls: got {got}, want {want}"));
        }
    }
    if let Some(tls) = &expect.tls {
        let got: BTreeMap<String, Vec<String>> = t
            .tls
            .iter()
            .map(|b| (format!("{}/{}", b.secret.0, b.secret.1), b.hosts.clone()))
            .collect();
        if &got != tls {
            return Err(format!("tls: got {got:?}, want {tls:?}"));
        }
    }
    Ok(())
}

/// The Gateway API results with string keys, for [`subset`].
fn gateway_json(r: &super::gateway::Results) -> Result<Value, String> {
    let mut classes = serde_json::Map::new();
    for (k, v) in &r.classes {
        classes.insert(k.clone(), to_json(v)?);
    }
    let mut gateways = serde_json::Map::new();
    for (k, v) in &r.gateways {
        gateways.insert(format!("{}/{}", k.0, k.1), to_json(v)?);
    }
    let mut routes = serde_json::Map::new();
    for (k, v) in &r.routes {
        routes.insert(
            format!("{} {}/{}", k.kind.as_str(), k.namespace, k.name),
            to_json(v)?,
        );
    }
    Ok(serde_json::json!({"classes": classes, "gateways": gateways, "routes": routes}))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, String> {
    serde_json::to_value(v).map_err(|e| e.to_string())
}

fn check_requests(t: &Translation, cases: &[RequestCase]) -> Result<(), String> {
    let (router, errors) = Router::new(&t.config);
    if !errors.is_empty() {
        return Err(format!("dataplane rejected rules: {errors:?}"));
    }
    dataplane_accepts_every_field(t)?;
    for c in cases {
        let (path, query) = match c.path.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (c.path.as_str(), None),
        };
        let method = c
            .method
            .as_deref()
            .map_or(Ok(Method::GET), |m| Method::from_bytes(m.as_bytes()))
            .map_err(|e| e.to_string())?;
        let mut headers = HeaderMap::new();
        for (k, v) in &c.headers {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).map_err(|e| e.to_string())?,
                HeaderValue::from_str(v).map_err(|e| e.to_string())?,
            );
        }
        let head = RequestHead {
            host: &c.host,
            path,
            query,
            method: &method,
            headers: &headers,
        };
        let what = format!("{} {}{}", method, c.host, c.path);
        let hit = router.lookup(&head);
        let got_route = hit.map(|h| t.config.routes[h.route].id.clone());
        if got_route != c.route {
            return Err(format!("{what}: route {got_route:?}, want {:?}", c.route));
        }
        if let (Some(want), Some(h)) = (&c.https, hit) {
            let got = https_filters(&t.config.routes[h.route].rules[h.rule])?;
            subset(want, &got, "https")?;
        }
        if let (Some(want), Some(h)) = (&c.rule, hit) {
            let rule = &t.config.routes[h.route].rules[h.rule];
            let got = serde_json::to_value(rule).map_err(|e| e.to_string())?;
            if let Err(at) = subset(want, &got, "rule") {
                return Err(format!(
                    "{what}: {at}\n  got rule: {}",
                    serde_json::to_string(&got).unwrap_or_default()
                ));
            }
        }
    }
    Ok(())
}

/// A rule's HTTPS filters in one object: see [`RequestCase::https`].
fn https_filters(rule: &portico_dataplane::model::Rule) -> Result<Value, String> {
    let mut out = serde_json::Map::new();
    for key in ["redirect", "hsts", "client_auth"] {
        out.insert(key.into(), Value::Null);
    }
    for f in &rule.chain {
        let (key, value) = match f {
            Filter::HttpsRedirect(r) => ("redirect", serde_json::to_value(r)),
            Filter::Hsts(h) => ("hsts", serde_json::to_value(h)),
            Filter::ClientCert(a) => ("client_auth", serde_json::to_value(a)),
            _ => continue,
        };
        out.insert(key.into(), value.map_err(|e| e.to_string())?);
    }
    Ok(Value::Object(out))
}

/// Translation never hands the dataplane what its table build would leave
/// out or its requests answer 400 for: those are reported on the object.
fn dataplane_accepts_every_field(t: &Translation) -> Result<(), String> {
    use portico_dataplane::model::Action;
    for route in &t.config.routes {
        for (i, rule) in route.rules.iter().enumerate() {
            let at = format!("{} rules[{i}]", route.id);
            for f in &rule.chain {
                let (Filter::RequestHeaders(m) | Filter::ResponseHeaders(m)) = f else {
                    continue;
                };
                let refused = m.clone().retain_user_settable();
                if !refused.is_empty() {
                    return Err(format!(
                        "{at}: reserved headers reach the table: {refused:?}"
                    ));
                }
            }
            let invalid = match &rule.action {
                Action::Redirect(r) => r.check().err(),
                Action::Forward(f) => f.rewrite.as_ref().and_then(|r| r.check().err()),
                Action::Deny { .. } => None,
            };
            if let Some(e) = invalid {
                return Err(format!("{at}: the proxy could not send {e}"));
            }
        }
    }
    Ok(())
}

/// `want` is contained in `got`: object keys recursively, arrays exactly by
/// length and element-wise.
fn subset(want: &Value, got: &Value, at: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                let gv = g.get(k).unwrap_or(&Value::Null);
                subset(wv, gv, &format!("{at}.{k}"))?;
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .try_for_each(|(i, (wv, gv))| subset(wv, gv, &format!("{at}[{i}]"))),
        _ if want == got => Ok(()),
        _ => Err(format!("{at}: want {want}, got {got}")),
    }
}

fn check_diagnostics(t: &Translation, want: &[DiagnosticCase]) -> Result<(), String> {
    let mut got: Vec<DiagnosticCase> = t
        .reports
        .iter()
        .flat_map(|(obj, r)| {
            r.diagnostics.iter().map(move |d| DiagnosticCase {
                object: obj.to_string(),
                severity: d.severity.to_string(),
                reason: d.reason.to_owned(),
                field: d.field.clone(),
            })
        })
        .collect();
    got.sort();
    let mut want: Vec<&DiagnosticCase> = want.iter().collect();
    want.sort();
    let got_refs: Vec<&DiagnosticCase> = got.iter().collect();
    if got_refs != want {
        let messages: Vec<String> = t
            .reports
            .iter()
            .flat_map(|(o, r)| r.diagnostics.iter().map(move |d| format!("{o}: {d}")))
            .collect();
        return Err(format!(
            "diagnostics:\n  got  {got:?}\n  want {want:?}\n  messages: {messages:#?}"
        ));
    }
    Ok(())
}

/// Incremental translation gives `full` for `snap`: from an empty memo,
/// from one that kept every Ingress, and from one that finds each Ingress
/// in turn a new object (the others kept); then, for each Service in turn,
/// with its endpoints moved and with it gone, against a full translation
/// of that snapshot (a part that looked the Service up without noting it
/// would keep the old endpoints).
fn incremental_as_full(
    snap: &Snapshot,
    settings: &Settings,
    full: &Translation,
) -> Result<(), String> {
    let mut memo = Memo::default();
    for round in ["empty", "warm"] {
        if translate_reusing(snap, settings, &mut memo) != *full {
            return Err(format!(
                "incremental translation from a {round} memo differs"
            ));
        }
    }
    for i in 0..snap.ingresses.len() {
        let mut edited = snap.clone();
        edited.ingresses[i] = Arc::new((*snap.ingresses[i]).clone());
        if translate_reusing(&edited, settings, &mut memo) != *full {
            let name = snap.ingresses[i].metadata.name.clone().unwrap_or_default();
            return Err(format!(
                "incremental translation with Ingress {name} new differs"
            ));
        }
    }
    // Routes: a warm memo keeps every one; then each a new object in turn
    // (the memo translates it again, a Gateway API route is placed anew;
    // the others are kept).
    let gateway_routes = snap.gateway_http_routes.len() + snap.grpc_routes.len();
    let routes = snap.http_routes.len() + gateway_routes;
    if routes > 0 && translate_reusing(snap, settings, &mut memo) != *full {
        return Err("incremental translation of a warm route memo differs".into());
    }
    if memo.reused_routes() != routes {
        return Err(format!(
            "a warm memo reused {} of {routes} routes",
            memo.reused_routes()
        ));
    }
    // `portico.dev` HTTPRoutes, each a new object in turn.
    for i in 0..snap.http_routes.len() {
        let mut edited = snap.clone();
        edited.http_routes[i] = Arc::new((*snap.http_routes[i]).clone());
        if translate_reusing(&edited, settings, &mut memo) != *full {
            let name = snap.http_routes[i]
                .metadata
                .name
                .clone()
                .unwrap_or_default();
            return Err(format!(
                "incremental translation with HTTPRoute {name} new differs"
            ));
        }
    }
    for i in 0..gateway_routes {
        let mut edited = snap.clone();
        let name = if let Some(r) = edited.gateway_http_routes.get_mut(i) {
            *r = Arc::new((**r).clone());
            r.metadata.name.clone()
        } else {
            let r = &mut edited.grpc_routes[i - snap.gateway_http_routes.len()];
            *r = Arc::new((**r).clone());
            r.metadata.name.clone()
        };
        if translate_reusing(&edited, settings, &mut memo) != *full {
            return Err(format!(
                "incremental translation with route {} new differs",
                name.unwrap_or_default()
            ));
        }
    }
    // Each Secret and IngressClass gone, then back: a part that read one
    // must not be kept (certificates, auth files, CA bundles; the class
    // that makes an Ingress ours).
    for key in snap.secrets.keys() {
        let mut gone = snap.clone();
        gone.secrets.remove(key);
        for (change, edited) in [("gone", gone), ("back", snap.clone())] {
            if translate_reusing(&edited, settings, &mut memo) != translate(&edited, settings) {
                return Err(format!(
                    "incremental translation with Secret {}/{} {change} differs",
                    key.0, key.1
                ));
            }
        }
    }
    for name in snap.ingress_classes.keys() {
        let mut gone = snap.clone();
        gone.ingress_classes.remove(name);
        for (change, edited) in [("gone", gone), ("back", snap.clone())] {
            if translate_reusing(&edited, settings, &mut memo) != translate(&edited, settings) {
                return Err(format!(
                    "incremental translation with IngressClass {name} {change} differs"
                ));
            }
        }
    }
    // A ReferenceGrant new, then gone: routes read every one.
    for i in 0..snap.reference_grants.len() {
        let mut renewed = snap.clone();
        renewed.reference_grants[i] = Arc::new((*snap.reference_grants[i]).clone());
        let mut gone = snap.clone();
        gone.reference_grants.remove(i);
        for (change, edited) in [("new", renewed), ("gone", gone), ("back", snap.clone())] {
            if translate_reusing(&edited, settings, &mut memo) != translate(&edited, settings) {
                return Err(format!(
                    "incremental translation with ReferenceGrant {i} {change} differs"
                ));
            }
        }
    }
    for key in snap.services.keys() {
        let mut moved = snap.clone();
        if let Some(slices) = moved.endpoint_slices.get_mut(key) {
            for slice in slices.iter_mut() {
                let mut s = (**slice).clone();
                for (i, ep) in s.endpoints.iter_mut().enumerate() {
                    ep.addresses = vec![format!("127.0.9.{}", i % 250 + 1)];
                }
                *slice = Arc::new(s);
            }
        }
        let mut gone = snap.clone();
        gone.services.remove(key);
        gone.endpoint_slices.remove(key);
        for (change, edited) in [
            ("endpoints moved", moved),
            ("gone", gone),
            ("back", snap.clone()),
        ] {
            if translate_reusing(&edited, settings, &mut memo) != translate(&edited, settings) {
                return Err(format!(
                    "incremental translation with Service {}/{} {change} differs",
                    key.0, key.1
                ));
            }
        }
    }
    Ok(())
}

/// A warm memo hands each unchanged route over by `Arc`, so translation,
/// memo and table share one copy and the table build recognises it.
#[test]
fn a_warm_memo_hands_unchanged_routes_over_shared() {
    let snap = fixture_snapshot(&["base.yml", "ingress_paths.yaml"]);
    let settings = Settings::default();
    let mut memo = Memo::default();
    let first = translate_reusing(&snap, &settings, &mut memo);
    let second = translate_reusing(&snap, &settings, &mut memo);
    assert!(!first.config.routes.is_empty(), "the case needs routes");
    assert_eq!(first.config.routes.len(), second.config.routes.len());
    for (a, b) in first.config.routes.iter().zip(&second.config.routes) {
        assert!(Arc::ptr_eq(a, b), "{} copied", a.id);
    }
}

/// A change to one Service's endpoints translates again only the
/// Ingresses that looked that Service up, found or not: the others are
/// taken from the memo, and the result equals a full translation.
#[test]
fn an_endpoint_change_translates_only_the_ingresses_that_read_the_service() {
    let object = |yaml: &str| parse_documents(Path::new("case.yaml"), yaml).objects;
    let ingress = |name: &str, service: &str| {
        object(&format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  ingressClassName: portico\n  rules:\n  - host: {name}.example\n    http:\n      paths:\n      - {{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}\n"
        ))
    };
    let service = |name: &str, last_octet: u8| {
        object(&format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{name: http, port: 80}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-a, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"127.0.0.{last_octet}\"]}}]\n"
        ))
    };
    let class = object(
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: portico}\nspec: {controller: portico.dev/ingress-controller}\n",
    );
    let ingresses: Vec<_> = [("a1", "a"), ("a2", "a"), ("b1", "b"), ("c1", "c")]
        .iter()
        .flat_map(|(name, svc)| ingress(name, svc))
        .collect();
    // Each parsed once: an unchanged object is the same `Arc`, as the
    // watch caches and the manifest directory keep it.
    let (a, b2, b9, c) = (
        service("a", 1),
        service("b", 2),
        service("b", 9),
        service("c", 3),
    );
    let snapshot = |b: &[crate::snapshot::Object], with_c: bool| {
        let mut objects = class.clone();
        objects.extend(ingresses.iter().cloned());
        objects.extend(a.iter().cloned());
        objects.extend(b.iter().cloned());
        if with_c {
            objects.extend(c.iter().cloned());
        }
        Snapshot::from_objects(objects)
    };
    let endpoint_of = |t: &Translation, id: &str| {
        let route = t.config.routes.iter().find(|r| r.id.ends_with(id))?;
        match &route.rules.first()?.action {
            portico_dataplane::model::Action::Forward(f) => {
                Some(f.backends.first()?.endpoints.first()?.to_string())
            }
            _ => None,
        }
    };
    let settings = Settings::default();
    let mut memo = Memo::default();
    let first = snapshot(&b2, false);
    translate_reusing(&first, &settings, &mut memo);
    assert_eq!(memo.reused(), 0);

    // b's endpoint moves: only b1 is translated again. Then c, looked up
    // by c1 and missing so far, appears: c1 is served.
    for (snap, kept, ingress, endpoint) in [
        (
            snapshot(&b9, false),
            "a1, a2 and c1",
            "/b1",
            "127.0.0.9:8080",
        ),
        (
            snapshot(&b9, true),
            "a1, a2 and b1",
            "/c1",
            "127.0.0.3:8080",
        ),
    ] {
        let t = translate_reusing(&snap, &settings, &mut memo);
        assert!(
            t == translate(&snap, &settings),
            "{ingress}: differs from a full translation"
        );
        assert_eq!(memo.reused(), 3, "{kept} kept");
        assert_eq!(endpoint_of(&t, ingress).as_deref(), Some(endpoint));
    }
}

/// A sequence of edits, each fixture's objects in turn beside the same
/// shared objects and a few Ingresses kept from step to step (their
/// Service's endpoints changed at each), then one of those edited: after
/// each, the incremental translation equals a full one
/// (table config, diagnostics, statuses, everything), and the unchanged
/// Ingresses were taken from the memo.
#[test]
fn incremental_translation_equals_a_full_one_after_every_edit() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/fixtures");
    let read = |path: &Path| {
        let text = std::fs::read_to_string(path).expect("fixture");
        parse_documents(path, &text).objects
    };
    let base = read(&dir.join("base.yml"));
    let kept_yaml = |i: usize, path: &str| {
        format!(
            "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: kept{i}, namespace: default}}\nspec:\n  ingressClassName: portico\n  rules:\n  - host: kept{i}.example\n    http:\n      paths:\n      - {{path: {path}, pathType: Prefix, backend: {{service: {{name: kept, port: {{number: 80}}}}}}}}\n"
        )
    };
    let kept_object = |i: usize, path: &str| {
        let yaml = kept_yaml(i, path);
        let mut objects = parse_documents(Path::new("kept.yaml"), &yaml).objects;
        assert_eq!(objects.len(), 1, "{yaml}");
        objects.remove(0)
    };
    let mut kept: Vec<_> = (0..4).map(|i| kept_object(i, "/")).collect();
    // The kept Ingresses' Service, whose endpoints change at every step.
    let object = |yaml: &str| parse_documents(Path::new("kept.yaml"), yaml).objects;
    let service = object(
        "apiVersion: v1\nkind: Service\nmetadata: {name: kept, namespace: default}\nspec: {ports: [{name: http, port: 80}]}\n",
    );
    let endpoints = |step: usize| {
        object(&format!(
            "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: kept-a, namespace: default, labels: {{kubernetes.io/service-name: kept}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"10.9.0.{}\"]}}]\n",
            step % 250 + 1
        ))
    };
    let paths = fixture_paths(&dir);
    let settings = Settings::default();
    let mut memo = Memo::default();
    let mut failures = Vec::new();
    for (step, path) in paths.iter().enumerate() {
        let mut fixture = read(path);
        fixture.extend(service.iter().cloned());
        fixture.extend(endpoints(step));
        for edit in [false, true] {
            if edit {
                kept[step % 4] = kept_object(step % 4, &format!("/step{step}"));
            }
            let objects = base.iter().chain(&kept).chain(&fixture).cloned();
            let snap = Snapshot::from_objects(objects);
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            if translate_reusing(&snap, &settings, &mut memo) != translate(&snap, &settings) {
                failures.push(format!("{name} (kept Ingress edited: {edit})"));
            }
            // Only one kept Ingress changed since the step before.
            if edit && memo.reused() < 3 {
                failures.push(format!("{name}: {} Ingresses reused", memo.reused()));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// One snapshot of the objects of the named fixture files.
fn fixture_snapshot(names: &[&str]) -> Snapshot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/fixtures");
    Snapshot::from_objects(names.iter().flat_map(|name| {
        let text = std::fs::read_to_string(dir.join(name)).expect("fixture");
        parse_documents(Path::new(name), &text).objects
    }))
}

/// The fixture files (`*.yaml`; `base.yml` is shared by all) in order.
fn fixture_paths(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .expect("fixtures dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    paths.sort();
    paths
}

#[test]
fn fixtures() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/translate/fixtures");
    let paths = fixture_paths(&dir);
    assert!(paths.len() >= 10, "fixtures missing from {}", dir.display());
    let failures: Vec<String> = paths
        .iter()
        .filter_map(|p| {
            run_fixture(p).err().map(|e| {
                format!(
                    "{}: {e}",
                    p.file_name().unwrap_or_default().to_string_lossy()
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} fixtures failed:\n{}",
        failures.len(),
        paths.len(),
        failures.join("\n\n")
    );
}

/// What happens instead of an invalid annotation is said once: parsing
/// says it, and translation adds it only where parsing did not.
#[test]
fn an_annotation_finding_says_its_fallback_once() {
    let annotations = [
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "soon"),
        (
            "nginx.ingress.kubernetes.io/permanent-redirect",
            "not a url",
        ),
        ("nginx.ingress.kubernetes.io/canary-weight", "10"),
        ("nginx.ingress.kubernetes.io/auth-type", "basic"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .into();
    let parsed = crate::annotations::parse(&annotations);
    assert!(parsed.diagnostics.len() >= 4, "{:#?}", parsed.diagnostics);
    for d in &parsed.diagnostics {
        let m = super::ingress::annotation_diagnostic(d).message;
        assert!(m.matches("ignored").count() <= 1, "{m}");
        assert!(m.matches("answer 503").count() <= 1, "{m}");
    }
}

/// Conflicts are found by path, method and conditions in any order; a match
/// that differs in any of them is another match, not a conflict.
#[test]
fn match_signatures_ignore_condition_order_only() {
    use portico_dataplane::model::{HeaderMatch, PathMatch, QueryMatch, RouteMatch, ValueMatch};
    let header = |n: &str, v: &str| HeaderMatch {
        name: http::HeaderName::from_bytes(n.as_bytes()).unwrap(),
        value: ValueMatch::Exact(v.into()),
    };
    let query = |n: &str| QueryMatch {
        name: n.into(),
        value: ValueMatch::Exact("1".into()),
    };
    let m = |headers: Vec<HeaderMatch>, query: Vec<QueryMatch>, method: Option<http::Method>| {
        RouteMatch {
            path: PathMatch::Prefix("/a".into()),
            headers,
            query,
            method,
        }
    };
    let ab = m(
        vec![header("x-a", "1"), header("x-b", "2")],
        vec![query("q"), query("r")],
        None,
    );
    let ba = m(
        vec![header("x-b", "2"), header("x-a", "1")],
        vec![query("r"), query("q")],
        None,
    );
    assert_eq!(super::match_signature(&ab), super::match_signature(&ba));
    let plain = m(vec![], vec![], None);
    let get = m(vec![], vec![], Some(http::Method::GET));
    let other_value = m(
        vec![header("x-a", "2"), header("x-b", "2")],
        vec![query("q"), query("r")],
        None,
    );
    let other_path = RouteMatch {
        path: PathMatch::Exact("/a".into()),
        ..plain.clone()
    };
    for other in [&plain, &get, &other_value, &other_path] {
        assert_ne!(
            super::match_signature(&ab),
            super::match_signature(other),
            "{other:?}"
        );
    }
    assert_ne!(super::match_signature(&plain), super::match_signature(&get));
    assert_ne!(
        super::match_signature(&plain),
        super::match_signature(&other_path)
    );
}

/// An edit to a Gateway API object (a route, the Gateway) reads nothing an
/// Ingress's translation reads: every Ingress is taken from the memo, and
/// every route but the edited one.
#[test]
fn a_gateway_api_edit_keeps_every_ingress() {
    let snap = fixture_snapshot(&["base.yml", "ingress_paths.yaml", "gateway_hostnames.yaml"]);
    let settings = Settings::default();
    let mut memo = Memo::default();
    translate_reusing(&snap, &settings, &mut memo);
    translate_reusing(&snap, &settings, &mut memo);
    let (ingresses, routes) = (memo.reused(), memo.reused_routes());
    assert!(
        ingresses > 0 && routes > 1,
        "the case needs both kinds: {ingresses} Ingresses, {routes} routes"
    );
    let mut edited = snap.clone();
    edited.gateway_http_routes[0] = Arc::new((*snap.gateway_http_routes[0]).clone());
    edited.gateways[0] = Arc::new((*snap.gateways[0]).clone());
    let t = translate_reusing(&edited, &settings, &mut memo);
    assert!(
        t == translate(&edited, &settings),
        "differs from a full translation"
    );
    assert_eq!(memo.reused(), ingresses, "Ingresses translated again");
    assert_eq!(memo.reused_routes(), routes - 1, "routes translated again");
}

/// The settings are an input of every kept part: a memo filled under one
/// set of settings gives, under another, what a full translation gives
/// (here HSTS on a `portico.dev` HTTPRoute with TLS, which follows
/// `--hsts`).
#[test]
fn a_memo_follows_a_change_of_settings() {
    let objects = parse_documents(
        Path::new("case.yaml"),
        "apiVersion: portico.dev/v1alpha1\nkind: HTTPRoute\nmetadata: {name: secure, namespace: default}\nspec:\n  hostnames: [secure.test]\n  policies: {tls: {secretName: secure-tls}}\n  rules: [{matches: [{path: {type: PathPrefix, value: /}}], backendRefs: [{name: web, port: 80}]}]\n",
    )
    .objects;
    let snap = Snapshot::from_objects(objects);
    let mut memo = Memo::default();
    let on = Settings::default();
    let off = Settings {
        hsts_enabled: false,
        ..Settings::default()
    };
    assert!(on.hsts_enabled);
    for settings in [&on, &off, &on] {
        let t = translate_reusing(&snap, settings, &mut memo);
        assert!(
            t == translate(&snap, settings),
            "hsts {}: differs from a full translation",
            settings.hsts_enabled
        );
    }
}
