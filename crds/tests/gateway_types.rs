//! The Gateway API types are what the pinned kopium generates from the
//! committed upstream CRDs (`crds/gateway-api/generate.sh --check`), and
//! they read the objects users write.

use std::path::Path;
use std::process::Command;

use portico_crds::gateway::{Gateway, GatewayClass, GrpcRoute, HttpRoute, ReferenceGrant};

#[test]
fn regenerating_gives_the_committed_code() {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway-api/generate.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg("--check")
        .output()
        .expect("bash runs");
    assert!(
        out.status.success(),
        "{} --check: {}\n{}(regenerate with crds/gateway-api/generate.sh; kopium comes from make tools)",
        script.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_types_read_what_users_write() {
    let route: HttpRoute = serde_yaml::from_str(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs: [{name: edge, sectionName: https}]
  hostnames: ["shop.example.com"]
  rules:
  - matches: [{path: {type: PathPrefix, value: /api}, headers: [{name: x-canary, value: "1"}]}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {set: [{name: x-env, value: prod}]}
    - type: CORS
      cors: {allowOrigins: ["https://app.example.com"], allowCredentials: true}
    backendRefs: [{name: api, port: 8080, weight: 90}, {name: api-next, port: 8080, weight: 10}]
    timeouts: {request: 10s}
"#,
    )
    .expect("an HTTPRoute parses");
    assert_eq!(
        route.spec.hostnames.as_deref(),
        Some(&["shop.example.com".to_owned()][..])
    );
    let rule = &route.spec.rules.as_ref().expect("rules")[0];
    assert_eq!(rule.backend_refs.as_ref().map(Vec::len), Some(2));
    assert_eq!(rule.filters.as_ref().map(Vec::len), Some(2));

    let gateway: Gateway = serde_yaml::from_str(
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: edge, namespace: infra}
spec:
  gatewayClassName: portico
  listeners:
  - {name: http, protocol: HTTP, port: 80, allowedRoutes: {namespaces: {from: All}}}
  - name: https
    protocol: HTTPS
    port: 443
    hostname: "*.example.com"
    tls: {mode: Terminate, certificateRefs: [{name: wildcard}]}
"#,
    )
    .expect("a Gateway parses");
    assert_eq!(gateway.spec.listeners.len(), 2);

    let class: GatewayClass = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GatewayClass\nmetadata: {name: portico}\nspec: {controllerName: portico.dev/gateway-controller}\n",
    )
    .expect("a GatewayClass parses");
    assert_eq!(class.spec.controller_name, "portico.dev/gateway-controller");

    let grpc: GrpcRoute = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1\nkind: GRPCRoute\nmetadata: {name: echo}\nspec:\n  rules:\n  - matches: [{method: {service: echo.Echo, method: Say}}]\n    backendRefs: [{name: echo, port: 9000}]\n",
    )
    .expect("a GRPCRoute parses");
    assert_eq!(grpc.spec.rules.as_ref().map(Vec::len), Some(1));

    let grant: ReferenceGrant = serde_yaml::from_str(
        "apiVersion: gateway.networking.k8s.io/v1beta1\nkind: ReferenceGrant\nmetadata: {name: allow, namespace: shop}\nspec:\n  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: web}]\n  to: [{group: \"\", kind: Service}]\n",
    )
    .expect("a ReferenceGrant parses");
    assert_eq!(grant.spec.from.len(), 1);
}
