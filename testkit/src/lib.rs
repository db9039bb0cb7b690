//! Real peers for Portico's tests.
//!
//! [`grpc_upstream`] starts a tonic server on 127.0.0.1:0 with an `Echo`
//! service covering every call shape (unary, server-, client- and
//! bidirectional streaming) that can end a call with any status, stream
//! slowly, and send large messages, so proxy tests exercise what real gRPC
//! services do. `proto/portico/test/echo.proto` describes the same service
//! for clients in other languages (the gRPC-Web clients in `e2e/grpc-web`).
#![forbid(unsafe_code)]

pub mod jwt;
pub mod redis;

use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::metadata::MetadataValue;
use tonic::{Code, Request, Response, Status, Streaming};

/// The generated server (`echo::echo_server`) and client (`echo::echo_client`).
pub mod echo {
    include!(concat!(env!("OUT_DIR"), "/portico.test.Echo.rs"));
}

pub use echo::echo_client::EchoClient;
use echo::echo_server::Echo;
pub use echo::echo_server::EchoServer;

/// What the caller asks the service to do.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoRequest {
    #[prost(string, tag = "1")]
    pub message: String,
    /// The gRPC status code to end the call with; 0 is OK. Unary calls and
    /// streams that have sent nothing end trailers-only.
    #[prost(int32, tag = "2")]
    pub code: i32,
    /// Replies a server stream sends.
    #[prost(uint32, tag = "3")]
    pub count: u32,
    /// Payload bytes per reply.
    #[prost(uint32, tag = "4")]
    pub reply_size: u32,
    /// Pause before each streamed reply, in milliseconds.
    #[prost(uint32, tag = "5")]
    pub delay_ms: u32,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct EchoReply {
    #[prost(string, tag = "1")]
    pub message: String,
    /// Position in a stream; for a client stream, how many messages came.
    #[prost(uint32, tag = "2")]
    pub index: u32,
    #[prost(bytes = "vec", tag = "3")]
    pub payload: Vec<u8>,
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

#[derive(Clone, Copy, Debug, Default)]
pub struct EchoService;

fn status_for(r: &EchoRequest) -> Result<(), Status> {
    match r.code {
        0 => Ok(()),
        code => Err(Status::new(Code::from_i32(code), r.message.clone())),
    }
}

fn reply(r: &EchoRequest, index: u32) -> EchoReply {
    EchoReply {
        message: r.message.clone(),
        index,
        payload: vec![b'x'; r.reply_size as usize],
    }
}

#[tonic::async_trait]
impl Echo for EchoService {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        let r = req.into_inner();
        status_for(&r)?;
        let mut rsp = Response::new(reply(&r, 0));
        if let Ok(v) = MetadataValue::try_from(r.message.as_str()) {
            rsp.metadata_mut().insert("x-echo", v);
        }
        Ok(rsp)
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(
        &self,
        req: Request<EchoRequest>,
    ) -> Result<Response<Self::ServerStreamStream>, Status> {
        let r = req.into_inner();
        if r.count == 0 {
            status_for(&r)?;
        }
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            for i in 0..r.count {
                if r.delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(u64::from(r.delay_ms))).await;
                }
                if tx.send(Ok(reply(&r, i))).await.is_err() {
                    return;
                }
            }
            if let Err(status) = status_for(&r) {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn client_stream(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<EchoReply>, Status> {
        let mut stream = req.into_inner();
        let mut messages = Vec::new();
        while let Some(r) = stream.message().await? {
            status_for(&r)?;
            messages.push(r.message);
        }
        Ok(Response::new(EchoReply {
            message: messages.join(","),
            index: u32::try_from(messages.len()).unwrap_or(u32::MAX),
            payload: Vec::new(),
        }))
    }

    type BidiStream = ReplyStream;

    async fn bidi(
        &self,
        req: Request<Streaming<EchoRequest>>,
    ) -> Result<Response<Self::BidiStream>, Status> {
        let mut stream = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            let mut i = 0;
            loop {
                let item = match stream.message().await {
                    Ok(Some(r)) => status_for(&r).map(|()| reply(&r, i)),
                    Ok(None) => return,
                    Err(status) => Err(status),
                };
                let end = item.is_err();
                if tx.send(item).await.is_err() || end {
                    return;
                }
                i += 1;
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Starts the `Echo` service over h2c on 127.0.0.1:0; it runs until the
/// test's runtime ends.
pub async fn grpc_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let addr = listener.local_addr().expect("local addr");
    serve_grpc_upstream(listener);
    addr
}

/// Serves the `Echo` service over h2c on a listener the caller bound
/// (the e2e tests bind inside a network namespace); it runs until the
/// test's runtime ends.
pub fn serve_grpc_upstream(listener: TcpListener) {
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(EchoServer::new(EchoService))
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
}

/// One message as gRPC frames it on the wire: flag 0 (uncompressed), a
/// 32-bit big-endian length, the encoded message.
pub fn frame(msg: &impl prost::Message) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::with_capacity(5 + body.len());
    out.push(0);
    out.extend_from_slice(&u32::try_from(body.len()).unwrap_or(u32::MAX).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// Reads a `ServerStream` reply stream to its end, checking that the
/// replies come in order (index 0, 1, ...); how many came.
pub async fn read_in_order(mut stream: Streaming<EchoReply>) -> u32 {
    let mut n = 0;
    while let Some(r) = stream.message().await.expect("a reply or the end") {
        assert_eq!(r.index, n, "replies out of order");
        n += 1;
    }
    n
}
