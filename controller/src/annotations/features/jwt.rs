//! JWT validation (Portico's own): `jwt-issuer` turns it on; the keys come
//! from `jwt-jwks-uri` or the Opaque Secret `jwt-jwks-secret` (key
//! `jwks`); `jwt-audiences`, `jwt-claim-to-headers`, `jwt-from-cookie`,
//! `jwt-clock-skew` and `jwt-required` refine it. An invalid part fails
//! closed (the paths answer 503) rather than let requests through
//! unchecked; the parts mean nothing without `jwt-issuer`.

use std::time::Duration;

use http::HeaderName;

use super::prelude::*;
use crate::annotations::{DiagnosticKind, Fallback};

/// The `jwt-*` annotations, parsed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JwtAnnotations {
    pub issuer: Option<String>,
    pub jwks_uri: Option<String>,
    /// The Secret's namespace when written (`namespace/name`), and name.
    pub jwks_secret: Option<(Option<String>, String)>,
    pub audiences: Vec<String>,
    pub claim_to_headers: Vec<(String, HeaderName)>,
    pub from_cookie: Option<String>,
    pub clock_skew: Option<Duration>,
    pub required: bool,
}

impl Default for JwtAnnotations {
    fn default() -> Self {
        Self {
            issuer: None,
            jwks_uri: None,
            jwks_secret: None,
            audiences: Vec::new(),
            claim_to_headers: Vec::new(),
            from_cookie: None,
            clock_skew: None,
            required: true,
        }
    }
}

/// What [`finish`] needs beyond the parsed values.
#[derive(Default)]
pub(crate) struct JwtDraft {
    /// `jwt-issuer` was written, valid or not.
    issuer_written: bool,
    /// A key source was written, valid or not (an invalid one is reported
    /// on its own key).
    keys_written: bool,
}

const OWN: &str = "Portico's own; ingress-nginx has no JWT validation";

pub(super) const SPECS: &[AnnotationSpec] = &[
    spec(
        "jwt-issuer",
        "",
        Path,
        PathDenied,
        Partly(OWN),
        "Requests must carry a JWT this issuer signed (`iss` compared exactly): `Authorization: Bearer <token>`, or the cookie of `jwt-from-cookie`. Algorithms RS256/384/512, ES256/384, EdDSA; `exp` and `nbf` checked with `jwt-clock-skew`. Missing token: 401 `WWW-Authenticate: Bearer realm=\"<host>\"`; invalid: 401 `Bearer error=\"invalid_token\"` (gRPC callers UNAUTHENTICATED). Needs `jwt-jwks-uri` or `jwt-jwks-secret`. See docs/jwt.md.",
        jwt_issuer,
    ),
    spec(
        "jwt-jwks-uri",
        "",
        Path,
        PathDenied,
        Partly(OWN),
        "The issuer's JWKS URL (https, or http inside the cluster): fetched off the request path, refreshed every 5 minutes (`Cache-Control: max-age` honoured between 30 s and 24 h) and on a token with an unknown `kid` (at most once per 10 s); the last good set is kept through failures.",
        jwt_jwks_uri,
    ),
    spec(
        "jwt-jwks-secret",
        "",
        Path,
        PathDenied,
        Partly(OWN),
        "An Opaque Secret (`name` or `namespace/name`, another namespace only with `--allow-cross-namespace-auth-secret`) whose key `jwks` holds the issuer's JWKS document. HMAC (`kty: oct`) keys are refused.",
        jwt_jwks_secret,
    ),
    spec(
        "jwt-audiences",
        "",
        Path,
        PathDenied,
        Partly(OWN),
        "Comma-separated: the token's `aud` must hold one of them. Unset: `aud` is not checked.",
        jwt_audiences,
    ),
    spec(
        "jwt-claim-to-headers",
        "",
        Path,
        PathDenied,
        Partly(OWN),
        "`claim:Header` entries, one per line or comma-separated: a string, number or bool claim is set on the upstream request under that header, replacing any copy the client sent (removed even when the token lacks the claim). A claim whose text is not a valid header value refuses the token.",
        jwt_claim_to_headers,
    ),
    spec(
        "jwt-from-cookie",
        "",
        Path,
        PathDenied,
        Partly(OWN),
        "Read the token from this cookie instead of the `Authorization` header.",
        jwt_from_cookie,
    ),
    spec(
        "jwt-clock-skew",
        "30",
        Path,
        PathDenied,
        Partly(OWN),
        "Seconds of leeway on `exp` and `nbf`, at most 300.",
        jwt_clock_skew,
    ),
    spec(
        "jwt-required",
        "true",
        Path,
        PathDenied,
        Partly(OWN),
        "`false`: a request without a token passes (its claim headers removed); one with a token must still carry a valid one.",
        jwt_required,
    ),
];

fn jwt_issuer(v: &str, d: &mut Draft) -> Result<(), String> {
    d.jwt.issuer_written = true;
    if v.is_empty() || v.len() > 1024 || v.chars().any(char::is_control) {
        return Err(
            "expected the issuer's identifier (its iss), without control characters".into(),
        );
    }
    d.out.jwt.issuer = Some(v.to_owned());
    Ok(())
}

fn jwt_jwks_uri(v: &str, d: &mut Draft) -> Result<(), String> {
    d.jwt.keys_written = true;
    let uri: http::Uri = v.parse().map_err(|_| "not a URL".to_owned())?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.host().is_none() {
        return Err("expected an http or https URL with a host".into());
    }
    d.out.jwt.jwks_uri = Some(v.to_owned());
    Ok(())
}

fn jwt_jwks_secret(v: &str, d: &mut Draft) -> Result<(), String> {
    d.jwt.keys_written = true;
    d.out.jwt.jwks_secret = Some(super::basic_auth::secret_ref(v)?);
    Ok(())
}

fn jwt_audiences(v: &str, d: &mut Draft) -> Result<(), String> {
    let mut out = Vec::new();
    for a in v.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        if a.chars().any(char::is_control) {
            return Err(format!("{a:?}: control characters"));
        }
        out.push(a.to_owned());
    }
    if out.is_empty() {
        return Err("expected at least one audience".into());
    }
    d.out.jwt.audiences = out;
    Ok(())
}

/// Every header must be one a user may set: a dropped entry would let the
/// client's own copy through.
fn jwt_claim_to_headers(v: &str, d: &mut Draft) -> Result<(), String> {
    let mut out: Vec<(String, HeaderName)> = Vec::new();
    for entry in v
        .split(['\n', ','])
        .map(str::trim)
        .filter(|e| !e.is_empty())
    {
        let (claim, header) = entry
            .split_once(':')
            .ok_or_else(|| format!("{entry:?}: expected claim:Header"))?;
        let (claim, header) = (claim.trim(), header.trim());
        if claim.is_empty() || claim.chars().any(char::is_control) {
            return Err(format!("{entry:?}: expected a claim name"));
        }
        let name = values::header_name(header).map_err(|e| format!("{header:?}: {e}"))?;
        portico_dataplane::model::user_settable(&name)
            .map_err(|reason| format!("{name} cannot be set: {reason}"))?;
        if out.iter().any(|(_, n)| *n == name) {
            return Err(format!("{name} is named twice"));
        }
        out.push((claim.to_owned(), name));
    }
    d.out.jwt.claim_to_headers = out;
    Ok(())
}

fn jwt_from_cookie(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.jwt.from_cookie = Some(values::cookie_name(v)?);
    Ok(())
}

fn jwt_clock_skew(v: &str, d: &mut Draft) -> Result<(), String> {
    let secs = values::uint(v)?;
    if secs > 300 {
        return Err("at most 300 seconds".into());
    }
    d.out.jwt.clock_skew = Some(Duration::from_secs(u64::from(secs)));
    Ok(())
}

fn jwt_required(v: &str, d: &mut Draft) -> Result<(), String> {
    d.out.jwt.required = values::go_bool(v)?;
    Ok(())
}

/// The parts mean nothing without `jwt-issuer`; an issuer without keys
/// (or with both sources) cannot admit anyone, so it fails closed.
pub(crate) fn finish(d: &mut Draft, notes: &mut Vec<KeyedNote>) {
    const PARTS: [&str; 7] = [
        "jwt-jwks-uri",
        "jwt-jwks-secret",
        "jwt-audiences",
        "jwt-claim-to-headers",
        "jwt-from-cookie",
        "jwt-clock-skew",
        "jwt-required",
    ];
    if !d.jwt.issuer_written {
        for name in PARTS {
            d.note(notes, name, "has no effect without jwt-issuer; ignored");
        }
        d.out.jwt = JwtAnnotations::default();
        return;
    }
    if d.out.jwt.issuer.is_none() {
        return;
    }
    let both = d.out.jwt.jwks_uri.is_some() && d.out.jwt.jwks_secret.is_some();
    if both || (!d.jwt.keys_written) {
        d.note_kind(
            notes,
            "jwt-issuer",
            DiagnosticKind::Invalid(Fallback::PathDenied),
            if both {
                "jwt-jwks-uri and jwt-jwks-secret are both set; set one"
            } else {
                "JWT validation needs jwt-jwks-uri or jwt-jwks-secret"
            },
        );
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::annotations::tests::*;

    pub(crate) const VALID: &[Valid] = &[
        Valid {
            set: &[
                ("jwt-issuer", "https://idp.test"),
                ("jwt-jwks-uri", "https://idp.test/keys"),
            ],
            want: |a| {
                a.jwt.issuer = Some("https://idp.test".into());
                a.jwt.jwks_uri = Some("https://idp.test/keys".into());
            },
        },
        Valid {
            set: &[
                ("jwt-issuer", "https://idp.test"),
                ("jwt-jwks-secret", "auth/idp-keys"),
                ("jwt-audiences", "api, web"),
                ("jwt-claim-to-headers", "sub:X-User\nemail: X-Email"),
                ("jwt-from-cookie", "id_token"),
                ("jwt-clock-skew", "5"),
                ("jwt-required", "false"),
            ],
            want: |a| {
                a.jwt = JwtAnnotations {
                    issuer: Some("https://idp.test".into()),
                    jwks_uri: None,
                    jwks_secret: Some((Some("auth".into()), "idp-keys".into())),
                    audiences: vec!["api".into(), "web".into()],
                    claim_to_headers: vec![
                        ("sub".into(), HeaderName::from_static("x-user")),
                        ("email".into(), HeaderName::from_static("x-email")),
                    ],
                    from_cookie: Some("id_token".into()),
                    clock_skew: Some(Duration::from_secs(5)),
                    required: false,
                }
            },
        },
    ];

    const JWT: &[(&str, &str)] = &[
        ("jwt-issuer", "https://idp.test"),
        ("jwt-jwks-secret", "keys"),
    ];

    fn base(a: &mut crate::annotations::IngressAnnotations) {
        a.jwt.issuer = Some("https://idp.test".into());
        a.jwt.jwks_secret = Some((None, "keys".into()));
    }

    pub(crate) const INVALID: &[Invalid] = &[
        Invalid {
            name: "jwt-issuer",
            fallback: Fallback::PathDenied,
            values: &["https://idp.test/\u{1}"],
            context: &[("jwt-jwks-secret", "keys")],
            want: |a| a.jwt.jwks_secret = Some((None, "keys".into())),
        },
        Invalid {
            name: "jwt-jwks-secret",
            fallback: Fallback::PathDenied,
            values: &["Keys", "a/b/c", "ns/"],
            context: &[("jwt-issuer", "https://idp.test")],
            want: |a| a.jwt.issuer = Some("https://idp.test".into()),
        },
        Invalid {
            name: "jwt-required",
            fallback: Fallback::PathDenied,
            values: &["yes"],
            context: JWT,
            want: base,
        },
        Invalid {
            name: "jwt-jwks-uri",
            fallback: Fallback::PathDenied,
            values: &["ftp://idp.test/keys", "/keys", "https://"],
            context: &[("jwt-issuer", "https://idp.test")],
            want: |a| a.jwt.issuer = Some("https://idp.test".into()),
        },
        Invalid {
            name: "jwt-claim-to-headers",
            fallback: Fallback::PathDenied,
            values: &["sub", "sub:X User", "sub:Host", "a:X-A,b:x-a"],
            context: JWT,
            want: base,
        },
        Invalid {
            name: "jwt-clock-skew",
            fallback: Fallback::PathDenied,
            values: &["-1", "301", "5s"],
            context: JWT,
            want: base,
        },
        Invalid {
            name: "jwt-from-cookie",
            fallback: Fallback::PathDenied,
            values: &["a b", "a;b"],
            context: JWT,
            want: base,
        },
        Invalid {
            name: "jwt-audiences",
            fallback: Fallback::PathDenied,
            values: &[",", ", ,"],
            context: JWT,
            want: base,
        },
    ];

    #[test]
    fn parts_need_an_issuer_and_an_issuer_needs_one_key_source() {
        let parsed = parse_checked(&map(NGINX_PREFIX, &[("jwt-audiences", "api")]));
        assert_eq!(
            kinds(&parsed),
            vec![("nginx.ingress.kubernetes.io/jwt-audiences", IGNORED)]
        );
        assert_eq!(parsed.ingress.jwt, JwtAnnotations::default());

        let parsed = parse_checked(&map(PORTICO_PREFIX, &[("jwt-issuer", "https://i")]));
        assert_eq!(
            kinds(&parsed),
            vec![(
                "portico.dev/jwt-issuer",
                DiagnosticKind::Invalid(Fallback::PathDenied)
            )]
        );
        assert!(parsed.diagnostics[0].message.contains("needs jwt-jwks-uri"));
    }
}
