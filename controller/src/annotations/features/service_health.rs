//! Service annotations (Portico's own): active health checks
//! (`health-check-*`), outlier detection (`outlier-*`), `panic-threshold` and
//! `slow-start`.

use super::prelude::*;
use crate::annotations::DiagnosticKind;
use std::time::Duration;

/// The typed annotations of one Service: how Portico keeps its endpoints
/// healthy, for every Ingress and HTTPRoute that sends to it. `None`: the
/// default applies.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ServiceAnnotations {
    /// An absolute path: checks are HTTP GETs of it (else TCP connects).
    pub health_check_path: Option<String>,
    pub health_check_port: Option<u16>,
    pub health_check_interval: Option<Duration>,
    /// At most the interval.
    pub health_check_timeout: Option<Duration>,
    /// At least 1.
    pub health_check_healthy_threshold: Option<u32>,
    /// At least 1.
    pub health_check_unhealthy_threshold: Option<u32>,
    /// Inclusive ranges of 100..=599.
    pub health_check_expected_statuses: Option<Vec<(u16, u16)>>,
    pub outlier_consecutive_5xx: Option<u32>,
    pub outlier_consecutive_errors: Option<u32>,
    pub outlier_base_ejection_time: Option<Duration>,
    pub outlier_max_ejection_time: Option<Duration>,
    /// 0 to 100.
    pub outlier_max_ejected_percent: Option<u8>,
    /// 0 to 100.
    pub panic_threshold: Option<u8>,
    /// `Some(ZERO)`: explicitly off.
    pub slow_start: Option<Duration>,
}

impl ServiceAnnotations {
    /// Whether any `health-check-*` annotation asks for active checks.
    pub fn wants_health_checks(&self) -> bool {
        self.health_check_path.is_some()
            || self.health_check_port.is_some()
            || self.health_check_interval.is_some()
            || self.health_check_timeout.is_some()
            || self.health_check_healthy_threshold.is_some()
            || self.health_check_unhealthy_threshold.is_some()
            || self.health_check_expected_statuses.is_some()
    }
}

pub(super) const SPECS: &[AnnotationSpec] = &[
    service(
        "health-check-path",
        "",
        "Active health checks: every endpoint is sent `GET <path>` (HTTP/1.1, or HTTP/2 for H2C backends; over TLS for HTTPS backends) every interval by one checker per endpoint, however many routes use it; gRPC backends (GRPC, GRPCS) are asked `grpc.health.v1.Health/Check` instead. Any `health-check-*` annotation turns checks on; without a path they are TCP connects (plus the TLS handshake for TLS backends). An absolute path, e.g. `/healthz`.",
        health_check_path,
    ),
    service(
        "health-check-port",
        "",
        "Probe this port of each endpoint's address instead of the endpoint's own port, 1 to 65535.",
        health_check_port,
    ),
    service(
        "health-check-interval",
        "10s",
        "Time between two probes of one endpoint (less up to a tenth, at random, so checkers spread out). Whole seconds or one unit (`500ms`, `10s`, `1m`), at most 24h.",
        health_check_interval,
    ),
    service(
        "health-check-timeout",
        "2s",
        "A probe that has not succeeded by then fails. Same syntax; more than the interval is capped at the interval.",
        health_check_timeout,
    ),
    service(
        "health-check-healthy-threshold",
        "2",
        "Passing probes in a row that make an unhealthy endpoint healthy again, at least 1.",
        health_check_healthy_threshold,
    ),
    service(
        "health-check-unhealthy-threshold",
        "3",
        "Failing probes in a row that make an endpoint unhealthy (it gets no requests), at least 1. A stopped endpoint is out within this many intervals plus one.",
        health_check_unhealthy_threshold,
    ),
    service(
        "health-check-expected-statuses",
        "200-399",
        "HTTP statuses that pass: comma-separated codes and ranges, e.g. `200,204,300-399`, within 100-599.",
        health_check_expected_statuses,
    ),
    service(
        "outlier-consecutive-5xx",
        "5",
        "Passive outlier detection: this many 5xx responses in a row from one endpoint eject it (it gets no requests) for `outlier-base-ejection-time` × the number of times it was ejected, capped at `outlier-max-ejection-time`; `0` turns this off.",
        outlier_consecutive_5xx,
    ),
    service(
        "outlier-consecutive-errors",
        "5",
        "Like outlier-consecutive-5xx, for attempts that got no response at all: connect failures, timeouts, resets; `0` turns this off.",
        outlier_consecutive_errors,
    ),
    service(
        "outlier-base-ejection-time",
        "30s",
        "How long a first ejection lasts; the n-th lasts n times as long. Whole seconds or one unit (`500ms`, `30s`, `5m`, `1h`), at most 24h.",
        outlier_base_ejection_time,
    ),
    service(
        "outlier-max-ejection-time",
        "5m",
        "The longest an ejection lasts. An endpoint that stays in for this long starts over at the base time.",
        outlier_max_ejection_time,
    ),
    service(
        "outlier-max-ejected-percent",
        "50",
        "At most this share (percent, 0 to 100) of a backend's endpoints is ejected at once (rounded down: with 50, one of two or three endpoints).",
        outlier_max_ejected_percent,
    ),
    service(
        "slow-start",
        "0",
        "An endpoint that becomes eligible (a new pod, recovered from failing health checks, back from an ejection) ramps from a tenth of its share of requests to all of it over this window, e.g. `30s`, so a cold pod is not flooded; `0` turns it off.",
        slow_start,
    ),
    service(
        "panic-threshold",
        "50",
        "Panic mode: when fewer than this share (percent, 0 to 100) of the endpoints are eligible (ready, passing health checks, not ejected), requests are spread over all ready endpoints, as Envoy does, rather than piled onto the few left; `0` turns panic mode off. No ready endpoint at all: 503 (gRPC-shaped for gRPC).",
        panic_threshold,
    ),
];

fn health_check_path(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_path = Some(values::absolute_path(v)?);
    Ok(())
}

fn health_check_port(v: &str, d: &mut Draft) -> Result<(), String> {
    let port = values::uint(v)?;
    d.svc.health_check_port = Some(
        u16::try_from(port)
            .ok()
            .filter(|p| *p > 0)
            .ok_or("must be a port from 1 to 65535")?,
    );
    Ok(())
}

fn health_check_interval(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_interval = Some(values::timeout(v)?);
    Ok(())
}

fn health_check_timeout(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_timeout = Some(values::timeout(v)?);
    Ok(())
}

fn threshold(v: &str) -> Result<u32, String> {
    let n = values::uint(v)?;
    if n == 0 {
        return Err("must be at least 1".into());
    }
    Ok(n)
}

fn health_check_healthy_threshold(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_healthy_threshold = Some(threshold(v)?);
    Ok(())
}

fn health_check_unhealthy_threshold(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_unhealthy_threshold = Some(threshold(v)?);
    Ok(())
}

fn health_check_expected_statuses(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.health_check_expected_statuses = Some(status_ranges(v)?);
    Ok(())
}

fn outlier_consecutive_5xx(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.outlier_consecutive_5xx = Some(values::uint(v)?);
    Ok(())
}

fn outlier_consecutive_errors(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.outlier_consecutive_errors = Some(values::uint(v)?);
    Ok(())
}

fn outlier_base_ejection_time(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.outlier_base_ejection_time = Some(values::timeout(v)?);
    Ok(())
}

fn outlier_max_ejection_time(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.outlier_max_ejection_time = Some(values::timeout(v)?);
    Ok(())
}

fn outlier_max_ejected_percent(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.outlier_max_ejected_percent = Some(percent(v)?);
    Ok(())
}

fn panic_threshold(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.panic_threshold = Some(percent(v)?);
    Ok(())
}

fn slow_start(v: &str, d: &mut Draft) -> Result<(), String> {
    d.svc.slow_start = Some(if v == "0" {
        std::time::Duration::ZERO
    } else {
        values::timeout(v)?
    });
    Ok(())
}

/// A probe may not outlive the interval that schedules the next one.
pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    let interval = d
        .svc
        .health_check_interval
        .unwrap_or(std::time::Duration::from_secs(10));
    if let Some(timeout) = d.svc.health_check_timeout
        && timeout > interval
    {
        d.svc.health_check_timeout = Some(interval);
        d.note_kind(
            notes,
            "health-check-timeout",
            DiagnosticKind::Partial,
            &format!("longer than the interval ({interval:?}); capped at the interval"),
        );
    }
}

/// HTTP status codes and inclusive ranges, comma-separated: `200-399`,
/// `200,204`, within 100-599.
fn status_ranges(s: &str) -> Result<Vec<(u16, u16)>, String> {
    const SYNTAX: &str =
        "expected status codes or ranges from 100 to 599, comma-separated, e.g. 200-399 or 200,204";
    let code = |t: &str| -> Result<u16, String> {
        let t = t.trim();
        let (digits, rest) = values::split_digits(t);
        if digits.len() != 3 || !rest.is_empty() {
            return Err(SYNTAX.into());
        }
        let n: u16 = digits.parse().map_err(|_| SYNTAX.to_owned())?;
        if !(100..=599).contains(&n) {
            return Err(SYNTAX.into());
        }
        Ok(n)
    };
    let mut out = Vec::new();
    for part in s.split(',') {
        let (min, max) = match part.split_once('-') {
            Some((a, b)) => (code(a)?, code(b)?),
            None => {
                let c = code(part)?;
                (c, c)
            }
        };
        if min > max {
            return Err(format!("range {min}-{max} is empty"));
        }
        out.push((min, max));
    }
    if out.len() > 32 {
        return Err("at most 32 codes or ranges".into());
    }
    Ok(out)
}

/// A whole percentage, 0 to 100.
fn percent(s: &str) -> Result<u8, String> {
    let n = values::uint(s).map_err(|_| "expected a whole percentage from 0 to 100".to_owned())?;
    u8::try_from(n)
        .ok()
        .filter(|n| *n <= 100)
        .ok_or_else(|| "expected a whole percentage from 0 to 100".to_owned())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;
    use crate::annotations::{ObjectKind, Parsed, ServiceAnnotations, parse_service, quote};
    use std::{collections::BTreeMap, time::Duration};

    pub(crate) struct ServiceValid {
        pub(crate) set: &'static [(&'static str, &'static str)],
        pub(crate) want: fn(&mut ServiceAnnotations),
    }

    pub(crate) const SERVICE_VALID: &[ServiceValid] = &[
        ServiceValid {
            set: &[("slow-start", "30s")],
            want: |s| s.slow_start = Some(Duration::from_secs(30)),
        },
        ServiceValid {
            set: &[("slow-start", "0")],
            want: |s| s.slow_start = Some(Duration::ZERO),
        },
        ServiceValid {
            set: &[
                ("health-check-path", "/healthz"),
                ("health-check-port", "8081"),
                ("health-check-interval", "5s"),
                ("health-check-timeout", "500ms"),
            ],
            want: |s| {
                s.health_check_path = Some("/healthz".into());
                s.health_check_port = Some(8081);
                s.health_check_interval = Some(Duration::from_secs(5));
                s.health_check_timeout = Some(Duration::from_millis(500));
            },
        },
        ServiceValid {
            set: &[
                ("health-check-healthy-threshold", "1"),
                ("health-check-unhealthy-threshold", "10"),
                ("health-check-expected-statuses", "200, 204,300-399"),
            ],
            want: |s| {
                s.health_check_healthy_threshold = Some(1);
                s.health_check_unhealthy_threshold = Some(10);
                s.health_check_expected_statuses = Some(vec![(200, 200), (204, 204), (300, 399)]);
            },
        },
        ServiceValid {
            set: &[
                ("outlier-consecutive-5xx", "3"),
                ("outlier-consecutive-errors", "0"),
            ],
            want: |s| {
                s.outlier_consecutive_5xx = Some(3);
                s.outlier_consecutive_errors = Some(0);
            },
        },
        ServiceValid {
            set: &[
                ("outlier-base-ejection-time", "10"),
                ("outlier-max-ejection-time", "2m"),
            ],
            want: |s| {
                s.outlier_base_ejection_time = Some(Duration::from_secs(10));
                s.outlier_max_ejection_time = Some(Duration::from_secs(120));
            },
        },
        ServiceValid {
            set: &[
                ("outlier-max-ejected-percent", "100"),
                ("panic-threshold", "0"),
            ],
            want: |s| {
                s.outlier_max_ejected_percent = Some(100);
                s.panic_threshold = Some(0);
            },
        },
    ];

    /// A Service annotation set to each of `values`: one `Invalid(Ignored)`
    /// diagnostic and nothing set.
    pub(crate) struct ServiceInvalid {
        pub(crate) name: &'static str,
        pub(crate) values: &'static [&'static str],
    }

    pub(crate) const SERVICE_INVALID: &[ServiceInvalid] = &[
        ServiceInvalid {
            name: "slow-start",
            values: &["0s", "slow", "2d"],
        },
        ServiceInvalid {
            name: "health-check-path",
            values: &["healthz", "//x", "/a b", "/$x"],
        },
        ServiceInvalid {
            name: "health-check-port",
            values: &["0", "65536", "http"],
        },
        ServiceInvalid {
            name: "health-check-interval",
            values: &["0", "often", "48h"],
        },
        ServiceInvalid {
            name: "health-check-timeout",
            values: &["0ms", "-1"],
        },
        ServiceInvalid {
            name: "health-check-healthy-threshold",
            values: &["0", "two"],
        },
        ServiceInvalid {
            name: "health-check-unhealthy-threshold",
            values: &["0", "-3"],
        },
        ServiceInvalid {
            name: "health-check-expected-statuses",
            values: &["2xx", "99", "600", "399-200", "200-", "200;204"],
        },
        ServiceInvalid {
            name: "outlier-consecutive-5xx",
            values: &["-1", "five", "1.5"],
        },
        ServiceInvalid {
            name: "outlier-consecutive-errors",
            values: &["-1", "x"],
        },
        ServiceInvalid {
            name: "outlier-base-ejection-time",
            values: &["0", "soon", "25h"],
        },
        ServiceInvalid {
            name: "outlier-max-ejection-time",
            values: &["0s", "1d"],
        },
        ServiceInvalid {
            name: "outlier-max-ejected-percent",
            values: &["101", "50%", "-5"],
        },
        ServiceInvalid {
            name: "panic-threshold",
            values: &["200", "half"],
        },
    ];

    pub(crate) fn parse_service_checked(annotations: &BTreeMap<String, String>) -> Parsed {
        let parsed = parse_service(annotations);
        for d in &parsed.diagnostics {
            assert!(d.message.starts_with(&d.key), "{:?}", d.message);
            assert!(d.message.contains(&quote(&d.value)), "{:?}", d.message);
        }
        parsed
    }

    #[test]
    fn valid_service_values_under_both_spellings() {
        for case in SERVICE_VALID {
            let mut want = ServiceAnnotations::default();
            (case.want)(&mut want);
            for prefix in PREFIXES {
                let parsed = parse_service_checked(&map(prefix, case.set));
                assert_eq!(parsed.diagnostics, vec![], "{prefix}: {:?}", case.set);
                assert_eq!(parsed.service, want, "{prefix}: {:?}", case.set);
                assert_eq!(parsed.ingress, IngressAnnotations::default());
            }
        }
    }

    #[test]
    fn invalid_service_values_are_reported_and_ignored() {
        for case in SERVICE_INVALID {
            assert_eq!(
                registered(case.name).object,
                ObjectKind::Service,
                "{}",
                case.name
            );
            for prefix in PREFIXES {
                for value in case.values {
                    let parsed = parse_service_checked(&map(prefix, &[(case.name, *value)]));
                    let key = format!("{prefix}{}", case.name);
                    assert_eq!(parsed.diagnostics.len(), 1, "{key}={value:?}");
                    let d = &parsed.diagnostics[0];
                    assert_eq!(
                        d.kind,
                        DiagnosticKind::Invalid(Fallback::Ignored),
                        "{}",
                        d.message
                    );
                    assert!(d.message.contains("invalid"), "{}", d.message);
                    assert_eq!(
                        parsed.service,
                        ServiceAnnotations::default(),
                        "{key}={value:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_health_check_timeout_longer_than_the_interval_is_capped() {
        let parsed = parse_service_checked(&raw(&[
            ("portico.dev/health-check-interval", "1s"),
            ("portico.dev/health-check-timeout", "5s"),
        ]));
        assert_eq!(
            parsed.service.health_check_timeout,
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            kinds(&parsed),
            vec![("portico.dev/health-check-timeout", DiagnosticKind::Partial)]
        );
        assert!(parsed.service.wants_health_checks());
        assert!(!ServiceAnnotations::default().wants_health_checks());
    }
}
