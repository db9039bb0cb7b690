use super::*;

fn ingress(yaml: &str) -> Arc<Ingress> {
    Arc::new(serde_yaml::from_str(yaml).expect("test Ingress parses"))
}

fn class(name: &str, default: bool) -> Arc<IngressClass> {
    let default = if default {
        format!("annotations: {{{DEFAULT_CLASS_ANNOTATION}: \"true\"}}")
    } else {
        String::new()
    };
    Arc::new(
        serde_yaml::from_str(&format!(
            "metadata: {{name: {name}, {default}}}\nspec: {{controller: k8s.io/ingress-nginx}}"
        ))
        .expect("test IngressClass parses"),
    )
}

fn input() -> Input {
    Input {
        ingresses: vec![
            ingress(
                r#"
metadata:
  name: shop
  namespace: a
  annotations:
    nginx.ingress.kubernetes.io/proxy-read-timeout: "30"
    nginx.ingress.kubernetes.io/use-regex: "true"
    nginx.ingress.kubernetes.io/configuration-snippet: "more_set_headers x: y;"
    nginx.ingress.kubernetes.io/enable-modsecurity: "true"
    nginx.ingress.kubernetes.io/proxy-connect-timeout: "soon"
    nginx.ingress.kubernetes.io/no-such-thing: "1"
    kubernetes.io/ingress.class: nginx
    example.com/owner: team
spec:
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /cart, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
"#,
            ),
            ingress(
                r#"
metadata: {name: blog, namespace: b}
spec:
  ingressClassName: nginx
  rules:
  - host: blog.example
    http:
      paths:
      - {path: /api, pathType: ImplementationSpecific, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /app/, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
"#,
            ),
            ingress(
                r#"
metadata: {name: plain, namespace: b}
spec:
  rules:
  - host: shop.example
    http:
      paths:
      - {path: /exact, pathType: Exact, backend: {service: {name: web, port: {number: 80}}}}
"#,
            ),
            ingress(
                r#"
metadata: {name: theirs, namespace: c}
spec:
  ingressClassName: traefik
  rules:
  - host: other.example
"#,
            ),
        ],
        classes: vec![class("nginx", true), class("traefik", false)],
        services: vec![],
    }
}

fn row<'a>(r: &'a Report, ingress: &str, key: &str) -> &'a AnnotationRow {
    r.ingresses
        .iter()
        .find(|i| i.name == ingress)
        .and_then(|i| i.annotations.iter().find(|a| a.key == key))
        .unwrap_or_else(|| panic!("no row for {ingress} {key}"))
}

#[test]
fn every_annotation_is_classed() {
    let r = build(input(), &["nginx".into()]);
    let n = |k: &str| format!("nginx.ingress.kubernetes.io/{k}");
    assert_eq!(
        row(&r, "shop", &n("proxy-read-timeout")).status,
        Status::Supported
    );
    let regex = row(&r, "shop", &n("use-regex"));
    assert_eq!(regex.status, Status::Partly);
    assert!(regex.detail.contains("PCRE"), "{}", regex.detail);
    assert_eq!(
        row(&r, "shop", &n("configuration-snippet")).status,
        Status::Snippet
    );
    let waf = row(&r, "shop", &n("enable-modsecurity"));
    assert_eq!(waf.status, Status::NotSupported);
    assert!(!waf.detail.is_empty());
    let bad = row(&r, "shop", &n("proxy-connect-timeout"));
    assert_eq!(bad.status, Status::Invalid);
    assert!(bad.detail.contains("soon"), "{}", bad.detail);
    assert_eq!(row(&r, "shop", &n("no-such-thing")).status, Status::Unknown);

    // Other prefixes and the class annotation are not rows.
    let shop = &r.ingresses.iter().find(|i| i.name == "shop").unwrap();
    assert_eq!(shop.annotations.len(), 6);
    assert_eq!(shop.class.as_deref(), Some("nginx"));
}

#[test]
fn classes_select_and_the_default_class_counts() {
    let r = build(input(), &["nginx".into()]);
    let names: Vec<_> = r.ingresses.iter().map(|i| i.name.as_str()).collect();
    // `plain` names no class and falls to the default class, nginx.
    assert_eq!(names, ["shop", "blog", "plain"]);
    let plain = r.ingresses.iter().find(|i| i.name == "plain").unwrap();
    assert_eq!(plain.class.as_deref(), Some("nginx"));

    let all = build(input(), &[]);
    assert_eq!(all.ingresses.len(), 4);
    let none = build(input(), &["haproxy".into()]);
    assert!(none.ingresses.is_empty());
}

#[test]
fn paths_whose_meaning_changes() {
    let r = build(input(), &[]);
    let changes = |name: &str| -> Vec<(String, String)> {
        r.ingresses
            .iter()
            .find(|i| i.name == name)
            .unwrap()
            .path_changes
            .iter()
            .map(|c| (c.path.clone(), c.change.clone()))
            .collect()
    };
    let blog = changes("blog");
    assert_eq!(blog.len(), 2, "{blog:?}");
    assert_eq!(blog[0].0, "/api");
    assert!(blog[0].1.contains("string prefix"), "{}", blog[0].1);
    assert_eq!(blog[1].0, "/app/");
    assert!(blog[1].1.contains("301"), "{}", blog[1].1);

    // `shop` sets use-regex on shop.example: its own Exact path and the
    // Exact path of `plain` on the same host were regexes in ingress-nginx.
    for name in ["shop", "plain"] {
        let c = changes(name);
        assert_eq!(c.len(), 1, "{name}: {c:?}");
        assert!(c[0].1.contains("a/shop sets use-regex"), "{}", c[0].1);
    }
    assert!(changes("theirs").is_empty());
}

#[test]
fn findings_and_the_namespace_summary() {
    let r = build(input(), &["nginx".into()]);
    // No Service `web` was read: the translation says so per path.
    let blog = r.ingresses.iter().find(|i| i.name == "blog").unwrap();
    assert!(
        blog.findings.iter().any(|f| f.reason == "BackendNotFound"),
        "{:?}",
        blog.findings
    );
    // Annotation findings are rows, not repeated as findings.
    let shop = r.ingresses.iter().find(|i| i.name == "shop").unwrap();
    assert!(
        shop.findings
            .iter()
            .all(|f| !f.field.starts_with("metadata.annotations")),
        "{:?}",
        shop.findings
    );

    let ns: Vec<_> = r.namespaces.iter().map(|n| n.namespace.as_str()).collect();
    assert_eq!(ns, ["a", "b"]);
    let a = &r.namespaces[0];
    assert_eq!(a.ingresses, 1);
    assert_eq!(a.annotations.get(&Status::Supported), Some(&1));
    assert_eq!(a.annotations.get(&Status::Snippet), Some(&1));
    assert_eq!(a.path_changes, 1);
    assert_eq!(r.namespaces[1].ingresses, 2);
    assert_eq!(r.namespaces[1].path_changes, 3);
}

#[test]
fn every_format_renders() {
    let r = build(input(), &["nginx".into()]);
    let text = r.text();
    assert!(text.contains("Ingress a/shop (class nginx)"), "{text}");
    assert!(text.contains("snippet (never run)"), "{text}");
    let md = r.markdown();
    assert!(
        md.contains("| `nginx.ingress.kubernetes.io/use-regex` | partly |"),
        "{md}"
    );
    assert!(md.contains("| b | 2 | 3 |"), "{md}");
    let json: serde_json::Value = serde_json::from_str(&r.json()).expect("valid JSON");
    assert_eq!(json["ingresses"][0]["annotations"][0]["status"], "snippet");
    assert_eq!(json["namespaces"][0]["annotations"]["not-supported"], 1);
}

#[test]
fn cluster_text_cannot_break_markdown() {
    assert_eq!(md("a|b`c\nd"), "a\\|b'c d");
}
