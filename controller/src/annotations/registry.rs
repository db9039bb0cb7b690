//! The tables: what Portico implements ([`registry`]) and every other
//! ingress-nginx annotation ([`nginx_not_supported`]), for diagnostics and
//! the generated docs.

use super::Fallback;
use super::parsers::{self, Draft};

/// Parses one trimmed, non-empty value into the draft, or says why not.
pub(crate) type ParseFn = fn(&str, &mut Draft) -> Result<(), String>;

/// One behaviour Portico implements, under `portico.dev/<name>` and
/// `nginx.ingress.kubernetes.io/<name>` (and the same for each alias).
#[derive(Debug)]
pub struct AnnotationSpec {
    /// The ingress-nginx name without prefix, e.g. `rewrite-target`.
    pub name: &'static str,
    /// Other names for the same behaviour (same two prefixes). The name wins
    /// over an alias of the same prefix.
    pub aliases: &'static [&'static str],
    /// The value that applies when the annotation is absent, as shown in the
    /// docs; empty when "absent" simply means "off".
    pub default: &'static str,
    pub scope: Scope,
    /// Which kind of object carries the annotation.
    pub object: ObjectKind,
    /// What happens when the value is invalid.
    pub on_invalid: Fallback,
    pub support: Support,
    /// One line for the docs table.
    pub doc: &'static str,
    pub(crate) parse: ParseFn,
}

/// Where an annotation takes effect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scope {
    /// The whole object: its virtual host(s) (nginx `server`).
    Ingress,
    /// Each path of the object (nginx `location`).
    Path,
}

/// The kind of object an annotation is read from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ObjectKind {
    Ingress,
    /// Reserved for per-Service settings such as health checks.
    Service,
}

/// How closely an implemented annotation follows ingress-nginx.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Support {
    Full,
    /// Implemented with this difference.
    Partly(&'static str),
}

/// An ingress-nginx annotation Portico does not implement. A key naming one
/// yields an `Unsupported` diagnostic (a `*-snippet` key a `Snippet` one).
#[derive(Debug)]
pub struct NginxAnnotation {
    pub name: &'static str,
    pub aliases: &'static [&'static str],
    pub status: NginxStatus,
    /// Short: the feature area, or what to use instead.
    pub note: &'static str,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NginxStatus {
    NotYet,
    /// Raw nginx configuration: never run.
    Snippet,
    /// Removed from ingress-nginx itself.
    Removed,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ingress => "Ingress",
            Scope::Path => "path",
        }
    }
}

impl ObjectKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ObjectKind::Ingress => "Ingress",
            ObjectKind::Service => "Service",
        }
    }

    pub(crate) fn article(self) -> &'static str {
        match self {
            ObjectKind::Ingress => "an",
            ObjectKind::Service => "a",
        }
    }
}

impl NginxStatus {
    /// One clause for a diagnostic or the docs.
    pub fn describe(self, note: &str) -> String {
        match self {
            NginxStatus::NotYet => format!("not supported by Portico yet ({note})"),
            NginxStatus::Snippet => "snippets are never run or interpreted by Portico".to_owned(),
            NginxStatus::Removed => format!("removed from ingress-nginx ({note})"),
        }
    }
}

impl AnnotationSpec {
    /// "the default (60) applies" or, without a default, "it stays unset".
    pub(crate) fn default_phrase(&self) -> String {
        if self.default.is_empty() {
            "it stays unset".to_owned()
        } else {
            format!("the default ({}) applies", self.default)
        }
    }

    /// What the invalid value leads to, for messages.
    pub(crate) fn fallback_phrase(&self) -> String {
        match self.on_invalid {
            Fallback::Ignored => format!("ignored, {}", self.default_phrase()),
            Fallback::PathDenied => "the Ingress's paths answer 503".to_owned(),
            Fallback::CanaryUnused => {
                "the canary is not used: its requests go to the mainline".to_owned()
            }
        }
    }
}

/// The behaviours Portico implements, in the order they are parsed (and
/// documented).
pub fn registry() -> &'static [AnnotationSpec] {
    REGISTRY
}

/// Every other ingress-nginx annotation.
pub fn nginx_not_supported() -> &'static [NginxAnnotation] {
    NGINX_NOT_SUPPORTED
}

const fn spec(
    name: &'static str,
    default: &'static str,
    scope: Scope,
    on_invalid: Fallback,
    support: Support,
    doc: &'static str,
    parse: ParseFn,
) -> AnnotationSpec {
    AnnotationSpec {
        name,
        aliases: &[],
        default,
        scope,
        object: ObjectKind::Ingress,
        on_invalid,
        support,
        doc,
        parse,
    }
}

/// A Service annotation: a Portico addition, read from the Service every
/// route to it shares; invalid values are ignored (the default applies).
const fn service(
    name: &'static str,
    default: &'static str,
    doc: &'static str,
    parse: ParseFn,
) -> AnnotationSpec {
    AnnotationSpec {
        object: ObjectKind::Service,
        ..spec(
            name,
            default,
            Scope::Ingress,
            Fallback::Ignored,
            Support::Full,
            doc,
            parse,
        )
    }
}

use Fallback::{Ignored, PathDenied};
use Scope::{Ingress, Path};
use Support::{Full, Partly};

static REGISTRY: &[AnnotationSpec] = &[
    spec(
        "rewrite-target",
        "",
        Path,
        PathDenied,
        Partly("only `$1`..`$9` may follow `$`: nginx variables and query strings are refused"),
        "Path sent upstream instead of the request's: a template with capture references `$1`..`$9` of the path's regular expression (ingress-nginx makes the paths regular expressions when this is set).",
        parsers::rewrite_target,
    ),
    spec(
        "use-regex",
        "false",
        Path,
        Ignored,
        Partly(
            "patterns use the regex crate's syntax, not PCRE: no look-around or backreferences; Exact paths on a regex host stay exact",
        ),
        "Paths are case-insensitive regular expressions matched from the start, for every Ingress of the same host (as in ingress-nginx; the other Ingresses get a RegexHost warning). Booleans take Go's spellings: true/false, 1/0, t/f, TRUE/FALSE, True/False.",
        parsers::use_regex,
    ),
    spec(
        "app-root",
        "",
        Ingress,
        Ignored,
        Full,
        "Requests for `/` are redirected (302) to this absolute path, e.g. `/app`.",
        parsers::app_root,
    ),
    spec(
        "permanent-redirect",
        "",
        Path,
        PathDenied,
        Partly(
            "nginx variables such as `$request_uri` are not expanded: a value with `$` is invalid",
        ),
        "Every request is answered with a redirect to this absolute http(s) URL, code from permanent-redirect-code. When temporal-redirect is also set it wins, as in ingress-nginx.",
        parsers::permanent_redirect,
    ),
    spec(
        "permanent-redirect-code",
        "301",
        Path,
        Ignored,
        Partly(
            "only 301, 302, 303, 307 and 308; ingress-nginx also passed 300, 304, 305 and 306 through",
        ),
        "Status code of permanent-redirect.",
        parsers::permanent_redirect_code,
    ),
    spec(
        "temporal-redirect",
        "",
        Path,
        PathDenied,
        Partly(
            "nginx variables such as `$request_uri` are not expanded: a value with `$` is invalid",
        ),
        "Every request is answered with a redirect to this absolute http(s) URL, code from temporal-redirect-code.",
        parsers::temporal_redirect,
    ),
    spec(
        "temporal-redirect-code",
        "302",
        Path,
        Ignored,
        Partly(
            "only 301, 302, 303, 307 and 308; ingress-nginx also passed 300, 304, 305 and 306 through",
        ),
        "Status code of temporal-redirect.",
        parsers::temporal_redirect_code,
    ),
    spec(
        "upstream-vhost",
        "",
        Path,
        PathDenied,
        Partly("nginx variables are not expanded"),
        "`Host` header sent upstream instead of the request's: `host` or `host:port`. Invalid: the paths answer 503, since the backend would serve another virtual host.",
        parsers::upstream_vhost,
    ),
    spec(
        "x-forwarded-prefix",
        "",
        Path,
        Ignored,
        Full,
        "Sends `X-Forwarded-Prefix` with this URL path (e.g. `/api`) to the backend.",
        parsers::x_forwarded_prefix,
    ),
    spec(
        "proxy-connect-timeout",
        "5",
        Path,
        Ignored,
        Full,
        "Timeout for connecting to a backend: whole seconds as ingress-nginx, or one nginx unit (`500ms`, `30s`, `5m`, `1h`); more than 0, at most 24h.",
        parsers::proxy_connect_timeout,
    ),
    spec(
        "proxy-read-timeout",
        "60",
        Path,
        Ignored,
        Full,
        "Longest wait for the backend's response headers and between two pieces of its body; same syntax and bounds as proxy-connect-timeout.",
        parsers::proxy_read_timeout,
    ),
    spec(
        "proxy-send-timeout",
        "60",
        Path,
        Ignored,
        Full,
        "Longest wait between two pieces of the request body sent to the backend; same syntax and bounds as proxy-connect-timeout.",
        parsers::proxy_send_timeout,
    ),
    spec(
        "proxy-body-size",
        "1m",
        Path,
        Ignored,
        Full,
        "Largest request body accepted (larger: 413): bytes, or a number with `k`, `m` or `g` (either case), e.g. `8m`; `0` means unlimited.",
        parsers::proxy_body_size,
    ),
    spec(
        "backend-protocol",
        "HTTP",
        Path,
        Ignored,
        Partly(
            "AUTO_HTTP, FCGI and AJP are not supported (invalid: HTTP is used); H2C is a Portico addition",
        ),
        "Protocol spoken to the backend: HTTP, HTTPS (HTTP/1.1 over TLS), GRPC, GRPCS (HTTP/2 over TLS) or H2C (cleartext HTTP/2), any case. TLS settings: `proxy-ssl-*`.",
        parsers::backend_protocol,
    ),
    spec(
        "canary",
        "false",
        Ingress,
        Ignored,
        Full,
        "Makes this Ingress a canary of the Ingress with the same host and path; the canary-* annotations apply only with `\"true\"`. Invalid: not a canary.",
        parsers::canary,
    ),
    spec(
        "canary-weight",
        "0",
        Ingress,
        Ignored,
        Full,
        "Share of requests sent to the canary, out of canary-weight-total; a larger value is capped at the total. Tried after canary-by-header and canary-by-cookie.",
        parsers::canary_weight,
    ),
    spec(
        "canary-weight-total",
        "100",
        Ingress,
        Ignored,
        Full,
        "Total that canary-weight is a share of; at least 1.",
        parsers::canary_weight_total,
    ),
    spec(
        "canary-by-header",
        "",
        Ingress,
        Ignored,
        Full,
        "Request header that picks the canary: `always` sends to it, `never` keeps away from it, other values fall through to canary-by-cookie and canary-weight.",
        parsers::canary_by_header,
    ),
    spec(
        "canary-by-header-value",
        "",
        Ingress,
        Ignored,
        Full,
        "The canary-by-header value that sends to the canary (instead of `always`); needs canary-by-header.",
        parsers::canary_by_header_value,
    ),
    spec(
        "canary-by-header-pattern",
        "",
        Ingress,
        Fallback::CanaryUnused,
        Partly("the regex crate's syntax, not PCRE: no look-around or backreferences"),
        "Regular expression searched in the canary-by-header value to send to the canary; needs canary-by-header, ignored when canary-by-header-value is set (as ingress-nginx).",
        parsers::canary_by_header_pattern,
    ),
    spec(
        "canary-by-cookie",
        "",
        Ingress,
        Ignored,
        Full,
        "Cookie that picks the canary: `always` sends to it, `never` keeps away from it, other values fall through to canary-weight.",
        parsers::canary_by_cookie,
    ),
    spec(
        "affinity-canary-behavior",
        "sticky",
        Ingress,
        Ignored,
        Partly(
            "canary-by-header and canary-by-cookie decide before the session cookie, and an answer they force onto the canary sets no session cookie (ingress-nginx keeps a mainline session on the mainline whatever the header, and starts a canary session from a forced answer)",
        ),
        "On the canary Ingress, when the main Ingress has `affinity: cookie`. `sticky`: a session stays on the side it started on: canary-weight places new sessions, and a session started by a canary answer stays on the canary while canary-weight is above 0. `legacy`: canary-weight decides per request whatever the session cookie, and canary answers set no session cookie.",
        parsers::affinity_canary_behavior,
    ),
    AnnotationSpec {
        aliases: &["whitelist-source-range"],
        ..spec(
            "allowlist-source-range",
            "",
            Ingress,
            PathDenied,
            Full,
            "Only clients in these ranges may use the Ingress (CIDR ranges or addresses, IPv4 and IPv6, comma-separated); others get 403. Overrides `--allowlist-source-range`. The client is the peer, the PROXY protocol source, or with `--trusted-proxies` the `X-Forwarded-For` entry (docs/client-address.md). Fails closed: an invalid list makes the paths answer 503.",
            parsers::allowlist_source_range,
        )
    },
    spec(
        "denylist-source-range",
        "",
        Ingress,
        PathDenied,
        Full,
        "Clients in these ranges get 403 (checked before the allow list, as nginx's `deny` before `allow`). Overrides `--denylist-source-range`. Fails closed: an invalid list makes the paths answer 503.",
        parsers::denylist_source_range,
    ),
    spec(
        "server-alias",
        "",
        Ingress,
        Ignored,
        Partly("no regular-expression names; invalid entries are dropped and the rest kept"),
        "More host names served like the Ingress's hosts, comma-separated; `*.example.com` wildcards allowed.",
        parsers::server_alias,
    ),
    spec(
        "default-backend",
        "",
        Path,
        Ignored,
        Full,
        "Service in the Ingress's namespace (its first port) that answers when the path's Service has no endpoints, and renders the paths' custom error pages instead of `--default-backend-service` (docs/error-pages.md).",
        parsers::default_backend,
    ),
    spec(
        "custom-http-errors",
        "",
        Path,
        Ignored,
        Partly(
            "the answer keeps its original status whatever success status the error backend answers with (ingress-nginx passes the error backend's status on), and the page is asked for with GET (HEAD for HEAD), not the client's method",
        ),
        "Statuses (400 to 599, comma-separated) whose answers get their body from the error backend (`default-backend`, else `--default-backend-service`), with ingress-nginx's X-Code, X-Format, X-Original-URI, X-Namespace, X-Ingress-Name, X-Service-Name, X-Service-Port and X-Request-ID headers; the answer keeps its status. Overrides `--custom-http-errors`. gRPC calls are never intercepted. Invalid entries are dropped and reported.",
        parsers::custom_http_errors,
    ),
    spec(
        "disable-proxy-intercept-errors",
        "false",
        Path,
        Ignored,
        Full,
        "`true`: upstream answers with a `custom-http-errors` status pass through unchanged; only the proxy's own errors (no endpoints, upstream unreachable, refused by a filter) get the error page.",
        parsers::disable_proxy_intercept_errors,
    ),
    spec(
        "custom-headers",
        "",
        Path,
        Ignored,
        Partly(
            "the value is the headers themselves, one `Name: value` per line, not a ConfigMap reference: Portico does not read ConfigMaps",
        ),
        "Response headers to set, one `Name: value` per line; the framing and connection headers (Content-Length, Transfer-Encoding, Connection, ...) and Host are refused, so the whole annotation is ignored.",
        parsers::custom_headers,
    ),
    spec(
        "ssl-redirect",
        "true",
        Ingress,
        Ignored,
        Full,
        "Plain-HTTP requests for hosts with TLS (a `spec.tls` entry of any Ingress, or an HTTPRoute `policies.tls`) are answered 308 to `https://<host><request URI>`, without a port unless `--https-redirect-port` is set. `/.well-known/acme-challenge/` is never redirected, nor a request carrying `X-Forwarded-Proto: https`.",
        parsers::ssl_redirect,
    ),
    spec(
        "force-ssl-redirect",
        "false",
        Ingress,
        Ignored,
        Full,
        "Redirect plain HTTP to HTTPS (as ssl-redirect) even for hosts without TLS, for TLS terminated by a load balancer in front; such a balancer must send `X-Forwarded-Proto: https` for what it received over HTTPS.",
        parsers::force_ssl_redirect,
    ),
    spec(
        "preserve-trailing-slash",
        "false",
        Ingress,
        Ignored,
        Full,
        "Keep a trailing `/` of the request URI in HTTPS redirects (by default one is dropped, as ingress-nginx does).",
        parsers::preserve_trailing_slash,
    ),
    spec(
        "hsts",
        "true",
        Ingress,
        Ignored,
        Partly(
            "a ConfigMap key in ingress-nginx; here per Ingress, with the global default from `--hsts`",
        ),
        "Send `Strict-Transport-Security` on HTTPS responses for the Ingress's TLS hosts.",
        parsers::hsts,
    ),
    spec(
        "hsts-max-age",
        "15724800",
        Ingress,
        Ignored,
        Partly(
            "a ConfigMap key in ingress-nginx; here per Ingress, with the global default from `--hsts-max-age`",
        ),
        "HSTS `max-age` in seconds.",
        parsers::hsts_max_age,
    ),
    spec(
        "hsts-include-subdomains",
        "true",
        Ingress,
        Ignored,
        Partly(
            "a ConfigMap key in ingress-nginx; here per Ingress, with the global default from `--hsts-include-subdomains`",
        ),
        "Add `includeSubDomains` to HSTS.",
        parsers::hsts_include_subdomains,
    ),
    spec(
        "hsts-preload",
        "false",
        Ingress,
        Ignored,
        Partly(
            "a ConfigMap key in ingress-nginx; here per Ingress, with the global default from `--hsts-preload`",
        ),
        "Add `preload` to HSTS.",
        parsers::hsts_preload,
    ),
    spec(
        "auth-tls-secret",
        "",
        Ingress,
        PathDenied,
        Partly(
            "a failed verification ends the TLS handshake instead of answering 400; the Secret must be of type kubernetes.io/tls or Opaque (the types watched), with the CA bundle in `ca.crt`",
        ),
        "`namespace/name` of a Secret whose `ca.crt` (PEM) holds the CAs client certificates must chain to, on the Ingress's hosts. Verification is chosen by the TLS SNI; a request whose Host has this policy on a connection whose SNI did not answers 421 (403 over plain HTTP). An unusable Secret makes the paths answer 503, never serve unverified.",
        parsers::auth_tls_secret,
    ),
    spec(
        "auth-tls-verify-client",
        "on",
        Ingress,
        Ignored,
        Full,
        "`on` (a certificate is required), `optional` (verified when sent), `optional_no_ca` (any certificate accepted; the upstream learns whether it verified), `off`. `ssl-client-verify`, `ssl-client-subject-dn` and `ssl-client-issuer-dn` are sent upstream; such headers from clients are always removed.",
        parsers::auth_tls_verify_client,
    ),
    spec(
        "auth-tls-verify-depth",
        "1",
        Ingress,
        Ignored,
        Full,
        "How many certificates the client's chain may hold below the CA (1: issued by the CA directly), 1 to 255.",
        parsers::auth_tls_verify_depth,
    ),
    spec(
        "auth-tls-pass-certificate-to-upstream",
        "false",
        Ingress,
        Ignored,
        Full,
        "Send the client's certificate upstream as URL-encoded PEM in `ssl-client-cert`.",
        parsers::auth_tls_pass_certificate,
    ),
    spec(
        "auth-type",
        "",
        Path,
        PathDenied,
        Partly("`digest` is not supported: its paths answer 503"),
        "`basic`: HTTP Basic authentication against the users of `auth-secret`; a request without a listed user's password gets 401 with `WWW-Authenticate: Basic realm=\"<auth-realm>\"` (gRPC callers UNAUTHENTICATED). Checked after the IP lists and client certificates. Fails closed: an invalid value, a missing or unusable Secret makes the paths answer 503.",
        parsers::auth_type,
    ),
    spec(
        "auth-secret",
        "",
        Path,
        PathDenied,
        Partly(
            "the Secret must be of type Opaque; another namespace (`namespace/name`) only with `--allow-cross-namespace-auth-secret`; entries with plain-text or crypt(3) DES passwords are refused (that user cannot log in), where nginx accepts them",
        ),
        "The Secret holding the users: `name` (the Ingress's namespace) or `namespace/name`. Hashes: bcrypt (`htpasswd -B`), apr1/MD5-crypt (`-m`), SHA-256/512-crypt (`-2`, `-5`), `{SHA}` (`-s`). Each refused entry is reported by line or key, never with its hash. Changes apply live.",
        parsers::auth_secret,
    ),
    spec(
        "auth-secret-type",
        "auth-file",
        Path,
        PathDenied,
        Full,
        "`auth-file`: an htpasswd file under the Secret's key `auth`; `auth-map`: each key a user, each value a hash.",
        parsers::auth_secret_type,
    ),
    spec(
        "auth-realm",
        "",
        Path,
        PathDenied,
        Partly("only printable ASCII without `\"` or `\\`, at most 256 characters"),
        "The realm in the `WWW-Authenticate` challenge, which browsers may show in their login prompt.",
        parsers::auth_realm,
    ),
    spec(
        "auth-forward-authorization",
        "false",
        Path,
        Ignored,
        Partly(
            "Portico's own; ingress-nginx always forwards the header, Portico keeps the client's credential from the upstream unless this is true",
        ),
        "Send the client's `Authorization` header to the upstream after basic authentication admitted it.",
        parsers::auth_forward_authorization,
    ),
    spec(
        "proxy-ssl-verify",
        "off",
        Ingress,
        Ignored,
        Full,
        "With `backend-protocol` HTTPS or GRPCS: `on` verifies the backend's certificate against `proxy-ssl-secret`'s `ca.crt` and `proxy-ssl-name`; `off` (default, as ingress-nginx) encrypts without verifying.",
        parsers::proxy_ssl_verify,
    ),
    spec(
        "proxy-ssl-secret",
        "",
        Ingress,
        PathDenied,
        Partly("the Secret must be of type kubernetes.io/tls or Opaque (the types watched)"),
        "`namespace/name` of a Secret whose `ca.crt` (PEM) verifies backends when `proxy-ssl-verify` is on, and whose `tls.crt`/`tls.key`, when present, are presented to backends as a client certificate. Unusable: the paths answer 503.",
        parsers::proxy_ssl_secret,
    ),
    spec(
        "proxy-ssl-name",
        "",
        Ingress,
        Ignored,
        Partly(
            "the default is the Service's DNS name `<service>.<namespace>.svc`, not ingress-nginx's upstream block name",
        ),
        "The name the backend's certificate is verified against, and sent as SNI with `proxy-ssl-server-name`.",
        parsers::proxy_ssl_name,
    ),
    spec(
        "proxy-ssl-server-name",
        "off",
        Ingress,
        Ignored,
        Full,
        "`on` sends the name (proxy-ssl-name or its default) as SNI to backends.",
        parsers::proxy_ssl_server_name,
    ),
    spec(
        "ssl-passthrough",
        "false",
        Ingress,
        Ignored,
        Full,
        "TLS for the Ingress's hosts goes, undecrypted, to the backend of each host's first path (chosen by the ClientHello's SNI); other hosts on the HTTPS port are terminated as usual. Needs `--enable-ssl-passthrough` (off by default, as ingress-nginx); plain HTTP to these hosts is still routed.",
        parsers::ssl_passthrough,
    ),
    spec(
        "load-balance",
        "round_robin",
        Path,
        Ignored,
        Partly(
            "`least_request` is a Portico addition; slow-starting endpoints get their share in every policy",
        ),
        "How each request's endpoint is chosen: `round_robin` (smooth weighted: endpoints in turn), `least_request` (the less loaded of two random endpoints) or `ewma` (the lower of two random endpoints' response-time average times their in-flight requests). Health, ejections and panic mode apply first; `upstream-hash-by` and `affinity` take precedence.",
        parsers::load_balance,
    ),
    spec(
        "upstream-hash-by",
        "",
        Path,
        Ignored,
        Partly(
            "only variables, concatenated: `$remote_addr`, `$request_uri`, `$uri`, `$host`, `$http_<name>`, `$cookie_<name>`, `$arg_<name>` (literal text and other variables are refused); an endpoint with more than 1.25 times the average load passes keys on (bounded load); requests without any of the variables are round-robined",
        ),
        "Consistent hashing: requests with the same key (e.g. `$request_uri`, `$http_x_user_id`, `$host$uri`) go to the same endpoint, and adding or removing an endpoint moves only its share of keys. Parsed into a typed key, never interpreted as text.",
        parsers::upstream_hash_by,
    ),
    spec(
        "affinity",
        "",
        Path,
        Ignored,
        Full,
        "`cookie`: sticky sessions. A client without the session cookie gets one (`Set-Cookie`, HttpOnly) for the endpoint it was sent to, and keeps going there while that endpoint is eligible; when it is not, the session moves.",
        parsers::affinity,
    ),
    spec(
        "affinity-mode",
        "balanced",
        Path,
        Ignored,
        Full,
        "`balanced`: the cookie holds a key a consistent hash maps to an endpoint, so scaling up moves a share of sessions; `persistent`: the cookie names its endpoint, which keeps its sessions as long as it lives.",
        parsers::affinity_mode,
    ),
    spec(
        "session-cookie-name",
        "INGRESSCOOKIE",
        Path,
        Ignored,
        Full,
        "Name of the sticky-session cookie.",
        parsers::session_cookie_name,
    ),
    spec(
        "session-cookie-max-age",
        "",
        Path,
        Ignored,
        Full,
        "`Max-Age` of the cookie in seconds; without it and session-cookie-expires the cookie lasts the browser session.",
        parsers::session_cookie_max_age,
    ),
    spec(
        "session-cookie-expires",
        "",
        Path,
        Ignored,
        Full,
        "`Expires` of the cookie, in seconds from the response.",
        parsers::session_cookie_expires,
    ),
    spec(
        "session-cookie-path",
        "",
        Path,
        Ignored,
        Full,
        "`Path` of the cookie; by default the Ingress path (`/` for regular-expression paths).",
        parsers::session_cookie_path,
    ),
    spec(
        "session-cookie-domain",
        "",
        Path,
        Ignored,
        Full,
        "`Domain` of the cookie (a host name).",
        parsers::session_cookie_domain,
    ),
    spec(
        "session-cookie-samesite",
        "",
        Path,
        Ignored,
        Partly("session-cookie-conditional-samesite-none is not supported"),
        "`SameSite` of the cookie: `None`, `Lax` or `Strict`.",
        parsers::session_cookie_samesite,
    ),
    spec(
        "session-cookie-secure",
        "false",
        Path,
        Ignored,
        Full,
        "Mark the cookie `Secure`.",
        parsers::session_cookie_secure,
    ),
    spec(
        "session-cookie-change-on-failure",
        "false",
        Path,
        Ignored,
        Full,
        "After a failed attempt is retried on another endpoint (proxy-next-upstream), point the session at that endpoint; otherwise the session stays with its endpoint.",
        parsers::session_cookie_change_on_failure,
    ),
    spec(
        "proxy-next-upstream",
        "error timeout",
        Path,
        Ignored,
        Partly(
            "`invalid_header`, `http_403`, `http_404` and `http_429` are not supported (reported, the rest applies); a request body is never sent twice, so a request with a body is retried only when none of it was sent; retries draw on a budget per backend (20% of its requests plus 10 per second)",
        ),
        "When a failed attempt is tried again on another endpoint of the backend (never one already tried): space-separated `error` (no response: connect failure, reset), `timeout` (connect or response-head timeout), `http_500`, `http_502`, `http_503`, `http_504`, `non_idempotent` (also retry POST, PATCH, ... after they were sent; a request that never left is always retried), or `off`.",
        parsers::proxy_next_upstream,
    ),
    spec(
        "proxy-next-upstream-tries",
        "3",
        Path,
        Ignored,
        Full,
        "Attempts in all, the first included; `0`: as many as the backend has endpoints.",
        parsers::proxy_next_upstream_tries,
    ),
    spec(
        "proxy-next-upstream-timeout",
        "0",
        Path,
        Ignored,
        Full,
        "No retry starts later than this after the first attempt: whole seconds or one unit (`500ms`, `10s`); `0`: no limit.",
        parsers::proxy_next_upstream_timeout,
    ),
    // === on Services: endpoint health ===
    service(
        "health-check-path",
        "",
        "Active health checks: every endpoint is sent `GET <path>` (HTTP/1.1, or HTTP/2 for H2C backends; over TLS for HTTPS backends) every interval by one checker per endpoint, however many routes use it; gRPC backends (GRPC, GRPCS) are asked `grpc.health.v1.Health/Check` instead. Any `health-check-*` annotation turns checks on; without a path they are TCP connects (plus the TLS handshake for TLS backends). An absolute path, e.g. `/healthz`.",
        parsers::health_check_path,
    ),
    service(
        "health-check-port",
        "",
        "Probe this port of each endpoint's address instead of the endpoint's own port, 1 to 65535.",
        parsers::health_check_port,
    ),
    service(
        "health-check-interval",
        "10s",
        "Time between two probes of one endpoint (less up to a tenth, at random, so checkers spread out). Whole seconds or one unit (`500ms`, `10s`, `1m`), at most 24h.",
        parsers::health_check_interval,
    ),
    service(
        "health-check-timeout",
        "2s",
        "A probe that has not succeeded by then fails. Same syntax; more than the interval is capped at the interval.",
        parsers::health_check_timeout,
    ),
    service(
        "health-check-healthy-threshold",
        "2",
        "Passing probes in a row that make an unhealthy endpoint healthy again, at least 1.",
        parsers::health_check_healthy_threshold,
    ),
    service(
        "health-check-unhealthy-threshold",
        "3",
        "Failing probes in a row that make an endpoint unhealthy (it gets no requests), at least 1. A stopped endpoint is out within this many intervals plus one.",
        parsers::health_check_unhealthy_threshold,
    ),
    service(
        "health-check-expected-statuses",
        "200-399",
        "HTTP statuses that pass: comma-separated codes and ranges, e.g. `200,204,300-399`, within 100-599.",
        parsers::health_check_expected_statuses,
    ),
    service(
        "outlier-consecutive-5xx",
        "5",
        "Passive outlier detection: this many 5xx responses in a row from one endpoint eject it (it gets no requests) for `outlier-base-ejection-time` × the number of times it was ejected, capped at `outlier-max-ejection-time`; `0` turns this off.",
        parsers::outlier_consecutive_5xx,
    ),
    service(
        "outlier-consecutive-errors",
        "5",
        "Like outlier-consecutive-5xx, for attempts that got no response at all: connect failures, timeouts, resets; `0` turns this off.",
        parsers::outlier_consecutive_errors,
    ),
    service(
        "outlier-base-ejection-time",
        "30s",
        "How long a first ejection lasts; the n-th lasts n times as long. Whole seconds or one unit (`500ms`, `30s`, `5m`, `1h`), at most 24h.",
        parsers::outlier_base_ejection_time,
    ),
    service(
        "outlier-max-ejection-time",
        "5m",
        "The longest an ejection lasts. An endpoint that stays in for this long starts over at the base time.",
        parsers::outlier_max_ejection_time,
    ),
    service(
        "outlier-max-ejected-percent",
        "50",
        "At most this share (percent, 0 to 100) of a backend's endpoints is ejected at once (rounded down: with 50, one of two or three endpoints).",
        parsers::outlier_max_ejected_percent,
    ),
    service(
        "slow-start",
        "0",
        "An endpoint that becomes eligible (a new pod, recovered from failing health checks, back from an ejection) ramps from a tenth of its share of requests to all of it over this window, e.g. `30s`, so a cold pod is not flooded; `0` turns it off.",
        parsers::slow_start,
    ),
    service(
        "panic-threshold",
        "50",
        "Panic mode: when fewer than this share (percent, 0 to 100) of the endpoints are eligible (ready, passing health checks, not ejected), requests are spread over all ready endpoints, as Envoy does, rather than piled onto the few left; `0` turns panic mode off. No ready endpoint at all: 503 (gRPC-shaped for gRPC).",
        parsers::panic_threshold,
    ),
    spec(
        "enable-cors",
        "false",
        Path,
        Ignored,
        Full,
        "Answer cross-origin requests from browsers (CORS) on these paths, as ingress-nginx: a preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an allowed origin is answered 204 by Portico and never forwarded; other answers to an allowed origin get `Access-Control-Allow-Origin` (and the credentials and exposed headers); an origin that may not call, or a request without one, gets no CORS headers; every answer gets `Vary: Origin`. The `cors-*` annotations do nothing without it (reported). See docs/cors.md.",
        parsers::enable_cors,
    ),
    spec(
        "cors-allow-origin",
        "*",
        Path,
        Ignored,
        Partly(
            "with `*`, a request without `Origin` gets no CORS headers, and `*` never comes with credentials (see cors-allow-credentials)",
        ),
        "Origins that may call, comma-separated: `*`, `https://app.example.com` (a port when not the scheme's default: `https://app.example.com:8443` matches only that port), or `https://*.example.com` (exactly one more label: not `example.com`, not `a.b.example.com`); case-insensitive. `*` anywhere allows every origin. Entries without an http or https scheme, with a path, or otherwise malformed are dropped (reported) and the rest kept, as ingress-nginx does. A preflight from an origin that may not call is forwarded to the backend without CORS headers, as ingress-nginx does.",
        parsers::cors_allow_origin,
    ),
    spec(
        "cors-allow-methods",
        parsers::DEFAULT_CORS_ALLOW_METHODS,
        Path,
        Ignored,
        Partly(
            "an invalid entry is dropped and the rest kept, where ingress-nginx falls back to the default list",
        ),
        "`Access-Control-Allow-Methods` of preflight answers: methods, comma-separated, case kept (methods are case-sensitive), or `*` (with credentials the preflight's method is echoed instead).",
        parsers::cors_allow_methods,
    ),
    spec(
        "cors-allow-headers",
        parsers::DEFAULT_CORS_ALLOW_HEADERS,
        Path,
        Ignored,
        Partly(
            "an invalid entry is dropped and the rest kept, where ingress-nginx falls back to the default list; names are sent lower-case",
        ),
        "`Access-Control-Allow-Headers` of preflight answers: header names, comma-separated, or `*` (with credentials the preflight's requested headers are echoed instead).",
        parsers::cors_allow_headers,
    ),
    spec(
        "cors-expose-headers",
        "",
        Path,
        Ignored,
        Full,
        "`Access-Control-Expose-Headers`: response headers pages may read besides the safelisted ones, comma-separated, or `*` (left out with credentials, where browsers read it as a header name). Unset: not sent.",
        parsers::cors_expose_headers,
    ),
    spec(
        "cors-allow-credentials",
        "true",
        Path,
        Ignored,
        Partly(
            "not with cors-allow-origin `*` (reported when set): `Access-Control-Allow-Origin: *` is sent without credentials, since echoing every origin with credentials would let any site read answers with its visitors' cookies (browsers ignored ingress-nginx's credentials with `*` too)",
        ),
        "`Access-Control-Allow-Credentials: true`: pages may send cookies and HTTP authentication; the caller's origin is echoed in `Access-Control-Allow-Origin`, never `*`.",
        parsers::cors_allow_credentials,
    ),
    spec(
        "cors-max-age",
        "1728000",
        Path,
        Ignored,
        Full,
        "`Access-Control-Max-Age`: how long, in whole seconds, browsers may cache a preflight answer (they cap it themselves, Chromium at 2 hours).",
        parsers::cors_max_age,
    ),
    spec(
        "grpc-web",
        "false",
        Path,
        Ignored,
        Full,
        "Portico's own: bridge gRPC-Web (`application/grpc-web[-text][+proto]`, HTTP/1.1 or HTTP/2, POST) to gRPC toward the backend, which is then spoken to over HTTP/2 (`backend-protocol` HTTP becomes GRPC, HTTPS becomes GRPCS). Other requests on these paths are proxied as usual.",
        parsers::grpc_web,
    ),
    spec(
        "grpc-web-allow-origins",
        "",
        Path,
        Ignored,
        Full,
        "Portico's own: browser origins allowed to call the gRPC-Web paths, comma-separated, as cors-allow-origin (`https://app.example.com`, `https://*.example.com`, `*`). Unset: no CORS headers and preflights from other origins are refused (403), so only same-origin pages can call. Invalid entries are dropped, the rest kept. With enable-cors the cors-* settings apply instead, gRPC-Web's headers added (reported).",
        parsers::grpc_web_allow_origins,
    ),
    spec(
        "grpc-web-allow-headers",
        "",
        Path,
        Ignored,
        Full,
        "Portico's own: request headers allowed in gRPC-Web preflights besides `x-grpc-web`, `x-user-agent`, `grpc-timeout`, `content-type` and `authorization`, comma-separated.",
        parsers::grpc_web_allow_headers,
    ),
    spec(
        "grpc-web-expose-headers",
        "",
        Path,
        Ignored,
        Full,
        "Portico's own: response headers exposed to gRPC-Web pages besides `grpc-status`, `grpc-message` and `grpc-status-details-bin`, comma-separated (e.g. custom metadata).",
        parsers::grpc_web_expose_headers,
    ),
    spec(
        "grpc-web-allow-credentials",
        "false",
        Path,
        Ignored,
        Full,
        "Portico's own: let gRPC-Web pages send cookies and HTTP authentication (`Access-Control-Allow-Credentials: true`); with origin `*` the caller's origin is echoed, as browsers require.",
        parsers::grpc_web_allow_credentials,
    ),
    spec(
        "grpc-web-max-age",
        "86400",
        Path,
        Ignored,
        Full,
        "Portico's own: how long browsers may cache a gRPC-Web preflight answer; whole seconds or one nginx unit (`10m`), at most 24h.",
        parsers::grpc_web_max_age,
    ),
    spec(
        "grpc-max-message-size",
        "4m",
        Path,
        Ignored,
        Full,
        "Portico's own: largest message a gRPC or gRPC-Web client may send (after base64 decoding), same syntax as proxy-body-size, `0` for no limit; a larger one ends the call with RESOURCE_EXHAUSTED. gRPC calls are limited per message, not by proxy-body-size: a stream has no total size.",
        parsers::grpc_max_message_size,
    ),
];

const fn not_yet(name: &'static str, note: &'static str) -> NginxAnnotation {
    NginxAnnotation {
        name,
        aliases: &[],
        status: NginxStatus::NotYet,
        note,
    }
}

const fn snippet(name: &'static str) -> NginxAnnotation {
    NginxAnnotation {
        name,
        aliases: &[],
        status: NginxStatus::Snippet,
        note: "raw nginx configuration",
    }
}

const fn removed(name: &'static str, note: &'static str) -> NginxAnnotation {
    NginxAnnotation {
        name,
        aliases: &[],
        status: NginxStatus::Removed,
        note,
    }
}

const AUTH_EXTERNAL: &str = "external authentication";
const AUTH_TLS: &str = "client certificate authentication";
const AFFINITY: &str = "session affinity";
const BALANCING: &str = "load balancing";
const RATE_LIMIT: &str = "rate limiting";
const BACKEND_TLS: &str = "TLS to backends";
const BUFFERING: &str = "nginx buffering; Portico streams bodies";
const RESPONSE_REWRITE: &str = "rewriting backend responses";
const TRACING: &str = "tracing";
const WAF: &str = "web application firewall";

static NGINX_NOT_SUPPORTED: &[NginxAnnotation] = &[
    removed("add-base-url", "no replacement"),
    not_yet("auth-always-set-cookie", AUTH_EXTERNAL),
    not_yet("auth-cache-duration", AUTH_EXTERNAL),
    not_yet("auth-cache-key", AUTH_EXTERNAL),
    not_yet("auth-keepalive", AUTH_EXTERNAL),
    not_yet("auth-keepalive-requests", AUTH_EXTERNAL),
    not_yet("auth-keepalive-share-vars", AUTH_EXTERNAL),
    not_yet("auth-keepalive-timeout", AUTH_EXTERNAL),
    not_yet("auth-method", AUTH_EXTERNAL),
    not_yet("auth-proxy-set-headers", AUTH_EXTERNAL),
    not_yet("auth-request-redirect", AUTH_EXTERNAL),
    not_yet("auth-response-headers", AUTH_EXTERNAL),
    not_yet("auth-signin", AUTH_EXTERNAL),
    not_yet("auth-signin-redirect-param", AUTH_EXTERNAL),
    snippet("auth-snippet"),
    not_yet("auth-tls-error-page", AUTH_TLS),
    not_yet("auth-tls-match-cn", AUTH_TLS),
    not_yet("auth-url", AUTH_EXTERNAL),
    removed("base-url-scheme", "no replacement"),
    not_yet("client-body-buffer-size", BUFFERING),
    snippet("configuration-snippet"),
    not_yet(
        "connection-proxy-header",
        "overriding the upstream Connection header",
    ),
    not_yet("enable-access-log", "per-Ingress access log switch"),
    not_yet("enable-global-auth", AUTH_EXTERNAL),
    removed("enable-influxdb", "InfluxDB metrics"),
    not_yet("enable-modsecurity", WAF),
    not_yet("enable-opentelemetry", TRACING),
    removed("enable-opentracing", "use OpenTelemetry"),
    not_yet("enable-owasp-core-rules", WAF),
    not_yet("enable-rewrite-log", "nginx rewrite log"),
    not_yet("fastcgi-index", "FastCGI backends"),
    not_yet("fastcgi-params-configmap", "FastCGI backends"),
    not_yet("from-to-www-redirect", "www redirects"),
    removed("global-rate-limit", "global rate limiting"),
    removed("global-rate-limit-ignored-cidrs", "global rate limiting"),
    removed("global-rate-limit-key", "global rate limiting"),
    removed("global-rate-limit-window", "global rate limiting"),
    removed("grpc-backend", "use backend-protocol: GRPC"),
    not_yet("http2-push-preload", "HTTP/2 server push"),
    removed("influxdb-host", "InfluxDB metrics"),
    removed("influxdb-measurement", "InfluxDB metrics"),
    removed("influxdb-port", "InfluxDB metrics"),
    removed("influxdb-server-name", "InfluxDB metrics"),
    NginxAnnotation {
        name: "limit-allowlist",
        aliases: &["limit-whitelist"],
        status: NginxStatus::NotYet,
        note: RATE_LIMIT,
    },
    not_yet("limit-burst-multiplier", RATE_LIMIT),
    not_yet("limit-connections", RATE_LIMIT),
    not_yet("limit-rate", RATE_LIMIT),
    not_yet("limit-rate-after", RATE_LIMIT),
    not_yet("limit-rpm", RATE_LIMIT),
    not_yet("limit-rps", RATE_LIMIT),
    removed("lua-resty-waf", WAF),
    removed("lua-resty-waf-allow-unknown-content-types", WAF),
    removed("lua-resty-waf-debug", WAF),
    removed("lua-resty-waf-extra-rules", WAF),
    removed("lua-resty-waf-ignore-rulesets", WAF),
    removed("lua-resty-waf-process-multipart-body", WAF),
    removed("lua-resty-waf-score-threshold", WAF),
    not_yet("mirror-host", "request mirroring"),
    not_yet("mirror-request-body", "request mirroring"),
    not_yet("mirror-target", "request mirroring"),
    snippet("modsecurity-snippet"),
    not_yet("modsecurity-transaction-id", WAF),
    not_yet("opentelemetry-operation-name", TRACING),
    not_yet("opentelemetry-trust-incoming-span", TRACING),
    removed("opentracing-trust-incoming-span", "use OpenTelemetry"),
    not_yet("proxy-buffer-size", BUFFERING),
    not_yet("proxy-buffering", BUFFERING),
    not_yet("proxy-buffers-number", BUFFERING),
    not_yet("proxy-busy-buffers-size", BUFFERING),
    not_yet("proxy-cookie-domain", RESPONSE_REWRITE),
    not_yet("proxy-cookie-path", RESPONSE_REWRITE),
    not_yet(
        "proxy-http-version",
        "choosing the upstream HTTP version; see backend-protocol",
    ),
    not_yet("proxy-max-temp-file-size", BUFFERING),
    not_yet("proxy-redirect-from", RESPONSE_REWRITE),
    not_yet("proxy-redirect-to", RESPONSE_REWRITE),
    not_yet("proxy-request-buffering", BUFFERING),
    not_yet("proxy-ssl-ciphers", BACKEND_TLS),
    not_yet("proxy-ssl-protocols", BACKEND_TLS),
    not_yet("proxy-ssl-verify-depth", BACKEND_TLS),
    not_yet("relative-redirects", "relative Location headers"),
    not_yet("satisfy", "combining authentication methods"),
    removed("secure-backends", "use backend-protocol: HTTPS"),
    removed("secure-verify-ca-secret", "use proxy-ssl-secret"),
    snippet("server-snippet"),
    not_yet("service-upstream", BALANCING),
    not_yet("session-cookie-conditional-samesite-none", AFFINITY),
    removed("session-cookie-hash", "no replacement"),
    not_yet("session-cookie-partitioned", AFFINITY),
    not_yet("ssl-ciphers", "TLS settings per Ingress"),
    not_yet("ssl-prefer-server-ciphers", "TLS settings per Ingress"),
    snippet("stream-snippet"),
    removed("upstream-fail-timeout", "no replacement"),
    not_yet("upstream-hash-by-subset", BALANCING),
    not_yet("upstream-hash-by-subset-size", BALANCING),
    removed("upstream-max-fails", "no replacement"),
    not_yet("use-port-in-redirects", "redirect Location details"),
];
