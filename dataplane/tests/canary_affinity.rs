//! A canary next to a mainline with sticky sessions (ingress-nginx
//! `affinity-canary-behavior`), against real upstreams: which side a
//! session stays on, and which answers may start one.

mod support;

use std::net::SocketAddr;

use http::{HeaderName, Request};
use portico_dataplane::model::{
    Action, AffinityMode, Balance, Canary, CanaryAffinity, CanaryHeader, CanaryHeaderValue,
    CookieAffinity, RouteConfig,
};
use support::*;

/// Mainline pods are called `m*`, canary pods `c*`; the canary takes one
/// request in two by weight (`weight` of 2), or none.
fn cfg(
    main: &[&Pod],
    canary: &[&Pod],
    mode: AffinityMode,
    weight: u32,
    affinity: CanaryAffinity,
) -> RouteConfig {
    let sticky = |name: &str, pods: &[&Pod]| {
        let addrs: Vec<SocketAddr> = pods.iter().map(|p| p.addr).collect();
        let mut b = backend(name, &addrs);
        // As translation does: the canary follows the mainline's policy.
        b.policy_mut().balance = Balance::Cookie(CookieAffinity {
            name: "SESSION".into(),
            mode,
            ..Default::default()
        });
        b
    };
    let mut rule = forward_rule(vec![], vec![sticky("default/web:80", main)]);
    if let Action::Forward(f) = &mut rule.action {
        f.canary = Some(Box::new(Canary {
            backends: vec![sticky("default/web-canary:80", canary)],
            header: Some(CanaryHeader {
                name: HeaderName::from_static("x-canary"),
                value: CanaryHeaderValue::AlwaysNever,
            }),
            cookie: Some("beta".into()),
            weight,
            weight_total: 2,
            affinity,
        }));
    }
    config(vec![route("r", &["web.test"], vec![rule])])
}

/// Which pod answered, and the cookie (`name=value`) its answer set.
async fn ask(proxy: &Proxy, headers: &[(&str, &str)]) -> (String, Option<String>) {
    let mut req = Request::get(format!("http://{}/", proxy.addr)).header("host", "web.test");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let (status, h, body) = send(&h1_client(), req.body(empty()).unwrap()).await;
    assert!(status.is_success(), "{status}: {body}");
    let pod = h.get("x-upstream").unwrap().to_str().unwrap().to_owned();
    let cookie = h.get("set-cookie").map(|v| {
        let v = v.to_str().unwrap();
        v.split(';').next().unwrap().to_owned()
    });
    (pod, cookie)
}

fn on_canary(pod: &str) -> bool {
    pod.starts_with('c')
}

async fn pods() -> [Pod; 4] {
    [
        Pod::start("m0").await,
        Pod::start("m1").await,
        Pod::start("c0").await,
        Pod::start("c1").await,
    ]
}

#[tokio::test]
async fn sticky_a_session_stays_on_the_side_it_started_on() {
    for mode in [AffinityMode::Balanced, AffinityMode::Persistent] {
        let pods = pods().await;
        let (main, canary) = ([&pods[0], &pods[1]], [&pods[2], &pods[3]]);
        let proxy = Proxy::start(cfg(&main, &canary, mode, 1, CanaryAffinity::Sticky)).await;

        // The weight places new sessions, on both sides; each answer starts
        // a session on its own side.
        let mut sessions = Vec::new();
        for _ in 0..4 {
            let (pod, set) = ask(&proxy, &[]).await;
            sessions.push((pod, set.expect("a new session gets a cookie")));
        }
        assert!(sessions.iter().any(|(p, _)| on_canary(p)), "{sessions:?}");
        assert!(sessions.iter().any(|(p, _)| !on_canary(p)), "{sessions:?}");

        // A session keeps its side and endpoint, whatever the weight.
        for (home, cookie) in &sessions {
            for _ in 0..6 {
                let (pod, set) = ask(&proxy, &[("cookie", cookie)]).await;
                assert_eq!(&pod, home, "{mode:?} {cookie}");
                assert_eq!(set, None);
            }
        }

        // A weight of 0 drains the canary: its sessions move to the
        // mainline and start one there.
        let (_, canary_session) = sessions.iter().find(|(p, _)| on_canary(p)).unwrap();
        proxy
            .dp
            .publish(cfg(&main, &canary, mode, 0, CanaryAffinity::Sticky));
        let (pod, set) = ask(&proxy, &[("cookie", canary_session)]).await;
        assert!(!on_canary(&pod), "{mode:?}: {pod}");
        assert!(set.is_some(), "{mode:?}: a mainline session starts");
    }
}

#[tokio::test]
async fn an_answer_forced_onto_the_canary_starts_no_session() {
    for affinity in [CanaryAffinity::Sticky, CanaryAffinity::Legacy] {
        let pods = pods().await;
        let (main, canary) = ([&pods[0], &pods[1]], [&pods[2], &pods[3]]);
        // Weight 0: only the header and the cookie reach the canary.
        let proxy = Proxy::start(cfg(&main, &canary, AffinityMode::Balanced, 0, affinity)).await;
        let (home, session) = ask(&proxy, &[]).await;
        let session = session.expect("a mainline session");
        assert!(!on_canary(&home));

        let beta = format!("{session}; beta=always");
        for headers in [
            vec![("x-canary", "always")],
            vec![("x-canary", "always"), ("cookie", session.as_str())],
            vec![("cookie", "beta=always")],
            vec![("cookie", beta.as_str())],
        ] {
            let (pod, set) = ask(&proxy, &headers).await;
            assert!(on_canary(&pod), "{affinity:?} {headers:?}: {pod}");
            assert_eq!(set, None, "{affinity:?} {headers:?}");
        }
        // The mainline session is where it was.
        assert_eq!(ask(&proxy, &[("cookie", &session)]).await, (home, None));
    }
}

#[tokio::test]
async fn legacy_the_weight_decides_every_request_and_the_canary_sets_no_cookie() {
    let pods = pods().await;
    let (main, canary) = ([&pods[0], &pods[1]], [&pods[2], &pods[3]]);
    let proxy = Proxy::start(cfg(
        &main,
        &canary,
        AffinityMode::Balanced,
        1,
        CanaryAffinity::Legacy,
    ))
    .await;
    let mut session = None;
    for _ in 0..4 {
        let (pod, set) = ask(&proxy, &[]).await;
        if on_canary(&pod) {
            assert_eq!(set, None, "a canary answer set a session cookie");
        } else {
            session = Some((pod, set.expect("a mainline answer starts a session")));
        }
    }
    let (home, cookie) = session.expect("some requests went to the mainline");

    // With a mainline session, requests still go both ways; on the mainline
    // the session holds.
    let mut canary_answers = 0;
    for _ in 0..8 {
        let (pod, set) = ask(&proxy, &[("cookie", &cookie)]).await;
        assert_eq!(set, None);
        if on_canary(&pod) {
            canary_answers += 1;
        } else {
            assert_eq!(pod, home);
        }
    }
    assert_eq!(canary_answers, 4, "one request in two, by weight");
}
