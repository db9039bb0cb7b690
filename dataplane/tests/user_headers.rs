//! Header modifiers are written by route authors: the table never applies
//! the framing and connection headers or Host from them, whoever wrote the
//! `RouteConfig`, so one route cannot forge responses on a shared client
//! connection or smuggle requests to its upstream.

mod support;

use http::{HeaderName, HeaderValue};
use portico_dataplane::model::*;
use support::*;
use tokio::io::AsyncWriteExt;

fn h(name: &'static str, value: &'static str) -> (HeaderName, HeaderValue) {
    (
        HeaderName::from_static(name),
        HeaderValue::from_static(value),
    )
}

#[tokio::test]
async fn reserved_headers_in_a_hand_written_config_are_never_applied() {
    let up = Upstream::echo("up").await;
    let mut rule = forward_rule(vec![], vec![backend("b", &[up.addr])]);
    // Errors name positions in running order (the table puts the chain in
    // that order before checking it, as `/debug/routes` shows it): response
    // headers, then request headers, then the default body limit.
    rule.chain.push(Filter::ResponseHeaders(HeaderModifier {
        // Served, this would end the first response early and make its
        // body (and what follows) read as the next response.
        set: vec![h("content-length", "0"), h("x-ok", "1")],
        add: vec![h("transfer-encoding", "chunked")],
        remove: vec![HeaderName::from_static("te")],
    }));
    rule.chain.push(Filter::RequestHeaders(HeaderModifier {
        set: vec![h("host", "evil.test"), h("content-length", "5")],
        add: vec![h("x-b", "2")],
        remove: vec![],
    }));
    let cfg = config(vec![route("r", &["hdr.test"], vec![rule])]);
    let proxy = Proxy::start(cfg.clone()).await;

    let report = proxy.dp.publish(cfg);
    let mut refused: Vec<String> = report.errors.iter().map(|e| e.field.clone()).collect();
    refused.sort();
    assert_eq!(
        refused,
        [
            "chain[0].response_headers.add",
            "chain[0].response_headers.remove",
            "chain[0].response_headers.set",
            "chain[1].request_headers.set",
            "chain[1].request_headers.set",
        ],
        "{:?}",
        report.errors
    );

    // Two pipelined requests on one connection: two whole responses.
    let mut s = tokio::net::TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(
        b"GET /1 HTTP/1.1\r\nHost: hdr.test\r\n\r\n\
          GET /2 HTTP/1.1\r\nHost: hdr.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let raw = read_until_closed(&mut s).await.expect("the proxy closes");
    let text = String::from_utf8_lossy(&raw).to_ascii_lowercase();
    let responses: Vec<&str> = text.split("http/1.1 ").skip(1).collect();
    assert_eq!(responses.len(), 2, "{text}");
    for (i, rsp) in responses.iter().enumerate() {
        let (head, body) = rsp.split_once("\r\n\r\n").expect("a whole head");
        // Every header line ends in CRLF.
        let head = format!("{head}\r\n");
        assert!(head.starts_with("200"), "{rsp}");
        assert!(head.contains("\r\ncontent-length: 2\r\n"), "{rsp}");
        assert!(!head.contains("transfer-encoding"), "{rsp}");
        assert!(head.contains("\r\nx-ok: 1\r\n"), "{rsp}");
        // The upstream saw the client's host, and the allowed header.
        assert!(head.contains("\r\nx-seen-host: hdr.test\r\n"), "{rsp}");
        assert!(head.contains("\r\nx-seen-h-x-b: 2\r\n"), "{rsp}");
        assert!(!head.contains("x-seen-h-content-length"), "{rsp}");
        assert_eq!(body, "up", "response {i}");
    }
}
