//! Realistic HTTPRoute documents deserialize into the types and serialize back
//! unchanged; absent fields read as the documented defaults.

use portico_crds::{
    CONDITION_ACCEPTED, CONDITION_RESOLVED_REFS, FilterType, HTTPMethod, HTTPRoute, PathMatchType,
    PathModifierType, REASON_BACKEND_NOT_FOUND, RedirectScheme, StringMatchType,
};

const MINIMAL: &str = include_str!("fixtures/minimal.yaml");
const FULL: &str = include_str!("fixtures/full.yaml");
const STATUS: &str = include_str!("fixtures/status.yaml");

/// Parses `doc` as an HTTPRoute and checks that serializing it again gives
/// the same document: nothing dropped, nothing added.
fn round_trip(doc: &str) -> HTTPRoute {
    let route: HTTPRoute = serde_yaml::from_str(doc).unwrap();
    let original: serde_json::Value = serde_yaml::from_str(doc).unwrap();
    assert_eq!(serde_json::to_value(&route).unwrap(), original);
    route
}

#[test]
fn minimal_route_round_trips_and_reads_defaults() {
    let route = round_trip(MINIMAL);
    assert!(route.spec.hostnames.is_empty());
    assert_eq!(route.spec.policies, None);
    assert_eq!(route.status, None);

    let rule = &route.spec.rules[0];
    // No matches: every request, like one PathPrefix "/" match.
    assert!(rule.matches.is_empty());
    assert_eq!(
        portico_crds::HTTPRouteMatch::default().path_or_default(),
        (PathMatchType::PathPrefix, "/")
    );

    let backend = &rule.backend_refs[0];
    assert_eq!((backend.name.as_str(), backend.port), ("web", Some(80)));
    assert_eq!(backend.weight, None);
    assert_eq!(backend.weight_or_default(), 1);
}

#[test]
fn full_route_round_trips_with_every_filter() {
    let route = round_trip(FULL);
    let spec = &route.spec;
    assert_eq!(spec.hostnames, ["shop.example.com", "*.shop.example.com"]);
    let tls = spec.policies.as_ref().and_then(|p| p.tls.as_ref()).unwrap();
    assert_eq!(tls.secret_name, "shop-example-com-tls");

    let [api, legacy, assets] = spec.rules.as_slice() else {
        panic!("three rules expected");
    };

    // Matches, with and without explicit types.
    assert_eq!(api.name.as_deref(), Some("api"));
    let first = &api.matches[0];
    assert_eq!(first.path_or_default(), (PathMatchType::PathPrefix, "/api"));
    assert_eq!(first.method, Some(HTTPMethod::GET));
    assert_eq!(first.method.map(HTTPMethod::as_str), Some("GET"));
    assert_eq!(first.headers[0].match_type, None);
    assert_eq!(
        first.headers[0].match_type_or_default(),
        StringMatchType::Exact
    );
    assert_eq!(
        first.headers[1].match_type_or_default(),
        StringMatchType::RegularExpression
    );
    assert_eq!(
        first.query_params[0].match_type_or_default(),
        StringMatchType::Exact
    );
    let second = &api.matches[1];
    assert_eq!(second.path.as_ref().unwrap().match_type, None);
    assert_eq!(
        second.path_or_default(),
        (PathMatchType::PathPrefix, "/v2/api")
    );

    // Filters: each type names the one field that is set.
    let types: Vec<FilterType> = api.filters.iter().map(|f| f.filter_type).collect();
    assert_eq!(
        types,
        [
            FilterType::RequestHeaderModifier,
            FilterType::ResponseHeaderModifier,
            FilterType::URLRewrite,
            FilterType::Cors,
            FilterType::RequestMirror,
        ]
    );
    let mirror = api.filters[4].request_mirror.as_ref().unwrap();
    assert_eq!(
        (mirror.backend_ref.name.as_str(), mirror.backend_ref.port),
        ("api-shadow", 8080)
    );
    let fraction = mirror.fraction.as_ref().unwrap();
    assert_eq!((fraction.numerator, fraction.denominator), (1, Some(10)));
    let request_headers = api.filters[0].request_header_modifier.as_ref().unwrap();
    assert_eq!(request_headers.set[0].name, "X-Forwarded-Prefix");
    assert_eq!(request_headers.add[0].value, "api");
    assert_eq!(request_headers.remove, ["X-Internal"]);
    assert!(api.filters[1].response_header_modifier.is_some());
    let rewrite = api.filters[2].url_rewrite.as_ref().unwrap();
    assert_eq!(rewrite.hostname.as_deref(), Some("api.internal"));
    let rewrite_path = rewrite.path.as_ref().unwrap();
    assert_eq!(
        rewrite_path.modifier_type,
        PathModifierType::ReplacePrefixMatch
    );
    assert_eq!(rewrite_path.replace_prefix_match.as_deref(), Some("/"));
    let cors = api.filters[3].cors.as_ref().unwrap();
    assert_eq!(cors.allow_origins[1], "https://*.shop.example.com:8443");
    assert_eq!(
        cors.allow_methods
            .iter()
            .map(|m| m.as_str())
            .collect::<Vec<_>>(),
        ["GET", "POST"]
    );
    assert_eq!(cors.allow_credentials, Some(true));
    assert_eq!(cors.max_age_or_default(), 600);
    assert_eq!(
        portico_crds::HTTPCORSFilter::default().max_age_or_default(),
        5
    );

    let weights: Vec<i32> = api
        .backend_refs
        .iter()
        .map(|b| b.weight_or_default())
        .collect();
    assert_eq!(weights, [90, 10]);
    let timeouts = api.timeouts.as_ref().unwrap();
    assert_eq!(timeouts.request.as_deref(), Some("30s"));
    assert_eq!(timeouts.backend_request.as_deref(), Some("10s"));

    // A redirect rule has no backends.
    assert!(legacy.backend_refs.is_empty());
    let redirect = legacy.filters[0].request_redirect.as_ref().unwrap();
    assert_eq!(redirect.scheme, Some(RedirectScheme::Https));
    assert_eq!(redirect.scheme.map(RedirectScheme::as_str), Some("https"));
    assert_eq!(redirect.port, Some(8443));
    assert_eq!(redirect.status_code_or_default(), 301);
    let redirect_path = redirect.path.as_ref().unwrap();
    assert_eq!(
        redirect_path.modifier_type,
        PathModifierType::ReplaceFullPath
    );
    assert_eq!(
        redirect_path.replace_full_path.as_deref(),
        Some("/checkout")
    );

    assert_eq!(
        assets.matches[0].path_or_default(),
        (PathMatchType::RegularExpression, r"/assets/.*\.(css|js)")
    );
}

#[test]
fn status_conditions_round_trip() {
    let route = round_trip(STATUS);
    let conditions = &route.status.as_ref().unwrap().conditions;
    let types: Vec<&str> = conditions.iter().map(|c| c.type_.as_str()).collect();
    assert_eq!(types, [CONDITION_ACCEPTED, CONDITION_RESOLVED_REFS]);
    assert_eq!(conditions[1].reason, REASON_BACKEND_NOT_FOUND);
    assert_eq!(conditions[1].status, "False");
    assert!(conditions.iter().all(|c| c.observed_generation == Some(3)));
}

#[test]
fn redirect_status_code_defaults_to_302() {
    let redirect = portico_crds::HTTPRequestRedirectFilter::default();
    assert_eq!(redirect.status_code, None);
    assert_eq!(redirect.status_code_or_default(), 302);
}

#[test]
fn path_match_with_only_a_type_or_a_value_fills_in_the_other() {
    let only_type: portico_crds::HTTPPathMatch = serde_yaml::from_str("type: Exact").unwrap();
    assert_eq!(only_type.match_type_or_default(), PathMatchType::Exact);
    assert_eq!(only_type.value_or_default(), "/");
    let only_value: portico_crds::HTTPPathMatch = serde_yaml::from_str("value: /x").unwrap();
    assert_eq!(
        only_value.match_type_or_default(),
        PathMatchType::PathPrefix
    );
    assert_eq!(only_value.value_or_default(), "/x");
}

#[test]
fn gateway_api_fields_portico_does_not_have_are_ignored() {
    // A Gateway API route pasted with its parentRefs still reads: the API
    // server prunes unknown fields, and manifests are read the same way.
    let doc = r#"
apiVersion: portico.dev/v1alpha1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  parentRefs:
  - name: gateway
  rules:
  - backendRefs:
    - name: web
      port: 80
"#;
    let route: HTTPRoute = serde_yaml::from_str(doc).unwrap();
    assert_eq!(route.spec.rules[0].backend_refs[0].name, "web");
}

#[test]
fn values_outside_the_enums_do_not_deserialize() {
    // The schema rejects these on the API server; for manifests the caller
    // sees a decode error naming the field.
    let doc = r#"
apiVersion: portico.dev/v1alpha1
kind: HTTPRoute
metadata: {name: web, namespace: shop}
spec:
  rules:
  - matches:
    - method: BREW
"#;
    let err = serde_yaml::from_str::<HTTPRoute>(doc).unwrap_err();
    assert!(err.to_string().contains("BREW"), "{err}");
}
