//! What the proxy knows of a request before routing it, shared by every
//! later phase: the connection it came on ([`ConnInfo`]), the kind of call
//! it is ([`Call`]: the shape of answers) and the per-request facts
//! ([`RequestCtx`]) the filters and the access log read.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::SystemTime;

use http::header::{self, HeaderMap, HeaderValue};
use tokio::time::Instant;

use crate::grpc::{self, web::WebContentType};
use crate::listen::tls::ClientCert;
use crate::model::Scheme;
use crate::request::forwarded::{ClientAddr, TrustedProxies};

/// Which listener a connection came in on: its requests are routed among
/// that listener's routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listener {
    /// The main HTTP and HTTPS listeners ([`crate::model::RouteConfig::routes`]).
    Main,
    /// A Gateway listener port ([`crate::model::GatewayPort`]).
    Gateway(u16),
}

/// What the proxy knows about the client connection a request came on.
#[derive(Debug)]
pub(crate) struct ConnInfo {
    /// The connection's client: the PROXY protocol source where the
    /// listener speaks it, else the socket's peer. A request from a trusted
    /// proxy may name another client ([`RequestCtx::client_addr`]).
    pub client: ClientAddr,
    pub scheme: Scheme,
    /// Set on TLS connections whose SNI host has a client-certificate policy.
    pub client_cert: Option<Arc<ClientCert>>,
    /// The client's IP and the listener's port (`X-Forwarded-Port`) as
    /// header values, formatted once per connection, not per request.
    pub client_ip: HeaderValue,
    pub local_port: HeaderValue,
    /// `client` is in `--trusted-proxies`: another proxy, whose
    /// `X-Forwarded-*` headers are believed. Decided once per connection.
    pub trusted: bool,
    /// The listener it came in on.
    pub listener: Listener,
}

impl ConnInfo {
    /// `local`: the listener's address (its IP may be unspecified; only its
    /// port is used).
    /// On the main listeners; a Gateway port's connection sets `listener`.
    pub fn new(client: SocketAddr, local: SocketAddr, scheme: Scheme, trusted: bool) -> Self {
        let client = ClientAddr::from(client);
        Self {
            client,
            scheme,
            client_cert: None,
            client_ip: ip_header(client),
            local_port: HeaderValue::from(local.port()),
            trusted,
            listener: Listener::Main,
        }
    }

    /// The client a request on this connection comes from: the
    /// connection's, unless the peer is a trusted proxy whose
    /// `X-Forwarded-For` names another. Nothing is read otherwise.
    pub(crate) fn client_addr(&self, trusted: &TrustedProxies, headers: &HeaderMap) -> ClientAddr {
        if self.trusted {
            trusted.client_behind(self.client, headers)
        } else {
            self.client
        }
    }
}

/// An address's IP as a header value (`X-Real-IP`, `X-Forwarded-For`).
pub(crate) fn ip_header(a: ClientAddr) -> HeaderValue {
    // An IP's text is always a valid header value.
    HeaderValue::try_from(a.ip.to_string()).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// Per-request facts gathered before routing, used by every later phase and
/// by the access log.
pub(crate) struct RequestCtx {
    pub(crate) start: Instant,
    pub(crate) time: SystemTime,
    pub(crate) id: HeaderValue,
    /// The client the request is attributed to (logs, `X-Real-IP`,
    /// hashing by client, client policies).
    pub(crate) client: ClientAddr,
    pub(crate) conn: Arc<ConnInfo>,
    /// Counted as the body streams; `None` for a request without a body
    /// (most), which spares it an allocation.
    pub(crate) bytes_in: Option<Arc<AtomicU64>>,
    /// The protocol the client speaks: the proxy's own errors are in it.
    pub(crate) call: Call,
    /// The request's server span, on rules that trace; ended when the
    /// answer's body is done.
    pub(crate) trace: Option<Box<crate::observe::trace::RequestSpan>>,
}

/// What a request is, as far as the shape of answers goes.
#[derive(Clone, Debug)]
pub(crate) enum Call {
    Http,
    /// `application/grpc*`.
    Grpc,
    /// `application/grpc-web*`; `text_out`: answers are base64.
    Web {
        content_type: WebContentType,
        text_out: bool,
    },
}

impl Call {
    pub(crate) fn of(headers: &HeaderMap) -> Self {
        if grpc::is_grpc(headers) {
            return Call::Grpc;
        }
        match headers
            .get(header::CONTENT_TYPE)
            .and_then(WebContentType::parse)
        {
            Some(content_type) => Call::Web {
                text_out: content_type.respond_in_text(headers.get(header::ACCEPT)),
                content_type,
            },
            None => Call::Http,
        }
    }

    /// The metrics label of a gRPC call; `None` for plain HTTP.
    pub(crate) fn protocol(&self) -> Option<crate::observe::GrpcProtocol> {
        use crate::observe::GrpcProtocol;
        match self {
            Call::Http => None,
            Call::Grpc => Some(GrpcProtocol::Grpc),
            Call::Web {
                text_out: false, ..
            } => Some(GrpcProtocol::GrpcWeb),
            Call::Web { text_out: true, .. } => Some(GrpcProtocol::GrpcWebText),
        }
    }
}

impl RequestCtx {
    /// The one client address every phase uses.
    pub(crate) fn client_addr(&self) -> ClientAddr {
        self.client
    }

    /// The request id, as the client's answer carries it.
    pub(crate) fn id(&self) -> &HeaderValue {
        &self.id
    }
}
