use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::features::service_health::tests::parse_service_checked;
use super::*;

/// What the groups' tests are written in, besides the harness below.
pub(crate) use super::{
    DiagnosticKind, Fallback, IngressAnnotations, NGINX_PREFIX, PORTICO_PREFIX,
};
use portico_dataplane::model::OriginPattern;

pub(crate) const PREFIXES: [&str; 2] = [PORTICO_PREFIX, NGINX_PREFIX];

pub(crate) fn map(prefix: &str, pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(name, value)| (format!("{prefix}{name}"), (*value).to_owned()))
        .collect()
}

pub(crate) fn raw(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    map("", pairs)
}

/// Parses and checks what holds for every diagnostic.
pub(crate) fn parse_checked(annotations: &BTreeMap<String, String>) -> Parsed {
    let parsed = parse(annotations);
    for d in &parsed.diagnostics {
        assert!(
            !d.message.contains('\n') && !d.message.contains('\r'),
            "message must be one line: {:?}",
            d.message
        );
        assert!(
            d.message.starts_with(&d.key),
            "message must name the key: {:?}",
            d.message
        );
        assert!(
            d.message.contains(&quote(&d.value)),
            "message must show the value: {:?}",
            d.message
        );
        assert_eq!(
            annotations.get(&d.key),
            Some(&d.value),
            "key and value as written"
        );
    }
    parsed
}

pub(crate) fn registered(name: &str) -> &'static AnnotationSpec {
    registry()
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("{name} is not in the registry"))
}

pub(crate) fn origin(s: &str) -> OriginPattern {
    OriginPattern::parse(s).unwrap()
}

// === valid values ===

/// Annotations (names without prefix) and the fields they set. Each case
/// runs under both spellings and must produce no diagnostic.
pub(crate) struct Valid {
    pub(crate) set: &'static [(&'static str, &'static str)],
    pub(crate) want: fn(&mut IngressAnnotations),
}

#[test]
fn valid_values_under_both_spellings() {
    for case in features::VALID.iter().copied().flatten() {
        let mut want = IngressAnnotations::default();
        (case.want)(&mut want);
        for prefix in PREFIXES {
            let parsed = parse_checked(&map(prefix, case.set));
            assert_eq!(parsed.diagnostics, vec![], "{prefix}: {:?}", case.set);
            assert_eq!(parsed.ingress, want, "{prefix}: {:?}", case.set);
        }
    }
}

// === invalid values ===

/// `name` set to each of `values` (with `context` set too) must give exactly
/// one `Invalid(fallback)` diagnostic on that key and leave the fields as
/// `want` (the context's effect alone).
pub(crate) struct Invalid {
    pub(crate) name: &'static str,
    pub(crate) fallback: Fallback,
    pub(crate) values: &'static [&'static str],
    pub(crate) context: &'static [(&'static str, &'static str)],
    pub(crate) want: fn(&mut IngressAnnotations),
}

pub(crate) const NO_CONTEXT: &[(&str, &str)] = &[];

#[test]
fn invalid_values_fall_back_as_documented() {
    for cases in features::INVALID {
        check_invalid(cases);
    }
}

pub(crate) fn check_invalid(cases: &[Invalid]) {
    for case in cases {
        assert_eq!(
            case.fallback,
            registered(case.name).on_invalid,
            "{}: the table and the registry disagree on the fallback",
            case.name
        );
        let mut want = IngressAnnotations::default();
        (case.want)(&mut want);
        for prefix in PREFIXES {
            for value in case.values {
                let mut pairs = case.context.to_vec();
                pairs.push((case.name, *value));
                let parsed = parse_checked(&map(prefix, &pairs));
                let key = format!("{prefix}{}", case.name);
                assert_eq!(
                    parsed.diagnostics.len(),
                    1,
                    "{key}={value:?}: {:#?}",
                    parsed.diagnostics
                );
                let d = &parsed.diagnostics[0];
                assert_eq!(d.key, key);
                assert_eq!(d.value, *value);
                assert_eq!(
                    d.kind,
                    DiagnosticKind::Invalid(case.fallback),
                    "{}",
                    d.message
                );
                assert!(d.message.contains("invalid"), "{}", d.message);
                assert_eq!(parsed.ingress, want, "{key}={value:?}");
            }
        }
    }
}

// === Service annotations ===

#[test]
fn a_service_reports_only_portico_keys_that_are_not_its_own() {
    let parsed = parse_service_checked(&raw(&[
        ("portico.dev/panic-threshold", "30"),
        ("portico.dev/rewrite-target", "/"),
        ("portico.dev/made-up", "x"),
        ("nginx.ingress.kubernetes.io/rewrite-target", "/"),
        ("nginx.ingress.kubernetes.io/made-up", "x"),
        ("nginx.ingress.kubernetes.io/server-snippet", "x"),
        ("example.com/anything", "x"),
    ]));
    assert_eq!(parsed.service.panic_threshold, Some(30));
    assert_eq!(
        kinds(&parsed),
        vec![
            ("portico.dev/made-up", DiagnosticKind::Unknown),
            ("portico.dev/rewrite-target", DiagnosticKind::Unsupported),
        ]
    );
    assert!(
        parsed.diagnostics[1]
            .message
            .contains("belongs on an Ingress")
    );
}

#[test]
fn service_annotations_on_an_ingress_say_where_they_belong() {
    let parsed = parse_checked(&raw(&[("portico.dev/panic-threshold", "30")]));
    assert_eq!(parsed.ingress, IngressAnnotations::default());
    assert_eq!(
        kinds(&parsed),
        vec![("portico.dev/panic-threshold", DiagnosticKind::Unsupported)]
    );
    assert!(
        parsed.diagnostics[0]
            .message
            .contains("belongs on a Service")
    );
}

#[test]
fn every_annotation_has_valid_and_invalid_cases() {
    let valid: BTreeSet<&str> = features::VALID
        .iter()
        .copied()
        .flatten()
        .flat_map(|c| c.set.iter().map(|(name, _)| *name))
        .chain(
            features::service_health::tests::SERVICE_VALID
                .iter()
                .flat_map(|c| c.set.iter().map(|(name, _)| *name)),
        )
        .collect();
    let invalid: BTreeSet<&str> = features::INVALID
        .iter()
        .copied()
        .flatten()
        .chain(features::basic_auth::tests::INVALID_AUTH)
        .map(|c| c.name)
        .chain(
            features::service_health::tests::SERVICE_INVALID
                .iter()
                .map(|c| c.name),
        )
        .collect();
    for spec in registry() {
        assert!(valid.contains(spec.name), "{}: no valid case", spec.name);
        assert!(
            invalid.contains(spec.name),
            "{}: no invalid case",
            spec.name
        );
    }
}

#[test]
fn invalid_messages_say_why_and_what_happens() {
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "backend-protocol",
            "AUTO_HTTP",
            &["AUTO_HTTP is not supported", "the default (HTTP) applies"],
        ),
        ("backend-protocol", "fcgi", &["FCGI is not supported"]),
        (
            "custom-headers",
            "default/my-headers",
            &["ConfigMap", "inline"],
        ),
        (
            "custom-headers",
            "X-A: 1\nContent-Length: 0",
            &["line 2: content-length cannot be set", "frames the message"],
        ),
        (
            "rewrite-target",
            "/$host",
            &["nginx variables", "paths answer 503"],
        ),
        (
            "permanent-redirect",
            "https://a.example$request_uri",
            &["$request_uri", "paths answer 503"],
        ),
        (
            "proxy-read-timeout",
            "25h",
            &["at most 24h", "the default (60) applies"],
        ),
        ("proxy-read-timeout", "0", &["greater than 0"]),
        (
            "app-root",
            "//evil.example",
            &["another host", "it stays unset"],
        ),
        ("default-backend", "ns/svc", &["without a namespace"]),
    ];
    for (name, value, needles) in cases {
        let key = format!("{NGINX_PREFIX}{name}");
        let parsed = parse_checked(&raw(&[(key.as_str(), value)]));
        let message = &parsed.diagnostics[0].message;
        for needle in *needles {
            assert!(message.contains(needle), "{message:?} lacks {needle:?}");
        }
    }
}

#[test]
fn empty_values_count_as_not_set() {
    for name in [
        "rewrite-target",
        "proxy-read-timeout",
        "canary",
        "custom-headers",
    ] {
        for value in ["", "  "] {
            let parsed = parse_checked(&map(NGINX_PREFIX, &[(name, value)]));
            assert_eq!(parsed.ingress, IngressAnnotations::default());
            assert_eq!(parsed.diagnostics.len(), 1);
            assert_eq!(
                parsed.diagnostics[0].kind,
                DiagnosticKind::Invalid(Fallback::Ignored),
                "{}",
                parsed.diagnostics[0].message
            );
            assert!(parsed.diagnostics[0].message.contains("empty value"));
        }
    }
}

#[test]
fn every_default_parses() {
    for spec in registry().iter().filter(|s| !s.default.is_empty()) {
        let mut draft = Draft::default();
        assert_eq!(
            (spec.parse)(spec.default, &mut draft),
            Ok(()),
            "{}",
            spec.name
        );
    }
}

// === rules between annotations ===

pub(crate) fn kinds(parsed: &Parsed) -> Vec<(&str, DiagnosticKind)> {
    parsed
        .diagnostics
        .iter()
        .map(|d| (d.key.as_str(), d.kind))
        .collect()
}

pub(crate) const IGNORED: DiagnosticKind = DiagnosticKind::Invalid(Fallback::Ignored);

/// `parts` without `switch`, or with it `"false"`: each is reported as
/// ignored, saying `why`, and nothing is set.
#[track_caller]
pub(crate) fn parts_need_a_switch(parts: &[(&str, &str)], switch: &str, why: &str) {
    for value in [None, Some("false")] {
        let mut pairs = parts.to_vec();
        pairs.extend(value.map(|v| (switch, v)));
        let parsed = parse_checked(&map(NGINX_PREFIX, &pairs));
        assert_eq!(parsed.ingress, IngressAnnotations::default());
        assert_eq!(
            parsed.diagnostics.len(),
            parts.len(),
            "{:#?}",
            parsed.diagnostics
        );
        for d in &parsed.diagnostics {
            assert_eq!(d.kind, IGNORED);
            assert!(d.message.contains(why), "{}", d.message);
        }
    }
}

// === keys ===

#[test]
fn portico_spelling_wins_a_conflict() {
    let parsed = parse_checked(&raw(&[
        ("portico.dev/proxy-read-timeout", "30"),
        ("nginx.ingress.kubernetes.io/proxy-read-timeout", "120"),
    ]));
    assert_eq!(
        parsed.ingress.proxy_read_timeout,
        Some(Duration::from_secs(30))
    );
    assert_eq!(
        kinds(&parsed),
        vec![(
            "nginx.ingress.kubernetes.io/proxy-read-timeout",
            DiagnosticKind::Conflict
        )]
    );
    assert!(
        parsed.diagnostics[0]
            .message
            .contains("portico.dev/proxy-read-timeout=\"30\"")
    );
}

#[test]
fn same_value_under_both_spellings_is_no_conflict() {
    let parsed = parse_checked(&raw(&[
        ("portico.dev/use-regex", "true"),
        ("nginx.ingress.kubernetes.io/use-regex", " true "),
    ]));
    assert!(parsed.ingress.use_regex);
    assert_eq!(parsed.diagnostics, vec![]);
}

#[test]
fn an_invalid_portico_value_still_wins() {
    let parsed = parse_checked(&raw(&[
        ("portico.dev/rewrite-target", "/$host"),
        ("nginx.ingress.kubernetes.io/rewrite-target", "/$1"),
    ]));
    assert_eq!(parsed.ingress.rewrite_target, None);
    assert_eq!(
        kinds(&parsed),
        vec![
            (
                "nginx.ingress.kubernetes.io/rewrite-target",
                DiagnosticKind::Conflict
            ),
            (
                "portico.dev/rewrite-target",
                DiagnosticKind::Invalid(Fallback::PathDenied)
            ),
        ]
    );
}

#[test]
fn unknown_keys_under_either_prefix() {
    let parsed = parse_checked(&raw(&[
        ("portico.dev/rewrite-targets", "/"),
        ("nginx.ingress.kubernetes.io/no-such-thing", "x"),
        ("portico.dev/", "x"),
    ]));
    assert_eq!(parsed.ingress, IngressAnnotations::default());
    assert_eq!(
        kinds(&parsed),
        vec![
            (
                "nginx.ingress.kubernetes.io/no-such-thing",
                DiagnosticKind::Unknown
            ),
            ("portico.dev/", DiagnosticKind::Unknown),
            ("portico.dev/rewrite-targets", DiagnosticKind::Unknown),
        ]
    );
}

#[test]
fn unsupported_nginx_annotations() {
    let parsed = parse_checked(&raw(&[
        (
            "nginx.ingress.kubernetes.io/auth-tls-error-page",
            "https://auth.example/",
        ),
        ("nginx.ingress.kubernetes.io/http2-push-preload", "true"),
        ("nginx.ingress.kubernetes.io/grpc-backend", "true"),
        ("portico.dev/auth-tls-match-cn", "CN=x"),
    ]));
    assert_eq!(parsed.ingress, IngressAnnotations::default());
    assert_eq!(
        kinds(&parsed),
        vec![
            (
                "nginx.ingress.kubernetes.io/auth-tls-error-page",
                DiagnosticKind::Unsupported
            ),
            (
                "nginx.ingress.kubernetes.io/grpc-backend",
                DiagnosticKind::Unsupported
            ),
            (
                "nginx.ingress.kubernetes.io/http2-push-preload",
                DiagnosticKind::Unsupported
            ),
            ("portico.dev/auth-tls-match-cn", DiagnosticKind::Unsupported),
        ]
    );
    assert!(
        parsed.diagnostics[0]
            .message
            .contains("not supported by Portico yet")
    );
    assert!(
        parsed.diagnostics[1]
            .message
            .contains("backend-protocol: GRPC")
    );
}

#[test]
fn snippets_are_never_parsed() {
    let snippet = "more_set_headers \"X: $host\";\nreturn 302 /x;";
    for name in [
        "configuration-snippet",
        "server-snippet",
        "auth-snippet",
        "stream-snippet",
        "modsecurity-snippet",
        "made-up-snippet",
    ] {
        for prefix in PREFIXES {
            let parsed = parse_checked(&map(prefix, &[(name, snippet)]));
            assert_eq!(parsed.ingress, IngressAnnotations::default());
            assert_eq!(
                kinds(&parsed),
                vec![(format!("{prefix}{name}").as_str(), DiagnosticKind::Snippet)]
            );
        }
    }
}

#[test]
fn other_prefixes_are_ignored_silently() {
    let parsed = parse_checked(&raw(&[
        ("kubernetes.io/ingress.class", "nginx"),
        ("kubectl.kubernetes.io/last-applied-configuration", "{}"),
        ("nginx.org/rewrite-target", "/"),
        ("foo.portico.dev/rewrite-target", "/"),
        ("ingress.kubernetes.io/rewrite-target", "/"),
        ("rewrite-target", "/"),
        ("portico.dev", "x"),
        ("Portico.dev/rewrite-target", "/"),
    ]));
    assert_eq!(parsed, Parsed::default());
}

#[test]
fn messages_stay_on_one_line_and_short() {
    let long = format!("/{}\n", "a".repeat(500));
    let parsed = parse_checked(&map(
        NGINX_PREFIX,
        &[("configuration-snippet", long.as_str())],
    ));
    let message = &parsed.diagnostics[0].message;
    assert!(message.len() < 300, "{message}");
    assert!(message.contains('…'));
    assert_eq!(parsed.diagnostics[0].value, long);
}

// === registry mechanisms (with a made-up table) ===

fn set_use_regex(v: &str, d: &mut Draft) -> Result<(), String> {
    features::rewrite::use_regex(v, d)
}

const TEST_REGISTRY: &[AnnotationSpec] = &[
    AnnotationSpec {
        name: "use-regex",
        aliases: &["regex-paths"],
        default: "false",
        scope: Scope::Path,
        object: ObjectKind::Ingress,
        on_invalid: Fallback::Ignored,
        support: Support::Full,
        doc: "test",
        parse: set_use_regex,
    },
    AnnotationSpec {
        name: "health-check-path",
        aliases: &[],
        default: "",
        scope: Scope::Path,
        object: ObjectKind::Service,
        on_invalid: Fallback::Ignored,
        support: Support::Full,
        doc: "test",
        parse: set_use_regex,
    },
];

fn parse_test_registry(pairs: &[(&str, &str)]) -> Parsed {
    parse_with(TEST_REGISTRY, &[], &raw(pairs))
}

#[test]
fn aliases_answer_under_both_prefixes() {
    for key in [
        "portico.dev/regex-paths",
        "nginx.ingress.kubernetes.io/regex-paths",
    ] {
        let parsed = parse_test_registry(&[(key, "true")]);
        assert!(parsed.ingress.use_regex, "{key}");
        assert_eq!(parsed.diagnostics, vec![]);
    }
}

#[test]
fn name_beats_alias_and_portico_beats_nginx() {
    let parsed = parse_test_registry(&[
        ("portico.dev/regex-paths", "true"),
        ("portico.dev/use-regex", "false"),
        ("nginx.ingress.kubernetes.io/use-regex", "1"),
    ]);
    assert!(!parsed.ingress.use_regex);
    assert_eq!(
        kinds(&parsed),
        vec![
            ("portico.dev/regex-paths", DiagnosticKind::Conflict),
            (
                "nginx.ingress.kubernetes.io/use-regex",
                DiagnosticKind::Conflict
            ),
        ]
    );

    let parsed = parse_test_registry(&[
        ("portico.dev/regex-paths", "true"),
        ("nginx.ingress.kubernetes.io/use-regex", "false"),
    ]);
    assert!(
        parsed.ingress.use_regex,
        "a portico alias beats the nginx name"
    );
}

#[test]
fn service_annotations_on_an_ingress_are_unsupported() {
    let parsed = parse_test_registry(&[("portico.dev/health-check-path", "/healthz")]);
    assert_eq!(parsed.ingress, IngressAnnotations::default());
    assert_eq!(
        kinds(&parsed),
        vec![("portico.dev/health-check-path", DiagnosticKind::Unsupported)]
    );
    assert!(parsed.diagnostics[0].message.contains("Service"));
}

// === the tables ===

#[test]
fn names_are_unique_across_both_tables() {
    let mut seen = BTreeSet::new();
    let names = registry()
        .iter()
        .flat_map(|s| std::iter::once(&s.name).chain(s.aliases))
        .chain(
            nginx_not_supported()
                .iter()
                .flat_map(|n| std::iter::once(&n.name).chain(n.aliases)),
        );
    for name in names {
        assert!(seen.insert(*name), "{name} is listed twice");
        assert!(
            name.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "{name}: names are lower-case words joined by '-'"
        );
    }
}

#[test]
fn snippets_are_only_listed_as_snippets() {
    for spec in registry() {
        assert!(!spec.name.ends_with("-snippet"), "{}", spec.name);
    }
    for known in nginx_not_supported() {
        assert_eq!(
            known.name.ends_with("-snippet"),
            known.status == NginxStatus::Snippet,
            "{}",
            known.name
        );
    }
}

#[test]
fn docs_lines_are_one_line() {
    for spec in registry() {
        assert!(!spec.doc.contains('\n'), "{}", spec.name);
        assert!(
            spec.doc.ends_with('.'),
            "{}: end the doc with a full stop",
            spec.name
        );
    }
}

// === docs/annotations.md ===

#[test]
fn committed_docs_match_the_registry() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/annotations.md");
    let want = markdown();
    if std::env::var("PORTICO_UPDATE_DOCS").as_deref() == Ok("1") {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).unwrap();
        }
        std::fs::write(&path, &want).unwrap();
        return;
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/annotations.md differs from the annotation registry; regenerate it with \
         `PORTICO_UPDATE_DOCS=1 cargo test -p portico --lib annotations` and commit the result"
    );
}

#[test]
fn docs_list_every_annotation() {
    let docs = markdown();
    for spec in registry() {
        assert!(
            docs.contains(&format!("| `{}` |", spec.name)),
            "{}",
            spec.name
        );
    }
    for known in nginx_not_supported() {
        assert!(
            docs.contains(&format!("| `{}` |", known.name)),
            "{}",
            known.name
        );
    }
}
