//! The schema's CEL rules, evaluated client-side (kube's `cel` feature) the
//! way the API server does: defaults applied first, then every rule.
//!
//! This is no substitute for a real API server (the e2e tests apply the CRD
//! to one); it catches rules that do not compile or do not say what they mean.

use kube::core::cel::{CompiledSchema, Validator, compile_schema, estimate_rule_cost};
use serde_json::{Value, json};

fn schema() -> Value {
    let crd = portico_crds::crds().remove(0);
    let schema = crd.spec.versions[0]
        .schema
        .clone()
        .unwrap()
        .open_api_v3_schema
        .unwrap();
    serde_json::to_value(schema).unwrap()
}

fn route(spec: Value) -> Value {
    json!({
        "apiVersion": "portico.dev/v1alpha1",
        "kind": "HTTPRoute",
        "metadata": { "name": "web", "namespace": "shop" },
        "spec": spec,
    })
}

/// The messages of the rules `object` breaks.
fn violations(object: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(errors) => errors.iter().map(|e| e.to_string()).collect(),
    }
}

fn fixture(yaml: &str) -> Value {
    serde_yaml::from_str(yaml).unwrap()
}

/// A rule whose one filter is `filter` and that forwards to a backend unless
/// the filter is a redirect.
fn rule_with(filter: Value) -> Value {
    let redirect = filter["type"] == "RequestRedirect";
    let mut rule = json!({ "filters": [filter] });
    if !redirect {
        rule["backendRefs"] = json!([{ "name": "web", "port": 80 }]);
    }
    rule
}

#[test]
fn every_rule_compiles_and_fits_the_cost_budget() {
    fn check(node: &CompiledSchema, path: &str, seen: &mut usize) {
        for compiled in &node.validations {
            let compiled = compiled
                .as_ref()
                .unwrap_or_else(|e| panic!("{path}: {e:?}"));
            *seen += 1;
            // Only the cost estimate: kube-cel's scope check mistakes the
            // variables of nested comprehensions (`all(l1, exists_one(l2, ..))`)
            // for undeclared ones.
            let warnings = estimate_rule_cost(&compiled.rule.rule, node);
            assert!(warnings.is_empty(), "{path}: {warnings:?}");
        }
        for (name, child) in &node.properties {
            check(child, &format!("{path}.{name}"), seen);
        }
        if let Some(items) = &node.items {
            check(items, &format!("{path}[]"), seen);
        }
    }
    let mut seen = 0;
    check(&compile_schema(&schema()), "", &mut seen);
    // ... + healthCheck (path or grpcService) + its status ranges
    // + loadBalancing (hashBy, cookie)
    // + reserved header names (set and add items, remove) of both header
    // filters
    // + CORS (its filter type, once per rule, `*` alone in three lists)
    // + rateLimit (some limit set; header exactly for a Header key)
    // + externalAuth (reserved header names in proxySetHeaders)
    // + jwt providers (one key source; header or cookie, not both)
    // + globalRateLimit (header exactly for a Header key)
    // + RequestMirror (its filter type, percent or fraction, the fraction
    // at most 1).
    assert_eq!(
        seen,
        1 + 2 + 3 + 5 + 8 + 4 + 4 + 10 + 1 + 1 + 1 + 1 + 2 + 6 + 2 + 1 + 3 + 2 + 1 + 2 + 1 + 4
    );
}

#[test]
fn the_fixtures_are_valid() {
    for doc in [
        include_str!("fixtures/minimal.yaml"),
        include_str!("fixtures/full.yaml"),
        include_str!("fixtures/status.yaml"),
    ] {
        assert_eq!(violations(&fixture(doc)), Vec::<String>::new());
    }
}

/// Asserts that `spec` breaks exactly the rules whose messages contain
/// `expected` (one substring per broken rule).
#[track_caller]
fn assert_rejected(spec: Value, expected: &[&str]) {
    let found = violations(&route(spec.clone()));
    assert_eq!(found.len(), expected.len(), "{spec}: {found:#?}");
    for want in expected {
        assert!(
            found.iter().any(|m| m.contains(want)),
            "{spec}: no violation mentions {want:?}: {found:#?}"
        );
    }
}

#[track_caller]
fn assert_accepted(spec: Value) {
    assert_eq!(
        violations(&route(spec.clone())),
        Vec::<String>::new(),
        "{spec}"
    );
}

fn backend() -> Value {
    json!([{ "name": "web", "port": 80 }])
}

#[test]
fn filter_type_names_the_one_field_that_is_set() {
    assert_rejected(
        json!({ "rules": [rule_with(json!({ "type": "RequestHeaderModifier" }))] }),
        &["filter.requestHeaderModifier must be specified"],
    );
    assert_rejected(
        json!({ "rules": [rule_with(json!({
            "type": "ResponseHeaderModifier",
            "requestHeaderModifier": { "remove": ["x-a"] },
        }))] }),
        &[
            "filter.requestHeaderModifier must be nil",
            "filter.responseHeaderModifier must be specified",
        ],
    );
    assert_rejected(
        json!({ "rules": [rule_with(json!({
            "type": "URLRewrite",
            "urlRewrite": { "hostname": "a.example" },
            "requestRedirect": { "scheme": "https" },
        }))] }),
        &[
            "filter.requestRedirect must be nil",
            // The rule-level check sees the stray redirect next to backends.
            "RequestRedirect filter must not be used together with backendRefs",
        ],
    );
    assert_rejected(
        json!({ "rules": [rule_with(json!({
            "type": "RequestRedirect",
            "urlRewrite": { "hostname": "a.example" },
        }))] }),
        &[
            "filter.urlRewrite must be nil",
            "filter.requestRedirect must be specified",
        ],
    );
    assert_accepted(json!({ "rules": [rule_with(json!({
        "type": "ResponseHeaderModifier",
        "responseHeaderModifier": { "set": [{ "name": "x-a", "value": "1" }] },
    }))] }));
}

#[test]
fn a_rule_takes_each_filter_type_once_and_not_redirect_with_rewrite() {
    let headers =
        json!({ "type": "RequestHeaderModifier", "requestHeaderModifier": { "remove": ["x-a"] } });
    assert_rejected(
        json!({ "rules": [{ "filters": [headers, headers], "backendRefs": backend() }] }),
        &["RequestHeaderModifier filter cannot be repeated"],
    );
    let response = json!({ "type": "ResponseHeaderModifier", "responseHeaderModifier": { "remove": ["x-a"] } });
    assert_rejected(
        json!({ "rules": [{ "filters": [response, response], "backendRefs": backend() }] }),
        &["ResponseHeaderModifier filter cannot be repeated"],
    );
    let rewrite = json!({ "type": "URLRewrite", "urlRewrite": { "hostname": "a.example" } });
    assert_rejected(
        json!({ "rules": [{ "filters": [rewrite, rewrite], "backendRefs": backend() }] }),
        &["URLRewrite filter cannot be repeated"],
    );
    let redirect = json!({ "type": "RequestRedirect", "requestRedirect": { "scheme": "https" } });
    assert_rejected(
        json!({ "rules": [{ "filters": [redirect, redirect] }] }),
        &["RequestRedirect filter cannot be repeated"],
    );
    assert_rejected(
        json!({ "rules": [{ "filters": [redirect, rewrite] }] }),
        &["either a RequestRedirect or a URLRewrite"],
    );
    assert_accepted(
        json!({ "rules": [{ "filters": [headers, response, rewrite], "backendRefs": backend() }] }),
    );
}

#[test]
fn a_redirect_has_no_backends() {
    let redirect = json!({ "type": "RequestRedirect", "requestRedirect": { "scheme": "https" } });
    assert_rejected(
        json!({ "rules": [{ "filters": [redirect], "backendRefs": backend() }] }),
        &["RequestRedirect filter must not be used together with backendRefs"],
    );
    assert_accepted(json!({ "rules": [{ "filters": [redirect] }] }));
}

#[test]
fn replace_prefix_match_needs_path_prefix_matches_only() {
    let prefix = |field: &str, filter_type: &str| {
        json!({
            "type": filter_type,
            field: { "path": { "type": "ReplacePrefixMatch", "replacePrefixMatch": "/new" } },
        })
    };
    let rewrite = prefix("urlRewrite", "URLRewrite");
    let redirect = prefix("requestRedirect", "RequestRedirect");
    let exact = json!({ "path": { "type": "Exact", "value": "/old" } });
    let regex = json!({ "path": { "type": "RegularExpression", "value": "/o.d" } });
    let pfx = json!({ "path": { "type": "PathPrefix", "value": "/old" } });

    assert_rejected(
        json!({ "rules": [{ "matches": [pfx, exact], "filters": [rewrite], "backendRefs": backend() }] }),
        &["URLRewrite with path type ReplacePrefixMatch needs every match"],
    );
    assert_rejected(
        json!({ "rules": [{ "matches": [regex], "filters": [redirect] }] }),
        &["RequestRedirect with path type ReplacePrefixMatch needs every match"],
    );
    // Several PathPrefix matches are fine: the dataplane replaces whichever
    // prefix matched.
    assert_accepted(json!({ "rules": [{
        "matches": [pfx, { "path": { "type": "PathPrefix", "value": "/older" } }],
        "filters": [rewrite],
        "backendRefs": backend(),
    }] }));
    // No matches, a match without a path and a path without a type all
    // default to PathPrefix.
    assert_accepted(json!({ "rules": [{ "filters": [rewrite], "backendRefs": backend() }] }));
    assert_accepted(json!({ "rules": [{
        "matches": [{ "method": "GET" }, { "path": { "value": "/old" } }],
        "filters": [redirect],
    }] }));
    // ReplaceFullPath does not care.
    assert_accepted(json!({ "rules": [{
        "matches": [exact],
        "filters": [{ "type": "URLRewrite", "urlRewrite": { "path": { "type": "ReplaceFullPath", "replaceFullPath": "/new" } } }],
        "backendRefs": backend(),
    }] }));
}

#[test]
fn path_modifier_type_names_the_field_that_is_set() {
    let rewrite = |path: Value| json!({ "rules": [rule_with(json!({ "type": "URLRewrite", "urlRewrite": { "path": path } }))] });
    assert_rejected(
        rewrite(json!({ "type": "ReplaceFullPath" })),
        &["replaceFullPath must be specified"],
    );
    assert_rejected(
        rewrite(json!({ "type": "ReplacePrefixMatch" })),
        &["replacePrefixMatch must be specified"],
    );
    assert_rejected(
        rewrite(json!({ "type": "ReplaceFullPath", "replacePrefixMatch": "/x" })),
        &[
            "replaceFullPath must be specified",
            "type must be 'ReplacePrefixMatch' when replacePrefixMatch is set",
        ],
    );
    assert_rejected(
        rewrite(
            json!({ "type": "ReplacePrefixMatch", "replacePrefixMatch": "/x", "replaceFullPath": "/y" }),
        ),
        &["type must be 'ReplaceFullPath' when replaceFullPath is set"],
    );
}

#[test]
fn exact_and_prefix_paths_are_clean_absolute_paths() {
    let with_path = |path: Value| json!({ "rules": [{ "matches": [{ "path": path }], "backendRefs": backend() }] });
    let cases = [
        ("foo", "must start with '/'"),
        ("/a//b", "must not contain '//'"),
        ("/a/./b", "must not contain '/./'"),
        ("/a/../b", "must not contain '/../'"),
        ("/a%2fb", "must not contain '%2f'"),
        ("/a%2Fb", "must not contain '%2F'"),
        ("/a/..", "must not end with '/..'"),
        ("/a/.", "must not end with '/.'"),
    ];
    for (value, message) in cases {
        for path_type in ["Exact", "PathPrefix"] {
            let found = violations(&route(with_path(
                json!({ "type": path_type, "value": value }),
            )));
            assert!(
                found.iter().any(|m| m.contains(message)),
                "{path_type} {value:?}: {found:#?}"
            );
        }
    }
    // `#` and a space are not URL path characters.
    assert_rejected(
        with_path(json!({ "type": "Exact", "value": "/a#b" })),
        &["must not contain '#'", "valid URL path characters"],
    );
    assert_rejected(
        with_path(json!({ "type": "PathPrefix", "value": "/a b" })),
        &["valid URL path characters"],
    );
    // The type defaults to PathPrefix before the rules run.
    assert_rejected(
        with_path(json!({ "value": "/a//b" })),
        &["must not contain '//'"],
    );
    // Regular expressions are the controller's to check.
    assert_accepted(with_path(
        json!({ "type": "RegularExpression", "value": "^/a//b#?$" }),
    ));
    assert_accepted(with_path(
        json!({ "type": "Exact", "value": "/a/b.c/~user/%20x;y=1" }),
    ));
}

#[test]
fn header_filters_cannot_touch_framing_connection_or_host_headers() {
    let filter = |kind: &str, change: Value| {
        let field = if kind == "request" {
            "requestHeaderModifier"
        } else {
            "responseHeaderModifier"
        };
        let filter_type = if kind == "request" {
            "RequestHeaderModifier"
        } else {
            "ResponseHeaderModifier"
        };
        json!({ "rules": [rule_with(json!({ "type": filter_type, field: change }))] })
    };
    // The dataplane's own list, in any case.
    let reserved = portico_dataplane::model::RESERVED_HEADERS;
    for (name, _) in reserved {
        let upper = name.to_ascii_uppercase();
        for name in [name.to_owned(), upper] {
            for kind in ["request", "response"] {
                let one = json!([{ "name": name, "value": "1" }]);
                for change in [
                    json!({ "set": one }),
                    json!({ "add": one }),
                    json!({ "remove": [name] }),
                ] {
                    assert_rejected(filter(kind, change), &["cannot be set, added or removed"]);
                }
            }
        }
    }
    // The message names every one of them.
    let found = violations(&route(filter("response", json!({ "remove": ["te"] }))));
    for (name, _) in reserved {
        assert!(
            found[0].to_ascii_lowercase().contains(name),
            "{name}: {found:?}"
        );
    }
    assert_accepted(filter(
        "response",
        json!({
            "set": [{ "name": "X-Frame-Options", "value": "DENY" }, { "name": "tee", "value": "1" }],
            "add": [{ "name": "content-type", "value": "text/plain" }],
            "remove": ["hosts", "x-connection"],
        }),
    ));
}

#[test]
fn backend_refs_need_a_port() {
    assert_rejected(
        json!({ "rules": [{ "backendRefs": [{ "name": "web" }] }] }),
        &["port is required"],
    );
}

#[test]
fn backend_request_timeout_is_at_most_the_request_timeout() {
    let with_timeouts =
        |timeouts: Value| json!({ "rules": [{ "backendRefs": backend(), "timeouts": timeouts }] });
    assert_rejected(
        with_timeouts(json!({ "request": "5s", "backendRequest": "1m" })),
        &["backendRequest timeout cannot be longer than request timeout"],
    );
    assert_accepted(with_timeouts(
        json!({ "request": "1m", "backendRequest": "59s" }),
    ));
    assert_accepted(with_timeouts(
        json!({ "request": "1h30m", "backendRequest": "500ms" }),
    ));
    // 0s turns the request timeout off, so any backendRequest fits.
    assert_accepted(with_timeouts(
        json!({ "request": "0s", "backendRequest": "10s" }),
    ));
    assert_accepted(with_timeouts(json!({ "backendRequest": "10s" })));
}

#[test]
fn rule_names_are_unique() {
    let named = |name: &str| json!({ "name": name, "backendRefs": backend() });
    assert_rejected(
        json!({ "rules": [named("a"), named("b"), named("a")] }),
        &["Rule name must be unique within the route"],
    );
    assert_accepted(
        json!({ "rules": [named("a"), named("b"), { "backendRefs": backend() }, { "backendRefs": backend() }] }),
    );
}

#[test]
fn a_route_has_at_most_128_matches() {
    let rule = |n: usize| {
        let matches: Vec<Value> = (0..n)
            .map(|i| json!({ "path": { "value": format!("/p{i}") } }))
            .collect();
        json!({ "matches": matches, "backendRefs": backend() })
    };
    assert_accepted(json!({ "rules": [rule(64), rule(64)] }));
    assert_rejected(
        json!({ "rules": [rule(64), rule(64), rule(1)] }),
        &["the total number of matches across all rules in a route must be at most 128"],
    );
}

#[test]
fn tls_needs_hostnames() {
    let tls = json!({ "tls": { "secretName": "web-tls" } });
    assert_rejected(
        json!({ "policies": tls, "rules": [{ "backendRefs": backend() }] }),
        &["policies.tls needs at least one entry in hostnames"],
    );
    assert_accepted(json!({ "hostnames": ["web.example.com"], "policies": tls }));
    assert_accepted(json!({ "policies": {} }));
}

#[test]
fn a_health_check_is_http_or_grpc_and_status_ranges_are_ordered() {
    let with_check = |check: Value| {
        json!({
            "policies": { "backends": { "healthCheck": check } },
            "rules": [{ "backendRefs": backend() }],
        })
    };
    assert_rejected(
        with_check(json!({ "path": "/healthz", "grpcService": "" })),
        &["path (HTTP checks) and grpcService (gRPC checks) exclude each other"],
    );
    assert_rejected(
        with_check(json!({ "expectedStatuses": [{ "min": 400, "max": 200 }] })),
        &["min must not be above max"],
    );
    assert_accepted(with_check(json!({
        "path": "/healthz",
        "interval": "5s",
        "expectedStatuses": [{ "min": 200, "max": 204 }],
    })));
    assert_accepted(with_check(json!({ "grpcService": "shop.Cart" })));
    assert_accepted(with_check(json!({ "port": 8081 })));
}

#[test]
fn load_balancing_fields_go_with_their_policy() {
    let with_lb = |lb: Value| {
        json!({
            "policies": { "backends": { "loadBalancing": lb } },
            "rules": [{ "backendRefs": backend() }],
        })
    };
    assert_rejected(
        with_lb(json!({ "policy": "ConsistentHash" })),
        &["ConsistentHash needs hashBy"],
    );
    assert_rejected(
        with_lb(json!({ "policy": "RoundRobin", "cookie": { "name": "x" } })),
        &["cookie is only for the Cookie policy"],
    );
    assert_accepted(with_lb(
        json!({ "policy": "ConsistentHash", "hashBy": "$request_uri" }),
    ));
    assert_accepted(with_lb(json!({
        "policy": "Cookie",
        "cookie": { "name": "route", "mode": "Persistent", "maxAge": 3600, "sameSite": "Lax" },
    })));
    assert_accepted(with_lb(json!({ "policy": "EWMA" })));
}

#[test]
fn a_cors_filter_is_named_by_its_type_once_and_wildcards_stand_alone() {
    assert_rejected(
        json!({ "rules": [rule_with(json!({ "type": "CORS" }))] }),
        &["filter.cors must be specified"],
    );
    assert_rejected(
        json!({ "rules": [rule_with(json!({
            "type": "URLRewrite",
            "urlRewrite": { "hostname": "a.example" },
            "cors": { "allowOrigins": ["*"] },
        }))] }),
        &["filter.cors must be nil"],
    );
    let cors = json!({ "type": "CORS", "cors": { "allowOrigins": ["https://a.example"] } });
    assert_rejected(
        json!({ "rules": [{ "filters": [cors, cors], "backendRefs": backend() }] }),
        &["CORS filter cannot be repeated"],
    );
    assert_rejected(
        json!({ "rules": [rule_with(json!({ "type": "CORS", "cors": {
            "allowOrigins": ["*", "https://a.example"],
            "allowMethods": ["*", "GET"],
            "allowHeaders": ["*", "x-a"],
        } }))] }),
        &[
            "AllowOrigins cannot contain '*'",
            "AllowMethods cannot contain '*'",
            "AllowHeaders cannot contain '*'",
        ],
    );
    assert_accepted(
        json!({ "rules": [rule_with(json!({ "type": "CORS", "cors": {
        "allowOrigins": ["https://a.example", "https://*.b.example:8443"],
        "allowMethods": ["GET", "PUT"],
        "allowHeaders": ["*"],
        "exposeHeaders": ["*", "x-b"],
        "allowCredentials": true,
        "maxAge": 60,
    } }))] }),
    );
}

#[test]
fn a_request_mirror_takes_percent_or_a_fraction_of_at_most_one() {
    let mirror = |extra: Value| {
        let mut m = json!({ "backendRef": { "name": "shadow", "port": 80 } });
        m.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        json!({ "rules": [rule_with(json!({ "type": "RequestMirror", "requestMirror": m }))] })
    };
    assert_accepted(mirror(json!({})));
    assert_accepted(mirror(json!({ "percent": 50 })));
    assert_accepted(mirror(json!({ "fraction": { "numerator": 1 } })));
    assert_accepted(mirror(
        json!({ "fraction": { "numerator": 3, "denominator": 3 } }),
    ));
    assert_rejected(
        mirror(json!({ "percent": 5, "fraction": { "numerator": 1 } })),
        &["Only one of percent or fraction"],
    );
    assert_rejected(
        mirror(json!({ "fraction": { "numerator": 2, "denominator": 1 } })),
        &["numerator must be less than or equal to denominator"],
    );
    assert_rejected(
        json!({ "rules": [rule_with(json!({ "type": "RequestMirror" }))] }),
        &["filter.requestMirror must be specified"],
    );
}
