//! The schema's patterns accept and reject what Gateway API's do. The API
//! server evaluates them with RE2; Rust's `regex` reads the same syntax.

use regex::Regex;

#[track_caller]
fn check(pattern: &str, good: &[&str], bad: &[&str]) {
    let re = Regex::new(pattern).unwrap();
    for s in good {
        assert!(re.is_match(s), "{pattern} should accept {s:?}");
    }
    for s in bad {
        assert!(!re.is_match(s), "{pattern} should reject {s:?}");
    }
}

#[test]
fn hostnames() {
    check(
        portico_crds::HOSTNAME_PATTERN,
        &[
            "example.com",
            "*.example.com",
            "a",
            "a-b.c1",
            "xn--bcher-kva.example",
        ],
        &[
            "",
            "*",
            "*.",
            "a.*.com",
            "Example.com",
            "-a.com",
            "a-.com",
            "a..com",
            "1.2.3.4:80",
            "a_b.com",
        ],
    );
    check(
        portico_crds::PRECISE_HOSTNAME_PATTERN,
        &["example.com", "web-tls", "a.b"],
        &["*.example.com", "Web", "a/b", ""],
    );
}

#[test]
fn header_names() {
    check(
        portico_crds::HEADER_NAME_PATTERN,
        &["X-Canary", "authorization", "x_y", "a`b", "!#$%&'*+-.^_|~"],
        &["", ":method", "a b", "a:b", "a/b", "a\"b", "é"],
    );
}

#[test]
fn durations() {
    check(
        portico_crds::DURATION_PATTERN,
        &["0s", "10s", "500ms", "1h30m", "1h2m3s4ms", "99999s"],
        &[
            "",
            "1",
            "1.5s",
            "-1s",
            "100000s",
            "1d",
            "1h1h1h1h1h",
            "10 s",
        ],
    );
}

#[test]
fn service_names() {
    check(
        portico_crds::SERVICE_NAME_PATTERN,
        &["web", "web-1", "a"],
        &["1web", "web.shop", "Web", "web-", ""],
    );
}

#[test]
fn health_check_paths() {
    check(
        portico_crds::HEALTH_CHECK_PATH_PATTERN,
        &["/", "/healthz", "/a/b-c_d.e~f", "/x%2Fy", "/status:ready"],
        &["", "healthz", "/a b", "/%zz", "/a?b=1", "/a#b", "/é"],
    );
}

#[test]
fn cookie_paths_and_names() {
    check(
        portico_crds::COOKIE_PATH_PATTERN,
        &["/", "/shop", "/a/b-c"],
        &["", "shop", "/a;b", "/a,b", "/a b", "/a; Domain=evil"],
    );
    check(
        portico_crds::COOKIE_NAME_PATTERN,
        &["INGRESSCOOKIE", "route_1", "a.b"],
        &["", "a b", "a;b", "a=b", "a,b"],
    );
}

#[test]
fn cors_origins() {
    check(
        portico_crds::CORS_ORIGIN_PATTERN,
        &[
            "*",
            "https://a.example",
            "http://a.example:8080",
            "https://*.example.com",
            "https://*",
            "http://localhost:3000",
            "https://A.Example",
        ],
        &[
            "",
            "a.example",
            "ftp://a.example",
            "https://a.example/",
            "https://a.example/app",
            "https://a.*.example",
            "https://*example.com",
            "https://a.example:123456",
            "*, https://a.example",
            "null",
        ],
    );
}
