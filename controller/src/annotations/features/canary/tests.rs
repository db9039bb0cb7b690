use crate::annotations::CanaryAnnotations;
use crate::annotations::tests::*;
use http::HeaderName;
use portico_dataplane::model::CanaryAffinity;

pub(crate) const VALID: &[Valid] = &[
    // canary
    Valid {
        set: &[("canary", "true")],
        want: |a| a.canary = Some(CanaryAnnotations::default()),
    },
    Valid {
        set: &[("canary", "1")],
        want: |a| a.canary = Some(CanaryAnnotations::default()),
    },
    Valid {
        set: &[("canary", "false")],
        want: |_| {},
    },
    Valid {
        set: &[("canary", "true"), ("canary-weight", "0")],
        want: |a| canary_on(a).weight = Some(0),
    },
    Valid {
        set: &[("canary", "true"), ("canary-weight", "30")],
        want: |a| canary_on(a).weight = Some(30),
    },
    Valid {
        set: &[("canary", "true"), ("canary-weight", "100")],
        want: |a| canary_on(a).weight = Some(100),
    },
    Valid {
        set: &[
            ("canary", "true"),
            ("canary-weight", "5"),
            ("canary-weight-total", "1000"),
        ],
        want: |a| {
            let c = canary_on(a);
            c.weight = Some(5);
            c.weight_total = 1000;
        },
    },
    Valid {
        set: &[("canary", "true"), ("canary-by-header", "X-Canary")],
        want: |a| canary_on(a).by_header = Some(HeaderName::from_static("x-canary")),
    },
    Valid {
        set: &[
            ("canary", "true"),
            ("canary-by-header", "X-Region"),
            ("canary-by-header-value", "eu west"),
        ],
        want: |a| {
            let c = canary_on(a);
            c.by_header = Some(HeaderName::from_static("x-region"));
            c.by_header_value = Some("eu west".into());
        },
    },
    Valid {
        set: &[
            ("canary", "true"),
            ("canary-by-header", "X-Version"),
            ("canary-by-header-pattern", "^v[0-9]+$"),
        ],
        want: |a| {
            let c = canary_on(a);
            c.by_header = Some(HeaderName::from_static("x-version"));
            c.by_header_pattern = Some("^v[0-9]+$".into());
        },
    },
    Valid {
        set: &[("canary", "true"), ("canary-by-cookie", "Canary_Cookie")],
        want: |a| canary_on(a).by_cookie = Some("Canary_Cookie".into()),
    },
    Valid {
        set: &[("canary", "true"), ("affinity-canary-behavior", "legacy")],
        want: |a| canary_on(a).affinity = CanaryAffinity::Legacy,
    },
    Valid {
        set: &[("canary", "true"), ("affinity-canary-behavior", "sticky")],
        want: |a| canary_on(a).affinity = CanaryAffinity::Sticky,
    },
];

pub(crate) const INVALID: &[Invalid] = &[
    Invalid {
        name: "canary",
        fallback: Fallback::Ignored,
        values: &["yes", "on", "enabled"],
        context: NO_CONTEXT,
        want: |_| {},
    },
    Invalid {
        name: "canary-weight",
        fallback: Fallback::Ignored,
        values: &["-1", "abc", "10.5", "4294967296", "10%"],
        context: CANARY,
        want: canary_default,
    },
    Invalid {
        name: "canary-weight-total",
        fallback: Fallback::Ignored,
        values: &["0", "-100", "x"],
        context: CANARY,
        want: canary_default,
    },
    Invalid {
        name: "canary-by-header",
        fallback: Fallback::Ignored,
        values: &["X Canary", "x:y", "é"],
        context: CANARY,
        want: canary_default,
    },
    Invalid {
        name: "canary-by-header-value",
        fallback: Fallback::Ignored,
        values: &["a\u{7f}b", "é", "a\tb"],
        context: CANARY_BY_HEADER,
        want: canary_with_header,
    },
    Invalid {
        name: "canary-by-header-pattern",
        fallback: Fallback::CanaryUnused,
        values: &["(?=x)", "(", r"(a)\1", "(a{1000}){1000}"],
        context: CANARY_BY_HEADER,
        // ingress-nginx: the canary is not used; nothing selects it.
        want: canary_unused,
    },
    Invalid {
        name: "canary-by-cookie",
        fallback: Fallback::Ignored,
        values: &["a b", "a;b", "a=b", "é"],
        context: CANARY,
        want: canary_default,
    },
    // As ingress-nginx: exactly `sticky` or `legacy`; otherwise sticky.
    Invalid {
        name: "affinity-canary-behavior",
        fallback: Fallback::Ignored,
        values: &["Legacy", "none", "sticky,legacy", "true"],
        context: CANARY,
        want: canary_default,
    },
];

fn canary_with_header(a: &mut IngressAnnotations) {
    canary_on(a).by_header = Some(HeaderName::from_static("x-canary"));
}

fn canary_unused(a: &mut IngressAnnotations) {
    canary_on(a).weight = Some(0);
}

fn canary_default(a: &mut IngressAnnotations) {
    a.canary = Some(CanaryAnnotations::default());
}

const CANARY_BY_HEADER: &[(&str, &str)] = &[("canary", "true"), ("canary-by-header", "X-Canary")];

const CANARY: &[(&str, &str)] = &[("canary", "true")];

fn canary_on(a: &mut IngressAnnotations) -> &mut CanaryAnnotations {
    a.canary.get_or_insert_with(CanaryAnnotations::default)
}

#[test]
fn canary_parts_need_canary_true() {
    let parts = [
        ("canary-weight", "10"),
        ("canary-weight-total", "50"),
        ("canary-by-header", "X-Canary"),
        ("canary-by-header-value", "yes"),
        ("canary-by-header-pattern", "y.*"),
        ("canary-by-cookie", "c"),
        ("affinity-canary-behavior", "legacy"),
    ];
    parts_need_a_switch(&parts, "canary", "unless canary is \"true\"");
}

#[test]
fn canary_header_value_and_pattern_need_header() {
    let parsed = parse_checked(&map(
        NGINX_PREFIX,
        &[
            ("canary", "true"),
            ("canary-by-header-value", "yes"),
            ("canary-by-header-pattern", "y.*"),
        ],
    ));
    assert_eq!(parsed.ingress.canary, Some(CanaryAnnotations::default()));
    assert_eq!(
        kinds(&parsed),
        vec![
            (
                "nginx.ingress.kubernetes.io/canary-by-header-value",
                IGNORED
            ),
            (
                "nginx.ingress.kubernetes.io/canary-by-header-pattern",
                IGNORED
            ),
        ]
    );
}

#[test]
fn canary_header_value_wins_over_pattern() {
    let parsed = parse_checked(&map(
        NGINX_PREFIX,
        &[
            ("canary", "true"),
            ("canary-by-header", "X-Canary"),
            ("canary-by-header-value", "yes"),
            ("canary-by-header-pattern", "y.*"),
        ],
    ));
    let canary = parsed.ingress.canary.clone().unwrap();
    assert_eq!(canary.by_header_value.as_deref(), Some("yes"));
    assert_eq!(canary.by_header_pattern, None);
    assert_eq!(
        kinds(&parsed),
        vec![(
            "nginx.ingress.kubernetes.io/canary-by-header-pattern",
            IGNORED
        )]
    );
}

#[test]
fn canary_weight_above_total_is_capped() {
    let parsed = parse_checked(&map(
        NGINX_PREFIX,
        &[("canary", "true"), ("canary-weight", "150")],
    ));
    assert_eq!(parsed.ingress.canary.as_ref().unwrap().weight, Some(100));
    assert_eq!(
        kinds(&parsed),
        vec![(
            "nginx.ingress.kubernetes.io/canary-weight",
            DiagnosticKind::Partial
        )]
    );
}
