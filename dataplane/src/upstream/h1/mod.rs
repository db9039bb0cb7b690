//! Portico's own HTTP/1.1 client for upstream requests.
//!
//! hyper 1's client connection hands every request through an mpsc channel
//! and a oneshot to its dispatcher, even when both ends run in one task, and
//! parses heads into buffers it grows per request: the largest single costs
//! of proxying a small request. This client is driven by the request's own
//! task: it writes the head (and a body already in hand) in one write, reads
//! the response head with `httparse` into a buffer the connection reuses,
//! and the response body ([`H1Body`]) reads the rest and hands the
//! connection back to its endpoint's idle queue at the end.
//!
//! Requests it does not frame ([`codec::plan`] says which: upgrades,
//! CONNECT, HTTP/1.0, declared trailers) go through hyper's client.

pub(crate) mod codec;
mod conn;

pub use conn::H1Body;
pub(crate) use conn::{Conn, exchange};

use crate::body::BodyError;

/// Why an exchange on this client failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connection: {0}")]
    Io(#[source] std::io::Error),
    #[error("connection closed before the response head")]
    ClosedBeforeHead,
    #[error("connection closed before the response body ended")]
    ClosedInBody,
    #[error("response head larger than {} bytes", codec::MAX_HEAD)]
    HeadTooLarge,
    #[error("more than {} header fields", codec::MAX_HEADERS)]
    TooManyHeaders,
    #[error("invalid response head: {0}")]
    Parse(httparse::Error),
    #[error("invalid response status")]
    Status,
    #[error("invalid header name")]
    HeaderName,
    #[error("invalid header value")]
    HeaderValue,
    #[error("invalid or conflicting content-length")]
    ContentLength,
    #[error("transfer-encoding in an HTTP/1.0 response")]
    TransferEncoding,
    #[error("101 Switching Protocols to a request that asked for no upgrade")]
    UnexpectedUpgrade,
    #[error("chunked body: {0}")]
    Chunk(&'static str),
    #[error("request body longer than its content-length")]
    BodyTooLong,
    #[error("request body shorter than its content-length")]
    BodyTooShort,
    /// The client's request body failed (too large, timed out, broke off).
    #[error("request body: {0}")]
    Body(#[source] BodyError),
}
