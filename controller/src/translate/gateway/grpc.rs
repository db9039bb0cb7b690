//! GRPCRoutes: `method` matches become path matches on `/service/method`
//! (a gRPC request's path), header matches and filters as HTTPRoute's,
//! backends spoken to in cleartext HTTP/2. The rest is HTTPRoute's
//! ([`super::http::build`]).

use portico_crds::gateway::GrpcRoute;
use portico_crds::gateway::grpcroutes::{GrpcRouteRules, GrpcRouteRulesMatchesMethodType};
use portico_crds::{HTTPHeaderMatch, HTTPPathMatch, HTTPRouteMatch, PathMatchType};

use super::http::{RuleInput, Translated, build, rule_input, rule_inputs, status_parents};
use super::{RouteKind, reshape};
use crate::diagnostics::Diagnostic;
use crate::snapshot::Snapshot;

pub(super) fn translate(snap: &Snapshot, r: &GrpcRoute) -> Translated {
    let parent_refs = reshape(&r.spec.parent_refs).unwrap_or_default();
    let rules = rule_inputs(r.spec.rules.as_deref(), rule);
    let (mut route, rules) = build(
        snap,
        RouteKind::Grpc,
        &r.metadata,
        r.spec.hostnames.as_deref().unwrap_or_default(),
        parent_refs,
        rules,
    );
    route.status_parents = status_parents(r.status.as_ref().map(|s| &s.parents));
    (route, rules)
}

fn rule(r: &GrpcRouteRules, field: &str) -> Result<RuleInput, Diagnostic> {
    let invalid = |at: String, why: String| {
        Diagnostic::error(
            "UnsupportedValue",
            at,
            format!("{why}; this rule is not served"),
        )
    };
    // Filters and backendRefs have HTTPRoute's shape; matches do not.
    let mut value = serde_json::json!({
        "filters": serde_json::to_value(&r.filters).map_err(|e| invalid(field.to_owned(), e.to_string()))?,
        "backendRefs": serde_json::to_value(&r.backend_refs).map_err(|e| invalid(field.to_owned(), e.to_string()))?,
    });
    if let Some(o) = value.as_object_mut() {
        o.retain(|_, v| !v.is_null());
    }
    let mut input = rule_input(value, field)?;
    for (j, m) in r.matches.iter().flatten().enumerate() {
        let mf = format!("{field}.matches[{j}]");
        let path = match &m.method {
            None => None,
            Some(method)
                if method.r#type != Some(GrpcRouteRulesMatchesMethodType::RegularExpression)
                    && [&method.service, &method.method]
                        .into_iter()
                        .flatten()
                        .any(|v| v.contains('/')) =>
            {
                return Err(invalid(
                    format!("{mf}.method"),
                    "a service or method name cannot contain '/'".into(),
                ));
            }
            // Each part a whole pattern of its own, so that neither can
            // reach outside its group once they are joined.
            Some(method)
                if method.r#type == Some(GrpcRouteRulesMatchesMethodType::RegularExpression)
                    && let Some((part, e)) =
                        [("service", &method.service), ("method", &method.method)]
                            .into_iter()
                            .find_map(|(n, v)| {
                                v.as_deref()
                                    .and_then(|v| crate::translate::check_regex(v).err())
                                    .map(|e| (n, e))
                            }) =>
            {
                return Err(Diagnostic::error(
                    "InvalidRegex",
                    format!("{mf}.method.{part}"),
                    format!("{e}; this rule is not served"),
                ));
            }
            Some(method) => Some(
                method_path(
                    method.r#type.as_ref(),
                    method.service.as_deref().filter(|s| !s.is_empty()),
                    method.method.as_deref().filter(|s| !s.is_empty()),
                )
                .ok_or_else(|| {
                    invalid(
                        format!("{mf}.method"),
                        "set a service, a method or both".into(),
                    )
                })?,
            ),
        };
        let headers: Vec<HTTPHeaderMatch> = match &m.headers {
            None => Vec::new(),
            Some(h) => reshape(h).map_err(|e| invalid(format!("{mf}.headers"), e))?,
        };
        input.rule.matches.push(HTTPRouteMatch {
            path,
            headers,
            ..Default::default()
        });
    }
    Ok(input)
}

/// The path match of a gRPC method match: Exact on both is an exact path;
/// a service alone is a prefix (segment-wise: `/svc` matches `/svc/M`);
/// the rest are anchored regular expressions over the two segments.
fn method_path(
    kind: Option<&GrpcRouteRulesMatchesMethodType>,
    service: Option<&str>,
    method: Option<&str>,
) -> Option<HTTPPathMatch> {
    let (match_type, value) = match (kind, service, method) {
        (_, None, None) => return None,
        (Some(GrpcRouteRulesMatchesMethodType::RegularExpression), s, m) => (
            PathMatchType::RegularExpression,
            format!("/(?:{})/(?:{})", s.unwrap_or("[^/]+"), m.unwrap_or("[^/]+")),
        ),
        (_, Some(s), Some(m)) => (PathMatchType::Exact, format!("/{s}/{m}")),
        (_, Some(s), None) => (PathMatchType::PathPrefix, format!("/{s}")),
        (_, None, Some(m)) => (
            PathMatchType::RegularExpression,
            format!("/[^/]+/{}", regex::escape(m)),
        ),
    };
    Some(HTTPPathMatch {
        match_type: Some(match_type),
        value: Some(value),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_matches_become_paths() {
        let exact = Some(&GrpcRouteRulesMatchesMethodType::Exact);
        let regex = Some(&GrpcRouteRulesMatchesMethodType::RegularExpression);
        let path = |k, s, m| method_path(k, s, m).map(|p| (p.match_type, p.value));
        assert_eq!(
            path(exact, Some("echo.Echo"), Some("Say")),
            Some((Some(PathMatchType::Exact), Some("/echo.Echo/Say".into())))
        );
        assert_eq!(
            path(None, Some("echo.Echo"), None),
            Some((Some(PathMatchType::PathPrefix), Some("/echo.Echo".into())))
        );
        assert_eq!(
            path(exact, None, Some("S.y")),
            Some((
                Some(PathMatchType::RegularExpression),
                Some("/[^/]+/S\\.y".into())
            ))
        );
        assert_eq!(
            path(regex, Some("echo\\..*"), None),
            Some((
                Some(PathMatchType::RegularExpression),
                Some("/(?:echo\\..*)/(?:[^/]+)".into())
            ))
        );
        assert_eq!(path(exact, None, None), None);
    }
}
