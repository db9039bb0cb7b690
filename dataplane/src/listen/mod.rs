//! Where a connection comes in: the accept loops and hyper's connection
//! settings, the optional PROXY protocol header, and the server side of TLS
//! (certificates by SNI, client certificates, passthrough); the Gateway
//! listener ports' sockets, opened and closed as publishes name them.

pub(crate) mod ports;
pub(crate) mod proxy_protocol;
pub(crate) mod server;
pub mod tls;
