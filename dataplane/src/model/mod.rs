//! The routing model: plain data that the controller builds from Kubernetes
//! objects and hands to the dataplane as a whole.
//!
//! Nothing here is interpreted as text at request time: header names, values
//! and methods are typed; regular expressions are compiled (with size limits)
//! when a [`RouteConfig`] is turned into a live table, and a pattern that does
//! not compile disables only the rule that holds it.
//!
//! Everything is serde-serializable so `/debug/routes` can show the live table.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use serde::{Deserialize, Serialize};

mod backend;
mod checks;
mod cors;
mod filter;
mod grpc;
mod listener;
mod route;

pub use backend::*;
pub use checks::*;
pub use cors::*;
pub use filter::*;
pub use grpc::*;
pub use listener::*;
pub use route::*;

/// serde adapters for `http` types and durations, so the model stays typed.
mod serde_http {
    pub mod header_name {
        use http::HeaderName;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_str(v.as_str())
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<HeaderName, D::Error> {
            let s = String::deserialize(d)?;
            HeaderName::from_bytes(s.as_bytes()).map_err(serde::de::Error::custom)
        }
    }

    pub mod header_names {
        pub use super::tokens::{deserialize, serialize};
    }

    /// A list of typed tokens written as strings: methods, header names.
    pub mod tokens {
        use serde::ser::SerializeSeq;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer, T: AsRef<str>>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for t in v {
                seq.serialize_element(t.as_ref())?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
        where
            D: Deserializer<'de>,
            T: for<'a> TryFrom<&'a str>,
            for<'a> <T as TryFrom<&'a str>>::Error: std::fmt::Display,
        {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|s| T::try_from(s.as_str()).map_err(serde::de::Error::custom))
                .collect()
        }
    }

    pub mod header_pairs {
        use http::{HeaderName, HeaderValue};
        use serde::ser::SerializeSeq;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(
            v: &[(HeaderName, HeaderValue)],
            s: S,
        ) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(v.len()))?;
            for (n, val) in v {
                // Values are validated on the way in; show non-UTF-8 lossily.
                let val = String::from_utf8_lossy(val.as_bytes());
                seq.serialize_element(&(n.as_str(), val))?;
            }
            seq.end()
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            d: D,
        ) -> Result<Vec<(HeaderName, HeaderValue)>, D::Error> {
            Vec::<(String, String)>::deserialize(d)?
                .into_iter()
                .map(|(n, v)| {
                    let n =
                        HeaderName::from_bytes(n.as_bytes()).map_err(serde::de::Error::custom)?;
                    let v = HeaderValue::from_str(&v).map_err(serde::de::Error::custom)?;
                    Ok((n, v))
                })
                .collect()
        }
    }

    pub mod opt_method {
        use http::Method;
        use serde::{Deserialize, Deserializer, Serializer};

        pub fn serialize<S: Serializer>(v: &Option<Method>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(m) => s.serialize_some(m.as_str()),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Method>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|m| Method::from_bytes(m.as_bytes()).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    pub mod millis {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        pub fn serialize<S: Serializer>(v: &Duration, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_u64(u64::try_from(v.as_millis()).unwrap_or(u64::MAX))
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
            Ok(Duration::from_millis(u64::deserialize(d)?))
        }
    }

    pub mod opt_millis {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        pub fn serialize<S: Serializer>(v: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match v {
                Some(v) => s.serialize_some(&u64::try_from(v.as_millis()).unwrap_or(u64::MAX)),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostname_parse() {
        assert_eq!(
            Hostname::parse("Foo.Example.COM"),
            Some(Hostname::Exact("foo.example.com".into()))
        );
        assert_eq!(
            Hostname::parse("*.example.com"),
            Some(Hostname::Wildcard("example.com".into()))
        );
        assert_eq!(
            Hostname::parse("**.example.com"),
            Some(Hostname::WildcardAnyDepth("example.com".into()))
        );
        for bad in ["", "*.", "a..b", "-a.com", "a b.com", "*.*.com", "a.com/x"] {
            assert_eq!(Hostname::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn hash_keys_parse_into_variables_only() {
        assert_eq!(
            HashKey::parse("$request_uri").unwrap(),
            HashKey(vec![HashVar::RequestUri])
        );
        assert_eq!(
            HashKey::parse(" $host$uri ").unwrap(),
            HashKey(vec![HashVar::Host, HashVar::Uri])
        );
        assert_eq!(
            HashKey::parse("$http_x_user_id$cookie_session$arg_page$remote_addr").unwrap(),
            HashKey(vec![
                HashVar::Header(HeaderName::from_static("x-user-id")),
                HashVar::Cookie("session".into()),
                HashVar::Arg("page".into()),
                HashVar::RemoteAddr,
            ])
        );
        for bad in [
            "",
            "request_uri",
            "$",
            "$request_uri-x",
            "$host/$uri",
            "$binary_remote_addr",
            "$http_",
            "$cookie_",
            "${host}",
            "$args",
        ] {
            assert!(HashKey::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn framing_connection_and_host_headers_are_not_user_settable() {
        for name in [
            "Content-Length",
            "transfer-encoding",
            "TRAILER",
            "connection",
            "Keep-Alive",
            "proxy-connection",
            "te",
            "upgrade",
            "Host",
            // The proxy's client-certificate verdict, which backends trust.
            "SSL-Client-Verify",
            "ssl-client-subject-dn",
            "ssl-client-issuer-dn",
            "ssl-client-cert",
        ] {
            let parsed = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(user_settable(&parsed).is_err(), "{name}");
        }
        for name in [
            "x-a",
            "set-cookie",
            "content-type",
            "x-forwarded-prefix",
            "tee",
        ] {
            assert_eq!(
                user_settable(&HeaderName::from_static(name)),
                Ok(()),
                "{name}"
            );
        }
        // Pseudo-headers are not header names at all.
        assert!(HeaderName::from_bytes(b":path").is_err());
    }

    #[test]
    fn retain_user_settable_drops_and_names_each_refused_entry() {
        let v = HeaderValue::from_static("1");
        let mut m = HeaderModifier {
            set: vec![
                (HeaderName::from_static("content-length"), v.clone()),
                (HeaderName::from_static("x-a"), v.clone()),
            ],
            add: vec![(HeaderName::from_static("transfer-encoding"), v.clone())],
            remove: vec![
                HeaderName::from_static("host"),
                HeaderName::from_static("x-b"),
            ],
        };
        let refused: Vec<_> = m
            .retain_user_settable()
            .into_iter()
            .map(|(list, name, _)| (list, name.as_str().to_owned()))
            .collect();
        assert_eq!(
            refused,
            [
                ("set", "content-length".to_owned()),
                ("add", "transfer-encoding".to_owned()),
                ("remove", "host".to_owned()),
            ]
        );
        assert_eq!(m.set, [(HeaderName::from_static("x-a"), v)]);
        assert!(m.add.is_empty());
        assert_eq!(m.remove, [HeaderName::from_static("x-b")]);
    }

    #[test]
    fn redirect_and_rewrite_fields_are_checked_as_the_proxy_sends_them() {
        let redirect = |hostname: Option<&str>, path: Option<PathModifier>| Redirect {
            scheme: None,
            hostname: hostname.map(str::to_owned),
            port: None,
            path,
            status: RedirectStatus::Found,
        };
        let full = |p: &str| Some(PathModifier::ReplaceFullPath(p.into()));
        assert_eq!(
            redirect(Some("a.example"), full("/caf\u{e9}?x=1")).check(),
            Ok(())
        );
        for bad in ["/a\r\nSet-Cookie: x", "/a\0", "/a\u{7f}"] {
            let e = redirect(None, full(bad)).check().unwrap_err();
            assert_eq!(e.field, "path", "{bad:?}");
        }
        let prefix = Some(PathModifier::ReplacePrefixMatch("/a\nb".into()));
        assert_eq!(redirect(None, prefix).check().unwrap_err().field, "path");
        for bad in ["a.example\r\nx: y", "a b", "a/b", ""] {
            let e = redirect(Some(bad), None).check().unwrap_err();
            assert_eq!(e.field, "hostname", "{bad:?}");
        }

        let rewrite = |hostname: Option<&str>, path: Option<PathModifier>| UrlRewrite {
            hostname: hostname.map(str::to_owned),
            path,
        };
        assert_eq!(
            rewrite(Some("in.example:8080"), full("/x?y=1")).check(),
            Ok(())
        );
        for bad in ["/a b", "/a\r\n", "/a#b"] {
            assert_eq!(rewrite(None, full(bad)).check().unwrap_err().field, "path");
        }
        let template = PathModifier::RegexReplace {
            pattern: "/(.*)".into(),
            replacement: vec![
                Substitution::Literal("/v1/".into()),
                Substitution::Capture(1),
                Substitution::Literal("\n".into()),
            ],
        };
        assert_eq!(
            rewrite(None, Some(template)).check().unwrap_err().field,
            "path"
        );
        assert_eq!(
            rewrite(Some("in\r\nx"), None).check().unwrap_err().field,
            "hostname"
        );
    }

    #[test]
    fn config_round_trips_through_json() {
        let backend = Backend {
            protocol: Protocol::H2c,
            ..Backend::new("default/web:80", vec!["127.0.0.1:8080".parse().unwrap()])
        };
        let rule = Rule {
            matches: vec![RouteMatch {
                path: PathMatch::Exact("/a".into()),
                headers: vec![HeaderMatch {
                    name: HeaderName::from_static("x-env"),
                    value: ValueMatch::Exact("canary".into()),
                }],
                query: vec![],
                method: Some(Method::POST),
            }],
            chain: vec![
                Filter::HttpsRedirect(HttpsRedirect {
                    port: Some(8443),
                    preserve_trailing_slash: true,
                }),
                Filter::Hsts(Hsts::DEFAULT),
                Filter::RequestHeaders(HeaderModifier {
                    set: vec![(
                        HeaderName::from_static("x-a"),
                        HeaderValue::from_static("1"),
                    )],
                    add: vec![],
                    remove: vec![HeaderName::from_static("x-b")],
                }),
                Filter::ClientCert(RouteClientAuth {
                    policy: "default/ca On 1".into(),
                    pass_certificate: true,
                }),
                Filter::BodyLimit(10),
            ],
            ..Rule::new(Action::Forward(Forward::to(vec![backend])))
        };
        let hostnames = vec![Hostname::Wildcard("example.com".into())];
        let cfg = RouteConfig::new(vec![Route::new(
            "ingress/default/web",
            hostnames,
            vec![rule],
        )]);
        let json = serde_json::to_string(&cfg).unwrap();
        let back: RouteConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(cfg, back);
    }

    /// A finished route keeps no spare room: a chain, a match list and a
    /// backend list that grew by pushes are trimmed to their lengths.
    #[test]
    fn a_shared_route_keeps_no_spare_room() {
        let mut rule = Rule::new(Action::Forward(Forward::to(Vec::new())));
        rule.matches.push(RouteMatch::default());
        if let Action::Forward(f) = &mut rule.action {
            f.backends.push(Backend::new(
                "default/web:80",
                vec![SocketAddr::from(([127, 0, 0, 1], 8080))],
            ));
        }
        let grown = |r: &Rule| {
            let Action::Forward(f) = &r.action else {
                unreachable!()
            };
            (
                r.chain.capacity() > r.chain.len(),
                r.matches.capacity() > r.matches.len(),
                f.backends.capacity() > f.backends.len(),
            )
        };
        assert_eq!(grown(&rule), (true, true, true), "the lists grew by pushes");
        let shared = Route::new("r", Vec::new(), vec![rule.clone(), rule]).into_shared();
        for r in &shared.rules {
            assert_eq!(grown(r), (false, false, false));
        }
    }

    /// Backends of the default policy share one; a change copies it, and
    /// setting what it already says does not.
    #[test]
    fn backends_share_the_default_policy_until_one_changes() {
        let mut a = Backend::new("default/a:80", Vec::new());
        let b = Backend::new("default/b:80", Vec::new());
        assert!(Arc::ptr_eq(&a.policy, &b.policy));
        a.set_balance(Balance::RoundRobin);
        assert!(
            Arc::ptr_eq(&a.policy, &b.policy),
            "an equal balance kept it shared"
        );
        a.set_balance(Balance::Ewma);
        assert!(!Arc::ptr_eq(&a.policy, &b.policy));
        assert_eq!(a.policy.balance, Balance::Ewma);
        assert_eq!(
            *b.policy,
            EndpointPolicy::default(),
            "the shared one is untouched"
        );
        assert!(Arc::ptr_eq(
            &EndpointPolicy::default().shared(),
            &EndpointPolicy::shared_default()
        ));
    }
}
