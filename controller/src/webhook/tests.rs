//! `review` on AdmissionReviews as the API server sends them.

use serde_json::{Value, json};

use super::*;

fn admission(kind: (&str, &str, &str), operation: &str, object: Value) -> Vec<u8> {
    let (group, version, kind) = kind;
    serde_json::to_vec(&json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": {"group": group, "version": version, "kind": kind},
            "resource": {"group": group, "version": version, "resource": "ingresses"},
            "operation": operation,
            "userInfo": {"username": "admin"},
            "object": object,
        }
    }))
    .unwrap()
}

const INGRESS: (&str, &str, &str) = ("networking.k8s.io", "v1", "Ingress");

fn ingress(class: &str, annotations: Value) -> Value {
    json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": "shop", "namespace": "web", "annotations": annotations},
        "spec": {
            "ingressClassName": class,
            "rules": [{"host": "shop.test", "http": {"paths": [
                {"path": "/", "pathType": "Prefix",
                 "backend": {"service": {"name": "shop", "port": {"number": 80}}}}
            ]}}]
        }
    })
}

/// The answer as JSON, as the API server reads it.
fn answer(body: &[u8]) -> Value {
    let review = review(body, &Settings::default());
    serde_json::to_value(&review).unwrap()["response"].clone()
}

#[test]
fn a_clean_ingress_is_allowed_although_its_service_does_not_exist() {
    let rsp = answer(&admission(INGRESS, "CREATE", ingress("portico", json!({}))));
    assert_eq!(rsp["allowed"], true, "{rsp}");
    assert_eq!(rsp["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert!(rsp.get("warnings").is_none(), "{rsp}");
}

/// The webhook reads no Secrets and no Services: an Ingress whose policies
/// name them (basic auth's Secret, an error-page backend) is judged on its
/// own values and admitted without a word about the objects it cannot see;
/// a value wrong in itself is still refused.
#[test]
fn policies_naming_other_objects_are_judged_on_their_own_values() {
    let rsp = answer(&admission(
        INGRESS,
        "CREATE",
        ingress(
            "portico",
            json!({
                "nginx.ingress.kubernetes.io/auth-type": "basic",
                "nginx.ingress.kubernetes.io/auth-secret": "users",
                "nginx.ingress.kubernetes.io/custom-http-errors": "404,503",
                "nginx.ingress.kubernetes.io/default-backend": "error-pages",
                "nginx.ingress.kubernetes.io/enable-cors": "true",
            }),
        ),
    ));
    assert_eq!(rsp["allowed"], true, "{rsp}");
    assert!(rsp.get("warnings").is_none(), "{rsp}");

    let rsp = answer(&admission(
        INGRESS,
        "CREATE",
        ingress(
            "portico",
            json!({
                "nginx.ingress.kubernetes.io/auth-type": "basic",
                "nginx.ingress.kubernetes.io/auth-secret": "users",
                "nginx.ingress.kubernetes.io/auth-realm": "a \"quoted\" realm",
            }),
        ),
    ));
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("auth-realm"),
        "{rsp}"
    );
}

#[test]
fn an_invalid_annotation_is_denied_naming_field_and_reason() {
    let bad = ingress(
        "portico",
        json!({"nginx.ingress.kubernetes.io/permanent-redirect": "not a url"}),
    );
    let rsp = answer(&admission(INGRESS, "UPDATE", bad));
    assert_eq!(rsp["allowed"], false, "{rsp}");
    let message = rsp["status"]["message"].as_str().unwrap();
    assert!(
        message.starts_with(
            "metadata.annotations[nginx.ingress.kubernetes.io/permanent-redirect]: InvalidAnnotation"
        ),
        "{message}"
    );
}

#[test]
fn unsupported_and_snippet_annotations_are_allowed_with_warnings() {
    let sloppy = ingress(
        "portico",
        json!({
            "nginx.ingress.kubernetes.io/server-snippet": "return 200;",
            "nginx.ingress.kubernetes.io/proxy-read-timeout": "soon",
        }),
    );
    let rsp = answer(&admission(INGRESS, "CREATE", sloppy));
    assert_eq!(rsp["allowed"], true, "{rsp}");
    let warnings: Vec<&str> = rsp["warnings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w.as_str().unwrap())
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings.iter().any(|w| w.contains("SnippetNotAllowed")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .all(|w| w.chars().count() <= MAX_WARNING_CHARS)
    );
}

#[test]
fn other_classes_deletes_and_other_kinds_are_not_judged() {
    let bad = json!({"nginx.ingress.kubernetes.io/permanent-redirect": "not a url"});
    for body in [
        admission(INGRESS, "CREATE", ingress("nginx", bad.clone())),
        admission(INGRESS, "DELETE", ingress("portico", bad.clone())),
        admission(
            ("", "v1", "ConfigMap"),
            "CREATE",
            json!({"metadata": {"name": "x"}}),
        ),
    ] {
        let rsp = answer(&body);
        assert_eq!(rsp["allowed"], true, "{rsp}");
    }
}

#[test]
fn an_httproute_with_a_framing_header_is_denied() {
    let route = json!({
        "apiVersion": "portico.dev/v1alpha1",
        "kind": "HTTPRoute",
        "metadata": {"name": "api", "namespace": "web"},
        "spec": {
            "hostnames": ["api.test"],
            "rules": [{
                "filters": [{"type": "ResponseHeaderModifier",
                    "responseHeaderModifier": {"set": [{"name": "Content-Length", "value": "0"}]}}],
                "backendRefs": [{"name": "api", "port": 80}]
            }]
        }
    });
    let rsp = answer(&admission(
        ("portico.dev", "v1alpha1", "HTTPRoute"),
        "CREATE",
        route,
    ));
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("content-length")
            || rsp["status"]["message"]
                .as_str()
                .unwrap()
                .contains("Content-Length"),
        "{rsp}"
    );
}

#[test]
fn a_mistyped_object_or_garbage_is_refused_not_panicked_on() {
    let mut wrong = ingress("portico", json!({}));
    wrong["spec"]["rules"] = json!("abc");
    let rsp = answer(&admission(INGRESS, "CREATE", wrong));
    assert_eq!(rsp["allowed"], false, "{rsp}");
    assert!(
        rsp["status"]["message"]
            .as_str()
            .unwrap()
            .contains("spec.rules"),
        "{rsp}"
    );
    for garbage in [
        &b"{"[..],
        b"null",
        b"{\"kind\": \"AdmissionReview\"}",
        &[0xff, 0xfe],
    ] {
        let rsp = answer(garbage);
        assert_eq!(rsp["allowed"], false, "{rsp}");
    }
}
