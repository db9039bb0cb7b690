//! OpenTelemetry: `enable-opentelemetry`, `opentelemetry-trust-incoming-span`,
//! `opentelemetry-operation-name`. The exporter and the global switch are
//! flags (`--otlp-endpoint`, `--enable-opentelemetry`); these annotations
//! only say what an Ingress's rules do.

use super::prelude::*;
use portico_dataplane::model::Trace;

/// The longest span name accepted: a name, not a document.
const MAX_OPERATION_NAME: usize = 256;

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "enable-opentelemetry",
        "",
        Path,
        Ignored,
        Full,
        "Trace this Ingress's requests (`true`) or not (`false`), whatever the global `--enable-opentelemetry`; unset: the global switch decides. Spans go to `--otlp-endpoint`; without one nothing is traced. See [tracing.md](tracing.md).",
        enable_opentelemetry,
    ),
    spec(
        "opentelemetry-trust-incoming-span",
        "true",
        Path,
        Ignored,
        Full,
        "Continue the trace of the client's `traceparent`/`tracestate` (`true`); `false`: every request starts a new trace and the client's headers are replaced toward the upstream.",
        opentelemetry_trust_incoming_span,
    ),
    spec(
        "opentelemetry-operation-name",
        "",
        Path,
        Ignored,
        Partly("taken literally: a name with nginx variables (`$`) is refused, not expanded"),
        "The server span's name; unset: `HTTP <method>` (e.g. `HTTP GET`). At most 256 printable characters.",
        opentelemetry_operation_name,
    ),
];

fn trace(d: &mut Draft) -> &mut Trace {
    d.out.trace.get_or_insert_with(Trace::default)
}

fn enable_opentelemetry(v: &str, d: &mut Draft) -> Result<(), String> {
    trace(d).enabled = Some(values::go_bool(v)?);
    Ok(())
}

fn opentelemetry_trust_incoming_span(v: &str, d: &mut Draft) -> Result<(), String> {
    trace(d).trust_incoming_span = values::go_bool(v)?;
    Ok(())
}

fn opentelemetry_operation_name(v: &str, d: &mut Draft) -> Result<(), String> {
    if v.contains('$') {
        return Err("nginx variables ($...) are not expanded: write the name itself".into());
    }
    if v.chars().count() > MAX_OPERATION_NAME {
        return Err(format!("longer than {MAX_OPERATION_NAME} characters"));
    }
    if v.chars().any(char::is_control) {
        return Err("control characters are not allowed".into());
    }
    trace(d).operation_name = Some(v.to_owned());
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::annotations::tests::*;
    use portico_dataplane::model::Trace;

    pub(crate) const VALID: &[Valid] = &[
        Valid {
            set: &[
                ("enable-opentelemetry", "true"),
                ("opentelemetry-trust-incoming-span", "false"),
                ("opentelemetry-operation-name", "checkout api"),
            ],
            want: |a| {
                a.trace = Some(Trace {
                    enabled: Some(true),
                    trust_incoming_span: false,
                    operation_name: Some("checkout api".into()),
                })
            },
        },
        // Off for this Ingress whatever the global switch says.
        Valid {
            set: &[("enable-opentelemetry", "0")],
            want: |a| {
                a.trace = Some(Trace {
                    enabled: Some(false),
                    ..Trace::default()
                })
            },
        },
    ];

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "enable-opentelemetry",
            fallback: Fallback::Ignored,
            values: &["yes", "on"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "opentelemetry-trust-incoming-span",
            fallback: Fallback::Ignored,
            values: &["no"],
            context: NO_CONTEXT,
            want: |_| {},
        },
        Invalid {
            name: "opentelemetry-operation-name",
            fallback: Fallback::Ignored,
            values: &["HTTP $request_method $uri", "a\u{7f}b"],
            context: NO_CONTEXT,
            want: |_| {},
        },
    ];
}
