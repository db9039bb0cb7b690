//! Generates the test gRPC service's server and client from a description in
//! Rust (tonic-build's manual mode), so no protoc is needed.

use tonic_build::manual::{Builder, Method, Service};

fn main() {
    let method = |name: &str, route: &str, client_streaming: bool, server_streaming: bool| {
        let mut m = Method::builder()
            .name(name)
            .route_name(route)
            .input_type("crate::EchoRequest")
            .output_type("crate::EchoReply")
            .codec_path("tonic_prost::ProstCodec");
        if client_streaming {
            m = m.client_streaming();
        }
        if server_streaming {
            m = m.server_streaming();
        }
        m.build()
    };
    let echo = Service::builder()
        .name("Echo")
        .package("portico.test")
        .method(method("unary", "Unary", false, false))
        .method(method("server_stream", "ServerStream", false, true))
        .method(method("client_stream", "ClientStream", true, false))
        .method(method("bidi", "Bidi", true, true))
        .build();
    Builder::new().compile(&[echo]);
}
