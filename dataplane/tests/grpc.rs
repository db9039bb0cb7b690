//! gRPC through the proxy: a real tonic upstream over h2c, tonic clients for
//! the call shapes, and raw HTTP/2 requests where the exact wire answer
//! matters (a tonic client would turn an HTTP error into a status by itself,
//! hiding whether the proxy's answer was gRPC-shaped).

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use portico_dataplane::model::{Protocol, RouteConfig};
use portico_testkit::{EchoClient, EchoReply, EchoRequest, grpc_upstream, read_in_order};
use prost::Message;
use support::*;
use tonic::Code;

fn grpc_routes(endpoints: &[SocketAddr]) -> RouteConfig {
    let mut b = backend("echo", endpoints);
    b.protocol = Protocol::H2c;
    config(vec![route(
        "grpc",
        &[],
        vec![forward_rule(vec![prefix("/portico.test.Echo")], vec![b])],
    )])
}

async fn client(proxy: &Proxy) -> EchoClient<tonic::transport::Channel> {
    EchoClient::connect(format!("http://{}", proxy.addr))
        .await
        .expect("connect to the proxy")
        .max_decoding_message_size(16 << 20)
}

fn req(message: &str) -> EchoRequest {
    EchoRequest {
        message: message.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_shape_streams_through() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(grpc_routes(&[up])).await;
    let mut c = client(&proxy).await;

    let rsp = c.unary(req("hello")).await.unwrap();
    assert_eq!(rsp.metadata().get("x-echo").unwrap(), "hello");
    assert_eq!(rsp.into_inner().message, "hello");

    let big = c
        .unary(EchoRequest {
            reply_size: 4 << 20,
            ..req("big")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(big.payload.len(), 4 << 20);

    let stream = c
        .server_stream(EchoRequest {
            count: 200,
            reply_size: 10,
            ..req("s")
        })
        .await
        .unwrap()
        .into_inner();
    let n = read_in_order(stream).await;
    assert_eq!(n, 200);

    let up_stream = tokio_stream_iter(vec![req("a"), req("b"), req("c")]);
    let joined = c.client_stream(up_stream).await.unwrap().into_inner();
    assert_eq!((joined.message.as_str(), joined.index), ("a,b,c", 3));

    let mut bidi = c
        .bidi(tokio_stream_iter(vec![req("x"), req("y")]))
        .await
        .unwrap()
        .into_inner();
    let mut got = Vec::new();
    while let Some(r) = bidi.message().await.unwrap() {
        got.push(r.message);
    }
    assert_eq!(got, ["x", "y"]);
}

fn tokio_stream_iter(
    items: Vec<EchoRequest>,
) -> impl tonic::IntoStreamingRequest<Message = EchoRequest> {
    futures_util::stream::iter(items)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_statuses_pass_through() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(grpc_routes(&[up])).await;
    let mut c = client(&proxy).await;

    let err = c
        .unary(EchoRequest {
            code: Code::PermissionDenied as i32,
            ..req("nope: 100% sure")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::PermissionDenied);
    assert_eq!(err.message(), "nope: 100% sure");

    let mut stream = c
        .server_stream(EchoRequest {
            count: 2,
            code: Code::FailedPrecondition as i32,
            ..req("then fail")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(stream.message().await.unwrap().is_some());
    assert!(stream.message().await.unwrap().is_some());
    let end = stream.message().await.unwrap_err();
    assert_eq!(end.code(), Code::FailedPrecondition);
}

/// One length-prefixed gRPC message.
fn frame(msg: &EchoRequest) -> Bytes {
    Bytes::from(portico_testkit::frame(msg))
}

struct RawAnswer {
    status: StatusCode,
    headers: HeaderMap,
    data: Bytes,
    trailers: Option<HeaderMap>,
}

async fn raw_call(
    proxy: &Proxy,
    path: &str,
    msg: &EchoRequest,
    extra: &[(&str, &str)],
) -> RawAnswer {
    let mut b = Request::post(format!("http://{}{path}", proxy.addr))
        .header("content-type", "application/grpc")
        .header("te", "trailers");
    for (k, v) in extra {
        b = b.header(*k, *v);
    }
    let rsp = tokio::time::timeout(
        Duration::from_secs(20),
        h2c_client().request(b.body(full(frame(msg))).unwrap()),
    )
    .await
    .expect("answer within 20 s")
    .expect("the proxy answers");
    let (parts, mut body) = rsp.into_parts();
    let mut data = BytesMut::new();
    let mut trailers = None;
    while let Some(f) = body.frame().await {
        let f = f.expect("body frame");
        match f.into_data() {
            Ok(d) => data.put_slice(&d),
            Err(f) => trailers = f.into_trailers().ok(),
        }
    }
    RawAnswer {
        status: parts.status,
        headers: parts.headers,
        data: data.freeze(),
        trailers,
    }
}

fn assert_trailers_only(a: &RawAnswer, code: Code) {
    assert_eq!(a.status, StatusCode::OK, "gRPC errors are HTTP 200");
    assert_eq!(a.headers["content-type"], "application/grpc");
    assert_eq!(
        a.headers["grpc-status"],
        (code as i32).to_string().as_str(),
        "{:?}",
        a.headers
    );
    assert!(a.headers.contains_key("grpc-message"));
    assert!(a.data.is_empty(), "no body: {:?}", a.data);
    assert!(a.trailers.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_errors_are_grpc_shaped() {
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let no_endpoints = Proxy::start(grpc_routes(&[])).await;
    let a = raw_call(&no_endpoints, "/portico.test.Echo/Unary", &req("x"), &[]).await;
    assert_trailers_only(&a, Code::Unavailable);

    let no_route = raw_call(&no_endpoints, "/other.Service/Call", &req("x"), &[]).await;
    assert_trailers_only(&no_route, Code::Unimplemented);

    let down = Proxy::start(grpc_routes(&[closed])).await;
    let a = raw_call(&down, "/portico.test.Echo/Unary", &req("x"), &[]).await;
    assert_trailers_only(&a, Code::Unavailable);
}

/// A filter's answer (here a client-certificate mismatch, and an HTTPS
/// redirect) reaches a gRPC client as a status, never as a text/plain page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn filter_answers_are_grpc_shaped() {
    let up = grpc_upstream().await;
    let mut routes = grpc_routes(&[up]);
    std::sync::Arc::make_mut(&mut routes.routes[0]).add_to_every_rule(&[
        portico_dataplane::model::Filter::ClientCert(portico_dataplane::model::RouteClientAuth {
            policy: "default/client-ca".into(),
            pass_certificate: false,
        }),
    ]);
    let proxy = Proxy::start(routes.clone()).await;
    // Plain HTTP cannot carry a certificate: 403, as PERMISSION_DENIED.
    let a = raw_call(&proxy, "/portico.test.Echo/Unary", &req("x"), &[]).await;
    assert_trailers_only(&a, Code::PermissionDenied);

    std::sync::Arc::make_mut(&mut routes.routes[0]).add_to_every_rule(&[
        portico_dataplane::model::Filter::HttpsRedirect(Default::default()),
    ]);
    let proxy = Proxy::start(routes).await;
    let a = raw_call(&proxy, "/portico.test.Echo/Unary", &req("x"), &[]).await;
    assert_trailers_only(&a, Code::Unknown);
    assert_eq!(
        a.headers["location"].to_str().unwrap(),
        format!("https://{}/portico.test.Echo/Unary", proxy.addr.ip())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_grpc_upstream_answer_becomes_a_status() {
    let html = Upstream::start(|_req| async {
        let mut rsp = http::Response::new(full("<html>503</html>"));
        *rsp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        rsp
    })
    .await;
    let mut routes = grpc_routes(&[html.addr]);
    if let portico_dataplane::model::Action::Forward(f) =
        &mut std::sync::Arc::make_mut(&mut routes.routes[0]).rules[0].action
    {
        f.backends[0].protocol = Protocol::Http1;
    }
    let proxy = Proxy::start(routes).await;
    let a = raw_call(&proxy, "/portico.test.Echo/Unary", &req("x"), &[]).await;
    assert_trailers_only(&a, Code::Unavailable);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_timeout_ends_a_stream_with_deadline_exceeded() {
    let up = grpc_upstream().await;
    let proxy = Proxy::start(grpc_routes(&[up])).await;
    // 20 replies 100 ms apart take 2 s; the client allows 500 ms.
    let slow = EchoRequest {
        count: 20,
        delay_ms: 100,
        ..req("slow")
    };
    let a = raw_call(
        &proxy,
        "/portico.test.Echo/ServerStream",
        &slow,
        &[("grpc-timeout", "500m")],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let trailers = a.trailers.expect("the call ends with trailers");
    assert_eq!(trailers["grpc-status"], "4", "{trailers:?}");
    assert_eq!(trailers["grpc-message"], "deadline exceeded");
    // Some replies arrived before the deadline, not all.
    let replies = count_messages(&a.data);
    assert!(replies > 0 && replies < 20, "{replies} replies");
}

fn count_messages(mut data: &[u8]) -> usize {
    let mut n = 0;
    while data.len() >= 5 {
        let len = u32::from_be_bytes([data[1], data[2], data[3], data[4]]) as usize;
        let Some(msg) = data.get(5..5 + len) else {
            break;
        };
        EchoReply::decode(msg).expect("a reply");
        data = &data[5 + len..];
        n += 1;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_are_limited_per_message_not_in_total() {
    let up = grpc_upstream().await;
    let mut routes = grpc_routes(&[up]);
    std::sync::Arc::make_mut(&mut routes.routes[0]).rules[0]
        .grpc
        .max_message = 64 << 10;
    let proxy = Proxy::start(routes).await;
    let mut c = client(&proxy).await;

    // 300 messages of 8 KiB: far over the 1 MiB body limit in total, each
    // well under the message limit.
    let chunk = "m".repeat(8 << 10);
    let many: Vec<EchoRequest> = (0..300).map(|_| req(&chunk)).collect();
    let joined = c.client_stream(tokio_stream_iter(many)).await.unwrap();
    assert_eq!(joined.into_inner().index, 300);

    // One message over the limit ends the call with RESOURCE_EXHAUSTED.
    let over = vec![req("small"), req(&"o".repeat(100 << 10))];
    let err = c.client_stream(tokio_stream_iter(over)).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("exceeds"), "{}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tonic_client_over_tls_with_alpn_h2() {
    use portico_dataplane::listen::tls::CertConfig;
    use support::tls::{TestCa, Versions, client, connect};

    let up = grpc_upstream().await;
    let proxy = Proxy::start(grpc_routes(&[up])).await;
    let ca = TestCa::new();
    let cert = ca.issue(&["grpc.test"], 3);
    proxy.dp.publish_certs(CertConfig {
        bindings: vec![cert.binding("ns/grpc", &["grpc.test"])],
        ..Default::default()
    });
    let cfg = client(ca.roots(), Versions::Both, &[b"h2"]);
    let https = proxy.https;
    // tonic dials through a real TLS handshake (SNI grpc.test, ALPN h2).
    let channel = tonic::transport::Endpoint::from_static("http://grpc.test")
        .connect_with_connector(tower::service_fn(move |_uri| {
            let cfg = cfg.clone();
            async move {
                let tls = connect(&cfg, https, Some("grpc.test")).await?;
                assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
            }
        }))
        .await
        .expect("TLS channel to the proxy");
    let mut c = EchoClient::new(channel);
    let rsp = c.unary(req("over tls")).await.unwrap().into_inner();
    assert_eq!(rsp.message, "over tls");
    let stream = c
        .server_stream(EchoRequest {
            count: 10,
            ..req("s")
        })
        .await
        .unwrap()
        .into_inner();
    let n = read_in_order(stream).await;
    assert_eq!(n, 10);
    let err = c
        .unary(EchoRequest {
            code: Code::NotFound as i32,
            ..req("missing")
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
