//! The generated CRD is structural, carries its validation where it belongs,
//! and agrees with the defaults the Rust helpers apply.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use portico_crds::{DEFAULT_PATH, DEFAULT_REDIRECT_STATUS_CODE, DEFAULT_WEIGHT, GROUP, VERSION};
use serde_json::{Value, json};

fn crd() -> CustomResourceDefinition {
    let crds = portico_crds::crds();
    assert_eq!(crds.len(), 1);
    crds.into_iter().next().unwrap()
}

fn schema() -> Value {
    let crd = crd();
    let version = &crd.spec.versions[0];
    let schema = version
        .schema
        .as_ref()
        .unwrap()
        .open_api_v3_schema
        .as_ref()
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

/// The schema node at a dotted path of property names; `[]` steps into a
/// list's items: `spec.rules[].matches[].path`.
fn node<'a>(schema: &'a Value, path: &str) -> &'a Value {
    let mut at = schema;
    for part in path.split('.') {
        let (name, items) = match part.strip_suffix("[]") {
            Some(name) => (name, true),
            None => (part, false),
        };
        at = at
            .get("properties")
            .and_then(|p| p.get(name))
            .unwrap_or_else(|| panic!("no property {name} on the way to {path}"));
        if items {
            at = at
                .get("items")
                .unwrap_or_else(|| panic!("{name} in {path} is not a list"));
        }
    }
    at
}

/// The CEL rules (`x-kubernetes-validations[].rule`) at a schema node.
fn rules(node: &Value) -> Vec<&str> {
    node.get("x-kubernetes-validations")
        .and_then(Value::as_array)
        .map(|rules| rules.iter().map(|r| r["rule"].as_str().unwrap()).collect())
        .unwrap_or_default()
}

/// Calls `f` with every schema node below (and including) `node` and its path.
fn walk(node: &Value, path: &str, f: &mut dyn FnMut(&str, &Value)) {
    f(path, node);
    if let Some(props) = node.get("properties").and_then(Value::as_object) {
        for (name, child) in props {
            walk(child, &format!("{path}.{name}"), f);
        }
    }
    if let Some(items) = node.get("items") {
        walk(items, &format!("{path}[]"), f);
    }
    if let Some(extra) = node.get("additionalProperties").filter(|v| v.is_object()) {
        walk(extra, &format!("{path}{{}}"), f);
    }
}

#[test]
fn crd_names_scope_and_version() {
    let crd = crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("httproutes.portico.dev"));
    assert_eq!(crd.spec.group, GROUP);
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "HTTPRoute");
    assert_eq!(crd.spec.names.plural, "httproutes");
    assert_eq!(
        crd.spec.names.short_names.as_deref(),
        Some(&["phr".to_owned()][..])
    );

    let [version] = crd.spec.versions.as_slice() else {
        panic!("one version expected");
    };
    assert_eq!(version.name, VERSION);
    assert!(version.served && version.storage);
    let subresources = version.subresources.as_ref().unwrap();
    assert!(subresources.status.is_some());
    assert!(subresources.scale.is_none());

    let columns: Vec<(&str, &str, &str)> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|c| (c.name.as_str(), c.type_.as_str(), c.json_path.as_str()))
        .collect();
    assert_eq!(
        columns,
        [
            ("Hostnames", "string", ".spec.hostnames"),
            (
                "Accepted",
                "string",
                r#".status.conditions[?(@.type=="Accepted")].status"#
            ),
            ("Age", "date", ".metadata.creationTimestamp"),
        ]
    );
}

#[test]
fn schema_is_structural() {
    let schema = schema();
    walk(&schema, "", &mut |path, node| {
        assert!(node.get("type").is_some(), "{path} has no type: {node}");
        for forbidden in [
            "$ref",
            "anyOf",
            "oneOf",
            "allOf",
            "not",
            "nullable",
            "definitions",
        ] {
            assert!(node.get(forbidden).is_none(), "{path} has {forbidden}");
        }
        if node["type"] == "object" {
            let props = node.get("properties").and_then(Value::as_object);
            let open = node.get("additionalProperties").is_some()
                || node.get("x-kubernetes-preserve-unknown-fields").is_some();
            assert!(
                props.is_some() || open,
                "{path} is an object without properties"
            );
        }
        if let Some(values) = node.get("enum").and_then(Value::as_array) {
            assert!(
                !values.contains(&Value::Null),
                "{path} lists null among its values"
            );
        }
    });
}

#[test]
fn every_list_in_the_spec_is_bounded() {
    // CEL cost estimates and Gateway API both rely on maxItems everywhere.
    let schema = schema();
    walk(node(&schema, "spec"), "spec", &mut |path, node| {
        if node["type"] == "array" {
            assert!(node.get("maxItems").is_some(), "{path} has no maxItems");
            assert!(
                node.get("x-kubernetes-list-type").is_some(),
                "{path} has no list type"
            );
        }
    });
}

#[test]
fn enums_are_listed() {
    let schema = schema();
    let cases = [
        (
            "spec.rules[].matches[].path.type",
            json!(["Exact", "PathPrefix", "RegularExpression"]),
        ),
        (
            "spec.rules[].matches[].headers[].type",
            json!(["Exact", "RegularExpression"]),
        ),
        (
            "spec.rules[].matches[].queryParams[].type",
            json!(["Exact", "RegularExpression"]),
        ),
        (
            "spec.rules[].matches[].method",
            json!([
                "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"
            ]),
        ),
        (
            "spec.rules[].filters[].type",
            json!([
                "RequestHeaderModifier",
                "ResponseHeaderModifier",
                "RequestRedirect",
                "URLRewrite",
                "CORS",
                "RequestMirror"
            ]),
        ),
        (
            "spec.rules[].filters[].cors.allowMethods[]",
            json!([
                "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "*"
            ]),
        ),
        (
            "spec.rules[].filters[].requestRedirect.scheme",
            json!(["http", "https"]),
        ),
        (
            "spec.rules[].filters[].requestRedirect.statusCode",
            json!([301, 302, 303, 307, 308]),
        ),
        (
            "spec.rules[].filters[].requestRedirect.path.type",
            json!(["ReplaceFullPath", "ReplacePrefixMatch"]),
        ),
        (
            "spec.rules[].filters[].urlRewrite.path.type",
            json!(["ReplaceFullPath", "ReplacePrefixMatch"]),
        ),
    ];
    for (path, values) in cases {
        assert_eq!(node(&schema, path)["enum"], values, "{path}");
    }
}

#[test]
fn schema_defaults_match_the_rust_defaults() {
    let schema = schema();
    let default = |path: &str| node(&schema, path)["default"].clone();
    let path_default = json!({ "type": "PathPrefix", "value": DEFAULT_PATH });
    assert_eq!(
        default("spec.rules[].matches"),
        json!([{ "path": path_default }])
    );
    assert_eq!(default("spec.rules[].matches[].path"), path_default);
    assert_eq!(
        default("spec.rules[].matches[].path.type"),
        json!("PathPrefix")
    );
    assert_eq!(
        default("spec.rules[].matches[].path.value"),
        json!(DEFAULT_PATH)
    );
    assert_eq!(
        default("spec.rules[].matches[].headers[].type"),
        json!("Exact")
    );
    assert_eq!(
        default("spec.rules[].matches[].queryParams[].type"),
        json!("Exact")
    );
    assert_eq!(
        default("spec.rules[].backendRefs[].weight"),
        json!(DEFAULT_WEIGHT)
    );
    assert_eq!(
        default("spec.rules[].filters[].requestRedirect.statusCode"),
        json!(DEFAULT_REDIRECT_STATUS_CODE)
    );
    assert_eq!(
        serde_json::to_value(portico_crds::PathMatchType::default()).unwrap(),
        json!("PathPrefix")
    );
    assert_eq!(
        serde_json::to_value(portico_crds::StringMatchType::default()).unwrap(),
        json!("Exact")
    );
}

#[test]
fn limits_follow_gateway_api() {
    let schema = schema();
    let cases = [
        ("spec.hostnames", "maxItems", json!(16)),
        ("spec.hostnames[]", "maxLength", json!(253)),
        ("spec.rules", "maxItems", json!(16)),
        ("spec.rules[].matches", "maxItems", json!(64)),
        ("spec.rules[].matches[].headers", "maxItems", json!(16)),
        ("spec.rules[].matches[].queryParams", "maxItems", json!(16)),
        (
            "spec.rules[].matches[].path.value",
            "maxLength",
            json!(1024),
        ),
        ("spec.rules[].filters", "maxItems", json!(16)),
        ("spec.rules[].backendRefs", "maxItems", json!(16)),
        ("spec.rules[].backendRefs[].weight", "minimum", json!(0.0)),
        (
            "spec.rules[].backendRefs[].weight",
            "maximum",
            json!(1_000_000.0),
        ),
        ("spec.rules[].backendRefs[].port", "minimum", json!(1.0)),
        ("spec.rules[].backendRefs[].port", "maximum", json!(65535.0)),
        (
            "spec.rules[].filters[].requestRedirect.port",
            "maximum",
            json!(65535.0),
        ),
    ];
    for (path, key, value) in cases {
        assert_eq!(node(&schema, path)[key], value, "{path}.{key}");
    }
    assert_eq!(
        node(&schema, "spec.hostnames[]")["pattern"],
        portico_crds::HOSTNAME_PATTERN
    );
    assert_eq!(
        node(&schema, "spec.rules[].matches[].headers[].name")["pattern"],
        portico_crds::HEADER_NAME_PATTERN
    );
    assert_eq!(
        node(&schema, "spec.rules[].timeouts.request")["pattern"],
        portico_crds::DURATION_PATTERN
    );
}

#[test]
fn header_and_query_lists_are_maps_keyed_by_name() {
    let schema = schema();
    for path in [
        "spec.rules[].matches[].headers",
        "spec.rules[].matches[].queryParams",
        "spec.rules[].filters[].requestHeaderModifier.set",
        "spec.rules[].filters[].requestHeaderModifier.add",
        "spec.rules[].filters[].responseHeaderModifier.set",
    ] {
        let list = node(&schema, path);
        assert_eq!(list["x-kubernetes-list-type"], "map", "{path}");
        assert_eq!(
            list["x-kubernetes-list-map-keys"],
            json!(["name"]),
            "{path}"
        );
    }
    let remove = node(
        &schema,
        "spec.rules[].filters[].requestHeaderModifier.remove",
    );
    assert_eq!(remove["x-kubernetes-list-type"], "set");
    let conditions = node(&schema, "status.conditions");
    assert_eq!(conditions["x-kubernetes-list-type"], "map");
    assert_eq!(conditions["x-kubernetes-list-map-keys"], json!(["type"]));
}

#[test]
fn cel_rules_sit_where_they_apply() {
    let schema = schema();
    let count = |path: &str| rules(node(&schema, path)).len();
    assert_eq!(count("spec"), 1);
    assert_eq!(count("spec.rules"), 2);
    assert_eq!(count("spec.rules[]"), 3);
    assert_eq!(count("spec.rules[].filters"), 6);
    assert_eq!(count("spec.rules[].filters[]"), 12);
    assert_eq!(count("spec.rules[].filters[].requestMirror"), 1);
    assert_eq!(count("spec.rules[].filters[].requestMirror.fraction"), 1);
    assert_eq!(count("spec.rules[].filters[].cors.allowOrigins"), 1);
    assert_eq!(count("spec.rules[].filters[].cors.allowMethods"), 1);
    assert_eq!(count("spec.rules[].filters[].cors.allowHeaders"), 1);
    assert_eq!(count("spec.rules[].filters[].requestRedirect.path"), 4);
    assert_eq!(count("spec.rules[].filters[].urlRewrite.path"), 4);
    assert_eq!(count("spec.rules[].matches[].path"), 10);
    assert_eq!(count("spec.rules[].backendRefs[]"), 1);
    assert_eq!(count("spec.rules[].timeouts"), 1);

    let filter = rules(node(&schema, "spec.rules[].filters[]"));
    assert!(filter.contains(&"!(has(self.urlRewrite) && self.type != 'URLRewrite')"));
    assert!(filter.contains(&"!(!has(self.requestRedirect) && self.type == 'RequestRedirect')"));
    let filters = rules(node(&schema, "spec.rules[].filters"));
    assert!(filters.contains(&"self.filter(f, f.type == 'RequestHeaderModifier').size() <= 1"));
    let rule = rules(node(&schema, "spec.rules[]"));
    assert!(rule[0].contains("!has(f.requestRedirect)"));
    assert!(rule[1].contains("m.path.type == 'PathPrefix'"));
    let path = rules(node(&schema, "spec.rules[].matches[].path"));
    assert!(
        path.contains(&"(self.type in ['Exact','PathPrefix']) ? !self.value.contains('//') : true")
    );
    assert!(
        path.contains(&"(self.type in ['Exact','PathPrefix']) ? !self.value.endsWith('/.') : true")
    );

    // Every rule comes with a message a person can act on.
    walk(&schema, "", &mut |path, node| {
        for rule in node
            .get("x-kubernetes-validations")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let message = rule["message"].as_str().unwrap_or_default();
            assert!(
                message.len() > 10,
                "{path}: rule {} has no message",
                rule["rule"]
            );
            assert!(!message.contains('\n'), "{path}: message has a line break");
        }
    });
}
