//! `docs/annotations.md`, generated from the registry so the docs cannot
//! drift from the code.

use std::fmt::Write as _;

use super::registry::{NginxStatus, ObjectKind, Support, nginx_not_supported, registry};
use super::{Fallback, NGINX_PREFIX, PORTICO_PREFIX};

const INTRO: &str = "\
Portico reads these annotations on Ingress objects. Every behaviour it implements answers to \
two spellings: `portico.dev/<name>` and `nginx.ingress.kubernetes.io/<name>`, so Ingresses \
written for ingress-nginx keep working unchanged where Portico supports the behaviour.

- **Both spellings set:** when the values differ, `portico.dev/<name>` wins and a conflict is \
reported on the other key.
- **Values** are parsed into typed values, never passed on as text to interpret. Leading and \
trailing whitespace is ignored; an empty value counts as not set (reported).
- **Invalid values** are reported (key, value and why) and handled as the *On invalid* column \
says: **ignored** means the annotation is ignored and its default applies; **paths answer 503** \
means the Ingress's paths answer 503 rather than serve something other than what was asked.
- **Snippets:** any `*-snippet` annotation (`configuration-snippet`, `server-snippet`, \
`auth-snippet`, `stream-snippet`, ...) is never run or interpreted; it is reported.
- **Not supported:** ingress-nginx annotations Portico does not implement are reported and \
ignored; so are unknown keys under either prefix. Keys with any other prefix are ignored \
silently.
";

const SERVICE_INTRO: &str = "\
Portico additions, read from the Service an Ingress path or HTTPRoute backendRef sends to, so \
every route to the Service shares them: they describe its endpoints (pods). Health state is \
kept per endpoint and shared by every route; see [health.md](health.md). Both spellings work \
as on Ingresses; on a Service, unknown `portico.dev/*` keys and Ingress annotations are \
reported (as Events on the Service) and other keys are left alone. Invalid values are reported \
and ignored: the default applies, and no route stops being served because of them.
";

const CORS_SECTION: &str = "\
`enable-cors` turns CORS on for an Ingress's paths with ingress-nginx's defaults; the `cors-*` \
annotations change them and do nothing without it (reported). Where Portico differs, it is on \
purpose:

- An origin that may not call, and a request without `Origin`, get no CORS headers, even with \
`cors-allow-origin: \"*\"` (ingress-nginx sends `*` to everyone). Every answer carries \
`Vary: Origin`.
- `*` never comes with credentials: `Access-Control-Allow-Origin: *` is sent without \
`Access-Control-Allow-Credentials` (browsers refuse the pair, so ingress-nginx's header had no \
effect); with listed origins and credentials the caller's origin is echoed.
- Only real preflights (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) are \
answered by Portico; any other `OPTIONS` request is forwarded. A preflight from an origin that \
may not call is forwarded to the backend, as ingress-nginx does.
- Invalid list entries are dropped (reported) and the rest kept.

On `grpc-web` paths, `enable-cors` replaces the `grpc-web-allow-*` settings and gRPC-Web's \
request and status headers are added. HTTPRoutes have the same behaviour through Gateway API's \
`CORS` filter. See [cors.md](cors.md).
";

/// The content of `docs/annotations.md`.
pub fn markdown() -> String {
    let mut out = String::new();
    out.push_str("# Annotations\n\n");
    out.push_str(
        "<!-- Generated from controller/src/annotations (markdown()); do not edit. \
         Regenerate with: PORTICO_UPDATE_DOCS=1 cargo test -p portico --lib annotations -->\n\n",
    );
    out.push_str(INTRO);

    out.push_str("\n## Supported\n\n");
    out.push_str("| Annotation | Aliases | Default | Scope | On invalid | Description |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for spec in registry()
        .iter()
        .filter(|s| s.object == ObjectKind::Ingress)
    {
        let aliases = if spec.aliases.is_empty() {
            "—".to_owned()
        } else {
            spec.aliases
                .iter()
                .map(|a| format!("`{a}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let default = if spec.default.is_empty() {
            "—".to_owned()
        } else {
            format!("`{}`", spec.default)
        };
        let on_invalid = match spec.on_invalid {
            Fallback::Ignored => "ignored",
            Fallback::PathDenied => "paths answer 503",
            Fallback::CanaryUnused => "canary not used",
        };
        let mut doc = spec.doc.to_owned();
        if let Support::Partly(difference) = spec.support {
            let _ = write!(doc, " *Differs from ingress-nginx:* {difference}.");
        }
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} | {} |",
            spec.name,
            aliases,
            default,
            spec.scope.as_str(),
            on_invalid,
            cell(&doc)
        );
    }
    let _ = write!(
        out,
        "\nEach name is used as `{PORTICO_PREFIX}<name>` or `{NGINX_PREFIX}<name>`. \
         Scope *Ingress* applies to the Ingress's virtual hosts as a whole; *path* to each of its paths.\n"
    );

    out.push_str("\n## CORS\n\n");
    out.push_str(CORS_SECTION);

    out.push_str("\n## On Services\n\n");
    out.push_str(SERVICE_INTRO);
    out.push_str("\n| Annotation | Default | Description |\n|---|---|---|\n");
    for spec in registry()
        .iter()
        .filter(|s| s.object == ObjectKind::Service)
    {
        let default = if spec.default.is_empty() {
            "—".to_owned()
        } else {
            format!("`{}`", spec.default)
        };
        let _ = writeln!(
            out,
            "| `{}` | {} | {} |",
            spec.name,
            default,
            cell(spec.doc)
        );
    }

    out.push_str("\n## ingress-nginx annotations\n\n");
    out.push_str(
        "Every `nginx.ingress.kubernetes.io/*` annotation and what Portico does with it.\n\n",
    );
    out.push_str("| Annotation | Portico |\n");
    out.push_str("|---|---|\n");
    let mut rows: Vec<(&str, String)> = Vec::new();
    // Service annotations are Portico's own; ingress-nginx has none.
    for spec in registry()
        .iter()
        .filter(|s| s.object == ObjectKind::Ingress)
    {
        let status = match spec.support {
            Support::Full => "supported".to_owned(),
            Support::Partly(difference) => format!("partly: {difference}"),
        };
        rows.push((spec.name, status));
        for alias in spec.aliases {
            rows.push((alias, format!("alias of `{}`", spec.name)));
        }
    }
    for known in nginx_not_supported() {
        let status = match known.status {
            NginxStatus::NotYet => format!("not supported yet ({})", known.note),
            NginxStatus::Snippet => "never: snippets are not run".to_owned(),
            NginxStatus::Removed => format!("removed from ingress-nginx ({})", known.note),
        };
        rows.push((known.name, status));
        for alias in known.aliases {
            rows.push((alias, format!("alias of `{}`", known.name)));
        }
    }
    rows.sort();
    for (name, status) in rows {
        let _ = writeln!(out, "| `{name}` | {} |", cell(&status));
    }
    out
}

/// Text safe inside a table cell.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}
